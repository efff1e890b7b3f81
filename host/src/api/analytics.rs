//! `GET /v1/tenants/{t}/analytics/queries?kind=top|zero_results&since=&limit=`
//! (API.md "Analytics"), from the search logs.

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use super::extract::{StrictQuery, TenantPath};
use super::tenants::authorize_tenant_read;
use crate::model::{format_time, now};
use crate::store::QueryStatsKind;

/// Default window: the last 7 days.
const DEFAULT_WINDOW_DAYS: i64 = 7;

pub async fn queries(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let q = StrictQuery::parse(raw.as_deref(), &["kind", "since", "limit"])?;
    let kind = match q.get("kind").unwrap_or("top") {
        "top" => QueryStatsKind::Top,
        "zero_results" => QueryStatsKind::ZeroResults,
        other => {
            return Err(ApiError::invalid_field(
                "kind",
                "invalid_parameter",
                format!("`kind` must be `top` or `zero_results`, not {other:?}"),
            ));
        }
    };
    let since: DateTime<Utc> = match q.get("since") {
        None => now() - chrono::Duration::days(DEFAULT_WINDOW_DAYS),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::invalid_field(
                    "since",
                    "invalid_parameter",
                    "`since` must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z",
                )
            })?,
    };
    let limit = q.int("limit", 1, 100, 10)?;
    let stats = state.catalog.query_stats(&tenant, kind, since, limit).await?;
    Ok(Json(json!({
        "kind": q.get("kind").unwrap_or("top"),
        "since": format_time(&since),
        "queries": stats.iter().map(|s| json!({
            "query_text": s.query_text,
            "count": s.count,
            "avg_results": (s.avg_results * 1000.0).round() / 1000.0,
            "p95_ms": (s.p95_ms * 1000.0).round() / 1000.0,
        })).collect::<Vec<_>>(),
    })))
}
