//! The one HTTP error envelope every OpenLedger API answers with.
//!
//! ```json
//! {"error": {"type": "duplicate_content", "message": "…", "code": "…", "param": …, "field": "…"}}
//! ```
//!
//! `type` is stable and machine-readable; `message` is for people. `code` and `param` appear
//! where an API promises them (the OpenAI-compatible serving API always sends both, `param`
//! possibly `null`); `field` names the request field a limit refused. A `Retry-After` header
//! goes with errors that pass with time (rate and queue limits). Each service maps its own
//! error enum to an [`ApiError`]; none writes the JSON itself.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An HTTP error: status, stable type, message and the optional members of the envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status.
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable machine-readable type, e.g. `duplicate_content`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Human-readable message.
    pub message: String,
    /// The optional members (boxed: most errors have none, and `Result`s stay small).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    extra: Option<Box<Extra>>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
struct Extra {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    param: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
    #[serde(skip)]
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status`, stable `kind` and `message`.
    pub fn new(status: StatusCode, kind: &'static str, message: impl std::fmt::Display) -> Self {
        Self {
            status,
            kind,
            message: message.to_string(),
            extra: None,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// With a finer machine-readable `code`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.extra().code = Some(code.into());
        self
    }

    /// With a `param` member naming the request parameter at fault (`Value::Null` sends an
    /// explicit `null`).
    pub fn with_param(mut self, param: serde_json::Value) -> Self {
        self.extra().param = Some(param);
        self
    }

    /// With the request `field` a limit refused.
    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.extra().field = Some(field.into());
        self
    }

    /// With a `Retry-After` of `secs` seconds.
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.extra().retry_after = Some(secs);
        self
    }

    /// The `code`, if any.
    pub fn code(&self) -> Option<&str> {
        self.extra.as_ref().and_then(|e| e.code.as_deref())
    }

    /// Seconds after which the same request may pass, if they are known.
    pub fn retry_after(&self) -> Option<u64> {
        self.extra.as_ref().and_then(|e| e.retry_after)
    }

    /// The `{"error": …}` body.
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": self })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(target: "api", status = %self.status, kind = self.kind, message = %self.message, "request failed");
        }
        let mut resp = (self.status, Json(self.body())).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_members_appear_only_when_set() {
        let plain = ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such thing").body();
        assert_eq!(
            plain,
            serde_json::json!({"error": {"type": "not_found", "message": "no such thing"}})
        );
        let full = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", "bad")
            .with_code("bad_param")
            .with_param(serde_json::Value::Null)
            .with_field("rank")
            .body();
        assert_eq!(full["error"]["code"], "bad_param");
        assert!(full["error"]["param"].is_null());
        assert!(
            full["error"]
                .as_object()
                .is_some_and(|o| o.contains_key("param"))
        );
        assert_eq!(full["error"]["field"], "rank");
    }

    #[test]
    fn retry_after_becomes_a_header() {
        let r = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "slow down")
            .with_retry_after(3)
            .into_response();
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            r.headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
}
