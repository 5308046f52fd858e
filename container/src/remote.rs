//! The way out for slice-to-slice calls whose callee has no instance on this node.
//!
//! The container knows nothing about the cluster: the node installs a [`RemoteCall`] with
//! [`crate::Container::set_remote`], and a nested call that finds no local ACTIVE instance goes
//! through it (for example, forwarded to a node that hosts the callee). The container keeps only a
//! weak reference, so the hook's owner (which usually holds the container) decides its lifetime and
//! no reference cycle forms.
//!
//! A call carries a [`CallContext`] on its worker thread: the deadline of the outer call and the
//! cluster hops of its causal chain. A nested remote call receives it, so deadlines shrink along a
//! chain across nodes and the chain's length stays bounded.
//!
//! Invariant: a remote call runs inline on the calling worker, like a local nested call, under the
//! same depth limit; it blocks that worker for at most the context's deadline.

use std::cell::Cell;
use std::time::Instant;

use sdk::Response;

use crate::error::CallError;

/// Where a call came from and how long it may take, as seen by the slice code running it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallContext {
    /// When the outer call's caller stops waiting; `None` for a call without a deadline.
    pub deadline: Option<Instant>,
    /// Cluster hops of the causal chain so far (0: the call started on this node).
    pub hops: u8,
}

/// Reaches slices that have no instance on this node.
pub trait RemoteCall: Send + Sync {
    /// Call `method` of `artifact` elsewhere with encoded request bytes, within `context`'s deadline.
    fn call(&self, artifact: &str, method: &str, request: &[u8], context: CallContext) -> Result<Response, CallError>;
}

thread_local! {
    static CONTEXT: Cell<CallContext> = const { Cell::new(CallContext { deadline: None, hops: 0 }) };
}

/// The context of the call running on this thread.
pub(crate) fn current() -> CallContext {
    CONTEXT.with(Cell::get)
}

/// Run `body` with `context` as this thread's call context, restoring the previous one after
/// (also when unwinding).
pub(crate) fn with_context<T>(context: CallContext, body: impl FnOnce() -> T) -> T {
    struct Restore(CallContext);
    impl Drop for Restore {
        fn drop(&mut self) {
            CONTEXT.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CONTEXT.with(|c| c.replace(context)));
    body()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_nest_and_restore() {
        assert_eq!(current(), CallContext::default());
        let outer = CallContext { deadline: Some(Instant::now()), hops: 2 };
        with_context(outer, || {
            assert_eq!(current(), outer);
            let inner = CallContext { deadline: None, hops: 3 };
            with_context(inner, || assert_eq!(current(), inner));
            assert_eq!(current(), outer);
        });
        assert_eq!(current(), CallContext::default());
    }
}
