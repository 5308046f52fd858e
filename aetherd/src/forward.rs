//! Calls to slices on other nodes, over the cluster transport: the app port's and the container's
//! [`Forward`] implementation, and the table of calls waiting for an `InvokeReply`.
//!
//! A caller (app handler thread or slice worker) registers its call in the shared [`Forwarder`] table, asks
//! the event loop to send the `Invoke` frame, and either blocks on its own channel until the loop delivers the
//! reply, the peer goes down (`Lost`), or the deadline passes ([`Forward::forward`]), or leaves a callback the
//! loop runs with the outcome ([`Forward::forward_then`]: the app port's deferred answers, so a forwarded call
//! holds no thread while it waits). The loop never blocks on a caller: a delivery is a `try_send` into a
//! one-slot channel or a callback that must not block.
//!
//! Invariants: every registered call is completed exactly once (reply, peer down, expiry, or the caller's
//! own timeout removing it; a callback dropped uncalled, with its command when the loop has stopped, is
//! called with `Stopped`); the table is bounded (a full table answers `Unreachable` at once); call ids
//! start at a random per-boot base, so no reply owed to an earlier incarnation of this node matches a
//! call of this one, and a reply completes a call only when it comes from the node the call went to;
//! replies that match no waiting call (late, stale or misdirected) are dropped and counted, and so
//! are replies this node could not send ([`Calls::reply_unsendable`], logged at most every 10 s).

use crate::app::{Forward, ForwardError};
use crate::node::Command;
use invoke::forwarder::Forwarder;
use invoke::{InvokeReply, InvokeRequest};
use net::NetHandle;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often at most an unsendable reply is logged.
const UNSENDABLE_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often at most the data path's drop counts are logged.
const COUNTERS_LOG_EVERY: Duration = Duration::from_secs(60);

/// Who waits for a forwarded call's outcome.
pub enum Waiter {
    /// A caller blocked on its channel.
    Channel(SyncSender<Result<InvokeReply, ForwardError>>),
    /// A callback, run on the thread the outcome is known on (usually the event loop).
    Then(Then),
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Channel(_) => "Waiter::Channel",
            Waiter::Then(_) => "Waiter::Then",
        })
    }
}

impl Waiter {
    /// Hands the call's outcome to its caller; never blocks on it.
    pub fn deliver(self, outcome: Result<InvokeReply, ForwardError>) {
        match self {
            Waiter::Channel(channel) => {
                let _ = channel.try_send(outcome);
            }
            Waiter::Then(then) => then.call(outcome),
        }
    }
}

/// A callback for a forwarded call's outcome: called once; dropped uncalled, it is called with `Stopped`.
pub struct Then(Option<crate::app::ForwardDone>);

impl Then {
    pub fn new(done: crate::app::ForwardDone) -> Then {
        Then(Some(done))
    }

    fn call(mut self, outcome: Result<InvokeReply, ForwardError>) {
        if let Some(done) = self.0.take() {
            done(outcome);
        }
    }
}

impl Drop for Then {
    fn drop(&mut self) {
        if let Some(done) = self.0.take() {
            done(Err(ForwardError::Stopped));
        }
    }
}

/// State shared between callers and the event loop.
pub struct Calls {
    pub table: Mutex<Forwarder<Waiter>>,
    /// Nodes the failure detector believes alive (kept by the loop).
    pub alive: RwLock<BTreeSet<String>>,
    epoch: Instant,
    /// Replies that matched no call waiting for them from their sender: dropped.
    replies_unmatched: AtomicU64,
    /// Replies to other nodes' calls that could not be sent.
    replies_unsendable: AtomicU64,
    unsendable_logged: Mutex<Option<Instant>>,
    /// The counts last logged by [`Calls::log_counters`], and when.
    counters_logged: Mutex<(Instant, Vec<u64>)>,
}

impl Calls {
    /// A table whose ids start at a random base in the high 32 bits, unique to this boot.
    pub fn new() -> Arc<Calls> {
        Calls::with_boot_nonce(boot_nonce())
    }

    /// A table whose ids start at `nonce << 32`.
    pub fn with_boot_nonce(nonce: u32) -> Arc<Calls> {
        let table = Forwarder::with_first_id(invoke::CALLS_MAX_DEFAULT, (u64::from(nonce) << 32) | 1);
        Arc::new(Calls {
            table: Mutex::new(table),
            alive: RwLock::default(),
            epoch: Instant::now(),
            replies_unmatched: AtomicU64::new(0),
            replies_unsendable: AtomicU64::new(0),
            unsendable_logged: Mutex::new(None),
            counters_logged: Mutex::new((Instant::now(), Vec::new())),
        })
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Hands a reply that came from node `from` to its caller; one that matches no call waiting for
    /// `from` (its caller gave up, or it is owed to another call) is dropped and counted.
    pub fn complete(&self, from: &str, reply: InvokeReply) {
        let waiter = self.table.lock().complete_from(reply.id, from);
        match waiter {
            Some(waiter) => waiter.deliver(Ok(reply)),
            None => {
                let n = self.replies_unmatched.fetch_add(1, Ordering::Relaxed) + 1;
                log::debug!("dropping reply {} from {from}: no call waits for it ({n} so far)", reply.id);
            }
        }
    }

    /// Replies dropped because no call waited for them.
    pub fn replies_unmatched(&self) -> u64 {
        self.replies_unmatched.load(Ordering::Relaxed)
    }

    /// A reply to `peer`'s call could not be sent: counted, and logged at most every 10 s.
    pub fn reply_unsendable(&self, peer: &str, why: &str) {
        let n = self.replies_unsendable.fetch_add(1, Ordering::Relaxed) + 1;
        let mut logged = self.unsendable_logged.lock();
        if logged.is_none_or(|at| at.elapsed() >= UNSENDABLE_LOG_EVERY) {
            *logged = Some(Instant::now());
            log::warn!("a reply to {peer} could not be sent: {why} ({n} unsendable replies so far)");
        }
    }

    /// Replies to other nodes' calls that could not be sent.
    pub fn replies_unsendable(&self) -> u64 {
        self.replies_unsendable.load(Ordering::Relaxed)
    }

    /// Every [`COUNTERS_LOG_EVERY`] at most, one log line with the data path's drop counts when they
    /// changed: replies nobody waited for, replies that could not be sent, and (when `served` is given)
    /// forwarded calls that expired unstarted, replies dropped as late, and calls refused on a full queue.
    pub fn log_counters(&self, served: Option<&crate::app::ForwardedStats>) {
        let mut logged = self.counters_logged.lock();
        if logged.0.elapsed() < COUNTERS_LOG_EVERY {
            return;
        }
        let mut now = vec![self.replies_unmatched(), self.replies_unsendable()];
        if let Some(s) = served {
            now.extend([s.expired_unstarted, s.late_replies_dropped, s.refused_full]);
        }
        logged.0 = Instant::now();
        if now == logged.1 {
            return;
        }
        let at = |i: usize| now.get(i).copied().unwrap_or(0);
        log::info!(
            "data path since start: {} replies nobody waited for, {} replies unsendable; forwarded here: {} expired \
             before they started, {} late replies dropped, {} refused on a full queue",
            at(0),
            at(1),
            at(2),
            at(3),
            at(4)
        );
        logged.1 = now;
    }

    /// Calls in flight to a node that went down: the request may have run there.
    pub fn peer_down(&self, node: &str) {
        let lost = self.table.lock().peer_down(node);
        for call in lost {
            call.waiter.deliver(Err(ForwardError::Lost(format!("{node} went down"))));
        }
    }

    pub fn expire(&self) {
        let expired = self.table.lock().expire(self.now_ms());
        for (_, waiter) in expired {
            waiter.deliver(Err(ForwardError::Timeout));
        }
    }
}

/// The app port's way to reach other nodes.
pub struct NodeForward {
    pub calls: Arc<Calls>,
    pub handle: NetHandle<Command>,
}

impl Forward for NodeForward {
    fn forward(&self, node: &str, mut request: InvokeRequest, deadline: Duration) -> Result<InvokeReply, ForwardError> {
        let (tx, rx) = sync_channel(1);
        let now_ms = self.calls.now_ms();
        let id = self
            .calls
            .table
            .lock()
            .begin(now_ms, node, request.deadline_ms_left, false, Waiter::Channel(tx))
            .map_err(|_| ForwardError::Unreachable("too many calls in flight".into()))?;
        request.id = id;
        let command = Command::SendInvoke { node: node.to_string(), id, payload: request.encode() };
        if self.handle.command(command).is_err() {
            self.calls.table.lock().complete(id);
            return Err(ForwardError::Stopped);
        }
        match rx.recv_timeout(deadline) {
            Ok(result) => result,
            Err(_) => {
                self.calls.table.lock().complete(id);
                Err(ForwardError::Timeout)
            }
        }
    }

    fn forward_then(&self, node: &str, mut request: InvokeRequest, done: crate::app::ForwardDone) {
        let now_ms = self.calls.now_ms();
        let waiter = Waiter::Then(Then::new(done));
        let begun = self.calls.table.lock().begin(now_ms, node, request.deadline_ms_left, false, waiter);
        let id = match begun {
            Ok(id) => id,
            Err(full) => return full.waiter.deliver(Err(ForwardError::Unreachable("too many calls in flight".into()))),
        };
        request.id = id;
        let command = Command::SendInvoke { node: node.to_string(), id, payload: request.encode() };
        if self.handle.command(command).is_err() {
            let waiter = self.calls.table.lock().complete(id);
            if let Some(waiter) = waiter {
                waiter.deliver(Err(ForwardError::Stopped));
            }
        }
    }

    fn is_alive(&self, node: &str) -> bool {
        self.calls.alive.read().contains(node)
    }
}

/// The prefix of the alert ids that report saturated slice instances (`alerts/slice-saturated.{node}.{artifact}`).
pub const SATURATED_ALERT_PREFIX: &str = "slice-saturated.";

/// Where the app port's saturation reports go: an alert in the replicated store while an instance is
/// saturated (written again while it stays so, with the wall-clock time, so a reader can ignore one
/// left behind by a dead node), removed when it serves again. Writes go through the event loop like an
/// API write; one that fails (no quorum) is only logged, the next report repeats it.
pub fn health_sink(handle: NetHandle<Command>) -> crate::app::HealthSink {
    Arc::new(move |health: &crate::app::SliceHealth| {
        let text = format!("alerts/{SATURATED_ALERT_PREFIX}{}.{}", health.node, health.artifact);
        let Ok(key) = kvstore::AetherKey::parse(&text) else {
            return log::warn!("cannot record the saturation of {}: `{text}` is not a valid key", health.artifact);
        };
        let command = if health.saturated {
            let value = serde_json::json!({
                "kind": "slice-saturated",
                "node": health.node,
                "artifact": health.artifact,
                "stuck": health.stuck,
                "permits": health.permits,
                "at_ms": crate::managers::wall_ms(),
            });
            kvstore::Command::Put { key, value: value.to_string().into_bytes() }
        } else {
            kvstore::Command::Remove { key }
        };
        let (reply, _) = std::sync::mpsc::channel();
        if handle.command(Command::KvWrite(command, reply.into())).is_err() {
            log::debug!("cannot record the health of {}: the node is stopping", health.artifact);
        }
    })
}

/// 32 random bits for this boot (the kernel's, else the clock's and the process id's).
fn boot_nonce() -> u32 {
    let mut bytes = [0u8; 4];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    if random.is_ok() {
        return u32::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u32) ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(id: u64) -> InvokeReply {
        let body = b"x".to_vec();
        InvokeReply {
            id,
            status: 200,
            content_type: "text/plain".into(),
            headers: Vec::new(),
            body,
            reached_slice: true,
        }
    }

    #[test]
    fn a_reply_reaches_its_caller_only_from_the_node_the_call_went_to() {
        let calls = Calls::with_boot_nonce(5);
        let (tx, rx) = sync_channel(1);
        let id = calls.table.lock().begin(calls.now_ms(), "node-3", 1000, true, Waiter::Channel(tx)).unwrap();
        calls.complete("node-2", reply(id));
        assert!(rx.try_recv().is_err(), "node-2 never got this call");
        assert_eq!(calls.replies_unmatched(), 1);
        calls.complete("node-3", reply(id));
        assert_eq!(rx.try_recv().unwrap().unwrap().id, id);
        calls.complete("node-3", reply(id));
        assert_eq!(calls.replies_unmatched(), 2, "a second reply finds its caller gone");
    }

    #[test]
    fn two_boots_hand_out_different_ids() {
        let (first, second) = (Calls::with_boot_nonce(1), Calls::with_boot_nonce(2));
        let ids = |calls: &Calls| -> Vec<u64> {
            (0..3)
                .map(|_| calls.table.lock().begin(0, "n", 10, true, Waiter::Channel(sync_channel(1).0)).unwrap())
                .collect()
        };
        let (a, b) = (ids(&first), ids(&second));
        assert!(a.iter().all(|id| !b.contains(id)), "{a:?} {b:?}");
        calls_unsendable_are_counted(&first);
    }

    #[test]
    fn a_callback_gets_its_outcome_once_and_stopped_when_dropped_uncalled() {
        let calls = Calls::with_boot_nonce(7);
        let (tx, rx) = std::sync::mpsc::channel();
        let then = |tx: std::sync::mpsc::Sender<_>| {
            Waiter::Then(Then::new(Box::new(move |outcome: Result<InvokeReply, ForwardError>| {
                tx.send(outcome.map(|r| r.id)).unwrap()
            })))
        };
        let replied = calls.table.lock().begin(calls.now_ms(), "node-2", 1000, false, then(tx.clone())).unwrap();
        let lost = calls.table.lock().begin(calls.now_ms(), "node-3", 1000, false, then(tx.clone())).unwrap();
        let expired = calls.table.lock().begin(calls.now_ms(), "node-2", 0, false, then(tx.clone())).unwrap();
        let dropped = calls.table.lock().begin(calls.now_ms(), "node-2", 60_000, false, then(tx)).unwrap();
        calls.complete("node-2", reply(replied));
        assert_eq!(rx.try_recv().unwrap(), Ok(replied));
        calls.complete("node-2", reply(replied));
        assert!(rx.try_recv().is_err(), "called once");
        calls.peer_down("node-3");
        assert!(matches!(rx.try_recv().unwrap(), Err(ForwardError::Lost(_))), "{lost}");
        calls.expire();
        assert_eq!(rx.try_recv().unwrap(), Err(ForwardError::Timeout), "{expired}");
        drop(calls);
        assert_eq!(rx.try_recv().unwrap(), Err(ForwardError::Stopped), "{dropped}");
    }

    fn calls_unsendable_are_counted(calls: &Calls) {
        calls.reply_unsendable("node-9", "queue full");
        calls.reply_unsendable("node-9", "queue full");
        assert_eq!(calls.replies_unsendable(), 2);
    }
}
