//! The messaging routes: `GET /api/topics`, `GET /api/topics/{topic}`, `POST /api/topics/{topic}/messages`
//! (publish), and the dead letters: `GET /api/dead-letters[?topic=]`, `GET /api/dead-letters/{id}`,
//! `POST /api/dead-letters/{id}/replay`, `DELETE /api/dead-letters/{id}`.
//!
//! Invariants: the topic view is the node's own (message counts and cursors as applied here, delivery counts
//! and rates of the deliveries this node ran); a publish answers 202 only once the message is applied; a replay
//! publishes the payload to the dead letter's subscription alone, then removes the dead letter at the version
//! it read, so of two replays at once the second removal fails.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::{Request, Response};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Most dead letters one listing answers.
pub const DEAD_LETTERS_LIST_MAX: usize = 1000;

/// One topic as a node sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TopicView {
    pub topic: String,
    /// Messages the topic holds (applied here) and their payload bytes.
    pub messages: usize,
    pub bytes: u64,
    pub subscriptions: Vec<SubscriptionView>,
}

/// One subscription of a topic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SubscriptionView {
    pub artifact: String,
    pub method: String,
    /// `competing` or `broadcast`.
    pub delivery: String,
    /// `round-robin` or `least-loaded` (competing).
    pub strategy: String,
    /// The stored cursor of a competing subscription: every message below it is done.
    pub cursor: Option<u64>,
    /// The stored cursors of a broadcast subscription, by node.
    pub node_cursors: BTreeMap<String, u64>,
    /// Messages at or past the (smallest) cursor.
    pub backlog: usize,
    /// What this node delivered since it started running the subscription, and per second lately.
    pub delivered: u64,
    pub failed: u64,
    pub dead_lettered: u64,
    pub delivered_per_s: f64,
    pub failed_per_s: f64,
    pub dead_lettered_per_s: f64,
}

/// A published message's id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub topic: String,
}

pub fn topics(backend: &dyn Backend) -> Result<Response, ApiError> {
    let topics = backend.topics()?;
    Ok(Response::ok(json!({ "node": backend.cluster_view().map(|v| v.node).ok(), "topics": topics })))
}

pub fn topic(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    check_topic(name)?;
    let topics = backend.topics()?;
    match topics.into_iter().find(|t| t.topic == name) {
        Some(view) => Ok(Response::ok(serde_json::to_value(view).unwrap_or_default())),
        None => Err(ApiError::not_found(format!("topic `{name}` has no messages and no subscriptions"))),
    }
}

pub fn publish(backend: &dyn Backend, name: &str, body: &[u8]) -> Result<Response, ApiError> {
    check_topic(name)?;
    let published = backend.publish(name, body)?;
    Ok(Response::new(202, json!({ "id": published.id, "topic": published.topic })))
}

fn check_topic(name: &str) -> Result<(), ApiError> {
    kvstore::Name::parse_as(name, "topic").map(|_| ()).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn dead_letter_key(id: &str) -> Result<kvstore::AetherKey, ApiError> {
    let id = kvstore::Name::parse_as(id, "dead letter id").map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(kvstore::AetherKey::DeadLetter { id })
}

/// `/api/dead-letters...`.
pub fn dead_letters(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("GET", []) => list(backend, req),
        ("GET", [id]) => show(backend, id),
        ("DELETE", [id]) => delete(backend, id),
        ("POST", [id, "replay"]) => {
            let new_id = backend.replay_dead_letter(&dead_letter_key(id)?)?;
            Ok(Response::new(202, json!({ "id": new_id.id, "topic": new_id.topic, "replayed": id })))
        }
        _ => Err(crate::methods::unrouted(req)),
    }
}

fn list(backend: &dyn Backend, req: &Request) -> Result<Response, ApiError> {
    let topic = req.query.iter().find(|(k, _)| k == "topic").map(|(_, v)| v.as_str());
    if let Some(topic) = topic {
        check_topic(topic)?;
    }
    let entries = backend.kv_list("deadletters/", false)?;
    let mut letters = Vec::new();
    for entry in entries {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&entry.value) else { continue };
        if topic.is_some_and(|t| value.get("topic").and_then(|v| v.as_str()) != Some(t)) {
            continue;
        }
        letters.push(value);
        if letters.len() >= DEAD_LETTERS_LIST_MAX {
            break;
        }
    }
    Ok(Response::ok(json!({ "dead_letters": letters })))
}

fn show(backend: &dyn Backend, id: &str) -> Result<Response, ApiError> {
    let key = dead_letter_key(id)?;
    let entry = backend.kv_get(&key, false)?.ok_or_else(|| ApiError::not_found(format!("no dead letter `{id}`")))?;
    let value: serde_json::Value = serde_json::from_slice(&entry.value)
        .map_err(|e| ApiError::new(500, "internal", format!("dead letter `{id}` does not decode: {e}")))?;
    Ok(Response::ok(value))
}

fn delete(backend: &dyn Backend, id: &str) -> Result<Response, ApiError> {
    let key = dead_letter_key(id)?;
    let entry = backend.kv_get(&key, false)?.ok_or_else(|| ApiError::not_found(format!("no dead letter `{id}`")))?;
    let command = kvstore::Command::CompareAndRemove { key, expected: kvstore::Revision(entry.version) };
    backend.kv_write(command)?;
    Ok(Response::ok(json!({ "deleted": id })))
}

#[cfg(test)]
#[path = "messaging_tests.rs"]
mod tests;
