//! Taking a node off duty without failing a request, over real processes: an operator's drain under a
//! steady client load (make before break, the disruption budget never broken, then activate), a SIGTERM
//! that drains before the node exits, and a drain that cannot proceed and says why.

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(40);
const ECHO: &str = "org.aether.examples:echo:1.0.0";

fn start(nodes: usize, name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    devcluster::start_with_examples(nodes, &format!("drain-{name}"), aetherd, SETTLE).unwrap()
}

fn blueprint(instances: u32, min_available: Option<u32>) -> String {
    let budget = min_available.map(|m| format!("min_available = {m}\n")).unwrap_or_default();
    format!("name = \"svc\"\n[[slices]]\nartifact = \"{ECHO}\"\ninstances = {instances}\n{budget}")
}

/// The echo records as (node, state, desired), from node `via`'s view.
fn echo_records(c: &LocalCluster, via: usize) -> Vec<(String, String, String)> {
    let Ok(r) = http(c.nodes[via].management, "GET", "/api/slices", b"") else { return Vec::new() };
    let body = r.json();
    let slices = body["slices"].as_array().cloned().unwrap_or_default();
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    slices
        .iter()
        .filter(|s| s["artifact"] == ECHO)
        .map(|s| (text(&s["node"]), text(&s["state"]), text(&s["desired"])))
        .collect()
}

fn active_on(c: &LocalCluster, via: usize) -> Vec<String> {
    echo_records(c, via).into_iter().filter(|(_, state, _)| state == "ACTIVE").map(|(n, _, _)| n).collect()
}

fn deploy(c: &LocalCluster, instances: u32, min_available: Option<u32>) {
    let text = blueprint(instances, min_available);
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let expected = instances as usize;
    let ok = wait_for(SETTLE, || active_on(c, 0).len() == expected);
    assert!(ok.is_ok(), "not deployed: {:?}", echo_records(c, 0));
}

fn node_detail(c: &LocalCluster, via: usize, id: &str) -> Value {
    http(c.nodes[via].management, "GET", &format!("/api/nodes/{id}"), b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn lifecycle(c: &LocalCluster, via: usize, id: &str) -> String {
    node_detail(c, via, id)["lifecycle"]["state"].as_str().unwrap_or_default().to_owned()
}

/// A client thread calling `/echo/...` through the app ports of `nodes`, round robin, until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Load {
    fn start(c: &LocalCluster, nodes: &[usize]) -> Load {
        let ports: Vec<_> = nodes.iter().map(|&i| c.nodes[i].app).collect();
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let (stop, calls) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let (s, n, f) = (Arc::clone(&stop), Arc::clone(&calls), Arc::clone(&failures));
        let thread = std::thread::spawn(move || {
            let mut i = 0usize;
            while !s.load(Ordering::SeqCst) {
                let port = ports[i % ports.len()];
                i += 1;
                let answer = http(port, "GET", &format!("/echo/call{i}"), b"");
                n.fetch_add(1, Ordering::SeqCst);
                match answer {
                    Ok(r) if r.status == 200 => {}
                    Ok(r) => f.lock().unwrap().push(format!("{port}: {} {}", r.status, r.text())),
                    Err(e) => f.lock().unwrap().push(format!("{port}: {e}")),
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Load { stop, calls, failures, thread: Some(thread) }
    }

    /// Stops the client; returns (calls, failures).
    fn finish(mut self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        (self.calls.load(Ordering::SeqCst), self.failures.lock().unwrap().clone())
    }
}

/// Samples the serving echo count (ACTIVE and still wanted ACTIVE: a retired record has lost its endpoints)
/// every 50 ms from node `via` until stopped; returns the lowest seen.
fn sample_min_active(c: &LocalCluster, via: usize, stop: &AtomicBool) -> usize {
    let mut lowest = usize::MAX;
    while !stop.load(Ordering::SeqCst) {
        let records = echo_records(c, via);
        if !records.is_empty() {
            lowest = lowest.min(records.iter().filter(|(_, s, d)| s == "ACTIVE" && d == "ACTIVE").count());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    lowest
}

fn index_of(c: &LocalCluster, id: &str) -> usize {
    c.nodes.iter().position(|n| n.id == id).unwrap()
}

#[test]
fn a_drain_under_load_fails_no_request_and_keeps_the_budget_then_activate_places_again() {
    let c = start(3, "load");
    deploy(&c, 2, Some(2));
    let victim_id = active_on(&c, 0)[0].clone();
    let victim = index_of(&c, &victim_id);
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    wait_for(SETTLE, || {
        others.iter().all(|&i| http(c.nodes[i].app, "GET", "/echo/x", b"").is_ok_and(|r| r.status == 200))
    })
    .unwrap();
    let load = Load::start(&c, &others);
    std::thread::sleep(Duration::from_millis(500));
    let drained = http(c.nodes[others[0]].management, "POST", &format!("/api/nodes/{victim_id}/drain"), b"").unwrap();
    assert_eq!(drained.status, 200, "{}", drained.text());
    let sampling = AtomicBool::new(false);
    let lowest = std::thread::scope(|s| {
        let sampler = s.spawn(|| sample_min_active(&c, others[1], &sampling));
        let done = wait_for(SETTLE, || lifecycle(&c, others[0], &victim_id) == "DECOMMISSIONED");
        std::thread::sleep(Duration::from_millis(500));
        sampling.store(true, Ordering::SeqCst);
        let lowest = sampler.join().unwrap();
        assert!(done.is_ok(), "not drained: {} {:?}", node_detail(&c, others[0], &victim_id), echo_records(&c, 0));
        lowest
    });
    let (calls, failures) = load.finish();
    assert!(calls > 50, "the client ran: {calls} calls");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(lowest >= 2, "min_available 2 broken: {lowest} ACTIVE at one sample");
    let detail = node_detail(&c, others[0], &victim_id);
    assert_eq!(detail["instances"], serde_json::json!([]), "{detail}");
    assert!(active_on(&c, 0).iter().all(|n| *n != victim_id));
    // A drained node receives nothing new, even when the blueprint asks for one instance per node.
    let listed = http(c.nodes[0].management, "GET", "/api/nodes", b"").unwrap().json();
    let entry = listed["nodes"].as_array().unwrap().iter().find(|n| n["id"] == victim_id.as_str()).cloned().unwrap();
    assert_eq!(entry["lifecycle"]["state"], "DECOMMISSIONED", "{listed}");
    let text = blueprint(3, Some(2));
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
    assert!(posted.status < 300, "{}", posted.text());
    std::thread::sleep(Duration::from_secs(3));
    assert!(active_on(&c, 0).iter().all(|n| *n != victim_id), "{:?}", echo_records(&c, 0));
    // Activated, it takes the third instance.
    let activated = http(c.nodes[0].management, "POST", &format!("/api/nodes/{victim_id}/activate"), b"").unwrap();
    assert_eq!(activated.status, 200, "{}", activated.text());
    let placed = wait_for(SETTLE, || active_on(&c, 0).contains(&victim_id));
    assert!(placed.is_ok(), "not placed again: {:?}", echo_records(&c, 0));
    assert_eq!(lifecycle(&c, 0, &victim_id), "ON_DUTY");
}

#[test]
fn sigterm_drains_first_exits_cleanly_and_the_node_comes_back_on_duty() {
    let mut c = start(3, "sigterm");
    deploy(&c, 2, Some(2));
    let victim_id = active_on(&c, 0)[0].clone();
    let victim = index_of(&c, &victim_id);
    let others: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    wait_for(SETTLE, || {
        others.iter().all(|&i| http(c.nodes[i].app, "GET", "/echo/x", b"").is_ok_and(|r| r.status == 200))
    })
    .unwrap();
    let load = Load::start(&c, &others);
    std::thread::sleep(Duration::from_millis(500));
    // The default drain bound is 30 s, then at most 20 s for the orderly stop.
    let code = c.stop(victim, Duration::from_secs(55));
    std::thread::sleep(Duration::from_millis(500));
    let (calls, failures) = load.finish();
    assert_eq!(code, Some(0), "exit code; log:\n{}", c.log(victim));
    assert!(c.log(victim).contains("drained; stopping"), "it drained first:\n{}", c.log(victim));
    assert!(calls > 50, "the client ran: {calls} calls");
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(active_on(&c, others[0]).len(), 2, "{:?}", echo_records(&c, others[0]));
    assert_eq!(lifecycle(&c, others[0], &victim_id), "SHUTTING_DOWN");
    c.start_node(victim).unwrap();
    let back = wait_for(SETTLE, || lifecycle(&c, others[0], &victim_id) == "ON_DUTY");
    assert!(back.is_ok(), "not back on duty: {}", node_detail(&c, others[0], &victim_id));
}

#[test]
fn a_drain_with_nowhere_to_go_waits_and_says_why() {
    let c = start(3, "stuck");
    deploy(&c, 3, None);
    let victim_id = c.nodes[1].id.clone();
    let unknown = http(c.nodes[0].management, "POST", "/api/nodes/no-such-node/drain", b"").unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert!(unknown.json()["detail"].as_str().unwrap_or_default().contains("no-such-node"), "{}", unknown.text());
    let drained = http(c.nodes[0].management, "POST", &format!("/api/nodes/{victim_id}/drain"), b"").unwrap();
    assert_eq!(drained.status, 200, "{}", drained.text());
    let says = wait_for(SETTLE, || {
        node_detail(&c, 2, &victim_id)["waiting"].as_str().is_some_and(|w| w.contains("no ON_DUTY node can take"))
    });
    assert!(says.is_ok(), "no reason given: {}", node_detail(&c, 2, &victim_id));
    let detail = node_detail(&c, 2, &victim_id);
    assert_eq!(detail["lifecycle"]["state"], "DRAINING", "{detail}");
    assert_eq!(detail["instances"].as_array().map(Vec::len), Some(1), "it keeps its instance: {detail}");
    assert_eq!(active_on(&c, 0).len(), 3, "nothing was stopped");
    let status = http(c.nodes[1].management, "GET", "/api/status", b"").unwrap().json();
    assert_eq!(status["lifecycle"]["state"], "DRAINING", "{status}");
    // The drained node records the wait as an event (peers receive it as events spread).
    let events =
        || http(c.nodes[1].management, "GET", "/api/events?limit=1000", b"").map(|r| r.text()).unwrap_or_default();
    let recorded = wait_for(Duration::from_secs(15), || events().contains("no ON_DUTY node can take"));
    assert!(recorded.is_ok(), "the wait is an event: {}", events());
}
