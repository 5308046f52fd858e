//! Requests run on the I/O thread itself, for a port that asks for it (`Config::inline`, the app port): no
//! hand-off to a worker and back, so a quick handler costs neither a wake-up nor a context switch.
//!
//! After each turn the I/O thread runs queued requests one after the other, as a worker would, for at most
//! [`RUN_BUDGET`] (then it writes their answers and takes a turn; the rest wait for the next run). While it
//! runs them, its event loop waits in [`Inline`]'s slot, and the *watch* thread looks every [`CHECK`]: when one
//! request holds the thread (a slow or stuck slice; see below), a new I/O thread takes the loop from the slot
//! and serves the port on, the workers are woken for the rest of the queue, and runs on the I/O thread pause
//! (requests go to the workers, as on a port without `inline`) until [`PAUSE`] after the held request ends, or
//! until its deadline has passed plus [`PAUSE`] if it does not end. The thread that was held becomes a worker
//! when its request ends, if the pool is short of threads (else it ends); a request past its deadline is
//! answered 504 and its thread counted stuck, and a port with `abandoned_max` threads stuck (or with
//! `abandoned_max` 0) runs nothing on its I/O thread. So threads held past their deadline are bounded as stuck
//! workers are, and those held before it by one per [`PAUSE`] within a deadline.
//!
//! A request *holds* the thread when it has run [`TAKE_OVER_AFTER`] and its thread waits in the kernel (a
//! sleep, a socket, a lock), or has computed [`TAKE_OVER_AFTER`] since the watch first saw it past that (so
//! about twice that from its start); or when it has run [`TAKE_OVER_ALWAYS`]. A thread that is runnable but
//! was not running (preempted on a busy machine) is not held: a takeover would only add a thread to the same
//! cores. The watch reads the state from `/proc/self/task/{tid}/stat` and `schedstat`, only for a request
//! already past [`TAKE_OVER_AFTER`]; where they cannot be read, every such request holds the thread.
//!
//! The slot is tagged with the generation the loop was parked at, and a takeover moves the generation on: the thread
//! that parked the loop takes it back when it is still there (always without a takeover; after one, while the new
//! thread has not taken it), and the thread a takeover starts takes only a loop parked before it.
//!
//! Invariants: the loop is run by one thread at a time; every queued request is run once, by the I/O thread
//! or by a worker, and a request queued for the I/O thread on a turn it does not run them wakes a worker; no
//! request waits on a held I/O thread longer than [`TAKE_OVER_ALWAYS`] plus a [`CHECK`] (or a failed thread
//! start's retries); the watch thread sleeps (parked) while no request runs inline.

use crate::event_loop::{EventLoop, Shared};
use crate::pool::{lock, Pool};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long one request may hold the I/O thread, blocked (waiting in a system call) or computing, before
/// another thread takes the loop over.
pub const TAKE_OVER_AFTER: Duration = Duration::from_millis(1);
/// How long one request may hold the I/O thread however it spends the time (the thread runnable but not
/// running, on a busy machine, included).
pub const TAKE_OVER_ALWAYS: Duration = Duration::from_millis(20);
/// How long one run of queued requests may take before the I/O thread writes their answers and takes a turn.
pub const RUN_BUDGET: Duration = Duration::from_millis(1);
/// How often the watch thread looks while requests run inline.
const CHECK: Duration = Duration::from_micros(500);
/// How long runs on the I/O thread pause after the request a takeover was made for.
pub const PAUSE: Duration = Duration::from_millis(200);
/// Looks without a request running inline after which the watch thread parks.
const QUIET_CHECKS: u32 = 200;

/// What the I/O thread and the watch thread share.
pub struct Inline {
    name: String,
    /// The event loop while its thread runs requests, with the generation it was parked at.
    slot: Mutex<Option<(u64, Box<EventLoop>)>>,
    /// Moved on by every takeover: the thread running requests stops after the one it runs.
    generation: AtomicU64,
    /// When the request running inline started (nanoseconds since `epoch`); 0 when none runs.
    since: AtomicU64,
    /// That request's deadline (nanoseconds since `epoch`; 0: none).
    deadline: AtomicU64,
    /// Runs on the I/O thread wait until then (nanoseconds since `epoch`).
    paused_until: AtomicU64,
    epoch: Instant,
    parked: AtomicBool,
    watch: Mutex<Option<std::thread::Thread>>,
    /// The kernel's id of the thread running requests inline (0: none yet).
    runner: AtomicI32,
}

impl Inline {
    pub fn new(name: &str) -> Inline {
        Inline {
            name: name.to_owned(),
            slot: Mutex::new(None),
            generation: AtomicU64::new(0),
            since: AtomicU64::new(0),
            deadline: AtomicU64::new(0),
            paused_until: AtomicU64::new(0),
            epoch: Instant::now(),
            parked: AtomicBool::new(false),
            watch: Mutex::new(None),
            runner: AtomicI32::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.ns_at(Instant::now())
    }

    fn ns_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    /// Whether requests run on the I/O thread right now: not paused by a takeover (see [`Inline::take_over`]).
    pub fn enabled(&self) -> bool {
        self.now_ns() >= self.paused_until.load(Ordering::SeqCst)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// This thread runs requests inline from here.
    pub fn set_runner(&self) {
        self.runner.store(rustix::thread::gettid().as_raw_nonzero().get(), Ordering::Relaxed);
    }

    /// A request with `deadline` starts on the I/O thread.
    pub fn begin(&self, deadline: Option<Instant>) {
        self.deadline.store(deadline.map_or(0, |d| self.ns_at(d)), Ordering::SeqCst);
        self.since.store(self.now_ns(), Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst) {
            if let Some(watch) = lock(&self.watch).as_ref() {
                watch.unpark();
            }
        }
    }

    /// The request running on the I/O thread ended.
    pub fn end(&self) {
        self.since.store(0, Ordering::SeqCst);
    }

    /// The loop waits here while its thread runs requests; the generation it was parked at.
    pub fn park(&self, event_loop: Box<EventLoop>) -> u64 {
        let mut slot = lock(&self.slot);
        let generation = self.generation();
        *slot = Some((generation, event_loop));
        generation
    }

    /// The loop back to the thread that parked it at `generation`, when it is still there: always without a
    /// takeover, and after one when the new thread has not taken it yet. A takeover since `generation` means
    /// the request it was made for has ended: runs on the I/O thread resume after [`PAUSE`]. Read under the
    /// slot's lock, under which a takeover is made, so each takeover is seen by one thread, once.
    pub fn unpark(&self, generation: u64) -> Option<Box<EventLoop>> {
        let mut slot = lock(&self.slot);
        let moved = self.generation() != generation;
        let mine = slot.as_ref().is_some_and(|(parked, _)| *parked == generation);
        let back = if mine { slot.take().map(|(_, event_loop)| event_loop) } else { None };
        drop(slot);
        if moved {
            // Shortened (not only pushed back): the request ended before its deadline.
            self.paused_until.store(self.now_ns().saturating_add(nanos(PAUSE)), Ordering::SeqCst);
        }
        back
    }

    /// An answer of a request run inline: kept in the parked loop, to write when its thread (this one, or
    /// the one that took it over) runs it again; handed over as a worker's would be when the loop is running.
    pub fn answered(&self, conn: usize, response: crate::Response, pool: &Pool) {
        let mut slot = lock(&self.slot);
        match slot.as_mut() {
            Some((_, event_loop)) => event_loop.hold_answer(conn, response),
            None => {
                drop(slot);
                pool.deliver(conn, response);
            }
        }
    }

    /// Starts the watch thread.
    pub fn start_watch(self: &Arc<Self>, shared: &Arc<Shared>, pool: &Pool) -> Result<(), String> {
        let (inline, shared, pool) = (Arc::clone(self), Arc::clone(shared), pool.clone());
        let thread = std::thread::Builder::new()
            .name(format!("{}-watch", self.name))
            .spawn(move || inline.watch(&shared, &pool))
            .map_err(|e| format!("{} port: cannot start its watch thread: {e}", self.name))?;
        *lock(&self.watch) = Some(thread.thread().clone());
        Ok(())
    }

    /// Wakes the watch thread (to see the port stopped).
    pub fn wake_watch(&self) {
        if let Some(watch) = lock(&self.watch).as_ref() {
            watch.unpark();
        }
    }

    fn watch(self: &Arc<Self>, shared: &Arc<Shared>, pool: &Pool) {
        let mut quiet = 0u32;
        // The start time of the request a takeover was last made for: one takeover per held request.
        let mut taken_for = 0u64;
        // The request seen held, and the runner's CPU time when it was first seen so.
        let mut seen: Option<(u64, u64)> = None;
        let (after, always) = (nanos(TAKE_OVER_AFTER), nanos(TAKE_OVER_ALWAYS));
        while !shared.loop_done() {
            let since = self.since.load(Ordering::SeqCst);
            if since == 0 {
                quiet = quiet.saturating_add(1);
                // (Kept past the bound while quiet: after a park times out, the watch parks again at once.)
                if quiet >= QUIET_CHECKS {
                    self.parked.store(true, Ordering::SeqCst);
                    if self.since.load(Ordering::SeqCst) == 0 && !shared.loop_done() {
                        std::thread::park_timeout(Duration::from_secs(1));
                    }
                    self.parked.store(false, Ordering::SeqCst);
                    continue;
                }
            } else {
                quiet = 0;
                let held = self.now_ns().saturating_sub(since);
                if since != taken_for
                    && held >= after
                    && self.held(since, held >= always, &mut seen, after)
                    && self.take_over(pool)
                {
                    taken_for = since;
                }
            }
            std::thread::sleep(CHECK);
        }
    }

    /// Whether the request that started at `since`, held past [`TAKE_OVER_AFTER`], holds the thread: it waits
    /// in the kernel (a sleep, a socket, a lock), it has computed for [`TAKE_OVER_AFTER`] since first seen
    /// held, or `always`. A runner that is runnable and has not computed (preempted on a busy machine) does
    /// not: the takeover would only add a thread.
    fn held(&self, since: u64, always: bool, seen: &mut Option<(u64, u64)>, after: u64) -> bool {
        if always {
            return true;
        }
        let Some((state, cpu_ns)) = thread_state(self.runner.load(Ordering::Relaxed)) else { return true };
        if state != 'R' {
            return true;
        }
        match *seen {
            Some((request, cpu_at_first)) if request == since => cpu_ns.saturating_sub(cpu_at_first) >= after,
            _ => {
                *seen = Some((since, cpu_ns));
                false
            }
        }
    }

    /// Another thread takes the loop from the slot and runs the port on; the workers take the queue. Runs on
    /// the I/O thread pause until the held request's deadline has passed, plus [`PAUSE`] (forever on a port
    /// without a deadline), or until [`PAUSE`] after it ends, when it ends first ([`Inline::unpark`]): past
    /// its deadline its thread counts as stuck, and the pool's `abandoned_max` bounds those (see
    /// [`Pool::may_strand_another`]). False when no thread could be started (the watch tries again).
    fn take_over(self: &Arc<Self>, pool: &Pool) -> bool {
        {
            let slot = lock(&self.slot);
            let Some((parked, _)) = slot.as_ref() else { return false };
            // A loop parked before the current generation was taken over already, by a thread start that
            // failed: this is the retry.
            if *parked == self.generation() {
                self.generation.fetch_add(1, Ordering::SeqCst);
                let until = match self.deadline.load(Ordering::SeqCst) {
                    0 => u64::MAX,
                    deadline => deadline.saturating_add(nanos(crate::event_loop::GRACE) + nanos(PAUSE)),
                };
                self.paused_until.fetch_max(until, Ordering::SeqCst);
                log::info!(
                    "{} port: a request holds the I/O thread; another thread serves the port, and requests go to \
                     the workers until {} ms after it ends (or its deadline passes)",
                    self.name,
                    PAUSE.as_millis()
                );
            }
        }
        pool.wake_all();
        let inline = Arc::clone(self);
        let started = std::thread::Builder::new().name(format!("{}-io", self.name)).spawn(move || {
            // Only a loop parked before the takeover: none when the held request ended first and its thread
            // took the loop back (it cannot: the generation moved), or another thread took it.
            let taken = {
                let mut slot = lock(&inline.slot);
                match slot.take() {
                    Some((parked, event_loop)) if parked < inline.generation() => Some(event_loop),
                    other => {
                        *slot = other;
                        None
                    }
                }
            };
            if let Some(event_loop) = taken {
                event_loop.run();
            }
        });
        match started {
            Ok(_) => true,
            Err(e) => {
                log::error!("{} port: cannot start an I/O thread ({e}); trying again", self.name);
                false
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A thread of this process: its scheduler state (`R` running or runnable, `S`/`D` waiting, ...) from
/// `/proc/self/task/{tid}/stat` and its time on a CPU in nanoseconds from `.../schedstat`.
fn thread_state(tid: i32) -> Option<(char, u64)> {
    if tid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    // The name (in parentheses) may hold anything: the state follows the last ')'.
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    let schedstat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).ok()?;
    let cpu_ns = schedstat.split_whitespace().next()?.parse().ok()?;
    Some((state, cpu_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeping_thread_reads_as_waiting_and_a_busy_one_as_running() {
        let (tx, rx) = std::sync::mpsc::channel();
        let sleeper = std::thread::spawn(move || {
            tx.send(rustix::thread::gettid().as_raw_nonzero().get()).unwrap();
            std::thread::sleep(Duration::from_millis(300));
        });
        let tid = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let (state, _) = thread_state(tid).unwrap();
        assert_eq!(state, 'S');
        sleeper.join().unwrap();
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        let (state, before) = thread_state(me).unwrap();
        assert_eq!(state, 'R');
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(20) {
            std::hint::black_box(0u64);
        }
        let (_, after) = thread_state(me).unwrap();
        assert!(after > before, "{before} {after}");
        assert!(thread_state(0).is_none() && thread_state(i32::MAX).is_none());
    }
}
