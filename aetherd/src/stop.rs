//! A bounded stop: once SIGTERM or SIGINT has arrived, the node is gone within a known time, stuck or not.
//!
//! The orderly stop (management, app port, event loop, the final log sync, then slices) runs on the main thread and
//! names each step in a [`Progress`]. A watchdog thread, armed by the first signal, ends the process with
//! [`EXIT_STUCK`] and one log line naming the step still running when the bound passes (a slice that never
//! returns from `stop`, a disk that never finishes a sync), or at once on a second SIGTERM/SIGINT (an operator
//! pressing Ctrl-C twice). The bound defaults to 20 s; with the default drain before it, that stays below the
//! systemd unit's `TimeoutStopSec=60s`, so the node exits by itself before systemd resorts to SIGKILL;
//! `AETHER_STOP_TIMEOUT_SECS` changes it.
//!
//! Before that, a node that can hand its work over drains first ([`DrainOnStop`]): the main thread asks the
//! event loop to write this node's lifecycle SHUTTING_DOWN and waits, at most `drain_on_stop_ms`, until the
//! leader has moved every instance away (the loop says when). The loop answers "not possible" at once when
//! the node has no quorum, is not caught up, or no other live node is ON_DUTY (a single-node cluster), and
//! the node then stops as before. A second signal during the drain ends the process at once, as during the
//! stop.
//!
//! Invariant: the watchdog never writes the clean-stop marker and never touches node state; it only exits.
//! The marker is written by the storage after its final sync, before slices are stopped, so a slice that hangs
//! in `stop` does not cost it; a process cut short before the sync is simply an unclean stop (the next start
//! treats it like a crash, which is always safe).

use log::{error, info};
use signal_hook::iterator::Signals;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that sets the bound, in whole seconds.
pub const STOP_TIMEOUT_ENV: &str = "AETHER_STOP_TIMEOUT_SECS";
/// The bound when the environment does not set one: well below the unit's `TimeoutStopSec=60s`.
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

/// Where the drain before a stop is, as the event loop reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainPhase {
    /// Not asked for, or asked and the loop has not looked yet.
    Pending,
    /// SHUTTING_DOWN is written (or being written); instances are still on this node.
    Waiting,
    /// This node holds no instance any more.
    Drained,
    /// The cluster cannot take this node's work (no quorum, not caught up, no other ON_DUTY node).
    NotPossible,
}

/// The drain before a stop, shared between the main thread (which asks and waits) and the event loop
/// (which writes the lifecycle record and reports). See the module documentation.
#[derive(Debug, Default)]
pub struct DrainOnStop {
    requested: AtomicBool,
    phase: AtomicU8,
}

impl DrainOnStop {
    /// The main thread asks for the drain.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// The loop reports where the drain is.
    pub fn set_phase(&self, phase: DrainPhase) {
        let code = match phase {
            DrainPhase::Pending => 0,
            DrainPhase::Waiting => 1,
            DrainPhase::Drained => 2,
            DrainPhase::NotPossible => 3,
        };
        self.phase.store(code, Ordering::SeqCst);
    }

    pub fn phase(&self) -> DrainPhase {
        match self.phase.load(Ordering::SeqCst) {
            1 => DrainPhase::Waiting,
            2 => DrainPhase::Drained,
            3 => DrainPhase::NotPossible,
            _ => DrainPhase::Pending,
        }
    }

    /// Asks for the drain and waits until it is done, not possible, or `bound` passes; a stop signal
    /// arriving meanwhile (other than SIGHUP) ends the process at once with [`EXIT_STUCK`]. A zero bound
    /// skips the drain.
    pub fn run(&self, signals: &mut Signals, bound: Duration) {
        if bound.is_zero() {
            return;
        }
        self.request();
        info!("draining this node before it stops (at most {} ms)", bound.as_millis());
        let outcome =
            wait_drained(|| self.phase(), || signals.pending().find(|s| *s != signal_hook::consts::SIGHUP), bound);
        match outcome {
            DrainOutcome::Done(DrainPhase::Drained) => info!("drained; stopping"),
            DrainOutcome::Done(_) => info!("the cluster cannot take this node's work; stopping without a drain"),
            DrainOutcome::TimedOut => info!("the drain did not finish within {} ms; stopping", bound.as_millis()),
            DrainOutcome::Signal(signal) => {
                error!("second stop signal ({signal}) during the drain; exiting at once");
                std::process::exit(EXIT_STUCK);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DrainOutcome {
    Done(DrainPhase),
    TimedOut,
    Signal(i32),
}

/// How long the loop may stay silent (phase still Pending) before the drain counts as not possible: it
/// answers within a tick when it runs at all.
const DRAIN_ANSWER_WAIT: Duration = Duration::from_secs(3);

fn wait_drained(
    phase: impl Fn() -> DrainPhase,
    mut next_signal: impl FnMut() -> Option<i32>,
    bound: Duration,
) -> DrainOutcome {
    let started = Instant::now();
    loop {
        if let Some(signal) = next_signal() {
            return DrainOutcome::Signal(signal);
        }
        match phase() {
            done @ (DrainPhase::Drained | DrainPhase::NotPossible) => return DrainOutcome::Done(done),
            DrainPhase::Pending if started.elapsed() >= DRAIN_ANSWER_WAIT => {
                return DrainOutcome::Done(DrainPhase::NotPossible)
            }
            _ => {}
        }
        if started.elapsed() >= bound {
            return DrainOutcome::TimedOut;
        }
        std::thread::sleep(POLL);
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
    fn the_drain_wait_ends_on_the_loops_answer_or_a_second_signal() {
        let drain = DrainOnStop::default();
        assert_eq!(drain.phase(), DrainPhase::Pending);
        drain.set_phase(DrainPhase::Drained);
        let bound = Duration::from_secs(60);
        assert_eq!(wait_drained(|| drain.phase(), || None, bound), DrainOutcome::Done(DrainPhase::Drained));
        drain.set_phase(DrainPhase::NotPossible);
        assert_eq!(wait_drained(|| drain.phase(), || None, bound), DrainOutcome::Done(DrainPhase::NotPossible));
        drain.set_phase(DrainPhase::Waiting);
        assert_eq!(wait_drained(|| drain.phase(), || Some(15), bound), DrainOutcome::Signal(15));
        assert_eq!(wait_drained(|| drain.phase(), || None, Duration::ZERO), DrainOutcome::TimedOut);
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
