//! `cargo xtask bench app`: the app path (a client's HTTP request to a node's app port, answered by a
//! slice) against plain HTTP servers answering the same bytes, and the control plane's two visible
//! latencies: how long a blueprint takes to deploy and how long the cluster takes to heal after kill -9.
//!
//! What one run measures, on one machine:
//! - requests/s and p50/p99 of `GET /echo/hello` at 64 closed-loop keep-alive connections against a
//!   3-node cluster running a blueprint with one `echo` instance: *local* (load aimed at the app port of
//!   the node hosting it) and *forwarded* (aimed at another node, which forwards every call over the
//!   cluster transport to the host);
//! - the same load against baselines answering the same bytes
//!   (`{"echo":"hello","version":"1.0.0","node":"node-1"}`, `application/json`): `tiny_http` with 4
//!   handler threads in this process (a generic thread-per-connection server; the app port is the
//!   in-house `httpd`: one mio I/O thread, 8 `app-http` worker threads), and nginx (1 worker,
//!   `return 200`, generated config in a temp dir) when `nginx` is installed;
//! - with `--baseline-aetherd PATH`, the local and forwarded cases against a second 3-node cluster of
//!   that build (the previous release), in the same rounds, reported as new/baseline ratios of req/s,
//!   p50 and p99;
//! - with `--tls`, the local case against a third cluster with `[tls]` on its HTTP ports (self-signed
//!   certificate, rustls client with the ring provider): over persistent connections, so TLS/plain is the
//!   record layer's cost, and with a new connection per request (`Connection: close`, the server closes
//!   first), plain and TLS, for the handshake's cost;
//! - with `--hung N`, the local case again with `faulty` deployed beside `echo` (one instance on every
//!   node) and N calls to `GET /faulty/hang` kept in flight on the same app port during that phase (a
//!   client that gets 503 waits its `Retry-After` before calling again, as a well-behaved one does);
//!   reported as the ratios of req/s and p99 to the plain local case of the same round: a hung slice
//!   must cost echo nothing (its bulkhead refuses past its share of the handler threads);
//! - with `--poll-management`, the local case again while a client polls the host's `/api/metrics`,
//!   `/metrics` and `/api/status` 50 times a second each (keep-alive) and follows `/api/events/stream`
//!   (only polled where that answers other than 200): reported as ratios to the plain local case of the same
//!   round (management must not slow the data path: target within 5%); and, before the load, every node's
//!   CPU over 10 s at idle with metrics on (with `--baseline-aetherd`, that build's nodes in the same window);
//! - deploy time: blueprint posted -> every instance ACTIVE (`GET /api/blueprints/{name}` polled every
//!   2 ms), for the one-instance echo blueprint and for `blueprints/demo.toml` (8 instances of 5 slices,
//!   one wave waiting on its dependencies); the blueprint is deleted and `/api/slices` seen empty between
//!   runs;
//! - heal time: kill -9 of a node hosting demo instances (each run the next such node in turn, so the
//!   leader, the smallest live id, is among them) -> the demo fully active again with no instance on the
//!   dead node, seen from a survivor; the node is restarted and the blueprint redeployed from scratch
//!   between runs.
//!
//! The load generator (`bench::run_load`: one blocking thread per connection) runs on the same cores as
//! the servers, so every server measured pays for the same client; ratios are the figures to read. The
//! cases run in rounds (nginx, tiny_http, local, forwarded, the baseline's and the TLS cases, again), and
//! a ratio is the median of the ratios within a round, so other work on a shared machine falls on all
//! cases alike. Each phase also reads `/proc`: CPU per request of this process and of the servers, the
//! servers' context switches per request, their CPU by thread group, and the share of the machine other
//! processes took meanwhile.
//!
//! Envelope (2 cores, loopback; per request, CPU summed over client and server):
//! - client: a `write` and a blocking `read`, one thread wake-up, header parsing: ~10-15 µs. nginx on
//!   epoll adds ~5-8 µs, so ~20 µs in all, ~2 cores / 20 µs ≈ 50-80k req/s at best; the reference
//!   (wrk, a cheaper client) is 82k. Expect nginx at ~40-60k here.
//! - tiny_http: its connection thread reads and parses, hands the request to a handler thread (one
//!   wake-up through a mutex and condvar), which writes the answer: ~+10 µs over nginx, so ~30-40k.
//! - local app path: the app port's I/O thread reads and parses (httparse), hands the request to a
//!   worker (one wake-up), which answers through the I/O thread (a second wake-up); then a route lookup,
//!   encoding the request for the slice ABI, the
//!   call itself on the handler thread (a watchdog answers 504 for a hung one) and the JSON answer:
//!   ~+5 µs, so ~0.8-0.95x tiny_http and ~0.6-0.7x nginx (target >= 0.5x nginx).
//! - forwarded: the entry node's handler hands the call to its event loop (waker), which writes a frame;
//!   the host's loop reads it, hands it to the forwarded-calls pool, which calls a container worker;
//!   the reply comes back the same way. ~6 more wake-ups and two loopback TCP hops (~10 µs each in CPU):
//!   ~+40-60 µs, so ~0.3-0.5x of local, with three processes sharing the cores with the client.
//! - TLS, kept alive: one AES-GCM record each way (~1-2 µs of crypto per KB on each side) plus the
//!   rustls buffering: a few µs over ~25-40 µs, so TLS/plain ~0.85-0.95x. A new connection per request
//!   costs a TCP handshake and close (~20-30 µs) plain, and with TLS 1.3 also an X25519 exchange on
//!   both sides and an ECDSA P-256 signature and its verification (~150-250 µs in all): a few thousand
//!   req/s at most, TLS/plain well under 0.5x.
//! - latency: in a closed loop p50 ≈ connections / throughput (Little's law): 64 / 30k/s ≈ 2 ms.
//! - deploy: the POST is one consensus slot (~0.1-1 ms on loopback with the log write); the leader's
//!   reconcile writes targets (one slot), the host writes LOADING, copies and dlopens the library
//!   (~1-5 ms), LOADED, ACTIVATING, ACTIVE (a slot each): ~6 slots + a load ≈ 10-20 ms for echo; the
//!   demo adds a second wave after its dependencies are ACTIVE: ~20-50 ms. Target: under 300 ms.
//! - heal: kill -9 closes the sockets, so survivors see the peer gone at once (not after the 2 s receive
//!   timeout); membership is re-evaluated on the next 50 ms tick, then the leader re-targets and a
//!   survivor loads and activates (a deploy's worth): ~50-100 ms. Target: under 2 s.
//!
//! What the first runs on a shared 2-core machine showed, when the app port was still tiny_http (a thread
//! per connection, handing requests to 4 handler threads) (others' work took ~20% of it): nginx ~50k req/s
//! at ~13 µs of server CPU and 0.4 context switches per request; tiny_http ~32k; local ~21-24k (0.40-0.48x
//! nginx, 0.6-0.85x tiny_http) at ~40-48 µs and 3.2 switches per request, of which the app-http handler threads
//! ~21 µs, the port's connection threads ~10 µs and the slice worker ~6 µs, most of it in the scheduler
//! (wake-ups and switches, not parsing); forwarded ~10k (0.42x local) at ~110-120 µs over both nodes
//! (each event loop ~20 µs, the forwarded-calls pool ~15 µs). So the local path misses 0.5x nginx by the
//! hand-offs: the tiny_http baseline alone is ~0.6x nginx here, and handing each call to a slice worker cost another
//! ~0.15x. Running the call on the handler thread instead brought the local path to 0.52-0.73x nginx
//! (0.84-0.96x tiny_http) at ~25 µs and 1.4 switches per request. Deploy 7 ms (echo) and ~20 ms (demo),
//! heal ~30-40 ms: well inside their targets.
//!
//! With `--hung 100` (2026-11-30, 2 cores, 3 rounds of 4 s): local echo 22.6k req/s, p99 18.2 ms; with the
//! 100 hung calls 22.2k req/s, p99 16.6 ms (median ratios of the rounds 1.01x req/s, 0.95x p99, 1.22x p50).
//! In the first round all 100 calls hung (64 on the host, the host's bulkhead sending the rest to the other
//! nodes' instances); after their deadline the instances are saturated and every further call is refused at
//! once, so a round costs the host ~110 refusals a second and no thread.

use bench::{run_load, which, Client, Request, RunResult, SelfSigned};
use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const CONCURRENCY: usize = 64;
const WARMUP: Duration = Duration::from_secs(1);
/// What `GET /echo/hello` answers when `echo` 1.0.0 runs on node-1 (every node id here has that length).
const ECHO_BODY: &str = r#"{"echo":"hello","version":"1.0.0","node":"node-1"}"#;
const ECHO_PATH: &str = "/echo/hello";
const ECHO_ARTIFACT: &str = "org.aether.examples:echo:1.0.0";
const ECHO_BLUEPRINT: &str =
    "name = \"bench-echo\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 1\n";
const DEMO_BLUEPRINT: &str = include_str!("../../../blueprints/demo.toml");
const FAULTY_BLUEPRINT: &str =
    "name = \"bench-faulty\"\n[[slices]]\nartifact = \"org.aether.examples:faulty:1.0.0\"\ninstances = 3\n";
const TINY_HTTP_THREADS: usize = 4;
/// Longest wait for any one cluster condition (ready, deployed, healed, emptied).
const SETTLE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(2);
const DEPLOY_TARGET_MS: f64 = 300.0;
/// The default `[cluster] lease_grace_ms` (5 s: a dead node's instances are re-placed only once its lease has
/// lapsed) plus 2 s to place and start the replacements.
const HEAL_TARGET_MS: f64 = 7000.0;
const LOCAL_TARGET_RATIO: f64 = 0.5;

struct Options {
    aetherd: PathBuf,
    repo: PathBuf,
    json: Option<PathBuf>,
    load: Duration,
    rounds: usize,
    runs: usize,
    /// Another `aetherd` build (the previous release) to run the same app-path cases against.
    baseline: Option<PathBuf>,
    /// Also measure the local case against a cluster with `[tls]` on its HTTP ports.
    tls: bool,
    /// Also measure the local case with this many hung calls to `faulty` in flight (0: not).
    hung: usize,
    /// Also measure the local case while a client polls the host's management API and follows its events.
    poll_management: bool,
}

fn main() {
    let options = parse_args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!("clients and servers share the same {cores} cores: every figure includes the load generator's cost");
    let tiny = TinyHttp::start();
    let nginx = match which("nginx").map(|bin| Nginx::start(&bin)) {
        Some(Ok(nginx)) => Some(nginx),
        Some(Err(e)) => {
            eprintln!("{e}; no nginx baseline in this run");
            None
        }
        None => None,
    };
    let cluster = start_cluster(&options, "app", &options.aetherd, None);
    let baseline = options.baseline.as_ref().map(|bin| start_cluster(&options, "baseline", bin, None));
    let tls = options.tls.then(|| {
        let dir = std::env::temp_dir().join(format!("aether-bench-app-tls-cert-{}", std::process::id()));
        let cert = SelfSigned::generate(&dir).expect("a self-signed certificate");
        let client = Client::plain().with_tls(cert.client_config().expect("a TLS client configuration"));
        (start_cluster(&options, "tls", &options.aetherd, Some((&cert, &client))), client)
    });
    let extras = Extras { baseline: baseline.as_ref(), tls: tls.as_ref().map(|(c, client)| (c, client)) };
    let app = bench_app(&cluster, &tiny, nginx.as_ref(), extras, &options);
    tiny.stop();
    drop(nginx);
    drop(baseline);
    drop(tls);
    // A cluster that served hung calls keeps their threads: deploy and heal times there would measure that.
    let skip_timings = options.hung > 0;
    if skip_timings {
        eprintln!("--hung: no deploy or heal times in this run");
    }
    let timings =
        |name, text| if skip_timings { Timings::default() } else { deploy_times(&cluster, name, text, options.runs) };
    let deploy_echo = timings("bench-echo", ECHO_BLUEPRINT);
    let deploy_demo = timings("demo", DEMO_BLUEPRINT);
    let mut cluster = cluster;
    let heal = if skip_timings { Timings::default() } else { heal_times(&mut cluster, options.runs) };
    drop(cluster);
    let seconds = options.load.as_secs_f64();
    let results = Results { cores, seconds, rounds: options.rounds, app, deploy_echo, deploy_demo, heal };
    report(&results, options.json.as_deref());
}

fn parse_args() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let usage =
        "usage: app --aetherd PATH --repo DIR [--baseline-aetherd PATH] [--tls] [--hung N] [--poll-management] \
                 [--json FILE] \
                 [--seconds N] [--rounds N] [--runs N]";
    let (Some(aetherd), Some(repo)) = (value("--aetherd"), value("--repo")) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let number = |name: &str, default: u64| match value(name).map(|v| v.parse::<u64>()) {
        None => default,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{name} wants a positive whole number\n{usage}");
            std::process::exit(2);
        }
    };
    Options {
        aetherd: PathBuf::from(aetherd),
        repo: PathBuf::from(repo),
        json: value("--json").map(PathBuf::from),
        load: Duration::from_secs(number("--seconds", 5)),
        rounds: number("--rounds", 3) as usize,
        runs: number("--runs", 5) as usize,
        baseline: value("--baseline-aetherd").map(PathBuf::from),
        tls: args.iter().any(|a| a == "--tls"),
        hung: value("--hung").map_or(0, |_| number("--hung", 100) as usize),
        poll_management: args.iter().any(|a| a == "--poll-management"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Load phases

/// One measured load phase, with where its CPU went.
struct Phase {
    run: RunResult,
    cpu: Option<CpuUse>,
    /// Server CPU per request by process and thread group (`node-1 app-http`), largest first.
    threads: Vec<(String, f64)>,
}

/// One case of the load comparison, measured once per round; rounds alternate between the cases so that
/// other work on the machine, which comes and goes, falls on all of them alike.
struct Case {
    name: String,
    rounds: Vec<Phase>,
}

impl Case {
    /// Every round as one: requests and time summed, latencies pooled, CPU figures weighted by requests.
    fn merged(&self) -> Phase {
        let mut run = RunResult::default();
        for phase in &self.rounds {
            run.ops += phase.run.ops;
            run.errors += phase.run.errors;
            run.seconds += phase.run.seconds;
            run.latencies_us.extend_from_slice(&phase.run.latencies_us);
        }
        run.latencies_us.sort_unstable();
        let total = run.ops.max(1) as f64;
        let weighted = |f: fn(&CpuUse) -> f64| -> Option<f64> {
            let parts: Option<Vec<f64>> =
                self.rounds.iter().map(|p| p.cpu.as_ref().map(|c| f(c) * p.run.ops as f64)).collect();
            parts.map(|p| p.iter().sum::<f64>() / total)
        };
        let cpu = match (
            weighted(|c| c.this_process_us_per_request),
            weighted(|c| c.servers_us_per_request),
            weighted(|c| c.servers_switches_per_request),
        ) {
            (Some(this_process_us_per_request), Some(servers_us_per_request), Some(servers_switches_per_request)) => {
                let seconds = self.rounds.iter().map(|p| p.run.seconds).sum::<f64>().max(1e-9);
                let others = self.rounds.iter().filter_map(|p| Some(p.cpu?.others_share * p.run.seconds)).sum::<f64>();
                Some(CpuUse {
                    this_process_us_per_request,
                    servers_us_per_request,
                    servers_switches_per_request,
                    others_share: others / seconds,
                })
            }
            _ => None,
        };
        let mut groups: HashMap<&str, f64> = HashMap::new();
        for phase in &self.rounds {
            for (group, us) in &phase.threads {
                *groups.entry(group).or_default() += us * phase.run.ops as f64 / total;
            }
        }
        let mut threads: Vec<(String, f64)> = groups.into_iter().map(|(g, us)| (g.to_string(), us)).collect();
        threads.sort_by(|a, b| b.1.total_cmp(&a.1));
        Phase { run, cpu, threads }
    }
}

/// Median over rounds of `a`'s requests/s over `b`'s in the same round.
fn round_ratio(a: &Case, b: &Case) -> f64 {
    round_ratio_of(a, b, RunResult::ops_per_s)
}

/// Median over rounds of `metric` of `a` over `metric` of `b` in the same round.
fn round_ratio_of(a: &Case, b: &Case, metric: fn(&RunResult) -> f64) -> f64 {
    let ratios: Vec<f64> = a.rounds.iter().zip(&b.rounds).map(|(x, y)| metric(&x.run) / metric(&y.run)).collect();
    median(&ratios).unwrap_or(f64::NAN)
}

fn p50(run: &RunResult) -> f64 {
    run.percentile_us(50.0)
}

fn p99(run: &RunResult) -> f64 {
    run.percentile_us(99.0)
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[mid]),
        _ => Some((sorted[mid - 1] + sorted[mid]) / 2.0),
    }
}

/// A server process to account CPU to, and the name to show for it.
struct Server {
    name: String,
    pid: u32,
}

/// Each live thread of `servers`: (pid, tid) -> (group shown, ticks); a group is the thread name less its
/// number (`app-http-3` -> `app-http`).
fn thread_sample(servers: &[Server]) -> HashMap<(u32, u32), (String, u64)> {
    let mut out = HashMap::new();
    for server in servers {
        for (tid, name, ticks) in bench::thread_cpu_ticks(server.pid) {
            let group = name.trim_end_matches(|c: char| c.is_ascii_digit()).trim_end_matches('-');
            out.insert((server.pid, tid), (format!("{} {group}", server.name), ticks));
        }
    }
    out
}

/// CPU per request by thread group between two samples (threads that exited in between are lost).
fn thread_use(
    before: &HashMap<(u32, u32), (String, u64)>,
    after: &HashMap<(u32, u32), (String, u64)>,
    requests: u64,
) -> Vec<(String, f64)> {
    let mut groups: HashMap<&str, u64> = HashMap::new();
    for (key, (group, ticks)) in after {
        let earlier = before.get(key).map_or(0, |(_, t)| *t);
        *groups.entry(group).or_default() += ticks.saturating_sub(earlier);
    }
    let per_request = |ticks: u64| ticks as f64 * 1e6 / bench::CPU_TICKS_PER_S / (requests.max(1) as f64);
    let mut out: Vec<(String, f64)> =
        groups.into_iter().filter(|(_, t)| *t > 0).map(|(g, t)| (g.to_string(), per_request(t))).collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1));
    out
}

/// CPU spent during a phase, from `/proc`: by this process (the clients, and the tiny_http baseline when
/// it runs), by the server processes, and by everything else on the machine (other work sharing the cores).
#[derive(Clone, Copy)]
struct CpuUse {
    this_process_us_per_request: f64,
    servers_us_per_request: f64,
    /// Context switches of the server processes' threads per request: each is a thread hand-off or a
    /// blocking wait, the main cost of a small request after the syscalls.
    servers_switches_per_request: f64,
    /// Busy time of other processes, as a share of all the cores over the phase.
    others_share: f64,
}

#[derive(Clone, Copy)]
struct CpuSample {
    machine: u64,
    this_process: u64,
    servers: u64,
    servers_switches: u64,
}

fn cpu_sample(servers: &[u32]) -> Option<CpuSample> {
    Some(CpuSample {
        machine: bench::machine_busy_ticks()?,
        this_process: bench::process_cpu_ticks(std::process::id())?,
        servers: servers.iter().filter_map(|&pid| bench::process_cpu_ticks(pid)).sum(),
        servers_switches: servers.iter().map(|&pid| bench::process_context_switches(pid)).sum(),
    })
}

fn cpu_use(before: CpuSample, after: CpuSample, run: &RunResult, cores: usize) -> CpuUse {
    let us = |ticks: u64| ticks as f64 * 1e6 / bench::CPU_TICKS_PER_S;
    let per_request = |ticks: u64| us(ticks) / (run.ops.max(1) as f64);
    let this_process = after.this_process.saturating_sub(before.this_process);
    let servers = after.servers.saturating_sub(before.servers);
    let others = after.machine.saturating_sub(before.machine).saturating_sub(this_process + servers);
    CpuUse {
        this_process_us_per_request: per_request(this_process),
        servers_us_per_request: per_request(servers),
        servers_switches_per_request: after.servers_switches.saturating_sub(before.servers_switches) as f64
            / (run.ops.max(1) as f64),
        others_share: us(others) / (run.seconds * 1e6 * cores as f64),
    }
}

/// One warm-up second (connections opened, caches and pools warm), then the measured run; `servers`
/// are the processes serving it (none for the in-process baseline).
fn load(name: &str, target: &Target, duration: Duration) -> Phase {
    let (client, servers) = (&target.client, &target.servers[..]);
    let echo = Arc::new(|_: usize, _: u64| Request { method: "GET", path: ECHO_PATH.into(), body: Vec::new() });
    let _ = run_load(&[target.addr], CONCURRENCY, WARMUP, client, |s| s == 200, echo.clone());
    let pids: Vec<u32> = servers.iter().map(|s| s.pid).collect();
    let (before, threads_before) = (cpu_sample(&pids), thread_sample(servers));
    let run = run_load(&[target.addr], CONCURRENCY, duration, client, |s| s == 200, echo);
    let (after, threads_after) = (cpu_sample(&pids), thread_sample(servers));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = before.zip(after).map(|(b, a)| cpu_use(b, a, &run, cores));
    let threads = thread_use(&threads_before, &threads_after, run.ops);
    eprintln!(
        "{name}: {:.0} req/s, p50 {:.0} µs, p99 {:.0} µs, errors {}",
        run.ops_per_s(),
        run.percentile_us(50.0),
        run.percentile_us(99.0),
        run.errors
    );
    Phase { run, cpu, threads }
}

/// A minimal tiny_http server in this process, on its own handler threads, answering `ECHO_BODY`.
struct TinyHttp {
    server: Arc<tiny_http::Server>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl TinyHttp {
    fn start() -> TinyHttp {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("tiny_http baseline: bind 127.0.0.1:0"));
        let stopping = Arc::new(AtomicBool::new(false));
        let header = tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"application/json"[..])
            .expect("a constant header is valid");
        let threads = (0..TINY_HTTP_THREADS)
            .map(|_| {
                let (server, stopping, header) = (server.clone(), stopping.clone(), header.clone());
                std::thread::spawn(move || {
                    while let Ok(request) = server.recv() {
                        if stopping.load(Ordering::Relaxed) {
                            break;
                        }
                        let response = tiny_http::Response::from_data(ECHO_BODY.as_bytes()).with_header(header.clone());
                        let _ = request.respond(response);
                    }
                })
            })
            .collect();
        TinyHttp { server, stopping, threads }
    }

    fn addr(&self) -> SocketAddr {
        self.server.server_addr().to_ip().expect("tiny_http baseline listens on TCP")
    }

    fn stop(self) {
        self.stopping.store(true, Ordering::Relaxed);
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// An nginx master with one worker, from a generated config in a temp dir; stopped (SIGTERM) on drop.
struct Nginx {
    child: Child,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Nginx {
    fn start(bin: &Path) -> Result<Nginx, String> {
        let dir = std::env::temp_dir().join(format!("aether-bench-nginx-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let port = devcluster::free_ports(1).first().copied().ok_or("no free port on 127.0.0.1")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_config(&dir, addr)).map_err(|e| format!("{}: {e}", conf.display()))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(&dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut nginx = Nginx { child, dir, addr };
        let up = wait_for(Duration::from_secs(10), || {
            matches!(nginx.child.try_wait(), Ok(Some(_)))
                || http(addr, "GET", ECHO_PATH, b"").is_ok_and(|r| r.text() == ECHO_BODY)
        });
        if up.is_err() || !matches!(nginx.child.try_wait(), Ok(None)) {
            let log = std::fs::read_to_string(nginx.dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx did not come up: {}", log.trim()));
        }
        Ok(nginx)
    }
}

impl Nginx {
    /// The master and its worker, for CPU accounting.
    fn servers(&self) -> Vec<Server> {
        let master = self.child.id();
        let workers = bench::child_pids(master).into_iter().map(|pid| Server { name: "nginx worker".into(), pid });
        std::iter::once(Server { name: "nginx master".into(), pid: master }).chain(workers).collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its worker; SIGKILL would leave the worker behind.
        devcluster::terminate_pid(self.child.id(), Duration::from_secs(5));
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nginx_config(dir: &Path, addr: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
         keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  \
         server {{\n    listen {addr};\n    location / {{\n      default_type application/json;\n      \
         return 200 '{ECHO_BODY}';\n    }}\n  }}\n}}\n"
    )
}

// ---------------------------------------------------------------------------------------------------
// The cluster

/// A 3-node cluster of `aetherd`, with `[tls]` serving `tls`'s certificate when given (then reached with
/// its client).
fn start_cluster(options: &Options, name: &str, aetherd: &Path, tls: Option<(&SelfSigned, &Client)>) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("aether-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, aetherd);
    spec.env = vec![("AETHER_LOG".into(), "warn".into())];
    spec.extra_args = vec!["--repo".into(), options.repo.display().to_string()];
    if let Some((cert, _)) = tls {
        spec.extra_config = cert.tls_section();
    }
    let cluster = LocalCluster::start(spec).expect("start a 3-node cluster");
    let plain = Client::plain();
    let client = tls.map_or(&plain, |(_, client)| client);
    let ready = |addr: &SocketAddr| {
        bench::request(*addr, client, "GET", "/api/health", b"").is_ok_and(|(status, body)| {
            status == 200 && serde_json::from_slice::<Value>(&body).is_ok_and(|h| h["ready"] == true)
        })
    };
    let nodes: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.management).collect();
    if wait_for(SETTLE, || nodes.iter().all(ready)).is_err() {
        panic!("{name} cluster not ready within {SETTLE:?}; node-1 log:\n{}", cluster.log(0));
    }
    cluster
}

fn blueprint(cluster: &LocalCluster, node: usize, name: &str) -> Value {
    let path = format!("/api/blueprints/{name}");
    http(cluster.nodes[node].management, "GET", &path, b"").map(|r| r.json()).unwrap_or(Value::Null)
}

/// Every slice of the blueprint has as many ACTIVE instances as it wants.
fn fully_active(status: &Value) -> bool {
    status["slices"].as_array().is_some_and(|slices| {
        !slices.is_empty() && slices.iter().all(|s| s["active"].as_u64() == s["desired"].as_u64())
    })
}

/// Fully active, and no instance of any slice recorded on `dead`.
fn healed(status: &Value, dead: &str) -> bool {
    fully_active(status)
        && status["slices"].as_array().is_some_and(|slices| {
            slices.iter().all(|s| s["where"].as_array().is_some_and(|w| w.iter().all(|p| p["node"] != dead)))
        })
}

fn slices(cluster: &LocalCluster, node: usize) -> Option<Vec<Value>> {
    let r = http(cluster.nodes[node].management, "GET", "/api/slices", b"").ok()?;
    r.json()["slices"].as_array().cloned()
}

/// Indexes of the nodes with an ACTIVE instance of anything, in order.
fn hosting_nodes(cluster: &LocalCluster, node: usize) -> Vec<usize> {
    let instances = slices(cluster, node).unwrap_or_default();
    let active = |id: &str| instances.iter().any(|s| s["node"] == id && s["state"] == "ACTIVE");
    (0..cluster.nodes.len()).filter(|&i| active(&cluster.nodes[i].id)).collect()
}

fn post(cluster: &LocalCluster, node: usize, text: &str) -> Result<(), String> {
    let r = http(cluster.nodes[node].management, "POST", "/api/blueprints", text.as_bytes())
        .map_err(|e| format!("POST /api/blueprints: {e}"))?;
    if r.status == 201 {
        Ok(())
    } else {
        Err(format!("POST /api/blueprints answered {}: {}", r.status, r.text()))
    }
}

/// Deletes blueprint `name` and waits until no slice instance is left anywhere.
fn delete(cluster: &LocalCluster, node: usize, name: &str) -> Result<(), String> {
    let path = format!("/api/blueprints/{name}");
    let r = http(cluster.nodes[node].management, "DELETE", &path, b"").map_err(|e| format!("DELETE {path}: {e}"))?;
    // 404: already gone (a run whose POST failed); still wait for the instances to go.
    if r.status != 200 && r.status != 404 {
        return Err(format!("DELETE {path} answered {}: {}", r.status, r.text()));
    }
    wait_for(SETTLE, || slices(cluster, node).is_some_and(|s| s.is_empty()))
        .map_err(|_| format!("instances still listed {SETTLE:?} after deleting {name}"))
}

/// Polls `done` every `POLL` until it holds; the time since `since`, or `None` after `SETTLE`.
fn elapsed_until(since: Instant, mut done: impl FnMut() -> bool) -> Option<Duration> {
    loop {
        if done() {
            return Some(since.elapsed());
        }
        if since.elapsed() > SETTLE {
            return None;
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------------
// App path through the cluster

struct AppResults {
    host: String,
    via: String,
    nginx: Option<Case>,
    tiny: Case,
    local: Case,
    forwarded: Case,
    /// The previous `aetherd` build, same cases.
    baseline_local: Option<Case>,
    baseline_forwarded: Option<Case>,
    /// `[tls]` on: local over persistent TLS connections, then local with a new connection per request,
    /// plain and TLS (the handshake's cost).
    tls_local: Option<Case>,
    reconnect_plain: Option<Case>,
    reconnect_tls: Option<Case>,
    /// Local with hung calls to `faulty` in flight on the same port.
    local_hung: Option<Case>,
    /// Local while a client polls the host's management API (`--poll-management`).
    local_polled: Option<Case>,
    /// Each node's CPU at idle (metrics on), in percent of one core, measured before the load.
    idle_cpu: Vec<(String, Option<f64>)>,
}

impl AppResults {
    fn cases(&self) -> Vec<&Case> {
        let optional = [
            &self.local_hung,
            &self.local_polled,
            &self.baseline_local,
            &self.baseline_forwarded,
            &self.tls_local,
            &self.reconnect_plain,
        ];
        self.nginx
            .iter()
            .chain([&self.tiny, &self.local, &self.forwarded])
            .chain(optional.into_iter().flatten())
            .chain(self.reconnect_tls.iter())
            .collect()
    }
}

/// Where one case sends its load, how, and which processes serve it.
struct Target {
    addr: SocketAddr,
    client: Client,
    servers: Vec<Server>,
    /// Hung calls to keep in flight on `addr` during the phase.
    hung: usize,
    /// A management port to poll during the phase.
    poll: Option<SocketAddr>,
}

/// Calls to `GET /faulty/hang` kept in flight on one app port, each on its own connection: one that
/// gets its 504 calls again at once, one refused with 503 waits its `Retry-After` first.
struct HungCalls {
    stop: Arc<AtomicBool>,
    streams: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    threads: Vec<JoinHandle<HashMap<u16, u64>>>,
}

impl HungCalls {
    fn start(addr: SocketAddr, n: usize) -> HungCalls {
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<std::sync::Mutex<Vec<std::net::TcpStream>>> = Arc::default();
        let threads = (0..n)
            .map(|_| {
                let (stop, streams) = (stop.clone(), streams.clone());
                std::thread::spawn(move || {
                    let mut answers: HashMap<u16, u64> = HashMap::new();
                    while !stop.load(Ordering::SeqCst) {
                        let status = hung_call(addr, &streams).unwrap_or(0);
                        *answers.entry(status).or_default() += 1;
                        if status == 503 {
                            let until = Instant::now() + Duration::from_secs(1);
                            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                                std::thread::sleep(Duration::from_millis(20));
                            }
                        }
                    }
                    answers
                })
            })
            .collect();
        HungCalls { stop, streams, threads }
    }

    /// Ends the calls in flight (closing their connections) and says how they were answered.
    fn stop(self) -> HashMap<u16, u64> {
        self.stop.store(true, Ordering::SeqCst);
        for stream in self.streams.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        let mut answers = HashMap::new();
        for thread in self.threads {
            for (status, n) in thread.join().unwrap_or_default() {
                *answers.entry(status).or_default() += n;
            }
        }
        answers
    }
}

fn hung_call(addr: SocketAddr, streams: &std::sync::Mutex<Vec<std::net::TcpStream>>) -> std::io::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    streams.lock().unwrap_or_else(|e| e.into_inner()).push(stream.try_clone()?);
    stream.write_all(b"GET /faulty/hang HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    let status = std::str::from_utf8(&head[9..12]).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    let mut streams = streams.lock().unwrap_or_else(|e| e.into_inner());
    let mine = stream.local_addr().ok();
    streams.retain(|s| s.local_addr().ok() != mine);
    Ok(status)
}

/// The clusters measured besides the main one.
struct Extras<'a> {
    baseline: Option<&'a LocalCluster>,
    /// A cluster with `[tls]`, and the client trusting its certificate.
    tls: Option<(&'a LocalCluster, &'a Client)>,
}

/// The server processes of a cluster (every node), for CPU accounting.
fn cluster_servers(cluster: &LocalCluster, prefix: &str) -> Vec<Server> {
    (0..cluster.nodes.len())
        .filter_map(|i| Some(Server { name: format!("{prefix}{}", cluster.nodes[i].id), pid: cluster.pid(i)? }))
        .collect()
}

/// Deploys the echo blueprint on `cluster` through `client`, waits until both the host's and another node's
/// app ports serve it; (host, via) node indexes.
fn deploy_echo(cluster: &LocalCluster, client: &Client) -> Result<(usize, usize), String> {
    let management = cluster.nodes[0].management;
    let (status, body) = bench::request(management, client, "POST", "/api/blueprints", ECHO_BLUEPRINT.as_bytes())
        .map_err(|e| format!("POST /api/blueprints: {e}"))?;
    if status != 201 {
        return Err(format!("POST /api/blueprints answered {status}: {}", String::from_utf8_lossy(&body)));
    }
    let get = |path: &str| -> Value {
        bench::request(management, client, "GET", path, b"")
            .ok()
            .and_then(|(_, body)| serde_json::from_slice(&body).ok())
            .unwrap_or(Value::Null)
    };
    wait_for(SETTLE, || fully_active(&get("/api/blueprints/bench-echo")))
        .map_err(|_| format!("echo blueprint not fully active within {SETTLE:?}"))?;
    let instances = get("/api/slices");
    let host = instances["slices"]
        .as_array()
        .and_then(|list| list.iter().find(|s| s["artifact"] == ECHO_ARTIFACT && s["state"] == "ACTIVE"))
        .and_then(|s| s["node"].as_str())
        .and_then(|id| cluster.nodes.iter().position(|n| n.id == id))
        .ok_or("no ACTIVE echo instance listed")?;
    let via = (host + 1) % cluster.nodes.len();
    let answers = |node: usize| {
        bench::request(cluster.nodes[node].app, client, "GET", ECHO_PATH, b"")
            .ok()
            .filter(|(status, _)| *status == 200)
            .map(|(_, body)| String::from_utf8_lossy(&body).into_owned())
    };
    // Routes reach each node's registry as instances become ACTIVE; wait for both app ports to serve.
    wait_for(SETTLE, || answers(host).is_some() && answers(via).is_some())
        .map_err(|_| format!("echo not served on both app ports within {SETTLE:?}"))?;
    let sample = answers(via).unwrap_or_default();
    eprintln!("echo on {} answers through {}: {sample}", cluster.nodes[host].id, cluster.nodes[via].id);
    if sample.len() != ECHO_BODY.len() {
        eprintln!("note: the baselines answer {} bytes, echo {} bytes", ECHO_BODY.len(), sample.len());
    }
    Ok((host, via))
}

fn bench_app(
    cluster: &LocalCluster,
    tiny: &TinyHttp,
    nginx: Option<&Nginx>,
    extras: Extras,
    options: &Options,
) -> AppResults {
    let (host, via) = deploy_echo(cluster, &Client::plain()).expect("deploy echo");
    let (host_id, via_id) = (cluster.nodes[host].id.clone(), cluster.nodes[via].id.clone());
    let hung = options.hung > 0
        && match deploy_faulty(cluster, host) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("faulty: {e}; no hung-calls case in this run");
                false
            }
        };
    let case = |name: String| Case { name, rounds: Vec::new() };
    let baseline = extras.baseline.and_then(|b| match deploy_echo(b, &Client::plain()) {
        Ok((host, via)) => Some((b, host, via)),
        Err(e) => {
            eprintln!("baseline: {e}; no baseline cases in this run");
            None
        }
    });
    let tls = extras.tls.map(|(c, client)| {
        let (host, _) = deploy_echo(c, client).expect("deploy echo on the TLS cluster");
        (c, client, host)
    });
    let mut app = AppResults {
        nginx: nginx.map(|_| case("nginx (1 worker)".into())),
        tiny: case(format!("tiny_http ({TINY_HTTP_THREADS} threads, in-process)")),
        local: case(format!("aether local ({host_id})")),
        forwarded: case(format!("aether forwarded ({via_id} -> {host_id})")),
        baseline_local: baseline.map(|_| case("baseline local".into())),
        baseline_forwarded: baseline.map(|_| case("baseline forwarded".into())),
        tls_local: tls.map(|_| case("aether local TLS".into())),
        reconnect_plain: tls.map(|_| case("aether local, conn/request".into())),
        reconnect_tls: tls.map(|_| case("aether local TLS, conn/request".into())),
        local_hung: hung.then(|| case(format!("aether local, {} hung calls in flight", options.hung))),
        local_polled: options.poll_management.then(|| case("aether local, management polled".into())),
        idle_cpu: if options.poll_management { idle_cpu(cluster, extras.baseline) } else { Vec::new() },
        host: host_id,
        via: via_id,
    };
    let plain = Client::plain();
    let mut plan: Vec<(&mut Case, Target)> = Vec::new();
    if let (Some(case), Some(nginx)) = (app.nginx.as_mut(), nginx) {
        plan.push((
            case,
            Target { addr: nginx.addr, client: plain.clone(), servers: nginx.servers(), hung: 0, poll: None },
        ));
    }
    plan.push((
        &mut app.tiny,
        Target { addr: tiny.addr(), client: plain.clone(), servers: Vec::new(), hung: 0, poll: None },
    ));
    let ours = cluster_servers(cluster, "");
    let at = |c: &LocalCluster, node: usize, client: &Client, servers: &[Server]| Target {
        addr: c.nodes[node].app,
        client: client.clone(),
        servers: servers.iter().map(|s| Server { name: s.name.clone(), pid: s.pid }).collect(),
        hung: 0,
        poll: None,
    };
    plan.push((&mut app.local, at(cluster, host, &plain, &ours)));
    if let Some(case) = app.local_hung.as_mut() {
        plan.push((case, Target { hung: options.hung, ..at(cluster, host, &plain, &ours) }));
    }
    if let Some(case) = app.local_polled.as_mut() {
        plan.push((case, Target { poll: Some(cluster.nodes[host].management), ..at(cluster, host, &plain, &ours) }));
    }
    plan.push((&mut app.forwarded, at(cluster, via, &plain, &ours)));
    if let (Some(local), Some(forwarded), Some((b, host, via))) =
        (app.baseline_local.as_mut(), app.baseline_forwarded.as_mut(), baseline)
    {
        let servers = cluster_servers(b, "baseline ");
        plan.push((local, at(b, host, &plain, &servers)));
        plan.push((forwarded, at(b, via, &plain, &servers)));
    }
    if let (Some(tls_local), Some(reconnect_plain), Some(reconnect_tls), Some((c, client, tls_host))) =
        (app.tls_local.as_mut(), app.reconnect_plain.as_mut(), app.reconnect_tls.as_mut(), tls)
    {
        let servers = cluster_servers(c, "tls ");
        plan.push((tls_local, at(c, tls_host, client, &servers)));
        plan.push((reconnect_plain, at(cluster, host, &plain.clone().reconnecting(), &ours)));
        plan.push((reconnect_tls, at(c, tls_host, &client.clone().reconnecting(), &servers)));
    }
    for round in 0..options.rounds {
        for (case, target) in plan.iter_mut() {
            let name = format!("round {} {}", round + 1, case.name);
            let hung = (target.hung > 0).then(|| HungCalls::start(target.addr, target.hung));
            if hung.is_some() {
                // Let the hung calls reach the slice (and the rest be refused) before measuring.
                std::thread::sleep(Duration::from_millis(500));
            }
            let poller = target.poll.map(bench::poll::ManagementPoller::start);
            case.rounds.push(load(&name, target, options.load));
            if let Some(poller) = poller {
                let report = poller.stop();
                eprintln!(
                    "{name}: management answers {:?}; event stream status {} ({} bytes)",
                    report.answers, report.stream_status, report.stream_bytes
                );
            }
            if let Some(hung) = hung {
                let mut answers: Vec<(u16, u64)> = hung.stop().into_iter().collect();
                answers.sort();
                eprintln!("{name}: hung calls answered {answers:?} (0: still in flight at the end)");
            }
        }
    }
    drop(plan);
    if hung {
        // Its instances hold hung calls for good: they leave the cluster only as far as the node can
        // unload them, so neither deletion is waited for to the end.
        for name in ["bench-faulty", "bench-echo"] {
            if let Err(e) = delete(cluster, 0, name) {
                eprintln!("deleting {name}: {e}");
            }
        }
    } else {
        delete(cluster, 0, "bench-echo").expect("delete the echo blueprint");
    }
    app
}

/// Each node's CPU over the same 10 s with nothing to do but its own work (metrics summaries included),
/// and the baseline build's nodes beside them when there are some (an earlier build without metrics shows
/// what they cost).
fn idle_cpu(cluster: &LocalCluster, baseline: Option<&LocalCluster>) -> Vec<(String, Option<f64>)> {
    std::thread::sleep(Duration::from_secs(2));
    let mut names = Vec::new();
    let mut pids = Vec::new();
    for (prefix, c) in std::iter::once(("", cluster)).chain(baseline.map(|b| ("baseline ", b))) {
        for (i, node) in c.nodes.iter().enumerate() {
            names.push(format!("{prefix}{}", node.id));
            pids.push(c.pid(i).unwrap_or(0));
        }
    }
    let cpu = bench::poll::idle_cpu_percent(&pids, Duration::from_secs(10));
    names.into_iter().zip(cpu).collect()
}

/// Deploys `faulty` on every node and waits until `host`'s app port serves it.
fn deploy_faulty(cluster: &LocalCluster, host: usize) -> Result<(), String> {
    post(cluster, 0, FAULTY_BLUEPRINT)?;
    wait_for(SETTLE, || http(cluster.nodes[host].app, "GET", "/faulty/ok", b"").is_ok_and(|r| r.status == 200))
        .map_err(|_| format!("faulty not served on {} within {SETTLE:?}", cluster.nodes[host].id))
}

// ---------------------------------------------------------------------------------------------------
// Deploy and heal

/// Times of the runs that finished (ms) and how many did not within `SETTLE`.
#[derive(Default)]
struct Timings {
    ms: Vec<f64>,
    failed: usize,
    /// Heal runs: the node killed in each run.
    killed: Vec<String>,
}

impl Timings {
    fn record(&mut self, what: &str, run: usize, took: Option<Duration>) {
        match took {
            Some(d) => {
                let ms = d.as_secs_f64() * 1e3;
                eprintln!("{what} run {}: {ms:.1} ms", run + 1);
                self.ms.push(ms);
            }
            None => {
                eprintln!("{what} run {}: not done within {SETTLE:?}", run + 1);
                self.failed += 1;
            }
        }
    }

    /// (median, min, max), or `None` when no run finished.
    fn summary(&self) -> Option<(f64, f64, f64)> {
        let min = self.ms.iter().copied().min_by(f64::total_cmp)?;
        let max = self.ms.iter().copied().max_by(f64::total_cmp)?;
        Some((median(&self.ms)?, min, max))
    }
}

fn deploy_times(cluster: &LocalCluster, name: &str, text: &str, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for run in 0..runs {
        let start = Instant::now();
        let took = post(cluster, 0, text)
            .map_err(|e| eprintln!("deploy {name}: {e}"))
            .ok()
            .and_then(|()| elapsed_until(start, || fully_active(&blueprint(cluster, 0, name))));
        timings.record(&format!("deploy {name}"), run, took);
        delete(cluster, 0, name).expect("delete the blueprint between deploy runs");
    }
    timings
}

fn heal_times(cluster: &mut LocalCluster, runs: usize) -> Timings {
    let mut timings = Timings::default();
    for run in 0..runs {
        post(cluster, 0, DEMO_BLUEPRINT).expect("deploy the demo blueprint before a heal run");
        wait_for(SETTLE, || fully_active(&blueprint(cluster, 0, "demo"))).expect("demo fully active before a kill");
        // Each run kills another hosting node in turn, so the leader (the smallest live id) is among them.
        let hosts = hosting_nodes(cluster, 0);
        let victim = *hosts.get(run % hosts.len().max(1)).expect("the demo has ACTIVE instances");
        let survivor = (victim + 1) % cluster.nodes.len();
        let dead = cluster.nodes[victim].id.clone();
        let start = Instant::now();
        cluster.kill(victim);
        let took = elapsed_until(start, || healed(&blueprint(cluster, survivor, "demo"), &dead));
        timings.record(&format!("heal after kill -9 of {dead}"), run, took);
        timings.killed.push(dead);
        cluster.start_node(victim).expect("restart the killed node");
        cluster.wait_ready(SETTLE).expect("restarted node ready");
        cluster.wait_connected(2, SETTLE).expect("restarted node connected to both peers");
        delete(cluster, survivor, "demo").expect("delete the demo blueprint between heal runs");
    }
    timings
}

// ---------------------------------------------------------------------------------------------------
// Report

struct Results {
    cores: usize,
    seconds: f64,
    rounds: usize,
    app: AppResults,
    deploy_echo: Timings,
    deploy_demo: Timings,
    heal: Timings,
}

fn report(r: &Results, json_path: Option<&Path>) {
    let cases: Vec<(&Case, Phase)> = r.app.cases().into_iter().map(|c| (c, c.merged())).collect();
    println!(
        "\nApp path: GET {ECHO_PATH}, {CONCURRENCY} keep-alive connections; {} rounds, each case {:.0} s per round \
         after {:.0} s warm-up",
        r.rounds,
        r.seconds,
        WARMUP.as_secs_f64()
    );
    println!("Clients and servers share the same {} cores: each figure includes the load generator's cost.", r.cores);
    println!(
        "{:<40} {:>8} {:>8} {:>8} {:>7} {:>11} {:>11} {:>10} {:>7}",
        "case (all rounds)",
        "req/s",
        "p50 µs",
        "p99 µs",
        "errors",
        "bench µs/r",
        "server µs/r",
        "server cs/r",
        "others"
    );
    for (case, merged) in &cases {
        print_row(&case.name, merged);
    }
    println!("CPU per request from /proc: `bench` is this process (the clients; for tiny_http, clients and server),");
    println!("`server` the server processes (every aetherd node), `cs/r` their context switches per request,");
    println!("`others` the rest of the machine's busy time (other work on these cores during the phase).");
    println!("req/s by round:");
    for (case, _) in &cases {
        let rounds: Vec<String> = case.rounds.iter().map(|p| format!("{:.0}", p.run.ops_per_s())).collect();
        println!("  {:<38} {}", case.name, rounds.join("  "));
    }
    println!("Where the servers' CPU goes, µs per request by process and thread group (largest first;");
    println!("`app-io` is the app port's I/O thread, `app-http` its workers; threads that exited are not counted):");
    for (case, merged) in &cases {
        let groups: Vec<String> = merged.threads.iter().take(6).map(|(g, us)| format!("{g} {us:.1}")).collect();
        if !groups.is_empty() {
            println!("  {}: {}", case.name, groups.join(", "));
        }
    }
    let ratios = ratios(&r.app);
    println!("Ratios (requests/s unless named; p50/p99 above 1 are slower), median over rounds of the ratio within");
    println!("each round:");
    for (name, value) in &ratios {
        println!("  {name}: {value:.2}x");
    }
    print_verdict_app(&r.app);
    if !r.app.idle_cpu.is_empty() {
        let idle: Vec<String> =
            r.app.idle_cpu.iter().map(|(node, cpu)| format!("{node} {:.2}%", cpu.unwrap_or(f64::NAN))).collect();
        println!("CPU of each node at idle with metrics on (percent of one core, over 10 s): {}", idle.join(", "));
    }
    println!("\nControl plane, {} runs each: median (min - max)", r.deploy_echo.ms.len() + r.deploy_echo.failed);
    print_timing("deploy echo (1 instance)", &r.deploy_echo, DEPLOY_TARGET_MS);
    print_timing("deploy demo (6 instances, 4 slices)", &r.deploy_demo, DEPLOY_TARGET_MS);
    print_timing("heal demo after kill -9", &r.heal, HEAL_TARGET_MS);
    if let Some(path) = json_path {
        let doc = to_json(r, &cases, &ratios);
        if let Err(e) = std::fs::write(path, format!("{doc:#}\n")) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

fn print_row(name: &str, phase: &Phase) {
    let run = &phase.run;
    let cpu = |f: fn(&CpuUse) -> f64, scale: f64| phase.cpu.as_ref().map_or(f64::NAN, |c| f(c) * scale);
    println!(
        "{name:<40} {:>8.0} {:>8.0} {:>8.0} {:>7} {:>11.1} {:>11.1} {:>10.1} {:>6.0}%",
        run.ops_per_s(),
        run.percentile_us(50.0),
        run.percentile_us(99.0),
        run.errors,
        cpu(|c| c.this_process_us_per_request, 1.0),
        cpu(|c| c.servers_us_per_request, 1.0),
        cpu(|c| c.servers_switches_per_request, 1.0),
        cpu(|c| c.others_share, 100.0),
    );
}

fn ratios(app: &AppResults) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    if let Some(nginx) = &app.nginx {
        out.push(("local / nginx".to_string(), round_ratio(&app.local, nginx)));
        out.push(("forwarded / nginx".to_string(), round_ratio(&app.forwarded, nginx)));
    }
    out.push(("local / tiny_http".to_string(), round_ratio(&app.local, &app.tiny)));
    out.push(("forwarded / tiny_http".to_string(), round_ratio(&app.forwarded, &app.tiny)));
    out.push(("forwarded / local".to_string(), round_ratio(&app.forwarded, &app.local)));
    let mut compare = |name: &str, a: &Case, b: &Case| {
        out.push((format!("{name} req/s"), round_ratio(a, b)));
        out.push((format!("{name} p50"), round_ratio_of(a, b, p50)));
        out.push((format!("{name} p99"), round_ratio_of(a, b, p99)));
    };
    if let (Some(local), Some(forwarded)) = (&app.baseline_local, &app.baseline_forwarded) {
        compare("local / baseline local", &app.local, local);
        compare("forwarded / baseline forwarded", &app.forwarded, forwarded);
    }
    if let Some(hung) = &app.local_hung {
        compare("local with hung calls / local", hung, &app.local);
    }
    if let Some(polled) = &app.local_polled {
        compare("local with management polled / local", polled, &app.local);
    }
    if let Some(tls) = &app.tls_local {
        compare("TLS local / local (keep-alive)", tls, &app.local);
    }
    if let (Some(plain), Some(tls)) = (&app.reconnect_plain, &app.reconnect_tls) {
        compare("TLS / plain, conn per request", tls, plain);
        compare("plain conn per request / keep-alive", plain, &app.local);
    }
    if let (Some(nginx), Some(local)) = (&app.nginx, &app.baseline_local) {
        out.push(("baseline local / nginx".to_string(), round_ratio(local, nginx)));
    }
    out
}

fn print_verdict_app(app: &AppResults) {
    let (ratio, name) = match &app.nginx {
        Some(nginx) => (round_ratio(&app.local, nginx), "nginx"),
        None => (round_ratio(&app.local, &app.tiny), "tiny_http (nginx not installed: apt-get install nginx)"),
    };
    let verdict = if ratio >= LOCAL_TARGET_RATIO { "met" } else { "MISSED" };
    println!("target: local >= {LOCAL_TARGET_RATIO}x {name} req/s: {ratio:.2}x, {verdict}");
}

fn print_timing(name: &str, t: &Timings, target_ms: f64) {
    let failed = if t.failed > 0 { format!(", {} runs not done in {SETTLE:?}", t.failed) } else { String::new() };
    match t.summary() {
        Some((median, min, max)) => {
            let verdict = if median < target_ms && t.failed == 0 { "met" } else { "MISSED" };
            println!(
                "{name:<36} {median:>8.1} ms ({min:.1} - {max:.1}){failed}   target < {target_ms:.0} ms: {verdict}"
            );
        }
        None => println!("{name:<36} no run finished{failed}   target < {target_ms:.0} ms: MISSED"),
    }
}

fn case_json(case: &Case, merged: &Phase) -> Value {
    let run = &merged.run;
    json!({
        "case": case.name,
        "ops_per_s": run.ops_per_s(),
        "ops_per_s_by_round": case.rounds.iter().map(|p| p.run.ops_per_s()).collect::<Vec<_>>(),
        "p50_us": run.percentile_us(50.0),
        "p99_us": run.percentile_us(99.0),
        "errors": run.errors,
        "requests": run.ops,
        "cpu_bench_process_us_per_request": merged.cpu.map(|c| c.this_process_us_per_request),
        "cpu_servers_us_per_request": merged.cpu.map(|c| c.servers_us_per_request),
        "servers_context_switches_per_request": merged.cpu.map(|c| c.servers_switches_per_request),
        "cpu_others_share": merged.cpu.map(|c| c.others_share),
        "servers_threads_us_per_request":
            merged.threads.iter().map(|(g, us)| json!({ "threads": g, "us": us })).collect::<Vec<_>>(),
    })
}

fn timing_json(t: &Timings, target_ms: f64) -> Value {
    let summary = t.summary();
    json!({
        "runs_ms": t.ms,
        "failed": t.failed,
        "median_ms": summary.map(|s| s.0),
        "min_ms": summary.map(|s| s.1),
        "max_ms": summary.map(|s| s.2),
        "target_ms": target_ms,
        "killed": t.killed,
    })
}

fn to_json(r: &Results, cases: &[(&Case, Phase)], ratios: &[(String, f64)]) -> Value {
    json!({
        "cores": r.cores,
        "note": "load generator and servers share the same cores",
        "concurrency": CONCURRENCY,
        "seconds_per_round": r.seconds,
        "rounds": r.rounds,
        "path": ECHO_PATH,
        "echo_host": r.app.host,
        "forwarded_through": r.app.via,
        "load": cases.iter().map(|(case, merged)| case_json(case, merged)).collect::<Vec<_>>(),
        "ratios": ratios.iter().map(|(name, v)| json!({ "ratio": name, "value": v })).collect::<Vec<_>>(),
        "local_target_ratio": LOCAL_TARGET_RATIO,
        "deploy_echo": timing_json(&r.deploy_echo, DEPLOY_TARGET_MS),
        "deploy_demo": timing_json(&r.deploy_demo, DEPLOY_TARGET_MS),
        "heal_demo": timing_json(&r.heal, HEAL_TARGET_MS),
        "idle_cpu_percent": r.app.idle_cpu.iter().map(|(node, cpu)| json!({ "node": node, "cpu_percent": cpu })).collect::<Vec<_>>(),
    })
}
