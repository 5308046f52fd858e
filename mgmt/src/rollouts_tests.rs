//! Tests of the rollout routes (`rollouts`) through [`crate::api::route`] on a store-backed backend: body
//! parsing and bounds, the owner blueprint and its 409s, the id default, the operator's steps and their races.

use crate::test_backend::StoreBackend;
use control::records::{BlueprintRecord, Record};
use control::rollout::{Phase, RolloutRecord};
use serde_json::{json, Value};

/// `shop` deploys `org.example:orders` and `org.example:inventory` at 1.0.0.
const SHOP: &str = "name = \"shop\"\n[[slices]]\nartifact = \"org.example:orders:1.0.0\"\n\
    [[slices]]\nartifact = \"org.example:inventory:1.0.0\"\n";

fn blueprint(backend: &StoreBackend, toml: &str) {
    let parsed = control::blueprint::parse(toml, &|_| true).unwrap();
    let record = BlueprintRecord { toml: toml.to_owned(), blueprint: parsed.clone() };
    backend.put(&format!("blueprints/{}", parsed.name), &String::from_utf8(record.encode()).unwrap());
}

fn shop() -> StoreBackend {
    let backend = StoreBackend::default();
    blueprint(&backend, SHOP);
    backend
}

fn start(backend: &StoreBackend, body: Value) -> crate::Response {
    backend.call("POST", "api/rollouts", &body.to_string())
}

fn stored(backend: &StoreBackend, id: &str) -> RolloutRecord {
    let entry = backend.kv.lock().unwrap().list(&format!("updates/{id}")).next().map(|e| e.value().to_vec());
    RolloutRecord::decode(&entry.unwrap()).unwrap()
}

/// Makes rollout `id` SHIFTING, as the leader would once the new versions serve.
fn shifting(backend: &StoreBackend, id: &str) {
    let record = RolloutRecord { state: Phase::Shifting, ..stored(backend, id) };
    backend.put(&format!("updates/{id}"), &String::from_utf8(record.encode()).unwrap());
}

#[test]
fn a_rollout_starts_from_the_deployed_version_with_a_default_id_and_location() {
    let backend = shop();
    let answer = start(&backend, json!({"artifact": "org.example:orders", "version": "2.0.0"}));
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["id"], json!("orders-2.0.0"));
    assert_eq!(answer.body["state"], json!("DEPLOYING"));
    assert_eq!(answer.body["new_share"], json!(0));
    assert_eq!(answer.body["blueprint"], json!("shop"));
    assert_eq!(answer.body["strategy"], json!("rolling"));
    assert_eq!(answer.body["artifacts"], json!([{"base": "org.example:orders", "from": "1.0.0", "to": "2.0.0"}]));
    assert!(answer.headers.contains(&("Location".into(), "/api/rollouts/orders-2.0.0".into())), "{:?}", answer.headers);
    assert_eq!(stored(&backend, "orders-2.0.0").artifacts[0].from, "1.0.0");
    let shown = backend.call("GET", "api/rollouts/orders-2.0.0", "");
    assert_eq!((shown.status, shown.body.clone()), (200, answer.body.clone()));
}

#[test]
fn the_default_id_takes_the_next_free_suffix() {
    let backend = shop();
    let body = json!({"artifact": "org.example:orders", "version": "2.0.0"});
    assert_eq!(start(&backend, body.clone()).status, 201);
    let busy = start(&backend, body.clone());
    assert_eq!(busy.status, 409, "an active rollout moves the base: {}", busy.body);
    assert!(busy.body["detail"].as_str().unwrap().contains("orders-2.0.0"), "{}", busy.body);
    shifting(&backend, "orders-2.0.0");
    assert_eq!(backend.call("POST", "api/rollouts/orders-2.0.0/rollback", "").status, 200);
    let record = RolloutRecord { state: Phase::RolledBack, ..stored(&backend, "orders-2.0.0") };
    backend.put("updates/orders-2.0.0", &String::from_utf8(record.encode()).unwrap());
    let second = start(&backend, body);
    assert_eq!(second.status, 201, "{}", second.body);
    assert_eq!(second.body["id"], json!("orders-2.0.0-2"));
    let named = start(&backend, json!({"artifact": "org.example:inventory", "version": "2.0.0", "id": "orders-2.0.0"}));
    assert_eq!(named.status, 409, "a given id that exists: {}", named.body);
    let bad = start(&backend, json!({"artifact": "org.example:inventory", "version": "2.0.0", "id": "a/b"}));
    assert_eq!(bad.status, 400, "{}", bad.body);
}

#[test]
fn several_artifacts_move_together_with_the_strategy_defaults() {
    let backend = shop();
    let body = json!({
        "artifacts": [
            {"artifact": "org.example:orders", "version": "2.0.0"},
            {"artifact": "org.example:inventory", "version": "1.1.0"},
        ],
        "id": "shop-2",
        "strategy": "canary",
        "thresholds": {"max_error_rate": 0.05, "max_p99_ms": 500},
    });
    let answer = start(&backend, body);
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert_eq!(answer.body["id"], json!("shop-2"));
    assert_eq!(answer.body["approval"], json!("auto"), "a canary is automatic unless told");
    assert_eq!(answer.body["stages"][0], json!({"percent": 5, "hold_ms": 120000}));
    assert_eq!(answer.body["thresholds"]["window_ms"], json!(30000));
    assert_eq!(answer.body["artifacts"][1]["to"], json!("1.1.0"));
    let listed = backend.call("GET", "api/rollouts", "");
    assert_eq!(listed.body["rollouts"].as_array().map(Vec::len), Some(1), "{}", listed.body);
}

#[test]
fn bodies_are_bounded_and_strict() {
    let backend = shop();
    let big =
        format!("{{\"artifact\": \"org.example:orders\", \"version\": \"2.0.0\", \"id\": \"{}\"}}", "a".repeat(17_000));
    assert_eq!(backend.call("POST", "api/rollouts", &big).status, 413);
    for body in [
        json!({"artifact": "org.example:orders", "version": "2.0.0", "colour": "red"}),
        json!({"artifact": "org.example:orders"}),
        json!({"version": "2.0.0"}),
        json!({}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "artifacts": []}),
        json!({"artifacts": []}),
        json!({"artifacts": [{"artifact": "org.example:orders", "version": "2.0.0", "x": 1}]}),
        json!({"artifacts": [{"artifact": "org.example:orders", "version": "2.0.0"},
                             {"artifact": "org.example:orders", "version": "3.0.0"}]}),
        json!({"artifact": "org.example:orders:2.0.0", "version": "2.0.0"}),
        json!({"artifact": "org.example:orders", "version": "two"}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "strategy": "big-bang"}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "stages": [{"percent": 300}]}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "stages": [{"percent": 50}, {"percent": 10}]}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "stages": []}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "thresholds": {"max_error_rate": 2.0}}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "thresholds": {"p50": 1}}),
        json!({"artifact": "org.example:orders", "version": "2.0.0", "instances": -1}),
    ] {
        let answer = start(&backend, body.clone());
        assert_eq!(answer.status, 400, "{body}: {}", answer.body);
        assert!(answer.body["detail"].is_string(), "{}", answer.body);
    }
    let nine: Vec<Value> =
        (0..9).map(|i| json!({"artifact": format!("org.example:a{i}"), "version": "2.0.0"})).collect();
    assert_eq!(start(&backend, json!({ "artifacts": nine })).status, 400);
    assert_eq!(backend.call("POST", "api/rollouts", "not json").status, 400);
    assert!(backend.kv.lock().unwrap().list("updates/").next().is_none(), "nothing refused was stored");
}

#[test]
fn the_owner_must_be_one_blueprint_at_one_version_and_the_new_version_known() {
    let backend = shop();
    let other = "name = \"other\"\n[[slices]]\nartifact = \"org.example:pricing:1.0.0\"\n";
    blueprint(&backend, other);
    let cases = [
        (json!({"artifact": "org.example:nowhere", "version": "2.0.0"}), 409, "no blueprint deploys"),
        (json!({"artifact": "org.example:orders", "version": "1.0.0"}), 409, "already"),
        (
            json!({"artifacts": [{"artifact": "org.example:orders", "version": "2.0.0"},
                                 {"artifact": "org.example:pricing", "version": "2.0.0"}]}),
            409,
            "one blueprint",
        ),
    ];
    for (body, status, words) in cases {
        let answer = start(&backend, body.clone());
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
        assert!(answer.body["detail"].as_str().unwrap().contains(words), "{}", answer.body);
    }
    let two_versions = "name = \"twice\"\n[[slices]]\nartifact = \"org.other:x:1.0.0\"\n\
        [[slices]]\nartifact = \"org.other:x:1.1.0\"\n";
    blueprint(&backend, two_versions);
    let answer = start(&backend, json!({"artifact": "org.other:x", "version": "2.0.0"}));
    assert_eq!(answer.status, 409, "{}", answer.body);
    assert!(answer.body["detail"].as_str().unwrap().contains("more than one version"), "{}", answer.body);
    blueprint(&backend, "name = \"ext\"\n[[slices]]\nartifact = \"org.other:y:1.0.0\"\n");
    let missing = start(&backend, json!({"artifact": "org.other:y", "version": "2.0.0"}));
    assert_eq!(missing.status, 404, "the test repository knows only org.example: {}", missing.body);
    assert!(backend.kv.lock().unwrap().list("updates/").next().is_none(), "nothing refused was stored");
}

#[test]
fn operator_steps_apply_to_the_record_read_and_refusals_are_409() {
    let backend = shop();
    assert_eq!(start(&backend, json!({"artifact": "org.example:orders", "version": "2.0.0"})).status, 201);
    let path = |action: &str| format!("api/rollouts/orders-2.0.0/{action}");
    let refused = backend.call("POST", &path("promote"), "");
    assert_eq!(refused.status, 409, "a deploying rollout is not promoted: {}", refused.body);
    assert_eq!(backend.call("POST", &path("complete"), "").status, 409);
    let ratio = backend.call("POST", &path("ratio"), r#"{"new": 1, "old": 3}"#);
    assert_eq!(ratio.status, 200, "{}", ratio.body);
    assert_eq!(ratio.body["ratio"], json!({"new": 25, "old": 75}));
    assert_eq!(ratio.body["new_share"], json!(0), "no traffic before the new versions serve");
    for bad in
        ["", r#"{"new": 0, "old": 0}"#, r#"{"new": -1, "old": 1}"#, r#"{"new": 1}"#, r#"{"new": 1, "old": 1, "x": 1}"#]
    {
        assert_eq!(backend.call("POST", &path("ratio"), bad).status, 400, "{bad}");
    }
    shifting(&backend, "orders-2.0.0");
    assert_eq!(backend.call("POST", &path("promote"), r#"{"x": 1}"#).status, 400);
    let promoted = backend.call("POST", &path("promote"), "{}");
    assert_eq!(promoted.status, 200, "{}", promoted.body);
    assert_eq!((promoted.body["stage"].clone(), promoted.body["new_share"].clone()), (json!(1), json!(50)));
    let long = json!({"reason": "x".repeat(513)}).to_string();
    assert_eq!(backend.call("POST", &path("rollback"), &long).status, 400);
    let escape = r#"{"reason": "x\u001b[2J\r\nINJECTED"}"#;
    assert_eq!(backend.call("POST", &path("rollback"), escape).status, 400, "control characters in a reason");
    let back = backend.call("POST", &path("rollback"), r#"{"reason": "errors"}"#);
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!((back.body["state"].clone(), back.body["reason"].clone()), (json!("ROLLING_BACK"), json!("errors")));
    let again = backend.call("POST", &path("rollback"), "");
    assert_eq!(again.status, 409, "{}", again.body);
    assert_eq!(backend.call("POST", "api/rollouts/nope/promote", "").status, 404);
    assert_eq!(backend.call("GET", "api/rollouts/nope", "").status, 404);
    assert_eq!(backend.call("GET", "api/rollouts/..", "").status, 400);
    assert_eq!(backend.call("POST", &path("restart"), "").status, 404);
    assert_eq!(backend.call("DELETE", "api/rollouts/orders-2.0.0", "").status, 405);
}

#[test]
fn a_rollback_without_a_reason_says_an_operator_did_it() {
    let backend = shop();
    assert_eq!(start(&backend, json!({"artifact": "org.example:orders", "version": "2.0.0"})).status, 201);
    let back = backend.call("POST", "api/rollouts/orders-2.0.0/rollback", "");
    assert_eq!(back.status, 200, "{}", back.body);
    assert_eq!(back.body["reason"], json!("rolled back by an operator"));
}

/// A backend on which the leader writes rollout `racing` just before the API's own write to it lands.
struct Racing {
    store: StoreBackend,
    racing: &'static str,
}

impl crate::Backend for Racing {
    fn cluster_view(&self) -> Result<crate::ClusterView, crate::ApiError> {
        self.store.cluster_view()
    }
    fn status(&self) -> Result<crate::NodeStatus, crate::ApiError> {
        self.store.status()
    }
    fn kv_write(&self, command: kvstore::Command) -> Result<u64, crate::ApiError> {
        let key = format!("updates/{}", self.racing);
        if command.key().to_string() == key {
            let exists = self.store.kv.lock().unwrap().list(&key).next().is_some();
            if exists {
                shifting(&self.store, self.racing);
            } else {
                self.store.put(&key, "{}");
            }
        }
        self.store.kv_write(command)
    }
    fn kv_get(&self, key: &kvstore::AetherKey, stale: bool) -> Result<Option<crate::KvEntry>, crate::ApiError> {
        self.store.kv_get(key, stale)
    }
    fn kv_list(&self, prefix: &str, stale: bool) -> Result<Vec<crate::KvEntry>, crate::ApiError> {
        self.store.kv_list(prefix, stale)
    }
    fn artifact_known(&self, artifact: &kvstore::Artifact) -> bool {
        self.store.artifact_known(artifact)
    }
    fn set_faults(&self, rules: Vec<crate::FaultSpec>) -> Result<(), crate::ApiError> {
        self.store.set_faults(rules)
    }
}

#[test]
fn a_step_or_a_start_that_loses_a_race_is_a_409_and_changes_nothing() {
    let backend = shop();
    assert_eq!(start(&backend, json!({"artifact": "org.example:orders", "version": "2.0.0"})).status, 201);
    let racing = Racing { store: backend, racing: "orders-2.0.0" };
    let request = |path: &str, body: &str| crate::Request {
        method: "POST".into(),
        path: path.into(),
        body: body.into(),
        ..crate::Request::default()
    };
    let lost = crate::api::route(&racing, &request("api/rollouts/orders-2.0.0/rollback", ""));
    assert_eq!(lost.status, 409, "{}", lost.body);
    assert_eq!(lost.body["detail"], json!("the rollout changed meanwhile; try again"));
    assert_eq!(stored(&racing.store, "orders-2.0.0").state, Phase::Shifting, "the leader's write stands");
    let racing = Racing { store: shop(), racing: "orders-2.0.0" };
    let body = json!({"artifact": "org.example:orders", "version": "2.0.0"}).to_string();
    let created = crate::api::route(&racing, &request("api/rollouts", &body));
    assert_eq!(created.status, 409, "the id was taken meanwhile: {}", created.body);
}

#[test]
fn an_unreadable_record_is_listed_as_such_and_the_list_is_ordered() {
    let backend = shop();
    assert_eq!(start(&backend, json!({"artifact": "org.example:orders", "version": "2.0.0", "id": "b"})).status, 201);
    assert_eq!(
        start(&backend, json!({"artifact": "org.example:inventory", "version": "2.0.0", "id": "a"})).status,
        201
    );
    backend.put("updates/broken", "{\"artifacts\": 7}");
    let listed = backend.call("GET", "api/rollouts", "");
    let ids: Vec<&str> = listed.body["rollouts"].as_array().unwrap().iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 3, "{}", listed.body);
    assert_eq!(ids[2], "broken", "{}", listed.body);
    assert_eq!(listed.body["rollouts"][2]["state"], json!("UNREADABLE"));
    assert!(listed.body["rollouts"][2]["error"].is_string());
    assert_eq!(backend.call("POST", "api/rollouts/broken/promote", "").status, 409);
}

#[test]
fn starting_and_steering_is_for_operators_reading_for_viewers() {
    use crate::{access_for, Access, Role};
    assert_eq!(access_for("POST", "api/rollouts"), Access::Role(Role::Operator));
    for action in ["ratio", "promote", "complete", "rollback"] {
        assert_eq!(access_for("POST", &format!("api/rollouts/x/{action}")), Access::Role(Role::Operator));
    }
    assert_eq!(access_for("GET", "api/rollouts"), Access::Role(Role::Viewer));
    assert_eq!(access_for("GET", "api/rollouts/x"), Access::Role(Role::Viewer));
    assert_eq!(access_for("DELETE", "api/rollouts/x"), Access::Role(Role::Admin));
}
