//! The ring: positions, dedup of merged events, the bound, reading from a cursor or an age, and peer
//! batches.

use super::*;
use serde_json::json;

fn event(origin: &str, origin_seq: u64, time_ms: u64) -> Event {
    Event { origin: origin.into(), origin_seq, time_ms, node: origin.into(), kind: "node_up", data: json!({}) }
}

#[test]
fn recorded_events_get_rising_positions_and_wait_in_the_outbox() {
    let log = EventLog::new("node-1", 1000);
    log.record(10, "node-2", "node_down", json!({"observer": "node-1"}));
    log.record(11, "node-1", "quorum_lost", json!({}));
    let (page, next) = log.read(None, 100, 20);
    assert_eq!(page.iter().map(|s| s.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(next, 2);
    assert_eq!(page[0].to_json()["node"], "node-2");
    let out = log.take_outbox();
    assert_eq!(out.iter().map(|e| e.origin_seq).collect::<Vec<_>>(), [1000, 1001]);
    assert!(log.take_outbox().is_empty());
}

#[test]
fn a_merged_event_is_stored_once_whoever_sends_it() {
    let log = EventLog::new("node-1", 1);
    assert!(log.merge(event("node-2", 7, 5)));
    assert!(!log.merge(event("node-2", 7, 5)), "the same event again, from another peer");
    assert!(log.merge(event("node-3", 7, 5)), "another origin's number 7 is another event");
    assert_eq!(log.len(), 2);
    assert!(log.take_outbox().is_empty(), "merged events are not sent on");
}

#[test]
fn the_ring_is_bounded_and_refuses_what_would_be_dropped_first() {
    let log = EventLog::with_capacity("node-1", 1, 3);
    for i in 0..5 {
        assert!(log.merge(event("node-2", i, 100 + i)));
    }
    assert_eq!(log.len(), 3);
    let (page, _) = log.read(Some(Since::Seq(0)), 10, 0);
    assert_eq!(page.iter().map(|s| s.seq).collect::<Vec<_>>(), [3, 4, 5]);
    assert!(!log.merge(event("node-3", 1, 50)), "older than everything kept");
    assert!(!log.merge(event("node-2", 0, 100)), "an evicted event sent again is still older than the rest");
    assert!(log.merge(event("node-3", 1, 103)), "late history newer than the oldest kept is stored");
    assert_eq!(log.read(None, 10, 0).0.last().map(|s| s.seq), Some(6));
}

#[test]
fn reading_from_a_position_or_an_age_pages_oldest_first() {
    let log = EventLog::new("node-1", 1);
    for t in [1_000, 2_000, 3_000, 4_000] {
        log.record(t, "node-1", "config_changed", json!({}));
    }
    let (page, next) = log.read(Some(Since::Seq(1)), 2, 5_000);
    assert_eq!((page.iter().map(|s| s.seq).collect::<Vec<_>>(), next), (vec![2, 3], 3));
    let (page, next) = log.read(Some(Since::Seq(next)), 2, 5_000);
    assert_eq!((page.len(), next), (1, 4));
    let (page, next) = log.read(Some(Since::Seq(next)), 2, 5_000);
    assert_eq!((page.len(), next), (0, 4), "nothing new: the cursor stays");
    assert_eq!(log.read(Some(Since::Seq(99)), 2, 5_000).1, 4, "a cursor from the future comes back to now");
    let (page, _) = log.read(Some(Since::AgeMs(2_500)), 10, 5_000);
    assert_eq!(page.iter().map(|s| s.event.time_ms).collect::<Vec<_>>(), [3_000, 4_000]);
    assert_eq!(log.read(None, 1, 5_000).0[0].seq, 4, "no since: the latest");
    assert_eq!(log.cursor(None, 5_000), 4);
    assert_eq!(log.cursor(Some(Since::AgeMs(2_500)), 5_000), 2);
}

#[test]
fn oversized_or_non_object_data_is_replaced() {
    let wide = json!({ "a": vec![0; DATA_VALUES_MAX] });
    assert!(wide.to_string().len() < DATA_BYTES_MAX);
    assert_eq!(bounded(wide)["truncated"], json!(true), "too many values, however short");
    let nested = json!({ "a": { "b": [1, 2, { "c": "d" }] } });
    assert_eq!(bounded(nested.clone()), nested);
    assert_eq!(bounded(json!({"a": 1})), json!({"a": 1}));
    assert_eq!(bounded(json!({"a": "x".repeat(5000)}))["truncated"], true);
    assert!(bounded(json!([1, 2])).is_object());
}

#[test]
fn peer_batches_round_trip_and_hostile_events_are_refused() {
    let nodes = vec!["node-1".to_string(), "node-2".to_string()];
    let sender = EventLog::new("node-2", 1);
    sender.record(1_000, "node-2", "slice_state", json!({"artifact": "g:a:1", "to": "active"}));
    let frames = peer::encode(&sender.take_outbox());
    assert_eq!(frames.len(), 1);
    let here = EventLog::new("node-1", 1);
    assert_eq!(peer::receive(&here, &frames[0], &nodes, 2_000), Ok(1));
    assert_eq!(peer::receive(&here, &frames[0], &nodes, 2_000), Ok(0), "a duplicate merges nothing");
    assert!(peer::receive(&here, b"garbage", &nodes, 2_000).is_err());

    let forged = |origin: &str, kind: &str, data: &str, time_ms: u64| {
        let raw = peer::WireEvent {
            origin: origin.into(),
            origin_seq: 9,
            time_ms,
            node: "node-1".into(),
            kind: kind.into(),
            data: data.into(),
        };
        wire::encode(&peer::EventBatch { events: vec![raw] })
    };
    for payload in [
        forged("node-9", "node_up", "{}", 1),
        forged("node-2", "reboot", "{}", 1),
        forged("node-2", "node_up", "[1]", 1),
        forged("node-2", "node_up", "{", 1),
        forged("node-2", "node_up", &format!("{{\"a\":\"{}\"}}", "x".repeat(5000)), 1),
        forged("node-2", "node_up", "{}", u64::MAX),
        // Within the byte bound, but 2000 parsed values (64 KiB in memory per event, 640 MiB in a full ring).
        forged("node-2", "node_up", &format!("{{\"a\":[{}0]}}", "0,".repeat(1999)), 1),
    ] {
        assert!(peer::receive(&here, &payload, &nodes, 2_000).is_err());
    }
    let many: Vec<Event> = (0..peer::BATCH_EVENTS_MAX as u64 + 1).map(|i| event("node-2", 100 + i, 5)).collect();
    let mut one_batch = peer::EventBatch::default();
    for e in &many {
        one_batch.events.push(peer::WireEvent {
            origin: e.origin.clone(),
            origin_seq: e.origin_seq,
            time_ms: e.time_ms,
            node: e.node.clone(),
            kind: e.kind.into(),
            data: "{}".into(),
        });
    }
    assert!(peer::receive(&here, &wire::encode(&one_batch), &nodes, 2_000).is_err(), "too many in one batch");
    assert_eq!(peer::encode(&many).len(), 2, "the sender splits");
    assert_eq!(here.len(), 1);
}
