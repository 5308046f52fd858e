//! The repository's routes against the test backend: uploads and their refusals (409, 413, 422), the
//! Maven files computed from the catalog, sidecar uploads, and deletes refused while a blueprint uses a version.

use crate::repository_path::Checksum;
use crate::server::{Request, Response};
use crate::test_backend::StoreBackend;
use control::records::{ArtifactRecord, BlueprintRecord, Record};
use serde_json::json;

const DIR: &str = "repository/org/example/echo/1.0.0";

fn library(identity: &str, extra: &str) -> Vec<u8> {
    format!("\x7fELF library of {identity} {extra}").into_bytes()
}

fn call(backend: &StoreBackend, method: &str, path: &str, body: &[u8]) -> Response {
    let request = Request { method: method.into(), path: path.into(), body: body.to_vec(), ..Request::default() };
    crate::api::route(backend, &request)
}

fn text(response: &Response) -> String {
    response.text.as_ref().map(|(_, bytes)| String::from_utf8_lossy(bytes).into_owned()).unwrap_or_default()
}

fn record(backend: &StoreBackend, coords: &str) -> Option<ArtifactRecord> {
    let key = format!("artifacts/{coords}").parse().unwrap();
    let entry = crate::Backend::kv_get(backend, &key, false).unwrap()?;
    Some(ArtifactRecord::decode(&entry.value).unwrap())
}

fn use_in_blueprint(backend: &StoreBackend, name: &str, coords: &str) {
    let toml = format!("name = \"{name}\"\n[[slices]]\nartifact = \"{coords}\"\n");
    let blueprint = control::blueprint::parse(&toml, &|_| true).unwrap();
    let value = String::from_utf8(BlueprintRecord { toml, blueprint }.encode()).unwrap();
    backend.put(&format!("blueprints/{name}"), &value);
}

#[test]
fn an_upload_is_served_back_with_sidecars_and_metadata_from_the_catalog() {
    let backend = StoreBackend::default();
    let bytes = library("echo-1.0.0", "");
    let put = call(&backend, "PUT", &format!("{DIR}/echo-1.0.0.so"), &bytes);
    assert_eq!(put.status, 201, "{}", put.body);
    assert_eq!(put.body["file"], json!("org/example/echo/1.0.0/echo-1.0.0.so"));
    let stored = record(&backend, "org.example:echo:1.0.0").unwrap();
    assert_eq!((stored.size, stored.node.as_str()), (bytes.len() as u64, "node-1"));
    assert_eq!(backend.cache.lock().unwrap().get("org.example:echo:1.0.0"), Some(&bytes));

    let got = call(&backend, "GET", &format!("{DIR}/echo-1.0.0.so"), b"");
    assert_eq!(got.status, 200);
    assert_eq!(got.text.as_ref().map(|(_, b)| b.clone()), Some(bytes.clone()));
    for checksum in [Checksum::Sha1, Checksum::Md5, Checksum::Sha256] {
        let sidecar = call(&backend, "GET", &format!("{DIR}/echo-1.0.0.so.{}", checksum.extension()), b"");
        assert_eq!((sidecar.status, text(&sidecar)), (200, checksum.hex(&bytes)));
    }

    let metadata = call(&backend, "GET", "repository/org/example/echo/maven-metadata.xml", b"");
    assert_eq!(metadata.status, 200);
    let xml = text(&metadata);
    assert!(xml.contains("<release>1.0.0</release>") && xml.contains("<version>1.0.0</version>"), "{xml}");
    let sha1 = call(&backend, "GET", "repository/org/example/echo/maven-metadata.xml.sha1", b"");
    assert_eq!(text(&sha1), Checksum::Sha1.hex(xml.as_bytes()));
    assert_eq!(call(&backend, "GET", "repository/org/example/other/maven-metadata.xml", b"").status, 404);
    assert_eq!(call(&backend, "GET", "repository/org/example/echo/2.0.0/echo-2.0.0.so", b"").status, 404);

    let listed = call(&backend, "GET", "api/artifacts", b"");
    assert_eq!(listed.body["artifacts"][0]["sha256"], json!(stored.sha256), "{}", listed.body);
    assert_eq!(listed.body["local_only"], json!([]), "the cached file is the catalog's");
    let info = call(&backend, "GET", "api/artifacts/org.example/echo/1.0.0", b"");
    assert_eq!((info.status, &info.body["md5"]), (200, &json!(stored.md5)));
}

#[test]
fn a_release_is_immutable_and_a_snapshot_is_replaced() {
    let backend = StoreBackend::default();
    let first = library("echo-1.0.0", "first");
    assert_eq!(call(&backend, "POST", "api/artifacts/org.example/echo/1.0.0", &first).status, 201);
    let writes = *backend.writes.lock().unwrap();
    let again = call(&backend, "PUT", &format!("{DIR}/echo-1.0.0.so"), &first);
    assert_eq!((again.status, &again.body["unchanged"]), (200, &json!(true)), "{}", again.body);
    assert_eq!(*backend.writes.lock().unwrap(), writes, "nothing rewritten");

    let other = call(&backend, "PUT", "api/artifacts/org.example/echo/1.0.0", &library("echo-1.0.0", "second"));
    assert_eq!((other.status, &other.body["error"]), (409, &json!("release_exists")), "{}", other.body);
    let stored = record(&backend, "org.example:echo:1.0.0").unwrap();
    assert!(other.body["detail"].as_str().unwrap().contains(&stored.sha256), "{}", other.body);
    assert_eq!(other.body["sha256"], json!(stored.sha256));

    let snapshot = "api/artifacts/org.example/echo/1.1.0-SNAPSHOT";
    assert_eq!(call(&backend, "PUT", snapshot, &library("echo-1.1.0-SNAPSHOT", "a")).status, 201);
    let old = record(&backend, "org.example:echo:1.1.0-SNAPSHOT").unwrap();
    assert_eq!(call(&backend, "PUT", snapshot, &library("echo-1.1.0-SNAPSHOT", "b")).status, 201);
    let new = record(&backend, "org.example:echo:1.1.0-SNAPSHOT").unwrap();
    assert_ne!(old.sha256, new.sha256);
    let blobs = backend.blobs.lock().unwrap();
    let held = |sha: &str| blobs.keys().any(|k| k.starts_with(&format!("org.example:echo:1.1.0-SNAPSHOT/{sha}/")));
    assert!(!held(&old.sha256), "replaced bytes go");
    assert!(held(&new.sha256));
}

#[test]
fn oversized_non_elf_and_wrong_descriptor_uploads_store_nothing() {
    let backend = StoreBackend { bytes_max: 40, ..StoreBackend::default() };
    let path = format!("{DIR}/echo-1.0.0.so");
    let big = call(&backend, "PUT", &path, &library("echo-1.0.0", &"x".repeat(40)));
    assert_eq!(big.status, 413, "{}", big.body);
    assert!(big.body["detail"].as_str().unwrap().contains("at most 40"), "{}", big.body);
    let not_elf = call(&backend, "PUT", &path, b"#!/bin/sh echo-1.0.0");
    assert_eq!((not_elf.status, &not_elf.body["error"]), (422, &json!("not_a_library")));
    let other = call(&backend, "PUT", &path, &library("echo-2.0.0", ""));
    assert_eq!(other.status, 422, "{}", other.body);
    assert!(other.body["detail"].as_str().unwrap().contains("echo-1.0.0"), "{}", other.body);
    assert_eq!(record(&backend, "org.example:echo:1.0.0"), None);
    assert!(backend.blobs.lock().unwrap().is_empty() && backend.cache.lock().unwrap().is_empty());
}

#[test]
fn sidecar_uploads_are_checked_against_the_library_or_ignored_before_it() {
    let backend = StoreBackend::default();
    let bytes = library("echo-1.0.0", "");
    let sha1 = format!("{DIR}/echo-1.0.0.so.sha1");
    let early = call(&backend, "PUT", &sha1, b"0000");
    assert_eq!((early.status, &early.body["ignored"]), (200, &json!(true)));
    assert_eq!(call(&backend, "PUT", &format!("{DIR}/echo-1.0.0.so"), &bytes).status, 201);
    let right = format!("{}  echo-1.0.0.so\n", Checksum::Sha1.hex(&bytes).to_uppercase());
    assert_eq!(call(&backend, "PUT", &sha1, right.as_bytes()).status, 200);
    let wrong = call(&backend, "PUT", &format!("{DIR}/echo-1.0.0.so.md5"), b"ffff");
    assert_eq!((wrong.status, &wrong.body["error"]), (409, &json!("checksum_mismatch")));
    let metadata = call(&backend, "PUT", "repository/org/example/echo/maven-metadata.xml", b"<metadata/>");
    assert_eq!(metadata.status, 200);
}

#[test]
fn a_version_a_blueprint_uses_is_not_deleted() {
    let backend = StoreBackend::default();
    let bytes = library("echo-1.0.0", "");
    assert_eq!(call(&backend, "PUT", &format!("{DIR}/echo-1.0.0.so"), &bytes).status, 201);
    use_in_blueprint(&backend, "shop", "org.example:echo:1.0.0");
    let listed = call(&backend, "GET", "api/artifacts", b"");
    assert_eq!(listed.body["artifacts"][0]["used_by"], json!(["shop"]));
    let refused = call(&backend, "DELETE", "api/artifacts/org.example/echo/1.0.0", b"");
    assert_eq!((refused.status, &refused.body["blueprints"]), (409, &json!(["shop"])), "{}", refused.body);
    assert!(record(&backend, "org.example:echo:1.0.0").is_some());

    backend.remove("blueprints/shop");
    let deleted = call(&backend, "DELETE", &format!("{DIR}/echo-1.0.0.so"), b"");
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    assert_eq!(record(&backend, "org.example:echo:1.0.0"), None);
    assert!(backend.blobs.lock().unwrap().is_empty() && backend.cache.lock().unwrap().is_empty());
    assert_eq!(call(&backend, "GET", &format!("{DIR}/echo-1.0.0.so"), b"").status, 404);
    assert_eq!(call(&backend, "DELETE", "api/artifacts/org.example/echo/1.0.0", b"").status, 404);
}

#[test]
fn hostile_repository_paths_answer_400_or_404_and_wrong_methods_405() {
    let backend = StoreBackend::default();
    for path in [
        "repository/org/example/../echo/1.0.0/echo-1.0.0.so",
        "repository/org//echo/1.0.0/echo-1.0.0.so",
        "repository/",
        "repository/org/example/echo/1.0.0/other-1.0.0.so",
    ] {
        assert_eq!(call(&backend, "GET", path, b"").status, 400, "{path}");
        assert_eq!(call(&backend, "PUT", path, b"\x7fELF").status, 400, "{path}");
    }
    assert_eq!(call(&backend, "GET", "repository", b"").status, 404);
    assert_eq!(call(&backend, "POST", &format!("{DIR}/echo-1.0.0.so"), b"").status, 405);
    assert_eq!(call(&backend, "DELETE", &format!("{DIR}/echo-1.0.0.so.sha1"), b"").status, 405);
    assert_eq!(
        crate::allowed_methods("repository/org/example/echo/1.0.0/echo-1.0.0.so"),
        Some("GET, HEAD, PUT, DELETE")
    );
}

#[test]
fn an_upload_that_loses_the_race_for_a_release_keeps_the_winner_and_drops_its_own_bytes() {
    let backend = StoreBackend::default();
    let winner = library("echo-1.0.0", "winner");
    let winning = ArtifactRecord {
        size: winner.len() as u64,
        sha256: Checksum::Sha256.hex(&winner),
        sha1: Checksum::Sha1.hex(&winner),
        md5: Checksum::Md5.hex(&winner),
        signature: None,
        uploaded_ms: 1,
        node: "node-2".into(),
        upload: "node-2.1.0".into(),
    };
    let value = String::from_utf8(winning.encode()).unwrap();
    *backend.racing.lock().unwrap() = Some(("org.example:echo:1.0.0".into(), value));
    let loser = library("echo-1.0.0", "loser");
    let lost = call(&backend, "PUT", &format!("{DIR}/echo-1.0.0.so"), &loser);
    assert_eq!((lost.status, &lost.body["error"]), (409, &json!("release_exists")), "{}", lost.body);
    assert_eq!(lost.body["sha256"], json!(winning.sha256));
    assert_eq!(record(&backend, "org.example:echo:1.0.0"), Some(winning.clone()), "the winner's record stays");
    let blobs = backend.blobs.lock().unwrap();
    let loser_sha = Checksum::Sha256.hex(&loser);
    assert!(!blobs.keys().any(|k| k.starts_with(&format!("org.example:echo:1.0.0/{loser_sha}/"))));
    assert!(backend.cache.lock().unwrap().is_empty(), "the loser is not cached");
}

#[test]
fn a_method_the_repository_never_serves_is_a_405_before_the_path_is_read() {
    let backend = StoreBackend::default();
    for path in ["repository/0", &format!("{DIR}/echo-1.0.0.so")] {
        let answer = call(&backend, "TRACE", path, b"");
        assert_eq!(answer.status, 405, "{path}: {}", answer.body);
    }
}
