//! What `GET /api/artifacts` lists: the slice libraries in this node's repository folder (Maven layout,
//! `{group as folders}/{id}/{version}/{id}-{version}.so`), each with the digest its checksum file records,
//! whether a signature file lies beside it, and its size.
//!
//! Invariants: the walk is bounded ([`DEPTH_MAX`] folders deep, [`ENTRIES_MAX`] directory entries read) and
//! follows no symbolic link; a file is listed only when its place in the tree is exactly the repository path
//! of the coordinates it spells, so stray files never appear under a wrong name. Nothing is hashed here: the
//! checksum file is read (at most [`CHECKSUM_BYTES_MAX`] bytes), and is checked against the bytes only when
//! the library is loaded.

use container::integrity;
use mgmt::ArtifactInfo;
use std::path::Path;

/// Deepest folder looked into below the repository root (group parts + id + version).
const DEPTH_MAX: usize = 16;
/// Most directory entries read in one listing.
const ENTRIES_MAX: usize = 100_000;
/// Most bytes read of a checksum file (one line of `sha256sum`).
const CHECKSUM_BYTES_MAX: u64 = 1024;

/// Every library of `repository`, sorted by coordinates.
pub fn list(repository: &Path) -> Vec<ArtifactInfo> {
    let mut found = Vec::new();
    let mut budget = ENTRIES_MAX;
    walk(repository, repository, 0, &mut budget, &mut found);
    found.sort_by(|a, b| a.artifact.cmp(&b.artifact));
    found
}

fn walk(root: &Path, dir: &Path, depth: usize, budget: &mut usize, found: &mut Vec<ArtifactInfo>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        let Ok(kind) = entry.file_type() else { continue };
        let path = entry.path();
        if kind.is_dir() && depth < DEPTH_MAX {
            walk(root, &path, depth + 1, budget, found);
        } else if kind.is_file() && path.extension().is_some_and(|e| e == "so") {
            found.extend(describe(root, &path));
        }
    }
}

/// The library at `path`, if its place in the tree spells valid coordinates.
fn describe(root: &Path, path: &Path) -> Option<ArtifactInfo> {
    let relative = path.strip_prefix(root).ok()?;
    let parts: Vec<&str> = relative.iter().map(|p| p.to_str()).collect::<Option<_>>()?;
    let [group @ .., id, version, _file] = parts.as_slice() else { return None };
    if group.is_empty() {
        return None;
    }
    let coords = format!("{}:{id}:{version}", group.join("."));
    let artifact = container::Artifact::parse(&coords).ok()?;
    if artifact.repository_path() != relative {
        return None;
    }
    let bytes = std::fs::symlink_metadata(path).ok()?.len();
    Some(ArtifactInfo {
        artifact: coords,
        sha256: recorded_digest(path),
        signed: integrity::signature_file(path).is_file(),
        bytes,
    })
}

fn recorded_digest(library: &Path) -> Option<String> {
    use std::io::Read;
    let file = std::fs::File::open(integrity::checksum_file(library)).ok()?;
    let mut text = String::new();
    file.take(CHECKSUM_BYTES_MAX).read_to_string(&mut text).ok()?;
    integrity::parse_checksum_text(&text).ok().map(|d| integrity::to_hex(&d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libraries_are_listed_by_their_coordinates_with_digest_and_signature() {
        let root = std::env::temp_dir().join(format!("aether-listing-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("org/example/echo/1.0.0");
        std::fs::create_dir_all(&dir).unwrap();
        let library = dir.join("echo-1.0.0.so");
        std::fs::write(&library, b"\x7fELF").unwrap();
        let digest = integrity::sha256(b"\x7fELF");
        std::fs::write(integrity::checksum_file(&library), integrity::checksum_text(&digest, "echo-1.0.0.so")).unwrap();
        std::fs::write(integrity::signature_file(&library), "ab").unwrap();
        // Misplaced or misnamed files are not libraries of the repository.
        std::fs::write(dir.join("other-1.0.0.so"), b"x").unwrap();
        std::fs::write(root.join("stray.so"), b"x").unwrap();
        let unsigned = root.join("org/example/pricing/2.0.0");
        std::fs::create_dir_all(&unsigned).unwrap();
        std::fs::write(unsigned.join("pricing-2.0.0.so"), b"12345").unwrap();

        let listed = list(&root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            listed,
            [
                ArtifactInfo {
                    artifact: "org.example:echo:1.0.0".into(),
                    sha256: Some(integrity::to_hex(&digest)),
                    signed: true,
                    bytes: 4
                },
                ArtifactInfo { artifact: "org.example:pricing:2.0.0".into(), sha256: None, signed: false, bytes: 5 },
            ]
        );
        assert!(list(Path::new("/nonexistent/aether")).is_empty());
    }
}
