//! The event loop's part in the event log and the live settings: observing the failure detector and the
//! applied store, sending this node's new events to every peer (and recent history to a peer that
//! connects), merging what peers send, and applying live settings and log levels from the store.
//!
//! Invariants: events go out on `FrameKind::Events` in batches of at most `peer::BATCH_EVENTS_MAX`; a
//! batch a peer's queue refuses is dropped (the peer gets it with the history when it reconnects); the
//! history a connecting peer gets is at most `peer::HISTORY_MAX` events.

use super::Node;
use crate::events::{observe::Observer, peer, EventLog};
use crate::live::{LiveSettings, LiveWatch};
use crate::managers::wall_ms;
use crate::membership::MembershipEvent;
use net::{Ctx, FrameKind, PeerId};
use std::sync::Arc;

/// What the loop keeps for events and live settings.
pub(super) struct Ops {
    observer: Observer,
    live: LiveWatch,
    pub(super) settings: Arc<LiveSettings>,
    /// Every member's node id, for checking what peers send (follows the roster).
    pub(super) nodes: Vec<String>,
}

impl Ops {
    pub(super) fn new(
        me: &str,
        nodes: Vec<String>,
        log: Arc<EventLog>,
        settings: Arc<LiveSettings>,
        store: &mut kvstore::Store,
    ) -> Ops {
        Ops { observer: Observer::new(log, store), live: LiveWatch::new(me, store), settings, nodes }
    }

    /// The event log this node records into.
    pub(super) fn observer_log(&self) -> &crate::events::EventLog {
        self.observer.log()
    }
}

impl Node {
    /// The failure detector's changes, as events.
    pub(super) fn observe_membership(&self, events: &[MembershipEvent]) {
        if !events.is_empty() {
            self.ops.observer.membership(events, wall_ms());
        }
    }

    /// A running slice's verdict on a new config from its blueprint, as a `slice_reconfigured` event.
    pub(super) fn record_reconfigured(&self, artifact: &kvstore::Artifact, outcome: &Result<(), String>) {
        let log = self.ops.observer.log();
        let me = log.me().to_string();
        let data = match outcome {
            Ok(()) => serde_json::json!({ "artifact": artifact.to_string(), "node": me, "accepted": true }),
            Err(reason) => serde_json::json!({
                "artifact": artifact.to_string(), "node": me, "accepted": false, "reason": reason,
            }),
        };
        log.record(wall_ms(), &me, "slice_reconfigured", data);
    }

    /// After a tick: the store's changes as events, live settings applied, new events sent.
    pub(super) fn observe_store_and_send(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(r) = self.replication.as_mut() {
            self.ops.observer.store(r.store_mut(), wall_ms());
            self.ops.live.poll(r.store_mut(), &self.ops.settings);
        }
        let outbox = self.ops.observer.log().take_outbox();
        if outbox.is_empty() {
            return;
        }
        let frames = peer::encode(&outbox);
        for peer in 0..self.peer_names.len() {
            self.send_event_frames(ctx, peer, &frames);
        }
    }

    /// A peer connected: it gets the recent history (every origin's), so it catches up on what it missed.
    pub(super) fn send_event_history(&mut self, ctx: &mut Ctx<'_>, peer: PeerId) {
        let history = self.ops.observer.log().recent(peer::HISTORY_MAX);
        if !history.is_empty() {
            self.send_event_frames(ctx, peer, &peer::encode(&history));
        }
    }

    fn send_event_frames(&self, ctx: &mut Ctx<'_>, peer: PeerId, frames: &[Vec<u8>]) {
        if !ctx.is_connected(peer) {
            return;
        }
        for frame in frames {
            if let Err(e) = ctx.send(peer, FrameKind::Events, frame) {
                let name = self.peer_names.get(peer).map_or("?", String::as_str);
                log::debug!("events for {name} dropped: {e}");
                return;
            }
        }
    }

    pub(super) fn receive_events(&mut self, ctx: &Ctx<'_>, peer: PeerId, payload: &[u8]) {
        if let Err(peer::Refused(why)) = peer::receive(self.ops.observer.log(), payload, &self.ops.nodes, wall_ms()) {
            log::warn!("events from {} dropped: {why}", ctx.peer_id(peer).unwrap_or("?"));
        }
    }
}
