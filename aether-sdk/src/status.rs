//! HTTP status codes as a slice answers them.
//!
//! A [`Status`] is any code from 100 to 599; the names of the common ones are constants
//! (`Status::CREATED`, `Status::FOUND`, ...). The six names slices used before the SDK spoke HTTP in
//! full (`Status::Ok`, `BadRequest`, `NotFound`, `Conflict`, `Internal`, `Unavailable`) still work and
//! mean 200, 400, 404, 409, 500 and 503.

use std::fmt;

/// An HTTP status code (100..=599).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Status(u16);

#[allow(non_upper_case_globals)]
impl Status {
    /// 200 (the name slices used before ABI 3).
    pub const Ok: Status = Status(200);
    /// 400 (the name slices used before ABI 3).
    pub const BadRequest: Status = Status(400);
    /// 404 (the name slices used before ABI 3).
    pub const NotFound: Status = Status(404);
    /// 409 (the name slices used before ABI 3).
    pub const Conflict: Status = Status(409);
    /// 500 (the name slices used before ABI 3).
    pub const Internal: Status = Status(500);
    /// 503 (the name slices used before ABI 3).
    pub const Unavailable: Status = Status(503);
}

impl Status {
    pub const CONTINUE: Status = Status(100);
    pub const OK: Status = Status(200);
    pub const CREATED: Status = Status(201);
    pub const ACCEPTED: Status = Status(202);
    pub const NO_CONTENT: Status = Status(204);
    pub const MOVED_PERMANENTLY: Status = Status(301);
    pub const FOUND: Status = Status(302);
    pub const SEE_OTHER: Status = Status(303);
    pub const NOT_MODIFIED: Status = Status(304);
    pub const TEMPORARY_REDIRECT: Status = Status(307);
    pub const PERMANENT_REDIRECT: Status = Status(308);
    pub const BAD_REQUEST: Status = Status(400);
    pub const UNAUTHORIZED: Status = Status(401);
    pub const FORBIDDEN: Status = Status(403);
    pub const NOT_FOUND: Status = Status(404);
    pub const METHOD_NOT_ALLOWED: Status = Status(405);
    pub const CONFLICT: Status = Status(409);
    pub const GONE: Status = Status(410);
    pub const PAYLOAD_TOO_LARGE: Status = Status(413);
    pub const UNPROCESSABLE_ENTITY: Status = Status(422);
    pub const TOO_MANY_REQUESTS: Status = Status(429);
    pub const INTERNAL_SERVER_ERROR: Status = Status(500);
    pub const NOT_IMPLEMENTED: Status = Status(501);
    pub const BAD_GATEWAY: Status = Status(502);
    pub const SERVICE_UNAVAILABLE: Status = Status(503);
    pub const GATEWAY_TIMEOUT: Status = Status(504);

    /// The status for `code`, when it is one (100..=599).
    pub const fn new(code: u16) -> Option<Status> {
        if code >= 100 && code <= 599 {
            Some(Status(code))
        } else {
            None
        }
    }

    /// The status for a wire code: `None` outside 100..=599.
    pub const fn from_code(code: u32) -> Option<Status> {
        if code >= 100 && code <= 599 {
            Some(Status(code as u16))
        } else {
            None
        }
    }

    /// The wire code (the HTTP status).
    pub const fn code(self) -> u32 {
        self.0 as u32
    }

    /// The HTTP status code a client sees.
    pub const fn http(self) -> u16 {
        self.0
    }

    /// 2xx.
    pub const fn is_success(self) -> bool {
        self.0 >= 200 && self.0 < 300
    }

    /// 301, 302, 303, 307 or 308: a status that sends the client to a `Location`.
    pub const fn is_redirect(self) -> bool {
        matches!(self.0, 301 | 302 | 303 | 307 | 308)
    }

    /// Short lowercase name, used as the `error` field of error bodies ("not found", "conflict", ...).
    pub const fn name(self) -> &'static str {
        match self.0 {
            200..=299 => "ok",
            300..=399 => "redirect",
            400 => "bad request",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "not found",
            405 => "method not allowed",
            409 => "conflict",
            410 => "gone",
            413 => "payload too large",
            422 => "unprocessable entity",
            429 => "too many requests",
            500 => "internal error",
            501 => "not implemented",
            502 => "bad gateway",
            503 => "unavailable",
            504 => "deadline exceeded",
            code if code < 500 => "client error",
            _ => "error",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_names_and_new_constants_are_the_same_codes() {
        assert_eq!(Status::Ok, Status::OK);
        assert_eq!(Status::NotFound.http(), 404);
        assert_eq!(Status::Unavailable, Status::SERVICE_UNAVAILABLE);
        assert_eq!(Status::new(418).map(Status::http), Some(418));
        assert_eq!((Status::new(99), Status::new(600), Status::from_code(0xE001)), (None, None, None));
        assert!(Status::FOUND.is_redirect() && !Status::OK.is_redirect());
        assert!(Status::NO_CONTENT.is_success());
    }
}
