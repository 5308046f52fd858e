//! Placement of one target: retire what is surplus or long failed, add what is missing where it spreads best,
//! then move what sits on leaving nodes (`drain`). New instances only go to live ON_DUTY nodes; records on
//! leaving nodes never count as serving, so they are never picked as surplus and their replacements are added.
//!
//! Start failures (the `quarantine` module) hold placement back: nothing is added during a backoff or a
//! quarantine, and the FAILED records of a quarantined target are not retired, so their reasons stay readable.
//!
//! A record *serves* a target while it is wanted ACTIVE and not FAILED, whatever step it is at: a record in
//! LOADING counts, so a slow load is not doubled by a second placement. The surplus to retire is chosen among
//! records that are not ACTIVE yet before ACTIVE ones (so scaling down does not stop a serving instance while
//! a starting one exists), then by highest instance number.

use super::{Pass, FAILED_RETIRE_AFTER_MS};
use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{Record, SliceRecord, TargetRecord};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, Artifact, NodeId};
use std::collections::BTreeSet;

type Placed<'a> = (&'a NodeId, &'a Versioned<SliceRecord>);

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
        let instances = usize::try_from(target.instances).unwrap_or(usize::MAX);
        if serving.len() > instances {
            self.retire_surplus(artifact, serving, instances);
        } else if serving.len() < instances
            && self.may_place(artifact, target)
            && self.dependencies_ready(artifact, target)
        {
            self.add(artifact, target, &records, instances - serving.len());
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

    fn retire_surplus(&mut self, artifact: &'a Artifact, mut serving: Vec<Placed<'a>>, instances: usize) {
        serving
            .sort_by_key(|(node, r)| (r.value.state == SliceState::Active, std::cmp::Reverse(r.value.instance), *node));
        let surplus = serving.len() - instances;
        for (node, record) in serving.into_iter().take(surplus) {
            self.retire(artifact, node, record);
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
            let active = nodes.filter(|node| self.serves(dependency, node).is_some()).count();
            active >= usize::try_from(needed).unwrap_or(usize::MAX)
        };
        let waiting = target.depends_on.iter().find(|d| !ready(d));
        if let Some(dependency) = waiting {
            log::debug!("{artifact} waits for {dependency} to have its minimum of ACTIVE instances");
        }
        waiting.is_none()
    }

    fn add(&mut self, artifact: &'a Artifact, target: &TargetRecord, records: &[Placed<'a>], missing: usize) {
        let occupied: BTreeSet<&NodeId> = records.iter().map(|(node, _)| *node).collect();
        let mut free: Vec<&'a NodeId> = self.live.iter().copied().filter(|n| !occupied.contains(n)).collect();
        free.sort_by_key(|node| (self.load.get(node).copied().unwrap_or(0), *node));
        if free.len() < missing {
            log::debug!("{artifact}: {missing} instance(s) missing, only {} node(s) free", free.len());
        }
        let mut used: BTreeSet<u32> = records.iter().map(|(_, r)| r.value.instance).collect();
        for node in free.into_iter().take(missing) {
            let instance = (0..).find(|i| !used.contains(i)).unwrap_or(u32::MAX);
            used.insert(instance);
            self.create(artifact, node, target, instance);
        }
    }

    fn create(&mut self, artifact: &Artifact, node: &'a NodeId, target: &TargetRecord, instance: u32) {
        let record = SliceRecord {
            desired: DesiredState::Active,
            state: SliceState::Load,
            since_ms: self.now_ms,
            instance,
            error: None,
            config: target.config.clone(),
            failed_in: None,
            config_refused: None,
        };
        log::info!("placing {artifact} instance {instance} on {node}");
        *self.load.entry(node).or_insert(0) += 1;
        let key = AetherKey::Slice { node: node.clone(), artifact: artifact.clone() };
        self.writes.push(KvWrite::Set { key, expected: None, value: record.encode() });
    }
}
