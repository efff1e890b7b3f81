//! Admin operations (API.md "Jobs and admin"): a full or per-tenant
//! reindex, and the state of the vector index.

use super::types::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{OptionalBody, Query};
use super::types::{JobAccepted, ReindexRequest, VectorsQuery, VectorsView};
use crate::jobs::kinds::{JobKind, JobSpec};
use crate::model;
use crate::store::{JobStatus, NewJob};

/// The job kind of a reindex (DESIGN.md).
/// `POST /v1/admin/reindex` `{"tenant"?}` → 202 `{"job_id"}`.
#[utoipa::path(
    post, path = "/v1/admin/reindex", operation_id = "reindex", summary = "Reindex every tenant, or one", tag = "admin",
    request_body(content = Option<ReindexRequest>, description = "May be left out: every tenant"),
    responses((status = 202, description = "The reindex job", body = JobAccepted),
        (status = 404, description = "No such tenant", body = ErrorBody),
        (status = 409, description = "A reindex is running", body = ErrorBody)),
    security(("bearer" = ["admin"]))
)]
pub async fn reindex(
    State(state): State<AppState>,
    principal: Principal,
    OptionalBody(ReindexRequest { tenant }): OptionalBody<ReindexRequest>,
) -> ApiResult<impl IntoResponse> {
    principal.require_admin()?;
    if let Some(t) = &tenant {
        model::validate_tenant_id(t).map_err(|e| ApiError::invalid_field("tenant", e.code, e.message))?;
        if state.catalog.get_tenant(t).await?.is_none() {
            return Err(ApiError::not_found(
                ErrorCode::TenantNotFound,
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
                ErrorCode::ReindexInProgress,
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
    Ok((StatusCode::ACCEPTED, Json(JobAccepted { job_id: job.id })))
}

/// `GET /v1/admin/vectors?tenant=` → the vector index's backend, dimension
/// and point count (of one tenant, or all).
#[utoipa::path(
    get, path = "/v1/admin/vectors", operation_id = "vectors", summary = "Vector index state", tag = "admin",
    params(VectorsQuery),
    responses((status = 200, description = "The vector index", body = VectorsView)),
    security(("bearer" = ["admin"]))
)]
pub async fn vectors(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<VectorsQuery>, ApiError>,
) -> ApiResult<Json<VectorsView>> {
    principal.require_admin()?;
    let Query(VectorsQuery { tenant }) = query?;
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
    Ok(Json(VectorsView {
        backend: index.backend().to_owned(),
        dims: index.dims(),
        tenant,
        count,
    }))
}
