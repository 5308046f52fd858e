//! Accepting inbound connections: the admission check (per-address limit, handshake budget, room for
//! configured peers), displacement of a pending connection when a peer's address needs the room, pausing
//! the accept loop on errors such as running out of file descriptors, and the aggregated log of refusals.
//!
//! Invariants:
//! - The listener is never closed or deregistered because of an accept error: accepting pauses for
//!   `ACCEPT_PAUSE` and resumes from a timer.
//! - An accepted socket is either admitted (holding its slot in `Conn::pending_ip`) or dropped at once;
//!   a refusal costs one counter increment, never a log line of its own beyond the aggregated ones.
//! - A displaced connection is the pending one with the least handshake progress (nothing received, then
//!   bytes that are not the protocol, then the protocol's first bytes, then a Hello naming a peer), oldest
//!   first.
//! - At most `ACCEPT_BURST` sockets are accepted per loop turn, so the ones just accepted are read before
//!   the next burst can displace them.

use crate::admission::{canonical, Decision, Displace};
use crate::auth;
use crate::conn::Conn;
use crate::timers::TimerKind;
use crate::transport::Transport;
use log::{debug, warn};
use mio::net::TcpStream;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// How long accepting pauses after an accept error other than "would block".
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(100);
/// Connections accepted in one go before the loop turns, so sockets accepted a moment ago are read (and
/// show their handshake progress) before a burst of newer ones can displace them.
const ACCEPT_BURST: usize = 32;
/// The pause after a full burst: the next loop turn, in effect.
const BURST_PAUSE: Duration = Duration::from_millis(1);
/// Accept errors are logged at most once per this interval (the rest are counted into the next line).
const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

impl Transport {
    /// Accepts until the listener would block, an error pauses accepting, or `ACCEPT_BURST` sockets are in
    /// (then a timer resumes on the next turn).
    pub fn accept_all(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now < until) {
            return;
        }
        self.accept_paused_until = None;
        for _ in 0..ACCEPT_BURST {
            match self.listener.accept() {
                Ok((stream, addr)) => self.accepted(stream, addr, now),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::ConnectionAborted) => continue,
                Err(e) => {
                    self.pause_accepting(&e, now);
                    return;
                }
            }
        }
        // More may wait in the backlog; the listener's readiness is edge-triggered, so a timer resumes.
        self.accept_paused_until = Some(now + BURST_PAUSE);
        self.timers.set(now + BURST_PAUSE, TimerKind::AcceptResume);
    }

    /// Out of descriptors (EMFILE, ENFILE), buffers or memory: stop accepting for a moment, keep the
    /// listener, and let the backlog hold new connections meanwhile.
    fn pause_accepting(&mut self, error: &std::io::Error, now: Instant) {
        self.accept_paused_until = Some(now + ACCEPT_PAUSE);
        self.timers.set(now + ACCEPT_PAUSE, TimerKind::AcceptResume);
        let (last, unlogged) = self.accept_errors;
        if last.is_none_or(|t| now.saturating_duration_since(t) >= ACCEPT_ERROR_LOG_INTERVAL) {
            let also = if unlogged > 0 {
                format!(" ({unlogged} more accept errors since the last line)")
            } else {
                String::new()
            };
            warn!(
                "accept failed on the cluster port: {error}; accepting paused for {} ms{also}",
                ACCEPT_PAUSE.as_millis()
            );
            self.accept_errors = (Some(now), 0);
        } else {
            self.accept_errors.1 += 1;
        }
    }

    pub(crate) fn resume_accepting(&mut self, now: Instant) {
        if self.accept_paused_until.is_some_and(|until| now >= until) {
            self.accept_all(now);
        }
    }

    pub(crate) fn accepted(&mut self, stream: TcpStream, addr: SocketAddr, now: Instant) {
        let ip = canonical(addr.ip());
        match self.admission.decide(ip) {
            Decision::Admit => {}
            Decision::Refuse(why) => {
                self.note_refusal(ip, why.describe());
                return; // dropping the stream closes it
            }
            Decision::AdmitDisplacing(how) => {
                let Some(victim) = self.displacement_victim(ip, how) else {
                    self.note_refusal(ip, "handshake budget full of configured peers' connections");
                    return;
                };
                self.close(victim, "displaced by a newer connection from a configured peer's address");
            }
        }
        let _ = stream.set_nodelay(true);
        let nonce = auth::nonce(&mut self.rng);
        let mut conn = Conn::new(stream, false, None, nonce, now, Some(addr));
        if let Err(e) = self.attach_server_tls(&mut conn) {
            self.note_refusal(ip, &e);
            return;
        }
        conn.pending_ip = Some(ip);
        self.admission.admit(ip);
        let Some(i) = self.insert(conn) else {
            self.admission.release(ip);
            return;
        };
        debug!("accepted connection from {addr}");
        self.send_hello(i);
    }

    /// The pending inbound connection a peer's new connection from `ip` takes the place of.
    fn displacement_victim(&self, ip: IpAddr, how: Displace) -> Option<usize> {
        let candidates = self.conns.iter().enumerate().filter_map(|(i, c)| {
            let c = c.as_ref()?;
            let from = c.pending_ip?;
            Some((i, from, c.handshake_progress(), c.opened_at))
        });
        match how {
            Displace::SameAddress => {
                candidates.filter(|&(_, from, _, _)| from == ip).min_by_key(|&(_, _, p, t)| (p, t)).map(|(i, ..)| i)
            }
            Displace::AnyStrangerFirst => {
                candidates.min_by_key(|&(_, from, p, t)| (self.admission.is_peer_address(from), p, t)).map(|(i, ..)| i)
            }
        }
    }

    /// Counts a refused or dropped unauthenticated connection; logs only what the aggregation lets through.
    pub(crate) fn note_refusal(&mut self, ip: IpAddr, reason: &str) {
        if let Some(line) = self.refusals.record(ip, reason) {
            warn!("{line}");
        }
    }
}
