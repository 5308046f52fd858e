//! What one instance received on one topic, in arrival order, bounded.
//!
//! Invariants: at most [`BODIES_MAX`] deliveries and [`BYTES_MAX`] bytes of bodies are kept; past either the
//! oldest go first, and `total` still counts every delivery, so a reader can tell how many were dropped.
//! Entry `n` of the record is the `n`-th delivery since the instance started (0-based), whether kept or not.

use std::collections::VecDeque;

use aether_sdk::json;

/// Most deliveries kept per topic.
pub const BODIES_MAX: usize = 100_000;
/// Most body bytes kept per topic.
pub const BYTES_MAX: usize = 32 * 1024 * 1024;

/// One delivery as the instance saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The message, as text (bytes that are not UTF-8 are replaced).
    pub body: String,
    /// Wall-clock receive time, microseconds since the Unix epoch.
    pub at_us: u64,
    pub message_id: String,
    pub publisher: String,
    pub attempt: u32,
}

#[derive(Debug, Default)]
pub struct Record {
    kept: VecDeque<Delivery>,
    bytes: usize,
    total: u64,
}

impl Record {
    pub fn push(&mut self, delivery: Delivery) {
        self.bytes += delivery.body.len();
        self.kept.push_back(delivery);
        self.total += 1;
        while self.kept.len() > BODIES_MAX || self.bytes > BYTES_MAX {
            match self.kept.pop_front() {
                Some(old) => self.bytes -= old.body.len(),
                None => break,
            }
        }
    }

    pub fn clear(&mut self) {
        *self = Record::default();
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// Index (since start) of the oldest delivery still kept.
    fn first_kept(&self) -> u64 {
        self.total - self.kept.len() as u64
    }

    /// The kept bodies as a JSON array.
    pub fn bodies_json(&self) -> String {
        let mut out = String::from("[");
        for (i, delivery) in self.kept.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            json::write_str(&mut out, &delivery.body);
        }
        out.push(']');
        out
    }

    /// The kept deliveries from index `from` (since start) on, at most `limit`, as a JSON array of objects.
    pub fn deliveries_json(&self, from: u64, limit: usize) -> String {
        let skip = usize::try_from(from.saturating_sub(self.first_kept())).unwrap_or(usize::MAX);
        let mut out = String::from("[");
        for (i, d) in self.kept.iter().skip(skip).take(limit).enumerate() {
            if i > 0 {
                out.push(',');
            }
            let entry = json::Object::new()
                .str("body", &d.body)
                .int("at_us", i64::try_from(d.at_us).unwrap_or(i64::MAX))
                .str("id", &d.message_id)
                .str("publisher", &d.publisher)
                .int("attempt", i64::from(d.attempt));
            out.push_str(&entry.finish());
        }
        out.push(']');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(body: &str) -> Delivery {
        Delivery { body: body.into(), at_us: 1, message_id: "m".into(), publisher: "api".into(), attempt: 1 }
    }

    #[test]
    fn keeps_the_newest_within_the_bound_and_counts_all() {
        let mut record = Record::default();
        for n in 0..BODIES_MAX + 5 {
            record.push(delivery(&n.to_string()));
        }
        assert_eq!(record.total(), BODIES_MAX as u64 + 5);
        let bodies = json::parse(record.bodies_json().as_bytes()).unwrap();
        let json::Value::Array(items) = bodies else { panic!("not an array") };
        assert_eq!(items.len(), BODIES_MAX);
        assert_eq!(items[0].as_str(), Some("5"));
        let tail = json::parse(record.deliveries_json(BODIES_MAX as u64 + 3, 10).as_bytes()).unwrap();
        let json::Value::Array(tail) = tail else { panic!("not an array") };
        let bodies: Vec<_> = tail.iter().filter_map(|d| d.get("body").and_then(json::Value::as_str)).collect();
        assert_eq!(bodies, [(BODIES_MAX + 3).to_string(), (BODIES_MAX + 4).to_string()]);
    }

    #[test]
    fn a_byte_bound_drops_the_oldest() {
        let mut record = Record::default();
        let big = "x".repeat(BYTES_MAX / 2 + 1);
        record.push(delivery(&big));
        record.push(delivery(&big));
        assert_eq!(record.kept.len(), 1);
        assert!(record.bytes <= BYTES_MAX);
        assert_eq!(record.total(), 2);
    }
}
