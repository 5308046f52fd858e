//! The leader's measure of shifting rollouts: each version's calls, errors and p99 over its rollout's
//! window, from the metrics every node gossips (`telemetry::Board`, counters since each node started).
//!
//! Once a second ([`RolloutHealth::sample`]) the leader reads the merged counters of the versions that
//! shifting rollouts with thresholds move (old and new) and keeps them; a version's window figures
//! ([`RolloutHealth::figures`]) are the newest reading less the newest one at least a window old (or the
//! oldest kept, while the rollout is younger than its window). A node that restarted meanwhile counts from
//! zero again, so its calls in the window are undercounted, never negative. A new leader starts with no
//! readings and judges once it has two.
//!
//! Invariants: readings are kept only for versions some judged rollout moves, at most [`READINGS_MAX`] of
//! them, thinned so they span the longest window; nothing here writes anything (the leader's pass does).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use control::records::Record;
use control::rollout::{Figures, Phase, RolloutRecord};
use kvstore::{Artifact, Store};
use telemetry::{Board, Histogram};

/// Most readings kept.
pub const READINGS_MAX: usize = 600;

/// Merged counters of one version at one reading.
#[derive(Clone, Default)]
struct Counters {
    calls: u64,
    errors: u64,
    latency: Histogram,
}

#[derive(Default)]
pub(crate) struct RolloutHealth {
    readings: VecDeque<(u64, BTreeMap<Artifact, Counters>)>,
}

/// The shifting rollouts with thresholds: the versions they move, and the longest window.
fn judged(store: &Store) -> (BTreeSet<Artifact>, u64) {
    let mut versions = BTreeSet::new();
    let mut window_ms = 0;
    for entry in store.list("updates/") {
        let Ok(record) = RolloutRecord::decode(entry.value()) else { continue };
        if record.state != Phase::Shifting || !record.thresholds.judged() {
            continue;
        }
        window_ms = window_ms.max(record.thresholds.window_ms);
        for moved in &record.artifacts {
            versions.extend(moved.from_artifact());
            versions.extend(moved.to_artifact());
        }
    }
    (versions, window_ms)
}

impl RolloutHealth {
    /// One reading at wall-clock `now_ms`, when a judged rollout runs (else the readings are dropped).
    pub fn sample(&mut self, board: &Board, store: &Store, now_ms: u64) {
        let (versions, window_ms) = judged(store);
        if versions.is_empty() {
            self.readings.clear();
            return;
        }
        let every_ms = (window_ms / READINGS_MAX as u64).max(1_000);
        if self.readings.back().is_some_and(|(at, _)| now_ms < at.saturating_add(every_ms)) {
            return;
        }
        let names: BTreeSet<String> = versions.iter().map(Artifact::to_string).collect();
        let mut reading: BTreeMap<Artifact, Counters> = BTreeMap::new();
        for view in board.invocations(|artifact, _| names.contains(artifact)) {
            let Ok(artifact) = Artifact::parse(&view.artifact) else { continue };
            let counters = reading.entry(artifact).or_default();
            counters.calls += view.calls;
            counters.errors += view.errors;
            counters.latency.merge(&view.latency);
        }
        self.readings.push_back((now_ms, reading));
        let oldest_needed = now_ms.saturating_sub(window_ms.saturating_add(every_ms));
        while self.readings.len() > READINGS_MAX || self.readings.get(1).is_some_and(|(at, _)| *at <= oldest_needed) {
            self.readings.pop_front();
        }
    }

    /// Each judged version's figures over `window_ms` of its rollout; empty until there are two readings.
    pub fn figures(&self, store: &Store) -> control::cluster::Health {
        let mut health = control::cluster::Health::new();
        let Some((newest_at, newest)) = self.readings.back() else { return health };
        if self.readings.len() < 2 {
            return health;
        }
        for entry in store.list("updates/") {
            let Ok(record) = RolloutRecord::decode(entry.value()) else { continue };
            if record.state != Phase::Shifting || !record.thresholds.judged() {
                continue;
            }
            let start = newest_at.saturating_sub(record.thresholds.window_ms);
            let base = self.readings.iter().rev().find(|(at, _)| *at <= start).or(self.readings.front());
            let Some((_, base)) = base else { continue };
            for moved in &record.artifacts {
                for version in [moved.from_artifact(), moved.to_artifact()].into_iter().flatten() {
                    let now = newest.get(&version).cloned().unwrap_or_default();
                    let then = base.get(&version).cloned().unwrap_or_default();
                    let latency = now.latency.since(&then.latency);
                    let figures = Figures {
                        calls: now.calls.saturating_sub(then.calls),
                        errors: now.errors.saturating_sub(then.errors),
                        p99_ms: latency.quantile(0.99) / 1000,
                    };
                    health.insert(version, figures);
                }
            }
        }
        health
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::rollout::{Approval, Move, Plan, Ratio, Stage, Strategy, Thresholds};
    use kvstore::{AetherKey, ArtifactBase, Command, Name, WatchLimits};
    use telemetry::{MethodFigures, Summary};

    const V1: &str = "g:a:1.0.0";
    const V2: &str = "g:a:2.0.0";

    fn store_with_rollout(window_ms: u64) -> Store {
        let plan = Plan {
            artifacts: vec![Move {
                base: ArtifactBase::parse("g:a").unwrap(),
                from: "1.0.0".into(),
                to: "2.0.0".into(),
            }],
            blueprint: Name::parse("shop").unwrap(),
            strategy: Strategy::Rolling,
            instances: 0,
            stages: Some(vec![Stage { percent: 50, hold_ms: 0 }]),
            approval: Some(Approval::Manual),
            thresholds: Thresholds { max_error_rate: Some(0.1), window_ms, ..Thresholds::default() },
            keep_old_ms: None,
        };
        let record = RolloutRecord::start(plan, 0).unwrap();
        let record = RolloutRecord { state: Phase::Shifting, ratio: Ratio::new_percent(50), ..record };
        let key = AetherKey::Update { id: Name::parse("r1").unwrap() };
        let mut store = Store::new(WatchLimits::default());
        store.apply(0, [Command::Put { key, value: record.encode() }.encode().unwrap()]).unwrap();
        store
    }

    /// A summary of `node` at `time_ms` with cumulative `(calls, errors)` of 1.0.0 and 2.0.0.
    fn summary(node: &str, time_ms: u64, v1: (u64, u64), v2: (u64, u64)) -> Summary {
        let method = |artifact: &str, (calls, errors): (u64, u64)| {
            let mut latency = Histogram::new();
            for _ in 0..calls {
                latency.record(2_000);
            }
            MethodFigures {
                artifact: artifact.into(),
                method: "get".into(),
                calls,
                errors,
                latency_buckets: latency.buckets(),
                latency_sum_us: latency.sum(),
                latency_max_us: latency.max(),
            }
        };
        Summary { node: node.into(), time_ms, methods: vec![method(V1, v1), method(V2, v2)], ..Summary::default() }
    }

    #[test]
    fn figures_are_the_window_of_the_counters_merged_over_nodes() {
        let store = store_with_rollout(10_000);
        let board = Board::new("n1", &["n1".to_owned(), "n2".to_owned()]);
        let mut health = RolloutHealth::default();
        for second in 0..=20u64 {
            // Each node: 10 calls a second on each version; 2.0.0 fails every call from second 15 on.
            let errors = second.saturating_sub(15) * 10;
            for node in ["n1", "n2"] {
                board.accept(summary(node, second * 1000 + 1, (second * 10, 0), (second * 10, errors)), 0).unwrap();
            }
            health.sample(&board, &store, second * 1000);
            if second == 0 {
                assert!(health.figures(&store).is_empty(), "one reading is no window");
            }
        }
        let figures = health.figures(&store);
        let v2 = figures[&Artifact::parse(V2).unwrap()];
        assert_eq!((v2.calls, v2.errors, v2.p99_ms), (200, 100, 2), "the last 10 s on both nodes");
        assert_eq!(figures[&Artifact::parse(V1).unwrap()].errors, 0);
        assert!(health.readings.len() <= 12, "only the window is kept: {}", health.readings.len());
    }

    #[test]
    fn no_judged_rollout_keeps_nothing() {
        let board = Board::new("n1", &["n1".to_owned()]);
        let mut health = RolloutHealth::default();
        health.sample(&board, &store_with_rollout(10_000), 0);
        assert_eq!(health.readings.len(), 1);
        health.sample(&board, &Store::new(WatchLimits::default()), 1_000);
        assert!(health.readings.is_empty());
    }
}
