//! `members`: how long a new member takes to catch up and vote when the KV holds a lot of data, and how many
//! client requests fail meanwhile (target: none).
//!
//! Run: `cargo run --release -p bench --bin members -- --aetherd target/release/aetherd [--mib 100]
//! [--rounds 3] [--json FILE]`.
//!
//! A 3-node cluster is filled with `--mib` MiB of 1 MiB values through the API (the fill time is the
//! baseline of the same run: writing the data once through consensus). Then, per round, under a steady
//! client load (small writes and linearizable reads through the three members), `node-4` is added
//! (`POST /api/members`) and started with `join = true` on an empty data directory; the round's time runs
//! from the add to the moment every member lists it as a voter. Between rounds it is removed, stopped and
//! wiped, and added again.

use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: members --aetherd PATH [--mib N] [--rounds N] [--json FILE]";
const SETTLE: Duration = Duration::from_secs(120);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let Some(aetherd) = value("--aetherd").map(PathBuf::from) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let mib: usize = value("--mib").and_then(|v| v.parse().ok()).unwrap_or(100).clamp(1, 200);
    let rounds: usize = value("--rounds").and_then(|v| v.parse().ok()).unwrap_or(3).clamp(1, 20);
    match run(&aetherd, mib, rounds) {
        Ok(report) => {
            println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            if let Some(path) = value("--json") {
                let _ = std::fs::write(path, report.to_string());
            }
        }
        Err(e) => {
            eprintln!("members: {e}");
            std::process::exit(1);
        }
    }
}

fn voters(c: &LocalCluster, node: usize) -> Vec<String> {
    let list = http(c.nodes[node].management, "GET", "/api/members", b"").map(|r| r.json()).unwrap_or(Value::Null);
    list["members"]
        .as_array()
        .map(|all| {
            all.iter().filter(|m| m["role"] == "voter").filter_map(|m| m["id"].as_str().map(str::to_string)).collect()
        })
        .unwrap_or_default()
}

fn run(aetherd: &Path, mib: usize, rounds: usize) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("aether-bench-members-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut c = LocalCluster::prepare(ClusterSpec::new(4, &dir, aetherd))?;
    for i in 0..3 {
        c.set_peers(i, &[0, 1, 2], false)?;
    }
    c.set_peers(3, &[0, 3], true)?;
    for i in 0..3 {
        c.start_node(i)?;
    }
    wait_for(SETTLE, || (0..3).all(|i| c.health(i).is_some_and(|h| h["ready"] == true)))
        .map_err(|_| "the cluster did not form".to_string())?;

    let value = vec![b'x'; 1024 * 1024 - 1024];
    let filled = Instant::now();
    for i in 0..mib {
        let r = http(c.nodes[i % 3].management, "PUT", &format!("/api/kv/user/fill/{i}"), &value)
            .map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("fill write {i}: {} {}", r.status, r.text()));
        }
    }
    let fill = filled.elapsed();
    println!("filled {mib} MiB in {:.1} s", fill.as_secs_f64());

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let nodes: Vec<_> = (0..3).map(|i| c.nodes[i].management).collect();
    let clients: Vec<_> = (0..2u64)
        .map(|client| {
            let (stop, ok, failed, nodes) = (stop.clone(), ok.clone(), failed.clone(), nodes.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let node = nodes[(i % 3) as usize];
                    let key = format!("/api/kv/user/load/{client}-{}", i % 16);
                    let r = if i.is_multiple_of(2) {
                        http(node, "PUT", &key, i.to_string().as_bytes())
                    } else {
                        http(node, "GET", &key, b"")
                    };
                    match r {
                        Ok(r) if r.status == 200 || r.status == 404 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();

    let mut times = Vec::new();
    for round in 0..rounds {
        let body = json!({"id": "node-4", "address": c.nodes[3].cluster.to_string()}).to_string();
        let added = Instant::now();
        let r =
            http(c.nodes[round % 3].management, "POST", "/api/members", body.as_bytes()).map_err(|e| e.to_string())?;
        if r.status != 202 {
            return Err(format!("add: {} {}", r.status, r.text()));
        }
        c.start_node(3)?;
        wait_for(SETTLE, || (0..3).all(|i| voters(&c, i).iter().any(|v| v == "node-4")))
            .map_err(|_| format!("round {round}: node-4 never became a voter\n{}", c.log(3)))?;
        let took = added.elapsed();
        println!("round {}: node-4 caught up and votes after {} ms", round + 1, took.as_millis());
        times.push(took);
        let r = http(c.nodes[0].management, "DELETE", "/api/members/node-4", b"").map_err(|e| e.to_string())?;
        if r.status != 200 {
            return Err(format!("remove: {} {}", r.status, r.text()));
        }
        c.kill(3);
        let _ = std::fs::remove_dir_all(&c.nodes[3].data_dir);
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        let _ = t.join();
    }
    times.sort();
    let median = times[times.len() / 2];
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0).round();
    Ok(json!({
        "kv_mib": mib,
        "fill_ms (baseline: the same data written once through consensus)": ms(fill),
        "catch_up_and_vote_ms": { "median": ms(median), "min": ms(times[0]), "max": ms(times[times.len() - 1]) },
        "ratio_median_to_fill": (median.as_secs_f64() / fill.as_secs_f64() * 1000.0).round() / 1000.0,
        "client_requests": { "ok": ok.load(Ordering::Relaxed), "failed": failed.load(Ordering::Relaxed) },
    }))
}
