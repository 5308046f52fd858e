//! A blocking HTTP/1.1 client that keeps its connection open between requests, for tests that drive a steady
//! load the way a real client does (one connection, many requests) rather than one connection per request.
//!
//! Invariants: a response is read whole (by `Content-Length` or chunks, bounded by [`BODY_BYTES_MAX`])
//! before the next request is sent; the connection is dropped after an answer that says
//! `Connection: close` and after any error, so the next request opens a fresh one. Nothing is ever retried:
//! every failure reaches the caller, which decides what it counts as.

use crate::http::HttpResponse;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Largest answer body read; a larger one is an error.
pub const BODY_BYTES_MAX: usize = 4 << 20;
/// Largest answer head read; a larger one is an error.
const HEAD_BYTES_MAX: usize = 64 << 10;
/// Connect, read and write timeout.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed: before the connection existed, or on it.
#[derive(Debug)]
pub enum KeepAliveError {
    /// The TCP connection could not be opened.
    Connect(std::io::Error),
    /// The connection broke or the answer was malformed; `reused` says whether it had served requests before.
    Exchange { error: std::io::Error, reused: bool },
}

impl std::fmt::Display for KeepAliveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeepAliveError::Connect(e) => write!(f, "connect: {e}"),
            KeepAliveError::Exchange { error, reused: true } => write!(f, "on a reused connection: {error}"),
            KeepAliveError::Exchange { error, reused: false } => write!(f, "on a fresh connection: {error}"),
        }
    }
}

/// One persistent connection to `addr`, opened on first use and again after it closed.
pub struct KeepAlive {
    addr: SocketAddr,
    conn: Option<BufReader<TcpStream>>,
    /// Requests answered on the current connection.
    served: u64,
    /// Connections opened so far.
    opened: u64,
}

impl KeepAlive {
    pub fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive { addr, conn: None, served: 0, opened: 0 }
    }

    /// How many connections this client opened (1 while the server kept the first one open).
    pub fn connections_opened(&self) -> u64 {
        self.opened
    }

    /// Sends one request and reads its whole answer, keeping the connection for the next one when the
    /// server allows it.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> Result<HttpResponse, KeepAliveError> {
        if self.conn.is_none() {
            let stream = TcpStream::connect_timeout(&self.addr, TIMEOUT).map_err(KeepAliveError::Connect)?;
            let timeouts =
                stream.set_read_timeout(Some(TIMEOUT)).and_then(|()| stream.set_write_timeout(Some(TIMEOUT)));
            timeouts.map_err(KeepAliveError::Connect)?;
            let _ = stream.set_nodelay(true);
            self.conn = Some(BufReader::new(stream));
            self.served = 0;
            self.opened += 1;
        }
        let reused = self.served > 0;
        let result = match self.conn.as_mut() {
            Some(conn) => exchange(conn, self.addr, method, path, body),
            None => Err(std::io::Error::other("no connection")),
        };
        match result {
            Ok((response, keep)) => {
                self.served += 1;
                if !keep {
                    self.conn = None;
                }
                Ok(response)
            }
            Err(error) => {
                self.conn = None;
                Err(KeepAliveError::Exchange { error, reused })
            }
        }
    }
}

/// Writes the request, reads the answer; returns it and whether the connection stays open.
fn exchange(
    conn: &mut BufReader<TcpStream>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(HttpResponse, bool)> {
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n", body.len());
    let stream = conn.get_mut();
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let (status, headers) = read_head(conn)?;
    let value = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_ascii_lowercase());
    let body = if value("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(conn)?
    } else {
        let length = match value("content-length") {
            Some(v) => v.trim().parse::<usize>().map_err(|_| bad("bad Content-Length"))?,
            None => 0,
        };
        read_exact_bounded(conn, length)?
    };
    let keep = !value("connection").is_some_and(|v| v.contains("close"));
    Ok((HttpResponse { status, body, headers }, keep))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string())
}

/// One CRLF-terminated line, without its end; an end of stream before it is an error.
fn read_line(conn: &mut BufReader<TcpStream>, budget: &mut usize) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = conn.by_ref().take(*budget as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before an answer"));
    }
    if n > *budget || !line.ends_with(b"\n") {
        return Err(bad("answer head too long or cut off"));
    }
    *budget -= n;
    let text = String::from_utf8(line).map_err(|_| bad("answer head is not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}

fn read_head(conn: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let mut budget = HEAD_BYTES_MAX;
    let status_line = read_line(conn, &mut budget)?;
    let status = status_line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| bad("no status"))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(conn, &mut budget)?;
        if line.is_empty() {
            return Ok((status, headers));
        }
        let (name, value) = line.split_once(':').ok_or_else(|| bad("header line without `:`"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
}

fn read_exact_bounded(conn: &mut BufReader<TcpStream>, length: usize) -> std::io::Result<Vec<u8>> {
    if length > BODY_BYTES_MAX {
        return Err(bad("answer body too large"));
    }
    let mut body = vec![0u8; length];
    conn.read_exact(&mut body)?;
    Ok(body)
}

fn read_chunked(conn: &mut BufReader<TcpStream>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut budget = 1024;
        let line = read_line(conn, &mut budget)?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| bad("bad chunk size"))?;
        if size == 0 {
            // Trailer fields, then the empty line.
            while !read_line(conn, &mut budget)?.is_empty() {}
            return Ok(body);
        }
        if body.len() + size > BODY_BYTES_MAX {
            return Err(bad("answer body too large"));
        }
        body.extend(read_exact_bounded(conn, size)?);
        let mut end = [0u8; 2];
        conn.read_exact(&mut end)?;
        if &end != b"\r\n" {
            return Err(bad("chunk without its CRLF"));
        }
    }
}
