//! The host side of the boundary: the callback table a slice gets in `start`.
//!
//! Each instance owns one [`HostBlock`]: a [`HostCtx`] (who is calling: artifact, node, live config,
//! and a weak link back to the container) and the [`HostApi`] table pointing at it. Both stay at a
//! fixed address from `start` until the instance is dropped, and are leaked instead of freed when
//! code may still run in the slice (see `Instance`).
//!
//! Besides calls, logs, config and publishing, the table hands out the calling thread's call
//! context as a scope and installs a scope on another thread for the length of a slice closure (see
//! [`crate::remote`]), so threads a slice starts inside a call keep the call's deadline and hops; it
//! answers the invocation the thread serves (request id, deadline, caller, depth), and runs the
//! slice's cluster-state operations (see [`crate::host_kv`]).
//!
//! Invariants: no callback lets a panic escape (each body runs under `catch_unwind`); a nested call
//! without a timeout of its own runs inline on the calling thread, so slice-to-slice calls never wait
//! for a free worker and cannot deadlock the pool; one with a timeout to a local callee runs on the
//! worker pool, which answers 504 past it (a pool with no free worker answers that too, never hangs);
//! nesting deeper than [`CALL_DEPTH_MAX`] is refused. A callee with no instance here is reached
//! through the container's [`crate::RemoteCall`] hook, inline as well, with the earlier of the outer
//! deadline and the timeout. Every nested call carries the outer call's request id, one more level
//! of depth, and the calling slice as its caller. The panic text of a callee never reaches the caller.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use aether_sdk::abi::{self, Bytes, HostApi, OwnedBuf, RawCallScope, RawInvocation, RawResponse, ScopeBodyFn, StrRef};
use aether_sdk::export::write_response;
use aether_sdk::{Response, Status};
use parking_lot::RwLock;

use crate::error::CallError;
use crate::remote::{self, CallContext};
use crate::{InstanceId, Shared};

/// Deepest chain of nested slice-to-slice calls on one node.
pub const CALL_DEPTH_MAX: u32 = 16;

/// What the host knows about the instance a callback comes from.
pub(crate) struct HostCtx {
    pub shared: Weak<Shared>,
    pub artifact: String,
    /// The artifact as shared text, handed to callees as their caller.
    pub artifact_shared: Arc<str>,
    pub instance: InstanceId,
    /// The slice's methods (a watch must name one).
    pub methods: Vec<String>,
    pub node_id: String,
    pub config: RwLock<Vec<(String, String)>>,
}

/// The context and the table that points at it, at stable heap addresses.
pub(crate) struct HostBlock {
    ctx: *mut HostCtx,
    api: *mut HostApi,
}

// SAFETY: `HostCtx` is Send + Sync (its fields are), `HostApi` is read-only after construction, and
// the raw pointers are owned uniquely by this block.
unsafe impl Send for HostBlock {}
// SAFETY: as above; shared access only reads the table or goes through `HostCtx`'s locks.
unsafe impl Sync for HostBlock {}

impl HostBlock {
    pub fn new(ctx: HostCtx) -> HostBlock {
        let ctx = Box::into_raw(Box::new(ctx));
        // SAFETY: `ctx` was just made from a Box and is valid; the node id string is not moved or
        // changed while the block lives.
        let node_id = StrRef::new(unsafe { &(*ctx).node_id });
        let api = Box::into_raw(Box::new(HostApi {
            abi_version: abi::ABI_VERSION,
            ctx: ctx.cast_const().cast(),
            node_id,
            call: host_call,
            log: host_log,
            config: host_config,
            publish: host_publish,
            free: host_free,
            call_scope: host_call_scope,
            enter_scope: host_enter_scope,
            invocation: host_invocation,
            kv: crate::host_kv::host_kv,
        }));
        HostBlock { ctx, api }
    }

    pub fn api(&self) -> *const HostApi {
        self.api
    }

    pub fn ctx(&self) -> &HostCtx {
        // SAFETY: `ctx` is valid until `free` (which takes the block by value).
        unsafe { &*self.ctx }
    }

    /// Free the context and the table. Only when no slice code can use them any more.
    pub fn free(self) {
        // SAFETY: both pointers came from `Box::into_raw` in `new` and are freed once, here.
        unsafe {
            drop(Box::from_raw(self.api));
            drop(Box::from_raw(self.ctx));
        }
    }
}

/// # Safety
/// `ctx` is the `HostCtx` of a live `HostBlock` (the slice got it in `start`).
pub(crate) unsafe fn host_ctx<'a>(ctx: *const c_void) -> &'a HostCtx {
    // SAFETY: guaranteed by the caller.
    unsafe { &*ctx.cast::<HostCtx>() }
}

/// # Safety
/// `bytes` points to `len` readable bytes valid for the call.
pub(crate) unsafe fn borrowed<'a>(ptr: *const u8, len: usize) -> &'a [u8] {
    if len == 0 || ptr.is_null() {
        return &[];
    }
    // SAFETY: guaranteed by the caller.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

/// The answer a slice gets when its call failed on the way. A callee's panic text stays in the log:
/// the caller learns only that the callee failed.
pub(crate) fn error_response(error: &CallError) -> Response {
    let status = Status::new(error.http_status()).unwrap_or(Status::INTERNAL_SERVER_ERROR);
    let detail = match error {
        CallError::Panicked { artifact, .. } => format!("{artifact} failed"),
        other => other.to_string(),
    };
    let kind = if matches!(error, CallError::Panicked { .. }) { "internal" } else { error.kind() };
    let body = aether_sdk::json::Object::new().str("error", kind).str("detail", &detail).finish();
    Response::new(status, aether_sdk::ContentType::Json.mime(), body.into_bytes())
}

/// The context a nested call of `ctx`'s slice runs in: the outer call's request id and hops, one level
/// deeper, this slice as its caller, and the earlier of the outer deadline and `timeout`.
fn callee_context(ctx: &HostCtx, outer: &CallContext, timeout: Option<Duration>, now: Instant) -> CallContext {
    let own = timeout.and_then(|t| now.checked_add(t));
    let deadline = match (outer.deadline, own) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    CallContext {
        deadline,
        hops: outer.hops,
        depth: outer.depth.saturating_add(1),
        request_id: outer.request_id.clone(),
        caller: Some(Arc::clone(&ctx.artifact_shared)),
        lease_epoch: 0,
        pins: outer.pins.clone(),
    }
}

fn nested_call(
    ctx: &HostCtx,
    artifact: &[u8],
    method: &[u8],
    request: &[u8],
    timeout: Option<Duration>,
) -> Result<Response, CallError> {
    let (Ok(artifact), Ok(method)) = (std::str::from_utf8(artifact), std::str::from_utf8(method)) else {
        return Err(CallError::BadRequest { detail: "artifact and method must be UTF-8".into() });
    };
    let shared = ctx.shared.upgrade().ok_or(CallError::ShuttingDown)?;
    let hook = shared.remote();
    let placed = hook.as_ref().is_some_and(|h| h.places(artifact));
    let local = if placed { None } else { shared.find_active(artifact) };
    let remote = if local.is_none() { hook } else { None };
    if local.is_none() && remote.is_none() {
        return Err(CallError::NoInstance { artifact: artifact.to_owned() });
    }
    let context = remote::with_current(|outer| callee_context(ctx, outer, timeout, Instant::now()));
    if context.depth > CALL_DEPTH_MAX {
        return Err(CallError::TooDeep { depth_max: CALL_DEPTH_MAX });
    }
    match (local, remote) {
        (Some(target), _) => match timeout {
            // A timeout of its own: on the pool, which answers at the deadline whatever the callee does.
            Some(_) => {
                let left = context.deadline.map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
                crate::run_pooled(&shared, target, method, request.to_vec(), left, context)
            }
            None => remote::with_context(context, || target.call(method, request)),
        },
        (None, Some(remote)) => remote.call(artifact, method, request, context),
        (None, None) => Err(CallError::NoInstance { artifact: artifact.to_owned() }),
    }
}

unsafe extern "C" fn host_call(
    ctx: *const c_void,
    artifact: StrRef,
    method: StrRef,
    request: Bytes,
    timeout_ms: u64,
    out: *mut RawResponse,
) {
    let answer = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the slice passes back the ctx and borrowed buffers valid for this call (ABI contract).
        let (ctx, artifact, method, request) = unsafe {
            (
                host_ctx(ctx),
                borrowed(artifact.ptr, artifact.len),
                borrowed(method.ptr, method.len),
                borrowed(request.ptr, request.len),
            )
        };
        let timeout = (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms));
        nested_call(ctx, artifact, method, request, timeout).unwrap_or_else(|e| error_response(&e))
    }));
    let response = answer.unwrap_or_else(|p| {
        log::error!("slice call through the host failed: {}", aether_sdk::export::panic_message(p.as_ref()));
        Response::error(Status::INTERNAL_SERVER_ERROR, "the host failed to make the call")
    });
    // SAFETY: `out` is valid for writes (ABI contract).
    unsafe { write_response(out, response) };
}

unsafe extern "C" fn host_invocation(_ctx: *const c_void, out: *mut RawInvocation) {
    let taken = catch_unwind(|| {
        remote::with_current(|context| {
            let remaining = context.deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let text = |t: &Option<Arc<str>>| t.as_deref().map_or(OwnedBuf::EMPTY, |t| OwnedBuf::from_vec(t.into()));
            RawInvocation {
                has_deadline: u32::from(remaining.is_some()),
                depth: context.depth,
                remaining_ms: remaining.map_or(0, |r| u64::try_from(r.as_millis()).unwrap_or(u64::MAX)),
                request_id: text(&context.request_id),
                caller: text(&context.caller),
                lease_epoch: context.lease_epoch,
            }
        })
    });
    if !out.is_null() {
        // SAFETY: `out` is non-null and valid for writes (ABI contract).
        unsafe { out.write(taken.unwrap_or(RawInvocation::EMPTY)) };
    }
}

unsafe extern "C" fn host_log(ctx: *const c_void, level: u32, message: StrRef) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx and message are valid for this call (ABI contract).
        let (ctx, message) = unsafe { (host_ctx(ctx), borrowed(message.ptr, message.len)) };
        let level = match level {
            abi::log_level::ERROR => log::Level::Error,
            abi::log_level::WARN => log::Level::Warn,
            abi::log_level::INFO => log::Level::Info,
            abi::log_level::DEBUG => log::Level::Debug,
            _ => log::Level::Trace,
        };
        log::log!(target: "slice", level, "{}: {}", ctx.artifact, String::from_utf8_lossy(message));
    }));
}

unsafe extern "C" fn host_config(ctx: *const c_void, key: StrRef, value: *mut OwnedBuf) -> u32 {
    let found = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx and key are valid for this call (ABI contract).
        let (ctx, key) = unsafe { (host_ctx(ctx), borrowed(key.ptr, key.len)) };
        let config = ctx.config.read();
        config.iter().find(|(k, _)| k.as_bytes() == key).map(|(_, v)| v.clone().into_bytes())
    }));
    match found {
        Ok(Some(bytes)) if !value.is_null() => {
            // SAFETY: `value` is non-null and valid for writes (ABI contract).
            unsafe { value.write(OwnedBuf::from_vec(bytes)) };
            1
        }
        _ => 0,
    }
}

unsafe extern "C" fn host_publish(ctx: *const c_void, topic: StrRef, message: Bytes, out: *mut RawResponse) {
    let response = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: ctx, topic and message are valid for this call (ABI contract).
        let (ctx, topic, message) =
            unsafe { (host_ctx(ctx), borrowed(topic.ptr, topic.len), borrowed(message.ptr, message.len)) };
        publish(ctx, topic, message)
    }))
    .unwrap_or_else(|_| Response::error(Status::Internal, "host failed"));
    // SAFETY: `out` is valid for writes (ABI contract).
    unsafe { write_response(out, response) };
}

/// `ctx.publish`: 202 `{"id", "topic"}` once the message is stored, else the node's error status.
fn publish(ctx: &HostCtx, topic: &[u8], message: &[u8]) -> Response {
    let Ok(topic) = std::str::from_utf8(topic) else {
        return Response::error(Status::BadRequest, "the topic is not UTF-8");
    };
    let publisher = ctx.shared.upgrade().and_then(|shared| shared.publisher());
    let Some(publisher) = publisher else {
        return Response::error(Status::Unavailable, &format!("topic `{topic}`: publishing is not available here"));
    };
    let deadline = remote::with_current(|c| c.deadline)
        .map_or(crate::publish::PUBLISH_DEADLINE_DEFAULT, |at| at.saturating_duration_since(Instant::now()));
    if deadline.is_zero() {
        return Response::error(Status::GATEWAY_TIMEOUT, "the call's deadline passed before the publish");
    }
    match publisher.publish(&ctx.artifact, topic, message, deadline) {
        Ok(id) => {
            let body = aether_sdk::json::Object::new().str("id", &id).str("topic", topic).finish();
            Response::new(Status::ACCEPTED, aether_sdk::ContentType::Json.mime(), body.into_bytes())
        }
        Err(e) => {
            let status = Status::new(e.status).unwrap_or(Status::INTERNAL_SERVER_ERROR);
            let body = aether_sdk::json::Object::new().str("error", "publish").str("detail", &e.detail).finish();
            Response::new(status, aether_sdk::ContentType::Json.mime(), body.into_bytes())
        }
    }
}

unsafe extern "C" fn host_call_scope(_ctx: *const c_void, scope: *mut RawCallScope) {
    let taken = catch_unwind(|| remote::with_current(|context| remote::to_scope(context, Instant::now())));
    if !scope.is_null() {
        // SAFETY: `scope` is non-null and valid for writes (ABI contract).
        unsafe { scope.write(taken.unwrap_or_default()) };
    }
}

unsafe extern "C" fn host_enter_scope(_ctx: *const c_void, scope: RawCallScope, body: ScopeBodyFn, data: *mut c_void) {
    let context = remote::from_scope(scope, Instant::now());
    // SAFETY: `body` and `data` come from the slice, which keeps `data` valid for the call and
    // guarantees `body` does not unwind (ABI contract); the guard is for the host's own code.
    let _ = catch_unwind(AssertUnwindSafe(|| remote::with_context(context, || unsafe { body(data) })));
}

unsafe extern "C" fn host_free(buf: OwnedBuf) {
    // SAFETY: the buffer was made by `OwnedBuf::from_vec` in this host and comes back once.
    drop(unsafe { buf.into_vec() });
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    unsafe extern "C" fn record_context(data: *mut c_void) {
        // SAFETY: the test passes a valid `Option<CallContext>`.
        unsafe { data.cast::<Option<CallContext>>().write(Some(remote::current())) };
    }

    fn taken_here() -> RawCallScope {
        let mut scope = RawCallScope { has_deadline: 9, hops: 9, remaining_ms: 9 };
        // SAFETY: `scope` is a valid out-parameter; the callback ignores `ctx`.
        unsafe { host_call_scope(std::ptr::null(), &mut scope) };
        scope
    }

    #[test]
    fn a_scope_taken_in_a_call_carries_its_deadline_and_hops_to_another_thread() {
        let deadline = Instant::now() + Duration::from_secs(2);
        let scope = remote::with_context(CallContext::with_deadline(Some(deadline), 3), taken_here);
        assert_eq!((scope.has_deadline, scope.hops), (1, 3));
        assert!(scope.remaining_ms > 1_000 && scope.remaining_ms <= 2_000, "{scope:?}");

        let (inside, after) = std::thread::spawn(move || {
            let mut inside: Option<CallContext> = None;
            // SAFETY: `record_context` writes the `Option<CallContext>` that `inside` is.
            unsafe {
                host_enter_scope(std::ptr::null(), scope, record_context, (&mut inside as *mut Option<_>).cast())
            };
            (inside, remote::current())
        })
        .join()
        .unwrap();
        let inside = inside.expect("the body ran");
        assert_eq!(inside.hops, 3);
        let carried = inside.deadline.expect("the deadline crossed the thread");
        assert!(carried >= deadline && carried <= deadline + Duration::from_millis(5), "{carried:?} vs {deadline:?}");
        assert_eq!(after, CallContext::default(), "the thread's own context comes back after the body");
    }

    #[test]
    fn a_scope_taken_outside_any_call_is_empty() {
        assert_eq!(taken_here(), RawCallScope::default());
    }
}
