//! Consensus messages the transport refused to queue (a peer's queue at its bound, a message over the
//! frame limit): counted per reason for the status output, and logged at most once per window with what
//! was refused since the last line, so a stuck peer cannot flood the log.
//!
//! Invariants: every refusal is counted exactly once in `total`; at most one log line per `WINDOW`.

use net::SendError;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct SendRefusals {
    total: u64,
    queue_full: u64,
    too_large: u64,
    /// Refusals not yet in a log line.
    unlogged: u64,
    unlogged_bytes: u64,
    logged_at: Option<Instant>,
}

impl SendRefusals {
    /// Counts one refusal; returns the line to log now, if the window allows one.
    pub fn record(&mut self, now: Instant, peer: &str, what: &str, bytes: usize, error: &SendError) -> Option<String> {
        self.total += 1;
        match error {
            SendError::QueueFull => self.queue_full += 1,
            SendError::TooLarge => self.too_large += 1,
            SendError::UnknownPeer | SendError::NotConnected => {}
        }
        self.unlogged += 1;
        self.unlogged_bytes += bytes as u64;
        if self.logged_at.is_some_and(|at| now < at + WINDOW) {
            return None;
        }
        let line = format!(
            "consensus send refused ({error}): {what} of {bytes} bytes to {peer}; {} refused ({} bytes) since the \
             last report, {} in all ({} queue full, {} too large)",
            self.unlogged, self.unlogged_bytes, self.total, self.queue_full, self.too_large
        );
        self.logged_at = Some(now);
        self.unlogged = 0;
        self.unlogged_bytes = 0;
        Some(line)
    }

    pub fn total(&self) -> u64 {
        self.total
    }
}

/// A consensus message's kind, for the log line.
pub fn kind(message: &consensus::Message) -> &'static str {
    use consensus::Message;
    match message {
        Message::Forward { .. } => "Forward",
        Message::Proposal { .. } => "Proposal",
        Message::State { .. } => "State",
        Message::Vote { .. } => "Vote",
        Message::Status { .. } => "Status",
        Message::SyncRequest { .. } => "SyncRequest",
        Message::SyncReply { .. } => "SyncReply",
        Message::SnapshotChunk { .. } => "SnapshotChunk",
        Message::SnapshotRequest { .. } => "SnapshotRequest",
        Message::RecoveryProbe { .. } => "RecoveryProbe",
        Message::RecoveryReply { .. } => "RecoveryReply",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_counts_but_lines_are_rate_limited() {
        let mut refusals = SendRefusals::default();
        let start = Instant::now();
        assert!(refusals.record(start, "n2", "SyncReply", 10, &SendError::QueueFull).is_some());
        for i in 0..100 {
            let at = start + Duration::from_millis(i);
            assert!(refusals.record(at, "n2", "SyncReply", 10, &SendError::QueueFull).is_none());
        }
        let line = refusals.record(start + WINDOW, "n3", "Snapshot", 5, &SendError::TooLarge).unwrap();
        assert!(line.contains("101 refused (1005 bytes)"), "{line}");
        assert_eq!((refusals.total(), refusals.queue_full, refusals.too_large), (102, 101, 1));
        assert!(line.contains("102 in all (101 queue full, 1 too large)"), "{line}");
    }
}
