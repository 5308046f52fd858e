//! Read-only listings: `GET /api/routes` (which slice method serves each HTTP route, and on which nodes), and
//! [`ArtifactInfo`], a library in a node's repository folder (listed by `crate::repository`).
//!
//! Routes come from the replicated `routes/` records, their instances from the `slices/` records of the
//! artifact serving them.
//! Invariant: a record that does not decode is left out of the listing, never a 5xx.

use crate::api::Backend;
use crate::deploy::slice_entries;
use crate::error::ApiError;
use crate::server::Response;
use control::records::{Record, RouteRecord};
use kvstore::AetherKey;
use serde_json::{json, Value};

/// One slice library in a node's repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// `group:artifact:version`.
    pub artifact: String,
    /// The SHA-256 its checksum file records, as hex; `None` without a readable checksum file.
    pub sha256: Option<String>,
    /// A signature file lies beside it.
    pub signed: bool,
    pub bytes: u64,
}

/// `GET /api/routes`.
pub fn routes(backend: &dyn Backend) -> Result<Response, ApiError> {
    let slices = slice_entries(backend)?;
    let mut items = Vec::new();
    for entry in backend.kv_list("routes/", false)? {
        let Ok(AetherKey::Route { method, path }) = entry.key.parse::<AetherKey>() else { continue };
        let Ok(route) = RouteRecord::decode(&entry.value) else { continue };
        let instances: Vec<Value> = slices
            .iter()
            .filter(|(_, artifact, _)| *artifact == route.artifact)
            .map(|(node, _, record)| json!({ "node": node, "state": record.state.as_str() }))
            .collect();
        items.push(json!({
            "method": method.to_string(),
            "path": path.as_str(),
            "artifact": route.artifact.to_string(),
            "slice_method": route.method.to_string(),
            "instances": instances,
        }));
    }
    Ok(Response::ok(json!({ "routes": items })))
}
