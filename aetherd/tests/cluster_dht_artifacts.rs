//! Artifacts in the storage plane over real `aetherd` processes: a library uploaded to one node (its chunks
//! and its catalog record) loads on nodes whose repositories never had it, even once that node is
//! dead and on a node that was down while it was stored; a restarted node loads from its repository cache
//! without fetching again; a chunk file damaged on one node's disk is detected and repaired from a replica.

mod dht_support;

use container::integrity;
use devcluster::{example_slices_repo, http, wait_for};
use dht_support::{files, Cluster, SETTLE};
use serde_json::{json, Value};
use std::time::Duration;

const ECHO: &str = "org.aether.examples:echo:1.0.0";
const FETCHED: &str = "fetched from the storage plane";

fn echo_library() -> std::path::PathBuf {
    example_slices_repo().unwrap().join(container::Artifact::parse(ECHO).unwrap().repository_path())
}

/// Uploads the example echo library to node `i` (`PUT /repository/...`: its chunks, then its catalog
/// record); answers its SHA-256.
fn store_echo(cluster: &Cluster, i: usize) -> String {
    let bytes = std::fs::read(echo_library()).unwrap();
    let path = format!("/repository/{}", container::Artifact::parse(ECHO).unwrap().repository_path().display());
    let answer = http(cluster.c.nodes[i].management, "PUT", &path, &bytes).unwrap();
    assert!(answer.status == 201 || answer.status == 200, "upload: {} {}", answer.status, answer.text());
    integrity::to_hex(&integrity::sha256(&bytes))
}

/// Whether node `i` serves echo itself.
fn serves_echo(cluster: &Cluster, i: usize) -> bool {
    let id = cluster.c.nodes[i].id.clone();
    http(cluster.c.nodes[i].app, "GET", "/echo/x", b"")
        .is_ok_and(|r| r.status == 200 && r.json()["node"] == id.as_str())
}

/// Node `i`'s repository holds echo as stored, with its checksum file.
fn holds_echo(cluster: &Cluster, i: usize) -> bool {
    let file = cluster.repository_file(i, ECHO);
    let bytes = std::fs::read(&file).unwrap_or_default();
    bytes == std::fs::read(echo_library()).unwrap()
        && integrity::check(&file, &bytes, &integrity::TrustedKeys::default()).is_ok()
}

fn fetches_logged(cluster: &Cluster, i: usize) -> usize {
    cluster.c.log(i).matches(FETCHED).count()
}

#[test]
fn a_library_stored_while_a_node_was_down_loads_on_every_live_node_after_its_uploader_died() {
    let mut cluster = Cluster::start("fetch", 3, &[]);
    cluster.c.kill(2);
    store_echo(&cluster, 0);
    cluster.c.kill(0);
    cluster.start_node(2);
    cluster.wait_ready(vec![1, 2]);
    for i in [1, 2] {
        assert!(!cluster.repository_file(i, ECHO).exists(), "node {i} had the library without fetching it");
    }
    // The post fetches the library to check its routes: once node 1's storage plane has let the dead node
    // go, so the fetch does not spend the client's 5 s on it.
    let dead = cluster.c.nodes[0].id.clone();
    let left = wait_for(SETTLE, || {
        cluster.dht(1).and_then(|v| v["members"].as_array().cloned()).is_some_and(|m| !m.iter().any(|n| n == &dead))
    });
    assert!(left.is_ok(), "{dead} stays a storage plane member: {:?}", cluster.dht(1));
    cluster.post_blueprint(1, "fetched", ECHO, 2);
    for i in [1, 2] {
        let served = wait_for(SETTLE, || serves_echo(&cluster, i));
        assert!(served.is_ok(), "node {i} does not serve echo: {:?}\n{}", cluster.slices(1), cluster.c.log(i));
        assert!(holds_echo(&cluster, i), "node {i}'s repository copy is not whole and checked");
        assert_eq!(fetches_logged(&cluster, i), 1, "node {i}");
    }
}

#[test]
fn a_missing_library_fails_its_slice_with_a_clear_reason() {
    let cluster = Cluster::start("missing", 3, &[]);
    store_echo(&cluster, 0);
    // The chunks go, the catalog record stays: no node can provide the library.
    assert_eq!(cluster.ask(0, json!({"op": "delete_chunks", "artifact": ECHO})), json!({"ok": null}));
    // Node 0 took the upload into its own repository; the other two must fetch, and cannot.
    cluster.post_blueprint(1, "missing", ECHO, 3);
    let reason = |s: &Value| s["error"].as_str().unwrap_or_default().to_owned();
    let failed = wait_for(SETTLE, || {
        cluster.slices(1).iter().any(|s| reason(s).contains("the storage plane could not provide it"))
    });
    assert!(failed.is_ok(), "{:?}", cluster.slices(1));
    let record = cluster.slices(1).into_iter().find(|s| !reason(s).is_empty()).unwrap();
    let text = reason(&record);
    assert!(text.starts_with(ECHO) && text.contains("not in this node's repository"), "{text}");
    println!("the slice record says: {text}");
    assert_eq!(text.matches(ECHO).count(), 1, "{text}");
    assert!(text.contains("chunk 0"), "{text}");
    assert!(!text.contains(&cluster.c.spec.dir.display().to_string()), "{text}");
}

#[test]
fn a_restarted_node_loads_from_its_repository_without_fetching_again() {
    let mut cluster = Cluster::start("restart", 3, &[]);
    store_echo(&cluster, 0);
    cluster.post_blueprint(0, "cached", ECHO, 3);
    for i in 0..3 {
        assert!(wait_for(SETTLE, || serves_echo(&cluster, i)).is_ok(), "node {i}: {:?}", cluster.slices(0));
    }
    // Anti-entropy settles before the picture is taken.
    let quiet = wait_for(SETTLE, || (0..3).all(|i| cluster.dht(i).is_some_and(|d| d["under_replicated"] == 0)));
    assert!(quiet.is_ok());
    std::thread::sleep(Duration::from_secs(2));
    let library = cluster.repository_file(1, ECHO);
    let before = (files(&cluster.dht_dir(1)), std::fs::metadata(&library).unwrap().modified().unwrap());
    assert!(!before.0.is_empty());
    let fetched_before = fetches_logged(&cluster, 1);
    cluster.c.kill(1);
    cluster.start_node(1);
    cluster.wait_ready(vec![1]);
    let served = wait_for(SETTLE, || serves_echo(&cluster, 1));
    assert!(served.is_ok(), "{:?}\n{}", cluster.slices(0), cluster.c.log(1));
    std::thread::sleep(Duration::from_secs(2));
    let after = (files(&cluster.dht_dir(1)), std::fs::metadata(&library).unwrap().modified().unwrap());
    assert_eq!(fetches_logged(&cluster, 1), fetched_before, "the restarted node fetched again");
    assert_eq!(before.1, after.1, "the repository copy was written again");
    assert_eq!(before.0, after.0, "the storage plane folder changed");
}

#[test]
fn a_damaged_chunk_file_is_detected_and_repaired_from_a_replica() {
    let cluster = Cluster::start("corrupt", 3, &[]);
    for k in 0..30 {
        assert_eq!(
            cluster.put(k % 3, &format!("test/{k}"), &format!("value {k} {}", "x".repeat(1000))),
            json!({"ok": null})
        );
    }
    let held = wait_for(SETTLE, || cluster.dht(1).is_some_and(|d| d["entries"] == 30));
    assert!(held.is_ok(), "{:?}", cluster.dht(1));
    let (victim, length, _) = files(&cluster.dht_dir(1).join("entries")).into_iter().next().expect("a file");
    let whole = std::fs::read(&victim).unwrap();
    let mut damaged = whole.clone();
    damaged[length as usize - 10] ^= 0x5a;
    std::fs::write(&victim, &damaged).unwrap();
    let repaired = wait_for(SETTLE, || {
        cluster.dht(1).is_some_and(|d| d["corrupt_dropped"].as_u64() >= Some(1) && d["entries"] == 30)
            && std::fs::read(&victim).is_ok_and(|b| b == whole)
    });
    assert!(repaired.is_ok(), "{:?}", cluster.dht(1));
    for k in 0..30 {
        let value = format!("value {k} {}", "x".repeat(1000));
        assert_eq!(cluster.get(1, &format!("test/{k}")), json!({"ok": value}));
    }
}

#[test]
fn a_deleted_version_stops_loading_on_the_nodes_that_had_fetched_it() {
    let cluster = Cluster::start("deleted", 3, &[]);
    store_echo(&cluster, 0);
    cluster.post_blueprint(0, "shop", ECHO, 3);
    let serving = wait_for(SETTLE, || (0..3).all(|i| serves_echo(&cluster, i)));
    assert!(serving.is_ok(), "not served everywhere: {:?}", cluster.slices(0));
    assert!(holds_echo(&cluster, 1) && holds_echo(&cluster, 2), "nodes 1 and 2 fetched it");
    let removed = http(cluster.c.nodes[0].management, "DELETE", "/api/blueprints/shop", b"").unwrap();
    assert_eq!(removed.status, 200, "{}", removed.text());
    let stopped = wait_for(SETTLE, || cluster.slices(0).is_empty());
    assert!(stopped.is_ok(), "{:?}", cluster.slices(0));
    let deleted =
        http(cluster.c.nodes[0].management, "DELETE", "/api/artifacts/org.aether.examples/echo/1.0.0", b"").unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    // Node 1 still has its fetched copy: the version is posted through it again, and runs nowhere (the copy
    // goes at the post's route check or at load, and a reason says the version was deleted).
    let text = format!("name = \"again\"\n[[slices]]\nartifact = \"{ECHO}\"\ninstances = 3\n");
    let posted = http(cluster.c.nodes[1].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
    let gone = wait_for(SETTLE, || {
        !cluster.repository_file(1, ECHO).exists()
            && (posted.status >= 400
                || cluster.slices(1).iter().all(|s| s["state"] == "FAILED") && cluster.slices(1).len() == 3)
    });
    assert!(gone.is_ok(), "post {} {}; slices {:?}", posted.status, posted.text(), cluster.slices(1));
    for i in 0..3 {
        assert!(!serves_echo(&cluster, i), "node {i} still serves a deleted version");
    }
    if posted.status < 400 {
        assert!(!cluster.repository_file(2, ECHO).exists(), "node 2 kept its copy of a deleted version");
        let said = cluster.slices(1).iter().any(|s| s["error"].as_str().is_some_and(|e| e.contains("was deleted")));
        assert!(said, "{:?}", cluster.slices(1));
    }
}
