//! Plain identifiers used inside keys: [`NodeId`] and [`Name`].
//!
//! Both are validated once, when parsed, and are then known to be a single key segment: non-empty, bounded,
//! free of `/`, and never `.` or `..` (HTTP clients normalise those away, which would silently change the key
//! an operator addressed through the management API).

use crate::error::ParseError;
use std::fmt;
use std::str::FromStr;

/// Longest node id, in bytes.
pub const NODE_ID_BYTES_MAX: usize = 64;
/// Longest [`Name`], in bytes.
pub const NAME_BYTES_MAX: usize = 128;

/// Characters of a node id: letters, digits, `.`, `_`, `-`. No `:`, because endpoint keys write
/// `{node}:{instance}`.
pub fn is_node_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
}

/// Characters of a [`Name`]: those of a node id plus `:` (logger paths such as `invoke::routes`).
pub fn is_name_char(b: u8) -> bool {
    is_node_char(b) || b == b':'
}

/// Checks that `segment` is one valid key segment of at most `bytes_max` bytes drawn from `allowed`.
pub fn check_segment(
    segment: &str,
    part: &'static str,
    bytes_max: usize,
    allowed: fn(u8) -> bool,
) -> Result<(), ParseError> {
    if segment.is_empty() {
        return Err(ParseError::new(segment, part, "must not be empty"));
    }
    if segment.len() > bytes_max {
        let reason = format!("is {} bytes, over the limit of {bytes_max}", segment.len());
        return Err(ParseError::new(segment, part, reason));
    }
    if segment == "." || segment == ".." {
        return Err(ParseError::new(segment, part, "must not be \".\" or \"..\""));
    }
    match segment.chars().find(|c| !u8::try_from(*c).is_ok_and(allowed)) {
        Some(bad) => Err(ParseError::new(segment, part, format!("character {bad:?} is not allowed"))),
        None => Ok(()),
    }
}

/// The id of a cluster node, as configured for it (for example `node-1`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(String);

impl NodeId {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        check_segment(input, "node", NODE_ID_BYTES_MAX, is_node_char)?;
        Ok(NodeId(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A single-segment name: blueprint, metric, logger, config section, topic, subscriber, task, update or alert
/// id, slice method.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        Self::parse_as(input, "name")
    }

    /// Parses `input`, naming it `part` in errors (`"topic"`, `"metric"`, ...).
    pub fn parse_as(input: &str, part: &'static str) -> Result<Self, ParseError> {
        check_segment(input, part, NAME_BYTES_MAX, is_name_char)?;
        Ok(Name(input.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_traits {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $ty {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                Self::parse(s)
            }
        }
    };
}

string_newtype_traits!(NodeId);
string_newtype_traits!(Name);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_accept_plain_identifiers() {
        for ok in ["node-1", "n", "host.example.com", "a_b"] {
            assert_eq!(NodeId::parse(ok).map(|n| n.to_string()), Ok(ok.to_owned()));
        }
    }

    #[test]
    fn node_ids_reject_separators_and_dots() {
        for bad in ["", ".", "..", "a/b", "a:1", "a b", "ü"] {
            assert!(NodeId::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn node_id_length_is_bounded() {
        assert!(NodeId::parse(&"a".repeat(NODE_ID_BYTES_MAX)).is_ok());
        let err = NodeId::parse(&"a".repeat(NODE_ID_BYTES_MAX + 1)).unwrap_err();
        assert!(err.reason.contains("over the limit"));
    }

    #[test]
    fn names_allow_colons_for_logger_paths() {
        assert!(Name::parse("invoke::routes").is_ok());
        assert!(Name::parse("org.example.Orders").is_ok());
    }

    #[test]
    fn bad_character_is_named() {
        let err = Name::parse("ab#c").unwrap_err();
        assert_eq!(err.part, "name");
        assert!(err.reason.contains("'#'"), "{}", err.reason);
        let err = Name::parse("añb").unwrap_err();
        assert!(err.reason.contains("'ñ'"), "{}", err.reason);
    }
}
