//! The DHT under the simulator: correct replicas pass many seeds, and each deliberately broken variant is
//! caught by the checker that guards what it breaks.

use sim::dht::{run_seeds, DhtBroken, DhtReport};

fn failing(first_seed: u64, seeds: u64, broken: Option<DhtBroken>) -> Vec<DhtReport> {
    let mut failed = Vec::new();
    run_seeds(first_seed, seeds, None, broken, |report| {
        if !report.violations.is_empty() {
            failed.push(report.clone());
        }
    });
    failed
}

fn describe(reports: &[DhtReport]) -> String {
    reports
        .iter()
        .take(3)
        .map(|r| format!("{}\n  {}", r.violations.join("\n  "), r.options.replay_line()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn correct_replicas_pass_200_seeds() {
    let failed = failing(0, 200, None);
    assert!(failed.is_empty(), "{} seeds failed:\n{}", failed.len(), describe(&failed));
}

/// Seeds in which `broken` must be caught by a violation whose text contains `what`.
fn caught(broken: DhtBroken, seeds: u64, what: &str) {
    let failed = failing(1_000, seeds, Some(broken));
    let matching = failed.iter().filter(|r| r.violations.iter().any(|v| v.contains(what))).count();
    assert!(matching > 0, "{broken:?} was not caught by `{what}` in {seeds} seeds ({} failed otherwise)", failed.len());
}

#[test]
fn a_write_quorum_of_one_loses_acknowledged_writes() {
    caught(DhtBroken::W1, 20, "is not readable from the read quorum");
}

#[test]
fn reads_without_repair_leave_stale_replicas() {
    caught(DhtBroken::NoReadRepair, 20, "which answered it, still holds");
}

#[test]
fn replicas_without_anti_entropy_do_not_converge() {
    caught(DhtBroken::NoAntiEntropy, 20, "not converged");
}

#[test]
fn a_seed_replays_exactly() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        run_seeds(42, 2, None, None, |r| {
            runs.push((r.ops, r.acked, r.repairs, r.convergence_ms, r.violations.clone()));
        });
    }
    assert_eq!(runs[..2], runs[2..]);
}
