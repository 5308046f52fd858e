//! Hostile seeds: every checker must pass on every seed, for 3 and 5 replicas. The long runs live in
//! `cargo xtask sim --seeds N`; these keep CI under a minute in debug builds.

use sim::{Faults, Options, RunReport};

fn failures(
    first_seed: u64,
    seeds: u64,
    replicas: u8,
    faults: Faults,
    configure: impl FnMut(&mut Options),
) -> Vec<String> {
    let mut failed = Vec::new();
    sim::run_seeds(first_seed, seeds, replicas, faults, configure, |report: &RunReport| {
        if !report.violations.is_empty() {
            failed.push(format!("{:?}\n  replay: {}", report.violations, report.options.replay_line()));
        }
    });
    failed
}

#[test]
fn three_replicas_stay_safe_and_live_under_every_fault() {
    let failed = failures(0, 300, 3, Faults::ALL, |_| {});
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn five_replicas_stay_safe_and_live_under_every_fault() {
    let failed = failures(0, 200, 5, Faults::ALL, |_| {});
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn membership_changes_stay_safe_and_live_under_every_fault() {
    let faults = Faults { members: true, ..Faults::ALL };
    let mut decided = 0;
    let mut failed = Vec::new();
    sim::run_seeds(
        0,
        100,
        5,
        faults,
        |_| {},
        |report: &RunReport| {
            decided += report.reconfigurations[1];
            if !report.violations.is_empty() {
                failed.push(format!("{:?}\n  replay: {}", report.violations, report.options.replay_line()));
            }
        },
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(decided > 0, "no membership change was decided: the runs did not exercise any");
}

#[test]
fn seeds_pass_with_every_message_through_the_codec() {
    let failed = failures(1_000, 20, 3, Faults::ALL, |options| options.codec = true);
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn crash_restart_alone_keeps_agreement() {
    let failed = failures(2_000, 60, 3, Faults::parse("crash,delay").unwrap_or(Faults::ALL), |_| {});
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn fault_free_runs_decide_every_operation() {
    let mut slots = 0;
    sim::run_seeds(
        3_000,
        20,
        3,
        Faults::NONE,
        |_| {},
        |report| {
            assert!(report.violations.is_empty(), "{:?}", report.violations);
            assert_eq!(report.crashes, 0);
            slots += report.slots_decided;
        },
    );
    assert!(slots > 0);
}

#[test]
fn a_seed_replays_exactly() {
    let first = sim::run(Options::draw(42, 3, Faults::ALL));
    let second = sim::run(Options::draw(42, 3, Faults::ALL));
    assert_eq!(
        (first.slots_decided, first.messages_sent, first.crashes, first.end_ms, first.ops_completed),
        (second.slots_decided, second.messages_sent, second.crashes, second.end_ms, second.ops_completed)
    );
}
