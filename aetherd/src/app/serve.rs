//! Threads that serve calls forwarded by other nodes, so the event loop never blocks on a slice.
//!
//! The node runtime hands each incoming `Invoke` request to [`ForwardedCalls::submit`] with a closure
//! that sends the `InvokeReply` frame back; a serving thread runs [`Dispatcher::serve_forwarded`] and
//! then the closure. `submit` never blocks: when the queue is full the closure runs at once, on the
//! caller's thread, with a 503 "overloaded" reply marked as never having reached a slice (so the
//! sender tries another node).
//!
//! Invariants: at most `queue_max` requests wait; every submitted request gets exactly one reply:
//! requests queued before [`ForwardedCalls::stop`] are still served (each within its own deadline),
//! later ones are answered "shutting down" at once.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use invoke::{InvokeReply, InvokeRequest};
use parking_lot::Mutex;

use super::dispatch::{error, Dispatcher};

/// What to do with a reply: typically, send it to the origin as an `InvokeReply` frame.
pub type ReplyTo = Box<dyn FnOnce(InvokeReply) + Send>;

type Job = (InvokeRequest, ReplyTo);

/// A bounded pool of serving threads for forwarded calls.
pub struct ForwardedCalls {
    queue: Mutex<Option<SyncSender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    queue_max: usize,
}

impl ForwardedCalls {
    /// Start `threads` serving threads with a queue of `queue_max` requests.
    pub fn start(dispatcher: Arc<Dispatcher>, threads: usize, queue_max: usize) -> Result<ForwardedCalls, String> {
        let (sender, receiver) = mpsc::sync_channel::<Job>(queue_max.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let calls = ForwardedCalls { queue: Mutex::new(Some(sender)), threads: Mutex::new(Vec::new()), queue_max };
        for n in 0..threads.max(1) {
            let (dispatcher, receiver) = (Arc::clone(&dispatcher), Arc::clone(&receiver));
            let spawned = std::thread::Builder::new()
                .name(format!("app-forwarded-{n}"))
                .spawn(move || serve_queue(&dispatcher, &receiver))
                .map_err(|e| format!("cannot start a thread for forwarded calls: {e}"));
            match spawned {
                Ok(thread) => calls.threads.lock().push(thread),
                Err(e) => {
                    calls.stop();
                    return Err(e);
                }
            }
        }
        Ok(calls)
    }

    /// Queue `request`; `reply` gets its answer on a serving thread, or at once when the queue is
    /// full or the pool stopped.
    pub fn submit(&self, request: InvokeRequest, reply: ReplyTo) {
        let id = request.id;
        let queue = self.queue.lock().clone();
        let Some(queue) = queue else {
            return reply(refusal(id, "shutting down", "the node is stopping"));
        };
        match queue.try_send((request, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full((_, reply))) => {
                log::warn!("forwarded calls: queue full ({} waiting); refusing call {id}", self.queue_max);
                let detail = format!("{} forwarded calls already wait here", self.queue_max);
                reply(refusal(id, "overloaded", &detail));
            }
            Err(TrySendError::Disconnected((_, reply))) => reply(refusal(id, "shutting down", "the node is stopping")),
        }
    }

    /// Stop taking calls, answer the queued ones, and wait for the serving threads.
    pub fn stop(&self) {
        self.queue.lock().take();
        let threads = std::mem::take(&mut *self.threads.lock());
        for thread in threads {
            let _ = thread.join();
        }
    }
}

impl Drop for ForwardedCalls {
    fn drop(&mut self) {
        self.stop();
    }
}

fn serve_queue(dispatcher: &Dispatcher, receiver: &Mutex<Receiver<Job>>) {
    loop {
        let job = receiver.lock().recv();
        let Ok((request, reply)) = job else { return };
        reply(dispatcher.serve_forwarded(request));
    }
}

fn refusal(id: u64, kind: &str, detail: &str) -> InvokeReply {
    InvokeReply { id, ..error(503, kind, detail, false) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    use container::{Container, ContainerConfig};
    use invoke::Registry;
    use parking_lot::RwLock;

    fn request(id: u64) -> InvokeRequest {
        InvokeRequest {
            id,
            origin: "node-2".into(),
            artifact: "org.aether.examples:echo:1.0.0".into(),
            method: "echo".into(),
            request: Vec::new(),
            deadline_ms_left: 100,
            hops: 1,
        }
    }

    fn dispatcher() -> Arc<Dispatcher> {
        let mut config = ContainerConfig::new("/nonexistent-repo", "node-1");
        config.pool.workers = 1;
        let container = Arc::new(Container::new(config).unwrap());
        let registry = Arc::new(RwLock::new(Registry::new()));
        Arc::new(Dispatcher::new("node-1".into(), container, registry, None, Duration::from_millis(100)))
    }

    #[test]
    fn every_call_gets_one_reply_with_its_id_also_after_stop() {
        let calls = ForwardedCalls::start(dispatcher(), 2, 16).unwrap();
        let (sender, replies) = channel();
        for id in 1..=5 {
            let sender = sender.clone();
            calls.submit(request(id), Box::new(move |reply| sender.send(reply).unwrap()));
        }
        let mut got: Vec<InvokeReply> = (0..5).map(|_| replies.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        got.sort_by_key(|r| r.id);
        assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert!(got.iter().all(InvokeReply::is_no_instance), "no echo here: {got:?}");
        calls.stop();
        calls.submit(request(6), Box::new(move |reply| sender.send(reply).unwrap()));
        let refused = replies.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!((refused.id, refused.status, refused.reached_slice), (6, 503, false));
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let calls = ForwardedCalls::start(dispatcher(), 1, 1).unwrap();
        // Hold the only serving thread inside a reply, so the queue fills behind it.
        let (hold, release) = channel::<()>();
        let (started, wait_started) = channel::<()>();
        calls.submit(
            request(1),
            Box::new(move |_| {
                started.send(()).unwrap();
                let _ = release.recv();
            }),
        );
        wait_started.recv_timeout(Duration::from_secs(5)).unwrap();
        calls.submit(request(2), Box::new(|_| {}));
        let (sender, replies) = channel();
        calls.submit(request(3), Box::new(move |reply| sender.send(reply).unwrap()));
        let refused = replies.try_recv().expect("answered on the caller's thread");
        assert_eq!((refused.id, refused.status, refused.reached_slice), (3, 503, false));
        drop(hold);
    }
}
