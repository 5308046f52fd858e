//! The storage plane over real `aetherd` processes: key operations through one node's event loop reach the
//! others, `/api/dht` shows the members and replicas, and a node killed for good leaves the members while
//! every partition gets back to its full replica count.

mod dht_support;

use devcluster::wait_for;
use dht_support::{Cluster, LEASE_GRACE_MS};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

#[test]
fn a_put_through_one_node_is_read_through_every_other_and_a_delete_everywhere() {
    let cluster = Cluster::start("putget", 3, &[]);
    let members = wait_for(Duration::from_secs(10), || {
        (0..3).all(|i| cluster.dht(i).is_some_and(|d| d["members"].as_array().is_some_and(|m| m.len() == 3)))
    });
    assert!(members.is_ok(), "members: {:?}", cluster.dht(0));
    for k in 0..20 {
        assert_eq!(cluster.put(k % 3, &format!("test/{k}"), &format!("value {k}")), json!({"ok": null}));
    }
    for k in 0..20 {
        for i in 0..3 {
            assert_eq!(cluster.get(i, &format!("test/{k}")), json!({"ok": format!("value {k}")}), "node {i} key {k}");
        }
    }
    assert_eq!(cluster.get(1, "test/absent"), json!({"ok": null}));
    assert_eq!(cluster.ask(2, json!({"op": "delete", "key": "test/3"})), json!({"ok": null}));
    for i in 0..3 {
        assert_eq!(cluster.get(i, "test/3"), json!({"ok": null}), "node {i} still reads a deleted key");
    }
    // Three members, three replicas: every node holds every key (tombstones count as entries).
    let held = wait_for(Duration::from_secs(10), || {
        (0..3).all(|i| cluster.dht(i).is_some_and(|d| d["entries"].as_u64() == Some(20)))
    });
    assert!(held.is_ok(), "{:?}", (0..3).map(|i| cluster.dht(i)).collect::<Vec<_>>());
    let view = cluster.dht(0).unwrap();
    for field in ["bytes", "under_replicated", "read_repairs", "anti_entropy_repairs", "handed_off", "corrupt_dropped"]
    {
        assert!(view[field].is_u64(), "{field} in {view}");
    }
}

#[test]
fn a_node_killed_for_good_leaves_and_every_partition_gets_back_to_three_replicas() {
    let mut cluster = Cluster::start("rereplicate", 5, &[]);
    for k in 0..100 {
        assert_eq!(cluster.put(k % 5, &format!("test/{k}"), &format!("value {k}")), json!({"ok": null}));
    }
    // Three replicas of 100 keys, once the members settled (a node joins when its first lease is decided;
    // what went elsewhere meanwhile is handed off).
    let settled = wait_for(Duration::from_secs(20), || {
        whole(&cluster, &[0, 1, 2, 3, 4]) && entries(&cluster, &[0, 1, 2, 3, 4]) == 300
    });
    assert!(settled.is_ok(), "{:?}", (0..5).map(|i| cluster.dht(i)).collect::<Vec<Option<Value>>>());

    cluster.c.kill(4);
    let killed = Instant::now();
    let back =
        wait_for(Duration::from_secs(40), || whole(&cluster, &[0, 1, 2, 3]) && entries(&cluster, &[0, 1, 2, 3]) >= 300);
    let took = killed.elapsed();
    println!(
        "every partition back to three replicas {} ms after the kill (lease grace {LEASE_GRACE_MS} ms)",
        took.as_millis()
    );
    assert!(back.is_ok(), "{:?}", (0..4).map(|i| cluster.dht(i)).collect::<Vec<Option<Value>>>());
    for k in 0..100 {
        assert_eq!(cluster.get(k % 4, &format!("test/{k}")), json!({"ok": format!("value {k}")}));
    }
    // It comes back: it rejoins, and the survivors hand back what it owns.
    cluster.start_node(4);
    cluster.wait_ready(vec![4]);
    let rejoined = wait_for(Duration::from_secs(30), || {
        whole(&cluster, &[0, 1, 2, 3, 4]) && entries(&cluster, &[0, 1, 2, 3, 4]) == 300
    });
    assert!(rejoined.is_ok(), "{:?}", (0..5).map(|i| cluster.dht(i)).collect::<Vec<Option<Value>>>());
}

/// Every node in `nodes` sees exactly them as members and no partition short of replicas.
fn whole(cluster: &Cluster, nodes: &[usize]) -> bool {
    nodes.iter().all(|&i| {
        cluster.dht(i).is_some_and(|d| {
            d["under_replicated"] == 0 && d["members"].as_array().is_some_and(|m| m.len() == nodes.len())
        })
    })
}

/// Entries held by `nodes`, summed.
fn entries(cluster: &Cluster, nodes: &[usize]) -> u64 {
    nodes.iter().map(|&i| cluster.dht(i).map_or(0, |d| d["entries"].as_u64().unwrap_or(0))).sum()
}
