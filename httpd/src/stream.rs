//! Streaming answers (server-sent events and the like): a handler answers with a [`StreamSource`] that the
//! port's I/O thread polls, instead of a whole body.
//!
//! How a stream runs: the handler returns a [`crate::Response`] with [`crate::Response::stream`] set. The I/O
//! thread writes the head (no `Content-Length`; `Transfer-Encoding: chunked` to HTTP/1.1 clients, a
//! close-delimited body to HTTP/1.0 ones), then on every loop turn (every wake-up, and at least every
//! `SLOW_TICK`) asks the source for more bytes, as many as fit the stream's buffer
//! ([`crate::Limits::stream_buffer_bytes_max`] minus what is still unsent). The source never blocks: it
//! hands over what it has now.
//!
//! Invariants: a stream never buffers more than its buffer bound (a source is offered only the room left);
//! a client that stops reading stalls its writes and is disconnected after the write timeout; the port
//! holds at most [`crate::Limits::streams_max`] streams (a further one is answered 503); a stream ends
//! when its source says so or the server stops, with the terminating chunk, and the connection is then
//! closed (never reused for another request).

use std::time::Instant;

/// What a source says after a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStatus {
    /// More may come later.
    Open,
    /// Nothing more: the server ends the stream once what was handed over is written.
    End,
}

/// The producer of a streaming answer. Runs on the I/O thread: `poll` must be cheap and never block.
pub trait StreamSource: Send + 'static {
    /// Append at most `room` bytes to `out` (what is ready now; nothing is fine), at `now`.
    fn poll(&mut self, now: Instant, out: &mut Vec<u8>, room: usize) -> StreamStatus;
}

/// Bytes of chunk framing around each piece: hex size (at most 16 digits), two CRLFs.
pub(crate) const CHUNK_OVERHEAD: usize = 20;

/// Frame `piece` as one chunk of a chunked body.
pub(crate) fn chunk(out: &mut Vec<u8>, piece: &[u8]) {
    if piece.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
    out.extend_from_slice(piece);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The head of a streaming answer. Handler headers that frame the body are dropped, as in `serialize`.
pub(crate) fn head(out: &mut Vec<u8>, response: &crate::Response, chunked: bool) {
    let mut plain = crate::Response::new(response.status, "", Vec::new());
    plain.headers = response.headers.clone();
    let mut bytes = Vec::new();
    crate::conn::serialize(&mut bytes, &plain, true, false, 1);
    // `serialize` wrote `Content-Length: 0` and `Connection: close`: a streaming head has neither length
    // nor (for HTTP/1.1) a close promise it needs; replace the framing lines.
    let text = String::from_utf8_lossy(&bytes);
    for line in text.split("\r\n") {
        if line.is_empty() || line.starts_with("Content-Length:") || line.starts_with("Connection:") {
            continue;
        }
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    }
    out.extend_from_slice(b"Connection: close\r\nCache-Control: no-cache\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_carry_their_hex_length_and_the_end_is_a_zero_chunk() {
        let mut out = Vec::new();
        chunk(&mut out, b"data: x\n\n");
        chunk(&mut out, b"");
        chunk(&mut out, &[b'a'; 26]);
        out.extend_from_slice(LAST_CHUNK);
        let expected = format!("9\r\ndata: x\n\n\r\n1a\r\n{}\r\n0\r\n\r\n", "a".repeat(26));
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn a_stream_head_has_no_length_and_says_how_the_body_ends() {
        let response = crate::Response::new(200, "text/event-stream", Vec::new())
            .with_header("Content-Length", "5")
            .with_header("X-Evil", "a\r\nb");
        let mut out = Vec::new();
        head(&mut out, &response, true);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"), "{text}");
        assert!(text.contains("Transfer-Encoding: chunked\r\n") && text.ends_with("\r\n\r\n"), "{text}");
        assert!(!text.contains("Content-Length") && !text.contains("X-Evil"), "{text}");
        let mut plain = Vec::new();
        head(&mut plain, &response, false);
        assert!(!String::from_utf8(plain).unwrap().contains("chunked"));
    }
}
