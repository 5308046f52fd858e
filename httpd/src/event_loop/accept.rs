//! Accepting connections: the connection cap, per-client limits, and pausing on accept errors.
//!
//! Invariants: the port never holds more than its cap of connections (the rest wait in the listen
//! backlog); an accept error for lack of descriptors or memory never closes the listener, it pauses
//! accepting and [`super::EventLoop::sweep`] retries after `ACCEPT_RETRY`; the `accepting` flag is false
//! exactly while the port is paused or full.

use super::{EventLoop, ACCEPT_RETRY};
use crate::conn::Conn;
use crate::Response;
use mio::{Interest, Token};
use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::time::Instant;

impl EventLoop {
    pub(super) fn accept_all(&mut self) {
        if self.shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        loop {
            if self.conns.len() >= self.conn_cap {
                if self.shared.accepting.swap(false, Ordering::SeqCst) {
                    log::warn!(
                        "{} port: {} connections open, the limit; accepting paused",
                        self.config.name,
                        self.conn_cap
                    );
                }
                return;
            }
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !self.shared.accepting.swap(true, Ordering::SeqCst) {
                        log::info!("{} port: accepting again", self.config.name);
                    }
                    self.accept_retry_at = None;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if out_of_resources(&e) => {
                    if self.shared.accepting.swap(false, Ordering::SeqCst) {
                        log::warn!("{} port: cannot accept ({e}); accepting paused, retrying", self.config.name);
                    }
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                // The client went away before accept, and the like.
                Err(e) => log::debug!("{} port: accept: {e}", self.config.name),
            }
        }
    }

    pub(super) fn admit(&mut self, mut stream: mio::net::TcpStream, peer: std::net::SocketAddr) {
        let per_ip = self.per_ip.entry(peer.ip()).or_insert(0);
        let tls = self.shared.tls_config();
        if *per_ip >= self.config.limits.connections_per_ip_max {
            log::debug!("{} port: {} has too many connections", self.config.name, peer.ip());
            if tls.is_none() {
                let mut bytes = Vec::new();
                let detail = "too many connections from this address";
                let answer = Response::error(503, "service unavailable", detail).with_header("Retry-After", "1");
                crate::conn::serialize(&mut bytes, &answer, false, false, 1);
                let _ = stream.write(&bytes);
            }
            return;
        }
        let session = match tls {
            Some(config) => match rustls::ServerConnection::new(config) {
                Ok(session) => Some(Box::new(session)),
                Err(e) => {
                    log::warn!("{} port: TLS session: {e}", self.config.name);
                    return;
                }
            },
            None => None,
        };
        let id = self.next_id;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, Token(id), interest) {
            log::warn!("{} port: cannot register a connection: {e}", self.config.name);
            return;
        }
        let _ = stream.set_nodelay(true);
        self.next_id += 1;
        *per_ip += 1;
        self.conns.insert(id, Conn::new(stream, peer, session));
        self.shared.connections.store(self.conns.len(), Ordering::SeqCst);
    }

    pub(super) fn close(&mut self, id: usize) {
        let Some(mut conn) = self.conns.remove(&id) else { return };
        self.body.release(conn.peer.ip(), conn.body_held);
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(n) = self.per_ip.get_mut(&conn.peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&conn.peer.ip());
            }
        }
        self.in_flight.retain(|(c, _)| *c != id);
        if let Some(at) = self.streaming.iter().position(|s| *s == id) {
            self.streaming.swap_remove(at);
            self.shared.streams.store(self.streaming.len(), Ordering::SeqCst);
        }
        self.shared.connections.store(self.conns.len(), Ordering::SeqCst);
    }
}

fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM.
    matches!(e.raw_os_error(), Some(24) | Some(23) | Some(105) | Some(12))
}
