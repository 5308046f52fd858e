//! The management API's view of a node: the [`mgmt::Backend`] implementation, which turns each management
//! request into a [`Command`] for the node's event loop and waits for the reply with a timeout, so a stuck
//! loop shows up as a 504, never as a hung API.
//!
//! Invariant: nothing here touches node state; every answer comes from the loop (or, for artifacts, from
//! the node's repository folder, which the loop does not own, and the storage plane, reached through
//! [`crate::blobs::Blobs`], whose every chunk operation is itself a command to the loop with a deadline).

use crate::node::{Command, LOOP_REPLY_TIMEOUT};
use crate::replication::{WriteReply, CLIENT_DEADLINE};
use control::records::ArtifactRecord;
use log::{debug, error};
use mgmt::{ApiError, Backend, ClusterView, FaultSpec, KvEntry, NodeStatus};
use net::{Direction, FaultAction, FaultRule, NetHandle};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// The management API's view of this node.
pub struct NodeBackend {
    pub handle: NetHandle<Command>,
    /// Fault injection is a test facility: off unless the process was started with AETHER_FAULT_INJECTION=1.
    pub faults_allowed: bool,
    /// This node's slice repository (Maven layout).
    pub repository: std::path::PathBuf,
    /// The node's HTTP ports and their accepting flags, for `/health/ready` (filled once they run).
    pub http_ports: Arc<std::sync::Mutex<Vec<HttpPort>>>,
    /// Whether the app port has a live handler thread (`None` before it runs).
    pub app_serving: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// `[artifacts] trusted_keys`: when set, an upload must carry a signature by one of them.
    pub trusted_keys: container::TrustedKeys,
    /// Every node's metrics as this node holds them (read without the loop).
    pub metrics: Arc<telemetry::Board>,
    /// The cluster event log as this node holds it (read directly: it is not loop state).
    pub events: Arc<crate::events::EventLog>,
    /// This node's live settings.
    pub settings: Arc<crate::live::LiveSettings>,
    /// Blueprint dry runs running now (bounded: any viewer may ask for one).
    pub dry_runs: mgmt::DryRuns,
    /// The routes slices declare, for the blueprint route check.
    pub declared_routes: Arc<crate::deploy::DeclaredRoutes>,
    /// `[artifacts] max_bytes`.
    pub artifact_bytes_max: usize,
    /// Loads uploads in a staging container to check them.
    pub library_check: Arc<crate::artifacts::LibraryCheck>,
    /// The storage plane, for artifact bytes.
    pub blobs: crate::blobs::Blobs,
    /// Fetches a library the folder lacks from the storage plane.
    pub provision: Arc<crate::deploy::Provisioner>,
}

/// An HTTP port's name and its accepting flag.
pub type HttpPort = (String, Arc<std::sync::atomic::AtomicBool>);

impl NodeBackend {
    fn ask<T>(&self, timeout: Duration, make: impl FnOnce(mpsc::Sender<T>) -> Command) -> Result<T, ApiError> {
        let (tx, rx) = mpsc::channel();
        self.handle.command(make(tx)).map_err(|_| ApiError::unavailable("the node is stopping"))?;
        rx.recv_timeout(timeout).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => ApiError::timeout("the node did not answer in time"),
            mpsc::RecvTimeoutError::Disconnected => ApiError::unavailable("the node dropped the request (stopping?)"),
        })
    }
}

impl NodeBackend {
    /// A write: 503 when the loop never took it; once taken, a missing answer is 504 (it may still apply).
    fn ask_write(&self, make: impl FnOnce(WriteReply) -> Command) -> Result<u64, ApiError> {
        let (tx, rx) = mpsc::channel();
        self.handle.command(make(tx.into())).map_err(|_| ApiError::unavailable("the node is stopping"))?;
        match rx.recv_timeout(CLIENT_DEADLINE + Duration::from_secs(1)) {
            Ok(answer) => answer,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(ApiError::timeout("the node did not answer in time; the write may still apply"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                Err(ApiError::timeout("the node dropped the write without an answer; it may still apply"))
            }
        }
    }
}

impl Backend for NodeBackend {
    fn dry_runs(&self) -> Option<&mgmt::DryRuns> {
        Some(&self.dry_runs)
    }

    fn cluster_view(&self) -> Result<ClusterView, ApiError> {
        self.ask(LOOP_REPLY_TIMEOUT, Command::ClusterView)
    }

    fn status(&self) -> Result<NodeStatus, ApiError> {
        self.ask(LOOP_REPLY_TIMEOUT, Command::Status)
    }

    fn members(&self) -> Result<serde_json::Value, ApiError> {
        self.ask(LOOP_REPLY_TIMEOUT, |reply| Command::Members(crate::node::MembersRequest::List(reply)))?
    }

    fn add_member(&self, id: &str, address: std::net::SocketAddr) -> Result<serde_json::Value, ApiError> {
        let id = id.to_string();
        self.ask_write(|reply| Command::Members(crate::node::MembersRequest::Add { id, address, reply }))?;
        self.members()
    }

    fn remove_member(&self, id: &str) -> Result<serde_json::Value, ApiError> {
        let id = id.to_string();
        self.ask_write(|reply| Command::Members(crate::node::MembersRequest::Remove { id, reply }))?;
        self.members()
    }

    fn dht(&self) -> Result<mgmt::DhtView, ApiError> {
        self.ask(LOOP_REPLY_TIMEOUT, Command::DhtStats)?
            .ok_or_else(|| ApiError::unavailable("the storage plane is not running on this node"))
    }

    fn topics(&self) -> Result<Vec<mgmt::TopicView>, ApiError> {
        self.ask(LOOP_REPLY_TIMEOUT, crate::messaging::topics_request)
    }

    fn publish(&self, topic: &str, payload: &[u8]) -> Result<mgmt::Published, ApiError> {
        crate::messaging::publish_as_api(&self.handle, topic, payload)
    }

    fn replay_dead_letter(&self, key: &kvstore::AetherKey) -> Result<mgmt::Published, ApiError> {
        crate::messaging::replay_dead_letter(self, &self.handle, key)
    }

    fn metrics(&self) -> Option<Arc<telemetry::Board>> {
        Some(Arc::clone(&self.metrics))
    }

    fn kv_write(&self, command: kvstore::Command) -> Result<u64, ApiError> {
        self.ask_write(|reply| Command::KvWrite(command, reply))
    }

    fn kv_write_once(&self, command: kvstore::Command, request: mgmt::RequestKey) -> Result<u64, ApiError> {
        self.ask_write(|reply| Command::KvWriteOnce(command, request, reply))
    }

    /// The outcome goes to `done` on the event loop, when the write's slot applies (or it is refused, or
    /// expires): the management port's thread does not wait for it. A write the loop never took (the node
    /// stopping) is answered 504, as one whose answer was lost.
    fn kv_write_then(&self, command: kvstore::Command, request: Option<mgmt::RequestKey>, done: mgmt::WriteDone) {
        let reply = WriteReply::then(done);
        let command = match request {
            Some(request) => Command::KvWriteOnce(command, request, reply),
            None => Command::KvWrite(command, reply),
        };
        if self.handle.command(command).is_err() {
            debug!("a write came while the node stops");
        }
    }

    fn kv_get(&self, key: &kvstore::AetherKey, stale: bool) -> Result<Option<KvEntry>, ApiError> {
        let key = key.clone();
        self.ask(CLIENT_DEADLINE + Duration::from_secs(1), |reply| Command::KvGet { key, stale, reply })?
    }

    fn kv_list(&self, prefix: &str, stale: bool) -> Result<Vec<KvEntry>, ApiError> {
        let prefix = prefix.to_string();
        self.ask(CLIENT_DEADLINE + Duration::from_secs(1), |reply| Command::KvList { prefix, stale, reply })?
    }

    fn kv_page(&self, page: &mgmt::KvPage, stale: bool) -> Result<(Vec<KvEntry>, bool), ApiError> {
        let page = page.clone();
        self.ask(CLIENT_DEADLINE + Duration::from_secs(1), |reply| Command::KvPage { page, stale, reply })?
    }

    /// The store view comes from the loop right after a read barrier applied; it is serialised here, on the
    /// management thread, so the loop never spends the time.
    fn backup(&self) -> Result<(u64, Vec<u8>), ApiError> {
        let (slot, view) = self.ask(CLIENT_DEADLINE + Duration::from_secs(1), Command::Backup)??;
        let bytes = kvstore::snapshot::encode(&view).map_err(|e| {
            error!("cannot serialise the store for a backup at slot {slot}: {e}");
            ApiError::new(500, "internal", format!("cannot serialise the store: {e}"))
        })?;
        Ok((slot, bytes))
    }

    fn artifact_bytes_max(&self) -> usize {
        self.artifact_bytes_max
    }

    fn check_library(&self, artifact: &kvstore::Artifact, upload: &mgmt::ArtifactUpload) -> Result<(), ApiError> {
        if !self.trusted_keys.is_empty() {
            let Some(signature) = &upload.signature else {
                return Err(ApiError::new(
                    400,
                    "unsigned",
                    "this node loads only signed libraries ([artifacts] trusted_keys); send the signature in \
                     X-Aether-Signature (cargo xtask sign); nothing was stored",
                ));
            };
            if !self.trusted_keys.verify(&upload.sha256, signature) {
                return Err(ApiError::new(
                    400,
                    "bad_signature",
                    "X-Aether-Signature does not verify against any trusted key; nothing was stored",
                ));
            }
        }
        self.library_check.check(artifact, &upload.bytes, &upload.sha256).map_err(|e| match e {
            crate::artifacts::CheckError::Refused(reason) => {
                ApiError::new(422, "not_a_slice", format!("{reason}; nothing was stored"))
            }
            crate::artifacts::CheckError::Node(reason) => {
                ApiError::unavailable(format!("this node could not check the library: {reason}; nothing was stored"))
            }
        })
    }

    fn store_library(
        &self,
        artifact: &kvstore::Artifact,
        upload: &mgmt::ArtifactUpload,
        record: &ArtifactRecord,
    ) -> Result<(), ApiError> {
        self.blobs.store(artifact, &upload.bytes, record).map_err(|e| {
            ApiError::unavailable(format!("the storage plane did not take {artifact}: {e}; nothing was recorded"))
        })
    }

    fn cache_library(&self, artifact: &kvstore::Artifact, upload: &mgmt::ArtifactUpload) -> Result<(), ApiError> {
        let cached = crate::artifacts::Artifact {
            coords: artifact.to_string(),
            bytes: &upload.bytes,
            sha256: upload.sha256,
            signature: upload.signature,
        };
        crate::artifacts::store(&self.repository, &cached)
            .and_then(|path| crate::artifacts::mark_from_catalog(&path))
            .map_err(|e| {
                error!("cannot cache artifact {artifact}: {e}");
                ApiError::new(500, "internal", "cannot write the library to this node's repository; its log says why")
            })
    }

    fn read_library(&self, artifact: &kvstore::Artifact, record: &ArtifactRecord) -> Result<Vec<u8>, ApiError> {
        let cached = || crate::artifacts::read_cached(&self.repository, artifact, record.size, &record.sha256);
        if let Some(bytes) = cached() {
            return Ok(bytes);
        }
        // A copy whose bytes differ from the catalog (damaged beside an intact checksum file) is dropped, so
        // the fetch below replaces it.
        if self.repository.join(artifact.repository_path()).exists() {
            crate::artifacts::remove(&self.repository, artifact).map_err(|e| ApiError::new(500, "internal", e))?;
        }
        self.provision.ensure(artifact).map_err(ApiError::unavailable)?;
        cached().ok_or_else(|| {
            ApiError::unavailable(format!("{artifact}: this node's copy does not match the catalog after a fetch"))
        })
    }

    fn delete_chunks(&self, artifact: &kvstore::Artifact, record: &ArtifactRecord) -> Result<(), ApiError> {
        self.blobs.delete(artifact, record).map_err(|e| ApiError::unavailable(e.reason))
    }

    fn delete_library(&self, artifact: &kvstore::Artifact, record: &ArtifactRecord) -> Result<(), ApiError> {
        let local = crate::artifacts::remove(&self.repository, artifact);
        self.delete_chunks(artifact, record)?;
        local.map_err(|e| ApiError::new(500, "internal", e))
    }

    /// In the catalog, or in this node's folder (a seed loads as it is).
    fn artifact_known(&self, artifact: &kvstore::Artifact) -> bool {
        let key = kvstore::AetherKey::ArtifactEntry { artifact: artifact.clone() };
        self.repository.join(artifact.repository_path()).is_file()
            || self.kv_get(&key, true).is_ok_and(|entry| entry.is_some())
    }

    fn slice_routes(&self, artifact: &kvstore::Artifact) -> Result<Vec<(String, String)>, String> {
        // A version only the catalog holds is fetched first, so its routes are checked on every node.
        self.provision.ensure(artifact)?;
        self.declared_routes.routes(artifact)
    }

    fn set_faults(&self, rules: Vec<FaultSpec>) -> Result<(), ApiError> {
        if !self.faults_allowed {
            return Err(ApiError::new(
                403,
                "forbidden",
                "fault injection is off; start aetherd with AETHER_FAULT_INJECTION=1",
            ));
        }
        let rules = rules.into_iter().map(to_rule).collect();
        self.handle.set_faults(rules).map_err(|_| ApiError::unavailable("the node is stopping"))
    }

    fn serving_problems(&self) -> Vec<String> {
        match &self.app_serving {
            Some(serving) if !serving.load(std::sync::atomic::Ordering::SeqCst) => {
                vec!["the app port has no live handler thread: every one is stuck in a slice".to_owned()]
            }
            _ => Vec::new(),
        }
    }

    fn artifacts(&self) -> Result<Vec<mgmt::ArtifactInfo>, ApiError> {
        Ok(crate::repository_listing::list(&self.repository))
    }

    fn events(&self, since: Option<mgmt::EventSince>, limit: usize) -> Result<serde_json::Value, ApiError> {
        let (page, next) = self.events.read(since, limit, crate::managers::wall_ms());
        let events: Vec<serde_json::Value> = page.iter().map(crate::events::Stored::to_json).collect();
        Ok(serde_json::json!({ "events": events, "next": next }))
    }

    fn event_stream(&self, since: Option<mgmt::EventSince>) -> Result<Box<dyn httpd::StreamSource>, ApiError> {
        let cursor = self.events.cursor(since, crate::managers::wall_ms());
        Ok(Box::new(crate::events::sse::EventStream::new(Arc::clone(&self.events), cursor)))
    }

    fn record_event(&self, kind: &'static str, data: serde_json::Value) {
        self.events.record(crate::managers::wall_ms(), self.events.me(), kind, data);
    }

    fn settable(&self) -> Vec<mgmt::Setting> {
        crate::live::SETTABLE
            .iter()
            .map(|s| mgmt::Setting {
                key: s.key.to_string(),
                default: self.settings.start_value(s.key).unwrap_or(s.min),
                min: s.min,
                max: s.max,
                description: s.description.to_string(),
            })
            .collect()
    }

    fn effective_config(&self) -> serde_json::Value {
        serde_json::json!(self.settings.effective())
    }

    fn log_level_default(&self) -> String {
        crate::logger::start_default().to_string().to_lowercase()
    }

    fn http_ports(&self) -> Vec<(String, bool)> {
        let ports = self.http_ports.lock().unwrap_or_else(|e| e.into_inner());
        ports.iter().map(|(name, flag)| (name.clone(), flag.load(std::sync::atomic::Ordering::SeqCst))).collect()
    }
}

fn to_rule(spec: FaultSpec) -> FaultRule {
    let direction = match spec.direction.as_str() {
        "inbound" => Direction::Inbound,
        "outbound" => Direction::Outbound,
        _ => Direction::Both,
    };
    let action = match spec.action.as_str() {
        "delay" => FaultAction::Delay(Duration::from_millis(spec.delay_ms)),
        _ => FaultAction::Drop,
    };
    FaultRule { peer: spec.peer, direction, action }
}
