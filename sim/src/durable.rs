//! One simulated replica's disk: the durable log the node runtime keeps, and how a replica and its
//! key-value machine are rebuilt from it after a crash that keeps the disk.
//!
//! What is durable, exactly as the node runtime writes it: every decided slot as the replica output it
//! (`Output::Decided`, kept as a `DecidedSlot`), every round message the replica sends (proposal, state,
//! vote: `Message::round_slot()` is `Some`), and the replica's latest snapshot (`Replica::latest_snapshot`,
//! which carries the state machine bytes) whenever one is taken or installed. The shell appends a turn's
//! records in output order and makes them durable at the end of the turn, before any message of that
//! turn leaves or any client hears about its decisions; `world` models that.
//!
//! One record more than the node runtime writes: `recovering`, set while the replica runs as
//! `Replica::restarted` (its earlier disk is gone, so its earlier votes are unknown) and cleared at the
//! end of the first turn in which it is no longer recovering. A replica that crashes again while the
//! marker is set must not resume as an ordinary voter: it resumes with `Replica::resume_recovering`.
//!
//! A storage failure (a write that fails mid-turn) stops the shell before anything of the turn leaves,
//! and the node's failure mark makes its restart distrust its own votes: `mark_failed` records that as
//! the `recovering` marker, which the first turn no longer recovering clears.
//!
//! Snapshots may be written late (a second, slower writer): an older snapshot that lands after a newer
//! one is ignored (`append`); `append_stale_snapshot` is the broken writer that lets it replace the newer
//! one, leaving the records after the newer one behind a gap, as the node's files would be.
//!
//! Invariants: decided records are consecutive from the snapshot's `next_slot` (or slot 0); own messages
//! are kept only for slots not yet decided here (older ones can never matter to `Replica::resume`);
//! a torn write only ever drops a suffix of one turn's records.

use consensus::{DecidedSlot, Message, Replica, Resume, Slot, SnapshotRecord};

use crate::kv::KvMachine;

/// One appended record.
#[derive(Clone, Debug)]
pub enum Record {
    Decided(DecidedSlot),
    OwnMessage(Message),
    Snapshot(SnapshotRecord),
    /// The replica finished recovering: its log from here on holds every vote it casts.
    Recovered,
}

#[derive(Clone, Debug, Default)]
pub struct DurableLog {
    snapshot: Option<SnapshotRecord>,
    decided: Vec<DecidedSlot>,
    own_messages: Vec<Message>,
    recovering: bool,
}

/// What a replica comes back with after a crash that kept its disk.
pub struct Resumed {
    pub core: Replica,
    pub kv: KvMachine,
    /// The first slot the rebuilt replica has not applied.
    pub next_slot: Slot,
}

impl DurableLog {
    /// The disk of a replica that lost its previous one and runs as `Replica::restarted`.
    pub fn recovering() -> DurableLog {
        DurableLog { recovering: true, ..DurableLog::default() }
    }

    pub fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Nothing on this disk but (maybe) the recovering marker: the node starts such a replica with
    /// `Replica::fresh`.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.decided.is_empty() && self.own_messages.is_empty()
    }

    /// The slot of the snapshot on disk, if any.
    pub fn snapshot_slot(&self) -> Option<Slot> {
        self.snapshot.as_ref().map(|s| s.next_slot)
    }

    /// The shell stopped on a storage failure: its restart recovers its vote floor.
    pub fn mark_failed(&mut self) {
        self.recovering = true;
    }

    /// The broken late writer: an older snapshot replaces a newer one; records stay where they are.
    pub fn append_stale_snapshot(&mut self, snapshot: SnapshotRecord) {
        if self.snapshot.as_ref().is_some_and(|s| s.next_slot > snapshot.next_slot) {
            self.snapshot = Some(snapshot);
        } else {
            self.append(Record::Snapshot(snapshot));
        }
    }

    /// What a shell that ignores the signs of lost records hands `Replica::resume`: only the decided
    /// slots it can replay without a gap, and only own messages of the slot after them.
    pub fn to_resume_ignoring_gaps(&self) -> Resume {
        let mut resume = self.to_resume();
        let mut next = self.snapshot.as_ref().map_or(Slot(0), |s| s.next_slot);
        resume.decided.retain(|d| {
            let keep = d.slot == next;
            if keep {
                next = next.next();
            }
            keep || d.slot < next
        });
        resume.own_messages.retain(|m| m.round_slot() == Some(next));
        resume
    }

    /// Appends one record (the end of a turn makes them durable together).
    pub fn append(&mut self, record: Record) {
        match record {
            Record::Decided(decided) => {
                if decided.slot == self.next_slot() {
                    let next = decided.slot.next();
                    self.decided.push(decided);
                    self.own_messages.retain(|m| m.round_slot().is_some_and(|s| s >= next));
                }
            }
            Record::OwnMessage(message) => {
                if message.round_slot().is_some_and(|s| s >= self.next_slot()) {
                    self.own_messages.push(message);
                }
            }
            Record::Snapshot(snapshot) => {
                if self.snapshot.as_ref().is_some_and(|s| s.next_slot >= snapshot.next_slot) {
                    return;
                }
                let next = snapshot.next_slot;
                self.decided.retain(|d| d.slot >= next);
                if self.decided.first().is_some_and(|d| d.slot != next) {
                    self.decided.clear();
                }
                self.own_messages.retain(|m| m.round_slot().is_some_and(|s| s >= next));
                self.snapshot = Some(snapshot);
            }
            Record::Recovered => self.recovering = false,
        }
    }

    /// The first slot the log does not hold a decision for.
    pub fn next_slot(&self) -> Slot {
        match (self.decided.last(), &self.snapshot) {
            (Some(last), _) => last.slot.next(),
            (None, Some(snapshot)) => snapshot.next_slot,
            (None, None) => Slot(0),
        }
    }

    /// What the node runtime hands `Replica::resume`.
    pub fn to_resume(&self) -> Resume {
        Resume {
            snapshot: self.snapshot.clone(),
            decided: self.decided.clone(),
            own_messages: self.own_messages.clone(),
            incarnation: 0,
        }
    }

    /// The key-value machine as the shell rebuilds it: the snapshot's bytes, then every decided slot after
    /// it, in order, stopping at a gap exactly where `Replica::resume` stops. `None`: the snapshot bytes do
    /// not decode.
    pub fn restore_kv(&self) -> Option<(KvMachine, Slot)> {
        let (mut kv, mut next) = match &self.snapshot {
            Some(snapshot) => (KvMachine::decode(&snapshot.state)?, snapshot.next_slot),
            None => (KvMachine::default(), Slot(0)),
        };
        let start = next;
        for decided in self.decided.iter().skip_while(|d| d.slot < start) {
            if decided.slot != next {
                break;
            }
            decided.batch.iter().flatten().for_each(|command| kv.apply(command));
            next = next.next();
        }
        Some((kv, next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::{Command, CommandId, Phase, ReplicaId};

    use crate::kv::KvOp;

    fn put(seq: u64, value: u64) -> Command {
        let payload = KvOp::Put { key: 1, value }.encode();
        Command {
            id: CommandId { client: 1, seq },
            origin: ReplicaId(0),
            timestamp_ms: 0,
            deadline_ms: 0,
            payload,
            kind: Default::default(),
        }
    }

    fn decided(slot: u64, batch: Option<Vec<Command>>) -> Record {
        Record::Decided(DecidedSlot { slot: Slot(slot), batch })
    }

    fn state(slot: u64) -> Message {
        Message::State { slot: Slot(slot), phase: Phase(1), value: true, batch_digest: None }
    }

    #[test]
    fn own_messages_of_decided_slots_are_dropped() {
        let mut log = DurableLog::default();
        log.append(Record::OwnMessage(state(0)));
        log.append(decided(0, None));
        log.append(Record::OwnMessage(state(1)));
        let resume = log.to_resume();
        assert_eq!(resume.own_messages, vec![state(1)]);
        assert_eq!(log.next_slot(), Slot(1));
    }

    #[test]
    fn a_snapshot_replaces_the_prefix_and_the_machine_replays_the_rest() {
        let mut log = DurableLog::default();
        log.append(decided(0, Some(vec![put(1, 10)])));
        let mut at_one = KvMachine::default();
        at_one.apply(&put(1, 10));
        log.append(Record::Snapshot(SnapshotRecord {
            next_slot: Slot(1),
            sessions: Vec::new(),
            members: consensus::Members::first(3),
            state: at_one.encode(),
        }));
        log.append(decided(1, Some(vec![put(2, 20)])));
        log.append(decided(3, None));
        let (kv, next) = log.restore_kv().unwrap_or_default();
        assert_eq!(next, Slot(2), "a record after a gap is not appended");
        assert_eq!(kv.read_local(1), Some(20));
        assert_eq!(log.to_resume().decided.len(), 1);
    }

    #[test]
    fn the_recovering_marker_clears_once() {
        let mut log = DurableLog::recovering();
        assert!(log.is_recovering());
        log.append(Record::Recovered);
        assert!(!log.is_recovering());
    }

    fn snapshot_at(slot: u64) -> SnapshotRecord {
        SnapshotRecord {
            next_slot: Slot(slot),
            sessions: Vec::new(),
            members: consensus::Members::first(3),
            state: KvMachine::default().encode(),
        }
    }

    #[test]
    fn an_older_snapshot_landing_late_is_ignored() {
        let mut log = DurableLog::default();
        log.append(Record::Snapshot(snapshot_at(10)));
        log.append(decided(10, None));
        log.append(Record::Snapshot(snapshot_at(4)));
        assert_eq!(log.snapshot_slot(), Some(Slot(10)));
        assert_eq!(log.next_slot(), Slot(11));
        assert_eq!(log.to_resume().decided.len(), 1);
    }

    #[test]
    fn the_broken_late_writer_leaves_a_gap_that_resume_sees() {
        let mut log = DurableLog::default();
        log.append(Record::Snapshot(snapshot_at(10)));
        log.append(decided(10, None));
        log.append(Record::OwnMessage(state(11)));
        log.append_stale_snapshot(snapshot_at(4));
        assert_eq!(log.snapshot_slot(), Some(Slot(4)));
        let config = consensus::Config::new(3, ReplicaId(0), 1);
        assert!(Replica::resume(config.clone(), log.to_resume()).is_recovering(), "the gap proves lost records");
        let blind = Replica::resume(config, log.to_resume_ignoring_gaps());
        assert!(!blind.is_recovering() && blind.next_slot() == Slot(4));
    }
}
