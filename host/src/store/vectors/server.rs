//! [`VectorIndex`] on a Qdrant server or cluster through qdrant-client (gRPC).
//!
//! Layout on the server:
//! ```text
//! alias product_embeddings  ->  collection product_embeddings_g<n>  (live)
//!                               collection product_embeddings_g<m>, m > n (a reindex under way)
//! ```
//! Reads and writes name the alias, so a generation switch (one
//! `CreateAlias` of the existing alias, which the server applies atomically
//! under its collection lock) moves every host at once. Generations under
//! construction are found by listing collections, so every host's writes
//! reach them without any shared state besides the server itself.
//!
//! Points carry the same ids and payload as on Qdrant Edge
//! ([`super::point_uuid`], [`super::payload_map`]); every write waits for the
//! server to apply it (`wait = true`), so it is durable and visible to
//! searches on return, like the Edge backend.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use qdrant_client::qdrant::{
    BoolIndexParamsBuilder, Condition, CountPointsBuilder, CreateAliasBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Distance, FacetCounts as FacetRequest, FieldType,
    Filter, FloatIndexParamsBuilder, GetPointsBuilder, KeywordIndexParamsBuilder, Modifier,
    PayloadIncludeSelector, PointId, PointStruct, PointsIdsList, PrefetchQueryBuilder, Query,
    QueryBatchPoints, QueryPoints, QueryPointsBuilder, Range, Rrf, ScrollPointsBuilder, SparseVectorParams,
    SparseVectorsConfigBuilder, UpsertPointsBuilder, Vector, VectorInput, VectorParamsBuilder,
    VectorsConfigBuilder, VectorsOutput, facet_value, vector_output, vectors_config,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::Value;

use super::{
    COLLECTION, F_CATEGORY, F_CURRENCY, F_IN_STOCK, F_PRICE, F_PRODUCT_ID, F_TAGS, F_TENANT, FacetCounts,
    FacetField, FacetQuery, Fusion, Generation, Keywords, Layout, Leg, PointPayload, PriceBucket, RRF_K,
    ScoredPoint, V_IMAGE, V_KEYWORDS, V_TEXT, VectorError, VectorFilter, VectorIndex, VectorPoint,
    VectorQuery, check_facets, check_keywords, check_query, check_vector, decode_payload_map, fuse_relative,
    payload_map, point_uuid,
};

/// Points per upsert request: well under the server's 32 MiB gRPC message
/// limit for any realistic dimension, large enough to amortise round trips.
const UPSERT_CHUNK: usize = 256;
/// Points per scroll page when listing ids.
const SCROLL_PAGE: u32 = 1024;

/// Connection settings for [`QdrantIndex::connect`].
#[derive(Clone)]
pub struct ServerConfig {
    /// gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
    /// Collection (and alias) name; [`COLLECTION`] in the service. Tests use
    /// their own so that they never touch each other's data.
    pub collection: String,
}

impl ServerConfig {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            collection: COLLECTION.to_owned(),
        }
    }
}

/// Qdrant server implementation of [`VectorIndex`].
pub struct QdrantIndex {
    client: Arc<Qdrant>,
    /// The alias every read and write goes through.
    alias: String,
    /// Dimension of the live generation as last seen (refreshed by `ping`
    /// and after a commit, since another host may switch generations).
    dims: AtomicUsize,
    /// Whether the live generation is [`Layout::Hybrid`], refreshed with `dims`.
    hybrid: AtomicBool,
}

impl QdrantIndex {
    /// Connects and makes sure the alias points at a generation, creating
    /// the first one (with `dims`) on a fresh server. An existing live
    /// generation keeps its own dimension (see [`super::EdgeIndex::open`]).
    pub async fn connect(config: ServerConfig, dims: usize) -> Result<QdrantIndex, VectorError> {
        if dims == 0 {
            return Err(VectorError::other("vector dimension must be > 0"));
        }
        let mut builder = Qdrant::from_url(&config.url)
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .skip_compatibility_check();
        if let Some(key) = &config.api_key {
            builder = builder.api_key(key.clone());
        }
        let client = builder.build().map_err(unavailable)?;
        let index = QdrantIndex {
            client: Arc::new(client),
            alias: config.collection,
            dims: AtomicUsize::new(dims),
            hybrid: AtomicBool::new(true),
        };
        let live = match index.live_collection().await? {
            Some(live) => live,
            None => index.create_first_generation(dims).await?,
        };
        let (stored, layout) = index.collection_dims(&live).await?;
        if layout == Layout::Single {
            tracing::warn!(
                collection = %live,
                "the live vector index holds one vector per product (built before hybrid search): \
                 it serves vector search until a full reindex rebuilds it"
            );
        }
        index.hybrid.store(layout == Layout::Hybrid, Ordering::Release);
        if stored != dims {
            tracing::warn!(
                collection = %live,
                index_dims = stored,
                encoder_dims = dims,
                "the live vector index was built with another dimension; \
                 run a full reindex (POST /v1/admin/reindex) to rebuild it for this model"
            );
        }
        index.dims.store(stored, Ordering::Release);
        tracing::info!(alias = %index.alias, collection = %live, dims = stored, "connected to the Qdrant server");
        Ok(index)
    }

    /// Removes the alias and every generation of this index from the
    /// server (tests, and operators retiring an index).
    pub async fn destroy(&self) -> Result<(), VectorError> {
        if self.live_collection().await?.is_some() {
            self.client
                .delete_alias(self.alias.as_str())
                .await
                .map_err(client_err)?;
        }
        for (_, name) in self.generations().await? {
            self.client.delete_collection(&name).await.map_err(client_err)?;
        }
        Ok(())
    }

    fn generation_name(&self, id: u64) -> String {
        format!("{}_g{id}", self.alias)
    }

    fn generation_of(&self, collection: &str) -> Option<u64> {
        collection
            .strip_prefix(&self.alias)?
            .strip_prefix("_g")?
            .parse()
            .ok()
    }

    /// The collection the alias points at, if any.
    async fn live_collection(&self) -> Result<Option<String>, VectorError> {
        let aliases = self.client.list_aliases().await.map_err(client_err)?;
        Ok(aliases
            .aliases
            .into_iter()
            .find(|a| a.alias_name == self.alias)
            .map(|a| a.collection_name))
    }

    /// Every generation collection on the server: (id, name).
    async fn generations(&self) -> Result<Vec<(u64, String)>, VectorError> {
        let list = self.client.list_collections().await.map_err(client_err)?;
        let mut out: Vec<(u64, String)> = list
            .collections
            .into_iter()
            .filter_map(|c| self.generation_of(&c.name).map(|g| (g, c.name)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Generations under construction (newer than the live one), with
    /// their dimensions and layouts.
    async fn pending(&self) -> Result<Vec<(String, usize, Layout)>, VectorError> {
        let live = self.live_collection().await?;
        let live_id = live.as_deref().and_then(|l| self.generation_of(l)).unwrap_or(0);
        let mut out = Vec::new();
        for (id, name) in self.generations().await? {
            if id > live_id {
                match self.collection_dims(&name).await {
                    Ok((d, layout)) => out.push((name, d, layout)),
                    // Committed and dropped by another host in between.
                    Err(e) => tracing::debug!(collection = %name, error = %e, "pending generation vanished"),
                }
            }
        }
        Ok(out)
    }

    /// The dimension and layout of a collection.
    async fn collection_dims(&self, name: &str) -> Result<(usize, Layout), VectorError> {
        let info = self.client.collection_info(name).await.map_err(client_err)?;
        let params = info.result.and_then(|r| r.config).and_then(|c| c.params);
        let has_keywords = params
            .as_ref()
            .and_then(|p| p.sparse_vectors_config.as_ref())
            .is_some_and(|s| s.map.contains_key(V_KEYWORDS));
        let (size, distance, layout) = match params.and_then(|p| p.vectors_config).and_then(|v| v.config) {
            Some(vectors_config::Config::Params(p)) => (p.size, p.distance, Layout::Single),
            Some(vectors_config::Config::ParamsMap(m)) => match (m.map.get(V_IMAGE), m.map.get(V_TEXT)) {
                (Some(image), Some(text))
                    if has_keywords && image.size == text.size && image.distance == text.distance =>
                {
                    (image.size, image.distance, Layout::Hybrid)
                }
                _ => {
                    return Err(VectorError::other(format!(
                        "collection {name} lacks vitrine's vectors; not a vitrine index"
                    )));
                }
            },
            None => {
                return Err(VectorError::other(format!(
                    "collection {name} has no vectors; not a vitrine index"
                )));
            }
        };
        if distance != Distance::Cosine as i32 {
            return Err(VectorError::other(format!(
                "collection {name} does not use cosine distance; not a vitrine index"
            )));
        }
        Ok((size as usize, layout))
    }

    /// A hybrid collection: the two dense vectors, the keyword vector with
    /// the IDF modifier, and the payload indexes.
    async fn create_collection(&self, name: &str, dims: usize) -> Result<(), VectorError> {
        let mut vectors = VectorsConfigBuilder::default();
        vectors
            .add_named_vector_params(V_IMAGE, VectorParamsBuilder::new(dims as u64, Distance::Cosine))
            .add_named_vector_params(V_TEXT, VectorParamsBuilder::new(dims as u64, Distance::Cosine));
        let mut sparse = SparseVectorsConfigBuilder::default();
        sparse.add_named_vector_params(
            V_KEYWORDS,
            SparseVectorParams {
                index: None,
                modifier: Some(Modifier::Idf as i32),
            },
        );
        self.client
            .create_collection(
                CreateCollectionBuilder::new(name)
                    .vectors_config(vectors)
                    .sparse_vectors_config(sparse),
            )
            .await
            .map_err(client_err)?;
        let keyword = |tenant: bool| KeywordIndexParamsBuilder::default().is_tenant(tenant).build();
        let fields: [(&str, FieldType); 7] = [
            (F_TENANT, FieldType::Keyword),
            (F_PRODUCT_ID, FieldType::Keyword),
            (F_CATEGORY, FieldType::Keyword),
            (F_CURRENCY, FieldType::Keyword),
            (F_TAGS, FieldType::Keyword),
            (F_PRICE, FieldType::Float),
            (F_IN_STOCK, FieldType::Bool),
        ];
        for (field, kind) in fields {
            let mut request = CreateFieldIndexCollectionBuilder::new(name, field, kind).wait(true);
            request = match kind {
                FieldType::Keyword => request.field_index_params(keyword(field == F_TENANT)),
                FieldType::Float => request.field_index_params(FloatIndexParamsBuilder::default().build()),
                _ => request.field_index_params(BoolIndexParamsBuilder::default().build()),
            };
            self.client
                .create_field_index(request)
                .await
                .map_err(client_err)?;
        }
        Ok(())
    }

    /// A fresh server: generation 1 plus the alias. Several hosts may start
    /// at once; whoever loses the race uses the winner's generation.
    async fn create_first_generation(&self, dims: usize) -> Result<String, VectorError> {
        let name = self.generation_name(1);
        match self.create_collection(&name, dims).await {
            Ok(()) | Err(VectorError::AlreadyExists(..)) => {}
            Err(e) => return Err(e),
        }
        if self.live_collection().await?.is_none() {
            self.client
                .create_alias(CreateAliasBuilder::new(&name, &self.alias))
                .await
                .map_err(client_err)?;
        }
        self.live_collection()
            .await?
            .ok_or_else(|| VectorError::unavailable(format!("alias {} was not created", self.alias)))
    }

    async fn upsert_into(
        &self,
        collection: &str,
        dims: usize,
        layout: Layout,
        points: &[VectorPoint],
    ) -> Result<(), VectorError> {
        for p in points {
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
        for chunk in points.chunks(UPSERT_CHUNK) {
            let structs: Vec<PointStruct> = chunk.iter().map(|p| encode_point(p, layout)).collect();
            self.client
                .upsert_points(UpsertPointsBuilder::new(collection, structs).wait(true))
                .await
                .map_err(client_err)?;
        }
        Ok(())
    }

    /// One search on the layout last seen.
    async fn search_once(&self, q: &VectorQuery) -> Result<Vec<ScoredPoint>, VectorError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        check_query(q)?;
        let filter = build_filter(&q.filter, &q.tenant, q.exclude_product.as_deref());
        let (dims, layout) = (self.dims(), self.layout());
        let mut legs = Vec::new();
        for (leg, weight) in q.legs() {
            let (query, using) = leg_query(&leg, dims, layout)?;
            legs.push((query, using, weight));
        }
        // Fused hits carry their product id only (see the Edge backend).
        let id_only = || PayloadIncludeSelector::from(vec![F_PRODUCT_ID.to_owned()]);
        let page = |request: QueryPointsBuilder, full: bool| {
            let request = request
                .filter(filter.clone())
                .limit(q.limit as u64)
                .offset(q.offset as u64);
            let mut request = if full {
                request.with_payload(true)
            } else {
                request.with_payload(id_only())
            };
            if let Some(s) = q.min_score {
                request = request.score_threshold(s);
            }
            request
        };
        let request = match legs.as_slice() {
            [(query, using, _)] => {
                let mut request = QueryPointsBuilder::new(&self.alias).query(query.clone());
                if let Some(u) = using {
                    request = request.using(*u);
                }
                page(request, true)
            }
            _ if q.fusion == Fusion::Rrf => {
                let window = q.window() as u64;
                let mut request = QueryPointsBuilder::new(&self.alias);
                for (query, using, _) in &legs {
                    let mut prefetch = PrefetchQueryBuilder::default()
                        .query(query.clone())
                        .filter(filter.clone())
                        .limit(window);
                    if let Some(u) = using {
                        prefetch = prefetch.using(*u);
                    }
                    request = request.add_prefetch(prefetch);
                }
                let rrf = Rrf {
                    k: Some(RRF_K as u32),
                    weights: legs.iter().map(|(_, _, w)| *w).collect(),
                };
                page(request.query(Query::new_rrf(rrf)), false)
            }
            _ => {
                // Every leg in one round trip; fused here.
                let window = q.window() as u64;
                let query_points: Vec<QueryPoints> = legs
                    .iter()
                    .map(|(query, using, _)| {
                        let mut request = QueryPointsBuilder::new(&self.alias)
                            .query(query.clone())
                            .filter(filter.clone())
                            .limit(window)
                            .with_payload(id_only());
                        if let Some(u) = using {
                            request = request.using(*u);
                        }
                        request.build()
                    })
                    .collect();
                let response = self
                    .client
                    .query_batch(QueryBatchPoints {
                        collection_name: self.alias.clone(),
                        query_points,
                        ..QueryBatchPoints::default()
                    })
                    .await
                    .map_err(client_err)?;
                let runs = legs
                    .iter()
                    .zip(response.result)
                    .map(|((_, _, weight), r)| (*weight, r.result.into_iter().map(scored).collect()))
                    .collect();
                return Ok(fuse_relative(runs, q));
            }
        };
        let response = self.client.query(request).await.map_err(client_err)?;
        Ok(response.result.into_iter().map(scored).collect())
    }

    /// Re-reads the live generation's dimension and layout (another host
    /// may have committed a reindex); whether the layout changed.
    async fn refresh(&self) -> Result<bool, VectorError> {
        let before = self.layout();
        let live = self
            .live_collection()
            .await?
            .ok_or_else(|| VectorError::unavailable(format!("alias {} is missing", self.alias)))?;
        let (dims, layout) = self.collection_dims(&live).await?;
        self.dims.store(dims, Ordering::Release);
        self.hybrid.store(layout == Layout::Hybrid, Ordering::Release);
        Ok(layout != before)
    }

    async fn delete_by(&self, collection: &str, selector: DeleteSelector<'_>) -> Result<(), VectorError> {
        let request = DeletePointsBuilder::new(collection).wait(true);
        let request = match selector {
            DeleteSelector::Ids(ids) => request.points(PointsIdsList { ids: ids.to_vec() }),
            DeleteSelector::Filter(f) => request.points(f.clone()),
        };
        self.client.delete_points(request).await.map_err(client_err)?;
        Ok(())
    }
}

enum DeleteSelector<'a> {
    Ids(&'a [PointId]),
    Filter(&'a Filter),
}

fn encode_point(p: &VectorPoint, layout: Layout) -> PointStruct {
    let payload = Payload::from(payload_map(&p.tenant, &p.product_id, &p.payload));
    let id = point_uuid(&p.tenant, &p.product_id).to_string();
    match layout {
        Layout::Single => PointStruct::new(id, p.vector.clone(), payload),
        Layout::Hybrid => {
            let mut named: HashMap<String, Vector> = HashMap::new();
            named.insert(V_IMAGE.into(), Vector::new_dense(p.vector.clone()));
            if let Some(t) = &p.text_vector {
                named.insert(V_TEXT.into(), Vector::new_dense(t.clone()));
            }
            named.insert(
                V_KEYWORDS.into(),
                Vector::new_sparse(p.keywords.indices.clone(), p.keywords.values.clone()),
            );
            PointStruct::new(id, named, payload)
        }
    }
}

/// A leg as the server's query and the vector it names.
fn leg_query(leg: &Leg, dims: usize, layout: Layout) -> Result<(Query, Option<&'static str>), VectorError> {
    match (leg, layout) {
        (Leg::Dense { using, vector }, Layout::Hybrid) => {
            check_vector(vector, dims)?;
            Ok((Query::new_nearest(vector.clone()), Some(*using)))
        }
        (Leg::Dense { using, vector }, Layout::Single) if *using == V_IMAGE => {
            check_vector(vector, dims)?;
            Ok((Query::new_nearest(vector.clone()), None))
        }
        (Leg::Keywords(k), Layout::Hybrid) => Ok((
            Query::new_nearest(VectorInput::new_sparse(k.indices.clone(), k.values.clone())),
            Some(V_KEYWORDS),
        )),
        _ => Err(VectorError::NotFound(
            "the index holds one vector per product (built before hybrid search): \
             run a full reindex (POST /v1/admin/reindex) for text and keyword search"
                .into(),
            None,
        )),
    }
}

fn scored(hit: qdrant_client::qdrant::ScoredPoint) -> ScoredPoint {
    let (product_id, payload) = decode_payload(hit.payload);
    ScoredPoint {
        product_id,
        score: hit.score,
        payload,
    }
}

fn dense(v: Option<vector_output::Vector>) -> Option<Vec<f32>> {
    match v {
        Some(vector_output::Vector::Dense(d)) => Some(d.data),
        _ => None,
    }
}

/// The image (or only) vector and the text vector of a stored point.
fn dense_vectors(v: &VectorsOutput) -> Option<(Vec<f32>, Option<Vec<f32>>)> {
    let image = dense(v.get_vector()).or_else(|| dense(v.get_vector_by_name(V_IMAGE)))?;
    Some((image, dense(v.get_vector_by_name(V_TEXT))))
}

fn decode_payload(payload: HashMap<String, qdrant_client::qdrant::Value>) -> (String, PointPayload) {
    let map: serde_json::Map<String, Value> = payload.into_iter().map(|(k, v)| (k, v.into_json())).collect();
    decode_payload_map(&map)
}

fn tenant_filter(tenant: &str) -> Filter {
    Filter::must([Condition::matches(F_TENANT, tenant.to_owned())])
}

/// The same conditions as the Edge backend's filter, in the server's terms.
fn build_filter(f: &VectorFilter, tenant: &str, exclude: Option<&str>) -> Filter {
    let mut must = vec![Condition::matches(F_TENANT, tenant.to_owned())];
    if !f.categories.is_empty() {
        must.push(Condition::matches(F_CATEGORY, f.categories.clone()));
    }
    if f.price_min.is_some() || f.price_max.is_some() {
        must.push(Condition::range(
            F_PRICE,
            Range {
                gte: f.price_min,
                lte: f.price_max,
                ..Range::default()
            },
        ));
    }
    for tag in &f.tags {
        must.push(Condition::matches(F_TAGS, tag.clone()));
    }
    if let Some(in_stock) = f.in_stock {
        must.push(Condition::matches(F_IN_STOCK, in_stock));
    }
    let mut filter = Filter::must(must);
    if let Some(p) = exclude {
        filter.must_not = vec![Condition::matches(F_PRODUCT_ID, p.to_owned())];
    }
    filter
}

/// A client error by what it is: the server's gRPC status code says
/// whether it refused the request (a collection that exists or does not),
/// and a transport failure (a status with a source, or no status at all)
/// that it could not be reached. The error stays the source.
fn client_err(e: QdrantError) -> VectorError {
    let message = match &e {
        QdrantError::ResponseError { status } => status.message().to_owned(),
        other => other.to_string(),
    };
    let kind = match &e {
        QdrantError::ResponseError { status } => match status.code() {
            tonic::Code::AlreadyExists => VectorError::AlreadyExists,
            tonic::Code::NotFound => VectorError::NotFound,
            _ if status_means_unreachable(status) => VectorError::Unavailable,
            _ => VectorError::Other,
        },
        _ => VectorError::Unavailable,
    };
    kind(message, Some(std::sync::Arc::new(e)))
}

/// Whether a gRPC status says the server could not be reached (refused,
/// reset, timed out, name not resolved) rather than that it refused the
/// request. tonic reports a failed connection as `Internal` or `Unknown`
/// with the transport error as its source; a status the server sent has
/// no source. qdrant-client's channel pool reports a failed reconnect (the
/// next request after a broken connection) as `Internal` with no source
/// and a message of its own.
fn status_means_unreachable(status: &tonic::Status) -> bool {
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => true,
        tonic::Code::Internal | tonic::Code::Unknown => {
            std::error::Error::source(status).is_some()
                || status.message().starts_with("Failed to connect to ")
        }
        _ => false,
    }
}

fn unavailable(e: QdrantError) -> VectorError {
    VectorError::Unavailable(e.to_string(), Some(std::sync::Arc::new(e)))
}

fn unknown_generation(id: u64) -> VectorError {
    VectorError::other(format!("unknown or finished generation {id}"))
}

#[async_trait::async_trait]
impl VectorIndex for QdrantIndex {
    fn backend(&self) -> &'static str {
        "qdrant"
    }

    async fn ping(&self) -> Result<(), VectorError> {
        self.client.health_check().await.map_err(client_err)?;
        self.refresh().await?;
        Ok(())
    }

    fn dims(&self) -> usize {
        self.dims.load(Ordering::Acquire)
    }

    fn layout(&self) -> Layout {
        if self.hybrid.load(Ordering::Acquire) {
            Layout::Hybrid
        } else {
            Layout::Single
        }
    }

    async fn upsert(&self, points: Vec<VectorPoint>) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let got = points[0].vector.len();
        let mut written = false;
        // Generations under construction first, as on Edge: a reindex must
        // miss nothing written while it runs.
        for (name, dims, layout) in self.pending().await? {
            if dims == got {
                self.upsert_into(&name, dims, layout, &points).await?;
                written = true;
            }
        }
        let live_dims = self.dims();
        if live_dims == got || !written {
            match self
                .upsert_into(&self.alias, live_dims, self.layout(), &points)
                .await
            {
                // The layout changed under this host (see `search`).
                Err(VectorError::Other(..)) if self.refresh().await? => {
                    self.upsert_into(&self.alias, self.dims(), self.layout(), &points)
                        .await?;
                }
                other => other?,
            }
        }
        Ok(())
    }

    async fn delete(&self, tenant: &str, product_ids: &[String]) -> Result<(), VectorError> {
        if product_ids.is_empty() {
            return Ok(());
        }
        let ids: Vec<PointId> = product_ids
            .iter()
            .map(|p| PointId::from(point_uuid(tenant, p).to_string()))
            .collect();
        for (name, _, _) in self.pending().await? {
            self.delete_by(&name, DeleteSelector::Ids(&ids)).await?;
        }
        self.delete_by(&self.alias, DeleteSelector::Ids(&ids)).await
    }

    async fn delete_tenant(&self, tenant: &str) -> Result<(), VectorError> {
        let filter = tenant_filter(tenant);
        for (name, _, _) in self.pending().await? {
            self.delete_by(&name, DeleteSelector::Filter(&filter)).await?;
        }
        self.delete_by(&self.alias, DeleteSelector::Filter(&filter)).await
    }

    async fn search(&self, q: &VectorQuery) -> Result<Vec<ScoredPoint>, VectorError> {
        match self.search_once(q).await {
            // Another host may have switched to a generation of another
            // layout since this one last looked: look again, then retry.
            Err(VectorError::Other(..) | VectorError::NotFound(..)) if self.refresh().await? => {
                self.search_once(q).await
            }
            other => other,
        }
    }

    async fn facets(&self, q: &FacetQuery) -> Result<FacetCounts, VectorError> {
        check_facets(q)?;
        let filter = build_filter(&q.filter, &q.tenant, None);
        let mut out = FacetCounts::default();
        for field in &q.fields {
            let key = match field {
                FacetField::Category => F_CATEGORY,
                FacetField::Tags => F_TAGS,
                FacetField::InStock => F_IN_STOCK,
                FacetField::Price => {
                    for (from, to) in q.buckets() {
                        let mut bucket = filter.clone();
                        bucket.must.push(Condition::range(
                            F_PRICE,
                            Range {
                                gte: from,
                                lt: to,
                                ..Range::default()
                            },
                        ));
                        let response = self
                            .client
                            .count(CountPointsBuilder::new(&self.alias).filter(bucket).exact(true))
                            .await
                            .map_err(client_err)?;
                        out.price.push(PriceBucket {
                            from,
                            to,
                            count: response.result.map_or(0, |r| r.count),
                        });
                    }
                    continue;
                }
            };
            let response = self
                .client
                .facet(FacetRequest {
                    collection_name: self.alias.clone(),
                    key: key.to_owned(),
                    filter: Some(filter.clone()),
                    // Both values of a flag, whatever the limit.
                    limit: Some(if key == F_IN_STOCK {
                        2
                    } else {
                        q.limit.max(1) as u64
                    }),
                    exact: Some(true),
                    ..FacetRequest::default()
                })
                .await
                .map_err(client_err)?;
            for hit in response.hits {
                match (field, hit.value.and_then(|v| v.variant)) {
                    (FacetField::InStock, Some(facet_value::Variant::BoolValue(b))) => {
                        out.in_stock.push((b, hit.count))
                    }
                    (FacetField::Category, Some(facet_value::Variant::StringValue(s))) => {
                        out.category.push((s, hit.count))
                    }
                    (FacetField::Tags, Some(facet_value::Variant::StringValue(s))) => {
                        out.tags.push((s, hit.count))
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    async fn get_vectors(
        &self,
        tenant: &str,
        product_id: &str,
    ) -> Result<Option<(Vec<f32>, Option<Vec<f32>>)>, VectorError> {
        let id = PointId::from(point_uuid(tenant, product_id).to_string());
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.alias, vec![id])
                    .with_payload(false)
                    .with_vectors(true),
            )
            .await
            .map_err(client_err)?;
        Ok(response
            .result
            .into_iter()
            .next()
            .and_then(|p| p.vectors)
            .and_then(|v| dense_vectors(&v)))
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
            .map(|p| PointId::from(point_uuid(tenant, p).to_string()))
            .collect();
        let response = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.alias, ids)
                    .with_payload(true)
                    .with_vectors(true),
            )
            .await
            .map_err(client_err)?;
        Ok(response
            .result
            .into_iter()
            .filter_map(|p| {
                let m: serde_json::Map<String, Value> =
                    p.payload.into_iter().map(|(k, v)| (k, v.into_json())).collect();
                if m.get(F_TENANT).and_then(Value::as_str) != Some(tenant) {
                    return None;
                }
                let (product_id, payload) = decode_payload_map(&m);
                let v = p.vectors?;
                let (vector, text_vector) = dense_vectors(&v)?;
                let keywords = match v.get_vector_by_name(V_KEYWORDS) {
                    Some(vector_output::Vector::Sparse(s)) => Keywords {
                        indices: s.indices,
                        values: s.values,
                    },
                    _ => Keywords::default(),
                };
                Some(VectorPoint {
                    tenant: tenant.to_owned(),
                    product_id,
                    vector,
                    text_vector,
                    keywords,
                    payload,
                })
            })
            .collect())
    }

    async fn product_ids(&self, tenant: &str) -> Result<Vec<String>, VectorError> {
        let mut ids = Vec::new();
        let mut offset: Option<PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.alias)
                .filter(tenant_filter(tenant))
                .limit(SCROLL_PAGE)
                .with_payload(PayloadIncludeSelector::from(vec![F_PRODUCT_ID.to_owned()]))
                .with_vectors(false);
            if let Some(o) = offset.take() {
                request = request.offset(o);
            }
            let page = self.client.scroll(request).await.map_err(client_err)?;
            ids.extend(
                page.result
                    .into_iter()
                    .map(|p| decode_payload(p.payload).0)
                    .filter(|id| !id.is_empty()),
            );
            match page.next_page_offset {
                Some(next) if next.point_id_options.is_some() => offset = Some(next),
                _ => return Ok(ids),
            }
        }
    }

    async fn count(&self, tenant: Option<&str>) -> Result<u64, VectorError> {
        let mut request = CountPointsBuilder::new(&self.alias).exact(true);
        if let Some(t) = tenant {
            request = request.filter(tenant_filter(t));
        }
        let response = self.client.count(request).await.map_err(client_err)?;
        Ok(response.result.map_or(0, |r| r.count))
    }

    async fn optimize(&self) -> Result<(), VectorError> {
        // The server optimises in the background on its own.
        Ok(())
    }

    async fn begin_generation(&self, dims: usize) -> Result<Generation, VectorError> {
        if dims == 0 {
            return Err(VectorError::other("vector dimension must be > 0"));
        }
        // Two reindexes racing for a number: the loser takes the next one.
        for _ in 0..8 {
            let next = self.generations().await?.last().map_or(1, |(g, _)| g + 1);
            let name = self.generation_name(next);
            match self.create_collection(&name, dims).await {
                Ok(()) => {
                    tracing::info!(collection = %name, dims, "began vector index generation");
                    return Ok(Generation { id: next, dims });
                }
                Err(VectorError::AlreadyExists(..)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(VectorError::other("cannot allocate a new generation number"))
    }

    async fn upsert_generation(
        &self,
        generation: &Generation,
        points: Vec<VectorPoint>,
    ) -> Result<(), VectorError> {
        if points.is_empty() {
            return Ok(());
        }
        let name = self.generation_name(generation.id);
        self.upsert_into(&name, generation.dims, Layout::Hybrid, &points)
            .await
            .map_err(|e| match e {
                VectorError::NotFound(..) => unknown_generation(generation.id),
                other => other,
            })
    }

    async fn commit_generation(&self, generation: Generation) -> Result<(), VectorError> {
        let name = self.generation_name(generation.id);
        if !self.generations().await?.iter().any(|(g, _)| *g == generation.id) {
            return Err(unknown_generation(generation.id));
        }
        let old = self.live_collection().await?;
        // One alias operation: the server swaps it under its collection lock,
        // so no search ever sees a missing or half-built collection.
        self.client
            .create_alias(CreateAliasBuilder::new(&name, &self.alias))
            .await
            .map_err(client_err)?;
        self.dims.store(generation.dims, Ordering::Release);
        self.hybrid.store(true, Ordering::Release);
        // The old generation and any abandoned older build go away.
        for (g, other) in self.generations().await? {
            if g < generation.id
                && let Err(e) = self.client.delete_collection(&other).await
            {
                tracing::warn!(collection = %other, error = %e, "cannot drop an old generation");
            }
        }
        tracing::info!(collection = %name, old = ?old, dims = generation.dims, "committed vector index generation");
        Ok(())
    }

    async fn abort_generation(&self, generation: Generation) -> Result<(), VectorError> {
        let name = self.generation_name(generation.id);
        if self.live_collection().await?.as_deref() == Some(name.as_str()) {
            return Err(VectorError::other(format!(
                "generation {} is live and cannot be aborted",
                generation.id
            )));
        }
        let dropped = self.client.delete_collection(&name).await.map_err(client_err)?;
        if !dropped.result {
            return Err(unknown_generation(generation.id));
        }
        tracing::info!(collection = %name, "aborted vector index generation");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::status_means_unreachable;

    #[test]
    fn a_failed_reconnect_is_unreachable_and_a_refusal_is_not() {
        let reconnect = tonic::Status::internal(
            "Failed to connect to http://127.0.0.1:1/: tonic::transport::Error(Transport, ConnectError)",
        );
        assert!(status_means_unreachable(&reconnect));
        assert!(status_means_unreachable(&tonic::Status::unavailable("down")));
        assert!(!status_means_unreachable(&tonic::Status::internal(
            "Wrong input: bad vector"
        )));
        assert!(!status_means_unreachable(&tonic::Status::invalid_argument("bad")));
    }
}
