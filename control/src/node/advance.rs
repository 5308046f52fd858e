//! One record's next step: given its state, the leader's `desired` and what the container reports, what to
//! do to the container and what to write back.
//!
//! Requests (LOAD, ACTIVATE, DEACTIVATE, UNLOAD) are taken up by starting the container action and entering
//! the `-ING` state; `-ING` states end when the container reports the result, fail when it reports a failure
//! or something unexpected, and fail after their timeout. A request whose container state is unexpected
//! still enters its `-ING` state without an action, and the check there turns it into FAILED, so every write
//! follows [`can_transition`].
//!
//! A container that does not hold the slice of a record in a start or ACTIVE state means the node restarted
//! (the runtime marks every action in progress before it starts it): a start in progress fails with "crashed
//! {node} during start", so the leader counts it against the artifact; an ACTIVE record wanted ACTIVE is placed
//! again on this node at once, written back as a fresh LOAD record (the one write that does not follow
//! [`can_transition`]: it re-creates the record as the leader would, same instance and config), so a restarted
//! cluster serves again without waiting for FAILED records to be retired.
//!
//! The runtime must set the container state of an artifact to the matching in-progress state when it starts
//! an action, so a second step before the first write applies does not start the action again.

use super::{ContainerState, NodeAction};
use crate::cluster::StartFailures;
use crate::lifecycle::{can_transition, DesiredState, SliceState};
use crate::records::SliceRecord;
use kvstore::{Artifact, NodeId};

/// Longest a LOADING step may take (it includes fetching the artifact), in milliseconds.
pub const LOAD_TIMEOUT_MS: u64 = 60_000;
/// Longest an ACTIVATING step may take (the slice's `start`), in milliseconds.
pub const ACTIVATE_TIMEOUT_MS: u64 = 30_000;
/// Longest a DEACTIVATING step may take (the slice's `stop`), in milliseconds.
pub const DEACTIVATE_TIMEOUT_MS: u64 = 30_000;
/// Longest an UNLOADING step may take, in milliseconds.
pub const UNLOAD_TIMEOUT_MS: u64 = 30_000;

/// What becomes of the record.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Next {
    Stay,
    Write(SliceRecord),
    Remove,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Step {
    pub action: Option<NodeAction>,
    pub next: Next,
}

impl Step {
    fn stay() -> Self {
        Step { action: None, next: Next::Stay }
    }

    fn remove() -> Self {
        Step { action: None, next: Next::Remove }
    }
}

/// The timeout of an in-progress state, in milliseconds.
pub fn timeout_ms(state: SliceState) -> Option<u64> {
    match state {
        SliceState::Loading => Some(LOAD_TIMEOUT_MS),
        SliceState::Activating => Some(ACTIVATE_TIMEOUT_MS),
        SliceState::Deactivating => Some(DEACTIVATE_TIMEOUT_MS),
        SliceState::Unloading => Some(UNLOAD_TIMEOUT_MS),
        _ => None,
    }
}

pub(super) fn advance(
    node: &NodeId,
    artifact: &Artifact,
    record: &SliceRecord,
    container: Option<&ContainerState>,
    now_ms: u64,
) -> Step {
    let mut at = At { node, artifact, record, now_ms };
    match record.state {
        SliceState::Load => at.load(container),
        SliceState::Loading => at.progress(container, &ContainerState::Loading, &ContainerState::Loaded),
        SliceState::Loaded => at.loaded(),
        SliceState::Activate => at.activate(container),
        SliceState::Activating => at.progress(container, &ContainerState::Activating, &ContainerState::Active),
        SliceState::Active => at.active(container),
        SliceState::Deactivate => at.deactivate(container),
        SliceState::Deactivating => at.progress(container, &ContainerState::Deactivating, &ContainerState::Loaded),
        SliceState::Unload => at.unload(container),
        SliceState::Unloading => at.unloading(container),
        SliceState::Failed if record.desired == DesiredState::Unloaded => at.enter(SliceState::Unload, None),
        SliceState::Failed => Step::stay(),
    }
}

struct At<'a> {
    node: &'a NodeId,
    artifact: &'a Artifact,
    record: &'a SliceRecord,
    now_ms: u64,
}

impl At<'_> {
    fn enter(&mut self, state: SliceState, action: Option<NodeAction>) -> Step {
        debug_assert!(can_transition(self.record.state, state), "{} -> {state}", self.record.state);
        Step { action, next: Next::Write(self.record.entering(state, self.now_ms)) }
    }

    fn fail(&mut self, reason: &str) -> Step {
        debug_assert!(can_transition(self.record.state, SliceState::Failed), "{} -> FAILED", self.record.state);
        log::warn!("{}: {} failed: {reason}", self.artifact, self.record.state);
        Step { action: None, next: Next::Write(self.record.failing(reason, self.now_ms)) }
    }

    fn load(&mut self, container: Option<&ContainerState>) -> Step {
        if self.record.desired == DesiredState::Unloaded {
            return Step::remove();
        }
        let artifact = self.artifact.clone();
        match container {
            None => {
                let (config, copies) = (self.record.config.clone(), super::copies::wanted(self.record));
                self.enter(SliceState::Loading, Some(NodeAction::Load { artifact, config, copies }))
            }
            Some(ContainerState::Loaded) => self.enter(SliceState::Loading, None),
            // Left over from an earlier record of this artifact: clear it out first.
            Some(ContainerState::Active) => {
                Step { action: Some(NodeAction::Deactivate { artifact }), next: Next::Stay }
            }
            Some(ContainerState::Failed { .. }) => {
                Step { action: Some(NodeAction::Unload { artifact }), next: Next::Stay }
            }
            Some(_) => Step::stay(),
        }
    }

    /// An `-ING` state: done when the container reports `done`, waiting while it reports `doing`.
    fn progress(&mut self, container: Option<&ContainerState>, doing: &ContainerState, done: &ContainerState) -> Step {
        let state = self.record.state;
        match container {
            Some(reported) if reported == done => self.enter(settled(state), None),
            Some(ContainerState::Failed { reason }) => self.fail(reason),
            Some(reported) if reported == doing => self.check_timeout(),
            Some(reported) => self.fail(&format!("the container reports {reported} during {state}")),
            None if matches!(state, SliceState::Loading | SliceState::Activating) => {
                self.fail(&StartFailures::crashed(self.node))
            }
            None => self.fail(&format!("the container does not have the slice during {state}")),
        }
    }

    fn check_timeout(&mut self) -> Step {
        let limit_ms = timeout_ms(self.record.state).unwrap_or(u64::MAX);
        if self.now_ms.saturating_sub(self.record.since_ms) <= limit_ms {
            return Step::stay();
        }
        self.fail(&format!("timed out after {limit_ms} ms in {}", self.record.state))
    }

    fn loaded(&mut self) -> Step {
        match self.record.desired {
            DesiredState::Active => self.enter(SliceState::Activate, None),
            DesiredState::Unloaded => self.enter(SliceState::Unload, None),
            DesiredState::Loaded => Step::stay(),
        }
    }

    fn activate(&mut self, container: Option<&ContainerState>) -> Step {
        let action = (container == Some(&ContainerState::Loaded))
            .then(|| NodeAction::Activate { artifact: self.artifact.clone(), config: self.record.config.clone() });
        self.enter(SliceState::Activating, action)
    }

    fn active(&mut self, container: Option<&ContainerState>) -> Step {
        match container {
            Some(ContainerState::Active) if self.record.desired == DesiredState::Active => Step::stay(),
            Some(ContainerState::Active) => self.enter(SliceState::Deactivate, None),
            Some(ContainerState::Failed { reason }) => self.fail(reason),
            Some(reported) => self.fail(&format!("the container reports {reported} for an ACTIVE slice")),
            None if self.record.desired == DesiredState::Active => self.restart(),
            None if self.record.desired == DesiredState::Unloaded => Step::remove(),
            None => self.fail("the container does not have the ACTIVE slice"),
        }
    }

    /// The record placed again here, as the leader would create it: this node restarted and lost the slice.
    fn restart(&mut self) -> Step {
        log::info!("{}: ACTIVE before this node restarted; loading it again", self.artifact);
        let fresh = SliceRecord {
            state: SliceState::Load,
            since_ms: self.now_ms,
            error: None,
            failed_in: None,
            ..self.record.clone()
        };
        Step { action: None, next: Next::Write(fresh) }
    }

    fn deactivate(&mut self, container: Option<&ContainerState>) -> Step {
        let action = (container == Some(&ContainerState::Active))
            .then(|| NodeAction::Deactivate { artifact: self.artifact.clone() });
        self.enter(SliceState::Deactivating, action)
    }

    fn unload(&mut self, container: Option<&ContainerState>) -> Step {
        let action = Some(NodeAction::Unload { artifact: self.artifact.clone() });
        match container {
            None => Step::remove(),
            Some(ContainerState::Loaded | ContainerState::Active | ContainerState::Failed { .. }) => {
                self.enter(SliceState::Unloading, action)
            }
            Some(ContainerState::Unloading) => self.enter(SliceState::Unloading, None),
            Some(_) => Step::stay(),
        }
    }

    fn unloading(&mut self, container: Option<&ContainerState>) -> Step {
        match container {
            None => Step::remove(),
            Some(ContainerState::Unloading) => self.check_timeout(),
            Some(ContainerState::Failed { reason }) => self.fail(reason),
            Some(reported) => self.fail(&format!("the container reports {reported} during UNLOADING")),
        }
    }
}

/// The state an `-ING` state settles in when its step succeeds.
fn settled(state: SliceState) -> SliceState {
    match state {
        SliceState::Loading | SliceState::Deactivating => SliceState::Loaded,
        SliceState::Activating => SliceState::Active,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;
    use ContainerState as C;
    use SliceState as S;

    fn record(state: SliceState, desired: DesiredState) -> SliceRecord {
        SliceRecord { desired, state, ..SliceRecord::placed(0, Map::new(), 1_000) }
    }

    fn a() -> Artifact {
        Artifact::parse("g:a:1.0.0").unwrap()
    }

    fn run(state: SliceState, desired: DesiredState, container: Option<C>, now_ms: u64) -> Step {
        advance(&NodeId::parse("node-1").unwrap(), &a(), &record(state, desired), container.as_ref(), now_ms)
    }

    fn entered(step: &Step) -> Option<SliceState> {
        match &step.next {
            Next::Write(r) => Some(r.state),
            _ => None,
        }
    }

    #[test]
    fn the_way_up_takes_one_step_per_call() {
        let active = DesiredState::Active;
        let cases = [
            (S::Load, None, S::Loading, Some("load")),
            (S::Loading, Some(C::Loaded), S::Loaded, None),
            (S::Loaded, Some(C::Loaded), S::Activate, None),
            (S::Activate, Some(C::Loaded), S::Activating, Some("activate")),
            (S::Activating, Some(C::Active), S::Active, None),
        ];
        for (from, container, to, action) in cases {
            let step = run(from, active, container, 2_000);
            assert_eq!(entered(&step), Some(to), "{from}");
            let kind = step.action.as_ref().map(|a| match a {
                NodeAction::Load { .. } => "load",
                NodeAction::Activate { .. } => "activate",
                NodeAction::Deactivate { .. } => "deactivate",
                NodeAction::Unload { .. } => "unload",
                NodeAction::Reconfigure { .. } => "reconfigure",
                NodeAction::Resize { .. } => "resize",
            });
            assert_eq!(kind, action, "{from}");
        }
        assert_eq!(run(S::Active, active, Some(C::Active), 2_000), Step::stay());
    }

    #[test]
    fn the_way_down_ends_in_removal() {
        let gone = DesiredState::Unloaded;
        assert_eq!(entered(&run(S::Active, gone, Some(C::Active), 2_000)), Some(S::Deactivate));
        let step = run(S::Deactivate, gone, Some(C::Active), 2_000);
        assert_eq!(
            (entered(&step), step.action),
            (Some(S::Deactivating), Some(NodeAction::Deactivate { artifact: a() }))
        );
        assert_eq!(entered(&run(S::Deactivating, gone, Some(C::Loaded), 2_000)), Some(S::Loaded));
        assert_eq!(entered(&run(S::Loaded, gone, Some(C::Loaded), 2_000)), Some(S::Unload));
        let step = run(S::Unload, gone, Some(C::Loaded), 2_000);
        assert_eq!((entered(&step), step.action), (Some(S::Unloading), Some(NodeAction::Unload { artifact: a() })));
        assert_eq!(run(S::Unloading, gone, None, 2_000).next, Next::Remove);
        assert_eq!(run(S::Load, gone, None, 2_000).next, Next::Remove);
        assert_eq!(entered(&run(S::Failed, gone, Some(C::Failed { reason: "x".into() }), 2_000)), Some(S::Unload));
    }

    #[test]
    fn container_failures_become_failed_with_the_reason() {
        let failed = Some(C::Failed { reason: "boom".into() });
        for state in [S::Loading, S::Activating, S::Active, S::Deactivating, S::Unloading] {
            let step = run(state, DesiredState::Active, failed.clone(), 2_000);
            let Next::Write(next) = step.next else { panic!("{state}: no write") };
            assert_eq!((next.state, next.error.as_deref()), (S::Failed, Some("boom")), "{state}");
        }
    }

    #[test]
    fn cleaning_up_a_failed_record_never_replaces_its_cause() {
        let cause = "g:a:1.0.0: start failed: no database";
        let failed = record(S::Activating, DesiredState::Active).failing(cause, 1_500);
        let unloading = SliceRecord { desired: DesiredState::Unloaded, ..failed }.entering(S::Unloading, 1_600);
        let node = NodeId::parse("node-1").unwrap();
        for container in [C::Loaded, C::Failed { reason: "unload failed".into() }] {
            let step = advance(&node, &a(), &unloading, Some(&container), 2_000);
            let Next::Write(next) = step.next else { panic!("{container}: no write") };
            assert_eq!((next.state, next.error.as_deref()), (S::Failed, Some(cause)), "{container}");
        }
    }

    #[test]
    fn steps_time_out_only_after_their_limit() {
        let since_ms = 1_000;
        for state in [S::Loading, S::Activating, S::Deactivating, S::Unloading] {
            let limit_ms = timeout_ms(state).unwrap();
            let doing = match state {
                S::Loading => C::Loading,
                S::Activating => C::Activating,
                S::Deactivating => C::Deactivating,
                _ => C::Unloading,
            };
            let on_time = run(state, DesiredState::Active, Some(doing.clone()), since_ms + limit_ms);
            assert_eq!(on_time, Step::stay(), "{state}");
            let late = run(state, DesiredState::Active, Some(doing), since_ms + limit_ms + 1);
            let Next::Write(next) = late.next else { panic!("{state}: no timeout") };
            assert!(next.error.unwrap_or_default().contains("timed out"), "{state}");
        }
    }

    #[test]
    fn a_request_on_an_unexpected_container_fails_through_its_step() {
        let step = run(S::Activate, DesiredState::Active, None, 2_000);
        assert_eq!((entered(&step), step.action), (Some(S::Activating), None));
        assert_eq!(entered(&run(S::Activating, DesiredState::Active, None, 2_000)), Some(S::Failed));
    }

    #[test]
    fn a_stale_container_entry_is_cleared_before_loading() {
        let step = run(S::Load, DesiredState::Active, Some(C::Failed { reason: "old".into() }), 2_000);
        assert_eq!((step.next, step.action), (Next::Stay, Some(NodeAction::Unload { artifact: a() })));
        let step = run(S::Load, DesiredState::Active, Some(C::Loaded), 2_000);
        assert_eq!((entered(&step), step.action), (Some(S::Loading), None));
    }

    #[test]
    fn no_step_breaks_the_lifecycle() {
        let containers = [
            None,
            Some(C::Loading),
            Some(C::Loaded),
            Some(C::Activating),
            Some(C::Active),
            Some(C::Deactivating),
            Some(C::Unloading),
            Some(C::Failed { reason: "x".into() }),
        ];
        for state in SliceState::ALL {
            for desired in [DesiredState::Active, DesiredState::Loaded, DesiredState::Unloaded] {
                for container in &containers {
                    for now_ms in [1_000, 1_000_000] {
                        if let Some(to) = entered(&run(state, desired, container.clone(), now_ms)) {
                            let recreated =
                                (state, to, desired, container) == (S::Active, S::Load, DesiredState::Active, &None);
                            assert!(
                                recreated || can_transition(state, to),
                                "{state} -> {to} ({desired}, {container:?})"
                            );
                        }
                    }
                }
            }
        }
    }
}
