//! What a slice's `ctx.kv()` reaches: the node's implementation of [`SliceState`], installed on the
//! container with `Container::set_slice_state`. The container passes the calling instance's artifact
//! (`group:artifact:version`); the implementation picks the namespace (per blueprint and artifact base,
//! never per version) and enforces quotas. Every method blocks the calling (slice) thread, never the
//! node's event loop, and returns within the deadline it is given.

use std::time::Duration;

/// One entry of a slice's namespace; `key` is relative to the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub version: u64,
}

/// Why a state operation failed. `Timeout` on a write means it may still apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    /// Compare-and-set (or a conditional delete) found another version (`None`: the key is absent).
    VersionMismatch { current: Option<u64> },
    /// The value, key or list limit is over a bound: `what` names it, `limit` is the bound.
    TooLarge { what: &'static str, limit: u64 },
    /// The slice's quota (`what`: "bytes" or "keys") would be exceeded.
    QuotaExceeded { what: &'static str, limit: u64 },
    /// The key or prefix is not acceptable (message says why).
    Invalid(String),
    /// The store could not be reached or the node is stopping; nothing was applied.
    Unavailable(String),
    /// No answer within the deadline; a write may still apply.
    Timeout,
}

/// The node side of `ctx.kv()`.
pub trait SliceState: Send + Sync {
    /// Linearizable read.
    fn get(&self, artifact: &str, key: &str, deadline: Duration) -> Result<Option<SliceEntry>, StateError>;
    /// Unconditional write; returns the new version.
    fn put(&self, artifact: &str, key: &str, value: &[u8], deadline: Duration) -> Result<u64, StateError>;
    /// Delete; `Ok(false)` when the key was absent.
    fn delete(&self, artifact: &str, key: &str, deadline: Duration) -> Result<bool, StateError>;
    /// Write only if the key is at `expected` (`None`: only if absent); returns the new version.
    fn compare_and_set(
        &self,
        artifact: &str,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        deadline: Duration,
    ) -> Result<u64, StateError>;
    /// Up to `limit` entries whose key starts with `prefix`, in key order (linearizable).
    fn list(
        &self,
        artifact: &str,
        prefix: &str,
        limit: usize,
        deadline: Duration,
    ) -> Result<Vec<SliceEntry>, StateError>;
    /// Deliver every later change under `prefix` of this artifact's namespace to `method` of the calling
    /// instance, in commit order, until the instance stops. The body delivered is JSON:
    /// `{"key": "...", "version": N, "value": "..."|null, "encoding": "base64"?, "deleted": bool}`.
    fn watch(&self, artifact: &str, instance: u64, prefix: &str, method: &str) -> Result<(), StateError>;
    /// The instance stopped: drop its watches.
    fn unwatch_instance(&self, artifact: &str, instance: u64);
}
