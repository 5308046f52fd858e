//! Events between nodes: the batch a node sends on `FrameKind::Events` (its new events, or the recent
//! history when a peer connects), and the checks every received event passes before it is merged.
//!
//! Invariants: a batch carries at most [`BATCH_EVENTS_MAX`] events; a received batch with more is dropped
//! whole; each event is merged only if its origin and node are node ids of this cluster, its kind is known,
//! its data is a JSON object within [`super::DATA_BYTES_MAX`] and [`super::DATA_VALUES_MAX`] values, and
//! its time is not absurd. Nothing a peer sends can grow this node's memory past the ring's bound.

use super::{Event, EventLog};
use rkyv::{Archive, Deserialize, Serialize};

/// Events per frame.
pub const BATCH_EVENTS_MAX: usize = 200;
/// Events of history sent to a peer when it connects.
pub const HISTORY_MAX: usize = 1000;
/// How far in the future (by this node's clock) an event's time may be: clocks differ, but not by a day.
const FUTURE_MS_MAX: u64 = 24 * 3_600_000;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireEvent {
    pub origin: String,
    pub origin_seq: u64,
    pub time_ms: u64,
    pub node: String,
    pub kind: String,
    /// The data object as JSON text.
    pub data: String,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct EventBatch {
    pub events: Vec<WireEvent>,
}

/// `events` as frame payloads of at most [`BATCH_EVENTS_MAX`] events each.
pub fn encode(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .chunks(BATCH_EVENTS_MAX)
        .map(|chunk| {
            let events = chunk
                .iter()
                .map(|e| WireEvent {
                    origin: e.origin.clone(),
                    origin_seq: e.origin_seq,
                    time_ms: e.time_ms,
                    node: e.node.clone(),
                    kind: e.kind.to_string(),
                    data: e.data.to_string(),
                })
                .collect();
            wire::encode(&EventBatch { events })
        })
        .collect()
}

/// Why a received event was not merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

/// Check and merge a batch a peer sent; the number of new events, or why the batch was dropped. Single
/// events that fail their checks are skipped (and counted in the error text of the first).
pub fn receive(log: &EventLog, payload: &[u8], nodes: &[String], now_ms: u64) -> Result<usize, Refused> {
    let batch: EventBatch = wire::decode(payload).map_err(|e| Refused(format!("undecodable event batch: {e}")))?;
    if batch.events.len() > BATCH_EVENTS_MAX {
        return Err(Refused(format!("{} events in one batch, over {BATCH_EVENTS_MAX}", batch.events.len())));
    }
    let mut merged = 0;
    let mut refused = None;
    for raw in batch.events {
        match check(raw, nodes, now_ms) {
            Ok(event) => merged += usize::from(log.merge(event)),
            Err(why) => {
                refused.get_or_insert(why);
            }
        }
    }
    match refused {
        Some(Refused(why)) if merged == 0 => Err(Refused(why)),
        Some(Refused(why)) => {
            log::debug!("some peer events were refused: {why}");
            Ok(merged)
        }
        None => Ok(merged),
    }
}

fn check(raw: WireEvent, nodes: &[String], now_ms: u64) -> Result<Event, Refused> {
    if !nodes.contains(&raw.origin) || !nodes.contains(&raw.node) {
        return Err(Refused(format!("event from unknown node '{}' about '{}'", short(&raw.origin), short(&raw.node))));
    }
    let kind = super::kind(&raw.kind).ok_or_else(|| Refused(format!("unknown event kind '{}'", short(&raw.kind))))?;
    if raw.data.len() > super::DATA_BYTES_MAX {
        return Err(Refused(format!("event data of {} bytes", raw.data.len())));
    }
    let data: serde_json::Value =
        serde_json::from_str(&raw.data).map_err(|e| Refused(format!("event data is not JSON: {e}")))?;
    if !data.is_object() {
        return Err(Refused("event data is not a JSON object".into()));
    }
    if !super::values_within(&data, super::DATA_VALUES_MAX) {
        return Err(Refused(format!("event data has more than {} JSON values", super::DATA_VALUES_MAX)));
    }
    if raw.time_ms > now_ms.saturating_add(FUTURE_MS_MAX) {
        return Err(Refused(format!("event time {} is a day or more ahead", raw.time_ms)));
    }
    Ok(Event { origin: raw.origin, origin_seq: raw.origin_seq, time_ms: raw.time_ms, node: raw.node, kind, data })
}

fn short(text: &str) -> String {
    text.chars().take(64).collect()
}
