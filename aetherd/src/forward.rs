//! Calls to slices on other nodes, over the cluster transport: the app port's and the container's
//! [`Forward`] implementation, and the table of calls waiting for an `InvokeReply`.
//!
//! A caller (app handler thread or slice worker) registers its call in the shared [`Forwarder`] table, asks
//! the event loop to send the `Invoke` frame, and blocks on its own channel until the loop delivers the
//! reply, the peer goes down (`Lost`), or the deadline passes. The loop never blocks on a caller: every
//! delivery is a `try_send` into a one-slot channel.
//!
//! Invariants: every registered call is completed exactly once (reply, peer down, expiry, or the caller's
//! own timeout removing it); the table is bounded (a full table answers `Unreachable` at once).

use crate::app::{Forward, ForwardError};
use crate::node::Command;
use invoke::forwarder::Forwarder;
use invoke::{InvokeReply, InvokeRequest};
use net::NetHandle;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeSet;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub type Waiter = SyncSender<Result<InvokeReply, ForwardError>>;

/// State shared between callers and the event loop.
pub struct Calls {
    pub table: Mutex<Forwarder<Waiter>>,
    /// Nodes the failure detector believes alive (kept by the loop).
    pub alive: RwLock<BTreeSet<String>>,
    epoch: Instant,
}

impl Calls {
    pub fn new() -> Arc<Calls> {
        Arc::new(Calls { table: Mutex::new(Forwarder::default()), alive: RwLock::default(), epoch: Instant::now() })
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Hands a reply to its caller.
    pub fn complete(&self, reply: InvokeReply) {
        if let Some(waiter) = self.table.lock().complete(reply.id) {
            let _ = waiter.try_send(Ok(reply));
        }
    }

    /// Calls in flight to a node that went down: the request may have run there.
    pub fn peer_down(&self, node: &str) {
        for call in self.table.lock().peer_down(node) {
            let _ = call.waiter.try_send(Err(ForwardError::Lost(format!("{node} went down"))));
        }
    }

    pub fn expire(&self) {
        for (_, waiter) in self.table.lock().expire(self.now_ms()) {
            let _ = waiter.try_send(Err(ForwardError::Timeout));
        }
    }
}

/// The app port's way to reach other nodes.
pub struct NodeForward {
    pub calls: Arc<Calls>,
    pub handle: NetHandle<Command>,
}

impl Forward for NodeForward {
    fn forward(&self, node: &str, mut request: InvokeRequest, deadline: Duration) -> Result<InvokeReply, ForwardError> {
        let (tx, rx) = sync_channel(1);
        let now_ms = self.calls.now_ms();
        let id = self
            .calls
            .table
            .lock()
            .begin(now_ms, node, request.deadline_ms_left, false, tx)
            .map_err(|_| ForwardError::Unreachable("too many calls in flight".into()))?;
        request.id = id;
        let command = Command::SendInvoke { node: node.to_string(), id, payload: request.encode() };
        if self.handle.command(command).is_err() {
            self.calls.table.lock().complete(id);
            return Err(ForwardError::Stopped);
        }
        match rx.recv_timeout(deadline) {
            Ok(result) => result,
            Err(_) => {
                self.calls.table.lock().complete(id);
                Err(ForwardError::Timeout)
            }
        }
    }

    fn is_alive(&self, node: &str) -> bool {
        self.calls.alive.read().contains(node)
    }
}
