//! The search page at `/`: three files embedded in the binary (no CDN, it
//! works offline), served with a strict Content-Security-Policy. The page
//! calls the same public API as any client, with a key the user pastes.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../../assets/page/index.html");
const PAGE_JS: &str = include_str!("../../assets/page/page.js");
const PAGE_CSS: &str = include_str!("../../assets/page/page.css");

/// Scripts and styles only from this origin, no inline code; product
/// images from anywhere (shops' own URLs) or from blob URLs (uploaded
/// images fetched with the key); API calls to this origin only.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data: http: https:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    embedded(content_type, body, CSP)
}

/// A file embedded in the binary, served under `csp` with the headers every
/// page asset carries.
pub(super) fn embedded(content_type: &'static str, body: &'static str, csp: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(csp));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Small files that change with the binary: revalidate on every load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}

#[utoipa::path(
    get, path = "/", operation_id = "search_page", summary = "The search page", tag = "page",
    responses((status = 200, description = "The search page", content_type = "text/html", body = String))
)]
pub async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

#[utoipa::path(
    get, path = "/page.js", operation_id = "search_page_script", summary = "The search page's script", tag = "page",
    responses((status = 200, description = "The page's script", content_type = "text/javascript", body = String))
)]
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", PAGE_JS)
}

#[utoipa::path(
    get, path = "/page.css", operation_id = "search_page_style", summary = "The search page's style sheet", tag = "page",
    responses((status = 200, description = "The page's style sheet", content_type = "text/css", body = String))
)]
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", PAGE_CSS)
}
