//! The client against scripted servers, for what a real cluster does not do on demand: a node that takes a
//! request and drops the connection without answering (a write without an `Idempotency-Key` is not sent
//! again elsewhere; a KV write, which has one, is, with the same key), and `events --follow` (events
//! printed as they arrive, a broken stream reopened on the same node with `Last-Event-ID`, exit 3 when no
//! node can be reached any more).

mod common;

use common::{aether, aether_with};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

fn event(seq: u64, kind: &str) -> String {
    let json =
        format!(r#"{{"seq":{seq},"time_ms":1700000000000,"node":"node-1","kind":"{kind}","data":{{"n":{seq}}}}}"#);
    format!("id: {seq}\nevent: {kind}\ndata: {json}\n\n")
}

/// Reads a request head; answers its lines.
fn read_head(stream: &std::net::TcpStream) -> Vec<String> {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            return lines;
        }
        lines.push(line.trim_end().to_string());
    }
}

/// Sends an event stream as a chunked answer, one chunk per piece, then ends it.
fn serve_stream(stream: &mut std::net::TcpStream, pieces: &[String]) {
    let head =
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).unwrap();
    for piece in pieces {
        stream.write_all(format!("{:x}\r\n{piece}\r\n", piece.len()).as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    stream.write_all(b"0\r\n\r\n").unwrap();
}

#[test]
fn a_followed_stream_is_reopened_after_the_last_event_and_ends_with_exit_3() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        let head = read_head(&first);
        serve_stream(&mut first, &[": keepalive\n\n".into(), event(1, "node_down"), event(2, "leader_changed")]);
        drop(first);
        let (mut second, _) = listener.accept().unwrap();
        let again = read_head(&second);
        serve_stream(&mut second, &[event(3, "node_up")]);
        (head, again)
    });
    let run = aether(&["--node", &addr.to_string(), "events", "--follow", "--json", "--since", "5m"]);
    let (head, again) = server.join().unwrap();
    assert!(head[0].starts_with("GET /api/events/stream?since=5m HTTP/1.1"), "{head:?}");
    assert!(again.iter().any(|l| l.eq_ignore_ascii_case("last-event-id: 2")), "{again:?}");
    let kinds: Vec<String> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["node_down", "leader_changed", "node_up"], "{run:?}");
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("reconnecting") && run.stderr.contains(&addr.to_string()), "{run:?}");
}

#[test]
fn followed_events_print_as_lines_and_a_refused_stream_exits_1() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut first, _) = listener.accept().unwrap();
        read_head(&first);
        serve_stream(&mut first, &[event(41, "blueprint_applied")]);
        drop(first);
        let (mut second, _) = listener.accept().unwrap();
        read_head(&second);
        let body = r#"{"error":"unavailable","detail":"too many event streams"}"#;
        let answer = format!("HTTP/1.1 503 Service Unavailable\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        second.write_all(answer.as_bytes()).unwrap();
    });
    let run = aether(&["--node", &addr.to_string(), "events", "-f"]);
    server.join().unwrap();
    assert_eq!(run.code, 1, "{run:?}");
    let line = run.stdout.lines().next().unwrap_or("");
    assert!(
        line.contains("41") && line.contains("2023-11-14 22:13:20.000") && line.contains("blueprint_applied"),
        "{run:?}"
    );
    assert!(line.ends_with(" n=41"), "{run:?}");
    assert!(run.stderr.contains("too many event streams"), "{run:?}");
}

/// A node that reads each request it is sent (head and body) and closes without answering; the heads it saw.
fn dropping_node(listener: TcpListener, requests: usize) -> std::thread::JoinHandle<Vec<Vec<String>>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..requests {
            let (stream, _) = listener.accept().unwrap();
            seen.push(read_head(&stream));
        }
        seen
    })
}

/// A node that answers every request with `status` and `body`; the heads it saw, until `requests` came.
fn answering_node(
    listener: TcpListener,
    requests: usize,
    status: &'static str,
    body: &'static str,
) -> std::thread::JoinHandle<Vec<Vec<String>>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        listener.set_nonblocking(false).unwrap();
        for _ in 0..requests {
            let (mut stream, _) = listener.accept().unwrap();
            seen.push(read_head(&stream));
            let answer = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
            stream.write_all(answer.as_bytes()).unwrap();
        }
        seen
    })
}

#[test]
fn a_write_that_may_have_reached_a_node_is_not_sent_to_another() {
    let (first, second) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let nodes = format!("{},{}", first.local_addr().unwrap(), second.local_addr().unwrap());
    let second_addr = second.local_addr().unwrap();
    let dropping = dropping_node(first, 1);
    let run = aether_with(&["blueprint", "apply", "-"], &[("AETHER_NODES", &nodes)], b"name = \"x\"\n");
    let seen = dropping.join().unwrap();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("may have been applied"), "{run:?}");
    assert!(seen[0][0].starts_with("POST /api/blueprints HTTP/1.1"), "{seen:?}");
    // The second node was never asked: nothing is waiting in its queue.
    second.set_nonblocking(true).unwrap();
    assert!(second.accept().is_err(), "the write was sent to {second_addr} too");
}

#[test]
fn a_kv_write_moves_on_with_the_same_idempotency_key_and_a_read_moves_on_too() {
    let (first, second) = (TcpListener::bind("127.0.0.1:0").unwrap(), TcpListener::bind("127.0.0.1:0").unwrap());
    let nodes = format!("{},{}", first.local_addr().unwrap(), second.local_addr().unwrap());
    let dropping = dropping_node(first, 2);
    let answering = answering_node(second, 2, "200 OK", r#"{"version":7}"#);
    let put = aether_with(&["kv", "put", "user/a", "v", "--json"], &[("AETHER_NODES", &nodes)], b"");
    let get = aether_with(&["kv", "get", "user/a"], &[("AETHER_NODES", &nodes)], b"");
    let (dropped, answered) = (dropping.join().unwrap(), answering.join().unwrap());
    assert_eq!(put.code, 0, "{put:?}");
    assert_eq!(put.stdout, "{\n  \"version\": 7\n}\n");
    let key = |head: &[String]| head.iter().find(|l| l.to_ascii_lowercase().starts_with("idempotency-key:")).cloned();
    assert!(key(&dropped[0]).is_some(), "{dropped:?}");
    assert_eq!(key(&dropped[0]), key(&answered[0]), "the retry carries the same key");
    assert!(answered[1][0].starts_with("GET /api/kv/user/a HTTP/1.1"), "{answered:?}");
    assert_eq!(get.code, 0, "{get:?}");
}
