//! Liveness, readiness, dependency report and Prometheus metrics.

use super::types::ErrorBody;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;

use serde_json::json;

use super::types::{Dependencies, Dependency, Live, Ready};

use super::AppState;
use super::error::{ApiError, ErrorCode};

/// A dependency slower than this to answer a probe counts as down: a
/// readiness probe must answer quickly even when the database hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[utoipa::path(
    get, path = "/health/live", operation_id = "live", summary = "Liveness", tag = "health",
    responses((status = 200, description = "The process runs", body = Live))
)]
pub async fn live() -> Json<Live> {
    Json(Live { status: "ok".into() })
}

struct Probe {
    name: &'static str,
    backend: &'static str,
    ok: bool,
    latency: Duration,
    error: Option<String>,
}

async fn probe_all(state: &AppState) -> Vec<Probe> {
    let (catalog, encoder, vectors) =
        tokio::join!(probe_catalog(state), probe_encoder(state), probe_vectors(state));
    let mut probes = vec![catalog, encoder, vectors];
    if let Some(edge) = &state.edge {
        probes.push(probe_replica(&edge.status));
    }
    probes
}

/// An edge's replica is ready once bootstrapped and no staler than
/// `edge.max_staleness_secs`.
fn probe_replica(status: &crate::replica::ReplicaStatus) -> Probe {
    let error = if !status.bootstrapped() {
        Some(format!(
            "bootstrapping from the origin ({} products so far)",
            status.bootstrap_products()
        ))
    } else if status.fresh() {
        None
    } else {
        Some(match status.staleness() {
            Some(s) => format!(
                "the replica is {:.0} s stale (more than {} s){}",
                s.as_secs_f64(),
                status.max_staleness.as_secs(),
                if status.origin_reachable() {
                    ""
                } else {
                    "; the origin is unreachable"
                }
            ),
            None => "not yet caught up with the origin".to_owned(),
        })
    };
    Probe {
        name: "replica",
        backend: "origin",
        ok: error.is_none(),
        latency: Duration::ZERO,
        error,
    }
}

fn replica_view(status: &crate::replica::ReplicaStatus) -> super::types::ReplicaView {
    super::types::ReplicaView {
        bootstrapped: status.bootstrapped(),
        bootstrap_products: status.bootstrap_products(),
        bootstrap_total: status.bootstrap_total(),
        bootstrap_secs: status.bootstrap_secs(),
        applied_seq: status.applied(),
        head_seq: status.head(),
        lag_sequences: status.lag_sequences(),
        staleness_secs: status
            .staleness()
            .map(|s| (s.as_secs_f64() * 10.0).round() / 10.0),
        max_staleness_secs: status.max_staleness.as_secs(),
        origin_reachable: status.origin_reachable(),
    }
}

fn timed_out() -> String {
    format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())
}

async fn probe_catalog(state: &AppState) -> Probe {
    let start = Instant::now();
    let outcome = tokio::time::timeout(PROBE_TIMEOUT, state.catalog.ping()).await;
    let (ok, error) = match outcome {
        Ok(Ok(())) => (true, None),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "catalog probe failed");
            (false, Some("the catalog did not answer the probe".to_owned()))
        }
        Err(_) => (false, Some(timed_out())),
    };
    Probe {
        name: "catalog",
        backend: state.catalog.backend(),
        ok,
        latency: start.elapsed(),
        error,
    }
}

/// The encoder is ready when its thread embeds a short text in time.
async fn probe_encoder(state: &AppState) -> Probe {
    let start = Instant::now();
    let (ok, error) = match state.encoder.service() {
        Err(why) => (false, Some(why)),
        Ok(service) => match tokio::time::timeout(PROBE_TIMEOUT, service.embed_text("health".into())).await {
            Ok(Ok(_)) => (true, None),
            Ok(Err(e)) => (false, Some(e.to_string())),
            Err(_) => (false, Some(timed_out())),
        },
    };
    Probe {
        name: "encoder",
        backend: "candle-clip",
        ok,
        latency: start.elapsed(),
        error,
    }
}

/// The vector index is ready when it is open and answers a ping.
async fn probe_vectors(state: &AppState) -> Probe {
    let start = Instant::now();
    let (backend, ok, error) = match state.vectors.index() {
        Err(why) => ("none", false, Some(why)),
        Ok(index) => {
            let backend = index.backend();
            match tokio::time::timeout(PROBE_TIMEOUT, index.ping()).await {
                Ok(Ok(())) => (backend, true, None),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "vector index probe failed");
                    (
                        backend,
                        false,
                        Some("the vector index did not answer the probe".to_owned()),
                    )
                }
                Err(_) => (backend, false, Some(timed_out())),
            }
        }
    };
    Probe {
        name: "vectors",
        backend,
        ok,
        latency: start.elapsed(),
        error,
    }
}

fn probe_view(p: &Probe) -> Dependency {
    Dependency {
        status: if p.ok { "ok" } else { "unavailable" }.to_owned(),
        backend: p.backend.to_string(),
        latency_ms: (p.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        error: p.error.as_ref().map(ToString::to_string),
        replica: None,
    }
}

/// 200 only when every dependency answers; 503 naming the failing ones.
#[utoipa::path(
    get, path = "/health/ready", operation_id = "ready", summary = "Readiness", tag = "health",
    responses((status = 200, description = "Catalog, vectors and encoder usable", body = Ready),
        (status = 503, description = "Not ready; `details.failing` names what", body = ErrorBody))
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let probes = probe_all(&state).await;
    let checks: BTreeMap<String, String> = probes
        .iter()
        .map(|p| {
            (
                p.name.to_owned(),
                if p.ok { "ok" } else { "unavailable" }.to_owned(),
            )
        })
        .collect();
    let failing: Vec<&str> = probes.iter().filter(|p| !p.ok).map(|p| p.name).collect();
    if failing.is_empty() {
        Ok(Json(Ready {
            status: "ready".into(),
            checks,
        }))
    } else {
        let mut e = ApiError::new(
            ErrorCode::NotReady,
            format!("not ready: {} unavailable", failing.join(", ")),
        )
        .with_details(json!({"failing": failing, "checks": checks}));
        e.retry_after = Some(1);
        Err(e)
    }
}

/// Every dependency with its status and probe latency; always 200.
#[utoipa::path(
    get, path = "/health/dependencies", operation_id = "dependencies", summary = "Dependency status", tag = "health",
    responses((status = 200, description = "Each dependency's status and probe latency", body = Dependencies))
)]
pub async fn dependencies(State(state): State<AppState>) -> Json<Dependencies> {
    let probes = probe_all(&state).await;
    Json(Dependencies {
        dependencies: probes
            .iter()
            .map(|p| {
                let mut view = probe_view(p);
                if p.name == "replica" {
                    view.replica = state.edge.as_ref().map(|e| replica_view(&e.status));
                }
                (p.name.to_owned(), view)
            })
            .collect(),
    })
}

#[utoipa::path(
    get, path = "/metrics", operation_id = "metrics", summary = "Prometheus metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    refresh_gauges(&state).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        state.metrics.render(),
    )
}

/// The job-queue and vector counts are read at most this often, however
/// often `/metrics` is scraped (it needs no key).
const COUNTS_EVERY: Duration = Duration::from_secs(5);

/// Gauges read from their source at scrape time: the catalog pool (every
/// scrape), the job queue and the vector count (at most every
/// `COUNTS_EVERY`, one scrape at a time). A source that does not answer in
/// time leaves its gauges as they were.
async fn refresh_gauges(state: &AppState) {
    use crate::telemetry::{CATALOG_POOL, JOB_KINDS, JOBS, QUEUE_STATUSES, VECTORS};
    if let Some(edge) = &state.edge {
        edge.status.export();
    }
    static LAST: parking_lot::Mutex<Option<Instant>> = parking_lot::Mutex::new(None);
    let pool = state.catalog.pool_status();
    for (name, value) in [
        ("size", pool.size),
        ("in_use", pool.in_use),
        ("waiting", pool.waiting),
    ] {
        metrics::gauge!(CATALOG_POOL, "state" => name).set(value as f64);
    }
    {
        let mut last = LAST.lock();
        if last.is_some_and(|t| t.elapsed() < COUNTS_EVERY) {
            return;
        }
        *last = Some(Instant::now());
    }
    if let Ok(Ok(counts)) = tokio::time::timeout(PROBE_TIMEOUT, state.catalog.job_counts()).await {
        // Kinds and statuses with no jobs now read 0, not their last value.
        for kind in JOB_KINDS {
            for status in QUEUE_STATUSES {
                metrics::gauge!(JOBS, "kind" => kind, "status" => status).set(0.0);
            }
        }
        for (kind, status, n) in counts {
            metrics::gauge!(JOBS, "kind" => kind, "status" => status.as_str()).set(n as f64);
        }
    }
    if let Ok(vectors) = state.vectors.index()
        && let Ok(Ok(n)) = tokio::time::timeout(PROBE_TIMEOUT, vectors.count(None)).await
    {
        metrics::gauge!(VECTORS).set(n as f64);
    }
}
