//! The node's store: entries on disk under one folder, an index of (key, version, partition, size, check)
//! in memory, so memory stays bounded by the number of keys, not their bytes, and a restart keeps the data.

use crate::store::{Entry, Store, StoreError, Version};
use std::path::Path;

/// Entries as files under a folder of `data_dir`.
pub struct DiskStore {}

impl DiskStore {
    /// Opens (creating if absent) the store in `dir`, rebuilding the index from what is there.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        let _ = dir;
        unimplemented!("disk store")
    }
}

impl Store for DiskStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        let _ = key;
        unimplemented!("disk store")
    }
    fn put(&mut self, key: &str, entry: Entry) -> Result<bool, StoreError> {
        let _ = (key, entry);
        unimplemented!("disk store")
    }
    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        let _ = key;
        unimplemented!("disk store")
    }
    fn digest(&self, partition: u32) -> u64 {
        let _ = partition;
        unimplemented!("disk store")
    }
    fn versions(&self, partition: u32, after: Option<&str>, limit: usize) -> Vec<(String, Version)> {
        let _ = (partition, after, limit);
        unimplemented!("disk store")
    }
    fn partitions(&self) -> Vec<u32> {
        unimplemented!("disk store")
    }
    fn usage(&self) -> (usize, u64) {
        unimplemented!("disk store")
    }
}
