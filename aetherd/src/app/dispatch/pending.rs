//! A dispatch that stopped at a forwarded attempt, and how it goes on once the attempt's outcome is known.
//!
//! [`Dispatcher::dispatch_from`] runs a call's attempts until one ends it or one is to be forwarded; a
//! forwarded attempt comes back as a [`Pending`]: the request to send, the call (owned, so it can outlive the
//! thread that started it), the counts the attempt holds and how far the call got ([`Progress`]). Its outcome
//! goes to [`Dispatcher::settle`], which either ends the call or says to go on from where it was
//! ([`Settled::Again`]), with the same policy as one thread running every attempt: so a caller may wait for
//! the outcome on its thread ([`Dispatcher::dispatch_excluding`]) or leave a callback the event loop runs
//! ([`Dispatcher::forward_then`]: the app port's deferred answers, where the call holds no thread while it
//! waits).
//!
//! Invariants: a `Pending` holds its attempt's outbound and load counts until it is settled or dropped; the
//! attempts of one call number at most [`ATTEMPTS_MAX`] however they are split between threads.

use std::sync::Arc;
use std::time::Duration;

use invoke::{InvokeReply, InvokeRequest};

use super::super::answers::{error, no_live_instance, overloaded, with_failures};
use super::place::{Counted, Holds};
use super::{Attempt, Call, Dispatcher, ForwardError, Runner, ATTEMPTS_MAX};

/// What is done with a forwarded call's outcome; called once, on the thread the outcome is known on.
pub type ForwardDone = Box<dyn FnOnce(Result<InvokeReply, ForwardError>) + Send>;

/// A [`Call`] that owns its parts: the call's context and flags kept in a call with no parts, its parts
/// beside it.
pub(in crate::app) struct OwnedCall {
    artifact: String,
    method: String,
    request: Vec<u8>,
    rest: Call<'static>,
}

impl OwnedCall {
    fn of(call: &Call<'_>) -> OwnedCall {
        OwnedCall {
            artifact: call.artifact.to_owned(),
            method: call.method.to_owned(),
            request: call.request.to_vec(),
            rest: call.with_parts("", "", &[]),
        }
    }

    /// The call, borrowing these parts.
    pub(in crate::app) fn call(&self) -> Call<'_> {
        self.rest.with_parts(&self.artifact, &self.method, &self.request)
    }
}

/// How far a call got: the nodes it tried and why they failed.
#[derive(Default)]
pub(in crate::app) struct Progress {
    /// Nodes not to try again.
    pub exclude: Vec<String>,
    /// `node: why` of each failed attempt, for the final answer.
    pub failures: Vec<String>,
    /// Some instance refused the call as overloaded.
    pub refused: bool,
    /// Attempts lost with their node.
    pub lost: u32,
    /// Attempts made.
    pub attempts: usize,
}

impl Progress {
    pub fn excluding(exclude: Vec<String>) -> Progress {
        Progress { exclude, ..Progress::default() }
    }

    /// Whether another attempt may be made.
    pub fn may_try(&self) -> bool {
        self.attempts < ATTEMPTS_MAX
    }

    /// An attempt on `node` ended: the answer when it ends the call, else `None` (and `node` is excluded).
    pub fn ended(&mut self, node: String, attempt: Attempt, call: &Call<'_>) -> Option<InvokeReply> {
        let why = match attempt {
            Attempt::Done(reply) => return Some(reply),
            Attempt::Retry(why) => why,
            Attempt::Refused(why) => {
                self.refused = true;
                why
            }
            Attempt::Lost(why) => {
                self.lost += 1;
                if self.lost > 1 {
                    self.failures.push(format!("{node}: {why}"));
                    let detail = with_failures(
                        format!("a second node went down under a call to {}; not retried", call.artifact),
                        &self.failures,
                    );
                    return Some(error(503, "unavailable", &detail, true));
                }
                why
            }
        };
        log::debug!("call {} {} on {node}: {why}; trying elsewhere", call.artifact, call.method);
        self.failures.push(format!("{node}: {why}"));
        self.exclude.push(node);
        None
    }

    /// The answer when no attempt is left.
    pub fn given_up(&self, call: &Call<'_>) -> InvokeReply {
        if self.refused {
            let detail = with_failures(format!("every instance of {} is busy", call.artifact), &self.failures);
            return overloaded(&detail);
        }
        no_live_instance(call, &self.failures)
    }
}

/// Where a dispatch stopped.
pub(in crate::app) enum Dispatched {
    /// The call's answer.
    Reply(InvokeReply),
    /// An attempt to forward: send it, then [`Dispatcher::settle`] its outcome.
    Forward(Box<Pending>),
}

/// A forwarded attempt about to be sent.
pub(in crate::app) struct Pending {
    pub node: String,
    pub request: InvokeRequest,
    /// The call as its caller named it.
    named: OwnedCall,
    /// The version this attempt went to, when not the named one.
    tried: Option<String>,
    progress: Progress,
    _outbound: Counted<String>,
    _load: Counted<(String, String)>,
}

impl Pending {
    pub(super) fn new(
        node: String,
        request: InvokeRequest,
        named: &Call<'_>,
        tried: &Call<'_>,
        progress: Progress,
        counts: Holds,
    ) -> Pending {
        let tried = (tried.artifact != named.artifact).then(|| tried.artifact.to_owned());
        Pending { node, request, named: OwnedCall::of(named), tried, progress, _outbound: counts.0, _load: counts.1 }
    }

    /// How long the attempt may wait for its reply.
    pub fn left(&self) -> Duration {
        Duration::from_millis(u64::from(self.request.deadline_ms_left))
    }

    /// The slice the attempt calls.
    pub fn artifact(&self) -> &str {
        self.tried.as_deref().unwrap_or(&self.named.artifact)
    }
}

/// A forwarded attempt's outcome, for its caller.
pub(in crate::app) enum Settled {
    /// The call's answer.
    Reply(InvokeReply),
    /// Go on with the call from where it was ([`Dispatcher::dispatch_from`]).
    Again(OwnedCall, Progress),
}

impl Dispatcher {
    /// What a forwarded attempt's outcome means for its call.
    pub(in crate::app) fn settle(&self, pending: Pending, outcome: Result<InvokeReply, ForwardError>) -> Settled {
        let Pending { node, named, tried, mut progress, .. } = pending;
        let call = named.call();
        let on_version;
        let tried = match &tried {
            Some(artifact) => {
                on_version = call.on_version(artifact);
                &on_version
            }
            None => &call,
        };
        let attempt = self.remote_outcome(&node, tried, outcome);
        if let Some(reply) = progress.ended(node, attempt, tried) {
            return Settled::Reply(reply);
        }
        drop(call);
        Settled::Again(named, progress)
    }

    /// Send a forwarded attempt and wait on this thread for its outcome, going on with the call until it ends.
    pub(in crate::app) fn forward_blocking(&self, mut dispatched: Dispatched, runner: Runner<'_>) -> InvokeReply {
        loop {
            let mut pending = match dispatched {
                Dispatched::Reply(reply) => return reply,
                Dispatched::Forward(pending) => *pending,
            };
            let outcome = match self.forward.as_ref() {
                Some(forward) => {
                    let (left, request) = (pending.left(), std::mem::take(&mut pending.request));
                    forward.forward(&pending.node, request, left)
                }
                None => Err(ForwardError::Unreachable("no cluster transport".to_owned())),
            };
            dispatched = match self.settle(pending, outcome) {
                Settled::Reply(reply) => return reply,
                Settled::Again(named, progress) => self.dispatch_from(&named.call(), progress, runner),
            };
        }
    }

    /// Send a forwarded attempt; `done` gets what its outcome means, on the thread the outcome is known on
    /// (the event loop, usually): it must not block.
    pub(in crate::app) fn forward_then(
        self: &Arc<Dispatcher>,
        mut pending: Pending,
        done: Box<dyn FnOnce(Settled) + Send>,
    ) {
        let Some(forward) = self.forward.clone() else {
            let settled = self.settle(pending, Err(ForwardError::Unreachable("no cluster transport".to_owned())));
            return done(settled);
        };
        let request = std::mem::take(&mut pending.request);
        let node = pending.node.clone();
        let dispatcher = Arc::clone(self);
        forward.forward_then(&node, request, Box::new(move |outcome| done(dispatcher.settle(pending, outcome))));
    }
}
