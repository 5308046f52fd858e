//! Make-before-break version changes: an old version of a slice keeps serving until the version that
//! replaces it serves.
//!
//! A version of an artifact base that no target wants any more (the blueprint was posted with another
//! version, a rollout completed or rolled back) is *old*. When another version of the same base is wanted by
//! the same blueprint (its *successor*), the old version's records are retired only once the successor is
//! *ready*, and its target record stays until then (its slice state, selection and config are read from it): at least
//! `min(instances, ON_DUTY live nodes times max_per_node)` of its instances (a record counts its `copies`) on
//! staying nodes are ACTIVE, wanted ACTIVE and have their endpoints registered. Until then they stay and serve; callers reach them because the dispatcher
//! resolves a call by base (`invoke::versions`). A successor that cannot start (quarantined) therefore leaves
//! the old version serving rather than nothing, and says so in the log.
//!
//! Routes name one version. A route whose version is old is rewritten to the successor that has endpoints
//! for the route's slice method (so a client's route never disappears during the change), kept while its
//! version still has records, and removed once nothing of its version is left and no successor serves the
//! method.

use super::Pass;
use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{Record, RouteRecord, TargetRecord};
use crate::write::KvWrite;
use kvstore::{AetherKey, Artifact, Name};

impl<'a> Pass<'a> {
    /// The wanted versions of `artifact`'s base other than `artifact` itself, deployed by the blueprint that
    /// deployed `artifact` (when its target still says which): another blueprint's version of the same base
    /// is not a successor (its data scope differs), so a deleted blueprint's slices still go at once.
    fn successors(&self, artifact: &Artifact) -> impl Iterator<Item = (&'a Artifact, &'a TargetRecord)> + '_ {
        let base = artifact.base().clone();
        let owner = self.state.targets.get(artifact).map(|t| t.value.blueprint.clone());
        let artifact = artifact.clone();
        self.wanted.targets.iter().filter(move |(a, t)| {
            a.base() == &base && **a != artifact && owner.as_ref().is_none_or(|o| *o == t.blueprint)
        })
    }

    /// True when `artifact` serves as its target asks: enough records ACTIVE with endpoints on staying nodes.
    pub(super) fn ready(&self, artifact: &Artifact, target: &TargetRecord) -> bool {
        let room =
            u64::try_from(self.live.len()).unwrap_or(u64::MAX).saturating_mul(u64::from(target.max_per_node.max(1)));
        let wanted = u64::from(target.instances).min(room).max(1);
        let records = self.state.slices.get(artifact).into_iter().flatten();
        let serving: u64 = records
            .filter(|(node, record)| {
                let record = &record.value;
                record.state == SliceState::Active
                    && record.desired == DesiredState::Active
                    && self.counts(node)
                    && !self.leaving(node)
                    && !self.going.contains(&(artifact, *node))
                    && self.reachable(artifact, node, record)
            })
            .map(|(_, record)| u64::from(record.value.serving_copies()))
            .sum();
        serving >= wanted
    }

    /// Why the records of the unwanted `artifact` must stay for now: a successor is wanted and none serves
    /// yet. `None` when they may go.
    pub(super) fn held_for(&self, artifact: &Artifact) -> Option<&'a Artifact> {
        let mut waiting = None;
        for (successor, target) in self.successors(artifact) {
            if self.ready(successor, target) {
                return None;
            }
            waiting.get_or_insert(successor);
        }
        if let Some(successor) = waiting {
            log::debug!("{artifact} keeps serving until {successor} serves");
        }
        waiting
    }

    /// Route writes: rewrites to a serving successor, removals of routes nothing serves any more.
    pub(super) fn clean_routes(&mut self) {
        for ((method, path), route) in &self.state.routes {
            let artifact = &route.value.artifact;
            if self.wanted.targets.contains_key(artifact) {
                continue;
            }
            let key = AetherKey::Route { method: *method, path: path.clone() };
            if let Some(successor) = self.serving_successor(artifact, &route.value.method) {
                log::info!("route {method} /{path}: {artifact} is replaced by {successor}");
                let value = RouteRecord { artifact: successor.clone(), method: route.value.method.clone() }.encode();
                self.writes.push(KvWrite::Set { key, expected: Some(route.version), value });
                continue;
            }
            let still_runs = self.state.slices.get(artifact).is_some_and(|by_node| !by_node.is_empty());
            if still_runs && self.successors(artifact).next().is_some() {
                continue;
            }
            self.writes.push(KvWrite::Remove { key, expected: route.version });
        }
    }

    /// A wanted version of `artifact`'s base, ready, with endpoints for `method`.
    fn serving_successor(&self, artifact: &Artifact, method: &Name) -> Option<&'a Artifact> {
        let state = self.state;
        let mut successors = self.successors(artifact).filter(|(a, t)| self.ready(a, t));
        successors
            .find(|(successor, _)| state.endpoints.keys().any(|id| id.artifact == **successor && id.method == *method))
            .map(|(successor, _)| successor)
    }
}
