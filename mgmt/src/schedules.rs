//! `/api/scheduled-tasks`: every scheduled task with its next and last run, one task, and pause, resume and
//! trigger-now.
//!
//! The task records (`schedules/{base}/{task}`, `control::schedule::TaskRecord`) are read linearizably; pause,
//! resume and trigger are compare-and-set writes of the record at the version read (retried a few times when
//! the leader's own writes get there first), so they never undo a run the leader recorded meanwhile. A trigger
//! only asks: the leader runs it at its next pass, recorded like any run.

use crate::{ApiError, Backend, KvEntry};
use crate::{Request, Response};
use control::records::Record;
use control::schedule::{self, TaskRecord};
use kvstore::{AetherKey, ArtifactBase, Name};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// Attempts of one pause/resume/trigger when the record keeps changing under it.
const WRITE_TRIES: usize = 5;

/// Routes under `api/scheduled-tasks` (`rest`: the segments after it).
pub fn route(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("GET", []) => list(backend),
        ("GET", [base, task]) => one(backend, &key(base, task)?),
        ("POST", [base, task, action @ ("pause" | "resume" | "trigger")]) => act(backend, &key(base, task)?, action),
        _ => Err(crate::methods::unrouted(req)),
    }
}

fn key(base: &str, task: &str) -> Result<AetherKey, ApiError> {
    let base = ArtifactBase::parse(base).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let task = Name::parse_as(task, "task").map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(AetherKey::Schedule { base, task })
}

fn wall_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let entries = backend.kv_list("schedules/", false)?;
    let tasks: Vec<Value> = entries.iter().filter_map(|e| view_of(e).ok()).collect();
    Ok(Response::ok(json!({ "tasks": tasks })))
}

fn read(backend: &dyn Backend, key: &AetherKey) -> Result<(TaskRecord, u64), ApiError> {
    let entry = backend.kv_get(key, false)?.ok_or_else(|| ApiError::not_found(format!("no scheduled task {key}")))?;
    let record = TaskRecord::decode(&entry.value).map_err(|e| ApiError::new(500, "bad_record", e.to_string()))?;
    Ok((record, entry.version))
}

fn one(backend: &dyn Backend, key: &AetherKey) -> Result<Response, ApiError> {
    let (record, _) = read(backend, key)?;
    Ok(Response::ok(view(&id_of(key), &record)))
}

fn act(backend: &dyn Backend, key: &AetherKey, action: &str) -> Result<Response, ApiError> {
    let mut last = None;
    for _ in 0..WRITE_TRIES {
        let (record, version) = read(backend, key)?;
        let now_ms = wall_ms();
        let next = match action {
            "pause" => schedule::paused(&record, true, now_ms),
            "resume" => schedule::paused(&record, false, now_ms),
            _ => schedule::triggered(&record, now_ms),
        };
        let command = kvstore::Command::CompareAndSet {
            key: key.clone(),
            expected: Some(kvstore::Revision(version)),
            value: next.encode(),
        };
        match backend.kv_write(command) {
            Ok(_) => return Ok(Response::ok(view(&id_of(key), &next))),
            Err(e) if e.status == 409 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::new(409, "conflict", "the task record kept changing")))
}

fn id_of(key: &AetherKey) -> String {
    key.to_string().strip_prefix("schedules/").unwrap_or_default().to_owned()
}

fn view_of(entry: &KvEntry) -> Result<Value, String> {
    let record = TaskRecord::decode(&entry.value).map_err(|e| e.to_string())?;
    let id = entry.key.strip_prefix("schedules/").unwrap_or(&entry.key);
    Ok(view(id, &record))
}

/// The JSON of one task (`id` is `{group:artifact}/{task}`).
pub fn view(id: &str, r: &TaskRecord) -> Value {
    let (timing, time_zone) = match &r.timing {
        schedule::Timing::Interval { ms } => (json!({ "interval_ms": ms }), Value::Null),
        schedule::Timing::Cron { expression, time_zone } => (json!({ "cron": expression }), json!(time_zone)),
    };
    let missed = match r.missed {
        schedule::MissedRuns::Skip => json!({ "policy": "skip" }),
        schedule::MissedRuns::RunOnce => json!({ "policy": "run-once" }),
        schedule::MissedRuns::RunAll { limit } => json!({ "policy": "run-all", "limit": limit }),
    };
    let last_run = r.last_run.as_ref().map(|l| {
        json!({
            "due_ms": l.due_ms,
            "due": schedule::rfc3339(l.due_ms),
            "started_ms": l.started_ms,
            "node": l.node,
            "trigger": l.trigger,
            "outcome": l.outcome,
            "status": l.status,
            "duration_ms": l.duration_ms,
        })
    });
    json!({
        "id": id,
        "task": id.rsplit('/').next().unwrap_or(id),
        "slice": r.artifact,
        "method": r.method,
        "timing": timing,
        "time_zone": time_zone,
        "missed": missed,
        "paused": r.paused,
        "next_due_ms": r.next_due_ms,
        "next_due": r.next_due_ms.map(schedule::rfc3339),
        "last_run": last_run,
        "runs": r.runs,
        "failures": r.failures,
        "missed_runs": r.missed_runs,
        "waiting": r.waiting,
        "trigger_pending": r.trigger_ms.is_some(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use control::schedule::{MissedRuns, Timing};

    fn record() -> TaskRecord {
        TaskRecord {
            artifact: "g:a:1.0.0".into(),
            method: "tick".into(),
            timing: Timing::Cron { expression: "*/5 * * * *".into(), time_zone: "Europe/Berlin".into() },
            missed: MissedRuns::RunAll { limit: 3 },
            anchor_ms: 0,
            paused: false,
            next_due_ms: Some(1_767_225_600_000),
            last_run: None,
            runs: 2,
            failures: 1,
            missed_runs: 4,
            waiting: None,
            trigger_ms: None,
        }
    }

    #[test]
    fn a_task_shows_its_timing_zone_policy_and_counters() {
        let v = view("g:a/t", &record());
        assert_eq!(v["task"], "t");
        assert_eq!(v["timing"]["cron"], "*/5 * * * *");
        assert_eq!(v["time_zone"], "Europe/Berlin");
        assert_eq!(v["missed"], json!({ "policy": "run-all", "limit": 3 }));
        assert_eq!(v["next_due"], "2026-01-01T00:00:00Z");
        assert_eq!(
            (v["runs"].as_u64(), v["failures"].as_u64(), v["missed_runs"].as_u64()),
            (Some(2), Some(1), Some(4))
        );
        assert!(v["last_run"].is_null());
    }

    #[test]
    fn reading_needs_a_viewer_and_acting_an_operator() {
        use crate::{access_for, Access, Role};
        assert_eq!(access_for("GET", "api/scheduled-tasks"), Access::Role(Role::Viewer));
        assert_eq!(access_for("GET", "api/scheduled-tasks/g:a/t"), Access::Role(Role::Viewer));
        for action in ["pause", "resume", "trigger"] {
            let path = format!("api/scheduled-tasks/g:a/t/{action}");
            assert_eq!(access_for("POST", &path), Access::Role(Role::Operator), "{action}");
            assert_eq!(crate::allowed_methods(&path), Some("POST"));
        }
        assert_eq!(crate::allowed_methods("api/scheduled-tasks/g:a/t/explode"), None);
    }

    #[test]
    fn ids_are_checked_at_the_edge() {
        assert!(key("g:a", "t").is_ok());
        assert_eq!(key("nocolon", "t").unwrap_err().status, 400);
        assert_eq!(key("g:a", "bad/../x").unwrap_err().status, 400);
    }
}
