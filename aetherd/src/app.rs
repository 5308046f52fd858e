//! The app port (:8081): serves the HTTP routes of the slices this node runs.
//!
//! At start it loads and activates the named slices in a [`container::Container`], builds one
//! [`invoke::routes::RouteTable`] from their descriptors, and serves it with a few tiny_http handler
//! threads. Each request is matched to a route, its path parameters, query and body are encoded for
//! the slice (see `sdk::codec`), and the call runs on the container's worker pool with a deadline.
//!
//! Answers: the slice's status and body on success; otherwise a JSON body `{"error", "detail"}` with
//! 404 (no route), 405 (route exists for another method), 400 (bad path), 413 (body too large),
//! 500 (the slice panicked), 503 (no active instance, overloaded) or 504 (deadline passed).
//!
//! Routes: two versions of one artifact may both declare a route; the one named last serves it (as
//! after a rolling update). Two different artifacts declaring the same route is a startup error.

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use container::{Artifact, CallError, Container, ContainerConfig, SliceHandle};
use invoke::routes::{self, Lookup, RouteError, RouteTable};

/// What the app server needs to start in dev mode.
pub struct AppConfig {
    pub listen: SocketAddr,
    pub node_id: String,
    pub repo: PathBuf,
    /// Artifacts `group:artifact:version` to load and start at once.
    pub slices: Vec<String>,
}

/// Tuning of the app server; [`AppOptions::from_env`] gives the defaults.
#[derive(Clone, Debug)]
pub struct AppOptions {
    pub handler_threads: usize,
    /// Slice workers; 0 means one per core.
    pub workers: usize,
    /// How long a request waits for its slice before answering 504.
    pub call_deadline: Duration,
    pub body_bytes_max: usize,
}

/// Environment variable that overrides the call deadline, in milliseconds.
pub const DEADLINE_ENV: &str = "AETHER_CALL_DEADLINE_MS";

impl AppOptions {
    /// 4 handler threads, one worker per core, 10 s deadline (or `AETHER_CALL_DEADLINE_MS`), 1 MiB bodies.
    pub fn from_env() -> AppOptions {
        let deadline_ms = std::env::var(DEADLINE_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        AppOptions {
            handler_threads: 4,
            workers: 0,
            call_deadline: Duration::from_millis(deadline_ms),
            body_bytes_max: 1 << 20,
        }
    }
}

/// Where a route leads: an instance and one of its methods.
#[derive(Clone, Debug)]
struct RouteTarget {
    slice: SliceHandle,
    method: String,
}

struct AppState {
    container: Container,
    routes: RouteTable<RouteTarget>,
    options: AppOptions,
}

pub struct AppServer {
    server: Arc<tiny_http::Server>,
    state: Arc<AppState>,
    stopping: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    addr: SocketAddr,
}

impl AppServer {
    pub fn start(config: AppConfig) -> Result<AppServer, String> {
        AppServer::start_with(config, AppOptions::from_env())
    }

    pub fn start_with(config: AppConfig, options: AppOptions) -> Result<AppServer, String> {
        let container = start_container(&config, &options)?;
        let routes = match build_routes(&container) {
            Ok(routes) => routes,
            Err(e) => {
                container.shutdown();
                return Err(e);
            }
        };
        let server = match tiny_http::Server::http(config.listen) {
            Ok(server) => Arc::new(server),
            Err(e) => {
                container.shutdown();
                return Err(format!("app port {}: {e}", config.listen));
            }
        };
        let addr = server.server_addr().to_ip().unwrap_or(config.listen);
        for (method, pattern, target) in routes.iter() {
            log::info!("app route {method} {pattern} -> {} {}", target.slice.artifact(), target.method);
        }
        let state = Arc::new(AppState { container, routes, options });
        let stopping = Arc::new(AtomicBool::new(false));
        let threads = (0..state.options.handler_threads.max(1))
            .map(|n| spawn_handler(n, &server, &state, &stopping))
            .collect::<Result<Vec<_>, String>>()?;
        let app = AppServer { server, state, stopping, threads, addr };
        log::info!("app port http://{} serving {} routes", app.addr(), app.state.routes.len());
        Ok(app)
    }

    /// The address actually listened on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop serving (requests in progress finish), then stop and unload the slices.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        for _ in &self.threads {
            self.server.unblock();
        }
        for thread in self.threads {
            let _ = thread.join();
        }
        self.state.container.shutdown();
    }
}

fn start_container(config: &AppConfig, options: &AppOptions) -> Result<Container, String> {
    let mut container_config = ContainerConfig::new(&config.repo, &config.node_id);
    if options.workers > 0 {
        container_config.pool.workers = options.workers;
    }
    let container = Container::new(container_config).map_err(|e| e.to_string())?;
    for text in &config.slices {
        let deployed = Artifact::parse(text)
            .map_err(|e| e.to_string())
            .and_then(|artifact| container.deploy(&artifact, Vec::new()).map_err(|e| e.to_string()));
        if let Err(e) = deployed {
            container.shutdown();
            return Err(e);
        }
    }
    Ok(container)
}

/// Routes of every active instance; for a route declared by two versions of one artifact, the
/// later instance wins.
fn build_routes(container: &Container) -> Result<RouteTable<RouteTarget>, String> {
    let mut table = RouteTable::new();
    let handles: Vec<SliceHandle> = container.instances().iter().rev().filter_map(|s| container.handle(s.id)).collect();
    for slice in handles {
        for route in &slice.info().routes {
            let target = RouteTarget { slice: slice.clone(), method: route.method.clone() };
            match table.insert(&route.http_method, &route.path, target) {
                Ok(()) => {}
                Err(RouteError::Conflict { .. }) if shadowed_by_other_version(&table, &slice, route) => {}
                Err(e) => return Err(format!("{}: {e}", slice.artifact())),
            }
        }
    }
    Ok(table)
}

fn shadowed_by_other_version(
    table: &RouteTable<RouteTarget>,
    slice: &SliceHandle,
    route: &container::RouteInfo,
) -> bool {
    let base = |a: &Artifact| (a.group().to_owned(), a.id().to_owned());
    let owner = match table.lookup(&route.http_method, &example_path(&route.path)) {
        Lookup::Found(found) => Some(base(found.target.slice.artifact())),
        _ => None,
    };
    owner == Some(base(slice.artifact()))
}

/// A concrete path matching `pattern` (each `{param}` becomes `x`), to find who owns a route.
fn example_path(pattern: &str) -> String {
    pattern.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
}

fn spawn_handler(
    n: usize,
    server: &Arc<tiny_http::Server>,
    state: &Arc<AppState>,
    stopping: &Arc<AtomicBool>,
) -> Result<JoinHandle<()>, String> {
    let (server, state, stopping) = (Arc::clone(server), Arc::clone(state), Arc::clone(stopping));
    std::thread::Builder::new()
        .name(format!("app-http-{n}"))
        .spawn(move || loop {
            match server.recv() {
                Ok(request) => serve(&state, request),
                Err(_) if stopping.load(Ordering::SeqCst) => return,
                Err(e) => log::debug!("app port: {e}"),
            }
        })
        .map_err(|e| format!("cannot start an app handler thread: {e}"))
}

/// An answer ready to send.
struct Answer {
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    allow: Option<String>,
}

impl Answer {
    fn error(status: u16, error: &str, detail: &str) -> Answer {
        let body = sdk::json::Object::new().str("error", error).str("detail", detail).finish();
        Answer { status, content_type: "application/json", body: body.into_bytes(), allow: None }
    }

    fn from_call_error(error: &CallError) -> Answer {
        Answer::error(error.http_status(), error.kind(), &error.to_string())
    }
}

fn serve(state: &AppState, mut request: tiny_http::Request) {
    let answer = answer(state, &mut request);
    let mut response = tiny_http::Response::from_data(answer.body).with_status_code(answer.status);
    if let Ok(header) = tiny_http::Header::from_bytes("Content-Type", answer.content_type) {
        response = response.with_header(header);
    }
    if let Some(allow) = answer.allow.and_then(|a| tiny_http::Header::from_bytes("Allow", a).ok()) {
        response = response.with_header(allow);
    }
    if let Err(e) = request.respond(response) {
        log::debug!("app port: cannot answer: {e}");
    }
}

fn answer(state: &AppState, request: &mut tiny_http::Request) -> Answer {
    let method = request.method().as_str().to_owned();
    let url = request.url().to_owned();
    let (path, query) = routes::split_target(&url);
    let found = match state.routes.lookup(&method, path) {
        Lookup::Found(found) => found,
        Lookup::NotFound => return Answer::error(404, "not found", &format!("no route for {method} {path}")),
        Lookup::MethodNotAllowed { allowed } => {
            let mut answer = Answer::error(405, "method not allowed", &format!("{path} takes {}", allowed.join(", ")));
            answer.allow = Some(allowed.join(", "));
            return answer;
        }
        Lookup::BadPath { reason } => return Answer::error(400, "bad request", reason),
    };
    let body = match read_body(request, state.options.body_bytes_max) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let query = query.map(routes::parse_query).unwrap_or_default();
    let encoded = encode(&found.params, &query, &body);
    let bytes = match encoded {
        Ok(bytes) => bytes,
        Err(e) => return Answer::error(400, "bad request", &e.to_string()),
    };
    let target = found.target;
    let called = state.container.call_with_deadline(&target.slice, &target.method, bytes, state.options.call_deadline);
    match called {
        Ok(response) => Answer {
            status: response.status.http(),
            content_type: response.content_type.mime(),
            body: response.body,
            allow: None,
        },
        Err(error) => Answer::from_call_error(&error),
    }
}

fn read_body(request: &mut tiny_http::Request, max: usize) -> Result<Vec<u8>, Answer> {
    let mut body = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return Err(Answer::error(400, "bad request", &format!("cannot read the body: {e}")));
    }
    if body.len() > max {
        return Err(Answer::error(413, "payload too large", &format!("bodies are limited to {max} bytes")));
    }
    Ok(body)
}

fn encode(params: &[(String, String)], query: &[(String, String)], body: &[u8]) -> Result<Vec<u8>, sdk::CodecError> {
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sdk::encode_request(&params, &query, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpStream;
    use std::path::Path;
    use std::sync::OnceLock;

    /// The slices, built once per test process by `cargo xtask build-slices` into a target folder
    /// of their own (cargo's lock serialises parallel builds; files are renamed into place).
    fn repo() -> PathBuf {
        static REPO: OnceLock<PathBuf> = OnceLock::new();
        REPO.get_or_init(|| {
            let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
            let target = root.join("target").join("slices-build");
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let status = std::process::Command::new(cargo)
                .current_dir(&root)
                .env("CARGO_TARGET_DIR", &target)
                .args(["run", "--quiet", "-p", "xtask", "--", "build-slices"])
                .status()
                .unwrap();
            assert!(status.success(), "building the slices failed");
            target.join("slices-repo")
        })
        .clone()
    }

    fn server(slices: &[&str], options: AppOptions) -> AppServer {
        let config = AppConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            node_id: "node-7".into(),
            repo: repo(),
            slices: slices.iter().map(|s| s.to_string()).collect(),
        };
        AppServer::start_with(config, options).unwrap()
    }

    fn options() -> AppOptions {
        AppOptions { handler_threads: 2, workers: 1, call_deadline: Duration::from_millis(500), body_bytes_max: 1024 }
    }

    /// One HTTP/1.1 request; returns (status, body).
    fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
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

    fn json(body: &str) -> sdk::json::Value {
        sdk::json::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"))
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
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (500, Some("slice panicked")));
        let (status, body) = http(app.addr(), "GET", "/faulty/hang", "");
        assert_eq!((status, json(&body).get("error").and_then(|v| v.as_str())), (504, Some("deadline exceeded")));
        // One worker, one of them abandoned to the hung call: the node serves on.
        assert_eq!(http(app.addr(), "GET", "/faulty/ok", "").0, 200);
        assert_eq!(http(app.addr(), "GET", "/echo/still", "").0, 200);
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
        let config =
            |slices: Vec<String>, listen: SocketAddr| AppConfig { listen, node_id: "n".into(), repo: repo(), slices };
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
