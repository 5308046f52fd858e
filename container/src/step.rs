//! Running one lifecycle step (load, start, stop, unload) on its own thread, with a timeout.
//!
//! A step that finishes in time is joined, so anything its thread set up (thread-local destructors
//! included) is gone before the caller goes on, for example to unload the library. A step that does
//! not finish in time is abandoned: its thread runs on, detached, and the caller must assume code
//! may still be running inside the slice library.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::Duration;

/// How a step ended.
pub(crate) enum StepOutcome<T> {
    Done(T),
    Panicked(String),
    TimedOut,
}

/// Run `step` on a new thread named `name`; wait at most `timeout`.
pub(crate) fn run_step<T: Send + 'static>(
    name: &str,
    timeout: Duration,
    step: impl FnOnce() -> T + Send + 'static,
) -> StepOutcome<T> {
    let (done_tx, done_rx) = mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new().name(name.to_owned()).spawn(move || {
        let outcome = catch_unwind(AssertUnwindSafe(step));
        // The receiver is gone only if the step timed out; the outcome is then dropped here.
        let _ = done_tx.send(outcome);
    });
    let handle = match spawned {
        Ok(handle) => handle,
        Err(e) => return StepOutcome::Panicked(format!("cannot start a thread for {name}: {e}")),
    };
    match done_rx.recv_timeout(timeout) {
        Ok(outcome) => {
            let _ = handle.join();
            match outcome {
                Ok(value) => StepOutcome::Done(value),
                Err(payload) => StepOutcome::Panicked(sdk::export::panic_message(payload.as_ref())),
            }
        }
        Err(_) => StepOutcome::TimedOut,
    }
}
