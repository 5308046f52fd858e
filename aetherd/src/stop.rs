//! A bounded stop: once SIGTERM or SIGINT has arrived, the node is gone within a known time, stuck or not.
//!
//! The orderly stop (management, app port, event loop, the final log sync, then slices) runs on the main thread and
//! names each step in a [`Progress`]. A watchdog thread, armed by the first signal, ends the process with
//! [`EXIT_STUCK`] and one log line naming the step still running when the bound passes (a slice that never
//! returns from `stop`, a disk that never finishes a sync), or at once on a second SIGTERM/SIGINT (an operator
//! pressing Ctrl-C twice). The bound defaults to 20 s, below the systemd unit's `TimeoutStopSec=30s`, so the
//! node exits by itself before systemd resorts to SIGKILL; `AETHER_STOP_TIMEOUT_SECS` changes it.
//!
//! Invariant: the watchdog never writes the clean-stop marker and never touches node state; it only exits.
//! The marker is written by the storage after its final sync, before slices are stopped, so a slice that hangs
//! in `stop` does not cost it; a process cut short before the sync is simply an unclean stop (the next start
//! treats it like a crash, which is always safe).

use log::error;
use signal_hook::iterator::Signals;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that sets the bound, in whole seconds.
pub const STOP_TIMEOUT_ENV: &str = "AETHER_STOP_TIMEOUT_SECS";
/// The bound when the environment does not set one: well below the unit's `TimeoutStopSec=30s`.
pub const STOP_TIMEOUT_DEFAULT: Duration = Duration::from_secs(20);
/// Largest accepted bound (an hour); anything longer is a typo.
const STOP_TIMEOUT_MAX_SECS: u64 = 3600;
/// Exit status of a stop the watchdog cut short (by time or by a second signal).
pub const EXIT_STUCK: i32 = 3;
/// How often the watchdog looks for a second signal.
const POLL: Duration = Duration::from_millis(20);

/// Reads the bound from `AETHER_STOP_TIMEOUT_SECS`, or the default when it is unset.
pub fn bound_from_env() -> Result<Duration, String> {
    parse_bound(std::env::var(STOP_TIMEOUT_ENV).ok().as_deref())
}

fn parse_bound(value: Option<&str>) -> Result<Duration, String> {
    let Some(text) = value else { return Ok(STOP_TIMEOUT_DEFAULT) };
    match text.trim().parse::<u64>() {
        Ok(secs @ 1..=STOP_TIMEOUT_MAX_SECS) => Ok(Duration::from_secs(secs)),
        _ => Err(format!("{STOP_TIMEOUT_ENV}='{text}': expected whole seconds from 1 to {STOP_TIMEOUT_MAX_SECS}")),
    }
}

/// The step of the stop that is running now, shared between the main thread and the watchdog.
#[derive(Clone)]
pub struct Progress(Arc<Mutex<&'static str>>);

impl Progress {
    fn new() -> Self {
        Progress(Arc::new(Mutex::new("the start of the stop")))
    }

    /// Records that `step` (for example "the app port") is running now.
    pub fn step(&self, step: &'static str) {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = step;
    }

    fn current(&self) -> &'static str {
        *self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Why the watchdog ends the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    TimedOut,
    SecondSignal(i32),
}

/// Starts the watchdog after the first signal: it owns `signals` from now on, so a second one reaches it.
pub fn arm(signals: Signals, bound: Duration) -> Result<Progress, String> {
    let progress = Progress::new();
    let shared = progress.clone();
    std::thread::Builder::new()
        .name("stop-watchdog".into())
        .spawn(move || {
            let mut signals = signals;
            // SIGHUP (certificate reload) is not a stop signal, not even during a stop.
            let verdict = watch(|| signals.pending().find(|s| *s != signal_hook::consts::SIGHUP), bound);
            let step = shared.current();
            match verdict {
                Verdict::TimedOut => {
                    error!("the stop did not finish within {} s; still running: {step}; exiting", bound.as_secs())
                }
                Verdict::SecondSignal(signal) => {
                    error!("second stop signal ({signal}); exiting at once; still running: {step}")
                }
            }
            std::process::exit(EXIT_STUCK);
        })
        .map_err(|e| format!("cannot start the stop watchdog: {e}"))?;
    Ok(progress)
}

/// Waits until `bound` passes or `next_signal` yields a signal.
fn watch(mut next_signal: impl FnMut() -> Option<i32>, bound: Duration) -> Verdict {
    let deadline = Instant::now() + bound;
    loop {
        if let Some(signal) = next_signal() {
            return Verdict::SecondSignal(signal);
        }
        let now = Instant::now();
        if now >= deadline {
            return Verdict::TimedOut;
        }
        std::thread::sleep(POLL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_defaults_below_the_unit_stop_timeout_and_is_checked() {
        assert_eq!(parse_bound(None), Ok(STOP_TIMEOUT_DEFAULT));
        assert!(STOP_TIMEOUT_DEFAULT < Duration::from_secs(30));
        assert_eq!(parse_bound(Some("5")), Ok(Duration::from_secs(5)));
        assert_eq!(parse_bound(Some(" 7 ")), Ok(Duration::from_secs(7)));
        for bad in ["0", "-1", "2.5", "", "ten", "3601"] {
            let err = parse_bound(Some(bad)).unwrap_err();
            assert!(err.contains(STOP_TIMEOUT_ENV), "{err}");
        }
    }

    #[test]
    fn the_watchdog_fires_after_the_bound() {
        let started = Instant::now();
        assert_eq!(watch(|| None, Duration::from_millis(150)), Verdict::TimedOut);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(150) && waited < Duration::from_secs(2), "{waited:?}");
    }

    #[test]
    fn a_second_signal_ends_the_wait_at_once() {
        let mut polls = 0;
        let started = Instant::now();
        let verdict = watch(
            || {
                polls += 1;
                (polls == 3).then_some(15)
            },
            Duration::from_secs(60),
        );
        assert_eq!(verdict, Verdict::SecondSignal(15));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn progress_reports_the_latest_step() {
        let progress = Progress::new();
        progress.step("the app port");
        let seen = progress.clone();
        progress.step("the event loop");
        assert_eq!(seen.current(), "the event loop");
    }
}
