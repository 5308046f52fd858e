//! Catch-up: status exchange, sync requests and replies (decided slots, bounded in count and bytes, or the
//! start of a snapshot transfer), and the snapshot hand-off with the shell.
//!
//! Invariants: a `SyncReply` holds at most `sync_slots_max` slots and `sync_bytes_max` bytes of batches,
//! and at least one slot (so catch-up always progresses); snapshots travel in chunks (`transfer`); a
//! request for slots the log dropped with no snapshot covering them asks the shell for a snapshot.

use bytes::Bytes;

use super::{Output, Replica};
use crate::log::StoredSnapshot;
use crate::message::{DecidedSlot, Message};
use crate::types::{Broken, ReplicaId, Slot};

impl Replica {
    /// Asks for a snapshot every `snapshot_every_slots`, and as soon as the log outgrows its bound (so
    /// compaction, not dropping, keeps it bounded). While an answer is outstanding (the shell may take a
    /// while to serialise a large store) a periodic ask waits four periods rather than replacing it, so
    /// a slow answer is not made stale over and over.
    pub(super) fn maybe_ask_snapshot(&mut self, next_slot: Slot, out: &mut Vec<Output>) {
        let every = self.config.snapshot_every_slots;
        let due = if self.snapshot_asked.is_some() { every.saturating_mul(4) } else { every };
        let periodic = self.slots_since_snapshot >= due;
        let log_full = self.log.over_soft_bound() && self.snapshot_asked.is_none();
        if !periodic && !log_full {
            return;
        }
        self.ask_snapshot(next_slot, out);
    }

    fn ask_snapshot(&mut self, next_slot: Slot, out: &mut Vec<Output>) {
        self.slots_since_snapshot = 0;
        let sessions = self.sessions.export();
        let members = self.members;
        self.snapshot_asked = Some((next_slot, sessions.clone(), members));
        out.push(Output::TakeSnapshot { next_slot, sessions, members });
    }

    pub(super) fn on_snapshot_taken(&mut self, next_slot: Slot, state: Bytes) {
        match self.snapshot_asked.take() {
            Some((asked, sessions, members)) if asked == next_slot => {
                self.log.store_snapshot(StoredSnapshot { next_slot, sessions, members, state })
            }
            other => {
                self.snapshot_asked = other;
                self.stats.snapshot_answers_ignored += 1;
            }
        }
    }

    pub(super) fn on_status(&mut self, now_ms: u64, from: ReplicaId, their_next: Slot, out: &mut Vec<Output>) {
        self.note_peer_slot(from, their_next);
        if let Some(peer) = self.peers.get_mut(from.index()) {
            peer.status_slot = Some(their_next);
        }
        if their_next < self.next_slot {
            self.reply_sync(now_ms, from, their_next, out);
        } else if their_next > self.next_slot {
            self.request_sync(now_ms, from, out);
        }
    }

    pub(super) fn note_peer_slot(&mut self, from: ReplicaId, slot: Slot) {
        if let Some(peer) = self.peers.get_mut(from.index()) {
            peer.seen_slot = peer.seen_slot.max(slot);
        }
    }

    /// Asks `peer` for what we lack, at most once per retransmit period.
    pub(super) fn request_sync(&mut self, now_ms: u64, peer: ReplicaId, out: &mut Vec<Output>) {
        let period_ms = self.config.retransmit_ms;
        let Some(track) = self.peers.get_mut(peer.index()) else {
            return;
        };
        if track.request_at_ms.is_some_and(|at| now_ms < at.saturating_add(period_ms)) {
            return;
        }
        track.request_at_ms = Some(now_ms);
        out.push(Output::Send { to: peer, message: Message::SyncRequest { from_slot: self.next_slot } });
    }

    /// Sends `peer` the decided slots from `from` (or the first chunk of our snapshot, when they were
    /// compacted). A reply is bounded by `sync_slots_max` slots and `sync_bytes_max` bytes, and carries at
    /// least one slot. Paced by the peer's progress: a request from a new slot is answered at once, a
    /// repeat of the same starting slot (the reply may still be on its way) only after
    /// `snapshot_retry_ms`.
    pub(super) fn reply_sync(&mut self, now_ms: u64, peer: ReplicaId, from: Slot, out: &mut Vec<Output>) {
        if from == self.next_slot {
            self.resend_to(peer, out);
            return;
        }
        let period_ms = self.config.retransmit_ms.max(self.config.snapshot_retry_ms);
        let Some(track) = self.peers.get_mut(peer.index()) else {
            return;
        };
        if track.reply_from == Some(from) && now_ms < track.reply_at_ms.saturating_add(period_ms) {
            return;
        }
        track.reply_from = Some(from);
        track.reply_at_ms = now_ms;
        if self.log.needs_snapshot(from) {
            // The rest follows once the peer installed it and reports its new position.
            self.offer_snapshot(now_ms, peer, out);
            return;
        }
        if self.log.lost(from) {
            // Slots the log dropped at its hard bound and no snapshot covers: only a snapshot of our
            // position can serve them. Ask for one (unless an ask is outstanding); the peer's next
            // request gets its first chunk. Without this a replica resumed from a log over its bound,
            // which asks for no snapshot until it decides a slot, could serve nobody behind it.
            if self.snapshot_asked.is_none() && self.config.broken != Broken::NoSnapshotForLostSlots {
                self.ask_snapshot(self.next_slot, out);
            }
            return;
        }
        let bytes_max = match self.config.broken {
            Broken::UnboundedSyncReply => usize::MAX,
            _ => self.config.sync_bytes_max,
        };
        let decisions = self.log.range(from, self.config.sync_slots_max, bytes_max);
        if !decisions.is_empty() {
            out.push(Output::Send { to: peer, message: Message::SyncReply { decisions } });
        }
    }

    pub(super) fn on_sync_reply(&mut self, now_ms: u64, decisions: Vec<DecidedSlot>, out: &mut Vec<Output>) {
        for decided in decisions {
            if decided.slot == self.next_slot {
                self.stats.slots_by_sync += 1;
                self.commit(now_ms, decided.batch, out);
            }
        }
    }

    pub(super) fn install_snapshot(&mut self, now_ms: u64, snapshot: StoredSnapshot, out: &mut Vec<Output>) {
        if snapshot.next_slot <= self.next_slot {
            return;
        }
        self.sessions.import(&snapshot.sessions);
        let sessions = &self.sessions;
        self.queue.retain(|id| !sessions.is_applied(id));
        out.push(Output::InstallSnapshot { next_slot: snapshot.next_slot, state: snapshot.state.clone() });
        let (next_slot, members) = (snapshot.next_slot, snapshot.members);
        self.log.store_snapshot(snapshot);
        self.set_members(next_slot, members, out);
        self.snapshot_asked = None;
        self.slots_since_snapshot = 0;
        self.stats.snapshots_installed += 1;
        self.advance_to(now_ms, next_slot, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::encode_message;
    use crate::replica::{Input, Resume};
    use crate::types::{Command, CommandId, Config};

    /// The transport refuses a consensus message once a peer's queue would pass twice its 64 MiB bulk bound.
    const TRANSPORT_LIMIT: usize = 128 << 20;

    fn big_log_replica() -> Replica {
        let mut config = Config::new(3, ReplicaId(0), 1);
        config.log_bytes_max = 1 << 30;
        config.batch_bytes_max = 4 << 20;
        config.payload_bytes_max = 4 << 20;
        let decided = (0..64u64)
            .map(|slot| {
                let payload = vec![slot as u8; 4 << 20];
                let command = Command {
                    id: CommandId { client: 1, seq: slot },
                    origin: ReplicaId(0),
                    timestamp_ms: 0,
                    deadline_ms: 0,
                    payload,
                    kind: crate::types::CommandKind::Client,
                };
                DecidedSlot { slot: Slot(slot), batch: Some(vec![command]) }
            })
            .collect();
        Replica::resume(config, Resume { decided, ..Resume::default() })
    }

    #[test]
    fn a_slow_snapshot_answer_is_not_replaced_by_the_next_periodic_ask() {
        let mut config = Config::new(1, ReplicaId(0), 1);
        config.snapshot_every_slots = 2;
        let mut replica = Replica::new(config);
        let mut asks = Vec::new();
        for seq in 0..6 {
            let mut out = Vec::new();
            let put = crate::types::ClientCommand::new(CommandId { client: 1, seq }, vec![1]);
            replica.handle(seq, Input::Submit(vec![put]), &mut out);
            asks.extend(out.into_iter().filter_map(|o| match o {
                Output::TakeSnapshot { next_slot, .. } => Some(next_slot),
                _ => None,
            }));
        }
        assert_eq!(asks, vec![Slot(2)], "one ask outstanding, not one per period");
        let mut out = Vec::new();
        replica.handle(9, Input::SnapshotTaken { next_slot: Slot(2), state: Bytes::from_static(b"s") }, &mut out);
        assert_eq!(replica.stats().snapshot_answers_ignored, 0, "the late answer still counts");
        assert!(replica.latest_snapshot_parts().is_some_and(|(slot, ..)| slot == Slot(2)));
    }

    /// What a `SyncRequest { from_slot }` from replica 1 makes `replica` output.
    fn request(replica: &mut Replica, now_ms: u64, from_slot: u64) -> Vec<Output> {
        let mut out = Vec::new();
        let message = Message::SyncRequest { from_slot: Slot(from_slot) };
        replica.handle(now_ms, Input::Message { from: ReplicaId(1), message }, &mut out);
        out
    }

    #[test]
    fn a_peer_behind_slots_the_log_dropped_gets_a_new_snapshot() {
        // Resumed from a snapshot at slot 4 and six decided slots after it: over twice the log's bound of
        // two slots, so slots 4 and 5 are dropped with no snapshot covering them.
        let mut config = Config::new(3, ReplicaId(0), 1);
        config.log_slots_max = 2;
        let snapshot = crate::replica::SnapshotRecord {
            next_slot: Slot(4),
            sessions: vec![],
            members: crate::types::Members::first(3),
            state: vec![7; 8],
        };
        let decided = (4..10).map(|slot| DecidedSlot { slot: Slot(slot), batch: None }).collect();
        let mut replica = Replica::resume(config, Resume { snapshot: Some(snapshot), decided, ..Resume::default() });
        assert_eq!(replica.next_slot(), Slot(10));
        let out = request(&mut replica, 0, 4);
        let asked: Vec<Slot> = out
            .iter()
            .filter_map(|o| match o {
                Output::TakeSnapshot { next_slot, .. } => Some(*next_slot),
                _ => None,
            })
            .collect();
        assert_eq!(asked, vec![Slot(10)], "a snapshot of its position is the only way to serve slot 4");
        let mut out = Vec::new();
        replica.handle(1, Input::SnapshotTaken { next_slot: Slot(10), state: Bytes::from_static(b"s") }, &mut out);
        let out = request(&mut replica, 1_000, 4);
        assert!(
            out.iter().any(|o| matches!(
                o,
                Output::Send { message: Message::SnapshotChunk { next_slot: Slot(10), offset: 0, .. }, .. }
            )),
            "the next request gets the new snapshot's first chunk: {out:?}"
        );
    }

    #[test]
    fn sync_replies_fit_the_transport_and_carry_at_least_one_slot() {
        let mut replica = big_log_replica();
        let mut from = Slot(0);
        let mut now_ms = 0;
        while from < Slot(64) {
            let mut out = Vec::new();
            let request = Message::SyncRequest { from_slot: from };
            replica.handle(now_ms, Input::Message { from: ReplicaId(1), message: request }, &mut out);
            let replies: Vec<Message> = out
                .into_iter()
                .filter_map(|o| match o {
                    Output::Send { message: m @ Message::SyncReply { .. }, .. } => Some(m),
                    _ => None,
                })
                .collect();
            assert_eq!(replies.len(), 1, "one reply per request");
            let encoded = encode_message(&replies[0]).len();
            assert!(encoded <= TRANSPORT_LIMIT, "a reply of {encoded} bytes is over the transport's limit");
            let Message::SyncReply { decisions } = &replies[0] else { unreachable!() };
            assert!(!decisions.is_empty(), "a reply always carries a slot");
            assert_eq!(decisions[0].slot, from);
            from = Slot(from.0 + decisions.len() as u64);
            now_ms += 1000;
        }
    }
}
