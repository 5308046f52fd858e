//! One replica's turn: its outputs carried out in order, then ended the way the node runtime ends one
//! (records durable first, then messages and replies), or cut short by a crash or a failed write.

use std::collections::VecDeque;

use consensus::{DecidedSlot, Input, Message, Output};

use super::World;
use crate::durable::Record;
use crate::kv::KvResult;

/// What one turn of a replica produced, carried out at its end the way the node runtime does: records
/// become durable first, then messages leave and clients hear about decided slots.
#[derive(Default)]
pub(super) struct Turn {
    pub(super) records: Vec<Record>,
    /// `None`: to every peer.
    pub(super) sends: Vec<(Option<usize>, Message)>,
    pub(super) replies: Vec<(usize, u64, KvResult)>,
}

impl World {
    /// Carries out one turn's outputs in order (a snapshot answer may feed the core again), then ends the
    /// turn: records become durable, and only then do messages leave and clients hear about decisions.
    pub(super) fn apply_outputs(&mut self, replica: usize, out: Vec<Output>) {
        let mut turn = Turn::default();
        let mut work: VecDeque<Output> = out.into();
        while let Some(output) = work.pop_front() {
            match output {
                Output::Send { to, message } => turn.send(Some(to.index()), message),
                Output::Broadcast { message } => turn.send(None, message),
                Output::SetTimer { kind, at_ms } => self.set_timer(replica, kind, at_ms),
                Output::Decided(decision) => {
                    self.check_slot_members(replica, decision.slot);
                    let record = DecidedSlot { slot: decision.slot, batch: decision.batch.clone() };
                    turn.records.push(Record::Decided(record));
                    self.on_decided(replica, decision, &mut turn.replies);
                }
                Output::Rejected { id, .. } => self.control_rejected(id),
                Output::MembersChanged { members, .. } => self.members_changed(replica, members),
                Output::Removed { .. } => {}
                Output::TakeSnapshot { next_slot, .. } => {
                    let state = consensus::Bytes::from(self.nodes[replica].kv.encode());
                    let local_ms = self.local_ms(replica);
                    let mut more = Vec::new();
                    let input = Input::SnapshotTaken { next_slot, state };
                    self.nodes[replica].core.handle(local_ms, input, &mut more);
                    work.extend(more);
                    if let Some(snapshot) = self.nodes[replica].core.latest_snapshot() {
                        self.take_snapshot(replica, snapshot, &mut turn);
                    }
                }
                Output::InstallSnapshot { next_slot, state } => {
                    self.install(replica, next_slot, &state);
                    turn.records.extend(self.nodes[replica].core.latest_snapshot().map(Record::Snapshot));
                }
            }
        }
        let node = &self.nodes[replica];
        if node.disk.is_recovering() && !node.core.is_recovering() {
            turn.records.push(Record::Recovered);
        }
        self.end_turn(replica, turn);
    }

    /// Makes the turn's records durable, then sends its messages and answers its clients; or, when a crash
    /// is due inside this turn, keeps a prefix of its records (a torn write) and crashes before anything
    /// of the turn leaves the replica.
    fn end_turn(&mut self, replica: usize, turn: Turn) {
        if self.nodes[replica].torn_next_turn {
            let kept = self.fault_rng.below(turn.records.len() as u64 + 1) as usize;
            self.write_records(replica, turn.records.into_iter().take(kept));
            self.torn_crashes += 1;
            self.crash(replica, true);
            return;
        }
        if self.nodes[replica].fail_write_next_turn {
            self.fail_write(replica, turn);
            return;
        }
        self.write_records(replica, turn.records);
        self.write_late_snapshots(replica);
        self.sync_periodically(replica);
        let stranded_peer = self.strands_this_turn(replica, &turn.sends);
        if stranded_peer.is_some() {
            // The strand fault: this turn's messages reach everyone but the stranded peer, then the
            // replica goes down for good before anyone hears about its decisions.
            self.send_all(replica, turn.sends, stranded_peer);
            self.strand_crash(replica);
            return;
        }
        self.release(replica, turn.sends, turn.replies);
    }

    /// Sends a turn's messages and answers its clients.
    pub(super) fn release(
        &mut self,
        replica: usize,
        sends: Vec<(Option<usize>, Message)>,
        replies: Vec<(usize, u64, KvResult)>,
    ) {
        self.send_all(replica, sends, None);
        for (client, seq, result) in replies {
            self.reply_later(client, seq, result);
        }
    }

    /// Sends a turn's messages to their peers, except to `skipped`.
    fn send_all(&mut self, replica: usize, sends: Vec<(Option<usize>, Message)>, skipped: Option<usize>) {
        for (to, message) in sends {
            match to {
                Some(to) if Some(to) == skipped => {}
                Some(to) => self.send(replica, to, message),
                None => {
                    for to in (0..self.nodes.len()).filter(|to| *to != replica && Some(*to) != skipped) {
                        self.send(replica, to, message.clone());
                    }
                }
            }
        }
    }
}

impl Turn {
    /// Queues a message to leave at the end of the turn; a round message is recorded first.
    fn send(&mut self, to: Option<usize>, message: Message) {
        if message.round_slot().is_some() {
            self.records.push(Record::OwnMessage(message.clone()));
        }
        self.sends.push((to, message));
    }
}
