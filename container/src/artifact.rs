//! Artifact coordinates `group:artifact:version` and where they live in a Maven-layout repository.
//!
//! Invariant: an [`Artifact`] is only made by [`Artifact::parse`], which allows nothing in a part
//! that could escape the repository folder (no `/`, no `..`, no empty parts), so
//! [`Artifact::repository_path`] is always a path below the repository root.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest coordinates accepted, in bytes.
pub const ARTIFACT_BYTES_MAX: usize = 256;

/// Slice coordinates.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Artifact {
    group: String,
    id: String,
    version: String,
}

/// Why text is not artifact coordinates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactError {
    pub text: String,
    pub reason: &'static str,
}

impl fmt::Display for ArtifactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is not group:artifact:version: {}", self.text, self.reason)
    }
}

impl std::error::Error for ArtifactError {}

impl Artifact {
    pub fn parse(text: &str) -> Result<Artifact, ArtifactError> {
        let bad = |reason| ArtifactError { text: text.to_owned(), reason };
        if text.len() > ARTIFACT_BYTES_MAX {
            return Err(bad("too long"));
        }
        let parts: Vec<&str> = text.split(':').collect();
        let [group, id, version] = parts[..] else {
            return Err(bad("expected three parts separated by ':'"));
        };
        if !group.split('.').all(is_name) {
            return Err(bad("the group is dot-separated names of letters, digits, '-' and '_'"));
        }
        if !is_name(id) {
            return Err(bad("the artifact is letters, digits, '-' and '_'"));
        }
        if !is_version(version) {
            return Err(bad("the version starts with a digit and has letters, digits, '.', '-', '+'"));
        }
        Ok(Artifact { group: group.to_owned(), id: id.to_owned(), version: version.to_owned() })
    }

    pub fn group(&self) -> &str {
        &self.group
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `{group as path}/{artifact}/{version}/{artifact}-{version}.so`, relative to the repository.
    pub fn repository_path(&self) -> PathBuf {
        let mut path: PathBuf = self.group.split('.').collect();
        path.push(&self.id);
        path.push(&self.version);
        path.push(format!("{}-{}.so", self.id, self.version));
        path
    }
}

fn is_name(part: &str) -> bool {
    !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_version(part: &str) -> bool {
    part.starts_with(|c: char| c.is_ascii_digit())
        && !part.contains("..")
        && part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+'))
}

impl fmt::Display for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.group, self.id, self.version)
    }
}

impl FromStr for Artifact {
    type Err = ArtifactError;

    fn from_str(text: &str) -> Result<Artifact, ArtifactError> {
        Artifact::parse(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_round_trip_and_map_to_maven_paths() {
        let artifact = Artifact::parse("org.aether.examples:echo:1.0.0").unwrap();
        assert_eq!(artifact.to_string(), "org.aether.examples:echo:1.0.0");
        assert_eq!(artifact.repository_path(), PathBuf::from("org/aether/examples/echo/1.0.0/echo-1.0.0.so"));
        assert!(Artifact::parse("g:a:2.0.0-rc.1+build5").is_ok());
    }

    #[test]
    fn coordinates_that_could_escape_the_repository_are_refused() {
        for bad in
            ["a:b", "a:b:c:d", "a..b:c:1", "../x:a:1", "g:a/b:1", "g:a:1/..", "g::1", "g:a:", "g:a:v1", "g:a:1..2"]
        {
            assert!(Artifact::parse(bad).is_err(), "{bad}");
        }
    }
}
