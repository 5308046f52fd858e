//! Live config over real processes (3 nodes): a blueprint posted again with a changed `[slices.config]`
//! reaches the running echo instances without a restart (the same records, never left ACTIVE, answer the new
//! value on every node's app port); a config the slice refuses leaves the old one in place, and the refusal
//! (the slice's own message) shows in `/api/slices` on every node and as `slice_reconfigured` events; the
//! same config asked for again after the blueprint went back is offered to the slice again.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const ECHO: &str = "org.aether.examples:echo:1.0.0";

fn cluster() -> LocalCluster {
    let repo = example_slices_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("aether-live-config-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let c = LocalCluster::start(spec).unwrap();
    c.wait_ready(SETTLE).unwrap();
    c
}

fn get_json(c: &LocalCluster, node: usize, path: &str) -> Value {
    http(c.nodes[node].management, "GET", path, b"").ok().filter(|r| r.status == 200).map_or(Value::Null, |r| r.json())
}

fn post(c: &LocalCluster, node: usize, config: &str) {
    let blueprint =
        format!("name = \"live\"\n[[slices]]\nartifact = \"{ECHO}\"\ninstances = 3\n[slices.config]\n{config}");
    let answer = http(c.nodes[node].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap();
    assert_eq!(answer.status, 201, "{}", answer.text());
}

/// `(node, instance, state, since_ms)` of every echo record, as `node` reports them.
fn records(c: &LocalCluster, node: usize) -> Vec<Value> {
    let all = get_json(c, node, "/api/slices")["slices"].as_array().cloned().unwrap_or_default();
    let mut echo: Vec<Value> = all.into_iter().filter(|s| s["artifact"] == ECHO).collect();
    echo.sort_by_key(|s| s["node"].to_string());
    echo
}

/// The echo records as node 0 reports them, once it answers with all three.
fn three_records(c: &LocalCluster) -> Vec<Value> {
    let mut last = Vec::new();
    let _ = wait_for(Duration::from_secs(10), || {
        last = records(c, 0);
        last.len() == 3
    });
    last
}

fn identity(records: &[Value]) -> Vec<(Value, Value, Value, Value)> {
    records
        .iter()
        .map(|r| (r["node"].clone(), r["instance"].clone(), r["state"].clone(), r["since_ms"].clone()))
        .collect()
}

fn greeting(c: &LocalCluster, node: usize) -> Option<String> {
    let answer = http(c.nodes[node].app, "GET", "/echo/config/greeting", b"").ok()?;
    (answer.status == 200).then(|| answer.json()["greeting"].as_str().unwrap_or_default().to_owned())
}

#[test]
fn a_changed_config_reaches_running_instances_and_a_refusal_is_visible_everywhere() {
    let c = cluster();
    post(&c, 0, "greeting = \"hello\"\n");
    let all_active = |i: usize| {
        let r = records(&c, i);
        r.len() == 3 && r.iter().all(|s| s["state"] == "ACTIVE")
    };
    wait_for(Duration::from_secs(60), || all_active(0) && (0..3).all(|i| greeting(&c, i).as_deref() == Some("hello")))
        .unwrap();
    let before = identity(&three_records(&c));

    // Accepted: every node's app port answers the new value, from the same instances.
    post(&c, 1, "greeting = \"bonjour\"\n");
    let changed = || {
        let r = records(&c, 0);
        r.len() == 3
            && r.iter().all(|s| s["config"] == json!({ "greeting": "bonjour" }))
            && (0..3).all(|i| greeting(&c, i).as_deref() == Some("bonjour"))
    };
    wait_for(Duration::from_secs(30), changed)
        .unwrap_or_else(|_| panic!("not reconfigured: {:?}\n{}", records(&c, 0), c.log(0)));
    assert_eq!(identity(&three_records(&c)), before, "reconfigured in place: same records, never left ACTIVE");

    // Refused: the old config stays, and the refusal is in /api/slices on every node and in the events.
    post(&c, 2, "greeting = \"hola\"\nrefuse = \"not on a Monday\"\n");
    let reason = "echo refuses this config: not on a Monday";
    let refused = |i: usize| {
        let r = records(&c, i);
        r.len() == 3
            && r.iter().all(|s| {
                s["config"] == json!({ "greeting": "bonjour" })
                    && s["config_refused"]["reason"].as_str().is_some_and(|why| why.contains(reason))
            })
    };
    wait_for(Duration::from_secs(30), || (0..3).all(refused))
        .unwrap_or_else(|_| panic!("refusal not shown: {:?}", records(&c, 1)));
    assert!((0..3).all(|i| greeting(&c, i).as_deref() == Some("bonjour")), "the old config serves on");
    assert_eq!(identity(&three_records(&c)), before, "a refusal restarts nothing either");
    let refusal_events = |i: usize| {
        let events = get_json(&c, i, "/api/events?limit=1000");
        let all = events["events"].as_array().cloned().unwrap_or_default();
        let refusals = all.iter().filter(|e| e["kind"] == "slice_reconfigured" && e["data"]["accepted"] == false);
        refusals.filter(|e| e["data"]["reason"].as_str().is_some_and(|why| why.contains(reason))).count()
    };
    wait_for(Duration::from_secs(10), || (0..3).all(|i| refusal_events(i) == 3))
        .unwrap_or_else(|_| panic!("refusal events on node 0: {}", refusal_events(0)));

    // Back to the running config: the refusal is no longer current.
    post(&c, 0, "greeting = \"bonjour\"\n");
    let cleared = || records(&c, 2).len() == 3 && records(&c, 2).iter().all(|s| s["config_refused"].is_null());
    wait_for(Duration::from_secs(30), cleared).unwrap_or_else(|_| panic!("refusal kept: {:?}", records(&c, 2)));

    // The refused config asked for again is offered to the slices again (not answered from memory).
    post(&c, 1, "greeting = \"hola\"\nrefuse = \"not on a Monday\"\n");
    wait_for(Duration::from_secs(30), || (0..3).all(refused) && (0..3).all(|i| refusal_events(i) == 6))
        .unwrap_or_else(|_| panic!("not offered again: {} refusal events on node 0", refusal_events(0)));
}
