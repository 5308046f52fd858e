//! Blueprints: the operator's TOML description of an application, parsed and validated.
//!
//! ```toml
//! name = "shop"
//!
//! [[slices]]
//! artifact = "org.aether.examples:orders:1.0.0"
//! instances = 2          # default 1
//! min_instances = 1      # default 1: how many must be ACTIVE before dependents start
//! min_available = 1      # default instances - 1 (at least 1): ACTIVE instances a node drain keeps
//! max_per_node = 1       # default 1: instances one node may run (up to PER_NODE_MAX)
//! depends_on = ["org.aether.examples:inventory:1.0.0"]
//! [slices.config]        # strings, integers, floats and booleans only
//! currency = "EUR"
//! [slices.kv]            # the slice's state quota (ctx.kv()); see `quota`
//! max_keys = 1000
//!
//! [[slices]]
//! artifact = "org.aether.examples:inventory:1.0.0"
//! ```
//!
//! Every rejection is a [`BlueprintError`] with the 1-based line and the field (`slices[0].instances`,
//! 0-based index), so the management API can answer 400 with something a person can act on. Unknown keys are
//! errors: a typo such as `instance = 3` must not silently deploy one instance.
//!
//! Invariants of a parsed [`Blueprint`]: at least one slice; no artifact twice; every `depends_on` names a
//! slice of the same blueprint, at most once; no dependency cycle; `1 <= instances <= INSTANCES_MAX` and
//! `min_instances <= instances`; `1 <= min_available <= instances` when given; `1 <= max_per_node <= PER_NODE_MAX`
//! when given; `order` lists every artifact once, each after everything it depends on.
//! Parsing never panics, whatever the input.

//!
//! The module is split by step: [`parse`] turns text into slices with their source lines (TOML, types, values,
//! limits), [`validate`] checks the slices against each other and the repository, [`graph`] orders them by
//! dependency and finds cycles. This file holds the types and the entry point. [`checks`] holds what the text
//! alone cannot tell: route conflicts with other slices and instance counts above the node count.

pub mod behaviour;
pub mod checks;
mod graph;
mod parse;
pub mod quota;
mod validate;

use kvstore::{Artifact, Name};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;

/// Largest blueprint text, in bytes. The stored record holds the text and the parsed form, and must fit one
/// KV value (`kvstore::VALUE_BYTES_MAX`).
pub const BLUEPRINT_BYTES_MAX: usize = 128 * 1024;
/// Most slices in one blueprint.
pub const SLICES_MAX: usize = 256;
/// Most `depends_on` entries of one slice.
pub const DEPENDENCIES_MAX: usize = 64;
/// Most instances of one slice.
pub const INSTANCES_MAX: u32 = 1024;
/// Most instances of one slice on one node (`max_per_node`).
pub const PER_NODE_MAX: u32 = 64;
/// Most `[slices.config]` entries of one slice.
pub const CONFIG_ENTRIES_MAX: usize = 256;
/// Longest config key, in bytes.
pub const CONFIG_KEY_BYTES_MAX: usize = 128;
/// Longest config string value, in bytes.
pub const CONFIG_VALUE_BYTES_MAX: usize = 4096;

/// A validated blueprint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Blueprint {
    #[serde(with = "crate::text")]
    pub name: Name,
    /// In file order.
    pub slices: Vec<SliceSpec>,
    /// Every artifact of `slices`, dependencies first; ties keep file order.
    #[serde(with = "crate::text::seq")]
    pub order: Vec<Artifact>,
}

impl SliceSpec {
    /// ACTIVE instances a node drain never goes below: as written, else `instances - 1`, at least 1.
    pub fn min_available(&self) -> u32 {
        self.min_available.unwrap_or_else(|| default_min_available(self.instances))
    }

    /// Most instances of the slice on one node: as written, else 1. Past one, a node runs the instances as
    /// separate copies of the library (separate state), counted on one slice record (`copies`).
    pub fn max_per_node(&self) -> u32 {
        self.max_per_node.unwrap_or(1).clamp(1, PER_NODE_MAX)
    }

    /// The most instances scaling may set: as written, else `instances`.
    pub fn max_instances(&self) -> u32 {
        self.max_instances.unwrap_or(self.instances).max(self.instances)
    }
}

/// The disruption budget of a slice that does not set one: `instances - 1`, at least 1.
pub fn default_min_available(instances: u32) -> u32 {
    instances.saturating_sub(1).max(1)
}

impl Blueprint {
    pub fn slice(&self, artifact: &Artifact) -> Option<&SliceSpec> {
        self.slices.iter().find(|s| s.artifact == *artifact)
    }
}

/// One `[[slices]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceSpec {
    #[serde(with = "crate::text")]
    pub artifact: Artifact,
    pub instances: u32,
    pub min_instances: u32,
    /// The disruption budget as written (`None`: the default, see [`SliceSpec::min_available`]). Kept as
    /// written so blueprint records stored before the field existed still match their reparsed TOML.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_available: Option<u32>,
    /// The most instances scaling (the controller or `POST /api/scale`) may set, as written (`None`:
    /// `instances`); see [`SliceSpec::max_instances`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
    /// Whether the leader's scaling controller changes the instance count between `min_instances` and
    /// `max_instances` by load (off: `instances`, or an operator's `POST /api/scale`, is what runs).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub autoscale: bool,
    /// Most instances of the slice one node runs, as written (`None`: 1); see [`SliceSpec::max_per_node`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_node: Option<u32>,
    #[serde(with = "crate::text::seq")]
    pub depends_on: Vec<Artifact>,
    /// String keys to strings, numbers and booleans.
    pub config: Map<String, Value>,
}

/// What kind of problem a [`BlueprintError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlueprintErrorKind {
    /// Not TOML, or a value of the wrong TOML type, or a missing required key.
    Syntax,
    /// A key the blueprint format does not have.
    UnknownKey,
    /// A value of the right type that breaks a rule (bad coordinates, counts, names, limits).
    InvalidValue,
    /// The same artifact in two `[[slices]]` entries.
    DuplicateSlice,
    /// `depends_on` names an artifact that is not a slice of this blueprint.
    UnknownDependency,
    /// Slices that depend on each other in a loop.
    DependencyCycle,
    /// An artifact the node's repository does not have.
    UnknownArtifact,
}

/// A rejected blueprint: where, which field, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlueprintError {
    pub kind: BlueprintErrorKind,
    /// 1-based line of the offending value or key.
    pub line: usize,
    /// The field, for example `name`, `slices[1].depends_on[0]` or the unknown key itself.
    pub field: String,
    pub reason: String,
}

impl fmt::Display for BlueprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
    }
}

impl std::error::Error for BlueprintError {}

/// Parses and validates blueprint text. `artifact_known` answers whether the repository has an artifact.
pub fn parse(text: &str, artifact_known: &dyn Fn(&Artifact) -> bool) -> Result<Blueprint, BlueprintError> {
    if text.len() > BLUEPRINT_BYTES_MAX {
        let reason = format!("blueprint is {} bytes, over the limit of {BLUEPRINT_BYTES_MAX}", text.len());
        return Err(error(BlueprintErrorKind::InvalidValue, 1, "blueprint", reason));
    }
    let lines = parse::Lines::new(text);
    let raw: parse::RawBlueprint = toml::from_str(text).map_err(|e| parse::toml_error(&e, text, &lines))?;
    let name = parse::parse_name(&raw.name, &lines)?;
    parse::check_slice_count(&raw, &lines)?;
    let slices =
        raw.slices.iter().enumerate().map(|(i, s)| parse::parse_slice(i, s, &lines)).collect::<Result<Vec<_>, _>>()?;
    validate::check_duplicates(&slices)?;
    validate::check_dependencies_exist(&slices)?;
    let order = graph::dependency_order(&slices)?;
    validate::check_known(&slices, artifact_known)?;
    Ok(Blueprint { name, slices: slices.into_iter().map(|s| s.spec).collect(), order })
}

fn error(kind: BlueprintErrorKind, line: usize, field: impl Into<String>, reason: impl Into<String>) -> BlueprintError {
    BlueprintError { kind, line, field: field.into(), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"name = "shop"

[[slices]]
artifact = "org.aether.examples:orders:1.0.0"
instances = 2
min_instances = 1
depends_on = ["org.aether.examples:inventory:1.0.0", "org.aether.examples:pricing:1.0.0"]
[slices.config]
currency = "EUR"
retries = 3
ratio = 0.5
strict = true

[[slices]]
artifact = "org.aether.examples:inventory:1.0.0"

[[slices]]
artifact = "org.aether.examples:pricing:1.0.0"
depends_on = ["org.aether.examples:inventory:1.0.0"]
"#;

    fn any(_: &Artifact) -> bool {
        true
    }

    fn reject(text: &str) -> BlueprintError {
        parse(text, &any).unwrap_err()
    }

    fn art(s: &str) -> Artifact {
        Artifact::parse(s).unwrap()
    }

    #[test]
    fn the_example_parses_with_defaults_and_order() {
        let bp = parse(SHOP, &any).unwrap();
        assert_eq!(bp.name.as_str(), "shop");
        assert_eq!(bp.slices.len(), 3);
        let orders = &bp.slices[0];
        assert_eq!((orders.instances, orders.min_instances), (2, 1));
        assert_eq!(orders.config["currency"], "EUR");
        assert_eq!(orders.config["retries"], 3);
        assert_eq!(orders.config["strict"], true);
        let inventory = &bp.slices[1];
        assert_eq!((inventory.instances, inventory.min_instances), (1, 1));
        let order: Vec<String> = bp.order.iter().map(ToString::to_string).collect();
        assert_eq!(
            order,
            [
                "org.aether.examples:inventory:1.0.0",
                "org.aether.examples:pricing:1.0.0",
                "org.aether.examples:orders:1.0.0"
            ]
        );
    }

    #[test]
    fn the_parsed_form_round_trips_through_json() {
        let bp = parse(SHOP, &any).unwrap();
        let json = serde_json::to_string(&bp).unwrap();
        assert_eq!(serde_json::from_str::<Blueprint>(&json).unwrap(), bp);
    }

    #[test]
    fn syntax_errors_carry_the_line() {
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\ninstances = = 2\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::Syntax, 4), "{err}");
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\nreplicas = 3\n");
        assert_eq!(err.kind, BlueprintErrorKind::UnknownKey, "{err}");
        assert_eq!((err.line, err.field.as_str()), (4, "slices[0].replicas"), "{err}");
        let err = reject("name = \"shop\"\nowner = \"me\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n");
        assert_eq!((err.kind, err.line, err.field.as_str()), (BlueprintErrorKind::UnknownKey, 2, "owner"), "{err}");
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n[slices.settings]\nx = 1\n");
        assert_eq!(
            (err.kind, err.line, err.field.as_str()),
            (BlueprintErrorKind::UnknownKey, 4, "slices[0].settings"),
            "{err}"
        );
    }

    #[test]
    fn wrong_types_are_syntax_errors_on_their_line() {
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\ninstances = \"two\"\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::Syntax, 4), "{err}");
        assert_eq!(err.field, "slices[0].instances", "{err}");
        assert!(!err.reason.contains("two"), "the value is not echoed: {err}");
    }

    #[test]
    fn type_errors_name_the_field_path_in_every_form() {
        let base = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n[[slices]]\nartifact = \"g:b:1.0.0\"\n";
        let err = reject(&format!("{base}depends_on = \"g:a:1.0.0\"\n"));
        assert_eq!((err.line, err.field.as_str()), (6, "slices[1].depends_on"), "{err}");
        assert!(!err.reason.contains("g:a"), "{err}");
        let err = reject(&format!("{base}depends_on = [\"g:a:1.0.0\", 7]\n"));
        assert_eq!(err.field, "slices[1].depends_on[1]", "{err}");
        let err = reject("name = 5\n[[slices]]\nartifact = \"g:a:1.0.0\"\n");
        assert_eq!((err.line, err.field.as_str()), (1, "name"), "{err}");
        let err = reject(
            "name = \"s\"\nslices = [{ artifact = \"g:a:1.0.0\" }, { artifact = \"g:b:1.0.0\", instances = true }]\n",
        );
        assert_eq!(err.field, "slices[1].instances", "{err}");
        let err = reject("name = \"s\"\n[[slices]]\nartifact = \"org..x:a:1.0.0\"\n");
        assert_eq!((err.kind, err.field.as_str()), (BlueprintErrorKind::InvalidValue, "slices[0].artifact"), "{err}");
        assert!(!err.to_string().contains("org..x"), "{err}");
    }

    #[test]
    fn values_the_toml_parser_refuses_name_their_field() {
        let base = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n[[slices]]\nartifact = \"g:b:1.0.0\"\n";
        let err = reject(&format!("{base}instances = 99999999999999999999999\n"));
        assert_eq!(
            (err.kind, err.line, err.field.as_str()),
            (BlueprintErrorKind::Syntax, 6, "slices[1].instances"),
            "{err}"
        );
        let err = reject(&format!("{base}[slices.config]\ntimeout = 99999999999999999999999\n"));
        assert_eq!(err.field, "slices[1].config.timeout", "{err}");
        let err = reject("name = 99999999999999999999999\n[[slices]]\nartifact = \"g:a:1.0.0\"\n");
        assert_eq!((err.line, err.field.as_str()), (1, "name"), "{err}");
    }

    #[test]
    fn a_missing_artifact_is_reported() {
        let err = reject("name = \"shop\"\n[[slices]]\ninstances = 2\n");
        assert_eq!(err.kind, BlueprintErrorKind::Syntax, "{err}");
        assert_eq!(err.field, "slices[0].artifact", "{err}");
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n[[slices]]\ninstances = 2\n");
        assert_eq!((err.line, err.field.as_str()), (4, "slices[1].artifact"), "{err}");
    }

    #[test]
    fn bad_coordinates_name_the_field() {
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n[[slices]]\nartifact = \"a:b\"\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::InvalidValue, 5), "{err}");
        assert_eq!(err.field, "slices[1].artifact");
        let err = reject("name = \"s\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\ndepends_on = [\n  \"x\",\n]\n");
        assert_eq!((err.line, err.field.as_str()), (5, "slices[0].depends_on[0]"), "{err}");
    }

    #[test]
    fn duplicate_slices_point_at_the_second() {
        let err = reject("name = \"s\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::DuplicateSlice, 5), "{err}");
        assert_eq!(err.field, "slices[1].artifact");
        assert!(err.reason.contains("line 3"), "{err}");
    }

    #[test]
    fn cycles_are_named_in_full() {
        let text = "name = \"s\"\n\
            [[slices]]\nartifact = \"g:a:1.0.0\"\ndepends_on = [\"g:b:1.0.0\"]\n\
            [[slices]]\nartifact = \"g:b:1.0.0\"\ndepends_on = [\"g:c:1.0.0\"]\n\
            [[slices]]\nartifact = \"g:c:1.0.0\"\ndepends_on = [\"g:a:1.0.0\"]\n";
        let err = reject(text);
        assert_eq!(err.kind, BlueprintErrorKind::DependencyCycle, "{err}");
        assert_eq!((err.line, err.field.as_str()), (10, "slices[2].depends_on[0]"), "{err}");
        assert!(err.reason.contains("g:a:1.0.0 -> g:b:1.0.0 -> g:c:1.0.0 -> g:a:1.0.0"), "{err}");
    }

    #[test]
    fn a_slice_depending_on_itself_is_a_cycle() {
        let err = reject("name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ndepends_on = [\"g:a:1.0.0\"]\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::DependencyCycle, 4), "{err}");
    }

    #[test]
    fn dependencies_outside_the_blueprint_are_refused() {
        let err = reject("name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\ndepends_on = [\"g:z:1.0.0\"]\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::UnknownDependency, 4), "{err}");
        assert_eq!(err.field, "slices[0].depends_on[0]");
    }

    #[test]
    fn repeated_dependencies_are_refused() {
        let text = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n[[slices]]\nartifact = \"g:b:1.0.0\"\n\
            depends_on = [\"g:a:1.0.0\", \"g:a:1.0.0\"]\n";
        let err = reject(text);
        assert_eq!((err.line, err.field.as_str()), (6, "slices[1].depends_on[1]"), "{err}");
    }

    #[test]
    fn instance_counts_are_checked() {
        let base = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n";
        let err = reject(&format!("{base}instances = 0\n"));
        assert_eq!((err.line, err.field.as_str()), (4, "slices[0].instances"), "{err}");
        let err = reject(&format!("{base}instances = -3\n"));
        assert_eq!((err.line, err.field.as_str()), (4, "slices[0].instances"), "{err}");
        let err = reject(&format!("{base}instances = 2\nmin_instances = 3\n"));
        assert_eq!((err.line, err.field.as_str()), (5, "slices[0].min_instances"), "{err}");
        let err = reject(&format!("{base}instances = 5000\n"));
        assert_eq!(err.field, "slices[0].instances", "{err}");
        let bp = parse(&format!("{base}instances = 3\nmin_instances = 0\n"), &any).unwrap();
        assert_eq!((bp.slices[0].instances, bp.slices[0].min_instances), (3, 0));
    }

    #[test]
    fn min_available_defaults_below_instances_and_is_checked() {
        let base = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n";
        let bp = parse(&format!("{base}instances = 3\n"), &any).unwrap();
        assert_eq!((bp.slices[0].min_available, bp.slices[0].min_available()), (None, 2));
        let bp = parse(base, &any).unwrap();
        assert_eq!(bp.slices[0].min_available(), 1, "one instance: the budget is still 1");
        let bp = parse(&format!("{base}instances = 3\nmin_available = 3\n"), &any).unwrap();
        assert_eq!((bp.slices[0].min_available, bp.slices[0].min_available()), (Some(3), 3));
        let err = reject(&format!("{base}instances = 2\nmin_available = 3\n"));
        assert_eq!((err.line, err.field.as_str()), (5, "slices[0].min_available"), "{err}");
        let err = reject(&format!("{base}instances = 2\nmin_available = 0\n"));
        assert_eq!((err.line, err.field.as_str()), (5, "slices[0].min_available"), "{err}");
    }

    #[test]
    fn names_follow_key_rules() {
        let err = reject("name = \"my shop\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n");
        assert_eq!((err.kind, err.line, err.field.as_str()), (BlueprintErrorKind::InvalidValue, 1, "name"), "{err}");
        let err = reject("\n\nname = \"a/b\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n");
        assert_eq!((err.line, err.field.as_str()), (3, "name"), "{err}");
    }

    #[test]
    fn an_empty_blueprint_is_refused() {
        let err = reject("name = \"s\"\n");
        assert_eq!((err.line, err.field.as_str()), (1, "slices"), "{err}");
        let err = reject("");
        assert_eq!(err.kind, BlueprintErrorKind::Syntax, "{err}");
    }

    #[test]
    fn config_values_must_be_scalars() {
        let base = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n[slices.config]\nok = 1\n";
        let err = reject(&format!("{base}list = [1, 2]\n"));
        assert_eq!((err.line, err.field.as_str()), (6, "slices[0].config.list"), "{err}");
        let err = reject(&format!("{base}when = 1979-05-27\n"));
        assert_eq!((err.line, err.field.as_str()), (6, "slices[0].config.when"), "{err}");
        let err = reject(&format!("{base}x = nan\n"));
        assert_eq!(err.field, "slices[0].config.x", "{err}");
    }

    #[test]
    fn concurrency_reaches_the_nodes_as_config_and_is_bounded() {
        let any = |_: &Artifact| true;
        let base = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\n";
        let bp = parse(&format!("{base}concurrency = 4\n"), &any).unwrap();
        assert_eq!(bp.slices[0].config.get(parse::CONCURRENCY_KEY), Some(&Value::from(4)));
        let err = reject(&format!("{base}concurrency = 0\n"));
        assert_eq!((err.line, err.field.as_str()), (4, "slices[0].concurrency"), "{err}");
        let bp = parse(base, &any).unwrap();
        assert!(bp.slices[0].config.is_empty(), "no concurrency, no key");
    }

    #[test]
    fn unknown_artifacts_are_found_through_the_callback() {
        let known = |a: &Artifact| a.base().artifact() != "pricing";
        let err = parse(SHOP, &known).unwrap_err();
        assert_eq!(err.kind, BlueprintErrorKind::UnknownArtifact, "{err}");
        assert_eq!((err.line, err.field.as_str()), (18, "slices[2].artifact"), "{err}");
    }

    #[test]
    fn oversized_text_is_refused_before_parsing() {
        let text = format!("name = \"s\"\n#{}\n", "x".repeat(BLUEPRINT_BYTES_MAX));
        assert_eq!(reject(&text).field, "blueprint");
    }

    #[test]
    fn dependencies_come_first_whatever_the_file_order() {
        let text = "name = \"s\"\n\
            [[slices]]\nartifact = \"g:c:1.0.0\"\ndepends_on = [\"g:b:1.0.0\"]\n\
            [[slices]]\nartifact = \"g:b:1.0.0\"\ndepends_on = [\"g:a:1.0.0\"]\n\
            [[slices]]\nartifact = \"g:a:1.0.0\"\n";
        let bp = parse(text, &any).unwrap();
        assert_eq!(bp.order, vec![art("g:a:1.0.0"), art("g:b:1.0.0"), art("g:c:1.0.0")]);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn slices_text(count: usize) -> String {
        let mut text = "name = \"shop\"\n".to_owned();
        for i in 0..count {
            text += &format!("\n[[slices]]\nartifact = \"g:s{i}:1.0.0\"\ninstances = 1\n");
        }
        text
    }

    /// The 1-based line of slice `i`'s `instances` line in [`slices_text`].
    fn instances_line(i: usize) -> usize {
        1 + 4 * i + 4
    }

    proptest! {
        #[test]
        fn random_text_never_panics(text in "\\PC{0,400}") {
            let _ = parse(&text, &|_| true);
        }

        #[test]
        fn mangled_blueprints_never_panic(cut in 0usize..300, insert in "[\\[\\]=\"a-z0-9 \n.:,{}-]{0,12}") {
            let text = slices_text(3);
            let at = (0..=cut.min(text.len())).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
            let mangled = format!("{}{}{}", &text[..at], insert, &text[at..]);
            let _ = parse(&mangled, &|_| true);
        }

        #[test]
        fn an_unknown_key_is_reported_on_its_line(count in 1usize..8, pick in 0usize..8, key in "[a-z]{3,10}") {
            prop_assume!(!["artifact", "instances", "min_instances", "depends_on", "config"].contains(&key.as_str()));
            let slice = pick % count;
            let mut lines: Vec<String> = slices_text(count).lines().map(str::to_owned).collect();
            let line = instances_line(slice);
            lines.insert(line, format!("{key} = 1"));
            let err = parse(&lines.join("\n"), &|_| true).unwrap_err();
            prop_assert_eq!(err.kind, BlueprintErrorKind::UnknownKey);
            prop_assert_eq!(err.line, line + 1);
            prop_assert_eq!(err.field, format!("slices[{slice}].{key}"));
        }

        #[test]
        fn a_bad_count_is_reported_on_its_line(count in 1usize..8, pick in 0usize..8, value in -5i64..=0) {
            let slice = pick % count;
            let text = slices_text(count);
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let line = instances_line(slice);
            lines[line - 1] = format!("instances = {value}");
            let err = parse(&lines.join("\n"), &|_| true).unwrap_err();
            prop_assert_eq!(err.line, line);
            prop_assert_eq!(err.field, format!("slices[{slice}].instances"));
        }
    }
}
