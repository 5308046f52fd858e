//! The shortener example as a real service over real processes (3 nodes, 2 instances): 200 links created
//! through random nodes' app ports by 8 concurrent clients get 200 distinct ids, and every id redirects to
//! its own URL through every node's app port (a node without an instance forwards); after kill -9 of a node
//! hosting an instance and the heal, every link still resolves through the surviving nodes. Unknown ids are
//! 404 and bad URLs 400.

use devcluster::{http, http_with, wait_for, LocalCluster};
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(30);
const SHORTENER: &str = "org.aether.examples:shortener:1.0.0";
const BLUEPRINT: &str =
    "name = \"links\"\n[[slices]]\nartifact = \"org.aether.examples:shortener:1.0.0\"\ninstances = 2\n";
const LINKS: usize = 200;
const CLIENTS: usize = 8;

fn status(c: &LocalCluster, node: usize) -> Value {
    http(c.nodes[node].management, "GET", "/api/blueprints/links", b"").map(|r| r.json()).unwrap_or(Value::Null)
}

fn fully_active(status: &Value) -> bool {
    status["slices"].as_array().is_some_and(|slices| {
        !slices.is_empty() && slices.iter().all(|s| s["active"].as_u64() == s["desired"].as_u64())
    })
}

/// A small deterministic generator (xorshift), so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn resolves(c: &LocalCluster, node: usize, id: &str, url: &str) -> Result<(), String> {
    let answer = http(c.nodes[node].app, "GET", &format!("/links/{id}"), b"").map_err(|e| e.to_string())?;
    match (answer.status, answer.header("location")) {
        (302, Some(location)) if location == url => Ok(()),
        (status, location) => Err(format!("node {node}, /links/{id}: {status} {location:?} {}", answer.text())),
    }
}

#[test]
fn links_are_unique_cluster_wide_resolve_everywhere_and_survive_a_killed_node() {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    let mut c = devcluster::start_with_examples(3, "shortener", aetherd, SETTLE).unwrap();
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", BLUEPRINT.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    wait_for(SETTLE, || (0..3).all(|i| fully_active(&status(&c, i)))).unwrap();
    // Every node's routes know the shortener before the load starts.
    let probe = |i: usize| http(c.nodes[i].app, "GET", "/links/0", b"").is_ok_and(|r| r.status == 404);
    wait_for(SETTLE, || (0..3).all(probe)).unwrap();

    let seed = u64::from(std::process::id()) | 1;
    let created: Mutex<Vec<(String, String)>> = Mutex::default();
    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (c, created) = (&c, &created);
            scope.spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(client as u64 + 1) | 1);
                for n in (client..LINKS).step_by(CLIENTS) {
                    let node = rng.below(3);
                    let url = format!("https://example.com/{n}?from={client}");
                    let body = format!("{{\"url\":\"{url}\"}}");
                    let headers = [("Content-Type", "application/json")];
                    let answer = http_with(c.nodes[node].app, "POST", "/links", &headers, body.as_bytes()).unwrap();
                    assert_eq!(answer.status, 201, "seed {seed}, node {node}: {}", answer.text());
                    let id = answer.json()["id"].as_str().unwrap_or_default().to_owned();
                    assert_eq!(answer.header("location"), Some(format!("/links/{id}").as_str()));
                    created.lock().unwrap().push((id, url));
                }
            });
        }
    });
    let created = created.into_inner().unwrap();
    let ids: BTreeSet<&str> = created.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!((created.len(), ids.len()), (LINKS, LINKS), "every id unique");
    for (id, url) in &created {
        for node in 0..3 {
            resolves(&c, node, id, url).unwrap();
        }
    }
    let unknown = http(c.nodes[1].app, "GET", "/links/zzzzzzzz", b"").unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    let bad = http(c.nodes[2].app, "POST", "/links", br#"{"url":"javascript:alert(1)"}"#).unwrap();
    assert_eq!(bad.status, 400, "{}", bad.text());

    // kill -9 a node that hosts an instance; after the heal every link resolves through the others.
    let slices = http(c.nodes[0].management, "GET", "/api/slices", b"").unwrap().json();
    let host = slices["slices"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["artifact"] == SHORTENER))
        .and_then(|x| x["node"].as_str())
        .map(str::to_string)
        .unwrap();
    let victim = c.nodes.iter().position(|n| n.id == host).unwrap();
    c.kill(victim);
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let healed = || {
        let s = status(&c, survivors[0]);
        fully_active(&s)
            && s["slices"].as_array().is_some_and(|slices| {
                slices
                    .iter()
                    .all(|x| x["where"].as_array().is_some_and(|w| w.iter().all(|p| p["node"] != host.as_str())))
            })
    };
    wait_for(Duration::from_secs(60), healed).unwrap_or_else(|_| panic!("not healed: {}", status(&c, survivors[0])));
    for (id, url) in &created {
        for &node in &survivors {
            let mut last = Ok(());
            // Routes may still point at the dead node for a moment after the heal: retry briefly.
            let ok = wait_for(Duration::from_secs(10), || {
                last = resolves(&c, node, id, url);
                last.is_ok()
            });
            assert!(ok.is_ok(), "after the heal: {last:?}");
        }
    }
}
