//! Sending: frames queued for an established peer (after fault injection, in fragments when large),
//! handshake and keepalive frames, and writing queued bytes out; plus fragment reassembly on arrival.
//!
//! Invariants:
//! - A send past a peer's queue bound fails with `QueueFull` and queues nothing; priority frames get twice
//!   the bulk bound, so bulk traffic never crowds out consensus.
//! - Fragments of one message go out in order on one connection; a fragment that does not continue the
//!   message in progress drops it, and an announced length over the limit is a protocol error.

use crate::conn::{Conn, Phase};
use crate::faults::{verdict, Verdict};
use crate::timers::TimerKind;
use crate::transport::{Delayed, Transport};
use crate::{PeerId, SendError};
use bytes::{Bytes, BytesMut};
use std::time::Instant;
use wire::{Frame, FrameKind};

impl Transport {
    // ---- sending -------------------------------------------------------------------------------------

    /// Queues a frame for an established peer, after fault injection.
    pub fn send(&mut self, pid: PeerId, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        let peer = self.peers.get(pid).filter(|p| !p.retired).ok_or(SendError::UnknownPeer)?;
        let i = peer.conn.ok_or(SendError::NotConnected)?;
        match verdict(&self.faults, &peer.spec.id, true) {
            Verdict::Pass => self.queue_on(i, kind, payload),
            Verdict::Drop => Ok(()),
            Verdict::Delay(d) => {
                let frame = Frame { kind, payload: Bytes::copy_from_slice(payload) };
                self.hold(Delayed { peer: pid, outbound: true, frame }, Instant::now() + d);
                Ok(())
            }
        }
    }

    pub(crate) fn queue_on(&mut self, i: usize, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        // Priority traffic gets room beyond the bulk bound, so artifacts never crowd out consensus.
        let limit = if kind.is_priority() { 2 * self.config.queue_bytes_max } else { self.config.queue_bytes_max };
        if payload.len() > self.config.message_len_max {
            return Err(SendError::TooLarge);
        }
        let fragment_bytes = self.config.fragment_bytes;
        let conn = self.conns.get_mut(i).and_then(Option::as_mut).ok_or(SendError::NotConnected)?;
        if conn.queued_bytes() + payload.len() > limit {
            return Err(SendError::QueueFull);
        }
        let (frames, bytes) = if payload.len() <= fragment_bytes {
            conn.queue(kind, payload);
            (1, wire::HEADER_LEN + payload.len())
        } else {
            let all = fragments(kind, payload, fragment_bytes);
            let bytes = all.iter().map(|f| wire::HEADER_LEN + f.len()).sum();
            for fragment in &all {
                conn.queue(FrameKind::Fragment, fragment);
            }
            (all.len(), bytes)
        };
        if let Some(peer) = conn.peer.and_then(|pid| self.peers.get_mut(pid)) {
            peer.traffic.frames_out += frames as u64;
            peer.traffic.bytes_out += bytes as u64;
        }
        self.dirty.push(i);
        Ok(())
    }

    pub(crate) fn hold(&mut self, delayed: Delayed, at: Instant) {
        self.delayed_seq += 1;
        self.delayed.insert(self.delayed_seq, delayed);
        self.timers.set(at, TimerKind::Delayed(self.delayed_seq));
    }

    /// Queues a handshake or keepalive frame, subject to drop rules (delay rules let it through).
    pub(crate) fn send_control(&mut self, conn: &mut Conn, peer_name: Option<&str>, kind: FrameKind, payload: &[u8]) {
        if let Some(name) = peer_name {
            if verdict(&self.faults, name, true) == Verdict::Drop {
                return;
            }
        }
        conn.queue(kind, payload);
        if let Some(peer) = conn.peer.filter(|_| conn.is_established()).and_then(|pid| self.peers.get_mut(pid)) {
            peer.traffic.frames_out += 1;
            peer.traffic.bytes_out += (wire::HEADER_LEN + payload.len()) as u64;
        }
    }

    /// Writes queued bytes of every connection that got some since the last flush.
    pub fn flush_dirty(&mut self, now: Instant) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for &i in &dirty {
            self.flush_conn(i, now);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    pub(crate) fn flush_conn(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
        if matches!(conn.phase, Phase::Connecting) {
            return;
        }
        if let Err(e) = conn.flush(now) {
            self.close(i, &format!("write failed: {e}"));
        }
    }
}

fn fragments(kind: FrameKind, payload: &[u8], fragment_bytes: usize) -> Vec<Vec<u8>> {
    let total = payload.len() as u32;
    payload
        .chunks(fragment_bytes.max(1))
        .enumerate()
        .map(|(n, chunk)| {
            let mut fragment = Vec::with_capacity(9 + chunk.len());
            fragment.push(kind as u8);
            fragment.extend_from_slice(&total.to_be_bytes());
            fragment.extend_from_slice(&((n * fragment_bytes) as u32).to_be_bytes());
            fragment.extend_from_slice(chunk);
            fragment
        })
        .collect()
}

/// Adds one fragment to the connection's message in progress; the whole message once its last piece is in.
/// A fragment that does not continue the message in progress drops it (fault injection may have eaten a
/// piece); a message announcing more than `len_max` bytes is a protocol error.
pub(crate) fn reassemble(conn: &mut Conn, fragment: &[u8], len_max: usize) -> Result<Option<Frame>, String> {
    let (Some(&kind_byte), Some(total), Some(offset)) = (fragment.first(), be_u32(fragment, 1), be_u32(fragment, 5))
    else {
        return Err("fragment header cut short".into());
    };
    let kind = FrameKind::from_u8(kind_byte).ok_or_else(|| format!("fragment of unknown kind {kind_byte}"))?;
    let (total, offset, bytes) = (total as usize, offset as usize, &fragment[9..]);
    if total > len_max {
        return Err(format!("fragmented message of {total} bytes is over the {len_max}-byte limit"));
    }
    if offset == 0 {
        // Grows with what arrives, so an announced length alone reserves nothing.
        conn.reassembly = Some((kind, total, BytesMut::with_capacity(bytes.len())));
    }
    let Some((k, t, buf)) = conn.reassembly.as_mut() else { return Ok(None) };
    if *k != kind || *t != total || buf.len() != offset || offset + bytes.len() > total {
        conn.reassembly = None;
        return Ok(None);
    }
    buf.extend_from_slice(bytes);
    if buf.len() < total {
        return Ok(None);
    }
    Ok(conn.reassembly.take().map(|(kind, _, buf)| Frame { kind, payload: buf.freeze() }))
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_be_bytes)
}
