//! Scenario: three replicas apply the same decided slots; one misses some, catches up from a peer's
//! snapshot, and its watchers recover through a `Resync` and a re-list.

use kvstore::{AetherKey, ApplyResult, Command, ResyncReason, Revision, Store, WatchEvent, WatchLimits};

fn put(key: &str, value: &str) -> Vec<u8> {
    let key = AetherKey::parse(key).unwrap();
    Command::Put { key, value: value.as_bytes().to_vec() }.encode().unwrap()
}

fn decided_slots() -> Vec<(u64, Vec<Vec<u8>>)> {
    vec![
        (1, vec![put("routes/GET/echo/{msg}", "org.example:echo:1.0.0")]),
        (2, vec![put("endpoints/org.example:echo:1.0.0/echo/node-1:0", "up")]),
        (4, vec![put("routes/POST/orders", "org.example:orders:1.0.0"), put("user/note", "hi")]),
        (5, vec![Command::Remove { key: AetherKey::parse("routes/GET/echo/{msg}").unwrap() }.encode().unwrap()]),
    ]
}

#[test]
fn a_replica_behind_catches_up_from_a_snapshot_and_its_watchers_resync() {
    let slots = decided_slots();
    let mut healthy = Store::default();
    let mut behind = Store::default();
    let routes = behind.watch("routes/").unwrap();
    for (slot, batch) in &slots {
        healthy.apply(*slot, batch).unwrap();
    }
    behind.apply(slots[0].0, &slots[0].1).unwrap();

    behind.install_snapshot(&healthy.snapshot().unwrap()).unwrap();
    assert_eq!(behind.state(), healthy.state());

    let events = behind.drain_events(routes).unwrap();
    assert_eq!(events.last(), Some(&WatchEvent::Resync { reason: ResyncReason::SnapshotInstalled }));
    let listed: Vec<String> = behind.list("routes/").map(|e| e.key().to_string()).collect();
    assert_eq!(listed, ["routes/POST/orders"]);

    // Replaying the log over the newer snapshot is refused slot by slot and changes nothing.
    for (slot, batch) in &slots {
        assert!(behind.apply(*slot, batch).is_err());
    }
    let next = put("routes/GET/health", "org.example:health:1.0.0");
    let (a, b) = (healthy.apply(6, [&next]).unwrap(), behind.apply(6, [&next]).unwrap());
    assert_eq!(a, b);
    assert_eq!(a, [ApplyResult::Ok { version: Revision(6) }]);
    assert_eq!(behind.drain_events(routes).unwrap().len(), 1);
}

#[test]
fn a_slow_watcher_is_told_to_resync_and_recovers_by_listing() {
    let limits = WatchLimits { watches_max: 4, events_max: 2, bytes_max: 1 << 20 };
    let mut store = Store::new(limits);
    let slow = store.watch("user/").unwrap();
    for (slot, name) in (1..).zip(["a", "b", "c", "d"]) {
        store.apply(slot, [put(&format!("user/{name}"), name)]).unwrap();
    }
    assert_eq!(store.drain_events(slow).unwrap(), [WatchEvent::Resync { reason: ResyncReason::Lagged }]);
    assert_eq!(store.list("user/").count(), 4);
    store.apply(10, [put("user/e", "e")]).unwrap();
    let events = store.drain_events(slow).unwrap();
    assert!(matches!(&events[..], [WatchEvent::Put { version: Revision(5), .. }]));
}
