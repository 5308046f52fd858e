//! Requests started on the I/O thread (`Handler::start`): one the handler defers there never needs a worker
//! (it is answered while the only worker is busy), one it gives back goes to the pool, and a `start` that
//! panics or takes a request without deferring it costs that request a 500, never the port.

mod common;

use common::{body, config, connect, exchange, read_response, status};
use httpd::{Handler, Job, Request, Response, Server};
use std::io::Write;
use std::time::{Duration, Instant};

/// `start`: `/io` deferred and answered from a thread of its own, `/panic` panics, `/lost` is taken without a
/// deferral; everything else is given back. `handle`: `/block` sleeps 2 s, else "pool".
struct Starting;

impl Handler for Starting {
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        1024
    }

    fn starts(&self) -> bool {
        true
    }

    fn start(&self, request: Request, job: &Job) -> Option<Request> {
        match request.target.as_str() {
            "/io" => {
                let later = job.defer().expect("a deferral on the I/O thread");
                std::thread::spawn(move || later.answer(Response::new(200, "text/plain", b"io".to_vec())));
                None
            }
            "/panic" => panic!("start failed"),
            "/lost" => None,
            "/at-once" => {
                job.defer().expect("a deferral").answer(Response::new(200, "text/plain", b"at once".to_vec()));
                None
            }
            _ => Some(request),
        }
    }

    fn handle(&self, request: Request, _job: &Job) -> Response {
        if request.target == "/block" {
            std::thread::sleep(Duration::from_secs(2));
        }
        Response::new(200, "text/plain", b"pool".to_vec())
    }
}

fn start() -> Server {
    let mut config = config();
    config.workers = 1;
    config.deadline = Some(Duration::from_secs(5));
    Server::start(config, std::sync::Arc::new(Starting)).unwrap()
}

#[test]
fn a_request_started_on_the_io_thread_needs_no_worker() {
    let server = start();
    let addr = server.addr();
    let blocker =
        std::thread::spawn(move || exchange(addr, b"GET /block HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let raw = exchange(addr, b"GET /io HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!((status(&raw), body(&raw)), (200, "io"), "{raw}");
    assert!(started.elapsed() < Duration::from_secs(1), "answered while the worker is busy: {:?}", started.elapsed());
    let raw = blocker.join().unwrap();
    assert_eq!((status(&raw), body(&raw)), (200, "pool"));
    server.stop();
}

#[test]
fn given_back_requests_go_to_the_pool_in_order_with_started_ones() {
    let server = start();
    let mut stream = connect(server.addr());
    stream
        .write_all(b"GET /io HTTP/1.1\r\nHost: a\r\n\r\nGET /other HTTP/1.1\r\nHost: a\r\n\r\nGET /io HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut stream), (200, "io".to_owned()));
    assert_eq!(read_response(&mut stream), (200, "pool".to_owned()));
    assert_eq!(read_response(&mut stream), (200, "io".to_owned()));
    server.stop();
}

#[test]
fn a_start_that_panics_or_takes_without_deferring_costs_that_request_a_500() {
    let server = start();
    let addr = server.addr();
    for path in ["/panic", "/lost"] {
        let raw = exchange(addr, format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes());
        common::assert_json_error(&raw, 500);
    }
    let raw = exchange(addr, b"GET /io HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&raw), 200, "the port serves on");
    assert_eq!(server.stats().workers_live, 1);
    server.stop();
}

#[test]
fn a_client_pipelining_requests_answered_at_once_cannot_hold_the_io_thread() {
    use std::io::Read;
    let server = start();
    let addr = server.addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut stream = connect(addr);
            let mut reader = stream.try_clone().unwrap();
            let drain = std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                let mut total = 0;
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                total
            });
            let batch = "GET /at-once HTTP/1.1\r\nHost: a\r\n\r\n".repeat(200);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if stream.write_all(batch.as_bytes()).is_err() {
                    break;
                }
            }
            let _ = stream.shutdown(std::net::Shutdown::Both);
            drain.join().unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let started = Instant::now();
        let raw = exchange(addr, b"GET /io HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(status(&raw), 200, "{raw}");
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answered = flood.join().unwrap();
    assert!(answered > 0, "the flood was served too");
    assert!(slowest < Duration::from_millis(500), "another client waited {slowest:?} behind the flood");
    server.stop();
}
