//! The invariant checkers run on every seed: agreement (checked as decisions happen, in `world`),
//! validity, linearizability of the key-value history, and convergence of the replicas' states.
//!
//! Invariants: a checker never passes what it could not check; a linearizability search that gives up
//! is a violation.

use std::collections::{BTreeMap, BTreeSet};

use consensus::{CommandId, Slot};

use crate::kv::{KvMachine, KvOp, KvResult};
use crate::linearizability::{check_register, RegisterOp, TimedOp, Verdict};

/// Search states the linearizability checker may explore per key before giving up.
const LINEARIZABILITY_STEPS_MAX: u64 = 2_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViolationKind {
    Agreement,
    Validity,
    Liveness,
    Linearizability,
    Convergence,
    /// A replica sent two different messages for one round (a restart that forgot its votes).
    Equivocation,
    Codec,
    /// A replica rebuilt from its disk disagrees with the state machine rebuilt from the same disk.
    Durability,
    /// The control plane's leader removed a slice record of a node that was up and renewing its lease.
    HealthyInstanceMoved,
    /// Two replicas decided one slot under different memberships, or a non-member spoke in a slot.
    Membership,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub kind: ViolationKind,
    pub detail: String,
}

/// One client operation: what it did, when it was invoked, and when and what it answered.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    pub client: u64,
    pub op: KvOp,
    pub invoke_us: u64,
    pub response: Option<(u64, KvResult)>,
}

/// Every decided command was submitted (with that payload), none applied twice, no slot missing.
pub fn validity(
    decided: &BTreeMap<Slot, (usize, Option<Vec<CommandId>>)>,
    submitted: &BTreeMap<CommandId, Vec<u8>>,
    found: &mut Vec<Violation>,
) {
    let mut applied = BTreeSet::new();
    for (expected, (slot, (_, ids))) in decided.iter().enumerate() {
        if slot.0 != expected as u64 {
            found.push(violation(ViolationKind::Validity, format!("slot {expected} was never decided")));
            return;
        }
        for id in ids.iter().flatten() {
            if !submitted.contains_key(id) {
                let detail = format!("slot {} applied {id:?}, which no client submitted", slot.0);
                found.push(violation(ViolationKind::Validity, detail));
            }
            if !applied.insert(*id) {
                let detail = format!("slot {} applied {id:?} a second time", slot.0);
                found.push(violation(ViolationKind::Validity, detail));
            }
        }
    }
}

/// The history, split per key, is linearizable as a set of registers.
pub fn linearizable(history: &[HistoryEntry], keys: u64, found: &mut Vec<Violation>) {
    for key in 0..keys {
        let ops: Vec<TimedOp> = history.iter().filter(|h| h.op.key() == key).map(timed).collect();
        let detail = match check_register(&ops, LINEARIZABILITY_STEPS_MAX) {
            Verdict::Linearizable => continue,
            Verdict::NotLinearizable => format!("key {key}: no linearization of its {} operations", ops.len()),
            Verdict::GaveUp => format!("key {key}: search gave up on {} operations", ops.len()),
        };
        found.push(violation(ViolationKind::Linearizability, detail));
    }
}

fn timed(entry: &HistoryEntry) -> TimedOp {
    let op = match (entry.op, entry.response) {
        (KvOp::Put { value, .. }, _) => RegisterOp::Write(value),
        (KvOp::Get { .. }, Some((_, result))) => RegisterOp::Read(result),
        (KvOp::Get { .. }, None) => RegisterOp::Read(None),
    };
    TimedOp { op, invoke_us: entry.invoke_us, response_us: entry.response.map(|(at, _)| at) }
}

/// Replicas that applied the same slots hold the same state.
pub fn converged_state<'a>(nodes: impl Iterator<Item = (Slot, &'a KvMachine)>, found: &mut Vec<Violation>) {
    let mut by_slot: BTreeMap<Slot, &KvMachine> = BTreeMap::new();
    for (slot, machine) in nodes {
        match by_slot.get(&slot) {
            Some(first) if *first != machine => {
                let detail = format!("two replicas at slot {} hold different states", slot.0);
                found.push(violation(ViolationKind::Convergence, detail));
            }
            _ => {
                by_slot.insert(slot, machine);
            }
        }
    }
}

fn violation(kind: ViolationKind, detail: String) -> Violation {
    Violation { kind, detail }
}
