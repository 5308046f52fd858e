//! `GET /api/blueprints/{name}/status`: one word for how a blueprint is doing, and per slice the counts and
//! instances behind it.
//!
//! The state is derived from the stored records alone (the blueprint, its targets and slice records):
//! - `failed`: a slice is quarantined, or has FAILED instances and none ACTIVE or starting;
//! - `running`: every slice has as many ACTIVE instances as it wants (or one on every configured node when
//!   it wants more than there are nodes);
//! - `deploying`: some slice has instances on their way to ACTIVE, or none placed yet;
//! - `degraded`: otherwise (fewer ACTIVE instances than wanted and nothing starting: a node is gone and its
//!   instances wait to be placed again).
//!
//! Invariant: read-only; an unknown or malformed name is a 404 or 400, never a 5xx.

use crate::api::Backend;
use crate::deploy::{parse_name, slice_entries};
use crate::error::ApiError;
use crate::server::Response;
use control::lifecycle::{DesiredState, SliceState};
use control::records::{BlueprintRecord, Record, SliceRecord, TargetRecord};
use kvstore::{AetherKey, Artifact};
use serde_json::{json, Value};

/// One slice's figures, as the state is judged from them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    wanted: usize,
    active: usize,
    failed: usize,
    starting: usize,
    quarantined: bool,
}

pub fn status(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    let key = AetherKey::Blueprint { name: parse_name(name)? };
    let entry = backend.kv_get(&key, false)?.ok_or_else(|| ApiError::not_found(format!("no blueprint '{name}'")))?;
    let record = BlueprintRecord::decode(&entry.value).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let nodes = backend.cluster_view().map(|v| v.nodes.len()).unwrap_or(usize::MAX).max(1);
    let slices = slice_entries(backend)?;
    let targets = backend.kv_list("targets/", true)?;
    let mut all_counts = Vec::new();
    let mut items = Vec::new();
    for artifact in &record.blueprint.order {
        let Some(spec) = record.blueprint.slice(artifact) else { continue };
        let target_key = AetherKey::Target { artifact: artifact.clone() }.to_string();
        let target = targets.iter().find(|t| t.key == target_key).and_then(|t| TargetRecord::decode(&t.value).ok());
        let mine: Vec<(&String, &SliceRecord)> =
            slices.iter().filter(|(_, a, _)| a == artifact).map(|(node, _, r)| (node, r)).collect();
        let wanted = usize::try_from(spec.instances).unwrap_or(usize::MAX).min(nodes);
        let counts = count(&mine, wanted, target.as_ref().is_some_and(|t| t.failures.quarantined));
        all_counts.push(counts);
        items.push(slice_json(artifact, spec.instances, counts, &mine, target.as_ref()));
    }
    Ok(Response::ok(json!({
        "name": record.blueprint.name.to_string(),
        "version": entry.version,
        "state": state(&all_counts),
        "slices": items,
    })))
}

fn count(instances: &[(&String, &SliceRecord)], wanted: usize, quarantined: bool) -> Counts {
    let mut counts = Counts { wanted, quarantined, ..Counts::default() };
    for (_, record) in instances {
        match record.state {
            SliceState::Active => counts.active += 1,
            SliceState::Failed => counts.failed += 1,
            _ if record.desired == DesiredState::Active => counts.starting += 1,
            _ => {}
        }
    }
    counts
}

fn state(slices: &[Counts]) -> &'static str {
    let failed = |c: &Counts| c.quarantined || (c.failed > 0 && c.active == 0 && c.starting == 0);
    if slices.iter().any(failed) {
        "failed"
    } else if slices.iter().all(|c| c.active >= c.wanted) {
        "running"
    } else if slices.iter().any(|c| c.starting > 0 || c.active + c.failed == 0) {
        "deploying"
    } else {
        "degraded"
    }
}

fn slice_json(
    artifact: &Artifact,
    desired: u32,
    counts: Counts,
    instances: &[(&String, &SliceRecord)],
    target: Option<&TargetRecord>,
) -> Value {
    let reason =
        target.and_then(|t| t.failures.reason.clone()).or_else(|| instances.iter().find_map(|(_, r)| r.error.clone()));
    let instances: Vec<Value> = instances
        .iter()
        .map(|(node, r)| json!({ "node": node, "state": r.state.as_str(), "since": r.since_ms }))
        .collect();
    json!({
        "artifact": artifact.to_string(),
        "desired": desired,
        "active": counts.active,
        "failed": counts.failed,
        "starting": counts.starting,
        "quarantined": counts.quarantined,
        "reason": reason,
        "instances": instances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(wanted: usize, active: usize, failed: usize, starting: usize) -> Counts {
        Counts { wanted, active, failed, starting, quarantined: false }
    }

    #[test]
    fn the_state_word_follows_the_counts() {
        assert_eq!(state(&[c(2, 2, 0, 0), c(1, 1, 0, 0)]), "running");
        assert_eq!(state(&[c(2, 2, 0, 0), c(1, 0, 0, 0)]), "deploying", "nothing placed yet");
        assert_eq!(state(&[c(2, 1, 0, 1)]), "deploying");
        assert_eq!(state(&[c(2, 1, 0, 0)]), "degraded");
        assert_eq!(state(&[c(2, 1, 1, 0)]), "degraded", "one instance failed, one serves");
        assert_eq!(state(&[c(1, 0, 1, 0)]), "failed");
        assert_eq!(state(&[c(2, 2, 0, 0), Counts { quarantined: true, ..c(1, 0, 0, 0) }]), "failed");
        assert_eq!(state(&[]), "running", "an empty blueprint wants nothing");
    }
}
