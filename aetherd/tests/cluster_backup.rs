//! Backup and restore over real `aetherd` processes: `POST /api/backup` on a running 3-node cluster, then a
//! new 3-node cluster started from the file (`--restore`, empty data directories) holds the same KV, takes
//! writes, and refuses `--restore` on a node whose data directory already holds a log.

use devcluster::{wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const KEYS: usize = 40;

fn spec(name: &str) -> ClusterSpec {
    let dir = std::env::temp_dir().join(format!("aether-backup-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))
}

fn start(spec: ClusterSpec) -> LocalCluster {
    let c = LocalCluster::start(spec).unwrap();
    c.wait_ready(SETTLE).unwrap_or_else(|e| panic!("{e}\n{}", c.log(0)));
    c
}

/// Sends until the cluster answers 200 (a node may refuse for a moment right after the cluster forms).
fn write(c: &LocalCluster, node: usize, method: &str, key: &str, value: &str) {
    let mut last = String::new();
    let ok = wait_for(SETTLE, || match c.api(node, method, &format!("/api/kv/{key}"), value.as_bytes()) {
        Ok(r) if r.status == 200 => true,
        Ok(r) => {
            last = format!("{} {}", r.status, r.text());
            false
        }
        Err(e) => {
            last = e.to_string();
            false
        }
    });
    assert!(ok.is_ok(), "{method} {key} on node {node} never succeeded: {last}");
}

/// Every `user/` entry as node `node` reads it linearizably.
fn entries(c: &LocalCluster, node: usize) -> BTreeMap<String, String> {
    let r = c.api(node, "GET", "/api/kv?prefix=user/", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let body: Value = r.json();
    let mut found = BTreeMap::new();
    for e in body["entries"].as_array().unwrap() {
        found.insert(e["key"].as_str().unwrap().to_owned(), e["value"].as_str().unwrap().to_owned());
    }
    found
}

fn take_backup(c: &LocalCluster, node: usize, to: &Path) -> u64 {
    let r = c.api(node, "POST", "/api/backup", b"").unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let backup = mgmt::backup::decode(&r.body).unwrap();
    assert_eq!(r.header("aether-backup-slot"), Some(backup.slot.to_string().as_str()));
    assert_eq!(r.header("aether-backup-sha256"), Some(mgmt::backup::hex(&backup.sha256).as_str()));
    std::fs::write(to, &r.body).unwrap();
    backup.slot
}

#[test]
fn a_backup_restored_into_a_new_cluster_holds_the_same_kv_and_takes_writes() {
    let files = std::env::temp_dir().join(format!("aether-backupfile-ok-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).unwrap();
    let file = files.join("kv.backup");

    let old = start(spec("old"));
    let mut expected = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("user/backup/k{i:02}");
        write(&old, i % 3, "PUT", &key, &format!("v{i}"));
        expected.insert(key, format!("v{i}"));
    }
    for i in (0..KEYS).step_by(3) {
        let key = format!("user/backup/k{i:02}");
        write(&old, (i + 1) % 3, "PUT", &key, &format!("second-{i}"));
        expected.insert(key, format!("second-{i}"));
    }
    for i in (0..KEYS).step_by(5) {
        let key = format!("user/backup/k{i:02}");
        write(&old, (i + 2) % 3, "DELETE", &key, "");
        expected.remove(&key);
    }
    // The last write was acknowledged by node 2; the backup is asked of node 1 and must hold it.
    let slot = take_backup(&old, 1, &file);
    assert!(slot > 0, "the backup names the slot it was taken at");
    assert_eq!(entries(&old, 0), expected);
    drop(old);

    let mut restored_spec = spec("new");
    restored_spec.extra_args = vec!["--restore".into(), file.display().to_string()];
    let mut new = start(restored_spec);
    for node in 0..3 {
        assert_eq!(entries(&new, node), expected, "node {node} of the restored cluster");
        let deleted = new.api(node, "GET", "/api/kv/user/backup/k00", b"").unwrap();
        assert_eq!(deleted.status, 404, "a key deleted before the backup stays deleted: {}", deleted.text());
    }
    write(&new, 2, "PUT", "user/backup/after", "restored");
    expected.insert("user/backup/after".into(), "restored".into());
    assert_eq!(entries(&new, 0), expected);

    // Started again with --restore, a node whose data directory holds a log refuses and exits non-zero.
    new.stop(0, Duration::from_secs(20));
    new.start_node(0).unwrap();
    let mut code = None;
    wait_for(SETTLE, || {
        code = new.exited(0);
        code.is_some()
    })
    .unwrap_or_else(|_| panic!("a --restore on a used data directory did not exit\n{}", new.log(0)));
    assert!(code.is_some_and(|c| c != Some(0)), "exit {code:?}");
    assert!(new.log(0).contains("already holds a consensus log"), "{}", new.log(0));

    // Without the flag it starts from its own log: the restored state plus what the cluster wrote since.
    new.spec.extra_args.clear();
    new.start_node(0).unwrap();
    new.wait_ready(SETTLE).unwrap_or_else(|e| panic!("{e}\n{}", new.log(0)));
    write(&new, 0, "PUT", "user/backup/later", "again");
    expected.insert("user/backup/later".into(), "again".into());
    for node in 0..3 {
        assert_eq!(entries(&new, node), expected, "node {node} after the restart");
    }
    drop(new);
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn a_damaged_backup_stops_the_node_before_it_joins() {
    let files = std::env::temp_dir().join(format!("aether-backupfile-damaged-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&files);
    std::fs::create_dir_all(&files).unwrap();
    let file = files.join("kv.backup");
    let mut bytes = mgmt::backup::encode(3, b"not a kvstore snapshot");
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let mut spec = spec("damaged");
    spec.extra_args = vec!["--restore".into(), file.display().to_string()];
    let mut c = LocalCluster::prepare(spec).unwrap();
    c.start_node(0).unwrap();
    let mut code = None;
    wait_for(SETTLE, || {
        code = c.exited(0);
        code.is_some()
    })
    .unwrap_or_else(|_| panic!("a damaged backup did not stop the node\n{}", c.log(0)));
    assert!(code.is_some_and(|c| c != Some(0)), "exit {code:?}");
    assert!(c.log(0).contains("SHA-256 mismatch"), "{}", c.log(0));
    let _ = std::fs::remove_dir_all(&files);
}
