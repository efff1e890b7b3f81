//! The API's request and response bodies (API.md), one definition shared by
//! the server, the CLI and the tests. Requests refuse unknown fields;
//! `/openapi.json` is generated from these types (`api::doc`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::error::ErrorCode;
use super::extract::RequestBody;
use crate::model::{Price, ProductView};

// ---------------------------------------------------------------- errors

/// Every error answer: `{"error": {"code", "message", "details"?}}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": {"code": "missing_field", "message": "`title`: this field is required",
    "details": {"field": "title"}}}))]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorObject {
    pub code: ErrorCode,
    /// For a person; never holds internals.
    pub message: String,
    /// `field` names the offending field (a path such as `filters.tags.0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

// ---------------------------------------------------------------- tenants

/// `POST /v1/tenants`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "shop", "name": "The Shop"}))]
pub struct CreateTenant {
    /// `[a-z0-9][a-z0-9_-]{0,62}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub id: String,
    /// 1 to 200 printable characters, not all blank; defaults to the id.
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: Option<String>,
}
impl RequestBody for CreateTenant {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// The limits each of the tenant's keys gets on this node (the
    /// tenant's own, or the service defaults). Only on a single tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limits: Option<EffectiveRateLimits>,
    /// Only on a single tenant; an absent limit is no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quotas: Option<Quotas>,
    /// What the tenant holds, against `quotas`. Only on a single tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TenantUsage>,
    /// The tenant's search defaults (absent parts: the service's). Only
    /// on a single tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<SearchDefaults>,
}

/// `hybrid` (every leg the query has, fused), `vector` (the image vector
/// alone) or `keyword` (BM25 alone; text queries only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchModeName {
    Hybrid,
    Vector,
    Keyword,
}

/// How hybrid legs merge: `relative` (weighted sum of each leg's scores
/// scaled to [0, 1], the default) or `rrf` (weighted reciprocal rank
/// fusion, k = 60).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FusionName {
    Relative,
    Rrf,
}

/// Weight of each leg of a hybrid search, 0 to 100 (0 turns a leg off);
/// an absent one is the tenant's default, then the service's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"image": 0.2, "text": 0.3, "keyword": 1.0}))]
pub struct SearchWeights {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 100.0)]
    pub image: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 100.0)]
    pub text: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0, maximum = 100.0)]
    pub keyword: Option<f64>,
}

/// A tenant's search defaults, used where a search request says nothing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"mode": "hybrid", "weights": {"keyword": 2.0}}))]
pub struct SearchDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SearchModeName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<SearchWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionName>,
}

impl SearchDefaults {
    pub fn is_empty(&self) -> bool {
        *self == SearchDefaults::default()
    }
}

/// A field facets can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FacetName {
    Category,
    Tags,
    InStock,
    Price,
}

/// Facet counts over every product that passes the search's filters
/// (including a search token's), in every mode; only the asked fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct FacetsView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<Vec<FacetCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<FacetCount>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<Vec<StockCount>>,
    /// Every bucket of `price_buckets`, in order, zero counts included;
    /// products without a price are in none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Vec<PriceBucketView>>,
}

/// A value and how many products have it (most frequent first, ties by value).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct FacetCount {
    pub value: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StockCount {
    pub value: bool,
    pub count: u64,
}

/// Products priced in `[from, to)`; an absent bound is open.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceBucketView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<f64>,
    pub count: u64,
}

/// A token bucket: `per_second` requests per second on average, and up to
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"per_second": 20.0, "burst": 40}))]
pub struct Bucket {
    /// Above 0, at most 1,000,000.
    #[schema(exclusive_minimum = 0.0, maximum = 1_000_000.0)]
    pub per_second: f64,
    /// 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub burst: u32,
}

/// A tenant's own per-key limits; an absent one is the service default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRateLimits {
    /// Searches, embeds and reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub search: Option<Bucket>,
    /// Everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write: Option<Bucket>,
}

/// The per-key limits in force for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EffectiveRateLimits {
    pub search: Bucket,
    pub write: Bucket,
}

/// What a tenant may hold; an absent limit is no limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quotas {
    /// 0 to 10^15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)]
    pub max_products: Option<u64>,
    /// Stored plugin versions, of every plugin; 0 to 10^15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)]
    pub max_plugin_versions: Option<u64>,
    /// Bytes of every stored plugin version together; 0 to 10^15.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_u64)]
    pub max_plugin_bytes: Option<u64>,
}

/// The largest quota value.
pub const MAX_QUOTA: u64 = 1_000_000_000_000_000;

/// What a tenant holds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantUsage {
    pub products: u64,
    pub plugin_versions: u64,
    pub plugin_bytes: u64,
}

/// What the admin set on a tenant, as stored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimits {
    #[serde(default)]
    pub rate_limits: TenantRateLimits,
    #[serde(default)]
    pub quotas: Quotas,
    /// Left out when empty, so a tenant without search defaults stores
    /// what the previous version reads.
    #[serde(default, skip_serializing_if = "SearchDefaults::is_empty")]
    pub search: SearchDefaults,
}

/// `PATCH /v1/tenants/{t}` (admin): each field given replaces the
/// tenant's current one; `{}` returns it to the defaults (no quota).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"rate_limits": {"search": {"per_second": 200.0, "burst": 400}}, "quotas": {"max_products": 100000}}))]
pub struct TenantPatch {
    #[serde(default)]
    pub rate_limits: Option<TenantRateLimits>,
    #[serde(default)]
    pub quotas: Option<Quotas>,
    /// The search defaults: mode, weights, fusion.
    #[serde(default)]
    pub search: Option<SearchDefaults>,
}
impl RequestBody for TenantPatch {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

/// `POST /v1/tenants/{t}/keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"scopes": ["search"], "label": "storefront"}))]
pub struct CreateKey {
    /// A non-empty list drawn from `search`, `write`, `plugins`, `admin`.
    #[schema(min_items = 1, value_type = Vec<KeyScope>)]
    pub scopes: Vec<String>,
    /// At most 200 printable characters.
    #[serde(default)]
    #[schema(max_length = 200, pattern = r"^[^\x00-\x1f\x7f-\x9f]*$")]
    pub label: Option<String>,
}
impl RequestBody for CreateKey {
    fn field_code(field: &str, _kind: ErrorCode) -> Option<ErrorCode> {
        (field == "scopes").then_some(ErrorCode::InvalidScopes)
    }
}

/// What a key may do (documentation of `scopes`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    Search,
    Write,
    Plugins,
    Admin,
}

/// A new key: `key` is shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyCreated {
    pub id: String,
    pub key: String,
    pub scopes: Vec<String>,
    pub label: Option<String>,
    pub tenant: String,
    pub created_at: String,
}

// ---------------------------------------------------------------- products

/// A warning about an ingest plugin that failed: the product was stored
/// as sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct IngestWarning {
    pub plugin: String,
    pub version: i64,
    pub world: String,
    pub outcome: String,
    pub message: String,
    /// The item of a batch it is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<usize>,
}

/// A product written (create, PUT, PATCH, image upload).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductWritten {
    pub product: ProductView,
    /// The index job, when the change needs one.
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<IngestWarning>>,
}

/// `POST /v1/tenants/{t}/products/batch`: each item is checked on its own.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1 to 1,000 product documents.
    #[schema(value_type = Vec<crate::model::ProductDocument>, max_items = 1000)]
    pub products: Vec<serde_value::Value>,
}
impl RequestBody for BatchRequest {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BatchResult {
    /// The index job of the accepted products (none when none was).
    pub job_id: Option<String>,
    pub accepted: usize,
    pub rejected: Vec<RejectedItem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<IngestWarning>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RejectedItem {
    pub index: usize,
    pub error: ErrorObject,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProductPage {
    pub products: Vec<ProductView>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// An RFC 7396 merge patch of a product document: `null` removes an
/// optional field, `metadata` merges key by key.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = crate::model::ProductDocument)]
pub struct ProductPatch(pub Map<String, Value>);
impl RequestBody for ProductPatch {}

// ---------------------------------------------------------------- search

/// `POST /v1/tenants/{t}/search`: exactly one of `text`, `image_url`,
/// `image_base64`, `like`, and the options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "red leather ankle boots", "limit": 10,
    "filters": {"category": "shoes", "price_max": 120, "in_stock": true}}))]
pub struct SearchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 4096)]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 2048)]
    pub image_url: Option<String>,
    /// An image as base64 (a `data:image/...;base64,` prefix is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
    /// The external id of a product to find similar ones to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub like: Option<String>,
    // The options, as in [`SearchOptions`] (serde cannot refuse unknown
    // fields through `flatten`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<SearchFilters>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub offset: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1.0, maximum = 1000000.0)]
    pub min_score: Option<f64>,
    /// `hybrid` (default, unless the tenant says otherwise), `vector` or `keyword`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SearchModeName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<SearchWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionName>,
    /// Facet counts to return beside the hits (each field once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 4)]
    pub facets: Option<Vec<FacetName>>,
    /// Values per `category` and `tags` facet: 1 to 100; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub facet_limit: Option<u32>,
    /// Boundaries of the price facet's buckets, at most 20 (sorted and
    /// taken once each): `[25, 50]` counts `< 25`, `[25, 50)` and `>= 50`.
    /// Default `[10, 25, 50, 100, 250, 500, 1000]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub price_buckets: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<PluginChoices>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub session_id: Option<String>,
}

impl SearchRequest {
    /// The options, without the query source.
    pub fn options(&mut self) -> SearchOptions {
        SearchOptions {
            filters: self.filters.take(),
            limit: self.limit,
            offset: self.offset,
            min_score: self.min_score,
            mode: self.mode,
            weights: self.weights,
            fusion: self.fusion,
            facets: self.facets.take(),
            facet_limit: self.facet_limit,
            price_buckets: self.price_buckets.take(),
            plugins: self.plugins.take(),
            user_id: self.user_id.take(),
            session_id: self.session_id.take(),
        }
    }
}
impl RequestBody for SearchRequest {
    fn field_code(field: &str, kind: ErrorCode) -> Option<ErrorCode> {
        search_field_code(field, kind).or(match field {
            "text" | "image_url" | "image_base64" | "like" => Some(ErrorCode::InvalidQuery),
            _ => None,
        })
    }
}

fn search_field_code(field: &str, kind: ErrorCode) -> Option<ErrorCode> {
    match field {
        "filters" if kind != ErrorCode::UnknownField => Some(ErrorCode::InvalidFilter),
        "limit" | "offset" | "min_score" | "user_id" | "session_id" | "facet_limit" => {
            Some(ErrorCode::InvalidParameter)
        }
        "mode" | "weights" | "fusion" | "facets" | "price_buckets" if kind != ErrorCode::UnknownField => {
            Some(ErrorCode::InvalidParameter)
        }
        "plugins" if kind != ErrorCode::UnknownField => Some(ErrorCode::InvalidParameter),
        _ => None,
    }
}

/// The options of every search (also the `params` part of an image search).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchOptions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<SearchFilters>,
    /// 1 to 100; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// 0 to 1,000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 1000)]
    pub offset: Option<u32>,
    /// Keep hits scoring above this, on the score they are returned with:
    /// cosine (-1 to 1) in `vector` mode, the fused score (0 to 1) in
    /// `hybrid`, BM25 (0 and up) in `keyword`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = -1.0, maximum = 1000000.0)]
    pub min_score: Option<f64>,
    /// `hybrid` (default, unless the tenant says otherwise), `vector` or `keyword`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SearchModeName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<SearchWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionName>,
    /// Facet counts to return beside the hits (each field once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 4)]
    pub facets: Option<Vec<FacetName>>,
    /// Values per `category` and `tags` facet: 1 to 100; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 100)]
    pub facet_limit: Option<u32>,
    /// Boundaries of the price facet's buckets, at most 20 (sorted and
    /// taken once each): `[25, 50]` counts `< 25`, `[25, 50)` and `>= 50`.
    /// Default `[10, 25, 50, 100, 250, 500, 1000]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 20)]
    pub price_buckets: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<PluginChoices>,
    /// For the search log: 1 to 256 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub session_id: Option<String>,
}
impl RequestBody for SearchOptions {
    fn field_code(field: &str, kind: ErrorCode) -> Option<ErrorCode> {
        search_field_code(field, kind)
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFilters {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1)]
    pub category: Option<String>,
    /// Any of these categories (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub categories: Option<Vec<String>>,
    /// Every one of these tags (at most 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 100)]
    pub tags: Option<Vec<String>>,
    /// A price ≥ 0, as a number or a decimal string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_min: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_max: Option<Price>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_stock: Option<bool>,
}

/// Which filter and ranker plugins run: a plugin name, `"none"`, or null
/// (the tenant's active one, the default).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginChoices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub ranker: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    pub took_ms: f64,
    /// `text`, `image` or `like`.
    pub query_type: String,
    /// The mode that ran: `hybrid` asked of an index built before hybrid
    /// search (until its reindex) runs as `vector`.
    pub mode: SearchModeName,
    /// The weights of a hybrid search's legs (the request's, the tenant's
    /// or the service's) and its fusion; absent in other modes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<SearchWeights>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fusion: Option<FusionName>,
    /// When the request asked for facets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub facets: Option<FacetsView>,
    pub plugins: PluginReports,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SearchHit {
    pub product: ProductView,
    pub score: f32,
}

/// What each plugin did in a search.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct PluginReports {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<PluginReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranker: Option<PluginReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PluginReport {
    pub name: String,
    pub version: i64,
    /// `ok`, or `fallback` when the plugin failed and the search went on
    /// without it.
    pub outcome: String,
    pub elapsed_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
}

/// The `multipart/form-data` body of `POST /v1/tenants/{t}/search/image`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ImageSearchForm {
    /// The query image (JPEG, PNG, WebP or GIF).
    #[schema(value_type = String, format = Binary)]
    image: Vec<u8>,
    /// The options as JSON.
    params: Option<SearchOptions>,
}

// ---------------------------------------------------------------- embed

/// `POST /v1/embed`: exactly one of `text` and `image_base64`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"text": "red leather ankle boots"}))]
pub struct EmbedRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 4096)]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_base64: Option<String>,
}
impl RequestBody for EmbedRequest {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Embedding {
    pub model: String,
    pub dims: usize,
    pub vector: Vec<f32>,
}

// ---------------------------------------------------------------- jobs and admin

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// `index_product`, `reindex_all`, ...
    pub kind: String,
    /// Null for a job over every tenant.
    pub tenant: Option<String>,
    /// `queued`, `running`, `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub progress: JobProgress,
    pub last_error: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub run_after: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
pub struct JobProgress {
    pub done: i64,
    pub total: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
}

/// `POST /v1/admin/reindex`: every tenant, or one. The body may be left
/// out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReindexRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub tenant: Option<String>,
}
impl RequestBody for ReindexRequest {}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobAccepted {
    pub job_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VectorsView {
    /// `qdrant-edge` or `qdrant`.
    pub backend: String,
    pub dims: usize,
    pub tenant: Option<String>,
    pub count: u64,
}

// ---------------------------------------------------------------- analytics

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryStats {
    /// `top` or `zero_results`.
    pub kind: String,
    pub since: String,
    pub queries: Vec<QueryStat>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QueryStat {
    pub query_text: String,
    pub count: i64,
    pub avg_results: f64,
    pub p95_ms: f64,
}

// ---------------------------------------------------------------- plugins

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PluginVersionView {
    pub name: String,
    pub version: i64,
    /// SHA-256 of the component.
    pub digest: String,
    /// `filter`, `ranker` or `ingest`.
    pub world: String,
    pub active: bool,
    pub size_bytes: i64,
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    pub memory_mb: Option<i64>,
    pub created_at: String,
    pub activated_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PluginView {
    pub name: String,
    pub world: String,
    pub active_version: Option<i64>,
    pub latest_version: Option<i64>,
    pub versions: Vec<PluginVersionView>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PluginList {
    pub plugins: Vec<PluginView>,
}

/// `POST /v1/tenants/{t}/plugins/{name}/activate`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"version": 1, "params": {"reject_words": "replica"}}))]
pub struct ActivateRequest {
    #[schema(minimum = 1)]
    pub version: i64,
    /// Up to 64 parameters handed to the plugin as strings: names of 1 to
    /// 64 characters, values (strings, numbers, booleans) of at most 1,024.
    #[serde(default)]
    #[schema(schema_with = plugin_params_schema)]
    pub params: Option<std::collections::BTreeMap<String, ParamValue>>,
    /// The plugin's memory limit in MiB, at most `plugins.max_memory_mb`
    /// (256 unless the operator changed it).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 256)]
    pub memory_mb: Option<i64>,
}
impl RequestBody for ActivateRequest {
    fn field_code(field: &str, kind: ErrorCode) -> Option<ErrorCode> {
        (kind != ErrorCode::MissingField && kind != ErrorCode::UnknownField && field != "body")
            .then_some(ErrorCode::InvalidParameter)
    }
}

/// `params`: up to 64 names of 1 to 64 characters, each with a string (at
/// most 1,024 characters), a number or a boolean.
fn plugin_params_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let value = OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(1024)),
        )
        .item(ObjectBuilder::new().schema_type(Type::Number))
        .item(ObjectBuilder::new().schema_type(Type::Boolean));
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            Type::Object,
            Type::Null,
        ]))
        .max_properties(Some(64))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(64)),
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(
            utoipa::openapi::schema::Schema::OneOf(value.build()).into(),
        )))
        .build()
}

/// A plugin parameter as sent: a string, number or boolean, which the
/// plugin receives as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ParamValue(pub String);

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string, a number or a boolean")
            }
            fn visit_str<E>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_owned()))
            }
            fn visit_bool<E>(self, v: bool) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<ParamValue, E> {
                Ok(ParamValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

// ---------------------------------------------------------------- query strings

/// `GET /v1/tenants/{t}/products`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListProductsQuery {
    /// Only this category.
    pub category: Option<String>,
    /// 1 to 1,000; default 50.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// `GET /v1/tenants/{t}/jobs`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// Only jobs in this state.
    pub status: Option<crate::store::JobStatus>,
    /// 1 to 500; default 50.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// `GET /v1/tenants/{t}/analytics/queries`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueryStatsQuery {
    /// `top` (the default) or `zero_results`.
    pub kind: Option<crate::store::QueryStatsKind>,
    /// RFC 3339; default 7 days ago.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// `GET /v1/tenants/{t}/products/{id}/image`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ImageQuery {
    /// A thumbnail's longest edge; the original without it.
    #[param(value_type = Option<ThumbnailEdge>)]
    pub size: Option<u32>,
}

/// `PUT /v1/tenants/{t}/plugins/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadPluginQuery {
    /// The world the component implements.
    pub world: crate::plugins::World,
}

/// `GET /v1/admin/vectors`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VectorsQuery {
    /// Count one tenant's vectors.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub tenant: Option<String>,
}

/// The longest edge of a thumbnail, in pixels.
pub struct ThumbnailEdge;

impl utoipa::PartialSchema for ThumbnailEdge {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Integer)
            .enum_values(Some(super::images::THUMBNAIL_EDGES))
            .into()
    }
}

impl ToSchema for ThumbnailEdge {}

// ---------------------------------------------------------------- health

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Live {
    /// Always `ok`.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Ready {
    /// `ready`.
    pub status: String,
    /// Each part (`catalog`, `vectors`, `encoder`) and `ok` or
    /// `unavailable`.
    pub checks: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dependencies {
    /// By name: `catalog`, `vectors`, `encoder`.
    pub dependencies: std::collections::BTreeMap<String, Dependency>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Dependency {
    /// `ok` or `unavailable`.
    pub status: String,
    pub backend: String,
    pub latency_ms: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// On an edge, the `replica` entry: where the replica stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaView>,
}

/// Where an edge's replica stands against its origin.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplicaView {
    /// The bootstrap has finished; the edge follows the feed.
    pub bootstrapped: bool,
    /// Products the bootstrap has applied.
    pub bootstrap_products: u64,
    /// Products the origin had when the bootstrap started.
    pub bootstrap_total: u64,
    /// Seconds the bootstrap took (when this process ran all of it).
    pub bootstrap_secs: Option<f64>,
    /// Every change up to this sequence is applied.
    pub applied_seq: i64,
    /// The origin's latest sequence as last seen.
    pub head_seq: i64,
    pub lag_sequences: i64,
    /// Seconds since the edge last knew it held the origin's state; null:
    /// never yet.
    pub staleness_secs: Option<f64>,
    pub max_staleness_secs: u64,
    pub origin_reachable: bool,
}

// ---------------------------------------------------------------- replication

/// The version of the replication protocol (API.md "Replication"); a
/// follower refuses pages of another.
pub const REPLICATION_PROTOCOL: u32 = 1;

/// `GET /v1/replication/feed`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeedQuery {
    /// Changes after this sequence number (the last one applied).
    #[param(minimum = 0)]
    pub after: i64,
    /// At most this many changes (1 to 1,000; default 500).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// With nothing after `after`, wait up to this long for a change
    /// (milliseconds, at most 10,000; default 0: answer at once).
    #[param(minimum = 0, maximum = 10000)]
    pub wait_ms: Option<u64>,
    /// Only these tenants (comma-separated ids); every tenant when absent.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}(,[a-z0-9][a-z0-9_-]{0,62}){0,999}$")]
    pub tenants: Option<String>,
}

/// `GET /v1/replication/snapshot`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotQuery {
    /// The `next` of the previous page; absent for the first page.
    #[param(pattern = "^[0-9]{1,19}\\.[0-9]{1,19}$")]
    pub cursor: Option<String>,
    /// Products per page (1 to 2,000; default 500).
    #[param(minimum = 1, maximum = 2000)]
    pub limit: Option<u32>,
    /// Only these tenants (comma-separated ids); every tenant when absent.
    #[param(pattern = "^[a-z0-9][a-z0-9_-]{0,62}(,[a-z0-9][a-z0-9_-]{0,62}){0,999}$")]
    pub tenants: Option<String>,
}

/// What an entity of the feed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKindName {
    Tenant,
    Key,
    Product,
    Plugin,
}

/// A tenant as a replica keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaTenant {
    pub id: String,
    pub name: String,
    pub created_at: String,
    /// Rate limits, quotas and search defaults, as `GET /v1/tenants/{t}` shows them.
    #[schema(value_type = Object)]
    pub limits: Value,
}

/// An API key as a replica keeps it: the SHA-256 of its secret, never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaKey {
    pub id: String,
    pub tenant: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub label: Option<String>,
    pub created_at: String,
}

/// A product's stored vectors: little-endian f32, base64 (standard alphabet).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaVectors {
    pub image: String,
    pub text: Option<String>,
}

/// A product with everything search and hydration need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaProduct {
    pub tenant: String,
    #[serde(flatten)]
    pub view: ProductView,
    pub version: i64,
    pub image_key: Option<String>,
    /// The vectors the origin searches this product by; present while the
    /// product is indexed.
    pub vectors: Option<ReplicaVectors>,
}

/// One version of a tenant's plugin, as a replica keeps it; the component
/// is fetched by digest (`GET /v1/replication/plugins/{t}/{digest}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaPluginVersion {
    pub version: i64,
    pub world: crate::plugins::World,
    pub digest: String,
    pub size_bytes: i64,
    pub active: bool,
    #[schema(value_type = Object)]
    pub params: Map<String, Value>,
    pub memory_mb: Option<i64>,
    pub created_at: String,
    pub activated_at: Option<String>,
}

/// Every version of one plugin (none: the plugin was removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaPlugin {
    pub tenant: String,
    pub name: String,
    pub versions: Vec<ReplicaPluginVersion>,
}

/// One change: the entity's state when the origin served it. The field of
/// its kind is null when the entity no longer exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ChangeEntry {
    pub seq: i64,
    pub kind: ChangeKindName,
    pub tenant: String,
    /// The tenant id, key id, product external id or plugin name.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_record: Option<ReplicaTenant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<ReplicaKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<Box<ReplicaProduct>>,
    /// A plugin change: every version the plugin has now (empty: removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<ReplicaPlugin>,
}

/// A page of the change feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FeedPage {
    pub protocol: u32,
    /// The highest sequence number at the origin.
    pub head: i64,
    /// Every change up to here is covered by this page: ask `after=last` next.
    pub last: i64,
    /// The index generation the vectors in this page come from; when it
    /// changes, a follower rebuilds its index from the snapshot.
    pub generation: crate::store::replica::IndexGeneration,
    /// The latest change of each entity changed in `(after, last]`, in
    /// sequence order.
    pub changes: Vec<ChangeEntry>,
}

/// A page of the bootstrap snapshot: tenants and keys come on the first
/// page, products by catalog order on every page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnapshotPage {
    pub protocol: u32,
    /// Follow the feed after this sequence once the last page is applied.
    pub seq: i64,
    /// The cursor of the next page; null on the last.
    pub next: Option<String>,
    /// Products in the snapshot's tenants when it started (first page
    /// only): what a bootstrap's progress is measured against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// The index generation the vectors come from (the same on every page
    /// of one snapshot, or the snapshot must start over).
    pub generation: crate::store::replica::IndexGeneration,
    pub tenants: Vec<ReplicaTenant>,
    pub keys: Vec<ReplicaKey>,
    pub plugins: Vec<ReplicaPlugin>,
    pub products: Vec<ReplicaProduct>,
}

/// `POST /v1/replication/search-logs`: an edge hands over the search logs it
/// recorded. `seq` is the edge's own increasing number for each log; the
/// origin stores each `(edge, seq)` once, however often a batch is sent.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeLogs {
    /// The edge's id (kept in its data directory).
    #[schema(pattern = "^[A-Za-z0-9-]{1,64}$")]
    pub edge: String,
    /// At most 1,000, in increasing `seq` order.
    #[schema(max_items = 1000)]
    pub logs: Vec<EdgeLog>,
}

impl RequestBody for EdgeLogs {}

/// One search recorded at an edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeLog {
    #[schema(minimum = 1)]
    pub seq: i64,
    #[schema(pattern = "^[a-z0-9][a-z0-9_-]{0,62}$")]
    pub tenant: String,
    /// `text`, `image` or `like`.
    #[schema(pattern = "^(text|image|like)$")]
    pub query_type: String,
    #[schema(max_length = 4096)]
    pub query_text: Option<String>,
    #[schema(max_length = 4096)]
    pub query_image_url: Option<String>,
    #[schema(minimum = 0)]
    pub results_count: i32,
    #[schema(minimum = 0)]
    pub execution_time_ms: f64,
    #[schema(max_length = 4096)]
    pub user_id: Option<String>,
    #[schema(max_length = 4096)]
    pub session_id: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// The edge may drop its logs up to `last_seq`: the origin has them.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeLogsAccepted {
    pub last_seq: i64,
}
