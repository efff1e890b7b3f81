//! Admin operations (API.md "Jobs and admin"): a full or per-tenant
//! reindex, and the state of the vector index.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult};
use super::extract::{Fields, OptionalJsonObject, StrictQuery};
use crate::jobs::kinds::{JobKind, JobSpec};
use crate::model;
use crate::store::{JobStatus, NewJob};

/// The job kind of a reindex (DESIGN.md).
/// `POST /v1/admin/reindex` `{"tenant"?}` → 202 `{"job_id"}`.
pub async fn reindex(
    State(state): State<AppState>,
    principal: Principal,
    OptionalJsonObject(body): OptionalJsonObject,
) -> ApiResult<impl IntoResponse> {
    principal.require_admin()?;
    let mut f = Fields(body);
    let tenant = f.optional_str("tenant")?;
    f.finish()?;
    if let Some(t) = &tenant {
        model::validate_tenant_id(t).map_err(|e| ApiError::invalid_field("tenant", e.code, e.message))?;
        if state.catalog.get_tenant(t).await?.is_none() {
            return Err(ApiError::not_found(
                "tenant_not_found",
                format!("there is no tenant `{t}`"),
            ));
        }
    }
    // One reindex at a time: two would do the same work twice.
    for status in [JobStatus::Running, JobStatus::Queued] {
        if let Some(j) = state
            .catalog
            .list_jobs(None, Some(status), 100)
            .await?
            .into_iter()
            .find(|j| j.kind == JobKind::ReindexAll.as_str())
        {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "reindex_in_progress",
                format!("reindex job {} is already {}", j.id, j.status.as_str()),
            )
            .with_details(json!({"job_id": j.id})));
        }
    }
    let job = NewJob::of(
        &JobSpec::ReindexAll {
            tenant: tenant.clone(),
        },
        None,
    );
    state.catalog.enqueue_job(&job).await?;
    tracing::info!(job_id = %job.id, tenant = ?tenant, "reindex enqueued");
    Ok((StatusCode::ACCEPTED, Json(json!({"job_id": job.id}))))
}

/// `GET /v1/admin/vectors?tenant=` → the vector index's backend, dimension
/// and point count (of one tenant, or all).
pub async fn vectors(
    State(state): State<AppState>,
    principal: Principal,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    principal.require_admin()?;
    let q = StrictQuery::parse(query.as_deref(), &["tenant"])?;
    let tenant = q.get("tenant").map(str::to_owned);
    if let Some(t) = &tenant {
        model::validate_tenant_id(t).map_err(|e| ApiError::invalid_field("tenant", e.code, e.message))?;
    }
    let index = state.vectors.index().map_err(|why| {
        tracing::warn!(reason = %why, "vector index unavailable");
        ApiError::unavailable("vector index")
    })?;
    let count = index.count(tenant.as_deref()).await.map_err(|e| {
        tracing::warn!(error = %e, "vector count failed");
        ApiError::unavailable("vector index")
    })?;
    Ok(Json(json!({
        "backend": index.backend(),
        "dims": index.dims(),
        "tenant": tenant,
        "count": count,
    })))
}
