//! A tiny in-process cluster for deployment tests: the real kvstore state machine, the leader's reconcile,
//! every node's step, and fake containers that finish each action at once (or fail chosen activations).

#![allow(dead_code)]

use control::blueprint;
use control::cluster::{self, ClusterState};
use control::lifecycle::{DesiredState, SliceState};
use control::node::{self, ContainerState, NodeAction, NodeState, SliceInfo};
use control::records::{BlueprintRecord, Record};
use control::write::KvWrite;
use kvstore::{AetherKey, ApplyResult, Artifact, Command, HttpMethod, KvState, Name, NodeId, RoutePath};
use std::collections::{BTreeMap, BTreeSet};

/// Most rounds [`Sim::settle`] runs before declaring that the cluster does not converge.
pub const SETTLE_ROUNDS_MAX: usize = 1000;
/// Simulated time per round.
pub const ROUND_MS: u64 = 100;

pub struct Sim {
    pub kv: KvState,
    /// Live nodes and what their containers hold.
    pub containers: BTreeMap<NodeId, BTreeMap<Artifact, ContainerState>>,
    /// The copies each node's container runs of each slice (absent: one).
    pub copies: BTreeMap<NodeId, BTreeMap<Artifact, u32>>,
    /// The resizes asked of each node's container, answered at once.
    pub resizes: BTreeMap<NodeId, BTreeMap<Artifact, node::Resize>>,
    /// Nodes whose container cannot start more than this many copies of a slice (a second copy that binds a
    /// fixed port, say).
    pub copies_max: BTreeMap<NodeId, u32>,
    pub now_ms: u64,
    pub infos: BTreeMap<Artifact, SliceInfo>,
    /// Artifacts whose activation fails in every container.
    pub broken: BTreeSet<Artifact>,
    /// Artifacts whose activation kills the node before its ACTIVATING write is stored (a crash in `start`).
    pub killers: BTreeSet<Artifact>,
    /// The leader's start-failure policy; by default failures never hold placement back, so tests of other
    /// concerns see plain placement, and quarantine tests set their own.
    pub policy: cluster::StartPolicy,
}

pub fn node(i: usize) -> NodeId {
    NodeId::parse(&format!("node-{i}")).unwrap()
}

pub fn artifact(s: &str) -> Artifact {
    Artifact::parse(s).unwrap()
}

/// What a test slice declares: one method `call` and the route `GET /{artifact id}`.
pub fn info_of(artifact: &Artifact) -> SliceInfo {
    let path = RoutePath::parse(&format!("/{}", artifact.base().artifact())).unwrap();
    let call = Name::parse("call").unwrap();
    SliceInfo { routes: vec![(HttpMethod::Get, path, call.clone())], methods: vec![call], ..SliceInfo::default() }
}

impl Sim {
    pub fn new(nodes: usize) -> Self {
        Sim {
            kv: KvState::new(),
            containers: (0..nodes).map(|i| (node(i), BTreeMap::new())).collect(),
            copies: BTreeMap::new(),
            resizes: BTreeMap::new(),
            copies_max: BTreeMap::new(),
            now_ms: 1_000_000,
            infos: BTreeMap::new(),
            broken: BTreeSet::new(),
            killers: BTreeSet::new(),
            policy: cluster::StartPolicy { failures_max: u32::MAX, backoff_base_ms: 0, backoff_max_ms: 0 },
        }
    }

    pub fn live(&self) -> Vec<NodeId> {
        self.containers.keys().cloned().collect()
    }

    /// The harness's liveness: killed nodes are dead at once (the grace period is the lease watch's concern,
    /// tested beside it); with no lease records, removals are conditional on the lease being absent.
    pub fn liveness(&self) -> cluster::Liveness {
        let mut liveness = cluster::Liveness::all_live(self.live());
        for by_node in self.state().slices.values() {
            for node in by_node.keys().filter(|node| !liveness.live.contains(*node)) {
                liveness.dead.insert(node.clone(), None);
            }
        }
        liveness
    }

    pub fn state(&self) -> ClusterState {
        ClusterState::from_entries(self.kv.list(""))
    }

    /// Applies writes in order; returns how many changed the store.
    pub fn apply(&mut self, writes: &[KvWrite]) -> usize {
        let results = writes.iter().map(|w| self.kv.apply_command(w.to_command(), &mut |_| {}));
        results.filter(|r| matches!(r, ApplyResult::Ok { .. })).count()
    }

    pub fn submit(&mut self, toml: &str) {
        let parsed = blueprint::parse(toml, &|_| true).unwrap();
        for spec in &parsed.slices {
            self.infos.insert(spec.artifact.clone(), info_of(&spec.artifact));
        }
        let key = AetherKey::Blueprint { name: parsed.name.clone() };
        let value = BlueprintRecord { toml: toml.to_owned(), blueprint: parsed }.encode();
        self.kv.apply_command(Command::Put { key, value }, &mut |_| {});
    }

    pub fn delete(&mut self, name: &str) {
        let key = AetherKey::Blueprint { name: Name::parse(name).unwrap() };
        self.kv.apply_command(Command::Remove { key }, &mut |_| {});
    }

    /// One leader pass; returns the writes it asked for.
    pub fn leader(&mut self) -> Vec<KvWrite> {
        let writes = cluster::reconcile_with(&self.state(), &self.liveness(), self.now_ms, &self.policy);
        self.apply(&writes);
        writes
    }

    /// One step of `node`; returns how many writes and actions it produced.
    pub fn node_step(&mut self, id: &NodeId) -> usize {
        let Some(container) = self.containers.get(id) else { return 0 };
        let view = NodeState::from_entries(id.clone(), self.kv.list(""));
        let copies = self.copies.get(id).cloned().unwrap_or_default();
        let resizes = self.resizes.get(id).cloned().unwrap_or_default();
        let running = node::Running { reconfigs: &BTreeMap::new(), copies: &copies, resizes: &resizes };
        let output = node::step(&view, container, &self.infos, running, self.now_ms);
        let kills =
            |a: &NodeAction| matches!(a, NodeAction::Activate { artifact, .. } if self.killers.contains(artifact));
        if output.actions.iter().any(kills) {
            self.kill(id);
            return 1;
        }
        self.apply(&output.writes);
        for action in &output.actions {
            self.perform(id, action);
        }
        output.writes.len() + output.actions.len()
    }

    fn perform(&mut self, id: &NodeId, action: &NodeAction) {
        let broken = &self.broken;
        let Some(container) = self.containers.get_mut(id) else { return };
        let copies = self.copies.entry(id.clone()).or_default();
        let most = self.copies_max.get(id).copied().unwrap_or(u32::MAX);
        match action {
            NodeAction::Load { artifact, copies: n, .. } => {
                container.insert(artifact.clone(), ContainerState::Loaded);
                copies.insert(artifact.clone(), (*n).min(most));
            }
            NodeAction::Resize { artifact, copies: n, .. } => {
                copies.insert(artifact.clone(), (*n).min(most));
                let outcome = if *n > most { Err(format!("only {most} copies start here")) } else { Ok(()) };
                let resize = node::Resize { copies: *n, outcome: Some(outcome) };
                self.resizes.entry(id.clone()).or_default().insert(artifact.clone(), resize);
            }
            NodeAction::Activate { artifact, .. } if broken.contains(artifact) => {
                container.insert(artifact.clone(), ContainerState::Failed { reason: "start failed".into() });
            }
            NodeAction::Activate { artifact, .. } => {
                container.insert(artifact.clone(), ContainerState::Active);
            }
            NodeAction::Deactivate { artifact } => {
                container.insert(artifact.clone(), ContainerState::Loaded);
            }
            NodeAction::Unload { artifact } => {
                container.remove(artifact);
                copies.remove(artifact);
                self.resizes.entry(id.clone()).or_default().remove(artifact);
            }
            // Configs never change in these scenarios; the config step has its own unit tests.
            NodeAction::Reconfigure { .. } => {}
        }
    }

    /// One round: the leader, then every live node; returns how much happened.
    pub fn round(&mut self) -> usize {
        let mut activity = self.leader().len();
        for id in self.live() {
            activity += self.node_step(&id);
        }
        self.now_ms += ROUND_MS;
        activity
    }

    /// Runs rounds until nothing happens and no record waits in FAILED; panics if that never comes.
    pub fn settle(&mut self) {
        for _ in 0..SETTLE_ROUNDS_MAX {
            if self.round() == 0 && !self.any_failed() {
                return;
            }
        }
        panic!("no convergence after {SETTLE_ROUNDS_MAX} rounds: {:#?}", self.state().slices);
    }

    fn any_failed(&self) -> bool {
        self.state().slices.values().flat_map(|by_node| by_node.values()).any(|r| r.value.state == SliceState::Failed)
    }

    pub fn kill(&mut self, id: &NodeId) {
        self.containers.remove(id);
        self.copies.remove(id);
        self.resizes.remove(id);
    }

    /// Starts (or restarts) `id` with an empty container.
    pub fn start(&mut self, id: NodeId) {
        self.containers.insert(id, BTreeMap::new());
    }

    /// The copies of `artifact` each node's ACTIVE, wanted ACTIVE record serves with (the lower of what it
    /// asks for and what its node wrote back as running), checked against what the node's container runs.
    pub fn active_copies(&self, artifact: &Artifact) -> BTreeMap<NodeId, u32> {
        let state = self.state();
        let by_node = state.slices.get(artifact).cloned().unwrap_or_default();
        let active = by_node
            .into_iter()
            .filter(|(_, r)| r.value.state == SliceState::Active && r.value.desired == DesiredState::Active);
        let copies: BTreeMap<NodeId, u32> = active.map(|(node, r)| (node, r.value.serving_copies())).collect();
        for (node, n) in &copies {
            let runs = self.copies.get(node).and_then(|c| c.get(artifact)).copied().unwrap_or(1);
            assert_eq!(runs, *n, "{artifact} on {node}: the container runs {runs} copies, the record says {n}");
        }
        copies
    }

    /// Nodes with an ACTIVE, wanted ACTIVE record of `artifact`.
    pub fn active_nodes(&self, artifact: &Artifact) -> Vec<NodeId> {
        let state = self.state();
        let by_node = state.slices.get(artifact).cloned().unwrap_or_default();
        let active = by_node
            .into_iter()
            .filter(|(_, r)| r.value.state == SliceState::Active && r.value.desired == DesiredState::Active);
        active.map(|(node, _)| node).collect()
    }

    /// Every key of a namespace, as strings.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.kv.list(prefix).map(|e| e.key().to_string()).collect()
    }
}
