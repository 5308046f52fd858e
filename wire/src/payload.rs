//! rkyv payloads: serialise a message, and validate an archive before turning it back into a value.
//!
//! Received bytes are copied into an aligned buffer first (rkyv needs alignment; a frame's payload sits at
//! any offset of the receive buffer), then checked with bytecheck, then deserialised. No field of an
//! unchecked archive is ever read.

use rkyv::api::high::{HighDeserializer, HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;

/// A payload that is not a valid archive of the expected type.
#[derive(Debug)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid payload: {}", self.0)
    }
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
    T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>> + Deserialize<T, HighDeserializer<rancor::Error>>,
{
    let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    rkyv::from_bytes::<T, rancor::Error>(&aligned).map_err(|err| DecodeError(err.to_string()))
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
