//! `GET /v1/tenants/{t}/analytics/queries?kind=top|zero_results&since=&limit=`
//! (API.md "Analytics"), from the search logs.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Query, TenantPath, in_range};
use super::tenants::authorize_tenant_read;
use super::types::{QueryStat, QueryStats, QueryStatsQuery};
use crate::model::{format_time, now};
use crate::store::QueryStatsKind;

/// Default window: the last 7 days.
const DEFAULT_WINDOW_DAYS: i64 = 7;

#[utoipa::path(
    get, path = "/v1/tenants/{t}/analytics/queries", operation_id = "query_analytics", summary = "Top and zero-result queries", tag = "analytics",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"),
        QueryStatsQuery),
    responses((status = 200, description = "Queries by count", body = QueryStats)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn queries(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    query: Result<Query<QueryStatsQuery>, ApiError>,
) -> ApiResult<Json<QueryStats>> {
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let Query(q) = query?;
    let kind = q.kind.unwrap_or(QueryStatsKind::Top);
    let since: DateTime<Utc> = match q.since.as_deref() {
        None => now() - chrono::Duration::days(DEFAULT_WINDOW_DAYS),
        Some(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::invalid_field(
                    "since",
                    ErrorCode::InvalidParameter,
                    "`since` must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z",
                )
            })?,
    };
    let limit = in_range("limit", q.limit, 1, 100, 10)?;
    let stats = state.catalog.query_stats(&tenant, kind, since, limit).await?;
    Ok(Json(QueryStats {
        kind: match kind {
            QueryStatsKind::Top => "top",
            QueryStatsKind::ZeroResults => "zero_results",
        }
        .to_owned(),
        since: format_time(&since),
        queries: stats
            .iter()
            .map(|s| QueryStat {
                query_text: s.query_text.clone(),
                count: s.count,
                avg_results: (s.avg_results * 1000.0).round() / 1000.0,
                p95_ms: (s.p95_ms * 1000.0).round() / 1000.0,
            })
            .collect(),
    }))
}
