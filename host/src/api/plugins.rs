//! Tenant plugins (API.md "Plugins"): upload a version, list, show,
//! activate (or roll back to) a version, delete. Everything is scoped to
//! the key's tenant and needs the `plugins` scope.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonObject, StrictQuery, TenantItemPath, TenantPath, binary_body, media_type};
use super::tenants::authorize_tenant;
use crate::plugins::{MAX_UPLOAD_BYTES, UploadError, World, blob_key};
use crate::store::{NewPluginVersion, PluginRecord, StoreError};

/// Parameters a tenant may set on one plugin, and their sizes.
const MAX_PARAMS: usize = 64;
const MAX_PARAM_KEY_CHARS: usize = 64;
const MAX_PARAM_VALUE_CHARS: usize = 1024;

fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, code, message)
}

/// Plugin names follow tenant ids: `[a-z0-9][a-z0-9_-]{0,62}`; `none` is
/// reserved (it turns a plugin off in searches).
fn validate_name(name: &str) -> ApiResult<()> {
    crate::model::validate_tenant_id(name).map_err(|_| {
        invalid(
            "name",
            "invalid_plugin_name",
            "a plugin name is 1 to 63 characters of a-z, 0-9, `_` and `-`, starting with a letter or digit",
        )
    })?;
    if name == "none" {
        return Err(invalid(
            "name",
            "invalid_plugin_name",
            "`none` is reserved: it turns plugins off in searches",
        ));
    }
    Ok(())
}

fn not_found(tenant: &str, name: &str) -> ApiError {
    ApiError::not_found(
        "plugin_not_found",
        format!("tenant `{tenant}` has no plugin `{name}`"),
    )
    .with_details(json!({"name": name}))
}

fn version_json(r: &PluginRecord) -> Value {
    json!({
        "name": r.name,
        "version": r.version,
        "digest": r.digest,
        "world": r.world,
        "active": r.active,
        "size_bytes": r.size_bytes,
        "params": r.params,
        "memory_mb": r.memory_mb,
        "created_at": crate::model::format_time(&r.created_at),
        "activated_at": r.activated_at.as_ref().map(crate::model::format_time),
    })
}

/// One plugin with all its versions (records of one name, oldest first).
fn plugin_json(versions: &[PluginRecord]) -> Value {
    let first = &versions[0];
    json!({
        "name": first.name,
        "world": first.world,
        "active_version": versions.iter().find(|v| v.active).map(|v| v.version),
        "latest_version": versions.last().map(|v| v.version),
        "versions": versions.iter().map(version_json).collect::<Vec<_>>(),
    })
}

fn upload_error(e: UploadError) -> ApiError {
    match e {
        UploadError::Internal(why) => {
            tracing::error!(error = %why, "plugin upload failed");
            ApiError::internal()
        }
        UploadError::Busy => ApiError::unavailable("plugin compiler"),
        other => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, other.code(), other.to_string())
            .with_details(json!({"field": "body"})),
    }
}

/// `PUT /v1/tenants/{t}/plugins/{name}?world=ranker|filter|ingest`, body
/// `application/wasm`.
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    validate_name(&name)?;
    let q = StrictQuery::parse(raw.as_deref(), &["world"])?;
    let world = match q.get("world") {
        None => {
            return Err(invalid(
                "world",
                "missing_field",
                "`world` is required: ranker, filter or ingest",
            ));
        }
        Some(w) => World::parse(w).ok_or_else(|| {
            invalid(
                "world",
                "invalid_parameter",
                "`world` must be ranker, filter or ingest",
            )
        })?,
    };
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    if let Some(t) =
        media_type(&headers).filter(|t| t != "application/wasm" && t != "application/octet-stream")
    {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected a WebAssembly component (Content-Type: application/wasm), got {t:?}"),
        ));
    }
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
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
    tracing::info!(tenant, plugin = %record.name, version = record.version, world = %record.world, "plugin uploaded");
    Ok((StatusCode::CREATED, Json(version_json(&record))))
}

/// `GET /v1/tenants/{t}/plugins`.
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
) -> ApiResult<Json<Value>> {
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    let records = state.catalog.list_plugins(&tenant).await?;
    let mut plugins = Vec::new();
    for group in records.chunk_by(|a, b| a.name == b.name) {
        plugins.push(plugin_json(group));
    }
    Ok(Json(json!({"plugins": plugins})))
}

/// `GET /v1/tenants/{t}/plugins/{name}`: all versions.
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
) -> ApiResult<Json<Value>> {
    validate_name(&name)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Plugins).await?;
    let versions = state.catalog.get_plugin(&tenant, &name).await?;
    if versions.is_empty() {
        return Err(not_found(&tenant, &name));
    }
    Ok(Json(plugin_json(&versions)))
}

/// `POST /v1/tenants/{t}/plugins/{name}/activate`
/// `{"version", "params"?: {..}, "memory_mb"?}`: makes that version the
/// tenant's one active plugin of its world (activating an older version is
/// the rollback).
pub async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, name): TenantItemPath,
    JsonObject(mut body): JsonObject,
) -> ApiResult<Json<Value>> {
    validate_name(&name)?;
    if let Some(k) = body
        .keys()
        .find(|k| !["version", "params", "memory_mb"].contains(&k.as_str()))
    {
        return Err(invalid(k, "unknown_field", format!("unknown field `{k}`")));
    }
    let version = match body.remove("version") {
        Some(v) => v.as_i64().filter(|v| *v >= 1).ok_or_else(|| {
            invalid(
                "version",
                "invalid_parameter",
                "`version` must be a version number (≥ 1)",
            )
        })?,
        None => return Err(invalid("version", "missing_field", "`version` is required")),
    };
    let params = parse_params(body.remove("params"))?;
    let max_mb = state.search.plugins().host().config().max_memory_bytes / (1024 * 1024);
    let memory_mb = match body.remove("memory_mb") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_i64()
                .filter(|m| *m >= 1 && (*m as u64) <= max_mb)
                .ok_or_else(|| {
                    invalid(
                        "memory_mb",
                        "invalid_parameter",
                        format!("`memory_mb` must be an integer from 1 to {max_mb}"),
                    )
                })?,
        ),
    };
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
            Ok(Json(version_json(&record)))
        }
        Err(StoreError::NotFound) => {
            if state.catalog.get_plugin(&tenant, &name).await?.is_empty() {
                Err(not_found(&tenant, &name))
            } else {
                Err(ApiError::not_found(
                    "plugin_version_not_found",
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
fn parse_params(v: Option<Value>) -> ApiResult<Map<String, Value>> {
    let m = match v {
        None | Some(Value::Null) => return Ok(Map::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(invalid(
                "params",
                "invalid_parameter",
                "`params` must be an object",
            ));
        }
    };
    if m.len() > MAX_PARAMS {
        return Err(invalid(
            "params",
            "invalid_parameter",
            format!("at most {MAX_PARAMS} parameters"),
        ));
    }
    let mut out = Map::new();
    for (k, v) in m {
        let field = format!("params.{k}");
        if k.is_empty() || k.chars().count() > MAX_PARAM_KEY_CHARS {
            return Err(invalid(
                &field,
                "invalid_parameter",
                format!("parameter names are 1 to {MAX_PARAM_KEY_CHARS} characters"),
            ));
        }
        let text = match v {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => {
                return Err(invalid(
                    &field,
                    "invalid_parameter",
                    "parameter values are strings, numbers or booleans",
                ));
            }
        };
        if text.chars().count() > MAX_PARAM_VALUE_CHARS {
            return Err(invalid(
                &field,
                "invalid_parameter",
                format!("parameter values are at most {MAX_PARAM_VALUE_CHARS} characters"),
            ));
        }
        out.insert(k, Value::String(text));
    }
    Ok(out)
}

/// `DELETE /v1/tenants/{t}/plugins/{name}`: deactivates, then removes every
/// version and the components no other version of the tenant uses.
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
