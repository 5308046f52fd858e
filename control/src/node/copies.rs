//! Copies: a slice record may stand for several instances on its node (`copies`, up to the target's
//! `max_per_node`). While the record serves and its config is settled, this step compares `copies` with what the
//! container runs and asks for a [`NodeAction::Resize`] when they differ, once per count asked for: a
//! [`Resize`] in progress for that count, or answered with a refusal, is not asked again (a new count is).
//!
//! The record takes what runs: `running` (the copies the container runs, written once it differs from the
//! record; left out while one copy runs and the record never said otherwise, so single-copy records stay as
//! earlier nodes wrote them), and `copies_refused` (why a copy could not start, cleared once `copies` run). The
//! leader counts a serving record as the lower of `copies` and `running`, so nothing it judges by serving
//! instances (drain, version changes, dependencies, scaling) counts a copy that does not run yet.
//!
//! Invariants: a resize never asks for more than [`PER_NODE_MAX`] copies nor fewer than one, whatever the
//! record says; the output is a function of the inputs.

use super::NodeAction;
use crate::blueprint::PER_NODE_MAX;
use crate::records::SliceRecord;
use kvstore::Artifact;

/// A resize asked of the container: the count asked for, and the outcome once answered (`Err`: why a copy
/// could not start; the copies that started serve on).
#[derive(Debug, Clone, PartialEq)]
pub struct Resize {
    pub copies: u32,
    pub outcome: Option<Result<(), String>>,
}

/// The copies a record asks for, within what a node ever runs.
pub fn wanted(record: &SliceRecord) -> u32 {
    record.copies.clamp(1, PER_NODE_MAX)
}

/// The resize to ask for, and the record with what runs, for a serving record whose container is ACTIVE.
pub(super) fn step(
    artifact: &Artifact,
    record: &SliceRecord,
    running: super::Running<'_>,
) -> (Option<NodeAction>, Option<SliceRecord>) {
    let wanted = wanted(record);
    let runs = running.copies.get(artifact).copied().unwrap_or(1);
    let asked = running.resizes.get(artifact).filter(|r| r.copies == wanted);
    let action = match asked {
        None if runs != wanted => {
            Some(NodeAction::Resize { artifact: artifact.clone(), copies: wanted, config: record.config.clone() })
        }
        _ => None,
    };
    let refused = match asked.and_then(|r| r.outcome.as_ref()) {
        _ if runs == wanted => None,
        Some(Err(reason)) => Some(SliceRecord::reason(reason)),
        _ => record.copies_refused.clone(),
    };
    let running = if runs == 1 && record.running.is_none() { None } else { Some(runs) };
    let next = SliceRecord { running, copies_refused: refused, ..record.clone() };
    (action, (next != *record).then_some(next))
}

#[cfg(test)]
mod tests {
    use super::super::{step as node_step, ContainerState, NodeState, Reconfig, Running};
    use super::*;
    use crate::lifecycle::SliceState;
    use crate::records::Record;
    use crate::write::{KvWrite, Versioned};
    use kvstore::{NodeId, Revision};
    use serde_json::{Map, Value};
    use std::collections::BTreeMap;

    fn a() -> Artifact {
        Artifact::parse("g:a:1.0.0").unwrap()
    }

    fn record(state: SliceState, copies: u32) -> SliceRecord {
        SliceRecord { state, copies, ..SliceRecord::placed(0, Map::new(), 10) }
    }

    fn view(record: SliceRecord) -> NodeState {
        let mut view = NodeState::new(NodeId::parse("n1").unwrap());
        view.records.insert(a(), Versioned { value: record, version: Revision(5) });
        view
    }

    struct Node {
        copies: BTreeMap<Artifact, u32>,
        resizes: BTreeMap<Artifact, Resize>,
        reconfigs: BTreeMap<Artifact, Reconfig>,
    }

    impl Node {
        fn running(copies: u32) -> Node {
            Node { copies: BTreeMap::from([(a(), copies)]), resizes: BTreeMap::new(), reconfigs: BTreeMap::new() }
        }

        fn asked(mut self, copies: u32, outcome: Option<Result<(), String>>) -> Node {
            self.resizes.insert(a(), Resize { copies, outcome });
            self
        }

        /// The actions and the record written, if any.
        fn step(&self, record: SliceRecord, container: ContainerState) -> (Vec<NodeAction>, Option<SliceRecord>) {
            let running = Running { reconfigs: &self.reconfigs, copies: &self.copies, resizes: &self.resizes };
            let output = node_step(&view(record), &BTreeMap::from([(a(), container)]), &BTreeMap::new(), running, 20);
            let written = output.writes.iter().find_map(|w| match w {
                KvWrite::Set { key, value, .. } if key.to_string().starts_with("slices/") => {
                    SliceRecord::decode(value).ok()
                }
                _ => None,
            });
            (output.actions, written)
        }
    }

    fn resize(copies: u32) -> NodeAction {
        NodeAction::Resize { artifact: a(), copies, config: Map::new() }
    }

    #[test]
    fn a_record_of_several_copies_loads_them_all() {
        let (actions, _) = Node::running(1).step(record(SliceState::Load, 3), ContainerState::Active);
        // A container that still holds the artifact is cleared out first; an empty one loads three copies.
        assert_eq!(actions, [NodeAction::Deactivate { artifact: a() }]);
        let empty = Node { copies: BTreeMap::new(), resizes: BTreeMap::new(), reconfigs: BTreeMap::new() };
        let running = Running { reconfigs: &empty.reconfigs, copies: &empty.copies, resizes: &empty.resizes };
        let output = node_step(&view(record(SliceState::Load, 3)), &BTreeMap::new(), &BTreeMap::new(), running, 20);
        assert_eq!(output.actions, [NodeAction::Load { artifact: a(), config: Map::new(), copies: 3 }]);
    }

    #[test]
    fn a_serving_slice_is_resized_once_per_count_and_the_record_takes_what_runs() {
        let active = |copies| record(SliceState::Active, copies);
        // Runs one, the record asks for three: grow; nothing written while one runs as before.
        assert_eq!(Node::running(1).step(active(3), ContainerState::Active), (vec![resize(3)], None));
        // In progress: not asked again.
        assert_eq!(Node::running(1).asked(3, None).step(active(3), ContainerState::Active), (vec![], None));
        // Done: three run, and the record says so.
        let (actions, written) = Node::running(3).asked(3, Some(Ok(()))).step(active(3), ContainerState::Active);
        assert!(actions.is_empty());
        assert_eq!(written.map(|r| (r.running, r.copies_refused)), Some((Some(3), None)));
        // The record goes down to one: shrink.
        let three = SliceRecord { running: Some(3), ..active(1) };
        assert_eq!(Node::running(3).asked(3, Some(Ok(()))).step(three, ContainerState::Active).0, [resize(1)]);
        // Only a serving slice with its container ACTIVE is resized.
        assert!(Node::running(1).step(record(SliceState::Activating, 3), ContainerState::Activating).0.is_empty());
    }

    #[test]
    fn a_copy_that_cannot_start_is_named_once_and_the_others_serve_on() {
        let active = record(SliceState::Active, 3);
        let refused = Node::running(2).asked(3, Some(Err("port 9000 is taken".into())));
        let (actions, written) = refused.step(active.clone(), ContainerState::Active);
        assert!(actions.is_empty(), "not asked again: {actions:?}");
        let written = written.expect("the record says what runs");
        assert_eq!((written.running, written.copies_refused.as_deref()), (Some(2), Some("port 9000 is taken")));
        assert_eq!((written.serving_copies(), written.placed_copies()), (2, 2));
        // Recorded: nothing more happens.
        assert_eq!(refused.step(written.clone(), ContainerState::Active), (vec![], None));
        // Another count is asked for afresh; once it runs, the refusal goes.
        let four = SliceRecord { copies: 2, ..written };
        let (actions, written) = refused.step(four.clone(), ContainerState::Active);
        assert!(actions.is_empty(), "two already run");
        assert_eq!(written.map(|r| r.copies_refused), Some(None));
    }

    #[test]
    fn copies_follow_a_settled_config_and_never_exceed_the_ceiling() {
        let mut node = Node::running(1);
        node.reconfigs.insert(a(), Reconfig { config: Map::new(), outcome: None });
        let mut offered = record(SliceState::Active, 2);
        offered.config = [("k".to_owned(), Value::from(1))].into_iter().collect();
        assert!(node.step(offered, ContainerState::Active).0.is_empty(), "no new copy while a config is offered");
        let huge = record(SliceState::Active, u32::MAX);
        assert_eq!(Node::running(1).step(huge, ContainerState::Active).0, [resize(PER_NODE_MAX)]);
    }
}
