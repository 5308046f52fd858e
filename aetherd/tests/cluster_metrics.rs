//! Metrics over real processes: calls show up in `/api/metrics`, `/metrics` and `/api/invocation-metrics`
//! on every node and their counters rise with traffic; `/metrics` passes `promtool check metrics` (when
//! promtool is installed); a slow call is listed with the request id its client sent, also when the call
//! was forwarded; `X-Request-Id` comes back on every answer; the history of a surviving node goes on
//! through a leader kill.

use devcluster::{http, http_with, wait_for, LocalCluster};
use serde_json::Value;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const ECHO: &str = "org.aether.examples:echo:1.0.0";
const FAULTY: &str = "org.aether.examples:faulty:1.0.0";

const BLUEPRINT: &str = r#"name = "watched"
[[slices]]
artifact = "org.aether.examples:echo:1.0.0"
instances = 1
[[slices]]
artifact = "org.aether.examples:faulty:1.0.0"
instances = 1
"#;

fn start(name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let c = devcluster::start_with_examples(3, &format!("metrics-{name}"), aetherd, SETTLE).unwrap();
    c
}

fn get(c: &LocalCluster, node: usize, path: &str) -> Value {
    http(c.nodes[node].management, "GET", path, b"").map(|r| r.json()).unwrap_or(Value::Null)
}

/// The node that runs `artifact`'s one instance.
fn host_of(c: &LocalCluster, artifact: &str) -> Option<usize> {
    let slices = get(c, 0, "/api/slices");
    let node = slices["slices"].as_array()?.iter().find(|s| s["artifact"] == artifact && s["state"] == "ACTIVE")?;
    let id = node["node"].as_str()?;
    c.nodes.iter().position(|n| n.id == id)
}

fn deploy(c: &LocalCluster) -> (usize, usize) {
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", BLUEPRINT.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let serving = |n: usize| {
        let echo = http(c.nodes[n].app, "GET", "/echo/up", b"").is_ok_and(|r| r.status == 200);
        echo && http(c.nodes[n].app, "GET", "/faulty/ok", b"").is_ok_and(|r| r.status == 200)
    };
    wait_for(SETTLE, || (0..3).all(serving) && host_of(c, ECHO).is_some() && host_of(c, FAULTY).is_some())
        .unwrap_or_else(|_| panic!("not deployed: {}", get(c, 0, "/api/slices")));
    (host_of(c, ECHO).unwrap_or(0), host_of(c, FAULTY).unwrap_or(0))
}

/// Calls of `method` of `artifact` cluster-wide, as `node` reports them.
fn cluster_calls(c: &LocalCluster, node: usize, artifact: &str, method: &str) -> u64 {
    let answer = get(c, node, &format!("/api/invocation-metrics?artifact={artifact}&method={method}"));
    answer["invocations"].as_array().and_then(|l| l.first()).and_then(|m| m["calls"].as_u64()).unwrap_or(0)
}

/// The value of the Prometheus series that starts with `series` (name and labels) on `node`.
fn prometheus_value(c: &LocalCluster, node: usize, series: &str) -> Option<f64> {
    let text = http(c.nodes[node].management, "GET", "/metrics", b"").ok()?.text();
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok())
}

fn promtool_check(text: &str) {
    let Ok(mut child) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    else {
        println!("promtool is not installed: skipping `promtool check metrics` (Debian package `prometheus`)");
        return;
    };
    use std::io::Write;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
}

#[test]
fn traffic_shows_in_every_metrics_route_and_slow_calls_keep_their_request_id() {
    let c = start("traffic");
    let (echo_host, faulty_host) = deploy(&c);
    let elsewhere = (faulty_host + 1) % 3;

    // Every node sends its summary: each node soon holds all three.
    let all_three = |n: usize| get(&c, n, "/api/metrics")["nodes"].as_array().is_some_and(|l| l.len() == 3);
    wait_for(Duration::from_secs(10), || (0..3).all(all_three)).unwrap();

    // Traffic through every node; calls reaching echo from the other two are forwarded to its host.
    let before = cluster_calls(&c, 0, ECHO, "echo");
    for i in 0..30 {
        let r = http(c.nodes[i % 3].app, "GET", &format!("/echo/m{i}"), b"").unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let id = r.header("x-request-id").unwrap_or_default();
        assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()), "a fresh id: '{id}'");
    }
    for n in 0..3 {
        let risen = wait_for(Duration::from_secs(5), || cluster_calls(&c, n, ECHO, "echo") >= before + 30);
        assert!(risen.is_ok(), "node {n}: {}", get(&c, n, "/api/invocation-metrics"));
    }
    let listed = get(&c, elsewhere, &format!("/api/invocation-metrics?artifact={ECHO}"));
    let echo = &listed["invocations"][0];
    assert_eq!(echo["nodes"][0]["node"].as_str(), Some(c.nodes[echo_host].id.as_str()), "{listed}");
    assert!(echo["latency_us"]["p50"].as_u64().is_some_and(|p| p > 0), "{listed}");
    assert!(echo["latency_us"]["max"].as_u64() >= echo["latency_us"]["p99"].as_u64(), "{listed}");
    assert_eq!(http(c.nodes[echo_host].app, "POST", "/echo", b"body").unwrap().status, 200);
    let both = || get(&c, 0, "/api/invocation-metrics?artifact=org.aether.examples:echo");
    let listed_both = wait_for(Duration::from_secs(5), || both()["invocations"].as_array().map(Vec::len) == Some(2));
    assert!(listed_both.is_ok(), "echo and echo_body by G:A: {}", both());

    // /api/metrics: the host's own call counter, its peers' traffic, consensus progress.
    let metrics = get(&c, elsewhere, "/api/metrics");
    let nodes = metrics["nodes"].as_array().unwrap();
    let host = nodes.iter().find(|n| n["node"] == c.nodes[echo_host].id.as_str()).unwrap();
    assert!(host["invocations"]["calls"].as_u64() >= Some(30), "{host}");
    assert_eq!(host["peers"].as_array().map(Vec::len), Some(2), "{host}");
    assert!(host["peers"][0]["frames_in"].as_u64() > Some(0) && host["peers"][0]["bytes_out"].as_u64() > Some(0));
    assert!(host["consensus"]["applied_slot"].as_u64() > Some(0), "{host}");
    assert!(host["rss_bytes"].as_u64() > Some(1 << 20) && host["threads"].as_u64() > Some(4), "{host}");
    assert!(host["connections"]["cluster"].as_u64() >= Some(2), "{host}");

    // /metrics on the host: its counter rises with traffic; the exposition is valid.
    let series = format!("aether_invocations_total{{artifact=\"{ECHO}\",method=\"echo\"}}");
    let counted = prometheus_value(&c, echo_host, &series).unwrap_or(0.0);
    for i in 0..10 {
        assert_eq!(http(c.nodes[echo_host].app, "GET", &format!("/echo/more{i}"), b"").unwrap().status, 200);
    }
    let rose = wait_for(Duration::from_secs(5), || prometheus_value(&c, echo_host, &series) >= Some(counted + 10.0));
    assert!(rose.is_ok(), "{series} stayed near {counted}");
    let exposition = http(c.nodes[echo_host].management, "GET", "/metrics", b"").unwrap();
    assert!(exposition.header("content-type").is_some_and(|t| t.starts_with("text/plain; version=0.0.4")));
    promtool_check(&exposition.text());

    // A slow call sent to a node without faulty is forwarded; its entry keeps the client's request id.
    let sent_id = "slow-call-7f3a";
    let slow = http_with(c.nodes[elsewhere].app, "GET", "/faulty/slow/700", &[("X-Request-Id", sent_id)], b"").unwrap();
    assert_eq!((slow.status, slow.header("x-request-id")), (200, Some(sent_id)), "{}", slow.text());
    let listed_with_id = |n: usize| {
        let answer = get(&c, n, "/api/invocation-metrics/slow?limit=10");
        answer["slow"].as_array().and_then(|l| l.iter().find(|s| s["request_id"] == sent_id).cloned())
    };
    for n in 0..3 {
        let found = wait_for(Duration::from_secs(5), || listed_with_id(n).is_some());
        assert!(found.is_ok(), "node {n}: {}", get(&c, n, "/api/invocation-metrics/slow"));
    }
    let entry = listed_with_id((faulty_host + 2) % 3).unwrap_or_default();
    assert_eq!(entry["node"].as_str(), Some(c.nodes[faulty_host].id.as_str()), "{entry}");
    assert_eq!((entry["artifact"].as_str(), entry["method"].as_str()), (Some(FAULTY), Some("slow")));
    assert!(entry["duration_us"].as_u64() >= Some(700_000) && entry["status"] == 200, "{entry}");
    assert_eq!(get(&c, 0, "/api/invocation-metrics/slow")["threshold_ms"], 500);
    let logged = c.log(faulty_host);
    let line = logged.lines().find(|l| l.contains("slow call:") && l.contains(FAULTY));
    assert!(
        line.is_some_and(|l| l.ends_with(&format!(" req={sent_id}"))),
        "the host's log line names the request: {line:?}"
    );

    // Request ids: a sane one comes back as sent, a bad one is replaced, errors carry one too.
    let kept = http_with(c.nodes[0].app, "GET", "/echo/x", &[("X-Request-Id", "abc-DEF_1.2")], b"").unwrap();
    assert_eq!(kept.header("x-request-id"), Some("abc-DEF_1.2"));
    let replaced = http_with(c.nodes[0].app, "GET", "/echo/x", &[("X-Request-Id", &"z".repeat(200))], b"").unwrap();
    assert_eq!(replaced.header("x-request-id").map(str::len), Some(16));
    let missing = http_with(c.nodes[1].app, "GET", "/no/route", &[("X-Request-Id", "r-404")], b"").unwrap();
    assert_eq!((missing.status, missing.header("x-request-id")), (404, Some("r-404")));

    // Bad queries are client mistakes.
    for path in [
        "/api/metrics/history?range=3d",
        "/api/invocation-metrics?artifact=a:b:c:d",
        "/api/invocation-metrics/slow?limit=0",
    ] {
        let r = http(c.nodes[0].management, "GET", path, b"").unwrap();
        assert_eq!((r.status, r.json()["error"].as_str()), (400, Some("bad_request")), "{path}: {}", r.text());
    }
}

/// The largest gap between consecutive points of `node`'s 1 s history as `from` holds it, and the
/// newest point's time.
fn history_of(c: &LocalCluster, from: usize, node: &str) -> (u64, u64, usize) {
    let answer = get(c, from, "/api/metrics/history?range=5m");
    let times: Vec<u64> = answer["nodes"][node]
        .as_array()
        .map(|l| l.iter().filter_map(|p| p["time_ms"].as_u64()).collect())
        .unwrap_or_default();
    let gap = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    (gap, times.last().copied().unwrap_or(0), times.len())
}

#[test]
fn history_goes_on_through_a_leader_kill() {
    let mut c = start("history");
    let leader = wait_for(SETTLE, || get(&c, 0, "/api/status")["leader"].is_string());
    assert!(leader.is_ok(), "no leader: {}", get(&c, 0, "/api/status"));
    let leader_id = get(&c, 0, "/api/status")["leader"].as_str().unwrap_or_default().to_string();
    let killed = c.nodes.iter().position(|n| n.id == leader_id).unwrap();
    let survivor = (killed + 1) % 3;
    let survivor_id = c.nodes[survivor].id.clone();
    wait_for(Duration::from_secs(10), || history_of(&c, survivor, &survivor_id).2 >= 5).unwrap();
    let (_, _, before) = history_of(&c, survivor, &leader_id);
    assert!(before >= 3, "the leader's own history reached the survivor: {before} points");
    c.kill(killed);
    let killed_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    std::thread::sleep(Duration::from_secs(6));
    for node in (0..3).filter(|n| *n != killed) {
        let id = c.nodes[node].id.clone();
        let (gap, newest, points) = history_of(&c, survivor, &id);
        assert!(
            newest > killed_at + 3_000,
            "{id}'s history on {survivor_id} stopped at {newest} (kill at {killed_at})"
        );
        assert!(gap <= 3_000, "{id}'s history on {survivor_id} has a gap of {gap} ms over {points} points");
    }
    let (_, _, kept) = history_of(&c, survivor, &leader_id);
    assert!(kept >= before, "the killed leader's history stays: {kept} points, {before} before");
    let new_leader = || get(&c, survivor, "/api/metrics")["leader"].as_str().is_some_and(|l| l != leader_id);
    let elected = wait_for(SETTLE, new_leader);
    assert!(elected.is_ok(), "no new leader: {}", get(&c, survivor, "/api/metrics"));
}
