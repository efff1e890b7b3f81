//! Tenants and their API keys.

use super::types::ErrorBody;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::AppState;
use super::auth::{Principal, Scope, generate_key};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Body, TenantItemPath, TenantPath};
use super::types::{CreateKey, CreateTenant, KeyCreated, MAX_QUOTA, TenantList, TenantPatch, TenantView};
use crate::model::{self, MAX_TENANT_NAME_CHARS, format_time};
use crate::store::Tenant;

/// Longest key label.
const MAX_LABEL_CHARS: usize = 200;

fn tenant_view(t: &Tenant) -> TenantView {
    TenantView {
        id: t.id.clone(),
        name: t.name.clone(),
        created_at: format_time(&t.created_at),
        rate_limits: None,
        quotas: None,
        usage: None,
        search: None,
    }
}

/// One tenant with its limits and usage.
async fn full_view(state: &AppState, t: &Tenant) -> ApiResult<TenantView> {
    let limits = state.policies.get(&*state.catalog, &t.id).await?;
    Ok(TenantView {
        rate_limits: Some(state.rate_limits.effective(&limits.rate_limits)),
        quotas: Some(limits.quotas.clone()),
        usage: Some(super::quotas::usage(&*state.catalog, &t.id).await?),
        search: Some(limits.search.clone()),
        ..tenant_view(t)
    })
}

async fn find_tenant(state: &AppState, tenant: &str) -> ApiResult<Tenant> {
    state.catalog.get_tenant(tenant).await?.ok_or_else(|| {
        ApiError::not_found(
            ErrorCode::TenantNotFound,
            format!("there is no tenant `{tenant}`"),
        )
    })
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

/// That the tenant exists (the caller's permission already checked).
pub async fn tenant_exists(state: &AppState, tenant: &str) -> ApiResult<()> {
    match state.catalog.get_tenant(tenant).await? {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(
            ErrorCode::TenantNotFound,
            format!("there is no tenant `{tenant}`"),
        )),
    }
}

#[utoipa::path(
    post, path = "/v1/tenants", operation_id = "create_tenant", summary = "Create a tenant", tag = "tenants",
    request_body = CreateTenant,
    responses((status = 201, description = "Created", body = TenantView),
        (status = 409, description = "The tenant exists", body = ErrorBody)),
    security(("bearer" = ["admin"]))
)]
pub async fn create_tenant(
    State(state): State<AppState>,
    principal: Principal,
    Body(CreateTenant { id, name }): Body<CreateTenant>,
) -> ApiResult<impl IntoResponse> {
    principal.require_admin()?;
    model::validate_tenant_id(&id).map_err(|e| ApiError::invalid_field("id", e.code, e.message))?;
    let name = name.unwrap_or_else(|| id.clone());
    if name.trim().is_empty()
        || name.chars().count() > MAX_TENANT_NAME_CHARS
        || name.chars().any(char::is_control)
    {
        return Err(ApiError::invalid_field(
            "name",
            ErrorCode::InvalidName,
            format!("name must be 1 to {MAX_TENANT_NAME_CHARS} printable characters"),
        ));
    }
    let tenant = state.catalog.create_tenant(&id, &name).await?;
    tracing::info!(tenant = %tenant.id, "tenant created");
    Ok((StatusCode::CREATED, Json(tenant_view(&tenant))))
}

#[utoipa::path(
    get, path = "/v1/tenants", operation_id = "list_tenants", summary = "List tenants", tag = "tenants",
    responses((status = 200, description = "Every tenant", body = TenantList)),
    security(("bearer" = ["admin"]))
)]
pub async fn list_tenants(
    State(state): State<AppState>,
    principal: Principal,
) -> ApiResult<Json<TenantList>> {
    principal.require_admin()?;
    let tenants = state.catalog.list_tenants().await?;
    Ok(Json(TenantList {
        tenants: tenants.iter().map(tenant_view).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/tenants/{t}", operation_id = "get_tenant", summary = "Get a tenant", tag = "tenants",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, description = "The tenant", body = TenantView)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn get_tenant(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
) -> ApiResult<Json<TenantView>> {
    principal.require_read(&tenant)?;
    let t = find_tenant(&state, &tenant).await?;
    Ok(Json(full_view(&state, &t).await?))
}

#[utoipa::path(
    patch, path = "/v1/tenants/{t}", operation_id = "update_tenant", summary = "Set a tenant's rate limits, quotas and search defaults", tag = "tenants",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = TenantPatch,
    responses((status = 200, description = "The tenant, with its limits and usage", body = TenantView)),
    security(("bearer" = ["admin"]))
)]
pub async fn update_tenant(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    Body(patch): Body<TenantPatch>,
) -> ApiResult<Json<TenantView>> {
    principal.require_admin()?;
    let t = find_tenant(&state, &tenant).await?;
    for (class, bucket) in patch
        .rate_limits
        .iter()
        .flat_map(|r| [("search", r.search), ("write", r.write)])
    {
        if let Some(b) = bucket
            && !super::limits::valid_bucket(b.per_second, b.burst)
        {
            return Err(ApiError::invalid_field(
                &format!("rate_limits.{class}"),
                ErrorCode::InvalidValue,
                format!(
                    "`per_second` must be above 0 and at most 1000000, `burst` from 1 to 1000000, \
                     and the burst refilled within {} s (burst / per_second)",
                    super::limits::MAX_REFILL_SECS
                ),
            ));
        }
    }
    for (name, value) in patch.quotas.iter().flat_map(|q| {
        [
            ("max_products", q.max_products),
            ("max_plugin_versions", q.max_plugin_versions),
            ("max_plugin_bytes", q.max_plugin_bytes),
        ]
    }) {
        if value.is_some_and(|v| v > MAX_QUOTA) {
            return Err(ApiError::invalid_field(
                &format!("quotas.{name}"),
                ErrorCode::InvalidValue,
                format!("`{name}` must be an integer from 0 to {MAX_QUOTA}"),
            ));
        }
    }
    if let Some(w) = patch.search.as_ref().and_then(|s| s.weights.as_ref()) {
        super::search::check_weights(w, "search.weights")?;
    }
    let mut limits = (*state.policies.get(&*state.catalog, &tenant).await?).clone();
    if let Some(search) = patch.search {
        limits.search = search;
    }
    if let Some(r) = patch.rate_limits {
        limits.rate_limits = r;
    }
    if let Some(q) = patch.quotas {
        limits.quotas = q;
    }
    if !state.policies.set(&*state.catalog, &tenant, &limits).await? {
        return Err(ApiError::not_found(
            ErrorCode::TenantNotFound,
            format!("there is no tenant `{tenant}`"),
        ));
    }
    tracing::info!(tenant = %tenant, "tenant limits changed");
    Ok(Json(full_view(&state, &t).await?))
}

#[utoipa::path(
    post, path = "/v1/tenants/{t}/keys", operation_id = "create_key", summary = "Create an API key for a tenant", tag = "tenants",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = CreateKey,
    responses((status = 201, description = "The key; `key` is shown only now", body = KeyCreated)),
    security(("bearer" = ["admin"]))
)]
pub async fn create_key(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    Body(CreateKey { scopes, label }): Body<CreateKey>,
) -> ApiResult<impl IntoResponse> {
    authorize_tenant(&state, &principal, &tenant, Scope::Admin).await?;
    let scopes = parse_scopes(&scopes)?;
    // `replicate` reads every tenant: only the admin hands it out.
    if scopes.iter().any(|s| s == Scope::Replicate.as_str()) {
        principal.require_admin()?;
    }
    if let Some(l) = &label
        && (l.chars().count() > MAX_LABEL_CHARS || l.chars().any(char::is_control))
    {
        return Err(ApiError::invalid_field(
            "label",
            ErrorCode::InvalidLabel,
            format!("label must be at most {MAX_LABEL_CHARS} printable characters"),
        ));
    }
    let (record, token) = generate_key(&tenant, scopes, label);
    state.catalog.create_api_key(&record).await?;
    tracing::info!(tenant = %tenant, key_id = %record.id, "api key created");
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            created_at: format_time(&record.created_at),
            id: record.id,
            key: token,
            scopes: record.scopes,
            label: record.label,
            tenant: record.tenant,
        }),
    ))
}

fn parse_scopes(items: &[String]) -> ApiResult<Vec<String>> {
    let invalid = |msg: String| ApiError::invalid_field("scopes", ErrorCode::InvalidScopes, msg);
    let allowed = Scope::ALL.map(Scope::as_str).join(", ");
    if items.is_empty() {
        return Err(invalid(format!(
            "scopes must be a non-empty list drawn from: {allowed}"
        )));
    }
    let mut scopes = Vec::new();
    for item in items {
        let scope = Scope::parse(item)
            .ok_or_else(|| invalid(format!("unknown scope {item:?}; allowed: {allowed}")))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    scopes.sort();
    Ok(scopes.into_iter().map(|s| s.as_str().to_owned()).collect())
}

#[utoipa::path(
    delete, path = "/v1/tenants/{t}/keys/{key_id}", operation_id = "delete_key", summary = "Revoke an API key", tag = "tenants",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("key_id" = String, Path, description = "Key id")),
    responses((status = 204, description = "Revoked")),
    security(("bearer" = ["admin"]))
)]
pub async fn delete_key(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, key_id): TenantItemPath,
) -> ApiResult<StatusCode> {
    authorize_tenant(&state, &principal, &tenant, Scope::Admin).await?;
    // A `replicate` key serves every tenant's edges: only the admin, who
    // issued it, takes it back.
    if let Some(k) = state.catalog.get_api_key(&key_id).await?
        && k.tenant == tenant
        && k.scopes.iter().any(|s| s == Scope::Replicate.as_str())
    {
        principal.require_admin()?;
    }
    let deleted = state.catalog.delete_api_key(&tenant, &key_id).await?;
    // Its search tokens go with it.
    state.auth.forget_key(&key_id).await;
    if deleted {
        tracing::info!(tenant = %tenant, key_id = %key_id, "api key deleted");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(
            ErrorCode::KeyNotFound,
            format!("tenant `{tenant}` has no key `{key_id}`"),
        ))
    }
}
