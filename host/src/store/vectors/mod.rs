//! Vector-store layer for Vitrine's product search.
//!
//! [`VectorIndex`] is the backend-agnostic interface the service talks to;
//! [`EdgeIndex`] implements it on top of the embedded `qdrant-edge` engine.
//! A future server backend (qdrant-client) must pass the same contract suite
//! ([`contract`]).
//!
//! Collection semantics (shared by every backend):
//! * one collection, [`COLLECTION`], dimension fixed at open, cosine distance;
//! * every point carries `tenant`, `product_id`, `category`, `price`,
//!   `currency`, `tags`, `in_stock` in its payload, each with a payload index;
//! * point ids are [`point_uuid`]`(tenant, product_id)` so upserts replace;
//! * tenant and all request filters are pushed into the engine query, never
//!   applied to results afterwards (post-filtering would break `limit`/`offset`
//!   and could leak another tenant's points on a bug).

#![forbid(unsafe_code)]

mod edge;

/// The contract suite every backend passes; public so that each backend's
/// tests (including a server backend's integration tests) run the same cases.
pub mod contract;

pub use edge::EdgeIndex;

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

#[derive(Debug, Clone, PartialEq)]
pub struct VectorPoint {
    pub tenant: String,
    pub product_id: String,
    pub vector: Vec<f32>,
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct VectorQuery {
    pub tenant: String,
    pub vector: Vec<f32>,
    pub limit: usize,
    pub offset: usize,
    pub filter: VectorFilter,
    /// Never return this product (e.g. "similar products" for a product page).
    pub exclude_product: Option<String>,
    /// Only return hits scoring strictly above this (qdrant's
    /// `score_threshold` semantics: `score > min_score`).
    pub min_score: Option<f32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScoredPoint {
    pub product_id: String,
    /// Cosine similarity in [-1, 1]; higher is closer.
    pub score: f32,
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
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    #[error("vector store error: {0}")]
    Other(String),
}

#[async_trait::async_trait]
pub trait VectorIndex: Send + Sync + 'static {
    /// Backend name for logs/metrics, e.g. `"qdrant-edge"`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> Result<(), VectorError>;
    /// Dimension of the live generation.
    fn dims(&self) -> usize;
    /// Batch upsert; idempotent by `(tenant, product_id)`. Durable on return.
    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError>;
    /// Delete products of one tenant; unknown ids are ignored. Durable on return.
    async fn delete(&self, tenant: &str, product_ids: &[String]) -> Result<(), VectorError>;
    async fn delete_tenant(&self, tenant: &str) -> Result<(), VectorError>;
    async fn search(&self, q: &VectorQuery) -> Result<Vec<ScoredPoint>, VectorError>;
    /// The stored vector (normalised to unit length by cosine distance).
    async fn get_vector(&self, tenant: &str, product_id: &str) -> Result<Option<Vec<f32>>, VectorError>;
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
}
