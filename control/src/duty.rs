//! Node lifecycle (its *duty*): whether a node takes work, gives it up, or is leaving, stored per node under
//! `nodes/{node}/lifecycle` as a [`DutyRecord`].
//!
//! States ([`Duty`]):
//! - `JOINING`: the node is catching up; it receives nothing new.
//! - `ON_DUTY`: the node receives instances. A missing record means ON_DUTY, so clusters that never write
//!   one behave as before.
//! - `DRAINING`: an operator asked for the node to be emptied; the leader moves its instances away, make
//!   before break (see `cluster::drain`), then writes `DECOMMISSIONED`.
//! - `DECOMMISSIONED`: drained; holds nothing and receives nothing until an operator activates it.
//! - `SHUTTING_DOWN`: drained like DRAINING, then the node process exits (SIGTERM or `POST .../shutdown`).
//!
//! Writers: the management API writes DRAINING, SHUTTING_DOWN and ON_DUTY (activate) for operators; the leader
//! writes DECOMMISSIONED and the `waiting` reason; a node writes its own ON_DUTY ([`self_on_duty`]) when its
//! record is absent, JOINING, or SHUTTING_DOWN left over from its previous life, and its own SHUTTING_DOWN on
//! SIGTERM. Decision: DRAINING and DECOMMISSIONED outlive a restart; only an operator's activate ends them, so
//! a rebooted node never takes work back against the operator's choice.
//!
//! Every write is conditional on the version it was computed from. Decoding never panics; `reason` and
//! `waiting` are cut to [`TEXT_BYTES_MAX`].

use crate::records::{Record, RecordError};
use crate::write::{KvWrite, Versioned};
use kvstore::{AetherKey, NodeId, Revision};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Longest `reason` or `waiting` text kept, in bytes.
pub const TEXT_BYTES_MAX: usize = 512;

/// Where a node is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Duty {
    Joining,
    OnDuty,
    Draining,
    Decommissioned,
    ShuttingDown,
}

impl Duty {
    /// True for the states whose instances the leader moves away.
    pub fn leaving(self) -> bool {
        matches!(self, Duty::Draining | Duty::Decommissioned | Duty::ShuttingDown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Duty::Joining => "JOINING",
            Duty::OnDuty => "ON_DUTY",
            Duty::Draining => "DRAINING",
            Duty::Decommissioned => "DECOMMISSIONED",
            Duty::ShuttingDown => "SHUTTING_DOWN",
        }
    }
}

impl fmt::Display for Duty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `nodes/{node}/lifecycle`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DutyRecord {
    pub state: Duty,
    /// Why (the operator's words, or the node's: "SIGTERM").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the state was entered, in milliseconds of the writer's clock.
    #[serde(default)]
    pub since_ms: u64,
    /// While a drain cannot go on: why (written by the leader, cleared when it moves again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
}

impl Record for DutyRecord {
    const KIND: &'static str = "node lifecycle record";

    fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let record: DutyRecord =
            serde_json::from_slice(bytes).map_err(|e| RecordError { record: Self::KIND, reason: e.to_string() })?;
        let too_long = |text: &Option<String>| text.as_ref().is_some_and(|t| t.len() > TEXT_BYTES_MAX);
        if too_long(&record.reason) || too_long(&record.waiting) {
            let reason = format!("reason or waiting longer than {TEXT_BYTES_MAX} bytes");
            return Err(RecordError { record: Self::KIND, reason });
        }
        Ok(record)
    }
}

impl DutyRecord {
    /// A record in `state` from `now_ms`, with `reason` cut to [`TEXT_BYTES_MAX`].
    pub fn new(state: Duty, reason: Option<&str>, now_ms: u64) -> DutyRecord {
        DutyRecord { state, reason: reason.map(|r| cut(r, TEXT_BYTES_MAX)), since_ms: now_ms, waiting: None }
    }
}

/// The state a record (or its absence) stands for: no record is ON_DUTY.
pub fn duty_of(record: Option<&DutyRecord>) -> Duty {
    record.map_or(Duty::OnDuty, |r| r.state)
}

/// `text` cut to at most `max` bytes on a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    let end = (0..=max.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
    text[..end].to_owned()
}

/// The key of `node`'s record.
pub fn key(node: &NodeId) -> AetherKey {
    AetherKey::NodeLifecycle { node: node.clone() }
}

/// The write that moves `node` to `state`, conditional on the record as read (`None`: absent).
pub fn set(node: &NodeId, current: Option<Revision>, record: &DutyRecord) -> KvWrite {
    KvWrite::Set { key: key(node), expected: current, value: record.encode() }
}

/// The write a caught-up node with quorum makes about itself at start: ON_DUTY when its record is absent,
/// JOINING, or SHUTTING_DOWN (left from the stop of its previous life). An unreadable record is replaced.
/// DRAINING and DECOMMISSIONED stay: they are the operator's to end.
pub fn self_on_duty(
    node: &NodeId,
    current: Option<Result<&Versioned<DutyRecord>, Revision>>,
    now_ms: u64,
) -> Option<KvWrite> {
    let expected = match current {
        None => None,
        Some(Err(version)) => Some(version),
        Some(Ok(record)) => match record.value.state {
            Duty::Joining | Duty::ShuttingDown => Some(record.version),
            Duty::OnDuty | Duty::Draining | Duty::Decommissioned => return None,
        },
    };
    Some(set(node, expected, &DutyRecord::new(Duty::OnDuty, Some("node started"), now_ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeId {
        NodeId::parse("n1").unwrap()
    }

    fn at(state: Duty, version: u64) -> Versioned<DutyRecord> {
        Versioned { value: DutyRecord::new(state, None, 0), version: Revision(version) }
    }

    #[test]
    fn records_round_trip_and_long_texts_are_refused() {
        let record = DutyRecord::new(Duty::ShuttingDown, Some("SIGTERM"), 5);
        let text = String::from_utf8(record.encode()).unwrap();
        assert_eq!(text, r#"{"state":"SHUTTING_DOWN","reason":"SIGTERM","since_ms":5}"#);
        assert_eq!(DutyRecord::decode(text.as_bytes()).unwrap(), record);
        assert!(DutyRecord::decode(br#"{"state":"ON_DUTY"}"#).is_ok(), "only the state is required");
        assert!(DutyRecord::decode(br#"{"state":"ASLEEP"}"#).is_err());
        let long = format!(r#"{{"state":"DRAINING","reason":"{}"}}"#, "x".repeat(TEXT_BYTES_MAX + 1));
        assert!(DutyRecord::decode(long.as_bytes()).is_err());
        assert_eq!(DutyRecord::new(Duty::Draining, Some(&"é".repeat(400)), 0).reason.unwrap().len(), 512);
    }

    #[test]
    fn a_missing_record_is_on_duty_and_only_draining_states_are_leaving() {
        assert_eq!(duty_of(None), Duty::OnDuty);
        let leaving: Vec<Duty> =
            [Duty::Joining, Duty::OnDuty, Duty::Draining, Duty::Decommissioned, Duty::ShuttingDown]
                .into_iter()
                .filter(|d| d.leaving())
                .collect();
        assert_eq!(leaving, [Duty::Draining, Duty::Decommissioned, Duty::ShuttingDown]);
    }

    #[test]
    fn a_starting_node_goes_on_duty_unless_an_operator_took_it_off() {
        let me = node();
        let write = |current: Option<Result<&Versioned<DutyRecord>, Revision>>| self_on_duty(&me, current, 0);
        let absent = write(None).expect("absent: ON_DUTY");
        assert!(matches!(absent, KvWrite::Set { expected: None, .. }));
        for state in [Duty::Joining, Duty::ShuttingDown] {
            let record = at(state, 7);
            let w = write(Some(Ok(&record))).expect("goes ON_DUTY");
            assert!(matches!(&w, KvWrite::Set { expected: Some(Revision(7)), value, .. }
                if DutyRecord::decode(value).unwrap().state == Duty::OnDuty));
        }
        for state in [Duty::OnDuty, Duty::Draining, Duty::Decommissioned] {
            let record = at(state, 7);
            assert!(write(Some(Ok(&record))).is_none(), "{state} stays");
        }
        assert!(write(Some(Err(Revision(3)))).is_some(), "an unreadable record is replaced");
    }
}
