//! `cargo xtask bench dht`: the storage plane on 3 and 5 loopback nodes, against nginx's static file serving
//! (WebDAV `PUT` and `GET` of files, one worker) in the same run.
//!
//! For each cluster size it measures:
//! - **1 KiB values**: quorum puts, then quorum gets of the keys written, from 8 connections spread over the
//!   nodes, through each node's storage-plane debug port (`AETHER_DHT_DEBUG`: one line of JSON per request,
//!   handled by the node's event loop like every other caller's). nginx: the same count of 1 KiB `PUT`s and
//!   `GET`s of files over 8 keep-alive connections.
//! - **10 MiB artifacts**: `Blobs::store` (ten 1 MiB chunks, each with a write quorum) through one node, then
//!   `Blobs::fetch` (chunks read with a quorum, the SHA-256 checked, written to a file) through another; nginx:
//!   `PUT` then `GET` of the same file.
//! - **Re-replication**: `--stored-mib` of artifacts stored, every partition at three replicas; then the
//!   last node is killed (SIGKILL) and the time is taken until the first survivor has it out of the members
//!   (`detect`: the control plane's lease grace, set to 2 s here, and the lease watch's next look) and until
//!   every partition is back at three replicas and the survivors hold as many bytes as the whole cluster did
//!   (`whole`); `whole - detect` is the copying, reported per GiB stored.
//!
//! Envelope: a 1 KiB quorum write is a loop hop, two messages to peers and two acknowledgements back (~100 µs on
//! loopback) plus a file write per replica: expect a few thousand per second on 2 cores. A 10 MiB store
//! moves 30 MiB of chunk files through three processes' page caches and 20 MiB over loopback: ~50-100 ms.
//! nginx writes one file: expect it several times faster for both.

use devcluster::{free_ports, http, wait_for, ClusterSpec, LocalCluster};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: dht --aetherd PATH [--nodes 3,5] [--seconds N] [--blobs N] [--stored-mib N] [--json FILE]";
const CONNECTIONS: usize = 8;
const SMALL: usize = 1024;
const BLOB: usize = 10 << 20;
const LEASE_GRACE_MS: u64 = 2_000;

struct Options {
    aetherd: PathBuf,
    nodes: Vec<usize>,
    seconds: f64,
    blobs: usize,
    stored_mib: usize,
    json: Option<PathBuf>,
}

fn main() {
    let options = match parse(&std::env::args().skip(1).collect::<Vec<_>>()) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("dht: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    let dir = std::env::temp_dir().join(format!("aether-bench-dht-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let blob = dir.join("blob.bin");
    std::fs::write(&blob, pseudo_random(BLOB, 7)).expect("the blob file");

    let mut report = Vec::new();
    let nginx = bench::which("nginx").map(|bin| Nginx::start(&bin, &dir.join("nginx")));
    let baseline = match nginx {
        Some(Ok(nginx)) => Some(nginx_figures(&nginx, &options, &blob)),
        Some(Err(e)) => {
            eprintln!("dht: nginx baseline skipped: {e}");
            None
        }
        None => {
            eprintln!("dht: nginx is not installed; no baseline");
            None
        }
    };
    if let Some(figures) = &baseline {
        print_figures("nginx (1 worker, WebDAV)", figures, None);
        report.push(json!({"system": "nginx", "figures": figures.to_json()}));
    }
    for &n in &options.nodes {
        match cluster_figures(&options, n, &dir, &blob) {
            Ok((figures, rereplication)) => {
                print_figures(&format!("aether, {n} nodes"), &figures, baseline.as_ref());
                println!("  re-replication: {}", rereplication);
                report.push(json!({"system": format!("aether-{n}"), "figures": figures.to_json(),
                    "ratios_to_nginx": baseline.as_ref().map(|b| figures.ratios(b)), "rereplication": rereplication}));
            }
            Err(e) => {
                eprintln!("dht: {n} nodes: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(path) = &options.json {
        let text = serde_json::to_string_pretty(&Value::Array(report)).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("dht: {}: {e}", path.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut options =
        Options { aetherd: PathBuf::new(), nodes: vec![3, 5], seconds: 3.0, blobs: 5, stored_mib: 200, json: None };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or(format!("{flag} needs a value"));
        let number = |text: String| text.parse::<f64>().map_err(|_| format!("`{text}` is not a number"));
        match flag.as_str() {
            "--aetherd" => options.aetherd = PathBuf::from(value()?),
            "--nodes" => {
                options.nodes = value()?
                    .split(',')
                    .map(|n| n.trim().parse().map_err(|_| format!("`{n}` is not a node count")))
                    .collect::<Result<_, _>>()?;
            }
            "--seconds" => options.seconds = number(value()?)?,
            "--blobs" => options.blobs = number(value()?)? as usize,
            "--stored-mib" => options.stored_mib = number(value()?)? as usize,
            "--json" => options.json = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    if options.aetherd.as_os_str().is_empty() {
        return Err("--aetherd is required".into());
    }
    if options.nodes.iter().any(|&n| n < 3) {
        return Err("--nodes: at least 3 nodes (replication factor 3)".into());
    }
    options.blobs = options.blobs.max(1);
    Ok(options)
}

/// Latencies of one kind of operation, sorted, in microseconds, and the wall time they took together.
#[derive(Default, Clone)]
struct Ops {
    latencies_us: Vec<u64>,
    errors: u64,
    seconds: f64,
}

impl Ops {
    fn per_s(&self) -> f64 {
        self.latencies_us.len() as f64 / self.seconds.max(1e-9)
    }
    fn p(&self, p: f64) -> f64 {
        bench::percentile(&self.latencies_us, p)
    }
    fn to_json(&self) -> Value {
        json!({"ops": self.latencies_us.len(), "errors": self.errors, "per_s": self.per_s(),
            "p50_us": self.p(50.0), "p99_us": self.p(99.0)})
    }
    fn merge(parts: Vec<Ops>, seconds: f64) -> Ops {
        let mut all = Ops { seconds, ..Ops::default() };
        for part in parts {
            all.latencies_us.extend(part.latencies_us);
            all.errors += part.errors;
        }
        all.latencies_us.sort_unstable();
        all
    }
}

struct Figures {
    small_put: Ops,
    small_get: Ops,
    blob_put: Ops,
    blob_get: Ops,
}

impl Figures {
    fn to_json(&self) -> Value {
        json!({"small_put": self.small_put.to_json(), "small_get": self.small_get.to_json(),
            "blob_put": self.blob_put.to_json(), "blob_get": self.blob_get.to_json()})
    }

    /// Ours over the baseline's: throughput ratios (higher is better) and p50 latency ratios (lower is better).
    fn ratios(&self, base: &Figures) -> Value {
        let pair = |ours: &Ops, theirs: &Ops| json!({"per_s": ours.per_s() / theirs.per_s(), "p50": ours.p(50.0) / theirs.p(50.0)});
        json!({"small_put": pair(&self.small_put, &base.small_put), "small_get": pair(&self.small_get, &base.small_get),
            "blob_put": pair(&self.blob_put, &base.blob_put), "blob_get": pair(&self.blob_get, &base.blob_get)})
    }
}

fn print_figures(name: &str, figures: &Figures, base: Option<&Figures>) {
    println!("{name}");
    let rows = [
        ("1 KiB put", &figures.small_put, base.map(|b| &b.small_put)),
        ("1 KiB get", &figures.small_get, base.map(|b| &b.small_get)),
        ("10 MiB put", &figures.blob_put, base.map(|b| &b.blob_put)),
        ("10 MiB get", &figures.blob_get, base.map(|b| &b.blob_get)),
    ];
    for (label, ops, theirs) in rows {
        let ratio = theirs.map_or(String::new(), |t| {
            format!("  ({:.2}x nginx's rate, p50 {:.1}x)", ops.per_s() / t.per_s(), ops.p(50.0) / t.p(50.0))
        });
        println!(
            "  {label:<11} {:>9.0}/s  p50 {:>9.0} µs  p99 {:>9.0} µs  errors {}{ratio}",
            ops.per_s(),
            ops.p(50.0),
            ops.p(99.0),
            ops.errors
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// The cluster

fn cluster_figures(options: &Options, n: usize, dir: &Path, blob: &Path) -> Result<(Figures, Value), String> {
    let mut cluster = Cluster::start(&options.aetherd, n, &dir.join(format!("cluster-{n}")))?;
    let members = wait_for(Duration::from_secs(30), || (0..n).all(|i| cluster.members(i) == Some(n)));
    if members.is_err() {
        return Err(format!("the storage plane did not reach {n} members: {:?}", cluster.dht(0)));
    }
    let debug = &cluster.debug;
    let value = "v".repeat(SMALL);
    let (small_put, written) =
        load(options.seconds, |conn: &mut Option<LineConn>, t, i| {
            ask(conn, debug[t % n], &json!({"op": "put", "key": format!("bench/{t}/{i}"), "value": value}))
                .and_then(|v| if v.get("ok").is_some() { Ok(()) } else { Err(v.to_string()) })
        });
    let (small_get, _) = load(options.seconds, |conn: &mut Option<LineConn>, t, i| {
        let key = format!("bench/{t}/{}", i % written[t].max(1));
        ask(conn, debug[(t + 1) % n], &json!({"op": "get", "key": key})).and_then(|v| {
            if v["ok"].is_string() {
                Ok(())
            } else {
                Err(v.to_string())
            }
        })
    });

    let out = dir.join(format!("fetched-{n}.bin"));
    let (mut blob_put, mut blob_get) = (Ops::default(), Ops::default());
    for i in 0..options.blobs {
        let artifact = format!("org.bench:blob{n}:1.0.{i}");
        let started = Instant::now();
        let stored = cluster.ask(i % n, &json!({"op": "store", "artifact": artifact, "file": blob}));
        record(&mut blob_put, started, stored.as_ref().map(|v| v["ok"]["size"] == BLOB).unwrap_or(false));
        let started = Instant::now();
        let fetched = cluster.ask((i + 1) % n, &json!({"op": "fetch", "artifact": artifact, "file": out}));
        let whole = fetched.as_ref().map(|v| v["ok"]["size"] == BLOB).unwrap_or(false)
            && std::fs::read(&out).map(|bytes| bytes.len() == BLOB).unwrap_or(false);
        record(&mut blob_get, started, whole);
    }
    blob_put.latencies_us.sort_unstable();
    blob_get.latencies_us.sort_unstable();

    let rereplication = rereplicate(&mut cluster, options, n, blob).unwrap_or_else(|e| json!({ "text": e }));
    Ok((Figures { small_put, small_get, blob_put, blob_get }, rereplication))
}

fn record(ops: &mut Ops, started: Instant, ok: bool) {
    let took = started.elapsed();
    ops.seconds += took.as_secs_f64();
    if ok {
        ops.latencies_us.push(took.as_micros() as u64);
    } else {
        ops.errors += 1;
    }
}

/// Stores artifacts up to `--stored-mib`, waits for every partition at three replicas, kills the last node
/// and times detection and repair.
fn rereplicate(cluster: &mut Cluster, options: &Options, n: usize, blob: &Path) -> Result<Value, String> {
    let wanted = (options.stored_mib << 20).div_ceil(BLOB).max(options.blobs);
    for i in options.blobs..wanted {
        let artifact = format!("org.bench:blob{n}:1.0.{i}");
        let stored = cluster.ask(i % n, &json!({"op": "store", "artifact": artifact, "file": blob}))?;
        if stored["ok"]["size"] != BLOB {
            return Err(format!("storing {artifact}: {stored}"));
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let whole = |c: &Cluster, nodes: &[usize]| {
        nodes.iter().all(|&i| {
            c.dht(i).is_some_and(|d| {
                d["under_replicated"] == 0 && d["members"].as_array().map(Vec::len) == Some(nodes.len())
            })
        })
    };
    if wait_for(Duration::from_secs(120), || whole(cluster, &all)).is_err() {
        return Err(format!("not every partition reached three replicas: {:?}", cluster.dht(0)));
    }
    let bytes_before: u64 = all.iter().map(|&i| cluster.bytes(i)).sum();
    let stored_gib = (wanted * BLOB) as f64 / (1u64 << 30) as f64;
    let last = n - 1;
    cluster.c.kill(last);
    let killed = Instant::now();
    let survivors: Vec<usize> = (0..last).collect();
    let mut first_detect_s = None;
    let detected = wait_for(Duration::from_secs(60), || {
        let dropped = survivors.iter().filter(|&&i| cluster.members(i) == Some(last)).count();
        if dropped > 0 && first_detect_s.is_none() {
            first_detect_s = Some(killed.elapsed().as_secs_f64());
        }
        dropped == survivors.len()
    });
    let detect_s = first_detect_s.unwrap_or_else(|| killed.elapsed().as_secs_f64());
    if detected.is_err() {
        return Err(format!("the survivors did not drop node {last} from the members: {:?}", cluster.dht(0)));
    }
    // Three copies of everything again, or as many as the survivors can hold.
    let wanted_bytes = bytes_before / n.min(3) as u64 * last.min(3) as u64;
    let repaired = wait_for(Duration::from_secs(300), || {
        whole(cluster, &survivors) && survivors.iter().map(|&i| cluster.bytes(i)).sum::<u64>() >= wanted_bytes
    });
    let whole_s = killed.elapsed().as_secs_f64();
    if repaired.is_err() {
        return Err(format!("not back at three replicas within 300 s: {:?}", cluster.dht(0)));
    }
    Ok(json!({"stored_mib": (wanted * BLOB) >> 20, "bytes_before": bytes_before, "detect_s": detect_s,
        "whole_s": whole_s, "repair_s_per_gib": (whole_s - detect_s) / stored_gib,
        "text": format!("{} MiB stored (3 copies); node {last} killed: out of the first survivor's members after \
            {detect_s:.2} s, every partition at its full replica count after {whole_s:.2} s, so {:.2} s of copying per \
            GiB stored",
            (wanted * BLOB) >> 20, (whole_s - detect_s) / stored_gib)}))
}

struct Cluster {
    c: LocalCluster,
    debug: Vec<SocketAddr>,
}

impl Cluster {
    fn start(aetherd: &Path, n: usize, dir: &Path) -> Result<Cluster, String> {
        let _ = std::fs::remove_dir_all(dir);
        let spec = ClusterSpec::new(n, dir, aetherd);
        let mut c = LocalCluster::prepare(spec)?;
        for node in &c.nodes {
            let text = std::fs::read_to_string(&node.config).map_err(|e| e.to_string())?;
            let text = text.replacen("[cluster]\n", &format!("[cluster]\nlease_grace_ms = {LEASE_GRACE_MS}\n"), 1);
            std::fs::write(&node.config, text).map_err(|e| e.to_string())?;
        }
        let debug: Vec<SocketAddr> = free_ports(n).into_iter().map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
        let base_env = c.spec.env.clone();
        for (i, addr) in debug.iter().enumerate() {
            c.spec.env = base_env.clone();
            c.spec.env.push(("AETHER_DHT_DEBUG".into(), addr.to_string()));
            c.start_node(i)?;
        }
        c.wait_ready(Duration::from_secs(60))?;
        Ok(Cluster { c, debug })
    }

    fn ask(&self, i: usize, request: &Value) -> Result<Value, String> {
        ask(&mut None, self.debug[i], request)
    }

    fn dht(&self, i: usize) -> Option<Value> {
        let answer = http(self.c.nodes[i].management, "GET", "/api/dht", b"").ok()?;
        (answer.status == 200).then(|| answer.json())
    }

    fn members(&self, i: usize) -> Option<usize> {
        self.dht(i).and_then(|d| d["members"].as_array().map(Vec::len))
    }

    fn bytes(&self, i: usize) -> u64 {
        self.dht(i).and_then(|d| d["bytes"].as_u64()).unwrap_or(0)
    }
}

/// A connection to a debug port: one line of JSON out, one back.
struct LineConn {
    reader: BufReader<TcpStream>,
}

/// One request on `conn` (opened to `addr` when absent; dropped after an error).
fn ask(conn: &mut Option<LineConn>, addr: SocketAddr, request: &Value) -> Result<Value, String> {
    if conn.is_none() {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| format!("{addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
        *conn = Some(LineConn { reader: BufReader::new(stream) });
    }
    let Some(open) = conn.as_mut() else { return Err("no connection".into()) };
    let mut line = request.to_string();
    line.push('\n');
    let answer = open.reader.get_mut().write_all(line.as_bytes()).map_err(|e| e.to_string()).and_then(|()| {
        let mut reply = String::new();
        open.reader.read_line(&mut reply).map_err(|e| e.to_string())?;
        serde_json::from_str::<Value>(&reply).map_err(|e| format!("{e}: {reply:?}"))
    });
    if answer.is_err() {
        *conn = None;
    }
    answer
}

/// `CONNECTIONS` threads, each running `op(connection, thread, i)` for i = 0, 1, ... for `seconds`; also
/// returns each thread's count of successes (a put thread's successes are its keys 0..count when none failed).
fn load<C>(seconds: f64, op: impl Fn(&mut Option<C>, usize, u64) -> Result<(), String> + Sync) -> (Ops, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let started = Instant::now();
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|t| {
                let op = &op;
                scope.spawn(move || {
                    let mut ops = Ops::default();
                    let mut conn = None;
                    let mut i = 0u64;
                    while Instant::now() < deadline {
                        let sent = Instant::now();
                        match op(&mut conn, t, i) {
                            Ok(()) => ops.latencies_us.push(sent.elapsed().as_micros() as u64),
                            Err(_) => ops.errors += 1,
                        }
                        i += 1;
                    }
                    ops
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_default()).collect::<Vec<_>>()
    });
    let counts = parts.iter().map(|p| p.latencies_us.len() as u64).collect();
    (Ops::merge(parts, started.elapsed().as_secs_f64()), counts)
}

// ---------------------------------------------------------------------------------------------------
// The baseline

/// An nginx master with one worker serving and taking files by WebDAV `PUT`; stopped (SIGTERM) on drop.
struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(bin: &Path, dir: &Path) -> Result<Nginx, String> {
        std::fs::create_dir_all(dir.join("www/files")).map_err(|e| format!("{}: {e}", dir.display()))?;
        // nginx started as root runs its worker as another user, which must be able to write the files.
        for folder in [dir.to_path_buf(), dir.join("www"), dir.join("www/files")] {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o777));
        }
        let port = free_ports(1).first().copied().ok_or("no free port on 127.0.0.1")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let d = dir.display();
        let conf = format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             keepalive_requests 100000000;\n  keepalive_timeout 300s;\n  client_max_body_size 64m;\n  \
             server {{\n    listen {addr};\n    root {d}/www;\n    location /files/ {{\n      \
             dav_methods PUT DELETE;\n      create_full_put_path on;\n    }}\n  }}\n}}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).map_err(|e| format!("{}: {e}", path.display()))?;
        let child = Command::new(bin)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let mut nginx = Nginx { child, addr };
        let up = wait_for(Duration::from_secs(10), || {
            matches!(nginx.child.try_wait(), Ok(Some(_))) || http(addr, "PUT", "/files/probe", b"x").is_ok()
        });
        if up.is_err() || !matches!(nginx.child.try_wait(), Ok(None)) {
            let log = std::fs::read_to_string(dir.join("error.log")).unwrap_or_default();
            return Err(format!("nginx did not come up: {}", log.trim()));
        }
        Ok(nginx)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        devcluster::terminate_pid(self.child.id(), Duration::from_secs(5));
        let _ = self.child.wait();
    }
}

fn nginx_figures(nginx: &Nginx, options: &Options, blob: &Path) -> Figures {
    let addr = nginx.addr;
    let small = vec![b'v'; SMALL];
    let exchange = |conn: &mut Option<bench::Conn>, method: &'static str, path: String, body: Vec<u8>| {
        if conn.is_none() {
            *conn = Some(bench::Conn::open(addr, None).map_err(|e| e.to_string())?);
        }
        let Some(open) = conn.as_mut() else { return Err("no connection".to_string()) };
        let answer = open.exchange(&bench::Request { method, path, body }, "");
        match answer {
            Ok((status, body)) if status < 300 => Ok(body),
            Ok((status, _)) => Err(format!("status {status}")),
            Err(e) => {
                *conn = None;
                Err(e.to_string())
            }
        }
    };
    let (small_put, written) = load(options.seconds, |conn, t, i| {
        exchange(conn, "PUT", format!("/files/bench/{t}/{i}"), small.clone()).map(drop)
    });
    let (small_get, _) = load(options.seconds, |conn, t, i| {
        exchange(conn, "GET", format!("/files/bench/{t}/{}", i % written[t].max(1)), Vec::new()).and_then(|body| {
            if body.len() == SMALL {
                Ok(())
            } else {
                Err("short".into())
            }
        })
    });
    let bytes = std::fs::read(blob).unwrap_or_default();
    let (mut blob_put, mut blob_get) = (Ops::default(), Ops::default());
    let mut conn = None;
    for i in 0..options.blobs {
        let started = Instant::now();
        let put = exchange(&mut conn, "PUT", format!("/files/blob{i}.bin"), bytes.clone());
        record(&mut blob_put, started, put.is_ok());
        let started = Instant::now();
        let got = exchange(&mut conn, "GET", format!("/files/blob{i}.bin"), Vec::new());
        record(&mut blob_get, started, got.is_ok_and(|b| b.len() == BLOB));
    }
    blob_put.latencies_us.sort_unstable();
    blob_get.latencies_us.sort_unstable();
    Figures { small_put, small_get, blob_put, blob_get }
}

/// `len` bytes of a xorshift stream: incompressible, reproducible.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.max(1);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}
