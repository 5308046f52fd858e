//! Membership: which ids vote in a slot, how a decided reconfiguration changes that, learners that catch
//! up before they vote, and members that were removed.
//!
//! Invariants:
//! - `members` changes only between slots: when a decided batch applied a reconfiguration (the membership
//!   of the next slot), when a snapshot is installed (the snapshot's membership), or at resume (replaying
//!   the log). Never from a message of an undecided slot.
//! - A reconfiguration applies iff its `expected` is the membership at its place in the decided batch and
//!   its `next` is non-empty; the test reads only the batch and the membership, so every replica keeps or
//!   drops the same ones.
//! - A replica outside `members` sends no proposal, state or vote for `next_slot`.

use super::{Mode, Output, Recovery, Replica};
use crate::types::{Command, CommandKind, Config, Members, ReplicaId, Slot};

/// Applies `command`'s membership change to `members` if it is a reconfiguration that applies; returns
/// whether the command stays in the decision (ordinary commands always do).
pub(crate) fn apply_change(members: &mut Members, command: &Command) -> bool {
    match command.kind {
        CommandKind::Client => true,
        CommandKind::Reconfigure { expected, next } => {
            let applies = expected == *members && !next.is_empty();
            if applies {
                *members = next;
            }
            applies
        }
    }
}

impl Replica {
    /// A replica that is not (yet) a member: empty, it learns decided slots and snapshots like a lagging
    /// replica from the members in `ask` (the current members, as the shell learned them) and from whoever
    /// else is ahead, and votes from the first slot whose membership contains `config.me`. It starts
    /// recovering under `incarnation` (its id may have voted before, as a member that was removed), so it
    /// votes only past a floor learned from its peers, which costs a brand-new id nothing once caught up.
    /// `config.members` is the cluster's genesis membership, as for every replica.
    pub fn learner(config: Config, incarnation: u64, ask: Members) -> Replica {
        let mut replica = Replica::build(config);
        replica.ask = ask.without(replica.config.me);
        replica.mode = Mode::Recovering(Recovery::new(incarnation));
        replica
    }

    /// The membership governing `next_slot`.
    pub fn members(&self) -> Members {
        self.members
    }

    /// The `next_slot` of the last `Status` heard from `peer` (member or not), if any.
    pub fn peer_next_slot(&self, peer: ReplicaId) -> Option<Slot> {
        self.peers.get(peer.index()).and_then(|track| track.status_slot)
    }

    /// Whether this replica proposes and votes in `next_slot`.
    pub(super) fn takes_part(&self) -> bool {
        !self.is_recovering() && self.members.contains(self.config.me)
    }

    /// Moves to the membership of `from_slot` (the slot about to open), telling the shell when it changed
    /// and when it no longer includes this replica.
    pub(super) fn set_members(&mut self, from_slot: Slot, members: Members, out: &mut Vec<Output>) {
        if members == self.members {
            return;
        }
        let me = self.config.me;
        let was_member = self.members.contains(me);
        self.members = members;
        out.push(Output::MembersChanged { from_slot, members });
        if was_member && !members.contains(me) {
            out.push(Output::Removed { at: from_slot });
        }
    }

    /// A non-member asks the members it knows of for what it lacks, every retransmit period: its
    /// `Status` makes a member ahead of it send decided slots or a snapshot.
    pub(super) fn ask_as_learner(&self, out: &mut Vec<Output>) {
        let me = self.config.me;
        if self.members.contains(me) {
            return;
        }
        for peer in self.ask.union(self.members).without(me).iter() {
            out.push(Output::Send { to: peer, message: self.status_message() });
        }
    }

    /// `Broken::MembersFromProposal`: takes the membership change of a proposal as if it were decided.
    pub(super) fn adopt_members_early(&mut self, batch: &[Command], out: &mut Vec<Output>) {
        let mut members = self.members;
        batch.iter().for_each(|command| {
            apply_change(&mut members, command);
        });
        self.set_members(self.next_slot, members, out);
    }
}

#[cfg(test)]
mod tests;
