//! Client sessions: which (client, sequence) pairs have applied, so a retried command applies once.
//!
//! Invariants: the table changes only when a decided slot applies (or a snapshot installs), so it is the
//! same on every replica at the same slot. Per client, applied sequences at or above `seq_floor` are kept
//! in a set of at most `window` entries; when it overflows, the floor moves up past the oldest entry (a
//! client with more than `window` commands in flight out of order may then see an old one refused). At
//! most `clients_max` clients are kept; the least recently applied one is evicted (deterministically).

use std::collections::{BTreeMap, BTreeSet};

use crate::message::SessionRecord;
use crate::types::{CommandId, Slot};

#[derive(Clone, Debug, Default)]
struct Session {
    seq_floor: u64,
    applied_above: BTreeSet<u64>,
    last_slot: u64,
}

pub(crate) struct Sessions {
    clients: BTreeMap<u64, Session>,
    by_age: BTreeSet<(u64, u64)>,
    clients_max: usize,
    window: u64,
    pub(crate) evictions: u64,
}

impl Sessions {
    pub(crate) fn new(clients_max: usize, window: u64) -> Sessions {
        Sessions {
            clients: BTreeMap::new(),
            by_age: BTreeSet::new(),
            clients_max: clients_max.max(1),
            window: window.max(1),
            evictions: 0,
        }
    }

    pub(crate) fn is_applied(&self, id: CommandId) -> bool {
        self.clients.get(&id.client).is_some_and(|s| id.seq < s.seq_floor || s.applied_above.contains(&id.seq))
    }

    /// Records `id` as applied in `slot`. The caller checked `is_applied` first. Returns the client's new
    /// floor when the window overflowed and the floor jumped past sequences that never applied: those now
    /// count as applied too, and any still queued must go.
    pub(crate) fn record(&mut self, id: CommandId, slot: Slot) -> Option<u64> {
        if !self.clients.contains_key(&id.client) && self.clients.len() >= self.clients_max {
            self.evict_oldest();
        }
        let window = self.window;
        let session = self.clients.entry(id.client).or_default();
        self.by_age.remove(&(session.last_slot, id.client));
        session.last_slot = slot.0;
        self.by_age.insert((slot.0, id.client));
        session.applied_above.insert(id.seq);
        advance_floor(session, window).then_some(session.seq_floor)
    }

    fn evict_oldest(&mut self) {
        if let Some((age, client)) = self.by_age.pop_first() {
            debug_assert!(self.clients.get(&client).is_some_and(|s| s.last_slot == age));
            self.clients.remove(&client);
            self.evictions += 1;
        }
    }

    pub(crate) fn export(&self) -> Vec<SessionRecord> {
        self.clients
            .iter()
            .map(|(client, s)| SessionRecord {
                client: *client,
                seq_floor: s.seq_floor,
                applied_above: s.applied_above.iter().copied().collect(),
                last_slot: s.last_slot,
            })
            .collect()
    }

    pub(crate) fn import(&mut self, records: &[SessionRecord]) {
        self.clients.clear();
        self.by_age.clear();
        for record in records.iter().take(self.clients_max) {
            let session = Session {
                seq_floor: record.seq_floor,
                applied_above: record.applied_above.iter().copied().collect(),
                last_slot: record.last_slot,
            };
            self.by_age.insert((record.last_slot, record.client));
            self.clients.insert(record.client, session);
        }
    }
}

/// Moves the floor up over applied sequences, and past the oldest ones when the window overflows;
/// returns whether it jumped (skipped sequences that never applied).
fn advance_floor(session: &mut Session, window: u64) -> bool {
    let mut jumped = false;
    while session.applied_above.remove(&session.seq_floor) {
        session.seq_floor += 1;
    }
    while session.applied_above.len() as u64 > window {
        if let Some(oldest) = session.applied_above.pop_first() {
            jumped |= oldest > session.seq_floor;
            session.seq_floor = oldest + 1;
        }
        while session.applied_above.remove(&session.seq_floor) {
            session.seq_floor += 1;
        }
    }
    jumped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(client: u64, seq: u64) -> CommandId {
        CommandId { client, seq }
    }

    #[test]
    fn out_of_order_sequences_apply_once() {
        let mut sessions = Sessions::new(4, 8);
        sessions.record(id(1, 2), Slot(0));
        assert!(sessions.is_applied(id(1, 2)));
        assert!(!sessions.is_applied(id(1, 0)));
        sessions.record(id(1, 0), Slot(1));
        sessions.record(id(1, 1), Slot(1));
        assert!(sessions.is_applied(id(1, 1)));
        assert!(!sessions.is_applied(id(1, 3)));
    }

    #[test]
    fn a_window_overflow_reports_the_floor_it_jumped_to() {
        let mut sessions = Sessions::new(4, 2);
        assert_eq!(sessions.record(id(1, 0), Slot(0)), None, "contiguous: no jump");
        assert_eq!(sessions.record(id(1, 2), Slot(0)), None);
        assert_eq!(sessions.record(id(1, 4), Slot(0)), None);
        assert_eq!(sessions.record(id(1, 5), Slot(0)), Some(3), "sequence 1 never applied and now counts");
        assert!(sessions.is_applied(id(1, 1)));
        assert!(!sessions.is_applied(id(1, 3)));
    }

    #[test]
    fn least_recently_used_client_is_evicted_at_the_bound() {
        let mut sessions = Sessions::new(2, 8);
        sessions.record(id(1, 0), Slot(0));
        sessions.record(id(2, 0), Slot(1));
        sessions.record(id(3, 0), Slot(2));
        assert!(!sessions.is_applied(id(1, 0)));
        assert!(sessions.is_applied(id(3, 0)));
        assert_eq!(sessions.evictions, 1);
        let mut copy = Sessions::new(2, 8);
        copy.import(&sessions.export());
        assert!(copy.is_applied(id(2, 0)));
    }

    fn exported(sessions: &Sessions, client: u64) -> (u64, Vec<u64>) {
        let record = sessions.export().into_iter().find(|r| r.client == client).expect("client kept");
        (record.seq_floor, record.applied_above)
    }

    #[test]
    fn in_order_sequences_fold_into_the_floor() {
        let mut sessions = Sessions::new(4, 8);
        for seq in 0..100 {
            sessions.record(id(1, seq), Slot(seq));
        }
        assert_eq!(exported(&sessions, 1), (100, vec![]));
        assert!(sessions.is_applied(id(1, 0)) && sessions.is_applied(id(1, 99)));
        assert!(!sessions.is_applied(id(1, 100)));
    }

    #[test]
    fn the_window_bounds_what_is_kept_above_the_floor() {
        let mut sessions = Sessions::new(4, 2);
        for seq in [5, 7, 9] {
            sessions.record(id(1, seq), Slot(seq));
        }
        // Three above the floor is one too many: the oldest folds in and the floor passes it.
        assert_eq!(exported(&sessions, 1), (6, vec![7, 9]));
        assert!(sessions.is_applied(id(1, 3)), "below the floor counts as applied");
        assert!(!sessions.is_applied(id(1, 6)) && !sessions.is_applied(id(1, 8)));
        sessions.record(id(1, 6), Slot(10));
        assert_eq!(exported(&sessions, 1), (8, vec![9]));
        sessions.record(id(1, 8), Slot(11));
        assert_eq!(exported(&sessions, 1), (10, vec![]));
    }

    #[test]
    fn every_recorded_id_stays_applied_and_the_window_is_never_exceeded() {
        let window = 4;
        let mut sessions = Sessions::new(4, window);
        let mut order: Vec<u64> = (0..64).collect();
        // A fixed shuffle: sequences arrive out of order, by up to a dozen places.
        for i in 0..order.len() {
            let j = (i * 7 + 3) % order.len();
            if i.abs_diff(j) < 12 {
                order.swap(i, j);
            }
        }
        for (slot, seq) in order.iter().enumerate() {
            // As the replica does: an id the session counts as applied (below a floor the window pushed
            // past it) is filtered, not recorded.
            if !sessions.is_applied(id(1, *seq)) {
                sessions.record(id(1, *seq), Slot(slot as u64));
            }
            assert!(sessions.is_applied(id(1, *seq)));
            let (floor, above) = exported(&sessions, 1);
            assert!(above.len() as u64 <= window, "{above:?}");
            assert!(above.iter().all(|s| *s > floor), "floor {floor}, above {above:?}");
        }
        assert_eq!(exported(&sessions, 1), (64, vec![]));
    }
}
