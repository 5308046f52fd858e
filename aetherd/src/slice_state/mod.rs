//! The node side of a slice's `ctx.kv()`: [`NodeSliceState`], the [`SliceState`] the node installs on its
//! container (`install`).
//!
//! What it owns: checking what a slice sends (keys, prefixes, values, list limits, watch methods) before
//! anything leaves the slice's thread; the [`SliceRequest`]s it hands the event loop, which the loop resolves
//! and submits (`node::slice_kv`); the mapping of the loop's answers to [`StateError`]s; and the watch
//! subsystem ([`watch`]).
//!
//! Namespace: a slice's keys live under `data/{blueprint}/{group:artifact}/` ([`kvstore::DataScope`]), per
//! blueprint and artifact base, never per version. The loop derives the scope from the calling artifact's
//! target record (`targets/{artifact}`, written by the leader from the blueprint that deploys it; see
//! [`scope::resolve`]): every node holds the same replicated record, and the scope goes into the command, so
//! no replica derives it again. An artifact without a target record (not deployed, or its blueprint deleted)
//! has no state: `Unavailable`. The slice sends only a relative path ([`kvstore::DataPath`]: name characters
//! in non-empty segments, never `.` or `..`), so it can neither name another slice's scope nor any
//! control-plane key.
//!
//! Invariants:
//! - every call blocks only the calling thread, for at most its deadline; the loop resolves, submits and
//!   answers through channels, and never waits on a slice;
//! - reads (`get`, `list`) are linearizable: read barriers ordered through consensus, as the management
//!   API's; writes are [`kvstore::Command::Bounded`] carrying the slice's quota, enforced at apply on every
//!   replica;
//! - `Unavailable` only when nothing was submitted; a write whose answer is missing after hand-off is
//!   `Timeout` (it may still apply).

pub mod debug;
pub mod scope;
pub mod watch;

use crate::node::Command;
use container::state::{SliceEntry, SliceState, StateError};
use kvstore::{ApplyResult, Artifact, DataPath, Name, Revision, DATA_PATH_BYTES_MAX, VALUE_BYTES_MAX};
use mgmt::{ApiError, KvEntry};
use net::NetHandle;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
pub use watch::{Deliver, WatchHub};

/// Most entries one `list` returns.
pub const LIST_LIMIT_MAX: usize = 1000;

/// What a slice asks of the loop, for the loop to resolve against the calling artifact's scope.
pub struct SliceRequest {
    pub artifact: Artifact,
    pub op: SliceOp,
}

/// One operation, with the channel its answer goes back on.
pub enum SliceOp {
    Get {
        path: DataPath,
        reply: mpsc::Sender<Result<Option<KvEntry>, ApiError>>,
    },
    /// `prefix` is relative and checked ([`DataPath::check_prefix`]).
    List {
        prefix: String,
        limit: usize,
        reply: mpsc::Sender<Result<Vec<KvEntry>, ApiError>>,
    },
    Write {
        write: SliceWrite,
        reply: mpsc::Sender<Result<ApplyResult, ApiError>>,
    },
    /// Register a watch on the loop's turn, so it sees exactly the changes applied after it.
    Watch {
        watch: watch::NewWatch,
        reply: mpsc::Sender<Result<(), StateError>>,
    },
}

impl SliceOp {
    /// Answers the operation with `error` (its scope could not be resolved, or the node cannot serve).
    pub fn fail(self, error: ApiError) {
        match self {
            SliceOp::Get { reply, .. } => drop(reply.send(Err(error))),
            SliceOp::List { reply, .. } => drop(reply.send(Err(error))),
            SliceOp::Write { reply, .. } => drop(reply.send(Err(error))),
            SliceOp::Watch { reply, .. } => drop(reply.send(Err(read_error(&error)))),
        }
    }
}

/// A write relative to the slice's scope.
pub enum SliceWrite {
    Put { path: DataPath, value: Vec<u8> },
    Delete { path: DataPath },
    CompareAndSet { path: DataPath, expected: Option<u64>, value: Vec<u8> },
}

impl SliceWrite {
    /// The command for this write in `scope`, bounded by `quota`.
    pub fn bounded(self, scope: &kvstore::DataScope, quota: control::blueprint::quota::SliceQuota) -> kvstore::Command {
        let write = match self {
            SliceWrite::Put { path, value } => kvstore::Command::Put { key: scope.key(path), value },
            SliceWrite::Delete { path } => kvstore::Command::Remove { key: scope.key(path) },
            SliceWrite::CompareAndSet { path, expected, value } => {
                kvstore::Command::CompareAndSet { key: scope.key(path), expected: expected.map(Revision), value }
            }
        };
        kvstore::Command::Bounded { max_keys: quota.max_keys, max_bytes: quota.max_bytes, write: Box::new(write) }
    }
}

/// The node's slice state: requests to its event loop, watches in `hub`, delivered by `deliver`.
pub struct NodeSliceState {
    handle: Arc<OnceLock<NetHandle<Command>>>,
    hub: Arc<WatchHub>,
    deliver: Arc<dyn Deliver>,
}

impl NodeSliceState {
    pub fn new(handle: Arc<OnceLock<NetHandle<Command>>>, hub: Arc<WatchHub>, deliver: Arc<dyn Deliver>) -> Self {
        NodeSliceState { handle, hub, deliver }
    }

    /// Hands `op` to the loop and waits up to `deadline` for its answer. `Err(Lost)` when the answer never came
    /// (`Timeout`) or the loop dropped it (`Dropped`); a refusal to take the request is `Unavailable` at once.
    fn ask<T>(
        &self,
        artifact: &Artifact,
        deadline: Duration,
        make: impl FnOnce(mpsc::Sender<Result<T, ApiError>>) -> SliceOp,
    ) -> Result<Result<T, ApiError>, Lost> {
        let handle = self.handle.get().ok_or(Lost::NotTaken("the node is starting"))?;
        let (tx, rx) = mpsc::channel();
        let request = SliceRequest { artifact: artifact.clone(), op: make(tx) };
        handle.command(Command::SliceKv(request)).map_err(|_| Lost::NotTaken("the node is stopping"))?;
        rx.recv_timeout(deadline).map_err(|e| match e {
            mpsc::RecvTimeoutError::Timeout => Lost::Timeout,
            mpsc::RecvTimeoutError::Disconnected => Lost::Dropped,
        })
    }

    fn read<T>(
        &self,
        artifact: &Artifact,
        deadline: Duration,
        make: impl FnOnce(mpsc::Sender<Result<T, ApiError>>) -> SliceOp,
    ) -> Result<T, StateError> {
        match self.ask(artifact, deadline, make) {
            Ok(answer) => answer.map_err(|e| read_error(&e)),
            Err(Lost::NotTaken(why)) => Err(StateError::Unavailable(why.to_owned())),
            Err(Lost::Timeout) => Err(StateError::Timeout),
            Err(Lost::Dropped) => Err(StateError::Unavailable("the node dropped the read (stopping?)".to_owned())),
        }
    }

    fn write(&self, artifact: &str, write: SliceWrite, deadline: Duration) -> Result<ApplyResult, StateError> {
        let artifact = parse_artifact(artifact)?;
        match self.ask(&artifact, deadline, |reply| SliceOp::Write { write, reply }) {
            Ok(answer) => answer.map_err(|e| write_error(&e)),
            Err(Lost::NotTaken(why)) => Err(StateError::Unavailable(why.to_owned())),
            // Handed off: it may still apply.
            Err(Lost::Timeout | Lost::Dropped) => Err(StateError::Timeout),
        }
    }
}

/// Why an answer did not come back.
enum Lost {
    /// The loop never took the request: nothing was submitted.
    NotTaken(&'static str),
    Timeout,
    Dropped,
}

impl SliceState for NodeSliceState {
    fn get(&self, artifact: &str, key: &str, deadline: Duration) -> Result<Option<SliceEntry>, StateError> {
        let (artifact, path) = (parse_artifact(artifact)?, check_key(key)?);
        let entry = self.read(&artifact, deadline, |reply| SliceOp::Get { path, reply })?;
        entry.map(|e| to_slice_entry(&e)).transpose()
    }

    fn put(&self, artifact: &str, key: &str, value: &[u8], deadline: Duration) -> Result<u64, StateError> {
        let write = SliceWrite::Put { path: check_key(key)?, value: check_value(value)? };
        written(self.write(artifact, write, deadline)?)
    }

    fn delete(&self, artifact: &str, key: &str, deadline: Duration) -> Result<bool, StateError> {
        match self.write(artifact, SliceWrite::Delete { path: check_key(key)? }, deadline)? {
            ApplyResult::NotFound => Ok(false),
            other => written(other).map(|_| true),
        }
    }

    fn compare_and_set(
        &self,
        artifact: &str,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        deadline: Duration,
    ) -> Result<u64, StateError> {
        let write = SliceWrite::CompareAndSet { path: check_key(key)?, expected, value: check_value(value)? };
        written(self.write(artifact, write, deadline)?)
    }

    fn list(
        &self,
        artifact: &str,
        prefix: &str,
        limit: usize,
        deadline: Duration,
    ) -> Result<Vec<SliceEntry>, StateError> {
        let artifact = parse_artifact(artifact)?;
        check_prefix(prefix)?;
        if limit > LIST_LIMIT_MAX {
            return Err(StateError::TooLarge { what: "list limit", limit: LIST_LIMIT_MAX as u64 });
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let prefix = prefix.to_owned();
        let entries = self.read(&artifact, deadline, |reply| SliceOp::List { prefix, limit, reply })?;
        entries.iter().map(to_slice_entry).collect()
    }

    fn watch(&self, artifact: &str, instance: u64, prefix: &str, method: &str) -> Result<(), StateError> {
        let artifact = parse_artifact(artifact)?;
        check_prefix(prefix)?;
        let method = Name::parse_as(method, "slice method").map_err(|e| StateError::Invalid(e.to_string()))?;
        let watch = watch::NewWatch {
            artifact: artifact.clone(),
            instance,
            relative_prefix: prefix.to_owned(),
            method: method.to_string(),
            deliver: Arc::clone(&self.deliver),
        };
        let handle = self.handle.get().ok_or_else(|| StateError::Unavailable("the node is starting".into()))?;
        let (reply, answer) = mpsc::channel();
        let request = SliceRequest { artifact, op: SliceOp::Watch { watch, reply } };
        handle
            .command(Command::SliceKv(request))
            .map_err(|_| StateError::Unavailable("the node is stopping".into()))?;
        match answer.recv_timeout(watch::REGISTER_DEADLINE) {
            Ok(registered) => registered,
            // The loop has it: the watch may still be registered, and ends with the instance like any other.
            Err(mpsc::RecvTimeoutError::Timeout) => Err(StateError::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(StateError::Unavailable("the node is stopping".into())),
        }
    }

    fn unwatch_instance(&self, artifact: &str, instance: u64) {
        self.hub.unwatch_instance(artifact, instance);
    }
}

/// Installs `state` as what slices' `ctx.kv()` reaches on `container`.
pub fn install(container: &container::Container, state: Arc<NodeSliceState>) {
    container.set_slice_state(state);
}

fn parse_artifact(artifact: &str) -> Result<Artifact, StateError> {
    Artifact::parse(artifact).map_err(|e| StateError::Invalid(format!("calling artifact: {e}")))
}

/// A slice's key, checked: its length, then its characters and segments.
pub fn check_key(key: &str) -> Result<DataPath, StateError> {
    if key.len() > DATA_PATH_BYTES_MAX {
        return Err(StateError::TooLarge { what: "key", limit: DATA_PATH_BYTES_MAX as u64 });
    }
    DataPath::parse(key).map_err(|e| StateError::Invalid(e.to_string()))
}

/// A slice's list or watch prefix, checked like a key except that it may be empty or end in `/`.
pub fn check_prefix(prefix: &str) -> Result<(), StateError> {
    if prefix.len() > DATA_PATH_BYTES_MAX {
        return Err(StateError::TooLarge { what: "prefix", limit: DATA_PATH_BYTES_MAX as u64 });
    }
    DataPath::check_prefix(prefix).map_err(|e| StateError::Invalid(e.to_string()))
}

fn check_value(value: &[u8]) -> Result<Vec<u8>, StateError> {
    if value.len() > VALUE_BYTES_MAX {
        return Err(StateError::TooLarge { what: "value", limit: VALUE_BYTES_MAX as u64 });
    }
    Ok(value.to_vec())
}

/// The relative key of a stored `data/{blueprint}/{group:artifact}/{path}` key.
pub fn relative_key(full: &str) -> Option<&str> {
    let rest = full.strip_prefix("data/")?;
    let mut parts = rest.splitn(3, '/');
    let (_blueprint, _base) = (parts.next()?, parts.next()?);
    parts.next()
}

fn to_slice_entry(entry: &KvEntry) -> Result<SliceEntry, StateError> {
    let key = relative_key(&entry.key).ok_or_else(|| {
        StateError::Unavailable(format!("the store answered a key outside slice data: {}", entry.key))
    })?;
    Ok(SliceEntry { key: key.to_owned(), value: entry.value.clone(), version: entry.version })
}

/// The outcome of an applied write as the slice sees it.
fn written(result: ApplyResult) -> Result<u64, StateError> {
    match result {
        ApplyResult::Ok { version } => Ok(version.get()),
        ApplyResult::VersionMismatch { current } => {
            Err(StateError::VersionMismatch { current: current.map(Revision::get) })
        }
        ApplyResult::NotFound => Err(StateError::VersionMismatch { current: None }),
        ApplyResult::QuotaExceeded { quota, limit } => Err(StateError::QuotaExceeded { what: quota.as_str(), limit }),
        ApplyResult::StoreFull => {
            Err(StateError::Unavailable("the cluster's store is full; nothing was written".into()))
        }
        ApplyResult::Malformed { reason } => Err(StateError::Invalid(reason)),
    }
}

/// A read's failure: nothing changed, whatever it was.
fn read_error(e: &ApiError) -> StateError {
    match e.status {
        504 => StateError::Timeout,
        400 => StateError::Invalid(e.detail.clone()),
        _ => StateError::Unavailable(e.detail.clone()),
    }
}

/// A write's failure: `Unavailable` only where the node says nothing was submitted (503).
fn write_error(e: &ApiError) -> StateError {
    match e.status {
        503 => StateError::Unavailable(e.detail.clone()),
        400 => StateError::Invalid(e.detail.clone()),
        413 => StateError::TooLarge { what: "command", limit: kvstore::COMMAND_BYTES_MAX as u64 },
        _ => StateError::Timeout,
    }
}

#[cfg(test)]
mod tests;
