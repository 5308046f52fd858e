//! The loop's side of version routing: every tick it hands the app port's registry the versions the
//! target records want (not those marked retiring) and the rollouts that split traffic (`updates/` records), as an
//! [`invoke::VersionTable`] (what calls do with it is in `invoke::versions`).
//!
//! A rollout is shown while it runs, and for [`FINISHED_SHOWN_MS`] after it completed or rolled back (by
//! the record's `since_ms` against this node's wall clock): its retirement of the losing versions may reach
//! this node's registry a moment after the record, and meanwhile calls should keep to the winning side.

use control::records::{Record, TargetRecord};
use control::rollout::{Phase, RolloutRecord};
use invoke::{RolloutView, VersionTable};
use kvstore::{AetherKey, Store};

/// How long a finished rollout still steers calls.
pub const FINISHED_SHOWN_MS: u64 = 60_000;

/// The versions the target records want: every target but those of old versions kept serving until their
/// successor serves (`retiring`).
fn wanted(store: &Store) -> Vec<String> {
    let targets = store.list("targets/").filter_map(|entry| {
        let AetherKey::Target { artifact } = entry.key() else { return None };
        let record = TargetRecord::decode(entry.value()).ok()?;
        (!record.retiring).then(|| artifact.to_string())
    });
    targets.collect()
}

/// The table for the store's current records, at wall-clock `now_ms`.
pub fn table(store: &Store, now_ms: u64) -> VersionTable {
    let mut running = Vec::new();
    let mut finished = Vec::new();
    for entry in store.list("updates/") {
        let AetherKey::Update { .. } = entry.key() else { continue };
        let Ok(record) = RolloutRecord::decode(entry.value()) else { continue };
        let moves = record
            .artifacts
            .iter()
            .filter_map(|m| Some((m.base.to_string(), m.from_artifact()?.to_string(), m.to_artifact()?.to_string())))
            .collect();
        let view = RolloutView { moves, share: record.new_share() };
        match record.state {
            Phase::Completed | Phase::RolledBack => {
                if now_ms < record.since_ms.saturating_add(FINISHED_SHOWN_MS) {
                    finished.push((record.since_ms, view));
                }
            }
            _ => running.push(view),
        }
    }
    // Running rollouts first, then the most recently finished: a base follows the first that moves it.
    finished.sort_by_key(|(since, _)| std::cmp::Reverse(*since));
    running.extend(finished.into_iter().map(|(_, view)| view));
    VersionTable::new(wanted(store), running)
}
