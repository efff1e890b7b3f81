//! Job status, listing and cancellation (API.md "Jobs and admin").

use super::types::ErrorBody;
use axum::Json;
use axum::extract::{Path, State};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Query, TenantPath, in_range};
use super::tenants::authorize_tenant_read;
use super::types::{JobList, JobProgress, JobView, ListJobsQuery};
use crate::model::{format_time, now};
use crate::store::{Job, StoreError};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn job_view(j: &Job) -> JobView {
    JobView {
        id: j.id.clone(),
        kind: j.kind.clone(),
        tenant: j.tenant.clone(),
        status: j.status.as_str().to_owned(),
        attempts: j.attempts,
        max_attempts: j.max_attempts,
        progress: JobProgress {
            done: j.progress_done,
            total: j.progress_total,
        },
        last_error: j.last_error.clone(),
        result: j.result.clone(),
        run_after: format_time(&j.run_after),
        created_at: format_time(&j.created_at),
        updated_at: format_time(&j.updated_at),
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(ErrorCode::JobNotFound, format!("there is no job `{id}`"))
}

/// Loads a job the caller may see with `scope`. Another tenant's job is
/// reported as absent, so job ids reveal nothing across tenants.
async fn visible_job(state: &AppState, principal: &Principal, id: &str, scope: Scope) -> ApiResult<Job> {
    if let Principal::Token(g) = principal {
        // Refused (token_not_allowed) before anything is read.
        principal.require(&g.tenant, scope)?;
        return Err(not_found(id));
    }
    let job = state.catalog.get_job(id).await?.ok_or_else(|| not_found(id))?;
    match principal {
        Principal::Admin => Ok(job),
        Principal::Token(_) => Err(not_found(id)),
        Principal::Tenant { tenant, .. } => {
            if job.tenant.as_deref() != Some(tenant.as_str()) {
                return Err(not_found(id));
            }
            match scope {
                Scope::Search => principal.require_read(tenant)?,
                other => principal.require(tenant, other)?,
            }
            Ok(job)
        }
    }
}

#[utoipa::path(
    get, path = "/v1/jobs/{job_id}", operation_id = "get_job", summary = "Get a job", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id")),
    responses((status = 200, description = "The job", body = JobView)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    let job = visible_job(&state, &principal, &id, Scope::Search).await?;
    Ok(Json(job_view(&job)))
}

#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/cancel", operation_id = "cancel_job", summary = "Cancel a job", tag = "jobs",
    params(("job_id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Cancelled", body = JobView),
        (status = 409, description = "The job has finished", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<JobView>> {
    visible_job(&state, &principal, &id, Scope::Write).await?;
    match state.catalog.cancel_job(&id, now()).await {
        Ok(job) => Ok(Json(job_view(&job))),
        Err(StoreError::NotFound) => Err(not_found(&id)),
        Err(StoreError::Conflict(m)) => Err(ApiError::new(ErrorCode::JobFinished, m)),
        Err(e) => Err(e.into()),
    }
}

#[utoipa::path(
    get, path = "/v1/tenants/{t}/jobs", operation_id = "list_jobs", summary = "List jobs", tag = "jobs",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"),
        ListJobsQuery),
    responses((status = 200, description = "Newest first", body = JobList)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    Query(q): Query<ListJobsQuery>,
) -> ApiResult<Json<JobList>> {
    let limit = in_range("limit", q.limit, 1, MAX_PAGE, DEFAULT_PAGE)?;
    let status = q.status;
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let jobs = state.catalog.list_jobs(Some(&tenant), status, limit).await?;
    Ok(Json(JobList {
        jobs: jobs.iter().map(job_view).collect(),
    }))
}
