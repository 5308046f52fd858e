//! The storage plane on the event loop: this node's `dht::Dht` replica, fed the `Dht` frames its peers send,
//! the loop's tick (every [`super::TICK`]) and wall-clock time, and the members the control plane's decided
//! liveness names; its outputs go out as `Dht` frames and its finished operations back to the thread that
//! asked ([`DhtRequest`], from `blobs::Blobs` on management and deploy workers).
//!
//! Membership: the nodes with a lease record that this node's lease watch (`control::cluster::liveness`,
//! the same judgement the leader acts on) does not judge dead, and this node itself; before any lease
//! record exists (or before this node has caught up), the configured peers. A node judged dead leaves (its
//! partitions re-replicate among the others); one that renews its lease again rejoins.
//!
//! Invariants: every request gets exactly one answer (its operation's `Done`, or a failure when the loop
//! drops it: the storage plane is off, or the answer is overdue); a frame that does not decode is logged with
//! its peer and dropped, and the connection lives; a send the transport refuses is counted and logged at
//! debug, never retried here (the replica's own timeouts and anti-entropy cover lost messages).

use super::Node;
use control::cluster::liveness::LeaseWatch;
use dht::{Dht, DhtError, DiskStore, Entry, MemStore, Message, OpId, Output, Stats, Store, StoreError, Version};
use log::{debug, info, warn};
use net::{Ctx, FrameKind, PeerId};
use std::collections::HashMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How often the members are worked out again from the replicated lease records.
const MEMBERSHIP_EVERY: Duration = Duration::from_millis(500);
/// A request whose operation has not finished after this long is answered with a timeout and forgotten
/// (the replica finishes every operation within its own `op_timeout_ms`; this only bounds the table).
const ANSWER_OVERDUE: Duration = Duration::from_secs(60);
/// Bad frames and refused sends are logged at most this often (at warn and debug).
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Where a finished operation's answer goes: a get's value (`None` when absent), `None` for a put or delete.
pub type DhtReply = mpsc::Sender<Result<Option<Vec<u8>>, DhtError>>;

/// One key operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtOp {
    Put { key: String, value: Vec<u8> },
    Get { key: String },
    Delete { key: String },
}

/// A key operation another thread asks of the loop.
pub struct DhtRequest {
    pub op: DhtOp,
    pub reply: DhtReply,
}

/// The store the node's replica writes through: on disk (`{data_dir}/dht`), or in memory when the
/// environment asks for it ([`STORE_ENV`]).
pub enum NodeStore {
    Disk(DiskStore),
    Memory(MemStore),
}

/// `AETHER_DHT_STORE=memory` keeps the replica's entries in memory (lost at a restart; tests only).
pub const STORE_ENV: &str = "AETHER_DHT_STORE";

impl NodeStore {
    /// The disk store in `dir`, or the memory store when [`STORE_ENV`] says `memory`.
    pub fn open(dir: &std::path::Path) -> Result<NodeStore, String> {
        match std::env::var(STORE_ENV).as_deref() {
            Ok("memory") => Ok(NodeStore::Memory(MemStore::default())),
            Ok("disk") | Err(_) => DiskStore::open(dir)
                .map(NodeStore::Disk)
                .map_err(|e| format!("storage plane folder {}: {e}", dir.display())),
            Ok(other) => Err(format!("{STORE_ENV}='{other}': expected 'disk' or 'memory'")),
        }
    }
}

macro_rules! each_store {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            NodeStore::Disk($s) => $body,
            NodeStore::Memory($s) => $body,
        }
    };
}

impl Store for NodeStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        each_store!(self, s => s.get(key))
    }
    fn put(&mut self, key: &str, entry: Entry) -> Result<bool, StoreError> {
        each_store!(self, s => s.put(key, entry))
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        each_store!(self, s => s.remove(key))
    }
    fn digest(&self, partition: u32) -> u64 {
        each_store!(self, s => s.digest(partition))
    }
    fn versions(&self, partition: u32, after: Option<&str>, limit: usize) -> Vec<(String, Version)> {
        each_store!(self, s => s.versions(partition, after, limit))
    }
    fn partitions(&self) -> Vec<u32> {
        each_store!(self, s => s.partitions())
    }
    fn usage(&self) -> (usize, u64) {
        each_store!(self, s => s.usage())
    }
    fn scrub(&mut self, budget: usize) -> Vec<String> {
        each_store!(self, s => s.scrub(budget))
    }
}

/// The loop's storage-plane state.
pub struct StoragePlane {
    dht: Dht<NodeStore>,
    me: String,
    /// Every configured node, this one included: the members before any lease record exists.
    configured: Vec<String>,
    /// The members last given to the replica, sorted.
    members: Vec<String>,
    watch: Option<LeaseWatch>,
    epoch: Instant,
    membership_checked: Option<Instant>,
    waiting: HashMap<OpId, (DhtReply, Instant)>,
    out: Vec<Output>,
    /// Sends the transport refused, and frames that did not decode, since the start.
    sends_refused: u64,
    bad_frames: u64,
    refused_logged: Option<Instant>,
    bad_logged: Option<Instant>,
}

impl StoragePlane {
    /// A replica for node `me` of the cluster `configured` (every node's id), holding `store`.
    pub fn new(me: &str, configured: &[String], config: dht::Config, store: NodeStore, lease_grace: Duration) -> Self {
        let mut configured = configured.to_vec();
        if !configured.iter().any(|id| id == me) {
            configured.push(me.to_owned());
        }
        configured.sort();
        configured.dedup();
        let grace_ms = u64::try_from(lease_grace.as_millis()).unwrap_or(u64::MAX);
        StoragePlane {
            dht: Dht::new(me.to_owned(), config, store),
            me: me.to_owned(),
            configured,
            members: Vec::new(),
            watch: kvstore::NodeId::parse(me).ok().map(|id| LeaseWatch::new(id, grace_ms)),
            epoch: Instant::now(),
            membership_checked: None,
            waiting: HashMap::new(),
            out: Vec::new(),
            sends_refused: 0,
            bad_frames: 0,
            refused_logged: None,
            bad_logged: None,
        }
    }

    pub fn stats(&self) -> Stats {
        self.dht.stats()
    }

    /// The members the decided liveness names (see the module documentation); `None` while the applied
    /// store cannot tell (not caught up).
    fn decided_members(&mut self, store: Option<&kvstore::Store>) -> Vec<String> {
        let Some(store) = store else { return self.configured.clone() };
        let view = control::ClusterState::from_entries(store.list("nodes/"));
        if view.leases.is_empty() {
            return self.configured.clone();
        }
        let monotonic_ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        let dead = match self.watch.as_mut() {
            Some(watch) => watch.observe(&view, monotonic_ms).dead,
            None => Default::default(),
        };
        let mut members: Vec<String> =
            view.leases.keys().filter(|node| !dead.contains_key(*node)).map(|node| node.to_string()).collect();
        if !members.contains(&self.me) {
            members.push(self.me.clone());
        }
        members.sort();
        members
    }
}

impl Node {
    /// Installs the storage plane (the node runs without one until this is called).
    pub fn with_storage(mut self, plane: StoragePlane) -> Node {
        self.storage = Some(plane);
        self
    }

    /// A key operation from another thread.
    pub(super) fn dht_request(&mut self, ctx: &mut Ctx<'_>, request: DhtRequest) {
        let Some(plane) = self.storage.as_mut() else {
            let _ = request.reply.send(Err(DhtError::Store("the storage plane is not running on this node".into())));
            return;
        };
        let now_ms = crate::managers::wall_ms();
        let mut out = std::mem::take(&mut plane.out);
        let op = match request.op {
            DhtOp::Put { key, value } => plane.dht.put(&key, value, now_ms, &mut out),
            DhtOp::Get { key } => plane.dht.get(&key, now_ms, &mut out),
            DhtOp::Delete { key } => plane.dht.delete(&key, now_ms, &mut out),
        };
        plane.waiting.insert(op, (request.reply, Instant::now()));
        self.carry_out_dht(ctx, out);
    }

    /// A `Dht` frame from `peer`.
    pub(super) fn receive_dht(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, payload: &[u8]) {
        let Some(from) = self.peer_names.get(peer).cloned() else { return };
        let Some(plane) = self.storage.as_mut() else { return };
        let message = match Message::decode(payload) {
            Ok(message) => message,
            Err(e) => {
                plane.bad_frames += 1;
                let now = Instant::now();
                if plane.bad_logged.is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY) {
                    plane.bad_logged = Some(now);
                    warn!("dropping a storage-plane frame from {from} ({} so far): {e}", plane.bad_frames);
                }
                return;
            }
        };
        let mut out = std::mem::take(&mut plane.out);
        plane.dht.handle(&from, message, crate::managers::wall_ms(), &mut out);
        self.carry_out_dht(ctx, out);
    }

    /// The loop's tick: membership (every [`MEMBERSHIP_EVERY`]), the replica's timers, overdue answers.
    pub(super) fn tick_dht(&mut self, ctx: &mut Ctx<'_>) {
        let caught_up = self.replication.as_ref().filter(|r| r.caught_up()).map(|r| r.store());
        let Some(plane) = self.storage.as_mut() else { return };
        let now = Instant::now();
        let now_ms = crate::managers::wall_ms();
        let mut out = std::mem::take(&mut plane.out);
        if plane.membership_checked.is_none_or(|at| now.saturating_duration_since(at) >= MEMBERSHIP_EVERY) {
            plane.membership_checked = Some(now);
            // Not caught up: the members stay what they were (the configured peers at first).
            let members = match caught_up {
                Some(store) => plane.decided_members(Some(store)),
                None if plane.members.is_empty() => plane.decided_members(None),
                None => plane.members.clone(),
            };
            if members != plane.members {
                info!("storage plane members: {}", members.join(", "));
                plane.dht.set_members(&members, now_ms, &mut out);
                plane.members = members;
            }
        }
        plane.dht.tick(now_ms, &mut out);
        let overdue: Vec<OpId> = plane
            .waiting
            .iter()
            .filter(|(_, (_, at))| now.saturating_duration_since(*at) >= ANSWER_OVERDUE)
            .map(|(op, _)| *op)
            .collect();
        for op in overdue {
            if let Some((reply, _)) = plane.waiting.remove(&op) {
                let _ = reply.send(Err(DhtError::Timeout));
            }
        }
        self.carry_out_dht(ctx, out);
    }

    /// Sends the replica's messages and answers its finished operations; hands the buffer back.
    fn carry_out_dht(&mut self, ctx: &mut Ctx<'_>, mut out: Vec<Output>) {
        let Some(plane) = self.storage.as_mut() else { return };
        for output in out.drain(..) {
            match output {
                Output::Send { to, message } => {
                    let sent = match self.peer_names.iter().position(|name| *name == to) {
                        Some(peer) => ctx.send(peer, FrameKind::Dht, &message.encode()),
                        None => Err(net::SendError::UnknownPeer),
                    };
                    if let Err(e) = sent {
                        plane.sends_refused += 1;
                        let now = Instant::now();
                        if plane.refused_logged.is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY) {
                            plane.refused_logged = Some(now);
                            debug!(
                                "storage plane: a message to {to} was not sent ({e}; {} so far)",
                                plane.sends_refused
                            );
                        }
                    }
                }
                Output::Done { op, result } => {
                    if let Some((reply, _)) = plane.waiting.remove(&op) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
        plane.out = out;
    }

    /// `GET /api/dht`.
    pub(super) fn dht_view(&self) -> Option<mgmt::DhtView> {
        let plane = self.storage.as_ref()?;
        let stats = plane.stats();
        Some(mgmt::DhtView {
            members: plane.members.clone(),
            entries: stats.entries,
            bytes: stats.bytes,
            under_replicated: stats.under_replicated,
            read_repairs: stats.read_repairs,
            anti_entropy_repairs: stats.anti_entropy_repairs,
            handed_off: stats.handed_off,
            corrupt_dropped: stats.corrupt_dropped,
            sends_refused: plane.sends_refused,
            bad_frames: plane.bad_frames,
        })
    }
}
