//! The guard against a backend with an in-memory KV: roles on every mutating route, keys, browser rules.

use super::*;
use crate::api::{ClusterView, FaultSpec, NodeStatus, PeerView};
use crate::kv::KvEntry;
use kvstore::Command;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

const BOOTSTRAP: &str = "bootstrap-admin-key-0123456789abcdef";

#[derive(Default)]
struct Fake {
    kv: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    version: Mutex<u64>,
}

impl Backend for Fake {
    fn cluster_view(&self) -> Result<ClusterView, ApiError> {
        let me = PeerView {
            id: "node-1".into(),
            address: "127.0.0.1:1".into(),
            connected: true,
            last_seen_ms: None,
            is_self: true,
        };
        Ok(ClusterView { node: "node-1".into(), nodes: vec![me], quorum: true, caught_up: true })
    }
    fn status(&self) -> Result<NodeStatus, ApiError> {
        Ok(NodeStatus {
            node: "node-1".into(),
            leader: None,
            quorum: true,
            caught_up: true,
            members: vec![],
            applied_slot: None,
            pending_commands: 0,
            consensus_sends_refused: 0,
        })
    }
    fn kv_write(&self, command: Command) -> Result<u64, ApiError> {
        let mut kv = self.kv.lock().unwrap();
        let mut version = self.version.lock().unwrap();
        *version += 1;
        match command {
            Command::Put { key, value } => {
                kv.insert(key.to_string(), (value, *version));
            }
            Command::CompareAndSet { key, expected, value } => {
                let current = kv.get(&key.to_string()).map(|(_, v)| *v);
                if current != expected.map(|r| r.0) {
                    return Err(ApiError::new(409, "version_mismatch", "fake"));
                }
                kv.insert(key.to_string(), (value, *version));
            }
            Command::Remove { key } | Command::CompareAndRemove { key, .. } => {
                if kv.remove(&key.to_string()).is_none() {
                    return Err(ApiError::not_found("fake"));
                }
            }
            Command::Guarded { .. } | Command::Bounded { .. } => {
                return Err(ApiError::new(400, "unsupported", "the API never sends these"))
            }
        }
        Ok(*version)
    }
    fn kv_get(&self, key: &AetherKey, _stale: bool) -> Result<Option<KvEntry>, ApiError> {
        let kv = self.kv.lock().unwrap();
        Ok(kv.get(&key.to_string()).map(|(value, version)| KvEntry {
            key: key.to_string(),
            value: value.clone(),
            version: *version,
        }))
    }
    fn kv_list(&self, prefix: &str, _stale: bool) -> Result<Vec<KvEntry>, ApiError> {
        let kv = self.kv.lock().unwrap();
        Ok(kv
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, (value, version))| KvEntry { key: k.clone(), value: value.clone(), version: *version })
            .collect())
    }
    fn artifact_known(&self, _artifact: &kvstore::Artifact) -> bool {
        true
    }
    fn set_faults(&self, _rules: Vec<FaultSpec>) -> Result<(), ApiError> {
        Ok(())
    }
}

fn config(enabled: bool) -> AuthConfig {
    AuthConfig {
        enabled,
        bootstrap_key: Some(BOOTSTRAP.into()),
        secret: b"cluster secret".to_vec(),
        allowed_origins: vec!["https://console.example".into()],
        host_names: vec!["aether.internal".into()],
        listen: "127.0.0.1:8080".parse().unwrap(),
    }
}

fn request(method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Request {
    let mut headers = vec![("host".to_string(), "127.0.0.1:8080".to_string())];
    if let Some(key) = key {
        headers.push(("authorization".into(), format!("Bearer {key}")));
    }
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap())
        .collect();
    Request { method: method.into(), path: path.into(), query, body: body.to_vec(), headers, peer: None }
}

fn call(auth: &Auth, fake: &Fake, method: &str, path: &str, key: Option<&str>, body: &[u8]) -> Response {
    serve(auth, fake, &request(method, path, key, body))
}

fn create_key(auth: &Auth, fake: &Fake, role: &str) -> (String, String) {
    let body = json!({ "name": format!("{role} key"), "role": role }).to_string();
    let created = call(auth, fake, "POST", "api/keys", Some(BOOTSTRAP), body.as_bytes());
    assert_eq!(created.status, 201, "{}", created.body);
    let key = created.body["key"].as_str().unwrap().to_string();
    let id = created.body["id"].as_str().unwrap().to_string();
    assert!(key.starts_with(&format!("aek_{id}_")), "{key}");
    (id, key)
}

const BLUEPRINT: &str = "name = \"shop\"\n[[slices]]\nartifact = \"org.example:echo:1.0.0\"\n";

/// Every mutating route (and the admin-only read), with the least role it needs.
fn mutating_routes(victim_id: &str) -> Vec<(&'static str, String, Vec<u8>, Role)> {
    vec![
        ("POST", "api/blueprints".into(), BLUEPRINT.into(), Role::Operator),
        ("PUT", "api/blueprints".into(), BLUEPRINT.into(), Role::Operator),
        ("POST", "api/blueprints/shop/reset".into(), vec![], Role::Operator),
        ("DELETE", "api/blueprints/shop".into(), vec![], Role::Operator),
        ("PUT", "api/kv/user/a".into(), b"1".to_vec(), Role::Operator),
        ("POST", "api/kv/user/a".into(), b"1".to_vec(), Role::Operator),
        ("DELETE", "api/kv/user/a".into(), vec![], Role::Operator),
        ("POST", "api/artifacts/org.example/echo/1.0.0".into(), b"\x7fELF".to_vec(), Role::Operator),
        ("PUT", "api/artifacts/org.example/echo/1.0.0".into(), b"\x7fELF".to_vec(), Role::Operator),
        ("POST", "api/keys".into(), br#"{"name":"x","role":"viewer"}"#.to_vec(), Role::Admin),
        ("GET", "api/keys".into(), vec![], Role::Admin),
        ("DELETE", format!("api/keys/{victim_id}"), vec![], Role::Admin),
        ("POST", "api/debug/faults".into(), br#"{"rules":[]}"#.to_vec(), Role::Admin),
        ("PUT", "api/debug/faults".into(), br#"{"rules":[]}"#.to_vec(), Role::Admin),
        ("DELETE", "api/debug/faults".into(), vec![], Role::Admin),
    ]
}

#[test]
fn every_role_against_every_mutating_route() {
    for role in Role::ALL {
        let (auth, fake) = (Auth::new(config(true)), Fake::default());
        let (_, key) = create_key(&auth, &fake, role.as_str());
        let (victim, _) = create_key(&auth, &fake, "viewer");
        for (method, path, body, needed) in mutating_routes(&victim) {
            let answer = call(&auth, &fake, method, &path, Some(&key), &body);
            if role >= needed {
                assert!(
                    ![401, 403, 404, 405].contains(&answer.status),
                    "{} on {method} /{path}: {} {}",
                    role.as_str(),
                    answer.status,
                    answer.body
                );
            } else {
                assert_eq!(answer.status, 403, "{} on {method} /{path}: {}", role.as_str(), answer.body);
                assert_eq!(answer.body["error"], "forbidden");
                assert!(answer.body["detail"].as_str().unwrap().contains(needed.as_str()), "{}", answer.body);
            }
        }
    }
}

#[test]
fn refused_writes_store_nothing() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (_, viewer) = create_key(&auth, &fake, "viewer");
    let before = fake.kv.lock().unwrap().clone();
    for (method, path, body, _) in mutating_routes("0123456789abcdef") {
        let refused = call(&auth, &fake, method, &path, Some(&viewer), &body);
        assert_eq!(refused.status, 403, "{method} /{path}: {}", refused.body);
        assert_eq!(call(&auth, &fake, method, &path, None, &body).status, 401);
    }
    assert_eq!(*fake.kv.lock().unwrap(), before);
}

#[test]
fn viewers_read_everything_but_keys() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (_, viewer) = create_key(&auth, &fake, "viewer");
    assert_eq!(call(&auth, &fake, "PUT", "api/kv/user/a", Some(BOOTSTRAP), b"1").status, 200);
    for path in ["api/health", "api/status", "api/nodes", "api/slices", "api/blueprints", "api/kv/user/a", "api/kv"] {
        let answer = call(&auth, &fake, "GET", path, Some(&viewer), b"");
        assert_eq!(answer.status, 200, "GET /{path}: {}", answer.body);
    }
    assert_eq!(call(&auth, &fake, "GET", "api/keys", Some(&viewer), b"").status, 403);
}

#[test]
fn missing_malformed_and_wrong_keys_are_401_with_a_challenge() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (id, key) = create_key(&auth, &fake, "admin");
    let wrong_secret = format!("aek_{id}_{}", "0".repeat(64));
    let long = "x".repeat(4096);
    let unknown = format!("aek_{}_{}", "f".repeat(16), &key[21..]);
    let mut tries: Vec<Request> = [None, Some("nonsense"), Some(wrong_secret.as_str()), Some(&long), Some(&unknown)]
        .into_iter()
        .map(|k| request("GET", "api/status", k, b""))
        .collect();
    let mut basic = request("GET", "api/status", None, b"");
    basic.headers.push(("authorization".into(), format!("Basic {key}")));
    tries.push(basic);
    for req in tries {
        let answer = serve(&auth, &fake, &req);
        assert_eq!(answer.status, 401, "{:?}: {}", req.header("authorization"), answer.body);
        assert_eq!(answer.body["error"], "unauthorized");
        assert!(answer.headers.iter().any(|(n, v)| n == "WWW-Authenticate" && v.starts_with("Bearer")));
    }
    assert_eq!(call(&auth, &fake, "GET", "api/status", Some(&key), b"").status, 200);
    let mut lower = request("GET", "api/status", None, b"");
    lower.headers.push(("Authorization".into(), format!("bearer {key}")));
    assert_eq!(serve(&auth, &fake, &lower).status, 200);
    // Two keys, even a good one first, are refused before either is looked at, and so before any body.
    let mut twice = request("GET", "api/status", Some(&key), b"");
    twice.headers.push(("AUTHORIZATION".into(), "Bearer nonsense".into()));
    let answer = serve(&auth, &fake, &twice);
    assert_eq!((answer.status, answer.body["error"].as_str()), (400, Some("bad_request")), "{}", answer.body);
    assert_eq!(screen(&auth, &twice).map(|r| r.status), Some(400));
}

#[test]
fn revoked_keys_are_refused_and_listing_never_shows_hashes() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (id, key) = create_key(&auth, &fake, "operator");
    assert_eq!(call(&auth, &fake, "PUT", "api/kv/user/x", Some(&key), b"1").status, 200);
    let listed = call(&auth, &fake, "GET", "api/keys", Some(BOOTSTRAP), b"");
    assert_eq!(listed.body["count"], 1);
    assert_eq!(
        listed.body["keys"][0],
        json!({"id": id, "name": "operator key", "role": "operator", "created": listed.body["keys"][0]["created"]})
    );
    let text = listed.body.to_string();
    assert!(!text.contains(&key[21..]) && !text.contains("hash"), "{text}");
    let stored = fake.kv.lock().unwrap().get(&format!("keys/{id}")).unwrap().0.clone();
    assert!(!String::from_utf8_lossy(&stored).contains(&key[21..]), "the key itself is stored");
    assert_eq!(call(&auth, &fake, "DELETE", &format!("api/keys/{id}"), Some(BOOTSTRAP), b"").status, 200);
    assert_eq!(call(&auth, &fake, "PUT", "api/kv/user/x", Some(&key), b"1").status, 401);
    assert_eq!(call(&auth, &fake, "DELETE", &format!("api/keys/{id}"), Some(BOOTSTRAP), b"").status, 404);
    assert_eq!(call(&auth, &fake, "DELETE", "api/keys/not-hex", Some(BOOTSTRAP), b"").status, 400);
}

#[test]
fn key_creation_validates_its_body() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    for body in [r#"{"name":"x","role":"root"}"#, r#"{"name":"","role":"viewer"}"#, r#"{"role":"viewer"}"#, "nope"] {
        let answer = call(&auth, &fake, "POST", "api/keys", Some(BOOTSTRAP), body.as_bytes());
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
    }
    assert!(fake.kv.lock().unwrap().is_empty());
}

#[test]
fn a_key_hashed_under_another_cluster_secret_is_refused() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (_, key) = create_key(&auth, &fake, "admin");
    let other = Auth::new(AuthConfig { secret: b"another secret".to_vec(), ..config(true) });
    assert_eq!(call(&other, &fake, "GET", "api/status", Some(&key), b"").status, 401);
}

#[test]
fn health_probes_are_public_and_the_rest_is_not() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    for path in ["health/live", "health/ready"] {
        assert_ne!(call(&auth, &fake, "GET", path, None, b"").status, 401, "{path}");
    }
    for path in ["api/health", "api/nope", "", "health/other"] {
        assert_eq!(call(&auth, &fake, "GET", path, None, b"").status, 401, "{path}");
    }
}

#[test]
fn unknown_routes_need_admin() {
    assert_eq!(access_for("GET", "api/something-new"), Access::Role(Role::Admin));
    assert_eq!(access_for("PATCH", "api/kv/user/a"), Access::Role(Role::Admin));
    assert_eq!(access_for("POST", "api/artifacts/a/b"), Access::Role(Role::Admin));
    assert_eq!(access_for("GET", "api/kv/user/a/b"), Access::Role(Role::Viewer));
    assert_eq!(access_for("HEAD", "api/status"), Access::Role(Role::Viewer));
    assert_eq!(access_for("GET", "api/blueprints"), Access::Role(Role::Viewer));
    assert_eq!(access_for("DELETE", "api/keys/a/b"), Access::Role(Role::Admin));
    assert_eq!(access_for("GET", "health/live"), Access::Public);
    assert_eq!(access_for("POST", "health/live"), Access::Role(Role::Admin));
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (_, operator) = create_key(&auth, &fake, "operator");
    assert_eq!(call(&auth, &fake, "GET", "api/something-new", Some(&operator), b"").status, 403);
}

#[test]
fn without_authentication_no_key_is_needed() {
    let (auth, fake) = (Auth::new(AuthConfig { bootstrap_key: None, ..config(false) }), Fake::default());
    assert_eq!(call(&auth, &fake, "PUT", "api/kv/user/a", None, b"1").status, 200);
    assert_eq!(call(&auth, &fake, "GET", "api/status", Some("garbage"), b"").status, 200);
}

fn with_headers(method: &str, path: &str, headers: &[(&str, &str)]) -> Request {
    let mut req = request(method, path, None, b"1");
    for (name, value) in headers {
        req.headers.retain(|(n, _)| n != name);
        req.headers.push((name.to_string(), value.to_string()));
    }
    req
}

#[test]
fn cross_origin_state_changes_are_refused() {
    let (auth, fake) = (Auth::new(AuthConfig { bootstrap_key: None, ..config(false) }), Fake::default());
    let evil = with_headers("PUT", "api/kv/user/a", &[("origin", "https://evil.example")]);
    let refused = serve(&auth, &fake, &evil);
    assert_eq!((refused.status, refused.body["error"].clone()), (403, json!("cross_origin")));
    assert!(refused.headers.is_empty(), "no CORS for unlisted origins: {:?}", refused.headers);
    let null = with_headers("POST", "api/blueprints", &[("origin", "null")]);
    assert_eq!(serve(&auth, &fake, &null).status, 403);
    let fetch = with_headers("DELETE", "api/kv/user/a", &[("sec-fetch-site", "cross-site")]);
    assert_eq!(serve(&auth, &fake, &fetch).status, 403);
    assert!(fake.kv.lock().unwrap().is_empty());
    let same = with_headers("PUT", "api/kv/user/a", &[("sec-fetch-site", "same-origin")]);
    assert_eq!(serve(&auth, &fake, &same).status, 200);
    let allowed = with_headers("PUT", "api/kv/user/a", &[("origin", "https://console.example")]);
    let answer = serve(&auth, &fake, &allowed);
    assert_eq!(answer.status, 200);
    assert!(answer.headers.contains(&("Access-Control-Allow-Origin".into(), "https://console.example".into())));
    let read = with_headers("GET", "api/status", &[("origin", "https://evil.example")]);
    let answer = serve(&auth, &fake, &read);
    assert_eq!(answer.status, 200);
    assert!(answer.headers.is_empty(), "a read from an unlisted origin gets no CORS header");
}

#[test]
fn preflights_are_answered_for_listed_origins_only() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let ok = serve(&auth, &fake, &with_headers("OPTIONS", "api/kv/user/a", &[("origin", "https://console.example")]));
    assert_eq!(ok.status, 200);
    assert!(ok.headers.iter().any(|(n, v)| n == "Access-Control-Allow-Headers" && v.contains("Authorization")));
    let no = serve(&auth, &fake, &with_headers("OPTIONS", "api/kv/user/a", &[("origin", "https://evil.example")]));
    assert_ne!(no.status, 200);
    assert!(!no.headers.iter().any(|(n, _)| n.starts_with("Access-Control")));
    let unconfigured = Auth::new(AuthConfig { allowed_origins: vec![], ..config(false) });
    let none = serve(
        &unconfigured,
        &fake,
        &with_headers("OPTIONS", "api/kv/user/a", &[("origin", "https://console.example")]),
    );
    assert!(!none.headers.iter().any(|(n, _)| n.starts_with("Access-Control")));
}

#[test]
fn loopback_binds_check_the_host_header() {
    let (auth, fake) = (Auth::new(AuthConfig { bootstrap_key: None, ..config(false) }), Fake::default());
    for host in ["localhost", "localhost:8080", "127.0.0.1:8080", "127.0.0.7", "[::1]:8080", "aether.internal:8080"] {
        let answer = serve(&auth, &fake, &with_headers("GET", "api/status", &[("host", host)]));
        assert_eq!(answer.status, 200, "{host}: {}", answer.body);
    }
    for host in ["evil.example", "evil.example:8080", "localhost.evil.example", "10.0.0.1:8080", "[::2]"] {
        let answer = serve(&auth, &fake, &with_headers("GET", "api/status", &[("host", host)]));
        assert_eq!(answer.status, 421, "{host}: {}", answer.body);
    }
    let rebound =
        with_headers("OPTIONS", "api/kv/user/a", &[("host", "evil.example"), ("origin", "https://console.example")]);
    assert_eq!(serve(&auth, &fake, &rebound).status, 421, "a preflight is no way around the Host check");
    let wide = Auth::new(AuthConfig { listen: "0.0.0.0:8080".parse().unwrap(), bootstrap_key: None, ..config(false) });
    assert_eq!(serve(&wide, &fake, &with_headers("GET", "api/status", &[("host", "evil.example")])).status, 200);
}

#[test]
fn the_kv_api_writes_only_user_keys_and_never_reads_key_records() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let (id, _) = create_key(&auth, &fake, "viewer");
    let before = fake.kv.lock().unwrap().clone();
    for path in
        ["api/kv/routes/GET/x", "api/kv/blueprints/shop", "api/kv/slices/n1/g:a:1.0.0", "api/kv/keys/0123456789abcdef"]
    {
        for method in ["PUT", "DELETE"] {
            let answer = call(&auth, &fake, method, path, Some(BOOTSTRAP), b"{}");
            assert_eq!(answer.status, 403, "{method} /{path}: {}", answer.body);
            assert!(answer.body["detail"].as_str().unwrap().contains("only user/"), "{}", answer.body);
        }
    }
    assert_eq!(*fake.kv.lock().unwrap(), before);
    let read = call(&auth, &fake, "GET", &format!("api/kv/keys/{id}"), Some(BOOTSTRAP), b"");
    assert_eq!(read.status, 403);
    assert_eq!(call(&auth, &fake, "GET", "api/kv?prefix=keys/", Some(BOOTSTRAP), b"").status, 403);
    let everything = call(&auth, &fake, "GET", "api/kv", Some(BOOTSTRAP), b"");
    assert_eq!(everything.status, 200);
    assert_eq!(everything.body["count"], 0, "{}", everything.body);
    let partial = call(&auth, &fake, "GET", "api/kv?prefix=k", Some(BOOTSTRAP), b"");
    assert_eq!(partial.body["count"], 0, "{}", partial.body);
}

#[test]
fn the_head_screen_refuses_strangers_before_their_body_and_lets_key_holders_on() {
    let auth = Auth::new(config(true));
    let upload = "api/artifacts/org.example/echo/1.0.0";
    let refused = screen(&auth, &request("POST", upload, None, b"")).expect("no key: refused from the head");
    assert_eq!(refused.status, 401);
    assert!(refused.headers.iter().any(|(n, _)| n == "WWW-Authenticate"));
    let mut basic = request("POST", upload, None, b"");
    basic.headers.push(("authorization".into(), "Basic YTpi".into()));
    assert_eq!(screen(&auth, &basic).map(|r| r.status), Some(401));
    // A bearer token of any kind goes on: the key itself is checked with the request, against the store.
    assert!(screen(&auth, &request("POST", upload, Some("aek_0123456789abcdef_00"), b"")).is_none());
    assert!(screen(&auth, &request("GET", "health/ready", None, b"")).is_none());
    let mut foreign = request("POST", upload, Some(BOOTSTRAP), b"");
    foreign.headers.push(("origin".into(), "https://evil.example".into()));
    assert_eq!(screen(&auth, &foreign).map(|r| r.status), Some(403));
    let mut rebound = request("POST", upload, Some(BOOTSTRAP), b"");
    rebound.headers.retain(|(n, _)| n != "host");
    rebound.headers.push(("host".into(), "evil.example".into()));
    assert_eq!(screen(&auth, &rebound).map(|r| r.status), Some(421));
    // Authentication off: only the browser checks remain.
    let open = Auth::new(AuthConfig { bootstrap_key: None, ..config(false) });
    assert!(screen(&open, &request("POST", upload, None, b"")).is_none());
}

#[test]
fn key_names_are_limited_as_sent_not_after_trimming() {
    let (auth, fake) = (Auth::new(config(true)), Fake::default());
    let post = |name: &str| {
        let body = json!({ "name": name, "role": "viewer" }).to_string();
        call(&auth, &fake, "POST", "api/keys", Some(BOOTSTRAP), body.as_bytes()).status
    };
    assert_eq!(post(&"n".repeat(64)), 201);
    assert_eq!(post(&format!("\n{}", "n".repeat(64))), 400, "65 characters as sent, a control character among them");
    assert_eq!(post(&format!(" {}", "n".repeat(64))), 400, "65 characters as sent");
    assert_eq!(post(" spaced "), 201, "surrounding spaces are trimmed");
}
