//! Prefix watches: this node's components follow changes to the keys under a prefix.
//!
//! Watches are local to a node and never replicated. Each one has a bounded queue that the store fills as
//! batches apply and the owner empties with [`crate::Store::drain_events`], so events arrive in exactly the
//! order changes were applied. A watcher that falls behind is not allowed to grow memory: when its queue hits
//! [`WatchLimits::events_max`] or [`WatchLimits::bytes_max`], the queue is replaced by a single
//! [`WatchEvent::Resync`] and further changes are dropped until that is drained. The watcher then re-lists the
//! prefix (a consistent view, since nothing applies between the drain and the list on the node's one event
//! loop) and carries on with the events that follow. Installing a snapshot does the same to every watch.

use crate::error::Error;
use crate::key::{AetherKey, KEY_BYTES_MAX};
use crate::revision::Revision;
use crate::state::Change;
use std::collections::{BTreeMap, VecDeque};

/// Bookkeeping bytes counted per queued event on top of its key and value, so many empty values still count.
const EVENT_OVERHEAD_BYTES: usize = 64;

/// Bounds on watches; a node-local setting, not part of the replicated state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchLimits {
    /// Most watches registered at once.
    pub watches_max: usize,
    /// Most events queued per watch before it is marked lagged.
    pub events_max: usize,
    /// Most bytes (keys, values and overhead) queued per watch before it is marked lagged. Keep it well above
    /// [`crate::VALUE_BYTES_MAX`]: a single change larger than this always turns into a `Resync`.
    pub bytes_max: usize,
}

impl Default for WatchLimits {
    fn default() -> Self {
        WatchLimits { watches_max: 256, events_max: 4096, bytes_max: 16 * 1024 * 1024 }
    }
}

/// Names a registered watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WatchId(u64);

impl WatchId {
    pub fn get(self) -> u64 {
        self.0
    }
}

/// Why a watcher must re-list its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncReason {
    /// The queue overflowed and events were dropped.
    Lagged,
    /// The whole state was replaced by a snapshot.
    SnapshotInstalled,
}

/// One item of a watch's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// `key` now holds `value`, written at revision `version`.
    Put { key: AetherKey, value: Vec<u8>, version: Revision },
    /// `key` was removed at revision `version`.
    Removed { key: AetherKey, version: Revision },
    /// Events were lost: re-list the prefix, then continue with the events after this one.
    Resync { reason: ResyncReason },
}

impl WatchEvent {
    fn from_change(change: &Change<'_>) -> Self {
        let key = change.key.clone();
        match change.value {
            Some(value) => WatchEvent::Put { key, value: value.to_vec(), version: change.version },
            None => WatchEvent::Removed { key, version: change.version },
        }
    }
}

#[derive(Debug)]
struct Watch {
    prefix: String,
    queue: VecDeque<WatchEvent>,
    queued_bytes: usize,
    /// Set when the queue was replaced by a `Resync`; changes are dropped until it is drained.
    resync_pending: bool,
}

impl Watch {
    fn push_change(&mut self, change: &Change<'_>, limits: &WatchLimits) -> bool {
        if self.resync_pending {
            return false;
        }
        let event_bytes = change.key_str.len() + change.value.map_or(0, <[u8]>::len) + EVENT_OVERHEAD_BYTES;
        let events_full = self.queue.len() >= limits.events_max;
        if events_full || self.queued_bytes + event_bytes > limits.bytes_max {
            self.resync(ResyncReason::Lagged);
            return true;
        }
        self.queue.push_back(WatchEvent::from_change(change));
        self.queued_bytes += event_bytes;
        false
    }

    fn resync(&mut self, reason: ResyncReason) {
        self.queue.clear();
        self.queue.push_back(WatchEvent::Resync { reason });
        self.queued_bytes = EVENT_OVERHEAD_BYTES;
        self.resync_pending = true;
    }

    fn take(&mut self) -> Vec<WatchEvent> {
        self.queued_bytes = 0;
        self.resync_pending = false;
        self.queue.drain(..).collect()
    }
}

/// The watch table of one node.
#[derive(Debug)]
pub(crate) struct Watches {
    by_id: BTreeMap<WatchId, Watch>,
    next_id: u64,
    limits: WatchLimits,
}

impl Watches {
    pub(crate) fn new(limits: WatchLimits) -> Self {
        Watches { by_id: BTreeMap::new(), next_id: 1, limits }
    }

    pub(crate) fn register(&mut self, prefix: &str) -> Result<WatchId, Error> {
        if self.by_id.len() >= self.limits.watches_max {
            log::warn!("watch table full ({} watches); refused prefix {prefix:?}", self.limits.watches_max);
            return Err(Error::TooManyWatches { watches_max: self.limits.watches_max });
        }
        if prefix.len() > KEY_BYTES_MAX {
            return Err(Error::WatchPrefixTooLong { bytes: prefix.len(), bytes_max: KEY_BYTES_MAX });
        }
        let id = WatchId(self.next_id);
        self.next_id += 1;
        let watch = Watch { prefix: prefix.to_owned(), queue: VecDeque::new(), queued_bytes: 0, resync_pending: false };
        self.by_id.insert(id, watch);
        Ok(id)
    }

    pub(crate) fn cancel(&mut self, id: WatchId) -> Result<(), Error> {
        match self.by_id.remove(&id) {
            Some(_) => Ok(()),
            None => Err(Error::UnknownWatch { id: id.get() }),
        }
    }

    /// Queues `change` on every watch whose prefix it matches.
    pub(crate) fn publish(&mut self, change: &Change<'_>) {
        let limits = self.limits;
        let matching = self.by_id.iter_mut().filter(|(_, w)| change.key_str.starts_with(&w.prefix));
        for (id, watch) in matching {
            if watch.push_change(change, &limits) {
                log::warn!(
                    "watch {} on {:?} lagged at revision {}; it must re-list",
                    id.get(),
                    watch.prefix,
                    change.version
                );
            }
        }
    }

    /// Replaces every watch's queue with a `Resync` (used when a snapshot replaces the state).
    pub(crate) fn resync_all(&mut self, reason: ResyncReason) {
        self.by_id.values_mut().for_each(|watch| watch.resync(reason));
    }

    pub(crate) fn drain(&mut self, id: WatchId) -> Result<Vec<WatchEvent>, Error> {
        match self.by_id.get_mut(&id) {
            Some(watch) => Ok(watch.take()),
            None => Err(Error::UnknownWatch { id: id.get() }),
        }
    }

    /// Ids of watches with events waiting, so the caller knows whom to wake.
    pub(crate) fn ready(&self) -> impl Iterator<Item = WatchId> + '_ {
        self.by_id.iter().filter(|(_, w)| !w.queue.is_empty()).map(|(id, _)| *id)
    }

    pub(crate) fn prefix(&self, id: WatchId) -> Option<&str> {
        self.by_id.get(&id).map(|w| w.prefix.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change<'a>(key_str: &'a str, key: &'a AetherKey, value: Option<&'a [u8]>, version: u64) -> Change<'a> {
        Change { key_str, key, value, version: Revision(version) }
    }

    fn small_limits() -> WatchLimits {
        WatchLimits { watches_max: 2, events_max: 3, bytes_max: 1024 }
    }

    #[test]
    fn only_matching_prefixes_receive_events() {
        let mut watches = Watches::new(small_limits());
        let users = watches.register("user/").unwrap();
        let slices = watches.register("slices/").unwrap();
        let key = AetherKey::parse("user/a").unwrap();
        watches.publish(&change("user/a", &key, Some(b"1"), 1));
        let put = WatchEvent::Put { key, value: b"1".to_vec(), version: Revision(1) };
        assert_eq!(watches.drain(users).unwrap(), [put]);
        assert_eq!(watches.drain(slices).unwrap(), []);
    }

    #[test]
    fn overflow_replaces_the_queue_with_one_resync_until_drained() {
        let mut watches = Watches::new(small_limits());
        let id = watches.register("").unwrap();
        let key = AetherKey::parse("user/a").unwrap();
        for version in 1..=10 {
            watches.publish(&change("user/a", &key, None, version));
        }
        assert_eq!(watches.drain(id).unwrap(), [WatchEvent::Resync { reason: ResyncReason::Lagged }]);
        watches.publish(&change("user/a", &key, None, 11));
        let removed = WatchEvent::Removed { key: key.clone(), version: Revision(11) };
        assert_eq!(watches.drain(id).unwrap(), [removed]);
    }

    #[test]
    fn large_values_count_against_the_byte_bound() {
        let mut watches = Watches::new(small_limits());
        let id = watches.register("user/").unwrap();
        let key = AetherKey::parse("user/a").unwrap();
        let big = vec![0u8; 2048];
        watches.publish(&change("user/a", &key, Some(&big), 1));
        assert_eq!(watches.drain(id).unwrap(), [WatchEvent::Resync { reason: ResyncReason::Lagged }]);
    }

    #[test]
    fn the_watch_table_is_bounded() {
        let mut watches = Watches::new(small_limits());
        watches.register("a").unwrap();
        let b = watches.register("b").unwrap();
        assert_eq!(watches.register("c"), Err(Error::TooManyWatches { watches_max: 2 }));
        watches.cancel(b).unwrap();
        assert!(watches.register("c").is_ok());
        assert_eq!(watches.drain(b), Err(Error::UnknownWatch { id: b.get() }));
    }

    #[test]
    fn ready_lists_watches_with_events() {
        let mut watches = Watches::new(small_limits());
        let a = watches.register("user/").unwrap();
        watches.register("slices/").unwrap();
        let key = AetherKey::parse("user/a").unwrap();
        watches.publish(&change("user/a", &key, None, 1));
        assert_eq!(watches.ready().collect::<Vec<_>>(), [a]);
    }
}
