//! Blueprints to running slices behind HTTP on every node, over real processes: deployment, routing
//! (local and forwarded), slice-to-slice calls across nodes, auto-healing after kill -9, rejoin, refusals
//! and deletion.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
    let c = devcluster::start_with_examples(nodes, &format!("deploy-{name}"), aetherd, SETTLE).unwrap();
    c
}

fn blueprint_status(c: &LocalCluster, node: usize) -> Value {
    http(c.nodes[node].management, "GET", "/api/blueprints/shop", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

/// Every slice of the blueprint has as many ACTIVE instances as it wants.
fn fully_active(status: &Value) -> bool {
    status["slices"].as_array().is_some_and(|slices| {
        !slices.is_empty() && slices.iter().all(|s| s["active"].as_u64() == s["desired"].as_u64())
    })
}

fn deploy(c: &LocalCluster) {
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", SHOP.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let ok = wait_for(SETTLE, || fully_active(&blueprint_status(c, 1)));
    assert!(ok.is_ok(), "not deployed: {}", blueprint_status(c, 1));
}

fn order(c: &LocalCluster, node: usize) -> (u16, Value) {
    let r = http(c.nodes[node].app, "POST", "/orders", br#"{"item": "book", "qty": 2}"#).unwrap();
    (r.status, r.json())
}

#[test]
fn blueprint_deploys_and_every_node_serves_every_route() {
    let c = start(3, "routes");
    deploy(&c);
    // Routes are registered as instances become ACTIVE; give every node's registry a moment to follow.
    wait_for(SETTLE, || (0..3).all(|n| order(&c, n).0 == 200)).unwrap();
    for n in 0..3 {
        let echo = http(c.nodes[n].app, "GET", "/echo/hello", b"").unwrap();
        assert_eq!(echo.status, 200, "node {n}: {}", echo.text());
        assert_eq!(echo.json()["echo"], "hello");
        let (status, body) = order(&c, n);
        assert_eq!(status, 200, "node {n}: {body}");
        assert_eq!(body["item"], "book");
        assert_eq!(body["qty"], 2);
        assert_eq!(body["reserved"], true);
        let unknown = http(c.nodes[n].app, "POST", "/orders", br#"{"item": "unicorn", "qty": 1}"#).unwrap();
        assert_eq!(unknown.status, 404, "{}", unknown.text());
        let nowhere = http(c.nodes[n].app, "GET", "/no/such/route", b"").unwrap();
        assert_eq!(nowhere.status, 404);
        assert!(nowhere.json()["error"].is_string());
    }
    // The orders flow runs on one node and its dependencies on others: somewhere a call crossed nodes.
    let slices = http(c.nodes[0].management, "GET", "/api/slices", b"").unwrap().json();
    assert_eq!(slices["slices"].as_array().map(Vec::len), Some(5), "{slices}");
}

#[test]
fn bad_blueprints_are_refused_and_change_nothing() {
    let c = start(3, "refuse");
    let cases = [
        ("name = \"x\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ncolour = \"blue\"\n", 4),
        ("name = \"x\"\n[[slices]]\nartifact = \"org.aether.examples:nope:1.0.0\"\n", 3),
        ("name = \"x\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 1\nmin_instances = 2\n", 5),
        ("name = \"x\"\n[[slices\n", 2),
    ];
    for (text, line) in cases {
        let r = http(c.nodes[1].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
        assert_eq!(r.status, 400, "{text}: {}", r.text());
        assert_eq!(r.json()["line"], line, "{}", r.text());
    }
    let listed = http(c.nodes[0].management, "GET", "/api/blueprints", b"").unwrap().json();
    assert_eq!(listed["blueprints"], serde_json::json!([]));
    let kv = http(c.nodes[0].management, "GET", "/api/kv?prefix=targets/", b"").unwrap().json();
    assert_eq!(kv["count"], 0);
}

#[test]
fn killed_node_is_healed_while_clients_keep_calling() {
    let mut c = start(3, "heal");
    deploy(&c);
    wait_for(SETTLE, || (0..3).all(|n| order(&c, n).0 == 200)).unwrap();
    let slices = http(c.nodes[0].management, "GET", "/api/slices", b"").unwrap().json();
    let host_of_orders = slices["slices"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["artifact"] == "org.aether.examples:orders:1.0.0"))
        .and_then(|x| x["node"].as_str())
        .map(str::to_string)
        .unwrap();
    let victim = c.nodes.iter().position(|n| n.id == host_of_orders).unwrap();
    let caller = (victim + 1) % 3;
    let (stop, calls, errors) =
        (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures: Arc<std::sync::Mutex<Vec<std::time::Instant>>> = Arc::default();
    let app = c.nodes[caller].app;
    let client = {
        let (stop, calls, errors, failures) = (stop.clone(), calls.clone(), errors.clone(), failures.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let ok = http(app, "POST", "/orders", br#"{"item": "book", "qty": 1}"#).is_ok_and(|r| r.status == 200);
                calls.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                    failures.lock().unwrap().push(std::time::Instant::now());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    c.kill(victim);
    let healed = wait_for(SETTLE, || {
        let status = blueprint_status(&c, caller);
        fully_active(&status)
            && status["slices"].as_array().is_some_and(|s| {
                s.iter().all(|x| {
                    x["where"].as_array().is_some_and(|w| w.iter().all(|p| p["node"] != host_of_orders.as_str()))
                })
            })
    });
    assert!(healed.is_ok(), "not healed: {}", blueprint_status(&c, caller));
    wait_for(SETTLE, || order(&c, caller).0 == 200).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let (calls, errors) = (calls.load(Ordering::Relaxed), errors.load(Ordering::Relaxed));
    let failures = failures.lock().unwrap().clone();
    let window = failures.first().zip(failures.last()).map(|(a, b)| *b - *a).unwrap_or_default();
    eprintln!("heal window: {errors} errors in {calls} calls over {window:?}");
    assert!(calls > errors, "no call succeeded: {errors} of {calls}");
    // Calls to the dead node's instance fail until it is re-placed: the grace period (5 s) and a load.
    assert!(window < Duration::from_secs(10), "calls kept failing for {window:?}");
    // The killed node comes back and gets work again (echo wants two instances; spread keeps one per node).
    c.start_node(victim).unwrap();
    wait_for(SETTLE, || c.health(victim).is_some_and(|h| h["ready"] == true)).unwrap();
    wait_for(SETTLE, || http(c.nodes[victim].app, "GET", "/echo/back", b"").is_ok_and(|r| r.status == 200)).unwrap();
}

#[test]
fn deleting_a_blueprint_unloads_everything() {
    let c = start(3, "delete");
    deploy(&c);
    let deleted = http(c.nodes[2].management, "DELETE", "/api/blueprints/shop", b"").unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.text());
    let gone = wait_for(SETTLE, || {
        http(c.nodes[0].management, "GET", "/api/slices", b"")
            .is_ok_and(|r| r.json()["slices"] == serde_json::json!([]))
    });
    assert!(gone.is_ok(), "{}", http(c.nodes[0].management, "GET", "/api/slices", b"").unwrap().text());
    wait_for(SETTLE, || (0..3).all(|n| http(c.nodes[n].app, "GET", "/echo/x", b"").is_ok_and(|r| r.status == 404)))
        .unwrap();
    for n in 0..3 {
        assert!(c.log(n).contains("Unloaded") || !c.log(n).contains("Loaded("), "node {n} kept a slice loaded");
    }
    assert_eq!(http(c.nodes[0].management, "DELETE", "/api/blueprints/shop", b"").unwrap().status, 404);
}

#[test]
fn uploaded_artifact_reaches_nodes_that_never_had_it() {
    let dir = std::env::temp_dir().join(format!("aether-deploy-upload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // No --repo: every node starts with an empty repository under its data dir.
    let c = LocalCluster::start(ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")))).unwrap();
    wait_for(SETTLE, || (0..3).all(|i| c.health(i).is_some_and(|h| h["ready"] == true))).unwrap();
    let library = example_slices_repo().unwrap().join("org/aether/examples/echo/1.0.0/echo-1.0.0.so");
    let bytes = std::fs::read(&library).unwrap();
    let not_elf =
        http(c.nodes[0].management, "POST", "/api/artifacts/org.aether.examples/echo/1.0.0", b"hello").unwrap();
    assert_eq!(not_elf.status, 422, "{}", not_elf.text());
    let up = http(c.nodes[0].management, "POST", "/api/artifacts/org.aether.examples/echo/1.0.0", &bytes).unwrap();
    assert_eq!(up.status, 201, "{}", up.text());
    let stored = |n: usize| c.nodes[n].data_dir.join("repository/org/aether/examples/echo/1.0.0/echo-1.0.0.so");
    assert!(std::fs::read(stored(0)).is_ok_and(|b| b == bytes), "the node that took the upload keeps a copy");
    let blueprint = "name = \"up\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 3\n";
    assert_eq!(http(c.nodes[0].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap().status, 201);
    for n in 0..3 {
        let id = c.nodes[n].id.clone();
        let served_here = wait_for(SETTLE, || {
            http(c.nodes[n].app, "GET", "/echo/x", b"")
                .is_ok_and(|r| r.status == 200 && r.json()["node"] == id.as_str())
        });
        assert!(served_here.is_ok(), "node {n} does not serve echo itself");
    }
    // The others fetched it from the storage plane before loading it.
    assert!((0..3).all(|n| std::fs::read(stored(n)).is_ok_and(|b| b == bytes)));
}
