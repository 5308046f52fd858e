//! The slice lifecycle of one node, as recorded under `slices/{node}/{artifact}`.
//!
//! ```text
//! LOAD -> LOADING -> LOADED -> ACTIVATE -> ACTIVATING -> ACTIVE -> DEACTIVATE -> DEACTIVATING -> LOADED
//! LOADED -> UNLOAD -> UNLOADING -> (removed)
//! any in-progress state (LOADING, ACTIVATING, DEACTIVATING, UNLOADING) -> FAILED; FAILED -> UNLOAD
//! ```
//!
//! The command states (`LOAD`, `ACTIVATE`, `DEACTIVATE`, `UNLOAD`) are what the deployment managers
//! write; the container moves through the others. [`SliceState::can_become`] is the whole table, and
//! the container checks it on every transition.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SliceState {
    Load,
    Loading,
    Loaded,
    Activate,
    Activating,
    Active,
    Deactivate,
    Deactivating,
    Unload,
    Unloading,
    Failed,
}

use SliceState::*;

const ALL: [SliceState; 11] =
    [Load, Loading, Loaded, Activate, Activating, Active, Deactivate, Deactivating, Unload, Unloading, Failed];

impl SliceState {
    /// Whether the lifecycle allows going from `self` to `next`.
    pub fn can_become(self, next: SliceState) -> bool {
        matches!(
            (self, next),
            (Load, Loading)
                | (Loading, Loaded)
                | (Loaded, Activate)
                | (Loaded, Activating)
                | (Activate, Activating)
                | (Activating, Active)
                | (Active, Deactivate)
                | (Active, Deactivating)
                | (Deactivate, Deactivating)
                | (Deactivating, Loaded)
                | (Loaded, Unload)
                | (Loaded, Unloading)
                | (Unload, Unloading)
                | (Failed, Unload)
                | (Failed, Unloading)
        ) || (self.in_progress() && next == Failed)
    }

    /// A step the container is running.
    pub fn in_progress(self) -> bool {
        matches!(self, Loading | Activating | Deactivating | Unloading)
    }

    /// The stable text form, as stored in KV.
    pub fn as_str(self) -> &'static str {
        match self {
            Load => "LOAD",
            Loading => "LOADING",
            Loaded => "LOADED",
            Activate => "ACTIVATE",
            Activating => "ACTIVATING",
            Active => "ACTIVE",
            Deactivate => "DEACTIVATE",
            Deactivating => "DEACTIVATING",
            Unload => "UNLOAD",
            Unloading => "UNLOADING",
            Failed => "FAILED",
        }
    }
}

impl fmt::Display for SliceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SliceState {
    type Err = String;

    fn from_str(text: &str) -> Result<SliceState, String> {
        ALL.iter().copied().find(|s| s.as_str() == text).ok_or_else(|| format!("`{text}` is not a slice state"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for state in ALL {
            assert_eq!(state.as_str().parse::<SliceState>(), Ok(state));
        }
        assert!("active".parse::<SliceState>().is_err());
    }

    #[test]
    fn the_happy_path_is_allowed_and_shortcuts_are_not() {
        let path =
            [Load, Loading, Loaded, Activate, Activating, Active, Deactivate, Deactivating, Loaded, Unload, Unloading];
        for pair in path.windows(2) {
            assert!(pair[0].can_become(pair[1]), "{} -> {}", pair[0], pair[1]);
        }
        assert!(!Loaded.can_become(Active));
        assert!(!Active.can_become(Unloading));
        assert!(!Active.can_become(Failed));
        assert!(!Failed.can_become(Active));
        for state in [Loading, Activating, Deactivating, Unloading] {
            assert!(state.can_become(Failed));
        }
        assert!(Failed.can_become(Unloading));
    }
}
