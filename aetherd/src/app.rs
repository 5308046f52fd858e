//! The app port (:8081): every route of the cluster, answered here or forwarded.
//!
//! An [`httpd`] server (limits, timeouts, optional TLS) hands each complete request to one of its
//! worker threads, which takes it to the [`Dispatcher`] (see [`dispatch`]): the route is looked up in
//! the shared [`invoke::Registry`], and the call runs on an instance of this node's container when there
//! is one, else on another node through the node runtime's [`Forward`]. A local call runs on the worker
//! thread itself, under the server's deadline: past it the server answers 504 and replaces a worker
//! stuck in a slice (see [`handlers`]).
//!
//! Calls forwarded by other nodes are answered by [`Dispatcher::serve_forwarded_at`], which blocks; the
//! node runtime runs it on the threads of a [`ForwardedCalls`] pool, off its event loop.
//!
//! Every call into a local instance, from either side, first takes a permit of that instance's bulkhead
//! (see `bulkhead`), so a slice that hangs holds at most its share of the threads; a health watch (see
//! `health`) reports a saturated instance and whether the port still has a live handler.
//!
//! Two ways to start:
//! - [`AppServer::start_cluster`]: the node runtime owns the container (its deployment code loads and
//!   activates slices in it) and keeps the registry current from the KV store; the app server only
//!   serves, installs the dispatcher as the container's remote-call hook, and removes it on stop.
//! - [`AppServer::start_with`] (dev mode, `--slice` flags): the app server loads the named slices in a
//!   container of its own, registers their routes, serves them locally, and unloads them on stop. Two
//!   versions of one artifact may both declare a route; the one named last serves it (as after a
//!   rolling update). Two different artifacts declaring the same route is a startup error.
//!
//! Answers: the slice's status and body; otherwise a JSON body `{"error", "detail"}` with 404 (no
//! route), 405 (route exists for another method), 400 (bad path), 413 (body too large), 500 (the slice
//! panicked), 503 (no live instance; overloaded, with `Retry-After`) or 504 (deadline passed).

// Cluster mode (`start_cluster`, `Forward`, `serve_forwarded`) is entered from the node runtime's
// wiring; until every entry point is reached from there, unused ones are not warnings.

mod answers;
mod bulkhead;
mod dev;
mod dispatch;
mod handlers;
mod health;
mod serve;
mod served;

pub use dispatch::{Call, Dispatcher, Forward, ForwardDone, ForwardError};
pub use health::{HealthSink, SliceHealth};
pub use serve::{ForwardedCalls, ForwardedStats};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use container::{Container, RemoteCall};
use invoke::Registry;
use parking_lot::RwLock;

/// What the app server needs to start in dev mode.
pub struct AppConfig {
    pub listen: SocketAddr,
    pub node_id: String,
    pub repo: PathBuf,
    /// Artifacts `group:artifact:version` to load and start at once.
    pub slices: Vec<String>,
    /// Folder of the private library copies (a node uses `{data_dir}/loaded`); `None`: the container's default.
    pub work_dir: Option<PathBuf>,
    /// Keys whose signatures the dev container requires (`[artifacts] trusted_keys`).
    pub trusted_keys: container::TrustedKeys,
}

/// Tuning of the app server; [`AppOptions::from_env`] gives the defaults.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// Most worker threads of the HTTP server (local slice calls run on them).
    pub handler_threads: usize,
    /// Worker threads kept while the port is idle (`None`: all `handler_threads`, started at once); more
    /// start when requests wait, and end after a while without work.
    pub handler_threads_idle: Option<usize>,
    /// Slice workers of the dev-mode container; 0 means one per core (cluster mode: the node's container decides).
    pub workers: usize,
    /// How long a request waits for its slice (wherever it runs) before answering 504.
    pub call_deadline: Duration,
    pub body_bytes_max: usize,
    /// Most worker threads stuck in slices past their deadline replaced at once.
    pub abandoned_max: usize,
    /// TLS on the port, when set.
    pub tls: Option<httpd::TlsFiles>,
    /// Where calls that run on this node are counted and timed (cluster mode).
    pub metrics: Option<Arc<crate::metrics::Telemetry>>,
    /// Run local slice calls on the port's I/O thread (see `httpd::Config::inline`); off: every call goes
    /// to a worker.
    pub inline: bool,
}

/// Handler threads the app port keeps while idle.
pub const HANDLER_THREADS_IDLE: usize = 4;

/// Environment variable that overrides the call deadline, in milliseconds.
pub const DEADLINE_ENV: &str = "AETHER_CALL_DEADLINE_MS";

impl AppOptions {
    /// Up to 128 handler threads (a slice's bulkhead may hold at most half of them), 4 kept while idle, one
    /// slice worker per core, 10 s deadline (or `AETHER_CALL_DEADLINE_MS`), 1 MiB bodies, no TLS.
    pub fn from_env() -> AppOptions {
        let deadline_ms = std::env::var(DEADLINE_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        AppOptions {
            handler_threads: dispatch::CALL_THREADS_DEFAULT,
            handler_threads_idle: Some(HANDLER_THREADS_IDLE),
            workers: 0,
            call_deadline: Duration::from_millis(deadline_ms),
            body_bytes_max: 1 << 20,
            abandoned_max: handlers::ABANDONED_MAX,
            tls: None,
            metrics: None,
            inline: true,
        }
    }
}

/// Who owns the container's lifecycle.
enum Mode {
    /// Dev mode: this server loaded the slices and shuts the container down on stop.
    OwnsContainer,
    /// Cluster mode: the node runtime owns it; the server only removes its remote-call hook.
    SharesContainer,
}

pub struct AppServer {
    dispatcher: Arc<Dispatcher>,
    container: Arc<Container>,
    mode: Mode,
    http: Arc<httpd::Server>,
    health: health::HealthWatch,
}

impl AppServer {
    /// Dev mode: load and activate `config.slices` in a container of this server's, serve their routes.
    pub fn start_with(config: AppConfig, options: AppOptions) -> Result<AppServer, String> {
        let container = Arc::new(dev::start_container(&config, &options)?);
        let registry = match dev::local_registry(&config.node_id, &container) {
            Ok(registry) => Arc::new(RwLock::new(registry)),
            Err(e) => {
                container.shutdown();
                return Err(e);
            }
        };
        let dispatcher = Dispatcher::new(config.node_id, Arc::clone(&container), registry, None, options.call_deadline);
        let dispatcher = Arc::new(dispatcher.with_call_threads(options.handler_threads));
        let started =
            AppServer::serve(config.listen, dispatcher, Arc::clone(&container), Mode::OwnsContainer, &options);
        if started.is_err() {
            container.shutdown();
        }
        started
    }

    /// Cluster mode: serve every route in `registry` (kept current by the node runtime) from
    /// `container` (whose slices the node runtime manages) or through `forward`.
    pub fn start_cluster(
        listen: SocketAddr,
        node_id: String,
        container: Arc<Container>,
        registry: Arc<RwLock<Registry>>,
        forward: Arc<dyn Forward>,
        options: AppOptions,
    ) -> Result<AppServer, String> {
        let dispatcher =
            Dispatcher::new(node_id, Arc::clone(&container), registry, Some(forward), options.call_deadline);
        let mut dispatcher = dispatcher.with_call_threads(options.handler_threads);
        if let Some(metrics) = &options.metrics {
            dispatcher = dispatcher.with_metrics(Arc::clone(metrics));
        }
        let dispatcher = Arc::new(dispatcher);
        let hook: Arc<dyn RemoteCall> = dispatcher.clone();
        container.set_remote(Some(&hook));
        let started = AppServer::serve(listen, dispatcher, Arc::clone(&container), Mode::SharesContainer, &options);
        if started.is_err() {
            container.set_remote(None);
        }
        started
    }

    fn serve(
        listen: SocketAddr,
        dispatcher: Arc<Dispatcher>,
        container: Arc<Container>,
        mode: Mode,
        options: &AppOptions,
    ) -> Result<AppServer, String> {
        let port = Arc::new(handlers::AppPort::new(Arc::clone(&dispatcher), options.body_bytes_max));
        let http = Arc::new(httpd::Server::start(handlers::http_config(listen, options), port)?);
        let probe = {
            let http = Arc::clone(&http);
            health::PortProbe { live_handlers: Box::new(move || http.stats().workers_live) }
        };
        let health = match health::HealthWatch::start(Arc::clone(&dispatcher), probe) {
            Ok(health) => health,
            Err(e) => {
                if let Ok(http) = Arc::try_unwrap(http) {
                    http.stop();
                }
                return Err(e);
            }
        };
        let routes = dispatcher.registry().read().routes().len();
        log::info!("app port {} serving {routes} routes", http.addr());
        Ok(AppServer { dispatcher, container, mode, http, health })
    }

    /// The address actually listened on.
    pub fn addr(&self) -> SocketAddr {
        self.http.addr()
    }

    /// The port's open connections, as a gauge to read from elsewhere (metrics).
    pub fn connections_gauge(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.http.connections_gauge()
    }

    /// Whether the port accepts connections right now, as a flag to read from elsewhere.
    pub fn accepting_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.http.accepting_flag()
    }

    /// Whether the port has a live handler thread to serve with (kept by the health watch), as a flag
    /// to read from elsewhere (`/health/ready`).
    pub fn serving_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.health.serving_flag()
    }

    /// Where reports of saturated slices go (the node runtime records them for `/api/slices`).
    pub fn report_health_to(&self, sink: HealthSink) {
        self.health.set_sink(sink);
    }

    /// Reads the TLS certificate and key again (a failure keeps the old ones).
    pub fn reload_tls(&self) -> Result<(), String> {
        self.http.reload_tls()
    }

    /// The data plane, for calls forwarded by other nodes ([`Dispatcher::serve_forwarded_at`]).
    /// Change the call deadline (a live setting): the dispatcher's, and the port's request deadline with
    /// its margin, for requests that arrive from now on.
    pub fn set_call_deadline(&self, deadline: Duration) {
        (self.call_deadline_setter())(deadline);
    }

    /// [`AppServer::set_call_deadline`] as a function that outlives this borrow (for a live-settings hook).
    pub fn call_deadline_setter(&self) -> impl Fn(Duration) + Send + Sync + 'static {
        // Weak: the hook outlives the port, and must not keep `stop` from stopping it.
        let (dispatcher, http) = (Arc::clone(&self.dispatcher), Arc::downgrade(&self.http));
        move |deadline| {
            dispatcher.set_call_deadline(deadline);
            if let Some(http) = http.upgrade() {
                http.set_deadline(Some(deadline + handlers::DEADLINE_MARGIN));
            }
        }
    }

    pub fn dispatcher(&self) -> Arc<Dispatcher> {
        Arc::clone(&self.dispatcher)
    }

    /// Stop serving (requests in progress finish); in dev mode, then stop and unload the slices.
    pub fn stop(mut self) {
        self.health.stop();
        match Arc::try_unwrap(self.http) {
            Ok(http) => http.stop(),
            Err(_) => log::error!("app port: still shared at stop; not waiting for it"),
        }
        match self.mode {
            Mode::OwnsContainer => self.container.shutdown(),
            Mode::SharesContainer => self.container.set_remote(None),
        }
    }
}

#[cfg(test)]
mod tests_forward;
#[cfg(test)]
mod tests_http;

#[cfg(test)]
mod tests {
    use super::*;
    use container::{Artifact, ContainerConfig};
    use invoke::RouteTarget;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// The example slices (`devcluster::example_slices_repo`: the repository `cargo xtask test` built, or
    /// built once per test process).
    pub(crate) fn repo() -> PathBuf {
        devcluster::example_slices_repo().unwrap()
    }

    pub(crate) fn server(slices: &[&str], options: AppOptions) -> AppServer {
        let config = AppConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            node_id: "node-7".into(),
            repo: repo(),
            slices: slices.iter().map(|s| s.to_string()).collect(),
            work_dir: None,
            trusted_keys: Default::default(),
        };
        AppServer::start_with(config, options).unwrap()
    }

    pub(crate) fn options() -> AppOptions {
        AppOptions {
            handler_threads: 2,
            handler_threads_idle: None,
            workers: 1,
            call_deadline: Duration::from_millis(500),
            body_bytes_max: 1024,
            ..AppOptions::from_env()
        }
    }

    /// One HTTP/1.1 request; returns (status, body).
    pub(crate) fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(body.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        let status = raw.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
        let body = raw.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
        (status, body)
    }

    pub(crate) fn json(body: &str) -> aether_sdk::json::Value {
        aether_sdk::json::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    #[test]
    fn routes_reach_slices_with_parameters_and_bodies() {
        let app = server(&["org.aether.examples:echo:1.0.0", "org.aether.examples:counter:1.0.0"], options());
        let (status, body) = http(app.addr(), "GET", "/echo/hello%20there?x=1", "");
        assert_eq!(status, 200);
        let value = json(&body);
        assert_eq!(value.get("echo").and_then(|v| v.as_str()), Some("hello there"));
        assert_eq!(value.get("node").and_then(|v| v.as_str()), Some("node-7"));
        assert_eq!(http(app.addr(), "POST", "/echo", "raw body"), (200, "raw body".into()));
        assert_eq!(http(app.addr(), "POST", "/counter/c/incr", "").1, r#"{"name":"c","value":1}"#);
        assert_eq!(http(app.addr(), "POST", "/counter/c/incr", "").1, r#"{"name":"c","value":2}"#);
        assert_eq!(http(app.addr(), "GET", "/counter/c", "").1, r#"{"name":"c","value":2}"#);
        app.stop();
    }

    #[test]
    fn misses_and_failures_answer_json_errors() {
        let app = server(&["org.aether.examples:echo:1.0.0", "org.aether.examples:faulty:1.0.0"], options());
        let (status, body) = http(app.addr(), "GET", "/nope", "");
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (404, Some("not found")));
        assert_eq!(http(app.addr(), "DELETE", "/echo", "").0, 405);
        assert_eq!(http(app.addr(), "GET", "/echo/%zz", "").0, 400);
        assert_eq!(http(app.addr(), "POST", "/echo", &"x".repeat(2048)).0, 413);
        let (status, body) = http(app.addr(), "GET", "/faulty/panic", "");
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (500, Some("internal")));
        let (status, body) = http(app.addr(), "GET", "/faulty/hang", "");
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (504, Some("deadline exceeded")));
        // Two handlers give faulty one permit, held by the hung call: faulty is refused at once, with
        // a Retry-After, and the node serves every other slice on.
        let (status, body) = http(app.addr(), "GET", "/faulty/ok", "");
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (503, Some("overloaded")), "{body}");
        assert_eq!(http(app.addr(), "GET", "/echo/still", "").0, 200);
    }

    #[test]
    fn a_hung_call_on_a_handler_gets_504_and_the_handler_is_replaced() {
        let options = AppOptions { handler_threads: 8, ..options() };
        let app = server(&["org.aether.examples:echo:1.0.0", "org.aether.examples:faulty:1.0.0"], options);
        let addr = app.addr();
        let started = std::time::Instant::now();
        let hung = std::thread::spawn(move || http(addr, "GET", "/faulty/hang", ""));
        let counts = |app: &AppServer| {
            let stats = app.http.stats();
            (stats.workers_live, stats.workers_abandoned)
        };
        while counts(&app) == (8, 0) && started.elapsed() < Duration::from_millis(200) {
            // While one handler is stuck in the slice, the other serves.
            assert_eq!(http(addr, "GET", "/echo/meanwhile", "").0, 200);
        }
        let (status, body) = hung.join().unwrap();
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (504, Some("deadline exceeded")));
        let late = started.elapsed();
        assert!(late >= Duration::from_millis(500) && late < Duration::from_millis(1500), "answered after {late:?}");
        assert_eq!(counts(&app), (8, 1), "the stuck handler is replaced");
        let answers: Vec<u16> = (0..8).map(|_| http(addr, "GET", "/echo/after", "").0).collect();
        assert_eq!(answers, [200; 8]);
        assert_eq!(http(addr, "GET", "/faulty/panic", "").0, 500);
        assert_eq!(counts(&app), (8, 1), "a panic costs no thread");
    }

    #[test]
    fn the_ready_flag_falls_when_the_port_has_no_live_handler_left() {
        use std::sync::atomic::Ordering;
        // One handler, none replaced, every call on it: a hung call leaves the port unable to serve.
        let options = AppOptions { handler_threads: 1, abandoned_max: 0, inline: false, ..options() };
        let app = server(&["org.aether.examples:faulty:1.0.0"], options);
        let ready = app.serving_flag();
        let wait = |want: bool| {
            let started = std::time::Instant::now();
            while ready.load(Ordering::SeqCst) != want && started.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(20));
            }
            ready.load(Ordering::SeqCst) == want
        };
        assert!(wait(true), "a fresh port is ready");
        assert_eq!(http(app.addr(), "GET", "/faulty/hang", "").0, 504);
        assert!(wait(false), "the only handler is stuck in the slice: not ready");
    }

    #[test]
    fn a_hung_call_that_held_the_io_thread_costs_no_handler() {
        use std::sync::atomic::Ordering;
        let options = AppOptions { handler_threads: 1, abandoned_max: 1, ..options() };
        let app = server(&["org.aether.examples:echo:1.0.0", "org.aether.examples:faulty:1.0.0"], options);
        let ready = app.serving_flag();
        // The call runs on the I/O thread, another takes the port over, and the handler stays free.
        assert_eq!(http(app.addr(), "GET", "/faulty/hang", "").0, 504);
        assert!(ready.load(Ordering::SeqCst));
        assert_eq!(http(app.addr(), "GET", "/echo/after", "").0, 200);
        assert_eq!((app.http.stats().workers_live, app.http.stats().workers_abandoned), (1, 1));
    }

    #[test]
    fn stopping_waits_for_a_hung_call_only_until_its_deadline() {
        let mut config = ContainerConfig::new(repo(), "node-1");
        config.pool.workers = 1;
        let container = Arc::new(Container::new(config).unwrap());
        let faulty = Artifact::parse("org.aether.examples:faulty:1.0.0").unwrap();
        container.deploy(&faulty, vec![]).unwrap();
        let mut registry = Registry::new();
        let target = RouteTarget { artifact: faulty.to_string(), method: "hang".into() };
        registry.put_route("GET", "/faulty/hang", target).unwrap();
        let registry = Arc::new(RwLock::new(registry));
        let listen = "127.0.0.1:0".parse().unwrap();
        let app =
            AppServer::start_cluster(listen, "node-1".into(), container, registry, Arc::new(Node2), options()).unwrap();
        let addr = app.addr();
        let hung = std::thread::spawn(move || http(addr, "GET", "/faulty/hang", ""));
        // Let the call reach the slice (its deadline is 500 ms away).
        std::thread::sleep(Duration::from_millis(100));
        let stopping = std::time::Instant::now();
        app.stop();
        assert!(stopping.elapsed() < Duration::from_secs(2), "stop took {:?}", stopping.elapsed());
        assert_eq!(hung.join().unwrap().0, 504);
    }

    /// Answers every forwarded call from "node-2" with the echo of its artifact and hops.
    struct Node2;

    impl Forward for Node2 {
        fn forward(
            &self,
            node: &str,
            request: invoke::InvokeRequest,
            _: Duration,
        ) -> Result<invoke::InvokeReply, ForwardError> {
            let body = format!(r#"{{"node":"{node}","artifact":"{}","hops":{}}}"#, request.artifact, request.hops);
            let reply = invoke::InvokeReply {
                id: request.id,
                status: 200,
                content_type: "application/json".into(),
                headers: Vec::new(),
                body: body.into_bytes(),
                reached_slice: true,
            };
            Ok(reply)
        }
    }

    #[test]
    fn a_cluster_node_serves_remote_routes_and_leaves_the_container_to_the_node() {
        let mut config = ContainerConfig::new(repo(), "node-1");
        config.pool.workers = 1;
        let container = Arc::new(Container::new(config).unwrap());
        let echo = Artifact::parse("org.aether.examples:echo:1.0.0").unwrap();
        let local = container.deploy(&echo, vec![]).unwrap();
        let mut registry = Registry::new();
        let counter = "org.aether.examples:counter:1.0.0";
        let target = RouteTarget { artifact: counter.into(), method: "get".into() };
        registry.put_route("GET", "/counter/{name}", target).unwrap();
        let endpoint = invoke::Endpoint { node: "node-2".into(), instance: 0 };
        registry.put_endpoint(counter, "get", endpoint).unwrap();
        let echo_target = RouteTarget { artifact: echo.to_string(), method: "echo".into() };
        registry.put_route("GET", "/echo/{msg}", echo_target).unwrap();
        let registry = Arc::new(RwLock::new(registry));
        let listen = "127.0.0.1:0".parse().unwrap();
        let app =
            AppServer::start_cluster(listen, "node-1".into(), container.clone(), registry, Arc::new(Node2), options())
                .unwrap();
        let (status, body) = http(app.addr(), "GET", "/counter/c", "");
        assert_eq!(
            (status, body.as_str()),
            (200, r#"{"node":"node-2","artifact":"org.aether.examples:counter:1.0.0","hops":1}"#)
        );
        let (status, body) = http(app.addr(), "GET", "/echo/here", "");
        assert_eq!((status, json(&body).get("node").and_then(|v| v.as_str())), (200, Some("node-1")));
        assert_eq!(app.dispatcher().node_id(), "node-1");
        app.stop();
        assert_eq!(container.state(local).map(|s| s.0), Some(container::SliceState::Active), "the node's to stop");
        container.shutdown();
    }

    #[test]
    fn a_live_deadline_hook_does_not_keep_the_port_from_stopping() {
        let app = server(&["org.aether.examples:echo:1.0.0"], options());
        let addr = app.addr();
        let set = app.call_deadline_setter();
        app.stop();
        assert!(TcpStream::connect(addr).is_err(), "the port stopped and closed its listener");
        set(Duration::from_secs(1));
    }

    #[test]
    fn the_later_version_serves_a_shared_route() {
        let app = server(&["org.aether.examples:echo:1.0.0", "org.aether.examples:echo:2.0.0"], options());
        let (_, body) = http(app.addr(), "GET", "/echo/v", "");
        assert_eq!(json(&body).get("version").and_then(|v| v.as_str()), Some("2.0.0"));
        app.stop();
    }

    #[test]
    fn orders_flow_over_http() {
        let slices = [
            "org.aether.examples:orders:1.0.0",
            "org.aether.examples:inventory:1.0.0",
            "org.aether.examples:pricing:1.0.0",
        ];
        let app = server(&slices, options());
        let (status, body) = http(app.addr(), "POST", "/orders", r#"{"item": "book", "qty": 2}"#);
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body).get("total").and_then(|v| v.as_f64()), Some(25.0));
        let (status, body) = http(app.addr(), "POST", "/orders", r#"{"item": "unicorn", "qty": 2}"#);
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (404, Some("not found")));
        assert_eq!(http(app.addr(), "POST", "/orders", "not json").0, 400);
        app.stop();
    }

    #[test]
    fn an_unknown_slice_or_a_taken_port_fails_the_start_with_a_message() {
        let config = |slices: Vec<String>, listen: SocketAddr| AppConfig {
            listen,
            node_id: "n".into(),
            repo: repo(),
            slices,
            work_dir: None,
            trusted_keys: Default::default(),
        };
        let local = "127.0.0.1:0".parse().unwrap();
        let missing = AppServer::start_with(config(vec!["org.aether.examples:nope:1.0.0".into()], local), options());
        assert!(missing.err().unwrap().contains("not in the repository"));
        let bad = AppServer::start_with(config(vec!["nope".into()], local), options());
        assert!(bad.err().unwrap().contains("group:artifact:version"));
        let first = server(&[], options());
        let taken = AppServer::start_with(config(vec![], first.addr()), options());
        assert!(taken.err().unwrap().contains("app port"));
        first.stop();
    }
}
