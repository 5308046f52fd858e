//! Running one lifecycle step (load, start, stop, unload) on its own thread, with a timeout; and finding
//! the threads a slice started from its steps.
//!
//! A step thread is named `sl{instance}:{step}`. On Linux a new thread inherits its creator's name unless it
//! sets one, so the threads a slice starts from a step (and the threads those start) carry the instance in
//! their name, and [`slice_threads`] counts them through `/proc/self/task`. Threads a slice names itself, or
//! starts from a call (calls run on the node's threads), are not seen; elsewhere than on Linux none are.
//!
//! A step that finishes in time is joined, so anything its thread set up (thread-local destructors
//! included) is gone before the caller goes on, for example to unload the library. A step that does
//! not finish in time is abandoned: its thread runs on, detached, and the caller must assume code
//! may still be running inside the slice library.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::InstanceId;

/// The name of the thread that runs `step` of instance `id` (at most 15 bytes for ids below 10^8).
pub(crate) fn step_thread_name(id: InstanceId, step: &str) -> String {
    format!("sl{id}:{step}")
}

/// Threads of this process whose name says they were started from a step of instance `id`, the step
/// threads themselves included.
pub(crate) fn slice_threads(id: InstanceId) -> usize {
    let prefix = format!("sl{id}:");
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    let named = |task: std::fs::DirEntry| std::fs::read_to_string(task.path().join("comm")).ok();
    tasks.filter_map(Result::ok).filter_map(named).filter(|name| name.starts_with(&prefix)).count()
}

/// Waits up to `bound` for every thread of instance `id` to end; returns how many still run.
pub(crate) fn wait_for_slice_threads(id: InstanceId, bound: Duration) -> usize {
    let until = Instant::now() + bound;
    loop {
        let left = slice_threads(id);
        if left == 0 || Instant::now() >= until {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

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
                Err(payload) => StepOutcome::Panicked(aether_sdk::export::panic_message(payload.as_ref())),
            }
        }
        Err(_) => StepOutcome::TimedOut,
    }
}
