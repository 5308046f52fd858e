//! The messages replicas exchange, and their encoding (rkyv archives, validated before use; `decode` never
//! panics on any input).
//!
//! Invariants: `decode` refuses input over `MESSAGE_BYTES_MAX` before touching it, copies it into an aligned
//! buffer (rkyv needs alignment), validates the archive, then checks every bound below (key and value sizes,
//! list lengths, partition numbers), so a decoded message is within the limits the core relies on.

use rkyv::util::AlignedVec;
use rkyv::{Archive, Deserialize, Serialize};

use crate::store::{Entry, Version};
use crate::{KEY_BYTES_MAX, PARTITIONS, VALUE_BYTES_MAX};

/// The largest encoded message: one value and 64 KiB of everything else.
pub const MESSAGE_BYTES_MAX: usize = VALUE_BYTES_MAX + 64 * 1024;
/// The most (key, version) pairs one `Versions` page carries.
pub const PAGE_KEYS_MAX: usize = 100;
/// The most keys one `Pull` asks for.
pub const PULL_KEYS_MAX: usize = 16;

/// One partition's digest.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionDigest {
    pub partition: u32,
    pub digest: u64,
}

/// One key's version in a `Versions` page.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct KeyVersion {
    pub key: String,
    pub version: Version,
}

/// A message between replicas. Every variant is bounded: at most one value (`VALUE_BYTES_MAX`) and lists of
/// at most a few thousand keys.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A coordinator asks a replica to store `entry` under `key` (a put or a tombstone).
    Put { op: u64, key: String, entry: Entry },
    /// The replica holds `version` of `key` or a newer one.
    PutAck { op: u64, key: String, version: Version },
    /// A coordinator asks a replica for its entry of `key`.
    Get { op: u64, key: String },
    /// The replica's entry of `key` (`None`: it holds nothing).
    GetReply { op: u64, key: String, entry: Option<Entry> },
    /// Store `entry` if newer; no reply. `read_repair` tells a read's repair from anti-entropy's.
    Repair { key: String, entry: Entry, read_repair: bool },
    /// The sender's digests of partitions both hold or replicate. `reply` is false on the scheduled
    /// exchange (the receiver answers with its own digests of the same partitions) and true on the answer.
    Digests { digests: Vec<PartitionDigest>, reply: bool },
    /// Please send a page of `partition`'s (key, version) pairs after `after`.
    VersionsRequest { partition: u32, after: Option<String> },
    /// A page of `partition`'s pairs with keys after `after`, in key order; `complete` when nothing follows.
    Versions { partition: u32, after: Option<String>, keys: Vec<KeyVersion>, complete: bool },
    /// Please send these entries of `partition` (answered with one `Repair` each).
    Pull { partition: u32, keys: Vec<String> },
}

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
        match rkyv::to_bytes::<rkyv::rancor::Error>(self) {
            Ok(bytes) => bytes.into_vec(),
            // Serialising plain owned data into memory has no failure mode short of allocation failure.
            Err(error) => unreachable!("serialising a dht message failed: {error}"),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(DecodeError {
                reason: format!("{} bytes, over the limit of {MESSAGE_BYTES_MAX}", bytes.len()),
            });
        }
        let mut aligned = AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        let message = rkyv::from_bytes::<Message, rkyv::rancor::BoxedError>(&aligned)
            .map_err(|error| DecodeError { reason: format!("{} bytes, not a valid archive: {error}", bytes.len()) })?;
        message.check().map_err(|reason| DecodeError { reason })?;
        Ok(message)
    }

    /// Checks every bound the core relies on.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Message::Put { key, entry, .. } | Message::Repair { key, entry, .. } => {
                check_key(key)?;
                check_entry(entry)
            }
            Message::PutAck { key, .. } | Message::Get { key, .. } => check_key(key),
            Message::GetReply { key, entry, .. } => {
                check_key(key)?;
                entry.as_ref().map_or(Ok(()), check_entry)
            }
            Message::Digests { digests, .. } => {
                if digests.len() > PARTITIONS as usize {
                    return Err(format!("{} digests, more than the {PARTITIONS} partitions", digests.len()));
                }
                digests.iter().try_for_each(|d| check_partition(d.partition))
            }
            Message::VersionsRequest { partition, after } => {
                check_partition(*partition)?;
                after.as_deref().map_or(Ok(()), check_key)
            }
            Message::Versions { partition, after, keys, .. } => {
                check_partition(*partition)?;
                after.as_deref().map_or(Ok(()), check_key)?;
                if keys.len() > PAGE_KEYS_MAX {
                    return Err(format!("a page of {} keys, over {PAGE_KEYS_MAX}", keys.len()));
                }
                keys.iter().try_for_each(|k| check_key(&k.key))
            }
            Message::Pull { partition, keys } => {
                check_partition(*partition)?;
                if keys.len() > PULL_KEYS_MAX {
                    return Err(format!("a pull of {} keys, over {PULL_KEYS_MAX}", keys.len()));
                }
                keys.iter().try_for_each(|k| check_key(k))
            }
        }
    }
}

fn check_key(key: &str) -> Result<(), String> {
    if key.len() > KEY_BYTES_MAX {
        return Err(format!("a key of {} bytes, over {KEY_BYTES_MAX}", key.len()));
    }
    Ok(())
}

fn check_entry(entry: &Entry) -> Result<(), String> {
    match &entry.value {
        Some(value) if value.len() > VALUE_BYTES_MAX => {
            Err(format!("a value of {} bytes, over {VALUE_BYTES_MAX}", value.len()))
        }
        _ => Ok(()),
    }
}

fn check_partition(partition: u32) -> Result<(), String> {
    if partition >= PARTITIONS {
        return Err(format!("partition {partition} out of range"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Message> {
        let entry = Entry { version: Version { stamp: 5, writer: 9 }, value: Some(vec![1, 2, 3]) };
        vec![
            Message::Put { op: 1, key: "k".into(), entry: entry.clone() },
            Message::PutAck { op: 1, key: "k".into(), version: entry.version },
            Message::Get { op: 2, key: "k".into() },
            Message::GetReply { op: 2, key: "k".into(), entry: None },
            Message::Repair {
                key: "k".into(),
                entry: Entry { version: entry.version, value: None },
                read_repair: true,
            },
            Message::Digests { digests: vec![PartitionDigest { partition: 3, digest: 77 }], reply: false },
            Message::VersionsRequest { partition: 3, after: Some("a".into()) },
            Message::Versions {
                partition: 3,
                after: None,
                keys: vec![KeyVersion { key: "a".into(), version: entry.version }],
                complete: true,
            },
            Message::Pull { partition: 3, keys: vec!["a".into()] },
        ]
    }

    #[test]
    fn round_trips() {
        for message in samples() {
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
    }

    #[test]
    fn refuses_out_of_bounds() {
        let long_key = Message::Get { op: 1, key: "x".repeat(KEY_BYTES_MAX + 1) };
        assert!(Message::decode(&long_key.encode()).is_err());
        let bad_partition = Message::Pull { partition: PARTITIONS, keys: vec![] };
        assert!(Message::decode(&bad_partition.encode()).is_err());
        assert!(Message::decode(&vec![0; MESSAGE_BYTES_MAX + 1]).is_err());
        let big = Message::Repair {
            key: "k".into(),
            entry: Entry { version: Version::default(), value: Some(vec![0; VALUE_BYTES_MAX]) },
            read_repair: false,
        };
        let encoded = big.encode();
        assert!(encoded.len() <= MESSAGE_BYTES_MAX);
        assert!(Message::decode(&encoded).is_ok());
    }

    #[test]
    fn the_largest_lists_fit_the_message_limit() {
        let key = "k".repeat(KEY_BYTES_MAX);
        let version = Version { stamp: u64::MAX, writer: u64::MAX };
        let page = Message::Versions {
            partition: PARTITIONS - 1,
            after: Some(key.clone()),
            keys: (0..PAGE_KEYS_MAX).map(|_| KeyVersion { key: key.clone(), version }).collect(),
            complete: false,
        };
        let digests = Message::Digests {
            digests: (0..PARTITIONS).map(|partition| PartitionDigest { partition, digest: u64::MAX }).collect(),
            reply: true,
        };
        let pull = Message::Pull { partition: 0, keys: vec![key.clone(); PULL_KEYS_MAX] };
        for message in [page, digests, pull] {
            // Everything but a value fits in the 64 KiB beside it.
            assert!(message.encode().len() <= 64 * 1024, "{} bytes", message.encode().len());
            assert_eq!(Message::decode(&message.encode()), Ok(message));
        }
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_messages(index in 0usize..9, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = samples()[index].encode();
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] ^= byte;
            }
            if let Ok(message) = Message::decode(&bytes) {
                prop_assert!(message.check().is_ok());
            }
        }
    }
}
