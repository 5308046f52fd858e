//! [`NodeState`]: one node's decoded view of the keys it acts on: its own slice records and endpoints, every
//! route, and the config each target asks for (so running slices can follow a changed blueprint config).
//!
//! Like the cluster view, building never fails: undecodable entries are left out and listed, bounded, in
//! [`NodeState::problems`]; keys of other nodes and other namespaces are ignored.

use crate::records::{Record, RouteRecord, SliceRecord, TargetRecord};
use crate::write::Versioned;
use kvstore::{AetherKey, Artifact, Entry, HttpMethod, Name, NodeId, Revision, RoutePath};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Most problems kept in one view; more are counted in [`NodeState::problems_dropped`].
pub const NODE_PROBLEMS_MAX: usize = 64;

/// This node's slice records and endpoints, and the route table.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    pub node: NodeId,
    /// `slices/{node}/*` of this node, by artifact.
    pub records: BTreeMap<Artifact, Versioned<SliceRecord>>,
    /// This node's endpoint keys, by artifact, then (slice method, instance).
    pub endpoints: BTreeMap<Artifact, BTreeMap<(Name, u32), Revision>>,
    pub routes: BTreeMap<(HttpMethod, RoutePath), Versioned<RouteRecord>>,
    /// `targets/*`: the config the blueprint asks for, by artifact.
    pub configs: BTreeMap<Artifact, Map<String, Value>>,
    /// `topics/*`: the subscription records.
    pub subscriptions: crate::messaging::subscribe::Subscriptions,
    pub problems: Vec<String>,
    pub problems_dropped: usize,
}

impl NodeState {
    pub fn new(node: NodeId) -> Self {
        NodeState {
            node,
            records: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            routes: BTreeMap::new(),
            configs: BTreeMap::new(),
            subscriptions: BTreeMap::new(),
            problems: Vec::new(),
            problems_dropped: 0,
        }
    }

    /// The view of `node` from a KV listing (`slices/{node}/`, `endpoints/`, `routes/` and `targets/`, or
    /// everything).
    pub fn from_entries<'a>(node: NodeId, entries: impl IntoIterator<Item = &'a Entry>) -> Self {
        let mut state = NodeState::new(node);
        for entry in entries {
            state.insert(entry.key(), entry.value(), entry.version());
        }
        state
    }

    /// Adds one entry; keys of other nodes and namespaces are ignored.
    pub fn insert(&mut self, key: &AetherKey, value: &[u8], version: Revision) {
        let result = match key {
            AetherKey::Slice { node, artifact } if *node == self.node => SliceRecord::decode(value).map(|record| {
                self.records.insert(artifact.clone(), Versioned { value: record, version });
            }),
            AetherKey::Endpoint { artifact, method, node, instance } if *node == self.node => {
                self.endpoints.entry(artifact.clone()).or_default().insert((method.clone(), *instance), version);
                Ok(())
            }
            AetherKey::Route { method, path } => RouteRecord::decode(value).map(|route| {
                self.routes.insert((*method, path.clone()), Versioned { value: route, version });
            }),
            AetherKey::Target { artifact } => TargetRecord::decode(value).map(|target| {
                self.configs.insert(artifact.clone(), target.config);
            }),
            AetherKey::TopicSubscription { .. } => {
                crate::messaging::subscribe::insert(&mut self.subscriptions, key, value, version)
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            self.note(format!("{key}: {e}"));
        }
    }

    fn note(&mut self, problem: String) {
        if self.problems.len() < NODE_PROBLEMS_MAX {
            self.problems.push(problem);
        } else {
            self.problems_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_nodes_records_and_endpoints_are_kept() {
        let mut state = NodeState::new(NodeId::parse("n1").unwrap());
        let record = br#"{"desired":"ACTIVE","state":"LOAD","since_ms":1,"instance":0}"#;
        for (key, value) in [
            ("slices/n1/g:a:1.0.0", &record[..]),
            ("slices/n2/g:a:1.0.0", &record[..]),
            ("endpoints/g:a:1.0.0/get/n1:0", b"{}"),
            ("endpoints/g:a:1.0.0/get/n2:0", b"{}"),
            ("routes/GET/a", br#"{"artifact":"g:a:1.0.0","method":"get"}"#),
            ("slices/n1/g:b:1.0.0", b"not json"),
            (
                "targets/g:a:1.0.0",
                br#"{"blueprint":"b","instances":1,"min_instances":1,"depends_on":[],"config":{"k":"v"}}"#,
            ),
        ] {
            state.insert(&key.parse().unwrap(), value, Revision(1));
        }
        assert_eq!(state.records.len(), 1);
        assert_eq!(state.endpoints.values().map(BTreeMap::len).sum::<usize>(), 1);
        assert_eq!(state.routes.len(), 1);
        assert_eq!(state.problems.len(), 1, "{:?}", state.problems);
        let a = Artifact::parse("g:a:1.0.0").unwrap();
        assert_eq!(state.configs.get(&a).and_then(|c| c.get("k")), Some(&Value::from("v")), "targets give the config");
    }
}
