//! A [`Backend`] for unit tests backed by a local KV store: reads answer from it, writes apply to it, three
//! configured nodes of which `node-3` is unreachable, a repository that knows every `org.example` artifact,
//! and a storage plane and cache in memory (a library is "a slice" when its bytes contain its coordinates'
//! `id-version`, standing in for the node's descriptor check).

use crate::api::{ArtifactUpload, Backend, ClusterView, FaultSpec, NodeStatus, PeerView};
use crate::error::ApiError;
use crate::kv::KvEntry;
use crate::listings::ArtifactInfo;
use crate::server::{Request, Response};
use kvstore::{AetherKey, ApplyResult, Command, KvState};
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct StoreBackend {
    pub kv: Mutex<KvState>,
    pub writes: Mutex<usize>,
    pub dry_runs: crate::DryRuns,
    /// Chunks in the "storage plane", by `{artifact}/{sha256}`.
    pub blobs: Mutex<BTreeMap<String, Vec<u8>>>,
    /// This node's cached libraries, by coordinates.
    pub cache: Mutex<BTreeMap<String, Vec<u8>>>,
    /// `[artifacts] max_bytes`; 0 means the default.
    pub bytes_max: usize,
    /// A catalog record another upload writes while this one stores its bytes: (coordinates, record).
    pub racing: Mutex<Option<(String, String)>>,
}

impl StoreBackend {
    pub fn with(entries: &[(&str, &str)]) -> StoreBackend {
        let backend = StoreBackend::default();
        for (key, value) in entries {
            let command = Command::Put { key: key.parse().unwrap(), value: value.as_bytes().to_vec() };
            backend.kv.lock().unwrap().apply_command(command, &mut |_| {});
        }
        backend
    }

    pub fn put(&self, key: &str, value: &str) {
        let command = Command::Put { key: key.parse().unwrap(), value: value.as_bytes().to_vec() };
        self.kv.lock().unwrap().apply_command(command, &mut |_| {});
    }

    pub fn remove(&self, key: &str) {
        let command = Command::Remove { key: key.parse().unwrap() };
        self.kv.lock().unwrap().apply_command(command, &mut |_| {});
    }

    pub fn kv_len(&self) -> usize {
        self.kv.lock().unwrap().list("").count()
    }

    pub fn call_query(&self, path: &str, name: &str, value: &str) -> Response {
        let query = vec![(name.to_string(), value.to_string())];
        let request = Request { method: "GET".into(), path: path.into(), query, ..Request::default() };
        crate::api::route(self, &request)
    }

    pub fn call(&self, method: &str, path: &str, body: &str) -> Response {
        let request = Request { method: method.into(), path: path.into(), body: body.into(), ..Request::default() };
        crate::api::route(self, &request)
    }
}

impl Backend for StoreBackend {
    fn dry_runs(&self) -> Option<&crate::DryRuns> {
        Some(&self.dry_runs)
    }

    fn cluster_view(&self) -> Result<ClusterView, ApiError> {
        let peer = |id: &str, connected: bool, is_self: bool| PeerView {
            id: id.into(),
            address: "127.0.0.1:1".into(),
            connected,
            last_seen_ms: None,
            is_self,
        };
        let nodes = vec![peer("node-1", true, true), peer("node-2", true, false), peer("node-3", false, false)];
        Ok(ClusterView { node: "node-1".into(), nodes, quorum: true, caught_up: true })
    }
    fn status(&self) -> Result<NodeStatus, ApiError> {
        Err(ApiError::unavailable("test"))
    }
    fn kv_write(&self, command: Command) -> Result<u64, ApiError> {
        *self.writes.lock().unwrap() += 1;
        match self.kv.lock().unwrap().apply_command(command, &mut |_| {}) {
            ApplyResult::Ok { version } => Ok(version.0),
            other => Err(ApiError::new(409, "conflict", format!("{other:?}"))),
        }
    }
    fn kv_get(&self, key: &AetherKey, _stale: bool) -> Result<Option<KvEntry>, ApiError> {
        let kv = self.kv.lock().unwrap();
        let found = kv.list("").find(|e| e.key() == key).map(|e| KvEntry {
            key: e.key().to_string(),
            value: e.value().to_vec(),
            version: e.version().0,
        });
        Ok(found)
    }
    fn backup(&self) -> Result<(u64, Vec<u8>), ApiError> {
        let kv = self.kv.lock().unwrap();
        let bytes = kvstore::snapshot::encode(&kv).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
        Ok((kv.applied_slot().unwrap_or(0), bytes))
    }

    fn kv_list(&self, prefix: &str, _stale: bool) -> Result<Vec<KvEntry>, ApiError> {
        let kv = self.kv.lock().unwrap();
        let entries = kv.list(prefix).map(|e| KvEntry {
            key: e.key().to_string(),
            value: e.value().to_vec(),
            version: e.version().0,
        });
        Ok(entries.collect())
    }
    fn artifact_known(&self, artifact: &kvstore::Artifact) -> bool {
        artifact.to_string().starts_with("org.example:")
    }
    fn set_faults(&self, _: Vec<FaultSpec>) -> Result<(), ApiError> {
        Err(ApiError::unavailable("test"))
    }
    fn artifact_bytes_max(&self) -> usize {
        if self.bytes_max == 0 {
            crate::ARTIFACT_BYTES_MAX
        } else {
            self.bytes_max
        }
    }
    fn check_library(&self, artifact: &kvstore::Artifact, upload: &ArtifactUpload) -> Result<(), ApiError> {
        let identity = format!("{}-{}", artifact.id(), artifact.version());
        if upload.bytes.windows(identity.len()).any(|w| w == identity.as_bytes()) {
            return Ok(());
        }
        Err(ApiError::new(422, "bad_descriptor", format!("the library does not say it is {identity}")))
    }
    fn store_library(
        &self,
        artifact: &kvstore::Artifact,
        upload: &ArtifactUpload,
        record: &control::records::ArtifactRecord,
    ) -> Result<(), ApiError> {
        let key = format!("{artifact}/{}/{}", crate::repository_path::hex(&upload.sha256), record.upload);
        self.blobs.lock().unwrap().insert(key, upload.bytes.clone());
        if let Some((coords, record)) = self.racing.lock().unwrap().take() {
            self.put(&format!("artifacts/{coords}"), &record);
        }
        Ok(())
    }
    fn cache_library(&self, artifact: &kvstore::Artifact, upload: &ArtifactUpload) -> Result<(), ApiError> {
        self.cache.lock().unwrap().insert(artifact.to_string(), upload.bytes.clone());
        Ok(())
    }
    fn read_library(
        &self,
        artifact: &kvstore::Artifact,
        record: &control::records::ArtifactRecord,
    ) -> Result<Vec<u8>, ApiError> {
        let key = format!("{artifact}/{}/{}", record.sha256, record.upload);
        let bytes = self.blobs.lock().unwrap().get(&key).cloned();
        bytes.ok_or_else(|| ApiError::new(503, "unavailable", format!("no chunks of {key}")))
    }
    fn delete_chunks(
        &self,
        artifact: &kvstore::Artifact,
        record: &control::records::ArtifactRecord,
    ) -> Result<(), ApiError> {
        self.blobs.lock().unwrap().remove(&format!("{artifact}/{}/{}", record.sha256, record.upload));
        Ok(())
    }
    fn delete_library(
        &self,
        artifact: &kvstore::Artifact,
        record: &control::records::ArtifactRecord,
    ) -> Result<(), ApiError> {
        self.cache.lock().unwrap().remove(&artifact.to_string());
        self.delete_chunks(artifact, record)
    }
    fn artifacts(&self) -> Result<Vec<ArtifactInfo>, ApiError> {
        Ok(vec![ArtifactInfo { artifact: "org.example:echo:1.0.0".into(), sha256: None, signed: false, bytes: 9 }])
    }
}
