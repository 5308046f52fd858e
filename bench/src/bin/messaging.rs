//! `cargo xtask bench messaging`: publish-to-deliver latency and delivered messages per second on a 3-node
//! cluster of release builds, for competing delivery (topic `work`) and broadcast delivery (topic `news`), at
//! 1,000 messages per second (paced) and at full speed.
//!
//! Setup: the `inbox` example, one instance per node (journal off: deliveries are kept in memory only).
//! Three publishers, one per node, each on a keep-alive connection to its node's app port, publish through
//! the inbox's `POST /inbox/publish/{topic}` (so each node's instance is a publisher of its own, as slices
//! publish in practice). A message's body starts with its send time (wall clock, microseconds, taken just
//! before the request is written); the instance that receives it records its receive time on the same host's
//! clock, and the bench reads those back (`GET /inbox/received/{topic}` on each node's app port). Latency is
//! receive minus send: it includes the publish (an HTTP request, the consensus write of the message) and the
//! delivery (the node's store watch, the delivery engine, the call to the instance). For broadcast every
//! instance's delivery counts. Throughput is messages delivered to every subscriber / (last delivery - first
//! send). Each case runs `--rounds` times; the table shows medians of the rounds.
//!
//! Envelope: a publish is one consensus write (~0.3-0.4 ms at one caller on loopback, see "Slice state"
//! costs in ARCHITECTURE.md); a delivery is a watch hand-off on the leader's loop turn plus a forwarded call
//! (~0.1-0.2 ms) unless the instance is local. Expect p50 around 1 ms at 1,000/s; at full speed the lanes
//! (one message in flight per publisher and subscription) bound competing throughput to about
//! 3 / (delivery round trip), broadcast to 1 / (round trip) per node.

use bench::{percentile, Conn, Request};
use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const USAGE: &str =
    "usage: messaging --aetherd PATH --repo PATH [--messages N] [--full-messages N] [--rounds N] [--json FILE]";
const BLUEPRINT: &str =
    "name = \"msgbench\"\n[[slices]]\nartifact = \"org.aether.examples:inbox:1.0.0\"\ninstances = 3\n";
const PACED_PER_S: f64 = 1_000.0;
/// How long the deliveries of one case may take after its last publish.
const DRAIN: Duration = Duration::from_secs(60);

struct Options {
    aetherd: String,
    repo: String,
    paced_messages: usize,
    full_messages: usize,
    rounds: usize,
    json: Option<PathBuf>,
}

/// One case: a topic at a pace (`None`: as fast as the publishers go).
#[derive(Clone, Copy)]
struct Case {
    topic: &'static str,
    delivery: &'static str,
    per_s: Option<f64>,
}

/// One delivery as an instance reported it.
struct Delivered {
    body: String,
    at_us: u64,
    node: String,
}

/// What one round of a case measured.
#[derive(Clone, Debug, Default)]
struct Round {
    published: usize,
    deliveries: usize,
    duplicates: usize,
    publish_per_s: f64,
    delivered_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

fn main() {
    let options = parse(&std::env::args().skip(1).collect::<Vec<_>>()).unwrap_or_else(|e| {
        eprintln!("messaging: {e}\n{USAGE}");
        std::process::exit(2);
    });
    let dir = std::env::temp_dir().join(format!("aether-bench-messaging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(&options.aetherd));
    spec.extra_args = vec!["--repo".into(), options.repo.clone()];
    let cluster = LocalCluster::start(spec).unwrap_or_else(|e| fail(&e));
    cluster.wait_ready(Duration::from_secs(30)).unwrap_or_else(|e| fail(&e));
    deploy(&cluster);
    let apps: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.app).collect();
    for (topic, all) in [("work", false), ("news", true)] {
        warm_up(&apps, topic, all);
    }

    let cases = [
        Case { topic: "work", delivery: "competing", per_s: Some(PACED_PER_S) },
        Case { topic: "news", delivery: "broadcast", per_s: Some(PACED_PER_S) },
        Case { topic: "work", delivery: "competing", per_s: None },
        Case { topic: "news", delivery: "broadcast", per_s: None },
    ];
    let mut rows = Vec::new();
    println!(
        "{:<10} {:<10} {:>9} {:>11} {:>13} {:>9} {:>9} {:>9} {:>5}",
        "delivery", "pace", "messages", "publish/s", "delivered/s", "p50 ms", "p99 ms", "max ms", "dups"
    );
    for case in cases {
        let messages = if case.per_s.is_some() { options.paced_messages } else { options.full_messages };
        let rounds: Vec<Round> = (0..options.rounds).map(|_| run_case(&apps, case, messages)).collect();
        let median = medians(&rounds);
        let pace = case.per_s.map_or("full".to_string(), |r| format!("{r:.0}/s"));
        println!(
            "{:<10} {:<10} {:>9} {:>11.0} {:>13.0} {:>9.3} {:>9.3} {:>9.3} {:>5}",
            case.delivery,
            pace,
            messages,
            median.publish_per_s,
            median.delivered_per_s,
            median.p50_us / 1e3,
            median.p99_us / 1e3,
            median.max_us / 1e3,
            median.duplicates
        );
        rows.push(json!({
            "delivery": case.delivery, "topic": case.topic, "pace_per_s": case.per_s, "messages": messages,
            "rounds": rounds.iter().map(round_json).collect::<Vec<_>>(), "median": round_json(&median),
        }));
    }
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&json!({ "rounds": options.rounds, "cases": rows }));
        if let Err(e) = std::fs::write(path, text.unwrap_or_default()) {
            fail(&format!("{}: {e}", path.display()));
        }
    }
    println!("target: delivery p99 under 2 ms at 1,000 messages/s (loopback, 3 nodes)");
}

fn parse(args: &[String]) -> Result<Options, String> {
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let number = |name: &str, default: usize| match value(name).map(|s| s.parse::<usize>()) {
        None => Ok(default),
        Some(Ok(n)) if n > 0 => Ok(n),
        Some(_) => Err(format!("{name} wants a positive whole number")),
    };
    Ok(Options {
        aetherd: value("--aetherd").ok_or("--aetherd is required")?,
        repo: value("--repo").ok_or("--repo is required")?,
        paced_messages: number("--messages", 3_000)?,
        full_messages: number("--full-messages", 5_000)?,
        rounds: number("--rounds", 3)?,
        json: value("--json").map(PathBuf::from),
    })
}

fn deploy(cluster: &LocalCluster) {
    let posted = http(cluster.nodes[0].management, "POST", "/api/blueprints", BLUEPRINT.as_bytes());
    if !posted.as_ref().is_ok_and(|r| r.status == 201) {
        fail(&format!("blueprint refused: {:?}", posted.map(|r| r.text())));
    }
    let serving = |a: &SocketAddr| http(*a, "GET", "/inbox/seen", b"").is_ok_and(|r| r.status == 200);
    let apps: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.app).collect();
    if wait_for(Duration::from_secs(60), || apps.iter().all(serving)).is_err() {
        fail("inbox is not serving on every node within 60 s");
    }
}

/// Publishes until a message reaches one instance (`all`: every instance), so the measured cases start with
/// delivery running.
fn warm_up(apps: &[SocketAddr], topic: &str, all: bool) {
    let path = format!("/inbox/publish/{topic}");
    let delivered = |a: &SocketAddr| received(*a, topic, 0).is_some_and(|(total, _)| total > 0);
    let ok = wait_for(Duration::from_secs(60), || {
        let _ = http(apps[0], "POST", &path, b"0:warm-up");
        std::thread::sleep(Duration::from_millis(200));
        if all {
            apps.iter().all(delivered)
        } else {
            apps.iter().any(delivered)
        }
    });
    if ok.is_err() {
        fail(&format!("no delivery on topic {topic} within 60 s: is messaging running?"));
    }
}

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// One round: clears the instances' records, publishes `messages` from one publisher per node, waits for
/// every delivery, and reads the receive times back.
fn run_case(apps: &[SocketAddr], case: Case, messages: usize) -> Round {
    for app in apps {
        let _ = http(*app, "DELETE", "/inbox/seen", b"");
    }
    let started = Instant::now();
    let first_send_us = now_us();
    let threads: Vec<_> = apps
        .iter()
        .enumerate()
        .map(|(p, &app)| {
            let share = messages / apps.len() + usize::from(p < messages % apps.len());
            let per_s = case.per_s.map(|r| r / apps.len() as f64);
            std::thread::spawn(move || publish_share(app, case.topic, p, share, per_s))
        })
        .collect();
    let published: usize = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    let publish_s = started.elapsed().as_secs_f64();
    let expected = if case.delivery == "broadcast" { published * apps.len() } else { published };
    // Poll only the counts while deliveries may still run, so reading them back does not load the nodes.
    let totals = || apps.iter().filter_map(|a| received(*a, case.topic, 0)).map(|(total, _)| total).sum::<u64>();
    let _ = wait_for(DRAIN, || {
        std::thread::sleep(Duration::from_millis(100));
        totals() >= expected as u64
    });
    let got: Vec<_> = apps.iter().filter_map(|a| received(*a, case.topic, usize::MAX)).flat_map(|(_, d)| d).collect();
    if distinct(&got, case.delivery == "broadcast") < expected {
        eprintln!(
            "messaging: {} of {expected} deliveries of {} within {DRAIN:?}",
            distinct(&got, case.delivery == "broadcast"),
            case.topic
        );
    }
    measure(&got, published, expected, first_send_us, publish_s)
}

/// Publishes `count` messages through `app`, paced at `per_s` when given; answers how many were accepted.
fn publish_share(app: SocketAddr, topic: &str, publisher: usize, count: usize, per_s: Option<f64>) -> usize {
    let Ok(mut conn) = Conn::open(app, None) else { return 0 };
    let started = Instant::now();
    let mut accepted = 0;
    for seq in 0..count {
        if let Some(rate) = per_s {
            let due = started + Duration::from_secs_f64(seq as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let body = format!("{}:p{publisher}-{seq}", now_us()).into_bytes();
        let request = Request { method: "POST", path: format!("/inbox/publish/{topic}"), body };
        match conn.send(&request, "") {
            Ok(202) => accepted += 1,
            Ok(status) => eprintln!("messaging: publish answered {status}"),
            Err(e) => {
                eprintln!("messaging: publish failed: {e}");
                match Conn::open(app, None) {
                    Ok(fresh) => conn = fresh,
                    Err(_) => return accepted,
                }
            }
        }
    }
    accepted
}

/// `(total, deliveries)` one node's instance received on `topic`, at most `limit` listed.
fn received(app: SocketAddr, topic: &str, limit: usize) -> Option<(u64, Vec<Delivered>)> {
    let mut conn = Conn::open(app, None).ok()?;
    let path = format!("/inbox/received/{topic}?limit={}", limit.min(1_000_000));
    let request = Request { method: "GET", path, body: Vec::new() };
    let (status, body) = conn.exchange(&request, "").ok()?;
    if status != 200 {
        return None;
    }
    let answer: Value = serde_json::from_slice(&body).ok()?;
    let node = answer["node"].as_str().unwrap_or_default().to_owned();
    let deliveries = answer["deliveries"].as_array()?;
    let list = deliveries
        .iter()
        .filter_map(|d| {
            Some(Delivered { body: d["body"].as_str()?.to_owned(), at_us: d["at_us"].as_u64()?, node: node.clone() })
        })
        .filter(|d| !d.body.ends_with(":warm-up"))
        .collect();
    Some((answer["total"].as_u64()?, list))
}

/// Distinct deliveries: messages (competing) or (message, node) pairs (broadcast).
fn distinct(got: &[Delivered], per_node: bool) -> usize {
    let keys: std::collections::HashSet<(&str, &str)> =
        got.iter().map(|d| (d.body.as_str(), if per_node { d.node.as_str() } else { "" })).collect();
    keys.len()
}

fn measure(got: &[Delivered], published: usize, expected: usize, first_send_us: u64, publish_s: f64) -> Round {
    let mut latencies: Vec<u64> = got
        .iter()
        .filter_map(|d| {
            let sent: u64 = d.body.split(':').next()?.parse().ok()?;
            Some(d.at_us.saturating_sub(sent))
        })
        .collect();
    latencies.sort_unstable();
    let last_us = got.iter().map(|d| d.at_us).max().unwrap_or(first_send_us);
    let span_s = (last_us.saturating_sub(first_send_us) as f64 / 1e6).max(1e-6);
    let deliveries = got.len();
    Round {
        published,
        deliveries,
        duplicates: deliveries.saturating_sub(expected),
        publish_per_s: published as f64 / publish_s.max(1e-6),
        delivered_per_s: published as f64 / span_s,
        p50_us: percentile(&latencies, 50.0),
        p99_us: percentile(&latencies, 99.0),
        max_us: latencies.last().copied().unwrap_or(0) as f64,
    }
}

fn medians(rounds: &[Round]) -> Round {
    let median = |f: fn(&Round) -> f64| {
        let mut values: Vec<f64> = rounds.iter().map(f).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
    };
    Round {
        published: rounds.first().map_or(0, |r| r.published),
        deliveries: median(|r| r.deliveries as f64) as usize,
        duplicates: median(|r| r.duplicates as f64) as usize,
        publish_per_s: median(|r| r.publish_per_s),
        delivered_per_s: median(|r| r.delivered_per_s),
        p50_us: median(|r| r.p50_us),
        p99_us: median(|r| r.p99_us),
        max_us: median(|r| r.max_us),
    }
}

fn round_json(r: &Round) -> Value {
    json!({
        "published": r.published, "deliveries": r.deliveries, "duplicates": r.duplicates,
        "publish_per_s": r.publish_per_s, "delivered_per_s": r.delivered_per_s,
        "p50_us": r.p50_us, "p99_us": r.p99_us, "max_us": r.max_us,
    })
}

fn fail(why: &str) -> ! {
    eprintln!("messaging: {why}");
    std::process::exit(1);
}
