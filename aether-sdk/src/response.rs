//! What a slice answers: an HTTP [`Status`], header fields and a body.
//!
//! Helpers cover the common answers (JSON, text, `201 Created` with a `Location`, redirects, `204`,
//! caching); error bodies built by [`Response::error`] are `{"error": "...", "detail": "..."}` like
//! every other error the node returns.
//!
//! On the wire (the payload of an `abi::RawResponse`) a response is `u16 LE header_count`, then per
//! field `u16 LE name_len, name, u32 LE value_len, value`, then the body. Invariant: both
//! [`Response::encode_payload`] and [`Response::decode`] check the header fields (see
//! [`crate::headers`]), so neither side ever hands on a field with CR, LF or NUL.

use std::time::Duration;

use crate::codec::CodecError;
use crate::headers;
use crate::json;
use crate::status::Status;
use crate::wire::{count_u16, put_entry, read_entry, read_u16};

/// Common body types and their `Content-Type` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    Json,
    Text,
    Html,
    Binary,
}

impl ContentType {
    /// The HTTP `Content-Type` header value.
    pub const fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Text => "text/plain; charset=utf-8",
            ContentType::Html => "text/html; charset=utf-8",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

/// A slice's answer to one call.
///
/// ```
/// use aether_sdk::{Response, Status};
///
/// let created = Response::created("/links/abc", r#"{"id":"abc"}"#);
/// assert_eq!(created.status, Status::CREATED);
/// assert_eq!(created.header("location"), Some("/links/abc"));
///
/// let moved = Response::redirect(Status::FOUND, "https://example.com/");
/// assert_eq!(moved.status.http(), 302);
///
/// let teapot = Response::text("short and stout").with_status(Status::new(418).unwrap());
/// assert_eq!(teapot.status.http(), 418);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// Header fields in the order they are sent; `Content-Type` is one of them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

const CONTENT_TYPE: &str = "Content-Type";

impl Response {
    /// `status` with a body of `content_type`.
    pub fn new(status: Status, content_type: &str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, headers: vec![(CONTENT_TYPE.to_owned(), content_type.to_owned())], body: body.into() }
    }

    /// 200 with a JSON body.
    pub fn json(body: impl Into<String>) -> Response {
        Response::new(Status::OK, ContentType::Json.mime(), body.into().into_bytes())
    }

    /// 200 with a plain-text body.
    pub fn text(body: impl Into<String>) -> Response {
        Response::new(Status::OK, ContentType::Text.mime(), body.into().into_bytes())
    }

    /// 200 with raw bytes (`application/octet-stream`).
    pub fn binary(body: impl Into<Vec<u8>>) -> Response {
        Response::new(Status::OK, ContentType::Binary.mime(), body)
    }

    /// An error answer with the body `{"error": <status name>, "detail": detail}`.
    pub fn error(status: Status, detail: &str) -> Response {
        let body = json::Object::new().str("error", status.name()).str("detail", detail).finish();
        Response::new(status, ContentType::Json.mime(), body.into_bytes())
    }

    /// `201 Created` with a `Location` and a JSON body.
    pub fn created(location: &str, body: impl Into<String>) -> Response {
        Response::json(body).with_status(Status::CREATED).with_header("Location", location)
    }

    /// A redirect to `location`: `status` is 301, 302, 303, 307 or 308 (any other status answers a
    /// 500 error that says so, so the mistake shows at once).
    pub fn redirect(status: Status, location: &str) -> Response {
        if !status.is_redirect() {
            return Response::error(Status::INTERNAL_SERVER_ERROR, &format!("{status} is not a redirect status"));
        }
        Response { status, headers: vec![("Location".to_owned(), location.to_owned())], body: Vec::new() }
    }

    /// `302 Found` to `location`.
    pub fn found(location: &str) -> Response {
        Response::redirect(Status::FOUND, location)
    }

    /// `204 No Content`: no body, no content type.
    pub fn no_content() -> Response {
        Response { status: Status::NO_CONTENT, headers: Vec::new(), body: Vec::new() }
    }

    /// This response with another status.
    pub fn with_status(mut self, status: Status) -> Response {
        self.status = status;
        self
    }

    /// This response with one more header field (a repeated name keeps every value). Fields that may
    /// not cross the boundary (CR, LF or NUL, not a token, over the bounds) turn the answer into a 500
    /// error when it leaves the slice; hop-by-hop fields (`Connection`, `Content-Length`, ...) are the
    /// server's and are dropped at the app port.
    pub fn with_header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// This response with `name` set to `value` alone (earlier values of `name` removed).
    pub fn set_header(mut self, name: &str, value: &str) -> Response {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.with_header(name, value)
    }

    /// This response with another `Content-Type`.
    pub fn with_content_type(self, content_type: &str) -> Response {
        self.set_header(CONTENT_TYPE, content_type)
    }

    /// Caches may keep this answer for `age` (`Cache-Control: public, max-age=N`).
    pub fn cache_for(self, age: Duration) -> Response {
        self.set_header("Cache-Control", &format!("public, max-age={}", age.as_secs()))
    }

    /// Caches must not keep this answer (`Cache-Control: no-store`).
    pub fn no_store(self) -> Response {
        self.set_header("Cache-Control", "no-store")
    }

    /// The first value of header `name` (compared case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The `Content-Type`, when set.
    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE)
    }

    /// A 2xx status.
    pub fn is_ok(&self) -> bool {
        self.status.is_success()
    }

    /// The body as text (lossy for non-UTF-8 bytes).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The header fields and body in the wire layout (see the module docs); the fields are checked.
    pub fn encode_payload(&self) -> Result<Vec<u8>, CodecError> {
        headers::check_fields(self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))?;
        let head: usize = self.headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum();
        let mut out = Vec::with_capacity(2 + head + self.body.len());
        out.extend_from_slice(&count_u16("header count", self.headers.len())?.to_le_bytes());
        for (name, value) in &self.headers {
            put_entry(&mut out, name, value)?;
        }
        out.extend_from_slice(&self.body);
        Ok(out)
    }

    /// A response from a status and a payload in the wire layout; every header field is checked.
    pub fn decode(status: Status, payload: &[u8]) -> Result<Response, CodecError> {
        if payload.is_empty() {
            return Ok(Response { status, headers: Vec::new(), body: Vec::new() });
        }
        let count = usize::from(read_u16(payload, 0)?);
        if count > headers::HEADERS_MAX {
            return Err(headers::HeaderError::TooMany { count }.into());
        }
        let (mut at, mut bytes) = (2, 0usize);
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let (name, value, next) = read_entry(payload, at)?;
            headers::check_field(name, value)?;
            bytes += name.len() + value.len();
            if bytes > headers::HEADER_BYTES_MAX {
                return Err(headers::HeaderError::TooLarge { bytes }.into());
            }
            headers.push((name.to_owned(), value.to_owned()));
            at = next;
        }
        Ok(Response { status, headers, body: payload.get(at..).unwrap_or(&[]).to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_set_status_and_headers() {
        let created = Response::created("/links/x", r#"{"id":"x"}"#);
        assert_eq!((created.status.http(), created.header("Location")), (201, Some("/links/x")));
        assert_eq!(created.content_type(), Some("application/json"));
        let found = Response::found("/there");
        assert_eq!((found.status.http(), found.header("location"), found.body.len()), (302, Some("/there"), 0));
        for code in [301, 307, 308] {
            let status = Status::new(code).unwrap();
            assert_eq!(Response::redirect(status, "/x").status, status);
        }
        assert_eq!(Response::redirect(Status::OK, "/x").status, Status::INTERNAL_SERVER_ERROR);
        let none = Response::no_content();
        assert_eq!((none.status.http(), none.content_type()), (204, None));
        let cached = Response::text("x").cache_for(Duration::from_secs(60)).cache_for(Duration::from_secs(5));
        assert_eq!(cached.header("cache-control"), Some("public, max-age=5"));
        assert_eq!(cached.headers.len(), 2, "set_header replaces");
        assert_eq!(Response::text("x").no_store().header("Cache-Control"), Some("no-store"));
        let typed = Response::binary(vec![1]).with_content_type("image/png");
        assert_eq!((typed.content_type(), typed.headers.len()), (Some("image/png"), 1));
    }

    #[test]
    fn the_payload_round_trips_and_hostile_fields_are_refused_both_ways() {
        let response = Response::created("/a", "{}").with_header("X-Tag", "1").with_header("x-tag", "2");
        let payload = response.encode_payload().unwrap();
        assert_eq!(Response::decode(Status::CREATED, &payload).unwrap(), response);
        assert_eq!(
            Response::decode(Status::OK, &[]).unwrap(),
            Response { status: Status::OK, headers: vec![], body: vec![] }
        );

        let split = Response::text("x").with_header("X-A", "v\r\nSet-Cookie: evil");
        assert!(split.encode_payload().is_err());
        // Made by hand, as a hostile library could: the decoder refuses it too.
        let mut raw = Response::text("x").with_header("X-A", "vv").encode_payload().unwrap();
        let at = raw.len() - 2;
        raw[at] = b'\r';
        assert!(Response::decode(Status::OK, &raw).is_err());
        for cut in 1..raw.len() - 1 {
            let _ = Response::decode(Status::OK, &raw[..cut]);
        }
    }
}
