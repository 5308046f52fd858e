//! The scaling routes: an operator's instance count for a slice (`POST /api/scale`, `DELETE
//! /api/scale/{artifact}`, `GET /api/scale`) and the controller's thresholds (`GET|POST
//! /api/controller/config`). What the records mean is in `control::scaling`.
//!
//! - `POST /api/scale {"artifact": "group:artifact", "instances": N, "reason"?}`: the slice must be deployed
//!   by a blueprint (404 otherwise) and `N` within its `min_instances..=max_instances` (409 otherwise: the
//!   floor and the ceiling are the blueprint's). One compare-and-set of `scaling/{artifact-base}` at the
//!   version read; a lost race is 409. For a slice with `autoscale` on, the controller goes on from there.
//! - `DELETE /api/scale/{artifact}`: the blueprint's count applies again (404 when no scale is set).
//! - `POST /api/controller/config`: the fields given replace the stored (or default) ones; the result is
//!   checked (`ScalingConfig::check`) and written as `thresholds/scaling`.
//!
//! Bodies are at most [`BODY_BYTES_MAX`] bytes of JSON with no unknown fields. Reads are stale (this node's
//! applied state).

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::Response;
use control::blueprint::SliceSpec;
use control::records::{BlueprintRecord, Record, TargetRecord};
use control::scaling::{ScaleRecord, ScaledBy, ScalingConfig, REASON_BYTES_MAX};
use kvstore::{AetherKey, Artifact, ArtifactBase, Command, Name, Revision};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Largest request body: room for the longest fields the contract allows (512 characters each), even when a
/// client escapes every character as a `\uXXXX` surrogate pair (12 bytes).
pub const BODY_BYTES_MAX: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    artifact: String,
    instances: u32,
    reason: Option<String>,
}

fn config_key() -> AetherKey {
    AetherKey::Threshold { metric: Name::parse("scaling").expect("a valid name") }
}

/// Answers `api/scale[/..]` (`rest` after `scale`).
pub fn scale_route(backend: &dyn Backend, method: &str, rest: &[&str], body: &[u8]) -> Result<Response, ApiError> {
    match (method, rest) {
        ("GET", []) => list(backend),
        ("POST", []) => set(backend, body),
        ("DELETE", [artifact]) => clear(backend, artifact),
        _ => Err(ApiError::not_found("use GET|POST /api/scale or DELETE /api/scale/{group:artifact}")),
    }
}

/// Answers `api/controller/config`.
pub fn config_route(backend: &dyn Backend, method: &str, body: &[u8]) -> Result<Response, ApiError> {
    match method {
        "GET" => {
            let (config, stored) = current_config(backend)?;
            Ok(Response::ok(json!({ "scaling": config_json(&config), "stored": stored.is_some() })))
        }
        _ => set_config(backend, body),
    }
}

fn base_of(text: &str) -> Result<ArtifactBase, ApiError> {
    ArtifactBase::parse(text)
        .or_else(|_| Artifact::parse(text).map(|a| a.base().clone()))
        .map_err(|e| ApiError::bad_request(format!("artifact '{text}': {e}; expected group:artifact")))
}

/// The blueprint that deploys `base`, and its slice.
fn deployed(backend: &dyn Backend, base: &ArtifactBase) -> Result<(Name, SliceSpec), ApiError> {
    for entry in backend.kv_list("blueprints/", true)? {
        let Ok(record) = BlueprintRecord::decode(&entry.value) else { continue };
        if let Some(spec) = record.blueprint.slices.iter().find(|s| s.artifact.base() == base) {
            return Ok((record.blueprint.name.clone(), spec.clone()));
        }
    }
    Err(ApiError::not_found(format!("no blueprint deploys {base}; scale applies to deployed slices")))
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, ApiError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(ApiError::new(413, "payload_too_large", format!("body over {BODY_BYTES_MAX} bytes")));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("expected {shape}: {e}")))
}

fn set(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let body: ScaleBody = parse(body, "{\"artifact\": \"group:artifact\", \"instances\": N}")?;
    let base = base_of(&body.artifact)?;
    let (blueprint, spec) = deployed(backend, &base)?;
    let (min, max) = (spec.min_instances.max(1), spec.max_instances());
    if body.instances < min || body.instances > max {
        let detail = format!(
            "{base} runs {min} to {max} instances (the blueprint {blueprint}'s min_instances and max_instances); {} \
             is outside",
            body.instances
        );
        return Err(ApiError::new(409, "out_of_bounds", detail));
    }
    let reason = body.reason.unwrap_or_else(|| "set by an operator".to_owned());
    if reason.len() > REASON_BYTES_MAX {
        return Err(ApiError::bad_request(format!("reason over {REASON_BYTES_MAX} bytes")));
    }
    if reason.chars().any(char::is_control) {
        return Err(ApiError::bad_request("reason must not hold control characters"));
    }
    let key = AetherKey::Scale { base: base.clone() };
    let current = backend.kv_get(&key, true)?;
    let record = ScaleRecord {
        instances: body.instances,
        by: ScaledBy::Operator,
        reason,
        since_ms: now_ms(),
        blueprint: blueprint.clone(),
        blueprint_instances: spec.instances,
    };
    let expected = current.map(|e| Revision(e.version));
    backend.kv_write(Command::CompareAndSet { key, expected, value: record.encode() })?;
    let note = if spec.autoscale {
        "set; the slice is autoscaled, so the controller may change it again"
    } else {
        "set; the leader places or retires instances to match"
    };
    Ok(Response::ok(json!({
        "artifact": base.to_string(), "instances": body.instances, "blueprint": blueprint.to_string(),
        "min_instances": min, "max_instances": max, "autoscale": spec.autoscale, "note": note,
    })))
}

fn clear(backend: &dyn Backend, artifact: &str) -> Result<Response, ApiError> {
    let base = base_of(artifact)?;
    let key = AetherKey::Scale { base: base.clone() };
    let Some(current) = backend.kv_get(&key, true)? else {
        return Err(ApiError::not_found(format!("no scale is set for {base}")));
    };
    backend.kv_write(Command::CompareAndRemove { key, expected: Revision(current.version) })?;
    Ok(Response::ok(json!({ "artifact": base.to_string(), "note": "the blueprint's instance count applies again" })))
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let targets: Vec<(Artifact, TargetRecord)> = backend
        .kv_list("targets/", true)?
        .into_iter()
        .filter_map(|e| match e.key.parse::<AetherKey>() {
            Ok(AetherKey::Target { artifact }) => Some((artifact, TargetRecord::decode(&e.value).ok()?)),
            _ => None,
        })
        .collect();
    let mut scales = Vec::new();
    for entry in backend.kv_list("scaling/", true)? {
        let Ok(AetherKey::Scale { base }) = entry.key.parse::<AetherKey>() else { continue };
        let running = targets.iter().find(|(a, _)| a.base() == &base).map(|(_, t)| t.instances);
        scales.push(match ScaleRecord::decode(&entry.value) {
            Ok(r) => json!({
                "artifact": base.to_string(), "instances": r.instances, "by": r.by, "reason": r.reason,
                "since_ms": r.since_ms, "blueprint": r.blueprint.to_string(), "running": running,
            }),
            Err(e) => json!({ "artifact": base.to_string(), "error": e.to_string() }),
        });
    }
    Ok(Response::ok(json!({ "scales": scales })))
}

fn current_config(backend: &dyn Backend) -> Result<(ScalingConfig, Option<Revision>), ApiError> {
    Ok(match backend.kv_get(&config_key(), true)? {
        Some(entry) => (ScalingConfig::decode(&entry.value).unwrap_or_default(), Some(Revision(entry.version))),
        None => (ScalingConfig::default(), None),
    })
}

fn config_json(config: &ScalingConfig) -> Value {
    serde_json::to_value(config).unwrap_or(Value::Null)
}

fn set_config(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let changes: Map<String, Value> = parse(body, "a JSON object of scaling thresholds")?;
    let (config, version) = current_config(backend)?;
    let mut merged = match config_json(&config) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    merged.extend(changes);
    let bytes = serde_json::to_vec(&Value::Object(merged)).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let config = ScalingConfig::decode(&bytes).map_err(|e| ApiError::bad_request(e.reason))?;
    backend.kv_write(Command::CompareAndSet { key: config_key(), expected: version, value: config.encode() })?;
    Ok(Response::ok(json!({ "scaling": config_json(&config), "stored": true })))
}

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use crate::test_backend::StoreBackend;

    fn deployed() -> StoreBackend {
        let toml =
            "name = \"shop\"\n[[slices]]\nartifact = \"org.example:a:1.0.0\"\ninstances = 2\nmax_instances = 4\n";
        let parsed = control::blueprint::parse(toml, &|_| true).unwrap();
        let record = control::records::BlueprintRecord { toml: toml.to_owned(), blueprint: parsed };
        let value = String::from_utf8(control::records::Record::encode(&record)).unwrap();
        StoreBackend::with(&[("blueprints/shop", &value)])
    }

    fn body(response: &crate::server::Response) -> serde_json::Value {
        response.body.clone()
    }

    #[test]
    fn a_scale_is_bounded_by_the_blueprint_and_can_be_cleared() {
        let backend = deployed();
        let set = backend.call("POST", "api/scale", r#"{"artifact": "org.example:a", "instances": 3}"#);
        assert_eq!(set.status, 200, "{:?}", body(&set));
        assert!(backend.kv.lock().unwrap().get(&"scaling/org.example:a".parse().unwrap()).is_some());
        let listed = body(&backend.call("GET", "api/scale", ""));
        assert_eq!(listed["scales"][0]["instances"], 3);
        for (instances, status) in [(5, 409), (0, 409)] {
            let body = format!(r#"{{"artifact": "org.example:a:1.0.0", "instances": {instances}}}"#);
            assert_eq!(backend.call("POST", "api/scale", &body).status, status, "{instances}");
        }
        let unknown = backend.call("POST", "api/scale", r#"{"artifact": "org.example:b", "instances": 1}"#);
        assert_eq!(unknown.status, 404);
        assert_eq!(backend.call("POST", "api/scale", r#"{"artifact": "x", "instances": 1}"#).status, 400);
        let escape = r#"{"artifact": "org.example:a", "instances": 2, "reason": "a\u0000\u001b[31m"}"#;
        assert_eq!(backend.call("POST", "api/scale", escape).status, 400, "control characters in a reason");
        assert_eq!(backend.call("POST", "api/scale", r#"{"artifact": "org.example:a", "n": 1}"#).status, 400);
        let long = format!(r#"{{"artifact": "{}", "instances": 1}}"#, "a".repeat(5000));
        assert_eq!(backend.call("POST", "api/scale", &long).status, 400, "too long a coordinate, read and refused");
        // The longest fields the contract allows, every character escaped, still fit.
        let escaped = "\\ud83d\\ude00".repeat(512);
        let widest = format!(r#"{{"artifact": "{escaped}", "instances": 1, "reason": "{escaped}"}}"#);
        assert_eq!(backend.call("POST", "api/scale", &widest).status, 400);
        let huge = format!(r#"{{"artifact": "{}", "instances": 1}}"#, "a".repeat(super::BODY_BYTES_MAX));
        assert_eq!(backend.call("POST", "api/scale", &huge).status, 413);
        assert_eq!(backend.call("DELETE", "api/scale/org.example:a", "").status, 200);
        assert_eq!(backend.call("DELETE", "api/scale/org.example:a", "").status, 404);
    }

    #[test]
    fn the_controller_config_merges_and_is_checked() {
        let backend = deployed();
        let read = body(&backend.call("GET", "api/controller/config", ""));
        assert_eq!((read["stored"].as_bool(), read["scaling"]["cpu_high"].as_f64()), (Some(false), Some(80.0)));
        let set = backend.call("POST", "api/controller/config", r#"{"cpu_high": 60, "cooldown_ms": 1000}"#);
        assert_eq!(set.status, 200);
        let read = body(&backend.call("GET", "api/controller/config", ""));
        assert_eq!(read["scaling"]["cpu_high"].as_f64(), Some(60.0));
        assert_eq!(read["scaling"]["cpu_low"].as_f64(), Some(20.0), "the other fields stay");
        assert_eq!(backend.call("POST", "api/controller/config", r#"{"cpu_low": 70}"#).status, 400);
        assert_eq!(backend.call("POST", "api/controller/config", r#"{"nonsense": 1}"#).status, 400);
        assert_eq!(backend.call("POST", "api/controller/config", "[]").status, 400);
    }
}
