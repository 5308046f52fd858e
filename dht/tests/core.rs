//! The replica core over a perfect in-memory network: quorum writes and reads, read repair, anti-entropy
//! re-replication after a leave, hand-off after a join, and tombstones.

use std::collections::{BTreeMap, VecDeque};

use dht::{Config, Dht, DhtError, MemStore, Message, OpId, Output, Ring, Store};

type OpResult = Result<Option<Vec<u8>>, DhtError>;

struct Net {
    nodes: BTreeMap<String, Dht<MemStore>>,
    queue: VecDeque<(String, String, Message)>,
    done: BTreeMap<(String, OpId), OpResult>,
    now_ms: u64,
    /// Messages to these nodes are dropped.
    down: Vec<String>,
}

impl Net {
    fn new(n: usize, config: Config) -> Net {
        let names: Vec<String> = (1..=n).map(|i| format!("node-{i}")).collect();
        let mut net =
            Net { nodes: BTreeMap::new(), queue: VecDeque::new(), done: BTreeMap::new(), now_ms: 1_000, down: vec![] };
        for name in &names {
            net.nodes.insert(name.clone(), Dht::new(name.clone(), config.clone(), MemStore::new()));
        }
        net.set_members(&names);
        net
    }

    fn set_members(&mut self, members: &[String]) {
        let now = self.now_ms;
        let mut outs = Vec::new();
        for (name, node) in self.nodes.iter_mut() {
            let mut out = Vec::new();
            node.set_members(members, now, &mut out);
            outs.push((name.clone(), out));
        }
        for (name, out) in outs {
            self.absorb(&name, out);
        }
    }

    fn absorb(&mut self, from: &str, out: Vec<Output>) {
        for output in out {
            match output {
                Output::Send { to, message } => {
                    assert_ne!(to, from, "a node sent to itself");
                    // Through the codec, as the node does.
                    let message = Message::decode(&message.encode()).expect("own messages decode");
                    self.queue.push_back((from.to_string(), to, message));
                }
                Output::Done { op, result } => {
                    self.done.insert((from.to_string(), op), result);
                }
            }
        }
    }

    fn deliver_all(&mut self) {
        let mut steps = 0;
        while let Some((from, to, message)) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 1_000_000, "messages never stop");
            if self.down.contains(&to) {
                continue;
            }
            let now = self.now_ms;
            let Some(node) = self.nodes.get_mut(&to) else { continue };
            let mut out = Vec::new();
            node.handle(&from, message, now, &mut out);
            self.absorb(&to, out);
        }
    }

    /// Advances time in 100 ms ticks, delivering everything between ticks.
    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / 100 {
            self.now_ms += 100;
            let now = self.now_ms;
            let names: Vec<String> = self.nodes.keys().cloned().collect();
            for name in names {
                if self.down.contains(&name) {
                    continue;
                }
                let mut out = Vec::new();
                if let Some(node) = self.nodes.get_mut(&name) {
                    node.tick(now, &mut out);
                }
                self.absorb(&name, out);
            }
            self.deliver_all();
        }
    }

    fn put(&mut self, via: &str, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, DhtError> {
        let now = self.now_ms;
        let mut out = Vec::new();
        let op = self.nodes.get_mut(via).unwrap().put(key, value.to_vec(), now, &mut out);
        self.finish(via, op, out)
    }

    fn get(&mut self, via: &str, key: &str) -> Result<Option<Vec<u8>>, DhtError> {
        let now = self.now_ms;
        let mut out = Vec::new();
        let op = self.nodes.get_mut(via).unwrap().get(key, now, &mut out);
        self.finish(via, op, out)
    }

    fn delete(&mut self, via: &str, key: &str) -> Result<Option<Vec<u8>>, DhtError> {
        let now = self.now_ms;
        let mut out = Vec::new();
        let op = self.nodes.get_mut(via).unwrap().delete(key, now, &mut out);
        self.finish(via, op, out)
    }

    fn finish(&mut self, via: &str, op: OpId, out: Vec<Output>) -> Result<Option<Vec<u8>>, DhtError> {
        self.absorb(via, out);
        self.deliver_all();
        for _ in 0..100 {
            if let Some(result) = self.done.remove(&(via.to_string(), op)) {
                return result;
            }
            self.run_ms(100);
        }
        panic!("operation {op} on {via} never finished");
    }

    fn holders(&mut self, key: &str) -> Vec<String> {
        let mut holders = Vec::new();
        for (name, node) in self.nodes.iter_mut() {
            if node.store_mut().get(key).unwrap().is_some() {
                holders.push(name.clone());
            }
        }
        holders
    }
}

fn names(range: std::ops::RangeInclusive<usize>) -> Vec<String> {
    range.map(|i| format!("node-{i}")).collect()
}

#[test]
fn put_get_delete_through_any_node() {
    let mut net = Net::new(5, Config::default());
    for i in 0..50 {
        let key = format!("key-{i}");
        let via = format!("node-{}", i % 5 + 1);
        assert_eq!(net.put(&via, &key, key.as_bytes()), Ok(None));
    }
    for i in 0..50 {
        let key = format!("key-{i}");
        let via = format!("node-{}", (i + 2) % 5 + 1);
        assert_eq!(net.get(&via, &key), Ok(Some(key.clone().into_bytes())));
        assert_eq!(
            net.holders(&key),
            Ring::new(&names(1..=5), 3)
                .replicas(Ring::partition_of(&key))
                .into_iter()
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
    }
    assert_eq!(net.put("node-1", "key-0", b"second"), Ok(None));
    assert_eq!(net.get("node-4", "key-0"), Ok(Some(b"second".to_vec())));
    assert_eq!(net.delete("node-2", "key-0"), Ok(None));
    assert_eq!(net.get("node-3", "key-0"), Ok(None));
    assert_eq!(net.get("node-3", "never-written"), Ok(None));
}

#[test]
fn a_write_without_a_quorum_times_out_and_limits_are_enforced() {
    let mut net = Net::new(3, Config::default());
    net.down = names(2..=3);
    assert_eq!(net.put("node-1", "k", b"v"), Err(DhtError::Timeout));
    net.down.clear();
    let long_key = "k".repeat(dht::KEY_BYTES_MAX + 1);
    assert!(matches!(net.put("node-1", &long_key, b"v"), Err(DhtError::TooLarge(_))));
    assert!(matches!(net.put("node-1", "k", &vec![0; dht::VALUE_BYTES_MAX + 1]), Err(DhtError::TooLarge(_))));
    let mut lonely = Dht::new("node-9".to_string(), Config::default(), MemStore::new());
    let mut out = Vec::new();
    lonely.get("k", 0, &mut out);
    assert!(matches!(out.as_slice(), [Output::Done { result: Err(DhtError::Unavailable { .. }), .. }]));
}

#[test]
fn read_repair_fixes_the_stale_replica_it_saw() {
    let config = Config { anti_entropy: false, ..Config::default() };
    let mut net = Net::new(3, config);
    // node-3 misses the write.
    net.down = vec!["node-3".into()];
    assert_eq!(net.put("node-1", "k", b"v"), Ok(None));
    net.down.clear();
    assert!(net.nodes.get_mut("node-3").unwrap().store_mut().get("k").unwrap().is_none());
    // A read through node-3 asks itself and one other; the first other reply completes it.
    assert_eq!(net.get("node-3", "k"), Ok(Some(b"v".to_vec())));
    assert_eq!(net.holders("k").len(), 3);
    assert!(net.nodes["node-3"].stats().read_repairs >= 1);
}

#[test]
fn anti_entropy_repairs_and_reports_health() {
    let mut net = Net::new(3, Config::default());
    net.down = vec!["node-3".into()];
    for i in 0..30 {
        assert_eq!(net.put("node-1", &format!("k{i}"), b"v"), Ok(None));
    }
    net.down.clear();
    net.run_ms(5_000);
    for i in 0..30 {
        assert_eq!(net.holders(&format!("k{i}")).len(), 3);
    }
    for node in net.nodes.values() {
        let stats = node.stats();
        assert_eq!(stats.under_replicated, 0, "{stats:?}");
        assert_eq!(stats.entries, 30);
    }
    assert!(net.nodes["node-3"].stats().anti_entropy_repairs >= 30);
}

#[test]
fn a_leave_re_replicates_and_a_join_hands_off() {
    let mut net = Net::new(4, Config::default());
    for i in 0..300 {
        assert_eq!(net.put("node-1", &format!("k{i}"), b"v"), Ok(None));
    }
    // node-4 leaves for good.
    net.nodes.remove("node-4");
    net.set_members(&names(1..=3));
    net.run_ms(10_000);
    for i in 0..300 {
        assert_eq!(net.holders(&format!("k{i}")).len(), 3, "k{i}");
    }
    // node-5 joins: it receives its share, the others hand off what they no longer replicate.
    net.nodes.insert("node-5".into(), Dht::new("node-5".into(), Config::default(), MemStore::new()));
    let members = vec!["node-1".to_string(), "node-2".into(), "node-3".into(), "node-5".into()];
    net.set_members(&members);
    net.run_ms(20_000);
    let ring = Ring::new(&members, 3);
    for i in 0..300 {
        let key = format!("k{i}");
        let mut replicas = ring.replicas(Ring::partition_of(&key));
        replicas.sort();
        assert_eq!(net.holders(&key), replicas, "{key}");
    }
    let handed_off: u64 = net.nodes.values().map(|n| n.stats().handed_off).sum();
    assert!(handed_off > 0);
    for node in net.nodes.values() {
        assert_eq!(node.stats().under_replicated, 0);
    }
}

#[test]
fn tombstones_expire() {
    let config = Config { tombstone_ttl_ms: 10_000, ..Config::default() };
    let mut net = Net::new(3, config);
    assert_eq!(net.put("node-1", "k", b"v"), Ok(None));
    assert_eq!(net.delete("node-1", "k"), Ok(None));
    net.run_ms(3_000);
    assert_eq!(net.holders("k").len(), 3);
    net.run_ms(12_000);
    assert!(net.holders("k").is_empty());
    assert_eq!(net.get("node-2", "k"), Ok(None));
}

/// `count` keys that all fall in one partition, so anti-entropy has to page through it.
fn keys_in_one_partition(count: usize) -> Vec<String> {
    let target = Ring::partition_of("k0");
    (0..).map(|i| format!("k{i}")).filter(|k| Ring::partition_of(k) == target).take(count).collect()
}

#[test]
fn anti_entropy_pages_through_a_large_partition_both_ways() {
    let mut net = Net::new(3, Config::default());
    let keys = keys_in_one_partition(450);
    // node-3 misses the first 300 writes, node-1 the last 150: each side has pages the other lacks.
    net.down = vec!["node-3".into()];
    for key in &keys[..300] {
        assert_eq!(net.put("node-1", key, b"a"), Ok(None));
    }
    net.down = vec!["node-1".into()];
    for key in &keys[300..] {
        assert_eq!(net.put("node-3", key, b"b"), Ok(None));
    }
    net.down.clear();
    net.run_ms(30_000);
    for key in &keys {
        assert_eq!(net.holders(key).len(), 3, "{key}");
    }
    for node in net.nodes.values() {
        assert_eq!(node.stats().entries, 450);
        assert_eq!(node.stats().under_replicated, 0);
    }
}

#[test]
fn expired_tombstones_are_forgotten_everywhere_and_do_not_come_back() {
    // Five nodes, so replicas' expiry cursors reach a partition at different times.
    let config = Config { tombstone_ttl_ms: 10_000, ..Config::default() };
    let mut net = Net::new(5, config);
    let keys: Vec<String> = (0..1500).map(|i| format!("t{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(net.put(&format!("node-{}", i % 5 + 1), key, b"v"), Ok(None));
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(net.delete(&format!("node-{}", (i + 1) % 5 + 1), key), Ok(None));
    }
    net.run_ms(5 * 60_000);
    let left: usize = net.nodes.values().map(|n| n.stats().entries).sum();
    assert_eq!(left, 0, "expired tombstones still held");
}

#[test]
fn a_stamp_far_ahead_of_the_clock_is_refused_and_moves_no_clock() {
    let mut net = Net::new(3, Config::default());
    let poison = dht::Entry { version: dht::Version { stamp: u64::MAX, writer: 1 }, value: Some(b"x".to_vec()) };
    let now = net.now_ms;
    let mut out = Vec::new();
    let node = net.nodes.get_mut("node-1").expect("node-1");
    node.handle(
        "node-2",
        Message::Repair { key: "other".into(), entry: poison.clone(), read_repair: true },
        now,
        &mut out,
    );
    node.handle("node-2", Message::Put { op: 7, key: "other".into(), entry: poison }, now, &mut out);
    assert!(out.is_empty(), "no acknowledgement for a stamp an hour past the clock: {out:?}");
    assert_eq!(net.put("node-1", "k", b"first"), Ok(None));
    assert_eq!(net.put("node-1", "k", b"second"), Ok(None));
    assert_eq!(net.get("node-2", "k"), Ok(Some(b"second".to_vec())), "an acknowledged overwrite was lost");
    assert_eq!(net.get("node-3", "other"), Ok(None));
}

#[test]
fn a_restarted_replica_writes_past_the_versions_it_holds_even_with_its_clock_back() {
    let mut net = Net::new(1, Config::default());
    net.now_ms = 100_000;
    assert_eq!(net.put("node-1", "k", b"before"), Ok(None));
    let stamp = net.nodes["node-1"].store().peek("k").map(|e| e.version.stamp).expect("stored");
    let store = net.nodes.remove("node-1").expect("node-1").into_store();
    let mut node = dht::Dht::new("node-1".to_string(), Config::default(), store);
    let mut out = Vec::new();
    node.set_members(&["node-1".to_string()], stamp - 10_000, &mut out);
    node.put("k", b"after".to_vec(), stamp - 10_000, &mut out);
    let now = node.store().peek("k").map(|e| (e.version.stamp, e.value.clone())).expect("stored");
    assert!(now.0 > stamp, "{} after {stamp}", now.0);
    assert_eq!(now.1, Some(b"after".to_vec()));
}

/// A peer's entry stamped far ahead of the clock (a clock years off, or a hostile peer) is neither stored
/// nor observed: the key stays writable and the replica's clock stays near the wall clock.
#[test]
fn an_entry_stamped_far_in_the_future_is_refused() {
    use dht::{Entry, Version};
    let mut net = Net::new(3, Config { anti_entropy: false, ..Config::default() });
    assert_eq!(net.put("node-1", "k", b"first"), Ok(None));
    let poisoned = Entry { version: Version { stamp: u64::MAX, writer: u64::MAX }, value: Some(b"stuck".to_vec()) };
    for target in names(1..=3) {
        net.queue.push_back((
            "node-2".into(),
            target.clone(),
            Message::Repair { key: "k".into(), entry: poisoned.clone(), read_repair: false },
        ));
        net.queue.push_back((
            "node-2".into(),
            target,
            Message::Put { op: 1, key: "other".into(), entry: poisoned.clone() },
        ));
    }
    net.deliver_all();
    assert!(net.holders("other").is_empty(), "a far-future put was stored");
    assert_eq!(net.put("node-3", "k", b"second"), Ok(None));
    assert_eq!(net.get("node-1", "k"), Ok(Some(b"second".to_vec())), "later writes still win");
    // Within the allowed lead, a peer's stamp is taken (clocks differ a little).
    let ahead = Entry { version: Version { stamp: net.now_ms + 60_000, writer: 2 }, value: Some(b"ahead".to_vec()) };
    net.queue.push_back((
        "node-2".into(),
        "node-1".into(),
        Message::Repair { key: "near".into(), entry: ahead, read_repair: false },
    ));
    net.deliver_all();
    assert_eq!(net.holders("near"), vec!["node-1".to_string()]);
    const { assert!(dht::STAMP_AHEAD_MAX_MS > 60_000) };
}
