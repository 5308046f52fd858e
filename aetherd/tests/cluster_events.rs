//! The event log, live log levels and live config over real processes: a raw-socket client follows
//! `/api/events/stream` on one node while the leader is killed -9 and restarted, and sees the leader go down,
//! a new leader, heal placements and the node back up, in order, each within a second of happening;
//! `/api/events?since=` pages the same events on every node; a log level set through the API changes what
//! every node logs, survives a restart and resets; a config change applies on every node.

use devcluster::{http, wait_for, LocalCluster};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const SETTLE: Duration = Duration::from_secs(30);

const SHOP: &str = r#"name = "shop"
[[slices]]
artifact = "org.aether.examples:echo:1.0.0"
instances = 2
[[slices]]
artifact = "org.aether.examples:inventory:1.0.0"
instances = 1
[[slices]]
artifact = "org.aether.examples:pricing:1.0.0"
instances = 1
[[slices]]
artifact = "org.aether.examples:orders:1.0.0"
instances = 1
depends_on = ["org.aether.examples:inventory:1.0.0", "org.aether.examples:pricing:1.0.0"]
"#;

fn start(nodes: usize, name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let c = devcluster::start_with_examples(nodes, &format!("events-{name}"), aetherd, SETTLE).unwrap();
    c
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn get(c: &LocalCluster, node: usize, path: &str) -> Value {
    http(c.nodes[node].management, "GET", path, b"").ok().filter(|r| r.status == 200).map_or(Value::Null, |r| r.json())
}

/// An event as the stream client saw it, with the wall-clock time it arrived.
#[derive(Debug, Clone)]
struct Seen {
    at_ms: u64,
    event: Value,
}

/// Follows `/api/events/stream` with a raw socket; every `data:` line is parsed and kept.
fn follow(addr: std::net::SocketAddr) -> Arc<Mutex<Vec<Seen>>> {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .write_all(b"GET /api/events/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .unwrap();
    let sink = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut pending = String::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
            while let Some(at) = pending.find('\n') {
                let line: String = pending.drain(..=at).collect();
                if let Some(data) = line.trim_end().strip_prefix("data: ") {
                    if let Ok(event) = serde_json::from_str::<Value>(data) {
                        sink.lock().unwrap().push(Seen { at_ms: wall_ms(), event });
                    }
                }
            }
        }
    });
    seen
}

/// The first event the client saw (after `from`) matching `kind` and `test`.
fn first(seen: &[Seen], from: usize, kind: &str, test: impl Fn(&Value) -> bool) -> Option<(usize, Seen)> {
    seen.iter()
        .enumerate()
        .skip(from)
        .find(|(_, s)| s.event["kind"] == kind && test(&s.event))
        .map(|(i, s)| (i, s.clone()))
}

/// The artifacts `/api/slices` shows on `node`.
fn slices_on(c: &LocalCluster, via: usize, node: &str) -> Vec<String> {
    let slices = get(c, via, "/api/slices");
    slices["slices"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|s| s["node"] == node)
                .filter_map(|s| s["artifact"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_followed_stream_shows_the_leader_down_a_new_leader_heal_placements_and_the_node_up_in_order() {
    let mut c = start(3, "follow");
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", SHOP.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let leader = wait_for(SETTLE, || get(&c, 0, "/api/status")["leader"].is_string())
        .map(|()| get(&c, 0, "/api/status")["leader"].as_str().unwrap_or_default().to_string());
    let leader = leader.unwrap();
    let victim = c.nodes.iter().position(|n| n.id == leader).unwrap();
    let watcher = (victim + 1) % 3;
    // Everything placed and active, and the leader holds something to heal.
    wait_for(SETTLE, || {
        let slices = get(&c, watcher, "/api/slices");
        slices["slices"].as_array().is_some_and(|s| s.len() == 5 && s.iter().all(|x| x["state"] == "ACTIVE"))
    })
    .unwrap();
    let on_victim = slices_on(&c, watcher, &leader);
    assert!(!on_victim.is_empty(), "the leader holds no slice: {}", get(&c, watcher, "/api/slices"));

    let seen = follow(c.nodes[watcher].management);
    std::thread::sleep(Duration::from_millis(300));
    let killed_ms = wall_ms();
    c.kill(victim);
    let healed = wait_for(SETTLE, || {
        let s = seen.lock().unwrap();
        on_victim.iter().all(|a| {
            first(&s, 0, "slice_placed", |e| e["data"]["artifact"] == a.as_str() && e["node"] != leader.as_str())
                .is_some()
        }) && first(&s, 0, "leader_changed", |_| true).is_some()
    });
    assert!(healed.is_ok(), "no heal seen: {:#?}", seen.lock().unwrap());
    let restarted_ms = wall_ms();
    c.start_node(victim).unwrap();
    let up = wait_for(SETTLE, || {
        first(&seen.lock().unwrap(), 0, "node_up", |e| {
            e["node"] == leader.as_str() && e["time_ms"].as_u64() >= Some(restarted_ms)
        })
        .is_some()
    });
    assert!(up.is_ok(), "no node_up: {:#?}", seen.lock().unwrap());

    let s = seen.lock().unwrap().clone();
    let (down_at, down) = first(&s, 0, "node_down", |e| e["node"] == leader.as_str()).expect("node_down");
    let (leader_at, new_leader) =
        first(&s, down_at, "leader_changed", |_| true).expect("leader_changed after node_down");
    let (placed_at, placed) = first(&s, leader_at, "slice_placed", |e| e["node"] != leader.as_str())
        .expect("a heal placement after the leader change");
    let (up_at, up) =
        first(&s, placed_at, "node_up", |e| e["node"] == leader.as_str()).expect("node_up after the heal");
    assert!(down_at < leader_at && leader_at < placed_at && placed_at < up_at);
    assert_eq!(new_leader.event["data"]["from"], leader.as_str(), "{}", new_leader.event);
    assert_ne!(new_leader.event["node"], leader.as_str());
    let down_ms = down.event["time_ms"].as_u64().unwrap();
    eprintln!(
        "node_down {} ms after the kill; arrival lag: down {} ms, leader {} ms, placed {} ms, up {} ms",
        down_ms - killed_ms,
        down.at_ms - down_ms,
        new_leader.at_ms - new_leader.event["time_ms"].as_u64().unwrap(),
        placed.at_ms - placed.event["time_ms"].as_u64().unwrap(),
        up.at_ms - up.event["time_ms"].as_u64().unwrap()
    );
    assert!(down_ms.saturating_sub(killed_ms) <= 1000, "node_down recorded {} ms after the kill", down_ms - killed_ms);
    for e in [&down, &new_leader, &placed, &up] {
        let lag = e.at_ms.saturating_sub(e.event["time_ms"].as_u64().unwrap());
        assert!(lag <= 1000, "{} reached the stream {lag} ms after it happened", e.event);
    }
    let seqs: Vec<u64> = s.iter().filter_map(|x| x.event["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "stream seqs rise: {seqs:?}");

    // Every node (the restarted one too, from its peers' history) pages the same events with `since`.
    for node in 0..3 {
        let ok = wait_for(Duration::from_secs(10), || {
            let mut all = Vec::new();
            let mut since = 0;
            loop {
                let page = get(&c, node, &format!("/api/events?since={since}&limit=50"));
                let events = page["events"].as_array().cloned().unwrap_or_default();
                if events.is_empty() {
                    break;
                }
                since = page["next"].as_u64().unwrap_or(u64::MAX);
                all.extend(events);
            }
            let has = |kind: &str, node: &str| all.iter().any(|e| e["kind"] == kind && e["node"] == node);
            let seqs: Vec<u64> = all.iter().filter_map(|e| e["seq"].as_u64()).collect();
            has("node_down", &leader)
                && has("leader_changed", new_leader.event["node"].as_str().unwrap_or("?"))
                && all.iter().any(|e| e["kind"] == "blueprint_applied" && e["data"]["name"] == "shop")
                && seqs.windows(2).all(|w| w[0] < w[1])
        });
        assert!(ok.is_ok(), "node {node}: {}", get(&c, node, "/api/events?limit=1000"));
    }
    let recent = get(&c, watcher, "/api/events?since=1m&limit=1000");
    assert!(recent["events"].as_array().is_some_and(|e| !e.is_empty()), "{recent}");
    for bad in ["/api/events?since=soon", "/api/events?limit=0", "/api/events?limit=1001", "/api/events?colour=red"] {
        let r = http(c.nodes[watcher].management, "GET", bad, b"").unwrap();
        assert_eq!((r.status, r.json()["error"].is_string()), (400, true), "{bad}: {}", r.text());
    }
}

/// Lines of `log` (after byte `from`) that are `DEBUG` lines of the management server.
fn debug_lines(log: &str, from: usize) -> usize {
    log.get(from..).unwrap_or("").lines().filter(|l| l.contains(" DEBUG ") && l.contains("mgmt::server:")).count()
}

fn put(c: &LocalCluster, node: usize, path: &str, body: Value) -> devcluster::HttpResponse {
    http(c.nodes[node].management, "PUT", path, body.to_string().as_bytes()).unwrap()
}

#[test]
fn log_levels_and_config_set_through_the_api_apply_on_every_node_and_survive_a_restart() {
    let mut c = start(3, "live");
    let blueprint = "name = \"slow\"\n[[slices]]\nartifact = \"org.aether.examples:faulty:1.0.0\"\ninstances = 1\n";
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    wait_for(SETTLE, || (0..3).all(|i| http(c.nodes[i].app, "GET", "/faulty/ok", b"").is_ok_and(|r| r.status == 200)))
        .expect("faulty is served everywhere");
    let before: Vec<usize> = (0..3).map(|i| c.log(i).len()).collect();
    for i in 0..3 {
        get(&c, i, "/api/health");
    }
    assert!((0..3).all(|i| debug_lines(&c.log(i), before[i]) == 0), "no debug lines at the info level");

    let set = put(&c, 1, "/api/log-levels/mgmt", json!({"level": "debug"}));
    assert_eq!((set.status, set.json()), (200, json!({"target": "mgmt", "level": "debug"})));
    let set_at = Instant::now();
    let marks: Vec<usize> = (0..3).map(|i| c.log(i).len()).collect();
    let applied = wait_for(Duration::from_secs(5), || {
        (0..3).all(|i| {
            get(&c, i, "/health/live");
            debug_lines(&c.log(i), marks[i]) > 0
        })
    });
    let took = set_at.elapsed();
    assert!(applied.is_ok(), "a debug line did not appear on every node");
    eprintln!("log level applied on every node within {took:?}");
    assert!(took <= Duration::from_millis(1500), "took {took:?}");
    let levels = get(&c, 2, "/api/log-levels");
    assert_eq!(levels, json!({"default": "info", "targets": {"mgmt": "debug"}}));
    assert_eq!(get(&c, 0, "/api/log-levels/mgmt"), json!({"target": "mgmt", "level": "debug"}));
    assert_eq!(http(c.nodes[0].management, "GET", "/api/log-levels/consensus", b"").unwrap().status, 404);
    for (path, body) in [
        ("/api/log-levels/mgmt", json!({"level": "loud"})),
        ("/api/log-levels/a%20b", json!({"level": "debug"})),
        ("/api/log-levels/mgmt", json!({"lvl": "debug"})),
    ] {
        let r = put(&c, 0, path, body);
        assert_eq!((r.status, r.json()["error"].is_string()), (400, true), "{path}: {}", r.text());
    }

    // A restarted node applies the stored level from its own store.
    c.kill(2);
    let mark = c.log(2).len();
    c.start_node(2).unwrap();
    c.wait_ready(SETTLE).unwrap();
    get(&c, 2, "/api/status");
    wait_for(Duration::from_secs(5), || debug_lines(&c.log(2), mark) > 0).expect("no debug line after the restart");

    // Config: cluster-wide, then one node's own value over it.
    let r = put(&c, 0, "/api/config/slow_call_ms", json!({"value": 250}));
    assert_eq!((r.status, r.json()), (200, json!({"key": "slow_call_ms", "value": 250, "node": null})));
    let set_at = Instant::now();
    wait_for(Duration::from_secs(5), || (0..3).all(|i| get(&c, i, "/api/config")["effective"]["slow_call_ms"] == 250))
        .expect("slow_call_ms not applied everywhere");
    eprintln!("config applied on every node within {:?}", set_at.elapsed());
    let node2 = c.nodes[2].id.clone();
    let r = put(&c, 1, &format!("/api/config/call_deadline_ms?node={node2}"), json!({"value": 700}));
    assert_eq!(r.status, 200, "{}", r.text());
    wait_for(Duration::from_secs(5), || get(&c, 2, "/api/config")["effective"]["call_deadline_ms"] == 700).unwrap();
    // The deadline is live on that node's app port (wherever the slice runs), and only there.
    let started = Instant::now();
    let slow = http(c.nodes[2].app, "GET", "/faulty/slow/1500", b"").unwrap();
    let took = started.elapsed();
    assert_eq!(slow.status, 504, "{}", slow.text());
    assert!(took >= Duration::from_millis(650) && took < Duration::from_millis(1400), "answered after {took:?}");
    assert_eq!(http(c.nodes[0].app, "GET", "/faulty/slow/1500", b"").unwrap().status, 200);
    let config = get(&c, 0, "/api/config");
    assert_eq!(config["effective"]["call_deadline_ms"], 10_000, "other nodes keep theirs: {config}");
    assert_eq!(config["cluster"], json!({"slow_call_ms": 250}));
    assert_eq!(config["nodes"], json!({ node2.clone(): {"call_deadline_ms": 700} }));
    assert!(config["settable"].as_array().is_some_and(|s| s.iter().any(|x| x["key"] == "start_backoff_ms")));
    let unknown = put(&c, 0, "/api/config/colour", json!({"value": 1}));
    assert_eq!(unknown.status, 400);
    assert!(unknown.json()["settable"].as_array().is_some_and(|s| s.len() == 4), "{}", unknown.text());
    assert_eq!(put(&c, 0, "/api/config/slow_call_ms", json!({"value": 0})).status, 400);
    assert_eq!(put(&c, 0, "/api/config/slow_call_ms?node=node-9", json!({"value": 5})).status, 400);
    let deleted =
        http(c.nodes[0].management, "DELETE", &format!("/api/config/call_deadline_ms?node={node2}"), b"").unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    wait_for(Duration::from_secs(5), || get(&c, 2, "/api/config")["effective"]["call_deadline_ms"] == 10_000).unwrap();
    let again =
        http(c.nodes[0].management, "DELETE", &format!("/api/config/call_deadline_ms?node={node2}"), b"").unwrap();
    assert_eq!(again.status, 404, "{}", again.text());

    // DELETE resets: no more debug lines anywhere.
    let reset = http(c.nodes[0].management, "DELETE", "/api/log-levels/mgmt", b"").unwrap();
    assert_eq!((reset.status, reset.json()), (200, json!({"target": "mgmt", "level": null})));
    std::thread::sleep(Duration::from_millis(1200));
    let marks: Vec<usize> = (0..3).map(|i| c.log(i).len()).collect();
    for i in 0..3 {
        get(&c, i, "/api/health");
    }
    assert!((0..3).all(|i| debug_lines(&c.log(i), marks[i]) == 0), "debug lines after the reset");
    assert_eq!(http(c.nodes[1].management, "DELETE", "/api/log-levels/mgmt", b"").unwrap().status, 404);

    // Each change is an event, recorded once, on every node.
    wait_for(Duration::from_secs(5), || {
        (0..3).all(|i| {
            let events = get(&c, i, "/api/events?limit=1000");
            let count =
                |kind: &str| events["events"].as_array().map_or(0, |e| e.iter().filter(|x| x["kind"] == kind).count());
            count("log_level_changed") == 2 && count("config_changed") == 3
        })
    })
    .expect("change events on every node");
}
