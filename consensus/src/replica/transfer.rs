//! Snapshot transfer in chunks: a replica behind the sender's compacted log gets the latest snapshot as a
//! sequence of `SnapshotChunk` messages, each small enough for the transport, which it pulls one at a time.
//!
//! What travels is the snapshot's *image*: its sessions, encoded (`encode_sessions`), then the state
//! machine's bytes. Every chunk, the first included, carries at most `snapshot_chunk_bytes` of it, so no
//! number of sessions makes a chunk outgrow the transport (the sessions of clients whose commands expired
//! below many applied ones can alone be larger than one message).
//!
//! Sender: offers the chunk at offset 0 to a peer that needs the snapshot, at most once per
//! `snapshot_retry_ms` while no chunk went to that peer; answers `SnapshotRequest { next_slot, offset }`
//! with the chunk at `offset`, or with offset 0 of its own snapshot when it no longer holds `next_slot` (a
//! newer snapshot replaced it: the receiver restarts cleanly). The encoded sessions are kept for the
//! snapshot being served and chunks are slices of them and of the shared state bytes, so serving one costs
//! one chunk of copying, and the receiver's pace (one request per chunk received) bounds the sender's work
//! per peer.
//!
//! Receiver: holds at most one transfer, from one peer, for one snapshot; its buffer is bounded by the
//! announced length, which is bounded by `snapshot_bytes_max`. A chunk that does not continue the
//! transfer is ignored; offset 0 of a newer snapshot replaces it. Without progress it asks again every
//! `snapshot_retry_ms` (lost chunks), and after `snapshot_stall_ms` it drops the transfer (the sender went
//! away); the next catch-up starts a new one. Once complete, the image is split into sessions and state
//! (an image whose sessions do not decode is refused and dropped) and the snapshot installs as a whole.

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
    image_len: u64,
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

    /// Sends the chunk of our snapshot's image at `offset`.
    fn send_chunk(&mut self, now_ms: u64, peer: ReplicaId, offset: u64, out: &mut Vec<Output>) {
        let Some(snapshot) = &self.log.snapshot else { return };
        // Snapshots of one slot hold the same sessions (they follow from the slots below it).
        let sessions = match &self.served_sessions {
            Some((slot, encoded)) if *slot == snapshot.next_slot => encoded.clone(),
            _ => {
                let encoded = Bytes::from(encode_sessions(&snapshot.sessions));
                self.served_sessions = Some((snapshot.next_slot, encoded.clone()));
                encoded
            }
        };
        let image_len = (sessions.len() + snapshot.state.len()) as u64;
        if offset >= image_len {
            return;
        }
        let chunk_bytes = match self.config.broken {
            Broken::UnboundedSyncReply => usize::MAX,
            _ => self.config.snapshot_chunk_bytes.max(1),
        };
        let start = offset as usize;
        let end = start.saturating_add(chunk_bytes).min(image_len as usize);
        let split = sessions.len();
        let mut bytes = Vec::with_capacity(end - start);
        bytes.extend_from_slice(&sessions[start.min(split)..end.min(split)]);
        bytes.extend_from_slice(&snapshot.state[start.max(split) - split..end.max(split) - split]);
        let message = Message::SnapshotChunk {
            next_slot: snapshot.next_slot,
            image_len,
            offset,
            members: snapshot.members,
            bytes,
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
        let Chunk { next_slot, image_len, offset, members, bytes } = chunk;
        if next_slot <= self.next_slot {
            // Nothing to gain; a transfer of an older snapshot than our position is useless too.
            if self.transfer.as_ref().is_some_and(|t| t.next_slot <= self.next_slot) {
                self.transfer = None;
            }
            return;
        }
        let end = offset.checked_add(bytes.len() as u64);
        let no_members = offset == 0 && members.is_empty();
        if image_len > self.config.snapshot_bytes_max as u64 || end.is_none_or(|end| end > image_len) || no_members {
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
                image_len,
                members,
                bytes: Vec::with_capacity(image_len as usize),
                progress_at_ms: now_ms,
                asked_at_ms: now_ms,
            });
        } else if current != Some((from, next_slot, offset)) {
            // A duplicate, a chunk out of order, or the same snapshot from another peer: not ours to take.
            return;
        }
        let Some(transfer) = self.transfer.as_mut() else { return };
        if transfer.image_len != image_len {
            self.stats.invalid_messages += 1;
            self.transfer = None;
            return;
        }
        transfer.bytes.extend_from_slice(&bytes);
        transfer.progress_at_ms = now_ms;
        transfer.asked_at_ms = now_ms;
        self.stats.snapshot_chunks_received += 1;
        if (transfer.bytes.len() as u64) < image_len {
            let offset = transfer.bytes.len() as u64;
            out.push(Output::Send { to: from, message: Message::SnapshotRequest { next_slot, offset } });
            return;
        }
        if let Some(done) = self.transfer.take() {
            let image = Bytes::from(done.bytes);
            let Some((sessions, state_at)) = decode_sessions(&image) else {
                self.stats.invalid_messages += 1;
                return;
            };
            let snapshot = StoredSnapshot {
                next_slot: done.next_slot,
                sessions,
                members: done.members,
                state: image.slice(state_at..),
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

/// The sessions as they open a snapshot's image: their count, then per record the client, the sequence
/// floor, the last slot, the count of sequences applied above the floor and those sequences, all as
/// little-endian u64s.
fn encode_sessions(sessions: &[SessionRecord]) -> Vec<u8> {
    let words = 1 + sessions.iter().map(|s| 4 + s.applied_above.len()).sum::<usize>();
    let mut encoded = Vec::with_capacity(words * 8);
    let mut put = |word: u64| encoded.extend_from_slice(&word.to_le_bytes());
    put(sessions.len() as u64);
    for session in sessions {
        put(session.client);
        put(session.seq_floor);
        put(session.last_slot);
        put(session.applied_above.len() as u64);
        session.applied_above.iter().for_each(|seq| put(*seq));
    }
    encoded
}

/// The sessions at the start of an image, and where its state bytes begin; `None` if the image does not
/// start with well-formed sessions. Counts are checked against the bytes left before anything is reserved.
fn decode_sessions(image: &[u8]) -> Option<(Vec<SessionRecord>, usize)> {
    let mut at = 0usize;
    let mut take = || {
        let word = image.get(at..at.checked_add(8)?)?;
        at += 8;
        Some(u64::from_le_bytes(word.try_into().ok()?))
    };
    let count = take()?;
    let words_left = |at: usize| ((image.len() - at) / 8) as u64;
    if count > words_left(8) / 4 {
        return None;
    }
    let mut sessions = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (client, seq_floor, last_slot, applied) = (take()?, take()?, take()?, take()?);
        let mut applied_above = Vec::new();
        for _ in 0..applied {
            applied_above.push(take()?);
        }
        sessions.push(SessionRecord { client, seq_floor, applied_above, last_slot });
    }
    Some((sessions, at))
}

/// The fields of a `SnapshotChunk` message.
pub(super) struct Chunk {
    pub(super) next_slot: Slot,
    pub(super) image_len: u64,
    pub(super) offset: u64,
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
    fn sessions_larger_than_a_message_travel_in_chunks_too() {
        // Three clients with 60 applied sequences above their floors each: their records alone take many
        // chunks, more than any one message may carry, and the state is smaller than they are.
        let sessions: Vec<SessionRecord> = (0..3u64)
            .map(|client| SessionRecord {
                client: 10 + client,
                seq_floor: 1,
                applied_above: (2..62).collect(),
                last_slot: 9,
            })
            .collect();
        let snapshot = SnapshotRecord {
            next_slot: Slot(10),
            sessions,
            members: crate::types::Members::first(3),
            state: state(10, 100),
        };
        let sender = Replica::resume(config(0), Resume { snapshot: Some(snapshot), ..Resume::default() });
        let mut pair = Pair::new(sender);
        for _ in 0..10 {
            pair.tick(&mut |_, _| false);
        }
        assert!(pair.chunk_sizes.iter().all(|size| *size <= CHUNK + 256), "{:?}", pair.chunk_sizes);
        assert_eq!(pair.installed, vec![(Slot(10), Bytes::from(state(10, 100)))]);
        for client in 10..13 {
            let id = |seq| crate::types::CommandId { client, seq };
            assert!(pair.receiver.is_applied(id(61)) && !pair.receiver.is_applied(id(62)), "client {client}");
        }
    }

    #[test]
    fn an_image_splits_into_its_sessions_and_state_and_a_malformed_one_is_refused() {
        let sessions = vec![
            SessionRecord { client: 1, seq_floor: 4, applied_above: vec![6, 9], last_slot: 3 },
            SessionRecord { client: 2, seq_floor: 0, applied_above: Vec::new(), last_slot: 1 },
        ];
        let mut image = encode_sessions(&sessions);
        let state_at = image.len();
        image.extend_from_slice(b"state");
        assert_eq!(decode_sessions(&image), Some((sessions, state_at)));
        assert_eq!(decode_sessions(&encode_sessions(&[])), Some((Vec::new(), 8)));
        assert_eq!(decode_sessions(&image[..state_at - 1]), None, "a truncated record");
        assert_eq!(decode_sessions(&[0xff; 40]), None, "a count past what the bytes can hold");
        assert_eq!(decode_sessions(&[]), None);
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
        let chunk = |image_len, offset, bytes: Vec<u8>| Message::SnapshotChunk {
            next_slot: Slot(5),
            image_len,
            offset,
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
