//! `rollout start|list|show|ratio|promote|complete|rollback`: rollouts (`/api/rollouts`). A rollout runs the
//! new versions of deployed artifacts beside the old ones and moves traffic between them by a ratio; the
//! server checks everything (which blueprint deploys what, the repository, the state a step needs), so this
//! file only builds the request bodies and renders the answers.
//!
//! Invariant: the renderers never fail on any JSON (a missing field is `-`).

use super::{items, Ctx};
use crate::args::{RolloutStart, RolloutVerb};
use crate::client::{encode_path, Request};
use crate::error::CliError;
use crate::table::{age, cell, duration_ms, joined, now_ms, pairs, Table};
use serde_json::{json, Map, Value};

/// Most artifacts one rollout moves (as the server's `control::rollout::ARTIFACTS_MAX`).
const ARTIFACTS_MAX: usize = 8;

pub fn run(verb: &RolloutVerb, ctx: &Ctx) -> Result<(), CliError> {
    let (id, action, body) = match verb {
        RolloutVerb::List => {
            let value = ctx.client.json(&Request::get("/api/rollouts"))?;
            return ctx.show(&value, |v| render_list(v, now_ms()));
        }
        RolloutVerb::Show { id } => {
            let value = ctx.client.json(&Request::get(rollout_path(id)))?;
            return ctx.show(&value, |v| render_rollout(v, now_ms()));
        }
        RolloutVerb::Start(start) => {
            let body = start_body(start)?.to_string().into_bytes();
            let request = Request::new("POST", "/api/rollouts", body).header("Content-Type", "application/json");
            let value = ctx.client.json(&request)?;
            return ctx.show(&value, |v| render_rollout(v, now_ms()));
        }
        RolloutVerb::Ratio { id, new, old } => (id, "ratio", json!({ "new": new, "old": old }).to_string()),
        RolloutVerb::Promote { id } => (id, "promote", String::new()),
        RolloutVerb::Complete { id } => (id, "complete", String::new()),
        RolloutVerb::Rollback { id, reason } => {
            (id, "rollback", reason.as_ref().map(|r| json!({ "reason": r }).to_string()).unwrap_or_default())
        }
    };
    let path = format!("{}/{action}", rollout_path(id));
    let request = Request::new("POST", path, body.into_bytes()).header("Content-Type", "application/json");
    let value = ctx.client.json(&request)?;
    ctx.show(&value, |v| render_rollout(v, now_ms()))
}

fn rollout_path(id: &str) -> String {
    format!("/api/rollouts/{}", encode_path(id, false))
}

/// The body of `POST /api/rollouts` for `rollout start`: one artifact as `artifact`/`version`, several as
/// `artifacts`; options only when given.
pub fn start_body(start: &RolloutStart) -> Result<Value, CliError> {
    if !start.pairs.len().is_multiple_of(2) {
        return Err(CliError::Usage("rollout start takes ARTIFACT VERSION pairs; the last one has no VERSION".into()));
    }
    let moves: Vec<Value> =
        start.pairs.chunks(2).map(|pair| json!({ "artifact": pair[0], "version": pair[1] })).collect();
    if moves.len() > ARTIFACTS_MAX {
        return Err(CliError::Usage(format!("a rollout moves at most {ARTIFACTS_MAX} artifacts, not {}", moves.len())));
    }
    let mut body = Map::new();
    match moves.as_slice() {
        [one] => {
            body.insert("artifact".into(), one["artifact"].clone());
            body.insert("version".into(), one["version"].clone());
        }
        _ => {
            body.insert("artifacts".into(), Value::Array(moves));
        }
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            body.insert(key.into(), value);
        }
    };
    set("id", start.id.as_ref().map(|id| json!(id)));
    set("strategy", start.strategy.as_ref().map(|s| json!(s)));
    set("instances", start.instances.map(|n| json!(n)));
    let stages: Vec<Value> = start.stages.iter().map(|(p, hold)| json!({ "percent": p, "hold_ms": hold })).collect();
    set("stages", (!stages.is_empty()).then_some(Value::Array(stages)));
    let approval = match (start.auto, start.manual) {
        (true, _) => Some(json!("auto")),
        (_, true) => Some(json!("manual")),
        _ => None,
    };
    set("approval", approval);
    let mut thresholds = Map::new();
    if let Some(rate) = start.max_error_rate {
        thresholds.insert("max_error_rate".into(), json!(rate));
    }
    if let Some(ms) = start.max_p99_ms {
        thresholds.insert("max_p99_ms".into(), json!(ms));
    }
    set("thresholds", (!thresholds.is_empty()).then_some(Value::Object(thresholds)));
    set("keep_old_ms", start.keep_old_ms.map(|ms| json!(ms)));
    Ok(Value::Object(body))
}

/// `group:artifact from->to` for each artifact of a rollout.
fn moves(r: &Value) -> Vec<String> {
    items(r, "artifacts")
        .iter()
        .map(|m| format!("{} {}->{}", cell(&m["base"]), cell(&m["from"]), cell(&m["to"])))
        .collect()
}

fn since(r: &Value, now: u64) -> String {
    r["since_ms"].as_u64().map_or_else(|| "-".into(), |ms| format!("{} ago", age(ms, now)))
}

fn share(r: &Value) -> String {
    r["new_share"].as_u64().map_or_else(|| "-".into(), |p| format!("{p}%"))
}

pub fn render_list(v: &Value, now: u64) -> String {
    let mut t = Table::new(&["ID", "STATE", "NEW%", "ARTIFACTS", "STRATEGY", "SINCE"]);
    for r in items(v, "rollouts") {
        t.row(vec![
            cell(&r["id"]),
            cell(&r["state"]),
            share(r),
            joined(&moves(r), ", "),
            cell(&r["strategy"]),
            since(r, now),
        ]);
    }
    t.render_or("no rollouts")
}

fn stage_text(s: &Value) -> String {
    let percent = cell(&s["percent"]);
    match s["hold_ms"].as_u64() {
        Some(0) | None => format!("{percent}%"),
        Some(ms) => format!("{percent}% for {}", duration_ms(ms)),
    }
}

pub fn render_rollout(r: &Value, now: u64) -> String {
    if r["state"] == "UNREADABLE" {
        return pairs(&[("rollout", cell(&r["id"])), ("state", cell(&r["state"])), ("error", cell(&r["error"]))]);
    }
    let stages: Vec<String> = items(r, "stages").iter().map(stage_text).collect();
    let stage = match (r["stage"].as_u64(), stages.len()) {
        (Some(at), n) if n > 0 => format!("{} of {n}", at + 1),
        _ => "-".into(),
    };
    let ratio = format!("{}/{} (new/old)", cell(&r["ratio"]["new"]), cell(&r["ratio"]["old"]));
    let t = &r["thresholds"];
    let thresholds = format!(
        "max error rate {}, max p99 {} ms, window {} ms, min calls {} (judged while shifting: crossed and worse than the old version rolls back)",
        cell(&t["max_error_rate"]),
        cell(&t["max_p99_ms"]),
        cell(&t["window_ms"]),
        cell(&t["min_calls"])
    );
    let mut text = pairs(&[
        ("rollout", cell(&r["id"])),
        ("state", cell(&r["state"])),
        ("new share", share(r)),
        ("ratio", ratio),
        ("blueprint", cell(&r["blueprint"])),
        ("strategy", cell(&r["strategy"])),
        ("approval", cell(&r["approval"])),
        ("stage", stage),
        ("stages", joined(&stages, ", ")),
        ("instances", if r["instances"] == 0 { "as the blueprint".into() } else { cell(&r["instances"]) }),
        ("keep old", r["keep_old_ms"].as_u64().map_or_else(|| "-".into(), |ms| format!("{ms} ms"))),
        ("thresholds", thresholds),
        ("since", since(r, now)),
        ("reason", cell(&r["reason"])),
    ]);
    let mut t = Table::new(&["ARTIFACT", "FROM", "TO"]);
    for m in items(r, "artifacts") {
        t.row(vec![cell(&m["base"]), cell(&m["from"]), cell(&m["to"])]);
    }
    text.push('\n');
    text.push_str(&t.render());
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Verb};
    use clap::Parser;

    fn start(args: &[&str]) -> RolloutStart {
        let cli = Cli::try_parse_from(["aether", "rollout", "start"].iter().chain(args)).unwrap();
        match cli.verb {
            Some(Verb::Rollout(RolloutVerb::Start(start))) => start,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn one_pair_is_artifact_and_version_and_options_only_when_given() {
        let body = start_body(&start(&["org.aether.examples:echo", "2.0.0"])).unwrap();
        assert_eq!(body, json!({"artifact": "org.aether.examples:echo", "version": "2.0.0"}));
        let body = start_body(&start(&[
            "g:echo",
            "2.0.0",
            "--id",
            "e2",
            "--stage",
            "5:1000",
            "--stage",
            "100",
            "--manual",
            "--max-p99-ms",
            "500",
            "--instances",
            "2",
            "--keep-old-ms",
            "0",
        ]))
        .unwrap();
        assert_eq!(
            body,
            json!({
                "artifact": "g:echo", "version": "2.0.0", "id": "e2", "instances": 2,
                "stages": [{"percent": 5, "hold_ms": 1000}, {"percent": 100, "hold_ms": 0}],
                "approval": "manual", "thresholds": {"max_p99_ms": 500}, "keep_old_ms": 0,
            })
        );
    }

    #[test]
    fn several_pairs_move_together_and_an_odd_count_is_a_usage_error() {
        let body = start_body(&start(&["g:orders", "2.0.0", "g:inventory", "1.1.0", "--auto"])).unwrap();
        assert_eq!(body["artifacts"][1], json!({"artifact": "g:inventory", "version": "1.1.0"}));
        assert_eq!(body["approval"], json!("auto"));
        assert!(body.get("artifact").is_none());
        let odd = start_body(&start(&["g:orders", "2.0.0", "g:inventory"])).unwrap_err();
        assert_eq!(odd.exit_code(), crate::error::EXIT_USAGE);
        let nine: Vec<String> = (0..9).flat_map(|i| [format!("g:a{i}"), "2.0.0".to_string()]).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert!(start_body(&start(&nine)).is_err());
    }

    fn shifting() -> Value {
        json!({
            "id": "orders-2.0.0", "state": "SHIFTING", "new_share": 25, "ratio": {"new": 25, "old": 75},
            "blueprint": "shop", "strategy": "rolling", "approval": "manual", "stage": 0, "instances": 0,
            "stages": [{"percent": 10, "hold_ms": 60000}, {"percent": 100, "hold_ms": 0}],
            "thresholds": {"window_ms": 30000, "min_calls": 20}, "keep_old_ms": 0,
            "artifacts": [{"base": "g:orders", "from": "1.0.0", "to": "2.0.0"}],
            "since_ms": 1_000, "created_ms": 1_000,
        })
    }

    #[test]
    fn the_list_shows_state_share_moves_and_age() {
        let v = json!({"rollouts": [shifting(), {"id": "broken", "state": "UNREADABLE", "error": "bad json"}]});
        let text = render_list(&v, 61_000);
        let mut lines = text.lines();
        assert!(
            lines.next().is_some_and(|h| h.starts_with("ID") && h.contains("NEW%") && h.contains("SINCE")),
            "{text}"
        );
        let row = lines.next().unwrap_or_default();
        assert!(row.contains("SHIFTING") && row.contains("25%") && row.contains("g:orders 1.0.0->2.0.0"), "{text}");
        assert!(row.contains("rolling") && row.contains("1m ago"), "{text}");
        assert!(lines.next().is_some_and(|l| l.contains("UNREADABLE")), "{text}");
        assert_eq!(render_list(&json!({"rollouts": []}), 0), "no rollouts\n");
    }

    #[test]
    fn one_rollout_shows_its_stages_ratio_and_artifacts() {
        let text = render_rollout(&shifting(), 2_000);
        assert!(text.contains("1 of 2") && text.contains("10% for 1m, 100%"), "{text}");
        assert!(text.contains("25/75 (new/old)") && text.contains("as the blueprint"), "{text}");
        assert!(text.contains("judged while shifting"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("g:orders") && l.contains("2.0.0")), "{text}");
        let unreadable = render_rollout(&json!({"id": "x", "state": "UNREADABLE", "error": "e"}), 0);
        assert!(unreadable.contains("UNREADABLE") && unreadable.contains('e'), "{unreadable}");
        assert!(!render_rollout(&json!(null), 0).is_empty(), "anything renders");
    }
}
