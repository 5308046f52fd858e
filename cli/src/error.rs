//! The CLI's one error type and the exit code each kind maps to: 1 the server refused (its error and
//! detail are kept), 2 a usage mistake (bad arguments, an unreadable file), 3 no node could be reached
//! (every address tried is named).

use serde_json::Value;

/// Exit codes a script can rely on.
pub const EXIT_OK: i32 = 0;
pub const EXIT_REFUSED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
pub const EXIT_UNREACHABLE: i32 = 3;

#[derive(Debug)]
pub enum CliError {
    /// The command line (or a file it names) is wrong; nothing was sent.
    Usage(String),
    /// A node answered with an error status; `body` is its JSON (`{"error","detail",...}`) when it sent JSON.
    Refused { status: u16, body: Value, node: String },
    /// No node answered: each address tried with what went wrong there.
    Unreachable { tried: Vec<(String, String)> },
    /// A request was sent and the connection failed before the answer: it may have been applied, so it
    /// was not sent again.
    Interrupted { node: String, detail: String },
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Refused { .. } => EXIT_REFUSED,
            CliError::Unreachable { .. } | CliError::Interrupted { .. } => EXIT_UNREACHABLE,
        }
    }

    /// The server's JSON error body, for `--json` output.
    pub fn server_body(&self) -> Option<&Value> {
        match self {
            CliError::Refused { body, .. } if !body.is_null() => Some(body),
            _ => None,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(text) => write!(f, "{text}"),
            CliError::Refused { status, body, node } => {
                let error = body["error"].as_str().unwrap_or("error");
                let detail = body["detail"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
                write!(f, "{node} refused ({status} {error}): {detail}")?;
                if let Some(field) = body["field"].as_str().filter(|field| !detail.contains(field)) {
                    write!(f, " [field {field}]")?;
                }
                Ok(())
            }
            CliError::Unreachable { tried } => {
                let each: Vec<String> = tried.iter().map(|(node, why)| format!("{node} ({why})")).collect();
                write!(f, "no node could be reached; tried {}", each.join(", "))
            }
            CliError::Interrupted { node, detail } => write!(
                f,
                "{node}: the connection failed after the request was sent ({detail}); it may have been applied, \
                 so it was not sent to another node"
            ),
        }
    }
}

impl std::error::Error for CliError {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refusals_name_the_node_status_error_and_detail() {
        let refused = |body: Value| CliError::Refused { status: 400, body, node: "h:1".into() }.to_string();
        let with_field = json!({"error": "invalid_blueprint", "detail": "line 4: slices[0].instances: too few",
            "field": "slices[0].instances", "line": 4});
        assert_eq!(refused(with_field), "h:1 refused (400 invalid_blueprint): line 4: slices[0].instances: too few");
        let field_elsewhere = json!({"error": "bad_request", "detail": "too few", "field": "instances"});
        assert_eq!(refused(field_elsewhere), "h:1 refused (400 bad_request): too few [field instances]");
        assert_eq!(refused(json!({"error": "x"})), "h:1 refused (400 x): {\"error\":\"x\"}");
    }

    #[test]
    fn each_kind_has_its_exit_code_and_unreachable_names_every_address() {
        let unreachable = CliError::Unreachable {
            tried: vec![("a:1".into(), "connection refused".into()), ("b:2".into(), "timed out".into())],
        };
        assert_eq!(unreachable.exit_code(), EXIT_UNREACHABLE);
        assert_eq!(
            unreachable.to_string(),
            "no node could be reached; tried a:1 (connection refused), b:2 (timed out)"
        );
        assert_eq!(CliError::Usage("x".into()).exit_code(), EXIT_USAGE);
        let refused = CliError::Refused { status: 409, body: json!({"error": "conflict"}), node: "a:1".into() };
        assert_eq!((refused.exit_code(), refused.server_body().is_some()), (EXIT_REFUSED, true));
        assert_eq!(CliError::Interrupted { node: "a:1".into(), detail: "reset".into() }.exit_code(), EXIT_UNREACHABLE);
    }
}
