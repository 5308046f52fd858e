//! Make-before-break drain: moving the instances off nodes whose lifecycle is DRAINING, SHUTTING_DOWN or
//! DECOMMISSIONED (*leaving* nodes) without ever dropping a slice below its disruption budget.
//!
//! For each target, records on leaving nodes do not count towards `instances`, so `placement` adds their
//! replacements on ON_DUTY nodes (a surge above `instances` while the drain runs). A leaving record that is
//! ACTIVE is retired (desired UNLOADED) only when:
//! 1. at least `instances` records on staying nodes are ACTIVE, wanted ACTIVE, with their endpoints
//!    registered (the replacement serves and callers can find it), and
//! 2. after retiring it, the ACTIVE instances left (staying and leaving) are at least `min_available`.
//!
//! A leaving record that is not ACTIVE serves nothing and goes at once. When a record cannot go, the pass
//! notes why for its node ([`Pass::drain_waits`]); the leader writes that into the node's lifecycle record
//! (`waiting`), and writes DECOMMISSIONED for a DRAINING node that holds no record any more. Retiring an
//! ACTIVE record makes its node remove the endpoints and deactivate: calls already running finish (the
//! container waits for them), and a call that reaches the instance after it stopped taking calls never
//! started, so the caller's dispatcher retries it on another instance.

use super::Pass;
use crate::duty::{self, Duty, DutyRecord, TEXT_BYTES_MAX};
use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{SliceRecord, TargetRecord};
use crate::write::Versioned;
use kvstore::{Artifact, NodeId};

type Placed<'a> = (&'a NodeId, &'a Versioned<SliceRecord>);

/// Whether the budget allows `going` more ACTIVE instances to go: `active` now, `retiring` already going in
/// this pass, `min_available` the floor.
pub(super) fn budget_allows(active: u64, retiring: u64, going: u64, min_available: u64) -> bool {
    active.saturating_sub(retiring + going) >= min_available
}

fn active(record: &SliceRecord) -> bool {
    record.state == SliceState::Active && record.desired == DesiredState::Active
}

/// The instances a record serves with.
fn copies(record: &SliceRecord) -> u64 {
    u64::from(record.serving_copies())
}

impl<'a> Pass<'a> {
    /// True when `node`'s lifecycle says its instances must move away.
    pub(super) fn leaving(&self, node: &NodeId) -> bool {
        self.state.duty(node).leaving()
    }

    /// True when `record` (of `artifact` on `node`) has every endpoint registered, or the artifact has none
    /// anywhere (a slice without methods).
    pub(super) fn reachable(&self, artifact: &Artifact, node: &NodeId, record: &SliceRecord) -> bool {
        let mut of_artifact = self.state.endpoints.keys().filter(|id| id.artifact == *artifact).peekable();
        if of_artifact.peek().is_none() {
            return true;
        }
        of_artifact.any(|id| id.node == *node && id.instance == record.instance)
    }

    /// Retires the leaving records of one target that may go now, and notes why the others wait.
    pub(super) fn drain(&mut self, artifact: &'a Artifact, target: &TargetRecord, records: &[Placed<'a>]) {
        let (leaving, staying): (Vec<Placed<'a>>, Vec<Placed<'a>>) = records
            .iter()
            .copied()
            .filter(|(n, r)| r.value.desired == DesiredState::Active && !self.going.contains(&(artifact, *n)))
            .partition(|(n, _)| self.leaving(n));
        if leaving.is_empty() {
            return;
        }
        let instances = u64::from(target.instances);
        let min_available = u64::from(self.min_available(target));
        let ready_records = staying.iter().filter(|(n, r)| active(&r.value) && self.reachable(artifact, n, &r.value));
        let ready: u64 = ready_records.map(|(_, r)| copies(&r.value)).sum();
        let active_now: u64 = records.iter().filter(|(_, r)| active(&r.value)).map(|(_, r)| copies(&r.value)).sum();
        let mut retiring = 0;
        for (node, record) in leaving {
            if !active(&record.value) {
                log::info!(
                    "drain of {node}: {artifact} instance {} is not serving; retiring it",
                    record.value.instance
                );
                self.retire(artifact, node, record);
                continue;
            }
            if ready >= instances && budget_allows(active_now, retiring, copies(&record.value), min_available) {
                log::info!(
                    "drain of {node}: {artifact} has {ready} replacement(s) serving; retiring instance {}",
                    record.value.instance
                );
                retiring += copies(&record.value);
                self.retire(artifact, node, record);
            } else {
                let why = self.why_waiting(artifact, target, ready, min_available);
                self.waits.entry(node).or_insert(why);
            }
        }
    }

    fn min_available(&self, target: &TargetRecord) -> u32 {
        match target.min_available {
            0 => crate::blueprint::default_min_available(target.instances),
            n => n,
        }
    }

    fn why_waiting(&self, artifact: &Artifact, target: &TargetRecord, ready: u64, min_available: u64) -> String {
        let instances = u64::from(target.instances);
        let by_node = self.state.slices.get(artifact);
        let free = self.live.iter().filter(|n| by_node.is_none_or(|b| !b.contains_key(**n))).count();
        let staying = by_node.into_iter().flatten().filter(|(n, _)| !self.leaving(n) && self.counts(n));
        let placed: u64 = staying.map(|(_, r)| copies(&r.value)).sum();
        let per_node = target.max_per_node.max(1);
        let room = |n: &&&NodeId| {
            by_node
                .and_then(|b| b.get(**n))
                .is_some_and(|r| r.value.copies.max(1) < per_node && r.value.copies_refused.is_none())
        };
        let roomy = self.live.iter().filter(room).count();
        let why = if placed < instances && free == 0 && roomy == 0 {
            format!(
                "{artifact}: no ON_DUTY node can take a replacement ({instances} instance(s) wanted, {placed} on \
                 staying nodes, at most {per_node} per node; min_available {min_available})"
            )
        } else {
            format!("{artifact}: waiting for replacements to be ACTIVE with endpoints ({ready} of {instances} ready)")
        };
        duty::cut(&why, TEXT_BYTES_MAX)
    }

    /// Lifecycle writes of leaving nodes: DECOMMISSIONED for a DRAINING node that holds nothing, and the
    /// `waiting` reason of every other leaving node kept up to date.
    pub(super) fn drain_lifecycles(&mut self) {
        let state = self.state;
        for (node, record) in state.duties.iter().filter_map(|(n, r)| Some((n, r.as_ref().ok()?))) {
            if !record.value.state.leaving() || !self.counts(node) {
                continue;
            }
            let holds = state.slices.values().any(|by_node| by_node.contains_key(node));
            let next = if record.value.state == Duty::Draining && !holds {
                log::info!("node {node} is drained: DECOMMISSIONED");
                DutyRecord { state: Duty::Decommissioned, since_ms: self.now_ms, waiting: None, ..record.value.clone() }
            } else {
                let waiting = self.waits.get(node).cloned();
                if waiting == record.value.waiting {
                    continue;
                }
                DutyRecord { waiting, ..record.value.clone() }
            };
            self.writes.push(duty::set(node, Some(record.version), &next));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::budget_allows;

    #[test]
    fn the_budget_keeps_min_available_active() {
        assert!(budget_allows(3, 0, 1, 2), "3 active, one goes: 2 left");
        assert!(!budget_allows(3, 1, 1, 2), "a second would leave 1");
        assert!(!budget_allows(1, 0, 1, 1), "the only instance never goes");
        assert!(budget_allows(2, 0, 1, 1));
        assert!(!budget_allows(4, 0, 3, 2), "a record of three copies would leave 1");
    }
}
