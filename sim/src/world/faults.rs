//! Crashes (with and without the disk, one replica or the whole cluster), restarts and resumes.

use super::{lost_votes, replica_config, Event, World};
use crate::check::ViolationKind;
use crate::durable::DurableLog;
use crate::kv::KvMachine;
use crate::options::ShellBroken;
use consensus::{Config, Message, Replica, Resume, Slot};

impl World {
    /// A crash that loses the disk, while fewer than f replicas have lost their votes (down without a
    /// disk, or recovering): the bound under which `Replica::restarted` keeps the cluster live.
    pub(super) fn crash_one(&mut self) {
        if self.healed_at_us.is_some() {
            return;
        }
        let next_us = self.now_us + self.fault_rng.between(1, 2 * self.options.crash_every_ms) * 1000;
        self.schedule(next_us, Event::Crash);
        let f = self.votes_lost_max();
        let impaired = self.nodes.iter().filter(|n| lost_votes(n)).count();
        if impaired >= f {
            return;
        }
        let replica = self.fault_rng.below(self.nodes.len() as u64) as usize;
        // A replica that loses its whole disk while no replica has decided slot 0 comes back as
        // `Replica::fresh` and may vote in slot 0 again (the known limit in ARCHITECTURE.md): the schedule
        // keeps to that bound, as it keeps to f.
        let slot_zero_open = self.nodes.iter().all(|n| n.expected_slot.0 == 0);
        if self.nodes[replica].up && !slot_zero_open {
            self.crash(replica, false);
        }
    }

    /// A crash that keeps the disk, of any replica that is up, regardless of how many others are down.
    pub(super) fn durable_crash_any(&mut self) {
        if self.healed_at_us.is_some() {
            return;
        }
        let every_ms = self.options.durable_crash_every_ms;
        let next_us = self.now_us + self.fault_rng.between(1, 2 * every_ms) * 1000;
        self.schedule(next_us, Event::DurableCrash);
        let replica = self.fault_rng.below(self.nodes.len() as u64) as usize;
        self.durable_crash(replica);
    }

    /// Crashes `replica` keeping its disk: now, between two turns, or inside its next turn (torn).
    pub(super) fn durable_crash(&mut self, replica: usize) {
        if self.healed_at_us.is_some() || !self.nodes[replica].up || self.nodes[replica].torn_next_turn {
            return;
        }
        if self.fault_rng.chance(self.options.torn_permille) {
            self.nodes[replica].torn_next_turn = true;
        } else {
            self.crash(replica, true);
        }
    }

    /// Every replica crashes within `cluster_crash_spread_ms`, keeping its disk; with
    /// `cluster_crash_drops_in_flight` every message in flight is lost too. It may happen again.
    pub(super) fn cluster_crash(&mut self) {
        if self.healed_at_us.is_some() {
            return;
        }
        self.cluster_crashes += 1;
        // Half the time the cluster goes down again soon, often before every replica finished its slot.
        if self.fault_rng.chance(500) {
            let again_us = self.now_us + self.fault_rng.between(50, 500) * 1000;
            self.schedule(again_us, Event::ClusterCrash);
        }
        if self.options.cluster_crash_drops_in_flight {
            self.net_epoch += 1;
        }
        for replica in 0..self.nodes.len() {
            if self.options.shell_broken == ShellBroken::ClusterCrashLosesDisks {
                if self.nodes[replica].up {
                    self.crash(replica, false);
                }
                continue;
            }
            let offset_us = self.fault_rng.below(self.options.cluster_crash_spread_ms * 1000 + 1);
            self.schedule(self.now_us + offset_us, Event::DurableCrashOf { replica });
        }
    }

    pub(super) fn crash(&mut self, replica: usize, disk_kept: bool) {
        let node = &mut self.nodes[replica];
        if let Some((synced, _)) = node.synced.take() {
            node.disk = synced;
        }
        node.up = false;
        node.disk_kept = disk_kept;
        node.torn_next_turn = false;
        node.fail_write_next_turn = false;
        node.late_snapshots.clear();
        node.waiting.clear();
        node.timers = [None, None];
        self.crashes += 1;
        self.durable_crashes += u64::from(disk_kept);
        let downtime_us = self.fault_rng.between(10, 500) * 1000;
        self.schedule(self.now_us + downtime_us, Event::Restart { replica });
    }

    pub(super) fn restart(&mut self, replica: usize) {
        if self.nodes[replica].up || self.nodes[replica].kept_down {
            return;
        }
        self.incarnations += 1;
        self.restart_clock(replica);
        let config = replica_config(&self.options, replica as u8);
        if self.nodes[replica].disk_kept {
            self.resume(replica, config);
        } else {
            // A wiped data directory: an empty log, which the node starts as `Replica::fresh`.
            let incarnation = self.incarnations;
            let node = &mut self.nodes[replica];
            node.core = match self.options.shell_broken {
                ShellBroken::WipedDiskVotesFresh => Replica::new(config),
                // The demonstration that `restarted` alone cannot survive losing every disk (a cluster whose
                // every disk is gone is a new cluster to `fresh`, and forgets what it decided).
                ShellBroken::ClusterCrashLosesDisks => Replica::restarted(config, incarnation),
                _ => Replica::fresh(config, incarnation),
            };
            node.kv = KvMachine::default();
            node.disk = DurableLog::recovering();
            node.expected_slot = Slot(0);
        }
        self.members_rebuilt(replica);
        let node = &mut self.nodes[replica];
        node.up = true;
        node.incarnation = self.incarnations;
        let local_ms = self.local_ms(replica);
        let mut out = Vec::new();
        self.nodes[replica].core.start(local_ms, &mut out);
        self.apply_outputs(replica, out);
    }

    /// Rebuilds the replica and its state machine from its disk, as the node runtime does after a crash.
    /// A replica that crashed before it finished recovering resumes still recovering: its disk does not
    /// hold the votes of its earlier life.
    pub(super) fn resume(&mut self, replica: usize, config: Config) {
        self.resumes += 1;
        let disk = &self.nodes[replica].disk;
        let stale_wins = self.options.shell_broken == ShellBroken::StaleSnapshotWins;
        let resume = match stale_wins {
            true => disk.to_resume_ignoring_gaps(),
            false => disk.to_resume(),
        };
        let resume = Resume { incarnation: self.incarnations, ..resume };
        let open_slot = disk.next_slot();
        let own: Vec<&Message> = resume.own_messages.iter().filter(|m| m.round_slot() == Some(open_slot)).collect();
        self.resumes_mid_slot += u64::from(!own.is_empty());
        self.resumes_past_phase_one += u64::from(
            own.iter().any(|m| matches!(m, Message::State { phase, .. } | Message::Vote { phase, .. } if phase.0 >= 2)),
        );
        let as_voter = self.options.shell_broken == ShellBroken::ResumeRecoveringAsVoter;
        // An empty log with the recovering marker: never joined (or wiped); without it, the replica joined
        // a brand-new cluster and has not spoken since, so it resumes as the voter it was.
        let core = if disk.is_empty() && disk.is_recovering() && !as_voter {
            Replica::fresh(config, self.incarnations)
        } else if disk.is_recovering() && !as_voter {
            Replica::resume_recovering(config, resume, self.incarnations)
        } else {
            Replica::resume(config, resume)
        };
        let Some((kv, next_slot)) = disk.restore_kv() else {
            self.violate(ViolationKind::Codec, format!("replica {replica}: the snapshot on disk does not decode"));
            return;
        };
        if core.next_slot() != next_slot {
            let detail = format!(
                "replica {replica} resumed at slot {} but its state machine was rebuilt up to slot {}",
                core.next_slot().0,
                next_slot.0
            );
            self.violate(ViolationKind::Durability, detail);
        }
        let node = &mut self.nodes[replica];
        node.core = core;
        node.kv = kv;
        node.expected_slot = next_slot;
    }
}
