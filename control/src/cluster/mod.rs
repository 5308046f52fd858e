//! The cluster deployment manager: what the leader writes so the cluster runs what the blueprints ask for.
//!
//! [`reconcile`] is a pure function of the decoded KV view ([`ClusterState`]), the live nodes and the time.
//! The leader runs it on every change of the deployment keys, on membership changes and when it becomes
//! leader, and submits the writes it returns. One pass:
//!
//! 1. derives the wanted targets from the blueprints (the first blueprint by name owns an artifact that two
//!    blueprints name) and writes `targets/*` that differ, removing targets no blueprint asks for;
//! 2. removes the slice records of nodes that are not live (auto-heal: their instances are re-placed below);
//! 3. for each target in dependency order, retires surplus instances and FAILED ones that have been failed for
//!    [`FAILED_RETIRE_AFTER_MS`], and places missing ones, once every dependency has `min_instances` ACTIVE;
//! 4. retires records whose artifact no target wants (deleted blueprint, orphans);
//! 5. removes endpoints that no ACTIVE record backs and routes of artifacts no target wants.
//!
//! Placement: a slice record key is `slices/{node}/{artifact}`, so a node holds at most one instance of an
//! artifact and instances are always spread over distinct nodes. A target with more instances than there are
//! live nodes runs one instance on every live node, and gains the rest as nodes join. New instances go to the
//! live nodes with the fewest wanted records, ties by node id. Healthy instances are never moved: a node
//! joining only receives instances that were missing.
//!
//! Retiring sets a record's `desired` to UNLOADED (the node deactivates, unloads and removes it); a record
//! still in LOAD, which no node has started, is removed directly.
//!
//! Invariants: the output is a function of the inputs only (every map is ordered); every write is
//! conditional on the version the decision was made against; applying the writes of a pass and running again
//! without any node progress gives no writes; with no live node at all nothing is written (the leader is
//! itself live, so an empty list is a caller's mistake, and acting on it would remove every record).

mod placement;
mod state;

pub use state::{ClusterState, EndpointId, PROBLEMS_MAX};

use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{Record, SliceRecord, TargetRecord};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, Artifact, NodeId};
use std::collections::{BTreeMap, BTreeSet};

/// How long a FAILED record stays (readable, and keeping its node from retrying at once) before the leader
/// retires it.
pub const FAILED_RETIRE_AFTER_MS: u64 = 10_000;

/// The targets the blueprints ask for, and the order to place them in (dependencies first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub targets: BTreeMap<Artifact, TargetRecord>,
    pub order: Vec<Artifact>,
}

/// Derives the wanted targets from the blueprints, in blueprint name order.
pub fn wanted_targets(state: &ClusterState) -> Wanted {
    let mut wanted = Wanted::default();
    for (name, blueprint) in &state.blueprints {
        for artifact in &blueprint.value.blueprint.order {
            let Some(spec) = blueprint.value.blueprint.slice(artifact) else { continue };
            if let Some(owner) = wanted.targets.get(artifact) {
                log::warn!(
                    "blueprint {name}: {artifact} is already deployed by blueprint {}; ignored",
                    owner.blueprint
                );
                continue;
            }
            let target = TargetRecord {
                blueprint: name.clone(),
                instances: spec.instances,
                min_instances: spec.min_instances,
                depends_on: spec.depends_on.clone(),
                config: spec.config.clone(),
            };
            wanted.targets.insert(artifact.clone(), target);
            wanted.order.push(artifact.clone());
        }
    }
    wanted
}

/// The writes that move the cluster towards the blueprints. See the module documentation.
pub fn reconcile(state: &ClusterState, live_nodes: &[NodeId], now_ms: u64) -> Vec<KvWrite> {
    if live_nodes.is_empty() {
        log::warn!("reconcile called with no live node; nothing done");
        return Vec::new();
    }
    let wanted = wanted_targets(state);
    let mut pass = Pass::new(state, &wanted, live_nodes, now_ms);
    pass.sync_targets();
    pass.remove_dead_nodes_records();
    for artifact in &wanted.order {
        if let Some(target) = wanted.targets.get(artifact) {
            pass.place(artifact, target);
        }
    }
    pass.retire_unwanted();
    pass.clean_endpoints();
    pass.clean_routes();
    pass.writes
}

/// One reconcile pass: its inputs, the load per node as placed so far, and the writes decided so far.
struct Pass<'a> {
    state: &'a ClusterState,
    wanted: &'a Wanted,
    live: BTreeSet<&'a NodeId>,
    now_ms: u64,
    /// Wanted records (desired ACTIVE) per live node, counting those placed and retired in this pass.
    load: BTreeMap<&'a NodeId, usize>,
    /// Records this pass retires or removes, so later steps treat them as going.
    going: BTreeSet<(&'a Artifact, &'a NodeId)>,
    writes: Vec<KvWrite>,
}

impl<'a> Pass<'a> {
    fn new(state: &'a ClusterState, wanted: &'a Wanted, live_nodes: &'a [NodeId], now_ms: u64) -> Self {
        let live: BTreeSet<&NodeId> = live_nodes.iter().collect();
        let mut load: BTreeMap<&NodeId, usize> = live.iter().map(|node| (*node, 0)).collect();
        let wanted_records = state.slices.values().flatten().filter(|(_, r)| r.value.desired == DesiredState::Active);
        for (node, _) in wanted_records {
            if let Some(count) = load.get_mut(node) {
                *count += 1;
            }
        }
        Pass { state, wanted, live, now_ms, load, going: BTreeSet::new(), writes: Vec::new() }
    }

    fn sync_targets(&mut self) {
        for (artifact, target) in &self.wanted.targets {
            let current = self.state.targets.get(artifact);
            if current.is_some_and(|c| c.value == *target) {
                continue;
            }
            let key = AetherKey::Target { artifact: artifact.clone() };
            self.writes.push(KvWrite::Set { key, expected: current.map(|c| c.version), value: target.encode() });
        }
        for (artifact, current) in &self.state.targets {
            if !self.wanted.targets.contains_key(artifact) {
                let key = AetherKey::Target { artifact: artifact.clone() };
                self.writes.push(KvWrite::Remove { key, expected: current.version });
            }
        }
    }

    fn remove_dead_nodes_records(&mut self) {
        for (artifact, by_node) in &self.state.slices {
            for (node, record) in by_node.iter().filter(|(node, _)| !self.live.contains(node)) {
                log::info!("node {node} is gone; dropping its record of {artifact}");
                self.going.insert((artifact, node));
                let key = AetherKey::Slice { node: node.clone(), artifact: artifact.clone() };
                self.writes.push(KvWrite::Remove { key, expected: record.version });
            }
        }
    }

    fn retire_unwanted(&mut self) {
        let state = self.state;
        for (artifact, by_node) in state.slices.iter().filter(|(a, _)| !self.wanted.targets.contains_key(*a)) {
            for (node, record) in by_node {
                if self.live.contains(node) && record.value.desired != DesiredState::Unloaded {
                    self.retire(artifact, node, record);
                }
            }
        }
    }

    /// Asks for one record to go: removed if no node has started it, else `desired` UNLOADED.
    fn retire(&mut self, artifact: &'a Artifact, node: &'a NodeId, record: &Versioned<SliceRecord>) {
        let key = AetherKey::Slice { node: node.clone(), artifact: artifact.clone() };
        let write = match record.value.state {
            SliceState::Load => KvWrite::Remove { key, expected: record.version },
            _ => {
                let value = SliceRecord { desired: DesiredState::Unloaded, ..record.value.clone() }.encode();
                KvWrite::Set { key, expected: Some(record.version), value }
            }
        };
        if record.value.desired == DesiredState::Active {
            if let Some(count) = self.load.get_mut(node) {
                *count = count.saturating_sub(1);
            }
        }
        self.going.insert((artifact, node));
        self.writes.push(write);
    }

    /// True when the record of `artifact` on `node` is ACTIVE, wanted ACTIVE, and stays after this pass.
    fn serves(&self, artifact: &Artifact, node: &NodeId) -> Option<&'a SliceRecord> {
        let record = &self.state.slice(artifact, node)?.value;
        let serving = record.state == SliceState::Active && record.desired == DesiredState::Active;
        (serving && self.live.contains(node) && !self.going.contains(&(artifact, node))).then_some(record)
    }

    fn clean_endpoints(&mut self) {
        let stale: Vec<KvWrite> = (self.state.endpoints.iter())
            .filter(|(id, _)| self.serves(&id.artifact, &id.node).is_none_or(|r| r.instance != id.instance))
            .map(|(id, version)| KvWrite::Remove { key: id.key(), expected: *version })
            .collect();
        self.writes.extend(stale);
    }

    fn clean_routes(&mut self) {
        for ((method, path), route) in &self.state.routes {
            if !self.wanted.targets.contains_key(&route.value.artifact) {
                let key = AetherKey::Route { method: *method, path: path.clone() };
                self.writes.push(KvWrite::Remove { key, expected: route.version });
            }
        }
    }
}
