//! The parts of a route key: an HTTP method and a path pattern.
//!
//! A [`RoutePath`] is an absolute HTTP path pattern (`/echo/{msg}`): it starts with `/`, has no empty
//! segments (no `//`, no trailing `/` except the root path `/` itself), no `.` or `..` segments, and no
//! percent-escapes, so each route has exactly one spelling.

use crate::error::ParseError;
use std::fmt;
use std::str::FromStr;

/// Longest route path, in bytes.
pub const ROUTE_PATH_BYTES_MAX: usize = 512;

/// The HTTP methods a slice route can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HttpMethod {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
}

impl HttpMethod {
    pub const ALL: [HttpMethod; 7] = [
        HttpMethod::Get,
        HttpMethod::Head,
        HttpMethod::Post,
        HttpMethod::Put,
        HttpMethod::Delete,
        HttpMethod::Patch,
        HttpMethod::Options,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Head => "HEAD",
            HttpMethod::Post => "POST",
            HttpMethod::Put => "PUT",
            HttpMethod::Delete => "DELETE",
            HttpMethod::Patch => "PATCH",
            HttpMethod::Options => "OPTIONS",
        }
    }

    /// Parses the upper-case method name (`GET`); lower case is rejected so a route has one spelling.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        match Self::ALL.into_iter().find(|m| m.as_str() == input) {
            Some(method) => Ok(method),
            None => {
                let reason = "expected one of GET, HEAD, POST, PUT, DELETE, PATCH, OPTIONS";
                Err(ParseError::new(input, "http method", reason))
            }
        }
    }
}

impl fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for HttpMethod {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

/// An absolute HTTP path pattern, for example `/orders/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RoutePath(String);

impl RoutePath {
    /// Parses an absolute path (`/echo/{msg}`).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let Some(relative) = input.strip_prefix('/') else {
            return Err(ParseError::new(input, "route path", "must start with '/'"));
        };
        Self::parse_relative(relative).map_err(|e| e.within(input))
    }

    /// Parses the path as it appears in a route key, without its leading `/` (`echo/{msg}`; empty for `/`).
    pub(crate) fn parse_relative(relative: &str) -> Result<Self, ParseError> {
        if relative.len() + 1 > ROUTE_PATH_BYTES_MAX {
            let reason = format!("over the limit of {ROUTE_PATH_BYTES_MAX} bytes");
            return Err(ParseError::new(relative, "route path", reason));
        }
        if !relative.is_empty() {
            relative.split('/').try_for_each(check_path_segment)?;
        }
        Ok(RoutePath(format!("/{relative}")))
    }

    /// The path, starting with `/`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/`, as written in a route key.
    pub(crate) fn relative(&self) -> &str {
        &self.0[1..]
    }
}

fn check_path_segment(segment: &str) -> Result<(), ParseError> {
    if segment.is_empty() {
        let reason = "empty segment (no '//' and no trailing '/'; the key routes/GET/echo is path /echo)";
        return Err(ParseError::new(segment, "route path", reason));
    }
    if segment == "." || segment == ".." {
        return Err(ParseError::new(segment, "route path", "'.' and '..' segments are not allowed"));
    }
    match segment.chars().find(|c| !is_path_char(*c)) {
        Some(bad) => {
            let reason = format!("character {bad:?} is not allowed");
            Err(ParseError::new(segment, "route path", reason))
        }
        None => Ok(()),
    }
}

/// RFC 3986 path characters without `%` (no escapes, so one spelling per path), plus `{}` for parameters.
fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@{}".contains(c)
}

impl fmt::Display for RoutePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for RoutePath {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, ParseError> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip() {
        for m in HttpMethod::ALL {
            assert_eq!(HttpMethod::parse(m.as_str()), Ok(m));
        }
        assert!(HttpMethod::parse("get").is_err());
    }

    #[test]
    fn paths_keep_their_leading_slash() {
        let path = RoutePath::parse("/echo/{msg}").unwrap();
        assert_eq!(path.as_str(), "/echo/{msg}");
        assert_eq!(path.relative(), "echo/{msg}");
        assert_eq!(RoutePath::parse("/").unwrap().relative(), "");
    }

    #[test]
    fn non_canonical_paths_are_rejected() {
        for bad in ["echo", "//echo", "/echo/", "/a//b", "/a/../b", "/a/./b", "/a%20b", "/a b"] {
            assert!(RoutePath::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn path_errors_report_the_whole_path() {
        let err = RoutePath::parse("/a//b").unwrap_err();
        assert_eq!(err.input, "/a//b");
        assert!(err.reason.contains("empty segment"));
    }
}
