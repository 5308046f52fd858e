//! The DHT simulator's checkers, each a function of the world's state (the replicas' stores and stats, the
//! client's records). They append to the report's violations and stop at the first finding of their kind.

use std::collections::{BTreeMap, BTreeSet};

use ::dht::{Entry, Ring, Version};

use super::world::World;

/// The read quorum the world runs (`Config::default()`).
const READ_QUORUM: usize = 2;

fn entry_of<'w>(world: &'w World, node: &str, key: &str) -> Option<&'w Entry> {
    world.nodes.get(node).and_then(|n| n.store()).and_then(|store| store.peek(key))
}

/// Every key's newest acknowledged write (by version) is held, at that version or a newer one, by some
/// replica of every read quorum of its current replicas. False when it found a violation.
pub(super) fn quorum(world: &mut World) -> bool {
    match unreadable_write(world) {
        Some(violation) => {
            world.report.violations.push(violation);
            false
        }
        None => true,
    }
}

fn unreadable_write(world: &World) -> Option<String> {
    let mut newest: BTreeMap<&str, (Version, u64)> = BTreeMap::new();
    for (id, write) in &world.writes {
        if let (true, Some(version)) = (write.acked, write.version) {
            let slot = newest.entry(write.key.as_str()).or_insert((version, *id));
            if version > slot.0 {
                *slot = (version, *id);
            }
        }
    }
    for (key, (version, id)) in newest {
        let replicas = world.ring.replicas(Ring::partition_of(key));
        let quorum = READ_QUORUM.min(replicas.len());
        for mask in 0u32..(1 << replicas.len()) {
            if mask.count_ones() as usize != quorum {
                continue;
            }
            let subset: Vec<&String> =
                replicas.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, r)| r).collect();
            let held: Vec<Option<Version>> =
                subset.iter().map(|node| entry_of(world, node, key).map(|e| e.version)).collect();
            if held.iter().max().copied().flatten() < Some(version) {
                return Some(format!(
                    "at {} ms the acknowledged write #{id} of {key} ({version:?}) is not readable from the read quorum {subset:?}, which holds {held:?}",
                    world.now_ms
                ));
            }
        }
    }
    None
}

/// Every value a replica holds was written to that key by the client.
pub(super) fn stored_values(world: &mut World) {
    let mut found = None;
    'nodes: for (name, node) in &world.nodes {
        let Some(store) = node.store() else { continue };
        for (key, entry) in store.entries() {
            let Some(value) = &entry.value else { continue };
            let written = world.values.get(value).and_then(|id| world.writes.get(id)).is_some_and(|w| w.key == *key);
            if !written {
                found =
                    Some(format!("{name} holds {:?} under {key}, never written there", String::from_utf8_lossy(value)));
                break 'nodes;
            }
        }
    }
    if let Some(violation) = found {
        world.report.violations.push(violation);
    }
}

/// After a quorum read (and its repairs) settled, each replica it heard from holds what it returned or newer.
pub(super) fn read_repair(world: &mut World) {
    let mut found = None;
    'reads: for read in &world.checked_reads {
        for responder in &read.responders {
            if !world.nodes.contains_key(responder) {
                continue;
            }
            let held = entry_of(world, responder, &read.key).map(|e| e.version);
            if held < read.returned {
                found = Some(format!(
                    "a quorum read of {} returned {:?}, yet {responder}, which answered it, still holds {held:?}",
                    read.key, read.returned
                ));
                break 'reads;
            }
        }
    }
    if let Some(violation) = found {
        world.report.violations.push(violation);
    }
}

/// `None` when every current replica of each partition holds the same entries, no other replica holds any
/// of them, and every replica reports no partition under-replicated; otherwise what is still off.
pub(super) fn converged(world: &World) -> Option<String> {
    let ring = &world.ring;
    let mut keys = BTreeSet::new();
    for node in world.nodes.values() {
        if let Some(store) = node.store() {
            keys.extend(store.entries().map(|(key, _)| key.clone()));
        }
    }
    for key in &keys {
        let replicas = ring.replicas(Ring::partition_of(key));
        let held: Vec<Option<&Entry>> = replicas.iter().map(|r| entry_of(world, r, key)).collect();
        if held.windows(2).any(|pair| pair[0] != pair[1]) {
            let versions: Vec<Option<Version>> = held.iter().map(|e| e.map(|e| e.version)).collect();
            return Some(format!("{key}: replicas {replicas:?} hold {versions:?}"));
        }
        for name in world.nodes.keys() {
            if !replicas.contains(name) && entry_of(world, name, key).is_some() {
                return Some(format!("{name} still holds {key}, which it no longer replicates"));
            }
        }
    }
    for (name, node) in &world.nodes {
        let Some(dht) = &node.dht else { return Some(format!("{name} is down")) };
        let under = dht.stats().under_replicated;
        if under > 0 {
            return Some(format!("{name} reports {under} partitions under-replicated"));
        }
    }
    None
}
