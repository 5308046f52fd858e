//! How a slice takes part in messaging and scheduled work: the delivery mode of a subscription and the
//! missed-run policy of a schedule, each with its one spelling (descriptor code, blueprint word, JSON).
//!
//! Invariant: `parse(word()) == self` for every value, and the descriptor codes are those of
//! `aether_sdk::abi::delivery` and `aether_sdk::abi::missed` (this crate does not depend on the SDK, so a
//! test in `container` pins them).

use crate::ParseError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// How a topic's messages reach the instances of one subscribing slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Each message to one instance.
    Competing,
    /// Each message to every instance.
    Broadcast,
}

impl Delivery {
    /// The descriptor code (`aether_sdk::abi::delivery`).
    pub fn from_code(code: u32) -> Option<Delivery> {
        match code {
            0 => Some(Delivery::Competing),
            1 => Some(Delivery::Broadcast),
            _ => None,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            Delivery::Competing => "competing",
            Delivery::Broadcast => "broadcast",
        }
    }

    pub fn parse(input: &str) -> Result<Delivery, ParseError> {
        match input {
            "competing" => Ok(Delivery::Competing),
            "broadcast" => Ok(Delivery::Broadcast),
            _ => Err(ParseError::new(input, "delivery", "expected `competing` or `broadcast`")),
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// What a schedule does about runs it missed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "policy")]
pub enum MissedRuns {
    /// Forget them; run at the next time due.
    Skip,
    /// Run once for all of them.
    RunOnce,
    /// Run each of them, at most `limit` (the newest).
    RunAll { limit: u32 },
}

impl MissedRuns {
    /// The descriptor codes (`aether_sdk::abi::missed`): `RUN_ALL` needs a limit of at least 1.
    pub fn from_code(code: u32, limit: u32) -> Option<MissedRuns> {
        match code {
            0 => Some(MissedRuns::Skip),
            1 => Some(MissedRuns::RunOnce),
            2 if limit >= 1 => Some(MissedRuns::RunAll { limit }),
            _ => None,
        }
    }
}

/// When a scheduled task is due, as the slice declared it. The cron expression is kept as text here; its
/// parser and the time-zone rules live with the scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Timing {
    /// Every `ms` milliseconds (at least 1).
    Interval { ms: u64 },
    /// A five-field cron expression in `time_zone` (`"UTC"` unless the slice named another).
    Cron { expression: String, time_zone: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for d in [Delivery::Competing, Delivery::Broadcast] {
            assert_eq!(Delivery::parse(d.word()), Ok(d));
            assert_eq!(Delivery::from_code(d as u32), Some(d));
        }
        assert!(Delivery::parse("fanout").is_err());
        assert_eq!(Delivery::from_code(2), None);
    }

    #[test]
    fn run_all_needs_a_limit() {
        assert_eq!(MissedRuns::from_code(2, 0), None);
        assert_eq!(MissedRuns::from_code(2, 5), Some(MissedRuns::RunAll { limit: 5 }));
        assert_eq!(MissedRuns::from_code(9, 0), None);
    }
}
