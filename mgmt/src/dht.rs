//! `GET /api/dht`: this node's view of the storage plane: its members and its replica's figures.
//!
//! Invariants: the answer is the backend's snapshot, unchanged; a node without a storage plane answers 503.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::Response;
use serde::Serialize;

/// The storage plane as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DhtView {
    /// The members the ring places partitions on, sorted, this node included.
    pub members: Vec<String>,
    /// Entries this replica holds, and the bytes of their values.
    pub entries: usize,
    pub bytes: u64,
    /// Partitions this replica holds that fewer than the wanted number of members are known to hold.
    pub under_replicated: usize,
    pub read_repairs: u64,
    pub anti_entropy_repairs: u64,
    pub handed_off: u64,
    /// Entries whose bytes failed their check and were dropped (to be fetched again from a replica).
    pub corrupt_dropped: u64,
    /// Messages the transport refused to queue, and peer frames that did not decode, since the start.
    pub sends_refused: u64,
    pub bad_frames: u64,
}

pub fn get(backend: &dyn Backend) -> Result<Response, ApiError> {
    let view = backend.dht()?;
    let body = serde_json::to_value(view).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    Ok(Response::ok(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_backend::StoreBackend;

    #[test]
    fn a_node_without_a_storage_plane_answers_503() {
        assert!(get(&StoreBackend::default()).is_err_and(|e| e.status == 503));
    }

    #[test]
    fn the_view_has_the_documented_fields() {
        let view = DhtView { members: vec!["node-1".into()], entries: 2, corrupt_dropped: 1, ..DhtView::default() };
        let body = serde_json::to_value(&view).unwrap();
        for field in [
            "members",
            "entries",
            "bytes",
            "under_replicated",
            "read_repairs",
            "anti_entropy_repairs",
            "handed_off",
            "corrupt_dropped",
        ] {
            assert!(body.get(field).is_some(), "{field} missing from {body}");
        }
        assert_eq!((body["entries"].as_u64(), body["corrupt_dropped"].as_u64()), (Some(2), Some(1)));
    }
}
