//! The app port's HTTP side: an [`httpd`] server whose I/O thread (and, for calls that hold it, its worker
//! threads) run local slice calls themselves, under the server's per-request deadline.
//!
//! The port runs requests inline (`httpd::Config::inline`): after each turn its I/O thread serves the requests it read
//! through the [`Dispatcher`], and a call to a slice on this node runs right there, so a request costs no hand-off at
//! all; a call that holds the thread (1 ms in a kernel wait, about 2 ms computing) has the port taken over by a new I/O
//! thread and requests go to the workers for a while (see `httpd`'s `inline`). A call that goes to another node is
//! deferred ([`httpd::Job::defer`]): the I/O thread starts it (the handler's `start`) and serves the next request, and
//! the node's event loop answers the client when the reply comes (or hands the request back to the pool to try another
//! node), so a forwarded call holds no thread while it waits and its reply costs one wake-up (the I/O thread's) instead
//! of two. A slice that never returns must still get its caller a 504 and must not take the port down with it: every
//! request has a deadline (the call deadline plus [`DEADLINE_MARGIN`]), and the server's watchdog answers 504 for a
//! request past it, abandons the stuck worker and starts a replacement (see `httpd`'s pool).
//!
//! Invariants (kept by `httpd`, relied on here):
//! - a request is answered exactly once: by its worker, by the thread its forwarded call's outcome arrives on
//!   (the event loop), or by the server past the deadline, whose 504 names the slice the call was in
//!   ([`JobWatch::arm`] notes it) and carries the request's `X-Request-Id`;
//! - a request whose route goes to another node starts on the port's I/O thread ([`AppPort`]'s `start`,
//!   before the turn's inline runs), where no slice runs and nothing waits: a local attempt there is
//!   skipped, a single-active slice answered 503;
//! - stuck threads are replaced only while at most `abandoned_max` ([`ABANDONED_MAX`] on the app port)
//!   are alive; past it the port serves with fewer workers and the log says so; a stuck thread that
//!   comes back serves again when the pool is short;
//! - the I/O thread never waits for a worker: pipelined hung requests on one connection each get their
//!   504 in order, one deadline after another;
//! - stopping waits for requests in progress, a hung one at most until its deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use container::SliceHandle;
use invoke::InvokeReply;

use super::answers::is_overloaded;
use super::bulkhead::RETRY_AFTER;
use super::dispatch::{Dispatched, Dispatcher, HttpAnswer, Runner, Settled, Watch};
use super::AppOptions;
use crate::metrics::request_id;

/// Most abandoned worker threads (stuck in slices past their deadline) replaced at once.
pub(super) const ABANDONED_MAX: usize = 64;
/// How much later than the call deadline the server gives up on a worker: a local call that ends right at
/// its deadline answers its own 504 rather than costing a thread. (A deferred forward holds no thread; its
/// table expires on the loop's tick, so the server's 504 usually answers it, with the same request id.)
pub(super) const DEADLINE_MARGIN: Duration = Duration::from_millis(20);

/// The `httpd` settings of the app port.
pub(super) fn http_config(listen: SocketAddr, options: &AppOptions) -> httpd::Config {
    let mut config = httpd::Config::new("app", listen);
    config.workers = options.handler_threads.max(1);
    config.workers_min = options.handler_threads_idle;
    config.queue_max = 1024;
    config.deadline = Some(options.call_deadline + DEADLINE_MARGIN);
    config.abandoned_max = options.abandoned_max;
    config.tls = options.tls.clone();
    // Slice calls are usually quick: they run on the I/O thread, handed to another when one holds it.
    config.inline = options.inline;
    config
}

/// What the app port's server serves.
pub(super) struct AppPort {
    dispatcher: Arc<Dispatcher>,
    body_bytes_max: usize,
}

impl AppPort {
    pub fn new(dispatcher: Arc<Dispatcher>, body_bytes_max: usize) -> AppPort {
        AppPort { dispatcher, body_bytes_max }
    }
}

impl httpd::Handler for AppPort {
    fn body_limit(&self, _method: &str, _path: &str) -> usize {
        self.body_bytes_max
    }

    fn handle(&self, request: httpd::Request, job: &httpd::Job) -> httpd::Response {
        // `None`: deferred, and this answer is not written.
        self.serve_request(request, &JobWatch::on_worker(job))
            .unwrap_or_else(|| httpd::Response::new(500, "", Vec::new()))
    }

    fn starts(&self) -> bool {
        true
    }

    /// A request whose route goes to another node (no instance of its slice here, not single-active) starts
    /// on the I/O thread: route, encode and hand the forward to the event loop there, with no worker in the
    /// way. Any other request goes to the workers.
    fn start(&self, request: httpd::Request, job: &httpd::Job) -> Option<httpd::Request> {
        if !self.dispatcher.goes_remote(&request.method, &request.target) {
            return Some(request);
        }
        if let Some(answer) = self.serve_request(request, &JobWatch { job, on_io: true }) {
            // Answered at once (no instance anywhere, say): through the deferral, as this is not a worker.
            if let Some(later) = job.defer() {
                later.answer(answer);
            }
        }
        None
    }
}

impl AppPort {
    /// Serve one request: the answer, or `None` when it was deferred.
    fn serve_request(&self, request: httpd::Request, watch: &JobWatch<'_>) -> Option<httpd::Response> {
        let sent = request.headers.iter().find(|(name, _)| name.eq_ignore_ascii_case("x-request-id"));
        let id: Arc<str> = request_id::from_header(sent.map(|(_, value)| value.as_str())).into();
        let _scope = request_id::Scope::enter(&id);
        watch.job.add_answer_header("X-Request-Id", &id);
        let httpd::Request { method, target, headers, body, .. } = request;
        let started = self.dispatcher.http_start(&method, &target, &headers, move || Ok(body), Runner::Inline(watch));
        match started {
            Ok(dispatched) => serve(&self.dispatcher, id, dispatched, watch),
            Err(answer) => Some(response(answer).with_header("X-Request-Id", &id)),
        }
    }
}

/// Answer a dispatched request (`None`: deferred). A forwarded attempt is deferred ([`httpd::Job::defer`]):
/// this thread goes back to the pool, and the thread the outcome arrives on (the node's event loop) answers
/// the client straight away, or, when the call is to go on (a retry elsewhere), hands it back to the pool,
/// where it continues as it would have on a worker.
fn serve(
    dispatcher: &Arc<Dispatcher>,
    id: Arc<str>,
    dispatched: Dispatched,
    watch: &JobWatch<'_>,
) -> Option<httpd::Response> {
    let pending = match dispatched {
        Dispatched::Reply(reply) => return Some(answer(reply, &id)),
        Dispatched::Forward(pending) => pending,
    };
    let job = watch.job;
    job.set_note(format!("{} did not answer in time: no reply from {}", pending.artifact(), pending.node));
    let Some(later) = job.defer() else {
        if watch.on_io {
            // Never reached (a deferral is always offered there), and no thread may wait there.
            return Some(httpd::Response::error(500, "internal", "the request could not be deferred"));
        }
        let reply = dispatcher.forward_blocking(Dispatched::Forward(pending), Runner::Inline(watch));
        return Some(answer(reply, &id));
    };
    let again = Arc::clone(dispatcher);
    dispatcher.forward_then(
        *pending,
        Box::new(move |settled| match settled {
            Settled::Reply(reply) => later.answer(self::answer(reply, &id)),
            Settled::Again(named, progress) => later.resume(Box::new(move |job: &httpd::Job| {
                let _scope = request_id::Scope::enter(&id);
                let watch = JobWatch::on_worker(job);
                let dispatched = again.dispatch_from(&named.call(), progress, Runner::Inline(&watch));
                serve(&again, id, dispatched, &watch).unwrap_or_else(|| httpd::Response::new(500, "", Vec::new()))
            })),
        }),
    );
    None
}

/// The HTTP answer for a slice's reply, with the request's id.
fn answer(reply: InvokeReply, id: &str) -> httpd::Response {
    response(HttpAnswer { reply, allow: None }).with_header("X-Request-Id", id)
}

/// A request's [`Watch`]: the server's deadline stands for the whole request; arming notes the slice.
struct JobWatch<'a> {
    job: &'a httpd::Job,
    /// On the port's I/O thread, where no slice may run.
    on_io: bool,
}

impl JobWatch<'_> {
    fn on_worker(job: &httpd::Job) -> JobWatch<'_> {
        JobWatch { job, on_io: false }
    }
}

impl Watch for JobWatch<'_> {
    fn deadline(&self) -> Option<Instant> {
        self.job.deadline().map(|at| at.checked_sub(DEADLINE_MARGIN).unwrap_or(at))
    }

    fn arm(&self, _deadline: Instant, slice: &SliceHandle) {
        self.job.set_note(format!("{} did not answer in time", slice.artifact()));
    }

    fn disarm(&self) -> bool {
        !self.job.overdue()
    }

    fn local_allowed(&self) -> bool {
        !self.on_io
    }

    fn defers(&self) -> bool {
        true
    }
}

/// The HTTP answer for a reply: its status, content type and body, and the slice's header fields
/// except those that are the server's (hop-by-hop fields, `Content-Length`, `X-Request-Id`, and a
/// second `Content-Type`), which are dropped.
///
/// A slice's answer is the final response to the request, so an interim status (1xx: `100 Continue`,
/// `101 Switching Protocols`, `103 Early Hints`) is answered 502 instead: written as the answer, it
/// would leave the client waiting for a final response (or speaking another protocol) while the
/// connection serves its next request, and the two would pair the wrong answers.
fn response(answer: HttpAnswer) -> httpd::Response {
    if answer.reply.status < 200 {
        let status = answer.reply.status;
        log::warn!("app port: a slice answered the interim status {status}; the client gets 502");
        let detail = format!("the slice answered the interim status {status}; an answer must be 200..=599");
        return httpd::Response::error(502, "bad gateway", &detail);
    }
    let overloaded = is_overloaded(&answer.reply);
    let reply = answer.reply;
    let mut response = httpd::Response { status: reply.status, headers: Vec::new(), body: reply.body, stream: None };
    if !reply.content_type.is_empty() {
        response.headers.push(("Content-Type".to_owned(), reply.content_type));
    }
    let servers = |name: &str| {
        aether_sdk::headers::is_hop_by_hop(name)
            || ["x-request-id", "content-type"].iter().any(|own| own.eq_ignore_ascii_case(name))
    };
    for (name, value) in reply.headers {
        if servers(&name) {
            log::debug!("app port: dropping header `{name}` from a slice's answer (the server's own)");
        } else {
            response.headers.push((name, value));
        }
    }
    if let Some(allow) = answer.allow {
        response = response.with_header("Allow", &allow);
    }
    if overloaded {
        response = response.with_header("Retry-After", &RETRY_AFTER.as_secs().max(1).to_string());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::{http, repo};
    use container::{Artifact, Container, ContainerConfig};
    use invoke::{Registry, RouteTarget};
    use parking_lot::RwLock;

    /// A port serving `/faulty/hang` and `/faulty/ok` with a 200 ms deadline.
    fn faulty_port(threads: usize, abandoned_max: usize) -> httpd::Server {
        let mut config = ContainerConfig::new(repo(), "node-1");
        config.pool.workers = 1;
        let container = Arc::new(Container::new(config).unwrap());
        let faulty = Artifact::parse("org.aether.examples:faulty:1.0.0").unwrap();
        container.deploy(&faulty, vec![]).unwrap();
        let mut registry = Registry::new();
        for method in ["hang", "ok"] {
            let target = RouteTarget { artifact: faulty.to_string(), method: method.into() };
            registry.put_route("GET", &format!("/faulty/{method}"), target).unwrap();
        }
        let registry = Arc::new(RwLock::new(registry));
        let deadline = Duration::from_millis(200);
        let dispatcher = Arc::new(Dispatcher::new("node-1".into(), container, registry, None, deadline));
        let options = AppOptions {
            handler_threads: threads,
            handler_threads_idle: None,
            call_deadline: deadline,
            abandoned_max,
            body_bytes_max: 1024,
            ..AppOptions::from_env()
        };
        let config = http_config("127.0.0.1:0".parse().unwrap(), &options);
        httpd::Server::start(config, Arc::new(AppPort::new(dispatcher, 1024))).unwrap()
    }

    fn counts(server: &httpd::Server) -> (usize, usize) {
        let stats = server.stats();
        (stats.workers_live, stats.workers_abandoned)
    }

    #[test]
    fn pipelined_hung_calls_on_one_connection_each_get_504() {
        use std::io::{Read, Write};
        let server = faulty_port(2, 4);
        let addr = server.addr();
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let hang = "GET /faulty/hang HTTP/1.1\r\nHost: test\r\n\r\n";
        let last = "GET /faulty/ok HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
        stream.write_all(format!("{hang}{hang}{last}").as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let statuses: Vec<&str> = raw.match_indices("HTTP/1.1 ").map(|(at, _)| &raw[at + 9..at + 12]).collect();
        assert_eq!(statuses, ["504", "504", "200"], "{raw}");
        assert!(raw.contains("org.aether.examples:faulty:1.0.0 did not answer in time"), "{raw}");
        assert_eq!(http(addr, "GET", "/faulty/ok", "").0, 200);
        assert_eq!(counts(&server), (2, 2));
        server.stop();
    }

    #[test]
    fn past_the_cap_stuck_workers_are_not_replaced_and_hangs_still_get_504() {
        let server = faulty_port(2, 1);
        let addr = server.addr();
        assert_eq!(http(addr, "GET", "/faulty/hang", "").0, 504);
        assert_eq!(counts(&server), (2, 1), "the first stuck worker is replaced");
        assert_eq!(http(addr, "GET", "/faulty/hang", "").0, 504);
        assert_eq!(counts(&server), (1, 2), "the second is not: the cap is 1");
        assert_eq!(http(addr, "GET", "/faulty/ok", "").0, 200, "the last worker serves on");
        server.stop();
    }
}
