//! [`SliceState`]: the lifecycle of one slice on one node, and which steps between states are allowed.
//!
//! ```text
//! LOAD -> LOADING -> LOADED -> ACTIVATE -> ACTIVATING -> ACTIVE -> DEACTIVATE -> DEACTIVATING -> LOADED
//! LOADED -> UNLOAD -> UNLOADING -> (record removed)
//! LOADING | ACTIVATING | ACTIVE | DEACTIVATING | UNLOADING -> FAILED -> UNLOAD
//! ```
//!
//! The upper-case states without `-ING` are requests (a step has been asked for and not started); the `-ING`
//! states are steps in progress; `LOADED`, `ACTIVE` and `FAILED` are at rest. `ACTIVE -> FAILED` is allowed
//! beyond the in-progress states because a running slice can break (the container reports it failed), and the
//! record must say so. The end of the lifecycle is the removal of the record, not a state.
//!
//! [`can_transition`] is the table for one write of a `slices/{node}/{artifact}` record. The container, which
//! never writes the request states, checks [`SliceState::can_become`]: a record step, or two steps through a
//! request (`LOADED -> ACTIVATING` passes `ACTIVATE`). Both the control plane and the container use this one
//! enum, so the state a container reports and the state a record holds are the same values.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where one slice instance is in its lifecycle on its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
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

impl SliceState {
    pub const ALL: [SliceState; 11] = [
        SliceState::Load,
        SliceState::Loading,
        SliceState::Loaded,
        SliceState::Activate,
        SliceState::Activating,
        SliceState::Active,
        SliceState::Deactivate,
        SliceState::Deactivating,
        SliceState::Unload,
        SliceState::Unloading,
        SliceState::Failed,
    ];

    /// The upper-case name used in KV values and logs (`"ACTIVATING"`).
    pub fn as_str(self) -> &'static str {
        match self {
            SliceState::Load => "LOAD",
            SliceState::Loading => "LOADING",
            SliceState::Loaded => "LOADED",
            SliceState::Activate => "ACTIVATE",
            SliceState::Activating => "ACTIVATING",
            SliceState::Active => "ACTIVE",
            SliceState::Deactivate => "DEACTIVATE",
            SliceState::Deactivating => "DEACTIVATING",
            SliceState::Unload => "UNLOAD",
            SliceState::Unloading => "UNLOADING",
            SliceState::Failed => "FAILED",
        }
    }

    /// A step the node has started and the container has not finished.
    pub fn is_in_progress(self) -> bool {
        matches!(self, SliceState::Loading | SliceState::Activating | SliceState::Deactivating | SliceState::Unloading)
    }

    /// A request written into the record and not yet taken up by the node.
    pub fn is_request(self) -> bool {
        matches!(self, SliceState::Load | SliceState::Activate | SliceState::Deactivate | SliceState::Unload)
    }

    /// Whether the container may go from `self` to `next`: one record step, or two through a request state.
    pub fn can_become(self, next: SliceState) -> bool {
        can_transition(self, next)
            || SliceState::ALL
                .into_iter()
                .any(|request| request.is_request() && can_transition(self, request) && can_transition(request, next))
    }
}

impl FromStr for SliceState {
    type Err = String;

    fn from_str(text: &str) -> Result<SliceState, String> {
        SliceState::ALL.into_iter().find(|s| s.as_str() == text).ok_or_else(|| format!("`{text}` is not a slice state"))
    }
}

impl fmt::Display for SliceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// True when a record may go from `from` to `to` in one write.
pub fn can_transition(from: SliceState, to: SliceState) -> bool {
    use SliceState::*;
    matches!(
        (from, to),
        (Load, Loading)
            | (Loading, Loaded)
            | (Loaded, Activate)
            | (Activate, Activating)
            | (Activating, Active)
            | (Active, Deactivate)
            | (Deactivate, Deactivating)
            | (Deactivating, Loaded)
            | (Loaded | Failed, Unload)
            | (Unload, Unloading)
            | (Loading | Activating | Active | Deactivating | Unloading, Failed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use SliceState::*;

    #[test]
    fn the_happy_path_is_allowed_step_by_step() {
        let path = [Load, Loading, Loaded, Activate, Activating, Active, Deactivate, Deactivating, Loaded, Unload];
        for pair in path.windows(2) {
            assert!(can_transition(pair[0], pair[1]), "{} -> {}", pair[0], pair[1]);
        }
        assert!(can_transition(Unload, Unloading));
    }

    #[test]
    fn every_in_progress_state_can_fail_and_requests_cannot() {
        for state in SliceState::ALL {
            let expected = state.is_in_progress() || state == Active;
            assert_eq!(can_transition(state, Failed), expected, "{state} -> FAILED");
        }
    }

    #[test]
    fn failed_only_leads_to_unload() {
        let next: Vec<_> = SliceState::ALL.into_iter().filter(|to| can_transition(Failed, *to)).collect();
        assert_eq!(next, vec![Unload]);
    }

    #[test]
    fn steps_cannot_be_skipped_or_reversed() {
        for (from, to) in [(Load, Loaded), (Loaded, Active), (Active, Loaded), (Active, Unload), (Loading, Load)] {
            assert!(!can_transition(from, to), "{from} -> {to}");
        }
        for state in SliceState::ALL {
            assert!(!can_transition(state, state), "{state} -> itself");
        }
    }

    #[test]
    fn every_state_is_reachable_from_load() {
        let mut reached = vec![Load];
        let mut frontier = vec![Load];
        while let Some(from) = frontier.pop() {
            for to in SliceState::ALL {
                if can_transition(from, to) && !reached.contains(&to) {
                    reached.push(to);
                    frontier.push(to);
                }
            }
        }
        assert_eq!(reached.len(), SliceState::ALL.len());
    }

    #[test]
    fn the_container_skips_request_states_and_nothing_else() {
        for (from, to) in [(Loaded, Activating), (Active, Deactivating), (Loaded, Unloading), (Failed, Unloading)] {
            assert!(from.can_become(to), "{from} -> {to}");
            assert!(!can_transition(from, to), "{from} -> {to} is two record writes");
        }
        for (from, to) in [(Loaded, Active), (Load, Loaded), (Active, Unloading), (Failed, Active), (Loading, Active)] {
            assert!(!from.can_become(to), "{from} -> {to}");
        }
    }

    #[test]
    fn text_forms_round_trip() {
        for state in SliceState::ALL {
            assert_eq!(state.as_str().parse::<SliceState>(), Ok(state));
        }
        assert!("active".parse::<SliceState>().is_err());
    }

    #[test]
    fn names_match_the_json_form() {
        for state in SliceState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
            assert_eq!(serde_json::from_str::<SliceState>(&json).unwrap(), state);
        }
    }
}
