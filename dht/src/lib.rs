//! `dht`: the storage plane's distributed hash table, as a sans-IO core. It owns the ring (partitions,
//! virtual nodes, replica sets), quorum writes and reads with read repair, anti-entropy between the
//! replicas of a partition, re-replication when a member leaves and hand-off when one joins. It never
//! touches a socket, a thread or the clock: the node (`aetherd`) and the simulator (`sim::dht`) feed it
//! messages, membership and time, and carry out the `Output`s it returns.
//!
//! Values are small (at most `VALUE_BYTES_MAX`); a large object is stored by the layer above as chunks of
//! `CHUNK_BYTES` under their own keys, so no frame and no allocation on the loop is ever the object's size.
//!
//! Invariants: a write is acknowledged only once `write_quorum` replicas hold it; concurrent writes of one
//! key resolve by `Version` (last writer wins, ties broken by writer), identically on every replica.

pub mod anti_entropy;
pub mod dht;
pub mod disk;
pub mod message;
pub mod ring;
pub mod store;

pub use dht::{Config, Dht, DhtError, OpId, Output, Stats, STAMP_AHEAD_MAX_MS};
pub use disk::DiskStore;
pub use message::{DecodeError, KeyVersion, Message, PartitionDigest};
pub use ring::{hash64, Ring};
pub use store::{entry_digest, Entry, MemStore, Store, StoreError, Version};

/// A member's id, as the control plane names nodes (`node-1`).
pub type NodeId = String;

/// Partitions of the key space (DESIGN 9).
pub const PARTITIONS: u32 = 1024;
/// Points each member places on the ring.
pub const VIRTUAL_NODES: u32 = 150;
/// The size of one chunk of a large object.
pub const CHUNK_BYTES: usize = 1 << 20;
/// The largest value one key holds: a chunk and a little room for a header.
pub const VALUE_BYTES_MAX: usize = CHUNK_BYTES + 4096;
/// The longest key.
pub const KEY_BYTES_MAX: usize = 512;
