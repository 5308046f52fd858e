//! Streaming answers on the I/O thread: admitting a stream (or refusing it past the cap), polling the
//! sources for bytes within each stream's buffer bound, and ending streams.
//!
//! Invariants: at most `streams_max` streams are open, `streams_per_ip_max` from one client address; a
//! source is offered at most `stream_buffer_bytes_max` minus the connection's unsent bytes
//! (less chunk framing), so a stream's buffer never grows past that bound; `EventLoop::streaming` lists
//! exactly the connections in `State::Streaming` and [`super::Shared::streams`] is its length; an ended
//! stream moves to `State::Closing` with its terminating chunk queued.

use super::EventLoop;
use crate::conn::State;
use crate::stream::{self, StreamStatus, CHUNK_OVERHEAD, LAST_CHUNK};
use crate::{Response, StreamSource};
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Room below which a source is not polled (framing would dominate).
const ROOM_MIN: usize = 256;

impl EventLoop {
    /// The handler answered request `id` with a stream: write its head and start polling `source`.
    pub(super) fn answer_stream(&mut self, id: usize, response: &Response, source: Box<dyn StreamSource>) {
        let Some(conn) = self.conns.get(&id) else { return };
        let State::Waiting { head_only, minor, .. } = conn.state else { return };
        if !(200..300).contains(&response.status) {
            let plain = Response { stream: None, body: Vec::new(), headers: response.headers.clone(), ..*response };
            return self.answer(id, &plain);
        }
        let open = self.streaming.len();
        let ip = conn.peer.ip();
        let mine = self.streaming.iter().filter(|s| self.conns.get(s).is_some_and(|c| c.peer.ip() == ip)).count();
        let limits = &self.config.limits;
        let full = open >= limits.streams_max || mine >= limits.streams_per_ip_max;
        if full || self.shared.stopping.load(Ordering::SeqCst) {
            // Refused and closed: a client that asked for a stream waits for its end, not for keep-alive.
            let detail = if open >= limits.streams_max {
                format!("{open} streams are open, the most this port serves; try again later")
            } else {
                format!("{mine} streams are open from {ip}, the most this port serves one address; try again later")
            };
            let refusal = Response::error(503, "too many streams", &detail).with_header("Retry-After", "5");
            self.in_flight.retain(|(c, _)| *c != id);
            self.reject_with(id, &refusal);
            return self.service(id);
        }
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let chunked = minor >= 1;
        let mut head = Vec::with_capacity(256);
        stream::head(&mut head, response, chunked);
        conn.queue_raw(&head);
        self.body.release(conn.peer.ip(), std::mem::take(&mut conn.body_held));
        conn.inbuf = Vec::new();
        self.in_flight.retain(|(c, _)| *c != id);
        if head_only {
            // HEAD: the head a GET would get, then the connection closes (the body has no length).
            conn.state = State::Closing;
            return self.service(id);
        }
        conn.state = State::Streaming { source, chunked };
        self.streaming.push(id);
        self.shared.streams.store(self.streaming.len(), Ordering::SeqCst);
        self.pump(id, Instant::now());
        self.service(id);
    }

    /// Poll every stream's source for what fits its buffer.
    pub(super) fn pump_streams(&mut self, now: Instant) {
        if self.streaming.is_empty() {
            return;
        }
        for id in self.streaming.clone() {
            self.pump(id, now);
            self.service(id);
        }
    }

    fn pump(&mut self, id: usize, now: Instant) {
        let limit = self.config.limits.stream_buffer_bytes_max;
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let room = limit.saturating_sub(conn.out_backlog()).saturating_sub(CHUNK_OVERHEAD);
        if room < ROOM_MIN.min(limit / 2) {
            return;
        }
        let State::Streaming { source, chunked } = &mut conn.state else { return };
        let mut piece = Vec::new();
        let status = source.poll(now, &mut piece, room);
        // A source that overfills is cut to the room it was given, so the bound holds whatever it does.
        piece.truncate(room);
        if *chunked {
            let mut framed = Vec::with_capacity(piece.len() + CHUNK_OVERHEAD);
            stream::chunk(&mut framed, &piece);
            if !framed.is_empty() {
                conn.queue_raw(&framed);
            }
        } else if !piece.is_empty() {
            conn.queue_raw(&piece);
        }
        if status == StreamStatus::End {
            self.end_stream(id);
        }
    }

    /// End stream `id`: its terminating chunk is queued and the connection closes once it is written.
    pub(super) fn end_stream(&mut self, id: usize) {
        let Some(conn) = self.conns.get_mut(&id) else { return };
        let State::Streaming { chunked, .. } = conn.state else { return };
        if chunked {
            conn.queue_raw(LAST_CHUNK);
        }
        conn.state = State::Closing;
        self.streaming.retain(|s| *s != id);
        self.shared.streams.store(self.streaming.len(), Ordering::SeqCst);
    }
}
