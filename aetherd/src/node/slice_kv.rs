//! The loop's side of slice state (`slice_state`): resolving a request's scope, submitting it, and feeding
//! the slice watches.
//!
//! What it owns: the node's one store watch on `data/` and the order in which its changes reach the
//! [`crate::slice_state::WatchHub`]. Invariants: nothing here waits: reads and writes go to replication with
//! their reply channels, as the management API's do; a new slice watch is registered only after everything
//! drained so far was published, so it sees exactly the changes applied after it.

use super::Node;
use crate::replication::Waiter;
use crate::slice_state::{scope, SliceOp, SliceRequest};
use log::warn;
use net::Ctx;

impl Node {
    /// Registers the store watch that feeds the slice watches (once, at construction).
    pub(super) fn watch_slice_data(store: &mut kvstore::Store) -> Option<kvstore::WatchId> {
        match store.watch(kvstore::Namespace::Data.prefix()) {
            Ok(id) => Some(id),
            Err(e) => {
                warn!("slice watches are off on this node: {e}");
                None
            }
        }
    }

    pub(super) fn slice_kv(&mut self, ctx: &mut Ctx<'_>, request: SliceRequest) {
        let SliceRequest { artifact, op } = request;
        let resolved = match self.replication.as_ref() {
            Some(r) => scope::resolve(r.store(), &artifact),
            None => Err(mgmt::ApiError::unavailable("replication is stopped on this node; see its log")),
        };
        let (scope, quota) = match resolved {
            Ok(resolved) => resolved,
            Err(e) => return op.fail(e),
        };
        match op {
            SliceOp::Get { path, reply } => self.read(ctx, false, Waiter::Get(scope.key(path), reply)),
            SliceOp::List { prefix, limit, reply } => {
                self.read(ctx, false, Waiter::List(format!("{}{prefix}", scope.prefix()), limit, reply));
            }
            SliceOp::Write { write, reply } => {
                let command = write.bounded(&scope, quota);
                match self.unavailable_without_quorum() {
                    Some(e) => drop(reply.send(Err(e))),
                    None => self.drive(ctx, |r| r.submit_slice_write(&command, reply)),
                }
            }
            SliceOp::Watch { watch, reply } => {
                self.feed_slice_watches();
                let registered = match self.slice_watch {
                    Some(_) => self.data.slice_watches.register(&scope.prefix(), watch),
                    None => Err(container::state::StateError::Unavailable("slice watches are off on this node".into())),
                };
                drop(reply.send(registered));
            }
        }
    }

    /// Hands the changes applied under `data/` since the last call to the slice watches.
    pub(super) fn feed_slice_watches(&mut self) {
        let (Some(r), Some(id)) = (self.replication.as_mut(), self.slice_watch) else { return };
        match r.store_mut().drain_events(id) {
            Ok(events) if events.is_empty() => {}
            Ok(events) => self.data.slice_watches.publish(events),
            Err(e) => warn!("slice data watch: {e}"),
        }
    }
}
