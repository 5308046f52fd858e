//! Checks of a parsed blueprint against the cluster it is posted to, which its text alone cannot tell:
//! route conflicts between slices (refusals) and instance counts above the node count (warnings).
//!
//! Two slices of different artifacts (group and artifact id; the version does not count) may not declare the
//! same route: the same HTTP method and the same path shape. The shape is the path with every `{param}` made
//! alike, as the route table matches it, so `/links/{id}` and `/links/{key}` are one route. Two versions of one
//! artifact may share routes: a version change runs both for a while.
//!
//! Routes come from the slices' descriptors, which the node reads from the libraries in its repository (the
//! blueprint itself does not list routes); this module only compares what it is given.
//!
//! A node runs at most `max_per_node` instances of a slice (default 1), so `instances` above the cluster's
//! node count times that is accepted with an [`InstanceWarning`]: the surplus is never placed.
//!
//! Invariants: pure and deterministic: claims are looked at in the order given (the deployed ones first), and
//! the first new claim whose route an earlier claim of another artifact holds is the conflict reported.
//! Conflicts among the deployed claims alone are not this check's to report (they were accepted before).

use super::Blueprint;
use kvstore::{Artifact, HttpMethod, RoutePath};
use std::collections::BTreeMap;
use std::fmt;

/// One route an artifact declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteClaim {
    pub artifact: Artifact,
    pub method: HttpMethod,
    pub path: RoutePath,
}

impl fmt::Display for RouteClaim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} of {}", self.method, self.path, self.artifact)
    }
}

/// A new claim on a route an earlier claim of another artifact holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConflict {
    /// The claim of the blueprint being posted.
    pub claim: RouteClaim,
    /// The claim that holds the route: another slice of the same blueprint, or one already deployed.
    pub held: RouteClaim,
}

impl fmt::Display for RouteConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (claim, held) = (&self.claim, &self.held);
        write!(f, "route {} {} of {} is also declared by {}", claim.method, claim.path, claim.artifact, held.artifact)?;
        if held.path != claim.path {
            write!(f, " (as {} {})", held.method, held.path)?;
        }
        Ok(())
    }
}

/// The path with every parameter segment written `{}`: two paths of one shape match the same requests.
pub fn shape(path: &RoutePath) -> String {
    let segments = path.as_str().split('/').map(|s| if s.starts_with('{') && s.ends_with('}') { "{}" } else { s });
    segments.collect::<Vec<_>>().join("/")
}

/// The first claim of `new` on a route that an earlier claim of another artifact holds, looking at `deployed`
/// first and then at `new` in order.
pub fn find_conflict(deployed: &[RouteClaim], new: &[RouteClaim]) -> Option<RouteConflict> {
    let mut held: BTreeMap<(HttpMethod, String), &RouteClaim> = BTreeMap::new();
    for claim in deployed {
        held.entry((claim.method, shape(&claim.path))).or_insert(claim);
    }
    for claim in new {
        let holder = *held.entry((claim.method, shape(&claim.path))).or_insert(claim);
        if holder.artifact.base() != claim.artifact.base() {
            return Some(RouteConflict { claim: claim.clone(), held: holder.clone() });
        }
    }
    None
}

/// A slice asking for more instances than the cluster has nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceWarning {
    /// `slices[i].instances`, 0-based as in blueprint errors.
    pub field: String,
    pub artifact: Artifact,
    pub instances: u32,
    pub nodes: usize,
    /// The slice's `max_per_node`.
    pub per_node: u32,
}

impl fmt::Display for InstanceWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let most = u64::try_from(self.nodes).unwrap_or(u64::MAX).saturating_mul(u64::from(self.per_node));
        let per_node = match self.per_node {
            1 => "one instance".to_owned(),
            n => format!("{n} instances"),
        };
        write!(
            f,
            "{}: {} asks for {} instances but the cluster has {} nodes; a node runs at most {per_node} of this \
             slice (max_per_node), so at most {most} will run",
            self.field, self.artifact, self.instances, self.nodes
        )
    }
}

/// A warning for every slice whose `instances` is above `nodes` times its `max_per_node`, in file order.
pub fn instance_warnings(blueprint: &Blueprint, nodes: usize) -> Vec<InstanceWarning> {
    let most = |per_node: u32| u64::try_from(nodes).unwrap_or(u64::MAX).saturating_mul(u64::from(per_node));
    (blueprint.slices.iter().enumerate())
        .filter(|(_, slice)| u64::from(slice.instances) > most(slice.max_per_node()))
        .map(|(i, slice)| InstanceWarning {
            field: format!("slices[{i}].instances"),
            artifact: slice.artifact.clone(),
            instances: slice.instances,
            nodes,
            per_node: slice.max_per_node(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(artifact: &str, method: HttpMethod, path: &str) -> RouteClaim {
        RouteClaim { artifact: Artifact::parse(artifact).unwrap(), method, path: RoutePath::parse(path).unwrap() }
    }

    #[test]
    fn shapes_ignore_parameter_names_only() {
        let path = |p: &str| RoutePath::parse(p).unwrap();
        assert_eq!(shape(&path("/links/{id}")), shape(&path("/links/{key}")));
        assert_ne!(shape(&path("/links/{id}")), shape(&path("/links/new")));
        assert_ne!(shape(&path("/links/{id}")), shape(&path("/links/{id}/stats")));
        assert_eq!(shape(&path("/")), "/");
    }

    #[test]
    fn two_artifacts_declaring_one_route_in_a_blueprint_conflict() {
        let new = [
            claim("org.example:links:1.0.0", HttpMethod::Get, "/links/{id}"),
            claim("org.example:other:1.0.0", HttpMethod::Post, "/links/{id}"),
            claim("org.example:other:1.0.0", HttpMethod::Get, "/links/{key}"),
        ];
        let conflict = find_conflict(&[], &new).expect("GET /links/{} twice");
        assert_eq!((conflict.claim.clone(), conflict.held.clone()), (new[2].clone(), new[0].clone()));
        let text = conflict.to_string();
        assert!(text.contains("org.example:links:1.0.0") && text.contains("org.example:other:1.0.0"), "{text}");
        assert!(text.contains("GET /links/{key}") && text.contains("(as GET /links/{id})"), "{text}");
    }

    #[test]
    fn a_new_blueprint_conflicts_with_a_deployed_one() {
        let deployed = [claim("org.example:links:1.0.0", HttpMethod::Get, "/links/{id}")];
        let new = [claim("org.other:links:1.0.0", HttpMethod::Get, "/links/{id}")];
        let conflict = find_conflict(&deployed, &new).expect("another group is another artifact");
        assert_eq!(conflict.held, deployed[0]);
        assert_eq!(
            conflict.to_string(),
            "route GET /links/{id} of org.other:links:1.0.0 is also declared by org.example:links:1.0.0"
        );
    }

    #[test]
    fn versions_of_one_artifact_share_routes() {
        let deployed = [claim("org.example:echo:1.0.0", HttpMethod::Get, "/echo/{msg}")];
        let new = [
            claim("org.example:echo:2.0.0", HttpMethod::Get, "/echo/{text}"),
            claim("org.example:echo:1.0.0", HttpMethod::Get, "/echo/{msg}"),
        ];
        assert_eq!(find_conflict(&deployed, &new), None);
    }

    #[test]
    fn conflicts_among_deployed_slices_alone_are_not_reported() {
        let deployed =
            [claim("org.example:a:1.0.0", HttpMethod::Get, "/x"), claim("org.example:b:1.0.0", HttpMethod::Get, "/x")];
        assert_eq!(find_conflict(&deployed, &[claim("org.example:c:1.0.0", HttpMethod::Get, "/y")]), None);
        let conflict = find_conflict(&deployed, &[claim("org.example:b:1.0.0", HttpMethod::Get, "/x")]).unwrap();
        assert_eq!(conflict.held, deployed[0], "the first holder is named");
    }

    #[test]
    fn instances_above_the_node_count_are_warned_about_per_slice() {
        let text = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 3\n\
                    [[slices]]\nartifact = \"g:b:1.0.0\"\ninstances = 4\n";
        let blueprint = crate::blueprint::parse(text, &|_| true).unwrap();
        assert_eq!(instance_warnings(&blueprint, 4), []);
        let warnings = instance_warnings(&blueprint, 2);
        let fields: Vec<&str> = warnings.iter().map(|w| w.field.as_str()).collect();
        assert_eq!(fields, ["slices[0].instances", "slices[1].instances"]);
        assert_eq!(
            warnings[1].to_string(),
            "slices[1].instances: g:b:1.0.0 asks for 4 instances but the cluster has 2 nodes; a node runs at most \
             one instance of this slice (max_per_node), so at most 2 will run"
        );
    }

    #[test]
    fn max_per_node_raises_what_fits_before_a_warning() {
        let text = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ninstances = 5\nmax_per_node = 2\n";
        let blueprint = crate::blueprint::parse(text, &|_| true).unwrap();
        assert_eq!(blueprint.slices[0].max_per_node(), 2);
        assert_eq!(instance_warnings(&blueprint, 3), []);
        let warnings = instance_warnings(&blueprint, 2);
        assert_eq!(
            warnings[0].to_string(),
            "slices[0].instances: g:a:1.0.0 asks for 5 instances but the cluster has 2 nodes; a node runs at most \
             2 instances of this slice (max_per_node), so at most 4 will run"
        );
        for (bad, reason) in [("0", "between 1 and 64"), ("65", "between 1 and 64"), ("-1", "between 1 and 64")] {
            let text = text.replace("max_per_node = 2", &format!("max_per_node = {bad}"));
            let error = crate::blueprint::parse(&text, &|_| true).unwrap_err();
            assert_eq!(error.field, "slices[0].max_per_node", "{error}");
            assert!(error.to_string().contains(reason), "{error}");
        }
    }
}
