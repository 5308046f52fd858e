//! The `Idempotency-Key` header of KV writes: a client's own name for one request, so a retry after a lost
//! answer (a 504, a dropped connection) cannot apply the write twice.
//!
//! What it owns: parsing and bounding the header, and deriving from it the request's consensus command id.
//! Invariants: the id is a pure function of (the caller's API key id, the header value), computed the same
//! way on every node and in every build (SHA-256, not a process-seeded hash), so a retry sent to any node
//! names the same command. Each request key is its own session (`client` from the hash, `seq` 0): the
//! session table remembers it as applied for as long as it keeps that session (its size is bounded; the
//! least recently applied sessions are forgotten first).

use crate::error::ApiError;
use crate::server::Request;
use sha2::{Digest, Sha256};

/// The header's name.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Longest accepted key (a UUID is 36 characters).
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;

/// The consensus command id a keyed write is submitted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub client: u64,
    pub seq: u64,
}

impl RequestKey {
    /// The id for `key` sent by the holder of API key `scope` (empty when the request carries none).
    pub fn derive(scope: &str, key: &str) -> RequestKey {
        let mut hash = Sha256::new();
        hash.update(b"aether-idempotency-v1\0");
        hash.update(scope.as_bytes());
        hash.update([0u8]);
        hash.update(key.as_bytes());
        let digest = hash.finalize();
        let mut client = [0u8; 8];
        client.copy_from_slice(&digest[..8]);
        RequestKey { client: u64::from_le_bytes(client), seq: 0 }
    }
}

/// The request's key, if it sent one: 1 to 128 visible ASCII characters, else 400.
pub fn request_key(req: &Request) -> Result<Option<RequestKey>, ApiError> {
    let Some(value) = req.header(IDEMPOTENCY_HEADER) else { return Ok(None) };
    if value.is_empty() || value.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(ApiError::bad_request(format!(
            "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_BYTES_MAX} characters, not {}",
            value.len()
        )));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request("Idempotency-Key must be visible ASCII characters (no spaces)"));
    }
    Ok(Some(RequestKey::derive(&caller_scope(req), value)))
}

/// The id of the caller's API key, so two callers' keys never name the same request; empty without one.
fn caller_scope(req: &Request) -> String {
    req.header("authorization")
        .and_then(|v| v.trim().split_once(' '))
        .and_then(|(_, token)| crate::keys::key_id(token.trim()))
        .map(|id| id.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_header(value: &str) -> Request {
        Request { headers: vec![(IDEMPOTENCY_HEADER.to_string(), value.to_string())], ..Request::default() }
    }

    #[test]
    fn the_same_key_names_the_same_command_and_different_keys_differ() {
        let a = request_key(&with_header("order-17")).unwrap().unwrap();
        assert_eq!(a, request_key(&with_header("order-17")).unwrap().unwrap());
        assert_ne!(a, request_key(&with_header("order-18")).unwrap().unwrap());
        assert_eq!(a.seq, 0);
        // Fixed across builds: a node of another build must derive the same id.
        assert_eq!(RequestKey::derive("", "order-17"), a);
        assert_ne!(RequestKey::derive("0123456789abcdef", "order-17"), a);
    }

    #[test]
    fn no_header_is_no_key_and_bad_keys_are_refused() {
        assert_eq!(request_key(&Request::default()).unwrap(), None);
        for bad in [String::new(), "a".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1), "two words".into(), "é".into()] {
            let e = request_key(&with_header(&bad)).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
        assert!(request_key(&with_header(&"k".repeat(IDEMPOTENCY_KEY_BYTES_MAX))).unwrap().is_some());
    }

    #[test]
    fn callers_with_different_api_keys_get_different_commands() {
        let token = |id: &str| format!("Bearer aek_{id}_{}", "0".repeat(64));
        let mut a = with_header("k1");
        a.headers.push(("authorization".into(), token("0000000000000001")));
        let mut b = with_header("k1");
        b.headers.push(("authorization".into(), token("0000000000000002")));
        let (ka, kb) = (request_key(&a).unwrap().unwrap(), request_key(&b).unwrap().unwrap());
        assert_ne!(ka, kb);
        assert_ne!(ka, request_key(&with_header("k1")).unwrap().unwrap());
    }
}
