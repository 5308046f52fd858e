//! Slice artifacts moving between nodes: an artifact uploaded to one node is stored in its repository and
//! pushed to every connected peer over the cluster transport, in chunks, so a blueprint can be deployed to
//! nodes that never had the file.
//!
//! Chunks are bulk frames (`FrameKind::Artifact`), 256 KiB each, so consensus traffic never waits behind a
//! whole artifact. Each carries the artifact's total length and crc32, so the receiver can bound what it
//! buffers and check the whole before storing it. Files are written to a temporary name and renamed into
//! the Maven layout, so a loader never sees half a library.
//!
//! Invariants: at most `PARTIAL_BYTES_MAX` bytes of incomplete artifacts are buffered per node (a transfer
//! that would exceed it, or announces more than `ARTIFACT_BYTES_MAX`, is refused with a logged reason);
//! a chunk that does not fit its transfer (offset, length, total, checksum) drops that transfer.

use log::{info, warn};
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const CHUNK_BYTES: usize = 256 * 1024;
pub const ARTIFACT_BYTES_MAX: usize = 16 * 1024 * 1024;
const PARTIAL_BYTES_MAX: usize = 64 * 1024 * 1024;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ArtifactChunk {
    /// `group:artifact:version`.
    pub artifact: String,
    pub total_len: u64,
    pub total_crc32: u32,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Splits an artifact into the chunks that carry it.
pub fn chunks(artifact: &str, bytes: &[u8]) -> Vec<ArtifactChunk> {
    let total_crc32 = crc32fast::hash(bytes);
    let total_len = bytes.len() as u64;
    bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| ArtifactChunk {
            artifact: artifact.to_string(),
            total_len,
            total_crc32,
            offset: (i * CHUNK_BYTES) as u64,
            data: data.to_vec(),
        })
        .collect()
}

struct Partial {
    total_crc32: u32,
    bytes: Vec<u8>,
    expected_len: usize,
}

/// Reassembles artifacts from chunks, per sending peer.
#[derive(Default)]
pub struct Assembler {
    partial: HashMap<(usize, String), Partial>,
    buffered: usize,
}

impl Assembler {
    /// Takes one chunk from `peer`; returns the whole artifact once its last chunk arrived and it checks.
    pub fn on_chunk(&mut self, peer: usize, chunk: ArtifactChunk) -> Result<Option<(String, Vec<u8>)>, String> {
        let total = usize::try_from(chunk.total_len).unwrap_or(usize::MAX);
        if total > ARTIFACT_BYTES_MAX {
            return Err(format!(
                "{} announces {total} bytes, over the {ARTIFACT_BYTES_MAX}-byte limit",
                chunk.artifact
            ));
        }
        let key = (peer, chunk.artifact.clone());
        if chunk.offset == 0 {
            self.drop_transfer(&key);
            if self.buffered + total > PARTIAL_BYTES_MAX {
                return Err(format!("{}: too many artifact bytes in flight", chunk.artifact));
            }
            self.buffered += total;
            let partial =
                Partial { total_crc32: chunk.total_crc32, bytes: Vec::with_capacity(total), expected_len: total };
            self.partial.insert(key.clone(), partial);
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            return Err(format!("{}: chunk at {} without a start", chunk.artifact, chunk.offset));
        };
        let fits = chunk.offset as usize == partial.bytes.len()
            && partial.total_crc32 == chunk.total_crc32
            && partial.bytes.len() + chunk.data.len() <= partial.expected_len;
        if !fits {
            self.drop_transfer(&key);
            return Err(format!("{}: chunk at {} does not fit the transfer", chunk.artifact, chunk.offset));
        }
        partial.bytes.extend_from_slice(&chunk.data);
        if partial.bytes.len() < partial.expected_len {
            return Ok(None);
        }
        let Some(done) = self.partial.remove(&key) else { return Ok(None) };
        self.buffered = self.buffered.saturating_sub(done.expected_len);
        if crc32fast::hash(&done.bytes) != done.total_crc32 {
            return Err(format!("{}: checksum mismatch after reassembly", chunk.artifact));
        }
        Ok(Some((chunk.artifact, done.bytes)))
    }

    /// Forgets transfers from a peer that went away.
    pub fn peer_down(&mut self, peer: usize) {
        let keys: Vec<_> = self.partial.keys().filter(|(p, _)| *p == peer).cloned().collect();
        for key in keys {
            self.drop_transfer(&key);
        }
    }

    fn drop_transfer(&mut self, key: &(usize, String)) {
        if let Some(old) = self.partial.remove(key) {
            self.buffered = self.buffered.saturating_sub(old.expected_len);
        }
    }
}

/// Where `artifact` lives in a Maven-layout repository.
pub fn repository_file(repo: &Path, artifact: &str) -> Result<PathBuf, String> {
    let coords = container::Artifact::parse(artifact).map_err(|e| e.to_string())?;
    Ok(repo.join(coords.repository_path()))
}

/// Writes an artifact into the repository: to a temporary name first, then renamed into place.
pub fn store(repo: &Path, artifact: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    let path = repository_file(repo, artifact)?;
    let dir = path.parent().ok_or_else(|| format!("{} has no folder", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(".upload-{}-{n}", std::process::id()));
    let written = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp).and_then(|mut f| {
        std::io::Write::write_all(&mut f, bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("{}: {e}", tmp.display()));
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(path)
}

/// Stores an artifact received from a peer, off the event loop.
pub fn store_in_background(repo: PathBuf, artifact: String, bytes: Vec<u8>) {
    let spawned = std::thread::Builder::new().name("artifact-store".into()).spawn(move || {
        match store(&repo, &artifact, &bytes) {
            Ok(path) => info!("stored artifact {artifact} from a peer ({} bytes) at {}", bytes.len(), path.display()),
            Err(e) => warn!("cannot store artifact {artifact} from a peer: {e}"),
        }
    });
    if let Err(e) = spawned {
        warn!("cannot start a thread to store an artifact: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_reassemble_in_order_and_check() {
        let bytes: Vec<u8> = (0..(CHUNK_BYTES * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let mut assembler = Assembler::default();
        let parts = chunks("g:a:1.0.0", &bytes);
        assert_eq!(parts.len(), 3);
        let mut done = None;
        for part in parts {
            done = assembler.on_chunk(1, part).unwrap();
        }
        assert_eq!(done, Some(("g:a:1.0.0".to_string(), bytes)));
        assert_eq!(assembler.buffered, 0);
    }

    #[test]
    fn out_of_order_or_corrupt_chunks_drop_the_transfer() {
        let bytes = vec![7u8; CHUNK_BYTES + 10];
        let mut parts = chunks("g:a:1.0.0", &bytes);
        let mut assembler = Assembler::default();
        assert!(assembler.on_chunk(1, parts[1].clone()).is_err(), "no start");
        assembler.on_chunk(1, parts[0].clone()).unwrap();
        parts[1].data[0] ^= 1;
        assert!(assembler.on_chunk(1, parts[1].clone()).is_err(), "checksum");
        assert_eq!(assembler.buffered, 0);
        let huge =
            ArtifactChunk { artifact: "g:a:1".into(), total_len: u64::MAX, total_crc32: 0, offset: 0, data: vec![] };
        assert!(assembler.on_chunk(2, huge).is_err());
    }

    #[test]
    fn store_writes_the_maven_layout() {
        let repo = std::env::temp_dir().join(format!("aether-artifacts-{}", std::process::id()));
        let path = store(&repo, "org.example:thing:1.2.3", b"bytes").unwrap();
        assert!(path.ends_with("org/example/thing/1.2.3/thing-1.2.3.so"));
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        assert!(store(&repo, "not coordinates", b"x").is_err());
    }
}
