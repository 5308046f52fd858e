//! Routes of the management API and the JSON shape of each answer.

use crate::error::ApiError;
use crate::server::{Request, Response};
use serde::Deserialize;
use serde_json::json;

/// One node of the configured cluster as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerView {
    pub id: String,
    pub address: String,
    pub connected: bool,
    /// Milliseconds since anything arrived from it; `None` if never (and for this node itself).
    pub last_seen_ms: Option<u64>,
    pub is_self: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    pub node: String,
    /// Every configured node, this one included.
    pub nodes: Vec<PeerView>,
}

impl ClusterView {
    /// Other nodes with a live connection.
    pub fn peers_connected(&self) -> usize {
        self.nodes.iter().filter(|n| !n.is_self && n.connected).count()
    }

    /// This node plus its connected peers form a majority of the configured nodes.
    pub fn has_majority(&self) -> bool {
        (self.peers_connected() + 1) * 2 > self.nodes.len()
    }
}

/// A fault injection rule as the API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// A peer's node id; absent means every peer.
    pub peer: Option<String>,
    /// `inbound`, `outbound` or `both` (the default).
    #[serde(default = "both")]
    pub direction: String,
    /// `drop` or `delay`.
    pub action: String,
    #[serde(default)]
    pub delay_ms: u64,
}

fn both() -> String {
    "both".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultBody {
    rules: Vec<FaultSpec>,
}

/// What the daemon provides to the API. Implementations answer from the event loop, with a timeout.
pub trait Backend: Send + Sync + 'static {
    fn cluster_view(&self) -> Result<ClusterView, ApiError>;
    /// Replaces the transport's fault injection rules; refused unless the node allows it.
    fn set_faults(&self, rules: Vec<FaultSpec>) -> Result<(), ApiError>;
}

/// Answers one request.
pub fn route(backend: &dyn Backend, req: &Request) -> Response {
    let segments: Vec<&str> = req.path.split('/').collect();
    let result = match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["api", "health"]) => health(backend),
        ("GET", ["api", "nodes"]) => nodes(backend),
        ("POST" | "PUT", ["api", "debug", "faults"]) => set_faults(backend, &req.body),
        ("DELETE", ["api", "debug", "faults"]) => backend.set_faults(Vec::new()).map(|()| Response::ok(json!({}))),
        (_, ["api", "health" | "nodes"]) | (_, ["api", "debug", "faults"]) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{} is not allowed on /{}", req.method, req.path)))
        }
        _ => Err(ApiError::not_found(format!("no such path: {} /{}", req.method, req.path))),
    };
    result.unwrap_or_else(Response::from)
}

fn health(backend: &dyn Backend) -> Result<Response, ApiError> {
    let view = backend.cluster_view()?;
    let ready = view.has_majority();
    let body = json!({
        "node": view.node,
        "ready": ready,
        "peers_connected": view.peers_connected(),
        "nodes": view.nodes.len(),
    });
    Ok(Response { status: if ready { 200 } else { 503 }, body })
}

fn nodes(backend: &dyn Backend) -> Result<Response, ApiError> {
    let view = backend.cluster_view()?;
    let nodes: Vec<_> = view
        .nodes
        .iter()
        .map(|n| {
            json!({
                "id": n.id,
                "address": n.address,
                "connected": n.connected,
                "last_seen_ms": n.last_seen_ms,
                "self": n.is_self,
            })
        })
        .collect();
    Ok(Response::ok(json!({ "node": view.node, "nodes": nodes })))
}

fn set_faults(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let parsed: FaultBody =
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("fault rules: {e}")))?;
    for rule in &parsed.rules {
        if !matches!(rule.direction.as_str(), "inbound" | "outbound" | "both") {
            return Err(ApiError::bad_request(format!(
                "direction '{}': use inbound, outbound or both",
                rule.direction
            )));
        }
        if !matches!(rule.action.as_str(), "drop" | "delay") {
            return Err(ApiError::bad_request(format!("action '{}': use drop or delay", rule.action)));
        }
    }
    let count = parsed.rules.len();
    backend.set_faults(parsed.rules)?;
    Ok(Response::ok(json!({ "rules": count })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Fake {
        connected: usize,
        faults: Mutex<Vec<FaultSpec>>,
    }

    impl Backend for Fake {
        fn cluster_view(&self) -> Result<ClusterView, ApiError> {
            let mut nodes = vec![PeerView {
                id: "node-1".into(),
                address: "127.0.0.1:1".into(),
                connected: true,
                last_seen_ms: None,
                is_self: true,
            }];
            for i in 0..2 {
                nodes.push(PeerView {
                    id: format!("node-{}", i + 2),
                    address: "127.0.0.1:2".into(),
                    connected: i < self.connected,
                    last_seen_ms: Some(5),
                    is_self: false,
                });
            }
            Ok(ClusterView { node: "node-1".into(), nodes })
        }
        fn set_faults(&self, rules: Vec<FaultSpec>) -> Result<(), ApiError> {
            *self.faults.lock().unwrap() = rules;
            Ok(())
        }
    }

    fn get(backend: &Fake, path: &str) -> Response {
        route(backend, &Request { method: "GET".into(), path: path.into(), ..Request::default() })
    }

    #[test]
    fn health_is_ready_with_a_majority() {
        let ready = get(&Fake { connected: 1, faults: Mutex::default() }, "api/health");
        assert_eq!(ready.status, 200);
        assert_eq!(ready.body, json!({"node": "node-1", "ready": true, "peers_connected": 1, "nodes": 3}));
        let alone = get(&Fake { connected: 0, faults: Mutex::default() }, "api/health");
        assert_eq!(alone.status, 503);
        assert_eq!(alone.body["ready"], json!(false));
    }

    #[test]
    fn unknown_path_is_a_json_404_and_wrong_method_405() {
        let fake = Fake { connected: 2, faults: Mutex::default() };
        let missing = get(&fake, "api/nope");
        assert_eq!(missing.status, 404);
        assert_eq!(missing.body["error"], json!("not_found"));
        let wrong = route(&fake, &Request { method: "DELETE".into(), path: "api/health".into(), ..Request::default() });
        assert_eq!(wrong.status, 405);
    }

    #[test]
    fn nodes_lists_every_configured_node() {
        let nodes = get(&Fake { connected: 1, faults: Mutex::default() }, "api/nodes");
        assert_eq!(nodes.body["nodes"].as_array().map(Vec::len), Some(3));
        assert_eq!(nodes.body["nodes"][2]["connected"], json!(false));
    }

    #[test]
    fn fault_rules_are_validated() {
        let fake = Fake { connected: 2, faults: Mutex::default() };
        let post = |body: &str| {
            route(
                &fake,
                &Request { method: "POST".into(), path: "api/debug/faults".into(), body: body.into(), query: vec![] },
            )
        };
        assert_eq!(post("not json").status, 400);
        assert_eq!(post(r#"{"rules":[{"action":"explode"}]}"#).status, 400);
        assert_eq!(post(r#"{"rules":[{"peer":"node-2","action":"drop"}]}"#).status, 200);
        assert_eq!(fake.faults.lock().unwrap().len(), 1);
    }
}
