use super::watch::{Deliver, Delivered, NewWatch, WatchHub, QUEUE_EVENTS_MAX, WATCHES_PER_INSTANCE_MAX};
use super::*;
use kvstore::{AetherKey, DataScope, Store, WatchEvent};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex as StdMutex;

fn scope() -> DataScope {
    DataScope::new(Name::parse("shop").unwrap(), kvstore::ArtifactBase::parse("org.example:cart").unwrap())
}

#[test]
fn keys_that_climb_out_or_spell_nothing_are_refused_at_the_edge() {
    for bad in ["", "/", "/etc", "..", "../x", "a/../../routes/GET/x", "a//b", "a/", ".", "a b", "k\0", "ü"] {
        assert!(matches!(check_key(bad), Err(StateError::Invalid(_))), "{bad:?} was accepted");
    }
    let long = "k".repeat(DATA_PATH_BYTES_MAX + 1);
    assert_eq!(check_key(&long), Err(StateError::TooLarge { what: "key", limit: DATA_PATH_BYTES_MAX as u64 }));
    for bad in ["/", "a//", "../", "a/../"] {
        assert!(matches!(check_prefix(bad), Err(StateError::Invalid(_))), "prefix {bad:?} was accepted");
    }
    assert!(check_prefix("").is_ok() && check_prefix("orders/").is_ok() && check_prefix("ord").is_ok());
}

#[test]
fn a_key_that_spells_a_control_plane_key_stays_inside_the_scope() {
    for spelled in ["routes/GET/x", "keys/admin", "data/other/org.example:pay/k", "user/a", "blueprints/shop"] {
        let path = check_key(spelled).unwrap();
        let command = SliceWrite::Put { path, value: b"x".to_vec() }.bounded(&scope(), Default::default());
        let key = command.key().to_string();
        assert_eq!(key, format!("data/shop/org.example:cart/{spelled}"));
        assert!(matches!(command.key(), AetherKey::Data { .. }));
        assert_eq!(relative_key(&key), Some(spelled));
    }
}

#[test]
fn writes_carry_the_quota_and_answers_map_to_state_errors() {
    let quota = control::blueprint::quota::SliceQuota { max_bytes: 10, max_keys: 2 };
    let path = check_key("a").unwrap();
    let command = SliceWrite::CompareAndSet { path, expected: Some(4), value: vec![] }.bounded(&scope(), quota);
    let kvstore::Command::Bounded { max_keys: 2, max_bytes: 10, write } = command else { panic!("{command:?}") };
    assert!(matches!(*write, kvstore::Command::CompareAndSet { expected: Some(Revision(4)), .. }));
    let quota_exceeded = ApplyResult::QuotaExceeded { quota: kvstore::Quota::Keys, limit: 2 };
    assert_eq!(written(quota_exceeded), Err(StateError::QuotaExceeded { what: "keys", limit: 2 }));
    let mismatch = ApplyResult::VersionMismatch { current: Some(Revision(3)) };
    assert_eq!(written(mismatch), Err(StateError::VersionMismatch { current: Some(3) }));
    assert_eq!(written(ApplyResult::Ok { version: Revision(9) }), Ok(9));
    assert_eq!(write_error(&ApiError::timeout("late")), StateError::Timeout);
    assert!(matches!(write_error(&ApiError::unavailable("no quorum")), StateError::Unavailable(_)));
    assert!(matches!(read_error(&ApiError::timeout("late")), StateError::Timeout));
}

#[test]
fn bad_input_is_refused_before_the_node_is_asked() {
    // No loop handle: anything that got as far as asking would be `Unavailable`.
    let state = NodeSliceState::new(Arc::default(), WatchHub::new(), Arc::new(Recording::default()));
    let deadline = Duration::from_secs(1);
    assert!(matches!(state.get("not an artifact", "k", deadline), Err(StateError::Invalid(_))));
    assert!(matches!(state.put("g:a:1.0.0", "../k", b"", deadline), Err(StateError::Invalid(_))));
    let big = vec![0; VALUE_BYTES_MAX + 1];
    let too_large = StateError::TooLarge { what: "value", limit: VALUE_BYTES_MAX as u64 };
    assert_eq!(state.put("g:a:1.0.0", "k", &big, deadline), Err(too_large));
    let limit = StateError::TooLarge { what: "list limit", limit: LIST_LIMIT_MAX as u64 };
    assert_eq!(state.list("g:a:1.0.0", "", LIST_LIMIT_MAX + 1, deadline), Err(limit));
    assert!(matches!(state.watch("g:a:1.0.0", 1, "", "no/slash"), Err(StateError::Invalid(_))));
    assert!(matches!(state.get("g:a:1.0.0", "k", deadline), Err(StateError::Unavailable(_))));
}

/// Records deliveries on a channel; blocks each delivery until `gate` lets it through, when there is one.
#[derive(Default)]
struct Recording {
    sent: StdMutex<Option<Sender<(u64, String)>>>,
    gate: StdMutex<Option<Receiver<()>>>,
    gone: std::sync::atomic::AtomicBool,
}

impl Deliver for Recording {
    fn deliver(&self, _artifact: &str, instance: u64, _method: &str, body: &[u8]) -> Delivered {
        if self.gone.load(std::sync::atomic::Ordering::SeqCst) {
            return Delivered::Gone;
        }
        if let Some(gate) = self.gate.lock().unwrap().as_ref() {
            let _ = gate.recv();
        }
        if let Some(sent) = self.sent.lock().unwrap().as_ref() {
            let _ = sent.send((instance, String::from_utf8_lossy(body).into_owned()));
        }
        Delivered::Done
    }
}

fn recording() -> (Arc<Recording>, Receiver<(u64, String)>) {
    let (tx, rx) = channel();
    let recording = Recording { sent: StdMutex::new(Some(tx)), ..Default::default() };
    (Arc::new(recording), rx)
}

fn new_watch(instance: u64, prefix: &str, deliver: Arc<dyn Deliver>) -> NewWatch {
    NewWatch {
        artifact: Artifact::parse("org.example:cart:1.0.0").unwrap(),
        instance,
        relative_prefix: prefix.to_owned(),
        method: "changed".to_owned(),
        deliver,
    }
}

/// The events a store emits for `commands`, as the loop drains them.
fn events(store: &mut Store, slot: u64, commands: &[kvstore::Command]) -> Vec<WatchEvent> {
    let id = store.watch("data/").unwrap();
    store.apply(slot, commands.iter().map(|c| c.encode().unwrap())).unwrap();
    let events = store.drain_events(id).unwrap();
    store.unwatch(id).unwrap();
    events
}

fn put(path: &str, value: &str) -> kvstore::Command {
    kvstore::Command::Put { key: scope().key(check_key(path).unwrap()), value: value.as_bytes().to_vec() }
}

fn next(rx: &Receiver<(u64, String)>) -> serde_json::Value {
    let (_, body) = rx.recv_timeout(Duration::from_secs(5)).expect("a delivery");
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_watch_gets_every_matching_change_in_order_with_relative_keys() {
    let hub = WatchHub::new();
    let (deliver, rx) = recording();
    hub.register(&scope().prefix(), new_watch(1, "orders/", deliver)).unwrap();
    let mut store = Store::default();
    let remove = kvstore::Command::Remove { key: scope().key(check_key("orders/1").unwrap()) };
    let other = kvstore::Command::Put {
        key: AetherKey::parse("data/other/org.example:cart/orders/9").unwrap(),
        value: b"not mine".to_vec(),
    };
    let binary = kvstore::Command::Put { key: scope().key(check_key("orders/3").unwrap()), value: vec![0xff] };
    let commands = [put("orders/1", "a"), put("carts/1", "x"), other, put("orders/2", "b"), remove, binary];
    hub.publish(events(&mut store, 1, &commands));
    let expected = [
        serde_json::json!({"key": "orders/1", "version": 1, "value": "a", "deleted": false}),
        serde_json::json!({"key": "orders/2", "version": 4, "value": "b", "deleted": false}),
        serde_json::json!({"key": "orders/1", "version": 5, "value": null, "deleted": true}),
        serde_json::json!({"key": "orders/3", "version": 6, "value": "/w==", "encoding": "base64", "deleted": false}),
    ];
    for want in expected {
        assert_eq!(next(&rx), want);
    }
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "nothing else matches");
}

#[test]
fn a_slow_watch_overflows_into_one_marker_then_resumes() {
    let hub = WatchHub::new();
    let (gate_tx, gate_rx) = channel();
    let (tx, rx) = channel();
    let deliver = Recording { sent: StdMutex::new(Some(tx)), gate: StdMutex::new(Some(gate_rx)), ..Default::default() };
    hub.register(&scope().prefix(), new_watch(1, "", Arc::new(deliver))).unwrap();
    let mut store = Store::default();
    // The first change is taken by the delivery thread and held at the gate; the rest fill and overflow.
    hub.publish(events(&mut store, 1, &[put("first", "0")]));
    std::thread::sleep(Duration::from_millis(100));
    let many: Vec<_> = (0..QUEUE_EVENTS_MAX + 5).map(|i| put(&format!("k{i}"), "v")).collect();
    hub.publish(events(&mut store, 2, &many));
    hub.publish(events(&mut store, 3, &[put("dropped", "v")]));
    for _ in 0..3 {
        gate_tx.send(()).unwrap();
    }
    assert_eq!(next(&rx)["key"], "first");
    assert_eq!(next(&rx), serde_json::json!({"overflow": true}));
    hub.publish(events(&mut store, 4, &[put("after", "v")]));
    assert_eq!(next(&rx)["key"], "after", "delivery resumes after the marker");
}

#[test]
fn a_snapshot_resync_is_an_overflow_marker() {
    let hub = WatchHub::new();
    let (deliver, rx) = recording();
    hub.register(&scope().prefix(), new_watch(1, "", deliver)).unwrap();
    hub.publish(vec![WatchEvent::Resync { reason: kvstore::ResyncReason::SnapshotInstalled }]);
    assert_eq!(next(&rx), serde_json::json!({"overflow": true}));
}

#[test]
fn watches_end_with_their_instance_and_are_bounded_per_instance() {
    let hub = WatchHub::new();
    let (deliver, rx) = recording();
    for _ in 0..WATCHES_PER_INSTANCE_MAX {
        hub.register(&scope().prefix(), new_watch(1, "", deliver.clone())).unwrap();
    }
    let refused = hub.register(&scope().prefix(), new_watch(1, "", deliver.clone()));
    assert!(matches!(refused, Err(StateError::TooLarge { .. })));
    hub.register(&scope().prefix(), new_watch(2, "", deliver.clone())).unwrap();
    hub.unwatch_instance("org.example:cart:1.0.0", 1);
    assert_eq!(hub.len(), 1);
    let mut store = Store::default();
    hub.publish(events(&mut store, 1, &[put("k", "v")]));
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().0, 2);
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err(), "instance 1's watches ended");
}

#[test]
fn a_watch_whose_instance_is_gone_ends_at_its_next_delivery() {
    let hub = WatchHub::new();
    let deliver = Arc::new(Recording { gone: true.into(), ..Default::default() });
    hub.register(&scope().prefix(), new_watch(1, "", deliver)).unwrap();
    let mut store = Store::default();
    hub.publish(events(&mut store, 1, &[put("k", "v")]));
    let ended = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        hub.len() == 0
    });
    assert!(ended, "the watch is still registered");
}

#[test]
fn the_container_delivers_to_the_instance_that_asked_and_nowhere_else() {
    use super::watch::ContainerDeliver;
    let mut config = container::ContainerConfig::new(devcluster::example_slices_repo().unwrap(), "node-7");
    config.pool.workers = 1;
    let container = Arc::new(container::Container::new(config).unwrap());
    let echo = "org.aether.examples:echo:1.0.0";
    let id = container.deploy(&Artifact::parse(echo).unwrap(), vec![]).unwrap();
    let deliver = ContainerDeliver::new(&container);
    let body = br#"{"key":"k","version":1,"value":"v","deleted":false}"#;
    assert_eq!(deliver.deliver(echo, id, "changed", body), Delivered::Done);
    assert_eq!(deliver.deliver(echo, id + 1, "changed", body), Delivered::Gone, "no such instance");
    assert_eq!(deliver.deliver("org.aether.examples:echo:2.0.0", id, "changed", body), Delivered::Gone);
    drop(container);
    assert_eq!(deliver.deliver(echo, id, "changed", body), Delivered::Gone, "the container is gone");
}

#[test]
fn a_delivery_to_an_instance_still_starting_waits_for_its_start_and_ends_when_it_fails() {
    use super::watch::ContainerDeliver;
    let mut config = container::ContainerConfig::new(devcluster::example_slices_repo().unwrap(), "node-7");
    config.pool.workers = 1;
    config.timeouts.start = Duration::from_millis(400);
    let container = Arc::new(container::Container::new(config).unwrap());
    let faulty = "org.aether.examples:faulty:1.0.0";
    let id = container.load(&Artifact::parse(faulty).unwrap(), vec![("on_start".into(), "hang".into())]).unwrap();
    let starting = Arc::clone(&container);
    let start = std::thread::spawn(move || starting.activate(id));
    let handle = container.handle(id).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(5);
    while handle.state() != container::SliceState::Activating && std::time::Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(handle.state(), container::SliceState::Activating);
    let deliver = ContainerDeliver::new(&container);
    let body = br#"{"key":"k","version":1,"value":"v","deleted":false}"#;
    // Not a failed call (which would drop the change and go on): the delivery waits for the start, and the
    // watch ends because the start failed.
    assert_eq!(deliver.deliver(faulty, id, "ok", body), Delivered::Gone);
    assert_eq!(handle.state(), container::SliceState::Failed);
    assert!(start.join().unwrap().is_err());
}
