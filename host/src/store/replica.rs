//! The change feed an origin serves to its edge replicas, and the state an
//! edge keeps of its replica.
//!
//! Every write to a replicated table (tenants, API keys, products, plugins)
//! appends a change by trigger, in the writing transaction (migration
//! `0007_change_feed`). A change names its entity only; whoever serves it
//! reads the entity's state at that moment. So applying changes is
//! idempotent, a later change of an entity supersedes an earlier one, and a
//! follower that applied everything up to the head holds exactly the
//! origin's state.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{ApiKeyRecord, StoreResult, Tenant};
use crate::model::Product;

/// What a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    Tenant,
    Key,
    Product,
    Plugin,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tenant => "tenant",
            Self::Key => "key",
            Self::Product => "product",
            Self::Plugin => "plugin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Tenant, Self::Key, Self::Product, Self::Plugin]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One numbered entry of the feed: entity `entity` of kind `kind` in
/// `tenant` changed (the tenant's id, a key id, a product's external id, a
/// plugin name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub tenant: String,
    pub entity: String,
}

/// A tenant with everything a replica keeps of it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantRecord {
    pub tenant: Tenant,
    /// Rate limits, quotas and search defaults (`tenants.limits`).
    pub limits: Value,
}

/// A vector index generation a full reindex made live at the origin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct IndexGeneration {
    /// The vector index's own generation number; 0: the index the origin
    /// started with (no reindex recorded).
    pub id: i64,
    /// What `encoder.model` named (hub id, directory or object-store URL).
    pub model: String,
    /// The weights' fingerprint (`name@hash`).
    pub model_id: String,
    pub dims: i64,
}

/// The origin's side: reading the feed and the snapshot a bootstrap pages
/// through. `tenants`, where given, keeps only those tenants' entries.
#[async_trait]
pub trait ReplicationStore: Send + Sync {
    /// The highest sequence number (0: no change yet). On PostgreSQL this
    /// first numbers the changes committed since the last call.
    async fn feed_head(&self) -> StoreResult<i64>;

    /// Changes after `after`, oldest first, at most `limit`.
    async fn changes_after(
        &self,
        after: i64,
        limit: u32,
        tenants: Option<&[String]>,
    ) -> StoreResult<Vec<Change>>;

    /// Every API key (hashes only).
    async fn all_api_keys(&self, tenants: Option<&[String]>) -> StoreResult<Vec<ApiKeyRecord>>;

    /// Records a generation made live (after the switch).
    async fn record_generation(&self, g: &IndexGeneration) -> StoreResult<()>;

    /// The latest recorded generation.
    async fn current_generation(&self) -> StoreResult<Option<IndexGeneration>>;

    /// Stores search logs an edge recorded, exactly once: `logs` carry the
    /// edge's own increasing numbers, and those at or below the last number
    /// stored for `edge` are skipped, in the same transaction. Returns the
    /// edge's last number now stored.
    async fn accept_edge_logs(&self, edge: &str, logs: &[(i64, super::SearchLog)]) -> StoreResult<i64>;

    /// Deletes the changes superseded by a later change of the same entity
    /// numbered in `(after, through]`, `through` being `after + span` or the
    /// head, whichever is lower. The feed serves an entity's state as it is
    /// when read, so a follower at any position still reaches the entity's
    /// latest change and ends in the same state: the table stays about as
    /// large as the number of entities instead of growing with every write.
    /// Returns `through` and how many changes were deleted; `through` is
    /// below `after` when the head is (the catalog was restored).
    async fn compact_changes(&self, after: i64, span: i64) -> StoreResult<(i64, u64)>;

    /// Products of every tenant after catalog row `after`, by row, with
    /// their row numbers (the bootstrap's cursor).
    async fn products_after_row(
        &self,
        after: i64,
        limit: u32,
        tenants: Option<&[String]>,
    ) -> StoreResult<Vec<(i64, Product)>>;
}

/// Where an edge's replica stands (one row, written with each page it
/// applies).
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaState {
    /// The origin the replica follows; another origin means a new bootstrap.
    pub origin: String,
    /// Every change up to this sequence is applied (during a bootstrap: the
    /// sequence the feed will be followed from).
    pub seq: i64,
    /// During a bootstrap, the next snapshot page to fetch.
    pub cursor: Option<String>,
    pub bootstrapped: bool,
    /// The origin's generation the replica's index holds.
    pub generation: Option<IndexGeneration>,
    pub updated_at: DateTime<Utc>,
}

/// Entities to write into a replica, in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplicaBatch {
    pub tenants: Vec<TenantRecord>,
    pub keys: Vec<ApiKeyRecord>,
    pub keys_gone: Vec<String>,
    pub products: Vec<Product>,
    /// `(tenant, external id)`.
    pub products_gone: Vec<(String, String)>,
    /// `(tenant, name, every version)`: the plugin's versions are replaced
    /// by these (none: the plugin is removed).
    pub plugins: Vec<(String, String, Vec<super::PluginRecord>)>,
    /// Bump every tenant's generation (cached pages and ETags end): the
    /// index switched generations.
    pub bump_generations: bool,
}

impl ReplicaBatch {
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.keys.is_empty()
            && self.keys_gone.is_empty()
            && self.products.is_empty()
            && self.products_gone.is_empty()
            && self.plugins.is_empty()
    }
}
