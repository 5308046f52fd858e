//! `aetherd --dev --repo DIR --slice G:A:V ...` as an operator runs it: a real process serving the
//! example slices' routes on its app port, answering JSON errors, and surviving faulty slices.
//!
//! The slices are built on first use by `cargo xtask build-slices` into `target/slices-build`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    devcluster::example_slices_repo().expect("the example slices build")
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port")
}

/// A running `aetherd --dev`, killed when dropped.
struct Node {
    child: Child,
    app: SocketAddr,
    data_dir: PathBuf,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn command(name: &str, slices: &[&str]) -> (Command, SocketAddr, PathBuf) {
    let app = free_addr();
    let data_dir = std::env::temp_dir().join(format!("aether-dev-slices-{name}-{}", std::process::id()));
    let mut command = Command::new(env!("CARGO_BIN_EXE_aetherd"));
    command
        .args(["--dev", "--repo"])
        .arg(repo())
        .args(["--app", &app.to_string()])
        .args(["--management", &free_addr().to_string()])
        .args(["--cluster", &free_addr().to_string()])
        .arg("--data-dir")
        .arg(&data_dir)
        .env("AETHER_CALL_DEADLINE_MS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for slice in slices {
        command.args(["--slice", slice]);
    }
    (command, app, data_dir)
}

fn start(name: &str, slices: &[&str]) -> Node {
    let (mut command, app, data_dir) = command(name, slices);
    let child = command.stderr(Stdio::null()).spawn().expect("start aetherd");
    let node = Node { child, app, data_dir };
    let until = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(app).is_err() {
        assert!(Instant::now() < until, "aetherd did not open its app port {app}");
        std::thread::sleep(Duration::from_millis(50));
    }
    node
}

/// One HTTP/1.1 request; returns (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send");
    stream.write_all(body.as_bytes()).expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).expect("read");
    let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status line");
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn json(body: &str) -> aether_sdk::json::Value {
    aether_sdk::json::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn text<'a>(value: &'a aether_sdk::json::Value, key: &str) -> &'a str {
    value.get(key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("no text `{key}` in {value:?}"))
}

#[test]
fn a_dev_node_serves_the_example_slices() {
    let node = start(
        "examples",
        &[
            "org.aether.examples:echo:1.0.0",
            "org.aether.examples:counter:1.0.0",
            "org.aether.examples:orders:1.0.0",
            "org.aether.examples:inventory:1.0.0",
            "org.aether.examples:pricing:1.0.0",
        ],
    );
    let (status, body) = http(node.app, "GET", "/echo/hi", "");
    assert_eq!(status, 200, "{body}");
    let echo = json(&body);
    assert_eq!((text(&echo, "echo"), text(&echo, "version")), ("hi", "1.0.0"));
    assert!(!text(&echo, "node").is_empty());
    assert_eq!(http(node.app, "POST", "/echo", r#"{"a": 1}"#), (200, r#"{"a": 1}"#.to_owned()));

    assert_eq!(http(node.app, "POST", "/counter/visits/incr", ""), (200, r#"{"name":"visits","value":1}"#.into()));
    assert_eq!(http(node.app, "POST", "/counter/visits/incr", ""), (200, r#"{"name":"visits","value":2}"#.into()));
    assert_eq!(http(node.app, "GET", "/counter/visits", ""), (200, r#"{"name":"visits","value":2}"#.into()));

    let (status, body) = http(node.app, "POST", "/orders", r#"{"item": "book", "qty": 2}"#);
    assert_eq!(status, 200, "{body}");
    let order = json(&body);
    assert_eq!(text(&order, "item"), "book");
    assert_eq!(order.get("total").and_then(|v| v.as_f64()), Some(25.0));
    assert_eq!(order.get("reserved"), Some(&aether_sdk::json::Value::Bool(true)));
    let (status, body) = http(node.app, "POST", "/orders", r#"{"item": "unicorn", "qty": 1}"#);
    assert_eq!((status, text(&json(&body), "error")), (404, "not found"));

    let (status, body) = http(node.app, "GET", "/no/such/route", "");
    assert_eq!((status, text(&json(&body), "error")), (404, "not found"));
}

#[test]
fn a_faulty_slice_gets_500_and_504_and_the_node_serves_on() {
    let node = start("faulty", &["org.aether.examples:faulty:1.0.0", "org.aether.examples:echo:2.0.0"]);
    let (status, body) = http(node.app, "GET", "/faulty/panic", "");
    assert_eq!((status, text(&json(&body), "error")), (500, "internal"));
    assert!(!body.contains("asked to panic"), "the panic text stays in the log: {body}");
    let started = Instant::now();
    let (status, body) = http(node.app, "GET", "/faulty/hang", "");
    assert_eq!((status, text(&json(&body), "error")), (504, "deadline exceeded"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(http(node.app, "GET", "/faulty/ok", "").0, 200);
    let (status, body) = http(node.app, "GET", "/echo/after", "");
    assert_eq!((status, text(&json(&body), "version")), (200, "2.0.0"));
}

#[test]
fn an_unknown_slice_stops_the_node_with_a_message() {
    let (mut command, _, data_dir) = command("unknown", &["org.aether.examples:nope:1.0.0"]);
    let output = command.output().expect("run aetherd");
    let _ = std::fs::remove_dir_all(data_dir);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("org.aether.examples:nope:1.0.0") && stderr.contains("not in the repository"), "{stderr}");
}
