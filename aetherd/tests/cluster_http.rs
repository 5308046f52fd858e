//! HTTP in full across nodes, over real processes: with one instance of `echo` (and of `faulty`) on a
//! 3-node cluster, two of the three app ports forward every call. Through each of them the client's
//! method, path and header fields reach the slice, the slice's status (201 with `Location`, 302, 418,
//! 204) and header fields come back, a slice-to-slice call carries the same, the request id crosses the
//! node boundary, and a panic is answered with a generic body naming the request id.

use devcluster::{http, http_with, wait_for, LocalCluster};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);

const WEB: &str = r#"name = "web"
[[slices]]
artifact = "org.aether.examples:echo:1.0.0"
instances = 1
[[slices]]
artifact = "org.aether.examples:faulty:1.0.0"
instances = 1
"#;

fn start() -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    devcluster::start_with_examples(3, "http-full", aetherd, SETTLE).unwrap()
}

#[test]
fn method_headers_and_any_status_round_trip_through_forwarded_calls() {
    let c = start();
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", WEB.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let ready = wait_for(SETTLE, || {
        (0..3).all(|n| {
            let echo = http(c.nodes[n].app, "GET", "/echo/ready", b"").map(|r| r.status).unwrap_or(0);
            let faulty = http(c.nodes[n].app, "GET", "/faulty/ok", b"").map(|r| r.status).unwrap_or(0);
            echo == 200 && faulty == 200
        })
    });
    assert!(ready.is_ok(), "echo and faulty are not served on every node");
    // One instance of each: two of the three app ports can only answer by forwarding.
    let status = http(c.nodes[0].management, "GET", "/api/blueprints/web", b"").unwrap().json();
    let active: Vec<u64> = status["slices"].as_array().unwrap().iter().filter_map(|s| s["active"].as_u64()).collect();
    assert_eq!(active, [1, 1], "{status}");

    let probes = [("X-Probe", "one"), ("X-Probe", "two")];
    for n in 0..3 {
        let app = c.nodes[n].app;
        for route in ["status", "relay"] {
            let created = http_with(app, "POST", &format!("/echo/{route}/201"), &probes, b"").unwrap();
            assert_eq!(created.status, 201, "node {n} {route}: {}", created.text());
            assert_eq!(created.header("location"), Some("/echo/created"), "node {n} {route}");
            assert_eq!(created.header("x-echo-probe"), Some("one,two"), "node {n} {route}");
            let method = if route == "status" { "POST" } else { "PUT" };
            assert_eq!(created.header("x-echo-method"), Some(method), "node {n} {route}");
            assert_eq!(created.header("upgrade"), None, "node {n} {route}: hop-by-hop fields are dropped");

            let found = http(app, "POST", &format!("/echo/{route}/302?to=%2Felsewhere"), b"").unwrap();
            assert_eq!((found.status, found.header("location")), (302, Some("/elsewhere")), "node {n} {route}");
            let teapot = http(app, "POST", &format!("/echo/{route}/418"), b"").unwrap();
            assert_eq!((teapot.status, teapot.json()["status"].as_u64()), (418, Some(418)), "node {n} {route}");
            let empty = http(app, "POST", &format!("/echo/{route}/204"), b"").unwrap();
            assert_eq!((empty.status, empty.body.len()), (204, 0), "node {n} {route}");
        }
        let get = http(app, "GET", "/echo/status/200", b"").unwrap();
        assert_eq!((get.status, get.header("x-echo-method")), (200, Some("GET")), "node {n}");

        let id = format!("cross-node-{n}");
        let seen = http_with(app, "GET", "/echo/invocation/now", &[("X-Request-Id", &id)], b"").unwrap();
        assert_eq!(seen.json()["request_id"], id.as_str(), "node {n}: the request id follows the call");
        assert!(seen.json()["deadline_ms"].as_u64().is_some_and(|ms| ms > 0), "node {n}: {}", seen.text());

        let id = format!("boom-{n}");
        let panicked = http_with(app, "GET", "/faulty/panic", &[("X-Request-Id", &id)], b"").unwrap();
        assert_eq!(panicked.status, 500, "node {n}");
        let generic = format!(r#"{{"error":"internal","detail":"the slice failed; request id {id}"}}"#);
        assert_eq!(panicked.text(), generic, "node {n}: no panic text, only the request id");
    }
}
