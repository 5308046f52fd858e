//! What the storage-plane cluster tests share: clusters whose nodes each open the storage plane's debug port
//! (`AETHER_DHT_DEBUG`), requests to it, and `GET /api/dht`.

#![allow(dead_code)]

use devcluster::{free_ports, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const SETTLE: Duration = Duration::from_secs(30);
/// Short enough that a killed node leaves the storage plane within seconds.
pub const LEASE_GRACE_MS: u64 = 2_000;

pub struct Cluster {
    pub c: LocalCluster,
    pub debug: Vec<SocketAddr>,
    base_env: Vec<(String, String)>,
}

impl Cluster {
    /// `nodes` nodes, their repositories under their data dirs (empty), all started and ready.
    pub fn start(name: &str, nodes: usize, extra_args: &[&str]) -> Cluster {
        let dir = std::env::temp_dir().join(format!("aether-dht-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut spec = ClusterSpec::new(nodes, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
        spec.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
        let c = LocalCluster::prepare(spec).unwrap();
        for node in &c.nodes {
            let text = std::fs::read_to_string(&node.config).unwrap();
            let text = text.replacen("[cluster]\n", &format!("[cluster]\nlease_grace_ms = {LEASE_GRACE_MS}\n"), 1);
            std::fs::write(&node.config, text).unwrap();
        }
        let debug = free_ports(nodes).into_iter().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let base_env = c.spec.env.clone();
        let mut cluster = Cluster { c, debug, base_env };
        for i in 0..nodes {
            cluster.start_node(i);
        }
        cluster.wait_ready((0..nodes).collect());
        cluster
    }

    pub fn start_node(&mut self, i: usize) {
        self.c.spec.env = self.base_env.clone();
        self.c.spec.env.push(("AETHER_DHT_DEBUG".into(), self.debug[i].to_string()));
        self.c.start_node(i).unwrap();
    }

    pub fn wait_ready(&self, nodes: Vec<usize>) {
        let ready = wait_for(SETTLE, || nodes.iter().all(|&i| self.c.health(i).is_some_and(|h| h["ready"] == true)));
        assert!(ready.is_ok(), "not ready: {}", self.c.log(nodes[0]));
    }

    /// One request to node `i`'s debug port (connecting until it listens).
    pub fn ask(&self, i: usize, request: Value) -> Value {
        let mut stream = None;
        let _ = wait_for(Duration::from_secs(10), || {
            stream = TcpStream::connect(self.debug[i]).ok();
            stream.is_some()
        });
        let stream = stream.unwrap_or_else(|| panic!("node {i}'s debug port does not answer"));
        stream.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = BufReader::new(stream);
        reader.get_mut().write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
    }

    pub fn put(&self, i: usize, key: &str, value: &str) -> Value {
        self.ask(i, json!({"op": "put", "key": key, "value": value}))
    }

    pub fn get(&self, i: usize, key: &str) -> Value {
        self.ask(i, json!({"op": "get", "key": key}))
    }

    /// `GET /api/dht` of node `i`.
    pub fn dht(&self, i: usize) -> Option<Value> {
        let answer = http(self.c.nodes[i].management, "GET", "/api/dht", b"").ok()?;
        (answer.status == 200).then(|| answer.json())
    }

    pub fn repository_file(&self, i: usize, coords: &str) -> PathBuf {
        let artifact = container::Artifact::parse(coords).unwrap();
        self.c.nodes[i].data_dir.join("repository").join(artifact.repository_path())
    }

    pub fn dht_dir(&self, i: usize) -> PathBuf {
        self.c.nodes[i].data_dir.join("dht")
    }

    pub fn slices(&self, i: usize) -> Vec<Value> {
        let listed = http(self.c.nodes[i].management, "GET", "/api/slices", b"").map(|r| r.json());
        listed.ok().and_then(|v| v["slices"].as_array().cloned()).unwrap_or_default()
    }

    pub fn post_blueprint(&self, i: usize, name: &str, artifact: &str, instances: usize) {
        let text = format!("name = \"{name}\"\n[[slices]]\nartifact = \"{artifact}\"\ninstances = {instances}\n");
        let posted = http(self.c.nodes[i].management, "POST", "/api/blueprints", text.as_bytes()).unwrap();
        assert_eq!(posted.status, 201, "{}", posted.text());
    }
}

/// Every regular file under `dir`, with its length and modification time, sorted by path.
pub fn files(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if let Ok(modified) = meta.modified() {
                found.push((entry.path(), meta.len(), modified));
            }
        }
    }
    found.sort();
    found
}
