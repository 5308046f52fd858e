//! `events` (a page, or `--follow` over the server-sent event stream), `metrics` (latest or
//! `--history`) and `invocations` (per method, or `--slow`).
//!
//! Following reconnects when the stream breaks: to the same node with `Last-Event-ID` (sequence numbers
//! are per node), else to the next node asking for the events since the last one printed, by time.

use super::{items, Ctx};
use crate::args::{EventsArgs, InvocationsArgs, MetricsArgs};
use crate::client::{query, Request, Target};
use crate::error::CliError;
use crate::table::{bytes, cell, clip, float, joined, micros, now_ms, one_line, utc, Table};
use crate::wire::{next_sse_event, BODY_BYTES_MAX};
use serde_json::Value;
use std::io::Read;
use std::time::Duration;

/// The server sends a keepalive every 15 s; silence for this long means the stream is dead.
const STREAM_SILENCE_MAX: Duration = Duration::from_secs(45);
/// Pause before reconnecting a broken stream.
const RECONNECT_PAUSE: Duration = Duration::from_secs(1);

pub fn events(args: &EventsArgs, ctx: &Ctx) -> Result<(), CliError> {
    if args.follow {
        return follow(args, ctx);
    }
    let limit = args.limit.map(|n| n.to_string());
    let path = format!("/api/events{}", query(&[("since", args.since.clone()), ("limit", limit)]));
    let value = ctx.client.json(&Request::get(path))?;
    ctx.show(&value, render_events)
}

pub fn render_events(v: &Value) -> String {
    let mut t = Table::new(&["SEQ", "TIME (UTC)", "NODE", "KIND", "DATA"]);
    for e in items(v, "events") {
        t.row(vec![
            cell(&e["seq"]),
            e["time_ms"].as_u64().map_or("-".into(), utc),
            cell(&e["node"]),
            cell(&e["kind"]),
            clip(event_data(&e["data"]), 100),
        ]);
    }
    let mut text = t.render_or("no events");
    text.push_str(&format!("next: {} (pass as --since to continue)\n", cell(&v["next"])));
    text
}

/// One followed event as one line.
pub fn event_line(e: &Value) -> String {
    format!(
        "{:>6}  {}  {:<8}  {:<18}  {}\n",
        cell(&e["seq"]),
        e["time_ms"].as_u64().map_or("-".into(), utc),
        cell(&e["node"]),
        cell(&e["kind"]),
        event_data(&e["data"])
    )
}

/// An event's data as `key=value` pairs (null as `-`): shorter than JSON, so a clipped cell still shows the
/// last fields of a long one (`slice_state`'s `to` after its artifact); `--json` has the exact data.
pub fn event_data(data: &Value) -> String {
    let Some(fields) = data.as_object() else { return cell(data) };
    let pairs: Vec<String> = fields.iter().map(|(k, v)| format!("{}={}", one_line(k), cell(v))).collect();
    if pairs.is_empty() {
        return "-".into();
    }
    pairs.join(" ")
}

/// Where a followed stream stands: the node it came from, the last event id and when it was printed.
struct Cursor {
    node: Option<Target>,
    last_id: Option<String>,
    last_ms: u64,
}

fn follow(args: &EventsArgs, ctx: &Ctx) -> Result<(), CliError> {
    let targets = ctx.client.targets.clone();
    let mut cursor = Cursor { node: None, last_id: None, last_ms: now_ms() };
    let mut first = Some(Request::get(format!("/api/events/stream{}", query(&[("since", args.since.clone())]))));
    loop {
        let stream = match (first.take(), &cursor.node) {
            (Some(request), _) => ctx.client.stream(&request, &targets, STREAM_SILENCE_MAX)?,
            (None, Some(node)) => reconnect(ctx, &cursor, node, &targets)?,
            (None, None) => return Err(CliError::Unreachable { tried: Vec::new() }),
        };
        let mut stream = stream;
        if stream.head.status != 200 {
            let mut body = Vec::new();
            let _ = stream.body.by_ref().take(BODY_BYTES_MAX as u64).read_to_end(&mut body);
            let reply = crate::client::Reply { status: stream.head.status, body, node: stream.node };
            return reply.ok_json().map(|_| ());
        }
        cursor.node = targets.iter().find(|t| t.to_string() == stream.node).cloned();
        let why = loop {
            match next_sse_event(&mut stream.body) {
                Ok(Some(event)) => {
                    cursor.last_id = event.id.clone().or(cursor.last_id.take());
                    cursor.last_ms = now_ms();
                    print_event(&event.data, ctx.json);
                }
                Ok(None) => break "the stream ended".to_string(),
                Err(e) => break e.to_string(),
            }
        };
        eprintln!("aether: event stream from {}: {why}; reconnecting", stream.node);
        std::thread::sleep(RECONNECT_PAUSE);
    }
}

/// The same node with `Last-Event-ID`; failing that, the other nodes from the time of the last event.
fn reconnect(
    ctx: &Ctx,
    cursor: &Cursor,
    node: &Target,
    targets: &[Target],
) -> Result<crate::client::Streaming, CliError> {
    let mut same = Request::get("/api/events/stream");
    if let Some(id) = &cursor.last_id {
        same = same.header("Last-Event-ID", id.clone());
    }
    let first = ctx.client.stream(&same, std::slice::from_ref(node), STREAM_SILENCE_MAX);
    let Err(CliError::Unreachable { tried }) = first else { return first };
    let seconds = now_ms().saturating_sub(cursor.last_ms) / 1_000 + 1;
    let others: Vec<Target> = targets.iter().filter(|t| *t != node).cloned().collect();
    let by_time = Request::get(format!("/api/events/stream?since={seconds}s"));
    ctx.client.stream(&by_time, &others, STREAM_SILENCE_MAX).map_err(|e| match e {
        CliError::Unreachable { tried: more } => CliError::Unreachable { tried: [tried, more].concat() },
        other => other,
    })
}

fn print_event(data: &str, json: bool) {
    let parsed: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    if json {
        super::emit(&format!("{}\n", if parsed.is_null() { data.to_string() } else { parsed.to_string() }));
    } else if parsed.is_object() {
        super::emit(&event_line(&parsed));
    } else {
        super::emit(&format!("{}\n", crate::table::one_line(data)));
    }
}

pub fn metrics(args: &MetricsArgs, ctx: &Ctx) -> Result<(), CliError> {
    match &args.history {
        None => {
            let value = ctx.client.json(&Request::get("/api/metrics"))?;
            ctx.show(&value, render_metrics)
        }
        Some(range) => {
            let path = format!("/api/metrics/history{}", query(&[("range", Some(range.clone()))]));
            let value = ctx.client.json(&Request::get(path))?;
            ctx.show(&value, render_history)
        }
    }
}

pub fn render_metrics(v: &Value) -> String {
    let mut text = format!("answered by {}, leader {}\n", cell(&v["node"]), cell(&v["leader"]));
    let mut t = Table::new(&[
        "NODE",
        "AGE",
        "CPU%",
        "RSS",
        "THREADS",
        "LAG P99",
        "CONN M/A/C",
        "SLOTS/S",
        "NULL%",
        "CALLS/S",
        "ERRORS/S",
    ]);
    for n in items(v, "nodes") {
        let c = &n["connections"];
        let null_share = n["consensus"]["null_share"].as_f64().map_or("-".into(), |s| format!("{:.1}", s * 100.0));
        t.row(vec![
            cell(&n["node"]),
            n["age_ms"].as_u64().map_or("-".into(), crate::table::duration_ms),
            float(&n["cpu_percent"], 1),
            bytes(&n["rss_bytes"]),
            cell(&n["threads"]),
            format!("{}ms", float(&n["loop_lag_ms"]["p99"], 2)),
            format!("{}/{}/{}", cell(&c["management"]), cell(&c["app"]), cell(&c["cluster"])),
            float(&n["consensus"]["slots_per_sec"], 1),
            null_share,
            float(&n["invocations"]["calls_per_sec"], 1),
            float(&n["invocations"]["errors_per_sec"], 1),
        ]);
    }
    text.push_str(&t.render());
    text
}

pub fn render_history(v: &Value) -> String {
    let mut text = format!("range {}, one point every {} ms\n", cell(&v["range"]), cell(&v["step_ms"]));
    let Some(nodes) = v["nodes"].as_object() else { return text };
    for (node, points) in nodes {
        let mut t = Table::new(&["TIME (UTC)", "CPU%", "RSS", "CALLS/S", "ERRORS/S", "LAG P99", "SLOTS/S"]);
        for p in points.as_array().map_or(&[][..], Vec::as_slice) {
            t.row(vec![
                p["time_ms"].as_u64().map_or("-".into(), utc),
                float(&p["cpu_percent"], 1),
                bytes(&p["rss_bytes"]),
                float(&p["calls_per_sec"], 1),
                float(&p["errors_per_sec"], 1),
                format!("{}ms", float(&p["loop_lag_p99_ms"], 2)),
                float(&p["slots_per_sec"], 1),
            ]);
        }
        text.push_str(&format!("\n{node}\n"));
        text.push_str(&t.render_or("no points"));
    }
    text
}

pub fn invocations(args: &InvocationsArgs, ctx: &Ctx) -> Result<(), CliError> {
    if args.slow {
        let path = format!("/api/invocation-metrics/slow{}", query(&[("limit", args.limit.map(|n| n.to_string()))]));
        let value = ctx.client.json(&Request::get(path))?;
        return ctx.show(&value, render_slow);
    }
    let filters = [("artifact", args.artifact.clone()), ("method", args.method.clone())];
    let value = ctx.client.json(&Request::get(format!("/api/invocation-metrics{}", query(&filters))))?;
    ctx.show(&value, render_invocations)
}

pub fn render_invocations(v: &Value) -> String {
    let mut t = Table::new(&["ARTIFACT", "METHOD", "CALLS", "ERRORS", "P50", "P95", "P99", "MAX", "BY NODE"]);
    for i in items(v, "invocations") {
        let l = &i["latency_us"];
        let by_node: Vec<String> =
            items(i, "nodes").iter().map(|n| format!("{}:{}", cell(&n["node"]), cell(&n["calls"]))).collect();
        t.row(vec![
            cell(&i["artifact"]),
            cell(&i["method"]),
            cell(&i["calls"]),
            cell(&i["errors"]),
            micros(&l["p50"]),
            micros(&l["p95"]),
            micros(&l["p99"]),
            micros(&l["max"]),
            joined(&by_node, " "),
        ]);
    }
    t.render_or("no invocations recorded")
}

pub fn render_slow(v: &Value) -> String {
    let mut text = format!("calls slower than {} ms, newest first\n", cell(&v["threshold_ms"]));
    let mut t = Table::new(&["TIME (UTC)", "REQUEST ID", "NODE", "ARTIFACT", "METHOD", "DURATION", "STATUS"]);
    for s in items(v, "slow") {
        t.row(vec![
            s["time_ms"].as_u64().map_or("-".into(), utc),
            cell(&s["request_id"]),
            cell(&s["node"]),
            cell(&s["artifact"]),
            cell(&s["method"]),
            micros(&s["duration_us"]),
            cell(&s["status"]),
        ]);
    }
    text.push_str(&t.render_or("no slow calls"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_render_with_times_and_the_next_cursor() {
        let v = json!({"events": [{"seq": 7, "time_ms": 0, "node": "node-2", "kind": "node_down",
            "data": {"node": "node-3"}}], "next": 7});
        let text = render_events(&v);
        assert!(text.contains("7    1970-01-01 00:00:00.000  node-2  node_down  node=node-3\n"), "{text}");
        assert!(text.ends_with("next: 7 (pass as --since to continue)\n"));
        assert!(event_line(&v["events"][0]).starts_with("     7  1970-01-01 00:00:00.000  node-2    node_down "));
    }

    #[test]
    fn event_data_shows_every_field_as_key_value() {
        let data = json!({"artifact": "org.aether.examples:orders:1.0.0", "from": "ACTIVATING", "node": "node-2",
            "reason": null, "to": "ACTIVE"});
        assert_eq!(
            event_data(&data),
            "artifact=org.aether.examples:orders:1.0.0 from=ACTIVATING node=node-2 reason=- to=ACTIVE"
        );
        assert_eq!(event_data(&json!({})), "-");
        assert_eq!(event_data(&json!({"level": null, "target": "net"})), "level=- target=net");
        assert_eq!(event_data(&json!({"a\nb": "x\ny"})), "a b=x y");
        let v = json!({"events": [{"seq": 1, "time_ms": 0, "node": "node-2", "kind": "slice_state", "data": data}],
            "next": 1});
        assert!(render_events(&v).contains(" to=ACTIVE\n"), "{}", render_events(&v));
    }

    #[test]
    fn metrics_render_one_row_per_node() {
        let v = json!({"time_ms": 1, "node": "node-1", "leader": "node-1", "nodes": [{"node": "node-1", "age_ms": 200,
            "cpu_percent": 1.25, "rss_bytes": 10_485_760, "threads": 9, "loop_lag_ms": {"p50": 0.1, "p99": 0.5, "max": 2.0},
            "connections": {"management": 1, "app": 0, "cluster": 2}, "consensus": {"applied_slot": 5,
            "slots_per_sec": 3.0, "null_share": 0.5, "phases_per_slot": 1.0}, "invocations": {"calls": 1, "errors": 0,
            "calls_per_sec": 10.0, "errors_per_sec": 0.0}}]});
        let text = render_metrics(&v);
        assert!(text.starts_with("answered by node-1, leader node-1\n"), "{text}");
        assert!(
            text.contains("node-1  200ms  1.2   10.0MiB  9        0.50ms   1/0/2       3.0      50.0   10.0     0.0"),
            "{text}"
        );
    }

    #[test]
    fn history_renders_a_table_per_node() {
        let v = json!({"range": "5m", "step_ms": 1000, "nodes": {"node-1": [{"time_ms": 1000, "cpu_percent": 2.0,
            "rss_bytes": 1024, "calls_per_sec": 1.0, "errors_per_sec": 0.0, "loop_lag_p99_ms": 0.25, "slots_per_sec": 4.0}],
            "node-2": []}});
        let text = render_history(&v);
        assert!(text.contains("\nnode-1\nTIME (UTC)"), "{text}");
        assert!(text.contains("1970-01-01 00:00:01.000  2.0   1.0KiB  1.0      0.0       0.25ms   4.0"), "{text}");
        assert!(text.ends_with("node-2\nno points\n"));
    }

    #[test]
    fn invocations_and_slow_calls_render_latencies_in_ms() {
        let v = json!({"invocations": [{"artifact": "g:a:1.0.0", "method": "echo", "calls": 10, "errors": 1,
            "latency_us": {"p50": 100, "p95": 900, "p99": 1500, "max": 20000}, "nodes": [{"node": "node-1", "calls": 10, "errors": 1}]}]});
        assert!(render_invocations(&v).contains("echo    10     1       0.10ms  0.90ms  1.50ms  20.00ms  node-1:10"));
        let slow = json!({"threshold_ms": 100, "slow": [{"request_id": "r1", "node": "node-2", "artifact": "g:a:1.0.0",
            "method": "echo", "duration_us": 250000, "time_ms": 0, "status": 200}]});
        let text = render_slow(&slow);
        assert!(text.starts_with("calls slower than 100 ms, newest first\n"));
        assert!(text.contains("r1          node-2  g:a:1.0.0  echo    250.00ms  200"), "{text}");
    }
}
