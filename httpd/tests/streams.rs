//! Streaming answers: chunked framing and a clean end, a reader that stops reading is cut with the server's
//! buffering bounded, the caps on open streams (per port and per client address), the end of every stream when the server stops, and TLS.

mod common;

use common::*;
use httpd::{Config, Handler, Job, Request, Response, Server, StreamSource, StreamStatus};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `/count?n=N`: lines `0\n` .. `N-1\n`, one per poll, then the end. `/flood`: as many bytes as offered,
/// forever (counted in `produced`). `/quiet`: open, silent. Anything else: a plain answer.
#[derive(Default)]
struct Streams {
    produced: Arc<AtomicUsize>,
}

struct Count {
    next: usize,
    n: usize,
}

impl StreamSource for Count {
    fn poll(&mut self, _now: Instant, out: &mut Vec<u8>, _room: usize) -> StreamStatus {
        if self.next < self.n {
            out.extend_from_slice(format!("{}\n", self.next).as_bytes());
            self.next += 1;
        }
        if self.next < self.n {
            StreamStatus::Open
        } else {
            StreamStatus::End
        }
    }
}

struct Flood(Arc<AtomicUsize>);

impl StreamSource for Flood {
    fn poll(&mut self, _now: Instant, out: &mut Vec<u8>, room: usize) -> StreamStatus {
        out.resize(out.len() + room, b'x');
        self.0.fetch_add(room, Ordering::SeqCst);
        StreamStatus::Open
    }
}

struct Quiet;

impl StreamSource for Quiet {
    fn poll(&mut self, _now: Instant, _out: &mut Vec<u8>, _room: usize) -> StreamStatus {
        StreamStatus::Open
    }
}

impl Handler for Streams {
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        1024
    }

    fn handle(&self, request: Request, _job: &Job) -> Response {
        let (path, query) = request.target.split_once('?').unwrap_or((&request.target, ""));
        let source: Box<dyn StreamSource> = match path {
            "/count" => Box::new(Count { next: 0, n: query.trim_start_matches("n=").parse().unwrap_or(0) }),
            "/flood" => Box::new(Flood(Arc::clone(&self.produced))),
            "/quiet" => Box::new(Quiet),
            _ => return Response::new(200, "text/plain", b"plain".to_vec()),
        };
        Response::streaming("text/event-stream", source)
    }
}

fn start_streams(config: Config) -> (Server, Arc<Streams>) {
    let handler = Arc::new(Streams::default());
    (Server::start(config, handler.clone()).unwrap(), handler)
}

/// The payload of a chunked body (panics on bad framing); whether the terminating chunk came.
fn dechunk(mut body: &str) -> (String, bool) {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size, 16).unwrap_or_else(|_| panic!("chunk size '{size}'"));
        if size == 0 {
            return (out, rest == "\r\n");
        }
        out.push_str(&rest[..size]);
        assert_eq!(&rest[size..size + 2], "\r\n");
        body = &rest[size + 2..];
    }
    (out, false)
}

#[test]
fn a_stream_is_chunked_for_http_1_1_and_ends_with_the_last_chunk() {
    let (server, _) = start_streams(config());
    let raw = exchange(server.addr(), b"GET /count?n=3 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(status(&raw), 200, "{raw}");
    assert!(raw.contains("Transfer-Encoding: chunked\r\n") && !raw.contains("Content-Length"), "{raw}");
    assert!(raw.contains("Content-Type: text/event-stream\r\n"), "{raw}");
    assert_eq!(dechunk(body(&raw)), ("0\n1\n2\n".to_string(), true), "{raw}");

    let old = exchange(server.addr(), b"GET /count?n=2 HTTP/1.0\r\n\r\n");
    assert!(!old.contains("chunked"), "{old}");
    assert_eq!(body(&old), "0\n1\n", "HTTP/1.0: the body ends with the connection");

    let head = exchange(server.addr(), b"HEAD /count?n=2 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((status(&head), body(&head)), (200, ""), "{head}");
    wait_until(&server, |s| s.streams == 0 && s.connections == 0);
}

#[test]
fn a_reader_that_stops_reading_is_cut_and_the_server_buffers_at_most_its_bound() {
    let mut config = config();
    config.limits.stream_buffer_bytes_max = 64 * 1024;
    config.timeouts.write = Duration::from_millis(500);
    let (server, handler) = start_streams(config);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET /flood HTTP/1.0\r\n\r\n").unwrap();
    wait_until(&server, |s| s.streams == 1);
    // Not reading: the socket buffers fill, the server's buffer fills, writes stall, the stream is cut.
    let started = Instant::now();
    while server.stats().streams != 0 {
        assert!(started.elapsed() < Duration::from_secs(10), "the stalled stream was never cut");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let produced = handler.produced.load(Ordering::SeqCst);
    let head = received.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
    let data = received.len() - head;
    assert!(data > 64 * 1024, "the client got {data} bytes");
    let unsent = produced - data;
    assert!(
        unsent <= 64 * 1024,
        "{produced} bytes produced, {data} received: the server held {unsent}, over its bound"
    );
}

#[test]
fn past_the_stream_cap_a_stream_is_refused_with_503_and_plain_answers_still_work() {
    let mut config = config();
    config.limits.streams_max = 2;
    let (server, _) = start_streams(config);
    let mut open: Vec<_> = (0..2).map(|_| connect(server.addr())).collect();
    for stream in &mut open {
        stream.write_all(b"GET /quiet HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    }
    wait_until(&server, |s| s.streams == 2);
    let refused = exchange(server.addr(), b"GET /quiet HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_json_error(&refused, 503);
    assert!(refused.contains("Retry-After"), "{refused}");
    let plain = exchange(server.addr(), b"GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_eq!(body(&plain), "plain");
    drop(open.pop());
    wait_until(&server, |s| s.streams == 1);
    let mut again = connect(server.addr());
    again.write_all(b"GET /count?n=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(dechunk(body(&read_all(&mut again))).0, "0\n", "a closed stream frees its place");
}

#[test]
fn one_address_cannot_hold_every_stream() {
    let mut config = config();
    config.limits.streams_max = 4;
    config.limits.streams_per_ip_max = 2;
    let (server, _) = start_streams(config);
    let greedy = std::net::Ipv4Addr::new(127, 0, 0, 7);
    let mut open: Vec<_> = (0..2).map(|_| connect_from(greedy, server.addr())).collect();
    for stream in &mut open {
        stream.write_all(b"GET /quiet HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    }
    wait_until(&server, |s| s.streams == 2);
    let mut third = connect_from(greedy, server.addr());
    third.write_all(b"GET /quiet HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let refused = read_all(&mut third);
    assert_json_error(&refused, 503);
    assert!(refused.contains("127.0.0.7"), "{refused}");
    let mut other = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 8), server.addr());
    other.write_all(b"GET /count?n=1 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    assert_eq!(dechunk(body(&read_all(&mut other))).0, "0\n", "another address still gets a stream");
}

#[test]
fn stopping_the_server_ends_every_stream_with_its_last_chunk() {
    let (server, _) = start_streams(config());
    let mut streams: Vec<_> = (0..3).map(|_| connect(server.addr())).collect();
    for stream in &mut streams {
        stream.write_all(b"GET /quiet HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    }
    wait_until(&server, |s| s.streams == 3);
    let stopped = std::thread::spawn(move || server.stop());
    for stream in &mut streams {
        let raw = read_all(stream);
        assert_eq!(status(&raw), 200, "{raw}");
        assert_eq!(dechunk(body(&raw)), (String::new(), true), "{raw}");
    }
    stopped.join().unwrap();
}

#[test]
fn a_stream_over_tls_arrives_whole() {
    let rcgen::CertifiedKey { cert, key_pair } = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("httpd-stream-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let files = httpd::TlsFiles { cert_file: dir.join("cert.pem"), key_file: dir.join("key.pem") };
    std::fs::write(&files.cert_file, cert.pem()).unwrap();
    std::fs::write(&files.key_file, key_pair.serialize_pem()).unwrap();
    let mut config = config();
    config.tls = Some(files);
    let (server, _) = start_streams(config);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let session = rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut stream = rustls::StreamOwned::new(session, connect(server.addr()));
    stream.write_all(b"GET /count?n=50 HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let raw = String::from_utf8_lossy(&got).into_owned();
    let expected: String = (0..50).map(|i| format!("{i}\n")).collect();
    assert_eq!(dechunk(body(&raw)), (expected, true), "{raw}");
    let _ = std::fs::remove_dir_all(&dir);
}
