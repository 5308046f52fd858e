//! Scaling over real processes: an autoscaled slice gains instances under a load spike and loses them in the
//! calm after, never below its `min_instances`, each change explained in a `slice_scaled` event; an
//! operator's `POST /api/scale` is bounded by the blueprint.

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(40);
const ECHO: &str = "org.aether.examples:echo:1.0.0";

fn start(name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    devcluster::start_with_examples(3, &format!("scaling-{name}"), aetherd, SETTLE).unwrap()
}

/// Serving echo instances (ACTIVE, wanted ACTIVE) as node `via` sees them.
fn serving(c: &LocalCluster, via: usize) -> usize {
    let Ok(r) = http(c.nodes[via].management, "GET", "/api/slices", b"") else { return 0 };
    let body = r.json();
    let slices = body["slices"].as_array().cloned().unwrap_or_default();
    slices.iter().filter(|s| s["artifact"] == ECHO && s["state"] == "ACTIVE" && s["desired"] == "ACTIVE").count()
}

fn post(c: &LocalCluster, path: &str, body: &str) -> (u16, Value) {
    let r = http(c.nodes[0].management, "POST", path, body.as_bytes()).unwrap();
    (r.status, r.json())
}

fn scaled_events(c: &LocalCluster) -> Vec<Value> {
    let Ok(r) = http(c.nodes[0].management, "GET", "/api/events?limit=1000", b"") else { return Vec::new() };
    let body = r.json();
    let events = body["events"].as_array().cloned().unwrap_or_default();
    events.into_iter().filter(|e| e["kind"] == "slice_scaled").collect()
}

#[test]
fn a_load_spike_scales_up_and_the_calm_scales_down_never_below_the_minimum() {
    let c = start("spike");
    let blueprint = format!(
        "name = \"svc\"\n[[slices]]\nartifact = \"{ECHO}\"\ninstances = 1\nmin_instances = 1\nmax_instances = 3\n\
         autoscale = true\n"
    );
    let (status, body) = post(&c, "/api/blueprints", &blueprint);
    assert_eq!(status, 201, "{body}");
    // Call rate alone decides here: CPU never counts as hot, and always as calm.
    let config = r#"{"calls_high": 30, "calls_low": 5, "cpu_high": 100000, "cpu_low": 99999,
                     "cooldown_ms": 2000, "warmup_ms": 1000}"#;
    let (status, body) = post(&c, "/api/controller/config", config);
    assert_eq!(status, 200, "{body}");
    wait_for(SETTLE, || serving(&c, 0) == 1).expect("one instance first");

    // The operator's bounds are the blueprint's.
    assert_eq!(post(&c, "/api/scale", r#"{"artifact": "org.aether.examples:echo", "instances": 4}"#).0, 409);
    assert_eq!(post(&c, "/api/scale", r#"{"artifact": "org.aether.examples:nothing", "instances": 1}"#).0, 404);

    // The spike: four clients as fast as they go, on every node's app port.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let port = c.nodes[t % 3].app;
            let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    if http(port, "GET", "/echo/spike", b"").is_ok_and(|r| r.status == 200) {
                        calls.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    let spike = Instant::now();
    let up = wait_for(Duration::from_secs(60), || serving(&c, 0) == 3);
    let up_after = spike.elapsed();
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    assert!(up.is_ok(), "not scaled up to 3 ({} serving, {} calls made)", serving(&c, 0), calls.load(Ordering::SeqCst));
    eprintln!("scaled up to 3 instances {up_after:?} after the load started");

    // The calm: back to one instance, and never fewer.
    let calm = Instant::now();
    let mut lowest = usize::MAX;
    let down = wait_for(Duration::from_secs(60), || {
        let n = serving(&c, 0);
        lowest = lowest.min(n);
        n == 1
    });
    assert!(down.is_ok(), "not scaled down to 1 ({} serving)", serving(&c, 0));
    eprintln!("scaled down to 1 instance {:?} after the load stopped", calm.elapsed());
    let hold = Instant::now();
    while hold.elapsed() < Duration::from_secs(5) {
        lowest = lowest.min(serving(&c, 0));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(lowest >= 1, "went below min_instances: {lowest}");
    assert_eq!(serving(&c, 0), 1, "stays at the minimum while calm");

    let events = scaled_events(&c);
    let reasons: Vec<&str> = events.iter().filter_map(|e| e["data"]["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("calls/s per instance, over 30")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("-> 1 instances (min 1)")), "{reasons:?}");
}
