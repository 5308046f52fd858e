//! The answers of the data plane: JSON errors `{"error","detail"}` and the mapping between slice
//! responses, container errors and forwarded replies.
//!
//! Kinds a caller acts on: "no instance" (503, never reached a slice: try elsewhere), "overloaded" (503,
//! never reached a slice, sent with `Retry-After`: the instance's bulkhead or a queue was full),
//! "deadline exceeded" (504; `reached_slice` false when the call never started). A slice that panicked
//! is answered 500 "internal" with only the request id in the detail: the panic text is in the log of
//! the node it ran on (with the node, artifact and request id), never in an answer.
//!
//! A slice's answer keeps its status (any of 100..=599) and header fields both ways: into a forwarded
//! reply (`Content-Type` in its own field, the rest in `headers`) and back into a response for a slice
//! that made a nested call.

use std::time::Instant;

use aether_sdk::{RequestParts, Response, Status};
use container::CallError;
use invoke::InvokeReply;

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
        && aether_sdk::json::parse(&reply.body)
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
    let mut content_type = String::new();
    let mut headers = response.headers;
    if let Some(at) = headers.iter().position(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        content_type = headers.remove(at).1;
    }
    InvokeReply {
        id: 0,
        status: response.status.http(),
        content_type,
        headers,
        body: response.body,
        reached_slice: true,
    }
}

/// The answer for a call that failed on the way. A panic's text stays in the log: the client gets a
/// generic 500 that names the request id to look it up by.
pub(super) fn from_call_error(e: &CallError, reached_slice: bool) -> InvokeReply {
    if let CallError::Panicked { .. } = e {
        let id = crate::metrics::request_id::current().unwrap_or_else(|| "-".to_owned());
        return error(500, "internal", &format!("the slice failed; request id {id}"), reached_slice);
    }
    error(e.http_status(), e.kind(), &e.to_string(), reached_slice)
}

/// A forwarded reply as the slice that made a nested call sees it: status, header fields and body.
pub(super) fn to_response(reply: InvokeReply) -> Response {
    let status = Status::new(reply.status).unwrap_or(Status::BAD_GATEWAY);
    let mut headers = Vec::with_capacity(reply.headers.len() + 1);
    if !reply.content_type.is_empty() {
        headers.push(("Content-Type".to_owned(), reply.content_type));
    }
    headers.extend(reply.headers);
    Response { status, headers, body: reply.body }
}

/// The request bytes for a slice: what the client sent (method, path, query, header fields) and the
/// route's path parameters.
pub(super) fn encode(
    method: &str,
    path: &str,
    params: &[(String, String)],
    query: &[(String, String)],
    headers: &[(String, String)],
    body: &[u8],
) -> Result<Vec<u8>, aether_sdk::CodecError> {
    fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
        v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }
    let (params, query, headers) = (pairs(params), pairs(query), pairs(headers));
    RequestParts { method, path, params: &params, query: &query, headers: &headers, body }.encode()
}
