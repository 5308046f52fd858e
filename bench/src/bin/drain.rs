//! `drain`: how long a make-before-break drain of a busy node takes, and how many calls fail meanwhile
//! (target: none).
//!
//! Run: `cargo run --release -p bench --bin drain -- --aetherd target/release/aetherd [--repo DIR]
//! [--rounds 3] [--json FILE]` (the example slices' repository: `--repo`, else `$AETHER_SLICES_REPO`, else
//! built with `cargo xtask build-slices`).
//!
//! A 4-node cluster runs every example slice that can share a cluster (nine artifacts) with 3 instances
//! each. A node holds at most one instance of an artifact, so the busiest node hosts up to nine instances.
//! Per round: under a steady client load on `echo` through the other nodes' app ports, the node hosting the
//! most instances is drained (`POST /api/nodes/{id}/drain`); the time runs until it is DECOMMISSIONED (every
//! instance replaced elsewhere, ACTIVE with its routes, before its own stopped). It is activated again and
//! the cluster settles before the next round. The baseline of the same run is the time the same blueprint
//! took to become ACTIVE from nothing.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: drain --aetherd PATH [--repo DIR] [--rounds N] [--json FILE]";
const SETTLE: Duration = Duration::from_secs(120);
const SLICES: [&str; 9] =
    ["echo", "shortener", "inventory", "pricing", "orders", "counter", "ledger", "inbox", "ticker"];
const INSTANCES: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let Some(aetherd) = value("--aetherd").map(PathBuf::from) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    if let Some(repo) = value("--repo") {
        std::env::set_var("AETHER_SLICES_REPO", repo);
    }
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3).clamp(1, 20);
    match run(&aetherd, rounds) {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            if let Some(path) = value("--json") {
                let _ = std::fs::write(path, report.to_string());
            }
        }
        Err(e) => {
            eprintln!("drain: {e}");
            std::process::exit(1);
        }
    }
}

fn blueprint() -> String {
    let mut text = String::from("name = \"everything\"\n");
    for name in SLICES {
        text.push_str(&format!(
            "[[slices]]\nartifact = \"org.aether.examples:{name}:1.0.0\"\ninstances = {INSTANCES}\n"
        ));
        if name == "orders" {
            text.push_str(
                "depends_on = [\"org.aether.examples:inventory:1.0.0\", \"org.aether.examples:pricing:1.0.0\"]\n\
                 [slices.config]\ncurrency = \"EUR\"\n",
            );
        }
    }
    text
}

/// ACTIVE instances per node, as node `via` lists them.
fn active_by_node(c: &LocalCluster, via: usize) -> Vec<(String, usize)> {
    let Ok(r) = http(c.nodes[via].management, "GET", "/api/slices", b"") else { return Vec::new() };
    let body = r.json();
    let mut counts: Vec<(String, usize)> = c.nodes.iter().map(|n| (n.id.clone(), 0)).collect();
    for s in body["slices"].as_array().into_iter().flatten() {
        if s["state"] == "ACTIVE" {
            if let Some(entry) = counts.iter_mut().find(|(id, _)| s["node"] == id.as_str()) {
                entry.1 += 1;
            }
        }
    }
    counts
}

fn all_active(c: &LocalCluster) -> bool {
    active_by_node(c, 0).iter().map(|(_, n)| n).sum::<usize>() >= SLICES.len() * INSTANCES
}

fn lifecycle(c: &LocalCluster, via: usize, id: &str) -> Value {
    http(c.nodes[via].management, "GET", &format!("/api/nodes/{id}"), b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn run(aetherd: &std::path::Path, rounds: usize) -> Result<Value, String> {
    let repo = devcluster::example_slices_repo()?;
    let dir = std::env::temp_dir().join(format!("aether-bench-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(4, &dir, aetherd);
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let c = LocalCluster::start(spec)?;
    c.wait_ready(SETTLE)?;
    let deployed = Instant::now();
    let posted =
        http(c.nodes[0].management, "POST", "/api/blueprints", blueprint().as_bytes()).map_err(|e| e.to_string())?;
    if posted.status != 201 {
        return Err(format!("blueprint refused: {}", posted.text()));
    }
    wait_for(SETTLE, || all_active(&c)).map_err(|_| format!("not deployed: {:?}", active_by_node(&c, 0)))?;
    let deploy = deployed.elapsed();
    println!("deployed {} instances in {} ms", SLICES.len() * INSTANCES, deploy.as_millis());

    let mut rounds_out = Vec::new();
    for round in 0..rounds {
        wait_for(SETTLE, || all_active(&c)).map_err(|_| "the cluster did not settle".to_string())?;
        let counts = active_by_node(&c, 0);
        let (victim_id, hosted) = counts.iter().max_by_key(|(_, n)| *n).cloned().ok_or("no nodes")?;
        let victim = c.nodes.iter().position(|n| n.id == victim_id).ok_or("no such node")?;
        let others: Vec<usize> = (0..4).filter(|&i| i != victim).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let ports: Vec<_> = others.iter().map(|&i| c.nodes[i].app).collect();
        let load = {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    match http(ports[i % ports.len()], "GET", &format!("/echo/drain{i}"), b"") {
                        Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let started = Instant::now();
        let r = http(c.nodes[others[0]].management, "POST", &format!("/api/nodes/{victim_id}/drain"), b"")
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("drain refused: {} {}", r.status, r.text()));
        }
        wait_for(SETTLE, || lifecycle(&c, others[0], &victim_id)["lifecycle"]["state"] == "DECOMMISSIONED")
            .map_err(|_| format!("not drained: {}", lifecycle(&c, others[0], &victim_id)))?;
        let took = started.elapsed();
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        let _ = load.join();
        let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
        println!(
            "round {}: {victim_id} with {hosted} instances drained in {} ms; calls ok {ok}, failed {failed}",
            round + 1,
            took.as_millis()
        );
        rounds_out.push((took, hosted, ok, failed));
        let r = http(c.nodes[others[0]].management, "POST", &format!("/api/nodes/{victim_id}/activate"), b"")
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("activate refused: {} {}", r.status, r.text()));
        }
    }
    let mut times: Vec<Duration> = rounds_out.iter().map(|r| r.0).collect();
    times.sort();
    let median = times[times.len() / 2];
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round();
    Ok(json!({
        "instances_total": SLICES.len() * INSTANCES,
        "deploy_ms (baseline: the same blueprint ACTIVE from nothing)": ms(deploy),
        "drain_ms": { "median": ms(median), "min": ms(times[0]), "max": ms(times[times.len() - 1]) },
        "ratio_median_to_deploy": (median.as_secs_f64() / deploy.as_secs_f64() * 1000.0).round() / 1000.0,
        "rounds": rounds_out.iter().map(|(t, hosted, ok, failed)| json!({
            "drain_ms": ms(*t), "instances_on_node": hosted, "calls_ok": ok, "calls_failed": failed
        })).collect::<Vec<_>>(),
    }))
}
