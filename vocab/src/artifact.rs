//! Slice artifacts: Maven-style coordinates `group:artifact:version` with a semantic version, and where one
//! lives in a Maven-layout repository folder.
//!
//! This is the only parser of coordinates: blueprints, uploads, KV keys and the container all use it, so a
//! string one of them accepts is accepted by all (a coordinate that passed the edge can never fail later).
//!
//! Invariants:
//! - parsing accepts only the canonical spelling (no leading zeros, no build metadata), so printing a parsed
//!   value gives back the input byte for byte, and two artifacts are equal exactly when their strings are;
//! - the group is dot-separated non-empty names and the artifact id one name, each of ASCII letters, digits,
//!   `-` and `_`; so no part can be empty, `.`, `..` or hold `/`, and [`Artifact::repository_path`] is always
//!   a relative path below the repository root.

use crate::error::ParseError;
use crate::name::check_segment;
use std::cmp::Ordering;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// Longest group or artifact id, in bytes.
pub const COORDINATE_BYTES_MAX: usize = 128;
/// Longest pre-release tag (the part after `-`), in bytes.
pub const PRE_RELEASE_BYTES_MAX: usize = 64;

/// A semantic version `MAJOR.MINOR.PATCH` with an optional pre-release tag (`1.2.0-rc.1`).
///
/// Ordered by semver precedence: `1.0.0-alpha < 1.0.0-alpha.1 < 1.0.0-beta < 1.0.0 < 1.0.1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SemVer {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    /// Pre-release identifiers, without the leading `-`; `None` for a release.
    pre: Option<String>,
}

impl SemVer {
    pub fn release(major: u64, minor: u64, patch: u64) -> Self {
        SemVer { major, minor, patch, pre: None }
    }

    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let (core, pre) = match input.split_once('-') {
            Some((core, pre)) => (core, Some(parse_pre_release(input, pre)?)),
            None => (input, None),
        };
        let mut numbers = core.split('.');
        let major = parse_numeric(input, numbers.next())?;
        let minor = parse_numeric(input, numbers.next())?;
        let patch = parse_numeric(input, numbers.next())?;
        if numbers.next().is_some() {
            return Err(ParseError::new(input, "version", "expected MAJOR.MINOR.PATCH"));
        }
        Ok(SemVer { major, minor, patch, pre })
    }

    pub fn pre_release(&self) -> Option<&str> {
        self.pre.as_deref()
    }

    pub fn is_pre_release(&self) -> bool {
        self.pre.is_some()
    }
}

fn parse_numeric(input: &str, part: Option<&str>) -> Result<u64, ParseError> {
    let digits = part.unwrap_or("");
    if !is_canonical_number(digits) {
        let reason = "expected MAJOR.MINOR.PATCH, each a number without leading zeros";
        return Err(ParseError::new(input, "version", reason));
    }
    digits.parse().map_err(|_| ParseError::new(input, "version", "number too large"))
}

/// Digits only, and no leading zero unless the number is zero itself.
fn is_canonical_number(digits: &str) -> bool {
    let all_digits = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    all_digits && (digits == "0" || !digits.starts_with('0'))
}

fn parse_pre_release(input: &str, pre: &str) -> Result<String, ParseError> {
    if pre.len() > PRE_RELEASE_BYTES_MAX {
        let reason = format!("pre-release tag over {PRE_RELEASE_BYTES_MAX} bytes");
        return Err(ParseError::new(input, "version", reason));
    }
    for ident in pre.split('.') {
        check_pre_release_identifier(input, ident)?;
    }
    Ok(pre.to_owned())
}

fn check_pre_release_identifier(input: &str, ident: &str) -> Result<(), ParseError> {
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-';
    if ident.is_empty() || !ident.bytes().all(allowed) {
        let reason = "pre-release identifiers are non-empty [0-9A-Za-z-] separated by '.'";
        return Err(ParseError::new(input, "version", reason));
    }
    let numeric = ident.bytes().all(|b| b.is_ascii_digit());
    if numeric && !is_canonical_number(ident) {
        let reason = "numeric pre-release identifiers must not have leading zeros";
        return Err(ParseError::new(input, "version", reason));
    }
    Ok(())
}

impl Ord for SemVer {
    fn cmp(&self, other: &Self) -> Ordering {
        let core = (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch));
        core.then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => compare_pre_release(a, b),
        })
    }
}

impl PartialOrd for SemVer {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Semver precedence of two pre-release tags: identifier by identifier, numeric ones numerically and below
/// alphanumeric ones, and a tag that is a prefix of the other first.
fn compare_pre_release(a: &str, b: &str) -> Ordering {
    let mut left = a.split('.');
    let mut right = b.split('.');
    loop {
        match (left.next(), right.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => match compare_identifier(x, y) {
                Ordering::Equal => continue,
                unequal => return unequal,
            },
        }
    }
}

fn compare_identifier(x: &str, y: &str) -> Ordering {
    let x_numeric = x.bytes().all(|b| b.is_ascii_digit());
    let y_numeric = y.bytes().all(|b| b.is_ascii_digit());
    match (x_numeric, y_numeric) {
        // Canonical numbers: the longer one is larger, equal lengths compare as text. No overflow.
        (true, true) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => x.cmp(y),
    }
}

impl fmt::Display for SemVer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        match &self.pre {
            Some(pre) => write!(f, "-{pre}"),
            None => Ok(()),
        }
    }
}

/// `group:artifact`, an artifact without its version (what a traffic split or a rolling update is about).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ArtifactBase {
    group: String,
    artifact: String,
}

impl ArtifactBase {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match input.split(':').collect::<Vec<_>>()[..] {
            [group, artifact] => Self::from_parts(input, group, artifact),
            _ => Err(ParseError::new(input, "artifact base", "expected group:artifact")),
        }
    }

    fn from_parts(input: &str, group: &str, artifact: &str) -> Result<Self, ParseError> {
        check_segment(group, "artifact group", COORDINATE_BYTES_MAX, is_group_char).map_err(|e| e.within(input))?;
        if group.split('.').any(str::is_empty) {
            let reason = "is dot-separated names; a name must not be empty (no leading, trailing or double '.')";
            return Err(ParseError::new(input, "artifact group", reason));
        }
        check_segment(artifact, "artifact id", COORDINATE_BYTES_MAX, is_id_char).map_err(|e| e.within(input))?;
        Ok(ArtifactBase { group: group.to_owned(), artifact: artifact.to_owned() })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn artifact(&self) -> &str {
        &self.artifact
    }

    pub fn with_version(self, version: SemVer) -> Artifact {
        Artifact(Arc::new(ArtifactParts { base: self, version }))
    }
}

/// Characters of an artifact id: ASCII letters, digits, `-`, `_`.
fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// Characters of an artifact group: those of an id, plus `.` between names.
fn is_group_char(b: u8) -> bool {
    is_id_char(b) || b == b'.'
}

impl fmt::Display for ArtifactBase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.group, self.artifact)
    }
}

/// `group:artifact:version`, one build of a slice.
///
/// Shared behind an `Arc`: artifacts are cloned into every record, key, job and error, and a pointer keeps
/// those cheap and small. Equality, order and hashing are those of the parts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Artifact(Arc<ArtifactParts>);

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ArtifactParts {
    base: ArtifactBase,
    version: SemVer,
}

impl Artifact {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let [group, artifact, version] = input.split(':').collect::<Vec<_>>()[..] else {
            let reason = "expected group:artifact:version";
            return Err(ParseError::new(input, "artifact", reason));
        };
        let base = ArtifactBase::from_parts(input, group, artifact)?;
        let version = SemVer::parse(version).map_err(|e| e.within(input))?;
        Ok(base.with_version(version))
    }

    pub fn base(&self) -> &ArtifactBase {
        &self.0.base
    }

    pub fn version(&self) -> &SemVer {
        &self.0.version
    }

    pub fn group(&self) -> &str {
        self.0.base.group()
    }

    /// The artifact id (`echo` in `org.example:echo:1.0.0`).
    pub fn id(&self) -> &str {
        self.0.base.artifact()
    }

    /// `{group as folders}/{id}/{version}/{id}-{version}.so`, relative to the repository root.
    pub fn repository_path(&self) -> PathBuf {
        let mut path: PathBuf = self.group().split('.').collect();
        path.push(self.id());
        path.push(self.version().to_string());
        path.push(format!("{}-{}.so", self.id(), self.version()));
        path
    }
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.base(), self.version())
    }
}

macro_rules! from_str_via_parse {
    ($($ty:ident),*) => {$(
        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }
    )*};
}

from_str_via_parse!(SemVer, ArtifactBase, Artifact);

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> SemVer {
        SemVer::parse(s).unwrap()
    }

    #[test]
    fn artifacts_round_trip() {
        for s in ["org.example:echo:1.0.0", "a:b:0.0.1-rc.1", "g:a-b_c:10.20.30-alpha-2.0"] {
            assert_eq!(Artifact::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn artifact_parts_are_reachable() {
        let a = Artifact::parse("org.example:echo:1.2.3").unwrap();
        assert_eq!(a.base().group(), "org.example");
        assert_eq!(a.base().artifact(), "echo");
        assert_eq!(a.version(), &SemVer::release(1, 2, 3));
    }

    #[test]
    fn non_canonical_versions_are_rejected() {
        for bad in ["01.0.0", "1.0", "1.0.0.0", "1.0.0+build", "1.0.0-", "1.0.0-01", "1.0.0-a..b", "v1.0.0"] {
            assert!(SemVer::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn artifact_errors_name_the_part() {
        assert_eq!(Artifact::parse("org:echo").unwrap_err().part, "artifact");
        assert_eq!(Artifact::parse("org:echo:1.0").unwrap_err().part, "version");
        assert_eq!(Artifact::parse("g:a:b:1.0.0").unwrap_err().part, "artifact");
        assert_eq!(Artifact::parse(":echo:1.0.0").unwrap_err().part, "artifact group");
        let err = Artifact::parse("org:ec/ho:1.0.0").unwrap_err();
        assert_eq!((err.part, err.input.as_str()), ("artifact id", "org:ec/ho:1.0.0"));
    }

    #[test]
    fn coordinates_map_to_maven_paths() {
        let artifact = Artifact::parse("org.aether.examples:echo:1.0.0").unwrap();
        assert_eq!(artifact.repository_path(), PathBuf::from("org/aether/examples/echo/1.0.0/echo-1.0.0.so"));
        assert_eq!((artifact.group(), artifact.id()), ("org.aether.examples", "echo"));
    }

    #[test]
    fn coordinates_that_could_escape_the_repository_are_refused() {
        let bad = [
            "org..x:a:1.0.0",
            ".org:a:1.0.0",
            "org.:a:1.0.0",
            "..:a:1.0.0",
            "../x:a:1.0.0",
            "g:a/b:1.0.0",
            "g:..:1.0.0",
            "g:a.b:1.0.0",
            "g::1.0.0",
            "g:a:",
            "g:a:1.0.0/..",
            "g:a:1..2",
        ];
        for text in bad {
            assert!(Artifact::parse(text).is_err(), "{text}");
        }
        let err = Artifact::parse("org..x:a:1.0.0").unwrap_err();
        assert_eq!(err.part, "artifact group");
        assert!(err.reason.contains("must not be empty"), "{}", err.reason);
    }

    #[test]
    fn semver_precedence_follows_the_spec() {
        let ordered = [
            "1.0.0-alpha",
            "1.0.0-alpha.1",
            "1.0.0-alpha.beta",
            "1.0.0-beta",
            "1.0.0-beta.2",
            "1.0.0-beta.11",
            "1.0.0-rc.1",
            "1.0.0",
            "1.0.1",
            "1.1.0",
            "2.0.0",
        ];
        for pair in ordered.windows(2) {
            assert!(v(pair[0]) < v(pair[1]), "{} < {}", pair[0], pair[1]);
        }
    }

    #[test]
    fn huge_numeric_pre_release_identifiers_compare_without_overflow() {
        assert!(v("1.0.0-99999999999999999999998") < v("1.0.0-99999999999999999999999"));
        assert!(v("1.0.0-9") < v("1.0.0-10"));
    }

    #[test]
    fn version_numbers_too_large_are_rejected() {
        let err = SemVer::parse("99999999999999999999999.0.0").unwrap_err();
        assert_eq!(err.reason, "number too large");
    }
}
