//! [`VectorIndex`] on the embedded `qdrant-edge` 0.7 engine.
//!
//! On-disk layout:
//! ```text
//! <data_dir>/vectors/CURRENT     "gen-<n>\n": the live generation
//! <data_dir>/vectors/gen-<n>/    one qdrant-edge shard (= the collection)
//! ```
//!
//! Facts about qdrant-edge 0.7.2 that shape this module (read from its source):
//! * Every call is synchronous and may do disk IO or CPU-heavy work (HNSW
//!   build, brute-force scoring), so every call runs on tokio's blocking pool.
//! * `EdgeShard::update` appends to a WAL, but `EdgeShard::load` never replays
//!   it (and nothing ever acknowledges/truncates it). Durability therefore
//!   comes only from `EdgeShard::flush()` (WAL + all segments, fsync), which
//!   we call before any write returns. The WAL still grows on every write;
//!   it is reset only when a new generation replaces the shard.
//! * `EdgeShard::flush()` uses `try_lock().expect(..)` on the WAL mutex and
//!   `try_read().expect(..)` on the segment holder, i.e. it PANICS if another
//!   write or an optimisation runs concurrently. Hence the locking scheme:
//!   reads take `live.read()`; writes, flushes and optimisation take
//!   `live.upgradable_read()` (mutually exclusive, yet concurrent with
//!   searches, which qdrant's segment locks already support); the generation
//!   switch takes `live.write()`. `Drop` of a shard also flushes, which is safe
//!   because we only drop shards we own exclusively.
//! * There is no background optimiser: `optimize()` must be called after bulk
//!   writes; until then everything lives in plain (brute-force, exact)
//!   appendable segments.
//! * HNSW uses the engine defaults (m=16, ef_construct=100). Measured with
//!   `examples/bench` (100k random 512-d points, 10 tenants): recall@10 is
//!   only ~0.6 when the tenant filter keeps ~10% of a segment, 0.98 with
//!   tenant+category (small enough for the exact payload-index path). If real
//!   embeddings show the same, the next step is qdrant's multitenancy setup
//!   (`payload_m` on the tenant index, possibly `m = 0`) and/or a larger
//!   `hnsw_ef`; not done here because it was not validated at scale.

use std::collections::HashMap;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use qdrant_edge::external::ordered_float::OrderedFloat;
use qdrant_edge::{
    AnyVariants, BoolIndexParams, Condition, CountRequest, CreateIndex, DEFAULT_VECTOR_NAME, Distance,
    EdgeConfig, EdgeShard, EdgeSparseVectorParams, EdgeVectorParams, FacetRequest, FacetValue,
    FieldCondition, FieldIndexOperations, Filter, FloatIndexParams, Fusion as EngineFusion, JsonPath,
    KeywordIndexParams, Match, MatchAny, Modifier, NamedQuery, OperationError, Payload, PayloadFieldSchema,
    PayloadSchemaParams, PointId, PointInsertOperations, PointOperations, PointStructPersisted, Prefetch,
    QueryEnum, QueryRequest, Range, ScoringQuery, ScrollRequest, SparseVector, UpdateOperation,
    ValueVariants, VectorInternal, VectorPersisted, VectorStructInternal, VectorStructPersisted,
    WithPayloadInterface, WithVector,
};

use super::{
    F_CATEGORY, F_CURRENCY, F_IN_STOCK, F_PRICE, F_PRODUCT_ID, F_TAGS, F_TENANT, FacetCounts, FacetField,
    FacetQuery, Fusion, Generation, Keywords, Layout, Leg, PointPayload, PriceBucket, RRF_K, ScoredPoint,
    V_IMAGE, V_KEYWORDS, V_TEXT, VectorError, VectorFilter, VectorIndex, VectorPoint, VectorQuery,
    check_facets, check_keywords, check_query, check_vector, decode_payload_map, fuse_relative, payload_map,
    point_uuid,
};

const VECTORS_DIR: &str = "vectors";
const CURRENT_FILE: &str = "CURRENT";
const CURRENT_TMP_FILE: &str = "CURRENT.tmp";
const GEN_PREFIX: &str = "gen-";

/// Points per engine update operation. Each operation is one WAL record, and
/// a record must fit a WAL segment (32 MiB by default); 256 x 4096-d f32 is
/// 4 MiB, so this keeps records small for any realistic encoder while still
/// amortising per-operation overhead.
const UPSERT_CHUNK: usize = 256;

/// Embedded qdrant-edge implementation of [`VectorIndex`].
///
/// Only one `EdgeIndex` may have a given `data_dir` open at a time (the engine
/// has no cross-process lock); the service opens it once at startup.
pub struct EdgeIndex {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<data_dir>/vectors`
    root: PathBuf,
    live: RwLock<Live>,
    /// Mirror of `live.dims` so the sync `dims()` never waits on a lock that a
    /// long optimisation or generation switch may hold.
    dims: AtomicUsize,
    /// Mirror of `live.layout == Layout::Hybrid`, for the same reason.
    hybrid: AtomicBool,
    /// Generations under construction. The per-shard mutex serialises writes
    /// into one generation (the engine's flush must not race them).
    pending: Mutex<HashMap<u64, PendingShard>>,
    next_generation: AtomicU64,
}

/// A generation under construction: its dimension and its shard.
type PendingShard = (usize, Arc<Mutex<EdgeShard>>);

struct Live {
    shard: EdgeShard,
    generation: u64,
    dims: usize,
    layout: Layout,
}

impl EdgeIndex {
    /// Open (or create) the index under `data_dir/vectors/`.
    ///
    /// Blocking (disk IO, segment loading): call it at startup or via
    /// [`EdgeIndex::open_async`]. `dims` is the dimension of a fresh store;
    /// an existing live generation keeps the dimension it was built with,
    /// even when the encoder now makes other vectors (a new model): the
    /// service then keeps serving the old index until a full reindex builds
    /// and commits a generation of the new dimension.
    pub fn open(data_dir: &Path, dims: usize) -> Result<EdgeIndex, VectorError> {
        if dims == 0 {
            return Err(VectorError::other("vector dimension must be > 0"));
        }
        let root = data_dir.join(VECTORS_DIR);
        fs::create_dir_all(&root).map_err(|e| io_unavailable("create", &root, e))?;
        // A crash between writing and renaming the temp file leaves it behind.
        remove_if_exists(&root.join(CURRENT_TMP_FILE));

        let existing = list_generations(&root)?;
        let max_existing = existing.iter().copied().max().unwrap_or(0);

        let live = match read_current(&root)? {
            Some(generation) => {
                let path = generation_dir(&root, generation);
                if !path.is_dir() {
                    return Err(VectorError::unavailable(format!(
                        "{} names {GEN_PREFIX}{generation}, which does not exist",
                        root.join(CURRENT_FILE).display()
                    )));
                }
                let shard = EdgeShard::load(&path, None).map_err(op_err)?;
                let (stored, layout) = shard_dims(&shard)?;
                if layout == Layout::Single {
                    tracing::warn!(
                        generation,
                        "the live vector index holds one vector per product (built before hybrid \
                         search): it serves vector search until a full reindex rebuilds it"
                    );
                }
                if stored != dims {
                    tracing::warn!(
                        generation,
                        index_dims = stored,
                        encoder_dims = dims,
                        "the live vector index was built with another dimension; \
                         run a full reindex (POST /v1/admin/reindex) to rebuild it for this model"
                    );
                }
                // Re-issuing index creation is idempotent (engine skips
                // existing ones) and repairs appendable segments that were
                // created without them (see `ensure_payload_indexes`).
                ensure_payload_indexes(&shard)?;
                // Anything else is a leftover: an aborted/crashed reindex or an
                // old generation whose removal was interrupted.
                for g in existing.iter().copied().filter(|&g| g != generation) {
                    remove_dir_logged(&generation_dir(&root, g));
                }
                Live {
                    shard,
                    generation,
                    dims: stored,
                    layout,
                }
            }
            None => {
                // No CURRENT: fresh store. CURRENT is written before the first
                // write is accepted, so stray gen dirs here never held live
                // data; we still leave them alone (never delete what we cannot
                // prove is garbage) and pick a fresh number.
                let generation = max_existing + 1;
                let shard = create_shard(&generation_dir(&root, generation), dims)?;
                shard.flush();
                write_current(&root, generation)?;
                Live {
                    shard,
                    generation,
                    dims,
                    layout: Layout::Hybrid,
                }
            }
        };

        let next = max_existing.max(live.generation) + 1;
        let dims = live.dims;
        tracing::info!(
            collection = super::COLLECTION,
            generation = live.generation,
            dims,
            root = %root.display(),
            "opened qdrant-edge vector index"
        );
        Ok(EdgeIndex {
            inner: Arc::new(Inner {
                root,
                dims: AtomicUsize::new(dims),
                hybrid: AtomicBool::new(live.layout == Layout::Hybrid),
                live: RwLock::new(live),
                pending: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(next),
            }),
        })
    }

    /// [`EdgeIndex::open`] on the blocking pool.
    pub async fn open_async(data_dir: PathBuf, dims: usize) -> Result<EdgeIndex, VectorError> {
        tokio::task::spawn_blocking(move || EdgeIndex::open(&data_dir, dims))
            .await
            .map_err(join_err)?
    }

    /// Number of the live generation (diagnostics/tests).
    pub fn generation(&self) -> u64 {
        self.inner.live.read().generation
    }

    /// Run `f` on tokio's blocking pool: qdrant-edge is synchronous and must
    /// never block async workers.
    async fn blocking<T, F>(&self, f: F) -> Result<T, VectorError>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T, VectorError> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(join_err)?
    }
}

#[async_trait::async_trait]
impl VectorIndex for EdgeIndex {
    fn backend(&self) -> &'static str {
        "qdrant-edge"
    }

    async fn ping(&self) -> Result<(), VectorError> {
        self.blocking(|inner| {
            let live = inner.live.read();
            let path = generation_dir(&inner.root, live.generation);
            fs::metadata(&path).map_err(|e| io_unavailable("stat", &path, e))?;
            Ok(())
        })
        .await
    }

    fn dims(&self) -> usize {
        self.inner.dims.load(Ordering::Acquire)
    }

    fn layout(&self) -> Layout {
        if self.inner.hybrid.load(Ordering::Acquire) {
            Layout::Hybrid
        } else {
            Layout::Single
        }
    }

    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        self.blocking(move |inner| {
            let live = inner.live.upgradable_read();
            let got = points.first().map_or(live.dims, |p| p.vector.len());
            // A reindex under way gets every write too, so that it misses
            // nothing written while it runs. Generations of another
            // dimension (a model change) get only the vectors that fit them.
            let pending = pending_shards(inner);
            let mut written = false;
            for (dims, shard) in &pending {
                if *dims == got {
                    upsert_into(&shard.lock(), *dims, Layout::Hybrid, points.clone())?;
                    written = true;
                }
            }
            if live.dims == got || !written {
                upsert_into(&live.shard, live.dims, live.layout, points)?;
                live.shard.flush();
            }
            Ok(())
        })
        .await
    }

    async fn delete(&self, tenant: &str, product_ids: &[String]) -> Result<(), VectorError> {
        if product_ids.is_empty() {
            return Ok(());
        }
        // Ids are derived from the tenant, so this can never touch another
        // tenant's points.
        let ids: Vec<PointId> = product_ids
            .iter()
            .map(|p| PointId::Uuid(point_uuid(tenant, p)))
            .collect();
        self.blocking(move |inner| {
            let live = inner.live.upgradable_read();
            let op = UpdateOperation::PointOperation(PointOperations::DeletePoints { ids });
            for (_, shard) in pending_shards(inner) {
                shard.lock().update(op.clone()).map_err(op_err)?;
            }
            live.shard.update(op).map_err(op_err)?;
            live.shard.flush();
            Ok(())
        })
        .await
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<(), VectorError> {
        let filter = Filter {
            must: Some(vec![keyword_eq(F_TENANT, tenant)?]),
            ..Filter::default()
        };
        self.blocking(move |inner| {
            let live = inner.live.upgradable_read();
            let op = UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter));
            for (_, shard) in pending_shards(inner) {
                shard.lock().update(op.clone()).map_err(op_err)?;
            }
            live.shard.update(op).map_err(op_err)?;
            live.shard.flush();
            Ok(())
        })
        .await
    }

    async fn search(&self, q: &VectorQuery) -> Result<Vec<ScoredPoint>, VectorError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        check_query(q)?;
        let filter = build_filter(&q.filter, &q.tenant, q.exclude_product.as_deref())?;
        let q = q.clone();
        self.blocking(move |inner| {
            let live = inner.live.read();
            let legs = q.legs();
            let mut queries = Vec::with_capacity(legs.len());
            for (leg, weight) in legs {
                queries.push((engine_query(&leg, live.dims, live.layout)?, weight));
            }
            // Fused hits carry their product id only: the service hydrates
            // from the catalog, and reading every candidate's payload would
            // cost more than the search.
            let id_only = WithPayloadInterface::Fields(vec![json_path(F_PRODUCT_ID)?]);
            let hits = if let [(query, _)] = queries.as_slice() {
                // One leg: the engine cuts the page and applies min_score.
                let full = WithPayloadInterface::Bool(true);
                query_page(
                    &live.shard,
                    Vec::new(),
                    query.clone(),
                    filter,
                    q.min_score,
                    q.limit,
                    q.offset,
                    full,
                )?
            } else if q.fusion == Fusion::Rrf {
                let window = q.window();
                let prefetches = queries
                    .iter()
                    .map(|(query, _)| Prefetch {
                        prefetches: Vec::new(),
                        query: Some(query.clone()),
                        limit: window,
                        params: None,
                        filter: Some(filter.clone()),
                        score_threshold: None,
                    })
                    .collect();
                let rrf = ScoringQuery::Fusion(EngineFusion::Rrf {
                    k: RRF_K,
                    weights: Some(queries.iter().map(|(_, w)| OrderedFloat(*w)).collect()),
                });
                query_page(
                    &live.shard,
                    prefetches,
                    rrf,
                    filter,
                    q.min_score,
                    q.limit,
                    q.offset,
                    id_only,
                )?
            } else {
                let window = q.window();
                let leg = |query: ScoringQuery| {
                    query_page(
                        &live.shard,
                        Vec::new(),
                        query,
                        filter.clone(),
                        None,
                        window,
                        0,
                        id_only.clone(),
                    )
                };
                // The legs run side by side (the shard serves concurrent
                // reads), so a hybrid search waits for its slowest leg,
                // not for the sum of them.
                let results: Vec<Result<Vec<ScoredPoint>, VectorError>> = std::thread::scope(|scope| {
                    let handles: Vec<_> = queries
                        .iter()
                        .map(|(query, _)| {
                            let query = query.clone();
                            let leg = &leg;
                            scope.spawn(move || leg(query))
                        })
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| {
                            h.join()
                                .unwrap_or_else(|_| Err(VectorError::other("a search leg panicked")))
                        })
                        .collect()
                });
                let mut runs = Vec::with_capacity(queries.len());
                for ((_, weight), hits) in queries.iter().zip(results) {
                    runs.push((*weight, hits?));
                }
                fuse_relative(runs, &q)
            };
            drop(live);
            Ok(hits)
        })
        .await
    }

    async fn facets(&self, q: &FacetQuery) -> Result<FacetCounts, VectorError> {
        check_facets(q)?;
        let filter = build_filter(&q.filter, &q.tenant, None)?;
        let q = q.clone();
        self.blocking(move |inner| {
            let live = inner.live.read();
            let keyword = |field: &str| -> Result<Vec<(FacetValue, u64)>, VectorError> {
                // Both values of a flag, whatever the limit.
                let limit = if field == F_IN_STOCK { 2 } else { q.limit.max(1) };
                let response = live
                    .shard
                    .facet(FacetRequest {
                        key: json_path(field)?,
                        limit,
                        filter: Some(filter.clone()),
                        exact: true,
                    })
                    .map_err(op_err)?;
                Ok(response
                    .hits
                    .into_iter()
                    .map(|h| (h.value, h.count as u64))
                    .collect())
            };
            let mut out = FacetCounts::default();
            for field in &q.fields {
                match field {
                    FacetField::Category => out.category = strings(keyword(F_CATEGORY)?),
                    FacetField::Tags => out.tags = strings(keyword(F_TAGS)?),
                    FacetField::InStock => {
                        out.in_stock = keyword(F_IN_STOCK)?
                            .into_iter()
                            .filter_map(|(v, n)| match v {
                                FacetValue::Bool(b) => Some((b, n)),
                                _ => None,
                            })
                            .collect();
                    }
                    FacetField::Price => {
                        for (from, to) in q.buckets() {
                            let mut bucket = filter.clone();
                            bucket.must.get_or_insert_with(Vec::new).push(Condition::Field(
                                FieldCondition::new_range(
                                    json_path(F_PRICE)?,
                                    Range {
                                        gte: from.map(OrderedFloat),
                                        lt: to.map(OrderedFloat),
                                        gt: None,
                                        lte: None,
                                    },
                                ),
                            ));
                            let count = live
                                .shard
                                .count(CountRequest {
                                    filter: Some(bucket),
                                    exact: true,
                                })
                                .map_err(op_err)?;
                            out.price.push(PriceBucket {
                                from,
                                to,
                                count: count as u64,
                            });
                        }
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    async fn get_vectors(
        &self,
        tenant: &str,
        product_id: &str,
    ) -> Result<Option<(Vec<f32>, Option<Vec<f32>>)>, VectorError> {
        let id = PointId::Uuid(point_uuid(tenant, product_id));
        self.blocking(move |inner| {
            let live = inner.live.read();
            let records = live
                .shard
                .retrieve(
                    &[id],
                    Some(WithPayloadInterface::Bool(false)),
                    Some(WithVector::Bool(true)),
                )
                .map_err(op_err)?;
            drop(live);
            Ok(records
                .into_iter()
                .next()
                .and_then(|r| r.vector)
                .and_then(dense_vectors))
        })
        .await
    }

    async fn get_points(
        &self,
        tenant: &str,
        product_ids: &[String],
    ) -> Result<Vec<VectorPoint>, VectorError> {
        if product_ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<PointId> = product_ids
            .iter()
            .map(|p| PointId::Uuid(point_uuid(tenant, p)))
            .collect();
        let tenant = tenant.to_owned();
        self.blocking(move |inner| {
            let live = inner.live.read();
            let records = live
                .shard
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(true)),
                    Some(WithVector::Bool(true)),
                )
                .map_err(op_err)?;
            drop(live);
            Ok(records
                .into_iter()
                .filter_map(|r| {
                    let Payload(m) = r.payload?;
                    if m.get(F_TENANT).and_then(serde_json::Value::as_str) != Some(tenant.as_str()) {
                        return None;
                    }
                    let (product_id, payload) = decode_payload_map(&m);
                    let (vector, text_vector, keywords) = stored_vectors(r.vector?)?;
                    Some(VectorPoint {
                        tenant: tenant.clone(),
                        product_id,
                        vector,
                        text_vector,
                        keywords,
                        payload,
                    })
                })
                .collect())
        })
        .await
    }

    async fn product_ids(&self, tenant: &str) -> Result<Vec<String>, VectorError> {
        let filter = Filter {
            must: Some(vec![keyword_eq(F_TENANT, tenant)?]),
            ..Filter::default()
        };
        self.blocking(move |inner| {
            let live = inner.live.read();
            let mut ids = Vec::new();
            let mut offset = None;
            loop {
                let (records, next) = live
                    .shard
                    .scroll(ScrollRequest {
                        offset,
                        limit: Some(1024),
                        filter: Some(filter.clone()),
                        with_payload: Some(WithPayloadInterface::Fields(vec![json_path(F_PRODUCT_ID)?])),
                        with_vector: WithVector::Bool(false),
                        order_by: None,
                    })
                    .map_err(op_err)?;
                ids.extend(
                    records
                        .iter()
                        .map(|r| decode_payload(r.payload.as_ref()).0)
                        .filter(|id| !id.is_empty()),
                );
                match next {
                    Some(n) => offset = Some(n),
                    None => return Ok(ids),
                }
            }
        })
        .await
    }

    async fn count(&self, tenant: Option<&str>) -> Result<u64, VectorError> {
        let filter = match tenant {
            Some(t) => Some(Filter {
                must: Some(vec![keyword_eq(F_TENANT, t)?]),
                ..Filter::default()
            }),
            None => None,
        };
        self.blocking(move |inner| {
            let live = inner.live.read();
            let n = live
                .shard
                .count(CountRequest { filter, exact: true })
                .map_err(op_err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn optimize(&self) -> Result<(), VectorError> {
        self.blocking(|inner| {
            let live = inner.live.upgradable_read();
            optimize_shard(&live.shard)
        })
        .await
    }

    async fn begin_generation(&self, dims: usize) -> Result<Generation, VectorError> {
        if dims == 0 {
            return Err(VectorError::other("vector dimension must be > 0"));
        }
        self.blocking(move |inner| {
            let id = inner.next_generation.fetch_add(1, Ordering::AcqRel);
            let shard = create_shard(&generation_dir(&inner.root, id), dims)?;
            // Every new generation is hybrid: a reindex is how an index
            // built before moves over.
            inner
                .pending
                .lock()
                .insert(id, (dims, Arc::new(Mutex::new(shard))));
            tracing::info!(generation = id, dims, "began vector index generation");
            Ok(Generation { id, dims })
        })
        .await
    }

    async fn upsert_generation(
        &self,
        generation: &Generation,
        points: Vec<VectorPoint>,
    ) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let (id, dims) = (generation.id, generation.dims);
        self.blocking(move |inner| {
            // Held so that a commit (which takes the write lock) never
            // switches while this write is half done.
            let _live = inner.live.read();
            let (_, shard) = inner
                .pending
                .lock()
                .get(&id)
                .cloned()
                .ok_or_else(|| unknown_generation(id))?;
            let shard = shard.lock();
            // No per-batch flush: an interrupted build is discarded on the
            // next open anyway; commit flushes once.
            upsert_into(&shard, dims, Layout::Hybrid, points)
        })
        .await
    }

    async fn commit_generation(&self, generation: Generation) -> Result<(), VectorError> {
        self.blocking(move |inner| {
            // Index the new generation before it goes live, outside the live
            // lock, so searches keep running on the old one meanwhile. It
            // stays pending (and keeps receiving the service's writes) until
            // the switch, so nothing written meanwhile is lost.
            let (_, building) = inner
                .pending
                .lock()
                .get(&generation.id)
                .cloned()
                .ok_or_else(|| unknown_generation(generation.id))?;
            optimize_shard(&building.lock())?;
            drop(building);

            // The write lock waits for every write in flight (they hold a
            // read or upgradable lock), so the pending shard is ours alone.
            let mut live = inner.live.write();
            let shard = take_pending(inner, generation.id)?;
            shard.flush();
            if let Err(e) = write_current(&inner.root, generation.id) {
                drop(live);
                discard_shard(inner, generation.id, shard);
                return Err(e);
            }
            let old = std::mem::replace(
                &mut *live,
                Live {
                    shard,
                    generation: generation.id,
                    dims: generation.dims,
                    layout: Layout::Hybrid,
                },
            );
            inner.dims.store(generation.dims, Ordering::Release);
            inner.hybrid.store(true, Ordering::Release);
            drop(live);

            let old_generation = old.generation;
            // Drop (= final flush) before removing its files.
            drop(old);
            remove_dir_logged(&generation_dir(&inner.root, old_generation));
            tracing::info!(
                generation = generation.id,
                old_generation,
                dims = generation.dims,
                "committed vector index generation"
            );
            Ok(())
        })
        .await
    }

    async fn abort_generation(&self, generation: Generation) -> Result<(), VectorError> {
        self.blocking(move |inner| {
            let shard = take_pending(inner, generation.id)?;
            discard_shard(inner, generation.id, shard);
            tracing::info!(generation = generation.id, "aborted vector index generation");
            Ok(())
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// Shard helpers (all blocking)

fn create_shard(path: &Path, dims: usize) -> Result<EdgeShard, VectorError> {
    if path.exists() {
        // Stale directory from a crashed build with the same number.
        fs::remove_dir_all(path).map_err(|e| io_unavailable("remove", path, e))?;
    }
    fs::create_dir_all(path).map_err(|e| io_unavailable("create", path, e))?;
    let config = EdgeConfig::builder()
        .vector(V_IMAGE, EdgeVectorParams::builder(dims, Distance::Cosine).build())
        .vector(V_TEXT, EdgeVectorParams::builder(dims, Distance::Cosine).build())
        .sparse_vector(
            V_KEYWORDS,
            EdgeSparseVectorParams::builder().modifier(Modifier::Idf).build(),
        )
        .build();
    let shard = EdgeShard::new(path, config).map_err(op_err)?;
    ensure_payload_indexes(&shard)?;
    Ok(shard)
}

/// The dimension and layout of a stored shard.
fn shard_dims(shard: &EdgeShard) -> Result<(usize, Layout), VectorError> {
    let config = shard.config();
    let (params, layout) = match config.vectors.get(DEFAULT_VECTOR_NAME) {
        Some(p) => (p, Layout::Single),
        None => {
            let image = config.vectors.get(V_IMAGE);
            let text = config.vectors.get(V_TEXT);
            match (image, text, config.sparse_vectors.get(V_KEYWORDS)) {
                (Some(image), Some(text), Some(_))
                    if image.size == text.size && text.distance == image.distance =>
                {
                    (image, Layout::Hybrid)
                }
                _ => {
                    return Err(VectorError::other(
                        "shard lacks vitrine's vectors; not a vitrine index",
                    ));
                }
            }
        }
    };
    if params.distance != Distance::Cosine {
        return Err(VectorError::other(format!(
            "shard uses {:?} distance, expected Cosine",
            params.distance
        )));
    }
    Ok((params.size, layout))
}

/// Create the payload indexes. Idempotent: the engine skips indexes that
/// already exist. Must be re-run after `optimize` and on load because edge
/// creates fresh appendable segments from `payload_index.json`, which
/// `CreateIndex` in 0.7.2 does not update (optimised segments do inherit the
/// indexes of their sources). Without an index a filter is still exact, only
/// slower, so the short window before re-running is harmless.
fn ensure_payload_indexes(shard: &EdgeShard) -> Result<(), VectorError> {
    let keyword = |is_tenant: bool| {
        PayloadFieldSchema::FieldParams(PayloadSchemaParams::Keyword(KeywordIndexParams {
            // The tenant flag makes the optimiser co-locate a tenant's points
            // and lets the engine treat it as the primary partition key.
            is_tenant: is_tenant.then_some(true),
            ..KeywordIndexParams::default()
        }))
    };
    let fields = [
        (F_TENANT, keyword(true)),
        (F_PRODUCT_ID, keyword(false)),
        (F_CATEGORY, keyword(false)),
        (F_CURRENCY, keyword(false)),
        (F_TAGS, keyword(false)),
        (
            F_PRICE,
            PayloadFieldSchema::FieldParams(PayloadSchemaParams::Float(FloatIndexParams::default())),
        ),
        (
            F_IN_STOCK,
            PayloadFieldSchema::FieldParams(PayloadSchemaParams::Bool(BoolIndexParams::default())),
        ),
    ];
    for (name, schema) in fields {
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: json_path(name)?,
                    field_schema: Some(schema),
                }),
            ))
            .map_err(op_err)?;
    }
    Ok(())
}

/// Caller must hold the shard exclusively for writes (see module docs).
fn optimize_shard(shard: &EdgeShard) -> Result<(), VectorError> {
    shard.optimize().map_err(op_err)?;
    ensure_payload_indexes(shard)?;
    shard.flush();
    Ok(())
}

/// Validate the whole batch first so a bad point rejects the batch without
/// partial writes, then apply it in WAL-friendly chunks.
fn upsert_into(
    shard: &EdgeShard,
    dims: usize,
    layout: Layout,
    points: Vec<VectorPoint>,
) -> Result<(), VectorError> {
    for p in &points {
        check_vector(&p.vector, dims)?;
        if let Some(t) = &p.text_vector {
            check_vector(t, dims)?;
        }
        check_keywords(&p.keywords)?;
        if p.payload.price.is_some_and(|x| !x.is_finite()) {
            return Err(VectorError::other(format!(
                "price of product {:?} is not finite",
                p.product_id
            )));
        }
    }
    let mut points = points.into_iter().map(|p| encode_point(p, layout)).peekable();
    while points.peek().is_some() {
        let chunk: Vec<PointStructPersisted> = points.by_ref().take(UPSERT_CHUNK).collect();
        shard
            .update(UpdateOperation::PointOperation(PointOperations::UpsertPoints(
                PointInsertOperations::PointsList(chunk),
            )))
            .map_err(op_err)?;
    }
    Ok(())
}

fn take_pending(inner: &Inner, id: u64) -> Result<EdgeShard, VectorError> {
    let mut pending = inner.pending.lock();
    let (dims, shard) = pending.remove(&id).ok_or_else(|| unknown_generation(id))?;
    match Arc::try_unwrap(shard) {
        Ok(mutex) => Ok(mutex.into_inner()),
        Err(shard) => {
            // Only possible if an upsert_generation future was dropped while
            // its blocking task still runs; let the caller retry.
            pending.insert(id, (dims, shard));
            Err(VectorError::other(format!(
                "generation {id} still has writes in flight"
            )))
        }
    }
}

/// The generations under construction, for the service's writes to reach.
fn pending_shards(inner: &Inner) -> Vec<PendingShard> {
    inner.pending.lock().values().cloned().collect()
}

fn discard_shard(inner: &Inner, id: u64, shard: EdgeShard) {
    drop(shard);
    remove_dir_logged(&generation_dir(&inner.root, id));
}

fn unknown_generation(id: u64) -> VectorError {
    VectorError::other(format!("unknown or finished generation {id}"))
}

// ---------------------------------------------------------------------------
// CURRENT file and generation directories

fn generation_dir(root: &Path, generation: u64) -> PathBuf {
    root.join(format!("{GEN_PREFIX}{generation}"))
}

fn list_generations(root: &Path) -> Result<Vec<u64>, VectorError> {
    let entries = fs::read_dir(root).map_err(|e| io_unavailable("read", root, e))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_unavailable("read", root, e))?;
        let name = entry.file_name();
        if let Some(n) = name
            .to_str()
            .and_then(|n| n.strip_prefix(GEN_PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
            && entry.path().is_dir()
        {
            out.push(n);
        }
    }
    Ok(out)
}

fn read_current(root: &Path) -> Result<Option<u64>, VectorError> {
    let path = root.join(CURRENT_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_unavailable("read", &path, e)),
    };
    text.trim()
        .strip_prefix(GEN_PREFIX)
        .and_then(|n| n.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| VectorError::unavailable(format!("corrupt {}: {text:?}", path.display())))
}

/// Atomically point CURRENT at `generation`: write a temp file, fsync it,
/// rename over CURRENT, fsync the directory (so the rename itself, and the new
/// generation's directory entry, survive power loss).
///
/// Errors before the rename leave CURRENT untouched. A failed directory fsync
/// after a successful rename is only logged: the switch has happened in the
/// namespace and both generations are complete on disk, so whichever one a
/// crash leaves visible is consistent.
fn write_current(root: &Path, generation: u64) -> Result<(), VectorError> {
    let tmp = root.join(CURRENT_TMP_FILE);
    let target = root.join(CURRENT_FILE);
    {
        let mut f = fs::File::create(&tmp).map_err(|e| io_unavailable("create", &tmp, e))?;
        f.write_all(format!("{GEN_PREFIX}{generation}\n").as_bytes())
            .map_err(|e| io_unavailable("write", &tmp, e))?;
        f.sync_all().map_err(|e| io_unavailable("fsync", &tmp, e))?;
    }
    fs::rename(&tmp, &target).map_err(|e| io_unavailable("rename", &tmp, e))?;
    if let Err(e) = fs::File::open(root).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %root.display(), error = %e, "fsync of vectors dir failed after CURRENT switch");
    }
    Ok(())
}

fn remove_dir_logged(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        // Not fatal: the next open removes non-current generations.
        tracing::warn!(dir = %path.display(), error = %e, "failed to remove old vector generation");
    }
}

fn remove_if_exists(path: &Path) {
    if let Err(e) = fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(file = %path.display(), error = %e, "failed to remove stale file");
    }
}

// ---------------------------------------------------------------------------
// Conversions

fn encode_point(p: VectorPoint, layout: Layout) -> PointStructPersisted {
    let id = PointId::Uuid(point_uuid(&p.tenant, &p.product_id));
    let m = payload_map(&p.tenant, &p.product_id, &p.payload);
    let vector = match layout {
        Layout::Single => VectorStructPersisted::Single(p.vector),
        Layout::Hybrid => {
            let mut named = HashMap::new();
            named.insert(V_IMAGE.into(), VectorPersisted::Dense(p.vector));
            if let Some(t) = p.text_vector {
                named.insert(V_TEXT.into(), VectorPersisted::Dense(t));
            }
            named.insert(
                V_KEYWORDS.into(),
                VectorPersisted::Sparse(SparseVector {
                    indices: p.keywords.indices,
                    values: p.keywords.values,
                }),
            );
            VectorStructPersisted::Named(named)
        }
    };
    PointStructPersisted {
        id,
        vector,
        payload: Some(Payload(m)),
    }
}

/// One engine query (after `prefetches`, none for a plain one), with the
/// page `offset..offset + limit` of its hits scoring above `threshold`.
#[allow(clippy::too_many_arguments)]
fn query_page(
    shard: &EdgeShard,
    prefetches: Vec<Prefetch>,
    query: ScoringQuery,
    filter: Filter,
    threshold: Option<f32>,
    limit: usize,
    offset: usize,
    with_payload: WithPayloadInterface,
) -> Result<Vec<ScoredPoint>, VectorError> {
    let request = QueryRequest {
        prefetches,
        query: Some(query),
        filter: Some(filter),
        // Engine semantics: keeps hits with score > threshold.
        score_threshold: threshold.map(OrderedFloat),
        limit,
        offset,
        // Default params: the engine picks exact (plain) scoring for
        // unindexed segments or selective filters and HNSW otherwise.
        params: None,
        with_vector: WithVector::Bool(false),
        with_payload,
    };
    let hits = shard.query(request).map_err(op_err)?;
    // Gotcha: at shard level, qdrant's `query` returns the top
    // `offset + limit` and leaves cutting the offset to the caller (the
    // server does it at collection level), so skip it here.
    Ok(hits.into_iter().skip(offset).take(limit).map(scored).collect())
}

/// A leg as the engine's query, on the vector the layout names.
fn engine_query(leg: &Leg, dims: usize, layout: Layout) -> Result<ScoringQuery, VectorError> {
    let (query, using) = match (leg, layout) {
        (Leg::Dense { using, vector }, Layout::Hybrid) => {
            check_vector(vector, dims)?;
            (VectorInternal::Dense(vector.clone()), Some((*using).into()))
        }
        (Leg::Dense { using, vector }, Layout::Single) if *using == V_IMAGE => {
            check_vector(vector, dims)?;
            (VectorInternal::Dense(vector.clone()), None)
        }
        (Leg::Keywords(k), Layout::Hybrid) => (
            VectorInternal::Sparse(SparseVector {
                indices: k.indices.clone(),
                values: k.values.clone(),
            }),
            Some(V_KEYWORDS.into()),
        ),
        _ => return Err(single_layout()),
    };
    Ok(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
        query,
        using,
    })))
}

fn single_layout() -> VectorError {
    VectorError::NotFound(
        "the index holds one vector per product (built before hybrid search): \
         run a full reindex (POST /v1/admin/reindex) for text and keyword search"
            .into(),
        None,
    )
}

fn scored(hit: qdrant_edge::ScoredPoint) -> ScoredPoint {
    let (product_id, payload) = decode_payload(hit.payload.as_ref());
    ScoredPoint {
        product_id,
        score: hit.score,
        payload,
    }
}

fn strings(values: Vec<(FacetValue, u64)>) -> Vec<(String, u64)> {
    values
        .into_iter()
        .filter_map(|(v, n)| match v {
            FacetValue::Keyword(s) => Some((s, n)),
            _ => None,
        })
        .collect()
}

fn decode_payload(payload: Option<&Payload>) -> (String, PointPayload) {
    match payload {
        Some(Payload(m)) => decode_payload_map(m),
        None => (String::new(), PointPayload::default()),
    }
}

/// The image (or only) vector and the text vector of a stored point.
fn dense_vectors(v: VectorStructInternal) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
    match v {
        VectorStructInternal::Single(v) => Some((v, None)),
        VectorStructInternal::Named(mut named) => {
            let dense = |v: Option<VectorInternal>| match v {
                Some(VectorInternal::Dense(v)) => Some(v),
                _ => None,
            };
            let image = dense(named.remove(V_IMAGE)).or_else(|| dense(named.remove(DEFAULT_VECTOR_NAME)))?;
            Some((image, dense(named.remove(V_TEXT))))
        }
        VectorStructInternal::MultiDense(_) => None,
    }
}

/// A stored point's image (or only) vector, text vector and keyword vector.
fn stored_vectors(mut v: VectorStructInternal) -> Option<(Vec<f32>, Option<Vec<f32>>, Keywords)> {
    let keywords = match &mut v {
        VectorStructInternal::Named(named) => match named.remove(V_KEYWORDS) {
            Some(VectorInternal::Sparse(s)) => Keywords {
                indices: s.indices,
                values: s.values,
            },
            _ => Keywords::default(),
        },
        _ => Keywords::default(),
    };
    let (image, text) = dense_vectors(v)?;
    Some((image, text, keywords))
}

fn json_path(name: &str) -> Result<JsonPath, VectorError> {
    name.parse()
        .map_err(|()| VectorError::other(format!("invalid payload key {name:?}")))
}

fn keyword_eq(field: &str, value: &str) -> Result<Condition, VectorError> {
    Ok(Condition::Field(FieldCondition::new_match(
        json_path(field)?,
        Match::new_value(ValueVariants::String(value.to_owned())),
    )))
}

/// Translate the request into ONE engine filter: tenant, request filters and
/// the exclusion all run inside the engine's (filtered) search, so `limit`
/// and `offset` apply to matching points only.
fn build_filter(f: &VectorFilter, tenant: &str, exclude: Option<&str>) -> Result<Filter, VectorError> {
    let mut must = vec![keyword_eq(F_TENANT, tenant)?];
    if !f.categories.is_empty() {
        must.push(Condition::Field(FieldCondition::new_match(
            json_path(F_CATEGORY)?,
            Match::Any(MatchAny {
                any: AnyVariants::Strings(f.categories.iter().cloned().collect()),
            }),
        )));
    }
    if f.price_min.is_some() || f.price_max.is_some() {
        if f.price_min.is_some_and(|x| !x.is_finite()) || f.price_max.is_some_and(|x| !x.is_finite()) {
            return Err(VectorError::other("price bounds must be finite"));
        }
        must.push(Condition::Field(FieldCondition::new_range(
            json_path(F_PRICE)?,
            Range {
                gte: f.price_min.map(OrderedFloat),
                lte: f.price_max.map(OrderedFloat),
                gt: None,
                lt: None,
            },
        )));
    }
    // All-of: one condition per tag (a keyword array matches a value if any
    // element equals it).
    for tag in &f.tags {
        must.push(keyword_eq(F_TAGS, tag)?);
    }
    if let Some(in_stock) = f.in_stock {
        must.push(Condition::Field(FieldCondition::new_match(
            json_path(F_IN_STOCK)?,
            Match::new_value(ValueVariants::Bool(in_stock)),
        )));
    }
    let must_not = match exclude {
        Some(p) => Some(vec![keyword_eq(F_PRODUCT_ID, p)?]),
        None => None,
    };
    Ok(Filter {
        must: Some(must),
        must_not,
        ..Filter::default()
    })
}

// ---------------------------------------------------------------------------
// Errors

fn op_err(e: OperationError) -> VectorError {
    VectorError::other(e.to_string())
}

fn io_unavailable(what: &str, path: &Path, e: std::io::Error) -> VectorError {
    VectorError::unavailable(format!("{what} {}: {e}", path.display()))
}

fn join_err(e: tokio::task::JoinError) -> VectorError {
    // A panic inside the engine (e.g. its flush `expect`s on IO failure).
    VectorError::other(format!("vector store task failed: {e}"))
}
