//! The node's side of pub-sub that runs off the event loop: the publish path a slice's `ctx.publish` reaches
//! ([`NodePublisher`], installed on the container), the delivery threads ([`DeliveryPool`]) and the requests
//! both send to the loop ([`MessagingRequest`]). The loop's side (the engine's store watches, publishes in
//! flight, delivery decisions, cursor, dead-letter and trim writes) is `node/messaging.rs`; the decisions
//! themselves are `control::messaging`.
//!
//! Invariants: a publish blocks only its caller's thread, for at most its deadline; deliveries run on the
//! pool's threads, never on the loop, and each ends in exactly one `Delivered` request to the loop; the
//! pool's queue is bounded ([`DELIVERY_QUEUE_MAX`]): a delivery it cannot take is reported at once as finding
//! no instance (tried again, no attempt counted).

mod api;
pub mod config;
pub mod view;

pub use api::{publish_as_api, replay_dead_letter, topics_request};

use crate::app::{Call, Dispatcher};
use crate::node::Command;
use container::publish::{Publish, PublishError};
use control::messaging::{Outcome, Subscriber};
use net::NetHandle;
use parking_lot::Mutex;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use config::MessagingConfig;

/// Deliveries queued for the pool at most; more are reported back as finding no instance.
pub const DELIVERY_QUEUE_MAX: usize = 4096;

/// A publish for the loop: `publisher` is `node/artifact` or `api`.
pub struct PublishRequest {
    pub publisher: String,
    pub topic: String,
    pub payload: Vec<u8>,
    /// Only this subscription gets it (a dead letter's replay).
    pub target: Option<Subscriber>,
    pub reply: mpsc::Sender<Result<String, PublishError>>,
}

/// What the messaging side asks of the loop.
pub enum MessagingRequest {
    Publish(PublishRequest),
    /// A delivery ended.
    Delivered {
        token: u64,
        outcome: Outcome,
    },
    /// The topics as this node sees them (`GET /api/topics`).
    Topics(mpsc::Sender<Vec<mgmt::TopicView>>),
}

/// Sends `request` to the loop; false when it is not running.
fn send(handle: Option<&NetHandle<Command>>, request: MessagingRequest) -> bool {
    handle.is_some_and(|h| h.command(Command::Messaging(request)).is_ok())
}

/// Publishes through the loop and waits up to `deadline` for the message to be applied.
pub fn publish(
    handle: Option<&NetHandle<Command>>,
    publisher: String,
    topic: &str,
    payload: &[u8],
    target: Option<Subscriber>,
    deadline: Duration,
) -> Result<String, PublishError> {
    let (tx, rx) = mpsc::channel();
    let request = PublishRequest { publisher, topic: topic.to_owned(), payload: payload.to_vec(), target, reply: tx };
    if !send(handle, MessagingRequest::Publish(request)) {
        return Err(PublishError {
            status: 503,
            detail: "the node is starting or stopping; nothing was stored".into(),
        });
    }
    match rx.recv_timeout(deadline) {
        Ok(answer) => answer,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            Err(PublishError { status: 504, detail: "not applied in time; the message may still be stored".into() })
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(PublishError { status: 504, detail: "the node dropped the publish; it may still be stored".into() })
        }
    }
}

/// `ctx.publish` of the slices on this node.
pub struct NodePublisher {
    pub node: String,
    pub handle: Arc<OnceLock<NetHandle<Command>>>,
}

impl Publish for NodePublisher {
    fn publish(&self, artifact: &str, topic: &str, message: &[u8], deadline: Duration) -> Result<String, PublishError> {
        publish(self.handle.get(), format!("{}/{artifact}", self.node), topic, message, None, deadline)
    }
}

/// One delivery for a pool thread: call `method` of `artifact` on `node` with `request` by `deadline`.
pub struct Job {
    pub token: u64,
    pub node: String,
    pub artifact: String,
    pub method: String,
    pub request: Vec<u8>,
    pub deadline: Instant,
}

/// The threads that run deliveries. The dispatcher is set once the app port is up; until then every
/// delivery finds no instance. One thread is kept; a delivery queued while none is idle starts another, up to
/// the configured number, and those above one end after [`DELIVERY_IDLE`] without a delivery.
pub struct DeliveryPool {
    queue: Mutex<Option<mpsc::SyncSender<Job>>>,
    pub dispatcher: Arc<OnceLock<Arc<Dispatcher>>>,
    workers: Arc<Workers>,
}

/// What a new delivery thread runs with, and the pool's thread counts.
struct Workers {
    rx: Mutex<mpsc::Receiver<Job>>,
    handle: Arc<OnceLock<NetHandle<Command>>>,
    dispatcher: Arc<OnceLock<Arc<Dispatcher>>>,
    max: usize,
    /// (threads alive, threads waiting for a delivery)
    counts: Mutex<(usize, usize)>,
    next: std::sync::atomic::AtomicUsize,
}

/// How long a delivery thread above the first waits for a delivery before it ends.
const DELIVERY_IDLE: Duration = Duration::from_secs(30);

impl Workers {
    /// Starts a delivery thread for a place already counted (given back when it cannot start).
    fn spawn(self: &Arc<Workers>) -> Result<(), String> {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let workers = Arc::clone(self);
        let spawned = std::thread::Builder::new().name(format!("delivery-{n}")).spawn(move || workers.serve());
        spawned.map(drop).map_err(|e| {
            self.counts.lock().0 -= 1;
            format!("cannot start a delivery thread: {e}")
        })
    }

    fn serve(&self) {
        loop {
            self.counts.lock().1 += 1;
            let job = self.rx.lock().recv_timeout(DELIVERY_IDLE);
            let mut counts = self.counts.lock();
            counts.1 -= 1;
            let job = match job {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) if counts.0 > 1 => {
                    counts.0 -= 1;
                    return;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => continue,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    counts.0 -= 1;
                    return;
                }
            };
            drop(counts);
            let outcome = run(self.dispatcher.get(), &job);
            let _ = send(self.handle.get(), MessagingRequest::Delivered { token: job.token, outcome });
        }
    }
}

impl DeliveryPool {
    /// Starts the pool of at most `threads` delivery threads (one at once) reporting to the loop behind `handle`.
    pub fn start(threads: usize, handle: Arc<OnceLock<NetHandle<Command>>>) -> Result<Arc<DeliveryPool>, String> {
        let (tx, rx) = mpsc::sync_channel::<Job>(DELIVERY_QUEUE_MAX);
        let dispatcher: Arc<OnceLock<Arc<Dispatcher>>> = Arc::default();
        let workers = Arc::new(Workers {
            rx: Mutex::new(rx),
            handle,
            dispatcher: Arc::clone(&dispatcher),
            max: threads.max(1),
            counts: Mutex::new((1, 0)),
            next: std::sync::atomic::AtomicUsize::new(0),
        });
        workers.spawn()?;
        Ok(Arc::new(DeliveryPool { queue: Mutex::new(Some(tx)), dispatcher, workers }))
    }

    /// Queues `job`; `Err` gives it back when the queue is full or the pool stopped. Starts a thread when
    /// none waits for a delivery and fewer than the most run.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        {
            let queue = self.queue.lock();
            let Some(tx) = queue.as_ref() else { return Err(job) };
            tx.try_send(job).map_err(|e| match e {
                mpsc::TrySendError::Full(job) | mpsc::TrySendError::Disconnected(job) => job,
            })?;
        }
        let grow = {
            let mut counts = self.workers.counts.lock();
            let grow = counts.1 == 0 && counts.0 < self.workers.max;
            counts.0 += usize::from(grow);
            grow
        };
        if grow {
            if let Err(e) = self.workers.spawn() {
                log::warn!("{e}");
            }
        }
        Ok(())
    }
}

/// Runs one delivery: a 2xx acknowledges; no instance (or one that refused it as overloaded) counts no
/// attempt; anything else is a failure.
fn run(dispatcher: Option<&Arc<Dispatcher>>, job: &Job) -> Outcome {
    let Some(dispatcher) = dispatcher else { return Outcome::NoInstance };
    let call = Call {
        artifact: &job.artifact,
        method: &job.method,
        request: job.request.as_slice().into(),
        idempotent: false,
        hops: 0,
        deadline: job.deadline,
        request_id: None,
        caller: None,
        depth: 0,
        pins: dispatcher.entry_pins(),
    };
    let reply = dispatcher.call_on(&job.node, &call);
    match reply.status {
        200..=299 => Outcome::Acked,
        503 if !reply.reached_slice => Outcome::NoInstance,
        status => {
            let body = String::from_utf8_lossy(&reply.body[..reply.body.len().min(200)]).into_owned();
            Outcome::Failed(format!("{status} from {}: {body}", job.node))
        }
    }
}
