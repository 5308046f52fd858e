//! Single-active slices and selection strategies on 3 real processes.
//!
//! - The `ledger` slice (single-active, 3 instances) under client loops on the two other nodes: kill -9 the
//!   node holding its lease; never two active at once, read from the ledger's own log (epochs never go
//!   back in seq order; each epoch's entries come from one node; every answer the clients got is in it);
//!   the failover time measured and printed (last success on the old holder to first success on the new
//!   one); calls during the switch wait and succeed.
//! - Round-robin spreads app-port calls over the 3 nodes' instances; local-first keeps them local.

use devcluster::{http, wait_for, LocalCluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);
const LEDGER: &str = "org.aether.examples:ledger:1.0.0";

fn start(name: &str) -> LocalCluster {
    let aetherd = std::path::Path::new(env!("CARGO_BIN_EXE_aetherd"));
    devcluster::start_with_examples(3, &format!("single-active-{name}"), aetherd, SETTLE).unwrap()
}

fn deploy(c: &LocalCluster, name: &str, toml: &str) {
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", toml.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let path = format!("/api/blueprints/{name}");
    let active = || {
        let status = http(c.nodes[1].management, "GET", &path, b"").map(|r| r.json()).unwrap_or(Value::Null);
        status["slices"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|x| x["active"].as_u64() == x["desired"].as_u64()))
    };
    wait_for(SETTLE, active).unwrap_or_else(|_| panic!("{name} not deployed"));
}

/// One client call's outcome.
#[derive(Clone, Debug)]
struct Outcome {
    at: Instant,
    status: u16,
    node: String,
    epoch: u64,
    seq: u64,
}

fn append(c: &LocalCluster, via: usize, body: &str) -> Outcome {
    let answer = http(c.nodes[via].app, "POST", "/ledger/t/append", body.as_bytes());
    let (status, json) = answer.map(|r| (r.status, r.json())).unwrap_or((0, Value::Null));
    Outcome {
        at: Instant::now(),
        status,
        node: json["node"].as_str().unwrap_or_default().to_owned(),
        epoch: json["epoch"].as_u64().unwrap_or(0),
        seq: json["seq"].as_u64().unwrap_or(0),
    }
}

fn lease_of(c: &LocalCluster, via: usize) -> Value {
    let slices = http(c.nodes[via].management, "GET", "/api/slices", b"").map(|r| r.json()).unwrap_or(Value::Null);
    slices["leases"]
        .as_array()
        .and_then(|l| l.iter().find(|x| x["base"] == "org.aether.examples:ledger").cloned())
        .unwrap_or(Value::Null)
}

#[test]
fn killing_the_active_node_fails_over_without_two_active_at_once() {
    let c = start("failover");
    let toml = format!("name = \"books\"\n[[slices]]\nartifact = \"{LEDGER}\"\ninstances = 3\n");
    deploy(&c, "books", &toml);
    wait_for(SETTLE, || append(&c, 0, "warm-up").status == 200).expect("the ledger never answered");
    let lease = lease_of(&c, 0);
    let holder = lease["holder"].as_str().expect("a holder").to_owned();
    // /api/slices: the holder's instance is active, the two others standby.
    let slices = http(c.nodes[0].management, "GET", "/api/slices", b"").unwrap().json();
    let roles: Vec<(String, String)> = slices["slices"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["artifact"] == LEDGER)
        .map(|s| (s["node"].as_str().unwrap_or("").to_owned(), s["role"].as_str().unwrap_or("").to_owned()))
        .collect();
    assert_eq!(roles.iter().filter(|(_, r)| r == "active").count(), 1, "{slices}");
    assert!(roles.iter().any(|(n, r)| *n == holder && r == "active"), "{slices}");

    let victim = c.nodes.iter().position(|n| n.id == holder).unwrap();
    let clients: Vec<usize> = (0..3).filter(|&i| i != victim).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let c = Arc::new(Mutex::new(c));
    let mut threads = Vec::new();
    for &via in &clients {
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        let app = c.lock().unwrap().nodes[via].app;
        threads.push(std::thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let answer = http(app, "POST", "/ledger/t/append", format!("{via}-{i}").as_bytes());
                let (status, json) = answer.map(|r| (r.status, r.json())).unwrap_or((0, Value::Null));
                outcomes.lock().unwrap().push(Outcome {
                    at: Instant::now(),
                    status,
                    node: json["node"].as_str().unwrap_or_default().to_owned(),
                    epoch: json["epoch"].as_u64().unwrap_or(0),
                    seq: json["seq"].as_u64().unwrap_or(0),
                });
                std::thread::sleep(Duration::from_millis(15));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1000));
    let killed_at = Instant::now();
    c.lock().unwrap().kill(victim);
    std::thread::sleep(Duration::from_millis(3000));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let c = Arc::try_unwrap(c).ok().unwrap().into_inner().unwrap();
    let mut outcomes = outcomes.lock().unwrap().clone();
    outcomes.sort_by_key(|o| o.at);

    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.status == 200).collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 200).collect();
    let last_old = ok.iter().filter(|o| o.node == holder).map(|o| o.at).max().expect("successes before the kill");
    let first_new = ok.iter().find(|o| o.node != holder && o.at > last_old).expect("a success after the failover");
    let failover = first_new.at.duration_since(last_old);
    let slowest = outcomes.windows(2).map(|w| w[1].at.duration_since(w[0].at)).max().unwrap_or_default();
    println!(
        "single-active failover: {} ms (last success on {holder} to first on {}); {} calls, {} failed, \
         kill to first new success {} ms, longest gap between answers {} ms",
        failover.as_millis(),
        first_new.node,
        outcomes.len(),
        failed.len(),
        first_new.at.duration_since(killed_at).as_millis(),
        slowest.as_millis()
    );
    assert!(first_new.epoch > lease["epoch"].as_u64().unwrap_or(0), "a new epoch: {first_new:?}");
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    // Calls during the switch waited: at most the one call per client that was in flight on the killed node
    // (it may have appended, so it is not retried) fails.
    assert!(failed.len() <= clients.len(), "failed calls: {failed:?}");
    assert!(ok.len() < 1000, "more appends than one log answer lists: {}", ok.len());

    // The ledger's own log: epochs never go back in seq order, and each epoch has one node.
    let survivor = clients[0];
    let log = http(c.nodes[survivor].app, "GET", "/ledger/t/log", b"").unwrap().json();
    let entries = log["entries"].as_array().expect("entries").clone();
    assert!(entries.len() >= ok.len(), "{} entries for {} successes", entries.len(), ok.len());
    let mut node_of_epoch: BTreeMap<u64, String> = BTreeMap::new();
    let mut last_epoch = 0;
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(entry["seq"].as_u64(), Some(i as u64 + 1), "gap or reorder at {entry}");
        let epoch = entry["epoch"].as_u64().unwrap();
        let node = entry["node"].as_str().unwrap().to_owned();
        assert!(epoch >= last_epoch, "epoch went back at {entry}: two active at once");
        last_epoch = epoch;
        let first = node_of_epoch.entry(epoch).or_insert_with(|| node.clone());
        assert_eq!(*first, node, "epoch {epoch} served by two nodes: two active at once");
    }
    for o in &ok {
        let entry = &entries[o.seq as usize - 1];
        assert_eq!((entry["epoch"].as_u64(), entry["node"].as_str()), (Some(o.epoch), Some(o.node.as_str())));
    }
    assert_eq!(lease_of(&c, survivor)["holder"].as_str(), Some(first_new.node.as_str()));
}

#[test]
fn round_robin_spreads_app_port_calls_and_local_first_keeps_them_local() {
    let c = start("selection");
    let toml = "name = \"spread\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 3\n\
                selection = \"round-robin\"\n";
    deploy(&c, "spread", toml);
    let nodes_seen = |via: usize, n: usize| {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..n {
            let r = http(c.nodes[via].app, "GET", "/echo/hi", b"").unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            *seen.entry(r.json()["node"].as_str().unwrap_or("").to_owned()).or_insert(0) += 1;
        }
        seen
    };
    wait_for(SETTLE, || nodes_seen(0, 30).len() == 3).expect("round-robin never reached the 3 instances");
    let seen = nodes_seen(0, 90);
    println!("round-robin from node 0: {seen:?}");
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.values().all(|&n| (20..=40).contains(&n)), "uneven: {seen:?}");

    // The same slice placed local-first (the default): every call stays on the node that took it.
    let local = "name = \"spread\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 3\n";
    let r = http(c.nodes[0].management, "POST", "/api/blueprints", local.as_bytes()).unwrap();
    assert!(r.status == 200 || r.status == 201, "{}", r.text());
    let all_local = || (0..3).all(|via| nodes_seen(via, 10).keys().collect::<Vec<_>>() == vec![&c.nodes[via].id]);
    wait_for(SETTLE, all_local).expect("local-first never took over");
    for via in 0..3 {
        let seen = nodes_seen(via, 20);
        assert_eq!(seen.keys().collect::<Vec<_>>(), vec![&c.nodes[via].id], "{seen:?}");
    }
}
