//! The KV routes: `GET/PUT/DELETE /api/kv/{key}` and `GET /api/kv?prefix=P[&after=K][&limit=N]`.
//!
//! A listing is paged ([`KvPage`]): at most [`LIST_ENTRIES_MAX`] entries and, past the first,
//! [`LIST_VALUE_BYTES_MAX`] bytes of values an answer, cut where the store holds them (the node never
//! copies more than one page), with `next` naming the key to pass as `after` for the rest.
//!
//! Keys are parsed into `AetherKey` here, at the edge, so a bad key is a 400 naming the part that is wrong
//! and never reaches the node. Values are bytes; answers carry them as UTF-8 text when they are, else as
//! base64 with `"encoding": "base64"`. A write that carries `Idempotency-Key` is submitted under the command
//! id that key names (see `idempotency`), so its retries apply it at most once.
//!
//! Invariants: writes and deletes reach only `user/` keys (every other namespace belongs to the component
//! that validates it and changes only through that component's routes: a 403 names why; slice data, `data/`,
//! is written only by its slice, through `ctx.kv()`, under the slice's quota); `keys/` records (API key
//! hashes) are never read or listed here, whatever the caller's role. Slice data is readable like the other
//! namespaces (any role that reads the KV), for operators to inspect what slices store.

use crate::api::Backend;
use crate::error::ApiError;
use crate::idempotency::request_key;
use crate::server::{Request, Response};
use kvstore::{AetherKey, Command, Namespace, Revision};
use serde_json::{json, Value};

/// Entries one listing answers at most.
pub const LIST_ENTRIES_MAX: usize = 1000;
/// Bytes of values one listing answers at most (past its first entry, which always goes).
pub const LIST_VALUE_BYTES_MAX: usize = 4 << 20;

/// One page of a prefix listing: the entries under `prefix` whose keys sort after `after`, in key order, at
/// most `limit` of them and, past the first, at most `bytes_max` bytes of values; `keys/` records never.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvPage {
    pub prefix: String,
    pub after: Option<String>,
    pub limit: usize,
    pub bytes_max: usize,
}

impl KvPage {
    /// The page out of `items` (in key order, under the prefix), and whether more follow it.
    pub fn cut<T>(
        &self,
        items: impl Iterator<Item = T>,
        key: impl Fn(&T) -> &str,
        bytes: impl Fn(&T) -> usize,
    ) -> (Vec<T>, bool) {
        let hidden = Namespace::Keys.prefix();
        let mut page = Vec::new();
        let mut total = 0usize;
        for item in items {
            let name = key(&item);
            if name.starts_with(hidden) || self.after.as_deref().is_some_and(|after| name <= after) {
                continue;
            }
            total = total.saturating_add(bytes(&item));
            if page.len() >= self.limit || (!page.is_empty() && total > self.bytes_max) {
                return (page, true);
            }
            page.push(item);
        }
        (page, false)
    }
}

/// One stored entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
}

impl KvEntry {
    pub fn to_json(&self) -> Value {
        match std::str::from_utf8(&self.value) {
            Ok(text) => json!({ "key": self.key, "value": text, "version": self.version }),
            Err(_) => json!({
                "key": self.key,
                "value": base64(&self.value),
                "encoding": "base64",
                "version": self.version,
            }),
        }
    }
}

pub fn route(backend: &dyn Backend, req: &Request, key: Option<&str>) -> Result<Response, ApiError> {
    let stale = match req.query_value("stale") {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => return Err(ApiError::bad_request("stale: use true, false, 1 or 0")),
    };
    match (req.method.as_str(), key) {
        ("GET", None) => list(backend, req, stale),
        ("GET", Some(key)) => get(backend, readable(parse_key(key)?)?, stale),
        ("PUT" | "POST", Some(key)) => put(backend, writable(parse_key(key)?)?, req),
        ("DELETE", Some(key)) => delete(backend, writable(parse_key(key)?)?, req),
        (method, _) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{method} is not allowed on /{}", req.path)))
        }
    }
}

fn parse_key(text: &str) -> Result<AetherKey, ApiError> {
    text.parse::<AetherKey>().map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Only `user/` keys are written through the generic API.
fn writable(key: AetherKey) -> Result<AetherKey, ApiError> {
    if key.is_user() {
        return Ok(key);
    }
    let ns = key.namespace().prefix();
    let owner = match key.namespace() {
        Namespace::Blueprints => "; deploy and delete blueprints through /api/blueprints",
        Namespace::Keys => "; manage API keys through /api/keys",
        Namespace::Data => "; slice data is written only by its slice (ctx.kv()), under the slice's quota",
        _ => "",
    };
    Err(ApiError::new(
        403,
        "forbidden",
        format!(
            "{ns} keys belong to the control plane, which validates them; the KV API writes only user/ keys{owner}"
        ),
    ))
}

/// Every key is readable except API key records.
fn readable(key: AetherKey) -> Result<AetherKey, ApiError> {
    if key.namespace() == Namespace::Keys {
        return Err(keys_unreadable());
    }
    Ok(key)
}

fn keys_unreadable() -> ApiError {
    ApiError::new(403, "forbidden", "keys/ records are never readable through the KV API; list keys with GET /api/keys")
}

fn expected_version(req: &Request) -> Result<Option<u64>, ApiError> {
    match req.query_value("version") {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| ApiError::bad_request(format!("version '{v}' is not a number"))),
    }
}

fn put(backend: &dyn Backend, key: AetherKey, req: &Request) -> Result<Response, ApiError> {
    let value = req.body.clone();
    let command = match expected_version(req)? {
        None => Command::Put { key, value },
        Some(0) => Command::CompareAndSet { key, expected: None, value },
        Some(v) => Command::CompareAndSet { key, expected: Some(Revision(v)), value },
    };
    write(backend, command, req)
}

fn delete(backend: &dyn Backend, key: AetherKey, req: &Request) -> Result<Response, ApiError> {
    let command = match expected_version(req)? {
        None => Command::Remove { key },
        Some(v) => Command::CompareAndRemove { key, expected: Revision(v) },
    };
    write(backend, command, req)
}

/// A write, under the request's `Idempotency-Key` when it sent one (checked before anything is submitted),
/// answered `{"version": n}` when its slot applies: later, when the backend answers from another thread
/// (see [`crate::later`]).
fn write(backend: &dyn Backend, command: Command, req: &Request) -> Result<Response, ApiError> {
    let request = request_key(req)?;
    let (promise, answerer) = crate::later::promise();
    let done = move |outcome: Result<u64, ApiError>| {
        answerer.answer(match outcome {
            Ok(version) => Response::ok(json!({ "version": version })),
            Err(e) => e.into(),
        })
    };
    backend.kv_write_then(command, request, Box::new(done));
    Ok(promise.now_or_later())
}

fn get(backend: &dyn Backend, key: AetherKey, stale: bool) -> Result<Response, ApiError> {
    match backend.kv_get(&key, stale)? {
        Some(entry) => Ok(Response::ok(entry.to_json())),
        None => Err(ApiError::not_found(format!("no key {key}"))),
    }
}

fn list(backend: &dyn Backend, req: &Request, stale: bool) -> Result<Response, ApiError> {
    let prefix = req.query_value("prefix").unwrap_or("");
    if prefix.starts_with(Namespace::Keys.prefix()) {
        return Err(keys_unreadable());
    }
    let limit = match req.query_value("limit") {
        None => LIST_ENTRIES_MAX,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=LIST_ENTRIES_MAX).contains(&n) => n,
            _ => return Err(ApiError::bad_request(format!("limit must be 1 to {LIST_ENTRIES_MAX}"))),
        },
    };
    let after = req.query_value("after").filter(|a| !a.is_empty()).map(str::to_owned);
    let page = KvPage { prefix: prefix.to_owned(), after, limit, bytes_max: LIST_VALUE_BYTES_MAX };
    let (entries, more) = backend.kv_page(&page, stale)?;
    let next = entries.last().filter(|_| more).map(|e| e.key.clone());
    let items: Vec<Value> = entries.iter().map(KvEntry::to_json).collect();
    Ok(Response::ok(json!({ "prefix": prefix, "count": items.len(), "entries": items, "next": next })))
}

/// Standard base64 with padding (the one encoder, shared with dead letters' payloads).
pub fn base64(bytes: &[u8]) -> String {
    control::messaging::record::base64_encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_cut_by_count_bytes_and_start_and_never_shows_keys() {
        let items = [("keys/k1", 1), ("user/a", 10), ("user/b", 10), ("user/c", 10), ("user/d", 10)];
        let page = |after: Option<&str>, limit, bytes_max| KvPage {
            prefix: String::new(),
            after: after.map(str::to_owned),
            limit,
            bytes_max,
        };
        let cut = |p: KvPage| {
            let (taken, more) = p.cut(items.iter(), |i| i.0, |i| i.1);
            (taken.iter().map(|i| i.0).collect::<Vec<_>>(), more)
        };
        assert_eq!(cut(page(None, 10, 100)), (vec!["user/a", "user/b", "user/c", "user/d"], false));
        assert_eq!(cut(page(None, 2, 100)), (vec!["user/a", "user/b"], true));
        assert_eq!(cut(page(Some("user/b"), 2, 100)), (vec!["user/c", "user/d"], false));
        assert_eq!(cut(page(None, 10, 25)), (vec!["user/a", "user/b"], true), "25 bytes hold two of ten");
        assert_eq!(cut(page(None, 10, 5)), (vec!["user/a"], true), "the first entry goes whatever its size");
        assert_eq!(cut(page(Some("user/d"), 10, 100)), (Vec::<&str>::new(), false));
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases =
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("foobar", "Zm9vYmFy")];
        for (input, expected) in cases {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn slice_data_is_readable_and_never_writable() {
        let key: AetherKey = "data/shop/org.example:cart/a".parse().unwrap();
        assert!(readable(key.clone()).is_ok());
        let refused = writable(key).unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(refused.detail.contains("ctx.kv()"), "{}", refused.detail);
    }

    #[test]
    fn binary_values_are_base64() {
        let entry = KvEntry { key: "user/x".into(), value: vec![0xff, 0x00], version: 3 };
        assert_eq!(entry.to_json()["encoding"], "base64");
        let text = KvEntry { key: "user/x".into(), value: b"hi".to_vec(), version: 3 };
        assert_eq!(text.to_json()["value"], "hi");
    }
}
