//! Where a call goes and how it comes back: the data plane of one node.
//!
//! A [`Dispatcher`] serves three kinds of calls the same way:
//! - HTTP requests on the app port ([`Dispatcher::http_call_inline`]): route lookup in the shared
//!   [`Registry`], then dispatch;
//! - slice-to-slice calls whose callee has no instance on this node (it is the container's
//!   [`RemoteCall`] hook);
//! - calls forwarded by other nodes ([`Dispatcher::serve_forwarded`]), answered with a local instance
//!   only, never forwarded again.
//!
//! Dispatch: an ACTIVE instance in this node's container first (the container is the truth about this
//! node; the registry may lag it either way), else a live remote endpoint from the registry, reached
//! through the node runtime's [`Forward`]. A failed attempt is retried on another node, at most
//! [`ATTEMPTS_MAX`] attempts in all, only when the call certainly never reached a slice (no instance
//! there, frame never sent, pool full) or its HTTP method is idempotent; every attempt shares the
//! call's one deadline. Each answer is either the slice's or a JSON error `{"error","detail"}`: 404 no
//! route, 503 no live instance, 504 deadline.
//!
//! Threads: every method blocks its caller until the answer or the deadline and must not run on the
//! node's event loop. Where a local call runs depends on the caller:
//! - on an app port handler thread ([`Dispatcher::http_call_inline`]) it runs inline, on that thread,
//!   under the handler's [`Watch`]: the watchdog answers 504 at the deadline and replaces the thread
//!   if the slice never returns. The watch is armed only around the slice call itself, so a forwarded
//!   attempt (which times out on its own) never trips it;
//! - everywhere else (`serve_forwarded`, the tests' `http_call`) it runs on the container's worker
//!   pool, which enforces the deadline; those must not be called from a container worker (a nested
//!   call is not: it goes through the [`RemoteCall`] hook, which only forwards and never waits for a
//!   worker of this pool).

use std::sync::Arc;
use std::time::{Duration, Instant};

use container::{CallContext, CallError, Container, RemoteCall, SliceHandle};
use invoke::routes::{self, Lookup};
use invoke::{InvokeReply, InvokeRequest, Registry, RouteTarget, Target, HOPS_MAX};
use parking_lot::RwLock;
use sdk::{ContentType, Response, Status};

/// Most attempts one call makes (the first and its retries on other nodes).
pub const ATTEMPTS_MAX: usize = 3;

/// Sends calls to other nodes; implemented by the node runtime over the cluster transport.
pub trait Forward: Send + Sync {
    /// Sends `request` to `node` over the cluster transport and blocks until the reply or the deadline.
    /// `request.id` is the implementation's to set (the dispatcher leaves it 0); the reply's id is not
    /// read.
    fn forward(&self, node: &str, request: InvokeRequest, deadline: Duration) -> Result<InvokeReply, ForwardError>;

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
    /// Encoded for the slice (`sdk::codec`).
    pub request: Vec<u8>,
    /// May run twice without harm (GET, HEAD), so it may be retried after it may have reached a slice.
    pub idempotent: bool,
    /// Cluster hops of the causal chain so far (0 for a call that started here).
    pub hops: u8,
    pub deadline: Instant,
}

/// An HTTP answer: the reply, plus the `Allow` header of a 405.
#[derive(Debug)]
pub struct HttpAnswer {
    pub reply: InvokeReply,
    pub allow: Option<String>,
}

/// How one attempt ended.
enum Attempt {
    /// The answer to give.
    Done(InvokeReply),
    /// Try another node; the text says what went wrong here.
    Retry(String),
}

/// The app port's watchdog, as a call running inline on a handler thread sees it.
pub(super) trait Watch {
    /// A call to `slice` starts on this thread; its caller waits until `deadline`.
    fn arm(&self, deadline: Instant, slice: &SliceHandle);
    /// The call returned. False when the watchdog gave up on it first: the caller already has its 504
    /// and this thread is abandoned, so whatever it answers now goes nowhere.
    fn disarm(&self) -> bool;
}

/// Where a local call runs.
#[derive(Clone, Copy)]
enum Runner<'a> {
    /// On the container's worker pool, which enforces the deadline.
    Pool,
    /// On this thread, under an app port handler's watch.
    Inline(&'a dyn Watch),
}

/// Local target or remote node.
enum Place {
    Local(SliceHandle),
    Remote(String),
}

/// The data plane of one node; shared by the app port threads and the node runtime.
pub struct Dispatcher {
    node_id: String,
    container: Arc<Container>,
    registry: Arc<RwLock<Registry>>,
    forward: Option<Arc<dyn Forward>>,
    call_deadline: Duration,
}

impl Dispatcher {
    /// `forward: None` serves this node's instances only (dev mode).
    pub fn new(
        node_id: String,
        container: Arc<Container>,
        registry: Arc<RwLock<Registry>>,
        forward: Option<Arc<dyn Forward>>,
        call_deadline: Duration,
    ) -> Dispatcher {
        Dispatcher { node_id, container, registry, forward, call_deadline }
    }

    #[cfg(test)]
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    pub fn registry(&self) -> &Arc<RwLock<Registry>> {
        &self.registry
    }

    /// [`Dispatcher::http_call_inline`] with the local call, if any, on the worker pool (no watchdog).
    #[cfg(test)]
    pub fn http_call(
        &self,
        http_method: &str,
        url: &str,
        read_body: impl FnOnce() -> Result<Vec<u8>, InvokeReply>,
    ) -> HttpAnswer {
        self.http_call_with(http_method, url, read_body, Runner::Pool)
    }

    /// Answer an HTTP request on an app port handler thread: `url` is the request target (path and
    /// query); `read_body` is called once the route is known (an error from it is the answer); the
    /// local call, if any, runs on this thread under `watch`.
    pub(super) fn http_call_inline(
        &self,
        http_method: &str,
        url: &str,
        read_body: impl FnOnce() -> Result<Vec<u8>, InvokeReply>,
        watch: &dyn Watch,
    ) -> HttpAnswer {
        self.http_call_with(http_method, url, read_body, Runner::Inline(watch))
    }

    fn http_call_with(
        &self,
        http_method: &str,
        url: &str,
        read_body: impl FnOnce() -> Result<Vec<u8>, InvokeReply>,
        runner: Runner<'_>,
    ) -> HttpAnswer {
        let answer = |reply| HttpAnswer { reply, allow: None };
        let (path, query) = routes::split_target(url);
        let (target, params) = match self.route(http_method, path) {
            Ok(found) => found,
            Err(answer) => return answer,
        };
        let body = match read_body() {
            Ok(body) => body,
            Err(reply) => return answer(reply),
        };
        let query = query.map(routes::parse_query).unwrap_or_default();
        let request = match encode(&params, &query, &body) {
            Ok(request) => request,
            Err(e) => return answer(error(400, "bad request", &e.to_string(), false)),
        };
        let call = Call {
            artifact: &target.artifact,
            method: &target.method,
            request,
            idempotent: invoke::is_idempotent(http_method),
            hops: 0,
            deadline: Instant::now() + self.call_deadline,
        };
        answer(self.dispatch_excluding(&call, Vec::new(), runner))
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

    /// Run `call` on an instance: this node's when it has one, else a live remote one, retrying on
    /// other nodes as the policy allows, within the call's deadline.
    fn dispatch_excluding(&self, call: &Call<'_>, mut exclude: Vec<String>, runner: Runner<'_>) -> InvokeReply {
        let mut failures: Vec<String> = Vec::new();
        for _ in 0..ATTEMPTS_MAX {
            let Some(left) = time_left(call.deadline) else {
                return deadline_exceeded(call, &failures);
            };
            let Some(place) = self.place(call, &exclude) else { break };
            // The node's name is only needed (and copied) when the attempt failed.
            let (node, attempt) = match place {
                Place::Local(handle) => (None, self.call_local(call, &handle, left, runner)),
                Place::Remote(node) => {
                    let attempt = self.call_remote(&node, call, left);
                    (Some(node), attempt)
                }
            };
            match attempt {
                Attempt::Done(reply) => return reply,
                Attempt::Retry(why) => {
                    let node = node.unwrap_or_else(|| self.node_id.clone());
                    log::debug!("call {} {} on {node}: {why}; trying elsewhere", call.artifact, call.method);
                    failures.push(format!("{node}: {why}"));
                    exclude.push(node);
                }
            }
        }
        no_live_instance(call, &failures)
    }

    fn place(&self, call: &Call<'_>, exclude: &[String]) -> Option<Place> {
        let local_excluded = exclude.contains(&self.node_id);
        if !local_excluded {
            if let Some(handle) = self.container.find_active(call.artifact) {
                return Some(Place::Local(handle));
            }
        }
        let forward = self.forward.as_ref()?;
        let mut skip = exclude.to_vec();
        if !local_excluded {
            skip.push(self.node_id.clone());
        }
        let registry = self.registry.read();
        match registry.select(call.artifact, call.method, &self.node_id, &|node| forward.is_alive(node), &skip)? {
            Target::Remote(node) => Some(Place::Remote(node)),
            // This node is in `skip`; the registry never picks it.
            Target::Local => None,
        }
    }

    fn call_local(&self, call: &Call<'_>, handle: &SliceHandle, left: Duration, runner: Runner<'_>) -> Attempt {
        let answer = match runner {
            Runner::Pool => {
                self.container.call_with_context(handle, call.method, call.request.clone(), left, call.hops)
            }
            Runner::Inline(watch) => {
                watch.arm(call.deadline, handle);
                let answer = self.container.call_inline(handle, call.method, &call.request, call.deadline, call.hops);
                if !watch.disarm() {
                    return Attempt::Done(deadline_exceeded(call, &[]));
                }
                answer
            }
        };
        match answer {
            Ok(response) => Attempt::Done(from_response(response)),
            Err(e @ (CallError::NoInstance { .. } | CallError::NotActive { .. } | CallError::Overloaded { .. })) => {
                Attempt::Retry(e.to_string())
            }
            Err(e) => Attempt::Done(from_call_error(&e, true)),
        }
    }

    fn call_remote(&self, node: &str, call: &Call<'_>, left: Duration) -> Attempt {
        let Some(forward) = self.forward.as_ref() else {
            return Attempt::Retry("no cluster transport".to_owned());
        };
        let hops = call.hops.saturating_add(1);
        if hops > HOPS_MAX {
            let detail =
                format!("calling {} would make a chain of {hops} cluster hops (limit {HOPS_MAX})", call.artifact);
            return Attempt::Done(error(500, "call depth exceeded", &detail, false));
        }
        let request = InvokeRequest {
            id: 0,
            origin: self.node_id.clone(),
            artifact: call.artifact.to_owned(),
            method: call.method.to_owned(),
            request: call.request.clone(),
            deadline_ms_left: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
            hops,
        };
        match forward.forward(node, request, left) {
            Ok(reply) if reply.is_no_instance() => Attempt::Retry("no instance there".to_owned()),
            Ok(reply) => Attempt::Done(reply),
            Err(e @ ForwardError::Unreachable(_)) => Attempt::Retry(e.to_string()),
            Err(e @ ForwardError::Lost(_)) if call.idempotent => Attempt::Retry(e.to_string()),
            Err(e @ ForwardError::Lost(_)) => {
                let detail = format!("{node} {e}; not retried: the call may have reached {}", call.artifact);
                Attempt::Done(error(503, "unavailable", &detail, true))
            }
            Err(ForwardError::Timeout) => Attempt::Done(deadline_exceeded(call, &[format!("{node}: no reply")])),
            Err(ForwardError::Stopped) => Attempt::Done(error(503, "shutting down", "the node is stopping", false)),
        }
    }

    /// Answer a call forwarded by another node, with an instance of this node only. Blocks until the
    /// slice answers or the request's deadline passes; run it on a thread of its own, never on the
    /// event loop or a container worker. The reply carries the request's id.
    pub fn serve_forwarded(&self, request: InvokeRequest) -> InvokeReply {
        let id = request.id;
        let mut reply = self.serve_forwarded_reply(request);
        reply.id = id;
        reply
    }

    fn serve_forwarded_reply(&self, request: InvokeRequest) -> InvokeReply {
        if let Err(e) = request.check() {
            return error(400, "bad request", &e.to_string(), false);
        }
        let Some(handle) = self.container.find_active(&request.artifact) else {
            return InvokeReply::no_instance(request.id, &self.node_id, &request.artifact);
        };
        let deadline = Duration::from_millis(u64::from(request.deadline_ms_left));
        match self.container.call_with_context(&handle, &request.method, request.request, deadline, request.hops) {
            Ok(response) => from_response(response),
            Err(e @ (CallError::NoInstance { .. } | CallError::NotActive { .. } | CallError::Overloaded { .. })) => {
                error(503, "no instance", &format!("{} on {}", e, self.node_id), false)
            }
            Err(e) => from_call_error(&e, true),
        }
    }
}

/// Slice-to-slice calls whose callee has no instance on this node.
impl RemoteCall for Dispatcher {
    fn call(&self, artifact: &str, method: &str, request: &[u8], context: CallContext) -> Result<Response, CallError> {
        let call = Call {
            artifact,
            method,
            request: request.to_vec(),
            idempotent: false,
            hops: context.hops,
            deadline: context.deadline.unwrap_or_else(|| Instant::now() + self.call_deadline),
        };
        // Never this node: a nested call holds one of its workers, and a local call would wait for
        // another (the container calls this hook only when it found no local instance anyway).
        let reply = self.dispatch_excluding(&call, vec![self.node_id.clone()], Runner::Pool);
        Ok(Response {
            status: status_of(reply.status),
            content_type: content_type_of(&reply.content_type),
            body: reply.body,
        })
    }
}

fn time_left(deadline: Instant) -> Option<Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
}

/// A JSON error reply `{"error", "detail"}`.
pub fn error(status: u16, error: &str, detail: &str, reached_slice: bool) -> InvokeReply {
    InvokeReply::error(0, status, error, detail, reached_slice)
}

fn with_failures(detail: String, failures: &[String]) -> String {
    if failures.is_empty() {
        return detail;
    }
    format!("{detail} (tried {})", failures.join("; "))
}

fn no_live_instance(call: &Call<'_>, failures: &[String]) -> InvokeReply {
    let detail = with_failures(format!("no live instance of {} serves `{}`", call.artifact, call.method), failures);
    error(503, "no instance", &detail, false)
}

fn deadline_exceeded(call: &Call<'_>, failures: &[String]) -> InvokeReply {
    let detail = with_failures(format!("{} did not answer `{}` in time", call.artifact, call.method), failures);
    error(504, "deadline exceeded", &detail, true)
}

fn from_response(response: Response) -> InvokeReply {
    InvokeReply {
        id: 0,
        status: response.status.http(),
        content_type: response.content_type.mime().to_owned(),
        body: response.body,
        reached_slice: true,
    }
}

fn from_call_error(e: &CallError, reached_slice: bool) -> InvokeReply {
    error(e.http_status(), e.kind(), &e.to_string(), reached_slice)
}

/// The slice status for an HTTP status from another node (the set slices know is small).
fn status_of(http: u16) -> Status {
    match http {
        200..=299 => Status::Ok,
        400 => Status::BadRequest,
        404 => Status::NotFound,
        409 => Status::Conflict,
        503 | 504 => Status::Unavailable,
        _ => Status::Internal,
    }
}

fn content_type_of(mime: &str) -> ContentType {
    [ContentType::Json, ContentType::Text].into_iter().find(|c| c.mime() == mime).unwrap_or(ContentType::Binary)
}

fn encode(params: &[(String, String)], query: &[(String, String)], body: &[u8]) -> Result<Vec<u8>, sdk::CodecError> {
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sdk::encode_request(&params, &query, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Weak;

    use container::{Artifact, ContainerConfig};
    use invoke::Endpoint;
    use parking_lot::Mutex;

    const ECHO: &str = "org.aether.examples:echo:1.0.0";
    const ORDERS: &str = "org.aether.examples:orders:1.0.0";
    const INVENTORY: &str = "org.aether.examples:inventory:1.0.0";
    const PRICING: &str = "org.aether.examples:pricing:1.0.0";

    /// Answers from a script per node; records what it was asked to send.
    #[derive(Default)]
    struct FakeForward {
        script: Mutex<HashMap<String, Vec<Result<InvokeReply, ForwardError>>>>,
        sent: Mutex<Vec<(String, InvokeRequest)>>,
        down: Vec<String>,
    }

    impl FakeForward {
        fn with(script: &[(&str, Result<InvokeReply, ForwardError>)]) -> Arc<FakeForward> {
            let forward = FakeForward::default();
            for (node, answer) in script {
                forward.script.lock().entry(node.to_string()).or_default().push(answer.clone());
            }
            Arc::new(forward)
        }

        fn sent_to(&self) -> Vec<String> {
            self.sent.lock().iter().map(|(node, _)| node.clone()).collect()
        }
    }

    impl Forward for FakeForward {
        fn forward(&self, node: &str, request: InvokeRequest, _: Duration) -> Result<InvokeReply, ForwardError> {
            self.sent.lock().push((node.to_owned(), request));
            let mut script = self.script.lock();
            let next = script.get_mut(node).filter(|answers| !answers.is_empty()).map(|answers| answers.remove(0));
            next.unwrap_or_else(|| Err(ForwardError::Unreachable("not scripted".into())))
        }

        fn is_alive(&self, node: &str) -> bool {
            !self.down.iter().any(|d| d == node)
        }
    }

    fn ok_reply(body: &str) -> InvokeReply {
        InvokeReply {
            id: 77,
            status: 200,
            content_type: "application/json".into(),
            body: body.as_bytes().to_vec(),
            reached_slice: true,
        }
    }

    fn container(node: &str, slices: &[&str]) -> Arc<Container> {
        let mut config = ContainerConfig::new(crate::app::tests::repo(), node);
        config.pool.workers = 1;
        let container = Container::new(config).unwrap();
        for slice in slices {
            container.deploy(&Artifact::parse(slice).unwrap(), vec![]).unwrap();
        }
        Arc::new(container)
    }

    fn empty_container(node: &str) -> Arc<Container> {
        let mut config = ContainerConfig::new("/nonexistent-repo", node);
        config.pool.workers = 1;
        Arc::new(Container::new(config).unwrap())
    }

    fn target(artifact: &str, method: &str) -> RouteTarget {
        RouteTarget { artifact: artifact.into(), method: method.into() }
    }

    /// Echo routes, with endpoints of both echo methods on `nodes`.
    fn echo_registry(nodes: &[&str]) -> Arc<RwLock<Registry>> {
        let mut registry = Registry::new();
        registry.put_route("GET", "/echo/{msg}", target(ECHO, "echo")).unwrap();
        registry.put_route("POST", "/echo", target(ECHO, "echo_body")).unwrap();
        registry.put_route("POST", "/orders", target(ORDERS, "create")).unwrap();
        for (instance, node) in nodes.iter().enumerate() {
            for method in ["echo", "echo_body"] {
                let endpoint = Endpoint { node: node.to_string(), instance: instance as u32 };
                registry.put_endpoint(ECHO, method, endpoint).unwrap();
            }
        }
        Arc::new(RwLock::new(registry))
    }

    fn dispatcher(container: Arc<Container>, nodes: &[&str], forward: &Arc<FakeForward>) -> Dispatcher {
        let forward: Arc<dyn Forward> = forward.clone();
        let deadline = Duration::from_millis(500);
        Dispatcher::new("node-1".into(), container, echo_registry(nodes), Some(forward), deadline)
    }

    fn http(dispatcher: &Dispatcher, method: &str, url: &str, body: &str) -> InvokeReply {
        dispatcher.http_call(method, url, || Ok(body.as_bytes().to_vec())).reply
    }

    /// `(status, error, detail)` of a JSON error reply.
    fn error_of(reply: &InvokeReply) -> (u16, String, String) {
        let value = sdk::json::parse(&reply.body).unwrap();
        let text = |key| value.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        (reply.status, text("error"), text("detail"))
    }

    #[test]
    fn a_local_instance_answers_without_forwarding() {
        let forward = FakeForward::with(&[]);
        let dispatcher = dispatcher(container("node-1", &[ECHO]), &["node-2"], &forward);
        let reply = http(&dispatcher, "GET", "/echo/hi", "");
        assert_eq!(reply.status, 200, "{reply:?}");
        assert!(String::from_utf8_lossy(&reply.body).contains(r#""echo":"hi""#));
        assert!(forward.sent_to().is_empty());
    }

    #[test]
    fn a_remote_endpoint_is_reached_through_forward() {
        let forward = FakeForward::with(&[("node-2", Ok(ok_reply(r#"{"from":"node-2"}"#)))]);
        let dispatcher = dispatcher(empty_container("node-1"), &["node-2"], &forward);
        let reply = http(&dispatcher, "GET", "/echo/hi%20there?x=1", "");
        assert_eq!((reply.status, reply.body.as_slice()), (200, &br#"{"from":"node-2"}"#[..]));
        let (node, sent) = forward.sent.lock().remove(0);
        assert_eq!((node.as_str(), sent.origin.as_str(), sent.artifact.as_str()), ("node-2", "node-1", ECHO));
        assert_eq!((sent.method.as_str(), sent.hops), ("echo", 1));
        assert!(sent.deadline_ms_left > 0 && sent.deadline_ms_left <= 500, "{}", sent.deadline_ms_left);
        let request = sdk::codec::Request::parse(&sent.request).unwrap();
        assert_eq!((request.param("msg"), request.query("x")), (Some("hi there"), Some("1")));
    }

    #[test]
    fn a_get_lost_with_its_node_is_retried_on_another() {
        let lost = Err(ForwardError::Lost("connection closed".into()));
        let forward = FakeForward::with(&[("node-2", lost), ("node-3", Ok(ok_reply("{}")))]);
        let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
        assert_eq!(http(&dispatcher, "GET", "/echo/x", "").status, 200);
        assert_eq!(forward.sent_to(), ["node-2", "node-3"]);
    }

    #[test]
    fn a_post_that_may_have_reached_a_slice_is_not_retried() {
        let lost = Err(ForwardError::Lost("connection closed".into()));
        let forward = FakeForward::with(&[("node-2", lost), ("node-3", Ok(ok_reply("{}")))]);
        let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
        let (status, error, detail) = error_of(&http(&dispatcher, "POST", "/echo", "body"));
        assert_eq!((status, error.as_str()), (503, "unavailable"));
        assert!(detail.contains("not retried"), "{detail}");
        assert_eq!(forward.sent_to(), ["node-2"]);
    }

    #[test]
    fn a_post_that_never_reached_a_slice_is_retried() {
        let unreachable = Err(ForwardError::Unreachable("not connected".into()));
        let forward = FakeForward::with(&[("node-2", unreachable), ("node-3", Ok(ok_reply("{}")))]);
        let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
        assert_eq!(http(&dispatcher, "POST", "/echo", "body").status, 200);
        assert_eq!(forward.sent_to(), ["node-2", "node-3"]);
    }

    #[test]
    fn retries_stop_at_the_attempt_limit() {
        let unreachable = || Err(ForwardError::Unreachable("not connected".into()));
        let none_here = Ok(InvokeReply::no_instance(5, "node-3", ECHO));
        let script =
            [("node-2", unreachable()), ("node-3", none_here), ("node-4", unreachable()), ("node-5", unreachable())];
        let forward = FakeForward::with(&script);
        let nodes = ["node-2", "node-3", "node-4", "node-5"];
        let dispatcher = dispatcher(empty_container("node-1"), &nodes, &forward);
        let (status, error, detail) = error_of(&http(&dispatcher, "POST", "/echo", "body"));
        assert_eq!((status, error.as_str()), (503, "no instance"));
        let mut tried = forward.sent_to();
        assert_eq!(tried.len(), ATTEMPTS_MAX, "{tried:?}");
        assert!(tried.iter().all(|node| detail.contains(node.as_str())), "{detail}");
        tried.dedup();
        assert_eq!(tried.len(), ATTEMPTS_MAX, "each attempt goes to another node");
    }

    #[test]
    fn misses_answer_json_errors() {
        let forward = Arc::new(FakeForward { down: vec!["node-3".into()], ..FakeForward::default() });
        forward.script.lock().insert("node-2".into(), vec![Err(ForwardError::Timeout)]);
        let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
        let (status, error, detail) = error_of(&http(&dispatcher, "GET", "/nope", ""));
        assert_eq!((status, error.as_str(), detail.as_str()), (404, "not found", "no route for GET /nope"));
        let answer = dispatcher.http_call("DELETE", "/echo", || Ok(Vec::new()));
        assert_eq!((answer.reply.status, answer.allow.as_deref()), (405, Some("POST")));
        let (status, error, detail) = error_of(&http(&dispatcher, "POST", "/orders", "{}"));
        assert_eq!((status, error.as_str()), (503, "no instance"));
        assert!(detail.contains(ORDERS), "{detail}");
        let (status, error, _) = error_of(&http(&dispatcher, "GET", "/echo/x", ""));
        assert_eq!((status, error.as_str()), (504, "deadline exceeded"));
        assert_eq!(forward.sent_to(), ["node-2"], "node-3 is down and never tried");
        let (status, error, detail) = error_of(&http(&dispatcher, "GET", "/echo/x", ""));
        assert_eq!((status, error.as_str()), (503, "no instance"));
        assert!(detail.contains("node-2: unreachable"), "{detail}");
        let refused =
            dispatcher.http_call("POST", "/echo", || Err(super::error(413, "payload too large", "big", false)));
        assert_eq!(refused.reply.status, 413);
    }

    #[test]
    fn forwarded_calls_are_served_locally_or_refused_as_never_reached() {
        let forward = FakeForward::with(&[]);
        let dispatcher = dispatcher(container("node-1", &[ECHO]), &[], &forward);
        let request = InvokeRequest {
            id: 31,
            origin: "node-2".into(),
            artifact: ECHO.into(),
            method: "echo".into(),
            request: sdk::encode_request(&[("msg", "far")], &[], b"").unwrap(),
            deadline_ms_left: 1000,
            hops: 1,
        };
        let reply = dispatcher.serve_forwarded(request.clone());
        assert_eq!((reply.id, reply.status, reply.reached_slice), (31, 200, true));
        assert!(String::from_utf8_lossy(&reply.body).contains(r#""echo":"far""#));
        let elsewhere = InvokeRequest { artifact: ORDERS.into(), ..request.clone() };
        let reply = dispatcher.serve_forwarded(elsewhere);
        assert!(reply.is_no_instance() && reply.id == 31, "{reply:?}");
        let malformed = dispatcher.serve_forwarded(InvokeRequest { hops: 0, ..request });
        assert_eq!((malformed.status, malformed.reached_slice), (400, false));
        assert!(forward.sent_to().is_empty(), "a forwarded call is never forwarded again");
    }

    /// Nodes in one process: forwarding calls the other dispatcher directly.
    #[derive(Default)]
    struct Loopback {
        nodes: Mutex<HashMap<String, Weak<Dispatcher>>>,
        hops: Mutex<Vec<(String, u8)>>,
    }

    impl Forward for Loopback {
        fn forward(&self, node: &str, request: InvokeRequest, _: Duration) -> Result<InvokeReply, ForwardError> {
            self.hops.lock().push((node.to_owned(), request.hops));
            let target = self.nodes.lock().get(node).and_then(Weak::upgrade);
            let target = target.ok_or_else(|| ForwardError::Unreachable(format!("no node {node}")))?;
            Ok(target.serve_forwarded(request))
        }
    }

    #[test]
    fn an_order_entering_a_third_node_flows_across_two_others() {
        let mut registry = Registry::new();
        registry.put_route("POST", "/orders", target(ORDERS, "create")).unwrap();
        for (artifact, method, node) in [(ORDERS, "create", "node-a"), (PRICING, "price", "node-a")] {
            registry.put_endpoint(artifact, method, Endpoint { node: node.into(), instance: 0 }).unwrap();
        }
        registry.put_endpoint(INVENTORY, "reserve", Endpoint { node: "node-b".into(), instance: 0 }).unwrap();
        let registry = Arc::new(RwLock::new(registry));
        let loopback = Arc::new(Loopback::default());
        let forward: Arc<dyn Forward> = loopback.clone();
        let nodes = [("node-a", vec![ORDERS, PRICING]), ("node-b", vec![INVENTORY]), ("node-c", vec![])];
        let mut dispatchers = Vec::new();
        for (node, slices) in nodes {
            let container = if slices.is_empty() { empty_container(node) } else { container(node, &slices) };
            let deadline = Duration::from_secs(5);
            let dispatcher = Arc::new(Dispatcher::new(
                node.into(),
                container.clone(),
                registry.clone(),
                Some(forward.clone()),
                deadline,
            ));
            let hook: Arc<dyn RemoteCall> = dispatcher.clone();
            container.set_remote(Some(&hook));
            loopback.nodes.lock().insert(node.into(), Arc::downgrade(&dispatcher));
            dispatchers.push(dispatcher);
        }
        let reply = http(&dispatchers[2], "POST", "/orders", r#"{"item": "book", "qty": 2}"#);
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let order = sdk::json::parse(&reply.body).unwrap();
        assert_eq!(order.get("total").and_then(|v| v.as_f64()), Some(25.0));
        assert!(order.get("order_id").and_then(|v| v.as_str()).unwrap().starts_with("node-a-"));
        let hops = loopback.hops.lock().clone();
        assert_eq!(hops, [("node-a".to_owned(), 1), ("node-b".to_owned(), 2)]);
    }
}
