//! Fault injection for tests: drop or delay frames to or from chosen peers, switched at run time.
//!
//! Rules apply to every frame, handshake included, so a "partition" also stops connections from being
//! re-established. With no rules set the check is one empty-slice test per frame.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Inbound,
    Outbound,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    Drop,
    Delay(Duration),
}

/// One rule: frames between this node and `peer` (every peer when `None`) in `direction` get `action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRule {
    pub peer: Option<String>,
    pub direction: Direction,
    pub action: FaultAction,
}

/// What to do with one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    Delay(Duration),
}

/// The first rule that matches decides; no rule means pass.
pub fn verdict(rules: &[FaultRule], peer: &str, outbound: bool) -> Verdict {
    for rule in rules {
        let peer_matches = rule.peer.as_deref().is_none_or(|p| p == peer);
        let direction_matches = match rule.direction {
            Direction::Both => true,
            Direction::Inbound => !outbound,
            Direction::Outbound => outbound,
        };
        if peer_matches && direction_matches {
            return match rule.action {
                FaultAction::Drop => Verdict::Drop,
                FaultAction::Delay(d) => Verdict::Delay(d),
            };
        }
    }
    Verdict::Pass
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_matching_rule_decides() {
        let rules = vec![
            FaultRule { peer: Some("b".into()), direction: Direction::Outbound, action: FaultAction::Drop },
            FaultRule { peer: None, direction: Direction::Both, action: FaultAction::Delay(Duration::from_millis(5)) },
        ];
        assert_eq!(verdict(&rules, "b", true), Verdict::Drop);
        assert_eq!(verdict(&rules, "b", false), Verdict::Delay(Duration::from_millis(5)));
        assert_eq!(verdict(&rules, "c", true), Verdict::Delay(Duration::from_millis(5)));
        assert_eq!(verdict(&[], "c", true), Verdict::Pass);
    }
}
