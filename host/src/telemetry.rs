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
                Ok(handle) => handle,
                // Another recorder is already installed (only possible if an
                // embedding program installed its own): render ours
                // unattached rather than fail to start.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}
