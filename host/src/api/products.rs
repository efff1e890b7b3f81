//! Product CRUD, batch import and listing (API.md "Products"). Handlers
//! parse and authorise; the rules live in `model`, the storage in `store`.

use super::types::ErrorBody;
use crate::model::ProductView;
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::json;

use super::AppState;
use super::auth::{Principal, Scope};
use super::caching;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Body, Query, RequestBody, TenantItemPath, TenantPath, in_range, typed};
use super::tenants::{authorize_tenant, authorize_tenant_read};
use super::types::{
    BatchRequest, BatchResult, IngestWarning, ListProductsQuery, ProductPage, ProductPatch, ProductWritten,
    RejectedItem,
};
use crate::jobs::kinds::JobSpec;
use crate::model::{self, FieldError, Product, ProductDocument, ProductFields, parse_product};
use crate::plugins::{IngestOutcome, PluginWarning};
use crate::store::{NewJob, StoreError};

/// Most products one batch request may carry (API.md).
pub const MAX_BATCH: usize = 1000;
/// Default and largest page of a product listing.
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 1000;
/// Attempts of a read-modify-write (PATCH, PUT) racing other writers.
const UPDATE_ATTEMPTS: usize = 5;

/// A price or a currency of the wrong JSON type gets the field's own code,
/// as any other bad price or currency does.
impl RequestBody for ProductDocument {
    fn field_code(field: &str, kind: ErrorCode) -> Option<ErrorCode> {
        match (field, kind) {
            (_, ErrorCode::UnknownField | ErrorCode::MissingField) => None,
            ("price", _) => Some(ErrorCode::InvalidPrice),
            ("currency", _) => Some(ErrorCode::InvalidCurrency),
            _ => None,
        }
    }
}

pub(super) fn index_job(tenant: &str, external_ids: Vec<String>) -> NewJob {
    NewJob::of(&JobSpec::index(external_ids), Some(tenant))
}

pub(super) fn not_found(tenant: &str, id: &str) -> ApiError {
    ApiError::not_found(
        ErrorCode::ProductNotFound,
        format!("tenant `{tenant}` has no product `{id}`"),
    )
    .with_details(json!({"external_id": id}))
}

pub(super) fn validate_path_id(id: &str) -> ApiResult<()> {
    model::validate_external_id(id).map_err(|e| ApiError::invalid_field("external_id", e.code, e.message))
}

#[utoipa::path(
    post, path = "/v1/tenants/{t}/products", operation_id = "create_product", summary = "Create a product", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = ProductDocument,
    responses((status = 201, description = "Stored; an index job follows", body = ProductWritten),
        (status = 409, description = "The external id exists", body = ErrorBody),
        (status = 422, description = "The ingest plugin rejected it", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    Body(body): Body<ProductDocument>,
) -> ApiResult<impl IntoResponse> {
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let input = parse_product(&body).map_err(|e| ApiError::from_field_errors(&e))?;
    let external_id = input.external_id.ok_or_else(|| {
        ApiError::invalid_field("external_id", ErrorCode::MissingField, "external_id is required")
    })?;
    let (fields, warning) = ingest(&state, &tenant, &external_id, input.fields).await?;
    let job = index_job(&tenant, vec![external_id.clone()]);
    let _quota = state
        .policies
        .admit_products(&*state.catalog, &tenant, || async { Ok(1) })
        .await?;
    let product = state
        .catalog
        .create_product(&tenant, &external_id, &fields, &job)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(ProductWritten {
            product: product.view(),
            job_id: Some(job.id),
            warnings: warnings(warning.iter().map(|w| w.view(None)).collect()),
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/tenants/{t}/products/batch", operation_id = "batch_products", summary = "Upsert up to 1,000 products", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = BatchRequest,
    responses((status = 202, description = "Valid items stored (upserted), the rest listed in `rejected`", body = BatchResult)),
    security(("bearer" = ["write"]))
)]
pub async fn batch(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    Body(BatchRequest { products: items }): Body<BatchRequest>,
) -> ApiResult<impl IntoResponse> {
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    if items.len() > MAX_BATCH {
        return Err(ApiError::invalid_field(
            "products",
            ErrorCode::TooManyProducts,
            format!("a batch holds at most {MAX_BATCH} products; got {}", items.len()),
        )
        .with_details(json!({"field": "products", "max": MAX_BATCH, "got": items.len()})));
    }
    let (accepted, mut rejected) = validate_batch(items);
    let mut warnings = Vec::new();
    let accepted = ingest_batch(&state, &tenant, accepted, &mut rejected, &mut warnings).await?;
    let job_id = if accepted.is_empty() {
        None
    } else {
        let ids: Vec<String> = accepted.iter().map(|(id, _)| id.clone()).collect();
        let _quota = state
            .policies
            .admit_products(&*state.catalog, &tenant, || async {
                let existing = state.catalog.get_products(&tenant, &ids).await?.len();
                Ok(ids.len().saturating_sub(existing) as u64)
            })
            .await?;
        let job = index_job(&tenant, ids);
        state.catalog.upsert_products(&tenant, &accepted, &job).await?;
        Some(job.id)
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchResult {
            job_id,
            accepted: accepted.len(),
            rejected,
            warnings: self::warnings(warnings),
        }),
    ))
}

/// Splits a batch into valid items and `{"index", "error"}` rejections. A
/// repeated external id keeps its first occurrence.
fn validate_batch(
    items: Vec<serde_value::Value>,
) -> (Vec<(usize, String, ProductFields)>, Vec<RejectedItem>) {
    let mut accepted: Vec<(usize, String, ProductFields)> = Vec::with_capacity(items.len());
    let mut seen = std::collections::HashSet::new();
    let mut rejected = Vec::new();
    for (index, item) in items.into_iter().enumerate() {
        let result = match item {
            serde_value::Value::Map(_) => match typed::<ProductDocument>(item, "") {
                Err(e) => {
                    rejected.push(RejectedItem {
                        index,
                        error: e.object(),
                    });
                    continue;
                }
                Ok(doc) => parse_product(&doc),
            }
            .and_then(|p| match p.external_id {
                None => Err(vec![FieldError::new(
                    "external_id",
                    ErrorCode::MissingField,
                    "external_id is required",
                )]),
                Some(id) if !seen.insert(id.clone()) => Err(vec![FieldError::new(
                    "external_id",
                    ErrorCode::DuplicateInBatch,
                    format!("external_id `{id}` appears earlier in this batch"),
                )]),
                Some(id) => Ok((index, id, p.fields)),
            }),
            _ => Err(vec![FieldError::new(
                format!("products[{index}]"),
                ErrorCode::InvalidType,
                "each product must be a JSON object",
            )]),
        };
        match result {
            Ok(item) => accepted.push(item),
            Err(errors) => rejected.push(RejectedItem {
                index,
                error: ApiError::from_field_errors(&errors).object(),
            }),
        }
    }
    (accepted, rejected)
}

/// The 422 of a product the tenant's ingest plugin rejected.
fn rejected_by_plugin(plugin: &str, version: i64, message: &str) -> ApiError {
    ApiError::new(
        ErrorCode::RejectedByPlugin,
        format!("the ingest plugin `{plugin}` rejected the product: {message}"),
    )
    .with_details(json!({"plugin": plugin, "version": version, "reason": message}))
}

/// `warnings` (API.md): set only when there is something to say, so that
/// responses keep their shape otherwise.
pub(super) fn warnings(warnings: Vec<IngestWarning>) -> Option<Vec<IngestWarning>> {
    (!warnings.is_empty()).then_some(warnings)
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
    rejected: &mut Vec<RejectedItem>,
    warnings: &mut Vec<IngestWarning>,
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
                    warnings.push(w.view(Some(index)));
                }
                accepted.push((id, fields));
            }
            IngestOutcome::Rejected {
                plugin,
                version,
                message,
            } => rejected.push(RejectedItem {
                index,
                error: rejected_by_plugin(&plugin, version, &message).object(),
            }),
        }
    }
    rejected.sort_by_key(|r| r.index);
    Ok(accepted)
}

#[utoipa::path(
    get, path = "/v1/tenants/{t}/products", operation_id = "list_products", summary = "List products (cursor pages)", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ListProductsQuery),
    responses((status = 200, description = "A page of products", body = ProductPage)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    Query(q): Query<ListProductsQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let limit = in_range("limit", q.limit, 1, MAX_PAGE, DEFAULT_PAGE)?;
    let after = q.cursor.as_deref().map(decode_cursor).transpose()?;
    let category = q.category.as_deref().filter(|c| !c.is_empty());
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let request = format!("{category:?} {after:?} {limit}");
    let etag = caching::tenant_etag(&state, &tenant, &[b"list_products", request.as_bytes()]).await?;
    caching::conditional(&headers, &etag, async {
        let page = state
            .catalog
            .list_products(&tenant, category, after, limit)
            .await?;
        Ok(Json(ProductPage {
            products: page.products.iter().map(Product::view).collect(),
            next_cursor: page.next.map(encode_cursor),
        }))
    })
    .await
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
                ErrorCode::InvalidCursor,
                "cursor is not one this service returned; pass next_cursor unchanged",
            )
        })
}

#[utoipa::path(
    get, path = "/v1/tenants/{t}/products/{id}", operation_id = "get_product", summary = "Get a product", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$")),
    responses((status = 200, description = "The product", body = ProductView)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    headers: HeaderMap,
) -> ApiResult<Response> {
    validate_path_id(&id)?;
    authorize_tenant_read(&state, &principal, &tenant).await?;
    let etag = caching::tenant_etag(&state, &tenant, &[b"get_product", id.as_bytes()]).await?;
    caching::conditional(&headers, &etag, async {
        let product = state
            .catalog
            .get_product(&tenant, &id)
            .await?
            .ok_or_else(|| not_found(&tenant, &id))?;
        Ok(Json(product.view()))
    })
    .await
}

#[utoipa::path(
    put, path = "/v1/tenants/{t}/products/{id}", operation_id = "replace_product", summary = "Replace a product", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$")), request_body = ProductDocument,
    responses((status = 200, description = "Replaced", body = ProductWritten),
        (status = 409, description = "Changed by other requests meanwhile; retry", body = ErrorBody),
        (status = 422, description = "The ingest plugin rejected it", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn put(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    Body(body): Body<ProductDocument>,
) -> ApiResult<Json<ProductWritten>> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let input = parse_product(&body).map_err(|e| ApiError::from_field_errors(&e))?;
    check_same_id(input.external_id.as_deref(), &id)?;
    update_with_retry(&state, &tenant, &id, |_| Ok(input.fields.clone())).await
}

#[utoipa::path(
    patch, path = "/v1/tenants/{t}/products/{id}", operation_id = "patch_product", summary = "Patch a product (JSON merge patch)", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$")),
    request_body(content = ProductPatch, content_type = "application/merge-patch+json",
        description = "An RFC 7396 merge patch (`application/json` is taken too)"),
    responses((status = 200, description = "Patched", body = ProductWritten),
        (status = 409, description = "Changed by other requests meanwhile; retry", body = ErrorBody),
        (status = 422, description = "The ingest plugin rejected it", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    TenantItemPath(tenant, id): TenantItemPath,
    Body(ProductPatch(patch)): Body<ProductPatch>,
) -> ApiResult<Json<ProductWritten>> {
    validate_path_id(&id)?;
    authorize_tenant(&state, &principal, &tenant, Scope::Write).await?;
    let patch = serde_json::Value::Object(patch);
    update_with_retry(&state, &tenant, &id, |current| {
        // RFC 7396 JSON merge patch over the product's editable document:
        // `null` removes an optional field, objects (metadata) merge. The
        // result is read as any product document is.
        let mut doc = serde_json::to_value(current.input_document()).map_err(|_| ApiError::internal())?;
        json_patch::merge(&mut doc, &patch);
        let tree = serde_value::to_value(doc).map_err(|_| ApiError::internal())?;
        let doc = typed::<ProductDocument>(tree, "")?;
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
            ErrorCode::ExternalIdMismatch,
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
) -> ApiResult<Json<ProductWritten>> {
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
                return Ok(Json(ProductWritten {
                    product: product.view(),
                    job_id: job.map(|j| j.id),
                    warnings: warnings(warning.iter().map(|w| w.view(None)).collect()),
                }));
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

#[utoipa::path(
    delete, path = "/v1/tenants/{t}/products/{id}", operation_id = "delete_product", summary = "Delete a product", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"), ("id" = String, Path, description = "The product's external id (URL-encoded): 1 to 256 printable characters", pattern = r"^[^\x00-\x1f\x7f-\x9f]{1,256}$")),
    responses((status = 204, description = "Deleted; its vector goes with the next index job")),
    security(("bearer" = ["write"]))
)]
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

// `batch` is also an external id like any other: GET, PUT, PATCH and
// DELETE on `.../products/batch` reach that product. The path's POST is
// the batch import, so these four are routed (and documented) on it.

#[utoipa::path(
    get, path = "/v1/tenants/{t}/products/batch", operation_id = "get_product_named_batch", summary = "Get the product whose id is `batch`", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 200, description = "The product whose external id is `batch`", body = ProductView)),
    security(("bearer" = ["search"]), ("bearer" = ["write"]))
)]
pub async fn get_named_batch(
    state: State<AppState>,
    principal: Principal,
    path: TenantItemPath,
    headers: HeaderMap,
) -> ApiResult<Response> {
    get(state, principal, path, headers).await
}

#[utoipa::path(
    put, path = "/v1/tenants/{t}/products/batch", operation_id = "replace_product_named_batch", summary = "Replace the product whose id is `batch`", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = ProductDocument,
    responses((status = 200, description = "Replaced", body = ProductWritten),
        (status = 409, description = "Changed by other requests meanwhile; retry", body = ErrorBody),
        (status = 422, description = "The ingest plugin rejected it", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn put_named_batch(
    state: State<AppState>,
    principal: Principal,
    path: TenantItemPath,
    body: Body<ProductDocument>,
) -> ApiResult<Json<ProductWritten>> {
    put(state, principal, path, body).await
}

#[utoipa::path(
    patch, path = "/v1/tenants/{t}/products/batch", operation_id = "patch_product_named_batch", summary = "Patch the product whose id is `batch`", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body(content = ProductPatch, content_type = "application/merge-patch+json"),
    responses((status = 200, description = "Patched", body = ProductWritten),
        (status = 409, description = "Changed by other requests meanwhile; retry", body = ErrorBody),
        (status = 422, description = "The ingest plugin rejected it", body = ErrorBody)),
    security(("bearer" = ["write"]))
)]
pub async fn patch_named_batch(
    state: State<AppState>,
    principal: Principal,
    path: TenantItemPath,
    body: Body<ProductPatch>,
) -> ApiResult<Json<ProductWritten>> {
    patch(state, principal, path, body).await
}

#[utoipa::path(
    delete, path = "/v1/tenants/{t}/products/batch", operation_id = "delete_product_named_batch", summary = "Delete the product whose id is `batch`", tag = "products",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    responses((status = 204, description = "Deleted")),
    security(("bearer" = ["write"]))
)]
pub async fn delete_named_batch(
    state: State<AppState>,
    principal: Principal,
    path: TenantItemPath,
) -> ApiResult<StatusCode> {
    delete(state, principal, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_tampering() {
        assert_eq!(decode_cursor(&encode_cursor(42)).unwrap(), 42);
        for bad in ["", "!!", "cDE6LTE", "eHl6", "p1:5"] {
            assert_eq!(
                decode_cursor(bad).unwrap_err().code,
                ErrorCode::InvalidCursor,
                "{bad}"
            );
        }
    }

    #[test]
    fn batch_validation_keeps_valid_items_and_lists_the_rest() {
        let items = [
            json!({"external_id": "a", "title": "A"}),
            json!({"title": "no id"}),
            json!({"external_id": "a", "title": "again"}),
            json!("not an object"),
            json!({"external_id": "b", "title": "B", "price": -1}),
            json!({"external_id": "c", "title": "C"}),
        ];
        let items = items.iter().map(|v| serde_value::to_value(v).unwrap()).collect();
        let (ok, rejected) = validate_batch(items);
        assert_eq!(
            ok.iter().map(|(_, id, _)| id.as_str()).collect::<Vec<_>>(),
            ["a", "c"]
        );
        let idx: Vec<usize> = rejected.iter().map(|r| r.index).collect();
        assert_eq!(idx, [1, 2, 3, 4]);
        let field = |i: usize| rejected[i].error.details.as_ref().unwrap()["field"].clone();
        assert_eq!(field(0), "external_id");
        assert_eq!(rejected[1].error.code, ErrorCode::DuplicateInBatch);
        assert_eq!(field(3), "price");
    }
}
