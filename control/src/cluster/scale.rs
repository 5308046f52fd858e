//! The leader's scaling: the instance count a blueprint's slice runs at (`crate::scaling`), and the
//! controller's pass over autoscaled slices.
//!
//! - [`instances`]: a slice's count is its scale record's (clamped to `min_instances..=max_instances`) while
//!   the record applies, else the blueprint's `instances`.
//! - [`Pass::autoscale`]: for each wanted target whose blueprint turns `autoscale` on, owned by the blueprint
//!   (not a rollout's new version), with load measured for it, [`crate::scaling::decide`] on the config in
//!   `thresholds/scaling` (defaults when absent). A decision is one compare-and-set of the scale record; the
//!   target follows on the next pass, and placement or retirement as for any count change. The controller
//!   never goes above what the nodes can take (live ON_DUTY nodes times `max_per_node`) and leaves a slice
//!   alone while a rollout moves it.

use super::Pass;
use crate::blueprint::SliceSpec;
use crate::lifecycle::{DesiredState, SliceState};
use crate::records::Record;
use crate::scaling::{decide, ScaleRecord, Scaled, ScaledBy};
use crate::write::KvWrite;
use crate::ClusterState;
use kvstore::{AetherKey, Name};

/// The count the blueprint `blueprint`'s `spec` runs at.
pub(super) fn instances(state: &ClusterState, blueprint: &Name, spec: &SliceSpec) -> u32 {
    let scale = state.scales.get(spec.artifact.base());
    let scaled =
        scale.and_then(|s| s.value.applies(blueprint, spec.instances, spec.min_instances, spec.max_instances()));
    scaled.unwrap_or(spec.instances)
}

impl Pass<'_> {
    /// True while a running rollout moves `artifact`'s base: its count is the rollout's business then (the
    /// new version copies the old one's count), so the controller leaves it.
    fn rolling_out(&self, artifact: &kvstore::Artifact) -> bool {
        let base = artifact.base();
        self.state.rollouts.values().any(|r| r.value.state.active() && r.value.moving(base).is_some())
    }

    /// The controller's decisions for autoscaled slices.
    pub(super) fn autoscale(&mut self) {
        let config = self.state.scaling_config.unwrap_or_default();
        for (artifact, target) in &self.wanted.targets {
            if !target.autoscale || self.rolling_out(artifact) {
                continue;
            }
            let Some(load) = self.measured.loads.get(artifact) else { continue };
            let base = artifact.base();
            let Some(spec) =
                self.state.blueprints.get(&target.blueprint).and_then(|b| b.value.blueprint.slice(artifact))
            else {
                continue;
            };
            let record = self.state.scales.get(base);
            let unreadable = self.unreadable_version(&AetherKey::Scale { base: base.clone() });
            let applies = record.is_some_and(|r| {
                r.value.applies(&target.blueprint, spec.instances, spec.min_instances, spec.max_instances()).is_some()
            });
            let warm = self.state.slices.get(artifact).into_iter().flatten().filter(|(node, r)| {
                r.value.state == SliceState::Active
                    && r.value.desired == DesiredState::Active
                    && self.counts(node)
                    && self.now_ms >= r.value.since_ms.saturating_add(config.warmup_ms)
            });
            let scaled = Scaled {
                instances: target.instances,
                min: target.min_instances,
                max: target.max_instances.max(target.instances),
                warm: u32::try_from(warm.map(|(_, r)| u64::from(r.value.serving_copies())).sum::<u64>())
                    .unwrap_or(u32::MAX),
                placeable: u32::try_from(self.live.len())
                    .unwrap_or(u32::MAX)
                    .saturating_mul(target.max_per_node.max(1)),
                last_change_ms: record.filter(|_| applies).map(|r| r.value.since_ms),
            };
            let Some((to, reason)) = decide(&scaled, load, &config, self.now_ms) else { continue };
            log::info!("scaling {artifact}: {reason}");
            let value = ScaleRecord {
                instances: to,
                by: ScaledBy::Controller,
                reason: crate::duty::cut(&reason, crate::scaling::REASON_BYTES_MAX),
                since_ms: self.now_ms,
                blueprint: target.blueprint.clone(),
                blueprint_instances: spec.instances,
            };
            let key = AetherKey::Scale { base: base.clone() };
            let expected = record.map(|r| r.version).or(unreadable);
            self.writes.push(KvWrite::Set { key, expected, value: value.encode() });
        }
    }
}
