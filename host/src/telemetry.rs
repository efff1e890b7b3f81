//! Logs (tracing, JSON lines by default) and metrics (the `metrics` facade
//! with a Prometheus exporter rendered at `/metrics`).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

use crate::config::{LogFormat, LogSettings};

/// Request latency buckets in seconds: fine-grained below 10 ms, where a
/// cached search lives, up to the request timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Plugin call buckets: tens of microseconds up to past the deadlines.
const PLUGIN_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
];

pub const HTTP_REQUESTS: &str = "vitrine_http_requests_total";
pub const HTTP_DURATION: &str = "vitrine_http_request_duration_seconds";
/// Open client connections.
pub const HTTP_CONNECTIONS: &str = "vitrine_http_connections";
/// Connections refused at accept because a connection cap was reached.
pub const HTTP_CONNECTIONS_REFUSED: &str = "vitrine_http_connections_refused_total";
/// Connections closed for a slow request head or an idle keep-alive.
pub const HTTP_CONNECTIONS_TIMED_OUT: &str = "vitrine_http_connections_timed_out_total";
/// Decoded-image pixels held by decodes in flight (`media.decode_budget_pixels`).
pub const DECODE_PIXELS_IN_USE: &str = "vitrine_decode_pixels_in_use";
/// Job attempts recorded, by `kind` and `outcome` (`succeeded`, `retry`,
/// `failed`).
pub const JOBS_FINISHED: &str = "vitrine_jobs_finished_total";
/// Time one job attempt ran, by `kind`.
pub const JOB_DURATION: &str = "vitrine_job_duration_seconds";
/// Time from a job's creation to its success, by `kind` (queueing included).
pub const JOB_LATENCY: &str = "vitrine_job_latency_seconds";
/// Query-text embedding cache lookups, by `outcome` (`hit`, `miss`).
pub const SEARCH_TEXT_CACHE: &str = "vitrine_search_text_cache_total";
/// Jobs queued and running, by `kind` and `status` (read at each scrape).
pub const JOBS: &str = "vitrine_jobs";
/// Catalog connections, by `state` (`size`, `in_use`, `waiting`; read at
/// each scrape).
pub const CATALOG_POOL: &str = "vitrine_catalog_pool_connections";
/// Time a catalog call waited for a connection, by `backend`.
pub const CATALOG_POOL_WAIT: &str = "vitrine_catalog_pool_wait_seconds";
/// Points in the vector index (read at each scrape).
pub const VECTORS: &str = "vitrine_vectors";
/// Encoder requests refused because its queue was full.
pub const ENCODER_REJECTED: &str = "vitrine_encoder_rejected_total";
/// Inputs per encoder batch, by `kind` (`text`, `image`).
pub const ENCODER_BATCH_SIZE: &str = "vitrine_encoder_batch_size";
/// Time of one encoder batch, by `kind`.
pub const ENCODER_BATCH_SECONDS: &str = "vitrine_encoder_batch_seconds";
/// Search logs dropped because the buffer was full or the catalog refused them.
pub const SEARCH_LOGS_DROPPED: &str = "vitrine_search_logs_dropped_total";
/// Result-page cache lookups of text and like searches, by `outcome`
/// (`hit`, `miss`).
pub const SEARCH_PAGE_CACHE: &str = "vitrine_search_page_cache_total";
/// Search logs written to the catalog.
pub const SEARCH_LOGS_WRITTEN: &str = "vitrine_search_logs_written_total";
/// Plugin calls by `world` and `outcome` (`ok`, or the failure: `timeout`,
/// `trap`, `out_of_fuel`, `memory_limit`, `stack_overflow`, `bad_output`,
/// `log_flood`, `busy`, `unavailable`). Every non-`ok` call fell back.
pub const PLUGIN_CALLS: &str = "vitrine_plugin_calls_total";
/// Time of one plugin call (instantiation + call), by `world`.
pub const PLUGIN_CALL_DURATION: &str = "vitrine_plugin_call_duration_seconds";
/// Components compiled, by `reason` (`upload`, `cold`, `corrupt`).
pub const PLUGIN_COMPILATIONS: &str = "vitrine_plugin_compilations_total";
/// Log lines of plugins dropped by the rate limit.
pub const PLUGIN_LOG_DROPPED: &str = "vitrine_plugin_log_lines_dropped_total";
/// Requests refused by a rate limit, by `policy` (`search`, `write`, `token`, `ip`).
pub const RATE_LIMITED: &str = "vitrine_rate_limited_total";
/// TLS certificate reloads, by `outcome` (`ok`, `error`).
pub const TLS_RELOADS: &str = "vitrine_tls_reloads_total";

/// The job kinds and the queue statuses `JOBS` reports.
pub const JOB_KINDS: [&str; 3] = [
    crate::jobs::kinds::JobKind::ALL[0].as_str(),
    crate::jobs::kinds::JobKind::ALL[1].as_str(),
    crate::jobs::kinds::JobKind::ALL[2].as_str(),
];
pub const QUEUE_STATUSES: [&str; 2] = ["queued", "running"];

/// Every family, described and given its first series, so a scrape right
/// after start-up lists them all (a family with labels starts with the
/// series it is sure to have).
pub fn register_all() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP responses, by route template (`unmatched` for none), method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        "HTTP request latency in seconds, by route, method and status"
    );
    describe_gauge!(HTTP_CONNECTIONS, "open client connections");
    crate::replica::describe_metrics();
    describe_counter!(
        RATE_LIMITED,
        "requests refused by a rate limit (429), by policy: search, write, token, ip"
    );
    describe_counter!(
        TLS_RELOADS,
        "TLS certificate reloads, by outcome (ok, error: the old certificate stays)"
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "connections refused at accept by a connection cap"
    );
    describe_counter!(
        HTTP_CONNECTIONS_TIMED_OUT,
        "connections closed for a slow request head or idleness"
    );
    describe_gauge!(
        DECODE_PIXELS_IN_USE,
        "decoded-image pixels held by decodes in flight"
    );
    describe_counter!(JOBS_FINISHED, "job attempts recorded, by kind and outcome");
    describe_histogram!(JOB_DURATION, "seconds one job attempt ran, by kind");
    describe_histogram!(
        JOB_LATENCY,
        "seconds from a job's creation to its success, by kind"
    );
    describe_gauge!(JOBS, "jobs queued and running, by kind and status");
    describe_gauge!(
        CATALOG_POOL,
        "catalog connections, by state (size, in_use, waiting)"
    );
    describe_histogram!(
        CATALOG_POOL_WAIT,
        "seconds a catalog call waited for a connection, by backend"
    );
    describe_gauge!(VECTORS, "points in the vector index");
    describe_counter!(
        SEARCH_TEXT_CACHE,
        "query-text embedding cache lookups, by outcome"
    );
    describe_counter!(SEARCH_PAGE_CACHE, "result-page cache lookups, by outcome");
    describe_counter!(SEARCH_LOGS_WRITTEN, "search logs written to the catalog");
    describe_counter!(
        SEARCH_LOGS_DROPPED,
        "search logs dropped (buffer full or refused)"
    );
    describe_counter!(PLUGIN_CALLS, "plugin calls, by world and outcome");
    describe_histogram!(PLUGIN_CALL_DURATION, "seconds of one plugin call, by world");
    describe_counter!(PLUGIN_COMPILATIONS, "plugin components compiled, by reason");
    describe_counter!(PLUGIN_LOG_DROPPED, "plugin log lines dropped by the rate limit");
    describe_counter!(
        ENCODER_REJECTED,
        "encoder requests refused because its queue was full"
    );
    describe_histogram!(ENCODER_BATCH_SIZE, "inputs per encoder batch, by kind");
    describe_histogram!(ENCODER_BATCH_SECONDS, "seconds of one encoder batch, by kind");

    metrics::gauge!(HTTP_CONNECTIONS).set(0.0);
    metrics::counter!(HTTP_CONNECTIONS_REFUSED).absolute(0);
    metrics::counter!(HTTP_CONNECTIONS_TIMED_OUT).absolute(0);
    metrics::gauge!(DECODE_PIXELS_IN_USE).set(0.0);
    metrics::gauge!(VECTORS).set(0.0);
    metrics::counter!(SEARCH_LOGS_WRITTEN).absolute(0);
    metrics::counter!(SEARCH_LOGS_DROPPED).absolute(0);
    metrics::counter!(PLUGIN_LOG_DROPPED).absolute(0);
    metrics::counter!(ENCODER_REJECTED).absolute(0);
    for outcome in ["hit", "miss"] {
        metrics::counter!(SEARCH_TEXT_CACHE, "outcome" => outcome).absolute(0);
        metrics::counter!(SEARCH_PAGE_CACHE, "outcome" => outcome).absolute(0);
    }
    for state in ["size", "in_use", "waiting"] {
        metrics::gauge!(CATALOG_POOL, "state" => state).set(0.0);
    }
    for kind in JOB_KINDS {
        for status in QUEUE_STATUSES {
            metrics::gauge!(JOBS, "kind" => kind, "status" => status).set(0.0);
        }
        for outcome in ["succeeded", "retry", "failed"] {
            metrics::counter!(JOBS_FINISHED, "kind" => kind, "outcome" => outcome).absolute(0);
        }
        // Registered, so they render (with zero counts) before a sample.
        let _ = metrics::histogram!(JOB_DURATION, "kind" => kind);
        let _ = metrics::histogram!(JOB_LATENCY, "kind" => kind);
    }
    for world in ["filter", "ranker", "ingest"] {
        metrics::counter!(PLUGIN_CALLS, "world" => world, "outcome" => "ok").absolute(0);
    }
}

/// Installs the global tracing subscriber. Every event inside a request's
/// span carries that span's fields, including `request_id`.
pub fn init_logging(settings: &LogSettings) {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .with_span_events(FmtSpan::NONE);
    let result = match settings.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    // A second init (tests build many apps in one process) keeps the first.
    let _ = result;
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_owned()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(PLUGIN_CALL_DURATION.to_owned()), PLUGIN_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => {
                    register_all();
                    handle
                }
                // Another recorder is already installed (only possible if an
                // embedding program installed its own): render ours
                // unattached rather than fail to start.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}
