//! Slice data: the `data/` namespace that slices reach through `ctx.kv()`, and the quota accounting of it.
//!
//! A slice's keys live under one scope, `data/{blueprint}/{group:artifact}/`: per blueprint and artifact base,
//! never per version, so version 2 of a slice reads what version 1 wrote. [`DataScope`] names a scope and
//! [`DataPath`] is a key relative to it, as the slice spells it. The node derives the scope from the calling
//! artifact (never from what the slice sends), so a slice names only paths inside its own scope: a
//! [`DataPath`] is one or more `/`-separated segments of name characters (letters, digits, `.`, `_`, `-`, `:`),
//! never empty, `.` or `..`, at most [`DATA_PATH_BYTES_MAX`] bytes, so it cannot climb out of the scope or
//! spell another namespace.
//!
//! Quotas: a scope's usage is its key count and the bytes of its relative paths plus values (the scope prefix
//! is not counted, so the blueprint's name does not change what a slice may store). [`ScopeUsage`] is kept by
//! the state machine for every scope that holds keys and is a pure function of the entries, so it is rebuilt
//! from a snapshot by recounting. A [`crate::Command::Bounded`] write carries the limits and is refused
//! ([`crate::ApplyResult::QuotaExceeded`]) when it would grow a measure past its limit; a write that shrinks
//! a scope already over a (lowered) limit, and every delete, still applies.
//!
//! Invariant: `print(parse(s)) == s` for paths and data keys, like every other key.

use crate::error::ParseError;
use vocab::name::{check_segment, is_name_char, Name, NAME_BYTES_MAX};
use vocab::ArtifactBase;

/// Longest relative path of a slice data key, in bytes. With the longest blueprint name and artifact base the
/// whole key still fits [`crate::KEY_BYTES_MAX`].
pub const DATA_PATH_BYTES_MAX: usize = 512;

/// A key relative to a slice's scope: `orders/17`, `cart:alice`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataPath(String);

impl DataPath {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        if input.len() > DATA_PATH_BYTES_MAX {
            let reason = format!("is {} bytes, over the limit of {DATA_PATH_BYTES_MAX}", input.len());
            return Err(ParseError::new(input, "slice key", reason));
        }
        for segment in input.split('/') {
            check_segment(segment, "slice key segment", NAME_BYTES_MAX, is_name_char).map_err(|e| e.within(input))?;
        }
        Ok(DataPath(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Checks a prefix of relative paths, for listing and watching: `""` (everything), or text that every
    /// complete segment of is a valid segment and whose last, possibly partial, segment holds only name
    /// characters (`orders/`, `orders/1`). `.` and `..` segments and empty segments other than the last are
    /// refused, as in paths.
    pub fn check_prefix(prefix: &str) -> Result<(), ParseError> {
        if prefix.len() > DATA_PATH_BYTES_MAX {
            let reason = format!("is {} bytes, over the limit of {DATA_PATH_BYTES_MAX}", prefix.len());
            return Err(ParseError::new(prefix, "slice key prefix", reason));
        }
        if prefix.is_empty() {
            return Ok(());
        }
        let segments: Vec<&str> = prefix.split('/').collect();
        let last = segments.len() - 1;
        for (i, segment) in segments.into_iter().enumerate() {
            if i == last && segment.is_empty() {
                break;
            }
            check_segment(segment, "slice key prefix segment", NAME_BYTES_MAX, is_name_char)
                .map_err(|e| e.within(prefix))?;
        }
        Ok(())
    }
}

/// The scope of one slice's data: a blueprint and an artifact base.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DataScope {
    pub blueprint: Name,
    pub base: ArtifactBase,
}

impl DataScope {
    pub fn new(blueprint: Name, base: ArtifactBase) -> Self {
        DataScope { blueprint, base }
    }

    /// `data/{blueprint}/{group:artifact}/`: every key of the scope starts with it, and no key of another
    /// scope does (each part is one segment, and the prefix ends with `/`).
    pub fn prefix(&self) -> String {
        format!("data/{}/{}/", self.blueprint, self.base)
    }

    /// The full key of `path` in this scope.
    pub fn key(&self, path: DataPath) -> crate::AetherKey {
        crate::AetherKey::Data { blueprint: self.blueprint.clone(), base: self.base.clone(), path }
    }
}

/// What one scope holds: keys, and bytes of relative paths plus values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScopeUsage {
    pub keys: u64,
    pub bytes: u64,
}

/// Which limit a [`crate::Command::Bounded`] write would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    Keys,
    Bytes,
}

impl Quota {
    /// `"keys"` or `"bytes"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Keys => "keys",
            Quota::Bytes => "bytes",
        }
    }
}

/// Parses `{blueprint}/{group:artifact}/{path}` (the rest of a `data/` key).
pub(crate) fn parse_data_key(rest: &str) -> Result<crate::AetherKey, ParseError> {
    let mut parts = rest.splitn(3, '/');
    let (Some(blueprint), Some(base), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(ParseError::new(rest, "key shape", "expected {blueprint}/{group}:{artifact}/{key}"));
    };
    Ok(crate::AetherKey::Data {
        blueprint: Name::parse_as(blueprint, "blueprint name")?,
        base: ArtifactBase::parse(base)?,
        path: DataPath::parse(path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AetherKey, KEY_BYTES_MAX};

    #[test]
    fn data_keys_round_trip_and_keep_their_scope() {
        let key = AetherKey::parse("data/shop/org.example:cart/users/alice").unwrap();
        assert_eq!(key.to_string(), "data/shop/org.example:cart/users/alice");
        let AetherKey::Data { blueprint, base, path } = &key else { panic!("not a data key: {key:?}") };
        let scope = DataScope::new(blueprint.clone(), base.clone());
        assert_eq!(scope.prefix(), "data/shop/org.example:cart/");
        assert_eq!(path.as_str(), "users/alice");
        assert!(key.to_string().starts_with(&scope.prefix()));
    }

    #[test]
    fn paths_cannot_climb_out_or_be_empty() {
        for bad in ["", "/a", "a/", "a//b", "..", "a/../b", ".", "a/./b", "a b", "a\0", "é", "a?b"] {
            assert!(DataPath::parse(bad).is_err(), "{bad:?} was accepted");
        }
        for good in ["a", "a/b", "cart:alice", "v1.2_x-y", "..a", "a.."] {
            assert_eq!(DataPath::parse(good).map(|p| p.as_str().to_owned()), Ok(good.to_owned()));
        }
        assert!(DataPath::parse(&"a".repeat(DATA_PATH_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn prefixes_may_end_in_a_slash_or_a_partial_segment_and_nothing_else() {
        for good in ["", "a", "a/", "a/b", "orders/1"] {
            assert!(DataPath::check_prefix(good).is_ok(), "{good:?} was refused");
        }
        for bad in ["/", "/a", "a//", "../", "a/../", "..", "a/..", "a b", "a/\n"] {
            assert!(DataPath::check_prefix(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn the_longest_data_key_fits_the_key_limit() {
        let key = format!(
            "data/{}/{}:{}/{}",
            "b".repeat(NAME_BYTES_MAX),
            "g".repeat(128),
            "a".repeat(128),
            vec!["p".repeat(127); 4].join("/")
        );
        assert!(key.len() <= KEY_BYTES_MAX, "{} bytes", key.len());
        assert_eq!(AetherKey::parse(&key).map(|k| k.to_string()), Ok(key));
    }

    #[test]
    fn malformed_data_keys_name_the_wrong_part() {
        let cases = [
            ("data/shop/org.example:cart", "key shape"),
            ("data/sh op/org.example:cart/a", "blueprint name"),
            ("data/shop/org.example/a", "artifact base"),
            ("data/shop/org.example:cart:1.0.0/a", "artifact base"),
            ("data/shop/org.example:cart/a//b", "slice key segment"),
            ("data/shop/org.example:cart/..", "slice key segment"),
        ];
        for (input, part) in cases {
            let err = AetherKey::parse(input).unwrap_err();
            assert_eq!(err.part, part, "{input}: {err}");
        }
    }
}
