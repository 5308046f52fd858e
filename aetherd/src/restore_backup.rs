//! `aetherd --restore FILE`: starting a new cluster from a backup (`POST /api/backup`).
//!
//! Every node of the new cluster is started with the same file on an empty data directory. Each checks the
//! file (format, length, SHA-256, then kvstore's own snapshot checks), and writes the store as its consensus
//! snapshot at slot 0 before the replica starts. The store keeps its entries and revision but forgets the
//! old cluster's applied slot: the new log counts from slot 0.
//!
//! Invariants: a data directory with any consensus log (snapshot or record) is refused, so a restore never
//! overwrites a cluster's history; the snapshot is on disk (synced) before the node votes, so a restart
//! after the restore starts from the restored state; every node that restored the same file holds the same
//! state at slot 0, which is what `Replica::fresh` assumes of a new cluster.

use crate::storage::{Recovered, Storage};
use consensus::{Slot, SnapshotRecord};
use log::info;
use std::io::Read;
use std::path::Path;

/// A checked backup, its store ready to seed a new log.
pub struct Seed {
    /// The slot the backup was taken at in the old cluster (for the log line only).
    pub slot: u64,
    pub sha256: [u8; 32],
    /// kvstore snapshot bytes, with no applied slot.
    pub store: Vec<u8>,
    pub entries: usize,
}

/// Reads and checks the backup file at `path`.
pub fn read(path: &Path) -> Result<Seed, String> {
    let limit = mgmt::backup::BACKUP_BYTES_MAX as u64;
    // A FIFO, a device or a directory would block or never end: only a regular file, of at most the largest
    // backup a node writes, is read.
    let meta = std::fs::metadata(path).map_err(|e| format!("--restore {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("--restore {}: not a regular file", path.display()));
    }
    if meta.len() > limit {
        return Err(format!(
            "--restore {}: {} bytes, over the largest backup ({limit} bytes)",
            path.display(),
            meta.len()
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| format!("--restore {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit + 1).read_to_end(&mut bytes).map_err(|e| format!("--restore {}: {e}", path.display()))?;
    let backup = mgmt::backup::decode(&bytes).map_err(|e| format!("--restore {}: {e}", path.display()))?;
    drop(bytes);
    let mut state = kvstore::snapshot::decode(&backup.store)
        .map_err(|e| format!("--restore {}: the store in the backup does not restore: {e}", path.display()))?
        .without_applied_slot();
    // The old cluster's roster and node lifecycles are not the new one's: the new cluster's members are its
    // config's peers, each on duty once it has caught up.
    let per_cluster: Vec<kvstore::AetherKey> = state
        .list("nodes/")
        .map(|e| e.key().clone())
        .filter(|k| matches!(k, kvstore::AetherKey::ClusterMembers | kvstore::AetherKey::NodeLifecycle { .. }))
        .collect();
    for key in per_cluster {
        let _ = state.apply_command(kvstore::Command::Remove { key }, &mut |_| {});
    }
    let entries = state.len();
    let store = kvstore::snapshot::encode(&state).map_err(|e| format!("--restore {}: {e}", path.display()))?;
    Ok(Seed { slot: backup.slot, sha256: backup.sha256, store, entries })
}

/// Writes `seed` as the consensus snapshot at slot 0 of an empty log; refuses a log that has anything.
/// `members` is the new cluster's membership at slot 0.
pub fn seed(
    storage: &mut Storage,
    recovered: &mut Recovered,
    data_dir: &Path,
    seed: Seed,
    members: consensus::Members,
) -> Result<(), String> {
    if recovered.snapshot.is_some() || !recovered.records.is_empty() {
        return Err(format!(
            "--restore: {} already holds a consensus log; a restore starts a new cluster, so give every node of \
             it an empty data directory (and start it without --restore once it has run)",
            data_dir.display()
        ));
    }
    let record = SnapshotRecord { next_slot: Slot(0), sessions: Vec::new(), members, state: seed.store };
    let bytes = wire::encode(&record);
    storage.snapshot_now(0, &bytes).map_err(|e| format!("--restore: cannot write the restored snapshot: {e}"))?;
    info!(
        "restored {} entries from a backup taken at slot {} (SHA-256 {}): this node starts a new log from them",
        seed.entries,
        seed.slot,
        mgmt::backup::hex(&seed.sha256)
    );
    recovered.snapshot = Some((0, bytes));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("aether-restore-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn backup_file(dir: &Path) -> std::path::PathBuf {
        let mut store = kvstore::Store::default();
        let put = kvstore::Command::Put { key: kvstore::AetherKey::parse("user/a").unwrap(), value: b"1".to_vec() };
        store.apply(41, [put.encode().unwrap()]).unwrap();
        let path = dir.join("kv.backup");
        std::fs::write(&path, mgmt::backup::encode(41, &store.snapshot().unwrap())).unwrap();
        path
    }

    #[test]
    fn a_restore_seeds_an_empty_log_at_slot_0_and_refuses_one_with_history() {
        let dir = temp_dir("seed");
        let file = backup_file(&dir);
        let data = dir.join("node");
        let (mut storage, mut recovered) = Storage::open(&data).unwrap();
        seed(&mut storage, &mut recovered, &data, read(&file).unwrap(), consensus::Members::first(3)).unwrap();
        let (_, bytes) = recovered.snapshot.clone().unwrap();
        let record: SnapshotRecord = wire::decode(&bytes).unwrap();
        let state = kvstore::snapshot::decode(&record.state).unwrap();
        assert_eq!((record.next_slot, state.applied_slot(), state.len()), (Slot(0), None, 1));
        storage.close();
        let (mut storage, mut recovered) = Storage::open(&data).unwrap();
        assert_eq!(recovered.snapshot.as_ref().map(|s| s.0), Some(0), "the seed is on disk");
        let refused =
            seed(&mut storage, &mut recovered, &data, read(&file).unwrap(), consensus::Members::first(3)).unwrap_err();
        assert!(refused.contains("already holds a consensus log"), "{refused}");
    }

    #[test]
    fn a_damaged_backup_is_refused_before_anything_is_written() {
        let dir = temp_dir("damaged");
        let file = backup_file(&dir);
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&file, &bytes).unwrap();
        assert!(read(&file).err().unwrap().contains("SHA-256 mismatch"));
        assert!(read(&dir.join("absent")).is_err());
    }

    #[test]
    fn only_a_regular_file_within_the_size_bound_is_read() {
        let dir = temp_dir("irregular");
        assert!(read(&dir).err().unwrap().contains("not a regular file"));
        assert!(read(Path::new("/dev/zero")).err().unwrap().contains("not a regular file"));
        let huge = dir.join("huge");
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(mgmt::backup::BACKUP_BYTES_MAX as u64 + 1).unwrap();
        assert!(read(&huge).err().unwrap().contains("over the largest backup"));
    }
}
