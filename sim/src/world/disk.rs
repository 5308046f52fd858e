//! The replicas' durable logs: periodic syncs, record writes and snapshot installs.

use super::{World, SYNC_EVERY_MS};
use crate::check::ViolationKind;
use crate::durable::Record;
use crate::kv::KvMachine;
use crate::options::ShellBroken;
use consensus::Slot;

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
