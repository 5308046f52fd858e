//! The metrics routes: `/api/metrics` (every node's latest figures), `/api/metrics/history`,
//! `/api/invocation-metrics` (slice methods merged over the cluster), `/api/invocation-metrics/slow`, and
//! `/metrics` (this node's figures in the Prometheus text format).
//!
//! Every answer comes from the node's [`telemetry::Board`], which the node fills from its own measurements
//! and its peers' summaries; no route waits on the event loop. Query values are checked: an unknown
//! range, a malformed artifact or method, or a limit outside 1..=1000 is a 400.

use crate::api::Backend;
use crate::error::ApiError;
use crate::server::{Request, Response};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use telemetry::{Board, Range, Summary};

/// Slow calls answered when the client names no limit, and the most it may ask for.
const SLOW_LIMIT_DEFAULT: usize = 100;
const SLOW_LIMIT_MAX: usize = 1000;
/// Longest method name a filter may name.
const METHOD_BYTES_MAX: usize = 128;

pub fn route(backend: &dyn Backend, req: &Request) -> Response {
    let segments: Vec<&str> = req.path.split('/').collect();
    let known = matches!(
        segments.as_slice(),
        ["metrics"]
            | ["api", "metrics"]
            | ["api", "metrics", "history"]
            | ["api", "invocation-metrics"]
            | ["api", "invocation-metrics", "slow"]
    );
    if !known {
        return ApiError::not_found(format!("no such path: {} /{}", req.method, req.path)).into();
    }
    if req.method != "GET" {
        let detail = format!("{} is not allowed on /{}; use GET", req.method, req.path);
        return Response::from(ApiError::new(405, "method_not_allowed", detail)).with_header("Allow", "GET, HEAD");
    }
    let Some(board) = backend.metrics() else {
        return ApiError::unavailable("this node keeps no metrics").into();
    };
    let result = match segments.as_slice() {
        ["metrics"] => prometheus(&board),
        ["api", "metrics"] => Ok(Response::ok(nodes(&board))),
        ["api", "metrics", "history"] => history(&board, req),
        ["api", "invocation-metrics"] => invocations(&board, req),
        _ => slow(&board, req),
    };
    result.unwrap_or_else(Response::from)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// `GET /metrics`.
fn prometheus(board: &Board) -> Result<Response, ApiError> {
    let own =
        board.own().ok_or_else(|| ApiError::unavailable("this node has not measured itself yet; retry in a second"))?;
    let text = telemetry::prometheus::render(&own, board.slow_threshold_ms());
    Ok(Response::text(telemetry::prometheus::CONTENT_TYPE, text.into_bytes()))
}

/// `GET /api/metrics`.
fn nodes(board: &Board) -> Value {
    let now = now_ms();
    let nodes: Vec<Value> =
        board.latest().iter().map(|l| node_json(&l.summary, now.saturating_sub(l.received_ms))).collect();
    json!({"time_ms": now, "node": board.node(), "leader": board.leader(), "nodes": nodes})
}

fn node_json(s: &Summary, age_ms: u64) -> Value {
    let peers: Vec<Value> = s
        .peers
        .iter()
        .map(|p| {
            json!({"peer": p.peer, "frames_in": p.frames_in, "frames_out": p.frames_out,
                   "bytes_in": p.bytes_in, "bytes_out": p.bytes_out})
        })
        .collect();
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "node": s.node,
        "time_ms": s.time_ms,
        "age_ms": age_ms,
        "cpu_percent": s.cpu_percent,
        "rss_bytes": s.rss_bytes,
        "threads": s.threads,
        "loop_lag_ms": {"p50": ms(s.loop_lag.p50_us), "p99": ms(s.loop_lag.p99_us), "max": ms(s.loop_lag.max_us)},
        "connections": {"management": s.connections.management, "app": s.connections.app, "cluster": s.connections.cluster},
        "peers": peers,
        "consensus": {
            "applied_slot": s.consensus.applied_slot,
            "slots_per_sec": s.consensus.slots_per_sec,
            "null_share": s.consensus.null_share,
            "phases_per_slot": s.consensus.phases_per_slot,
        },
        "invocations": {
            "calls": s.invocations.calls,
            "errors": s.invocations.errors,
            "calls_per_sec": s.invocations.calls_per_sec,
            "errors_per_sec": s.invocations.errors_per_sec,
        },
    })
}

/// `GET /api/metrics/history?range=5m|15m|1h|2h`.
fn history(board: &Board, req: &Request) -> Result<Response, ApiError> {
    let text = req.query_value("range").unwrap_or("5m");
    let range = Range::parse(text)
        .ok_or_else(|| ApiError::bad_request(format!("range '{text}' is not one of 5m, 15m, 1h, 2h")))?;
    let nodes: serde_json::Map<String, Value> = board
        .history(range, now_ms())
        .into_iter()
        .map(|(node, samples)| {
            let points: Vec<Value> = samples
                .iter()
                .map(|p| {
                    json!({"time_ms": p.time_ms, "cpu_percent": p.cpu_percent, "rss_bytes": p.rss_bytes,
                           "calls_per_sec": p.calls_per_sec, "errors_per_sec": p.errors_per_sec,
                           "loop_lag_p99_ms": p.loop_lag_p99_ms, "slots_per_sec": p.slots_per_sec})
                })
                .collect();
            (node, Value::Array(points))
        })
        .collect();
    Ok(Response::ok(json!({"range": range.as_str(), "step_ms": range.step_ms(), "nodes": nodes})))
}

/// Which artifacts an `artifact=` filter keeps: `G:A:V` one version, `G:A` every version.
enum ArtifactFilter {
    Any,
    Exact(String),
    Versions(String),
}

impl ArtifactFilter {
    fn parse(text: Option<&str>) -> Result<ArtifactFilter, ApiError> {
        let Some(text) = text else { return Ok(ArtifactFilter::Any) };
        let bad = || ApiError::bad_request(format!("artifact '{text}' is not G:A:V or G:A"));
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            [group, artifact] if !group.is_empty() && !artifact.is_empty() => {
                kvstore::Artifact::parse(&format!("{text}:1.0.0")).map_err(|_| bad())?;
                Ok(ArtifactFilter::Versions(format!("{text}:")))
            }
            [_, _, _] => {
                let parsed = kvstore::Artifact::parse(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
                Ok(ArtifactFilter::Exact(parsed.to_string()))
            }
            _ => Err(bad()),
        }
    }

    fn keeps(&self, artifact: &str) -> bool {
        match self {
            ArtifactFilter::Any => true,
            ArtifactFilter::Exact(a) => a == artifact,
            ArtifactFilter::Versions(prefix) => artifact.starts_with(prefix.as_str()),
        }
    }
}

/// `GET /api/invocation-metrics[?artifact=G:A:V|G:A][&method=M]`.
fn invocations(board: &Board, req: &Request) -> Result<Response, ApiError> {
    let artifact = ArtifactFilter::parse(req.query_value("artifact"))?;
    let method = req.query_value("method");
    if let Some(m) = method {
        if m.is_empty() || m.len() > METHOD_BYTES_MAX {
            return Err(ApiError::bad_request(format!("method must have 1 to {METHOD_BYTES_MAX} bytes")));
        }
    }
    let views = board.invocations(|a, m| artifact.keeps(a) && method.is_none_or(|wanted| wanted == m));
    let invocations: Vec<Value> = views
        .iter()
        .map(|v| {
            let nodes: Vec<Value> = v
                .nodes
                .iter()
                .map(|(node, calls, errors)| json!({"node": node, "calls": calls, "errors": errors}))
                .collect();
            json!({
                "artifact": v.artifact,
                "method": v.method,
                "calls": v.calls,
                "errors": v.errors,
                "latency_us": {
                    "p50": v.latency.quantile(0.5),
                    "p95": v.latency.quantile(0.95),
                    "p99": v.latency.quantile(0.99),
                    "max": v.latency.max(),
                },
                "nodes": nodes,
            })
        })
        .collect();
    Ok(Response::ok(json!({"invocations": invocations})))
}

/// `GET /api/invocation-metrics/slow[?limit=N]`.
fn slow(board: &Board, req: &Request) -> Result<Response, ApiError> {
    let limit = match req.query_value("limit") {
        None => SLOW_LIMIT_DEFAULT,
        Some(text) => text.parse::<usize>().ok().filter(|n| (1..=SLOW_LIMIT_MAX).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!("limit '{text}' is not a number from 1 to {SLOW_LIMIT_MAX}"))
        })?,
    };
    let slow: Vec<Value> = board
        .slow(limit)
        .iter()
        .map(|s| {
            json!({"request_id": s.request_id, "node": s.node, "artifact": s.artifact, "method": s.method,
                   "duration_us": s.duration_us, "time_ms": s.time_ms, "status": s.status})
        })
        .collect();
    Ok(Response::ok(json!({"threshold_ms": board.slow_threshold_ms(), "slow": slow})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use telemetry::histogram::Histogram;
    use telemetry::summary::{MethodFigures, SlowCall};

    struct Fake(Option<Arc<Board>>);

    impl Backend for Fake {
        fn cluster_view(&self) -> Result<crate::ClusterView, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn status(&self) -> Result<crate::NodeStatus, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn kv_write(&self, _: kvstore::Command) -> Result<u64, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn kv_get(&self, _: &kvstore::AetherKey, _: bool) -> Result<Option<crate::KvEntry>, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn kv_list(&self, _: &str, _: bool) -> Result<Vec<crate::KvEntry>, ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn artifact_known(&self, _: &kvstore::Artifact) -> bool {
            false
        }
        fn set_faults(&self, _: Vec<crate::FaultSpec>) -> Result<(), ApiError> {
            Err(ApiError::unavailable("fake"))
        }
        fn metrics(&self) -> Option<Arc<Board>> {
            self.0.clone()
        }
    }

    fn summary(node: &str, time_ms: u64, artifact: &str, latencies: &[u64]) -> Summary {
        let mut h = Histogram::new();
        latencies.iter().for_each(|v| h.record(*v));
        Summary {
            node: node.into(),
            time_ms,
            methods: vec![MethodFigures {
                artifact: artifact.into(),
                method: "echo".into(),
                calls: h.count(),
                errors: 0,
                latency_buckets: h.buckets(),
                latency_sum_us: h.sum(),
                latency_max_us: h.max(),
            }],
            slow: vec![SlowCall {
                request_id: format!("r-{node}"),
                node: node.into(),
                artifact: artifact.into(),
                method: "echo".into(),
                duration_us: 900_000,
                time_ms,
                status: 200,
            }],
            ..Summary::default()
        }
    }

    fn fake() -> Fake {
        let board = Board::new("node-1", &["node-1".into(), "node-2".into()]);
        board.accept(summary("node-1", 1_000, "g:echo:1.0.0", &[100, 200]), 1_000).unwrap();
        board.accept(summary("node-2", 2_000, "g:echo:2.0.0", &[5_000]), 2_000).unwrap();
        Fake(Some(Arc::new(board)))
    }

    fn get(backend: &Fake, path: &str, query: &[(&str, &str)]) -> Response {
        let query = query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        route(backend, &Request { method: "GET".into(), path: path.into(), query, ..Request::default() })
    }

    #[test]
    fn metrics_list_every_node_held() {
        let answer = get(&fake(), "api/metrics", &[]);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body["node"], "node-1");
        let nodes = answer.body["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1]["node"], "node-2");
        assert!(nodes[0]["loop_lag_ms"]["p99"].is_number() && nodes[0]["connections"]["app"].is_number());
    }

    #[test]
    fn invocations_filter_by_artifact_and_method() {
        let f = fake();
        let all = get(&f, "api/invocation-metrics", &[]);
        assert_eq!(all.body["invocations"].as_array().unwrap().len(), 2);
        let versions = get(&f, "api/invocation-metrics", &[("artifact", "g:echo")]);
        assert_eq!(versions.body["invocations"].as_array().unwrap().len(), 2);
        let one = get(&f, "api/invocation-metrics", &[("artifact", "g:echo:2.0.0"), ("method", "echo")]);
        let list = one.body["invocations"].as_array().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!((list[0]["calls"].as_u64(), list[0]["latency_us"]["max"].as_u64()), (Some(1), Some(5_000)));
        assert_eq!(list[0]["nodes"][0]["node"], "node-2");
        let none = get(&f, "api/invocation-metrics", &[("method", "other")]);
        assert!(none.body["invocations"].as_array().unwrap().is_empty());
        for bad in ["", "g", "g:a:b:c", "g::1.0.0", "g:a:notaversion"] {
            let answer = get(&f, "api/invocation-metrics", &[("artifact", bad)]);
            assert_eq!((answer.status, answer.body["error"].as_str()), (400, Some("bad_request")), "{bad}");
        }
        assert_eq!(get(&f, "api/invocation-metrics", &[("method", "")]).status, 400);
    }

    #[test]
    fn slow_calls_come_newest_first_within_the_limit() {
        let f = fake();
        let answer = get(&f, "api/invocation-metrics/slow", &[]);
        assert_eq!(answer.body["threshold_ms"], 500);
        let slow = answer.body["slow"].as_array().unwrap();
        assert_eq!((slow[0]["request_id"].as_str(), slow.len()), (Some("r-node-2"), 2));
        assert_eq!(get(&f, "api/invocation-metrics/slow", &[("limit", "1")]).body["slow"].as_array().unwrap().len(), 1);
        for bad in ["0", "1001", "-1", "x", ""] {
            assert_eq!(get(&f, "api/invocation-metrics/slow", &[("limit", bad)]).status, 400, "{bad}");
        }
    }

    #[test]
    fn history_ranges_are_checked() {
        let f = fake();
        assert_eq!(get(&f, "api/metrics/history", &[("range", "1d")]).status, 400);
        let answer = get(&f, "api/metrics/history", &[("range", "15m")]);
        assert_eq!((answer.status, answer.body["step_ms"].as_u64()), (200, Some(5_000)));
        assert!(answer.body["nodes"].is_object());
    }

    #[test]
    fn prometheus_text_is_served_as_text_and_other_methods_are_refused() {
        let f = fake();
        let answer = get(&f, "metrics", &[]);
        let (content_type, bytes) = answer.text.clone().unwrap();
        assert!(content_type.starts_with("text/plain; version=0.0.4"));
        assert!(String::from_utf8(bytes).unwrap().contains("aether_invocations_total{artifact=\"g:echo:1.0.0\""));
        let post = route(&f, &Request { method: "POST".into(), path: "api/metrics".into(), ..Request::default() });
        assert_eq!(post.status, 405);
        assert_eq!(get(&f, "api/metrics/other", &[]).status, 404);
        assert_eq!(get(&Fake(None), "api/metrics", &[]).status, 503);
    }
}
