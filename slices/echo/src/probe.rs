//! The echo slice's probes: small answers that show what crosses the slice boundary.
//!
//! - `status` answers the status in the `code` parameter (100..=599) with `X-Echo-Method`,
//!   `X-Echo-Path` and `X-Echo-Probe` (every `X-Probe` value the request had, joined by commas);
//!   201 adds `Location: /echo/created`, a redirect adds `Location:` the `to` query parameter (default
//!   `/echo/target`), 204 and 304 have no body, others a JSON body with the same facts. It also sets
//!   `Upgrade: h2c`, a hop-by-hop field the app port must drop.
//! - `relay` calls `status` of this same artifact through the host (a slice-to-slice call, `PUT`,
//!   with the request's `X-Probe` values) and answers the callee's answer, with `X-Relayed: 1` added.
//! - `invocation` answers the invocation context; `relay-invocation` answers the callee's view of
//!   a call to `invocation` with a 2 s timeout.
//! - `config` answers the live value of config `key`; `kv` runs one cluster-state operation.

use std::time::Duration;

use aether_sdk::{json, Context, KvError, Request, RequestBuilder, Response, Status};

pub fn status(request: &Request<'_>) -> Response {
    let code = request.param("code").and_then(|c| c.parse::<u16>().ok()).and_then(Status::new);
    let Some(code) = code else {
        return Response::error(Status::BAD_REQUEST, "`code` must be an HTTP status (100..=599)");
    };
    let probe = request.header_all("x-probe").collect::<Vec<_>>().join(",");
    let facts = json::Object::new()
        .str("method", request.method())
        .str("path", request.path())
        .str("probe", &probe)
        .int("status", i64::from(code.http()))
        .finish();
    let mut response = match code.http() {
        201 => Response::created("/echo/created", facts),
        204 => Response::no_content(),
        304 => Response { status: code, headers: Vec::new(), body: Vec::new() },
        _ if code.is_redirect() => Response::redirect(code, request.query("to").unwrap_or("/echo/target")),
        _ => Response::json(facts).with_status(code),
    };
    response = response
        .with_header("X-Echo-Method", request.method())
        .with_header("X-Echo-Path", request.path())
        .with_header("Upgrade", "h2c");
    if !probe.is_empty() {
        response = response.with_header("X-Echo-Probe", &probe);
    }
    response
}

pub fn relay(ctx: &Context, artifact: &str, request: &Request<'_>) -> Response {
    let code = request.param("code").unwrap_or("200");
    let mut call = RequestBuilder::new().method("PUT").path("/relayed").param("code", code);
    for probe in request.header_all("x-probe") {
        call = call.header("X-Probe", probe);
    }
    if let Some(to) = request.query("to") {
        call = call.query("to", to);
    }
    match call.encode() {
        Ok(bytes) => ctx.call(artifact, "status", &bytes).with_header("X-Relayed", "1"),
        Err(e) => Response::error(Status::BAD_REQUEST, &e.to_string()),
    }
}

pub fn invocation(ctx: &Context) -> Response {
    let seen = ctx.invocation();
    let mut body = json::Object::new()
        .str("request_id", seen.request_id.as_deref().unwrap_or(""))
        .str("caller", seen.caller.as_deref().unwrap_or(""))
        .int("depth", i64::from(seen.depth));
    if let Some(left) = seen.deadline_remaining {
        body = body.int("deadline_ms", i64::try_from(left.as_millis()).unwrap_or(i64::MAX));
    }
    Response::json(body.finish())
}

pub fn relay_invocation(ctx: &Context, artifact: &str) -> Response {
    let request = RequestBuilder::new().method("GET").encode().unwrap_or_default();
    ctx.call_with(artifact, "invocation", &request, Duration::from_secs(2))
}

pub fn config(ctx: &Context, request: &Request<'_>) -> Response {
    let key = request.param("key").unwrap_or_default();
    match ctx.config(key) {
        Some(value) => Response::json(json::Object::new().str(key, &value).finish()),
        None => Response::error(Status::NOT_FOUND, &format!("no config `{key}`")),
    }
}

/// `op` is get, put, delete, cas, list or watch; `key` (or `prefix`), `value`, `expected` (a version,
/// or `none`), `limit` and `method` come from the query.
pub fn kv(ctx: &Context, request: &Request<'_>) -> Response {
    let kv = ctx.kv();
    let key = request.query("key").or(request.query("prefix")).unwrap_or_default();
    let value = request.query("value").unwrap_or_default().as_bytes();
    let entry = |e: &aether_sdk::Entry| {
        json::Object::new()
            .str("key", &e.key)
            .str("value", &String::from_utf8_lossy(&e.value))
            .int("version", e.version as i64)
            .finish()
    };
    let answer: Result<String, KvError> = match request.param("op").unwrap_or_default() {
        "get" => kv.get(key).map(|e| e.as_ref().map_or_else(|| "null".to_owned(), entry)),
        "put" => kv.put(key, value).map(|v| v.to_string()),
        "delete" => kv.delete(key).map(|existed| existed.to_string()),
        "cas" => {
            let expected = request.query("expected").and_then(|v| v.parse().ok());
            kv.compare_and_set(key, expected, value).map(|v| v.to_string())
        }
        "list" => {
            let limit = request.query("limit").and_then(|l| l.parse().ok()).unwrap_or(100);
            kv.list(key, limit).map(|entries| format!("[{}]", entries.iter().map(entry).collect::<Vec<_>>().join(",")))
        }
        "watch" => kv.watch(key, request.query("method").unwrap_or("kv-change")).map(|()| "true".to_owned()),
        other => return Response::error(Status::NOT_FOUND, &format!("no kv operation `{other}`")),
    };
    match answer {
        Ok(json) => Response::json(json::Object::new().raw("ok", &json).finish()),
        Err(e) => {
            let status = match e {
                KvError::VersionMismatch { .. } => Status::CONFLICT,
                KvError::TooLarge { .. } | KvError::QuotaExceeded { .. } => Status::PAYLOAD_TOO_LARGE,
                KvError::Invalid(_) => Status::BAD_REQUEST,
                KvError::Unavailable(_) => Status::SERVICE_UNAVAILABLE,
                KvError::Timeout => Status::GATEWAY_TIMEOUT,
            };
            Response::error(status, &format!("{e:?}"))
        }
    }
}
