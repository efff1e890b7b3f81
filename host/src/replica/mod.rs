//! The edge role (DESIGN.md "Roles"): a replica of an origin's catalog and
//! vectors in this node's data directory, kept by following the origin's
//! change feed (API.md "Replication").
//!
//! The follower bootstraps from the origin's snapshot page by page, then
//! long-polls the feed. Each page is applied vectors first, then the
//! catalog rows together with the replica's position in one SQLite
//! transaction; applying is idempotent, so after a crash anywhere the page
//! is fetched and applied again and nothing is lost or doubled. Searches
//! read only the local catalog and Qdrant Edge shard.

pub mod forward;
pub mod outbox;
pub mod wire;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use tokio::sync::watch;

use crate::api::auth::Authenticator;
use crate::api::quotas::TenantPolicies;
use crate::api::types::{ChangeKindName, FeedPage, REPLICATION_PROTOCOL, ReplicaProduct, SnapshotPage};
use crate::encoder::service::{BatchConfig, EncoderService, EncoderState, SharedEncoder};
use crate::encoder::{Encoder, EncoderOptions, ModelSource};
use crate::model::now;
use crate::store::replica::{IndexGeneration, ReplicaBatch, ReplicaState};
use crate::store::sqlite::SqliteCatalog;
use crate::store::vectors::{SharedVectors, VectorIndex, VectorPoint, same_point};

/// Replication lag, seconds since the edge last knew it held everything
/// the origin had.
pub const LAG_SECONDS: &str = "vitrine_replica_lag_seconds";
/// Changes the edge has not applied yet (the origin's head less the last
/// applied sequence).
pub const LAG_SEQUENCES: &str = "vitrine_replica_lag_sequences";
/// Changes applied, by `phase` (`bootstrap`: snapshot products; `follow`:
/// feed entries).
pub const CHANGES_APPLIED: &str = "vitrine_replica_changes_applied_total";
/// Response bytes received from the origin.
pub const BYTES_RECEIVED: &str = "vitrine_replica_bytes_received_total";
/// Products applied by the bootstrap so far.
pub const BOOTSTRAP_PRODUCTS: &str = "vitrine_replica_bootstrap_products";
/// Product changes whose point the index already held as it was (a
/// metadata-only change, say): the point is left where it is.
pub const POINTS_UNCHANGED: &str = "vitrine_replica_points_unchanged_total";
/// At an origin: superseded changes its compaction deleted.
pub const CHANGES_COMPACTED: &str = "vitrine_replica_changes_compacted_total";
/// How often an origin compacts its change feed, and how many changes one
/// transaction of it looks at (SQLite has one writer: short transactions).
const COMPACT_EVERY: Duration = Duration::from_secs(30);
const COMPACT_SPAN: i64 = 5_000;

/// How long the origin may hold a long poll.
const WAIT: Duration = Duration::from_secs(2);
/// Changes per feed page.
const FEED_LIMIT: u32 = 500;
/// A failed call to the origin is retried after this, doubling to `MAX_BACKOFF`.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge};
    describe_gauge!(
        LAG_SECONDS,
        "seconds since this edge last knew it held the origin's state"
    );
    describe_gauge!(LAG_SEQUENCES, "changes at the origin this edge has not applied");
    describe_counter!(CHANGES_APPLIED, "changes applied to this replica, by phase");
    describe_counter!(BYTES_RECEIVED, "bytes received from the origin");
    describe_gauge!(BOOTSTRAP_PRODUCTS, "products the bootstrap has applied");
    describe_counter!(outbox::LOGS_DELIVERED, "search logs delivered to the origin");
    describe_counter!(outbox::LOGS_REFUSED, "search logs the origin refused, dropped");
    describe_counter!(
        POINTS_UNCHANGED,
        "product changes applied without rewriting the point the index held as it was"
    );
    describe_counter!(
        CHANGES_COMPACTED,
        "superseded changes an origin deleted from its change feed"
    );
}

/// At an origin: keeps the change feed about as large as the number of
/// entities, by deleting every change a later change of the same entity
/// supersedes (`ReplicationStore::compact_changes`), from the start at
/// start-up, then what was added since, every `COMPACT_EVERY`, until `stop`.
pub async fn compact_feed(catalog: Arc<dyn crate::store::Catalog>, mut stop: watch::Receiver<bool>) {
    let mut at = 0;
    while !*stop.borrow() {
        loop {
            match catalog.compact_changes(at, COMPACT_SPAN).await {
                Ok((through, deleted)) => {
                    metrics::counter!(CHANGES_COMPACTED).increment(deleted);
                    if through < at {
                        // The head went back (the catalog was restored):
                        // what it holds now is compacted from the start.
                        at = 0;
                        continue;
                    }
                    if through == at {
                        break;
                    }
                    at = through;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "compacting the change feed failed; trying again later");
                    break;
                }
            }
            tokio::task::yield_now().await;
        }
        tokio::select! {
            () = tokio::time::sleep(COMPACT_EVERY) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the rest of the edge knows of its replica (health, headers,
/// metrics).
#[derive(Debug)]
pub struct ReplicaStatus {
    started: Instant,
    bootstrapped: AtomicBool,
    applied: AtomicI64,
    head: AtomicI64,
    /// Milliseconds after `started` when the edge last held the origin's
    /// head; `u64::MAX`: never.
    caught_up_ms: AtomicU64,
    origin_reachable: AtomicBool,
    bootstrap_products: AtomicU64,
    bootstrap_total: AtomicU64,
    /// When this process fetched its first snapshot page, and how long its
    /// bootstrap took.
    bootstrap_started: parking_lot::Mutex<Option<Instant>>,
    bootstrap_secs: parking_lot::Mutex<Option<f64>>,
    last_error: parking_lot::Mutex<Option<String>>,
    pub max_staleness: Duration,
}

impl ReplicaStatus {
    pub fn new(max_staleness: Duration) -> Self {
        Self {
            started: Instant::now(),
            bootstrapped: AtomicBool::new(false),
            applied: AtomicI64::new(0),
            head: AtomicI64::new(0),
            caught_up_ms: AtomicU64::new(u64::MAX),
            origin_reachable: AtomicBool::new(false),
            bootstrap_products: AtomicU64::new(0),
            bootstrap_total: AtomicU64::new(0),
            bootstrap_started: parking_lot::Mutex::new(None),
            bootstrap_secs: parking_lot::Mutex::new(None),
            last_error: parking_lot::Mutex::new(None),
            max_staleness,
        }
    }

    pub fn bootstrapped(&self) -> bool {
        self.bootstrapped.load(Ordering::Acquire)
    }

    /// How long since the edge last knew it held everything the origin had;
    /// `None` before it ever did.
    pub fn staleness(&self) -> Option<Duration> {
        let at = self.caught_up_ms.load(Ordering::Acquire);
        (at != u64::MAX).then(|| self.started.elapsed().saturating_sub(Duration::from_millis(at)))
    }

    pub fn applied(&self) -> i64 {
        self.applied.load(Ordering::Acquire)
    }

    pub fn head(&self) -> i64 {
        self.head.load(Ordering::Acquire)
    }

    pub fn lag_sequences(&self) -> i64 {
        (self.head() - self.applied()).max(0)
    }

    pub fn origin_reachable(&self) -> bool {
        self.origin_reachable.load(Ordering::Acquire)
    }

    pub fn bootstrap_products(&self) -> u64 {
        self.bootstrap_products.load(Ordering::Acquire)
    }

    /// Seconds the bootstrap took in this process (from its first page).
    pub fn bootstrap_secs(&self) -> Option<f64> {
        *self.bootstrap_secs.lock()
    }

    pub fn bootstrap_total(&self) -> u64 {
        self.bootstrap_total.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }

    /// Ready: bootstrapped and no staler than `edge.max_staleness_secs`.
    pub fn fresh(&self) -> bool {
        self.bootstrapped() && self.staleness().is_some_and(|s| s <= self.max_staleness)
    }

    fn caught_up(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.caught_up_ms.store(ms, Ordering::Release);
    }

    fn positions(&self, applied: i64, head: i64) {
        self.applied.store(applied, Ordering::Release);
        self.head.store(head.max(applied), Ordering::Release);
        if applied >= head {
            self.caught_up();
        }
        metrics::gauge!(LAG_SEQUENCES).set(self.lag_sequences() as f64);
    }

    fn reachable(&self, ok: Result<(), String>) {
        self.origin_reachable.store(ok.is_ok(), Ordering::Release);
        *self.last_error.lock() = ok.err();
    }

    /// Refreshes the lag gauge (also at scrape time: it grows while the
    /// origin is away).
    pub fn export(&self) {
        metrics::gauge!(LAG_SECONDS).set(self.staleness().map_or(f64::INFINITY, |s| s.as_secs_f64()));
        metrics::gauge!(LAG_SEQUENCES).set(self.lag_sequences() as f64);
        metrics::gauge!(BOOTSTRAP_PRODUCTS).set(self.bootstrap_products() as f64);
    }
}

/// What the API layer of an edge holds.
pub struct EdgeRole {
    pub status: Arc<ReplicaStatus>,
    pub forwarder: forward::Forwarder,
    /// `edge.tenants`: searches of other tenants go to the origin.
    pub tenants: Vec<String>,
}

impl EdgeRole {
    /// Whether this edge answers a request itself: the search path, of a
    /// tenant it replicates, once its bootstrap is done (before that, and
    /// for other tenants, the origin answers).
    pub fn answers(&self, method: &axum::http::Method, path: &str) -> bool {
        if !forward::served_locally(method, path) {
            return false;
        }
        match forward::search_tenant(path) {
            None => true,
            Some(t) => {
                self.status.bootstrapped() && (self.tenants.is_empty() || self.tenants.iter().any(|x| x == t))
            }
        }
    }
}

/// The edge's settings, checked (`config::EdgeSettings`).
#[derive(Clone)]
pub struct EdgeConfig {
    /// Without a trailing slash.
    pub origin_url: String,
    pub key: SecretString,
    pub tenants: Vec<String>,
    pub page_size: u32,
}

impl EdgeConfig {
    pub fn from_settings(e: &crate::config::EdgeSettings) -> Option<Self> {
        Some(Self {
            origin_url: e.origin_url.as_deref()?.trim_end_matches('/').to_owned(),
            key: e.key.clone()?,
            tenants: e.tenants.clone(),
            page_size: e.bootstrap_page_size,
        })
    }

    /// What the replica records as its origin: another URL or another
    /// tenant list needs a new bootstrap.
    fn identity(&self) -> String {
        format!("{}#{}", self.origin_url, self.tenants.join(","))
    }

    fn tenants_param(&self) -> Option<String> {
        (!self.tenants.is_empty()).then(|| self.tenants.join(","))
    }
}

/// A call to the origin failed.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("the origin is unreachable: {0}")]
    Unreachable(String),
    #[error("the origin answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("{0}")]
    Protocol(String),
    #[error("the local replica: {0}")]
    Local(String),
}

/// Follows the origin into the local replica.
pub struct Follower {
    pub config: EdgeConfig,
    pub catalog: Arc<SqliteCatalog>,
    pub vectors: SharedVectors,
    pub auth: Arc<Authenticator>,
    pub policies: Arc<TenantPolicies>,
    /// Replicated components are stored in its blob store and compiled here.
    pub plugins: Arc<crate::plugins::PluginRegistry>,
    /// The query encoder: the model the origin names, loaded here.
    pub encoder: SharedEncoder,
    pub encoder_options: EncoderOptions,
    pub batch: BatchConfig,
    /// Where the Qdrant Edge shard lives.
    pub data_dir: std::path::PathBuf,
    pub status: Arc<ReplicaStatus>,
    pub client: reqwest::Client,
}

impl Follower {
    pub fn client(request_timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default()
    }

    /// Runs until `stop`: loads the model the replica's index was built
    /// with (or, for a new replica, the one the origin names), opens the
    /// local index, then bootstraps (or resumes) and follows.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = MIN_BACKOFF;
        let index = loop {
            match self.start().await {
                Ok(index) => break index,
                Err(e) => {
                    tracing::warn!(error = %e, "the edge cannot start following yet; retrying");
                    if matches!(e, FollowError::Unreachable(_) | FollowError::Refused { .. }) {
                        self.status.reachable(Err(e.to_string()));
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF * 6);
        };
        match self.catalog.replica_state().await {
            Ok(Some(s)) if s.origin == self.config.identity() => {
                self.status.bootstrapped.store(s.bootstrapped, Ordering::Release);
                self.status.applied.store(s.seq, Ordering::Release);
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot read the replica's position"),
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            let step = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                r = self.step(&*index) => r,
            };
            match step {
                Ok(()) => {
                    self.status.reachable(Ok(()));
                    backoff = MIN_BACKOFF;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "replication step failed");
                    let unreachable = matches!(e, FollowError::Unreachable(_) | FollowError::Refused { .. });
                    if unreachable {
                        self.status.reachable(Err(e.to_string()));
                    } else {
                        *self.status.last_error.lock() = Some(e.to_string());
                    }
                    tokio::select! {
                        _ = stop.wait_for(|s| *s) => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            self.status.export();
        }
    }

    /// The model, then the index: what searches need before the replica
    /// can serve.
    async fn start(&self) -> Result<Arc<dyn VectorIndex>, FollowError> {
        let local = self
            .catalog
            .replica_state()
            .await
            .map_err(|e| FollowError::Local(e.to_string()))?
            .filter(|s| s.origin == self.config.identity())
            .and_then(|s| s.generation);
        let generation = match local {
            Some(g) => g,
            None => self.origin_generation().await?,
        };
        if self.encoder.service().is_err() {
            match self.load_model(&generation).await {
                Ok(service) => self.encoder.set(EncoderState::Ready(service)),
                Err(why) => {
                    tracing::error!(error = %why, "the origin's model does not load here; this edge is not ready");
                    self.encoder.set(EncoderState::Failed(why.clone()));
                    return Err(FollowError::Local(why));
                }
            }
        }
        let dims = usize::try_from(generation.dims).unwrap_or(0);
        let index = crate::store::vectors::EdgeIndex::open_async(self.data_dir.clone(), dims)
            .await
            .map(|i| Arc::new(i) as Arc<dyn VectorIndex>)
            .map_err(|e| {
                let why = format!("cannot open the Qdrant Edge index in data_dir: {e}");
                self.vectors
                    .set(crate::store::vectors::VectorsState::Failed(why.clone()));
                FollowError::Local(why)
            })?;
        self.vectors
            .set(crate::store::vectors::VectorsState::Ready(index.clone()));
        tracing::info!(
            backend = index.backend(),
            dims = index.dims(),
            "vector index ready"
        );
        Ok(index)
    }

    /// The generation the origin serves now (any feed page names it).
    async fn origin_generation(&self) -> Result<IndexGeneration, FollowError> {
        let page: FeedPage = self
            .get(
                "/v1/replication/feed",
                &[("after", "0".to_owned()), ("limit", "1".to_owned())],
            )
            .await?;
        Self::check_protocol(page.protocol)?;
        Ok(page.generation)
    }

    /// Loads the model `generation` names and checks that it is the one the
    /// origin's index was built with (same fingerprint).
    async fn load_model(&self, generation: &IndexGeneration) -> Result<EncoderService, String> {
        let source: ModelSource = generation
            .model
            .parse()
            .map_err(|e: crate::encoder::EncoderError| {
                format!("the origin's model {:?}: {e}", generation.model)
            })?;
        tracing::info!(model = %generation.model, "loading the origin's model");
        let options = self.encoder_options.clone();
        let encoder = tokio::task::spawn_blocking(move || Encoder::load(&source, &options))
            .await
            .map_err(|e| format!("the encoder loader crashed: {e}"))?
            .map_err(|e| format!("cannot load the origin's model {:?}: {e}", generation.model))?;
        if encoder.model_id() != generation.model_id {
            return Err(format!(
                "the model at {:?} here is {}, but the origin's index was built with {}",
                generation.model,
                encoder.model_id(),
                generation.model_id
            ));
        }
        let service = EncoderService::start(encoder, self.batch)
            .map_err(|e| format!("cannot start the encoder thread: {e}"))?
            .with_source(&generation.model);
        tracing::info!(model = %generation.model_id, dims = service.dims(), "encoder ready");
        Ok(service)
    }

    /// Whether this edge's encoder and index fit `generation`.
    fn fits(&self, index: &dyn VectorIndex, generation: &IndexGeneration) -> bool {
        self.encoder
            .service()
            .is_ok_and(|s| s.model_id() == generation.model_id)
            && i64::try_from(index.dims()).is_ok_and(|d| d == generation.dims)
    }

    /// Builds the index of a new origin generation beside the live one from
    /// a full pass over the snapshot, and switches to it atomically: until
    /// the switch, searches use the old index (and the old model, if the
    /// model changed), never a mix or an empty index. The replica's
    /// position is kept: the feed after it brings what changed meanwhile.
    async fn rebuild(
        &self,
        index: &dyn VectorIndex,
        target: &IndexGeneration,
        state: &ReplicaState,
    ) -> Result<(), FollowError> {
        let local = |e: String| FollowError::Local(e);
        tracing::info!(generation = target.id, model = %target.model_id, "the origin switched index generations: rebuilding beside the live index");
        let encoder = if self
            .encoder
            .service()
            .is_ok_and(|s| s.model_id() == target.model_id)
        {
            None
        } else {
            Some(self.load_model(target).await.map_err(local)?)
        };
        let dims = usize::try_from(target.dims).map_err(|e| FollowError::Protocol(e.to_string()))?;
        let generation = index
            .begin_generation(dims)
            .await
            .map_err(|e| local(e.to_string()))?;
        let built = async {
            let mut cursor: Option<String> = None;
            let mut total = 0usize;
            loop {
                let mut query = vec![("limit", self.config.page_size.to_string())];
                if let Some(c) = &cursor {
                    query.push(("cursor", c.clone()));
                }
                if let Some(t) = self.config.tenants_param() {
                    query.push(("tenants", t));
                }
                let page: SnapshotPage = self.get("/v1/replication/snapshot", &query).await?;
                Self::check_protocol(page.protocol)?;
                if page.generation != *target {
                    return Err(FollowError::Protocol(
                        "the origin switched generations again during the rebuild".into(),
                    ));
                }
                let mut batch = ReplicaBatch::default();
                for t in &page.tenants {
                    batch.tenants.push(wire::tenant_from_wire(t).map_err(protocol)?);
                }
                let points = self.products(&page.products, &mut batch)?;
                total += points.len();
                if points.iter().any(|p| p.vector.len() != dims) {
                    return Err(FollowError::Protocol(
                        "vectors of another dimension than the generation's".into(),
                    ));
                }
                if !points.is_empty() {
                    index
                        .upsert_generation(&generation, points)
                        .await
                        .map_err(|e| local(e.to_string()))?;
                }
                // The rows are the origin's now too (hydration reads them).
                self.apply(batch, state.clone()).await?;
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => return Ok(total),
                }
            }
        }
        .await;
        match built {
            Ok(points) => {
                index
                    .commit_generation(generation)
                    .await
                    .map_err(|e| local(e.to_string()))?;
                if let Some(service) = encoder {
                    self.encoder.set(EncoderState::Ready(service));
                }
                let mut state = state.clone();
                state.generation = Some(target.clone());
                state.updated_at = now();
                // Pages cached (and ETags given) before the switch end.
                let bump = ReplicaBatch {
                    bump_generations: true,
                    ..ReplicaBatch::default()
                };
                self.apply(bump, state).await?;
                tracing::info!(
                    generation = target.id,
                    points,
                    "switched to the origin's new index generation"
                );
                Ok(())
            }
            Err(e) => {
                if let Err(abort) = index.abort_generation(generation).await {
                    tracing::warn!(error = %abort, "cannot drop an unfinished generation");
                }
                Err(e)
            }
        }
    }

    /// One page: of the snapshot while bootstrapping, of the feed after.
    async fn step(&self, index: &dyn VectorIndex) -> Result<(), FollowError> {
        let local = |e: crate::store::StoreError| FollowError::Local(e.to_string());
        let state = self.catalog.replica_state().await.map_err(local)?;
        let state = match state {
            Some(s) if s.origin == self.config.identity() => s,
            Some(s) => {
                tracing::warn!(was = %s.origin, now = %self.config.identity(), "another origin: bootstrapping anew");
                self.clear(index).await?;
                return self.bootstrap_page(index, None, None).await;
            }
            None => {
                // A fresh bootstrap starts from an empty index: points left
                // by an attempt that died before its first page was
                // recorded may belong to products deleted since.
                let leftovers = index
                    .count(None)
                    .await
                    .map_err(|e| FollowError::Local(e.to_string()))?;
                if leftovers > 0 {
                    self.clear(index).await?;
                }
                return self.bootstrap_page(index, None, None).await;
            }
        };
        if state.bootstrapped {
            self.follow(index, &state).await
        } else {
            self.bootstrap_page(index, state.cursor.as_deref(), state.generation.as_ref())
                .await
        }
    }

    /// Empties the replica (another origin, a feed it is ahead of, a
    /// generation switch mid-bootstrap, a fresh bootstrap over leftovers):
    /// an empty generation of the index goes live, then the catalog is
    /// emptied.
    async fn clear(&self, index: &dyn VectorIndex) -> Result<(), FollowError> {
        let local = |e: String| FollowError::Local(e);
        empty_generation(index, index.dims()).await?;
        self.catalog
            .clear_replica()
            .await
            .map_err(|e| local(e.to_string()))?;
        self.status.bootstrapped.store(false, Ordering::Release);
        Ok(())
    }

    /// A GET to the origin with the replicate key: the answer's bytes
    /// (counted), or why there are none.
    async fn fetch(&self, path: &str, query: &[(&str, String)]) -> Result<bytes::Bytes, FollowError> {
        let unreachable = |e: reqwest::Error| FollowError::Unreachable(e.without_url().to_string());
        let response = self
            .client
            .get(format!("{}{path}", self.config.origin_url))
            .bearer_auth(self.config.key.expose_secret())
            .query(query)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        metrics::counter!(BYTES_RECEIVED).increment(bytes.len() as u64);
        if !status.is_success() {
            let body = String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned();
            return Err(FollowError::Refused {
                status: status.as_u16(),
                body,
            });
        }
        Ok(bytes)
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, FollowError> {
        let bytes = self.fetch(path, query).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| FollowError::Protocol(format!("unreadable answer from {path}: {e}")))
    }

    fn check_protocol(protocol: u32) -> Result<(), FollowError> {
        if protocol == REPLICATION_PROTOCOL {
            Ok(())
        } else {
            Err(FollowError::Protocol(format!(
                "the origin speaks replication protocol {protocol}; this edge speaks {REPLICATION_PROTOCOL}"
            )))
        }
    }

    async fn bootstrap_page(
        &self,
        index: &dyn VectorIndex,
        cursor: Option<&str>,
        generation: Option<&IndexGeneration>,
    ) -> Result<(), FollowError> {
        let mut query = vec![("limit", self.config.page_size.to_string())];
        if let Some(c) = cursor {
            query.push(("cursor", c.to_owned()));
        }
        if let Some(t) = self.config.tenants_param() {
            query.push(("tenants", t));
        }
        self.status
            .bootstrap_started
            .lock()
            .get_or_insert_with(Instant::now);
        let page: SnapshotPage = self.get("/v1/replication/snapshot", &query).await?;
        Self::check_protocol(page.protocol)?;
        if let Some(total) = page.total {
            self.status.bootstrap_total.store(total, Ordering::Release);
        }
        if cursor.is_none() {
            tracing::info!(
                seq = page.seq,
                products = page.total,
                "bootstrapping from the origin's snapshot"
            );
            if !self.fits(index, &page.generation) {
                // The origin switched models since this edge loaded one:
                // the (empty) replica takes the new model and dimension.
                self.adopt(index, &page.generation).await?;
            }
        } else if generation != Some(&page.generation) {
            // A new generation went live mid-bootstrap: start over, so that
            // every vector comes from one generation.
            tracing::warn!("the origin switched index generations during the bootstrap: starting over");
            self.clear(index).await?;
            return Ok(());
        }
        let mut batch = ReplicaBatch::default();
        for t in &page.tenants {
            batch.tenants.push(wire::tenant_from_wire(t).map_err(protocol)?);
        }
        for k in &page.keys {
            batch.keys.push(wire::key_from_wire(k).map_err(protocol)?);
        }
        for p in &page.plugins {
            batch.plugins.push(wire::plugin_from_wire(p).map_err(protocol)?);
        }
        self.fetch_components(&batch).await?;
        let n = page.products.len() as u64;
        let points = self.products(&page.products, &mut batch)?;
        self.write_points(index, points).await?;
        let done = page.next.is_none();
        let had_plugins = !batch.plugins.is_empty();
        self.apply(
            batch,
            ReplicaState {
                origin: self.config.identity(),
                seq: page.seq,
                cursor: page.next.clone(),
                bootstrapped: done,
                generation: Some(page.generation.clone()),
                updated_at: now(),
            },
        )
        .await?;
        self.invalidate_keys(&page.keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(), &[])
            .await;
        self.warm_plugins(had_plugins);
        let total = self.status.bootstrap_products.fetch_add(n, Ordering::AcqRel) + n;
        metrics::counter!(CHANGES_APPLIED, "phase" => "bootstrap").increment(n);
        self.status.applied.store(page.seq, Ordering::Release);
        if done {
            let _ = index.optimize().await;
            self.status.bootstrapped.store(true, Ordering::Release);
            let secs = self
                .status
                .bootstrap_started
                .lock()
                .map(|t| t.elapsed().as_secs_f64());
            *self.status.bootstrap_secs.lock() = secs;
            tracing::info!(
                products = total,
                seq = page.seq,
                secs,
                "bootstrap finished; following the feed"
            );
        } else {
            tracing::info!(products = total, "bootstrap in progress");
        }
        Ok(())
    }

    async fn follow(&self, index: &dyn VectorIndex, state: &ReplicaState) -> Result<(), FollowError> {
        let after = state.seq;
        let mut query = vec![
            ("after", after.to_string()),
            ("limit", FEED_LIMIT.to_string()),
            ("wait_ms", WAIT.as_millis().to_string()),
        ];
        if let Some(t) = self.config.tenants_param() {
            query.push(("tenants", t));
        }
        let page: FeedPage = match self.get("/v1/replication/feed", &query).await {
            Err(FollowError::Refused { status: 409, body }) => {
                tracing::error!(answer = %body, "this replica is ahead of the origin's feed: bootstrapping anew");
                return self.clear(index).await;
            }
            other => other?,
        };
        Self::check_protocol(page.protocol)?;
        if state.generation.as_ref() != Some(&page.generation) {
            // This page's vectors are the new generation's: rebuild first,
            // then read the feed again from the same position.
            return self.rebuild(index, &page.generation, state).await;
        }
        if page.last < after {
            return Err(FollowError::Protocol(format!(
                "the feed went back from {after} to {}",
                page.last
            )));
        }
        if page.changes.is_empty() {
            if page.last > after {
                // Entries of other tenants only: move the position on.
                self.apply(ReplicaBatch::default(), self.state(page.last, &page.generation))
                    .await?;
            }
            self.status.positions(page.last, page.head);
            return Ok(());
        }
        let mut batch = ReplicaBatch::default();
        let mut products = Vec::new();
        let mut gone: Vec<(String, String)> = Vec::new();
        let (mut keys_changed, mut keys_gone, mut tenants_changed) = (Vec::new(), Vec::new(), Vec::new());
        for c in &page.changes {
            match c.kind {
                ChangeKindName::Tenant => {
                    if let Some(t) = &c.tenant_record {
                        batch.tenants.push(wire::tenant_from_wire(t).map_err(protocol)?);
                        tenants_changed.push(t.id.clone());
                    }
                }
                ChangeKindName::Key => match &c.key {
                    Some(k) => {
                        batch.keys.push(wire::key_from_wire(k).map_err(protocol)?);
                        keys_changed.push(k.id.clone());
                    }
                    None => {
                        batch.keys_gone.push(c.id.clone());
                        keys_gone.push(c.id.clone());
                    }
                },
                ChangeKindName::Product => match &c.product {
                    Some(p) => products.push((**p).clone()),
                    None => gone.push((c.tenant.clone(), c.id.clone())),
                },
                ChangeKindName::Plugin => {
                    if let Some(p) = &c.plugin {
                        batch.plugins.push(wire::plugin_from_wire(p).map_err(protocol)?);
                    }
                }
            }
        }
        self.fetch_components(&batch).await?;
        let points = self.products(&products, &mut batch)?;
        let points = self.changed_points(index, points).await?;
        // Deletes first: a product deleted and created again in this page
        // is listed once, with its state now.
        for (tenant, ids) in group(&gone) {
            index
                .delete(&tenant, &ids)
                .await
                .map_err(|e| FollowError::Local(e.to_string()))?;
        }
        self.write_points(index, points).await?;
        batch.products_gone = gone;
        let n = page.changes.len() as u64;
        let had_plugins = !batch.plugins.is_empty();
        self.apply(batch, self.state(page.last, &page.generation)).await?;
        self.warm_plugins(had_plugins);
        self.invalidate_keys(&keys_changed, &keys_gone).await;
        for t in &tenants_changed {
            self.policies.forget(t).await;
        }
        metrics::counter!(CHANGES_APPLIED, "phase" => "follow").increment(n);
        self.status.positions(page.last, page.head);
        Ok(())
    }

    /// Stores the components of the batch's plugin versions that this edge
    /// lacks, checked against their digest, before the versions are
    /// recorded: an active version here always has its component.
    async fn fetch_components(&self, batch: &ReplicaBatch) -> Result<(), FollowError> {
        use sha2::Digest;
        let blobs = self.plugins.host().blobs();
        for (tenant, _, versions) in &batch.plugins {
            for v in versions {
                let key = crate::plugins::blob_key(tenant, &v.digest);
                if blobs.get(&key).await.is_ok() {
                    continue;
                }
                let bytes = self
                    .fetch(&format!("/v1/replication/plugins/{tenant}/{}", v.digest), &[])
                    .await?;
                let digest: String = sha2::Sha256::digest(&bytes)
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                if digest != v.digest {
                    return Err(FollowError::Protocol(format!(
                        "component {} of plugin {tenant}/{} has another digest",
                        v.digest, v.name
                    )));
                }
                blobs
                    .put(&key, bytes)
                    .await
                    .map_err(|e| FollowError::Local(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Compiles newly replicated active plugins in the background (searches
    /// fall back until a version is ready).
    fn warm_plugins(&self, batch_had_plugins: bool) {
        if batch_had_plugins {
            let plugins = self.plugins.clone();
            tokio::spawn(async move { plugins.warm_active().await });
        }
    }

    fn state(&self, seq: i64, generation: &IndexGeneration) -> ReplicaState {
        ReplicaState {
            origin: self.config.identity(),
            seq,
            cursor: None,
            bootstrapped: true,
            generation: Some(generation.clone()),
            updated_at: now(),
        }
    }

    /// Takes another model and dimension while the replica is empty (at the
    /// start of a bootstrap): an empty generation of the new dimension goes
    /// live, then the new model.
    async fn adopt(&self, index: &dyn VectorIndex, target: &IndexGeneration) -> Result<(), FollowError> {
        let local = |e: String| FollowError::Local(e);
        let service = self.load_model(target).await.map_err(local)?;
        let dims = usize::try_from(target.dims).map_err(|e| FollowError::Protocol(e.to_string()))?;
        if index.dims() != dims {
            empty_generation(index, dims).await?;
        }
        self.encoder.set(EncoderState::Ready(service));
        Ok(())
    }

    /// Adds the products to the batch and returns their points. A product
    /// the origin has no current vectors for (being indexed, or failed)
    /// keeps the point the replica has: the origin keeps its old one too.
    fn products(
        &self,
        products: &[ReplicaProduct],
        batch: &mut ReplicaBatch,
    ) -> Result<Vec<VectorPoint>, FollowError> {
        let mut points = Vec::new();
        for p in products {
            let (product, vectors) = wire::product_from_wire(p).map_err(protocol)?;
            if let Some((image, text)) = vectors {
                // Payload and keywords from its fields, by the functions the
                // origin's indexing uses; vectors from the origin.
                let text_of = crate::indexing::product_text(&product);
                points.push(crate::indexing::point(&product, image, text, &text_of));
            }
            batch.products.push(product);
        }
        Ok(points)
    }

    /// Leaves out the points the index already holds as they are. A change
    /// that touched neither a product's vectors nor its keywords nor its
    /// filter fields (its metadata, say) then leaves its point in its
    /// indexed segment, as the origin leaves its own: rewriting it would
    /// move it into the unindexed appendable segment, which every search
    /// scans. Compared with the index rather than the replica's catalog,
    /// since a page writes the index first: after a crash between the two
    /// the index already holds the page's points.
    async fn changed_points(
        &self,
        index: &dyn VectorIndex,
        points: Vec<VectorPoint>,
    ) -> Result<Vec<VectorPoint>, FollowError> {
        if points.is_empty() {
            return Ok(points);
        }
        let pairs: Vec<(String, String)> = points
            .iter()
            .map(|p| (p.tenant.clone(), p.product_id.clone()))
            .collect();
        let mut stored = std::collections::HashMap::new();
        for (tenant, ids) in group(&pairs) {
            for p in index
                .get_points(&tenant, &ids)
                .await
                .map_err(|e| FollowError::Local(e.to_string()))?
            {
                stored.insert((p.tenant.clone(), p.product_id.clone()), p);
            }
        }
        let before = points.len();
        let points: Vec<VectorPoint> = points
            .into_iter()
            .filter(|p| {
                !stored
                    .get(&(p.tenant.clone(), p.product_id.clone()))
                    .is_some_and(|s| same_point(s, p))
            })
            .collect();
        metrics::counter!(POINTS_UNCHANGED).increment((before - points.len()) as u64);
        Ok(points)
    }

    async fn write_points(
        &self,
        index: &dyn VectorIndex,
        points: Vec<VectorPoint>,
    ) -> Result<(), FollowError> {
        if points.is_empty() {
            return Ok(());
        }
        if let Some(p) = points.iter().find(|p| p.vector.len() != index.dims()) {
            return Err(FollowError::Protocol(format!(
                "the origin's vectors have {} dimensions; this edge's model has {}",
                p.vector.len(),
                index.dims()
            )));
        }
        index
            .upsert(points)
            .await
            .map_err(|e| FollowError::Local(e.to_string()))
    }

    async fn apply(&self, batch: ReplicaBatch, state: ReplicaState) -> Result<(), FollowError> {
        self.catalog
            .apply_replica(batch, state)
            .await
            .map_err(|e| FollowError::Local(e.to_string()))
    }

    /// Keys the replica changed are read again from it; deleted ones stop
    /// working at once.
    async fn invalidate_keys(&self, changed: &[String], gone: &[String]) {
        for id in changed {
            self.auth.refresh_key(id).await;
        }
        for id in gone {
            self.auth.forget_key(id).await;
        }
    }
}

/// Makes an empty generation of `dims` live (the replica is being emptied
/// or takes another dimension).
async fn empty_generation(index: &dyn VectorIndex, dims: usize) -> Result<(), FollowError> {
    let local = |e: crate::store::vectors::VectorError| FollowError::Local(e.to_string());
    let g = index.begin_generation(dims).await.map_err(local)?;
    index.commit_generation(g).await.map_err(local)
}

fn protocol(e: wire::WireError) -> FollowError {
    FollowError::Protocol(e.to_string())
}

/// `(tenant, id)` pairs grouped by tenant.
fn group(pairs: &[(String, String)]) -> Vec<(String, Vec<String>)> {
    let mut by: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for (t, id) in pairs {
        by.entry(t).or_default().push(id.clone());
    }
    by.into_iter().map(|(t, ids)| (t.to_owned(), ids)).collect()
}
