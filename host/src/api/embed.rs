//! `POST /v1/embed`: a text or an image in, its CLIP vector out.

use super::types::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use serde_json::json;

use super::AppState;
use super::Limits;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::Body;
use super::types::{EmbedRequest, Embedding};
use crate::encoder::service::{EmbedError, EncoderService};
use crate::encoder::{DecodedImage, EncoderError};
use crate::media::decode::DecodeError;

/// Room for the JSON or multipart framing around an image.
const FRAMING_BYTES: usize = 64 * 1024;

/// Largest body of a JSON request carrying an image as base64 (which
/// grows data by 4/3).
pub fn base64_body_limit(max_image_bytes: usize) -> usize {
    max_image_bytes.div_ceil(3) * 4 + FRAMING_BYTES
}

/// Largest body of a multipart request carrying an image.
pub fn multipart_body_limit(max_image_bytes: usize) -> usize {
    max_image_bytes + FRAMING_BYTES
}
/// Longest query text. CLIP reads 77 tokens; this only bounds the work of
/// tokenizing text nobody would type.
pub const MAX_TEXT_CHARS: usize = 4096;

#[utoipa::path(
    post, path = "/v1/embed", operation_id = "embed", summary = "Embed a text or an image", tag = "search",
    request_body = EmbedRequest,
    responses((status = 200, description = "The CLIP vector", body = Embedding),
        (status = 422, description = "The image cannot be used", body = ErrorBody)),
    security(("bearer" = ["search"]))
)]
pub async fn embed(
    State(state): State<AppState>,
    principal: Principal,
    Body(EmbedRequest {
        text,
        image_base64: image,
    }): Body<EmbedRequest>,
) -> ApiResult<Json<Embedding>> {
    // Any tenant key with the search scope may embed; no tenant data is read.
    match &principal {
        Principal::Admin => {}
        Principal::Tenant { tenant, .. } => principal.require(tenant, Scope::Search)?,
        // Tokens are for a shop's searches, not for embedding anything.
        Principal::Token(g) => principal.require(&g.tenant, Scope::Search)?,
    }
    let encoder = encoder(&state)?;
    let vector = match (text, image) {
        (Some(t), None) => {
            let t = validate_text(t)?;
            encoder.embed_text(t).await
        }
        (None, Some(b64)) => {
            let image = decode_image_base64(&state.limits, &b64, "image_base64").await?;
            encoder.embed_image(image).await
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidQuery,
                "send exactly one of `text` or `image_base64`",
            )
            .with_details(json!({"field": "text"})));
        }
    }
    .map_err(embed_error)?;
    Ok(Json(Embedding {
        model: encoder.model_id().to_string(),
        dims: encoder.dims(),
        vector,
    }))
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
            ErrorCode::InvalidText,
            "text must not be empty",
        ));
    }
    if t.chars().count() > MAX_TEXT_CHARS {
        return Err(ApiError::invalid_field(
            "text",
            ErrorCode::InvalidText,
            format!("text must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(t)
}

/// Decodes base64 image data (a `data:image/...;base64,` prefix is
/// accepted) and the image itself, off the async threads.
pub async fn decode_image_base64(limits: &Limits, b64: &str, field: &str) -> ApiResult<DecodedImage> {
    let data = b64
        .strip_prefix("data:")
        .and_then(|rest| rest.split_once(";base64,").map(|(_, d)| d))
        .unwrap_or(b64);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| {
            ApiError::invalid_field(
                field,
                ErrorCode::InvalidBase64,
                format!("{field} is not valid base64: {e}"),
            )
        })?;
    decode_image_bytes(limits, bytes, field).await
}

/// Decodes an image within `media.max_image_bytes` and `media.max_pixels`,
/// under the process-wide decode budget.
pub async fn decode_image_bytes(limits: &Limits, bytes: Vec<u8>, field: &str) -> ApiResult<DecodedImage> {
    if bytes.len() > limits.max_image_bytes {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the image is larger than {} bytes", limits.max_image_bytes),
        )
        .with_details(json!({"field": field, "limit_bytes": limits.max_image_bytes})));
    }
    crate::media::decode::budget()
        .decode(bytes, limits.max_pixels)
        .await
        .map_err(|e| match e {
            DecodeError::Busy => {
                let mut e = ApiError::new(
                    ErrorCode::Overloaded,
                    "the image decoder is busy with other large images; retry shortly",
                );
                e.retry_after = Some(1);
                e
            }
            DecodeError::Image(e) => image_error(&e, field),
            // The decoder gave up on this image in a way it should not
            // have: still a property of the image.
            DecodeError::Crashed => ApiError::new(ErrorCode::InvalidImage, "the image could not be decoded")
                .with_details(json!({"field": field})),
        })
}

fn image_error(e: &EncoderError, field: &str) -> ApiError {
    let e = match e {
        EncoderError::UnsupportedImageFormat(_) => ApiError::new(ErrorCode::UnsupportedImage, e.to_string())
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        EncoderError::ImageTooLarge { .. } => ApiError::new(ErrorCode::ImageTooLarge, e.to_string()),
        _ => ApiError::new(ErrorCode::InvalidImage, e.to_string()),
    };
    e.with_details(json!({"field": field}))
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
