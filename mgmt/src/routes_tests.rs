//! Tests of the routes of `validate`, `blueprint_status` and `listings`, and of 405/404 answers, through
//! [`crate::api::route`] and [`crate::serve`] on a store-backed backend.

use crate::test_backend::StoreBackend;
use serde_json::json;

const SHOP: &str = "name = \"shop\"\n[[slices]]\nartifact = \"org.example:a:1.0.0\"\ninstances = 2\n\
    [[slices]]\nartifact = \"org.example:b:1.0.0\"\ndepends_on = [\"org.example:a:1.0.0\"]\n";

fn slice(state: &str, error: Option<&str>) -> String {
    json!({"desired": "ACTIVE", "state": state, "since_ms": 7, "instance": 0, "error": error, "config": {}}).to_string()
}

#[test]
fn validate_answers_the_placement_and_stores_nothing() {
    let backend = StoreBackend::default();
    let answer = backend.call("POST", "api/blueprints/validate", SHOP);
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["valid"], json!(true));
    assert_eq!(answer.body["slices"], json!(["org.example:a:1.0.0", "org.example:b:1.0.0"]));
    let placement = &answer.body["placement"];
    assert_eq!(placement[0]["nodes"], json!(["node-1", "node-2"]), "{placement}");
    assert_eq!(placement[1]["nodes"].as_array().map(Vec::len), Some(1), "{placement}");
    let warnings = answer.body["warnings"].to_string();
    assert!(warnings.contains("node-3 is not reachable"), "{warnings}");
    assert_eq!(*backend.writes.lock().unwrap(), 0);
    assert_eq!(backend.kv_len(), 0, "nothing stored");
}

#[test]
fn validate_refuses_what_a_post_refuses_with_the_same_answer() {
    let other = "name = \"other\"\n[[slices]]\nartifact = \"org.example:a:1.0.0\"\n";
    let backend = StoreBackend::default();
    assert_eq!(backend.call("POST", "api/blueprints", other).status, 201);
    for body in ["name = \"shop\"\ncolour = 1\n", "name = \"x\"\n[[slices]]\nartifact = \"org.other:a:1.0.0\"\n"] {
        let dry = backend.call("POST", "api/blueprints/validate", body);
        let real = backend.call("POST", "api/blueprints", body);
        assert_eq!((dry.status, dry.body.clone()), (real.status, real.body), "{body}");
        assert_eq!(dry.body["error"], json!("invalid_blueprint"));
    }
    let reserved = "name = \"validate\"\n[[slices]]\nartifact = \"org.example:z:1.0.0\"\n";
    for path in ["api/blueprints", "api/blueprints/validate"] {
        let refused = backend.call("POST", path, reserved);
        assert_eq!(refused.status, 400, "{}", refused.body);
        assert_eq!((refused.body["line"].clone(), refused.body["field"].clone()), (json!(1), json!("name")));
    }
    assert_eq!(backend.call("GET", "api/blueprints/validate", "").status, 405);
    let conflict = backend.call("POST", "api/blueprints/validate", SHOP);
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    let not_text = crate::api::route(
        &backend,
        &crate::Request {
            method: "POST".into(),
            path: "api/blueprints/validate".into(),
            body: vec![0xff, 0xfe],
            ..crate::Request::default()
        },
    );
    assert_eq!(not_text.status, 400);
}

#[test]
fn blueprint_status_counts_instances_and_names_the_state() {
    let backend = StoreBackend::default();
    assert_eq!(backend.call("POST", "api/blueprints", SHOP).status, 201);
    let deploying = backend.call("GET", "api/blueprints/shop/status", "");
    assert_eq!(deploying.body["state"], json!("deploying"), "{}", deploying.body);
    backend.put("slices/node-1/org.example:a:1.0.0", &slice("ACTIVE", None));
    backend.put("slices/node-2/org.example:a:1.0.0", &slice("ACTIVE", None));
    backend.put("slices/node-1/org.example:b:1.0.0", &slice("FAILED", Some("boom")));
    let failed = backend.call("GET", "api/blueprints/shop/status", "");
    assert_eq!(failed.status, 200);
    assert_eq!(failed.body["state"], json!("failed"), "{}", failed.body);
    let b = &failed.body["slices"][1];
    assert_eq!((b["failed"].clone(), b["reason"].clone()), (json!(1), json!("boom")));
    let first = json!({"node": "node-1", "state": "ACTIVE", "since": 7, "reachable": true, "copies": 1, "running": 1});
    assert_eq!(failed.body["slices"][0]["instances"][0], first);
    backend.put("slices/node-1/org.example:b:1.0.0", &slice("ACTIVE", None));
    assert_eq!(backend.call("GET", "api/blueprints/shop/status", "").body["state"], json!("running"));
    // node-3 is unreachable from here: its instance does not count until the leader places it again.
    backend.remove("slices/node-2/org.example:a:1.0.0");
    backend.put("slices/node-3/org.example:a:1.0.0", &slice("ACTIVE", None));
    let degraded = backend.call("GET", "api/blueprints/shop/status", "");
    assert_eq!(degraded.body["state"], json!("degraded"), "{}", degraded.body);
    assert_eq!(degraded.body["slices"][0]["active"], json!(1));
    assert_eq!(degraded.body["slices"][0]["instances"][1]["reachable"], json!(false));
    assert_eq!(backend.call("GET", "api/blueprints/nope/status", "").status, 404);
    assert_eq!(backend.call("GET", "api/blueprints/no%20pe/status", "").status, 400);
}

#[test]
fn routes_list_the_serving_slice_method_and_its_instances() {
    let backend = StoreBackend::with(&[
        ("routes/GET/echo/{msg}", r#"{"artifact":"org.example:echo:1.0.0","method":"echo"}"#),
        ("routes/POST/broken", "not json"),
    ]);
    backend.put("slices/node-2/org.example:echo:1.0.0", &slice("ACTIVE", None));
    let answer = backend.call("GET", "api/routes", "");
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"routes": [{"method": "GET", "path": "/echo/{msg}", "artifact": "org.example:echo:1.0.0",
            "slice_method": "echo", "instances": [{"node": "node-2", "state": "ACTIVE"}]}]})
    );
    let artifacts = backend.call("GET", "api/artifacts", "");
    assert_eq!(artifacts.body["local_only"][0]["bytes"], json!(9), "a library the catalog does not know");
}

#[test]
fn a_wrong_method_is_405_with_allow_and_an_unknown_path_404() {
    let backend = StoreBackend::default();
    let auth = crate::Auth::new(crate::AuthConfig {
        enabled: false,
        bootstrap_key: None,
        secret: b"s".to_vec(),
        allowed_origins: Vec::new(),
        host_names: Vec::new(),
        listen: "127.0.0.1:8080".parse().unwrap(),
    });
    let serve = |method: &str, path: &str| {
        let request = crate::Request { method: method.into(), path: path.into(), ..crate::Request::default() };
        crate::serve(&auth, &backend, &request)
    };
    for (method, path, allow) in [
        ("DELETE", "api/health", "GET, HEAD"),
        ("POST", "api/routes", "GET, HEAD"),
        ("PATCH", "api/kv/user/a", "GET, HEAD, POST, PUT, DELETE"),
        ("PUT", "api/blueprints/shop", "GET, HEAD, DELETE"),
        ("GET", "api/blueprints/shop/reset", "POST"),
        ("GET", "api/keys/0123456789abcdef", "DELETE"),
        ("DELETE", "api/openapi.yaml", "GET, HEAD"),
        ("DELETE", "api/blueprints/validate", "POST"),
    ] {
        let answer = serve(method, path);
        assert_eq!(answer.status, 405, "{method} {path}: {}", answer.body);
        let header = answer.headers.iter().find(|(n, _)| n == "Allow").map(|(_, v)| v.as_str());
        assert_eq!(header, Some(allow), "{method} {path}");
        assert_eq!(answer.body["error"], json!("method_not_allowed"));
    }
    for path in ["api/blueprints/a/b/c", "api/nope", "api", "", "api/kv/user/a/../b/x/y/z/../../.."] {
        let answer = serve("PATCH", path);
        assert!(matches!(answer.status, 404 | 400 | 405), "{path}: {}", answer.status);
    }
    assert_eq!(serve("GET", "api/blueprints/a/b/c").status, 404);
    assert_eq!(serve("GET", "api/nope").status, 404);
    assert_eq!(serve("GET", "api/openapi.yaml").status, 200);
}

#[test]
fn stale_must_be_a_boolean() {
    let backend = StoreBackend::default();
    assert_eq!(backend.call_query("api/kv", "stale", "yes").status, 400);
    assert_eq!(backend.call_query("api/kv", "stale", "true").status, 200);
    assert_eq!(backend.call_query("api/kv", "stale", "0").status, 200);
}

#[test]
fn dry_runs_past_the_node_limit_are_refused_before_any_work() {
    let backend = StoreBackend::default();
    let held: Vec<_> = (0..crate::DRY_RUNS_MAX).map(|_| backend.dry_runs.take().unwrap()).collect();
    let refused = backend.call("POST", "api/blueprints/validate", SHOP);
    assert_eq!((refused.status, refused.body["error"].clone()), (503, json!("unavailable")), "{}", refused.body);
    drop(held);
    assert_eq!(backend.call("POST", "api/blueprints/validate", SHOP).status, 200);
}
