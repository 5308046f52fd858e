//! The artifact repository: Maven's layout under `/repository/` (`PUT`, `GET`/`HEAD`, `DELETE` of a version's
//! library, its checksum sidecars and the artifact's `maven-metadata.xml`) and the catalog views under
//! `/api/artifacts` (list, one version, delete; `POST`/`PUT` of a version is an upload, as on the repository).
//!
//! The catalog (`artifacts/{group:artifact:version}` records, written through consensus) is the truth:
//! listings, metadata and sidecars are computed from it; the bytes are in the storage plane and this node's
//! repository folder is a cache (both reached through the [`Backend`]).
//!
//! An upload is checked before anything is stored: size (`[artifacts] max_bytes`, 413), an ELF file (422),
//! the node's library checks (descriptor loads, names these coordinates, signature rules; 422/400), and the
//! release rule: a release version is immutable (the same bytes again answer 200 and change nothing, other
//! bytes 409 naming the stored SHA-256), a `-SNAPSHOT` may be replaced. Then the bytes go to the storage
//! plane, then the catalog record (compare-and-set: created once for a release, so two nodes racing to
//! upload other bytes cannot both win), then this node's cache.
//!
//! A checksum sidecar `PUT` (Maven clients send them after the library) is checked against the catalog
//! record: equal answers 200, different 409; before the library is there it is ignored with 200, since the
//! sums are always computed from the library's own bytes and a client's copy is never kept.
//!
//! Invariant: a version a blueprint names is never deleted (409 naming the blueprints).

use crate::api::{ArtifactUpload, Backend};
use crate::error::ApiError;
use crate::maven_metadata::{self, is_snapshot};
use crate::repository_path::{self, Checksum, RepoPath};
use crate::server::{Request, Response};
use control::records::{ArtifactRecord, BlueprintRecord, Record};
use kvstore::{AetherKey, Artifact, Command, Revision};
use log::warn;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// `/repository/{rest}`.
pub fn route(backend: &dyn Backend, req: &Request, rest: &str) -> Result<Response, ApiError> {
    // A method the repository never serves is a 405 whatever the path, before the path is read.
    if !matches!(req.method.as_str(), "GET" | "HEAD" | "PUT" | "DELETE") {
        let detail = format!("{} is not allowed on /repository/ (GET, HEAD, PUT, DELETE)", req.method);
        return Err(ApiError::new(405, "method_not_allowed", detail));
    }
    let path = repository_path::parse(rest)?;
    match (req.method.as_str(), path) {
        ("GET", RepoPath::Metadata { group, id, checksum }) => metadata(backend, &group, &id, checksum),
        ("GET", RepoPath::Library { artifact, checksum: None }) => library(backend, &artifact),
        ("GET", RepoPath::Library { artifact, checksum: Some(c) }) => sidecar(backend, &artifact, c),
        ("PUT", RepoPath::Library { artifact, checksum: None }) => crate::upload::upload(backend, &artifact, req),
        ("PUT", RepoPath::Library { artifact, checksum: Some(c) }) => put_sidecar(backend, &artifact, c, &req.body),
        ("PUT", RepoPath::Metadata { .. }) => Ok(Response::ok(json!({ "ignored": true,
            "detail": "maven-metadata.xml is computed from the catalog; an uploaded one is not kept" }))),
        ("DELETE", RepoPath::Library { artifact, checksum: None }) => delete(backend, &artifact),
        _ => Err(ApiError::new(405, "method_not_allowed", format!("{} is not allowed on /{}", req.method, req.path))),
    }
}

/// The catalog record of `artifact` and its KV version; `None` when the version was never uploaded.
pub fn catalog_entry(backend: &dyn Backend, artifact: &Artifact) -> Result<Option<(u64, ArtifactRecord)>, ApiError> {
    let key = AetherKey::ArtifactEntry { artifact: artifact.clone() };
    let Some(entry) = backend.kv_get(&key, false)? else { return Ok(None) };
    let record = ArtifactRecord::decode(&entry.value)
        .map_err(|e| ApiError::new(500, "internal", format!("the catalog record of {artifact}: {e}")))?;
    Ok(Some((entry.version, record)))
}

/// Every catalog record, by coordinates; records that do not decode are left out.
fn catalog(backend: &dyn Backend) -> Result<BTreeMap<Artifact, ArtifactRecord>, ApiError> {
    let mut found = BTreeMap::new();
    for entry in backend.kv_list("artifacts/", false)? {
        let Ok(AetherKey::ArtifactEntry { artifact }) = entry.key.parse::<AetherKey>() else { continue };
        let Ok(record) = ArtifactRecord::decode(&entry.value) else { continue };
        found.insert(artifact, record);
    }
    Ok(found)
}

/// Which blueprints name each artifact version.
fn users(backend: &dyn Backend) -> Result<BTreeMap<Artifact, Vec<String>>, ApiError> {
    let mut used: BTreeMap<Artifact, Vec<String>> = BTreeMap::new();
    for entry in backend.kv_list("blueprints/", false)? {
        let Ok(record) = BlueprintRecord::decode(&entry.value) else { continue };
        for slice in &record.blueprint.slices {
            used.entry(slice.artifact.clone()).or_default().push(record.blueprint.name.to_string());
        }
    }
    Ok(used)
}

fn not_uploaded(artifact: &Artifact) -> ApiError {
    ApiError::not_found(format!("{artifact} is not in the repository"))
}

fn describe(artifact: &Artifact, record: &ArtifactRecord, used_by: &[String]) -> Value {
    json!({
        "artifact": artifact.to_string(),
        "group": artifact.group(),
        "id": artifact.id(),
        "version": artifact.version().to_string(),
        "size": record.size,
        "sha256": record.sha256,
        "sha1": record.sha1,
        "md5": record.md5,
        "signed": record.signature.is_some(),
        "uploaded_ms": record.uploaded_ms,
        "node": record.node,
        "file": repository_file(artifact),
        "used_by": used_by,
    })
}

/// The library's path below `/repository/`.
pub fn repository_file(artifact: &Artifact) -> String {
    format!(
        "{}/{}/{}/{}",
        artifact.group().replace('.', "/"),
        artifact.id(),
        artifact.version(),
        repository_path::library_file(artifact)
    )
}

/// `GET /api/artifacts`: the catalog, and libraries only this node's folder holds (seeds, loadable here).
pub fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let users = users(backend)?;
    let catalog = catalog(backend)?;
    let items: Vec<Value> = catalog
        .iter()
        .map(|(artifact, record)| describe(artifact, record, users.get(artifact).map_or(&[], Vec::as_slice)))
        .collect();
    let local_only: Vec<Value> = backend
        .artifacts()?
        .into_iter()
        .filter(|a| Artifact::parse(&a.artifact).map_or(true, |parsed| !catalog.contains_key(&parsed)))
        .map(|a| json!({ "artifact": a.artifact, "sha256": a.sha256, "signed": a.signed, "bytes": a.bytes }))
        .collect();
    Ok(Response::ok(json!({ "artifacts": items, "local_only": local_only })))
}

/// `GET /api/artifacts/{group}/{artifact}/{version}`.
pub fn info(backend: &dyn Backend, artifact: &Artifact) -> Result<Response, ApiError> {
    let (_, record) = catalog_entry(backend, artifact)?.ok_or_else(|| not_uploaded(artifact))?;
    let used_by = users(backend)?.remove(artifact).unwrap_or_default();
    Ok(Response::ok(describe(artifact, &record, &used_by)))
}

/// `DELETE /api/artifacts/{group}/{artifact}/{version}` and of the library's repository path.
pub fn delete(backend: &dyn Backend, artifact: &Artifact) -> Result<Response, ApiError> {
    let (version, record) = catalog_entry(backend, artifact)?.ok_or_else(|| not_uploaded(artifact))?;
    let used_by = users(backend)?.remove(artifact).unwrap_or_default();
    if !used_by.is_empty() {
        let mut refusal = ApiError::new(
            409,
            "artifact_in_use",
            format!("{artifact} is used by blueprint(s) {}; delete or change them first", used_by.join(", ")),
        );
        refusal.extra = Some(json!({ "blueprints": used_by }));
        return Err(refusal);
    }
    let key = AetherKey::ArtifactEntry { artifact: artifact.clone() };
    // The record goes first: from then on no node fetches the chunks, so deleting them races with nothing.
    backend.kv_write(Command::CompareAndRemove { key, expected: Revision(version) })?;
    let chunks = backend.delete_library(artifact, &record);
    if let Err(e) = &chunks {
        warn!("{artifact} left the catalog but its bytes could not all be deleted: {}", e.detail);
    }
    backend.record_event("artifact_deleted", json!({ "artifact": artifact.to_string(), "sha256": record.sha256 }));
    Ok(Response::ok(json!({
        "artifact": artifact.to_string(),
        "deleted": true,
        "bytes_deleted": chunks.is_ok(),
        "detail": chunks.err().map(|e| e.detail),
    })))
}

fn metadata(backend: &dyn Backend, group: &str, id: &str, checksum: Option<Checksum>) -> Result<Response, ApiError> {
    let versions: Vec<(kvstore::SemVer, u64)> = catalog(backend)?
        .into_iter()
        .filter(|(a, _)| a.group() == group && a.id() == id)
        .map(|(a, r)| (a.version().clone(), r.uploaded_ms))
        .collect();
    if versions.is_empty() {
        return Err(ApiError::not_found(format!("{group}:{id} has no version in the repository")));
    }
    let xml = maven_metadata::document(group, id, &versions);
    Ok(match checksum {
        None => Response::document(200, "application/xml", xml.into_bytes()),
        Some(c) => Response::document(200, "text/plain", c.hex(xml.as_bytes()).into_bytes()),
    })
}

fn record_sum(record: &ArtifactRecord, checksum: Checksum) -> &str {
    match checksum {
        Checksum::Sha1 => &record.sha1,
        Checksum::Md5 => &record.md5,
        Checksum::Sha256 => &record.sha256,
    }
}

fn sidecar(backend: &dyn Backend, artifact: &Artifact, checksum: Checksum) -> Result<Response, ApiError> {
    let (_, record) = catalog_entry(backend, artifact)?.ok_or_else(|| not_uploaded(artifact))?;
    Ok(Response::document(200, "text/plain", record_sum(&record, checksum).as_bytes().to_vec()))
}

fn put_sidecar(
    backend: &dyn Backend,
    artifact: &Artifact,
    checksum: Checksum,
    body: &[u8],
) -> Result<Response, ApiError> {
    // `sha1sum` writes "<hex>  <file>"; Maven writes the hex alone.
    let sent = std::str::from_utf8(body).ok().and_then(|t| t.split_whitespace().next()).unwrap_or("");
    let sent = sent.to_ascii_lowercase();
    let Some((_, record)) = catalog_entry(backend, artifact)? else {
        return Ok(Response::ok(json!({ "ignored": true, "detail": format!(
            "{artifact} is not uploaded yet; its checksums are computed from the library when it is"
        ) })));
    };
    let stored = record_sum(&record, checksum);
    if sent != stored {
        return Err(ApiError::new(
            409,
            "checksum_mismatch",
            format!("the stored library's {} is {stored}, the upload says '{}'", checksum.extension(), clip(&sent)),
        ));
    }
    Ok(Response::ok(json!({ "artifact": artifact.to_string(), checksum.extension(): stored, "matches": true })))
}

fn clip(text: &str) -> &str {
    let mut end = text.len().min(128);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn library(backend: &dyn Backend, artifact: &Artifact) -> Result<Response, ApiError> {
    let (_, record) = catalog_entry(backend, artifact)?.ok_or_else(|| not_uploaded(artifact))?;
    let bytes = backend.read_library(artifact, &record)?;
    Ok(Response::document(200, "application/octet-stream", bytes).with_header("X-Aether-Sha256", record.sha256))
}

/// The checks and writes of an upload (see the module comment); answers 201 for a new or replaced version,
/// 200 for a release uploaded again with the same bytes.
pub fn put_library(backend: &dyn Backend, artifact: &Artifact, upload: ArtifactUpload) -> Result<Response, ApiError> {
    let limit = backend.artifact_bytes_max();
    if upload.bytes.len() > limit {
        return Err(ApiError::new(
            413,
            "too_large",
            format!(
                "the library has {} bytes; this cluster takes at most {limit} ([artifacts] max_bytes)",
                upload.bytes.len()
            ),
        ));
    }
    if !upload.bytes.starts_with(b"\x7fELF") {
        return Err(ApiError::new(
            422,
            "not_a_library",
            "the body is not a shared library (no ELF header); nothing was stored",
        ));
    }
    let sha256 = repository_path::hex(&upload.sha256);
    let existing = catalog_entry(backend, artifact)?;
    if let Some((_, record)) = &existing {
        if !is_snapshot(artifact.version()) {
            return same_release(artifact, record, &sha256);
        }
    }
    backend.check_library(artifact, &upload)?;
    let node = backend.cluster_view()?.node;
    let uploaded_ms = now_ms();
    let upload_id = format!("{node}.{uploaded_ms}.{}", UPLOADS.fetch_add(1, Ordering::Relaxed));
    let record = ArtifactRecord {
        size: upload.bytes.len() as u64,
        sha256: sha256.clone(),
        sha1: Checksum::Sha1.hex(&upload.bytes),
        md5: Checksum::Md5.hex(&upload.bytes),
        signature: upload.signature.map(|s| repository_path::hex(&s)),
        uploaded_ms,
        node,
        upload: upload_id,
    };
    backend.store_library(artifact, &upload, &record)?;
    let key = AetherKey::ArtifactEntry { artifact: artifact.clone() };
    let expected = existing.as_ref().map(|(version, _)| Revision(*version));
    if let Err(e) = backend.kv_write(Command::CompareAndSet { key, expected, value: record.encode() }) {
        if e.status != 409 {
            return Err(e);
        }
        // Another upload of this version won the race: a release keeps the winner's bytes. The chunks just
        // stored are this upload's own (its id is in their keys), so they go whatever the winner holds.
        let winner = catalog_entry(backend, artifact)?;
        if let Err(e) = backend.delete_chunks(artifact, &record) {
            warn!("the bytes of a lost upload of {artifact} stay in the storage plane: {}", e.detail);
        }
        return match winner {
            Some((_, winner)) if !is_snapshot(artifact.version()) => same_release(artifact, &winner, &sha256),
            _ => Err(ApiError::new(
                409,
                "concurrent_upload",
                format!("{artifact} changed during the upload; send it again"),
            )),
        };
    }
    if let Some((_, old)) = existing.filter(|(_, old)| old.upload != record.upload) {
        if let Err(e) = backend.delete_chunks(artifact, &old) {
            warn!("the replaced bytes of {artifact} (sha256 {}) stay in the storage plane: {}", old.sha256, e.detail);
        }
    }
    let cached = backend.cache_library(artifact, &upload);
    if let Err(e) = &cached {
        warn!("{artifact} is stored but this node could not cache it: {}", e.detail);
    }
    let signed = upload.signature.is_some();
    let data = json!({ "artifact": artifact.to_string(), "bytes": record.size, "signed": signed, "sha256": sha256 });
    backend.record_event("artifact_uploaded", data);
    Ok(Response::new(
        201,
        json!({
            "artifact": artifact.to_string(),
            "bytes": record.size,
            "sha256": sha256,
            "sha1": record.sha1,
            "md5": record.md5,
            "signed": signed,
            "file": repository_file(artifact),
            "cached": cached.is_ok(),
        }),
    ))
}

/// A release is uploaded again: 200 when the bytes are the stored ones, else 409.
fn same_release(artifact: &Artifact, record: &ArtifactRecord, sha256: &str) -> Result<Response, ApiError> {
    if record.sha256 != sha256 {
        let mut refusal = ApiError::new(
            409,
            "release_exists",
            format!(
                "{artifact} is a release and is stored with sha256 {}; a release never changes: upload a new \
                 version (or a -SNAPSHOT)",
                record.sha256
            ),
        );
        refusal.extra = Some(json!({ "sha256": record.sha256 }));
        return Err(refusal);
    }
    Ok(Response::ok(json!({
        "artifact": artifact.to_string(),
        "bytes": record.size,
        "sha256": record.sha256,
        "signed": record.signature.is_some(),
        "file": repository_file(artifact),
        "unchanged": true,
    })))
}

/// Uploads this process took, the last part of an upload's id.
static UPLOADS: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}
