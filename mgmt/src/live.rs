//! Live-settings routes: `GET /api/log-levels`, `GET|PUT|DELETE /api/log-levels/{target}`, `GET /api/config`
//! and `PUT|DELETE /api/config/{key}[?node=ID]`. Both live in the replicated store (`loglevels/{target}`,
//! `config/{key}`, `config/nodes/{node}/{key}`), which every node watches and applies; this module checks
//! what is written, writes it through consensus, and records a `log_level_changed` / `config_changed`
//! event on the node that took the request.
//!
//! Invariants: a log target is `default` or a module path (`::`-separated identifiers, at most
//! [`TARGET_BYTES_MAX`] bytes); a level is one of [`LEVELS`]; a config key is one the node reports as
//! settable, with a whole-number value within its range, else 400 listing what is settable; a per-node
//! value names a configured node; nothing is written unless all of that holds.

use crate::api::Backend;
use crate::error::ApiError;
use crate::events::only;
use crate::server::{Request, Response};
use kvstore::{AetherKey, Command, Name, NodeId};
use serde_json::{json, Map, Value};

/// Levels a target may be set to.
pub const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];
/// Longest log target.
pub const TARGET_BYTES_MAX: usize = 128;

/// A setting the node lets operators change live (`GET /api/config` lists them under `settable`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    /// The value when nothing in the store overrides it (this node's start value).
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub description: String,
}

impl Setting {
    fn to_json(&self) -> Value {
        json!({ "key": self.key, "type": "integer", "default": self.default, "min": self.min, "max": self.max,
            "description": self.description })
    }
}

pub fn log_levels(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    only(req, &[])?;
    match (req.method.as_str(), rest) {
        ("GET", []) => {
            let mut default = backend.log_level_default();
            let mut targets = Map::new();
            for entry in backend.kv_list("loglevels/", false)? {
                let target = entry.key.trim_start_matches("loglevels/").to_string();
                let level = Value::String(String::from_utf8_lossy(&entry.value).into_owned());
                match target.as_str() {
                    "default" => default = level.as_str().unwrap_or("info").to_string(),
                    _ => drop(targets.insert(target, level)),
                }
            }
            Ok(Response::ok(json!({ "default": default, "targets": targets })))
        }
        ("GET", [target]) => {
            let key = target_key(target)?;
            let entry = backend
                .kv_get(&key, false)?
                .ok_or_else(|| ApiError::not_found(format!("no level is set for '{target}'")))?;
            let level = String::from_utf8_lossy(&entry.value).into_owned();
            Ok(Response::ok(json!({ "target": target, "level": level })))
        }
        ("PUT", [target]) => {
            let key = target_key(target)?;
            let level = level_of(&req.body)?;
            backend.kv_write(Command::Put { key, value: level.as_bytes().to_vec() })?;
            backend.record_event("log_level_changed", json!({ "target": target, "level": level }));
            Ok(Response::ok(json!({ "target": target, "level": level })))
        }
        ("DELETE", [target]) => {
            let key = target_key(target)?;
            backend
                .kv_write(Command::Remove { key })
                .map_err(|e| absent(e, &format!("no level is set for '{target}'")))?;
            backend.record_event("log_level_changed", json!({ "target": target, "level": null }));
            Ok(Response::ok(json!({ "target": target, "level": null })))
        }
        _ => Err(crate::methods::unrouted(req)),
    }
}

pub fn config(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("GET", []) => {
            only(req, &[])?;
            show_config(backend)
        }
        ("PUT", [key]) => {
            only(req, &["node"])?;
            let setting = settable(backend, key)?;
            let node = node_of(backend, req)?;
            let value = value_of(&setting, &req.body)?;
            backend.kv_write(Command::Put {
                key: config_key(&setting, node.as_ref())?,
                value: value.to_string().into_bytes(),
            })?;
            let node = node.map(|n| n.to_string());
            backend.record_event("config_changed", json!({ "key": key, "value": value, "node": node }));
            Ok(Response::ok(json!({ "key": key, "value": value, "node": node })))
        }
        ("DELETE", [key]) => {
            only(req, &["node"])?;
            let setting = settable(backend, key)?;
            let node = node_of(backend, req)?;
            let scope = node.as_ref().map_or("cluster-wide".to_string(), |n| format!("for {n}"));
            backend
                .kv_write(Command::Remove { key: config_key(&setting, node.as_ref())? })
                .map_err(|e| absent(e, &format!("{key} is not set {scope}")))?;
            let node = node.map(|n| n.to_string());
            backend.record_event("config_changed", json!({ "key": key, "value": null, "node": node }));
            Ok(Response::ok(json!({ "key": key, "value": null, "node": node })))
        }
        _ => Err(crate::methods::unrouted(req)),
    }
}

fn show_config(backend: &dyn Backend) -> Result<Response, ApiError> {
    let (mut cluster, mut nodes) = (Map::new(), Map::new());
    for entry in backend.kv_list("config/", false)? {
        let text = String::from_utf8_lossy(&entry.value).into_owned();
        let value = text.trim().parse::<u64>().map_or(Value::String(text), Value::from);
        match AetherKey::parse(&entry.key) {
            Ok(AetherKey::Config { section }) => drop(cluster.insert(section.to_string(), value)),
            Ok(AetherKey::NodeConfig { node, section }) => {
                let of_node = nodes.entry(node.to_string()).or_insert_with(|| json!({}));
                if let Some(map) = of_node.as_object_mut() {
                    map.insert(section.to_string(), value);
                }
            }
            _ => {}
        }
    }
    let settable: Vec<Value> = backend.settable().iter().map(Setting::to_json).collect();
    Ok(Response::ok(json!({ "cluster": cluster, "nodes": nodes, "effective": backend.effective_config(),
        "settable": settable })))
}

/// The store key of a log target.
fn target_key(target: &str) -> Result<AetherKey, ApiError> {
    let identifier = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    let valid = target.len() <= TARGET_BYTES_MAX && target.split("::").all(identifier);
    if !valid {
        return Err(ApiError::bad_request(format!(
            "log target '{}': use `default` or a module path such as `consensus` or `aetherd::app` \
             (letters, digits, `_`, `::` between parts, at most {TARGET_BYTES_MAX} bytes)",
            target.chars().take(TARGET_BYTES_MAX).collect::<String>()
        )));
    }
    let logger = Name::parse(target).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(AetherKey::LogLevel { logger })
}

fn level_of(body: &[u8]) -> Result<&'static str, ApiError> {
    let hint = format!("send {{\"level\": \"...\"}} with one of {}", LEVELS.join(", "));
    let parsed: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{e}; {hint}")))?;
    let object = parsed.as_object().filter(|o| o.len() == 1).ok_or_else(|| ApiError::bad_request(hint.clone()))?;
    let text = object.get("level").and_then(Value::as_str).ok_or_else(|| ApiError::bad_request(hint.clone()))?;
    LEVELS
        .iter()
        .find(|l| l.eq_ignore_ascii_case(text))
        .copied()
        .ok_or_else(|| ApiError::bad_request(format!("level '{}': {hint}", text.chars().take(32).collect::<String>())))
}

fn settable(backend: &dyn Backend, key: &str) -> Result<Setting, ApiError> {
    let all = backend.settable();
    all.iter().find(|s| s.key == key).cloned().ok_or_else(|| {
        let keys: Vec<&str> = all.iter().map(|s| s.key.as_str()).collect();
        let mut e = ApiError::bad_request(format!(
            "'{}' is not a live setting; settable: {}",
            key.chars().take(64).collect::<String>(),
            keys.join(", ")
        ));
        e.extra = Some(json!({ "settable": keys }));
        e
    })
}

fn node_of(backend: &dyn Backend, req: &Request) -> Result<Option<NodeId>, ApiError> {
    let Some(text) = req.query_value("node") else { return Ok(None) };
    let node = NodeId::parse(text).map_err(|e| ApiError::bad_request(format!("node: {e}")))?;
    let view = backend.cluster_view()?;
    if !view.nodes.iter().any(|n| n.id == node.as_str()) {
        let known: Vec<&str> = view.nodes.iter().map(|n| n.id.as_str()).collect();
        return Err(ApiError::bad_request(format!("node '{node}' is not in this cluster ({})", known.join(", "))));
    }
    Ok(Some(node))
}

fn value_of(setting: &Setting, body: &[u8]) -> Result<u64, ApiError> {
    let hint = format!(
        "send {{\"value\": N}} with a whole number from {} to {} ({})",
        setting.min, setting.max, setting.description
    );
    let parsed: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("{e}; {hint}")))?;
    let object = parsed.as_object().filter(|o| o.len() == 1).ok_or_else(|| ApiError::bad_request(hint.clone()))?;
    match object.get("value").and_then(Value::as_u64) {
        Some(n) if (setting.min..=setting.max).contains(&n) => Ok(n),
        Some(n) => Err(ApiError::bad_request(format!("{}: {n} is out of range; {hint}", setting.key))),
        None => Err(ApiError::bad_request(format!("{}: {hint}", setting.key))),
    }
}

fn config_key(setting: &Setting, node: Option<&NodeId>) -> Result<AetherKey, ApiError> {
    let section = Name::parse(&setting.key).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(match node {
        Some(node) => AetherKey::NodeConfig { node: node.clone(), section },
        None => AetherKey::Config { section },
    })
}

/// A removal of an absent key as the route's own 404.
fn absent(e: ApiError, detail: &str) -> ApiError {
    if e.status == 404 {
        ApiError::not_found(detail)
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_targets_are_module_paths_or_default() {
        for good in ["default", "consensus", "aetherd::app", "aetherd::app::dispatch", "net_2"] {
            assert!(target_key(good).is_ok(), "{good}");
        }
        for bad in ["", "::", "a::", "::a", "a:b", "a::::b", "a b", "a/b", "a.b", &"x".repeat(129)] {
            assert!(target_key(bad).is_err(), "{bad}");
        }
        assert_eq!(target_key("aetherd::app").unwrap().to_string(), "loglevels/aetherd::app");
    }

    #[test]
    fn levels_and_values_are_checked() {
        assert_eq!(level_of(br#"{"level":"debug"}"#), Ok("debug"));
        assert_eq!(level_of(br#"{"level":"WARN"}"#), Ok("warn"));
        for bad in [&br#"{"level":"loud"}"#[..], br#"{"level":3}"#, br#"{}"#, br#"{"level":"info","x":1}"#, b"info"] {
            assert_eq!(level_of(bad).map_err(|e| e.status), Err(400), "{}", String::from_utf8_lossy(bad));
        }
        let setting =
            Setting { key: "slow_call_ms".into(), default: 1000, min: 1, max: 600_000, description: "d".into() };
        assert_eq!(value_of(&setting, br#"{"value": 250}"#), Ok(250));
        for bad in [
            &br#"{"value": 0}"#[..],
            br#"{"value": 600001}"#,
            br#"{"value": -1}"#,
            br#"{"value": 1.5}"#,
            br#"{"value": "250"}"#,
            br#"{"v": 1}"#,
            b"[]",
        ] {
            assert_eq!(value_of(&setting, bad).map_err(|e| e.status), Err(400), "{}", String::from_utf8_lossy(bad));
        }
    }
}
