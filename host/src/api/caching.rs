//! HTTP caching: ETags of product reads and searches, `If-None-Match`
//! answered with 304, and a `Cache-Control` and `Vary` on every response.
//!
//! A product read's or a search's ETag is a hash of the tenant's generation
//! (which every product write, index change and plugin change bumps), the
//! encoder model, and the request: it is computed before the work, so a 304
//! costs one small catalog read. It is read before the data, so data never
//! goes out under an older generation's tag.

use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiResult;

/// What keyed responses that may be revalidated carry: browsers keep them,
/// shared caches do not, and every use asks the server first.
pub const REVALIDATE: HeaderValue = HeaderValue::from_static("private, no-cache");
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

/// The ETag of `parts` under the tenant's current generation.
pub async fn tenant_etag(state: &AppState, tenant: &str, parts: &[&[u8]]) -> ApiResult<String> {
    let generation = state.catalog.tenant_generation(tenant).await?;
    Ok(etag_at(state, tenant, generation, parts))
}

/// The ETag of `parts` under a generation of the tenant read beforehand.
pub fn etag_at(state: &AppState, tenant: &str, generation: i64, parts: &[&[u8]]) -> String {
    // The model's id (another model, other results); none while it loads.
    let model = state
        .encoder
        .service()
        .map(|s| s.model_id().to_owned())
        .unwrap_or_default();
    let mut h = Sha256::new();
    for part in [tenant.as_bytes(), &generation.to_le_bytes(), model.as_bytes()]
        .into_iter()
        .chain(parts.iter().copied())
    {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    format!("\"{}\"", super::auth::hex(&digest[..16]))
}

/// The tags of the request's `If-None-Match`.
fn if_none_match(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Whether `If-None-Match` names `etag` (weak comparison, RFC 9110
/// 13.1.2).
fn names(headers: &HeaderMap, etag: &str) -> bool {
    if_none_match(headers).any(|t| t.trim_start_matches("W/") == etag)
}

/// Whether `If-None-Match` is `*` (any current representation).
fn any_tag(headers: &HeaderMap) -> bool {
    if_none_match(headers).any(|t| t == "*")
}

/// Whether `If-None-Match` holds `etag` or `*`, for a representation that
/// exists.
pub fn fresh(headers: &HeaderMap, etag: &str) -> bool {
    names(headers, etag) || any_tag(headers)
}

/// `res` with its ETag and the revalidation policy.
pub fn tagged(mut res: Response, etag: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(etag) {
        res.headers_mut().insert(header::ETAG, v);
    }
    res.headers_mut().insert(header::CACHE_CONTROL, REVALIDATE);
    res
}

/// The 304 for a fresh `etag`.
pub fn not_modified(etag: &str) -> Response {
    tagged(StatusCode::NOT_MODIFIED.into_response(), etag)
}

/// `produce`'s answer, or 304 when the client's copy is `etag`'s.
pub async fn conditional<R: IntoResponse>(
    headers: &HeaderMap,
    etag: &str,
    produce: impl Future<Output = ApiResult<R>>,
) -> ApiResult<Response> {
    if names(headers, etag) {
        return Ok(not_modified(etag));
    }
    if any_tag(headers) {
        // `*` holds only when a representation exists (RFC 9110 13.1.2):
        // a product that is not there is still a 404.
        produce.await?;
        return Ok(not_modified(etag));
    }
    Ok(tagged(produce.await?.into_response(), etag))
}

/// Sets what a handler left unset: `Cache-Control` (`no-store` unless the
/// answer is a successful, tagged one; answers under `/v1` depend on the
/// key) and `Vary: Authorization` on keyed routes.
pub async fn cache_headers(req: Request, next: Next) -> Response {
    let keyed = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|p| p.as_str().starts_with("/v1/"));
    let mut res = next.run(req).await;
    let ok = res.status().is_success() || res.status() == StatusCode::NOT_MODIFIED;
    let h = res.headers_mut();
    if !ok {
        // An error is about this moment (a 429, a 503): never reuse it.
        h.insert(header::CACHE_CONTROL, NO_STORE);
    } else if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, NO_STORE);
    }
    if keyed {
        h.append(header::VARY, HeaderValue::from_static("authorization"));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_and_weak_tags_match() {
        let mut h = HeaderMap::new();
        assert!(!fresh(&h, "\"a\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"x\", W/\"a\""));
        assert!(fresh(&h, "\"a\""));
        assert!(!fresh(&h, "\"b\""));
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("*"));
        assert!(fresh(&h, "\"b\""));
    }
}
