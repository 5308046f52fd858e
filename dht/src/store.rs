//! What a replica keeps: entries keyed by string, each with a `Version`; a tombstone is an entry without a
//! value. `Store` is the interface the core writes through; `MemStore` keeps everything in memory (the
//! simulator, tests); the node's disk store lives beside it.
//!
//! Digests: a partition's digest is the XOR of `entry_digest(key, version)` over its entries, so it is
//! independent of insertion order and maintained incrementally on every put and remove. Every `Store`
//! implementation must use `entry_digest`, because replicas compare digests across implementations.

use std::collections::BTreeMap;

use rkyv::{Archive, Deserialize, Serialize};

use crate::ring::{hash64, Ring};
use crate::PARTITIONS;

/// Orders writes of one key: later `stamp` wins, then higher `writer` (a fixed hash of the writer's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Archive, Serialize, Deserialize)]
pub struct Version {
    /// Milliseconds on the writer's clock, raised past any version it has seen for the key.
    pub stamp: u64,
    pub writer: u64,
}

/// A stored entry: a value, or a tombstone (`value: None`) that remembers a delete.
#[derive(Debug, Clone, PartialEq, Eq, Archive, Serialize, Deserialize)]
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

/// One (key, version) pair's contribution to its partition's digest. Never 0 in practice; XOR of these
/// over a partition is the partition's digest.
pub fn entry_digest(key: &str, version: Version) -> u64 {
    let mut bytes = Vec::with_capacity(key.len() + 17);
    bytes.extend_from_slice(key.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&version.stamp.to_le_bytes());
    bytes.extend_from_slice(&version.writer.to_le_bytes());
    hash64(&bytes)
}

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
    /// The newest version stamp held (0 when empty), read once when a replica starts so its clock resumes
    /// past what it wrote before.
    fn newest_stamp(&self) -> u64 {
        let mut newest = 0;
        for partition in self.partitions() {
            let mut after: Option<String> = None;
            loop {
                let page = self.versions(partition, after.as_deref(), 1024);
                newest = page.iter().map(|(_, v)| v.stamp).fold(newest, u64::max);
                match page.last() {
                    Some((key, _)) if page.len() == 1024 => after = Some(key.clone()),
                    _ => break,
                }
            }
        }
        newest
    }
    /// Checks up to `budget` entries' bytes against their checks, dropping the bad ones as `get` does;
    /// returns the dropped keys. The memory store has nothing to check.
    fn scrub(&mut self, budget: usize) -> Vec<String> {
        let _ = budget;
        Vec::new()
    }
}

/// Everything in memory: the entries, a per-partition index of versions in key order, and the digests.
#[derive(Debug, Clone)]
pub struct MemStore {
    entries: BTreeMap<String, Entry>,
    /// For each partition, its keys' versions (mirrors `entries`).
    index: Vec<BTreeMap<String, Version>>,
    digests: Vec<u64>,
    bytes: u64,
}

impl Default for MemStore {
    fn default() -> MemStore {
        MemStore::new()
    }
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            entries: BTreeMap::new(),
            index: vec![BTreeMap::new(); PARTITIONS as usize],
            digests: vec![0; PARTITIONS as usize],
            bytes: 0,
        }
    }

    /// The entry for `key` without cloning it (tests and the simulator's checkers).
    pub fn peek(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    /// Every entry, in key order (tests and the simulator's checkers).
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> + '_ {
        self.entries.iter()
    }

    fn value_len(entry: &Entry) -> u64 {
        entry.value.as_ref().map_or(0, |value| value.len() as u64)
    }
}

impl Store for MemStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        Ok(self.entries.get(key).cloned())
    }

    fn put(&mut self, key: &str, entry: Entry) -> Result<bool, StoreError> {
        let partition = Ring::partition_of(key) as usize;
        if let Some(held) = self.entries.get(key) {
            if held.version >= entry.version {
                return Ok(false);
            }
            self.digests[partition] ^= entry_digest(key, held.version);
            self.bytes -= MemStore::value_len(held);
        }
        self.digests[partition] ^= entry_digest(key, entry.version);
        self.bytes += MemStore::value_len(&entry);
        self.index[partition].insert(key.to_string(), entry.version);
        self.entries.insert(key.to_string(), entry);
        Ok(true)
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        if let Some(held) = self.entries.remove(key) {
            let partition = Ring::partition_of(key) as usize;
            self.digests[partition] ^= entry_digest(key, held.version);
            self.bytes -= MemStore::value_len(&held);
            self.index[partition].remove(key);
        }
        Ok(())
    }

    fn digest(&self, partition: u32) -> u64 {
        self.digests.get(partition as usize).copied().unwrap_or(0)
    }

    fn versions(&self, partition: u32, after: Option<&str>, limit: usize) -> Vec<(String, Version)> {
        let Some(index) = self.index.get(partition as usize) else {
            return Vec::new();
        };
        let range = match after {
            Some(after) => index.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => index.range::<str, _>(..),
        };
        range.take(limit).map(|(key, version)| (key.clone(), *version)).collect()
    }

    fn partitions(&self) -> Vec<u32> {
        (0..PARTITIONS).filter(|p| !self.index[*p as usize].is_empty()).collect()
    }

    fn usage(&self) -> (usize, u64) {
        (self.entries.len(), self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stamp: u64, value: Option<&[u8]>) -> Entry {
        Entry { version: Version { stamp, writer: 7 }, value: value.map(<[u8]>::to_vec) }
    }

    #[test]
    fn entry_digest_is_pinned() {
        // Every store implementation and every release must agree, or replicas never match.
        assert_eq!(entry_digest("k", Version { stamp: 1, writer: 2 }), 0x1c7b_0c45_68a6_5bb6);
    }

    #[test]
    fn newer_wins_and_digest_is_incremental() {
        let mut store = MemStore::new();
        assert!(store.put("a", entry(2, Some(b"two"))).unwrap());
        assert!(!store.put("a", entry(1, Some(b"one"))).unwrap());
        assert!(!store.put("a", entry(2, Some(b"two"))).unwrap());
        assert_eq!(store.get("a").unwrap().unwrap().value.as_deref(), Some(&b"two"[..]));
        assert!(store.put("a", entry(3, None)).unwrap());
        assert_eq!(store.usage(), (1, 0));
        let p = Ring::partition_of("a");
        assert_eq!(store.digest(p), entry_digest("a", Version { stamp: 3, writer: 7 }));

        // The same entries put in another order give the same digests.
        let mut other = MemStore::new();
        let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            store.put(key, entry(i as u64, Some(b"v"))).unwrap();
        }
        other.put("a", entry(3, None)).unwrap();
        for (i, key) in keys.iter().enumerate().rev() {
            other.put(key, entry(i as u64, Some(b"v"))).unwrap();
        }
        for p in 0..PARTITIONS {
            assert_eq!(store.digest(p), other.digest(p));
        }
        assert_eq!(store.partitions(), other.partitions());
        for key in &keys {
            store.remove(key).unwrap();
        }
        store.remove("a").unwrap();
        assert!(store.partitions().is_empty());
        assert!((0..PARTITIONS).all(|p| store.digest(p) == 0));
        assert_eq!(store.usage(), (0, 0));
    }

    #[test]
    fn versions_pages_in_key_order() {
        let mut store = MemStore::new();
        let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        for key in &keys {
            store.put(key, entry(1, Some(b"v"))).unwrap();
        }
        let p = store.partitions()[0];
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.versions(p, after.as_deref(), 2);
            if page.is_empty() {
                break;
            }
            after = page.last().map(|(k, _)| k.clone());
            all.extend(page);
        }
        let mut expected: Vec<String> = keys.iter().filter(|k| Ring::partition_of(k) == p).cloned().collect();
        expected.sort();
        assert_eq!(all.into_iter().map(|(k, _)| k).collect::<Vec<_>>(), expected);
    }
}
