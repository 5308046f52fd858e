//! Property tests of slice-data quotas: the usage the state machine keeps for every `data/` scope equals a
//! recount of its entries after any sequence of commands, across snapshots and restores, and bounded writes
//! never take a scope past limits it was within.

mod common;

use kvstore::{AetherKey, ApplyResult, Command, KvState, Quota, ScopeUsage, Store, WatchLimits};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// Every scope's usage, counted from the entries the state lists.
fn recount(state: &KvState) -> BTreeMap<String, ScopeUsage> {
    let mut usage: BTreeMap<String, ScopeUsage> = BTreeMap::new();
    for entry in state.list("data/") {
        let AetherKey::Data { blueprint, base, path } = entry.key() else { panic!("{} under data/", entry.key()) };
        let scope = kvstore::DataScope::new(blueprint.clone(), base.clone()).prefix();
        let counted = usage.entry(scope).or_default();
        counted.keys += 1;
        counted.bytes += (path.as_str().len() + entry.value().len()) as u64;
    }
    usage
}

fn kept(state: &KvState) -> BTreeMap<String, ScopeUsage> {
    state.scope_usages().map(|(scope, usage)| (scope.to_owned(), usage)).collect()
}

proptest! {
    #[test]
    fn usage_is_a_recount_after_any_history_and_across_snapshots(
        first in common::batches(),
        second in common::batches(),
    ) {
        let mut store = Store::default();
        let mut slot = 0;
        for batch in &first {
            slot += 1;
            store.apply(slot, batch).unwrap();
            prop_assert_eq!(kept(store.state()), recount(store.state()));
        }
        let mut restored = Store::from_snapshot(&store.snapshot().unwrap(), WatchLimits::default()).unwrap();
        prop_assert_eq!(kept(restored.state()), recount(store.state()));
        for batch in &second {
            slot += 1;
            prop_assert_eq!(store.apply(slot, batch).unwrap(), restored.apply(slot, batch).unwrap());
            prop_assert_eq!(kept(restored.state()), recount(restored.state()));
        }
        prop_assert_eq!(store.state(), restored.state());
    }

    #[test]
    fn bounded_writes_keep_a_scope_within_its_limits(
        writes in proptest::collection::vec(common::command_on(
            proptest::sample::select(vec!["data/s/g:a/k", "data/s/g:a/k/2", "data/s/g:a/l", "data/s/g:a/m"])
                .prop_map(|s| AetherKey::parse(s).unwrap())), 0..40),
        max_keys in 0..4u64,
        max_bytes in 0..60u64,
    ) {
        let mut state = KvState::new();
        for write in writes {
            let bounded = Command::Bounded { max_keys, max_bytes, write: Box::new(write) };
            let result = state.apply_command(bounded, &mut |_| {});
            if let ApplyResult::QuotaExceeded { quota, limit } = result {
                prop_assert_eq!(limit, if quota == Quota::Keys { max_keys } else { max_bytes });
            }
            let usage = state.scope_usage("data/s/g:a/");
            prop_assert!(usage.keys <= max_keys && usage.bytes <= max_bytes, "{usage:?}");
        }
    }
}

#[test]
fn a_full_scope_refuses_growth_but_takes_overwrites_that_fit_and_deletes() {
    let key = |s: &str| AetherKey::parse(s).unwrap();
    let bounded = |write: Command| Command::Bounded { max_keys: 2, max_bytes: 10, write: Box::new(write) };
    let put = |k: &str, v: &[u8]| bounded(Command::Put { key: key(k), value: v.to_vec() });
    let mut state = KvState::new();
    let mut run = |c: Command| state.apply_command(c, &mut |_| {});
    assert!(matches!(run(put("data/s/g:a/a", b"123")), ApplyResult::Ok { .. }), "a + 3 bytes: 4 of 10");
    assert!(matches!(run(put("data/s/g:a/b", b"1234")), ApplyResult::Ok { .. }), "b + 4 bytes: 9 of 10");
    assert_eq!(run(put("data/s/g:a/c", b"")), ApplyResult::QuotaExceeded { quota: Quota::Keys, limit: 2 });
    assert_eq!(run(put("data/s/g:a/a", b"12345")), ApplyResult::QuotaExceeded { quota: Quota::Bytes, limit: 10 });
    assert!(matches!(run(put("data/s/g:a/a", b"1")), ApplyResult::Ok { .. }), "shrinking fits");
    assert!(matches!(run(put("data/t/g:a/c", b"")), ApplyResult::Ok { .. }), "another scope has its own quota");
    let stale = bounded(Command::CompareAndSet {
        key: key("data/s/g:a/z"),
        expected: Some(kvstore::Revision(1)),
        value: vec![],
    });
    assert_eq!(run(stale), ApplyResult::VersionMismatch { current: None }, "a failed condition is not a quota refusal");
    assert!(matches!(run(bounded(Command::Remove { key: key("data/s/g:a/b") })), ApplyResult::Ok { .. }));
    assert!(matches!(run(put("data/s/g:a/c", b"")), ApplyResult::Ok { .. }), "room again after a delete");
}

#[test]
fn a_lowered_limit_still_lets_a_scope_shrink() {
    let key = AetherKey::parse("data/s/g:a/a").unwrap();
    let mut state = KvState::new();
    let mut run = |c: Command| state.apply_command(c, &mut |_| {});
    let write = |value: &[u8], max_bytes| Command::Bounded {
        max_keys: 10,
        max_bytes,
        write: Box::new(Command::Put { key: key.clone(), value: value.to_vec() }),
    };
    assert!(matches!(run(write(b"123456789", 100)), ApplyResult::Ok { .. }));
    assert!(matches!(run(write(b"12345", 3)), ApplyResult::Ok { .. }), "over the new limit, but smaller");
    assert_eq!(run(write(b"123456", 3)), ApplyResult::QuotaExceeded { quota: Quota::Bytes, limit: 3 });
}
