//! The 3-node clusters of the app bench: starting one, deploying and deleting blueprints, reading their
//! state through the management API, which node hosts what, and the nodes' idle CPU.

use crate::load::Server;
use crate::{Options, ECHO_ARTIFACT, ECHO_BLUEPRINT, ECHO_BODY, ECHO_PATH, FAULTY_BLUEPRINT, POLL, SETTLE};
use bench::{Client, SelfSigned};
use devcluster::{http, wait_for, ClusterSpec, LocalCluster};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// A 3-node cluster of `aetherd`, with `[tls]` serving `tls`'s certificate when given (then reached with
/// its client).
pub fn start_cluster(
    options: &Options,
    name: &str,
    aetherd: &Path,
    tls: Option<(&SelfSigned, &Client)>,
) -> LocalCluster {
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

pub fn blueprint(cluster: &LocalCluster, node: usize, name: &str) -> Value {
    let path = format!("/api/blueprints/{name}");
    http(cluster.nodes[node].management, "GET", &path, b"").map(|r| r.json()).unwrap_or(Value::Null)
}

/// Every slice of the blueprint has as many ACTIVE instances as it wants.
pub fn fully_active(status: &Value) -> bool {
    status["slices"].as_array().is_some_and(|slices| {
        !slices.is_empty() && slices.iter().all(|s| s["active"].as_u64() == s["desired"].as_u64())
    })
}

/// Fully active, and no instance of any slice recorded on `dead`.
pub fn healed(status: &Value, dead: &str) -> bool {
    fully_active(status)
        && status["slices"].as_array().is_some_and(|slices| {
            slices.iter().all(|s| s["where"].as_array().is_some_and(|w| w.iter().all(|p| p["node"] != dead)))
        })
}

pub fn slices(cluster: &LocalCluster, node: usize) -> Option<Vec<Value>> {
    let r = http(cluster.nodes[node].management, "GET", "/api/slices", b"").ok()?;
    r.json()["slices"].as_array().cloned()
}

/// Indexes of the nodes with an ACTIVE instance of anything, in order.
pub fn hosting_nodes(cluster: &LocalCluster, node: usize) -> Vec<usize> {
    let instances = slices(cluster, node).unwrap_or_default();
    let active = |id: &str| instances.iter().any(|s| s["node"] == id && s["state"] == "ACTIVE");
    (0..cluster.nodes.len()).filter(|&i| active(&cluster.nodes[i].id)).collect()
}

pub fn post(cluster: &LocalCluster, node: usize, text: &str) -> Result<(), String> {
    let r = http(cluster.nodes[node].management, "POST", "/api/blueprints", text.as_bytes())
        .map_err(|e| format!("POST /api/blueprints: {e}"))?;
    if r.status == 201 {
        Ok(())
    } else {
        Err(format!("POST /api/blueprints answered {}: {}", r.status, r.text()))
    }
}

/// Deletes blueprint `name` and waits until no slice instance is left anywhere.
pub fn delete(cluster: &LocalCluster, node: usize, name: &str) -> Result<(), String> {
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
pub fn elapsed_until(since: Instant, mut done: impl FnMut() -> bool) -> Option<Duration> {
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

/// The server processes of a cluster (every node), for CPU accounting.
pub fn cluster_servers(cluster: &LocalCluster, prefix: &str) -> Vec<Server> {
    (0..cluster.nodes.len())
        .filter_map(|i| Some(Server { name: format!("{prefix}{}", cluster.nodes[i].id), pid: cluster.pid(i)? }))
        .collect()
}

/// Deploys the echo blueprint on `cluster` through `client`, waits until both the host's and another node's
/// app ports serve it; (host, via) node indexes.
pub fn deploy_echo(cluster: &LocalCluster, client: &Client) -> Result<(usize, usize), String> {
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

/// Each node's CPU over the same 10 s with nothing to do but its own work (metrics summaries included),
/// and the baseline build's nodes beside them when there are some (an earlier build without metrics shows
/// what they cost).
pub fn idle_cpu(cluster: &LocalCluster, baseline: Option<&LocalCluster>) -> Vec<(String, Option<f64>)> {
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
pub fn deploy_faulty(cluster: &LocalCluster, host: usize) -> Result<(), String> {
    post(cluster, 0, FAULTY_BLUEPRINT)?;
    wait_for(SETTLE, || http(cluster.nodes[host].app, "GET", "/faulty/ok", b"").is_ok_and(|r| r.status == 200))
        .map_err(|_| format!("faulty not served on {} within {SETTLE:?}", cluster.nodes[host].id))
}
