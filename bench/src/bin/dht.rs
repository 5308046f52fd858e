//! `cargo xtask bench dht`: the storage plane on loopback clusters of release builds, driven through each
//! node's storage-plane debug port (`AETHER_DHT_DEBUG`), so the figures are the plane's own, without the
//! repository's upload checks:
//! - store: an object of `--mib N` MiB (default 16) split into 1 MiB chunks and written with a quorum through
//!   one node of 3, then its catalog record (MiB/s);
//! - fetch: the same object read back through another node, checked against its SHA-256 (MiB/s);
//! - re-replication: on 5 nodes holding the object, one killed with SIGKILL; the time until every survivor
//!   reports every partition back at its full replica count (`under_replicated` 0 in `/api/dht`), which
//!   includes the lease grace the control plane waits before it judges the node dead (`--grace-ms`, default
//!   2000).
//!
//! Envelope: a chunk write is one 1 MiB frame to each of two other replicas and a file write on each; with 4
//! chunks in flight, loopback and the 2 cores bound store and fetch at a few hundred MiB/s at best.

use devcluster::{free_ports, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: dht --aetherd PATH [--mib N] [--grace-ms N] [--json FILE]";
const SETTLE: Duration = Duration::from_secs(60);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let number = |name: &str, default: u64| match value(name).map(|s| s.parse::<u64>()) {
        None => default,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{name} wants a positive whole number\n{USAGE}");
            std::process::exit(2);
        }
    };
    let Some(aetherd) = value("--aetherd").map(PathBuf::from) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let (mib, grace_ms) = (number("--mib", 16), number("--grace-ms", 2_000));
    let result = run(&aetherd, mib, grace_ms).unwrap_or_else(|e| {
        eprintln!("dht bench: {e}");
        std::process::exit(1);
    });
    println!("{}", serde_json::to_string_pretty(&result).unwrap_or_default());
    if let Some(path) = value("--json") {
        if let Err(e) = std::fs::write(&path, format!("{result:#}\n")) {
            eprintln!("{path}: {e}");
            std::process::exit(1);
        }
    }
}

fn run(aetherd: &Path, mib: u64, grace_ms: u64) -> Result<Value, String> {
    let dir = std::env::temp_dir().join(format!("aether-bench-dht-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let object = dir.join("object.bin");
    let mut bytes = Vec::with_capacity((mib << 20) as usize);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while bytes.len() < (mib << 20) as usize {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    std::fs::write(&object, &bytes).map_err(|e| e.to_string())?;
    let megabytes = bytes.len() as f64 / (1 << 20) as f64;

    let three = Cluster::start(&dir.join("three"), aetherd, 3, grace_ms)?;
    let started = Instant::now();
    three.ask(0, json!({"op": "store", "artifact": "org.bench:blob:1.0.0", "file": object.display().to_string()}))?;
    let store_s = started.elapsed().as_secs_f64();
    let out = dir.join("fetched.bin");
    let started = Instant::now();
    three.ask(1, json!({"op": "fetch", "artifact": "org.bench:blob:1.0.0", "file": out.display().to_string()}))?;
    let fetch_s = started.elapsed().as_secs_f64();
    if std::fs::read(&out).map_err(|e| e.to_string())? != bytes {
        return Err("the fetched object differs from the stored one".into());
    }
    drop(three);
    println!("store {megabytes:.0} MiB: {:.1} MiB/s; fetch: {:.1} MiB/s", megabytes / store_s, megabytes / fetch_s);

    let mut five = Cluster::start(&dir.join("five"), aetherd, 5, grace_ms)?;
    five.ask(0, json!({"op": "store", "artifact": "org.bench:blob:1.0.0", "file": object.display().to_string()}))?;
    let all = [0, 1, 2, 3, 4];
    wait_for(SETTLE, || five.whole(&all)).map_err(|_| "five nodes never settled at full replication")?;
    five.c.kill(4);
    let killed = Instant::now();
    wait_for(SETTLE, || five.whole(&all[..4])).map_err(|_| "the survivors never got back to full replication")?;
    let rereplicate_s = killed.elapsed().as_secs_f64();
    println!("re-replication after a kill: {rereplicate_s:.2} s (lease grace {grace_ms} ms)");
    drop(five);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "object_mib": mib,
        "store_mib_per_s": megabytes / store_s,
        "fetch_mib_per_s": megabytes / fetch_s,
        "rereplication_s": rereplicate_s,
        "lease_grace_ms": grace_ms,
    }))
}

struct Cluster {
    c: LocalCluster,
    debug: Vec<SocketAddr>,
}

impl Cluster {
    fn start(dir: &Path, aetherd: &Path, nodes: usize, grace_ms: u64) -> Result<Cluster, String> {
        let spec = ClusterSpec::new(nodes, dir, aetherd);
        let mut c = LocalCluster::prepare(spec)?;
        for node in &c.nodes {
            let text = std::fs::read_to_string(&node.config).map_err(|e| e.to_string())?;
            let text = text.replacen("[cluster]\n", &format!("[cluster]\nlease_grace_ms = {grace_ms}\n"), 1);
            std::fs::write(&node.config, text).map_err(|e| e.to_string())?;
        }
        let debug: Vec<SocketAddr> =
            free_ports(nodes).into_iter().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let base = c.spec.env.clone();
        for (i, addr) in debug.iter().enumerate() {
            c.spec.env = base.clone();
            c.spec.env.push(("AETHER_DHT_DEBUG".into(), addr.to_string()));
            c.start_node(i)?;
        }
        c.wait_ready(SETTLE)?;
        Ok(Cluster { c, debug })
    }

    fn ask(&self, i: usize, request: Value) -> Result<Value, String> {
        let stream = TcpStream::connect(self.debug[i]).map_err(|e| format!("node {i}'s debug port: {e}"))?;
        stream.set_read_timeout(Some(SETTLE)).map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(stream);
        reader.get_mut().write_all(format!("{request}\n").as_bytes()).map_err(|e| e.to_string())?;
        let mut line = String::new();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
        match answer.get("ok") {
            Some(ok) => Ok(ok.clone()),
            None => Err(format!("node {i}: {answer}")),
        }
    }

    /// Every node of `nodes` sees exactly them as members and no partition short of replicas.
    fn whole(&self, nodes: &[usize]) -> bool {
        nodes.iter().all(|&i| {
            let view = http(self.c.nodes[i].management, "GET", "/api/dht", b"").map(|r| r.json());
            view.is_ok_and(|d| {
                d["under_replicated"] == 0 && d["members"].as_array().is_some_and(|m| m.len() == nodes.len())
            })
        })
    }
}
