//! The replicas' durable logs: periodic syncs, record writes, snapshot installs, late snapshot writes
//! and writes that fail.

use super::turn::Turn;
use super::{lost_votes, Event, World, SYNC_EVERY_MS};
use crate::check::ViolationKind;
use crate::durable::Record;
use crate::kv::KvMachine;
use crate::options::ShellBroken;
use consensus::{Slot, SnapshotRecord};

impl World {
    /// With `ShellBroken::SendBeforeSync` the disk is synced only every `SYNC_EVERY_MS`, and a crash loses
    /// what was written since, though the turns that wrote it have sent their messages.
    pub(super) fn sync_periodically(&mut self, replica: usize) {
        if self.options.shell_broken != ShellBroken::SendBeforeSync {
            return;
        }
        let now_us = self.now_us;
        let node = &mut self.nodes[replica];
        if node.synced.as_ref().is_none_or(|(_, at_us)| now_us >= at_us + SYNC_EVERY_MS * 1000) {
            node.synced = Some((node.disk.clone(), now_us));
        }
    }

    pub(super) fn write_records(&mut self, replica: usize, records: impl IntoIterator<Item = Record>) {
        for record in records {
            if let Record::Decided(decided) = &record {
                self.check_agreement(replica, decided);
            }
            self.nodes[replica].disk.append(record);
        }
    }

    pub(super) fn install(&mut self, replica: usize, next_slot: Slot, state: &[u8]) {
        self.snapshots_installed += 1;
        match KvMachine::decode(state) {
            Some(kv) => self.nodes[replica].kv = kv,
            None => self.violate(ViolationKind::Codec, "a snapshot failed to decode".to_string()),
        }
        self.nodes[replica].expected_slot = next_slot;
        self.nodes[replica].waiting.clear();
    }
}

impl World {
    /// A snapshot the replica just took: written with the turn's records, or handed to the slow writer.
    pub(super) fn take_snapshot(&mut self, replica: usize, snapshot: SnapshotRecord, turn: &mut Turn) {
        if self.options.faults.disk_errors && self.fault_rng.chance(self.options.late_snapshot_permille) {
            let due_us = self.now_us + self.fault_rng.between(1, 500) * 1000;
            self.nodes[replica].late_snapshots.push((due_us, snapshot));
        } else {
            turn.records.push(Record::Snapshot(snapshot));
        }
    }

    /// Late snapshots whose time came land on the disk now, after whatever was written meanwhile.
    pub(super) fn write_late_snapshots(&mut self, replica: usize) {
        let now_us = self.now_us;
        let node = &mut self.nodes[replica];
        if node.late_snapshots.is_empty() {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) =
            std::mem::take(&mut node.late_snapshots).into_iter().partition(|(at, _)| *at <= now_us);
        node.late_snapshots = later;
        for (_, snapshot) in due {
            let on_disk = node.disk.snapshot_slot();
            self.stale_snapshots += u64::from(on_disk.is_some_and(|slot| slot > snapshot.next_slot));
            match self.options.shell_broken {
                ShellBroken::StaleSnapshotWins => node.disk.append_stale_snapshot(snapshot),
                _ => node.disk.append(Record::Snapshot(snapshot)),
            }
        }
    }

    /// A storage write of some replica fails in its next turn, while fewer than f replicas have lost
    /// their votes (the failed one resumes recovering, like a replica without its disk).
    pub(super) fn disk_error_any(&mut self) {
        if self.healed_at_us.is_some() {
            return;
        }
        let every_ms = self.options.disk_error_every_ms;
        let next_us = self.now_us + self.fault_rng.between(1, 2 * every_ms) * 1000;
        self.schedule(next_us, Event::DiskError);
        let f = self.votes_lost_max();
        let impaired = self.nodes.iter().filter(|n| lost_votes(n)).count();
        let replica = self.fault_rng.below(self.nodes.len() as u64) as usize;
        let node = &mut self.nodes[replica];
        if impaired < f && node.up && !node.torn_next_turn {
            node.fail_write_next_turn = true;
        }
    }

    /// The turn whose write fails: a prefix of its records reaches the disk, then the shell stops as the
    /// node does (nothing of the turn leaves) with its failure mark set. The broken shell sends the turn
    /// anyway and comes back trusting its log.
    pub(super) fn fail_write(&mut self, replica: usize, turn: Turn) {
        self.disk_errors += 1;
        let broken = self.options.shell_broken == ShellBroken::SendAfterFailedWrite;
        // A write cut short keeps a prefix; the broken shell's failed write (and the ones after it, while
        // it keeps going without its log) kept nothing.
        let kept = if broken { 0 } else { self.fault_rng.below(turn.records.len() as u64 + 1) as usize };
        self.write_records(replica, turn.records.into_iter().take(kept));
        if broken {
            self.release(replica, turn.sends, turn.replies);
        } else {
            self.nodes[replica].disk.mark_failed();
        }
        self.crash(replica, true);
    }
}
