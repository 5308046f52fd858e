//! Membership changes on real processes: a cluster grows from 3 to 5 members and shrinks back to 3 while
//! outside clients write and read through it, with one member removed while it is down (and added back
//! later, from an empty data directory). Every acknowledged
//! write survives, the remaining members agree, and each key's history is linearizable.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use sim::linearizability::{check_register, RegisterOp, TimedOp, Verdict};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);

fn ready(c: &LocalCluster, i: usize) -> bool {
    c.health(i).is_some_and(|h| h["ready"] == true)
}

fn members(c: &LocalCluster, node: usize) -> Value {
    http(c.nodes[node].management, "GET", "/api/members", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

/// `(id, role)` of every member, as `node` lists them.
fn roles(c: &LocalCluster, node: usize) -> Vec<(String, String)> {
    let list = members(c, node);
    list["members"]
        .as_array()
        .map(|all| {
            all.iter()
                .map(|m| (m["id"].as_str().unwrap_or("").to_string(), m["role"].as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn voters(c: &LocalCluster, node: usize) -> Vec<String> {
    roles(c, node).into_iter().filter(|(_, r)| r == "voter").map(|(id, _)| id).collect()
}

fn add(c: &LocalCluster, via: usize, joiner: usize) -> (u16, Value) {
    let body = json!({"id": c.nodes[joiner].id, "address": c.nodes[joiner].cluster.to_string()}).to_string();
    match http(c.nodes[via].management, "POST", "/api/members", body.as_bytes()) {
        Ok(r) => (r.status, r.json()),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn remove(c: &LocalCluster, via: usize, id: &str) -> (u16, Value) {
    match http(c.nodes[via].management, "DELETE", &format!("/api/members/{id}"), b"") {
        Ok(r) => (r.status, r.json()),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn put(c: &LocalCluster, node: usize, key: &str, value: &str) -> u16 {
    http(c.nodes[node].management, "PUT", &format!("/api/kv/{key}"), value.as_bytes()).map_or(0, |r| r.status)
}

fn get(c: &LocalCluster, node: usize, key: &str) -> (u16, Option<u64>) {
    match http(c.nodes[node].management, "GET", &format!("/api/kv/{key}"), b"") {
        Ok(r) => (r.status, r.json()["value"].as_str().and_then(|v| v.parse().ok())),
        Err(_) => (0, None),
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

#[test]
fn a_cluster_grows_from_3_to_5_and_shrinks_back_under_client_load() {
    let dir = std::env::temp_dir().join(format!("aether-members-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let spec = ClusterSpec::new(5, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    let mut c = LocalCluster::prepare(spec).unwrap();
    for i in 0..3 {
        c.set_peers(i, &[0, 1, 2], false).unwrap();
    }
    for i in 3..5 {
        c.set_peers(i, &[0, i], true).unwrap();
    }
    for i in 0..3 {
        c.start_node(i).unwrap();
    }
    wait_for(SETTLE, || (0..3).all(|i| ready(&c, i))).unwrap();
    assert_eq!(voters(&c, 0), ["node-1", "node-2", "node-3"]);

    // Outside clients: writes and linearizable reads through the three original members all along.
    let c = Arc::new(Mutex::new(c));
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = Instant::now();
    let history: Arc<Mutex<BTreeMap<String, Vec<TimedOp>>>> = Arc::default();
    let acknowledged: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let nodes: Vec<_> = (0..3).map(|i| c.lock().unwrap().nodes[i].management).collect();
    let clients: Vec<_> = (0..3u64)
        .map(|client| {
            let (stop, history, acknowledged, nodes) =
                (stop.clone(), history.clone(), acknowledged.clone(), nodes.clone());
            std::thread::spawn(move || {
                let mut rng = 0x5DEE_CE66u64 ^ client;
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    let key = format!("user/members/{}", (rng >> 33) % 4);
                    let node = nodes[((rng >> 20) % 3) as usize];
                    let invoke_us = epoch.elapsed().as_micros() as u64;
                    let (op, done) = if !(rng >> 40).is_multiple_of(3) {
                        let value = client * 1_000_000 + i;
                        let s = http(node, "PUT", &format!("/api/kv/{key}"), value.to_string().as_bytes())
                            .map_or(0, |r| r.status);
                        if s == 200 {
                            acknowledged.lock().unwrap().insert(format!("{key}#{value}"), value);
                        }
                        (RegisterOp::Write(value), s == 200)
                    } else {
                        let r = http(node, "GET", &format!("/api/kv/{key}"), b"");
                        let (s, read) = r
                            .map_or((0, None), |r| (r.status, r.json()["value"].as_str().and_then(|v| v.parse().ok())));
                        (RegisterOp::Read(read), s == 200 || s == 404)
                    };
                    let response_us = done.then(|| epoch.elapsed().as_micros() as u64);
                    history.lock().unwrap().entry(key).or_default().push(TimedOp { op, invoke_us, response_us });
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    // Grow: node-4, then node-5 join as learners and become voters once caught up.
    for joiner in 3..5 {
        let id = c.lock().unwrap().nodes[joiner].id.clone();
        let (status, body) = add(&c.lock().unwrap(), 0, joiner);
        assert_eq!(status, 202, "{body}");
        assert!(roles(&c.lock().unwrap(), 0).contains(&(id.clone(), "learner".into())), "{body}");
        wait_for(SETTLE, || roles(&c.lock().unwrap(), 1).contains(&(id.clone(), "learner".into()))).unwrap();
        c.lock().unwrap().start_node(joiner).unwrap();
        let promoted = wait_for(SETTLE, || voters(&c.lock().unwrap(), 2).contains(&id));
        let log = c.lock().unwrap().log(joiner);
        assert!(promoted.is_ok(), "{id} never became a voter: {}\n{log}", members(&c.lock().unwrap(), 0));
        wait_for(SETTLE, || ready(&c.lock().unwrap(), joiner)).unwrap();
    }
    let five = ["node-1", "node-2", "node-3", "node-4", "node-5"];
    for i in 0..5 {
        let agreed = wait_for(SETTLE, || voters(&c.lock().unwrap(), i) == five);
        assert!(agreed.is_ok(), "node {i} lists {:?}", voters(&c.lock().unwrap(), i));
    }
    // The new members serve: a write through each is read back everywhere.
    for joiner in 3..5 {
        assert_eq!(put(&c.lock().unwrap(), joiner, &format!("user/joined/{joiner}"), "yes"), 200);
    }
    let (status, body) = add(&c.lock().unwrap(), 1, 3);
    assert_eq!(status, 409, "adding a member twice: {body}");

    // Shrink: node-4 is removed while it is down, node-5 while it is up.
    c.lock().unwrap().kill(3);
    let (status, body) = remove(&c.lock().unwrap(), 1, "node-4");
    assert_eq!(status, 200, "{body}");
    // Through another node: it may not have applied the first removal yet, and then refuses (409) until it has.
    let mut last = (0, Value::Null);
    let removed = wait_for(SETTLE, || {
        last = remove(&c.lock().unwrap(), 2, "node-5");
        last.0 != 409
    });
    assert!(removed.is_ok() && last.0 == 200, "{last:?}");
    let three = ["node-1", "node-2", "node-3"];
    for i in 0..3 {
        let agreed = wait_for(SETTLE, || voters(&c.lock().unwrap(), i) == three);
        assert!(agreed.is_ok(), "node {i} lists {:?}", voters(&c.lock().unwrap(), i));
    }
    wait_for(SETTLE, || !ready(&c.lock().unwrap(), 4)).expect("a removed member stops being ready");
    let (status, body) = remove(&c.lock().unwrap(), 0, "node-9");
    assert_eq!(status, 404, "{body}");

    // A removed node comes back: its data directory wiped, added again and started joining. On the way it
    // replays its own earlier removal, which must not stop it.
    let data4 = c.lock().unwrap().nodes[3].data_dir.clone();
    std::fs::remove_dir_all(&data4).unwrap();
    let (status, body) = add(&c.lock().unwrap(), 0, 3);
    assert_eq!(status, 202, "{body}");
    c.lock().unwrap().start_node(3).unwrap();
    let back = wait_for(SETTLE, || voters(&c.lock().unwrap(), 1).iter().any(|v| v == "node-4"));
    let log = c.lock().unwrap().log(3);
    assert!(back.is_ok(), "node-4 did not come back as a voter: {}\n{log}", members(&c.lock().unwrap(), 0));
    wait_for(SETTLE, || ready(&c.lock().unwrap(), 3)).expect("node-4 is ready again");

    // Four voters: one of them may fail and writes go on.
    std::thread::sleep(Duration::from_millis(500));
    c.lock().unwrap().kill(2);
    let written = wait_for(SETTLE, || put(&c.lock().unwrap(), 0, "user/after/shrink", "1") == 200);
    assert!(written.is_ok(), "three of the four voters keep the cluster writable");
    c.lock().unwrap().start_node(2).unwrap();
    wait_for(SETTLE, || ready(&c.lock().unwrap(), 2)).unwrap();

    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let c = c.lock().unwrap();
    // Every member that is left agrees, and holds every acknowledged write's key (its last value may be newer).
    let last_key = "user/after/shrink";
    wait_for(SETTLE, || (0..3).all(|i| get(&c, i, last_key).0 == 200)).unwrap();
    let reference = listing(&c, 0);
    for i in 1..3 {
        wait_for(SETTLE, || listing(&c, i) == reference).unwrap_or_else(|_| panic!("node {i} disagrees"));
    }
    let keys: Vec<&str> = reference.iter().map(|(k, _)| k.as_str()).collect();
    for key in acknowledged.lock().unwrap().keys() {
        let key = key.split('#').next().unwrap_or("");
        assert!(keys.contains(&key), "acknowledged {key} is gone");
    }
    let writes = acknowledged.lock().unwrap().len();
    assert!(writes > 50, "the clients wrote throughout: {writes} acknowledged writes");
    for (key, ops) in history.lock().unwrap().iter() {
        assert_eq!(check_register(ops, 2_000_000), Verdict::Linearizable, "history of {key} is not linearizable");
    }
}
