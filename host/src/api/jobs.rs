//! Job status, listing and cancellation (API.md "Jobs and admin").

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{StrictQuery, TenantPath};
use super::tenants::authorize_tenant_read;
use crate::model::{format_time, now};
use crate::store::{Job, JobStatus, StoreError};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;

pub fn job_json(j: &Job) -> Value {
    json!({
        "id": j.id,
        "kind": j.kind,
        "tenant": j.tenant,
        "status": j.status.as_str(),
        "attempts": j.attempts,
        "max_attempts": j.max_attempts,
        "progress": {"done": j.progress_done, "total": j.progress_total},
        "last_error": j.last_error,
        "result": j.result,
        "run_after": format_time(&j.run_after),
        "created_at": format_time(&j.created_at),
        "updated_at": format_time(&j.updated_at),
    })
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found("job_not_found", format!("there is no job `{id}`"))
}

/// Loads a job the caller may see with `scope`. Another tenant's job is
/// reported as absent, so job ids reveal nothing across tenants.
async fn visible_job(state: &AppState, principal: &Principal, id: &str, scope: Scope) -> ApiResult<Job> {
    let job = state.catalog.get_job(id).await?.ok_or_else(|| not_found(id))?;
    match principal {
        Principal::Admin => Ok(job),
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

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let job = visible_job(&state, &principal, &id, Scope::Search).await?;
    Ok(Json(job_json(&job)))
}

pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    visible_job(&state, &principal, &id, Scope::Write).await?;
    match state.catalog.cancel_job(&id, now()).await {
        Ok(job) => Ok(Json(job_json(&job))),
        Err(StoreError::NotFound) => Err(not_found(&id)),
        Err(StoreError::Conflict(m)) => {
            Err(ApiError::new(axum::http::StatusCode::CONFLICT, "job_finished", m))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let q = StrictQuery::parse(raw.as_deref(), &["status", "limit"])?;
    let limit = q.int("limit", 1, MAX_PAGE, DEFAULT_PAGE)?;
    let status = q
        .get("status")
        .map(|s| {
            JobStatus::parse(s).map_err(|_| {
                ApiError::invalid_field(
                    "status",
                    "invalid_parameter",
                    "status must be one of queued, running, succeeded, failed, cancelled",
                )
            })
        })
        .transpose()?;
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let jobs = state.catalog.list_jobs(Some(&tenant), status, limit).await?;
    Ok(Json(
        json!({"jobs": jobs.iter().map(job_json).collect::<Vec<_>>()}),
    ))
}
