//! Version changes over real processes, under a steady client load through the app ports (keep-alive
//! connections, as real clients hold them): a blueprint re-posted with a new version moves every answer to
//! it without a failed request (make before break); a rollout splits traffic by its ratio, completes or
//! rolls back without a failed request; a chain of calls under a rollout never mixes versions; and a new
//! leader finishes a rollout the old one started.

use devcluster::{http, wait_for, KeepAlive, KeepAliveError, LocalCluster};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(40);
const ECHO: &str = "org.aether.examples:echo";
const ORDERS: &str = "org.aether.examples:orders";
const INVENTORY: &str = "org.aether.examples:inventory";
const PRICING: &str = "org.aether.examples:pricing";
/// Failures kept word for word in a tally (the rest are only counted).
const SAMPLES_MAX: usize = 10;

fn start(name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    devcluster::start_with_examples(3, &format!("rollout-{name}"), aetherd, SETTLE).unwrap()
}

fn echo_blueprint(version: &str, instances: u32) -> String {
    format!("name = \"svc\"\n[[slices]]\nartifact = \"{ECHO}:{version}\"\ninstances = {instances}\n")
}

/// orders (2 instances), inventory (3) and pricing (2), all 1.0.0, as blueprint `shop`.
fn shop_blueprint() -> String {
    format!(
        "name = \"shop\"\n\
         [[slices]]\nartifact = \"{INVENTORY}:1.0.0\"\ninstances = 3\n\
         [[slices]]\nartifact = \"{PRICING}:1.0.0\"\ninstances = 2\n\
         [[slices]]\nartifact = \"{ORDERS}:1.0.0\"\ninstances = 2\n\
         depends_on = [\"{INVENTORY}:1.0.0\", \"{PRICING}:1.0.0\"]\n"
    )
}

fn post_blueprint(c: &LocalCluster, via: usize, text: &str) {
    let posted = http(c.nodes[via].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
    assert!(posted.status == 201 || posted.status == 200, "{}", posted.text());
}

/// Every slice record as (artifact, node, state, desired), from node `via`'s view.
fn records(c: &LocalCluster, via: usize) -> Vec<(String, String, String, String)> {
    let Ok(r) = http(c.nodes[via].management, "GET", "/api/slices", b"") else { return Vec::new() };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let body = r.json();
    let slices = body["slices"].as_array().cloned().unwrap_or_default();
    slices.iter().map(|s| (text(&s["artifact"]), text(&s["node"]), text(&s["state"]), text(&s["desired"]))).collect()
}

fn count_active(c: &LocalCluster, via: usize, artifact: &str) -> usize {
    records(c, via).iter().filter(|(a, _, state, _)| a == artifact && state == "ACTIVE").count()
}

fn any_record_of(c: &LocalCluster, via: usize, artifact: &str) -> bool {
    records(c, via).iter().any(|(a, ..)| a == artifact)
}

/// Waits until `artifact` has `n` ACTIVE records and every node's app port answers `path` with 200.
fn wait_serving(c: &LocalCluster, artifact: &str, n: usize, method: &str, path: &str, body: &[u8]) {
    let active = wait_for(SETTLE, || count_active(c, 0, artifact) == n);
    assert!(active.is_ok(), "{artifact} not deployed: {:?}", records(c, 0));
    let served = wait_for(SETTLE, || {
        (0..c.nodes.len()).all(|i| http(c.nodes[i].app, method, path, body).is_ok_and(|r| r.status == 200))
    });
    assert!(served.is_ok(), "{path} is not served on every node: {:?}", records(c, 0));
}

/// The artifacts `GET /api/blueprints/{name}` lists.
fn blueprint_artifacts(c: &LocalCluster, via: usize, name: &str) -> Vec<String> {
    let Ok(r) = http(c.nodes[via].management, "GET", &format!("/api/blueprints/{name}"), b"") else {
        return Vec::new();
    };
    let body = r.json();
    let slices = body["slices"].as_array().cloned().unwrap_or_default();
    slices.iter().filter_map(|s| s["artifact"].as_str().map(str::to_owned)).collect()
}

/// Lines of every node's log that speak of `word` or of a warning or error, the last `n` of each node.
fn log_hints(c: &LocalCluster, word: &str, n: usize) -> String {
    let mut out = String::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let log = c.log(i);
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains(word) || l.contains("WARN") || l.contains("ERROR")).collect();
        out.push_str(&format!("--- {} ({}):\n", node.id, node.log.display()));
        for line in &lines[lines.len().saturating_sub(n)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// What the client threads sent and saw.
#[derive(Clone, Default, Debug)]
struct Tally {
    calls: u64,
    /// Answers (200) by the `version` they carry.
    versions: BTreeMap<String, u64>,
    /// Answers other than 200, and requests that got no answer.
    failures: u64,
    /// Of `failures`, those that got no answer (connect or connection error).
    connection_errors: u64,
    /// Order answers whose `version` and `inventory_version` differ.
    mixed: u64,
    /// Connections the clients opened (counted when a client thread ends).
    connections: u64,
    samples: Vec<String>,
}

impl Tally {
    fn sample(&mut self, what: String) {
        if self.samples.len() < SAMPLES_MAX {
            self.samples.push(what);
        }
    }

    /// Answers per version since `earlier`.
    fn versions_since(&self, earlier: &Tally) -> BTreeMap<String, u64> {
        let mut out = self.versions.clone();
        for (version, n) in out.iter_mut() {
            *n -= earlier.versions.get(version).copied().unwrap_or(0);
        }
        out.retain(|_, n| *n > 0);
        out
    }
}

/// Which request the client sends.
#[derive(Clone, Copy)]
enum Call {
    /// `GET /echo/x`, answered `{"version"}`.
    Echo,
    /// `POST /orders` for one pen, answered `{"version", "inventory_version"}`.
    Order,
}

impl Call {
    fn send(self, client: &mut KeepAlive) -> Result<devcluster::HttpResponse, KeepAliveError> {
        match self {
            Call::Echo => client.request("GET", "/echo/x", b""),
            Call::Order => client.request("POST", "/orders", br#"{"item": "pen", "qty": 1}"#),
        }
    }
}

/// Client threads, each holding one keep-alive connection to every node's app port and sending to them in
/// turn, until stopped or until `limit` requests were sent in all.
struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(c: &LocalCluster, call: Call, threads: usize, limit: Option<u64>) -> Load {
        Load::start_on(c, &(0..c.nodes.len()).collect::<Vec<_>>(), call, threads, limit)
    }

    fn start_on(c: &LocalCluster, nodes: &[usize], call: Call, threads: usize, limit: Option<u64>) -> Load {
        let ports: Vec<_> = nodes.iter().map(|&i| c.nodes[i].app).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let tally: Arc<Mutex<Tally>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..threads)
            .map(|t| {
                let (ports, stop, tally, sent) = (ports.clone(), stop.clone(), tally.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut clients: Vec<KeepAlive> = ports.iter().map(|&p| KeepAlive::new(p)).collect();
                    let mut i = t;
                    while !stop.load(Ordering::SeqCst) {
                        if limit.is_some_and(|l| sent.fetch_add(1, Ordering::SeqCst) >= l) {
                            break;
                        }
                        let n = i % clients.len();
                        i += 1;
                        let answer = call.send(&mut clients[n]);
                        record(&mut tally.lock().unwrap(), ports[n], answer);
                    }
                    let opened: u64 = clients.iter().map(KeepAlive::connections_opened).sum();
                    tally.lock().unwrap().connections += opened;
                })
            })
            .collect();
        Load { stop, tally, threads }
    }

    fn snapshot(&self) -> Tally {
        self.tally.lock().unwrap().clone()
    }

    /// Answers per version over the next `calls` requests (at most `SETTLE` long).
    fn window(&self, calls: u64) -> BTreeMap<String, u64> {
        let before = self.snapshot();
        let done = wait_for(SETTLE, || self.snapshot().calls >= before.calls + calls);
        assert!(done.is_ok(), "the client stalled: {:?}", self.snapshot());
        self.snapshot().versions_since(&before)
    }

    /// Waits (bounded) until a window of answers carries only `version`.
    fn wait_only(&self, version: &str, within: Duration) -> Result<(), BTreeMap<String, u64>> {
        let deadline = Instant::now() + within;
        loop {
            let seen = self.window(150);
            if seen.keys().all(|v| v == version) && !seen.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(seen);
            }
        }
    }

    /// Waits until the threads end (a `limit` reached) or stops them; returns the tally.
    fn finish(mut self, stop: bool) -> Tally {
        self.stop.store(stop, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        self.snapshot()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn record(tally: &mut Tally, port: std::net::SocketAddr, answer: Result<devcluster::HttpResponse, KeepAliveError>) {
    tally.calls += 1;
    match answer {
        Ok(r) if r.status == 200 => {
            let body = r.json();
            let version = body["version"].as_str().unwrap_or("(none)").to_owned();
            if let Some(inventory) = body["inventory_version"].as_str() {
                if inventory != version {
                    tally.mixed += 1;
                    tally.sample(format!("{port}: mixed: {body}"));
                }
            }
            *tally.versions.entry(version).or_default() += 1;
        }
        Ok(r) => {
            tally.failures += 1;
            tally.sample(format!("{port}: {} {}", r.status, r.text()));
        }
        Err(e) => {
            tally.failures += 1;
            tally.connection_errors += 1;
            tally.sample(format!("{port}: {e}"));
        }
    }
}

fn share_percent(seen: &BTreeMap<String, u64>, version: &str) -> f64 {
    let all: u64 = seen.values().sum();
    100.0 * seen.get(version).copied().unwrap_or(0) as f64 / all.max(1) as f64
}

fn assert_no_failures(tally: &Tally, c: &LocalCluster) {
    assert!(tally.calls > 100, "the client ran: {tally:?}");
    assert!(
        tally.failures == 0,
        "{} of {} requests failed ({} without an answer): {:?}\n{}",
        tally.failures,
        tally.calls,
        tally.connection_errors,
        tally.samples,
        log_hints(c, "echo", 40)
    );
}

// ---- Rollout API (`/api/rollouts`) ----

fn start_rollout(c: &LocalCluster, via: usize, body: &Value) -> String {
    let r = http(c.nodes[via].management, "POST", "/api/rollouts", body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    let answer = r.json();
    assert!(matches!(answer["state"].as_str(), Some("DEPLOYING" | "SHIFTING")), "{answer}");
    answer["id"].as_str().unwrap().to_owned()
}

fn rollout(c: &LocalCluster, via: usize, id: &str) -> Value {
    let r = http(c.nodes[via].management, "GET", &format!("/api/rollouts/{id}"), b"");
    r.map(|r| r.json()).unwrap_or(Value::Null)
}

fn rollout_step(c: &LocalCluster, via: usize, id: &str, action: &str, body: &Value) -> Value {
    let path = format!("/api/rollouts/{id}/{action}");
    let r = http(c.nodes[via].management, "POST", &path, body.to_string().as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{action}: {}", r.text());
    r.json()
}

fn wait_rollout_state(c: &LocalCluster, via: usize, id: &str, state: &str, within: Duration) {
    let reached = wait_for(within, || rollout(c, via, id)["state"] == state);
    assert!(reached.is_ok(), "not {state}: {}\n{:?}", rollout(c, via, id), records(c, via));
}

/// Sets the ratio, lets every node learn it, and measures the new version's share over 2000 answers.
fn measured_share(c: &LocalCluster, load: &Load, id: &str, new: u64, old: u64, version: &str) -> f64 {
    let answer = rollout_step(c, 0, id, "ratio", &json!({"new": new, "old": old}));
    assert_eq!(answer["state"], "SHIFTING", "{answer}");
    std::thread::sleep(Duration::from_millis(1500));
    let seen = load.window(2000);
    let share = share_percent(&seen, version);
    eprintln!("ratio {new}:{old}: {seen:?} -> {share:.1}% {version}");
    share
}

// ---- Tests ----

#[test]
fn a_reposted_blueprint_changes_version_without_a_failed_request() {
    let c = start("repost");
    post_blueprint(&c, 0, &echo_blueprint("1.0.0", 3));
    wait_serving(&c, &format!("{ECHO}:1.0.0"), 3, "GET", "/echo/x", b"");
    let load = Load::start(&c, Call::Echo, 3, None);
    std::thread::sleep(Duration::from_secs(1));
    post_blueprint(&c, 1, &echo_blueprint("2.0.0", 3));
    let moved = load.wait_only("2.0.0", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let tally = load.finish(true);
    eprintln!("re-post: {tally:?}");
    assert!(moved.is_ok(), "answers did not all move to 2.0.0: last window {moved:?}; {tally:?}");
    assert!(tally.versions.get("1.0.0").is_some_and(|&n| n > 0), "1.0.0 served first: {tally:?}");
    assert!(tally.connections * 10 < tally.calls, "the clients kept their connections: {tally:?}");
    assert_no_failures(&tally, &c);
    let old = format!("{ECHO}:1.0.0");
    let retired = wait_for(Duration::from_secs(20), || !any_record_of(&c, 0, &old));
    assert!(retired.is_ok(), "a 1.0.0 record is left: {:?}", records(&c, 0));
    assert_eq!(count_active(&c, 0, &format!("{ECHO}:2.0.0")), 3, "{:?}", records(&c, 0));
}

#[test]
fn a_rollout_shifts_traffic_by_its_ratio() {
    let c = start("ratio");
    post_blueprint(&c, 0, &echo_blueprint("1.0.0", 3));
    wait_serving(&c, &format!("{ECHO}:1.0.0"), 3, "GET", "/echo/x", b"");
    let load = Load::start(&c, Call::Echo, 3, None);
    let id = start_rollout(&c, 0, &json!({"artifact": ECHO, "version": "2.0.0", "approval": "manual"}));
    wait_rollout_state(&c, 0, &id, "SHIFTING", SETTLE);
    // Manual approval: nothing moves before the operator sets a ratio.
    let before = load.window(300);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["1.0.0"], "{before:?}");
    let quarter = measured_share(&c, &load, &id, 1, 3, "2.0.0");
    assert!((20.0..=30.0).contains(&quarter), "ratio 1:3 gave {quarter:.1}% to 2.0.0");
    let three_quarters = measured_share(&c, &load, &id, 3, 1, "2.0.0");
    assert!((70.0..=80.0).contains(&three_quarters), "ratio 3:1 gave {three_quarters:.1}% to 2.0.0");
    rollout_step(&c, 0, &id, "complete", &json!({}));
    wait_rollout_state(&c, 0, &id, "COMPLETED", SETTLE);
    let moved = load.wait_only("2.0.0", Duration::from_secs(30));
    assert!(moved.is_ok(), "answers did not all move to 2.0.0: {moved:?}");
    assert_eq!(blueprint_artifacts(&c, 1, "svc"), [format!("{ECHO}:2.0.0")]);
    let old = format!("{ECHO}:1.0.0");
    let retired = wait_for(SETTLE, || !any_record_of(&c, 0, &old));
    assert!(retired.is_ok(), "a 1.0.0 record is left: {:?}", records(&c, 0));
    let tally = load.finish(true);
    eprintln!("ratio: {tally:?}");
    assert_no_failures(&tally, &c);
}

#[test]
fn a_rollback_brings_all_traffic_back_without_failures() {
    let c = start("rollback");
    post_blueprint(&c, 0, &echo_blueprint("1.0.0", 3));
    wait_serving(&c, &format!("{ECHO}:1.0.0"), 3, "GET", "/echo/x", b"");
    let load = Load::start(&c, Call::Echo, 3, None);
    let id = start_rollout(&c, 0, &json!({"artifact": ECHO, "version": "2.0.0", "approval": "manual"}));
    wait_rollout_state(&c, 0, &id, "SHIFTING", SETTLE);
    let half = measured_share(&c, &load, &id, 50, 50, "2.0.0");
    assert!((40.0..=60.0).contains(&half), "ratio 50:50 gave {half:.1}% to 2.0.0");
    rollout_step(&c, 1, &id, "rollback", &json!({"reason": "testing a rollback"}));
    wait_rollout_state(&c, 0, &id, "ROLLED_BACK", SETTLE);
    let back = load.wait_only("1.0.0", Duration::from_secs(30));
    assert!(back.is_ok(), "answers did not all come back to 1.0.0: {back:?}");
    let new = format!("{ECHO}:2.0.0");
    let retired = wait_for(SETTLE, || !any_record_of(&c, 0, &new));
    assert!(retired.is_ok(), "a 2.0.0 record is left: {:?}", records(&c, 0));
    assert_eq!(blueprint_artifacts(&c, 2, "svc"), [format!("{ECHO}:1.0.0")]);
    let tally = load.finish(true);
    eprintln!("rollback: {tally:?}");
    assert_no_failures(&tally, &c);
}

#[test]
fn sticky_chains_never_mix_versions() {
    let c = start("sticky");
    post_blueprint(&c, 0, &shop_blueprint());
    let order = br#"{"item": "pen", "qty": 1}"#;
    wait_serving(&c, &format!("{ORDERS}:1.0.0"), 2, "POST", "/orders", order);
    let moves = json!([{"artifact": ORDERS, "version": "2.0.0"}, {"artifact": INVENTORY, "version": "2.0.0"}]);
    let id = start_rollout(&c, 0, &json!({"artifacts": moves, "approval": "manual"}));
    wait_rollout_state(&c, 0, &id, "SHIFTING", SETTLE);
    rollout_step(&c, 0, &id, "ratio", &json!({"new": 50, "old": 50}));
    std::thread::sleep(Duration::from_millis(1500));
    let tally = Load::start(&c, Call::Order, 4, Some(10_000)).finish(false);
    eprintln!("sticky: {tally:?}");
    assert_eq!(tally.calls, 10_000, "{tally:?}");
    assert_eq!(tally.mixed, 0, "answers mixed versions: {:?}", tally.samples);
    assert_no_failures(&tally, &c);
    for version in ["1.0.0", "2.0.0"] {
        let share = share_percent(&tally.versions, version);
        assert!(share >= 30.0, "{version} served {share:.1}% of the orders: {:?}", tally.versions);
    }
}

#[test]
fn the_new_leader_finishes_a_rollout() {
    let mut c = start("leader");
    post_blueprint(&c, 0, &echo_blueprint("1.0.0", 3));
    wait_serving(&c, &format!("{ECHO}:1.0.0"), 3, "GET", "/echo/x", b"");
    let stages = json!([
        {"percent": 30, "hold_ms": 3000},
        {"percent": 60, "hold_ms": 3000},
        {"percent": 100, "hold_ms": 0}
    ]);
    let body =
        json!({"artifact": ECHO, "version": "2.0.0", "strategy": "canary", "approval": "auto", "stages": stages});
    let id = start_rollout(&c, 0, &body);
    wait_rollout_state(&c, 0, &id, "SHIFTING", SETTLE);
    let status = http(c.nodes[0].management, "GET", "/api/status", b"").unwrap().json();
    let leader = status["leader"].as_str().unwrap_or_default().to_owned();
    let victim = c.nodes.iter().position(|n| n.id == leader);
    let victim = victim.unwrap_or_else(|| panic!("no leader named: {status}"));
    c.kill(victim);
    let via = (victim + 1) % c.nodes.len();
    let killed_at = Instant::now();
    wait_rollout_state(&c, via, &id, "COMPLETED", Duration::from_secs(60));
    eprintln!("completed {:?} after the leader was killed", killed_at.elapsed());
    let named = wait_for(Duration::from_secs(5), || blueprint_artifacts(&c, via, "svc") == [format!("{ECHO}:2.0.0")]);
    assert!(named.is_ok(), "the blueprint names {:?}", blueprint_artifacts(&c, via, "svc"));
    let new_leader = http(c.nodes[via].management, "GET", "/api/status", b"").unwrap().json();
    assert_ne!(new_leader["leader"], leader.as_str(), "{new_leader}");
    let answers = wait_for(SETTLE, || {
        http(c.nodes[via].app, "GET", "/echo/x", b"").is_ok_and(|r| r.status == 200 && r.json()["version"] == "2.0.0")
    });
    assert!(answers.is_ok(), "{:?}", records(&c, via));
}
