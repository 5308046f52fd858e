//! Routes and endpoints as the cluster knows them, and the choice of where a call goes.
//!
//! The registry mirrors two KV namespaces:
//! - `routes/{METHOD}/{path}` = `{"artifact","method"}`: which slice method serves an HTTP route;
//! - `endpoints/{artifact}/{method}/{node}:{instance}` = `{"node","instance"}`: an ACTIVE instance of a
//!   slice method (the key says everything; the value is not needed).
//!
//! The node runtime feeds it: [`Registry::apply`] for each watch event (a value for a put, `None` for a
//! removal), [`Registry::rebuild`] with a full listing after a resync. Dev mode fills it directly with
//! [`Registry::put_route`] and [`Registry::put_endpoint`].
//!
//! Route records are kept by key and the [`RouteTable`] is rebuilt from them in key order on every
//! route change (routes change on deployments only), so the table never depends on event order: when
//! two records have the same shape (`/a/{x}` and `/a/{y}`), the first in key order serves and the other
//! is listed by [`Registry::shadowed`] and reported by `apply`.
//!
//! Selection ([`Registry::pick`]): by the artifact's [`Selection`] strategy (from its target record, set
//! with [`Registry::set_selections`]; local-first when unknown) among the endpoints on live nodes (a cursor
//! per artifact, advanced atomically so selection needs only shared access), skipping excluded nodes (those
//! that already failed this call); see [`crate::selection`]. [`Registry::select`] is local-first.
//!
//! Leases ([`Registry::set_leases`]): for each single-active slice base, who holds its lease and, when this
//! node does, until when it serves; the node runtime replaces them on every tick. Callers route a
//! single-active slice's calls to the holder only ([`Registry::lease_of`]).
//!
//! Invariants: at most [`ROUTES_MAX`] route records and [`ENDPOINTS_MAX`] endpoints (more is refused
//! with [`RegistryError::Full`]); an artifact entry exists only while it has endpoints; no input panics.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use kvstore::AetherKey;
use vocab::Selection;

use crate::routes::{Lookup, RouteError, RouteTable};
use crate::selection::{choose, Candidate};
use crate::versions::VersionTable;

/// Most route records held.
pub const ROUTES_MAX: usize = 4096;
/// Most endpoints held, over all artifacts and methods.
pub const ENDPOINTS_MAX: usize = 65_536;
/// Longest route record value read, in bytes.
pub const ROUTE_VALUE_BYTES_MAX: usize = 4096;

/// What a route leads to: a slice method of an artifact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTarget {
    /// `group:artifact:version`.
    pub artifact: String,
    pub method: String,
}

/// One instance of a slice method.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub node: String,
    pub instance: u32,
}

/// Where a call goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// An instance on this node.
    Local,
    /// An instance on this node id.
    Remote(String),
}

/// What an applied event changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Routes,
    Endpoints,
    /// The key is in neither namespace, or the event changed nothing.
    Nothing,
}

/// An event the registry could not take in; the rest of the registry is unaffected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistryError {
    /// A route value that is not `{"artifact","method"}`, or a route the table refuses.
    BadRoute { key: String, reason: String },
    /// A table is at its bound; the record was not added.
    Full { table: &'static str, max: usize, key: String },
    /// The route has the shape of another one, which serves it.
    Shadowed { key: String, by: String },
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::BadRoute { key, reason } => write!(f, "route record {key}: {reason}"),
            RegistryError::Full { table, max, key } => {
                write!(f, "{key}: the {table} table is full ({max} entries); record ignored")
            }
            RegistryError::Shadowed { key, by } => write!(f, "route {key} is shadowed by {by}, which has its shape"),
        }
    }
}

impl std::error::Error for RegistryError {}

struct RouteRecord {
    http_method: String,
    path: String,
    target: RouteTarget,
}

/// Endpoints of one artifact, by slice method, with its round-robin cursor.
#[derive(Default)]
struct ArtifactEndpoints {
    by_method: BTreeMap<String, Vec<Endpoint>>,
    cursor: AtomicUsize,
}

/// What this node knows of the lease of one single-active slice base (`group:artifact`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// The node whose instance serves; `None` while nobody holds it (released, or never taken).
    pub holder: Option<String>,
    pub epoch: u64,
    /// `group:artifact:version` of the holder's instance.
    pub artifact: Option<String>,
    /// When this node holds the lease: until when it serves (its last renewal that applied).
    pub serving_until: Option<Instant>,
}

/// How one call is placed: what the caller knows beyond the registry.
pub struct Selector<'a> {
    pub local_node: &'a str,
    pub is_alive: &'a dyn Fn(&str) -> bool,
    /// Nodes skipped (they failed this call already); this node too when listed.
    pub exclude: &'a [String],
    /// Calls this node has in flight on `node`'s instances of the artifact (for least-loaded).
    pub load: &'a dyn Fn(&str) -> usize,
    /// A random number (for random selection).
    pub random: u64,
}

/// Most single-active slice bases and per-artifact selections held.
pub const LEASES_MAX: usize = 4096;

/// The base (`group:artifact`) of `group:artifact:version`.
pub fn artifact_base(artifact: &str) -> &str {
    artifact.rsplit_once(':').map_or(artifact, |(base, _)| base)
}

/// Routes and endpoints of the cluster.
#[derive(Default)]
pub struct Registry {
    /// Selection strategy per artifact (`group:artifact:version`), from the target records.
    selections: HashMap<String, Selection>,
    /// Leases of single-active slices, by base.
    leases: HashMap<String, LeaseView>,
    /// Route records by key text (`routes/GET/echo/{msg}`).
    route_records: BTreeMap<String, RouteRecord>,
    routes: RouteTable<RouteTarget>,
    /// Keys of route records the table refused, with the key that serves their shape.
    shadowed: Vec<(String, String)>,
    endpoints: HashMap<String, ArtifactEndpoints>,
    endpoint_count: usize,
    /// Wanted versions and running rollouts (see [`crate::versions`]).
    versions: VersionTable,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Take in one watch event: `Some(value)` for a put, `None` for a removal. Keys outside
    /// `routes/` and `endpoints/` change nothing.
    pub fn apply(&mut self, key: &AetherKey, value: Option<&[u8]>) -> Result<Change, RegistryError> {
        match (key, value) {
            (AetherKey::Route { method, path }, Some(value)) => {
                let target = decode_route(value).map_err(|reason| bad_route(key, reason))?;
                self.put_route(method.as_str(), path.as_str(), target)
            }
            (AetherKey::Route { method, path }, None) => Ok(self.remove_route(method.as_str(), path.as_str())),
            (AetherKey::Endpoint { artifact, method, node, instance }, Some(_)) => {
                let endpoint = Endpoint { node: node.as_str().to_owned(), instance: *instance };
                self.put_endpoint(&artifact.to_string(), method.as_str(), endpoint)
            }
            (AetherKey::Endpoint { artifact, method, node, instance }, None) => {
                let endpoint = Endpoint { node: node.as_str().to_owned(), instance: *instance };
                Ok(self.remove_endpoint(&artifact.to_string(), method.as_str(), &endpoint))
            }
            _ => Ok(Change::Nothing),
        }
    }

    /// Replace everything with a full listing of `routes/` and `endpoints/` (after a watch resync or a
    /// snapshot); returns the entries that could not be taken in.
    pub fn rebuild<'a>(&mut self, entries: impl IntoIterator<Item = (&'a AetherKey, &'a [u8])>) -> Vec<RegistryError> {
        let versions = std::mem::take(&mut self.versions);
        let selections = std::mem::take(&mut self.selections);
        let leases = std::mem::take(&mut self.leases);
        *self = Registry { versions, selections, leases, ..Registry::default() };
        let mut errors = Vec::new();
        for (key, value) in entries {
            if let Err(error) = self.apply(key, Some(value)) {
                errors.push(error);
            }
        }
        // Shadowing depends on the whole set, so it is reported once, against the final table.
        errors.retain(|e| !matches!(e, RegistryError::Shadowed { .. }));
        errors
            .extend(self.shadowed.iter().map(|(key, by)| RegistryError::Shadowed { key: key.clone(), by: by.clone() }));
        errors
    }

    /// Add or replace the route `http_method path` (path with its leading `/`).
    pub fn put_route(&mut self, http_method: &str, path: &str, target: RouteTarget) -> Result<Change, RegistryError> {
        let key = route_key(http_method, path);
        if !self.route_records.contains_key(&key) && self.route_records.len() >= ROUTES_MAX {
            return Err(RegistryError::Full { table: "route", max: ROUTES_MAX, key });
        }
        let mut check = RouteTable::new();
        if let Err(error) = check.insert(http_method, path, ()) {
            return Err(RegistryError::BadRoute { key, reason: error.to_string() });
        }
        let record = RouteRecord { http_method: http_method.to_owned(), path: path.to_owned(), target: target.clone() };
        let replaced = self.route_records.insert(key.clone(), record).is_some();
        // A new route that conflicts with nothing goes straight in; anything else may change which
        // record serves a shape, so the table is rebuilt in key order.
        if replaced || self.routes.insert(http_method, path, target).is_err() {
            self.rebuild_routes();
        }
        match self.shadowed.iter().find(|(shadowed, _)| *shadowed == key) {
            Some((_, by)) => Err(RegistryError::Shadowed { key, by: by.clone() }),
            None => Ok(Change::Routes),
        }
    }

    pub fn remove_route(&mut self, http_method: &str, path: &str) -> Change {
        if self.route_records.remove(&route_key(http_method, path)).is_none() {
            return Change::Nothing;
        }
        self.rebuild_routes();
        Change::Routes
    }

    fn rebuild_routes(&mut self) {
        let mut table = RouteTable::new();
        let mut shadowed = Vec::new();
        for (key, record) in &self.route_records {
            match table.insert(&record.http_method, &record.path, record.target.clone()) {
                Ok(()) => {}
                Err(RouteError::Conflict { method, existing, .. }) => {
                    shadowed.push((key.clone(), route_key(&method, &existing)));
                }
                // Checked when the record was put.
                Err(_) => {}
            }
        }
        self.routes = table;
        self.shadowed = shadowed;
    }

    /// Add an endpoint of `artifact`'s `method`; an endpoint already there changes nothing.
    pub fn put_endpoint(&mut self, artifact: &str, method: &str, endpoint: Endpoint) -> Result<Change, RegistryError> {
        let known = self.endpoints.get(artifact).and_then(|a| a.by_method.get(method));
        if known.is_some_and(|list| position(list, &endpoint).is_ok()) {
            return Ok(Change::Nothing);
        }
        if self.endpoint_count >= ENDPOINTS_MAX {
            let key = format!("endpoints/{artifact}/{method}/{}:{}", endpoint.node, endpoint.instance);
            return Err(RegistryError::Full { table: "endpoint", max: ENDPOINTS_MAX, key });
        }
        let list =
            self.endpoints.entry(artifact.to_owned()).or_default().by_method.entry(method.to_owned()).or_default();
        if let Err(at) = position(list, &endpoint) {
            list.insert(at, endpoint);
            self.endpoint_count += 1;
        }
        Ok(Change::Endpoints)
    }

    pub fn remove_endpoint(&mut self, artifact: &str, method: &str, endpoint: &Endpoint) -> Change {
        let Some(entry) = self.endpoints.get_mut(artifact) else { return Change::Nothing };
        let Some(list) = entry.by_method.get_mut(method) else { return Change::Nothing };
        let Ok(at) = position(list, endpoint) else { return Change::Nothing };
        list.remove(at);
        self.endpoint_count -= 1;
        if list.is_empty() {
            entry.by_method.remove(method);
        }
        if entry.by_method.is_empty() {
            self.endpoints.remove(artifact);
        }
        Change::Endpoints
    }

    /// The route for `http_method` and `path` (no query string): target and decoded path parameters.
    pub fn lookup(&self, http_method: &str, path: &str) -> Lookup<'_, RouteTarget> {
        self.routes.lookup(http_method, path)
    }

    /// The route table, as served.
    pub fn routes(&self) -> &RouteTable<RouteTarget> {
        &self.routes
    }

    /// Route keys not served because another route of the same shape is, with that route's key.
    pub fn shadowed(&self) -> &[(String, String)] {
        &self.shadowed
    }

    /// Endpoints of `artifact`'s `method`, ordered by node and instance.
    pub fn endpoints(&self, artifact: &str, method: &str) -> &[Endpoint] {
        self.endpoints.get(artifact).and_then(|a| a.by_method.get(method)).map_or(&[], Vec::as_slice)
    }

    pub fn endpoint_count(&self) -> usize {
        self.endpoint_count
    }

    /// Replace the selection strategies (by artifact); at most [`LEASES_MAX`] are kept.
    pub fn set_selections(&mut self, selections: impl IntoIterator<Item = (String, Selection)>) {
        self.selections = selections.into_iter().take(LEASES_MAX).collect();
    }

    /// The selection strategy of `artifact` (local-first unless its blueprint says otherwise).
    pub fn selection(&self, artifact: &str) -> Selection {
        self.selections.get(artifact).copied().unwrap_or_default()
    }

    /// Replace the leases of single-active slices (by base); at most [`LEASES_MAX`] are kept.
    pub fn set_leases(&mut self, leases: impl IntoIterator<Item = (String, LeaseView)>) {
        self.leases = leases.into_iter().take(LEASES_MAX).collect();
    }

    /// Replace the wanted versions and running rollouts (the node runtime does it every tick).
    pub fn set_versions(&mut self, versions: VersionTable) {
        self.versions = versions;
    }

    /// The wanted versions and running rollouts.
    pub fn versions(&self) -> &VersionTable {
        &self.versions
    }

    /// The artifacts of `base` (`group:artifact`) that have endpoints, highest version text last.
    pub fn artifacts_of(&self, base: &str) -> Vec<&str> {
        let mut found: Vec<&str> =
            self.endpoints.keys().map(String::as_str).filter(|a| artifact_base(a) == base).collect();
        found.sort_unstable();
        found.reverse();
        found
    }

    /// Whether `artifact`'s `method` has an endpoint on a node `usable` accepts.
    pub fn has_endpoint(&self, artifact: &str, method: &str, usable: &dyn Fn(&str) -> bool) -> bool {
        self.endpoints(artifact, method).iter().any(|e| usable(&e.node))
    }

    /// The lease of `artifact`'s base when the slice is single-active.
    pub fn lease_of(&self, artifact: &str) -> Option<&LeaseView> {
        self.leases.get(artifact_base(artifact))
    }

    /// Every lease known, by base.
    pub fn leases(&self) -> &HashMap<String, LeaseView> {
        &self.leases
    }

    /// Where a call of `artifact`'s `method` goes, by the artifact's selection strategy among the
    /// endpoints on live nodes that are not excluded (this node's counts as live). `None`: none left.
    pub fn pick(&self, artifact: &str, method: &str, selector: &Selector<'_>) -> Option<Target> {
        let entry = self.endpoints.get(artifact)?;
        let list = entry.by_method.get(method)?;
        let local = selector.local_node;
        let usable =
            |e: &&Endpoint| !selector.exclude.contains(&e.node) && (e.node == local || (selector.is_alive)(&e.node));
        let candidates: Vec<Candidate<'_>> = list
            .iter()
            .filter(usable)
            .map(|e| Candidate { node: &e.node, local: e.node == local, load: (selector.load)(&e.node) })
            .collect();
        let selection = self.selection(artifact);
        // Local-first turns only over remote endpoints, so the cursor moves only when it is needed.
        let turn = match selection {
            Selection::LocalFirst if candidates.iter().any(|c| c.local) => 0,
            _ => entry.cursor.fetch_add(1, Ordering::Relaxed),
        };
        let chosen = candidates.get(choose(selection, &candidates, turn, selector.random)?)?;
        Some(if chosen.local { Target::Local } else { Target::Remote(chosen.node.to_owned()) })
    }

    /// Where a call of `artifact`'s `method` goes: [`Target::Local`] when `local_node` has an endpoint
    /// of it, else the next live remote endpoint in round-robin order; nodes in `exclude` are skipped
    /// (this node too, when it is in `exclude`). `None`: no live instance.
    pub fn select(
        &self,
        artifact: &str,
        method: &str,
        local_node: &str,
        is_alive: &dyn Fn(&str) -> bool,
        exclude: &[String],
    ) -> Option<Target> {
        let entry = self.endpoints.get(artifact)?;
        let list = entry.by_method.get(method)?;
        let excluded = |node: &str| exclude.iter().any(|e| e == node);
        if !excluded(local_node) && list.iter().any(|e| e.node == local_node) {
            return Some(Target::Local);
        }
        let usable = |e: &&Endpoint| e.node != local_node && !excluded(&e.node) && is_alive(&e.node);
        let count = list.iter().filter(usable).count();
        if count == 0 {
            return None;
        }
        let turn = entry.cursor.fetch_add(1, Ordering::Relaxed) % count;
        list.iter().filter(usable).nth(turn).map(|e| Target::Remote(e.node.clone()))
    }
}

/// Where `endpoint` is (`Ok`) or would go (`Err`) in a list ordered by node and instance.
fn position(list: &[Endpoint], endpoint: &Endpoint) -> Result<usize, usize> {
    list.binary_search_by(|e| (e.node.as_str(), e.instance).cmp(&(endpoint.node.as_str(), endpoint.instance)))
}

fn route_key(http_method: &str, path: &str) -> String {
    format!("routes/{}/{}", http_method.to_ascii_uppercase(), path.strip_prefix('/').unwrap_or(path))
}

fn bad_route(key: &AetherKey, reason: String) -> RegistryError {
    RegistryError::BadRoute { key: key.to_string(), reason }
}

/// `{"artifact": "g:a:v", "method": "m"}`; unknown fields are ignored.
fn decode_route(value: &[u8]) -> Result<RouteTarget, String> {
    if value.len() > ROUTE_VALUE_BYTES_MAX {
        return Err(format!("value of {} bytes, over {ROUTE_VALUE_BYTES_MAX}", value.len()));
    }
    let json = aether_sdk::json::parse(value).map_err(|e| e.to_string())?;
    let text = |field: &str| json.get(field).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let artifact = text("artifact").ok_or("no `artifact` text")?;
    let method = text("method").ok_or("no `method` text")?;
    let artifact = kvstore::Artifact::parse(artifact).map_err(|e| e.to_string())?;
    Ok(RouteTarget { artifact: artifact.to_string(), method: method.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Match;

    const ECHO: &str = "org.aether.examples:echo:1.0.0";

    fn key(text: &str) -> AetherKey {
        text.parse().unwrap()
    }

    fn route_value(artifact: &str, method: &str) -> Vec<u8> {
        format!(r#"{{"artifact":"{artifact}","method":"{method}","extra":1}}"#).into_bytes()
    }

    fn endpoint_key(node: &str, instance: u32) -> AetherKey {
        key(&format!("endpoints/{ECHO}/echo/{node}:{instance}"))
    }

    fn registry(nodes: &[&str]) -> Registry {
        let mut registry = Registry::new();
        registry.apply(&key("routes/GET/echo/{msg}"), Some(&route_value(ECHO, "echo"))).unwrap();
        for (i, node) in nodes.iter().enumerate() {
            registry.apply(&endpoint_key(node, i as u32), Some(br#"{"node":"x","instance":0}"#)).unwrap();
        }
        registry
    }

    fn all_alive(_: &str) -> bool {
        true
    }

    fn picks(registry: &Registry, local: &str, exclude: &[String], n: usize) -> Vec<Option<Target>> {
        (0..n).map(|_| registry.select(ECHO, "echo", local, &all_alive, exclude)).collect()
    }

    #[test]
    fn routes_from_records_match_with_parameters() {
        let registry = registry(&[]);
        match registry.lookup("GET", "/echo/hi") {
            Lookup::Found(Match { target, params, .. }) => {
                assert_eq!(target, &RouteTarget { artifact: ECHO.into(), method: "echo".into() });
                assert_eq!(params, vec![("msg".to_owned(), "hi".to_owned())]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(registry.lookup("GET", "/nope"), Lookup::NotFound);
    }

    #[test]
    fn removals_and_rewrites_follow_the_events() {
        let mut registry = registry(&["node-1"]);
        let route = key("routes/GET/echo/{msg}");
        let v2 = "org.aether.examples:echo:2.0.0";
        assert_eq!(registry.apply(&route, Some(&route_value(v2, "echo"))), Ok(Change::Routes));
        assert!(matches!(registry.lookup("GET", "/echo/x"), Lookup::Found(m) if m.target.artifact == v2));
        assert_eq!(registry.apply(&route, None), Ok(Change::Routes));
        assert_eq!(registry.lookup("GET", "/echo/x"), Lookup::NotFound);
        assert_eq!(registry.apply(&endpoint_key("node-1", 0), None), Ok(Change::Endpoints));
        assert_eq!(registry.apply(&endpoint_key("node-1", 0), None), Ok(Change::Nothing));
        assert_eq!(registry.endpoint_count(), 0);
        assert_eq!(registry.select(ECHO, "echo", "node-9", &all_alive, &[]), None);
        assert_eq!(registry.apply(&key("blueprints/shop"), Some(b"x")), Ok(Change::Nothing));
    }

    #[test]
    fn local_comes_first_then_round_robin_over_live_remotes() {
        let registry = registry(&["node-1", "node-2", "node-3"]);
        assert_eq!(registry.select(ECHO, "echo", "node-2", &all_alive, &[]), Some(Target::Local));
        let remote = |n: &str| Some(Target::Remote(n.to_owned()));
        let seen = picks(&registry, "node-9", &[], 6);
        let mut counts = BTreeMap::new();
        for pick in &seen {
            *counts.entry(format!("{pick:?}")).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3, "{seen:?}");
        assert!(counts.values().all(|&c| c == 2), "{seen:?}");
        let node_2_down = |n: &str| n != "node-2";
        for _ in 0..4 {
            let pick = registry.select(ECHO, "echo", "node-9", &node_2_down, &[]);
            assert!(pick == remote("node-1") || pick == remote("node-3"), "{pick:?}");
        }
        assert_eq!(registry.select(ECHO, "other", "node-1", &all_alive, &[]), None);
    }

    fn pick_counts(registry: &Registry, local: &str, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for i in 0..n {
            let selector =
                Selector { local_node: local, is_alive: &all_alive, exclude: &[], load: &|_| 0, random: i as u64 * 7 };
            let pick = registry.pick(ECHO, "echo", &selector);
            *counts.entry(format!("{pick:?}")).or_insert(0) += 1;
        }
        counts
    }

    #[test]
    fn the_artifacts_strategy_places_calls_and_local_first_is_the_default() {
        let mut registry = registry(&["node-1", "node-2", "node-3"]);
        assert_eq!(pick_counts(&registry, "node-2", 30).get("Some(Local)"), Some(&30));
        registry.set_selections([(ECHO.to_owned(), Selection::RoundRobin)]);
        let counts = pick_counts(&registry, "node-2", 30);
        assert_eq!(counts.len(), 3, "{counts:?}");
        assert!(counts.values().all(|&c| c == 10), "{counts:?}");
        registry.set_selections([(ECHO.to_owned(), Selection::LeastLoaded)]);
        let busy_local = |node: &str| usize::from(node == "node-2") * 4;
        let selector =
            Selector { local_node: "node-2", is_alive: &all_alive, exclude: &[], load: &busy_local, random: 0 };
        assert!(matches!(registry.pick(ECHO, "echo", &selector), Some(Target::Remote(_))));
        let exclude = vec!["node-1".to_owned(), "node-3".to_owned()];
        let selector = Selector { exclude: &exclude, ..selector };
        assert_eq!(registry.pick(ECHO, "echo", &selector), Some(Target::Local));
    }

    #[test]
    fn leases_are_found_by_artifact_base() {
        let mut registry = Registry::new();
        let view = LeaseView { holder: Some("node-3".into()), epoch: 4, artifact: None, serving_until: None };
        registry.set_leases([("org.aether.examples:ledger".to_owned(), view.clone())]);
        assert_eq!(registry.lease_of("org.aether.examples:ledger:1.0.0"), Some(&view));
        assert_eq!(registry.lease_of(ECHO), None);
    }

    #[test]
    fn excluded_nodes_are_skipped_even_this_one() {
        let registry = registry(&["node-1", "node-2"]);
        let exclude = vec!["node-1".to_owned()];
        assert_eq!(picks(&registry, "node-1", &exclude, 3), vec![Some(Target::Remote("node-2".into())); 3]);
        let both = vec!["node-1".to_owned(), "node-2".to_owned()];
        assert_eq!(registry.select(ECHO, "echo", "node-1", &all_alive, &both), None);
    }

    #[test]
    fn same_shaped_routes_are_resolved_by_key_order_whatever_the_event_order() {
        for order in [[0, 1], [1, 0]] {
            let keys = [key("routes/GET/a/{x}"), key("routes/GET/a/{y}")];
            let mut registry = Registry::new();
            let mut errors = Vec::new();
            for i in order {
                if let Err(e) = registry.apply(&keys[i], Some(&route_value(ECHO, &format!("m{i}")))) {
                    errors.push(e);
                }
            }
            assert!(matches!(registry.lookup("GET", "/a/1"), Lookup::Found(m) if m.target.method == "m0"));
            assert_eq!(registry.shadowed(), &[("routes/GET/a/{y}".to_owned(), "routes/GET/a/{x}".to_owned())]);
            assert_eq!(errors.len(), usize::from(order[0] == 0), "reported when the shadowed one arrives");
        }
    }

    #[test]
    fn bad_values_are_reported_and_change_nothing() {
        let mut registry = registry(&[]);
        let route = key("routes/POST/x");
        for bad in [&b"not json"[..], br#"{"artifact":"nope","method":"m"}"#, br#"{"artifact":"g:a:1.0.0"}"#] {
            assert!(matches!(registry.apply(&route, Some(bad)), Err(RegistryError::BadRoute { .. })));
        }
        assert_eq!(registry.routes().len(), 1);
    }

    #[test]
    fn rebuild_replaces_everything() {
        let mut registry = registry(&["node-1"]);
        let route = key("routes/POST/orders");
        let orders = route_value("org.aether.examples:orders:1.0.0", "create");
        let endpoint = key("endpoints/org.aether.examples:orders:1.0.0/create/node-2:0");
        let errors = registry.rebuild([(&route, orders.as_slice()), (&endpoint, &b"{}"[..])]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(registry.lookup("GET", "/echo/x"), Lookup::NotFound);
        assert!(matches!(registry.lookup("POST", "/orders"), Lookup::Found(_)));
        assert_eq!(registry.endpoint_count(), 1);
        assert_eq!(registry.endpoints("org.aether.examples:orders:1.0.0", "create").len(), 1);
    }

    #[test]
    fn tables_are_bounded() {
        let mut registry = Registry::new();
        for i in 0..ENDPOINTS_MAX as u32 {
            registry.put_endpoint(ECHO, "echo", Endpoint { node: "n".into(), instance: i }).unwrap();
        }
        let full = registry.put_endpoint(ECHO, "echo", Endpoint { node: "m".into(), instance: 0 });
        assert!(matches!(full, Err(RegistryError::Full { table: "endpoint", .. })));
        let mut registry = Registry::new();
        for i in 0..ROUTES_MAX {
            registry
                .put_route("GET", &format!("/r{i}"), RouteTarget { artifact: ECHO.into(), method: "m".into() })
                .unwrap();
        }
        let full = registry.put_route("GET", "/one-more", RouteTarget { artifact: ECHO.into(), method: "m".into() });
        assert!(matches!(full, Err(RegistryError::Full { table: "route", .. })));
    }
}
