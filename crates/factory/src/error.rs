//! The UI's one error type: a stable machine-readable `type`, an HTTP status and a message
//! written for a person (it is shown as is).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use openledger_protocol::{ApiError, ChainError};

/// Why a UI request failed.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// The form holds a value the action cannot take (422); the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// No such page, Datanet, block, transaction or action (404).
    #[error("{0}")]
    NotFound(String),
    /// The chain or a service behind the UI did not answer as expected (502).
    #[error("{0}")]
    Upstream(String),
    /// The deployment lacks a contract the action needs (500).
    #[error("this deployment has no {0} contract")]
    MissingContract(&'static str),
    /// Rendering a page failed (500): a bug in a template.
    #[error("page could not be rendered: {0}")]
    Template(String),
}

impl UiError {
    /// Stable machine-readable type.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid_input",
            Self::NotFound(_) => "not_found",
            Self::Upstream(_) => "upstream",
            Self::MissingContract(_) => "missing_contract",
            Self::Template(_) => "template",
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::MissingContract(_) | Self::Template(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn upstream(what: &str, e: impl std::fmt::Display) -> Self {
        Self::Upstream(format!("{what}: {e}"))
    }
}

impl From<ChainError> for UiError {
    fn from(e: ChainError) -> Self {
        match e {
            ChainError::Reverted(_) => Self::upstream("the chain refused", e),
            _ => Self::upstream("the chain did not answer", e),
        }
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        ApiError::new(self.status(), self.kind(), &self).into_response()
    }
}

impl From<minijinja::Error> for UiError {
    fn from(e: minijinja::Error) -> Self {
        Self::Template(format!("{e:#}"))
    }
}
