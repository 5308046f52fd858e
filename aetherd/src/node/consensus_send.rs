//! The consensus send path: the replica's messages encoded and queued on the transport, refusals counted
//! and logged, and repeated forwards of the same command to the same peer held back for a while.
//!
//! Forwards: the replica forwards a client command to every peer, and forwards it again on every
//! retransmit period while it waits in its queue past `reforward_after_ms`. Over a live connection the
//! first copy arrives (the transport is reliable and ordered until a reconnect), so a repeat within
//! `FORWARD_REPEAT_AFTER` only fills the peer's queue, and with megabyte values it fills it fast enough to
//! delay pings past the suspicion timeout. A repeat to a peer is queued only once the window passed, or
//! after the peer reconnected (frames in flight may have been lost).
//!
//! Invariants: no consensus message other than a `Forward` is held back or altered; the window's memory
//! is bounded by what was forwarded within one window (older entries are dropped on every send). A
//! `Forward` every peer takes whole (the usual case: a first forward of new commands) is encoded once and
//! the same bytes go to each peer; only one held back in part is rebuilt for that peer.

use super::Node;
use crate::replication::Effect;
use consensus::{CommandId, Message};
use net::{Ctx, FrameKind, PeerId, SendError};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const FORWARD_REPEAT_AFTER: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(super) struct ForwardWindow {
    sent: HashMap<(PeerId, CommandId), Instant>,
    pruned_at: Option<Instant>,
}

/// What of a `Forward` may go to a peer now.
#[derive(Debug, PartialEq)]
enum Admitted {
    /// Every command: the message goes as it is.
    All,
    /// Only these (the others were sent to the peer within the window).
    Part(Vec<consensus::Command>),
    /// Nothing.
    Nothing,
}

impl ForwardWindow {
    /// What of a `Forward` of `commands` may go to `peer` now, recording what may as sent.
    fn admit(&mut self, now: Instant, peer: PeerId, commands: &[consensus::Command]) -> Admitted {
        if self.pruned_at.is_none_or(|at| now >= at + FORWARD_REPEAT_AFTER) {
            self.sent.retain(|_, at| now < *at + FORWARD_REPEAT_AFTER);
            self.pruned_at = Some(now);
        }
        let mut held = Vec::new();
        for (i, command) in commands.iter().enumerate() {
            match self.sent.entry((peer, command.id)) {
                Entry::Occupied(sent) if now < *sent.get() + FORWARD_REPEAT_AFTER => held.push(i),
                Entry::Occupied(mut sent) => {
                    sent.insert(now);
                }
                Entry::Vacant(slot) => {
                    slot.insert(now);
                }
            }
        }
        if held.is_empty() {
            return Admitted::All;
        }
        if held.len() == commands.len() {
            return Admitted::Nothing;
        }
        let mut held = held.into_iter().peekable();
        let admitted = commands
            .iter()
            .enumerate()
            .filter(|(i, _)| held.next_if_eq(i).is_none())
            .map(|(_, command)| command.clone())
            .collect();
        Admitted::Part(admitted)
    }

    /// The peer reconnected: whatever was in flight may be lost, so forwards to it go out again.
    pub(super) fn forget_peer(&mut self, peer: PeerId) {
        self.sent.retain(|(p, _), _| *p != peer);
    }
}

impl Node {
    pub(super) fn carry_out(&mut self, ctx: &mut Ctx<'_>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(to, message) => {
                    if let Some(peer) = self.peer_of_replica.get(to.index()).copied().flatten() {
                        self.send_consensus(ctx, peer, &message);
                    }
                }
                Effect::Broadcast(message @ Message::Forward { .. }) => {
                    let Message::Forward { commands } = &message else { continue };
                    let now = Instant::now();
                    let mut whole: Option<Vec<u8>> = None;
                    for peer in 0..ctx.peer_count() {
                        if !ctx.is_connected(peer) {
                            continue;
                        }
                        match self.forwarded.admit(now, peer, commands) {
                            Admitted::All => {
                                let bytes = whole.get_or_insert_with(|| consensus::encode_message(&message));
                                if let Err(e) = ctx.send(peer, FrameKind::Consensus, bytes) {
                                    let len = bytes.len();
                                    self.consensus_send_refused(peer, &message, len, &e);
                                }
                            }
                            Admitted::Part(admitted) => {
                                self.send_consensus(ctx, peer, &Message::Forward { commands: admitted })
                            }
                            Admitted::Nothing => {}
                        }
                    }
                }
                Effect::Broadcast(message) => {
                    let bytes = consensus::encode_message(&message);
                    for peer in 0..ctx.peer_count() {
                        if let Err(e) = ctx.send(peer, FrameKind::Consensus, &bytes) {
                            self.consensus_send_refused(peer, &message, bytes.len(), &e);
                        }
                    }
                }
                Effect::Timer(kind, at_ms) => self.arm(ctx, kind, at_ms),
                // The nodes/members record changed in the same slot: follow it now, before the next slot's
                // messages go out.
                Effect::MembersChanged | Effect::Removed => self.follow_roster(ctx),
            }
        }
    }

    fn send_consensus(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, message: &Message) {
        let bytes = consensus::encode_message(message);
        if let Err(e) = ctx.send(peer, FrameKind::Consensus, &bytes) {
            self.consensus_send_refused(peer, message, bytes.len(), &e);
        }
    }

    /// Counts (and now and then logs) a consensus message the transport did not queue. A peer that is not
    /// connected is not a refusal: it is down, and catch-up covers what it missed.
    fn consensus_send_refused(&mut self, peer: PeerId, message: &Message, bytes: usize, e: &SendError) {
        if matches!(e, SendError::NotConnected | SendError::UnknownPeer) {
            // Down (catch-up covers what it missed), or no longer a member.
            return;
        }
        let name = self.peer_names.get(peer).map_or("?", String::as_str);
        let kind = crate::send_refusals::kind(message);
        if let Some(line) = self.refusals.record(Instant::now(), name, kind, bytes, e) {
            log::warn!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consensus::ReplicaId;

    fn command(seq: u64) -> consensus::Command {
        consensus::Command {
            id: CommandId { client: 1, seq },
            origin: ReplicaId(0),
            timestamp_ms: 0,
            deadline_ms: 0,
            payload: vec![1],
            kind: Default::default(),
        }
    }

    #[test]
    fn a_command_is_forwarded_to_a_peer_again_only_after_the_window_or_a_reconnect() {
        let mut window = ForwardWindow::default();
        let start = Instant::now();
        assert_eq!(window.admit(start, 0, &[command(1), command(2)]), Admitted::All);
        assert_eq!(window.admit(start, 1, &[command(1)]), Admitted::All, "every peer gets its first copy");
        let soon = start + Duration::from_millis(20);
        assert_eq!(window.admit(soon, 0, &[command(1), command(3)]), Admitted::Part(vec![command(3)]));
        let (two, four) = (command(2), command(4));
        assert_eq!(
            window.admit(soon, 0, &[command(4), two.clone(), command(5)]),
            Admitted::Part(vec![four, command(5)])
        );
        window.forget_peer(0);
        assert_eq!(window.admit(soon, 0, &[command(1)]), Admitted::All, "a reconnect resets the window");
        assert_eq!(window.admit(soon, 1, &[command(1)]), Admitted::Nothing);
        let later = start + FORWARD_REPEAT_AFTER;
        assert_eq!(window.admit(later, 1, &[command(1)]), Admitted::All, "past the window it goes again");
        assert_eq!(window.admit(later, 0, &[two]), Admitted::All);
        assert_eq!(window.admit(later, 0, &[command(1)]), Admitted::Nothing, "sent again at `soon`: still held");
    }
}
