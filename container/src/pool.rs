//! The worker pool that runs slice calls with a deadline.
//!
//! A caller hands a job to the pool and waits for its answer until a deadline. If the deadline
//! passes while the job is still queued, the job is cancelled and never runs. If it passes while a
//! worker runs the job, that worker is abandoned: the caller gets its error at once, a replacement
//! worker is started so the pool keeps its size, and the abandoned worker exits when (if ever) the
//! job returns. Replacements are bounded by `abandoned_max`; past it the pool serves on with fewer
//! workers and says so in the log.
//!
//! Invariants: the queue never holds more than `queue_max` jobs; each job runs at most once; a
//! panic in a job is caught and reported to its caller, never killing the worker.

use std::any::Any;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// Why a job gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum PoolError {
    /// The deadline passed; `started` tells whether a worker had begun the job.
    Deadline {
        started: bool,
    },
    /// The queue is full.
    Overloaded {
        queue_max: usize,
    },
    /// The job panicked (outside the slice boundary, which catches its own).
    Panicked(String),
    ShuttingDown,
}

/// Sizes and limits of a pool.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    pub workers: usize,
    pub queue_max: usize,
    pub abandoned_max: usize,
}

/// Counts, for tests and metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub workers: usize,
    pub queued: usize,
    pub abandoned: usize,
}

type Job = Box<dyn FnOnce() -> JobEnd + Send>;

/// What a worker learns when its job returns.
struct JobEnd {
    abandoned: bool,
    replaced: bool,
}

struct Shared {
    queue: Mutex<VecDeque<Job>>,
    ready: Condvar,
    shutdown: AtomicBool,
    workers: AtomicUsize,
    abandoned: AtomicUsize,
    config: PoolConfig,
}

/// A fixed-size pool of named worker threads.
pub struct WorkerPool {
    shared: Arc<Shared>,
}

enum Slot<T> {
    Queued,
    Running,
    Done(std::thread::Result<T>),
    Taken,
    Cancelled,
    Abandoned { replaced: bool },
}

/// Where a job's answer meets its caller.
struct Rendezvous<T> {
    slot: Mutex<Slot<T>>,
    done: Condvar,
}

impl WorkerPool {
    pub fn new(config: PoolConfig) -> WorkerPool {
        let workers = config.workers.max(1);
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            shutdown: AtomicBool::new(false),
            workers: AtomicUsize::new(0),
            abandoned: AtomicUsize::new(0),
            config: PoolConfig { workers, ..config },
        });
        for _ in 0..workers {
            spawn_worker(&shared);
        }
        WorkerPool { shared }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            workers: self.shared.workers.load(Ordering::SeqCst),
            queued: self.shared.queue.lock().len(),
            abandoned: self.shared.abandoned.load(Ordering::SeqCst),
        }
    }

    /// Run `job` on a worker and wait for its answer until `deadline` from now.
    pub fn run<T: Send + 'static>(
        &self,
        deadline: Duration,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        if self.shared.shutdown.load(Ordering::SeqCst) {
            return Err(PoolError::ShuttingDown);
        }
        let meeting = Arc::new(Rendezvous { slot: Mutex::new(Slot::Queued), done: Condvar::new() });
        self.enqueue(wrap(Arc::clone(&meeting), job))?;
        match wait(&meeting, Instant::now() + deadline) {
            Some(answer) => {
                answer.map_err(|payload| PoolError::Panicked(aether_sdk::export::panic_message(payload.as_ref())))
            }
            None => self.give_up(&meeting),
        }
    }

    fn enqueue(&self, job: Job) -> Result<(), PoolError> {
        let mut queue = self.shared.queue.lock();
        if queue.len() >= self.shared.config.queue_max {
            return Err(PoolError::Overloaded { queue_max: self.shared.config.queue_max });
        }
        queue.push_back(job);
        drop(queue);
        self.shared.ready.notify_one();
        Ok(())
    }

    /// The deadline passed: cancel a queued job, or abandon (and replace) the worker running it.
    fn give_up<T>(&self, meeting: &Rendezvous<T>) -> Result<T, PoolError> {
        let mut slot = meeting.slot.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Queued => {
                *slot = Slot::Cancelled;
                Err(PoolError::Deadline { started: false })
            }
            Slot::Running => {
                let replaced = self.reserve_replacement();
                *slot = Slot::Abandoned { replaced };
                drop(slot);
                if replaced {
                    spawn_worker(&self.shared);
                }
                Err(PoolError::Deadline { started: true })
            }
            Slot::Done(answer) => {
                answer.map_err(|p| PoolError::Panicked(aether_sdk::export::panic_message(p.as_ref())))
            }
            other => {
                *slot = other;
                Err(PoolError::Deadline { started: true })
            }
        }
    }

    fn reserve_replacement(&self) -> bool {
        let abandoned = self.shared.abandoned.fetch_add(1, Ordering::SeqCst) + 1;
        let replaced = abandoned <= self.shared.config.abandoned_max;
        if !replaced {
            log::warn!(
                "slice worker pool: {abandoned} workers are stuck in calls past their deadline; not replacing more than {}",
                self.shared.config.abandoned_max
            );
        }
        replaced
    }

    /// Stop taking jobs; idle workers exit, busy ones after their current job.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.ready.notify_all();
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wrap<T: Send + 'static>(meeting: Arc<Rendezvous<T>>, job: impl FnOnce() -> T + Send + 'static) -> Job {
    Box::new(move || {
        {
            let mut slot = meeting.slot.lock();
            if !matches!(*slot, Slot::Queued) {
                return JobEnd { abandoned: false, replaced: false };
            }
            *slot = Slot::Running;
        }
        let answer = catch_unwind(AssertUnwindSafe(job));
        finish(&meeting, answer)
    })
}

fn finish<T>(meeting: &Rendezvous<T>, answer: Result<T, Box<dyn Any + Send>>) -> JobEnd {
    let mut slot = meeting.slot.lock();
    if let Slot::Abandoned { replaced } = *slot {
        return JobEnd { abandoned: true, replaced };
    }
    *slot = Slot::Done(answer);
    meeting.done.notify_one();
    JobEnd { abandoned: false, replaced: false }
}

fn wait<T>(meeting: &Rendezvous<T>, until: Instant) -> Option<std::thread::Result<T>> {
    let mut slot = meeting.slot.lock();
    loop {
        if matches!(*slot, Slot::Done(_)) {
            let Slot::Done(answer) = std::mem::replace(&mut *slot, Slot::Taken) else { return None };
            return Some(answer);
        }
        if meeting.done.wait_until(&mut slot, until).timed_out() && !matches!(*slot, Slot::Done(_)) {
            return None;
        }
    }
}

fn spawn_worker(shared: &Arc<Shared>) {
    let shared_for_worker = Arc::clone(shared);
    let n = shared.workers.fetch_add(1, Ordering::SeqCst);
    let spawned = std::thread::Builder::new().name(format!("slice-worker-{n}")).spawn(move || {
        worker_loop(&shared_for_worker);
        shared_for_worker.workers.fetch_sub(1, Ordering::SeqCst);
    });
    if let Err(e) = spawned {
        shared.workers.fetch_sub(1, Ordering::SeqCst);
        log::error!("slice worker pool: cannot start a worker: {e}");
    }
}

fn worker_loop(shared: &Shared) {
    while let Some(job) = next_job(shared) {
        let end = job();
        if end.abandoned {
            shared.abandoned.fetch_sub(1, Ordering::SeqCst);
            if end.replaced {
                return;
            }
        }
    }
}

fn next_job(shared: &Shared) -> Option<Job> {
    let mut queue = shared.queue.lock();
    loop {
        if let Some(job) = queue.pop_front() {
            return Some(job);
        }
        if shared.shutdown.load(Ordering::SeqCst) {
            return None;
        }
        shared.ready.wait(&mut queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(workers: usize) -> WorkerPool {
        WorkerPool::new(PoolConfig { workers, queue_max: 8, abandoned_max: 2 })
    }

    #[test]
    fn jobs_answer_and_panics_are_reported() {
        let pool = pool(1);
        assert_eq!(pool.run(Duration::from_secs(5), || 2 + 2), Ok(4));
        let err = pool.run(Duration::from_secs(5), || -> u32 { panic!("boom") });
        assert_eq!(err, Err(PoolError::Panicked("boom".into())));
        assert_eq!(pool.run(Duration::from_secs(5), || 7), Ok(7));
    }

    #[test]
    fn a_stuck_worker_is_replaced_and_the_pool_serves_on() {
        let pool = pool(1);
        let release = Arc::new(AtomicBool::new(false));
        let stuck = Arc::clone(&release);
        let err = pool.run(Duration::from_millis(50), move || {
            while !stuck.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        assert_eq!(err, Err(PoolError::Deadline { started: true }));
        assert_eq!(pool.stats().abandoned, 1);
        assert_eq!(pool.run(Duration::from_secs(5), || 1), Ok(1));
        release.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.stats() != (PoolStats { workers: 1, queued: 0, abandoned: 0 }) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(pool.stats(), PoolStats { workers: 1, queued: 0, abandoned: 0 });
    }

    #[test]
    fn a_full_queue_is_refused() {
        let pool = WorkerPool::new(PoolConfig { workers: 1, queue_max: 0, abandoned_max: 0 });
        assert_eq!(pool.run(Duration::from_secs(1), || 1), Err(PoolError::Overloaded { queue_max: 0 }));
    }
}
