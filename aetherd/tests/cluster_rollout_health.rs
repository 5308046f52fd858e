//! A rollout whose new version fails is rolled back by the leader on its own, over real processes: under a
//! steady load, echo 2.0.0 answers `/echo/fail-on/2.0.0` with 500 while 1.0.0 answers 200; the canary's
//! error-rate threshold is crossed, the rollout goes ROLLING_BACK then ROLLED_BACK with the figures as its
//! reason, and no request fails for any other reason than the new version's own answers (the rollback
//! itself fails none).

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(40);
const ECHO: &str = "org.aether.examples:echo:1.0.0";

/// What the clients saw: 200s by version, the new version's own 500s, anything else.
#[derive(Default)]
struct Seen {
    ok_v1: u64,
    ok_v2: u64,
    failed_v2: u64,
    other: Vec<String>,
}

fn rollout(c: &LocalCluster, id: &str) -> Value {
    http(c.nodes[0].management, "GET", &format!("/api/rollouts/{id}"), b"").map(|r| r.json()).unwrap_or(Value::Null)
}

#[test]
fn a_failing_new_version_is_rolled_back_automatically_without_failing_other_requests() {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let c = devcluster::start_with_examples(3, "rollout-health", aetherd, SETTLE).unwrap();
    let blueprint = format!("name = \"svc\"\n[[slices]]\nartifact = \"{ECHO}\"\ninstances = 2\n");
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let ports: Vec<_> = c.nodes.iter().map(|n| n.app).collect();
    wait_for(SETTLE, || {
        ports.iter().all(|p| http(*p, "GET", "/echo/fail-on/2.0.0", b"").is_ok_and(|r| r.status == 200))
    })
    .expect("1.0.0 serves on every node");

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let clients: Vec<_> = ports
        .iter()
        .map(|&port| {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let answer = http(port, "GET", "/echo/fail-on/2.0.0", b"");
                    let mut seen = seen.lock().unwrap();
                    match answer {
                        Ok(r) if r.status == 200 && r.json()["version"] == "2.0.0" => seen.ok_v2 += 1,
                        Ok(r) if r.status == 200 => seen.ok_v1 += 1,
                        Ok(r) if r.status == 500 && r.text().contains("2.0.0 fails here") => seen.failed_v2 += 1,
                        Ok(r) => seen.other.push(format!("{port}: {} {}", r.status, r.text())),
                        Err(e) => seen.other.push(format!("{port}: {e}")),
                    }
                    drop(seen);
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        })
        .collect();

    let body = r#"{"artifact": "org.aether.examples:echo", "version": "2.0.0", "strategy": "canary",
                   "stages": [{"percent": 30, "hold_ms": 600000}, {"percent": 100, "hold_ms": 0}],
                   "approval": "auto",
                   "thresholds": {"max_error_rate": 0.1, "window_ms": 5000, "min_calls": 10}}"#;
    let started = http(c.nodes[1].management, "POST", "/api/rollouts", body.as_bytes()).unwrap();
    assert_eq!(started.status, 201, "{}", started.text());
    let id = started.json()["id"].as_str().unwrap().to_owned();
    let back = wait_for(Duration::from_secs(90), || rollout(&c, &id)["state"] == "ROLLED_BACK");
    let record = rollout(&c, &id);
    assert!(back.is_ok(), "not rolled back: {record}");
    let reason = record["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.contains("with errors") && reason.contains("above the 10.0% allowed"), "{reason}");

    // After the rollback every answer is 1.0.0's again.
    std::thread::sleep(Duration::from_secs(2));
    let before = {
        let s = seen.lock().unwrap();
        (s.ok_v2, s.failed_v2)
    };
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    assert!(seen.failed_v2 > 0, "the canary did take traffic");
    assert_eq!((seen.ok_v2, seen.failed_v2), before, "no call reached 2.0.0 after the rollback");
    assert!(seen.other.is_empty(), "requests failed for another reason: {:?}", &seen.other[..seen.other.len().min(5)]);
    eprintln!(
        "answers: {} from 1.0.0, {} failed by 2.0.0 itself, {} other failures; reason: {reason}",
        seen.ok_v1,
        seen.failed_v2,
        seen.other.len()
    );
    let gone = wait_for(SETTLE, || {
        let slices = http(c.nodes[0].management, "GET", "/api/slices", b"").map(|r| r.json()).unwrap_or(Value::Null);
        let list = slices["slices"].as_array().cloned().unwrap_or_default();
        !list.iter().any(|s| s["artifact"] == "org.aether.examples:echo:2.0.0")
    });
    assert!(gone.is_ok(), "2.0.0 records left after the rollback");
}
