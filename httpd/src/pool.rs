//! The worker pool: handler threads fed by a bounded queue, and the abandonment of stuck ones.
//!
//! A queued task wakes a sleeping thread only when the queue holds more than the idle threads already awake
//! (or woken) will take: a thread that finishes a task takes the next before it sleeps, so under load a few
//! busy threads drain the queue without a wake-up per request.
//!
//! The pool is elastic when the port's config sets `workers_min`: it starts that many threads, starts one more
//! when the oldest queued task has waited [`GROW_AFTER`] with no idle thread to take it and no task ended
//! meanwhile (at most one start per [`GROW_AFTER`], up to `workers`, and never while more threads are stuck
//! than `abandoned_max` allows), and ends the threads a whole `worker_idle` window did not need: the fewest
//! threads idle at once during a window may end after it (down to `workers_min`), so a light steady load that
//! wakes each thread in turn still lets the surplus go. Without `workers_min`, all `workers` start at once
//! and stay.
//!
//! On a port with `inline` (see [`crate::inline`]) the I/O thread runs the queue itself between its turns
//! ([`Pool::run_queued`]), holding no place in `live`; requests it queues wake no worker.
//!
//! A handler may answer later ([`Job::defer`]): it returns at once, its worker serves the next request, and
//! whoever holds the [`Later`] (the thread a reply arrives on, say) answers from there, straight to the I/O
//! thread, or hands the request back to the pool to go on ([`Later::resume`]).
//!
//! Invariants:
//! - the I/O thread never waits here: [`Pool::submit`] only locks the queue briefly and fails when
//!   it is full (the caller answers 503);
//! - a job is answered exactly once: its state moves from QUEUED to RUNNING (a worker took it) or
//!   OVERDUE (the server answered it past its deadline), from RUNNING to DONE, DEFERRED (its handler will
//!   answer later) or OVERDUE, and from DEFERRED to DONE, OVERDUE or QUEUED again (resumed), each by one
//!   compare-and-swap; only the side that wins sends the answer. A [`Later`] dropped unanswered answers 500,
//!   so a deferred request without a deadline is never left waiting;
//! - a deferred job holds no thread: the watchdog answers it 504 past its deadline without abandoning a
//!   worker;
//! - a worker whose job went OVERDUE while running is abandoned: it leaves the live count, and a
//!   replacement starts while at most `abandoned_max` threads are stuck; a stuck thread that comes back
//!   serves again if the pool is short of workers, else exits. Worker threads never number more than
//!   `workers + abandoned_max + 1`; on an `inline` port, former I/O threads held in a request add to them
//!   (see [`crate::inline`] for their bound).

use crate::{Config, Handler, Request, Response};
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const QUEUED: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
const OVERDUE: u8 = 3;
const DEFERRED: u8 = 4;

/// How long the oldest queued task waits, with every thread busy and none ending a task, before the pool
/// starts one more thread (and at most one such start per this long). Short enough that handlers that block
/// (a slow slice, a call to another node) get threads at once for a person; a burst of quick requests, which
/// the running threads drain, starts none: threads past the cores only add wake-ups and switches.
pub const GROW_AFTER: Duration = Duration::from_millis(1);

/// One request's life on the pool, shared by its worker and the I/O thread.
pub struct Job {
    state: AtomicU8,
    /// When the server stops waiting; a deferral may bring it forward ([`Later::within`]).
    deadline: Mutex<Option<Instant>>,
    note: Mutex<Option<String>>,
    /// Header fields of the answers the server writes itself for this request.
    headers: Mutex<Vec<(String, String)>>,
    /// The worker running it (set while RUNNING): its abandoned flag.
    worker: Mutex<Option<Arc<AtomicBool>>>,
    /// Whether the thread running it is the I/O thread (see [`Pool::run_queued`]), which holds no place in
    /// the pool: abandoning it costs the pool no worker.
    on_io: AtomicBool,
}

/// What [`Job::defer`] did on this worker thread during the current run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Deferral {
    None,
    /// RUNNING -> DEFERRED: the worker is free.
    Deferred,
    /// The watchdog had already taken the job (RUNNING -> OVERDUE): the worker was abandoned.
    TooLate,
}

thread_local! {
    /// The running job's way to answer later, on its worker thread, while the handler runs: per thread, so a
    /// request resumed on another worker before this one returned never mixes up the two runs.
    static ANSWER_TO: std::cell::RefCell<Option<Later>> = const { std::cell::RefCell::new(None) };
    static DEFERRAL: std::cell::Cell<Deferral> = const { std::cell::Cell::new(Deferral::None) };
}

impl Job {
    pub(crate) fn new(deadline: Option<Instant>) -> Job {
        Job {
            state: AtomicU8::new(QUEUED),
            deadline: Mutex::new(deadline),
            note: Mutex::new(None),
            headers: Mutex::new(Vec::new()),
            worker: Mutex::new(None),
            on_io: AtomicBool::new(false),
        }
    }

    /// Answer this request later, from any thread: the handler returns at once (the [`Response`] it returns
    /// is dropped) and its worker thread serves other requests; the request's answer is what is given to the
    /// returned [`Later`]. The deadline still holds (the server answers 504 past it, and the late answer is
    /// dropped). `None` when called twice, or outside [`crate::Handler::handle`].
    ///
    /// The handler must return promptly after deferring: its thread is no longer watched.
    pub fn defer(&self) -> Option<Later> {
        let later = ANSWER_TO.with(|slot| {
            let mut slot = slot.borrow_mut();
            let ours = slot.as_ref().is_some_and(|later| std::ptr::eq(Arc::as_ptr(&later.job), self));
            if ours {
                slot.take()
            } else {
                None
            }
        })?;
        let moved = self.state.compare_exchange(RUNNING, DEFERRED, Ordering::SeqCst, Ordering::SeqCst).is_ok();
        if moved {
            // No worker runs it now (one that resumes it sets its own).
            *lock(&self.worker) = None;
        }
        DEFERRAL.with(|d| d.set(if moved { Deferral::Deferred } else { Deferral::TooLate }));
        Some(later)
    }

    /// When the server stops waiting for the handler, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    /// A header field every answer the server writes itself for this request carries (the 504 past its
    /// deadline, the 500 of a deferral dropped unanswered), say the request's id.
    pub fn add_answer_header(&self, name: &str, value: &str) {
        lock(&self.headers).push((name.to_owned(), value.to_owned()));
    }

    /// `response` with this request's answer header fields.
    pub(crate) fn with_answer_headers(&self, mut response: Response) -> Response {
        response.headers.extend(lock(&self.headers).iter().cloned());
        response
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

/// Locks `m`, also after a holder panicked (handlers run outside every lock of this crate).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the I/O thread is told by the other threads.
pub enum Completion {
    /// A request's answer.
    Answer { conn: usize, response: Response },
    /// A deferred request's deadline, to watch (see [`Later::within`]).
    Watch { conn: usize, job: Arc<Job> },
}

/// The rest of a deferred request's work, run on a worker ([`Later::resume`]).
pub type Resume = Box<dyn FnOnce(&Job) -> Response + Send>;

enum Work {
    Request(Request),
    Resume(Resume),
}

struct Task {
    conn: usize,
    job: Arc<Job>,
    work: Work,
    /// When it was queued: the pool grows only for work that waits (see [`GROW_AFTER`]).
    queued_at: Instant,
}

/// The answer owed to a deferred request ([`Job::defer`]); answer it from any thread, once. Dropped
/// unanswered, it answers 500.
pub struct Later {
    conn: usize,
    job: Arc<Job>,
    pool: Arc<Shared>,
    spent: bool,
}

impl Later {
    /// Answer the request (dropped when the server already answered it past its deadline). Never blocks:
    /// the answer goes to the I/O thread's channel and wakes it.
    pub fn answer(mut self, response: Response) {
        self.spent = true;
        if self.job.state.compare_exchange(DEFERRED, DONE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            self.pool.deliver(self.conn, response);
        }
    }

    /// Go on with the request on a worker thread: `work` runs there as a handler would (it may defer
    /// again) and its answer is the request's. When the queue is full the request is answered 503.
    pub fn resume(mut self, work: Resume) {
        self.spent = true;
        if self.job.state.compare_exchange(DEFERRED, QUEUED, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return;
        }
        // Past the queue's bound: a resumed request was admitted once already, and deferred requests are
        // bounded by the port's connections.
        let task =
            Task { conn: self.conn, job: Arc::clone(&self.job), work: Work::Resume(work), queued_at: Instant::now() };
        self.pool.queue(task, false);
    }

    /// Answer within `limit` from now at the latest: past it the server answers 504 (the handler's
    /// [`crate::Handler::overdue`]) and a later answer is dropped. For a port without a request deadline, so
    /// that what the answer waits for (another thread, a consensus slot) cannot keep the client waiting.
    pub fn within(&self, limit: Duration) {
        let at = Instant::now() + limit;
        let watched = {
            let mut deadline = lock(&self.job.deadline);
            let watched = deadline.is_some();
            *deadline = Some(deadline.map_or(at, |d| d.min(at)));
            watched
        };
        if !watched {
            self.pool.tell(Completion::Watch { conn: self.conn, job: Arc::clone(&self.job) });
        }
    }

    /// Whether the request still waits for this answer (false once the server answered it past its deadline).
    pub fn wanted(&self) -> bool {
        self.job.state.load(Ordering::SeqCst) == DEFERRED
    }
}

impl Drop for Later {
    fn drop(&mut self) {
        if !self.spent && self.job.state.compare_exchange(DEFERRED, DONE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            log::error!("{} port: a deferred request was dropped unanswered", self.pool.name);
            let dropped = Response::error(500, "internal", "the node dropped this request");
            self.pool.deliver(self.conn, self.job.with_answer_headers(dropped));
        }
    }
}

/// The queue and the idle threads' accounting, under one lock.
struct Waiting {
    tasks: VecDeque<Task>,
    /// Threads not running a task (waiting, or about to look at the queue).
    idle: usize,
    /// Idle threads asleep on the condition variable.
    sleeping: usize,
    /// Wake-ups signalled that no thread has woken from yet: threads on their way to the queue.
    waking: usize,
    /// When the pool last grew (it grows by at most one thread per [`GROW_AFTER`]).
    grew_at: Option<Instant>,
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
    /// When a task last ended, in nanoseconds since `epoch`: threads that keep ending tasks are busy, not
    /// blocked, and more threads would not serve the queue sooner.
    last_done: std::sync::atomic::AtomicU64,
    epoch: Instant,
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
                sleeping: 0,
                waking: 0,
                grew_at: None,
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
            last_done: std::sync::atomic::AtomicU64::new(0),
            epoch: Instant::now(),
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
        self.shared.queue(Task { conn, job, work: Work::Request(request), queued_at: Instant::now() }, true)
    }

    /// Offer a fresh job's request to the handler's `start`, on this (the I/O) thread: `None` when the handler
    /// took it (deferred, or answered), else the request back for [`Pool::submit`].
    pub fn start_inline(&self, conn: usize, job: &Arc<Job>, request: Request) -> Option<Request> {
        let shared = &self.shared;
        job.state.store(RUNNING, Ordering::SeqCst);
        let later = Later { conn, job: Arc::clone(job), pool: Arc::clone(shared), spent: false };
        ANSWER_TO.with(|slot| *slot.borrow_mut() = Some(later));
        DEFERRAL.with(|d| d.set(Deferral::None));
        let handler = &shared.handler;
        let back = catch_unwind(AssertUnwindSafe(|| handler.start(request, job)));
        if let Some(mut later) = ANSWER_TO.with(|slot| slot.borrow_mut().take()) {
            later.spent = true;
        }
        if DEFERRAL.with(|d| d.replace(Deferral::None)) == Deferral::Deferred {
            return None;
        }
        job.state.store(QUEUED, Ordering::SeqCst);
        let failed = match back {
            Ok(Some(request)) => return Some(request),
            Ok(None) => "the handler took a request without deferring it".to_owned(),
            Err(payload) => panic_message(payload.as_ref()),
        };
        log::error!("{} port: a handler failed to start a request: {failed}", shared.name);
        if job.state.compare_exchange(QUEUED, DONE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
            let failed = Response::error(500, "internal", "the node failed while serving this request");
            shared.deliver(conn, job.with_answer_headers(failed));
        }
        None
    }

    /// Take an overdue job from its handler: true when the caller is to answer it. A running worker is
    /// abandoned (and replaced while few are stuck).
    pub fn expire(&self, job: &Job) -> bool {
        for free in [QUEUED, DEFERRED] {
            // No thread holds it: nothing to abandon.
            if job.state.compare_exchange(free, OVERDUE, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                return true;
            }
        }
        if job.state.compare_exchange(RUNNING, OVERDUE, Ordering::SeqCst, Ordering::SeqCst).is_err() {
            return false;
        }
        if let Some(flag) = lock(&job.worker).take() {
            flag.store(true, Ordering::SeqCst);
        }
        if job.on_io.load(Ordering::SeqCst) {
            // A thread taken over while it ran the request inline: stuck, but no worker is lost.
            let stuck = self.shared.abandoned.fetch_add(1, Ordering::SeqCst) + 1;
            log::warn!(
                "{} port: a request passed its deadline on a former I/O thread ({stuck} stuck)",
                self.shared.name
            );
            return true;
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

    /// Starts a thread when the queue is starved (see [`Shared::queue`]); the I/O thread calls it every turn,
    /// so a queue that no submit follows still grows the pool while its threads are all busy.
    /// Returns how soon to look again while tasks wait with every thread busy.
    pub fn grow_if_starved(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut queue = lock(&self.shared.queue);
        let grow = self.shared.starved(&mut queue, now);
        // A look is due when the pool could grow then: tasks wait with no idle thread, a place is free, and
        // the oldest task, the last start and the last task to end are all GROW_AFTER old by then.
        let busy = queue.tasks.len() > queue.idle && self.shared.could_grow();
        let last_done = self.shared.epoch + Duration::from_nanos(self.shared.last_done.load(Ordering::Relaxed));
        let next = queue.tasks.front().filter(|_| busy).map(|oldest| {
            let latest = oldest.queued_at.max(queue.grew_at.unwrap_or(oldest.queued_at)).max(last_done);
            (latest + GROW_AFTER).saturating_duration_since(now).max(Duration::from_micros(100))
        });
        drop(queue);
        if grow {
            self.shared.grow();
        }
        next
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
    /// Queue a task (false, the task dropped, when `bounded` and the queue is full), waking a thread when
    /// the queue holds more than the threads awake and idle will take, and starting one when it is starved.
    fn queue(self: &Arc<Shared>, task: Task, bounded: bool) -> bool {
        let mut queue = lock(&self.queue);
        if bounded && queue.tasks.len() >= self.queue_max {
            return false;
        }
        let now = task.queued_at;
        queue.tasks.push_back(task);
        // Threads awake and idle, and those woken but not yet back, take queued tasks without a wake-up each:
        // a thread that finishes a task takes the next one before it sleeps.
        let awake = queue.idle.saturating_sub(queue.sleeping) + queue.waking;
        let wake = queue.tasks.len() > awake && queue.sleeping > queue.waking;
        if wake {
            queue.waking += 1;
        }
        let grow = self.starved(&mut queue, now);
        drop(queue);
        if wake {
            self.ready.notify_one();
        }
        if grow {
            self.grow();
        }
        true
    }

    /// True (and a place taken for a new thread) when the oldest queued task has waited [`GROW_AFTER`] with no
    /// idle thread to take it, no task has ended within [`GROW_AFTER`] (the threads are blocked, not merely
    /// busy) and the pool has not grown within [`GROW_AFTER`]: threads slow to wake, a burst the running
    /// threads drain, or a machine short of cores starts no thread.
    fn starved(&self, queue: &mut Waiting, now: Instant) -> bool {
        let Some(oldest) = queue.tasks.front() else { return false };
        let waited = now.saturating_duration_since(oldest.queued_at) >= GROW_AFTER;
        let paced = queue.grew_at.is_none_or(|at| now.saturating_duration_since(at) >= GROW_AFTER);
        let since_done = self.nanos(now).saturating_sub(self.last_done.load(Ordering::Relaxed));
        let stalled = since_done >= u64::try_from(GROW_AFTER.as_nanos()).unwrap_or(u64::MAX);
        let grow = waited
            && paced
            && stalled
            && queue.tasks.len() > queue.idle
            && !self.stopping.load(Ordering::SeqCst)
            && self.reserve();
        if grow {
            queue.grew_at = Some(now);
        }
        grow
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// A task ended (see `last_done`).
    fn task_done(&self) {
        self.last_done.store(self.nanos(Instant::now()), Ordering::Relaxed);
    }

    /// Starts a thread for a place [`Shared::reserve`] took (a thread start, no waiting).
    fn grow(self: &Arc<Shared>) {
        if let Err(e) = spawn(self) {
            log::error!("{} port: {e}", self.name);
        }
    }

    /// Hand an answer to the I/O thread, waking it unless an earlier answer's wake-up is still pending.
    fn deliver(&self, conn: usize, response: Response) {
        self.tell(Completion::Answer { conn, response });
    }

    fn tell(&self, message: Completion) {
        let sent = lock(&self.done).send(message);
        if sent.is_ok() && !self.rung.swap(true, Ordering::SeqCst) && self.waker.wake().is_err() {
            self.rung.store(false, Ordering::SeqCst);
        }
    }

    /// Whether [`Shared::reserve`] would take a place now.
    fn could_grow(&self) -> bool {
        let over = self.abandoned.load(Ordering::SeqCst).saturating_sub(self.abandoned_max);
        self.live.load(Ordering::SeqCst) + over < self.workers_target && !self.stopping.load(Ordering::SeqCst)
    }

    /// Takes a place for one more live thread, when the pool may grow: fewer live threads than `workers`,
    /// counting the stuck ones past `abandoned_max` as live (so a hung slice cannot make the pool start a thread
    /// per request).
    fn reserve(&self) -> bool {
        let over = self.abandoned.load(Ordering::SeqCst).saturating_sub(self.abandoned_max);
        let target = self.workers_target;
        self.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| (l + over < target).then_some(l + 1)).is_ok()
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
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

fn work(shared: &Arc<Shared>, abandoned: &Arc<AtomicBool>) {
    let mut abandoned = Arc::clone(abandoned);
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
            queue.sleeping += 1;
            let (held, _) = shared.ready.wait_timeout(queue, shared.worker_idle).unwrap_or_else(|e| e.into_inner());
            queue = held;
            queue.sleeping -= 1;
            // Whichever thread wakes takes a pending wake-up's place (a timeout that races a signal at worst
            // costs one wake-up more later).
            queue.waking = queue.waking.saturating_sub(1);
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
        let ran = run_one(shared, task, &abandoned, false);
        shared.task_done();
        match ran {
            Ran::Skipped => {}
            Ran::Answered(answer) => {
                if let Some((conn, response)) = answer {
                    shared.deliver(conn, response);
                }
                queue = lock(&shared.queue);
                // A thread the last window did not need ends here too: under a light steady load every wake-up
                // brings a request, so waiting threads rarely see an empty queue.
                if queue.tasks.is_empty()
                    && queue.surplus > 0
                    && shared.live.load(Ordering::SeqCst) > shared.workers_min
                {
                    queue.surplus -= 1;
                    shared.live.fetch_sub(1, Ordering::SeqCst);
                    return;
                }
                queue.idle += 1;
                continue;
            }
            Ran::Abandoned => {
                // Abandoned at the deadline: serve again if the pool is short (taking its place back), else leave.
                let still = shared.abandoned.fetch_sub(1, Ordering::SeqCst) - 1;
                let target = shared.workers_target;
                let back = !shared.stopping.load(Ordering::SeqCst)
                    && shared
                        .live
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| (l < target).then_some(l + 1))
                        .is_ok();
                if !back {
                    log::info!("{} port: a stuck worker came back and exits ({still} still stuck)", shared.name);
                    return;
                }
                // Its old flag may still be held by the job's record: a fresh one.
                abandoned = Arc::new(AtomicBool::new(false));
                log::info!("{} port: a stuck worker came back and serves again ({still} still stuck)", shared.name);
            }
        }
        queue = lock(&shared.queue);
        queue.idle += 1;
    }
}

/// How one task's run ended.
enum Ran {
    /// The server had answered it (past its deadline) before it started: not run.
    Skipped,
    /// Run; with the answer to write, unless its handler deferred it.
    Answered(Option<(usize, Response)>),
    /// Run past its deadline: the server answered it, and this thread was abandoned (its place in `live`
    /// given up, and counted in `abandoned`).
    Abandoned,
}

/// Runs one task on this thread, under the job's state machine: the thread's `abandoned` flag is the job's
/// worker flag while it runs.
fn run_one(shared: &Arc<Shared>, task: Task, abandoned: &Arc<AtomicBool>, on_io: bool) -> Ran {
    let Task { conn, job, work, .. } = task;
    *lock(&job.worker) = Some(Arc::clone(abandoned));
    job.on_io.store(on_io, Ordering::SeqCst);
    if job.state.compare_exchange(QUEUED, RUNNING, Ordering::SeqCst, Ordering::SeqCst).is_err() {
        // Answered by the server while it waited.
        *lock(&job.worker) = None;
        return Ran::Skipped;
    }
    let later = Later { conn, job: Arc::clone(&job), pool: Arc::clone(shared), spent: false };
    ANSWER_TO.with(|slot| *slot.borrow_mut() = Some(later));
    DEFERRAL.with(|d| d.set(Deferral::None));
    let handler = &shared.handler;
    let run = || match work {
        Work::Request(request) => handler.handle(request, &job),
        Work::Resume(resume) => resume(&job),
    };
    let response = catch_unwind(AssertUnwindSafe(run)).unwrap_or_else(|payload| {
        let message = panic_message(payload.as_ref());
        log::error!("{} port: a handler panicked: {message}", shared.name);
        Response::error(500, "internal", "the node failed while serving this request")
    });
    {
        // Only its own flag: a deferred job may already run on another worker (resumed).
        let mut worker = lock(&job.worker);
        if worker.as_ref().is_some_and(|flag| Arc::ptr_eq(flag, abandoned)) {
            *worker = None;
        }
    }
    // Not deferred: the way to answer later is dropped unused (spent, so it answers nothing).
    if let Some(mut later) = ANSWER_TO.with(|slot| slot.borrow_mut().take()) {
        later.spent = true;
    }
    let deferred = DEFERRAL.with(|d| d.replace(Deferral::None));
    let answered = match deferred {
        Deferral::None => job.state.compare_exchange(RUNNING, DONE, Ordering::SeqCst, Ordering::SeqCst).is_ok(),
        Deferral::Deferred => true,
        Deferral::TooLate => false,
    };
    match (answered, deferred) {
        (false, _) => Ran::Abandoned,
        (true, Deferral::None) => Ran::Answered(Some((conn, response))),
        (true, _) => Ran::Answered(None),
    }
}

impl Pool {
    /// Queue a request for the I/O thread to run itself after its turn ([`Pool::run_queued`]): no thread is
    /// woken and none started for it. False (the request dropped) when the queue is full.
    pub fn submit_inline(&self, conn: usize, job: Arc<Job>, request: Request) -> bool {
        let mut queue = lock(&self.shared.queue);
        if queue.tasks.len() >= self.shared.queue_max {
            return false;
        }
        queue.tasks.push_back(Task { conn, job, work: Work::Request(request), queued_at: Instant::now() });
        true
    }

    /// Whether any task waits in the queue.
    pub fn has_queued(&self) -> bool {
        !lock(&self.shared.queue).tasks.is_empty()
    }

    /// Runs queued tasks on this (the I/O) thread, as a worker would, until the queue is empty or the loop
    /// is taken over (`watch`'s generation moves from `generation`); each answer goes to the loop at once
    /// ([`crate::inline::Inline::answered`]), so none waits behind a later request that holds the thread. The I/O thread holds no place in `live`: a request of it past its deadline counts it as
    /// stuck (`abandoned`) and starts no replacement, since no worker was lost.
    pub fn run_queued(&self, watch: &crate::inline::Inline, generation: u64) {
        let shared = &self.shared;
        watch.set_runner();
        let started = Instant::now();
        let mut abandoned = Arc::new(AtomicBool::new(false));
        while watch.generation() == generation && started.elapsed() < crate::inline::RUN_BUDGET {
            let Some(task) = lock(&shared.queue).tasks.pop_front() else { break };
            watch.begin(task.job.deadline());
            let ran = run_one(shared, task, &abandoned, true);
            watch.end();
            shared.task_done();
            match ran {
                Ran::Skipped | Ran::Answered(None) => {}
                Ran::Answered(Some((conn, response))) => watch.answered(conn, response, self),
                Ran::Abandoned => {
                    // Past its deadline (the server answered it): no longer stuck.
                    shared.abandoned.fetch_sub(1, Ordering::SeqCst);
                    abandoned = Arc::new(AtomicBool::new(false));
                }
            }
        }
    }

    /// This thread, whose loop another thread took over while it ran a request, serves on as a worker if the
    /// pool is short of its threads; else it ends.
    pub fn serve_as_worker(&self) {
        let shared = &self.shared;
        let target = shared.workers_target;
        let short = !shared.stopping.load(Ordering::SeqCst)
            && shared.live.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| (l < target).then_some(l + 1)).is_ok();
        if short {
            work(shared, &Arc::new(AtomicBool::new(false)));
        }
    }

    /// Whether the I/O thread may run requests itself: fewer threads are stuck than `abandoned_max`, so one
    /// more (a request that holds it past its deadline) stays within the bound.
    pub fn may_strand_another(&self) -> bool {
        self.shared.abandoned.load(Ordering::SeqCst) < self.shared.abandoned_max
    }

    /// Hands an answer to the I/O thread (from a thread that is no longer it).
    pub fn deliver(&self, conn: usize, response: Response) {
        self.shared.deliver(conn, response);
    }

    /// Wakes sleeping workers for queued tasks the awake ones will not take (tasks queued for the I/O thread
    /// on a turn that does not run them).
    pub fn kick(&self) {
        let mut queue = lock(&self.shared.queue);
        let mut wakes = 0;
        loop {
            let awake = queue.idle.saturating_sub(queue.sleeping) + queue.waking;
            if queue.tasks.len() <= awake || queue.sleeping <= queue.waking {
                break;
            }
            queue.waking += 1;
            wakes += 1;
        }
        drop(queue);
        for _ in 0..wakes {
            self.shared.ready.notify_one();
        }
    }

    /// Wakes every sleeping worker: the I/O thread stopped running the queue itself.
    pub fn wake_all(&self) {
        lock(&self.shared.queue).waking = 0;
        self.shared.ready.notify_all();
    }
}
