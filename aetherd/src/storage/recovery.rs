//! Reading the folder back at start, and the marks that say how far to trust it: `boot_id` (the machine
//! boot the log was last written in), `clean` (the node stopped cleanly: everything was synced) and
//! `failed` (a storage call failed and the node stopped: its tail is not to be trusted).
//!
//! Invariants: a torn record is cut only at the end of a segment followed by nothing but empty
//! segments (a crash mid-write); a bad record followed by a valid one anywhere is corruption and
//! recovery refuses to go on. `failed` is a file of `FAILED_BYTES` zero bytes written and synced when the
//! folder is opened; marking it overwrites its first bytes in place and needs no free block.

use super::segments::{self, Ending, Record};
use super::{snapshot, StorageError};
use log::{info, warn};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

const BOOT_FILE: &str = "boot_id";
const CLEAN_FILE: &str = "clean";
pub(super) const FAILED_FILE: &str = "failed";
const FAILED_BYTES: usize = 4096;

/// What was on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    pub snapshot: Option<(u64, Vec<u8>)>,
    /// Records at or above the snapshot's slot, in the order they were appended.
    pub records: Vec<Record>,
    /// The machine rebooted since the log was last written and the node did not stop cleanly before: the
    /// records written in the last moments (not yet synced) may be gone, own votes included.
    pub unclean_reboot: bool,
    /// The node stopped on a storage failure (the reason it wrote): what it sent may be missing here.
    pub failed_stop: Option<String>,
    /// The folder held a boot mark before this start: the node ran here before.
    pub ran_before: bool,
}

/// Reads the snapshot and every segment; cuts a torn tail; returns the highest segment sequence seen.
pub(super) fn recover(dir: &Path) -> Result<(Recovered, u64), StorageError> {
    snapshot::remove_temporaries(dir);
    let snapshot = snapshot::read(dir)?;
    let floor = snapshot.as_ref().map_or(0, |s| s.0);
    let all = segments::segments(dir)?;
    let highest = all.last().map_or(0, |(sequence, _)| *sequence);
    let mut records = Vec::new();
    for (i, (_, path)) in all.iter().enumerate() {
        let ending = segments::read_segment(path, &mut |r| {
            if r.slot >= floor {
                records.push(r);
            }
        })?;
        if let Ending::Torn(at) = ending {
            let later_written = all[i + 1..].iter().any(|(_, p)| fs::metadata(p).map_or(true, |m| m.len() > 0));
            if later_written {
                return Err(StorageError::corrupt(format!(
                    "{}: bad record at byte {at} with records in later segments: the log is damaged, not torn \
                     by a crash; refusing to start (move the node's data directory away and start it empty: it \
                     rejoins recovering and rebuilds from its peers)",
                    path.display()
                )));
            }
            warn!("{}: cutting a torn record at byte {at} (a crash mid-write)", path.display());
            segments::truncate(path, at)?;
        }
    }
    // Empty segments hold nothing; the next one is created past the highest sequence anyway.
    for (_, path) in &all {
        if fs::metadata(path).is_ok_and(|m| m.len() == 0) {
            let _ = fs::remove_file(path);
        }
    }
    if snapshot.is_some() || !records.is_empty() {
        let from =
            if snapshot.is_some() { format!("a snapshot at slot {floor} and") } else { "no snapshot,".to_string() };
        info!("recovered from disk: {from} {} log records", records.len());
    }
    let recovered = Recovered { snapshot, records, ..Recovered::default() };
    Ok((recovered, highest))
}

/// This boot of the machine (Linux); empty where the kernel does not say.
pub(super) fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Whether the log may have lost unsynced records to a reboot: it was last written during another boot and
/// not closed cleanly. Then records this boot as the log's and clears the clean mark. Also says whether
/// the node ran here before (the boot mark existed).
pub(super) fn check_boot(dir: &Path, has_log: bool) -> Result<(bool, bool), StorageError> {
    let stored = fs::read_to_string(dir.join(BOOT_FILE)).map(|s| s.trim().to_string()).ok();
    let ran_before = stored.is_some();
    let clean = dir.join(CLEAN_FILE).exists();
    let current = boot_id();
    let rebooted = stored.is_some_and(|s| !s.is_empty() && !current.is_empty() && s != current);
    let unclean = has_log && rebooted && !clean;
    if unclean {
        warn!("the machine rebooted since the consensus log was last written and the node did not stop cleanly");
    }
    write_synced(dir, BOOT_FILE, current.as_bytes())?;
    if clean {
        let path = dir.join(CLEAN_FILE);
        fs::remove_file(&path).map_err(|e| StorageError::new("cannot remove", &path, e))?;
        super::sync_dir(dir)?;
    }
    Ok((unclean, ran_before))
}

pub(super) fn mark_clean(dir: &Path) -> Result<(), StorageError> {
    write_synced(dir, CLEAN_FILE, boot_id().as_bytes())
}

/// Replaces `dir/name` atomically and durably.
fn write_synced(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let written = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    written.map_err(|e| StorageError::new("cannot write", &tmp, e))?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(|e| StorageError::new("cannot rename to", &path, e))?;
    super::sync_dir(dir)
}

/// Opens the failure mark: returns what an earlier run wrote in it (if it stopped on a failure) and the
/// open file, created and filled with zeros (allocated, synced) if it was not there.
pub(super) fn open_failure_mark(dir: &Path) -> Result<(Option<String>, File), StorageError> {
    let path = dir.join(FAILED_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StorageError::new("cannot open", &path, e))?;
    let mut data = Vec::new();
    file.read_to_end(&mut data).map_err(|e| StorageError::new("cannot read", &path, e))?;
    let written: Vec<u8> = data.iter().copied().take_while(|b| *b != 0).collect();
    let reason = (!written.is_empty()).then(|| String::from_utf8_lossy(&written).trim().to_string());
    if data.len() < FAILED_BYTES {
        file.write_all_at(&vec![0u8; FAILED_BYTES - data.len()], data.len() as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| StorageError::new("cannot preallocate", &path, e))?;
        super::sync_dir(dir)?;
    }
    Ok((reason, file))
}

/// Writes `reason` over the start of the (allocated) failure mark and syncs it; no new block is needed.
pub(super) fn write_failure_mark(file: &File, reason: &str) -> std::io::Result<()> {
    let mut bytes = reason.as_bytes().to_vec();
    bytes.truncate(FAILED_BYTES - 1);
    bytes.push(0);
    file.write_all_at(&bytes, 0)?;
    file.sync_data()
}

/// Clears the failure mark (zeros in place), durably.
pub(super) fn clear_failure_mark(file: &File) -> std::io::Result<()> {
    file.write_all_at(&[0u8; FAILED_BYTES], 0)?;
    file.sync_data()
}
