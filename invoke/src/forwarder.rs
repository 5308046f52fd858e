//! The table of forwarded calls in flight on the sending node, and the retry policy.
//!
//! The node runtime owns one [`Forwarder`] on its event loop: [`Forwarder::begin`] registers a call
//! (its peer, deadline and a waiter of the runtime's choosing) and gives the id to put in the
//! `Invoke` frame; an `InvokeReply` frame with that id hands the waiter back through
//! [`Forwarder::complete`]; [`Forwarder::expire`] hands back calls whose deadline passed (answer 504);
//! [`Forwarder::peer_down`] hands back the calls sent to a peer whose connection went away.
//!
//! Retry policy (the sender's): a call may go to another instance when it certainly never reached a
//! slice (the frame could not be sent, or the target answered "no instance here"), or when its method
//! is idempotent (GET, HEAD, OPTIONS). A peer lost after the frame went out may have run the call, so
//! such a call is retried only when idempotent: at most once for everything else.
//!
//! Invariants: ids are unique for the life of the table (a counter, never reused) and across boots of
//! the node (the counter starts at a per-boot base the runtime picks at random, see
//! [`Forwarder::with_first_id`], so a reply owed to a previous incarnation matches no call of this
//! one); a reply completes a call only when it comes from the node the call was sent to
//! ([`Forwarder::complete_from`]); the table never holds more than `calls_max` calls (a full table
//! refuses `begin` and returns the waiter); each call leaves the table exactly once, through
//! `complete`, `expire` or `peer_down`.

use std::collections::{BTreeSet, HashMap};

/// Default bound on calls in flight from one node.
pub const CALLS_MAX_DEFAULT: usize = 16_384;

/// Whether an HTTP method may run twice without harm, so a call may be retried after it may have reached a slice.
pub fn is_idempotent(http_method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS"].iter().any(|m| m.eq_ignore_ascii_case(http_method))
}

struct InFlight<W> {
    node: String,
    deadline_ms: u64,
    idempotent: bool,
    waiter: W,
}

/// A call handed back by [`Forwarder::peer_down`].
#[derive(Debug)]
pub struct PeerDownCall<W> {
    pub id: u64,
    pub waiter: W,
    /// Whether the policy allows another instance: only idempotent calls (the frame may have arrived).
    pub retry: bool,
}

/// `begin` on a full table: the waiter comes back so the shell can answer it (503).
#[derive(Debug)]
pub struct ForwarderFull<W> {
    pub calls_max: usize,
    pub waiter: W,
}

/// Calls in flight, by id, with their deadlines.
pub struct Forwarder<W> {
    calls: HashMap<u64, InFlight<W>>,
    /// `(deadline_ms, id)` of every call in `calls`.
    deadlines: BTreeSet<(u64, u64)>,
    next_id: u64,
    calls_max: usize,
}

impl<W> Forwarder<W> {
    pub fn new(calls_max: usize) -> Forwarder<W> {
        Forwarder::with_first_id(calls_max, 1)
    }

    /// A table whose ids count up from `first_id` (0 is never handed out): give each boot its own
    /// base, such as a random boot nonce in the high 32 bits.
    pub fn with_first_id(calls_max: usize, first_id: u64) -> Forwarder<W> {
        let next_id = first_id.max(1);
        Forwarder { calls: HashMap::new(), deadlines: BTreeSet::new(), next_id, calls_max: calls_max.max(1) }
    }

    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    pub fn calls_max(&self) -> usize {
        self.calls_max
    }

    /// Register a call to `node` that waits `deadline_ms_left` from `now_ms`; returns its id.
    pub fn begin(
        &mut self,
        now_ms: u64,
        node: &str,
        deadline_ms_left: u32,
        idempotent: bool,
        waiter: W,
    ) -> Result<u64, ForwarderFull<W>> {
        if self.calls.len() >= self.calls_max {
            return Err(ForwarderFull { calls_max: self.calls_max, waiter });
        }
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        let deadline_ms = now_ms.saturating_add(u64::from(deadline_ms_left));
        self.deadlines.insert((deadline_ms, id));
        self.calls.insert(id, InFlight { node: node.to_owned(), deadline_ms, idempotent, waiter });
        debug_assert_eq!(self.calls.len(), self.deadlines.len());
        Ok(id)
    }

    /// The reply for `id` arrived: its waiter, or `None` when the call already left (late or unknown reply).
    pub fn complete(&mut self, id: u64) -> Option<W> {
        let call = self.calls.remove(&id)?;
        self.deadlines.remove(&(call.deadline_ms, id));
        Some(call.waiter)
    }

    /// A reply for `id` arrived from `node`: its waiter, or `None` when no call `id` is in flight to
    /// `node` (late, unknown, or sent by a node the call never went to, which leaves the call alone).
    pub fn complete_from(&mut self, id: u64, node: &str) -> Option<W> {
        if self.calls.get(&id)?.node != node {
            return None;
        }
        self.complete(id)
    }

    /// Calls whose deadline is at or before `now_ms`, oldest first (answer them 504).
    pub fn expire(&mut self, now_ms: u64) -> Vec<(u64, W)> {
        let mut expired = Vec::new();
        while let Some(&(deadline_ms, id)) = self.deadlines.first() {
            if deadline_ms > now_ms {
                break;
            }
            self.deadlines.pop_first();
            if let Some(call) = self.calls.remove(&id) {
                expired.push((id, call.waiter));
            }
        }
        expired
    }

    /// The earliest deadline of a call in flight, to set the next timer.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.deadlines.first().map(|&(deadline_ms, _)| deadline_ms)
    }

    /// Every call sent to `node`, which went down before answering them.
    pub fn peer_down(&mut self, node: &str) -> Vec<PeerDownCall<W>> {
        let ids: Vec<u64> = self.calls.iter().filter(|(_, c)| c.node == node).map(|(&id, _)| id).collect();
        let mut lost = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(call) = self.calls.remove(&id) {
                self.deadlines.remove(&(call.deadline_ms, id));
                lost.push(PeerDownCall { id, waiter: call.waiter, retry: call.idempotent });
            }
        }
        lost.sort_by_key(|call| call.id);
        lost
    }
}

impl<W> Default for Forwarder<W> {
    fn default() -> Self {
        Forwarder::new(CALLS_MAX_DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_find_their_waiters_once() {
        let mut table = Forwarder::new(8);
        let a = table.begin(0, "node-2", 100, true, "a").unwrap();
        let b = table.begin(0, "node-3", 100, false, "b").unwrap();
        assert_ne!(a, b);
        assert_eq!(table.complete(b), Some("b"));
        assert_eq!(table.complete(b), None, "a second reply for one id finds nothing");
        assert_eq!(table.complete(999), None);
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_reply_from_another_node_than_the_call_went_to_is_refused() {
        let mut table = Forwarder::new(8);
        let id = table.begin(0, "node-3", 100, true, "call").unwrap();
        assert_eq!(table.complete_from(id, "node-2"), None, "node-2 never got this call");
        assert_eq!(table.len(), 1, "the call still waits for node-3");
        assert_eq!(table.complete_from(id, "node-3"), Some("call"));
    }

    #[test]
    fn tables_of_two_boots_hand_out_different_ids() {
        let mut first: Forwarder<()> = Forwarder::with_first_id(8, 7 << 32);
        let mut second: Forwarder<()> = Forwarder::with_first_id(8, 9 << 32);
        let a: Vec<u64> = (0..4).map(|_| first.begin(0, "n", 1, true, ()).unwrap()).collect();
        let b: Vec<u64> = (0..4).map(|_| second.begin(0, "n", 1, true, ()).unwrap()).collect();
        assert!(a.iter().all(|id| !b.contains(id)), "{a:?} and {b:?}");
        assert_eq!(a[0], 7 << 32);
        let mut zero: Forwarder<()> = Forwarder::with_first_id(8, 0);
        assert_eq!(zero.begin(0, "n", 1, true, ()).unwrap(), 1, "0 is never an id");
    }

    #[test]
    fn deadlines_expire_in_order_and_only_when_due() {
        let mut table = Forwarder::new(8);
        let late = table.begin(10, "n", 500, true, "late").unwrap();
        let soon = table.begin(20, "n", 100, true, "soon").unwrap();
        assert_eq!(table.next_deadline_ms(), Some(120));
        assert!(table.expire(119).is_empty());
        assert_eq!(table.expire(120), vec![(soon, "soon")]);
        assert_eq!(table.complete(soon), None);
        assert_eq!(table.expire(10_000), vec![(late, "late")]);
        assert!(table.is_empty());
        assert_eq!(table.next_deadline_ms(), None);
    }

    #[test]
    fn a_lost_peer_returns_its_calls_with_the_retry_policy() {
        let mut table = Forwarder::new(8);
        let get = table.begin(0, "node-2", 100, is_idempotent("GET"), "get").unwrap();
        let post = table.begin(0, "node-2", 100, is_idempotent("POST"), "post").unwrap();
        let other = table.begin(0, "node-3", 100, false, "other").unwrap();
        let lost = table.peer_down("node-2");
        let summary: Vec<_> = lost.iter().map(|c| (c.id, c.waiter, c.retry)).collect();
        assert_eq!(summary, vec![(get, "get", true), (post, "post", false)]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.expire(u64::MAX), vec![(other, "other")]);
    }

    #[test]
    fn a_full_table_refuses_and_gives_the_waiter_back() {
        let mut table = Forwarder::new(2);
        table.begin(0, "n", 1, true, 1).unwrap();
        table.begin(0, "n", 1, true, 2).unwrap();
        let full = table.begin(0, "n", 1, true, 3).unwrap_err();
        assert_eq!((full.calls_max, full.waiter), (2, 3));
        table.expire(1);
        assert!(table.begin(1, "n", 1, true, 4).is_ok(), "room again once calls left");
    }

    #[test]
    fn idempotent_methods() {
        assert!(is_idempotent("GET") && is_idempotent("head") && is_idempotent("OPTIONS"));
        assert!(!is_idempotent("POST") && !is_idempotent("PUT") && !is_idempotent("DELETE"));
    }
}
