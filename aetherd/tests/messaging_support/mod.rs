//! What the messaging cluster tests share: a 3-node cluster serving the `inbox` example (one instance per
//! node), publishing with bounded retries, the slice's durable journal read back through the management KV
//! API, and bounded waits that fail with what they saw.
//!
//! The journal (`journal = "true"` in the slice's config) is what makes "never lost" checkable through a
//! kill -9: the inbox writes every delivery to its cluster state before acknowledging it, so a delivery the
//! node under it acknowledged survives the node, while one it did not acknowledge is delivered again. One
//! instance boot writes `journal/{topic}/{node}/{boot}/{chunk}`; its chunks in key order are its deliveries in
//! arrival order.

#![allow(dead_code)]

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const SETTLE: Duration = Duration::from_secs(30);
pub const INBOX: &str = "org.aether.examples:inbox:1.0.0";
/// How long one publish keeps retrying refusals that mean "not now" (503, 504, 429, lost connection).
pub const PUBLISH_RETRY_FOR: Duration = Duration::from_secs(20);

/// A 3-node cluster serving the example slices; `extra_config` is appended to every node's config, and
/// `lease_grace_ms` replaces the default grace after which a silent node is judged dead.
pub fn start(name: &str, extra_config: &str, lease_grace_ms: Option<u64>) -> LocalCluster {
    let repo = example_slices_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("aether-messaging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec = ClusterSpec::new(3, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    spec.extra_config = extra_config.to_owned();
    let c = LocalCluster::prepare(spec).unwrap();
    if let Some(grace) = lease_grace_ms {
        for node in &c.nodes {
            let text = std::fs::read_to_string(&node.config).unwrap();
            let text = text.replacen("[cluster]\n", &format!("[cluster]\nlease_grace_ms = {grace}\n"), 1);
            std::fs::write(&node.config, text).unwrap();
        }
    }
    let mut c = c;
    for i in 0..3 {
        c.start_node(i).unwrap();
    }
    c.wait_ready(SETTLE).unwrap_or_else(|e| panic!("{e}; node-1 log:\n{}", c.log(0)));
    c
}

/// The inbox blueprint `name` with 3 instances; `extra` goes after the slice's table (config, kv, overrides).
pub fn inbox_blueprint(name: &str, extra: &str) -> String {
    format!("name = \"{name}\"\n[[slices]]\nartifact = \"{INBOX}\"\ninstances = 3\n{extra}")
}

/// Posts `blueprint` and waits until an inbox instance is ACTIVE on every node (every node reports it).
pub fn deploy(c: &LocalCluster, blueprint: &str) {
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", blueprint.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "blueprint refused: {}", posted.text());
    let mut seen = Value::Null;
    let everywhere = wait_for(SETTLE, || {
        seen = get_json(c, 0, "/api/slices");
        let nodes: std::collections::BTreeSet<&str> = seen["slices"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["artifact"] == INBOX && s["state"] == "ACTIVE")
            .filter_map(|s| s["node"].as_str())
            .collect();
        nodes.len() == 3
    });
    assert!(everywhere.is_ok(), "inbox is not ACTIVE on every node within {SETTLE:?}: {seen}");
}

/// `GET path` on node `node`'s management port as JSON (`Null` when it does not answer 200).
pub fn get_json(c: &LocalCluster, node: usize, path: &str) -> Value {
    http(c.nodes[node].management, "GET", path, b"").ok().filter(|r| r.status == 200).map_or(Value::Null, |r| r.json())
}

/// The node the leader record names (`node-N`), as node `asked` reads it.
pub fn leader(c: &LocalCluster, asked: usize) -> Option<String> {
    let entry = get_json(c, asked, "/api/kv/nodes/leader");
    let value: Value = serde_json::from_str(entry["value"].as_str()?).ok()?;
    value["node"].as_str().map(str::to_owned)
}

/// Index of the node named `id`.
pub fn index_of(c: &LocalCluster, id: &str) -> usize {
    c.nodes.iter().position(|n| n.id == id).unwrap_or_else(|| panic!("no node {id}"))
}

/// Where a publish goes in.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    /// `POST /api/topics/{topic}/messages` on a management port (publisher `api`).
    Api(SocketAddr),
    /// `POST /inbox/publish/{topic}` on an app port: the inbox instance there publishes (`ctx.publish`).
    Inbox(SocketAddr),
}

/// One publish: its final status and answer, after retrying what means "not now" for up to `retry_for`.
/// Answers the status and body of the last attempt, and how many attempts were made.
pub fn publish(via: Via, topic: &str, body: &[u8], retry_for: Duration) -> (u16, Value, u32) {
    let (addr, path) = match via {
        Via::Api(addr) => (addr, format!("/api/topics/{topic}/messages")),
        Via::Inbox(addr) => (addr, format!("/inbox/publish/{topic}")),
    };
    let until = Instant::now() + retry_for;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let (status, answer) = match http(addr, "POST", &path, body) {
            Ok(r) => (r.status, r.json()),
            Err(e) => (0, Value::String(e.to_string())),
        };
        let again = matches!(status, 0 | 429 | 503 | 504);
        if !again || Instant::now() >= until {
            return (status, answer, attempts);
        }
        std::thread::sleep(Duration::from_millis(if status == 429 { 200 } else { 50 }));
    }
}

/// One instance boot's journal: `(node, boot)` -> bodies in arrival order.
pub type Journals = BTreeMap<(String, String), Vec<String>>;

/// Every journal entry of `topic` under blueprint `blueprint`, read through node `node`'s KV API.
pub fn journals(c: &LocalCluster, node: usize, blueprint: &str, topic: &str) -> Journals {
    let prefix = format!("data/{blueprint}/org.aether.examples:inbox/journal/{topic}/");
    // A listing comes a page at a time: follow `next` to the end.
    let mut entries = Vec::new();
    let mut after = String::new();
    loop {
        let page = get_json(c, node, &format!("/api/kv?prefix={prefix}&after={after}"));
        entries.extend(page["entries"].as_array().into_iter().flatten().cloned());
        match page["next"].as_str() {
            Some(next) => after = next.to_owned(),
            None => break,
        }
    }
    let mut chunks: BTreeMap<(String, String), BTreeMap<String, String>> = BTreeMap::new();
    for entry in &entries {
        let (Some(key), Some(value)) = (entry["key"].as_str(), entry["value"].as_str()) else { continue };
        let rest = key.strip_prefix(&prefix).unwrap_or(key);
        let parts: Vec<&str> = rest.split('/').collect();
        let [node, boot, chunk] = parts[..] else { panic!("unexpected journal key {key}") };
        chunks.entry((node.to_owned(), boot.to_owned())).or_default().insert(chunk.to_owned(), value.to_owned());
    }
    chunks
        .into_iter()
        .map(|(instance, chunks)| {
            let bodies = chunks.values().flat_map(|v| v.lines().map(str::to_owned)).collect();
            (instance, bodies)
        })
        .collect()
}

/// The bodies node `node`'s local inbox instance received on `topic` (through its app port, local first).
pub fn seen(c: &LocalCluster, node: usize, topic: &str) -> Vec<String> {
    let answer = http(c.nodes[node].app, "GET", "/inbox/seen", b"").ok().filter(|r| r.status == 200);
    let answer = answer.map_or(Value::Null, |r| r.json());
    answer[topic].as_array().into_iter().flatten().filter_map(|b| b.as_str().map(str::to_owned)).collect()
}

/// Publishes warm-up messages (`{body}-1`, `{body}-2`, ...) through the API until every node's instance
/// (`broadcast`) or any instance (competing) has seen one: proves delivery runs before a test relies on it,
/// and answers how many it took (printed when more than one). A broadcast subscription with no cursor yet
/// starts where its instance began to serve, which a client sees only roughly (`/api/slices` says ACTIVE), so
/// another warm-up is sent every 2 s rather than failing on the first. Fails with what each node saw.
pub fn warm_up(c: &LocalCluster, topic: &str, body: &str, broadcast: bool) -> u32 {
    let mut sent = 0;
    let mut next_at = Instant::now();
    let delivered = |i: usize| seen(c, i, topic).iter().any(|b| b.starts_with(body));
    let ok = wait_for(SETTLE, || {
        if Instant::now() >= next_at {
            sent += 1;
            let text = format!("{body}-{sent}");
            let (status, answer, _) =
                publish(Via::Api(c.nodes[0].management), topic, text.as_bytes(), PUBLISH_RETRY_FOR);
            assert_eq!(status, 202, "publishing to {topic} through the API: {answer}");
            next_at = Instant::now() + Duration::from_secs(2);
        }
        if broadcast {
            (0..3).all(delivered)
        } else {
            (0..3).any(delivered)
        }
    });
    let saw: Vec<Vec<String>> = (0..3).map(|i| seen(c, i, topic)).collect();
    assert!(
        ok.is_ok(),
        "{sent} warm-up messages on {topic} and none delivered within {SETTLE:?} (broadcast: {broadcast}); the \
         instances saw {saw:?}; GET /api/topics: {}",
        get_json(c, 0, "/api/topics")
    );
    if sent > 1 {
        eprintln!("{topic}: {sent} warm-up messages before every subscriber got one");
    }
    sent
}

/// A body `{publisher}-{seq}` (seq zero-padded) and back.
pub fn body(publisher: usize, seq: u32) -> String {
    format!("p{publisher}-{seq:06}")
}

pub fn parse_body(body: &str) -> Option<(usize, u32)> {
    let (p, seq) = body.strip_prefix('p')?.split_once('-')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// The dead letters node `node` lists for `topic` (the answer's array, whatever its field is called).
pub fn dead_letters(c: &LocalCluster, node: usize, topic: &str) -> Vec<Value> {
    let answer = get_json(c, node, &format!("/api/dead-letters?topic={topic}"));
    let list = match &answer {
        Value::Array(items) => Some(items.clone()),
        Value::Object(fields) => fields
            .get("dead_letters")
            .or_else(|| fields.values().find(|v| v.is_array()))
            .and_then(|v| v.as_array().cloned()),
        _ => None,
    };
    list.unwrap_or_default()
}
