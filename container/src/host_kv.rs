//! The host side of `ctx.kv()`: the `kv` callback of the table a slice gets, which runs one
//! cluster-state operation on the node's [`SliceState`](crate::state::SliceState) for the calling
//! instance.
//!
//! The container only carries the operation: it names the calling instance's artifact (and, for a
//! watch, its instance id) and gives the call's remaining deadline ([`KV_DEADLINE_DEFAULT`] when the
//! calling thread serves no call, or a call without a deadline); the node's implementation picks the
//! namespace and enforces quotas. A watch must name one of the slice's methods.
//!
//! Invariants: no panic escapes the callback; a container without an installed state, or one that
//! is going away, answers `Unavailable` and touches nothing; the key or prefix must be UTF-8 (else
//! `Invalid`); a deadline already past answers `Timeout` without calling the store.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use aether_sdk::abi::{kv_op, OwnedBuf, RawKvRequest, RawResponse};
use aether_sdk::kv::{self, KvError};

use crate::host::{borrowed, host_ctx, HostCtx};
use crate::remote;
use crate::state::StateError;

/// How long a cluster-state operation may take when the calling thread has no call deadline.
pub const KV_DEADLINE_DEFAULT: Duration = Duration::from_secs(5);

/// What the slice sees of a [`StateError`].
fn to_kv_error(error: StateError) -> KvError {
    match error {
        StateError::VersionMismatch { current } => KvError::VersionMismatch { current },
        StateError::TooLarge { what, limit } => KvError::TooLarge { what: what.to_owned(), limit },
        StateError::QuotaExceeded { what, limit } => KvError::QuotaExceeded { what: what.to_owned(), limit },
        StateError::Invalid(why) => KvError::Invalid(why),
        StateError::Unavailable(why) => KvError::Unavailable(why),
        StateError::Timeout => KvError::Timeout,
    }
}

/// Run `request` for the instance of `ctx`; the answer's payload as `abi::kv_op` lays it out.
fn run(ctx: &HostCtx, request: &RawKvRequest, key: &[u8], value: &[u8]) -> Result<Vec<u8>, KvError> {
    let shared = ctx.shared.upgrade().ok_or_else(|| KvError::Unavailable("the node is stopping".into()))?;
    let state = shared.slice_state().ok_or_else(|| KvError::Unavailable("no cluster state on this node".into()))?;
    let key = std::str::from_utf8(key).map_err(|_| KvError::Invalid("the key is not UTF-8".into()))?;
    let deadline = remote::with_current(|c| c.deadline)
        .map_or(KV_DEADLINE_DEFAULT, |at| at.saturating_duration_since(Instant::now()));
    if deadline.is_zero() && request.op != kv_op::WATCH {
        return Err(KvError::Timeout);
    }
    let artifact = ctx.artifact.as_str();
    let answer = match request.op {
        kv_op::GET => {
            state.get(artifact, key, deadline).map(|e| kv::encode_get(e.as_ref().map(|e| (e.version, &e.value[..]))))
        }
        kv_op::PUT => state.put(artifact, key, value, deadline).map(kv::encode_version),
        kv_op::DELETE => state.delete(artifact, key, deadline).map(kv::encode_deleted),
        kv_op::COMPARE_AND_SET => {
            let expected = (request.has_expected != 0).then_some(request.expected);
            state.compare_and_set(artifact, key, expected, value, deadline).map(kv::encode_version)
        }
        kv_op::LIST => {
            let limit = usize::try_from(request.limit).unwrap_or(usize::MAX);
            state
                .list(artifact, key, limit, deadline)
                .map(|entries| kv::encode_list(entries.iter().map(|e| (e.key.as_str(), e.version, &e.value[..]))))
        }
        kv_op::WATCH => {
            let method = std::str::from_utf8(value).map_err(|_| KvError::Invalid("the method is not UTF-8".into()))?;
            if !ctx.methods.iter().any(|m| m == method) {
                return Err(KvError::Invalid(format!(
                    "{} has no method `{method}` to deliver changes to",
                    ctx.artifact
                )));
            }
            state.watch(artifact, ctx.instance, key, method).map(|()| Vec::new())
        }
        other => return Err(KvError::Invalid(format!("unknown cluster-state operation {other}"))),
    };
    answer.map_err(to_kv_error)
}

/// The `kv` callback of the host table.
///
/// # Safety
/// `ctx` is the `HostCtx` of a live instance; `request` points to a request whose key and value are
/// valid for the call; `out` is null or valid for writes (ABI contract).
pub(crate) unsafe extern "C" fn host_kv(ctx: *const c_void, request: *const RawKvRequest, out: *mut RawResponse) {
    let answer = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: guaranteed by the caller (ABI contract).
        let Some(request) = (unsafe { request.as_ref() }) else {
            return Err(KvError::Invalid("no request".into()));
        };
        // SAFETY: as above: the ctx is live, key and value are valid for the call.
        let (ctx, key, value) = unsafe {
            (host_ctx(ctx), borrowed(request.key.ptr, request.key.len), borrowed(request.value.ptr, request.value.len))
        };
        run(ctx, request, key, value)
    }));
    let (status, payload) = match answer {
        Ok(Ok(payload)) => (aether_sdk::abi::kv_status::OK, payload),
        Ok(Err(error)) => kv::encode_error(&error),
        Err(_) => kv::encode_error(&KvError::Unavailable("the host failed".into())),
    };
    if !out.is_null() {
        // SAFETY: `out` is non-null and valid for writes (ABI contract).
        unsafe { out.write(RawResponse { status, payload: OwnedBuf::from_vec(payload) }) };
    }
}
