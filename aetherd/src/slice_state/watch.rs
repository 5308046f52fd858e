//! Slice watches: changes under a prefix of a slice's scope, delivered to a method of the instance that asked.
//!
//! What it owns: the [`WatchHub`] of this node (every slice watch, each with its bounded queue and its own
//! delivery thread) and the JSON body a delivery carries.
//!
//! Flow: the event loop holds one store watch on `data/` and, on every tick and at the end of every turn,
//! hands what it drained to [`WatchHub::publish`], which only queues (short locks, no slice code), so the
//! loop never waits on a slice. Each watch's thread takes its queue in order and calls the slice through
//! [`Deliver`] (on a node, the container's local call of that instance), so one slow slice holds back only
//! its own watches. A watch is registered on the loop's turn (`node::slice_kv`), after the loop has
//! published everything applied so far: it sees exactly the changes applied after the call. A delivery to an
//! instance that is still starting (a watch asked for in `start`) waits for the start to end, and ends the
//! watch when the instance did not become ACTIVE, so no change is dropped as a failed call meanwhile.
//!
//! Bodies: `{"key": "...", "version": N, "value": "..."|null, "encoding": "base64"?, "deleted": bool}`
//! (`key` relative to the scope; `value` as text when it is UTF-8, else base64 with `"encoding":"base64"`;
//! `null` with `"deleted": true` for a delete), passed as the request body of the method.
//!
//! Overflow: a queue holds at most [`QUEUE_EVENTS_MAX`] changes and [`QUEUE_BYTES_MAX`] bytes. When a change
//! would break either (the slice is slower than its writers), the queue is replaced by one
//! `{"overflow": true}` marker and changes are dropped until the marker is delivered; delivery then resumes
//! with the changes after it. A slice that gets the marker re-lists its prefix. The store's own resyncs (a
//! snapshot installed from a peer, the loop's `data/` watch lagging) become the same marker on every watch.
//!
//! Invariants: deliveries of one watch are in commit order and never overlap; at most [`WATCHES_MAX`]
//! watches per node and [`WATCHES_PER_INSTANCE_MAX`] per instance; a watch ends when its instance is
//! unwatched ([`WatchHub::unwatch_instance`]) or is gone when a delivery is attempted.

use kvstore::{Artifact, WatchEvent};
use log::{debug, warn};
use parking_lot::{Condvar, Mutex};
use serde_json::json;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Most slice watches on one node (each has a thread).
pub const WATCHES_MAX: usize = 64;
/// Most watches of one instance.
pub const WATCHES_PER_INSTANCE_MAX: usize = 8;
/// Most changes queued for one watch before it overflows.
pub const QUEUE_EVENTS_MAX: usize = 1024;
/// Most bytes (keys and values) queued for one watch before it overflows.
pub const QUEUE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How long `watch` waits for the loop to register it.
pub const REGISTER_DEADLINE: Duration = Duration::from_secs(5);
/// The deadline a delivery call runs under (nested calls see it; the watch thread waits for the call).
const DELIVERY_DEADLINE: Duration = Duration::from_secs(30);
/// How often a delivery to an instance that is still starting looks whether its start ended.
const START_POLL: Duration = Duration::from_millis(5);

/// How a delivery went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Done,
    /// The method failed; the watch goes on with the next change.
    Failed(String),
    /// The instance no longer exists: the watch ends.
    Gone,
}

/// Calls `method` of one local instance with a watch body.
pub trait Deliver: Send + Sync {
    fn deliver(&self, artifact: &str, instance: u64, method: &str, body: &[u8]) -> Delivered;
}

/// A watch as asked for, before the loop registers it.
pub struct NewWatch {
    pub artifact: Artifact,
    pub instance: u64,
    /// Checked, relative to the scope.
    pub relative_prefix: String,
    pub method: String,
    pub deliver: Arc<dyn Deliver>,
}

/// One change, shared by every watch it matches.
#[derive(Debug)]
struct Change {
    key: String,
    value: Option<Vec<u8>>,
    version: u64,
}

#[derive(Debug, Clone)]
enum Item {
    Change(Arc<Change>),
    Overflow,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    bytes: usize,
    /// The queue was replaced by an overflow marker that is not delivered yet: changes are dropped.
    overflowed: bool,
    closed: bool,
}

struct Watch {
    artifact: String,
    instance: u64,
    /// Full key prefix: the scope's prefix and the relative one.
    prefix: String,
    /// Length of the scope's prefix, cut off keys before delivery.
    scope_len: usize,
    method: String,
    deliver: Arc<dyn Deliver>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Watch {
    fn push(&self, item: &Item) {
        let mut queue = self.queue.lock();
        if queue.closed {
            return;
        }
        let change = match item {
            Item::Overflow => return self.overflow(&mut queue),
            Item::Change(change) if change.key.starts_with(&self.prefix) => change,
            Item::Change(_) => return,
        };
        if queue.overflowed {
            return;
        }
        let bytes = change.key.len() + change.value.as_ref().map_or(0, Vec::len);
        if queue.items.len() >= QUEUE_EVENTS_MAX || queue.bytes + bytes > QUEUE_BYTES_MAX {
            warn!(
                "slice watch of {} #{} on {:?} overflowed; it gets a marker to re-list",
                self.artifact, self.instance, self.prefix
            );
            return self.overflow(&mut queue);
        }
        queue.bytes += bytes;
        queue.items.push_back(item.clone());
        self.wake.notify_one();
    }

    /// Replaces the queue by one overflow marker; changes are dropped until it is delivered.
    fn overflow(&self, queue: &mut Queue) {
        queue.items.clear();
        queue.items.push_back(Item::Overflow);
        queue.bytes = 0;
        queue.overflowed = true;
        self.wake.notify_one();
    }

    fn close(&self) {
        self.queue.lock().closed = true;
        self.wake.notify_one();
    }

    /// The next item to deliver, waiting for one; `None` once the watch is closed.
    fn next(&self) -> Option<Item> {
        let mut queue = self.queue.lock();
        loop {
            if queue.closed {
                return None;
            }
            if let Some(item) = queue.items.pop_front() {
                match &item {
                    Item::Overflow => queue.overflowed = false,
                    Item::Change(c) => queue.bytes -= c.key.len() + c.value.as_ref().map_or(0, Vec::len),
                }
                return Some(item);
            }
            self.wake.wait(&mut queue);
        }
    }

    fn body(&self, item: &Item) -> Vec<u8> {
        let json = match item {
            Item::Overflow => json!({ "overflow": true }),
            Item::Change(change) => {
                let key = change.key.get(self.scope_len..).unwrap_or_default();
                body_json(key, change.version, change.value.as_deref())
            }
        };
        json.to_string().into_bytes()
    }
}

/// The body of one change: see the module documentation.
pub fn body_json(key: &str, version: u64, value: Option<&[u8]>) -> serde_json::Value {
    match value {
        None => json!({ "key": key, "version": version, "value": null, "deleted": true }),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => json!({ "key": key, "version": version, "value": text, "deleted": false }),
            Err(_) => json!({ "key": key, "version": version, "value": mgmt::base64(bytes), "encoding": "base64",
                              "deleted": false }),
        },
    }
}

/// Every slice watch of this node.
#[derive(Default)]
pub struct WatchHub {
    watches: Mutex<BTreeMap<u64, Arc<Watch>>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl WatchHub {
    pub fn new() -> Arc<WatchHub> {
        Arc::new(WatchHub::default())
    }

    /// Registers `new` on the scope with prefix `scope_prefix` and starts its delivery thread. Called by the
    /// loop, after it published every change applied so far.
    pub fn register(self: &Arc<Self>, scope_prefix: &str, new: NewWatch) -> Result<(), container::state::StateError> {
        use container::state::StateError;
        let artifact = new.artifact.to_string();
        let mut watches = self.watches.lock();
        if watches.len() >= WATCHES_MAX {
            return Err(StateError::TooLarge { what: "watches on this node", limit: WATCHES_MAX as u64 });
        }
        let mine = watches.values().filter(|w| w.artifact == artifact && w.instance == new.instance).count();
        if mine >= WATCHES_PER_INSTANCE_MAX {
            return Err(StateError::TooLarge {
                what: "watches of one instance",
                limit: WATCHES_PER_INSTANCE_MAX as u64,
            });
        }
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let watch = Arc::new(Watch {
            artifact,
            instance: new.instance,
            prefix: format!("{scope_prefix}{}", new.relative_prefix),
            scope_len: scope_prefix.len(),
            method: new.method,
            deliver: new.deliver,
            queue: Mutex::default(),
            wake: Condvar::new(),
        });
        let hub = Arc::downgrade(self);
        let delivering = Arc::clone(&watch);
        std::thread::Builder::new()
            .name(format!("slice-watch-{id}"))
            .spawn(move || run(&hub, id, &delivering))
            .map_err(|e| StateError::Unavailable(format!("cannot start a watch thread: {e}")))?;
        watches.insert(id, watch);
        Ok(())
    }

    /// Queues what the loop drained from its `data/` store watch, in order, on every matching watch.
    pub fn publish(&self, events: Vec<WatchEvent>) {
        let items: Vec<Item> = events
            .into_iter()
            .map(|event| match event {
                WatchEvent::Put { key, value, version } => {
                    Item::Change(Arc::new(Change { key: key.to_string(), value: Some(value), version: version.get() }))
                }
                WatchEvent::Removed { key, version } => {
                    Item::Change(Arc::new(Change { key: key.to_string(), value: None, version: version.get() }))
                }
                WatchEvent::Resync { .. } => Item::Overflow,
            })
            .collect();
        let watches: Vec<Arc<Watch>> = self.watches.lock().values().cloned().collect();
        for watch in watches {
            for item in &items {
                watch.push(item);
            }
        }
    }

    /// Ends every watch of `instance` of `artifact`.
    pub fn unwatch_instance(&self, artifact: &str, instance: u64) {
        let mut watches = self.watches.lock();
        watches.retain(|_, w| {
            let ends = w.artifact == artifact && w.instance == instance;
            if ends {
                w.close();
            }
            !ends
        });
    }

    /// Watches registered now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.watches.lock().len()
    }

    fn remove(&self, id: u64) {
        if let Some(watch) = self.watches.lock().remove(&id) {
            watch.close();
        }
    }
}

/// A watch's delivery thread: its queue, in order, until it is closed or its instance is gone.
fn run(hub: &Weak<WatchHub>, id: u64, watch: &Watch) {
    while let Some(item) = watch.next() {
        match watch.deliver.deliver(&watch.artifact, watch.instance, &watch.method, &watch.body(&item)) {
            Delivered::Done => {}
            Delivered::Failed(why) => {
                debug!("slice watch delivery to {} #{} failed: {why}", watch.artifact, watch.instance)
            }
            Delivered::Gone => {
                debug!("instance {} #{} is gone; its watch ends", watch.artifact, watch.instance);
                if let Some(hub) = hub.upgrade() {
                    hub.remove(id);
                }
                return;
            }
        }
    }
}

/// Delivers to the instances of this node's container.
pub struct ContainerDeliver {
    container: Weak<container::Container>,
}

impl ContainerDeliver {
    /// Holds the container weakly: the container holds the slice state that holds this.
    pub fn new(container: &Arc<container::Container>) -> Self {
        ContainerDeliver { container: Arc::downgrade(container) }
    }
}

impl Deliver for ContainerDeliver {
    fn deliver(&self, artifact: &str, instance: u64, method: &str, body: &[u8]) -> Delivered {
        let Some(container) = self.container.upgrade() else { return Delivered::Gone };
        let Some(handle) = container.handle(instance) else { return Delivered::Gone };
        if handle.artifact().to_string() != artifact {
            return Delivered::Gone;
        }
        // A watch asked for in `start` may see a change before the instance is ACTIVE: wait for the start to
        // end rather than lose the change (the start has its own timeout; past it the instance is FAILED).
        let until = Instant::now() + DELIVERY_DEADLINE;
        while handle.state() == container::SliceState::Activating && Instant::now() < until {
            std::thread::sleep(START_POLL);
        }
        if handle.state() != container::SliceState::Active {
            return Delivered::Gone;
        }
        let request = match aether_sdk::codec::encode_request(&[], &[], body) {
            Ok(request) => request,
            Err(e) => return Delivered::Failed(e.to_string()),
        };
        match container.call_inline(&handle, method, &request, Instant::now() + DELIVERY_DEADLINE, 0) {
            Ok(_) => Delivered::Done,
            Err(e) => Delivered::Failed(e.to_string()),
        }
    }
}
