//! `POST /v1/tenants/{t}/search` (JSON) and `POST /v1/tenants/{t}/search/image`
//! (multipart): parse and validate the request, run the query pipeline,
//! shape the response (API.md "Search").

use std::time::Duration;

use axum::Json;
use axum::extract::{Multipart, State};
use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::{Principal, Scope};
use super::embed::{decode_image_base64, decode_image_bytes, validate_text};
use super::error::{ApiError, ApiResult};
use super::extract::{JsonObject, TenantPath};
use super::tenants::authorize_tenant;
use crate::media::MediaError;
use crate::model;
use crate::plugins::{PluginChoice, ResolveError};
use crate::search::{PluginReport, PluginSelection, QuerySource, SearchError, SearchRequest, SearchResponse};
use crate::store::vectors::VectorFilter;

pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 100;
pub const MAX_OFFSET: u64 = 1000;
/// Values in one `categories` or `tags` filter.
const MAX_FILTER_VALUES: usize = 100;
/// Longest `user_id` / `session_id`.
const MAX_ID_CHARS: usize = 256;
const MAX_URL_CHARS: usize = 2048;

const SOURCES: [&str; 4] = ["text", "image_url", "image_base64", "like"];
const OPTIONS: [&str; 7] = [
    "filters",
    "limit",
    "offset",
    "min_score",
    "plugins",
    "user_id",
    "session_id",
];

/// The options every search takes, whatever its query source.
struct Options {
    filter: VectorFilter,
    limit: usize,
    offset: usize,
    min_score: Option<f32>,
    plugins: PluginSelection,
    user_id: Option<String>,
    session_id: Option<String>,
}

fn invalid(field: &str, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, code, message)
}

fn int_in(v: &Value, field: &str, min: u64, max: u64) -> ApiResult<u64> {
    v.as_u64().filter(|n| (min..=max).contains(n)).ok_or_else(|| {
        invalid(
            field,
            "invalid_parameter",
            format!("`{field}` must be an integer from {min} to {max}"),
        )
    })
}

fn string_list(v: Value, field: &str) -> ApiResult<Vec<String>> {
    let Value::Array(items) = v else {
        return Err(invalid(
            field,
            "invalid_filter",
            format!("`{field}` must be a list of strings"),
        ));
    };
    if items.len() > MAX_FILTER_VALUES {
        return Err(invalid(
            field,
            "invalid_filter",
            format!("`{field}` may hold at most {MAX_FILTER_VALUES} values"),
        ));
    }
    items
        .into_iter()
        .map(|i| match i {
            Value::String(s) if !s.is_empty() => Ok(s),
            _ => Err(invalid(
                field,
                "invalid_filter",
                format!("`{field}` must hold non-empty strings"),
            )),
        })
        .collect()
}

/// A price bound: a number or a decimal string, ≥ 0.
fn price(v: Value, field: &str) -> ApiResult<f64> {
    let n = match &v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    n.filter(|x| x.is_finite() && *x >= 0.0)
        .ok_or_else(|| invalid(field, "invalid_filter", format!("`{field}` must be a price ≥ 0")))
}

fn parse_filters(v: Value) -> ApiResult<VectorFilter> {
    let Value::Object(m) = v else {
        return Err(invalid(
            "filters",
            "invalid_filter",
            "`filters` must be an object",
        ));
    };
    let mut f = VectorFilter::default();
    for (k, v) in m {
        let field = format!("filters.{k}");
        if v.is_null() {
            continue;
        }
        match k.as_str() {
            "category" => match v {
                Value::String(s) if !s.is_empty() => f.categories.push(s),
                _ => {
                    return Err(invalid(
                        &field,
                        "invalid_filter",
                        "`filters.category` must be a non-empty string",
                    ));
                }
            },
            "categories" => f.categories.extend(string_list(v, &field)?),
            "tags" => f.tags = string_list(v, &field)?,
            "price_min" => f.price_min = Some(price(v, &field)?),
            "price_max" => f.price_max = Some(price(v, &field)?),
            "in_stock" => match v {
                Value::Bool(b) => f.in_stock = Some(b),
                _ => {
                    return Err(invalid(
                        &field,
                        "invalid_filter",
                        "`filters.in_stock` must be true or false",
                    ));
                }
            },
            _ => {
                return Err(invalid(
                    &field,
                    "unknown_field",
                    format!(
                        "unknown filter `{k}`; allowed: category, categories, price_min, price_max, tags, in_stock"
                    ),
                ));
            }
        }
    }
    f.categories.sort();
    f.categories.dedup();
    if let (Some(lo), Some(hi)) = (f.price_min, f.price_max)
        && lo > hi
    {
        return Err(invalid(
            "filters.price_max",
            "invalid_filter",
            "`filters.price_max` must not be below `filters.price_min`",
        ));
    }
    Ok(f)
}

/// Reads the options out of `body` (what remains must be one query source).
fn parse_options(body: &mut Map<String, Value>) -> ApiResult<Options> {
    let mut o = Options {
        filter: VectorFilter::default(),
        limit: DEFAULT_LIMIT as usize,
        offset: 0,
        min_score: None,
        plugins: PluginSelection::default(),
        user_id: None,
        session_id: None,
    };
    if let Some(v) = body.remove("filters").filter(|v| !v.is_null()) {
        o.filter = parse_filters(v)?;
    }
    if let Some(v) = body.remove("limit").filter(|v| !v.is_null()) {
        o.limit = int_in(&v, "limit", 1, MAX_LIMIT)? as usize;
    }
    if let Some(v) = body.remove("offset").filter(|v| !v.is_null()) {
        o.offset = int_in(&v, "offset", 0, MAX_OFFSET)? as usize;
    }
    if let Some(v) = body.remove("min_score").filter(|v| !v.is_null()) {
        let s = v.as_f64().filter(|s| (-1.0..=1.0).contains(s)).ok_or_else(|| {
            invalid(
                "min_score",
                "invalid_parameter",
                "`min_score` must be a number from -1 to 1",
            )
        })?;
        o.min_score = Some(s as f32);
    }
    if let Some(v) = body.remove("plugins").filter(|v| !v.is_null()) {
        let Value::Object(m) = v else {
            return Err(invalid(
                "plugins",
                "invalid_parameter",
                "`plugins` must be an object",
            ));
        };
        for (k, v) in m {
            let field = format!("plugins.{k}");
            if k != "filter" && k != "ranker" {
                return Err(invalid(
                    &field,
                    "unknown_field",
                    "`plugins` takes `filter` and `ranker`",
                ));
            }
            let choice = match v {
                Value::Null => PluginChoice::Active,
                Value::String(name) if name == "none" => PluginChoice::Off,
                Value::String(name) if crate::model::validate_tenant_id(&name).is_ok() => {
                    PluginChoice::Named(name)
                }
                _ => {
                    return Err(invalid(
                        &field,
                        "invalid_parameter",
                        format!("`{field}` must be a plugin name or \"none\""),
                    ));
                }
            };
            if k == "filter" {
                o.plugins.filter = choice;
            } else {
                o.plugins.ranker = choice;
            }
        }
    }
    for field in ["user_id", "session_id"] {
        match body.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if !s.is_empty() && s.chars().count() <= MAX_ID_CHARS => {
                if field == "user_id" {
                    o.user_id = Some(s);
                } else {
                    o.session_id = Some(s);
                }
            }
            Some(_) => {
                return Err(invalid(
                    field,
                    "invalid_parameter",
                    format!("`{field}` must be a string of 1 to {MAX_ID_CHARS} characters"),
                ));
            }
        }
    }
    Ok(o)
}

fn media_error(e: MediaError) -> ApiError {
    let code = match &e {
        MediaError::InvalidUrl(_) | MediaError::Forbidden(_) => {
            return invalid("image_url", "invalid_image_url", e.to_string());
        }
        MediaError::UnsupportedType(_) => "unsupported_image",
        MediaError::TooLarge { .. } | MediaError::TooManyPixels { .. } => "image_too_large",
        MediaError::Corrupt(_) => "invalid_image",
        _ => "image_unreachable",
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
        .with_details(json!({"field": "image_url"}))
}

async fn source_from(state: &AppState, body: &mut Map<String, Value>) -> ApiResult<QuerySource> {
    let given: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|k| body.contains_key(*k))
        .collect();
    if given.len() != 1 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!(
                "send exactly one query source: `text`, `image_url`, `image_base64` or `like` (got {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.join(", ")
                }
            ),
        )
        .with_details(json!({"field": given.first().copied().unwrap_or("text")})));
    }
    let key = given[0];
    let value = body.remove(key).unwrap_or(Value::Null);
    let Value::String(s) = value else {
        return Err(invalid(key, "invalid_query", format!("`{key}` must be a string")));
    };
    Ok(match key {
        "text" => QuerySource::Text(validate_text(s)?),
        "image_base64" => QuerySource::Image {
            image: decode_image_base64(&state.limits, &s, "image_base64").await?,
            url: None,
        },
        "image_url" => {
            if s.chars().count() > MAX_URL_CHARS {
                return Err(invalid(
                    "image_url",
                    "invalid_image_url",
                    format!("`image_url` is longer than {MAX_URL_CHARS} characters"),
                ));
            }
            // One attempt, inside the request's deadline: an unreachable or
            // slow image is the client's problem (422), not a reason to
            // retry the search.
            let within = state.fetcher.config().timeout.min(
                state
                    .limits
                    .request_timeout
                    .saturating_sub(Duration::from_secs(1)),
            );
            let fetched = tokio::time::timeout(within, state.fetcher.fetch_once(&s))
                .await
                .unwrap_or(Err(MediaError::Timeout))
                .map_err(media_error)?;
            QuerySource::Image {
                image: decode_image_bytes(&state.limits, fetched.bytes.to_vec(), "image_url").await?,
                url: Some(s),
            }
        }
        _ => {
            model::validate_external_id(&s).map_err(|e| invalid("like", e.code, e.message))?;
            QuerySource::Like(s)
        }
    })
}

fn search_error(e: SearchError) -> ApiError {
    match e {
        SearchError::ProductNotFound(id) => {
            ApiError::not_found("product_not_found", format!("there is no product `{id}`"))
                .with_details(json!({"field": "like"}))
        }
        SearchError::ProductNotIndexed(id) => ApiError::new(
            StatusCode::CONFLICT,
            "product_not_indexed",
            format!("product `{id}` is not indexed yet, so there is nothing to compare with"),
        )
        .with_details(json!({"field": "like"})),
        SearchError::Busy => ApiError::overloaded(),
        SearchError::Unavailable(what) => ApiError::unavailable(what),
        SearchError::ModelMismatch => {
            let mut err = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "reindex_required",
                "the index was built with another model; searches work again once the reindex finishes",
            );
            err.retry_after = Some(30);
            err
        }
        SearchError::Plugin(e) => {
            let world = match &e {
                ResolveError::WrongWorld { wanted, .. } => *wanted,
                _ => "",
            };
            let field = if world.is_empty() {
                "plugins".to_owned()
            } else {
                format!("plugins.{world}")
            };
            match e {
                ResolveError::WrongWorld { .. } => invalid(&field, "wrong_plugin_world", e.to_string()),
                _ => ApiError::not_found("plugin_not_found", e.to_string())
                    .with_details(json!({"field": field})),
            }
        }
        SearchError::Internal(why) => {
            tracing::error!(error = %why, "search failed");
            ApiError::internal()
        }
    }
}

fn response_json(r: SearchResponse) -> Value {
    json!({
        "hits": r.hits.iter().map(|h| json!({"product": h.product.to_json(), "score": h.score})).collect::<Vec<_>>(),
        "took_ms": (r.took_ms * 1000.0).round() / 1000.0,
        "query_type": r.query_type,
        "plugins": plugin_reports(&r.plugins),
    })
}

/// `{"filter"?: {...}, "ranker"?: {...}}`: what each plugin did.
pub fn plugin_reports(reports: &[PluginReport]) -> Value {
    let mut out = Map::new();
    for r in reports {
        let mut entry = json!({
            "name": r.name,
            "version": r.version,
            "outcome": if r.error.is_none() { "ok" } else { "fallback" },
            "elapsed_ms": (r.elapsed_ms * 1000.0).round() / 1000.0,
        });
        if let Some(e) = &r.error {
            // A fixed sentence: what the guest wrote goes to the log only.
            entry["error"] = json!(e.public_message());
            entry["error_kind"] = json!(e.kind());
        }
        out.insert(r.world.as_str().to_owned(), entry);
    }
    Value::Object(out)
}

async fn run(state: &AppState, tenant: String, source: QuerySource, o: Options) -> ApiResult<Json<Value>> {
    let response = state
        .search
        .search(SearchRequest {
            tenant,
            source,
            filter: o.filter,
            limit: o.limit,
            offset: o.offset,
            min_score: o.min_score,
            plugins: o.plugins,
            user_id: o.user_id,
            session_id: o.session_id,
        })
        .await
        .map_err(search_error)?;
    Ok(Json(response_json(response)))
}

/// `POST /v1/tenants/{t}/search`.
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    JsonObject(mut body): JsonObject,
) -> ApiResult<Json<Value>> {
    authorize_tenant(&state, &principal, &tenant, Scope::Search).await?;
    if let Some(k) = body
        .keys()
        .find(|k| !SOURCES.contains(&k.as_str()) && !OPTIONS.contains(&k.as_str()))
    {
        return Err(invalid(k, "unknown_field", format!("unknown field `{k}`")));
    }
    let options = parse_options(&mut body)?;
    let source = source_from(&state, &mut body).await?;
    run(&state, tenant, source, options).await
}

/// `POST /v1/tenants/{t}/search/image`: multipart with an `image` part and
/// an optional `params` part holding the JSON options.
pub async fn search_image(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Json<Value>> {
    authorize_tenant(&state, &principal, &tenant, Scope::Search).await?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected a multipart/form-data body: {e}"),
        )
    })?;
    let (mut image, mut params) = (None, None);
    loop {
        let field = multipart.next_field().await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("unreadable multipart body: {e}"),
            )
        })?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "the image is larger than allowed",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    format!("unreadable multipart part: {e}"),
                )
            }
        })?;
        match name.as_str() {
            "image" if image.is_none() => image = Some(bytes),
            "params" if params.is_none() => params = Some(bytes),
            "image" | "params" => {
                return Err(invalid(
                    &name,
                    "duplicate_part",
                    format!("part `{name}` is given more than once"),
                ));
            }
            other => {
                return Err(invalid(
                    other,
                    "unknown_field",
                    format!("unknown part `{other}`; send `image` and optionally `params`"),
                ));
            }
        }
    }
    let image = image.ok_or_else(|| invalid("image", "missing_field", "the `image` part is required"))?;
    let mut body = match params {
        None => Map::new(),
        Some(p) => match serde_json::from_slice::<Value>(&p) {
            Ok(Value::Object(m)) => {
                super::extract::refuse_nul_in_object(&m, "params")?;
                m
            }
            _ => {
                return Err(invalid(
                    "params",
                    "invalid_body",
                    "the `params` part must be a JSON object",
                ));
            }
        },
    };
    if let Some(k) = body.keys().find(|k| !OPTIONS.contains(&k.as_str())) {
        return Err(invalid(
            &format!("params.{k}"),
            "unknown_field",
            format!("unknown option `{k}` (the query is the `image` part)"),
        ));
    }
    let options = parse_options(&mut body)?;
    let source = QuerySource::Image {
        image: decode_image_bytes(&state.limits, image.to_vec(), "image").await?,
        url: None,
    };
    run(&state, tenant, source, options).await
}
