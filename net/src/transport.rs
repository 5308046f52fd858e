//! The connection table and everything that happens to a connection: dial, accept, handshake, dedup,
//! keepalive, close and redial. Owned by the event loop thread; nothing here blocks.
//!
//! Invariants:
//! - A peer has at most one established connection. When two complete (both sides dialed at once, or a
//!   restarted peer redialed), both ends keep the one dialed by the lower node id, or the newer one when
//!   the same side dialed both; the loser is closed.
//! - Only established connections carry frames other than Hello, Auth, Reject and Ping, and only frames of
//!   established connections reach the handler.
//! - A peer without a connection or a dial in flight always has a dial scheduled.

use crate::backoff::Backoff;
use crate::config::{NetConfig, PeerSpec};
use crate::conn::{Conn, Phase, ReadError, ReadOutcome};
use crate::faults::{verdict, FaultRule, Verdict};
use crate::timers::{TimerKind, Timers};
use crate::{auth, PeerId, PeerStatus, SendError};
use bytes::{Bytes, BytesMut};
use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use wire::{Auth, Frame, FrameDecoder, FrameKind, Hello, Reject, PROTOCOL_VERSION};

pub const LISTENER: Token = Token(usize::MAX - 1);
pub const WAKER: Token = Token(usize::MAX - 2);
const SCRATCH_BYTES: usize = 256 * 1024;

/// What the handler hears about, in order.
pub enum Event {
    Up(PeerId),
    Down(PeerId),
    Frame(PeerId, Frame),
    Timer(u64),
}

struct Peer {
    spec: PeerSpec,
    conn: Option<usize>,
    dialing: Option<usize>,
    dial_scheduled: bool,
    backoff: Backoff,
    last_seen: Option<Instant>,
    connected_since: Option<Instant>,
}

struct Delayed {
    peer: PeerId,
    outbound: bool,
    frame: Frame,
}

pub struct Transport {
    pub poll: Poll,
    pub waker: Arc<Waker>,
    listener: TcpListener,
    config: NetConfig,
    decoder: FrameDecoder,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    peers: Vec<Peer>,
    pub timers: Timers,
    faults: Vec<FaultRule>,
    delayed: HashMap<u64, Delayed>,
    delayed_seq: u64,
    pub events: VecDeque<Event>,
    dirty: Vec<usize>,
    rng: u64,
    scratch: Box<[u8]>,
}

impl Transport {
    pub fn bind(config: NetConfig) -> std::io::Result<Transport> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let peers = config
            .peers
            .iter()
            .map(|spec| Peer {
                spec: spec.clone(),
                conn: None,
                dialing: None,
                dial_scheduled: false,
                backoff: Backoff::new(config.dial_backoff_min, config.dial_backoff_max),
                last_seen: None,
                connected_since: None,
            })
            .collect();
        let rng = config.seed ^ config.node_id.bytes().fold(0u64, |h, b| h.rotate_left(5) ^ u64::from(b));
        Ok(Transport {
            poll,
            waker,
            listener,
            decoder: FrameDecoder::new(config.frame_len_max),
            config,
            conns: Vec::new(),
            free: Vec::new(),
            peers,
            timers: Timers::default(),
            faults: Vec::new(),
            delayed: HashMap::new(),
            delayed_seq: 0,
            events: VecDeque::new(),
            dirty: Vec::new(),
            rng,
            scratch: vec![0u8; SCRATCH_BYTES].into_boxed_slice(),
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// Schedules the first dial to every peer and the periodic tick.
    pub fn start(&mut self, now: Instant) {
        for pid in 0..self.peers.len() {
            self.peers[pid].dial_scheduled = true;
            self.timers.set(now, TimerKind::Dial(pid));
        }
        self.timers.set(now + self.config.keepalive_interval / 2, TimerKind::Tick);
    }

    pub fn set_faults(&mut self, rules: Vec<FaultRule>) {
        info!("fault injection rules now: {rules:?}");
        self.faults = rules;
    }

    pub fn peer_statuses(&self, now: Instant) -> Vec<PeerStatus> {
        self.peers
            .iter()
            .map(|p| PeerStatus {
                id: p.spec.id.clone(),
                addr: p.spec.addr,
                connected: p.conn.is_some(),
                last_seen_ago: p.last_seen.map(|t| now.saturating_duration_since(t)),
                connected_for: p.connected_since.filter(|_| p.conn.is_some()).map(|t| now.saturating_duration_since(t)),
            })
            .collect()
    }

    pub fn peer_id(&self, pid: PeerId) -> Option<&str> {
        self.peers.get(pid).map(|p| p.spec.id.as_str())
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn is_connected(&self, pid: PeerId) -> bool {
        self.peers.get(pid).is_some_and(|p| p.conn.is_some())
    }

    /// Open sockets of any phase (a test sees duplicates here).
    pub fn open_connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    // ---- sending -------------------------------------------------------------------------------------

    /// Queues a frame for an established peer, after fault injection.
    pub fn send(&mut self, pid: PeerId, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        let peer = self.peers.get(pid).ok_or(SendError::UnknownPeer)?;
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

    fn queue_on(&mut self, i: usize, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
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
        if payload.len() <= fragment_bytes {
            conn.queue(kind, payload);
        } else {
            for fragment in fragments(kind, payload, fragment_bytes) {
                conn.queue(FrameKind::Fragment, &fragment);
            }
        }
        self.dirty.push(i);
        Ok(())
    }

    fn hold(&mut self, delayed: Delayed, at: Instant) {
        self.delayed_seq += 1;
        self.delayed.insert(self.delayed_seq, delayed);
        self.timers.set(at, TimerKind::Delayed(self.delayed_seq));
    }

    /// Queues a handshake or keepalive frame, subject to drop rules (delay rules let it through).
    fn send_control(&mut self, conn: &mut Conn, peer_name: Option<&str>, kind: FrameKind, payload: &[u8]) {
        if let Some(name) = peer_name {
            if verdict(&self.faults, name, true) == Verdict::Drop {
                return;
            }
        }
        conn.queue(kind, payload);
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

    fn flush_conn(&mut self, i: usize, now: Instant) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { return };
        if matches!(conn.phase, Phase::Connecting) {
            return;
        }
        if let Err(e) = conn.flush(now) {
            self.close(i, &format!("write failed: {e}"));
        }
    }

    // ---- readiness -----------------------------------------------------------------------------------

    pub fn accept_all(&mut self, now: Instant) {
        loop {
            match self.listener.accept() {
                Ok((stream, addr)) => self.accepted(stream, addr, now),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn accepted(&mut self, stream: TcpStream, addr: SocketAddr, now: Instant) {
        let handshaking = self.conns.iter().flatten().filter(|c| !c.is_established()).count();
        if handshaking >= self.config.handshaking_max {
            warn!("refusing connection from {addr}: {handshaking} connections already handshaking");
            return;
        }
        let _ = stream.set_nodelay(true);
        let nonce = auth::nonce(&mut self.rng);
        let Some(i) = self.insert(Conn::new(stream, false, None, nonce, now)) else { return };
        debug!("accepted connection from {addr}");
        self.send_hello(i);
    }

    fn insert(&mut self, conn: Conn) -> Option<usize> {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.conns.push(None);
                self.conns.len() - 1
            }
        };
        let mut conn = conn;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut conn.stream, Token(i), interest) {
            warn!("cannot register connection: {e}");
            self.free.push(i);
            return None;
        }
        self.conns[i] = Some(conn);
        Some(i)
    }

    fn send_hello(&mut self, i: usize) {
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

    pub fn ready(&mut self, i: usize, readable: bool, writable: bool, now: Instant) {
        let connecting = match self.conns.get(i).and_then(Option::as_ref) {
            Some(conn) => matches!(conn.phase, Phase::Connecting),
            None => return,
        };
        if connecting {
            if !self.finish_connect(i) {
                return;
            }
            self.send_hello(i);
        }
        if readable {
            self.read(i, now);
        }
        if writable {
            self.flush_conn(i, now);
        }
    }

    /// `true` once an outbound connect has completed; closes the connection if it failed.
    fn finish_connect(&mut self, i: usize) -> bool {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else { return false };
        if let Ok(Some(e)) | Err(e) = conn.stream.take_error() {
            self.close(i, &format!("connect failed: {e}"));
            return false;
        }
        match conn.stream.peer_addr() {
            Ok(_) => {
                let _ = conn.stream.set_nodelay(true);
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => false,
            Err(e) => {
                self.close(i, &format!("connect failed: {e}"));
                false
            }
        }
    }

    fn read(&mut self, i: usize, now: Instant) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else { return };
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = conn.read_frames(&mut scratch, now, |conn, frame| self.on_frame(i, conn, frame, now));
        self.scratch = scratch;
        let reason = match result {
            Ok(ReadOutcome::Open) => None,
            Ok(ReadOutcome::Closed) => Some("closed by peer".to_string()),
            Err(ReadError::Io(e)) => Some(format!("read failed: {e}")),
            Err(ReadError::Frame(e)) => Some(format!("protocol error: {e}")),
            Err(ReadError::Refused(reason)) => Some(reason),
        };
        if conn.has_output() {
            self.dirty.push(i);
        }
        self.conns[i] = Some(conn);
        if let Some(reason) = reason {
            // Give a queued Reject its chance to reach the peer before the socket goes.
            self.flush_conn(i, now);
            self.close(i, &reason);
        }
    }

    // ---- frames --------------------------------------------------------------------------------------

    fn on_frame(&mut self, i: usize, conn: &mut Conn, frame: Frame, now: Instant) -> Result<(), String> {
        if frame.kind == FrameKind::Reject {
            let reason = wire::decode::<Reject>(&frame.payload).map(|r| r.reason).unwrap_or_default();
            return Err(format!("peer refused the connection: {reason}"));
        }
        match conn.phase {
            Phase::Established => self.on_established_frame(conn, frame, now),
            Phase::Handshaking { peer_hello: None } => self.on_hello(conn, frame),
            Phase::Handshaking { peer_hello: Some(_) } => self.on_auth(i, conn, frame, now),
            Phase::Connecting => Err("frame before the connection was up".into()),
        }
    }

    fn on_established_frame(&mut self, conn: &mut Conn, frame: Frame, now: Instant) -> Result<(), String> {
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
        self.peers[pid].last_seen = Some(now);
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

    fn on_hello(&mut self, conn: &mut Conn, frame: Frame) -> Result<(), String> {
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
                return Err(format!("refused {} ({}): {reason}", hello.node_id, peer_addr(conn)));
            }
        };
        conn.peer = Some(pid);
        let mac =
            auth::prove(&self.config.secret, &self.config.cluster, &self.config.node_id, &hello.nonce, &conn.nonce);
        let name = self.peers[pid].spec.id.clone();
        self.send_control(conn, Some(&name), FrameKind::Auth, &wire::encode(&Auth { mac }));
        conn.phase = Phase::Handshaking { peer_hello: Some(hello) };
        Ok(())
    }

    fn check_hello(&self, conn: &Conn, hello: &Hello) -> Result<PeerId, String> {
        if hello.protocol_version != PROTOCOL_VERSION {
            return Err(format!("protocol version {} is not this node's {PROTOCOL_VERSION}", hello.protocol_version));
        }
        if hello.cluster != self.config.cluster {
            return Err(format!("cluster '{}' is not this node's cluster '{}'", hello.cluster, self.config.cluster));
        }
        if hello.node_id == self.config.node_id {
            return Err(format!("node id '{}' is this node's own id", hello.node_id));
        }
        let pid = self
            .peers
            .iter()
            .position(|p| p.spec.id == hello.node_id)
            .ok_or_else(|| format!("node id '{}' is not in this node's peer list", hello.node_id))?;
        if conn.outbound && conn.peer != Some(pid) {
            let expected = conn.peer.and_then(|p| self.peer_id(p)).unwrap_or("?");
            return Err(format!("dialed '{expected}' but '{}' answered", hello.node_id));
        }
        Ok(pid)
    }

    fn on_auth(&mut self, i: usize, conn: &mut Conn, frame: Frame, now: Instant) -> Result<(), String> {
        if frame.kind != FrameKind::Auth {
            return Err(format!("expected Auth, got {:?}", frame.kind));
        }
        let auth_msg = wire::decode::<Auth>(&frame.payload).map_err(|e| format!("bad Auth: {e}"))?;
        let Phase::Handshaking { peer_hello: Some(hello) } = &conn.phase else {
            return Err("Auth out of order".into());
        };
        let (c, secret) = (&self.config.cluster, &self.config.secret);
        if !auth::verify(secret, c, &hello.node_id, &conn.nonce, &hello.nonce, &auth_msg.mac) {
            let node_id = hello.node_id.clone();
            let reason = "authentication failed: the cluster secret differs".to_string();
            conn.queue(FrameKind::Reject, &wire::encode(&Reject { reason: reason.clone() }));
            return Err(format!("refused {node_id} ({}): {reason}", peer_addr(conn)));
        }
        conn.phase = Phase::Established;
        conn.decoder = self.decoder.clone();
        self.established(i, conn, now)
    }

    /// Makes `i` the peer's connection, or refuses it as the duplicate that loses (see module invariants).
    fn established(&mut self, i: usize, conn: &Conn, now: Instant) -> Result<(), String> {
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
        let direction = if conn.outbound { "dialed" } else { "accepted" };
        info!("connected to {} at {} ({direction})", peer.spec.id, peer_addr(conn));
        self.events.push_back(Event::Up(pid));
        Ok(())
    }

    // ---- closing and dialing -------------------------------------------------------------------------

    pub fn close(&mut self, i: usize, reason: &str) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else { return };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        self.free.push(i);
        let Some(pid) = conn.peer else {
            if reason == "node stopping" || reason == "closed by peer" {
                debug!("closed unidentified connection ({}): {reason}", peer_addr(&conn));
            } else {
                warn!("closed unidentified connection ({}): {reason}", peer_addr(&conn));
            }
            return;
        };
        let peer = &mut self.peers[pid];
        if peer.conn == Some(i) {
            peer.conn = None;
            warn!("lost connection to {}: {reason}", peer.spec.id);
            self.events.push_back(Event::Down(pid));
        } else if reason.starts_with("refused") || reason.starts_with("peer refused") {
            warn!("connection with {} closed: {reason}", peer.spec.id);
        } else {
            debug!("connection with {} closed: {reason}", peer.spec.id);
        }
        if peer.dialing == Some(i) {
            peer.dialing = None;
        }
        self.schedule_dial(pid);
    }

    fn schedule_dial(&mut self, pid: PeerId) {
        let peer = &mut self.peers[pid];
        if peer.conn.is_some() || peer.dialing.is_some() || peer.dial_scheduled {
            return;
        }
        peer.dial_scheduled = true;
        let delay = peer.backoff.next_delay(&mut self.rng);
        self.timers.set(Instant::now() + delay, TimerKind::Dial(pid));
    }

    fn dial(&mut self, pid: PeerId, now: Instant) {
        let peer = &mut self.peers[pid];
        peer.dial_scheduled = false;
        if peer.conn.is_some() || peer.dialing.is_some() {
            return;
        }
        let addr = peer.spec.addr;
        match TcpStream::connect(addr) {
            Ok(stream) => {
                let nonce = auth::nonce(&mut self.rng);
                match self.insert(Conn::new(stream, true, Some(pid), nonce, now)) {
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

    // ---- timers --------------------------------------------------------------------------------------

    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(kind) = self.timers.pop_due(now) {
            match kind {
                TimerKind::Dial(pid) => self.dial(pid, now),
                TimerKind::Tick => self.tick(now),
                TimerKind::Delayed(seq) => self.release_delayed(seq),
                TimerKind::User(token) => self.events.push_back(Event::Timer(token)),
            }
        }
    }

    fn release_delayed(&mut self, seq: u64) {
        let Some(d) = self.delayed.remove(&seq) else { return };
        if !self.is_connected(d.peer) {
            return;
        }
        if d.outbound {
            if let Some(i) = self.peers[d.peer].conn {
                let _ = self.queue_on(i, d.frame.kind, &d.frame.payload);
            }
        } else {
            self.peers[d.peer].last_seen = Some(Instant::now());
            if d.frame.kind != FrameKind::Ping {
                self.events.push_back(Event::Frame(d.peer, d.frame));
            }
        }
    }

    fn tick(&mut self, now: Instant) {
        self.timers.set(now + self.config.keepalive_interval / 2, TimerKind::Tick);
        for i in 0..self.conns.len() {
            let Some(conn) = self.conns[i].as_ref() else { continue };
            let age = now.saturating_duration_since(conn.opened_at);
            if !conn.is_established() {
                if age > self.config.handshake_timeout {
                    self.close(i, "handshake timed out");
                }
                continue;
            }
            let silent = now.saturating_duration_since(conn.last_recv);
            if silent > self.config.idle_timeout {
                self.close(i, &format!("nothing received for {} ms", silent.as_millis()));
            } else if now.saturating_duration_since(conn.last_sent) >= self.config.keepalive_interval {
                self.ping(i);
            }
        }
    }

    fn ping(&mut self, i: usize) {
        let Some(mut conn) = self.conns.get_mut(i).and_then(Option::take) else { return };
        let name = conn.peer.and_then(|p| self.peer_id(p)).map(str::to_string);
        self.send_control(&mut conn, name.as_deref(), FrameKind::Ping, &[]);
        // Count the attempt even when a fault rule swallowed it, so pings keep their pace.
        conn.last_sent = Instant::now();
        self.conns[i] = Some(conn);
        self.dirty.push(i);
    }

    pub fn shutdown(&mut self, now: Instant) {
        self.flush_dirty(now);
        for i in 0..self.conns.len() {
            self.close(i, "node stopping");
        }
    }
}

/// Splits a message over the fragment size into `Fragment` payloads (sent as bulk frames, in order).
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
fn reassemble(conn: &mut Conn, fragment: &[u8], len_max: usize) -> Result<Option<Frame>, String> {
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

fn peer_addr(conn: &Conn) -> String {
    conn.stream.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into())
}
