//! Product CRUD, batch import and listing (API.md "Products"). Handlers
//! parse and authorise; the rules live in `model`, the storage in `store`.

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use base64::Engine;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::{Principal, Scope};
use super::error::{ApiError, ApiResult};
use super::extract::{Fields, JsonObject, StrictQuery, TenantItemPath, TenantPath};
use super::tenants::{authorize_tenant, authorize_tenant_read};
use crate::jobs::kinds::JobSpec;
use crate::model::{self, FieldError, Product, ProductFields, parse_product};
use crate::plugins::{IngestOutcome, PluginWarning};
use crate::store::{NewJob, StoreError};

/// Most products one batch request may carry (API.md).
pub const MAX_BATCH: usize = 1000;
/// Default and largest page of a product listing.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
/// Attempts of a read-modify-write (PATCH, PUT) racing other writers.
const UPDATE_ATTEMPTS: usize = 5;

pub(super) fn index_job(tenant: &str, external_ids: Vec<String>) -> NewJob {
    NewJob::of(&JobSpec::index(external_ids), Some(tenant))
}

pub(super) fn not_found(tenant: &str, id: &str) -> ApiError {
    ApiError::not_found(
        "product_not_found",
        format!("tenant `{tenant}` has no product `{id}`"),
    )
    .with_details(json!({"external_id": id}))
}

pub(super) fn validate_path_id(id: &str) -> ApiResult<()> {
    model::validate_external_id(id).map_err(|e| ApiError::invalid_field("external_id", e.code, e.message))
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let input = parse_product(&body).map_err(|e| ApiError::from_field_errors(&e))?;
    let external_id = input
        .external_id
        .ok_or_else(|| ApiError::invalid_field("external_id", "missing_field", "external_id is required"))?;
    let (fields, warning) = ingest(&state, &tenant, &external_id, input.fields).await?;
    let job = index_job(&tenant, vec![external_id.clone()]);
    let product = state
        .catalog
        .create_product(&tenant, &external_id, &fields, &job)
        .await?;
    let mut body = json!({"product": product.to_json(), "job_id": job.id});
    add_warnings(&mut body, warning.iter().map(|w| w.to_json()).collect());
    Ok((StatusCode::CREATED, Json(body)))
}

pub async fn batch(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    JsonObject(body): JsonObject,
) -> ApiResult<impl IntoResponse> {
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let mut f = Fields(body);
    let items = match f.take("products") {
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::invalid_field(
                "products",
                "invalid_type",
                "products must be a list of product objects",
            ));
        }
        None => {
            return Err(ApiError::invalid_field(
                "products",
                "missing_field",
                "products is required",
            ));
        }
    };
    f.finish()?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "products",
            "too_many_products",
            format!("a batch holds at most {MAX_BATCH} products; got {}", items.len()),
        )
        .with_details(json!({"field": "products", "max": MAX_BATCH, "got": items.len()})));
    }
    let (accepted, mut rejected) = validate_batch(&items);
    let mut warnings = Vec::new();
    let accepted = ingest_batch(&state, &tenant, accepted, &mut rejected, &mut warnings).await?;
    let job_id = if accepted.is_empty() {
        None
    } else {
        let job = index_job(&tenant, accepted.iter().map(|(id, _)| id.clone()).collect());
        state.catalog.upsert_products(&tenant, &accepted, &job).await?;
        Some(job.id)
    };
    let mut body = json!({
        "job_id": job_id,
        "accepted": accepted.len(),
        "rejected": rejected,
    });
    add_warnings(&mut body, warnings);
    Ok((StatusCode::ACCEPTED, Json(body)))
}

/// Splits a batch into valid items and `{"index", "error"}` rejections. A
/// repeated external id keeps its first occurrence.
fn validate_batch(items: &[Value]) -> (Vec<(usize, String, ProductFields)>, Vec<Value>) {
    let mut accepted: Vec<(usize, String, ProductFields)> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    let mut rejected = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let result = match item {
            Value::Object(doc) => parse_product(doc).and_then(|p| match p.external_id {
                None => Err(vec![FieldError::new(
                    "external_id",
                    "missing_field",
                    "external_id is required",
                )]),
                Some(id) if !seen.insert(id.clone()) => Err(vec![FieldError::new(
                    "external_id",
                    "duplicate_in_batch",
                    format!("external_id `{id}` appears earlier in this batch"),
                )]),
                Some(id) => Ok((index, id, p.fields)),
            }),
            _ => Err(vec![FieldError::new(
                format!("products[{index}]"),
                "invalid_type",
                "each product must be a JSON object",
            )]),
        };
        match result {
            Ok(item) => accepted.push(item),
            Err(errors) => rejected.push(json!({
                "index": index,
                "error": ApiError::from_field_errors(&errors).body()["error"],
            })),
        }
    }
    (accepted, rejected)
}

/// The 422 of a product the tenant's ingest plugin rejected.
fn rejected_by_plugin(plugin: &str, version: i64, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "rejected_by_plugin",
        format!("the ingest plugin `{plugin}` rejected the product: {message}"),
    )
    .with_details(json!({"plugin": plugin, "version": version, "reason": message}))
}

/// `warnings` (API.md): set only when there is something to say, so that
/// responses keep their shape otherwise.
fn add_warnings(body: &mut Value, warnings: Vec<Value>) {
    if !warnings.is_empty() {
        body["warnings"] = Value::Array(warnings);
    }
}

/// Runs the tenant's ingest plugin (if one is active) on a product about
/// to be written: the fields to store, and a warning when the plugin
/// failed and the product is stored as sent.
async fn ingest(
    state: &AppState,
    tenant: &str,
    external_id: &str,
    fields: ProductFields,
) -> ApiResult<(ProductFields, Option<Box<PluginWarning>>)> {
    match state.search.plugins().ingest(tenant, external_id, fields).await? {
        IngestOutcome::Store(fields, warning) => Ok((fields, warning)),
        IngestOutcome::Rejected {
            plugin,
            version,
            message,
        } => Err(rejected_by_plugin(&plugin, version, &message)),
    }
}

/// The ingest step of a batch: transformed items stay, rejected ones join
/// `rejected` (in index order), items the plugin failed on are kept as sent
/// and named in `warnings` (`{"index", ...}`).
async fn ingest_batch(
    state: &AppState,
    tenant: &str,
    items: Vec<(usize, String, ProductFields)>,
    rejected: &mut Vec<Value>,
    warnings: &mut Vec<Value>,
) -> ApiResult<Vec<(String, ProductFields)>> {
    use futures::StreamExt;
    let registry = state.search.plugins();
    let Some(plugin) = registry.active_ingest(tenant).await? else {
        return Ok(items.into_iter().map(|(_, id, f)| (id, f)).collect());
    };
    // A few calls at once: each is short, and a batch is up to 1,000.
    let outcomes: Vec<(usize, String, IngestOutcome)> = futures::stream::iter(items)
        .map(|(index, id, fields)| {
            let plugin = &plugin;
            async move {
                let outcome = registry.ingest_with(plugin, &id, fields).await;
                (index, id, outcome)
            }
        })
        .buffered(4)
        .collect()
        .await;
    let mut accepted = Vec::with_capacity(outcomes.len());
    for (index, id, outcome) in outcomes {
        match outcome {
            IngestOutcome::Store(fields, warning) => {
                if let Some(w) = warning {
                    let mut entry = w.to_json();
                    entry["index"] = json!(index);
                    warnings.push(entry);
                }
                accepted.push((id, fields));
            }
            IngestOutcome::Rejected {
                plugin,
                version,
                message,
            } => rejected.push(json!({
                "index": index,
                "error": rejected_by_plugin(&plugin, version, &message).body()["error"],
            })),
        }
    }
    rejected.sort_by_key(|r| r["index"].as_u64());
    Ok(accepted)
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let q = StrictQuery::parse(raw.as_deref(), &["category", "limit", "cursor"])?;
    let limit = q.int("limit", 1, MAX_PAGE, DEFAULT_PAGE)?;
    let after = q.get("cursor").map(decode_cursor).transpose()?;
    let category = q.get("category").filter(|c| !c.is_empty());
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let page = state
        .catalog
        .list_products(&tenant, category, after, limit)
        .await?;
    Ok(Json(json!({
        "products": page.products.iter().map(Product::to_json).collect::<Vec<_>>(),
        "next_cursor": page.next.map(encode_cursor),
    })))
}

/// Cursors are opaque to clients: a versioned position, base64url-encoded.
fn encode_cursor(position: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("p1:{position}"))
}

fn decode_cursor(cursor: &str) -> ApiResult<i64> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("p1:").and_then(|n| n.parse::<i64>().ok()))
        .filter(|n| *n >= 0)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "cursor",
                "invalid_cursor",
                "cursor is not one this service returned; pass next_cursor unchanged",
            )
        })
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
) -> ApiResult<Json<Value>> {
    validate_path_id(&id)?;
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let product = state
        .catalog
        .get_product(&tenant, &id)
        .await?
        .ok_or_else(|| not_found(&tenant, &id))?;
    Ok(Json(product.to_json()))
}

pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let input = parse_product(&body).map_err(|e| ApiError::from_field_errors(&e))?;
    check_same_id(input.external_id.as_deref(), &id)?;
    update_with_retry(&state, &tenant, &id, |_| Ok(input.fields.clone())).await
}

pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    JsonObject(body): JsonObject,
) -> ApiResult<Json<Value>> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let patch = Value::Object(body);
    update_with_retry(&state, &tenant, &id, |current| {
        // RFC 7396 JSON merge patch over the product's editable document:
        // `null` removes an optional field, objects (metadata) merge.
        let mut doc = Value::Object(current.input_document());
        json_patch::merge(&mut doc, &patch);
        let doc: Map<String, Value> = match doc {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let input = parse_product(&doc).map_err(|e| ApiError::from_field_errors(&e))?;
        check_same_id(input.external_id.as_deref(), &id)?;
        Ok(input.fields)
    })
    .await
}

fn check_same_id(body_id: Option<&str>, path_id: &str) -> ApiResult<()> {
    match body_id {
        Some(b) if b != path_id => Err(ApiError::invalid_field(
            "external_id",
            "external_id_mismatch",
            "external_id in the body differs from the one in the path; external ids cannot be changed",
        )),
        _ => Ok(()),
    }
}

/// Read, compute the new fields, write only if nobody wrote in between;
/// re-index when the text, image or filter payload changed.
async fn update_with_retry(
    state: &AppState,
    tenant: &str,
    id: &str,
    next_fields: impl Fn(&Product) -> ApiResult<ProductFields>,
) -> ApiResult<Json<Value>> {
    for _ in 0..UPDATE_ATTEMPTS {
        let current = state
            .catalog
            .get_product(tenant, id)
            .await?
            .ok_or_else(|| not_found(tenant, id))?;
        let fields = next_fields(&current)?;
        let (fields, warning) = ingest(state, tenant, id, fields).await?;
        let job = current
            .fields
            .needs_reindex(&fields)
            .then(|| index_job(tenant, vec![id.to_owned()]));
        match state
            .catalog
            .update_product(tenant, id, &fields, Some(current.version), job.as_ref())
            .await
        {
            Ok(product) => {
                let mut body = json!({
                    "product": product.to_json(),
                    "job_id": job.map(|j| j.id),
                });
                add_warnings(&mut body, warning.iter().map(|w| w.to_json()).collect());
                return Ok(Json(body));
            }
            Err(StoreError::Conflict(_)) => continue,
            Err(StoreError::NotFound) => return Err(not_found(tenant, id)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "the product is being changed by other requests; retry",
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
) -> ApiResult<StatusCode> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    // The index job finds the product gone and removes its vector.
    let cleanup = index_job(&tenant, vec![id.clone()]);
    if state.catalog.delete_product(&tenant, &id, &cleanup).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&tenant, &id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "!!", "cDE6LTE", "eHl6", "p1:5"] {
            assert_eq!(decode_cursor(bad).unwrap_err().code, "invalid_cursor", "{bad}");
        }
    }

    #[test]
    fn batch_validation_keeps_valid_items_and_lists_the_rest() {
        let items = vec![
            json!({"external_id": "a", "title": "A"}),
            json!({"title": "no id"}),
            json!({"external_id": "a", "title": "again"}),
            json!("not an object"),
            json!({"external_id": "b", "title": "B", "price": -1}),
            json!({"external_id": "c", "title": "C"}),
        ];
        let (ok, rejected) = validate_batch(&items);
        assert_eq!(
            ok.iter().map(|(_, id, _)| id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        let idx: Vec<u64> = rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        assert_eq!(idx, [1, 2, 3, 4]);
        assert_eq!(rejected[0]["error"]["details"]["field"], "external_id");
        assert_eq!(rejected[1]["error"]["code"], "duplicate_in_batch");
        assert_eq!(rejected[3]["error"]["details"]["field"], "price");
    }
}
