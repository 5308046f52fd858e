//! Where the event loop's events come from: the failure detector's view (node up/down, quorum), and the
//! replicated store as it is applied here (leader changes, blueprints, slice placements, removals and
//! state changes), each recorded once in the cluster:
//! - `node_up` / `node_down` / `quorum_*`: by every node, as it sees them (`data.observer` says who);
//! - `leader_changed`: by the new leader, when the leader record it applies names it;
//! - `blueprint_applied` / `blueprint_deleted` / `slice_placed`: by the node the leader record names when
//!   it applies the change (the leader places slices; a blueprint write is recorded there too);
//! - `slice_state` and `slice_removed`: by the node the slice record belongs to (it runs the instance and
//!   writes these changes);
//! - `rollout_changed` (a rollout's state, share or reason changed) and `slice_scaled` (a scale record set by
//!   the controller, with its reason, or by an operator): by the node the leader record names.
//!
//! Invariant: the first look at the store after start records nothing (it only learns what is there), so a
//! restart does not replay old changes as new events; a watch that lost events re-reads silently.

use super::EventLog;
use crate::membership::MembershipEvent;
use control::records::{LeaderRecord, Record, SliceRecord};
use control::rollout::RolloutRecord;
use control::scaling::ScaleRecord;
use kvstore::{AetherKey, Store, WatchEvent, WatchId};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

/// Slice records followed at most (their state, to tell changes); more are not followed.
const SLICES_MAX: usize = 100_000;

pub struct Observer {
    log: Arc<EventLog>,
    me: String,
    watches: Vec<WatchId>,
    /// The leader record's node as last applied here; `None` until the first look.
    leader: Option<Option<String>>,
    /// Slice records (node, artifact) and their state.
    slices: HashMap<(String, String), String>,
}

impl Observer {
    pub fn new(log: Arc<EventLog>, store: &mut Store) -> Observer {
        let watches =
            ["blueprints/", "slices/", "updates/", "scaling/"].iter().filter_map(|p| store.watch(p).ok()).collect();
        let me = log.me().to_string();
        Observer { log, me, watches, leader: None, slices: HashMap::new() }
    }

    pub fn log(&self) -> &Arc<EventLog> {
        &self.log
    }

    /// What the failure detector saw change.
    pub fn membership(&self, events: &[MembershipEvent], now_ms: u64) {
        let observer = json!({ "observer": self.me });
        for event in events {
            match event {
                MembershipEvent::NodeUp(node) => self.log.record(now_ms, node, "node_up", observer.clone()),
                MembershipEvent::NodeDown(node) => self.log.record(now_ms, node, "node_down", observer.clone()),
                MembershipEvent::QuorumGained => self.log.record(now_ms, &self.me, "quorum_gained", json!({})),
                MembershipEvent::QuorumLost => self.log.record(now_ms, &self.me, "quorum_lost", json!({})),
            }
        }
    }

    /// What the store applied since the last look.
    pub fn store(&mut self, store: &mut Store, now_ms: u64) {
        let leader = store.get(&AetherKey::ClusterLeader).and_then(|e| LeaderRecord::decode(e.value()).ok());
        let leader = leader.map(|r| r.node.to_string());
        let first = self.leader.is_none();
        if first {
            self.reseed(store);
        }
        let ready: Vec<WatchId> = store.ready_watches().filter(|id| self.watches.contains(id)).collect();
        let changes: Vec<WatchEvent> =
            ready.into_iter().flat_map(|id| store.drain_events(id).unwrap_or_default()).collect();
        let previous = self.leader.replace(leader.clone()).flatten();
        if !first && previous != leader && leader.as_deref() == Some(self.me.as_str()) {
            self.log.record(now_ms, &self.me, "leader_changed", json!({ "from": previous, "to": self.me }));
        }
        if first {
            return;
        }
        let leading = leader.as_deref() == Some(self.me.as_str());
        for change in changes {
            self.change(store, change, leading, now_ms);
        }
    }

    fn reseed(&mut self, store: &Store) {
        self.slices.clear();
        for entry in store.list("slices/").take(SLICES_MAX) {
            if let (AetherKey::Slice { node, artifact }, Ok(record)) = (entry.key(), SliceRecord::decode(entry.value()))
            {
                self.slices.insert((node.to_string(), artifact.to_string()), record.state.to_string());
            }
        }
    }

    fn change(&mut self, store: &Store, change: WatchEvent, leading: bool, now_ms: u64) {
        match change {
            WatchEvent::Put { key: AetherKey::Blueprint { name }, .. } if leading => {
                self.log.record(now_ms, &self.me, "blueprint_applied", json!({ "name": name.to_string() }));
            }
            WatchEvent::Removed { key: AetherKey::Blueprint { name }, .. } if leading => {
                self.log.record(now_ms, &self.me, "blueprint_deleted", json!({ "name": name.to_string() }));
            }
            WatchEvent::Put { key: AetherKey::Slice { node, artifact }, value, .. } => {
                let Ok(record) = SliceRecord::decode(&value) else { return };
                let (node, artifact) = (node.to_string(), artifact.to_string());
                let to = record.state.to_string();
                let id = (node.clone(), artifact.clone());
                let from = match self.slices.get(&id) {
                    Some(from) => Some(from.clone()),
                    None if self.slices.len() >= SLICES_MAX => return,
                    None => None,
                };
                self.slices.insert(id, to.clone());
                match from {
                    None if leading => {
                        let data = json!({ "artifact": artifact, "node": node, "instance": record.instance });
                        self.log.record(now_ms, &node, "slice_placed", data);
                    }
                    Some(from) if from != to && node == self.me => {
                        let data = json!({ "artifact": artifact, "node": node, "from": from, "to": to, "reason": record.error });
                        self.log.record(now_ms, &node, "slice_state", data);
                    }
                    _ => {}
                }
            }
            WatchEvent::Removed { key: AetherKey::Slice { node, artifact }, .. } => {
                let (node, artifact) = (node.to_string(), artifact.to_string());
                let known = self.slices.remove(&(node.clone(), artifact.clone())).is_some();
                if known && node == self.me {
                    self.log.record(now_ms, &node, "slice_removed", json!({ "artifact": artifact, "node": node }));
                }
            }
            WatchEvent::Put { key: AetherKey::Update { id }, value, .. } if leading => {
                let Ok(r) = RolloutRecord::decode(&value) else { return };
                let data = json!({
                    "id": id.to_string(), "state": r.state.as_str(), "new_share": r.new_share(), "reason": r.reason,
                });
                self.log.record(now_ms, &self.me, "rollout_changed", data);
            }
            WatchEvent::Put { key: AetherKey::Scale { base }, value, .. } if leading => {
                let Ok(r) = ScaleRecord::decode(&value) else { return };
                let data =
                    json!({ "artifact": base.to_string(), "instances": r.instances, "by": r.by, "reason": r.reason });
                self.log.record(now_ms, &self.me, "slice_scaled", data);
            }
            WatchEvent::Resync { .. } => self.reseed(store),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::records::SliceRecord;
    use control::SliceState;
    use kvstore::{Command, WatchLimits};

    fn put(store: &mut Store, slot: &mut u64, key: &str, value: Vec<u8>) {
        let key = AetherKey::parse(key).unwrap();
        store.apply(*slot, &[Command::Put { key, value }.encode().unwrap()]).unwrap();
        *slot += 1;
    }

    fn remove(store: &mut Store, slot: &mut u64, key: &str) {
        let key = AetherKey::parse(key).unwrap();
        store.apply(*slot, &[Command::Remove { key }.encode().unwrap()]).unwrap();
        *slot += 1;
    }

    fn slice(state: SliceState, error: Option<&str>) -> Vec<u8> {
        let record =
            SliceRecord { state, error: error.map(str::to_string), ..SliceRecord::placed(1, Default::default(), 0) };
        record.encode()
    }

    fn kinds(log: &EventLog) -> Vec<(String, &'static str)> {
        log.read(None, 100, 0).0.into_iter().map(|s| (s.event.node, s.event.kind)).collect()
    }

    #[test]
    fn the_leader_records_placements_the_owner_its_states_and_removal_and_a_new_leader_itself() {
        let mut store = Store::new(WatchLimits::default());
        let mut slot = 0;
        put(&mut store, &mut slot, "nodes/leader", LeaderRecord { node: "node-2".parse().unwrap() }.encode());
        put(&mut store, &mut slot, "slices/node-1/g:old:1.0.0", slice(SliceState::Active, None));
        let log = Arc::new(EventLog::new("node-1", 1));
        let mut observer = Observer::new(Arc::clone(&log), &mut store);
        observer.store(&mut store, 1);
        assert!(kinds(&log).is_empty(), "what was there at start is not news");

        put(&mut store, &mut slot, "slices/node-3/g:a:1.0.0", slice(SliceState::Load, None));
        put(&mut store, &mut slot, "slices/node-1/g:old:1.0.0", slice(SliceState::Failed, Some("boom")));
        observer.store(&mut store, 2);
        assert_eq!(kinds(&log), [("node-1".to_string(), "slice_state")], "node-2 leads: it records placements");
        let state = &log.read(None, 1, 0).0[0].event.data;
        assert_eq!(
            (state["from"].as_str(), state["to"].as_str(), state["reason"].as_str()),
            (Some("ACTIVE"), Some("FAILED"), Some("boom"))
        );

        put(&mut store, &mut slot, "nodes/leader", LeaderRecord { node: "node-1".parse().unwrap() }.encode());
        put(&mut store, &mut slot, "slices/node-2/g:a:1.0.0", slice(SliceState::Load, None));
        put(&mut store, &mut slot, "slices/node-3/g:a:1.0.0", slice(SliceState::Loading, None));
        remove(&mut store, &mut slot, "slices/node-1/g:old:1.0.0");
        remove(&mut store, &mut slot, "slices/node-3/g:a:1.0.0");
        observer.store(&mut store, 3);
        let got: Vec<_> = kinds(&log).into_iter().skip(1).collect();
        let expected = [("node-1", "leader_changed"), ("node-2", "slice_placed"), ("node-1", "slice_removed")];
        assert_eq!(got, expected.map(|(n, k)| (n.to_string(), k)), "others' states and removals are theirs");
        assert_eq!(log.read(Some(super::super::Since::Seq(1)), 1, 0).0[0].event.data["from"], "node-2");
    }

    #[test]
    fn membership_changes_name_the_node_and_the_observer() {
        let mut store = Store::new(WatchLimits::default());
        let log = Arc::new(EventLog::new("node-1", 1));
        let observer = Observer::new(Arc::clone(&log), &mut store);
        observer.membership(&[MembershipEvent::NodeDown("node-3".into()), MembershipEvent::QuorumLost], 7);
        let (page, _) = log.read(None, 10, 0);
        assert_eq!(page[0].to_json()["node"], "node-3");
        assert_eq!(page[0].to_json()["data"]["observer"], "node-1");
        assert_eq!(page[1].event.kind, "quorum_lost");
    }
}
