//! Who may do what on the management API: API keys and roles, the route table, and browser safety.
//!
//! What it owns: [`serve`], the entry every request goes through before [`crate::route`]. In order it checks
//! the `Host` header (loopback binds only: DNS rebinding), the browser's `Origin` / `Sec-Fetch-Site` on
//! state-changing methods, answers CORS preflights for configured origins, then (authentication on)
//! the `Authorization: Bearer` key and the role the route needs according to [`ROUTES`].
//!
//! Invariants:
//! - Every route is in [`ROUTES`] with the least role it needs; a request no entry matches needs `admin`
//!   (deny by default). Only `/health/live` and `/health/ready` are public.
//! - A key is never stored or logged: the KV holds `HMAC-SHA256(cluster secret, key)` under `keys/{id}`, and
//!   comparisons are constant-time. Verification reads this node's local replica (no consensus round), so a
//!   key works while the cluster has no quorum, and a revoked key stops working on a node once the removal
//!   is applied there.
//! - No CORS header is ever sent unless `allowed_origins` names the request's origin.

use crate::api::Backend;
use crate::error::ApiError;
use crate::keys::{self, KeyRecord};
use crate::server::{Request, Response};
use hmac::{Hmac, Mac};
use kvstore::AetherKey;
use log::debug;
use sha2::Sha256;
use std::net::{IpAddr, SocketAddr};

/// Longest `Authorization` value looked at; anything longer is a bad key.
const AUTHORIZATION_BYTES_MAX: usize = 512;

/// What a key may do. Each role includes the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Every read (`GET`).
    Viewer,
    /// Deploy and delete blueprints, start and steer rollouts, write `user/` KV keys, upload artifacts.
    Operator,
    /// Everything: API keys, debug faults, configuration, membership.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No key needed, even with authentication on.
    Public,
    /// A key with at least this role.
    Role(Role),
}

/// Every route: methods (`|`-separated; `GET` covers `HEAD`), path pattern (`*` one segment, a final `**`
/// any number, none included), and the least access it needs. First match wins; no match needs admin.
pub const ROUTES: &[(&str, &str, Access)] = &[
    ("GET", "health/live", Access::Public),
    ("GET", "health/ready", Access::Public),
    ("GET", "api/health", Access::Role(Role::Viewer)),
    ("GET", "api/status", Access::Role(Role::Viewer)),
    ("POST", "api/backup", Access::Role(Role::Admin)),
    ("GET", "api/nodes", Access::Role(Role::Viewer)),
    ("GET", "api/nodes/*", Access::Role(Role::Viewer)),
    ("POST", "api/nodes/*/drain", Access::Role(Role::Operator)),
    ("POST", "api/nodes/*/activate", Access::Role(Role::Operator)),
    ("POST", "api/nodes/*/shutdown", Access::Role(Role::Operator)),
    ("GET", "api/scale", Access::Role(Role::Viewer)),
    ("POST", "api/scale", Access::Role(Role::Operator)),
    ("DELETE", "api/scale/*", Access::Role(Role::Operator)),
    ("GET", "api/controller/config", Access::Role(Role::Viewer)),
    ("POST", "api/controller/config", Access::Role(Role::Operator)),
    ("GET", "api/dht", Access::Role(Role::Viewer)),
    ("GET", "api/topics", Access::Role(Role::Viewer)),
    ("GET", "api/topics/*", Access::Role(Role::Viewer)),
    ("POST", "api/topics/*/messages", Access::Role(Role::Operator)),
    ("GET", "api/dead-letters", Access::Role(Role::Viewer)),
    ("GET", "api/dead-letters/*", Access::Role(Role::Viewer)),
    ("POST", "api/dead-letters/*/replay", Access::Role(Role::Operator)),
    ("DELETE", "api/dead-letters/*", Access::Role(Role::Operator)),
    ("GET", "api/rollouts", Access::Role(Role::Viewer)),
    ("GET", "api/rollouts/*", Access::Role(Role::Viewer)),
    ("POST", "api/rollouts", Access::Role(Role::Operator)),
    ("POST", "api/rollouts/*/ratio", Access::Role(Role::Operator)),
    ("POST", "api/rollouts/*/promote", Access::Role(Role::Operator)),
    ("POST", "api/rollouts/*/complete", Access::Role(Role::Operator)),
    ("POST", "api/rollouts/*/rollback", Access::Role(Role::Operator)),
    ("GET", "api/slices", Access::Role(Role::Viewer)),
    ("GET", "api/routes", Access::Role(Role::Viewer)),
    ("GET", "api/artifacts", Access::Role(Role::Viewer)),
    ("GET", "api/openapi.yaml", Access::Role(Role::Viewer)),
    ("GET", "metrics", Access::Role(Role::Viewer)),
    ("GET", "api/metrics", Access::Role(Role::Viewer)),
    ("GET", "api/metrics/history", Access::Role(Role::Viewer)),
    ("GET", "api/invocation-metrics", Access::Role(Role::Viewer)),
    ("GET", "api/invocation-metrics/slow", Access::Role(Role::Viewer)),
    ("GET", "api/blueprints/**", Access::Role(Role::Viewer)),
    // A dry run: the checks of a post, nothing stored.
    ("POST", "api/blueprints/validate", Access::Role(Role::Viewer)),
    ("POST", "api/blueprints/*/reset", Access::Role(Role::Operator)),
    ("POST|PUT|DELETE", "api/blueprints/**", Access::Role(Role::Operator)),
    ("GET", "api/scheduled-tasks", Access::Role(Role::Viewer)),
    ("GET", "api/scheduled-tasks/*/*", Access::Role(Role::Viewer)),
    ("POST", "api/scheduled-tasks/*/*/*", Access::Role(Role::Operator)),
    ("GET", "api/kv", Access::Role(Role::Viewer)),
    ("GET", "api/kv/**", Access::Role(Role::Viewer)),
    ("PUT|POST|DELETE", "api/kv/**", Access::Role(Role::Operator)),
    ("GET", "api/artifacts/*/*/*", Access::Role(Role::Viewer)),
    ("POST|PUT|DELETE", "api/artifacts/*/*/*", Access::Role(Role::Operator)),
    ("GET", "repository/**", Access::Role(Role::Viewer)),
    ("PUT|DELETE", "repository/**", Access::Role(Role::Operator)),
    ("GET|POST", "api/keys", Access::Role(Role::Admin)),
    ("DELETE", "api/keys/*", Access::Role(Role::Admin)),
    ("POST|PUT|DELETE", "api/debug/faults", Access::Role(Role::Admin)),
    ("GET", "api/events", Access::Role(Role::Viewer)),
    ("GET", "api/events/stream", Access::Role(Role::Viewer)),
    ("GET", "api/log-levels", Access::Role(Role::Viewer)),
    ("GET", "api/log-levels/*", Access::Role(Role::Viewer)),
    ("PUT|DELETE", "api/log-levels/*", Access::Role(Role::Admin)),
    ("GET", "api/config", Access::Role(Role::Viewer)),
    ("PUT|DELETE", "api/config/*", Access::Role(Role::Admin)),
    ("GET", "api/members", Access::Role(Role::Viewer)),
    ("POST", "api/members", Access::Role(Role::Admin)),
    ("DELETE", "api/members/*", Access::Role(Role::Admin)),
];

/// The access `method` on `path` (without its leading `/`) needs, from [`ROUTES`].
pub fn access_for(method: &str, path: &str) -> Access {
    let method = if method == "HEAD" { "GET" } else { method };
    let segments: Vec<&str> = path.split('/').collect();
    ROUTES
        .iter()
        .find(|(methods, pattern, _)| methods.split('|').any(|m| m == method) && matches(pattern, &segments))
        .map_or(Access::Role(Role::Admin), |(_, _, access)| *access)
}

pub(crate) fn matches(pattern: &str, segments: &[&str]) -> bool {
    let parts: Vec<&str> = pattern.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        if *part == "**" && i + 1 == parts.len() {
            return segments.len() >= i && segments[i..].iter().all(|s| !s.is_empty());
        }
        match segments.get(i) {
            Some(s) if *part == "*" && !s.is_empty() => {}
            Some(s) if s == part => {}
            _ => return false,
        }
    }
    segments.len() == parts.len()
}

/// How this node's management API guards itself.
#[derive(Clone)]
pub struct AuthConfig {
    /// Keys are required (management beyond loopback, or a key file named).
    pub enabled: bool,
    /// The node-local first admin key (`[management] key_file` or the generated `admin.key`).
    pub bootstrap_key: Option<String>,
    /// The cluster secret: the HMAC key of stored key hashes (the same on every node).
    pub secret: Vec<u8>,
    /// Origins (`scheme://host[:port]`) allowed to make state-changing calls and get CORS answers.
    pub allowed_origins: Vec<String>,
    /// Extra accepted `Host` names for loopback binds.
    pub host_names: Vec<String>,
    /// Where management listens (its IP is an accepted `Host`; loopback binds get `Host` checks).
    pub listen: SocketAddr,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field("bootstrap_key", &self.bootstrap_key.as_ref().map(|_| "<redacted>"))
            .field("allowed_origins", &self.allowed_origins)
            .field("host_names", &self.host_names)
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// The management API's guard: configuration plus the bootstrap key's hash.
pub struct Auth {
    config: AuthConfig,
    bootstrap_hash: Option<Vec<u8>>,
}

impl Auth {
    pub fn new(config: AuthConfig) -> Auth {
        let mut auth = Auth { config, bootstrap_hash: None };
        auth.bootstrap_hash = auth.config.bootstrap_key.as_deref().map(|k| auth.hash(k));
        auth
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.config.secret)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(b"aether-api-key-v1\0");
        mac
    }

    /// The keyed hash a key is stored as.
    pub fn hash(&self, key: &str) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// Whether `key` hashes to `expected`, in constant time.
    fn verify(&self, key: &str, expected: &[u8]) -> bool {
        let mut mac = self.mac();
        mac.update(key.as_bytes());
        mac.verify_slice(expected).is_ok()
    }

    /// The role of the request's key; 401 when there is none or it is not valid.
    pub fn authenticate(&self, backend: &dyn Backend, req: &Request) -> Result<Role, ApiError> {
        let token = bearer(req)?;
        if let Some(hash) = &self.bootstrap_hash {
            if self.verify(token, hash) {
                return Ok(Role::Admin);
            }
        }
        let Some(id) = keys::key_id(token) else {
            return Err(unauthorized("the key is not valid"));
        };
        let key = AetherKey::ApiKey { id };
        let Some(entry) = backend.kv_get(&key, true)? else {
            return Err(unauthorized("the key is not valid (unknown or revoked)"));
        };
        let record = KeyRecord::decode(&entry.value).ok_or_else(|| unauthorized("the key is not valid"))?;
        if !self.verify(token, &record.hash_bytes()) {
            return Err(unauthorized("the key is not valid"));
        }
        Role::parse(&record.role).ok_or_else(|| unauthorized("the key's role is unknown to this node"))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.config.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// DNS rebinding guard: on a loopback bind, the `Host` must name this machine or a configured name.
    fn check_host(&self, req: &Request) -> Result<(), ApiError> {
        if !self.config.listen.ip().is_loopback() {
            return Ok(());
        }
        let Some(host) = req.header("host") else { return Ok(()) };
        let name = strip_port(host.trim());
        let listen_ip = self.config.listen.ip().to_string();
        let known = name.eq_ignore_ascii_case("localhost")
            || name == listen_ip
            || name == "[::1]"
            || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback() && ip.is_ipv4())
            || self.config.host_names.iter().any(|h| h.eq_ignore_ascii_case(name));
        if known {
            Ok(())
        } else {
            Err(ApiError::new(
                421,
                "unknown_host",
                format!(
                    "Host '{}' does not name this node; use localhost or add the name to [management] host_names",
                    clip(host)
                ),
            ))
        }
    }

    /// Browser safety for state-changing methods: an `Origin` must be allowed, and a cross-site fetch
    /// without an allowed origin is refused. Requests without these headers (curl, scripts) pass.
    fn check_origin(&self, req: &Request) -> Result<(), ApiError> {
        if matches!(req.method.as_str(), "GET" | "HEAD") {
            return Ok(());
        }
        match req.header("origin") {
            Some(origin) if self.origin_allowed(origin) => Ok(()),
            Some(origin) => Err(ApiError::new(
                403,
                "cross_origin",
                format!(
                    "requests from origin '{}' may not change state; add it to [management] allowed_origins",
                    clip(origin)
                ),
            )),
            None if req.header("sec-fetch-site").is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site")) => {
                Err(ApiError::new(403, "cross_origin", "cross-site requests may not change state"))
            }
            None => Ok(()),
        }
    }

    /// A CORS preflight from an allowed origin, if this is one.
    fn preflight(&self, req: &Request) -> Option<Response> {
        if req.method != "OPTIONS" {
            return None;
        }
        let origin = req.header("origin").filter(|o| self.origin_allowed(o))?;
        Some(
            Response::ok(serde_json::json!({}))
                .with_header("Access-Control-Allow-Origin", origin)
                .with_header("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, DELETE")
                .with_header("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key")
                .with_header("Access-Control-Max-Age", "600")
                .with_header("Vary", "Origin"),
        )
    }

    /// Everything [`serve`] checks before routing; the role of the caller (`None` with authentication off).
    fn admit(&self, backend: &dyn Backend, req: &Request) -> Result<Option<Role>, ApiError> {
        self.check_origin(req)?;
        let needed = match access_for(&req.method, &req.path) {
            Access::Public => return Ok(None),
            Access::Role(role) => role,
        };
        if !self.config.enabled {
            return Ok(None);
        }
        let role = self.authenticate(backend, req)?;
        if role < needed {
            return Err(ApiError::new(
                403,
                "forbidden",
                format!(
                    "{} /{} needs the {} role; this key is {}",
                    req.method,
                    clip(&req.path),
                    needed.as_str(),
                    role.as_str()
                ),
            ));
        }
        Ok(Some(role))
    }
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(401, "unauthorized", detail)
}

/// `host[:port]` or `[v6][:port]` without the port.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Client-supplied text quoted in an error, cut short.
pub(crate) fn clip(text: &str) -> String {
    text.chars().take(100).filter(|c| !c.is_control()).collect()
}

/// Answers one request: the guard, then the route (`/api/keys` here, the rest in [`crate::route`]).
/// The bearer token of `req`, or why there is none.
fn bearer(req: &Request) -> Result<&str, ApiError> {
    // Two keys in one request are not a key: which one counts would be the reader's guess.
    if req.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case("authorization")).nth(1).is_some() {
        return Err(ApiError::bad_request("more than one Authorization header"));
    }
    let Some(value) = req.header("authorization") else {
        return Err(unauthorized("this API needs a key: send 'Authorization: Bearer <key>'"));
    };
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return Err(unauthorized("the Authorization header is too long to be a key"));
    }
    let Some((scheme, token)) = value.trim().split_once(' ') else {
        return Err(unauthorized("expected 'Authorization: Bearer <key>'"));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthorized("expected 'Authorization: Bearer <key>'"));
    }
    Ok(token.trim())
}

/// The checks [`serve`] makes that need neither the body nor the store (Host, Origin, and with
/// authentication on, that a non-public route carries a bearer token at all), for the HTTP server to run
/// before it reads a body: a stranger without a key cannot make the node receive and buffer an upload.
/// `None` lets the request on to [`serve`], which checks everything again, the key itself included.
pub fn screen(auth: &Auth, req: &Request) -> Option<Response> {
    if req.method == "OPTIONS" {
        return None;
    }
    let checked = auth.check_host(req).and_then(|()| auth.check_origin(req)).and_then(|()| {
        let public = matches!(access_for(&req.method, &req.path), Access::Public);
        if auth.enabled() && !public {
            bearer(req).map(|_| ())
        } else {
            Ok(())
        }
    });
    let refusal = Response::from(checked.err()?);
    debug!("refused {} /{} from {:?} before its body: {}", req.method, clip(&req.path), req.peer, refusal.status);
    Some(if refusal.status == 401 {
        refusal.with_header("WWW-Authenticate", "Bearer realm=\"aether\"")
    } else {
        refusal
    })
}

pub fn serve(auth: &Auth, backend: &dyn Backend, req: &Request) -> Response {
    if let Err(e) = auth.check_host(req) {
        debug!("refused {} /{} from {:?}: {e}", req.method, clip(&req.path), req.peer);
        return Response::from(e);
    }
    if let Some(preflight) = auth.preflight(req) {
        return preflight;
    }
    let mut response = match auth.admit(backend, req) {
        Ok(_) if req.path == "api/keys" || req.path.starts_with("api/keys/") => {
            keys::route(auth, backend, req).unwrap_or_else(Response::from)
        }
        Ok(_) => crate::api::route(backend, req),
        Err(e) => {
            debug!("refused {} /{} from {:?}: {e}", req.method, clip(&req.path), req.peer);
            Response::from(e)
        }
    };
    if response.status == 401 {
        response = response.with_header("WWW-Authenticate", "Bearer realm=\"aether\"");
    }
    if response.status == 405 {
        response = with_allow(response, req);
    }
    if let Some(origin) = req.header("origin").filter(|o| auth.origin_allowed(o)) {
        response = response.with_header("Access-Control-Allow-Origin", origin).with_header("Vary", "Origin");
    }
    response
}

/// A 405 names the methods the path answers in `Allow`; one on a path the API does not have is a 404.
fn with_allow(response: Response, req: &Request) -> Response {
    match crate::methods::allowed(&req.path) {
        Some(methods) => response.with_header("Allow", methods),
        None => Response::from(ApiError::not_found(format!("no such path: /{}", clip(&req.path)))),
    }
}

/// A fresh random value from the kernel, as lower-case hex.
pub(crate) fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .map_err(|e| ApiError::new(500, "internal", format!("cannot read random bytes: {e}")))?;
    Ok(hex(&buf))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[path = "auth_tests.rs"]
mod tests;
