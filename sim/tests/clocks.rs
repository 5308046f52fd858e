//! Process clocks (each replica's clock counts from its own process start, hours apart, and restarts at
//! zero) and the stranded command: a replica's forward to one peer is lost, it crashes for good, and
//! clients go on submitting at that peer. The queue must not stall on it; the old queue (re-forward by
//! the origin's stamp against the raw local clock, and peers' proposals never queued) does, and the
//! liveness checker must say so.

use consensus::Broken;
use sim::{Faults, Options, RunReport, ViolationKind};

fn strand_faults() -> Faults {
    Faults::parse("clock,skew,strand,delay,loss,dup,partition").unwrap_or(Faults::ALL)
}

fn failures(seeds: u64, replicas: u8, faults: Faults, configure: impl FnMut(&mut Options)) -> Vec<String> {
    let mut failed = Vec::new();
    sim::run_seeds(0, seeds, replicas, faults, configure, |report: &RunReport| {
        if !report.violations.is_empty() {
            failed.push(format!("{:?}\n  replay: {}", report.violations, report.options.replay_line()));
        }
    });
    failed
}

#[test]
fn a_stranded_command_does_not_stall_the_cluster_under_process_clocks() {
    for replicas in [3, 5] {
        let failed = failures(120, replicas, strand_faults(), |_| {});
        assert!(failed.is_empty(), "{}", failed.join("\n"));
    }
}

#[test]
fn the_old_queue_stalls_on_a_stranded_command_and_the_liveness_checker_says_so() {
    let mut stalled = 0;
    let configure = |o: &mut Options| o.broken = Broken::ProcessClockQueue;
    sim::run_seeds(0, 60, 3, strand_faults(), configure, |report| {
        stalled += u64::from(report.violations.iter().any(|v| v.kind == ViolationKind::Liveness));
    });
    assert!(stalled >= 3, "only {stalled} of 60 runs with the old queue stalled on a stranded command");
}

/// Either half of the fix alone unsticks the stranded command: re-forwarding by local receive time
/// spreads it, and so do peers' proposals joining the queue.
#[test]
fn either_half_of_the_queue_fix_alone_unsticks_a_stranded_command() {
    for broken in [Broken::ReforwardByOriginStamp, Broken::ProposalsNotQueued] {
        let failed = failures(60, 3, strand_faults(), |o| o.broken = broken);
        assert!(failed.is_empty(), "{broken:?}: {}", failed.join("\n"));
    }
}
