//! Must-reject and must-accept cases of RFC 9112 over real sockets: request lines, header fields,
//! framing (Content-Length, Transfer-Encoding, chunked), head and body limits. A refused request never
//! reaches the handler.

mod common;

use common::*;
use std::io::Write;
use std::sync::atomic::Ordering;

#[test]
fn bad_request_lines_are_refused() {
    let (server, handler) = start(config());
    let addr = server.addr();
    for line in [
        "GET\r\n\r\n",
        "GET /x\r\nHost: a\r\n\r\n",
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1 extra\r\nHost: a\r\n\r\n",
        "GET / FOO/1.1\r\nHost: a\r\n\r\n",
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET no-slash HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /a\x00b HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
    ] {
        assert_json_error(&exchange(addr, line.as_bytes()), 400);
    }
    assert_json_error(&exchange(addr, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    assert_json_error(&exchange(addr, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 505);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn bare_lf_is_accepted_and_obs_fold_refused() {
    let (server, handler) = start(config());
    let addr = server.addr();
    let raw = exchange(addr, b"GET /lf HTTP/1.1\nHost: a\nConnection: close\n\n");
    assert_eq!((status(&raw), body(&raw)), (200, "GET /lf"));
    let folded = b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: a\r\n  continued\r\nConnection: close\r\n\r\n";
    assert_json_error(&exchange(addr, folded), 400);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_header_names_are_refused() {
    let (server, handler) = start(config());
    for field in ["Bad Name: x", "Host : a", "X\x01: y", ": empty", "X(y): z", "NoColon"] {
        let raw = format!("GET / HTTP/1.1\r\nHost: a\r\n{field}\r\n\r\n");
        assert_json_error(&exchange(server.addr(), raw.as_bytes()), 400);
    }
    assert_json_error(&exchange(server.addr(), b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn content_length_must_be_exact_and_alone() {
    let (server, handler) = start(config());
    let addr = server.addr();
    for cl in ["-1", "abc", "1e3", "0x10", "+5", "", "5 5", "99999999999999999999999999", "18446744073709551616"] {
        let raw = format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: {cl}\r\n\r\nhello");
        assert_json_error(&exchange(addr, raw.as_bytes()), 400);
    }
    let duplicate = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 4\r\n\r\nhello";
    assert_json_error(&exchange(addr, duplicate), 400);
    let listed = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 4\r\n\r\nhello";
    assert_json_error(&exchange(addr, listed), 400);
    let both = b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_json_error(&exchange(addr, both), 400);
    let unknown = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    assert_json_error(&exchange(addr, unknown), 501);
    let not_last = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n";
    assert_json_error(&exchange(addr, not_last), 400);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0, "no refused request reached the handler");
    // Agreeing duplicates are one length.
    let same =
        b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    let raw = exchange(addr, same);
    assert_eq!((status(&raw), body(&raw)), (200, "hello"));
}

#[test]
fn truncated_bodies_never_reach_the_handler() {
    let (server, handler) = start(config());
    let mut stream = connect(server.addr());
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut stream), "", "closed without an answer");
    // Chunked without its last chunk.
    let mut stream = connect(server.addr());
    stream.write_all(b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut stream), "");
    assert_eq!(handler.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn chunked_bodies_are_decoded_within_limits() {
    let (server, handler) = start(config());
    let addr = server.addr();
    let ok = b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
               5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n";
    let raw = exchange(addr, ok);
    assert_eq!((status(&raw), body(&raw)), (200, "hello world"));
    let chunked = |rest: &str| format!("POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n{rest}");
    // Sizes past any limit, or past u64.
    assert_json_error(&exchange(addr, chunked("ffffffffffffffffffffffff\r\n").as_bytes()), 400);
    assert_json_error(&exchange(addr, chunked("fffffff\r\n").as_bytes()), 413);
    // Chunks adding up past the route's limit (1 KiB).
    let many = "100\r\n".to_owned() + &"x".repeat(256) + "\r\n";
    assert_json_error(&exchange(addr, chunked(&many.repeat(5)).as_bytes()), 413);
    // Extension abuse: a size line of 2 KiB, and control bytes in an extension.
    assert_json_error(&exchange(addr, chunked(&format!("1;{}\r\nx\r\n0\r\n\r\n", "e=v;".repeat(500))).as_bytes()), 400);
    assert_json_error(&exchange(addr, chunked("1;a=\x01\r\nx\r\n0\r\n\r\n").as_bytes()), 400);
    // Data not followed by CRLF; a bad size; trailers past 4 KiB.
    assert_json_error(&exchange(addr, chunked("1\r\nxyz\r\n0\r\n\r\n").as_bytes()), 400);
    assert_json_error(&exchange(addr, chunked("g\r\n").as_bytes()), 400);
    let trailers = format!("0\r\n{}\r\n", "T: v\r\n".repeat(1000));
    assert_json_error(&exchange(addr, chunked(&trailers).as_bytes()), 431);
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}

#[test]
fn huge_heads_get_431_and_bodies_over_the_route_limit_413() {
    let (server, handler) = start(config());
    let addr = server.addr();
    let started = std::time::Instant::now();
    let line = format!("GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n", "b".repeat(1 << 20));
    assert_json_error(&exchange(addr, line.as_bytes()), 431);
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X-H: v\r\n".repeat(10_000));
    assert_json_error(&exchange(addr, many.as_bytes()), 431);
    // 101 short fields fit in the bytes but not in the count.
    let count = format!("GET / HTTP/1.1\r\nHost: a\r\n{}\r\n", "X: v\r\n".repeat(100));
    assert_json_error(&exchange(addr, count.as_bytes()), 431);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    let over = format!("POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 1025\r\n\r\n{}", "x".repeat(1025));
    assert_json_error(&exchange(addr, over.as_bytes()), 413);
    let big = format!(
        "POST /big HTTP/1.1\r\nHost: a\r\nConnection: close\r\nContent-Length: 5000\r\n\r\n{}",
        "y".repeat(5000)
    );
    let raw = exchange(addr, big.as_bytes());
    assert_eq!((status(&raw), body(&raw).len()), (200, 5000));
    assert_eq!(handler.calls.load(Ordering::SeqCst), 1);
}
