//! The control plane's leader logic on top of the simulated consensus: every replica is a node that renews
//! its lease record through consensus and runs the real `control` code (lease watching, leadership, the
//! leader's guarded reconcile) against the records decided so far, kept in a real `kvstore::KvState`.
//!
//! Also checked: a slice record never stands for more copies than the blueprint's `max_per_node` allows
//! ([`PER_NODE`]; the spread slice asks for more instances than the replicas, so copies are raised and
//! lowered as nodes die and come back).
//!
//! Timing is the node runtime's scaled down ten times ([`RENEW_MS`], [`GRACE_MS`]), so a run of a few
//! simulated seconds holds several grace periods. Slice records stay in LOAD (no node steps them): what is
//! checked is only whether the leader removes them.
//!
//! The invariant checked as records are applied: no slice record of a healthy node is removed, a healthy node
//! being one that is up and whose last lease renewal was applied less than [`HEALTHY_MS`] ago. The fixed
//! logic removes a record only after the node's lease stayed unchanged for the grace period, conditional on
//! that lease version, so a removal can apply only [`GRACE_MS`] (less clock drift) after the last renewal.
//! `ShellBroken::PrivateLiveness` is the old rule: the leader is the smallest node this replica hears, and it
//! removes at once, without conditions, the records of every node it does not hear.
//!
//! Commands are `kvstore` encodings with client ids from [`CLIENT_BASE`]; the key-value register machine
//! ignores them, and this module ignores everything else.

use consensus::Command;
use control::cluster::liveness::{lead, Leadership, LeaseWatch, Liveness, Tenure};
use control::cluster::StartPolicy;
use control::records::{LeaseRecord, Record, SliceRecord};
use control::{ClusterState, KvWrite};
use kvstore::{AetherKey, Change, KvState, NodeId, Revision};
use std::collections::BTreeMap;

/// The spread slice's `max_per_node`.
pub const PER_NODE: u32 = 3;
/// Client ids of the nodes' own commands: `CLIENT_BASE + replica`.
pub const CLIENT_BASE: u64 = 1_000_000;
/// How often a node renews its lease and runs its leader pass (the runtime's second, scaled down).
pub const RENEW_MS: u64 = 100;
/// The grace period (the runtime's default, scaled down the same).
pub const GRACE_MS: u64 = 500;
/// A node that renewed within this long is healthy: its records must stay.
pub const HEALTHY_MS: u64 = GRACE_MS / 2;
/// How long past the core's command deadline an own command still counts as in flight when the core never
/// said what became of it (the runtime's slack, scaled down). Normally the core answers first: it decides the
/// command, or refuses it (`Expired` once its clock passes the deadline).
const IN_FLIGHT_SLACK_MS: u64 = 500;

const BLUEPRINT: &str = "name = \"sim\"\n[[slices]]\nartifact = \"g:spread:1.0.0\"\ninstances = 9\n\
                         max_per_node = 3\n[[slices]]\nartifact = \"g:single:1.0.0\"\ninstances = 1\n";

/// What the world tells a node about itself at one tick.
pub struct NodeView {
    pub up: bool,
    /// At most one slot behind the furthest decision (the runtime's "caught up").
    pub caught_up: bool,
    /// Replicas this one hears over its own links (itself included): the transport's private view.
    pub heard: Vec<usize>,
}

struct Node {
    id: NodeId,
    watch: LeaseWatch,
    /// Leadership in this node's current life (a crash starts a new one).
    tenure: Tenure,
    /// Lease version the last renewal was computed against, and when (local ms).
    renewed: Option<(Option<Revision>, u64)>,
    next_pass_ms: u64,
    /// Own commands not yet decided, with when they were submitted (local ms). As in the runtime, the
    /// leader's pass waits for them until the core decides or refuses them, or their deadline (the core's
    /// `command_ttl_ms`) plus [`IN_FLIGHT_SLACK_MS`] passed: a pass that stopped waiting earlier (the
    /// runtime once gave up after the client deadline) would place an instance a second time while the first
    /// placement, still queued, can apply. A node that stops forgets them, as the process does.
    in_flight: BTreeMap<u64, u64>,
}

/// The control plane of every simulated node, and the invariant's bookkeeping.
pub struct Control {
    kv: KvState,
    next_slot: u64,
    nodes: Vec<Node>,
    broken: bool,
    /// The core's `command_ttl_ms`.
    command_ttl_ms: u64,
    /// Per replica: real time (us) its last lease renewal was applied.
    renewed_at_us: Vec<Option<u64>>,
    seq: u64,
    /// Decided slots waiting for an earlier one, with their control commands.
    pending: BTreeMap<u64, Vec<Command>>,
    pub records_removed: u64,
    pub records_written: u64,
    pub claims_applied: u64,
}

impl Control {
    pub fn new(replicas: usize, broken: bool, command_ttl_ms: u64) -> Control {
        let mut kv = KvState::new();
        let parsed = control::blueprint::parse(BLUEPRINT, &|_| true).expect("the simulated blueprint is valid");
        let record = control::records::BlueprintRecord { toml: BLUEPRINT.to_owned(), blueprint: parsed };
        let key = AetherKey::Blueprint { name: kvstore::Name::parse("sim").expect("valid name") };
        kv.apply_command(kvstore::Command::Put { key, value: record.encode() }, &mut |_| {});
        let nodes = (0..replicas)
            .map(|i| {
                let id = node_id(i);
                let watch = LeaseWatch::new(id.clone(), GRACE_MS);
                Node {
                    watch,
                    id,
                    tenure: Tenure::default(),
                    renewed: None,
                    next_pass_ms: 0,
                    in_flight: BTreeMap::new(),
                }
            })
            .collect();
        Control {
            kv,
            next_slot: 0,
            nodes,
            broken,
            command_ttl_ms,
            renewed_at_us: vec![None; replicas],
            seq: 0,
            pending: BTreeMap::new(),
            records_removed: 0,
            records_written: 0,
            claims_applied: 0,
        }
    }

    /// Applies a decided slot's control commands, once per slot and in slot order (any replica's decision
    /// of a slot is the same, agreement being checked elsewhere). Returns invariant violations.
    pub fn on_decided(&mut self, slot: u64, batch: Option<&[Command]>, now_us: u64, up: &[bool]) -> Vec<String> {
        let mut violations = Vec::new();
        if slot < self.next_slot {
            return violations;
        }
        let ours = |c: &&Command| c.id.client >= CLIENT_BASE;
        self.pending.insert(slot, batch.unwrap_or_default().iter().filter(ours).cloned().collect());
        while let Some(batch) = self.pending.remove(&self.next_slot) {
            self.next_slot += 1;
            self.apply(self.next_slot - 1, &batch, now_us, up, &mut violations);
        }
        violations
    }

    fn apply(&mut self, slot: u64, batch: &[Command], now_us: u64, up: &[bool], violations: &mut Vec<String>) {
        for command in batch {
            self.settled(command.id);
            let Ok(decoded) = kvstore::Command::decode(&command.payload) else { continue };
            let renewed_at_us = &mut self.renewed_at_us;
            let (removed, written, claims) =
                (&mut self.records_removed, &mut self.records_written, &mut self.claims_applied);
            self.kv.apply_command(decoded, &mut |change: &Change<'_>| match (change.key, change.value) {
                (AetherKey::NodeLease { node }, Some(_)) => {
                    if let Some(i) = replica_of(node) {
                        renewed_at_us[i] = Some(now_us);
                    }
                }
                (AetherKey::ClusterLeader, Some(_)) => *claims += 1,
                (AetherKey::Slice { node, artifact }, Some(value)) => {
                    *written += 1;
                    let copies = SliceRecord::decode(value).map(|r| r.copies);
                    if !copies.as_ref().is_ok_and(|n| (1..=PER_NODE).contains(n)) {
                        violations.push(format!(
                            "slot {slot}: slices/{node}/{artifact} stands for {copies:?} copies (max_per_node {PER_NODE})"
                        ));
                    }
                }
                (AetherKey::Slice { node, artifact }, None) => {
                    *removed += 1;
                    let Some(i) = replica_of(node) else { return };
                    let since_ms = renewed_at_us[i].map(|at| now_us.saturating_sub(at) / 1000);
                    if up[i] && since_ms.is_some_and(|ms| ms < HEALTHY_MS) {
                        violations.push(format!(
                            "slot {slot}: slices/{node}/{artifact} removed while {node} is up and renewed its lease \
                             {}ms ago",
                            since_ms.unwrap_or(0)
                        ));
                    }
                }
                _ => {}
            });
        }
    }

    /// A command the core refused, or one decided: it no longer counts as in flight.
    pub fn settled(&mut self, id: consensus::CommandId) {
        let replica = id.client.checked_sub(CLIENT_BASE).and_then(|i| usize::try_from(i).ok());
        if let Some(node) = replica.and_then(|i| self.nodes.get_mut(i)) {
            node.in_flight.remove(&id.seq);
        }
    }

    /// The first slot not yet applied here.
    pub fn next_slot(&self) -> u64 {
        self.next_slot
    }

    /// One tick of `replica`'s node logic at its local time; returns the commands to submit.
    pub fn tick(&mut self, replica: usize, local_ms: u64, view: &NodeView) -> Vec<(u64, Vec<u8>)> {
        let majority = self.nodes.len() / 2 + 1;
        let node = &mut self.nodes[replica];
        if !view.up {
            node.renewed = None;
            node.watch.reset();
            node.in_flight.clear();
            node.tenure = Tenure::default();
            return Vec::new();
        }
        if view.heard.len() < majority || !view.caught_up {
            return Vec::new();
        }
        // The renewal goes first: when the core's queue is short, the leader's own writes must not crowd it out.
        let mut writes: Vec<KvWrite> = self.renewal(replica, local_ms).into_iter().collect();
        let node = &mut self.nodes[replica];
        let wait_ms = self.command_ttl_ms + IN_FLIGHT_SLACK_MS;
        node.in_flight.retain(|_, at| local_ms < *at + wait_ms);
        if local_ms >= node.next_pass_ms && node.in_flight.is_empty() {
            node.next_pass_ms = local_ms + RENEW_MS;
            let state = ClusterState::from_entries(self.kv.list(""));
            let now_ms = local_ms;
            if self.broken {
                writes.extend(private_view_pass(replica, &state, &view.heard, now_ms));
            } else {
                let liveness = node.watch.observe(&state, local_ms);
                match node.tenure.leadership(&node.id, &state, &liveness) {
                    Leadership::Lead { version } => {
                        writes.extend(lead(&state, &liveness, version, now_ms, &StartPolicy::default()))
                    }
                    Leadership::Claim(claim) => writes.push(claim),
                    Leadership::Follow => {}
                }
            }
        }
        let payloads: Vec<Vec<u8>> = writes.iter().filter_map(|w| w.to_command().encode().ok()).collect();
        let mut submissions = Vec::new();
        for payload in payloads {
            self.seq += 1;
            self.nodes[replica].in_flight.insert(self.seq, local_ms);
            submissions.push((self.seq, payload));
        }
        submissions
    }

    /// The lease renewal, as `aetherd` makes it: a compare-and-set at the version last seen, every
    /// [`RENEW_MS`], or after three periods if the previous one never applied.
    fn renewal(&mut self, replica: usize, local_ms: u64) -> Option<KvWrite> {
        let node = &mut self.nodes[replica];
        let key = AetherKey::NodeLease { node: node.id.clone() };
        let current = self.kv.get(&key);
        let version = current.map(|e| e.version());
        let due = match node.renewed {
            None => true,
            Some((at_version, at)) if at_version == version => local_ms >= at + 3 * RENEW_MS,
            Some((_, at)) => local_ms >= at + RENEW_MS,
        };
        if !due {
            return None;
        }
        node.renewed = Some((version, local_ms));
        let counter = current.and_then(|e| LeaseRecord::decode(e.value()).ok()).map_or(0, |l| l.counter);
        Some(KvWrite::Set { key, expected: version, value: LeaseRecord { counter: counter + 1 }.encode() })
    }
}

/// The old rule: the smallest node this replica hears leads, and acts on what it hears: the records of any
/// node it does not hear go at once, conditional only on their own versions.
fn private_view_pass(replica: usize, state: &ClusterState, heard: &[usize], now_ms: u64) -> Vec<KvWrite> {
    if heard.iter().min() != Some(&replica) {
        return Vec::new();
    }
    let mut liveness = Liveness::all_live(heard.iter().map(|i| node_id(*i)));
    for by_node in state.slices.values() {
        for node in by_node.keys().filter(|n| !liveness.live.contains(*n)) {
            liveness.dead.insert(node.clone(), None);
        }
    }
    let writes = control::reconcile(state, &liveness, now_ms);
    writes.iter().map(|w| w.unguarded().clone()).collect()
}

fn node_id(replica: usize) -> NodeId {
    NodeId::parse(&format!("n{replica}")).expect("valid node id")
}

fn replica_of(node: &NodeId) -> Option<usize> {
    node.as_str().strip_prefix('n')?.parse().ok()
}
