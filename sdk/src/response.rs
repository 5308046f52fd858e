//! What a slice answers: a [`Status`], a [`ContentType`] and a body.
//!
//! Statuses are the small set the HTTP layer knows how to map (`NotFound` -> 404 and so on); error
//! bodies built by [`Response::error`] are `{"error": "...", "detail": "..."}` like every other error
//! the node returns.

use crate::abi;
use crate::json;

/// Outcome of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    Conflict,
    Internal,
    Unavailable,
}

impl Status {
    /// The wire code (see [`abi::status`]).
    pub const fn code(self) -> u32 {
        match self {
            Status::Ok => abi::status::OK,
            Status::BadRequest => abi::status::BAD_REQUEST,
            Status::NotFound => abi::status::NOT_FOUND,
            Status::Conflict => abi::status::CONFLICT,
            Status::Internal => abi::status::INTERNAL,
            Status::Unavailable => abi::status::UNAVAILABLE,
        }
    }

    /// The status for a wire code a slice may send; `None` for anything else.
    pub const fn from_code(code: u32) -> Option<Status> {
        Some(match code {
            abi::status::OK => Status::Ok,
            abi::status::BAD_REQUEST => Status::BadRequest,
            abi::status::NOT_FOUND => Status::NotFound,
            abi::status::CONFLICT => Status::Conflict,
            abi::status::INTERNAL => Status::Internal,
            abi::status::UNAVAILABLE => Status::Unavailable,
            _ => return None,
        })
    }

    /// The HTTP status code a client sees.
    pub const fn http(self) -> u16 {
        match self {
            Status::Ok => 200,
            Status::BadRequest => 400,
            Status::NotFound => 404,
            Status::Conflict => 409,
            Status::Internal => 500,
            Status::Unavailable => 503,
        }
    }

    /// Short lowercase name, used as the `error` field of error bodies.
    pub const fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::BadRequest => "bad request",
            Status::NotFound => "not found",
            Status::Conflict => "conflict",
            Status::Internal => "internal error",
            Status::Unavailable => "unavailable",
        }
    }
}

/// What the body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    Json,
    Text,
    Binary,
}

impl ContentType {
    pub const fn code(self) -> u32 {
        match self {
            ContentType::Json => abi::content_type::JSON,
            ContentType::Text => abi::content_type::TEXT,
            ContentType::Binary => abi::content_type::BINARY,
        }
    }

    /// Unknown codes read as binary: the bytes are passed on untouched.
    pub const fn from_code(code: u32) -> ContentType {
        match code {
            abi::content_type::JSON => ContentType::Json,
            abi::content_type::TEXT => ContentType::Text,
            _ => ContentType::Binary,
        }
    }

    /// The HTTP `Content-Type` header value.
    pub const fn mime(self) -> &'static str {
        match self {
            ContentType::Json => "application/json",
            ContentType::Text => "text/plain; charset=utf-8",
            ContentType::Binary => "application/octet-stream",
        }
    }
}

/// A slice's answer to one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    pub content_type: ContentType,
    pub body: Vec<u8>,
}

impl Response {
    /// 200 with a JSON body.
    pub fn json(body: impl Into<String>) -> Response {
        Response { status: Status::Ok, content_type: ContentType::Json, body: body.into().into_bytes() }
    }

    /// 200 with a plain-text body.
    pub fn text(body: impl Into<String>) -> Response {
        Response { status: Status::Ok, content_type: ContentType::Text, body: body.into().into_bytes() }
    }

    /// 200 with raw bytes.
    pub fn binary(body: impl Into<Vec<u8>>) -> Response {
        Response { status: Status::Ok, content_type: ContentType::Binary, body: body.into() }
    }

    /// An error answer with the body `{"error": <status name>, "detail": detail}`.
    pub fn error(status: Status, detail: &str) -> Response {
        let body = json::Object::new().str("error", status.name()).str("detail", detail).finish();
        Response { status, content_type: ContentType::Json, body: body.into_bytes() }
    }

    pub fn is_ok(&self) -> bool {
        self.status == Status::Ok
    }

    /// The body as text (lossy for non-UTF-8 bytes).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
