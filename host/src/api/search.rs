//! `POST /v1/tenants/{t}/search` (JSON) and `POST /v1/tenants/{t}/search/image`
//! (multipart): parse and validate the request, run the query pipeline,
//! shape the response (API.md "Search").

use super::types::{ErrorBody, ImageSearchForm};
use std::time::Duration;

use axum::Json;
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::AppState;
use super::auth::Principal;
use super::caching;
use super::embed::{decode_image_base64, decode_image_bytes, validate_text};
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Body, TenantPath, json_object, typed};
use super::token::SearchGrant;
use super::types::{
    FacetCount, FacetName, FacetsView, FusionName, PluginReport, PluginReports, PriceBucketView,
    SearchDefaults, SearchFilters, SearchHit, SearchModeName, SearchOptions, SearchRequest, SearchResponse,
    SearchWeights, StockCount,
};
use crate::media::MediaError;
use crate::media::fetch::hex_sha256;
use crate::model;
use crate::model::Price;
use crate::plugins::{PluginChoice, ResolveError, World};
use crate::search::{
    FacetSpec, PluginReport as PluginRun, PluginSelection, QuerySource, SearchError, SearchMode,
    SearchResponse as SearchOutcome,
};
use crate::store::vectors::{FacetCounts, FacetField, FacetQuery, Fusion, VectorFilter, Weights};

pub const DEFAULT_LIMIT: u64 = 10;
pub const MAX_LIMIT: u64 = 100;
pub const MAX_OFFSET: u64 = 1000;
/// Values in one `categories` or `tags` filter.
const MAX_FILTER_VALUES: usize = 100;
/// Longest `user_id` / `session_id`.
const MAX_ID_CHARS: usize = 256;
const MAX_URL_CHARS: usize = 2048;
/// Largest leg weight.
const MAX_WEIGHT: f64 = 100.0;
/// Values per keyword facet: default and most.
const DEFAULT_FACET_LIMIT: u32 = 10;
const MAX_FACET_LIMIT: u32 = 100;
/// Most price bucket boundaries.
const MAX_PRICE_BUCKETS: usize = 20;
/// Price buckets when the request names none.
const DEFAULT_PRICE_BUCKETS: [f64; 7] = [10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0];
/// Highest `min_score` (BM25 scores of keyword mode exceed 1).
const MAX_MIN_SCORE: f64 = 1_000_000.0;

/// The service's leg weights for a text query (README "Search modes"):
/// the keyword leg leads, the two CLIP legs break its ties and carry the
/// queries it has no words for. Where no product has a query word the
/// keyword leg is empty and the CLIP legs rank alone, whatever their
/// weight; where products do, a CLIP share (at most 0.2 of 1.2) stays
/// below the gap between matching every word of a query and matching
/// some of them (see `vitrine bench relevance`).
pub const TEXT_WEIGHTS: Weights = Weights {
    image: 0.1,
    text: 0.1,
    keyword: 1.0,
};

/// The service's leg weights for an image or `like` query: the image leg
/// (picture to picture) leads, the text leg (picture to words) breaks ties.
pub const IMAGE_WEIGHTS: Weights = Weights {
    image: 1.0,
    text: 0.2,
    keyword: 0.0,
};

/// The options every search takes, whatever its query source.
struct Options {
    filter: VectorFilter,
    limit: usize,
    offset: usize,
    min_score: Option<f32>,
    /// `None`: the tenant's default.
    mode: Option<SearchMode>,
    /// What the request sets; the rest comes from the tenant's defaults.
    weights: SearchWeights,
    fusion: Option<Fusion>,
    facets: Option<FacetSpec>,
    plugins: PluginSelection,
    user_id: Option<String>,
    session_id: Option<String>,
}

fn invalid(field: &str, code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, code, message)
}

fn string_list(items: Vec<String>, field: &str) -> ApiResult<Vec<String>> {
    if items.len() > MAX_FILTER_VALUES {
        return Err(invalid(
            field,
            ErrorCode::InvalidFilter,
            format!("`{field}` may hold at most {MAX_FILTER_VALUES} values"),
        ));
    }
    if items.iter().any(String::is_empty) {
        return Err(invalid(
            field,
            ErrorCode::InvalidFilter,
            format!("`{field}` must hold non-empty strings"),
        ));
    }
    refuse_nul(&items, field)?;
    Ok(items)
}

/// A filter value with a NUL: request bodies never get here with one (the
/// body reader refuses them), a search token's forced filters may.
fn refuse_nul(items: &[String], field: &str) -> ApiResult<()> {
    if items.iter().any(|s| s.contains('\0')) {
        return Err(invalid(
            field,
            ErrorCode::InvalidCharacter,
            format!("`{field}` holds a NUL character"),
        ));
    }
    Ok(())
}

/// A price bound: what a product's price may be (a number or a decimal
/// string, from 0 to 10^15), so the document states one rule for both.
fn price(v: &Price, field: &str) -> ApiResult<f64> {
    use rust_decimal::prelude::ToPrimitive;
    model::parse_price(v)
        .ok()
        .and_then(|d| d.to_f64())
        .ok_or_else(|| {
            invalid(
                field,
                ErrorCode::InvalidFilter,
                format!(
                    "`{field}` must be a price from 0 to 10^15, as a number or a string such as \"19.99\""
                ),
            )
        })
}

pub(crate) fn parse_filters(f: SearchFilters) -> ApiResult<VectorFilter> {
    let mut out = VectorFilter::default();
    if let Some(c) = f.category {
        if c.is_empty() {
            return Err(invalid(
                "filters.category",
                ErrorCode::InvalidFilter,
                "`filters.category` must be a non-empty string",
            ));
        }
        refuse_nul(std::slice::from_ref(&c), "filters.category")?;
        out.categories.push(c);
    }
    if let Some(c) = f.categories {
        out.categories.extend(string_list(c, "filters.categories")?);
    }
    if let Some(t) = f.tags {
        out.tags = string_list(t, "filters.tags")?;
    }
    out.price_min = f
        .price_min
        .as_ref()
        .map(|p| price(p, "filters.price_min"))
        .transpose()?;
    out.price_max = f
        .price_max
        .as_ref()
        .map(|p| price(p, "filters.price_max"))
        .transpose()?;
    out.in_stock = f.in_stock;
    out.categories.sort();
    out.categories.dedup();
    if let (Some(lo), Some(hi)) = (out.price_min, out.price_max)
        && lo > hi
    {
        return Err(invalid(
            "filters.price_max",
            ErrorCode::InvalidFilter,
            "`filters.price_max` must not be below `filters.price_min`",
        ));
    }
    Ok(out)
}

fn plugin_choice(v: Option<String>, field: &str) -> ApiResult<PluginChoice> {
    match v {
        None => Ok(PluginChoice::Active),
        Some(name) if name == "none" => Ok(PluginChoice::Off),
        Some(name) if crate::model::validate_tenant_id(&name).is_ok() => Ok(PluginChoice::Named(name)),
        Some(_) => Err(invalid(
            field,
            ErrorCode::InvalidParameter,
            format!("`{field}` must be a plugin name or \"none\""),
        )),
    }
}

fn bounded_id(v: Option<String>, field: &str) -> ApiResult<Option<String>> {
    match v {
        Some(s) if s.is_empty() || s.chars().count() > MAX_ID_CHARS => Err(invalid(
            field,
            ErrorCode::InvalidParameter,
            format!("`{field}` must be a string of 1 to {MAX_ID_CHARS} characters"),
        )),
        other => Ok(other),
    }
}

/// Checks the options' ranges and turns them into the pipeline's terms.
fn parse_options(o: SearchOptions) -> ApiResult<Options> {
    let limit = o.limit.map_or(Ok(DEFAULT_LIMIT), |n| {
        let n = u64::from(n);
        if (1..=MAX_LIMIT).contains(&n) {
            Ok(n)
        } else {
            Err(invalid(
                "limit",
                ErrorCode::InvalidParameter,
                format!("`limit` must be an integer from 1 to {MAX_LIMIT}"),
            ))
        }
    })?;
    let offset = o.offset.map_or(Ok(0), |n| {
        let n = u64::from(n);
        if n <= MAX_OFFSET {
            Ok(n)
        } else {
            Err(invalid(
                "offset",
                ErrorCode::InvalidParameter,
                format!("`offset` must be an integer from 0 to {MAX_OFFSET}"),
            ))
        }
    })?;
    let min_score = o
        .min_score
        .map(|s| {
            if (-1.0..=MAX_MIN_SCORE).contains(&s) {
                Ok(s as f32)
            } else {
                Err(invalid(
                    "min_score",
                    ErrorCode::InvalidParameter,
                    format!("`min_score` must be a number from -1 to {MAX_MIN_SCORE}"),
                ))
            }
        })
        .transpose()?;
    let weights = o.weights.unwrap_or_default();
    check_weights(&weights, "weights")?;
    let facets = o
        .facets
        .map(|names| facet_spec(names, o.facet_limit, o.price_buckets))
        .transpose()?;
    let plugins = o.plugins.unwrap_or_default();
    Ok(Options {
        filter: o.filters.map(parse_filters).transpose()?.unwrap_or_default(),
        limit: limit as usize,
        offset: offset as usize,
        min_score,
        mode: o.mode.map(mode_of),
        weights,
        fusion: o.fusion.map(fusion_of),
        facets,
        plugins: PluginSelection {
            filter: plugin_choice(plugins.filter, "plugins.filter")?,
            ranker: plugin_choice(plugins.ranker, "plugins.ranker")?,
        },
        user_id: bounded_id(o.user_id, "user_id")?,
        session_id: bounded_id(o.session_id, "session_id")?,
    })
}

fn mode_of(m: SearchModeName) -> SearchMode {
    match m {
        SearchModeName::Hybrid => SearchMode::Hybrid,
        SearchModeName::Vector => SearchMode::Vector,
        SearchModeName::Keyword => SearchMode::Keyword,
    }
}

fn fusion_of(f: FusionName) -> Fusion {
    match f {
        FusionName::Relative => Fusion::Relative,
        FusionName::Rrf => Fusion::Rrf,
    }
}

/// Each weight given is a number from 0 to [`MAX_WEIGHT`].
pub(crate) fn check_weights(w: &SearchWeights, field: &str) -> ApiResult<()> {
    for (name, value) in [("image", w.image), ("text", w.text), ("keyword", w.keyword)] {
        if value.is_some_and(|v| !(0.0..=MAX_WEIGHT).contains(&v)) {
            return Err(invalid(
                &format!("{field}.{name}"),
                ErrorCode::InvalidParameter,
                format!("`{field}.{name}` must be a number from 0 to {MAX_WEIGHT}"),
            ));
        }
    }
    Ok(())
}

/// The facets asked for, once each; the price boundaries sorted, once each.
fn facet_spec(names: Vec<FacetName>, limit: Option<u32>, buckets: Option<Vec<f64>>) -> ApiResult<FacetSpec> {
    let mut fields = Vec::new();
    for n in names {
        let f = match n {
            FacetName::Category => FacetField::Category,
            FacetName::Tags => FacetField::Tags,
            FacetName::InStock => FacetField::InStock,
            FacetName::Price => FacetField::Price,
        };
        if !fields.contains(&f) {
            fields.push(f);
        }
    }
    let limit = limit.unwrap_or(DEFAULT_FACET_LIMIT);
    if !(1..=MAX_FACET_LIMIT).contains(&limit) {
        return Err(invalid(
            "facet_limit",
            ErrorCode::InvalidParameter,
            format!("`facet_limit` must be an integer from 1 to {MAX_FACET_LIMIT}"),
        ));
    }
    let mut price_buckets = buckets.unwrap_or_else(|| DEFAULT_PRICE_BUCKETS.to_vec());
    if price_buckets.len() > MAX_PRICE_BUCKETS || price_buckets.iter().any(|x| !x.is_finite()) {
        return Err(invalid(
            "price_buckets",
            ErrorCode::InvalidParameter,
            format!("`price_buckets` must be at most {MAX_PRICE_BUCKETS} numbers"),
        ));
    }
    price_buckets.sort_by(f64::total_cmp);
    price_buckets.dedup();
    Ok(FacetSpec {
        fields,
        limit: limit as usize,
        price_buckets,
    })
}

/// The mode, weights and fusion in force: the request's, then the
/// tenant's defaults, then the service's (whose weights depend on the
/// query source).
fn resolve(o: &Options, defaults: &SearchDefaults, source: &QuerySource) -> (SearchMode, Weights, Fusion) {
    let service = match source {
        QuerySource::Text(_) => TEXT_WEIGHTS,
        _ => IMAGE_WEIGHTS,
    };
    // A tenant's keyword default is for words: pictures go hybrid.
    let tenant_mode = defaults
        .mode
        .map(mode_of)
        .filter(|m| *m != SearchMode::Keyword || matches!(source, QuerySource::Text(_)));
    let mode = o.mode.or(tenant_mode).unwrap_or(SearchMode::Hybrid);
    let tenant = defaults.weights.unwrap_or_default();
    let pick = |asked: Option<f64>, tenant: Option<f64>, service: f32| {
        asked.or(tenant).map_or(service, |w| w as f32)
    };
    let weights = Weights {
        image: pick(o.weights.image, tenant.image, service.image),
        text: pick(o.weights.text, tenant.text, service.text),
        keyword: pick(o.weights.keyword, tenant.keyword, service.keyword),
    };
    let fusion = o.fusion.or(defaults.fusion.map(fusion_of)).unwrap_or_default();
    (mode, weights, fusion)
}

/// The mode fits the query and the weights leave it a leg (the search
/// service checks the same; this answers a search whose filters let
/// nothing through the same way).
fn check_mode(mode: SearchMode, w: &Weights, source: &QuerySource) -> ApiResult<()> {
    let text = matches!(source, QuerySource::Text(_));
    if mode == SearchMode::Keyword && !text {
        return Err(invalid(
            "mode",
            ErrorCode::InvalidParameter,
            "keyword search needs a `text` query",
        ));
    }
    let keyword = text && w.keyword > 0.0;
    if mode == SearchMode::Hybrid && !keyword && w.text <= 0.0 && w.image <= 0.0 {
        return Err(invalid(
            "weights",
            ErrorCode::InvalidParameter,
            "the weights turn off every leg this query runs",
        ));
    }
    Ok(())
}

fn facets_view(mut f: FacetCounts, spec: &FacetSpec) -> FacetsView {
    let counts = |v: Vec<(String, u64)>| {
        v.into_iter()
            .map(|(value, count)| FacetCount { value, count })
            .collect()
    };
    let mut out = FacetsView::default();
    for field in &spec.fields {
        match field {
            FacetField::Category => out.category = Some(counts(std::mem::take(&mut f.category))),
            FacetField::Tags => out.tags = Some(counts(std::mem::take(&mut f.tags))),
            FacetField::InStock => {
                out.in_stock = Some(
                    f.in_stock
                        .iter()
                        .map(|(value, count)| StockCount {
                            value: *value,
                            count: *count,
                        })
                        .collect(),
                );
            }
            FacetField::Price => {
                out.price = Some(
                    f.price
                        .iter()
                        .map(|b| PriceBucketView {
                            from: b.from,
                            to: b.to,
                            count: b.count,
                        })
                        .collect(),
                );
            }
        }
    }
    out
}

fn media_error(e: MediaError) -> ApiError {
    let code = match &e {
        MediaError::InvalidUrl(_) | MediaError::Forbidden(_) => {
            return invalid("image_url", ErrorCode::InvalidImageUrl, e.to_string());
        }
        MediaError::UnsupportedType(_) => ErrorCode::UnsupportedImage,
        MediaError::TooLarge { .. } | MediaError::TooManyPixels { .. } => ErrorCode::ImageTooLarge,
        MediaError::Corrupt(_) => ErrorCode::InvalidImage,
        _ => ErrorCode::ImageUnreachable,
    };
    ApiError::new(code, e.to_string())
        .with_status(StatusCode::UNPROCESSABLE_ENTITY)
        .with_details(json!({"field": "image_url"}))
}

async fn source_from(state: &AppState, body: &mut SearchRequest) -> ApiResult<QuerySource> {
    let sources = [
        ("text", body.text.take()),
        ("image_url", body.image_url.take()),
        ("image_base64", body.image_base64.take()),
        ("like", body.like.take()),
    ];
    let given: Vec<(&str, String)> = sources
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    if given.len() != 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!(
                "send exactly one query source: `text`, `image_url`, `image_base64` or `like` (got {})",
                if given.is_empty() {
                    "none".to_owned()
                } else {
                    given.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                }
            ),
        )
        .with_details(json!({"field": given.first().map_or("text", |(k, _)| *k)})));
    }
    let Some((key, s)) = given.into_iter().next() else {
        return Err(ApiError::internal());
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
                    ErrorCode::InvalidImageUrl,
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
            ApiError::not_found(ErrorCode::ProductNotFound, format!("there is no product `{id}`"))
                .with_details(json!({"field": "like"}))
        }
        SearchError::ProductNotIndexed(id) => ApiError::new(
            ErrorCode::ProductNotIndexed,
            format!("product `{id}` is not indexed yet, so there is nothing to compare with"),
        )
        .with_details(json!({"field": "like"})),
        SearchError::Busy => ApiError::overloaded(),
        SearchError::KeywordsNotIndexed => {
            let mut err = ApiError::new(
                ErrorCode::ReindexRequired,
                "the index was built before keyword search; keyword search works once a full reindex \
                 (POST /v1/admin/reindex) finishes",
            );
            err.retry_after = Some(30);
            err.with_details(json!({"field": "mode"}))
        }
        SearchError::Invalid { field, message } => invalid(field, ErrorCode::InvalidParameter, message),
        SearchError::Unavailable(what) => ApiError::unavailable(what),
        SearchError::ModelMismatch => {
            let mut err = ApiError::new(
                ErrorCode::ReindexRequired,
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
                ResolveError::WrongWorld { .. } => {
                    invalid(&field, ErrorCode::WrongPluginWorld, e.to_string())
                }
                _ => ApiError::not_found(ErrorCode::PluginNotFound, e.to_string())
                    .with_details(json!({"field": field})),
            }
        }
        SearchError::Internal(why) => {
            tracing::error!(error = %why, "search failed");
            ApiError::internal()
        }
    }
}

/// The f64 an f32 weight was written as (0.1, not 0.10000000149).
fn shortest(w: f32) -> f64 {
    w.to_string().parse().unwrap_or(f64::from(w))
}

/// The mode's name, and for hybrid the weights and fusion that ran.
fn mode_view(
    mode: SearchMode,
    w: Weights,
    fusion: Fusion,
) -> (SearchModeName, Option<SearchWeights>, Option<FusionName>) {
    match mode {
        SearchMode::Hybrid => (
            SearchModeName::Hybrid,
            Some(SearchWeights {
                image: Some(shortest(w.image)),
                text: Some(shortest(w.text)),
                keyword: Some(shortest(w.keyword)),
            }),
            Some(match fusion {
                Fusion::Relative => FusionName::Relative,
                Fusion::Rrf => FusionName::Rrf,
            }),
        ),
        SearchMode::Vector => (SearchModeName::Vector, None, None),
        SearchMode::Keyword => (SearchModeName::Keyword, None, None),
    }
}

fn response(r: SearchOutcome, spec: Option<&FacetSpec>, weights: Weights, fusion: Fusion) -> SearchResponse {
    let (mode, weights, fusion) = mode_view(r.mode, weights, fusion);
    SearchResponse {
        mode,
        weights,
        fusion,
        facets: match (r.facets, spec) {
            (Some(f), Some(spec)) => Some(facets_view(f, spec)),
            _ => None,
        },
        hits: r
            .hits
            .iter()
            .map(|h| SearchHit {
                product: h.product.view(),
                score: h.score,
            })
            .collect(),
        took_ms: (r.took_ms * 1000.0).round() / 1000.0,
        query_type: r.query_type.to_string(),
        plugins: plugin_reports(&r.plugins),
    }
}

/// What each plugin did.
pub fn plugin_reports(reports: &[PluginRun]) -> PluginReports {
    let mut out = PluginReports::default();
    for r in reports {
        let entry = PluginReport {
            name: r.name.clone(),
            version: r.version,
            outcome: if r.error.is_none() { "ok" } else { "fallback" }.to_owned(),
            elapsed_ms: (r.elapsed_ms * 1000.0).round() / 1000.0,
            // A fixed sentence: what the guest wrote goes to the log only.
            error: r.error.as_ref().map(|e| e.public_message().to_owned()),
            error_kind: r.error.as_ref().map(|e| e.kind().to_owned()),
        };
        match r.world {
            World::Filter => out.filter = Some(entry),
            World::Ranker => out.ranker = Some(entry),
            World::Ingest => {}
        }
    }
    out
}

/// What identifies a search's answer besides the tenant's generation: the
/// query source (`None`: an `image_url`, whose bytes may change under the
/// same URL, gets no ETag) and the options in force.
fn fingerprint(
    source: Option<String>,
    o: &Options,
    (mode, weights, fusion): (SearchMode, Weights, Fusion),
) -> Option<String> {
    source.map(|s| {
        format!(
            "{s}|{:?}|{:?}|{}|{}|{:?}|{mode:?}|{weights:?}|{fusion:?}|{:?}",
            o.filter,
            o.plugins,
            o.limit,
            o.offset,
            o.min_score.map(f32::to_bits),
            o.facets,
        )
    })
}

/// Checks the caller may search `tenant` and that it exists; a search
/// token's grant comes back.
async fn authorize_search(
    state: &AppState,
    principal: &Principal,
    tenant: &str,
) -> ApiResult<Option<SearchGrant>> {
    let grant = principal.require_search(tenant)?.cloned();
    super::tenants::tenant_exists(state, tenant).await?;
    Ok(grant)
}

/// A token with forced filters may start "more like this" only from a
/// product those filters let through: another is answered as absent, so
/// the token learns nothing of the products it cannot see.
async fn check_like(
    state: &AppState,
    tenant: &str,
    grant: Option<&SearchGrant>,
    source: &QuerySource,
) -> ApiResult<()> {
    let (Some(grant), QuerySource::Like(id)) = (grant.filter(|g| g.filter.is_some()), source) else {
        return Ok(());
    };
    let visible = state
        .catalog
        .get_product(tenant, id)
        .await?
        .is_some_and(|p| grant.shows(&p));
    if visible {
        Ok(())
    } else {
        Err(search_error(SearchError::ProductNotFound(id.clone())))
    }
}

/// A search token's terms over the request's: its forced filters on top
/// of the request's, and only the plugins it allows. `false`: the two
/// filters together let nothing through.
fn apply_grant(grant: Option<&SearchGrant>, o: &mut Options) -> ApiResult<bool> {
    let Some(g) = grant else { return Ok(true) };
    g.allow_plugin(&o.plugins.filter, "plugins.filter")?;
    g.allow_plugin(&o.plugins.ranker, "plugins.ranker")?;
    if let Some(forced) = &g.filter {
        match o.filter.intersect(forced) {
            Some(f) => o.filter = f,
            None => return Ok(false),
        }
    }
    Ok(true)
}

async fn run(
    state: &AppState,
    tenant: String,
    source: QuerySource,
    mut o: Options,
    grant: Option<&SearchGrant>,
    source_key: Option<String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    check_like(state, &tenant, grant, &source).await?;
    let defaults = state.policies.get(&*state.catalog, &tenant).await?;
    let resolved = resolve(&o, &defaults.search, &source);
    let (mode, weights, fusion) = resolved;
    check_mode(mode, &weights, &source)?;
    if !apply_grant(grant, &mut o)? {
        let shown = mode_view(mode, weights, fusion);
        // The token's filters and the request's exclude each other.
        return Ok(Json(SearchResponse {
            hits: Vec::new(),
            took_ms: 0.0,
            query_type: source.kind().to_owned(),
            mode: shown.0,
            weights: shown.1,
            fusion: shown.2,
            facets: o.facets.as_ref().map(|spec| {
                let none = FacetQuery {
                    fields: spec.fields.clone(),
                    limit: spec.limit,
                    price_buckets: spec.price_buckets.clone(),
                    ..FacetQuery::default()
                };
                facets_view(none.count_over(std::iter::empty()), spec)
            }),
            plugins: PluginReports::default(),
        })
        .into_response());
    }
    // A tagged search reads the generation for its tag, and the search
    // runs under that same generation (no second read).
    let tagged = match fingerprint(source_key, &o, resolved) {
        Some(key) => Some((key, state.catalog.tenant_generation(&tenant).await?)),
        None => None,
    };
    let generation = tagged.as_ref().map(|(_, g)| *g);
    let search = async {
        let response = state
            .search
            .search(crate::search::SearchRequest {
                tenant: tenant.clone(),
                source,
                mode,
                weights,
                fusion,
                facets: o.facets.clone(),
                filter: o.filter.clone(),
                limit: o.limit,
                offset: o.offset,
                min_score: o.min_score,
                plugins: o.plugins.clone(),
                user_id: o.user_id.clone(),
                session_id: o.session_id.clone(),
                generation,
            })
            .await
            .map_err(search_error)?;
        Ok(Json(self::response(response, o.facets.as_ref(), weights, fusion)))
    };
    match tagged {
        Some((key, generation)) => {
            let etag = caching::etag_at(state, &tenant, generation, &[b"search", key.as_bytes()]);
            caching::conditional(headers, &etag, search).await
        }
        None => Ok(search.await?.into_response()),
    }
}

/// `POST /v1/tenants/{t}/search`.
#[utoipa::path(
    post, path = "/v1/tenants/{t}/search", operation_id = "search", summary = "Search by text, image (URL or base64) or similar product", tag = "search",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")), request_body = SearchRequest,
    responses((status = 200, description = "Hits, best first", body = SearchResponse),
        (status = 409, description = "`like` names a product not indexed yet", body = ErrorBody),
        (status = 422, description = "The image cannot be used", body = ErrorBody)),
    security(("bearer" = ["search"]))
)]
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    headers: HeaderMap,
    Body(mut body): Body<SearchRequest>,
) -> ApiResult<Response> {
    let grant = authorize_search(&state, &principal, &tenant).await?;
    let options = parse_options(body.options())?;
    let source_key = match (&body.text, &body.like, &body.image_base64) {
        (Some(t), _, _) => Some(format!("text:{t}")),
        (_, Some(id), _) => Some(format!("like:{id}")),
        (_, _, Some(b64)) => Some(format!("image:{}", hex_sha256(b64.as_bytes()))),
        _ => None,
    };
    let source = source_from(&state, &mut body).await?;
    run(
        &state,
        tenant,
        source,
        options,
        grant.as_ref(),
        source_key,
        &headers,
    )
    .await
}

/// `POST /v1/tenants/{t}/search/image`: multipart with an `image` part and
/// an optional `params` part holding the JSON options.
#[utoipa::path(
    post, path = "/v1/tenants/{t}/search/image", operation_id = "search_image", summary = "Search by an uploaded image (multipart)", tag = "search",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")),
    request_body(content = ImageSearchForm, content_type = "multipart/form-data"),
    responses((status = 200, description = "Hits, best first", body = SearchResponse),
        (status = 422, description = "The image cannot be used", body = ErrorBody)),
    security(("bearer" = ["search"]))
)]
pub async fn search_image(
    State(state): State<AppState>,
    principal: Principal,
    TenantPath(tenant): TenantPath,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Response> {
    let grant = authorize_search(&state, &principal, &tenant).await?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("expected a multipart/form-data body: {e}"),
        )
    })?;
    let (mut image, mut params) = (None, None);
    loop {
        let field = multipart
            .next_field()
            .await
            .map_err(|e| ApiError::new(ErrorCode::InvalidBody, format!("unreadable multipart body: {e}")))?;
        let Some(field) = field else { break };
        let name = field.name().unwrap_or_default().to_owned();
        let bytes = field.bytes().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "the image is larger than allowed")
            } else {
                ApiError::new(ErrorCode::InvalidBody, format!("unreadable multipart part: {e}"))
            }
        })?;
        match name.as_str() {
            "image" if image.is_none() => image = Some(bytes),
            "params" if params.is_none() => params = Some(bytes),
            "image" | "params" => {
                return Err(invalid(
                    &name,
                    ErrorCode::DuplicatePart,
                    format!("part `{name}` is given more than once"),
                ));
            }
            other => {
                return Err(invalid(
                    other,
                    ErrorCode::UnknownField,
                    format!("unknown part `{other}`; send `image` and optionally `params`"),
                ));
            }
        }
    }
    let image =
        image.ok_or_else(|| invalid("image", ErrorCode::MissingField, "the `image` part is required"))?;
    let options = match params {
        None => SearchOptions::default(),
        Some(p) => {
            let tree = json_object(&p, "params")?;
            typed::<SearchOptions>(tree, "params")?
        }
    };
    let options = parse_options(options)?;
    let source_key = Some(format!("image:{}", hex_sha256(&image)));
    let source = QuerySource::Image {
        image: decode_image_bytes(&state.limits, image.to_vec(), "image").await?,
        url: None,
    };
    run(
        &state,
        tenant,
        source,
        options,
        grant.as_ref(),
        source_key,
        &headers,
    )
    .await
}
