//! `member list|add|remove`: the cluster's membership (`/api/members`). Adding makes the node a learner;
//! the leader makes it a voter once it has caught up, which `member list` shows.

use super::{items, Ctx};
use crate::client::{encode_path, Request};
use crate::error::CliError;
use crate::table::{cell, Table};
use serde_json::{json, Value};

pub fn list(ctx: &Ctx) -> Result<(), CliError> {
    let value = ctx.client.json(&Request::get("/api/members"))?;
    ctx.show(&value, render)
}

pub fn add(id: &str, address: &str, ctx: &Ctx) -> Result<(), CliError> {
    let body = json!({ "id": id, "address": address }).to_string().into_bytes();
    let request = Request::new("POST", "/api/members", body).header("Content-Type", "application/json");
    let value = ctx.client.send(&request)?.ok_json()?;
    ctx.show(&value, |v| {
        format!(
            "{id} is a learner now: start it with `join = true` in [cluster]; it becomes a voter once it has \
             caught up.\n\n{}",
            render(v)
        )
    })
}

pub fn remove(id: &str, ctx: &Ctx) -> Result<(), CliError> {
    let path = format!("/api/members/{}", encode_path(id, false));
    let value = ctx.client.send(&Request::new("DELETE", path, Vec::new()))?.ok_json()?;
    ctx.show(&value, render)
}

pub fn render(v: &Value) -> String {
    let mut table = Table::new(&["MEMBER", "REPLICA", "ADDRESS", "ROLE", "NEXT SLOT"]);
    for m in items(v, "members") {
        table.row(vec![
            cell(&m["id"]),
            cell(&m["replica"]),
            cell(&m["address"]),
            cell(&m["role"]),
            cell(&m["next_slot"]),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_render_one_row_each_with_their_role() {
        let v = json!({"members": [
            {"id": "node-1", "replica": 0, "address": "127.0.0.1:7001", "role": "voter", "next_slot": 40},
            {"id": "node-4", "replica": 3, "address": "127.0.0.1:7004", "role": "learner", "next_slot": null},
        ]});
        let text = render(&v);
        assert!(text.lines().next().is_some_and(|h| h.starts_with("MEMBER")), "{text}");
        assert!(text.contains("node-4") && text.contains("learner"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
    }
}
