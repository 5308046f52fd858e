//! `GET /api/openapi.yaml`: the management API's OpenAPI 3.1 document, `mgmt/openapi.yaml`, compiled in.
//!
//! Invariant (checked by the tests here): every operation the document describes is a route of
//! [`crate::ROUTES`] and of [`crate::methods::PATHS`], and every method of every entry of those tables is
//! described by some operation of the document. The document is read with a small line scanner that knows
//! its layout (two-space indents, paths at level one under `paths:`, methods at level two); the contract test
//! (`cargo xtask contract`) loads it with a full OpenAPI parser and checks the live API against it.

use crate::server::Response;

/// The document, as served.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

pub fn document() -> Response {
    Response::document(200, "application/yaml", OPENAPI_YAML.as_bytes().to_vec())
}

/// `(METHOD, path)` of every operation, paths as written (`/api/kv/{key}`).
#[cfg(test)]
fn operations(yaml: &str) -> Vec<(String, String)> {
    let mut in_paths = false;
    let mut path = None;
    let mut found = Vec::new();
    for line in yaml.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() {
            in_paths = line.trim_end() == "paths:";
            path = None;
            continue;
        }
        if !in_paths {
            continue;
        }
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
        } else if let (Some(p), Some(m)) = (&path, line.strip_prefix("    ").and_then(|l| l.strip_suffix(':'))) {
            if ["get", "put", "post", "delete", "head", "patch", "options"].contains(&m) {
                found.push((m.to_ascii_uppercase(), p.clone()));
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{matches, ROUTES};
    use crate::methods::PATHS;

    /// A concrete path for a templated one: each `{param}` becomes one segment.
    fn concrete(path: &str) -> String {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        segments.iter().map(|s| if s.starts_with('{') { "x" } else { s }).collect::<Vec<_>>().join("/")
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_shared_error_schema() {
        assert!(OPENAPI_YAML.starts_with("openapi: 3.1."), "{}", &OPENAPI_YAML[..40]);
        assert!(OPENAPI_YAML.contains("\n    Error:\n"), "the shared error schema");
        assert!(OPENAPI_YAML.contains("bearerAuth:"));
        assert!(!OPENAPI_YAML.contains('\t'), "YAML indents with spaces");
        let ops = operations(OPENAPI_YAML);
        assert!(ops.len() > 40, "{ops:?}");
        let mut sorted = ops.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ops.len(), "an operation twice");
    }

    #[test]
    fn every_documented_operation_is_a_route_with_a_role_and_a_path_entry() {
        for (method, path) in operations(OPENAPI_YAML) {
            let segments: Vec<String> = concrete(&path).split('/').map(str::to_owned).collect();
            let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
            let method = if method == "HEAD" { "GET".to_owned() } else { method };
            let route = ROUTES
                .iter()
                .find(|(methods, pattern, _)| methods.split('|').any(|m| m == method) && matches(pattern, &segments));
            assert!(route.is_some(), "{method} {path} is documented but has no entry in auth ROUTES");
            let allowed = crate::methods::allowed(&segments.join("/"));
            assert!(
                allowed.is_some_and(|a| a.split(", ").any(|m| m == method)),
                "{method} {path} is documented but methods::PATHS says {allowed:?}"
            );
        }
    }

    /// Whether the documented `template` (`/api/kv/{key}`) can name a path of the table's `pattern`: a
    /// `{param}` stands for any one segment, `*` for any, a final `**` for one or more (or none).
    fn covers(template: &str, pattern: &str) -> bool {
        let template: Vec<&str> = template.trim_start_matches('/').split('/').collect();
        let pattern: Vec<&str> = pattern.split('/').collect();
        for (i, part) in pattern.iter().enumerate() {
            if *part == "**" && i + 1 == pattern.len() {
                return template.len() >= i;
            }
            match template.get(i) {
                Some(t) if t.starts_with('{') || *part == "*" || t == part => {}
                _ => return false,
            }
        }
        template.len() == pattern.len()
    }

    #[test]
    fn every_route_of_the_tables_is_documented() {
        let ops = operations(OPENAPI_YAML);
        let documented = |method: &str, pattern: &str| ops.iter().any(|(m, path)| m == method && covers(path, pattern));
        for (methods, pattern, _) in ROUTES {
            for method in methods.split('|') {
                assert!(documented(method, pattern), "ROUTES has {method} {pattern}, the document does not");
            }
        }
        for (pattern, methods) in PATHS {
            for method in methods.split(", ").filter(|m| *m != "HEAD") {
                assert!(documented(method, pattern), "methods::PATHS has {method} {pattern}, the document does not");
            }
        }
        assert!(covers("/api/kv/{key}", "api/kv/**") && covers("/api/blueprints/{name}", "api/blueprints/validate"));
        assert!(!covers("/api/blueprints/{name}/status", "api/blueprints/*") && !covers("/api/kv", "api/keys"));
    }

    #[test]
    fn it_is_served_as_yaml() {
        let response = document();
        assert_eq!(response.status, 200);
        assert_eq!(
            response.text.as_ref().map(|(t, b)| (t.as_str(), b.len())),
            Some(("application/yaml", OPENAPI_YAML.len()))
        );
    }
}
