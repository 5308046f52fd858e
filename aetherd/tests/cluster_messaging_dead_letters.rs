//! Dead letters and back-pressure over real processes (3 nodes, one `inbox` instance each).
//!
//! A `work` subscriber that always fails (every instance switched to failing) gets each message
//! `max_attempts` times (3 here, from the blueprint's `[slices.subscriptions.work]`), then the message is in
//! `GET /api/dead-letters` with its payload, attempts and last error; no instance recorded it. Once the
//! failure is switched off, `POST /api/dead-letters/{id}/replay` delivers it exactly once and removes the dead
//! letter; `DELETE` removes another. A topic holding its bound (`[messaging] max_messages_per_topic`) refuses
//! further publishes with a clear 429, through the API and through a slice's `ctx.publish` alike.

mod messaging_support;

use devcluster::{http, wait_for, LocalCluster};
use messaging_support::{dead_letters, deploy, get_json, inbox_blueprint, publish, seen, start, Via, SETTLE};
use serde_json::Value;
use std::time::Duration;

const TOPIC_BOUND: usize = 20;
const MAX_ATTEMPTS: u64 = 3;

fn switch_failure(c: &LocalCluster, mode: &str) {
    for node in &c.nodes {
        let answer = http(node.app, "POST", &format!("/inbox/fail/{mode}"), b"").unwrap();
        assert_eq!(answer.status, 200, "{}: {}", node.id, answer.text());
        assert_eq!(answer.json()["node"], node.id.as_str(), "the switch reached another node's instance");
    }
}

fn publish_work(c: &LocalCluster, body: &str) -> String {
    let (status, answer, _) = publish(Via::Api(c.nodes[1].management), "work", body.as_bytes(), SETTLE);
    assert_eq!(status, 202, "{answer}");
    answer["id"].as_str().unwrap_or_else(|| panic!("no message id in {answer}")).to_owned()
}

/// Waits for the dead letter of message `message_id` and answers it.
fn dead_letter_of(c: &LocalCluster, message_id: &str) -> Value {
    let mut listed = Vec::new();
    let found = wait_for(SETTLE, || {
        listed = dead_letters(c, 2, "work");
        listed.iter().any(|d| d["message_id"] == message_id)
    });
    assert!(
        found.is_ok(),
        "message {message_id} was not dead-lettered within {SETTLE:?}; listed: {listed:?}; GET /api/topics/work: {}",
        get_json(c, 0, "/api/topics/work")
    );
    listed.into_iter().find(|d| d["message_id"] == message_id).unwrap_or_default()
}

fn times_seen(c: &LocalCluster, body: &str) -> usize {
    (0..3).map(|i| seen(c, i, "work").iter().filter(|b| *b == body).count()).sum()
}

#[test]
fn a_failing_subscriber_dead_letters_replay_delivers_once_and_a_full_topic_answers_429() {
    let c = start("dead-letters", &format!("[messaging]\nmax_messages_per_topic = {TOPIC_BOUND}\n"), None);
    let overrides = format!(
        "[slices.subscriptions.work]\nmax_attempts = {MAX_ATTEMPTS}\nretry_backoff_ms = 50\ntimeout_ms = 2000\n"
    );
    deploy(&c, &inbox_blueprint("letters", &overrides));

    switch_failure(&c, "on");
    let id = publish_work(&c, "doomed");
    let letter = dead_letter_of(&c, &id);
    assert_eq!(letter["topic"], "work", "{letter}");
    assert_eq!(letter["attempts"].as_u64(), Some(MAX_ATTEMPTS), "{letter}");
    assert_eq!(letter["subscriber"]["method"], "work", "{letter}");
    assert_eq!(letter["payload_base64"], "ZG9vbWVk", "the payload is kept: {letter}");
    assert!(letter["last_error"].as_str().is_some_and(|e| !e.is_empty()), "{letter}");
    assert_eq!(times_seen(&c, "doomed"), 0, "a failed delivery was recorded");
    let letter_id = letter["id"].as_str().expect("dead letter without id").to_owned();
    let one = http(c.nodes[0].management, "GET", &format!("/api/dead-letters/{letter_id}"), b"").unwrap();
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["message_id"], id.as_str());

    switch_failure(&c, "off");
    let replay = http(c.nodes[0].management, "POST", &format!("/api/dead-letters/{letter_id}/replay"), b"").unwrap();
    assert!(matches!(replay.status, 200 | 202), "replay: {} {}", replay.status, replay.text());
    let delivered = wait_for(SETTLE, || times_seen(&c, "doomed") >= 1);
    assert!(delivered.is_ok(), "the replayed message was not delivered within {SETTLE:?}");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(times_seen(&c, "doomed"), 1, "a replay delivers once");
    let gone = http(c.nodes[2].management, "GET", &format!("/api/dead-letters/{letter_id}"), b"").unwrap();
    assert_eq!(gone.status, 404, "a replayed dead letter is removed: {}", gone.text());

    // Another one, deleted instead of replayed.
    switch_failure(&c, "on");
    let id = publish_work(&c, "dropped");
    let letter_id = dead_letter_of(&c, &id)["id"].as_str().unwrap_or_default().to_owned();
    switch_failure(&c, "off");
    let deleted = http(c.nodes[1].management, "DELETE", &format!("/api/dead-letters/{letter_id}"), b"").unwrap();
    assert!(matches!(deleted.status, 200 | 204), "delete: {} {}", deleted.status, deleted.text());
    assert!(dead_letters(&c, 0, "work").iter().all(|d| d["id"] != letter_id.as_str()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(times_seen(&c, "dropped"), 0, "a deleted dead letter is not delivered");

    // Back-pressure: `full` has no subscriber, so what is published stays until retention.
    for n in 0..TOPIC_BOUND {
        let (status, answer, _) = publish(Via::Api(c.nodes[n % 3].management), "full", b"x", SETTLE);
        assert_eq!(status, 202, "message {n} of {TOPIC_BOUND}: {answer}");
    }
    // The bound is checked against what the receiving node has applied: wait until it holds them all (the
    // last went through another node, which answered once it had applied it).
    let held = |node: usize| {
        let topic = http(c.nodes[node].management, "GET", "/api/topics/full", b"").unwrap();
        topic.status == 200 && topic.json()["messages"].as_u64() == Some(TOPIC_BOUND as u64)
    };
    assert!(wait_for(SETTLE, || held(0) && held(2)).is_ok(), "the full topic is not applied everywhere");
    let refused = http(c.nodes[0].management, "POST", "/api/topics/full/messages", b"x").unwrap();
    assert_eq!(refused.status, 429, "a full topic: {}", refused.text());
    let text = refused.text().to_lowercase();
    assert!(text.contains("full"), "the refusal says the topic is full: {}", refused.text());
    let through_slice = http(c.nodes[2].app, "POST", "/inbox/publish/full", b"x").unwrap();
    assert_eq!(through_slice.status, 429, "ctx.publish to a full topic: {}", through_slice.text());
    let topic = http(c.nodes[1].management, "GET", "/api/topics/full", b"").unwrap();
    assert_eq!(topic.status, 200, "{}", topic.text());
    eprintln!("dead-lettered after {MAX_ATTEMPTS} attempts, replayed once, deleted; full topic: {}", refused.text());
}
