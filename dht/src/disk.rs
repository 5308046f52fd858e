//! The node's store: entries on disk under one folder, an index of (key, version, partition, size, check)
//! in memory, so memory stays bounded by the number of keys, not their bytes, and a restart keeps the data.
//!
//! Layout: `{dir}/entries/{2 hex}/{16 hex}[.{slot}]`, one file per key, named by a fixed 64-bit hash of the
//! key (fan-out by its first byte); a key whose hash names a file another key holds takes the next free
//! `slot` (at most `SLOTS`). A file is a header, the key, then the value:
//! `magic "AEDS" | format u8 | flags u8 (bit 0: tombstone) | key_len u16 | stamp u64 | writer u64 |
//! value_len u32 | value_crc u32 | header_crc u32`, little endian; `header_crc` covers the header before it
//! and the key. `open` reads headers only; `get` and `scrub` read the value and check its CRC.
//!
//! Writes go to `{dir}/tmp/` and are renamed into place, so a reader never sees a half-written file under
//! a key's name while the process runs. There is no fsync: durability comes from the DHT's write quorum
//! across replicas, not from one disk, and syncing every 1 MiB chunk would cap the node's write rate at
//! the disk's flush latency. What a crash can leave — an empty, short or garbled file — fails its length or
//! CRC check (at `open`, `get` or `scrub`), is dropped from the index and counted, and the partition's
//! digest changes with it, so anti-entropy fetches the entry again from a peer.
//!
//! Invariants: every indexed entry has a file whose header matched it when it was last read or written;
//! `digests[p]` is the XOR of `store::entry_digest` over the (key, version) pairs indexed in partition `p`
//! (0 when empty), exactly what `MemStore` computes for the same entries; no read allocates more than
//! `HEADER_BYTES + KEY_BYTES_MAX + VALUE_BYTES_MAX`.

use crate::store::{entry_digest, Entry, Store, StoreError, Version};
use crate::{Ring, KEY_BYTES_MAX, VALUE_BYTES_MAX};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"AEDS";
const FORMAT: u8 = 1;
const FLAG_TOMBSTONE: u8 = 1;
/// The fixed part of a file's header, before the key.
const HEADER_BYTES: usize = 4 + 1 + 1 + 2 + 8 + 8 + 4 + 4 + 4;
/// Keys sharing one file-name hash; more is refused (a 64-bit hash makes even two rare).
const SLOTS: u8 = 8;

fn name_hash(key: &str) -> u64 {
    crate::ring::hash64(key.as_bytes())
}

/// What the index knows of one key without reading its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    version: Version,
    tombstone: bool,
    value_len: u32,
    value_crc: u32,
    /// The file: (name hash, slot).
    file: (u64, u8),
}

/// A decoded header (the key follows it in the file).
#[derive(Debug)]
struct Header {
    tombstone: bool,
    key_len: usize,
    version: Version,
    value_len: u32,
    value_crc: u32,
}

fn encode(key: &str, entry: &Entry) -> Vec<u8> {
    let value = entry.value.as_deref().unwrap_or(&[]);
    let mut out = Vec::with_capacity(HEADER_BYTES + key.len() + value.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT);
    out.push(if entry.value.is_none() { FLAG_TOMBSTONE } else { 0 });
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(&entry.version.stamp.to_le_bytes());
    out.extend_from_slice(&entry.version.writer.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(value).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&out);
    crc.update(key.as_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(value);
    out
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Decodes the fixed header; `None` if it is not one of ours or its fields are out of bounds.
fn decode_header(b: &[u8; HEADER_BYTES]) -> Option<Header> {
    if &b[0..4] != MAGIC || b[4] != FORMAT || b[5] & !FLAG_TOMBSTONE != 0 {
        return None;
    }
    let key_len = usize::from(u16::from_le_bytes([b[6], b[7]]));
    let header = Header {
        tombstone: b[5] & FLAG_TOMBSTONE != 0,
        key_len,
        version: Version { stamp: le_u64(&b[8..16]), writer: le_u64(&b[16..24]) },
        value_len: le_u32(&b[24..28]),
        value_crc: le_u32(&b[28..32]),
    };
    let bounded = key_len > 0 && key_len <= KEY_BYTES_MAX && header.value_len as usize <= VALUE_BYTES_MAX;
    let tombstone_empty = !header.tombstone || header.value_len == 0;
    (bounded && tombstone_empty).then_some(header)
}

/// Reads and checks a file's header and key (not the value); `None` if torn or corrupt.
fn read_head(file: &mut fs::File, file_len: u64) -> Option<(Header, String)> {
    let mut fixed = [0u8; HEADER_BYTES];
    file.read_exact(&mut fixed).ok()?;
    let header = decode_header(&fixed)?;
    let mut key = vec![0u8; header.key_len];
    file.read_exact(&mut key).ok()?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&fixed[..HEADER_BYTES - 4]);
    crc.update(&key);
    if crc.finalize() != le_u32(&fixed[HEADER_BYTES - 4..]) {
        return None;
    }
    let expected = (HEADER_BYTES + header.key_len) as u64 + u64::from(header.value_len);
    if file_len != expected {
        return None;
    }
    let key = String::from_utf8(key).ok()?;
    Some((header, key))
}

/// Entries as files under a folder of `data_dir`.
pub struct DiskStore {
    dir: PathBuf,
    /// Partition -> key -> meta; key order serves `versions`.
    parts: HashMap<u32, BTreeMap<String, Meta>>,
    /// Partition -> XOR of its entries' digests.
    digests: HashMap<u32, u64>,
    /// File names in use.
    files: HashSet<(u64, u8)>,
    entries: usize,
    value_bytes: u64,
    corrupt_dropped: u64,
    /// Where `scrub` resumes: (partition, key) last checked.
    scrub_cursor: Option<(u32, String)>,
    tmp_seq: u64,
}

impl DiskStore {
    /// A file of the store as errors name it: relative to the store's folder, so answers that carry a store
    /// error never show the node's absolute paths.
    fn shown(&self, path: &Path) -> String {
        format!("dht/{}", path.strip_prefix(&self.dir).unwrap_or(Path::new("?")).display())
    }

    /// Opens (creating if absent) the store in `dir`, rebuilding the index from what is there.
    pub fn open(dir: &Path) -> Result<DiskStore, StoreError> {
        let io = |what: &str, p: &Path, e: std::io::Error| StoreError(format!("{what} {}: {e}", p.display()));
        let entries_dir = dir.join("entries");
        let tmp_dir = dir.join("tmp");
        fs::create_dir_all(&entries_dir).map_err(|e| io("cannot create", &entries_dir, e))?;
        // Temp files are writes a crash interrupted before their rename: never part of the store.
        let _ = fs::remove_dir_all(&tmp_dir);
        fs::create_dir_all(&tmp_dir).map_err(|e| io("cannot create", &tmp_dir, e))?;
        let mut store = DiskStore {
            dir: dir.to_path_buf(),
            parts: HashMap::new(),
            digests: HashMap::new(),
            files: HashSet::new(),
            entries: 0,
            value_bytes: 0,
            corrupt_dropped: 0,
            scrub_cursor: None,
            tmp_seq: 0,
        };
        for fan in fs::read_dir(&entries_dir).map_err(|e| io("cannot read", &entries_dir, e))? {
            let fan = fan.map_err(|e| io("cannot read", &entries_dir, e))?.path();
            if !fan.is_dir() {
                continue;
            }
            for file in fs::read_dir(&fan).map_err(|e| io("cannot read", &fan, e))? {
                let path = file.map_err(|e| io("cannot read", &fan, e))?.path();
                store.load_file(&path);
            }
        }
        Ok(store)
    }

    /// Entries dropped because their file failed its check, since `open` (including those `open` dropped).
    pub fn corrupt_dropped(&self) -> u64 {
        self.corrupt_dropped
    }

    /// Indexes one file found at `open`; a file that is not a valid entry under its own name is removed.
    fn load_file(&mut self, path: &Path) {
        let parsed = path.file_name().and_then(|n| n.to_str()).and_then(parse_file_name);
        let Some(file) = parsed else {
            let _ = fs::remove_file(path);
            return;
        };
        let head = fs::File::open(path).ok().and_then(|mut f| {
            let len = f.metadata().ok()?.len();
            read_head(&mut f, len)
        });
        let Some((header, key)) = head.filter(|(_, key)| name_hash(key) == file.0 && self.path(file) == path) else {
            self.corrupt_dropped += 1;
            let _ = fs::remove_file(path);
            return;
        };
        let meta = Meta {
            version: header.version,
            tombstone: header.tombstone,
            value_len: header.value_len,
            value_crc: header.value_crc,
            file,
        };
        match self.meta(&key) {
            Some(old) if old.version >= meta.version => {
                let _ = fs::remove_file(path);
            }
            Some(old) => {
                let _ = fs::remove_file(self.path(old.file));
                self.unindex(&key);
                self.index(key, meta);
            }
            None => self.index(key, meta),
        }
    }

    fn path(&self, (hash, slot): (u64, u8)) -> PathBuf {
        let name = if slot == 0 { format!("{hash:016x}") } else { format!("{hash:016x}.{slot}") };
        self.dir.join("entries").join(format!("{:02x}", hash >> 56)).join(name)
    }

    fn meta(&self, key: &str) -> Option<Meta> {
        self.parts.get(&Ring::partition_of(key)).and_then(|p| p.get(key)).copied()
    }

    fn index(&mut self, key: String, meta: Meta) {
        let partition = Ring::partition_of(&key);
        *self.digests.entry(partition).or_insert(0) ^= entry_digest(&key, meta.version);
        self.files.insert(meta.file);
        self.entries += 1;
        self.value_bytes += u64::from(meta.value_len);
        self.parts.entry(partition).or_default().insert(key, meta);
    }

    fn unindex(&mut self, key: &str) -> Option<Meta> {
        let partition = Ring::partition_of(key);
        let part = self.parts.get_mut(&partition)?;
        let meta = part.remove(key)?;
        if part.is_empty() {
            self.parts.remove(&partition);
        }
        let digest = self.digests.entry(partition).or_insert(0);
        *digest ^= entry_digest(key, meta.version);
        if !self.parts.contains_key(&partition) {
            self.digests.remove(&partition);
        }
        self.files.remove(&meta.file);
        self.entries -= 1;
        self.value_bytes -= u64::from(meta.value_len);
        Some(meta)
    }

    /// Drops an entry whose file failed its check.
    fn drop_corrupt(&mut self, key: &str) {
        if let Some(meta) = self.unindex(key) {
            let _ = fs::remove_file(self.path(meta.file));
            self.corrupt_dropped += 1;
        }
    }

    /// Reads and checks the value of an indexed, live entry; `None` if the file fails any check.
    fn read_value(&self, key: &str, meta: &Meta) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.path(meta.file);
        let mut file = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError(format!("cannot open {}: {e}", self.shown(&path)))),
        };
        let len = file.metadata().map_err(|e| StoreError(format!("cannot stat {}: {e}", self.shown(&path))))?.len();
        let Some((header, stored_key)) = read_head(&mut file, len) else { return Ok(None) };
        let same = stored_key == key
            && header.version == meta.version
            && header.tombstone == meta.tombstone
            && header.value_len == meta.value_len
            && header.value_crc == meta.value_crc;
        if !same {
            return Ok(None);
        }
        // `read_head` checked the file length against `value_len`, itself bounded by VALUE_BYTES_MAX.
        let mut value = vec![0u8; meta.value_len as usize];
        if file.read_exact(&mut value).is_err() || crc32fast::hash(&value) != meta.value_crc {
            return Ok(None);
        }
        Ok(Some(value))
    }

    /// A file name for `key` not held by another key.
    fn free_file(&self, key: &str) -> Result<(u64, u8), StoreError> {
        let hash = name_hash(key);
        (0..SLOTS)
            .map(|slot| (hash, slot))
            .find(|f| !self.files.contains(f))
            .ok_or_else(|| StoreError(format!("more than {SLOTS} keys share the file name of {key:?}")))
    }

    fn write_file(&mut self, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
        self.tmp_seq += 1;
        let tmp = self.dir.join("tmp").join(format!("{}.tmp", self.tmp_seq));
        let fail =
            |what: &str, p: &Path, e: std::io::Error| StoreError(format!("cannot {what} {}: {e}", self.shown(p)));
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).map_err(|e| fail("create", parent, e))?;
        }
        fs::write(&tmp, bytes).map_err(|e| {
            // A write cut short (a full disk) leaves a partial file; kept, it would fill the disk for good.
            let _ = fs::remove_file(&tmp);
            fail("write", &tmp, e)
        })?;
        fs::rename(&tmp, target).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            fail("rename into", target, e)
        })
    }
}

/// `{16 hex}` or `{16 hex}.{slot}`.
fn parse_file_name(name: &str) -> Option<(u64, u8)> {
    let (hash, slot) = match name.split_once('.') {
        Some((h, s)) => (h, s.parse::<u8>().ok().filter(|s| (1..SLOTS).contains(s))?),
        None => (name, 0),
    };
    if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
        return None;
    }
    Some((u64::from_str_radix(hash, 16).ok()?, slot))
}

impl Store for DiskStore {
    fn get(&mut self, key: &str) -> Result<Option<Entry>, StoreError> {
        let Some(meta) = self.meta(key) else { return Ok(None) };
        if meta.tombstone {
            return Ok(Some(Entry { version: meta.version, value: None }));
        }
        match self.read_value(key, &meta)? {
            Some(value) => Ok(Some(Entry { version: meta.version, value: Some(value) })),
            None => {
                self.drop_corrupt(key);
                Ok(None)
            }
        }
    }

    fn put(&mut self, key: &str, entry: Entry) -> Result<bool, StoreError> {
        if key.is_empty() || key.len() > KEY_BYTES_MAX {
            return Err(StoreError(format!("key of {} bytes (1..={KEY_BYTES_MAX})", key.len())));
        }
        let value_len = entry.value.as_ref().map_or(0, Vec::len);
        if value_len > VALUE_BYTES_MAX {
            return Err(StoreError(format!("value of {value_len} bytes exceeds {VALUE_BYTES_MAX}")));
        }
        let old = self.meta(key);
        if old.is_some_and(|m| m.version >= entry.version) {
            return Ok(false);
        }
        let file = match old {
            Some(m) => m.file,
            None => self.free_file(key)?,
        };
        let bytes = encode(key, &entry);
        self.write_file(&self.path(file), &bytes)?;
        let meta = Meta {
            version: entry.version,
            tombstone: entry.value.is_none(),
            value_len: value_len as u32,
            value_crc: crc32fast::hash(entry.value.as_deref().unwrap_or(&[])),
            file,
        };
        self.unindex(key);
        self.index(key.to_string(), meta);
        Ok(true)
    }

    fn remove(&mut self, key: &str) -> Result<(), StoreError> {
        let Some(meta) = self.unindex(key) else { return Ok(()) };
        let path = self.path(meta.file);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError(format!("cannot remove {}: {e}", self.shown(&path)))),
        }
    }

    fn digest(&self, partition: u32) -> u64 {
        self.digests.get(&partition).copied().unwrap_or(0)
    }

    fn versions(&self, partition: u32, after: Option<&str>, limit: usize) -> Vec<(String, Version)> {
        let Some(part) = self.parts.get(&partition) else { return Vec::new() };
        let range = match after {
            Some(after) => part.range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
            None => part.range::<str, _>(..),
        };
        range.take(limit).map(|(k, m)| (k.clone(), m.version)).collect()
    }

    fn partitions(&self) -> Vec<u32> {
        let mut parts: Vec<u32> = self.parts.keys().copied().collect();
        parts.sort_unstable();
        parts
    }

    fn usage(&self) -> (usize, u64) {
        (self.entries, self.value_bytes)
    }

    fn scrub(&mut self, budget: usize) -> Vec<String> {
        let batch = self.next_scrub_batch(budget);
        let mut dropped = Vec::new();
        for (key, meta) in batch {
            if !meta.tombstone && !matches!(self.read_value(&key, &meta), Ok(Some(_))) {
                self.drop_corrupt(&key);
                dropped.push(key);
            }
        }
        dropped
    }
}

impl DiskStore {
    /// Up to `budget` entries after the scrub cursor in (partition, key) order, wrapping once; moves the cursor.
    fn next_scrub_batch(&mut self, budget: usize) -> Vec<(String, Meta)> {
        let partitions = self.partitions();
        let (start_part, start_key) = match &self.scrub_cursor {
            Some((p, k)) => (*p, Some(k.clone())),
            None => (0, None),
        };
        let mut batch = Vec::new();
        let after = partitions.iter().filter(|p| **p >= start_part);
        let before = partitions.iter().filter(|p| **p < start_part);
        for p in after.chain(before) {
            let Some(part) = self.parts.get(p) else { continue };
            let resume = (*p == start_part).then_some(start_key.as_deref()).flatten();
            let entries = match resume {
                Some(k) => part.range::<str, _>((std::ops::Bound::Excluded(k), std::ops::Bound::Unbounded)),
                None => part.range::<str, _>(..),
            };
            for (k, m) in entries.take(budget - batch.len()) {
                batch.push((k.clone(), *m));
            }
            if batch.len() >= budget {
                break;
            }
        }
        self.scrub_cursor = batch.last().map(|(k, _)| (Ring::partition_of(k), k.clone()));
        batch
    }
}

#[cfg(test)]
mod tests;
