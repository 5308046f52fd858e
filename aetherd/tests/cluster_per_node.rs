//! Several instances of a slice on one node (`max_per_node`) over real processes: a single node runs the
//! `counter` slice three times as separate copies (each counts on its own, calls take turns among them), an
//! operator's scale-down stops copies and a scale-up starts them again within the bound; on three nodes, the
//! instances of a node killed with SIGKILL double up on the survivors.

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(40);
const COUNTER: &str = "org.aether.examples:counter:1.0.0";

fn start(nodes: usize, name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    devcluster::start_with_examples(nodes, &format!("per-node-{name}"), aetherd, SETTLE).unwrap()
}

fn post(c: &LocalCluster, via: usize, path: &str, body: &str) -> (u16, Value) {
    let r = http(c.nodes[via].management, "POST", path, body.as_bytes()).unwrap();
    (r.status, r.json())
}

/// Copies running of each ACTIVE, wanted ACTIVE counter record, by node, as node `via` sees them.
fn copies(c: &LocalCluster, via: usize) -> BTreeMap<String, u64> {
    let Ok(r) = http(c.nodes[via].management, "GET", "/api/slices", b"") else { return BTreeMap::new() };
    let body = r.json();
    let slices = body["slices"].as_array().cloned().unwrap_or_default();
    let serving =
        slices.iter().filter(|s| s["artifact"] == COUNTER && s["state"] == "ACTIVE" && s["desired"] == "ACTIVE");
    // A record whose node does not run the copies it asks for yet counts as 0.
    let running = |s: &Value| match (s["copies"].as_u64(), s["running"].as_u64()) {
        (Some(asked), Some(runs)) if asked == runs => runs,
        _ => 0,
    };
    serving.map(|s| (s["node"].as_str().unwrap_or("?").to_owned(), running(s))).collect()
}

/// The values `n` increments of one counter answered, through node `via`'s app port.
fn increments(c: &LocalCluster, via: usize, name: &str, n: usize) -> Vec<i64> {
    (0..n)
        .map(|_| {
            let r = http(c.nodes[via].app, "POST", &format!("/counter/{name}/incr"), b"").unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["value"].as_i64().unwrap()
        })
        .collect()
}

#[test]
fn one_node_runs_three_copies_that_count_apart_and_follow_the_operators_count() {
    let c = start(1, "single");
    let blueprint = format!(
        "name = \"big-box\"\n[[slices]]\nartifact = \"{COUNTER}\"\ninstances = 3\nmin_instances = 1\n\
         max_instances = 5\nmax_per_node = 3\n"
    );
    let (status, body) = post(&c, 0, "/api/blueprints", &blueprint);
    assert_eq!(status, 201, "{body}");
    let node = c.nodes[0].id.clone();
    wait_for(SETTLE, || copies(&c, 0) == BTreeMap::from([(node.clone(), 3)])).expect("three copies on one node");
    let shown = http(c.nodes[0].management, "GET", "/api/blueprints/big-box", b"").unwrap().json();
    assert_eq!(
        (shown["slices"][0]["active"].as_u64(), shown["slices"][0]["max_per_node"].as_u64()),
        (Some(3), Some(3))
    );

    // Three separate copies: each one's first increment answers 1, and calls take turns among them.
    let values = increments(&c, 0, "a", 30);
    assert_eq!(values.iter().filter(|v| **v == 1).count(), 3, "{values:?}");
    assert_eq!(values.iter().max(), Some(&10), "calls take turns: {values:?}");

    // Scaled down to one: two copies stop, the node keeps serving from the one left.
    let (status, body) = post(&c, 0, "/api/scale", r#"{"artifact": "org.aether.examples:counter", "instances": 1}"#);
    assert_eq!(status, 200, "{body}");
    wait_for(SETTLE, || copies(&c, 0) == BTreeMap::from([(node.clone(), 1)])).expect("one copy left");
    let values = increments(&c, 0, "b", 5);
    assert_eq!(values, [1, 2, 3, 4, 5], "one copy counts every call");

    // Scaled up past what the node may take: three, not five.
    let (status, body) = post(&c, 0, "/api/scale", r#"{"artifact": "org.aether.examples:counter", "instances": 5}"#);
    assert_eq!(status, 200, "{body}");
    wait_for(SETTLE, || copies(&c, 0) == BTreeMap::from([(node.clone(), 3)])).expect("three copies again");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(copies(&c, 0), BTreeMap::from([(node.clone(), 3)]), "never above max_per_node");
    let values = increments(&c, 0, "c", 9);
    assert_eq!(values.iter().filter(|v| **v == 1).count(), 3, "{values:?}");
}

#[test]
fn a_killed_nodes_instances_double_up_on_the_survivors() {
    let mut c = start(3, "kill");
    let blueprint = format!(
        "name = \"spread\"\n[[slices]]\nartifact = \"{COUNTER}\"\ninstances = 3\nmin_instances = 1\nmax_per_node = 2\n"
    );
    let (status, body) = post(&c, 0, "/api/blueprints", &blueprint);
    assert_eq!(status, 201, "{body}");
    wait_for(SETTLE, || {
        let placed = copies(&c, 0);
        placed.len() == 3 && placed.values().all(|n| *n == 1)
    })
    .expect("spread one per node first");

    c.kill(2);
    let gone = c.nodes[2].id.clone();
    wait_for(Duration::from_secs(60), || {
        let placed = copies(&c, 0);
        !placed.contains_key(&gone) && placed.values().sum::<u64>() == 3 && placed.values().all(|n| *n <= 2)
    })
    .unwrap_or_else(|_| panic!("three instances on two nodes: {:?}", copies(&c, 0)));
    // Both survivors answer every call.
    for via in 0..2 {
        assert_eq!(increments(&c, via, &format!("k{via}"), 6).len(), 6);
    }
}
