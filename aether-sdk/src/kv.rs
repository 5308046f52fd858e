//! `ctx.kv()`: the slice's cluster state.
//!
//! Every slice has a namespace of its own in the cluster's replicated store, shared by all its
//! instances on every node and by every version of the artifact (so version 2 reads what version 1
//! wrote). A slice cannot name a key outside it. Reads are linearizable; every write returns the
//! key's new version, which [`Kv::compare_and_set`] checks. Writes count against the slice's quota
//! (bytes and keys, set in the blueprint).
//!
//! Every call blocks the calling thread until the store answers or the call's deadline passes (5 s
//! outside a call). A [`KvError::Timeout`] on a write means it may still apply. A detached context
//! answers [`KvError::Unavailable`].
//!
//! ```no_run
//! # fn demo(ctx: &aether_sdk::Context) -> Result<(), aether_sdk::KvError> {
//! let kv = ctx.kv();
//! let version = kv.put("links/abc", b"https://example.com")?;
//! let entry = kv.get("links/abc")?.expect("just written");
//! assert_eq!(entry.version, version);
//! // Take an id only if nobody has it yet.
//! match kv.compare_and_set("links/abd", None, b"https://example.org") {
//!     Ok(_) => {}
//!     Err(aether_sdk::KvError::VersionMismatch { .. }) => { /* taken: pick another */ }
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```
//!
//! The byte layout of answers (`abi::kv_op`, `abi::kv_status`) is written by the host with the
//! `encode_*` functions here and read back by [`Kv`]; both sides check every length.

use std::fmt;

use crate::abi::{self, kv_op, kv_status, Bytes, RawKvRequest, RawResponse, StrRef};
use crate::codec::CodecError;
use crate::context::{copy_and_free, Context};
use crate::wire::{read_str, read_u32, read_u64};

/// One entry of the slice's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key, relative to the slice's namespace.
    pub key: String,
    pub value: Vec<u8>,
    /// Changes with every write of the key.
    pub version: u64,
}

/// Why a cluster-state operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvError {
    /// Compare-and-set found another version (`None`: the key is absent).
    VersionMismatch { current: Option<u64> },
    /// The value, key or list limit is over a bound: `what` names it, `limit` is the bound.
    TooLarge { what: String, limit: u64 },
    /// The slice's quota (`what`: "bytes" or "keys") would be exceeded.
    QuotaExceeded { what: String, limit: u64 },
    /// The key or prefix is not acceptable (the message says why).
    Invalid(String),
    /// The store cannot be reached, the node is stopping, or there is no host; nothing was applied.
    Unavailable(String),
    /// No answer within the deadline; a write may still apply.
    Timeout,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KvError::VersionMismatch { current: Some(v) } => write!(f, "the key is at version {v}"),
            KvError::VersionMismatch { current: None } => write!(f, "the key is absent"),
            KvError::TooLarge { what, limit } => write!(f, "{what} is over its limit of {limit}"),
            KvError::QuotaExceeded { what, limit } => {
                write!(f, "the slice's {what} quota of {limit} would be exceeded")
            }
            KvError::Invalid(why) => write!(f, "invalid: {why}"),
            KvError::Unavailable(why) => write!(f, "cluster state unavailable: {why}"),
            KvError::Timeout => write!(f, "no answer from the cluster state in time (a write may still apply)"),
        }
    }
}

impl std::error::Error for KvError {}

impl From<CodecError> for KvError {
    fn from(e: CodecError) -> KvError {
        KvError::Unavailable(format!("malformed answer from the host: {e}"))
    }
}

/// The slice's handle on its cluster state (see the module docs); get it with [`Context::kv`].
#[derive(Clone, Copy)]
pub struct Kv<'a> {
    ctx: &'a Context,
}

impl<'a> Kv<'a> {
    pub(crate) fn new(ctx: &'a Context) -> Kv<'a> {
        Kv { ctx }
    }

    /// The entry at `key`, or `None` (linearizable).
    pub fn get(&self, key: &str) -> Result<Option<Entry>, KvError> {
        let payload = self.run(kv_op::GET, key, &[], None, 0)?;
        decode_get(key, &payload)
    }

    /// Write `value` at `key` whatever is there; answers the new version.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<u64, KvError> {
        Ok(read_u64(&self.run(kv_op::PUT, key, value, None, 0)?, 0)?)
    }

    /// Delete `key`; `false` when it was absent.
    pub fn delete(&self, key: &str) -> Result<bool, KvError> {
        let payload = self.run(kv_op::DELETE, key, &[], None, 0)?;
        Ok(payload.first().copied().unwrap_or(0) != 0)
    }

    /// Write `value` at `key` only if the key is at version `expected` (`None`: only if absent);
    /// answers the new version, or [`KvError::VersionMismatch`] with the version found.
    pub fn compare_and_set(&self, key: &str, expected: Option<u64>, value: &[u8]) -> Result<u64, KvError> {
        let expected = Some(expected);
        Ok(read_u64(&self.run(kv_op::COMPARE_AND_SET, key, value, expected, 0)?, 0)?)
    }

    /// Up to `limit` entries whose key starts with `prefix`, in key order (linearizable).
    pub fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Entry>, KvError> {
        let payload = self.run(kv_op::LIST, prefix, &[], None, limit as u64)?;
        decode_list(&payload)
    }

    /// Deliver every later change under `prefix` to `method` of this instance (one of the slice's
    /// methods), in commit order, until the instance stops. The request body is JSON:
    /// `{"key": "...", "version": N, "value": "..."|null, "encoding": "base64"?, "deleted": bool}`.
    pub fn watch(&self, prefix: &str, method: &str) -> Result<(), KvError> {
        self.run(kv_op::WATCH, prefix, method.as_bytes(), None, 0).map(|_| ())
    }

    fn run(
        &self,
        op: u32,
        key: &str,
        value: &[u8],
        expected: Option<Option<u64>>,
        limit: u64,
    ) -> Result<Vec<u8>, KvError> {
        let Some(host) = self.ctx.host() else {
            return Err(KvError::Unavailable("no host: detached context".into()));
        };
        let expected = expected.flatten();
        let request = RawKvRequest {
            op,
            has_expected: u32::from(expected.is_some()),
            expected: expected.unwrap_or(0),
            limit,
            key: StrRef::new(key),
            value: Bytes::new(value),
        };
        let mut raw = RawResponse { status: kv_status::UNAVAILABLE, payload: abi::OwnedBuf::EMPTY };
        // SAFETY: the table is valid while the context is; `request` and the buffers it points at
        // live for the call, and `raw` is a valid out-parameter.
        unsafe { (host.kv)(host.ctx, &request, &mut raw) };
        let payload = copy_and_free(host, raw.payload);
        match raw.status {
            kv_status::OK => Ok(payload),
            status => Err(decode_error(status, &payload)),
        }
    }
}

fn decode_get(key: &str, payload: &[u8]) -> Result<Option<Entry>, KvError> {
    if payload.first().copied().unwrap_or(0) == 0 {
        return Ok(None);
    }
    let version = read_u64(payload, 1)?;
    Ok(Some(Entry { key: key.to_owned(), value: payload.get(9..).unwrap_or(&[]).to_vec(), version }))
}

fn decode_list(payload: &[u8]) -> Result<Vec<Entry>, KvError> {
    let count = read_u32(payload, 0)? as usize;
    // Each entry takes at least 16 bytes, so a count larger than that cannot be honest.
    let mut entries = Vec::with_capacity(count.min(payload.len() / 16));
    let mut at = 4;
    for _ in 0..count {
        let key_len = read_u32(payload, at)? as usize;
        let key = read_str(payload, at + 4, key_len)?.to_owned();
        at += 4 + key_len;
        let version = read_u64(payload, at)?;
        let value_len = read_u32(payload, at + 8)? as usize;
        let start = at + 12;
        let end = start.checked_add(value_len).ok_or(CodecError::Truncated { at })?;
        let value = payload.get(start..end).ok_or(CodecError::Truncated { at: start })?.to_vec();
        at = end;
        entries.push(Entry { key, value, version });
    }
    Ok(entries)
}

fn decode_error(status: u32, payload: &[u8]) -> KvError {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let limit_and_what = || (read_u64(payload, 0).unwrap_or(0), text(payload.get(8..).unwrap_or(&[])));
    match status {
        kv_status::VERSION_MISMATCH => {
            let current = (payload.first().copied().unwrap_or(0) != 0).then(|| read_u64(payload, 1).ok()).flatten();
            KvError::VersionMismatch { current }
        }
        kv_status::TOO_LARGE => {
            let (limit, what) = limit_and_what();
            KvError::TooLarge { what, limit }
        }
        kv_status::QUOTA_EXCEEDED => {
            let (limit, what) = limit_and_what();
            KvError::QuotaExceeded { what, limit }
        }
        kv_status::INVALID => KvError::Invalid(text(payload)),
        kv_status::TIMEOUT => KvError::Timeout,
        kv_status::UNAVAILABLE => KvError::Unavailable(text(payload)),
        other => KvError::Unavailable(format!("the host answered unknown status {other}")),
    }
}

/// Host side: the payload of a `GET` answer.
pub fn encode_get(found: Option<(u64, &[u8])>) -> Vec<u8> {
    match found {
        None => vec![0],
        Some((version, value)) => {
            let mut out = Vec::with_capacity(9 + value.len());
            out.push(1);
            out.extend_from_slice(&version.to_le_bytes());
            out.extend_from_slice(value);
            out
        }
    }
}

/// Host side: the payload of a `PUT` or `COMPARE_AND_SET` answer.
pub fn encode_version(version: u64) -> Vec<u8> {
    version.to_le_bytes().to_vec()
}

/// Host side: the payload of a `DELETE` answer.
pub fn encode_deleted(existed: bool) -> Vec<u8> {
    vec![u8::from(existed)]
}

/// Host side: the payload of a `LIST` answer, from `(key, version, value)` triples.
pub fn encode_list<'e>(entries: impl ExactSizeIterator<Item = (&'e str, u64, &'e [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (key, version, value) in entries {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&version.to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// Host side: the status and payload of an error answer.
pub fn encode_error(error: &KvError) -> (u32, Vec<u8>) {
    let limit_and_what = |limit: u64, what: &str| {
        let mut out = limit.to_le_bytes().to_vec();
        out.extend_from_slice(what.as_bytes());
        out
    };
    match error {
        KvError::VersionMismatch { current } => {
            let mut out = vec![u8::from(current.is_some())];
            out.extend_from_slice(&current.unwrap_or(0).to_le_bytes());
            (kv_status::VERSION_MISMATCH, out)
        }
        KvError::TooLarge { what, limit } => (kv_status::TOO_LARGE, limit_and_what(*limit, what)),
        KvError::QuotaExceeded { what, limit } => (kv_status::QUOTA_EXCEEDED, limit_and_what(*limit, what)),
        KvError::Invalid(why) => (kv_status::INVALID, why.as_bytes().to_vec()),
        KvError::Unavailable(why) => (kv_status::UNAVAILABLE, why.as_bytes().to_vec()),
        KvError::Timeout => (kv_status::TIMEOUT, Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_through_their_encodings() {
        assert_eq!(decode_get("k", &encode_get(None)), Ok(None));
        let entry = Entry { key: "k".into(), value: b"v".to_vec(), version: 9 };
        assert_eq!(decode_get("k", &encode_get(Some((9, b"v")))), Ok(Some(entry)));
        let listed = [("a", 1u64, &b"x"[..]), ("b/c", 2, &b""[..])];
        let decoded = decode_list(&encode_list(listed.iter().copied())).unwrap();
        let keys: Vec<(&str, u64, &[u8])> = decoded.iter().map(|e| (e.key.as_str(), e.version, &e.value[..])).collect();
        assert_eq!(keys, listed);
        for error in [
            KvError::VersionMismatch { current: Some(4) },
            KvError::VersionMismatch { current: None },
            KvError::TooLarge { what: "value".into(), limit: 65536 },
            KvError::QuotaExceeded { what: "keys".into(), limit: 10 },
            KvError::Invalid("bad key".into()),
            KvError::Unavailable("stopping".into()),
            KvError::Timeout,
        ] {
            let (status, payload) = encode_error(&error);
            assert_eq!(decode_error(status, &payload), error);
        }
    }

    #[test]
    fn a_truncated_or_lying_list_is_an_error_not_a_panic() {
        let good = encode_list([("key", 1u64, &b"value"[..])].into_iter());
        for cut in 0..good.len() {
            assert!(decode_list(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_list(&lying).is_err());
    }

    #[test]
    fn a_detached_context_answers_unavailable() {
        let ctx = Context::detached("n");
        assert!(matches!(ctx.kv().get("k"), Err(KvError::Unavailable(_))));
        assert!(matches!(ctx.kv().put("k", b"v"), Err(KvError::Unavailable(_))));
        assert!(matches!(ctx.kv().watch("", "m"), Err(KvError::Unavailable(_))));
    }
}
