//! The rollout routes: start a rollout (`POST /api/rollouts`), list and show them (`GET /api/rollouts[/{id}]`),
//! and the operator's steps (`POST /api/rollouts/{id}/ratio|promote|complete|rollback`).
//!
//! A rollout is one record, `updates/{id}` (`control::rollout`); the leader does the rest (deploys the new
//! versions beside the old, walks automatic stages, rewrites the blueprint on completion, retires the new
//! versions on rollback). This module only decides whether a request may become or change such a record.
//!
//! Invariants:
//! - Every body is JSON of at most [`BODY_BYTES_MAX`] bytes (413 above) with no unknown fields (400).
//! - A rollout is created with one compare-and-set on the absence of its key, and each step is written at the
//!   version of the record it was computed from, so two operators, or an operator and the leader, never
//!   overwrite each other's step: the loser gets a 409.
//! - A new rollout moves bases that exactly one blueprint deploys, each at exactly one version, all in that
//!   same blueprint, to versions the artifact repository holds, and no base another active rollout moves.
//! - A record is checked when read (`Record::decode`) and again before it is written.

use crate::api::Backend;
use crate::error::ApiError;
use crate::kv::KvEntry;
use crate::server::{Request, Response};
use control::records::{BlueprintRecord, Record};
use control::rollout::{Approval, Move, Plan, Ratio, RolloutRecord, Stage, Strategy, Thresholds, ARTIFACTS_MAX};
use kvstore::{AetherKey, Artifact, ArtifactBase, Command, Name, Revision, SemVer};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Largest request body of any rollout route.
pub const BODY_BYTES_MAX: usize = 16 * 1024;
/// The highest suffix tried for a default id (`echo-2.0.0-2` ... `echo-2.0.0-99`).
const ID_SUFFIX_MAX: u32 = 99;
/// Longest rollback reason an operator may give, in characters (the record keeps at most
/// `control::rollout::REASON_BYTES_MAX` bytes of it).
const REASON_CHARS_MAX: usize = 512;
/// The reason of a rollback that gives none.
const ROLLBACK_REASON_DEFAULT: &str = "rolled back by an operator";

/// `{"artifact", "version"}`: one artifact to move and the version to move it to.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wanted {
    artifact: String,
    version: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StageBody {
    percent: u8,
    #[serde(default)]
    hold_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdsBody {
    max_error_rate: Option<f64>,
    max_p99_ms: Option<u64>,
    window_ms: Option<u64>,
    min_calls: Option<u64>,
}

/// `POST /api/rollouts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    artifact: Option<String>,
    version: Option<String>,
    artifacts: Option<Vec<Wanted>>,
    id: Option<String>,
    strategy: Option<Strategy>,
    instances: Option<u32>,
    stages: Option<Vec<StageBody>>,
    approval: Option<Approval>,
    thresholds: Option<ThresholdsBody>,
    keep_old_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RatioBody {
    new: u64,
    old: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    reason: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoFields {}

/// Answers the routes below `api/rollouts` (`rest` is the path after it).
pub fn route(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("GET", []) => list(backend),
        ("POST", []) => start(backend, &req.body),
        ("GET", [id]) => show(backend, id),
        ("POST", [id, action @ ("ratio" | "promote" | "complete" | "rollback")]) => {
            step(backend, id, action, &req.body)
        }
        _ => Err(crate::methods::unrouted(req)),
    }
}

/// The answer's JSON of a rollout: the record's own JSON plus `id` and `new_share`.
fn rollout_json(id: &str, record: &RolloutRecord) -> Value {
    let mut value =
        serde_json::to_value(record).unwrap_or_else(|e| json!({ "state": "UNREADABLE", "error": e.to_string() }));
    if let Value::Object(map) = &mut value {
        map.insert("id".into(), json!(id));
        map.insert("new_share".into(), json!(record.new_share()));
    }
    value
}

fn unreadable_json(id: &str, error: &str) -> Value {
    json!({ "id": id, "state": "UNREADABLE", "error": error })
}

/// A stored rollout: its id and its record, or why the record cannot be read.
type Stored = (String, Result<RolloutRecord, String>);

/// Every `updates/` entry, linearizably.
fn all(backend: &dyn Backend) -> Result<Vec<Stored>, ApiError> {
    let entries = backend.kv_list("updates/", false)?;
    Ok(entries
        .iter()
        .filter_map(|e| match e.key.parse::<AetherKey>() {
            Ok(AetherKey::Update { id }) => {
                Some((id.to_string(), RolloutRecord::decode(&e.value).map_err(|e| e.to_string())))
            }
            _ => None,
        })
        .collect())
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let mut rollouts = all(backend)?;
    rollouts.sort_by_key(|(id, r)| (r.as_ref().map_or(u64::MAX, |r| r.created_ms), id.clone()));
    let items: Vec<Value> = rollouts
        .iter()
        .map(|(id, r)| match r {
            Ok(record) => rollout_json(id, record),
            Err(e) => unreadable_json(id, e),
        })
        .collect();
    Ok(Response::ok(json!({ "rollouts": items })))
}

fn parse_id(id: &str) -> Result<Name, ApiError> {
    Name::parse(id).map_err(|e| ApiError::bad_request(format!("rollout id: {e}")))
}

/// The entry of rollout `id`, or 404.
fn entry(backend: &dyn Backend, id: &str) -> Result<(AetherKey, KvEntry), ApiError> {
    let key = AetherKey::Update { id: parse_id(id)? };
    match backend.kv_get(&key, false)? {
        Some(entry) => Ok((key, entry)),
        None => Err(ApiError::not_found(format!("no rollout '{id}'; GET /api/rollouts lists them"))),
    }
}

fn show(backend: &dyn Backend, id: &str) -> Result<Response, ApiError> {
    let (_, entry) = entry(backend, id)?;
    Ok(Response::ok(match RolloutRecord::decode(&entry.value) {
        Ok(record) => rollout_json(id, &record),
        Err(e) => unreadable_json(id, &e.to_string()),
    }))
}

/// The body as `T`: at most [`BODY_BYTES_MAX`] bytes (413), JSON of that shape (400). An empty body is
/// `T::default()` where `empty` gives one.
fn parse_body<T: DeserializeOwned>(body: &[u8], what: &str, empty: Option<T>) -> Result<T, ApiError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(ApiError::new(
            413,
            "too_large",
            format!("the body has {} bytes; a rollout request takes at most {BODY_BYTES_MAX}", body.len()),
        ));
    }
    if let Some(empty) = empty.filter(|_| body.is_empty()) {
        return Ok(empty);
    }
    let refuse = |e: serde_json::Error| ApiError::bad_request(format!("expected {what}: {e}"));
    // Parsed as a value first: serde would also take a struct from a JSON array of its fields.
    match serde_json::from_slice::<Value>(body).map_err(refuse)? {
        object @ Value::Object(_) => serde_json::from_value(object).map_err(refuse),
        _ => Err(ApiError::bad_request(format!("expected {what}: the body is not a JSON object"))),
    }
}

/// `POST /api/rollouts/{id}/{action}`: the operator's step applied to the record read, written at its version.
fn step(backend: &dyn Backend, id: &str, action: &str, body: &[u8]) -> Result<Response, ApiError> {
    let (key, entry) = entry(backend, id)?;
    let now = now_ms();
    let record = RolloutRecord::decode(&entry.value)
        .map_err(|e| ApiError::new(409, "conflict", format!("rollout '{id}' cannot be read: {e}")))?;
    let next = match action {
        "ratio" => {
            let weights: RatioBody = parse_body(body, "{\"new\": WEIGHT, \"old\": WEIGHT}", None)?;
            let ratio = Ratio::from_weights(weights.new, weights.old).map_err(ApiError::bad_request)?;
            record.set_ratio(ratio, now)
        }
        "promote" => parse_body(body, "no body", Some(NoFields {})).map(|_| record.promote(now))?,
        "complete" => parse_body(body, "no body", Some(NoFields {})).map(|_| record.complete(now))?,
        _ => record.rollback(&rollback_reason(body)?, now),
    }
    .map_err(|refused| ApiError::new(409, "conflict", refused.0))?;
    next.check()
        .map_err(|e| ApiError::new(500, "internal", format!("the {action} of rollout '{id}' is inconsistent: {e}")))?;
    let command = Command::CompareAndSet { key, expected: Some(Revision(entry.version)), value: next.encode() };
    backend.kv_write(command).map_err(|e| raced(e, "the rollout changed meanwhile; try again"))?;
    Ok(Response::ok(rollout_json(id, &next)))
}

fn rollback_reason(body: &[u8]) -> Result<String, ApiError> {
    let parsed: RollbackBody = parse_body(body, "{\"reason\": \"...\"}", Some(RollbackBody::default()))?;
    let reason = parsed.reason.unwrap_or_else(|| ROLLBACK_REASON_DEFAULT.to_owned());
    let chars = reason.chars().count();
    if chars > REASON_CHARS_MAX {
        return Err(ApiError::bad_request(format!("reason of {chars} characters, over {REASON_CHARS_MAX}")));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request("reason must not hold control characters"));
    }
    Ok(reason)
}

/// A version conflict of a write (409) as `detail` says; any other error as it is.
fn raced(error: ApiError, detail: &str) -> ApiError {
    if error.status == 409 {
        ApiError::new(409, "conflict", detail)
    } else {
        error
    }
}

/// `POST /api/rollouts`.
fn start(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let body: StartBody = parse_body(body, "a rollout (see POST /api/rollouts in /api/openapi.yaml)", None)?;
    let wanted = wanted(&body)?;
    let existing = all(backend)?;
    refuse_moving(&existing, &wanted)?;
    let (blueprint, moves) = owner(backend, &wanted)?;
    for moved in &moves {
        require_known(backend, moved)?;
    }
    let first = moves.first().ok_or_else(|| ApiError::bad_request("a rollout moves at least one artifact"))?;
    let id = choose_id(&existing, body.id.as_deref(), first)?;
    let plan = Plan {
        artifacts: moves,
        blueprint,
        strategy: body.strategy.unwrap_or_default(),
        instances: body.instances.unwrap_or(0),
        stages: body.stages.map(|s| s.iter().map(|s| Stage { percent: s.percent, hold_ms: s.hold_ms }).collect()),
        approval: body.approval,
        thresholds: thresholds(body.thresholds),
        keep_old_ms: body.keep_old_ms,
    };
    let record = RolloutRecord::start(plan, now_ms()).map_err(ApiError::bad_request)?;
    let key = AetherKey::Update { id: id.clone() };
    let command = Command::CompareAndSet { key, expected: None, value: record.encode() };
    let detail = format!("rollout '{id}' was created meanwhile; give another id or try again");
    backend.kv_write(command).map_err(|e| raced(e, &detail))?;
    let location = format!("/api/rollouts/{id}");
    Ok(Response::new(201, rollout_json(id.as_str(), &record)).with_header("Location", location))
}

/// The artifacts of the body as `(base, to)`: exactly one of `artifact` (with `version`) and `artifacts`,
/// 1 to [`ARTIFACTS_MAX`] of them, each base once.
fn wanted(body: &StartBody) -> Result<Vec<(ArtifactBase, SemVer)>, ApiError> {
    let pairs: Vec<(&str, &str)> = match (&body.artifact, &body.version, &body.artifacts) {
        (Some(artifact), Some(version), None) => vec![(artifact.as_str(), version.as_str())],
        (None, None, Some(list)) => list.iter().map(|w| (w.artifact.as_str(), w.version.as_str())).collect(),
        (Some(_), None, None) => return Err(ApiError::bad_request("`artifact` needs its `version`")),
        (None, Some(_), None) => return Err(ApiError::bad_request("`version` needs its `artifact`")),
        (None, None, None) => {
            return Err(ApiError::bad_request("name the artifact: `artifact` and `version`, or `artifacts`"))
        }
        _ => return Err(ApiError::bad_request("give either `artifact` with `version`, or `artifacts`, not both")),
    };
    if pairs.is_empty() || pairs.len() > ARTIFACTS_MAX {
        return Err(ApiError::bad_request(format!(
            "a rollout moves 1 to {ARTIFACTS_MAX} artifacts, not {}",
            pairs.len()
        )));
    }
    let mut out: Vec<(ArtifactBase, SemVer)> = Vec::with_capacity(pairs.len());
    for (i, (artifact, version)) in pairs.into_iter().enumerate() {
        let base = ArtifactBase::parse(artifact).map_err(|e| ApiError::bad_request(format!("artifacts[{i}]: {e}")))?;
        let version = SemVer::parse(version).map_err(|e| ApiError::bad_request(format!("artifacts[{i}]: {e}")))?;
        if out.iter().any(|(b, _)| *b == base) {
            return Err(ApiError::bad_request(format!("{base} is named twice")));
        }
        out.push((base, version));
    }
    Ok(out)
}

/// Refuses a rollout of a base an active rollout already moves.
fn refuse_moving(existing: &[Stored], wanted: &[(ArtifactBase, SemVer)]) -> Result<(), ApiError> {
    for (id, record) in existing {
        let Ok(record) = record else { continue };
        if !record.state.active() {
            continue;
        }
        if let Some((base, _)) = wanted.iter().find(|(base, _)| record.moving(base).is_some()) {
            return Err(ApiError::new(
                409,
                "conflict",
                format!("rollout '{id}' ({}) already moves {base}; complete it or roll it back first", record.state),
            ));
        }
    }
    Ok(())
}

/// The one blueprint deploying every wanted base, and the moves from the version it deploys.
fn owner(backend: &dyn Backend, wanted: &[(ArtifactBase, SemVer)]) -> Result<(Name, Vec<Move>), ApiError> {
    let blueprints: Vec<BlueprintRecord> = (backend.kv_list("blueprints/", false)?.iter())
        .filter_map(|e| BlueprintRecord::decode(&e.value).ok())
        .collect();
    let mut owner: Option<(&Name, &ArtifactBase)> = None;
    let mut moves = Vec::with_capacity(wanted.len());
    for (base, to) in wanted {
        let (name, from) = deployed(&blueprints, base)?;
        match owner {
            None => owner = Some((name, base)),
            Some((first, first_base)) if first != name => {
                let detail = format!(
                    "the artifacts of one rollout must be deployed by one blueprint: {first_base} by '{first}', \
                     {base} by '{name}'"
                );
                return Err(ApiError::new(409, "conflict", detail));
            }
            Some(_) => {}
        }
        if from.version() == to {
            return Err(ApiError::new(409, "conflict", format!("{base} is deployed at {to} already")));
        }
        moves.push(Move { base: base.clone(), from: from.version().to_string(), to: to.to_string() });
    }
    let (name, _) = owner.ok_or_else(|| ApiError::bad_request("a rollout moves at least one artifact"))?;
    Ok((name.clone(), moves))
}

/// The blueprint and artifact deploying `base`: exactly one version of it, in exactly one blueprint.
fn deployed<'b>(blueprints: &'b [BlueprintRecord], base: &ArtifactBase) -> Result<(&'b Name, &'b Artifact), ApiError> {
    let found: Vec<(&Name, &Artifact)> = blueprints
        .iter()
        .flat_map(|r| r.blueprint.slices.iter().map(move |s| (&r.blueprint.name, &s.artifact)))
        .filter(|(_, a)| a.base() == base)
        .collect();
    match found.as_slice() {
        [one] => Ok(*one),
        [] => Err(ApiError::new(
            409,
            "conflict",
            format!("no blueprint deploys {base}; a rollout changes the version of a deployed artifact"),
        )),
        many => {
            let named: Vec<String> = many.iter().map(|(n, a)| format!("{a} by '{n}'")).collect();
            Err(ApiError::new(
                409,
                "conflict",
                format!(
                    "{base} is deployed at more than one version ({}); a rollout needs exactly one",
                    named.join(", ")
                ),
            ))
        }
    }
}

/// Refuses a `to` version the artifact repository does not hold (the check `POST /api/blueprints` makes).
fn require_known(backend: &dyn Backend, moved: &Move) -> Result<(), ApiError> {
    let to = moved.to_artifact().ok_or_else(|| ApiError::bad_request(format!("{}: bad version", moved.base)))?;
    if backend.artifact_known(&to) {
        return Ok(());
    }
    Err(ApiError::not_found(format!("{to} is not in the artifact repository; upload it first (PUT /repository/...)")))
}

/// The id of the new rollout: the one given (409 if taken), else `{artifact}-{version}` of the first move,
/// then `-2` ... `-99` after it while taken.
fn choose_id(existing: &[Stored], given: Option<&str>, first: &Move) -> Result<Name, ApiError> {
    let taken: BTreeSet<&str> = existing.iter().map(|(id, _)| id.as_str()).collect();
    if let Some(given) = given {
        let id = parse_id(given)?;
        if taken.contains(id.as_str()) {
            return Err(ApiError::new(409, "conflict", format!("rollout '{id}' exists already; give another id")));
        }
        return Ok(id);
    }
    let stem = default_stem(first);
    let candidates = std::iter::once(stem.clone()).chain((2..=ID_SUFFIX_MAX).map(|n| format!("{stem}-{n}")));
    for candidate in candidates {
        if !taken.contains(candidate.as_str()) {
            return parse_id(&candidate);
        }
    }
    Err(ApiError::new(
        409,
        "conflict",
        format!("rollout ids '{stem}' to '{stem}-{ID_SUFFIX_MAX}' are all taken; give an id"),
    ))
}

/// `{artifact name}-{version}` with any character a name may not hold as `-`, short enough for a suffix.
fn default_stem(first: &Move) -> String {
    let raw = format!("{}-{}", first.base.artifact(), first.to);
    let clean: String = raw.chars().map(|c| if u8::try_from(c).is_ok_and(name_char) { c } else { '-' }).collect();
    // Every character is ASCII now, so cutting at a byte count cuts at a character.
    clean[..clean.len().min(kvstore::NAME_BYTES_MAX - 3)].to_owned()
}

/// The characters of a `kvstore::Name` (as `vocab::name::is_name_char`; `parse_id` checks the result).
fn name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':')
}

fn thresholds(body: Option<ThresholdsBody>) -> Thresholds {
    let defaults = Thresholds::default();
    let Some(t) = body else { return defaults };
    Thresholds {
        max_error_rate: t.max_error_rate,
        max_p99_ms: t.max_p99_ms,
        window_ms: t.window_ms.unwrap_or(defaults.window_ms),
        min_calls: t.min_calls.unwrap_or(defaults.min_calls),
    }
}

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
