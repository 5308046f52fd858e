//! `log-level get|set|reset` and `config get|set|unset`: cluster-wide settings kept in the KV and applied
//! by every node.

use super::{items, Ctx};
use crate::args::{ConfigVerb, LogLevelVerb};
use crate::client::{encode_path, query, Request};
use crate::error::CliError;
use crate::table::{cell, clip, Table};
use serde_json::{json, Value};

pub fn log_level(verb: &LogLevelVerb, ctx: &Ctx) -> Result<(), CliError> {
    match verb {
        LogLevelVerb::Get => {
            let value = ctx.client.json(&Request::get("/api/log-levels"))?;
            ctx.show(&value, render_log_levels)
        }
        LogLevelVerb::Set { target, level } => {
            let path = format!("/api/log-levels/{}", encode_path(target, false));
            let body = json!({ "level": level }).to_string().into_bytes();
            let value = ctx.client.json(&json_request("PUT", path, body))?;
            ctx.show(&value, |v| format!("{}: {}\n", cell(&v["target"]), cell(&v["level"])))
        }
        LogLevelVerb::Reset { target } => {
            let path = format!("/api/log-levels/{}", encode_path(target, false));
            let value = ctx.client.json(&Request::new("DELETE", path, Vec::new()))?;
            ctx.show(&value, |v| format!("{}: reset (follows the default)\n", cell(&v["target"])))
        }
    }
}

fn json_request(method: &'static str, path: String, body: Vec<u8>) -> Request {
    Request::new(method, path, body).header("Content-Type", "application/json")
}

pub fn render_log_levels(v: &Value) -> String {
    let mut text = format!("default: {}\n", cell(&v["default"]));
    let mut t = Table::new(&["TARGET", "LEVEL"]);
    for (target, level) in v["targets"].as_object().into_iter().flatten() {
        t.row(vec![target.clone(), cell(level)]);
    }
    if !t.is_empty() {
        text.push_str(&t.render());
    }
    text
}

pub fn config(verb: &ConfigVerb, ctx: &Ctx) -> Result<(), CliError> {
    match verb {
        ConfigVerb::Get { key } => {
            let value = ctx.client.json(&Request::get("/api/config"))?;
            ctx.show(&value, |v| render_config(v, key.as_deref()))
        }
        ConfigVerb::Set { key, value, node_id } => {
            let path = format!("/api/config/{}{}", encode_path(key, false), query(&[("node", node_id.clone())]));
            let body = json!({ "value": config_value(value) }).to_string().into_bytes();
            let answer = ctx.client.json(&json_request("PUT", path, body))?;
            ctx.show(&answer, render_config_change)
        }
        ConfigVerb::Unset { key, node_id } => {
            let path = format!("/api/config/{}{}", encode_path(key, false), query(&[("node", node_id.clone())]));
            let answer = ctx.client.json(&Request::new("DELETE", path, Vec::new()))?;
            let scope = node_id.as_deref().map_or("cluster-wide".to_string(), |n| format!("on {n}"));
            ctx.show(&answer, |_| format!("{key}: unset {scope}\n"))
        }
    }
}

/// A value from the command line: JSON when it parses (`200`, `true`, `"x"`, `[1]`), else the text itself.
pub fn config_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn render_config_change(v: &Value) -> String {
    let scope = v["node"].as_str().map_or("cluster-wide".to_string(), |n| format!("on {n}"));
    format!("{} = {} {scope}\n", cell(&v["key"]), v["value"])
}

/// Every settable key (or one): its effective value on the answering node, the cluster-wide override, the
/// default and range; then the per-node overrides.
pub fn render_config(v: &Value, only: Option<&str>) -> String {
    let wanted = |key: &str| only.is_none_or(|k| k == key);
    let mut t = Table::new(&["KEY", "EFFECTIVE", "CLUSTER", "DEFAULT", "RANGE", "DESCRIPTION"]);
    for s in items(v, "settable") {
        let key = s["key"].as_str().unwrap_or("");
        if !wanted(key) {
            continue;
        }
        let range = match (s["min"].is_null(), s["max"].is_null()) {
            (true, true) => "-".to_string(),
            _ => format!("{}..{}", cell(&s["min"]), cell(&s["max"])),
        };
        t.row(vec![
            key.to_string(),
            cell(&v["effective"][key]),
            cell(&v["cluster"][key]),
            cell(&s["default"]),
            range,
            clip(cell(&s["description"]), 60),
        ]);
    }
    let mut text = if t.is_empty() {
        only.map_or("no settable keys\n".to_string(), |k| format!("'{k}' is not a settable key\n"))
    } else {
        t.render()
    };
    let mut per_node = Table::new(&["NODE", "KEY", "VALUE"]);
    for (node, keys) in v["nodes"].as_object().into_iter().flatten() {
        for (key, value) in keys.as_object().into_iter().flatten().filter(|(k, _)| wanted(k)) {
            per_node.row(vec![node.clone(), key.clone(), cell(value)]);
        }
    }
    if !per_node.is_empty() {
        text.push_str("\nper-node overrides\n");
        text.push_str(&per_node.render());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values_are_json_when_they_parse() {
        assert_eq!(config_value("200"), json!(200));
        assert_eq!(config_value("true"), json!(true));
        assert_eq!(config_value("\"200\""), json!("200"));
        assert_eq!(config_value("fast"), json!("fast"));
    }

    #[test]
    fn config_shows_effective_cluster_and_node_values() {
        let v = json!({"cluster": {"a_ms": 300}, "nodes": {"node-2": {"a_ms": 500, "b": 1}}, "effective": {"a_ms": 300, "b": 2},
            "settable": [{"key": "a_ms", "type": "u64", "default": 100, "min": 10, "max": 1000, "description": "how long"},
                          {"key": "b", "type": "u64", "default": 2, "min": null, "max": null, "description": "b"}]});
        let all = render_config(&v, None);
        assert!(all.contains("a_ms  300        300      100      10..1000  how long"), "{all}");
        assert!(all.contains("node-2  a_ms  500"), "{all}");
        let one = render_config(&v, Some("b"));
        assert!(!one.contains("a_ms") && one.contains("node-2  b    1"), "{one}");
        assert_eq!(render_config(&v, Some("zz")), "'zz' is not a settable key\n");
    }

    #[test]
    fn log_levels_list_targets_under_the_default() {
        let v = json!({"default": "info", "targets": {"consensus": "debug", "aetherd::app": "trace"}});
        let text = render_log_levels(&v);
        assert!(text.starts_with("default: info\nTARGET        LEVEL\n"), "{text}");
        assert!(text.contains("consensus     debug\n"));
    }
}
