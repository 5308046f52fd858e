//! `/api/members`: the cluster's membership, changed through consensus while every node keeps running.
//!
//! - `GET /api/members`: every member with its replica id, cluster address, role (voter or learner) and, for
//!   learners, how far behind they are.
//! - `POST /api/members {"id": "node-4", "address": "10.0.0.4:7100"}`: adds a learner. Start the node with
//!   `[cluster] join = true`; it catches up from a snapshot and the leader makes it a voter once it has
//!   (202: the change is under way; `GET` shows it).
//! - `DELETE /api/members/{id}`: removes a member (a voter through a consensus reconfiguration, a learner by
//!   a record write), whether it is up or down.
//!
//! Inputs are checked here (id shape, address form, body size); the roster rules (no duplicate, never
//! without a voter, at most 64 replica ids) are the node's.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::{Request, Response};
use serde::Deserialize;
use std::net::SocketAddr;

/// A membership request body is small.
const BODY_BYTES_MAX: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddMember {
    id: String,
    address: String,
}

pub fn route(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("GET", []) => backend.members().map(Response::ok),
        ("POST", []) => {
            let (id, address) = parse_add(&req.body)?;
            backend.add_member(&id, address).map(|body| Response::new(202, body))
        }
        ("DELETE", [id]) => {
            let id = check_id(id)?;
            backend.remove_member(&id).map(Response::ok)
        }
        _ => Err(crate::methods::unrouted(req)),
    }
}

fn parse_add(body: &[u8]) -> Result<(String, SocketAddr), ApiError> {
    if body.len() > BODY_BYTES_MAX {
        return Err(ApiError::bad_request(format!("the body is over {BODY_BYTES_MAX} bytes")));
    }
    let add: AddMember = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("expected {{\"id\": \"node-4\", \"address\": \"host:port\"}}: {e}"))
    })?;
    let id = check_id(&add.id)?;
    let address: SocketAddr = add.address.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "address '{}' is not an IP address and port such as 10.0.0.4:7100",
            add.address.escape_debug()
        ))
    })?;
    let broadcast = matches!(address.ip(), std::net::IpAddr::V4(v4) if v4.is_broadcast());
    if address.port() == 0 || address.ip().is_unspecified() || address.ip().is_multicast() || broadcast {
        return Err(ApiError::bad_request(format!("address {address} cannot be dialed")));
    }
    Ok((id, address))
}

fn check_id(id: &str) -> Result<String, ApiError> {
    kvstore::NodeId::parse(id)
        .map(|n| n.as_str().to_string())
        .map_err(|e| ApiError::bad_request(format!("node id: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_add_needs_a_node_id_and_a_dialable_address() {
        let ok = parse_add(br#"{"id": "node-4", "address": "127.0.0.1:7104"}"#).unwrap();
        assert_eq!(ok, ("node-4".to_string(), "127.0.0.1:7104".parse().unwrap()));
        for bad in [
            &br#"{"id": "node-4"}"#[..],
            br#"{"id": "../x", "address": "127.0.0.1:7104"}"#,
            br#"{"id": "node-4", "address": "localhost:7104"}"#,
            br#"{"id": "node-4", "address": "0.0.0.0:7104"}"#,
            br#"{"id": "node-4", "address": "127.0.0.1:0"}"#,
            br#"{"id": "node-4", "address": "255.255.255.255:7104"}"#,
            br#"{"id": "node-4", "address": "224.0.0.1:7104"}"#,
            br#"{"id": "node-4", "address": "127.0.0.1:7104", "role": "voter"}"#,
            b"not json",
        ] {
            let e = parse_add(bad).unwrap_err();
            assert_eq!(e.status, 400, "{}", String::from_utf8_lossy(bad));
        }
        let huge = vec![b' '; BODY_BYTES_MAX + 1];
        assert_eq!(parse_add(&huge).unwrap_err().status, 400);
    }
}
