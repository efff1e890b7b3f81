//! `POST /v1/embed`: a text or an image in, its CLIP vector out.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{Fields, JsonObject};
use crate::encoder::service::{EmbedError, EncoderService};
use crate::encoder::{DecodeOptions, DecodedImage, EncoderError};

/// Largest decoded image accepted (API.md: 10 MiB).
pub const MAX_IMAGE_BYTES: usize = 10 * 1024 * 1024;
/// Base64 grows data by 4/3; leave room for the JSON around it.
pub const MAX_BODY_BYTES: usize = MAX_IMAGE_BYTES / 3 * 4 + 64 * 1024;
/// Longest query text. CLIP reads 77 tokens; this only bounds the work of
/// tokenizing text nobody would type.
pub const MAX_TEXT_CHARS: usize = 4096;

pub async fn embed(
    State(state): State<AppState>,
    principal: Principal,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    // Any tenant key with the search scope may embed; no tenant data is read.
    match &principal {
        Principal::Admin => {}
        Principal::Tenant { tenant, .. } => principal.require(tenant, Scope::Search)?,
    }
    let mut f = Fields(body);
    let text = f.optional_str("text")?;
    let image = f.optional_str("image_base64")?;
    f.finish()?;
    let encoder = encoder(&state)?;
    let vector = match (text, image) {
        (Some(t), None) => {
            let t = validate_text(t)?;
            encoder.embed_text(t).await
        }
        (None, Some(b64)) => {
            let image = decode_image_base64(&b64, "image_base64").await?;
            encoder.embed_image(image).await
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "send exactly one of `text` or `image_base64`",
            )
            .with_details(json!({"field": "text"})));
        }
    }
    .map_err(embed_error)?;
    Ok(Json(json!({
        "model": encoder.model_id(),
        "dims": encoder.dims(),
        "vector": vector,
    })))
}

pub fn encoder(state: &AppState) -> ApiResult<EncoderService> {
    state.encoder.service().map_err(|why| {
        tracing::warn!(reason = %why, "embedding refused: encoder not ready");
        ApiError::unavailable("encoder")
    })
}

pub fn validate_text(t: String) -> ApiResult<String> {
    if t.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "text",
            "invalid_text",
            "text must not be empty",
        ));
    }
    if t.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid_field(
            "text",
            "invalid_text",
            format!("text must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(t)
}

/// Decodes base64 image data (a `data:image/...;base64,` prefix is
/// accepted) and the image itself, off the async threads.
pub async fn decode_image_base64(b64: &str, field: &str) -> ApiResult<DecodedImage> {
    let data = b64
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,").map(|(_, d)| d))
        .unwrap_or(b64);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            ApiError::invalid_field(
                field,
                "invalid_base64",
                format!("{field} is not valid base64: {e}"),
            )
        })?;
    decode_image_bytes(bytes, field).await
}

pub async fn decode_image_bytes(bytes: Vec<u8>, field: &str) -> ApiResult<DecodedImage> {
    if bytes.len() > MAX_IMAGE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the image is larger than {MAX_IMAGE_BYTES} bytes"),
        ));
    }
    let field = field.to_owned();
    tokio::task::spawn_blocking(move || DecodedImage::decode(&bytes, &DecodeOptions::default()))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|e| image_error(&e, &field))
}

fn image_error(e: &EncoderError, field: &str) -> ApiError {
    let (status, code) = match e {
        EncoderError::UnsupportedImageFormat(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image"),
        EncoderError::ImageTooLarge { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large"),
        _ => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_image"),
    };
    ApiError::new(status, code, e.to_string()).with_details(json!({"field": field}))
}

pub fn embed_error(e: EmbedError) -> ApiError {
    match e {
        EmbedError::Busy => ApiError::overloaded(),
        EmbedError::Stopped => ApiError::unavailable("encoder"),
        EmbedError::Encoder(e) => {
            tracing::error!(error = %e, "encoding failed");
            ApiError::internal()
        }
    }
}
