//! Rate-limited, aggregated log lines about unauthenticated connections that were refused or dropped, so a
//! flood writes a few lines per window instead of one per socket.
//!
//! Per window (10 s by default): the first refusal from an address is logged at once with its reason, up to
//! `immediate_max` addresses per window (so a misconfigured node is diagnosed without waiting); everything
//! else is counted and summarised when the window closes, one line per address for the `summary_max`
//! addresses with the most refusals and one line for the rest.
//!
//! Invariants:
//! - At most `immediate_max + summary_max + 1` lines per window, whatever arrives.
//! - Every refusal is counted exactly once, either in an immediate line or in a summary line.
//! - Memory is bounded: at most `addresses_max` distinct addresses are tracked per window; the rest are
//!   counted together.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(10);
const IMMEDIATE_MAX: usize = 4;
const SUMMARY_MAX: usize = 8;
const ADDRESSES_MAX: usize = 4096;

struct Entry {
    /// Refusals not yet reported in a line.
    unreported: u64,
    last_reason: String,
}

pub struct RefusalLog {
    window: Duration,
    window_start: Instant,
    entries: HashMap<IpAddr, Entry>,
    /// Refusals from addresses past `ADDRESSES_MAX` this window.
    overflow: u64,
    immediate_left: usize,
    total: u64,
}

impl RefusalLog {
    pub fn new(window: Duration, now: Instant) -> RefusalLog {
        RefusalLog {
            window,
            window_start: now,
            entries: HashMap::new(),
            overflow: 0,
            immediate_left: IMMEDIATE_MAX,
            total: 0,
        }
    }

    /// Every refusal recorded since the start.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Counts one refusal; returns a line to log now if this is the first from `ip` this window and the
    /// window still has room for immediate lines.
    pub fn record(&mut self, ip: IpAddr, reason: &str) -> Option<String> {
        self.total += 1;
        let known = self.entries.contains_key(&ip);
        if !known && self.entries.len() >= ADDRESSES_MAX {
            self.overflow += 1;
            return None;
        }
        if !known && self.immediate_left > 0 {
            self.immediate_left -= 1;
            self.entries.insert(ip, Entry { unreported: 0, last_reason: reason.to_string() });
            let secs = self.window.as_secs();
            return Some(format!("refused connection from {ip}: {reason} (more are summarised every {secs} s)"));
        }
        let entry = self.entries.entry(ip).or_insert_with(|| Entry { unreported: 0, last_reason: String::new() });
        entry.unreported += 1;
        if entry.last_reason != reason {
            entry.last_reason = reason.to_string();
        }
        None
    }

    /// Closes the window if it has run its time: the summary lines for it (possibly none).
    pub fn roll(&mut self, now: Instant) -> Vec<String> {
        if now.saturating_duration_since(self.window_start) < self.window {
            return Vec::new();
        }
        let secs = self.window.as_secs();
        let mut counted: Vec<(IpAddr, Entry)> = self.entries.drain().filter(|(_, e)| e.unreported > 0).collect();
        counted.sort_by(|a, b| b.1.unreported.cmp(&a.1.unreported).then(a.0.cmp(&b.0)));
        let mut lines = Vec::new();
        let rest = counted.split_off(counted.len().min(SUMMARY_MAX));
        for (ip, e) in counted {
            lines.push(format!(
                "refused {} connections from {ip} in the last {secs} s (last reason: {})",
                e.unreported, e.last_reason
            ));
        }
        let rest_count: u64 = rest.iter().map(|(_, e)| e.unreported).sum::<u64>() + self.overflow;
        if rest_count > 0 {
            let addresses = rest.len() + usize::from(self.overflow > 0);
            lines.push(format!(
                "refused {rest_count} connections from {addresses}{} other addresses in the last {secs} s",
                if self.overflow > 0 { "+" } else { "" }
            ));
        }
        self.window_start = now;
        self.overflow = 0;
        self.immediate_left = IMMEDIATE_MAX;
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_flood_from_one_address_is_one_immediate_line_and_one_summary() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(WINDOW, t0);
        let mut lines = Vec::new();
        for _ in 0..10_000 {
            lines.extend(log.record(ip(1), "handshake timed out"));
        }
        assert_eq!(lines.len(), 1);
        assert!(lines[0].starts_with("refused connection from 10.0.0.1: handshake timed out"), "{}", lines[0]);
        assert!(log.roll(t0 + Duration::from_secs(5)).is_empty(), "the window is still open");
        let summary = log.roll(t0 + WINDOW);
        assert_eq!(
            summary,
            vec!["refused 9999 connections from 10.0.0.1 in the last 10 s (last reason: handshake timed out)"]
        );
        assert_eq!(log.total(), 10_000);
        // A quiet window says nothing; the next one starts with an immediate line again.
        assert!(log.roll(t0 + 2 * WINDOW).is_empty());
        assert!(log.record(ip(1), "bad magic").is_some());
    }

    #[test]
    fn many_addresses_stay_within_the_line_bound_and_every_refusal_is_counted() {
        let t0 = Instant::now();
        let mut log = RefusalLog::new(WINDOW, t0);
        let mut immediate = 0;
        for n in 0..=255u8 {
            for _ in 0..3 {
                immediate += usize::from(log.record(ip(n), "handshake budget full").is_some());
            }
        }
        assert_eq!(immediate, IMMEDIATE_MAX);
        let summary = log.roll(t0 + WINDOW);
        assert_eq!(summary.len(), SUMMARY_MAX + 1);
        let number = |line: &str| line.split(' ').nth(1).unwrap().parse::<u64>().unwrap();
        let summarised: u64 = summary.iter().map(|l| number(l)).sum();
        assert_eq!(summarised + immediate as u64, 256 * 3);
        assert!(summary.last().unwrap().contains("other addresses"));
    }
}
