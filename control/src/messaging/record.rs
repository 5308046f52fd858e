//! The values stored under `messages/`, `topics/`, `cursors/` and `deadletters/`.
//!
//! A message is binary (its payload is the bulk of it and may be any bytes); the others are small JSON
//! records. Message layout, format 1 (integers little-endian):
//!
//! ```text
//! format u8 = 1 | publisher_len u16 | publisher | published_at_ms u64 | has_target u8
//!   [| base_len u16 | base | method_len u16 | method] | payload (the rest)
//! ```
//!
//! Invariant: `decode` returns a value or an error for any bytes, never panics, and accepts exactly what
//! `encode` writes (a target is a valid artifact base and method name, the publisher at most
//! [`PUBLISHER_BYTES_MAX`] bytes of UTF-8).

use crate::records::Record;
use kvstore::{Artifact, ArtifactBase, Name};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The message format this code writes and reads.
pub const MESSAGE_FORMAT: u8 = 1;
/// Longest publisher text (`node/artifact` or `api`).
pub const PUBLISHER_BYTES_MAX: usize = 512;

/// One subscription, by the artifact base and method that receive its messages.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subscriber {
    pub base: ArtifactBase,
    pub method: Name,
}

impl fmt::Display for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.method)
    }
}

/// A published message as stored at `messages/{topic}/{id}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageRecord {
    /// `node/artifact` for a slice's publish, `api` for the management API's.
    pub publisher: String,
    /// The publisher's wall clock when it published.
    pub published_at_ms: u64,
    /// Only this subscription gets the message (a dead letter's replay); `None`: every subscription.
    pub target: Option<Subscriber>,
    pub payload: Vec<u8>,
}

/// Why stored bytes are not a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageError(pub String);

impl fmt::Display for MessageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message record: {}", self.0)
    }
}

impl std::error::Error for MessageError {}

impl MessageRecord {
    /// The stored bytes. A publisher longer than [`PUBLISHER_BYTES_MAX`] is cut at a character boundary.
    pub fn encode(&self) -> Vec<u8> {
        let mut end = self.publisher.len().min(PUBLISHER_BYTES_MAX);
        while !self.publisher.is_char_boundary(end) {
            end -= 1;
        }
        let publisher = &self.publisher.as_bytes()[..end];
        let mut out = Vec::with_capacity(self.payload.len() + publisher.len() + 64);
        out.push(MESSAGE_FORMAT);
        put_text(&mut out, publisher);
        out.extend_from_slice(&self.published_at_ms.to_le_bytes());
        match &self.target {
            None => out.push(0),
            Some(target) => {
                out.push(1);
                put_text(&mut out, target.base.to_string().as_bytes());
                put_text(&mut out, target.method.as_str().as_bytes());
            }
        }
        out.extend_from_slice(&self.payload);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<MessageRecord, MessageError> {
        let mut reader = Reader { bytes, at: 0 };
        let format = reader.take(1)?[0];
        if format != MESSAGE_FORMAT {
            return Err(MessageError(format!("unknown format {format}")));
        }
        let publisher = reader.text(PUBLISHER_BYTES_MAX)?.to_owned();
        let published_at_ms = u64::from_le_bytes(reader.array()?);
        let target = match reader.take(1)?[0] {
            0 => None,
            1 => {
                let base = reader.text(kvstore::KEY_BYTES_MAX)?;
                let base = ArtifactBase::parse(base).map_err(|e| MessageError(format!("target: {e}")))?;
                let method = Name::parse(reader.text(kvstore::KEY_BYTES_MAX)?)
                    .map_err(|e| MessageError(format!("target method: {e}")))?;
                Some(Subscriber { base, method })
            }
            other => return Err(MessageError(format!("target flag {other}"))),
        };
        Ok(MessageRecord { publisher, published_at_ms, target, payload: bytes[reader.at..].to_vec() })
    }
}

fn put_text(out: &mut Vec<u8>, text: &[u8]) {
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&text[..usize::from(len)]);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MessageError> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or_else(|| MessageError(format!("cut short at byte {}", self.at)))?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], MessageError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn text(&mut self, max: usize) -> Result<&'a str, MessageError> {
        let len = usize::from(u16::from_le_bytes(self.array()?));
        if len > max {
            return Err(MessageError(format!("a text of {len} bytes, over {max}")));
        }
        std::str::from_utf8(self.take(len)?).map_err(|_| MessageError("a text is not UTF-8".into()))
    }
}

/// `topics/{topic}/{base}/{method}`: which artifact version receives the subscription's messages, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    #[serde(with = "crate::text")]
    pub artifact: Artifact,
    pub delivery: vocab::Delivery,
}

impl Record for SubscriptionRecord {
    const KIND: &'static str = "subscription";
}

/// `cursors/...`: every message of the topic with a version below `next` is done for the subscription
/// (acknowledged or dead-lettered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorRecord {
    pub next: u64,
}

impl Record for CursorRecord {
    const KIND: &'static str = "cursor";
}

/// The subscriber a dead letter failed at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadSubscriber {
    pub artifact: String,
    pub method: String,
}

/// `deadletters/{id}`: a message a subscriber did not take after its attempts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterRecord {
    pub id: String,
    pub topic: String,
    pub subscriber: DeadSubscriber,
    pub message_id: String,
    pub publisher: String,
    pub published_at_ms: u64,
    pub attempts: u32,
    pub last_error: String,
    pub failed_at_ms: u64,
    pub payload_base64: String,
}

impl Record for DeadLetterRecord {
    const KIND: &'static str = "dead letter";
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(BASE64[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional); `None` for anything else.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let v = BASE64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    (bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn message(target: bool) -> MessageRecord {
        MessageRecord {
            publisher: "node-1/org.x:inbox:1.0.0".into(),
            published_at_ms: 1_700_000_000_000,
            target: target.then(|| Subscriber {
                base: ArtifactBase::parse("org.x:inbox").unwrap(),
                method: Name::parse("work").unwrap(),
            }),
            payload: b"hello".to_vec(),
        }
    }

    #[test]
    fn messages_round_trip_with_and_without_a_target() {
        for target in [false, true] {
            let m = message(target);
            assert_eq!(MessageRecord::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn cut_or_unknown_messages_are_errors() {
        let bytes = message(true).encode();
        for len in 0..bytes.len() - 5 {
            assert!(MessageRecord::decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut other = bytes.clone();
        other[0] = 2;
        assert!(MessageRecord::decode(&other).is_err());
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        for (plain, coded) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE=")]
        {
            assert_eq!(base64_encode(plain.as_bytes()), coded);
            assert_eq!(base64_decode(coded).unwrap(), plain.as_bytes());
        }
        assert!(base64_decode("Zm9v!").is_none());
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = MessageRecord::decode(&bytes);
        }

        #[test]
        fn encoded_messages_decode_to_themselves(payload in proptest::collection::vec(any::<u8>(), 0..200),
                                                 at in any::<u64>(), publisher in "[a-z/:.0-9-]{0,40}") {
            let m = MessageRecord { publisher, published_at_ms: at, target: None, payload };
            prop_assert_eq!(MessageRecord::decode(&m.encode()).unwrap(), m);
        }

        #[test]
        fn base64_round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            prop_assert_eq!(base64_decode(&base64_encode(&bytes)).unwrap(), bytes);
        }
    }
}
