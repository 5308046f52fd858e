//! Snapshot transfer in chunks: a replica behind the sender's compacted log gets the latest snapshot as a
//! sequence of `SnapshotChunk` messages, each small enough for the transport, which it pulls one at a time.
//!
//! Sender: offers the chunk at offset 0 (with the sessions, which count against the chunk's byte bound:
//! beside many sessions it carries as little as one state byte) to a peer that needs the snapshot, at most once
//! per `snapshot_retry_ms` while no chunk went to that peer; answers `SnapshotRequest { next_slot, offset }`
//! with the chunk at `offset`, or with offset 0 of its own snapshot when it no longer holds `next_slot` (a
//! newer snapshot replaced it: the receiver restarts cleanly). Chunks are slices of the shared state bytes,
//! so serving one costs one chunk of copying, and the receiver's pace (one request per chunk received)
//! bounds the sender's work per peer.
//!
//! Receiver: holds at most one transfer, from one peer, for one snapshot; its buffer is bounded by the
//! announced length, which is bounded by `snapshot_bytes_max`. A chunk that does not continue the
//! transfer is ignored; offset 0 of a newer snapshot replaces it. Without progress it asks again every
//! `snapshot_retry_ms` (lost chunks), and after `snapshot_stall_ms` it drops the transfer (the sender went
//! away); the next catch-up starts a new one. Once complete, the snapshot installs as a whole.

use bytes::Bytes;

use super::{Output, Replica};
use crate::log::StoredSnapshot;
use crate::message::{Message, SessionRecord};
use crate::types::{Broken, Members, ReplicaId, Slot};

/// A snapshot being received.
#[derive(Clone, Debug)]
pub(super) struct Transfer {
    from: ReplicaId,
    next_slot: Slot,
    state_len: u64,
    sessions: Vec<SessionRecord>,
    members: Members,
    bytes: Vec<u8>,
    progress_at_ms: u64,
    asked_at_ms: u64,
}

impl Replica {
    /// Starts (or restarts) sending our snapshot to `peer`, unless a chunk went to it recently.
    pub(super) fn offer_snapshot(&mut self, now_ms: u64, peer: ReplicaId, out: &mut Vec<Output>) {
        let retry_ms = self.config.snapshot_retry_ms;
        let Some(track) = self.peers.get(peer.index()) else { return };
        if track.chunk_sent_at_ms.is_some_and(|at| now_ms < at.saturating_add(retry_ms)) {
            return;
        }
        self.send_chunk(now_ms, peer, 0, out);
    }

    /// Sends the chunk of our snapshot at `offset`.
    fn send_chunk(&mut self, now_ms: u64, peer: ReplicaId, offset: u64, out: &mut Vec<Output>) {
        let Some(snapshot) = &self.log.snapshot else { return };
        let state_len = snapshot.state.len() as u64;
        if offset > state_len || (offset == state_len && state_len > 0) {
            return;
        }
        let chunk_bytes = match self.config.broken {
            Broken::UnboundedSyncReply => usize::MAX,
            _ => self.config.snapshot_chunk_bytes.max(1),
        };
        let sessions = if offset == 0 { snapshot.sessions.clone() } else { Vec::new() };
        // The sessions count against the chunk's bound: beside them the first chunk carries only the
        // state bytes that still fit (at least one, so the transfer always progresses).
        let state_bytes = chunk_bytes.saturating_sub(sessions_bytes(&sessions)).max(1);
        let start = offset as usize;
        let end = start.saturating_add(state_bytes).min(snapshot.state.len());
        let message = Message::SnapshotChunk {
            next_slot: snapshot.next_slot,
            state_len,
            offset,
            sessions,
            members: snapshot.members,
            bytes: snapshot.state[start..end].to_vec(),
        };
        if let Some(track) = self.peers.get_mut(peer.index()) {
            track.chunk_sent_at_ms = Some(now_ms);
        }
        self.stats.snapshot_chunks_sent += 1;
        out.push(Output::Send { to: peer, message });
    }

    /// A peer asks for a chunk: the one it names if we still hold that snapshot, else our newer one.
    pub(super) fn on_snapshot_request(
        &mut self,
        now_ms: u64,
        peer: ReplicaId,
        next_slot: Slot,
        offset: u64,
        out: &mut Vec<Output>,
    ) {
        let Some(ours) = self.log.snapshot.as_ref().map(|s| s.next_slot) else { return };
        if ours == next_slot {
            self.send_chunk(now_ms, peer, offset, out);
        } else if ours > next_slot {
            self.send_chunk(now_ms, peer, 0, out);
        }
    }

    pub(super) fn on_snapshot_chunk(&mut self, now_ms: u64, from: ReplicaId, chunk: Chunk, out: &mut Vec<Output>) {
        let Chunk { next_slot, state_len, offset, sessions, members, bytes } = chunk;
        if next_slot <= self.next_slot {
            // Nothing to gain; a transfer of an older snapshot than our position is useless too.
            if self.transfer.as_ref().is_some_and(|t| t.next_slot <= self.next_slot) {
                self.transfer = None;
            }
            return;
        }
        let end = offset.checked_add(bytes.len() as u64);
        let no_members = offset == 0 && members.is_empty();
        if state_len > self.config.snapshot_bytes_max as u64 || end.is_none_or(|end| end > state_len) || no_members {
            self.stats.invalid_messages += 1;
            return;
        }
        let current = self.transfer.as_ref().map(|t| (t.from, t.next_slot, t.bytes.len() as u64));
        let newer = current.is_none_or(|(_, slot, _)| next_slot > slot);
        if newer {
            if offset != 0 {
                // The middle of a snapshot we have not started: ask for its beginning.
                out.push(Output::Send { to: from, message: Message::SnapshotRequest { next_slot, offset: 0 } });
                return;
            }
            if current.is_some() {
                self.stats.snapshot_transfers_restarted += 1;
            }
            // The announced length is bounded by `snapshot_bytes_max`; reserving it once spares the loop
            // the copies of a growing buffer.
            self.transfer = Some(Transfer {
                from,
                next_slot,
                state_len,
                sessions,
                members,
                bytes: Vec::with_capacity(state_len as usize),
                progress_at_ms: now_ms,
                asked_at_ms: now_ms,
            });
        } else if current != Some((from, next_slot, offset)) {
            // A duplicate, a chunk out of order, or the same snapshot from another peer: not ours to take.
            return;
        }
        let Some(transfer) = self.transfer.as_mut() else { return };
        if transfer.state_len != state_len {
            self.stats.invalid_messages += 1;
            self.transfer = None;
            return;
        }
        transfer.bytes.extend_from_slice(&bytes);
        transfer.progress_at_ms = now_ms;
        transfer.asked_at_ms = now_ms;
        self.stats.snapshot_chunks_received += 1;
        if (transfer.bytes.len() as u64) < state_len {
            let offset = transfer.bytes.len() as u64;
            out.push(Output::Send { to: from, message: Message::SnapshotRequest { next_slot, offset } });
            return;
        }
        if let Some(done) = self.transfer.take() {
            let snapshot = StoredSnapshot {
                next_slot: done.next_slot,
                sessions: done.sessions,
                members: done.members,
                state: Bytes::from(done.bytes),
            };
            self.install_snapshot(now_ms, snapshot, out);
        }
    }

    /// On the retransmit timer: asks again for a chunk that did not come, or drops a stalled transfer.
    pub(super) fn tend_transfer(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        let (retry_ms, stall_ms) = (self.config.snapshot_retry_ms, self.config.snapshot_stall_ms);
        let Some(transfer) = self.transfer.as_mut() else { return };
        if transfer.next_slot <= self.next_slot {
            self.transfer = None;
            return;
        }
        if now_ms >= transfer.progress_at_ms.saturating_add(stall_ms) {
            self.transfer = None;
            self.stats.snapshot_transfers_stalled += 1;
            return;
        }
        if now_ms >= transfer.asked_at_ms.saturating_add(retry_ms) {
            transfer.asked_at_ms = now_ms;
            let (next_slot, offset) = (transfer.next_slot, transfer.bytes.len() as u64);
            out.push(Output::Send { to: transfer.from, message: Message::SnapshotRequest { next_slot, offset } });
        }
    }

    /// Bytes held by a snapshot transfer in progress (0 without one).
    pub fn transfer_bytes(&self) -> usize {
        self.transfer.as_ref().map_or(0, |t| t.bytes.len())
    }
}

/// Encoded size of session records, roughly (three words and a vector header each, a word per entry).
fn sessions_bytes(sessions: &[SessionRecord]) -> usize {
    sessions.iter().map(|s| 32usize.saturating_add(s.applied_above.len().saturating_mul(8))).sum()
}

/// The fields of a `SnapshotChunk` message.
pub(super) struct Chunk {
    pub(super) next_slot: Slot,
    pub(super) state_len: u64,
    pub(super) offset: u64,
    pub(super) sessions: Vec<SessionRecord>,
    pub(super) members: Members,
    pub(super) bytes: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::encode_message;
    use crate::replica::{Input, Resume, SnapshotRecord, TimerKind};
    use crate::types::Config;
    use std::collections::VecDeque;

    const CHUNK: usize = 64;

    fn config(me: u8) -> Config {
        let mut config = Config::new(3, ReplicaId(me), 7);
        config.snapshot_chunk_bytes = CHUNK;
        config
    }

    fn state(next_slot: u64, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u64 * 31 + next_slot) as u8).collect()
    }

    /// A replica holding only a snapshot at `next_slot` (its log below it compacted).
    fn sender(next_slot: u64, len: usize) -> Replica {
        let session = SessionRecord { client: 4, seq_floor: 2, applied_above: vec![], last_slot: next_slot - 1 };
        let snapshot = SnapshotRecord {
            next_slot: Slot(next_slot),
            sessions: vec![session],
            members: crate::types::Members::first(3),
            state: state(next_slot, len),
        };
        Replica::resume(config(0), Resume { snapshot: Some(snapshot), ..Resume::default() })
    }

    /// Replica 0 serves, replica 1 catches up; `lose` decides which messages the network drops.
    struct Pair {
        sender: Replica,
        receiver: Replica,
        now_ms: u64,
        network: VecDeque<(usize, Message)>,
        installed: Vec<(Slot, Bytes)>,
        chunk_sizes: Vec<usize>,
        sent: usize,
    }

    impl Pair {
        fn new(sender: Replica) -> Pair {
            Pair {
                sender,
                receiver: Replica::new(config(1)),
                now_ms: 0,
                network: VecDeque::new(),
                installed: Vec::new(),
                chunk_sizes: Vec::new(),
                sent: 0,
            }
        }

        fn input(&mut self, to: usize, input: Input) {
            let mut out = Vec::new();
            let replica = if to == 0 { &mut self.sender } else { &mut self.receiver };
            replica.handle(self.now_ms, input, &mut out);
            for output in out {
                match output {
                    Output::Send { to: peer, message } if peer.index() < 2 => {
                        if let Message::SnapshotChunk { bytes, .. } = &message {
                            assert!(bytes.len() <= CHUNK);
                            self.chunk_sizes.push(encode_message(&message).len());
                        }
                        self.network.push_back((peer.index(), message));
                    }
                    Output::Broadcast { message } => self.network.push_back((1 - to, message)),
                    Output::InstallSnapshot { next_slot, state } => self.installed.push((next_slot, state)),
                    _ => {}
                }
            }
        }

        /// Delivers messages until the network is empty; `lose(n)` drops the n-th message sent.
        fn settle(&mut self, lose: &mut dyn FnMut(usize, &Message) -> bool) {
            while let Some((to, message)) = self.network.pop_front() {
                self.sent += 1;
                if lose(self.sent, &message) {
                    continue;
                }
                let from = ReplicaId(1 - to as u8);
                self.input(to, Input::Message { from, message });
            }
        }

        /// One retransmit period on both sides, then the network settles.
        fn tick(&mut self, lose: &mut dyn FnMut(usize, &Message) -> bool) {
            self.now_ms += 50;
            self.input(1, Input::Timer(TimerKind::Retransmit));
            self.input(0, Input::Timer(TimerKind::Retransmit));
            self.settle(lose);
        }
    }

    #[test]
    fn a_snapshot_travels_in_chunks_that_fit_and_installs_whole() {
        let mut pair = Pair::new(sender(10, 1000));
        for _ in 0..5 {
            pair.tick(&mut |_, _| false);
        }
        assert_eq!(pair.installed, vec![(Slot(10), Bytes::from(state(10, 1000)))]);
        assert_eq!(pair.receiver.next_slot(), Slot(10));
        assert!(pair.receiver.is_applied(crate::types::CommandId { client: 4, seq: 1 }), "sessions came along");
        assert!(pair.chunk_sizes.len() >= 1000 / CHUNK, "{} chunks", pair.chunk_sizes.len());
        assert!(pair.chunk_sizes.iter().all(|size| *size <= CHUNK + 256), "{:?}", pair.chunk_sizes);
        assert_eq!(pair.receiver.transfer_bytes(), 0);
    }

    #[test]
    fn the_first_chunk_keeps_to_the_bound_beside_many_sessions() {
        // Sessions of 5 and 40 applied sequences above their floors: about 2 chunks' worth of records.
        let sessions: Vec<SessionRecord> = [5u64, 40]
            .iter()
            .map(|count| SessionRecord {
                client: *count,
                seq_floor: 1,
                applied_above: (2..2 + count).collect(),
                last_slot: 9,
            })
            .collect();
        let snapshot = SnapshotRecord {
            next_slot: Slot(10),
            sessions: sessions.clone(),
            members: crate::types::Members::first(3),
            state: state(10, 1000),
        };
        let sender = Replica::resume(config(0), Resume { snapshot: Some(snapshot), ..Resume::default() });
        let mut pair = Pair::new(sender);
        for _ in 0..5 {
            pair.tick(&mut |_, _| false);
        }
        assert_eq!(pair.installed, vec![(Slot(10), Bytes::from(state(10, 1000)))]);
        assert!(pair.receiver.is_applied(crate::types::CommandId { client: 40, seq: 41 }), "sessions came along");
        let bare = encode_message(&Message::SnapshotChunk {
            next_slot: Slot(10),
            state_len: 1000,
            offset: 0,
            sessions,
            members: crate::types::Members::first(3),
            bytes: vec![0; 1],
        })
        .len();
        assert!(pair.chunk_sizes[0] <= bare.max(CHUNK + 256), "first chunk {} bytes", pair.chunk_sizes[0]);
        assert!(pair.chunk_sizes.iter().skip(1).all(|size| *size <= CHUNK + 256), "{:?}", pair.chunk_sizes);
    }

    #[test]
    fn lost_chunks_and_requests_are_asked_for_again() {
        let mut pair = Pair::new(sender(10, 1000));
        let mut lose = |n: usize, m: &Message| {
            matches!(m, Message::SnapshotChunk { .. } | Message::SnapshotRequest { .. }) && n.is_multiple_of(3)
        };
        for _ in 0..200 {
            pair.tick(&mut lose);
            if !pair.installed.is_empty() {
                break;
            }
        }
        assert_eq!(pair.installed, vec![(Slot(10), Bytes::from(state(10, 1000)))]);
    }

    #[test]
    fn a_newer_snapshot_mid_transfer_restarts_it_cleanly() {
        let mut pair = Pair::new(sender(10, 1000));
        // Let a few chunks of the old snapshot through, then the sender compacts further.
        let mut count = 0;
        pair.tick(&mut |_, m| {
            if matches!(m, Message::SnapshotChunk { .. }) {
                count += 1;
            }
            count > 4
        });
        assert!(pair.receiver.transfer_bytes() > 0, "the transfer is under way");
        pair.sender = sender(20, 700);
        for _ in 0..20 {
            pair.tick(&mut |_, _| false);
        }
        assert_eq!(pair.installed, vec![(Slot(20), Bytes::from(state(20, 700)))], "only the newer one installs");
        assert_eq!(pair.receiver.stats().snapshot_transfers_restarted, 1);
    }

    #[test]
    fn a_stalled_transfer_is_dropped_and_a_new_one_completes() {
        let mut pair = Pair::new(sender(10, 1000));
        let mut count = 0;
        pair.tick(&mut |_, m| {
            if matches!(m, Message::SnapshotChunk { .. }) {
                count += 1;
            }
            count > 3
        });
        assert!(pair.receiver.transfer_bytes() > 0);
        // The sender goes silent for longer than the stall bound.
        let stall_ms = pair.receiver.config().snapshot_stall_ms;
        while pair.receiver.transfer_bytes() > 0 {
            assert!(pair.now_ms <= stall_ms + 100, "the transfer never timed out");
            pair.tick(&mut |_, _| true);
        }
        assert_eq!(pair.receiver.stats().snapshot_transfers_stalled, 1);
        for _ in 0..10 {
            pair.tick(&mut |_, _| false);
        }
        assert_eq!(pair.installed, vec![(Slot(10), Bytes::from(state(10, 1000)))]);
    }

    #[test]
    fn chunks_that_do_not_fit_the_transfer_are_refused() {
        let mut receiver = Replica::new(config(1));
        let mut out = Vec::new();
        let chunk = |state_len, offset, bytes: Vec<u8>| Message::SnapshotChunk {
            next_slot: Slot(5),
            state_len,
            offset,
            sessions: Vec::new(),
            members: crate::types::Members::first(3),
            bytes,
        };
        let too_big = chunk(u64::MAX, 0, vec![1]);
        receiver.handle(0, Input::Message { from: ReplicaId(0), message: too_big }, &mut out);
        let past_end = chunk(4, 2, vec![1, 2, 3]);
        receiver.handle(0, Input::Message { from: ReplicaId(0), message: past_end }, &mut out);
        assert_eq!(receiver.stats().invalid_messages, 2);
        assert_eq!(receiver.transfer_bytes(), 0);
    }
}
