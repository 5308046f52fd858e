//! `cargo xtask bench kv`: 64-byte puts (and a read mix) against a 3-node Aether cluster on loopback at
//! concurrency 1, 16 and 128, and the same workload against a 3-member etcd on loopback when `etcd` is
//! installed, measured in the same run with the same client. Prints both and the ratios; writes JSON.
//!
//! Envelope: a put is one HTTP request to a node, one consensus slot (three message delays of ~30 µs on
//! loopback) plus a kernel write of the log record; batching many commands per slot is what carries
//! throughput at high concurrency, so ops/s should grow with concurrency until the 2 cores saturate.

use bench::{base64, run_load, Request, RunResult};
use devcluster::{wait_for, ClusterSpec, LocalCluster};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const LEVELS: [usize; 3] = [1, 16, 128];
const VALUE: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let seconds: u64 = value("--seconds").and_then(|s| s.parse().ok()).unwrap_or(5);
    let Some(aetherd) = value("--aetherd").map(PathBuf::from) else {
        eprintln!("usage: kv --aetherd PATH [--seconds N] [--json FILE]");
        std::process::exit(2);
    };
    let duration = Duration::from_secs(seconds);
    let ours = bench_aether(&aetherd, duration);
    let etcd = which("etcd").map(|bin| bench_etcd(&bin, duration));
    report(&ours, etcd.as_ref(), value("--json"));
}

struct Results {
    puts: Vec<(usize, RunResult)>,
    mixed: Option<RunResult>,
}

fn bench_aether(aetherd: &std::path::Path, duration: Duration) -> Results {
    let dir = std::env::temp_dir().join(format!("aether-bench-kv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, aetherd);
    spec.env = vec![("AETHER_LOG".into(), "warn".into())];
    let cluster = LocalCluster::start(spec).expect("start cluster");
    let ready =
        wait_for(Duration::from_secs(30), || (0..3).all(|i| cluster.health(i).is_some_and(|h| h["ready"] == true)));
    ready.expect("cluster ready");
    let targets: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.management).collect();
    let put = Arc::new(|client: usize, n: u64| Request {
        method: "PUT",
        path: format!("/api/kv/user/bench/c{client}/k{}", n % 64),
        body: VALUE.to_vec(),
    });
    let mut puts = Vec::new();
    for c in LEVELS {
        let r = run_load(&targets, c, duration, "", |s| s == 200, put.clone());
        eprintln!(
            "aether puts c={c}: {:.0} ops/s, p50 {:.0} µs, errors {}",
            r.ops_per_s(),
            r.percentile_us(50.0),
            r.errors
        );
        puts.push((c, r));
    }
    let mixed = Arc::new(|client: usize, n: u64| {
        let path = format!("/api/kv/user/bench/c{client}/k{}", n % 64);
        if n.is_multiple_of(2) {
            Request { method: "PUT", path, body: VALUE.to_vec() }
        } else {
            Request { method: "GET", path, body: Vec::new() }
        }
    });
    let r = run_load(&targets, 16, duration, "", |s| s == 200 || s == 404, mixed);
    eprintln!("aether 50/50 linearizable get/put c=16: {:.0} ops/s", r.ops_per_s());
    Results { puts, mixed: Some(r) }
}

fn bench_etcd(bin: &std::path::Path, duration: Duration) -> Results {
    let dir = std::env::temp_dir().join(format!("aether-bench-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ports = devcluster::free_ports(6);
    let cluster: Vec<String> = (0..3).map(|i| format!("e{i}=http://127.0.0.1:{}", ports[2 * i + 1])).collect();
    let mut members: Vec<Child> = (0..3).map(|i| start_etcd(bin, &dir, i, &ports, &cluster.join(","))).collect();
    let targets: Vec<SocketAddr> = (0..3).map(|i| SocketAddr::from(([127, 0, 0, 1], ports[2 * i]))).collect();
    let healthy = wait_for(Duration::from_secs(30), || {
        targets.iter().all(|t| devcluster::http(*t, "GET", "/health", b"").is_ok_and(|r| r.text().contains("true")))
    });
    if healthy.is_err() {
        eprintln!("etcd did not become healthy; skipping the baseline");
        members.iter_mut().for_each(|m| drop(m.kill()));
        return Results { puts: Vec::new(), mixed: None };
    }
    let value64 = base64(VALUE);
    let put = Arc::new(move |client: usize, n: u64| Request {
        method: "POST",
        path: "/v3/kv/put".into(),
        body: format!(
            "{{\"key\":\"{}\",\"value\":\"{value64}\"}}",
            base64(format!("bench/c{client}/k{}", n % 64).as_bytes())
        )
        .into_bytes(),
    });
    let mut puts = Vec::new();
    for c in LEVELS {
        let r = run_load(&targets, c, duration, "Content-Type: application/json\r\n", |s| s == 200, put.clone());
        eprintln!(
            "etcd puts c={c}: {:.0} ops/s, p50 {:.0} µs, errors {}",
            r.ops_per_s(),
            r.percentile_us(50.0),
            r.errors
        );
        puts.push((c, r));
    }
    for m in &mut members {
        let _ = m.kill();
        let _ = m.wait();
    }
    Results { puts, mixed: None }
}

fn start_etcd(bin: &std::path::Path, dir: &std::path::Path, i: usize, ports: &[u16], cluster: &str) -> Child {
    let data = dir.join(format!("e{i}"));
    let client = format!("http://127.0.0.1:{}", ports[2 * i]);
    let peer = format!("http://127.0.0.1:{}", ports[2 * i + 1]);
    Command::new(bin)
        .args(["--name", &format!("e{i}"), "--data-dir"])
        .arg(&data)
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "bench"])
        .args(["--unsafe-no-fsync", "--log-level", "error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd")
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

fn report(ours: &Results, etcd: Option<&Results>, json_path: Option<String>) {
    println!("KV benchmark: 64-byte puts, 3 nodes on loopback");
    println!("{:<8} {:>6} {:>12} {:>10} {:>10} {:>10}", "system", "conc", "ops/s", "p50 µs", "p99 µs", "p999 µs");
    let mut json = Vec::new();
    let mut rows = |name: &str, results: &Results| {
        for (c, r) in &results.puts {
            let (p50, p99, p999) = (r.percentile_us(50.0), r.percentile_us(99.0), r.percentile_us(99.9));
            println!("{name:<8} {c:>6} {:>12.0} {p50:>10.0} {p99:>10.0} {p999:>10.0}", r.ops_per_s());
            json.push(format!(
                "{{\"system\":\"{name}\",\"concurrency\":{c},\"ops_per_s\":{:.1},\"p50_us\":{p50},\"p99_us\":{p99},\"p999_us\":{p999},\"errors\":{}}}",
                r.ops_per_s(),
                r.errors
            ));
        }
    };
    rows("aether", ours);
    if let Some(e) = etcd {
        rows("etcd", e);
    }
    if let Some(m) = &ours.mixed {
        println!(
            "aether 50% linearizable gets / 50% puts, c=16: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs",
            m.ops_per_s(),
            m.percentile_us(50.0),
            m.percentile_us(99.0)
        );
    }
    match etcd.filter(|e| !e.puts.is_empty()) {
        Some(e) => {
            for ((c, a), (_, b)) in ours.puts.iter().zip(&e.puts) {
                println!(
                    "ratio aether/etcd at c={c}: throughput {:.2}x, p99 {:.2}x",
                    a.ops_per_s() / b.ops_per_s(),
                    a.percentile_us(99.0) / b.percentile_us(99.0)
                );
            }
        }
        None => println!("etcd not installed (apt-get install etcd-server): no baseline in this run"),
    }
    if let Some(path) = json_path {
        let _ = std::fs::write(&path, format!("[{}]", json.join(",")));
    }
}
