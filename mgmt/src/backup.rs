//! Backups of the replicated KV: the file format and `POST /api/backup`.
//!
//! A backup is the whole store (every key: user data, blueprints, slice and instance records, leases) as
//! kvstore's snapshot serialisation, taken on the node's event loop right after a linearizable read barrier
//! applied, so it is the state at one applied slot and holds every write acknowledged before the request.
//!
//! File layout (little endian):
//!
//! ```text
//! magic "AETHERBK" (8) | format u32 (4) | slot u64 (8) | store length u64 (8) | SHA-256 of the store (32) | store
//! ```
//!
//! Invariants: [`decode`] accepts exactly what [`encode`] writes (magic, format, length and sum all checked,
//! nothing trailing) and never panics on any input; a file is at most [`BACKUP_BYTES_MAX`] bytes.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::Response;
use sha2::{Digest, Sha256};

pub const MAGIC: [u8; 8] = *b"AETHERBK";
/// The format this build writes and reads.
pub const BACKUP_FORMAT: u32 = 1;
pub const HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 32;
/// The largest backup a node sends or restores: a full store (`kvstore::STORE_BYTES_MAX` of keys and values)
/// plus the snapshot's per-entry framing, with room to spare.
pub const BACKUP_BYTES_MAX: usize = 2 * kvstore::STORE_BYTES_MAX;

/// A decoded backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// The slot the store was taken at (the last one applied).
    pub slot: u64,
    /// kvstore snapshot bytes.
    pub store: Vec<u8>,
    pub sha256: [u8; 32],
}

/// The SHA-256 of `bytes` in lower-case hex.
pub fn hex(sum: &[u8; 32]) -> String {
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// The backup file for `store` taken at `slot`.
pub fn encode(slot: u64, store: &[u8]) -> Vec<u8> {
    let sum: [u8; 32] = Sha256::digest(store).into();
    let mut bytes = Vec::with_capacity(HEADER_BYTES + store.len());
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&BACKUP_FORMAT.to_le_bytes());
    bytes.extend_from_slice(&slot.to_le_bytes());
    bytes.extend_from_slice(&(store.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&sum);
    bytes.extend_from_slice(store);
    bytes
}

/// Reads a backup file, checking everything but the store bytes' own structure (kvstore checks that when it
/// restores them).
pub fn decode(bytes: &[u8]) -> Result<Backup, String> {
    if bytes.len() > BACKUP_BYTES_MAX {
        return Err(format!("{} bytes, over the backup limit of {BACKUP_BYTES_MAX}", bytes.len()));
    }
    let Some((header, store)) = bytes.split_first_chunk::<HEADER_BYTES>() else {
        return Err(format!("{} bytes, shorter than the {HEADER_BYTES}-byte backup header: truncated", bytes.len()));
    };
    let (magic, rest) = header.split_at(8);
    if magic != MAGIC {
        return Err("not an Aether backup (the file does not start with AETHERBK)".to_owned());
    }
    let (format, rest) = rest.split_at(4);
    let format = u32::from_le_bytes(format.try_into().unwrap_or_default());
    if format != BACKUP_FORMAT {
        return Err(format!("backup format {format}; this build reads format {BACKUP_FORMAT}"));
    }
    let (slot, rest) = rest.split_at(8);
    let (length, sum) = rest.split_at(8);
    let slot = u64::from_le_bytes(slot.try_into().unwrap_or_default());
    let length = u64::from_le_bytes(length.try_into().unwrap_or_default());
    if length != store.len() as u64 {
        return Err(format!(
            "the header says {length} store bytes, the file holds {}: truncated or padded",
            store.len()
        ));
    }
    let sha256: [u8; 32] = sum.try_into().unwrap_or_default();
    let actual: [u8; 32] = Sha256::digest(store).into();
    if actual != sha256 {
        return Err(format!(
            "SHA-256 mismatch: the header says {}, the store bytes hash to {}",
            hex(&sha256),
            hex(&actual)
        ));
    }
    Ok(Backup { slot, store: store.to_vec(), sha256 })
}

/// `POST /api/backup`: the backup file, with its slot and sum in `Aether-Backup-Slot` and
/// `Aether-Backup-Sha256`.
pub fn backup(backend: &dyn Backend) -> Result<Response, ApiError> {
    let (slot, store) = backend.backup()?;
    if store.len() + HEADER_BYTES > BACKUP_BYTES_MAX {
        return Err(ApiError::new(
            507,
            "backup_too_large",
            format!("the store serialises to {} bytes, over the backup limit of {BACKUP_BYTES_MAX}", store.len()),
        ));
    }
    let file = encode(slot, &store);
    let sum: [u8; 32] = Sha256::digest(&store).into();
    let mut response = Response::document(200, "application/octet-stream", file);
    response.headers.push(("Aether-Backup-Slot".to_owned(), slot.to_string()));
    response.headers.push(("Aether-Backup-Sha256".to_owned(), hex(&sum)));
    response.headers.push(("Content-Disposition".to_owned(), format!("attachment; filename=\"aether-{slot}.backup\"")));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::StoreBackend;

    #[test]
    fn a_backup_round_trips() {
        let file = encode(42, b"store bytes");
        let backup = decode(&file).unwrap();
        assert_eq!((backup.slot, &backup.store[..]), (42, &b"store bytes"[..]));
        assert_eq!(backup.sha256, <[u8; 32]>::from(Sha256::digest(b"store bytes")));
    }

    #[test]
    fn damaged_files_are_refused_with_the_reason() {
        let file = encode(7, b"some store");
        let refused = |bytes: &[u8], reason: &str| {
            let error = decode(bytes).unwrap_err();
            assert!(error.contains(reason), "{error:?} should say {reason:?}");
        };
        refused(&file[..HEADER_BYTES - 1], "truncated");
        refused(&file[..file.len() - 1], "truncated or padded");
        refused(&[&file[..], b"x"].concat(), "truncated or padded");
        refused(b"", "shorter than");
        let mut magic = file.clone();
        magic[0] = b'X';
        refused(&magic, "not an Aether backup");
        let mut version = file.clone();
        version[8] = 2;
        refused(&version, "backup format 2");
        let mut body = file.clone();
        let last = body.len() - 1;
        body[last] ^= 1;
        refused(&body, "SHA-256 mismatch");
        let mut length = file.clone();
        length[20] = 200;
        refused(&length, "the header says");
    }

    #[test]
    fn post_backup_sends_the_store_with_its_slot_and_sum() {
        let backend = StoreBackend::with(&[("user/a", "1"), ("user/b", "2")]);
        let response = backend.call("POST", "api/backup", "");
        assert_eq!(response.status, 200, "{:?}", response.body);
        let (content_type, file) = response.text.clone().unwrap();
        assert_eq!(content_type, "application/octet-stream");
        let backup = decode(&file).unwrap();
        let header = |name: &str| response.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(header("Aether-Backup-Slot"), Some(backup.slot.to_string()));
        assert_eq!(header("Aether-Backup-Sha256"), Some(hex(&backup.sha256)));
        let restored = kvstore::snapshot::decode(&backup.store).unwrap();
        let keys: Vec<String> = restored.list("").map(|e| e.key().to_string()).collect();
        assert_eq!(keys, ["user/a", "user/b"]);
    }

    #[test]
    fn a_backup_is_a_post_only() {
        let backend = StoreBackend::with(&[("user/a", "1")]);
        assert_eq!(backend.call("GET", "api/backup", "").status, 405);
        assert_eq!(crate::access_for("POST", "api/backup"), crate::Access::Role(crate::Role::Admin));
    }
}
