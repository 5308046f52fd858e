//! The cluster deployment manager: what the leader writes so the cluster runs what the blueprints ask for.
//!
//! [`reconcile`] is a pure function of the decoded KV view ([`ClusterState`]), the [`Liveness`] the leader
//! observed from the lease records (see [`liveness`]: live nodes receive instances, dead ones lose theirs,
//! suspect ones keep theirs) and the time. The leader runs it (through [`lead`], which makes every write
//! conditional on the leader record) on every change of the deployment keys, every second and when it becomes
//! leader, and submits the writes it returns. One pass:
//!
//! 1. derives the wanted targets from the blueprints (the first blueprint by name owns an artifact that two
//!    blueprints name; a scale record may set the count; a running rollout adds its new versions) and writes `targets/*` that differ, removing targets no blueprint asks for; values it
//!    cannot read under the keys it owns are replaced: an unreadable target is rewritten or removed, an
//!    unreadable slice record or route is removed (a node cleans up such a slice as an orphan);
//! 2. removes the slice records of dead nodes, each removal conditional on the dead node's lease record still
//!    being at the version judged dead (auto-heal: their instances are re-placed below); a node is dead only
//!    after its lease stayed unchanged for the grace period, so a hiccup or a partition that consensus
//!    bridges moves nothing;
//! 3. for each target in dependency order, retires surplus instances and FAILED ones that have been failed for
//!    [`FAILED_RETIRE_AFTER_MS`], and places missing ones, once every dependency has `min_instances` ACTIVE;
//! 4. retires records whose artifact no target wants (deleted blueprint, orphans), except an old version
//!    whose successor (another wanted version of its base) does not serve yet (`versions`: make before
//!    break);
//! 5. removes endpoints that no ACTIVE record backs; rewrites a route of an old version to its serving
//!    successor, and removes routes nothing serves any more;
//! 6. moves rollouts on (`rollouts`: deploy the new versions, walk stages, judge thresholds on the measured
//!    health, rewrite the blueprint on completion) and runs the scaling controller on autoscaled slices
//!    (`scale`).
//!
//! Placement: a slice record key is `slices/{node}/{artifact}`, so a node holds at most one instance of an
//! artifact and instances are always spread over distinct nodes. A target with more instances than there are
//! live nodes runs one instance on every live node, and gains the rest as nodes join. New instances go to the
//! live nodes with the fewest wanted records, ties by node id. Healthy instances are never moved: a node
//! joining only receives instances that were missing. Records on suspect nodes count as placed.
//!
//! Retiring sets a record's `desired` to UNLOADED (the node deactivates, unloads and removes it); a record
//! still in LOAD, which no node has started, is removed directly.
//!
//! Invariants: the output is a function of the inputs only (every map is ordered); every write is
//! conditional on the version the decision was made against; applying the writes of a pass and running again
//! without any node progress gives no writes; with no live node at all nothing is written (the leader is
//! itself live, so an empty list is a caller's mistake, and acting on it would remove every record); only a
//! node in `Liveness::dead` loses records for being gone.

mod drain;
#[cfg(test)]
mod drain_tests;
pub mod liveness;
mod placement;
mod quarantine;
mod rollouts;
#[cfg(test)]
mod rollouts_tests;
mod scale;
#[cfg(test)]
mod scale_tests;
mod state;
#[cfg(test)]
mod test_support;
mod versions;

pub use liveness::{lead, lead_judged, leadership, Leadership, LeaseWatch, Liveness, Tenure};
pub use quarantine::{StartFailures, StartPolicy};
pub use state::{ClusterState, EndpointId, PROBLEMS_MAX};

/// Window figures per version (`group:artifact:version`), for the rollouts' thresholds.
pub type Health = BTreeMap<Artifact, crate::rollout::Figures>;

/// What the runtime measured for the leader's pass: rollouts' window figures and autoscaled slices' load.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    pub health: Health,
    /// Load per version of slices whose blueprint turns `autoscale` on.
    pub loads: BTreeMap<Artifact, crate::scaling::SliceLoad>,
}

use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{Record, SliceRecord, TargetRecord};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, Artifact, Name, NodeId, Revision};
use std::collections::{BTreeMap, BTreeSet};

/// How long a FAILED record stays (readable, and keeping its node from retrying at once) before the leader
/// retires it. Measured from the record's `since_ms`, which the failing node wrote with its own clock: node
/// clocks are assumed to agree to well under this.
pub const FAILED_RETIRE_AFTER_MS: u64 = 10_000;

/// The targets the blueprints ask for, and the order to place them in (dependencies first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wanted {
    pub targets: BTreeMap<Artifact, TargetRecord>,
    pub order: Vec<Artifact>,
    /// Slices left out because an earlier blueprint (by name) already deploys their artifact:
    /// `(blueprint, artifact)`. The management API should refuse such a blueprint when it is submitted.
    pub conflicts: Vec<(Name, Artifact)>,
}

/// Derives the wanted targets from the blueprints, in blueprint name order.
pub fn wanted_targets(state: &ClusterState) -> Wanted {
    let mut wanted = Wanted::default();
    for (name, blueprint) in &state.blueprints {
        for artifact in &blueprint.value.blueprint.order {
            let Some(spec) = blueprint.value.blueprint.slice(artifact) else { continue };
            if let Some(owner) = wanted.targets.get(artifact) {
                log::debug!("blueprint {name}: {artifact} is already deployed by blueprint {}", owner.blueprint);
                wanted.conflicts.push((name.clone(), artifact.clone()));
                continue;
            }
            let instances = scale::instances(state, name, spec);
            let target = TargetRecord {
                blueprint: name.clone(),
                instances,
                min_instances: spec.min_instances,
                min_available: spec.min_available(),
                max_instances: spec.max_instances(),
                autoscale: spec.autoscale,
                max_per_node: spec.max_per_node(),
                retiring: false,
                depends_on: spec.depends_on.clone(),
                config: spec.config.clone(),
                failures: StartFailures::default(),
            };
            wanted.targets.insert(artifact.clone(), target);
            wanted.order.push(artifact.clone());
        }
    }
    rollouts::add_targets(&mut wanted, state);
    wanted
}

/// The writes that move the cluster towards the blueprints, with the default [`StartPolicy`].
pub fn reconcile(state: &ClusterState, liveness: &Liveness, now_ms: u64) -> Vec<KvWrite> {
    reconcile_with(state, liveness, now_ms, &StartPolicy::default())
}

/// The writes that move the cluster towards the blueprints, with no health figures for rollouts.
pub fn reconcile_with(state: &ClusterState, liveness: &Liveness, now_ms: u64, policy: &StartPolicy) -> Vec<KvWrite> {
    reconcile_judged(state, liveness, now_ms, policy, &Measured::default())
}

/// The writes that move the cluster towards the blueprints, judging shifting rollouts on the measured
/// health (each version's figures over its rollout's window) and scaling autoscaled slices by their measured
/// load. See the module documentation.
pub fn reconcile_judged(
    state: &ClusterState,
    liveness: &Liveness,
    now_ms: u64,
    policy: &StartPolicy,
    measured: &Measured,
) -> Vec<KvWrite> {
    if liveness.live.is_empty() {
        log::warn!("reconcile called with no live node; nothing done");
        return Vec::new();
    }
    let mut wanted = wanted_targets(state);
    quarantine::count(&mut wanted, state, &liveness.dead, now_ms, policy);
    let mut pass = Pass::new(state, &wanted, liveness, now_ms, measured);
    pass.sync_targets();
    pass.remove_unreadable();
    pass.remove_dead_nodes_records();
    for artifact in &wanted.order {
        if let Some(target) = wanted.targets.get(artifact) {
            pass.place(artifact, target);
        }
    }
    pass.retire_unwanted();
    pass.drain_lifecycles();
    pass.clean_endpoints();
    pass.clean_routes();
    pass.progress_rollouts();
    pass.autoscale();
    pass.writes
}

/// One reconcile pass: its inputs, the load per node as placed so far, and the writes decided so far.
struct Pass<'a> {
    state: &'a ClusterState,
    wanted: &'a Wanted,
    /// Nodes that may receive new instances: live and ON_DUTY.
    live: BTreeSet<&'a NodeId>,
    /// Nodes whose records are removed, with the lease version each removal is conditional on.
    dead: &'a BTreeMap<NodeId, Option<Revision>>,
    now_ms: u64,
    /// Wanted records (desired ACTIVE) per live node, counting those placed and retired in this pass.
    load: BTreeMap<&'a NodeId, usize>,
    /// Records this pass retires or removes, so later steps treat them as going.
    going: BTreeSet<(&'a Artifact, &'a NodeId)>,
    /// Why the drain of a leaving node waits (the first reason found), by node.
    waits: BTreeMap<&'a NodeId, String>,
    /// Rollouts' window figures and autoscaled slices' load.
    measured: &'a Measured,
    writes: Vec<KvWrite>,
}

impl<'a> Pass<'a> {
    fn new(
        state: &'a ClusterState,
        wanted: &'a Wanted,
        liveness: &'a Liveness,
        now_ms: u64,
        measured: &'a Measured,
    ) -> Self {
        let on_duty = |node: &&NodeId| state.duty(node) == crate::duty::Duty::OnDuty;
        let live: BTreeSet<&NodeId> = liveness.live.iter().filter(on_duty).collect();
        let mut load: BTreeMap<&NodeId, usize> = live.iter().map(|node| (*node, 0)).collect();
        let wanted_records = state.slices.values().flatten().filter(|(_, r)| r.value.desired == DesiredState::Active);
        for (node, _) in wanted_records {
            if let Some(count) = load.get_mut(node) {
                *count += 1;
            }
        }
        Pass {
            state,
            wanted,
            live,
            dead: &liveness.dead,
            now_ms,
            load,
            going: BTreeSet::new(),
            waits: BTreeMap::new(),
            measured,
            writes: Vec::new(),
        }
    }

    fn sync_targets(&mut self) {
        for (artifact, target) in &self.wanted.targets {
            let current = self.state.targets.get(artifact);
            if current.is_some_and(|c| c.value == *target) {
                continue;
            }
            let key = AetherKey::Target { artifact: artifact.clone() };
            let expected = current.map(|c| c.version).or_else(|| self.unreadable_version(&key));
            self.writes.push(KvWrite::Set { key, expected, value: target.encode() });
        }
        for (artifact, current) in &self.state.targets {
            if self.wanted.targets.contains_key(artifact) {
                continue;
            }
            let key = AetherKey::Target { artifact: artifact.clone() };
            // An old version kept serving keeps its target (its slice state, selection and config are read
            // from it), marked retiring so calls prefer its successor.
            if self.held_for(artifact).is_none() {
                self.writes.push(KvWrite::Remove { key, expected: current.version });
            } else if !current.value.retiring {
                let value = TargetRecord { retiring: true, ..current.value.clone() }.encode();
                self.writes.push(KvWrite::Set { key, expected: Some(current.version), value });
            }
        }
    }

    fn unreadable_version(&self, key: &AetherKey) -> Option<kvstore::Revision> {
        self.state.unreadable.get(&key.to_string()).map(|(_, version)| *version)
    }

    fn remove_unreadable(&mut self) {
        for (key, version) in self.state.unreadable.values() {
            let rewritten = matches!(key, AetherKey::Target { artifact } if self.wanted.targets.contains_key(artifact));
            if !rewritten {
                self.writes.push(KvWrite::Remove { key: key.clone(), expected: *version });
            }
        }
    }

    /// True unless `node` is judged dead: records of live and of suspect nodes stay and count.
    fn counts(&self, node: &NodeId) -> bool {
        !self.dead.contains_key(node)
    }

    fn remove_dead_nodes_records(&mut self) {
        for (artifact, by_node) in &self.state.slices {
            for (node, record) in by_node {
                let Some(lease_version) = self.dead.get(node) else { continue };
                log::info!("node {node} is gone (lease unchanged for the grace period); dropping its {artifact}");
                self.going.insert((artifact, node));
                let quarantined = self.wanted.targets.get(artifact).is_some_and(|t| t.failures.quarantined);
                let write = quarantine::dead_node_write(artifact, node, record, quarantined);
                let lease = AetherKey::NodeLease { node: node.clone() };
                self.writes.extend(write.map(|write| write.guarded(lease.clone(), *lease_version)));
            }
        }
    }

    fn retire_unwanted(&mut self) {
        let state = self.state;
        for (artifact, by_node) in state.slices.iter().filter(|(a, _)| !self.wanted.targets.contains_key(*a)) {
            if self.held_for(artifact).is_some() {
                continue;
            }
            for (node, record) in by_node {
                if self.counts(node) && record.value.desired != DesiredState::Unloaded {
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
        (serving && self.counts(node) && !self.going.contains(&(artifact, node))).then_some(record)
    }

    fn clean_endpoints(&mut self) {
        let stale: Vec<KvWrite> = (self.state.endpoints.iter())
            .filter(|(id, _)| self.serves(&id.artifact, &id.node).is_none_or(|r| r.instance != id.instance))
            .map(|(id, version)| KvWrite::Remove { key: id.key(), expected: *version })
            .collect();
        self.writes.extend(stale);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blueprint;
    use crate::records::{BlueprintRecord, RouteRecord};
    use kvstore::{Command, KvState, Revision};
    use serde_json::Map;

    fn n(i: usize) -> NodeId {
        NodeId::parse(&format!("n{i}")).unwrap()
    }

    fn art(s: &str) -> Artifact {
        Artifact::parse(s).unwrap()
    }

    fn put(kv: &mut KvState, key: &str, value: Vec<u8>) {
        kv.apply_command(Command::Put { key: key.parse().unwrap(), value }, &mut |_| {});
    }

    fn blueprint(kv: &mut KvState, name: &str, artifact: &str, instances: u32) {
        let toml = format!("name = \"{name}\"\n[[slices]]\nartifact = \"{artifact}\"\ninstances = {instances}\n");
        let parsed = blueprint::parse(&toml, &|_| true).unwrap();
        put(kv, &format!("blueprints/{name}"), BlueprintRecord { toml, blueprint: parsed }.encode());
    }

    fn record(kv: &mut KvState, node: usize, artifact: &str, state: SliceState, instance: u32) {
        let record = SliceRecord { state, ..SliceRecord::placed(instance, Map::new(), 0) };
        put(kv, &format!("slices/n{node}/{artifact}"), record.encode());
    }

    fn version(kv: &KvState, key: &str) -> Revision {
        kv.get(&key.parse().unwrap()).unwrap().version()
    }

    fn run(kv: &KvState, live: &[usize], now_ms: u64) -> Vec<KvWrite> {
        let liveness = Liveness::all_live(live.iter().map(|i| n(*i)));
        reconcile(&ClusterState::from_entries(kv.list("")), &liveness, now_ms)
    }

    fn described(writes: &[KvWrite]) -> Vec<String> {
        writes
            .iter()
            .map(|w| match w {
                KvWrite::Set { key, expected: None, value } => {
                    let state = SliceRecord::decode(value).map(|r| format!(" {} {}", r.state, r.instance));
                    format!("create {key}{}", state.unwrap_or_default())
                }
                KvWrite::Set { key, value, .. } => {
                    let desired = SliceRecord::decode(value).map(|r| format!(" desired {}", r.desired));
                    format!("set {key}{}", desired.unwrap_or_default())
                }
                KvWrite::Remove { key, .. } => format!("remove {key}"),
                KvWrite::Guarded { write, .. } => described(&[(**write).clone()]).concat(),
            })
            .collect()
    }

    #[test]
    fn a_new_blueprint_gets_a_target_and_load_records() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 2);
        assert_eq!(
            described(&run(&kv, &[1, 2, 3], 0)),
            ["create targets/g:a:1.0.0", "create slices/n1/g:a:1.0.0 LOAD 0", "create slices/n2/g:a:1.0.0 LOAD 1"]
        );
    }

    #[test]
    fn new_instances_go_to_the_least_loaded_nodes() {
        let mut kv = KvState::new();
        record(&mut kv, 1, "g:x:1.0.0", SliceState::Active, 0);
        record(&mut kv, 2, "g:y:1.0.0", SliceState::Active, 0);
        blueprint(&mut kv, "s", "g:a:1.0.0", 1);
        let writes = described(&run(&kv, &[1, 2, 3], 0));
        assert!(writes.contains(&"create slices/n3/g:a:1.0.0 LOAD 0".to_owned()), "{writes:?}");
    }

    #[test]
    fn a_dead_nodes_record_is_removed_at_its_version_and_replaced() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 1);
        put(&mut kv, "targets/g:a:1.0.0", b"{}".to_vec());
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Active, 0);
        put(&mut kv, "nodes/n1/lease", b"{\"counter\":7}".to_vec());
        let mut liveness = Liveness::all_live([n(2)]);
        liveness.dead.insert(n(1), Some(version(&kv, "nodes/n1/lease")));
        let writes = reconcile(&ClusterState::from_entries(kv.list("")), &liveness, 0);
        let removal = KvWrite::Remove {
            key: "slices/n1/g:a:1.0.0".parse().unwrap(),
            expected: version(&kv, "slices/n1/g:a:1.0.0"),
        }
        .guarded("nodes/n1/lease".parse().unwrap(), Some(version(&kv, "nodes/n1/lease")));
        assert!(writes.contains(&removal), "{writes:#?}");
        assert!(described(&writes).contains(&"create slices/n2/g:a:1.0.0 LOAD 0".to_owned()));
        // The stale target is rewritten at its version.
        let target_version = version(&kv, "targets/g:a:1.0.0");
        assert!(matches!(&writes[0], KvWrite::Set { expected: Some(v), .. } if *v == target_version));
    }

    #[test]
    fn a_node_missing_from_the_live_set_but_not_dead_keeps_its_records() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 2);
        put(&mut kv, "targets/g:a:1.0.0", b"{}".to_vec());
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Active, 0);
        record(&mut kv, 2, "g:a:1.0.0", SliceState::Active, 1);
        // n1 is suspect (neither live nor dead): its record stays, counts as placed, and nothing moves to n3.
        let writes = described(&run(&kv, &[2, 3], 0));
        assert_eq!(writes, ["set targets/g:a:1.0.0"], "{writes:?}");
    }

    #[test]
    fn retiring_removes_unstarted_records_and_marks_started_ones() {
        let mut kv = KvState::new();
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Load, 0);
        record(&mut kv, 2, "g:a:1.0.0", SliceState::Active, 1);
        assert_eq!(
            described(&run(&kv, &[1, 2], 0)),
            ["remove slices/n1/g:a:1.0.0", "set slices/n2/g:a:1.0.0 desired UNLOADED"]
        );
    }

    #[test]
    fn scaling_down_retires_starting_instances_first() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 1);
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Activating, 0);
        record(&mut kv, 2, "g:a:1.0.0", SliceState::Active, 1);
        let writes = described(&run(&kv, &[1, 2], 0));
        assert_eq!(writes[1..], ["set slices/n1/g:a:1.0.0 desired UNLOADED"]);
    }

    #[test]
    fn a_failed_record_is_replaced_at_once_and_retired_later() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 1);
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Failed, 0);
        let early = described(&run(&kv, &[1, 2], FAILED_RETIRE_AFTER_MS - 1));
        assert_eq!(early[1..], ["create slices/n2/g:a:1.0.0 LOAD 1"]);
        let late = described(&run(&kv, &[1, 2], FAILED_RETIRE_AFTER_MS));
        assert_eq!(late[1..], ["set slices/n1/g:a:1.0.0 desired UNLOADED", "create slices/n2/g:a:1.0.0 LOAD 1"]);
    }

    #[test]
    fn stale_endpoints_and_routes_are_removed() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 1);
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Active, 0);
        put(&mut kv, "endpoints/g:a:1.0.0/get/n1:0", b"{}".to_vec());
        put(&mut kv, "endpoints/g:a:1.0.0/get/n1:9", b"{}".to_vec());
        put(&mut kv, "endpoints/g:a:1.0.0/get/n2:0", b"{}".to_vec());
        let route = |artifact: &str| RouteRecord { artifact: art(artifact), method: Name::parse("get").unwrap() };
        put(&mut kv, "routes/GET/a", route("g:a:1.0.0").encode());
        put(&mut kv, "routes/GET/gone", route("g:gone:1.0.0").encode());
        let writes = described(&run(&kv, &[1, 2], 0));
        assert_eq!(
            writes[1..],
            ["remove endpoints/g:a:1.0.0/get/n1:9", "remove endpoints/g:a:1.0.0/get/n2:0", "remove routes/GET/gone"]
        );
    }

    #[test]
    fn instance_numbers_fill_gaps() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 3);
        record(&mut kv, 1, "g:a:1.0.0", SliceState::Active, 1);
        let writes = described(&run(&kv, &[1, 2, 3], 0));
        assert_eq!(writes[1..], ["create slices/n2/g:a:1.0.0 LOAD 0", "create slices/n3/g:a:1.0.0 LOAD 2"]);
    }

    #[test]
    fn undecodable_values_do_not_stop_the_rest() {
        let mut kv = KvState::new();
        blueprint(&mut kv, "s", "g:a:1.0.0", 1);
        put(&mut kv, "blueprints/broken", b"{".to_vec());
        put(&mut kv, "slices/n1/g:a:1.0.0", b"{".to_vec());
        let state = ClusterState::from_entries(kv.list(""));
        assert_eq!(state.problems.len(), 2);
        let writes = reconcile(&state, &Liveness::all_live([n(1)]), 0);
        assert_eq!(
            described(&writes),
            ["create targets/g:a:1.0.0", "remove slices/n1/g:a:1.0.0", "create slices/n1/g:a:1.0.0 LOAD 0"]
        );
        for write in writes {
            assert!(matches!(kv.apply_command(write.to_command(), &mut |_| {}), kvstore::ApplyResult::Ok { .. }));
        }
    }
}
