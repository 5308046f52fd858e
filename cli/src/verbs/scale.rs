//! `scale list|set|clear` and `controller config [set KEY=VALUE...]`: instance counts set by scaling
//! (`/api/scale`) and the scaling controller's thresholds (`/api/controller/config`). The server checks
//! everything (that a blueprint deploys the slice, its `min_instances..=max_instances`, the thresholds'
//! ranges and order), so this file only builds the request bodies and renders the answers.
//!
//! Invariants: a threshold change sends only the keys given, each once; the renderers never fail on any
//! JSON (a missing field is `-`).

use super::{items, Ctx};
use crate::args::{ControllerConfigVerb, ControllerVerb, ScaleVerb};
use crate::client::{encode_path, Request};
use crate::error::CliError;
use crate::table::{cell, clip, pairs, Table};
use serde_json::{json, Map, Number, Value};

/// Longest reason shown in a `scale list` row (the server keeps up to 512 bytes; `--json` shows it whole).
const REASON_CHARS_MAX: usize = 80;

/// The thresholds in the order `controller config` shows them (the server's `ScalingConfig` fields).
const THRESHOLDS: [&str; 6] = ["cpu_high", "cpu_low", "calls_high", "calls_low", "cooldown_ms", "warmup_ms"];

pub fn scale(verb: &ScaleVerb, ctx: &Ctx) -> Result<(), CliError> {
    match verb {
        ScaleVerb::List => {
            let value = ctx.client.json(&Request::get("/api/scale"))?;
            ctx.show(&value, render_list)
        }
        ScaleVerb::Set { artifact, instances, reason } => {
            let body = set_body(artifact, *instances, reason.as_deref()).to_string().into_bytes();
            let value = ctx.client.json(&json_request("POST", "/api/scale".into(), body))?;
            ctx.show(&value, render_set)
        }
        ScaleVerb::Clear { artifact } => {
            let path = format!("/api/scale/{}", encode_path(artifact, false));
            let value = ctx.client.json(&Request::new("DELETE", path, Vec::new()))?;
            ctx.show(&value, |v| format!("{}: {}\n", cell(&v["artifact"]), cell(&v["note"])))
        }
    }
}

pub fn controller(verb: &ControllerVerb, ctx: &Ctx) -> Result<(), CliError> {
    let ControllerVerb::Config { action } = verb;
    let value = match action {
        None => ctx.client.json(&Request::get("/api/controller/config"))?,
        Some(ControllerConfigVerb::Set { pairs }) => {
            let body = config_body(pairs)?.to_string().into_bytes();
            ctx.client.json(&json_request("POST", "/api/controller/config".into(), body))?
        }
    };
    ctx.show(&value, render_config)
}

fn json_request(method: &'static str, path: String, body: Vec<u8>) -> Request {
    Request::new(method, path, body).header("Content-Type", "application/json")
}

/// The body of `POST /api/scale`: the reason only when given (the server has its default).
pub fn set_body(artifact: &str, instances: u32, reason: Option<&str>) -> Value {
    let mut body = json!({ "artifact": artifact, "instances": instances });
    if let Some(reason) = reason {
        body["reason"] = json!(reason);
    }
    body
}

/// The body of `POST /api/controller/config`: the keys given, each once (a key given twice is a usage error
/// rather than a silent choice of one of the values).
pub fn config_body(changes: &[(String, Number)]) -> Result<Value, CliError> {
    let mut body = Map::new();
    for (key, value) in changes {
        if body.insert(key.clone(), Value::Number(value.clone())).is_some() {
            return Err(CliError::Usage(format!("{key} is given twice")));
        }
    }
    Ok(Value::Object(body))
}

/// One row per scale record; a record the node cannot read shows its error as the reason.
pub fn render_list(v: &Value) -> String {
    let mut t = Table::new(&["ARTIFACT", "INSTANCES", "RUNNING", "BY", "REASON"]);
    for s in items(v, "scales") {
        let reason = match s["error"].as_str() {
            Some(error) => format!("unreadable: {error}"),
            None => cell(&s["reason"]),
        };
        t.row(vec![
            cell(&s["artifact"]),
            cell(&s["instances"]),
            cell(&s["running"]),
            cell(&s["by"]),
            clip(crate::table::one_line(&reason), REASON_CHARS_MAX),
        ]);
    }
    t.render_or("no scale set: every slice runs its blueprint's instances")
}

pub fn render_set(v: &Value) -> String {
    let bounds = format!("{} to {}", cell(&v["min_instances"]), cell(&v["max_instances"]));
    pairs(&[
        ("artifact", cell(&v["artifact"])),
        ("instances", cell(&v["instances"])),
        ("blueprint", cell(&v["blueprint"])),
        ("bounds", bounds),
        ("autoscale", cell(&v["autoscale"])),
        ("note", cell(&v["note"])),
    ])
}

/// The thresholds in a fixed order, then any field a newer server sends; then where they come from.
pub fn render_config(v: &Value) -> String {
    let scaling = &v["scaling"];
    let mut rows: Vec<(&str, String)> = THRESHOLDS.iter().map(|k| (*k, cell(&scaling[*k]))).collect();
    for (key, value) in scaling.as_object().into_iter().flatten() {
        if !THRESHOLDS.contains(&key.as_str()) {
            rows.push((key.as_str(), cell(value)));
        }
    }
    let source = match v["stored"].as_bool() {
        Some(true) => "stored (thresholds/scaling)",
        Some(false) => "the defaults (nothing stored)",
        None => "-",
    };
    rows.push(("source", source.to_string()));
    pairs(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{Cli, Verb};
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("aether").chain(args.iter().copied()))
    }

    fn config_set(args: &[&str]) -> Vec<(String, Number)> {
        let cli = parse(&[&["controller", "config", "set"][..], args].concat()).unwrap();
        match cli.verb {
            Some(Verb::Controller(ControllerVerb::Config { action: Some(ControllerConfigVerb::Set { pairs }) })) => {
                pairs
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scale_set_sends_the_count_and_the_reason_only_when_given() {
        let cli = parse(&["scale", "set", "org.example:a", "3", "--reason", "sale tonight"]).unwrap();
        let Some(Verb::Scale(ScaleVerb::Set { artifact, instances, reason })) = cli.verb else {
            panic!("{:?}", cli.verb)
        };
        assert_eq!(
            set_body(&artifact, instances, reason.as_deref()),
            json!({"artifact": "org.example:a", "instances": 3, "reason": "sale tonight"})
        );
        assert_eq!(set_body("g:a", 1, None), json!({"artifact": "g:a", "instances": 1}));
        for bad in [
            &["scale", "set", "g:a"][..],
            &["scale", "set", "g:a", "-1"],
            &["scale", "set", "g:a", "many"],
            &["scale", "clear"],
            &["scale"],
        ] {
            let error = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn controller_config_set_sends_only_the_keys_given_as_numbers() {
        let body = config_body(&config_set(&["cooldown_ms=5000", "cpu_high=62.5", "warmup_ms=1e3"])).unwrap();
        assert_eq!(body, json!({"cooldown_ms": 5000, "cpu_high": 62.5, "warmup_ms": 1000}));
        assert!(body["cooldown_ms"].is_u64(), "an _ms threshold goes as an integer: {body}");
        let twice = config_body(&config_set(&["cpu_low=10", "cpu_low=20"])).unwrap_err();
        assert_eq!(twice.exit_code(), crate::error::EXIT_USAGE);
        assert!(matches!(
            parse(&["controller", "config"]).unwrap().verb,
            Some(Verb::Controller(ControllerVerb::Config { action: None }))
        ));
        for bad in [
            &["controller", "config", "set"][..],
            &["controller", "config", "set", "cooldown_ms"],
            &["controller", "config", "set", "cooldown_ms=soon"],
            &["controller", "config", "set", "cpu_high=inf"],
            &["controller", "config", "set", "cpu_high=NaN"],
            &["controller", "config", "set", "=5"],
            &["controller", "config", "set", "cpu-high=5"],
            &["controller"],
        ] {
            let error = parse(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert_eq!(error.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn the_list_shows_count_running_who_and_why() {
        let v = json!({"scales": [
            {"artifact": "org.example:a", "instances": 3, "by": "controller", "since_ms": 1, "blueprint": "shop",
             "running": 2, "reason": "CPU 95% on the nodes running it, over 80%: 2 -> 3 instances (max 4)"},
            {"artifact": "org.example:b", "instances": 2, "by": "operator", "reason": "sale\ntonight",
             "running": null},
            {"artifact": "org.example:c", "error": "scale record: bad json"},
        ]});
        let text = render_list(&v);
        let mut lines = text.lines();
        assert_eq!(
            lines.next().map(str::split_whitespace).map(Iterator::collect::<Vec<_>>),
            Some(vec!["ARTIFACT", "INSTANCES", "RUNNING", "BY", "REASON"]),
            "{text}"
        );
        let a = lines.next().unwrap_or_default();
        assert!(a.starts_with("org.example:a") && a.contains(" 3 ") && a.contains(" 2 "), "{text}");
        assert!(a.contains("controller") && a.contains("CPU 95%"), "{text}");
        let b = lines.next().unwrap_or_default();
        assert!(b.contains("operator") && b.contains(" - ") && b.contains("sale tonight"), "{text}");
        let c = lines.next().unwrap_or_default();
        assert!(c.contains("unreadable: scale record: bad json"), "{text}");
        assert_eq!(render_list(&json!({"scales": []})), "no scale set: every slice runs its blueprint's instances\n");
        let long = json!({"scales": [{"artifact": "g:a", "reason": "x".repeat(512)}]});
        assert!(render_list(&long).lines().all(|l| l.chars().count() < 120), "long reasons are clipped");
        assert!(!render_list(&json!(null)).is_empty(), "anything renders");
    }

    #[test]
    fn a_set_shows_the_bounds_and_the_note() {
        let v = json!({"artifact": "org.example:a", "instances": 3, "blueprint": "shop", "min_instances": 1,
            "max_instances": 4, "autoscale": true, "note": "set; the slice is autoscaled"});
        let text = render_set(&v);
        assert!(text.contains("bounds:") && text.contains("1 to 4"), "{text}");
        assert!(text.contains("autoscale:") && text.contains("yes") && text.contains("autoscaled"), "{text}");
    }

    #[test]
    fn the_config_shows_every_threshold_in_order_and_where_it_comes_from() {
        let v = json!({"scaling": {"warmup_ms": 10000, "cpu_low": 20.0, "cpu_high": 80.0, "calls_high": 500.0,
            "calls_low": 50.0, "cooldown_ms": 30000, "later_field": 7}, "stored": false});
        let text = render_config(&v);
        let keys: Vec<&str> = text.lines().filter_map(|l| l.split(':').next()).collect();
        assert_eq!(
            keys,
            ["cpu_high", "cpu_low", "calls_high", "calls_low", "cooldown_ms", "warmup_ms", "later_field", "source"],
            "{text}"
        );
        assert!(text.contains("30000") && text.contains("the defaults"), "{text}");
        assert!(render_config(&json!({"stored": true})).contains("stored"), "missing fields render as -");
    }
}
