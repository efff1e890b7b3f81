//! Persistent state. The catalog (tenants, API keys, products, jobs, search
//! logs) is the source of truth; it is one trait, [`Catalog`], with two
//! backends that pass one shared contract suite (`contract.rs`):
//! SQLite for the embedded single node and PostgreSQL at scale.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::model::{Product, ProductFields};

pub mod migrations;
pub mod postgres;
pub mod replica;
pub mod sqlite;
pub mod vectors;

#[cfg(test)]
pub(crate) mod contract;

/// The backend's own error under a [`StoreError`], kept for logs.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync>;

/// Semantic storage errors; the API maps each to one status. Each keeps
/// the backend's error it came from as its `source`, so nothing above the
/// store needs to read an error's text to know what happened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A write conflicts with stored data; the message is written for people
    /// (it names the duplicate or the stale version).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A uniqueness rule of the database refused a write. Where a duplicate
    /// is expected (a tenant or product id taken) the store turns it into a
    /// [`StoreError::Conflict`] that names it; anywhere else the text stays
    /// in the logs.
    #[error("duplicate key: {0}")]
    Duplicate(String, #[source] ErrorSource),
    /// The backend cannot be reached or is overloaded; retrying may help.
    #[error("storage unavailable: {0}")]
    Unavailable(String, #[source] Option<ErrorSource>),
    #[error("storage error: {0}")]
    Other(String, #[source] Option<ErrorSource>),
}

/// What a backend's error means, decided while it is borrowed; it then
/// moves into the [`StoreError`] as its source.
pub(crate) enum ErrorKind {
    Duplicate,
    Unavailable,
    Other,
}

impl ErrorKind {
    pub(crate) fn error(self, text: String, source: ErrorSource) -> StoreError {
        match self {
            Self::Duplicate => StoreError::Duplicate(text, source),
            Self::Unavailable => StoreError::Unavailable(text, Some(source)),
            Self::Other => StoreError::Other(text, Some(source)),
        }
    }
}

impl StoreError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into(), None)
    }

    pub fn other(message: impl Into<String>) -> Self {
        Self::Other(message.into(), None)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// An API key as stored: only a hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub id: String,
    pub tenant: String,
    pub secret_hash: String,
    pub scopes: Vec<String>,
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A job to enqueue in the same transaction as the write that needs it, so
/// a product is never stored without the job that will index it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: String,
    pub kind: String,
    /// `None` for a job that spans every tenant.
    pub tenant: Option<String>,
    pub payload: Value,
    pub max_attempts: i32,
}

impl NewJob {
    /// Default attempts before a job is marked failed (DESIGN.md: 5).
    pub const DEFAULT_MAX_ATTEMPTS: i32 = 5;

    /// A job of one tenant.
    pub fn new(kind: &str, tenant: &str, payload: Value) -> Self {
        Self {
            tenant: Some(tenant.to_owned()),
            ..Self::global(kind, payload)
        }
    }

    /// A job that spans every tenant (a full reindex).
    pub fn global(kind: &str, payload: Value) -> Self {
        Self {
            id: uuid::Uuid::now_v7().to_string(),
            kind: kind.to_owned(),
            tenant: None,
            payload,
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> StoreResult<Self> {
        Ok(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            other => return Err(StoreError::other(format!("unknown job status {other:?}"))),
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub kind: String,
    /// `None` for a job that spans every tenant.
    pub tenant: Option<String>,
    pub payload: Value,
    pub status: JobStatus,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_after: DateTime<Utc>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub progress_done: i64,
    pub progress_total: i64,
    pub last_error: Option<String>,
    pub result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A catalog connection pool's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    pub size: usize,
    pub in_use: usize,
    pub waiting: usize,
}

/// The outcome of indexing one product version.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexUpdate {
    pub external_id: String,
    pub version: i64,
    pub status: crate::model::IndexStatus,
    pub error: Option<String>,
}

/// One page of a product listing, in insertion order.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductPage {
    pub products: Vec<Product>,
    /// Position after the last product of this page, when more may follow.
    pub next: Option<i64>,
}

/// The catalog: every read and write is scoped to one tenant.
#[async_trait]
pub trait Catalog:
    TenantStore
    + ProductStore
    + JobStore
    + SearchLogStore
    + PluginStore
    + replica::ReplicationStore
    + Send
    + Sync
    + 'static
{
    /// `sqlite` or `postgres`, for health reports and logs.
    fn backend(&self) -> &'static str;

    /// A cheap round trip proving the backend answers.
    async fn ping(&self) -> StoreResult<()>;

    /// The connection pool's size, connections in use and callers waiting.
    fn pool_status(&self) -> PoolStatus;
}

/// Tenants, their API keys and the generation counter that every product write bumps.
#[async_trait]
pub trait TenantStore: Send + Sync {
    async fn create_tenant(&self, id: &str, name: &str) -> StoreResult<Tenant>;

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>>;

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;

    /// Returns whether a key of that tenant with that id existed.
    async fn delete_api_key(&self, tenant: &str, id: &str) -> StoreResult<bool>;

    /// A counter that every write to the tenant's products (and every
    /// [`TenantStore::bump_generation`]) increases; 0 for an unknown tenant.
    async fn tenant_generation(&self, tenant: &str) -> StoreResult<i64>;

    /// The tenant's own rate limits and quotas (a JSON object the API
    /// layer owns); `None` for an unknown tenant.
    async fn tenant_limits(&self, tenant: &str) -> StoreResult<Option<Value>>;

    /// Replaces them; `false` for an unknown tenant.
    async fn set_tenant_limits(&self, tenant: &str, limits: &Value) -> StoreResult<bool>;

    /// Increases the tenant's generation for changes the catalog does not
    /// see (vectors written or removed by a job).
    async fn bump_generation(&self, tenant: &str) -> StoreResult<()>;
}

/// Products of one tenant, each write with its indexing job in one transaction.
#[async_trait]
pub trait ProductStore: Send + Sync {
    /// Creates a product and enqueues its indexing job atomically.
    /// `Conflict` when the external id is taken in this tenant.
    async fn create_product(
        &self,
        tenant: &str,
        external_id: &str,
        fields: &ProductFields,
        job: &NewJob,
    ) -> StoreResult<Product>;

    /// Creates or replaces many products and enqueues one job, all in one
    /// transaction: after a crash either every item is stored or none.
    async fn upsert_products(
        &self,
        tenant: &str,
        items: &[(String, ProductFields)],
        job: &NewJob,
    ) -> StoreResult<()>;

    async fn get_product(&self, tenant: &str, external_id: &str) -> StoreResult<Option<Product>>;

    /// Batched read; unknown ids are left out, order is not guaranteed.
    async fn get_products(&self, tenant: &str, external_ids: &[String]) -> StoreResult<Vec<Product>>;

    /// Products after position `after` (exclusive), oldest first.
    async fn list_products(
        &self,
        tenant: &str,
        category: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<ProductPage>;

    /// Replaces a product's fields. With `expected_version` the write only
    /// happens if nobody wrote in between (`Conflict` otherwise). With a job
    /// the product goes back to `pending` and the job is enqueued in the same
    /// transaction. `NotFound` when there is no such product.
    async fn update_product(
        &self,
        tenant: &str,
        external_id: &str,
        fields: &ProductFields,
        expected_version: Option<i64>,
        reindex: Option<&NewJob>,
    ) -> StoreResult<Product>;

    /// Sets (or with `None` removes) a product's uploaded image, puts it
    /// back to `pending` and enqueues `reindex`, in one transaction.
    /// `NotFound` when there is no such product.
    async fn set_product_image(
        &self,
        tenant: &str,
        external_id: &str,
        image_key: Option<&str>,
        reindex: &NewJob,
    ) -> StoreResult<Product>;

    /// Deletes a product and, if it existed, enqueues `cleanup` in the same
    /// transaction (the job that removes its vector). Returns whether the
    /// product existed.
    async fn delete_product(&self, tenant: &str, external_id: &str, cleanup: &NewJob) -> StoreResult<bool>;

    async fn count_products(&self, tenant: &str) -> StoreResult<i64>;

    /// Records indexing outcomes without touching the products' versions.
    /// An update only applies while the product still has the version that
    /// was indexed: a product written since keeps `pending` (its own job
    /// will index it). Returns how many products were updated.
    async fn set_index_status(&self, tenant: &str, updates: &[IndexUpdate]) -> StoreResult<u64>;
}

/// The job queue: leased claims, heartbeats, outcomes, cancellation.
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>>;

    /// Enqueues a job on its own (jobs that go with a product write are
    /// enqueued by that write, in its transaction).
    async fn enqueue_job(&self, job: &NewJob) -> StoreResult<()>;

    /// Newest first.
    async fn list_jobs(
        &self,
        tenant: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
    ) -> StoreResult<Vec<Job>>;

    /// How many jobs are queued and running, by kind and status (for the
    /// queue-depth gauges).
    async fn job_counts(&self) -> StoreResult<Vec<(String, JobStatus, i64)>>;

    /// Claims up to `limit` runnable jobs of the given kinds for `worker`,
    /// leased until `lease_until`: queued jobs whose `run_after` has come,
    /// and running jobs whose lease expired (their worker died). Each claim
    /// counts an attempt; a job whose worker died on its last attempt is
    /// marked failed instead of claimed. Safe with many workers on many
    /// hosts: no job is ever held by two workers at once.
    async fn claim_jobs(
        &self,
        worker: &str,
        kinds: &[String],
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        self.claim_jobs_of(worker, kinds, None, now, lease_until, limit)
            .await
    }

    /// [`Catalog::claim_jobs`], of one tenant only when `tenant` is given
    /// (jobs run together are one tenant's).
    async fn claim_jobs_of(
        &self,
        worker: &str,
        kinds: &[String],
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>>;

    /// Extends `worker`'s lease and records progress. `false` when the job
    /// is no longer this worker's (cancelled, or reclaimed after its lease
    /// ran out): the worker must stop.
    async fn heartbeat_job(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        progress: Option<(i64, i64)>,
    ) -> StoreResult<bool>;

    /// Records the outcome of `worker`'s attempt; `false` when the job is no
    /// longer this worker's.
    async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        outcome: &JobOutcome,
    ) -> StoreResult<bool>;

    /// Cancels a queued or running job. `NotFound` for an unknown id,
    /// `Conflict` for a job that already finished.
    async fn cancel_job(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Job>;

    /// Puts `worker`'s running jobs back in the queue without counting the
    /// interrupted attempt (graceful shutdown). Returns how many.
    async fn release_jobs(&self, worker: &str, now: DateTime<Utc>) -> StoreResult<u64>;
}

/// Search logs and the analytics read off them.
#[async_trait]
pub trait SearchLogStore: Send + Sync {
    /// Appends search logs (one batch, one transaction).
    async fn insert_search_logs(&self, logs: &[SearchLog]) -> StoreResult<()>;

    /// The most frequent query texts of a tenant since `since`, with their
    /// count, average result count and p95 time; most frequent first.
    async fn query_stats(
        &self,
        tenant: &str,
        kind: QueryStatsKind,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueryStat>>;
}

/// Tenants' plugin versions and which one is active per world.
#[async_trait]
pub trait PluginStore: Send + Sync {
    /// Records a new version of a plugin (numbered from 1 per name).
    /// `Conflict` when the name already holds versions of another world.
    async fn create_plugin_version(&self, new: &NewPluginVersion) -> StoreResult<PluginRecord>;

    /// Every version of every plugin of the tenant, by name then version.
    async fn list_plugins(&self, tenant: &str) -> StoreResult<Vec<PluginRecord>>;

    /// Every version of one plugin, oldest first (empty: no such plugin).
    async fn get_plugin(&self, tenant: &str, name: &str) -> StoreResult<Vec<PluginRecord>>;

    /// The active version of each world, for the tenant.
    async fn active_plugins(&self, tenant: &str) -> StoreResult<Vec<PluginRecord>>;

    /// Makes `version` the one active version of its world for the tenant
    /// (whichever was active before, of any name, is deactivated), with the
    /// tenant's parameters and memory cap; bumps the tenant's generation in
    /// the same transaction. `NotFound` for an unknown name or version.
    async fn activate_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
        params: &serde_json::Map<String, Value>,
        memory_mb: Option<i64>,
    ) -> StoreResult<PluginRecord>;

    /// Deactivates and removes every version of a plugin (bumping the
    /// tenant's generation). Returns the removed versions (empty: there was
    /// no such plugin).
    async fn delete_plugin(&self, tenant: &str, name: &str) -> StoreResult<Vec<PluginRecord>>;
}

/// One uploaded version of a tenant's plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRecord {
    pub tenant: String,
    pub name: String,
    pub version: i64,
    /// `filter`, `ranker` or `ingest`.
    pub world: String,
    pub digest: String,
    pub size_bytes: i64,
    pub active: bool,
    /// The tenant's parameters (strings), set on activation.
    pub params: serde_json::Map<String, Value>,
    pub memory_mb: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
}

/// A new version to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPluginVersion {
    pub tenant: String,
    pub name: String,
    pub world: String,
    pub digest: String,
    pub size_bytes: i64,
}

/// One search, as the original design logged it (plus the tenant).
#[derive(Debug, Clone, PartialEq)]
pub struct SearchLog {
    pub tenant: String,
    pub query_type: String,
    pub query_text: Option<String>,
    pub query_image_url: Option<String>,
    pub results_count: i32,
    pub execution_time_ms: f64,
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Which queries `query_stats` ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QueryStatsKind {
    /// The most frequent query texts.
    Top,
    /// The most frequent query texts that found nothing.
    ZeroResults,
}

/// One query text in the analytics.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryStat {
    pub query_text: String,
    pub count: i64,
    pub avg_results: f64,
    pub p95_ms: f64,
}

/// Nearest-rank 95th percentile.
pub(crate) fn p95(mut times: Vec<f64>) -> f64 {
    if times.is_empty() {
        return 0.0;
    }
    times.sort_by(f64::total_cmp);
    let rank = ((0.95 * times.len() as f64).ceil() as usize).clamp(1, times.len());
    times[rank - 1]
}

/// Adds each text's p95 to `(text, count, avg)` rows from its timings.
pub(crate) fn with_p95(rows: Vec<(String, i64, f64)>, timings: Vec<(String, f64)>) -> Vec<QueryStat> {
    let mut by_text: HashMap<String, Vec<f64>> = HashMap::new();
    for (t, ms) in timings {
        by_text.entry(t).or_default().push(ms);
    }
    rows.into_iter()
        .map(|(query_text, count, avg_results)| {
            let p95_ms = p95(by_text.remove(&query_text).unwrap_or_default());
            QueryStat {
                query_text,
                count,
                avg_results,
                p95_ms,
            }
        })
        .collect()
}

/// How one attempt at a job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    Succeeded(Value),
    /// A retryable failure: run again at `run_after` if attempts remain,
    /// otherwise the job fails with `error`.
    Retry {
        error: String,
        run_after: DateTime<Utc>,
    },
    Failed(String),
}

/// Message recorded on a job whose worker vanished on its last attempt.
pub const LEASE_EXPIRED_ERROR: &str =
    "the worker running this job stopped answering (lease expired) and no attempts remain";

/// Which catalog backend a `catalog.url` selects.
pub async fn open_catalog(
    url: Option<&str>,
    data_dir: &std::path::Path,
    max_connections: usize,
) -> StoreResult<Arc<dyn Catalog>> {
    match url {
        None => {
            std::fs::create_dir_all(data_dir).map_err(|e| {
                StoreError::Unavailable(
                    format!("cannot create data directory {}: {e}", data_dir.display()),
                    Some(Arc::new(e)),
                )
            })?;
            let path = data_dir.join("catalog.sqlite3");
            Ok(Arc::new(
                sqlite::SqliteCatalog::open(&path, max_connections).await?,
            ))
        }
        Some(url) => Ok(Arc::new(
            postgres::PostgresCatalog::connect(url, max_connections).await?,
        )),
    }
}

/// Turns a product INSERT into an upsert that replaces the editable fields,
/// bumps the version and sends the product back to indexing. The same SQL
/// on both backends.
pub(crate) const ON_CONFLICT_REPLACE: &str = " ON CONFLICT (tenant, external_id) DO UPDATE SET
     title = excluded.title, description = excluded.description,
     category = excluded.category, price = excluded.price,
     currency = excluded.currency, image_url = excluded.image_url,
     tags = excluded.tags, in_stock = excluded.in_stock,
     metadata = excluded.metadata, index_status = 'pending',
     index_error = NULL, version = products.version + 1,
     updated_at = excluded.updated_at";

/// Tags and scopes are stored as JSON arrays of strings in both backends.
pub(crate) fn string_list_from_json(text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Other(format!("corrupt string list: {e}"), Some(Arc::new(e))))
}

pub(crate) fn object_from_json(text: &str) -> StoreResult<serde_json::Map<String, Value>> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Other(format!("corrupt metadata: {e}"), Some(Arc::new(e))))
}
