//! Event routes: `GET /api/events[?since=SEQ|AGE][&limit=N]` and `GET /api/events/stream[?since=..]`
//! (server-sent events; `Last-Event-ID` works as `since`). The daemon keeps the events; this module
//! parses and checks the query and shapes the answers.
//!
//! Invariants: `limit` is 1..=[`EVENTS_LIMIT_MAX`] (default [`EVENTS_LIMIT_DEFAULT`]); a `since` or `limit`
//! that does not parse is a 400 naming the parameter; an unknown or repeated query parameter is a 400.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::{Request, Response};

/// Events in one answer by default, and at most.
pub const EVENTS_LIMIT_DEFAULT: usize = 100;
pub const EVENTS_LIMIT_MAX: usize = 1000;

/// Where a reader of the event log starts: after a ring position of the answering node, or at the
/// events no older than an age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventSince {
    Seq(u64),
    AgeMs(u64),
}

/// Parses `since`: a ring position (`42`) or an age (`500ms`, `30s`, `5m`, `2h`, `1d`).
pub fn parse_since(text: &str) -> Result<EventSince, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(EventSince::Seq).map_err(|_| format!("since '{text}': the number is too large"));
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_ms: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("since '{text}': use a sequence number (42) or an age (30s, 5m, 2h)")),
    };
    let number: u64 = number.parse().map_err(|_| format!("since '{text}': expected a number before '{unit}'"))?;
    number.checked_mul(unit_ms).map(EventSince::AgeMs).ok_or_else(|| format!("since '{text}': too long"))
}

pub fn route(backend: &dyn Backend, req: &Request, rest: &[&str]) -> Result<Response, ApiError> {
    match (req.method.as_str(), rest) {
        ("GET", []) => {
            only(req, &["since", "limit"])?;
            let since = since(req)?;
            let limit = match req.query_value("limit") {
                None => EVENTS_LIMIT_DEFAULT,
                Some(text) => match text.parse::<usize>() {
                    Ok(n) if (1..=EVENTS_LIMIT_MAX).contains(&n) => n,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "limit '{text}': expected a whole number from 1 to {EVENTS_LIMIT_MAX}"
                        )))
                    }
                },
            };
            backend.events(since, limit).map(Response::ok)
        }
        ("GET", ["stream"]) => {
            only(req, &["since"])?;
            let since = match since(req)? {
                Some(since) => Some(since),
                None => match req.header("last-event-id") {
                    Some(id) => Some(id.trim().parse().map(EventSince::Seq).map_err(|_| {
                        ApiError::bad_request(format!("Last-Event-ID '{id}': expected a sequence number"))
                    })?),
                    None => None,
                },
            };
            let source = backend.event_stream(since)?;
            Ok(Response::streaming("text/event-stream", source))
        }
        _ => Err(crate::methods::unrouted(req)),
    }
}

fn since(req: &Request) -> Result<Option<EventSince>, ApiError> {
    req.query_value("since").map(parse_since).transpose().map_err(ApiError::bad_request)
}

/// A 400 for any query parameter not in `known`, and for one given twice (`?node=a&node=b` would act on
/// `a` while a proxy or log reading the last value saw `b`).
pub(crate) fn only(req: &Request, known: &[&str]) -> Result<(), ApiError> {
    if let Some((k, _)) = req.query.iter().find(|(k, _)| !known.contains(&k.as_str())) {
        return Err(ApiError::bad_request(format!(
            "unknown query parameter '{}'; this route takes {}",
            k.chars().take(64).collect::<String>(),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    }
    match known.iter().find(|name| req.query.iter().filter(|(k, _)| k == *name).count() > 1) {
        Some(name) => Err(ApiError::bad_request(format!("query parameter '{name}' is given more than once"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_or_repeated_parameters_are_refused() {
        let with = |pairs: &[(&str, &str)]| Request {
            query: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Request::default()
        };
        assert!(only(&with(&[("node", "node-2"), ("since", "1")]), &["node", "since"]).is_ok());
        for bad in [&[("node", "node-2"), ("node", "node-1")][..], &[("x", "1")], &[("since", "1"), ("since", "2")]] {
            assert_eq!(only(&with(bad), &["node", "since"]).map_err(|e| e.status), Err(400), "{bad:?}");
        }
    }

    #[test]
    fn since_is_a_position_or_an_age() {
        assert_eq!(parse_since("42"), Ok(EventSince::Seq(42)));
        assert_eq!(parse_since("30s"), Ok(EventSince::AgeMs(30_000)));
        assert_eq!(parse_since("5m"), Ok(EventSince::AgeMs(300_000)));
        assert_eq!(parse_since("2h"), Ok(EventSince::AgeMs(7_200_000)));
        assert_eq!(parse_since("250ms"), Ok(EventSince::AgeMs(250)));
        for bad in ["", "m", "5x", "-1", "1.5m", "99999999999999999999", "99999999999999999h"] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
    }
}
