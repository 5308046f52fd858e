//! Anti-entropy, re-replication and hand-off for one replica, plus the periodic chores (tombstone expiry,
//! scrubbing). Every `anti_entropy_interval_ms` the replica sends each peer the digests of the partitions
//! they share (or that this replica still holds and the peer now replicates). A mismatch starts a *sync*
//! of that partition with that peer: the peer sends its (key, version) pairs in pages of `PAGE_KEYS_MAX`,
//! and this replica pushes the entries it holds newer (one `Repair` per value, at most `PUSH_MAX` per page)
//! and pulls the ones the peer holds newer (`Pull`, at most `PULL_KEYS_MAX` keys). The same exchange brings
//! data to a new replica after a join or a leave (the ring changed, so the digests differ).
//!
//! Hand-off: a replica that holds entries of a partition it no longer replicates syncs with the partition's
//! replicas; a key is marked covered by a replica once that replica's page shows it at this replica's
//! version or newer, and is removed only when every current replica covered it.
//!
//! Bounds: at most `SYNCS_MAX` syncs in flight (more wait in a set of at most `PENDING_MAX`), `PUSH_MAX`
//! values sent per page handled, `COVERAGE_MAX` keys tracked for hand-off, `GC_STEPS` pages of tombstone
//! expiry and `SCRUB_BUDGET` entries scrubbed per round. Differences beyond a page's caps are found again by
//! the next round.

use std::collections::{BTreeMap, BTreeSet};

use crate::dht::{Dht, Output};
use crate::message::{KeyVersion, Message, PartitionDigest, PAGE_KEYS_MAX, PULL_KEYS_MAX};
use crate::ring::Ring;
use crate::store::{Store, Version};
use crate::{NodeId, PARTITIONS};

/// Syncs this replica runs at once.
pub const SYNCS_MAX: usize = 32;
/// Syncs waiting for a free slot.
pub const PENDING_MAX: usize = 4096;
/// Values pushed per page handled.
pub const PUSH_MAX: usize = 16;
/// Keys tracked for hand-off.
pub const COVERAGE_MAX: usize = 16_384;
/// Tombstone expiry pages (of `PAGE_KEYS_MAX` keys) per round.
const GC_STEPS: usize = 4;
/// Entries scrubbed per round.
/// Entries scrubbed per round: values are up to 1 MiB, read on the event loop, so a few per round (at most
/// ~4 MiB of reads a second) keep the scrub from crowding out the loop's other work.
const SCRUB_BUDGET: usize = 4;
/// Rounds a replica's matching digest counts for.
const ROUNDS_REMEMBERED: u64 = 3;

pub(crate) struct AntiEntropy {
    pub(crate) next_round_ms: u64,
    /// For each partition: when each peer last reported the same digest as this replica's.
    matched: Vec<BTreeMap<NodeId, u64>>,
    /// Syncs in flight, by (peer, partition): when they last progressed.
    syncs: BTreeMap<(NodeId, u32), u64>,
    pending: BTreeSet<(NodeId, u32)>,
    /// Keys of partitions this replica no longer replicates: the version it holds and which current
    /// replicas hold that version or newer.
    coverage: BTreeMap<String, (Version, Vec<NodeId>)>,
    /// Tombstone expiry cursor.
    gc_partition: u32,
    gc_after: Option<String>,
}

impl AntiEntropy {
    pub(crate) fn new() -> AntiEntropy {
        AntiEntropy {
            next_round_ms: 0,
            matched: vec![BTreeMap::new(); PARTITIONS as usize],
            syncs: BTreeMap::new(),
            pending: BTreeSet::new(),
            coverage: BTreeMap::new(),
            gc_partition: 0,
            gc_after: None,
        }
    }

    pub(crate) fn membership_changed(&mut self, ring: &Ring) {
        for (partition, matched) in self.matched.iter_mut().enumerate() {
            matched.retain(|peer, _| ring.is_replica(partition as u32, peer));
        }
        self.coverage.clear();
        self.pending.clear();
    }

    /// `key`'s entry changed here: whatever replicas were known to cover the old version no longer counts.
    pub(crate) fn entry_changed(&mut self, key: &str) {
        if !self.coverage.is_empty() {
            self.coverage.remove(key);
        }
    }
}

impl<S: Store> Dht<S> {
    /// The scheduled work of `tick`: one anti-entropy round per interval, scrubbing and tombstone expiry.
    pub(crate) fn maintenance(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        if now_ms < self.ae.next_round_ms {
            return;
        }
        let interval_ms = self.config.anti_entropy_interval_ms.max(1);
        self.ae.next_round_ms = now_ms.saturating_add(interval_ms);
        // A sync whose page went missing (a lost message, a restarted peer) is given up after an operation's
        // timeout, so the next mismatch starts it again.
        let stall_ms = self.config.op_timeout_ms;
        self.ae.syncs.retain(|_, at| at.saturating_add(stall_ms) > now_ms);
        self.start_pending(now_ms, out);
        if self.config.anti_entropy {
            self.send_digests(out);
        }
        let dropped = self.store.scrub(SCRUB_BUDGET);
        self.stats.corrupt_dropped += dropped.len() as u64;
        for key in &dropped {
            self.ae.entry_changed(key);
        }
        self.expire_tombstones(now_ms);
    }

    /// Partitions this replica replicates for which some other current replica has not reported a matching
    /// digest in the last `ROUNDS_REMEMBERED` rounds.
    pub(crate) fn under_replicated(&self) -> usize {
        let window_ms = self.config.anti_entropy_interval_ms.max(1) * ROUNDS_REMEMBERED;
        let Some(me) = self.ring.index_of(&self.me) else { return 0 };
        (0..PARTITIONS)
            .filter(|p| self.ring.holds(*p, me))
            .filter(|p| {
                let matched = &self.ae.matched[*p as usize];
                self.ring.replica_ids(*p).any(|peer| {
                    *peer != self.me && matched.get(peer).is_none_or(|at| at.saturating_add(window_ms) < self.now_ms)
                })
            })
            .count()
    }

    fn send_digests(&self, out: &mut Vec<Output>) {
        let mut held = vec![false; PARTITIONS as usize];
        for partition in self.store.partitions() {
            if let Some(slot) = held.get_mut(partition as usize) {
                *slot = true;
            }
        }
        let mut per_peer: BTreeMap<&NodeId, Vec<PartitionDigest>> = BTreeMap::new();
        let me = self.ring.index_of(&self.me);
        for partition in 0..PARTITIONS {
            if !held[partition as usize] && !me.is_some_and(|me| self.ring.holds(partition, me)) {
                continue;
            }
            let digest = self.store.digest(partition);
            for peer in self.ring.replica_ids(partition).filter(|peer| **peer != self.me) {
                per_peer.entry(peer).or_default().push(PartitionDigest { partition, digest });
            }
        }
        for (peer, digests) in per_peer {
            self.send(out, peer, Message::Digests { digests, reply: false });
        }
    }

    pub(crate) fn on_digests(&mut self, from: &str, digests: &[PartitionDigest], reply: bool, out: &mut Vec<Output>) {
        if !reply {
            let mine = digests
                .iter()
                .map(|d| PartitionDigest { partition: d.partition, digest: self.store.digest(d.partition) })
                .collect();
            self.send(out, from, Message::Digests { digests: mine, reply: true });
        }
        if !self.config.anti_entropy {
            return;
        }
        let me = self.ring.index_of(&self.me);
        let peer = self.ring.index_of(from);
        for theirs in digests {
            let partition = theirs.partition;
            let Some(matched) = self.ae.matched.get_mut(partition as usize) else { continue };
            let mine = self.store.digest(partition);
            if mine == theirs.digest {
                matched.insert(from.to_string(), self.now_ms);
            }
            let me_replica = me.is_some_and(|me| self.ring.holds(partition, me));
            let from_replica = peer.is_some_and(|peer| self.ring.holds(partition, peer));
            let handing_off = !me_replica && from_replica && mine != 0;
            let differ = mine != theirs.digest && (me_replica || from_replica);
            if handing_off || differ {
                self.start_sync(from, partition, out);
            }
        }
    }

    fn start_sync(&mut self, peer: &str, partition: u32, out: &mut Vec<Output>) {
        let id = (peer.to_string(), partition);
        if let Some(progressed_ms) = self.ae.syncs.get(&id) {
            if progressed_ms.saturating_add(self.config.op_timeout_ms) > self.now_ms {
                return;
            }
            // Stalled: start it over.
            self.ae.syncs.remove(&id);
        }
        if self.ae.syncs.len() >= SYNCS_MAX {
            if self.ae.pending.len() < PENDING_MAX {
                self.ae.pending.insert(id);
            }
            return;
        }
        self.ae.syncs.insert(id, self.now_ms);
        self.send(out, peer, Message::VersionsRequest { partition, after: None });
    }

    fn start_pending(&mut self, now_ms: u64, out: &mut Vec<Output>) {
        while self.ae.syncs.len() < SYNCS_MAX {
            let Some((peer, partition)) = self.ae.pending.pop_first() else { break };
            if let std::collections::btree_map::Entry::Vacant(slot) = self.ae.syncs.entry((peer.clone(), partition)) {
                slot.insert(now_ms);
                self.send(out, &peer, Message::VersionsRequest { partition, after: None });
            }
        }
    }

    pub(crate) fn on_versions_request(
        &mut self,
        from: &str,
        partition: u32,
        after: Option<String>,
        out: &mut Vec<Output>,
    ) {
        let page = self.store.versions(partition, after.as_deref(), PAGE_KEYS_MAX);
        let complete = page.len() < PAGE_KEYS_MAX;
        let keys = page.into_iter().map(|(key, version)| KeyVersion { key, version }).collect();
        self.send(out, from, Message::Versions { partition, after, keys, complete });
    }

    /// A page of the peer's pairs for a sync this replica runs: push what is newer here, pull what is newer
    /// there, note hand-off coverage, and ask for the next page.
    pub(crate) fn on_versions(
        &mut self,
        from: &str,
        partition: u32,
        after: Option<&str>,
        keys: &[KeyVersion],
        complete: bool,
        out: &mut Vec<Output>,
    ) {
        let id = (from.to_string(), partition);
        if !self.ae.syncs.contains_key(&id) {
            return;
        }
        if let Some(newest) = keys.iter().map(|k| k.version).max() {
            self.observe(newest);
        }
        let their_upper = if complete { None } else { keys.last().map(|k| k.key.clone()) };
        let mine_max = PAGE_KEYS_MAX * 2;
        let mut mine = self.store.versions(partition, after, mine_max);
        if let Some(upper) = &their_upper {
            mine.retain(|(key, _)| key <= upper);
        }
        // Nothing was cut off within the peer's range unless every pair read is still in it.
        let truncated = mine.len() == mine_max;
        // Compare up to the smaller of the two pages' ends, so nothing in between is skipped.
        let upper = match (truncated, mine.last()) {
            (true, Some((last, _))) => Some(last.clone()),
            _ => their_upper,
        };
        let theirs: BTreeMap<&str, Version> = keys
            .iter()
            .filter(|k| upper.as_ref().is_none_or(|upper| k.key <= *upper))
            .map(|k| (k.key.as_str(), k.version))
            .collect();
        self.exchange(from, partition, &mine, &theirs, out);
        match upper {
            None => {
                self.ae.syncs.remove(&id);
                self.start_pending(self.now_ms, out);
            }
            Some(after) => {
                self.ae.syncs.insert(id, self.now_ms);
                self.send(out, from, Message::VersionsRequest { partition, after: Some(after) });
            }
        }
    }

    /// Pushes, pulls and hand-off coverage for one compared range.
    fn exchange(
        &mut self,
        from: &str,
        partition: u32,
        mine: &[(String, Version)],
        theirs: &BTreeMap<&str, Version>,
        out: &mut Vec<Output>,
    ) {
        let me_replica = self.ring.is_replica(partition, &self.me);
        let from_replica = self.ring.is_replica(partition, from);
        let handing_off = !me_replica && from_replica;
        let mut pushed = 0;
        let mut covered = Vec::new();
        for (key, version) in mine {
            let held_there = theirs.get(key.as_str()).is_some_and(|their| their >= version);
            if held_there && handing_off {
                covered.push((key, *version));
            } else if !held_there && from_replica && pushed < PUSH_MAX {
                if let Some(entry) = self.live_entry(key) {
                    self.send(out, from, Message::Repair { key: key.clone(), entry, read_repair: false });
                    pushed += 1;
                }
            }
        }
        if me_replica {
            let held: BTreeMap<&str, Version> = mine.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let pull: Vec<String> = theirs
                .iter()
                .filter(|(key, version)| held.get(*key).is_none_or(|mine| mine < *version))
                .take(PULL_KEYS_MAX)
                .map(|(key, _)| key.to_string())
                .collect();
            if !pull.is_empty() {
                self.send(out, from, Message::Pull { partition, keys: pull });
            }
        }
        for (key, version) in covered {
            self.cover(partition, key, version, from);
        }
    }

    /// Notes that replica `from` holds `key` at `version` or newer; drops the key here once every current
    /// replica of its partition does.
    fn cover(&mut self, partition: u32, key: &str, version: Version, from: &str) {
        let full = self.ae.coverage.len() >= COVERAGE_MAX;
        let slot = match self.ae.coverage.get_mut(key) {
            Some(slot) => slot,
            None if full => return,
            None => self.ae.coverage.entry(key.to_string()).or_insert((version, Vec::new())),
        };
        if slot.0 != version {
            *slot = (version, Vec::new());
        }
        if !slot.1.iter().any(|node| node == from) {
            slot.1.push(from.to_string());
        }
        let holders = &slot.1;
        let everywhere = self.ring.replica_count() > 0
            && self.ring.replica_ids(partition).all(|replica| holders.iter().any(|h| h == replica));
        if everywhere && self.store.remove(key).is_ok() {
            self.ae.coverage.remove(key);
            self.stats.handed_off += 1;
        }
    }

    pub(crate) fn on_pull(&mut self, from: &str, partition: u32, keys: &[String], out: &mut Vec<Output>) {
        for key in keys.iter().take(PULL_KEYS_MAX) {
            if Ring::partition_of(key) != partition {
                continue;
            }
            if let Some(entry) = self.live_entry(key) {
                self.send(out, from, Message::Repair { key: key.clone(), entry, read_repair: false });
            }
        }
    }

    /// The entry to send a peer for `key`: `None` when absent or a tombstone past its time to live, which
    /// is forgotten here at once (peers refuse it, and sending it on would only bring it back).
    fn live_entry(&mut self, key: &str) -> Option<crate::store::Entry> {
        let entry = self.store.get(key).ok()??;
        if self.expired_tombstone(&entry) {
            if self.store.remove(key).is_ok() {
                self.ae.entry_changed(key);
            }
            return None;
        }
        Some(entry)
    }

    /// Forgets tombstones older than `tombstone_ttl_ms`, a few pages per round.
    fn expire_tombstones(&mut self, now_ms: u64) {
        let held = self.store.partitions();
        if held.is_empty() {
            return;
        }
        for _ in 0..GC_STEPS {
            let partition = match held.iter().find(|p| **p >= self.ae.gc_partition) {
                Some(p) => *p,
                None => {
                    self.ae.gc_after = None;
                    held[0]
                }
            };
            if partition != self.ae.gc_partition {
                self.ae.gc_after = None;
            }
            let page = self.store.versions(partition, self.ae.gc_after.as_deref(), PAGE_KEYS_MAX);
            for (key, version) in &page {
                if version.stamp.saturating_add(self.config.tombstone_ttl_ms) > now_ms {
                    continue;
                }
                if let Ok(Some(entry)) = self.store.get(key) {
                    if entry.value.is_none() && entry.version == *version && self.store.remove(key).is_ok() {
                        self.ae.entry_changed(key);
                    }
                }
            }
            if page.len() < PAGE_KEYS_MAX {
                self.ae.gc_partition = (partition + 1) % PARTITIONS;
                self.ae.gc_after = None;
            } else {
                self.ae.gc_partition = partition;
                self.ae.gc_after = page.last().map(|(key, _)| key.clone());
            }
        }
    }
}
