//! The HTTP shell of the management port: the [`httpd`] server, request decoding into [`Request`],
//! JSON answers, per-route body limits and a clean stop.
//!
//! Invariants: a handler sees only complete requests (framing, limits and timeouts are the `httpd`
//! server's); bodies are bounded by [`body_limit`]: the node's `[artifacts] max_bytes` (default
//! [`ARTIFACT_BYTES_MAX`]) for artifact uploads, [`BODY_BYTES_MAX`] for everything else (`httpd` refuses a
//! larger body with a 413 naming the limit before reading it); a path or query that does not decode is a
//! JSON 400.

use crate::error::ApiError;
use log::debug;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Request bodies larger than this are refused with 413 (artifact uploads excepted).
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Most bytes of an uploaded slice library (`POST|PUT /api/artifacts/...`, `PUT /repository/...`) unless
/// the node's config sets `[artifacts] max_bytes`.
pub const ARTIFACT_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One parsed request, independent of the HTTP library.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: String,
    /// Percent-decoded path segments after the leading `/`.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The client's address, when known.
    pub peer: Option<std::net::SocketAddr>,
}

impl Request {
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of a header field; names compare case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer: JSON, raw bytes with their content type (the few routes that serve a document), or a stream.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: serde_json::Value,
    /// Extra header fields (`WWW-Authenticate`, CORS, `Allow`); `Content-Type` is JSON unless `text` or
    /// `stream` is set.
    pub headers: Vec<(String, String)>,
    /// A body that is not JSON (`/metrics`): its content type and bytes, sent instead of `body`.
    pub text: Option<(String, Vec<u8>)>,
    /// A streaming answer (server-sent events): the HTTP server writes what it produces instead of `body`.
    pub stream: Option<StreamBody>,
    /// An answer another thread gives later ([`crate::later`]): the port writes that one instead, with these
    /// header fields added to it.
    pub later: Option<crate::later::Promise>,
}

/// The source of a streaming answer and its content type; taken once, when the answer is written.
#[derive(Clone)]
pub struct StreamBody {
    pub content_type: &'static str,
    source: Arc<std::sync::Mutex<Option<Box<dyn httpd::StreamSource>>>>,
}

impl StreamBody {
    fn take(&self) -> Option<Box<dyn httpd::StreamSource>> {
        self.source.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for StreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StreamBody({})", self.content_type)
    }
}

impl Response {
    pub fn new(status: u16, body: serde_json::Value) -> Response {
        Response { status, body, headers: Vec::new(), text: None, stream: None, later: None }
    }

    /// A 200 answer whose body is `bytes` of `content_type` rather than JSON.
    pub fn text(content_type: &str, bytes: Vec<u8>) -> Response {
        Response { text: Some((content_type.to_owned(), bytes)), ..Response::ok(serde_json::Value::Null) }
    }

    /// A non-JSON document (`application/yaml`, `text/plain`, ...).
    pub fn document(status: u16, content_type: &str, bytes: Vec<u8>) -> Response {
        Response { text: Some((content_type.to_owned(), bytes)), ..Response::new(status, serde_json::Value::Null) }
    }

    /// A `200` streaming answer of `content_type` produced by `source`.
    pub fn streaming(content_type: &'static str, source: Box<dyn httpd::StreamSource>) -> Response {
        let stream = StreamBody { content_type, source: Arc::new(std::sync::Mutex::new(Some(source))) };
        Response { stream: Some(stream), ..Response::new(200, serde_json::Value::Null) }
    }

    pub fn ok(body: serde_json::Value) -> Response {
        Response::new(200, body)
    }

    /// Adds a header field to the answer.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

impl From<ApiError> for Response {
    fn from(e: ApiError) -> Response {
        Response::new(e.status, e.body())
    }
}

/// The body limit of a request: artifact uploads may be up to `artifact_bytes_max`, everything else is small.
pub fn body_limit(method: &str, path: &str, artifact_bytes_max: usize) -> usize {
    let path = path.trim_start_matches('/');
    let upload = (matches!(method, "POST" | "PUT") && path.starts_with("api/artifacts/"))
        || (method == "PUT" && path.starts_with("repository/"));
    if upload {
        artifact_bytes_max
    } else {
        BODY_BYTES_MAX
    }
}

/// The management port's settings: the `httpd` defaults, with time for large uploads and enough
/// connections and workers that slow clients cannot crowd out `/api/health`.
pub fn http_config(listen: SocketAddr, threads: usize, tls: Option<httpd::TlsFiles>) -> httpd::Config {
    let mut config = httpd::Config::new("mgmt", listen);
    config.workers = threads.max(1);
    // A thread per request in flight, up to `threads`; few while nobody asks.
    config.workers_min = Some(THREADS_IDLE.min(threads.max(1)));
    config.queue_max = 1024;
    // 64 MiB at 1 MiB/s; a stalled body still ends at `body_idle`.
    config.timeouts.body = Duration::from_secs(120);
    config.tls = tls;
    config
}

/// Handler threads the management port keeps while idle.
pub const THREADS_IDLE: usize = 2;

type Handler = dyn Fn(&Request) -> Response + Send + Sync;
type Screen = dyn Fn(&Request) -> Option<Response> + Send + Sync;

struct Port {
    handler: Box<Handler>,
    screen: Box<Screen>,
    /// Which requests are served on the I/O thread ([`httpd::Handler::start`]): only ones whose handling
    /// never waits.
    quick: Option<Box<Quick>>,
    artifact_bytes_max: usize,
}

type Quick = dyn Fn(&httpd::Request) -> bool + Send + Sync;

/// Whether a request is a KV write (`PUT`, `POST` or `DELETE` of `/api/kv/{key}`): with authentication off its
/// handling never waits (the write's answer is deferred to its slot), so it may be served on the I/O thread.
pub fn is_kv_write(request: &httpd::Request) -> bool {
    matches!(request.method.as_str(), "PUT" | "POST" | "DELETE") && request.target.starts_with("/api/kv/")
}

/// The answer as the HTTP server writes it.
fn to_http(response: &Response) -> httpd::Response {
    if let Some(source) = response.stream.as_ref().and_then(StreamBody::take) {
        let content_type = response.stream.as_ref().map_or("text/event-stream", |s| s.content_type);
        let mut answer = httpd::Response::streaming(content_type, source);
        answer.status = response.status;
        answer.headers.extend(response.headers.iter().cloned());
        return answer;
    }
    let mut answer = match &response.text {
        Some((content_type, bytes)) => httpd::Response::new(response.status, content_type, bytes.clone()),
        None => httpd::Response::new(response.status, "application/json", response.body.to_string().into_bytes()),
    };
    for (name, value) in &response.headers {
        answer = answer.with_header(name, value);
    }
    answer
}

impl Port {
    /// Serve one request: its answer, or `None` when the answer is deferred (a [`Response::later`]).
    fn serve(&self, request: httpd::Request, job: &httpd::Job) -> Option<httpd::Response> {
        let mut response = match parse(request) {
            Ok(parsed) => {
                debug!("{} /{}", parsed.method, parsed.path);
                (self.handler)(&parsed)
            }
            Err(e) => e.into(),
        };
        let Some(promise) = response.later.take() else { return Some(to_http(&response)) };
        let headers = response.headers;
        for (name, value) in &headers {
            // The port's own 504 past the limit carries them too (CORS, for a browser to read it).
            job.add_answer_header(name, value);
        }
        let finish = move |mut answer: Response| {
            answer.headers.extend(headers);
            to_http(&answer)
        };
        match job.defer() {
            Some(later) => {
                // A stuck event loop shows as a 504, never as a hung API.
                job.set_note("the node did not answer in time; a write may still apply".into());
                later.within(crate::later::ANSWER_WITHIN);
                promise.then(Box::new(move |answer| later.answer(finish(answer))));
                None
            }
            None => Some(finish(promise.wait())),
        }
    }
}

impl httpd::Handler for Port {
    fn body_limit(&self, method: &str, path: &str) -> usize {
        body_limit(method, path, self.artifact_bytes_max)
    }

    fn handle(&self, request: httpd::Request, job: &httpd::Job) -> httpd::Response {
        // `None`: deferred, and this answer is not written.
        self.serve(request, job).unwrap_or_else(|| httpd::Response::new(500, "application/json", Vec::new()))
    }

    fn starts(&self) -> bool {
        self.quick.is_some()
    }

    /// The answer past a deferral's limit, shaped as the API's other timeouts.
    fn overdue(&self, job: &httpd::Job) -> httpd::Response {
        let detail = job.note().unwrap_or_else(|| "the node did not answer in time".into());
        to_http(&ApiError::timeout(detail).into())
    }

    /// A request the port's `quick` filter picks (a KV write without authentication, say: parse, route and
    /// hand the write to the node, nothing that waits) is served on the I/O thread, its answer deferred.
    fn start(&self, request: httpd::Request, job: &httpd::Job) -> Option<httpd::Request> {
        if !self.quick.as_ref().is_some_and(|quick| quick(&request)) {
            return Some(request);
        }
        if let Some(answer) = self.serve(request, job) {
            if let Some(later) = job.defer() {
                later.answer(answer);
            }
        }
        None
    }

    fn screen(&self, request: &httpd::Request) -> Option<httpd::Response> {
        let head = httpd::Request { body: Vec::new(), ..request.clone() };
        // A head that does not parse is refused with its body by `handle`, as before.
        let parsed = parse(head).ok()?;
        (self.screen)(&parsed).map(|refusal| to_http(&refusal))
    }
}

pub struct Server {
    http: httpd::Server,
}

impl Server {
    /// Binds `addr` and serves with `threads` workers.
    pub fn start(
        addr: SocketAddr,
        threads: usize,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server, String> {
        Server::start_with(http_config(addr, threads, None), handler)
    }

    /// Serves with the given `httpd` settings (TLS, limits, timeouts).
    pub fn start_with(
        config: httpd::Config,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server, String> {
        Server::start_screened(config, |_| None, handler)
    }

    /// As [`Server::start_with`], with `screen` run on each request's head (empty body) before its body
    /// is read: a refusal it returns is the answer, and the body is never received.
    pub fn start_screened(
        config: httpd::Config,
        screen: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server, String> {
        Server::start_limited(config, ARTIFACT_BYTES_MAX, screen, handler)
    }

    /// As [`Server::start_screened`], with uploaded libraries bounded by `artifact_bytes_max` bytes.
    pub fn start_limited(
        config: httpd::Config,
        artifact_bytes_max: usize,
        screen: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server, String> {
        let port = Port { handler: Box::new(handler), screen: Box::new(screen), quick: None, artifact_bytes_max };
        let http = httpd::Server::start(config, Arc::new(port))?;
        Ok(Server { http })
    }

    /// As [`Server::start_limited`], with the requests `quick` picks served on the port's I/O thread: it must
    /// pick only requests whose handling never waits (see [`is_kv_write`]).
    pub fn start_quick(
        config: httpd::Config,
        artifact_bytes_max: usize,
        screen: impl Fn(&Request) -> Option<Response> + Send + Sync + 'static,
        quick: impl Fn(&httpd::Request) -> bool + Send + Sync + 'static,
        handler: impl Fn(&Request) -> Response + Send + Sync + 'static,
    ) -> Result<Server, String> {
        let quick: Option<Box<Quick>> = Some(Box::new(quick));
        let port = Port { handler: Box::new(handler), screen: Box::new(screen), quick, artifact_bytes_max };
        let http = httpd::Server::start(config, Arc::new(port))?;
        Ok(Server { http })
    }

    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// Whether the port accepts connections right now.
    pub fn accepting_flag(&self) -> Arc<AtomicBool> {
        self.http.accepting_flag()
    }

    /// The port's open connections, as a gauge to read from elsewhere (metrics).
    pub fn connections_gauge(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.http.connections_gauge()
    }

    /// Reads the TLS certificate and key again (a failure keeps the old ones).
    pub fn reload_tls(&self) -> Result<(), String> {
        self.http.reload_tls()
    }

    pub fn stop(self) {
        self.http.stop();
    }
}

/// Headers a request may carry once: with two, which one counts would be the reader's guess (and a check
/// could read one while the action reads the other).
const SINGLE_HEADERS: [&str; 4] = ["authorization", "idempotency-key", "origin", "sec-fetch-site"];

fn parse(request: httpd::Request) -> Result<Request, ApiError> {
    for name in SINGLE_HEADERS {
        if request.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).nth(1).is_some() {
            return Err(ApiError::bad_request(format!("more than one {name} header")));
        }
    }
    let mut method = request.method.to_ascii_uppercase();
    // HEAD is GET without the body, which the server leaves out of the answer: routes know only GET.
    if method == "HEAD" {
        method = "GET".to_owned();
    }
    let url = origin_form(&request.target);
    let (raw_path, raw_query) = url.split_once('?').unwrap_or((url, ""));
    let routed = raw_path.trim_start_matches('/');
    if !SLASHED_TAILS.iter().any(|tail| routed.starts_with(tail)) && has_encoded_slash(raw_path) {
        // `/api%2Fnodes` is one segment, not `/api/nodes`: no route has it.
        return Err(ApiError::not_found(format!("no route for {}", raw_path.escape_debug())));
    }
    let path = percent_decode(raw_path.trim_start_matches('/'))?;
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(Request { method, path, query, body: request.body, headers: request.headers, peer: request.peer })
}

/// Routes whose last parameter is a key that may hold `/`, which a client may send as `%2F`. Anywhere else an
/// encoded slash would let one path segment pose as two (`/api%2Fnodes` as `/api/nodes`), so it matches nothing.
const SLASHED_TAILS: [&str; 2] = ["api/kv/", "repository/"];

fn has_encoded_slash(raw_path: &str) -> bool {
    raw_path.as_bytes().windows(3).any(|w| w[0] == b'%' && w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f'))
}

/// The path and query of a request target: an absolute-form target (`http://host/path?q`, which RFC 9112
/// says a server must accept) loses its scheme and authority.
fn origin_form(target: &str) -> &str {
    let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
    let Some(rest) = ["http://", "https://"]
        .iter()
        .find_map(|scheme| lower.starts_with(scheme).then(|| target.get(scheme.len()..)).flatten())
    else {
        return target;
    };
    rest.find(['/', '?']).map_or("/", |at| &rest[at..])
}

/// Decodes `%XX` escapes (and `+` as space in queries is left alone: paths and keys keep `+`).
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| std::str::from_utf8(h).ok());
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            let byte = byte.ok_or_else(|| ApiError::bad_request(format!("bad percent escape in '{s}'")))?;
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request(format!("'{s}' is not UTF-8 once decoded")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn absolute_form_targets_are_read_as_their_path() {
        assert_eq!(origin_form("/api/status?x=1"), "/api/status?x=1");
        assert_eq!(origin_form("http://localhost:8080/api/status?x=1"), "/api/status?x=1");
        assert_eq!(origin_form("HTTPS://h/api/kv"), "/api/kv");
        assert_eq!(origin_form("http://h"), "/");
        assert_eq!(origin_form("http://h?q"), "?q");
        assert_eq!(origin_form("http:/"), "http:/");
    }

    #[test]
    fn an_encoded_slash_separates_nothing_outside_key_routes() {
        let target = |t: &str| httpd::Request { method: "GET".into(), target: t.into(), ..httpd::Request::default() };
        for t in ["/api%2fnodes", "/api%2Fnodes", "/api/nodes%2Fnode-1", "http://h/api%2Fstatus"] {
            let e = parse(target(t)).err().unwrap_or_else(|| panic!("{t} was routed"));
            assert_eq!(e.status, 404, "{t}");
        }
        assert_eq!(parse(target("/api/kv/user%2Fa")).map(|r| r.path).ok().as_deref(), Some("api/kv/user/a"));
        assert_eq!(parse(target("//api/kv/user%2Fa")).map(|r| r.path).ok().as_deref(), Some("api/kv/user/a"));
        assert!(parse(target("/repository/org%2Fexample/echo/1.0.0/echo-1.0.0.so")).is_ok());
        assert_eq!(parse(target("/api/nodes")).map(|r| r.path).ok().as_deref(), Some("api/nodes"));
    }

    #[test]
    fn a_header_that_must_be_single_is_refused_twice() {
        for name in SINGLE_HEADERS {
            let headers = vec![(name.to_owned(), "a".to_owned()), (name.to_owned(), "b".to_owned())];
            let request = httpd::Request {
                method: "PUT".into(),
                target: "/api/kv/user/a".into(),
                headers,
                ..httpd::Request::default()
            };
            assert_eq!(parse(request).err().map(|e| e.status), Some(400), "{name}");
        }
        let once = vec![("idempotency-key".to_owned(), "a".to_owned()), ("accept".to_owned(), "b".to_owned())];
        let request = httpd::Request {
            method: "PUT".into(),
            target: "/api/kv/user/a".into(),
            headers: once,
            ..httpd::Request::default()
        };
        assert!(parse(request).is_ok());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%20c").unwrap(), "a/b c");
        assert!(percent_decode("bad%2").is_err());
        assert!(percent_decode("bad%zz").is_err());
        assert!(percent_decode("bad%+a").is_err(), "a sign is not a hex digit");
        assert!(percent_decode("%ff").is_err());
    }

    /// A handler whose KV writes are answered 50 ms later from another thread, and whose `/block` holds its
    /// worker for a second.
    fn later_port() -> Server {
        let mut config = http_config("127.0.0.1:0".parse().unwrap(), 1, None);
        config.workers_min = None;
        let handler = |req: &Request| {
            if req.path == "block" {
                std::thread::sleep(Duration::from_secs(1));
                return Response::ok(serde_json::json!({"blocked": true}));
            }
            let (waiting, answerer) = crate::later::promise();
            if req.path == "api/kv/user/never" {
                // The node never answers (its loop stuck, say).
                std::mem::forget(answerer);
                return waiting.now_or_later().with_header("Access-Control-Allow-Origin", "http://ui.example");
            }
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                answerer.answer(Response::ok(serde_json::json!({"version": 1})));
            });
            waiting.now_or_later().with_header("X-Extra", "kept")
        };
        Server::start_quick(config, ARTIFACT_BYTES_MAX, |_| None, is_kv_write, handler).unwrap()
    }

    #[test]
    fn a_later_answer_reaches_the_client_with_its_headers_and_a_quick_write_needs_no_worker() {
        let server = later_port();
        let addr = server.addr();
        let blocker = std::thread::spawn(move || {
            exchange(addr, "GET /block HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        });
        std::thread::sleep(Duration::from_millis(100));
        let started = std::time::Instant::now();
        let put = "PUT /api/kv/user/a HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1";
        let raw = exchange(addr, put);
        assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
        assert!(raw.contains("\"version\":1") && raw.to_ascii_lowercase().contains("x-extra: kept"), "{raw}");
        assert!(
            started.elapsed() < Duration::from_millis(700),
            "served beside the busy worker: {:?}",
            started.elapsed()
        );
        assert!(blocker.join().unwrap().starts_with("HTTP/1.1 200"));
        server.stop();
    }

    #[test]
    fn a_later_answer_that_never_comes_is_a_timeout_with_the_answers_headers() {
        let server = later_port();
        let started = std::time::Instant::now();
        let put =
            "PUT /api/kv/user/never HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nConnection: close\r\n\r\n1";
        let raw = exchange(server.addr(), put);
        assert!(raw.starts_with("HTTP/1.1 504"), "{raw}");
        assert!(raw.contains("\"error\":\"timeout\"") && raw.contains("may still apply"), "{raw}");
        assert!(raw.to_ascii_lowercase().contains("access-control-allow-origin: http://ui.example"), "{raw}");
        let waited = started.elapsed();
        assert!(waited >= crate::later::ANSWER_WITHIN && waited < crate::later::ANSWER_WITHIN * 2, "{waited:?}");
        server.stop();
    }

    fn exchange(addr: SocketAddr, raw: &str) -> String {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(raw.as_bytes()).unwrap();
        let mut got = String::new();
        let _ = stream.read_to_string(&mut got);
        got
    }

    #[test]
    fn head_is_served_by_get_routes_without_the_body() {
        let server = Server::start("127.0.0.1:0".parse().unwrap(), 1, |req| match req.method.as_str() {
            "GET" => Response::ok(serde_json::json!({"ready": true})),
            _ => Response::new(404, serde_json::json!({"error": "not_found", "detail": "only GET"})),
        })
        .unwrap();
        let head = exchange(server.addr(), "HEAD /health/ready HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("Content-Length: 14\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    }

    #[test]
    fn requests_arrive_decoded_with_headers_and_peer() {
        let server = Server::start("127.0.0.1:0".parse().unwrap(), 2, |req| {
            Response::ok(serde_json::json!({
                "method": req.method, "path": req.path, "q": req.query_value("q"),
                "auth": req.header("AUTHORIZATION"), "peer": req.peer.map(|p| p.ip().to_string()),
                "body": String::from_utf8_lossy(&req.body),
            }))
        })
        .unwrap();
        let raw = exchange(
            server.addr(),
            "post /api/a%20b?q=x%2By HTTP/1.1\r\nHost: h\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\
             Connection: close\r\n\r\nhi",
        );
        let body: serde_json::Value = serde_json::from_str(raw.split_once("\r\n\r\n").unwrap().1).unwrap();
        let expected = serde_json::json!({"method": "POST", "path": "api/a b", "q": "x+y", "auth": "Bearer t",
            "peer": "127.0.0.1", "body": "hi"});
        assert_eq!(body, expected);
        assert!(raw.contains("Content-Type: application/json"));
        let bad = exchange(server.addr(), "GET /api/%zz HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        // Bodies: 16 MiB in general, 64 MiB for artifact uploads.
        let big = "POST /api/kv/x HTTP/1.1\r\nHost: h\r\nContent-Length: 16777217\r\n\r\n";
        assert!(exchange(server.addr(), big).starts_with("HTTP/1.1 413"));
        assert_eq!(body_limit("PUT", "/api/artifacts/g/a/1", ARTIFACT_BYTES_MAX), ARTIFACT_BYTES_MAX);
        server.stop();
    }

    #[test]
    fn upload_bodies_follow_the_configured_limit_and_the_413_names_it() {
        assert_eq!(body_limit("PUT", "/repository/g/a/1.0.0/a-1.0.0.so", 5), 5);
        assert_eq!(body_limit("POST", "/api/artifacts/g/a/1.0.0", 5), 5);
        assert_eq!(body_limit("GET", "/repository/g/a/1.0.0/a-1.0.0.so", 5), BODY_BYTES_MAX);
        let config = http_config("127.0.0.1:0".parse().unwrap(), 1, None);
        let server = Server::start_limited(config, 1000, |_| None, |_| Response::ok(serde_json::json!({}))).unwrap();
        let put = "PUT /repository/g/a/1.0.0/a-1.0.0.so HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\nConnection: close\r\n\r\n";
        let refused = exchange(server.addr(), put);
        assert!(refused.starts_with("HTTP/1.1 413"), "{refused}");
        assert!(refused.contains("over 1000 bytes"), "{refused}");
        let small = "PUT /repository/g/a/1.0.0/a-1.0.0.so HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        assert!(exchange(server.addr(), small).starts_with("HTTP/1.1 200"));
        server.stop();
    }
}
