//! The management client: which nodes to ask (`--node` / `AETHER_NODE`, then `AETHER_NODES`), one request
//! per connection over plain TCP or TLS (rustls, for `https://` nodes), and failover to the next node.
//!
//! Invariants: a request moves to the next node only when it cannot have been applied where it was sent:
//! the connection (or TLS handshake) failed, or it is a read (`GET`), or it carries an `Idempotency-Key`
//! (the cluster applies it at most once). Every connection has connect, read and write timeouts, and every
//! answer is bounded ([`crate::wire`]).

use crate::error::CliError;
use crate::wire::{self, Body, Framing, Head};
use serde_json::Value;
use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Where `cargo xtask run` puts node 1's management port.
pub const DEFAULT_NODE: &str = "127.0.0.1:8080";
/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The system's CA bundle, used for `https://` nodes when no `--ca` is given.
const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One node's management address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub tls: bool,
    /// Host as written (a name, an IPv4 address or a bracketed IPv6 address).
    pub host: String,
    pub port: u16,
}

impl Target {
    /// `host:port`, `http://host:port` or `https://host:port` (port 8080 when left out).
    pub fn parse(text: &str) -> Result<Target, CliError> {
        let usage = |why: &str| CliError::Usage(format!("node address '{text}': {why}"));
        let text = text.trim();
        let (tls, rest) = match text.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            Some((scheme, _)) => return Err(usage(&format!("unknown scheme '{scheme}', use http or https"))),
            None => (false, text),
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return Err(usage("expected host:port"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) if !host.starts_with('[') || host.ends_with(']') => {
                (host, port.parse::<u16>().map_err(|_| usage("the port is not a number from 1 to 65535"))?)
            }
            _ => (rest, 8080),
        };
        if host.is_empty() || port == 0 {
            return Err(usage("expected host:port"));
        }
        Ok(Target { tls, host: host.to_string(), port })
    }

    fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tls {
            write!(f, "https://{}", self.host_port())
        } else {
            write!(f, "{}", self.host_port())
        }
    }
}

/// The nodes to try, in order: the chosen node (if any) then every `AETHER_NODES` entry not already listed;
/// with neither, [`DEFAULT_NODE`].
pub fn candidates(node: Option<&str>, nodes_env: Option<&str>) -> Result<Vec<Target>, CliError> {
    let mut out: Vec<Target> = Vec::new();
    let listed = nodes_env.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty());
    for text in node.into_iter().chain(listed) {
        let target = Target::parse(text)?;
        if !out.contains(&target) {
            out.push(target);
        }
    }
    if out.is_empty() {
        out.push(Target::parse(DEFAULT_NODE)?);
    }
    Ok(out)
}

/// One request to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    /// Path and query, already encoded.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The largest answer body taken (`wire::BODY_BYTES_MAX` unless a verb needs more, as `backup` does).
    pub answer_max: usize,
}

impl Request {
    pub fn get(path: impl Into<String>) -> Request {
        Request::new("GET", path, Vec::new())
    }

    pub fn new(method: &'static str, path: impl Into<String>, body: Vec<u8>) -> Request {
        Request { method, path: path.into(), headers: Vec::new(), body, answer_max: wire::BODY_BYTES_MAX }
    }

    /// This request, taking answers of up to `max` bytes.
    pub fn answer_max(mut self, max: usize) -> Request {
        self.answer_max = max;
        self
    }

    pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    /// Sending it again after a failure part way cannot apply it twice.
    fn safe_to_resend(&self) -> bool {
        self.method == "GET" || self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("idempotency-key"))
    }
}

/// An answer read whole.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// The node that answered.
    pub node: String,
}

impl Reply {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// A 2xx answer as JSON, or the refusal.
    pub fn ok_json(self) -> Result<Value, CliError> {
        if (200..300).contains(&self.status) {
            return Ok(self.json());
        }
        let mut body = self.json();
        if !body.is_object() {
            let text = String::from_utf8_lossy(&self.body).chars().take(500).collect::<String>();
            body = serde_json::json!({ "error": "http_error", "detail": text });
        }
        Err(CliError::Refused { status: self.status, body, node: self.node })
    }
}

/// A connection: plain TCP or TLS over it.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
}

/// An answer whose body is still to be read (an event stream).
pub struct Streaming {
    pub head: Head,
    pub body: BufReader<Body<BufReader<Conn>>>,
    pub node: String,
}

/// What went wrong with one node.
enum Failure {
    /// Nothing reached the node: trying another is always safe.
    Connect(String),
    /// The request may have reached the node.
    AfterSend(String),
}

pub struct Client {
    pub targets: Vec<Target>,
    key: Option<String>,
    ca: Option<PathBuf>,
    /// Read and write timeout of a request.
    pub timeout: Duration,
    tls: OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
}

impl Client {
    pub fn new(targets: Vec<Target>, key: Option<String>, ca: Option<PathBuf>, timeout: Duration) -> Client {
        Client { targets, key, ca, timeout, tls: OnceLock::new() }
    }

    /// Sends `request`, moving to the next node when that is safe; reads the whole answer.
    pub fn send(&self, request: &Request) -> Result<Reply, CliError> {
        let mut tried = Vec::new();
        for target in &self.targets {
            match self.exchange(target, request) {
                Ok(reply) => return Ok(reply),
                Err(Failure::Connect(why)) => tried.push((target.to_string(), why)),
                Err(Failure::AfterSend(why)) if request.safe_to_resend() => tried.push((target.to_string(), why)),
                Err(Failure::AfterSend(detail)) => {
                    return Err(CliError::Interrupted { node: target.to_string(), detail });
                }
            }
        }
        Err(CliError::Unreachable { tried })
    }

    /// `send`, then the answer as JSON or the refusal.
    pub fn json(&self, request: &Request) -> Result<Value, CliError> {
        self.send(request)?.ok_json()
    }

    /// Sends a `GET` and hands back the body unread (for `text/event-stream`), trying nodes in order.
    /// `read_timeout` bounds the wait for each read (the server sends keepalives).
    pub fn stream(&self, request: &Request, targets: &[Target], read_timeout: Duration) -> Result<Streaming, CliError> {
        let mut tried = Vec::new();
        for target in targets {
            let opened = self.connect(target, read_timeout).and_then(|conn| self.start(conn, target, request));
            match opened {
                Ok((head, reader)) => {
                    let framing = Framing::of(&head, request.method)
                        .map_err(|e| CliError::Interrupted { node: target.to_string(), detail: e.to_string() })?;
                    let body = BufReader::new(Body::new(reader, framing));
                    return Ok(Streaming { head, body, node: target.to_string() });
                }
                Err(Failure::Connect(why) | Failure::AfterSend(why)) => tried.push((target.to_string(), why)),
            }
        }
        Err(CliError::Unreachable { tried })
    }

    fn exchange(&self, target: &Target, request: &Request) -> Result<Reply, Failure> {
        let conn = self.connect(target, self.timeout)?;
        let (head, reader) = self.start(conn, target, request)?;
        let after = |e: io::Error| Failure::AfterSend(describe(&e));
        let framing = Framing::of(&head, request.method).map_err(after)?;
        let body = Body::new(reader, framing).read_all(request.answer_max).map_err(after)?;
        Ok(Reply { status: head.status, body, node: target.to_string() })
    }

    /// Writes the request and reads the answer's head.
    fn start(&self, mut conn: Conn, target: &Target, request: &Request) -> Result<(Head, BufReader<Conn>), Failure> {
        let mut headers = request.headers.clone();
        if let Some(key) = &self.key {
            headers.push(("Authorization".into(), format!("Bearer {key}")));
        }
        let head = wire::request_head(request.method, &request.path, &target.host_port(), &headers, request.body.len());
        let sent =
            conn.write_all(head.as_bytes()).and_then(|()| conn.write_all(&request.body)).and_then(|()| conn.flush());
        sent.map_err(|e| Failure::AfterSend(describe(&e)))?;
        let mut reader = BufReader::new(conn);
        let head = wire::read_head(&mut reader).map_err(|e| Failure::AfterSend(describe(&e)))?;
        Ok((head, reader))
    }

    fn connect(&self, target: &Target, timeout: Duration) -> Result<Conn, Failure> {
        let addrs = resolve(target).map_err(Failure::Connect)?;
        let mut last = String::from("no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(tcp) => {
                    let setup = tcp.set_read_timeout(Some(timeout)).and_then(|()| tcp.set_write_timeout(Some(timeout)));
                    setup.map_err(|e| Failure::Connect(describe(&e)))?;
                    let _ = tcp.set_nodelay(true);
                    return if target.tls { self.handshake(target, tcp) } else { Ok(Conn::Plain(tcp)) };
                }
                Err(e) => last = describe(&e),
            }
        }
        Err(Failure::Connect(last))
    }

    fn handshake(&self, target: &Target, mut tcp: TcpStream) -> Result<Conn, Failure> {
        let config = self.tls_config().map_err(Failure::Connect)?;
        let host = target.host.trim_start_matches('[').trim_end_matches(']').to_string();
        let name = rustls::pki_types::ServerName::try_from(host)
            .map_err(|_| Failure::Connect(format!("'{}' is not a valid TLS server name", target.host)))?;
        let mut session = rustls::ClientConnection::new(config, name).map_err(|e| Failure::Connect(e.to_string()))?;
        while session.is_handshaking() {
            session.complete_io(&mut tcp).map_err(|e| Failure::Connect(format!("TLS: {}", describe(&e))))?;
        }
        Ok(Conn::Tls(Box::new(rustls::StreamOwned::new(session, tcp))))
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.tls.get_or_init(|| tls_config(self.ca.as_deref())).clone()
    }
}

fn resolve(target: &Target) -> Result<Vec<SocketAddr>, String> {
    let host = target.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> =
        (host, target.port).to_socket_addrs().map_err(|e| format!("cannot resolve: {e}"))?.collect();
    if addrs.is_empty() {
        return Err("the name has no address".into());
    }
    Ok(addrs)
}

/// One short phrase for an I/O error (timeouts and refusals named plainly).
fn describe(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => "timed out".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::UnexpectedEof => "the connection closed before the answer ended".into(),
        _ => e.to_string(),
    }
}

/// A TLS client trusting the certificates in `ca` (PEM), or the system's bundle without one.
fn tls_config(ca: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let file = ca.unwrap_or(Path::new(SYSTEM_CA_BUNDLE));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file).map_err(|e| format!("CA file {}: {e}", file.display()))?;
    for cert in certs {
        let cert = cert.map_err(|e| format!("CA file {}: {e}", file.display()))?;
        roots.add(cert).map_err(|e| format!("CA file {}: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA file {} holds no certificate", file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Percent-encodes `text` for a URL path, keeping `/` when `keep_slash` (KV keys span segments).
pub fn encode_path(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let plain = byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) || (keep_slash && byte == b'/');
        if plain {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A query string from the pairs whose value is present (`?a=1&b=2`, or empty).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={}", encode_path(v, false))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// A fresh request id for `Idempotency-Key`: 128 random bits in hex.
pub fn idempotency_key() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        bytes.copy_from_slice(&(nanos.as_nanos() ^ (u128::from(std::process::id()) << 64)).to_le_bytes());
    }
    format!("aether-{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_parse_with_scheme_and_default_port() {
        let t = |text: &str| Target::parse(text).unwrap();
        assert_eq!(t("127.0.0.1:8180"), Target { tls: false, host: "127.0.0.1".into(), port: 8180 });
        assert_eq!(t("https://localhost:9000/"), Target { tls: true, host: "localhost".into(), port: 9000 });
        assert_eq!(t("http://node-1"), Target { tls: false, host: "node-1".into(), port: 8080 });
        assert_eq!(t("[::1]:8080"), Target { tls: false, host: "[::1]".into(), port: 8080 });
        assert_eq!(t("https://localhost:9000").to_string(), "https://localhost:9000");
        for bad in ["", "ftp://x:1", "x:99999", "x:0", "x:port", "http://x:1/api", "u@x:1"] {
            assert!(matches!(Target::parse(bad), Err(CliError::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn candidates_put_the_chosen_node_first_then_the_list_without_repeats() {
        let names = |c: Vec<Target>| c.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(names(candidates(None, None).unwrap()), ["127.0.0.1:8080"]);
        assert_eq!(names(candidates(Some("a:1"), Some("b:2, a:1,,c:3")).unwrap()), ["a:1", "b:2", "c:3"]);
        assert_eq!(names(candidates(None, Some("b:2,c:3")).unwrap()), ["b:2", "c:3"]);
        assert!(candidates(Some("a:1"), Some("b:x")).is_err());
    }

    #[test]
    fn only_reads_and_keyed_writes_are_sent_again() {
        assert!(Request::get("/api/status").safe_to_resend());
        assert!(!Request::new("PUT", "/api/kv/user/a", b"1".to_vec()).safe_to_resend());
        let keyed = Request::new("PUT", "/api/kv/user/a", b"1".to_vec()).header("Idempotency-Key", "k");
        assert!(keyed.safe_to_resend());
    }

    #[test]
    fn paths_and_queries_are_encoded() {
        assert_eq!(encode_path("user/a b?c", true), "user/a%20b%3Fc");
        assert_eq!(encode_path("aetherd::app", false), "aetherd::app");
        assert_eq!(encode_path("a/b", false), "a%2Fb");
        assert_eq!(
            query(&[("since", Some("5m".into())), ("limit", None), ("x", Some("a&b".into()))]),
            "?since=5m&x=a%26b"
        );
        assert_eq!(query(&[("limit", None)]), "");
    }

    #[test]
    fn an_error_answer_that_is_not_json_is_still_a_refusal_with_its_text() {
        let reply = Reply { status: 502, body: b"<html>bad gateway</html>".to_vec(), node: "h:1".into() };
        match reply.ok_json() {
            Err(CliError::Refused { status: 502, body, .. }) => {
                assert_eq!(
                    (body["error"].as_str(), body["detail"].as_str()),
                    (Some("http_error"), Some("<html>bad gateway</html>"))
                );
            }
            other => panic!("{other:?}"),
        }
        let ok = Reply { status: 201, body: br#"{"version":3}"#.to_vec(), node: "h:1".into() };
        assert_eq!(ok.ok_json().unwrap()["version"], 3);
    }

    #[test]
    fn idempotency_keys_are_fresh_and_visible_ascii() {
        let (a, b) = (idempotency_key(), idempotency_key());
        assert_ne!(a, b);
        assert!(a.len() <= 128 && a.bytes().all(|c| c.is_ascii_graphic()));
    }

    #[test]
    fn a_dead_address_is_unreachable_and_named() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let target = Target::parse(&format!("127.0.0.1:{port}")).unwrap();
        let client = Client::new(vec![target], None, None, Duration::from_secs(2));
        match client.send(&Request::get("/api/status")) {
            Err(CliError::Unreachable { tried }) => assert_eq!(tried[0].0, format!("127.0.0.1:{port}")),
            other => panic!("{other:?}"),
        }
    }
}
