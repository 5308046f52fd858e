//! The HTTP route table: `METHOD /path/{param}` patterns to targets, matched without I/O.
//!
//! A pattern is `/` followed by `/`-separated segments, each a literal or a `{name}` parameter
//! (names are identifiers, unique within a pattern); `/` alone is the root. Matching splits the
//! request path the same way and percent-decodes each segment before comparing or capturing it.
//! When several patterns match, the one with a literal at the first position where they differ wins
//! (`/echo/status` beats `/echo/{msg}`), so the answer never depends on insertion order.
//!
//! Invariants: two routes with the same method and the same shape (same literals, parameters in the
//! same places) are refused at insert, so a lookup has at most one best match; lookups allocate
//! only for the captured parameters.

use std::borrow::Cow;
use std::fmt;

/// HTTP methods a route may name.
pub const METHODS: &[&str] = &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"];

/// Longest pattern accepted, in bytes, and most segments in one.
pub const PATTERN_BYTES_MAX: usize = 1024;
pub const SEGMENTS_MAX: usize = 32;

/// Why a route could not be added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteError {
    BadMethod { method: String },
    BadPattern { pattern: String, reason: &'static str },
    Conflict { method: String, pattern: String, existing: String },
}

impl fmt::Display for RouteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteError::BadMethod { method } => write!(f, "`{method}` is not an HTTP method routes can use"),
            RouteError::BadPattern { pattern, reason } => write!(f, "route pattern `{pattern}`: {reason}"),
            RouteError::Conflict { method, pattern, existing } => {
                write!(f, "route {method} {pattern} conflicts with {method} {existing}")
            }
        }
    }
}

impl std::error::Error for RouteError {}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
}

/// A parsed path pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

impl Pattern {
    /// Parse and check `text`.
    pub fn parse(text: &str) -> Result<Pattern, RouteError> {
        let bad = |reason| RouteError::BadPattern { pattern: text.to_owned(), reason };
        if text.len() > PATTERN_BYTES_MAX {
            return Err(bad("too long"));
        }
        let Some(rest) = text.strip_prefix('/') else {
            return Err(bad("must start with /"));
        };
        let mut segments = Vec::new();
        if !rest.is_empty() {
            for raw in rest.split('/') {
                segments.push(parse_segment(raw).map_err(bad)?);
            }
        }
        if segments.len() > SEGMENTS_MAX {
            return Err(bad("too many segments"));
        }
        if has_duplicate_param(&segments) {
            return Err(bad("a parameter name appears twice"));
        }
        Ok(Pattern { text: text.to_owned(), segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Names of the parameters, in order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Same literals and parameters in the same places (parameter names may differ).
    fn same_shape(&self, other: &Pattern) -> bool {
        self.segments.len() == other.segments.len()
            && self.segments.iter().zip(&other.segments).all(|pair| match pair {
                (Segment::Literal(a), Segment::Literal(b)) => a == b,
                (Segment::Param(_), Segment::Param(_)) => true,
                _ => false,
            })
    }

    /// Capture parameters if `segments` (already decoded) match.
    fn matches(&self, segments: &[Cow<'_, str>]) -> bool {
        segments.len() == self.segments.len()
            && self.segments.iter().zip(segments).all(|pair| match pair {
                (Segment::Literal(literal), actual) => literal == actual,
                (Segment::Param(_), _) => true,
            })
    }

    /// The parameters of `segments`, which match.
    fn capture(&self, segments: &[Cow<'_, str>]) -> Vec<(String, String)> {
        let pairs = self.segments.iter().zip(segments);
        pairs
            .filter_map(|(pattern, actual)| match pattern {
                Segment::Param(name) => Some((name.clone(), actual.to_string())),
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// Literal positions as a key: the greater key is the more specific pattern.
    fn specificity(&self) -> impl Iterator<Item = bool> + '_ {
        self.segments.iter().map(|s| matches!(s, Segment::Literal(_)))
    }
}

fn parse_segment(raw: &str) -> Result<Segment, &'static str> {
    if raw.is_empty() {
        return Err("empty segment (double or trailing /)");
    }
    if let Some(name) = raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
        if !is_identifier(name) {
            return Err("parameter names are identifiers: letters, digits, _");
        }
        return Ok(Segment::Param(name.to_owned()));
    }
    if raw.contains(['{', '}', '?', '#', '%']) {
        return Err("literal segments may not contain { } ? # %");
    }
    Ok(Segment::Literal(raw.to_owned()))
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn has_duplicate_param(segments: &[Segment]) -> bool {
    let names: Vec<&str> = segments
        .iter()
        .filter_map(|s| match s {
            Segment::Param(n) => Some(n.as_str()),
            Segment::Literal(_) => None,
        })
        .collect();
    names.iter().enumerate().any(|(i, n)| names[..i].contains(n))
}

/// A matched route: its target and the captured, decoded path parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Match<'a, T> {
    pub target: &'a T,
    pub pattern: &'a str,
    pub params: Vec<(String, String)>,
}

/// Result of a lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a, T> {
    Found(Match<'a, T>),
    /// The path matches routes, but none for this method.
    MethodNotAllowed {
        allowed: Vec<String>,
    },
    NotFound,
    /// The path is not valid (bad percent-encoding, not UTF-8, too many segments).
    BadPath {
        reason: &'static str,
    },
}

#[derive(Clone, Debug)]
struct Entry<T> {
    method: String,
    pattern: Pattern,
    target: T,
}

/// Routes to targets of type `T` (for example a slice instance and method).
#[derive(Clone, Debug)]
pub struct RouteTable<T> {
    entries: Vec<Entry<T>>,
}

impl<T> Default for RouteTable<T> {
    fn default() -> Self {
        RouteTable { entries: Vec::new() }
    }
}

impl<T> RouteTable<T> {
    pub fn new() -> RouteTable<T> {
        RouteTable::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Add `method pattern -> target`; refused if it is malformed or has the shape of an existing route.
    pub fn insert(&mut self, method: &str, pattern: &str, target: T) -> Result<(), RouteError> {
        let method = check_method(method)?;
        let pattern = Pattern::parse(pattern)?;
        let clash = self.entries.iter().find(|e| e.method == method && e.pattern.same_shape(&pattern));
        if let Some(existing) = clash {
            return Err(RouteError::Conflict {
                method,
                pattern: pattern.text,
                existing: existing.pattern.text.clone(),
            });
        }
        self.entries.push(Entry { method, pattern, target });
        Ok(())
    }

    /// Remove every route whose target satisfies `remove`; returns how many went.
    pub fn remove_where(&mut self, mut remove: impl FnMut(&T) -> bool) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| !remove(&e.target));
        before - self.entries.len()
    }

    /// `(method, pattern, target)` of every route, in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &T)> {
        self.entries.iter().map(|e| (e.method.as_str(), e.pattern.as_str(), &e.target))
    }

    /// Find the route for `method` and `path` (the path only: no query string).
    pub fn lookup(&self, method: &str, path: &str) -> Lookup<'_, T> {
        let segments = match decode_path(path) {
            Ok(segments) => segments,
            Err(reason) => return Lookup::BadPath { reason },
        };
        let mut best: Option<&Entry<T>> = None;
        let mut allowed = Vec::new();
        for entry in &self.entries {
            if !entry.pattern.matches(&segments) {
                continue;
            }
            if !entry.method.eq_ignore_ascii_case(method) {
                allowed.push(entry.method.clone());
                continue;
            }
            let better = best.is_none_or(|b| entry.pattern.specificity().gt(b.pattern.specificity()));
            if better {
                best = Some(entry);
            }
        }
        match best {
            Some(entry) => {
                let params = entry.pattern.capture(&segments);
                Lookup::Found(Match { target: &entry.target, pattern: entry.pattern.as_str(), params })
            }
            None if !allowed.is_empty() => {
                allowed.sort();
                allowed.dedup();
                Lookup::MethodNotAllowed { allowed }
            }
            None => Lookup::NotFound,
        }
    }
}

fn check_method(method: &str) -> Result<String, RouteError> {
    let upper = method.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(RouteError::BadMethod { method: method.to_owned() })
    }
}

/// Split a request path into decoded segments (`/` is no segments; a trailing `/` is ignored), borrowed
/// where they hold no escape.
fn decode_path(path: &str) -> Result<Vec<Cow<'_, str>>, &'static str> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("path must start with /");
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        if segments.len() == SEGMENTS_MAX {
            return Err("too many path segments");
        }
        let segment =
            if raw.contains(['%', '+']) { Cow::Owned(percent_decode(raw, false)?) } else { Cow::Borrowed(raw) };
        segments.push(segment);
    }
    Ok(segments)
}

/// Decode `%XX` escapes (and `+` as space when `plus_is_space`, as in query strings).
pub fn percent_decode(text: &str, plus_is_space: bool) -> Result<String, &'static str> {
    if !text.contains(['%', '+']) {
        return Ok(text.to_owned());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
                let high = hex_value(hex[0]).ok_or("bad %-escape")?;
                let low = hex_value(hex[1]).ok_or("bad %-escape")?;
                out.push(high << 4 | low);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| "decoded path is not UTF-8")
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Split a request target into its path and query string (without the `?`); a `#fragment` is dropped.
pub fn split_target(target: &str) -> (&str, Option<&str>) {
    let target = target.split_once('#').map_or(target, |(before, _)| before);
    match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    }
}

/// Decode a query string into pairs, in order; pairs that do not decode are skipped.
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Some((percent_decode(name, true).ok()?, percent_decode(value, true).ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable<&'static str> {
        let mut table = RouteTable::new();
        table.insert("GET", "/echo/{msg}", "echo").unwrap();
        table.insert("POST", "/echo", "echo_body").unwrap();
        table.insert("GET", "/echo/status", "status").unwrap();
        table.insert("POST", "/counter/{name}/incr", "incr").unwrap();
        table.insert("GET", "/counter/{name}", "get").unwrap();
        table.insert("GET", "/", "root").unwrap();
        table
    }

    fn found(table: &RouteTable<&'static str>, method: &str, path: &str) -> (&'static str, Vec<(String, String)>) {
        match table.lookup(method, path) {
            Lookup::Found(m) => (*m.target, m.params),
            other => panic!("{method} {path}: {other:?}"),
        }
    }

    #[test]
    fn path_parameters_are_captured_and_decoded() {
        let table = table();
        assert_eq!(found(&table, "GET", "/echo/hi"), ("echo", vec![("msg".into(), "hi".into())]));
        assert_eq!(found(&table, "GET", "/echo/a%20b%2Fc"), ("echo", vec![("msg".into(), "a b/c".into())]));
        assert_eq!(found(&table, "POST", "/counter/x/incr"), ("incr", vec![("name".into(), "x".into())]));
        assert_eq!(found(&table, "get", "/counter/x/"), ("get", vec![("name".into(), "x".into())]));
        assert_eq!(found(&table, "GET", "/"), ("root", vec![]));
    }

    #[test]
    fn literals_beat_parameters_whatever_the_order() {
        let table = table();
        assert_eq!(found(&table, "GET", "/echo/status").0, "status");
        let mut reversed = RouteTable::new();
        reversed.insert("GET", "/echo/status", "status").unwrap();
        reversed.insert("GET", "/echo/{msg}", "echo").unwrap();
        assert_eq!(found(&reversed, "GET", "/echo/status").0, "status");
    }

    #[test]
    fn misses_say_why() {
        let table = table();
        assert_eq!(table.lookup("GET", "/nope"), Lookup::NotFound);
        assert_eq!(table.lookup("GET", "/echo/a/b"), Lookup::NotFound);
        assert_eq!(table.lookup("DELETE", "/echo"), Lookup::MethodNotAllowed { allowed: vec!["POST".into()] });
        assert!(matches!(table.lookup("GET", "/echo/%zz"), Lookup::BadPath { .. }));
        assert!(matches!(table.lookup("GET", "/echo/%ff"), Lookup::BadPath { .. }));
    }

    #[test]
    fn bad_patterns_and_conflicts_are_refused() {
        let mut table = table();
        for bad in ["echo", "/a//b", "/a/", "/{}", "/{1x}", "/{a}/{a}", "/a{b}", "/a%20"] {
            assert!(matches!(table.insert("GET", bad, "x"), Err(RouteError::BadPattern { .. })), "{bad}");
        }
        assert!(matches!(table.insert("FETCH", "/x", "x"), Err(RouteError::BadMethod { .. })));
        assert!(matches!(table.insert("GET", "/echo/{other}", "x"), Err(RouteError::Conflict { .. })));
        assert!(table.insert("PUT", "/echo/{other}", "x").is_ok());
    }

    #[test]
    fn routes_can_be_removed_by_target() {
        let mut table = table();
        assert_eq!(table.remove_where(|t| t.starts_with("echo")), 2);
        assert_eq!(table.lookup("GET", "/echo/hi"), Lookup::NotFound);
        assert_eq!(found(&table, "GET", "/echo/status").0, "status");
    }

    #[test]
    fn targets_split_and_queries_decode() {
        assert_eq!(split_target("/a/b?x=1&y=two+words#frag"), ("/a/b", Some("x=1&y=two+words")));
        assert_eq!(split_target("/a"), ("/a", None));
        assert_eq!(
            parse_query("x=1&y=two+words&flag&z=%41"),
            vec![
                ("x".into(), "1".into()),
                ("y".into(), "two words".into()),
                ("flag".into(), "".into()),
                ("z".into(), "A".into())
            ]
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// Percent-encode every byte outside unreserved characters.
    fn encode_segment(text: &str) -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    proptest! {
        #[test]
        fn any_path_gets_an_answer_never_a_panic(path in "\\PC{0,80}", method in "[A-Z]{1,7}") {
            let mut table = RouteTable::new();
            table.insert("GET", "/echo/{msg}", 1).unwrap();
            table.insert("POST", "/counter/{name}/incr", 2).unwrap();
            let _ = table.lookup(&method, &path);
            let _ = table.lookup(&method, &format!("/{path}"));
            let _ = parse_query(&path);
        }

        #[test]
        fn encoded_parameters_come_back_decoded(a in "\\PC{1,20}", b in "\\PC{1,20}") {
            let mut table = RouteTable::new();
            table.insert("GET", "/x/{a}/y/{b}", ()).unwrap();
            let path = format!("/x/{}/y/{}", encode_segment(&a), encode_segment(&b));
            match table.lookup("GET", &path) {
                Lookup::Found(found) => prop_assert_eq!(found.params, vec![("a".to_owned(), a), ("b".to_owned(), b)]),
                other => prop_assert!(false, "{path}: {other:?}"),
            }
        }
    }
}
