//! Crashes that keep the disk: replicas rebuilt with `Replica::resume` from their durable log (decided
//! slots, own round messages, snapshots), alone, mixed with crashes that lose everything, torn in the
//! middle of a turn, and the whole cluster at once. Every checker must pass on every seed, and liveness
//! must hold once faults stop, which `Replica::restarted` alone cannot give after a whole-cluster crash.

use sim::{Faults, Options, RunReport};

/// Runs the seeds, returns the failures (with their replay lines) and the summed reports' counters.
fn run(first_seed: u64, seeds: u64, replicas: u8, faults: &str, configure: impl FnMut(&mut Options)) -> Outcome {
    let faults = Faults::parse(faults).unwrap_or(Faults::ALL);
    let mut outcome = Outcome::default();
    sim::run_seeds(first_seed, seeds, replicas, faults, configure, |report: &RunReport| {
        outcome.resumes += report.resumes;
        outcome.torn_crashes += report.torn_crashes;
        outcome.cluster_crashes += report.cluster_crashes;
        outcome.ops += report.ops_completed;
        if !report.violations.is_empty() {
            outcome.failed.push(format!("{:?}\n  replay: {}", report.violations, report.options.replay_line()));
        }
    });
    outcome
}

#[derive(Default)]
struct Outcome {
    failed: Vec<String>,
    resumes: u64,
    torn_crashes: u64,
    cluster_crashes: u64,
    ops: u64,
}

#[test]
fn durable_restarts_mixed_with_volatile_ones_stay_safe_and_live() {
    let outcome = run(10_000, 300, 3, "crash,durable,delay,loss,dup", |_| {});
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
    assert!(outcome.resumes > 300 && outcome.torn_crashes > 0, "the runs barely resumed anyone");
}

#[test]
fn five_replicas_survive_durable_restarts_and_partitions() {
    let outcome = run(11_000, 100, 5, "crash,durable,partition,delay", |_| {});
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
}

#[test]
fn a_whole_cluster_crash_resumes_and_decides_every_command() {
    let outcome = run(12_000, 300, 3, "cluster-crash,delay,loss", |_| {});
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
    assert!(outcome.cluster_crashes > 300, "some runs crash the whole cluster more than once");
    assert!(outcome.resumes >= 3 * 300, "every replica resumes after the whole-cluster crash");
    assert!(outcome.ops > 0);
}

#[test]
fn a_whole_cluster_crash_of_five_with_messages_in_flight_stays_safe() {
    let outcome = run(13_000, 100, 5, "cluster-crash,delay,dup", |options| {
        options.cluster_crash_drops_in_flight = false;
        options.cluster_crash_spread_ms = 20;
    });
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
}

/// The cluster goes down just before faults stop, so every replica comes back with `resume` at the start
/// of the healed phase, and every command must then be decided within the liveness bound.
#[test]
fn replicas_all_resumed_as_faults_stop_decide_every_command() {
    let outcome = run(16_000, 200, 3, "cluster-crash,delay,loss", |options| {
        options.cluster_crash_at_ms = options.faulty_ms - options.cluster_crash_spread_ms - 1;
    });
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
    assert!(outcome.resumes >= 3 * 200);
}

/// Every replica's crash lands inside a turn: part of that turn's records are written, none of its
/// messages leave. Decisions whose record was lost bind nobody; the rest must all agree.
#[test]
fn a_whole_cluster_crash_in_the_middle_of_turns_keeps_agreement() {
    let outcome = run(14_000, 200, 3, "cluster-crash,durable,delay", |options| options.torn_permille = 1000);
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
    assert!(outcome.torn_crashes >= 3 * 200);
}

/// A one-replica cluster resumed inside a slot holds its own proposal, which is a quorum of one, but
/// nothing drives the restored agreement forward: no peer will ever send it a message, and `start` does
/// not take the steps the restored messages allow. It stalls until `Replica::start` drives a resumed
/// replica's open slot (a change to `consensus/src/replica.rs`).
#[test]
fn a_single_replica_resumed_inside_a_slot_stays_live() {
    let outcome = run(15_000, 100, 1, "durable,delay", |_| {});
    assert!(outcome.failed.is_empty(), "{}", outcome.failed.join("\n"));
}

/// Storage that fails: writes failing mid-turn (the replica stops before the turn leaves and resumes
/// recovering) and late snapshot writes landing after newer snapshots (ignored), alone and with the
/// other faults; every checker passes and every run ends live.
#[test]
fn failed_writes_and_late_snapshots_stay_safe_and_live() {
    let mut failed_writes = 0;
    let mut stale = 0;
    let mut failed = Vec::new();
    sim::run_seeds(
        13_000,
        200,
        3,
        Faults::parse("disk-errors,durable,crash,delay,loss").unwrap_or(Faults::ALL),
        |_| {},
        |report| {
            failed_writes += report.disk_errors;
            stale += report.stale_snapshots;
            if !report.violations.is_empty() {
                failed.push(format!("{:?}\n  replay: {}", report.violations, report.options.replay_line()));
            }
        },
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(failed_writes > 50, "only {failed_writes} failed writes in 200 runs");
    assert!(stale > 20, "only {stale} late snapshots landed after a newer one");
}
