//! `ctx.kv()` through real slices on real processes (3 nodes): the echo example's probe route
//! (`POST /echo/kv/{op}`) and the shortener. A write through one node is read at once through another
//! (linearizable); the blueprint's key quota is a clear 413 naming the quota and changes nothing; echo cannot
//! see the shortener's keys, cannot name a key outside its scope, and a key spelled like a control-plane key
//! stays inside its scope; a watch delivers every change under its prefix, in commit order, to the instance.

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
/// One echo instance, so the watch and the reads of its deliveries reach the same instance from any node.
const BLUEPRINT: &str = "name = \"kvs\"\n\
    [[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 1\n[slices.kv]\nmax_keys = 8\n\
    [[slices]]\nartifact = \"org.aether.examples:shortener:1.0.0\"\ninstances = 1\n";

fn kv(c: &LocalCluster, node: usize, op: &str, query: &str) -> (u16, Value) {
    let answer = http(c.nodes[node].app, "POST", &format!("/echo/kv/{op}?{query}"), b"").unwrap();
    (answer.status, answer.json())
}

fn mgmt_keys(c: &LocalCluster, prefix: &str) -> Vec<String> {
    let listed = http(c.nodes[0].management, "GET", &format!("/api/kv?prefix={prefix}"), b"").unwrap().json();
    let entries = listed["entries"].as_array().cloned().unwrap_or_default();
    entries.iter().filter_map(|e| e["key"].as_str().map(str::to_owned)).collect()
}

#[test]
fn a_slice_state_is_linearizable_scoped_bounded_and_watched_in_order() {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let c = devcluster::start_with_examples(3, "slice-kv", aetherd, SETTLE).unwrap();
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", BLUEPRINT.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let serving = |i: usize| kv(&c, i, "get", "key=probe").0 == 200;
    wait_for(SETTLE, || (0..3).all(serving)).unwrap();
    let link = http(c.nodes[1].app, "POST", "/links", br#"{"url":"https://example.com"}"#).unwrap();
    assert_eq!(link.status, 201, "{}", link.text());

    // The watch first, so it sees every write below.
    assert_eq!(kv(&c, 0, "watch", "prefix=w/&method=kv-change").0, 200);
    let mut written = Vec::new();
    for n in 0..6 {
        let (key, value) = (format!("w/{n}"), format!("v{n}"));
        let (status, put) = kv(&c, n % 3, "put", &format!("key={key}&value={value}"));
        assert_eq!(status, 200, "{put}");
        let version = put["ok"].as_u64().unwrap();
        let (_, read) = kv(&c, (n + 1) % 3, "get", &format!("key={key}"));
        assert_eq!(
            (read["ok"]["value"].as_str(), read["ok"]["version"].as_u64()),
            (Some(value.as_str()), Some(version))
        );
        written.push((key, version));
    }

    // Quota: 8 keys (probe is absent, w/0..w/5 are 6): two more fit, the next is refused and nothing changes.
    for key in ["q1", "q2"] {
        assert_eq!(kv(&c, 1, "put", &format!("key={key}&value=x")).0, 200);
    }
    let before = mgmt_keys(&c, "data/kvs/org.aether.examples:echo/");
    let (status, over) = kv(&c, 2, "put", "key=q3&value=x");
    assert_eq!(status, 413, "{over}");
    assert!(over["detail"].as_str().unwrap_or_default().contains("QuotaExceeded"), "{over}");
    assert_eq!(mgmt_keys(&c, "data/kvs/org.aether.examples:echo/"), before);
    assert_eq!(before.len(), 8, "{before:?}");

    // Scope: the shortener's keys are not echo's; nothing can name a key outside the scope.
    assert_eq!(kv(&c, 0, "get", "key=next-id").1["ok"], Value::Null);
    assert!(!mgmt_keys(&c, "data/kvs/org.aether.examples:shortener/").is_empty());
    for key in ["../shortener/next-id", "/routes/GET/x", "a//b", ".."] {
        let (status, answer) = kv(&c, 0, "get", &format!("key={key}"));
        assert_eq!(status, 400, "{key}: {answer}");
    }
    let routes_before = mgmt_keys(&c, "routes/");
    assert_eq!(kv(&c, 0, "delete", "key=q2").0, 200);
    assert_eq!(kv(&c, 0, "put", "key=routes/GET/x&value=mine").0, 200);
    assert_eq!(mgmt_keys(&c, "routes/"), routes_before, "a control-plane key spelled by a slice stays in its scope");
    assert!(mgmt_keys(&c, "data/kvs/org.aether.examples:echo/routes/").len() == 1);

    // The watch got every change under w/, in commit order, and nothing else.
    let deliveries = || {
        let answer = http(c.nodes[2].app, "GET", "/echo/kv-changes/all", b"").unwrap();
        answer.json().as_array().cloned().unwrap_or_default()
    };
    wait_for(Duration::from_secs(10), || deliveries().len() >= written.len())
        .unwrap_or_else(|_| panic!("deliveries: {:?}", deliveries()));
    let got: Vec<(String, u64)> = deliveries()
        .iter()
        .map(|d| (d["key"].as_str().unwrap_or_default().to_owned(), d["version"].as_u64().unwrap_or(0)))
        .collect();
    assert_eq!(got, written);
}
