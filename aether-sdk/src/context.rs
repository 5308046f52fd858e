//! What a running slice can ask of its host: call another slice, log, read its config, publish, read
//! the invocation it serves, and reach its cluster state.
//!
//! A [`Context`] wraps the host's callback table. The host keeps that table alive and thread-safe
//! until the slice's `stop` returns, so a `Context` may be stored in the slice and used from any
//! thread until then. A detached context (no host) serves unit tests and in-process use.

use std::time::Duration;

use crate::abi::{self, Bytes, HostApi, OwnedBuf, RawInvocation, RawResponse, StrRef};
use crate::codec::{self, CodecError};
use crate::kv::Kv;
use crate::response::Response;
use crate::status::Status;

/// Log levels a slice can log at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl Level {
    pub const fn code(self) -> u32 {
        match self {
            Level::Error => abi::log_level::ERROR,
            Level::Warn => abi::log_level::WARN,
            Level::Info => abi::log_level::INFO,
            Level::Debug => abi::log_level::DEBUG,
            Level::Trace => abi::log_level::TRACE,
        }
    }
}

/// The call a slice is serving on the current thread, as the host knows it.
///
/// Read it with [`Context::invocation`] while serving a call; [`Context::call`] passes the request
/// id, the deadline and the depth on to the callee by itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The request id (`X-Request-Id`) of the client request this call serves, when known.
    pub request_id: Option<String>,
    /// How long the caller still waits; `None` when the call has no deadline (or none runs here).
    pub deadline_remaining: Option<Duration>,
    /// `group:artifact:version` of the slice that called, for a slice-to-slice call.
    pub caller: Option<String>,
    /// Slice-to-slice calls between the client's request and this call (0: called from HTTP).
    pub depth: u32,
    /// For a single-active slice, the epoch of the lease this instance holds: it grows with every
    /// change of holder, so a slice can fence its side effects (write it beside them and refuse
    /// older ones). `None` for other slices, or outside a call.
    pub lease_epoch: Option<u64>,
}

/// The slice's handle on its host.
pub struct Context {
    host: *const HostApi,
    node_id: String,
}

// SAFETY: the host guarantees its table and `ctx` stay valid until `stop` returns and that every
// callback is safe to call from any thread concurrently (see `abi::HostApi`).
unsafe impl Send for Context {}
// SAFETY: as above; `Context` itself has no interior mutability.
unsafe impl Sync for Context {}

impl Context {
    /// A context without a host: calls, publishes and cluster state answer `Unavailable`, logs go to
    /// stderr, there is no live config and no invocation. For tests and for calling a slice's code
    /// directly.
    pub fn detached(node_id: &str) -> Context {
        Context { host: std::ptr::null(), node_id: node_id.to_owned() }
    }

    /// # Safety
    /// `host` is null or points to a table valid (and thread-safe) for as long as this context is used.
    pub(crate) unsafe fn from_host(host: *const HostApi) -> Context {
        // SAFETY: the caller guarantees `host` is null or valid; its node id is borrowed text valid
        // as long as the table.
        let node_id = unsafe { host.as_ref().map(|h| str_from(h.node_id).to_owned()) };
        Context { host, node_id: node_id.unwrap_or_default() }
    }

    /// The host table (null for a detached context), for code that hands it to other threads.
    pub(crate) fn host_ptr(&self) -> *const HostApi {
        self.host
    }

    pub(crate) fn host(&self) -> Option<&HostApi> {
        // SAFETY: `host` is null or valid for the life of this context (constructor contracts).
        unsafe { self.host.as_ref() }
    }

    /// Id of the node this slice runs on.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Call `method` of the slice `artifact` (`group:artifact:version`) with encoded request bytes
    /// (see [`crate::RequestBuilder`]: method, path, headers, parameters and body all reach the
    /// callee). The call carries this call's request id and deadline and counts one level deeper.
    /// Failures to reach the slice come back as error responses (503, 504, ...).
    pub fn call(&self, artifact: &str, method: &str, request: &[u8]) -> Response {
        self.call_raw(artifact, method, request, 0)
    }

    /// [`Context::call`] that waits at most `timeout` (never past the deadline of the call it is part
    /// of); past it the answer is a 504.
    pub fn call_with(&self, artifact: &str, method: &str, request: &[u8], timeout: Duration) -> Response {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        self.call_raw(artifact, method, request, ms)
    }

    /// Call with path parameters and a body, encoding them for the callee.
    pub fn call_params(&self, artifact: &str, method: &str, params: &[(&str, &str)], body: &[u8]) -> Response {
        match codec::encode_request(params, &[], body) {
            Ok(bytes) => self.call(artifact, method, &bytes),
            Err(e) => Response::error(Status::BAD_REQUEST, &e.to_string()),
        }
    }

    fn call_raw(&self, artifact: &str, method: &str, request: &[u8], timeout_ms: u64) -> Response {
        let Some(host) = self.host() else {
            return Response::error(Status::SERVICE_UNAVAILABLE, "no host: detached context");
        };
        let mut raw = RawResponse::EMPTY;
        // SAFETY: the table is valid (see `host`); every pointer passed is valid for the call, and
        // `raw` is a valid out-parameter.
        unsafe {
            (host.call)(host.ctx, StrRef::new(artifact), StrRef::new(method), Bytes::new(request), timeout_ms, &mut raw)
        };
        take_response(host, raw)
    }

    /// Publish `message` to `topic`.
    pub fn publish(&self, topic: &str, message: &[u8]) -> Response {
        let Some(host) = self.host() else {
            return Response::error(Status::SERVICE_UNAVAILABLE, "no host: detached context");
        };
        let mut raw = RawResponse::EMPTY;
        // SAFETY: as in `call_raw`.
        unsafe { (host.publish)(host.ctx, StrRef::new(topic), Bytes::new(message), &mut raw) };
        take_response(host, raw)
    }

    /// The call this thread serves: request id, deadline left, calling slice and depth. Empty on a
    /// thread that serves no call (enter a [`crate::CallScope`] to carry the deadline into a thread).
    pub fn invocation(&self) -> Invocation {
        let Some(host) = self.host() else { return Invocation::default() };
        let mut raw = RawInvocation::EMPTY;
        // SAFETY: the table is valid and `raw` a valid out-parameter.
        unsafe { (host.invocation)(host.ctx, &mut raw) };
        let text = |buf: OwnedBuf| {
            let bytes = copy_and_free(host, buf);
            (!bytes.is_empty()).then(|| String::from_utf8_lossy(&bytes).into_owned())
        };
        Invocation {
            request_id: text(raw.request_id),
            caller: text(raw.caller),
            deadline_remaining: (raw.has_deadline != 0).then(|| Duration::from_millis(raw.remaining_ms)),
            depth: raw.depth,
            lease_epoch: (raw.lease_epoch != 0).then_some(raw.lease_epoch),
        }
    }

    /// The slice's cluster state: a namespace of its own in the cluster's replicated store, shared by
    /// every instance and version of this artifact (see [`Kv`]).
    pub fn kv(&self) -> Kv<'_> {
        Kv::new(self)
    }

    /// Log through the host, tagged with this slice's artifact (and the request id of the call).
    pub fn log(&self, level: Level, message: &str) {
        match self.host() {
            // SAFETY: the table is valid; `message` is valid for the call.
            Some(host) => unsafe { (host.log)(host.ctx, level.code(), StrRef::new(message)) },
            None => eprintln!("[{level:?}] {message}"),
        }
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message);
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message);
    }

    /// The current value of config `key`, read live from the host: after the slice accepted a new
    /// config in [`crate::Slice::reconfigure`], this answers the new value.
    pub fn config(&self, key: &str) -> Option<String> {
        let host = self.host()?;
        let mut value = OwnedBuf::EMPTY;
        // SAFETY: the table is valid; `key` is valid for the call and `value` a valid out-parameter.
        let found = unsafe { (host.config)(host.ctx, StrRef::new(key), &mut value) };
        let bytes = copy_and_free(host, value);
        (found == 1).then(|| String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn take_response(host: &HostApi, raw: RawResponse) -> Response {
    let payload = copy_and_free(host, raw.payload);
    let Some(status) = Status::from_code(raw.status) else {
        return Response::error(Status::INTERNAL_SERVER_ERROR, &format!("host answered status {}", raw.status));
    };
    Response::decode(status, &payload).unwrap_or_else(|e| {
        Response::error(Status::INTERNAL_SERVER_ERROR, &format!("host answered a malformed response: {e}"))
    })
}

/// Copy a host-owned buffer into this library's memory and give the original back to the host.
pub(crate) fn copy_and_free(host: &HostApi, buf: OwnedBuf) -> Vec<u8> {
    if buf.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the host wrote `buf` as a valid allocation of `len` initialised bytes.
    let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
    // SAFETY: `buf` came from the host and goes back to the host's free, once.
    unsafe { (host.free)(buf) };
    bytes
}

/// # Safety
/// `text` must point to `len` bytes of valid UTF-8 that outlive the returned reference.
pub(crate) unsafe fn str_from<'a>(text: StrRef) -> &'a str {
    if text.len == 0 {
        return "";
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(text.ptr, text.len)) }
}

/// A slice's config: key/value pairs given to `start` (and to `reconfigure`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pairs: Vec<(String, String)>,
}

impl Config {
    /// Decode config bytes (the request encoding, see [`crate::codec`]).
    pub fn parse(bytes: &[u8]) -> Result<Config, CodecError> {
        if bytes.is_empty() {
            return Ok(Config::default());
        }
        let request = codec::Request::parse(bytes)?;
        Ok(Config { pairs: request.params().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() })
    }

    /// A config from pairs (for tests and direct use).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Config {
        Config { pairs: pairs.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect() }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}
