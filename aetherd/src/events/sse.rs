//! `GET /api/events/stream`: the event log as server-sent events, an [`httpd::StreamSource`] the
//! management port's I/O thread polls.
//!
//! Each event is `id: <seq>\nevent: <kind>\ndata: <event JSON>\n\n` (the JSON is on one line); a
//! `: keepalive` comment goes out after [`KEEPALIVE`] without anything else. A reader so slow that events
//! it has not been sent yet fall out of the ring gets a last comment saying so and the stream ends (it may
//! reconnect with `Last-Event-ID`); nothing is buffered for it beyond the port's per-stream bound.
//!
//! A stream lasts at most [`LIFETIME`], then ends with a comment saying so: its reader reconnects with
//! `Last-Event-ID` and loses nothing, and its key is checked again then, so a revoked key stops receiving
//! events within that time (a stream is authorised once, when it opens).

use super::{EventLog, Stored};
use httpd::{StreamSource, StreamStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest silence on a stream.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Longest life of one stream (see the module comment).
pub const LIFETIME: Duration = Duration::from_secs(300);

pub struct EventStream {
    log: Arc<EventLog>,
    /// The last ring position sent.
    cursor: u64,
    last_write: Instant,
    keepalive: Duration,
    ends_at: Instant,
}

impl EventStream {
    /// A stream of the events after ring position `cursor`.
    pub fn new(log: Arc<EventLog>, cursor: u64) -> EventStream {
        let now = Instant::now();
        EventStream { log, cursor, last_write: now, keepalive: KEEPALIVE, ends_at: now + LIFETIME }
    }

    #[cfg(test)]
    fn with_keepalive(mut self, keepalive: Duration) -> EventStream {
        self.keepalive = keepalive;
        self
    }

    #[cfg(test)]
    fn with_lifetime(mut self, lifetime: Duration) -> EventStream {
        self.ends_at = self.last_write + lifetime;
        self
    }
}

/// One event in SSE framing.
pub fn frame(stored: &Stored) -> String {
    format!("id: {}\nevent: {}\ndata: {}\n\n", stored.seq, stored.event.kind, stored.to_json())
}

impl StreamSource for EventStream {
    fn poll(&mut self, now: Instant, out: &mut Vec<u8>, room: usize) -> StreamStatus {
        let start = out.len();
        let mut cursor = self.cursor;
        let behind = self.log.after(self.cursor, |stored| {
            let text = frame(stored);
            if out.len() - start + text.len() > room {
                return false;
            }
            out.extend_from_slice(text.as_bytes());
            cursor = stored.seq;
            true
        });
        self.cursor = cursor;
        if let Err(oldest) = behind {
            let note =
                format!(": events up to {} were dropped before this stream read them; reconnect\n\n", oldest - 1);
            out.extend_from_slice(&note.as_bytes()[..note.len().min(room)]);
            return StreamStatus::End;
        }
        if now >= self.ends_at {
            let note = format!(": this stream ends after {} s; reconnect with Last-Event-ID\n\n", LIFETIME.as_secs());
            if out.len() - start + note.len() <= room {
                out.extend_from_slice(note.as_bytes());
            }
            return StreamStatus::End;
        }
        if out.len() > start {
            self.last_write = now;
        } else if now.duration_since(self.last_write) >= self.keepalive {
            out.extend_from_slice(b": keepalive\n\n");
            self.last_write = now;
        }
        StreamStatus::Open
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_framed_one_per_block_with_their_seq_and_kind() {
        let log = Arc::new(EventLog::new("node-1", 1));
        log.record(5, "node-2", "node_down", json!({"observer": "node-1"}));
        log.record(6, "node-1", "quorum_lost", json!({}));
        let mut stream = EventStream::new(Arc::clone(&log), 0);
        let mut out = Vec::new();
        assert_eq!(stream.poll(Instant::now(), &mut out, 4096), StreamStatus::Open);
        let text = String::from_utf8(out).unwrap();
        let blocks: Vec<&str> = text.split_terminator("\n\n").collect();
        assert_eq!(blocks.len(), 2, "{text}");
        let first: Vec<&str> = blocks[0].lines().collect();
        assert_eq!(&first[..2], ["id: 1", "event: node_down"]);
        let data: serde_json::Value = serde_json::from_str(first[2].strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            data,
            json!({"seq": 1, "time_ms": 5, "node": "node-2", "kind": "node_down", "data": {"observer": "node-1"}})
        );
        let mut again = Vec::new();
        stream.poll(Instant::now(), &mut again, 4096);
        assert!(again.is_empty(), "nothing is sent twice");
    }

    #[test]
    fn a_poll_takes_only_whole_events_that_fit_the_room() {
        let log = Arc::new(EventLog::new("node-1", 1));
        for i in 0..3 {
            log.record(i, "node-1", "config_changed", json!({"key": "k"}));
        }
        let one = frame(&log.read(Some(super::super::Since::Seq(0)), 1, 0).0[0]).len();
        let mut stream = EventStream::new(Arc::clone(&log), 0);
        let mut out = Vec::new();
        stream.poll(Instant::now(), &mut out, one + one / 2);
        assert_eq!(out.len(), one);
        stream.poll(Instant::now(), &mut out, 10 * one);
        assert_eq!(String::from_utf8(out).unwrap().matches("id: ").count(), 3);
    }

    #[test]
    fn silence_gets_a_keepalive_comment() {
        let log = Arc::new(EventLog::new("node-1", 1));
        let mut stream = EventStream::new(log, 0).with_keepalive(Duration::from_millis(10));
        let mut out = Vec::new();
        let start = Instant::now();
        stream.poll(start, &mut out, 4096);
        assert!(out.is_empty());
        stream.poll(start + Duration::from_millis(20), &mut out, 4096);
        assert_eq!(out, b": keepalive\n\n");
    }

    #[test]
    fn a_stream_ends_after_its_lifetime_once_its_events_are_sent() {
        let log = Arc::new(EventLog::new("node-1", 1));
        let mut stream = EventStream::new(Arc::clone(&log), 0).with_lifetime(Duration::from_millis(10));
        let start = Instant::now();
        let mut out = Vec::new();
        assert_eq!(stream.poll(start, &mut out, 4096), StreamStatus::Open);
        log.record(1, "node-1", "config_changed", json!({}));
        assert_eq!(stream.poll(start + Duration::from_millis(20), &mut out, 4096), StreamStatus::End);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: 1\n"), "what was due is sent first: {text}");
        assert!(text.ends_with("reconnect with Last-Event-ID\n\n"), "{text}");
    }

    #[test]
    fn a_reader_overtaken_by_the_ring_is_told_and_ended() {
        let log = Arc::new(EventLog::with_capacity("node-1", 1, 2));
        let mut stream = EventStream::new(Arc::clone(&log), 0);
        for i in 0..5 {
            log.record(i, "node-1", "config_changed", json!({}));
        }
        let mut out = Vec::new();
        assert_eq!(stream.poll(Instant::now(), &mut out, 4096), StreamStatus::End);
        assert!(String::from_utf8(out).unwrap().starts_with(": events up to 3 were dropped"));
    }
}
