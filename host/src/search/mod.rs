//! The query pipeline (DESIGN.md "Query pipeline"): embed the query (texts
//! through a cache), search the vector index with the tenant and the
//! filters pushed into it, hydrate the hits from the catalog in one read.
//! No HTTP types in here: the API parses requests into [`SearchRequest`] and
//! maps [`SearchError`] to responses.

use std::sync::Arc;
use std::time::Instant;

use moka::future::Cache;

pub mod logs;

use logs::SearchLogger;

use crate::encoder::DecodedImage;
use crate::encoder::service::{EmbedError, SharedEncoder};
use crate::model::Product;
use crate::plugins::{
    CallError, Candidate, PluginChoice, PluginRef, PluginRegistry, Query, QueryKind, ResolveError, World,
};
use crate::store::vectors::{
    FacetCounts, FacetField, FacetQuery, Fusion, Layout, PointPayload, SharedVectors, VectorError,
    VectorFilter, VectorQuery, Weights, keywords,
};
use crate::store::{Catalog, SearchLog, StoreError};
use crate::telemetry::SEARCH_PAGE_CACHE;

/// What a search starts from.
#[derive(Debug)]
pub enum QuerySource {
    Text(String),
    /// A decoded image (uploaded, sent as base64, or fetched from a URL);
    /// `url` is kept for the search log.
    Image {
        image: DecodedImage,
        url: Option<String>,
    },
    /// "More like this": the stored vector of a product of the tenant.
    Like(String),
}

impl QuerySource {
    /// The `query_type` of responses and search logs.
    pub fn kind(&self) -> &'static str {
        match self {
            QuerySource::Text(_) => "text",
            QuerySource::Image { .. } => "image",
            QuerySource::Like(_) => "like",
        }
    }
}

/// Which legs a search runs (API.md "Search modes").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SearchMode {
    /// Every leg the query has: a text query the image, text and keyword
    /// legs; an image or `like` query the image and text legs.
    #[default]
    Hybrid,
    /// The image vector alone (the only mode before hybrid search).
    Vector,
    /// BM25 alone (text queries only).
    Keyword,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
        }
    }
}

/// Facet counts a search asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FacetSpec {
    pub fields: Vec<FacetField>,
    pub limit: usize,
    pub price_buckets: Vec<f64>,
}

#[derive(Debug)]
pub struct SearchRequest {
    pub tenant: String,
    pub source: QuerySource,
    pub mode: SearchMode,
    pub weights: Weights,
    pub fusion: Fusion,
    /// Counted over every product that passes `filter` (all modes).
    pub facets: Option<FacetSpec>,
    pub filter: VectorFilter,
    pub limit: usize,
    pub offset: usize,
    pub min_score: Option<f32>,
    /// Which filter and ranker plugins run.
    pub plugins: PluginSelection,
    /// Who searched, for the search log.
    pub user_id: Option<String>,
    pub session_id: Option<String>,
    /// The tenant's generation when the caller has just read it (for an
    /// ETag): not read a second time.
    pub generation: Option<i64>,
}

/// The plugins a search asks for (API.md: defaults to the tenant's active
/// ones; `"none"` turns one off).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginSelection {
    pub filter: PluginChoice,
    pub ranker: PluginChoice,
}

/// How a plugin fared in one search.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginReport {
    pub world: World,
    pub name: String,
    pub version: i64,
    /// `None`: `ok`; otherwise why the search fell back to vector order.
    pub error: Option<CallError>,
    /// Time of the call, instantiation included.
    pub elapsed_ms: f64,
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub product: Product,
    pub score: f32,
}

#[derive(Debug)]
pub struct SearchResponse {
    pub hits: Vec<Hit>,
    pub took_ms: f64,
    pub query_type: &'static str,
    /// The mode that ran: `hybrid` asked of an index built before hybrid
    /// search runs as `vector` until a reindex.
    pub mode: SearchMode,
    pub facets: Option<FacetCounts>,
    /// The filter's and the ranker's report, for those that ran.
    pub plugins: Vec<PluginReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// `like` names a product the tenant does not have.
    #[error("there is no product `{0}`")]
    ProductNotFound(String),
    /// `like` names a product that has no vector (yet, or its image failed).
    #[error("product `{0}` is not indexed yet, so there is nothing to compare with")]
    ProductNotIndexed(String),
    /// The encoder or the vector index cannot serve now.
    #[error("the {0} is unavailable")]
    Unavailable(&'static str),
    /// The encoder queue is full.
    #[error("the encoder is overloaded")]
    Busy,
    /// The index holds vectors of another dimension (a model change whose
    /// reindex has not finished).
    #[error("the index was built with another model; a full reindex is needed")]
    ModelMismatch,
    /// Keyword search asked of an index built before hybrid search.
    #[error("the index was built before keyword search; a full reindex is needed")]
    KeywordsNotIndexed,
    /// A request option does not fit the query (keyword search of an
    /// image, hybrid weights that turn every leg off).
    #[error("{message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    /// The request names a plugin the tenant does not have, or one of the
    /// wrong world.
    #[error(transparent)]
    Plugin(ResolveError),
    #[error("{0}")]
    Internal(String),
}

impl From<StoreError> for SearchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(..) => SearchError::Unavailable("catalog"),
            other => SearchError::Internal(other.to_string()),
        }
    }
}

fn vector_error(e: VectorError) -> SearchError {
    match &e {
        VectorError::DimensionMismatch { .. } => SearchError::ModelMismatch,
        VectorError::Unavailable(..) => {
            tracing::warn!(error = %e, "vector index unavailable");
            SearchError::Unavailable("vector index")
        }
        other => SearchError::Internal(other.to_string()),
    }
}

fn embed_error(e: &EmbedError) -> SearchError {
    match e {
        EmbedError::Busy => SearchError::Busy,
        EmbedError::Stopped => SearchError::Unavailable("encoder"),
        EmbedError::Encoder(e) => SearchError::Internal(format!("encoder: {e}")),
    }
}

/// Settings of the pipeline.
#[derive(Debug, Clone)]
pub struct SearchConfig {
    /// Upper bound of the text-embedding cache, in bytes of vectors and keys.
    pub text_cache_bytes: u64,
    /// Upper bound of the result-page cache, in (estimated) bytes; 0 turns
    /// it off.
    pub page_cache_bytes: u64,
    /// Longest a result page is reused (writes invalidate it sooner).
    pub page_cache_ttl: std::time::Duration,
    /// Candidates (top-K') handed to filter and ranker plugins.
    pub plugin_candidates: usize,
}

impl SearchConfig {
    /// Caches under `search.*`, candidates under `plugins.candidates`.
    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        let s = &settings.search;
        Self {
            text_cache_bytes: s.text_cache_mb * 1024 * 1024,
            page_cache_bytes: s.page_cache_mb * 1024 * 1024,
            page_cache_ttl: std::time::Duration::from_secs(s.page_cache_ttl_secs.max(1)),
            plugin_candidates: settings.plugins.candidates,
        }
    }
}

impl Default for SearchConfig {
    /// The built-in settings'.
    fn default() -> Self {
        Self::from_settings(crate::config::Settings::defaults())
    }
}

/// A cached result page: its key holds the tenant's generation, so any
/// product write (which bumps it) makes older pages unreachable.
type PageKey = (String, i64, String);
/// A cached page: its hits, the plugin reports (all `ok`: pages that
/// fell back are never cached), the mode that ran and the facets.
type Page = Arc<(Vec<Hit>, Vec<PluginReport>, SearchMode, Option<FacetCounts>)>;

/// The query pipeline. Cheap to share (`Arc`).
pub struct SearchService {
    catalog: Arc<dyn Catalog>,
    encoder: SharedEncoder,
    vectors: SharedVectors,
    /// (model id, text) → unit vector.
    text_cache: Cache<(String, String), Arc<Vec<f32>>>,
    /// (tenant, tenant generation, canonical request) → hits. Text and
    /// like queries only: image queries are rarely repeated byte for byte.
    pages: Option<Cache<PageKey, Page>>,
    logger: SearchLogger,
    plugins: Arc<PluginRegistry>,
    plugin_candidates: usize,
}

impl SearchService {
    pub fn new(
        catalog: Arc<dyn Catalog>,
        encoder: SharedEncoder,
        vectors: SharedVectors,
        logger: SearchLogger,
        plugins: Arc<PluginRegistry>,
        config: &SearchConfig,
    ) -> Self {
        let text_cache = Cache::builder()
            .weigher(|k: &(String, String), v: &Arc<Vec<f32>>| {
                let bytes = k.0.len() + k.1.len() + v.len() * 4 + 64;
                u32::try_from(bytes).unwrap_or(u32::MAX)
            })
            .max_capacity(config.text_cache_bytes)
            .build();
        let pages = (config.page_cache_bytes > 0).then(|| {
            Cache::builder()
                .weigher(|k: &PageKey, v: &Page| {
                    // A hydrated product is about a kilobyte on average.
                    let bytes = k.0.len() + k.2.len() + 64 + v.0.len() * 1024 + v.1.len() * 128;
                    u32::try_from(bytes).unwrap_or(u32::MAX)
                })
                .max_capacity(config.page_cache_bytes)
                .time_to_live(config.page_cache_ttl)
                .build()
        });
        Self {
            catalog,
            encoder,
            vectors,
            text_cache,
            pages,
            logger,
            plugins,
            plugin_candidates: config.plugin_candidates.max(1),
        }
    }

    pub fn plugins(&self) -> &Arc<PluginRegistry> {
        &self.plugins
    }

    /// Embeds a query text, through the cache. Concurrent misses of one
    /// text share a single encoder call.
    async fn text_vector(&self, text: &str) -> Result<Arc<Vec<f32>>, SearchError> {
        let encoder = self.encoder.service().map_err(|why| {
            tracing::warn!(reason = %why, "search refused: encoder not ready");
            SearchError::Unavailable("encoder")
        })?;
        let key = text_key(encoder.model_id(), text);
        let text = key.1.clone();
        let entry = self
            .text_cache
            .entry(key)
            .or_try_insert_with(async move { encoder.embed_text(text).await.map(Arc::new) })
            .await
            .map_err(|e: Arc<EmbedError>| embed_error(&e))?;
        let outcome = if entry.is_fresh() { "miss" } else { "hit" };
        metrics::counter!(crate::telemetry::SEARCH_TEXT_CACHE, "outcome" => outcome).increment(1);
        Ok(entry.into_value())
    }

    /// Whether the embedding of this text is cached (an encoder that is not
    /// up counts as "no": the embedding call reports it).
    fn text_cached(&self, text: &str) -> bool {
        self.encoder
            .service()
            .is_ok_and(|e| self.text_cache.contains_key(&text_key(e.model_id(), text)))
    }

    /// What every search needs before its page-cache lookup: the tenant's
    /// generation and the filter and ranker it runs.
    async fn prelude(&self, req: &SearchRequest) -> Result<Prelude, SearchError> {
        let generation = match req.generation {
            Some(g) => g,
            None => self.catalog.tenant_generation(&req.tenant).await?,
        };
        let filter = self
            .plugins
            .resolve(&req.tenant, generation, World::Filter, &req.plugins.filter)
            .await
            .map_err(plugin_error)?;
        let ranker = self
            .plugins
            .resolve(&req.tenant, generation, World::Ranker, &req.plugins.ranker)
            .await
            .map_err(plugin_error)?;
        Ok(Prelude {
            generation,
            filter,
            ranker,
        })
    }

    pub async fn search(&self, req: SearchRequest) -> Result<SearchResponse, SearchError> {
        let start = Instant::now();
        // A text not embedded yet goes to the encoder at once, and the
        // catalog reads of the prelude run meanwhile instead of before it.
        // (Should its page be cached after all, which needs the text cache
        // to have evicted a text the page cache kept, the embedding is
        // spent for nothing; it still lands in the text cache.)
        let (prelude, embedded) = match &req.source {
            // (Keyword search needs no embedding, nor the encoder.)
            QuerySource::Text(t) if req.mode != SearchMode::Keyword && !self.text_cached(t) => {
                let (prelude, vector) = tokio::join!(self.prelude(&req), self.text_vector(t));
                (prelude?, Some(vector?))
            }
            _ => (self.prelude(&req).await?, None),
        };
        let prelude_ms = ms(start);
        let Prelude {
            generation,
            filter,
            ranker,
        } = prelude;
        let key = match (&self.pages, &req.source) {
            (Some(_), QuerySource::Text(_) | QuerySource::Like(_)) => {
                Some(self.page_key(&req, generation, [&filter, &ranker]))
            }
            _ => None,
        };
        if let (Some(pages), Some(key)) = (&self.pages, &key) {
            if let Some(page) = pages.get(key).await {
                metrics::counter!(SEARCH_PAGE_CACHE, "outcome" => "hit").increment(1);
                let (hits, reports, mode, facets) = page.as_ref().clone();
                return Ok(self.respond(
                    req,
                    Ran {
                        hits,
                        reports,
                        mode,
                        facets,
                    },
                    start,
                ));
            }
            metrics::counter!(SEARCH_PAGE_CACHE, "outcome" => "miss").increment(1);
        }
        let mut req = req;
        let (ran, stages) = self.run(&mut req, filter, ranker, embedded).await?;
        if let (Some(pages), Some(key)) = (&self.pages, key)
            && ran.reports.iter().all(|r| r.error.is_none())
        {
            let page = (
                ran.hits.clone(),
                ran.reports.clone(),
                ran.mode,
                ran.facets.clone(),
            );
            pages.insert(key, Arc::new(page)).await;
        }
        tracing::debug!(
            tenant = %req.tenant,
            query_type = req.source.kind(),
            prelude_ms,
            embed_ms = stages.embed_ms,
            vector_ms = stages.vector_ms,
            hydrate_ms = stages.hydrate_ms,
            plugins_ms = stages.plugins_ms,
            total_ms = ms(start),
            "search stages"
        );
        Ok(self.respond(req, ran, start))
    }

    /// The cache key of a text or like query: tenant, its generation, and
    /// every input that shapes the page (plugin versions and parameters
    /// included).
    fn page_key(&self, req: &SearchRequest, generation: i64, plugins: [&Option<PluginRef>; 2]) -> PageKey {
        let model = self
            .encoder
            .service()
            .map(|e| e.model_id().to_owned())
            .unwrap_or_default();
        let mut filter = req.filter.clone();
        filter.categories.sort();
        filter.tags.sort();
        let source = match &req.source {
            QuerySource::Text(t) => format!("text:{}", t.trim()),
            QuerySource::Like(id) => format!("like:{id}"),
            QuerySource::Image { .. } => String::new(),
        };
        let plugins: Vec<String> = plugins
            .iter()
            .map(|p| match p {
                Some(p) => format!(
                    "{}@{}:{}:{:?}:{:?}",
                    p.name, p.version, p.digest, p.params, p.memory_mb
                ),
                None => "-".to_owned(),
            })
            .collect();
        let canonical = format!(
            "{model}\u{0}{source}\u{0}{filter:?}\u{0}{}\u{0}{}\u{0}{:?}\u{0}{plugins:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}\u{0}{:?}",
            req.limit, req.offset, req.min_score, req.mode, req.weights, req.fusion, req.facets
        );
        (req.tenant.clone(), generation, canonical)
    }

    /// Logs the search and shapes the response.
    fn respond(&self, req: SearchRequest, ran: Ran, start: Instant) -> SearchResponse {
        let Ran {
            hits,
            reports: plugins,
            mode,
            facets,
        } = ran;
        let query_type = req.source.kind();
        let (query_text, query_image_url) = match req.source {
            QuerySource::Text(t) => (Some(t), None),
            QuerySource::Image { url, .. } => (None, url),
            QuerySource::Like(_) => (None, None),
        };
        let took_ms = ms(start);
        self.logger.record(SearchLog {
            tenant: req.tenant,
            query_type: query_type.to_owned(),
            query_text,
            query_image_url,
            results_count: i32::try_from(hits.len()).unwrap_or(i32::MAX),
            execution_time_ms: took_ms,
            user_id: req.user_id,
            session_id: req.session_id,
            created_at: crate::model::now(),
        });
        SearchResponse {
            hits,
            took_ms,
            query_type,
            mode,
            facets,
            plugins,
        }
    }

    /// Embed, search the index, hydrate; then the filter and ranker
    /// plugins (if any) over the top-K' candidates, and cut the page.
    /// `embedded`: the text's vector when the caller already has it.
    async fn run(
        &self,
        req: &mut SearchRequest,
        filter: Option<PluginRef>,
        ranker: Option<PluginRef>,
        embedded: Option<Arc<Vec<f32>>>,
    ) -> Result<(Ran, Stages), SearchError> {
        let vectors = self.vectors.index().map_err(|why| {
            tracing::warn!(reason = %why, "search refused: vector index not ready");
            SearchError::Unavailable("vector index")
        })?;
        let mut stages = Stages::default();
        // An index built before hybrid search answers hybrid queries as
        // vector ones until the reindex that moves it over.
        let hybrid_index = vectors.layout() == Layout::Hybrid;
        let mode = match req.mode {
            SearchMode::Keyword if !matches!(req.source, QuerySource::Text(_)) => {
                return Err(SearchError::Invalid {
                    field: "mode",
                    message: "keyword search needs a `text` query",
                });
            }
            SearchMode::Keyword if !hybrid_index => return Err(SearchError::KeywordsNotIndexed),
            SearchMode::Hybrid if !hybrid_index => SearchMode::Vector,
            m => m,
        };
        let t = Instant::now();
        let mut text_vector = None;
        let mut keyword_terms = None;
        let (vector, exclude) = match &mut req.source {
            QuerySource::Text(text) if mode == SearchMode::Keyword => {
                keyword_terms = Some(keywords::query(&req.tenant, text));
                (Vec::new(), None)
            }
            QuerySource::Text(text) => {
                let v = match embedded {
                    Some(v) => v.as_ref().clone(),
                    None => self.text_vector(text).await?.as_ref().clone(),
                };
                if mode == SearchMode::Hybrid {
                    keyword_terms = Some(keywords::query(&req.tenant, text));
                    text_vector = Some(v.clone());
                }
                (v, None)
            }
            QuerySource::Image { image, .. } => {
                let encoder = self
                    .encoder
                    .service()
                    .map_err(|_| SearchError::Unavailable("encoder"))?;
                // Moved out (the request keeps only what the log needs).
                let image = std::mem::replace(image, DecodedImage::from_rgb(image::RgbImage::new(1, 1)));
                let v = encoder.embed_image(image).await.map_err(|e| embed_error(&e))?;
                if mode == SearchMode::Hybrid {
                    text_vector = Some(v.clone());
                }
                (v, None)
            }
            QuerySource::Like(id) => {
                match vectors.get_vectors(&req.tenant, id).await.map_err(vector_error)? {
                    Some((v, text)) => {
                        if mode == SearchMode::Hybrid {
                            text_vector = text;
                        }
                        (v, Some(id))
                    }
                    None => {
                        let known = !self
                            .catalog
                            .get_products(&req.tenant, std::slice::from_ref(id))
                            .await?
                            .is_empty();
                        return Err(if known {
                            SearchError::ProductNotIndexed(id.clone())
                        } else {
                            SearchError::ProductNotFound(id.clone())
                        });
                    }
                }
            }
        };
        stages.embed_ms = ms(t);
        let plugged = filter.is_some() || ranker.is_some();
        // With plugins the page is cut after them, from the top-K'.
        let (limit, offset) = if plugged {
            (self.plugin_candidates.max(req.offset + req.limit), 0)
        } else {
            (req.limit, req.offset)
        };
        if mode == SearchMode::Hybrid {
            let w = &req.weights;
            let keyword = keyword_terms.is_some() && w.keyword > 0.0;
            let text = text_vector.is_some() && w.text > 0.0;
            if !keyword && !text && w.image <= 0.0 {
                return Err(SearchError::Invalid {
                    field: "weights",
                    message: "the weights turn off every leg this query runs",
                });
            }
        }
        let t = Instant::now();
        let query = VectorQuery {
            tenant: req.tenant.clone(),
            vector,
            text_vector,
            keywords: keyword_terms,
            weights: req.weights,
            fusion: req.fusion,
            limit,
            offset,
            filter: req.filter.clone(),
            exclude_product: exclude.cloned(),
            min_score: req.min_score,
        };
        let facet_query = req.facets.as_ref().map(|f| FacetQuery {
            tenant: req.tenant.clone(),
            filter: req.filter.clone(),
            fields: f.fields.clone(),
            limit: f.limit,
            price_buckets: f.price_buckets.clone(),
        });
        let (scored, facets) = tokio::join!(vectors.search(&query), async {
            match &facet_query {
                Some(f) => vectors.facets(f).await.map(Some),
                None => Ok(None),
            }
        });
        let (scored, mut facets) = (scored.map_err(vector_error)?, facets.map_err(vector_error)?);
        stages.vector_ms = ms(t);
        let t = Instant::now();
        // One catalog read for the whole page, then back into hit order. A
        // product deleted a moment ago (its vector's removal still queued)
        // is left out.
        let ids: Vec<String> = scored.iter().map(|s| s.product_id.clone()).collect();
        let mut products: std::collections::HashMap<String, Product> = self
            .catalog
            .get_products(&req.tenant, &ids)
            .await?
            .into_iter()
            .map(|p| (p.external_id.clone(), p))
            .collect();
        let mut hits: Vec<Hit> = scored
            .into_iter()
            .filter_map(|s| {
                products.remove(&s.product_id).map(|product| Hit {
                    product,
                    score: s.score,
                })
            })
            .collect();
        stages.hydrate_ms = ms(t);
        if !plugged {
            let ran = Ran {
                hits,
                reports: Vec::new(),
                mode,
                facets,
            };
            return Ok((ran, stages));
        }
        let t = Instant::now();
        let (text, kind) = match &req.source {
            QuerySource::Text(t) => (Some(t.clone()), QueryKind::Text),
            QuerySource::Image { .. } => (None, QueryKind::Image),
            QuerySource::Like(_) => (None, QueryKind::Like),
        };
        let query = |p: &PluginRef| Query {
            text: text.clone(),
            kind,
            params: p.params.clone(),
        };
        let host = self.plugins.host();
        let mut reports = Vec::new();
        if let Some(p) = filter {
            let t = Instant::now();
            let outcome = host.filter(&p, query(&p), candidates(&hits)).await;
            let error = match outcome {
                Ok(keep) => {
                    hits.retain(|h| keep.contains(&h.product.external_id));
                    // A filter plugin may hide products (a tenant's own
                    // rule): facets then count what it kept, not the
                    // catalog, so they name nothing it hid.
                    if let Some(q) = &facet_query {
                        let kept: Vec<PointPayload> = hits
                            .iter()
                            .map(|h| crate::indexing::payload(&h.product))
                            .collect();
                        facets = Some(q.count_over(kept.iter().map(|p| (q.tenant.as_str(), p))));
                    }
                    None
                }
                Err(e) => Some(e),
            };
            reports.push(report(World::Filter, &p, error, t));
        }
        if let Some(p) = ranker {
            let t = Instant::now();
            let outcome = host.rank(&p, query(&p), candidates(&hits)).await;
            let error = match outcome {
                Ok(scores) => {
                    for (h, s) in hits.iter_mut().zip(scores) {
                        h.score = s;
                    }
                    // Stable: equal scores keep vector order.
                    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
                    None
                }
                Err(e) => Some(e),
            };
            reports.push(report(World::Ranker, &p, error, t));
        }
        stages.plugins_ms = ms(t);
        let hits = hits.into_iter().skip(req.offset).take(req.limit).collect();
        let ran = Ran {
            hits,
            reports,
            mode,
            facets,
        };
        Ok((ran, stages))
    }
}

/// What a search found: the page, the plugins' reports, the mode that ran
/// and the facets.
struct Ran {
    hits: Vec<Hit>,
    reports: Vec<PluginReport>,
    mode: SearchMode,
    facets: Option<FacetCounts>,
}

/// The tenant's generation and the plugins a search runs.
struct Prelude {
    generation: i64,
    filter: Option<PluginRef>,
    ranker: Option<PluginRef>,
}

/// Where a search's time went, for the debug log (`vitrine::search=debug`).
#[derive(Default)]
struct Stages {
    /// Embedding the query in the pipeline itself (a text embedded during
    /// the prelude counts there), or reading a `like` product's vector.
    embed_ms: f64,
    vector_ms: f64,
    hydrate_ms: f64,
    plugins_ms: f64,
}

/// The text cache's key: the model and the trimmed text.
fn text_key(model_id: &str, text: &str) -> (String, String) {
    (model_id.to_owned(), text.trim().to_owned())
}

/// Milliseconds since `since`.
fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

fn report(world: World, p: &PluginRef, error: Option<CallError>, start: Instant) -> PluginReport {
    PluginReport {
        world,
        name: p.name.clone(),
        version: p.version,
        error,
        elapsed_ms: ms(start),
    }
}

fn plugin_error(e: ResolveError) -> SearchError {
    match e {
        ResolveError::Store(e) => e.into(),
        other => SearchError::Plugin(other),
    }
}

/// What a filter or ranker sees of each hit.
fn candidates(hits: &[Hit]) -> Vec<Candidate> {
    use rust_decimal::prelude::ToPrimitive;
    hits.iter()
        .map(|h| {
            let p = &h.product;
            Candidate {
                id: p.external_id.clone(),
                score: h.score,
                title: p.fields.title.clone(),
                category: p.fields.category.clone(),
                price: p.fields.price.and_then(|d| d.to_f64()),
                currency: p.fields.currency.clone(),
                tags: p.fields.tags.clone(),
                in_stock: p.fields.in_stock,
            }
        })
        .collect()
}
