//! Slices fail alone on the data path, over real processes: a slice whose calls hang exhausts only its
//! own bulkhead (its permits and queue), never the node's app port, forwarded-call threads or worker
//! pool, and deadlines count from the moment the client's request arrived, also across nodes.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);
const FAULTY: &str = "org.aether.examples:faulty:1.0.0";
/// The call deadline the nodes run with, so hung calls give up quickly.
const DEADLINE_MS: u64 = 1000;
const HANG_CALLS: usize = 200;

fn blueprint(faulty_extra: &str) -> String {
    format!(
        "name = \"bulkheads\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 3\n\
         [[slices]]\nartifact = \"{FAULTY}\"\ninstances = 1\n{faulty_extra}"
    )
}

/// A 3-node cluster running `echo` everywhere and one `faulty`; returns it and the index of faulty's node.
fn start(name: &str, faulty_extra: &str) -> (LocalCluster, usize) {
    let repo = example_slices_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("aether-bulkheads-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    spec.env.push(("AETHER_CALL_DEADLINE_MS".into(), DEADLINE_MS.to_string()));
    let c = LocalCluster::start(spec).unwrap();
    wait_for(SETTLE, || (0..3).all(|i| c.health(i).is_some_and(|h| h["ready"] == true))).unwrap();
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", blueprint(faulty_extra).as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let routed = wait_for(SETTLE, || {
        (0..3).all(|n| {
            let ok = |path| http(c.nodes[n].app, "GET", path, b"").is_ok_and(|r| r.status == 200);
            ok("/echo/up") && ok("/faulty/ok")
        })
    });
    assert!(routed.is_ok(), "not every node serves echo and faulty");
    let faulty_node = faulty_node(&c).expect("faulty is placed");
    let at = c.nodes.iter().position(|n| n.id == faulty_node).unwrap();
    (c, at)
}

fn slices(c: &LocalCluster) -> Value {
    http(c.nodes[0].management, "GET", "/api/slices", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn faulty_node(c: &LocalCluster) -> Option<String> {
    let slices = slices(c);
    let faulty = slices["slices"].as_array()?.iter().find(|s| s["artifact"] == FAULTY)?.clone();
    faulty["node"].as_str().map(str::to_owned)
}

/// `HANG_CALLS` concurrent `GET /faulty/hang` on `app`; returns their statuses, how many 503s carried a
/// `Retry-After`, and the slowest answer.
fn hang_burst(app: SocketAddr) -> std::thread::JoinHandle<(Vec<u16>, usize, Duration)> {
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..HANG_CALLS)
            .map(|_| {
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let answer = http(app, "GET", "/faulty/hang", b"");
                    let status = answer.as_ref().map(|r| r.status).unwrap_or(0);
                    let retry_after =
                        answer.as_ref().is_ok_and(|r| r.status == 503 && r.header("retry-after").is_some());
                    (status, retry_after, started.elapsed())
                })
            })
            .collect();
        let answers: Vec<(u16, bool, Duration)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let slowest = answers.iter().map(|a| a.2).max().unwrap_or_default();
        let retry_after = answers.iter().filter(|a| a.1).count();
        (answers.into_iter().map(|a| a.0).collect(), retry_after, slowest)
    })
}

/// Times `GET /echo/x` on `app` one after another until `stop`; returns each call's status and latency.
fn echo_probe(app: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<(u16, Duration)>> {
    std::thread::spawn(move || {
        let mut calls = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let status = http(app, "GET", "/echo/x", b"").map(|r| r.status).unwrap_or(0);
            calls.push((status, started.elapsed()));
            std::thread::sleep(Duration::from_millis(5));
        }
        calls
    })
}

fn percentile(latencies: &[Duration], p: f64) -> Duration {
    let mut sorted = latencies.to_vec();
    sorted.sort();
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(at).copied().unwrap_or_default()
}

/// Hang calls through `hang_via` while echo is timed on every node in `echo_at`; then every route answers.
fn echo_answers_through_a_hang_burst(c: &LocalCluster, hang_via: usize, echo_at: &[usize]) {
    let stop = Arc::new(AtomicBool::new(false));
    let probes: Vec<_> = echo_at.iter().map(|&n| (n, echo_probe(c.nodes[n].app, stop.clone()))).collect();
    let burst = hang_burst(c.nodes[hang_via].app);
    // The burst, its deadlines, and some time after them.
    std::thread::sleep(Duration::from_millis(DEADLINE_MS * 2 + 500));
    stop.store(true, Ordering::Relaxed);
    let (statuses, retry_after, slowest) = burst.join().unwrap();
    for (n, probe) in probes {
        let calls = probe.join().unwrap();
        let latencies: Vec<Duration> = calls.iter().map(|c| c.1).collect();
        let (median, p99, max) =
            (percentile(&latencies, 0.5), percentile(&latencies, 0.99), percentile(&latencies, 1.0));
        eprintln!(
            "echo on node {n} during the hang burst: {} calls, median {median:?}, p99 {p99:?}, max {max:?}",
            calls.len()
        );
        assert!(calls.len() >= 10, "echo on node {n} answered only {} calls", calls.len());
        assert!(
            calls.iter().all(|c| c.0 == 200),
            "echo on node {n} failed: {:?}",
            calls.iter().filter(|c| c.0 != 200).collect::<Vec<_>>()
        );
        assert!(median < Duration::from_millis(100), "echo on node {n}: median {median:?}");
        assert!(max < Duration::from_secs(1), "echo on node {n}: slowest {max:?}");
    }
    let mut counts = std::collections::BTreeMap::new();
    for s in &statuses {
        *counts.entry(*s).or_insert(0) += 1;
    }
    eprintln!("hang calls answered {counts:?}, the slowest after {slowest:?}");
    assert!(statuses.iter().all(|s| *s == 503 || *s == 504), "hang calls answered {counts:?}");
    let refused = statuses.iter().filter(|s| **s == 503).count();
    assert!(refused > HANG_CALLS / 2, "the bulkhead refused only {refused} of {HANG_CALLS}: {counts:?}");
    assert_eq!(retry_after, refused, "every 503 says when to retry");
    assert!(slowest < Duration::from_millis(DEADLINE_MS + 1500), "a hang call waited {slowest:?}");
    // After the burst every route answers again, on every node, and quickly.
    for n in 0..3 {
        let echo = http(c.nodes[n].app, "GET", "/echo/after", b"").unwrap();
        assert_eq!(echo.status, 200, "node {n}: {}", echo.text());
        let started = Instant::now();
        let ok = http(c.nodes[n].app, "GET", "/faulty/ok", b"").unwrap();
        assert!(ok.status == 200 || ok.status == 503, "node {n}: /faulty/ok answered {}: {}", ok.status, ok.text());
        assert!(started.elapsed() < Duration::from_millis(500), "node {n}: /faulty/ok took {:?}", started.elapsed());
    }
}

/// The health `/api/slices` gives the instance of `artifact`.
fn health_of(c: &LocalCluster, artifact: &str) -> Option<String> {
    let slices = slices(c);
    let item = slices["slices"].as_array()?.iter().find(|s| s["artifact"] == artifact)?.clone();
    item["health"].as_str().map(str::to_owned)
}

#[test]
fn echo_keeps_answering_while_a_hung_slice_on_its_node_takes_200_calls() {
    let (c, at) = start("local", "");
    assert_eq!(health_of(&c, FAULTY).as_deref(), Some("ok"));
    echo_answers_through_a_hang_burst(&c, at, &[at]);
    // Every permit of faulty is held by a hung call: reported, while the node itself stays ready.
    let reported = wait_for(Duration::from_secs(5), || health_of(&c, FAULTY).as_deref() == Some("saturated"));
    assert!(reported.is_ok(), "faulty is not reported saturated: {}", slices(&c));
    assert_eq!(health_of(&c, "org.aether.examples:echo:1.0.0").as_deref(), Some("ok"));
    for n in 0..3 {
        let ready = http(c.nodes[n].management, "GET", "/health/ready", b"").unwrap();
        assert_eq!(ready.status, 200, "node {n}: {}", ready.text());
    }
}

#[test]
fn echo_keeps_answering_while_200_hung_calls_are_forwarded_to_another_node() {
    let (c, at) = start("forwarded", "");
    let via = (at + 1) % 3;
    echo_answers_through_a_hang_burst(&c, via, &[via, at]);
}

fn count_of(c: &LocalCluster, at: usize, method: &str) -> i64 {
    let count = http(c.nodes[at].app, "GET", "/faulty/count", b"").unwrap();
    assert_eq!(count.status, 200, "{}", count.text());
    count.json()[method].as_i64().unwrap_or(-1)
}

#[test]
fn a_forwarded_call_queued_past_its_deadline_never_runs() {
    // One permit: a slow call holds it, and a second call waits in the bulkhead queue of faulty's node.
    let (c, at) = start("queued", "concurrency = 1\n");
    let via = (at + 1) % 3;
    let slow_before = count_of(&c, at, "slow");
    let app = c.nodes[via].app;
    let holder = std::thread::spawn(move || http(app, "GET", "/faulty/slow/1500", b"").map(|r| r.status).unwrap_or(0));
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let queued = http(app, "GET", "/faulty/slow/1", b"").unwrap();
    let waited = started.elapsed();
    assert_eq!(queued.status, 504, "{}", queued.text());
    assert!(waited < Duration::from_millis(DEADLINE_MS + 300), "the queued call was answered after {waited:?}");
    assert_eq!(holder.join().unwrap(), 504, "the slow call outlives its 1 s deadline");
    // The slow call returns 1.5 s after it started; only then is the permit free to count.
    let settled = wait_for(Duration::from_secs(5), || {
        http(c.nodes[at].app, "GET", "/faulty/count", b"").is_ok_and(|r| r.status == 200)
    });
    assert!(settled.is_ok(), "faulty never answered again");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(count_of(&c, at, "slow") - slow_before, 1, "only the call that held the permit ever ran");
}
