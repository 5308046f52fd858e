//! Artifact bytes in the storage plane: a library is split into `dht::CHUNK_BYTES` chunks stored under
//! `artifact/{artifact}/{sha256 hex}/{index}`, each written with a quorum through the node's DHT; the
//! repository's catalog record (`artifacts/{artifact}`, `control::records::ArtifactRecord`) is written by
//! the caller once `store` returns. Usable from any thread (management workers, deploy workers): each
//! chunk operation is a command to the event loop with a reply channel and a deadline.

use crate::node::Command;
use control::records::ArtifactRecord;
use net::NetHandle;
use vocab::Artifact;

/// Why a blob operation failed, in words fit for an API answer or a slice record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobError {
    pub reason: String,
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for BlobError {}

/// A handle on this node's DHT for whole artifacts.
#[derive(Clone)]
pub struct Blobs {
    handle: NetHandle<Command>,
}

impl Blobs {
    pub fn new(handle: NetHandle<Command>) -> Blobs {
        Blobs { handle }
    }

    /// Stores `bytes` (whose SHA-256 is `sha256`) as chunks; returns once every chunk has a write quorum.
    pub fn store(&self, artifact: &Artifact, bytes: &[u8], sha256: &[u8; 32]) -> Result<(), BlobError> {
        let _ = (artifact, bytes, sha256, &self.handle);
        Err(BlobError { reason: "the storage plane is not wired yet".into() })
    }

    /// Writes the artifact's bytes, as `record` describes them, to `dest`, checking each chunk arrives and
    /// the whole hashes to `record.sha256`; on error the caller discards what `dest` got.
    pub fn fetch(
        &self,
        artifact: &Artifact,
        record: &ArtifactRecord,
        dest: &mut dyn std::io::Write,
    ) -> Result<(), BlobError> {
        let _ = (artifact, record, dest);
        Err(BlobError { reason: "the storage plane is not wired yet".into() })
    }

    /// Deletes the chunks `record` describes.
    pub fn delete(&self, artifact: &Artifact, record: &ArtifactRecord) -> Result<(), BlobError> {
        let _ = (artifact, record);
        Err(BlobError { reason: "the storage plane is not wired yet".into() })
    }
}
