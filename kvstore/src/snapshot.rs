//! Snapshots: the whole replicated state as bytes, for catch-up transfer and for disk.
//!
//! Layout (little endian):
//!
//! ```text
//! magic "AKVSNAP\0" (8) | format u32 (4) | body length u64 (8) | crc32 of body u32 (4) | body
//! ```
//!
//! The body is an rkyv archive of every entry (canonical key, value, version) in key order, the revision and
//! the applied slot. Restoring checks, in order: header, length, checksum, archive validity, and then the
//! state's own invariants (keys parse and ascend, versions in `1..=revision`, size limits). Any failure is an
//! [`Error`], never a panic, and nothing is half-restored.

use crate::checksum::crc32;
use crate::command::VALUE_BYTES_MAX;
use crate::error::Error;
use crate::key::AetherKey;
use crate::revision::Revision;
use crate::state::{Entry, KvState, ENTRIES_MAX, STORE_BYTES_MAX};
use rkyv::rancor;
use rkyv::util::AlignedVec;
use std::collections::BTreeMap;

const MAGIC: [u8; 8] = *b"AKVSNAP\0";
/// The snapshot format this build writes and reads. Bump it when [`SnapshotWire`] changes shape.
pub const SNAPSHOT_FORMAT: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 8 + 4;

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotWire {
    revision: u64,
    applied_slot: Option<u64>,
    entries: Vec<EntryWire>,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct EntryWire {
    key: String,
    value: Vec<u8>,
    version: u64,
}

/// Serialises `state` into snapshot bytes.
pub fn encode(state: &KvState) -> Result<Vec<u8>, Error> {
    let wire = SnapshotWire {
        revision: state.revision().get(),
        applied_slot: state.applied_slot(),
        entries: state.entries().map(|(key_str, entry)| entry_wire(key_str, entry)).collect(),
    };
    let body = rkyv::to_bytes::<rancor::Error>(&wire).map_err(|e| Error::Encode(e.to_string()))?;
    let mut bytes = Vec::with_capacity(HEADER_BYTES + body.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&crc32(&body).to_le_bytes());
    bytes.extend_from_slice(&body);
    Ok(bytes)
}

fn entry_wire(key_str: &str, entry: &Entry) -> EntryWire {
    EntryWire { key: key_str.to_owned(), value: entry.value().to_vec(), version: entry.version().get() }
}

/// Restores a state from snapshot bytes, validating everything.
pub fn decode(bytes: &[u8]) -> Result<KvState, Error> {
    let body = check_header(bytes)?;
    let mut aligned = AlignedVec::<16>::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let wire = rkyv::access::<ArchivedSnapshotWire, rancor::BoxedError>(&aligned)
        .map_err(|e| corrupt(format!("not a valid snapshot archive ({} bytes): {e}", body.len())))?;
    let revision = Revision(wire.revision.to_native());
    let applied_slot = wire.applied_slot.as_ref().map(|slot| slot.to_native());
    let entries = restore_entries(&wire.entries, revision)?;
    let state = KvState::from_validated(entries, revision, applied_slot);
    if state.stored_bytes() > STORE_BYTES_MAX {
        return Err(corrupt(format!("{} bytes of keys and values, over the store limit", state.stored_bytes())));
    }
    Ok(state)
}

fn check_header(bytes: &[u8]) -> Result<&[u8], Error> {
    let Some((header, body)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(corrupt(format!("{} bytes, shorter than the header", bytes.len())));
    };
    let (magic, rest) = header.split_at(8);
    let (format, rest) = rest.split_at(4);
    let (body_len, crc) = rest.split_at(8);
    if magic != MAGIC {
        return Err(corrupt("bad magic; not a kvstore snapshot".to_owned()));
    }
    let format = u32::from_le_bytes(format.try_into().unwrap_or_default());
    if format != SNAPSHOT_FORMAT {
        return Err(Error::UnsupportedSnapshotFormat { found: format, supported: SNAPSHOT_FORMAT });
    }
    let body_len = u64::from_le_bytes(body_len.try_into().unwrap_or_default());
    if body_len != body.len() as u64 {
        return Err(corrupt(format!("header says {body_len} body bytes, found {}", body.len())));
    }
    if u32::from_le_bytes(crc.try_into().unwrap_or_default()) != crc32(body) {
        return Err(corrupt("checksum mismatch".to_owned()));
    }
    Ok(body)
}

fn restore_entries(entries: &[ArchivedEntryWire], revision: Revision) -> Result<BTreeMap<String, Entry>, Error> {
    if entries.len() > ENTRIES_MAX {
        return Err(corrupt(format!("{} entries, over the limit of {ENTRIES_MAX}", entries.len())));
    }
    let mut restored = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for archived in entries {
        let key_str = archived.key.as_str();
        if previous.is_some_and(|previous| previous >= key_str) {
            return Err(corrupt(format!("key {key_str:?} is out of order or repeated")));
        }
        let entry = restore_entry(archived, revision)?;
        restored.insert(key_str.to_owned(), entry);
        previous = Some(key_str);
    }
    Ok(restored)
}

fn restore_entry(archived: &ArchivedEntryWire, revision: Revision) -> Result<Entry, Error> {
    let key_str = archived.key.as_str();
    let key = AetherKey::parse(key_str).map_err(|e| corrupt(e.to_string()))?;
    debug_assert_eq!(key.to_string(), key_str, "the key parser accepted a non-canonical key");
    let version = Revision(archived.version.to_native());
    if version == Revision::ZERO || version > revision {
        return Err(corrupt(format!("key {key_str:?} has version {version}, outside 1..={revision}")));
    }
    let value = archived.value.as_slice();
    if value.len() > VALUE_BYTES_MAX {
        return Err(corrupt(format!("key {key_str:?} has a value of {} bytes, over the limit", value.len())));
    }
    Ok(Entry::new(key, std::sync::Arc::from(value), version))
}

fn corrupt(reason: String) -> Error {
    Error::CorruptSnapshot { reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn sample_state() -> KvState {
        let mut state = KvState::new();
        let commands = ["user/a", "slices/n1/g:a:1.0.0", "routes/GET/echo/{m}"].map(|k| {
            Command::Put { key: AetherKey::parse(k).unwrap(), value: k.as_bytes().to_vec() }.encode().unwrap()
        });
        state.apply(7, &commands, &mut |_| {}).unwrap();
        state
    }

    #[test]
    fn round_trip_restores_everything() {
        let state = sample_state();
        let restored = decode(&encode(&state).unwrap()).unwrap();
        assert_eq!(restored, state);
        assert_eq!(restored.applied_slot(), Some(7));
        assert_eq!(restored.revision(), Revision(3));
    }

    #[test]
    fn an_empty_state_round_trips() {
        let state = KvState::new();
        assert_eq!(decode(&encode(&state).unwrap()).unwrap(), state);
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let bytes = encode(&sample_state()).unwrap();
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x10;
            assert!(decode(&damaged).is_err(), "flip at byte {index} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_detected() {
        let bytes = encode(&sample_state()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn an_unknown_format_is_named() {
        let mut bytes = encode(&sample_state()).unwrap();
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(decode(&bytes), Err(Error::UnsupportedSnapshotFormat { found: 9, supported: 1 }));
    }

    fn with_body(wire: &SnapshotWire) -> Vec<u8> {
        let body = rkyv::to_bytes::<rancor::Error>(wire).unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_FORMAT.to_le_bytes());
        bytes.extend_from_slice(&(body.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32(&body).to_le_bytes());
        bytes.extend_from_slice(&body);
        bytes
    }

    fn entry(key: &str, version: u64) -> EntryWire {
        EntryWire { key: key.to_owned(), value: vec![], version }
    }

    #[test]
    fn well_formed_but_invalid_states_are_refused() {
        let cases = [
            (vec![entry("user/b", 1), entry("user/a", 2)], "out of order"),
            (vec![entry("user/a", 1), entry("user/a", 2)], "out of order"),
            (vec![entry("user/a", 0)], "outside"),
            (vec![entry("user/a", 3)], "outside"),
            (vec![entry("routes/GET//x", 1)], "route path"),
        ];
        for (entries, expected) in cases {
            let bytes = with_body(&SnapshotWire { revision: 2, applied_slot: None, entries });
            let err = decode(&bytes).unwrap_err();
            assert!(err.to_string().contains(expected), "{err}");
        }
    }
}
