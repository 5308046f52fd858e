//! The replicated KV store over real `aetherd` processes: convergence, failover, partitions, catch-up,
//! whole-cluster restarts and a linearizability check of a concurrent history.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use sim::linearizability::{check_register, RegisterOp, TimedOp, Verdict};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(20);

fn spec(nodes: usize, name: &str) -> ClusterSpec {
    let dir = std::env::temp_dir().join(format!("aether-kv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    ClusterSpec::new(nodes, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))
}

fn put(c: &LocalCluster, node: usize, key: &str, value: &str) -> (u16, Value) {
    match http(c.nodes[node].management, "PUT", &format!("/api/kv/{key}"), value.as_bytes()) {
        Ok(r) => (r.status, r.json()),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn get(c: &LocalCluster, node: usize, key: &str, stale: bool) -> (u16, Value) {
    let path = if stale { format!("/api/kv/{key}?stale=true") } else { format!("/api/kv/{key}") };
    match http(c.nodes[node].management, "GET", &path, b"") {
        Ok(r) => (r.status, r.json()),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn listing(c: &LocalCluster, node: usize) -> Vec<(String, String)> {
    let r = http(c.nodes[node].management, "GET", "/api/kv?prefix=user/&stale=true", b"").unwrap().json();
    r["entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| (e["key"].as_str().unwrap_or("").into(), e["value"].as_str().unwrap_or("").into()))
                .collect()
        })
        .unwrap_or_default()
}

fn status(c: &LocalCluster, node: usize) -> Value {
    http(c.nodes[node].management, "GET", "/api/status", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn ready(c: &LocalCluster, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| c.health(i).is_some_and(|h| h["ready"] == true))
}

fn start(nodes: usize, name: &str) -> LocalCluster {
    let c = LocalCluster::start(spec(nodes, name)).unwrap();
    let all: Vec<usize> = (0..nodes).collect();
    wait_for(SETTLE, || ready(&c, &all)).unwrap();
    c
}

/// Writes until one succeeds (a node that just lost or regained quorum may refuse for a moment).
fn put_eventually(c: &LocalCluster, node: usize, key: &str, value: &str) -> u64 {
    let mut last = (0, Value::Null);
    let ok = wait_for(SETTLE, || {
        last = put(c, node, key, value);
        last.0 == 200
    });
    assert!(ok.is_ok(), "put {key} on node {node} never succeeded: {last:?}");
    last.1["version"].as_u64().unwrap()
}

#[test]
fn concurrent_writes_through_every_node_converge() {
    let c = Arc::new(start(3, "converge"));
    let threads: Vec<_> = (0..3)
        .map(|node| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let (status, body) = put(&c, node, &format!("user/n{node}/k{i}"), &format!("v{i}"));
                    assert_eq!(status, 200, "{body}");
                    let (status, _) = put(&c, node, "user/shared", &format!("{node}-{i}"));
                    assert_eq!(status, 200);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let expected = listing(&c, 0);
    assert_eq!(expected.len(), 121);
    wait_for(SETTLE, || (1..3).all(|n| listing(&c, n) == expected)).unwrap();
    // A linearizable read through any node sees the last write.
    let last = get(&c, 0, "user/shared", false).1["value"].clone();
    for n in 1..3 {
        assert_eq!(get(&c, n, "user/shared", false).1["value"], last);
    }
}

#[test]
fn a_listing_comes_a_page_at_a_time_and_the_pages_add_up() {
    let c = start(3, "pages");
    let mut written: Vec<String> = (0..7).map(|i| format!("user/page/{i}")).collect();
    for key in &written {
        put_eventually(&c, 0, key, "v");
    }
    put_eventually(&c, 0, "user/pagf", "outside the prefix");
    let mut listed = Vec::new();
    let mut after = String::new();
    for _ in 0..10 {
        let path = format!("/api/kv?prefix=user/page/&limit=3&after={after}");
        let page = http(c.nodes[1].management, "GET", &path, b"").unwrap();
        assert_eq!(page.status, 200, "{}", page.text());
        let page = page.json();
        let keys: Vec<String> =
            page["entries"].as_array().unwrap().iter().map(|e| e["key"].as_str().unwrap().to_owned()).collect();
        assert!(keys.len() <= 3, "{page}");
        listed.extend(keys);
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    written.sort();
    assert_eq!(listed, written);
    for bad in ["limit=0", "limit=1001", "limit=x"] {
        assert_eq!(
            http(c.nodes[0].management, "GET", &format!("/api/kv?prefix=user/&{bad}"), b"").unwrap().status,
            400
        );
    }
}

#[test]
fn compare_and_set_and_delete_through_the_api() {
    let c = start(3, "cas");
    let v1 = put_eventually(&c, 0, "user/cas", "one");
    let stale = http(c.nodes[1].management, "PUT", &format!("/api/kv/user/cas?version={}", v1 + 100), b"x").unwrap();
    assert_eq!(stale.status, 409, "{}", stale.text());
    let ok = http(c.nodes[1].management, "PUT", &format!("/api/kv/user/cas?version={v1}"), b"two").unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(get(&c, 2, "user/cas", false).1["value"], "two");
    let absent_only = http(c.nodes[2].management, "PUT", "/api/kv/user/cas?version=0", b"three").unwrap();
    assert_eq!(absent_only.status, 409);
    assert_eq!(http(c.nodes[2].management, "DELETE", "/api/kv/user/cas", b"").unwrap().status, 200);
    assert_eq!(get(&c, 0, "user/cas", false).0, 404);
    assert_eq!(http(c.nodes[2].management, "DELETE", "/api/kv/user/cas", b"").unwrap().status, 404);
    assert_eq!(put(&c, 0, "not-a-namespace/x", "v").0, 400);
}

#[test]
fn killing_any_node_even_the_leader_keeps_writes_going() {
    let mut c = start(3, "failover");
    // The leader is the node the replicated leader record names; the first one claims it once leases run.
    wait_for(SETTLE, || (0..3).all(|n| status(&c, n)["leader"].is_string())).unwrap();
    let leader = status(&c, 0)["leader"].as_str().unwrap().to_string();
    assert!(["node-1", "node-2", "node-3"].contains(&leader.as_str()));
    for n in 1..3 {
        assert_eq!(status(&c, n)["leader"], leader.as_str(), "all nodes agree on the leader");
    }
    let victim = c.nodes.iter().position(|n| n.id == leader).unwrap();
    put_eventually(&c, 0, "user/before", "1");
    c.kill(victim);
    let killed_at = Instant::now();
    let survivors: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    wait_for(SETTLE, || {
        let leaders: Vec<Value> = survivors.iter().map(|&i| status(&c, i)["leader"].clone()).collect();
        leaders.iter().all(|l| l.as_str().is_some_and(|l| l != leader) && *l == leaders[0])
    })
    .unwrap();
    let new_leader_after = killed_at.elapsed();
    // Taking over waits for the dead leader's lease to stay unchanged for the grace period (5 s by default),
    // then for the claim to be decided; the rest is room for a loaded machine.
    assert!(new_leader_after < Duration::from_secs(15), "new leader took {new_leader_after:?}");
    for &s in &survivors {
        put_eventually(&c, s, &format!("user/after/{s}"), "2");
    }
    c.start_node(victim).unwrap();
    wait_for(SETTLE, || ready(&c, &[victim])).unwrap();
    wait_for(SETTLE, || get(&c, victim, &format!("user/after/{}", survivors[1]), true).0 == 200).unwrap();
}

#[test]
fn minority_partition_cannot_write_and_catches_up_after_healing() {
    let c = start(3, "partition");
    put_eventually(&c, 0, "user/p", "before");
    let cut = br#"{"rules":[{"direction":"both","action":"drop"}]}"#;
    assert_eq!(http(c.nodes[2].management, "POST", "/api/debug/faults", cut).unwrap().status, 200);
    wait_for(SETTLE, || c.health(2).is_some_and(|h| h["ready"] == false)).unwrap();
    assert_eq!(put(&c, 2, "user/p", "minority").0, 503);
    put_eventually(&c, 0, "user/p", "majority");
    put_eventually(&c, 1, "user/q", "also");
    assert_eq!(http(c.nodes[2].management, "DELETE", "/api/debug/faults", b"").unwrap().status, 200);
    wait_for(SETTLE, || ready(&c, &[2])).unwrap();
    wait_for(SETTLE, || get(&c, 2, "user/q", true).1["value"] == "also").unwrap();
    assert_eq!(get(&c, 2, "user/p", false).1["value"], "majority");
}

#[test]
fn restarted_node_and_empty_data_dir_catch_up() {
    let mut c = start(3, "catchup");
    for i in 0..30 {
        put_eventually(&c, i % 3, &format!("user/c/{i}"), &i.to_string());
    }
    c.kill(1);
    for i in 30..60 {
        put_eventually(&c, if i % 2 == 0 { 0 } else { 2 }, &format!("user/c/{i}"), &i.to_string());
    }
    c.start_node(1).unwrap();
    c.kill(2);
    std::fs::remove_dir_all(&c.nodes[2].data_dir).unwrap();
    c.start_node(2).unwrap();
    wait_for(SETTLE, || ready(&c, &[0, 1, 2])).unwrap();
    let expected = listing(&c, 0);
    assert_eq!(expected.len(), 60);
    wait_for(SETTLE, || listing(&c, 1) == expected && listing(&c, 2) == expected).unwrap();
}

#[test]
fn whole_cluster_stop_and_start_keeps_every_acknowledged_write() {
    let mut c = start(3, "restart-all");
    let mut acked = BTreeMap::new();
    for i in 0..50 {
        let key = format!("user/r/{i}");
        put_eventually(&c, i % 3, &key, &format!("v{i}"));
        acked.insert(key, format!("v{i}"));
    }
    // Half the cluster killed hard, the rest stopped cleanly.
    c.kill(0);
    c.stop(1, Duration::from_secs(5));
    c.kill(2);
    for i in 0..3 {
        c.start_node(i).unwrap();
    }
    wait_for(SETTLE, || ready(&c, &[0, 1, 2])).unwrap();
    for (key, value) in &acked {
        assert_eq!(get(&c, 1, key, false).1["value"], value.as_str(), "{key} lost");
    }
    put_eventually(&c, 2, "user/r/after", "works");
}

#[test]
fn five_nodes_tolerate_two_failures() {
    let mut c = start(5, "five");
    put_eventually(&c, 4, "user/five", "1");
    c.kill(0);
    c.kill(3);
    put_eventually(&c, 1, "user/five", "2");
    assert_eq!(get(&c, 4, "user/five", false).1["value"], "2");
}

#[test]
fn concurrent_history_is_linearizable() {
    let c = Arc::new(start(3, "linear"));
    let epoch = Instant::now();
    let history: Arc<Mutex<BTreeMap<String, Vec<TimedOp>>>> = Arc::default();
    let threads: Vec<_> = (0..6)
        .map(|client| {
            let (c, history) = (c.clone(), history.clone());
            std::thread::spawn(move || {
                let mut rng = 0x9E37_79B9u64 ^ client as u64;
                for i in 0..40u64 {
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = format!("user/lin/{}", (rng >> 33) % 3);
                    let node = ((rng >> 20) % 3) as usize;
                    let invoke_us = epoch.elapsed().as_micros() as u64;
                    let (op, done) = if (rng >> 40).is_multiple_of(2) {
                        let value = client as u64 * 1000 + i;
                        let (s, _) = put(&c, node, &key, &value.to_string());
                        (RegisterOp::Write(value), s == 200)
                    } else {
                        let (s, body) = get(&c, node, &key, false);
                        let read = body["value"].as_str().and_then(|v| v.parse().ok());
                        (RegisterOp::Read(read), s == 200 || s == 404)
                    };
                    let response_us = done.then(|| epoch.elapsed().as_micros() as u64);
                    history.lock().unwrap().entry(key).or_default().push(TimedOp { op, invoke_us, response_us });
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for (key, ops) in history.lock().unwrap().iter() {
        assert_eq!(check_register(ops, 2_000_000), Verdict::Linearizable, "history of {key} is not linearizable");
    }
}

#[test]
fn node_rebooted_without_a_clean_stop_recovers_its_vote_floor_first() {
    let mut c = start(3, "reboot");
    for i in 0..20 {
        put_eventually(&c, i % 3, &format!("user/b/{i}"), "x");
    }
    c.kill(2);
    // As if the machine had rebooted: the log was last written during another boot, with no clean stop.
    std::fs::write(c.nodes[2].data_dir.join("consensus/boot_id"), "an-earlier-boot").unwrap();
    put_eventually(&c, 0, "user/b/while-down", "y");
    c.start_node(2).unwrap();
    wait_for(SETTLE, || ready(&c, &[2])).unwrap();
    assert!(c.log(2).contains("recovering the vote floor"), "{}", c.log(2));
    put_eventually(&c, 2, "user/b/after", "z");
    assert_eq!(get(&c, 2, "user/b/while-down", false).1["value"], "y");
    // A clean stop marks the log, so the next start trusts its votes again.
    c.stop(2, Duration::from_secs(5));
    std::fs::write(c.nodes[2].data_dir.join("consensus/boot_id"), "yet-another-boot").unwrap();
    c.start_node(2).unwrap();
    wait_for(SETTLE, || ready(&c, &[2])).unwrap();
    assert_eq!(c.log(2).matches("recovering the vote floor").count(), 1, "{}", c.log(2));
}

#[test]
fn catch_up_of_large_values_goes_past_the_frame_limit() {
    // 40 values of 512 KiB: the catch-up reply to the restarted node is ~20 MiB, over the 16 MiB frame limit.
    let patient = Duration::from_secs(60);
    let mut c = start(3, "large");
    c.kill(2);
    let value = "v".repeat(512 * 1024);
    for i in 0..40 {
        let key = format!("user/large/{i}");
        let ok = wait_for(patient, || put(&c, i % 2, &key, &value).0 == 200);
        assert!(ok.is_ok(), "put {key} never succeeded");
    }
    c.start_node(2).unwrap();
    wait_for(patient, || ready(&c, &[2])).unwrap();
    wait_for(patient, || get(&c, 2, "user/large/39", true).0 == 200).unwrap();
    assert_eq!(get(&c, 2, "user/large/0", true).1["value"].as_str().map(str::len), Some(value.len()));
    assert!(!c.log(2).contains("over the"), "a frame hit the limit:\n{}", c.log(2));
}
