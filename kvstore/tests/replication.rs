//! Property tests of the state machine as a whole: determinism, watches as a faithful change log, and
//! snapshots as a faithful copy.

mod common;

use kvstore::{ApplyResult, KvState, Store, WatchEvent, WatchLimits};
use proptest::prelude::*;
use std::collections::BTreeMap;

fn apply_all(store: &mut Store, batches: &[Vec<Vec<u8>>]) -> Vec<Vec<ApplyResult>> {
    let slots = (1..).step_by(2);
    slots.zip(batches).map(|(slot, batch)| store.apply(slot, batch).unwrap()).collect()
}

fn contents(state: &KvState) -> BTreeMap<String, (Vec<u8>, u64)> {
    state.list("").map(|e| (e.key().to_string(), (e.value().to_vec(), e.version().get()))).collect()
}

proptest! {
    #[test]
    fn replicas_applying_the_same_batches_agree(batches in common::batches()) {
        let (mut a, mut b) = (Store::default(), Store::default());
        prop_assert_eq!(apply_all(&mut a, &batches), apply_all(&mut b, &batches));
        prop_assert_eq!(a.state(), b.state());
    }

    #[test]
    fn restore_of_snapshot_is_identity(batches in common::batches()) {
        let mut store = Store::default();
        apply_all(&mut store, &batches);
        let restored = Store::from_snapshot(&store.snapshot().unwrap(), WatchLimits::default()).unwrap();
        prop_assert_eq!(restored.state(), store.state());
    }

    #[test]
    fn a_restored_replica_continues_in_step(first in common::batches(), second in common::batches()) {
        let mut original = Store::default();
        apply_all(&mut original, &first);
        let mut restored = Store::from_snapshot(&original.snapshot().unwrap(), WatchLimits::default()).unwrap();
        let next_slot = original.applied_slot().unwrap_or(0) + 1;
        for (offset, batch) in second.iter().enumerate() {
            let slot = next_slot + offset as u64;
            prop_assert_eq!(original.apply(slot, batch).unwrap(), restored.apply(slot, batch).unwrap());
        }
        prop_assert_eq!(original.state(), restored.state());
    }

    #[test]
    fn replaying_watch_events_rebuilds_the_state(batches in common::batches()) {
        let mut store = Store::default();
        let id = store.watch("").unwrap();
        apply_all(&mut store, &batches);
        let mut replica = BTreeMap::new();
        for event in store.drain_events(id).unwrap() {
            match event {
                WatchEvent::Put { key, value, version } => { replica.insert(key.to_string(), (value, version.get())); }
                WatchEvent::Removed { key, .. } => { replica.remove(&key.to_string()); }
                WatchEvent::Resync { .. } => prop_assert!(false, "no resync expected with default limits"),
            }
        }
        prop_assert_eq!(replica, contents(store.state()));
    }

    #[test]
    fn ok_results_carry_increasing_versions(batches in common::batches()) {
        let mut store = Store::default();
        let versions: Vec<u64> = apply_all(&mut store, &batches)
            .into_iter()
            .flatten()
            .filter_map(|r| match r { ApplyResult::Ok { version } => Some(version.get()), _ => None })
            .collect();
        prop_assert!(versions.windows(2).all(|w| w[0] + 1 == w[1]));
        prop_assert_eq!(versions.last().copied().unwrap_or(0), store.revision().get());
    }

    #[test]
    fn snapshot_bytes_never_panic_when_damaged(
        batches in common::batches(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut store = Store::default();
        apply_all(&mut store, &batches);
        let mut bytes = store.snapshot().unwrap();
        let len = bytes.len();
        for (index, mask) in flips {
            bytes[index.index(len)] ^= mask.max(1);
        }
        // Flips can cancel out (same byte twice); otherwise the checksum catches them.
        if let Ok(restored) = Store::from_snapshot(&bytes, WatchLimits::default()) {
            prop_assert_eq!(restored.state(), store.state());
        }
    }

    #[test]
    fn arbitrary_snapshot_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(Store::from_snapshot(&bytes, WatchLimits::default()).is_err());
    }
}
