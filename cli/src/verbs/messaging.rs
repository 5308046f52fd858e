//! `topics`, `publish` and `dead-letters`: pub-sub as the asked node sees it.

use super::{items, read_input, Ctx};
use crate::args::DeadLetterVerb;
use crate::client::{encode_path, query, Request};
use crate::error::CliError;
use crate::table::{cell, Table};
use serde_json::Value;

/// Largest message `publish` reads from stdin (the node's own limit may be lower).
const MESSAGE_BYTES_MAX: usize = 1_000_000;

pub fn topics(topic: Option<&str>, ctx: &Ctx) -> Result<(), CliError> {
    match topic {
        None => {
            let value = ctx.client.json(&Request::get("/api/topics"))?;
            ctx.show(&value, |v| render_topics(items(v, "topics")))
        }
        Some(topic) => {
            let value = ctx.client.json(&Request::get(format!("/api/topics/{}", encode_path(topic, false))))?;
            ctx.show(&value, |v| render_topics(std::slice::from_ref(v)))
        }
    }
}

/// One line per subscription (a topic without any gets one line of its own).
pub fn render_topics(topics: &[Value]) -> String {
    let mut t = Table::new(&[
        "TOPIC",
        "MESSAGES",
        "BYTES",
        "SUBSCRIBER",
        "DELIVERY",
        "CURSOR",
        "BACKLOG",
        "DELIVERED/S",
        "FAILED",
        "DEAD",
    ]);
    for topic in topics {
        let subs = items(topic, "subscriptions");
        if subs.is_empty() {
            t.row(vec![cell(&topic["topic"]), cell(&topic["messages"]), cell(&topic["bytes"])]);
        }
        for s in subs {
            let cursor = match s["cursor"].as_u64() {
                Some(n) => n.to_string(),
                None => {
                    let nodes = s["node_cursors"].as_object().map_or(0, serde_json::Map::len);
                    if nodes == 0 {
                        "-".into()
                    } else {
                        format!("{nodes} nodes")
                    }
                }
            };
            t.row(vec![
                cell(&topic["topic"]),
                cell(&topic["messages"]),
                cell(&topic["bytes"]),
                format!("{}/{}", cell(&s["artifact"]), cell(&s["method"])),
                cell(&s["delivery"]),
                cursor,
                cell(&s["backlog"]),
                cell(&s["delivered_per_s"]),
                cell(&s["failed"]),
                cell(&s["dead_lettered"]),
            ]);
        }
    }
    t.render_or("no topics")
}

pub fn publish(topic: &str, data: Option<&str>, ctx: &Ctx) -> Result<(), CliError> {
    let body = match data {
        Some(text) => text.as_bytes().to_vec(),
        None => read_input(std::path::Path::new("-"), MESSAGE_BYTES_MAX)?,
    };
    let path = format!("/api/topics/{}/messages", encode_path(topic, false));
    let answer = ctx.client.json(&Request::new("POST", path, body))?;
    ctx.show(&answer, |v| format!("{}: message {}\n", cell(&v["topic"]), cell(&v["id"])))
}

pub fn dead_letters(verb: Option<&DeadLetterVerb>, ctx: &Ctx) -> Result<(), CliError> {
    let id_path = |id: &str| format!("/api/dead-letters/{}", encode_path(id, false));
    match verb.unwrap_or(&DeadLetterVerb::List { topic: None }) {
        DeadLetterVerb::List { topic } => {
            let path = format!("/api/dead-letters{}", query(&[("topic", topic.clone())]));
            let value = ctx.client.json(&Request::get(path))?;
            ctx.show(&value, render_dead_letters)
        }
        DeadLetterVerb::Show { id } => {
            let value = ctx.client.json(&Request::get(id_path(id)))?;
            ctx.show(&value, |v| format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default()))
        }
        DeadLetterVerb::Replay { id } => {
            let value = ctx.client.json(&Request::new("POST", format!("{}/replay", id_path(id)), Vec::new()))?;
            ctx.show(&value, |v| format!("{id}: replayed as message {} on {}\n", cell(&v["id"]), cell(&v["topic"])))
        }
        DeadLetterVerb::Delete { id } => {
            let value = ctx.client.json(&Request::new("DELETE", id_path(id), Vec::new()))?;
            ctx.show(&value, |_| format!("{id}: deleted\n"))
        }
    }
}

pub fn render_dead_letters(v: &Value) -> String {
    let mut t = Table::new(&["ID", "TOPIC", "SUBSCRIBER", "ATTEMPTS", "LAST ERROR"]);
    for d in items(v, "dead_letters") {
        t.row(vec![
            cell(&d["id"]),
            cell(&d["topic"]),
            format!("{}/{}", cell(&d["subscriber"]["artifact"]), cell(&d["subscriber"]["method"])),
            cell(&d["attempts"]),
            crate::table::clip(d["last_error"].as_str().unwrap_or("-").to_owned(), 60),
        ]);
    }
    t.render_or("no dead letters")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topics_render_one_line_per_subscription() {
        let topics = json!([{"topic": "work", "messages": 3, "bytes": 30, "subscriptions": [
            {"artifact": "g:inbox:1.0.0", "method": "work", "delivery": "competing", "cursor": 7, "backlog": 2,
             "delivered_per_s": 1.5, "failed": 0, "dead_lettered": 1},
            {"artifact": "g:inbox:1.0.0", "method": "news", "delivery": "broadcast", "cursor": null,
             "node_cursors": {"node-1": 3, "node-2": 4}, "backlog": 3, "delivered_per_s": 0.0, "failed": 0,
             "dead_lettered": 0}]},
            {"topic": "idle", "messages": 0, "bytes": 0, "subscriptions": []}]);
        let text = render_topics(topics.as_array().unwrap());
        assert!(text.contains("g:inbox:1.0.0/work"), "{text}");
        assert!(text.contains("2 nodes"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("idle")), "{text}");
        assert_eq!(render_topics(&[]).trim(), "no topics");
    }

    #[test]
    fn dead_letters_render_their_subscriber_and_error() {
        let v = json!({"dead_letters": [{"id": "m1-aa", "topic": "work", "attempts": 3, "last_error": "500",
            "subscriber": {"artifact": "g:a:1.0.0", "method": "on"}}]});
        let text = render_dead_letters(&v);
        assert!(text.contains("g:a:1.0.0/on") && text.contains("m1-aa"), "{text}");
    }
}
