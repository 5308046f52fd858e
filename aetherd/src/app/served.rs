//! Calls that reach this node's data plane from elsewhere: calls forwarded by other nodes, and nested
//! calls of this node's slices whose callee has no instance here.
//!
//! A forwarded call's deadline is absolute: the moment its frame arrived plus the time its sender
//! still waited then. A call whose deadline passed before it could start (in the forwarded-call queue
//! or the instance's bulkhead queue) never starts and is answered 504 with `reached_slice: false`; a
//! call refused by the instance's bulkhead is answered 503 "overloaded" (never reached), so the sender
//! tries another node or answers its client fast. A forwarded call runs on its serving thread and
//! holds its instance's permit until the slice returns.
//!
//! A nested call carries the deadline and hops of the call that made it (the container's
//! [`CallContext`]), so deadlines shrink along a chain across nodes.

use std::time::{Duration, Instant};

use aether_sdk::Response;
use container::{CallContext, CallError, RemoteCall};
use invoke::{InvokeReply, InvokeRequest};

use super::answers::{error, never_started, to_response};
use super::dispatch::{Attempt, Call, Dispatcher, Runner};

impl Dispatcher {
    /// Answer a call forwarded by another node that arrived just now; see
    /// [`Dispatcher::serve_forwarded_at`].
    #[cfg(test)]
    pub fn serve_forwarded(&self, request: InvokeRequest) -> InvokeReply {
        self.serve_forwarded_at(request, Instant::now())
    }

    /// Answer a call forwarded by another node whose frame arrived at `received`, with an instance of
    /// this node only, on this thread. Blocks until the slice answers (which may be past the deadline:
    /// the caller decides what a late reply is worth); run it on a serving thread, never on the event
    /// loop or a container worker. The reply carries the request's id.
    pub fn serve_forwarded_at(&self, request: InvokeRequest, received: Instant) -> InvokeReply {
        let id = request.id;
        let mut reply = self.serve_forwarded_reply(request, received);
        reply.id = id;
        reply
    }

    fn serve_forwarded_reply(&self, request: InvokeRequest, received: Instant) -> InvokeReply {
        if let Err(e) = request.check() {
            return error(400, "bad request", &e.to_string(), false);
        }
        // The serving thread takes the caller's request id for the call (a fresh one if it sent none).
        let _request_id = crate::metrics::request_id::Scope::enter(&request.request_id);
        let Some(handle) = self.container.find_active(&request.artifact) else {
            return InvokeReply::no_instance(request.id, &self.node_id, &request.artifact);
        };
        let deadline = received + Duration::from_millis(u64::from(request.deadline_ms_left));
        if deadline <= Instant::now() {
            return never_started(&request.artifact, &request.method, "its deadline passed before it was served");
        }
        let call = Call {
            artifact: &request.artifact,
            method: &request.method,
            request: request.request.into(),
            idempotent: false,
            hops: request.hops,
            deadline,
            request_id: crate::metrics::request_id::current().map(std::sync::Arc::from),
            caller: (!request.caller.is_empty()).then(|| std::sync::Arc::from(request.caller.as_str())),
            depth: u32::from(request.depth),
            pins: (!request.pins.is_empty()).then(|| std::sync::Arc::new(invoke::Pins(request.pins))),
        };
        match self.call_local(&call, &handle, Runner::Serving) {
            Attempt::Done(reply) => reply,
            Attempt::Refused(why) => {
                super::answers::overloaded(&format!("{} on {}: {why}", call.artifact, self.node_id))
            }
            Attempt::Retry(why) | Attempt::Lost(why) => {
                error(503, "no instance", &format!("{why} on {}", self.node_id), false)
            }
        }
    }
}

/// Slice-to-slice calls whose callee has no instance on this node.
impl RemoteCall for Dispatcher {
    fn call(&self, artifact: &str, method: &str, request: &[u8], context: CallContext) -> Result<Response, CallError> {
        let call = Call {
            artifact,
            method,
            request: request.into(),
            idempotent: false,
            hops: context.hops,
            deadline: context.deadline.unwrap_or_else(|| Instant::now() + self.call_deadline()),
            request_id: context.request_id,
            caller: context.caller,
            depth: context.depth,
            pins: context.pins.or_else(|| self.entry_pins()),
        };
        // Never this node, unless the slice's placement chose this hook over the local instance: the container
        // calls it only when it found no local instance otherwise.
        let exclude = if self.places(artifact) { Vec::new() } else { vec![self.node_id.clone()] };
        let reply = self.dispatch_excluding(&call, exclude, Runner::Pool);
        Ok(to_response(reply))
    }

    /// Single-active slices (only the holder serves) and slices not placed local-first.
    fn places(&self, artifact: &str) -> bool {
        let registry = self.registry().read();
        registry.lease_of(artifact).is_some()
            || registry.selection(artifact) != vocab::Selection::LocalFirst
            || registry.versions().versioned(artifact)
    }
}
