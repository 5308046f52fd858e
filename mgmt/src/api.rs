//! Routes of the management API and the JSON shape of each answer.

use crate::error::ApiError;
use crate::kv::KvEntry;
use crate::server::{Request, Response};
use serde::Deserialize;
use serde_json::{json, Value};

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
    /// A majority of the cluster is alive as seen from here (this node included).
    pub quorum: bool,
    /// The replicated state here is not behind the cluster's.
    pub caught_up: bool,
}

/// A member of the cluster as the failure detector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: String,
    pub address: String,
    pub alive: bool,
}

/// `GET /api/status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node: String,
    pub leader: Option<String>,
    pub quorum: bool,
    pub caught_up: bool,
    pub members: Vec<MemberView>,
    pub applied_slot: Option<u64>,
    pub pending_commands: usize,
    /// Consensus messages the transport refused to queue since this node started.
    pub consensus_sends_refused: u64,
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
/// What is done with a write's outcome ([`Backend::kv_write_then`]); must not block.
pub type WriteDone = Box<dyn FnOnce(Result<u64, ApiError>) + Send>;

pub trait Backend: Send + Sync + 'static {
    /// The node's count of running blueprint dry runs, which bounds them (`None`: unbounded, for tests).
    fn dry_runs(&self) -> Option<&crate::DryRuns> {
        None
    }
    fn cluster_view(&self) -> Result<ClusterView, ApiError>;
    fn status(&self) -> Result<NodeStatus, ApiError>;
    /// Orders `command` through consensus and answers with the version it produced; version conflicts are
    /// 409, a missing key 404, no quorum 503, no decision in time 504.
    fn kv_write(&self, command: kvstore::Command) -> Result<u64, ApiError>;
    /// `kv_write` under the client's own request id (`Idempotency-Key`): however often it is sent, to any
    /// node, the command applies at most once, and a retry of one that applied answers what it answered.
    /// 503 means it was refused before consensus saw it; 504 that it may still apply (retry with the key).
    fn kv_write_once(&self, command: kvstore::Command, request: crate::RequestKey) -> Result<u64, ApiError> {
        let _ = (command, request);
        Err(ApiError::new(501, "not_implemented", "this node does not take Idempotency-Key"))
    }
    /// `kv_write` (`kv_write_once` under `request`) whose outcome goes to `done`, perhaps later and on another
    /// thread, so the caller need not wait for the slot. Defaults to the write on this thread.
    fn kv_write_then(&self, command: kvstore::Command, request: Option<crate::RequestKey>, done: WriteDone) {
        done(match request {
            Some(request) => self.kv_write_once(command, request),
            None => self.kv_write(command),
        })
    }
    /// Linearizable unless `stale`, in which case the local replica answers at once.
    fn kv_get(&self, key: &kvstore::AetherKey, stale: bool) -> Result<Option<KvEntry>, ApiError>;
    fn kv_list(&self, prefix: &str, stale: bool) -> Result<Vec<KvEntry>, ApiError>;
    /// One page of a listing (`GET /api/kv`), and whether more follow. The default lists everything and cuts;
    /// a node cuts where the store holds the entries, so it never copies more than the page.
    fn kv_page(&self, page: &crate::KvPage, stale: bool) -> Result<(Vec<KvEntry>, bool), ApiError> {
        let all = self.kv_list(&page.prefix, stale)?;
        Ok(page.cut(all.into_iter(), |e| e.key.as_str(), |e| e.value.len()))
    }
    /// The whole store's snapshot bytes and the slot they were taken at, after a linearizable read barrier.
    fn backup(&self) -> Result<(u64, Vec<u8>), ApiError> {
        Err(ApiError::unavailable("this node cannot take backups"))
    }
    /// The cluster's members (`GET /api/members`).
    fn members(&self) -> Result<serde_json::Value, ApiError> {
        Err(ApiError::unavailable("this node does not manage members"))
    }
    /// Adds `id` at `address` as a learner; the leader promotes it once it has caught up.
    fn add_member(&self, id: &str, address: std::net::SocketAddr) -> Result<serde_json::Value, ApiError> {
        let _ = (id, address);
        Err(ApiError::unavailable("this node does not manage members"))
    }
    /// Removes member `id` through a consensus reconfiguration.
    fn remove_member(&self, id: &str) -> Result<serde_json::Value, ApiError> {
        let _ = id;
        Err(ApiError::unavailable("this node does not manage members"))
    }
    /// Whether this node can find the artifact (its repository), for blueprint validation.
    fn artifact_known(&self, artifact: &kvstore::Artifact) -> bool;
    /// The routes `(HTTP method, path pattern)` the artifact's descriptor declares, read from this node's
    /// repository, for the blueprint route check; `Err` says why they cannot be read here.
    fn slice_routes(&self, artifact: &kvstore::Artifact) -> Result<Vec<(String, String)>, String> {
        let _ = artifact;
        Err("this node does not read slice descriptors".to_owned())
    }
    /// The largest library an upload may carry (`[artifacts] max_bytes`).
    fn artifact_bytes_max(&self) -> usize {
        crate::ARTIFACT_BYTES_MAX
    }
    /// Checks an uploaded library as this node would load it: its slice descriptor loads (ABI version, the
    /// name and version of these coordinates) and the signature rules (`[artifacts] trusted_keys`). A refusal
    /// names what is wrong (422 for the library, 400 for the signature); nothing is stored either way.
    fn check_library(&self, artifact: &kvstore::Artifact, upload: &ArtifactUpload) -> Result<(), ApiError> {
        let _ = (artifact, upload);
        Err(ApiError::new(501, "not_implemented", "this node does not take uploads"))
    }
    /// Stores the library's bytes in the storage plane as the upload `record` describes (its chunks' keys
    /// name `record.upload`); returns once they are durable there.
    fn store_library(
        &self,
        artifact: &kvstore::Artifact,
        upload: &ArtifactUpload,
        record: &control::records::ArtifactRecord,
    ) -> Result<(), ApiError> {
        let _ = (artifact, upload, record);
        Err(ApiError::new(501, "not_implemented", "this node does not take uploads"))
    }
    /// Writes the library, with its checksum (and signature) files, to this node's repository folder.
    fn cache_library(&self, artifact: &kvstore::Artifact, upload: &ArtifactUpload) -> Result<(), ApiError> {
        let _ = (artifact, upload);
        Err(ApiError::new(501, "not_implemented", "this node keeps no repository folder"))
    }
    /// The library's bytes as its catalog `record` describes them: from this node's folder when it holds
    /// them, else fetched from the storage plane (and cached).
    fn read_library(
        &self,
        artifact: &kvstore::Artifact,
        record: &control::records::ArtifactRecord,
    ) -> Result<Vec<u8>, ApiError> {
        let _ = (artifact, record);
        Err(ApiError::new(501, "not_implemented", "this node serves no libraries"))
    }
    /// Deletes the bytes `record` describes from the storage plane (the version is replaced or deleted).
    fn delete_chunks(
        &self,
        artifact: &kvstore::Artifact,
        record: &control::records::ArtifactRecord,
    ) -> Result<(), ApiError> {
        let _ = (artifact, record);
        Err(ApiError::new(501, "not_implemented", "this node has no storage plane"))
    }
    /// Deletes a version's bytes everywhere: its chunks and this node's cached files (its catalog record
    /// is already gone).
    fn delete_library(
        &self,
        artifact: &kvstore::Artifact,
        record: &control::records::ArtifactRecord,
    ) -> Result<(), ApiError> {
        self.delete_chunks(artifact, record)
    }
    /// Replaces the transport's fault injection rules; refused unless the node allows it.
    fn set_faults(&self, rules: Vec<FaultSpec>) -> Result<(), ApiError>;
    /// The node's HTTP ports by name and whether each accepts connections now (for `/health/ready`).
    fn http_ports(&self) -> Vec<(String, bool)> {
        Vec::new()
    }
    /// Why the node's data plane cannot serve now, though its ports accept (for `/health/ready`).
    fn serving_problems(&self) -> Vec<String> {
        Vec::new()
    }
    /// Every node's metrics as this node holds them; `None` where the node keeps none (503 on the
    /// metrics routes).
    fn metrics(&self) -> Option<std::sync::Arc<telemetry::Board>> {
        None
    }
    /// The slice libraries in this node's repository folder (`GET /api/artifacts` lists those the catalog
    /// does not know as `local_only`).
    fn artifacts(&self) -> Result<Vec<crate::ArtifactInfo>, ApiError> {
        Ok(Vec::new())
    }
    /// `GET /api/events`: `{"events": [...], "next": cursor}`, up to `limit` events from `since`.
    fn events(&self, since: Option<crate::EventSince>, limit: usize) -> Result<Value, ApiError> {
        let _ = (since, limit);
        Err(ApiError::new(501, "not_implemented", "this node keeps no event log"))
    }
    /// `GET /api/events/stream`: the events from `since` (without it, only new ones) as server-sent events.
    fn event_stream(&self, since: Option<crate::EventSince>) -> Result<Box<dyn httpd::StreamSource>, ApiError> {
        let _ = since;
        Err(ApiError::new(501, "not_implemented", "this node keeps no event log"))
    }
    /// Record an event that a management request caused here (`config_changed`, ...).
    fn record_event(&self, kind: &'static str, data: Value) {
        let _ = (kind, data);
    }
    /// The settings operators may change live (`/api/config`).
    fn settable(&self) -> Vec<crate::Setting> {
        Vec::new()
    }
    /// This node's effective live settings, `{"key": value}`.
    fn effective_config(&self) -> Value {
        json!({})
    }
    /// The default log level this node started with (what applies while the store sets none).
    fn log_level_default(&self) -> String {
        "info".into()
    }
    /// The storage plane as this node sees it (`GET /api/dht`).
    fn dht(&self) -> Result<crate::DhtView, ApiError> {
        Err(ApiError::unavailable("this node runs no storage plane"))
    }
    /// Every topic as this node sees it (`GET /api/topics`).
    fn topics(&self) -> Result<Vec<crate::messaging::TopicView>, ApiError> {
        Err(ApiError::unavailable("this node runs no messaging"))
    }
    /// Publish `payload` to `topic` as the management API; answers once the message is applied.
    fn publish(&self, topic: &str, payload: &[u8]) -> Result<crate::messaging::Published, ApiError> {
        let _ = (topic, payload);
        Err(ApiError::unavailable("this node runs no messaging"))
    }
    /// Publish a dead letter's payload again, to its subscription only, then remove it.
    fn replay_dead_letter(&self, key: &kvstore::AetherKey) -> Result<crate::messaging::Published, ApiError> {
        let _ = key;
        Err(ApiError::unavailable("this node runs no messaging"))
    }
}

/// Answers one request.
pub fn route(backend: &dyn Backend, req: &Request) -> Response {
    if let Some(key) = req.path.strip_prefix("api/kv/") {
        return crate::kv::route(backend, req, Some(key)).unwrap_or_else(Response::from);
    }
    let segments: Vec<&str> = req.path.split('/').collect();
    let result = match (req.method.as_str(), segments.as_slice()) {
        (_, ["api", "kv"]) => crate::kv::route(backend, req, None),
        ("POST", ["api", "blueprints", "validate"]) => crate::validate::validate(backend, &req.body),
        ("GET", ["api", "blueprints", name, "status"]) => crate::blueprint_status::status(backend, name),
        (_, ["api", "blueprints", rest @ ..]) => crate::deploy::route(backend, req, rest),
        ("GET", ["api", "routes"]) => crate::listings::routes(backend),
        ("GET", ["api", "artifacts"]) => crate::repository::list(backend),
        (_, ["repository", ..]) => match req.path.strip_prefix("repository/") {
            Some(rest) => crate::repository::route(backend, req, rest),
            None => Err(ApiError::not_found("/repository/ is a folder of groups; ask for a file below it")),
        },
        ("GET", ["api", "openapi.yaml"]) => Ok(crate::openapi::document()),
        ("GET", ["api", "slices"]) => crate::deploy::slices(backend),
        (_, ["api", "scheduled-tasks", rest @ ..]) => crate::schedules::route(backend, req, rest),
        (_, ["api", "events", rest @ ..]) => crate::events::route(backend, req, rest),
        (_, ["api", "log-levels", rest @ ..]) => crate::live::log_levels(backend, req, rest),
        (_, ["api", "config", rest @ ..]) => crate::live::config(backend, req, rest),
        (method @ ("POST" | "PUT" | "GET" | "DELETE"), ["api", "artifacts", group, artifact, version]) => {
            let coords = format!("{group}:{artifact}:{version}");
            let artifact = kvstore::Artifact::parse(&coords).map_err(|e| ApiError::bad_request(e.to_string()));
            artifact.and_then(|artifact| match method {
                "GET" => crate::repository::info(backend, &artifact),
                "DELETE" => crate::repository::delete(backend, &artifact),
                _ => crate::upload::upload(backend, &artifact, req),
            })
        }
        ("GET", ["api", "status"]) => status(backend),
        ("POST", ["api", "backup"]) => crate::backup::backup(backend),
        (_, ["api", "members", rest @ ..]) => crate::members::route(backend, req, rest),
        ("GET", ["api", "dht"]) => crate::dht::get(backend),
        ("GET", ["api", "topics"]) => crate::messaging::topics(backend),
        ("GET", ["api", "topics", topic]) => crate::messaging::topic(backend, topic),
        ("POST", ["api", "topics", topic, "messages"]) => crate::messaging::publish(backend, topic, &req.body),
        (_, ["api", "dead-letters", rest @ ..]) => crate::messaging::dead_letters(backend, req, rest),
        (_, ["api", "rollouts", rest @ ..]) => crate::rollouts::route(backend, req, rest),
        ("GET", ["api", "health"]) => health(backend),
        ("GET", ["api", "nodes"]) => crate::nodes::route(backend, "GET", &[], &req.body),
        ("GET", ["api", "nodes", id]) => crate::nodes::route(backend, "GET", &[id], &req.body),
        ("POST", ["api", "nodes", id, action @ ("drain" | "activate" | "shutdown")]) => {
            crate::nodes::route(backend, "POST", &[id, action], &req.body)
        }
        ("GET" | "POST", ["api", "scale"]) | ("DELETE", ["api", "scale", _]) => {
            crate::scaling::scale_route(backend, &req.method, &segments[2..], &req.body)
        }
        ("GET" | "POST", ["api", "controller", "config"]) => {
            crate::scaling::config_route(backend, &req.method, &req.body)
        }
        ("GET", ["health", "live"]) => Ok(crate::health::live()),
        (_, ["metrics"]) | (_, ["api", "metrics" | "invocation-metrics", ..]) => {
            Ok(crate::metrics::route(backend, req))
        }
        ("GET", ["health", "ready"]) => Ok(crate::health::ready(backend)),
        ("POST" | "PUT", ["api", "debug", "faults"]) => set_faults(backend, &req.body),
        ("DELETE", ["api", "debug", "faults"]) => backend.set_faults(Vec::new()).map(|()| Response::ok(json!({}))),
        // Routes go above: this arm answers whatever no route took (405 on a known path, else 404).
        _ => Err(crate::methods::unrouted(req)),
    };
    result.unwrap_or_else(Response::from)
}

/// An uploaded slice library with its integrity data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactUpload {
    pub bytes: Vec<u8>,
    /// The SHA-256 of `bytes`, computed here (and equal to every digest the client sent).
    pub sha256: [u8; 32],
    /// The ed25519 signature the client sent (`X-Aether-Signature`), not yet verified.
    pub signature: Option<[u8; 64]>,
}

fn health(backend: &dyn Backend) -> Result<Response, ApiError> {
    let view = backend.cluster_view()?;
    let ready = view.quorum && view.caught_up;
    let body = json!({
        "node": view.node,
        "ready": ready,
        "peers_connected": view.peers_connected(),
        "nodes": view.nodes.len(),
    });
    Ok(Response::new(if ready { 200 } else { 503 }, body))
}

fn status(backend: &dyn Backend) -> Result<Response, ApiError> {
    let s = backend.status()?;
    let members: Vec<_> =
        s.members.iter().map(|m| json!({ "id": m.id, "address": m.address, "alive": m.alive })).collect();
    Ok(Response::ok(json!({
        "node": s.node,
        "leader": s.leader,
        "quorum": s.quorum,
        "caught_up": s.caught_up,
        "members": members,
        "applied_slot": s.applied_slot,
        "pending_commands": s.pending_commands,
        "consensus_sends_refused": s.consensus_sends_refused,
        "lifecycle": crate::nodes::own_lifecycle(backend, &s.node),
    })))
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
            let quorum = self.connected >= 1;
            Ok(ClusterView { node: "node-1".into(), nodes, quorum, caught_up: true })
        }
        fn status(&self) -> Result<NodeStatus, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn kv_write(&self, command: kvstore::Command) -> Result<u64, ApiError> {
            match command {
                kvstore::Command::CompareAndSet { key: kvstore::AetherKey::ArtifactEntry { .. }, .. } => Ok(7),
                kvstore::Command::CompareAndSet { .. } => Err(ApiError::new(409, "version_mismatch", "fake")),
                _ => Ok(7),
            }
        }
        fn kv_write_once(&self, _: kvstore::Command, request: crate::RequestKey) -> Result<u64, ApiError> {
            Ok(if request == crate::RequestKey::derive("", "k-1") { 42 } else { 43 })
        }
        fn kv_get(&self, key: &kvstore::AetherKey, _stale: bool) -> Result<Option<KvEntry>, ApiError> {
            Ok((key.to_string() == "user/a").then(|| KvEntry {
                key: "user/a".into(),
                value: b"1".to_vec(),
                version: 2,
            }))
        }
        fn kv_list(&self, prefix: &str, _stale: bool) -> Result<Vec<KvEntry>, ApiError> {
            if prefix != "user/" {
                return Ok(Vec::new());
            }
            Ok(vec![KvEntry { key: "user/a".into(), value: b"1".to_vec(), version: 2 }])
        }
        fn artifact_known(&self, artifact: &kvstore::Artifact) -> bool {
            artifact.to_string() != "org.example:missing:1.0.0"
        }
        fn check_library(&self, _: &kvstore::Artifact, _: &ArtifactUpload) -> Result<(), ApiError> {
            Ok(())
        }
        fn store_library(
            &self,
            _: &kvstore::Artifact,
            _: &ArtifactUpload,
            _: &control::records::ArtifactRecord,
        ) -> Result<(), ApiError> {
            Ok(())
        }
        fn cache_library(&self, _: &kvstore::Artifact, _: &ArtifactUpload) -> Result<(), ApiError> {
            Ok(())
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

    fn call(fake: &Fake, method: &str, path: &str, query: &[(&str, &str)], body: &[u8]) -> Response {
        let query = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        route(
            fake,
            &Request { method: method.into(), path: path.into(), query, body: body.to_vec(), ..Request::default() },
        )
    }

    #[test]
    fn kv_routes_map_to_the_backend_and_statuses() {
        let fake = Fake { connected: 2, faults: Mutex::default() };
        let put = call(&fake, "PUT", "api/kv/user/a", &[], b"1");
        assert_eq!((put.status, put.body.clone()), (200, json!({"version": 7})));
        assert_eq!(call(&fake, "PUT", "api/kv/user/a", &[("version", "3")], b"1").status, 409);
        assert_eq!(call(&fake, "PUT", "api/kv/user/a", &[("version", "x")], b"1").status, 400);
        assert_eq!(call(&fake, "PUT", "api/kv/nonsense", &[], b"1").status, 400);
        let got = call(&fake, "GET", "api/kv/user/a", &[], b"");
        assert_eq!(got.body, json!({"key": "user/a", "value": "1", "version": 2}));
        assert_eq!(call(&fake, "GET", "api/kv/user/b", &[], b"").status, 404);
        let listed = call(&fake, "GET", "api/kv", &[("prefix", "user/")], b"");
        assert_eq!(listed.body["count"], 1);
    }

    #[test]
    fn blueprints_are_validated_before_anything_is_stored() {
        let fake = Fake { connected: 2, faults: Mutex::default() };
        let good = "name = \"shop\"\n[[slices]]\nartifact = \"org.example:echo:1.0.0\"\n";
        let created = call(&fake, "POST", "api/blueprints", &[], good.as_bytes());
        assert_eq!(created.status, 201, "{}", created.body);
        assert_eq!(created.body["slices"], json!(["org.example:echo:1.0.0"]));
        let unknown_key = "name = \"shop\"\ncolour = \"red\"\n";
        let refused = call(&fake, "POST", "api/blueprints", &[], unknown_key.as_bytes());
        assert_eq!(refused.status, 400);
        assert_eq!(refused.body["line"], 2);
        let missing = "name = \"shop\"\n[[slices]]\nartifact = \"org.example:missing:1.0.0\"\n";
        assert_eq!(call(&fake, "POST", "api/blueprints", &[], missing.as_bytes()).status, 400);
        assert_eq!(call(&fake, "GET", "api/blueprints/nope", &[], b"").status, 404);
    }

    #[test]
    fn fault_rules_are_validated() {
        let fake = Fake { connected: 2, faults: Mutex::default() };
        let post = |body: &str| {
            route(
                &fake,
                &Request {
                    method: "POST".into(),
                    path: "api/debug/faults".into(),
                    body: body.into(),
                    ..Request::default()
                },
            )
        };
        assert_eq!(post("not json").status, 400);
        assert_eq!(post(r#"{"rules":[{"action":"explode"}]}"#).status, 400);
        assert_eq!(post(r#"{"rules":[{"peer":"node-2","action":"drop"}]}"#).status, 200);
        assert_eq!(fake.faults.lock().unwrap().len(), 1);
    }

    fn upload_with(headers: &[(&str, &str)], body: &[u8]) -> Response {
        let fake = Fake { connected: 2, faults: Mutex::default() };
        let headers = headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect();
        let path = "api/artifacts/org.example/echo/1.0.0".to_string();
        route(&fake, &Request { method: "POST".into(), path, body: body.to_vec(), headers, ..Request::default() })
    }

    #[test]
    fn an_upload_is_checked_against_the_digests_the_client_sent() {
        let body = b"\x7fELF library";
        let hex = container::integrity::to_hex(&container::integrity::sha256(body));
        let plain = upload_with(&[], body);
        assert_eq!(plain.status, 201, "{}", plain.body);
        assert_eq!(plain.body["sha256"], json!(hex));
        assert_eq!(plain.body["signed"], json!(false));
        assert_eq!(upload_with(&[("X-Aether-Sha256", &hex.to_uppercase())], body).status, 201);

        let wrong = upload_with(&[("X-Aether-Sha256", &hex)], b"\x7fELF librar");
        assert_eq!(wrong.status, 400);
        assert_eq!(wrong.body["error"], json!("checksum_mismatch"), "{}", wrong.body);
        assert_eq!(upload_with(&[("X-Aether-Sha256", "abc")], body).status, 400);

        // sha-256 of the body, base64.
        let b64 = "BP8REwBCVnYKaPZQZLkxRtzlQaCqQg59l4j8X8xj89k=";
        assert_eq!(
            container::integrity::from_base64(b64).unwrap(),
            container::integrity::sha256(body).to_vec(),
            "test vector"
        );
        assert_eq!(upload_with(&[("Digest", &format!("md5=xyz, SHA-256={b64}"))], body).status, 201);
        assert_eq!(upload_with(&[("Content-Digest", &format!("sha-256=:{b64}:"))], body).status, 201);
        let other = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";
        assert_eq!(upload_with(&[("Content-Digest", &format!("sha-256=:{other}:"))], body).status, 400);
        assert_eq!(
            upload_with(&[("X-Aether-Sha256", &hex), ("Digest", &format!("sha-256={other}"))], body).status,
            400
        );

        let short = upload_with(&[("Content-Length", "100000")], body);
        assert_eq!(short.status, 400, "{}", short.body);
        assert_eq!(upload_with(&[("Content-Length", &body.len().to_string())], body).status, 201);

        let signature = "ab".repeat(64);
        let signed = upload_with(&[("X-Aether-Signature", &signature)], body);
        assert_eq!(signed.body["signed"], json!(true), "{}", signed.body);
        assert_eq!(upload_with(&[("X-Aether-Signature", "short")], body).status, 400);
    }

    #[test]
    fn kv_writes_with_an_idempotency_key_go_under_its_request_id_and_bad_keys_stop_at_the_edge() {
        let backend = Fake { connected: 1, faults: Mutex::default() };
        let write = |method: &str, key: Option<&str>| {
            let headers = key.map(|k| vec![("idempotency-key".to_string(), k.to_string())]).unwrap_or_default();
            route(
                &backend,
                &Request { method: method.into(), path: "api/kv/user/a".into(), headers, ..Request::default() },
            )
        };
        assert_eq!(write("PUT", None).body["version"], 7);
        assert_eq!(write("PUT", Some("k-1")).body["version"], 42);
        assert_eq!(write("DELETE", Some("k-1")).body["version"], 42);
        assert_eq!(write("PUT", Some("k-2")).body["version"], 43);
        assert_eq!(write("PUT", Some("k 1")).status, 400);
        assert_eq!(write("DELETE", Some("")).status, 400);
    }
}
