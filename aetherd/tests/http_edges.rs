//! Hostile HTTP against real `aetherd` processes, on both the management and the app port: bad and
//! duplicate Content-Length, huge heads (with the node's memory watched), slow-body clients by the
//! hundred, and connections past the descriptor budget; the node serves on through all of it.

use devcluster::{example_slices_repo, http, wait_for, ClusterSpec, LocalCluster};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SETTLE: Duration = Duration::from_secs(30);

const ECHO: &str = "name = \"edges\"\n[[slices]]\nartifact = \"org.aether.examples:echo:1.0.0\"\ninstances = 1\n";

/// One node, ready; `aetherd` is the binary or a wrapper script.
fn start(name: &str, aetherd: Option<&Path>) -> LocalCluster {
    let repo = example_slices_repo().unwrap();
    let dir = std::env::temp_dir().join(format!("aether-edges-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let binary = PathBuf::from(env!("CARGO_BIN_EXE_aetherd"));
    let mut spec = ClusterSpec::new(1, &dir, aetherd.unwrap_or(&binary));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let c = LocalCluster::start(spec).unwrap();
    wait_for(SETTLE, || c.health(0).is_some_and(|h| h["ready"] == true)).unwrap();
    c
}

fn deploy_echo(c: &LocalCluster) {
    let posted = http(c.nodes[0].management, "POST", "/api/blueprints", ECHO.as_bytes()).unwrap();
    assert_eq!(posted.status, 201, "{}", posted.text());
    let echo = |_: ()| http(c.nodes[0].app, "GET", "/echo/up", b"").map(|r| r.status).unwrap_or(0);
    wait_for(SETTLE, || echo(()) == 200).unwrap();
}

/// Send raw bytes, read the answer until the server closes.
fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = stream.write_all(raw);
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

fn status(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

fn json_error(raw: &str) -> bool {
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str::<serde_json::Value>(body).is_ok_and(|v| v["error"].is_string() && v["detail"].is_string())
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap()
}

#[test]
fn bad_framing_and_huge_heads_are_refused_on_both_ports_with_memory_flat() {
    let c = start("framing", None);
    let pid = c.pid(0).unwrap();
    let ports = [("management", c.nodes[0].management, "/api/kv/k"), ("app", c.nodes[0].app, "/echo")];
    for (name, addr, path) in ports {
        for lengths in ["Content-Length: abc", "Content-Length: -1", "Content-Length: 3\r\nContent-Length: 4"] {
            let raw = exchange(addr, format!("PUT {path} HTTP/1.1\r\nHost: a\r\n{lengths}\r\n\r\nabcd").as_bytes());
            assert_eq!(status(&raw), 400, "{name} {lengths}: {raw}");
            assert!(json_error(&raw), "{raw}");
        }
    }
    let line = format!("GET /api/health HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(1 << 20));
    let many = format!("GET /api/health HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-H: v\r\n".repeat(10_000));
    // Warm up, then measure across many rounds.
    for (_, addr, _) in ports {
        assert_eq!(status(&exchange(addr, line.as_bytes())), 431);
    }
    let before = rss_kib(pid);
    for _ in 0..20 {
        for (name, addr, _) in ports {
            let raw = exchange(addr, line.as_bytes());
            assert!(status(&raw) == 431 && json_error(&raw), "{name}: {raw}");
            let raw = exchange(addr, many.as_bytes());
            assert!(status(&raw) == 431 && json_error(&raw), "{name}: {raw}");
        }
    }
    let after = rss_kib(pid);
    assert!(after < before + 16 * 1024, "RSS grew from {before} KiB to {after} KiB");
    assert_eq!(c.health(0).map(|h| h["ready"].clone()), Some(serde_json::Value::Bool(true)));
}

/// A client that sent a head and a few body bytes of a larger body, and holds on.
fn slow_body(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(format!("PUT {path} HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\nslow").as_bytes()).unwrap();
    stream
}

/// Milliseconds of one request, and its status.
fn timed(addr: SocketAddr, path: &str) -> (u128, u16) {
    let started = Instant::now();
    let status = http(addr, "GET", path, b"").map(|r| r.status).unwrap_or(0);
    (started.elapsed().as_millis(), status)
}

#[test]
fn two_hundred_slow_body_clients_per_port_do_not_slow_health_or_routes() {
    let c = start("slow", None);
    deploy_echo(&c);
    let (management, app) = (c.nodes[0].management, c.nodes[0].app);
    let mut held: Vec<TcpStream> = (0..200).map(|_| slow_body(management, "/api/kv/slow")).collect();
    held.extend((0..200).map(|_| slow_body(app, "/echo")));
    std::thread::sleep(Duration::from_millis(200));
    let mut slow = Vec::new();
    for _ in 0..10 {
        for (addr, path) in [(management, "/api/health"), (app, "/echo/fast")] {
            let (ms, status) = timed(addr, path);
            assert_eq!(status, 200, "{path}");
            if ms >= 100 {
                slow.push((path, ms));
            }
        }
        // The slow clients trickle on meanwhile.
        for stream in held.iter_mut().step_by(7) {
            let _ = stream.write_all(b"x");
        }
    }
    assert!(slow.len() <= 1, "answers past 100 ms: {slow:?}");
    drop(held);
}

/// A wrapper that starts `aetherd` with at most 256 open files (soft and hard).
fn low_fd_wrapper(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let script = dir.join("aetherd-256");
    let text = format!("#!/bin/sh\nulimit -n 256 || exit 1\nexec '{}' \"$@\"\n", env!("CARGO_BIN_EXE_aetherd"));
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// `/health/ready` over a kept-alive connection (a new one would wait in a full port's backlog).
fn ready_over(stream: &mut TcpStream) -> (u16, serde_json::Value) {
    stream.write_all(b"GET /health/ready HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let length: usize =
        head.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok()).unwrap();
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status(&String::from_utf8_lossy(&raw)), serde_json::from_slice(&body).unwrap())
}

#[test]
fn connections_past_the_descriptor_budget_pause_the_ports_until_they_close() {
    let dir = std::env::temp_dir().join(format!("aether-edges-wrapper-{}", std::process::id()));
    let wrapper = low_fd_wrapper(&dir);
    let c = start("fds", Some(&wrapper));
    let (management, app) = (c.nodes[0].management, c.nodes[0].app);
    let mut probe = TcpStream::connect(management).unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ready_over(&mut probe).0, 200);
    // 256 descriptors: each port holds at most (256 - 64) / 2 = 96 connections; open more.
    let flood: Vec<TcpStream> =
        (0..150).flat_map(|_| [TcpStream::connect(app).unwrap(), TcpStream::connect(management).unwrap()]).collect();
    let mut seen = serde_json::Value::Null;
    let reported = wait_for(Duration::from_secs(5), || {
        let (status, body) = ready_over(&mut probe);
        seen = body;
        status == 503
    });
    assert!(reported.is_ok(), "ready stayed 200: {seen}");
    let problems = seen["problems"].to_string();
    assert!(problems.contains("app port is not accepting"), "{seen}");
    assert!(problems.contains("management port is not accepting"), "{seen}");
    drop(flood);
    let back = wait_for(Duration::from_secs(10), || {
        timed(app, "/echo/x").1 == 404 && timed(management, "/health/ready").1 == 200
    });
    assert!(back.is_ok(), "the ports did not come back: {}", c.log(0));
    assert_eq!(c.health(0).map(|h| h["ready"].clone()), Some(serde_json::Value::Bool(true)));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The node's open-file limit, from /proc (setting it is the only way to read another process's).
fn read_limit(pid: u32) -> rustix::process::Rlimit {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<Option<u64>> = line.split_whitespace().skip(3).take(2).map(|n| n.parse().ok()).collect();
    rustix::process::Rlimit { current: numbers[0], maximum: numbers[1] }
}

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count() as u64
}

#[test]
fn a_node_out_of_descriptors_pauses_accepting_and_serves_again_once_they_are_back() {
    use rustix::process::{prlimit, Pid, Resource, Rlimit};
    let c = start("emfile", None);
    let pid = c.pid(0).unwrap();
    let (management, app) = (c.nodes[0].management, c.nodes[0].app);
    let mut probe = TcpStream::connect(management).unwrap();
    probe.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(ready_over(&mut probe).0, 200);
    // Leave the node a few descriptors, far below its ports' budget: accept itself fails with EMFILE.
    let node = Pid::from_raw(pid as i32).unwrap();
    let original = read_limit(pid);
    let tight = open_fds(pid) + 10;
    prlimit(Some(node), Resource::Nofile, Rlimit { current: Some(tight), maximum: original.maximum }).unwrap();
    let flood: Vec<TcpStream> =
        (0..40).flat_map(|_| [TcpStream::connect(app), TcpStream::connect(management)]).flatten().collect();
    let mut seen = serde_json::Value::Null;
    let reported = wait_for(Duration::from_secs(5), || {
        let (status, body) = ready_over(&mut probe);
        seen = body;
        status == 503 && seen["problems"].to_string().contains("not accepting")
    });
    assert!(reported.is_ok(), "ready stayed 200 out of descriptors: {seen}");
    assert!(c.log(0).contains("cannot accept"), "{}", c.log(0));
    // Descriptors back: both ports serve again, the flood included.
    let _ = prlimit(Some(node), Resource::Nofile, original);
    drop(flood);
    let back = wait_for(Duration::from_secs(10), || {
        timed(app, "/echo/x").1 == 404 && timed(management, "/health/ready").1 == 200
    });
    assert!(back.is_ok(), "the ports did not come back: {}", c.log(0));
    assert_eq!(ready_over(&mut probe).0, 200);
}

/// A self-signed certificate for `localhost`: (certificate DER, certificate PEM, key PEM).
fn certificate() -> (Vec<u8>, String, String) {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    (cert.der().to_vec(), cert.pem(), key_pair.serialize_pem())
}

/// One request over TLS trusting only `trusted`: (status, body), or the TLS or I/O error.
fn https(addr: SocketAddr, trusted: &[u8], path: &str) -> Result<(u16, String), String> {
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(trusted.to_vec())).map_err(|e| e.to_string())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().map_err(|_| "bad name".to_string())?;
    let session = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    let mut stream = rustls::StreamOwned::new(session, tcp);
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
    let mut got = Vec::new();
    stream.read_to_end(&mut got).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&got).into_owned();
    Ok((status(&raw), raw.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned()))
}

#[test]
fn tls_on_both_ports_with_a_certificate_reloaded_on_sighup() {
    let dir = std::env::temp_dir().join(format!("aether-edges-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let repo = example_slices_repo().unwrap();
    let mut spec = ClusterSpec::new(1, &dir, &PathBuf::from(env!("CARGO_BIN_EXE_aetherd")));
    spec.extra_args = vec!["--repo".into(), repo.display().to_string()];
    let mut c = LocalCluster::prepare(spec).unwrap();
    let (first_der, first_pem, first_key) = certificate();
    std::fs::write(dir.join("cert.pem"), &first_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &first_key).unwrap();
    let mut config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    config.push_str(&format!("[tls]\ncert_file = \"{0}/cert.pem\"\nkey_file = \"{0}/key.pem\"\n", dir.display()));
    std::fs::write(&c.nodes[0].config, config).unwrap();
    c.start_node(0).unwrap();
    let (management, app) = (c.nodes[0].management, c.nodes[0].app);
    let ready = wait_for(SETTLE, || https(management, &first_der, "/health/ready").is_ok_and(|(s, _)| s == 200));
    assert!(ready.is_ok(), "{}", c.log(0));
    assert_eq!(https(app, &first_der, "/no/route").unwrap().0, 404);
    // Plain HTTP gets no answer from a TLS port.
    assert_eq!(status(&exchange(management, b"GET /api/health HTTP/1.1\r\nHost: a\r\n\r\n")), 0);

    let (second_der, second_pem, second_key) = certificate();
    std::fs::write(dir.join("cert.pem"), &second_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &second_key).unwrap();
    let node = rustix::process::Pid::from_raw(c.pid(0).unwrap() as i32).unwrap();
    rustix::process::kill_process(node, rustix::process::Signal::HUP).unwrap();
    let swapped = wait_for(Duration::from_secs(10), || {
        https(management, &second_der, "/health/live").is_ok() && https(app, &second_der, "/x").is_ok()
    });
    assert!(swapped.is_ok(), "{}", c.log(0));
    assert!(https(management, &first_der, "/health/live").is_err(), "the old certificate is gone");

    // A broken key: the reload fails, says why, and the ports keep the second certificate.
    std::fs::write(dir.join("key.pem"), "not a key").unwrap();
    rustix::process::kill_process(node, rustix::process::Signal::HUP).unwrap();
    let logged = wait_for(Duration::from_secs(10), || c.log(0).contains("TLS reload failed"));
    assert!(logged.is_ok(), "{}", c.log(0));
    assert_eq!(https(management, &second_der, "/health/live").unwrap().0, 200);
    assert_eq!(https(app, &second_der, "/x").unwrap().0, 404);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}
