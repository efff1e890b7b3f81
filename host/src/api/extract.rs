//! Request extractors whose rejections use the API's error format: a JSON
//! object body (content type, size limit and syntax checked), path segments
//! (UTF-8 and syntax checked) and strict query strings.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};

use super::error::{ApiError, ErrorCode};
use crate::model;

/// A request body of type `T`, read as a JSON object: content type, size
/// limit and syntax are checked, then `T` is deserialized with every error
/// naming its field (`details.field`, as a path such as `filters.tags[0]`)
/// and carrying a code from its kind (a missing, unknown or mistyped
/// field), never from an error's text.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_bytes(req, state).await?;
        typed(json_object(&bytes, "")?, "").map(Self)
    }
}

/// A body that may be left out entirely (no body, no content type), which
/// reads as `{}`.
pub struct OptionalBody<T>(pub T);

impl<S: Send + Sync, T: RequestBody> FromRequest<S> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let declared_empty = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() == b"0");
        let no_type = !req.headers().contains_key(header::CONTENT_TYPE);
        let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
        if no_type && (declared_empty || (!chunked && !req.headers().contains_key(header::CONTENT_LENGTH))) {
            return typed(serde_value::Value::Map(Default::default()), "").map(Self);
        }
        let bytes = json_bytes(req, state).await?;
        // An empty body, or `null`, is the same as no body.
        if bytes.trim_ascii().is_empty() || bytes.trim_ascii() == b"null" {
            return typed(serde_value::Value::Map(Default::default()), "").map(Self);
        }
        typed(json_object(&bytes, "")?, "").map(Self)
    }
}

/// The bytes of a JSON body (its content type checked, its size limited).
async fn json_bytes<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    require_json_content_type(req.headers())?;
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than this endpoint accepts",
            )
        } else {
            ApiError::new(ErrorCode::InvalidBody, "the request body could not be read")
        }
    })
}

/// A request document: deserialized from JSON, with per-field codes where
/// a field's rule has its own (`scopes` → `invalid_scopes`).
pub trait RequestBody: serde::de::DeserializeOwned {
    /// The code for an error of `kind` at `field` (a top-level field
    /// name), when the field has its own; otherwise the kind is the code.
    fn field_code(_field: &str, _kind: ErrorCode) -> Option<ErrorCode> {
        None
    }
}

/// Reads a JSON document that must be an object, as a value tree. `at`
/// names where the document is when it is not the body itself (the
/// `params` part of a multipart request): errors name it as their field,
/// and fields inside it as `at.field`.
pub fn json_object(bytes: &[u8], at: &str) -> Result<serde_value::Value, ApiError> {
    let (what, named) = if at.is_empty() {
        ("the request body".to_owned(), None)
    } else {
        (format!("`{at}`"), Some(serde_json::json!({"field": at})))
    };
    match serde_json::from_slice::<serde_value::Value>(bytes) {
        Ok(v @ serde_value::Value::Map(_)) => {
            refuse_nul(&v, &mut at.to_owned())?;
            Ok(v)
        }
        Ok(_) => {
            let e = ApiError::new(ErrorCode::InvalidBody, format!("{what} must be a JSON object"));
            Err(match named {
                Some(d) => e.with_details(d),
                None => e,
            })
        }
        Err(e) => Err(
            ApiError::new(ErrorCode::MalformedJson, format!("{what} is not valid JSON: {e}")).with_details(
                named.unwrap_or_else(|| serde_json::json!({"line": e.line(), "column": e.column()})),
            ),
        ),
    }
}

/// Deserializes `T` from a value tree; `prefix` goes in front of the field
/// paths of errors (`params` for a multipart part).
pub fn typed<T: RequestBody>(tree: serde_value::Value, prefix: &str) -> Result<T, ApiError> {
    let de = serde_value::ValueDeserializer::<FieldDeError>::new(tree);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut path = String::new();
        for segment in e.path().iter() {
            let name = match segment {
                serde_path_to_error::Segment::Seq { index } => {
                    path.push_str(&format!("[{index}]"));
                    continue;
                }
                serde_path_to_error::Segment::Map { key }
                | serde_path_to_error::Segment::Enum { variant: key } => key.clone(),
                serde_path_to_error::Segment::Unknown => continue,
            };
            push_segment(&mut path, &name);
        }
        let inner = e.into_inner();
        // A missing field is reported at its parent; an unknown one may be
        // too: name the field itself.
        if let Some(field) = &inner.field
            && path.rsplit(['.', ']']).next() != Some(field.as_str())
        {
            push_segment(&mut path, field);
        }
        let top = path.split(['.', '[']).next().unwrap_or_default().to_owned();
        let code = T::field_code(&top, inner.code).unwrap_or(inner.code);
        let mut full = prefix.to_owned();
        if !path.is_empty() {
            push_segment(&mut full, &path);
        }
        let field = if full.is_empty() { "body".to_owned() } else { full };
        let message = if field == "body" {
            inner.message
        } else {
            format!("`{field}`: {}", inner.message)
        };
        ApiError::invalid_field(&field, code, message)
    })
}

/// One problem found while deserializing a request document: its kind
/// comes from the serde hook that raised it, not from its text.
#[derive(Debug)]
pub struct FieldDeError {
    code: ErrorCode,
    message: String,
    /// The field a missing/unknown-field error is about.
    field: Option<String>,
}

impl FieldDeError {
    fn new(code: ErrorCode, message: String) -> Self {
        Self {
            code,
            message,
            field: None,
        }
    }
}

impl std::fmt::Display for FieldDeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FieldDeError {}

impl serde::de::Error for FieldDeError {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        Self::new(ErrorCode::InvalidValue, msg.to_string())
    }

    fn invalid_type(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        Self::new(
            ErrorCode::InvalidType,
            format!("expected {exp}, got {}", describe(unexp)),
        )
    }

    fn invalid_value(unexp: serde::de::Unexpected<'_>, exp: &dyn serde::de::Expected) -> Self {
        Self::new(
            ErrorCode::InvalidValue,
            format!("expected {exp}, got {}", describe(unexp)),
        )
    }

    fn invalid_length(len: usize, exp: &dyn serde::de::Expected) -> Self {
        Self::new(
            ErrorCode::InvalidValue,
            format!("expected {exp}, got {len} items"),
        )
    }

    // The value is not echoed (it may be any size), as in `describe`.
    fn unknown_variant(_variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(
            ErrorCode::InvalidValue,
            format!("unknown value; expected one of: {}", expected.join(", ")),
        )
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        Self {
            code: ErrorCode::UnknownField,
            message: format!("unknown field; allowed: {}", expected.join(", ")),
            field: Some(field.to_owned()),
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            code: ErrorCode::MissingField,
            message: "this field is required".to_owned(),
            field: Some(field.to_owned()),
        }
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self {
            code: ErrorCode::InvalidValue,
            message: "this field is given twice".to_owned(),
            field: Some(field.to_owned()),
        }
    }
}

/// A JSON reading of serde's `Unexpected` (`a string`, not `string "x"`:
/// no value is echoed back).
fn describe(u: serde::de::Unexpected<'_>) -> &'static str {
    use serde::de::Unexpected as U;
    match u {
        U::Bool(_) => "a boolean",
        U::Unsigned(_) | U::Signed(_) | U::Float(_) => "a number",
        U::Char(_) | U::Str(_) => "a string",
        U::Bytes(_) => "bytes",
        U::Unit | U::Option => "null",
        U::Seq => "a list",
        U::Map => "an object",
        _ => "another type",
    }
}

fn push_segment(path: &mut String, segment: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(&segment.replace('\0', "\\u0000"));
}

/// Refuses a NUL character in any string or key of a JSON document: no
/// catalog stores one (PostgreSQL text cannot hold it), and no field of the
/// API has a use for it. `details.field` names where it was, as a path
/// of names and indexes joined by dots (`metadata.a.0`, as it always was).
fn refuse_nul(v: &serde_value::Value, path: &mut String) -> Result<(), ApiError> {
    use serde_value::Value as V;
    let nul = |path: &str| {
        ApiError::invalid_field(
            path,
            ErrorCode::InvalidCharacter,
            format!("`{path}` contains a NUL character (\\u0000), which no field accepts"),
        )
    };
    match v {
        V::String(s) if s.contains('\0') => Err(nul(path)),
        V::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                push_segment(path, &i.to_string());
                refuse_nul(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        V::Map(m) => {
            for (k, item) in m {
                let len = path.len();
                let key = match k {
                    V::String(k) => k.as_str(),
                    _ => "",
                };
                push_segment(path, key);
                if key.contains('\0') {
                    return Err(nul(path));
                }
                refuse_nul(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
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
            ApiError::new(ErrorCode::InvalidBody, format!("unreadable body: {e}"))
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
            ErrorCode::UnsupportedMediaType,
            format!("expected a JSON body (Content-Type: application/json), got {t:?}"),
        )),
        None => Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected a JSON body: set Content-Type: application/json",
        )),
    }
}

fn path_rejection(e: axum::extract::rejection::PathRejection) -> ApiError {
    path_rejection_text(&e.body_text())
}

fn path_rejection_text(why: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidPath, format!("invalid path: {why}"))
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

/// A query string read into `T`, the type that also documents it
/// (`IntoParams`): a name `T` does not document is `unknown_parameter`, a
/// repeated one `duplicate_parameter`, a required one left out
/// `missing_field`, and a value that does not parse `invalid_parameter`,
/// each naming the parameter in `details.field`.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T> FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned + utoipa::IntoParams,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let raw = parts.uri.query().unwrap_or_default().as_bytes();
        let documented = T::into_params(|| Some(utoipa::openapi::path::ParameterIn::Query));
        let names: Vec<&str> = documented.iter().map(|p| p.name.as_str()).collect();
        let mut seen = std::collections::BTreeSet::new();
        for (k, _) in url::form_urlencoded::parse(raw) {
            if !names.contains(&k.as_ref()) {
                return Err(ApiError::invalid_field(
                    &k,
                    ErrorCode::UnknownParameter,
                    format!("unknown query parameter `{k}`; allowed: {}", names.join(", ")),
                ));
            }
            if !seen.insert(k.clone()) {
                return Err(ApiError::invalid_field(
                    &k,
                    ErrorCode::DuplicateParameter,
                    format!("query parameter `{k}` is given more than once"),
                ));
            }
        }
        for p in &documented {
            if p.required == utoipa::openapi::Required::True && !seen.iter().any(|k| *k == p.name) {
                return Err(ApiError::invalid_field(
                    &p.name,
                    ErrorCode::MissingField,
                    format!("query parameter `{}` is required", p.name),
                ));
            }
        }
        let de = serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(raw));
        serde_path_to_error::deserialize(de).map(Self).map_err(|e| {
            let field = e.path().to_string();
            ApiError::invalid_field(
                &field,
                ErrorCode::InvalidParameter,
                format!("query parameter `{field}`: {}", e.inner()),
            )
        })
    }
}

/// `value` of query parameter `name` within `min..=max`, or `default` when
/// absent (the range the parameter's documentation states).
pub fn in_range(name: &str, value: Option<u32>, min: u32, max: u32, default: u32) -> Result<u32, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if (min..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid_field(
            name,
            ErrorCode::InvalidParameter,
            format!("`{name}` must be an integer from {min} to {max}"),
        )),
    }
}
