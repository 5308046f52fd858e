//! [`KvState`]: the replicated part of the store, and how a decided batch changes it.
//!
//! Every replica holds the same `KvState` after applying the same batches in the same slots: applying is a
//! pure function of the state and the payload bytes (ordered map, no clock, no randomness, limits that are
//! constants of the state machine or carried in the command, as a bounded write's quota, rather than per-node
//! configuration).
//!
//! Invariants:
//! - every stored key is the canonical string of its [`AetherKey`], so entries order and prefix-match by it;
//! - `revision` is the number of changes ever applied, and every entry's version is in `1..=revision`;
//! - `stored_bytes` is the sum of key and value lengths, at most [`STORE_BYTES_MAX`]; the entry count is at
//!   most [`ENTRIES_MAX`];
//! - `applied_slot` only grows; a batch for a slot at or below it is refused as a whole.
//! - values are immutable once stored (a write replaces the entry), so a clone of the state is a
//!   consistent view that shares every value with the original;
//! - `usage` holds, for every `data/` scope with at least one key, exactly its key count and the bytes of its
//!   relative paths plus values ([`crate::data`]): a recount of the entries, kept up to date by every change
//!   and rebuilt by recounting when a state is restored.

use crate::command::{check_bounded, Command};
use crate::data::{Quota, ScopeUsage};
use crate::error::Error;
use crate::key::AetherKey;
use crate::revision::Revision;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Most entries the store holds; a write of a new key beyond it is answered [`ApplyResult::StoreFull`].
pub const ENTRIES_MAX: usize = 1 << 20;
/// Most bytes of keys plus values the store holds; a write growing it beyond is [`ApplyResult::StoreFull`].
pub const STORE_BYTES_MAX: usize = 256 * 1024 * 1024;

/// One stored key with its value and version. The value is shared, so cloning a state (a snapshot view)
/// copies no value bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    key: AetherKey,
    value: Arc<[u8]>,
    version: Revision,
}

impl Entry {
    pub(crate) fn new(key: AetherKey, value: Arc<[u8]>, version: Revision) -> Self {
        Entry { key, value, version }
    }

    pub fn key(&self) -> &AetherKey {
        &self.key
    }

    pub fn value(&self) -> &[u8] {
        &self.value
    }

    /// The revision at which this key was last written.
    pub fn version(&self) -> Revision {
        self.version
    }
}

/// What applying one command did, to answer the client that submitted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyResult {
    /// The command changed the store; `version` is the revision of the change (the key's new version, or the
    /// revision of its removal).
    Ok { version: Revision },
    /// A compare-and-set or compare-and-remove found another version (`None`: the key is absent).
    VersionMismatch { current: Option<Revision> },
    /// A `Remove` of an absent key. Nothing changed.
    NotFound,
    /// A write that would break [`ENTRIES_MAX`] or [`STORE_BYTES_MAX`] (or exhaust the revision counter).
    StoreFull,
    /// The payload is not a valid command. Nothing changed.
    Malformed { reason: String },
    /// A [`Command::Bounded`] write would grow its scope's `quota` measure past `limit`. Nothing changed.
    QuotaExceeded { quota: Quota, limit: u64 },
}

/// A change just applied, borrowed from the state, for watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    /// The key's canonical string, which watch prefixes match against.
    pub key_str: &'a str,
    pub key: &'a AetherKey,
    /// The new value, or `None` when the key was removed.
    pub value: Option<&'a [u8]>,
    /// The revision of this change.
    pub version: Revision,
}

/// The replicated store: entries by canonical key, the revision, and the last applied slot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvState {
    entries: BTreeMap<String, Entry>,
    revision: Revision,
    applied_slot: Option<u64>,
    stored_bytes: usize,
    /// Usage of every `data/` scope that holds keys, by scope prefix.
    usage: BTreeMap<String, ScopeUsage>,
}

impl KvState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies the decided batch of `slot`, payload by payload, in order; calls `on_change` for each change.
    ///
    /// Returns one result per payload. A payload that does not decode is [`ApplyResult::Malformed`] and the
    /// batch goes on. Fails only with [`Error::StaleSlot`] (nothing applied) when `slot` is not after the last
    /// applied slot, which makes replaying a log over a newer snapshot harmless.
    pub fn apply<B: AsRef<[u8]>>(
        &mut self,
        slot: u64,
        batch: impl IntoIterator<Item = B>,
        on_change: &mut dyn FnMut(&Change<'_>),
    ) -> Result<Vec<ApplyResult>, Error> {
        if let Some(applied_slot) = self.applied_slot.filter(|applied| slot <= *applied) {
            return Err(Error::StaleSlot { slot, applied_slot });
        }
        let results = batch.into_iter().map(|payload| self.apply_payload(payload.as_ref(), on_change)).collect();
        self.applied_slot = Some(slot);
        Ok(results)
    }

    fn apply_payload(&mut self, payload: &[u8], on_change: &mut dyn FnMut(&Change<'_>)) -> ApplyResult {
        match Command::decode(payload) {
            Ok(command) => self.apply_command(command, on_change),
            Err(e) => ApplyResult::Malformed { reason: e.to_string() },
        }
    }

    /// Applies one already decoded command. Used by [`KvState::apply`]; public for tests and tools that build
    /// states without going through bytes.
    pub fn apply_command(&mut self, command: Command, on_change: &mut dyn FnMut(&Change<'_>)) -> ApplyResult {
        let key_str = command.key().to_string();
        let current = self.entries.get(&key_str).map(Entry::version);
        match command {
            Command::Guarded { guards, write } => {
                let failed = guards.iter().map(|(key, expected)| (self.get(key).map(Entry::version), *expected));
                match failed.into_iter().find(|(current, expected)| current != expected) {
                    Some((current, _)) => ApplyResult::VersionMismatch { current },
                    None => self.apply_command(*write, on_change),
                }
            }
            Command::Bounded { max_keys, max_bytes, write } => {
                if let Err(reason) = check_bounded(&write) {
                    return ApplyResult::Malformed { reason };
                }
                match self.quota_refusal(&write, current, max_keys, max_bytes) {
                    Some(refusal) => refusal,
                    None => self.apply_command(*write, on_change),
                }
            }
            Command::Put { key, value } => self.write(key_str, key, value, on_change),
            Command::Remove { .. } if current.is_none() => ApplyResult::NotFound,
            Command::Remove { .. } => self.delete(&key_str, on_change),
            Command::CompareAndSet { key, expected, value } if current == expected => {
                self.write(key_str, key, value, on_change)
            }
            Command::CompareAndRemove { expected, .. } if current == Some(expected) => self.delete(&key_str, on_change),
            Command::CompareAndSet { .. } | Command::CompareAndRemove { .. } => {
                ApplyResult::VersionMismatch { current }
            }
        }
    }

    /// The refusal of a bounded `write` (to a `data/` key, whose current version is `current`), when it
    /// would apply and grow its scope's keys past `max_keys` or its bytes past `max_bytes`.
    fn quota_refusal(
        &self,
        write: &Command,
        current: Option<Revision>,
        max_keys: u64,
        max_bytes: u64,
    ) -> Option<ApplyResult> {
        let value_len = match write {
            Command::Put { value, .. } => value.len(),
            Command::CompareAndSet { expected, value, .. } if *expected == current => value.len(),
            // Deletes only shrink a scope; a write that will not apply changes nothing.
            _ => return None,
        };
        let (scope, path_len) = data_scope(write.key())?;
        let usage = self.usage.get(&scope).copied().unwrap_or_default();
        let old = self.entries.get(&write.key().to_string()).map(|e| (path_len + e.value.len()) as u64);
        if old.is_none() && usage.keys.saturating_add(1) > max_keys {
            return Some(ApplyResult::QuotaExceeded { quota: Quota::Keys, limit: max_keys });
        }
        let bytes = usage.bytes.saturating_sub(old.unwrap_or(0)).saturating_add((path_len + value_len) as u64);
        if bytes > max_bytes && bytes > usage.bytes {
            return Some(ApplyResult::QuotaExceeded { quota: Quota::Bytes, limit: max_bytes });
        }
        None
    }

    fn write(
        &mut self,
        key_str: String,
        key: AetherKey,
        value: Vec<u8>,
        on_change: &mut dyn FnMut(&Change<'_>),
    ) -> ApplyResult {
        let old_bytes = self.entries.get(&key_str).map(|e| key_str.len() + e.value.len());
        let stored_bytes = self.stored_bytes - old_bytes.unwrap_or(0) + key_str.len() + value.len();
        let admitted = within_limits(self.entries.len(), old_bytes.is_none(), stored_bytes);
        let (Some(version), true) = (self.revision.next(), admitted) else {
            return ApplyResult::StoreFull;
        };
        self.revision = version;
        self.stored_bytes = stored_bytes;
        if let Some((scope, path_len)) = data_scope(&key) {
            let old = old_bytes.map(|old| (old - key_str.len() + path_len) as u64);
            let usage = self.usage.entry(scope).or_default();
            usage.keys += u64::from(old.is_none());
            usage.bytes = usage.bytes.saturating_sub(old.unwrap_or(0)).saturating_add((path_len + value.len()) as u64);
        }
        self.entries.insert(key_str.clone(), Entry { key, value: Arc::from(value), version });
        if let Some((key_str, entry)) = self.entries.get_key_value(&key_str) {
            on_change(&Change { key_str, key: &entry.key, value: Some(&entry.value), version });
        }
        ApplyResult::Ok { version }
    }

    fn delete(&mut self, key_str: &str, on_change: &mut dyn FnMut(&Change<'_>)) -> ApplyResult {
        let Some(version) = self.revision.next() else {
            return ApplyResult::StoreFull;
        };
        let Some(removed) = self.entries.remove(key_str) else {
            return ApplyResult::NotFound;
        };
        self.revision = version;
        self.stored_bytes -= key_str.len() + removed.value.len();
        if let Some((scope, path_len)) = data_scope(&removed.key) {
            forget(&mut self.usage, scope, (path_len + removed.value.len()) as u64);
        }
        on_change(&Change { key_str, key: &removed.key, value: None, version });
        ApplyResult::Ok { version }
    }

    pub fn get(&self, key: &AetherKey) -> Option<&Entry> {
        self.entries.get(&key.to_string())
    }

    /// Entries whose canonical key starts with `prefix`, in key order. `""` lists everything.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(move |(key_str, _)| key_str.starts_with(prefix))
            .map(|(_, entry)| entry)
    }

    /// Entries under `prefix` whose canonical keys sort after `after` (all of them without it), in key order,
    /// with those keys: where a page of a listing starts, found by the map rather than by a scan.
    pub fn list_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        self.entries
            .range::<str, _>((start, Bound::Unbounded))
            .take_while(move |(key_str, _)| key_str.starts_with(prefix))
            .map(|(key_str, entry)| (key_str.as_str(), entry))
    }

    /// The number of changes applied so far; the version the next change will get is one more.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The last slot whose batch was applied, `None` before the first.
    pub fn applied_slot(&self) -> Option<u64> {
        self.applied_slot
    }

    /// The same entries and revision with no slot applied: the state a new consensus log starts from
    /// (restoring a backup into a new cluster, whose slots count from 0 again).
    pub fn without_applied_slot(mut self) -> Self {
        self.applied_slot = None;
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes of keys plus values held, the quantity [`STORE_BYTES_MAX`] bounds.
    pub fn stored_bytes(&self) -> usize {
        self.stored_bytes
    }

    /// The usage of the `data/` scope with prefix `scope` (`data/{blueprint}/{group:artifact}/`); zero when
    /// it holds no key.
    pub fn scope_usage(&self, scope: &str) -> ScopeUsage {
        self.usage.get(scope).copied().unwrap_or_default()
    }

    /// The usage of every `data/` scope that holds keys, by scope prefix.
    pub fn scope_usages(&self) -> impl Iterator<Item = (&str, ScopeUsage)> {
        self.usage.iter().map(|(scope, usage)| (scope.as_str(), *usage))
    }

    /// Every entry with its canonical key, in key order (what a snapshot writes).
    pub(crate) fn entries(&self) -> impl ExactSizeIterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    /// Builds a state from parts already validated by the snapshot decoder.
    pub(crate) fn from_validated(
        entries: BTreeMap<String, Entry>,
        revision: Revision,
        applied_slot: Option<u64>,
    ) -> Self {
        let stored_bytes = entries.iter().map(|(k, e)| k.len() + e.value.len()).sum();
        let usage = recount_usage(&entries);
        KvState { entries, revision, applied_slot, stored_bytes, usage }
    }
}

/// The scope prefix and relative path length of a `data/` key.
fn data_scope(key: &AetherKey) -> Option<(String, usize)> {
    match key {
        AetherKey::Data { blueprint, base, path } => {
            Some((crate::DataScope::new(blueprint.clone(), base.clone()).prefix(), path.as_str().len()))
        }
        _ => None,
    }
}

/// Takes one key of `bytes` off `scope`, dropping the scope once it holds nothing.
fn forget(usage: &mut BTreeMap<String, ScopeUsage>, scope: String, bytes: u64) {
    if let std::collections::btree_map::Entry::Occupied(mut held) = usage.entry(scope) {
        let left = held.get_mut();
        left.keys = left.keys.saturating_sub(1);
        left.bytes = left.bytes.saturating_sub(bytes);
        if left.keys == 0 {
            held.remove();
        }
    }
}

/// The usage of every `data/` scope, counted from the entries.
pub(crate) fn recount_usage(entries: &BTreeMap<String, Entry>) -> BTreeMap<String, ScopeUsage> {
    let mut usage: BTreeMap<String, ScopeUsage> = BTreeMap::new();
    for (_, entry) in entries.range::<str, _>((Bound::Included("data/"), Bound::Unbounded)) {
        let Some((scope, path_len)) = data_scope(&entry.key) else { break };
        let counted = usage.entry(scope).or_default();
        counted.keys += 1;
        counted.bytes += (path_len + entry.value.len()) as u64;
    }
    usage
}

/// Whether a write leaving `stored_bytes` behind, adding a key when `adds_key`, stays within the limits.
fn within_limits(entries_len: usize, adds_key: bool, stored_bytes: usize) -> bool {
    let entries_after = entries_len + usize::from(adds_key);
    entries_after <= ENTRIES_MAX && stored_bytes <= STORE_BYTES_MAX
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> AetherKey {
        AetherKey::parse(s).unwrap()
    }

    fn put(k: &str, v: &[u8]) -> Vec<u8> {
        Command::Put { key: key(k), value: v.to_vec() }.encode().unwrap()
    }

    fn apply(state: &mut KvState, slot: u64, batch: &[Vec<u8>]) -> Vec<ApplyResult> {
        state.apply(slot, batch, &mut |_| {}).unwrap()
    }

    fn run(state: &mut KvState, command: Command) -> ApplyResult {
        state.apply_command(command, &mut |_| {})
    }

    #[test]
    fn versions_are_the_revision_of_the_last_write() {
        let mut state = KvState::new();
        let results = apply(&mut state, 1, &[put("user/a", b"1"), put("user/b", b"2"), put("user/a", b"3")]);
        let versions: Vec<_> = [1, 2, 3].map(|v| ApplyResult::Ok { version: Revision(v) }).into();
        assert_eq!(results, versions);
        assert_eq!(state.get(&key("user/a")).map(Entry::version), Some(Revision(3)));
        assert_eq!(state.get(&key("user/b")).map(Entry::value), Some(&b"2"[..]));
        assert_eq!((state.revision(), state.applied_slot()), (Revision(3), Some(1)));
    }

    #[test]
    fn malformed_payloads_do_not_stop_the_batch() {
        let mut state = KvState::new();
        let results = apply(&mut state, 1, &[vec![1, 2, 3], put("user/a", b"1")]);
        assert!(matches!(results[0], ApplyResult::Malformed { .. }));
        assert_eq!(results[1], ApplyResult::Ok { version: Revision(1) });
    }

    #[test]
    fn stale_slots_are_refused_whole() {
        let mut state = KvState::new();
        apply(&mut state, 5, &[put("user/a", b"1")]);
        let err = state.apply(5, &[put("user/b", b"1")], &mut |_| {}).unwrap_err();
        assert_eq!(err, Error::StaleSlot { slot: 5, applied_slot: 5 });
        assert_eq!(state.len(), 1);
        assert!(state.apply(9, Vec::<Vec<u8>>::new(), &mut |_| {}).is_ok(), "gaps (null slots) are fine");
    }

    #[test]
    fn remove_of_an_absent_key_changes_nothing() {
        let mut state = KvState::new();
        assert_eq!(run(&mut state, Command::Remove { key: key("user/a") }), ApplyResult::NotFound);
        assert_eq!(state.revision(), Revision::ZERO);
    }

    #[test]
    fn compare_and_set_none_creates_only_when_absent() {
        let mut state = KvState::new();
        let create = Command::CompareAndSet { key: key("schedules/g:a/t"), expected: None, value: b"1".to_vec() };
        assert_eq!(run(&mut state, create.clone()), ApplyResult::Ok { version: Revision(1) });
        let current = Some(Revision(1));
        assert_eq!(run(&mut state, create), ApplyResult::VersionMismatch { current });
    }

    #[test]
    fn compare_and_set_checks_the_version() {
        let mut state = KvState::new();
        run(&mut state, Command::Put { key: key("user/a"), value: b"1".to_vec() });
        let stale = Command::CompareAndSet { key: key("user/a"), expected: Some(Revision(9)), value: vec![] };
        let current = Some(Revision(1));
        assert_eq!(run(&mut state, stale), ApplyResult::VersionMismatch { current });
        let fresh = Command::CompareAndSet { key: key("user/a"), expected: current, value: b"2".to_vec() };
        assert_eq!(run(&mut state, fresh), ApplyResult::Ok { version: Revision(2) });
        let absent = Command::CompareAndSet { key: key("user/z"), expected: current, value: vec![] };
        assert_eq!(run(&mut state, absent), ApplyResult::VersionMismatch { current: None });
    }

    #[test]
    fn a_guarded_write_applies_only_while_every_guard_holds() {
        let mut state = KvState::new();
        run(&mut state, Command::Put { key: key("nodes/n3/lease"), value: b"1".to_vec() });
        run(&mut state, Command::Put { key: key("user/a"), value: b"1".to_vec() });
        let guarded = |lease: u64| Command::Guarded {
            guards: vec![(key("nodes/n3/lease"), Some(Revision(lease))), (key("nodes/leader"), None)],
            write: Box::new(Command::CompareAndRemove { key: key("user/a"), expected: Revision(2) }),
        };
        // The lease moved on (renewed at revision 1, now 3): nothing changes.
        run(&mut state, Command::Put { key: key("nodes/n3/lease"), value: b"2".to_vec() });
        assert_eq!(run(&mut state, guarded(1)), ApplyResult::VersionMismatch { current: Some(Revision(3)) });
        assert_eq!(state.revision(), Revision(3));
        assert!(state.get(&key("user/a")).is_some());
        assert_eq!(run(&mut state, guarded(3)), ApplyResult::Ok { version: Revision(4) });
        assert!(state.get(&key("user/a")).is_none());
    }

    #[test]
    fn compare_and_remove_checks_the_version() {
        let mut state = KvState::new();
        run(&mut state, Command::Put { key: key("user/a"), value: b"1".to_vec() });
        let stale = Command::CompareAndRemove { key: key("user/a"), expected: Revision(2) };
        let current = Some(Revision(1));
        assert_eq!(run(&mut state, stale), ApplyResult::VersionMismatch { current });
        let fresh = Command::CompareAndRemove { key: key("user/a"), expected: Revision(1) };
        assert_eq!(run(&mut state, fresh.clone()), ApplyResult::Ok { version: Revision(2) });
        assert_eq!(run(&mut state, fresh), ApplyResult::VersionMismatch { current: None });
        assert!(state.is_empty());
    }

    #[test]
    fn a_listing_starts_after_the_key_given() {
        let mut state = KvState::new();
        for name in ["user/a", "user/b", "user/c", "user/d"] {
            run(&mut state, Command::Put { key: key(name), value: b"v".to_vec() });
        }
        let keys = |prefix, after| state.list_after(prefix, after).map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
        assert_eq!(keys("user/", None), ["user/a", "user/b", "user/c", "user/d"]);
        assert_eq!(keys("user/", Some("user/a")), ["user/b", "user/c", "user/d"]);
        assert_eq!(keys("user/", Some("user/bb")), ["user/c", "user/d"]);
        assert_eq!(keys("user/b", Some("a")), ["user/b"], "a start before the prefix is the prefix");
        assert!(keys("user/", Some("user/d")).is_empty());
        assert!(keys("user/b", Some("user/c")).is_empty(), "past the prefix");
    }

    #[test]
    fn list_is_ordered_and_respects_the_prefix() {
        let mut state = KvState::new();
        let keys = ["user/b", "user/a/x", "user/a", "slices/n1/g:a:1.0.0", "user/ab"];
        apply(&mut state, 1, &keys.map(|k| put(k, b"")));
        let listed: Vec<String> = state.list("user/a").map(|e| e.key().to_string()).collect();
        assert_eq!(listed, ["user/a", "user/a/x", "user/ab"]);
        assert_eq!(state.list("").count(), 5);
        assert_eq!(state.list("zzz").count(), 0);
    }

    #[test]
    fn changes_are_reported_in_apply_order() {
        let mut state = KvState::new();
        let mut seen = Vec::new();
        let batch = [put("user/a", b"1"), Command::Remove { key: key("user/a") }.encode().unwrap()];
        state
            .apply(1, &batch, &mut |c| seen.push((c.key_str.to_owned(), c.value.map(<[u8]>::to_vec), c.version)))
            .unwrap();
        let expected =
            [("user/a".to_owned(), Some(b"1".to_vec()), Revision(1)), ("user/a".to_owned(), None, Revision(2))];
        assert_eq!(seen, expected);
    }

    #[test]
    fn stored_bytes_track_keys_and_values() {
        let mut state = KvState::new();
        apply(&mut state, 1, &[put("user/a", b"123"), put("user/a", b"1")]);
        assert_eq!(state.stored_bytes(), "user/a".len() + 1);
        run(&mut state, Command::Remove { key: key("user/a") });
        assert_eq!(state.stored_bytes(), 0);
    }

    #[test]
    fn writes_past_the_byte_limit_are_refused() {
        let mut state = KvState::new();
        run(&mut state, Command::Put { key: key("user/a"), value: vec![0; 100] });
        state.stored_bytes = STORE_BYTES_MAX - 10;
        let grow = Command::Put { key: key("user/b"), value: vec![0; 10] };
        assert_eq!(run(&mut state, grow), ApplyResult::StoreFull);
        let shrink = Command::Put { key: key("user/a"), value: vec![0; 50] };
        assert!(matches!(run(&mut state, shrink), ApplyResult::Ok { .. }));
    }

    #[test]
    fn the_entry_limit_only_stops_new_keys() {
        assert!(within_limits(ENTRIES_MAX - 1, true, 0));
        assert!(!within_limits(ENTRIES_MAX, true, 0));
        assert!(within_limits(ENTRIES_MAX, false, 0));
        assert!(!within_limits(0, false, STORE_BYTES_MAX + 1));
    }

    #[test]
    fn an_exhausted_revision_counter_refuses_writes() {
        let mut state = KvState::from_validated(BTreeMap::new(), Revision(u64::MAX), None);
        let put = Command::Put { key: key("user/a"), value: vec![] };
        assert_eq!(run(&mut state, put), ApplyResult::StoreFull);
    }
}
