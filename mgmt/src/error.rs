//! The one error shape of the API.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    /// A short, stable, machine-readable kind (`not_found`, `bad_request`, ...).
    pub error: String,
    /// What a person needs to act on it.
    pub detail: String,
    /// More machine-readable context (merged into the body), e.g. the line of a blueprint error.
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: u16, error: &str, detail: impl Into<String>) -> ApiError {
        ApiError { status, error: error.to_string(), detail: detail.into(), extra: None }
    }

    pub fn bad_request(detail: impl Into<String>) -> ApiError {
        ApiError::new(400, "bad_request", detail)
    }

    pub fn not_found(detail: impl Into<String>) -> ApiError {
        ApiError::new(404, "not_found", detail)
    }

    pub fn unavailable(detail: impl Into<String>) -> ApiError {
        ApiError::new(503, "unavailable", detail)
    }

    pub fn timeout(detail: impl Into<String>) -> ApiError {
        ApiError::new(504, "timeout", detail)
    }

    pub fn body(&self) -> serde_json::Value {
        let mut body = json!({ "error": self.error, "detail": self.detail });
        if let (Some(serde_json::Value::Object(extra)), Some(map)) = (&self.extra, body.as_object_mut()) {
            for (k, v) in extra {
                map.insert(k.clone(), v.clone());
            }
        }
        body
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.error, self.detail)
    }
}

impl std::error::Error for ApiError {}
