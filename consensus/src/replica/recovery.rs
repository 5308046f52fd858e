//! Restart recovery: the vote floor a restarted replica (or a learner) learns from its peers.
//!
//! The rule: a recovering replica at `next_slot` x sets its floor to x + 1 once a quorum of the
//! membership of x (the membership it holds there, a function of the decided log below x) answered its
//! probe with a position below x. It then only learns decisions until it passes the floor.
//!
//! Why this is enough, memberships changing included. Say the replica crashed at `next_slot` s and may
//! have voted in slots up to s. If s >= x + 1, it had decided slot x before the crash, so a majority V of
//! the members of x voted in x and had `next_slot >= x` then. Each answer came after the restart (it
//! carries this incarnation), and a replica that is not recovering never goes back below a `next_slot` it
//! reached (recovering ones do not answer, and a finished recovery ends past where it crashed), so each
//! member of V that answered reported at least x. A quorum of the members of x reporting below x would
//! have to meet V: contradiction. So s <= x, and from x + 1 on it never voted. The quorum is over the
//! membership of x itself, never an older one: a replica that resumes at r while the cluster changed its
//! members after r catches up through those changes (learning the decided slots, not voting) before it
//! counts, and answers from members of r that were since removed count only if they are members of x.
//! With a fixed membership this is the old "highest reported plus two": at x = highest + 1 the floor is
//! highest + 2. Answers are kept first-come per id, so the answers counted never move up.

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

    pub(super) fn on_recovery_reply(
        &mut self,
        now_ms: u64,
        from: ReplicaId,
        incarnation: u64,
        their_next: Slot,
        out: &mut Vec<Output>,
    ) {
        let Mode::Recovering(recovery) = &mut self.mode else {
            return;
        };
        if recovery.incarnation != incarnation || recovery.vote_floor.is_some() {
            return;
        }
        let Some(reported) = recovery.reported.get_mut(from.index()) else {
            return;
        };
        reported.get_or_insert(their_next);
        self.note_peer_slot(from, their_next);
        self.settle_vote_floor();
        self.finish_recovery_if_past_floor(now_ms, out);
    }

    /// Sets the vote floor once a quorum of the current membership reported a position below ours (see
    /// the module documentation).
    pub(super) fn settle_vote_floor(&mut self) {
        let (members, next_slot) = (self.members, self.next_slot);
        let Mode::Recovering(recovery) = &mut self.mode else {
            return;
        };
        if recovery.vote_floor.is_some() || members.is_empty() {
            return;
        }
        let below = members.iter().filter(|id| recovery.reported[id.index()].is_some_and(|r| r < next_slot)).count();
        if below >= members.quorum() {
            recovery.vote_floor = Some(next_slot.next());
        }
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
