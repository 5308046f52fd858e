//! Nested calls from threads a slice starts inside a call: with the SDK's `spawn_in_call` they keep
//! the call's deadline and hop count, as seen by the node's hook for calls that leave the node.
//!
//! The `faulty` slice's `spawned-call` method calls another slice from a thread it starts; the
//! callee lives in a second container reached through a recording [`RemoteCall`] hook that, like a
//! node's dispatcher, refuses a call whose deadline has passed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aether_sdk::{RequestBuilder, Status};
use container::{Artifact, CallContext, CallError, Container, ContainerConfig, RemoteCall};
use parking_lot::Mutex;

const ECHO: &str = "org.aether.examples:echo:1.0.0";
const FAULTY: &str = "org.aether.examples:faulty:1.0.0";

fn container(node_id: &str) -> Container {
    let repo = devcluster::example_slices_repo().expect("the example slices build");
    Container::new(ContainerConfig::new(repo, node_id)).unwrap()
}

/// The other node: keeps the contexts calls arrive with, refuses those past their deadline.
struct OtherNode {
    container: Container,
    seen: Mutex<Vec<(String, CallContext)>>,
}

impl RemoteCall for OtherNode {
    fn call(
        &self,
        artifact: &str,
        method: &str,
        request: &[u8],
        context: CallContext,
    ) -> Result<aether_sdk::Response, CallError> {
        self.seen.lock().push((artifact.to_owned(), context.clone()));
        let now = Instant::now();
        let left = context.deadline.map(|deadline| deadline.saturating_duration_since(now));
        if left == Some(Duration::ZERO) {
            return Err(CallError::DeadlineExceeded {
                artifact: artifact.to_owned(),
                method: method.to_owned(),
                deadline: Duration::ZERO,
            });
        }
        let target = self.container.find_active(artifact).ok_or(CallError::NoInstance { artifact: artifact.into() })?;
        let deadline = left.unwrap_or(Duration::from_secs(10));
        self.container.call_with_context(&target, method, request.to_vec(), deadline, context.hops + 1)
    }
}

/// `faulty` here, `echo` on the other node behind the hook.
fn two_nodes() -> (Container, Arc<OtherNode>, Arc<dyn RemoteCall>) {
    let here = container("node-1");
    here.deploy(&Artifact::parse(FAULTY).unwrap(), vec![]).unwrap();
    let there = container("node-2");
    there.deploy(&Artifact::parse(ECHO).unwrap(), vec![]).unwrap();
    let other = Arc::new(OtherNode { container: there, seen: Mutex::new(Vec::new()) });
    let hook: Arc<dyn RemoteCall> = other.clone();
    here.set_remote(Some(&hook));
    (here, other, hook)
}

fn spawned_call() -> Vec<u8> {
    RequestBuilder::new().param("artifact", ECHO).param("method", "echo_body").encode().unwrap()
}

#[test]
fn a_call_from_a_thread_started_inside_a_call_keeps_its_deadline_and_hops() {
    let (here, other, _hook) = two_nodes();
    let faulty = here.find_active(FAULTY).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    let answer = here.call_inline(&faulty, "spawned-call", &spawned_call(), deadline, 2).unwrap();
    assert_eq!(answer.status, Status::Ok, "{}", answer.body_text());

    let seen = other.seen.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let (artifact, context) = &seen[0];
    assert_eq!((artifact.as_str(), context.hops), (ECHO, 2), "the spawned thread's call keeps the hops");
    // The deadline crosses the thread as milliseconds left, rounded up and measured again when the thread
    // enters the scope: it moves later by at most the time the thread took to start (milliseconds on a
    // loaded machine), never earlier.
    let carried = context.deadline.expect("the spawned thread's call has the outer deadline");
    assert!(carried >= deadline && carried <= deadline + Duration::from_millis(250), "{carried:?} vs {deadline:?}");
}

#[test]
fn a_call_from_a_thread_started_inside_a_call_past_its_deadline_is_refused() {
    let (here, other, _hook) = two_nodes();
    let faulty = here.find_active(FAULTY).unwrap();
    let deadline = Instant::now();
    std::thread::sleep(Duration::from_millis(5));
    let answer = here.call_inline(&faulty, "spawned-call", &spawned_call(), deadline, 1).unwrap();
    assert_eq!(answer.status, Status::GATEWAY_TIMEOUT, "{}", answer.body_text());
    assert!(answer.body_text().contains("deadline exceeded"), "{}", answer.body_text());

    let seen = other.seen.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].1.hops, 1);
    assert!(seen[0].1.deadline.is_some_and(|carried| carried <= Instant::now()), "{seen:?}");
}

#[test]
fn a_call_from_a_thread_started_outside_any_call_has_no_deadline_and_no_hops() {
    // `Container::call` runs the slice on this thread with no call context, as a thread the slice
    // starts from `start` does: the spawned thread's call carries no deadline and no hops, only its
    // caller and depth.
    let (here, other, _hook) = two_nodes();
    let answer = here.call(FAULTY, "spawned-call", &spawned_call()).unwrap();
    assert_eq!(answer.status, Status::Ok, "{}", answer.body_text());
    let expected = CallContext { depth: 1, caller: Some(FAULTY.into()), ..CallContext::default() };
    assert_eq!(other.seen.lock().clone(), [(ECHO.to_owned(), expected)]);
}
