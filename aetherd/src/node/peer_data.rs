//! The cluster port's data frames: calls forwarded between nodes (sent, served on the forwarded-calls pool,
//! answered). Slice libraries do not travel here: they are in the storage plane (`crate::blobs`).
//!
//! Invariants: nothing here blocks the loop (a forwarded call runs on the pool); a call whose request cannot be sent, or whose answer is too large to send, is
//! answered with an error at once rather than left to its deadline.

use super::{Command, Node};
use invoke::{InvokeReply, InvokeRequest};
use log::warn;
use net::{Ctx, FrameKind, PeerId};

impl Node {
    pub(super) fn send_invoke(&mut self, ctx: &mut Ctx<'_>, node: &str, id: u64, payload: &[u8]) {
        let sent = match self.peer_names.iter().position(|n| n == node) {
            Some(peer) => ctx.send(peer, FrameKind::Invoke, payload).map_err(|e| e.to_string()),
            None => Err(format!("{node} is not a peer")),
        };
        if let Err(why) = sent {
            let waiter = self.data.calls.table.lock().complete(id);
            if let Some(waiter) = waiter {
                waiter.deliver(Err(crate::app::ForwardError::Unreachable(why)));
            }
        }
    }

    /// A call another node forwarded here: served on the forwarded-calls pool, never on the loop.
    pub(super) fn serve_invoke(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, payload: &[u8]) {
        let request = match InvokeRequest::decode(payload) {
            Ok(request) => request,
            Err(e) => return warn!("dropping an invoke request from {}: {e}", ctx.peer_id(peer).unwrap_or("?")),
        };
        let (Some(pool), Some(handle)) = (self.data.forwarded.get(), self.data.handle.get()) else {
            let reply = InvokeReply::error(request.id, 503, "unavailable", "this node is starting", false);
            return self.send_reply(ctx, peer, request.id, &reply.encode());
        };
        let handle = handle.clone();
        pool.submit(
            request,
            Box::new(move |reply: InvokeReply| {
                let _ = handle.command(Command::SendReply { peer, id: reply.id, payload: reply.encode() });
            }),
        );
    }

    /// Send the answer to call `id` of `peer`. One that cannot be sent is counted and logged
    /// (rate-limited); when it was too large, a small error reply goes in its place, so the caller does
    /// not wait for its deadline.
    pub(super) fn send_reply(&mut self, ctx: &mut Ctx<'_>, peer: PeerId, id: u64, payload: &[u8]) {
        let Err(e) = ctx.send(peer, FrameKind::InvokeReply, payload) else { return };
        let name = self.peer_names.get(peer).map_or("?", String::as_str);
        self.data.calls.reply_unsendable(name, &format!("{e} ({} bytes)", payload.len()));
        if matches!(e, net::SendError::TooLarge) {
            let detail = format!("the answer of {} bytes is too large to send back", payload.len());
            let small = InvokeReply::error(id, 502, "reply too large", &detail, true);
            let _ = ctx.send(peer, FrameKind::InvokeReply, &small.encode());
        }
    }
}
