//! The one error type of the server and its OpenAI-shaped HTTP form.
//!
//! Every error becomes `{"error": {"message", "type", "code", "param"}}` with a stable
//! machine-readable `code` and the OpenAI error category in `type`.

use alloy_primitives::B256;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openledger_protocol::ApiError;

use crate::hooks::HookError;

/// Everything a request, an adapter load or the server can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The body is not valid JSON or does not have the request's shape.
    #[error("malformed request body: {0}")]
    MalformedJson(String),
    /// A parameter is outside its domain.
    #[error("invalid value for '{param}': {message}")]
    InvalidParam {
        /// The parameter (`temperature`, `max_tokens`, ...).
        param: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The prompt (with the completion it asks for) does not fit the model's context.
    #[error("{0}")]
    ContextLength(String),
    /// No model or adapter by this name.
    #[error("the model '{0}' does not exist (GET /v1/models lists what is served)")]
    ModelNotFound(String),
    /// The model exists but cannot be served here (other base model, deactivated).
    #[error("the model '{name}' cannot be served: {reason}")]
    NotServable {
        /// The name asked for.
        name: String,
        /// Why.
        reason: String,
    },
    /// An adapter does not fit the base model or is not a valid adapter.
    #[error("adapter '{name}' refused at load: {reason}")]
    AdapterRefused {
        /// The adapter's name or hash.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An adapter's bytes do not hash to the name it was asked for under.
    #[error("adapter '{name}' refused at load: its content hashes to {actual}, not {expected}")]
    HashMismatch {
        /// The adapter's name.
        name: String,
        /// The hash it was named by.
        expected: B256,
        /// What its bytes hash to.
        actual: B256,
    },
    /// The adapter's blob is in no cache tier and not in the adapter store.
    #[error("adapter '{name}' could not be fetched: no blob {hash} in the adapter store")]
    AdapterMissing {
        /// The adapter's name or hash.
        name: String,
        /// The blob's hash.
        hash: B256,
    },
    /// The adapter store could not be read.
    #[error("adapter '{name}' could not be fetched: {reason}")]
    StoreUnavailable {
        /// The adapter's name or hash.
        name: String,
        /// The store's error.
        reason: String,
    },
    /// The queue is full.
    #[error("the server is busy ({0} requests in flight); retry later")]
    Overloaded(usize),
    /// An admin endpoint was called without the admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// A payment/attribution hook refused the request.
    #[error(transparent)]
    Hook(#[from] HookError),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A bug or an unexpected runtime failure.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServeError {
    /// A parameter error.
    pub fn param(param: &'static str, message: impl Into<String>) -> Self {
        ServeError::InvalidParam {
            param,
            message: message.into(),
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        use ServeError::*;
        match self {
            MalformedJson(_) | InvalidParam { .. } | ContextLength(_) | AdapterRefused { .. } => {
                StatusCode::BAD_REQUEST
            }
            HashMismatch { .. } => StatusCode::BAD_REQUEST,
            NotServable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ModelNotFound(_) => StatusCode::NOT_FOUND,
            StoreUnavailable { .. } | AdapterMissing { .. } => StatusCode::BAD_GATEWAY,
            Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Hook(h) => h.status,
            ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> String {
        use ServeError::*;
        match self {
            MalformedJson(_) => "invalid_json",
            InvalidParam { .. } => "invalid_value",
            ContextLength(_) => "context_length_exceeded",
            ModelNotFound(_) => "model_not_found",
            NotServable { .. } => "model_not_servable",
            AdapterRefused { .. } => "adapter_refused",
            HashMismatch { .. } => "adapter_hash_mismatch",
            StoreUnavailable { .. } | AdapterMissing { .. } => "adapter_unavailable",
            Overloaded(_) => "queue_full",
            Unauthorized(_) => "invalid_admin_token",
            Hook(h) => return h.kind.clone(),
            ShuttingDown => "shutting_down",
            Internal(_) => "internal_error",
        }
        .to_string()
    }

    /// OpenAI's error category.
    pub fn category(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 404 | 409 | 413 | 422 => "invalid_request_error",
            401 => "authentication_error",
            402 => "insufficient_quota",
            403 => "permission_error",
            429 => "rate_limit_error",
            _ => "server_error",
        }
    }

    /// The error in the protocol's envelope: OpenAI's shape, `param` always present.
    pub fn to_api_error(&self) -> ApiError {
        let param = match self {
            ServeError::InvalidParam { param, .. } => serde_json::json!(param),
            ServeError::ModelNotFound(_) | ServeError::NotServable { .. } => {
                serde_json::json!("model")
            }
            _ => serde_json::Value::Null,
        };
        ApiError::new(self.status(), self.category(), self)
            .with_code(self.code())
            .with_param(param)
    }

    /// The `{"error": ...}` body.
    pub fn body(&self) -> serde_json::Value {
        self.to_api_error().body()
    }
}

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        self.to_api_error().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_openai_shape_and_status() {
        let e = ServeError::ModelNotFound("nope".into());
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
        let b = e.body();
        assert_eq!(b["error"]["code"], "model_not_found");
        assert_eq!(b["error"]["type"], "invalid_request_error");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("nope"))
        );
        let h = ServeError::from(HookError {
            status: StatusCode::PAYMENT_REQUIRED,
            kind: "insufficient_escrow".into(),
            message: "top up".into(),
        });
        assert_eq!(h.status().as_u16(), 402);
        assert_eq!(h.body()["error"]["code"], "insufficient_escrow");
        assert_eq!(ServeError::Overloaded(3).status().as_u16(), 429);
    }
}
