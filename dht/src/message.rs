//! The messages replicas exchange, and their encoding (rkyv archives, validated before use; `decode` never
//! panics on any input).

/// A message between replicas. Every variant is bounded: at most one value (`VALUE_BYTES_MAX`) and lists of
/// at most a few thousand keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub reason: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dht message does not decode: {}", self.reason)
    }
}

impl std::error::Error for DecodeError {}

impl Message {
    pub fn encode(&self) -> Vec<u8> {
        unimplemented!("message encoding")
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        let _ = bytes;
        unimplemented!("message decoding")
    }
}
