//! The simulated network: sends (with loss, duplication, delay and the coin-aware adversary, and refused
//! when over the transport's byte limit), deliveries, partitions and heals, and the equivocation check on everything a replica says.

use super::{batch_fingerprint, coin_seed, Event, Payload, World};
use crate::check::ViolationKind;
use consensus::{coin, decode_message, encode_message, Config, Input, Message, ReplicaId};

use crate::kv::KvOp;
use crate::options::Options;

impl World {
    pub(super) fn send(&mut self, from: usize, to: usize, message: Message) {
        self.messages_sent += 1;
        self.check_consistent_speech(from, &message);
        self.check_member_speaks(from, &message);
        // Only messages that carry commands or state can be large; the rest are a few dozen bytes.
        let may_be_large = matches!(
            message,
            Message::Forward { .. }
                | Message::Proposal { .. }
                | Message::SyncReply { .. }
                | Message::SnapshotChunk { .. }
        );
        if self.options.message_bytes_max != usize::MAX
            && may_be_large
            && encode_message(&message).len() > self.options.message_bytes_max
        {
            // Refused at the sender, as a node's peer queue refuses a message over its bound.
            self.messages_refused_oversize += 1;
            return;
        }
        let faulty = self.healed_at_us.is_none();
        if faulty && (self.cut[from][to] || self.bridged(from, to) || self.net_rng.chance(self.options.loss_permille)) {
            return;
        }
        let copies = if faulty && self.net_rng.chance(self.options.duplicate_permille) { 2 } else { 1 };
        let held_back_us = if faulty { self.adversary_hold_us(&message) } else { 0 };
        for _ in 0..copies {
            let delay_us = self.draw_delay_us(faulty) + held_back_us;
            let payload = if self.options.codec {
                Payload::Bytes(encode_message(&message))
            } else {
                Payload::Message(message.clone())
            };
            let epoch = self.net_epoch;
            self.schedule(self.now_us + delay_us, Event::Deliver { from, to, payload, epoch });
        }
    }

    /// The coin-aware scheduler: states and votes that agree with the coin of their (slot, phase) arrive
    /// late, so replicas tend to see the values the coin would not pick and stay split.
    pub(super) fn adversary_hold_us(&mut self, message: &Message) -> u64 {
        if !self.options.faults.adversary {
            return 0;
        }
        let (slot, phase, value) = match message {
            Message::State { slot, phase, value, .. } => (*slot, *phase, Some(*value)),
            Message::Vote { slot, phase, vote, .. } => (*slot, *phase, *vote),
            _ => return 0,
        };
        if value.is_some_and(|v| v == coin(coin_seed(&self.options), slot, phase)) {
            return self.net_rng.between(self.options.delay_us_max, 4 * self.options.delay_us_max);
        }
        0
    }

    /// A replica never sends two different proposals for a slot, or two different states or votes for
    /// a phase, even across a crash and restart.
    pub(super) fn check_consistent_speech(&mut self, from: usize, message: &Message) {
        let (slot, phase, round, said) = match message {
            Message::Proposal { slot, batch } => (*slot, 0, 0, batch_fingerprint(batch)),
            Message::State { slot, phase, value, .. } => (*slot, phase.0, 1, u64::from(*value)),
            Message::Vote { slot, phase, vote, .. } => (*slot, phase.0, 2, vote.map_or(2, u64::from)),
            _ => return,
        };
        let earlier = *self.said.entry((from, slot.0, phase, round)).or_insert(said);
        if earlier != said {
            let detail = format!(
                "replica {from} sent two different {} in slot {} phase {phase}",
                ["proposals", "states", "votes"][usize::from(round)],
                slot.0
            );
            self.violate(ViolationKind::Equivocation, detail);
        }
    }

    pub(super) fn draw_delay_us(&mut self, faulty: bool) -> u64 {
        let base = self.net_rng.between(self.options.delay_us_min, self.options.delay_us_max);
        if faulty && self.net_rng.chance(self.options.spike_permille) {
            return base * self.net_rng.between(10, 100);
        }
        base
    }

    pub(super) fn deliver(&mut self, from: usize, to: usize, payload: Payload, epoch: u64) {
        if !self.nodes[to].up || epoch != self.net_epoch {
            return;
        }
        let message = match payload {
            Payload::Message(message) => message,
            Payload::Bytes(bytes) => match decode_message(&bytes) {
                Ok(message) => message,
                Err(error) => {
                    self.violate(ViolationKind::Codec, format!("a message failed to decode: {error}"));
                    return;
                }
            },
        };
        let from = ReplicaId(from as u8);
        self.run_core(to, Input::Message { from, message });
    }

    pub(super) fn repartition(&mut self) {
        if self.healed_at_us.is_some() {
            return;
        }
        let every_ms = self.options.partition_every_ms;
        let next_us = self.now_us + self.fault_rng.between(every_ms / 2, every_ms * 3 / 2) * 1000;
        self.schedule(next_us, Event::Partition);
        let n = self.nodes.len();
        let draw = self.fault_rng.below(10);
        let sides: Vec<u64> = (0..n).map(|_| self.fault_rng.below(2)).collect();
        for from in 0..n {
            for to in 0..n {
                self.cut[from][to] = match draw {
                    0..=3 => false,
                    4..=7 => sides[from] != sides[to],
                    _ => from != to && self.fault_rng.chance(300),
                };
            }
        }
    }

    pub(super) fn heal(&mut self) {
        self.healed_at_us = Some(self.now_us);
        // A crash that was due inside a replica's next turn happens now, between turns, so every crash
        // the faulty phase scheduled is followed by its restart below.
        for replica in 0..self.nodes.len() {
            if self.nodes[replica].torn_next_turn {
                self.crash(replica, true);
            }
        }
        self.cut.iter_mut().flatten().for_each(|c| *c = false);
        self.bridge = None;
        for replica in 0..self.nodes.len() {
            self.restart(replica);
        }
    }
}

/// Scales the core's message bounds to the simulated transport's byte limit (`Faults::size`).
pub(super) fn fit_to_message_limit(options: &Options, config: &mut Config) {
    if options.message_bytes_max == usize::MAX {
        return;
    }
    // Every message the core sends must fit the transport's limit; the bounds scale down with it
    // (a batch or forward of one command is always allowed: a padded command is a quarter of it).
    let limit = options.message_bytes_max;
    let command_max = options.value_pad_bytes + 128;
    config.batch_bytes_max = limit / 2;
    config.forward_commands_max = (limit / command_max).max(1);
    // A re-forward carries the oldest `forward_commands_max` commands; a proposal head longer than that
    // could hold a command that one replica lacks and nobody re-forwards (heads would differ for good).
    config.batch_commands_max = config.batch_commands_max.min(config.forward_commands_max);
    config.sync_slots_max = 16;
    config.sync_bytes_max = limit / 4;
    config.snapshot_chunk_bytes = limit / 4;
    // The queue's byte bound holds as many padded commands as it held plain ones.
    let plain = KvOp::Put { key: 0, value: 0 }.payload(0).len() + 48;
    config.queue_bytes_max = options.queue_bytes_max.saturating_mul(plain + options.value_pad_bytes) / plain;
    config.log_bytes_max = options.log_bytes_max.saturating_mul(plain + options.value_pad_bytes) / plain;
}
