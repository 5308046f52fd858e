//! Handshake messages. Each side sends `Hello` (with a fresh nonce) as its first frame, then `Auth`: an HMAC
//! of the cluster secret over the peer's nonce, so only holders of the secret complete a connection and a
//! recorded handshake cannot be replayed. A refusal is sent as `Reject` before closing, so both logs say why.

use rkyv::{Archive, Deserialize, Serialize};

/// Bumped when the meaning of any frame changes incompatibly.
pub const PROTOCOL_VERSION: u16 = 1;

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub cluster: String,
    pub node_id: String,
    pub protocol_version: u16,
    /// Feature bits; none are defined yet.
    pub features: u64,
    pub nonce: [u8; 32],
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// HMAC-SHA256(secret, context | cluster | sender id | receiver nonce | sender nonce).
    pub mac: [u8; 32],
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub reason: String,
}
