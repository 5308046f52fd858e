//! Deployment routes: `POST/GET/DELETE /api/blueprints[/{name}]` and `GET /api/slices`.
//!
//! A blueprint is parsed and checked here (syntax with line numbers, unknown keys, duplicates, cycles,
//! counts, artifacts unknown to this node's repository, artifacts another blueprint already deploys) and
//! stored as one record under `blueprints/{name}`; the leader's deployment manager does the rest. A refused
//! blueprint changes nothing.

use crate::api::Backend;
use crate::error::ApiError;
use crate::kv::KvEntry;
use crate::server::{Request, Response};
use control::records::{BlueprintRecord, Record, SliceRecord, TargetRecord};
use kvstore::{AetherKey, Artifact, Command, Name};
use serde_json::{json, Value};

pub fn route(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("POST" | "PUT", []) => submit(backend, &req.body),
        ("GET", []) => list(backend),
        ("GET", [name]) => show(backend, name),
        ("DELETE", [name]) => delete(backend, name),
        (method, _) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{method} is not allowed on /{}", req.path)))
        }
    }
}

fn submit(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the blueprint is not UTF-8 text"))?;
    let parsed = control::blueprint::parse(text, &|a| backend.artifact_known(a)).map_err(|e| {
        let mut error = ApiError::new(400, "invalid_blueprint", e.to_string());
        error.extra = Some(json!({ "line": e.line, "field": e.field }));
        error
    })?;
    check_ownership(backend, &parsed)?;
    let key = AetherKey::Blueprint { name: parsed.name.clone() };
    let order: Vec<String> = parsed.order.iter().map(ToString::to_string).collect();
    let name = parsed.name.to_string();
    let value = BlueprintRecord { toml: text.to_string(), blueprint: parsed }.encode();
    let version = backend.kv_write(Command::Put { key, value })?;
    Ok(Response::new(201, json!({ "name": name, "version": version, "slices": order })))
}

/// Refuses a blueprint naming an artifact another blueprint already deploys.
fn check_ownership(backend: &dyn Backend, parsed: &control::Blueprint) -> Result<(), ApiError> {
    for entry in backend.kv_list("blueprints/", false)? {
        let Ok(other) = BlueprintRecord::decode(&entry.value) else { continue };
        if other.blueprint.name == parsed.name {
            continue;
        }
        if let Some(shared) = parsed.order.iter().find(|a| other.blueprint.order.contains(a)) {
            return Err(ApiError::new(
                409,
                "conflict",
                format!("{shared} is already deployed by blueprint '{}'", other.blueprint.name),
            ));
        }
    }
    Ok(())
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let items: Vec<Value> = backend
        .kv_list("blueprints/", false)?
        .iter()
        .filter_map(|e| BlueprintRecord::decode(&e.value).ok().map(|r| (r, e.version)))
        .map(|(r, version)| {
            json!({ "name": r.blueprint.name.to_string(), "slices": r.blueprint.slices.len(), "version": version })
        })
        .collect();
    Ok(Response::ok(json!({ "blueprints": items })))
}

fn parse_name(name: &str) -> Result<Name, ApiError> {
    Name::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn show(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    let key = AetherKey::Blueprint { name: parse_name(name)? };
    let entry = backend.kv_get(&key, false)?.ok_or_else(|| ApiError::not_found(format!("no blueprint '{name}'")))?;
    let record = BlueprintRecord::decode(&entry.value).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let slices = slice_entries(backend)?;
    let targets = backend.kv_list("targets/", true)?;
    let status: Vec<Value> = record
        .blueprint
        .order
        .iter()
        .filter_map(|a| record.blueprint.slices.iter().find(|s| s.artifact == *a))
        .map(|spec| slice_status(spec, &slices, &targets))
        .collect();
    Ok(Response::ok(json!({
        "name": record.blueprint.name.to_string(),
        "version": entry.version,
        "toml": record.toml,
        "slices": status,
    })))
}

fn slice_status(
    spec: &control::blueprint::SliceSpec,
    slices: &[(String, Artifact, SliceRecord)],
    targets: &[KvEntry],
) -> Value {
    let mine: Vec<&(String, Artifact, SliceRecord)> = slices.iter().filter(|(_, a, _)| *a == spec.artifact).collect();
    let count = |state: control::SliceState| mine.iter().filter(|(_, _, r)| r.state == state).count();
    let target_key = format!("targets/{}", spec.artifact);
    let placed = targets.iter().find(|t| t.key == target_key).and_then(|t| TargetRecord::decode(&t.value).ok());
    let placements: Vec<Value> = mine.iter().map(|(node, _, r)| instance_json(node, &spec.artifact, r)).collect();
    json!({
        "artifact": spec.artifact.to_string(),
        "desired": spec.instances,
        "min_instances": spec.min_instances,
        "targeted": placed.map(|t| t.instances),
        "active": count(control::SliceState::Active),
        "failed": count(control::SliceState::Failed),
        "where": placements,
    })
}

fn instance_json(node: &str, artifact: &Artifact, r: &SliceRecord) -> Value {
    json!({
        "node": node,
        "artifact": artifact.to_string(),
        "state": r.state.as_str(),
        "desired": format!("{:?}", r.desired).to_uppercase(),
        "instance": r.instance,
        "since_ms": r.since_ms,
        "error": r.error,
    })
}

fn delete(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    let key = AetherKey::Blueprint { name: parse_name(name)? };
    let version = backend.kv_write(Command::Remove { key }).map_err(|e| {
        if e.status == 404 {
            ApiError::not_found(format!("no blueprint '{name}'"))
        } else {
            e
        }
    })?;
    Ok(Response::ok(json!({ "name": name, "deleted": true, "version": version })))
}

fn slice_entries(backend: &dyn Backend) -> Result<Vec<(String, Artifact, SliceRecord)>, ApiError> {
    Ok(backend
        .kv_list("slices/", false)?
        .iter()
        .filter_map(|e| {
            let AetherKey::Slice { node, artifact } = e.key.parse::<AetherKey>().ok()? else { return None };
            Some((node.to_string(), artifact, SliceRecord::decode(&e.value).ok()?))
        })
        .collect())
}

/// `GET /api/slices`: every slice instance in the cluster.
pub fn slices(backend: &dyn Backend) -> Result<Response, ApiError> {
    let items: Vec<Value> = slice_entries(backend)?.iter().map(|(n, a, r)| instance_json(n, a, r)).collect();
    Ok(Response::ok(json!({ "slices": items })))
}
