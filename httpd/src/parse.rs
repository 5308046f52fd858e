//! Request heads (via `httparse`) and chunked bodies, checked against RFC 9112.
//!
//! Owns: the decision of how a request body is framed. Invariants: a head is accepted only when its
//! framing is unambiguous: one valid Content-Length (duplicates must agree), or `Transfer-Encoding:
//! chunked` alone on HTTP/1.1, or no body; anything else is a [`Reject`] and the connection closes.
//! Every size read from the wire is checked for overflow; every buffer is bounded by [`crate::Limits`].

use crate::Limits;

/// Why a request is refused, with the status to answer; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub status: u16,
    pub error: &'static str,
    pub detail: String,
}

impl Reject {
    pub fn new(status: u16, error: &'static str, detail: impl Into<String>) -> Reject {
        Reject { status, error, detail: detail.into() }
    }

    fn bad(detail: impl Into<String>) -> Reject {
        Reject::new(400, "bad request", detail)
    }
}

/// How the body of a request is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
}

/// A parsed, validated request head.
#[derive(Debug, Clone)]
pub struct Head {
    pub method: String,
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    pub headers: Vec<(String, String)>,
    pub framing: Framing,
    /// The client asked to keep the connection open (after this request).
    pub keep_alive: bool,
    pub expect_continue: bool,
}

impl Head {
    /// The target without its query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// Parse a head at the start of `buf`: `Ok(None)` when incomplete (and within limits), else the head and
/// its length in bytes.
pub fn head(buf: &[u8], limits: &Limits) -> Result<Option<(Head, usize)>, Reject> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.headers_max];
    let mut request = httparse::Request::new(&mut slots);
    let parsed = request.parse(buf);
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.head_bytes_max {
                let detail = format!("the request head is over {} bytes", limits.head_bytes_max);
                return Err(Reject::new(431, "request header fields too large", detail));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            let detail = format!("more than {} header fields", limits.headers_max);
            return Err(Reject::new(431, "request header fields too large", detail));
        }
        Err(httparse::Error::Version) if !first_line_names_http(buf) => {
            return Err(Reject::bad("the request line has no HTTP version"));
        }
        Err(httparse::Error::Version) => {
            return Err(Reject::new(505, "http version not supported", "only HTTP/1.0 and HTTP/1.1 are served"));
        }
        Err(e) => return Err(Reject::bad(format!("malformed request head: {e}"))),
    };
    if len > limits.head_bytes_max {
        let detail = format!("the request head is over {} bytes", limits.head_bytes_max);
        return Err(Reject::new(431, "request header fields too large", detail));
    }
    let method = request.method.unwrap_or_default().to_owned();
    let target = request.path.unwrap_or_default().to_owned();
    let minor = request.version.unwrap_or(1);
    if !(target.starts_with('/') || (target == "*" && method == "OPTIONS") || target.starts_with("http")) {
        return Err(Reject::bad(format!("bad request target '{}'", truncated(&target))));
    }
    let mut headers = Vec::with_capacity(request.headers.len());
    for field in request.headers.iter() {
        let value = std::str::from_utf8(field.value)
            .map_err(|_| Reject::bad(format!("header field '{}' is not UTF-8", field.name)))?;
        headers.push((field.name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let framing = framing(&headers, minor)?;
    let hosts = headers.iter().filter(|(n, _)| n == "host").count();
    if hosts > 1 || (minor == 1 && hosts == 0) {
        return Err(Reject::bad("an HTTP/1.1 request needs exactly one Host header field"));
    }
    let connection = |token: &str| {
        headers
            .iter()
            .filter(|(n, _)| n == "connection")
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let keep_alive = if minor == 1 { !connection("close") } else { connection("keep-alive") };
    let mut expect_continue = false;
    for (_, value) in headers.iter().filter(|(n, _)| n == "expect") {
        if value.eq_ignore_ascii_case("100-continue") {
            expect_continue = minor == 1;
        } else {
            return Err(Reject::new(417, "expectation failed", format!("cannot meet 'Expect: {}'", truncated(value))));
        }
    }
    Ok(Some((Head { method, target, minor, headers, framing, keep_alive, expect_continue }, len)))
}

/// Whether the request line ends in something shaped like `HTTP/x.y` (else a version error is a 400).
fn first_line_names_http(buf: &[u8]) -> bool {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line.rsplit(|&b| b == b' ').next().is_some_and(|v| v.len() == 8 && v.starts_with(b"HTTP/") && v[6] == b'.')
}

fn truncated(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((at, _)) => &s[..at],
        None => s,
    }
}

fn framing(headers: &[(String, String)], minor: u8) -> Result<Framing, Reject> {
    let mut length: Option<u64> = None;
    for (_, value) in headers.iter().filter(|(n, _)| n == "content-length") {
        for part in value.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Reject::bad(format!("invalid Content-Length '{}'", truncated(value))));
            }
            let n: u64 =
                part.parse().map_err(|_| Reject::bad(format!("Content-Length '{}' overflows", truncated(part))))?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject::bad("conflicting Content-Length values"));
            }
            length = Some(n);
        }
    }
    let codings: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .collect();
    if codings.is_empty() {
        return Ok(Framing::Length(length.unwrap_or(0)));
    }
    if length.is_some() {
        return Err(Reject::bad("both Content-Length and Transfer-Encoding"));
    }
    if minor == 0 {
        return Err(Reject::bad("Transfer-Encoding in an HTTP/1.0 request"));
    }
    if codings.iter().filter(|c| c.eq_ignore_ascii_case("chunked")).count() > 1 {
        return Err(Reject::bad("chunked applied more than once"));
    }
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
        _ if codings.last().is_some_and(|c| c.eq_ignore_ascii_case("chunked")) => Err(Reject::new(
            501,
            "not implemented",
            format!("transfer codings other than chunked are not supported: '{}'", codings.join(", ")),
        )),
        _ => Err(Reject::bad("the final transfer coding must be chunked")),
    }
}

/// Where a chunked body's decoding stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Reading chunk data; this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading the trailer section; this many bytes of it so far.
    Trailers(usize),
    Done,
}

/// Incremental decoder of a chunked body, bounded by a body limit and [`Limits`].
#[derive(Debug, Clone)]
pub struct Chunked {
    state: ChunkState,
    body_max: u64,
    line_max: usize,
    trailers_max: usize,
}

impl Chunked {
    pub fn new(body_max: u64, limits: &Limits) -> Chunked {
        Chunked {
            state: ChunkState::Size,
            body_max,
            line_max: limits.chunk_line_max,
            trailers_max: limits.trailer_bytes_max,
        }
    }

    pub fn done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decode from `input` into `body`; returns the bytes consumed (a partial line is left unconsumed).
    pub fn feed(&mut self, input: &[u8], body: &mut Vec<u8>) -> Result<usize, Reject> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                ChunkState::Done => return Ok(at),
                ChunkState::Size => {
                    let Some(line) = line(rest, self.line_max)? else { return Ok(at) };
                    at += line.len();
                    let size = chunk_size(line)?;
                    if (body.len() as u64).saturating_add(size) > self.body_max {
                        return Err(too_large(self.body_max));
                    }
                    self.state = if size == 0 { ChunkState::Trailers(0) } else { ChunkState::Data(size) };
                }
                ChunkState::Data(left) => {
                    if rest.is_empty() {
                        return Ok(at);
                    }
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(rest.len());
                    body.extend_from_slice(&rest[..n]);
                    at += n;
                    let left = left - n as u64;
                    self.state = if left == 0 { ChunkState::DataEnd } else { ChunkState::Data(left) };
                }
                ChunkState::DataEnd => {
                    if rest.starts_with(b"\r\n") {
                        at += 2;
                    } else if rest.starts_with(b"\n") {
                        at += 1;
                    } else if rest.is_empty() || rest == b"\r" {
                        return Ok(at);
                    } else {
                        return Err(Reject::bad("chunk data is not followed by CRLF"));
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers(seen) => {
                    let room = self.trailers_max.saturating_sub(seen);
                    let Some(line) = line(rest, room.max(2)).map_err(|_| trailers_too_large(self.trailers_max))? else {
                        return Ok(at);
                    };
                    at += line.len();
                    let seen = seen + line.len();
                    if seen > self.trailers_max {
                        return Err(trailers_too_large(self.trailers_max));
                    }
                    let text = trim_eol(line);
                    if text.is_empty() {
                        self.state = ChunkState::Done;
                    } else if !text.contains(&b':') || text[0] == b' ' || text[0] == b'\t' {
                        return Err(Reject::bad("malformed trailer field"));
                    } else {
                        self.state = ChunkState::Trailers(seen);
                    }
                }
            }
        }
    }
}

fn too_large(max: u64) -> Reject {
    Reject::new(413, "payload too large", format!("the body is over {max} bytes"))
}

fn trailers_too_large(max: usize) -> Reject {
    Reject::new(431, "request header fields too large", format!("the trailer section is over {max} bytes"))
}

/// The first line of `input` with its LF, if complete; a line longer than `max` is a reject.
fn line(input: &[u8], max: usize) -> Result<Option<&[u8]>, Reject> {
    match input.iter().position(|&b| b == b'\n') {
        Some(end) if end < max => Ok(Some(&input[..=end])),
        Some(_) => Err(Reject::bad(format!("a chunk line is over {max} bytes"))),
        None if input.len() >= max => Err(Reject::bad(format!("a chunk line is over {max} bytes"))),
        None => Ok(None),
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The size of a chunk-size line (`1*HEXDIG [ chunk-ext ] CRLF`); extensions are checked and ignored.
fn chunk_size(line: &[u8]) -> Result<u64, Reject> {
    let text = trim_eol(line);
    let (size, ext) = match text.iter().position(|&b| b == b';') {
        Some(at) => (&text[..at], &text[at..]),
        None => (text, &[][..]),
    };
    let size = size.strip_suffix(b" ").unwrap_or(size);
    if size.is_empty() || size.len() > 15 || !size.iter().all(u8::is_ascii_hexdigit) {
        return Err(Reject::bad("invalid chunk size"));
    }
    if ext.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(Reject::bad("invalid chunk extension"));
    }
    let size = std::str::from_utf8(size).map_err(|_| Reject::bad("invalid chunk size"))?;
    u64::from_str_radix(size, 16).map_err(|_| Reject::bad("invalid chunk size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Head>, Reject> {
        head(text.as_bytes(), &Limits::default()).map(|h| h.map(|(h, _)| h))
    }

    fn status(text: &str) -> u16 {
        parse(text).err().map_or(200, |r| r.status)
    }

    #[test]
    fn framing_is_exact() {
        let h = parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n").unwrap().unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Length(5), true));
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n"), 200);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 400);
        assert_eq!(
            status("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), 501);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400);
        assert_eq!(status("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "no Host");
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nExpect: magic\r\n\r\n"), 417);
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().unwrap().keep_alive);
    }

    #[test]
    fn chunked_bodies_decode_within_bounds() {
        let limits = Limits::default();
        let mut chunked = Chunked::new(100, &limits);
        let mut body = Vec::new();
        let input = b"5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let used = chunked.feed(input, &mut body).unwrap();
        assert!(chunked.done());
        assert_eq!((&body[..], &input[used..]), (&b"hello world"[..], &b"NEXT"[..]));
        // Byte by byte gives the same.
        let (mut chunked, mut body, mut pending) = (Chunked::new(100, &limits), Vec::new(), Vec::new());
        for &b in &input[..input.len() - 4] {
            pending.push(b);
            let used = chunked.feed(&pending, &mut body).unwrap();
            pending.drain(..used);
        }
        assert!(chunked.done() && body == b"hello world");
        let fails = |input: &[u8]| Chunked::new(100, &limits).feed(input, &mut Vec::new()).err().map(|r| r.status);
        assert_eq!(fails(b"fffffffffffffffffffff\r\n"), Some(400));
        assert_eq!(fails(b"ffff\r\n"), Some(413));
        assert_eq!(fails(b"5\r\nhelloXX"), Some(400));
        assert_eq!(fails(b"zz\r\n"), Some(400));
        assert_eq!(fails(format!("1;{}\r\n", "e".repeat(2000)).as_bytes()), Some(400));
        assert_eq!(fails(format!("0\r\nA: {}\r\n", "t".repeat(5000)).as_bytes()), Some(431));
    }
}
