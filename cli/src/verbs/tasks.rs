//! `tasks`, `tasks pause|resume|trigger ID`: the scheduled tasks slices declare (`/api/scheduled-tasks`).

use super::{items, Ctx};
use crate::args::TasksVerb;
use crate::client::{encode_path, Request};
use crate::error::CliError;
use crate::table::{cell, clip, Table};
use serde_json::Value;

pub fn run(verb: Option<&TasksVerb>, ctx: &Ctx) -> Result<(), CliError> {
    let (action, id) = match verb {
        None => {
            let value = ctx.client.json(&Request::get("/api/scheduled-tasks"))?;
            return ctx.show(&value, render_tasks);
        }
        Some(TasksVerb::Pause { id }) => ("pause", id),
        Some(TasksVerb::Resume { id }) => ("resume", id),
        Some(TasksVerb::Trigger { id }) => ("trigger", id),
    };
    let path = format!("{}/{action}", task_path(id)?);
    let value = ctx.client.json(&Request::new("POST", path, Vec::new()))?;
    let done = match action {
        "pause" => "paused",
        "resume" => "resumed",
        _ => "triggered: the leader runs it at once",
    };
    ctx.show(&value, |v| format!("{}: {done}\n", cell(&v["id"])))
}

/// `/api/scheduled-tasks/{group:artifact}/{task}` for an id `group:artifact/task`.
fn task_path(id: &str) -> Result<String, CliError> {
    match id.rsplit_once('/') {
        Some((base, task)) if !base.is_empty() && !task.is_empty() => {
            Ok(format!("/api/scheduled-tasks/{}/{}", encode_path(base, false), encode_path(task, false)))
        }
        _ => Err(CliError::Usage(format!("task id `{id}`: expected group:artifact/task (see `aether tasks`)"))),
    }
}

fn timing(t: &Value) -> String {
    match (t["timing"]["interval_ms"].as_u64(), t["timing"]["cron"].as_str()) {
        (Some(ms), _) => format!("every {ms} ms"),
        (None, Some(cron)) => format!("{cron} {}", t["time_zone"].as_str().unwrap_or("UTC")),
        _ => "-".into(),
    }
}

fn last_run(t: &Value) -> String {
    let last = &t["last_run"];
    if last.is_null() {
        return "-".into();
    }
    let status = last["status"].as_u64().map_or(String::new(), |s| format!(" {s}"));
    let took = last["duration_ms"].as_u64().map_or(String::new(), |ms| format!(" {ms}ms"));
    format!("{} {}{status}{took} on {}", cell(&last["due"]), cell(&last["outcome"]), cell(&last["node"]))
}

pub fn render_tasks(v: &Value) -> String {
    let mut t = Table::new(&["ID", "TIMING", "MISSED", "NEXT", "LAST RUN", "RUNS", "FAILED", "MISSED RUNS", "STATE"]);
    for task in items(v, "tasks") {
        let state = match (task["paused"].as_bool(), task["waiting"].as_str()) {
            (Some(true), _) => "paused".to_string(),
            (_, Some(why)) => clip(format!("waiting: {why}"), 40),
            _ => "-".to_string(),
        };
        t.row(vec![
            cell(&task["id"]),
            timing(task),
            cell(&task["missed"]["policy"]),
            cell(&task["next_due"]),
            last_run(task),
            cell(&task["runs"]),
            cell(&task["failures"]),
            cell(&task["missed_runs"]),
            state,
        ]);
    }
    t.render_or("no scheduled tasks")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_task_row_shows_timing_next_and_last_run() {
        let v = json!({"tasks": [{
            "id": "org.aether.examples:ticker/minutely", "timing": {"cron": "* * * * *"}, "time_zone": "UTC",
            "missed": {"policy": "run-once"}, "next_due": "2026-11-30T20:16:00Z", "paused": false,
            "last_run": {"due": "2026-11-30T20:15:00Z", "outcome": "ok", "status": 200, "duration_ms": 3, "node": "node-1"},
            "runs": 5, "failures": 0, "missed_runs": 1, "waiting": null
        }]});
        let text = render_tasks(&v);
        assert!(text.contains("org.aether.examples:ticker/minutely"), "{text}");
        assert!(text.contains("* * * * * UTC") && text.contains("run-once"), "{text}");
        assert!(text.contains("2026-11-30T20:15:00Z ok 200 3ms on node-1"), "{text}");
        assert_eq!(render_tasks(&json!({"tasks": []})), "no scheduled tasks\n");
    }

    #[test]
    fn ids_map_to_paths_and_bad_ids_are_usage_errors() {
        assert_eq!(task_path("g:a/t").unwrap(), "/api/scheduled-tasks/g:a/t");
        assert!(task_path("nothing").is_err());
        assert!(task_path("g:a/").is_err());
    }
}
