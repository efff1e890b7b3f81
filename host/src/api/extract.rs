//! Request extractors whose rejections use the API's error format: a JSON
//! object body (content type, size limit and syntax checked), path segments
//! (UTF-8 and syntax checked) and strict query strings.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde_json::{Map, Value};

use super::error::ApiError;
use crate::model;

/// A JSON object request body.
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        require_json_content_type(req.headers())?;
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the request body is larger than this endpoint accepts",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "the request body could not be read",
                )
            }
        })?;
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(m)) => {
                refuse_nul_in_object(&m, "")?;
                Ok(Self(m))
            }
            Ok(_) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                "the request body must be a JSON object",
            )),
            Err(e) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
            .with_details(serde_json::json!({"line": e.line(), "column": e.column()}))),
        }
    }
}

/// Refuses a NUL character in any string or key of a JSON document: no
/// catalog stores one (PostgreSQL text cannot hold it), and no field of the
/// API has a use for it. `details.field` names where it was, as a JSON
/// path (`metadata.a.0`).
pub fn refuse_nul_in_object(m: &Map<String, Value>, prefix: &str) -> Result<(), ApiError> {
    fn object(m: &Map<String, Value>, path: &mut String) -> Result<(), ApiError> {
        for (k, item) in m {
            let len = path.len();
            push_segment(path, k);
            if k.contains('\0') {
                return Err(nul_error(path));
            }
            value(item, path)?;
            path.truncate(len);
        }
        Ok(())
    }
    fn value(v: &Value, path: &mut String) -> Result<(), ApiError> {
        match v {
            Value::String(s) if s.contains('\0') => Err(nul_error(path)),
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    push_segment(path, &i.to_string());
                    value(item, path)?;
                    path.truncate(len);
                }
                Ok(())
            }
            Value::Object(m) => object(m, path),
            _ => Ok(()),
        }
    }
    fn push_segment(path: &mut String, segment: &str) {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(&segment.replace('\0', "\\u0000"));
    }
    fn nul_error(path: &str) -> ApiError {
        ApiError::invalid_field(
            path,
            "invalid_character",
            format!("`{path}` contains a NUL character (\\u0000), which no field accepts"),
        )
    }
    object(m, &mut prefix.to_owned())
}

/// A JSON object body that may be left out entirely (no body, no content
/// type), which reads as `{}`.
pub struct OptionalJsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let no_type = !req.headers().contains_key(header::CONTENT_TYPE);
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        if no_type && (declared_empty || (!chunked && !req.headers().contains_key(header::CONTENT_LENGTH))) {
            return Ok(Self(Map::new()));
        }
        JsonObject::from_request(req, state)
            .await
            .map(|JsonObject(m)| Self(m))
    }
}

/// The request's media type (`Content-Type` without parameters), lower-case.
pub fn media_type(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
}

/// A binary body (an upload) of at most `limit` bytes; `too_large` is the
/// answer when it is over.
pub fn binary_body(
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
    too_large: impl Fn() -> ApiError,
) -> Result<Bytes, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("unreadable body: {e}"),
            )
        }
    })?;
    if body.len() > limit {
        return Err(too_large());
    }
    Ok(body)
}

/// `application/json`, `application/merge-patch+json` and any other
/// `application/*+json`, with or without parameters such as `charset`.
fn require_json_content_type(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let ct = media_type(headers);
    match ct.as_deref() {
        Some("application/json") => Ok(()),
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => Ok(()),
        Some(t) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected a JSON body (Content-Type: application/json), got {t:?}"),
        )),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "expected a JSON body: set Content-Type: application/json",
        )),
    }
}

fn path_rejection(e: axum::extract::rejection::PathRejection) -> ApiError {
    path_rejection_text(&e.body_text())
}

fn path_rejection_text(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_path",
        format!("invalid path: {why}"),
    )
}

/// The `{t}` path segment, validated as a tenant id.
pub struct TenantPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TenantPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(tenant) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(path_rejection)?;
        validate_tenant(&tenant)?;
        Ok(Self(tenant))
    }
}

/// `{t}` and a second segment (`{id}` of a product, or a key id).
pub struct TenantItemPath(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for TenantItemPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(path_rejection)?;
        let (tenant, item) = match params.as_slice() {
            [(_, tenant), (_, item)] => (tenant.clone(), item.clone()),
            // A static route standing in for an item whose id is the last
            // segment (`/products/batch`).
            [(_, tenant)] => {
                let last = parts.uri.path().rsplit('/').next().unwrap_or_default();
                (tenant.clone(), last.to_owned())
            }
            _ => return Err(path_rejection_text("expected a tenant and an item")),
        };
        validate_tenant(&tenant)?;
        Ok(Self(tenant, item))
    }
}

fn validate_tenant(t: &str) -> Result<(), ApiError> {
    model::validate_tenant_id(t).map_err(|e| ApiError::invalid_field(&e.field, e.code, e.message))
}

/// A query string whose parameters must all be among the allowed names.
pub struct StrictQuery(pub BTreeMap<String, String>);

impl StrictQuery {
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, ApiError> {
        let mut out = BTreeMap::new();
        for (k, v) in url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if !allowed.contains(&k.as_ref()) {
                return Err(ApiError::invalid_field(
                    &k,
                    "unknown_parameter",
                    format!("unknown query parameter `{k}`; allowed: {}", allowed.join(", ")),
                ));
            }
            if out.insert(k.to_string(), v.to_string()).is_some() {
                return Err(ApiError::invalid_field(
                    &k,
                    "duplicate_parameter",
                    format!("query parameter `{k}` is given more than once"),
                ));
            }
        }
        Ok(Self(out))
    }

    /// An integer parameter within `min..=max`, or `default` when absent.
    pub fn int(&self, name: &str, min: u32, max: u32, default: u32) -> Result<u32, ApiError> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse::<u32>()
                .ok()
                .filter(|n| (min..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        name,
                        "invalid_parameter",
                        format!("`{name}` must be an integer from {min} to {max}"),
                    )
                }),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }
}

/// Reads the remaining keys of a small request document, rejecting unknown
/// ones by name.
pub struct Fields(pub Map<String, Value>);

impl Fields {
    pub fn optional_str(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.0.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::invalid_field(
                name,
                "invalid_type",
                format!("{name} must be a string"),
            )),
        }
    }

    pub fn required_str(&mut self, name: &str) -> Result<String, ApiError> {
        self.optional_str(name)?
            .ok_or_else(|| ApiError::invalid_field(name, "missing_field", format!("{name} is required")))
    }

    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.0.remove(name).filter(|v| !v.is_null())
    }

    /// Fails on the first key nobody asked for.
    pub fn finish(self) -> Result<(), ApiError> {
        match self.0.keys().next() {
            None => Ok(()),
            Some(k) => Err(ApiError::invalid_field(
                k,
                "unknown_field",
                format!("unknown field `{k}`"),
            )),
        }
    }
}
