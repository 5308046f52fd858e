//! Carrying a call's deadline and cluster hops into threads the slice starts.
//!
//! The host knows which call runs on each of its threads and gives nested calls that call's deadline
//! and hop count. A thread the slice starts itself runs no call, so on its own its nested calls get
//! the node's full deadline and count hops from zero. A [`CallScope`] taken on the calling thread
//! ([`CallScope::current`]) and entered on the new one ([`CallScope::enter`], or [`spawn_in_call`]
//! for both at once) makes the new thread's nested calls part of the call again.
//!
//! Invariants: the scope lives on the host side (no thread-local in the slice library, which would
//! keep it mapped); entering restores the thread's previous scope when the closure returns or
//! unwinds; a panic in the closure never crosses the boundary, it resumes on the slice's side.

use std::any::Any;
use std::ffi::c_void;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::abi::{HostApi, RawCallScope};
use crate::Context;

/// The deadline and hops of a call, taken on the thread running it, to be entered on another thread.
#[derive(Clone, Copy, Debug)]
pub struct CallScope {
    host: *const HostApi,
    raw: RawCallScope,
}

// SAFETY: the host table is valid and thread-safe until the slice's `stop` returns (see
// `abi::HostApi`); the scope itself is plain data.
unsafe impl Send for CallScope {}
// SAFETY: as above; nothing in a scope is mutable.
unsafe impl Sync for CallScope {}

impl CallScope {
    /// The scope of the call running on this thread. On a thread that runs no call (one started from
    /// `start`, or a detached context) it has no deadline and no hops, and entering it changes nothing
    /// for the thread's nested calls.
    pub fn current(ctx: &Context) -> CallScope {
        let host = ctx.host_ptr();
        let mut raw = RawCallScope::default();
        // SAFETY: `host` is null or valid while `ctx` is usable (the context's contract).
        if let Some(api) = unsafe { host.as_ref() } {
            // SAFETY: the table is valid and `raw` a valid out-parameter for the call.
            unsafe { (api.call_scope)(api.ctx, &mut raw) };
        }
        CallScope { host, raw }
    }

    /// What was left of the call's deadline when the scope was taken; `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        (self.raw.has_deadline != 0).then(|| Duration::from_millis(self.raw.remaining_ms))
    }

    /// Cluster hops of the call's causal chain.
    pub fn hops(&self) -> u32 {
        self.raw.hops
    }

    /// Run `body` on this thread as part of the call: nested calls made in it get the call's deadline
    /// (counted from when the scope was taken) and its hops. The thread's previous scope comes back
    /// afterwards, also when `body` panics (the panic then continues on this side).
    pub fn enter<T, F: FnOnce() -> T>(&self, body: F) -> T {
        // SAFETY: `host` is null or valid until `stop` returns, and a scope is used only by slice code.
        let Some(api) = (unsafe { self.host.as_ref() }) else {
            return body();
        };
        let mut slot: Slot<F, T> = Slot { body: Some(body), outcome: None };
        // SAFETY: the table is valid; `run_body::<F, T>` matches the data pointer's type, and the slot
        // outlives the call.
        unsafe { (api.enter_scope)(api.ctx, self.raw, run_body::<F, T>, (&mut slot as *mut Slot<F, T>).cast()) };
        match slot.outcome {
            Some(Ok(value)) => value,
            Some(Err(payload)) => resume_unwind(payload),
            // The host did not run the body: run it here, outside the scope, so it still runs once.
            None => match slot.body.take() {
                Some(body) => body(),
                None => unreachable!("a body that ran always leaves an outcome"),
            },
        }
    }
}

/// Start a thread that runs `body` as part of the call running on this thread (see
/// [`CallScope::enter`]). Join it before the call answers, or at the latest in `stop`.
pub fn spawn_in_call<T, F>(ctx: &Context, body: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let scope = CallScope::current(ctx);
    std::thread::spawn(move || scope.enter(body))
}

struct Slot<F, T> {
    body: Option<F>,
    outcome: Option<Result<T, Box<dyn Any + Send>>>,
}

/// # Safety
/// `data` points to a live `Slot<F, T>` not otherwise borrowed during the call.
unsafe extern "C" fn run_body<F: FnOnce() -> T, T>(data: *mut c_void) {
    // SAFETY: guaranteed by the caller (`CallScope::enter`).
    let slot = unsafe { &mut *data.cast::<Slot<F, T>>() };
    if let Some(body) = slot.body.take() {
        slot.outcome = Some(catch_unwind(AssertUnwindSafe(body)));
    }
}
