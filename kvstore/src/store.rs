//! [`Store`]: the replicated [`KvState`] plus this node's watches; the one object the node runtime holds.
//!
//! The runtime feeds it decided batches in slot order and gets back per-command results to answer waiting
//! clients; components read it directly and follow it through watches. It never blocks and never does I/O:
//! snapshot bytes go out to the caller, who writes or sends them; a caller that must not stall serialises
//! a [`Store::snapshot_view`] on another thread instead.

use crate::error::Error;
use crate::key::AetherKey;
use crate::revision::Revision;
use crate::snapshot;
use crate::state::{ApplyResult, Entry, KvState};
use crate::watch::{ResyncReason, WatchEvent, WatchId, WatchLimits, Watches};

/// The control-plane store of one node.
#[derive(Debug)]
pub struct Store {
    state: KvState,
    watches: Watches,
}

impl Store {
    pub fn new(limits: WatchLimits) -> Self {
        Store { state: KvState::new(), watches: Watches::new(limits) }
    }

    /// A store restored from snapshot bytes (for example the latest snapshot on disk at start-up).
    pub fn from_snapshot(bytes: &[u8], limits: WatchLimits) -> Result<Self, Error> {
        Ok(Store { state: snapshot::decode(bytes)?, watches: Watches::new(limits) })
    }

    /// Applies the decided batch of `slot` (each item one command payload), queueing watch events.
    /// See [`KvState::apply`].
    pub fn apply<B: AsRef<[u8]>>(
        &mut self,
        slot: u64,
        batch: impl IntoIterator<Item = B>,
    ) -> Result<Vec<ApplyResult>, Error> {
        let watches = &mut self.watches;
        self.state.apply(slot, batch, &mut |change| watches.publish(change))
    }

    pub fn get(&self, key: &AetherKey) -> Option<&Entry> {
        self.state.get(key)
    }

    /// Entries whose canonical key starts with `prefix`, in key order.
    pub fn list<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.state.list(prefix)
    }

    /// See [`KvState::list_after`](crate::KvState::list_after).
    pub fn list_after<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a str, &'a Entry)> + 'a {
        self.state.list_after(prefix, after)
    }

    pub fn revision(&self) -> Revision {
        self.state.revision()
    }

    pub fn applied_slot(&self) -> Option<u64> {
        self.state.applied_slot()
    }

    /// The replicated state, for comparisons across replicas and for tools.
    pub fn state(&self) -> &KvState {
        &self.state
    }

    /// Registers a watch on every key starting with `prefix` (`""` for all). Events start with the next change,
    /// so a component registers, then lists the prefix for its starting view, before the next batch applies.
    pub fn watch(&mut self, prefix: &str) -> Result<WatchId, Error> {
        self.watches.register(prefix)
    }

    pub fn unwatch(&mut self, id: WatchId) -> Result<(), Error> {
        self.watches.cancel(id)
    }

    /// Takes every event queued for `id`, oldest first.
    pub fn drain_events(&mut self, id: WatchId) -> Result<Vec<WatchEvent>, Error> {
        self.watches.drain(id)
    }

    /// Watches with events waiting.
    pub fn ready_watches(&self) -> impl Iterator<Item = WatchId> + '_ {
        self.watches.ready()
    }

    /// The prefix `id` watches, `None` if it is not registered.
    pub fn watch_prefix(&self, id: WatchId) -> Option<&str> {
        self.watches.prefix(id)
    }

    /// The whole replicated state as snapshot bytes.
    pub fn snapshot(&self) -> Result<Vec<u8>, Error> {
        snapshot::encode(&self.state)
    }

    /// A consistent view of the state as it is now, to serialise elsewhere (another thread) with
    /// [`snapshot::encode`] while this store goes on applying. Values are shared, not copied: the cost is
    /// one map of keys.
    pub fn snapshot_view(&self) -> KvState {
        self.state.clone()
    }

    /// Replaces the state with a snapshot received from a peer. Every watch gets a
    /// [`WatchEvent::Resync`]. On error the store is unchanged.
    pub fn install_snapshot(&mut self, bytes: &[u8]) -> Result<(), Error> {
        let restored = snapshot::decode(bytes)?;
        if restored.applied_slot() < self.state.applied_slot() {
            return Err(Error::StaleSnapshot {
                snapshot_slot: restored.applied_slot(),
                applied_slot: self.state.applied_slot(),
            });
        }
        log::info!(
            "installing snapshot at slot {:?}, revision {} ({} entries)",
            restored.applied_slot(),
            restored.revision(),
            restored.len()
        );
        self.state = restored;
        self.watches.resync_all(ResyncReason::SnapshotInstalled);
        Ok(())
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(WatchLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;

    fn key(s: &str) -> AetherKey {
        AetherKey::parse(s).unwrap()
    }

    fn put(k: &str, v: &[u8]) -> Vec<u8> {
        Command::Put { key: key(k), value: v.to_vec() }.encode().unwrap()
    }

    #[test]
    fn watch_events_follow_apply_order_across_batches() {
        let mut store = Store::default();
        let id = store.watch("user/").unwrap();
        store.apply(1, [put("user/a", b"1"), put("slices/n1/g:a:1.0.0", b"x")]).unwrap();
        let remove = Command::Remove { key: key("user/a") }.encode().unwrap();
        store.apply(2, [put("user/b", b"2"), remove]).unwrap();
        let events = store.drain_events(id).unwrap();
        let expected = [
            WatchEvent::Put { key: key("user/a"), value: b"1".to_vec(), version: Revision(1) },
            WatchEvent::Put { key: key("user/b"), value: b"2".to_vec(), version: Revision(3) },
            WatchEvent::Removed { key: key("user/a"), version: Revision(4) },
        ];
        assert_eq!(events, expected);
        assert!(store.drain_events(id).unwrap().is_empty());
    }

    #[test]
    fn failed_commands_produce_no_events() {
        let mut store = Store::default();
        let id = store.watch("").unwrap();
        let cas = Command::CompareAndSet { key: key("user/a"), expected: Some(Revision(5)), value: vec![] };
        let remove = Command::Remove { key: key("user/a") };
        let results = store.apply(1, [cas.encode().unwrap(), remove.encode().unwrap(), vec![0xFF]]).unwrap();
        assert_eq!(results[..2], [ApplyResult::VersionMismatch { current: None }, ApplyResult::NotFound]);
        assert!(store.drain_events(id).unwrap().is_empty());
    }

    #[test]
    fn installing_a_snapshot_resyncs_every_watch() {
        let mut source = Store::default();
        source.apply(3, [put("user/a", b"1")]).unwrap();
        let mut target = Store::default();
        let id = target.watch("user/").unwrap();
        target.apply(1, [put("user/z", b"0")]).unwrap();
        target.install_snapshot(&source.snapshot().unwrap()).unwrap();
        assert_eq!(target.state(), source.state());
        let resync = WatchEvent::Resync { reason: ResyncReason::SnapshotInstalled };
        assert_eq!(target.drain_events(id).unwrap(), [resync]);
    }

    #[test]
    fn an_older_snapshot_is_refused_and_changes_nothing() {
        let mut old = Store::default();
        old.apply(1, [put("user/a", b"1")]).unwrap();
        let mut store = Store::default();
        store.apply(2, [put("user/b", b"2")]).unwrap();
        let err = store.install_snapshot(&old.snapshot().unwrap()).unwrap_err();
        assert_eq!(err, Error::StaleSnapshot { snapshot_slot: Some(1), applied_slot: Some(2) });
        assert!(store.get(&key("user/b")).is_some());
    }

    #[test]
    fn a_corrupt_snapshot_leaves_the_store_unchanged() {
        let mut store = Store::default();
        store.apply(1, [put("user/a", b"1")]).unwrap();
        let before = store.state().clone();
        assert!(store.install_snapshot(b"not a snapshot").is_err());
        assert_eq!(store.state(), &before);
    }

    #[test]
    fn a_snapshot_view_keeps_its_moment_while_the_store_goes_on() {
        let mut store = Store::default();
        store.apply(1, [put("user/a", b"1")]).unwrap();
        let view = store.snapshot_view();
        let before = store.snapshot().unwrap();
        store.apply(2, [put("user/a", b"2"), put("user/b", b"3")]).unwrap();
        assert_eq!(snapshot::encode(&view).unwrap(), before, "the view is the state at slot 1");
        assert_ne!(store.snapshot().unwrap(), before);
    }

    #[test]
    fn from_snapshot_restores_state_with_fresh_watches() {
        let mut store = Store::default();
        store.apply(4, [put("user/a", b"1")]).unwrap();
        let restored = Store::from_snapshot(&store.snapshot().unwrap(), WatchLimits::default()).unwrap();
        assert_eq!(restored.state(), store.state());
        assert_eq!(restored.ready_watches().count(), 0);
    }
}
