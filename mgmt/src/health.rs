//! `/health/live` and `/health/ready`: probes for supervisors and load balancers.
//!
//! Invariants: `live` answers 200 whenever the management port serves at all (it asks nothing of the
//! node); `ready` answers 200 only when the node has a quorum and has caught up (as `/api/health`
//! says) and every HTTP port of the node accepts connections, else 503 with each problem named.

use crate::api::Backend;
use crate::server::Response;
use serde_json::json;

pub fn live() -> Response {
    Response::ok(json!({ "live": true }))
}

pub fn ready(backend: &dyn Backend) -> Response {
    let mut problems = Vec::new();
    match backend.cluster_view() {
        Ok(view) => {
            if !view.quorum {
                problems.push("no quorum of the cluster is reachable".to_owned());
            }
            if !view.caught_up {
                problems.push("the node has not caught up with the cluster".to_owned());
            }
        }
        Err(e) => problems.push(format!("the node's state is unknown: {}", e.detail)),
    }
    for (port, accepting) in backend.http_ports() {
        if !accepting {
            problems.push(format!("the {port} port is not accepting connections"));
        }
    }
    problems.extend(backend.serving_problems());
    let ready = problems.is_empty();
    let body = json!({ "ready": ready, "problems": problems });
    Response::new(if ready { 200 } else { 503 }, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterView, FaultSpec, NodeStatus};
    use crate::error::ApiError;
    use crate::kv::KvEntry;
    use serde_json::Value;

    struct Probe {
        quorum: bool,
        app_accepting: bool,
        serving_problem: Option<&'static str>,
    }

    impl Backend for Probe {
        fn cluster_view(&self) -> Result<ClusterView, ApiError> {
            Ok(ClusterView { node: "n".into(), nodes: Vec::new(), quorum: self.quorum, caught_up: true })
        }
        fn status(&self) -> Result<NodeStatus, ApiError> {
            Err(ApiError::unavailable("probe"))
        }
        fn kv_write(&self, _: kvstore::Command) -> Result<u64, ApiError> {
            Err(ApiError::unavailable("probe"))
        }
        fn kv_get(&self, _: &kvstore::AetherKey, _: bool) -> Result<Option<KvEntry>, ApiError> {
            Err(ApiError::unavailable("probe"))
        }
        fn kv_list(&self, _: &str, _: bool) -> Result<Vec<KvEntry>, ApiError> {
            Err(ApiError::unavailable("probe"))
        }
        fn artifact_known(&self, _: &kvstore::Artifact) -> bool {
            false
        }
        fn set_faults(&self, _: Vec<FaultSpec>) -> Result<(), ApiError> {
            Err(ApiError::unavailable("probe"))
        }
        fn http_ports(&self) -> Vec<(String, bool)> {
            vec![("management".into(), true), ("app".into(), self.app_accepting)]
        }
        fn serving_problems(&self) -> Vec<String> {
            self.serving_problem.iter().map(|p| p.to_string()).collect()
        }
    }

    fn get(backend: &Probe, path: &str) -> Response {
        let request = crate::Request { method: "GET".into(), path: path.into(), ..crate::Request::default() };
        crate::route(backend, &request)
    }

    #[test]
    fn ready_needs_a_quorum_and_every_port_accepting() {
        let fine = Probe { quorum: true, app_accepting: true, serving_problem: None };
        assert_eq!(get(&fine, "health/live").status, 200);
        let ready = get(&fine, "health/ready");
        assert_eq!((ready.status, ready.body["ready"].clone()), (200, Value::Bool(true)));
        let refusing = get(&Probe { quorum: true, app_accepting: false, serving_problem: None }, "health/ready");
        assert_eq!(refusing.status, 503);
        assert_eq!(refusing.body["problems"][0], "the app port is not accepting connections");
        let alone = get(&Probe { quorum: false, app_accepting: false, serving_problem: None }, "health/ready");
        assert_eq!(alone.body["problems"].as_array().map(Vec::len), Some(2));
        assert_eq!(
            get(&Probe { quorum: false, app_accepting: false, serving_problem: None }, "health/live").status,
            200
        );
    }

    #[test]
    fn ready_names_a_data_plane_that_cannot_serve() {
        let stuck = Probe { quorum: true, app_accepting: true, serving_problem: Some("no live handler") };
        let ready = get(&stuck, "health/ready");
        assert_eq!((ready.status, ready.body["problems"][0].clone()), (503, Value::from("no live handler")));
    }
}
