//! Membership changes in the simulated cluster (`Faults::members`, with five replica ids): the cluster
//! starts with members {0,1,2}, ids 3 and 4 start as learners, and during the faulty phase random
//! reconfigurations (add a caught-up, healthy non-member; remove a member while more than three remain)
//! are submitted through random replicas, mixed with the other faults. The crash schedule keeps at most
//! one replica without its votes at a time, a minority of any membership of three or more.
//!
//! Checks, as things happen: every replica that decides slot s did so under the same membership
//! (membership agreement), and no replica sends a proposal, state or vote for a slot whose membership
//! does not contain it (a removed member stops voting, a learner does not vote yet). Agreement on the
//! decided batches and linearizability are the world's checks, unchanged.
//!
//! Invariants: `view[r]` is the membership governing replica r's next slot as its outputs told it
//! (genesis at start, `MembersChanged` after, `Replica::members` after a restart or resume).

use std::collections::BTreeMap;

use consensus::{ClientCommand, CommandId, Input, Members, Message, ReplicaId, Slot};

use super::{Event, World};
use crate::check::ViolationKind;
use crate::options::Options;

/// The client id reconfigurations are submitted under (no simulated client comes near it).
const RECONFIG_CLIENT: u64 = 1 << 40;

/// Members at the start of a run with membership changes.
const GENESIS: u8 = 3;

pub(super) struct Track {
    pub(super) on: bool,
    view: Vec<Members>,
    /// The membership each decided slot ran under, and the first replica that reported it.
    slot_members: BTreeMap<Slot, (usize, Members)>,
    /// Who sent round messages for each slot (bit per replica).
    spoke: BTreeMap<Slot, u64>,
    next_seq: u64,
    pub(super) submitted: u64,
}

impl Track {
    pub(super) fn new(options: &Options) -> Track {
        let on = enabled(options);
        let genesis = genesis(options);
        Track {
            on,
            view: vec![genesis; usize::from(options.replicas)],
            slot_members: BTreeMap::new(),
            spoke: BTreeMap::new(),
            next_seq: 1,
            submitted: 0,
        }
    }
}

/// Membership changes run with five replica ids.
pub(super) fn enabled(options: &Options) -> bool {
    options.faults.members && options.replicas == 5
}

/// The membership at slot 0.
pub(super) fn genesis(options: &Options) -> Members {
    match enabled(options) {
        true => Members::first(GENESIS),
        false => Members::first(options.replicas),
    }
}

/// Whether replica `id` starts as a learner.
pub(super) fn starts_as_learner(options: &Options, id: u8) -> bool {
    !genesis(options).contains(ReplicaId(id))
}

impl Track {
    /// Slots whose membership differs from the slot before (as decided).
    pub(super) fn changes_decided(&self) -> u64 {
        let members: Vec<(Slot, Members)> = self.slot_members.iter().map(|(s, (_, m))| (*s, *m)).collect();
        members.windows(2).filter(|w| w[0].0.next() == w[1].0 && w[0].1 != w[1].1).count() as u64
    }
}

impl World {
    /// How many replicas may be without their votes at once: f of the replicas, or with membership
    /// changes one, a minority of any membership of three or more.
    pub(super) fn votes_lost_max(&self) -> usize {
        match self.members.on {
            true => 1,
            false => (self.nodes.len() - 1) / 2,
        }
    }

    pub(super) fn members_changed(&mut self, replica: usize, members: Members) {
        self.members.view[replica] = members;
    }

    /// After a restart or resume: the membership the rebuilt core holds.
    pub(super) fn members_rebuilt(&mut self, replica: usize) {
        self.members.view[replica] = self.nodes[replica].core.members();
    }

    /// Membership agreement: the replica decided `slot` under the membership it held for it.
    pub(super) fn check_slot_members(&mut self, replica: usize, slot: Slot) {
        let members = self.members.view[replica];
        match self.members.slot_members.get(&slot).copied() {
            Some((first, seen)) if seen != members => {
                let detail = format!(
                    "slot {} ran under {seen} on replica {first} but under {members} on replica {replica}",
                    slot.0
                );
                self.violate(ViolationKind::Membership, detail);
            }
            Some(_) => {}
            None => {
                self.members.slot_members.insert(slot, (replica, members));
                let spoke = self.members.spoke.get(&slot).copied().unwrap_or(0);
                self.check_speakers(slot, members, spoke);
            }
        }
    }

    /// A round message of `from`: it must be a member of the message's slot.
    pub(super) fn check_member_speaks(&mut self, from: usize, message: &Message) {
        let Some(slot) = message.round_slot() else { return };
        let bit = 1u64 << from;
        *self.members.spoke.entry(slot).or_insert(0) |= bit;
        if let Some((_, members)) = self.members.slot_members.get(&slot).copied() {
            self.check_speakers(slot, members, bit);
        }
    }

    fn check_speakers(&mut self, slot: Slot, members: Members, spoke: u64) {
        let outsiders = spoke & !members.bits();
        if outsiders != 0 {
            let detail = format!(
                "replicas {} sent round messages in slot {} whose members are {members}",
                Members::from_bits(outsiders),
                slot.0
            );
            self.violate(ViolationKind::Membership, detail);
        }
    }

    /// Submits a random membership change through a random healthy replica, and schedules the next.
    pub(super) fn reconfigure(&mut self) {
        if self.healed_at_us.is_some() {
            return;
        }
        let every_ms = self.options.crash_every_ms;
        let next_us = self.now_us + self.fault_rng.between(1, 2 * every_ms) * 1000;
        self.schedule(next_us, Event::Reconfigure);
        let healthy: Vec<usize> = (0..self.nodes.len()).filter(|r| self.healthy(*r)).collect();
        if healthy.is_empty() {
            return;
        }
        let via = healthy[self.fault_rng.below(healthy.len() as u64) as usize];
        let current = self.nodes[via].core.members();
        let next = match self.pick_change(via, current) {
            Some(next) => next,
            None => return,
        };
        let id = CommandId { client: RECONFIG_CLIENT, seq: self.members.next_seq };
        self.members.next_seq += 1;
        self.members.submitted += 1;
        let payload = next.to_string().into_bytes();
        self.submitted.insert(id, payload.clone());
        self.run_core(via, Input::Submit(vec![ClientCommand::reconfigure(id, current, next, payload)]));
    }

    fn healthy(&self, replica: usize) -> bool {
        let node = &self.nodes[replica];
        node.up && !node.kept_down && !super::lost_votes(node)
    }

    /// Adds a healthy non-member that is caught up with `via`, or removes a member while more than
    /// three remain, keeping the impaired members of the result a minority.
    fn pick_change(&mut self, via: usize, current: Members) -> Option<Members> {
        let at = self.nodes[via].core.next_slot().0;
        let addable: Vec<usize> = (0..self.nodes.len())
            .filter(|r| !current.contains(ReplicaId(*r as u8)) && self.healthy(*r))
            .filter(|r| self.nodes[*r].core.next_slot().0 + 2 >= at)
            .collect();
        let removable: Vec<usize> = match current.len() > usize::from(GENESIS) {
            true => current.iter().map(|id| id.index()).collect(),
            false => Vec::new(),
        };
        let add = match (addable.is_empty(), removable.is_empty()) {
            (true, true) => return None,
            (false, true) => true,
            (true, false) => false,
            (false, false) => self.fault_rng.below(2) == 0,
        };
        let next = match add {
            true => current.with(ReplicaId(addable[self.fault_rng.below(addable.len() as u64) as usize] as u8)),
            false => current.without(ReplicaId(removable[self.fault_rng.below(removable.len() as u64) as usize] as u8)),
        };
        let impaired = next.iter().filter(|id| super::lost_votes(&self.nodes[id.index()])).count();
        (impaired <= (next.len() - 1) / 2).then_some(next)
    }
}
