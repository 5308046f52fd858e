//! One replica's DHT state machine: coordinates the quorum operations this node starts, answers its peers,
//! and runs anti-entropy and hand-off on `tick`.

use crate::message::Message;
use crate::store::Store;
use crate::NodeId;

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
    /// Partitions this replica holds for which fewer than `replication` members are known to hold the same
    /// digest (as of the last anti-entropy round).
    pub under_replicated: usize,
    pub read_repairs: u64,
    pub anti_entropy_repairs: u64,
    pub handed_off: u64,
    pub corrupt_dropped: u64,
}

/// One replica.
pub struct Dht<S: Store> {
    me: NodeId,
    config: Config,
    store: S,
}

impl<S: Store> Dht<S> {
    pub fn new(me: NodeId, config: Config, store: S) -> Dht<S> {
        Dht { me, config, store }
    }

    /// The members the ring places partitions on (this node included when it is one). Takes effect at once;
    /// anti-entropy then moves entries to their new replicas and hands off what this node no longer owns.
    pub fn set_members(&mut self, members: &[NodeId], now_ms: u64, out: &mut Vec<Output>) {
        let _ = (members, now_ms, out, &self.me, &self.config);
        unimplemented!("membership")
    }

    /// Starts a quorum write of `value` under `key`.
    pub fn put(&mut self, key: &str, value: Vec<u8>, now_ms: u64, out: &mut Vec<Output>) -> OpId {
        let _ = (key, value, now_ms, out);
        unimplemented!("put")
    }

    /// Starts a quorum delete (a tombstone write).
    pub fn delete(&mut self, key: &str, now_ms: u64, out: &mut Vec<Output>) -> OpId {
        let _ = (key, now_ms, out);
        unimplemented!("delete")
    }

    /// Starts a quorum read; stale replicas it sees are repaired.
    pub fn get(&mut self, key: &str, now_ms: u64, out: &mut Vec<Output>) -> OpId {
        let _ = (key, now_ms, out);
        unimplemented!("get")
    }

    /// A message from member `from`.
    pub fn handle(&mut self, from: &str, message: Message, now_ms: u64, out: &mut Vec<Output>) {
        let _ = (from, message, now_ms, out);
        unimplemented!("handle")
    }

    /// Time passes: operations time out, anti-entropy and hand-off run. Call at least every 100 ms.
    pub fn tick(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let _ = (now_ms, out);
        unimplemented!("tick")
    }

    pub fn stats(&self) -> Stats {
        Stats::default()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }
}
