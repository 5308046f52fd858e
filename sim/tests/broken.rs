//! The checkers catch real bugs: deliberately broken variants of the core and of the shell must be
//! reported as violations of the invariant they break.

use consensus::Broken;
use sim::{Faults, Options, ShellBroken, ViolationKind};

/// Runs seeds with `configure` applied and counts the runs that reported a violation of `kind`.
fn runs_violating(seeds: u64, replicas: u8, kind: ViolationKind, configure: impl Fn(&mut Options)) -> u64 {
    runs_violating_under(Faults::ALL, seeds, replicas, kind, configure)
}

/// The same under the given fault classes.
fn runs_violating_under(
    faults: Faults,
    seeds: u64,
    replicas: u8,
    kind: ViolationKind,
    configure: impl Fn(&mut Options),
) -> u64 {
    let mut caught = 0;
    sim::run_seeds(0, seeds, replicas, faults, configure, |report| {
        caught += u64::from(report.violations.iter().any(|v| v.kind == kind));
    });
    caught
}

#[test]
fn deciding_after_the_first_round_breaks_agreement() {
    let caught = runs_violating(40, 3, ViolationKind::Agreement, |o| o.broken = Broken::DecideAfterFirstRound);
    assert!(caught > 0, "the agreement checker missed a protocol that skips the vote round");
}

#[test]
fn applying_retries_again_breaks_validity() {
    let caught = runs_violating(40, 3, ViolationKind::Validity, |o| o.broken = Broken::NoDedupe);
    assert!(caught > 0, "the validity checker missed commands applied twice");
}

#[test]
fn voting_right_after_a_restart_is_caught_as_equivocation() {
    let caught = runs_violating(40, 3, ViolationKind::Equivocation, |o| o.broken = Broken::RestartWithoutRecovery);
    assert!(caught > 0, "the simulator missed a restarted replica voting again in a round it had voted in");
}

#[test]
fn voting_right_after_a_restart_breaks_agreement() {
    // Agreement breaks only when the restarted replica's new vote meets a quorum: rare, and rarer still under
    // the byte limits and control-plane traffic of the newer fault classes, which this does not need.
    let faults = Faults::parse("loss,dup,delay,partition,crash,skew,adversary,durable,cluster-crash").unwrap();
    let broken = |o: &mut Options| o.broken = Broken::RestartWithoutRecovery;
    let caught = runs_violating_under(faults, 300, 3, ViolationKind::Agreement, broken);
    assert!(caught > 0, "the agreement checker missed a restarted replica deciding differently");
}

#[test]
fn resuming_without_own_messages_is_caught_as_equivocation() {
    let caught = runs_violating(40, 3, ViolationKind::Equivocation, |o| o.broken = Broken::ResumeWithoutOwnMessages);
    assert!(caught > 0, "the simulator missed a resumed replica speaking differently in a round it spoke in");
}

#[test]
fn resuming_without_own_messages_breaks_agreement() {
    let caught = runs_violating(200, 3, ViolationKind::Agreement, |o| o.broken = Broken::ResumeWithoutOwnMessages);
    assert!(caught > 0, "the agreement checker missed a resumed replica deciding differently");
}

/// A replica whose disk was lost runs as `Replica::restarted` and writes a new log; if it crashes again
/// before it finished recovering, that log does not hold its earlier votes, so resuming it as a voter
/// lets it vote again in a slot it already voted in.
#[test]
fn resuming_a_replica_that_crashed_while_recovering_as_a_voter_is_caught() {
    let caught =
        runs_violating(100, 3, ViolationKind::Equivocation, |o| o.shell_broken = ShellBroken::ResumeRecoveringAsVoter);
    assert!(caught > 0, "the simulator missed a replica resumed as a voter in the middle of its recovery");
}

/// Without durable votes a whole-cluster crash cannot be survived: every replica comes back recovering,
/// none answers the others' probes, and nothing is decided again. The liveness checker must say so.
#[test]
fn a_whole_cluster_crash_that_loses_every_disk_stalls() {
    let mut stalled = 0;
    let faults = Faults::parse("cluster-crash,delay").unwrap_or(Faults::ALL);
    let configure = |o: &mut Options| o.shell_broken = ShellBroken::ClusterCrashLosesDisks;
    sim::run_seeds(0, 20, 3, faults, configure, |report| {
        stalled += u64::from(report.violations.iter().any(|v| v.kind == ViolationKind::Liveness));
    });
    assert!(stalled > 10, "only {stalled} of 20 runs stalled after every replica lost its disk");
}

/// Records written before a message leaves survive a process crash (they are in the kernel), not a power
/// loss unless synced first. A crash that loses the unsynced tail makes a resumed replica forget votes
/// its peers hold, and the equivocation checker must see it speak twice.
#[test]
fn losing_records_of_messages_already_sent_is_caught_as_equivocation() {
    let caught = runs_violating(60, 3, ViolationKind::Equivocation, |o| o.shell_broken = ShellBroken::SendBeforeSync);
    assert!(caught > 0, "the simulator missed a resumed replica that lost votes it had already sent");
}

#[test]
fn catch_up_that_ignores_the_transport_byte_limit_is_caught_as_a_liveness_failure() {
    let caught = runs_violating(40, 3, ViolationKind::Liveness, |o| o.broken = Broken::UnboundedSyncReply);
    assert!(caught > 0, "the simulator missed a replica that never caught up past oversize replies");
}

#[test]
fn a_membership_taken_from_a_proposal_is_caught() {
    let faults = Faults { members: true, ..Faults::ALL };
    let caught =
        runs_violating_under(faults, 40, 5, ViolationKind::Membership, |o| o.broken = Broken::MembersFromProposal);
    assert!(caught > 0, "the membership checker missed a change adopted inside the slot that may decide it");
}

/// Seeds where a whole-cluster crash resumes replicas from logs over their bound (slots dropped that no
/// snapshot covers) while a peer is behind those slots.
const LOST_SLOT_SEEDS: [u64; 2] = [11_419, 15_770];

#[test]
fn serving_nothing_for_slots_the_log_dropped_is_caught_as_a_liveness_failure() {
    for seed in LOST_SLOT_SEEDS {
        let mut options = Options::draw(seed, 3, Faults::ALL);
        options.broken = Broken::NoSnapshotForLostSlots;
        let report = sim::run(options);
        assert!(
            report.violations.iter().any(|v| v.kind == ViolationKind::Liveness),
            "seed {seed}: the simulator missed a peer stuck behind slots nobody can serve"
        );
    }
}

#[test]
fn slots_the_log_dropped_are_served_by_a_new_snapshot() {
    for seed in LOST_SLOT_SEEDS {
        let report = sim::run(Options::draw(seed, 3, Faults::ALL));
        assert!(report.violations.is_empty(), "seed {seed}: {:?}", report.violations);
    }
}

/// A seed whose sessions (clients with expired commands below many applied ones) take most of a message:
/// the first snapshot chunk must still fit the transport beside them, or the lagging replica never
/// catches up.
#[test]
fn the_first_snapshot_chunk_fits_the_byte_limit_beside_large_sessions() {
    let report = sim::run(Options::draw(1_113, 3, Faults::ALL));
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.messages_refused_oversize, 0, "a message over the limit was sent");
    assert!(report.snapshot_chunks_received > 0, "no snapshot travelled in chunks");
}

/// A seed (5 replicas, every fault class but strand and members) whose snapshots carry sessions larger
/// than a whole message: the replica a whole-cluster crash left behind the others' compacted logs catches
/// up only because the sessions travel in chunks like the state.
#[test]
fn sessions_larger_than_a_message_reach_a_lagging_replica_in_chunks() {
    let faults = "loss,dup,delay,partition,crash,skew,clock,adversary,durable,cluster-crash,disk-errors,bridged,size";
    let report = sim::run(Options::draw(12_192, 5, Faults::parse(faults).unwrap()));
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert_eq!(report.messages_refused_oversize, 0, "a message over the limit was sent");
    assert!(report.snapshot_chunks_received > 0, "no snapshot travelled in chunks");
}

/// The byte-limited network refuses nothing the core sends when catch-up keeps to its bounds, and the
/// limit is small enough that what catch-up carries in total is over it (so the bound is what lets it pass).
#[test]
fn bounded_catch_up_fits_the_transport_byte_limit() {
    let (mut refused, mut snapshot_chunks, mut runs) = (0, 0, 0);
    sim::run_seeds(
        0,
        100,
        3,
        Faults::ALL,
        |_| {},
        |report| {
            assert!(report.violations.is_empty(), "seed {}: {:?}", report.options.seed, report.violations);
            assert!(report.options.message_bytes_max < usize::MAX);
            refused += report.messages_refused_oversize;
            snapshot_chunks += report.snapshot_chunks_received;
            runs += 1;
        },
    );
    assert_eq!(runs, 100);
    assert_eq!(refused, 0, "a message over the limit was sent");
    assert!(snapshot_chunks > 0, "no snapshot travelled in chunks");
}

#[test]
fn reading_local_state_without_consensus_is_not_linearizable() {
    let caught = runs_violating(40, 3, ViolationKind::Linearizability, |o| o.shell_broken = ShellBroken::LocalReads);
    assert!(caught > 0, "the linearizability checker missed stale local reads");
}

/// A coin that differs between replicas does not break safety in this agreement (the coin is flipped
/// only when a replica saw no non-"?" vote, and then no replica can have decided in that phase), so the
/// safety checkers rightly stay quiet; what it costs is termination: slots take more phases.
#[test]
fn a_coin_that_differs_between_replicas_is_safe_but_slower() {
    let phases = |broken: Broken| {
        let (mut total, mut slots, mut max) = (0, 0, 0);
        sim::run_seeds(
            0,
            150,
            5,
            Faults::ALL,
            |o| o.broken = broken,
            |report| {
                assert!(
                    report.violations.is_empty(),
                    "{:?}\n  replay: {}",
                    report.violations,
                    report.options.replay_line()
                );
                total += report.phases_total;
                slots += report.slots_by_vote;
                max = max.max(report.phases_max);
            },
        );
        (total as f64 / slots as f64, max)
    };
    let (common_mean, common_max) = phases(Broken::Nothing);
    let (local_mean, local_max) = phases(Broken::LocalCoin);
    assert!(local_mean > common_mean, "local coin {local_mean:.3} phases per slot, common {common_mean:.3}");
    assert!(local_max > common_max, "local coin max {local_max} phases, common {common_max}");
}

/// A storage write that fails in the middle of a turn must stop the shell before the turn's messages
/// leave. A shell that sends them anyway and comes back trusting a log without their records forgets
/// votes its peers hold.
#[test]
fn sending_after_a_failed_write_is_caught_as_equivocation() {
    let caught =
        runs_violating(200, 3, ViolationKind::Equivocation, |o| o.shell_broken = ShellBroken::SendAfterFailedWrite);
    assert!(caught > 0, "the simulator missed a replica that sent a turn whose records were never written");
}

/// A slow snapshot writer whose older snapshot replaces a newer one leaves a gap on disk; a restart that
/// resumes as a voter from before the gap forgets the votes it cast after it.
#[test]
fn a_stale_snapshot_replacing_a_newer_one_is_caught_as_equivocation() {
    let caught =
        runs_violating(100, 3, ViolationKind::Equivocation, |o| o.shell_broken = ShellBroken::StaleSnapshotWins);
    assert!(caught > 0, "the simulator missed a replica resumed from an older snapshot than the one it had");
}

/// A replica whose data directory was wiped after it voted must not come back as a voter from slot 0.
#[test]
fn a_wiped_replica_voting_as_a_fresh_one_is_caught_as_equivocation() {
    let caught =
        runs_violating(60, 3, ViolationKind::Equivocation, |o| o.shell_broken = ShellBroken::WipedDiskVotesFresh);
    assert!(caught > 0, "the simulator missed a wiped replica voting again in a slot it had voted in");
}
