//! The way out for slice-to-slice calls whose callee has no instance on this node.
//!
//! The container knows nothing about the cluster: the node installs a [`RemoteCall`] with
//! [`crate::Container::set_remote`], and a nested call that finds no local ACTIVE instance goes
//! through it (for example, forwarded to a node that hosts the callee). The container keeps only a
//! weak reference, so the hook's owner (which usually holds the container) decides its lifetime and
//! no reference cycle forms.
//!
//! A call carries a [`CallContext`] on its worker thread: the deadline of the outer call, the cluster
//! hops and slice-to-slice depth of its causal chain, the request id of the client request it serves
//! and the slice that called it. A nested call receives it (one level deeper, this slice as its caller),
//! so deadlines shrink along a chain across nodes, the chain's length stays bounded, and the request id
//! follows the chain. Slices read it through the host's `invocation` callback.
//!
//! Slice code can carry the context into a thread it starts: the host hands it out as a
//! [`aether_sdk::abi::RawCallScope`] (deadline as milliseconds left, hops) and installs it again on the
//! other thread (`to_scope`, `from_scope`), so the deadline stays the one set when the client's
//! request arrived (later by at most the time between taking the scope and entering it, such as a thread's
//! start, plus a millisecond of rounding) and hops keep counting. A thread that runs no call
//! has the empty context: no deadline, hops 0.
//!
//! Invariant: a remote call runs inline on the calling worker, like a local nested call, under the
//! same depth limit; it blocks that worker for at most the context's deadline.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_sdk::abi::RawCallScope;
use aether_sdk::Response;

use crate::error::CallError;

/// Where a call came from and how long it may take, as seen by the slice code running it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// When the outer call's caller stops waiting; `None` for a call without a deadline.
    pub deadline: Option<Instant>,
    /// Cluster hops of the causal chain so far (0: the call started on this node).
    pub hops: u8,
    /// Slice-to-slice calls between the client's request and this call (0: called from HTTP).
    pub depth: u32,
    /// The request id of the client request the chain serves, when known.
    pub request_id: Option<Arc<str>>,
    /// `group:artifact:version` of the slice that made this call, for a slice-to-slice call.
    pub caller: Option<Arc<str>>,
    /// The lease epoch the called instance serves at, for a single-active slice (0: none). The node sets it
    /// per call; the container only hands it to the slice (nested calls start at 0 again).
    pub lease_epoch: u64,
    /// The versions the request's chain is pinned to (see `invoke::versions`); nested calls carry them on.
    pub pins: Option<invoke::versions::SharedPins>,
}

impl CallContext {
    /// A context with a deadline and hops only (no request id, caller or depth).
    pub fn with_deadline(deadline: Option<Instant>, hops: u8) -> CallContext {
        CallContext { deadline, hops, ..CallContext::default() }
    }
}

/// Reaches slices that have no instance on this node.
pub trait RemoteCall: Send + Sync {
    /// Call `method` of `artifact` elsewhere with encoded request bytes, within `context`'s deadline.
    fn call(&self, artifact: &str, method: &str, request: &[u8], context: CallContext) -> Result<Response, CallError>;

    /// Whether calls to `artifact` go through this hook even when this node has an instance of it (the hook
    /// chooses the instance: a placement policy, or one instance serving at a time). Defaults to never.
    fn places(&self, artifact: &str) -> bool {
        let _ = artifact;
        false
    }
}

thread_local! {
    static CONTEXT: RefCell<CallContext> = const {
        RefCell::new(CallContext {
            deadline: None,
            hops: 0,
            depth: 0,
            request_id: None,
            caller: None,
            lease_epoch: 0,
            pins: None,
        })
    };
}

/// The context of the call running on this thread.
#[cfg(test)]
pub(crate) fn current() -> CallContext {
    CONTEXT.with(|c| c.borrow().clone())
}

/// Runs `f` with the context of the call running on this thread, without copying it.
pub(crate) fn with_current<T>(f: impl FnOnce(&CallContext) -> T) -> T {
    CONTEXT.with(|c| f(&c.borrow()))
}

/// Run `body` with `context` as this thread's call context, restoring the previous one after
/// (also when unwinding).
pub(crate) fn with_context<T>(context: CallContext, body: impl FnOnce() -> T) -> T {
    struct Restore(Option<CallContext>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                CONTEXT.with(|c| *c.borrow_mut() = previous);
            }
        }
    }
    let _restore = Restore(Some(CONTEXT.with(|c| c.replace(context))));
    body()
}

/// `context` as a scope to hand across the boundary, its deadline measured from `now`. (A scope
/// carries the deadline and hops only: the request id, caller and depth stay with the calling thread.)
pub(crate) fn to_scope(context: &CallContext, now: Instant) -> RawCallScope {
    let remaining = context.deadline.map(|deadline| deadline.saturating_duration_since(now));
    RawCallScope {
        has_deadline: u32::from(remaining.is_some()),
        hops: u32::from(context.hops),
        // Rounded up, so a deadline not yet past is not made past by the rounding.
        remaining_ms: remaining.map_or(0, |r| u64::try_from(r.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)),
    }
}

/// The context a scope taken with [`to_scope`] stands for, its deadline measured from `now`.
pub(crate) fn from_scope(scope: RawCallScope, now: Instant) -> CallContext {
    let deadline = (scope.has_deadline != 0).then(|| {
        // A deadline too far to represent is as good as none, but keep it a deadline: far ahead.
        let far = Duration::from_secs(u32::MAX.into());
        now.checked_add(Duration::from_millis(scope.remaining_ms)).or_else(|| now.checked_add(far)).unwrap_or(now)
    });
    CallContext::with_deadline(deadline, u8::try_from(scope.hops).unwrap_or(u8::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_nest_and_restore() {
        assert_eq!(current(), CallContext::default());
        let outer =
            CallContext { request_id: Some("req-1".into()), ..CallContext::with_deadline(Some(Instant::now()), 2) };
        with_context(outer.clone(), || {
            assert_eq!(current(), outer);
            let inner =
                CallContext { depth: 1, caller: Some("g:a:1.0.0".into()), ..CallContext::with_deadline(None, 3) };
            with_context(inner.clone(), || assert_eq!(current(), inner));
            assert_eq!(current(), outer);
        });
        assert_eq!(current(), CallContext::default());
    }

    #[test]
    fn scopes_carry_the_deadline_and_hops_across_threads() {
        let now = Instant::now();
        let context = CallContext::with_deadline(Some(now + Duration::from_millis(1500)), 3);
        let scope = to_scope(&context, now);
        assert_eq!(scope, RawCallScope { has_deadline: 1, hops: 3, remaining_ms: 1500 });
        assert_eq!(from_scope(scope, now), context);

        // A deadline already past stays past; one a fraction of a millisecond ahead is not cut short.
        let past = CallContext::with_deadline(Some(now), 1);
        let later = now + Duration::from_millis(5);
        assert_eq!(to_scope(&past, later).remaining_ms, 0);
        assert_eq!(from_scope(to_scope(&past, later), later).deadline, Some(later));
        let close = CallContext::with_deadline(Some(now + Duration::from_micros(300)), 0);
        assert_eq!(to_scope(&close, now).remaining_ms, 1);

        // No call: no deadline, no hops, both ways.
        assert_eq!(to_scope(&CallContext::default(), now), RawCallScope::default());
        assert_eq!(from_scope(RawCallScope::default(), now), CallContext::default());
        // Hops beyond what a context counts saturate instead of wrapping.
        assert_eq!(from_scope(RawCallScope { has_deadline: 0, hops: 300, remaining_ms: 0 }, now).hops, u8::MAX);
    }
}
