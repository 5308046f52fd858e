//! Artifact bytes in the storage plane: a library is split into `dht::CHUNK_BYTES` chunks stored under
//! `artifact/{artifact}/{sha256 hex}/{index}`, each written with a quorum through the node's DHT; the
//! repository's catalog record (`artifacts/{artifact}`, `control::records::ArtifactRecord`) is written by
//! the caller once `store` returns. Usable from any thread (management workers, deploy workers): each
//! chunk operation is a command to the event loop with a reply channel and a deadline.
//!
//! Invariants: at most [`IN_FLIGHT`] chunk operations of one call are outstanding, so a call holds at most
//! that many chunks in memory whatever the artifact's size; a fetch writes chunks to `dest` in order, only
//! after each has the length the record implies, and succeeds only when the whole hashes to the record's
//! SHA-256; a chunk operation that fails is tried again up to [`CHUNK_ATTEMPTS`] times in all.

pub mod debug;

use crate::node::{Command, DhtOp, DhtRequest};
use control::records::ArtifactRecord;
use dht::{DhtError, CHUNK_BYTES};
use net::NetHandle;
use sha2::{Digest as _, Sha256};
use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::Duration;
use vocab::Artifact;

/// Chunk operations of one call outstanding at once.
pub const IN_FLIGHT: usize = 4;
/// Tries of one chunk operation before the call fails.
pub const CHUNK_ATTEMPTS: usize = 3;
/// How long one chunk operation may take.
pub const CHUNK_DEADLINE: Duration = Duration::from_secs(10);
/// The largest artifact a catalog record may describe: the largest `[artifacts] max_bytes` any node may be
/// configured with, so whatever one node took in an upload every other node can fetch and delete.
pub const ARTIFACT_BYTES_MAX: u64 = crate::artifacts_config::MAX_BYTES_MAX;

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

fn fail(reason: impl Into<String>) -> BlobError {
    BlobError { reason: reason.into() }
}

/// The key of chunk `index` of the upload of `artifact` that `record` describes.
pub fn chunk_key(artifact: &Artifact, record: &ArtifactRecord, index: u64) -> String {
    let sha256 = record.sha256.to_ascii_lowercase();
    if record.upload.is_empty() {
        format!("artifact/{artifact}/{sha256}/{index}")
    } else {
        format!("artifact/{artifact}/{sha256}/{}/{index}", record.upload)
    }
}

/// Chunks of an object of `size` bytes.
pub fn chunk_count(size: u64) -> u64 {
    size.div_ceil(CHUNK_BYTES as u64)
}

/// The length chunk `index` of an object of `size` bytes has.
fn chunk_len(size: u64, index: u64) -> u64 {
    size.saturating_sub(index * CHUNK_BYTES as u64).min(CHUNK_BYTES as u64)
}

type Answer = Result<Option<Vec<u8>>, DhtError>;

/// A handle on this node's DHT for whole artifacts.
#[derive(Clone)]
pub struct Blobs {
    handle: NetHandle<Command>,
}

impl Blobs {
    pub fn new(handle: NetHandle<Command>) -> Blobs {
        Blobs { handle }
    }

    /// Stores `bytes`, the upload `record` describes (its size and SHA-256 checked against them), as chunks;
    /// returns once every chunk has a write quorum.
    pub fn store(&self, artifact: &Artifact, bytes: &[u8], record: &ArtifactRecord) -> Result<(), BlobError> {
        let expected = expected_digest(artifact, record)?;
        if record.size != bytes.len() as u64 || container::integrity::sha256(bytes) != expected {
            return Err(fail(format!("{artifact}: the bytes to store are not the ones the catalog record describes")));
        }
        let count = chunk_count(bytes.len() as u64);
        let op = |index: u64| {
            let start = usize::try_from(index).unwrap_or(usize::MAX).saturating_mul(CHUNK_BYTES).min(bytes.len());
            let end = start.saturating_add(CHUNK_BYTES).min(bytes.len());
            DhtOp::Put { key: chunk_key(artifact, record, index), value: bytes[start..end].to_vec() }
        };
        self.pipeline(count, op, |_, _| Ok(()), |_, _| Ok(()))
            .map_err(|e| fail(format!("{artifact}: storing in the storage plane failed: {e}")))
    }

    /// Writes the artifact's bytes, as `record` describes them, to `dest`, checking each chunk arrives and
    /// the whole hashes to `record.sha256`; on error the caller discards what `dest` got.
    pub fn fetch(
        &self,
        artifact: &Artifact,
        record: &ArtifactRecord,
        dest: &mut dyn std::io::Write,
    ) -> Result<(), BlobError> {
        let expected = expected_digest(artifact, record)?;
        let size = record.size;
        let mut hasher = Sha256::new();
        let check = |index: u64, answer: &Option<Vec<u8>>| match answer {
            None => Err(format!("chunk {index} is absent")),
            Some(bytes) if bytes.len() as u64 != chunk_len(size, index) => {
                Err(format!("chunk {index} has {} bytes, not {}", bytes.len(), chunk_len(size, index)))
            }
            Some(_) => Ok(()),
        };
        let consume = |_: u64, answer: Option<Vec<u8>>| {
            let bytes = answer.unwrap_or_default();
            hasher.update(&bytes);
            dest.write_all(&bytes).map_err(|e| format!("writing the library: {e}"))
        };
        let op = |index: u64| DhtOp::Get { key: chunk_key(artifact, record, index) };
        self.pipeline(chunk_count(size), op, check, consume)
            .map_err(|e| fail(format!("{artifact}: fetching from the storage plane failed: {e}")))?;
        dest.flush().map_err(|e| fail(format!("{artifact}: writing the library: {e}")))?;
        let found: [u8; 32] = hasher.finalize().into();
        if found != expected {
            return Err(fail(format!(
                "{artifact}: the bytes the storage plane gave hash to {}, the catalog says {}",
                container::integrity::to_hex(&found),
                record.sha256
            )));
        }
        Ok(())
    }

    /// Deletes the chunks `record` describes.
    pub fn delete(&self, artifact: &Artifact, record: &ArtifactRecord) -> Result<(), BlobError> {
        let op = |index: u64| DhtOp::Delete { key: chunk_key(artifact, record, index) };
        self.pipeline(chunk_count(record.size.min(ARTIFACT_BYTES_MAX)), op, |_, _| Ok(()), |_, _| Ok(()))
            .map_err(|e| fail(format!("{artifact}: deleting from the storage plane failed: {e}")))
    }

    /// Runs `op(index)` for every index below `count`, [`IN_FLIGHT`] at a time, handing the answers to
    /// `consume` in index order. An operation that fails, or whose answer `check` refuses, is tried again up
    /// to [`CHUNK_ATTEMPTS`] times in all.
    fn pipeline(
        &self,
        count: u64,
        op: impl Fn(u64) -> DhtOp,
        check: impl Fn(u64, &Option<Vec<u8>>) -> Result<(), String>,
        mut consume: impl FnMut(u64, Option<Vec<u8>>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut in_flight: VecDeque<(u64, mpsc::Receiver<Answer>)> = VecDeque::new();
        let mut next = 0;
        loop {
            while next < count && in_flight.len() < IN_FLIGHT {
                in_flight.push_back((next, self.send(op(next))?));
                next += 1;
            }
            let Some((index, rx)) = in_flight.pop_front() else { return Ok(()) };
            let mut answer = wait(&rx).and_then(|a| check(index, &a).map(|()| a));
            let mut attempts = 1;
            while let Err(e) = &answer {
                if attempts >= CHUNK_ATTEMPTS {
                    return Err(format!("chunk {index} of {count}: {e} ({attempts} attempts)"));
                }
                log::debug!("chunk {index} of {count}: {e}; trying again");
                attempts += 1;
                let rx = self.send(op(index))?;
                answer = wait(&rx).and_then(|a| check(index, &a).map(|()| a));
            }
            if let Ok(value) = answer {
                consume(index, value)?;
            }
        }
    }

    fn send(&self, op: DhtOp) -> Result<mpsc::Receiver<Answer>, String> {
        let (reply, rx) = mpsc::channel();
        self.handle.command(Command::Dht(DhtRequest { op, reply })).map_err(|_| "the node is stopping".to_owned())?;
        Ok(rx)
    }
}

/// One chunk operation's answer, within [`CHUNK_DEADLINE`].
fn wait(rx: &mpsc::Receiver<Answer>) -> Result<Option<Vec<u8>>, String> {
    match rx.recv_timeout(CHUNK_DEADLINE) {
        Ok(answer) => answer.map_err(|e| e.to_string()),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("no answer within {} s", CHUNK_DEADLINE.as_secs())),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the node dropped the request (stopping?)".to_owned()),
    }
}

/// The record's SHA-256, once its size and digest are checked as fit to describe a library.
fn expected_digest(artifact: &Artifact, record: &ArtifactRecord) -> Result<[u8; 32], BlobError> {
    if record.size > ARTIFACT_BYTES_MAX {
        return Err(fail(format!(
            "{artifact}: the catalog record says {} bytes, over the {ARTIFACT_BYTES_MAX}-byte limit",
            record.size
        )));
    }
    container::integrity::from_hex::<32>(&record.sha256)
        .map_err(|e| fail(format!("{artifact}: the catalog record's sha256 is not a SHA-256: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_object_exactly() {
        assert_eq!(chunk_count(0), 0);
        assert_eq!(chunk_count(1), 1);
        let chunk = CHUNK_BYTES as u64;
        assert_eq!(chunk_count(chunk), 1);
        assert_eq!(chunk_count(chunk + 1), 2);
        assert_eq!((chunk_len(chunk + 1, 0), chunk_len(chunk + 1, 1)), (chunk, 1));
        assert_eq!(chunk_len(5, 0), 5);
        let artifact = Artifact::parse("org.x:y:1.0.0").unwrap();
        let mut record = ArtifactRecord {
            size: 3,
            sha256: "AB".into(),
            sha1: String::new(),
            md5: String::new(),
            signature: None,
            uploaded_ms: 1,
            node: "node-1".into(),
            upload: "node-1.1.0".into(),
        };
        assert_eq!(chunk_key(&artifact, &record, 3), "artifact/org.x:y:1.0.0/ab/node-1.1.0/3");
        record.upload.clear();
        assert_eq!(chunk_key(&artifact, &record, 3), "artifact/org.x:y:1.0.0/ab/3");
    }

    fn record(size: u64) -> ArtifactRecord {
        ArtifactRecord {
            size,
            sha256: "ab".repeat(32),
            sha1: String::new(),
            md5: String::new(),
            signature: None,
            uploaded_ms: 0,
            node: "node-1".into(),
            upload: "node-1.0.0".into(),
        }
    }

    /// An upload any node may take (up to the largest `[artifacts] max_bytes`) is one every node can fetch
    /// and delete: a 100 MiB library uploaded to a node with `max_bytes = 104857600` is no orphan.
    #[test]
    fn every_size_a_node_may_take_is_fetchable_and_deletable() {
        let artifact = Artifact::parse("org.x:y:1.0.0").unwrap();
        let largest = crate::artifacts_config::MAX_BYTES_MAX;
        assert!(expected_digest(&artifact, &record(100 * 1024 * 1024)).is_ok());
        assert!(expected_digest(&artifact, &record(largest)).is_ok());
        assert!(expected_digest(&artifact, &record(largest + 1)).is_err());
        assert!(ARTIFACT_BYTES_MAX >= mgmt::ARTIFACT_BYTES_MAX as u64);
    }
}
