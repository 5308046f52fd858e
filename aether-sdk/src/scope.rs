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

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::abi::{self, Bytes, OwnedBuf, RawResponse, ScopeBodyFn, StrRef};

    thread_local! {
        /// The scope the fake host has installed on this thread.
        static INSTALLED: Cell<Option<RawCallScope>> = const { Cell::new(None) };
    }

    const TAKEN: RawCallScope = RawCallScope { has_deadline: 1, hops: 4, remaining_ms: 250 };

    unsafe extern "C" fn call(_: *const c_void, _: StrRef, _: StrRef, _: Bytes, _: u64, _: *mut RawResponse) {}
    unsafe extern "C" fn invocation(_: *const c_void, _: *mut abi::RawInvocation) {}
    unsafe extern "C" fn kv(_: *const c_void, _: *const abi::RawKvRequest, _: *mut RawResponse) {}
    unsafe extern "C" fn log(_: *const c_void, _: u32, _: StrRef) {}
    unsafe extern "C" fn config(_: *const c_void, _: StrRef, _: *mut OwnedBuf) -> u32 {
        0
    }
    unsafe extern "C" fn publish(_: *const c_void, _: StrRef, _: Bytes, _: *mut RawResponse) {}
    unsafe extern "C" fn free(_: OwnedBuf) {}
    unsafe extern "C" fn call_scope(_: *const c_void, scope: *mut RawCallScope) {
        // SAFETY: the SDK passes a valid out-parameter.
        unsafe { scope.write(INSTALLED.with(Cell::get).unwrap_or(TAKEN)) };
    }
    unsafe extern "C" fn enter_scope(_: *const c_void, scope: RawCallScope, body: ScopeBodyFn, data: *mut c_void) {
        let previous = INSTALLED.with(|s| s.replace(Some(scope)));
        // SAFETY: the SDK passes its own body and data, and the body does not unwind.
        unsafe { body(data) };
        INSTALLED.with(|s| s.set(previous));
    }

    fn fake_host() -> Context {
        let api = Box::leak(Box::new(HostApi {
            abi_version: abi::ABI_VERSION,
            ctx: std::ptr::null(),
            node_id: StrRef::new("node-t"),
            call,
            log,
            config,
            publish,
            free,
            call_scope,
            enter_scope,
            invocation,
            kv,
        }));
        // SAFETY: the table is leaked, so valid for the rest of the test process, and thread-safe.
        unsafe { Context::from_host(api) }
    }

    #[test]
    fn a_scope_taken_in_a_call_is_installed_on_the_thread_that_enters_it() {
        let ctx = fake_host();
        let scope = CallScope::current(&ctx);
        assert_eq!((scope.remaining(), scope.hops()), (Some(Duration::from_millis(250)), 4));
        let seen = std::thread::spawn(move || {
            let inside = scope.enter(|| INSTALLED.with(Cell::get));
            (inside, INSTALLED.with(Cell::get))
        })
        .join()
        .unwrap();
        assert_eq!(seen, (Some(TAKEN), None), "installed for the closure only");

        // `spawn_in_call` takes the scope of the thread that spawns, here one that entered another.
        let other = RawCallScope { has_deadline: 0, hops: 1, remaining_ms: 0 };
        let nested = CallScope { raw: other, ..scope }
            .enter(|| spawn_in_call(&ctx, || INSTALLED.with(Cell::get)).join().unwrap());
        assert_eq!(nested, Some(other));
    }

    #[test]
    fn a_panic_in_an_entered_scope_resumes_on_the_slice_side_and_the_scope_is_left() {
        let scope = CallScope::current(&fake_host());
        let outcome = catch_unwind(AssertUnwindSafe(|| scope.enter(|| panic!("inside the scope"))));
        let payload = outcome.expect_err("the panic comes back out of `enter`");
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"inside the scope"));
        assert_eq!(INSTALLED.with(Cell::get), None);
    }

    #[test]
    fn a_detached_scope_is_empty_and_runs_the_closure_as_is() {
        let scope = CallScope::current(&Context::detached("node-t"));
        assert_eq!((scope.remaining(), scope.hops()), (None, 0));
        assert_eq!(scope.enter(|| 7), 7);
        assert_eq!(spawn_in_call(&Context::detached("node-t"), || 8).join().unwrap(), 8);
    }
}
