//! `cargo xtask bench app`: the app path (a client's HTTP request to a node's app port, answered by a
//! slice) against plain HTTP servers answering the same bytes, and the control plane's two visible
//! latencies: how long a blueprint takes to deploy and how long the cluster takes to heal after kill -9.
//!
//! What one run measures, on one machine:
//! - requests/s and p50/p99 of `GET /echo/hello` at 64 closed-loop keep-alive connections (`--connections`)
//!   against a
//!   3-node cluster running a blueprint with one `echo` instance: *local* (load aimed at the app port of
//!   the node hosting it) and *forwarded* (aimed at another node, which forwards every call over the
//!   cluster transport to the host);
//! - the same load against baselines answering the same bytes
//!   (`{"echo":"hello","version":"1.0.0","node":"node-1"}`, `application/json`): `tiny_http` with 4
//!   handler threads in this process (a generic thread-per-connection server; the app port is the
//!   in-house `httpd`: one mio I/O thread that runs quick calls itself, `app-http` workers for held ones),
//!   and nginx (1 worker, `return 200`, generated config in a temp dir) when `nginx` is installed;
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
//! - with `--wrk`, every case driven by `wrk -t2 -c64 -d<S>s --latency` (`bench::wrk`; `-H` for an API key,
//!   `Connection: close` for the cases with a connection per request, `https://` for TLS) instead of the
//!   in-process clients, warm-up included: a client in C on epoll that costs the servers' cores far less
//!   than a blocking thread per connection. wrk reports p50 and p99 (pooled over rounds as the mean
//!   weighted by requests); non-2xx answers and socket errors count as errors; the `client` CPU column is
//!   then wrk's (the children this process waited for), and tiny_http's CPU is this process's;
//! - with `--profile DIR`, one more forwarded phase after the rounds (counted in no table) with `perf record
//!   -F 999 -g` on the entry node and on the echo host (`bench::profile`): `app-forwarded-entry.svg` and
//!   `app-forwarded-host.svg` (flame graphs), `.folded` and `.perf.data` in DIR, and for each node its
//!   samples by thread group and its top 15 functions by self time after the table. `cargo xtask bench app
//!   --profile` passes `target/bench/profile` and runs an `aetherd` built with frame pointers;
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
//! - local app path: the app port's I/O thread reads and parses (httparse) and, after its turn, runs the
//!   call itself (a route lookup, encoding the request for the slice ABI, the call, the JSON answer) and
//!   writes the answer: no wake-up, no switch; a watch thread hands the port to a new I/O thread when a call
//!   holds it (and answers 504 past the deadline). ~+3-5 µs over nginx, so ~0.85-1x nginx (target >= 0.75x).
//!   Before calls ran on the I/O thread, each went to a worker and back (two wake-ups): ~0.5-0.65x nginx.
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
//! With calls on the I/O thread (2026-12-02, `--wrk --rounds 3 --seconds 4 --hung 4`, against the build before
//! in the same rounds): local 79.4k req/s, 0.94x nginx (the build before: 48.0k, 0.56x), server CPU 12.6 µs and
//! 0.1 context switches per request (25.4 µs, 0.9), p50 0.63x and p99 0.67x the build before's; with 4 hung
//! calls in flight 60.6k (0.77x the plain local case: each hung call that lands on the I/O thread is taken over
//! and sends calls to the workers until its deadline).
//!
//! With `--hung 100` (2026-11-30, 2 cores, 3 rounds of 4 s): local echo 22.6k req/s, p99 18.2 ms; with the
//! 100 hung calls 22.2k req/s, p99 16.6 ms (median ratios of the rounds 1.01x req/s, 0.95x p99, 1.22x p50).
//! In the first round all 100 calls hung (64 on the host, the host's bulkhead sending the rest to the other
//! nodes' instances); after their deadline the instances are saturated and every further call is refused at
//! once, so a round costs the host ~110 refusals a second and no thread.

mod app_path;
mod baselines;
mod cluster;
mod control;
mod hung;
mod load;
mod report;

use app_path::{bench_app, Extras};
use baselines::{Nginx, TinyHttp};
use bench::{which, Client, SelfSigned};
use cluster::start_cluster;
use control::{deploy_times, heal_times, Timings};
use report::{report, Results};
use std::path::PathBuf;
use std::time::Duration;

/// Keep-alive connections of the load (`--connections`, 64 by default).
static CONNECTIONS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn concurrency() -> usize {
    CONNECTIONS.get().copied().unwrap_or(64)
}
const WARMUP: Duration = Duration::from_secs(1);
/// What `GET /echo/hello` answers when `echo` 1.0.0 runs on node-1 (every node id here has that length).
const ECHO_BODY: &str = r#"{"echo":"hello","version":"1.0.0","node":"node-1"}"#;
const ECHO_PATH: &str = "/echo/hello";
const ECHO_ARTIFACT: &str = "org.aether.examples:echo:1.0.0";
const ECHO_BLUEPRINT: &str =
    "name = \"bench-echo\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 1\n";
const DEMO_BLUEPRINT: &str = include_str!("../../../../blueprints/demo.toml");
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
    /// Drive the load with this `wrk` instead of the in-process clients.
    wrk: Option<PathBuf>,
    /// Profile the entry node and the host during one more forwarded phase, into this folder.
    profile: Option<PathBuf>,
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
    let wrk = options.wrk.is_some();
    let results = Results { cores, seconds, rounds: options.rounds, wrk, app, deploy_echo, deploy_demo, heal };
    report(&results, options.json.as_deref());
}

fn parse_args() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let usage =
        "usage: app --aetherd PATH --repo DIR [--baseline-aetherd PATH] [--tls] [--hung N] [--poll-management] \
                 [--wrk] [--profile DIR] [--json FILE] [--seconds N] [--rounds N] [--runs N] [--connections N]";
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
    let _ = CONNECTIONS.set(number("--connections", 64) as usize);
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
        wrk: args.iter().any(|a| a == "--wrk").then(|| {
            which("wrk").unwrap_or_else(|| {
                eprintln!("--wrk: wrk is not installed (apt-get install wrk)");
                std::process::exit(2);
            })
        }),
        profile: value("--profile").map(PathBuf::from),
    }
}
