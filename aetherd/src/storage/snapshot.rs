//! The snapshot file: `snapshot` = `AETHSNAP | next_slot u64 | len u64 | crc32 u32 | bytes`, replaced by
//! write-to-temp, fsync, rename, fsync of the folder.
//!
//! Invariants: one writer at a time (the lock in [`SnapshotFile`] is held from the temporary file to the
//! folder sync, whichever thread writes), and a snapshot is renamed into place only if it is newer than
//! the one already there: a slow writer of an older snapshot can never replace a newer one.

use super::StorageError;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 8] = b"AETHSNAP";
const NAME: &str = "snapshot";
pub(super) const TEMP_PREFIX: &str = "snapshot.tmp";

/// The folder's snapshot file, shared by every writer; remembers the slot of the one on disk.
#[derive(Clone)]
pub(super) struct SnapshotFile {
    dir: PathBuf,
    on_disk: Arc<Mutex<Option<u64>>>,
}

impl SnapshotFile {
    pub(super) fn new(dir: &Path, on_disk: Option<u64>) -> SnapshotFile {
        SnapshotFile { dir: dir.to_path_buf(), on_disk: Arc::new(Mutex::new(on_disk)) }
    }

    /// Writes a snapshot for `next_slot` durably; `Ok(false)`: a snapshot at or past it is already on disk
    /// and this one is dropped.
    pub(super) fn write(&self, next_slot: u64, bytes: &[u8]) -> Result<bool, StorageError> {
        let mut on_disk = self.on_disk.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if on_disk.is_some_and(|slot| slot >= next_slot) {
            return Ok(false);
        }
        let tmp = self.dir.join(format!("{TEMP_PREFIX}-{next_slot}"));
        let written = (|| {
            let mut file = File::create(&tmp)?;
            file.write_all(MAGIC)?;
            file.write_all(&next_slot.to_le_bytes())?;
            file.write_all(&(bytes.len() as u64).to_le_bytes())?;
            file.write_all(&crc32fast::hash(bytes).to_le_bytes())?;
            file.write_all(bytes)?;
            file.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(StorageError::new("cannot write the snapshot", &tmp, e));
        }
        let path = self.dir.join(NAME);
        fs::rename(&tmp, &path).map_err(|e| StorageError::new("cannot rename the snapshot to", &path, e))?;
        super::sync_dir(&self.dir)?;
        *on_disk = Some(next_slot);
        Ok(true)
    }
}

/// The snapshot on disk, if any.
pub(super) fn read(dir: &Path) -> Result<Option<(u64, Vec<u8>)>, StorageError> {
    let path = dir.join(NAME);
    let mut data = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut data).map_err(|e| StorageError::new("cannot read", &path, e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::new("cannot open", &path, e)),
    };
    let corrupt = |why: &str| {
        StorageError::corrupt(format!(
            "{} is corrupt ({why}); refusing to start (move the node's data directory away and start it empty: \
             it rejoins recovering and rebuilds from its peers)",
            path.display()
        ))
    };
    if data.len() < 28 || &data[..8] != MAGIC {
        return Err(corrupt("bad header"));
    }
    let next_slot = u64::from_le_bytes(data[8..16].try_into().map_err(|_| corrupt("header"))?);
    let len = u64::from_le_bytes(data[16..24].try_into().map_err(|_| corrupt("header"))?) as usize;
    let crc = u32::from_le_bytes(data[24..28].try_into().map_err(|_| corrupt("header"))?);
    let body = data.get(28..).filter(|b| b.len() == len).ok_or_else(|| corrupt("length"))?;
    if crc32fast::hash(body) != crc {
        return Err(corrupt("checksum"));
    }
    Ok(Some((next_slot, body.to_vec())))
}

/// Removes temporary files a crash left behind.
pub(super) fn remove_temporaries(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for entry in entries.filter_map(Result::ok) {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(TEMP_PREFIX)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}
