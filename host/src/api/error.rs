//! The one error type handlers return, rendered as API.md's
//! `{"error": {"code", "message", "details"}}`. Internal failures are logged
//! in full (inside the request's span, so with its request id) and answered
//! with a generic message: a 5xx body never leaks SQL, paths or traces.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::model::FieldError;
use crate::store::StoreError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Boxed: errors travel in every `Result` of the API layer, and a
    /// JSON value is large.
    pub details: Option<Box<Value>>,
    /// Seconds, for 429 and 503 answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(Box::new(details));
        self
    }

    /// 400 naming the offending field in `details.field`.
    pub fn invalid_field(field: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message).with_details(json!({ "field": field }))
    }

    /// 400 for a document with one or more invalid fields: the first one is
    /// named in `details.field`, all of them in `details.errors`.
    pub fn from_field_errors(errors: &[FieldError]) -> Self {
        let Some(first) = errors.first() else {
            return Self::new(StatusCode::BAD_REQUEST, "invalid_request", "invalid request");
        };
        let message = if errors.len() == 1 {
            first.message.clone()
        } else {
            format!("{} (and {} more problems)", first.message, errors.len() - 1)
        };
        Self::new(StatusCode::BAD_REQUEST, first.code, message).with_details(json!({
            "field": first.field,
            "errors": errors
                .iter()
                .map(|e| json!({"field": e.field, "code": e.code, "message": e.message}))
                .collect::<Vec<_>>(),
        }))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "an internal error occurred; the request id identifies it in the server logs",
        )
    }

    /// The encoder queue is full (503, retry in a second).
    pub fn overloaded() -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "the encoder queue is full; retry shortly",
        );
        e.retry_after = Some(1);
        e
    }

    pub fn unavailable(what: &str) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("the {what} is unavailable; retry shortly"),
        );
        e.retry_after = Some(1);
        e
    }

    /// The JSON body, also used for per-item errors in batch responses.
    pub fn body(&self) -> Value {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(d) = &self.details {
            error["details"] = (**d).clone();
        }
        json!({ "error": error })
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found("not_found", "not found"),
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
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
