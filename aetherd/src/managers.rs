//! The deployment managers (`control`) wired to this node's replicated store: which keys wake them, and
//! the views they are given.
//!
//! Invariants: managers only ever see applied state; the leader reconciles, and every node steps its own
//! records, only while it has quorum, is caught up, and none of its earlier writes is still undecided (a stale view would only produce writes
//! that fail their compare-and-set, but there is no point in making them); every write they produce is
//! conditional on the version it was computed from.

use crate::deploy::Deployer;
use crate::membership::Membership;
use control::node::NodeOutput;
use control::KvWrite;
use kvstore::{NodeId, Store, WatchId};
use std::time::{SystemTime, UNIX_EPOCH};

/// Keys the deployment managers read.
pub const DEPLOY_PREFIXES: [&str; 5] = ["blueprints/", "targets/", "slices/", "endpoints/", "routes/"];

/// Wall-clock milliseconds: slice records carry `since_ms` that other nodes compare with their own clock.
pub fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Registers the watches that wake the managers.
pub fn watch(store: &mut Store) -> Vec<WatchId> {
    DEPLOY_PREFIXES.iter().filter_map(|p| store.watch(p).ok()).collect()
}

/// Drains the managers' watches; true when anything changed (or a watch lagged and must re-read).
pub fn drain(store: &mut Store, watches: &[WatchId]) -> Vec<kvstore::WatchEvent> {
    let ready: Vec<WatchId> = store.ready_watches().filter(|id| watches.contains(id)).collect();
    ready.into_iter().flat_map(|id| store.drain_events(id).unwrap_or_default()).collect()
}

/// The leader's writes for the current state and membership.
pub fn reconcile(
    store: &Store,
    membership: &Membership,
    now_ms: u64,
    policy: &control::cluster::StartPolicy,
) -> Vec<KvWrite> {
    let entries = DEPLOY_PREFIXES.iter().flat_map(|p| store.list(p));
    let view = control::ClusterState::from_entries(entries);
    let live: Vec<NodeId> = membership.alive_nodes().iter().filter_map(|n| NodeId::parse(n).ok()).collect();
    control::cluster::reconcile_with(&view, &live, now_ms, policy)
}

/// This node's actions and writes for its records and its container.
pub fn node_step(store: &Store, me: &NodeId, deployer: &Deployer, now_ms: u64) -> NodeOutput {
    let mine = format!("slices/{me}/");
    let entries = store.list(&mine).chain(store.list("endpoints/")).chain(store.list("routes/"));
    let view = control::NodeState::from_entries(me.clone(), entries);
    control::node::step(&view, deployer.states(), deployer.infos(), now_ms)
}
