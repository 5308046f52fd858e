//! `POST /api/blueprints/validate`: the dry run of `POST /api/blueprints`.
//!
//! The blueprint goes through exactly the checks a post makes (`deploy::check`: text, artifacts, ownership),
//! then the leader's own placement (`control::cluster::reconcile`) runs on a private copy of the cluster's
//! deployment keys with the blueprint added, as if it had been stored: rounds of the leader's writes, each
//! followed by every placed instance starting (the nodes' part), until nothing changes. What the copy then
//! holds is the answer: which nodes would run each slice of the blueprint.
//!
//! Invariants: nothing is written to the cluster (the copy is a local `KvState` dropped at the end); the
//! simulation is bounded by [`ROUNDS_MAX`]; nodes this node cannot reach count as down, as the leader would
//! judge them once their leases expire, and the answer says so in `warnings`; at most [`DRY_RUNS_MAX`]
//! dry runs run at once on a node (a further one is a 503 before any work): a blueprint of 256 slices in
//! a dependency chain costs most of a second of CPU on two nodes (more on bigger clusters), and any viewer
//! may ask for one, so dry runs must not take every management worker and core.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::Response;
use control::cluster::{reconcile, ClusterState, Liveness};
use control::lifecycle::{DesiredState, SliceState};
use control::records::{BlueprintRecord, Record, SliceRecord};
use control::write::Versioned;
use kvstore::{AetherKey, Artifact, Command, KvState, NodeId, Revision};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Most rounds of leader writes and node starts simulated; a dependency chain needs one round per level,
/// and a blueprint has at most `control::blueprint::SLICES_MAX` slices.
pub const ROUNDS_MAX: usize = control::blueprint::SLICES_MAX + 8;

/// Dry runs one node computes at once.
pub const DRY_RUNS_MAX: usize = 1;

/// The dry runs running on a node (the node's backend holds one, see `Backend::dry_runs`).
#[derive(Debug, Default)]
pub struct DryRuns(AtomicUsize);

/// A slot among a node's [`DRY_RUNS_MAX`] dry runs, given back when dropped.
pub struct DryRunSlot<'a>(&'a DryRuns);

impl DryRuns {
    /// A slot, or a 503 when [`DRY_RUNS_MAX`] dry runs are running.
    pub fn take(&self) -> Result<DryRunSlot<'_>, ApiError> {
        let taken = self.0.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < DRY_RUNS_MAX).then_some(n + 1));
        taken.map(|_| DryRunSlot(self)).map_err(|_| {
            ApiError::unavailable(format!(
                "{DRY_RUNS_MAX} blueprint dry run(s) already running on this node, the most it runs at once; \
                 try again in a moment"
            ))
        })
    }
}

impl Drop for DryRunSlot<'_> {
    fn drop(&mut self) {
        self.0 .0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The namespaces placement reads.
const PLACEMENT_PREFIXES: [&str; 3] = ["blueprints/", "targets/", "slices/"];

pub fn validate(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let _slot = backend.dry_runs().map(DryRuns::take).transpose()?;
    let crate::deploy::Checked { text: toml, blueprint, warnings: checked } = crate::deploy::check(backend, body)?;
    let view = backend.cluster_view()?;
    let mut entries = Vec::new();
    for prefix in PLACEMENT_PREFIXES {
        entries.extend(backend.kv_list(prefix, true)?);
    }
    let mut warnings = checked;
    let blueprint_key = AetherKey::Blueprint { name: blueprint.name.clone() }.to_string();
    if let Some(old) = entries.iter().find(|e| e.key == blueprint_key) {
        warnings.push(format!("replaces the stored blueprint '{}' (version {})", blueprint.name, old.version));
    }
    let mut live = BTreeSet::new();
    let mut down = BTreeSet::new();
    for node in &view.nodes {
        let Ok(id) = NodeId::parse(&node.id) else { continue };
        if node.is_self || node.connected {
            live.insert(id);
        } else {
            warnings.push(format!("{} is not reachable from this node; counted as down", node.id));
            down.insert(id);
        }
    }
    let order = blueprint.order.clone();
    let name = blueprint.name.to_string();
    let record = BlueprintRecord { toml, blueprint };
    let placed = dry_run(&entries, &record, live, down, now_ms());
    let mut placement = Vec::new();
    for artifact in &order {
        let Some(spec) = record.blueprint.slice(artifact) else { continue };
        let on_nodes = placed.get(artifact).map(Vec::as_slice).unwrap_or_default();
        let nodes: Vec<String> = on_nodes.iter().map(|(node, _)| node.to_string()).collect();
        let copies: serde_json::Map<String, serde_json::Value> =
            on_nodes.iter().map(|(node, n)| (node.to_string(), json!(n))).collect();
        let total: u64 = on_nodes.iter().map(|(_, n)| u64::from(*n)).sum();
        if total < u64::from(spec.instances) {
            let per_node = match spec.max_per_node() {
                1 => "one per live node".to_owned(),
                n => format!("{n} per live node"),
            };
            warnings.push(format!(
                "{artifact}: {} instance(s) wanted, {total} would be placed ({per_node} at most, after its \
                 dependencies are ACTIVE)",
                spec.instances,
            ));
        }
        placement.push(json!({
            "artifact": artifact.to_string(),
            "instances": spec.instances,
            "nodes": nodes,
            "copies": copies,
        }));
    }
    let slices: Vec<String> = order.iter().map(ToString::to_string).collect();
    Ok(Response::ok(json!({
        "valid": true,
        "name": name,
        "slices": slices,
        "placement": placement,
        "warnings": warnings,
    })))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The nodes that would run each artifact once `record` is stored and the cluster has settled.
fn dry_run(
    entries: &[crate::KvEntry],
    record: &BlueprintRecord,
    live: BTreeSet<NodeId>,
    down: BTreeSet<NodeId>,
    now_ms: u64,
) -> BTreeMap<Artifact, Vec<(NodeId, u32)>> {
    // Blueprints never change during the run: decoded once (a decode parses the TOML again) and kept out of
    // the copy, which holds the keys the run writes (targets and slice records).
    let mut blueprints = ClusterState::default();
    let mut kv = KvState::new();
    for entry in entries {
        let Ok(key) = entry.key.parse::<AetherKey>() else { continue };
        match key {
            AetherKey::Blueprint { ref name } if *name == record.blueprint.name => {}
            AetherKey::Blueprint { .. } => blueprints.insert(&key, &entry.value, Revision(entry.version)),
            _ => {
                kv.apply_command(Command::Put { key, value: entry.value.clone() }, &mut |_| {});
            }
        }
    }
    let own = Versioned { value: record.clone(), version: Revision(u64::MAX) };
    blueprints.blueprints.insert(record.blueprint.name.clone(), own);
    if live.is_empty() {
        return BTreeMap::new();
    }
    // Down nodes are judged dead with no lease record: the copy holds none, so the leader's guarded
    // removals of their records apply.
    let liveness = Liveness { live, dead: down.into_iter().map(|node| (node, None)).collect() };
    for _ in 0..ROUNDS_MAX {
        let mut state = ClusterState::from_entries(kv.list(""));
        state.blueprints.clone_from(&blueprints.blueprints);
        let mut changed = false;
        for write in reconcile(&state, &liveness, now_ms) {
            changed |= applied(kv.apply_command(write.to_command(), &mut |_| {}));
        }
        changed |= start_everything(&mut kv, now_ms);
        if !changed {
            break;
        }
    }
    let state = ClusterState::from_entries(kv.list(""));
    state
        .slices
        .iter()
        .map(|(artifact, by_node)| {
            let placed = by_node.iter().filter(|(_, r)| wanted(&r.value));
            (artifact.clone(), placed.map(|(node, r)| (node.clone(), r.value.copies.max(1))).collect())
        })
        .collect()
}

fn wanted(record: &SliceRecord) -> bool {
    record.desired == DesiredState::Active && record.state != SliceState::Failed
}

fn applied(result: kvstore::ApplyResult) -> bool {
    matches!(result, kvstore::ApplyResult::Ok { .. })
}

/// The nodes' part of a round: every record wanted ACTIVE becomes ACTIVE with all its copies running, every
/// retired one goes.
fn start_everything(kv: &mut KvState, now_ms: u64) -> bool {
    let mut commands = Vec::new();
    for entry in kv.list("slices/") {
        let Ok(record) = SliceRecord::decode(entry.value()) else { continue };
        let key = entry.key().clone();
        match record.desired {
            DesiredState::Active if record.state != SliceState::Active && record.state != SliceState::Failed => {
                let value = SliceRecord { running: Some(record.copies), ..record.entering(SliceState::Active, now_ms) };
                commands.push(Command::Put { key, value: value.encode() });
            }
            DesiredState::Active if record.state == SliceState::Active && record.running != Some(record.copies) => {
                let value = SliceRecord { running: Some(record.copies), ..record };
                commands.push(Command::Put { key, value: value.encode() });
            }
            DesiredState::Unloaded => commands.push(Command::Remove { key }),
            _ => {}
        }
    }
    let mut changed = false;
    for command in commands {
        changed |= applied(kv.apply_command(command, &mut |_| {}));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KvEntry;

    fn nodes(ids: &[&str]) -> BTreeSet<NodeId> {
        ids.iter().map(|id| NodeId::parse(id).unwrap()).collect()
    }

    fn record(toml: &str) -> BlueprintRecord {
        BlueprintRecord { toml: toml.into(), blueprint: control::blueprint::parse(toml, &|_| true).unwrap() }
    }

    const SHOP: &str = "name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 2\n\
        [[slices]]\nartifact = \"g:b:1.0.0\"\ninstances = 5\ndepends_on = [\"g:a:1.0.0\"]\n";

    #[test]
    fn dependents_are_placed_after_their_dependencies_and_never_twice_on_a_node() {
        let placed = dry_run(&[], &record(SHOP), nodes(&["n1", "n2", "n3"]), BTreeSet::new(), 1_000);
        let a = Artifact::parse("g:a:1.0.0").unwrap();
        let b = Artifact::parse("g:b:1.0.0").unwrap();
        assert_eq!(placed[&a], on(&["n1", "n2"], 1));
        assert_eq!(placed[&b].len(), 3, "one per live node: {placed:?}");
    }

    fn on(ids: &[&str], copies: u32) -> Vec<(NodeId, u32)> {
        nodes(ids).into_iter().map(|n| (n, copies)).collect()
    }

    #[test]
    fn max_per_node_is_placed_as_copies() {
        let two = "name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 6\nmax_per_node = 2\n";
        let placed = dry_run(&[], &record(two), nodes(&["n1", "n2", "n3"]), BTreeSet::new(), 1_000);
        assert_eq!(placed[&Artifact::parse("g:a:1.0.0").unwrap()], on(&["n1", "n2", "n3"], 2));
    }

    #[test]
    fn existing_instances_stay_and_down_nodes_lose_theirs() {
        let slice = |state: &str| {
            format!(r#"{{"desired":"ACTIVE","state":"{state}","since_ms":1,"instance":0,"error":null,"config":{{}}}}"#)
        };
        let entries = vec![
            KvEntry { key: "slices/n3/g:a:1.0.0".into(), value: slice("ACTIVE").into_bytes(), version: 4 },
            KvEntry { key: "slices/n9/g:a:1.0.0".into(), value: slice("ACTIVE").into_bytes(), version: 5 },
        ];
        let one = "name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 2\n";
        let placed = dry_run(&entries, &record(one), nodes(&["n1", "n2", "n3"]), nodes(&["n9"]), 1_000);
        let a = Artifact::parse("g:a:1.0.0").unwrap();
        assert_eq!(placed[&a], on(&["n1", "n3"], 1), "n3 keeps its instance");
    }

    #[test]
    fn dry_runs_past_the_limit_are_refused_until_one_ends() {
        let runs = DryRuns::default();
        let held: Vec<DryRunSlot<'_>> = (0..DRY_RUNS_MAX).map(|_| runs.take().unwrap()).collect();
        assert_eq!(runs.take().err().map(|e| e.status), Some(503));
        drop(held);
        assert!(runs.take().is_ok());
    }

    #[test]
    fn no_live_node_places_nothing() {
        assert!(dry_run(&[], &record(SHOP), BTreeSet::new(), BTreeSet::new(), 1).is_empty());
    }
}
