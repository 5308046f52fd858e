//! What clients are told around retries and failures, over real `aetherd` processes: a write retried under
//! the same `Idempotency-Key` (to the same node or another) applies once and answers what the first attempt
//! got, and a write already handed to consensus when its node stops is answered 504 ("may still apply"),
//! never 503 ("refused").

use devcluster::{http, http_with, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(20);

fn start(name: &str) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("aether-answers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let c = LocalCluster::start(ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))).unwrap();
    wait_for(SETTLE, || (0..3).all(|i| c.health(i).is_some_and(|h| h["ready"] == true))).unwrap();
    c
}

/// `PUT /api/kv/{path}` with an `Idempotency-Key`: (status, body).
fn put_keyed(c: &LocalCluster, node: usize, path: &str, key: &str, value: &str) -> (u16, Value) {
    let headers = [("Idempotency-Key", key)];
    match http_with(c.nodes[node].management, "PUT", &format!("/api/kv/{path}"), &headers, value.as_bytes()) {
        Ok(r) => (r.status, r.json()),
        Err(e) => (0, Value::String(e.to_string())),
    }
}

/// Sends until the cluster answers 200 (a node may refuse for a moment right after start).
fn put_keyed_eventually(c: &LocalCluster, node: usize, path: &str, key: &str, value: &str) -> u64 {
    let mut last = (0, Value::Null);
    let ok = wait_for(SETTLE, || {
        last = put_keyed(c, node, path, key, value);
        last.0 == 200
    });
    assert!(ok.is_ok(), "PUT {path} (key {key}) on node {node} never succeeded: {last:?}");
    last.1["version"].as_u64().unwrap()
}

fn version(c: &LocalCluster, node: usize, key: &str) -> Option<u64> {
    let r = http(c.nodes[node].management, "GET", &format!("/api/kv/{key}"), b"").ok()?;
    r.json()["version"].as_u64()
}

#[test]
fn writes_retried_under_one_idempotency_key_apply_once_on_any_node() {
    let c = start("retry");
    let first = put_keyed_eventually(&c, 0, "user/once", "put-once-1", "v");
    // Retries to the same node and to another one: the same answer, nothing applied again.
    for node in [0, 1, 2, 0] {
        assert_eq!(put_keyed(&c, node, "user/once", "put-once-1", "v"), (200, serde_json::json!({ "version": first })));
    }
    assert_eq!(version(&c, 0, "user/once"), Some(first));

    // A compare-and-set retried is answered its own success, not a conflict with itself.
    let cas_path = format!("user/once?version={first}");
    let second = put_keyed_eventually(&c, 1, &cas_path, "cas-once-1", "w");
    assert!(second > first);
    for node in [1, 2] {
        assert_eq!(put_keyed(&c, node, &cas_path, "cas-once-1", "w").1["version"], second);
    }
    assert_eq!(version(&c, 2, "user/once"), Some(second));
    // Without a key the same CAS is a new request, and conflicts.
    let plain = http(c.nodes[0].management, "PUT", &format!("/api/kv/{cas_path}"), b"w").unwrap();
    assert_eq!(plain.status, 409);

    // The key names one request: reused for another body it is refused; a bad key never reaches the node.
    assert_eq!(put_keyed(&c, 2, "user/once", "put-once-1", "other").0, 422);
    assert_eq!(put_keyed(&c, 0, "user/once", &"k".repeat(129), "v").0, 400);
    assert_eq!(put_keyed(&c, 0, "user/once", "two words", "v").0, 400);
    assert_eq!(version(&c, 0, "user/once"), Some(second));
}

/// One request on its own connection, waiting up to `wait` for the answer (the shared helper waits 5 s,
/// as long as a write may wait for its slot): (status, JSON body).
fn request_waiting(addr: SocketAddr, head: &str, body: &[u8], wait: Duration) -> std::io::Result<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(wait))?;
    let head = format!("{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let json = text.split_once("\r\n\r\n").and_then(|(_, b)| serde_json::from_str(b).ok()).unwrap_or(Value::Null);
    Ok((status, json))
}

#[test]
fn a_write_pending_when_its_node_stops_is_answered_504_and_a_keyed_retry_applies_once() {
    let mut c = start("stop");
    put_keyed_eventually(&c, 0, "user/warm", "warm-up", "x");
    // Node 0's frames reach nobody: its next write is handed to consensus but can never be decided.
    let cut = br#"{"rules":[{"direction":"outbound","action":"drop"}]}"#;
    assert_eq!(http(c.nodes[0].management, "POST", "/api/debug/faults", cut).unwrap().status, 200);
    let management = c.nodes[0].management;
    let writer = std::thread::spawn(move || {
        let head = "PUT /api/kv/user/stopped HTTP/1.1\r\nIdempotency-Key: stop-1";
        request_waiting(management, head, b"v", Duration::from_secs(20))
    });
    std::thread::sleep(Duration::from_millis(700));
    // A clean stop drains the management API: the waiting write gets its answer before the node exits.
    c.stop(0, Duration::from_secs(15));
    let (status, body) = writer.join().unwrap().expect("the stopping node answers the waiting write");
    assert_eq!(status, 504, "{body}");
    assert!(body["detail"].as_str().unwrap_or("").contains("may still apply"), "{body}");

    // The client retries elsewhere under the same key: applied once, whatever became of the first attempt.
    let applied = put_keyed_eventually(&c, 1, "user/stopped", "stop-1", "v");
    assert_eq!(put_keyed(&c, 2, "user/stopped", "stop-1", "v").1["version"], applied);
    assert_eq!(put_keyed(&c, 1, "user/stopped", "stop-1", "v").1["version"], applied);
    assert_eq!(version(&c, 1, "user/stopped"), Some(applied));
}
