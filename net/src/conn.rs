//! One TCP connection: its receive buffer, its two-class send queue, where its handshake stands, and its
//! TLS session when the cluster port runs mutual TLS (frames are then the plaintext inside the session).
//!
//! Invariants:
//! - Frames are never interleaved on the wire: a frame is moved whole into `out` before any of it is written.
//! - Priority frames go straight into `out`; bulk frames wait in `bulk` and are moved into `out` only while it
//!   holds less than `BULK_SLICE_BYTES`, so a priority frame waits behind at most that much plus one frame.
//! - `queued_bytes()` counts everything not yet written; `send` refuses frames past the configured bound.
//! - With TLS, plaintext moves from `out` into the session only as fast as the session's own bounded buffer
//!   takes it, so queued bytes stay counted in `out`/`bulk` and the queue bound still holds.

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use wire::{encode_frame, Frame, FrameDecoder, FrameError, FrameKind, Hello};

const BULK_SLICE_BYTES: usize = 64 * 1024;
const READ_BUF_BYTES: usize = 16 * 1024;
/// Largest frame a connection accepts before it is authenticated (Hello, Auth and Reject are small).
pub const HANDSHAKE_FRAME_BYTES_MAX: usize = 64 * 1024;

/// Where a connection's handshake stands.
#[derive(Debug)]
pub enum Phase {
    /// Outbound, TCP connect still in progress.
    Connecting,
    /// Our Hello is sent; waiting for the peer's Hello (and then its Auth).
    Handshaking { peer_hello: Option<Hello> },
    /// Authenticated; carries frames for `peer`.
    Established,
}

pub struct Conn {
    pub stream: TcpStream,
    pub phase: Phase,
    /// For outbound connections, the peer dialed; for inbound, set once its Hello names a known peer.
    pub peer: Option<usize>,
    pub outbound: bool,
    pub nonce: [u8; 32],
    pub opened_at: Instant,
    pub last_recv: Instant,
    pub last_sent: Instant,
    rbuf: BytesMut,
    /// Frames allowed on this connection: small until the handshake is done, the configured limit after.
    pub decoder: FrameDecoder,
    /// A message arriving in fragments: its kind, its announced length and the bytes so far.
    pub reassembly: Option<(FrameKind, usize, BytesMut)>,
    out: BytesMut,
    bulk: VecDeque<BytesMut>,
    bulk_bytes: usize,
    /// The remote address (for log lines; read once at accept or dial).
    pub remote: Option<SocketAddr>,
    /// Inbound and not yet authenticated: the source address holding an admission slot.
    pub pending_ip: Option<IpAddr>,
    /// Some bytes arrived (TLS records included).
    pub received_any: bool,
    /// The TLS session, when the cluster port runs TLS.
    pub tls: Option<Box<rustls::Connection>>,
}

/// What a read pass produced.
pub enum ReadOutcome {
    Open,
    Closed,
}

impl Conn {
    pub fn new(
        stream: TcpStream,
        outbound: bool,
        peer: Option<usize>,
        nonce: [u8; 32],
        now: Instant,
        remote: Option<SocketAddr>,
    ) -> Conn {
        Conn {
            stream,
            phase: if outbound { Phase::Connecting } else { Phase::Handshaking { peer_hello: None } },
            peer,
            outbound,
            nonce,
            opened_at: now,
            last_recv: now,
            last_sent: now,
            rbuf: BytesMut::with_capacity(READ_BUF_BYTES),
            decoder: FrameDecoder::new(HANDSHAKE_FRAME_BYTES_MAX),
            reassembly: None,
            out: BytesMut::new(),
            bulk: VecDeque::new(),
            bulk_bytes: 0,
            remote,
            pending_ip: None,
            received_any: false,
            tls: None,
        }
    }

    /// How far an unauthenticated connection got: 0 nothing arrived, 1 bytes wait that do not open a Hello
    /// frame (or a TLS handshake record when TLS is on), 2 bytes of the protocol arrived or wait, 3 a Hello
    /// named a configured peer. Bytes still in the socket are peeked (a few bytes, no copy kept), so a
    /// peer's connection accepted a moment ago in a burst of others counts for what it already sent.
    pub fn handshake_progress(&self) -> u8 {
        if self.peer.is_some() {
            return 3;
        }
        if self.received_any {
            // Bytes that did not open a valid frame or TLS record would have closed the connection.
            return 2;
        }
        let mut head = [0u8; 4];
        match self.stream.peek(&mut head) {
            Ok(n) if n > 0 => {
                let expected: &[u8] = if self.tls.is_some() {
                    &[0x16, 0x03] // TLS record: handshake, version 3.x
                } else {
                    &[wire::MAGIC[0], wire::MAGIC[1], wire::VERSION, FrameKind::Hello as u8]
                };
                let k = n.min(expected.len());
                if head[..k] == expected[..k] {
                    2
                } else {
                    1
                }
            }
            _ => 0,
        }
    }

    pub fn is_established(&self) -> bool {
        matches!(self.phase, Phase::Established)
    }

    pub fn queued_bytes(&self) -> usize {
        self.out.len() + self.bulk_bytes
    }

    /// Queues one frame. The caller checks the queue bound first.
    pub fn queue(&mut self, kind: FrameKind, payload: &[u8]) {
        // A bulk frame may go straight to `out` while nothing bulk waits and `out` is under its slice.
        let bulk_fits = self.bulk.is_empty() && self.out.len() < BULK_SLICE_BYTES;
        if kind.is_priority() || bulk_fits {
            encode_frame(kind, payload, &mut self.out);
        } else {
            let mut frame = BytesMut::with_capacity(wire::HEADER_LEN + payload.len());
            encode_frame(kind, payload, &mut frame);
            self.bulk_bytes += frame.len();
            self.bulk.push_back(frame);
        }
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || !self.bulk.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Writes as much as the socket takes. `Ok(true)` when everything queued is written.
    pub fn flush(&mut self, now: Instant) -> io::Result<bool> {
        if self.tls.is_some() {
            return self.flush_tls(now);
        }
        loop {
            self.refill_from_bulk();
            if self.out.is_empty() {
                return Ok(true);
            }
            match self.stream.write(&self.out) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
                Ok(n) => {
                    self.out.advance(n);
                    self.last_sent = now;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves plaintext into the TLS session and writes its records until the socket or the session's
    /// buffer is full (before the TLS handshake completes, the session holds a bounded amount of plaintext).
    fn flush_tls(&mut self, now: Instant) -> io::Result<bool> {
        let Some(session) = self.tls.as_deref_mut() else { return Ok(true) };
        loop {
            while self.out.len() < BULK_SLICE_BYTES {
                let Some(frame) = self.bulk.pop_front() else { break };
                self.bulk_bytes -= frame.len();
                self.out.extend_from_slice(&frame);
            }
            let mut moved = 0;
            if !self.out.is_empty() {
                moved = session.writer().write(&self.out)?;
                self.out.advance(moved);
            }
            let mut wrote = false;
            while session.wants_write() {
                match session.write_tls(&mut self.stream) {
                    Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, "socket accepted no bytes")),
                    Ok(_) => {
                        wrote = true;
                        self.last_sent = now;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
            if self.out.is_empty() && self.bulk.is_empty() {
                return Ok(true);
            }
            if moved == 0 && !wrote {
                // The handshake is still running and the session holds all the plaintext it will take.
                return Ok(false);
            }
        }
    }

    fn refill_from_bulk(&mut self) {
        while self.out.len() < BULK_SLICE_BYTES {
            let Some(frame) = self.bulk.pop_front() else { break };
            self.bulk_bytes -= frame.len();
            self.out.extend_from_slice(&frame);
        }
    }

    /// Reads until the socket would block, handing each whole frame to `on_frame`. Stops at the first bad
    /// frame or the first refusal by `on_frame` (the caller closes the connection). The receive buffer never holds more than one frame under
    /// the limit plus one read of `scratch`, because a header over the limit is refused on arrival.
    pub fn read_frames(
        &mut self,
        scratch: &mut [u8],
        now: Instant,
        mut on_frame: impl FnMut(&mut Conn, Frame) -> Result<(), String>,
    ) -> Result<ReadOutcome, ReadError> {
        if self.tls.is_some() {
            return self.read_tls_frames(scratch, now, on_frame);
        }
        loop {
            let n = match self.stream.read(scratch) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadOutcome::Open),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            };
            self.last_recv = now;
            self.received_any = true;
            self.rbuf.extend_from_slice(&scratch[..n]);
            self.decode_frames(&mut on_frame)?;
        }
    }

    fn decode_frames(
        &mut self,
        on_frame: &mut impl FnMut(&mut Conn, Frame) -> Result<(), String>,
    ) -> Result<(), ReadError> {
        // The decoder is read per frame: the handshake's last frame raises the limit for the next ones.
        while let Some(frame) = self.decoder.clone().decode(&mut self.rbuf).map_err(ReadError::Frame)? {
            on_frame(self, frame).map_err(ReadError::Refused)?;
        }
        Ok(())
    }

    /// `read_frames` through the TLS session: socket bytes into the session, records processed, plaintext
    /// into the receive buffer, frames out. A TLS error (a certificate from another CA, say) stops reading;
    /// the session has queued its alert, which the caller's flush sends before closing.
    fn read_tls_frames(
        &mut self,
        scratch: &mut [u8],
        now: Instant,
        mut on_frame: impl FnMut(&mut Conn, Frame) -> Result<(), String>,
    ) -> Result<ReadOutcome, ReadError> {
        loop {
            let Some(session) = self.tls.as_deref_mut() else { return Ok(ReadOutcome::Open) };
            let (mut eof, mut blocked) = (false, false);
            match session.read_tls(&mut self.stream) {
                Ok(0) => eof = true,
                Ok(_) => {
                    self.last_recv = now;
                    self.received_any = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => blocked = true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(ReadError::Io(e)),
            }
            session.process_new_packets().map_err(|e| ReadError::Tls(crate::tls::describe_error(&e)))?;
            let mut closed = eof;
            loop {
                match session.reader().read(scratch) {
                    Ok(0) => {
                        closed = true;
                        break;
                    }
                    Ok(n) => self.rbuf.extend_from_slice(&scratch[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The socket ended without a close_notify: treat it as closed.
                    Err(_) if eof => break,
                    Err(e) => return Err(ReadError::Io(e)),
                }
            }
            self.decode_frames(&mut on_frame)?;
            if closed {
                return Ok(ReadOutcome::Closed);
            }
            if blocked {
                return Ok(ReadOutcome::Open);
            }
        }
    }

    /// The peer's certificate (end entity), when TLS is on and its handshake is done.
    pub fn peer_certificate(&self) -> Option<&rustls::pki_types::CertificateDer<'static>> {
        self.tls.as_ref().and_then(|t| t.peer_certificates()).and_then(|c| c.first())
    }
}

/// Why reading stopped for good; the caller closes the connection.
pub enum ReadError {
    Io(io::Error),
    Frame(FrameError),
    /// The frame was well formed but not acceptable here (handshake refused, wrong phase, ...).
    Refused(String),
    /// The TLS session failed (bad certificate, bad record, ...).
    Tls(String),
}
