//! The byte encoding of a request (and of a slice's config) as it crosses the boundary.
//!
//! ```text
//! u16 LE method_len, method (UTF-8; empty for a call that did not come from HTTP)
//! u32 LE path_len,   path   (UTF-8, percent-decoding left to the reader; may be empty)
//! u16 LE param_count        path parameters
//! u16 LE query_count        query parameters
//! u16 LE header_count       header fields
//! (param_count + query_count + header_count) times:
//!     u16 LE name_len, name (UTF-8), u32 LE value_len, value (UTF-8)
//! the rest: body bytes
//! ```
//!
//! A config is the same encoding with its entries as parameters, no method, path, query, headers or
//! body. The same bytes can be forwarded to another node unchanged. Invariant: [`Request::parse`]
//! checks every length, every string and every header field (see [`crate::headers`]) once, so a
//! [`Request`] never holds malformed bytes.

use std::fmt;

use crate::headers::{self, HeaderError};
use crate::wire::{count_u16, put_entry, put_str_u16, put_str_u32, read_entry, read_str_u16, read_str_u32, read_u16};

/// Why bytes could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The bytes end inside the header or an entry.
    Truncated { at: usize },
    /// A name or value is not UTF-8.
    NotUtf8 { at: usize },
    /// A count, name or value is over the encoding's limit.
    TooLarge { what: &'static str, len: usize },
    /// A header field, or the set of them, is refused.
    Header(HeaderError),
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Truncated { at } => write!(f, "request bytes end early at offset {at}"),
            CodecError::NotUtf8 { at } => write!(f, "request text at offset {at} is not UTF-8"),
            CodecError::TooLarge { what, len } => write!(f, "{what} of {len} is over the encoding limit"),
            CodecError::Header(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CodecError {}

impl From<HeaderError> for CodecError {
    fn from(e: HeaderError) -> CodecError {
        CodecError::Header(e)
    }
}

/// The parts of a request, borrowed, to encode in one go (see [`RequestParts::encode`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub params: &'a [(&'a str, &'a str)],
    pub query: &'a [(&'a str, &'a str)],
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

impl RequestParts<'_> {
    /// The encoded bytes; header fields are checked first.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        headers::check_fields(self.headers.iter().copied())?;
        let entries = self.params.iter().chain(self.query).chain(self.headers);
        let entries_len: usize = entries.clone().map(|(k, v)| 6 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(12 + self.method.len() + self.path.len() + entries_len + self.body.len());
        put_str_u16(&mut out, "method", self.method)?;
        put_str_u32(&mut out, "path", self.path)?;
        out.extend_from_slice(&count_u16("parameter count", self.params.len())?.to_le_bytes());
        out.extend_from_slice(&count_u16("query count", self.query.len())?.to_le_bytes());
        out.extend_from_slice(&count_u16("header count", self.headers.len())?.to_le_bytes());
        for (name, value) in entries {
            put_entry(&mut out, name, value)?;
        }
        out.extend_from_slice(self.body);
        Ok(out)
    }
}

/// Encode a request of path parameters, query parameters and a body (no method, path or headers).
pub fn encode_request(params: &[(&str, &str)], query: &[(&str, &str)], body: &[u8]) -> Result<Vec<u8>, CodecError> {
    RequestParts { params, query, body, ..RequestParts::default() }.encode()
}

/// Encode key/value pairs (a config) in the request layout.
pub fn encode_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Vec<u8>, CodecError> {
    let pairs: Vec<(&str, &str)> = pairs.into_iter().collect();
    encode_request(&pairs, &[], &[])
}

/// A decoded request, borrowing the bytes it was parsed from.
///
/// ```
/// use aether_sdk::RequestBuilder;
///
/// let bytes = RequestBuilder::new()
///     .method("POST")
///     .path("/links")
///     .header("Content-Type", "application/json")
///     .body(r#"{"url":"https://example.com"}"#)
///     .encode()
///     .unwrap();
/// let request = aether_sdk::Request::parse(&bytes).unwrap();
/// assert_eq!(request.method(), "POST");
/// assert_eq!(request.header("content-type"), Some("application/json"));
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    bytes: &'a [u8],
    method: &'a str,
    path: &'a str,
    entries_start: usize,
    param_count: u16,
    query_count: u16,
    header_count: u16,
    body_start: usize,
}

impl<'a> Request<'a> {
    /// Check `bytes` completely and return a view of them.
    pub fn parse(bytes: &'a [u8]) -> Result<Request<'a>, CodecError> {
        let (method, at) = read_str_u16(bytes, 0)?;
        let (path, at) = read_str_u32(bytes, at)?;
        let param_count = read_u16(bytes, at)?;
        let query_count = read_u16(bytes, at + 2)?;
        let header_count = read_u16(bytes, at + 4)?;
        if usize::from(header_count) > headers::HEADERS_MAX {
            return Err(HeaderError::TooMany { count: usize::from(header_count) }.into());
        }
        let entries_start = at + 6;
        let mut at = entries_start;
        let fields = u32::from(param_count) + u32::from(query_count);
        for _ in 0..fields {
            let (_, _, next) = read_entry(bytes, at)?;
            at = next;
        }
        let mut header_bytes = 0usize;
        for _ in 0..header_count {
            let (name, value, next) = read_entry(bytes, at)?;
            headers::check_field(name, value)?;
            header_bytes += name.len() + value.len();
            if header_bytes > headers::HEADER_BYTES_MAX {
                return Err(HeaderError::TooLarge { bytes: header_bytes }.into());
            }
            at = next;
        }
        Ok(Request { bytes, method, path, entries_start, param_count, query_count, header_count, body_start: at })
    }

    /// The HTTP method (`GET`, `POST`, ...) as the client sent it; empty for a call that did not come
    /// from HTTP and did not set one.
    pub fn method(&self) -> &'a str {
        self.method
    }

    /// The request path without its query (`/links/abc`), not percent-decoded; empty when unknown.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The path parameter `name`, if the route has it (percent-decoded).
    pub fn param(&self, name: &str) -> Option<&'a str> {
        self.params().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The query parameter `name` (the first one when repeated; percent-decoded).
    pub fn query(&self, name: &str) -> Option<&'a str> {
        self.query_pairs().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// The first header field `name` (compared ASCII-case-insensitively).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Every value of header field `name`, in the order they came (names compared case-insensitively).
    pub fn header_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a str> + 'n
    where
        'a: 'n,
    {
        self.headers().filter(move |(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Path parameters in route order.
    pub fn params(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries().take(usize::from(self.param_count))
    }

    /// Query parameters in the order they came.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries().skip(usize::from(self.param_count)).take(usize::from(self.query_count))
    }

    /// Header fields in the order they came (names as sent; the app port lower-cases them).
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.entries().skip(usize::from(self.param_count) + usize::from(self.query_count))
    }

    /// The body bytes.
    pub fn body(&self) -> &'a [u8] {
        self.bytes.get(self.body_start..).unwrap_or(&[])
    }

    /// The body as UTF-8 text, if it is.
    pub fn body_str(&self) -> Option<&'a str> {
        std::str::from_utf8(self.body()).ok()
    }

    /// The encoded bytes, e.g. to pass the request on unchanged.
    pub fn as_bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn entries(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        let bytes = self.bytes;
        let mut at = self.entries_start;
        // `parse` checked every entry, so read_entry cannot fail here; `ok()?` ends the walk if it did.
        std::iter::from_fn(move || {
            let (name, value, next) = read_entry(bytes, at).ok()?;
            at = next;
            Some((name, value))
        })
        .take(usize::from(self.param_count) + usize::from(self.query_count) + usize::from(self.header_count))
    }
}

/// Builds request bytes: method, path, path parameters, query parameters, header fields and a body.
/// Used to call another slice (see [`crate::Context::call`]) and in tests.
#[derive(Clone, Debug, Default)]
pub struct RequestBuilder {
    method: String,
    path: String,
    params: Vec<(String, String)>,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RequestBuilder {
    pub fn new() -> RequestBuilder {
        RequestBuilder::default()
    }

    /// The HTTP method the callee sees (`GET`, `POST`, ...).
    pub fn method(mut self, method: &str) -> RequestBuilder {
        self.method = method.to_owned();
        self
    }

    /// The path the callee sees.
    pub fn path(mut self, path: &str) -> RequestBuilder {
        self.path = path.to_owned();
        self
    }

    pub fn param(mut self, name: &str, value: &str) -> RequestBuilder {
        self.params.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn query(mut self, name: &str, value: &str) -> RequestBuilder {
        self.query.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Add a header field (a repeated name keeps every value). Checked by [`RequestBuilder::encode`].
    pub fn header(mut self, name: &str, value: &str) -> RequestBuilder {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> RequestBuilder {
        self.body = body.into();
        self
    }

    /// The encoded bytes; a header field that may not cross the boundary is an error.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let params: Vec<(&str, &str)> = self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let query: Vec<(&str, &str)> = self.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let headers: Vec<(&str, &str)> = self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        RequestParts {
            method: &self.method,
            path: &self.path,
            params: &params,
            query: &query,
            headers: &headers,
            body: &self.body,
        }
        .encode()
    }
}

#[cfg(test)]
mod tests;
