//! `cargo xtask bench kv`: 64-byte puts (and a read mix) against a 3-node Aether cluster on loopback at
//! concurrency 1, 16 and 128, and the same workload against a 3-member etcd on loopback when `etcd` is
//! installed, measured in the same run with the same client. Prints both and the ratios; writes JSON.
//!
//! Options add clusters to the same run, one after the other, each with the same workload and client:
//! `--auth` a cluster with management authentication on (every request carries `Authorization: Bearer`),
//! reported as auth on/off ratios; `--tls` a cluster with `[tls]` on its HTTP ports (self-signed
//! certificate, persistent TLS connections, so the ratio is the record layer's cost), reported as
//! TLS/plain; `--baseline-aetherd PATH` a cluster of another `aetherd` build (plain, no authentication),
//! reported as new/baseline ratios of ops/s, p50 and p99. The Aether clusters run side by side and each
//! level is measured on each of them in turn, in `--rounds N` rounds (default 1); a ratio is the median
//! over rounds of the ratio within a round, the table pools the rounds. etcd runs after them, alone.
//!
//! `--levels 1,128` measures only those concurrency levels (default 1, 16 and 128). Every run also reads the
//! servers' CPU time (user plus system of every node process, from `/proc`) before and after, and reports
//! it per successful request: a figure that other work on the machine disturbs far less than throughput;
//! the table also splits it by process (`node-1/node-2/node-3`, etcd's members in order).
//! The consensus slots node-1 decided meanwhile (`applied_slot` of `/api/status`) give the puts per slot,
//! which is how well concurrent writes share a slot. The node processes' ids are printed at start, for a
//! profiler to attach to.
//!
//! `--wrk` drives the same puts with `wrk` (`-t2 -c<C> -d<S>s --latency`, one thread at c=1) instead of the
//! in-process clients: a generated Lua script (`-s`) makes each request exactly as they do (Aether: `PUT
//! /api/kv/user/bench/c{i}/k{j}` with the 64-byte value as the body; etcd: `POST /v3/kv/put` with
//! `{"key":base64("bench/c{i}/k{j}"),"value":base64(value)}`), consecutive requests on different keys.
//! wrk drives one address, so its load goes to node-1 (and to etcd's first member), where the in-process
//! clients spread over the three; a user pointing wrk at a cluster does the same. wrk reports p50, p75,
//! p90 and p99 (no p99.9); non-2xx answers and socket errors count as errors; the servers' CPU per put is
//! read from `/proc` as without it. The 50/50 get/put mix is left out under `--wrk` (wrk counts the 404
//! of a get before its put as an error).
//!
//! `--profile DIR` adds one more put phase at c=128 after the rounds, counted in no table, with `perf
//! record -F 999 -g` attached to node-1 (see `bench::profile`); it writes `kv-c128-node-1.svg` (flame
//! graph), `.folded` and `.perf.data` into DIR and prints that node's samples by thread group and its top
//! 15 functions by self time after the table. `cargo xtask bench kv --profile` passes
//! `target/bench/profile` and runs an `aetherd` built with frame pointers.
//!
//! Envelope: a put is one HTTP request to a node, one consensus slot (three message delays of ~30 µs on
//! loopback) plus a kernel write of the log record; batching many commands per slot is what carries
//! throughput at high concurrency, so ops/s should grow with concurrency until the 2 cores saturate.

use bench::profile::{self, Recording};
use bench::wrk::{kv_put_script, KvApi, WrkRun};
use bench::{base64, run_load, Client, Request, RunResult, SelfSigned};
use devcluster::{wait_for, ClusterSpec, LocalCluster};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const LEVELS: [usize; 3] = [1, 16, 128];
const VALUE: &[u8; 64] = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const USAGE: &str = "usage: kv --aetherd PATH [--baseline-aetherd PATH] [--auth] [--tls] [--seconds N] [--rounds N] \
                     [--levels C1,C2,...] [--wrk] [--profile DIR] [--json FILE]";
/// Keys each client writes in turn (`k0` to `k63`).
const KEYS_PER_CLIENT: usize = 64;
/// The concurrency of the profiled put phase (`--profile`).
const PROFILED_LEVEL: usize = 128;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let flag = |name: &str| args.iter().any(|a| a == name);
    let seconds: u64 = match value("--seconds").map(|s| s.parse::<u64>()) {
        None => 5,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("--seconds wants a positive whole number\n{USAGE}");
            std::process::exit(2);
        }
    };
    let Some(aetherd) = value("--aetherd").map(PathBuf::from) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let duration = Duration::from_secs(seconds);
    let rounds = match value("--rounds").map(|s| s.parse::<usize>()) {
        None => 1,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("--rounds wants a positive whole number\n{USAGE}");
            std::process::exit(2);
        }
    };
    let levels: Vec<usize> = match value("--levels") {
        None => LEVELS.to_vec(),
        Some(list) => match list.split(',').map(|c| c.trim().parse::<usize>()).collect::<Result<Vec<_>, _>>() {
            Ok(levels) if !levels.is_empty() && levels.iter().all(|c| *c > 0) => levels,
            _ => {
                eprintln!("--levels wants positive whole numbers separated by commas\n{USAGE}");
                std::process::exit(2);
            }
        },
    };
    let driver = if flag("--wrk") {
        match Driver::wrk() {
            Ok(driver) => driver,
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(2);
            }
        }
    } else {
        Driver::InProcess
    };
    let mut clusters = vec![start_aether("aether", &aetherd, Variant::Plain)];
    if flag("--auth") {
        clusters.push(start_aether("aether+auth", &aetherd, Variant::Auth));
    }
    if flag("--tls") {
        clusters.push(start_aether("aether+tls", &aetherd, Variant::Tls));
    }
    if let Some(baseline) = value("--baseline-aetherd").map(PathBuf::from) {
        clusters.push(start_aether("baseline", &baseline, Variant::Plain));
    }
    let systems = bench_aether(&clusters, &levels, duration, rounds, &driver);
    let profiled = value("--profile").and_then(|dir| profile_puts(&clusters[0], duration, &driver, Path::new(&dir)));
    drop(clusters);
    let etcd = which("etcd").map(|bin| bench_etcd(&bin, &levels, duration, &driver));
    report(&systems, &levels, etcd.as_ref(), value("--json"));
    if let Some(profile) = profiled {
        profile.print();
    }
}

struct Results {
    name: String,
    /// Each level's rounds pooled: requests and time summed, latencies merged.
    puts: Vec<(usize, RunResult)>,
    mixed: Option<RunResult>,
    /// Each level's rounds apart (same order as `puts`), for ratios within a round.
    put_rounds: Vec<Vec<RunResult>>,
    mixed_rounds: Vec<RunResult>,
}

impl Results {
    fn empty(name: &str) -> Results {
        Results { name: name.into(), puts: Vec::new(), mixed: None, put_rounds: Vec::new(), mixed_rounds: Vec::new() }
    }
}

/// Median over rounds of `metric(a) / metric(b)` within each round.
fn round_ratio(a: &[RunResult], b: &[RunResult], metric: impl Fn(&RunResult) -> f64) -> f64 {
    let mut ratios: Vec<f64> = a.iter().zip(b).map(|(x, y)| metric(x) / metric(y)).collect();
    ratios.sort_by(f64::total_cmp);
    match ratios.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => ratios[n / 2],
        n => (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0,
    }
}

/// How the Aether cluster of a run is set up and reached.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// Plain HTTP, authentication off (how the previous binary runs too).
    Plain,
    /// Authentication on; every request carries `Authorization: Bearer <admin key>`.
    Auth,
    /// `[tls]` on the HTTP ports with a self-signed certificate; persistent TLS connections.
    Tls,
}

/// A running Aether cluster of the run and how its clients reach it.
struct Running {
    name: String,
    cluster: LocalCluster,
    targets: Vec<SocketAddr>,
    client: Client,
}

fn start_aether(name: &str, aetherd: &Path, variant: Variant) -> Running {
    let dir = std::env::temp_dir().join(format!("aether-bench-kv-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, aetherd);
    spec.env = vec![("AETHER_LOG".into(), "warn".into())];
    let mut client = Client::plain();
    match variant {
        Variant::Plain => {}
        Variant::Auth => {
            spec = spec.with_auth();
            client = client.with_bearer(spec.admin_key.as_deref().unwrap_or_default());
        }
        Variant::Tls => {
            let cert = SelfSigned::generate(&dir.join("tls")).expect("a self-signed certificate");
            spec.extra_config = cert.tls_section();
            client = client.with_tls(cert.client_config().expect("a TLS client configuration"));
        }
    }
    let cluster = LocalCluster::start(spec).expect("start cluster");
    let pids: Vec<String> = (0..cluster.nodes.len()).filter_map(|i| cluster.pid(i)).map(|p| p.to_string()).collect();
    eprintln!("{name}: node pids {}", pids.join(" "));
    let targets: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.management).collect();
    let ready = |addr: &SocketAddr| {
        bench::request(*addr, &client, "GET", "/api/health", b"").is_ok_and(|(status, body)| {
            status == 200 && serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|h| h["ready"] == true)
        })
    };
    if wait_for(Duration::from_secs(30), || targets.iter().all(ready)).is_err() {
        panic!("{name}: cluster not ready within 30 s; node-1 log:\n{}", cluster.log(0));
    }
    Running { name: name.to_string(), cluster, targets, client }
}

/// In each round, every level on every cluster in turn (c=1 on each, then c=16 on each, ...), then the mix
/// on each, so that other work on the machine, which comes and goes, falls on all the clusters alike.
fn bench_aether(
    clusters: &[Running],
    levels: &[usize],
    duration: Duration,
    rounds: usize,
    driver: &Driver,
) -> Vec<Results> {
    let put = aether_put();
    let mixed: MakeRequest = Arc::new(|client: usize, n: u64| {
        let path = format!("/api/kv/user/bench/c{client}/k{}", n % KEYS_PER_CLIENT as u64);
        if n.is_multiple_of(2) {
            Request { method: "PUT", path, body: VALUE.to_vec() }
        } else {
            Request { method: "GET", path, body: Vec::new() }
        }
    });
    let mut results: Vec<Results> = clusters.iter().map(|r| Results::empty(&r.name)).collect();
    for out in &mut results {
        out.put_rounds = levels.iter().map(|_| Vec::new()).collect();
    }
    for round in 0..rounds {
        if rounds > 1 {
            eprintln!("round {}", round + 1);
        }
        bench_round(clusters, levels, duration, (&put, &mixed), driver, &mut results);
    }
    for out in &mut results {
        out.puts = levels.iter().zip(&out.put_rounds).map(|(c, r)| (*c, RunResult::pool(r))).collect();
        out.mixed = (!out.mixed_rounds.is_empty()).then(|| RunResult::pool(&out.mixed_rounds));
    }
    // The clusters are still up: say so if one of them logged an error meanwhile.
    for running in clusters {
        let log = running.cluster.log(0);
        if log.contains("ERROR") {
            eprintln!("note: {} node-1 logged errors during the run", running.name);
        }
    }
    results
}

type MakeRequest = Arc<dyn Fn(usize, u64) -> Request + Send + Sync>;

/// A put as the in-process clients make it: client `c` writes its keys `c{c}/k0` to `k63` in turn.
fn aether_put() -> MakeRequest {
    Arc::new(|client: usize, n: u64| Request {
        method: "PUT",
        path: format!("/api/kv/user/bench/c{client}/k{}", n % KEYS_PER_CLIENT as u64),
        body: VALUE.to_vec(),
    })
}

/// What makes the load of a run.
enum Driver {
    /// The in-process closed-loop clients (`bench::run_load`), client i on target i % targets.
    InProcess,
    /// wrk against the first target (node-1, or etcd's first member), with the put scripts written into
    /// `scripts` (one per API and concurrency).
    Wrk { bin: PathBuf, scripts: PathBuf },
}

/// One system's puts: which API, where, how its clients connect, and the request the in-process clients make.
struct Load<'a> {
    api: KvApi,
    targets: &'a [SocketAddr],
    client: &'a Client,
    make: &'a MakeRequest,
}

impl Driver {
    fn wrk() -> Result<Driver, String> {
        let bin = bench::which("wrk").ok_or("--wrk: wrk is not installed (apt-get install wrk)")?;
        let scripts = std::env::temp_dir().join(format!("aether-bench-kv-wrk-{}", std::process::id()));
        std::fs::create_dir_all(&scripts).map_err(|e| format!("{}: {e}", scripts.display()))?;
        Ok(Driver::Wrk { bin, scripts })
    }

    /// Puts at concurrency `c` for `duration`. A wrk run that fails is reported and counts as one error.
    fn puts(&self, load: &Load, c: usize, duration: Duration) -> RunResult {
        let Driver::Wrk { bin, scripts } = self else {
            return run_load(load.targets, c, duration, load.client, |s| s == 200, load.make.clone());
        };
        let api = if load.api == KvApi::Aether { "aether" } else { "etcd" };
        let script = scripts.join(format!("{api}-c{c}.lua"));
        let wrote = std::fs::write(&script, kv_put_script(load.api, c, KEYS_PER_CLIENT, VALUE))
            .map_err(|e| format!("{}: {e}", script.display()));
        let scheme = if load.client.tls.is_some() { "https" } else { "http" };
        let headers = load.client.headers.split("\r\n").filter(|h| !h.is_empty()).map(String::from).collect();
        let run = WrkRun {
            url: format!("{scheme}://{}/", load.targets[0]),
            connections: c,
            duration,
            headers,
            script: Some(&script),
        };
        wrote.and_then(|()| run.run(bin)).unwrap_or_else(|e| {
            eprintln!("{e}");
            RunResult { errors: 1, seconds: duration.as_secs_f64(), ..RunResult::default() }
        })
    }
}

/// `--profile`: one more put phase at c=128 on `running`, counted in no table, with perf attached to node-1
/// (the node wrk's clients hit; the in-process clients spread over all three); its flame graph and folded
/// stacks go into `dir`.
fn profile_puts(running: &Running, duration: Duration, driver: &Driver, dir: &Path) -> Option<profile::Profile> {
    let Some(perf) = profile::perf() else {
        eprintln!("--profile: perf is not installed (apt-get install linux-perf): no profile in this run");
        return None;
    };
    let (pid, node) = (running.cluster.pid(0)?, running.cluster.nodes[0].id.clone());
    let name = format!("kv-c{PROFILED_LEVEL}-{node}");
    let recording = Recording::start(&perf, pid, dir, &name).map_err(|e| eprintln!("--profile: {e}")).ok()?;
    let put = aether_put();
    let load = Load { api: KvApi::Aether, targets: &running.targets, client: &running.client, make: &put };
    let r = measured(&running.pids(), || driver.puts(&load, PROFILED_LEVEL, duration));
    eprintln!(
        "profiled {} puts c={PROFILED_LEVEL} ({node} under perf): {:.0} ops/s, server CPU {:.1} µs/put ({} by node), \
         errors {}",
        running.name,
        r.ops_per_s(),
        r.server_cpu_us_per_op(),
        by_process(&r),
        r.errors
    );
    let title = format!("{} node {node}: 64-byte puts at c={PROFILED_LEVEL}, {:.0} ops/s", running.name, r.ops_per_s());
    let rendered = recording.stop().and_then(|recorded| profile::render(&perf, &recorded, dir, &name, &title));
    rendered.map_err(|e| eprintln!("--profile: {e}")).ok()
}

fn bench_round(
    clusters: &[Running],
    levels: &[usize],
    duration: Duration,
    (put, mixed): (&MakeRequest, &MakeRequest),
    driver: &Driver,
    results: &mut [Results],
) {
    for (level, &c) in levels.iter().enumerate() {
        for (running, out) in clusters.iter().zip(results.iter_mut()) {
            let pids = running.pids();
            let before = applied_slot(running);
            let load = Load { api: KvApi::Aether, targets: &running.targets, client: &running.client, make: put };
            let mut r = measured(&pids, || driver.puts(&load, c, duration));
            r.slots = applied_slot(running).zip(before).map_or(0, |(after, before)| after.saturating_sub(before));
            eprintln!(
                "{} puts c={c}: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs, server CPU {:.1} µs/put ({} by node), \
                 {:.2} puts/slot, errors {}",
                running.name,
                r.ops_per_s(),
                r.percentile_us(50.0),
                r.percentile_us(99.0),
                r.server_cpu_us_per_op(),
                by_process(&r),
                r.ops as f64 / r.slots.max(1) as f64,
                r.errors
            );
            out.put_rounds[level].push(r);
        }
    }
    if matches!(driver, Driver::Wrk { .. }) {
        // wrk counts the 404 of a get before its put as an error: the mix is for the in-process clients.
        return;
    }
    for (running, out) in clusters.iter().zip(results.iter_mut()) {
        let pids = running.pids();
        let r = measured(&pids, || {
            run_load(&running.targets, 16, duration, &running.client, |s| s == 200 || s == 404, mixed.clone())
        });
        eprintln!(
            "{} 50/50 linearizable get/put c=16: {:.0} ops/s, errors {} (an unanswered request blocks its client \
             for the 10 s read timeout)",
            running.name,
            r.ops_per_s(),
            r.errors
        );
        out.mixed_rounds.push(r);
    }
}

/// Node-1's applied slot, from `/api/status`.
fn applied_slot(running: &Running) -> Option<u64> {
    let (status, body) = bench::request(running.targets[0], &running.client, "GET", "/api/status", b"").ok()?;
    if status != 200 {
        return None;
    }
    serde_json::from_slice::<serde_json::Value>(&body).ok()?["applied_slot"].as_u64()
}

/// Runs `load`, recording the CPU time processes `pids` spent meanwhile.
fn measured(pids: &[u32], load: impl FnOnce() -> RunResult) -> RunResult {
    let cpu = || pids.iter().map(|&pid| bench::process_cpu_ticks(pid).unwrap_or(0)).collect::<Vec<u64>>();
    let before = cpu();
    let mut r = load();
    let spent: Vec<f64> =
        cpu().iter().zip(&before).map(|(a, b)| a.saturating_sub(*b) as f64 / bench::CPU_TICKS_PER_S).collect();
    r.server_cpu_s = spent.iter().sum();
    r.server_cpu_by_process_s = spent;
    r
}

/// Server CPU per put by process (node-1/node-2/node-3, or etcd's members), as `a/b/c`.
fn by_process(r: &RunResult) -> String {
    let parts: Vec<String> = r.server_cpu_us_per_op_by_process().iter().map(|us| format!("{us:.0}")).collect();
    parts.join("/")
}

impl Running {
    fn pids(&self) -> Vec<u32> {
        (0..self.cluster.nodes.len()).filter_map(|i| self.cluster.pid(i)).collect()
    }
}

fn bench_etcd(bin: &std::path::Path, levels: &[usize], duration: Duration, driver: &Driver) -> Results {
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
        return Results::empty("etcd");
    }
    let value64 = base64(VALUE);
    let put: MakeRequest = Arc::new(move |client: usize, n: u64| Request {
        method: "POST",
        path: "/v3/kv/put".into(),
        body: format!(
            "{{\"key\":\"{}\",\"value\":\"{value64}\"}}",
            base64(format!("bench/c{client}/k{}", n % KEYS_PER_CLIENT as u64).as_bytes())
        )
        .into_bytes(),
    });
    let client = Client { headers: "Content-Type: application/json\r\n".into(), ..Client::plain() };
    let mut puts = Vec::new();
    let pids: Vec<u32> = members.iter().map(Child::id).collect();
    for &c in levels {
        let load = Load { api: KvApi::Etcd, targets: &targets, client: &client, make: &put };
        let r = measured(&pids, || driver.puts(&load, c, duration));
        eprintln!(
            "etcd puts c={c}: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs, server CPU {:.1} µs/put ({} by member), \
             errors {}",
            r.ops_per_s(),
            r.percentile_us(50.0),
            r.percentile_us(99.0),
            r.server_cpu_us_per_op(),
            by_process(&r),
            r.errors
        );
        puts.push((c, r));
    }
    for m in &mut members {
        let _ = m.kill();
        let _ = m.wait();
    }
    Results { put_rounds: puts.iter().map(|(_, r)| vec![r.clone()]).collect(), puts, ..Results::empty("etcd") }
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

/// `a`/`b` at each concurrency level: throughput, p50 and p99 (for latency, above 1 is slower) and server
/// CPU per request (above 1 costs more), each the median over rounds of the ratio within a round.
fn print_ratios(label: &str, levels: &[usize], a: &Results, b: &Results, json: &mut Vec<String>) {
    let mut line = |what: String, x: &[RunResult], y: &[RunResult]| {
        let ops = round_ratio(x, y, RunResult::ops_per_s);
        let p50 = round_ratio(x, y, |r| r.percentile_us(50.0));
        let p99 = round_ratio(x, y, |r| r.percentile_us(99.0));
        let cpu = round_ratio(x, y, RunResult::server_cpu_us_per_op);
        println!("ratio {label} {what}: throughput {ops:.2}x, p50 {p50:.2}x, p99 {p99:.2}x, server CPU/op {cpu:.2}x");
        json.push(format!(
            "{{\"ratio\":\"{label}\",\"workload\":\"{what}\",\"ops_per_s\":{ops:.3},\"p50\":{p50:.3},\"p99\":{p99:.3},\"server_cpu_per_op\":{cpu:.3}}}"
        ));
    };
    for ((c, x), y) in levels.iter().zip(&a.put_rounds).zip(&b.put_rounds) {
        line(format!("at c={c}"), x, y);
    }
    if !a.mixed_rounds.is_empty() && !b.mixed_rounds.is_empty() {
        line("50/50 get/put c=16".into(), &a.mixed_rounds, &b.mixed_rounds);
    }
}

fn report(systems: &[Results], levels: &[usize], etcd: Option<&Results>, json_path: Option<String>) {
    println!("KV benchmark: 64-byte puts, 3 nodes on loopback");
    println!(
        "{:<12} {:>6} {:>12} {:>10} {:>10} {:>10} {:>12} {:>16}",
        "system", "conc", "ops/s", "p50 µs", "p99 µs", "p999 µs", "cpu µs/put", "by process"
    );
    let mut json = Vec::new();
    let mut rows = |results: &Results| {
        let name = &results.name;
        for (c, r) in &results.puts {
            let (p50, p99, p999) = (r.percentile_us(50.0), r.percentile_us(99.0), r.percentile_us(99.9));
            let cpu = r.server_cpu_us_per_op();
            println!(
                "{name:<12} {c:>6} {:>12.0} {p50:>10.0} {p99:>10.0} {p999:>10.0} {cpu:>12.1} {:>16}",
                r.ops_per_s(),
                by_process(r)
            );
            json.push(format!(
                "{{\"system\":\"{name}\",\"concurrency\":{c},\"ops_per_s\":{:.1},\"p50_us\":{},\"p99_us\":{},\"p999_us\":{},\"server_cpu_us_per_op\":{},\"server_cpu_us_per_op_by_process\":[{}],\"errors\":{}}}",
                r.ops_per_s(),
                json_number(p50),
                json_number(p99),
                json_number(p999),
                json_number(cpu),
                r.server_cpu_us_per_op_by_process().into_iter().map(json_number).collect::<Vec<_>>().join(","),
                r.errors
            ));
        }
        if let Some(m) = &results.mixed {
            let (p50, p99) = (m.percentile_us(50.0), m.percentile_us(99.0));
            json.push(format!(
                "{{\"system\":\"{name}\",\"workload\":\"50/50 get/put\",\"concurrency\":16,\"ops_per_s\":{:.1},\"p50_us\":{p50},\"p99_us\":{p99},\"errors\":{}}}",
                m.ops_per_s(),
                m.errors
            ));
        }
    };
    systems.iter().for_each(&mut rows);
    if let Some(e) = etcd {
        rows(e);
    }
    for results in systems {
        if let Some(m) = &results.mixed {
            println!(
                "{} 50% linearizable gets / 50% puts, c=16: {:.0} ops/s, p50 {:.0} µs, p99 {:.0} µs, errors {}",
                results.name,
                m.ops_per_s(),
                m.percentile_us(50.0),
                m.percentile_us(99.0),
                m.errors
            );
        }
    }
    let ours = &systems[0];
    let find = |name: &str| systems.iter().find(|r| r.name == name);
    if let Some(baseline) = find("baseline") {
        print_ratios("aether/baseline", levels, ours, baseline, &mut json);
    }
    if let Some(auth) = find("aether+auth") {
        print_ratios("auth on/off", levels, auth, ours, &mut json);
        if let Some(baseline) = find("baseline") {
            print_ratios("aether+auth/baseline", levels, auth, baseline, &mut json);
        }
    }
    if let Some(tls) = find("aether+tls") {
        print_ratios("tls/plain", levels, tls, ours, &mut json);
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
            if let Some(baseline) = find("baseline") {
                for ((c, a), (_, b)) in baseline.puts.iter().zip(&e.puts) {
                    println!(
                        "ratio baseline/etcd at c={c}: throughput {:.2}x, p99 {:.2}x",
                        a.ops_per_s() / b.ops_per_s(),
                        a.percentile_us(99.0) / b.percentile_us(99.0)
                    );
                }
            }
        }
        None => println!("etcd not installed (apt-get install etcd-server): no baseline in this run"),
    }
    if let Some(path) = json_path {
        let _ = std::fs::write(&path, format!("[{}]", json.join(",")));
    }
}

/// A figure for the JSON output: NaN (not measured) as `null`.
fn json_number(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}")
    } else {
        "null".to_string()
    }
}
