//! What clients are answered: the HTTP shape of apply results and failures, and what the most recent writes
//! answered, so a retried write that already applied (the consensus sessions refuse it as applied) gets the
//! answer its first attempt got.
//!
//! What it owns: the answer helpers, and a bounded, in-memory table from command id to (a digest of the
//! command's payload, its apply result), filled as decided slots apply on this node with the writes that
//! can be retried under their id (`retried_by_id`).
//! Invariants: at most `capacity` entries, the oldest forgotten first; an id is answered from here only when
//! the retry's payload digest equals the applied one (otherwise the request key was reused for a different
//! request). The table is not replicated and not persisted: after a restart, a snapshot install or once an
//! entry is forgotten, a retry of an applied write is answered "already applied" without its result.

use super::Waiter;
use consensus::CommandId;
use kvstore::{ApplyResult, Store};
use mgmt::{ApiError, KvEntry};
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// How many write results a node keeps for retries.
pub const RESULTS_KEPT: usize = 4096;

pub struct AppliedResults {
    by_id: HashMap<CommandId, (u64, ApplyResult)>,
    order: VecDeque<CommandId>,
    capacity: usize,
}

/// What a retry of an applied command is answered from.
#[derive(Debug, PartialEq, Eq)]
pub enum Earlier<'a> {
    /// The same request applied with this result.
    Same(&'a ApplyResult),
    /// The id applied with another payload: the key was reused for a different request.
    Different,
    /// This node no longer holds (or never held) the result.
    Unknown,
}

impl AppliedResults {
    pub fn new(capacity: usize) -> AppliedResults {
        AppliedResults { by_id: HashMap::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Records the result of `id`, which applied with a payload of digest `digest`.
    pub fn record(&mut self, id: CommandId, digest: u64, result: ApplyResult) {
        if self.by_id.insert(id, (digest, result)).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.by_id.remove(&oldest);
            }
        }
    }

    pub fn earlier(&self, id: CommandId, digest: u64) -> Earlier<'_> {
        match self.by_id.get(&id) {
            Some((applied, result)) if *applied == digest => Earlier::Same(result),
            Some(_) => Earlier::Different,
            None => Earlier::Unknown,
        }
    }
}

/// Whether a command's result is kept for retries. Only a write under a client's own request id is ever
/// retried under the same id, and those ids all have sequence 0 (`mgmt::RequestKey`: one session per
/// key); a node's own ids count up from 0 per boot, so its first command of each boot is kept too,
/// harmlessly. Keeping only these spares every other write a payload digest and a table entry.
pub fn retried_by_id(id: CommandId) -> bool {
    id.seq == 0
}

/// A digest of a command's payload, to tell a retry from a different request under the same id. Only
/// compared on this node, so the process's fixed-key hasher is enough.
pub fn payload_digest(payload: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    payload.hash(&mut hasher);
    hasher.finish()
}

pub(super) fn write_answer(result: ApplyResult) -> Result<u64, ApiError> {
    match result {
        ApplyResult::Ok { version } => Ok(version.0),
        ApplyResult::VersionMismatch { current } => Err(ApiError::new(
            409,
            "version_mismatch",
            match current {
                Some(v) => format!("the key is at version {}", v.0),
                None => "the key is absent".to_string(),
            },
        )),
        ApplyResult::NotFound => Err(ApiError::not_found("no such key")),
        ApplyResult::StoreFull => Err(ApiError::new(507, "store_full", "the control-plane store is at its limit")),
        ApplyResult::Malformed { reason } => Err(ApiError::bad_request(reason)),
        ApplyResult::QuotaExceeded { quota, limit } => Err(ApiError::new(
            507,
            "quota_exceeded",
            format!("the write would take its slice past its quota of {limit} {}", quota.as_str()),
        )),
    }
}

pub(super) fn answer_read(store: &Store, waiter: Waiter) {
    match waiter {
        Waiter::Get(key, reply) => drop(reply.send(Ok(store.get(&key).map(to_entry)))),
        Waiter::List(prefix, limit, reply) => {
            drop(reply.send(Ok(store.list(&prefix).take(limit).map(to_entry).collect())))
        }
        Waiter::Page(query, reply) => drop(reply.send(Ok(page(store, &query)))),
        Waiter::Backup(reply) => drop(reply.send(Ok((store.applied_slot().unwrap_or(0), store.snapshot_view())))),
        Waiter::Write(reply) => drop(reply.send(Err(ApiError::bad_request("a write is not a read")))),
        Waiter::SliceWrite(reply) => drop(reply.send(Err(ApiError::bad_request("a write is not a read")))),
        Waiter::Internal => {}
    }
}

pub(super) fn reused_request_id() -> ApiError {
    ApiError::new(422, "idempotency_key_reused", "this Idempotency-Key was used for a different request")
}

pub(super) fn fail(waiter: Waiter, error: ApiError) {
    match waiter {
        Waiter::Internal => {}
        Waiter::Write(reply) => drop(reply.send(Err(error))),
        Waiter::Get(_, reply) => drop(reply.send(Err(error))),
        Waiter::SliceWrite(reply) => drop(reply.send(Err(error))),
        Waiter::List(_, _, reply) => drop(reply.send(Err(error))),
        Waiter::Page(_, reply) => drop(reply.send(Err(error))),
        Waiter::Backup(reply) => drop(reply.send(Err(error))),
    }
}

/// One page of a listing: cut over the store's own entries, so only the page is copied.
pub(super) fn page(store: &Store, page: &mgmt::KvPage) -> (Vec<KvEntry>, bool) {
    let entries = store.list_after(&page.prefix, page.after.as_deref());
    let (taken, more) = page.cut(entries, |item| item.0, |item| item.1.value().len());
    (taken.into_iter().map(|(_, entry)| to_entry(entry)).collect(), more)
}

pub(super) fn to_entry(entry: &kvstore::Entry) -> KvEntry {
    KvEntry { key: entry.key().to_string(), value: entry.value().to_vec(), version: entry.version().0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore::Revision;

    fn id(client: u64) -> CommandId {
        CommandId { client, seq: 0 }
    }

    #[test]
    fn a_retry_with_the_same_payload_gets_the_result_and_another_payload_does_not() {
        let mut results = AppliedResults::new(8);
        let digest = payload_digest(b"put a 1");
        results.record(id(1), digest, ApplyResult::Ok { version: Revision(7) });
        assert_eq!(results.earlier(id(1), digest), Earlier::Same(&ApplyResult::Ok { version: Revision(7) }));
        assert_eq!(results.earlier(id(1), payload_digest(b"put a 2")), Earlier::Different);
        assert_eq!(results.earlier(id(2), digest), Earlier::Unknown);
    }

    #[test]
    fn the_results_of_writes_under_a_request_key_are_kept_and_others_not() {
        for key in ["order-17", "a", "3f1c0d2e-uuid"] {
            let request = mgmt::RequestKey::derive("scope", key);
            assert!(retried_by_id(CommandId { client: request.client, seq: request.seq }), "{key}");
        }
        assert!(!retried_by_id(CommandId { client: 9, seq: 1 }));
        assert!(!retried_by_id(CommandId { client: 9, seq: 4095 }));
    }

    #[test]
    fn the_oldest_results_are_forgotten_at_the_bound() {
        let mut results = AppliedResults::new(2);
        for client in 1..=3 {
            results.record(id(client), client, ApplyResult::NotFound);
        }
        assert_eq!(results.earlier(id(1), 1), Earlier::Unknown);
        assert_eq!(results.earlier(id(2), 2), Earlier::Same(&ApplyResult::NotFound));
        assert_eq!(results.earlier(id(3), 3), Earlier::Same(&ApplyResult::NotFound));
        // Recording an id again does not count it twice.
        results.record(id(3), 3, ApplyResult::NotFound);
        assert_eq!(results.earlier(id(2), 2), Earlier::Same(&ApplyResult::NotFound));
    }
}
