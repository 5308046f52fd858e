//! Durable replicated state in `{data_dir}/consensus/`: the latest snapshot (`snapshot`) and log segments
//! (`segments`) of records appended since (decided slots, and this node's own votes of the open slot),
//! read back at start by `recovery`, which also keeps the marks that say how far to trust them.
//!
//! Invariants:
//! - Records reach the kernel (`write`) before the event loop acts on them (answers a client or sends a
//!   vote), so a killed process loses nothing it acknowledged; a background thread `fdatasync`s every
//!   `SYNC_INTERVAL` and on stop, bounding what a power loss can take.
//! - Any storage failure (a write, a rotation, a snapshot, a failed `fdatasync` on the disk thread) is
//!   returned to the caller, which must not let the turn's messages leave: the node calls
//!   [`Storage::fail_stop`], which writes the failure mark, logs one line naming the file and the OS
//!   error, and exits with [`EXIT_STORAGE_FAILED`] at once, from inside the turn (the transport writes
//!   sockets only after the turn). A failure on the disk thread is reported by the next `flush`, at the
//!   latest at the end of the next turn. Restarted on the same boot, the node sees the mark and resumes
//!   recovering its vote floor from peers; the mark is cleared only once that is on record in the log.
//! - The failure mark works on a full disk: `failed` is created at open as `FAILED_BYTES` zeros, written
//!   and synced, so its blocks are allocated; failing overwrites its first bytes in place (no new block,
//!   no new directory entry, no rename) and syncs them. (A copy-on-write file system may still need a
//!   block; on ext4 and XFS an in-place overwrite does not.)
//! - A snapshot for `next_slot = S` is written only after a new segment is opened (records from then on
//!   go there), and the segments before it are deleted only after the snapshot is durable. Snapshot
//!   writes, from the disk thread or the loop, take one lock and never replace a newer snapshot on disk.
//!   Recovery replays every segment and skips records below the snapshot, so a crash at any point
//!   recovers a consistent prefix (a gap is seen by `replication::restore`, which then recovers).
//! - A new segment is named by a sequence number past every existing one and its directory entry is
//!   synced; the segment it replaces is synced first, so only the newest written segment can end torn.

mod deferred;
mod recovery;
mod segments;
mod snapshot;
#[cfg(test)]
mod tests;

pub use recovery::Recovered;

use log::error;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
const SYNC_INTERVAL: Duration = Duration::from_millis(10);
/// The exit code of a node stopped by a storage failure (`EX_IOERR`); systemd restarts it.
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// A storage call that failed: what was done, to which file, and the OS error.
#[derive(Debug, Clone)]
pub struct StorageError(String);

impl StorageError {
    fn new(what: &str, path: &Path, error: std::io::Error) -> StorageError {
        StorageError(format!("{what} {}: {error}", path.display()))
    }

    fn corrupt(message: String) -> StorageError {
        StorageError(message)
    }
}

impl std::fmt::Display for StorageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// How segments are synced (a test injects failures).
type SyncFn = fn(&File) -> std::io::Result<()>;

enum SyncJob {
    Segment(File, PathBuf),
    Snapshot { next_slot: u64, bytes: Vec<u8>, obsolete: Vec<PathBuf> },
    Stop,
}

pub struct Storage {
    dir: PathBuf,
    segment: File,
    segment_path: PathBuf,
    sequence: u64,
    segment_bytes: u64,
    pending: Vec<u8>,
    jobs: Sender<SyncJob>,
    syncer: Option<JoinHandle<Result<(), StorageError>>>,
    snapshots: snapshot::SnapshotFile,
    /// The first failure of the disk thread, for the loop to act on.
    failure: Arc<Mutex<Option<StorageError>>>,
    failed_mark: File,
    sync: SyncFn,
    /// A snapshot asked for but whose bytes are not ready yet: its `next_slot` and the sequence of the
    /// segment begun for it (see `deferred`).
    deferred: Option<(u64, u64)>,
}

fn sync_data(file: &File) -> std::io::Result<()> {
    file.sync_data()
}

/// Makes the folder's entries (new files, renames, removals) durable.
fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| StorageError::new("cannot fsync the folder", dir, e))
}

impl Storage {
    /// Opens (creating if needed) the folder, reads back what is there, and starts the sync thread.
    pub fn open(data_dir: &Path) -> Result<(Storage, Recovered), String> {
        Storage::open_with(data_dir, sync_data).map_err(|e| e.to_string())
    }

    fn open_with(data_dir: &Path, sync: SyncFn) -> Result<(Storage, Recovered), StorageError> {
        let dir = data_dir.join("consensus");
        fs::create_dir_all(&dir).map_err(|e| StorageError::new("cannot create", &dir, e))?;
        let (mut recovered, highest) = recovery::recover(&dir)?;
        let has_log = recovered.snapshot.is_some() || !recovered.records.is_empty();
        (recovered.unclean_reboot, recovered.ran_before) = recovery::check_boot(&dir, has_log)?;
        let (failed_stop, failed_mark) = recovery::open_failure_mark(&dir)?;
        recovered.failed_stop = failed_stop;
        let sequence = highest + 1;
        let segment = segments::create_segment(&dir, sequence)?;
        let segment_path = segments::segment_path(&dir, sequence);
        let snapshots = snapshot::SnapshotFile::new(&dir, recovered.snapshot.as_ref().map(|s| s.0));
        let failure = Arc::new(Mutex::new(None));
        let (jobs, rx) = mpsc::channel();
        let clone = segment.try_clone().map_err(|e| StorageError::new("cannot open", &segment_path, e))?;
        let thread = DiskThread { snapshots: snapshots.clone(), failure: failure.clone(), sync };
        let first = (clone, segment_path.clone());
        let syncer = std::thread::Builder::new()
            .name("disk".into())
            .spawn(move || thread.run(first, &rx))
            .map_err(|e| StorageError(format!("cannot start the disk thread: {e}")))?;
        let storage = Storage {
            dir,
            segment,
            segment_path,
            sequence,
            segment_bytes: 0,
            pending: Vec::new(),
            jobs,
            syncer: Some(syncer),
            snapshots,
            failure,
            failed_mark,
            sync,
            deferred: None,
        };
        Ok((storage, recovered))
    }

    /// Queues one record; it reaches the file at the next `flush`.
    pub fn append(&mut self, slot: u64, kind: u8, bytes: &[u8]) {
        segments::encode_record(&mut self.pending, slot, kind, bytes);
    }

    /// Writes queued records to the kernel; also reports a failure of the disk thread since the last call.
    pub fn flush(&mut self) -> Result<(), StorageError> {
        if let Some(e) = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone() {
            return Err(e);
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        self.segment
            .write_all(&self.pending)
            .map_err(|e| StorageError::new("cannot append to", &self.segment_path, e))?;
        self.segment_bytes += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Starts a new segment and hands the snapshot for `next_slot` to the disk thread, which writes it
    /// (unless a newer one is on disk by then) and then deletes the segments before the new one.
    /// (The node begins a snapshot when it asks for it and finishes it when the bytes are ready; see
    /// `deferred`. This is both steps at once.)
    #[cfg(test)]
    pub fn snapshot(&mut self, next_slot: u64, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.begin_snapshot(next_slot)?;
        self.finish_snapshot(next_slot, bytes)
    }

    /// Writes a snapshot on the calling thread, durably, before returning; for snapshots installed from a
    /// peer, whose earlier slots this node never logged (an asynchronous write could leave a gap on disk).
    pub fn snapshot_now(&mut self, next_slot: u64, bytes: &[u8]) -> Result<(), StorageError> {
        let obsolete = self.rotate()?;
        if self.snapshots.write(next_slot, bytes)? {
            remove_all(&self.dir, obsolete)?;
        }
        Ok(())
    }

    /// Opens a new segment when the current one is over its size bound.
    pub fn maybe_rotate(&mut self) -> Result<(), StorageError> {
        if self.segment_bytes >= SEGMENT_BYTES_MAX {
            self.rotate()?;
        }
        Ok(())
    }

    /// Flushes and syncs the current segment, then starts the next one; returns every segment before it.
    fn rotate(&mut self) -> Result<Vec<PathBuf>, StorageError> {
        self.flush()?;
        (self.sync)(&self.segment).map_err(|e| StorageError::new("cannot fdatasync", &self.segment_path, e))?;
        let sequence = self.sequence + 1;
        let segment = segments::create_segment(&self.dir, sequence)?;
        let path = segments::segment_path(&self.dir, sequence);
        let clone = segment.try_clone().map_err(|e| StorageError::new("cannot open", &path, e))?;
        let _ = self.jobs.send(SyncJob::Segment(clone, path.clone()));
        self.segment = segment;
        self.segment_path = path;
        self.sequence = sequence;
        self.segment_bytes = 0;
        Ok(segments::segments(&self.dir)?.into_iter().filter(|(s, _)| *s < sequence).map(|(_, p)| p).collect())
    }

    /// Syncs the log, then clears the failure mark: the records appended so far (the recovery on record)
    /// are durable, so the mark has done its work.
    pub fn clear_failure_mark(&mut self) -> Result<(), StorageError> {
        self.flush()?;
        (self.sync)(&self.segment).map_err(|e| StorageError::new("cannot fdatasync", &self.segment_path, e))?;
        let path = self.dir.join(recovery::FAILED_FILE);
        recovery::clear_failure_mark(&self.failed_mark).map_err(|e| StorageError::new("cannot clear", &path, e))
    }

    /// Stops the node on a storage failure, before anything of the current turn can leave: writes the
    /// failure mark (so a restart distrusts its tail), logs one line and exits with
    /// [`EXIT_STORAGE_FAILED`].
    pub fn fail_stop(&self, failure: &StorageError) -> ! {
        let marked = match recovery::write_failure_mark(&self.failed_mark, &failure.to_string()) {
            Ok(()) => String::new(),
            Err(e) => format!(" (and the failure mark could not be written: {e})"),
        };
        error!(
            "storage failed: {failure}{marked}; stopping now with exit code {EXIT_STORAGE_FAILED}, before this turn's \
             messages leave; free the disk and restart: the node recovers its vote floor from its peers"
        );
        std::process::exit(EXIT_STORAGE_FAILED)
    }

    /// Flushes, syncs and stops the disk thread, then marks the log as cleanly closed.
    pub fn close(mut self) {
        if let Err(e) = self.flush() {
            self.log_unclean(&e);
            return;
        }
        let _ = self.jobs.send(SyncJob::Stop);
        // The mark says "everything is on disk": only a final sync that really succeeded may write it.
        let synced = match self.syncer.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(StorageError("the disk thread panicked".to_string())),
            None => Err(StorageError("the disk thread is gone".to_string())),
        };
        if let Err(e) = synced {
            self.log_unclean(&e);
            return;
        }
        if let Err(e) = recovery::mark_clean(&self.dir) {
            log::warn!("cannot mark the consensus log as cleanly closed: {e}");
        }
    }

    fn log_unclean(&self, failure: &StorageError) {
        let _ = recovery::write_failure_mark(&self.failed_mark, &failure.to_string());
        log::warn!("{failure}; the log is not marked as cleanly closed and the next start recovers");
    }
}

fn remove_all(dir: &Path, paths: Vec<PathBuf>) -> Result<(), StorageError> {
    for path in paths {
        let _ = fs::remove_file(path);
    }
    sync_dir(dir)
}

/// The disk thread: syncs the current segment every interval and writes snapshots handed to it. Its first
/// failure is left in `failure` (the loop's next `flush` returns it) and ends the thread.
struct DiskThread {
    snapshots: snapshot::SnapshotFile,
    failure: Arc<Mutex<Option<StorageError>>>,
    sync: SyncFn,
}

impl DiskThread {
    fn run(self, first: (File, PathBuf), jobs: &mpsc::Receiver<SyncJob>) -> Result<(), StorageError> {
        let result = self.serve(first, jobs);
        if let Err(e) = &result {
            *self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(e.clone());
        }
        result
    }

    fn serve(&self, first: (File, PathBuf), jobs: &mpsc::Receiver<SyncJob>) -> Result<(), StorageError> {
        let (mut segment, mut path) = first;
        loop {
            match jobs.recv_timeout(SYNC_INTERVAL) {
                // The loop synced the segment it left before opening the next one.
                Ok(SyncJob::Segment(next, next_path)) => (segment, path) = (next, next_path),
                Ok(SyncJob::Snapshot { next_slot, bytes, obsolete }) => {
                    if self.snapshots.write(next_slot, &bytes)? {
                        let dir = path.parent().unwrap_or(Path::new("."));
                        remove_all(dir, obsolete)?;
                    }
                }
                Ok(SyncJob::Stop) | Err(RecvTimeoutError::Disconnected) => {
                    return (self.sync)(&segment).map_err(|e| StorageError::new("cannot fdatasync", &path, e));
                }
                Err(RecvTimeoutError::Timeout) => {
                    (self.sync)(&segment).map_err(|e| StorageError::new("cannot fdatasync", &path, e))?;
                }
            }
        }
    }
}
