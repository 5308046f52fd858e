//! Slice ABI 3 through the container with the real `echo` slice: HTTP method, path, header fields and
//! any status both ways (local call and slice-to-slice call), the invocation context, the reconfigure
//! hook, and the plumbing of `ctx.kv()` against a fake cluster state.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aether_sdk::{json, RequestBuilder, Response, Status};
use container::state::{SliceEntry, SliceState, StateError};
use container::{Artifact, CallContext, Container, ContainerConfig};

const ECHO: &str = "org.aether.examples:echo:1.0.0";

fn repo() -> PathBuf {
    devcluster::example_slices_repo().expect("the example slices build")
}

fn echo_container() -> (Container, container::SliceHandle) {
    let mut config = ContainerConfig::new(repo(), "node-1");
    config.pool.workers = 2;
    let c = Container::new(config).unwrap();
    let id = c.deploy(&Artifact::parse(ECHO).unwrap(), vec![("greeting".into(), "hello".into())]).unwrap();
    let handle = c.handle(id).unwrap();
    (c, handle)
}

fn status_request(code: &str) -> RequestBuilder {
    RequestBuilder::new()
        .method("POST")
        .path(&format!("/echo/status/{code}"))
        .param("code", code)
        .header("X-Probe", "one")
        .header("x-probe", "two")
}

fn call(handle: &container::SliceHandle, method: &str, request: RequestBuilder) -> Response {
    handle.call(method, &request.encode().unwrap()).unwrap()
}

fn body(response: &Response) -> json::Value {
    json::parse(&response.body).unwrap_or_else(|e| panic!("{e}: {}", response.body_text()))
}

#[test]
fn method_headers_and_any_status_round_trip_through_a_local_call() {
    let (_c, echo) = echo_container();
    let created = call(&echo, "status", status_request("201"));
    assert_eq!(created.status, Status::CREATED);
    assert_eq!(created.header("Location"), Some("/echo/created"));
    assert_eq!(created.header("X-Echo-Method"), Some("POST"));
    assert_eq!(created.header("X-Echo-Path"), Some("/echo/status/201"));
    assert_eq!(created.header("X-Echo-Probe"), Some("one,two"), "repeated request fields all reach the slice");
    assert_eq!(body(&created).get("probe").and_then(json::Value::as_str), Some("one,two"));

    let found = call(&echo, "status", status_request("302").query("to", "https://example.com/x"));
    assert_eq!((found.status.http(), found.header("location")), (302, Some("https://example.com/x")));
    let teapot = call(&echo, "status", status_request("418"));
    assert_eq!(teapot.status.http(), 418);
    assert_eq!(teapot.content_type(), Some("application/json"));
    let empty = call(&echo, "status", status_request("204"));
    assert_eq!((empty.status.http(), empty.body.len(), empty.content_type()), (204, 0, None));
}

#[test]
fn method_headers_and_any_status_round_trip_through_a_slice_to_slice_call() {
    let (_c, echo) = echo_container();
    for (code, location) in
        [("201", Some("/echo/created")), ("302", Some("/echo/target")), ("418", None), ("204", None)]
    {
        let relayed = call(&echo, "relay", status_request(code));
        assert_eq!(relayed.status.http().to_string(), code, "{}", relayed.body_text());
        assert_eq!(relayed.header("location"), location, "{code}");
        assert_eq!(relayed.header("X-Echo-Method"), Some("PUT"), "the caller's method reaches the callee");
        assert_eq!(relayed.header("X-Echo-Path"), Some("/relayed"));
        assert_eq!(relayed.header("X-Echo-Probe"), Some("one,two"), "the caller's header fields reach the callee");
        assert_eq!(relayed.header("X-Relayed"), Some("1"));
    }
}

#[test]
fn the_invocation_context_reaches_the_slice_and_is_passed_on_by_ctx_call() {
    let (c, echo) = echo_container();
    let context = CallContext {
        request_id: Some("req-abc".into()),
        ..CallContext::with_deadline(Some(Instant::now() + Duration::from_secs(5)), 0)
    };
    let request = RequestBuilder::new().encode().unwrap();
    let seen = c.call_inline_in(&echo, "invocation", &request, context.clone()).unwrap();
    let seen = body(&seen);
    assert_eq!(seen.get("request_id").and_then(json::Value::as_str), Some("req-abc"));
    assert_eq!(seen.get("caller").and_then(json::Value::as_str), Some(""));
    assert_eq!(seen.get("depth").and_then(json::Value::as_i64), Some(0));
    let left = seen.get("deadline_ms").and_then(json::Value::as_i64).expect("a deadline");
    assert!(left > 4_000 && left <= 5_000, "{left}");

    // Through ctx.call_with (2 s timeout): same request id, the caller named, one level deeper, the
    // earlier deadline.
    let relayed = c.call_inline_in(&echo, "relay-invocation", &request, context).unwrap();
    let relayed = body(&relayed);
    assert_eq!(relayed.get("request_id").and_then(json::Value::as_str), Some("req-abc"));
    assert_eq!(relayed.get("caller").and_then(json::Value::as_str), Some(ECHO));
    assert_eq!(relayed.get("depth").and_then(json::Value::as_i64), Some(1));
    let left = relayed.get("deadline_ms").and_then(json::Value::as_i64).expect("a deadline");
    assert!(left > 1_000 && left <= 2_000, "the per-call timeout is the earlier deadline: {left}");

    // Outside any call: nothing known.
    let none = body(&call(&echo, "invocation", RequestBuilder::new()));
    assert_eq!((none.get("request_id").and_then(json::Value::as_str), none.get("deadline_ms")), (Some(""), None));
}

#[test]
fn a_panic_text_stays_in_the_log_and_the_caller_sees_only_that_the_slice_failed() {
    let mut config = ContainerConfig::new(repo(), "node-1");
    config.pool.workers = 1;
    let c = Container::new(config).unwrap();
    let faulty = c.deploy(&Artifact::parse("org.aether.examples:faulty:1.0.0").unwrap(), vec![]).unwrap();
    let faulty = c.handle(faulty).unwrap();
    let err = faulty.call("panic", &RequestBuilder::new().encode().unwrap()).unwrap_err();
    // The container reports the text to its caller (the node logs it and answers a generic 500) ...
    assert!(matches!(&err, container::CallError::Panicked { message, .. } if message.contains("asked to panic")));
    // ... and a slice that called it learns only that it failed.
    let nested = c.call(
        "org.aether.examples:faulty:1.0.0",
        "spawned-call",
        &RequestBuilder::new()
            .param("artifact", "org.aether.examples:faulty:1.0.0")
            .param("method", "panic")
            .encode()
            .unwrap(),
    );
    let nested = nested.unwrap();
    assert_eq!(nested.status.http(), 500, "{}", nested.body_text());
    assert!(!nested.body_text().contains("asked to panic"), "{}", nested.body_text());
    assert!(nested.body_text().contains("\"internal\""), "{}", nested.body_text());
}

#[test]
fn reconfigure_reaches_the_instance_and_a_refusal_keeps_the_old_config() {
    let (c, echo) = echo_container();
    let read = |key: &str| call(&echo, "config", RequestBuilder::new().param("key", key));
    assert_eq!(read("greeting").body_text(), r#"{"greeting":"hello"}"#);

    c.reconfigure(ECHO, vec![("greeting".into(), "bonjour".into())]).unwrap();
    assert_eq!(read("greeting").body_text(), r#"{"greeting":"bonjour"}"#, "accepted: ctx.config sees it");
    assert_eq!(echo.config(), vec![("greeting".to_owned(), "bonjour".to_owned())]);

    let refused = c.reconfigure(ECHO, vec![("greeting".into(), "hola".into()), ("refuse".into(), "not today".into())]);
    let why = refused.unwrap_err();
    assert!(why.contains("not today") && why.contains(&format!("instance {}", echo.id())), "{why}");
    assert_eq!(read("greeting").body_text(), r#"{"greeting":"bonjour"}"#, "refused: the old config stays");
    assert!(c.reconfigure("org.example:absent:1.0.0", vec![]).is_ok(), "no instance: nothing to refuse");
}

#[test]
fn a_reconfigure_hook_that_panics_or_hangs_is_a_refusal_and_the_instance_serves_on() {
    let mut config = ContainerConfig::new(repo(), "node-1");
    config.timeouts.start = Duration::from_millis(300);
    config.timeouts.drain = Duration::from_millis(100);
    let c = Container::new(config).unwrap();
    const FAULTY: &str = "org.aether.examples:faulty:1.0.0";
    let id = c.deploy(&Artifact::parse(FAULTY).unwrap(), vec![("a".into(), "1".into())]).unwrap();
    let faulty = c.handle(id).unwrap();

    let panicked = c.reconfigure(FAULTY, vec![("on_reconfigure".into(), "panic".into())]).unwrap_err();
    assert!(panicked.contains("failed while reconfiguring") && !panicked.contains("asked to panic"), "{panicked}");
    let started = Instant::now();
    let hung = c.reconfigure(FAULTY, vec![("on_reconfigure".into(), "hang".into())]).unwrap_err();
    assert!(hung.contains("did not return within"), "{hung}");
    assert!(started.elapsed() < Duration::from_secs(2), "the caller waits the start timeout, not forever");
    assert_eq!(faulty.config(), vec![("a".to_owned(), "1".to_owned())], "refused: the old config stays");
    assert!(faulty.call("ok", &RequestBuilder::new().encode().unwrap()).unwrap().is_ok(), "still serving");
}

/// A cluster state that records what reaches it and answers from a map.
#[derive(Default)]
struct FakeState {
    calls: Mutex<Vec<String>>,
    deadlines: Mutex<Vec<Duration>>,
    entries: Mutex<std::collections::BTreeMap<String, (Vec<u8>, u64)>>,
    watches: Mutex<Vec<(String, u64, String, String)>>,
    unwatched: Mutex<Vec<(String, u64)>>,
}

impl FakeState {
    fn note(&self, what: String, deadline: Duration) {
        self.calls.lock().unwrap().push(what);
        self.deadlines.lock().unwrap().push(deadline);
    }
}

impl SliceState for FakeState {
    fn get(&self, artifact: &str, key: &str, deadline: Duration) -> Result<Option<SliceEntry>, StateError> {
        self.note(format!("get {artifact} {key}"), deadline);
        let entries = self.entries.lock().unwrap();
        Ok(entries.get(key).map(|(value, version)| SliceEntry {
            key: key.into(),
            value: value.clone(),
            version: *version,
        }))
    }
    fn put(&self, artifact: &str, key: &str, value: &[u8], deadline: Duration) -> Result<u64, StateError> {
        self.note(format!("put {artifact} {key}"), deadline);
        if value.len() > 16 {
            return Err(StateError::TooLarge { what: "value", limit: 16 });
        }
        let mut entries = self.entries.lock().unwrap();
        let version = entries.get(key).map_or(1, |(_, v)| v + 1);
        entries.insert(key.into(), (value.to_vec(), version));
        Ok(version)
    }
    fn delete(&self, artifact: &str, key: &str, deadline: Duration) -> Result<bool, StateError> {
        self.note(format!("delete {artifact} {key}"), deadline);
        Ok(self.entries.lock().unwrap().remove(key).is_some())
    }
    fn compare_and_set(
        &self,
        artifact: &str,
        key: &str,
        expected: Option<u64>,
        value: &[u8],
        deadline: Duration,
    ) -> Result<u64, StateError> {
        self.note(format!("cas {artifact} {key} {expected:?}"), deadline);
        let mut entries = self.entries.lock().unwrap();
        let current = entries.get(key).map(|(_, v)| *v);
        if current != expected {
            return Err(StateError::VersionMismatch { current });
        }
        let version = current.map_or(1, |v| v + 1);
        entries.insert(key.into(), (value.to_vec(), version));
        Ok(version)
    }
    fn list(
        &self,
        artifact: &str,
        prefix: &str,
        limit: usize,
        deadline: Duration,
    ) -> Result<Vec<SliceEntry>, StateError> {
        self.note(format!("list {artifact} {prefix} {limit}"), deadline);
        let entries = self.entries.lock().unwrap();
        let found = entries.iter().filter(|(k, _)| k.starts_with(prefix)).take(limit);
        Ok(found.map(|(k, (v, n))| SliceEntry { key: k.clone(), value: v.clone(), version: *n }).collect())
    }
    fn watch(&self, artifact: &str, instance: u64, prefix: &str, method: &str) -> Result<(), StateError> {
        self.watches.lock().unwrap().push((artifact.into(), instance, prefix.into(), method.into()));
        Ok(())
    }
    fn unwatch_instance(&self, artifact: &str, instance: u64) {
        self.unwatched.lock().unwrap().push((artifact.into(), instance));
    }
}

fn kv(echo: &container::SliceHandle, op: &str, query: &[(&str, &str)]) -> (u16, String) {
    let mut request = RequestBuilder::new().param("op", op);
    for (k, v) in query {
        request = request.query(k, v);
    }
    let response = call(echo, "kv", request);
    (response.status.http(), response.body_text())
}

#[test]
fn kv_calls_reach_the_installed_state_with_the_artifact_bytes_errors_and_deadlines() {
    let (c, echo) = echo_container();
    let (status, text) = kv(&echo, "get", &[("key", "a")]);
    assert_eq!(status, 503, "before a state is installed: {text}");
    assert!(text.contains("no cluster state on this node"), "{text}");

    let state = Arc::new(FakeState::default());
    c.set_slice_state(state.clone());
    assert_eq!(kv(&echo, "put", &[("key", "links/a"), ("value", "https://x")]), (200, r#"{"ok":1}"#.into()));
    assert_eq!(kv(&echo, "put", &[("key", "links/a"), ("value", "https://y")]), (200, r#"{"ok":2}"#.into()));
    assert_eq!(
        kv(&echo, "get", &[("key", "links/a")]),
        (200, r#"{"ok":{"key":"links/a","value":"https://y","version":2}}"#.into())
    );
    assert_eq!(kv(&echo, "get", &[("key", "nope")]), (200, r#"{"ok":null}"#.into()));
    let (status, text) = kv(&echo, "cas", &[("key", "links/a"), ("expected", "1"), ("value", "z")]);
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("VersionMismatch { current: Some(2) }"), "{text}");
    assert_eq!(
        kv(&echo, "cas", &[("key", "links/b"), ("value", "new")]),
        (200, r#"{"ok":1}"#.into()),
        "absent: only if absent"
    );
    let (status, text) = kv(&echo, "put", &[("key", "big"), ("value", &"v".repeat(17))]);
    assert_eq!(status, 413);
    assert!(text.contains(r#"TooLarge { what: \"value\", limit: 16 }"#), "{text}");
    let (status, text) = kv(&echo, "list", &[("prefix", "links/"), ("limit", "10")]);
    assert_eq!(status, 200);
    assert!(text.contains(r#""key":"links/a""#) && text.contains(r#""key":"links/b""#), "{text}");
    assert_eq!(kv(&echo, "delete", &[("key", "links/b")]), (200, r#"{"ok":true}"#.into()));
    assert_eq!(kv(&echo, "delete", &[("key", "links/b")]), (200, r#"{"ok":false}"#.into()));

    let calls = state.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|c| c.contains(ECHO)), "every call names the calling artifact: {calls:?}");
    assert!(calls.contains(&format!("cas {ECHO} links/b None")), "{calls:?}");
    assert!(calls.contains(&format!("list {ECHO} links/ 10")), "{calls:?}");
    let outside = *state.deadlines.lock().unwrap().first().unwrap();
    assert_eq!(outside, container::KV_DEADLINE_DEFAULT, "outside a call: the default deadline");

    // Inside a call with 700 ms left, the store gets (about) those 700 ms.
    let context = CallContext::with_deadline(Some(Instant::now() + Duration::from_millis(700)), 0);
    let get = RequestBuilder::new().param("op", "get").query("key", "links/a").encode().unwrap();
    assert!(c.call_inline_in(&echo, "kv", &get, context).unwrap().is_ok());
    let inside = *state.deadlines.lock().unwrap().last().unwrap();
    assert!(inside <= Duration::from_millis(700) && inside > Duration::from_millis(500), "{inside:?}");

    // Watches: a method of the slice only; registered for this instance, dropped when it stops.
    let (status, text) = kv(&echo, "watch", &[("prefix", "links/"), ("method", "not-a-method")]);
    assert_eq!(status, 400, "{text}");
    assert_eq!(kv(&echo, "watch", &[("prefix", "links/"), ("method", "kv-change")]), (200, r#"{"ok":true}"#.into()));
    assert_eq!(
        state.watches.lock().unwrap().clone(),
        [(ECHO.to_owned(), echo.id(), "links/".to_owned(), "kv-change".to_owned())]
    );
    c.deactivate(echo.id()).unwrap();
    assert!(state.unwatched.lock().unwrap().contains(&(ECHO.to_owned(), echo.id())), "stopping drops the watches");
}
