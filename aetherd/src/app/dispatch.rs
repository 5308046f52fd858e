//! Where a call goes and how it comes back: the data plane of one node.
//!
//! A [`Dispatcher`] serves three kinds of calls the same way:
//! - HTTP requests on the app port ([`Dispatcher::http_call_inline`]): route lookup in the shared
//!   [`Registry`], then dispatch;
//! - slice-to-slice calls whose callee has no instance on this node (it is the container's
//!   `RemoteCall` hook, in [`served`]);
//! - calls forwarded by other nodes ([`Dispatcher::serve_forwarded_at`], in [`served`]), answered with a
//!   local instance only, never forwarded again.
//!
//! Dispatch: an ACTIVE instance in this node's container first (the container is the truth about this
//! node; the registry may lag it either way), else a live remote endpoint from the registry, reached
//! through the node runtime's [`Forward`]. Every local call first takes a permit of its instance's
//! [`Bulkhead`](super::bulkhead): a full or saturated bulkhead refuses at once, and the call goes to
//! another node or is answered 503 "overloaded" (with `Retry-After`). A node that refused a call that
//! way is skipped for that artifact for [`RETRY_AFTER`](super::bulkhead::RETRY_AFTER). A failed attempt is retried on another node,
//! at most [`ATTEMPTS_MAX`] attempts in all, only when the call certainly never reached a slice (no
//! instance there, frame never sent, refused) or its HTTP method is idempotent; an idempotent call
//! whose node died under it is retried once, never after a second node died on it (a request that
//! kills its server must not walk the cluster). Every attempt shares the call's one deadline, counted
//! from when the request arrived. Each answer is either the slice's or a JSON error (see [`answers`]).
//!
//! Threads: every method blocks its caller until the answer or the deadline and must not run on the
//! node's event loop, except that a dispatch may stop at a forwarded attempt ([`Dispatcher::dispatch_from`]
//! returns it as a [`Pending`]), which its caller either waits for on its thread
//! ([`Dispatcher::forward_blocking`]) or leaves to a callback the event loop runs with the outcome
//! ([`Dispatcher::forward_then`]; the app port does, so a forwarded call holds no handler thread while it
//! waits). Where a local call runs depends on the caller:
//! - on an app port handler thread ([`Dispatcher::http_call_inline`]) it runs inline, on that thread,
//!   under the handler's [`Watch`]: the watchdog answers 504 at the deadline and replaces the thread
//!   if the slice never returns (the thread keeps its permit until then). The watch is armed only
//!   around the slice call itself, so a forwarded attempt (which times out on its own) never trips it;
//! - a forwarded call runs inline on its serving thread ([`super::ForwardedCalls`]);
//! - the tests' `http_call` runs it on the container's worker pool, which enforces the deadline.
//!
//! The parts: placement and selection, the single-active wait ([`place`]), one attempt local or remote
//! ([`attempt`]), a dispatch stopped at a forwarded attempt and how it goes on ([`pending`]).
//!
//! [`served`]: super::served
//! [`answers`]: super::answers

mod attempt;
mod pending;
mod place;

pub use pending::ForwardDone;
pub(super) use pending::{Dispatched, Pending, Progress, Settled};
use place::{Counted, Counts};

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use container::{CallContext, Container, SliceHandle};
use invoke::routes::{self, Lookup};
use invoke::versions::{Pins, SharedPins};
use invoke::{InvokeReply, InvokeRequest, Registry, RouteTarget};
use parking_lot::{Mutex, RwLock};

use super::answers::{deadline_exceeded, encode, error, no_live_instance, overloaded, time_left};
use super::bulkhead::Bulkheads;

/// Most attempts one call makes (the first and its retries on other nodes).
pub const ATTEMPTS_MAX: usize = 3;
/// How long [`Dispatcher::some_route_remote`] trusts what it saw.
const REMOTE_ROUTES_TTL: Duration = Duration::from_millis(100);
/// Forwarded calls of one artifact waiting without a thread (the app port's deferred answers) at once: a
/// quarter of the forwarding table, so one slow remote slice cannot take every place in it.
pub const DEFERRED_OUTBOUND_MAX: usize = invoke::CALLS_MAX_DEFAULT / 4;
/// Threads that run calls on a node when nothing says otherwise (the app port's handlers).
pub const CALL_THREADS_DEFAULT: usize = 128;

/// Sends calls to other nodes; implemented by the node runtime over the cluster transport.
pub trait Forward: Send + Sync {
    /// Sends `request` to `node` over the cluster transport and blocks until the reply or the deadline.
    /// `request.id` is the implementation's to set (the dispatcher leaves it 0); the reply's id is not
    /// read.
    fn forward(&self, node: &str, request: InvokeRequest, deadline: Duration) -> Result<InvokeReply, ForwardError>;

    /// Sends `request` to `node` and returns at once; `done` gets the outcome, on the thread it is known on
    /// (the event loop, for the node's transport), and must not block. Defaults to [`Forward::forward`] on
    /// this thread.
    fn forward_then(&self, node: &str, request: InvokeRequest, done: ForwardDone) {
        let deadline = Duration::from_millis(u64::from(request.deadline_ms_left));
        done(self.forward(node, request, deadline));
    }

    /// Whether `node` is worth a call now (connected, not suspected); endpoints on other nodes are
    /// skipped. Defaults to every node.
    fn is_alive(&self, node: &str) -> bool {
        let _ = node;
        true
    }
}

/// Why a forwarded call got no reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardError {
    /// The request was never sent (no connection, send queue full): safe to try elsewhere.
    Unreachable(String),
    /// The request was sent, then the peer went away before replying: it may have run, so only an
    /// idempotent call is tried elsewhere.
    Lost(String),
    /// No reply before the deadline.
    Timeout,
    /// This node is shutting down.
    Stopped,
}

impl std::fmt::Display for ForwardError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ForwardError::Unreachable(why) => write!(f, "unreachable: {why}"),
            ForwardError::Lost(why) => write!(f, "lost before replying: {why}"),
            ForwardError::Timeout => write!(f, "no reply before the deadline"),
            ForwardError::Stopped => write!(f, "the node is stopping"),
        }
    }
}

/// One call to dispatch.
pub struct Call<'a> {
    pub artifact: &'a str,
    pub method: &'a str,
    /// Encoded for the slice (`aether_sdk::codec`).
    pub request: Cow<'a, [u8]>,
    /// May run twice without harm (GET, HEAD), so it may be retried after it may have reached a slice.
    pub idempotent: bool,
    /// Cluster hops of the causal chain so far (0 for a call that started here).
    pub hops: u8,
    /// When the caller stops waiting: from the moment the client's request arrived.
    pub deadline: Instant,
    /// The request id of the client request the call serves (the app port's, or the forwarding node's).
    pub request_id: Option<Arc<str>>,
    /// The slice that made the call, for a slice-to-slice call.
    pub caller: Option<Arc<str>>,
    /// Slice-to-slice calls between the client's request and this call.
    pub depth: u32,
    /// The versions the request's chain is pinned to ([`Dispatcher::entry_pins`] where it entered).
    pub pins: Option<SharedPins>,
}

impl Call<'_> {
    /// This call, to `artifact` (another version of the slice it names).
    fn on_version<'b>(&'b self, artifact: &'b str) -> Call<'b> {
        self.with_parts(artifact, self.method, &self.request)
    }

    /// This call's context and flags, with these parts.
    fn with_parts<'b>(&self, artifact: &'b str, method: &'b str, request: &'b [u8]) -> Call<'b> {
        Call {
            artifact,
            method,
            request: Cow::Borrowed(request),
            idempotent: self.idempotent,
            hops: self.hops,
            deadline: self.deadline,
            request_id: self.request_id.clone(),
            caller: self.caller.clone(),
            depth: self.depth,
            pins: self.pins.clone(),
        }
    }

    /// What the slice running this call sees of it (and what its nested calls carry on).
    fn context(&self) -> CallContext {
        CallContext {
            deadline: Some(self.deadline),
            hops: self.hops,
            depth: self.depth,
            request_id: self.request_id.clone(),
            caller: self.caller.clone(),
            lease_epoch: 0,
            pins: self.pins.clone(),
        }
    }
}

/// An HTTP answer: the reply, plus the `Allow` header of a 405.
#[derive(Debug)]
pub struct HttpAnswer {
    pub reply: InvokeReply,
    pub allow: Option<String>,
}

/// How one attempt ended.
pub(super) enum Attempt {
    /// The answer to give.
    Done(InvokeReply),
    /// Try another node; the text says what went wrong here.
    Retry(String),
    /// The instance there refused it at once (bulkhead full or saturated): try another node, and
    /// answer "overloaded" if none takes it.
    Refused(String),
    /// The node died under the call, which may have reached its slice (idempotent calls only).
    Lost(String),
}

/// The app port's watchdog, as a call running inline on a handler thread sees it.
pub(super) trait Watch {
    /// When the server gives up on this request (its arrival plus the call deadline), if it does.
    fn deadline(&self) -> Option<Instant>;
    /// A call to `slice` starts on this thread; its caller waits until `deadline`.
    fn arm(&self, deadline: Instant, slice: &SliceHandle);
    /// The call returned. False when the watchdog gave up on it first: the caller already has its 504
    /// and this thread is abandoned, so whatever it answers now goes nowhere.
    fn disarm(&self) -> bool;
    /// Whether a forwarded attempt will wait without this thread (a deferred answer): it then counts
    /// against [`DEFERRED_OUTBOUND_MAX`] rather than the thread share.
    fn defers(&self) -> bool {
        false
    }
    /// Whether a slice may run on this thread (not on an HTTP port's I/O thread): when not, a local attempt
    /// is skipped as if this node had no instance.
    fn local_allowed(&self) -> bool {
        true
    }
}

/// Where a local call runs.
#[derive(Clone, Copy)]
pub(super) enum Runner<'a> {
    /// On the container's worker pool, which enforces the deadline.
    Pool,
    /// On this thread, under an app port handler's watch.
    Inline(&'a dyn Watch),
    /// On this thread, which serves a forwarded call: the caller enforces the deadline.
    Serving,
}

/// Local target or remote node.
enum Place {
    Local(SliceHandle),
    Remote(String),
}

/// The data plane of one node; shared by the app port threads and the node runtime.
pub struct Dispatcher {
    pub(super) node_id: String,
    pub(super) container: Arc<Container>,
    registry: Arc<RwLock<Registry>>,
    forward: Option<Arc<dyn Forward>>,
    /// How long a call may take when its caller set no deadline, in milliseconds (a live setting).
    call_deadline_ms: std::sync::atomic::AtomicU64,
    pub(super) bulkheads: Bulkheads,
    /// `(node, artifact)` pairs whose instance refused a call as overloaded, until when they are skipped.
    refusing: Mutex<HashMap<(String, String), Instant>>,
    /// Calls of each artifact this node has forwarded and still waits on: most hold a thread of the pool
    /// that runs calls, so they count against a share too ([`Bulkheads::outbound_max`]).
    outbound: Counts<String>,
    /// The same, for forwarded calls that wait without a thread (bounded by [`DEFERRED_OUTBOUND_MAX`]).
    outbound_deferred: Counts<String>,
    /// Where calls that ran here are counted and timed (none in dev mode and most tests).
    metrics: Option<Arc<crate::metrics::Telemetry>>,
    /// Calls in flight per `(artifact, node)`, for slices placed least-loaded.
    loads: Counts<(String, String)>,
    /// State of the random numbers for slices placed at random.
    random: std::sync::atomic::AtomicU64,
    /// What [`Dispatcher::some_route_remote`] last saw, and when (ms since `epoch`; 0: never).
    remote_routes: std::sync::atomic::AtomicBool,
    remote_checked_ms: std::sync::atomic::AtomicU64,
    epoch: Instant,
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Dispatcher {
    /// How long a call may take when its caller set no deadline.
    pub fn call_deadline(&self) -> Duration {
        Duration::from_millis(self.call_deadline_ms.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Change the call deadline for calls that start from now on.
    pub fn set_call_deadline(&self, deadline: Duration) {
        self.call_deadline_ms.store(duration_ms(deadline), std::sync::atomic::Ordering::Relaxed);
    }

    /// `forward: None` serves this node's instances only (dev mode).
    pub fn new(
        node_id: String,
        container: Arc<Container>,
        registry: Arc<RwLock<Registry>>,
        forward: Option<Arc<dyn Forward>>,
        call_deadline: Duration,
    ) -> Dispatcher {
        Dispatcher {
            node_id,
            container,
            registry,
            forward,
            call_deadline_ms: std::sync::atomic::AtomicU64::new(duration_ms(call_deadline)),
            bulkheads: Bulkheads::new(CALL_THREADS_DEFAULT),
            refusing: Mutex::new(HashMap::new()),
            outbound: Arc::default(),
            outbound_deferred: Arc::default(),
            metrics: None,
            loads: Arc::default(),
            random: std::sync::atomic::AtomicU64::new(place::random_seed()),
            remote_routes: std::sync::atomic::AtomicBool::new(false),
            remote_checked_ms: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// This dispatcher counting and timing the calls that run here in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Telemetry>) -> Dispatcher {
        self.metrics = Some(metrics);
        self
    }

    /// A place for one more forwarded call of `artifact`, or `None` when its share is taken.
    fn outbound(&self, artifact: &str) -> Option<Counted<String>> {
        Counted::take(&self.outbound, artifact.to_owned(), self.bulkheads.outbound_max(artifact))
    }

    /// The same for a call that waits without a thread.
    fn outbound_deferred(&self, artifact: &str) -> Option<Counted<String>> {
        Counted::take(&self.outbound_deferred, artifact.to_owned(), DEFERRED_OUTBOUND_MAX)
    }

    /// This dispatcher with bulkheads sized for `threads` call-running threads (the app port's handlers).
    pub fn with_call_threads(mut self, threads: usize) -> Dispatcher {
        self.bulkheads = Bulkheads::new(threads);
        self
    }

    #[cfg(test)]
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn registry(&self) -> &Arc<RwLock<Registry>> {
        &self.registry
    }

    /// The bulkheads of this node's instances.
    pub fn bulkheads(&self) -> &Bulkheads {
        &self.bulkheads
    }

    /// [`Dispatcher::http_call_inline`] with the local call, if any, on the worker pool (no watchdog).
    #[cfg(test)]
    pub fn http_call(
        &self,
        http_method: &str,
        url: &str,
        read_body: impl FnOnce() -> Result<Vec<u8>, InvokeReply>,
    ) -> HttpAnswer {
        self.http_call_with(http_method, url, &[], read_body, Runner::Pool)
    }

    #[cfg(test)]
    fn http_call_with(
        &self,
        http_method: &str,
        url: &str,
        headers: &[(String, String)],
        read_body: impl FnOnce() -> Result<Vec<u8>, InvokeReply>,
        runner: Runner<'_>,
    ) -> HttpAnswer {
        match self.http_start(http_method, url, headers, read_body, runner) {
            Ok(dispatched) => HttpAnswer { reply: self.forward_blocking(dispatched, runner), allow: None },
            Err(answer) => answer,
        }
    }

    /// Answer an HTTP request (on an app port handler thread, `runner` is `Inline` with the handler's watch):
    /// `url` is the request target (path and query); `headers` are the client's header fields, which reach
    /// the slice with the method, path and query; `read_body` is called once the route is known (an error from
    /// it is the answer); the local call, if any, runs as `runner` says. Stops at a forwarded attempt, which the
    /// caller sends ([`Dispatcher::forward_then`] or [`Dispatcher::forward_blocking`]); an `Err` is the
    /// answer of a request that reached no call (no route, a bad request).
    pub(super) fn http_start(
        &self,
        http_method: &str,
        url: &str,
        headers: &[(String, String)],
        read_body: impl FnOnce() -> Result<Vec<u8>, InvokeReply>,
        runner: Runner<'_>,
    ) -> Result<Dispatched, HttpAnswer> {
        let deadline = match runner {
            Runner::Inline(watch) => watch.deadline(),
            Runner::Pool | Runner::Serving => None,
        };
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.call_deadline());
        let answer = |reply| HttpAnswer { reply, allow: None };
        let (path, query) = routes::split_target(url);
        let (target, params) = self.route(http_method, path)?;
        let body = read_body().map_err(answer)?;
        let query = query.map(routes::parse_query).unwrap_or_default();
        let request = match encode(http_method, path, &params, &query, headers, &body) {
            Ok(request) => request,
            Err(e @ aether_sdk::CodecError::Header(_)) => {
                return Err(answer(error(431, "request header fields too large", &e.to_string(), false)))
            }
            Err(e) => return Err(answer(error(400, "bad request", &e.to_string(), false))),
        };
        let call = Call {
            artifact: &target.artifact,
            method: &target.method,
            request: request.into(),
            idempotent: invoke::is_idempotent(http_method),
            hops: 0,
            deadline,
            request_id: crate::metrics::request_id::current().map(Arc::from),
            caller: None,
            depth: 0,
            pins: self.entry_pins(),
        };
        Ok(self.dispatch_from(&call, Progress::default(), runner))
    }

    fn route(&self, http_method: &str, path: &str) -> Result<(RouteTarget, Vec<(String, String)>), HttpAnswer> {
        let registry = self.registry.read();
        let reply = match registry.lookup(http_method, path) {
            Lookup::Found(found) => return Ok((found.target.clone(), found.params)),
            Lookup::NotFound => error(404, "not found", &format!("no route for {http_method} {path}"), false),
            Lookup::MethodNotAllowed { allowed } => {
                let allow = allowed.join(", ");
                let reply = error(405, "method not allowed", &format!("{path} takes {allow}"), false);
                return Err(HttpAnswer { reply, allow: Some(allow) });
            }
            Lookup::BadPath { reason } => error(400, "bad request", reason, false),
        };
        Err(HttpAnswer { reply, allow: None })
    }

    /// A call the node itself makes (a scheduled run, a message delivery): on any instance, as an app port call
    /// would be placed, with the local call on the container's worker pool.
    #[allow(dead_code)] // until the schedule and messaging engines call it
    pub fn call_any(&self, call: &Call<'_>) -> InvokeReply {
        self.dispatch_excluding(call, Vec::new(), Runner::Pool)
    }

    /// A call the node itself makes to the instance on `node` only (this node's own, or a forwarded call),
    /// never retried elsewhere: the caller chose the instance (a broadcast delivery, a competing
    /// delivery's pick). Every failure is an answer: 503 "no instance" when `node` has none ACTIVE,
    /// "overloaded" when its bulkhead refused, 504 past the deadline.
    pub fn call_on(&self, node: &str, call: &Call<'_>) -> InvokeReply {
        let attempt = if node == self.node_id {
            match self.container.find_active(call.artifact) {
                Some(handle) => self.call_local(call, &handle, Runner::Pool),
                None => Attempt::Retry(format!("no active instance of {} here", call.artifact)),
            }
        } else {
            self.call_remote(node, call)
        };
        match attempt {
            Attempt::Done(reply) => reply,
            Attempt::Refused(why) => overloaded(&format!("{node}: {why}")),
            Attempt::Retry(why) | Attempt::Lost(why) => no_live_instance(call, &[format!("{node}: {why}")]),
        }
    }

    /// Whether an app port request can start on the port's I/O thread ([`httpd::Handler::start`]): its route
    /// goes to a slice that is not single-active (whose call may wait for a lease holder) and that has no
    /// ACTIVE instance of any of its versions here, so no attempt runs a slice there. One route lookup.
    pub(super) fn goes_remote(&self, http_method: &str, url: &str) -> bool {
        if self.forward.is_none() || !self.some_route_remote() {
            return false;
        }
        let (path, _) = routes::split_target(url);
        let registry = self.registry.read();
        let Lookup::Found(found) = registry.lookup(http_method, path) else { return false };
        let artifact = found.target.artifact.as_str();
        if registry.lease_of(artifact).is_some() || self.container.has_active(artifact) {
            return false;
        }
        let base = invoke::artifact_base(artifact);
        !registry.artifacts_of(base).into_iter().any(|version| self.container.has_active(version))
    }

    /// Whether some route's slice has no ACTIVE instance here, as seen at most [`REMOTE_ROUTES_TTL`] ago: while
    /// every route is served here, [`Dispatcher::goes_remote`] costs the I/O thread no route lookup. A route
    /// that turned remote within the window is served by a worker, which forwards it just the same.
    fn some_route_remote(&self) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        let checked = self.remote_checked_ms.load(Ordering::Relaxed);
        if checked != 0 && now.saturating_sub(checked) < REMOTE_ROUTES_TTL.as_millis() as u64 {
            return self.remote_routes.load(Ordering::Relaxed);
        }
        let remote = {
            let registry = self.registry.read();
            let mut targets = registry.routes().iter().map(|(_, _, target)| target.artifact.as_str());
            targets.any(|artifact| {
                let base = invoke::artifact_base(artifact);
                !self.container.has_active(artifact)
                    && !registry.artifacts_of(base).into_iter().any(|version| self.container.has_active(version))
            })
        };
        self.remote_routes.store(remote, Ordering::Relaxed);
        self.remote_checked_ms.store(now.max(1), Ordering::Relaxed);
        remote
    }

    /// The pins of a request that enters the cluster here (`None` while no rollout runs).
    pub fn entry_pins(&self) -> Option<SharedPins> {
        let registry = self.registry.read();
        let pins = registry.versions().pin(self.random());
        (!pins.is_empty()).then(|| Arc::new(pins))
    }

    /// The version `call` runs on when it is not the one it names (see `invoke::versions`): a version
    /// serves when this node has it ACTIVE (and is not excluded) or a live node not excluded has an
    /// endpoint of the call's method.
    fn resolve_version(&self, call: &Call<'_>, exclude: &[String]) -> Option<String> {
        let registry = self.registry.read();
        let versions = registry.versions();
        if !versions.versioned(call.artifact) {
            return None;
        }
        let excluded = |node: &str| exclude.iter().any(|e| e == node);
        // This node's endpoint of the method counts while its instance is ACTIVE here (the registry may lag).
        let usable = |node: &str| {
            !excluded(node)
                && if node == self.node_id { true } else { self.forward.as_ref().is_some_and(|f| f.is_alive(node)) }
        };
        let serves = |artifact: &str| {
            registry.has_endpoint(artifact, call.method, &|node: &str| {
                usable(node) && (node != self.node_id || self.container.has_active(artifact))
            })
        };
        let empty = Pins::default();
        let pins = call.pins.as_deref().unwrap_or(&empty);
        let mut chosen = versions.resolve(call.artifact, pins, self.random(), &serves);
        if chosen == call.artifact && !serves(chosen) {
            // Any version of the base that serves the method (an old one still draining).
            let base = invoke::artifact_base(call.artifact);
            if let Some(other) = registry.artifacts_of(base).into_iter().find(|a| serves(a)) {
                chosen = other;
            }
        }
        (chosen != call.artifact).then(|| chosen.to_owned())
    }

    /// Run `call` on an instance: this node's when it has one, else a live remote one, retrying on
    /// other nodes as the policy allows, within the call's deadline; a forwarded attempt waits on this thread.
    pub(super) fn dispatch_excluding(&self, call: &Call<'_>, exclude: Vec<String>, runner: Runner<'_>) -> InvokeReply {
        let first = self.dispatch_from(call, Progress::excluding(exclude), runner);
        self.forward_blocking(first, runner)
    }

    /// Run `named`'s attempts from where `progress` left them until one ends the call or one is to be
    /// forwarded (see [`pending`]).
    pub(super) fn dispatch_from(&self, named: &Call<'_>, mut progress: Progress, runner: Runner<'_>) -> Dispatched {
        let resolved = self.resolve_version(named, &progress.exclude);
        let moved;
        let call = match &resolved {
            Some(artifact) => {
                moved = named.on_version(artifact);
                &moved
            }
            None => named,
        };
        if progress.attempts == 0 {
            let on_io = matches!(runner, Runner::Inline(watch) if !watch.local_allowed());
            if on_io && self.registry.read().lease_of(call.artifact).is_some() {
                // A call to a single-active slice may wait for a holder: never on an I/O thread (this slice
                // became single-active after the request was started there).
                let detail = format!("{} became single-active as the call started; try again", call.artifact);
                return Dispatched::Reply(error(503, "unavailable", &detail, false));
            }
            if let Some(reply) = self.dispatch_single_active(call, &progress.exclude, runner) {
                return Dispatched::Reply(reply);
            }
        }
        let first = progress.attempts;
        while progress.may_try() {
            if time_left(call.deadline).is_none() {
                return Dispatched::Reply(deadline_exceeded(call, &progress.failures));
            }
            // A retry looks at the versions again: the one tried may be on its way out.
            let again = (progress.attempts > first).then(|| self.resolve_version(named, &progress.exclude));
            let retried;
            let call = match &again {
                Some(Some(artifact)) if artifact != call.artifact => {
                    retried = named.on_version(artifact);
                    &retried
                }
                // Back to the version the call names.
                Some(None) => named,
                _ => call,
            };
            let Some(place) = self.place(call, &progress.exclude, &mut progress.refused) else { break };
            progress.attempts += 1;
            // The node's name is only copied when a local attempt failed.
            let (node, attempt) = match place {
                Place::Local(handle) => match self.call_local(call, &handle, runner) {
                    Attempt::Done(reply) => return Dispatched::Reply(reply),
                    failed => (self.node_id.clone(), failed),
                },
                Place::Remote(node) => match self.begin_remote(&node, call, runner) {
                    Ok((request, counts)) => {
                        let pending = Pending::new(node, request, named, call, progress, counts);
                        return Dispatched::Forward(Box::new(pending));
                    }
                    Err(failed) => (node, failed),
                },
            };
            if let Some(reply) = progress.ended(node, attempt, call) {
                return Dispatched::Reply(reply);
            }
        }
        Dispatched::Reply(progress.given_up(call))
    }
}

#[cfg(test)]
mod tests;
