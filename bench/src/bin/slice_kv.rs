//! `cargo xtask bench slice-kv`: get and put through a slice's `ctx.kv()` on a 3-node cluster, beside the
//! same operations through the management KV API, in the same run, at 1 and 64 concurrent callers.
//!
//! The slice side is the echo example (3 instances, one per node) and its probe route `POST /echo/kv/{op}`,
//! which does exactly one `ctx.kv()` get or put per request; the management side is `GET`/`PUT /api/kv/{key}`
//! (linearizable get). Both go through one node's HTTP front and reach the consensus KV, so the difference is
//! the slice path (app port, dispatch, the ABI call, the host's blocking KV call through the event loop)
//! against the management path. Every client uses its own node (client i -> node i % 3) and, for puts, its
//! own key, with 64-byte values. Reports ops/s, p50 (median) and p99; writes JSON.

use bench::{run_load, Client, Request, RunResult};
use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const LEVELS: [usize; 2] = [1, 64];
const VALUE: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const USAGE: &str = "usage: slice_kv --aetherd PATH --repo PATH [--seconds N] [--json FILE]";
const BLUEPRINT: &str =
    "name = \"kvbench\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 3\n";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let (Some(aetherd), Some(repo)) = (value("--aetherd"), value("--repo")) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let seconds = match value("--seconds").map(|s| s.parse::<u64>()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("--seconds wants a positive whole number\n{USAGE}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("aether-bench-slice-kv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(aetherd));
    spec.extra_args = vec!["--repo".into(), repo];
    let cluster = LocalCluster::start(spec).unwrap_or_else(|e| fail(&e));
    cluster.wait_ready(Duration::from_secs(30)).unwrap_or_else(|e| fail(&e));
    let posted = http(cluster.nodes[0].management, "POST", "/api/blueprints", BLUEPRINT.as_bytes());
    if !posted.as_ref().is_ok_and(|r| r.status == 201) {
        fail(&format!("blueprint refused: {:?}", posted.map(|r| r.text())));
    }
    let put_path = |_: usize| format!("/echo/kv/put?key=bench/warm&value={VALUE}");
    let ready = |i: usize| http(cluster.nodes[i].app, "POST", &put_path(i), b"").is_ok_and(|r| r.status == 200);
    wait_for(Duration::from_secs(60), || (0..3).all(ready)).unwrap_or_else(|_| fail("echo not serving on every node"));
    let warm = http(cluster.nodes[0].management, "PUT", "/api/kv/user/bench/warm", VALUE.as_bytes());
    if !warm.is_ok_and(|r| r.status == 200) {
        fail("management put refused");
    }

    let apps: Vec<_> = cluster.nodes.iter().map(|n| n.app).collect();
    let mgmts: Vec<_> = cluster.nodes.iter().map(|n| n.management).collect();
    let client = Client::plain();
    let duration = Duration::from_secs(seconds);
    let ok: fn(u16) -> bool = |s| s == 200;
    type Make = Arc<dyn Fn(usize, u64) -> Request + Send + Sync>;
    let workloads: [(&str, &[std::net::SocketAddr], Make); 4] = [
        (
            "slice get",
            &apps,
            Arc::new(|_, _| Request { method: "POST", path: "/echo/kv/get?key=bench/warm".into(), body: Vec::new() }),
        ),
        (
            "mgmt get",
            &mgmts,
            Arc::new(|_, _| Request { method: "GET", path: "/api/kv/user/bench/warm".into(), body: Vec::new() }),
        ),
        (
            "slice put",
            &apps,
            Arc::new(|i, _| Request {
                method: "POST",
                path: format!("/echo/kv/put?key=bench/c{i}&value={VALUE}"),
                body: Vec::new(),
            }),
        ),
        (
            "mgmt put",
            &mgmts,
            Arc::new(|i, _| Request {
                method: "PUT",
                path: format!("/api/kv/user/bench/c{i}"),
                body: VALUE.as_bytes().to_vec(),
            }),
        ),
    ];
    let mut results: Vec<(String, usize, RunResult)> = Vec::new();
    for c in LEVELS {
        for (name, targets, make) in &workloads {
            let r = run_load(targets, c, duration, &client, ok, make.clone());
            eprintln!(
                "{name} c={c}: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs, errors {}",
                r.ops_per_s(),
                r.percentile_us(50.0),
                r.percentile_us(99.0),
                r.errors
            );
            results.push((name.to_string(), c, r));
        }
    }
    println!("\n{:<10} {:>4} {:>10} {:>10} {:>10} {:>7}", "operation", "c", "ops/s", "p50 µs", "p99 µs", "errors");
    for (name, c, r) in &results {
        println!(
            "{name:<10} {c:>4} {:>10.0} {:>10.0} {:>10.0} {:>7}",
            r.ops_per_s(),
            r.percentile_us(50.0),
            r.percentile_us(99.0),
            r.errors
        );
    }
    println!("\nslice/management p50 ratio:");
    for c in LEVELS {
        for op in ["get", "put"] {
            let p50 = |side: &str| {
                let found = results.iter().find(|(n, level, _)| *n == format!("{side} {op}") && *level == c);
                found.map_or(f64::NAN, |(_, _, r)| r.percentile_us(50.0))
            };
            println!("  {op} c={c}: {:.2}", p50("slice") / p50("mgmt"));
        }
    }
    if let Some(path) = value("--json") {
        let rows: Vec<serde_json::Value> = results
            .iter()
            .map(|(name, c, r)| {
                serde_json::json!({
                    "operation": name, "concurrency": c, "ops_per_s": r.ops_per_s(),
                    "p50_us": r.percentile_us(50.0), "p99_us": r.percentile_us(99.0), "errors": r.errors,
                })
            })
            .collect();
        let text = serde_json::to_string_pretty(&serde_json::json!({ "seconds": seconds, "runs": rows }));
        if let Err(e) =
            text.map_err(|e| e.to_string()).and_then(|t| std::fs::write(&path, t).map_err(|e| e.to_string()))
        {
            eprintln!("cannot write {path}: {e}");
        }
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
}

fn fail(why: &str) -> ! {
    eprintln!("slice-kv bench: {why}");
    std::process::exit(1);
}
