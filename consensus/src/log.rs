//! The decided log kept in memory for catch-up, and the latest snapshot that replaces its compacted prefix.
//!
//! Invariants: `entries` holds consecutive slots starting at `first_slot`. Past `slots_max` entries or
//! `bytes_max` bytes the log is over its soft bound and the replica asks for a snapshot, which compacts
//! it without losing anything a peer may need; at twice those bounds (the shell is not answering) the
//! oldest entries are dropped, counted in `dropped` (a peer that needs one of them then waits for the
//! next snapshot, which the replica asks for when such a peer shows up); when a snapshot is stored,
//! entries below its `next_slot` are dropped but for a *catch-up tail*: when the log reaches the snapshot's
//! slot, up to `tail_slots` entries just below it stay (at most a quarter of either bound, and never so
//! many that the compacted log is over its soft bound), so a peer a few slots behind when the snapshot was
//! taken catches up from the log rather than by fetching the whole store. Batches are kept as decided,
//! before duplicate removal.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::message::{DecidedSlot, SessionRecord};
use crate::types::{Command, Members, Slot};

/// The latest snapshot. `state` is shared: catch-up sends slices of it and never copies it whole.
#[derive(Clone, Debug)]
pub(crate) struct StoredSnapshot {
    pub(crate) next_slot: Slot,
    pub(crate) sessions: Vec<SessionRecord>,
    /// The membership governing `next_slot`.
    pub(crate) members: Members,
    pub(crate) state: Bytes,
}

pub(crate) struct DecidedLog {
    first_slot: Slot,
    entries: VecDeque<Option<Vec<Command>>>,
    slots_max: usize,
    bytes: usize,
    bytes_max: usize,
    /// Entries kept below a stored snapshot's slot, at most (see the module comment).
    tail_slots: usize,
    pub(crate) snapshot: Option<StoredSnapshot>,
    pub(crate) dropped: u64,
}

impl DecidedLog {
    #[cfg(test)]
    pub(crate) fn new(slots_max: usize, bytes_max: usize) -> DecidedLog {
        DecidedLog::with_tail(slots_max, bytes_max, 0)
    }

    /// A log that keeps up to `tail_slots` entries below each snapshot it stores.
    pub(crate) fn with_tail(slots_max: usize, bytes_max: usize, tail_slots: usize) -> DecidedLog {
        let slots_max = slots_max.max(1);
        DecidedLog {
            first_slot: Slot(0),
            entries: VecDeque::new(),
            slots_max,
            bytes: 0,
            bytes_max,
            tail_slots: tail_slots.min(slots_max / 4),
            snapshot: None,
            dropped: 0,
        }
    }

    /// The slot after the last entry.
    fn end_slot(&self) -> Slot {
        Slot(self.first_slot.0 + self.entries.len() as u64)
    }

    /// Appends the decision of `slot`, which must follow the last entry (else the log restarts there).
    pub(crate) fn push(&mut self, slot: Slot, batch: Option<Vec<Command>>) {
        if slot != self.end_slot() {
            self.entries.clear();
            self.bytes = 0;
            self.first_slot = slot;
        }
        self.bytes += batch_bytes(&batch);
        self.entries.push_back(batch);
        let over_hard_bound = |log: &DecidedLog| {
            log.entries.len() > 2 * log.slots_max || (log.entries.len() > 1 && log.bytes > 2 * log.bytes_max)
        };
        while over_hard_bound(self) {
            self.pop_oldest();
            self.dropped += 1;
        }
    }

    /// More than the log should hold: time to compact it with a snapshot.
    pub(crate) fn over_soft_bound(&self) -> bool {
        self.entries.len() > self.slots_max || (self.entries.len() > 1 && self.bytes > self.bytes_max)
    }

    fn pop_oldest(&mut self) {
        if let Some(batch) = self.entries.pop_front() {
            self.bytes -= batch_bytes(&batch);
            self.first_slot = self.first_slot.next();
        }
    }

    /// Stores a snapshot and drops what it covers but the catch-up tail; the log then continues at
    /// `snapshot.next_slot` (or where it already was past it). A log that ends before the snapshot's slot (a
    /// snapshot installed from a peer ahead of us) keeps nothing: its entries could not reach the snapshot
    /// without a gap.
    pub(crate) fn store_snapshot(&mut self, snapshot: StoredSnapshot) {
        let next = snapshot.next_slot;
        if self.end_slot() < next {
            self.entries.clear();
            self.bytes = 0;
            self.first_slot = next;
        } else {
            let keep_from = Slot(next.0.saturating_sub(self.tail_slots as u64));
            let above: usize = self.entries.iter().skip(self.index_of(next)).map(batch_bytes).sum();
            let tail_bytes_max = self.bytes_max / 4;
            // The tail never keeps the log over its soft bound: entries decided while the snapshot was taken
            // (a slow shell) may already fill it, and then the tail would only bring the next ask forward.
            while self.first_slot < next
                && (self.first_slot < keep_from || self.bytes - above > tail_bytes_max || self.over_soft_bound())
            {
                self.pop_oldest();
            }
        }
        self.snapshot = Some(snapshot);
    }

    /// The position of `slot` in `entries` (0 below the log, the length past it).
    fn index_of(&self, slot: Slot) -> usize {
        usize::try_from(slot.0.saturating_sub(self.first_slot.0)).unwrap_or(usize::MAX).min(self.entries.len())
    }

    /// Decisions from `from` on, at most `count_max` and `bytes_max` bytes of batches, but at least one
    /// when the log has `from`; empty if `from` is outside the log.
    pub(crate) fn range(&self, from: Slot, count_max: usize, bytes_max: usize) -> Vec<DecidedSlot> {
        if from < self.first_slot {
            return Vec::new();
        }
        let skip = (from.0 - self.first_slot.0) as usize;
        let mut bytes = 0usize;
        let mut range = Vec::new();
        for (i, batch) in self.entries.iter().enumerate().skip(skip).take(count_max) {
            bytes = bytes.saturating_add(batch_bytes(batch));
            if !range.is_empty() && bytes > bytes_max {
                break;
            }
            range.push(DecidedSlot { slot: Slot(self.first_slot.0 + i as u64), batch: batch.clone() });
        }
        range
    }

    /// True when `from` was compacted away and only a snapshot can bring a peer past it.
    pub(crate) fn needs_snapshot(&self, from: Slot) -> bool {
        from < self.first_slot && self.snapshot.as_ref().is_some_and(|s| s.next_slot > from)
    }

    /// True when `from` is below the log and no snapshot covers it: entries were dropped at the hard bound
    /// before a snapshot compacted them (a log resumed over its bound, a shell slow to answer). Neither
    /// the log nor the snapshot can bring a peer past `from` until a newer snapshot is stored.
    pub(crate) fn lost(&self, from: Slot) -> bool {
        from < self.first_slot && !self.needs_snapshot(from)
    }
}

fn batch_bytes(batch: &Option<Vec<Command>>) -> usize {
    batch.iter().flatten().map(Command::size_bytes).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_the_log_holds_never_needs_the_snapshot() {
        let mut log = DecidedLog::new(100, 1 << 20);
        log.store_snapshot(StoredSnapshot {
            next_slot: Slot(10),
            sessions: Vec::new(),
            members: crate::types::Members::first(3),
            state: Bytes::new(),
        });
        // The log restarts below the snapshot's slot (a decision pushed out of order): it holds slot 5 on.
        log.push(Slot(5), None);
        assert!(!log.needs_snapshot(Slot(5)), "slot 5 is in the log");
        assert_eq!(log.range(Slot(5), 8, usize::MAX).len(), 1);
        assert!(log.needs_snapshot(Slot(4)) && !log.lost(Slot(4)), "slot 4 only the snapshot covers");
    }

    fn snapshot_at(next_slot: u64) -> StoredSnapshot {
        StoredSnapshot {
            next_slot: Slot(next_slot),
            sessions: Vec::new(),
            members: crate::types::Members::first(3),
            state: Bytes::from_static(&[1]),
        }
    }

    #[test]
    fn a_snapshot_keeps_a_catch_up_tail_below_its_slot() {
        let mut log = DecidedLog::with_tail(100, 1 << 20, 10);
        for slot in 0..60 {
            log.push(Slot(slot), None);
        }
        log.store_snapshot(snapshot_at(50));
        assert!(log.needs_snapshot(Slot(39)), "below the tail only the snapshot serves");
        assert!(!log.needs_snapshot(Slot(40)) && !log.lost(Slot(40)));
        assert_eq!(log.range(Slot(40), 100, usize::MAX).len(), 20, "the tail and what followed the snapshot");
        assert!(!log.over_soft_bound());
    }

    #[test]
    fn the_tail_is_a_quarter_of_the_bounds_at_most() {
        // In slots: a tail asked larger than a quarter of the slot bound is cut to it.
        let mut log = DecidedLog::with_tail(20, 1 << 20, 1000);
        for slot in 0..30 {
            log.push(Slot(slot), None);
        }
        log.store_snapshot(snapshot_at(30));
        assert_eq!(log.first_slot, Slot(25));
        // In bytes: under a bound of ten batches, the tail holds two (a quarter is two and a half).
        let one = 100;
        let mut log = DecidedLog::with_tail(100, 10 * one, 50);
        for slot in 0..8 {
            log.push(Slot(slot), sized(one));
        }
        log.store_snapshot(snapshot_at(6));
        assert_eq!(log.first_slot, Slot(4));
        assert_eq!(log.range(Slot(4), 100, usize::MAX).len(), 4);
        assert!(!log.over_soft_bound());
    }

    #[test]
    fn a_tail_exactly_at_its_byte_bound_is_kept_whole() {
        // A bound of eight batches: the tail may hold a quarter, two batches, and holds both.
        let one = 100;
        let mut log = DecidedLog::with_tail(100, 8 * one, 50);
        for slot in 0..8 {
            log.push(Slot(slot), sized(one));
        }
        log.store_snapshot(snapshot_at(6));
        assert_eq!(log.first_slot, Slot(4));
        assert!(!log.needs_snapshot(Slot(4)));
    }

    #[test]
    fn the_tail_never_leaves_a_compacted_log_over_its_soft_bound() {
        // Asked at slot 80, answered at 170 (a slow shell): the 90 slots above the snapshot fit the bound of
        // 100 alone, but not beside a tail of 25.
        let mut log = DecidedLog::with_tail(100, 1 << 20, 25);
        for slot in 0..170 {
            log.push(Slot(slot), None);
        }
        log.store_snapshot(snapshot_at(80));
        assert!(!log.over_soft_bound(), "{} entries from slot {}", log.entries.len(), log.first_slot.0);
        assert_eq!(log.first_slot, Slot(70), "what the bound leaves of the tail stays");
    }

    #[test]
    fn a_snapshot_past_the_log_end_keeps_no_tail() {
        // Installed from a peer ahead of us: what we hold stops short of its slot, and a tail would leave
        // the slots between unreachable (neither in the log nor, being at or above the log's start, needing
        // the snapshot).
        let mut log = DecidedLog::with_tail(100, 1 << 20, 10);
        for slot in 0..5 {
            log.push(Slot(slot), None);
        }
        log.store_snapshot(snapshot_at(9));
        assert!(log.needs_snapshot(Slot(6)) && log.needs_snapshot(Slot(0)));
        assert!(log.range(Slot(0), 100, usize::MAX).is_empty());
        log.push(Slot(9), None);
        assert_eq!(log.range(Slot(9), 100, usize::MAX).len(), 1);
    }

    #[test]
    fn log_is_bounded_and_compacted_by_snapshots() {
        let mut log = DecidedLog::new(2, 1 << 20);
        for slot in 0..5 {
            log.push(Slot(slot), None);
        }
        assert!(log.over_soft_bound());
        assert_eq!(log.dropped, 1);
        assert!(log.range(Slot(0), 8, usize::MAX).is_empty());
        assert_eq!(log.range(Slot(1), 8, usize::MAX).len(), 4);
        log.store_snapshot(StoredSnapshot {
            next_slot: Slot(4),
            sessions: Vec::new(),
            members: crate::types::Members::first(3),
            state: Bytes::from_static(&[1]),
        });
        assert_eq!(log.range(Slot(4), 8, usize::MAX).len(), 1);
        assert!(log.needs_snapshot(Slot(3)));
        assert!(!log.needs_snapshot(Slot(4)));
    }

    #[test]
    fn log_is_bounded_in_bytes_but_keeps_the_newest_entry() {
        let big = vec![Command {
            id: crate::types::CommandId { client: 1, seq: 1 },
            origin: crate::types::ReplicaId(0),
            timestamp_ms: 0,
            deadline_ms: 0,
            payload: vec![0; 100],
            kind: crate::types::CommandKind::Client,
        }];
        let mut log = DecidedLog::new(100, 100);
        log.push(Slot(0), Some(big.clone()));
        assert!(!log.over_soft_bound(), "one entry is always kept");
        log.push(Slot(1), Some(big.clone()));
        assert_eq!(log.dropped, 1, "past twice the byte bound the oldest goes");
        log.push(Slot(2), Some(big.clone()));
        assert_eq!(log.dropped, 2);
        assert_eq!(log.range(Slot(2), 8, usize::MAX).len(), 1);
    }

    #[test]
    fn ranges_are_bounded_in_bytes_but_carry_at_least_one_slot() {
        let command = |size| Command {
            deadline_ms: 0,
            id: crate::types::CommandId { client: 1, seq: 1 },
            origin: crate::types::ReplicaId(0),
            timestamp_ms: 0,
            payload: vec![0; size],
            kind: crate::types::CommandKind::Client,
        };
        let mut log = DecidedLog::new(100, 1 << 20);
        for slot in 0..4 {
            log.push(Slot(slot), Some(vec![command(952)]));
        }
        assert_eq!(log.range(Slot(0), 8, 1000).len(), 1, "one 1000-byte batch fits exactly");
        assert_eq!(log.range(Slot(0), 8, 2999).len(), 2);
        assert_eq!(log.range(Slot(1), 8, 10).len(), 1, "a batch over the bound still goes alone");
        assert_eq!(log.range(Slot(1), 2, usize::MAX).len(), 2, "the count bound holds too");
    }

    fn sized(bytes: usize) -> Option<Vec<Command>> {
        let command = Command {
            id: crate::types::CommandId { client: 1, seq: 1 },
            origin: crate::types::ReplicaId(0),
            timestamp_ms: 0,
            deadline_ms: 0,
            payload: Vec::new(),
            kind: crate::types::CommandKind::Client,
        };
        let overhead = command.size_bytes();
        Some(vec![Command { payload: vec![0; bytes - overhead], ..command }])
    }

    #[test]
    fn the_soft_bound_is_crossed_just_past_its_slot_and_byte_limits() {
        let mut log = DecidedLog::new(3, 1 << 20);
        for slot in 0..3 {
            log.push(Slot(slot), None);
            assert!(!log.over_soft_bound(), "{} slots", slot + 1);
        }
        log.push(Slot(3), None);
        assert!(log.over_soft_bound());
        assert_eq!(log.dropped, 0, "the hard bound is twice the soft one");

        let mut log = DecidedLog::new(100, 200);
        log.push(Slot(0), sized(100));
        log.push(Slot(1), sized(100));
        assert!(!log.over_soft_bound(), "exactly at the byte bound");
        log.push(Slot(2), None);
        assert!(!log.over_soft_bound(), "null slots hold no bytes");
        log.push(Slot(3), sized(64));
        assert!(log.over_soft_bound());
        assert_eq!(log.dropped, 0);
        // Compaction brings it back under.
        log.store_snapshot(StoredSnapshot {
            next_slot: Slot(3),
            sessions: Vec::new(),
            members: crate::types::Members::first(3),
            state: Bytes::new(),
        });
        assert!(!log.over_soft_bound());
        assert_eq!(log.range(Slot(3), 8, usize::MAX).len(), 1);
    }

    #[test]
    fn the_hard_bound_drops_the_oldest_just_past_twice_the_limits_and_never_the_newest() {
        // Slots: 3 soft, so 6 hard.
        let mut log = DecidedLog::new(3, 1 << 20);
        for slot in 0..6 {
            log.push(Slot(slot), None);
        }
        assert_eq!(log.dropped, 0, "exactly twice the slot bound is kept");
        log.push(Slot(6), None);
        assert_eq!(log.dropped, 1);
        assert!(log.range(Slot(0), 8, usize::MAX).is_empty());
        assert_eq!(log.range(Slot(1), 8, usize::MAX).len(), 6);

        // Bytes: 100 soft, so 200 hard.
        let mut log = DecidedLog::new(100, 100);
        log.push(Slot(0), sized(120));
        log.push(Slot(1), sized(80));
        assert_eq!(log.dropped, 0, "exactly twice the byte bound is kept");
        log.push(Slot(2), sized(60));
        assert_eq!(log.dropped, 1, "one byte past it, the oldest goes (and only it)");
        assert_eq!(log.range(Slot(1), 8, usize::MAX).len(), 2);

        // One entry alone over twice the byte bound stays: a peer can always be sent the newest slot.
        let mut log = DecidedLog::new(100, 100);
        log.push(Slot(0), sized(500));
        assert_eq!(log.dropped, 0);
        assert_eq!(log.range(Slot(0), 8, usize::MAX).len(), 1);
        log.push(Slot(1), sized(500));
        assert_eq!(log.dropped, 1);
        assert_eq!(log.range(Slot(1), 8, usize::MAX).len(), 1);
    }

    #[test]
    fn only_a_compacted_slot_covered_by_the_snapshot_needs_it() {
        let mut log = DecidedLog::new(2, 1 << 20);
        for slot in 0..5 {
            log.push(Slot(slot), None);
        }
        // Slot 0 was dropped at the hard bound, and no snapshot covers it: nothing to send.
        assert!(!log.needs_snapshot(Slot(0)));
        log.store_snapshot(StoredSnapshot {
            next_slot: Slot(3),
            sessions: Vec::new(),
            members: crate::types::Members::first(3),
            state: Bytes::new(),
        });
        assert!(log.needs_snapshot(Slot(0)) && log.needs_snapshot(Slot(2)));
        assert!(!log.needs_snapshot(Slot(3)), "the log itself starts there");
        assert_eq!(
            log.range(Slot(3), 8, usize::MAX).iter().map(|d| d.slot).collect::<Vec<_>>(),
            vec![Slot(3), Slot(4)]
        );
        // Entries dropped past the snapshot (the shell stopped answering): it no longer covers the gap.
        for slot in 5..12 {
            log.push(Slot(slot), None);
        }
        assert!(log.needs_snapshot(Slot(2)));
        assert!(!log.needs_snapshot(Slot(3)) && !log.needs_snapshot(Slot(6)));
        assert!(log.range(Slot(6), 8, usize::MAX).is_empty());
    }
}
