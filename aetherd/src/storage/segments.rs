//! Log segments: `log-{sequence, 20 digits}` files of records `len u32 | crc32 u32 | slot u64 | kind u8 |
//! bytes` (crc over slot, kind and bytes; little endian).
//!
//! Invariants: a segment's name is a sequence number above every segment that existed when it was
//! created (never a slot, never reused), so the newest segment always sorts last; a new segment's
//! directory entry is synced before a record is written to it.

use super::StorageError;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

const RECORD_HEADER: usize = 4 + 4;
pub(super) const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One record read back at recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub slot: u64,
    pub kind: u8,
    pub bytes: Vec<u8>,
}

/// Appends one encoded record to `out`.
pub(super) fn encode_record(out: &mut Vec<u8>, slot: u64, kind: u8, bytes: &[u8]) {
    let mut body = Vec::with_capacity(9 + bytes.len());
    body.extend_from_slice(&slot.to_le_bytes());
    body.push(kind);
    body.extend_from_slice(bytes);
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
}

/// The segments in the folder, by sequence.
pub(super) fn segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let entries = fs::read_dir(dir).map_err(|e| StorageError::new("cannot list", dir, e))?;
    let mut found: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let sequence = name.strip_prefix("log-")?.parse().ok()?;
            Some((sequence, e.path()))
        })
        .collect();
    found.sort();
    Ok(found)
}

/// Creates segment `sequence` and makes its directory entry durable.
pub(super) fn create_segment(dir: &Path, sequence: u64) -> Result<File, StorageError> {
    let path = segment_path(dir, sequence);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| StorageError::new("cannot create", &path, e))?;
    super::sync_dir(dir)?;
    Ok(file)
}

pub(super) fn segment_path(dir: &Path, sequence: u64) -> PathBuf {
    dir.join(format!("log-{sequence:020}"))
}

/// How a segment's bytes end.
pub(super) enum Ending {
    /// Every byte belongs to a whole record.
    Whole,
    /// A bad record at this offset and no valid record after it: a write cut short.
    Torn(usize),
}

/// Reads every record of one segment into `sink`. A bad record followed by a valid one is corruption
/// (an error); one followed by nothing valid is a torn write, reported for the caller to judge.
pub(super) fn read_segment(path: &Path, sink: &mut dyn FnMut(Record)) -> Result<Ending, StorageError> {
    let data = fs::read(path).map_err(|e| StorageError::new("cannot read", path, e))?;
    let mut at = 0;
    while at < data.len() {
        match parse_record(&data[at..]) {
            Some((record, used)) => {
                sink(record);
                at += used;
            }
            None => {
                if let Some(valid) = (at + 1..data.len()).find(|&i| parse_record(&data[i..]).is_some()) {
                    return Err(StorageError::corrupt(format!(
                        "{}: bad record at byte {at} followed by a valid one at byte {valid}: the log is \
                         damaged, not torn by a crash; refusing to start (move the node's data directory away \
                         and start it empty: it rejoins recovering and rebuilds from its peers)",
                        path.display()
                    )));
                }
                return Ok(Ending::Torn(at));
            }
        }
    }
    Ok(Ending::Whole)
}

/// Cuts a torn tail off a segment.
pub(super) fn truncate(path: &Path, at: usize) -> Result<(), StorageError> {
    let file = OpenOptions::new().write(true).open(path).map_err(|e| StorageError::new("cannot open", path, e))?;
    file.set_len(at as u64).map_err(|e| StorageError::new("cannot truncate", path, e))?;
    file.sync_all().map_err(|e| StorageError::new("cannot fsync", path, e))
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
