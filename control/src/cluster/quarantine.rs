//! Start-failure containment: a slice whose load or start fails, hangs or takes its node down is retried with
//! growing pauses and then left alone, instead of being walked through the cluster node after node.
//!
//! A *start failure* of an artifact is a record of it, wanted ACTIVE, that either
//! - is FAILED and failed in a start state (LOAD up to ACTIVATING, as the node wrote in `failed_in`): a `load`
//!   or `start` that failed, panicked or timed out, or a node that came back and found it had been in the
//!   middle of a start ("crashed {node} during start"); or
//! - sits on a node that is no longer live, in a start state: the node died while starting it. The record is
//!   removed as any dead node's record is, but its instance is placed again only after the backoff; when this
//!   failure quarantines the artifact, the leader instead rewrites the record to FAILED with the reason
//!   "crashed {node} during start" (keeping `since_ms`, so it is not counted twice), so the reason stays
//!   readable.
//!
//! Every failure is counted once, in the artifact's target ([`StartFailures`] in `targets/{artifact}`, so every
//! node and any later leader sees the count), identified by its node and the record's `since_ms`. After the
//! k-th failure no new instance is placed before `backoff_base_ms * 2^(k-1)` (capped at `backoff_max_ms`) has
//! passed; at [`StartPolicy::failures_max`] failures the artifact is quarantined: nothing more is placed, and
//! its FAILED records are neither retired nor removed with a dead node, so the reason stays visible, until the
//! operator posts the blueprint again or resets it. Both give the blueprint record a new KV version, and a
//! count belongs to one blueprint version. A target that is not quarantined starts from a clean count once all
//! its instances are ACTIVE and none of its records is FAILED or a start failure.
//!
//! Invariants: a pure function of the view, the live nodes and the time, like the rest of the pass; a count
//! only grows by failures not counted before (for this blueprint version or an earlier one); an identity is
//! kept while its record exists, and at most [`COUNTED_MAX`] of them.

use super::{ClusterState, Wanted};
use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{Record, SliceRecord};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, Artifact, NodeId, Revision};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Failure identities kept per target: enough to recognise every FAILED record still around.
pub const COUNTED_MAX: usize = 32;

/// How start failures are paced and when an artifact is quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartPolicy {
    /// Failures after which the artifact is quarantined (at least 1).
    pub failures_max: u32,
    /// Pause before placing again after the first failure; it doubles with every further failure.
    pub backoff_base_ms: u64,
    /// Longest pause.
    pub backoff_max_ms: u64,
}

impl Default for StartPolicy {
    fn default() -> Self {
        StartPolicy { failures_max: 2, backoff_base_ms: 5_000, backoff_max_ms: 300_000 }
    }
}

impl StartPolicy {
    /// The pause after the `count`-th failure.
    pub fn backoff_ms(&self, count: u32) -> u64 {
        let doublings = count.saturating_sub(1).min(32);
        self.backoff_base_ms.saturating_mul(1u64 << doublings).min(self.backoff_max_ms)
    }
}

/// The start failures counted against one artifact, stored in its target record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartFailures {
    /// Failures counted so far.
    pub count: u32,
    /// The latest failure's reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// No new instance is placed before this time (leader's clock, milliseconds).
    #[serde(default)]
    pub retry_at_ms: u64,
    /// Nothing is placed until the blueprint is posted again or reset.
    #[serde(default)]
    pub quarantined: bool,
    /// The KV version of the blueprint the count belongs to.
    #[serde(default)]
    pub blueprint_version: u64,
    /// `(node, since_ms)` of the failures counted, newest last, at most [`COUNTED_MAX`].
    #[serde(default)]
    pub counted: Vec<(String, u64)>,
}

impl StartFailures {
    pub fn is_clear(&self) -> bool {
        *self == StartFailures::default()
    }

    /// The reason written for a node that died, or came back, in the middle of a start.
    pub fn crashed(node: &NodeId) -> String {
        format!("crashed {node} during start")
    }

    /// True when a new instance may be placed at `now_ms`.
    pub fn may_place(&self, now_ms: u64) -> bool {
        !self.quarantined && now_ms >= self.retry_at_ms
    }

    fn add(
        &mut self,
        artifact: &Artifact,
        node: &NodeId,
        since_ms: u64,
        reason: String,
        now_ms: u64,
        policy: &StartPolicy,
    ) {
        self.count = self.count.saturating_add(1);
        self.retry_at_ms = now_ms.saturating_add(policy.backoff_ms(self.count));
        self.quarantined |= self.count >= policy.failures_max.max(1);
        if self.counted.len() >= COUNTED_MAX {
            self.counted.remove(0);
        }
        self.counted.push((node.to_string(), since_ms));
        if self.quarantined {
            log::warn!("{artifact}: quarantined after {} start failure(s); last: {reason}", self.count);
        } else {
            let pause = policy.backoff_ms(self.count);
            log::warn!(
                "{artifact}: start failure {} of {}, next placement in {pause} ms: {reason}",
                self.count,
                policy.failures_max
            );
        }
        self.reason = Some(reason);
    }
}

/// The reason a record is a start failure, if it is one.
fn start_failure(node: &NodeId, record: &SliceRecord, live: bool) -> Option<String> {
    if record.desired != DesiredState::Active {
        return None;
    }
    match record.state {
        SliceState::Failed if record.failed_in.is_some_and(in_start) => {
            Some(record.error.clone().unwrap_or_else(|| format!("failed on {node} during start")))
        }
        state if !live && in_start(state) => Some(StartFailures::crashed(node)),
        _ => None,
    }
}

/// States from the leader's placement up to a started slice.
fn in_start(state: SliceState) -> bool {
    matches!(
        state,
        SliceState::Load | SliceState::Loading | SliceState::Loaded | SliceState::Activate | SliceState::Activating
    )
}

/// Counts new start failures into every wanted target, carrying the earlier count over from the stored target
/// while the blueprint keeps its version.
pub(super) fn count(
    wanted: &mut Wanted,
    state: &ClusterState,
    dead: &BTreeMap<NodeId, Option<Revision>>,
    now_ms: u64,
    policy: &StartPolicy,
) {
    // Only a node judged dead (its lease unrenewed for the grace period) counts as gone: a suspect node's
    // records stay and count, as in the rest of the pass.
    let alive = |node: &NodeId| !dead.contains_key(node);
    for (artifact, target) in wanted.targets.iter_mut() {
        let Some(blueprint) = state.blueprints.get(&target.blueprint) else { continue };
        let version = blueprint.version.0;
        let stored = state.targets.get(artifact).map(|t| t.value.failures.clone()).unwrap_or_default();
        let records = state.slices.get(artifact).into_iter().flatten();
        // Identities are carried across a reset too: a failure from before the blueprint was posted again is
        // not counted against the new version.
        let mut failures = if stored.blueprint_version == version {
            stored
        } else {
            StartFailures { counted: stored.counted, ..StartFailures::default() }
        };
        failures.blueprint_version = version;
        let mut active = 0usize;
        for (node, record) in records.clone() {
            active += usize::from(record.value.state == SliceState::Active && alive(node));
            let Some(reason) = start_failure(node, &record.value, alive(node)) else { continue };
            let identity = (node.to_string(), record.value.since_ms);
            if !failures.counted.contains(&identity) {
                failures.add(artifact, node, record.value.since_ms, reason, now_ms, policy);
            }
        }
        // Records of dead nodes this pass removes are gone: they neither hold the count nor keep an identity.
        let quarantined = failures.quarantined;
        let stays = |node: &NodeId, record: &SliceRecord| alive(node) || kept_on_dead_node(record, quarantined);
        // Any FAILED record that stays, retired or not, holds the count (the pass itself retires some), as does
        // a start failure that stays. Judging on what stays keeps the pass idempotent: the next pass, without
        // the removed records, reaches the same count.
        let any_failure = records.filter(|(node, r)| stays(node, &r.value)).any(|(node, r)| {
            r.value.state == SliceState::Failed || start_failure(node, &r.value, alive(node)).is_some()
        });
        let all_active = active >= usize::try_from(target.instances).unwrap_or(usize::MAX);
        if failures.count > 0 && !quarantined && all_active && !any_failure {
            log::info!("{artifact}: every instance is ACTIVE; its start failures are forgotten");
            failures =
                StartFailures { blueprint_version: version, counted: failures.counted, ..StartFailures::default() };
        }
        // An identity is kept while its record stays.
        let present: BTreeSet<(String, u64)> = state
            .slices
            .get(artifact)
            .into_iter()
            .flatten()
            .filter(|(node, r)| stays(node, &r.value))
            .map(|(node, r)| (node.to_string(), r.value.since_ms))
            .collect();
        failures.counted.retain(|id| present.contains(id));
        if failures.count == 0 && failures.counted.is_empty() {
            failures = StartFailures::default();
        }
        target.failures = failures;
    }
}

/// What becomes of a record on a node that is no longer live (after [`count`] has counted it): in a quarantined
/// artifact, a start in progress becomes FAILED ("crashed") and a FAILED record stays, so the reason can be read;
/// anything else is removed, and its instance is placed again once any backoff has passed.
pub(super) fn dead_node_write(
    artifact: &Artifact,
    node: &NodeId,
    record: &Versioned<SliceRecord>,
    quarantined: bool,
) -> Option<KvWrite> {
    let key = AetherKey::Slice { node: node.clone(), artifact: artifact.clone() };
    let value = &record.value;
    if !kept_on_dead_node(value, quarantined) {
        return Some(KvWrite::Remove { key, expected: record.version });
    }
    if in_start(value.state) {
        let failed = SliceRecord {
            state: SliceState::Failed,
            error: Some(StartFailures::crashed(node)),
            failed_in: Some(value.state),
            ..value.clone()
        };
        return Some(KvWrite::Set { key, expected: Some(record.version), value: failed.encode() });
    }
    None
}

/// True when a dead node's record stays (rewritten FAILED, or as it is): it shows why its artifact is
/// quarantined.
fn kept_on_dead_node(record: &SliceRecord, quarantined: bool) -> bool {
    quarantined
        && record.desired == DesiredState::Active
        && (in_start(record.state) || record.state == SliceState::Failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{reconcile_with, Liveness, FAILED_RETIRE_AFTER_MS};
    use crate::records::BlueprintRecord;
    use kvstore::{Command, KvState};

    fn put(kv: &mut KvState, key: &str, value: Vec<u8>) {
        kv.apply_command(Command::Put { key: key.parse().unwrap(), value }, &mut |_| {});
    }

    fn slice(state: SliceState, since_ms: u64, failed_in: Option<SliceState>) -> Vec<u8> {
        let error = failed_in.map(|_| "start failed".to_owned());
        SliceRecord { state, error, failed_in, ..SliceRecord::placed(0, Default::default(), since_ms) }.encode()
    }

    /// Runs passes until one writes nothing; returns the number of passes that wrote.
    fn settle(kv: &mut KvState, live: &[NodeId], now_ms: u64, policy: &StartPolicy) -> usize {
        for passes in 0..5 {
            let liveness = Liveness::all_live(live.iter().cloned());
            let writes = reconcile_with(&ClusterState::from_entries(kv.list("")), &liveness, now_ms, policy);
            if writes.is_empty() {
                return passes;
            }
            for write in writes {
                kv.apply_command(write.to_command(), &mut |_| {});
            }
        }
        panic!("no fixed point");
    }

    #[test]
    fn retiring_a_counted_failure_next_to_an_active_instance_is_one_pass() {
        let mut kv = KvState::new();
        let toml = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n".to_owned();
        let blueprint = crate::blueprint::parse(&toml, &|_| true).unwrap();
        put(&mut kv, "blueprints/s", BlueprintRecord { toml, blueprint }.encode());
        put(&mut kv, "slices/n1/g:a:1.0.0", slice(SliceState::Failed, 1_000, Some(SliceState::Activating)));
        put(&mut kv, "slices/n2/g:a:1.0.0", slice(SliceState::Active, 2_000, None));
        let live = [NodeId::parse("n1").unwrap(), NodeId::parse("n2").unwrap()];
        let policy = StartPolicy::default();
        // The failure is counted (one pass), then retired once it is old, with the count kept while the
        // FAILED record is there (one more pass), and nothing after.
        assert_eq!(settle(&mut kv, &live, 1_500, &policy), 1);
        assert_eq!(settle(&mut kv, &live, 1_000 + FAILED_RETIRE_AFTER_MS, &policy), 1);
        let target = kv.get(&"targets/g:a:1.0.0".parse().unwrap()).unwrap();
        let failures = crate::records::TargetRecord::decode(target.value()).unwrap().failures;
        assert_eq!(failures.count, 1, "{failures:?}");
        // The node unloads and removes the record: the count is forgotten, in one pass.
        kv.apply_command(Command::Remove { key: "slices/n1/g:a:1.0.0".parse().unwrap() }, &mut |_| {});
        assert_eq!(settle(&mut kv, &live, 20_000, &policy), 1);
        let target = kv.get(&"targets/g:a:1.0.0".parse().unwrap()).unwrap();
        assert!(crate::records::TargetRecord::decode(target.value()).unwrap().failures.is_clear());
    }

    #[test]
    fn a_dead_nodes_start_counted_and_removed_next_to_an_active_instance_is_one_pass() {
        let mut kv = KvState::new();
        let toml = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n".to_owned();
        let blueprint = crate::blueprint::parse(&toml, &|_| true).unwrap();
        put(&mut kv, "blueprints/s", BlueprintRecord { toml, blueprint }.encode());
        put(&mut kv, "slices/n1/g:a:1.0.0", slice(SliceState::Loading, 1_000, None));
        put(&mut kv, "slices/n2/g:a:1.0.0", slice(SliceState::Active, 2_000, None));
        let n1 = NodeId::parse("n1").unwrap();
        let n2 = NodeId::parse("n2").unwrap();
        let liveness = Liveness { live: [n2].into(), dead: [(n1, None)].into() };
        let policy = StartPolicy::default();
        // One pass counts the crash, removes the dead node's record and, with every instance ACTIVE and no
        // failure left, forgets the count at once: a second pass on its result writes nothing.
        let state = ClusterState::from_entries(kv.list(""));
        let writes = reconcile_with(&state, &liveness, 3_000, &policy);
        assert!(!writes.is_empty());
        for write in writes {
            kv.apply_command(write.to_command(), &mut |_| {});
        }
        let again = reconcile_with(&ClusterState::from_entries(kv.list("")), &liveness, 3_000, &policy);
        assert!(again.is_empty(), "{again:#?}");
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let policy = StartPolicy { failures_max: 9, backoff_base_ms: 1_000, backoff_max_ms: 5_000 };
        let pauses: Vec<u64> = (1..=5).map(|k| policy.backoff_ms(k)).collect();
        assert_eq!(pauses, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(policy.backoff_ms(u32::MAX), 5_000);
    }

    #[test]
    fn the_limit_quarantines_and_stops_placement() {
        let a = Artifact::parse("g:a:1.0.0").unwrap();
        let policy = StartPolicy::default();
        let node = NodeId::parse("node-1").unwrap();
        let mut failures = StartFailures::default();
        failures.add(&a, &node, 1, "x".into(), 100, &policy);
        assert!(!failures.may_place(100 + policy.backoff_ms(1) - 1));
        assert!(failures.may_place(100 + policy.backoff_ms(1)));
        failures.add(&a, &node, 2, "crashed node-1 during start".into(), 200, &policy);
        assert!(failures.quarantined);
        assert!(!failures.may_place(u64::MAX));
    }

    #[test]
    fn counted_identities_are_bounded() {
        let a = Artifact::parse("g:a:1.0.0").unwrap();
        let policy = StartPolicy { failures_max: u32::MAX, ..StartPolicy::default() };
        let node = NodeId::parse("node-1").unwrap();
        let mut failures = StartFailures::default();
        for since_ms in 0..(COUNTED_MAX as u64 + 10) {
            failures.add(&a, &node, since_ms, "x".into(), 0, &policy);
        }
        assert_eq!(failures.counted.len(), COUNTED_MAX);
        assert_eq!(failures.counted.last(), Some(&("node-1".to_owned(), COUNTED_MAX as u64 + 9)));
    }
}
