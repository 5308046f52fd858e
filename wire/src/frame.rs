//! Frame header codec and the streaming decoder used on every cluster connection.
//!
//! The decoder owns no buffer: the connection hands it the bytes received so far and it takes whole frames
//! off the front. A header is checked (magic, version, kind, length limit) before a single payload byte is
//! awaited, so a hostile length never makes the caller reserve memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

pub const MAGIC: [u8; 2] = [0xAE, 0x7A];
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 12;

/// Which plane a frame belongs to. Unknown kinds are a protocol error at this version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Handshake: who I am and my nonce.
    Hello = 1,
    /// Handshake: proof of the cluster secret over the peer's nonce.
    Auth = 2,
    /// The sender refuses the connection; the payload says why.
    Reject = 3,
    /// Keepalive; carries nothing.
    Ping = 4,
    /// Rabia consensus messages.
    Consensus = 16,
    /// Control-plane state transfer (decided log, snapshots).
    Sync = 17,
    /// Membership heartbeats and metrics.
    Gossip = 18,
    /// Cluster events (the event log): a node's new events, or recent history for a peer that connected.
    Events = 19,
    /// The membership roster: an empty payload asks for it (a joining node), a reply carries it.
    Members = 20,
    /// A forwarded invocation.
    Invoke = 32,
    /// The answer to a forwarded invocation.
    InvokeReply = 33,
    /// Artifact transfer (chunked).
    Artifact = 48,
    /// A piece of a message larger than one frame: `inner kind u8 | total u32 | offset u32 | bytes`.
    Fragment = 49,
    /// Storage-plane (DHT) messages between replicas: bulk, as they carry chunk values.
    Dht = 50,
    /// Opaque application frames (tests and benchmarks).
    User = 200,
}

impl FrameKind {
    pub fn from_u8(byte: u8) -> Option<FrameKind> {
        let kind = match byte {
            1 => FrameKind::Hello,
            2 => FrameKind::Auth,
            3 => FrameKind::Reject,
            4 => FrameKind::Ping,
            16 => FrameKind::Consensus,
            17 => FrameKind::Sync,
            18 => FrameKind::Gossip,
            19 => FrameKind::Events,
            20 => FrameKind::Members,
            32 => FrameKind::Invoke,
            33 => FrameKind::InvokeReply,
            48 => FrameKind::Artifact,
            49 => FrameKind::Fragment,
            50 => FrameKind::Dht,
            200 => FrameKind::User,
            _ => return None,
        };
        Some(kind)
    }

    /// Consensus, membership and forwarded calls (the data plane's requests and replies) jump the
    /// queue ahead of bulk data (artifact pushes, state transfer), so a push never delays a call.
    pub fn is_priority(self) -> bool {
        matches!(
            self,
            FrameKind::Hello
                | FrameKind::Auth
                | FrameKind::Reject
                | FrameKind::Ping
                | FrameKind::Consensus
                | FrameKind::Gossip
                | FrameKind::Invoke
                | FrameKind::InvokeReply
        )
    }
}

/// One checked frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

/// Why a byte stream was refused. Every variant is fatal for the connection it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadMagic([u8; 2]),
    UnknownVersion(u8),
    UnknownKind(u8),
    TooLong { len: usize, limit: usize },
    CrcMismatch { expected: u32, actual: u32 },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad magic {:02x}{:02x}", m[0], m[1]),
            FrameError::UnknownVersion(v) => write!(f, "unknown frame version {v} (this node speaks {VERSION})"),
            FrameError::UnknownKind(k) => write!(f, "unknown frame kind {k}"),
            FrameError::TooLong { len, limit } => write!(f, "frame of {len} bytes is over the {limit}-byte limit"),
            FrameError::CrcMismatch { expected, actual } => {
                write!(f, "crc mismatch: header says {expected:08x}, payload has {actual:08x}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Appends one frame (header and payload) to `out`.
pub fn encode_frame(kind: FrameKind, payload: &[u8], out: &mut BytesMut) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.reserve(HEADER_LEN + payload.len());
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u8(kind as u8);
    out.put_u32(len);
    out.put_u32(crc32fast::hash(payload));
    out.put_slice(payload);
}

/// Takes whole frames off the front of a receive buffer.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    len_max: usize,
}

struct Header {
    kind: FrameKind,
    len: usize,
    crc: u32,
}

impl FrameDecoder {
    pub fn new(len_max: usize) -> FrameDecoder {
        FrameDecoder { len_max }
    }

    pub fn len_max(&self) -> usize {
        self.len_max
    }

    /// Returns the next whole frame, `Ok(None)` when more bytes are needed, or the reason the stream is bad.
    /// On `Ok(Some)` the frame's bytes are removed from `buf`; otherwise `buf` is untouched.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.check_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < HEADER_LEN + header.len {
            return Ok(None);
        }
        let actual = crc32fast::hash(&buf[HEADER_LEN..HEADER_LEN + header.len]);
        if actual != header.crc {
            return Err(FrameError::CrcMismatch { expected: header.crc, actual });
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(header.len).freeze();
        Ok(Some(Frame { kind: header.kind, payload }))
    }

    /// How many bytes the frame at the front of `buf` needs in total, once its header is there and valid.
    /// Lets the reader reserve exactly what is announced (never more than the limit).
    pub fn needed(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        Ok(self.check_header(buf)?.map(|h| HEADER_LEN + h.len))
    }

    fn check_header(&self, buf: &[u8]) -> Result<Option<Header>, FrameError> {
        // Check what is there as soon as it is there, so garbage is refused on its first bytes.
        if let Some(magic) = buf.get(0..2) {
            if magic != MAGIC {
                return Err(FrameError::BadMagic([magic[0], magic[1]]));
            }
        }
        if let Some(&version) = buf.get(2) {
            if version != VERSION {
                return Err(FrameError::UnknownVersion(version));
            }
        }
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let kind = FrameKind::from_u8(head[3]).ok_or(FrameError::UnknownKind(head[3]))?;
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        if len > self.len_max {
            return Err(FrameError::TooLong { len, limit: self.len_max });
        }
        let crc = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
        Ok(Some(Header { kind, len, crc }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn framed(kind: FrameKind, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        encode_frame(kind, payload, &mut out);
        out
    }

    #[test]
    fn round_trip_one_frame() {
        let mut buf = framed(FrameKind::Consensus, b"hello");
        let frame = FrameDecoder::new(1024).decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.kind, FrameKind::Consensus);
        assert_eq!(&frame.payload[..], b"hello");
        assert!(buf.is_empty());
    }

    #[test]
    fn forwarded_calls_and_their_replies_travel_ahead_of_bulk_data() {
        for kind in [FrameKind::Invoke, FrameKind::InvokeReply, FrameKind::Consensus, FrameKind::Gossip] {
            assert!(kind.is_priority(), "{kind:?}");
        }
        for kind in [
            FrameKind::Artifact,
            FrameKind::Sync,
            FrameKind::Fragment,
            FrameKind::Events,
            FrameKind::Dht,
            FrameKind::User,
        ] {
            assert!(!kind.is_priority(), "{kind:?}");
        }
    }

    #[test]
    fn every_kind_round_trips_through_its_byte() {
        for kind in [FrameKind::Gossip, FrameKind::Events, FrameKind::Members, FrameKind::Artifact, FrameKind::Dht] {
            assert_eq!(FrameKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(FrameKind::from_u8(21), None);
    }

    #[test]
    fn partial_input_waits_and_keeps_bytes() {
        let whole = framed(FrameKind::User, &[7u8; 100]);
        let decoder = FrameDecoder::new(1024);
        for cut in 0..whole.len() {
            let mut part = BytesMut::from(&whole[..cut]);
            assert_eq!(decoder.decode(&mut part).unwrap(), None);
            assert_eq!(part.len(), cut);
        }
    }

    #[test]
    fn bad_magic_is_refused_on_first_bytes() {
        let mut buf = BytesMut::from(&b"GE"[..]);
        assert_eq!(FrameDecoder::new(1024).decode(&mut buf), Err(FrameError::BadMagic(*b"GE")));
    }

    #[test]
    fn oversized_frame_is_refused_before_payload_arrives() {
        let mut head = framed(FrameKind::User, &[0u8; 2048]);
        head.truncate(HEADER_LEN);
        let err = FrameDecoder::new(1024).decode(&mut head).unwrap_err();
        assert_eq!(err, FrameError::TooLong { len: 2048, limit: 1024 });
    }

    #[test]
    fn flipped_payload_bit_fails_crc() {
        let mut buf = framed(FrameKind::User, b"payload");
        let last = buf.len() - 1;
        buf[last] ^= 1;
        assert!(matches!(FrameDecoder::new(1024).decode(&mut buf), Err(FrameError::CrcMismatch { .. })));
    }

    #[test]
    fn unknown_version_and_kind_are_refused() {
        let mut buf = framed(FrameKind::User, b"x");
        buf[2] = 9;
        assert_eq!(FrameDecoder::new(64).decode(&mut buf), Err(FrameError::UnknownVersion(9)));
        let mut buf = framed(FrameKind::User, b"x");
        buf[3] = 99;
        assert_eq!(FrameDecoder::new(64).decode(&mut buf), Err(FrameError::UnknownKind(99)));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic_nor_exceed_limit(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let decoder = FrameDecoder::new(512);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(frame)) = decoder.decode(&mut buf) {
                prop_assert!(frame.payload.len() <= 512);
            }
            if let Ok(Some(needed)) = decoder.needed(&buf) {
                prop_assert!(needed <= 512 + HEADER_LEN);
            }
        }

        #[test]
        fn frame_sequences_round_trip(payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let mut stream = BytesMut::new();
            for p in &payloads {
                encode_frame(FrameKind::User, p, &mut stream);
            }
            let decoder = FrameDecoder::new(512);
            for p in &payloads {
                let frame = decoder.decode(&mut stream).unwrap().unwrap();
                prop_assert_eq!(&frame.payload[..], &p[..]);
            }
            prop_assert!(stream.is_empty());
        }

        #[test]
        fn corrupting_any_header_byte_never_yields_a_wrong_frame(pos in 0usize..HEADER_LEN, flip in 1u8..=255) {
            let payload = b"consensus payload";
            let mut buf = framed(FrameKind::Consensus, payload);
            buf[pos] ^= flip;
            if let Ok(Some(frame)) = FrameDecoder::new(1024).decode(&mut buf) {
                // Only the kind byte can change into another valid kind; the payload must still be intact.
                prop_assert_eq!(pos, 3);
                prop_assert_eq!(&frame.payload[..], &payload[..]);
            }
        }
    }
}
