//! The checks of a posted blueprint that need the cluster, beyond its text: route conflicts between slices
//! (refused with 409) and `instances` above the node count (accepted, with a warning).
//!
//! Routes are not in the blueprint: each slice declares them in its library's descriptor. The node answering
//! the post reads them from its repository (`Backend::slice_routes`; the daemon loads the library without
//! starting it, and remembers the answer per artifact). The artifacts must be in that repository already
//! (the artifact check before this one refuses the blueprint otherwise), so the check runs at post time. The
//! routes of the slices already deployed by other blueprints come from the same descriptors, and from the
//! `routes/` records of the slices serving now (so a library missing from this node still counts).
//!
//! The rules themselves are `control::blueprint::checks` (the version of an artifact does not count; a path's
//! parameter names do not count). A descriptor this node cannot read is not refused: the answer's `warnings`
//! say its routes were not checked, and if it does clash, the route stays with the slice that registered it
//! first (the nodes never register a route another artifact holds).
//!
//! Invariants: refuses only on a conflict it can name (both artifacts and the route); reads only.

use crate::api::Backend;
use crate::error::ApiError;
use control::blueprint::checks::{self, RouteClaim};
use control::records::{BlueprintRecord, Record, RouteRecord};
use control::Blueprint;
use kvstore::{AetherKey, Artifact, HttpMethod, RoutePath};
use serde_json::json;

/// The error code of a route conflict.
pub(crate) const ROUTE_CONFLICT: &str = "route_conflict";

/// Longest reason kept in a warning that a descriptor could not be read, in bytes.
const REASON_BYTES_MAX: usize = 512;

/// Refuses the blueprint when two of its slices, or one of its slices and a slice another blueprint deploys,
/// declare the same route; answers the warnings for routes it could not check.
pub(crate) fn check_routes(backend: &dyn Backend, parsed: &Blueprint) -> Result<Vec<String>, ApiError> {
    let mut warnings = Vec::new();
    let mut new = Vec::new();
    for artifact in parsed.slices.iter().map(|s| &s.artifact) {
        match backend.slice_routes(artifact) {
            Ok(routes) => new.extend(claims(artifact, &routes)),
            Err(reason) => warnings.push(format!(
                "the routes of {artifact} were not checked against other slices: {}",
                cut(&reason, REASON_BYTES_MAX)
            )),
        }
    }
    let deployed = deployed_claims(backend, parsed)?;
    match checks::find_conflict(&deployed, &new) {
        None => Ok(warnings),
        Some(conflict) => {
            let mut error = ApiError::new(409, ROUTE_CONFLICT, conflict.to_string());
            let route = format!("{} {}", conflict.claim.method, conflict.claim.path);
            let artifacts = [conflict.claim.artifact.to_string(), conflict.held.artifact.to_string()];
            error.extra = Some(json!({ "route": route, "artifacts": artifacts }));
            Err(error)
        }
    }
}

/// The routes of every slice the cluster's other blueprints deploy: their descriptors (where this node can
/// read them) and the route records of those slices.
fn deployed_claims(backend: &dyn Backend, parsed: &Blueprint) -> Result<Vec<RouteClaim>, ApiError> {
    let others: Vec<BlueprintRecord> = (backend.kv_list("blueprints/", false)?.iter())
        .filter_map(|e| BlueprintRecord::decode(&e.value).ok())
        .filter(|r| r.blueprint.name != parsed.name)
        .collect();
    let deployed: Vec<&Artifact> = others.iter().flat_map(|r| r.blueprint.order.iter()).collect();
    let mut claimed = Vec::new();
    for entry in backend.kv_list("routes/", false)? {
        let Ok(AetherKey::Route { method, path }) = entry.key.parse::<AetherKey>() else { continue };
        let Ok(record) = RouteRecord::decode(&entry.value) else { continue };
        if deployed.contains(&&record.artifact) {
            claimed.push(RouteClaim { artifact: record.artifact, method, path });
        }
    }
    for artifact in deployed {
        if let Ok(routes) = backend.slice_routes(artifact) {
            claimed.extend(claims(artifact, &routes));
        }
    }
    Ok(claimed)
}

/// A descriptor's routes as claims; a route that does not parse is left out (the node refuses that slice
/// when it loads it, with the reason).
fn claims(artifact: &Artifact, routes: &[(String, String)]) -> Vec<RouteClaim> {
    let claim = |(method, path): &(String, String)| {
        let (method, path) = (HttpMethod::parse(method).ok()?, RoutePath::parse(path).ok()?);
        Some(RouteClaim { artifact: artifact.clone(), method, path })
    };
    routes.iter().filter_map(claim).collect()
}

/// One warning per slice asking for more instances than the cluster has nodes (none when the node count
/// cannot be read).
pub(crate) fn instance_warnings(backend: &dyn Backend, parsed: &Blueprint) -> Vec<String> {
    let Ok(view) = backend.cluster_view() else { return Vec::new() };
    checks::instance_warnings(parsed, view.nodes.len()).iter().map(ToString::to_string).collect()
}

fn cut(text: &str, bytes_max: usize) -> &str {
    let end = (0..=bytes_max.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ClusterView, FaultSpec, NodeStatus, PeerView};
    use crate::kv::KvEntry;
    use crate::server::{Request, Response};
    use kvstore::Command;
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// A three-node cluster whose repository holds the artifacts of `routes` (with those descriptors), and a
    /// store of blueprint and route records.
    #[derive(Default)]
    struct Fake {
        routes: BTreeMap<String, Result<Vec<(String, String)>, String>>,
        stored: Mutex<Vec<KvEntry>>,
        events: Mutex<Vec<(String, Value)>>,
    }

    impl Fake {
        fn with(slices: &[(&str, &[(&str, &str)])]) -> Fake {
            let routes = slices.iter().map(|(artifact, routes)| {
                let routes = routes.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
                (artifact.to_string(), Ok(routes))
            });
            Fake { routes: routes.collect(), ..Fake::default() }
        }
    }

    impl Backend for Fake {
        fn cluster_view(&self) -> Result<ClusterView, ApiError> {
            let node = |i: usize| PeerView {
                id: format!("node-{i}"),
                address: format!("127.0.0.1:{i}"),
                connected: true,
                last_seen_ms: None,
                is_self: i == 1,
            };
            Ok(ClusterView { node: "node-1".into(), nodes: (1..=3).map(node).collect(), quorum: true, caught_up: true })
        }
        fn status(&self) -> Result<NodeStatus, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn kv_write(&self, command: Command) -> Result<u64, ApiError> {
            let Command::Put { key, value } = command else { return Err(ApiError::bad_request("fake")) };
            let mut stored = self.stored.lock().unwrap();
            stored.retain(|e| e.key != key.to_string());
            stored.push(KvEntry { key: key.to_string(), value, version: 1 });
            Ok(1)
        }
        fn kv_get(&self, _key: &AetherKey, _stale: bool) -> Result<Option<KvEntry>, ApiError> {
            Ok(None)
        }
        fn kv_list(&self, prefix: &str, _stale: bool) -> Result<Vec<KvEntry>, ApiError> {
            let stored = self.stored.lock().unwrap();
            Ok(stored.iter().filter(|e| e.key.starts_with(prefix)).cloned().collect())
        }
        fn artifact_known(&self, artifact: &Artifact) -> bool {
            self.routes.contains_key(&artifact.to_string())
        }
        fn slice_routes(&self, artifact: &Artifact) -> Result<Vec<(String, String)>, String> {
            self.routes.get(&artifact.to_string()).cloned().unwrap_or_else(|| Err("not here".into()))
        }
        fn set_faults(&self, _rules: Vec<FaultSpec>) -> Result<(), ApiError> {
            Ok(())
        }
        fn record_event(&self, kind: &'static str, data: Value) {
            self.events.lock().unwrap().push((kind.to_string(), data));
        }
    }

    fn post(fake: &Fake, body: &str) -> Response {
        let request =
            Request { method: "POST".into(), path: "api/blueprints".into(), body: body.into(), ..Request::default() };
        crate::api::route(fake, &request)
    }

    fn blueprint(name: &str, slices: &[(&str, u32)]) -> String {
        let mut text = format!("name = \"{name}\"\n");
        for (artifact, instances) in slices {
            text += &format!("[[slices]]\nartifact = \"{artifact}\"\ninstances = {instances}\n");
        }
        text
    }

    const LINKS: &str = "org.example:links:1.0.0";
    const LINKS_V2: &str = "org.example:links:2.0.0";
    const COPY: &str = "org.example:copy:1.0.0";
    const OTHER: &str = "org.example:other:1.0.0";

    fn fake() -> Fake {
        Fake::with(&[
            (LINKS, &[("GET", "/links/{id}"), ("POST", "/links")]),
            (LINKS_V2, &[("GET", "/links/{key}"), ("POST", "/links")]),
            (COPY, &[("GET", "/copy"), ("GET", "/links/{link}")]),
            (OTHER, &[("GET", "/other")]),
        ])
    }

    #[test]
    fn two_slices_of_one_blueprint_declaring_a_route_are_a_409_naming_both() {
        let fake = fake();
        let answer = post(&fake, &blueprint("shop", &[(LINKS, 1), (COPY, 1)]));
        assert_eq!(answer.status, 409, "{}", answer.body);
        assert_eq!(answer.body["error"], "route_conflict");
        assert_eq!(answer.body["route"], "GET /links/{link}");
        assert_eq!(answer.body["artifacts"], json!([COPY, LINKS]));
        let detail = answer.body["detail"].as_str().unwrap();
        assert!(detail.contains(LINKS) && detail.contains(COPY) && detail.contains("GET /links/{link}"), "{detail}");
        assert!(fake.stored.lock().unwrap().is_empty(), "nothing stored");
    }

    #[test]
    fn a_blueprint_clashing_with_a_deployed_one_is_a_409_and_versions_share_routes() {
        let fake = fake();
        assert_eq!(post(&fake, &blueprint("shop", &[(LINKS, 1)])).status, 201);
        let answer = post(&fake, &blueprint("mirror", &[(OTHER, 1), (COPY, 1)]));
        assert_eq!(answer.status, 409, "{}", answer.body);
        assert_eq!(answer.body["artifacts"], json!([COPY, LINKS]));
        // The same blueprint moving to the next version of its artifact is no conflict, nor is another
        // blueprint that only shares no route.
        assert_eq!(post(&fake, &blueprint("shop", &[(LINKS_V2, 1)])).status, 201);
        assert_eq!(post(&fake, &blueprint("mirror", &[(OTHER, 1)])).status, 201);
    }

    #[test]
    fn a_route_record_of_a_deployed_slice_counts_when_its_descriptor_cannot_be_read() {
        let mut fake = fake();
        fake.routes.insert("org.example:gone:1.0.0".into(), Err("no library here".into()));
        assert_eq!(post(&fake, &blueprint("old", &[("org.example:gone:1.0.0", 1)])).status, 201);
        let route = RouteRecord {
            artifact: Artifact::parse("org.example:gone:1.0.0").unwrap(),
            method: kvstore::Name::parse("get").unwrap(),
        };
        fake.stored.lock().unwrap().push(KvEntry { key: "routes/GET/other".into(), value: route.encode(), version: 4 });
        let answer = post(&fake, &blueprint("new", &[(OTHER, 1)]));
        assert_eq!(answer.status, 409, "{}", answer.body);
        assert_eq!(answer.body["artifacts"], json!([OTHER, "org.example:gone:1.0.0"]));
    }

    #[test]
    fn an_unreadable_descriptor_is_a_warning_not_a_refusal() {
        let mut fake = fake();
        fake.routes.insert(OTHER.into(), Err("cannot load".into()));
        let answer = post(&fake, &blueprint("shop", &[(OTHER, 1)]));
        assert_eq!(answer.status, 201, "{}", answer.body);
        let warnings = answer.body["warnings"].as_array().unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].as_str().unwrap().contains("were not checked against other slices: cannot load"));
    }

    #[test]
    fn instances_above_the_node_count_are_a_warning_and_an_event() {
        let fake = fake();
        let answer = post(&fake, &blueprint("shop", &[(LINKS, 3)]));
        assert_eq!((answer.status, answer.body["warnings"].clone()), (201, json!([])), "{}", answer.body);
        assert!(fake.events.lock().unwrap().is_empty());
        let answer = post(&fake, &blueprint("shop", &[(LINKS, 5)]));
        assert_eq!(answer.status, 201, "{}", answer.body);
        let warning = answer.body["warnings"][0].as_str().unwrap();
        assert!(warning.starts_with("slices[0].instances: org.example:links:1.0.0 asks for 5 instances"), "{warning}");
        let events = fake.events.lock().unwrap();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].0, "blueprint_warning");
        assert_eq!(events[0].1, json!({ "name": "shop", "warning": warning }));
    }
}
