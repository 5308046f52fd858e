//! The app port's handler threads, which run local slice calls themselves, and their watchdog.
//!
//! Each handler thread takes requests from tiny_http and serves them through the [`Dispatcher`]; a
//! call to a slice on this node runs right there, on the handler thread, so a request costs no
//! hand-off to a worker pool and back (two thread wake-ups). A slice that never returns must still get
//! its caller a 504 and must not take the port down with it, so every handler has a [`Slot`]: the
//! request (its responder) sits in the slot while the handler serves it, and while the slice call runs
//! the slot also holds the call's deadline. A watchdog thread scans the slots every [`TICK`]; from a
//! slot past its deadline (plus [`GRACE`], so that a call ending right at its deadline is not
//! abandoned for nothing) it takes the request, answers 504, and marks the slot abandoned. The stuck
//! thread, if its call ever returns, finds the request gone and exits. After each scan the watchdog
//! tops the live handlers up to their number.
//!
//! Invariants:
//! - a request is answered exactly once, by whoever takes it out of its slot (under the slot's lock):
//!   the handler after its call, or the watchdog once the deadline has passed;
//! - stuck threads are replaced only while at most `abandoned_max` ([`ABANDONED_MAX`] on the app
//!   port) are alive, so the threads, stuck ones included, never number more than the handlers plus
//!   `abandoned_max`; past it the port serves with fewer handlers and the log says so; when stuck
//!   threads come back and exit, the watchdog starts replacements again;
//! - the watchdog never waits for a handler or a socket: it only try-locks slots (a handler holds its
//!   slot's lock while it reads a body or moves its request in or out, never during the slice call),
//!   a scan costs one try-lock per live handler, and each 504 is written by a short-lived thread;
//! - once stopping, no handler is started; stopping waits for the live handlers to finish their
//!   requests, a hung one at most until the watchdog abandons it.

use std::borrow::Cow;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use container::SliceHandle;
use invoke::InvokeReply;
use parking_lot::Mutex;

use super::dispatch::{self, Dispatcher, HttpAnswer, Watch};

/// How often the watchdog scans the slots: a hung call is answered at most this late (plus [`GRACE`]).
pub(super) const TICK: Duration = Duration::from_millis(5);
/// How long past its deadline a call may still return before its thread is abandoned.
pub(super) const GRACE: Duration = Duration::from_millis(10);
/// Most abandoned handler threads (stuck in slices past their deadline) replaced at once.
pub(super) const ABANDONED_MAX: usize = 64;

/// What the handler threads share with each other and with the watchdog.
struct Shared {
    server: Arc<tiny_http::Server>,
    dispatcher: Arc<Dispatcher>,
    body_bytes_max: usize,
    /// How many live handlers the watchdog keeps.
    handlers_target: usize,
    /// Most abandoned threads replaced at once; past it stuck handlers are not replaced.
    abandoned_max: usize,
    stopping: AtomicBool,
    live: Mutex<Vec<Handler>>,
    /// Abandoned threads still stuck in a call.
    abandoned: AtomicUsize,
    /// The log already says replacements stopped at `abandoned_max` (said once until one starts again).
    capped: AtomicBool,
    /// Names the threads (`app-http-{n}`), replacements included.
    next_n: AtomicUsize,
}

struct Handler {
    slot: Arc<Slot>,
    thread: JoinHandle<()>,
}

/// Where a handler's request waits while the handler serves it.
#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    request: Option<tiny_http::Request>,
    /// While a slice call runs on the handler: when its caller stops waiting, and the slice.
    armed: Option<(Instant, SliceHandle)>,
    /// The watchdog took the request: the handler exits when (if ever) its call returns.
    abandoned: bool,
}

impl Watch for Slot {
    fn arm(&self, deadline: Instant, slice: &SliceHandle) {
        self.state.lock().armed = Some((deadline, slice.clone()));
    }

    fn disarm(&self) -> bool {
        let mut state = self.state.lock();
        state.armed = None;
        !state.abandoned
    }
}

/// A request the watchdog took from an abandoned slot.
struct Overdue {
    request: Option<tiny_http::Request>,
    slice: SliceHandle,
    /// Abandoned threads stuck, this one included.
    stuck: usize,
}

/// The handler threads and the watchdog of one app port.
pub(super) struct Handlers {
    shared: Arc<Shared>,
    watchdog_stop: Arc<AtomicBool>,
    watchdog: Option<JoinHandle<()>>,
}

impl Handlers {
    /// Start `threads` handlers (at least one) and the watchdog, which keeps at most `abandoned_max`
    /// stuck threads.
    pub fn start(
        server: &Arc<tiny_http::Server>,
        dispatcher: &Arc<Dispatcher>,
        threads: usize,
        body_bytes_max: usize,
        abandoned_max: usize,
    ) -> Result<Handlers, String> {
        let shared = Arc::new(Shared {
            server: Arc::clone(server),
            dispatcher: Arc::clone(dispatcher),
            body_bytes_max,
            handlers_target: threads.max(1),
            abandoned_max,
            stopping: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
            abandoned: AtomicUsize::new(0),
            capped: AtomicBool::new(false),
            next_n: AtomicUsize::new(0),
        });
        let mut handlers = Handlers { shared, watchdog_stop: Arc::new(AtomicBool::new(false)), watchdog: None };
        for _ in 0..handlers.shared.handlers_target {
            match spawn_handler(&handlers.shared) {
                Ok(handler) => handlers.shared.live.lock().push(handler),
                Err(e) => {
                    handlers.stop();
                    return Err(e);
                }
            }
        }
        let (shared, stop) = (Arc::clone(&handlers.shared), Arc::clone(&handlers.watchdog_stop));
        let watchdog =
            std::thread::Builder::new().name("app-watchdog".into()).spawn(move || watchdog_loop(&shared, &stop));
        match watchdog {
            Ok(thread) => handlers.watchdog = Some(thread),
            Err(e) => {
                handlers.stop();
                return Err(format!("cannot start the app port watchdog: {e}"));
            }
        }
        Ok(handlers)
    }

    /// Live handlers (not abandoned).
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.shared.live.lock().len()
    }

    /// Abandoned threads still stuck in a call.
    #[cfg(test)]
    pub fn abandoned(&self) -> usize {
        self.shared.abandoned.load(Ordering::SeqCst)
    }

    /// Stop taking requests; wait for the live handlers to finish theirs (a hung call at most until the
    /// watchdog abandons it), then stop the watchdog.
    pub fn stop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Under the lock: the watchdog starts no handler once `stopping` is seen, so every thread that
        // may still call `recv` is counted here. An unblock left over (a handler abandoned meanwhile)
        // is harmless.
        let live = self.shared.live.lock().len();
        for _ in 0..live {
            self.shared.server.unblock();
        }
        loop {
            let finished: Vec<Handler> = {
                let mut live = self.shared.live.lock();
                let (finished, running) = std::mem::take(&mut *live).into_iter().partition(|h| h.thread.is_finished());
                *live = running;
                finished
            };
            for handler in finished {
                let _ = handler.thread.join();
            }
            if self.shared.live.lock().is_empty() || self.watchdog.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.watchdog_stop.store(true, Ordering::SeqCst);
        if let Some(watchdog) = self.watchdog.take() {
            let _ = watchdog.join();
        }
    }
}

fn spawn_handler(shared: &Arc<Shared>) -> Result<Handler, String> {
    let slot = Arc::new(Slot::default());
    let n = shared.next_n.fetch_add(1, Ordering::Relaxed);
    let (for_thread, slot_for_thread) = (Arc::clone(shared), Arc::clone(&slot));
    let thread = std::thread::Builder::new()
        .name(format!("app-http-{n}"))
        .spawn(move || handler_loop(&for_thread, &slot_for_thread))
        .map_err(|e| format!("cannot start an app handler thread: {e}"))?;
    Ok(Handler { slot, thread })
}

fn handler_loop(shared: &Shared, slot: &Slot) {
    let mut url = String::new();
    loop {
        let request = match shared.server.recv() {
            Ok(request) => request,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(e) => {
                log::debug!("app port: {e}");
                continue;
            }
        };
        let served = catch_unwind(AssertUnwindSafe(|| serve(shared, slot, request, &mut url)));
        let served = served.unwrap_or_else(|payload| {
            // A bug on the way (slices' own panics are caught at their boundary): answer, serve on.
            log::error!("app port: serving a request panicked: {}", sdk::export::panic_message(payload.as_ref()));
            let mut state = slot.state.lock();
            state.armed = None;
            let abandoned = state.abandoned;
            let request = state.request.take().filter(|_| !abandoned);
            drop(state);
            if let Some(request) = request {
                let reply = dispatch::error(500, "internal", "the node failed while serving this request", false);
                respond(request, HttpAnswer { reply, allow: None });
            }
            !abandoned
        });
        if !served {
            let still = shared.abandoned.fetch_sub(1, Ordering::SeqCst) - 1;
            log::info!("app port: an abandoned handler thread's call returned; it exits ({still} still stuck)");
            return;
        }
    }
}

/// Serve one request; false when the watchdog took it (this thread is abandoned).
fn serve(shared: &Shared, slot: &Slot, request: tiny_http::Request, url: &mut String) -> bool {
    let method = method_name(request.method());
    url.clear();
    url.push_str(request.url());
    slot.state.lock().request = Some(request);
    let read_body = || match slot.state.lock().request.as_mut() {
        Some(request) => read_body(request, shared.body_bytes_max),
        None => Err(dispatch::error(500, "internal", "the request was lost before its body was read", false)),
    };
    let answer = shared.dispatcher.http_call_inline(&method, url, read_body, slot);
    let request = {
        let mut state = slot.state.lock();
        if state.abandoned {
            return false;
        }
        state.request.take()
    };
    if let Some(request) = request {
        respond(request, answer);
    }
    true
}

/// The method's name, without a copy for the standard ones.
fn method_name(method: &tiny_http::Method) -> Cow<'static, str> {
    use tiny_http::Method::*;
    let name = match method {
        Get => "GET",
        Head => "HEAD",
        Post => "POST",
        Put => "PUT",
        Delete => "DELETE",
        Patch => "PATCH",
        Options => "OPTIONS",
        other => return Cow::Owned(other.as_str().to_owned()),
    };
    Cow::Borrowed(name)
}

pub(super) fn respond(request: tiny_http::Request, answer: HttpAnswer) {
    let reply = answer.reply;
    let mut response = tiny_http::Response::from_data(reply.body).with_status_code(reply.status);
    if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", reply.content_type.as_bytes()) {
        response = response.with_header(header);
    }
    if let Some(allow) = answer.allow.and_then(|a| tiny_http::Header::from_bytes("Allow", a).ok()) {
        response = response.with_header(allow);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("app port: cannot answer: {e}");
    }
}

fn read_body(request: &mut tiny_http::Request, max: usize) -> Result<Vec<u8>, InvokeReply> {
    let mut body = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return Err(dispatch::error(400, "bad request", &format!("cannot read the body: {e}"), false));
    }
    if body.len() > max {
        return Err(dispatch::error(413, "payload too large", &format!("bodies are limited to {max} bytes"), false));
    }
    Ok(body)
}

fn watchdog_loop(shared: &Arc<Shared>, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(TICK);
        let overdue = {
            let mut live = shared.live.lock();
            let overdue = take_overdue(&mut live, Instant::now(), &shared.abandoned);
            for late in &overdue {
                log::warn!(
                    "app port: a call to {} passed its deadline; answered 504, its handler thread abandoned ({} stuck)",
                    late.slice.artifact(),
                    late.stuck
                );
            }
            top_up(shared, &mut live);
            overdue
        };
        for late in overdue {
            answer_late(late);
        }
    }
}

/// Answer 504 on a thread of its own: tiny_http writes the responses of one connection in order, so
/// with pipelined requests this answer may wait until an earlier request of the same connection is
/// answered, maybe by the watchdog itself at a later tick. Such a thread lives only until then; they
/// are as many at most as the requests held by handlers (live or stuck), which are bounded.
fn answer_late(late: Overdue) {
    let Some(request) = late.request else { return };
    let detail = format!("{} did not answer in time", late.slice.artifact());
    let reply = dispatch::error(504, "deadline exceeded", &detail, true);
    let spawned = std::thread::Builder::new()
        .name("app-deadline".into())
        .spawn(move || respond(request, HttpAnswer { reply, allow: None }));
    if let Err(e) = spawned {
        // The request went with the closure; tiny_http answers a dropped request itself (500).
        log::error!("app port: cannot start a thread to answer 504: {e}");
    }
}

/// Take the requests of slots past their deadline (plus [`GRACE`]); their handlers leave `live`,
/// their threads are detached.
fn take_overdue(live: &mut Vec<Handler>, now: Instant, abandoned: &AtomicUsize) -> Vec<Overdue> {
    let mut overdue = Vec::new();
    let mut i = 0;
    while i < live.len() {
        match expire(&live[i].slot, now, abandoned) {
            Some(late) => {
                overdue.push(late);
                drop(live.swap_remove(i));
            }
            None => i += 1,
        }
    }
    overdue
}

/// The slot's request when its call is past the deadline; the slot is then abandoned, and counted in
/// `abandoned` before its thread can see it (and count itself out).
fn expire(slot: &Slot, now: Instant, abandoned: &AtomicUsize) -> Option<Overdue> {
    // A locked slot is reading a body or moving its request: not in a slice call. Next tick.
    let mut state = slot.state.try_lock()?;
    let (deadline, _) = state.armed.as_ref()?;
    if deadline.checked_add(GRACE).is_none_or(|at| now < at) {
        return None;
    }
    let (_, slice) = state.armed.take()?;
    let stuck = abandoned.fetch_add(1, Ordering::SeqCst) + 1;
    state.abandoned = true;
    Some(Overdue { request: state.request.take(), slice, stuck })
}

/// Start handlers until there are `handlers_target` live ones, unless stopping or too many threads
/// are stuck.
fn top_up(shared: &Arc<Shared>, live: &mut Vec<Handler>) {
    while live.len() < shared.handlers_target && !shared.stopping.load(Ordering::SeqCst) {
        let stuck = shared.abandoned.load(Ordering::SeqCst);
        if stuck > shared.abandoned_max {
            if shared.capped.swap(true, Ordering::SeqCst) {
                return;
            }
            log::error!(
                "app port: {stuck} handler threads are stuck in slices past their deadline; not replacing more \
                 ({} of {} handlers serve)",
                live.len(),
                shared.handlers_target
            );
            return;
        }
        match spawn_handler(shared) {
            Ok(handler) => {
                shared.capped.store(false, Ordering::SeqCst);
                live.push(handler);
            }
            Err(e) => {
                log::error!("app port: {e}");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::tests::{http, repo};
    use container::{Artifact, Container, ContainerConfig};
    use invoke::{Registry, RouteTarget};
    use parking_lot::RwLock;

    /// Handlers serving `/faulty/hang` and `/faulty/ok` with a 200 ms deadline.
    fn faulty_handlers(threads: usize, abandoned_max: usize) -> (Handlers, std::net::SocketAddr) {
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
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let addr = server.server_addr().to_ip().unwrap();
        (Handlers::start(&server, &dispatcher, threads, 1024, abandoned_max).unwrap(), addr)
    }

    #[test]
    fn pipelined_hung_calls_on_one_connection_each_get_504() {
        use std::io::{Read, Write};
        let (mut handlers, addr) = faulty_handlers(2, 4);
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let hang = "GET /faulty/hang HTTP/1.1\r\nHost: test\r\n\r\n";
        let last = "GET /faulty/ok HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n";
        stream.write_all(format!("{hang}{hang}{last}").as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let statuses: Vec<&str> = raw.match_indices("HTTP/1.1 ").map(|(at, _)| &raw[at + 9..at + 12]).collect();
        assert_eq!(statuses, ["504", "504", "200"], "{raw}");
        assert_eq!(http(addr, "GET", "/faulty/ok", "").0, 200);
        assert_eq!((handlers.live(), handlers.abandoned()), (2, 2));
        handlers.stop();
    }

    #[test]
    fn past_the_cap_stuck_handlers_are_not_replaced_and_hangs_still_get_504() {
        let (mut handlers, addr) = faulty_handlers(2, 1);
        assert_eq!(http(addr, "GET", "/faulty/hang", "").0, 504);
        assert_eq!((handlers.live(), handlers.abandoned()), (2, 1), "the first stuck handler is replaced");
        assert_eq!(http(addr, "GET", "/faulty/hang", "").0, 504);
        assert_eq!((handlers.live(), handlers.abandoned()), (1, 2), "the second is not: the cap is 1");
        assert_eq!(http(addr, "GET", "/faulty/ok", "").0, 200, "the last handler serves on");
        handlers.stop();
        assert_eq!(handlers.live(), 0);
    }
}
