//! API key routes: `POST /api/keys`, `GET /api/keys`, `DELETE /api/keys/{id}`, and the stored key record.
//!
//! A key reads `aek_{id}_{secret}`: `id` is 16 lower-case hex digits (the lookup handle, stored in the clear
//! as `keys/{id}`), `secret` 64 lower-case hex digits (32 random bytes). The record holds the id, name, role,
//! creation time and the keyed hash of the whole key; the key itself is shown once, in the creation answer,
//! and never stored, logged or listed. Records change only through these routes (the generic KV API refuses
//! `keys/`), each write ordered through consensus, so a revocation reaches every node.

use crate::api::Backend;
use crate::auth::{hex, random_hex, Auth, Role};
use crate::error::ApiError;
use crate::server::{Request, Response};
use kvstore::{AetherKey, Command, Name};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Hex digits of a key id.
const ID_HEX: usize = 16;
/// Hex digits of a key's secret part.
const SECRET_HEX: usize = 64;
/// Longest key name, in characters.
const NAME_CHARS_MAX: usize = 64;

/// One stored key: `keys/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// `HMAC-SHA256(cluster secret, key)` as hex.
    pub hash: String,
}

impl KeyRecord {
    pub fn decode(bytes: &[u8]) -> Option<KeyRecord> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn hash_bytes(&self) -> Vec<u8> {
        let digits = self.hash.as_bytes();
        if !digits.len().is_multiple_of(2) {
            return Vec::new();
        }
        digits
            .chunks(2)
            .map(|pair| std::str::from_utf8(pair).ok().and_then(|p| u8::from_str_radix(p, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_default()
    }

    /// The listing shape: everything but the hash.
    fn public(&self) -> Value {
        json!({ "id": self.id, "name": self.name, "role": self.role, "created": self.created })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    role: String,
}

fn is_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The id of a well-formed key (`aek_{id}_{secret}`), else `None`.
pub fn key_id(token: &str) -> Option<Name> {
    let rest = token.strip_prefix("aek_")?;
    let (id, secret) = rest.split_once('_')?;
    if !is_hex(id, ID_HEX) || !is_hex(secret, SECRET_HEX) {
        return None;
    }
    Name::parse(id).ok()
}

fn parse_id(text: &str) -> Result<Name, ApiError> {
    if !is_hex(text, ID_HEX) {
        return Err(ApiError::bad_request(format!("a key id is {ID_HEX} lower-case hex digits")));
    }
    Name::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

pub fn route(auth: &Auth, backend: &dyn Backend, req: &Request) -> Result<Response, ApiError> {
    let rest: Vec<&str> = req.path.split('/').skip(2).collect();
    match (req.method.as_str(), rest.as_slice()) {
        ("POST", []) => create(auth, backend, &req.body),
        ("GET", []) => list(backend),
        ("DELETE", [id]) => revoke(backend, id),
        (method, _) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{method} is not allowed on /{}", req.path)))
        }
    }
}

fn create(auth: &Auth, backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let parsed: CreateBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("expected {{\"name\": \"...\", \"role\": \"...\"}}: {e}")))?;
    // Checked as sent (the length and control characters), then trimmed: a name the document's limits refuse
    // is refused here too.
    let sent = parsed.name.as_str();
    let name = sent.trim();
    if name.is_empty() || sent.chars().count() > NAME_CHARS_MAX || sent.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("name: 1 to {NAME_CHARS_MAX} characters, no control characters")));
    }
    let role = Role::parse(&parsed.role).ok_or_else(|| {
        ApiError::bad_request(format!(
            "role '{}': use viewer, operator or admin",
            parsed.role.chars().take(32).collect::<String>()
        ))
    })?;
    let id = random_hex(ID_HEX / 2)?;
    let key = format!("aek_{id}_{}", random_hex(SECRET_HEX / 2)?);
    let created = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let record = KeyRecord {
        id: id.clone(),
        name: name.to_string(),
        role: role.as_str().to_string(),
        created,
        hash: hex(&auth.hash(&key)),
    };
    let value = serde_json::to_vec(&record).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    // Create-only: a (vanishingly unlikely) id collision is a 409, never an overwrite.
    let command = Command::CompareAndSet { key: AetherKey::ApiKey { id: parse_id(&id)? }, expected: None, value };
    backend.kv_write(command)?;
    let mut answer = record.public();
    answer["key"] = json!(key);
    answer["note"] = json!("the key is shown only now; store it safely");
    Ok(Response::new(201, answer))
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let entries = backend.kv_list(kvstore::Namespace::Keys.prefix(), false)?;
    let keys: Vec<Value> =
        entries.iter().filter_map(|e| KeyRecord::decode(&e.value)).map(|record| record.public()).collect();
    Ok(Response::ok(json!({ "count": keys.len(), "keys": keys })))
}

fn revoke(backend: &dyn Backend, id: &str) -> Result<Response, ApiError> {
    let id = parse_id(id)?;
    let version = backend.kv_write(Command::Remove { key: AetherKey::ApiKey { id: id.clone() } })?;
    Ok(Response::ok(json!({ "id": id.to_string(), "revoked": true, "version": version })))
}
