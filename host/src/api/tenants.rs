//! Tenants and their API keys.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Principal, Scope, generate_key};
use super::error::{ApiError, ApiResult};
use super::extract::{Fields, JsonObject, TenantItemPath, TenantPath};
use crate::model::{self, MAX_TENANT_NAME_CHARS, format_time};
use crate::store::Tenant;

/// Longest key label.
const MAX_LABEL_CHARS: usize = 200;

fn tenant_json(t: &Tenant) -> Value {
    json!({"id": t.id, "name": t.name, "created_at": format_time(&t.created_at)})
}

/// Checks the caller may act on `tenant` with `scope`, then that the tenant
/// exists. The permission check comes first so a tenant key learns nothing
/// about other tenants.
pub async fn authorize_tenant(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
    scope: Scope,
) -> ApiResult<()> {
    principal.require(tenant, scope)?;
    tenant_exists(state, tenant).await
}

/// As [`authorize_tenant`] for reads: a `search` or a `write` key will do.
pub async fn authorize_tenant_read(state: &AppState, principal: &Principal, tenant: &str) -> ApiResult<()> {
    principal.require_read(tenant)?;
    tenant_exists(state, tenant).await
}

async fn tenant_exists(state: &AppState, tenant: &str) -> ApiResult<()> {
    match state.catalog.get_tenant(tenant).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            "tenant_not_found",
            format!("there is no tenant `{tenant}`"),
        )),
    }
}

pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    principal.require_admin()?;
    let mut f = Fields(body);
    let id = f.required_str("id")?;
    let name = f.optional_str("name")?;
    f.finish()?;
    model::validate_tenant_id(&id).map_err(|e| ApiError::invalid_field("id", e.code, e.message))?;
    let name = name.unwrap_or_else(|| id.clone());
    if name.trim().is_empty()
        || name.chars().count() > MAX_TENANT_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "name",
            "invalid_name",
            format!("name must be 1 to {MAX_TENANT_NAME_CHARS} printable characters"),
        ));
    }
    let tenant = state.catalog.create_tenant(&id, &name).await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant_json(&tenant))))
}

pub async fn list_tenants(State(state): State<AppState>, principal: Principal) -> ApiResult<Json<Value>> {
    principal.require_admin()?;
    let tenants = state.catalog.list_tenants().await?;
    Ok(Json(
        json!({"tenants": tenants.iter().map(tenant_json).collect::<Vec<_>>()}),
    ))
}

pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
) -> ApiResult<Json<Value>> {
    principal
        .require(&tenant, Scope::Search)
        .or_else(|_| principal.require(&tenant, Scope::Write))?;
    let t =
        state.catalog.get_tenant(&tenant).await?.ok_or_else(|| {
            ApiError::not_found("tenant_not_found", format!("there is no tenant `{tenant}`"))
        })?;
    Ok(Json(tenant_json(&t)))
}

pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    authorize_tenant(&state, &principal, &tenant, Scope::Admin).await?;
    let mut f = Fields(body);
    let scopes = parse_scopes(f.take("scopes"))?;
    let label = f.optional_str("label")?;
    f.finish()?;
    if let Some(l) = &label
        && (l.chars().count() > MAX_LABEL_CHARS || l.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_field(
            "label",
            "invalid_label",
            format!("label must be at most {MAX_LABEL_CHARS} printable characters"),
        ));
    }
    let (record, token) = generate_key(&tenant, scopes, label);
    state.catalog.create_api_key(&record).await?;
    tracing::info!(tenant = %tenant, key_id = %record.id, "api key created");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": record.id,
            "key": token,
            "scopes": record.scopes,
            "label": record.label,
            "tenant": record.tenant,
            "created_at": format_time(&record.created_at),
        })),
    ))
}

fn parse_scopes(v: Option<Value>) -> ApiResult<Vec<String>> {
    let invalid = |msg: String| ApiError::invalid_field("scopes", "invalid_scopes", msg);
    let allowed = Scope::ALL.map(Scope::as_str).join(", ");
    let Some(Value::Array(items)) = v else {
        return Err(invalid(format!(
            "scopes must be a non-empty list drawn from: {allowed}"
        )));
    };
    if items.is_empty() {
        return Err(invalid(format!(
            "scopes must be a non-empty list drawn from: {allowed}"
        )));
    }
    let mut scopes = Vec::new();
    for item in items {
        let scope = item
            .as_str()
            .and_then(Scope::parse)
            .ok_or_else(|| invalid(format!("unknown scope {item}; allowed: {allowed}")))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort();
    Ok(scopes.into_iter().map(|s| s.as_str().to_owned()).collect())
}

pub async fn delete_key(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, key_id): TenantItemPath,
) -> ApiResult<StatusCode> {
    authorize_tenant(&state, &principal, &tenant, Scope::Admin).await?;
    if state.catalog.delete_api_key(&tenant, &key_id).await? {
        tracing::info!(tenant = %tenant, key_id = %key_id, "api key deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            "key_not_found",
            format!("tenant `{tenant}` has no key `{key_id}`"),
        ))
    }
}
