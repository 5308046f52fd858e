//! The pure logic of deployment: what the cluster should run, where, and how each node gets there.
//!
//! It owns:
//! - [`blueprint`]: parsing and validating the operator's TOML (errors carry line and field) into a
//!   [`blueprint::Blueprint`] with its dependency order, and [`blueprint::checks`], what the text alone cannot
//!   tell (route conflicts with other artifacts, `instances` above the node count);
//! - [`records`]: the JSON values stored under `blueprints/`, `targets/`, `slices/`, `endpoints/`, `routes/`
//!   and `nodes/` (leases and the leader record);
//! - [`scaling`]: `scaling/{artifact-base}` instance counts set by the controller or an operator, the
//!   controller's thresholds and its decision;
//! - [`rollout`]: `updates/{id}`, a version change with its traffic ratio, stages and state;
//! - [`duty`]: a node's own lifecycle (ON_DUTY, DRAINING, ...) under `nodes/{node}/lifecycle`;
//! - [`lifecycle`]: [`lifecycle::SliceState`] and the allowed steps between states;
//! - [`cluster`]: the leader's [`cluster::reconcile`], from a KV view and the liveness read from lease records
//!   to KV writes, and [`cluster::liveness`]: lease watching, leadership, and the leader's guarded pass;
//! - [`node`]: every node's [`node::step`], from its records and its container to container actions and KV
//!   writes (lifecycle states, endpoints, routes);
//! - [`mod@write`]: [`write::KvWrite`], the conditional writes both managers produce.
//!
//! Invariants:
//! - every decision is a function of its inputs (KV view, live nodes, container states, time): ordered maps
//!   only, no clock, no randomness, so the same inputs give the same outputs on every node and in the
//!   simulator;
//! - every write is conditional on the version it was computed against, so a decision taken on a stale view
//!   fails rather than overwrites; running a manager again on the result of its own writes writes nothing;
//! - a slice record has two writers with separate fields: the leader creates it and afterwards changes only
//!   `desired`; the node moves `state` along [`lifecycle::can_transition`] and removes the record at the end;
//! - decoding KV values and blueprint text returns a value or an error for any input, never panics; every
//!   collection read from input has a bound.
//!
//! It must never: touch a socket, thread, clock, file or random source (the node runtime does I/O and gives
//! time as `now_ms`); depend on the `container` crate (slice descriptors come in as [`node::SliceInfo`]) or on
//! `consensus`; or act on a view without quorum (the runtime only calls it with state it has applied).
//!
//! Sketch of use by the node runtime (here with a local store standing in for consensus):
//!
//! ```
//! use control::records::{BlueprintRecord, Record};
//! use control::{blueprint, cluster, node};
//! use kvstore::{AetherKey, Command, KvState, NodeId};
//! use std::collections::BTreeMap;
//!
//! let mut kv = KvState::new();
//! let mut submit = |kv: &mut KvState, command: Command| kv.apply_command(command, &mut |_| {});
//!
//! // Management API: parse and check the blueprint, then store it.
//! let toml = "name = \"shop\"\n[[slices]]\nartifact = \"org.example:echo:1.0.0\"\n";
//! let parsed = blueprint::parse(toml, &|_artifact| true).unwrap();
//! let key = AetherKey::Blueprint { name: parsed.name.clone() };
//! let value = BlueprintRecord { toml: toml.to_owned(), blueprint: parsed }.encode();
//! submit(&mut kv, Command::Put { key, value });
//!
//! // Leader, on every change of the deployment keys and every second: list, reconcile, submit.
//! let live = [NodeId::parse("node-1").unwrap()];
//! let view = cluster::ClusterState::from_entries(kv.list(""));
//! for write in cluster::reconcile(&view, &cluster::Liveness::all_live(live.clone()), 1_000) {
//!     submit(&mut kv, write.to_command());
//! }
//!
//! // Every node, on changes of its records, its container or at `next_deadline_ms`: act and report back.
//! let view = node::NodeState::from_entries(live[0].clone(), kv.list(""));
//! let container = BTreeMap::new(); // what the container holds, by artifact
//! let descriptors = BTreeMap::new(); // routes and methods of loaded slices, by artifact
//! let reconfigs = BTreeMap::new(); // configs offered to running slices, and their verdicts
//! let copies = BTreeMap::new(); // copies each running slice runs, by artifact (absent: one)
//! let resizes = BTreeMap::new(); // copies asked of running slices, and the outcomes
//! let running = node::Running { reconfigs: &reconfigs, copies: &copies, resizes: &resizes };
//! let output = node::step(&view, &container, &descriptors, running, 1_001);
//! assert!(matches!(&output.actions[..], [node::NodeAction::Load { .. }]));
//! for write in output.writes {
//!     submit(&mut kv, write.to_command());
//! }
//! ```

pub mod blueprint;
pub mod cluster;
pub mod duty;
pub mod lifecycle;
pub mod messaging;
pub mod node;
pub mod records;
pub mod rollout;
pub mod scaling;
pub mod schedule;
pub mod single_active;
mod text;
pub mod write;

pub use blueprint::{Blueprint, BlueprintError, BlueprintErrorKind};
pub use cluster::{lead, leadership, reconcile, ClusterState};
pub use lifecycle::{can_transition, DesiredState, SliceState};
pub use node::{ContainerState, NodeAction, NodeOutput, NodeState, SliceInfo};
pub use write::{KvWrite, Versioned};
