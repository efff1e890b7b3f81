//! Tenant plugins (API.md "Plugins"): upload a version, list, show,
//! activate (or roll back to) a version, delete. Everything is scoped to
//! the key's tenant and needs the `plugins` scope.

use super::types::ErrorBody;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::types::{
    ActivateRequest, ParamValue, PluginList, PluginVersionView, PluginView, UploadPluginQuery,
};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Body, Query, TenantItemPath, TenantPath, binary_body, media_type};
use super::tenants::authorize_tenant;
use crate::plugins::{MAX_UPLOAD_BYTES, UploadError, blob_key};
use crate::store::{NewPluginVersion, PluginRecord, StoreError};

/// Parameters a tenant may set on one plugin, and their sizes.
const MAX_PARAMS: usize = 64;
const MAX_PARAM_KEY_CHARS: usize = 64;
const MAX_PARAM_VALUE_CHARS: usize = 1024;

fn invalid(field: &str, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, code, message)
}

/// Plugin names follow tenant ids: `[a-z0-9][a-z0-9_-]{0,62}`; `none` is
/// reserved (it turns a plugin off in searches).
fn validate_name(name: &str) -> ApiResult<()> {
    crate::model::validate_tenant_id(name).map_err(|_| {
        invalid(
            "name",
            ErrorCode::InvalidPluginName,
            "a plugin name is 1 to 63 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit",
        )
    })?;
    if name == "none" {
        return Err(invalid(
            "name",
            ErrorCode::InvalidPluginName,
            "`none` is reserved: it turns plugins off in searches",
        ));
    }
    Ok(())
}

fn not_found(tenant: &str, name: &str) -> ApiError {
    ApiError::not_found(
        ErrorCode::PluginNotFound,
        format!("tenant `{tenant}` has no plugin `{name}`"),
    )
    .with_details(json!({"name": name}))
}

fn version_view(r: &PluginRecord) -> PluginVersionView {
    PluginVersionView {
        name: r.name.clone(),
        version: r.version,
        digest: r.digest.clone(),
        world: r.world.clone(),
        active: r.active,
        size_bytes: r.size_bytes,
        params: r.params.clone(),
        memory_mb: r.memory_mb,
        created_at: crate::model::format_time(&r.created_at),
        activated_at: r.activated_at.as_ref().map(crate::model::format_time),
    }
}

/// One plugin with all its versions (records of one name, oldest first);
/// `None` for no records.
fn plugin_view(versions: &[PluginRecord]) -> Option<PluginView> {
    let first = versions.first()?;
    Some(PluginView {
        name: first.name.clone(),
        world: first.world.clone(),
        active_version: versions.iter().find(|v| v.active).map(|v| v.version),
        latest_version: versions.last().map(|v| v.version),
        versions: versions.iter().map(version_view).collect(),
    })
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Internal(why) => {
            tracing::error!(error = %why, "plugin upload failed");
            ApiError::internal()
        }
        UploadError::Busy => ApiError::unavailable("plugin compiler"),
        other => ApiError::new(other.code(), other.to_string()).with_details(json!({"field": "body"})),
    }
}

/// `PUT /v1/tenants/{t}/plugins/{name}?world=ranker|filter|ingest`, body
/// `application/wasm`.
#[utoipa::path(
    put, path = "/v1/tenants/{t}/plugins/{name}", operation_id = "upload_plugin", summary = "Upload a plugin version", tag = "plugins",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("name" = String, Path, description = "Plugin name (not `none`)", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"),
        UploadPluginQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "A WebAssembly component (sent as `application/wasm` or `application/octet-stream`)"),
    responses((status = 201, description = "A new version (not active yet)", body = PluginVersionView),
        (status = 409, description = "The name belongs to a plugin of another world", body = ErrorBody),
        (status = 422, description = "Not a component of the world", body = ErrorBody)),
    security(("bearer" = ["plugins"]))
)]
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
    query: Result<Query<UploadPluginQuery>, ApiError>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<PluginVersionView>)> {
    validate_name(&name)?;
    let Query(UploadPluginQuery { world }) = query?;
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    if let Some(t) =
        media_type(&headers).filter(|t| t != "application/wasm" && t != "application/octet-stream")
    {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("expected a WebAssembly component (Content-Type: application/wasm), got {t:?}"),
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a plugin is at most {MAX_UPLOAD_BYTES} bytes"),
        )
        .with_details(json!({"max_bytes": MAX_UPLOAD_BYTES}))
    };
    let body = binary_body(body, MAX_UPLOAD_BYTES, too_large)?;
    // A name keeps one world: say so before compiling anything.
    if let Some(existing) = state.catalog.get_plugin(&tenant, &name).await?.first()
        && existing.world != world.as_str()
    {
        return Err(ApiError::conflict(format!(
            "plugin `{name}` is a {} plugin; upload a {} plugin under another name",
            existing.world,
            world.as_str()
        )));
    }
    let size = i64::try_from(body.len()).unwrap_or(i64::MAX);
    // Before compiling: a tenant over its quota costs no CPU.
    let _quota = state
        .policies
        .admit_plugin(&*state.catalog, &tenant, body.len() as u64)
        .await?;
    let digest = state
        .search
        .plugins()
        .host()
        .upload(&tenant, world, body)
        .await
        .map_err(upload_error)?;
    let record = state
        .catalog
        .create_plugin_version(&NewPluginVersion {
            tenant: tenant.clone(),
            name,
            world: world.as_str().to_owned(),
            digest,
            size_bytes: size,
        })
        .await?;
    // A search naming this plugin (without an active version) now runs the
    // new version: cached pages and ETags of the old one must go.
    state.catalog.bump_generation(&tenant).await?;
    tracing::info!(tenant, plugin = %record.name, version = record.version, world = %record.world, "plugin uploaded");
    Ok((StatusCode::CREATED, Json(version_view(&record))))
}

/// `GET /v1/tenants/{t}/plugins`.
#[utoipa::path(
    get, path = "/v1/tenants/{t}/plugins", operation_id = "list_plugins", summary = "List plugins", tag = "plugins",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, description = "The tenant's plugins", body = PluginList)),
    security(("bearer" = ["plugins"]))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
) -> ApiResult<Json<PluginList>> {
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    let records = state.catalog.list_plugins(&tenant).await?;
    Ok(Json(PluginList {
        plugins: records
            .chunk_by(|a, b| a.name == b.name)
            .filter_map(plugin_view)
            .collect(),
    }))
}

/// `GET /v1/tenants/{t}/plugins/{name}`: all versions.
#[utoipa::path(
    get, path = "/v1/tenants/{t}/plugins/{name}", operation_id = "get_plugin", summary = "Get a plugin and its versions", tag = "plugins",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("name" = String, Path, description = "Plugin name (not `none`)", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, description = "The plugin and its versions", body = PluginView)),
    security(("bearer" = ["plugins"]))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
) -> ApiResult<Json<PluginView>> {
    validate_name(&name)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    let versions = state.catalog.get_plugin(&tenant, &name).await?;
    plugin_view(&versions)
        .map(Json)
        .ok_or_else(|| not_found(&tenant, &name))
}

/// `POST /v1/tenants/{t}/plugins/{name}/activate`
/// `{"version", "params"?: {..}, "memory_mb"?}`: makes that version the
/// tenant's one active plugin of its world (activating an older version is
/// the rollback).
#[utoipa::path(
    post, path = "/v1/tenants/{t}/plugins/{name}/activate", operation_id = "activate_plugin", summary = "Activate (or roll back to) a plugin version", tag = "plugins",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("name" = String, Path, description = "Plugin name (not `none`)", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = ActivateRequest,
    responses((status = 200, description = "The active version", body = PluginVersionView)),
    security(("bearer" = ["plugins"]))
)]
pub async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
    Body(body): Body<ActivateRequest>,
) -> ApiResult<Json<PluginVersionView>> {
    validate_name(&name)?;
    let version = body.version;
    if version < 1 {
        return Err(invalid(
            "version",
            ErrorCode::InvalidParameter,
            "`version` must be a version number (≥ 1)",
        ));
    }
    let params = parse_params(body.params)?;
    let max_mb = state.search.plugins().host().config().max_memory_bytes / (1024 * 1024);
    let memory_mb = body
        .memory_mb
        .map(|m| {
            if m >= 1 && (m as u64) <= max_mb {
                Ok(m)
            } else {
                Err(invalid(
                    "memory_mb",
                    ErrorCode::InvalidParameter,
                    format!("`memory_mb` must be an integer from 1 to {max_mb}"),
                ))
            }
        })
        .transpose()?;
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    match state
        .catalog
        .activate_plugin(&tenant, &name, version, &params, memory_mb)
        .await
    {
        Ok(record) => {
            // Compiled now (from its file, or its stored component), not by
            // the searches that follow.
            if let Some(plugin) = crate::plugins::registry::plugin_ref(&record)
                && let Err(e) = state.search.plugins().host().warm(&plugin).await
            {
                tracing::warn!(tenant, plugin = %name, version, error = %e, "plugins: the activated version is not ready");
            }
            tracing::info!(tenant, plugin = %name, version, "plugin activated");
            Ok(Json(version_view(&record)))
        }
        Err(StoreError::NotFound) => {
            if state.catalog.get_plugin(&tenant, &name).await?.is_empty() {
                Err(not_found(&tenant, &name))
            } else {
                Err(ApiError::not_found(
                    ErrorCode::PluginVersionNotFound,
                    format!("plugin `{name}` has no version {version}"),
                )
                .with_details(json!({"field": "version"})))
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// `params`: an object of short strings (numbers and booleans are taken
/// as their text).
/// The parameters as the strings a plugin receives.
fn parse_params(v: Option<std::collections::BTreeMap<String, ParamValue>>) -> ApiResult<Map<String, Value>> {
    let Some(m) = v else {
        return Ok(Map::new());
    };
    if m.len() > MAX_PARAMS {
        return Err(invalid(
            "params",
            ErrorCode::InvalidParameter,
            format!("at most {MAX_PARAMS} parameters"),
        ));
    }
    let mut out = Map::new();
    for (k, ParamValue(text)) in m {
        let field = format!("params.{k}");
        if k.is_empty() || k.chars().count() > MAX_PARAM_KEY_CHARS {
            return Err(invalid(
                &field,
                ErrorCode::InvalidParameter,
                format!("parameter names are 1 to {MAX_PARAM_KEY_CHARS} characters"),
            ));
        }
        if text.chars().count() > MAX_PARAM_VALUE_CHARS {
            return Err(invalid(
                &field,
                ErrorCode::InvalidParameter,
                format!("parameter values are at most {MAX_PARAM_VALUE_CHARS} characters"),
            ));
        }
        out.insert(k, Value::String(text));
    }
    Ok(out)
}

/// `DELETE /v1/tenants/{t}/plugins/{name}`: deactivates, then removes every
/// version and the components no other version of the tenant uses.
#[utoipa::path(
    delete, path = "/v1/tenants/{t}/plugins/{name}", operation_id = "delete_plugin", summary = "Delete a plugin", tag = "plugins",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("name" = String, Path, description = "Plugin name (not `none`)", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 204, description = "Every version removed")),
    security(("bearer" = ["plugins"]))
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
) -> ApiResult<StatusCode> {
    validate_name(&name)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    let removed = state.catalog.delete_plugin(&tenant, &name).await?;
    if removed.is_empty() {
        return Err(not_found(&tenant, &name));
    }
    let still_used: std::collections::HashSet<String> = state
        .catalog
        .list_plugins(&tenant)
        .await?
        .into_iter()
        .map(|p| p.digest)
        .collect();
    let blobs = state.search.plugins().host().blobs().clone();
    for digest in removed
        .iter()
        .map(|r| &r.digest)
        .collect::<std::collections::BTreeSet<_>>()
    {
        if !still_used.contains(digest)
            && let Err(e) = blobs.delete(&blob_key(&tenant, digest)).await
        {
            // Only space: the record is gone, nothing can run it.
            tracing::warn!(tenant, digest = %digest, error = %e, "cannot delete a plugin blob");
        }
    }
    tracing::info!(tenant, plugin = %name, versions = removed.len(), "plugin deleted");
    Ok(StatusCode::NO_CONTENT)
}
