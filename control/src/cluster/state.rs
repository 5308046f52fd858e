//! [`ClusterState`]: the leader's decoded view of the deployment keys and of the liveness records
//! (`nodes/{node}/lease`, `nodes/leader`), built from a KV listing.
//!
//! Building never fails: an entry whose value does not decode (or whose blueprint name differs from its key)
//! is left out of the view and described in [`ClusterState::problems`], bounded by [`PROBLEMS_MAX`], so one
//! bad value cannot stop the deployment of everything else. Unreadable targets, slice records and routes are
//! also listed with their versions in [`ClusterState::unreadable`], so the leader can replace them (it owns
//! those keys); an unreadable blueprint is the operator's to fix and is only reported. Keys of other
//! namespaces are ignored, so the runtime may pass a whole listing.

use crate::duty::DutyRecord;
use crate::records::{BlueprintRecord, LeaderRecord, LeaseRecord, Record, RouteRecord, SliceRecord, TargetRecord};
use crate::rollout::RolloutRecord;
use crate::scaling::{ScaleRecord, ScalingConfig};
use crate::write::Versioned;
use kvstore::{AetherKey, Artifact, ArtifactBase, Entry, HttpMethod, Name, NodeId, Revision, RoutePath};
use std::collections::BTreeMap;

/// Most problems kept in one view; more are counted in [`ClusterState::problems_dropped`].
pub const PROBLEMS_MAX: usize = 64;

/// One `endpoints/{artifact}/{method}/{node}:{instance}` key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointId {
    pub artifact: Artifact,
    pub method: Name,
    pub node: NodeId,
    pub instance: u32,
}

impl EndpointId {
    pub fn key(&self) -> AetherKey {
        AetherKey::Endpoint {
            artifact: self.artifact.clone(),
            method: self.method.clone(),
            node: self.node.clone(),
            instance: self.instance,
        }
    }
}

/// Blueprints, targets, slice records, endpoints and routes, each with its KV version.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterState {
    pub blueprints: BTreeMap<Name, Versioned<BlueprintRecord>>,
    pub targets: BTreeMap<Artifact, Versioned<TargetRecord>>,
    /// Slice records by artifact, then node.
    pub slices: BTreeMap<Artifact, BTreeMap<NodeId, Versioned<SliceRecord>>>,
    /// Endpoint keys with their versions (the value repeats what the key says).
    pub endpoints: BTreeMap<EndpointId, Revision>,
    pub routes: BTreeMap<(HttpMethod, RoutePath), Versioned<RouteRecord>>,
    /// Rollouts (`updates/{id}`) by id.
    pub rollouts: BTreeMap<Name, Versioned<RolloutRecord>>,
    /// Instance counts set by scaling (`scaling/{artifact-base}`), by base.
    pub scales: BTreeMap<ArtifactBase, Versioned<ScaleRecord>>,
    /// The scaling controller's thresholds (`thresholds/scaling`); `None` when absent or unreadable.
    pub scaling_config: Option<ScalingConfig>,
    /// Lease records by node. An unreadable lease still counts by its version (it is only ever compared).
    pub leases: BTreeMap<NodeId, Versioned<LeaseRecord>>,
    /// Node lifecycle records by node (`nodes/{node}/lifecycle`); `Err` holds the version of an unreadable one.
    pub duties: BTreeMap<NodeId, Result<Versioned<DutyRecord>, Revision>>,
    /// The leader record; `Err` holds the version of an unreadable one.
    pub leader: Option<Result<Versioned<LeaderRecord>, Revision>>,
    /// Targets, slice records and routes whose values do not decode, by canonical key, with their versions.
    pub unreadable: BTreeMap<String, (AetherKey, Revision)>,
    /// Entries left out of the view, and why.
    pub problems: Vec<String>,
    pub problems_dropped: usize,
}

impl ClusterState {
    /// The view of a KV listing (for example `blueprints/`, `targets/`, `slices/`, `endpoints/`, `routes/`).
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut state = ClusterState::default();
        for entry in entries {
            state.insert(entry.key(), entry.value(), entry.version());
        }
        state
    }

    /// Adds one entry to the view; entries outside the deployment namespaces are ignored.
    pub fn insert(&mut self, key: &AetherKey, value: &[u8], version: Revision) {
        if let Err(problem) = self.try_insert(key, value, version) {
            self.note(format!("{key}: {problem}"));
            let owned = matches!(
                key,
                AetherKey::Target { .. } | AetherKey::Slice { .. } | AetherKey::Route { .. } | AetherKey::Scale { .. }
            );
            if owned {
                self.unreadable.insert(key.to_string(), (key.clone(), version));
            }
        }
    }

    fn try_insert(&mut self, key: &AetherKey, value: &[u8], version: Revision) -> Result<(), String> {
        match key {
            AetherKey::Blueprint { name } => {
                let record = decode::<BlueprintRecord>(value)?;
                if record.blueprint.name != *name {
                    return Err(format!("holds blueprint {:?}", record.blueprint.name.as_str()));
                }
                self.blueprints.insert(name.clone(), Versioned { value: record, version });
            }
            AetherKey::Target { artifact } => {
                self.targets.insert(artifact.clone(), Versioned { value: decode(value)?, version });
            }
            AetherKey::Slice { node, artifact } => {
                let versioned = Versioned { value: decode::<SliceRecord>(value)?, version };
                self.slices.entry(artifact.clone()).or_default().insert(node.clone(), versioned);
            }
            AetherKey::Endpoint { artifact, method, node, instance } => {
                let id = EndpointId {
                    artifact: artifact.clone(),
                    method: method.clone(),
                    node: node.clone(),
                    instance: *instance,
                };
                self.endpoints.insert(id, version);
            }
            AetherKey::Route { method, path } => {
                self.routes.insert((*method, path.clone()), Versioned { value: decode(value)?, version });
            }
            AetherKey::Scale { base } => {
                self.scales.insert(base.clone(), Versioned { value: decode(value)?, version });
            }
            AetherKey::Threshold { metric } if metric.as_str() == "scaling" => {
                self.scaling_config = Some(decode(value)?);
            }
            AetherKey::Update { id } => {
                self.rollouts.insert(id.clone(), Versioned { value: decode(value)?, version });
            }
            AetherKey::NodeLease { node } => {
                let counter = LeaseRecord::decode(value).map_or(0, |lease| lease.counter);
                self.leases.insert(node.clone(), Versioned { value: LeaseRecord { counter }, version });
            }
            AetherKey::NodeLifecycle { node } => {
                self.duties.insert(node.clone(), Err(version));
                self.duties.insert(node.clone(), Ok(Versioned { value: decode(value)?, version }));
            }
            AetherKey::ClusterLeader => {
                self.leader = Some(Err(version));
                self.leader = Some(Ok(Versioned { value: decode(value)?, version }));
            }
            _ => {}
        }
        Ok(())
    }

    fn note(&mut self, problem: String) {
        if self.problems.len() < PROBLEMS_MAX {
            self.problems.push(problem);
        } else {
            self.problems_dropped += 1;
        }
    }

    /// The lifecycle state of `node`: no record is ON_DUTY; an unreadable one is JOINING (nothing new goes to
    /// the node, nothing is moved off it, until the node rewrites it).
    pub fn duty(&self, node: &NodeId) -> crate::duty::Duty {
        match self.duties.get(node) {
            None => crate::duty::Duty::OnDuty,
            Some(Ok(record)) => record.value.state,
            Some(Err(_)) => crate::duty::Duty::Joining,
        }
    }

    /// The record of `artifact` on `node`, if any.
    pub fn slice(&self, artifact: &Artifact, node: &NodeId) -> Option<&Versioned<SliceRecord>> {
        self.slices.get(artifact).and_then(|by_node| by_node.get(node))
    }
}

fn decode<T: Record>(value: &[u8]) -> Result<T, String> {
    T::decode(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::{Command, KvState};

    fn kv_with(entries: &[(&str, &str)]) -> KvState {
        let mut kv = KvState::new();
        for (key, value) in entries {
            let command = Command::Put { key: key.parse().unwrap(), value: value.as_bytes().to_vec() };
            kv.apply_command(command, &mut |_| {});
        }
        kv
    }

    #[test]
    fn entries_are_decoded_by_namespace() {
        let kv = kv_with(&[
            ("slices/n1/g:a:1.0.0", r#"{"desired":"ACTIVE","state":"LOAD","since_ms":1,"instance":0}"#),
            ("endpoints/g:a:1.0.0/get/n1:0", r#"{"node":"n1","instance":0}"#),
            ("routes/GET/a", r#"{"artifact":"g:a:1.0.0","method":"get"}"#),
            ("user/other", "anything"),
        ]);
        let state = ClusterState::from_entries(kv.list(""));
        let artifact = Artifact::parse("g:a:1.0.0").unwrap();
        let node = NodeId::parse("n1").unwrap();
        assert_eq!(state.slice(&artifact, &node).unwrap().version, Revision(1));
        assert_eq!(state.endpoints.len(), 1);
        assert_eq!(state.routes.len(), 1);
        assert!(state.problems.is_empty(), "{:?}", state.problems);
    }

    #[test]
    fn bad_values_become_problems() {
        let kv = kv_with(&[("slices/n1/g:a:1.0.0", "{"), ("targets/g:a:1.0.0", "[]"), ("blueprints/x", "null")]);
        let state = ClusterState::from_entries(kv.list(""));
        assert!(state.slices.is_empty() && state.targets.is_empty() && state.blueprints.is_empty());
        assert_eq!(state.problems.len(), 3, "{:?}", state.problems);
        assert_eq!(state.unreadable.len(), 2, "blueprints are the operator's: {:?}", state.unreadable);
        assert!(state.problems[0].starts_with("blueprints/x"), "{:?}", state.problems);
    }

    #[test]
    fn problems_are_bounded() {
        let mut state = ClusterState::default();
        let key: AetherKey = "targets/g:a:1.0.0".parse().unwrap();
        for _ in 0..PROBLEMS_MAX + 5 {
            state.insert(&key, b"x", Revision(1));
        }
        assert_eq!((state.problems.len(), state.problems_dropped), (PROBLEMS_MAX, 5));
    }
}
