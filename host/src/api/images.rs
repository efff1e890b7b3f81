//! Product images uploaded to the service (shops without public image
//! URLs): `PUT|GET|DELETE /v1/tenants/{t}/products/{id}/image`.
//!
//! An upload gets the checks of a fetched image (size, format by its magic
//! bytes, pixel count, a full decode under the decode budget), is stored
//! once by its SHA-256 in the blob store, and indexing embeds it instead of
//! fetching `image_url`. `GET` serves the original, or a thumbnail
//! (`?size=N`, N one of [`THUMBNAIL_EDGES`]) made once and kept in a
//! bounded cache.

use super::types::ErrorBody;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use image::ImageFormat;
use serde_json::json;

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Query, TenantItemPath, binary_body, media_type};
use super::products::{index_job, not_found, validate_path_id};
use super::tenants::{authorize_tenant, authorize_tenant_read};
use super::types::{ImageQuery, ProductWritten};
use crate::media::decode::DecodeError;
use crate::media::fetch::{hex_sha256, inspect};
use crate::media::{BlobError, BlobStore, FetchedImage, MediaError};
use crate::model::Product;
use crate::store::StoreError;

/// Thumbnail edges a client may ask for: a few, so that each image has at
/// most this many thumbnails to make and cache.
pub const THUMBNAIL_EDGES: [u32; 6] = [32, 64, 128, 256, 512, 1024];
/// Bytes of thumbnails kept in memory.
const THUMBNAIL_CACHE_BYTES: u64 = 64 * 1024 * 1024;

/// Where uploaded images live, and their thumbnails.
pub struct ImageStore {
    blobs: BlobStore,
    /// (sha256, edge) → (content type, bytes). Keyed by content, so one
    /// image uploaded by several products or tenants is resized once.
    thumbnails: moka::future::Cache<(String, u32), (&'static str, Bytes)>,
}

impl ImageStore {
    pub fn new(blobs: BlobStore) -> Arc<Self> {
        Arc::new(Self {
            blobs,
            thumbnails: moka::future::Cache::builder()
                .weigher(|_, (_, b): &(&'static str, Bytes)| u32::try_from(b.len()).unwrap_or(u32::MAX))
                .max_capacity(THUMBNAIL_CACHE_BYTES)
                .build(),
        })
    }
}

fn no_image(p: &Product) -> ApiError {
    ApiError::not_found(
        ErrorCode::ImageNotFound,
        format!("product `{}` has no uploaded image", p.external_id),
    )
    .with_details(json!({"external_id": p.external_id, "image_url": p.fields.image_url}))
}

fn media_error(e: MediaError) -> ApiError {
    let err = match &e {
        MediaError::UnsupportedType(_) => ApiError::new(ErrorCode::UnsupportedImage, e.to_string())
            .with_status(StatusCode::UNSUPPORTED_MEDIA_TYPE),
        MediaError::TooLarge { .. } | MediaError::TooManyPixels { .. } => {
            ApiError::new(ErrorCode::ImageTooLarge, e.to_string())
        }
        _ => ApiError::new(ErrorCode::InvalidImage, e.to_string()),
    };
    err.with_details(json!({"field": "image"}))
}

fn blob_error(e: BlobError) -> ApiError {
    tracing::error!(error = %e, "blob store");
    match e {
        // The product names an image the store no longer has: retrying
        // will not bring it back.
        BlobError::NotFound(_) => {
            ApiError::not_found(ErrorCode::ImageNotFound, "the stored image is missing")
        }
        _ => ApiError::unavailable("blob store"),
    }
}

fn content_type(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "image/png",
        ImageFormat::Gif => "image/gif",
        ImageFormat::WebP => "image/webp",
        _ => "image/jpeg",
    }
}

async fn product(state: &AppState, tenant: &str, id: &str) -> ApiResult<Product> {
    state
        .catalog
        .get_product(tenant, id)
        .await?
        .ok_or_else(|| not_found(tenant, id))
}

async fn set_image(
    state: &AppState,
    tenant: &str,
    id: &str,
    key: Option<&str>,
) -> ApiResult<Json<ProductWritten>> {
    let job = index_job(tenant, vec![id.to_owned()]);
    match state.catalog.set_product_image(tenant, id, key, &job).await {
        Ok(product) => Ok(Json(ProductWritten {
            product: product.view(),
            job_id: Some(job.id),
            warnings: None,
        })),
        Err(StoreError::NotFound) => Err(not_found(tenant, id)),
        Err(e) => Err(e.into()),
    }
}

/// `PUT .../image`: a binary body (JPEG, PNG, WebP or GIF).
#[utoipa::path(
    put, path = "/v1/tenants/{t}/products/{id}/image", operation_id = "put_product_image", summary = "Upload a product image", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$")),
    request_body(content = Vec<u8>, content_type = "image/*", description = "JPEG, PNG, WebP or GIF bytes"),
    responses((status = 200, description = "Stored; the product is re-indexed with it", body = ProductWritten),
        (status = 422, description = "The image does not decode or is too large", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<ProductWritten>> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    if let Some(t) =
        media_type(&headers).filter(|t| !t.starts_with("image/") && t != "application/octet-stream")
    {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!(
                "send the image's bytes (Content-Type: image/jpeg, image/png, image/webp or image/gif), not {t:?}"
            ),
        ));
    }
    let limit = state.limits.max_image_bytes;
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the image is larger than {limit} bytes"),
        )
        .with_details(json!({"field": "image", "limit_bytes": limit}))
    };
    let body = binary_body(body, limit, too_large)?;
    if body.is_empty() {
        return Err(ApiError::invalid_field(
            "image",
            ErrorCode::MissingField,
            "the body must be the image's bytes",
        ));
    }
    let (format, width, height) = inspect(&body, state.limits.max_pixels).map_err(media_error)?;
    // The whole image must decode, as indexing will decode it.
    super::embed::decode_image_bytes(&state.limits, body.to_vec(), "image").await?;
    // Only a product that exists gets a blob.
    product(&state, &tenant, &id).await?;
    let image = FetchedImage {
        sha256: hex_sha256(&body),
        bytes: body,
        format,
        width,
        height,
        final_url: String::new(),
    };
    let key = state.images.blobs.put_image(&image).await.map_err(blob_error)?;
    set_image(&state, &tenant, &id, Some(&key)).await
}

/// `DELETE .../image`: the product goes back to its `image_url` (or its
/// text) and is re-indexed. The blob stays: other products may share it.
#[utoipa::path(
    delete, path = "/v1/tenants/{t}/products/{id}/image", operation_id = "delete_product_image", summary = "Remove a product image", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$")),
    responses((status = 200, description = "Removed; the product is re-indexed without it", body = ProductWritten)),
    security(("bearer" = ["write"]))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
) -> ApiResult<Json<ProductWritten>> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let p = product(&state, &tenant, &id).await?;
    if p.image_key.is_none() {
        return Err(no_image(&p));
    }
    set_image(&state, &tenant, &id, None).await
}

/// `GET .../image[?size=N]`: the original, or a thumbnail whose longest
/// edge is at most `N` pixels (PNG when the image has transparency, JPEG
/// otherwise). Revalidated by `ETag` on every use: the image of a product
/// can change under the same URL.
#[utoipa::path(
    get, path = "/v1/tenants/{t}/products/{id}/image", operation_id = "get_product_image", summary = "Get a product image or its thumbnail", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$"),
        ImageQuery),
    responses((status = 200, description = "The image (or its thumbnail)", content_type = "image/*", body = Vec<u8>),
        (status = 304, description = "Not modified (`If-None-Match`)")),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    Query(q): Query<ImageQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    validate_path_id(&id)?;
    let size = match q.size {
        None => None,
        Some(n) => Some(Some(n).filter(|n| THUMBNAIL_EDGES.contains(n)).ok_or_else(|| {
            ApiError::invalid_field(
                "size",
                ErrorCode::InvalidParameter,
                format!("size must be one of {THUMBNAIL_EDGES:?}"),
            )
            .with_details(json!({"field": "size", "allowed": THUMBNAIL_EDGES}))
        })?),
    };
    // A search token (a shop's page showing its results) may fetch the
    // images of the products its forced filters let through; another is
    // as absent as a product that does not exist.
    let grant = match &principal {
        Principal::Token(_) => {
            let grant = principal.require_search(&tenant)?;
            super::tenants::tenant_exists(&state, &tenant).await?;
            grant
        }
        _ => {
            authorize_tenant_read(&state, &principal, &tenant).await?;
            None
        }
    };
    let p = product(&state, &tenant, &id).await?;
    if grant.is_some_and(|g| !g.shows(&p)) {
        return Err(not_found(&tenant, &id));
    }
    let (Some(key), Some(sha)) = (p.image_key.as_deref(), p.image_sha256()) else {
        return Err(no_image(&p));
    };
    let etag = match size {
        None => format!("\"{sha}\""),
        Some(n) => format!("\"{sha}-{n}\""),
    };
    if super::caching::fresh(&headers, &etag) {
        return Ok(with_image_headers(
            StatusCode::NOT_MODIFIED.into_response(),
            &etag,
        ));
    }
    let (ctype, bytes) = match size {
        None => {
            let bytes = state.images.blobs.get(key).await.map_err(blob_error)?;
            let format = image::guess_format(&bytes).unwrap_or(ImageFormat::Jpeg);
            (content_type(format), bytes)
        }
        Some(edge) => thumbnail(&state, key, sha, edge).await?,
    };
    let res = ([(header::CONTENT_TYPE, HeaderValue::from_static(ctype))], bytes).into_response();
    Ok(with_image_headers(res, &etag))
}

fn with_image_headers(res: Response, etag: &str) -> Response {
    let mut res = super::caching::tagged(res, etag);
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    res
}

/// A thumbnail from the cache, or made once however many requests want it
/// at the same time.
async fn thumbnail(state: &AppState, key: &str, sha: &str, edge: u32) -> ApiResult<(&'static str, Bytes)> {
    state
        .images
        .thumbnails
        .try_get_with((sha.to_owned(), edge), make_cached(state, key, edge))
        .await
        .map_err(|e| (*e).clone())
}

async fn make_cached(state: &AppState, key: &str, edge: u32) -> ApiResult<(&'static str, Bytes)> {
    let bytes = state.images.blobs.get(key).await.map_err(blob_error)?;
    let (format, w, h) = inspect(&bytes, state.limits.max_pixels).map_err(media_error)?;
    let made = crate::media::decode::budget()
        .run(u64::from(w) * u64::from(h), move || {
            make_thumbnail(&bytes, format, edge)
        })
        .await
        .map_err(|e| match e {
            DecodeError::Busy => ApiError::overloaded(),
            _ => ApiError::internal(),
        })?
        .map_err(|e| {
            tracing::error!(error = %e, key, "cannot make a thumbnail");
            ApiError::new(ErrorCode::InvalidImage, "the stored image does not decode")
        })?;
    Ok(made)
}

/// Resizes to fit `edge` (never enlarging), keeping transparency as PNG.
fn make_thumbnail(bytes: &[u8], format: ImageFormat, edge: u32) -> image::ImageResult<(&'static str, Bytes)> {
    let img = image::load_from_memory_with_format(bytes, format)?;
    let img = if img.width() > edge || img.height() > edge {
        img.resize(edge, edge, image::imageops::FilterType::Triangle)
    } else {
        img
    };
    let mut out = std::io::Cursor::new(Vec::new());
    if img.color().has_alpha() {
        img.to_rgba8().write_to(&mut out, ImageFormat::Png)?;
        Ok(("image/png", Bytes::from(out.into_inner())))
    } else {
        let rgb = img.to_rgb8();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).encode_image(&rgb)?;
        Ok(("image/jpeg", Bytes::from(out.into_inner())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32, alpha: bool) -> Vec<u8> {
        let mut out = std::io::Cursor::new(Vec::new());
        if alpha {
            image::RgbaImage::from_pixel(w, h, image::Rgba([200, 10, 10, 128]))
                .write_to(&mut out, ImageFormat::Png)
                .unwrap();
        } else {
            image::RgbImage::from_pixel(w, h, image::Rgb([10, 200, 10]))
                .write_to(&mut out, ImageFormat::Png)
                .unwrap();
        }
        out.into_inner()
    }

    #[test]
    fn thumbnails_fit_the_edge_keep_transparency_and_never_enlarge() {
        let (ct, b) = make_thumbnail(&png(400, 100, true), ImageFormat::Png, 64).unwrap();
        assert_eq!(ct, "image/png");
        let t = image::load_from_memory(&b).unwrap();
        assert_eq!((t.width(), t.height()), (64, 16));
        assert!(t.color().has_alpha());
        let (ct, b) = make_thumbnail(&png(50, 80, false), ImageFormat::Png, 256).unwrap();
        assert_eq!(ct, "image/jpeg");
        let t = image::load_from_memory(&b).unwrap();
        assert_eq!((t.width(), t.height()), (50, 80));
    }
}
