//! HTTP/1.1 on the wire, for one request per connection: writing a request head, reading and checking a
//! response head, and reading its body (by `Content-Length`, chunked, or to the close) through a bounded
//! reader that also serves server-sent event streams line by line.
//!
//! Invariants: a response head is at most [`HEAD_BYTES_MAX`] bytes and a whole body at most
//! [`BODY_BYTES_MAX`]; anything malformed is an `InvalidData` error, never a panic.

use std::io::{self, BufRead, Read};

/// Most bytes of a response's status line and header fields.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Most bytes of a response body read whole (the management API answers small JSON documents).
pub const BODY_BYTES_MAX: usize = 64 * 1024 * 1024;
/// Longest chunk-size line accepted in a chunked body.
const CHUNK_LINE_BYTES_MAX: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Header fields as received, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// The request head: `Connection: close`, the given fields, and the body's length.
pub fn request_head(method: &str, path: &str, host: &str, headers: &[(String, String)], body_len: usize) -> String {
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: aether-cli\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if body_len > 0 || matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str(&format!("Content-Length: {body_len}\r\n"));
    }
    head.push_str("\r\n");
    head
}

/// Reads a response head (status line and fields up to the blank line).
pub fn read_head(reader: &mut impl BufRead) -> io::Result<Head> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    loop {
        let mut line = Vec::new();
        let n = reader.by_ref().take((HEAD_BYTES_MAX - total + 1) as u64).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed before an answer"));
        }
        total += n;
        if total > HEAD_BYTES_MAX {
            return Err(bad(format!("the answer's head is longer than {HEAD_BYTES_MAX} bytes")));
        }
        let text = String::from_utf8(line).map_err(|_| bad("the answer's head is not UTF-8"))?;
        let text = text.trim_end_matches(['\r', '\n']).to_string();
        if text.is_empty() {
            break;
        }
        lines.push(text);
    }
    parse_head(&lines)
}

fn parse_head(lines: &[String]) -> io::Result<Head> {
    let status_line = lines.first().ok_or_else(|| bad("empty answer"))?;
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(bad(format!("not an HTTP/1.x answer: {}", truncate(status_line, 80))));
    }
    let status = parts.next().and_then(|s| s.parse::<u16>().ok()).ok_or_else(|| bad("no status code"))?;
    let headers = lines[1..]
        .iter()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head { status, headers })
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

impl Framing {
    pub fn of(head: &Head, method: &str) -> io::Result<Framing> {
        if method == "HEAD" || head.status == 204 || head.status == 304 || (100..200).contains(&head.status) {
            return Ok(Framing::Length(0));
        }
        if head.header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
            return Ok(Framing::Chunked);
        }
        match head.header("content-length") {
            Some(v) => v.trim().parse().map(Framing::Length).map_err(|_| bad(format!("bad Content-Length '{v}'"))),
            None => Ok(Framing::UntilClose),
        }
    }
}

/// A response body as a byte stream: the framing is undone, the end is reported as end of file.
pub struct Body<R> {
    inner: R,
    framing: Framing,
    /// Bytes left in the current chunk (chunked) or the body (length).
    left: u64,
    done: bool,
}

impl<R: BufRead> Body<R> {
    pub fn new(inner: R, framing: Framing) -> Body<R> {
        let left = if let Framing::Length(n) = framing { n } else { 0 };
        Body { inner, framing, left, done: framing == Framing::Length(0) }
    }

    /// The whole body, at most `max` bytes.
    pub fn read_all(mut self, max: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self).take(max as u64 + 1).read_to_end(&mut out)?;
        if out.len() > max {
            return Err(bad(format!("the answer is longer than {max} bytes")));
        }
        Ok(out)
    }

    /// Reads the next chunk-size line; 0 ends the body (its trailer is skipped).
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut line = Vec::new();
        self.inner.by_ref().take(CHUNK_LINE_BYTES_MAX as u64).read_until(b'\n', &mut line)?;
        if !line.ends_with(b"\n") {
            return Err(bad("bad chunk size line"));
        }
        let text = std::str::from_utf8(&line).map_err(|_| bad("bad chunk size line"))?;
        let size_text = text.split(';').next().unwrap_or("").trim();
        let size = u64::from_str_radix(size_text, 16).map_err(|_| bad(format!("bad chunk size '{size_text}'")))?;
        if size == 0 {
            self.skip_trailer()?;
            self.done = true;
        }
        self.left = size;
        Ok(())
    }

    fn skip_trailer(&mut self) -> io::Result<()> {
        loop {
            let mut line = Vec::new();
            let n = self.inner.by_ref().take(CHUNK_LINE_BYTES_MAX as u64).read_until(b'\n', &mut line)?;
            if n == 0 || line == b"\r\n" || line == b"\n" {
                return Ok(());
            }
        }
    }

    /// The CRLF after a chunk's data.
    fn end_chunk(&mut self) -> io::Result<()> {
        let mut crlf = [0u8; 2];
        self.inner.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(bad("a chunk does not end with CRLF"));
        }
        Ok(())
    }
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done || buf.is_empty() {
            return Ok(0);
        }
        match self.framing {
            Framing::UntilClose => self.inner.read(buf),
            Framing::Length(_) => {
                let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the answer ended early"));
                }
                self.left -= n as u64;
                self.done = self.left == 0;
                Ok(n)
            }
            Framing::Chunked => {
                if self.left == 0 {
                    self.next_chunk()?;
                    if self.done {
                        return Ok(0);
                    }
                }
                let want = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
                let n = self.inner.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the answer ended inside a chunk"));
                }
                self.left -= n as u64;
                if self.left == 0 {
                    self.end_chunk()?;
                }
                Ok(n)
            }
        }
    }
}

/// One server-sent event: its `id`, `event` name and `data` (lines joined with `\n`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: String,
}

/// Longest line of an event stream accepted.
pub const SSE_LINE_BYTES_MAX: usize = 1024 * 1024;

/// Reads the next event from a `text/event-stream`; comments (`: keepalive`) are skipped. `None` at the end.
pub fn next_sse_event(reader: &mut impl BufRead) -> io::Result<Option<SseEvent>> {
    let mut event = SseEvent::default();
    let mut has_data = false;
    loop {
        let mut raw = Vec::new();
        let n = reader.by_ref().take(SSE_LINE_BYTES_MAX as u64 + 1).read_until(b'\n', &mut raw)?;
        if n == 0 {
            return Ok(None);
        }
        if raw.len() > SSE_LINE_BYTES_MAX {
            return Err(bad(format!("an event stream line is longer than {SSE_LINE_BYTES_MAX} bytes")));
        }
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if has_data || event.id.is_some() || event.event.is_some() {
                return Ok(Some(event));
            }
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').map_or((line, ""), |(f, v)| (f, v.strip_prefix(' ').unwrap_or(v)));
        match field {
            "id" => event.id = Some(value.to_string()),
            "event" => event.event = Some(value.to_string()),
            "data" => {
                if has_data {
                    event.data.push('\n');
                }
                event.data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn response(raw: &[u8]) -> (Head, Vec<u8>) {
        let mut reader = BufReader::new(raw);
        let head = read_head(&mut reader).unwrap();
        let framing = Framing::of(&head, "GET").unwrap();
        let body = Body::new(reader, framing).read_all(1024).unwrap();
        (head, body)
    }

    #[test]
    fn bodies_are_read_by_length_chunks_or_to_the_close() {
        let (head, body) = response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhelloEXTRA");
        assert_eq!((head.status, head.header("x-a"), body.as_slice()), (200, Some("b"), &b"hello"[..]));
        let (_, body) =
            response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n");
        assert_eq!(body, b"abcde");
        let (head, body) = response(b"HTTP/1.0 404 Not Found\r\n\r\n{\"error\":1}");
        assert_eq!((head.status, body.as_slice()), (404, &b"{\"error\":1}"[..]));
    }

    #[test]
    fn malformed_answers_are_errors() {
        for raw in [
            &b"SMTP 220 hi\r\n\r\n"[..],
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        ] {
            let mut reader = BufReader::new(raw);
            let result = read_head(&mut reader)
                .and_then(|head| Framing::of(&head, "GET"))
                .and_then(|framing| Body::new(reader, framing).read_all(1024));
            assert!(result.is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn oversized_heads_and_bodies_are_refused() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'a', HEAD_BYTES_MAX + 10));
        assert!(read_head(&mut BufReader::new(raw.as_slice())).is_err());
        let body = Body::new(BufReader::new(&[b'x'; 100][..]), Framing::UntilClose);
        assert!(body.read_all(99).is_err());
    }

    #[test]
    fn event_streams_yield_events_and_skip_comments() {
        let raw = b": keepalive\n\nid: 7\nevent: node_down\ndata: {\"seq\":7}\n\n: keepalive\n\nid: 8\r\ndata: a\r\ndata: b\r\n\r\n";
        let mut reader = BufReader::new(&raw[..]);
        let first = next_sse_event(&mut reader).unwrap().unwrap();
        assert_eq!(
            first,
            SseEvent { id: Some("7".into()), event: Some("node_down".into()), data: "{\"seq\":7}".into() }
        );
        let second = next_sse_event(&mut reader).unwrap().unwrap();
        assert_eq!((second.id.as_deref(), second.data.as_str()), (Some("8"), "a\nb"));
        assert_eq!(next_sse_event(&mut reader).unwrap(), None);
    }

    #[test]
    fn the_request_head_closes_and_counts_the_body() {
        let head = request_head("PUT", "/api/kv/user/a", "localhost:8080", &[("X-A".into(), "1".into())], 3);
        assert!(head.starts_with("PUT /api/kv/user/a HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n"));
        assert!(head.contains("X-A: 1\r\n") && head.ends_with("Content-Length: 3\r\n\r\n"));
        assert!(!request_head("GET", "/", "h", &[], 0).contains("Content-Length"));
    }
}
