//! The HTTP API (API.md): axum routers, the middleware stack (request ids,
//! tracing, metrics, deadlines, CORS, body limits) and error mapping.
//! Handlers are thin: parse, authorise, call the catalog, map the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;

use crate::config::Settings;
use crate::encoder::service::SharedEncoder;
use crate::store::Catalog;
use crate::store::vectors::SharedVectors;
use crate::telemetry::{HTTP_DURATION, HTTP_REQUESTS};

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod embed;
pub mod error;
pub mod extract;
pub mod health;
pub mod jobs;
pub mod plugins;
pub mod products;
pub mod search;
pub mod tenants;

#[cfg(test)]
mod tests;

use error::ApiError;

/// Everything a handler may use. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub catalog: Arc<dyn Catalog>,
    pub encoder: SharedEncoder,
    pub vectors: SharedVectors,
    pub search: Arc<crate::search::SearchService>,
    /// Image downloads for `image_url` queries (SSRF-safe).
    pub fetcher: Arc<crate::media::ImageFetcher>,
    pub auth: Arc<auth::Authenticator>,
    pub metrics: PrometheusHandle,
    pub limits: Limits,
}

/// Request limits taken from settings.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            request_timeout: Duration::from_secs(s.server.request_timeout_secs),
            max_body_bytes: s.server.max_body_bytes,
            max_batch_body_bytes: s.server.max_batch_body_bytes,
            cors_allowed_origins: s.server.cors_allowed_origins.clone(),
        }
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The whole application: routes plus middleware.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let v1 = Router::new()
        .route(
            "/tenants",
            post(tenants::create_tenant).get(tenants::list_tenants),
        )
        .route("/tenants/{t}", get(tenants::get_tenant))
        .route("/tenants/{t}/keys", post(tenants::create_key))
        .route("/tenants/{t}/keys/{key_id}", delete(tenants::delete_key))
        .route(
            "/tenants/{t}/products",
            post(products::create).get(products::list),
        )
        .route(
            "/tenants/{t}/products/batch",
            post(products::batch).layer(DefaultBodyLimit::max(limits.max_batch_body_bytes)),
        )
        .route(
            "/embed",
            post(embed::embed).layer(DefaultBodyLimit::max(embed::MAX_BODY_BYTES)),
        )
        .route(
            "/tenants/{t}/search",
            post(search::search).layer(DefaultBodyLimit::max(embed::MAX_BODY_BYTES)),
        )
        .route(
            "/tenants/{t}/search/image",
            post(search::search_image).layer(DefaultBodyLimit::max(embed::MAX_IMAGE_BYTES + 64 * 1024)),
        )
        .route("/tenants/{t}/analytics/queries", get(analytics::queries))
        .route("/tenants/{t}/plugins", get(plugins::list))
        .route(
            "/tenants/{t}/plugins/{name}",
            put(plugins::upload)
                .get(plugins::get)
                .delete(plugins::delete)
                .layer(DefaultBodyLimit::max(crate::plugins::MAX_UPLOAD_BYTES)),
        )
        .route("/tenants/{t}/plugins/{name}/activate", post(plugins::activate))
        .route("/tenants/{t}/jobs", get(jobs::list))
        .route("/jobs/{job_id}", get(jobs::get))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/admin/reindex", post(admin::reindex))
        .route("/admin/vectors", get(admin::vectors))
        .route(
            "/tenants/{t}/products/{id}",
            get(products::get)
                .put(products::put)
                .patch(products::patch)
                .delete(products::delete),
        );

    Router::new()
        .nest("/v1", v1)
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/health/dependencies", get(health::dependencies))
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn(track_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limits.max_body_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(SetRequestIdLayer::new(X_REQUEST_ID.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(|req: &Request| {
                            let id = req
                                .headers()
                                .get(&X_REQUEST_ID)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            tracing::info_span!(
                                "request",
                                request_id = %id,
                                method = %req.method(),
                                path = %req.uri().path(),
                            )
                        })
                        .on_request(())
                        .on_response(
                            |res: &axum::http::Response<_>, latency: Duration, _: &tracing::Span| {
                                let status = res.status().as_u16();
                                let ms = latency.as_secs_f64() * 1000.0;
                                if status >= 500 {
                                    tracing::error!(status, latency_ms = ms, "request finished");
                                } else {
                                    tracing::info!(status, latency_ms = ms, "request finished");
                                }
                            },
                        )
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("handler panicked");
                    ApiError::internal().into_response()
                }))
                .layer(cors(&limits.cors_allowed_origins))
                .layer(middleware::from_fn_with_state(limits.request_timeout, deadline)),
        )
        .with_state(state)
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, X_REQUEST_ID.clone()])
        .expose_headers([X_REQUEST_ID.clone(), header::RETRY_AFTER])
        .max_age(Duration::from_secs(3600))
}

/// Answers 503 when a request outlives the configured deadline, so a hung
/// dependency never holds a client forever.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request did not finish within {} s", limit.as_secs()),
            );
            e.retry_after = Some(1);
            e.into_response()
        }
    }
}

/// Request counts and latency by route template, method and status.
async fn track_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let res = next.run(req).await;
    let status = res.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(start.elapsed().as_secs_f64());
    res
}

async fn not_found() -> ApiError {
    ApiError::not_found("route_not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method",
    )
}
