//! Deployment routes: `POST/GET/DELETE /api/blueprints[/{name}]`, `POST /api/blueprints/{name}/reset` and
//! `GET /api/slices`.
//!
//! A blueprint's status shows, per slice, the start failures the leader counted against it and whether it is
//! quarantined (after too many failed or crashed starts the leader stops placing it). Posting the blueprint
//! again, or resetting it (which stores the same record again, under a new version), lifts the quarantine.
//!
//! A blueprint is parsed and checked here (syntax with line numbers, unknown keys, duplicates, cycles,
//! counts, artifacts unknown to this node's repository, artifacts another blueprint already deploys, routes
//! another slice declares: see `blueprint_checks`) and stored as one record under `blueprints/{name}`; the
//! leader's deployment manager does the rest. A refused blueprint changes nothing. What is accepted but
//! doubtful (`instances` above the node count, routes that could not be checked) comes back in the answer's
//! `warnings` and as `blueprint_warning` events.
//!
//! Error answers of these routes never show a server path: the blueprint checks speak of fields and
//! coordinates, and any absolute path a backend error carries is replaced by `<server path>` on the way out.

use crate::api::Backend;
use crate::error::ApiError;
use crate::kv::KvEntry;
use crate::server::{Request, Response};
use control::records::{BlueprintRecord, Record, SliceRecord, TargetRecord};
use kvstore::{AetherKey, Artifact, Command, Name};
use serde_json::{json, Value};

/// A blueprint name the API keeps for itself: `/api/blueprints/validate` is the dry run, not a blueprint.
pub(crate) const RESERVED_NAME: &str = "validate";

pub fn route(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    route_inner(backend, req, rest).map_err(without_server_paths)
}

fn route_inner(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        (method, [RESERVED_NAME]) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{method} is not allowed on /{}", req.path)))
        }
        ("POST" | "PUT", []) => submit(backend, &req.body),
        ("GET", []) => list(backend),
        ("GET", [name]) => show(backend, name),
        ("DELETE", [name]) => delete(backend, name),
        ("POST", [name, "reset"]) => reset(backend, name),
        (method, _) => {
            Err(ApiError::new(405, "method_not_allowed", format!("{method} is not allowed on /{}", req.path)))
        }
    }
}

/// A blueprint that passed every check, and what the answer should warn about.
pub(crate) struct Checked {
    pub text: String,
    pub blueprint: control::Blueprint,
    pub warnings: Vec<String>,
}

/// Most `blueprint_warning` events one post records (the answer carries every warning).
const WARNING_EVENTS_MAX: usize = 16;

/// Every check a submitted blueprint goes through (the text, its artifacts, ownership, routes), nothing
/// stored: `POST /api/blueprints` and its dry run `POST /api/blueprints/validate` both start here.
pub(crate) fn check(backend: &dyn Backend, body: &[u8]) -> Result<Checked, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the blueprint is not UTF-8 text"))?;
    let parsed = control::blueprint::parse(text, &|a| backend.artifact_known(a)).map_err(|e| {
        let mut error = ApiError::new(400, "invalid_blueprint", e.to_string());
        error.extra = Some(json!({ "line": e.line, "field": e.field }));
        error
    })?;
    if parsed.name.as_str() == RESERVED_NAME {
        let line = text.lines().position(|l| l.trim_start().starts_with("name")).map(|i| i + 1);
        let detail =
            format!("name: '{RESERVED_NAME}' is reserved (POST /api/blueprints/{RESERVED_NAME} is the dry run)");
        let mut error = ApiError::new(400, "invalid_blueprint", detail);
        error.extra = Some(json!({ "line": line, "field": "name" }));
        return Err(error);
    }
    check_ownership(backend, &parsed)?;
    let mut warnings = crate::blueprint_checks::check_routes(backend, &parsed)?;
    warnings.extend(crate::blueprint_checks::instance_warnings(backend, &parsed));
    Ok(Checked { text: text.to_string(), blueprint: parsed, warnings })
}

/// Stores the blueprint; the answer (and, for each, a `blueprint_warning` event) carries the warnings.
fn submit(backend: &dyn Backend, body: &[u8]) -> Result<Response, ApiError> {
    let Checked { text, blueprint: parsed, warnings } = check(backend, body)?;
    let key = AetherKey::Blueprint { name: parsed.name.clone() };
    let order: Vec<String> = parsed.order.iter().map(ToString::to_string).collect();
    let name = parsed.name.to_string();
    let value = BlueprintRecord { toml: text, blueprint: parsed }.encode();
    let version = backend.kv_write(Command::Put { key, value })?;
    for warning in warnings.iter().take(WARNING_EVENTS_MAX) {
        backend.record_event("blueprint_warning", json!({ "name": name, "warning": warning }));
    }
    Ok(Response::new(201, json!({ "name": name, "version": version, "slices": order, "warnings": warnings })))
}

/// Refuses a blueprint naming an artifact another blueprint already deploys.
fn check_ownership(backend: &dyn Backend, parsed: &control::Blueprint) -> Result<(), ApiError> {
    for entry in backend.kv_list("blueprints/", false)? {
        let Ok(other) = BlueprintRecord::decode(&entry.value) else { continue };
        if other.blueprint.name == parsed.name {
            continue;
        }
        if let Some(shared) = parsed.order.iter().find(|a| other.blueprint.order.contains(a)) {
            return Err(ApiError::new(
                409,
                "conflict",
                format!("{shared} is already deployed by blueprint '{}'", other.blueprint.name),
            ));
        }
    }
    Ok(())
}

fn list(backend: &dyn Backend) -> Result<Response, ApiError> {
    let items: Vec<Value> = backend
        .kv_list("blueprints/", false)?
        .iter()
        .filter_map(|e| BlueprintRecord::decode(&e.value).ok().map(|r| (r, e.version)))
        .map(|(r, version)| {
            json!({ "name": r.blueprint.name.to_string(), "slices": r.blueprint.slices.len(), "version": version })
        })
        .collect();
    Ok(Response::ok(json!({ "blueprints": items })))
}

pub(crate) fn parse_name(name: &str) -> Result<Name, ApiError> {
    Name::parse(name).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn show(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    let key = AetherKey::Blueprint { name: parse_name(name)? };
    let entry = backend.kv_get(&key, false)?.ok_or_else(|| ApiError::not_found(format!("no blueprint '{name}'")))?;
    let record = BlueprintRecord::decode(&entry.value).map_err(|e| ApiError::new(500, "internal", e.to_string()))?;
    let slices = slice_entries(backend)?;
    let targets = backend.kv_list("targets/", true)?;
    let status: Vec<Value> = record
        .blueprint
        .order
        .iter()
        .filter_map(|a| record.blueprint.slices.iter().find(|s| s.artifact == *a))
        .map(|spec| slice_status(spec, &slices, &targets))
        .collect();
    Ok(Response::ok(json!({
        "name": record.blueprint.name.to_string(),
        "version": entry.version,
        "toml": record.toml,
        "slices": status,
    })))
}

fn slice_status(
    spec: &control::blueprint::SliceSpec,
    slices: &[(String, Artifact, SliceRecord)],
    targets: &[KvEntry],
) -> Value {
    let mine: Vec<&(String, Artifact, SliceRecord)> = slices.iter().filter(|(_, a, _)| *a == spec.artifact).collect();
    // Instances, not records: a record stands for its `copies` on its node.
    let count = |state: control::SliceState| -> u64 {
        mine.iter().filter(|(_, _, r)| r.state == state).map(|(_, _, r)| u64::from(r.serving_copies())).sum()
    };
    let target_key = format!("targets/{}", spec.artifact);
    let placed = targets.iter().find(|t| t.key == target_key).and_then(|t| TargetRecord::decode(&t.value).ok());
    let placements: Vec<Value> = mine.iter().map(|(node, _, r)| instance_json(node, &spec.artifact, r)).collect();
    json!({
        "artifact": spec.artifact.to_string(),
        "desired": spec.instances,
        "min_instances": spec.min_instances,
        "max_per_node": spec.max_per_node(),
        "targeted": placed.as_ref().map(|t| t.instances),
        "active": count(control::SliceState::Active),
        "failed": count(control::SliceState::Failed),
        "start_failures": placed.as_ref().map_or(0, |t| t.failures.count),
        "quarantined": placed.as_ref().is_some_and(|t| t.failures.quarantined),
        "reason": placed.as_ref().and_then(|t| t.failures.reason.clone()),
        "where": placements,
    })
}

pub(crate) fn instance_json(node: &str, artifact: &Artifact, r: &SliceRecord) -> Value {
    json!({
        "node": node,
        "artifact": artifact.to_string(),
        "state": r.state.as_str(),
        "desired": format!("{:?}", r.desired).to_uppercase(),
        "instance": r.instance,
        "copies": r.copies.max(1),
        // What the node last said runs (one when it never said).
        "running": r.running.unwrap_or(1),
        "copies_refused": r.copies_refused,
        "since_ms": r.since_ms,
        "error": r.error,
        "config": r.config,
        "config_refused": r.config_refused,
    })
}

/// Stores the blueprint record again, unchanged: its new version clears the start failures counted against its
/// slices, so quarantined ones are placed again.
fn reset(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    let key = AetherKey::Blueprint { name: parse_name(name)? };
    let entry = backend.kv_get(&key, false)?.ok_or_else(|| ApiError::not_found(format!("no blueprint '{name}'")))?;
    let version = backend.kv_write(Command::CompareAndSet {
        key,
        expected: Some(kvstore::Revision(entry.version)),
        value: entry.value,
    })?;
    Ok(Response::ok(json!({ "name": name, "reset": true, "version": version })))
}

fn delete(backend: &dyn Backend, name: &str) -> Result<Response, ApiError> {
    let key = AetherKey::Blueprint { name: parse_name(name)? };
    let version = backend.kv_write(Command::Remove { key }).map_err(|e| {
        if e.status == 404 {
            ApiError::not_found(format!("no blueprint '{name}'"))
        } else {
            e
        }
    })?;
    Ok(Response::ok(json!({ "name": name, "deleted": true, "version": version })))
}

pub(crate) fn slice_entries(backend: &dyn Backend) -> Result<Vec<(String, Artifact, SliceRecord)>, ApiError> {
    Ok(backend
        .kv_list("slices/", false)?
        .iter()
        .filter_map(|e| {
            let AetherKey::Slice { node, artifact } = e.key.parse::<AetherKey>().ok()? else { return None };
            Some((node.to_string(), artifact, SliceRecord::decode(&e.value).ok()?))
        })
        .collect())
}

/// `GET /api/slices`: every slice instance in the cluster, with its `health`: "saturated" while its node
/// reports every permit of its bulkhead held by calls past their deadline (its calls are refused), else "ok".
/// A single-active slice's instances also carry `lease` (`holder`, `epoch`) and `role` ("active" on the
/// holder's node, else "standby"); `leases` lists every single-active slice base with its holder and epoch.
pub fn slices(backend: &dyn Backend) -> Result<Response, ApiError> {
    let entries = slice_entries(backend).map_err(without_server_paths)?;
    let saturated = saturated_instances(backend)?;
    let leases = lease_entries(backend)?;
    let items: Vec<Value> = entries
        .iter()
        .map(|(n, a, r)| {
            let mut item = instance_json(n, a, r);
            let report = saturated.iter().find(|s| s["node"] == n.as_str() && s["artifact"] == a.to_string());
            item["health"] = json!(if report.is_some() { "saturated" } else { "ok" });
            if let Some(report) = report {
                item["stuck_calls"] = report["stuck"].clone();
            }
            if let Some(lease) = leases.iter().find(|l| l["base"] == a.base().to_string()) {
                item["lease"] = json!({ "holder": lease["holder"], "epoch": lease["epoch"] });
                item["role"] = json!(if lease["holder"] == n.as_str() { "active" } else { "standby" });
            }
            item
        })
        .collect();
    Ok(Response::ok(json!({ "slices": items, "leases": leases })))
}

/// The lease records of single-active slices (`leases/{base}`), as `{"base","holder","epoch","artifact"}`.
fn lease_entries(backend: &dyn Backend) -> Result<Vec<Value>, ApiError> {
    Ok(backend
        .kv_list("leases/", false)?
        .iter()
        .filter_map(|e| {
            let AetherKey::SliceLease { base } = e.key.parse::<AetherKey>().ok()? else { return None };
            let record = control::single_active::LeaseRecord::read(&e.value).ok()?;
            Some(json!({
                "base": base.to_string(),
                "holder": record.holder,
                "epoch": record.epoch,
                "artifact": record.artifact,
            }))
        })
        .collect())
}

/// How long a node's saturation report stays believed without being repeated (nodes repeat it every 10 s).
const SATURATION_REPORT_TTL_MS: u64 = 30_000;

/// The saturation reports (`alerts/slice-saturated.*`) that are recent enough to trust.
fn saturated_instances(backend: &dyn Backend) -> Result<Vec<Value>, ApiError> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Ok(backend
        .kv_list("alerts/slice-saturated.", false)?
        .iter()
        .filter_map(|e| serde_json::from_slice::<Value>(&e.value).ok())
        .filter(|v| v["at_ms"].as_u64().is_some_and(|at| now_ms.saturating_sub(at) <= SATURATION_REPORT_TTL_MS))
        .collect())
}

/// The error with every absolute filesystem path in its detail replaced by `<server path>`: a word that
/// starts with `/` and has a second `/` (`/var/lib/aether/repo/x.so`), unless it is an API path (`/api/...`)
/// or the error is a route conflict (whose detail names routes, never files).
/// Trailing punctuation (`:`, `,`, `)`, quotes) stays in place.
pub(crate) fn without_server_paths(mut error: ApiError) -> ApiError {
    // A route conflict's detail is built here from coordinates and parsed route patterns (`/links/{id}`),
    // which look like paths but are what the operator must read.
    if error.error == crate::blueprint_checks::ROUTE_CONFLICT {
        return error;
    }
    error.detail = hide_paths(&error.detail);
    error
}

fn hide_paths(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let start = word.find('/').filter(|&at| word[..at].chars().all(|c| matches!(c, '"' | '\'' | '(' | '`')));
        let Some(start) = start else {
            out.push_str(word);
            continue;
        };
        let end = word.trim_end_matches([':', ',', ')', '"', '\'', '`', '.', ';']).len();
        let path = &word[start..end.max(start)];
        if path.starts_with("/api/") || path.matches('/').count() < 2 {
            out.push_str(word);
        } else {
            out.push_str(&word[..start]);
            out.push_str("<server path>");
            out.push_str(&word[end.max(start)..]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterView, FaultSpec, NodeStatus};
    use std::sync::Mutex;

    /// A backend with a repository holding `org.example:echo:1.0.0` only, recording every write.
    #[derive(Default)]
    struct Fake {
        writes: Mutex<Vec<String>>,
        write_error: Option<ApiError>,
        /// What `kv_get` answers for any key.
        stored: Option<KvEntry>,
    }

    impl Backend for Fake {
        fn cluster_view(&self) -> Result<ClusterView, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn status(&self) -> Result<NodeStatus, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn kv_write(&self, command: Command) -> Result<u64, ApiError> {
            if let Some(error) = &self.write_error {
                return Err(error.clone());
            }
            let key = match command {
                Command::Put { key, .. } | Command::Remove { key } => key.to_string(),
                other => format!("{other:?}"),
            };
            self.writes.lock().unwrap().push(key);
            Ok(3)
        }
        fn kv_get(&self, _key: &AetherKey, _stale: bool) -> Result<Option<KvEntry>, ApiError> {
            Ok(self.stored.clone())
        }
        fn kv_list(&self, _prefix: &str, _stale: bool) -> Result<Vec<KvEntry>, ApiError> {
            Ok(Vec::new())
        }
        fn artifact_known(&self, artifact: &Artifact) -> bool {
            artifact.to_string() == "org.example:echo:1.0.0"
        }
        fn set_faults(&self, _rules: Vec<FaultSpec>) -> Result<(), ApiError> {
            Ok(())
        }
    }

    fn call(fake: &Fake, method: &str, path: &str, body: &str) -> Response {
        let request = Request { method: method.into(), path: path.into(), body: body.into(), ..Request::default() };
        crate::api::route(fake, &request)
    }

    fn blueprint(artifact: &str) -> String {
        format!("name = \"shop\"\n[[slices]]\nartifact = \"{artifact}\"\n")
    }

    #[test]
    fn bad_coordinates_are_400_wherever_they_enter() {
        let fake = Fake::default();
        for bad in ["org..x:echo:1.0.0", ".org:echo:1.0.0", "org:ec.ho:1.0.0", "org:echo:1.0", "a:b"] {
            let answer = call(&fake, "POST", "api/blueprints", &blueprint(bad));
            assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
            assert_eq!(answer.body["field"], json!("slices[0].artifact"), "{bad}: {}", answer.body);
            let detail = answer.body["detail"].as_str().unwrap_or_default();
            assert!(!detail.contains(bad), "the detail names the field, not the value: {detail}");
        }
        for path in ["api/artifacts/org..x/echo/1.0.0", "api/artifacts/org/echo/01.0.0", "api/artifacts/./echo/1.0.0"] {
            let answer = call(&fake, "PUT", path, "library bytes");
            assert_eq!(answer.status, 400, "{path}: {}", answer.body);
        }
        for key in ["slices/node-1/org..x:echo:1.0.0", "targets/org..x:echo:1.0.0", "targets/g:a.b:1.0.0"] {
            let answer = call(&fake, "PUT", &format!("api/kv/{key}"), "v");
            assert_eq!(answer.status, 400, "{key}: {}", answer.body);
            assert_eq!(answer.body["error"], json!("bad_request"), "{key}");
        }
        assert!(fake.writes.lock().unwrap().is_empty(), "nothing refused was stored");
        assert_eq!(call(&fake, "POST", "api/blueprints", &blueprint("org.example:echo:1.0.0")).status, 201);
        // Good coordinates get as far as the library checks: "bytes" is no shared library.
        assert_eq!(call(&fake, "PUT", "api/artifacts/org.example/echo/1.0.0", "bytes").status, 422);
    }

    #[test]
    fn an_unknown_artifact_is_400_without_any_server_path() {
        let fake = Fake::default();
        let answer = call(&fake, "POST", "api/blueprints", &blueprint("org.example:missing:1.0.0"));
        assert_eq!(answer.status, 400, "{}", answer.body);
        assert_eq!(answer.body["field"], json!("slices[0].artifact"));
        assert!(!answer.body.to_string().contains("/repo"), "{}", answer.body);
    }

    #[test]
    fn backend_errors_lose_their_server_paths() {
        let detail = "cannot write /var/lib/aether/repository/org/x/1.0.0/x-1.0.0.so: permission denied";
        let fake = Fake { write_error: Some(ApiError::new(500, "internal", detail)), ..Fake::default() };
        let answer = call(&fake, "POST", "api/blueprints", &blueprint("org.example:echo:1.0.0"));
        assert_eq!(answer.status, 500);
        assert_eq!(answer.body["detail"], json!("cannot write <server path>: permission denied"));
    }

    #[test]
    fn a_reset_stores_the_same_blueprint_again_under_its_version() {
        let fake = Fake::default();
        assert_eq!(call(&fake, "POST", "api/blueprints/shop/reset", "").status, 404);
        let value = b"{\"toml\":\"...\"}".to_vec();
        let stored = KvEntry { key: "blueprints/shop".into(), value: value.clone(), version: 7 };
        let fake = Fake { stored: Some(stored), ..Fake::default() };
        let answer = call(&fake, "POST", "api/blueprints/shop/reset", "");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["reset"], json!(true));
        let expected = Command::CompareAndSet {
            key: "blueprints/shop".parse().unwrap(),
            expected: Some(kvstore::Revision(7)),
            value,
        };
        assert_eq!(*fake.writes.lock().unwrap(), [format!("{expected:?}")]);
    }

    #[test]
    fn only_absolute_filesystem_paths_are_hidden() {
        assert_eq!(hide_paths("GET is not allowed on /api/blueprints"), "GET is not allowed on /api/blueprints");
        assert_eq!(hide_paths("(\"/tmp/a/b\"), /x and a/b/c"), "(\"<server path>\"), /x and a/b/c");
        assert_eq!(hide_paths("open /data/consensus/log-1: gone."), "open <server path>: gone.");
    }
}
