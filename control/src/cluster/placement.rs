//! Placement of one target: retire what is surplus or long failed, add what is missing where it spreads best,
//! then move what sits on leaving nodes (`drain`). New instances only go to live ON_DUTY nodes; records on
//! leaving nodes never count as serving, so they are never picked as surplus and their replacements are added.
//!
//! Start failures (the `quarantine` module) hold placement back: nothing is added during a backoff or a
//! quarantine, and the FAILED records of a quarantined target are not retired, so their reasons stay readable.
//!
//! A record *serves* a target while it is wanted ACTIVE and not FAILED, whatever step it is at: a record in
//! LOADING counts, so a slow load is not doubled by a second placement. A record stands for `copies`
//! instances on its node (1 unless the target's `max_per_node` allows more), and counts as that many.
//!
//! Adding goes to nodes without a record of the artifact first (least loaded first), one instance each, and
//! only then raises `copies` of serving records on live ON_DUTY nodes, fewest copies first, up to
//! `max_per_node`: instances spread over nodes before they double up. The surplus to retire is taken from
//! records that are not ACTIVE yet first (so scaling down does not stop a serving instance while a starting
//! one exists), then by lowering `copies` of the record with the most, and only then by retiring ACTIVE
//! records, highest instance number first.
//!
//! Invariants: a record's `copies` stays within `1..=max_per_node` when the leader writes it; the sum of
//! serving copies never goes above `instances` by a placement of this pass.

use super::{Pass, FAILED_RETIRE_AFTER_MS};
use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{Record, SliceRecord, TargetRecord};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, Artifact, NodeId};
use std::collections::BTreeSet;

type Placed<'a> = (&'a NodeId, &'a Versioned<SliceRecord>);

/// The instances a record counts for, as the target allows: its placed copies, at most `per_node`.
fn copies(record: &SliceRecord, per_node: u32) -> u64 {
    u64::from(record.placed_copies().min(per_node.max(1)))
}

fn serving(record: &SliceRecord) -> bool {
    record.desired == DesiredState::Active && record.state != SliceState::Failed
}

impl<'a> Pass<'a> {
    /// Records of `artifact` on nodes not judged dead (live or suspect), by node id.
    fn live_records(&self, artifact: &Artifact) -> Vec<Placed<'a>> {
        let state = self.state;
        let by_node = state.slices.get(artifact).into_iter().flatten();
        by_node.filter(|(node, _)| self.counts(node)).collect()
    }

    pub(super) fn place(&mut self, artifact: &'a Artifact, target: &TargetRecord) {
        let records = self.live_records(artifact);
        if !target.failures.quarantined {
            self.retire_long_failed(artifact, &records);
        }
        // Records on leaving nodes do not count: their replacements are placed first (see `drain`).
        let serving: Vec<Placed<'a>> =
            records.iter().copied().filter(|(n, r)| serving(&r.value) && !self.leaving(n)).collect();
        let per_node = target.max_per_node.max(1);
        let count: u64 = serving.iter().map(|(_, r)| copies(&r.value, per_node)).sum();
        let instances = u64::from(target.instances);
        if count > instances {
            self.retire_surplus(artifact, serving, per_node, count - instances);
        } else if count < instances && self.may_place(artifact, target) && self.dependencies_ready(artifact, target) {
            self.add(artifact, target, &records, &serving, instances - count);
        } else {
            // A blueprint posted again with a lower `max_per_node`: records above it come down to it.
            for (node, record) in serving.iter().filter(|(_, r)| r.value.copies > per_node) {
                self.set_copies(artifact, node, record, u64::from(per_node));
            }
        }
        self.drain(artifact, target, &records);
    }

    fn retire_long_failed(&mut self, artifact: &'a Artifact, records: &[Placed<'a>]) {
        let now_ms = self.now_ms;
        let expired = |r: &SliceRecord| {
            r.state == SliceState::Failed
                && r.desired == DesiredState::Active
                && now_ms >= r.since_ms.saturating_add(FAILED_RETIRE_AFTER_MS)
        };
        for (node, record) in records.iter().filter(|(_, r)| expired(&r.value)) {
            log::info!("retiring {artifact} on {node}: failed: {}", record.value.error.as_deref().unwrap_or("?"));
            self.retire(artifact, node, record);
        }
    }

    /// Takes `surplus` instances away: starting records first, then copies, then ACTIVE records.
    fn retire_surplus(
        &mut self,
        artifact: &'a Artifact,
        mut serving: Vec<Placed<'a>>,
        per_node: u32,
        mut surplus: u64,
    ) {
        serving
            .sort_by_key(|(node, r)| (r.value.state == SliceState::Active, std::cmp::Reverse(r.value.instance), *node));
        let (starting, active): (Vec<Placed<'a>>, Vec<Placed<'a>>) =
            serving.into_iter().partition(|(_, r)| r.value.state != SliceState::Active);
        let mut kept: Vec<(Placed<'a>, u64)> = Vec::new();
        for (node, record) in starting {
            let n = copies(&record.value, per_node);
            if surplus >= n {
                surplus -= n;
                self.retire(artifact, node, record);
            } else {
                kept.push(((node, record), n - surplus));
                surplus = 0;
            }
        }
        let mut serving_copies: Vec<(Placed<'a>, u64)> =
            active.into_iter().map(|placed| (placed, copies(&placed.1.value, per_node))).collect();
        while surplus > 0 {
            // The record with the most copies gives one up; once every record runs one, the first in retire order
            // goes.
            let most = serving_copies.iter().map(|(_, n)| *n).max().unwrap_or(0);
            let Some((_, n)) = serving_copies.iter_mut().find(|(_, n)| *n == most && most > 0) else { break };
            *n -= 1;
            surplus -= 1;
        }
        for ((node, record), n) in kept.into_iter().chain(serving_copies) {
            match u32::try_from(n) {
                Ok(0) => self.retire(artifact, node, record),
                Ok(n) if n != record.value.copies => self.set_copies(artifact, node, record, u64::from(n)),
                _ => {}
            }
        }
    }

    /// False while the artifact's start failures hold placements back (a backoff or a quarantine).
    fn may_place(&self, artifact: &Artifact, target: &TargetRecord) -> bool {
        let may = target.failures.may_place(self.now_ms);
        if !may {
            log::debug!("{artifact}: placement held back by start failures ({})", target.failures.count);
        }
        may
    }

    /// True when every dependency has at least its `min_instances` records ACTIVE on live nodes.
    fn dependencies_ready(&self, artifact: &Artifact, target: &TargetRecord) -> bool {
        let ready = |dependency: &Artifact| {
            let Some(needed) = self.wanted.targets.get(dependency).map(|t| t.min_instances) else {
                return false;
            };
            let nodes = self.state.slices.get(dependency).into_iter().flat_map(|by_node| by_node.keys());
            let active: u64 =
                nodes.filter_map(|node| self.serves(dependency, node)).map(|r| u64::from(r.serving_copies())).sum();
            active >= u64::from(needed)
        };
        let waiting = target.depends_on.iter().find(|d| !ready(d));
        if let Some(dependency) = waiting {
            log::debug!("{artifact} waits for {dependency} to have its minimum of ACTIVE instances");
        }
        waiting.is_none()
    }

    /// Adds `missing` instances: new records on free nodes first, then copies on serving records (see the
    /// module documentation).
    fn add(
        &mut self,
        artifact: &'a Artifact,
        target: &TargetRecord,
        records: &[Placed<'a>],
        serving: &[Placed<'a>],
        missing: u64,
    ) {
        let occupied: BTreeSet<&NodeId> = records.iter().map(|(node, _)| *node).collect();
        let mut free: Vec<&'a NodeId> = self.live.iter().copied().filter(|n| !occupied.contains(n)).collect();
        free.sort_by_key(|node| (self.load.get(node).copied().unwrap_or(0), *node));
        let mut used: BTreeSet<u32> = records.iter().map(|(_, r)| r.value.instance).collect();
        let new = free.len().min(usize::try_from(missing).unwrap_or(usize::MAX));
        for node in free.into_iter().take(new) {
            let instance = (0..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
            used.insert(instance);
            self.create(artifact, node, target, instance);
        }
        let mut missing = missing - u64::try_from(new).unwrap_or(missing);
        let per_node = u64::from(target.max_per_node.max(1));
        let live: BTreeSet<&NodeId> = self.live.iter().copied().collect();
        let mut raised: Vec<(Placed<'a>, u64)> = (serving.iter().copied())
            .filter(|(node, r)| {
                // A node that could not start every copy it was asked for is not asked for more.
                live.contains(node) && !self.going.contains(&(artifact, *node)) && r.value.copies_refused.is_none()
            })
            .map(|placed| (placed, copies(&placed.1.value, target.max_per_node)))
            .collect();
        while missing > 0 {
            let fewest = raised.iter_mut().filter(|(_, n)| *n < per_node).min_by_key(|((node, _), n)| (*n, *node));
            let Some((_, n)) = fewest else { break };
            *n += 1;
            missing -= 1;
        }
        for ((node, record), n) in raised {
            if n != u64::from(record.value.copies) {
                self.set_copies(artifact, node, record, n);
            }
        }
        if missing > 0 {
            log::debug!("{artifact}: {missing} instance(s) missing, no node may take more (max_per_node {per_node})");
        }
    }

    /// Rewrites a record to stand for `copies` instances; its node follows.
    fn set_copies(&mut self, artifact: &Artifact, node: &NodeId, record: &Versioned<SliceRecord>, copies: u64) {
        let copies = u32::try_from(copies).unwrap_or(u32::MAX).max(1);
        log::info!(
            "{artifact} instance {} on {node}: {} -> {copies} copies",
            record.value.instance,
            record.value.copies
        );
        let key = AetherKey::Slice { node: node.clone(), artifact: artifact.clone() };
        let value = SliceRecord { copies, ..record.value.clone() }.encode();
        self.writes.push(KvWrite::Set { key, expected: Some(record.version), value });
    }

    fn create(&mut self, artifact: &Artifact, node: &'a NodeId, target: &TargetRecord, instance: u32) {
        let record = SliceRecord::placed(instance, target.config.clone(), self.now_ms);
        log::info!("placing {artifact} instance {instance} on {node}");
        *self.load.entry(node).or_insert(0) += 1;
        let key = AetherKey::Slice { node: node.clone(), artifact: artifact.clone() };
        self.writes.push(KvWrite::Set { key, expected: None, value: record.encode() });
    }
}
