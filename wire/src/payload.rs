//! rkyv payloads: serialise a message, and validate an archive before turning it back into a value.
//!
//! Received bytes are copied into an aligned buffer first (rkyv needs alignment; a frame's payload sits at
//! any offset of the receive buffer), then checked with bytecheck, then deserialised. No field of an
//! unchecked archive is ever read.
//!
//! Validation errors are collected with rancor's `BoxedError` in every build: its general `Error` keeps no
//! detail in release builds ("failed without error information"), which told an operator nothing. A
//! [`DecodeError`] says what was being decoded, how many bytes, that they are malformed, and where the check
//! failed.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;

/// A payload that is not a valid archive of the expected type.
#[derive(Debug)]
pub struct DecodeError {
    /// The message type that was expected (`Hello`, `InvokeRequest`, ...).
    pub what: &'static str,
    /// Length of the payload.
    pub bytes: usize,
    /// Where validation failed, as rkyv reports it.
    pub reason: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {} payload ({} bytes, not a valid archive of that message): {}",
            self.what, self.bytes, self.reason
        )
    }
}

/// The last path segment of a type's name, generics kept: `wire::hello::Hello` becomes `Hello`.
fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    let outer_end = full.find('<').unwrap_or(full.len());
    let start = full[..outer_end].rfind("::").map_or(0, |at| at + 2);
    &full[start..]
}

impl std::error::Error for DecodeError {}

/// Serialises `value` into an rkyv archive.
pub fn encode<T>(value: &T) -> Vec<u8>
where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>>,
{
    match rkyv::to_bytes::<rancor::Error>(value) {
        Ok(bytes) => bytes.into_vec(),
        // Serialising an owned in-memory value only fails on allocation failure, which aborts anyway.
        Err(err) => panic!("rkyv serialisation of an in-memory value failed: {err}"),
    }
}

/// Validates `bytes` as an archive of `T` and deserialises it.
pub fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::BoxedError>>
        + Deserialize<T, HighDeserializer<rancor::BoxedError>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::BoxedError>(&aligned).map_err(|err| {
        let detail = err.to_string();
        let reason = if detail.trim().is_empty() { "validation failed".to_owned() } else { detail };
        DecodeError { what: short_type_name::<T>(), bytes: bytes.len(), reason }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Archive, Serialize, Deserialize, Debug, PartialEq, Clone)]
    struct Sample {
        id: u64,
        name: String,
        items: Vec<Vec<u8>>,
        flag: Option<bool>,
    }

    fn sample() -> Sample {
        Sample { id: 7, name: "node-1".into(), items: vec![vec![1, 2], vec![]], flag: Some(true) }
    }

    #[test]
    fn round_trip() {
        assert_eq!(decode::<Sample>(&encode(&sample())).unwrap(), sample());
    }

    #[test]
    fn unaligned_input_still_decodes() {
        let bytes = encode(&sample());
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        assert_eq!(decode::<Sample>(&shifted[1..]).unwrap(), sample());
    }

    #[test]
    fn truncated_archive_is_an_error() {
        let bytes = encode(&sample());
        assert!(decode::<Sample>(&bytes[..bytes.len() - 3]).is_err());
    }

    #[test]
    fn errors_say_what_was_decoded_and_why() {
        let bytes = encode(&sample());
        let err = decode::<Sample>(&bytes[..bytes.len() - 3]).unwrap_err();
        assert_eq!((err.what, err.bytes), ("Sample", bytes.len() - 3));
        let text = err.to_string();
        assert!(text.starts_with(&format!("malformed Sample payload ({} bytes", bytes.len() - 3)), "{text}");
        assert!(!text.contains("without error information"), "{text}");
        assert!(!err.reason.is_empty());
        let err = decode::<crate::Hello>(&[0xff; 40]).unwrap_err();
        assert!(err.to_string().starts_with("malformed Hello payload (40 bytes"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<Sample>(&bytes);
        }

        #[test]
        fn bit_flips_never_panic(pos in 0usize..64, flip in 1u8..=255) {
            let mut bytes = encode(&sample());
            let at = pos % bytes.len();
            bytes[at] ^= flip;
            let _ = decode::<Sample>(&bytes);
        }
    }
}
