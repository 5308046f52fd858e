//! The cluster event log: a bounded ring of events (node up/down, leader changes, quorum, blueprints, slice
//! placements and states, artifacts, config and log-level changes), recorded where each happens and
//! merged from every peer, so that any node serves the whole cluster's events (`/api/events` and its
//! server-sent-events stream).
//!
//! An event is identified cluster-wide by its origin (the node that recorded it) and the origin's sequence
//! number, which starts at the origin's wall clock in microseconds when it boots, so it keeps rising across
//! restarts. Each node keeps its own ring position (`seq`), the cursor its API hands out.
//!
//! Invariants: the ring holds at most [`EVENTS_MAX`] events and each event's data at most
//! [`DATA_BYTES_MAX`] bytes of JSON text and [`DATA_VALUES_MAX`] JSON values (parsed JSON takes 32 bytes and
//! more per value: 4 KiB of `[0,0,...]` would hold 64 KiB, so bytes alone do not bound the ring's memory); an (origin, origin seq) is in the ring at most once; ring positions rise by
//! one per stored event and are never reused while the process runs; an event older than the oldest one
//! of a full ring is not stored (it would be the next to go); events recorded here wait in a bounded
//! outbox for the event loop to send to the peers ([`EventLog::take_outbox`]).

pub mod observe;
pub mod peer;
pub mod sse;

use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::{HashSet, VecDeque};

/// Events a node keeps.
pub const EVENTS_MAX: usize = 10_000;
/// Largest `data` of one event, as JSON text.
pub const DATA_BYTES_MAX: usize = 4096;
/// Most JSON values (the object itself, every member and element, nested ones included) in one event's
/// `data`; the events recorded here have a handful.
pub const DATA_VALUES_MAX: usize = 32;
/// Events recorded here and not yet handed to the loop, kept at most (older ones are dropped from the
/// outbox, not from the ring: peers get them with the history on their next connection).
const OUTBOX_MAX: usize = 1000;

/// What happened. The snake_case names are the API's `kind`.
pub const KINDS: [&str; 21] = [
    "node_up",
    "node_down",
    "leader_changed",
    "quorum_gained",
    "quorum_lost",
    "blueprint_applied",
    "blueprint_deleted",
    "blueprint_warning",
    "slice_state",
    "slice_placed",
    "slice_removed",
    "slice_reconfigured",
    "artifact_uploaded",
    "artifact_deleted",
    "config_changed",
    "log_level_changed",
    "message_dead_lettered",
    "dead_letter_replayed",
    "node_lifecycle",
    "rollout_changed",
    "slice_scaled",
];

/// One event as recorded at its origin.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The node that recorded it.
    pub origin: String,
    /// Its number at the origin (rising across the origin's restarts).
    pub origin_seq: u64,
    /// Wall-clock milliseconds at the origin.
    pub time_ms: u64,
    /// Where it happened (the node it concerns).
    pub node: String,
    /// One of [`KINDS`].
    pub kind: &'static str,
    /// A JSON object.
    pub data: Value,
}

/// An event at its place in this node's ring.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    pub seq: u64,
    pub event: Event,
}

impl Stored {
    /// The API's event object.
    pub fn to_json(&self) -> Value {
        let e = &self.event;
        json!({ "seq": self.seq, "time_ms": e.time_ms, "node": e.node, "kind": e.kind, "data": e.data })
    }
}

/// Where a reader starts: after a ring position, or at events no older than an age.
pub use mgmt::EventSince as Since;

struct Ring {
    events: VecDeque<Stored>,
    ids: HashSet<(String, u64)>,
    next_seq: u64,
    next_origin_seq: u64,
    outbox: VecDeque<Event>,
}

/// The ring, shared by the event loop (which records and merges) and the management threads (which read
/// and record API-driven events).
pub struct EventLog {
    me: String,
    capacity: usize,
    ring: Mutex<Ring>,
}

impl EventLog {
    /// An empty log for node `me`, whose own events are numbered from `origin_seq_start`.
    pub fn new(me: &str, origin_seq_start: u64) -> EventLog {
        EventLog::with_capacity(me, origin_seq_start, EVENTS_MAX)
    }

    pub fn with_capacity(me: &str, origin_seq_start: u64, capacity: usize) -> EventLog {
        let ring = Ring {
            events: VecDeque::new(),
            ids: HashSet::new(),
            next_seq: 1,
            next_origin_seq: origin_seq_start,
            outbox: VecDeque::new(),
        };
        EventLog { me: me.to_string(), capacity: capacity.max(1), ring: Mutex::new(ring) }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// Record an event that happened here (or concerns `node`), at wall-clock `time_ms`: stored and
    /// queued for the peers.
    pub fn record(&self, time_ms: u64, node: &str, kind: &'static str, data: Value) {
        debug_assert!(KINDS.contains(&kind), "unknown event kind {kind}");
        let data = bounded(data);
        let mut ring = self.ring.lock();
        let origin_seq = ring.next_origin_seq;
        ring.next_origin_seq += 1;
        let event = Event { origin: self.me.clone(), origin_seq, time_ms, node: node.to_string(), kind, data };
        log::debug!("event {kind} on {node}: {}", event.data);
        if ring.outbox.len() >= OUTBOX_MAX {
            ring.outbox.pop_front();
        }
        ring.outbox.push_back(event.clone());
        self.store(&mut ring, event);
    }

    /// Merge an event a peer sent; false when it was already here (or too old to keep).
    pub fn merge(&self, event: Event) -> bool {
        let mut ring = self.ring.lock();
        self.store(&mut ring, event)
    }

    fn store(&self, ring: &mut Ring, event: Event) -> bool {
        let id = (event.origin.clone(), event.origin_seq);
        if ring.ids.contains(&id) {
            return false;
        }
        if ring.events.len() >= self.capacity {
            if ring.events.front().is_some_and(|oldest| event.time_ms < oldest.event.time_ms) {
                return false;
            }
            if let Some(gone) = ring.events.pop_front() {
                ring.ids.remove(&(gone.event.origin, gone.event.origin_seq));
            }
        }
        let seq = ring.next_seq;
        ring.next_seq += 1;
        ring.ids.insert(id);
        ring.events.push_back(Stored { seq, event });
        true
    }

    /// The events recorded here since the last call, for the peers.
    pub fn take_outbox(&self) -> Vec<Event> {
        self.ring.lock().outbox.drain(..).collect()
    }

    /// The latest `n` events (every origin), oldest first: the history a (re)connecting peer gets.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        let ring = self.ring.lock();
        let skip = ring.events.len().saturating_sub(n);
        ring.events.iter().skip(skip).map(|s| s.event.clone()).collect()
    }

    /// Up to `limit` events from `since` (after a position, or no older than an age at `now_ms`), oldest
    /// first; without `since`, the latest `limit`. Also the cursor to pass next time.
    pub fn read(&self, since: Option<Since>, limit: usize, now_ms: u64) -> (Vec<Stored>, u64) {
        let ring = self.ring.lock();
        let last = ring.next_seq - 1;
        let start = match since {
            None => ring.events.len().saturating_sub(limit),
            Some(since) => first_index(&ring.events, since, now_ms),
        };
        let page: Vec<Stored> = ring.events.iter().skip(start).take(limit).cloned().collect();
        let next = match (page.last(), since) {
            (Some(newest), _) => newest.seq,
            (None, Some(Since::Seq(after))) => after.min(last),
            (None, _) => last,
        };
        (page, next)
    }

    /// The ring position a stream from `since` starts after (without `since`: only new events).
    pub fn cursor(&self, since: Option<Since>, now_ms: u64) -> u64 {
        let ring = self.ring.lock();
        let last = ring.next_seq - 1;
        match since {
            None => last,
            Some(Since::Seq(after)) => after.min(last),
            Some(since @ Since::AgeMs(_)) => {
                let at = first_index(&ring.events, since, now_ms);
                ring.events.get(at).map_or(last, |s| s.seq - 1)
            }
        }
    }

    /// Events after position `after`, while `fits` accepts them; `Err` when events after `after` were
    /// already dropped from the ring (the reader fell too far behind).
    pub fn after(&self, after: u64, mut fits: impl FnMut(&Stored) -> bool) -> Result<(), u64> {
        let ring = self.ring.lock();
        let Some(oldest) = ring.events.front() else { return Ok(()) };
        if after + 1 < oldest.seq {
            return Err(oldest.seq);
        }
        let skip = usize::try_from(after + 1 - oldest.seq).unwrap_or(usize::MAX);
        for stored in ring.events.iter().skip(skip) {
            if !fits(stored) {
                break;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ring.lock().events.len()
    }
}

/// Index of the first event `since` selects.
fn first_index(events: &VecDeque<Stored>, since: Since, now_ms: u64) -> usize {
    match since {
        Since::Seq(after) => events.partition_point(|s| s.seq <= after),
        Since::AgeMs(age) => {
            let from = now_ms.saturating_sub(age);
            events.iter().position(|s| s.event.time_ms >= from).unwrap_or(events.len())
        }
    }
}

/// `data` if it is an object within [`DATA_BYTES_MAX`] and [`DATA_VALUES_MAX`]; else a note saying what
/// was dropped.
pub fn bounded(data: Value) -> Value {
    if !data.is_object() {
        return json!({ "value": data.to_string().chars().take(256).collect::<String>() });
    }
    let text = data.to_string();
    if text.len() <= DATA_BYTES_MAX && values_within(&data, DATA_VALUES_MAX) {
        return data;
    }
    json!({ "truncated": true, "bytes": text.len() })
}

/// Whether `value` holds at most `max` JSON values, itself included (stops counting past `max`).
pub fn values_within(value: &Value, max: usize) -> bool {
    fn count(value: &Value, left: &mut usize) -> bool {
        if *left == 0 {
            return false;
        }
        *left -= 1;
        match value {
            Value::Array(items) => items.iter().all(|v| count(v, left)),
            Value::Object(members) => members.values().all(|v| count(v, left)),
            _ => true,
        }
    }
    let mut left = max;
    count(value, &mut left)
}

/// The kind named `text`, as the static name (peers' events are checked against it).
pub fn kind(text: &str) -> Option<&'static str> {
    KINDS.iter().find(|k| **k == text).copied()
}

#[cfg(test)]
mod tests;
