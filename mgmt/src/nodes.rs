//! The node routes: the configured nodes with their lifecycle (`GET /api/nodes`), one node in detail with its
//! instances and, while a drain waits, why (`GET /api/nodes/{id}`), and the operator's lifecycle changes
//! (`POST /api/nodes/{id}/drain|activate|shutdown`).
//!
//! A lifecycle change is one compare-and-set of `nodes/{id}/lifecycle` (see `control::duty`) at the version
//! read just before, so two operators racing get one 409 rather than a lost write. The leader and the node
//! do the rest: the leader moves the instances away and writes DECOMMISSIONED; a node told to shut down
//! exits once drained. An unknown node id is 404; a body, when given, is `{"reason": "..."}` (at most
//! 512 characters, `control::duty::TEXT_BYTES_MAX` bytes of it kept). Reads are stale (this node's applied state), so they answer
//! without quorum.

use crate::api::Backend;
use crate::error::ApiError;
use crate::kv::KvEntry;
use crate::server::Response;
use control::duty::{Duty, DutyRecord};
use control::records::{Record, SliceRecord};
use kvstore::{AetherKey, NodeId};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Largest request body of a lifecycle change.
const BODY_BYTES_MAX: usize = 4096;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    reason: Option<String>,
}

/// Answers the node routes below `api/nodes` (`rest` is the path after it).
pub fn route(backend: &dyn Backend, method: &str, rest: &[&str], body: &[u8]) -> Result<Response, ApiError> {
    match (method, rest) {
        ("GET", []) => list(backend),
        ("GET", [id]) => detail(backend, id),
        ("POST", [id, action @ ("drain" | "activate" | "shutdown")]) => change(backend, id, action, body),
        _ => Err(ApiError::not_found("use GET /api/nodes[/{id}] or POST /api/nodes/{id}/drain|activate|shutdown")),
    }
}

/// The lifecycle of every node that has a record, from one stale listing of `nodes/`.
fn lifecycles(backend: &dyn Backend) -> Result<BTreeMap<String, Result<DutyRecord, String>>, ApiError> {
    let mut out = BTreeMap::new();
    for entry in backend.kv_list("nodes/", true)? {
        if let Ok(AetherKey::NodeLifecycle { node }) = entry.key.parse::<AetherKey>() {
            out.insert(node.to_string(), DutyRecord::decode(&entry.value).map_err(|e| e.to_string()));
        }
    }
    Ok(out)
}

/// The JSON of a node's lifecycle: no record is ON_DUTY (`recorded` false).
fn lifecycle_json(record: Option<&Result<DutyRecord, String>>) -> Value {
    match record {
        None => json!({ "state": Duty::OnDuty.as_str(), "recorded": false }),
        Some(Ok(r)) => json!({
            "state": r.state.as_str(), "reason": r.reason, "since_ms": r.since_ms, "waiting": r.waiting, "recorded": true,
        }),
        Some(Err(e)) => json!({ "state": "UNREADABLE", "error": e, "recorded": true }),
    }
}

/// This node's lifecycle, for `/api/status`.
pub fn own_lifecycle(backend: &dyn Backend, node: &str) -> Value {
    match lifecycles(backend) {
        Ok(all) => lifecycle_json(all.get(node)),
        Err(e) => json!({ "error": e.detail }),
    }
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let view = backend.cluster_view()?;
    let duties = lifecycles(backend).unwrap_or_default();
    let nodes: Vec<_> = view
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "address": n.address,
                "connected": n.connected,
                "last_seen_ms": n.last_seen_ms,
                "self": n.is_self,
                "lifecycle": lifecycle_json(duties.get(&n.id)),
            })
        })
        .collect();
    Ok(Response::ok(json!({ "node": view.node, "nodes": nodes })))
}

/// The configured node `id`, or 404.
fn known(backend: &dyn Backend, id: &str) -> Result<(NodeId, crate::api::PeerView), ApiError> {
    let view = backend.cluster_view()?;
    let peer = view.nodes.into_iter().find(|n| n.id == id);
    let node = NodeId::parse(id).ok();
    match (peer, node) {
        (Some(peer), Some(node)) => Ok((node, peer)),
        _ => Err(ApiError::not_found(format!("no node '{id}' in this cluster; GET /api/nodes lists them"))),
    }
}

fn instance_json(entry: &KvEntry) -> Option<Value> {
    let artifact = entry.key.rsplit('/').next()?;
    Some(match SliceRecord::decode(&entry.value) {
        Ok(r) => json!({
            "artifact": artifact, "instance": r.instance, "state": r.state.to_string(),
            "desired": r.desired.to_string(), "error": r.error,
        }),
        Err(e) => json!({ "artifact": artifact, "error": e.to_string() }),
    })
}

fn detail(backend: &dyn Backend, id: &str) -> Result<Response, ApiError> {
    let (node, peer) = known(backend, id)?;
    let duties = lifecycles(backend)?;
    let lifecycle = lifecycle_json(duties.get(id));
    let instances: Vec<Value> =
        backend.kv_list(&format!("slices/{node}/"), true)?.iter().filter_map(instance_json).collect();
    Ok(Response::ok(json!({
        "id": peer.id,
        "address": peer.address,
        "connected": peer.connected,
        "self": peer.is_self,
        "waiting": lifecycle.get("waiting").cloned().unwrap_or(Value::Null),
        "lifecycle": lifecycle,
        "instances": instances,
    })))
}

fn change(backend: &dyn Backend, id: &str, action: &str, body: &[u8]) -> Result<Response, ApiError> {
    let (node, _) = known(backend, id)?;
    let reason = parse_body(body)?.reason;
    let state = match action {
        "drain" => Duty::Draining,
        "shutdown" => Duty::ShuttingDown,
        _ => Duty::OnDuty,
    };
    let duties = lifecycles(backend)?;
    let key = control::duty::key(&node);
    let current = backend.kv_get(&key, true)?;
    let record = DutyRecord::new(state, Some(reason.as_deref().unwrap_or(default_reason(action))), now_ms());
    let command = kvstore::Command::CompareAndSet {
        key,
        expected: current.map(|e| kvstore::Revision(e.version)),
        value: record.encode(),
    };
    backend.kv_write(command)?;
    let others_on_duty = (backend.cluster_view()?.nodes.iter())
        .filter(|n| n.id != id)
        .any(|n| duties.get(&n.id).is_none_or(|d| d.as_ref().is_ok_and(|r| r.state == Duty::OnDuty)));
    let note = match state {
        Duty::OnDuty => "the node receives instances again",
        _ if !others_on_duty => {
            "accepted, but no other node is ON_DUTY: the drain waits until one is (GET /api/nodes/{id} says why)"
        }
        Duty::ShuttingDown => "the leader moves the node's instances away; the node exits once drained",
        _ => "the leader moves the node's instances away, then marks the node DECOMMISSIONED",
    };
    Ok(Response::ok(json!({ "node": id, "lifecycle": state.as_str(), "note": note })))
}

fn default_reason(action: &str) -> &'static str {
    match action {
        "drain" => "operator drain",
        "shutdown" => "operator shutdown",
        _ => "operator activate",
    }
}

fn parse_body(body: &[u8]) -> Result<ChangeBody, ApiError> {
    // No body is no reason; anything else must be the JSON object (a body of only blanks is not JSON).
    if body.is_empty() {
        return Ok(ChangeBody::default());
    }
    if body.len() > BODY_BYTES_MAX {
        return Err(ApiError::bad_request(format!("body over {BODY_BYTES_MAX} bytes")));
    }
    let parsed: ChangeBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"reason\": \"...\"}}: {e}")))?;
    let chars = parsed.reason.as_deref().map_or(0, |r| r.chars().count());
    if chars > REASON_CHARS_MAX {
        return Err(ApiError::bad_request(format!("reason of {chars} characters, over {REASON_CHARS_MAX}")));
    }
    Ok(parsed)
}

/// The longest reason an operator may give (as the API document says).
const REASON_CHARS_MAX: usize = 512;

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    now.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
