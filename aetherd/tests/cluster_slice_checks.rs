//! Lifecycle visibility and blueprint-time checks over real processes (3 nodes):
//! - a slice whose `start` refuses shows its own message, without ABI status numbers, in the record of every
//!   node it failed on, in `/api/slices` on every node and in the `slice_state` events;
//! - two artifacts declaring the same route are refused when the second blueprint is posted (409 naming the
//!   route and both artifacts, through another node than the first post), while the next version of the
//!   same artifact may take the routes over;
//! - `instances` above the node count is accepted with a warning in the answer and a `blueprint_warning`
//!   event.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const FAULTY: &str = "org.aether.examples:faulty:1.0.0";
const ECHO: &str = "org.aether.examples:echo:1.0.0";
const ECHO_V2: &str = "org.aether.examples:echo:2.0.0";
/// The echo library uploaded again under another group: another artifact declaring echo's routes.
const MIRROR: &str = "org.aether.mirror:echo:1.0.0";

fn cluster(name: &str, env: &[(&str, &str)]) -> LocalCluster {
    let repo = example_slices_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("aether-slice-checks-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    spec.env.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let c = LocalCluster::start(spec).unwrap();
    c.wait_ready(SETTLE).unwrap();
    c
}

fn get_json(c: &LocalCluster, node: usize, path: &str) -> Value {
    http(c.nodes[node].management, "GET", path, b"").ok().filter(|r| r.status == 200).map_or(Value::Null, |r| r.json())
}

fn post(c: &LocalCluster, node: usize, blueprint: &str) -> (u16, Value) {
    let answer = http(c.nodes[node].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap();
    (answer.status, answer.json())
}

fn records_of(slices: &Value, artifact: &str) -> Vec<Value> {
    let all = slices["slices"].as_array().cloned().unwrap_or_default();
    all.into_iter().filter(|s| s["artifact"] == artifact).collect()
}

#[test]
fn a_refused_start_keeps_the_slices_own_message_on_every_node() {
    let c = cluster("refused", &[("AETHER_START_FAILURES_MAX", "3"), ("AETHER_START_BACKOFF_MS", "200")]);
    let message = "no database at db.example:5432";
    let blueprint = format!(
        "name = \"refusing\"\n[[slices]]\nartifact = \"{FAULTY}\"\ninstances = 3\n[slices.config]\n\
         on_start = \"refuse\"\non_start_message = \"{message}\"\n"
    );
    let (status, body) = post(&c, 0, &blueprint);
    assert_eq!(status, 201, "{body}");
    let failed_everywhere = |i: usize| {
        let records = records_of(&get_json(&c, i, "/api/slices"), FAULTY);
        records.len() == 3 && records.iter().all(|r| r["state"] == "FAILED")
    };
    wait_for(Duration::from_secs(60), || failed_everywhere(0)).unwrap();
    let expected = format!("{FAULTY}: start failed: faulty: refusing to start: {message}");
    for i in 0..3 {
        wait_for(Duration::from_secs(5), || failed_everywhere(i)).unwrap();
        let records = records_of(&get_json(&c, i, "/api/slices"), FAULTY);
        let errors: Vec<&str> = records.iter().map(|r| r["error"].as_str().unwrap_or("")).collect();
        assert!(errors.iter().all(|e| *e == expected), "node {i}: {errors:?}");
    }
    // Each node records its own records' changes; every node serves all of them.
    let failures = || {
        let events = get_json(&c, 2, "/api/events?limit=1000");
        let all = events["events"].as_array().cloned().unwrap_or_default();
        all.into_iter().filter(|e| e["kind"] == "slice_state" && e["data"]["to"] == "FAILED").collect::<Vec<_>>()
    };
    let three_nodes = || {
        let nodes: std::collections::BTreeSet<String> = failures().iter().map(|e| e["node"].to_string()).collect();
        nodes.len() == 3
    };
    let seen = wait_for(Duration::from_secs(10), three_nodes);
    let failures = failures();
    seen.unwrap_or_else(|_| panic!("FAILED events of 3 nodes: {failures:?}"));
    for event in failures {
        assert_eq!(event["data"]["reason"], json!(expected), "{event}");
    }
}

#[test]
fn routes_declared_twice_are_refused_at_post_time_and_big_instance_counts_are_warned_about() {
    let c = cluster("routes", &[]);
    let (status, body) = post(&c, 0, &format!("name = \"echoes\"\n[[slices]]\nartifact = \"{ECHO}\"\n"));
    assert_eq!((status, body["warnings"].clone()), (201, json!([])), "{body}");
    let library =
        std::fs::read(example_slices_repo().unwrap().join("org/aether/examples/echo/1.0.0/echo-1.0.0.so")).unwrap();
    let upload = http(c.nodes[1].management, "POST", "/api/artifacts/org.aether.mirror/echo/1.0.0", &library).unwrap();
    assert_eq!(upload.status, 201, "{}", upload.text());

    // Through another node than the first post: the deployed blueprint's routes count.
    let mirror = format!("name = \"mirror\"\n[[slices]]\nartifact = \"{MIRROR}\"\n");
    let (status, body) = post(&c, 1, &mirror);
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "route_conflict", "{body}");
    assert_eq!(body["route"], "GET /echo/{msg}", "{body}");
    assert_eq!(body["artifacts"], json!([MIRROR, ECHO]), "{body}");
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(MIRROR) && detail.contains(ECHO) && detail.contains("GET /echo/{msg}"), "{detail}");
    // The dry run refuses it the same way, and nothing was stored.
    let dry = http(c.nodes[2].management, "POST", "/api/blueprints/validate", mirror.as_bytes()).unwrap();
    assert_eq!((dry.status, dry.json()["error"].clone()), (409, json!("route_conflict")), "{}", dry.text());
    assert_eq!(get_json(&c, 2, "/api/blueprints")["blueprints"].as_array().map(Vec::len), Some(1));

    // The next version of the same artifact shares the routes: no conflict.
    let (status, body) = post(&c, 2, &format!("name = \"echoes\"\n[[slices]]\nartifact = \"{ECHO_V2}\"\n"));
    assert_eq!(status, 201, "{body}");

    // More instances than nodes: accepted, with a warning and an event.
    let counter = "name = \"counting\"\n[[slices]]\nartifact = \"org.aether.examples:counter:1.0.0\"\ninstances = 5\n";
    let (status, body) = post(&c, 1, counter);
    assert_eq!(status, 201, "{body}");
    let warnings = body["warnings"].as_array().cloned().unwrap_or_default();
    assert_eq!(warnings.len(), 1, "{body}");
    let warning = warnings[0].as_str().unwrap_or_default().to_owned();
    assert!(warning.contains("asks for 5 instances but the cluster has 3 nodes"), "{warning}");
    let warned = |i: usize| {
        let events = get_json(&c, i, "/api/events?limit=1000");
        (events["events"].as_array().into_iter().flatten())
            .any(|e| e["kind"] == "blueprint_warning" && e["data"] == json!({ "name": "counting", "warning": warning }))
    };
    wait_for(Duration::from_secs(5), || (0..3).all(warned)).unwrap();
}
