//! Fetch before load: before a deploy worker loads `g:a:v`, it makes sure this node's repository folder holds
//! the library the catalog (`artifacts/{g:a:v}`, read through the loop as a linearizable KV read) describes.
//! When the folder lacks the library, or its `.so.sha256` names another digest than the record, the library
//! is fetched from the storage plane (`blobs::Blobs::fetch`) into a temporary file in its Maven folder and
//! renamed into place, then its sidecars are written as `container::integrity` writes them (the signature when
//! the record has one, the checksum last); the container then loads it as it loads any library.
//!
//! A library in the folder that the catalog does not know still loads (the folder is a seed), unless it is
//! marked as a copy of the catalog's (`{library}.catalog`, written beside every fetched or uploaded copy): its
//! record is gone, so the version was deleted from the repository, and the copy is removed instead of loaded.
//! One present while the catalog cannot be read (no quorum) loads: the container's own check of the checksum
//! (and signature) decides as before.
//!
//! Invariants: a library file only ever appears in the folder whole and checked against the record's
//! SHA-256 (a failed fetch removes its temporary file); the checksum file names the record's digest only once
//! the library and its signature are in place, so a fetch cut short anywhere is fetched again at the next
//! load rather than trusted; every failure is one sentence naming the artifact, fit for the slice record's
//! reason.

use crate::blobs::Blobs;
use crate::node::Command;
use container::integrity;
use control::records::{ArtifactRecord, Record};
use kvstore::{AetherKey, Artifact};
use mgmt::{ApiError, KvEntry};
use net::NetHandle;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Duration;

/// How long the catalog read may take (a linearizable read goes through consensus).
const CATALOG_READ_DEADLINE: Duration = Duration::from_secs(6);

/// Brings libraries into this node's repository from the storage plane.
pub struct Provisioner {
    repository: PathBuf,
    handle: Arc<OnceLock<NetHandle<Command>>>,
}

impl Provisioner {
    pub fn new(repository: PathBuf, handle: Arc<OnceLock<NetHandle<Command>>>) -> Provisioner {
        Provisioner { repository, handle }
    }

    /// Makes sure the repository holds `artifact` as the catalog describes it (see the module documentation).
    pub fn ensure(&self, artifact: &Artifact) -> Result<(), String> {
        let library = self.repository.join(artifact.repository_path());
        let present = library.is_file();
        let record = match self.catalog(artifact) {
            Ok(Some(record)) => record,
            Ok(None) if present && crate::artifacts::catalog_marker(&library).exists() => {
                // A copy of a version the repository has since deleted: it goes, on every node that held it.
                crate::artifacts::remove(&self.repository, artifact)?;
                log::info!("{artifact}: deleted from the repository; this node's copy is removed");
                return Err(format!("{artifact} was deleted from the artifact repository; upload it again"));
            }
            Ok(None) => return Ok(()),
            Err(_) if present => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "{artifact}: not in this node's repository, and the artifact catalog cannot be read: {e}"
                ))
            }
        };
        let matches = |library: &Path| {
            std::fs::metadata(library).is_ok_and(|m| m.is_file() && m.len() == record.size)
                && local_digest(library).is_some_and(|hex| hex.eq_ignore_ascii_case(&record.sha256))
        };
        if matches(&library) {
            return Ok(());
        }
        // One fetch at a time on this node (deploy workers and management reads alike), and none when the
        // one before brought what the catalog names.
        let _fetching = FETCHING.lock();
        if matches(&library) {
            return Ok(());
        }
        let present = library.is_file();
        let why = if present { "this node's copy differs from the catalog" } else { "not in this node's repository" };
        log::info!("{artifact}: {why}; fetching it from the storage plane ({} bytes)", record.size);
        self.fetch(artifact, &record, &library)
            .map_err(|e| format!("{artifact}: {why} and the storage plane could not provide it: {e}"))?;
        log::info!("{artifact}: fetched from the storage plane into this node's repository");
        Ok(())
    }

    /// The catalog record, through the loop.
    fn catalog(&self, artifact: &Artifact) -> Result<Option<ArtifactRecord>, String> {
        let handle = self.handle.get().ok_or("the node is starting")?;
        let (reply, rx) = mpsc::channel::<Result<Option<KvEntry>, ApiError>>();
        let key = AetherKey::ArtifactEntry { artifact: artifact.clone() };
        handle.command(Command::KvGet { key, stale: false, reply }).map_err(|_| "the node is stopping")?;
        let entry = match rx.recv_timeout(CATALOG_READ_DEADLINE) {
            Ok(answer) => answer.map_err(|e| e.detail)?,
            Err(_) => return Err("the catalog read got no answer in time".into()),
        };
        entry.map(|e| ArtifactRecord::decode(&e.value).map_err(|e| e.to_string())).transpose()
    }

    /// Fetches into a temporary file beside `library`, renames it into place, writes the sidecars.
    fn fetch(&self, artifact: &Artifact, record: &ArtifactRecord, library: &Path) -> Result<(), String> {
        let handle = self.handle.get().ok_or("the node is starting")?;
        let digest = integrity::from_hex::<32>(&record.sha256).map_err(|e| format!("the catalog's sha256: {e}"))?;
        let signature = match &record.signature {
            Some(text) => {
                Some(integrity::from_hex_or_base64::<64>(text).map_err(|e| format!("the catalog's signature: {e}"))?)
            }
            None => None,
        };
        let dir = library.parent().ok_or("the library has no folder")?;
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create its repository folder: {e}"))?;
        let tmp = temporary_beside(library);
        let fetched = (|| {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| format!("cannot create a temporary file: {e}"))?;
            let mut writer = std::io::BufWriter::new(file);
            Blobs::new(handle.clone()).fetch(artifact, record, &mut writer).map_err(|e| {
                // The reason below names the artifact and the storage plane once, at the front.
                let said = [format!("{artifact}: fetching from the storage plane failed: "), format!("{artifact}: ")];
                said.iter().find_map(|p| e.reason.strip_prefix(p.as_str())).map_or(e.reason.clone(), str::to_owned)
            })?;
            let file = writer.into_inner().map_err(|e| format!("writing the library: {e}"))?;
            file.sync_all().map_err(|e| format!("syncing the library: {e}"))?;
            // The old checksum goes first: until the new one is written, the library is not trusted.
            match std::fs::remove_file(integrity::checksum_file(library)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(format!("removing its old checksum file: {e}"))
                }
                _ => {}
            }
            std::fs::rename(&tmp, library).map_err(|e| format!("moving the library into place: {e}"))?;
            match signature {
                Some(signature) => integrity::write_signature(library, &signature)
                    .map_err(|e| format!("writing its signature file: {e}"))?,
                None => match std::fs::remove_file(integrity::signature_file(library)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(format!("removing its old signature file: {e}"))
                    }
                    _ => {}
                },
            }
            integrity::write_checksum(library, &digest).map_err(|e| format!("writing its checksum file: {e}"))?;
            crate::artifacts::mark_from_catalog(library)
        })();
        if fetched.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        fetched
    }
}

/// The digest the library's checksum file names, if it names one.
fn local_digest(library: &Path) -> Option<String> {
    let text = std::fs::read(integrity::checksum_file(library)).ok()?;
    if text.len() > 4096 {
        return None;
    }
    let digest = integrity::parse_checksum_text(std::str::from_utf8(&text).ok()?).ok()?;
    Some(integrity::to_hex(&digest))
}

/// Held while a library is fetched into the repository.
static FETCHING: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

fn temporary_beside(library: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = library.file_name().map_or_else(|| "library".into(), |n| n.to_string_lossy().into_owned());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    library.with_file_name(format!(".{name}.fetch-{}-{n}.tmp", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_digest_is_the_checksum_files_first_field() {
        let dir = std::env::temp_dir().join(format!("aether-fetch-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("y-1.0.0.so");
        assert_eq!(local_digest(&library), None);
        let digest = integrity::sha256(b"bytes");
        integrity::write_checksum(&library, &digest).unwrap();
        assert_eq!(local_digest(&library), Some(integrity::to_hex(&digest)));
        let tmp = temporary_beside(&library);
        assert_eq!(tmp.parent(), library.parent());
        assert!(tmp.file_name().unwrap().to_string_lossy().starts_with(".y-1.0.0.so.fetch-"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
