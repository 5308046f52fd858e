//! A port that runs requests on its I/O thread (`Config::inline`): quick requests never reach a worker, and a
//! request that holds the I/O thread costs the other clients at most a takeover's delay, never the port.

mod common;

use common::{connect, exchange, read_response, start, status, wait_until};
use httpd::Config;
use std::io::Write;
use std::time::{Duration, Instant};

fn inline() -> Config {
    let mut config = common::config();
    config.inline = true;
    config
}

fn thread_of(addr: std::net::SocketAddr) -> String {
    let answer = exchange(addr, b"GET /thread HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&answer), 200, "{answer}");
    common::body(&answer).to_owned()
}

#[test]
fn quick_requests_run_on_the_io_thread() {
    let (server, _) = start(inline());
    let mut stream = connect(server.addr());
    for _ in 0..50 {
        stream.write_all(b"GET /thread HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut stream), (200, "test-io".to_owned()));
    }
    // Without `inline`, workers run them.
    let (server, _) = start(common::config());
    assert!(thread_of(server.addr()).starts_with("test-http-"));
}

#[test]
fn pipelined_requests_run_inline_are_answered_in_order() {
    let (server, _) = start(inline());
    let mut stream = connect(server.addr());
    let mut burst = Vec::new();
    for i in 0..20 {
        burst.extend_from_slice(format!("GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes());
    }
    stream.write_all(&burst).unwrap();
    for i in 0..20 {
        assert_eq!(read_response(&mut stream), (200, format!("GET /n{i}")));
    }
}

#[test]
fn a_request_holding_the_io_thread_is_taken_over_and_the_others_are_served_meanwhile() {
    let (server, _) = start(inline());
    let addr = server.addr();
    let slow =
        std::thread::spawn(move || exchange(addr, b"GET /block HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(100));
    // The I/O thread has been in `/block` for 100 ms: another serves the port.
    let started = Instant::now();
    for _ in 0..10 {
        let answer = exchange(addr, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(status(&answer), 200, "{answer}");
    }
    assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
    let answer = slow.join().unwrap();
    assert_eq!(common::body(&answer), "block", "{answer}");
    // Requests went to the workers for the pause; then the I/O thread runs them again.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(thread_of(addr), "test-io");
}

#[test]
fn a_hung_request_on_the_io_thread_is_answered_504_and_the_port_serves_on_and_stops() {
    let mut config = inline();
    config.deadline = Some(Duration::from_millis(200));
    config.abandoned_max = 1;
    let (server, _) = start(config);
    let addr = server.addr();
    let answer = exchange(addr, b"GET /hang HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&answer), 504, "{answer}");
    assert!(answer.contains("the hang route did not answer in time"), "{answer}");
    for _ in 0..5 {
        assert_eq!(status(&exchange(addr, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")), 200);
    }
    wait_until(&server, |s| s.workers_abandoned == 1);
    // Stopping waits for the loop, not for the thread still held in `/hang`.
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[test]
fn a_panic_on_the_io_thread_is_answered_500_and_the_port_serves_on() {
    let (server, _) = start(inline());
    let addr = server.addr();
    let answer = exchange(addr, b"GET /panic HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(status(&answer), 500, "{answer}");
    // (Unwinding with a backtrace may take long enough for a takeover: which thread serves next varies.)
    assert!(thread_of(addr).starts_with("test-"));
}

#[test]
fn many_clients_with_slow_and_quick_requests_are_all_answered() {
    let mut config = inline();
    config.workers = 8;
    config.workers_min = Some(1);
    let (server, handler) = start(config);
    let addr = server.addr();
    let clients: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                for j in 0..20 {
                    let path = if (i + j) % 10 == 0 { "/slow" } else { "/ok" };
                    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
                    assert_eq!(read_response(&mut stream).0, 200);
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    assert_eq!(handler.calls.load(std::sync::atomic::Ordering::SeqCst), 16 * 20);
    let stats = server.stats();
    assert!(stats.workers_live <= 8 + 1, "{stats:?}");
}

#[test]
fn an_answer_ready_before_a_request_holds_the_io_thread_is_not_held_back() {
    // Workers enough for every `/block` that lands on one (while one holds a former I/O thread).
    let mut config = inline();
    config.workers = 8;
    let (server, _) = start(config);
    let addr = server.addr();
    for _ in 0..5 {
        // Both requests arrive in one turn (usually): the quick one runs first, then `/block` holds the
        // thread for 2 s; the quick one's answer is written meanwhile.
        let mut quick = connect(addr);
        let mut blocking = connect(addr);
        let started = Instant::now();
        quick.write_all(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        blocking.write_all(b"GET /block HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut quick).0, 200);
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        drop(blocking);
    }
}

#[test]
fn a_pipelined_request_behind_a_takeover_is_served_by_a_worker() {
    let mut config = inline();
    config.workers = 4;
    let (server, _) = start(config);
    let addr = server.addr();
    for _ in 0..5 {
        // A's second request is found while A's first answer is written, after `/block` was taken over.
        let mut a = connect(addr);
        let mut blocking = connect(addr);
        let started = Instant::now();
        a.write_all(b"GET /a1 HTTP/1.1\r\nHost: a\r\n\r\nGET /a2 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        blocking.write_all(b"GET /block HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_response(&mut a), (200, "GET /a1".to_owned()));
        assert_eq!(read_response(&mut a), (200, "GET /a2".to_owned()));
        assert!(started.elapsed() < Duration::from_millis(1000), "{:?}", started.elapsed());
        assert_eq!(read_response(&mut blocking), (200, "block".to_owned()));
    }
}

#[test]
fn a_request_ending_after_its_deadline_under_load_leaves_one_loop() {
    let mut config = inline();
    config.workers = 8;
    config.deadline = Some(Duration::from_millis(100));
    let (server, handler) = start(config);
    let addr = server.addr();
    // `/slow` (300 ms) passes its deadline on the I/O thread and returns while quick requests keep the
    // loop busy, parked and taken back by the thread that took it over.
    let load: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                let started = Instant::now();
                let mut served = 0;
                while started.elapsed() < Duration::from_millis(1500) {
                    stream.write_all(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
                    assert_eq!(read_response(&mut stream).0, 200);
                    served += 1;
                }
                served
            })
        })
        .collect();
    for _ in 0..3 {
        let answer = exchange(addr, b"GET /slow HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
        assert_eq!(status(&answer), 504, "{answer}");
    }
    let served: usize = load.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 100, "{served}");
    // Every request was run once.
    assert_eq!(handler.calls.load(std::sync::atomic::Ordering::SeqCst), served + 3);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(thread_of(addr), "test-io");
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(3));
}
