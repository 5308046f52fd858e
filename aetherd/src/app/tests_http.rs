//! The app port speaks HTTP in full to slices: the client's method, path, query and header fields reach
//! the slice, and the slice's status and header fields reach the client (the server's own fields
//! dropped), for a local call and a slice-to-slice call; a panic is answered with a generic body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use super::tests::{json, options, server};

/// Send `head` (request line and header fields, without the blank line) and `body`; answers
/// (status, header fields lower-cased, body).
pub(crate) fn exchange(addr: SocketAddr, head: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let request = format!("{head}\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|s| s.parse().ok()).unwrap();
    let fields = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, fields, body.to_owned())
}

pub(crate) fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

#[test]
fn method_headers_and_any_status_round_trip_through_the_app_port_and_a_slice_to_slice_call() {
    let app = server(&["org.aether.examples:echo:1.0.0"], options());
    let probe = "X-Probe: one\r\nX-Probe: two";
    for route in ["status", "relay"] {
        let (status, fields, body) = exchange(app.addr(), &format!("POST /echo/{route}/201 HTTP/1.1\r\n{probe}"), "");
        assert_eq!(status, 201, "{route}: {body}");
        assert_eq!(field(&fields, "location"), Some("/echo/created"), "{route}");
        assert_eq!(field(&fields, "x-echo-probe"), Some("one,two"), "{route}: every X-Probe reaches the slice");
        let method = if route == "status" { "POST" } else { "PUT" };
        assert_eq!(field(&fields, "x-echo-method"), Some(method), "{route}");
        assert_eq!(field(&fields, "upgrade"), None, "{route}: a hop-by-hop field of the slice is dropped");
        assert_eq!(field(&fields, "content-type"), Some("application/json"));
        assert!(field(&fields, "x-request-id").is_some());

        let target = format!("POST /echo/{route}/302?to=https%3A%2F%2Fexample.com%2Fx HTTP/1.1");
        let (status, fields, _) = exchange(app.addr(), &target, "");
        assert_eq!((status, field(&fields, "location")), (302, Some("https://example.com/x")), "{route}");
        let (status, _, body) = exchange(app.addr(), &format!("POST /echo/{route}/418 HTTP/1.1"), "");
        assert_eq!((status, json(&body).get("status").and_then(|v| v.as_i64())), (418, Some(418)), "{route}");
        let (status, fields, body) = exchange(app.addr(), &format!("POST /echo/{route}/204 HTTP/1.1"), "");
        assert_eq!((status, body.as_str(), field(&fields, "content-type")), (204, "", None), "{route}");
    }
    let (status, fields, _) = exchange(app.addr(), "GET /echo/status/200 HTTP/1.1", "");
    assert_eq!(
        (status, field(&fields, "x-echo-method"), field(&fields, "x-echo-path")),
        (200, Some("GET"), Some("/echo/status/200"))
    );
    app.stop();
}

#[test]
fn the_invocation_carries_the_request_id_of_the_client() {
    let app = server(&["org.aether.examples:echo:1.0.0"], options());
    let (status, fields, body) =
        exchange(app.addr(), "GET /echo/invocation/relayed HTTP/1.1\r\nX-Request-Id: client-42", "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(field(&fields, "x-request-id"), Some("client-42"));
    let seen = json(&body);
    assert_eq!(seen.get("request_id").and_then(|v| v.as_str()), Some("client-42"));
    assert_eq!(seen.get("caller").and_then(|v| v.as_str()), Some("org.aether.examples:echo:1.0.0"));
    assert_eq!(seen.get("depth").and_then(|v| v.as_i64()), Some(1));
    app.stop();
}

#[test]
fn a_panic_answers_a_generic_500_naming_the_request_id_never_the_panic_text() {
    let app = server(&["org.aether.examples:faulty:1.0.0"], options());
    let (status, fields, body) = exchange(app.addr(), "GET /faulty/panic HTTP/1.1\r\nX-Request-Id: boom-1", "");
    assert_eq!(status, 500);
    assert_eq!(field(&fields, "x-request-id"), Some("boom-1"));
    assert_eq!(body, r#"{"error":"internal","detail":"the slice failed; request id boom-1"}"#);
    app.stop();
}

#[test]
fn too_many_request_header_fields_for_a_slice_are_refused() {
    let app = server(&["org.aether.examples:echo:1.0.0"], options());
    let many: Vec<String> = (0..=aether_sdk::headers::HEADERS_MAX).map(|i| format!("X-F{i}: v")).collect();
    let (status, _, body) =
        exchange(app.addr(), &format!("GET /echo/status/200 HTTP/1.1\r\n{}", many.join("\r\n")), "");
    assert!(status == 431, "{status}: {body}");
    app.stop();
}

#[test]
fn an_interim_status_from_a_slice_is_a_502_and_the_connection_stays_in_step() {
    let app = server(&["org.aether.examples:echo:1.0.0"], options());
    for route in ["status", "relay"] {
        for code in [100, 101, 103, 199] {
            let (status, fields, body) = exchange(app.addr(), &format!("POST /echo/{route}/{code} HTTP/1.1"), "");
            assert_eq!(status, 502, "{route} {code}: {body}");
            assert_eq!(json(&body).get("error").and_then(|v| v.as_str()), Some("bad gateway"), "{route} {code}");
            assert!(field(&fields, "x-request-id").is_some(), "{route} {code}");
        }
    }
    // Two requests on one connection get exactly two final answers, in order.
    let mut stream = TcpStream::connect(app.addr()).unwrap();
    let first = "GET /echo/status/101 HTTP/1.1\r\nHost: test\r\n\r\n";
    let last = "GET /echo/status/200 HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
    stream.write_all(format!("{first}{last}").as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let statuses: Vec<&str> = raw.match_indices("HTTP/1.1 ").map(|(at, _)| &raw[at + 9..at + 12]).collect();
    assert_eq!(statuses, ["502", "200"], "{raw}");
    app.stop();
}
