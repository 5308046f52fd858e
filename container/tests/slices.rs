//! The container against the real example slices: lifecycle, refusals, faults, nested calls,
//! versions side by side, and load/unload cycles without leaks.
//!
//! The slices are built on first use by `cargo xtask build-slices` into `target/slices-build`
//! (a target folder of its own, so the outer build's lock is never waited on); cargo's own lock
//! serialises concurrent builds and the installation renames files into place, so parallel test
//! processes are safe.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aether_sdk::{json, RequestBuilder, Status};
use container::integrity;
use container::{
    Artifact, CallContext, CallError, Container, ContainerConfig, ContainerError, IntegrityError, RemoteCall,
    SliceState, TrustedKeys,
};

/// The Maven-layout repository with every slice built.
fn repo() -> PathBuf {
    devcluster::example_slices_repo().expect("the example slices build")
}

fn artifact(text: &str) -> Artifact {
    Artifact::parse(text).unwrap()
}

fn container_with(change: impl FnOnce(&mut ContainerConfig)) -> Container {
    let mut config = ContainerConfig::new(repo(), "node-1");
    config.pool.workers = 2;
    change(&mut config);
    Container::new(config).unwrap()
}

fn container() -> Container {
    container_with(|_| {})
}

fn get(c: &Container, artifact: &str, method: &str, request: RequestBuilder) -> aether_sdk::Response {
    c.call(artifact, method, &request.encode().unwrap()).unwrap()
}

fn field<'a>(value: &'a json::Value, key: &str) -> &'a json::Value {
    value.get(key).unwrap_or_else(|| panic!("no `{key}` in {value:?}"))
}

const ECHO1: &str = "org.aether.examples:echo:1.0.0";
const ECHO2: &str = "org.aether.examples:echo:2.0.0";
const COUNTER: &str = "org.aether.examples:counter:1.0.0";
const ORDERS: &str = "org.aether.examples:orders:1.0.0";
const INVENTORY: &str = "org.aether.examples:inventory:1.0.0";
const PRICING: &str = "org.aether.examples:pricing:1.0.0";
const FAULTY: &str = "org.aether.examples:faulty:1.0.0";

#[test]
fn every_example_loads_starts_answers_stops_and_unloads() {
    let c = container();
    for text in [ECHO1, ECHO2, COUNTER, ORDERS, INVENTORY, PRICING, FAULTY] {
        let id = c.load(&artifact(text), vec![]).unwrap();
        assert_eq!(c.state(id), Some((SliceState::Loaded, None)), "{text}");
        c.activate(id).unwrap();
        assert_eq!(c.state(id), Some((SliceState::Active, None)), "{text}");
        let handle = c.handle(id).unwrap();
        assert_eq!(handle.info().name, artifact(text).id());
        let answer = match text {
            ECHO1 | ECHO2 => handle.call("echo", &RequestBuilder::new().param("msg", "hi").encode().unwrap()),
            COUNTER => handle.call("incr", &RequestBuilder::new().param("name", "a").encode().unwrap()),
            ORDERS => handle.call("create", &RequestBuilder::new().body("{}").encode().unwrap()),
            INVENTORY => {
                handle.call("reserve", &RequestBuilder::new().param("item", "pen").param("qty", "1").encode().unwrap())
            }
            PRICING => handle.call("price", &RequestBuilder::new().param("item", "pen").encode().unwrap()),
            _ => handle.call("ok", &RequestBuilder::new().encode().unwrap()),
        };
        let answer = answer.unwrap();
        // `orders` refuses an empty order; everything else answers 200.
        let expected = if text == ORDERS { Status::BadRequest } else { Status::Ok };
        assert_eq!(answer.status, expected, "{text}: {}", answer.body_text());
        c.deactivate(id).unwrap();
        assert_eq!(c.state(id), Some((SliceState::Loaded, None)));
        assert!(matches!(handle.call("echo", b"\0\0\0\0"), Err(CallError::NotActive { .. })));
        c.unload(id).unwrap();
        assert_eq!(c.state(id), None);
    }
}

#[test]
fn descriptors_carry_routes_and_methods() {
    let c = container();
    let id = c.load(&artifact(ECHO1), vec![]).unwrap();
    let info = c.handle(id).unwrap().info().clone();
    assert_eq!(info.version, "1.0.0");
    assert_eq!(info.methods[..3], ["echo", "echo_body", "status"]);
    let routes: Vec<(String, String, String)> =
        info.routes.iter().map(|r| (r.http_method.clone(), r.path.clone(), r.method.clone())).collect();
    assert_eq!(
        routes[..3],
        [
            ("GET".into(), "/echo/{msg}".into(), "echo".into()),
            ("POST".into(), "/echo".into(), "echo_body".into()),
            ("GET".into(), "/echo/status/{code}".into(), "status".into())
        ]
    );
    assert_eq!(routes.len(), 11);
}

#[test]
fn echo_v1_and_v2_answer_side_by_side() {
    let c = container();
    let v1 = c.deploy(&artifact(ECHO1), vec![]).unwrap();
    let v2 = c.deploy(&artifact(ECHO2), vec![]).unwrap();
    let version = |text: &str| {
        let answer = get(&c, text, "echo", RequestBuilder::new().param("msg", "x"));
        let value = json::parse(&answer.body).unwrap();
        assert_eq!(field(&value, "node").as_str(), Some("node-1"));
        field(&value, "version").as_str().unwrap().to_owned()
    };
    assert_eq!(version(ECHO1), "1.0.0");
    assert_eq!(version(ECHO2), "2.0.0");
    // Unloading one leaves the other serving.
    c.deactivate(v1).unwrap();
    c.unload(v1).unwrap();
    assert_eq!(version(ECHO2), "2.0.0");
    c.deactivate(v2).unwrap();
    c.unload(v2).unwrap();
}

#[test]
fn two_instances_of_one_slice_keep_separate_state() {
    let c = container();
    let a = c.deploy(&artifact(COUNTER), vec![]).unwrap();
    let b = c.deploy(&artifact(COUNTER), vec![]).unwrap();
    let incr = |id| {
        let request = RequestBuilder::new().param("name", "n").encode().unwrap();
        let answer = c.handle(id).unwrap().call("incr", &request).unwrap();
        field(&json::parse(&answer.body).unwrap(), "value").as_i64().unwrap()
    };
    assert_eq!((incr(a), incr(a), incr(b)), (1, 2, 1));
}

fn repo_with(file: &str, contents: &[u8]) -> (PathBuf, Artifact) {
    let dir = std::env::temp_dir().join(format!("aether-test-repo-{}-{file}", std::process::id()));
    let artifact = artifact("org.aether.tests:broken:1.0.0");
    let path = dir.join(artifact.repository_path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, contents).unwrap();
    integrity::write_checksum(&path, &integrity::sha256(contents)).unwrap();
    (dir, artifact)
}

/// A repository of its own holding echo 1.0.0 and its checksum file; answers the repository and the library.
fn echo_repo(name: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("aether-test-echo-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let library = dir.join(artifact(ECHO1).repository_path());
    std::fs::create_dir_all(library.parent().unwrap()).unwrap();
    let bytes = std::fs::read(repo().join(artifact(ECHO1).repository_path())).unwrap();
    std::fs::write(&library, &bytes).unwrap();
    integrity::write_checksum(&library, &integrity::sha256(&bytes)).unwrap();
    (dir, library)
}

fn no_absolute_path(message: &str) {
    assert!(!message.contains(&std::env::temp_dir().display().to_string()), "{message}");
    assert!(!message.contains("/aether-"), "{message}");
}

#[test]
fn a_library_without_a_checksum_file_is_refused_before_loading() {
    let (dir, library) = echo_repo("no-sidecar");
    std::fs::remove_file(integrity::checksum_file(&library)).unwrap();
    let c = Container::new(ContainerConfig::new(&dir, "node-1")).unwrap();
    let err = c.deploy(&artifact(ECHO1), vec![]).unwrap_err();
    assert!(
        matches!(&err, ContainerError::Integrity { error, .. } if matches!(**error, IntegrityError::NoChecksum { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("sha256sum echo-1.0.0.so > echo-1.0.0.so.sha256"), "{err}");
    no_absolute_path(&err.to_string());
    assert!(c.instances().is_empty());
}

#[test]
fn a_library_changed_after_it_was_stored_is_refused_before_loading() {
    let (dir, library) = echo_repo("flipped");
    let mut bytes = std::fs::read(&library).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&library, &bytes).unwrap();
    let c = Container::new(ContainerConfig::new(&dir, "node-1")).unwrap();
    let err = c.deploy(&artifact(ECHO1), vec![]).unwrap_err();
    assert!(
        matches!(&err, ContainerError::Integrity { error, .. } if matches!(**error, IntegrityError::Mismatch { .. })),
        "{err}"
    );
    no_absolute_path(&err.to_string());
    // Truncated, as a dropped upload once left it.
    std::fs::write(&library, &bytes[..middle]).unwrap();
    let err = c.deploy(&artifact(ECHO1), vec![]).unwrap_err();
    assert!(
        matches!(&err, ContainerError::Integrity { error, .. } if matches!(**error, IntegrityError::Mismatch { .. })),
        "{err}"
    );
    assert!(c.instances().is_empty());
}

#[test]
fn with_trusted_keys_only_a_good_signature_loads() {
    let (dir, library) = echo_repo("signed");
    let author = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let keys = TrustedKeys::from_keys(vec![author.verifying_key()]);
    let c = Container::new({
        let mut config = ContainerConfig::new(&dir, "node-1");
        config.trusted_keys = keys;
        config
    })
    .unwrap();
    let err = c.deploy(&artifact(ECHO1), vec![]).unwrap_err();
    assert!(
        matches!(&err, ContainerError::Integrity { error, .. } if matches!(**error, IntegrityError::Unsigned { .. })),
        "{err}"
    );

    let digest = integrity::sha256(&std::fs::read(&library).unwrap());
    integrity::write_signature(&library, &integrity::sign(&stranger, &digest)).unwrap();
    let err = c.deploy(&artifact(ECHO1), vec![]).unwrap_err();
    assert!(
        matches!(&err, ContainerError::Integrity { error, .. } if matches!(**error, IntegrityError::BadSignature { .. })),
        "{err}"
    );
    no_absolute_path(&err.to_string());

    integrity::write_signature(&library, &integrity::sign(&author, &digest)).unwrap();
    c.deploy(&artifact(ECHO1), vec![]).unwrap_or_else(|e| panic!("{e}"));
    assert!(get(&c, ECHO1, "echo", RequestBuilder::new().param("msg", "signed")).is_ok());
}

#[test]
fn copies_go_to_the_configured_private_folder_and_do_not_stay() {
    let (dir, _) = echo_repo("private");
    let loaded = dir.join("data").join("loaded");
    let c = Container::new({
        let mut config = ContainerConfig::new(&dir, "node-1");
        config.work_dir = loaded.clone();
        config
    })
    .unwrap();
    c.deploy(&artifact(ECHO1), vec![]).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&loaded).unwrap().permissions().mode() & 0o777, 0o700);
    assert_eq!(std::fs::read_dir(&loaded).unwrap().count(), 0, "the copy is deleted once loaded");

    let shared = dir.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut config = ContainerConfig::new(&dir, "node-1");
    config.work_dir = shared;
    let refused = Container::new(config).err().expect("a world-writable copy folder is refused");
    assert!(matches!(refused, ContainerError::WorkDir { .. }), "{refused}");
}

#[test]
fn an_old_abi_library_is_refused_naming_both_versions_and_the_sdk_to_rebuild_against() {
    let c = container();
    let err = c.load(&artifact("org.aether.tests:abi-mismatch:1.0.0"), vec![]).unwrap_err();
    let ContainerError::AbiMismatch { expected, found, .. } = &err else { panic!("{err}") };
    assert_eq!((*expected, *found), (aether_sdk::abi::ABI_VERSION, aether_sdk::abi::ABI_VERSION - 1));
    let message = err.to_string();
    let (host, library) = (format!("version {expected}"), format!("version {found}"));
    assert!(message.contains("abi-mismatch") && message.contains(&host) && message.contains(&library), "{message}");
    let rebuild = format!("rebuild against aether-sdk {}", aether_sdk::abi::SDK_VERSION);
    assert!(message.contains(&rebuild), "{message}");
    assert!(c.instances().is_empty());
}

#[test]
fn a_file_that_is_not_a_slice_is_refused_with_a_message() {
    let (dir, broken) = repo_with("text", b"this is not a shared library\n");
    let c = Container::new(ContainerConfig::new(&dir, "node-1")).unwrap();
    let err = c.load(&broken, vec![]).unwrap_err();
    assert!(matches!(err, ContainerError::NotALibrary { .. }), "{err}");
    assert!(err.to_string().contains("not a loadable slice library"), "{err}");
    no_absolute_path(&err.to_string());

    // A real shared library that does not export the descriptor.
    let libm = ["/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib/x86_64-linux-gnu/libm.so.6", "/lib64/libm.so.6"]
        .into_iter()
        .find(|p| Path::new(p).is_file());
    if let Some(libm) = libm {
        let (dir, broken) = repo_with("libm", &std::fs::read(libm).unwrap());
        let c = Container::new(ContainerConfig::new(&dir, "node-1")).unwrap();
        let err = c.load(&broken, vec![]).unwrap_err();
        assert!(matches!(err, ContainerError::MissingSymbol { symbol: "aether_slice_descriptor", .. }), "{err}");
    }

    let missing = c.load(&artifact("org.aether.tests:absent:1.0.0"), vec![]).unwrap_err();
    assert!(matches!(missing, ContainerError::NotInRepository { .. }), "{missing}");
}

#[test]
fn a_library_under_the_wrong_coordinates_is_a_bad_descriptor() {
    let echo = std::fs::read(repo().join(artifact(ECHO1).repository_path())).unwrap();
    let (dir, broken) = repo_with("renamed", &echo);
    let c = Container::new(ContainerConfig::new(&dir, "node-1")).unwrap();
    let err = c.load(&broken, vec![]).unwrap_err();
    assert!(matches!(err, ContainerError::BadDescriptor { .. }), "{err}");
    assert!(err.to_string().contains("says it is echo 1.0.0"), "{err}");
}

#[test]
fn a_panic_in_start_leaves_the_slice_failed_and_the_node_serving() {
    let c = container();
    let id = c.load(&artifact(FAULTY), vec![("on_start".into(), "panic".into())]).unwrap();
    let err = c.activate(id).unwrap_err();
    assert!(err.to_string().contains("panicked: faulty: asked to panic in start"), "{err}");
    let (state, reason) = c.state(id).unwrap();
    assert_eq!(state, SliceState::Failed);
    assert!(reason.unwrap().contains("panicked"));
    assert!(matches!(c.activate(id), Err(ContainerError::WrongState { state: SliceState::Failed, .. })));
    c.unload(id).unwrap();
    c.deploy(&artifact(ECHO1), vec![]).unwrap();
    assert!(get(&c, ECHO1, "echo", RequestBuilder::new().param("msg", "still here")).is_ok());
}

#[test]
fn a_panic_in_call_answers_that_call_with_an_error_and_the_slice_serves_on() {
    let c = container();
    let id = c.deploy(&artifact(FAULTY), vec![]).unwrap();
    let handle = c.handle(id).unwrap();
    let empty = RequestBuilder::new().encode().unwrap();
    let err = handle.call("panic", &empty).unwrap_err();
    assert!(
        matches!(&err, CallError::Panicked { message, .. } if message == "faulty: asked to panic in call"),
        "{err}"
    );
    assert_eq!(err.http_status(), 500);
    let pooled = c.call_with_deadline(&handle, "panic", empty.clone(), Duration::from_secs(5)).unwrap_err();
    assert!(matches!(pooled, CallError::Panicked { .. }));
    assert_eq!(handle.call("ok", &empty).unwrap().status, Status::Ok);
    assert_eq!(c.state(id), Some((SliceState::Active, None)));
    c.deactivate(id).unwrap();
    c.unload(id).unwrap();
}

#[test]
fn a_hung_start_ends_failed_after_its_timeout() {
    let c = container_with(|config| config.timeouts.start = Duration::from_millis(300));
    let id = c.load(&artifact(FAULTY), vec![("on_start".into(), "hang".into())]).unwrap();
    let started = std::time::Instant::now();
    let err = c.activate(id).unwrap_err();
    assert!(matches!(err, ContainerError::StepTimedOut { step: "start", .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(c.state(id).unwrap().0, SliceState::Failed);
    // The library stays mapped (its start is still running) but the instance goes away.
    c.unload(id).unwrap();
    assert_eq!(c.state(id), None);
}

#[test]
fn a_hung_call_meets_its_deadline_and_the_pool_serves_on() {
    let c = container_with(|config| config.pool.workers = 1);
    let faulty = c.handle(c.deploy(&artifact(FAULTY), vec![]).unwrap()).unwrap();
    let empty = RequestBuilder::new().encode().unwrap();
    let err = c.call_with_deadline(&faulty, "hang", empty.clone(), Duration::from_millis(200)).unwrap_err();
    assert!(matches!(err, CallError::DeadlineExceeded { .. }), "{err}");
    assert_eq!(err.http_status(), 504);
    let ok = c.call_with_deadline(&faulty, "ok", empty, Duration::from_secs(5)).unwrap();
    assert_eq!(ok.status, Status::Ok);
    assert_eq!(c.pool_stats().abandoned, 1);
}

#[test]
fn a_slice_with_a_hung_call_fails_to_deactivate_and_unloads_without_closing_its_library() {
    let c = container_with(|config| config.timeouts.drain = Duration::from_millis(100));
    let faulty = c.handle(c.deploy(&artifact(FAULTY), vec![]).unwrap()).unwrap();
    let empty = RequestBuilder::new().encode().unwrap();
    let err = c.call_with_deadline(&faulty, "hang", empty.clone(), Duration::from_millis(100)).unwrap_err();
    assert!(matches!(err, CallError::DeadlineExceeded { .. }), "{err}");
    let err = c.deactivate(faulty.id()).unwrap_err();
    assert!(err.to_string().contains("1 calls still in flight"), "{err}");
    let (state, reason) = c.state(faulty.id()).unwrap();
    assert_eq!(state, SliceState::Failed);
    assert!(reason.unwrap().contains("in flight"));
    assert!(matches!(faulty.call("ok", &empty), Err(CallError::NotActive { .. })));
    c.unload(faulty.id()).unwrap();
    assert_eq!(c.state(faulty.id()), None);
    // Other slices load and serve as usual.
    c.deploy(&artifact(ECHO1), vec![]).unwrap();
    assert!(get(&c, ECHO1, "echo", RequestBuilder::new().param("msg", "ok")).is_ok());
}

#[test]
fn orders_calls_inventory_and_pricing_on_a_pool_of_one_worker() {
    let c = container_with(|config| config.pool.workers = 1);
    for text in [INVENTORY, PRICING, ORDERS] {
        c.deploy(&artifact(text), vec![]).unwrap();
    }
    let orders = c.find_active(ORDERS).unwrap();
    let order = |body: &str| {
        let request = RequestBuilder::new().body(body).encode().unwrap();
        c.call_with_deadline(&orders, "create", request, Duration::from_secs(5)).unwrap()
    };
    let answer = order(r#"{"item": "book", "qty": 2}"#);
    assert_eq!(answer.status, Status::Ok, "{}", answer.body_text());
    let value = json::parse(&answer.body).unwrap();
    assert_eq!(field(&value, "item").as_str(), Some("book"));
    assert_eq!(field(&value, "qty").as_i64(), Some(2));
    assert_eq!(field(&value, "unit_price").as_f64(), Some(12.5));
    assert_eq!(field(&value, "total").as_f64(), Some(25.0));
    assert_eq!(field(&value, "reserved"), &json::Value::Bool(true));
    assert!(field(&value, "order_id").as_str().unwrap().starts_with("node-1-"));

    let unknown = order(r#"{"item": "unicorn", "qty": 1}"#);
    assert_eq!(unknown.status, Status::NotFound);
    assert!(field(&json::parse(&unknown.body).unwrap(), "detail").as_str().unwrap().contains("unicorn"));

    // With inventory gone the order cannot be taken, and says why.
    let inventory = c.find_active(INVENTORY).unwrap().id();
    c.deactivate(inventory).unwrap();
    let unavailable = order(r#"{"item": "book", "qty": 1}"#);
    assert_eq!(unavailable.status, Status::Unavailable, "{}", unavailable.body_text());
}

/// A stand-in for the cluster: calls go to another container, and the contexts they carried are kept.
struct OtherNode {
    container: Container,
    seen: parking_lot::Mutex<Vec<(String, CallContext)>>,
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
        let target = self.container.find_active(artifact).ok_or(CallError::NoInstance { artifact: artifact.into() })?;
        self.container.call_with_context(&target, method, request.to_vec(), Duration::from_secs(1), context.hops + 1)
    }
}

#[test]
fn a_nested_call_without_a_local_instance_goes_through_the_remote_hook_with_its_context() {
    let here = container_with(|config| config.pool.workers = 1);
    here.deploy(&artifact(ORDERS), vec![]).unwrap();
    here.deploy(&artifact(PRICING), vec![]).unwrap();
    let there = container_with(|config| config.node_id = "node-2".into());
    there.deploy(&artifact(INVENTORY), vec![]).unwrap();
    let other = std::sync::Arc::new(OtherNode { container: there, seen: parking_lot::Mutex::new(Vec::new()) });
    let hook: std::sync::Arc<dyn RemoteCall> = other.clone();
    here.set_remote(Some(&hook));

    let orders = here.find_active(ORDERS).unwrap();
    let request = RequestBuilder::new().body(r#"{"item": "book", "qty": 2}"#).encode().unwrap();
    let started = std::time::Instant::now();
    let answer = here.call_with_context(&orders, "create", request.clone(), Duration::from_secs(5), 1).unwrap();
    assert_eq!(answer.status, Status::Ok, "{}", answer.body_text());
    let seen = other.seen.lock().clone();
    assert_eq!(seen.len(), 1, "pricing is local, only inventory leaves: {seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[0].1.hops), (INVENTORY, 1));
    let deadline = seen[0].1.deadline.unwrap();
    assert!(deadline > started + Duration::from_secs(4) && deadline <= started + Duration::from_secs(6));

    // The container holds the hook weakly: once its owner drops it, the callee is simply not here.
    drop(hook);
    drop(other);
    let answer = here.call_with_deadline(&orders, "create", request, Duration::from_secs(5)).unwrap();
    assert_eq!(answer.status, Status::Unavailable, "{}", answer.body_text());
}

#[test]
fn an_inline_call_carries_its_context_counts_in_flight_and_reports_panics() {
    let here = std::sync::Arc::new(container_with(|config| config.timeouts.drain = Duration::from_millis(100)));
    here.deploy(&artifact(ORDERS), vec![]).unwrap();
    here.deploy(&artifact(PRICING), vec![]).unwrap();
    let there = container_with(|config| config.node_id = "node-2".into());
    there.deploy(&artifact(INVENTORY), vec![]).unwrap();
    let other = std::sync::Arc::new(OtherNode { container: there, seen: parking_lot::Mutex::new(Vec::new()) });
    let hook: std::sync::Arc<dyn RemoteCall> = other.clone();
    here.set_remote(Some(&hook));

    // Nested calls that leave the node see the inline call's deadline and hops.
    let orders = here.find_active(ORDERS).unwrap();
    let request = RequestBuilder::new().body(r#"{"item": "book", "qty": 2}"#).encode().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let answer = here.call_inline(&orders, "create", &request, deadline, 2).unwrap();
    assert_eq!(answer.status, Status::Ok, "{}", answer.body_text());
    let seen = other.seen.lock().clone();
    let expected =
        CallContext { depth: 1, caller: Some(ORDERS.into()), ..CallContext::with_deadline(Some(deadline), 2) };
    assert_eq!(seen, [(INVENTORY.to_owned(), expected)]);

    let faulty = here.handle(here.deploy(&artifact(FAULTY), vec![]).unwrap()).unwrap();
    let empty = RequestBuilder::new().encode().unwrap();
    let err = here.call_inline(&faulty, "panic", &empty, deadline, 0).unwrap_err();
    assert!(matches!(err, CallError::Panicked { .. }), "{err}");
    assert_eq!(here.call_inline(&faulty, "ok", &empty, deadline, 0).unwrap().status, Status::Ok);

    // A hung inline call is in flight (nothing here enforces its deadline: its caller does), so
    // deactivation waits for it, then gives up and leaves the library loaded.
    let (stuck_here, stuck) = (std::sync::Arc::clone(&here), faulty.clone());
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + Duration::from_millis(50);
        let _ = stuck_here.call_inline(&stuck, "hang", &empty, deadline, 0);
    });
    std::thread::sleep(Duration::from_millis(100));
    let err = here.deactivate(faulty.id()).unwrap_err();
    assert!(err.to_string().contains("1 calls still in flight"), "{err}");
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn mapped() -> (usize, u64) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap().lines().count();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let vm_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmSize:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    (maps, vm_kib)
}

fn cycle(c: &Container, echo: &Artifact, request: &[u8]) {
    let id = c.load(echo, vec![]).unwrap();
    c.activate(id).unwrap();
    let handle = c.handle(id).unwrap();
    assert!(handle.call("echo", request).unwrap().is_ok());
    assert!(c.call_with_deadline(&handle, "echo_body", request.to_vec(), Duration::from_secs(5)).unwrap().is_ok());
    drop(handle);
    c.deactivate(id).unwrap();
    c.unload(id).unwrap();
}

#[test]
fn a_thousand_load_unload_cycles_leak_no_files_or_mappings() {
    let c = container();
    let echo = artifact(ECHO1);
    let request = RequestBuilder::new().param("msg", "cycle").body("x").encode().unwrap();
    for _ in 0..20 {
        cycle(&c, &echo, &request);
    }
    let (fds, (maps, vm_kib)) = (open_fds(), mapped());
    for _ in 0..1000 {
        cycle(&c, &echo, &request);
    }
    let (fds_after, (maps_after, vm_kib_after)) = (open_fds(), mapped());
    eprintln!("fds {fds} -> {fds_after}, maps {maps} -> {maps_after}, VmSize {vm_kib} -> {vm_kib_after} kB");
    assert!(fds_after <= fds + 2, "open files grew from {fds} to {fds_after}");
    assert!(maps_after <= maps + 16, "mappings grew from {maps} to {maps_after}");
    assert!(vm_kib_after <= vm_kib + 16 * 1024, "VmSize grew from {vm_kib} kB to {vm_kib_after} kB");
}

/// A panic inside a slice must not pin its library in memory (the SDK's panic hook keeps the
/// standard hook's thread-local registration out of the slice).
#[test]
fn panicking_slices_unload_too() {
    let c = container();
    let faulty = artifact(FAULTY);
    let empty = RequestBuilder::new().encode().unwrap();
    let cycle = || {
        let id = c.deploy(&faulty, vec![]).unwrap();
        let handle = c.handle(id).unwrap();
        assert!(handle.call("panic", &empty).is_err());
        assert!(c.call_with_deadline(&handle, "panic", empty.clone(), Duration::from_secs(5)).is_err());
        drop(handle);
        c.deactivate(id).unwrap();
        c.unload(id).unwrap();
    };
    for _ in 0..5 {
        cycle();
    }
    let (maps, _) = mapped();
    for _ in 0..30 {
        cycle();
    }
    let (maps_after, _) = mapped();
    assert!(maps_after <= maps + 16, "mappings grew from {maps} to {maps_after}");
}
