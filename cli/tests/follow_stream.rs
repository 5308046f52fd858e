//! `events --follow` against a scripted server: events are printed as they arrive (one JSON object per
//! line with `--json`), a broken stream is reopened on the same node with `Last-Event-ID`, and when no
//! node can be reached any more the command exits 3.

mod common;

use common::aether;
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
    assert!(line.contains(r#"{"n":41}"#), "{run:?}");
    assert!(run.stderr.contains("too many event streams"), "{run:?}");
}
