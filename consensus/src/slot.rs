//! One slot's agreement: the proposal exchange (weak multi-valued consensus) followed by randomized binary
//! agreement in phases of two rounds (state, vote), as in Rabia.
//!
//! Invariants:
//! - The replica sends at most one proposal, and per phase at most one state and one vote, for this slot;
//!   they are kept so they can be resent unchanged. Peers' messages are recorded first-come; a later,
//!   different message from the same peer for the same round is ignored.
//! - A state, vote or decision is computed once a quorum (a majority) of the round's messages is in; a
//!   larger set gives the same guarantees (any two quorums intersect).
//! - The slot's membership is fixed at construction: only its members' proposals, states and votes are
//!   recorded (tables are indexed by id, `MEMBERS_MAX` long), quorums are majorities of it, and a
//!   replica outside it sends nothing for the slot.
//! - Safety never depends on timing or on the coin: at most one batch can be proposed by a majority, all
//!   non-"?" votes of a phase agree, and a decision for b in phase k makes every replica enter phase k + 1
//!   with state b.

use crate::coin::{coin, mix64};
use crate::message::Message;
use crate::types::{Broken, Command, CommandKind, Config, Members, Phase, Slot, MEMBERS_MAX};

#[derive(Clone, Debug, Default)]
struct PhaseRound {
    states: Vec<Option<bool>>,
    votes: Vec<Option<Option<bool>>>,
}

/// Agreement state for one slot.
pub(crate) struct SlotAgreement {
    pub(crate) slot: Slot,
    me: usize,
    members: Members,
    quorum: usize,
    proposals: Vec<Option<Vec<Command>>>,
    /// The batch a majority proposed, once seen (or identified by a peer's digest).
    value: Option<Vec<Command>>,
    value_digest: Option<u64>,
    /// `rounds[k - 1]` holds phase k.
    rounds: Vec<PhaseRound>,
    /// 0 while exchanging proposals, then the phase the replica is in.
    phase: u32,
    pub(crate) decided: Option<bool>,
    /// Set when `phases_max` is reached: the replica stops voting here and waits for catch-up.
    pub(crate) exhausted: bool,
}

impl SlotAgreement {
    pub(crate) fn new(slot: Slot, config: &Config, members: Members) -> SlotAgreement {
        SlotAgreement {
            slot,
            me: config.me.index(),
            members,
            quorum: members.quorum(),
            proposals: vec![None; MEMBERS_MAX],
            value: None,
            value_digest: None,
            rounds: Vec::new(),
            phase: 0,
            decided: None,
            exhausted: false,
        }
    }

    pub(crate) fn has_proposed(&self) -> bool {
        self.proposals.get(self.me).is_some_and(Option::is_some)
    }

    /// Whether `index` may speak in this slot.
    fn counts(&self, index: usize) -> bool {
        index < MEMBERS_MAX && self.members.contains(crate::types::ReplicaId(index as u8))
    }

    /// True once anything at all happened in this slot (used to decide whether to resend).
    pub(crate) fn is_active(&self) -> bool {
        self.proposals.iter().any(Option::is_some) || !self.rounds.is_empty()
    }

    pub(crate) fn phase(&self) -> u32 {
        self.phase
    }

    /// The decided batch once known: `Some(None)` for null, `Some(Some(batch))` for a batch. Takes the
    /// batch out: call once, then drop this slot's agreement.
    pub(crate) fn take_outcome(&mut self) -> Option<Option<Vec<Command>>> {
        match self.decided? {
            false => Some(None),
            true => self.value.take().map(Some),
        }
    }

    pub(crate) fn propose(&mut self, batch: Vec<Command>, out: &mut Vec<Message>) {
        if self.has_proposed() || !self.counts(self.me) {
            return;
        }
        out.push(Message::Proposal { slot: self.slot, batch: batch.clone() });
        self.record_proposal(self.me, batch);
    }

    pub(crate) fn on_proposal(&mut self, from: usize, batch: Vec<Command>) {
        if self.counts(from) && self.proposals[from].is_none() {
            self.record_proposal(from, batch);
        }
    }

    pub(crate) fn on_state(&mut self, from: usize, phase: Phase, value: bool, config: &Config) {
        if !self.counts(from) {
            return;
        }
        if let Some(round) = self.round_mut(phase, config) {
            round.states[from].get_or_insert(value);
        }
    }

    pub(crate) fn on_vote(&mut self, from: usize, phase: Phase, vote: Option<bool>, config: &Config) {
        if !self.counts(from) {
            return;
        }
        if let Some(round) = self.round_mut(phase, config) {
            round.votes[from].get_or_insert(vote);
        }
    }

    fn record_proposal(&mut self, from: usize, batch: Vec<Command>) {
        self.proposals[from] = Some(batch);
        self.identify_value();
    }

    fn round_mut(&mut self, phase: Phase, config: &Config) -> Option<&mut PhaseRound> {
        if phase.0 == 0 || phase.0 > config.phases_max {
            return None;
        }
        let index = (phase.0 - 1) as usize;
        while self.rounds.len() <= index {
            self.rounds.push(PhaseRound { states: vec![None; MEMBERS_MAX], votes: vec![None; MEMBERS_MAX] });
        }
        self.rounds.get_mut(index)
    }

    /// Takes every step the messages in hand allow; new messages of this replica go to `out`.
    pub(crate) fn advance(&mut self, config: &Config, out: &mut Vec<Message>) {
        if !self.counts(self.me) {
            return;
        }
        while self.decided.is_none() && !self.exhausted && self.step(config, out) {}
    }

    fn step(&mut self, config: &Config, out: &mut Vec<Message>) -> bool {
        if self.phase == 0 {
            return self.finish_proposals(config, out);
        }
        let phase = Phase(self.phase);
        let me = self.me;
        let quorum = self.quorum;
        let Some(round) = self.round_mut(phase, config) else {
            return false;
        };
        if round.votes[me].is_none() {
            let Some(vote) = round_one(&round.states, quorum) else {
                return false;
            };
            if config.broken == Broken::DecideAfterFirstRound && vote.is_some() {
                self.decided = vote;
                return false;
            }
            round.votes[me] = Some(vote);
            let batch_digest = self.digest_if(vote == Some(true));
            out.push(Message::Vote { slot: self.slot, phase, vote, batch_digest });
            return true;
        }
        match round_two(&round.votes, quorum) {
            None => false,
            Some(RoundTwo::Decide(value)) => {
                self.decided = Some(value);
                false
            }
            Some(RoundTwo::Adopt(value)) => self.enter_phase(phase.0 + 1, value, config, out),
            Some(RoundTwo::Coin) => {
                let seed = match config.broken {
                    Broken::LocalCoin => config.coin_seed ^ (self.me as u64 + 1).wrapping_mul(0x9E37_79B9),
                    _ => config.coin_seed,
                };
                let value = coin(seed, self.slot, phase);
                self.enter_phase(phase.0 + 1, value, config, out)
            }
        }
    }

    fn finish_proposals(&mut self, config: &Config, out: &mut Vec<Message>) -> bool {
        let received = self.proposals.iter().filter(|p| p.is_some()).count();
        if !self.has_proposed() || received < self.quorum {
            return false;
        }
        let state = self.value.is_some();
        self.enter_phase(1, state, config, out)
    }

    fn enter_phase(&mut self, phase: u32, state: bool, config: &Config, out: &mut Vec<Message>) -> bool {
        let me = self.me;
        let slot = self.slot;
        let Some(round) = self.round_mut(Phase(phase), config) else {
            self.exhausted = true;
            return false;
        };
        round.states[me] = Some(state);
        self.phase = phase;
        let batch_digest = self.digest_if(state);
        out.push(Message::State { slot, phase: Phase(phase), value: state, batch_digest });
        true
    }

    /// Re-adopts a round message this replica sent before a restart (read back from its durable log), so it
    /// resends that message unchanged and never sends a different one for the same round.
    pub(crate) fn restore_own(&mut self, message: &Message, config: &Config) {
        let me = self.me;
        if !self.counts(me) {
            return;
        }
        match message {
            Message::Proposal { slot, batch } if *slot == self.slot && !self.has_proposed() => {
                self.record_proposal(me, batch.clone());
            }
            Message::State { slot, phase, value, batch_digest } if *slot == self.slot => {
                self.learn_digest(*batch_digest);
                if let Some(round) = self.round_mut(*phase, config) {
                    round.states[me].get_or_insert(*value);
                    self.phase = self.phase.max(phase.0);
                }
            }
            Message::Vote { slot, phase, vote, batch_digest } if *slot == self.slot => {
                self.learn_digest(*batch_digest);
                if let Some(round) = self.round_mut(*phase, config) {
                    round.votes[me].get_or_insert(*vote);
                    self.phase = self.phase.max(phase.0);
                }
            }
            _ => {}
        }
    }

    /// Every message this replica has sent for this slot, for retransmission.
    pub(crate) fn own_messages(&self, out: &mut Vec<Message>) {
        if let Some(Some(batch)) = self.proposals.get(self.me) {
            out.push(Message::Proposal { slot: self.slot, batch: batch.clone() });
        }
        for (index, round) in self.rounds.iter().enumerate() {
            let phase = Phase(index as u32 + 1);
            if let Some(value) = round.states[self.me] {
                let batch_digest = self.digest_if(value);
                out.push(Message::State { slot: self.slot, phase, value, batch_digest });
            }
            if let Some(vote) = round.votes[self.me] {
                let batch_digest = self.digest_if(vote == Some(true));
                out.push(Message::Vote { slot: self.slot, phase, vote, batch_digest });
            }
        }
    }

    fn digest_if(&self, one: bool) -> Option<u64> {
        self.value_digest.filter(|_| one && self.value.is_some())
    }

    /// A peer told us the digest of the majority batch: pick it out of the proposals we hold.
    pub(crate) fn learn_digest(&mut self, digest: Option<u64>) {
        if self.value.is_some() || digest.is_none() {
            return;
        }
        self.value_digest = digest;
        self.identify_value();
    }

    fn identify_value(&mut self) {
        if self.value.is_some() {
            return;
        }
        if let Some(batch) = majority_batch(&self.proposals, self.quorum) {
            self.value_digest = Some(batch_digest(&batch));
            self.value = Some(batch);
            return;
        }
        let Some(digest) = self.value_digest else {
            return;
        };
        self.value = self.proposals.iter().flatten().find(|p| !p.is_empty() && batch_digest(p) == digest).cloned();
    }
}

/// A 64-bit digest of a batch (ids, origins, timestamps, payloads), stable across processes and builds.
/// Two different batches of one slot colliding is a 2^-64 event, which we accept.
pub(crate) fn batch_digest(batch: &[Command]) -> u64 {
    let mut digest = mix64(batch.len() as u64);
    let mut absorb = |word: u64| digest = mix64(digest ^ word);
    for command in batch {
        absorb(command.id.client);
        absorb(command.id.seq);
        absorb(u64::from(command.origin.0));
        absorb(command.timestamp_ms);
        absorb(command.deadline_ms);
        // Ordinary commands add nothing, so their digests stay what they were before kinds existed.
        if let CommandKind::Reconfigure { expected, next } = command.kind {
            absorb(0x7265_636f_6e66_6967);
            absorb(expected.bits());
            absorb(next.bits());
        }
        absorb(command.payload.len() as u64);
        for chunk in command.payload.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            absorb(u64::from_le_bytes(word));
        }
    }
    digest
}

enum RoundTwo {
    Decide(bool),
    Adopt(bool),
    Coin,
}

/// Round 1: with a quorum of states in, vote for a value a majority holds, else "?".
fn round_one(states: &[Option<bool>], quorum: usize) -> Option<Option<bool>> {
    let ones = states.iter().filter(|s| **s == Some(true)).count();
    let zeros = states.iter().filter(|s| **s == Some(false)).count();
    if ones + zeros < quorum {
        return None;
    }
    Some(if ones >= quorum {
        Some(true)
    } else if zeros >= quorum {
        Some(false)
    } else {
        None
    })
}

/// Round 2: with a quorum of votes in, decide a value a majority voted for; else adopt any non-"?" vote
/// (all non-"?" votes of a phase agree); else flip the common coin.
fn round_two(votes: &[Option<Option<bool>>], quorum: usize) -> Option<RoundTwo> {
    let received = votes.iter().filter(|v| v.is_some()).count();
    if received < quorum {
        return None;
    }
    let ones = votes.iter().filter(|v| **v == Some(Some(true))).count();
    let zeros = votes.iter().filter(|v| **v == Some(Some(false))).count();
    Some(if ones >= quorum {
        RoundTwo::Decide(true)
    } else if zeros >= quorum {
        RoundTwo::Decide(false)
    } else if ones > 0 {
        RoundTwo::Adopt(true)
    } else if zeros > 0 {
        RoundTwo::Adopt(false)
    } else {
        RoundTwo::Coin
    })
}

/// The non-empty batch proposed by at least `quorum` replicas, if any (at most one can be).
fn majority_batch(proposals: &[Option<Vec<Command>>], quorum: usize) -> Option<Vec<Command>> {
    for candidate in proposals.iter().flatten() {
        if candidate.is_empty() {
            continue;
        }
        let copies = proposals.iter().flatten().filter(|p| *p == candidate).count();
        if copies >= quorum {
            return Some(candidate.clone());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{CommandId, ReplicaId};

    fn batch(client: u64) -> Vec<Command> {
        vec![Command {
            id: CommandId { client, seq: 1 },
            origin: ReplicaId(0),
            timestamp_ms: 0,
            deadline_ms: 0,
            payload: vec![],
            kind: CommandKind::Client,
        }]
    }

    /// Phase 1 with `from` agreeing (state and vote 1), this replica stepping after each message.
    fn phase_one_from(from: usize, slot: &mut SlotAgreement, config: &Config, out: &mut Vec<Message>) {
        slot.advance(config, out);
        slot.on_state(from, Phase(1), true, config);
        slot.advance(config, out);
        slot.on_vote(from, Phase(1), Some(true), config);
        slot.advance(config, out);
    }

    #[test]
    fn messages_from_outside_the_slots_members_count_for_nothing() {
        // The same exchange as the one-phase decision below, but with replica 3, not a member of the three.
        let config = Config::new(3, ReplicaId(0), 1);
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(1), &mut out);
        slot.on_proposal(3, batch(1));
        phase_one_from(3, &mut slot, &config, &mut out);
        assert_eq!(slot.take_outcome(), None);
        assert_eq!(out.len(), 1, "only its own proposal: {out:?}");
    }

    #[test]
    fn a_replica_proposes_once_per_slot_and_a_peers_first_proposal_stands() {
        let config = Config::new(3, ReplicaId(0), 1);
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(1), &mut out);
        slot.propose(batch(2), &mut out);
        assert_eq!(out.len(), 1, "one proposal: {out:?}");
        // Replica 1 proposes the same batch, then another: the first is its proposal, so the two agree.
        slot.on_proposal(1, batch(1));
        slot.on_proposal(1, batch(2));
        assert_eq!(slot.proposals[0], Some(batch(1)));
        assert_eq!(slot.proposals[1], Some(batch(1)));
        phase_one_from(1, &mut slot, &config, &mut out);
        assert_eq!(slot.take_outcome(), Some(Some(batch(1))));
    }

    #[test]
    fn same_proposals_decide_the_batch_in_one_phase() {
        let config = Config::new(3, ReplicaId(0), 1);
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(1), &mut out);
        slot.on_proposal(1, batch(1));
        phase_one_from(1, &mut slot, &config, &mut out);
        assert_eq!(slot.take_outcome(), Some(Some(batch(1))));
        assert_eq!(out.len(), 3, "proposal, state, vote: {out:?}");
    }

    #[test]
    fn split_proposals_decide_null() {
        let config = Config::new(3, ReplicaId(0), 1);
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(1), &mut out);
        slot.on_proposal(1, batch(2));
        slot.advance(&config, &mut out);
        slot.on_state(1, Phase(1), false, &config);
        slot.advance(&config, &mut out);
        slot.on_vote(1, Phase(1), Some(false), &config);
        slot.advance(&config, &mut out);
        assert_eq!(slot.take_outcome(), Some(None));
    }

    #[test]
    fn question_votes_fall_back_to_the_common_coin() {
        let config = Config::new(3, ReplicaId(0), 1);
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(1), &mut out);
        slot.on_proposal(1, batch(1));
        slot.advance(&config, &mut out);
        slot.on_state(1, Phase(1), false, &config);
        slot.advance(&config, &mut out);
        slot.on_vote(1, Phase(1), None, &config);
        slot.advance(&config, &mut out);
        assert_eq!(slot.phase(), 2);
        let expected = coin(1, Slot(0), Phase(1));
        assert!(matches!(out.last(), Some(Message::State { value, .. }) if *value == expected));
    }

    #[test]
    fn a_batch_without_a_visible_majority_is_identified_by_its_digest() {
        let config = Config::new(3, ReplicaId(0), 1);
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(2), &mut out);
        slot.on_proposal(1, batch(1));
        slot.advance(&config, &mut out);
        assert!(slot.take_outcome().is_none());
        slot.learn_digest(Some(batch_digest(&batch(1))));
        slot.on_state(1, Phase(1), true, &config);
        slot.advance(&config, &mut out);
        slot.on_vote(1, Phase(1), Some(true), &config);
        slot.on_vote(2, Phase(1), Some(true), &config);
        slot.advance(&config, &mut out);
        assert_eq!(slot.take_outcome(), Some(Some(batch(1))));
    }

    /// Replica 0 of three, having proposed `batch(1)` and seen peer 1 propose the same: it knows the batch.
    fn agreed(config: &Config) -> (SlotAgreement, Vec<Message>) {
        let mut slot = SlotAgreement::new(Slot(0), config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(1), &mut out);
        slot.on_proposal(1, batch(1));
        slot.advance(config, &mut out);
        (slot, out)
    }

    #[test]
    fn states_and_votes_for_one_carry_the_batch_digest_and_others_do_not() {
        let config = Config::new(3, ReplicaId(0), 1);
        let digest = Some(batch_digest(&batch(1)));
        let (mut slot, mut out) = agreed(&config);
        assert!(
            matches!(out.last(), Some(Message::State { value: true, batch_digest, .. }) if *batch_digest == digest)
        );
        slot.on_state(1, Phase(1), true, &config);
        slot.advance(&config, &mut out);
        assert!(
            matches!(out.last(), Some(Message::Vote { vote: Some(true), batch_digest, .. }) if *batch_digest == digest),
            "{out:?}"
        );
        // Resends are the very messages sent.
        let mut resent = Vec::new();
        slot.own_messages(&mut resent);
        assert_eq!(resent, out);

        // Split states: a "?" vote names no batch, though this replica knows it.
        let (mut split, mut out) = agreed(&config);
        split.on_state(1, Phase(1), false, &config);
        split.advance(&config, &mut out);
        assert!(matches!(out.last(), Some(Message::Vote { vote: None, batch_digest: None, .. })), "{out:?}");
        let mut resent = Vec::new();
        split.own_messages(&mut resent);
        assert_eq!(resent, out);
    }

    #[test]
    fn a_replica_that_missed_the_majority_decides_the_batch_from_a_vote_digest() {
        // Replica 2 saw its own proposal and one other, different from the majority's: it votes and
        // decides 1 on its peers' votes, and must pick the batch out by the digest those votes carry.
        let config = Config::new(3, ReplicaId(2), 1);
        let (mut voter, mut sent) = agreed(&Config::new(3, ReplicaId(0), 1));
        voter.on_state(1, Phase(1), true, &Config::new(3, ReplicaId(0), 1));
        voter.advance(&Config::new(3, ReplicaId(0), 1), &mut sent);
        let Some(Message::Vote { batch_digest, .. }) = sent.last().cloned() else { panic!("no vote: {sent:?}") };
        let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
        let mut out = Vec::new();
        slot.propose(batch(2), &mut out);
        slot.on_proposal(1, batch(1));
        slot.advance(&config, &mut out);
        slot.on_state(0, Phase(1), true, &config);
        slot.on_state(1, Phase(1), true, &config);
        slot.on_vote(0, Phase(1), Some(true), &config);
        slot.learn_digest(batch_digest);
        slot.on_vote(1, Phase(1), Some(true), &config);
        slot.advance(&config, &mut out);
        assert_eq!(slot.take_outcome(), Some(Some(batch(1))));
    }

    #[test]
    fn a_lone_vote_is_adopted_as_the_next_phase_state() {
        for (theirs, ours) in [(Some(true), true), (Some(false), false)] {
            // A coin seed that would give the other value, so only adoption explains the outcome.
            let seed = (1..).find(|seed| coin(*seed, Slot(0), Phase(1)) != ours).unwrap_or(1);
            let config = Config::new(3, ReplicaId(0), seed);
            let mut slot = SlotAgreement::new(Slot(0), &config, config.members);
            let mut out = Vec::new();
            slot.propose(batch(1), &mut out);
            slot.on_proposal(1, batch(if ours { 1 } else { 2 }));
            slot.advance(&config, &mut out);
            // Our state is 1 exactly when the batch is known; peer 1 agrees, so we vote it.
            slot.on_state(1, Phase(1), ours, &config);
            slot.advance(&config, &mut out);
            assert!(matches!(out.last(), Some(Message::Vote { vote, .. }) if *vote == theirs), "{out:?}");
            // Peer 1 voted "?": one vote for a value and no quorum for it, so phase 2 starts from it.
            slot.on_vote(1, Phase(1), None, &config);
            slot.advance(&config, &mut out);
            assert_eq!(slot.phase(), 2);
            assert!(slot.take_outcome().is_none());
            assert!(matches!(out.last(), Some(Message::State { phase: Phase(2), value, .. }) if *value == ours));
        }
    }

    #[test]
    fn phases_past_the_bound_are_ignored_and_exhaust_the_slot() {
        let mut config = Config::new(3, ReplicaId(0), 1);
        config.phases_max = 2;
        let (mut slot, mut out) = agreed(&config);
        // Peers' messages for phase 0 or past the bound are not recorded; the last phase is.
        slot.on_state(1, Phase(0), true, &config);
        slot.on_state(1, Phase(3), true, &config);
        slot.on_vote(2, Phase(3), None, &config);
        assert_eq!(slot.rounds.len(), 1);
        slot.on_state(2, Phase(2), true, &config);
        assert_eq!(slot.rounds.len(), 2);
        assert_eq!(slot.rounds[1].states[2], Some(true));
        // Phase 1 ends on the coin (all "?"), phase 2 on the coin again: there is no phase 3 to enter.
        slot.on_state(1, Phase(1), false, &config);
        slot.advance(&config, &mut out);
        slot.on_vote(1, Phase(1), None, &config);
        slot.advance(&config, &mut out);
        assert_eq!((slot.phase(), slot.exhausted), (2, false));
        let states_before = out.len();
        slot.on_state(1, Phase(2), !slot.rounds[1].states[0].unwrap_or(false), &config);
        slot.advance(&config, &mut out);
        slot.on_vote(1, Phase(2), None, &config);
        slot.advance(&config, &mut out);
        assert!(slot.exhausted, "{out:?}");
        assert_eq!(slot.phase(), 2);
        assert!(out[states_before..].iter().all(|m| !matches!(m, Message::State { phase: Phase(3), .. })));
        assert!(slot.decided.is_none());
    }

    #[test]
    fn a_slot_is_active_once_any_proposal_or_round_message_is_in() {
        let config = Config::new(3, ReplicaId(0), 1);
        let fresh = SlotAgreement::new(Slot(0), &config, config.members);
        assert!(!fresh.is_active());
        let mut proposed = SlotAgreement::new(Slot(0), &config, config.members);
        proposed.on_proposal(2, batch(1));
        assert!(proposed.is_active());
        let mut stated = SlotAgreement::new(Slot(0), &config, config.members);
        stated.on_state(1, Phase(1), true, &config);
        assert!(stated.is_active());
        // A message past the phase bound is not recorded, so it does not make the slot active.
        let mut beyond = SlotAgreement::new(Slot(0), &config, config.members);
        beyond.on_vote(1, Phase(config.phases_max + 1), None, &config);
        assert!(!beyond.is_active());
    }

    #[test]
    fn restored_own_messages_are_resent_unchanged_and_other_slots_are_ignored() {
        let config = Config::new(3, ReplicaId(0), 1);
        let digest = Some(batch_digest(&batch(1)));
        let own = vec![
            Message::Proposal { slot: Slot(4), batch: batch(1) },
            Message::State { slot: Slot(4), phase: Phase(1), value: true, batch_digest: digest },
            Message::Vote { slot: Slot(4), phase: Phase(1), vote: Some(true), batch_digest: digest },
            Message::State { slot: Slot(4), phase: Phase(2), value: true, batch_digest: digest },
        ];
        let mut slot = SlotAgreement::new(Slot(4), &config, config.members);
        for message in &own {
            slot.restore_own(message, &config);
        }
        // Another slot's messages, and a second proposal, change nothing.
        slot.restore_own(&Message::Proposal { slot: Slot(4), batch: batch(2) }, &config);
        slot.restore_own(&Message::Proposal { slot: Slot(5), batch: batch(3) }, &config);
        slot.restore_own(&Message::State { slot: Slot(3), phase: Phase(3), value: false, batch_digest: None }, &config);
        slot.restore_own(&Message::Vote { slot: Slot(5), phase: Phase(2), vote: None, batch_digest: None }, &config);
        assert_eq!(slot.phase(), 2);
        let mut resent = Vec::new();
        slot.own_messages(&mut resent);
        assert_eq!(resent, own);

        // A slot that has not proposed takes its restored proposal from the right slot only.
        let mut other = SlotAgreement::new(Slot(4), &config, config.members);
        other.restore_own(&Message::Proposal { slot: Slot(5), batch: batch(3) }, &config);
        assert!(!other.has_proposed());
        other.restore_own(&Message::Vote { slot: Slot(3), phase: Phase(1), vote: None, batch_digest: None }, &config);
        assert!(!other.is_active());
    }

    #[test]
    fn a_peer_digest_never_replaces_the_batch_a_replica_identified() {
        let config = Config::new(3, ReplicaId(0), 1);
        let (mut slot, _) = agreed(&config);
        slot.learn_digest(Some(batch_digest(&batch(2))));
        slot.learn_digest(None);
        let mut resent = Vec::new();
        slot.own_messages(&mut resent);
        let digest = Some(batch_digest(&batch(1)));
        assert!(
            matches!(resent.last(), Some(Message::State { batch_digest, .. }) if *batch_digest == digest),
            "{resent:?}"
        );
    }

    #[test]
    fn the_batch_digest_is_fixed_across_builds_and_sees_every_field() {
        // Replicas of different builds compare digests: the function may never change.
        let command = Command {
            id: crate::types::CommandId { client: 7, seq: 9 },
            origin: ReplicaId(2),
            timestamp_ms: 1234,
            deadline_ms: 31_234,
            payload: b"put user/a 1".to_vec(),
            kind: crate::types::CommandKind::Client,
        };
        assert_eq!(batch_digest(std::slice::from_ref(&command)), PINNED_DIGEST);
        let variants = [
            Command { id: crate::types::CommandId { client: 8, seq: 9 }, ..command.clone() },
            Command { id: crate::types::CommandId { client: 7, seq: 10 }, ..command.clone() },
            Command { origin: ReplicaId(1), ..command.clone() },
            Command { timestamp_ms: 1235, ..command.clone() },
            Command { deadline_ms: 31_235, ..command.clone() },
            Command { payload: b"put user/a 2".to_vec(), ..command.clone() },
            Command { payload: b"put user/a 1\0".to_vec(), ..command.clone() },
            Command { kind: reconfigure(1), ..command.clone() },
        ];
        for variant in variants {
            assert_ne!(batch_digest(std::slice::from_ref(&variant)), PINNED_DIGEST, "{variant:?}");
        }
        assert_ne!(batch_digest(&[command.clone(), command.clone()]), PINNED_DIGEST);
        assert_ne!(batch_digest(&[]), PINNED_DIGEST);
        let one = Command { kind: reconfigure(1), ..command.clone() };
        let other = Command { kind: reconfigure(2), ..command.clone() };
        assert_ne!(batch_digest(&[one]), batch_digest(&[other]), "the target membership counts");
    }

    fn reconfigure(extra: u8) -> crate::types::CommandKind {
        let expected = crate::types::Members::first(3);
        crate::types::CommandKind::Reconfigure { expected, next: expected.with(ReplicaId(2 + extra)) }
    }

    const PINNED_DIGEST: u64 = 0xe712_5b7a_cafc_50c5;
}
