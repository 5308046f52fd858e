//! One attempt of a call: on this node's instance (under its bulkhead, with the lease epoch of a
//! single-active slice in the call's context) or forwarded to another node, and how it ended.

use std::time::{Duration, Instant};

use container::{CallContext, CallError, SliceHandle};
use invoke::{InvokeReply, InvokeRequest, HOPS_MAX};

use super::super::answers::{
    deadline_exceeded, error, from_call_error, from_response, is_overloaded, never_started, time_left,
};
use super::super::bulkhead::{Refusal, RETRY_AFTER};
use super::place::Holds;
use super::{Attempt, Call, Dispatcher, ForwardError, Runner};

impl Dispatcher {
    /// Run `call` on this node's instance `handle`. A single-active slice's instance runs it only while this
    /// node holds the lease (the slice sees the epoch); otherwise the call never starts and is retryable.
    pub(in crate::app) fn call_local(&self, call: &Call<'_>, handle: &SliceHandle, runner: Runner<'_>) -> Attempt {
        if matches!(runner, Runner::Inline(watch) if !watch.local_allowed()) {
            return Attempt::Retry("no slice runs on the I/O thread".to_owned());
        }
        let lease_epoch = match self.lease_epoch(call.artifact, handle.info().single_active) {
            Ok(epoch) => epoch,
            Err(why) => return Attempt::Retry(why),
        };
        // The permit is held until the slice returns, also past the deadline (the thread keeps it).
        let _permit = match self.bulkheads.of(handle).enter(call.deadline) {
            Ok(permit) => permit,
            Err(Refusal::Deadline) => {
                return Attempt::Done(never_started(call.artifact, call.method, &Refusal::Deadline.to_string()))
            }
            Err(full) => return Attempt::Refused(full.to_string()),
        };
        let Some(left) = time_left(call.deadline) else {
            return Attempt::Done(never_started(call.artifact, call.method, "the deadline passed"));
        };
        let started = Instant::now();
        let _load = self.count_load(call.artifact, &self.node_id);
        let attempt = self.run_local(call, handle, runner, left, lease_epoch);
        if let (Some(metrics), Attempt::Done(reply)) = (&self.metrics, &attempt) {
            metrics.record_call(call.artifact, call.method, started.elapsed(), reply.status);
        }
        attempt
    }

    /// The slice call of [`Dispatcher::call_local`], once it holds its permit.
    fn run_local(
        &self,
        call: &Call<'_>,
        handle: &SliceHandle,
        runner: Runner<'_>,
        left: Duration,
        lease_epoch: u64,
    ) -> Attempt {
        let context = CallContext { lease_epoch, ..call.context() };
        let answer = match runner {
            Runner::Pool => self.container.call_pooled(handle, call.method, call.request.to_vec(), left, context),
            Runner::Inline(watch) => {
                watch.arm(call.deadline, handle);
                let answer = self.container.call_inline_in(handle, call.method, &call.request, context);
                if !watch.disarm() {
                    return Attempt::Done(deadline_exceeded(call, &[]));
                }
                answer
            }
            Runner::Serving => self.container.call_inline_in(handle, call.method, &call.request, context),
        };
        match answer {
            Ok(response) => Attempt::Done(from_response(response)),
            Err(e @ (CallError::NoInstance { .. } | CallError::NotActive { .. } | CallError::Overloaded { .. })) => {
                Attempt::Retry(e.to_string())
            }
            Err(e) => Attempt::Done(from_call_error(&e, true)),
        }
    }

    /// A forwarded attempt at `call`, waited for on this thread.
    pub(super) fn call_remote(&self, node: &str, call: &Call<'_>) -> Attempt {
        let (request, _counts) = match self.begin_remote(node, call, Runner::Pool) {
            Ok(begun) => begun,
            Err(attempt) => return attempt,
        };
        let outcome = match self.forward.as_ref() {
            Some(forward) => {
                let left = Duration::from_millis(u64::from(request.deadline_ms_left));
                forward.forward(node, request, left)
            }
            None => Err(ForwardError::Unreachable("no cluster transport".to_owned())),
        };
        self.remote_outcome(node, call, outcome)
    }

    /// The request of a forwarded attempt at `call` and the counts it holds until its outcome, or how the
    /// attempt ended without being sent. `runner` says whether the caller waits for it on its thread.
    pub(super) fn begin_remote(
        &self,
        node: &str,
        call: &Call<'_>,
        runner: Runner<'_>,
    ) -> Result<(InvokeRequest, Holds), Attempt> {
        if self.forward.is_none() {
            return Err(Attempt::Retry("no cluster transport".to_owned()));
        }
        let hops = call.hops.saturating_add(1);
        if hops > HOPS_MAX {
            let detail =
                format!("calling {} would make a chain of {hops} cluster hops (limit {HOPS_MAX})", call.artifact);
            return Err(Attempt::Done(error(500, "call depth exceeded", &detail, false)));
        }
        let Some(left) = time_left(call.deadline) else {
            return Err(Attempt::Done(deadline_exceeded(call, &[])));
        };
        let deferred = matches!(runner, Runner::Inline(watch) if watch.defers());
        let outbound = if deferred { self.outbound_deferred(call.artifact) } else { self.outbound(call.artifact) };
        let Some(outbound) = outbound else {
            let detail = format!("too many calls of {} wait on other nodes", call.artifact);
            return Err(Attempt::Done(error(503, "overloaded", &detail, false)));
        };
        let request = InvokeRequest {
            id: 0,
            origin: self.node_id.clone(),
            artifact: call.artifact.to_owned(),
            method: call.method.to_owned(),
            request: call.request.to_vec(),
            deadline_ms_left: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
            hops,
            request_id: call
                .request_id
                .as_deref()
                .map(str::to_owned)
                .or_else(crate::metrics::request_id::current)
                .unwrap_or_default(),
            caller: call.caller.as_deref().unwrap_or_default().to_owned(),
            depth: u8::try_from(call.depth).unwrap_or(u8::MAX).min(invoke::protocol::DEPTH_MAX),
            pins: call.pins.as_ref().map(|p| p.0.clone()).unwrap_or_default(),
        };
        Ok((request, (outbound, self.count_load(call.artifact, node))))
    }

    /// How a forwarded attempt at `call` on `node` ended, from its outcome.
    pub(super) fn remote_outcome(
        &self,
        node: &str,
        call: &Call<'_>,
        outcome: Result<InvokeReply, ForwardError>,
    ) -> Attempt {
        match outcome {
            Ok(reply) if is_overloaded(&reply) => {
                let until = Instant::now() + RETRY_AFTER;
                self.refusing.lock().insert((node.to_owned(), call.artifact.to_owned()), until);
                Attempt::Refused("overloaded there".to_owned())
            }
            Ok(reply) if reply.is_no_instance() => Attempt::Retry("no instance there".to_owned()),
            Ok(reply) => Attempt::Done(reply),
            Err(e @ ForwardError::Unreachable(_)) => Attempt::Retry(e.to_string()),
            Err(e @ ForwardError::Lost(_)) if call.idempotent => Attempt::Lost(e.to_string()),
            Err(e @ ForwardError::Lost(_)) => {
                let detail = format!("{node} {e}; not retried: the call may have reached {}", call.artifact);
                Attempt::Done(error(503, "unavailable", &detail, true))
            }
            Err(ForwardError::Timeout) => Attempt::Done(deadline_exceeded(call, &[format!("{node}: no reply")])),
            Err(ForwardError::Stopped) => Attempt::Done(error(503, "shutting down", "the node is stopping", false)),
        }
    }
}
