//! Slice artifacts moving between nodes: an artifact uploaded to one node is stored in its repository and
//! pushed to every connected peer over the cluster transport, in chunks, so a blueprint can be deployed to
//! nodes that never had the file.
//!
//! Chunks are bulk frames (`FrameKind::Artifact`), 256 KiB each, so consensus traffic never waits behind a
//! whole artifact. Each carries the artifact's total length, SHA-256 and signature (when it has one), so
//! the receiver can bound what it buffers and check the whole before storing it. A stored library has its
//! checksum file (`.so.sha256`, and `.so.sig` when signed) beside it, written first, each to a temporary
//! name, synced and renamed; the library itself is renamed into the Maven layout last, so a loader never
//! sees half a library, and one that sees a library with another upload's checksum refuses it.
//!
//! Invariants: at most `PARTIAL_BYTES_MAX` bytes of incomplete artifacts are buffered per node (a transfer
//! that would exceed it, or announces more than `ARTIFACT_BYTES_MAX`, is refused with a logged reason);
//! a chunk that does not fit its transfer (offset, length, total, digest, signature) drops that transfer;
//! nothing is stored whose bytes do not hash to the digest it was sent with.

use container::integrity::{self, Digest};
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
    /// SHA-256 of the whole artifact.
    pub sha256: [u8; 32],
    /// Its ed25519 signature (64 bytes), or empty when it was uploaded unsigned.
    pub signature: Vec<u8>,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A whole artifact with its integrity data, as uploaded or reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `group:artifact:version`.
    pub coords: String,
    pub bytes: Vec<u8>,
    pub sha256: Digest,
    pub signature: Option<[u8; 64]>,
}

/// Splits an artifact into the chunks that carry it.
pub fn chunks(artifact: &Artifact) -> Vec<ArtifactChunk> {
    let total_len = artifact.bytes.len() as u64;
    let signature = artifact.signature.map_or_else(Vec::new, |s| s.to_vec());
    artifact
        .bytes
        .chunks(CHUNK_BYTES)
        .enumerate()
        .map(|(i, data)| ArtifactChunk {
            artifact: artifact.coords.clone(),
            total_len,
            sha256: artifact.sha256,
            signature: signature.clone(),
            offset: (i * CHUNK_BYTES) as u64,
            data: data.to_vec(),
        })
        .collect()
}

struct Partial {
    sha256: Digest,
    signature: Vec<u8>,
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
    pub fn on_chunk(&mut self, peer: usize, chunk: ArtifactChunk) -> Result<Option<Artifact>, String> {
        let total = usize::try_from(chunk.total_len).unwrap_or(usize::MAX);
        if total > ARTIFACT_BYTES_MAX {
            return Err(format!(
                "{} announces {total} bytes, over the {ARTIFACT_BYTES_MAX}-byte limit",
                chunk.artifact
            ));
        }
        if !chunk.signature.is_empty() && chunk.signature.len() != 64 {
            return Err(format!("{}: a signature of {} bytes", chunk.artifact, chunk.signature.len()));
        }
        let key = (peer, chunk.artifact.clone());
        if chunk.offset == 0 {
            self.drop_transfer(&key);
            if self.buffered + total > PARTIAL_BYTES_MAX {
                return Err(format!("{}: too many artifact bytes in flight", chunk.artifact));
            }
            self.buffered += total;
            let partial = Partial {
                sha256: chunk.sha256,
                signature: chunk.signature.clone(),
                bytes: Vec::with_capacity(total),
                expected_len: total,
            };
            self.partial.insert(key.clone(), partial);
        }
        let Some(partial) = self.partial.get_mut(&key) else {
            return Err(format!("{}: chunk at {} without a start", chunk.artifact, chunk.offset));
        };
        let fits = chunk.offset as usize == partial.bytes.len()
            && partial.sha256 == chunk.sha256
            && partial.signature == chunk.signature
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
        if integrity::sha256(&done.bytes) != done.sha256 {
            return Err(format!("{}: SHA-256 mismatch after reassembly; nothing stored", chunk.artifact));
        }
        let signature = <[u8; 64]>::try_from(done.signature.as_slice()).ok();
        Ok(Some(Artifact { coords: chunk.artifact, bytes: done.bytes, sha256: done.sha256, signature }))
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

/// Writes an artifact into the repository: its checksum file, its signature file (or none: a stale one
/// is removed), then the library, each to a temporary name, synced, and renamed into place. Answers the
/// library's path. Refuses bytes that do not hash to `sha256`.
pub fn store(repo: &Path, artifact: &Artifact) -> Result<PathBuf, String> {
    if integrity::sha256(&artifact.bytes) != artifact.sha256 {
        return Err(format!("{}: the bytes do not match their SHA-256", artifact.coords));
    }
    let path = repository_file(repo, &artifact.coords)?;
    let dir = path.parent().ok_or_else(|| format!("{} has no folder", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    integrity::write_checksum(&path, &artifact.sha256)
        .map_err(|e| format!("{}: {e}", integrity::checksum_file(&path).display()))?;
    let signature_file = integrity::signature_file(&path);
    match &artifact.signature {
        Some(signature) => integrity::write_signature(&path, signature),
        None => match std::fs::remove_file(&signature_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        },
    }
    .map_err(|e| format!("{}: {e}", signature_file.display()))?;
    integrity::write_atomically(&path, &artifact.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(path)
}

/// Stores an artifact received from a peer, off the event loop.
pub fn store_in_background(repo: PathBuf, artifact: Artifact) {
    let spawned = std::thread::Builder::new().name("artifact-store".into()).spawn(move || {
        let (coords, size, sha256) = (&artifact.coords, artifact.bytes.len(), integrity::to_hex(&artifact.sha256));
        match store(&repo, &artifact) {
            Ok(path) => {
                info!("stored artifact {coords} from a peer ({size} bytes, sha256 {sha256}) at {}", path.display())
            }
            Err(e) => warn!("cannot store artifact {coords} from a peer: {e}"),
        }
    });
    if let Err(e) = spawned {
        warn!("cannot start a thread to store an artifact: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(coords: &str, bytes: Vec<u8>, signature: Option<[u8; 64]>) -> Artifact {
        Artifact { coords: coords.into(), sha256: integrity::sha256(&bytes), bytes, signature }
    }

    #[test]
    fn chunks_reassemble_in_order_and_check() {
        let bytes: Vec<u8> = (0..(CHUNK_BYTES * 2 + 100)).map(|i| (i % 251) as u8).collect();
        let whole = artifact("g:a:1.0.0", bytes, Some([9; 64]));
        let mut assembler = Assembler::default();
        let parts = chunks(&whole);
        assert_eq!(parts.len(), 3);
        let mut done = None;
        for part in parts {
            done = assembler.on_chunk(1, part).unwrap();
        }
        assert_eq!(done, Some(whole));
        assert_eq!(assembler.buffered, 0);
    }

    #[test]
    fn out_of_order_or_corrupt_chunks_drop_the_transfer() {
        let whole = artifact("g:a:1.0.0", vec![7u8; CHUNK_BYTES + 10], None);
        let mut parts = chunks(&whole);
        let mut assembler = Assembler::default();
        assert!(assembler.on_chunk(1, parts[1].clone()).is_err(), "no start");
        assembler.on_chunk(1, parts[0].clone()).unwrap();
        parts[1].data[0] ^= 1;
        let err = assembler.on_chunk(1, parts[1].clone()).unwrap_err();
        assert!(err.contains("SHA-256"), "{err}");
        assert_eq!(assembler.buffered, 0);
        let mut other_signature = parts[1].clone();
        assembler.on_chunk(1, parts[0].clone()).unwrap();
        other_signature.signature = vec![1; 64];
        assert!(assembler.on_chunk(1, other_signature).is_err(), "the signature changed mid-transfer");
        let mut bad_signature = parts[0].clone();
        bad_signature.signature = vec![1; 3];
        assert!(assembler.on_chunk(1, bad_signature).is_err());
        let huge = ArtifactChunk {
            artifact: "g:a:1".into(),
            total_len: u64::MAX,
            sha256: [0; 32],
            signature: Vec::new(),
            offset: 0,
            data: vec![],
        };
        assert!(assembler.on_chunk(2, huge).is_err());
    }

    #[test]
    fn store_writes_the_maven_layout_with_checksum_and_signature_files() {
        let repo = std::env::temp_dir().join(format!("aether-artifacts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&repo);
        let signed = artifact("org.example:thing:1.2.3", b"bytes".to_vec(), Some([3; 64]));
        let path = store(&repo, &signed).unwrap();
        assert!(path.ends_with("org/example/thing/1.2.3/thing-1.2.3.so"));
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        let keys = integrity::TrustedKeys::default();
        assert_eq!(integrity::check(&path, b"bytes", &keys).unwrap(), signed.sha256);
        assert_eq!(std::fs::read_to_string(integrity::signature_file(&path)).unwrap().trim(), "03".repeat(64));

        // A new upload of the same version without a signature leaves no stale signature behind.
        let unsigned = artifact("org.example:thing:1.2.3", b"other".to_vec(), None);
        store(&repo, &unsigned).unwrap();
        assert!(!integrity::signature_file(&path).exists());
        assert_eq!(integrity::check(&path, b"other", &keys).unwrap(), unsigned.sha256);

        let mut lying = artifact("org.example:thing:1.2.4", b"bytes".to_vec(), None);
        lying.sha256[0] ^= 1;
        assert!(store(&repo, &lying).is_err());
        assert!(!repository_file(&repo, "org.example:thing:1.2.4").unwrap().exists(), "nothing stored");
        assert!(store(&repo, &artifact("not coordinates", b"x".to_vec(), None)).is_err());
    }
}
