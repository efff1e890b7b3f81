//! Liveness, readiness, dependency report and Prometheus metrics.

use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// A dependency slower than this to answer a probe counts as down: a
/// readiness probe must answer quickly even when the database hangs.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
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
    vec![catalog, encoder, vectors]
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

fn probe_json(p: &Probe) -> Value {
    let mut v = json!({
        "status": if p.ok { "ok" } else { "unavailable" },
        "backend": p.backend,
        "latency_ms": (p.latency.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
    });
    if let Some(e) = &p.error {
        v["error"] = json!(e);
    }
    v
}

/// 200 only when every dependency answers; 503 naming the failing ones.
pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let probes = probe_all(&state).await;
    let checks: serde_json::Map<String, Value> = probes
        .iter()
        .map(|p| (p.name.to_owned(), json!(if p.ok { "ok" } else { "unavailable" })))
        .collect();
    let failing: Vec<&str> = probes.iter().filter(|p| !p.ok).map(|p| p.name).collect();
    if failing.is_empty() {
        Ok(Json(json!({"status": "ready", "checks": checks})))
    } else {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("not ready: {} unavailable", failing.join(", ")),
        )
        .with_details(json!({"failing": failing, "checks": checks}));
        e.retry_after = Some(1);
        Err(e)
    }
}

/// Every dependency with its status and probe latency; always 200.
pub async fn dependencies(State(state): State<AppState>) -> Json<Value> {
    let probes = probe_all(&state).await;
    let deps: serde_json::Map<String, Value> = probes
        .iter()
        .map(|p| (p.name.to_owned(), probe_json(p)))
        .collect();
    Json(json!({"dependencies": deps}))
}

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
