//! The slice lifecycle as the control plane sees it: [`SliceState`] and [`can_transition`] (one home, in
//! `vocab`, shared with the container) and [`DesiredState`], the leader's goal for one record, which the node
//! walks [`SliceState`] towards.

use serde::{Deserialize, Serialize};
use std::fmt;

pub use vocab::lifecycle::{can_transition, SliceState};

/// The leader's goal for one slice record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DesiredState {
    /// Loaded, started and serving.
    Active,
    /// Loaded but not serving (kept warm, or stopped for a drain).
    Loaded,
    /// Gone from the node: deactivate if needed, unload, then remove the record.
    Unloaded,
}

impl fmt::Display for DesiredState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DesiredState::Active => "ACTIVE",
            DesiredState::Loaded => "LOADED",
            DesiredState::Unloaded => "UNLOADED",
        })
    }
}
