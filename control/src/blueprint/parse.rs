//! Blueprint text to slices: TOML syntax and types, unknown keys, names, coordinates, counts, config values
//! and every size limit. Each slice keeps the lines its parts came from, for the later steps' errors.
//!
//! Errors name the field path (`slices[1].instances`, `slices[0].config.retries`), never echo the offending
//! value, and carry the 1-based line. Errors from the TOML layer (types, missing or unknown keys) carry only a
//! byte span, so the path is found by locating that span in the document's own key/value spans.

use super::SLICES_MAX;
use super::{error, BlueprintError, BlueprintErrorKind, SliceSpec};
use super::{CONFIG_ENTRIES_MAX, CONFIG_KEY_BYTES_MAX, CONFIG_VALUE_BYTES_MAX, DEPENDENCIES_MAX, INSTANCES_MAX};
use kvstore::{Artifact, Name};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBlueprint {
    pub(super) name: Spanned<String>,
    #[serde(default)]
    pub(super) slices: Vec<Spanned<RawSlice>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlice {
    artifact: Spanned<String>,
    instances: Option<Spanned<i64>>,
    min_instances: Option<Spanned<i64>>,
    /// The most instances scaling may reach (see `SliceSpec::max_instances`).
    max_instances: Option<Spanned<i64>>,
    /// Whether the scaling controller changes the instance count (see `SliceSpec::autoscale`).
    autoscale: Option<Spanned<bool>>,
    /// Most instances of the slice on one node (see `SliceSpec::max_per_node`).
    max_per_node: Option<Spanned<i64>>,
    /// The disruption budget: ACTIVE instances a drain never goes below (see `SliceSpec::min_available`).
    min_available: Option<Spanned<i64>>,
    #[serde(default)]
    depends_on: Vec<Spanned<String>>,
    #[serde(default)]
    config: BTreeMap<String, Spanned<toml::Value>>,
    /// Calls one instance runs at once (its bulkhead); reaches the node as config key `aether.concurrency`.
    concurrency: Option<Spanned<i64>>,
    /// `[slices.kv]`: the slice's state quota (see `quota`).
    kv: Option<super::quota::RawKv>,
    /// How calls pick an instance (see `behaviour`).
    selection: Option<Spanned<String>>,
    /// Only the lease holder serves (see `behaviour`).
    single_active: Option<Spanned<bool>>,
    /// `[slices.subscriptions.{topic}]`: delivery overrides (see `behaviour`).
    #[serde(default)]
    subscriptions: BTreeMap<String, Spanned<super::behaviour::RawSubscription>>,
}

/// The config key that carries a slice's `concurrency` to the nodes that run it.
pub const CONCURRENCY_KEY: &str = "aether.concurrency";
/// Most calls one instance may run at once.
pub const CONCURRENCY_MAX: i64 = 4096;

/// A slice with the lines its parts came from, for errors found after parsing.
pub(super) struct Located {
    pub(super) spec: SliceSpec,
    pub(super) index: usize,
    pub(super) artifact_line: usize,
    pub(super) dependency_lines: Vec<usize>,
}

/// Byte offset to 1-based line, by binary search over line starts.
pub(super) struct Lines(Vec<usize>);

impl Lines {
    pub(super) fn new(text: &str) -> Self {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(at, _)| at + 1)).collect();
        Lines(starts)
    }

    pub(super) fn of(&self, offset: usize) -> usize {
        match self.0.binary_search(&offset) {
            Ok(index) => index + 1,
            Err(index) => index,
        }
    }
}

pub(super) fn toml_error(e: &toml::de::Error, text: &str, lines: &Lines) -> BlueprintError {
    let line = e.span().map_or(1, |span| lines.of(span.start));
    let message = e.message().trim().to_owned();
    let located = e.span().and_then(|span| field_at(text, span.start).or_else(|| field_on_line(text, span.start)));
    let path = |key: &str| match &located {
        Some(at) if !at.is_empty() => format!("{at}.{key}"),
        _ => key.to_owned(),
    };
    if let Some(key) = quoted_after(&message, "unknown field `") {
        // The span is the unknown key itself, so the located path already ends with it.
        let field = located.clone().filter(|at| at.ends_with(&key)).unwrap_or(key);
        return error(BlueprintErrorKind::UnknownKey, line, field, message);
    }
    if let Some(key) = quoted_after(&message, "missing field `") {
        return error(BlueprintErrorKind::Syntax, line, path(&key), format!("missing key `{key}`"));
    }
    let field = located.filter(|at| !at.is_empty()).unwrap_or_else(|| "blueprint".to_owned());
    error(BlueprintErrorKind::Syntax, line, field, in_plain_words(&without_values(&message)))
}

/// A serde type message with the TOML words an operator knows instead of Rust type names
/// (`invalid type: string, expected i64` becomes `invalid type: string, expected a whole number`).
fn in_plain_words(message: &str) -> String {
    const WORDS: [(&str, &str); 6] = [
        ("expected i64", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("floating point", "a number with a fraction"),
        ("expected a map", "expected a table"),
    ];
    WORDS.iter().fold(message.to_owned(), |text, (rust, plain)| text.replace(rust, plain))
}

/// The text between `prefix` and the next backtick, when `message` starts with `prefix`.
fn quoted_after(message: &str, prefix: &str) -> Option<String> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(key, _)| key.to_owned())
}

/// A serde type or value message without the values it quotes (`invalid type: string "two", expected i64`
/// becomes `invalid type: string, expected i64`), so an error never echoes what the client sent.
fn without_values(message: &str) -> String {
    if !["invalid type", "invalid value", "invalid length"].iter().any(|p| message.starts_with(p)) {
        return message.to_owned();
    }
    let mut out = String::with_capacity(message.len());
    let mut quote: Option<char> = None;
    for c in message.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '`' => quote = Some(c),
            None => out.push(c),
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ").replace(" ,", ",")
}

/// The field path (`slices[1].instances`, `name`) of the innermost key or value whose span holds `offset`,
/// found in the document's own spans; `None` when the text is not a TOML document at all.
fn field_at(text: &str, offset: usize) -> Option<String> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let mut spans = Vec::new();
    table_spans("", document.as_table(), &mut spans);
    let containing = spans.iter().filter(|(_, span)| span.contains(&offset) || span.start == offset);
    containing.min_by_key(|(_, span)| span.len()).map(|(path, _)| path.clone())
}

/// For a document the TOML parser refuses (a number too large, a bad escape), which has no spans: the key
/// of the `key = value` line holding `offset`, under the last table header above it (`slices[1].instances`,
/// an array of tables counted by its headers). `None` when that line is not a plain `key =` line.
fn field_on_line(text: &str, offset: usize) -> Option<String> {
    let start = text.get(..offset)?.rfind('\n').map_or(0, |at| at + 1);
    let (key, _) = text[start..].lines().next()?.split_once('=')?;
    let key = key.trim();
    let bare = |name: &str| !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
    if !bare(key) {
        return None;
    }
    let mut table = String::new();
    let mut arrays: Vec<(String, usize)> = Vec::new();
    for line in text[..start].lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("[[").and_then(|rest| rest.split_once("]]")).map(|(n, _)| n.trim()) {
            let count = match arrays.iter_mut().find(|(array, _)| array == name) {
                Some((_, n)) => {
                    *n += 1;
                    *n
                }
                None => {
                    arrays.push((name.to_owned(), 0));
                    0
                }
            };
            table = format!("{name}[{count}]");
        } else if let Some(name) = line.strip_prefix('[').and_then(|rest| rest.split_once(']')).map(|(n, _)| n.trim()) {
            // A sub-table of an array of tables belongs to its last element.
            table = match arrays.iter().find(|(array, _)| name.starts_with(&format!("{array}."))) {
                Some((array, n)) => format!("{array}[{n}]{}", &name[array.len()..]),
                None => name.to_owned(),
            };
        }
    }
    if !bare(&table.replace(['[', ']'], "")) && !table.is_empty() {
        return None;
    }
    Some(join(&table, key))
}

type FieldSpans = Vec<(String, std::ops::Range<usize>)>;

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn table_spans(prefix: &str, table: &toml_edit::Table, out: &mut FieldSpans) {
    out.extend(table.span().map(|span| (prefix.to_owned(), span)));
    for (key, item) in table.iter() {
        let path = join(prefix, key);
        out.extend(table.key(key).and_then(toml_edit::Key::span).map(|span| (path.clone(), span)));
        match item {
            toml_edit::Item::Table(inner) => table_spans(&path, inner, out),
            toml_edit::Item::ArrayOfTables(array) => {
                for (i, inner) in array.iter().enumerate() {
                    table_spans(&format!("{path}[{i}]"), inner, out);
                }
            }
            toml_edit::Item::Value(value) => value_spans(&path, value, out),
            toml_edit::Item::None => {}
        }
    }
}

fn value_spans(path: &str, value: &toml_edit::Value, out: &mut FieldSpans) {
    out.extend(value.span().map(|span| (path.to_owned(), span)));
    match value {
        toml_edit::Value::Array(array) => {
            for (i, inner) in array.iter().enumerate() {
                value_spans(&format!("{path}[{i}]"), inner, out);
            }
        }
        toml_edit::Value::InlineTable(table) => {
            for (key, inner) in table.iter() {
                let inner_path = join(path, key);
                out.extend(table.key(key).and_then(toml_edit::Key::span).map(|span| (inner_path.clone(), span)));
                value_spans(&inner_path, inner, out);
            }
        }
        _ => {}
    }
}

pub(super) fn parse_name(raw: &Spanned<String>, lines: &Lines) -> Result<Name, BlueprintError> {
    Name::parse(raw.get_ref()).map_err(|e| {
        error(BlueprintErrorKind::InvalidValue, lines.of(raw.span().start), "name", format!("{}: {}", e.part, e.reason))
    })
}

pub(super) fn check_slice_count(raw: &RawBlueprint, lines: &Lines) -> Result<(), BlueprintError> {
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

pub(super) fn parse_slice(index: usize, raw: &Spanned<RawSlice>, lines: &Lines) -> Result<Located, BlueprintError> {
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
    let min_available = match &slice.min_available {
        Some(n) => {
            let value = check_count(*n.get_ref(), 1).map_err(|r| invalid(n.span(), "min_available", r))?;
            if value > instances {
                let reason = format!("min_available ({value}) is more than instances ({instances})");
                return Err(invalid(n.span(), "min_available", reason));
            }
            Some(value)
        }
        None => None,
    };
    let max_instances = match &slice.max_instances {
        Some(n) => {
            let value = check_count(*n.get_ref(), 1).map_err(|r| invalid(n.span(), "max_instances", r))?;
            if value < instances {
                let reason = format!("max_instances ({value}) is less than instances ({instances})");
                return Err(invalid(n.span(), "max_instances", reason));
            }
            Some(value)
        }
        None => None,
    };
    let autoscale = slice.autoscale.as_ref().is_some_and(|a| *a.get_ref());
    let max_per_node = match &slice.max_per_node {
        Some(n) => {
            let value = *n.get_ref();
            match u32::try_from(value) {
                Ok(n) if (1..=super::PER_NODE_MAX).contains(&n) => Some(n),
                _ => {
                    let reason = format!("must be between 1 and {}, found {value}", super::PER_NODE_MAX);
                    return Err(invalid(n.span(), "max_per_node", reason));
                }
            }
        }
        None => None,
    };
    let depends_on = parse_dependencies(index, slice, lines)?;
    let mut config = parse_config(index, slice, lines)?;
    if let Some(n) = &slice.concurrency {
        let value = *n.get_ref();
        if !(1..=CONCURRENCY_MAX).contains(&value) {
            let reason = format!("must be between 1 and {CONCURRENCY_MAX}, found {value}");
            return Err(invalid(n.span(), "concurrency", reason));
        }
        config.insert(CONCURRENCY_KEY.to_owned(), Value::from(value));
    }
    if let Some(kv) = &slice.kv {
        super::quota::add_to_config(index, kv, lines, &mut config)?;
    }
    super::behaviour::add_to_config(
        index,
        slice.selection.as_ref(),
        slice.single_active.as_ref(),
        &slice.subscriptions,
        lines,
        &mut config,
    )?;
    let dependency_lines = slice.depends_on.iter().map(|d| lines.of(d.span().start)).collect();
    let spec = SliceSpec {
        artifact,
        instances,
        min_instances,
        min_available,
        max_instances,
        autoscale,
        max_per_node,
        depends_on,
        config,
    };
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

#[cfg(test)]
mod plain_words_tests {
    #[test]
    fn type_errors_name_toml_types_not_rust_ones() {
        let text = "name = \"s\"\n[[slices]]\nartifact = \"g:a:1.0.0\"\nmax_per_node = \"two\"\n";
        let error = crate::blueprint::parse(text, &|_| true).unwrap_err();
        assert_eq!(error.field, "slices[0].max_per_node", "{error}");
        assert!(error.to_string().contains("expected a whole number"), "{error}");
        let text = text.replace("\"two\"", "1.5");
        let error = crate::blueprint::parse(&text, &|_| true).unwrap_err();
        assert!(error.to_string().contains("a number with a fraction, expected a whole number"), "{error}");
    }
}
