//! The HTTP API (API.md): axum routers, the middleware stack (request ids,
//! tracing, metrics, deadlines, CORS, body limits) and error mapping.
//! Handlers are thin: parse, authorise, call the catalog, map the result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
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
pub mod caching;
pub mod doc;
pub mod embed;
pub mod error;
pub mod extract;
pub mod health;
pub mod images;
pub mod jobs;
pub mod limits;
pub mod page;
pub mod plugins;
pub mod products;
pub mod quotas;
pub mod replication;
pub mod search;
pub mod tenants;
pub mod token;
pub mod types;

#[cfg(test)]
mod tests;

use error::{ApiError, ErrorCode};

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
    pub rate_limits: Arc<limits::RateLimiter>,
    /// Tenants' own limits and quotas.
    pub policies: Arc<quotas::TenantPolicies>,
    pub metrics: PrometheusHandle,
    pub limits: Limits,
    /// Uploaded product images and their thumbnails.
    pub images: Arc<images::ImageStore>,
    /// Set on an edge replica: its replication state and its way to the origin.
    pub edge: Option<Arc<crate::replica::EdgeRole>>,
}

/// Request limits taken from settings.
#[derive(Debug, Clone)]
pub struct Limits {
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    pub max_batch_body_bytes: usize,
    pub cors_allowed_origins: Vec<String>,
    /// `media.max_image_bytes`: the one limit on an image's bytes, however
    /// it arrives (upload, base64, URL).
    pub max_image_bytes: usize,
    pub max_pixels: u64,
    /// `server.trusted_proxies`.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
}

impl Limits {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            request_timeout: Duration::from_secs(s.server.request_timeout_secs),
            max_body_bytes: s.server.max_body_bytes,
            max_batch_body_bytes: s.server.max_batch_body_bytes,
            cors_allowed_origins: s.server.cors_allowed_origins.clone(),
            max_image_bytes: s.media.max_image_bytes,
            max_pixels: s.media.max_pixels,
            trusted_proxies: s.server.trusted_proxy_nets().into(),
        }
    }
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Every route with its document: the router is built from the handlers'
/// `#[utoipa::path]` annotations, so it serves exactly what `/openapi.json`
/// describes.
pub fn routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;
    let router = OpenApiRouter::with_openapi(doc::base())
        .routes(routes!(tenants::create_tenant, tenants::list_tenants))
        .routes(routes!(tenants::get_tenant, tenants::update_tenant))
        .routes(routes!(tenants::create_key))
        .routes(routes!(tenants::delete_key))
        .routes(routes!(products::create, products::list))
        // `batch` is also an external id: its GET, PUT, PATCH and DELETE
        // reach that product.
        .routes(routes!(
            products::batch,
            products::get_named_batch,
            products::put_named_batch,
            products::patch_named_batch,
            products::delete_named_batch
        ))
        .routes(routes!(
            products::get,
            products::put,
            products::patch,
            products::delete
        ))
        .routes(routes!(images::get, images::put, images::delete))
        .routes(routes!(embed::embed))
        .routes(routes!(search::search))
        .routes(routes!(search::search_image))
        .routes(routes!(analytics::queries))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::upload, plugins::get, plugins::delete))
        .routes(routes!(plugins::activate))
        .routes(routes!(jobs::list))
        .routes(routes!(jobs::get))
        .routes(routes!(jobs::cancel))
        .routes(routes!(admin::reindex))
        .routes(routes!(admin::vectors))
        .routes(routes!(replication::feed))
        .routes(routes!(replication::snapshot))
        .routes(routes!(replication::search_logs))
        .routes(routes!(replication::plugin_component))
        .routes(routes!(page::index))
        .routes(routes!(page::script))
        .routes(routes!(page::style))
        .routes(routes!(doc::openapi))
        .routes(routes!(doc::docs))
        .routes(routes!(doc::docs_init))
        .routes(routes!(doc::docs_script))
        .routes(routes!(doc::docs_style))
        .routes(routes!(health::live))
        .routes(routes!(health::ready))
        .routes(routes!(health::dependencies))
        .routes(routes!(health::metrics));
    let (router, mut document) = router.split_for_parts();
    doc::finish(&mut document);
    (router, document)
}

/// The whole application: routes plus middleware.
pub fn router(state: AppState) -> Router {
    let limits = state.limits.clone();
    let (routes, document) = routes();
    doc::publish(document);
    routes
        .route_layer(middleware::from_fn_with_state(limits.clone(), limit_body))
        .route_layer(middleware::from_fn_with_state(state.clone(), gate))
        .route_layer(middleware::from_fn(caching::cache_headers))
        .route_layer(middleware::from_fn(record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // `limit_body` sets each route's limit.
        .layer(DefaultBodyLimit::disable())
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(track_metrics))
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
                .layer(middleware::from_fn(refuse_odd_bytes))
                .layer(middleware::from_fn_with_state(limits.request_timeout, deadline))
                .layer(middleware::from_fn_with_state(state.clone(), edge_role)),
        )
        .with_state(state)
}

/// On an edge: answers the search path here (saying how stale the replica
/// is) and forwards everything else to the origin (`replica::forward`).
async fn edge_role(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(edge) = state.edge.clone() else {
        return next.run(req).await;
    };
    if !edge.answers(req.method(), req.uri().path()) {
        return edge.forwarder.forward(req).await;
    }
    let mut response = next.run(req).await;
    let staleness = edge
        .status
        .staleness()
        .map_or_else(|| "unknown".to_owned(), |s| format!("{:.1}", s.as_secs_f64()));
    if let Ok(v) = HeaderValue::from_str(&staleness) {
        response
            .headers_mut()
            .insert(crate::replica::forward::STALENESS_HEADER, v);
    }
    response
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
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            X_REQUEST_ID.clone(),
        ])
        .expose_headers([
            X_REQUEST_ID.clone(),
            header::RETRY_AFTER,
            header::ETAG,
            limits::RATELIMIT.clone(),
            limits::RATELIMIT_POLICY.clone(),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Routes outside authentication and rate limits: probes and scrapes
/// come from the operator's own systems, and must not be starved.
fn ungated(route: &str) -> bool {
    route.starts_with("/health/") || route == "/metrics"
}

/// The routes a search token may call: the searches, and the product
/// images a page shows with their results.
fn token_route(method: &Method, route: &str) -> bool {
    matches!(route, "/v1/tenants/{t}/search" | "/v1/tenants/{t}/search/image")
        || (*method == Method::GET && route == "/v1/tenants/{t}/products/{id}/image")
}

/// Authenticates every routed request, then takes it from its rate-limit
/// buckets, before any handler (or body read) runs: a tenant key's bucket
/// per class; for a search token, the client address's and its key's
/// tokens' bucket; for a request without a valid key, the client
/// address's. The admin key is not limited. Handlers read the outcome
/// ([`auth::Principal`]).
async fn gate(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    use limits::{Class, Owner};
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    if ungated(&route) {
        return next.run(req).await;
    }
    let limited = state.rate_limits.enabled() && state.auth.enabled();
    let address = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| {
            crate::conn::client_key(limits::client_address(
                c.0.ip(),
                req.headers(),
                &state.limits.trusted_proxies,
            ))
        })
        .filter(|_| limited);
    let mut shown = None;
    // The address's bucket, at most once per request.
    let mut address_paid = false;
    let mut pay_address = |shown: &mut Option<limits::Standing>| {
        let Some(a) = address.filter(|_| !address_paid) else {
            return Ok(());
        };
        address_paid = true;
        let standing = state
            .rate_limits
            .take(Owner::Address(a), state.rate_limits.address_bucket());
        if standing.refused() {
            return Err(standing);
        }
        *shown = Some(standing);
        Ok(())
    };
    let credential = state.auth.credential(req.headers());
    // A credential that costs a catalog read (a key not in memory) pays
    // the address's bucket first: guessing keys cannot flood the catalog.
    if state.auth.needs_lookup(&credential)
        && let Err(refused) = pay_address(&mut shown)
    {
        return too_many(&refused);
    }
    let outcome = state.auth.verify(credential, &*state.catalog).await;
    if let Ok(auth::Principal::Token(_)) = &outcome {
        // A token's shoppers each pay their own address's bucket, before
        // anything else: off its routes it is refused then, without
        // drawing on any bucket of its key.
        if let Err(refused) = pay_address(&mut shown) {
            return too_many(&refused);
        }
        if !token_route(req.method(), &route) {
            return auth::token_not_allowed().into_response();
        }
    }
    if outcome.is_err()
        && let Err(refused) = pay_address(&mut shown)
    {
        return too_many(&refused);
    }
    if limited
        && let Ok(p) = &outcome
        && let Some((tenant, key_id)) = p.key()
    {
        let own = match state.policies.get(&*state.catalog, tenant).await {
            Ok(l) => l,
            Err(e) => return e.into_response(),
        };
        let eff = state.rate_limits.effective(&own.rate_limits);
        let class = Class::of(req.method(), &route);
        let (owner, bucket) = match (p, class) {
            // A key's tokens share one bucket with its search limits.
            (auth::Principal::Token(_), _) => (Owner::Token(key_id.to_owned()), eff.search),
            (_, Class::Search) => (Owner::Key(key_id.to_owned(), class), eff.search),
            (_, Class::Write) => (Owner::Key(key_id.to_owned(), class), eff.write),
        };
        let standing = state.rate_limits.take(owner, bucket);
        if standing.refused() {
            return too_many(&standing);
        }
        shown = Some(standing);
    }
    req.extensions_mut().insert(auth::Authenticated(outcome));
    let mut res = next.run(req).await;
    if let Some(standing) = shown {
        standing.write_headers(res.headers_mut());
    }
    res
}

/// The 429 of a refused bucket.
fn too_many(standing: &limits::Standing) -> Response {
    let secs = standing.retry_after();
    let mut e = ApiError::new(
        ErrorCode::RateLimited,
        format!(
            "too many requests for the `{}` rate limit; retry in {secs} s",
            standing.policy()
        ),
    )
    .with_details(serde_json::json!({"policy": standing.policy()}));
    e.retry_after = Some(secs);
    let mut res = e.into_response();
    standing.write_headers(res.headers_mut());
    res
}

/// Answers 503 when a request outlives the configured deadline, so a hung
/// dependency never holds a client forever.
async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => {
            let mut e = ApiError::new(
                ErrorCode::Timeout,
                format!("the request did not finish within {} s", limit.as_secs()),
            );
            e.retry_after = Some(1);
            e.into_response()
        }
    }
}

/// Where the router writes the matched route template for `track_metrics`.
#[derive(Clone, Default)]
struct RouteSlot(Arc<std::sync::OnceLock<String>>);

/// Request counts and latency by route template, method and status: every
/// response, whatever answered it (route `unmatched` when no route did).
async fn track_metrics(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    // A fixed set: a client must not mint label values.
    let method = match *req.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => req.method().as_str().to_owned(),
        _ => "other".to_owned(),
    };
    let res = next.run(req).await;
    let route = slot.0.get().cloned().unwrap_or_else(|| "unmatched".to_owned());
    let status = res.status().as_u16().to_string();
    let labels = [("route", route), ("method", method), ("status", status)];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(start.elapsed().as_secs_f64());
    res
}

async fn record_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<RouteSlot>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(req).await
}

/// The largest body a route accepts.
fn body_limit(route: &str, method: &Method, limits: &Limits) -> usize {
    match route.strip_prefix("/v1").unwrap_or(route) {
        // The batch import; the other methods reach the product `batch`.
        "/tenants/{t}/products/batch" if *method == Method::POST => limits.max_batch_body_bytes,
        "/embed" | "/tenants/{t}/search" => embed::base64_body_limit(limits.max_image_bytes),
        "/tenants/{t}/search/image" => embed::multipart_body_limit(limits.max_image_bytes),
        "/tenants/{t}/plugins/{name}" => crate::plugins::MAX_UPLOAD_BYTES,
        "/tenants/{t}/products/{id}/image" if *method == Method::PUT => limits.max_image_bytes,
        _ => limits.max_body_bytes,
    }
}

/// A body announced larger than the route accepts is refused with 413
/// before it is read (so without `100 Continue`); a body that turns out
/// larger while it is read fails its extractor with 413.
async fn limit_body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let limit = body_limit(&route, req.method(), &limits);
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit as u64) {
        // No `Connection: close`: closing with the body unread would reset
        // the connection under a client still sending it, and it would
        // never see this answer. hyper reads on (discarding) or closes;
        // the connection layer's timeouts bound how long.
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body is larger than this endpoint accepts ({limit} bytes)"),
        )
        .with_details(serde_json::json!({"limit_bytes": limit}))
        .into_response();
    }
    next.run(req.map(|b| axum::body::Body::new(http_body_util::Limited::new(b, limit))))
        .await
}

/// Refuses, before routing, a path segment or query parameter that is not
/// UTF-8 once percent-decoded or that holds a NUL: no identifier or
/// parameter of the API has a use for one, and PostgreSQL cannot store it.
/// Other control characters are left to each field's own rules.
async fn refuse_odd_bytes(req: Request, next: Next) -> Response {
    if let Err(e) = check_uri(req.uri()) {
        return e.into_response();
    }
    next.run(req).await
}

/// What a percent-decoded part of a URI must not be.
enum OddBytes {
    NotUtf8,
    /// The decoded text, NUL included.
    Nul(String),
}

impl OddBytes {
    fn what(&self) -> &'static str {
        match self {
            OddBytes::NotUtf8 => "is not UTF-8 once percent-decoded",
            OddBytes::Nul(_) => "holds a NUL character (%00)",
        }
    }
}

/// `part` percent-decoded, as UTF-8 without a NUL.
fn decoded(part: &str) -> Result<String, OddBytes> {
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(part).collect();
    let text = String::from_utf8(bytes).map_err(|_| OddBytes::NotUtf8)?;
    if text.contains('\0') {
        return Err(OddBytes::Nul(text));
    }
    Ok(text)
}

fn check_uri(uri: &axum::http::Uri) -> Result<(), ApiError> {
    for segment in uri.path().split('/') {
        decoded(segment)
            .map_err(|odd| ApiError::new(ErrorCode::InvalidPath, format!("a path segment {}", odd.what())))?;
    }
    for pair in uri.query().unwrap_or_default().split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // Form encoding: `+` is a space.
        let (name, value) = (
            decoded(&name.replace('+', " ")),
            decoded(&value.replace('+', " ")),
        );
        if let Some(odd) = name.as_ref().err().or(value.as_ref().err()) {
            let field = match &name {
                Ok(n) => n.clone(),
                Err(OddBytes::Nul(n)) => n.replace('\0', "\u{fffd}"),
                Err(OddBytes::NotUtf8) => "\u{fffd}".to_owned(),
            };
            return Err(ApiError::invalid_field(
                &field,
                ErrorCode::InvalidParameter,
                format!("a query parameter {}", odd.what()),
            ));
        }
    }
    Ok(())
}

async fn not_found() -> ApiError {
    ApiError::not_found(ErrorCode::RouteNotFound, "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this endpoint does not accept that method",
    )
}
