//! `status`, `health`, `nodes`, `node`, `slices` and `routes`: the cluster as the asked node sees it, and
//! the node lifecycle verbs (`node drain|activate|shutdown ID`).

use super::{items, Ctx};
use crate::client::Request;
use crate::error::{CliError, EXIT_OK, EXIT_REFUSED};
use crate::table::{age, cell, joined, now_ms, pairs, Table};
use serde_json::Value;

pub fn status(ctx: &Ctx) -> Result<(), CliError> {
    let value = ctx.client.json(&Request::get("/api/status"))?;
    ctx.show(&value, render_status)
}

pub fn render_status(v: &Value) -> String {
    let mut text = pairs(&[
        ("node", cell(&v["node"])),
        ("leader", cell(&v["leader"])),
        ("quorum", cell(&v["quorum"])),
        ("caught up", cell(&v["caught_up"])),
        ("applied slot", cell(&v["applied_slot"])),
        ("pending commands", cell(&v["pending_commands"])),
    ]);
    let mut members = Table::new(&["MEMBER", "ADDRESS", "ALIVE"]);
    for m in items(v, "members") {
        members.row(vec![cell(&m["id"]), cell(&m["address"]), cell(&m["alive"])]);
    }
    text.push('\n');
    text.push_str(&members.render());
    text
}

/// `GET /api/health` answers 503 with the same body when the node is not ready: that is a state to show,
/// with exit code 1, not a refusal.
pub fn health(ctx: &Ctx) -> Result<i32, CliError> {
    let reply = ctx.client.send(&Request::get("/api/health"))?;
    let value = reply.json();
    if reply.status != 503 || value["ready"].is_null() {
        let value = reply.ok_json()?;
        ctx.show(&value, render_health)?;
        return Ok(EXIT_OK);
    }
    ctx.show(&value, render_health)?;
    Ok(EXIT_REFUSED)
}

pub fn render_health(v: &Value) -> String {
    let ready = if v["ready"] == true { "ready" } else { "NOT READY" };
    let peers = v["nodes"].as_u64().map_or("-".into(), |n| n.saturating_sub(1).to_string());
    pairs(&[
        ("node", cell(&v["node"])),
        ("state", ready.to_string()),
        ("peers connected", format!("{} of {peers}", cell(&v["peers_connected"]))),
    ])
}

pub fn nodes(ctx: &Ctx) -> Result<(), CliError> {
    let value = ctx.client.json(&Request::get("/api/nodes"))?;
    ctx.show(&value, render_nodes)
}

pub fn render_nodes(v: &Value) -> String {
    let mut t = Table::new(&["NODE", "ADDRESS", "CONNECTED", "LAST SEEN", "LIFECYCLE"]);
    for n in items(v, "nodes") {
        let is_self = n["self"] == true;
        let seen = n["last_seen_ms"].as_u64().map_or("-".into(), |ms| format!("{} ago", crate::table::duration_ms(ms)));
        let id = if is_self { format!("{} (this)", cell(&n["id"])) } else { cell(&n["id"]) };
        let connected = if is_self { "-".into() } else { cell(&n["connected"]) };
        let lifecycle = cell(&n["lifecycle"]["state"]);
        t.row(vec![id, cell(&n["address"]), connected, if is_self { "-".into() } else { seen }, lifecycle]);
    }
    t.render()
}

/// `node show|drain|activate|shutdown ID`.
pub fn node(verb: &crate::args::NodeVerb, ctx: &Ctx) -> Result<(), CliError> {
    use crate::args::NodeVerb;
    let (id, action, reason) = match verb {
        NodeVerb::Show { id } => {
            let path = format!("/api/nodes/{}", crate::client::encode_path(id, false));
            let value = ctx.client.json(&Request::get(path))?;
            return ctx.show(&value, render_node);
        }
        NodeVerb::Drain { id, reason } => (id, "drain", reason),
        NodeVerb::Activate { id, reason } => (id, "activate", reason),
        NodeVerb::Shutdown { id, reason } => (id, "shutdown", reason),
    };
    let path = format!("/api/nodes/{}/{action}", crate::client::encode_path(id, false));
    let body = reason.as_ref().map(|r| serde_json::json!({ "reason": r }).to_string()).unwrap_or_default();
    let request = Request::new("POST", path, body.into_bytes()).header("Content-Type", "application/json");
    let value = ctx.client.json(&request)?;
    ctx.show(&value, |v| {
        pairs(&[("node", cell(&v["node"])), ("lifecycle", cell(&v["lifecycle"])), ("note", cell(&v["note"]))])
    })
}

pub fn render_node(v: &Value) -> String {
    let life = &v["lifecycle"];
    let mut text = pairs(&[
        ("node", cell(&v["id"])),
        ("address", cell(&v["address"])),
        ("lifecycle", cell(&life["state"])),
        ("reason", cell(&life["reason"])),
        ("waiting", cell(&v["waiting"])),
    ]);
    let mut t = Table::new(&["ARTIFACT", "INSTANCE", "STATE", "DESIRED"]);
    for i in items(v, "instances") {
        t.row(vec![cell(&i["artifact"]), cell(&i["instance"]), cell(&i["state"]), cell(&i["desired"])]);
    }
    text.push('\n');
    text.push_str(&t.render());
    text
}

pub fn slices(ctx: &Ctx) -> Result<(), CliError> {
    let value = ctx.client.json(&Request::get("/api/slices"))?;
    ctx.show(&value, |v| render_slices(v, now_ms()))
}

pub fn render_slices(v: &Value, now: u64) -> String {
    let mut t = Table::new(&["NODE", "ARTIFACT", "COPIES", "STATE", "DESIRED", "SINCE", "HEALTH", "ERROR"]);
    for s in items(v, "slices") {
        let since = s["since_ms"].as_u64().map_or("-".into(), |ms| age(ms, now));
        // Running of asked, when they differ; earlier nodes do not say: one.
        let asked = s["copies"].as_u64().unwrap_or(1);
        let copies = match s["running"].as_u64() {
            Some(running) if running != asked => format!("{running}/{asked}"),
            _ => asked.to_string(),
        };
        t.row(vec![
            cell(&s["node"]),
            cell(&s["artifact"]),
            copies,
            cell(&s["state"]),
            cell(&s["desired"]),
            since,
            cell(&s["health"]),
            crate::table::clip(slice_problem(s), 60),
        ]);
    }
    t.render_or("no slice instances")
}

/// The ERROR cell: the failure reason, else the refusal of the blueprint's latest config (the slice runs on
/// with its previous one), else why a copy could not start (the others serve on), else `-`.
fn slice_problem(s: &Value) -> String {
    match (&s["error"], s["config_refused"]["reason"].as_str(), s["copies_refused"].as_str()) {
        (Value::Null, Some(reason), _) => format!("new config refused: {reason}"),
        (Value::Null, None, Some(reason)) => {
            format!("{} of {} copies run: {reason}", cell(&s["running"]), cell(&s["copies"]))
        }
        (error, _, _) => cell(error),
    }
}

pub fn routes(ctx: &Ctx) -> Result<(), CliError> {
    let value = ctx.client.json(&Request::get("/api/routes"))?;
    ctx.show(&value, render_routes)
}

pub fn render_routes(v: &Value) -> String {
    let mut t = Table::new(&["METHOD", "PATH", "ARTIFACT", "SLICE METHOD", "INSTANCES"]);
    for r in items(v, "routes") {
        let instances: Vec<String> =
            items(r, "instances").iter().map(|i| format!("{}:{}", cell(&i["node"]), cell(&i["state"]))).collect();
        t.row(vec![
            cell(&r["method"]),
            cell(&r["path"]),
            cell(&r["artifact"]),
            cell(&r["slice_method"]),
            joined(&instances, " "),
        ]);
    }
    t.render_or("no routes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_shows_the_leader_and_members() {
        let v = json!({"node": "node-1", "leader": "node-2", "quorum": true, "caught_up": true, "applied_slot": 42,
            "pending_commands": 0, "members": [{"id": "node-1", "address": "127.0.0.1:8090", "alive": true},
            {"id": "node-3", "address": "127.0.0.1:8290", "alive": false}]});
        let text = render_status(&v);
        assert!(text.contains("leader:            node-2\n"), "{text}");
        assert!(text.contains("node-3  127.0.0.1:8290  no"), "{text}");
    }

    #[test]
    fn nodes_mark_this_node_and_ages() {
        let v = json!({"nodes": [{"id": "node-1", "address": "a:1", "connected": false, "last_seen_ms": null, "self": true},
            {"id": "node-2", "address": "a:2", "connected": true, "last_seen_ms": 1500, "self": false}]});
        let text = render_nodes(&v);
        assert!(text.contains("node-1 (this)  a:1      -"), "{text}");
        assert!(text.contains("node-2         a:2      yes        1s ago"), "{text}");
    }

    #[test]
    fn nodes_show_their_lifecycle_and_a_waiting_drain_says_why() {
        let v = json!({"nodes": [{"id": "node-2", "address": "a:2", "connected": true, "last_seen_ms": 10, "self": false,
            "lifecycle": {"state": "DRAINING"}}]});
        assert!(render_nodes(&v).contains("DRAINING"), "{}", render_nodes(&v));
        let v = json!({"id": "node-2", "address": "a:2", "lifecycle": {"state": "DRAINING", "reason": "disk"},
            "waiting": "g:a:1.0.0: no ON_DUTY node can take a replacement",
            "instances": [{"artifact": "g:a:1.0.0", "instance": 1, "state": "ACTIVE", "desired": "ACTIVE"}]});
        let text = render_node(&v);
        assert!(text.contains("no ON_DUTY node can take a replacement"), "{text}");
        assert!(text.contains("g:a:1.0.0  1         ACTIVE"), "{text}");
    }

    #[test]
    fn routes_list_instances_by_node() {
        let v = json!({"routes": [{"method": "GET", "path": "/echo/{msg}", "artifact": "g:echo:1.0.0", "slice_method": "echo",
            "instances": [{"node": "node-1", "state": "ACTIVE"}, {"node": "node-2", "state": "ACTIVE"}]}]});
        assert!(render_routes(&v).contains("g:echo:1.0.0  echo          node-1:ACTIVE node-2:ACTIVE"));
        assert_eq!(render_routes(&json!({"routes": []})), "no routes\n");
    }

    #[test]
    fn slices_show_copies_that_do_not_all_run() {
        let v = json!({"slices": [{"node": "node-1", "artifact": "g:a:1.0.0", "state": "ACTIVE", "desired": "ACTIVE",
            "since_ms": 1_000, "health": "ok", "error": null, "copies": 3, "running": 2,
            "copies_refused": "copy 3 of 3: port taken"}]});
        let text = render_slices(&v, 2_000);
        assert!(text.contains("g:a:1.0.0  2/3"), "{text}");
        assert!(text.contains("2 of 3 copies run: copy 3 of 3: port taken"), "{text}");
    }

    #[test]
    fn slices_show_a_refused_config() {
        let v = json!({"slices": [{"node": "node-1", "artifact": "g:a:1.0.0", "state": "ACTIVE", "desired": "ACTIVE",
            "since_ms": 1_000, "health": "ok", "error": null,
            "config_refused": {"config": {"k": "v"}, "reason": "k must be a number"}}]});
        assert!(
            render_slices(&v, 2_000).contains("new config refused: k must be a number"),
            "{}",
            render_slices(&v, 2_000)
        );
    }

    #[test]
    fn slices_show_age_and_clip_errors() {
        let v = json!({"slices": [{"node": "node-1", "artifact": "g:a:1.0.0", "state": "FAILED", "desired": "ACTIVE",
            "since_ms": 1_000, "health": "ok", "error": "x".repeat(100)}]});
        let text = render_slices(&v, 61_000);
        assert!(text.contains("g:a:1.0.0  1       FAILED  ACTIVE   1m"), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with('…'));
    }
}
