//! Bulkheads: every slice instance on this node gets its own bounded concurrency and its own bounded
//! queue, so a hung or slow slice exhausts only itself.
//!
//! A call takes a [`Permit`] of its instance's [`Bulkhead`] before it runs and gives it back when the
//! slice returns, whenever that is: a call its caller gave up on (past its deadline) still holds its
//! permit while the slice runs it. When every permit is taken, a call waits in the instance's queue
//! until one frees or its deadline passes (then it never starts); when the queue is full, or every
//! permit is held by a call past its deadline (the instance is *saturated*: its calls hang), a call is
//! refused at once, and the caller answers 503 with a `Retry-After`.
//!
//! Invariants:
//! - at most `permits` calls of one instance run at once, and at most `queue` wait;
//! - a permit is returned exactly once, when the call that took it returns (its drop);
//! - a call that leaves the queue because its deadline passed has not started;
//! - limits are clamped by the node's [`Bulkheads`] so that no instance's `permits + queue` exceeds its
//!   share of the threads that run calls: one slice can never take every thread of a node-wide pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use container::{InstanceId, SliceHandle};
use parking_lot::{Condvar, Mutex};

/// The config key (set from the blueprint's `concurrency`) that sets an instance's permits.
pub const CONCURRENCY_KEY: &str = "aether.concurrency";
/// Permits of an instance whose blueprint names none.
pub const PERMITS_DEFAULT: usize = 16;
/// How long a refused caller is told to wait before it tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a call did not get a permit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Every permit is taken and the queue is full, or every permit is held by a call past its deadline.
    Full { saturated: bool, permits: usize, queue: usize },
    /// The call's deadline passed while it waited in the queue: it never started.
    Deadline,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full { saturated: true, permits, .. } => {
                write!(f, "all {permits} calls in flight are stuck past their deadline")
            }
            Refusal::Full { permits, queue, .. } => write!(f, "{permits} calls in flight and {queue} waiting"),
            Refusal::Deadline => write!(f, "the deadline passed while the call waited for a permit"),
        }
    }
}

#[derive(Default)]
struct State {
    /// Calls holding a permit: token to the deadline of their caller.
    running: BTreeMap<u64, Instant>,
    waiting: usize,
    next_token: u64,
    refused: u64,
    expired: u64,
}

impl State {
    fn stuck(&self, now: Instant) -> usize {
        self.running.values().filter(|deadline| **deadline <= now).count()
    }
}

/// The bulkhead of one slice instance.
pub struct Bulkhead {
    artifact: String,
    permits: usize,
    queue: usize,
    state: Mutex<State>,
    freed: Condvar,
}

/// What an instance's bulkhead looks like now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BulkheadView {
    pub artifact: String,
    pub instance: InstanceId,
    pub permits: usize,
    pub running: usize,
    /// Calls still running past their caller's deadline.
    pub stuck: usize,
    pub waiting: usize,
    /// Calls refused at once (queue full or saturated), since the instance started.
    pub refused: u64,
    /// Calls whose deadline passed in the queue, since the instance started.
    pub expired: u64,
    /// Every permit is held by a call past its deadline.
    pub saturated: bool,
}

impl Bulkhead {
    pub fn new(artifact: &str, permits: usize, queue: usize) -> Bulkhead {
        Bulkhead {
            artifact: artifact.to_owned(),
            permits: permits.max(1),
            queue,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }
    }

    /// A permit for a call whose caller waits until `deadline`: at once, after waiting in the queue, or
    /// refused.
    pub fn enter(self: &Arc<Self>, deadline: Instant) -> Result<Permit, Refusal> {
        let mut state = self.state.lock();
        let now = Instant::now();
        if deadline <= now {
            state.expired += 1;
            return Err(Refusal::Deadline);
        }
        let full = |saturated| Refusal::Full { saturated, permits: self.permits, queue: self.queue };
        if state.running.len() >= self.permits {
            if state.stuck(now) >= self.permits {
                state.refused += 1;
                return Err(full(true));
            }
            if state.waiting >= self.queue {
                state.refused += 1;
                return Err(full(false));
            }
            state.waiting += 1;
            while state.running.len() >= self.permits {
                if self.freed.wait_until(&mut state, deadline).timed_out() && state.running.len() >= self.permits {
                    state.waiting -= 1;
                    state.expired += 1;
                    return Err(Refusal::Deadline);
                }
            }
            state.waiting -= 1;
        }
        let token = state.next_token;
        state.next_token += 1;
        state.running.insert(token, deadline);
        Ok(Permit { bulkhead: Arc::clone(self), token })
    }

    fn leave(&self, token: u64) {
        self.state.lock().running.remove(&token);
        self.freed.notify_one();
    }

    fn view(&self, instance: InstanceId, now: Instant) -> BulkheadView {
        let state = self.state.lock();
        let stuck = state.stuck(now);
        BulkheadView {
            artifact: self.artifact.clone(),
            instance,
            permits: self.permits,
            running: state.running.len(),
            stuck,
            waiting: state.waiting,
            refused: state.refused,
            expired: state.expired,
            saturated: stuck >= self.permits,
        }
    }

    fn idle(&self) -> bool {
        let state = self.state.lock();
        state.running.is_empty() && state.waiting == 0
    }
}

/// A call's right to run on its instance; returned when dropped.
pub struct Permit {
    bulkhead: Arc<Bulkhead>,
    token: u64,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.bulkhead.leave(self.token);
    }
}

/// The bulkheads of every instance of one node.
pub struct Bulkheads {
    by_instance: Mutex<HashMap<InstanceId, Arc<Bulkhead>>>,
    /// Most `permits + queue` of one instance: its share of the threads that run calls.
    share_max: usize,
}

impl Bulkheads {
    /// `threads`: the fewest threads of a pool that runs calls (the app port's handlers, say); one
    /// instance may take at most half of them, queue included.
    pub fn new(threads: usize) -> Bulkheads {
        Bulkheads { by_instance: Mutex::new(HashMap::new()), share_max: (threads / 2).max(2) }
    }

    /// The bulkhead of `slice`'s instance, made on its first call from the instance's config.
    /// Most forwarded calls of `artifact` a node waits on at once: what the artifact's local instances leave
    /// of one instance's share, and never less than half of it (room to spill over from a full instance).
    /// An artifact's local and forwarded calls together therefore hold at most 1.5 shares (three quarters of
    /// the pool), so other slices always keep threads, while a node without a local instance forwards as
    /// many calls at once as a local instance would take.
    pub fn outbound_max(&self, artifact: &str) -> usize {
        let local = self.held(artifact);
        self.share_max.saturating_sub(local).max(self.share_max / 2).max(1)
    }

    /// Calls of `artifact`'s instances on this node, running or queued.
    fn held(&self, artifact: &str) -> usize {
        let map = self.by_instance.lock();
        map.values()
            .filter(|b| b.artifact == artifact)
            .map(|b| {
                let state = b.state.lock();
                state.running.len() + state.waiting
            })
            .sum()
    }

    pub fn of(&self, slice: &SliceHandle) -> Arc<Bulkhead> {
        let id = slice.id();
        let mut map = self.by_instance.lock();
        if let Some(found) = map.get(&id) {
            return Arc::clone(found);
        }
        let configured = slice
            .config()
            .iter()
            .find(|(key, _)| key == CONCURRENCY_KEY)
            .and_then(|(_, value)| value.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(PERMITS_DEFAULT);
        let (permits, queue) = self.limits(configured);
        // Forget instances that are gone and have nothing in flight (a stuck call keeps its entry).
        if map.len() >= 64 {
            map.retain(|_, b| !b.idle());
        }
        let bulkhead = Arc::new(Bulkhead::new(&slice.artifact().to_string(), permits, queue));
        map.insert(id, Arc::clone(&bulkhead));
        bulkhead
    }

    /// Permits and queue for a configured concurrency, within the instance's share: at most half of
    /// the share runs, the rest of it queues (a burst waits rather than being refused).
    fn limits(&self, configured: usize) -> (usize, usize) {
        let permits = configured.min(self.share_max / 2).max(1);
        (permits, self.share_max - permits)
    }

    /// Every instance that has taken calls, by instance id.
    pub fn views(&self) -> Vec<BulkheadView> {
        let now = Instant::now();
        let map = self.by_instance.lock();
        let mut views: Vec<BulkheadView> = map.iter().map(|(id, b)| b.view(*id, now)).collect();
        views.sort_by_key(|v| v.instance);
        views
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[test]
    fn forwarded_calls_get_what_local_instances_leave_of_a_share_and_at_least_half_of_it() {
        let bulkheads = Bulkheads::new(16); // a share is 8 threads
        assert_eq!(bulkheads.outbound_max("g:a:1"), 8, "no local instance: a whole share");
        let local = Arc::new(Bulkhead::new("g:a:1", 6, 0));
        bulkheads.by_instance.lock().insert(1, Arc::clone(&local));
        let held: Vec<_> = (0..3).map(|_| local.enter(soon(1000)).unwrap()).collect();
        assert_eq!(bulkheads.outbound_max("g:a:1"), 5, "the rest of the share");
        assert_eq!(bulkheads.outbound_max("g:b:1"), 8, "another artifact's instance takes nothing from it");
        let more: Vec<_> = (0..3).map(|_| local.enter(soon(1000)).unwrap()).collect();
        assert_eq!(bulkheads.outbound_max("g:a:1"), 4, "never under half a share, so a full instance spills over");
        drop((held, more));
        assert_eq!(bulkheads.outbound_max("g:a:1"), 8);
    }

    #[test]
    fn permits_are_bounded_and_returned_on_drop() {
        let b = Arc::new(Bulkhead::new("g:a:1", 2, 0));
        let first = b.enter(soon(1000)).unwrap();
        let _second = b.enter(soon(1000)).unwrap();
        let refused = b.enter(soon(1000)).err().unwrap();
        assert_eq!(refused, Refusal::Full { saturated: false, permits: 2, queue: 0 });
        drop(first);
        assert!(b.enter(soon(1000)).is_ok(), "a returned permit serves the next call");
    }

    #[test]
    fn a_queued_call_runs_when_a_permit_frees_and_never_after_its_deadline() {
        let b = Arc::new(Bulkhead::new("g:a:1", 1, 1));
        let held = b.enter(soon(5000)).unwrap();
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || b.enter(soon(5000)).map(|_| ()))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(b.view(0, Instant::now()).waiting, 1);
        let third = b.enter(soon(5000)).err().unwrap();
        assert!(matches!(third, Refusal::Full { saturated: false, .. }), "the queue holds one: {third:?}");
        drop(held);
        assert_eq!(waiter.join().unwrap(), Ok(()));

        let _held = b.enter(soon(5000)).unwrap();
        let started = Instant::now();
        assert_eq!(b.enter(soon(100)).err(), Some(Refusal::Deadline));
        assert!(started.elapsed() >= Duration::from_millis(90), "it waited for its deadline");
        assert_eq!(b.enter(Instant::now()).err(), Some(Refusal::Deadline), "a passed deadline never queues");
        let view = b.view(0, Instant::now());
        assert_eq!((view.expired, view.refused, view.waiting), (2, 1, 0));
    }

    #[test]
    fn calls_past_their_deadline_keep_their_permits_and_saturate_the_instance() {
        let b = Arc::new(Bulkhead::new("g:a:1", 2, 2));
        let stuck: Vec<Permit> = (0..2).map(|_| b.enter(soon(30)).unwrap()).collect();
        std::thread::sleep(Duration::from_millis(50));
        let view = b.view(0, Instant::now());
        assert_eq!((view.running, view.stuck, view.saturated), (2, 2, true));
        let started = Instant::now();
        let refused = b.enter(soon(5000)).err().unwrap();
        assert!(matches!(refused, Refusal::Full { saturated: true, .. }), "{refused:?}");
        assert!(started.elapsed() < Duration::from_millis(50), "refused at once, not queued");
        drop(stuck);
        assert!(!b.view(0, Instant::now()).saturated, "the hung calls returned");
        assert!(b.enter(soon(5000)).is_ok());
    }

    #[test]
    fn limits_stay_within_an_instance_share_of_the_threads() {
        let bulkheads = Bulkheads::new(128);
        assert_eq!(bulkheads.limits(PERMITS_DEFAULT), (16, 48));
        assert_eq!(bulkheads.limits(1000), (32, 32), "clamped to half of 128 threads, queue included");
        assert_eq!(bulkheads.limits(4), (4, 60));
        let small = Bulkheads::new(4);
        let (permits, queue) = small.limits(16);
        assert!(permits + queue <= 2 && permits >= 1, "{permits} + {queue}");
    }
}
