//! The checkers catch real bugs: deliberately broken variants of the core and of the shell must be
//! reported as violations of the invariant they break.

use consensus::Broken;
use sim::{Faults, Options, ShellBroken, ViolationKind};

/// Runs seeds with `configure` applied and counts the runs that reported a violation of `kind`.
fn runs_violating(seeds: u64, replicas: u8, kind: ViolationKind, configure: impl Fn(&mut Options)) -> u64 {
    let mut caught = 0;
    sim::run_seeds(0, seeds, replicas, Faults::ALL, configure, |report| {
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
    let caught = runs_violating(300, 3, ViolationKind::Agreement, |o| o.broken = Broken::RestartWithoutRecovery);
    assert!(caught > 0, "the agreement checker missed a restarted replica deciding differently");
}

#[test]
fn reading_local_state_without_consensus_is_not_linearizable() {
    let caught = runs_violating(40, 3, ViolationKind::Linearizability, |o| o.shell_broken = ShellBroken::LocalReads);
    assert!(caught > 0, "the linearizability checker missed stale local reads");
}
