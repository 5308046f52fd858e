//! Durable replicated state in `{data_dir}/consensus/`: the latest snapshot and log segments of records
//! appended since (decided slots, and this node's own votes of the open slot).
//!
//! Files: `snapshot` (`AETHSNAP | next_slot u64 | len u64 | crc32 u32 | bytes`, replaced atomically by
//! write-to-temp, fsync, rename, fsync of the folder) and `log-{first slot, 20 digits}` segments of records
//! `len u32 | crc32 u32 | slot u64 | kind u8 | bytes` (crc over slot, kind and bytes; little endian).
//!
//! Invariants:
//! - Records reach the kernel (`write`) before the event loop acts on them (answers a client or sends a
//!   vote), so a killed process loses nothing it acknowledged; a background thread `fdatasync`s every
//!   `SYNC_INTERVAL` and on stop, bounding what a power loss can take.
//! - A snapshot for `next_slot = S` is written only after a new segment starting at S is opened, and old
//!   segments are deleted only after the snapshot is durable; recovery replays every segment and skips
//!   records below the snapshot, so a crash at any point recovers a consistent prefix.
//! - A torn record at the end of the last segment (a crash mid-write) is cut off with a warning; a bad
//!   record anywhere else is corruption and recovery refuses to go on.

mod deferred;

use log::{info, warn};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

const SNAPSHOT_MAGIC: &[u8; 8] = b"AETHSNAP";
const RECORD_HEADER: usize = 4 + 4;
const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;
const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024;
const SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// One record read back at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub slot: u64,
    pub kind: u8,
    pub bytes: Vec<u8>,
}

/// What was on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Records at or above the snapshot's slot, in the order they were appended.
    pub records: Vec<Record>,
    /// The machine rebooted since the log was last written and the node did not stop cleanly before: the
    /// records written in the last moments (not yet synced) may be gone, own votes included.
    pub unclean_reboot: bool,
}

enum SyncJob {
    Segment(File),
    Snapshot { next_slot: u64, bytes: Vec<u8>, obsolete: Vec<PathBuf> },
    Stop,
}

pub struct Storage {
    dir: PathBuf,
    segment: File,
    segment_start: u64,
    segment_bytes: u64,
    pending: Vec<u8>,
    jobs: Sender<SyncJob>,
    syncer: Option<JoinHandle<std::io::Result<()>>>,
}

impl Storage {
    /// Opens (creating if needed) the folder, reads back what is there, and starts the sync thread.
    pub fn open(data_dir: &Path) -> Result<(Storage, Recovered), String> {
        let dir = data_dir.join("consensus");
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let mut recovered = recover(&dir)?;
        recovered.unclean_reboot = check_boot(&dir, recovered.snapshot.is_some() || !recovered.records.is_empty())?;
        let next_start =
            recovered.records.last().map_or_else(|| recovered.snapshot.as_ref().map_or(0, |s| s.0), |r| r.slot);
        let (segment, path) = open_segment(&dir, next_start)?;
        let (jobs, rx) = mpsc::channel();
        let sync_dir = dir.clone();
        let clone = segment.try_clone().map_err(|e| format!("{}: {e}", path.display()))?;
        let syncer = std::thread::Builder::new()
            .name("disk".into())
            .spawn(move || sync_loop(&sync_dir, clone, &rx))
            .map_err(|e| format!("cannot start the disk thread: {e}"))?;
        let storage = Storage {
            dir,
            segment,
            segment_start: next_start,
            segment_bytes: 0,
            pending: Vec::new(),
            jobs,
            syncer: Some(syncer),
        };
        Ok((storage, recovered))
    }

    /// Queues one record; it reaches the file at the next `flush`.
    pub fn append(&mut self, slot: u64, kind: u8, bytes: &[u8]) {
        let mut body = Vec::with_capacity(9 + bytes.len());
        body.extend_from_slice(&slot.to_le_bytes());
        body.push(kind);
        body.extend_from_slice(bytes);
        self.pending.extend_from_slice(&(body.len() as u32).to_le_bytes());
        self.pending.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        self.pending.extend_from_slice(&body);
    }

    /// Writes queued records to the kernel. A failure here is fatal for the node's durability promise.
    pub fn flush(&mut self) -> Result<(), String> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.segment.write_all(&self.pending).map_err(|e| format!("cannot append to the consensus log: {e}"))?;
        self.segment_bytes += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    /// Starts a new segment at `next_slot` and hands the snapshot to the disk thread, which writes it and
    /// then deletes the segments it makes obsolete.
    #[cfg_attr(not(test), allow(dead_code))] // the loop uses `begin_snapshot` / `finish_snapshot`
    pub fn snapshot(&mut self, next_slot: u64, bytes: Vec<u8>) -> Result<(), String> {
        self.flush()?;
        let obsolete = self.segments_before(next_slot)?;
        self.rotate(next_slot)?;
        let _ = self.jobs.send(SyncJob::Snapshot { next_slot, bytes, obsolete });
        Ok(())
    }

    /// Writes a snapshot on the calling thread, durably, before returning; for snapshots installed from a
    /// peer, whose earlier slots this node never logged (an asynchronous write could leave a gap on disk).
    pub fn snapshot_now(&mut self, next_slot: u64, bytes: &[u8]) -> Result<(), String> {
        self.flush()?;
        let obsolete = self.segments_before(next_slot)?;
        self.rotate(next_slot)?;
        write_snapshot(&self.dir, next_slot, bytes).map_err(|e| format!("snapshot at slot {next_slot}: {e}"))?;
        for path in obsolete {
            let _ = fs::remove_file(path);
        }
        Ok(())
    }

    /// Segments holding only records below `next_slot` (a segment is named by its first slot, and every
    /// record written before a snapshot at `next_slot` is below it).
    fn segments_before(&self, next_slot: u64) -> Result<Vec<PathBuf>, String> {
        Ok(segments(&self.dir)?.into_iter().filter(|(start, _)| *start < next_slot).map(|(_, p)| p).collect())
    }

    /// Opens a new segment when the current one is over its size bound.
    pub fn maybe_rotate(&mut self, next_slot: u64) -> Result<(), String> {
        if self.segment_bytes >= SEGMENT_BYTES_MAX {
            self.flush()?;
            self.rotate(next_slot)?;
        }
        Ok(())
    }

    fn rotate(&mut self, start: u64) -> Result<(), String> {
        if self.segment_start == start {
            return Ok(());
        }
        self.segment_start = start;
        let (segment, path) = open_segment(&self.dir, start)?;
        let clone = segment.try_clone().map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = self.jobs.send(SyncJob::Segment(clone));
        self.segment = segment;
        self.segment_bytes = 0;
        Ok(())
    }

    /// Flushes, syncs and stops the disk thread, then marks the log as cleanly closed.
    pub fn close(mut self) {
        if let Err(e) = self.flush() {
            warn!("{e}");
            return;
        }
        let _ = self.jobs.send(SyncJob::Stop);
        // The mark says "everything is on disk": only a final sync that really succeeded may write it.
        let synced = match self.syncer.take().map(JoinHandle::join) {
            Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(format!("the final fdatasync of the consensus log failed: {e}")),
            Some(Err(_)) => Err("the disk thread panicked".to_string()),
            None => Err("the disk thread is gone".to_string()),
        };
        if let Err(reason) = synced {
            warn!("{reason}; the log is not marked as cleanly closed");
            return;
        }
        if let Err(e) = write_synced(&self.dir, CLEAN_FILE, boot_id().as_bytes()) {
            warn!("cannot mark the consensus log as cleanly closed: {e}");
        }
    }
}

/// Syncs the current segment every interval until told to stop; returns the result of the final sync.
fn sync_loop(dir: &Path, mut segment: File, jobs: &mpsc::Receiver<SyncJob>) -> std::io::Result<()> {
    loop {
        match jobs.recv_timeout(SYNC_INTERVAL) {
            Ok(SyncJob::Segment(next)) => {
                let _ = segment.sync_data();
                segment = next;
            }
            Ok(SyncJob::Snapshot { next_slot, bytes, obsolete }) => match write_snapshot(dir, next_slot, &bytes) {
                Ok(()) => {
                    for path in obsolete {
                        let _ = fs::remove_file(path);
                    }
                }
                Err(e) => warn!("snapshot at slot {next_slot} not written: {e}"),
            },
            Ok(SyncJob::Stop) | Err(RecvTimeoutError::Disconnected) => return segment.sync_data(),
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = segment.sync_data() {
                    warn!("fdatasync of the consensus log failed: {e}");
                }
            }
        }
    }
}

const BOOT_FILE: &str = "boot_id";
const CLEAN_FILE: &str = "clean";

/// This boot of the machine (Linux); empty where the kernel does not say.
fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Whether the log may have lost unsynced records to a reboot: it was last written during another boot and
/// not closed cleanly. Then records this boot as the log's and clears the clean mark.
fn check_boot(dir: &Path, has_log: bool) -> Result<bool, String> {
    let stored = fs::read_to_string(dir.join(BOOT_FILE)).map(|s| s.trim().to_string()).ok();
    let clean = dir.join(CLEAN_FILE).exists();
    let current = boot_id();
    let rebooted = stored.is_some_and(|s| !s.is_empty() && !current.is_empty() && s != current);
    let unclean = has_log && rebooted && !clean;
    if unclean {
        warn!("the machine rebooted since the consensus log was last written and the node did not stop cleanly");
    }
    write_synced(dir, BOOT_FILE, current.as_bytes()).map_err(|e| format!("{}: {e}", dir.join(BOOT_FILE).display()))?;
    if clean {
        fs::remove_file(dir.join(CLEAN_FILE)).map_err(|e| format!("{}: {e}", dir.join(CLEAN_FILE).display()))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(unclean)
}

/// Replaces `dir/name` atomically and durably.
fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

fn write_snapshot(dir: &Path, next_slot: u64, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join("snapshot.tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(SNAPSHOT_MAGIC)?;
    file.write_all(&next_slot.to_le_bytes())?;
    file.write_all(&(bytes.len() as u64).to_le_bytes())?;
    file.write_all(&crc32fast::hash(bytes).to_le_bytes())?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, dir.join("snapshot"))?;
    File::open(dir)?.sync_all()
}

fn read_snapshot(dir: &Path) -> Result<Option<(u64, Vec<u8>)>, String> {
    let path = dir.join("snapshot");
    let mut data = Vec::new();
    match File::open(&path) {
        Ok(mut f) => f.read_to_end(&mut data).map_err(|e| format!("{}: {e}", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let corrupt = |why: &str| format!("{} is corrupt ({why}); move it away to rebuild from peers", path.display());
    if data.len() < 28 || &data[..8] != SNAPSHOT_MAGIC {
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

fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let entries = fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let start = name.strip_prefix("log-")?.parse().ok()?;
            Some((start, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn open_segment(dir: &Path, start: u64) -> Result<(File, PathBuf), String> {
    let path = dir.join(format!("log-{start:020}"));
    let file =
        OpenOptions::new().create(true).append(true).open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((file, path))
}

fn recover(dir: &Path) -> Result<Recovered, String> {
    let snapshot = read_snapshot(dir)?;
    let floor = snapshot.as_ref().map_or(0, |s| s.0);
    let all = segments(dir)?;
    let mut records = Vec::new();
    for (i, (_, path)) in all.iter().enumerate() {
        let last = i + 1 == all.len();
        read_segment(path, last, &mut |r| {
            if r.slot >= floor {
                records.push(r);
            }
        })?;
    }
    if snapshot.is_some() || !records.is_empty() {
        let from =
            if snapshot.is_some() { format!("a snapshot at slot {floor} and") } else { "no snapshot,".to_string() };
        info!("recovered from disk: {from} {} log records", records.len());
    }
    Ok(Recovered { snapshot, records, unclean_reboot: false })
}

fn read_segment(path: &Path, last: bool, sink: &mut dyn FnMut(Record)) -> Result<(), String> {
    let data = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut at = 0;
    while at < data.len() {
        match parse_record(&data[at..]) {
            Some((record, used)) => {
                sink(record);
                at += used;
            }
            None if last => {
                warn!("{}: cutting a torn record at byte {at} (a crash mid-write)", path.display());
                let file = OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                file.set_len(at as u64).map_err(|e| format!("{}: {e}", path.display()))?;
                return Ok(());
            }
            None => return Err(format!("{}: corrupt record at byte {at}", path.display())),
        }
    }
    Ok(())
}

fn parse_record(data: &[u8]) -> Option<(Record, usize)> {
    let len = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?);
    if !(9..=RECORD_BYTES_MAX).contains(&len) {
        return None;
    }
    let body = data.get(RECORD_HEADER..RECORD_HEADER + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    let slot = u64::from_le_bytes(body[0..8].try_into().ok()?);
    Some((Record { slot, kind: body[8], bytes: body[9..].to_vec() }, RECORD_HEADER + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("aether-storage-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_survive_reopen() {
        let dir = temp_dir("reopen");
        let (mut s, recovered) = Storage::open(&dir).unwrap();
        assert!(recovered.snapshot.is_none() && recovered.records.is_empty());
        s.append(0, 1, b"zero");
        s.append(1, 1, b"one");
        s.flush().unwrap();
        drop(s);
        let (_, recovered) = Storage::open(&dir).unwrap();
        let slots: Vec<u64> = recovered.records.iter().map(|r| r.slot).collect();
        assert_eq!(slots, vec![0, 1]);
        assert_eq!(recovered.records[1].bytes, b"one");
    }

    #[test]
    fn snapshot_drops_older_records_and_segments() {
        let dir = temp_dir("snap");
        let (mut s, _) = Storage::open(&dir).unwrap();
        for slot in 0..10 {
            s.append(slot, 1, b"x");
        }
        s.snapshot(10, b"state".to_vec()).unwrap();
        s.append(10, 1, b"after");
        s.close();
        let (_, recovered) = Storage::open(&dir).unwrap();
        assert_eq!(recovered.snapshot, Some((10, b"state".to_vec())));
        assert_eq!(recovered.records.len(), 1);
        assert_eq!(recovered.records[0].bytes, b"after");
        assert_eq!(segments(&dir.join("consensus")).unwrap().len(), 1, "the segment before the snapshot is deleted");
    }

    #[test]
    fn a_reboot_without_a_clean_stop_is_reported() {
        let dir = temp_dir("boot");
        let (mut s, recovered) = Storage::open(&dir).unwrap();
        assert!(!recovered.unclean_reboot, "an empty log has nothing to lose");
        s.append(0, 1, b"x");
        s.flush().unwrap();
        drop(s);
        let consensus = dir.join("consensus");
        fs::write(consensus.join(BOOT_FILE), "another-boot").unwrap();
        let (s, recovered) = Storage::open(&dir).unwrap();
        assert!(recovered.unclean_reboot);
        s.close();
        fs::write(consensus.join(BOOT_FILE), "another-boot").unwrap();
        let (_, recovered) = Storage::open(&dir).unwrap();
        assert!(!recovered.unclean_reboot, "a clean stop before the reboot synced everything");
        assert!(!consensus.join(CLEAN_FILE).exists(), "the clean mark is cleared while the node runs");
    }

    #[test]
    fn torn_tail_is_cut_and_bad_snapshot_refused() {
        let dir = temp_dir("torn");
        let (mut s, _) = Storage::open(&dir).unwrap();
        s.append(0, 1, b"whole");
        s.append(1, 1, b"torn record");
        s.flush().unwrap();
        drop(s);
        let seg = segments(&dir.join("consensus")).unwrap().pop().unwrap().1;
        let len = fs::metadata(&seg).unwrap().len();
        OpenOptions::new().write(true).open(&seg).unwrap().set_len(len - 3).unwrap();
        let (_, recovered) = Storage::open(&dir).unwrap();
        assert_eq!(recovered.records.len(), 1);
        fs::write(dir.join("consensus").join("snapshot"), b"AETHSNAPgarbage-garbage-garbage").unwrap();
        assert!(Storage::open(&dir).err().unwrap().contains("corrupt"));
    }
}
