//! The node deployment manager: what one node does to its container and writes back, so its slices follow
//! the records the leader placed on it.
//!
//! [`step`] is a pure function of this node's view ([`NodeState`]: its `slices/{node}/*` records, its own
//! endpoints and the route table), the container's actual states, the slices' descriptors ([`SliceInfo`])
//! and the time. The runtime runs it whenever one of those changes and on the deadline it reports, performs
//! the actions and submits the writes. Per record it takes at most one lifecycle step (the table is in the
//! `advance` module); then:
//!
//! - endpoints: a record that is (after this step) ACTIVE and wanted ACTIVE has one endpoint per slice method,
//!   `endpoints/{artifact}/{method}/{node}:{instance}`; any other endpoint of this node is removed. So
//!   endpoints appear with ACTIVE and go with DEACTIVATE, FAILED and UNLOAD.
//! - routes: such a record also creates each of its routes that no one has registered yet. Routes are shared
//!   by every instance of an artifact, so no node can tell it held the last one; the leader removes a route
//!   when its artifact has no target any more. A route another artifact already holds is left to it.
//! - config: a serving record whose target asks for a config other than the one it runs with (and not the one
//!   it last refused) gets a [`NodeAction::Reconfigure`]; once the slice answered ([`Reconfig`]), the record
//!   takes the new config (accepted) or keeps its config and names the refusal in `config_refused`.
//! - copies: a serving record whose `copies` differs from what the container runs gets a
//!   [`NodeAction::Resize`] once its config is settled; the record takes what runs (`running`) and, when a
//!   copy could not start, why (`copies_refused`). See the `copies` module.
//! - slices the container holds without a record (a record removed by the leader while this node was
//!   unreachable, or a failed start) are deactivated and unloaded.
//!
//! Invariants: every record write follows [`crate::lifecycle::can_transition`] and is conditional on the
//! record's version; actions are only asked for when the container is in the state the action starts from;
//! the output is a function of the inputs only.

mod advance;
mod copies;
mod state;

pub use advance::{timeout_ms, ACTIVATE_TIMEOUT_MS, DEACTIVATE_TIMEOUT_MS, LOAD_TIMEOUT_MS, UNLOAD_TIMEOUT_MS};
pub use copies::Resize;
pub use state::{NodeState, NODE_PROBLEMS_MAX};

use crate::lifecycle::{DesiredState, SliceState};
use crate::records::{ConfigRefusal, EndpointRecord, Record, RouteRecord, SliceRecord};
use crate::write::KvWrite;
use advance::{advance, Next};
use kvstore::{AetherKey, Artifact, HttpMethod, Name, RoutePath};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What the container reports for one artifact; absent from the map means the container does not hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    Loading,
    Loaded,
    Activating,
    Active,
    Deactivating,
    Unloading,
    Failed { reason: String },
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerState::Loading => f.write_str("loading"),
            ContainerState::Loaded => f.write_str("loaded"),
            ContainerState::Activating => f.write_str("activating"),
            ContainerState::Active => f.write_str("active"),
            ContainerState::Deactivating => f.write_str("deactivating"),
            ContainerState::Unloading => f.write_str("unloading"),
            ContainerState::Failed { reason } => write!(f, "failed ({reason})"),
        }
    }
}

/// What a loaded slice's descriptor declares: its HTTP routes, its callable methods, its subscriptions, its
/// scheduled tasks and whether it is single-active.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SliceInfo {
    /// `(HTTP method, path pattern, slice method)`.
    pub routes: Vec<(HttpMethod, RoutePath, Name)>,
    pub methods: Vec<Name>,
    pub subscriptions: Vec<SubscriptionSpec>,
    pub schedules: Vec<ScheduleSpec>,
    pub single_active: bool,
}

/// A subscription as the slice declares it (the blueprint may override the delivery).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSpec {
    pub topic: Name,
    pub method: Name,
    pub delivery: vocab::Delivery,
}

/// A scheduled task as the slice declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    pub task: Name,
    pub method: Name,
    pub timing: vocab::Timing,
    pub missed: vocab::MissedRuns,
}

impl SliceInfo {
    /// Parses a descriptor's strings: routes as `(method, path, slice method)`, e.g. `("GET", "/echo/{msg}",
    /// "echo")`, and method names. A name that cannot be part of a key is an error, so the runtime can fail the
    /// slice with a clear reason instead of registering half of it.
    pub fn parse<'a>(
        routes: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
        methods: impl IntoIterator<Item = &'a str>,
    ) -> Result<SliceInfo, kvstore::ParseError> {
        let route = |(method, path, slice_method): (&str, &str, &str)| {
            Ok((HttpMethod::parse(method)?, RoutePath::parse(path)?, Name::parse(slice_method)?))
        };
        Ok(SliceInfo {
            routes: routes.into_iter().map(route).collect::<Result<_, _>>()?,
            methods: methods.into_iter().map(Name::parse).collect::<Result<_, _>>()?,
            ..SliceInfo::default()
        })
    }

    /// Adds the descriptor's subscriptions `(topic, method, delivery)` and schedules `(task, method, timing,
    /// missed)`; a topic, task or method that cannot be part of a key is an error.
    pub fn with_messaging<'a>(
        mut self,
        subscriptions: impl IntoIterator<Item = (&'a str, &'a str, vocab::Delivery)>,
        schedules: impl IntoIterator<Item = (&'a str, &'a str, vocab::Timing, vocab::MissedRuns)>,
        single_active: bool,
    ) -> Result<SliceInfo, kvstore::ParseError> {
        for (topic, method, delivery) in subscriptions {
            let (topic, method) = (Name::parse_as(topic, "topic")?, Name::parse(method)?);
            self.subscriptions.push(SubscriptionSpec { topic, method, delivery });
        }
        for (task, method, timing, missed) in schedules {
            let (task, method) = (Name::parse_as(task, "task")?, Name::parse(method)?);
            self.schedules.push(ScheduleSpec { task, method, timing, missed });
        }
        self.single_active = single_active;
        Ok(self)
    }
}

/// Something the runtime does to its container.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeAction {
    /// Fetch and load the artifact, `copies` separate copies of it (then report `Loaded` or `Failed`).
    Load { artifact: Artifact, config: Map<String, Value>, copies: u32 },
    /// Start the loaded slice with its configuration (then report `Active` or `Failed`).
    Activate { artifact: Artifact, config: Map<String, Value> },
    /// Stop the slice, keeping it loaded (then report `Loaded` or `Failed`).
    Deactivate { artifact: Artifact },
    /// Stop if needed and unload (then drop it from the reported states).
    Unload { artifact: Artifact },
    /// Offer the running slice a new config (then report its verdict as a [`Reconfig`]).
    Reconfigure { artifact: Artifact, config: Map<String, Value> },
    /// Start or stop copies of the running slice until `copies` run (then report the count running and the
    /// outcome as a [`Resize`]; a copy that cannot start is unloaded, and the others serve on).
    Resize { artifact: Artifact, copies: u32, config: Map<String, Value> },
}

/// A config offered to an artifact's running slice on this node, and the slice's verdict once it answered
/// (`None` while the offer is in progress; `Err` holds the slice's reason for refusing).
#[derive(Debug, Clone, PartialEq)]
pub struct Reconfig {
    pub config: Map<String, Value>,
    pub outcome: Option<Result<(), String>>,
}

/// What one [`step`] asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeOutput {
    pub actions: Vec<NodeAction>,
    pub writes: Vec<KvWrite>,
    /// When to run [`step`] again if nothing changes before: the earliest timeout of a step in progress.
    pub next_deadline_ms: Option<u64>,
}

/// What the container runs besides each slice's lifecycle state: the config offers in progress or answered,
/// the copies of each slice it runs (absent: one), and the resizes in progress or answered.
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    pub reconfigs: &'a BTreeMap<Artifact, Reconfig>,
    pub copies: &'a BTreeMap<Artifact, u32>,
    pub resizes: &'a BTreeMap<Artifact, Resize>,
}

/// This node's next actions and writes. See the module documentation.
pub fn step(
    state: &NodeState,
    container: &BTreeMap<Artifact, ContainerState>,
    slices: &BTreeMap<Artifact, SliceInfo>,
    running: Running<'_>,
    now_ms: u64,
) -> NodeOutput {
    let mut output = NodeOutput::default();
    let mut after: BTreeMap<&Artifact, SliceRecord> = BTreeMap::new();
    for (artifact, record) in &state.records {
        let mut step = advance(&state.node, artifact, &record.value, container.get(artifact), now_ms);
        if matches!(step.next, Next::Stay)
            && step.action.is_none()
            && serving(&record.value)
            && container.get(artifact) == Some(&ContainerState::Active)
        {
            let (action, next) =
                config_step(artifact, &record.value, state.configs.get(artifact), running.reconfigs.get(artifact));
            step.action = action;
            if let Some(next) = next {
                step.next = Next::Write(next);
            }
            // Copies follow once the config is settled, so a new copy starts with the config the others run.
            let settled = running.reconfigs.get(artifact).is_none_or(|r| r.outcome.is_some());
            if matches!(step.next, Next::Stay) && step.action.is_none() && settled {
                let (action, next) = copies::step(artifact, &record.value, running);
                step.action = action;
                if let Some(next) = next {
                    step.next = Next::Write(next);
                }
            }
        }
        output.actions.extend(step.action);
        let key = AetherKey::Slice { node: state.node.clone(), artifact: artifact.clone() };
        match step.next {
            Next::Stay => {
                after.insert(artifact, record.value.clone());
            }
            Next::Write(next) => {
                output.writes.push(KvWrite::Set { key, expected: Some(record.version), value: next.encode() });
                after.insert(artifact, next);
            }
            Next::Remove => output.writes.push(KvWrite::Remove { key, expected: record.version }),
        }
    }
    output.actions.extend(orphan_actions(state, container));
    output.writes.extend(endpoint_writes(state, &after, slices));
    output.writes.extend(route_writes(state, &after, slices));
    output.writes.extend(subscription_writes(state, &after, slices));
    output.next_deadline_ms = after.values().filter_map(deadline_ms).min();
    output
}

/// A serving record's config against the one its target asks for: the offer to make, or the record that
/// takes the slice's verdict. See the module documentation.
fn config_step(
    artifact: &Artifact,
    record: &SliceRecord,
    wanted: Option<&Map<String, Value>>,
    reconfig: Option<&Reconfig>,
) -> (Option<NodeAction>, Option<SliceRecord>) {
    let Some(wanted) = wanted else { return (None, None) };
    if *wanted == record.config {
        // Running what the blueprint asks for; a refusal of another config is no longer current.
        let cleared = record.config_refused.is_some().then(|| SliceRecord { config_refused: None, ..record.clone() });
        return (None, cleared);
    }
    if record.config_refused.as_ref().is_some_and(|r| r.config == *wanted) {
        return (None, None);
    }
    match reconfig.filter(|r| r.config == *wanted).map(|r| &r.outcome) {
        Some(None) => (None, None),
        Some(Some(Ok(()))) => {
            let next = SliceRecord { config: wanted.clone(), config_refused: None, ..record.clone() };
            (None, Some(next))
        }
        Some(Some(Err(reason))) => {
            let next =
                SliceRecord { config_refused: Some(ConfigRefusal::new(wanted.clone(), reason)), ..record.clone() };
            (None, Some(next))
        }
        None => (Some(NodeAction::Reconfigure { artifact: artifact.clone(), config: wanted.clone() }), None),
    }
}

fn serving(record: &SliceRecord) -> bool {
    record.state == SliceState::Active && record.desired == DesiredState::Active
}

fn deadline_ms(record: &SliceRecord) -> Option<u64> {
    timeout_ms(record.state).map(|limit_ms| record.since_ms.saturating_add(limit_ms).saturating_add(1))
}

/// Slices the container holds that no record of this node asks for.
fn orphan_actions(state: &NodeState, container: &BTreeMap<Artifact, ContainerState>) -> Vec<NodeAction> {
    let orphans = container.iter().filter(|(artifact, _)| !state.records.contains_key(*artifact));
    let actions = orphans.filter_map(|(artifact, reported)| match reported {
        ContainerState::Active => Some(NodeAction::Deactivate { artifact: artifact.clone() }),
        ContainerState::Loaded | ContainerState::Failed { .. } => {
            Some(NodeAction::Unload { artifact: artifact.clone() })
        }
        _ => None,
    });
    actions.collect()
}

/// Creates the endpoints of serving records and removes every other endpoint of this node.
fn endpoint_writes(
    state: &NodeState,
    after: &BTreeMap<&Artifact, SliceRecord>,
    slices: &BTreeMap<Artifact, SliceInfo>,
) -> Vec<KvWrite> {
    let artifacts: BTreeSet<&Artifact> = after.keys().copied().chain(state.endpoints.keys()).collect();
    let mut writes = Vec::new();
    for artifact in artifacts {
        let record = after.get(artifact).filter(|r| serving(r));
        let wanted: BTreeSet<(&Name, u32)> = match (record, slices.get(artifact)) {
            (Some(record), Some(info)) => info.methods.iter().map(|m| (m, record.instance)).collect(),
            _ => BTreeSet::new(),
        };
        let existing = state.endpoints.get(artifact);
        writes.extend(endpoint_changes(state, artifact, &wanted, existing));
    }
    writes
}

fn endpoint_changes(
    state: &NodeState,
    artifact: &Artifact,
    wanted: &BTreeSet<(&Name, u32)>,
    existing: Option<&BTreeMap<(Name, u32), kvstore::Revision>>,
) -> Vec<KvWrite> {
    let key = |method: &Name, instance: u32| AetherKey::Endpoint {
        artifact: artifact.clone(),
        method: method.clone(),
        node: state.node.clone(),
        instance,
    };
    let has = |method: &Name, instance: u32| existing.is_some_and(|e| e.contains_key(&(method.clone(), instance)));
    let created = wanted.iter().filter(|(m, i)| !has(m, *i)).map(|(method, instance)| {
        let value = EndpointRecord { node: state.node.clone(), instance: *instance }.encode();
        KvWrite::Set { key: key(method, *instance), expected: None, value }
    });
    let mut writes: Vec<KvWrite> = created.collect();
    let removed = existing.into_iter().flatten().filter(|((m, i), _)| !wanted.contains(&(m, *i)));
    writes.extend(
        removed
            .map(|((method, instance), version)| KvWrite::Remove { key: key(method, *instance), expected: *version }),
    );
    writes
}

/// Creates the routes of serving records that nobody has registered yet.
fn route_writes(
    state: &NodeState,
    after: &BTreeMap<&Artifact, SliceRecord>,
    slices: &BTreeMap<Artifact, SliceInfo>,
) -> Vec<KvWrite> {
    let mut claimed: BTreeSet<(HttpMethod, &RoutePath)> = BTreeSet::new();
    let mut writes = Vec::new();
    for (artifact, _) in after.iter().filter(|(_, r)| serving(r)) {
        let Some(info) = slices.get(*artifact) else { continue };
        for (method, path, slice_method) in &info.routes {
            if state.routes.contains_key(&(*method, path.clone())) || !claimed.insert((*method, path)) {
                continue;
            }
            let value = RouteRecord { artifact: (*artifact).clone(), method: slice_method.clone() }.encode();
            let key = AetherKey::Route { method: *method, path: path.clone() };
            writes.push(KvWrite::Set { key, expected: None, value });
        }
    }
    writes
}

/// The subscription records of the serving records' slices (see `messaging::subscribe`).
fn subscription_writes(
    state: &NodeState,
    after: &BTreeMap<&Artifact, SliceRecord>,
    slices: &BTreeMap<Artifact, SliceInfo>,
) -> Vec<KvWrite> {
    let serving = after.iter().filter(|(_, r)| serving(r)).filter_map(|(a, _)| Some((*a, slices.get(*a)?)));
    crate::messaging::subscribe::subscription_writes(&state.subscriptions, &state.configs, serving)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::Versioned;
    use kvstore::{NodeId, Revision};

    fn a() -> Artifact {
        Artifact::parse("g:a:1.0.0").unwrap()
    }

    fn info() -> SliceInfo {
        let get = Name::parse("get").unwrap();
        let put = Name::parse("put").unwrap();
        SliceInfo {
            routes: vec![(HttpMethod::Get, RoutePath::parse("/a").unwrap(), get.clone())],
            methods: vec![get, put],
            ..SliceInfo::default()
        }
    }

    fn view(state: SliceState, desired: DesiredState) -> NodeState {
        let mut view = NodeState::new(NodeId::parse("n1").unwrap());
        let record = SliceRecord { desired, state, ..SliceRecord::placed(3, Map::new(), 10) };
        view.records.insert(a(), Versioned { value: record, version: Revision(5) });
        view
    }

    static NO_COPIES: BTreeMap<Artifact, u32> = BTreeMap::new();
    static NO_RESIZES: BTreeMap<Artifact, Resize> = BTreeMap::new();

    fn with(reconfigs: &BTreeMap<Artifact, Reconfig>) -> Running<'_> {
        Running { reconfigs, copies: &NO_COPIES, resizes: &NO_RESIZES }
    }

    fn keys(writes: &[KvWrite]) -> Vec<String> {
        writes.iter().map(|w| w.key().to_string()).collect()
    }

    #[test]
    fn descriptor_strings_parse_into_slice_info() {
        let parsed = SliceInfo::parse([("GET", "/a", "get")], ["get", "put"]).unwrap();
        assert_eq!(parsed, info());
        assert_eq!(SliceInfo::parse([("get", "/a", "get")], []).unwrap_err().part, "http method");
        assert_eq!(SliceInfo::parse([], ["a/b"]).unwrap_err().part, "name");
    }

    #[test]
    fn becoming_active_registers_endpoints_and_routes() {
        let view = view(SliceState::Activating, DesiredState::Active);
        let container = BTreeMap::from([(a(), ContainerState::Active)]);
        let output = step(&view, &container, &BTreeMap::from([(a(), info())]), with(&BTreeMap::new()), 20);
        assert_eq!(
            keys(&output.writes),
            ["slices/n1/g:a:1.0.0", "endpoints/g:a:1.0.0/get/n1:3", "endpoints/g:a:1.0.0/put/n1:3", "routes/GET/a"]
        );
        assert!(matches!(&output.writes[0], KvWrite::Set { expected: Some(Revision(5)), .. }));
        assert!(output.writes[1..].iter().all(|w| matches!(w, KvWrite::Set { expected: None, .. })));
    }

    #[test]
    fn deactivating_removes_endpoints_but_not_routes() {
        let mut view = view(SliceState::Active, DesiredState::Unloaded);
        let get = Name::parse("get").unwrap();
        view.endpoints.insert(a(), BTreeMap::from([((get.clone(), 3), Revision(7))]));
        let route = RouteRecord { artifact: a(), method: get };
        view.routes.insert(
            (HttpMethod::Get, RoutePath::parse("/a").unwrap()),
            Versioned { value: route, version: Revision(8) },
        );
        let container = BTreeMap::from([(a(), ContainerState::Active)]);
        let output = step(&view, &container, &BTreeMap::from([(a(), info())]), with(&BTreeMap::new()), 20);
        assert_eq!(keys(&output.writes), ["slices/n1/g:a:1.0.0", "endpoints/g:a:1.0.0/get/n1:3"]);
        assert!(matches!(&output.writes[1], KvWrite::Remove { expected: Revision(7), .. }));
    }

    #[test]
    fn an_active_slice_registers_nothing_twice() {
        let mut view = view(SliceState::Active, DesiredState::Active);
        let (get, put) = (Name::parse("get").unwrap(), Name::parse("put").unwrap());
        view.endpoints.insert(a(), BTreeMap::from([((get.clone(), 3), Revision(7)), ((put, 3), Revision(7))]));
        let route = RouteRecord { artifact: a(), method: get };
        view.routes.insert(
            (HttpMethod::Get, RoutePath::parse("/a").unwrap()),
            Versioned { value: route, version: Revision(8) },
        );
        let container = BTreeMap::from([(a(), ContainerState::Active)]);
        let output = step(&view, &container, &BTreeMap::from([(a(), info())]), with(&BTreeMap::new()), 20);
        assert_eq!(output, NodeOutput::default());
    }

    #[test]
    fn the_next_deadline_is_the_earliest_timeout() {
        let view = view(SliceState::Load, DesiredState::Active);
        let output = step(&view, &BTreeMap::new(), &BTreeMap::new(), with(&BTreeMap::new()), 100);
        assert_eq!(output.actions, [NodeAction::Load { artifact: a(), config: Map::new(), copies: 1 }]);
        assert_eq!(output.next_deadline_ms, Some(100 + LOAD_TIMEOUT_MS + 1));
    }

    #[test]
    fn container_slices_without_records_are_stopped_and_unloaded() {
        let view = NodeState::new(NodeId::parse("n1").unwrap());
        let b = Artifact::parse("g:b:1.0.0").unwrap();
        let c = Artifact::parse("g:c:1.0.0").unwrap();
        let container = BTreeMap::from([
            (a(), ContainerState::Active),
            (b.clone(), ContainerState::Loaded),
            (c, ContainerState::Loading),
        ]);
        let output = step(&view, &container, &BTreeMap::new(), with(&BTreeMap::new()), 0);
        assert_eq!(output.actions, [NodeAction::Deactivate { artifact: a() }, NodeAction::Unload { artifact: b }]);
    }

    #[test]
    fn a_changed_target_config_is_offered_once_then_accepted_or_refused_into_the_record() {
        let mut view = view(SliceState::Active, DesiredState::Active);
        let container = BTreeMap::from([(a(), ContainerState::Active)]);
        let infos = BTreeMap::from([(a(), info())]);
        let new: Map<String, Value> = [("greeting".to_owned(), Value::from("hi"))].into_iter().collect();
        view.configs.insert(a(), new.clone());
        let record = |output: &NodeOutput| match &output.writes[..] {
            [KvWrite::Set { value, expected: Some(Revision(5)), .. }, ..] => SliceRecord::decode(value).unwrap(),
            other => panic!("expected the record rewritten first: {other:?}"),
        };
        // Differs from the running config: offered, nothing written yet.
        let offered = step(&view, &container, &infos, with(&BTreeMap::new()), 20);
        assert_eq!(offered.actions, [NodeAction::Reconfigure { artifact: a(), config: new.clone() }]);
        assert!(!keys(&offered.writes).contains(&"slices/n1/g:a:1.0.0".to_owned()));
        // In progress: not offered again.
        let pending = BTreeMap::from([(a(), Reconfig { config: new.clone(), outcome: None })]);
        assert!(step(&view, &container, &infos, with(&pending), 20).actions.is_empty());
        // Accepted: the record runs the new config.
        let accepted = BTreeMap::from([(a(), Reconfig { config: new.clone(), outcome: Some(Ok(())) })]);
        let output = step(&view, &container, &infos, with(&accepted), 20);
        assert!(output.actions.is_empty());
        assert_eq!((record(&output).config, record(&output).config_refused), (new.clone(), None));
        // Refused: the old config stays and the refusal is named; once recorded, nothing more happens.
        let refused = BTreeMap::from([(a(), Reconfig { config: new.clone(), outcome: Some(Err("no thanks".into())) })]);
        let output = step(&view, &container, &infos, with(&refused), 20);
        let written = record(&output);
        assert_eq!(written.config, Map::new());
        assert_eq!(written.config_refused, Some(ConfigRefusal::new(new.clone(), "no thanks")));
        view.records.get_mut(&a()).unwrap().value = written;
        assert!(step(&view, &container, &infos, with(&refused), 20).actions.is_empty());
        assert!(!keys(&step(&view, &container, &infos, with(&refused), 20).writes)
            .contains(&"slices/n1/g:a:1.0.0".to_owned()));
        // The blueprint goes back to the running config: the refusal is cleared.
        view.configs.insert(a(), Map::new());
        assert_eq!(record(&step(&view, &container, &infos, with(&refused), 20)).config_refused, None);
    }

    #[test]
    fn only_a_serving_slice_is_reconfigured() {
        let mut view = view(SliceState::Activating, DesiredState::Active);
        let new: Map<String, Value> = [("k".to_owned(), Value::from(1))].into_iter().collect();
        view.configs.insert(a(), new);
        let container = BTreeMap::from([(a(), ContainerState::Activating)]);
        let output = step(&view, &container, &BTreeMap::new(), with(&BTreeMap::new()), 20);
        assert!(output.actions.is_empty(), "{:?}", output.actions);
    }
}
