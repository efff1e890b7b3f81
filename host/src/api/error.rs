//! The one error type handlers return, rendered as API.md's
//! `{"error": {"code", "message", "details"}}`. Internal failures are logged
//! in full (inside the request's span, so with its request id) and answered
//! with a generic message: a 5xx body never leaks SQL, paths or traces.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::types::{ErrorBody, ErrorObject};
use crate::model::FieldError;
use crate::store::StoreError;

pub use crate::error_code::ErrorCode;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    /// Boxed: errors travel in every `Result` of the API layer, and a
    /// JSON value is large.
    pub details: Option<Box<Value>>,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An answer with `code` and its usual status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    /// The same answer with another status than the code's usual one.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// 400 naming the offending field in `details.field`.
    pub fn invalid_field(field: &str, code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message)
            .with_status(StatusCode::BAD_REQUEST)
            .with_details(json!({ "field": field }))
    }

    /// 400 for a document with one or more invalid fields: the first one is
    /// named in `details.field`, all of them in `details.errors`.
    pub fn from_field_errors(errors: &[FieldError]) -> Self {
        let Some(first) = errors.first() else {
            return Self::new(ErrorCode::InvalidRequest, "invalid request");
        };
        let message = if errors.len() == 1 {
            first.message.clone()
        } else {
            format!("{} (and {} more problems)", first.message, errors.len() - 1)
        };
        Self::new(first.code, message)
            .with_status(StatusCode::BAD_REQUEST)
            .with_details(json!({
                "field": first.field,
                "errors": errors
                    .iter()
                    .map(|e| json!({"field": e.field, "code": e.code, "message": e.message}))
                    .collect::<Vec<_>>(),
            }))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message).with_status(StatusCode::FORBIDDEN)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(code, message).with_status(StatusCode::NOT_FOUND)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    pub fn internal() -> Self {
        Self::new(
            ErrorCode::InternalError,
            "an internal error occurred; the request id identifies it in the server logs",
        )
    }

    /// The encoder queue is full (503, retry in a second).
    pub fn overloaded() -> Self {
        let mut e = Self::new(ErrorCode::Overloaded, "the encoder queue is full; retry shortly");
        e.retry_after = Some(1);
        e
    }

    pub fn unavailable(what: &str) -> Self {
        let mut e = Self::new(
            ErrorCode::Unavailable,
            format!("the {what} is unavailable; retry shortly"),
        );
        e.retry_after = Some(1);
        e
    }

    /// The `error` object, also used for per-item errors in batch
    /// responses.
    pub fn object(&self) -> ErrorObject {
        ErrorObject {
            code: self.code,
            message: self.message.clone(),
            details: self.details.as_deref().cloned(),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: self.object() }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(ErrorCode::NotFound, "not found"),
            // Written for people (they name the duplicate id or the stale
            // version) and never contain internals.
            StoreError::Conflict(m) => Self::conflict(m),
            // A uniqueness rule no handler expected: its text (the
            // database's own) stays in the log.
            StoreError::Duplicate(m, _) => {
                tracing::warn!(error = %m, "storage conflict");
                Self::conflict("the request conflicts with stored data")
            }
            StoreError::Unavailable(m, _) => {
                tracing::error!(error = %m, "catalog unavailable");
                Self::unavailable("catalog")
            }
            StoreError::Other(m, _) => {
                tracing::error!(error = %m, "catalog error");
                Self::internal()
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
