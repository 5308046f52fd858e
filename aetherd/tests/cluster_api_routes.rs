//! The read-side management routes over real processes: `/api/routes`, `/api/blueprints/{name}/status` through
//! a node kill and the heal, the dry run `/api/blueprints/validate` (placement on the live nodes, nothing
//! stored), `/api/artifacts` and `/api/openapi.yaml`, and 405 answers with `Allow`.

use devcluster::{wait_for, LocalCluster};
use serde_json::{json, Value};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

const ECHO: &str = "name = \"api\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 2\n";

fn start() -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));

    devcluster::start_with_examples(3, "api-routes", aetherd, SETTLE).unwrap()
}

fn get(c: &LocalCluster, node: usize, path: &str) -> Value {
    c.api(node, "GET", path, b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn state(c: &LocalCluster, node: usize) -> Value {
    get(c, node, "/api/blueprints/api/status")["state"].clone()
}

#[test]
fn routes_status_validate_and_artifacts_answer_from_the_live_cluster() {
    let mut c = start();
    let dry = c.api(1, "POST", "/api/blueprints/validate", ECHO.as_bytes()).unwrap();
    assert_eq!(dry.status, 200, "{}", dry.text());
    let placement = &dry.json()["placement"][0];
    assert_eq!(placement["nodes"].as_array().map(Vec::len), Some(2), "{placement}");
    assert_eq!(get(&c, 0, "/api/blueprints")["blueprints"], json!([]), "a dry run stores nothing");

    let posted = c.api(0, "POST", "/api/blueprints", ECHO.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    wait_for(SETTLE, || state(&c, 2) == "running").unwrap();
    let status = get(&c, 2, "/api/blueprints/api/status");
    let instances = status["slices"][0]["instances"].as_array().cloned().unwrap_or_default();
    assert_eq!(instances.len(), 2, "{status}");
    let serving: Vec<String> = instances.iter().filter_map(|i| i["node"].as_str().map(str::to_owned)).collect();

    let routes = wait_for(SETTLE, || {
        let routes = get(&c, 1, "/api/routes")["routes"].clone();
        routes.as_array().is_some_and(|r| {
            r.iter().any(|r| {
                r["path"] == "/echo/{msg}" && r["method"] == "GET" && r["instances"].as_array().map(Vec::len) == Some(2)
            })
        })
    });
    assert!(routes.is_ok(), "{}", get(&c, 1, "/api/routes"));
    let route = get(&c, 1, "/api/routes")["routes"].as_array().cloned().unwrap_or_default();
    assert!(route.iter().all(|r| r["artifact"] == "org.aether.examples:echo:1.0.0"), "{route:?}");

    // The same blueprint again would change nothing: the dry run says where it already runs.
    let again = c.api(0, "POST", "/api/blueprints/validate", ECHO.as_bytes()).unwrap().json();
    let mut placed: Vec<String> = again["placement"][0]["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    placed.sort();
    let mut expected = serving.clone();
    expected.sort();
    assert_eq!(placed, expected, "{again}");
    assert!(again["warnings"].to_string().contains("replaces the stored blueprint"), "{again}");

    // The examples are in each node's folder, not uploaded: the catalog does not know them.
    let artifacts = get(&c, 0, "/api/artifacts")["local_only"].clone();
    let echo = artifacts.as_array().into_iter().flatten().find(|a| a["artifact"] == "org.aether.examples:echo:1.0.0");
    let echo = echo.unwrap_or_else(|| panic!("echo is in the repository: {artifacts}"));
    assert_eq!(echo["sha256"].as_str().map(str::len), Some(64), "{echo}");
    assert!(echo["bytes"].as_u64().is_some_and(|b| b > 0), "{echo}");

    let document = c.api(0, "GET", "/api/openapi.yaml", b"").unwrap();
    assert_eq!(document.header("content-type"), Some("application/yaml"));
    assert!(document.text().starts_with("openapi: 3.1"));
    let wrong = c.api(0, "DELETE", "/api/routes", b"").unwrap();
    assert_eq!((wrong.status, wrong.header("allow")), (405, Some("GET, HEAD")));

    // A node with an instance dies: the blueprint is no longer running, then runs again on the others.
    let victim = (0..3).find(|&i| serving.contains(&c.nodes[i].id)).unwrap_or(0);
    let watcher = (0..3).find(|&i| i != victim).unwrap_or(1);
    c.kill(victim);
    wait_for(SETTLE, || state(&c, watcher) != "running").unwrap();
    wait_for(SETTLE, || state(&c, watcher) == "running").unwrap();
    let healed = get(&c, watcher, "/api/blueprints/api/status");
    let nodes: Vec<&str> =
        healed["slices"][0]["instances"].as_array().into_iter().flatten().filter_map(|i| i["node"].as_str()).collect();
    assert!(!nodes.contains(&c.nodes[victim].id.as_str()), "{healed}");
}
