//! What a node knows about every node's metrics: the latest summary of each configured node (its own
//! included), each node's history ring, and the slow calls collected from every summary.
//!
//! Every node keeps all of it (summaries are broadcast, not sent to the leader alone), so any node
//! answers the metrics routes and losing a node, the leader included, loses nothing the others measured.
//!
//! Invariants: only checked summaries of configured node ids are stored; a node's summaries are taken in
//! increasing `time_ms` order (an older or repeated one is ignored, so its slow calls are never counted
//! twice); the slow-call list holds at most [`SLOW_CLUSTER_MAX`] entries; memory is bounded by the number
//! of configured nodes times (one summary + [`crate::HISTORY_SAMPLES`] samples).

use crate::histogram::Histogram;
use crate::history::{Range, Ring, Sample};
use crate::summary::{SlowCall, Summary, SummaryError};
use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

/// Slow calls kept cluster-wide.
pub const SLOW_CLUSTER_MAX: usize = 1024;
/// The default slow-call threshold.
pub const SLOW_THRESHOLD_MS_DEFAULT: u64 = 500;

/// A node's latest summary and when it arrived here.
#[derive(Debug, Clone)]
pub struct Latest {
    pub summary: Summary,
    pub received_ms: u64,
}

#[derive(Default)]
struct State {
    latest: BTreeMap<String, Latest>,
    history: BTreeMap<String, Ring>,
    slow: VecDeque<SlowCall>,
    leader: Option<String>,
}

/// One slice method's calls merged over every node.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodView {
    pub artifact: String,
    pub method: String,
    pub calls: u64,
    pub errors: u64,
    pub latency: Histogram,
    /// `(node, calls, errors)` of each node that ran it.
    pub nodes: Vec<(String, u64, u64)>,
}

pub struct Board {
    node: String,
    known: Vec<String>,
    state: Mutex<State>,
    slow_threshold_ms: AtomicU64,
}

impl Board {
    /// The board of node `node` in a cluster of `known` node ids.
    pub fn new(node: &str, known: &[String]) -> Board {
        Board {
            node: node.to_owned(),
            known: known.to_vec(),
            state: Mutex::new(State::default()),
            slow_threshold_ms: AtomicU64::new(SLOW_THRESHOLD_MS_DEFAULT),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Calls that take longer than this are recorded as slow.
    pub fn slow_threshold_ms(&self) -> u64 {
        self.slow_threshold_ms.load(Ordering::Relaxed)
    }

    /// Sets the slow-call threshold (at least 1 ms); it applies to calls that end from now on.
    pub fn set_slow_threshold_ms(&self, ms: u64) {
        self.slow_threshold_ms.store(ms.max(1), Ordering::Relaxed);
    }

    pub fn set_leader(&self, leader: Option<String>) {
        self.state.lock().leader = leader;
    }

    pub fn leader(&self) -> Option<String> {
        self.state.lock().leader.clone()
    }

    /// Stores a checked summary of a configured node that arrived at `now_ms`. Refuses one from an
    /// unknown node and ignores (`Ok(false)`) one not newer than that node's latest.
    pub fn accept(&self, summary: Summary, now_ms: u64) -> Result<bool, SummaryError> {
        if !self.known.contains(&summary.node) {
            return Err(SummaryError(format!("{} is not a node of this cluster", summary.node)));
        }
        summary.check()?;
        let mut state = self.state.lock();
        if state.latest.get(&summary.node).is_some_and(|l| l.summary.time_ms >= summary.time_ms) {
            return Ok(false);
        }
        state.history.entry(summary.node.clone()).or_default().push(sample_of(&summary));
        for slow in &summary.slow {
            if state.slow.len() == SLOW_CLUSTER_MAX {
                state.slow.pop_front();
            }
            state.slow.push_back(slow.clone());
        }
        state.latest.insert(summary.node.clone(), Latest { summary, received_ms: now_ms });
        Ok(true)
    }

    /// Every node's latest summary, by node id.
    pub fn latest(&self) -> Vec<Latest> {
        self.state.lock().latest.values().cloned().collect()
    }

    /// This node's own latest summary.
    pub fn own(&self) -> Option<Summary> {
        self.state.lock().latest.get(&self.node).map(|l| l.summary.clone())
    }

    /// Each node's history over `range` before `now_ms`, oldest first.
    pub fn history(&self, range: Range, now_ms: u64) -> BTreeMap<String, Vec<Sample>> {
        let state = self.state.lock();
        state.history.iter().map(|(node, ring)| (node.clone(), ring.query(range, now_ms))).collect()
    }

    /// The newest `limit` slow calls, newest first (by when they ended).
    pub fn slow(&self, limit: usize) -> Vec<SlowCall> {
        let mut all: Vec<SlowCall> = self.state.lock().slow.iter().cloned().collect();
        all.sort_by_key(|s| std::cmp::Reverse(s.time_ms));
        all.truncate(limit);
        all
    }

    /// Slice methods merged over every node's latest summary, filtered by `keep(artifact, method)`.
    pub fn invocations(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<MethodView> {
        let state = self.state.lock();
        let mut merged: BTreeMap<(String, String), MethodView> = BTreeMap::new();
        for latest in state.latest.values() {
            for m in latest.summary.methods.iter().filter(|m| keep(&m.artifact, &m.method)) {
                let view = merged.entry((m.artifact.clone(), m.method.clone())).or_insert_with(|| MethodView {
                    artifact: m.artifact.clone(),
                    method: m.method.clone(),
                    calls: 0,
                    errors: 0,
                    latency: Histogram::new(),
                    nodes: Vec::new(),
                });
                view.calls += m.calls;
                view.errors += m.errors;
                view.latency.merge(&m.latency());
                view.nodes.push((latest.summary.node.clone(), m.calls, m.errors));
            }
        }
        merged.into_values().collect()
    }
}

/// The history point of a summary.
pub fn sample_of(s: &Summary) -> Sample {
    Sample {
        time_ms: s.time_ms,
        rss_bytes: s.rss_bytes,
        cpu_percent: s.cpu_percent as f32,
        calls_per_sec: s.invocations.calls_per_sec as f32,
        errors_per_sec: s.invocations.errors_per_sec as f32,
        loop_lag_p99_ms: s.loop_lag.p99_us as f32 / 1000.0,
        slots_per_sec: s.consensus.slots_per_sec as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::sample;

    fn board() -> Board {
        Board::new("node-1", &["node-1".into(), "node-2".into(), "node-3".into()])
    }

    #[test]
    fn summaries_of_unknown_nodes_are_refused_and_old_ones_ignored() {
        let b = board();
        assert!(b.accept(sample("node-9"), 1).is_err());
        assert_eq!(b.accept(sample("node-2"), 1), Ok(true));
        assert_eq!(b.accept(sample("node-2"), 2), Ok(false), "a repeat is ignored");
        assert_eq!(b.slow(10).len(), 1, "its slow calls count once");
        let mut newer = sample("node-2");
        newer.time_ms += 1000;
        assert_eq!(b.accept(newer, 3), Ok(true));
        assert_eq!(b.latest().len(), 1);
        assert_eq!(b.slow(10).len(), 2);
        assert_eq!(b.history(Range::M5, sample("x").time_ms + 2000)["node-2"].len(), 2);
    }

    #[test]
    fn invocations_merge_histograms_across_nodes() {
        let b = board();
        b.accept(sample("node-1"), 1).unwrap();
        b.accept(sample("node-2"), 1).unwrap();
        let views = b.invocations(|_, _| true);
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!((v.calls, v.errors, v.latency.count()), (6, 2, 6));
        assert_eq!(v.nodes, [("node-1".to_string(), 3, 1), ("node-2".to_string(), 3, 1)]);
        assert!(b.invocations(|_, m| m == "other").is_empty());
    }

    #[test]
    fn the_slow_list_is_bounded_and_newest_first() {
        let b = board();
        for i in 0..(SLOW_CLUSTER_MAX as u64 + 10) {
            let mut s = sample("node-3");
            s.time_ms += i;
            s.slow[0].time_ms = s.time_ms;
            s.slow[0].request_id = format!("r{i}");
            b.accept(s, 1).unwrap();
        }
        let slow = b.slow(usize::MAX);
        assert_eq!(slow.len(), SLOW_CLUSTER_MAX);
        assert_eq!(slow[0].request_id, format!("r{}", SLOW_CLUSTER_MAX + 9));
        assert_eq!(b.slow(3).len(), 3);
    }
}
