//! The leader's part of rollouts (`crate::rollout`): the new versions' targets, and each rollout's next
//! state.
//!
//! - Targets: while a rollout runs its new versions (`DEPLOYING`, `SHIFTING`, `COMPLETING`), each `to` gets a
//!   target copied from the blueprint's slice for `from` (config, dependencies, minimum), with the rollout's
//!   `instances` when it sets them. A `to` that a blueprint already deploys is left to that blueprint.
//! - The blueprint decides first: a rollout whose blueprint names every `to` is COMPLETED (its own
//!   completion, or an operator who posted the new versions); one whose blueprint no longer names every
//!   `from` is rolled back ("the blueprint changed").
//! - `DEPLOYING` becomes `SHIFTING` once every `to` is ready (`versions`); a `to` quarantined by its start
//!   failures rolls the rollout back.
//! - `SHIFTING` with automatic approval walks the stages as each hold ends (the last one held
//!   `keep_old_ms` longer), then completes.
//! - `COMPLETING` first notes the blueprint record's version, then rewrites the blueprint's text to name `to`
//!   where it named `from` (a write at that version, reparsed and checked before it is written). A blueprint
//!   that moved on meanwhile without naming `to` (an operator posted it again), was deleted, or whose text
//!   cannot be rewritten ends the rollout ROLLED_BACK with the reason, never rewritten over.
//! - `ROLLING_BACK` becomes `ROLLED_BACK` once no record of a `to` is left.
//! - At most [`HISTORY_MAX`] finished rollouts are kept; the oldest go first.
//!
//! Every write is conditional on the version of the record it was computed from.

use super::{Pass, Wanted};
use crate::blueprint;
use crate::records::{BlueprintRecord, Record, TargetRecord};
use crate::rollout::{Approval, Phase, Ratio, RolloutRecord};
use crate::write::{KvWrite, Versioned};
use crate::ClusterState;
use kvstore::{AetherKey, Name};

/// Most finished (COMPLETED, ROLLED_BACK) rollouts kept as history.
pub const HISTORY_MAX: usize = 32;

/// Adds the targets of the new versions of running rollouts to `wanted`.
pub(super) fn add_targets(wanted: &mut Wanted, state: &ClusterState) {
    for (id, rollout) in &state.rollouts {
        let record = &rollout.value;
        if !record.state.runs_new() {
            continue;
        }
        let Some(owner) = state.blueprints.get(&record.blueprint) else { continue };
        for moved in &record.artifacts {
            let (Some(from), Some(to)) = (moved.from_artifact(), moved.to_artifact()) else { continue };
            let Some(spec) = owner.value.blueprint.slice(&from) else { continue };
            if wanted.targets.get(&from).is_none_or(|t| t.blueprint != record.blueprint) {
                continue;
            }
            if let Some(other) = wanted.targets.get(&to) {
                log::debug!("rollout {id}: {to} is already deployed by blueprint {}", other.blueprint);
                continue;
            }
            let Some(old) = wanted.targets.get(&from) else { continue };
            let instances = if record.instances == 0 { old.instances } else { record.instances };
            let target = TargetRecord {
                blueprint: record.blueprint.clone(),
                instances,
                min_instances: spec.min_instances.min(instances),
                min_available: blueprint::default_min_available(instances),
                max_instances: old.max_instances.max(instances),
                autoscale: false,
                max_per_node: old.max_per_node,
                retiring: false,
                depends_on: spec.depends_on.clone(),
                config: spec.config.clone(),
                failures: Default::default(),
            };
            wanted.targets.insert(to.clone(), target);
            let at = wanted.order.iter().position(|a| *a == from).map_or(wanted.order.len(), |i| i + 1);
            wanted.order.insert(at, to);
        }
    }
}

/// The blueprint `record` with every `from` of `rollout` changed to its `to`, or why it cannot be.
pub fn rewrite_blueprint(record: &BlueprintRecord, rollout: &RolloutRecord) -> Result<BlueprintRecord, String> {
    let mut toml = record.toml.clone();
    for moved in &rollout.artifacts {
        let (Some(from), Some(to)) = (moved.from_artifact(), moved.to_artifact()) else {
            return Err(format!("{}: unreadable versions", moved.base));
        };
        for quote in ['"', '\''] {
            toml = toml.replace(&format!("{quote}{from}{quote}"), &format!("{quote}{to}{quote}"));
        }
    }
    let parsed = blueprint::parse(&toml, &|_| true).map_err(|e| format!("the rewritten blueprint: {e}"))?;
    for moved in &rollout.artifacts {
        let to = moved.to_artifact();
        if to.as_ref().is_none_or(|to| parsed.slice(to).is_none()) {
            return Err(format!("{}: the blueprint's text does not name the old version plainly", moved.base));
        }
    }
    Ok(BlueprintRecord { toml, blueprint: parsed })
}

impl<'a> Pass<'a> {
    /// Writes that move each rollout on, and that trim the history.
    pub(super) fn progress_rollouts(&mut self) {
        let state = self.state;
        for (id, rollout) in &state.rollouts {
            if !rollout.value.state.active() {
                continue;
            }
            let (next, extra) = self.next_state(id, &rollout.value);
            self.writes.extend(extra);
            if let Some(next) = next {
                log::info!("rollout {id}: {} -> {} ({}% new)", rollout.value.state, next.state, next.new_share());
                let key = AetherKey::Update { id: id.clone() };
                self.writes.push(KvWrite::Set { key, expected: Some(rollout.version), value: next.encode() });
            }
        }
        self.trim_history();
    }

    /// The rollout's next record (when it changes) and any other write its step needs.
    fn next_state(&self, id: &Name, r: &RolloutRecord) -> (Option<RolloutRecord>, Vec<KvWrite>) {
        let now = self.now_ms;
        let owner = self.state.blueprints.get(&r.blueprint);
        let names = |pick: fn(&crate::rollout::Move) -> Option<kvstore::Artifact>| {
            owner.is_some_and(|b| {
                r.artifacts.iter().all(|m| pick(m).is_some_and(|a| b.value.blueprint.slice(&a).is_some()))
            })
        };
        if names(crate::rollout::Move::to_artifact) {
            let done = RolloutRecord { state: Phase::Completed, ratio: Ratio::NEW, since_ms: now, ..r.clone() };
            return (Some(done), Vec::new());
        }
        let ended = |why: String| {
            log::warn!("rollout {id}: {why}");
            let reason = Some(crate::duty::cut(&why, crate::rollout::REASON_BYTES_MAX));
            RolloutRecord { state: Phase::RolledBack, ratio: Ratio::OLD, since_ms: now, reason, ..r.clone() }
        };
        if r.state == Phase::Completing {
            let Some(owner) = owner.filter(|_| names(crate::rollout::Move::from_artifact)) else {
                let why = format!("the blueprint {} changed while the rollout completed", r.blueprint);
                return (Some(ended(why)), Vec::new());
            };
            let found = owner.version.0;
            return match r.blueprint_version {
                None => (Some(RolloutRecord { blueprint_version: Some(found), ..r.clone() }), Vec::new()),
                Some(stamped) if stamped == found => match self.rewrite(owner, r) {
                    Ok(write) => (None, vec![write]),
                    Err(why) => (Some(ended(format!("cannot complete: {why}"))), Vec::new()),
                },
                Some(_) => {
                    let why = format!("the blueprint {} was posted again while the rollout completed", r.blueprint);
                    (Some(ended(why)), Vec::new())
                }
            };
        }
        if !names(crate::rollout::Move::from_artifact) && r.state != Phase::RollingBack {
            let why = format!("the blueprint {} no longer deploys the old versions", r.blueprint);
            return (r.rollback(&why, now).ok(), Vec::new());
        }
        if r.state == Phase::Shifting {
            if let Some(why) = self.unhealthy(r) {
                log::warn!("rollout {id}: {why}; rolling back");
                return (r.rollback(&why, now).ok(), Vec::new());
            }
        }
        match r.state {
            Phase::Deploying => (self.deployed(id, r), Vec::new()),
            Phase::Shifting if r.approval == Approval::Auto => (self.next_stage(r), Vec::new()),
            Phase::RollingBack => {
                let left = r.artifacts.iter().filter_map(|m| m.to_artifact()).any(|to| {
                    self.state.slices.get(&to).is_some_and(|by_node| !by_node.is_empty())
                        && !self.wanted.targets.contains_key(&to)
                });
                let done = RolloutRecord { state: Phase::RolledBack, since_ms: now, ..r.clone() };
                ((!left).then_some(done), Vec::new())
            }
            _ => (None, Vec::new()),
        }
    }

    /// Why a shifting rollout's new versions must go, from the health figures (see `Thresholds::judge`).
    fn unhealthy(&self, r: &RolloutRecord) -> Option<String> {
        if !r.thresholds.judged() {
            return None;
        }
        r.artifacts.iter().find_map(|moved| {
            let (from, to) = (moved.from_artifact()?, moved.to_artifact()?);
            let new = self.measured.health.get(&to)?;
            let old = self.measured.health.get(&from).copied().unwrap_or_default();
            r.thresholds.judge(&to.to_string(), new, &old)
        })
    }

    /// DEPLOYING: on to SHIFTING once every new version serves; rolled back when one cannot start.
    fn deployed(&self, id: &Name, r: &RolloutRecord) -> Option<RolloutRecord> {
        let mut all_ready = true;
        for to in r.artifacts.iter().filter_map(|m| m.to_artifact()) {
            let Some(target) = self.wanted.targets.get(&to) else {
                let why =
                    format!("{to} cannot be deployed: the blueprint {} does not own the old version", r.blueprint);
                return r.rollback(&why, self.now_ms).ok();
            };
            if target.failures.quarantined {
                let why = format!("{to} failed to start: {}", target.failures.reason.as_deref().unwrap_or("?"));
                log::warn!("rollout {id}: {why}; rolling back");
                return r.rollback(&why, self.now_ms).ok();
            }
            all_ready &= self.ready(&to, target);
        }
        if !all_ready {
            return None;
        }
        let ratio = match r.approval {
            Approval::Auto => Ratio::new_percent(r.stages.first().map_or(100, |s| s.percent)),
            Approval::Manual => r.ratio,
        };
        Some(RolloutRecord {
            state: Phase::Shifting,
            ratio,
            stage: 0,
            since_ms: self.now_ms,
            reason: None,
            ..r.clone()
        })
    }

    /// SHIFTING with automatic approval: the next stage once this one's hold ended, then COMPLETING.
    fn next_stage(&self, r: &RolloutRecord) -> Option<RolloutRecord> {
        let at = usize::try_from(r.stage).unwrap_or(usize::MAX);
        let last = at + 1 >= r.stages.len();
        let hold = r.stages.get(at).map_or(0, |s| s.hold_ms) + if last { r.keep_old_ms } else { 0 };
        if self.now_ms < r.since_ms.saturating_add(hold) {
            return None;
        }
        if last {
            return r.complete(self.now_ms).ok();
        }
        r.promote(self.now_ms).ok()
    }

    /// COMPLETING: the blueprint rewritten to the new versions, at the version it was read at.
    fn rewrite(&self, owner: &Versioned<BlueprintRecord>, r: &RolloutRecord) -> Result<KvWrite, String> {
        let rewritten = rewrite_blueprint(&owner.value, r)?;
        let key = AetherKey::Blueprint { name: r.blueprint.clone() };
        Ok(KvWrite::Set { key, expected: Some(owner.version), value: rewritten.encode() })
    }

    /// Removes the oldest finished rollouts past [`HISTORY_MAX`].
    fn trim_history(&mut self) {
        let mut finished: Vec<(&Name, &Versioned<RolloutRecord>)> =
            self.state.rollouts.iter().filter(|(_, r)| !r.value.state.active()).collect();
        if finished.len() <= HISTORY_MAX {
            return;
        }
        finished.sort_by_key(|(id, r)| (r.value.since_ms, *id));
        let surplus = finished.len() - HISTORY_MAX;
        for (id, record) in finished.into_iter().take(surplus) {
            self.writes.push(KvWrite::Remove { key: AetherKey::Update { id: id.clone() }, expected: record.version });
        }
    }
}
