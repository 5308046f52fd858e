//! The answers of the data plane: JSON errors `{"error","detail"}` and the mapping between slice
//! responses, container errors and forwarded replies.
//!
//! Kinds a caller acts on: "no instance" (503, never reached a slice: try elsewhere), "overloaded" (503,
//! never reached a slice, sent with `Retry-After`: the instance's bulkhead or a queue was full),
//! "deadline exceeded" (504; `reached_slice` false when the call never started).

use std::time::Instant;

use container::CallError;
use invoke::InvokeReply;
use sdk::{ContentType, Response, Status};

use super::dispatch::Call;

/// The error kind of a refusal that the caller should retry later (`Retry-After`).
pub const OVERLOADED: &str = "overloaded";

pub(super) fn time_left(deadline: Instant) -> Option<std::time::Duration> {
    deadline.checked_duration_since(Instant::now()).filter(|left| !left.is_zero())
}

/// A JSON error reply `{"error", "detail"}`.
pub fn error(status: u16, error: &str, detail: &str, reached_slice: bool) -> InvokeReply {
    InvokeReply::error(0, status, error, detail, reached_slice)
}

/// Whether `reply` is a refusal to retry later: 503 "overloaded", never reached a slice.
pub fn is_overloaded(reply: &InvokeReply) -> bool {
    reply.status == 503
        && !reply.reached_slice
        && sdk::json::parse(&reply.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str().map(|s| s == OVERLOADED)))
            == Some(true)
}

pub(super) fn overloaded(detail: &str) -> InvokeReply {
    error(503, OVERLOADED, detail, false)
}

pub(super) fn with_failures(detail: String, failures: &[String]) -> String {
    if failures.is_empty() {
        return detail;
    }
    format!("{detail} (tried {})", failures.join("; "))
}

pub(super) fn no_live_instance(call: &Call<'_>, failures: &[String]) -> InvokeReply {
    let detail = with_failures(format!("no live instance of {} serves `{}`", call.artifact, call.method), failures);
    error(503, "no instance", &detail, false)
}

pub(super) fn deadline_exceeded(call: &Call<'_>, failures: &[String]) -> InvokeReply {
    let detail = with_failures(format!("{} did not answer `{}` in time", call.artifact, call.method), failures);
    error(504, "deadline exceeded", &detail, true)
}

/// The deadline passed before the call started anywhere: 504, and the slice never saw it.
pub(super) fn never_started(artifact: &str, method: &str, why: &str) -> InvokeReply {
    let detail = format!("{artifact} `{method}` never started: {why}");
    error(504, "deadline exceeded", &detail, false)
}

pub(super) fn from_response(response: Response) -> InvokeReply {
    InvokeReply {
        id: 0,
        status: response.status.http(),
        content_type: response.content_type.mime().to_owned(),
        body: response.body,
        reached_slice: true,
    }
}

pub(super) fn from_call_error(e: &CallError, reached_slice: bool) -> InvokeReply {
    error(e.http_status(), e.kind(), &e.to_string(), reached_slice)
}

/// A forwarded reply as the slice that made a nested call sees it.
pub(super) fn to_response(reply: InvokeReply) -> Response {
    Response { status: status_of(reply.status), content_type: content_type_of(&reply.content_type), body: reply.body }
}

/// The slice status for an HTTP status from another node (the set slices know is small).
fn status_of(http: u16) -> Status {
    match http {
        200..=299 => Status::Ok,
        400 => Status::BadRequest,
        404 => Status::NotFound,
        409 => Status::Conflict,
        503 | 504 => Status::Unavailable,
        _ => Status::Internal,
    }
}

fn content_type_of(mime: &str) -> ContentType {
    [ContentType::Json, ContentType::Text].into_iter().find(|c| c.mime() == mime).unwrap_or(ContentType::Binary)
}

pub(super) fn encode(
    params: &[(String, String)],
    query: &[(String, String)],
    body: &[u8],
) -> Result<Vec<u8>, sdk::CodecError> {
    let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    sdk::encode_request(&params, &query, body)
}
