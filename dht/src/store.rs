//! What a replica keeps: entries keyed by string, each with a `Version`; a tombstone is an entry without a
//! value. `Store` is the interface the core writes through; `MemStore` keeps everything in memory (the
//! simulator, tests); the node's disk store lives beside it.

/// Orders writes of one key: later `stamp` wins, then higher `writer` (a fixed hash of the writer's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// Milliseconds on the writer's clock, raised past any version it has seen for the key.
    pub stamp: u64,
    pub writer: u64,
}

/// A stored entry: a value, or a tombstone (`value: None`) that remembers a delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub version: Version,
    pub value: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// A replica's entries. Implementations keep an index of (key, version, partition) in memory and may keep
/// values elsewhere (the disk store); every method is bounded in the work it does.
pub trait Store {
    /// The entry for `key`. An entry whose bytes fail their check is dropped from the index (so the
    /// partition's digest changes and anti-entropy fetches it again) and read as absent.
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError>;
    /// Stores `entry` if it is newer than what the store holds; `Ok(true)` if it changed anything.
    fn put(&mut self, key: &str, entry: Entry) -> Result<bool, StoreError>;
    /// Forgets `key` (hand-off done, tombstone expired).
    fn remove(&mut self, key: &str) -> Result<(), StoreError>;
    /// An order-independent digest of the (key, version) pairs in `partition`; 0 when it is empty.
    fn digest(&self, partition: u32) -> u64;
    /// Up to `limit` (key, version) pairs of `partition` with keys after `after`, in key order.
    fn versions(&self, partition: u32, after: Option<&str>, limit: usize) -> Vec<(String, Version)>;
    /// The partitions that hold at least one entry.
    fn partitions(&self) -> Vec<u32>;
    /// Entries held, and the bytes of their values.
    fn usage(&self) -> (usize, u64);
    /// Checks up to `budget` entries' bytes against their checks, dropping the bad ones as `get` does;
    /// returns the dropped keys. The memory store has nothing to check.
    fn scrub(&mut self, budget: usize) -> Vec<String> {
        let _ = budget;
        Vec::new()
    }
}

/// Everything in memory.
#[derive(Debug, Default, Clone)]
pub struct MemStore {}
