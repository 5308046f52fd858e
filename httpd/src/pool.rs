//! The worker pool: handler threads fed by a bounded queue, and the abandonment of stuck ones.
//!
//! The pool is elastic when the port's config sets `workers_min`: it starts that many threads, starts one more
//! when a request is queued and more requests wait than threads are idle (up to `workers`, and never while
//! more threads are stuck than `abandoned_max` allows), and ends the threads a whole `worker_idle` window did
//! not need: the fewest threads idle at once during a window may end after it (down to `workers_min`), so a
//! light steady load that wakes each thread in turn still lets the surplus go. Without `workers_min`, all
//! `workers` start at once and stay.
//!
//! Invariants:
//! - the I/O thread never waits here: [`Pool::submit`] only locks the queue briefly and fails when
//!   it is full (the caller answers 503);
//! - a job is answered exactly once: its state moves from QUEUED to RUNNING (a worker took it) or
//!   OVERDUE (the server answered it past its deadline), and from RUNNING to DONE or OVERDUE, each by
//!   one compare-and-swap; only the side that wins sends the answer;
//! - a worker whose job went OVERDUE while running is abandoned: it leaves the live count, and a
//!   replacement starts while at most `abandoned_max` threads are stuck; a stuck thread that comes back
//!   serves again if the pool is short of workers, else exits. Threads never number more than
//!   `workers + abandoned_max + 1`.

use crate::{Config, Handler, Request, Response};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const OVERDUE: u8 = 3;

/// One request's life on the pool, shared by its worker and the I/O thread.
pub struct Job {
    state: AtomicU8,
    deadline: Option<Instant>,
    note: Mutex<Option<String>>,
    /// The worker running it (set while RUNNING): its abandoned flag.
    worker: Mutex<Option<Arc<AtomicBool>>>,
}

impl Job {
    pub(crate) fn new(deadline: Option<Instant>) -> Job {
        Job { state: AtomicU8::new(QUEUED), deadline, note: Mutex::new(None), worker: Mutex::new(None) }
    }

    /// When the server stops waiting for the handler, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the server already answered (the handler's answer will be dropped).
    pub fn overdue(&self) -> bool {
        self.state.load(Ordering::SeqCst) == OVERDUE
    }

    /// Say what the request is waiting for, for the 504 detail ([`crate::Handler::overdue`]).
    pub fn set_note(&self, note: String) {
        *lock(&self.note) = Some(note);
    }

    pub fn note(&self) -> Option<String> {
        lock(&self.note).clone()
    }

    /// Whether the handler's answer is still wanted (false once past the deadline).
    pub(crate) fn settled(&self) -> bool {
        matches!(self.state.load(Ordering::SeqCst), DONE | OVERDUE)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A finished request, for the I/O thread.
pub struct Completion {
    pub conn: usize,
    pub response: Response,
}

struct Task {
    conn: usize,
    job: Arc<Job>,
    request: Request,
}

/// The queue and the idle threads' accounting, under one lock.
struct Waiting {
    tasks: VecDeque<Task>,
    /// Threads not running a task (waiting, or about to look at the queue).
    idle: usize,
    /// The fewest idle threads since `window_start`.
    low: usize,
    window_start: Instant,
    /// Threads the last window did not need, which may end.
    surplus: usize,
}

struct Shared {
    name: String,
    handler: Arc<dyn Handler>,
    queue: Mutex<Waiting>,
    ready: Condvar,
    queue_max: usize,
    workers_target: usize,
    /// Threads kept while idle.
    workers_min: usize,
    worker_idle: std::time::Duration,
    abandoned_max: usize,
    live: AtomicUsize,
    abandoned: AtomicUsize,
    stopping: AtomicBool,
    done: Mutex<Sender<Completion>>,
    waker: Arc<mio::Waker>,
    /// Set by the worker whose answer wakes the I/O thread, cleared by that thread before it takes the
    /// answers: a worker that finds it set queued its answer before the I/O thread takes them, so it need not
    /// wake it again (one wake-up per batch of answers, not per answer).
    rung: AtomicBool,
    threads: Mutex<Vec<(Arc<AtomicBool>, JoinHandle<()>)>>,
    next_n: AtomicUsize,
}

#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    pub fn start(
        config: &Config,
        handler: Arc<dyn Handler>,
        done: Sender<Completion>,
        waker: Arc<mio::Waker>,
    ) -> Result<Pool, String> {
        let shared = Arc::new(Shared {
            name: config.name.clone(),
            handler,
            queue: Mutex::new(Waiting {
                tasks: VecDeque::new(),
                idle: 0,
                low: 0,
                window_start: Instant::now(),
                surplus: 0,
            }),
            ready: Condvar::new(),
            queue_max: config.queue_max.max(1),
            workers_target: config.workers.max(1),
            workers_min: config.workers_min.unwrap_or(config.workers).clamp(1, config.workers.max(1)),
            worker_idle: config.worker_idle,
            abandoned_max: config.abandoned_max,
            live: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            done: Mutex::new(done),
            waker,
            rung: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
            next_n: AtomicUsize::new(0),
        });
        let pool = Pool { shared };
        for _ in 0..pool.shared.workers_min {
            pool.shared.live.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = spawn(&pool.shared) {
                pool.stop();
                return Err(e);
            }
        }
        Ok(pool)
    }

    /// The I/O thread is about to take the answers queued so far: the next answer wakes it again. A swap, not
    /// a store, so it synchronises with the worker whose swap found `rung` set (see `Doorbell::answer` in `net`).
    pub fn answers_taken(&self) {
        self.shared.rung.swap(false, Ordering::SeqCst);
    }

    /// Queue a request; false (the request dropped) when the queue is full.
    pub fn submit(&self, conn: usize, job: Arc<Job>, request: Request) -> bool {
        let mut queue = lock(&self.shared.queue);
        if queue.tasks.len() >= self.shared.queue_max {
            return false;
        }
        queue.tasks.push_back(Task { conn, job, request });
        let shared = &self.shared;
        let grow = queue.tasks.len() > queue.idle && !shared.stopping.load(Ordering::SeqCst) && shared.reserve();
        drop(queue);
        shared.ready.notify_one();
        if grow {
            // More waiting than idle threads to take them: one more thread (a thread start, no waiting).
            if let Err(e) = spawn(shared) {
                log::error!("{} port: {e}", shared.name);
            }
        }
        true
    }

    /// Take an overdue job from its handler: true when the caller is to answer it. A running worker is
    /// abandoned (and replaced while few are stuck).
    pub fn expire(&self, job: &Job) -> bool {
        if job.state.compare_exchange(QUEUED, OVERDUE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            return true;
        }
        if job.state.compare_exchange(RUNNING, OVERDUE, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return false;
        }
        if let Some(flag) = lock(&job.worker).take() {
            flag.store(true, Ordering::SeqCst);
        }
        self.shared.live.fetch_sub(1, Ordering::SeqCst);
        let stuck = self.shared.abandoned.fetch_add(1, Ordering::SeqCst) + 1;
        if self.shared.stopping.load(Ordering::SeqCst) {
            return true;
        }
        if stuck <= self.shared.abandoned_max {
            log::warn!(
                "{} port: a request passed its deadline; its worker is replaced ({stuck} stuck)",
                self.shared.name
            );
            self.shared.live.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = spawn(&self.shared) {
                log::error!("{} port: {e}", self.shared.name);
            }
        } else {
            log::error!(
                "{} port: {stuck} workers are stuck past their deadline; not replacing more ({} serve)",
                self.shared.name,
                self.shared.live.load(Ordering::SeqCst)
            );
        }
        true
    }

    /// (live, abandoned) workers and queued requests.
    pub fn counts(&self) -> (usize, usize, usize) {
        let queued = lock(&self.shared.queue).tasks.len();
        (self.shared.live.load(Ordering::SeqCst), self.shared.abandoned.load(Ordering::SeqCst), queued)
    }

    /// Let the workers finish the queue, then join those not stuck.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for (abandoned, thread) in threads {
            if !abandoned.load(Ordering::SeqCst) {
                let _ = thread.join();
            }
        }
    }
}

impl Shared {
    /// Takes a place for one more live thread, when the pool may grow: fewer live threads than `workers`,
    /// counting the stuck ones past `abandoned_max` as live (so a hung slice cannot make the pool start a thread
    /// per request).
    fn reserve(&self) -> bool {
        let over = self.abandoned.load(Ordering::SeqCst).saturating_sub(self.abandoned_max);
        let target = self.workers_target;
        self.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| (l + over < target).then_some(l + 1)).is_ok()
    }
}

/// Starts a worker thread for a place already taken in `live` (given back when the thread cannot start).
fn spawn(shared: &Arc<Shared>) -> Result<(), String> {
    let n = shared.next_n.fetch_add(1, Ordering::Relaxed);
    let flag = Arc::new(AtomicBool::new(false));
    let (for_thread, flag_for_thread) = (Arc::clone(shared), Arc::clone(&flag));
    let thread = std::thread::Builder::new()
        .name(format!("{}-http-{n}", shared.name))
        .spawn(move || work(&for_thread, &flag_for_thread))
        .map_err(|e| {
            shared.live.fetch_sub(1, Ordering::SeqCst);
            format!("cannot start a worker thread: {e}")
        })?;
    let mut threads = lock(&shared.threads);
    threads.retain(|(_, t)| !t.is_finished());
    threads.push((flag, thread));
    Ok(())
}

fn work(shared: &Shared, abandoned: &Arc<AtomicBool>) {
    let mut queue = lock(&shared.queue);
    queue.idle += 1;
    loop {
        let task = loop {
            if let Some(task) = queue.tasks.pop_front() {
                queue.idle -= 1;
                queue.low = queue.low.min(queue.idle);
                break task;
            }
            if shared.stopping.load(Ordering::SeqCst) {
                queue.idle -= 1;
                shared.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            let (held, _) = shared.ready.wait_timeout(queue, shared.worker_idle).unwrap_or_else(|e| e.into_inner());
            queue = held;
            let now = Instant::now();
            if now.duration_since(queue.window_start) >= shared.worker_idle {
                // Threads idle through the whole window were not needed in it.
                queue.surplus = queue.low;
                queue.low = queue.idle;
                queue.window_start = now;
            }
            if queue.tasks.is_empty() && queue.surplus > 0 && shared.live.load(Ordering::SeqCst) > shared.workers_min {
                queue.surplus -= 1;
                queue.idle -= 1;
                shared.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        };
        drop(queue);
        let Task { conn, job, request } = task;
        *lock(&job.worker) = Some(Arc::clone(abandoned));
        if job.state.compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            // Answered by the server while it waited.
            *lock(&job.worker) = None;
            queue = lock(&shared.queue);
            queue.idle += 1;
            continue;
        }
        let handler = &shared.handler;
        let response = catch_unwind(AssertUnwindSafe(|| handler.handle(request, &job))).unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            log::error!("{} port: a handler panicked: {message}", shared.name);
            Response::error(500, "internal", "the node failed while serving this request")
        });
        *lock(&job.worker) = None;
        let answered = job.state.compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if answered {
            let sent = lock(&shared.done).send(Completion { conn, response });
            if sent.is_ok() && !shared.rung.swap(true, Ordering::SeqCst) && shared.waker.wake().is_err() {
                shared.rung.store(false, Ordering::SeqCst);
            }
            queue = lock(&shared.queue);
            // A thread the last window did not need ends here too: under a light steady load every wake-up
            // brings a request, so waiting threads rarely see an empty queue.
            if queue.tasks.is_empty() && queue.surplus > 0 && shared.live.load(Ordering::SeqCst) > shared.workers_min {
                queue.surplus -= 1;
                shared.live.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            queue.idle += 1;
            continue;
        }
        // Abandoned at the deadline: serve again if the pool is short (taking its place back), else leave.
        let still = shared.abandoned.fetch_sub(1, Ordering::SeqCst) - 1;
        let target = shared.workers_target;
        let back = !shared.stopping.load(Ordering::SeqCst)
            && shared.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| (l < target).then_some(l + 1)).is_ok();
        if back {
            abandoned.store(false, Ordering::SeqCst);
            log::info!("{} port: a stuck worker came back and serves again ({still} still stuck)", shared.name);
            queue = lock(&shared.queue);
            queue.idle += 1;
            continue;
        }
        log::info!("{} port: a stuck worker came back and exits ({still} still stuck)", shared.name);
        return;
    }
}
