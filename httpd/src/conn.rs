//! One client connection: its socket (plain or TLS), its buffers and where its current request stands.
//!
//! Invariants: the read buffer never holds more than the head limit plus one read chunk (body bytes are
//! moved out as they come, bounded by the route's body limit); at most one request per connection is
//! with a handler at a time, so answers go out in request order; after an answer with
//! `Connection: close` or an error, nothing more is read for requests: the connection writes what it
//! has, shuts down its write side and discards input for a short linger (so the client sees the answer
//! rather than a reset), then closes. A streaming answer is the connection's last: once it ends the
//! connection closes the same way.

use crate::parse::{Chunked, Head};
use crate::Response;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::Instant;

/// Bytes read from a socket at once.
pub const READ_CHUNK: usize = 16 * 1024;

/// How the body of the request being read is framed.
pub enum BodyState {
    Length(u64),
    Chunked(Box<Chunked>),
}

pub enum State {
    /// Between requests of a kept-alive connection.
    Idle { since: Instant },
    /// Reading a request head (or a TLS handshake before the first one).
    Head { started: Instant },
    /// Reading a body.
    Body { head: Box<Head>, body: Vec<u8>, framing: BodyState, started: Instant, last: Instant },
    /// A handler has the request.
    Waiting { head_only: bool, keep_alive: bool, minor: u8 },
    /// Writing a streaming answer produced by `source` (chunked framing when `chunked`).
    Streaming { source: Box<dyn crate::StreamSource>, chunked: bool },
    /// Writing a last answer.
    Closing,
    /// Answer written, write side shut: discarding input until the peer closes or `until`.
    Lingering { until: Instant },
}

pub struct Conn {
    pub stream: mio::net::TcpStream,
    pub tls: Option<Box<rustls::ServerConnection>>,
    pub peer: SocketAddr,
    pub inbuf: Vec<u8>,
    out: Vec<u8>,
    out_at: usize,
    pub state: State,
    /// The peer closed its side (or TLS close_notify).
    pub peer_eof: bool,
    /// Since when output is pending without progress.
    pub write_stalled_since: Option<Instant>,
    /// Body bytes (buffer capacity) of the current request counted in the port's body budget.
    pub body_held: usize,
}

impl Conn {
    pub fn new(stream: mio::net::TcpStream, peer: SocketAddr, tls: Option<Box<rustls::ServerConnection>>) -> Conn {
        Conn {
            stream,
            tls,
            peer,
            inbuf: Vec::new(),
            out: Vec::new(),
            out_at: 0,
            state: State::Head { started: Instant::now() },
            peer_eof: false,
            write_stalled_since: None,
            body_held: 0,
        }
    }

    /// Whether the current state reads requests from the socket.
    pub fn reading(&self) -> bool {
        matches!(self.state, State::Idle { .. } | State::Head { .. } | State::Body { .. })
    }

    /// Answer bytes not yet handed to the socket (or to TLS).
    pub fn out_backlog(&self) -> usize {
        self.out.len() - self.out_at
    }

    pub fn out_pending(&self) -> bool {
        self.out_at < self.out.len() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Queue raw bytes (an interim `100 Continue`).
    pub fn queue_raw(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
        if self.write_stalled_since.is_none() {
            self.write_stalled_since = Some(Instant::now());
        }
    }

    /// Queue an answer.
    pub fn queue_response(&mut self, response: &Response, head_only: bool, keep_alive: bool, minor: u8) {
        let mut bytes = Vec::with_capacity(128 + response.body.len());
        serialize(&mut bytes, response, head_only, keep_alive, minor);
        self.queue_raw(&bytes);
    }

    /// Read what is available until `cap` bytes are buffered; returns the new bytes (0: nothing now).
    pub fn read_some(&mut self, cap: usize) -> io::Result<usize> {
        let before = self.inbuf.len();
        match self.tls.as_mut() {
            None => read_plain(&mut self.stream, &mut self.inbuf, cap, &mut self.peer_eof)?,
            Some(tls) => {
                read_tls(&mut self.stream, tls, &mut self.inbuf, cap, &mut self.peer_eof)?;
                // Handshake messages and alerts to send.
                self.flush()?;
            }
        }
        Ok(self.inbuf.len() - before)
    }

    /// Read and throw away input (lingering close); true once the peer closed or failed.
    pub fn discard(&mut self) -> bool {
        let mut sink = [0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut sink) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
    }

    /// Write what is pending; Ok(true) when everything went out.
    pub fn flush(&mut self) -> io::Result<bool> {
        let mut progressed = false;
        let done = match self.tls.as_mut() {
            None => {
                let mut done = true;
                while self.out_at < self.out.len() {
                    match self.stream.write(&self.out[self.out_at..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            self.out_at += n;
                            progressed = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            done = false;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                done
            }
            Some(tls) => loop {
                if self.out_at < self.out.len() {
                    let n = tls.writer().write(&self.out[self.out_at..])?;
                    self.out_at += n;
                    progressed |= n > 0;
                }
                let mut blocked = false;
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => progressed = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            blocked = true;
                            break;
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                if blocked {
                    break false;
                }
                if self.out_at >= self.out.len() {
                    break true;
                }
            },
        };
        if self.out_at >= self.out.len() {
            self.out.clear();
            self.out_at = 0;
        }
        if done && !self.out_pending() {
            self.write_stalled_since = None;
        } else if progressed || self.write_stalled_since.is_none() {
            self.write_stalled_since = Some(Instant::now());
        }
        Ok(done)
    }

    /// Shut the write side (after a TLS close_notify).
    pub fn shutdown_write(&mut self) {
        if let Some(tls) = self.tls.as_mut() {
            tls.send_close_notify();
            let _ = self.flush();
        }
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }
}

fn read_plain(stream: &mut mio::net::TcpStream, buf: &mut Vec<u8>, cap: usize, eof: &mut bool) -> io::Result<()> {
    let mut chunk = [0u8; READ_CHUNK];
    while buf.len() < cap && !*eof {
        let room = (cap - buf.len()).min(READ_CHUNK);
        match stream.read(&mut chunk[..room]) {
            Ok(0) => *eof = true,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_tls(
    stream: &mut mio::net::TcpStream,
    tls: &mut rustls::ServerConnection,
    buf: &mut Vec<u8>,
    cap: usize,
    eof: &mut bool,
) -> io::Result<()> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        // Plaintext already decrypted first.
        while buf.len() < cap {
            let room = (cap - buf.len()).min(READ_CHUNK);
            match tls.reader().read(&mut chunk[..room]) {
                Ok(0) => {
                    *eof = true;
                    return Ok(());
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    *eof = true;
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        if buf.len() >= cap || *eof {
            return Ok(());
        }
        match tls.read_tls(stream) {
            Ok(0) => *eof = true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if let Err(e) = tls.process_new_packets() {
            // Send the alert, then fail the connection.
            let _ = tls.write_tls(stream);
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if *eof {
            // Whatever was decrypted last is still read above; then the loop ends on eof.
            while buf.len() < cap {
                match tls.reader().read(&mut chunk) {
                    Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                    _ => break,
                }
            }
            return Ok(());
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

/// Write `response` as HTTP/1.1 bytes. Header fields with CR or LF are dropped (no response splitting).
pub fn serialize(out: &mut Vec<u8>, response: &Response, head_only: bool, keep_alive: bool, minor: u8) {
    let status = if (100..1000).contains(&response.status) { response.status } else { 500 };
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    for (name, value) in &response.headers {
        let framing =
            ["content-length", "connection", "transfer-encoding"].iter().any(|n| name.eq_ignore_ascii_case(n));
        let unsafe_text = |s: &str| s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
        if framing || unsafe_text(name) || unsafe_text(value) || name.is_empty() {
            continue;
        }
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let bodiless = status < 200 || status == 204 || status == 304;
    if !bodiless {
        out.extend_from_slice(format!("Content-Length: {}\r\n", response.body.len()).as_bytes());
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless && !head_only {
        out.extend_from_slice(&response.body);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_name_the_statuses_the_node_answers() {
        for (status, phrase) in
            [(421, "Misdirected Request"), (431, "Request Header Fields Too Large"), (503, "Service Unavailable")]
        {
            let mut out = Vec::new();
            serialize(&mut out, &Response::new(status, "application/json", b"{}".to_vec()), false, true, 1);
            let line = String::from_utf8_lossy(&out).lines().next().unwrap_or_default().to_owned();
            assert_eq!(line, format!("HTTP/1.1 {status} {phrase}"));
        }
    }
}
