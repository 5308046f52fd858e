//! This node's repository folder, the cache the container loads slice libraries from (Maven layout,
//! `{artifact}-{version}.so` with `.so.sha256` and, when signed, `.so.sig` beside it), and the check of an
//! uploaded library before the repository takes it.
//!
//! The repository's truth is the catalog and the storage plane (`mgmt::repository`, `crate::blobs`); this
//! folder holds what was uploaded here or fetched (`deploy::Provisioner`), plus any library an operator put
//! there by hand (a seed). A stored library has its checksum file (and signature file) beside it, written
//! first, each to a temporary name, synced and renamed; the library itself is renamed into the Maven layout
//! last, so a loader never sees half a library, and one that sees a library with another upload's checksum
//! refuses it.
//!
//! An upload is checked by loading it, as a deployment would, in a container of its own over a staging
//! folder (`{data_dir}/upload-check`): the descriptor must load (ABI version) and name the coordinates
//! (`info.name` = the artifact id, `info.version` = the version, as `container` checks at every load).
//! Loading runs no slice code but the library's initialisers (SDK libraries have none), as the blueprint
//! route check already does; only an operator may upload.
//!
//! Invariants: nothing is stored whose bytes do not hash to the digest it came with; reads are bounded by
//! the size the catalog records; one upload check runs at a time (uploads are rare, and they share the
//! staging folder).

use container::integrity::{self, Digest};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A whole artifact with its integrity data, as uploaded (borrowed: an upload's bytes are not copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact<'a> {
    /// `group:artifact:version`.
    pub coords: String,
    pub bytes: &'a [u8],
    pub sha256: Digest,
    pub signature: Option<[u8; 64]>,
}

/// Where `artifact` lives in a Maven-layout repository.
pub fn repository_file(repo: &Path, artifact: &str) -> Result<PathBuf, String> {
    let coords = container::Artifact::parse(artifact).map_err(|e| e.to_string())?;
    Ok(repo.join(coords.repository_path()))
}

/// Writes an artifact into the repository: its checksum file, its signature file (or none: a stale one
/// is removed), then the library, each to a temporary name, synced, and renamed into place. Answers the
/// library's path. Refuses bytes that do not hash to `sha256`.
pub fn store(repo: &Path, artifact: &Artifact<'_>) -> Result<PathBuf, String> {
    if integrity::sha256(artifact.bytes) != artifact.sha256 {
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
    integrity::write_atomically(&path, artifact.bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(path)
}

/// Removes a version's library and sidecars from the folder; absent files are not an error.
pub fn remove(repo: &Path, artifact: &kvstore::Artifact) -> Result<(), String> {
    let path = repo.join(artifact.repository_path());
    for file in [integrity::signature_file(&path), integrity::checksum_file(&path), path.clone()] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(format!("cannot remove {}: {e}", artifact.repository_path().display()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// The cached library's bytes when the folder holds exactly `size` bytes hashing to `sha256_hex`.
pub fn read_cached(repo: &Path, artifact: &kvstore::Artifact, size: u64, sha256_hex: &str) -> Option<Vec<u8>> {
    let file = std::fs::File::open(repo.join(artifact.repository_path())).ok()?;
    if file.metadata().ok()?.len() != size {
        return None;
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).ok()?);
    file.take(size + 1).read_to_end(&mut bytes).ok()?;
    let matches = bytes.len() as u64 == size && integrity::to_hex(&integrity::sha256(&bytes)) == sha256_hex;
    matches.then_some(bytes)
}

/// Loads uploaded libraries in a container of their own to check them before the repository takes them.
pub struct LibraryCheck {
    container: container::Container,
    staging: PathBuf,
    one_at_a_time: parking_lot::Mutex<()>,
}

impl LibraryCheck {
    /// The checker over `{data_dir}/upload-check` (emptied now: what is there was left by a stopped check).
    pub fn new(data_dir: &Path, node_id: &str) -> Result<LibraryCheck, String> {
        let root = data_dir.join("upload-check");
        let staging = root.join("repository");
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        let mut config = container::ContainerConfig::new(&staging, node_id);
        config.work_dir = root.join("loaded");
        config.pool.workers = 1;
        let container = container::Container::new(config).map_err(|e| e.to_string())?;
        Ok(LibraryCheck { container, staging, one_at_a_time: parking_lot::Mutex::new(()) })
    }

    /// Loads the library as `artifact` and unloads it; `Err` says why it is no slice library of these
    /// coordinates, in words for the uploader.
    pub fn check(&self, artifact: &kvstore::Artifact, bytes: &[u8], sha256: &Digest) -> Result<(), String> {
        let _one = self.one_at_a_time.lock();
        let staged = Artifact { coords: artifact.to_string(), bytes, sha256: *sha256, signature: None };
        store(&self.staging, &staged).map_err(|e| format!("cannot stage the library for its check: {e}"))?;
        let loaded = self.container.load(artifact, Vec::new());
        let outcome = match loaded {
            Ok(id) => {
                if let Err(e) = self.container.unload(id) {
                    log::warn!("{artifact}: unloading after the upload check: {e}");
                }
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = remove(&self.staging, artifact) {
            log::warn!("{artifact}: cleaning the upload check's folder: {e}");
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(coords: &str, bytes: &'static [u8], signature: Option<[u8; 64]>) -> Artifact<'static> {
        Artifact { coords: coords.into(), sha256: integrity::sha256(bytes), bytes, signature }
    }

    #[test]
    fn store_writes_the_maven_layout_with_checksum_and_signature_files() {
        let repo = std::env::temp_dir().join(format!("aether-artifacts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&repo);
        let signed = artifact("org.example:thing:1.2.3", b"bytes", Some([3; 64]));
        let path = store(&repo, &signed).unwrap();
        assert!(path.ends_with("org/example/thing/1.2.3/thing-1.2.3.so"));
        assert_eq!(std::fs::read(&path).unwrap(), b"bytes");
        let keys = integrity::TrustedKeys::default();
        assert_eq!(integrity::check(&path, b"bytes", &keys).unwrap(), signed.sha256);
        assert_eq!(std::fs::read_to_string(integrity::signature_file(&path)).unwrap().trim(), "03".repeat(64));

        // A new upload of the same version without a signature leaves no stale signature behind.
        let unsigned = artifact("org.example:thing:1.2.3", b"other", None);
        store(&repo, &unsigned).unwrap();
        assert!(!integrity::signature_file(&path).exists());
        assert_eq!(integrity::check(&path, b"other", &keys).unwrap(), unsigned.sha256);

        let mut lying = artifact("org.example:thing:1.2.4", b"bytes", None);
        lying.sha256[0] ^= 1;
        assert!(store(&repo, &lying).is_err());
        assert!(!repository_file(&repo, "org.example:thing:1.2.4").unwrap().exists(), "nothing stored");
        assert!(store(&repo, &artifact("not coordinates", b"x", None)).is_err());

        // The cache answers only bytes of the recorded size and digest, and a removal takes the sidecars too.
        let coords = kvstore::Artifact::parse("org.example:thing:1.2.3").unwrap();
        let hex = integrity::to_hex(&unsigned.sha256);
        assert_eq!(read_cached(&repo, &coords, 5, &hex), Some(b"other".to_vec()));
        assert_eq!(read_cached(&repo, &coords, 6, &hex), None);
        assert_eq!(read_cached(&repo, &coords, 5, &integrity::to_hex(&signed.sha256)), None);
        remove(&repo, &coords).unwrap();
        assert!(!path.exists() && !integrity::checksum_file(&path).exists());
        remove(&repo, &coords).unwrap();
        let _ = std::fs::remove_dir_all(&repo);
    }
}
