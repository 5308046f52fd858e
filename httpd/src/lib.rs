//! `httpd`: the small HTTP/1.1 server behind both of a node's HTTP ports (management and app).
//!
//! One I/O thread per port runs a mio event loop: it accepts, reads and parses requests (`httparse`),
//! enforces every limit and timeout, and writes answers; handlers run on a bounded worker pool (`pool`),
//! or on a port with [`Config::inline`] on the I/O thread itself between its turns, with a watch thread that
//! hands the loop to a new I/O thread when a request holds it (the `inline` module); [`Handler::start`] lets a handler
//! start a request that never waits (hand it to another thread) on the I/O thread; a handler may also answer
//! later from any thread ([`Job::defer`]). What this crate owns, and its invariants:
//! - limits: head bytes and header count ([`Limits`]), body bytes per method and path
//!   ([`Handler::body_limit`]), connections in total (capped below the process fd limit, see
//!   [`fd_budget`]) and per client IP, body bytes held by the whole port at once
//!   ([`Limits::body_bytes_total_max`], and per client address [`Limits::body_bytes_per_ip_max`]);
//! - timeouts: header (slowloris), body (total and idle gap), idle keep-alive, write;
//! - framing: a request reaches a handler only with its whole body, exactly as framed by a valid
//!   Content-Length or by chunked coding; anything ambiguous is answered 400 and the connection closed;
//! - answers in request order per connection (one request of a connection is served at a time; pipelined
//!   requests wait in the read buffer), keep-alive, HTTP/1.0, `Expect: 100-continue`, HEAD;
//! - errors the server writes itself are `{"error": "...", "detail": "..."}` JSON;
//! - accept errors (EMFILE, ENFILE, ...) pause accepting and a timer retries; [`Server::accepting`] says
//!   whether the port accepts right now;
//! - a request with a deadline that its handler has not answered in time is answered 504 by the server
//!   ([`Handler::overdue`]) and its worker thread is replaced (at most `abandoned_max` stuck at once);
//! - optional TLS (rustls), reloadable ([`Server::reload_tls`]);
//! - streaming answers ([`stream`]): a handler may answer with a [`StreamSource`] the I/O thread polls;
//!   each stream buffers at most [`Limits::stream_buffer_bytes_max`], a reader that stops reading is cut
//!   after the write timeout, at most [`Limits::streams_max`] are open, [`Limits::streams_per_ip_max`] from one client address (503 past either), and streams end with
//!   their terminating chunk when the server stops.

mod conn;
mod event_loop;
mod fdlimit;
mod inline;
mod parse;
mod pool;
pub mod stream;
mod tls;

pub use fdlimit::{fd_budget, raise_nofile_limit};
pub use pool::{Job, Later, Resume};
pub use stream::{StreamSource, StreamStatus};
pub use tls::TlsFiles;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bounds on what one client may send or hold.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Request line plus header fields, in bytes (431 past it).
    pub head_bytes_max: usize,
    /// Header fields per request (431 past it).
    pub headers_max: usize,
    /// Open connections of the port; further clients wait in the listen backlog. Capped by [`fd_budget`].
    pub connections_max: usize,
    /// Open connections of one client IP; further ones are answered 503 and closed.
    pub connections_per_ip_max: usize,
    /// Bytes of one chunk-size line, extensions included (400 past it).
    pub chunk_line_max: usize,
    /// Bytes of the trailer section of a chunked body (431 past it).
    pub trailer_bytes_max: usize,
    /// Request body bytes the port holds at once, over every connection, from the first body byte until
    /// the request is answered (so per-route body limits times the connection count cannot exhaust
    /// memory); a body that would take the port past it is answered 503 with `Retry-After` and closed.
    pub body_bytes_total_max: usize,
    /// The same, for the connections of one client address: no address can hold the whole port's budget
    /// (half of it by default, room for the largest upload).
    pub body_bytes_per_ip_max: usize,
    /// Streaming answers open at once; a further one is answered 503 with `Retry-After`.
    pub streams_max: usize,
    /// The same, for the connections of one client address (half the port's by default), so one client
    /// cannot hold every stream and shut the others out.
    pub streams_per_ip_max: usize,
    /// Unsent bytes one streaming answer may hold; its source is offered only the room left.
    pub stream_buffer_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            head_bytes_max: 16 * 1024,
            headers_max: 100,
            connections_max: 4096,
            connections_per_ip_max: 1024,
            chunk_line_max: 1024,
            trailer_bytes_max: 4096,
            body_bytes_total_max: 256 * 1024 * 1024,
            body_bytes_per_ip_max: 128 * 1024 * 1024,
            streams_max: 64,
            streams_per_ip_max: 32,
            stream_buffer_bytes_max: 256 * 1024,
        }
    }
}

/// How long a client may take.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// From the first byte of a request to the end of its head (408 past it).
    pub header: Duration,
    /// A whole request body (408 past it).
    pub body: Duration,
    /// Longest gap without a byte while a body is read (408 past it).
    pub body_idle: Duration,
    /// A kept-alive connection with no request in progress is closed after this.
    pub idle: Duration,
    /// Longest time without progress while an answer is written; the connection is closed past it.
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(60),
            body_idle: Duration::from_secs(10),
            idle: Duration::from_secs(30),
            write: Duration::from_secs(10),
        }
    }
}

/// Everything a port is started with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Names the threads and log lines (`mgmt`, `app`).
    pub name: String,
    pub listen: SocketAddr,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Most handler threads.
    pub workers: usize,
    /// Handler threads kept while idle (`None`: all of `workers`, started at once). With a number, threads
    /// start when requests wait with every thread blocked (see the `pool` module), up to `workers`, and those above the
    /// number end after [`Config::worker_idle`] without a request: an idle port costs few threads, a busy one
    /// grows.
    pub workers_min: Option<usize>,
    /// How long a handler thread above `workers_min` waits for a request before it ends.
    pub worker_idle: Duration,
    /// Requests waiting for a worker; past it requests are answered 503 with `Retry-After`.
    pub queue_max: usize,
    /// When set, a request not answered by its handler this long after it was complete is answered 504
    /// by the server and its worker thread is abandoned (and replaced).
    pub deadline: Option<Duration>,
    /// Most abandoned (stuck) worker threads replaced at once.
    pub abandoned_max: usize,
    pub tls: Option<TlsFiles>,
    /// Run requests on the I/O thread itself, between its turns, with a watch thread that hands the port to a
    /// new I/O thread when one request holds it over a millisecond (see the `inline` module): for handlers
    /// that are usually quick. Off: every request goes to a worker.
    pub inline: bool,
}

impl Config {
    pub fn new(name: &str, listen: SocketAddr) -> Config {
        Config {
            name: name.to_owned(),
            listen,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            workers: 4,
            workers_min: None,
            worker_idle: Duration::from_secs(10),
            queue_max: 256,
            deadline: None,
            abandoned_max: 64,
            tls: None,
            inline: false,
        }
    }
}

/// One complete request: the whole body, exactly as framed.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// As sent (methods are case-sensitive).
    pub method: String,
    /// The request target as sent: path and query, not decoded.
    pub target: String,
    /// Header fields in arrival order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: Option<SocketAddr>,
    /// Whether it came over TLS.
    pub secure: bool,
}

impl Request {
    /// The first value of a header field (names compare case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An answer. The server adds `Content-Length` and `Connection`; handlers' own values for those (and
/// for `Transfer-Encoding`) are ignored.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// A streaming answer: when set (and the status is 2xx), `body` is ignored and the server writes what
    /// this source produces until it ends (see [`stream`]).
    pub stream: Option<Box<dyn StreamSource>>,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("stream", &self.stream.is_some())
            .finish()
    }
}

impl Response {
    pub fn new(status: u16, content_type: &str, body: Vec<u8>) -> Response {
        Response { status, headers: vec![("Content-Type".into(), content_type.into())], body, stream: None }
    }

    /// A streaming answer (`200`, `content_type`) produced by `source`.
    pub fn streaming(content_type: &str, source: Box<dyn StreamSource>) -> Response {
        Response { stream: Some(source), ..Response::new(200, content_type, Vec::new()) }
    }

    /// The error shape of every JSON error: `{"error": error, "detail": detail}`.
    pub fn error(status: u16, error: &str, detail: &str) -> Response {
        let mut body = String::with_capacity(error.len() + detail.len() + 24);
        body.push_str("{\"error\":");
        aether_sdk::json::write_str(&mut body, error);
        body.push_str(",\"detail\":");
        aether_sdk::json::write_str(&mut body, detail);
        body.push('}');
        Response::new(status, "application/json", body.into_bytes())
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// What a port serves.
pub trait Handler: Send + Sync + 'static {
    /// Most body bytes accepted for `method` and `path` (the target without its query); 413 past it.
    fn body_limit(&self, method: &str, path: &str) -> usize;

    /// Answer one request, on a worker thread. `job` says whether the server already answered it (past
    /// its deadline) and carries a note for [`Handler::overdue`].
    fn handle(&self, request: Request, job: &Job) -> Response;

    /// A refusal decided from the head alone, before any of the body is read or `100 Continue` is sent
    /// (an unauthenticated client, say, so that strangers cannot make the port buffer bodies). Runs on
    /// the I/O thread for requests that carry a body: it must be cheap and never block. `request.body` is
    /// empty. The connection is closed after a refusal.
    fn screen(&self, request: &Request) -> Option<Response> {
        let _ = request;
        None
    }

    /// Whether [`Handler::start`] is to be offered every request (false: the I/O thread never calls it).
    fn starts(&self) -> bool {
        false
    }

    /// Offered each complete request on the I/O thread, before any worker sees it (when [`Handler::starts`]):
    /// a handler that can start the request's work without blocking (hand it to another thread) defers it
    /// ([`Job::defer`]) and returns `None`, and the request costs no hand-off to a worker; any other request
    /// is given back (`Some`) and goes to the pool as usual. It must never block and should cost a few
    /// microseconds: every connection of the port waits while it runs. A `None` without a deferral is
    /// answered 500.
    fn start(&self, request: Request, job: &Job) -> Option<Request> {
        let _ = job;
        Some(request)
    }

    /// The answer written by the server when a request passed its deadline.
    fn overdue(&self, job: &Job) -> Response {
        let detail = job.note().unwrap_or_else(|| "the request was not answered in time".into());
        Response::error(504, "deadline exceeded", &detail)
    }
}

/// Counters of a running port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Worker threads serving (not abandoned).
    pub workers_live: usize,
    /// Worker threads stuck in a request past its deadline.
    pub workers_abandoned: usize,
    /// Requests waiting for a worker.
    pub queued: usize,
    /// Open connections.
    pub connections: usize,
    /// Streaming answers open.
    pub streams: usize,
}

/// A running port.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<event_loop::Shared>,
    pool: pool::Pool,
    io: Option<JoinHandle<()>>,
}

impl Server {
    /// Bind `config.listen` and serve `handler`.
    pub fn start(config: Config, handler: Arc<dyn Handler>) -> Result<Server, String> {
        let tls = match &config.tls {
            Some(files) => Some(tls::load(files)?),
            None => None,
        };
        let std_listener = std::net::TcpListener::bind(config.listen)
            .map_err(|e| format!("{} port: cannot listen on {}: {e}", config.name, config.listen))?;
        std_listener.set_nonblocking(true).map_err(|e| format!("{} port: {e}", config.name))?;
        let addr = std_listener.local_addr().map_err(|e| format!("{} port: {e}", config.name))?;
        let listener = mio::net::TcpListener::from_std(std_listener);
        let poll = mio::Poll::new().map_err(|e| format!("{} port: {e}", config.name))?;
        let waker = Arc::new(
            mio::Waker::new(poll.registry(), event_loop::WAKER).map_err(|e| format!("{} port: {e}", config.name))?,
        );
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let pool = pool::Pool::start(&config, Arc::clone(&handler), done_tx, Arc::clone(&waker))?;
        let shared = Arc::new(event_loop::Shared::new(&config, tls, waker));
        let inline = config.inline.then(|| Arc::new(inline::Inline::new(&config.name)));
        let io_loop =
            event_loop::EventLoop::new(config.clone(), poll, listener, handler, pool.clone(), done_rx, &shared);
        let io_loop = match io_loop {
            Ok(io_loop) => Box::new(io_loop.with_inline(inline.clone())),
            Err(e) => {
                pool.stop();
                return Err(format!("{} port: {e}", config.name));
            }
        };
        let io = std::thread::Builder::new()
            .name(format!("{}-io", config.name))
            .spawn(move || io_loop.run())
            .map_err(|e| format!("{} port: cannot start its I/O thread: {e}", config.name));
        let io = match io {
            Ok(io) => io,
            Err(e) => {
                pool.stop();
                return Err(e);
            }
        };
        if let Some(inline) = &inline {
            if let Err(e) = inline.start_watch(&shared, &pool) {
                shared.stopping.store(true, Ordering::SeqCst);
                let _ = shared.waker.wake();
                let _ = io.join();
                pool.stop();
                return Err(e);
            }
        }
        log::info!(
            "{} port listening on {}{addr}",
            config.name,
            if config.tls.is_some() { "https://" } else { "http://" }
        );
        Ok(Server { addr, shared, pool, io: Some(io) })
    }

    /// The address actually listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the port accepts connections right now (false while paused on an accept error or at its
    /// connection limit).
    pub fn accepting(&self) -> bool {
        self.shared.accepting.load(Ordering::SeqCst)
    }

    /// A flag that follows [`Server::accepting`], for readiness checks held elsewhere.
    pub fn accepting_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.shared.accepting)
    }

    /// The port's open connections, as a gauge to read from elsewhere (metrics).
    pub fn connections_gauge(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        Arc::clone(&self.shared.connections)
    }

    pub fn stats(&self) -> Stats {
        let (workers_live, workers_abandoned, queued) = self.pool.counts();
        let connections = self.shared.connections.load(Ordering::SeqCst);
        let streams = self.shared.streams.load(Ordering::SeqCst);
        Stats { workers_live, workers_abandoned, queued, connections, streams }
    }

    /// Change the request deadline (see [`Config::deadline`]) for requests that arrive from now on;
    /// `None` removes it.
    pub fn set_deadline(&self, deadline: Option<Duration>) {
        let ms = deadline.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1));
        self.shared.deadline_ms.store(ms, Ordering::Relaxed);
    }

    /// Read the TLS certificate and key again; new connections use them. A failure keeps the old ones.
    pub fn reload_tls(&self) -> Result<(), String> {
        self.shared.reload_tls()
    }

    /// Stop accepting, let requests in progress finish (one with a deadline at most until it), write
    /// their answers (bounded by the write timeout), end every stream, close every connection, stop the
    /// workers.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let _ = self.shared.waker.wake();
        if let Some(io) = self.io.take() {
            // The loop may have moved to another thread (a takeover): its end is what is waited for.
            self.shared.wait_done();
            if io.is_finished() {
                let _ = io.join();
            }
        }
        self.pool.stop();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_inner();
    }
}
