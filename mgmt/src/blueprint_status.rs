//! `GET /api/blueprints/{name}/status`: one word for how a blueprint is doing, and per slice the counts and
//! instances behind it.
//!
//! The state is derived from the stored records (the blueprint, its targets and slice records) and from which
//! nodes this node can reach: an instance on an unreachable node counts as neither ACTIVE nor starting (the
//! leader re-places it once the node's lease expires), and is shown with `"reachable": false`.
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
    let view = backend.cluster_view().ok();
    let nodes = view.as_ref().map_or(usize::MAX, |v| v.nodes.len()).max(1);
    let unreachable: Vec<String> =
        view.iter().flat_map(|v| v.nodes.iter()).filter(|n| !n.is_self && !n.connected).map(|n| n.id.clone()).collect();
    let slices = slice_entries(backend)?;
    let targets = backend.kv_list("targets/", true)?;
    let mut all_counts = Vec::new();
    let mut items = Vec::new();
    for artifact in &record.blueprint.order {
        let Some(spec) = record.blueprint.slice(artifact) else { continue };
        let target_key = AetherKey::Target { artifact: artifact.clone() }.to_string();
        let target = targets.iter().find(|t| t.key == target_key).and_then(|t| TargetRecord::decode(&t.value).ok());
        let mine: Vec<Placed> = slices
            .iter()
            .filter(|(_, a, _)| a == artifact)
            .map(|(node, _, r)| Placed { node, record: r, reachable: !unreachable.contains(node) })
            .collect();
        // The count that runs is the target's (a scale record's, when one applies), else the blueprint's.
        let desired = target.as_ref().map_or(spec.instances, |t| t.instances);
        let room = nodes.saturating_mul(usize::try_from(spec.max_per_node()).unwrap_or(usize::MAX));
        let wanted = usize::try_from(desired).unwrap_or(usize::MAX).min(room);
        let counts = count(&mine, wanted, target.as_ref().is_some_and(|t| t.failures.quarantined));
        all_counts.push(counts);
        items.push(slice_json(artifact, desired, counts, &mine, target.as_ref()));
    }
    Ok(Response::ok(json!({
        "name": record.blueprint.name.to_string(),
        "version": entry.version,
        "state": state(&all_counts),
        "slices": items,
    })))
}

/// One instance of a slice: its node, its record, and whether this node can reach that node.
struct Placed<'a> {
    node: &'a String,
    record: &'a SliceRecord,
    reachable: bool,
}

fn count(instances: &[Placed], wanted: usize, quarantined: bool) -> Counts {
    let mut counts = Counts { wanted, quarantined, ..Counts::default() };
    for Placed { record, reachable, .. } in instances {
        // Instances, not records: a record stands for its copies on its node.
        let size = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        let (asked, serving) = (size(record.copies.max(1)), size(record.serving_copies()));
        match record.state {
            SliceState::Failed => counts.failed += asked,
            _ if !reachable => {}
            SliceState::Active => {
                counts.active += serving;
                if record.desired == DesiredState::Active && record.copies_refused.is_none() {
                    counts.starting += asked.saturating_sub(serving);
                }
            }
            _ if record.desired == DesiredState::Active => counts.starting += asked,
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
    instances: &[Placed],
    target: Option<&TargetRecord>,
) -> Value {
    let reason = target
        .and_then(|t| t.failures.reason.clone())
        .or_else(|| instances.iter().find_map(|p| p.record.error.clone()));
    let instances: Vec<Value> = instances
        .iter()
        .map(|p| {
            json!({
                "node": p.node,
                "state": p.record.state.as_str(),
                "copies": p.record.copies.max(1),
                "running": p.record.running.unwrap_or(1),
                "since": p.record.since_ms,
                "reachable": p.reachable,
            })
        })
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
