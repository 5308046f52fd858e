//! Snapshots whose bytes arrive later than the point they describe (the store is serialised off the event
//! loop): the segment the snapshot will start from is opened when it is asked for, and the bytes are
//! handed to the disk thread when they are ready.
//!
//! Invariant kept: a snapshot for `next_slot = S` is written only after a segment was begun for it
//! ([`Storage::begin_snapshot`], before any record of a slot at or past S), and it makes obsolete only the
//! segments before that one, which hold only records below S, however many records were appended while
//! the bytes were being produced. One snapshot is outstanding at a time; bytes for any other slot than the
//! one begun are dropped (the next periodic snapshot covers them).

use super::{segments, Storage, StorageError, SyncJob};

impl Storage {
    /// Opens a new segment now, for a snapshot of the state below `next_slot` whose bytes come later
    /// through [`Storage::finish_snapshot`].
    pub fn begin_snapshot(&mut self, next_slot: u64) -> Result<(), StorageError> {
        self.rotate()?;
        self.deferred = Some((next_slot, self.sequence));
        Ok(())
    }

    /// Hands the bytes of a snapshot begun with [`Storage::begin_snapshot`] to the disk thread, which
    /// writes them (unless a newer snapshot is on disk by then) and then deletes the segments before the
    /// one begun for it.
    pub fn finish_snapshot(&mut self, next_slot: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.flush()?;
        let Some((begun_slot, sequence)) = self.deferred.take() else {
            log::warn!("snapshot bytes for slot {next_slot} arrived with no snapshot begun; not written");
            return Ok(());
        };
        if begun_slot != next_slot {
            log::warn!("snapshot bytes for slot {next_slot} arrived while slot {begun_slot} was begun; not written");
            return Ok(());
        }
        let obsolete = segments::segments(&self.dir)?.into_iter().filter(|(s, _)| *s < sequence).map(|(_, p)| p);
        let _ = self.jobs.send(SyncJob::Snapshot { next_slot, bytes, obsolete: obsolete.collect() });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn records_appended_while_the_snapshot_bytes_were_produced_survive_it() {
        let dir = std::env::temp_dir().join(format!("aether-storage-deferred-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (mut s, _) = Storage::open(&dir).unwrap();
        for slot in 0..10 {
            s.append(slot, 1, b"x");
        }
        s.begin_snapshot(10).unwrap();
        for slot in 10..15 {
            s.append(slot, 1, b"y");
        }
        s.finish_snapshot(10, b"state".to_vec()).unwrap();
        s.close();
        let (_, recovered) = Storage::open(&dir).unwrap();
        assert_eq!(recovered.snapshot, Some((10, b"state".to_vec())));
        let slots: Vec<u64> = recovered.records.iter().map(|r| r.slot).collect();
        assert_eq!(slots, (10..15).collect::<Vec<_>>(), "nothing at or past the snapshot was dropped");
        let _ = fs::remove_dir_all(&dir);
    }
}
