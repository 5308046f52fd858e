//! The transport's state and its event-loop entry points: the connection slab, the peer table, timers and
//! readiness dispatch. What happens to a connection lives beside it, one concern per file:
//! `accept` (admission of inbound sockets), `handshake` (Hello/Auth and dedup), `peers` (close, redial),
//! `queues` (sending, fragments, flushing); `conn` is one socket and `tls` its optional TLS session.
//! Owned by the event loop thread; nothing here blocks.
//!
//! Invariants:
//! - A peer has at most one established connection. When two complete (both sides dialed at once, or a
//!   restarted peer redialed), both ends keep the one dialed by the lower node id, or the newer one when
//!   the same side dialed both; the loser is closed.
//! - Only established connections carry frames other than Hello, Auth, Reject and Ping, and only frames of
//!   established connections reach the handler.
//! - A peer without a connection or a dial in flight always has a dial scheduled.
//! - An inbound connection holds an admission slot (`Conn::pending_ip`) from accept until it authenticates
//!   or closes, and no longer than the handshake timeout.

use crate::admission::Admission;
use crate::backoff::Backoff;
use crate::config::{NetConfig, PeerSpec};
use crate::conn::{Conn, Phase, ReadError, ReadOutcome};
use crate::faults::FaultRule;
use crate::refusals::{RefusalLog, WINDOW};
use crate::timers::{TimerKind, Timers};
use crate::{HandshakeStats, PeerId, PeerStatus};
use log::{info, warn};
use mio::net::TcpListener;
use mio::{Interest, Poll, Token, Waker};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use wire::{Frame, FrameDecoder, FrameKind};

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

pub(crate) struct Peer {
    pub(crate) spec: PeerSpec,
    /// Taken out of the cluster while the loop runs (see `roster`): no connection, no dial, refused.
    pub(crate) retired: bool,
    pub(crate) conn: Option<usize>,
    pub(crate) dialing: Option<usize>,
    pub(crate) dial_scheduled: bool,
    pub(crate) backoff: Backoff,
    pub(crate) last_seen: Option<Instant>,
    pub(crate) connected_since: Option<Instant>,
    /// The last reason a dial to this peer failed for, logged once until it changes or the peer connects.
    pub(crate) last_failure: Option<String>,
    /// Frames and bytes exchanged since the start, over every connection it had.
    pub(crate) traffic: crate::Traffic,
}

pub(crate) struct Delayed {
    pub(crate) peer: PeerId,
    pub(crate) outbound: bool,
    pub(crate) frame: Frame,
}

pub struct Transport {
    pub poll: Poll,
    pub waker: Arc<Waker>,
    pub(crate) listener: TcpListener,
    pub(crate) config: NetConfig,
    pub(crate) decoder: FrameDecoder,
    pub(crate) conns: Vec<Option<Conn>>,
    pub(crate) free: Vec<usize>,
    pub(crate) peers: Vec<Peer>,
    pub timers: Timers,
    pub(crate) faults: Vec<FaultRule>,
    pub(crate) delayed: HashMap<u64, Delayed>,
    pub(crate) delayed_seq: u64,
    pub events: VecDeque<Event>,
    pub(crate) dirty: Vec<usize>,
    pub(crate) rng: u64,
    pub(crate) scratch: Box<[u8]>,
    /// Who may hold a handshake slot (see `admission`).
    pub(crate) admission: Admission,
    /// Aggregated log lines about unauthenticated connections refused or dropped.
    pub(crate) refusals: RefusalLog,
    /// Accepting is paused until this instant after an accept error (out of descriptors, say).
    pub(crate) accept_paused_until: Option<Instant>,
    /// When an accept error was last logged, and how many went unlogged since.
    pub(crate) accept_errors: (Option<Instant>, u64),
    /// Lag samples of the loop since the handler last took them (`Ctx::take_loop_lag`).
    pub(crate) loop_lag: telemetry::Histogram,
}

impl Transport {
    pub fn bind(config: NetConfig) -> std::io::Result<Transport> {
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let peers = config.peers.iter().map(|spec| Peer::new(spec.clone(), &config)).collect();
        let admission = Admission::new(
            config.handshaking_per_ip_max,
            config.handshaking_max,
            config.peers.iter().map(|p| p.addr.ip()),
        );
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
            admission,
            refusals: RefusalLog::new(WINDOW, Instant::now()),
            accept_paused_until: None,
            accept_errors: (None, 0),
            loop_lag: telemetry::Histogram::new(),
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
            .filter(|p| !p.retired)
            .map(|p| PeerStatus {
                id: p.spec.id.clone(),
                addr: p.spec.addr,
                connected: p.conn.is_some(),
                last_seen_ago: p.last_seen.map(|t| now.saturating_duration_since(t)),
                connected_for: p.connected_since.filter(|_| p.conn.is_some()).map(|t| now.saturating_duration_since(t)),
                traffic: p.traffic,
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

    /// The live (not retired) peer named `id`.
    pub fn peer_named(&self, id: &str) -> Option<PeerId> {
        self.peers.iter().position(|p| p.spec.id == id && !p.retired)
    }

    /// Inbound connections holding a handshake slot now, and unauthenticated connections refused or dropped
    /// since the start.
    pub fn handshake_stats(&self) -> HandshakeStats {
        HandshakeStats { pending: self.admission.pending_total(), refused: self.refusals.total() }
    }

    /// Open sockets of any phase (a test sees duplicates here).
    pub fn open_connections(&self) -> usize {
        self.conns.iter().filter(|c| c.is_some()).count()
    }

    pub(crate) fn insert(&mut self, conn: Conn) -> Option<usize> {
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
    pub(crate) fn finish_connect(&mut self, i: usize) -> bool {
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

    pub(crate) fn read(&mut self, i: usize, now: Instant) {
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
            Err(ReadError::Tls(e)) => Some(format!("TLS: {e}")),
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

    // ---- timers --------------------------------------------------------------------------------------

    pub fn fire_timers(&mut self, now: Instant) {
        while let Some(kind) = self.timers.pop_due(now) {
            match kind {
                TimerKind::Dial(pid) => self.dial(pid, now),
                TimerKind::Tick => self.tick(now),
                TimerKind::Delayed(seq) => self.release_delayed(seq),
                TimerKind::AcceptResume => self.resume_accepting(now),
                TimerKind::User(token) => self.events.push_back(Event::Timer(token)),
            }
        }
    }

    pub(crate) fn release_delayed(&mut self, seq: u64) {
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

    pub(crate) fn tick(&mut self, now: Instant) {
        self.timers.set(now + self.config.keepalive_interval / 2, TimerKind::Tick);
        for line in self.refusals.roll(now) {
            warn!("{line}");
        }
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

    pub(crate) fn ping(&mut self, i: usize) {
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

pub(crate) fn peer_addr(conn: &Conn) -> String {
    conn.remote.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}
