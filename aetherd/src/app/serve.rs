//! Threads that serve calls forwarded by other nodes, so the event loop never blocks on a slice.
//!
//! The node runtime hands each incoming `Invoke` request to [`ForwardedCalls::submit`] with a closure
//! that sends the `InvokeReply` frame back; `submit` stamps the request with its arrival time, and a
//! serving thread runs [`Dispatcher::serve_forwarded_at`] and then the closure. `submit` never blocks:
//! when the queue is full the closure runs at once, on the caller's thread, with a 503 "overloaded"
//! reply marked as never having reached a slice (so the sender tries another node).
//!
//! The pool grows with demand: a request queued behind more requests than there are idle threads
//! starts a thread, up to `threads_max`;
//! threads beyond `threads_min` that stay idle for [`IDLE_EXIT`] end. A thread serving a slice that
//! never returns is lost to the pool, but each instance's bulkhead bounds how many calls one slice can
//! hold (running or queued), so one slice never takes every serving thread.
//!
//! Deadlines: a request whose deadline (arrival plus the time its sender still waited) passed while it
//! was queued is never started; a reply that comes back after the deadline is dropped, since its caller
//! is gone. Both are counted ([`ForwardedStats`]).
//!
//! Invariants: at most `queue_max` requests wait; every submitted request gets at most one reply, and
//! exactly one while its caller still waits: requests queued before [`ForwardedCalls::stop`] are still
//! served (each within its own deadline), later ones are answered "shutting down" at once; `stop`
//! waits for calls in progress, but not for one past its deadline (its slice may never return).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use invoke::{InvokeReply, InvokeRequest};
use parking_lot::{Condvar, Mutex};

use super::answers::{error, OVERLOADED};
use super::dispatch::Dispatcher;

/// What to do with a reply: typically, send it to the origin as an `InvokeReply` frame.
pub type ReplyTo = Box<dyn FnOnce(InvokeReply) + Send>;

/// How long a thread beyond the minimum waits idle before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// The most serving threads there may be.
pub const THREADS_MAX: usize = 256;

struct Job {
    request: InvokeRequest,
    received: Instant,
    reply: ReplyTo,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    stopping: bool,
    /// Calls being served: token to deadline.
    serving: BTreeMap<u64, Instant>,
    next_token: u64,
    last_full_log: Option<Instant>,
}

/// Counts of what happened to forwarded calls here, since the node started.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardedStats {
    pub threads: usize,
    pub idle: usize,
    pub queued: usize,
    /// Calls whose deadline passed before they were served: never started.
    pub expired_unstarted: u64,
    /// Replies that came back after their caller's deadline: dropped, never sent.
    pub late_replies_dropped: u64,
    /// Calls refused because the queue was full.
    pub refused_full: u64,
}

struct Shared {
    dispatcher: Arc<Dispatcher>,
    state: Mutex<State>,
    work: Condvar,
    changed: Condvar,
    threads_min: usize,
    threads_max: usize,
    queue_max: usize,
    expired_unstarted: AtomicU64,
    late_replies_dropped: AtomicU64,
    refused_full: AtomicU64,
}

/// A bounded, growing pool of serving threads for forwarded calls.
pub struct ForwardedCalls {
    shared: Arc<Shared>,
}

impl ForwardedCalls {
    /// Start `threads` serving threads, growing up to [`THREADS_MAX`] under load, with a queue of
    /// `queue_max` requests.
    pub fn start(dispatcher: Arc<Dispatcher>, threads: usize, queue_max: usize) -> Result<ForwardedCalls, String> {
        ForwardedCalls::start_with(dispatcher, threads, THREADS_MAX, queue_max)
    }

    /// Start `threads_min` serving threads (growing up to `threads_max` under load) with a queue of
    /// `queue_max` requests.
    pub fn start_with(
        dispatcher: Arc<Dispatcher>,
        threads_min: usize,
        threads_max: usize,
        queue_max: usize,
    ) -> Result<ForwardedCalls, String> {
        let threads_min = threads_min.max(1);
        let shared = Arc::new(Shared {
            dispatcher,
            state: Mutex::new(State::default()),
            work: Condvar::new(),
            changed: Condvar::new(),
            threads_min,
            threads_max: threads_max.max(threads_min),
            queue_max: queue_max.max(1),
            expired_unstarted: AtomicU64::new(0),
            late_replies_dropped: AtomicU64::new(0),
            refused_full: AtomicU64::new(0),
        });
        let calls = ForwardedCalls { shared };
        for _ in 0..threads_min {
            calls.shared.state.lock().threads += 1;
            if let Err(e) = spawn(&calls.shared) {
                calls.shared.state.lock().threads -= 1;
                calls.stop();
                return Err(e);
            }
        }
        Ok(calls)
    }

    /// Queue `request`, which arrived now; `reply` gets its answer on a serving thread, or at once when
    /// the queue is full or the pool stopped.
    pub fn submit(&self, request: InvokeRequest, reply: ReplyTo) {
        let id = request.id;
        let received = Instant::now();
        let shared = &self.shared;
        let mut state = shared.state.lock();
        if state.stopping {
            drop(state);
            return reply(refusal(id, "shutting down", "the node is stopping"));
        }
        if state.queue.len() >= shared.queue_max {
            shared.refused_full.fetch_add(1, Ordering::Relaxed);
            let log_now = state.last_full_log.is_none_or(|at| at.elapsed() >= Duration::from_secs(10));
            if log_now {
                state.last_full_log = Some(received);
            }
            drop(state);
            if log_now {
                let refused = shared.refused_full.load(Ordering::Relaxed);
                log::warn!("forwarded calls: queue full ({} waiting); {refused} refused so far", shared.queue_max);
            }
            let detail = format!("{} forwarded calls already wait here", shared.queue_max);
            return reply(refusal(id, OVERLOADED, &detail));
        }
        state.queue.push_back(Job { request, received, reply });
        // Idle threads may not have woken for earlier requests yet: grow while requests outnumber them.
        let grow = state.queue.len() > state.idle && state.threads < shared.threads_max;
        if grow {
            state.threads += 1;
        }
        drop(state);
        shared.work.notify_one();
        if grow {
            if let Err(e) = spawn(shared) {
                log::warn!("forwarded calls: {e}");
                let mut state = shared.state.lock();
                state.threads -= 1;
                if state.threads == 0 {
                    let jobs: Vec<Job> = state.queue.drain(..).collect();
                    drop(state);
                    for job in jobs {
                        (job.reply)(refusal(job.request.id, OVERLOADED, "no thread can serve it"));
                    }
                }
            }
        }
    }

    pub fn stats(&self) -> ForwardedStats {
        let state = self.shared.state.lock();
        ForwardedStats {
            threads: state.threads,
            idle: state.idle,
            queued: state.queue.len(),
            expired_unstarted: self.shared.expired_unstarted.load(Ordering::Relaxed),
            late_replies_dropped: self.shared.late_replies_dropped.load(Ordering::Relaxed),
            refused_full: self.shared.refused_full.load(Ordering::Relaxed),
        }
    }

    /// Stop taking calls, serve the queued ones, and wait for the serving threads, except those in a
    /// call past its deadline.
    pub fn stop(&self) {
        let shared = &self.shared;
        let mut state = shared.state.lock();
        state.stopping = true;
        shared.work.notify_all();
        loop {
            let now = Instant::now();
            let stuck = state.serving.values().filter(|deadline| **deadline <= now).count();
            if state.threads <= stuck && state.queue.is_empty() {
                return;
            }
            shared.changed.wait_for(&mut state, Duration::from_millis(50));
        }
    }
}

impl Drop for ForwardedCalls {
    fn drop(&mut self) {
        self.stop();
    }
}

fn spawn(shared: &Arc<Shared>) -> Result<(), String> {
    let shared = Arc::clone(shared);
    std::thread::Builder::new()
        .name("app-forwarded".into())
        .spawn(move || serve_queue(&shared))
        .map(drop)
        .map_err(|e| format!("cannot start a thread for forwarded calls: {e}"))
}

fn serve_queue(shared: &Shared) {
    let mut state = shared.state.lock();
    loop {
        if let Some(job) = state.queue.pop_front() {
            let token = state.next_token;
            state.next_token += 1;
            let deadline = job.received + Duration::from_millis(u64::from(job.request.deadline_ms_left));
            state.serving.insert(token, deadline);
            drop(state);
            serve(shared, job, deadline);
            state = shared.state.lock();
            state.serving.remove(&token);
            shared.changed.notify_all();
            continue;
        }
        if state.stopping {
            break;
        }
        state.idle += 1;
        let timed_out = shared.work.wait_for(&mut state, IDLE_EXIT).timed_out();
        state.idle -= 1;
        if timed_out && state.queue.is_empty() && state.threads > shared.threads_min {
            break;
        }
    }
    state.threads -= 1;
    shared.changed.notify_all();
}

fn serve(shared: &Shared, job: Job, deadline: Instant) {
    if Instant::now() >= deadline {
        // Its caller already gave up: never start it, and send nothing.
        shared.expired_unstarted.fetch_add(1, Ordering::Relaxed);
        log::debug!("forwarded call {} from {} expired before it was served", job.request.id, job.request.origin);
        return;
    }
    let reply = shared.dispatcher.serve_forwarded_at(job.request, job.received);
    if Instant::now() > deadline {
        shared.late_replies_dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    (job.reply)(reply);
}

fn refusal(id: u64, kind: &str, detail: &str) -> InvokeReply {
    InvokeReply { id, ..error(503, kind, detail, false) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use container::{Container, ContainerConfig};
    use invoke::Registry;
    use parking_lot::RwLock;

    fn request(id: u64) -> InvokeRequest {
        InvokeRequest {
            id,
            origin: "node-2".into(),
            artifact: "org.aether.examples:echo:1.0.0".into(),
            method: "echo".into(),
            request: Vec::new(),
            deadline_ms_left: 100,
            hops: 1,
            request_id: String::new(),
            caller: String::new(),
            depth: 0,
            pins: Vec::new(),
        }
    }

    fn dispatcher() -> Arc<Dispatcher> {
        let mut config = ContainerConfig::new("/nonexistent-repo", "node-1");
        config.pool.workers = 1;
        dispatcher_of(Arc::new(Container::new(config).unwrap()))
    }

    fn dispatcher_of(container: Arc<Container>) -> Arc<Dispatcher> {
        let registry = Arc::new(RwLock::new(Registry::new()));
        Arc::new(Dispatcher::new("node-1".into(), container, registry, None, Duration::from_millis(100)))
    }

    #[test]
    fn every_call_gets_one_reply_with_its_id_also_after_stop() {
        let calls = ForwardedCalls::start(dispatcher(), 2, 16).unwrap();
        let (sender, replies) = channel();
        for id in 1..=5 {
            let sender = sender.clone();
            calls.submit(request(id), Box::new(move |reply| sender.send(reply).unwrap()));
        }
        let mut got: Vec<InvokeReply> = (0..5).map(|_| replies.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        got.sort_by_key(|r| r.id);
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(got.iter().all(InvokeReply::is_no_instance), "no echo here: {got:?}");
        calls.stop();
        calls.submit(request(6), Box::new(move |reply| sender.send(reply).unwrap()));
        let refused = replies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((refused.id, refused.status, refused.reached_slice), (6, 503, false));
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let calls = ForwardedCalls::start_with(dispatcher(), 1, 1, 1).unwrap();
        // Hold the only serving thread inside a reply, so the queue fills behind it.
        let (hold, release) = channel::<()>();
        let (started, wait_started) = channel::<()>();
        calls.submit(
            request(1),
            Box::new(move |_| {
                started.send(()).unwrap();
                let _ = release.recv();
            }),
        );
        wait_started.recv_timeout(Duration::from_secs(5)).unwrap();
        calls.submit(request(2), Box::new(|_| {}));
        let (sender, replies) = channel();
        calls.submit(request(3), Box::new(move |reply| sender.send(reply).unwrap()));
        let refused = replies.try_recv().expect("answered on the caller's thread");
        assert_eq!((refused.id, refused.status, refused.reached_slice), (3, 503, false));
        drop(hold);
    }

    #[test]
    fn a_call_whose_deadline_passes_in_the_queue_never_runs() {
        let mut config = ContainerConfig::new(crate::app::tests::repo(), "node-1");
        config.pool.workers = 1;
        let container = Arc::new(Container::new(config).unwrap());
        let counter = container::Artifact::parse("org.aether.examples:counter:1.0.0").unwrap();
        container.deploy(&counter, vec![]).unwrap();
        let calls = ForwardedCalls::start_with(dispatcher_of(container.clone()), 1, 1, 4).unwrap();
        let incr = |id, deadline_ms_left| InvokeRequest {
            artifact: counter.to_string(),
            method: "incr".into(),
            request: aether_sdk::encode_request(&[("name", "c")], &[], b"").unwrap(),
            deadline_ms_left,
            ..request(id)
        };
        // Hold the only serving thread inside a reply for 300 ms.
        let (started, wait_started) = channel::<()>();
        calls.submit(
            request(1),
            Box::new(move |_| {
                started.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(300));
            }),
        );
        wait_started.recv_timeout(Duration::from_secs(5)).unwrap();
        let (sender, replies) = channel();
        let expired = sender.clone();
        calls.submit(incr(2, 100), Box::new(move |reply| expired.send(reply).unwrap()));
        calls.submit(incr(3, 5000), Box::new(move |reply| sender.send(reply).unwrap()));
        let served = replies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((served.id, served.status), (3, 200), "{}", String::from_utf8_lossy(&served.body));
        assert!(String::from_utf8_lossy(&served.body).contains(r#""value":1"#), "only call 3 ran");
        assert!(replies.recv_timeout(Duration::from_millis(200)).is_err(), "nothing is sent for call 2");
        assert_eq!(calls.stats().expired_unstarted, 1);
        calls.stop();
        container.shutdown();
    }

    #[test]
    fn the_pool_grows_past_its_minimum_when_every_thread_is_busy() {
        let calls = ForwardedCalls::start_with(dispatcher(), 1, 4, 16).unwrap();
        let (release, hold) = std::sync::mpsc::sync_channel::<()>(0);
        let hold = Arc::new(Mutex::new(hold));
        let (sender, replies) = channel();
        for id in 1..=3 {
            let (hold, sender) = (hold.clone(), sender.clone());
            calls.submit(
                request(id),
                Box::new(move |reply| {
                    sender.send(reply.id).unwrap();
                    let _ = hold.lock().recv_timeout(Duration::from_secs(5));
                }),
            );
        }
        let mut got: Vec<u64> = (0..3).map(|_| replies.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        got.sort();
        assert_eq!(got, [1, 2, 3], "three calls answered while the first still holds its thread");
        assert!(calls.stats().threads >= 2, "{:?}", calls.stats());
        drop(release);
        calls.stop();
    }
}
