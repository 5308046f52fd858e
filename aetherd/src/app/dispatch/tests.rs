use super::super::answers::is_overloaded;
use super::*;
use std::collections::HashMap;
use std::sync::Weak;

use container::{Artifact, ContainerConfig, RemoteCall};
use invoke::Endpoint;
use parking_lot::Mutex;

const ECHO: &str = "org.aether.examples:echo:1.0.0";
const ORDERS: &str = "org.aether.examples:orders:1.0.0";
const INVENTORY: &str = "org.aether.examples:inventory:1.0.0";
const PRICING: &str = "org.aether.examples:pricing:1.0.0";

/// Answers from a script per node; records what it was asked to send.
#[derive(Default)]
struct FakeForward {
    script: Mutex<HashMap<String, Vec<Result<InvokeReply, ForwardError>>>>,
    sent: Mutex<Vec<(String, InvokeRequest)>>,
    down: Vec<String>,
}

impl FakeForward {
    fn with(script: &[(&str, Result<InvokeReply, ForwardError>)]) -> Arc<FakeForward> {
        let forward = FakeForward::default();
        for (node, answer) in script {
            forward.script.lock().entry(node.to_string()).or_default().push(answer.clone());
        }
        Arc::new(forward)
    }

    fn sent_to(&self) -> Vec<String> {
        self.sent.lock().iter().map(|(node, _)| node.clone()).collect()
    }
}

impl Forward for FakeForward {
    fn forward(&self, node: &str, request: InvokeRequest, _: Duration) -> Result<InvokeReply, ForwardError> {
        self.sent.lock().push((node.to_owned(), request));
        let mut script = self.script.lock();
        let next = script.get_mut(node).filter(|answers| !answers.is_empty()).map(|answers| answers.remove(0));
        next.unwrap_or_else(|| Err(ForwardError::Unreachable("not scripted".into())))
    }

    fn is_alive(&self, node: &str) -> bool {
        !self.down.iter().any(|d| d == node)
    }
}

fn ok_reply(body: &str) -> InvokeReply {
    InvokeReply {
        id: 77,
        status: 200,
        content_type: "application/json".into(),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
        reached_slice: true,
    }
}

fn container(node: &str, slices: &[&str]) -> Arc<Container> {
    let mut config = ContainerConfig::new(crate::app::tests::repo(), node);
    config.pool.workers = 1;
    let container = Container::new(config).unwrap();
    for slice in slices {
        container.deploy(&Artifact::parse(slice).unwrap(), vec![]).unwrap();
    }
    Arc::new(container)
}

fn empty_container(node: &str) -> Arc<Container> {
    let mut config = ContainerConfig::new("/nonexistent-repo", node);
    config.pool.workers = 1;
    Arc::new(Container::new(config).unwrap())
}

fn target(artifact: &str, method: &str) -> RouteTarget {
    RouteTarget { artifact: artifact.into(), method: method.into() }
}

/// Echo routes, with endpoints of both echo methods on `nodes`.
fn echo_registry(nodes: &[&str]) -> Arc<RwLock<Registry>> {
    let mut registry = Registry::new();
    registry.put_route("GET", "/echo/{msg}", target(ECHO, "echo")).unwrap();
    registry.put_route("POST", "/echo", target(ECHO, "echo_body")).unwrap();
    registry.put_route("POST", "/orders", target(ORDERS, "create")).unwrap();
    for (instance, node) in nodes.iter().enumerate() {
        for method in ["echo", "echo_body"] {
            let endpoint = Endpoint { node: node.to_string(), instance: instance as u32 };
            registry.put_endpoint(ECHO, method, endpoint).unwrap();
        }
    }
    Arc::new(RwLock::new(registry))
}

fn dispatcher(container: Arc<Container>, nodes: &[&str], forward: &Arc<FakeForward>) -> Dispatcher {
    let forward: Arc<dyn Forward> = forward.clone();
    let deadline = Duration::from_millis(500);
    Dispatcher::new("node-1".into(), container, echo_registry(nodes), Some(forward), deadline)
}

fn http(dispatcher: &Dispatcher, method: &str, url: &str, body: &str) -> InvokeReply {
    dispatcher.http_call(method, url, || Ok(body.as_bytes().to_vec())).reply
}

/// `(status, error, detail)` of a JSON error reply.
fn error_of(reply: &InvokeReply) -> (u16, String, String) {
    let value = aether_sdk::json::parse(&reply.body).unwrap();
    let text = |key| value.get(key).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    (reply.status, text("error"), text("detail"))
}

#[test]
fn a_local_instance_answers_without_forwarding() {
    let forward = FakeForward::with(&[]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &["node-2"], &forward);
    let reply = http(&dispatcher, "GET", "/echo/hi", "");
    assert_eq!(reply.status, 200, "{reply:?}");
    assert!(String::from_utf8_lossy(&reply.body).contains(r#""echo":"hi""#));
    assert!(forward.sent_to().is_empty());
}

#[test]
fn a_remote_endpoint_is_reached_through_forward() {
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply(r#"{"from":"node-2"}"#)))]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2"], &forward);
    let reply = http(&dispatcher, "GET", "/echo/hi%20there?x=1", "");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &br#"{"from":"node-2"}"#[..]));
    let (node, sent) = forward.sent.lock().remove(0);
    assert_eq!((node.as_str(), sent.origin.as_str(), sent.artifact.as_str()), ("node-2", "node-1", ECHO));
    assert_eq!((sent.method.as_str(), sent.hops), ("echo", 1));
    assert!(sent.deadline_ms_left > 0 && sent.deadline_ms_left <= 500, "{}", sent.deadline_ms_left);
    let request = aether_sdk::codec::Request::parse(&sent.request).unwrap();
    assert_eq!((request.param("msg"), request.query("x")), (Some("hi there"), Some("1")));
}

#[test]
fn a_get_lost_with_its_node_is_retried_on_another() {
    let lost = Err(ForwardError::Lost("connection closed".into()));
    let forward = FakeForward::with(&[("node-2", lost), ("node-3", Ok(ok_reply("{}")))]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
    assert_eq!(http(&dispatcher, "GET", "/echo/x", "").status, 200);
    assert_eq!(forward.sent_to(), ["node-2", "node-3"]);
}

#[test]
fn a_get_is_never_retried_after_a_second_node_died_under_it() {
    let lost = || Err(ForwardError::Lost("connection closed".into()));
    let forward = FakeForward::with(&[("node-2", lost()), ("node-3", lost()), ("node-4", lost())]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3", "node-4"], &forward);
    let (status, error, detail) = error_of(&http(&dispatcher, "GET", "/echo/x", ""));
    assert_eq!((status, error.as_str()), (503, "unavailable"), "{detail}");
    assert!(detail.contains("second node"), "{detail}");
    let tried = forward.sent_to();
    assert_eq!(tried.len(), 2, "a request that kills its server walks no further: {tried:?}");
    assert!(tried.iter().all(|node| detail.contains(node.as_str())), "{detail}");
}

#[test]
fn a_node_that_refuses_as_overloaded_is_skipped_and_the_answer_says_when_to_retry() {
    let busy = || Ok(super::super::answers::overloaded("all 16 calls in flight are stuck"));
    let forward = FakeForward::with(&[("node-2", busy()), ("node-3", busy())]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
    let reply = http(&dispatcher, "POST", "/echo", "body");
    assert!(is_overloaded(&reply), "{reply:?}");
    assert_eq!(forward.sent_to(), ["node-2", "node-3"], "refused: never reached, so tried elsewhere");
    // Both nodes refused lately: the next call is answered at once, without a frame.
    let reply = http(&dispatcher, "GET", "/echo/x", "");
    assert!(is_overloaded(&reply), "{reply:?}");
    assert_eq!(forward.sent_to().len(), 2, "refusing nodes are skipped for a while");
}

#[test]
fn a_full_local_bulkhead_sends_the_call_to_another_node() {
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply(r#"{"from":"node-2"}"#)))]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &["node-1", "node-2"], &forward);
    let handle = dispatcher.container.find_active(ECHO).unwrap();
    let bulkhead = dispatcher.bulkheads.of(&handle);
    // Every permit held by a call past its deadline: the instance is saturated and refuses at once.
    let soon = Instant::now() + Duration::from_millis(20);
    let held: Vec<_> = (0..super::super::bulkhead::PERMITS_DEFAULT).map(|_| bulkhead.enter(soon).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(30));
    let reply = http(&dispatcher, "GET", "/echo/x", "");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &br#"{"from":"node-2"}"#[..]));
    assert_eq!(forward.sent_to(), ["node-2"]);
    drop(held);
    let reply = http(&dispatcher, "GET", "/echo/local", "");
    assert!(String::from_utf8_lossy(&reply.body).contains(r#""echo":"local""#), "served here again");
}

#[test]
fn a_forwarded_call_whose_deadline_passed_on_the_way_never_starts() {
    let forward = FakeForward::with(&[]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &[], &forward);
    let request = InvokeRequest {
        id: 9,
        origin: "node-2".into(),
        artifact: ECHO.into(),
        method: "echo".into(),
        request: aether_sdk::encode_request(&[("msg", "late")], &[], b"").unwrap(),
        deadline_ms_left: 50,
        hops: 1,
        request_id: String::new(),
        caller: String::new(),
        depth: 0,
        pins: Vec::new(),
    };
    let arrived = Instant::now() - Duration::from_millis(100);
    let reply = dispatcher.serve_forwarded_at(request, arrived);
    assert_eq!((reply.id, reply.status, reply.reached_slice), (9, 504, false), "{reply:?}");
}

#[test]
fn a_post_that_may_have_reached_a_slice_is_not_retried() {
    let lost = Err(ForwardError::Lost("connection closed".into()));
    let forward = FakeForward::with(&[("node-2", lost), ("node-3", Ok(ok_reply("{}")))]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
    let (status, error, detail) = error_of(&http(&dispatcher, "POST", "/echo", "body"));
    assert_eq!((status, error.as_str()), (503, "unavailable"));
    assert!(detail.contains("not retried"), "{detail}");
    assert_eq!(forward.sent_to(), ["node-2"]);
}

#[test]
fn a_post_that_never_reached_a_slice_is_retried() {
    let unreachable = Err(ForwardError::Unreachable("not connected".into()));
    let forward = FakeForward::with(&[("node-2", unreachable), ("node-3", Ok(ok_reply("{}")))]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
    assert_eq!(http(&dispatcher, "POST", "/echo", "body").status, 200);
    assert_eq!(forward.sent_to(), ["node-2", "node-3"]);
}

#[test]
fn retries_stop_at_the_attempt_limit() {
    let unreachable = || Err(ForwardError::Unreachable("not connected".into()));
    let none_here = Ok(InvokeReply::no_instance(5, "node-3", ECHO));
    let script =
        [("node-2", unreachable()), ("node-3", none_here), ("node-4", unreachable()), ("node-5", unreachable())];
    let forward = FakeForward::with(&script);
    let nodes = ["node-2", "node-3", "node-4", "node-5"];
    let dispatcher = dispatcher(empty_container("node-1"), &nodes, &forward);
    let (status, error, detail) = error_of(&http(&dispatcher, "POST", "/echo", "body"));
    assert_eq!((status, error.as_str()), (503, "no instance"));
    let mut tried = forward.sent_to();
    assert_eq!(tried.len(), ATTEMPTS_MAX, "{tried:?}");
    assert!(tried.iter().all(|node| detail.contains(node.as_str())), "{detail}");
    tried.dedup();
    assert_eq!(tried.len(), ATTEMPTS_MAX, "each attempt goes to another node");
}

#[test]
fn misses_answer_json_errors() {
    let forward = Arc::new(FakeForward { down: vec!["node-3".into()], ..FakeForward::default() });
    forward.script.lock().insert("node-2".into(), vec![Err(ForwardError::Timeout)]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2", "node-3"], &forward);
    let (status, error, detail) = error_of(&http(&dispatcher, "GET", "/nope", ""));
    assert_eq!((status, error.as_str(), detail.as_str()), (404, "not found", "no route for GET /nope"));
    let answer = dispatcher.http_call("DELETE", "/echo", || Ok(Vec::new()));
    assert_eq!((answer.reply.status, answer.allow.as_deref()), (405, Some("POST")));
    let (status, error, detail) = error_of(&http(&dispatcher, "POST", "/orders", "{}"));
    assert_eq!((status, error.as_str()), (503, "no instance"));
    assert!(detail.contains(ORDERS), "{detail}");
    let (status, error, _) = error_of(&http(&dispatcher, "GET", "/echo/x", ""));
    assert_eq!((status, error.as_str()), (504, "deadline exceeded"));
    assert_eq!(forward.sent_to(), ["node-2"], "node-3 is down and never tried");
    let (status, error, detail) = error_of(&http(&dispatcher, "GET", "/echo/x", ""));
    assert_eq!((status, error.as_str()), (503, "no instance"));
    assert!(detail.contains("node-2: unreachable"), "{detail}");
    let refused = dispatcher.http_call("POST", "/echo", || Err(super::error(413, "payload too large", "big", false)));
    assert_eq!(refused.reply.status, 413);
}

#[test]
fn forwarded_calls_are_served_locally_or_refused_as_never_reached() {
    let forward = FakeForward::with(&[]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &[], &forward);
    let request = InvokeRequest {
        id: 31,
        origin: "node-2".into(),
        artifact: ECHO.into(),
        method: "echo".into(),
        request: aether_sdk::encode_request(&[("msg", "far")], &[], b"").unwrap(),
        deadline_ms_left: 1000,
        hops: 1,
        request_id: String::new(),
        caller: String::new(),
        depth: 0,
        pins: Vec::new(),
    };
    let reply = dispatcher.serve_forwarded(request.clone());
    assert_eq!((reply.id, reply.status, reply.reached_slice), (31, 200, true));
    assert!(String::from_utf8_lossy(&reply.body).contains(r#""echo":"far""#));
    let elsewhere = InvokeRequest { artifact: ORDERS.into(), ..request.clone() };
    let reply = dispatcher.serve_forwarded(elsewhere);
    assert!(reply.is_no_instance() && reply.id == 31, "{reply:?}");
    let malformed = dispatcher.serve_forwarded(InvokeRequest { hops: 0, ..request });
    assert_eq!((malformed.status, malformed.reached_slice), (400, false));
    assert!(forward.sent_to().is_empty(), "a forwarded call is never forwarded again");
}

/// Nodes in one process: forwarding calls the other dispatcher directly.
#[derive(Default)]
struct Loopback {
    nodes: Mutex<HashMap<String, Weak<Dispatcher>>>,
    hops: Mutex<Vec<(String, u8)>>,
    request_ids: Mutex<Vec<String>>,
}

impl Forward for Loopback {
    fn forward(&self, node: &str, request: InvokeRequest, _: Duration) -> Result<InvokeReply, ForwardError> {
        self.hops.lock().push((node.to_owned(), request.hops));
        self.request_ids.lock().push(request.request_id.clone());
        let target = self.nodes.lock().get(node).and_then(Weak::upgrade);
        let target = target.ok_or_else(|| ForwardError::Unreachable(format!("no node {node}")))?;
        Ok(target.serve_forwarded(request))
    }
}

#[test]
fn an_order_entering_a_third_node_flows_across_two_others_with_its_request_id() {
    let mut registry = Registry::new();
    registry.put_route("POST", "/orders", target(ORDERS, "create")).unwrap();
    for (artifact, method, node) in [(ORDERS, "create", "node-a"), (PRICING, "price", "node-a")] {
        registry.put_endpoint(artifact, method, Endpoint { node: node.into(), instance: 0 }).unwrap();
    }
    registry.put_endpoint(INVENTORY, "reserve", Endpoint { node: "node-b".into(), instance: 0 }).unwrap();
    let registry = Arc::new(RwLock::new(registry));
    let loopback = Arc::new(Loopback::default());
    let forward: Arc<dyn Forward> = loopback.clone();
    let nodes = [("node-a", vec![ORDERS, PRICING]), ("node-b", vec![INVENTORY]), ("node-c", vec![])];
    let mut dispatchers = Vec::new();
    for (node, slices) in nodes {
        let container = if slices.is_empty() { empty_container(node) } else { container(node, &slices) };
        let deadline = Duration::from_secs(5);
        let dispatcher = Arc::new(Dispatcher::new(
            node.into(),
            container.clone(),
            registry.clone(),
            Some(forward.clone()),
            deadline,
        ));
        let hook: Arc<dyn RemoteCall> = dispatcher.clone();
        container.set_remote(Some(&hook));
        loopback.nodes.lock().insert(node.into(), Arc::downgrade(&dispatcher));
        dispatchers.push(dispatcher);
    }
    let scope = crate::metrics::request_id::Scope::enter("order-42");
    let reply = http(&dispatchers[2], "POST", "/orders", r#"{"item": "book", "qty": 2}"#);
    drop(scope);
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let ids = loopback.request_ids.lock().clone();
    assert_eq!(ids, ["order-42", "order-42"], "the forwarded call and the slice-to-slice call carry the id");
    let order = aether_sdk::json::parse(&reply.body).unwrap();
    assert_eq!(order.get("total").and_then(|v| v.as_f64()), Some(25.0));
    assert!(order.get("order_id").and_then(|v| v.as_str()).unwrap().starts_with("node-a-"));
    let hops = loopback.hops.lock().clone();
    assert_eq!(hops, [("node-a".to_owned(), 1), ("node-b".to_owned(), 2)]);
}

#[test]
fn forwarded_calls_of_one_artifact_hold_at_most_their_share_of_the_threads() {
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply("{}")))]);
    let dispatcher = dispatcher(empty_container("node-1"), &["node-2"], &forward).with_call_threads(8);
    let max = dispatcher.bulkheads.outbound_max(ECHO);
    assert_eq!(max, 4, "without a local instance, one instance's share of 8 threads");
    let held: Vec<_> = (0..max).map(|_| dispatcher.outbound(ECHO).expect("a place")).collect();
    assert!(dispatcher.outbound(ECHO).is_none(), "the share is taken");
    let (status, error, _) = error_of(&http(&dispatcher, "GET", "/echo/x", ""));
    assert_eq!((status, error.as_str()), (503, "overloaded"));
    assert!(dispatcher.outbound("org.aether.examples:other:1.0.0").is_some(), "other artifacts are not held");
    drop(held);
    assert_eq!(http(&dispatcher, "GET", "/echo/x", "").status, 200, "places are given back");
}

#[test]
fn calls_that_ran_here_are_counted_and_calls_sent_elsewhere_are_not() {
    let summary = |metrics: &crate::metrics::Telemetry| {
        metrics.summarise(crate::metrics::LoopFigures {
            time_ms: crate::managers::wall_ms(),
            loop_lag: telemetry::Histogram::new(),
            peers: Vec::new(),
            cluster_connections: 0,
            applied_slot: None,
            consensus: None,
        })
    };
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply("{}")))]);
    let metrics = crate::metrics::Telemetry::new("node-1", &["node-1".into()]);
    let local = dispatcher(container("node-1", &[ECHO]), &["node-2"], &forward).with_metrics(metrics.clone());
    assert_eq!(http(&local, "GET", "/echo/a", "").status, 200);
    assert_eq!(http(&local, "GET", "/echo/b", "").status, 200);
    let s = summary(&metrics);
    assert_eq!(s.methods.len(), 1);
    assert_eq!((s.methods[0].artifact.as_str(), s.methods[0].method.as_str(), s.methods[0].calls), (ECHO, "echo", 2));
    let elsewhere = crate::metrics::Telemetry::new("node-1", &["node-1".into()]);
    let remote = dispatcher(empty_container("node-1"), &["node-2"], &forward).with_metrics(elsewhere.clone());
    assert_eq!(http(&remote, "GET", "/echo/c", "").status, 200);
    assert_eq!(summary(&elsewhere).invocations.calls, 0, "the node that ran it counts it");
}

fn set_lease(dispatcher: &Dispatcher, holder: Option<&str>, serving_for: Option<Duration>) {
    let view = invoke::LeaseView {
        holder: holder.map(str::to_owned),
        epoch: 7,
        artifact: None,
        serving_until: serving_for.map(|d| Instant::now() + d),
    };
    dispatcher.registry().write().set_leases([(invoke::artifact_base(ECHO).to_owned(), view)]);
}

#[test]
fn a_single_active_slice_is_served_by_the_holder_only_and_a_standby_refuses() {
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply(r#"{"from":"node-2"}"#)))]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &["node-1", "node-2"], &forward);
    set_lease(&dispatcher, Some("node-2"), None);
    let reply = http(&dispatcher, "GET", "/echo/hi", "");
    assert_eq!((reply.status, reply.body.as_slice()), (200, &br#"{"from":"node-2"}"#[..]));
    assert_eq!(forward.sent_to(), vec!["node-2".to_owned()], "the local standby is not called");
    let forwarded = InvokeRequest {
        id: 1,
        origin: "node-3".into(),
        artifact: ECHO.into(),
        method: "echo".into(),
        request: aether_sdk::RequestBuilder::new().param("msg", "x").encode().unwrap(),
        deadline_ms_left: 500,
        hops: 1,
        request_id: "r".into(),
        caller: String::new(),
        depth: 0,
        pins: Vec::new(),
    };
    let refused = dispatcher.serve_forwarded(forwarded.clone());
    assert!(refused.is_no_instance(), "{refused:?}");
    set_lease(&dispatcher, Some("node-1"), Some(Duration::from_secs(5)));
    assert_eq!(dispatcher.serve_forwarded(forwarded).status, 200);
}

#[test]
fn a_call_waits_for_a_holder_until_its_deadline() {
    let forward = FakeForward::with(&[]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &["node-1"], &forward);
    set_lease(&dispatcher, None, None);
    let started = Instant::now();
    let reply = http(&dispatcher, "GET", "/echo/hi", "");
    assert_eq!(reply.status, 504, "{reply:?}");
    assert!(started.elapsed() >= Duration::from_millis(450), "it waited: {:?}", started.elapsed());
    // A holder appearing while the call waits serves it.
    let dispatcher = Arc::new(dispatcher);
    let later = Arc::clone(&dispatcher);
    let setter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        set_lease(&later, Some("node-1"), Some(Duration::from_secs(5)));
    });
    let reply = http(&dispatcher, "GET", "/echo/hi", "");
    setter.join().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
}

#[test]
fn round_robin_places_app_port_calls_on_every_instance_the_local_one_included() {
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply("{}"))), ("node-2", Ok(ok_reply("{}")))]);
    let dispatcher = dispatcher(container("node-1", &[ECHO]), &["node-1", "node-2"], &forward);
    dispatcher.registry().write().set_selections([(ECHO.to_owned(), vocab::Selection::RoundRobin)]);
    for _ in 0..4 {
        assert_eq!(http(&dispatcher, "GET", "/echo/hi", "").status, 200);
    }
    assert_eq!(forward.sent_to().len(), 2, "half the calls go to node-2: {:?}", forward.sent_to());
}

const ECHO_V2: &str = "org.aether.examples:echo:2.0.0";

/// A dispatcher on an empty node-1 whose registry routes echo by name to 1.0.0, with 1.0.0 endpoints on
/// `v1_nodes` and 2.0.0 endpoints on `v2_nodes`, and `versions` as the version table.
fn versioned(
    forward: &Arc<FakeForward>,
    v1_nodes: &[&str],
    v2_nodes: &[&str],
    versions: invoke::VersionTable,
) -> Dispatcher {
    let registry = echo_registry(v1_nodes);
    {
        let mut registry = registry.write();
        for (instance, node) in v2_nodes.iter().enumerate() {
            let endpoint = Endpoint { node: node.to_string(), instance: instance as u32 };
            registry.put_endpoint(ECHO_V2, "echo", endpoint).unwrap();
        }
        registry.set_versions(versions);
    }
    let forward: Arc<dyn Forward> = forward.clone();
    Dispatcher::new("node-1".into(), empty_container("node-1"), registry, Some(forward), Duration::from_millis(500))
}

fn sent_artifacts(forward: &FakeForward) -> Vec<String> {
    forward.sent.lock().iter().map(|(_, request)| request.artifact.clone()).collect()
}

#[test]
fn a_route_naming_a_gone_version_reaches_the_wanted_one() {
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply("{}"))), ("node-3", Ok(ok_reply("{}")))]);
    let table = invoke::VersionTable::new([ECHO_V2.to_owned()], Vec::new());
    // Both serve: the wanted 2.0.0 takes the call that names 1.0.0.
    let both = versioned(&forward, &["node-2"], &["node-3"], table.clone());
    assert!(both.places(ECHO), "calls to a name with another wanted version go through the dispatcher");
    assert_eq!(http(&both, "GET", "/echo/hi", "").status, 200);
    assert_eq!(sent_artifacts(&forward), [ECHO_V2]);
    // 2.0.0's node stops answering: the retry looks again and reaches the old version, which still serves.
    let forward = FakeForward::with(&[("node-2", Ok(ok_reply("{}")))]);
    let both = versioned(&forward, &["node-2"], &["node-3"], table.clone());
    assert_eq!(http(&both, "GET", "/echo/hi", "").status, 200);
    assert_eq!(sent_artifacts(&forward), [ECHO_V2, ECHO]);
    // 1.0.0 is gone: the wanted 2.0.0 answers, with no failed attempt first.
    let forward = FakeForward::with(&[("node-3", Ok(ok_reply("{}")))]);
    let only_new = versioned(&forward, &[], &["node-3"], table);
    assert_eq!(http(&only_new, "GET", "/echo/hi", "").status, 200);
    assert_eq!(sent_artifacts(&forward), [ECHO_V2]);
}

#[test]
fn a_rollout_splits_requests_and_pins_travel_with_the_call() {
    let moves = vec![("org.aether.examples:echo".to_owned(), ECHO.to_owned(), ECHO_V2.to_owned())];
    let table = |share| {
        invoke::VersionTable::new(
            [ECHO.to_owned(), ECHO_V2.to_owned()],
            vec![invoke::RolloutView { moves: moves.clone(), share }],
        )
    };
    let script: Vec<_> =
        (0..400).flat_map(|_| [("node-2", Ok(ok_reply("{}"))), ("node-3", Ok(ok_reply("{}")))]).collect();
    let forward = FakeForward::with(&script);
    let dispatcher = versioned(&forward, &["node-2"], &["node-3"], table(25));
    for _ in 0..400 {
        assert_eq!(http(&dispatcher, "GET", "/echo/hi", "").status, 200);
    }
    let sent = forward.sent.lock();
    let new = sent.iter().filter(|(_, r)| r.artifact == ECHO_V2).count();
    assert!((60..=140).contains(&new), "about 25% of 400 on 2.0.0, got {new}");
    for (node, request) in sent.iter() {
        assert_eq!(request.pins, [("org.aether.examples:echo".to_owned(), request.artifact.clone())], "to {node}");
    }
    drop(sent);

    // A call that arrives pinned keeps its side whatever the ratio.
    let forward = FakeForward::with(&[("node-3", Ok(ok_reply("{}")))]);
    let dispatcher = versioned(&forward, &["node-2"], &["node-3"], table(0));
    let pins = invoke::Pins(vec![("org.aether.examples:echo".to_owned(), ECHO_V2.to_owned())]);
    let context = CallContext { pins: Some(Arc::new(pins)), ..CallContext::with_deadline(None, 0) };
    let reply = RemoteCall::call(&dispatcher, ECHO, "echo", &[0, 0, 0, 0], context).unwrap();
    assert_eq!(reply.status, aether_sdk::Status::OK);
    assert_eq!(sent_artifacts(&forward), [ECHO_V2]);
}
