//! Catch-up: status exchange, sync requests and replies (decided slots or the latest snapshot), and the
//! snapshot hand-off with the shell.

use super::{Output, Replica};
use crate::log::StoredSnapshot;
use crate::message::{DecidedSlot, Message};
use crate::types::{ReplicaId, Slot};

impl Replica {
    /// Asks for a snapshot every `snapshot_every_slots`, and as soon as the log outgrows its bound (so
    /// compaction, not dropping, keeps it bounded).
    pub(super) fn maybe_ask_snapshot(&mut self, next_slot: Slot, out: &mut Vec<Output>) {
        let periodic = self.slots_since_snapshot >= self.config.snapshot_every_slots;
        let log_full = self.log.over_soft_bound() && self.snapshot_asked.is_none();
        if !periodic && !log_full {
            return;
        }
        self.slots_since_snapshot = 0;
        self.snapshot_asked = Some((next_slot, self.sessions.export()));
        out.push(Output::TakeSnapshot { next_slot });
    }

    pub(super) fn on_snapshot_taken(&mut self, next_slot: Slot, state: Vec<u8>) {
        match self.snapshot_asked.take() {
            Some((asked, sessions)) if asked == next_slot => {
                self.log.store_snapshot(StoredSnapshot { next_slot, sessions, state })
            }
            other => {
                self.snapshot_asked = other;
                self.stats.snapshot_answers_ignored += 1;
            }
        }
    }

    pub(super) fn on_status(&mut self, now_ms: u64, from: ReplicaId, their_next: Slot, out: &mut Vec<Output>) {
        self.note_peer_slot(from, their_next);
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

    /// Sends `peer` the decided slots from `from` (or our snapshot, when they were compacted), at most
    /// once per retransmit period for the same starting slot.
    pub(super) fn reply_sync(&mut self, now_ms: u64, peer: ReplicaId, from: Slot, out: &mut Vec<Output>) {
        if from == self.next_slot {
            self.resend_to(peer, out);
            return;
        }
        let period_ms = self.config.retransmit_ms;
        let Some(track) = self.peers.get_mut(peer.index()) else {
            return;
        };
        if track.reply_from == Some(from) && now_ms < track.reply_at_ms.saturating_add(period_ms) {
            return;
        }
        track.reply_from = Some(from);
        track.reply_at_ms = now_ms;
        let mut from = from;
        if self.log.needs_snapshot(from) {
            if let Some(snapshot) = self.log.snapshot.clone() {
                from = snapshot.next_slot;
                out.push(Output::Send {
                    to: peer,
                    message: Message::Snapshot {
                        next_slot: snapshot.next_slot,
                        sessions: snapshot.sessions,
                        state: snapshot.state,
                    },
                });
            }
        }
        let decisions = self.log.range(from, self.config.sync_slots_max);
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
        let next_slot = snapshot.next_slot;
        self.log.store_snapshot(snapshot);
        self.snapshot_asked = None;
        self.slots_since_snapshot = 0;
        self.stats.snapshots_installed += 1;
        self.advance_to(now_ms, next_slot, out);
    }
}
