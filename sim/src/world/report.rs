//! Violations, stuck operations and the end-of-run report.

use super::{RunReport, World, SETTLE_MS};
use crate::check;
use crate::check::{Violation, ViolationKind};

impl World {
    pub(super) fn violate(&mut self, kind: ViolationKind, detail: String) {
        if self.violations.len() < 16 {
            self.violations.push(Violation { kind, detail });
        }
    }

    pub(super) fn report_stuck_operations(&mut self) {
        let stuck: Vec<String> = self
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.current.map(|(seq, _)| format!("client {i} seq {seq}")))
            .take(4)
            .collect();
        let slots: Vec<String> = self.nodes.iter().map(|n| n.expected_slot.0.to_string()).collect();
        let mut detail = format!(
            "{}ms after faults stopped, still pending: {} (replicas at slots {})",
            self.options.liveness_ms,
            stuck.join(", "),
            slots.join("/")
        );
        if std::env::var_os("AETHER_SIM_DEBUG").is_some() {
            for (i, node) in self.nodes.iter().enumerate() {
                detail.push_str(&format!("\n    replica {i}: {}", node.core.debug_line()));
            }
        }
        self.violate(ViolationKind::Liveness, detail);
    }

    pub(super) fn report_unconverged(&mut self) {
        let slots: Vec<String> = self.nodes.iter().map(|n| n.expected_slot.0.to_string()).collect();
        let detail = format!(
            "replicas did not catch up within {SETTLE_MS}ms of the last operation: at slots {} of {}",
            slots.join("/"),
            self.decided.len()
        );
        self.violate(ViolationKind::Liveness, detail);
    }

    pub(super) fn op_wait_after_heal_ms_max(&self) -> u64 {
        let Some(healed_at_us) = self.healed_at_us else {
            return 0;
        };
        let waits = self.history.iter().filter_map(|h| {
            let (answered_us, _) = h.response?;
            (answered_us > healed_at_us).then(|| answered_us - h.invoke_us.max(healed_at_us))
        });
        waits.max().unwrap_or(0) / 1000
    }

    pub(super) fn finish(mut self) -> RunReport {
        let mut found = Vec::new();
        check::validity(&self.decided, &self.submitted, &mut found);
        check::linearizable(&self.history, self.options.keys, &mut found);
        check::converged_state(self.nodes.iter().map(|n| (n.expected_slot, &n.kv)), &mut found);
        for violation in found {
            self.violate(violation.kind, violation.detail);
        }
        let stats: Vec<_> = self.nodes.iter().map(|n| n.core.stats().clone()).collect();
        let op_wait_ms_max = self.op_wait_after_heal_ms_max();
        let reconfigurations = [self.members.submitted, self.members.changes_decided()];
        RunReport {
            reconfigurations,
            violations: self.violations,
            slots_decided: self.decided.len() as u64,
            ops_completed: self.history.iter().filter(|h| h.response.is_some()).count() as u64,
            messages_sent: self.messages_sent,
            messages_refused_oversize: self.messages_refused_oversize,
            snapshot_chunks_received: stats.iter().map(|s| s.snapshot_chunks_received).sum(),
            crashes: self.crashes,
            durable_crashes: self.durable_crashes,
            torn_crashes: self.torn_crashes,
            cluster_crashes: self.cluster_crashes,
            resumes: self.resumes,
            resumes_mid_slot: self.resumes_mid_slot,
            resumes_past_phase_one: self.resumes_past_phase_one,
            null_slots: self.decided.values().filter(|(_, ids)| ids.is_none()).count() as u64,
            phases_max: stats.iter().map(|s| s.phases_max).max().unwrap_or(0),
            phases_total: stats.iter().map(|s| s.phases_total).sum(),
            phases_histogram: stats.iter().fold([0; 16], |mut sum, s| {
                sum.iter_mut().zip(s.phases_histogram).for_each(|(a, b)| *a += b);
                sum
            }),
            slots_by_vote: stats.iter().map(|s| s.slots_by_vote).sum(),
            null_run_longest: stats.iter().map(|s| s.null_run_longest).max().unwrap_or(0),
            op_wait_after_heal_ms_max: op_wait_ms_max,
            heal_to_done_ms: match (self.healed_at_us, self.all_done_at_us) {
                (Some(healed), Some(done)) => done.saturating_sub(healed) / 1000,
                _ => 0,
            },
            snapshots_installed: self.snapshots_installed,
            disk_errors: self.disk_errors,
            stale_snapshots: self.stale_snapshots,
            control_counts: self
                .control
                .as_ref()
                .map_or([0; 3], |c| [c.claims_applied, c.records_written, c.records_removed]),
            end_ms: self.now_us / 1000,
            options: self.options,
        }
    }
}
