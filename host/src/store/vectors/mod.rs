//! Vector-store layer for Vitrine's product search.
//!
//! [`VectorIndex`] is the backend-agnostic interface the service talks to;
//! [`EdgeIndex`] implements it on top of the embedded `qdrant-edge` engine.
//! A future server backend (qdrant-client) must pass the same contract suite
//! ([`contract`]).
//!
//! Collection semantics (shared by every backend):
//! * one collection, [`COLLECTION`], dimension fixed at open, cosine distance;
//! * three representations per point ([`Layout::Hybrid`]): the named dense
//!   vectors [`V_IMAGE`] (the image's CLIP embedding, or the text's for a
//!   product without an image) and [`V_TEXT`] (the CLIP embedding of the
//!   product's text), and the sparse vector [`V_KEYWORDS`] (BM25 term
//!   weights from [`keywords`], with the engine's IDF modifier). An index
//!   built before them ([`Layout::Single`]) holds one unnamed vector and
//!   serves vector search until a full reindex rebuilds it;
//! * every point carries `tenant`, `product_id`, `category`, `price`,
//!   `currency`, `tags`, `in_stock` in its payload, each with a payload index;
//! * point ids are [`point_uuid`]`(tenant, product_id)` so upserts replace;
//! * tenant and all request filters are pushed into the engine query, never
//!   applied to results afterwards (post-filtering would break `limit`/`offset`
//!   and could leak another tenant's points on a bug).

#![forbid(unsafe_code)]

mod edge;
pub mod keywords;
pub mod server;

/// The contract suite every backend passes; public so that each backend's
/// tests (including a server backend's integration tests) run the same cases.
pub mod contract;

pub use edge::EdgeIndex;
pub use server::QdrantIndex;

/// Logical collection name. qdrant-edge has no collection concept (a shard
/// directory *is* the collection); the name is kept so logs, metrics and a
/// future server backend agree on it.
pub const COLLECTION: &str = "product_embeddings";

/// Namespace for deterministic point ids. NEVER change it: every stored point
/// id is derived from it, so changing it would orphan all existing points.
const POINT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f0c_7e2a_9b1d_4c3e_8a6f_2d4b_1e9c_7a30);

/// Deterministic point id: UUIDv5 of `tenant + "\0" + product_id`.
///
/// The NUL separator makes the mapping injective (no tenant/product split can
/// collide, as neither may contain NUL in practice), and v5 makes it stable
/// across processes and backends, so an upsert of the same product replaces it.
pub fn point_uuid(tenant: &str, product_id: &str) -> uuid::Uuid {
    let mut name = Vec::with_capacity(tenant.len() + 1 + product_id.len());
    name.extend_from_slice(tenant.as_bytes());
    name.push(0);
    name.extend_from_slice(product_id.as_bytes());
    uuid::Uuid::new_v5(&POINT_ID_NAMESPACE, &name)
}

/// Largest `offset + limit` a search may ask for. The engine collects
/// `offset + limit` candidates per segment before dropping the offset, so
/// deep pagination costs memory and time linearly; 10k matches qdrant's
/// own default full-scan threshold and is far beyond any UI page.
pub const MAX_RESULT_WINDOW: usize = 10_000;

/// Named dense vector: the product image's CLIP embedding (the text's for a
/// product without an image).
pub const V_IMAGE: &str = "image";
/// Named dense vector: the CLIP text embedding of the product's text.
pub const V_TEXT: &str = "text";
/// Named sparse vector: BM25 term weights, scored with the engine's IDF.
pub const V_KEYWORDS: &str = "keywords";

/// Candidates each leg of a fused search contributes at least (more when
/// `offset + limit` is larger). Pages within the first `FUSION_WINDOW`
/// results are cut from the same candidates, so they never overlap or skip.
pub const FUSION_WINDOW: usize = 100;

/// Reciprocal-rank constant of [`Fusion::Rrf`] (the usual 60; Qdrant's
/// own default is 2, which lets one leg's top hit dominate).
pub const RRF_K: usize = 60;

/// How the points of an index generation are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One unnamed dense vector per point (indexes built before hybrid
    /// search): vector search only, until a full reindex.
    Single,
    /// The named vectors [`V_IMAGE`], [`V_TEXT`] and [`V_KEYWORDS`].
    Hybrid,
}

/// A sparse vector of BM25 weights: term ids (hashes of the tokens) and
/// their weights, ids strictly ascending.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Keywords {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

impl Keywords {
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// How a search with several legs merges them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fusion {
    /// Weighted relative-score fusion: each leg's scores are divided by
    /// that leg's best (negative ones count as 0), so each leg gives its
    /// candidates a share in [0, 1]; the fused score is the weighted sum
    /// of the shares over the sum of the weights, in [0, 1]. A leg whose
    /// candidates all score alike (it cannot tell them apart) moves the
    /// order little, where min-max scaling would stretch its noise over
    /// the whole range.
    #[default]
    Relative,
    /// Weighted reciprocal rank fusion, run inside the engine (prefetch
    /// per leg, then RRF with k = [`RRF_K`]). Qdrant's weights stretch
    /// ranks rather than scale scores: a hit at 1-based rank `r` of a leg
    /// of weight `w` scores `1 / (r / w + k - 1)`.
    Rrf,
}

/// Weight of each leg of a fused search. A leg with weight 0 is not run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub image: f32,
    pub text: f32,
    pub keyword: f32,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            image: 1.0,
            text: 1.0,
            keyword: 1.0,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorPoint {
    pub tenant: String,
    pub product_id: String,
    /// The [`V_IMAGE`] vector (the only one of a [`Layout::Single`] index).
    pub vector: Vec<f32>,
    /// The [`V_TEXT`] vector; a point without one is found by the other legs.
    pub text_vector: Option<Vec<f32>>,
    /// The [`V_KEYWORDS`] vector (empty: no terms).
    pub keywords: Keywords,
    pub payload: PointPayload,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct PointPayload {
    pub category: Option<String>,
    pub price: Option<f64>,
    pub currency: Option<String>,
    pub tags: Vec<String>,
    pub in_stock: bool,
}

/// Request filters. Empty / `None` fields do not constrain.
///
/// A product with no `price` never matches a price bound, and one with no
/// `category` never matches a non-empty `categories` list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorFilter {
    /// Product category must be any of these.
    pub categories: Vec<String>,
    /// Inclusive lower price bound.
    pub price_min: Option<f64>,
    /// Inclusive upper price bound.
    pub price_max: Option<f64>,
    /// Product must have ALL of these tags.
    pub tags: Vec<String>,
    pub in_stock: Option<bool>,
}

impl VectorFilter {
    /// Whether a product with this payload passes the filter (the rules
    /// both backends apply in their queries).
    pub fn admits(&self, p: &PointPayload) -> bool {
        (self.categories.is_empty() || p.category.as_ref().is_some_and(|c| self.categories.contains(c)))
            && self.price_min.is_none_or(|min| p.price.is_some_and(|x| x >= min))
            && self.price_max.is_none_or(|max| p.price.is_some_and(|x| x <= max))
            && self.tags.iter().all(|t| p.tags.contains(t))
            && self.in_stock.is_none_or(|s| p.in_stock == s)
    }

    /// The filter that keeps what both keep; `None` when nothing can pass
    /// both (categories with nothing in common, disjoint price ranges,
    /// opposite `in_stock`).
    pub fn intersect(&self, other: &VectorFilter) -> Option<VectorFilter> {
        let categories = match (self.categories.is_empty(), other.categories.is_empty()) {
            (true, _) => other.categories.clone(),
            (_, true) => self.categories.clone(),
            _ => {
                let both: Vec<String> = self
                    .categories
                    .iter()
                    .filter(|c| other.categories.contains(c))
                    .cloned()
                    .collect();
                if both.is_empty() {
                    return None;
                }
                both
            }
        };
        let price_min = match (self.price_min, other.price_min) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let price_max = match (self.price_max, other.price_max) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let (Some(lo), Some(hi)) = (price_min, price_max)
            && lo > hi
        {
            return None;
        }
        let in_stock = match (self.in_stock, other.in_stock) {
            (Some(a), Some(b)) if a != b => return None,
            (a, b) => a.or(b),
        };
        let mut tags = self.tags.clone();
        for t in &other.tags {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        Some(VectorFilter {
            categories,
            price_min,
            price_max,
            tags,
            in_stock,
        })
    }
}

/// A search: one or more legs (each a nearest-neighbour query on one
/// vector of the points), fused when there are several. Every leg runs with
/// the tenant and the filter inside the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorQuery {
    pub tenant: String,
    /// Nearest by [`V_IMAGE`]; empty: no such leg.
    pub vector: Vec<f32>,
    /// Nearest by [`V_TEXT`].
    pub text_vector: Option<Vec<f32>>,
    /// BM25 over [`V_KEYWORDS`] (term weights 1: the engine applies IDF).
    pub keywords: Option<Keywords>,
    /// Weights of the legs when there are several (ignored for one).
    pub weights: Weights,
    pub fusion: Fusion,
    pub limit: usize,
    pub offset: usize,
    pub filter: VectorFilter,
    /// Never return this product (e.g. "similar products" for a product page).
    pub exclude_product: Option<String>,
    /// Only return hits scoring strictly above this (qdrant's
    /// `score_threshold` semantics: `score > min_score`), on the score the
    /// hit is returned with: cosine for one dense leg, BM25 for the keyword
    /// leg alone, the fused score for several.
    pub min_score: Option<f32>,
}

/// One leg of a search, as a backend runs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leg {
    Dense { using: &'static str, vector: Vec<f32> },
    Keywords(Keywords),
}

impl Leg {
    fn weight(&self, w: &Weights) -> f32 {
        match self {
            Leg::Dense { using, .. } if *using == V_TEXT => w.text,
            Leg::Dense { .. } => w.image,
            Leg::Keywords(_) => w.keyword,
        }
    }
}

impl VectorQuery {
    /// The legs to run with their weights: those the query has, with a
    /// weight above 0 when there are several.
    pub(crate) fn legs(&self) -> Vec<(Leg, f32)> {
        let mut legs = Vec::new();
        if !self.vector.is_empty() {
            legs.push(Leg::Dense {
                using: V_IMAGE,
                vector: self.vector.clone(),
            });
        }
        if let Some(v) = &self.text_vector {
            legs.push(Leg::Dense {
                using: V_TEXT,
                vector: v.clone(),
            });
        }
        if let Some(k) = &self.keywords {
            legs.push(Leg::Keywords(k.clone()));
        }
        let weighted: Vec<(Leg, f32)> = legs
            .into_iter()
            .map(|l| {
                let w = l.weight(&self.weights);
                (l, w)
            })
            .collect();
        if weighted.len() > 1 {
            weighted.into_iter().filter(|(_, w)| *w > 0.0).collect()
        } else {
            weighted
        }
    }

    /// Candidates each leg of a fused search fetches.
    pub(crate) fn window(&self) -> usize {
        (self.offset + self.limit).clamp(FUSION_WINDOW, MAX_RESULT_WINDOW)
    }
}

/// Weighted relative-score fusion ([`Fusion::Relative`]) of the legs'
/// candidates, then `min_score`, `offset` and `limit`. Equal fused scores
/// keep product-id order, so pages are stable.
pub(crate) fn fuse_relative(legs: Vec<(f32, Vec<ScoredPoint>)>, q: &VectorQuery) -> Vec<ScoredPoint> {
    let total: f32 = legs.iter().map(|(w, _)| *w).sum();
    let mut fused: std::collections::HashMap<String, ScoredPoint> = std::collections::HashMap::new();
    for (weight, hits) in legs {
        let best = hits.iter().map(|h| h.score).fold(0.0f32, f32::max);
        for hit in hits {
            let scaled = if best > 0.0 {
                hit.score.max(0.0) / best
            } else {
                0.0
            };
            let share = if total > 0.0 { weight * scaled / total } else { 0.0 };
            fused
                .entry(hit.product_id.clone())
                .and_modify(|p| p.score += share)
                .or_insert(ScoredPoint { score: share, ..hit });
        }
    }
    let mut hits: Vec<ScoredPoint> = fused
        .into_values()
        .filter(|h| q.min_score.is_none_or(|m| h.score > m))
        .collect();
    hits.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.product_id.cmp(&b.product_id))
    });
    hits.into_iter().skip(q.offset).take(q.limit).collect()
}

/// The fields a facet query can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FacetField {
    Category,
    Tags,
    InStock,
    Price,
}

/// Counts of the values of some fields over every product of a tenant that
/// passes a filter.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FacetQuery {
    pub tenant: String,
    pub filter: VectorFilter,
    pub fields: Vec<FacetField>,
    /// Values returned per keyword field (category, tags): the most
    /// frequent, ties in ascending value order. `in_stock` always has both.
    pub limit: usize,
    /// Price bucket boundaries, strictly ascending: `b0 < b1 < ...` make the
    /// buckets `< b0`, `[b0, b1)`, ..., `>= bn`.
    pub price_buckets: Vec<f64>,
}

/// One price bucket: `[from, to)`, open where `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceBucket {
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub count: u64,
}

/// The answer to a [`FacetQuery`]: the asked fields filled, values with a
/// count of 0 left out (price buckets are all there).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FacetCounts {
    pub category: Vec<(String, u64)>,
    pub tags: Vec<(String, u64)>,
    pub in_stock: Vec<(bool, u64)>,
    pub price: Vec<PriceBucket>,
}

impl FacetQuery {
    /// The `[from, to)` price buckets of the boundaries.
    pub fn buckets(&self) -> Vec<(Option<f64>, Option<f64>)> {
        let b = &self.price_buckets;
        let mut out = Vec::with_capacity(b.len() + 1);
        let mut from = None;
        for x in b {
            out.push((from, Some(*x)));
            from = Some(*x);
        }
        out.push((from, None));
        out
    }

    /// The counts by brute force over `points` (the reference the engines
    /// are checked against, and what a backend without a facet API does).
    pub fn count_over<'a>(
        &self,
        points: impl IntoIterator<Item = (&'a str, &'a PointPayload)>,
    ) -> FacetCounts {
        let mut category: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        let mut tags: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        let mut stock = [0u64; 2];
        let buckets = self.buckets();
        let mut price = vec![0u64; buckets.len()];
        for (tenant, p) in points {
            if tenant != self.tenant || !self.filter.admits(p) {
                continue;
            }
            if let Some(c) = &p.category {
                *category.entry(c).or_default() += 1;
            }
            let mut seen: Vec<&str> = Vec::new();
            for t in &p.tags {
                if !seen.contains(&t.as_str()) {
                    seen.push(t);
                    *tags.entry(t).or_default() += 1;
                }
            }
            stock[usize::from(p.in_stock)] += 1;
            if let Some(x) = p.price {
                for (i, (from, to)) in buckets.iter().enumerate() {
                    if from.is_none_or(|f| x >= f) && to.is_none_or(|t| x < t) {
                        price[i] += 1;
                    }
                }
            }
        }
        let top = |m: std::collections::HashMap<&str, u64>| {
            let mut v: Vec<(String, u64)> = m.into_iter().map(|(k, n)| (k.to_owned(), n)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.truncate(self.limit);
            v
        };
        let mut out = FacetCounts::default();
        for field in &self.fields {
            match field {
                FacetField::Category => out.category = top(category.clone()),
                FacetField::Tags => out.tags = top(tags.clone()),
                FacetField::InStock => {
                    let mut v: Vec<(bool, u64)> = [(false, stock[0]), (true, stock[1])]
                        .into_iter()
                        .filter(|(_, n)| *n > 0)
                        .collect();
                    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    out.in_stock = v;
                }
                FacetField::Price => {
                    out.price = buckets
                        .iter()
                        .zip(&price)
                        .map(|((from, to), n)| PriceBucket {
                            from: *from,
                            to: *to,
                            count: *n,
                        })
                        .collect();
                }
            }
        }
        out
    }
}

/// Checks a facet query before it reaches a backend.
pub(crate) fn check_facets(q: &FacetQuery) -> Result<(), VectorError> {
    check_filter(&q.filter)?;
    if q.price_buckets.iter().any(|x| !x.is_finite()) || q.price_buckets.windows(2).any(|w| w[0] >= w[1]) {
        return Err(VectorError::other(
            "price buckets must be finite and strictly ascending",
        ));
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPoint {
    pub product_id: String,
    /// Cosine similarity in [-1, 1] for a dense leg, BM25 for the keyword
    /// leg, the fused score for several; higher is closer.
    pub score: f32,
    /// The filter payload; empty on the hits of a fused search (several
    /// legs), which read only their candidates' product ids.
    pub payload: PointPayload,
}

/// Handle to a generation being built by [`VectorIndex::begin_generation`].
///
/// Not `Clone`: `commit_generation`/`abort_generation` consume it, so a
/// generation cannot be committed twice or written after commit.
#[derive(Debug)]
pub struct Generation {
    id: u64,
    dims: usize,
}

impl Generation {
    /// Backend-specific generation number (monotonic per index).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Vector dimension of the new generation.
    pub fn dims(&self) -> usize {
        self.dims
    }
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("vector dimension mismatch: expected {expected}, got {got}")]
    DimensionMismatch { expected: usize, got: usize },
    /// The store cannot be reached or opened; retrying may help.
    #[error("vector store unavailable: {0}")]
    Unavailable(String, #[source] Option<crate::store::ErrorSource>),
    /// What was to be created exists (a collection, by the server's own
    /// status code).
    #[error("vector store: already exists: {0}")]
    AlreadyExists(String, #[source] Option<crate::store::ErrorSource>),
    /// What was named does not exist (a collection, a generation).
    #[error("vector store: not found: {0}")]
    NotFound(String, #[source] Option<crate::store::ErrorSource>),
    #[error("vector store error: {0}")]
    Other(String, #[source] Option<crate::store::ErrorSource>),
}

impl VectorError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into(), None)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into(), None)
    }
}

#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    /// Backend name for logs/metrics, e.g. `"qdrant-edge"`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<(), VectorError>;
    /// Dimension of the live generation.
    fn dims(&self) -> usize;
    /// Layout of the live generation: a [`Layout::Single`] index answers
    /// only queries on [`V_IMAGE`] (others fail with `NotFound`).
    fn layout(&self) -> Layout;
    /// Batch upsert; idempotent by `(tenant, product_id)`. Durable on return.
    /// Also written to every generation under construction whose dimension
    /// fits, so a reindex misses nothing written while it runs; vectors of
    /// a new model's dimension go only to such a generation.
    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError>;
    /// Delete products of one tenant (from the live generation and any under
    /// construction); unknown ids are ignored. Durable on return.
    async fn delete(&self, tenant: &str, product_ids: &[String]) -> Result<(), VectorError>;
    async fn delete_tenant(&self, tenant: &str) -> Result<(), VectorError>;
    async fn search(&self, q: &VectorQuery) -> Result<Vec<ScoredPoint>, VectorError>;
    /// Facet counts over every point of the tenant that passes the filter.
    async fn facets(&self, q: &FacetQuery) -> Result<FacetCounts, VectorError>;
    /// The stored image vector and, where there is one, text vector
    /// (normalised to unit length by cosine distance).
    async fn get_vectors(
        &self,
        tenant: &str,
        product_id: &str,
    ) -> Result<Option<(Vec<f32>, Option<Vec<f32>>)>, VectorError>;
    /// The stored image vector.
    async fn get_vector(&self, tenant: &str, product_id: &str) -> Result<Option<Vec<f32>>, VectorError> {
        Ok(self
            .get_vectors(tenant, product_id)
            .await?
            .map(|(image, _)| image))
    }
    /// The stored points of these products in the live generation, in no
    /// particular order; ids the tenant has no point for are left out.
    /// Vectors come back as stored (unit length, by cosine distance). An
    /// edge replica compares them with what its origin sends, to leave a
    /// point that did not change where it is (in its indexed segment).
    async fn get_points(&self, tenant: &str, product_ids: &[String])
    -> Result<Vec<VectorPoint>, VectorError>;
    /// Every product id of one tenant in the live generation, in no
    /// particular order (a reindex uses it to drop vectors whose product is
    /// gone).
    async fn product_ids(&self, tenant: &str) -> Result<Vec<String>, VectorError>;
    /// Exact point count for one tenant, or for all tenants with `None`.
    async fn count(&self, tenant: Option<&str>) -> Result<u64, VectorError>;
    /// Build indexes / merge segments. qdrant-edge has no background
    /// optimiser: call after bulk writes.
    async fn optimize(&self) -> Result<(), VectorError>;
    /// Reindex without downtime: start a complete new (empty) generation.
    async fn begin_generation(&self, dims: usize) -> Result<Generation, VectorError>;
    async fn upsert_generation(
        &self,
        generation: &Generation,
        points: Vec<VectorPoint>,
    ) -> Result<(), VectorError>;
    /// Atomically make `generation` live. Searches use the old generation
    /// until this returns; the old one is removed afterwards.
    async fn commit_generation(&self, generation: Generation) -> Result<(), VectorError>;
    /// Drop a generation under construction; the live one is untouched.
    async fn abort_generation(&self, generation: Generation) -> Result<(), VectorError>;
}

// Payload field names, shared by every backend (and by plugins, which see
// the same fields on candidates).
pub(crate) const F_TENANT: &str = "tenant";
pub(crate) const F_PRODUCT_ID: &str = "product_id";
pub(crate) const F_CATEGORY: &str = "category";
pub(crate) const F_PRICE: &str = "price";
pub(crate) const F_CURRENCY: &str = "currency";
pub(crate) const F_TAGS: &str = "tags";
pub(crate) const F_IN_STOCK: &str = "in_stock";

/// A point's payload as JSON. Absent optional fields are omitted (not null)
/// so they never match a value or range condition.
pub(crate) fn payload_map(
    tenant: &str,
    product_id: &str,
    p: &PointPayload,
) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::Value;
    let mut m = serde_json::Map::new();
    m.insert(F_TENANT.into(), Value::String(tenant.to_owned()));
    m.insert(F_PRODUCT_ID.into(), Value::String(product_id.to_owned()));
    if let Some(c) = &p.category {
        m.insert(F_CATEGORY.into(), Value::String(c.clone()));
    }
    if let Some(n) = p.price.and_then(serde_json::Number::from_f64) {
        m.insert(F_PRICE.into(), Value::Number(n));
    }
    if let Some(c) = &p.currency {
        m.insert(F_CURRENCY.into(), Value::String(c.clone()));
    }
    m.insert(
        F_TAGS.into(),
        Value::Array(p.tags.iter().cloned().map(Value::String).collect()),
    );
    m.insert(F_IN_STOCK.into(), Value::Bool(p.in_stock));
    m
}

/// The product id and filter payload back from a stored payload.
pub(crate) fn decode_payload_map(m: &serde_json::Map<String, serde_json::Value>) -> (String, PointPayload) {
    use serde_json::Value;
    let string = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_owned);
    let tags = match m.get(F_TAGS) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        // Qdrant treats a scalar as a one-element array; mirror that.
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    (
        string(F_PRODUCT_ID).unwrap_or_default(),
        PointPayload {
            category: string(F_CATEGORY),
            price: m.get(F_PRICE).and_then(Value::as_f64),
            currency: string(F_CURRENCY),
            tags,
            in_stock: m.get(F_IN_STOCK).and_then(Value::as_bool).unwrap_or(false),
        },
    )
}

/// Whether a stored point (from [`VectorIndex::get_points`]) already holds
/// what writing `new` would store: the same payload and keyword vector,
/// and the same vectors up to the rounding of normalising them again.
pub fn same_point(stored: &VectorPoint, new: &VectorPoint) -> bool {
    /// A component of a unit vector moves by a few ulps (about 1e-8) when
    /// it is normalised again; any real change is far larger.
    const TOLERANCE: f32 = 1e-6;
    fn close(stored: &[f32], new: &[f32]) -> bool {
        let norm = new.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        stored.len() == new.len()
            && norm > 0.0
            && stored
                .iter()
                .zip(new)
                .all(|(s, n)| (f64::from(*s) - f64::from(*n) / norm).abs() <= f64::from(TOLERANCE))
    }
    stored.tenant == new.tenant
        && stored.product_id == new.product_id
        && stored.payload == new.payload
        && stored.keywords == new.keywords
        && close(&stored.vector, &new.vector)
        && match (&stored.text_vector, &new.text_vector) {
            (None, None) => true,
            (Some(s), Some(n)) => close(s, n),
            _ => false,
        }
}

/// The vector has the index's dimension and only finite components.
pub(crate) fn check_vector(v: &[f32], dims: usize) -> Result<(), VectorError> {
    if v.len() != dims {
        return Err(VectorError::DimensionMismatch {
            expected: dims,
            got: v.len(),
        });
    }
    if v.iter().any(|x| !x.is_finite()) {
        return Err(VectorError::other("vector contains NaN or infinity"));
    }
    Ok(())
}

/// Checks a query before it reaches a backend.
pub(crate) fn check_query(q: &VectorQuery) -> Result<(), VectorError> {
    if q.offset.saturating_add(q.limit) > MAX_RESULT_WINDOW {
        return Err(VectorError::other(format!(
            "offset + limit must be <= {MAX_RESULT_WINDOW}"
        )));
    }
    if q.min_score.is_some_and(|s| !s.is_finite()) {
        return Err(VectorError::other("min_score must be finite"));
    }
    let w = &q.weights;
    if [w.image, w.text, w.keyword]
        .iter()
        .any(|x| !x.is_finite() || *x < 0.0)
    {
        return Err(VectorError::other("weights must be finite and >= 0"));
    }
    if q.legs().is_empty() {
        return Err(VectorError::other(
            "a search needs a vector, a text vector or keywords",
        ));
    }
    if let Some(k) = &q.keywords {
        check_keywords(k)?;
    }
    check_filter(&q.filter)
}

fn check_filter(f: &VectorFilter) -> Result<(), VectorError> {
    if f.price_min.is_some_and(|x| !x.is_finite()) || f.price_max.is_some_and(|x| !x.is_finite()) {
        return Err(VectorError::other("price bounds must be finite"));
    }
    Ok(())
}

/// A sparse vector the engines accept: as many weights as ids, ids
/// strictly ascending, weights finite.
pub(crate) fn check_keywords(k: &Keywords) -> Result<(), VectorError> {
    if k.indices.len() != k.values.len()
        || k.indices.windows(2).any(|w| w[0] >= w[1])
        || k.values.iter().any(|x| !x.is_finite())
    {
        return Err(VectorError::other("malformed keyword vector"));
    }
    Ok(())
}

/// The vector index as the rest of the service sees it: opening in the
/// background at start (it needs the encoder's dimension), then ready or
/// failed.
#[derive(Clone, Default)]
pub struct SharedVectors(std::sync::Arc<std::sync::RwLock<VectorsState>>);

#[derive(Clone, Default)]
pub enum VectorsState {
    #[default]
    Opening,
    Ready(std::sync::Arc<dyn VectorIndex>),
    Failed(String),
}

impl SharedVectors {
    pub fn set(&self, state: VectorsState) {
        if let Ok(mut s) = self.0.write() {
            *s = state;
        }
    }

    /// The open index, or why there is none.
    pub fn index(&self) -> Result<std::sync::Arc<dyn VectorIndex>, String> {
        match self.0.read().map(|s| s.clone()) {
            Ok(VectorsState::Ready(v)) => Ok(v),
            Ok(VectorsState::Opening) => {
                Err("the vector index is still opening (it waits for the encoder)".into())
            }
            Ok(VectorsState::Failed(why)) => Err(why),
            Err(_) => Err("poisoned".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_uuid_is_deterministic_and_separated() {
        assert_eq!(point_uuid("t", "p"), point_uuid("t", "p"));
        assert_ne!(point_uuid("t", "p"), point_uuid("u", "p"));
        // The separator prevents ("ab","c") and ("a","bc") from colliding.
        assert_ne!(point_uuid("ab", "c"), point_uuid("a", "bc"));
        assert_eq!(point_uuid("t", "p").get_version_num(), 5);
    }

    #[test]
    fn intersected_filters_keep_what_both_keep() {
        let forced = VectorFilter {
            categories: vec!["shoes".into()],
            price_max: Some(100.0),
            tags: vec!["sale".into()],
            in_stock: Some(true),
            ..VectorFilter::default()
        };
        let asked = VectorFilter {
            categories: vec!["shoes".into(), "hats".into()],
            price_min: Some(10.0),
            price_max: Some(500.0),
            tags: vec!["red".into()],
            ..VectorFilter::default()
        };
        let both = asked.intersect(&forced).unwrap();
        assert_eq!(both.categories, ["shoes"]);
        assert_eq!((both.price_min, both.price_max), (Some(10.0), Some(100.0)));
        assert_eq!(both.tags, ["red", "sale"]);
        assert_eq!(both.in_stock, Some(true));
        // Nothing asked: the forced filter alone.
        assert_eq!(VectorFilter::default().intersect(&forced).unwrap(), forced);
        // Disjoint: nothing can pass.
        let hats = VectorFilter {
            categories: vec!["hats".into()],
            ..VectorFilter::default()
        };
        assert!(hats.intersect(&forced).is_none());
        let dear = VectorFilter {
            price_min: Some(200.0),
            ..VectorFilter::default()
        };
        assert!(dear.intersect(&forced).is_none());
        let sold_out = VectorFilter {
            in_stock: Some(false),
            ..VectorFilter::default()
        };
        assert!(sold_out.intersect(&forced).is_none());
    }
}
