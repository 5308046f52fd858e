//! A test port and raw-socket clients shared by the suites.

#![allow(dead_code)]

use httpd::{Config, Handler, Job, Request, Response, Server};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Routes: `/echo` (the body back), `/slow` (300 ms), `/block` (2 s), `/hang` (10 s), `/big` (1 MiB bodies, else 1 KiB),
/// `/thread` (the name of the thread that ran it), `/panic`, anything else: the method and target.
#[derive(Default)]
pub struct TestHandler {
    pub calls: AtomicUsize,
}

impl Handler for TestHandler {
    fn body_limit(&self, _method: &str, path: &str) -> usize {
        if path == "/big" {
            1 << 20
        } else {
            1024
        }
    }

    fn handle(&self, request: Request, job: &Job) -> Response {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let path = request.target.split('?').next().unwrap_or("").to_owned();
        match path.as_str() {
            "/echo" | "/big" => Response::new(200, "application/octet-stream", request.body),
            "/slow" => {
                std::thread::sleep(Duration::from_millis(300));
                Response::new(200, "text/plain", b"slow".to_vec())
            }
            "/block" => {
                std::thread::sleep(Duration::from_secs(2));
                Response::new(200, "text/plain", b"block".to_vec())
            }
            "/thread" => {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                Response::new(200, "text/plain", name.into_bytes())
            }
            "/panic" => panic!("the panic route"),
            "/hang" => {
                job.set_note("the hang route did not answer in time".into());
                std::thread::sleep(Duration::from_secs(10));
                Response::new(200, "text/plain", b"late".to_vec())
            }
            _ => Response::new(200, "text/plain", format!("{} {}", request.method, request.target).into_bytes()),
        }
    }
}

pub fn config() -> Config {
    let mut config = Config::new("test", "127.0.0.1:0".parse().unwrap());
    config.workers = 2;
    config
}

pub fn start(config: Config) -> (Server, Arc<TestHandler>) {
    let handler = Arc::new(TestHandler::default());
    let server = Server::start(config, handler.clone()).unwrap();
    (server, handler)
}

/// Wait (up to 5 s) until `ok` holds.
pub fn wait_until(server: &Server, ok: impl Fn(&httpd::Stats) -> bool) {
    let started = std::time::Instant::now();
    while !ok(&server.stats()) {
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", server.stats());
        std::thread::sleep(Duration::from_millis(2));
    }
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// A connection to `addr` from the loopback address `from` (any of 127/8), so tests can be several clients.
pub fn connect_from(from: std::net::Ipv4Addr, addr: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType};
    let fd = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&fd, &SocketAddr::from((from, 0))).unwrap();
    rustix::net::connect(&fd, &addr).unwrap();
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Send `raw`, read until the server closes (or 10 s); what came back.
pub fn exchange(addr: SocketAddr, raw: &[u8]) -> String {
    let mut stream = connect(addr);
    let _ = stream.write_all(raw);
    read_all(&mut stream)
}

pub fn read_all(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

/// The status code of the first response in `raw` (0 when there is none).
pub fn status(raw: &str) -> u16 {
    raw.strip_prefix("HTTP/1.1 ").and_then(|r| r.get(..3)).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Every status line's code, in order.
pub fn statuses(raw: &str) -> Vec<u16> {
    raw.match_indices("HTTP/1.1 ").filter_map(|(at, _)| raw[at + 9..].get(..3)?.parse().ok()).collect()
}

pub fn body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// Read one response (head and Content-Length body) from a kept-alive connection.
pub fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => raw.push(byte[0]),
            _ => return (0, String::from_utf8_lossy(&raw).into_owned()),
        }
    }
    let head = String::from_utf8_lossy(&raw).into_owned();
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).unwrap();
    (status(&head), String::from_utf8_lossy(&body).into_owned())
}

/// Asserts the answer is a JSON error with `status`.
pub fn assert_json_error(raw: &str, expected: u16) {
    assert_eq!(status(raw), expected, "{raw}");
    assert!(raw.to_ascii_lowercase().contains("content-type: application/json"), "{raw}");
    let value: serde_json::Value = serde_json::from_str(body(raw)).unwrap_or_else(|e| panic!("{e}: {raw}"));
    assert!(value["error"].is_string() && value["detail"].is_string(), "{raw}");
}
