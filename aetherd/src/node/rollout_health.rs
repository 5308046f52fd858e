//! The leader's measure of shifting rollouts: each version's calls, errors and p99 over its rollout's
//! window, from the metrics every node gossips (`telemetry::Board`, counters since each node started).
//!
//! Once a second ([`RolloutHealth::sample`]) the leader reads the merged counters of the versions that
//! shifting rollouts with thresholds move (old and new) and keeps them; a version's window figures
//! ([`RolloutHealth::figures`]) are the newest reading less the newest one at least a window old (or the
//! first one that holds the version, while the rollout is younger than its window). Counts are kept per node:
//! a node whose counters went back (it restarted) counts nothing in that window. A node that stops leading
//! forgets its readings ([`RolloutHealth::reset`]); a new leader judges once it has two.
//!
//! Invariants: readings are kept only for versions some judged rollout moves (at most [`VERSIONS_MAX`]), at
//! most [`READINGS_MAX`] of them, thinned so they span the longest window, latency as non-empty buckets
//! only; nothing here writes anything (the leader's pass does).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use control::records::Record;
use control::rollout::{Figures, Phase, RolloutRecord};
use kvstore::{Artifact, Store};
use telemetry::histogram::Bucket;
use telemetry::{Board, Histogram};

/// Most readings kept.
pub const READINGS_MAX: usize = 600;
/// Most versions read (the rest of the judged rollouts' versions are not judged).
pub const VERSIONS_MAX: usize = 32;

/// `(calls, errors)` since each node started, by node.
type PerNode = BTreeMap<String, (u64, u64)>;

/// One version's counters at one reading: per node (so a node that restarted is told apart), and the
/// latency merged over nodes as its non-empty buckets.
#[derive(Clone, Default)]
struct Counters {
    nodes: PerNode,
    buckets: Vec<Bucket>,
    sum: u64,
    max: u64,
}

impl Counters {
    fn latency(&self) -> Histogram {
        Histogram::from_buckets(&self.buckets, self.sum, self.max).unwrap_or_default()
    }
}

#[derive(Default)]
pub(crate) struct RolloutHealth {
    readings: VecDeque<(u64, BTreeMap<Artifact, Counters>)>,
}

/// The shifting rollouts with thresholds: the versions they move (at most [`VERSIONS_MAX`]), and the longest
/// window.
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
            for version in [moved.from_artifact(), moved.to_artifact()].into_iter().flatten() {
                if versions.len() < VERSIONS_MAX {
                    versions.insert(version);
                }
            }
        }
    }
    (versions, window_ms)
}

/// `now` less `then` for one version: per node, a node whose counters went back (it restarted) counts
/// nothing, one that was not there counts all it has.
fn window(now: &Counters, then: &Counters) -> Figures {
    let (mut calls, mut errors) = (0u64, 0u64);
    for (node, (c, e)) in &now.nodes {
        match then.nodes.get(node) {
            Some((c0, e0)) if c >= c0 && e >= e0 => {
                calls += c - c0;
                errors += e - e0;
            }
            Some(_) => {}
            None => {
                calls += c;
                errors += e;
            }
        }
    }
    let latency = now.latency().since(&then.latency());
    Figures { calls, errors, p99_ms: latency.quantile(0.99) / 1000 }
}

impl RolloutHealth {
    /// Forgets every reading (this node stopped leading: a later term starts afresh).
    pub fn reset(&mut self) {
        self.readings.clear();
    }

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
        let mut merged: BTreeMap<Artifact, (PerNode, Histogram)> = BTreeMap::new();
        for view in board.invocations(|artifact, _| names.contains(artifact)) {
            let Ok(artifact) = Artifact::parse(&view.artifact) else { continue };
            let (nodes, latency) = merged.entry(artifact).or_default();
            for (node, calls, errors) in &view.nodes {
                let counts = nodes.entry(node.clone()).or_default();
                counts.0 += calls;
                counts.1 += errors;
            }
            latency.merge(&view.latency);
        }
        let reading = merged
            .into_iter()
            .map(|(artifact, (nodes, latency))| {
                let counters = Counters { nodes, buckets: latency.buckets(), sum: latency.sum(), max: latency.max() };
                (artifact, counters)
            })
            .collect();
        self.readings.push_back((now_ms, reading));
        let oldest_needed = now_ms.saturating_sub(window_ms.saturating_add(every_ms));
        while self.readings.len() > READINGS_MAX || self.readings.get(1).is_some_and(|(at, _)| *at <= oldest_needed) {
            self.readings.pop_front();
        }
    }

    /// Each judged version's figures over `window_ms` of its rollout; empty until there are two readings.
    /// A version's window starts at the newest reading at least a window old that holds it, else at the
    /// first reading that holds it (so a version is never judged on counters from before it was read).
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
            for moved in &record.artifacts {
                for version in [moved.from_artifact(), moved.to_artifact()].into_iter().flatten() {
                    let Some(now) = newest.get(&version) else { continue };
                    let holding = || self.readings.iter().filter(|(_, r)| r.contains_key(&version));
                    let base = holding().rev().find(|(at, _)| *at <= start).or_else(|| holding().next());
                    let Some(then) = base.and_then(|(_, r)| r.get(&version)) else { continue };
                    health.insert(version, window(now, then));
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
    fn a_restarted_node_counts_nothing_rather_than_wrong_figures() {
        let store = store_with_rollout(10_000);
        let board = Board::new("n1", &["n1".to_owned(), "n2".to_owned()]);
        let mut health = RolloutHealth::default();
        for second in 0..=20u64 {
            // n2 restarts at second 15: its counters start again from zero, error-free.
            let n2 = if second < 15 { (1_000 + second * 10, 0) } else { ((second - 15) * 10, 0) };
            board.accept(summary("n1", second * 1000 + 1, (second * 10, 0), (second * 10, second)), 0).unwrap();
            board.accept(summary("n2", second * 1000 + 1, n2, n2), 0).unwrap();
            health.sample(&board, &store, second * 1000);
        }
        let v2 = health.figures(&store)[&Artifact::parse(V2).unwrap()];
        assert_eq!((v2.calls, v2.errors), (100, 10), "n1's window only: n2's counters went back");
        health.reset();
        assert!(health.figures(&store).is_empty());
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
