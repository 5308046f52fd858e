//! Restart recovery: the vote floor a restarted replica learns from a majority of its peers.

use super::{Mode, Output, Replica};
use crate::message::Message;
use crate::types::{ReplicaId, Slot};

impl Replica {
    pub(super) fn on_recovery_probe(&mut self, from: ReplicaId, incarnation: u64, out: &mut Vec<Output>) {
        if self.is_recovering() {
            return;
        }
        out.push(Output::Send { to: from, message: Message::RecoveryReply { incarnation, next_slot: self.next_slot } });
    }

    /// Collects peers' positions; with a majority of the cluster answering (peers only: our own memory is
    /// gone), every slot we might have voted in is at most one past the highest reported, so we vote
    /// again only from two past it. See the crate documentation for the argument.
    pub(super) fn on_recovery_reply(
        &mut self,
        now_ms: u64,
        from: ReplicaId,
        incarnation: u64,
        their_next: Slot,
        out: &mut Vec<Output>,
    ) {
        let quorum = self.config.quorum();
        let Mode::Recovering(recovery) = &mut self.mode else {
            return;
        };
        if recovery.incarnation != incarnation || recovery.vote_floor.is_some() {
            return;
        }
        recovery.reported[from.index()] = Some(their_next);
        let reported: Vec<Slot> = recovery.reported.iter().flatten().copied().collect();
        if reported.len() < quorum {
            return;
        }
        let highest = reported.iter().copied().max().unwrap_or(Slot(0));
        recovery.vote_floor = Some(Slot(highest.0.saturating_add(2)));
        self.note_peer_slot(from, their_next);
        self.finish_recovery_if_past_floor(now_ms, out);
    }

    pub(super) fn finish_recovery_if_past_floor(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let Mode::Recovering(recovery) = &self.mode else {
            return;
        };
        if recovery.vote_floor.is_some_and(|floor| self.next_slot >= floor) {
            self.mode = Mode::Normal;
            self.future_bytes = 0;
            self.replay.extend(
                std::mem::take(&mut self.future)
                    .into_iter()
                    .filter(|(_, m)| m.round_slot().is_some_and(|s| s >= self.next_slot)),
            );
            self.maybe_propose(now_ms, out);
        }
    }
}
