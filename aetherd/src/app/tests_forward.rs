//! The app port's forwarded calls hold no handler thread while they wait (deferred answers): a port with two
//! handler threads has ten forwarded calls in flight at once, each answered when its outcome comes, and one
//! whose node was unreachable goes back to the pool and is tried on the other node.

use super::tests::{http, json, options, repo};
use super::*;
use container::ContainerConfig;
use invoke::{InvokeReply, InvokeRequest, RouteTarget};
use parking_lot::Mutex;
use std::time::Instant;

const COUNTER: &str = "org.aether.examples:counter:1.0.0";

/// Keeps every forwarded call until the test answers it; never waits on a caller's thread.
#[derive(Default)]
struct Held {
    calls: Mutex<Vec<(String, InvokeRequest, ForwardDone)>>,
}

impl Forward for Held {
    fn forward(&self, _: &str, _: InvokeRequest, _: Duration) -> Result<InvokeReply, ForwardError> {
        Err(ForwardError::Unreachable("the app port waited on its thread".into()))
    }

    fn forward_then(&self, node: &str, request: InvokeRequest, done: ForwardDone) {
        self.calls.lock().push((node.to_owned(), request, done));
    }
}

impl Held {
    /// Waits (up to 5 s) until `n` calls are held, and takes them.
    fn take(&self, n: usize) -> Vec<(String, InvokeRequest, ForwardDone)> {
        let started = Instant::now();
        while self.calls.lock().len() < n {
            assert!(started.elapsed() < Duration::from_secs(5), "{} calls held", self.calls.lock().len());
            std::thread::sleep(Duration::from_millis(2));
        }
        std::mem::take(&mut *self.calls.lock())
    }
}

fn reply(node: &str, request: &InvokeRequest) -> InvokeReply {
    InvokeReply {
        id: request.id,
        status: 200,
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: format!(r#"{{"node":"{node}"}}"#).into_bytes(),
        reached_slice: true,
    }
}

/// Node-1's app port with an empty container and `counter` routed to `nodes`, forwarding through a [`Held`].
fn node_1(nodes: &[&str], options: AppOptions) -> (Arc<Container>, AppServer, Arc<Held>) {
    let container = Arc::new(Container::new(ContainerConfig::new(repo(), "node-1")).unwrap());
    let mut registry = Registry::new();
    let target = RouteTarget { artifact: COUNTER.into(), method: "get".into() };
    registry.put_route("GET", "/counter/{name}", target).unwrap();
    for node in nodes {
        registry.put_endpoint(COUNTER, "get", invoke::Endpoint { node: (*node).into(), instance: 0 }).unwrap();
    }
    let registry = Arc::new(RwLock::new(registry));
    let held = Arc::new(Held::default());
    let listen = "127.0.0.1:0".parse().unwrap();
    let app =
        AppServer::start_cluster(listen, "node-1".into(), container.clone(), registry, held.clone(), options).unwrap();
    (container, app, held)
}

#[test]
fn forwarded_calls_hold_no_handler_thread_and_a_retry_goes_back_to_the_pool() {
    let options = AppOptions { call_deadline: Duration::from_secs(5), ..options() };
    let (container, app, held) = node_1(&["node-2", "node-3"], options);
    let addr = app.addr();
    let clients: Vec<_> = (0..10).map(|_| std::thread::spawn(move || http(addr, "GET", "/counter/c", ""))).collect();

    // Ten calls in flight on two handler threads: none of them waits on a thread.
    let mut calls = held.take(10);
    assert_eq!(app.http.stats().workers_live, 2);
    let (node, request, done) = calls.remove(0);
    done(Err(ForwardError::Unreachable(format!("{node} refused the connection"))));
    let retried = held.take(1);
    let (other, again, done) = retried.into_iter().next().unwrap();
    assert_ne!(other, node, "the retry goes to the other node");
    assert_eq!(again.artifact, request.artifact);
    done(Ok(reply(&other, &again)));
    for (node, request, done) in calls {
        done(Ok(reply(&node, &request)));
    }
    let answers: Vec<(u16, String)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    let from_other =
        answers.iter().filter(|(_, body)| json(body).get("node").and_then(|n| n.as_str()) == Some(&other)).count();
    assert!(from_other >= 1, "the retried call was answered by {other}: {answers:?}");
    let stats = app.http.stats();
    assert_eq!((stats.workers_live, stats.workers_abandoned), (2, 0));
    app.stop();
    container.shutdown();
}

#[test]
fn a_forwarded_call_that_never_gets_its_outcome_is_answered_504_at_the_deadline() {
    let (container, app, held) = node_1(&["node-2"], options());
    let (status, body) = http(app.addr(), "GET", "/counter/c", "");
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("no reply from node-2"), "{body}");
    // The late outcome goes nowhere, and no thread was stuck.
    let (_, request, done) = held.take(1).remove(0);
    done(Ok(reply("node-2", &request)));
    let stats = app.http.stats();
    assert_eq!((stats.workers_live, stats.workers_abandoned), (2, 0));
    app.stop();
    container.shutdown();
}
