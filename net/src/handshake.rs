//! Frames arriving on a connection: the Hello/Auth handshake (cluster secret proof, and with TLS the check
//! that the peer's certificate names the node id it claims), deduplication of a peer's connections, and
//! delivery of established peers' frames (fault injection and fragment reassembly included).
//!
//! Invariants:
//! - A connection is established only after the peer's Hello names a configured peer (the one dialed, for
//!   an outbound connection) and its Auth proves the cluster secret over this connection's nonces.
//! - With TLS on, a Hello whose node id the peer's certificate does not carry is refused.
//! - An inbound connection's admission slot is released the moment it is established.
//! - Text a connection sends before it is authenticated (names in its Hello, the reason of its Reject) is
//!   shown in logs and answers only escaped and clipped ([`shown`]): no forged log lines, no huge ones.

use crate::conn::{Conn, Phase};
use crate::faults::{verdict, Verdict};
use crate::queues::reassemble;
use crate::tls::certificate_names;
use crate::transport::{peer_addr, Delayed, Event, Transport};
use crate::{auth, PeerId};
use log::{debug, info};
use std::time::Instant;
use wire::{Auth, Frame, FrameKind, Hello, Reject, PROTOCOL_VERSION};

/// Most characters of a name a stranger sends (cluster, node id) that a message shows.
const NAME_CHARS_SHOWN: usize = 64;
/// Most characters of a peer's refusal reason that a message shows.
const REASON_CHARS_SHOWN: usize = 300;

/// `text` from an unauthenticated connection, fit for a log line: control characters escaped, clipped.
fn shown(text: &str, chars_max: usize) -> String {
    let mut out: String = text.chars().take(chars_max).flat_map(char::escape_debug).collect();
    if text.chars().nth(chars_max).is_some() {
        out.push_str("...");
    }
    out
}

impl Transport {
    pub(crate) fn send_hello(&mut self, i: usize) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else { return };
        let hello = Hello {
            cluster: self.config.cluster.clone(),
            node_id: self.config.node_id.clone(),
            protocol_version: PROTOCOL_VERSION,
            features: 0,
            nonce: conn.nonce,
        };
        conn.phase = Phase::Handshaking { peer_hello: None };
        let peer_name = conn.peer.and_then(|p| self.peer_id(p)).map(str::to_string);
        self.send_control(&mut conn, peer_name.as_deref(), FrameKind::Hello, &wire::encode(&hello));
        self.conns[i] = Some(conn);
        self.dirty.push(i);
    }

    // ---- frames --------------------------------------------------------------------------------------

    pub(crate) fn on_frame(&mut self, i: usize, conn: &mut Conn, frame: Frame, now: Instant) -> Result<(), String> {
        if frame.kind == FrameKind::Reject {
            let reason = wire::decode::<Reject>(&frame.payload).map(|r| r.reason).unwrap_or_default();
            return Err(format!("peer refused the connection: {}", shown(&reason, REASON_CHARS_SHOWN)));
        }
        match conn.phase {
            Phase::Established => self.on_established_frame(conn, frame, now),
            Phase::Handshaking { peer_hello: None } => self.on_hello(conn, frame),
            Phase::Handshaking { peer_hello: Some(_) } => self.on_auth(i, conn, frame, now),
            Phase::Connecting => Err("frame before the connection was up".into()),
        }
    }

    pub(crate) fn on_established_frame(&mut self, conn: &mut Conn, frame: Frame, now: Instant) -> Result<(), String> {
        let Some(pid) = conn.peer else { return Err("established connection without a peer".into()) };
        let name = self.peers[pid].spec.id.clone();
        match verdict(&self.faults, &name, false) {
            Verdict::Drop => return Ok(()),
            Verdict::Delay(d) => {
                self.hold(Delayed { peer: pid, outbound: false, frame }, now + d);
                return Ok(());
            }
            Verdict::Pass => {}
        }
        let peer = &mut self.peers[pid];
        peer.last_seen = Some(now);
        peer.traffic.frames_in += 1;
        peer.traffic.bytes_in += (wire::HEADER_LEN + frame.payload.len()) as u64;
        match frame.kind {
            FrameKind::Ping => Ok(()),
            FrameKind::Hello | FrameKind::Auth => Err(format!("{name} repeated its handshake")),
            FrameKind::Fragment => {
                if let Some(whole) = reassemble(conn, &frame.payload, self.config.message_len_max)? {
                    self.events.push_back(Event::Frame(pid, whole));
                }
                Ok(())
            }
            _ => {
                self.events.push_back(Event::Frame(pid, frame));
                Ok(())
            }
        }
    }

    pub(crate) fn on_hello(&mut self, conn: &mut Conn, frame: Frame) -> Result<(), String> {
        if frame.kind != FrameKind::Hello {
            return Err(format!("expected Hello, got {:?}", frame.kind));
        }
        let hello = wire::decode::<Hello>(&frame.payload).map_err(|e| format!("bad Hello: {e}"))?;
        if verdict(&self.faults, &hello.node_id, false) == Verdict::Drop {
            return Ok(());
        }
        let pid = match self.check_hello(conn, &hello) {
            Ok(pid) => pid,
            Err(reason) => {
                let reject = Reject { reason: reason.clone() };
                conn.queue(FrameKind::Reject, &wire::encode(&reject));
                return Err(format!(
                    "refused '{}' ({}): {reason}",
                    shown(&hello.node_id, NAME_CHARS_SHOWN),
                    peer_addr(conn)
                ));
            }
        };
        conn.peer = Some(pid);
        let parties =
            auth::Parties { sender: &self.config.node_id, receiver: &hello.node_id, sender_dialed: conn.outbound };
        let mac = auth::prove(&self.config.secret, &self.config.cluster, parties, &hello.nonce, &conn.nonce);
        let name = self.peers[pid].spec.id.clone();
        self.send_control(conn, Some(&name), FrameKind::Auth, &wire::encode(&Auth { mac }));
        conn.phase = Phase::Handshaking { peer_hello: Some(hello) };
        Ok(())
    }

    pub(crate) fn check_hello(&self, conn: &Conn, hello: &Hello) -> Result<PeerId, String> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(format!("protocol version {} is not this node's {PROTOCOL_VERSION}", hello.protocol_version));
        }
        if hello.cluster != self.config.cluster {
            let cluster = shown(&hello.cluster, NAME_CHARS_SHOWN);
            return Err(format!("cluster '{cluster}' is not this node's cluster '{}'", self.config.cluster));
        }
        if hello.node_id == self.config.node_id {
            return Err(format!("node id '{}' is this node's own id", hello.node_id));
        }
        let pid = self.peers.iter().position(|p| p.spec.id == hello.node_id && !p.retired).ok_or_else(|| {
            format!("node id '{}' is not in this node's peer list", shown(&hello.node_id, NAME_CHARS_SHOWN))
        })?;
        if conn.outbound && conn.peer != Some(pid) {
            let expected = conn.peer.and_then(|p| self.peer_id(p)).unwrap_or("?");
            return Err(format!("dialed '{expected}' but '{}' answered", hello.node_id));
        }
        if self.config.tls.is_some() {
            let cert = conn.peer_certificate().ok_or("TLS is on but the peer presented no certificate")?;
            certificate_names(cert, &hello.node_id, self.peers[pid].spec.addr.ip())?;
        }
        Ok(pid)
    }

    pub(crate) fn on_auth(&mut self, i: usize, conn: &mut Conn, frame: Frame, now: Instant) -> Result<(), String> {
        if frame.kind != FrameKind::Auth {
            return Err(format!("expected Auth, got {:?}", frame.kind));
        }
        let auth_msg = wire::decode::<Auth>(&frame.payload).map_err(|e| format!("bad Auth: {e}"))?;
        let Phase::Handshaking { peer_hello: Some(hello) } = &conn.phase else {
            return Err("Auth out of order".into());
        };
        let (c, secret) = (&self.config.cluster, &self.config.secret);
        let parties =
            auth::Parties { sender: &hello.node_id, receiver: &self.config.node_id, sender_dialed: !conn.outbound };
        if !auth::verify(secret, c, parties, &conn.nonce, &hello.nonce, &auth_msg.mac) {
            let node_id = hello.node_id.clone();
            let reason = "authentication failed: the cluster secret differs".to_string();
            conn.queue(FrameKind::Reject, &wire::encode(&Reject { reason: reason.clone() }));
            return Err(format!("refused {node_id} ({}): {reason}", peer_addr(conn)));
        }
        conn.phase = Phase::Established;
        conn.decoder = self.decoder.clone();
        if let Some(ip) = conn.pending_ip.take() {
            self.admission.release(ip);
        }
        self.established(i, conn, now)
    }

    /// Makes `i` the peer's connection, or refuses it as the duplicate that loses (see module invariants).
    pub(crate) fn established(&mut self, i: usize, conn: &Conn, now: Instant) -> Result<(), String> {
        let Some(pid) = conn.peer else { return Err("established without a peer".into()) };
        if self.peers[pid].dialing == Some(i) {
            self.peers[pid].dialing = None;
        }
        if let Some(old) = self.peers[pid].conn {
            let old_outbound = self.conns.get(old).and_then(Option::as_ref).is_some_and(|c| c.outbound);
            let we_are_lower = self.config.node_id < self.peers[pid].spec.id;
            let keep_new = old_outbound == conn.outbound || conn.outbound == we_are_lower;
            if !keep_new {
                debug!("closing duplicate connection to {}", self.peers[pid].spec.id);
                return Err("duplicate connection".into());
            }
            self.close(old, "replaced by a newer connection");
        }
        let peer = &mut self.peers[pid];
        peer.conn = Some(i);
        peer.backoff.reset();
        peer.connected_since = Some(now);
        peer.last_seen = Some(now);
        peer.last_failure = None;
        let direction = if conn.outbound { "dialed" } else { "accepted" };
        info!("connected to {} at {} ({direction})", peer.spec.id, peer_addr(conn));
        self.events.push_back(Event::Up(pid));
        Ok(())
    }
}
