//! Dev mode: the slices named on the command line, loaded in a container of the app server's own,
//! and their routes registered in a registry of this node only.
//!
//! Route ownership: instances register in load order, and a later version of an artifact takes over a
//! route (same shape) of an earlier one, as after a rolling update; a route already served by another
//! artifact is a startup error naming both.

use container::{Artifact, Container, ContainerConfig, SliceHandle};
use invoke::routes::Lookup;
use invoke::{Registry, RouteTarget};

use super::{AppConfig, AppOptions};

pub(super) fn start_container(config: &AppConfig, options: &AppOptions) -> Result<Container, String> {
    let mut container_config = ContainerConfig::new(&config.repo, &config.node_id);
    if let Some(dir) = &config.work_dir {
        container_config.work_dir = dir.clone();
    }
    container_config.trusted_keys = config.trusted_keys.clone();
    if options.workers > 0 {
        container_config.pool.workers = options.workers;
    }
    let container = Container::new(container_config).map_err(|e| e.to_string())?;
    for text in &config.slices {
        let deployed = Artifact::parse(text)
            .map_err(|e| e.to_string())
            .and_then(|artifact| container.deploy(&artifact, Vec::new()).map_err(|e| e.to_string()));
        if let Err(e) = deployed {
            container.shutdown();
            return Err(e);
        }
    }
    Ok(container)
}

/// Routes of every active instance, in load order: a later version of an artifact takes over a route
/// of an earlier one.
pub(super) fn local_registry(node_id: &str, container: &Container) -> Result<Registry, String> {
    let mut registry = Registry::new();
    let handles: Vec<SliceHandle> = container.instances().iter().filter_map(|s| container.handle(s.id)).collect();
    for slice in handles {
        for route in &slice.info().routes {
            register_route(&mut registry, &slice, route).map_err(|e| format!("{}: {e}", slice.artifact()))?;
            log::info!("app route {} {} -> {} {}", route.http_method, route.path, slice.artifact(), route.method);
        }
    }
    log::debug!("node {node_id}: {} local routes", registry.routes().len());
    Ok(registry)
}

fn register_route(registry: &mut Registry, slice: &SliceHandle, route: &container::RouteInfo) -> Result<(), String> {
    let artifact = slice.artifact().to_string();
    let existing = match registry.lookup(&route.http_method, &example_path(&route.path)) {
        Lookup::Found(found) if same_shape(found.pattern, &route.path) => {
            Some((found.pattern.to_owned(), found.target.artifact.clone()))
        }
        _ => None,
    };
    if let Some((pattern, owner)) = existing {
        if artifact_base(&owner) != artifact_base(&artifact) {
            return Err(format!("route {} {} is already served by {owner}", route.http_method, route.path));
        }
        registry.remove_route(&route.http_method, &pattern);
    }
    let target = RouteTarget { artifact, method: route.method.clone() };
    registry.put_route(&route.http_method, &route.path, target).map(|_| ()).map_err(|e| e.to_string())
}

/// `group:artifact` of `group:artifact:version`.
fn artifact_base(artifact: &str) -> &str {
    artifact.rsplit_once(':').map_or(artifact, |(base, _)| base)
}

/// A concrete path matching `pattern` (each `{param}` becomes `x`), to find who owns a route.
fn example_path(pattern: &str) -> String {
    pattern.split('/').map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
}

/// Same literals, parameters in the same places.
fn same_shape(a: &str, b: &str) -> bool {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.split('/').collect(), b.split('/').collect());
    a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || (x.starts_with('{') && y.starts_with('{')))
}
