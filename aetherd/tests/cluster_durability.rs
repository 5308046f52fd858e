//! Durability over real `aetherd` processes: a node whose disk fills up stops at once with a clear
//! message and a non-zero exit code while the others keep serving, and rejoins recovering once space is
//! freed; a node whose data directory is wiped rejoins recovering its vote floor, never as a fresh voter.
//! Both end with every node holding the same keys, every acknowledged write included.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);
/// `EXIT_STORAGE_FAILED` in `aetherd/src/storage/mod.rs`.
const EXIT_STORAGE_FAILED: i32 = 74;

fn spec(name: &str) -> ClusterSpec {
    let dir = std::env::temp_dir().join(format!("aether-durability-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))
}

fn put(c: &LocalCluster, node: usize, key: &str, value: &[u8]) -> u16 {
    http(c.nodes[node].management, "PUT", &format!("/api/kv/{key}"), value).map_or(0, |r| r.status)
}

fn listing(c: &LocalCluster, node: usize) -> Option<BTreeMap<String, String>> {
    let r = http(c.nodes[node].management, "GET", "/api/kv?prefix=user/&stale=true", b"").ok()?.json();
    let entries = r["entries"].as_array()?;
    Some(
        entries
            .iter()
            .map(|e| (e["key"].as_str().unwrap_or("").to_string(), e["value"].as_str().unwrap_or("").to_string()))
            .collect(),
    )
}

fn ready(c: &LocalCluster, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| c.health(i).is_some_and(|h| h["ready"] == true))
}

/// Every node lists the same keys, and those hold every acknowledged write.
fn all_agree(c: &LocalCluster, acked: &BTreeMap<String, String>) -> bool {
    let Some(first) = listing(c, 0) else { return false };
    let holds = acked.iter().all(|(k, v)| first.get(k) == Some(v));
    holds && (1..3).all(|i| listing(c, i).as_ref() == Some(&first))
}

fn mount_tmpfs(dir: &Path, size: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn remount(dir: &Path, size: &str) {
    let status = Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(dir).status();
    assert!(status.is_ok_and(|s| s.success()), "cannot grow the tmpfs at {}", dir.display());
}

/// Unmounts on every way out of the test.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_node_whose_disk_fills_stops_and_rejoins_recovering_once_space_is_freed() {
    let mut c = LocalCluster::prepare(spec("full")).unwrap();
    let small = c.nodes[2].data_dir.clone();
    if let Err(e) = mount_tmpfs(&small, "2m") {
        println!("SKIP: cannot mount a small tmpfs for the data directory ({e}); run as root to test a full disk");
        return;
    }
    let _mounted = Mounted(small.clone());
    for i in 0..3 {
        c.start_node(i).unwrap();
    }
    wait_for(SETTLE, || ready(&c, &[0, 1, 2])).unwrap();

    // 16 KiB values: every write costs node 2 a proposal and a decided record of that size.
    let mut acked = BTreeMap::new();
    let mut code = None;
    for i in 0..400 {
        let key = format!("user/fill/{i:04}");
        let value = format!("{i:04}-{}", "x".repeat(16 * 1024));
        if put(&c, i % 2, &key, value.as_bytes()) == 200 {
            acked.insert(key, value);
        }
        if let Some(exit) = c.exited(2) {
            code = Some(exit);
            break;
        }
    }
    let log = c.log(2);
    assert_eq!(code, Some(Some(EXIT_STORAGE_FAILED)), "node 2 did not stop on a full disk:\n{log}");
    let failures: Vec<&str> = log.lines().filter(|l| l.contains("storage failed")).collect();
    assert_eq!(failures.len(), 1, "one line says why:\n{log}");
    assert!(failures[0].contains("No space left on device") && failures[0].contains(&*small.to_string_lossy()));

    // The other two keep serving.
    for i in 0..20 {
        let key = format!("user/after/{i}");
        let value = format!("after-{i}");
        let ok = wait_for(SETTLE, || put(&c, i % 2, &key, value.as_bytes()) == 200);
        assert!(ok.is_ok(), "nodes 0 and 1 stopped serving writes after node 2 stopped");
        acked.insert(key, value);
    }

    remount(&small, "64m");
    let earlier = c.log(2).len();
    let since_restart = |c: &LocalCluster| c.log(2).get(earlier..).unwrap_or("").to_string();
    c.start_node(2).unwrap();
    let came_back = wait_for(SETTLE, || since_restart(&c).contains("recovery finished at slot"));
    assert!(came_back.is_ok(), "node 2 did not recover its vote floor:\n{}", since_restart(&c));
    let log = since_restart(&c);
    assert!(log.contains("stopped on a storage failure"), "node 2 trusted its tail:\n{log}");
    wait_for(SETTLE, || ready(&c, &[0, 1, 2])).unwrap();
    let agreed = wait_for(SETTLE, || all_agree(&c, &acked));
    assert!(agreed.is_ok(), "the three nodes do not hold the same keys, or lost an acknowledged write");
}

#[test]
fn a_node_whose_data_dir_is_wiped_rejoins_recovering() {
    let mut c = LocalCluster::start(spec("wiped")).unwrap();
    wait_for(SETTLE, || ready(&c, &[0, 1, 2])).unwrap();
    let mut acked = BTreeMap::new();
    for i in 0..30 {
        let key = format!("user/w/{i}");
        let ok = wait_for(SETTLE, || put(&c, i % 3, &key, i.to_string().as_bytes()) == 200);
        assert!(ok.is_ok());
        acked.insert(key, i.to_string());
    }
    c.kill(2);
    std::fs::remove_dir_all(&c.nodes[2].data_dir).unwrap();
    let earlier = c.log(2).len();
    let since_restart = |c: &LocalCluster| c.log(2).get(earlier..).unwrap_or("").to_string();
    c.start_node(2).unwrap();
    for i in 30..40 {
        let key = format!("user/w/{i}");
        let ok = wait_for(SETTLE, || put(&c, i % 2, &key, i.to_string().as_bytes()) == 200);
        assert!(ok.is_ok());
        acked.insert(key, i.to_string());
    }
    let recovered = wait_for(SETTLE, || since_restart(&c).contains("recovery finished at slot"));
    assert!(recovered.is_ok(), "the wiped node did not come back recovering:\n{}", since_restart(&c));
    let log = since_restart(&c);
    let finished = log.lines().find(|l| l.contains("recovery finished at slot")).unwrap_or("").to_string();
    assert!(!finished.contains("at slot 0:"), "it joined as if the cluster were new: {finished}");
    wait_for(SETTLE, || ready(&c, &[0, 1, 2])).unwrap();
    let agreed = wait_for(SETTLE, || all_agree(&c, &acked));
    assert!(agreed.is_ok(), "the three nodes do not hold the same keys, or lost an acknowledged write");
}
