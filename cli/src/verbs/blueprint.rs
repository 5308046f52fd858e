//! `blueprint apply|validate|list|get|status|delete`.

use super::{items, read_input, Ctx};
use crate::args::BlueprintVerb;
use crate::client::{encode_path, Request};
use crate::error::CliError;
use crate::table::{age, cell, clip, joined, now_ms, Table};
use serde_json::Value;

/// The most bytes of a blueprint file sent (the server's body limit is larger; blueprints are small).
const BLUEPRINT_BYTES_MAX: usize = 1024 * 1024;

pub fn run(verb: &BlueprintVerb, ctx: &Ctx) -> Result<(), CliError> {
    match verb {
        BlueprintVerb::Apply { file } => {
            let body = read_input(file, BLUEPRINT_BYTES_MAX)?;
            let value = ctx.client.json(&toml_post("/api/blueprints", body))?;
            ctx.show(&value, render_applied)
        }
        BlueprintVerb::Validate { file } => {
            let body = read_input(file, BLUEPRINT_BYTES_MAX)?;
            let value = ctx.client.json(&toml_post("/api/blueprints/validate", body))?;
            ctx.show(&value, render_validated)
        }
        BlueprintVerb::List => {
            let value = ctx.client.json(&Request::get("/api/blueprints"))?;
            ctx.show(&value, render_list)
        }
        BlueprintVerb::Get { name, toml } => {
            let value = ctx.client.json(&Request::get(format!("/api/blueprints/{}", encode_path(name, false))))?;
            if *toml && !ctx.json {
                super::emit(value["toml"].as_str().unwrap_or(""));
                return Ok(());
            }
            ctx.show(&value, |v| render_get(v, now_ms()))
        }
        BlueprintVerb::Status { name } => {
            let path = format!("/api/blueprints/{}/status", encode_path(name, false));
            let value = ctx.client.json(&Request::get(path))?;
            ctx.show(&value, |v| render_status(v, now_ms()))
        }
        BlueprintVerb::Delete { name } => {
            let path = format!("/api/blueprints/{}", encode_path(name, false));
            let value = ctx.client.json(&Request::new("DELETE", path, Vec::new()))?;
            ctx.show(&value, |v| format!("deleted blueprint {} (version {})\n", cell(&v["name"]), cell(&v["version"])))
        }
    }
}

fn toml_post(path: &str, body: Vec<u8>) -> Request {
    Request::new("POST", path, body).header("Content-Type", "application/toml")
}

fn render_applied(v: &Value) -> String {
    let mut text = format!(
        "stored blueprint {} (version {}); start order: {}\n",
        cell(&v["name"]),
        cell(&v["version"]),
        items(v, "slices").iter().map(cell).collect::<Vec<_>>().join(", ")
    );
    for warning in items(v, "warnings") {
        text.push_str(&format!("warning: {}\n", cell(warning)));
    }
    text
}

pub fn render_validated(v: &Value) -> String {
    let mut text = format!(
        "blueprint {} is valid; start order: {}\n",
        cell(&v["name"]),
        items(v, "slices").iter().map(cell).collect::<Vec<_>>().join(", ")
    );
    let mut t = Table::new(&["ARTIFACT", "INSTANCES", "NODES"]);
    for p in items(v, "placement") {
        // A node running several copies shows them: `node-1x2`.
        let nodes: Vec<String> = items(p, "nodes")
            .iter()
            .map(|n| {
                let node = n.as_str().unwrap_or("?");
                match p["copies"][node].as_u64() {
                    Some(copies) if copies > 1 => format!("{node}x{copies}"),
                    _ => node.to_owned(),
                }
            })
            .collect();
        let nodes = if nodes.is_empty() { "-".to_owned() } else { nodes.join(",") };
        t.row(vec![cell(&p["artifact"]), cell(&p["instances"]), nodes]);
    }
    if !t.is_empty() {
        text.push_str(&t.render());
    }
    for warning in items(v, "warnings") {
        text.push_str(&format!("warning: {}\n", cell(warning)));
    }
    text
}

fn render_list(v: &Value) -> String {
    let mut t = Table::new(&["NAME", "SLICES", "VERSION"]);
    for b in items(v, "blueprints") {
        t.row(vec![cell(&b["name"]), cell(&b["slices"]), cell(&b["version"])]);
    }
    t.render_or("no blueprints")
}

/// `GET /api/blueprints/{name}`: per slice desired, active, failed and where its instances are.
pub fn render_get(v: &Value, now: u64) -> String {
    let head = format!("blueprint {} (version {})\n", cell(&v["name"]), cell(&v["version"]));
    head + &slice_table(v, ("WHERE", "where", "since_ms"), now)
}

/// `GET /api/blueprints/{name}/status`: the overall state, then per slice counts and instances.
pub fn render_status(v: &Value, now: u64) -> String {
    let head = format!("blueprint {} (version {}): {}\n", cell(&v["name"]), cell(&v["version"]), cell(&v["state"]));
    head + &slice_table(v, ("INSTANCES", "instances", "since"), now)
}

/// One row a slice: its counts, its instances as `node:state age` (from the field `list`, each instance's
/// start time in `since`), and its reason, under the column title `column`.
fn slice_table(v: &Value, (column, list, since): (&str, &str, &str), now: u64) -> String {
    let mut t = Table::new(&["ARTIFACT", "DESIRED", "ACTIVE", "FAILED", "QUARANTINED", column, "REASON"]);
    for s in items(v, "slices") {
        let instances: Vec<String> = items(s, list)
            .iter()
            .map(|i| {
                let since = i[since].as_u64().map_or(String::new(), |ms| format!(" {}", age(ms, now)));
                format!("{}:{}{since}", cell(&i["node"]), cell(&i["state"]))
            })
            .collect();
        t.row(vec![
            cell(&s["artifact"]),
            cell(&s["desired"]),
            cell(&s["active"]),
            cell(&s["failed"]),
            cell(&s["quarantined"]),
            joined(&instances, ", "),
            clip(cell(&s["reason"]), 60),
        ]);
    }
    t.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_applied_blueprint_shows_its_warnings() {
        let v = json!({"name": "shop", "version": 4, "slices": ["g:a:1.0.0"],
            "warnings": ["slices[0].instances: g:a:1.0.0 asks for 5 instances but the cluster has 3 nodes"]});
        assert_eq!(
            render_applied(&v),
            "stored blueprint shop (version 4); start order: g:a:1.0.0\n\
             warning: slices[0].instances: g:a:1.0.0 asks for 5 instances but the cluster has 3 nodes\n"
        );
    }

    #[test]
    fn validation_shows_copies_on_a_node() {
        let v = json!({"valid": true, "name": "shop", "slices": ["g:a:1.0.0"], "warnings": [],
            "placement": [{"artifact": "g:a:1.0.0", "instances": 3, "nodes": ["node-1", "node-2"],
                           "copies": {"node-1": 2, "node-2": 1}}]});
        let text = render_validated(&v);
        assert!(text.contains("node-1x2,node-2"), "{text}");
    }

    #[test]
    fn validation_shows_the_placement_and_warnings() {
        let v = json!({"valid": true, "name": "shop", "slices": ["g:a:1.0.0", "g:b:1.0.0"],
            "placement": [{"artifact": "g:a:1.0.0", "instances": 2, "nodes": ["node-1", "node-2"]}],
            "warnings": ["only 1 node alive"]});
        let text = render_validated(&v);
        assert!(text.starts_with("blueprint shop is valid; start order: g:a:1.0.0, g:b:1.0.0\n"), "{text}");
        assert!(text.contains("g:a:1.0.0  2          node-1,node-2\n"), "{text}");
        assert!(text.ends_with("warning: only 1 node alive\n"));
    }

    #[test]
    fn status_shows_the_state_and_instances() {
        let v = json!({"name": "shop", "version": 3, "state": "degraded", "slices": [{"artifact": "g:a:1.0.0",
            "desired": 2, "active": 1, "failed": 1, "quarantined": false, "reason": null,
            "instances": [{"node": "node-1", "state": "ACTIVE", "since": 1000}, {"node": "node-2", "state": "FAILED"}]}]});
        let text = render_status(&v, 3_000);
        assert!(text.starts_with("blueprint shop (version 3): degraded\n"), "{text}");
        assert!(text.contains("node-1:ACTIVE 2s, node-2:FAILED"), "{text}");
    }

    #[test]
    fn get_lists_where_each_slice_runs() {
        let v = json!({"name": "shop", "version": 1, "slices": [{"artifact": "g:a:1.0.0", "desired": 1, "active": 1,
            "failed": 0, "quarantined": false, "where": [{"node": "node-3", "state": "ACTIVE", "since_ms": 0}]}]});
        assert!(render_get(&v, 5_000).contains("node-3:ACTIVE 5s"));
    }
}
