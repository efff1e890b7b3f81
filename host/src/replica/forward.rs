//! What an edge answers itself and what it forwards to its origin.
//!
//! An edge answers the search path from its replica: searches (text, image,
//! more-like-this), embeddings, the page, the API document, health and
//! metrics. Everything else (writes, reads of the catalog, jobs, admin
//! calls, plugin uploads, product images) is forwarded to the origin with
//! the caller's own headers, credentials included, and the origin's answer
//! is streamed back. Forwarding rather than redirecting: clients need not
//! reach the origin (it may sit on a private network behind its edges),
//! `Authorization` would not survive a redirect to another host in most
//! clients, and a 307 on a large upload costs the client the upload twice.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use crate::api::error::{ApiError, ErrorCode};

/// Seconds since the edge last knew it held the origin's state, on every
/// answer the edge gives itself.
pub const STALENESS_HEADER: &str = "vitrine-staleness";

/// Whether an edge answers this request itself.
pub fn served_locally(method: &Method, path: &str) -> bool {
    let read = *method == Method::GET || *method == Method::HEAD;
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        [""] | ["page.js" | "page.css" | "openapi.json" | "metrics"] | ["docs", ..] | ["health", ..] => read,
        ["v1", "embed"] => *method == Method::POST,
        ["v1", "tenants", _, "search"] | ["v1", "tenants", _, "search", "image"] => *method == Method::POST,
        _ => false,
    }
}

/// The tenant of a search path (`/v1/tenants/{t}/search[/image]`).
pub fn search_tenant(path: &str) -> Option<&str> {
    let mut segments = path.trim_start_matches('/').split('/');
    match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some("v1"), Some("tenants"), Some(t), Some("search")) => Some(t),
        _ => None,
    }
}

/// Headers that belong to one connection, not to the request.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "host"
    )
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Sends requests on to the origin.
pub struct Forwarder {
    origin: String,
    client: reqwest::Client,
}

impl Forwarder {
    pub fn new(origin_url: &str, timeout: Duration) -> Self {
        Self {
            origin: origin_url.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(Duration::from_secs(5))
                // The origin's redirects go back to the client as they are.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_default(),
        }
    }

    /// The origin's answer to `req`, or 502 `origin_unreachable`.
    pub async fn forward(&self, req: Request) -> Response {
        let client_ip = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let url = format!("{}{path}", self.origin);
        let mut headers = HeaderMap::new();
        copy_headers(&parts.headers, &mut headers);
        if let Some(ip) = client_ip {
            // Appended to what the client sent: the origin trusts the list
            // only from addresses in its `server.trusted_proxies`.
            let forwarded = match parts.headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(earlier) => format!("{earlier}, {ip}"),
                None => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&forwarded) {
                headers.insert("x-forwarded-for", v);
            }
        }
        let stream = body.into_data_stream().map_err(std::io::Error::other);
        let sent = self
            .client
            .request(parts.method.clone(), url)
            .headers(headers)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await;
        match sent {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status());
                if let Some(h) = response.headers_mut() {
                    copy_headers(answer.headers(), h);
                    h.remove(header::CONTENT_LENGTH);
                }
                let body = Body::from_stream(answer.bytes_stream());
                response
                    .body(body)
                    .unwrap_or_else(|_| ApiError::internal().into_response())
            }
            Err(e) => {
                tracing::warn!(error = %e.without_url(), method = %parts.method, "cannot forward to the origin");
                let mut e = ApiError::new(
                    ErrorCode::OriginUnreachable,
                    "this edge cannot reach its origin now; searches are still answered here",
                );
                e.retry_after = Some(2);
                e.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_search_path_stays_local_and_the_rest_goes_to_the_origin() {
        for (m, p) in [
            (Method::POST, "/v1/tenants/shop/search"),
            (Method::POST, "/v1/tenants/shop/search/image"),
            (Method::POST, "/v1/embed"),
            (Method::GET, "/"),
            (Method::GET, "/page.js"),
            (Method::GET, "/health/ready"),
            (Method::GET, "/metrics"),
            (Method::GET, "/openapi.json"),
            (Method::GET, "/docs/init.js"),
        ] {
            assert!(served_locally(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::POST, "/v1/tenants/shop/products"),
            (Method::GET, "/v1/tenants/shop/products/a"),
            (Method::PUT, "/v1/tenants/shop/products/a/image"),
            (Method::POST, "/v1/tenants"),
            (Method::DELETE, "/v1/tenants/shop/keys/k"),
            (Method::POST, "/v1/admin/reindex"),
            (Method::PUT, "/v1/tenants/shop/plugins/p"),
            (Method::GET, "/v1/tenants/shop/search"),
            (Method::POST, "/v1/tenants/shop/search/other"),
            (Method::POST, "/health/ready"),
            (Method::GET, "/v1/replication/feed"),
        ] {
            assert!(!served_locally(&m, p), "{m} {p}");
        }
        assert_eq!(search_tenant("/v1/tenants/shop/search"), Some("shop"));
        assert_eq!(search_tenant("/v1/tenants/shop/search/image"), Some("shop"));
        assert_eq!(search_tenant("/v1/embed"), None);
        assert_eq!(search_tenant("/health/ready"), None);
    }
}
