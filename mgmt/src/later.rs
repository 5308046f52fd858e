//! Answers that another thread gives later: a route that hands its work to the node (a KV write, whose
//! outcome comes when its consensus slot applies) answers with [`Response::later`], and the port defers the
//! HTTP answer (`httpd::Job::defer`), so the request holds no handler thread while it waits and its outcome
//! goes from the thread it arrives on (the node's event loop) straight to the port's I/O thread.
//!
//! [`promise`] makes the pair: the [`Answerer`] goes with the work, the [`Response`] back to the port. A
//! backend that answers at once (every test double) answers before the route returns: the route then
//! returns that answer itself ([`Promise::now_or_later`]), so nothing changes for it.
//!
//! Invariants: an answer is given once; an `Answerer` dropped unanswered answers 500; header fields the
//! layers above add to a later response (CORS) are added to the answer when it comes; the port answers 504
//! itself when the answer has not come [`ANSWER_WITHIN`] after it was deferred (the event loop stuck, say).

use crate::server::Response;
use crate::ApiError;
use std::sync::{Arc, Mutex};

/// How long the port waits for a later answer before it answers 504 itself: the node's own bound on a write
/// (5 s for its slot) and a second more, as a thread waiting for the loop did.
pub const ANSWER_WITHIN: std::time::Duration = std::time::Duration::from_secs(6);

/// Where a later answer goes (the port's: write it to the client).
pub type Respond = Box<dyn FnOnce(Response) + Send>;

#[derive(Default)]
struct Slot {
    /// The answer, when it came before anyone waited for it.
    ready: Option<Response>,
    /// Who waits for it, when they came first.
    respond: Option<Respond>,
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// The waiting side of a later answer; carried by a [`Response`].
#[derive(Clone)]
pub struct Promise(Arc<Mutex<Slot>>);

/// The answering side; answer once, from any thread.
pub struct Answerer(Option<Arc<Mutex<Slot>>>);

/// A later answer's two sides.
pub fn promise() -> (Promise, Answerer) {
    let slot = Arc::new(Mutex::new(Slot::default()));
    (Promise(Arc::clone(&slot)), Answerer(Some(slot)))
}

impl Promise {
    /// The answer when it has come already, else a response that carries this promise.
    pub fn now_or_later(self) -> Response {
        if let Some(ready) = lock(&self.0).ready.take() {
            return ready;
        }
        Response { later: Some(self), ..Response::new(202, serde_json::Value::Null) }
    }

    /// Have `respond` called with the answer: now, when it came already, else when it comes.
    pub fn then(&self, respond: Respond) {
        let mut slot = lock(&self.0);
        match slot.ready.take() {
            Some(ready) => {
                drop(slot);
                respond(ready);
            }
            None => slot.respond = Some(respond),
        }
    }

    /// Wait on this thread for the answer.
    pub fn wait(&self) -> Response {
        let (tx, rx) = std::sync::mpsc::channel();
        self.then(Box::new(move |answer| drop(tx.send(answer))));
        rx.recv().unwrap_or_else(|_| ApiError::new(500, "internal", "the answer was lost").into())
    }
}

impl Answerer {
    pub fn answer(mut self, answer: Response) {
        self.give(answer);
    }

    fn give(&mut self, answer: Response) {
        let Some(slot) = self.0.take() else { return };
        let mut slot = lock(&slot);
        match slot.respond.take() {
            Some(respond) => {
                drop(slot);
                respond(answer);
            }
            None => slot.ready = Some(answer),
        }
    }
}

impl Drop for Answerer {
    fn drop(&mut self) {
        if self.0.is_some() {
            self.give(ApiError::new(500, "internal", "the node dropped this request without an answer").into());
        }
    }
}

impl std::fmt::Debug for Promise {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Promise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_before_the_wait_is_returned_as_it_is() {
        let (waiting, answerer) = promise();
        answerer.answer(Response::ok(serde_json::json!({"version": 3})));
        let response = waiting.now_or_later();
        assert!(response.later.is_none());
        assert_eq!(response.body["version"], 3);
    }

    #[test]
    fn an_answer_after_the_wait_reaches_the_waiter_once_and_a_dropped_answerer_answers_500() {
        let (waiting, answerer) = promise();
        let response = waiting.now_or_later();
        let later = response.later.clone().expect("a later answer");
        let thread = std::thread::spawn(move || answerer.answer(Response::ok(serde_json::json!({"version": 4}))));
        assert_eq!(later.wait().body["version"], 4);
        thread.join().unwrap();

        let (waiting, answerer) = promise();
        let later = waiting.now_or_later().later.expect("a later answer");
        drop(answerer);
        assert_eq!(later.wait().status, 500);
    }
}
