//! `rollout`: how long version changes take on 3 nodes under a fixed request rate, how many requests fail
//! meanwhile (target: none), and how fast scaling reacts to load.
//!
//! Run: `cargo run --release -p bench --bin rollout -- --aetherd target/release/aetherd [--repo DIR]
//! [--rounds 5] [--json FILE]` (the example slices' repository: `--repo`, else `$AETHER_SLICES_REPO`, else
//! built with `cargo xtask build-slices`).
//!
//! A 3-node cluster runs `echo` with 3 instances, and a client sends `GET /echo/...` at a fixed rate (200
//! requests a second over the three app ports) for the whole run. Per round, alternately 1.0.0 -> 2.0.0 and
//! back:
//! - *rollout*: `POST /api/rollouts` with automatic stages (50% for 1 s, then 100%); the time runs until the
//!   rollout is COMPLETED and the old version has no record left;
//! - *re-post*: the blueprint posted again naming the other version; the time runs until no record of the old
//!   version is left.
//!
//! The baseline of the same run is the time the blueprint took to become ACTIVE from nothing. Then the
//! scaling reaction: `echo` autoscaled between 1 and 3 instances (call-rate marks 30 and 5 per instance per
//! second, cooldown 2 s, warm-up 1 s); per round the client turns to 400 requests a second and the time runs
//! until a second instance is ACTIVE; then the load drops back and the slice scales down before the next
//! round. Medians over the rounds.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: rollout --aetherd PATH [--repo DIR] [--rounds N] [--json FILE]";
const SETTLE: Duration = Duration::from_secs(120);
const BASE: &str = "org.aether.examples:echo";

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
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(5).clamp(1, 20);
    match run(&aetherd, rounds) {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            if let Some(path) = value("--json") {
                let _ = std::fs::write(path, report.to_string());
            }
        }
        Err(e) => {
            eprintln!("rollout: {e}");
            std::process::exit(1);
        }
    }
}

fn blueprint(version: &str, scaling: bool) -> String {
    let bounds = if scaling {
        "instances = 1\nmin_instances = 1\nmax_instances = 3\nautoscale = true\n"
    } else {
        "instances = 3\n"
    };
    format!("name = \"bench\"\n[[slices]]\nartifact = \"{BASE}:{version}\"\n{bounds}")
}

/// Serving echo records per version, as node 0 lists them.
fn serving(c: &LocalCluster, version: &str) -> usize {
    let Ok(r) = http(c.nodes[0].management, "GET", "/api/slices", b"") else { return 0 };
    let body = r.json();
    let artifact = format!("{BASE}:{version}");
    let list = body["slices"].as_array().cloned().unwrap_or_default();
    list.iter()
        .filter(|s| s["artifact"] == artifact.as_str() && s["state"] == "ACTIVE" && s["desired"] == "ACTIVE")
        .count()
}

fn records(c: &LocalCluster, version: &str) -> usize {
    let Ok(r) = http(c.nodes[0].management, "GET", "/api/slices", b"") else { return usize::MAX };
    let body = r.json();
    let artifact = format!("{BASE}:{version}");
    body["slices"].as_array().into_iter().flatten().filter(|s| s["artifact"] == artifact.as_str()).count()
}

fn post(c: &LocalCluster, path: &str, body: &str) -> Result<Value, String> {
    let r = http(c.nodes[0].management, "POST", path, body.as_bytes()).map_err(|e| e.to_string())?;
    if r.status / 100 != 2 {
        return Err(format!("{path}: {} {}", r.status, r.text()));
    }
    Ok(r.json())
}

/// A client at a fixed rate (requests a second) over the app ports, counting answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(c: &LocalCluster, rate: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let threads = (0..4)
            .map(|t| {
                let port = c.nodes[t % c.nodes.len()].app;
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let mut next = Instant::now();
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Four threads share the rate.
                        let every = Duration::from_micros(4_000_000 / rate.max(1));
                        next += every;
                        i += 1;
                        match http(port, "GET", &format!("/echo/b{t}-{i}"), b"") {
                            Ok(r) if r.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                            _ => failed.fetch_add(1, Ordering::Relaxed),
                        };
                        let now = Instant::now();
                        if next > now {
                            std::thread::sleep(next - now);
                        } else {
                            next = now;
                        }
                    }
                })
            })
            .collect();
        Load { stop, ok, failed, threads }
    }

    fn counts(&self) -> (u64, u64) {
        (self.ok.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn run(aetherd: &std::path::Path, rounds: usize) -> Result<Value, String> {
    let repo = devcluster::example_slices_repo()?;
    let dir = std::env::temp_dir().join(format!("aether-bench-rollout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, aetherd);
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let c = LocalCluster::start(spec)?;
    c.wait_ready(SETTLE)?;
    let deployed = Instant::now();
    post(&c, "/api/blueprints", &blueprint("1.0.0", false))?;
    wait_for(SETTLE, || serving(&c, "1.0.0") == 3).map_err(|_| "not deployed".to_string())?;
    let deploy = deployed.elapsed();
    println!("deployed 3 instances in {} ms", ms(deploy));

    let load = Load::start(&c, 200);
    std::thread::sleep(Duration::from_secs(1));
    let mut out = Vec::new();
    let mut version = "1.0.0";
    for round in 0..rounds {
        let next = if version == "1.0.0" { "2.0.0" } else { "1.0.0" };
        // A rollout with automatic stages.
        let before = load.counts();
        let started = Instant::now();
        let body = format!(
            r#"{{"artifact": "{BASE}", "version": "{next}", "id": "bench-{round}", "approval": "auto",
                 "stages": [{{"percent": 50, "hold_ms": 1000}}, {{"percent": 100, "hold_ms": 0}}]}}"#
        );
        post(&c, "/api/rollouts", &body)?;
        let done = |c: &LocalCluster| {
            let r = http(c.nodes[0].management, "GET", &format!("/api/rollouts/bench-{round}"), b"");
            r.is_ok_and(|r| r.json()["state"] == "COMPLETED") && records(c, version) == 0
        };
        wait_for(SETTLE, || done(&c)).map_err(|_| format!("rollout {round} did not complete"))?;
        let rollout = started.elapsed();
        let after = load.counts();
        let rollout_failed = after.1 - before.1;
        version = next;
        // A re-post naming the other version.
        let next = if version == "1.0.0" { "2.0.0" } else { "1.0.0" };
        let before = load.counts();
        let started = Instant::now();
        post(&c, "/api/blueprints", &blueprint(next, false))?;
        wait_for(SETTLE, || serving(&c, next) == 3 && records(&c, version) == 0)
            .map_err(|_| format!("re-post {round} did not finish"))?;
        let repost = started.elapsed();
        let after = load.counts();
        let repost_failed = after.1 - before.1;
        version = next;
        println!(
            "round {}: rollout {} ms ({} failed), re-post {} ms ({} failed)",
            round + 1,
            ms(rollout),
            rollout_failed,
            ms(repost),
            repost_failed
        );
        out.push(json!({
            "rollout_ms": ms(rollout), "rollout_failed": rollout_failed,
            "repost_ms": ms(repost), "repost_failed": repost_failed,
        }));
    }
    let (ok, failed) = load.counts();
    load.stop();

    // Scaling reaction.
    post(
        &c,
        "/api/controller/config",
        r#"{"calls_high": 30, "calls_low": 5, "cpu_high": 100000, "cpu_low": 99999, "cooldown_ms": 2000, "warmup_ms": 1000}"#,
    )?;
    post(&c, "/api/blueprints", &blueprint(version, true))?;
    wait_for(SETTLE, || serving(&c, version) == 1 && records(&c, version) == 1)
        .map_err(|_| "autoscaled blueprint not at 1 instance".to_string())?;
    let mut reactions = Vec::new();
    for round in 0..rounds {
        let load = Load::start(&c, 400);
        let started = Instant::now();
        wait_for(SETTLE, || serving(&c, version) >= 2)
            .map_err(|_| format!("scale round {round}: no second instance"))?;
        let took = started.elapsed();
        load.stop();
        println!("scale round {}: second instance ACTIVE {} ms after the load began", round + 1, ms(took));
        reactions.push(ms(took));
        wait_for(SETTLE, || records(&c, version) == 1).map_err(|_| format!("scale round {round}: no scale-down"))?;
    }

    let rollout_ms: Vec<f64> = out.iter().filter_map(|r| r["rollout_ms"].as_f64()).collect();
    let repost_ms: Vec<f64> = out.iter().filter_map(|r| r["repost_ms"].as_f64()).collect();
    Ok(json!({
        "request_rate_per_s": 200,
        "deploy_ms (baseline: 3 instances ACTIVE from nothing)": ms(deploy),
        "rollout_ms_median": median(rollout_ms.clone()),
        "rollout_to_deploy_ratio": (median(rollout_ms) / ms(deploy) * 1000.0).round() / 1000.0,
        "repost_ms_median": median(repost_ms.clone()),
        "repost_to_deploy_ratio": (median(repost_ms) / ms(deploy) * 1000.0).round() / 1000.0,
        "requests_ok": ok,
        "requests_failed": failed,
        "scale_up_reaction_ms_median": median(reactions.clone()),
        "scale_up_reaction_ms": reactions,
        "rounds": out,
    }))
}
