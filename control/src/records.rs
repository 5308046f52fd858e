//! The JSON values stored under the deployment keys, so operators can read them through the KV API.
//!
//! - `blueprints/{name}`: [`BlueprintRecord`], the TOML text and its parsed form; written by the management
//!   API.
//! - `targets/{artifact}`: [`TargetRecord`], the owning blueprint, instances, min_instances, depends_on,
//!   config and the start failures counted against the artifact (absent while there are none); written by the
//!   leader.
//! - `slices/{node}/{artifact}`: [`SliceRecord`], desired (leader), state (node), since_ms, instance, error,
//!   config and, while FAILED, the state it failed in; created by the leader, moved along the lifecycle and finally removed by the node.
//! - `endpoints/{artifact}/{method}/{node}:{instance}`: [`EndpointRecord`], node and instance; written by the
//!   node, stale ones removed by the leader too.
//! - `routes/{METHOD}/{path}`: [`RouteRecord`], the artifact and slice method serving the route; created by
//!   nodes, removed by the leader.
//! - `nodes/{node}/lease`: [`LeaseRecord`], a counter the node raises through consensus about every second;
//!   only its version matters to others (see `cluster::liveness`).
//! - `nodes/leader`: [`LeaderRecord`], the node that leads the control plane; claimed by compare-and-set.
//! - `nodes/{node}/lifecycle`: `duty::DutyRecord` (in its own module), the node's lifecycle state.
//!
//! Examples, in the same order:
//!
//! ```json
//! {"toml":"name = \"shop\"\n...","blueprint":{"name":"shop","slices":[...],"order":[...]}}
//! {"blueprint":"shop","instances":2,"min_instances":1,"depends_on":["org.example:inventory:1.0.0"],
//!  "config":{"currency":"EUR"}}
//! {"desired":"ACTIVE","state":"LOADING","since_ms":1700000000000,"instance":0,"error":null,
//!  "config":{"currency":"EUR"}}
//! {"node":"node-1","instance":0}
//! {"artifact":"org.example:orders:1.0.0","method":"place_order"}
//! {"counter":42}
//! {"node":"node-1"}
//! ```
//!
//! Decoding any bytes returns a value or a [`RecordError`], never panics. Unknown JSON fields are ignored, so
//! a newer node can add fields that an older one still reads. A blueprint record is checked beyond its JSON
//! shape: its TOML text is parsed again and must give the stored parsed form.

use crate::blueprint::{self, Blueprint};
pub use crate::cluster::StartFailures;
use crate::lifecycle::{DesiredState, SliceState};
use kvstore::{Artifact, Name, NodeId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Longest failure reason kept in a slice record, in bytes; longer ones are cut.
pub const ERROR_BYTES_MAX: usize = 1024;

/// A stored value that is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordError {
    /// Which record kind was expected (`"slice record"`).
    pub record: &'static str,
    pub reason: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.record, self.reason)
    }
}

impl std::error::Error for RecordError {}

/// JSON encoding shared by every record.
pub trait Record: Serialize + DeserializeOwned {
    /// Names the record kind in errors.
    const KIND: &'static str;

    fn encode(&self) -> Vec<u8> {
        // Records hold strings, integers and string-keyed maps only, which always serialize.
        serde_json::to_vec(self).expect("records serialize infallibly")
    }

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        serde_json::from_slice(bytes).map_err(|e| RecordError { record: Self::KIND, reason: e.to_string() })
    }
}

/// `blueprints/{name}`: what the operator submitted, and what it means.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlueprintRecord {
    /// The TOML text as submitted.
    pub toml: String,
    pub blueprint: Blueprint,
}

impl Record for BlueprintRecord {
    const KIND: &'static str = "blueprint record";

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: BlueprintRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError { record: Self::KIND, reason: e.to_string() })?;
        let reparsed = blueprint::parse(&record.toml, &|_| true)
            .map_err(|e| RecordError { record: Self::KIND, reason: format!("stored TOML: {e}") })?;
        if reparsed != record.blueprint {
            let reason = "the parsed form does not match the stored TOML".to_owned();
            return Err(RecordError { record: Self::KIND, reason });
        }
        Ok(record)
    }
}

/// `targets/{artifact}`: how many instances of one artifact the cluster should run, derived by the leader from
/// the blueprint that owns the artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    #[serde(with = "crate::text")]
    pub blueprint: Name,
    pub instances: u32,
    pub min_instances: u32,
    /// The disruption budget: ACTIVE instances a node drain keeps (0 in records written before it existed:
    /// the leader rewrites the target with the blueprint's value).
    #[serde(default)]
    pub min_available: u32,
    /// The most instances scaling may set (0 in records written before it existed: `instances`).
    #[serde(default)]
    pub max_instances: u32,
    /// Whether the scaling controller sets `instances` by load.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub autoscale: bool,
    /// Most instances one node runs (1 in records written before it existed).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub max_per_node: u32,
    /// An old version kept serving until its successor serves: no longer wanted, so calls prefer the
    /// successor, but its instances still read their target (slice state, selection, config).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retiring: bool,
    #[serde(with = "crate::text::seq")]
    pub depends_on: Vec<Artifact>,
    pub config: Map<String, Value>,
    /// Start failures counted against the artifact, its backoff and its quarantine; kept by the leader.
    #[serde(default, skip_serializing_if = "StartFailures::is_clear")]
    pub failures: StartFailures,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Record for TargetRecord {
    const KIND: &'static str = "target record";
}

/// `artifacts/{artifact}`: the repository's catalog entry for one uploaded version. Its bytes are in the
/// DHT as `ceil(size / dht::CHUNK_BYTES)` chunks under `artifact/{artifact}/{sha256}/{upload}/{index}`; this record,
/// written through consensus after every chunk has a write quorum, is what makes the version exist. A
/// release version's record is created once (compare-and-set on absence); a `-SNAPSHOT` version's may be
/// replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub size: u64,
    /// Lower-case hex digests of the whole library.
    pub sha256: String,
    pub sha1: String,
    pub md5: String,
    /// The ed25519 signature (hex) the upload carried, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub uploaded_ms: u64,
    /// The node that took the upload.
    pub node: String,
    /// The upload's own id (`{node}.{uploaded_ms}.{n}`), part of its chunks' keys: no two uploads ever write
    /// the same chunk key, so a delete of one upload's chunks (a replaced `-SNAPSHOT`, a deleted version, a
    /// lost race) can never meet another upload's writes of the same bytes.
    #[serde(default)]
    pub upload: String,
}

impl Record for ArtifactRecord {
    const KIND: &'static str = "artifact record";
}

/// `slices/{node}/{artifact}`: one instance of a slice on one node.
///
/// The leader creates the record (`state` LOAD) and afterwards only changes `desired`; the node moves `state`
/// along the lifecycle towards `desired`, and removes the record once the slice is unloaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SliceRecord {
    pub desired: DesiredState,
    pub state: SliceState,
    /// When `state` was entered, in milliseconds of the writer's clock.
    pub since_ms: u64,
    /// Instance number, unique among the artifact's records; part of the endpoint keys.
    pub instance: u32,
    /// How many instances of the slice the record stands for on its node (1 unless the target's
    /// `max_per_node` allows more): the node runs them as separate copies of the library, and calls to the
    /// node's endpoints take turns among them. Set by the leader; the node follows it while ACTIVE.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub copies: u32,
    /// The copies the node runs, as it last wrote it while ACTIVE (`None`: one). What serves is the lower of
    /// this and `copies` ([`SliceRecord::serving_copies`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u32>,
    /// Why the node could not start every copy `copies` asks for (cut to [`ERROR_BYTES_MAX`]); the copies
    /// that run serve on. Cleared once `copies` run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies_refused: Option<String>,
    /// Why the slice failed; kept through UNLOAD so operators can read it until the record goes.
    #[serde(default)]
    pub error: Option<String>,
    /// The slice's configuration, copied from its target when the record was placed.
    #[serde(default)]
    pub config: Map<String, Value>,
    /// The state the record failed in, while it is FAILED (so the leader can tell a failed start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_in: Option<SliceState>,
    /// The last config the blueprint asked for that the running slice refused (its `reconfigure` hook
    /// returned an error), and the slice's reason; `config` stays the one it runs with. Cleared when a later
    /// config is accepted or the blueprint goes back to the running one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_refused: Option<ConfigRefusal>,
}

/// A config the running slice refused, with its reason (cut to [`ERROR_BYTES_MAX`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigRefusal {
    pub config: Map<String, Value>,
    pub reason: String,
}

impl ConfigRefusal {
    pub fn new(config: Map<String, Value>, reason: &str) -> ConfigRefusal {
        ConfigRefusal { config, reason: cut(reason, ERROR_BYTES_MAX) }
    }
}

impl Record for SliceRecord {
    const KIND: &'static str = "slice record";
}

impl SliceRecord {
    /// A record as the leader places it: wanted ACTIVE, in LOAD since `since_ms`, one copy, with the target's
    /// config.
    pub fn placed(instance: u32, config: Map<String, Value>, since_ms: u64) -> SliceRecord {
        SliceRecord {
            desired: DesiredState::Active,
            state: SliceState::Load,
            since_ms,
            instance,
            copies: 1,
            running: None,
            copies_refused: None,
            error: None,
            config,
            failed_in: None,
            config_refused: None,
        }
    }

    /// The instances that serve while the record is ACTIVE: what its node runs, at most what it asks for.
    pub fn serving_copies(&self) -> u32 {
        self.copies.max(1).min(self.running.unwrap_or(1).max(1))
    }

    /// The instances the record counts for placement: `copies` (a starting copy counts, so it is not placed
    /// twice), or what runs when the node could not start them all.
    pub fn placed_copies(&self) -> u32 {
        match self.copies_refused {
            Some(_) => self.serving_copies(),
            None => self.copies.max(1),
        }
    }

    /// `reason` cut to what a record keeps.
    pub fn reason(reason: &str) -> String {
        cut(reason, ERROR_BYTES_MAX)
    }

    /// The record moved to `state` at `now_ms`.
    pub fn entering(&self, state: SliceState, now_ms: u64) -> SliceRecord {
        SliceRecord { state, since_ms: now_ms, ..self.clone() }
    }

    /// The record moved to FAILED with `reason` (cut to [`ERROR_BYTES_MAX`]), unless it already holds the cause
    /// of an earlier failure: a record that failed is only cleaned up afterwards (UNLOAD), so a later failure
    /// is a consequence, and the first cause is what operators must read. `failed_in` is the state of this
    /// failure (the leader counts start failures by it).
    pub fn failing(&self, reason: &str, now_ms: u64) -> SliceRecord {
        let failed_in = Some(self.state);
        let error = match &self.error {
            Some(cause) => cause.clone(),
            None => cut(reason, ERROR_BYTES_MAX),
        };
        SliceRecord { error: Some(error), failed_in, ..self.entering(SliceState::Failed, now_ms) }
    }
}

fn cut(text: &str, bytes_max: usize) -> String {
    if text.len() <= bytes_max {
        return text.to_owned();
    }
    let end = (0..=bytes_max).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    format!("{}...", &text[..end])
}

/// `endpoints/{artifact}/{method}/{node}:{instance}`: a callable slice method instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    #[serde(with = "crate::text")]
    pub node: NodeId,
    pub instance: u32,
}

impl Record for EndpointRecord {
    const KIND: &'static str = "endpoint record";
}

/// `routes/{METHOD}/{path}`: which artifact and slice method serve an HTTP route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    #[serde(with = "crate::text")]
    pub artifact: Artifact,
    #[serde(with = "crate::text")]
    pub method: Name,
}

impl Record for RouteRecord {
    const KIND: &'static str = "route record";
}

/// `nodes/{node}/lease`: the node's liveness lease. The node raises `counter` at each renewal; readers judge
/// liveness by the key's version changing, never by the value or a clock in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub counter: u64,
}

impl Record for LeaseRecord {
    const KIND: &'static str = "lease record";
}

/// `nodes/leader`: the node that runs the cluster-wide managers. Every write the leader makes is conditional
/// on this record's version, so a deposed leader's late writes fail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    #[serde(with = "crate::text")]
    pub node: NodeId,
}

impl Record for LeaderRecord {
    const KIND: &'static str = "leader record";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slice_record() -> SliceRecord {
        SliceRecord { state: SliceState::Loading, ..SliceRecord::placed(1, Map::new(), 42) }
    }

    #[test]
    fn slice_records_have_the_documented_shape() {
        let json: Value = serde_json::from_slice(&slice_record().encode()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"desired": "ACTIVE", "state": "LOADING", "since_ms": 42, "instance": 1,
                "error": null, "config": {}})
        );
    }

    #[test]
    fn every_record_round_trips() {
        let record = slice_record().failing("boom", 50);
        assert_eq!(SliceRecord::decode(&record.encode()).unwrap(), record);
        let endpoint = EndpointRecord { node: NodeId::parse("node-1").unwrap(), instance: 3 };
        assert_eq!(EndpointRecord::decode(&endpoint.encode()).unwrap(), endpoint);
        let route =
            RouteRecord { artifact: Artifact::parse("g:a:1.0.0").unwrap(), method: Name::parse("get").unwrap() };
        assert_eq!(RouteRecord::decode(&route.encode()).unwrap(), route);
        let target = TargetRecord {
            blueprint: Name::parse("shop").unwrap(),
            instances: 2,
            min_instances: 1,
            min_available: 1,
            max_instances: 4,
            autoscale: true,
            max_per_node: 3,
            retiring: false,
            depends_on: vec![Artifact::parse("g:b:1.0.0").unwrap()],
            config: Map::new(),
            failures: StartFailures::default(),
        };
        assert_eq!(TargetRecord::decode(&target.encode()).unwrap(), target);
        let lease = LeaseRecord { counter: 42 };
        assert_eq!(serde_json::from_slice::<Value>(&lease.encode()).unwrap(), serde_json::json!({"counter": 42}));
        assert_eq!(LeaseRecord::decode(&lease.encode()).unwrap(), lease);
        let leader = LeaderRecord { node: NodeId::parse("node-1").unwrap() };
        assert_eq!(LeaderRecord::decode(&leader.encode()).unwrap(), leader);
    }

    #[test]
    fn blueprint_records_are_checked_against_their_text() {
        let toml = "name = \"shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n".to_owned();
        let blueprint = blueprint::parse(&toml, &|_| true).unwrap();
        let record = BlueprintRecord { toml: toml.clone(), blueprint: blueprint.clone() };
        assert_eq!(BlueprintRecord::decode(&record.encode()).unwrap(), record);
        let mut tampered = blueprint;
        tampered.slices[0].instances = 7;
        let bad = BlueprintRecord { toml, blueprint: tampered };
        assert!(BlueprintRecord::decode(&bad.encode()).is_err());
    }

    #[test]
    fn the_largest_blueprint_record_fits_one_kv_value() {
        // Quotes cost the most: escaped once in TOML, and again when the TOML text is stored as a JSON string.
        let mut toml = "name = \"big\"\n".to_owned();
        let value = format!("\"{}\"", "\\\"".repeat(1000));
        for slice in 0.. {
            let entry = format!("[[slices]]\nartifact = \"g:s{slice}:1.0.0\"\n[slices.config]\nk = {value}\n");
            if toml.len() + entry.len() > blueprint::BLUEPRINT_BYTES_MAX {
                break;
            }
            toml += &entry;
        }
        let blueprint = blueprint::parse(&toml, &|_| true).unwrap();
        let bytes = BlueprintRecord { toml, blueprint }.encode();
        assert!(bytes.len() <= kvstore::VALUE_BYTES_MAX, "{} bytes", bytes.len());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"{", b"null", b"[]", b"{\"desired\":\"SOON\"}", b"\xff\xfe"] {
            assert!(SliceRecord::decode(bytes).is_err());
            assert!(BlueprintRecord::decode(bytes).is_err());
            assert!(RouteRecord::decode(bytes).is_err());
        }
        let bad_artifact = br#"{"artifact":"nope","method":"get"}"#;
        assert!(RouteRecord::decode(bad_artifact).unwrap_err().reason.contains("artifact"));
    }

    #[test]
    fn a_later_failure_keeps_the_first_cause() {
        let started = slice_record().entering(SliceState::Activating, 50);
        let failed = started.failing("org.example:a:1.0.0: start failed: no database", 60);
        let unloading = SliceRecord { desired: DesiredState::Unloaded, ..failed.clone() }
            .entering(SliceState::Unload, 70)
            .entering(SliceState::Unloading, 80);
        let again = unloading.failing("the container reports loaded during UNLOADING", 90);
        assert_eq!(again.error, failed.error);
        assert_eq!(
            (again.state, again.failed_in, again.since_ms),
            (SliceState::Failed, Some(SliceState::Unloading), 90)
        );
    }

    #[test]
    fn long_errors_are_cut_on_a_char_boundary() {
        let record = slice_record().failing(&"é".repeat(ERROR_BYTES_MAX), 1);
        let error = record.error.unwrap();
        assert!(error.len() <= ERROR_BYTES_MAX + 3);
        assert!(error.ends_with("..."));
    }
}
