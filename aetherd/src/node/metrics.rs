//! The loop's part of the node's metrics: once a second it measures what only the loop knows (its lag,
//! the peers' traffic, consensus progress, the leader), builds this node's summary, stores it on the
//! board and sends it to every connected peer as a `Gossip` frame; a `Gossip` frame from a peer is
//! decoded, checked and stored.
//!
//! Invariants: a peer's summary is taken only when it names that peer itself (a node cannot speak for
//! another); refused summaries are logged at most once per [`REFUSAL_LOG_EVERY`] and counted.

use super::Node;
use crate::metrics::LoopFigures;
use net::{Ctx, FrameKind, PeerId};
use std::time::{Duration, Instant};

/// How often the node measures and sends its summary.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(1);
/// Refused summaries are logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// When the last summary went out, and refused summaries since the last log line.
#[derive(Default)]
pub(super) struct Gossip {
    last_sent: Option<Instant>,
    refused: u64,
    refused_logged: Option<Instant>,
}

impl Node {
    /// Measures and sends this node's summary when a second has passed since the last one.
    pub(super) fn publish_metrics(&mut self, ctx: &mut Ctx<'_>) {
        let now = Instant::now();
        if self.gossip.last_sent.is_some_and(|at| now.saturating_duration_since(at) < SUMMARY_EVERY) {
            return;
        }
        self.gossip.last_sent = Some(now);
        let replication = self.replication.as_ref();
        let figures = LoopFigures {
            time_ms: crate::managers::wall_ms(),
            loop_lag: ctx.take_loop_lag(),
            peers: ctx.peers(),
            cluster_connections: ctx.open_connections() as u64,
            applied_slot: replication.and_then(crate::replication::Replication::applied_slot),
            consensus: replication.map(|r| r.consensus_stats().clone()),
        };
        let metrics = &self.data.metrics;
        metrics.board().set_leader(self.deployment.as_ref().and_then(|d| d.leader.leader()).map(str::to_string));
        let summary = metrics.summarise(figures);
        ctx.broadcast(FrameKind::Gossip, &summary.encode());
    }

    /// A peer's summary: stored when it checks and names the peer that sent it.
    pub(super) fn receive_summary(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, payload: &[u8]) {
        let from = ctx.peer_id(peer).unwrap_or("?").to_string();
        let accepted = telemetry::decode(payload).and_then(|summary| {
            if summary.node != from {
                return Err(telemetry::SummaryError(format!("{from} sent a summary naming {}", summary.node)));
            }
            self.data.metrics.board().accept(summary, crate::managers::wall_ms())
        });
        if let Err(e) = accepted {
            self.gossip.refused += 1;
            let now = Instant::now();
            if self.gossip.refused_logged.is_none_or(|at| now.saturating_duration_since(at) >= REFUSAL_LOG_EVERY) {
                log::warn!("from {from}: {e} ({} refused so far)", self.gossip.refused);
                self.gossip.refused_logged = Some(now);
            }
        }
    }
}
