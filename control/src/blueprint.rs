//! Blueprints: the operator's TOML description of an application, parsed and validated.
//!
//! ```toml
//! name = "shop"
//!
//! [[slices]]
//! artifact = "org.aether.examples:orders:1.0.0"
//! instances = 2          # default 1
//! min_instances = 1      # default 1: how many must be ACTIVE before dependents start
//! depends_on = ["org.aether.examples:inventory:1.0.0"]
//! [slices.config]        # strings, integers, floats and booleans only
//! currency = "EUR"
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
//! `min_instances <= instances`; `order` lists every artifact once, each after everything it depends on.
//! Parsing never panics, whatever the input.

use kvstore::{Artifact, Name};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use toml::Spanned;

/// Largest blueprint text, in bytes. The stored record holds the text and the parsed form, and must fit one
/// KV value (`kvstore::VALUE_BYTES_MAX`).
pub const BLUEPRINT_BYTES_MAX: usize = 128 * 1024;
/// Most slices in one blueprint.
pub const SLICES_MAX: usize = 256;
/// Most `depends_on` entries of one slice.
pub const DEPENDENCIES_MAX: usize = 64;
/// Most instances of one slice.
pub const INSTANCES_MAX: u32 = 1024;
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlueprint {
    name: Spanned<String>,
    #[serde(default)]
    slices: Vec<Spanned<RawSlice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlice {
    artifact: Spanned<String>,
    instances: Option<Spanned<i64>>,
    min_instances: Option<Spanned<i64>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    config: BTreeMap<String, Spanned<toml::Value>>,
}

/// A slice with the lines its parts came from, for errors found after parsing.
struct Located {
    spec: SliceSpec,
    index: usize,
    artifact_line: usize,
    dependency_lines: Vec<usize>,
}

/// Byte offset to 1-based line, by binary search over line starts.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect();
        Lines(starts)
    }

    fn of(&self, offset: usize) -> usize {
        match self.0.binary_search(&offset) {
            Ok(index) => index + 1,
            Err(index) => index,
        }
    }
}

/// Parses and validates blueprint text. `artifact_known` answers whether the repository has an artifact.
pub fn parse(text: &str, artifact_known: &dyn Fn(&Artifact) -> bool) -> Result<Blueprint, BlueprintError> {
    if text.len() > BLUEPRINT_BYTES_MAX {
        let reason = format!("blueprint is {} bytes, over the limit of {BLUEPRINT_BYTES_MAX}", text.len());
        return Err(error(BlueprintErrorKind::InvalidValue, 1, "blueprint", reason));
    }
    let lines = Lines::new(text);
    let raw: RawBlueprint = toml::from_str(text).map_err(|e| toml_error(&e, &lines))?;
    let name = parse_name(&raw.name, &lines)?;
    check_slice_count(&raw, &lines)?;
    let slices =
        raw.slices.iter().enumerate().map(|(i, s)| parse_slice(i, s, &lines)).collect::<Result<Vec<_>, _>>()?;
    check_duplicates(&slices)?;
    check_dependencies_exist(&slices)?;
    let order = dependency_order(&slices)?;
    check_known(&slices, artifact_known)?;
    Ok(Blueprint { name, slices: slices.into_iter().map(|s| s.spec).collect(), order })
}

fn error(kind: BlueprintErrorKind, line: usize, field: impl Into<String>, reason: impl Into<String>) -> BlueprintError {
    BlueprintError { kind, line, field: field.into(), reason: reason.into() }
}

fn toml_error(e: &toml::de::Error, lines: &Lines) -> BlueprintError {
    let line = e.span().map_or(1, |span| lines.of(span.start));
    let message = e.message().trim().to_owned();
    match unknown_field_name(&message) {
        Some(key) => error(BlueprintErrorKind::UnknownKey, line, key, message),
        None => error(BlueprintErrorKind::Syntax, line, field_of_message(&message), message),
    }
}

/// The key of a serde "unknown field `x`, expected ..." message.
fn unknown_field_name(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split_once('`').map(|(key, _)| key.to_owned())
}

/// The field a serde message is about (for "missing field `artifact`"), or `blueprint` when it names none.
fn field_of_message(message: &str) -> String {
    match message.split_once('`').and_then(|(_, rest)| rest.split_once('`')) {
        Some((field, _)) if !field.is_empty() => field.to_owned(),
        _ => "blueprint".to_owned(),
    }
}

fn parse_name(raw: &Spanned<String>, lines: &Lines) -> Result<Name, BlueprintError> {
    Name::parse(raw.get_ref()).map_err(|e| {
        error(BlueprintErrorKind::InvalidValue, lines.of(raw.span().start), "name", format!("{}: {}", e.part, e.reason))
    })
}

fn check_slice_count(raw: &RawBlueprint, lines: &Lines) -> Result<(), BlueprintError> {
    let count = raw.slices.len();
    if count == 0 {
        let reason = "a blueprint needs at least one [[slices]] entry";
        return Err(error(BlueprintErrorKind::InvalidValue, lines.of(raw.name.span().start), "slices", reason));
    }
    match raw.slices.get(SLICES_MAX) {
        Some(extra) => {
            let reason = format!("{count} slices, over the limit of {SLICES_MAX}");
            Err(error(BlueprintErrorKind::InvalidValue, lines.of(extra.span().start), "slices", reason))
        }
        None => Ok(()),
    }
}

fn parse_slice(index: usize, raw: &Spanned<RawSlice>, lines: &Lines) -> Result<Located, BlueprintError> {
    let field = |name: &str| format!("slices[{index}].{name}");
    let invalid = |span: std::ops::Range<usize>, name: &str, reason: String| {
        error(BlueprintErrorKind::InvalidValue, lines.of(span.start), field(name), reason)
    };
    let slice = raw.get_ref();
    let artifact = parse_artifact(&slice.artifact).map_err(|r| invalid(slice.artifact.span(), "artifact", r))?;
    let instances = match &slice.instances {
        Some(n) => check_count(*n.get_ref(), 1).map_err(|r| invalid(n.span(), "instances", r))?,
        None => 1,
    };
    let min_instances = match &slice.min_instances {
        Some(n) => check_count(*n.get_ref(), 0).map_err(|r| invalid(n.span(), "min_instances", r))?,
        None => 1,
    };
    if min_instances > instances {
        let span = slice.min_instances.as_ref().map_or(raw.span(), Spanned::span);
        let reason = format!("min_instances ({min_instances}) is more than instances ({instances})");
        return Err(invalid(span, "min_instances", reason));
    }
    let depends_on = parse_dependencies(index, slice, lines)?;
    let config = parse_config(index, slice, lines)?;
    let dependency_lines = slice.depends_on.iter().map(|d| lines.of(d.span().start)).collect();
    let spec = SliceSpec { artifact, instances, min_instances, depends_on, config };
    Ok(Located { spec, index, artifact_line: lines.of(slice.artifact.span().start), dependency_lines })
}

fn parse_artifact(raw: &Spanned<String>) -> Result<Artifact, String> {
    Artifact::parse(raw.get_ref()).map_err(|e| format!("{}: {}", e.part, e.reason))
}

fn check_count(value: i64, at_least: u32) -> Result<u32, String> {
    match u32::try_from(value) {
        Ok(n) if n < at_least => Err(format!("must be at least {at_least}, found {value}")),
        Ok(n) if n > INSTANCES_MAX => Err(format!("{n} is over the limit of {INSTANCES_MAX}")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("must be between {at_least} and {INSTANCES_MAX}, found {value}")),
    }
}

fn parse_dependencies(index: usize, slice: &RawSlice, lines: &Lines) -> Result<Vec<Artifact>, BlueprintError> {
    let mut depends_on: Vec<Artifact> = Vec::with_capacity(slice.depends_on.len().min(DEPENDENCIES_MAX));
    for (i, raw) in slice.depends_on.iter().enumerate() {
        let at = |reason: String| {
            error(
                BlueprintErrorKind::InvalidValue,
                lines.of(raw.span().start),
                format!("slices[{index}].depends_on[{i}]"),
                reason,
            )
        };
        if i == DEPENDENCIES_MAX {
            return Err(at(format!("more than {DEPENDENCIES_MAX} dependencies")));
        }
        let artifact = parse_artifact(raw).map_err(at)?;
        if depends_on.contains(&artifact) {
            return Err(at(format!("{artifact} is listed twice")));
        }
        depends_on.push(artifact);
    }
    Ok(depends_on)
}

fn parse_config(index: usize, slice: &RawSlice, lines: &Lines) -> Result<Map<String, Value>, BlueprintError> {
    let mut config = Map::new();
    for (i, (key, raw)) in slice.config.iter().enumerate() {
        let at = |reason: String| {
            error(
                BlueprintErrorKind::InvalidValue,
                lines.of(raw.span().start),
                format!("slices[{index}].config.{key}"),
                reason,
            )
        };
        if i == CONFIG_ENTRIES_MAX {
            return Err(at(format!("more than {CONFIG_ENTRIES_MAX} config entries")));
        }
        if key.is_empty() || key.len() > CONFIG_KEY_BYTES_MAX {
            return Err(at(format!("config keys must be 1 to {CONFIG_KEY_BYTES_MAX} bytes")));
        }
        config.insert(key.clone(), config_value(raw.get_ref()).map_err(at)?);
    }
    Ok(config)
}

fn config_value(value: &toml::Value) -> Result<Value, String> {
    match value {
        toml::Value::String(s) if s.len() > CONFIG_VALUE_BYTES_MAX => {
            Err(format!("string of {} bytes, over the limit of {CONFIG_VALUE_BYTES_MAX}", s.len()))
        }
        toml::Value::String(s) => Ok(Value::String(s.clone())),
        toml::Value::Integer(n) => Ok(Value::from(*n)),
        toml::Value::Float(x) => {
            serde_json::Number::from_f64(*x).map(Value::Number).ok_or_else(|| format!("{x} is not a finite number"))
        }
        toml::Value::Boolean(b) => Ok(Value::Bool(*b)),
        other => Err(format!("config values are strings, numbers or booleans, found a {}", other.type_str())),
    }
}

fn check_duplicates(slices: &[Located]) -> Result<(), BlueprintError> {
    let mut first_line: BTreeMap<&Artifact, usize> = BTreeMap::new();
    for slice in slices {
        if let Some(line) = first_line.insert(&slice.spec.artifact, slice.artifact_line) {
            let reason = format!("{} is already deployed by the slice on line {line}", slice.spec.artifact);
            let field = format!("slices[{}].artifact", slice.index);
            return Err(error(BlueprintErrorKind::DuplicateSlice, slice.artifact_line, field, reason));
        }
    }
    Ok(())
}

fn check_dependencies_exist(slices: &[Located]) -> Result<(), BlueprintError> {
    let known: BTreeSet<&Artifact> = slices.iter().map(|s| &s.spec.artifact).collect();
    for slice in slices {
        let missing = slice.spec.depends_on.iter().enumerate().find(|(_, d)| !known.contains(d));
        if let Some((i, dependency)) = missing {
            let reason = format!("{dependency} is not a slice of this blueprint");
            let field = format!("slices[{}].depends_on[{i}]", slice.index);
            return Err(error(BlueprintErrorKind::UnknownDependency, dependency_line(slice, i), field, reason));
        }
    }
    Ok(())
}

fn dependency_line(slice: &Located, i: usize) -> usize {
    slice.dependency_lines.get(i).copied().unwrap_or(slice.artifact_line)
}

fn check_known(slices: &[Located], artifact_known: &dyn Fn(&Artifact) -> bool) -> Result<(), BlueprintError> {
    match slices.iter().find(|s| !artifact_known(&s.spec.artifact)) {
        Some(slice) => {
            let reason = format!("{} is not in the artifact repository", slice.spec.artifact);
            let field = format!("slices[{}].artifact", slice.index);
            Err(error(BlueprintErrorKind::UnknownArtifact, slice.artifact_line, field, reason))
        }
        None => Ok(()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mark {
    New,
    OnPath,
    Done,
}

/// Depth-first walk in file order, emitting each slice after its dependencies; a dependency already on the
/// current path is a cycle, reported with the whole loop.
struct OrderWalk<'a> {
    slices: &'a [Located],
    index_of: BTreeMap<&'a Artifact, usize>,
    marks: Vec<Mark>,
    path: Vec<usize>,
    order: Vec<Artifact>,
}

fn dependency_order(slices: &[Located]) -> Result<Vec<Artifact>, BlueprintError> {
    let index_of = slices.iter().enumerate().map(|(i, s)| (&s.spec.artifact, i)).collect();
    let mut walk =
        OrderWalk { slices, index_of, marks: vec![Mark::New; slices.len()], path: Vec::new(), order: Vec::new() };
    for i in 0..slices.len() {
        walk.visit(i)?;
    }
    Ok(walk.order)
}

impl OrderWalk<'_> {
    fn visit(&mut self, i: usize) -> Result<(), BlueprintError> {
        if self.marks[i] == Mark::Done {
            return Ok(());
        }
        self.marks[i] = Mark::OnPath;
        self.path.push(i);
        let slice = &self.slices[i];
        for (d, dependency) in slice.spec.depends_on.iter().enumerate() {
            let Some(&j) = self.index_of.get(dependency) else { continue };
            match self.marks[j] {
                Mark::OnPath => return Err(self.cycle(i, d, j)),
                Mark::New => self.visit(j)?,
                Mark::Done => {}
            }
        }
        self.path.pop();
        self.marks[i] = Mark::Done;
        self.order.push(slice.spec.artifact.clone());
        Ok(())
    }

    /// The error for the edge `from -> to` (entry `d` of `from`'s `depends_on`) closing a loop.
    fn cycle(&self, from: usize, d: usize, to: usize) -> BlueprintError {
        let start = self.path.iter().position(|&p| p == to).unwrap_or(0);
        let mut names: Vec<String> =
            self.path[start..].iter().map(|&p| self.slices[p].spec.artifact.to_string()).collect();
        names.push(self.slices[to].spec.artifact.to_string());
        let slice = &self.slices[from];
        let reason = format!("dependency cycle: {}", names.join(" -> "));
        let field = format!("slices[{}].depends_on[{d}]", slice.index);
        error(BlueprintErrorKind::DependencyCycle, dependency_line(slice, d), field, reason)
    }
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
        assert_eq!((err.line, err.field.as_str()), (4, "replicas"), "{err}");
        let err = reject("name = \"shop\"\nowner = \"me\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n");
        assert_eq!((err.kind, err.line, err.field.as_str()), (BlueprintErrorKind::UnknownKey, 2, "owner"), "{err}");
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\n[slices.settings]\nx = 1\n");
        assert_eq!((err.kind, err.line, err.field.as_str()), (BlueprintErrorKind::UnknownKey, 4, "settings"), "{err}");
    }

    #[test]
    fn wrong_types_are_syntax_errors_on_their_line() {
        let err = reject("name = \"shop\"\n[[slices]]\nartifact = \"a:b:1.0.0\"\ninstances = \"two\"\n");
        assert_eq!((err.kind, err.line), (BlueprintErrorKind::Syntax, 4), "{err}");
    }

    #[test]
    fn a_missing_artifact_is_reported() {
        let err = reject("name = \"shop\"\n[[slices]]\ninstances = 2\n");
        assert_eq!(err.kind, BlueprintErrorKind::Syntax, "{err}");
        assert_eq!(err.field, "artifact", "{err}");
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
            prop_assert_eq!(err.field, key);
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
