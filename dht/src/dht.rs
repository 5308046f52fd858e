//! One replica's DHT state machine: coordinates the quorum operations this node starts, answers its peers,
//! and runs anti-entropy and hand-off on `tick` (`anti_entropy.rs`).
//!
//! Invariants: a put or delete finishes `Ok` only once `min(write_quorum, replicas)` distinct replicas have
//! stored its version (or a newer one); a get finishes once `min(read_quorum, replicas)` distinct replicas
//! answered and returns the newest entry among them. Versions this node issues are strictly increasing and
//! above every version it has seen (a hybrid clock over `now_ms`). Every queue is bounded: at most
//! `OPS_MAX` operations in flight, anti-entropy limits in `anti_entropy.rs`.

use std::collections::BTreeMap;

use crate::anti_entropy::AntiEntropy;
use crate::message::Message;
use crate::ring::{hash64, Ring};
use crate::store::{Entry, Store, Version};
use crate::{NodeId, KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Operations one node coordinates at once; more finish at once with `DhtError::Busy`.
pub const OPS_MAX: usize = 4096;
/// How far ahead of this node's clock a peer's version stamp may be. An entry stamped further ahead (a
/// peer whose clock is far off, or a hostile one) is neither stored nor observed: observed, it would pin
/// this node's hybrid clock (and, through anti-entropy, every node's) in the future, where tombstones never
/// expire and a stamp of `u64::MAX` would make every later write of its key lose.
pub const STAMP_AHEAD_MAX_MS: u64 = 60 * 60 * 1000;

/// Tunables; `Config::default()` is what a node runs. The simulator's broken variants flip the last three.
#[derive(Debug, Clone)]
pub struct Config {
    /// Replicas per partition (capped by the number of members).
    pub replication: usize,
    /// Acknowledgements a write needs (the coordinator's own write counts).
    pub write_quorum: usize,
    /// Replies a read needs.
    pub read_quorum: usize,
    /// How long an operation waits for its quorum before it fails with `DhtError::Timeout`.
    pub op_timeout_ms: u64,
    /// How often each partition this replica holds is compared with its other replicas.
    pub anti_entropy_interval_ms: u64,
    /// A tombstone older than this (by its stamp) is forgotten. It must outlast any replica's time away
    /// (a replica that missed the delete and comes back later would bring the old value back).
    pub tombstone_ttl_ms: u64,
    /// Stale replicas a read saw are sent the newest entry.
    pub read_repair: bool,
    /// Replicas compare digests and repair differences; off only to show the simulator catches it.
    pub anti_entropy: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            replication: 3,
            write_quorum: 2,
            read_quorum: 2,
            op_timeout_ms: 5_000,
            anti_entropy_interval_ms: 1_000,
            tombstone_ttl_ms: 24 * 60 * 60 * 1000,
            read_repair: true,
            anti_entropy: true,
        }
    }
}

/// Names an operation this node started; its `Output::Done` carries the same id.
pub type OpId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtError {
    /// The quorum did not answer in time.
    Timeout,
    /// Fewer members than the quorum needs.
    Unavailable { members: usize, needed: usize },
    /// The key or value is over its limit.
    TooLarge(String),
    /// The local store failed.
    Store(String),
    /// `OPS_MAX` operations are already in flight on this node.
    Busy,
}

impl std::fmt::Display for DhtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DhtError::Timeout => f.write_str("the replicas did not answer in time"),
            DhtError::Unavailable { members, needed } => {
                write!(f, "{members} storage members, a quorum needs {needed}")
            }
            DhtError::TooLarge(what) => write!(f, "{what} is too large"),
            DhtError::Store(error) => write!(f, "local store: {error}"),
            DhtError::Busy => write!(f, "{OPS_MAX} storage operations already in flight"),
        }
    }
}

impl std::error::Error for DhtError {}

/// What the shell carries out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send `message` to member `to` (never to this node itself).
    Send { to: NodeId, message: Message },
    /// An operation this node started finished: a get's value (`None`: absent or deleted), or `None` for a
    /// put or delete.
    Done { op: OpId, result: Result<Option<Vec<u8>>, DhtError> },
}

/// Counters and the replica's own view of replication health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub entries: usize,
    pub bytes: u64,
    /// Partitions this replica replicates for which some other current replica has not reported a digest
    /// matching this replica's in the last 3 anti-entropy rounds (all of them while anti-entropy is off).
    pub under_replicated: usize,
    pub read_repairs: u64,
    pub anti_entropy_repairs: u64,
    pub handed_off: u64,
    pub corrupt_dropped: u64,
}

/// An operation waiting for its quorum.
struct Op {
    key: String,
    /// The replicas asked: only their answers count towards the quorum.
    replicas: Vec<NodeId>,
    deadline_ms: u64,
    needed: usize,
    kind: OpKind,
}

enum OpKind {
    Write { version: Version, acks: Vec<NodeId> },
    Read { replies: Vec<(NodeId, Option<Entry>)> },
}

/// One replica.
pub struct Dht<S: Store> {
    pub(crate) me: NodeId,
    writer: u64,
    pub(crate) config: Config,
    pub(crate) store: S,
    pub(crate) ring: Ring,
    /// The highest stamp issued or seen.
    clock_ms: u64,
    /// The store's newest stamp at start, folded into `clock_ms` at the first call that brings the time.
    clock_seed: Option<u64>,
    /// The latest `now_ms` any call passed.
    pub(crate) now_ms: u64,
    next_op: OpId,
    ops: BTreeMap<OpId, Op>,
    pub(crate) ae: AntiEntropy,
    pub(crate) stats: Stats,
}

impl<S: Store> Dht<S> {
    pub fn new(me: NodeId, config: Config, store: S) -> Dht<S> {
        let seed = store.newest_stamp();
        let ring = Ring::new(&[], config.replication);
        Dht {
            writer: hash64(me.as_bytes()),
            me,
            config,
            store,
            ring,
            clock_ms: 0,
            clock_seed: Some(seed),
            now_ms: 0,
            next_op: 0,
            ops: BTreeMap::new(),
            ae: AntiEntropy::new(),
            stats: Stats::default(),
        }
    }

    /// The members the ring places partitions on (this node included when it is one). Takes effect at once;
    /// anti-entropy then moves entries to their new replicas and hands off what this node no longer owns.
    pub fn set_members(&mut self, members: &[NodeId], now_ms: u64, out: &mut Vec<Output>) {
        self.advance(now_ms);
        self.ring = Ring::new(members, self.config.replication);
        self.ae.membership_changed(&self.ring);
        // Compare with the new replicas at once rather than a full interval later.
        self.ae.next_round_ms = now_ms;
        let _ = out;
    }

    /// The current ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Starts a quorum write of `value` under `key`.
    pub fn put(&mut self, key: &str, value: Vec<u8>, now_ms: u64, out: &mut Vec<Output>) -> OpId {
        self.advance(now_ms);
        let op = self.new_op(now_ms);
        if value.len() > VALUE_BYTES_MAX {
            let what = format!("a value of {} bytes (at most {VALUE_BYTES_MAX})", value.len());
            out.push(Output::Done { op, result: Err(DhtError::TooLarge(what)) });
            return op;
        }
        self.write(op, key, Some(value), now_ms, out);
        op
    }

    /// Starts a quorum delete (a tombstone write).
    pub fn delete(&mut self, key: &str, now_ms: u64, out: &mut Vec<Output>) -> OpId {
        self.advance(now_ms);
        let op = self.new_op(now_ms);
        self.write(op, key, None, now_ms, out);
        op
    }

    /// Starts a quorum read; stale replicas it sees are repaired.
    pub fn get(&mut self, key: &str, now_ms: u64, out: &mut Vec<Output>) -> OpId {
        self.advance(now_ms);
        let op = self.new_op(now_ms);
        let Some((replicas, needed)) = self.admit(op, key, self.config.read_quorum, out) else {
            return op;
        };
        let mut replies = Vec::new();
        for replica in &replicas {
            if *replica == self.me {
                match self.store.get(key) {
                    Ok(entry) => replies.push((self.me.clone(), entry)),
                    Err(error) => {
                        out.push(Output::Done { op, result: Err(DhtError::Store(error.0)) });
                        return op;
                    }
                }
            } else {
                self.send(out, replica, Message::Get { op, key: key.to_string() });
            }
        }
        let pending = Op {
            key: key.to_string(),
            replicas,
            deadline_ms: now_ms.saturating_add(self.config.op_timeout_ms),
            needed,
            kind: OpKind::Read { replies },
        };
        self.ops.insert(op, pending);
        self.try_finish(op, out);
        op
    }

    /// A message from member `from`.
    pub fn handle(&mut self, from: &str, message: Message, now_ms: u64, out: &mut Vec<Output>) {
        self.advance(now_ms);
        match message {
            Message::Put { op, key, entry } => {
                if !self.acceptable(&entry) {
                    return;
                }
                self.observe(entry.version);
                let version = entry.version;
                if self.store.put(&key, entry).is_ok() {
                    self.ae.entry_changed(&key);
                    self.send(out, from, Message::PutAck { op, key, version });
                }
            }
            Message::PutAck { op, key, version } => self.on_put_ack(from, op, &key, version, out),
            Message::Get { op, key } => {
                if let Ok(entry) = self.store.get(&key) {
                    self.send(out, from, Message::GetReply { op, key, entry });
                }
            }
            Message::GetReply { op, key, entry } => self.on_get_reply(from, op, &key, entry, out),
            Message::Repair { key, entry, read_repair } => {
                if !self.acceptable(&entry) {
                    return;
                }
                self.observe(entry.version);
                if let Ok(true) = self.store.put(&key, entry) {
                    self.ae.entry_changed(&key);
                    if !read_repair {
                        self.stats.anti_entropy_repairs += 1;
                    }
                }
            }
            Message::Digests { digests, reply } => self.on_digests(from, &digests, reply, out),
            Message::VersionsRequest { partition, after } => self.on_versions_request(from, partition, after, out),
            Message::Versions { partition, after, keys, complete } => {
                self.on_versions(from, partition, after.as_deref(), &keys, complete, out)
            }
            Message::Pull { partition, keys } => self.on_pull(from, partition, &keys, out),
        }
    }

    /// Time passes: operations time out, anti-entropy and hand-off run. Call at least every 100 ms.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        self.advance(now_ms);
        let expired: Vec<OpId> =
            self.ops.iter().filter(|(_, op)| op.deadline_ms <= now_ms).map(|(id, _)| *id).collect();
        for op in expired {
            self.ops.remove(&op);
            out.push(Output::Done { op, result: Err(DhtError::Timeout) });
        }
        self.maintenance(now_ms, out);
    }

    pub fn stats(&self) -> Stats {
        let (entries, bytes) = self.store.usage();
        Stats { entries, bytes, under_replicated: self.under_replicated(), ..self.stats.clone() }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The store, for a restart that keeps it (the simulator's crash keeping the disk).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Operations waiting for their quorum.
    pub fn ops_in_flight(&self) -> usize {
        self.ops.len()
    }

    fn advance(&mut self, now_ms: u64) {
        self.now_ms = self.now_ms.max(now_ms);
        if let Some(seed) = self.clock_seed.take() {
            // The newest stamp the store kept from before a restart, so this node's versions keep rising
            // even if its wall clock went back; never more than `STAMP_AHEAD_MAX_MS` past its own clock.
            self.clock_ms = self.clock_ms.max(seed.min(now_ms.saturating_add(STAMP_AHEAD_MAX_MS)));
        }
    }

    /// An entry a replica may store: not stamped further ahead of this node's clock than
    /// `STAMP_AHEAD_MAX_MS` (a peer with a clock far off, or a hostile one, cannot push every clock ahead
    /// and win every later write), and not a tombstone past its time to live (which would come back after
    /// replicas that expired it already forgot it).
    pub(crate) fn acceptable(&self, entry: &Entry) -> bool {
        entry.version.stamp <= self.now_ms.saturating_add(STAMP_AHEAD_MAX_MS) && !self.expired_tombstone(entry)
    }

    pub(crate) fn expired_tombstone(&self, entry: &Entry) -> bool {
        entry.value.is_none() && entry.version.stamp.saturating_add(self.config.tombstone_ttl_ms) <= self.now_ms
    }

    fn new_op(&mut self, now_ms: u64) -> OpId {
        if self.next_op == 0 {
            // Start from the clock so a restarted node's ids do not meet replies to its previous run's.
            self.next_op = now_ms.saturating_mul(1024).max(1);
        }
        let op = self.next_op;
        self.next_op = self.next_op.wrapping_add(1).max(1);
        op
    }

    /// A version above every one this node issued or saw.
    fn next_version(&mut self, now_ms: u64) -> Version {
        self.clock_ms = now_ms.max(self.clock_ms.saturating_add(1));
        Version { stamp: self.clock_ms, writer: self.writer }
    }

    /// Moves the clock up to a version seen; one stamped implausibly far ahead is ignored.
    pub(crate) fn observe(&mut self, version: Version) {
        if version.stamp <= self.now_ms.saturating_add(STAMP_AHEAD_MAX_MS) {
            self.clock_ms = self.clock_ms.max(version.stamp);
        }
    }

    pub(crate) fn send(&self, out: &mut Vec<Output>, to: &str, message: Message) {
        if to != self.me {
            out.push(Output::Send { to: to.to_string(), message });
        }
    }

    /// Checks the key and the load, and picks the replicas and the quorum; `None` after reporting a failure.
    fn admit(&self, op: OpId, key: &str, quorum: usize, out: &mut Vec<Output>) -> Option<(Vec<NodeId>, usize)> {
        let fail = |out: &mut Vec<Output>, error| {
            out.push(Output::Done { op, result: Err(error) });
            None
        };
        if key.len() > KEY_BYTES_MAX {
            return fail(out, DhtError::TooLarge(format!("a key of {} bytes (at most {KEY_BYTES_MAX})", key.len())));
        }
        if self.ops.len() >= OPS_MAX {
            return fail(out, DhtError::Busy);
        }
        let replicas = self.ring.replicas(Ring::partition_of(key));
        if replicas.is_empty() {
            return fail(out, DhtError::Unavailable { members: 0, needed: quorum.max(1) });
        }
        let needed = quorum.clamp(1, replicas.len());
        Some((replicas, needed))
    }

    fn write(&mut self, op: OpId, key: &str, value: Option<Vec<u8>>, now_ms: u64, out: &mut Vec<Output>) {
        let Some((replicas, needed)) = self.admit(op, key, self.config.write_quorum, out) else {
            return;
        };
        let entry = Entry { version: self.next_version(now_ms), value };
        let mut acks = Vec::new();
        for replica in &replicas {
            if *replica == self.me {
                if let Err(error) = self.store.put(key, entry.clone()) {
                    out.push(Output::Done { op, result: Err(DhtError::Store(error.0)) });
                    return;
                }
                self.ae.entry_changed(key);
                acks.push(self.me.clone());
            } else {
                self.send(out, replica, Message::Put { op, key: key.to_string(), entry: entry.clone() });
            }
        }
        let pending = Op {
            key: key.to_string(),
            replicas,
            deadline_ms: now_ms.saturating_add(self.config.op_timeout_ms),
            needed,
            kind: OpKind::Write { version: entry.version, acks },
        };
        self.ops.insert(op, pending);
        self.try_finish(op, out);
    }

    fn on_put_ack(&mut self, from: &str, op: OpId, key: &str, acked: Version, out: &mut Vec<Output>) {
        let Some(pending) = self.ops.get_mut(&op) else { return };
        if pending.key != key || !pending.replicas.iter().any(|r| r == from) {
            return;
        }
        if let OpKind::Write { version, acks } = &mut pending.kind {
            if *version == acked && !acks.iter().any(|a| a == from) {
                acks.push(from.to_string());
            }
        }
        self.try_finish(op, out);
    }

    fn on_get_reply(&mut self, from: &str, op: OpId, key: &str, entry: Option<Entry>, out: &mut Vec<Output>) {
        if let Some(entry) = &entry {
            self.observe(entry.version);
        }
        let Some(pending) = self.ops.get_mut(&op) else { return };
        if pending.key != key || !pending.replicas.iter().any(|r| r == from) {
            return;
        }
        if let OpKind::Read { replies } = &mut pending.kind {
            if !replies.iter().any(|(node, _)| node == from) {
                replies.push((from.to_string(), entry));
            }
        }
        self.try_finish(op, out);
    }

    /// Finishes `op` if its quorum is complete.
    fn try_finish(&mut self, op: OpId, out: &mut Vec<Output>) {
        let complete = match self.ops.get(&op) {
            Some(Op { needed, kind: OpKind::Write { acks, .. }, .. }) => acks.len() >= *needed,
            Some(Op { needed, kind: OpKind::Read { replies }, .. }) => replies.len() >= *needed,
            None => false,
        };
        if !complete {
            return;
        }
        let Some(done) = self.ops.remove(&op) else { return };
        match done.kind {
            OpKind::Write { .. } => out.push(Output::Done { op, result: Ok(None) }),
            OpKind::Read { replies } => {
                let newest = replies.iter().filter_map(|(_, entry)| entry.as_ref()).max_by_key(|e| e.version).cloned();
                if let (Some(newest), true) = (&newest, self.config.read_repair) {
                    self.read_repair(&done.key, newest, &replies, out);
                }
                out.push(Output::Done { op, result: Ok(newest.and_then(|entry| entry.value)) });
            }
        }
    }

    /// Sends the newest entry to every replica whose reply was older.
    fn read_repair(&mut self, key: &str, newest: &Entry, replies: &[(NodeId, Option<Entry>)], out: &mut Vec<Output>) {
        for (node, entry) in replies {
            if entry.as_ref().is_some_and(|entry| entry.version >= newest.version) {
                continue;
            }
            self.stats.read_repairs += 1;
            if *node == self.me {
                if let Ok(true) = self.store.put(key, newest.clone()) {
                    self.ae.entry_changed(key);
                }
            } else {
                let message = Message::Repair { key: key.to_string(), entry: newest.clone(), read_repair: true };
                self.send(out, node, message);
            }
        }
    }
}
