//! The peer side of the connection table: closing a connection (and what that means for its peer and its
//! admission slot) and dialing peers with backoff.
//!
//! Invariants:
//! - Closing an inbound connection that never authenticated releases its admission slot and is counted in
//!   the aggregated refusal log, never logged on its own.
//! - A failing dial to a peer logs its reason once, and again only when the reason changes, so a peer that
//!   keeps refusing us (another CA, another secret) costs one line, not one per backoff step.
//! - After a close, a peer without a connection has a dial scheduled (see `transport`).

use crate::auth;
use crate::conn::Conn;
use crate::timers::TimerKind;
use crate::transport::{peer_addr, Event, Transport};
use crate::PeerId;
use log::{debug, warn};
use mio::net::TcpStream;
use std::time::Instant;

impl Transport {
    pub fn close(&mut self, i: usize, reason: &str) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else { return };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(i);
        let unauthenticated_inbound = conn.pending_ip.take();
        if let Some(ip) = unauthenticated_inbound {
            self.admission.release(ip);
            if reason != "node stopping" {
                self.note_refusal(ip, reason);
            }
        }
        let Some(pid) = conn.peer else {
            debug!("closed unidentified connection ({}): {reason}", peer_addr(&conn));
            return;
        };
        let peer = &mut self.peers[pid];
        let noteworthy =
            ["refused", "peer refused", "TLS", "the peer's certificate"].iter().any(|p| reason.starts_with(p));
        if peer.conn == Some(i) {
            peer.conn = None;
            warn!("lost connection to {}: {reason}", peer.spec.id);
            self.events.push_back(Event::Down(pid));
        } else if unauthenticated_inbound.is_some() {
            debug!("connection claiming to be {} closed: {reason}", peer.spec.id);
        } else if noteworthy && peer.last_failure.as_deref() != Some(reason) {
            warn!(
                "connection with {} at {} closed: {reason} (logged again only if the reason changes)",
                peer.spec.id,
                peer_addr(&conn)
            );
            peer.last_failure = Some(reason.to_string());
        } else {
            debug!("connection with {} closed: {reason}", peer.spec.id);
        }
        if peer.dialing == Some(i) {
            peer.dialing = None;
        }
        self.schedule_dial(pid);
    }

    pub(crate) fn schedule_dial(&mut self, pid: PeerId) {
        let peer = &mut self.peers[pid];
        if peer.retired || peer.conn.is_some() || peer.dialing.is_some() || peer.dial_scheduled {
            return;
        }
        peer.dial_scheduled = true;
        let delay = peer.backoff.next_delay(&mut self.rng);
        self.timers.set(Instant::now() + delay, TimerKind::Dial(pid));
    }

    pub(crate) fn dial(&mut self, pid: PeerId, now: Instant) {
        let peer = &mut self.peers[pid];
        peer.dial_scheduled = false;
        if peer.retired || peer.conn.is_some() || peer.dialing.is_some() {
            return;
        }
        let addr = peer.spec.addr;
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let nonce = auth::nonce(&mut self.rng);
                let mut conn = Conn::new(stream, true, Some(pid), nonce, now, Some(addr));
                if let Err(e) = self.attach_client_tls(&mut conn, pid) {
                    warn!("cannot dial {}: {e}", self.peers[pid].spec.id);
                    self.schedule_dial(pid);
                    return;
                }
                match self.insert(conn) {
                    Some(i) => self.peers[pid].dialing = Some(i),
                    None => self.schedule_dial(pid),
                }
            }
            Err(e) => {
                debug!("dial {} at {addr} failed: {e}", self.peers[pid].spec.id);
                self.schedule_dial(pid);
            }
        }
    }
}
