//! Which methods each management path answers, so a wrong method is a 405 with an `Allow` header and a path
//! the API does not have is a 404, whichever router saw the request.
//!
//! Invariant: [`PATHS`] lists every path the routers serve (patterns as in [`crate::ROUTES`]: `*` one
//! segment, a final `**` one or more); the unit tests of the OpenAPI document check it against the document.

/// Path pattern and the methods it answers (`HEAD` wherever `GET` is). First match wins.
pub const PATHS: &[(&str, &str)] = &[
    ("health/live", "GET, HEAD"),
    ("health/ready", "GET, HEAD"),
    ("metrics", "GET, HEAD"),
    ("api/health", "GET, HEAD"),
    ("api/status", "GET, HEAD"),
    ("api/backup", "POST"),
    ("api/nodes", "GET, HEAD"),
    ("api/nodes/*", "GET, HEAD"),
    ("api/nodes/*/drain", "POST"),
    ("api/nodes/*/activate", "POST"),
    ("api/nodes/*/shutdown", "POST"),
    ("api/dht", "GET, HEAD"),
    ("api/topics", "GET, HEAD"),
    ("api/topics/*", "GET, HEAD"),
    ("api/topics/*/messages", "POST"),
    ("api/dead-letters", "GET, HEAD"),
    ("api/dead-letters/*", "GET, HEAD, DELETE"),
    ("api/dead-letters/*/replay", "POST"),
    ("api/rollouts", "GET, HEAD, POST"),
    ("api/rollouts/*", "GET, HEAD"),
    ("api/rollouts/*/ratio", "POST"),
    ("api/rollouts/*/promote", "POST"),
    ("api/rollouts/*/complete", "POST"),
    ("api/rollouts/*/rollback", "POST"),
    ("api/slices", "GET, HEAD"),
    ("api/routes", "GET, HEAD"),
    ("api/openapi.yaml", "GET, HEAD"),
    ("api/artifacts", "GET, HEAD"),
    ("api/artifacts/*/*/*", "GET, HEAD, POST, PUT, DELETE"),
    ("repository/**", "GET, HEAD, PUT, DELETE"),
    ("api/blueprints", "GET, HEAD, POST, PUT"),
    // `validate` is a reserved blueprint name: this path is the dry run only.
    ("api/blueprints/validate", "POST"),
    ("api/blueprints/*", "GET, HEAD, DELETE"),
    ("api/blueprints/*/status", "GET, HEAD"),
    ("api/blueprints/*/reset", "POST"),
    ("api/scheduled-tasks", "GET, HEAD"),
    ("api/scheduled-tasks/*/*", "GET, HEAD"),
    ("api/scheduled-tasks/*/*/pause", "POST"),
    ("api/scheduled-tasks/*/*/resume", "POST"),
    ("api/scheduled-tasks/*/*/trigger", "POST"),
    ("api/kv", "GET, HEAD"),
    ("api/kv/**", "GET, HEAD, POST, PUT, DELETE"),
    ("api/keys", "GET, HEAD, POST"),
    ("api/keys/*", "DELETE"),
    ("api/debug/faults", "POST, PUT, DELETE"),
    ("api/metrics", "GET, HEAD"),
    ("api/metrics/history", "GET, HEAD"),
    ("api/invocation-metrics", "GET, HEAD"),
    ("api/invocation-metrics/slow", "GET, HEAD"),
    ("api/events", "GET, HEAD"),
    ("api/events/stream", "GET, HEAD"),
    ("api/log-levels", "GET, HEAD"),
    ("api/log-levels/*", "GET, HEAD, PUT, DELETE"),
    ("api/config", "GET, HEAD"),
    ("api/config/*", "PUT, DELETE"),
    ("api/members", "GET, HEAD, POST"),
    ("api/members/*", "DELETE"),
];

/// The `Allow` value of `path` (without its leading `/`), or `None` when the API has no such path.
pub fn allowed(path: &str) -> Option<&'static str> {
    let segments: Vec<&str> = path.split('/').collect();
    PATHS.iter().find(|(pattern, _)| crate::auth::matches(pattern, &segments)).map(|(_, methods)| *methods)
}

/// The answer to a request no route took: 405 on a path the API has (another method), else 404.
pub fn unrouted(req: &crate::Request) -> crate::ApiError {
    match allowed(&req.path) {
        Some(_) => {
            crate::ApiError::new(405, "method_not_allowed", format!("{} is not allowed on /{}", req.method, req.path))
        }
        None => crate::ApiError::not_found(format!("no such path: /{}", crate::auth::clip(&req.path))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_paths_name_their_methods_and_others_none() {
        assert_eq!(allowed("api/health"), Some("GET, HEAD"));
        assert_eq!(allowed("api/kv/user/a/b"), Some("GET, HEAD, POST, PUT, DELETE"));
        assert_eq!(allowed("api/blueprints/shop/status"), Some("GET, HEAD"));
        assert_eq!(allowed("api/blueprints/validate"), Some("POST"));
        assert_eq!(allowed("api/blueprints/a/b/c"), None);
        assert_eq!(allowed("api/kv/"), None, "an empty key segment is no path");
        assert_eq!(allowed("api/nope"), None);
        assert_eq!(allowed(""), None);
    }

    #[test]
    fn a_request_no_route_took_is_405_on_a_known_path_else_404() {
        let request = |method: &str, path: &str| crate::Request {
            method: method.into(),
            path: path.into(),
            ..crate::Request::default()
        };
        assert_eq!(unrouted(&request("PUT", "api/config")).status, 405);
        assert_eq!(unrouted(&request("PUT", "api/log-levels")).status, 405);
        assert_eq!(unrouted(&request("GET", "api/config/a/b")).status, 404);
        assert_eq!(unrouted(&request("GET", "api/events/nope")).status, 404);
    }
}
