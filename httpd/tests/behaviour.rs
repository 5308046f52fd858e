//! Connection behaviour over real sockets: timeouts, keep-alive and pipelining, `Expect`, HEAD, the
//! pool's bounds and deadlines, per-client limits and stopping.

mod common;

use common::*;
use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn a_slow_head_gets_408() {
    let mut config = config();
    config.timeouts.header = Duration::from_millis(300);
    let (server, handler) = start(config);
    let mut stream = connect(server.addr());
    stream.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow:").unwrap();
    let started = Instant::now();
    let raw = read_all(&mut stream);
    assert_json_error(&raw, 408);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn a_slow_body_gets_408_and_never_reaches_the_handler() {
    let mut config = config();
    config.timeouts.body_idle = Duration::from_millis(200);
    config.timeouts.body = Duration::from_millis(800);
    let (server, handler) = start(config);
    // Stalls.
    let mut stream = connect(server.addr());
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab").unwrap();
    assert_json_error(&read_all(&mut stream), 408);
    // Trickles: a byte every 100 ms is progress, but not enough to finish in time.
    let mut stream = connect(server.addr());
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n").unwrap();
    let started = Instant::now();
    for _ in 0..30 {
        if stream.write_all(b"x").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_json_error(&read_all(&mut stream), 408);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn pipelined_requests_are_answered_in_order_on_a_kept_alive_connection() {
    let (server, _) = start(config());
    let mut stream = connect(server.addr());
    let one = "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n";
    let two = "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\ntwo";
    let three = "GET /three HTTP/1.1\r\nHost: a\r\n\r\n";
    stream.write_all(format!("{one}{two}{three}").as_bytes()).unwrap();
    assert_eq!(read_response(&mut stream), (200, "slow".into()));
    assert_eq!(read_response(&mut stream), (200, "two".into()));
    assert_eq!(read_response(&mut stream), (200, "GET /three".into()));
    // Reused afterwards, then closed on request.
    stream.write_all(b"GET /four HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap();
    let raw = read_all(&mut stream);
    assert_eq!((status(&raw), body(&raw)), (200, "GET /four"));
    assert!(raw.contains("Connection: close"));
}

#[test]
fn http_1_0_closes_unless_kept_alive() {
    let (server, _) = start(config());
    let raw = exchange(server.addr(), b"GET /old HTTP/1.0\r\n\r\n");
    assert_eq!((status(&raw), body(&raw)), (200, "GET /old"));
    let mut stream = connect(server.addr());
    stream.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut stream), (200, "GET /a".into()));
    stream.write_all(b"GET /b HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(body(&read_all(&mut stream)), "GET /b");
}

#[test]
fn expect_100_continue_only_for_bodies_that_will_be_read() {
    let (server, handler) = start(config());
    let mut stream = connect(server.addr());
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(b"hello").unwrap();
    assert_eq!(read_response(&mut stream), (200, "hello".into()));
    let over = b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n";
    let raw = exchange(server.addr(), over);
    assert!(!raw.contains("100 Continue"), "{raw}");
    assert_json_error(&raw, 413);
    assert_json_error(&exchange(server.addr(), b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: other\r\n\r\n"), 417);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn head_answers_carry_no_body() {
    let (server, _) = start(config());
    let mut stream = connect(server.addr());
    stream
        .write_all(b"HEAD /thing HTTP/1.1\r\nHost: a\r\n\r\nGET /next HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let raw = read_all(&mut stream);
    // The HEAD answer's Content-Length is that of the GET body, and the next answer follows at once.
    assert!(raw.starts_with("HTTP/1.1 200 OK\r\n"), "{raw}");
    let (first, rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(first.contains("Content-Length: 11"), "{first}");
    assert!(rest.starts_with("HTTP/1.1 200 OK\r\n") && rest.ends_with("GET /next"), "{rest}");
}

#[test]
fn a_full_pool_answers_503_at_once() {
    let mut config = config();
    config.workers = 1;
    config.queue_max = 1;
    let (server, handler) = start(config);
    let addr = server.addr();
    let block: &[u8] = b"GET /block HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let busy = std::thread::spawn(move || exchange(addr, block));
    let started = Instant::now();
    while handler.calls.load(Ordering::SeqCst) == 0 {
        assert!(started.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(2));
    }
    let queued = std::thread::spawn(move || exchange(addr, block));
    wait_until(&server, |s| s.queued == 1);
    let started = Instant::now();
    let raw = exchange(addr, b"GET /x HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_json_error(&raw, 503);
    assert!(raw.contains("Retry-After: 1"), "{raw}");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!(status(&busy.join().unwrap()), 200);
    assert_eq!(status(&queued.join().unwrap()), 200);
}

#[test]
fn a_request_past_its_deadline_gets_504_and_its_worker_is_replaced() {
    let mut config = config();
    config.deadline = Some(Duration::from_millis(200));
    config.abandoned_max = 2;
    let (server, _) = start(config);
    let addr = server.addr();
    let started = Instant::now();
    let raw = exchange(addr, b"GET /hang HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_json_error(&raw, 504);
    assert!(body(&raw).contains("the hang route did not answer in time"), "{raw}");
    let late = started.elapsed();
    assert!(late >= Duration::from_millis(200) && late < Duration::from_millis(1000), "{late:?}");
    let stats = server.stats();
    assert_eq!((stats.workers_live, stats.workers_abandoned), (2, 1));
    // Pipelined hangs on one connection each get their 504, in order; the port serves on.
    let mut stream = connect(addr);
    let hang = "GET /hang HTTP/1.1\r\nHost: a\r\n\r\n";
    stream
        .write_all(format!("{hang}{hang}GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    assert_eq!(statuses(&read_all(&mut stream)), [504, 504, 200]);
    // The second stuck worker was replaced, the third not (past the cap of 2): one serves on.
    let stats = server.stats();
    assert_eq!((stats.workers_live, stats.workers_abandoned), (1, 3));
    assert_eq!(status(&exchange(addr, b"GET /ok HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")), 200);
    // Stopping waits for a hung call only until its deadline.
    let hung =
        std::thread::spawn(move || exchange(addr, b"GET /hang HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"));
    std::thread::sleep(Duration::from_millis(50));
    let stopping = Instant::now();
    server.stop();
    assert!(stopping.elapsed() < Duration::from_secs(1), "{:?}", stopping.elapsed());
    assert_eq!(status(&hung.join().unwrap()), 504);
}

#[test]
fn connections_per_client_are_bounded() {
    let mut config = config();
    config.limits.connections_per_ip_max = 2;
    let (server, _) = start(config);
    let (mut a, mut b) = (connect(server.addr()), connect(server.addr()));
    wait_until(&server, |s| s.connections == 2);
    assert_json_error(&exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 503);
    for stream in [&mut a, &mut b] {
        stream.write_all(b"GET /held HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!(read_response(stream), (200, "GET /held".into()));
    }
    drop((a, b));
    wait_until(&server, |s| s.connections == 0);
    assert_eq!(status(&exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")), 200);
}

#[test]
fn stopping_closes_idle_connections_and_the_port() {
    let (server, _) = start(config());
    let addr = server.addr();
    let mut idle = connect(addr);
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    server.stop();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(read_all(&mut idle), "");
    assert!(std::net::TcpStream::connect(addr).is_err());
}

#[test]
fn a_client_that_sends_without_reading_cannot_grow_the_answers_without_bound() {
    let (server, handler) = start(config());
    let mut stream = connect(server.addr());
    stream.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    // Each answer is 1 KiB; the server stops taking requests once its unwritten answers and the socket
    // buffers are full, so writing blocks long before 100,000 requests went out.
    let request = format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{}", "x".repeat(1000));
    let mut sent = 0;
    while sent < 100_000 && stream.write_all(request.as_bytes()).is_ok() {
        sent += 1;
    }
    assert!(sent < 100_000, "every request was taken");
    let served = handler.calls.load(Ordering::SeqCst);
    assert!(served < 20_000, "{served} requests answered into a client that reads nothing");
}

#[test]
fn an_answer_the_client_does_not_read_is_dropped_after_the_write_timeout() {
    let mut config = config();
    config.timeouts.write = Duration::from_millis(300);
    let (server, _) = start(config);
    let mut stream = connect(server.addr());
    let mut writer = stream.try_clone().unwrap();
    // Answers of 1 MiB each, never read: the socket buffers fill, writing stalls, the server gives up.
    let body = "z".repeat(1 << 20);
    let request = format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let sending = std::thread::spawn(move || {
        for _ in 0..32 {
            if writer.write_all(request.as_bytes()).is_err() {
                return;
            }
        }
    });
    wait_until(&server, |s| s.connections == 1);
    wait_until(&server, |s| s.connections == 0);
    let got = read_all(&mut stream);
    assert!(got.len() < 32 << 20, "every answer went out: {} bytes", got.len());
    sending.join().unwrap();
}

#[test]
fn bodies_being_received_share_one_memory_budget_per_port() {
    let mut config = config();
    config.limits.body_bytes_total_max = 1 << 20;
    let (server, handler) = start(config);
    // Two clients each hold 600 KiB of a 1 MiB body: the second one takes the port over its budget.
    let part = vec![b'x'; 600 * 1024];
    let head = format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    let mut first = connect(server.addr());
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&part).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = connect(server.addr());
    second.write_all(head.as_bytes()).unwrap();
    let _ = second.write_all(&part);
    let raw = read_all(&mut second);
    assert_json_error(&raw, 503);
    assert!(raw.contains("Retry-After"), "{raw}");
    // The first upload is unaffected and completes; then the budget is free again.
    first.write_all(&vec![b'y'; (1 << 20) - part.len()]).unwrap();
    let (status, body) = read_response(&mut first);
    assert_eq!((status, body.len()), (200, 1 << 20));
    drop(first);
    let mut third = connect(server.addr());
    third.write_all(head.as_bytes()).unwrap();
    third.write_all(&vec![b'z'; 1 << 20]).unwrap();
    assert_eq!(read_response(&mut third).0, 200);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 2);
}

#[test]
fn one_client_address_cannot_hold_the_whole_body_budget() {
    let mut config = config();
    config.limits.body_bytes_total_max = 2 << 20;
    config.limits.body_bytes_per_ip_max = 1 << 20;
    let (server, handler) = start(config);
    let part = vec![b'x'; 700 * 1024];
    let head = format!("POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    // The flooder holds 700 KiB; its second body would take its address past 1 MiB: refused.
    let flooder = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let mut first = connect_from(flooder, server.addr());
    first.write_all(head.as_bytes()).unwrap();
    first.write_all(&part).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut second = connect_from(flooder, server.addr());
    second.write_all(head.as_bytes()).unwrap();
    let _ = second.write_all(&part);
    assert_json_error(&read_all(&mut second), 503);
    // Another address still gets its whole body through while the flooder holds its share.
    let mut other = connect_from(std::net::Ipv4Addr::new(127, 0, 0, 3), server.addr());
    other.write_all(head.as_bytes()).unwrap();
    other.write_all(&vec![b'z'; 1 << 20]).unwrap();
    let (status, body) = read_response(&mut other);
    assert_eq!((status, body.len()), (200, 1 << 20));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
    drop(first);
}

#[test]
fn answers_from_many_workers_each_reach_their_client_without_waiting_for_a_tick() {
    let mut config = config();
    config.deadline = None;
    let (server, _) = start(config);
    let addr = server.addr();
    // Eight clients at once, so answers race each other to the I/O thread; then one alone, so each answer
    // must wake an idle I/O thread by itself. A lost wake-up costs an answer the I/O thread's 50 ms tick:
    // 2,400 answers would then take two minutes, not the fraction of a second they take.
    let started = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut stream = connect(addr);
                for i in 0..200 {
                    let request = format!("GET /n{i} HTTP/1.1\r\nHost: a\r\n\r\n");
                    stream.write_all(request.as_bytes()).unwrap();
                    assert_eq!(read_response(&mut stream), (200, format!("GET /n{i}")));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    let mut stream = connect(addr);
    for i in 0..800 {
        stream.write_all(format!("GET /m{i} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).unwrap();
        assert_eq!(read_response(&mut stream), (200, format!("GET /m{i}")));
    }
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}
