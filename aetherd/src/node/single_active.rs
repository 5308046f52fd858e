//! The loop's side of single-active slices and per-slice selection: every tick, it runs one
//! [`control::single_active::Lease`] per single-active slice base this node has an instance of (or holds
//! the lease of), submits the compare-and-set it asks for, and hands the app port's registry what calls
//! need: each artifact's selection strategy (from the target records), each single-active base's lease
//! (holder, epoch, and until when this node serves it), and the version table (`super::versions`).
//!
//! A slice is single-active when its descriptor says so or its target's config (`aether.single_active`)
//! does; a base is known single-active cluster-wide once its lease record exists (so a node without an
//! instance routes to the holder too). The monotonic clock the leases run on is this module's own
//! (milliseconds since the loop started); serving deadlines are handed to the registry as `Instant`s.
//!
//! Invariants: a lease is only written while the node has quorum and is caught up (the caller says so);
//! at most [`BASES_MAX`] bases are tracked; a base whose instance is gone is released (by its `Lease`)
//! and dropped once it holds nothing.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use control::blueprint::behaviour::SliceBehaviour;
use control::records::{Record, TargetRecord};
use control::single_active::{Lease, LeaseInput, LeaseRecord, TIMING};
use control::{ContainerState, KvWrite, SliceInfo, Versioned};
use invoke::{LeaseView, Registry};
use kvstore::{AetherKey, Artifact, ArtifactBase, Store};
use parking_lot::RwLock;
use vocab::Selection;

/// Most single-active bases this node runs leases for.
pub const BASES_MAX: usize = 1024;

pub(crate) struct SingleActive {
    me: String,
    started: Instant,
    leases: BTreeMap<ArtifactBase, Lease>,
}

impl SingleActive {
    pub fn new(me: &str) -> SingleActive {
        SingleActive { me: me.to_owned(), started: Instant::now(), leases: BTreeMap::new() }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One pass: the writes to submit, and the registry updated.
    pub fn tick(
        &mut self,
        store: &Store,
        container: &BTreeMap<Artifact, ContainerState>,
        infos: &BTreeMap<Artifact, SliceInfo>,
        can_write: bool,
        registry: &RwLock<Registry>,
    ) -> Vec<KvWrite> {
        let targets = targets(store);
        let mut single_targets: Vec<ArtifactBase> = Vec::new();
        let mut selections: HashMap<String, Selection> = HashMap::new();
        for (artifact, behaviour) in &targets {
            if behaviour.single_active {
                single_targets.push(artifact.base().clone());
            }
            if behaviour.selection != Selection::LocalFirst {
                selections.insert(artifact.to_string(), behaviour.selection);
            }
        }
        let instances = local_instances(container, infos, &targets);
        let records = lease_records(store);
        let now_ms = self.now_ms();
        let mut writes = Vec::new();
        let mut bases: Vec<&ArtifactBase> = instances.keys().collect();
        let held_here = records.iter().filter(|(_, r)| r.value.holder.as_deref() == Some(self.me.as_str()));
        bases.extend(held_here.map(|(base, _)| base));
        for base in bases {
            if !self.leases.contains_key(base) && self.leases.len() < BASES_MAX {
                self.leases.insert(base.clone(), Lease::new(&self.me, base.clone(), TIMING));
            }
        }
        for (base, lease) in &mut self.leases {
            let input = LeaseInput {
                now_ms,
                record: records.get(base),
                instance: instances.get(base).map(String::as_str),
                can_write,
            };
            writes.extend(lease.step(input));
        }
        let me = self.me.as_str();
        self.leases.retain(|base, lease| {
            instances.contains_key(base)
                || lease.held().is_some()
                || records.get(base).is_some_and(|r| r.value.holder.as_deref() == Some(me))
        });
        let views = self.views(&records, &instances, &single_targets);
        let versions = super::versions::table(store, crate::managers::wall_ms());
        let mut registry = registry.write();
        registry.set_leases(views);
        registry.set_selections(selections);
        registry.set_versions(versions);
        writes
    }

    /// The registry's lease views: every base with a record, a local single-active instance, or a
    /// single-active target.
    fn views(
        &self,
        records: &BTreeMap<ArtifactBase, Versioned<LeaseRecord>>,
        instances: &BTreeMap<ArtifactBase, String>,
        single_targets: &[ArtifactBase],
    ) -> Vec<(String, LeaseView)> {
        let mut bases: Vec<&ArtifactBase> = records.keys().chain(instances.keys()).chain(single_targets).collect();
        bases.sort();
        bases.dedup();
        bases
            .into_iter()
            .map(|base| {
                let record = records.get(base).map(|r| &r.value);
                let serving_until = self
                    .leases
                    .get(base)
                    .and_then(Lease::held)
                    .filter(|(epoch, _)| record.is_some_and(|r| r.epoch == *epoch))
                    .map(|(_, until_ms)| self.started + Duration::from_millis(until_ms));
                let view = LeaseView {
                    holder: record.and_then(|r| r.holder.clone()),
                    epoch: record.map_or(0, |r| r.epoch),
                    artifact: record.and_then(|r| r.artifact.clone()),
                    serving_until,
                };
                (base.to_string(), view)
            })
            .collect()
    }
}

/// Every target record's artifact and behaviour.
fn targets(store: &Store) -> Vec<(Artifact, SliceBehaviour)> {
    store
        .list("targets/")
        .filter_map(|entry| {
            let AetherKey::Target { artifact } = entry.key() else { return None };
            let record = TargetRecord::decode(entry.value()).ok()?;
            Some((artifact.clone(), SliceBehaviour::from_config(&record.config)))
        })
        .collect()
}

/// This node's ACTIVE instances of single-active slices, by base.
fn local_instances(
    container: &BTreeMap<Artifact, ContainerState>,
    infos: &BTreeMap<Artifact, SliceInfo>,
    targets: &[(Artifact, SliceBehaviour)],
) -> BTreeMap<ArtifactBase, String> {
    container
        .iter()
        .filter(|(_, state)| **state == ContainerState::Active)
        .filter(|(artifact, _)| {
            infos.get(*artifact).is_some_and(|info| info.single_active)
                || targets.iter().any(|(a, b)| a == *artifact && b.single_active)
        })
        .map(|(artifact, _)| (artifact.base().clone(), artifact.to_string()))
        .collect()
}

/// The lease records in the store, by base (undecodable ones are skipped).
fn lease_records(store: &Store) -> BTreeMap<ArtifactBase, Versioned<LeaseRecord>> {
    store
        .list("leases/")
        .take(BASES_MAX)
        .filter_map(|entry| {
            let AetherKey::SliceLease { base } = entry.key() else { return None };
            let value = LeaseRecord::read(entry.value()).ok()?;
            Some((base.clone(), Versioned { value, version: entry.version() }))
        })
        .collect()
}

impl super::Node {
    /// Runs the leases of this node's single-active slices and refreshes the registry's leases and
    /// selections; called on every tick.
    pub(super) fn tick_single_active(&mut self, ctx: &mut net::Ctx<'_>) {
        let Some(r) = self.replication.as_ref() else { return };
        let can_write = self.membership.has_quorum() && r.caught_up();
        let Some(d) = self.deployment.as_mut() else { return };
        let (states, infos) = (d.deployer.states(), d.deployer.infos());
        let writes = d.single_active.tick(r.store(), states, infos, can_write, &self.data.registry);
        for write in writes {
            let command = write.to_command();
            self.drive(ctx, |r| r.submit_internal(&command));
        }
    }
}
