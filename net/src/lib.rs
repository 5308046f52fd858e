//! The cluster transport: one mio event loop thread per node that keeps an authenticated, framed TCP
//! connection to every other node, and drives the node's protocol cores through the [`Handler`] trait.
//!
//! What it owns: the listener, admission of unauthenticated connections (per-address limits, a handshake
//! budget that keeps room for configured peers, aggregated refusal logs), optional mutual TLS, the peer
//! table, dialing with backoff and jitter, the `Hello`/`Auth` handshake, one connection per peer pair, per-peer send queues with a priority class, keepalives,
//! timers, a command channel plus a `mio::Waker` for other threads, and fault injection for tests.
//!
//! Invariants:
//! - Only authenticated peers' frames reach the handler, whole and checked, in the order they were sent.
//! - A peer that sends garbage, fails the handshake or goes silent is disconnected with a logged reason;
//!   the loop itself never stops on a peer's behaviour.
//! - Every queue has a bound: sends past a peer's queue bound fail with [`SendError::QueueFull`].
//! - The handler runs only on the loop thread; nothing here blocks on a peer.

mod accept;
mod admission;
mod auth;
mod backoff;
mod config;
mod conn;
mod faults;
mod handshake;
mod peers;
mod queues;
mod refusals;
mod roster;
mod timers;
mod tls;
mod transport;

pub use config::{NetConfig, PeerSpec};
pub use faults::{Direction, FaultAction, FaultRule};
pub use tls::ClusterTls;
pub use wire::{Frame, FrameKind};

use mio::{Events, Token};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use timers::TimerKind;
use transport::{Event, Transport, LISTENER, WAKER};

/// Index of a peer in the transport's peer table: `NetConfig::peers` first, then peers added at run time
/// (never reused for another node).
pub type PeerId = usize;

/// How one configured peer looks from here right now.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerStatus {
    pub id: String,
    pub addr: SocketAddr,
    pub connected: bool,
    /// Time since the last frame (keepalives included) arrived from it; `None` if never.
    pub last_seen_ago: Option<Duration>,
    pub connected_for: Option<Duration>,
    /// Frames and bytes exchanged with it since this node started.
    pub traffic: Traffic,
}

/// Frames and bytes exchanged with one peer (frame headers included; a fragment is a frame).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub frames_in: u64,
    pub frames_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Unauthenticated connections on the cluster port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HandshakeStats {
    /// Inbound connections holding a handshake slot right now.
    pub pending: usize,
    /// Unauthenticated connections refused at accept or dropped before authenticating, since the start.
    pub refused: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    UnknownPeer,
    NotConnected,
    /// The peer's send queue is at its bound; the frame was not queued.
    QueueFull,
    /// The message is over `message_len_max`.
    TooLarge,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            SendError::UnknownPeer => "unknown peer",
            SendError::NotConnected => "peer not connected",
            SendError::QueueFull => "peer send queue full",
            SendError::TooLarge => "message over the size limit",
        };
        f.write_str(text)
    }
}

impl std::error::Error for SendError {}

/// The protocol side of a node, called on the loop thread.
pub trait Handler {
    /// What other threads send to the loop.
    type Command: Send + 'static;
    fn on_start(&mut self, _ctx: &mut Ctx<'_>) {}
    fn on_peer_up(&mut self, _ctx: &mut Ctx<'_>, _peer: PeerId) {}
    fn on_peer_down(&mut self, _ctx: &mut Ctx<'_>, _peer: PeerId) {}
    fn on_frame(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, frame: Frame);
    fn on_timer(&mut self, _ctx: &mut Ctx<'_>, _token: u64) {}
    fn on_command(&mut self, ctx: &mut Ctx<'_>, command: Self::Command);
    /// Called once per loop turn, after every event of the turn and before the turn's frames are written:
    /// the place to batch work and to make state durable before messages leave.
    fn on_turn_end(&mut self, _ctx: &mut Ctx<'_>) {}
}

/// What a handler may do while it runs.
pub struct Ctx<'a> {
    transport: &'a mut Transport,
    stop: &'a mut bool,
}

impl Ctx<'_> {
    pub fn now(&self) -> Instant {
        Instant::now()
    }

    pub fn send(&mut self, peer: PeerId, kind: FrameKind, payload: &[u8]) -> Result<(), SendError> {
        self.transport.send(peer, kind, payload)
    }

    /// Sends to every connected peer; returns how many it was queued for.
    pub fn broadcast(&mut self, kind: FrameKind, payload: &[u8]) -> usize {
        (0..self.transport.peer_count()).filter(|&p| self.transport.send(p, kind, payload).is_ok()).count()
    }

    /// Calls `on_timer(token)` at `at` (or right away if it has passed).
    pub fn set_timer(&mut self, at: Instant, token: u64) {
        self.transport.timers.set(at, TimerKind::User(token));
    }

    pub fn peers(&self) -> Vec<PeerStatus> {
        self.transport.peer_statuses(Instant::now())
    }

    pub fn peer_count(&self) -> usize {
        self.transport.peer_count()
    }

    pub fn peer_id(&self, peer: PeerId) -> Option<&str> {
        self.transport.peer_id(peer)
    }

    pub fn is_connected(&self, peer: PeerId) -> bool {
        self.transport.is_connected(peer)
    }

    /// Adds a peer while the loop runs (a new member), or revives a retired one; see `roster`.
    pub fn add_peer(&mut self, spec: PeerSpec) -> Option<PeerId> {
        self.transport.add_peer(spec, Instant::now())
    }

    /// Takes a peer out: no connection, no dial, refused from now on.
    pub fn retire_peer(&mut self, peer: PeerId) {
        self.transport.retire_peer(peer);
    }

    pub fn is_retired(&self, peer: PeerId) -> bool {
        self.transport.is_retired(peer)
    }

    /// The live peer named `id`.
    pub fn peer_named(&self, id: &str) -> Option<PeerId> {
        self.transport.peer_named(id)
    }

    pub fn open_connections(&self) -> usize {
        self.transport.open_connections()
    }

    pub fn handshake_stats(&self) -> HandshakeStats {
        self.transport.handshake_stats()
    }

    pub fn node_id(&self) -> &str {
        &self.transport.config().node_id
    }

    /// The loop's lag (microseconds from readiness or a timer's due time to the start of its handling)
    /// since the last call, which starts a new window.
    pub fn take_loop_lag(&mut self) -> telemetry::Histogram {
        std::mem::take(&mut self.transport.loop_lag)
    }

    pub fn set_faults(&mut self, rules: Vec<FaultRule>) {
        self.transport.set_faults(rules);
    }

    /// Ends the loop after the current iteration.
    pub fn stop(&mut self) {
        *self.stop = true;
    }
}

enum LoopMsg<C> {
    User(C),
    Faults(Vec<FaultRule>),
    Tls(ClusterTls),
    Stop,
}

/// The loop has stopped; nothing more can be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

/// Lets any thread reach the loop. Cheap to clone.
pub struct NetHandle<C> {
    tx: Sender<LoopMsg<C>>,
    bell: Arc<Doorbell>,
}

impl<C> Clone for NetHandle<C> {
    fn clone(&self) -> Self {
        NetHandle { tx: self.tx.clone(), bell: Arc::clone(&self.bell) }
    }
}

/// The loop's waker, rung once per batch of messages: a message posted while an earlier ring is still
/// unanswered rides on it, so a busy loop is not sent one wake-up (a system call each side) per message.
///
/// Invariant: a sender queues its message *before* [`Doorbell::ring`], and the loop calls
/// [`Doorbell::answer`] *before* draining the queue. So a ring that is skipped finds `rung` set by an earlier
/// sender whose wake-up the loop has not answered yet; the loop answers it later, then drains, and sees the
/// message.
struct Doorbell {
    waker: Arc<mio::Waker>,
    rung: AtomicBool,
}

impl Doorbell {
    fn ring(&self) -> std::io::Result<()> {
        if self.rung.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.waker.wake().inspect_err(|_| self.rung.store(false, Ordering::SeqCst))
    }

    /// A read-modify-write, not a store: it reads from the last `ring`'s swap (or a later one), so every
    /// message queued by a sender that skipped its wake-up happens-before the drain that follows, whatever
    /// orderings the channel itself uses.
    fn answer(&self) {
        self.rung.swap(false, Ordering::SeqCst);
    }
}

impl<C: Send + 'static> NetHandle<C> {
    pub fn command(&self, command: C) -> Result<(), Stopped> {
        self.post(LoopMsg::User(command))
    }

    /// Replaces the fault injection rules (an empty list heals everything).
    pub fn set_faults(&self, rules: Vec<FaultRule>) -> Result<(), Stopped> {
        self.post(LoopMsg::Faults(rules))
    }

    /// Replaces the cluster TLS configuration (reloaded certificates); connections opened afterwards use it.
    pub fn set_tls(&self, tls: ClusterTls) -> Result<(), Stopped> {
        self.post(LoopMsg::Tls(tls))
    }

    pub fn stop(&self) -> Result<(), Stopped> {
        self.post(LoopMsg::Stop)
    }

    fn post(&self, msg: LoopMsg<C>) -> Result<(), Stopped> {
        self.tx.send(msg).map_err(|_| Stopped)?;
        self.bell.ring().map_err(|_| Stopped)
    }
}

/// A running loop: its handle, where it listens, and the thread that gives the handler back when it ends.
pub struct Running<H: Handler> {
    pub handle: NetHandle<H::Command>,
    pub local_addr: SocketAddr,
    pub thread: JoinHandle<H>,
}

/// Binds the listener (errors come back here, before any thread starts) and runs the loop on a new thread.
pub fn spawn<H>(config: NetConfig, handler: H) -> std::io::Result<Running<H>>
where
    H: Handler + Send + 'static,
{
    let transport = Transport::bind(config)?;
    let local_addr = transport.local_addr()?;
    let (tx, rx) = mpsc::channel();
    let bell = Arc::new(Doorbell { waker: transport.waker.clone(), rung: AtomicBool::new(false) });
    let handle = NetHandle { tx, bell: Arc::clone(&bell) };
    let name = format!("net-{}", transport.config().node_id);
    let thread = std::thread::Builder::new().name(name).spawn(move || run(transport, handler, rx, &bell))?;
    Ok(Running { handle, local_addr, thread })
}

fn run<H: Handler>(mut transport: Transport, mut handler: H, rx: Receiver<LoopMsg<H::Command>>, bell: &Doorbell) -> H {
    let mut events = Events::with_capacity(1024);
    let mut stop = false;
    transport.start(Instant::now());
    handler.on_start(&mut Ctx { transport: &mut transport, stop: &mut stop });
    while !stop {
        let timeout = transport.timers.next_due().map(|at| at.saturating_duration_since(Instant::now()));
        if let Err(e) = transport.poll.poll(&mut events, timeout) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                log::error!("event loop poll failed: {e}");
                break;
            }
        }
        let now = Instant::now();
        // When the oldest thing this turn handles became ready: the poll's return, or an overdue timer.
        let ready_at = transport.timers.next_due().filter(|at| *at < now).unwrap_or(now);
        let mut started: Option<Instant> = None;
        for event in events.iter() {
            match event.token() {
                LISTENER => transport.accept_all(now),
                WAKER => {}
                Token(i) => {
                    let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                    transport.ready(i, readable, event.is_writable(), now);
                }
            }
        }
        bell.answer();
        drain_commands(&mut transport, &mut handler, &rx, &mut stop, &mut started);
        transport.fire_timers(Instant::now());
        deliver(&mut transport, &mut handler, &mut stop, &mut started);
        handler.on_turn_end(&mut Ctx { transport: &mut transport, stop: &mut stop });
        deliver(&mut transport, &mut handler, &mut stop, &mut started);
        transport.flush_dirty(Instant::now());
        if let Some(last) = started {
            let lag_us = last.saturating_duration_since(ready_at).as_micros();
            transport.loop_lag.record(u64::try_from(lag_us).unwrap_or(u64::MAX));
        }
    }
    transport.shutdown(Instant::now());
    handler
}

fn drain_commands<H: Handler>(
    t: &mut Transport,
    h: &mut H,
    rx: &Receiver<LoopMsg<H::Command>>,
    stop: &mut bool,
    started: &mut Option<Instant>,
) {
    loop {
        match rx.try_recv() {
            Ok(LoopMsg::User(command)) => {
                *started = Some(Instant::now());
                h.on_command(&mut Ctx { transport: t, stop }, command)
            }
            Ok(LoopMsg::Faults(rules)) => t.set_faults(rules),
            Ok(LoopMsg::Tls(tls)) => t.set_tls(tls),
            Ok(LoopMsg::Stop) | Err(TryRecvError::Disconnected) => {
                *stop = true;
                return;
            }
            Err(TryRecvError::Empty) => return,
        }
    }
}

/// Hands queued events to the handler; `started` notes when the last one began (for the loop's lag).
fn deliver<H: Handler>(t: &mut Transport, h: &mut H, stop: &mut bool, started: &mut Option<Instant>) {
    while let Some(event) = t.events.pop_front() {
        *started = Some(Instant::now());
        let ctx = &mut Ctx { transport: t, stop };
        match event {
            Event::Up(peer) => h.on_peer_up(ctx, peer),
            Event::Down(peer) => h.on_peer_down(ctx, peer),
            Event::Frame(peer, frame) => h.on_frame(ctx, peer, frame),
            Event::Timer(token) => h.on_timer(ctx, token),
        }
    }
}
