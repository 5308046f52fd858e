//! The leader's measure of autoscaled slices' load, for the scaling controller (`control::scaling`).
//!
//! Once a second while this node leads ([`ScalingLoad::sample`]) it reads, for every target whose blueprint
//! turns `autoscale` on: the calls of its version on every node (counters since each node started, from the
//! gossiped metrics; a node whose count went back, a restart, or that was not in the older reading counts
//! nothing for that span) and the CPU of the nodes that run an ACTIVE instance of it (their latest
//! summaries). A slice's load ([`ScalingLoad::loads`]) is its call rate over the last [`RATE_WINDOW_MS`] and
//! the mean CPU of those nodes. CPU is per node, not per slice: a node's other work counts too (said in
//! ARCHITECTURE as a known limit).
//!
//! Invariants: readings are kept for [`RATE_WINDOW_MS`] and only for autoscaled versions; a slice with no
//! reading a window old yet has no load (the controller waits); nothing here writes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use control::records::{Record, SliceRecord, TargetRecord};
use control::scaling::SliceLoad;
use control::{DesiredState, SliceState};
use kvstore::{AetherKey, Artifact, Store};
use telemetry::Board;

/// The span a call rate is measured over.
pub const RATE_WINDOW_MS: u64 = 5_000;

/// Calls since each node started, by version, then node.
type Reading = BTreeMap<Artifact, BTreeMap<String, u64>>;

#[derive(Default)]
pub(crate) struct ScalingLoad {
    /// `(wall ms, calls per version per node)`, oldest first.
    readings: VecDeque<(u64, Reading)>,
    /// The latest load per version.
    loads: BTreeMap<Artifact, SliceLoad>,
}

/// The autoscaled versions and, for each, the nodes running an ACTIVE instance.
fn autoscaled(store: &Store) -> BTreeMap<Artifact, BTreeSet<String>> {
    let mut out: BTreeMap<Artifact, BTreeSet<String>> = BTreeMap::new();
    for entry in store.list("targets/") {
        let AetherKey::Target { artifact } = entry.key() else { continue };
        if TargetRecord::decode(entry.value()).is_ok_and(|t| t.autoscale) {
            out.insert(artifact.clone(), BTreeSet::new());
        }
    }
    if out.is_empty() {
        return out;
    }
    for entry in store.list("slices/") {
        let AetherKey::Slice { node, artifact } = entry.key() else { continue };
        let Some(nodes) = out.get_mut(artifact) else { continue };
        let Ok(record) = SliceRecord::decode(entry.value()) else { continue };
        if record.state == SliceState::Active && record.desired == DesiredState::Active {
            nodes.insert(node.to_string());
        }
    }
    out
}

/// Calls made between two readings of one version, summed over nodes; a node whose count went back (it
/// restarted) counts nothing.
fn calls_between(now: Option<&BTreeMap<String, u64>>, then: Option<&BTreeMap<String, u64>>) -> u64 {
    let Some(now) = now else { return 0 };
    now.iter()
        .map(|(node, calls)| match then.and_then(|t| t.get(node)) {
            Some(before) => calls.checked_sub(*before).unwrap_or(0),
            None => 0,
        })
        .sum()
}

impl ScalingLoad {
    /// Forgets every reading (this node stopped leading).
    pub fn reset(&mut self) {
        self.readings.clear();
        self.loads.clear();
    }

    /// One reading at wall-clock `now_ms` (at most one a second); the loads are recomputed from it.
    pub fn sample(&mut self, board: &Board, store: &Store, now_ms: u64) {
        if self.readings.back().is_some_and(|(at, _)| now_ms < at.saturating_add(1_000)) {
            return;
        }
        let versions = autoscaled(store);
        if versions.is_empty() {
            self.readings.clear();
            self.loads.clear();
            return;
        }
        let names: BTreeSet<String> = versions.keys().map(Artifact::to_string).collect();
        let mut calls: BTreeMap<Artifact, BTreeMap<String, u64>> = BTreeMap::new();
        for view in board.invocations(|artifact, _| names.contains(artifact)) {
            if let Ok(artifact) = Artifact::parse(&view.artifact) {
                let nodes = calls.entry(artifact).or_default();
                for (node, n, _) in &view.nodes {
                    *nodes.entry(node.clone()).or_default() += n;
                }
            }
        }
        self.readings.push_back((now_ms, calls));
        while self.readings.get(1).is_some_and(|(at, _)| at.saturating_add(RATE_WINDOW_MS) <= now_ms) {
            self.readings.pop_front();
        }
        let cpu: BTreeMap<String, f64> =
            board.latest().into_iter().map(|l| (l.summary.node.clone(), l.summary.cpu_percent)).collect();
        self.loads.clear();
        let (Some((then_ms, then)), Some((_, now))) = (self.readings.front(), self.readings.back()) else { return };
        let span_ms = now_ms.saturating_sub(*then_ms);
        if span_ms + 1_000 < RATE_WINDOW_MS {
            return;
        }
        for (artifact, nodes) in versions {
            let delta = calls_between(now.get(&artifact), then.get(&artifact));
            let measured: Vec<f64> = nodes.iter().filter_map(|n| cpu.get(n).copied()).collect();
            let cpu_percent =
                if measured.is_empty() { 0.0 } else { measured.iter().sum::<f64>() / measured.len() as f64 };
            let calls_per_sec = delta as f64 * 1000.0 / span_ms.max(1) as f64;
            self.loads.insert(artifact, SliceLoad { cpu_percent, calls_per_sec });
        }
    }

    /// The latest load per autoscaled version.
    pub fn loads(&self) -> &BTreeMap<Artifact, SliceLoad> {
        &self.loads
    }
}
