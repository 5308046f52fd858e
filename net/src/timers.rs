//! The loop's timers: one min-heap of deadlines. Entries are never cancelled; a fired entry whose purpose
//! has gone (a peer already reconnected, say) is ignored by whoever handles it.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerKind {
    /// Try to connect to this peer.
    Dial(usize),
    /// Keepalives, idle and handshake timeouts.
    Tick,
    /// A frame held back by fault injection is due.
    Delayed(u64),
    /// Accepting was paused after an accept error; try again.
    AcceptResume,
    /// The handler's own timer.
    User(u64),
}

#[derive(Debug, PartialEq, Eq)]
struct Entry {
    at: Instant,
    seq: u64,
    kind: TimerKind,
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl Timers {
    pub fn set(&mut self, at: Instant, kind: TimerKind) {
        self.seq += 1;
        self.heap.push(Reverse(Entry { at, seq: self.seq, kind }));
    }

    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// The earliest timer due at or before `now`, in deadline order (ties in the order they were set).
    pub fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        if self.heap.peek().is_some_and(|Reverse(e)| e.at <= now) {
            return self.heap.pop().map(|Reverse(e)| e.kind);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        timers.set(t0 + Duration::from_millis(5), TimerKind::User(2));
        timers.set(t0, TimerKind::User(1));
        timers.set(t0, TimerKind::Tick);
        assert_eq!(timers.pop_due(t0), Some(TimerKind::User(1)));
        assert_eq!(timers.pop_due(t0), Some(TimerKind::Tick));
        assert_eq!(timers.pop_due(t0), None);
        assert_eq!(timers.next_due(), Some(t0 + Duration::from_millis(5)));
    }
}
