//! Server lifecycle: open the catalog, bind, serve until SIGTERM/SIGINT,
//! then let in-flight requests finish (up to `server.shutdown_grace_secs`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::net::TcpListener;

use crate::api::{self, AppState, Limits, auth::Authenticator};
use crate::config::{CatalogBackend, Environment, Settings, redact_url};
use crate::encoder::service::{BatchConfig, SharedEncoder, load_into};
use crate::encoder::{EncoderOptions, ModelSource, SourceOptions};
use crate::indexing::IndexProducts;
use crate::indexing::Reindex;
use crate::jobs::kinds::JobKind;
use crate::jobs::{JobRunner, RunnerConfig};
use crate::media::{BlobStore, FetchConfig, ImageFetcher};
use crate::plugins::{
    PluginHost, PluginRegistry, PluginsConfig, default_concurrent_calls, default_concurrent_calls_per_tenant,
};
use crate::search::logs::SearchLogger;
use crate::search::{SearchConfig, SearchService};
use crate::store::vectors::{
    EdgeIndex, QdrantIndex, SharedVectors, VectorIndex, VectorsState, server::ServerConfig,
};
use crate::store::{self, Catalog};
use crate::telemetry;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("catalog: {0}")]
    Catalog(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Opens the catalog the settings select (applying migrations).
pub async fn open_catalog(settings: &Settings) -> Result<Arc<dyn Catalog>, ServerError> {
    let url = settings
        .catalog
        .url
        .as_ref()
        .map(|u| u.expose_secret().to_owned());
    match settings.catalog_backend()? {
        CatalogBackend::Sqlite { path } => tracing::info!(path = %path.display(), "catalog: SQLite"),
        CatalogBackend::Postgres => {
            tracing::info!(url = %redact_url(url.as_deref().unwrap_or_default()), "catalog: PostgreSQL")
        }
    }
    Ok(store::open_catalog(
        url.as_deref(),
        &settings.data_dir,
        settings.catalog.max_connections,
    )
    .await?)
}

/// Builds the application state from settings and an open catalog.
pub fn app_state(
    settings: &Settings,
    catalog: Arc<dyn Catalog>,
    encoder: SharedEncoder,
    vectors: SharedVectors,
    fetcher: Arc<ImageFetcher>,
    plugins: Arc<PluginRegistry>,
) -> AppState {
    let images = crate::api::images::ImageStore::new(plugins.host().blobs().clone());
    // The writer task ends (flushing) when the last logger is dropped.
    let (logger, _writer) = SearchLogger::start(catalog.clone(), crate::search::logs::BUFFER);
    let search = Arc::new(SearchService::new(
        catalog.clone(),
        encoder.clone(),
        vectors.clone(),
        logger,
        plugins,
        &SearchConfig::from_settings(settings),
    ));
    AppState {
        catalog,
        encoder,
        vectors,
        search,
        fetcher,
        auth: Arc::new(Authenticator::from_settings(settings)),
        rate_limits: Arc::new(crate::api::limits::RateLimiter::new(&settings.rate_limits)),
        policies: Arc::default(),
        metrics: telemetry::metrics_handle(),
        limits: Limits::from_settings(settings),
        images,
        edge: None,
    }
}

/// Encoder options from settings (validated at load).
pub fn encoder_options(
    settings: &Settings,
) -> Result<(ModelSource, EncoderOptions, BatchConfig), ServerError> {
    let e = &settings.encoder;
    let invalid = |key: &str, message: String| {
        ServerError::Config(crate::config::ConfigError::Invalid {
            key: key.to_owned(),
            message,
        })
    };
    let source: ModelSource = e
        .model
        .parse()
        .map_err(|err: crate::encoder::EncoderError| invalid("encoder.model", err.to_string()))?;
    let device = e
        .device
        .parse()
        .map_err(|err: crate::encoder::EncoderError| invalid("encoder.device", err.to_string()))?;
    let cpu_kernels = e
        .cpu_kernels
        .parse()
        .map_err(|err: crate::encoder::EncoderError| invalid("encoder.cpu_kernels", err.to_string()))?;
    let precision = crate::encoder::parse_precision(&e.precision)
        .map_err(|err| invalid("encoder.precision", err.to_string()))?;
    let options = EncoderOptions {
        device,
        cpu_kernels,
        precision,
        threads: (e.threads > 0).then_some(e.threads),
        max_batch: e.max_batch,
        source: SourceOptions {
            cache_dir: Some(settings.data_dir.join("models")),
            revision: None,
        },
        ..EncoderOptions::default()
    };
    let batch = BatchConfig::from_settings(e);
    Ok((source, options, batch))
}

/// `vitrine serve`: runs until a shutdown signal.
pub async fn run(settings: Settings) -> Result<(), ServerError> {
    if settings.auth.admin_key.is_none() {
        // validate() already refused this combination in production.
        debug_assert_eq!(settings.env, Environment::Development);
        tracing::warn!(
            "authentication is OFF: no auth.admin_key is set (development only; \
             set VITRINE__AUTH__ADMIN_KEY to turn it on)"
        );
    }
    // A certificate that does not load stops the start, naming its setting.
    let tls = match (&settings.server.tls_cert, &settings.server.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::Tls::new(cert, key)?),
        _ => None,
    };
    // An edge keeps its replica in an SQLite catalog of its own, written by
    // the follower (settings.validate refused catalog.url on an edge).
    let edge_config = crate::replica::EdgeConfig::from_settings(&settings.edge);
    let replica_catalog = match &edge_config {
        Some(e) => {
            tracing::info!(origin = %redact_url(&e.origin_url), tenants = ?e.tenants, "role: edge replica");
            let path = settings.data_dir.join("catalog.sqlite3");
            std::fs::create_dir_all(&settings.data_dir)?;
            Some(Arc::new(
                store::sqlite::SqliteCatalog::open(&path, settings.catalog.max_connections).await?,
            ))
        }
        None => None,
    };
    let catalog: Arc<dyn Catalog> = match &replica_catalog {
        Some(c) => c.clone(),
        None => open_catalog(&settings).await?,
    };
    crate::media::decode::configure(
        settings.media.decode_budget_pixels,
        Duration::from_millis(settings.media.decode_wait_ms),
        None,
    );
    let (source, options, batch) = encoder_options(&settings)?;
    let encoder = SharedEncoder::default();
    let vectors = SharedVectors::default();
    let fetcher = Arc::new(
        ImageFetcher::new(FetchConfig::from_settings(&settings.media)).map_err(|e| {
            ServerError::Config(crate::config::ConfigError::Invalid {
                key: "media".into(),
                message: e.to_string(),
            })
        })?,
    );
    let blobs = BlobStore::open(
        settings.blobs.url.as_ref().map(|u| u.expose_secret()),
        &settings.data_dir,
    )
    .map_err(|e| {
        ServerError::Config(crate::config::ConfigError::Invalid {
            key: "blobs.url".into(),
            message: e.to_string(),
        })
    })?;
    let indexing = Indexing {
        catalog: catalog.clone(),
        encoder: encoder.clone(),
        vectors: vectors.clone(),
        settings: settings.clone(),
        fetcher: fetcher.clone(),
        blobs: blobs.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let follower_stop = stop_rx.clone();
    // The model loads in the background: the catalog API serves meanwhile,
    // and readiness reports the encoder until it is up. Indexing starts once
    // it is.
    // On an edge the follower loads the model the origin names, and no jobs
    // run (its vectors come from the origin).
    let edge_encoder = edge_config.as_ref().map(|_| (options.clone(), batch));
    let background = if edge_config.is_none() {
        tokio::spawn(crate::replica::compact_feed(catalog.clone(), stop_rx.clone()));
        tokio::spawn(async move {
            load_into(indexing.encoder.clone(), source, options, batch).await;
            indexing.run(stop_rx).await;
        })
    } else {
        tracing::info!(configured = %source, "encoder.model is not used on an edge: it loads the origin's model");
        tokio::spawn(async {})
    };
    let plugins = Arc::new(PluginRegistry::new(
        plugin_host(&settings, blobs)?,
        catalog.clone(),
    ));
    // Active plugins get ready in the background (searches never compile;
    // until a version is ready its searches fall back).
    let warming = plugins.clone();
    tokio::spawn(async move { warming.warm_active().await });
    let host = plugins.host().clone();
    let mut state = app_state(
        &settings,
        catalog,
        encoder.clone(),
        vectors.clone(),
        fetcher,
        plugins,
    );
    let follower = match (edge_config, replica_catalog, edge_encoder) {
        (Some(config), Some(catalog), Some((encoder_options, batch))) => {
            let status = Arc::new(crate::replica::ReplicaStatus::new(Duration::from_secs(
                settings.edge.max_staleness_secs,
            )));
            // A forwarded request may take as long as the origin allows.
            let forward_timeout = Duration::from_secs(settings.server.request_timeout_secs + 5);
            state.edge = Some(Arc::new(crate::replica::EdgeRole {
                status: status.clone(),
                forwarder: crate::replica::forward::Forwarder::new(&config.origin_url, forward_timeout),
                tenants: config.tenants.clone(),
            }));
            let outbox = crate::replica::outbox::Outbox {
                config: config.clone(),
                catalog: catalog.clone(),
                client: crate::replica::Follower::client(Duration::from_secs(30)),
            };
            tokio::spawn(outbox.run(follower_stop.clone()));
            let follower = crate::replica::Follower {
                config,
                catalog,
                vectors,
                auth: state.auth.clone(),
                policies: state.policies.clone(),
                plugins: state.search.plugins().clone(),
                encoder,
                encoder_options,
                batch,
                data_dir: settings.data_dir.clone(),
                status,
                // A long poll lasts 2 s: an origin that stops answering is
                // noticed within this.
                client: crate::replica::Follower::client(Duration::from_secs(15)),
            };
            Some(tokio::spawn(follower.run(follower_stop)))
        }
        _ => None,
    };
    let addr = settings.listen_addr()?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: addr.to_string(),
            source,
        })?;
    let grace = Duration::from_secs(settings.server.shutdown_grace_secs);
    let signal = async move {
        shutdown_signal().await;
        // Guests still running are interrupted; their searches fall back.
        host.shut_down();
    };
    if let Some(tls) = &tls {
        tokio::spawn(tls.clone().watch(stop_tx.subscribe()));
    }
    let served = serve(
        listener,
        state,
        crate::conn::ConnLimits::from_settings(&settings),
        signal,
        grace,
        tls,
    )
    .await;
    // Stop claiming jobs (unfinished ones go back to the queue) and
    // following the origin.
    let _ = stop_tx.send(true);
    if let Some(f) = follower {
        let _ = tokio::time::timeout(grace, f).await;
    }
    if tokio::time::timeout(grace, background).await.is_err() {
        tracing::warn!("the job runner did not stop in time; its leases will expire");
    }
    served
}

/// The plugin host the settings describe.
pub fn plugins_config(settings: &Settings) -> PluginsConfig {
    let p = &settings.plugins;
    let max_concurrent_calls = match p.max_concurrent_calls {
        0 => default_concurrent_calls(),
        n => n,
    };
    PluginsConfig {
        memory_bytes: p.memory_mb * 1024 * 1024,
        max_memory_bytes: p.max_memory_mb * 1024 * 1024,
        filter_deadline: Duration::from_millis(p.filter_deadline_ms),
        ranker_deadline: Duration::from_millis(p.ranker_deadline_ms),
        ingest_deadline: Duration::from_millis(p.ingest_deadline_ms),
        fuel: p.fuel,
        max_concurrent_calls,
        max_concurrent_calls_per_tenant: match p.max_concurrent_calls_per_tenant {
            0 => default_concurrent_calls_per_tenant(max_concurrent_calls),
            n => n.min(max_concurrent_calls),
        },
        compile_timeout: Duration::from_millis(p.compile_timeout_ms),
        pooling: p.pooling,
        ..PluginsConfig::new(&settings.data_dir)
    }
}

pub fn plugin_host(settings: &Settings, blobs: BlobStore) -> Result<PluginHost, ServerError> {
    PluginHost::new(plugins_config(settings), blobs).map_err(|e| {
        ServerError::Config(crate::config::ConfigError::Invalid {
            key: "plugins".into(),
            message: format!("cannot start the plugin host: {e}"),
        })
    })
}

/// Everything the indexing jobs need, started once the encoder is ready.
struct Indexing {
    catalog: Arc<dyn Catalog>,
    encoder: SharedEncoder,
    vectors: SharedVectors,
    settings: Settings,
    fetcher: Arc<ImageFetcher>,
    blobs: BlobStore,
}

/// Opens the vector index the settings select: the Qdrant server when
/// `vectors.url` is set, Qdrant Edge in the data directory otherwise.
pub async fn open_vectors(settings: &Settings, dims: usize) -> Result<Arc<dyn VectorIndex>, String> {
    match &settings.vectors.url {
        Some(url) => {
            let config = ServerConfig {
                url: url.expose_secret().to_owned(),
                api_key: settings
                    .vectors
                    .api_key
                    .as_ref()
                    .map(|k| k.expose_secret().to_owned()),
                timeout: Duration::from_secs(settings.vectors.timeout_secs),
                ..ServerConfig::new("")
            };
            tracing::info!(url = %redact_url(url.expose_secret()), "vectors: Qdrant server");
            QdrantIndex::connect(config, dims)
                .await
                .map(|v| Arc::new(v) as Arc<dyn VectorIndex>)
                .map_err(|e| format!("cannot reach the Qdrant server named by vectors.url: {e}"))
        }
        None => EdgeIndex::open_async(settings.data_dir.clone(), dims)
            .await
            .map(|v| Arc::new(v) as Arc<dyn VectorIndex>)
            .map_err(|e| format!("cannot open the Qdrant Edge index in data_dir: {e}")),
    }
}

/// The handler of the indexing jobs the settings describe.
pub fn index_handler(
    settings: &Settings,
    catalog: Arc<dyn Catalog>,
    encoder: SharedEncoder,
    vectors: Arc<dyn VectorIndex>,
    fetcher: Arc<ImageFetcher>,
    blobs: BlobStore,
) -> IndexProducts {
    IndexProducts {
        catalog,
        encoder,
        vectors,
        fetcher,
        blobs,
        time_limit: Duration::from_secs(settings.jobs.index_time_limit_secs),
        max_coalesced: settings.encoder.max_batch,
        locks: Default::default(),
    }
}

/// The job runner's settings.
pub fn runner_config(settings: &Settings) -> RunnerConfig {
    let worker = format!("{}-{}", std::process::id(), uuid::Uuid::new_v4().simple());
    RunnerConfig::from_settings(settings, worker)
}

impl Indexing {
    async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let service = match self.encoder.service() {
            Ok(s) => s,
            Err(why) => {
                // The encoder's failure is already logged.
                tracing::warn!(
                    "vector index unavailable: it takes its dimension from the encoder, which failed"
                );
                self.vectors.set(VectorsState::Failed(format!(
                    "not opened: the vector index takes its dimension from the encoder, which failed ({why})"
                )));
                return;
            }
        };
        let vectors = match open_vectors(&self.settings, service.dims()).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "vector index unavailable; indexing is stopped");
                self.vectors.set(VectorsState::Failed(e));
                return;
            }
        };
        self.vectors.set(VectorsState::Ready(vectors.clone()));
        tracing::info!(
            backend = vectors.backend(),
            dims = vectors.dims(),
            "vector index ready"
        );
        if vectors.layout() == crate::store::vectors::Layout::Single {
            move_to_hybrid(&*self.catalog).await;
        }
        let jobs = &self.settings.jobs;
        let handler = Arc::new(index_handler(
            &self.settings,
            self.catalog.clone(),
            self.encoder.clone(),
            vectors,
            self.fetcher,
            self.blobs,
        ));
        let reindex = Arc::new(Reindex {
            index: handler.clone(),
            time_limit: Duration::from_secs(jobs.reindex_time_limit_secs),
        });
        let mut runner = JobRunner::new(self.catalog, runner_config(&self.settings));
        runner.register(JobKind::IndexProduct.as_str(), handler.clone());
        runner.register(JobKind::BatchIndexProducts.as_str(), handler);
        runner.register(JobKind::ReindexAll.as_str(), reindex);
        Arc::new(runner)
            .run(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    }
}

/// An index built before hybrid search (one vector per product) moves over
/// through a full reindex, which builds the new index beside the live one
/// and switches atomically: searches keep working throughout (as vector
/// searches until the switch). Queued once, unless a reindex is queued or
/// running already.
async fn move_to_hybrid(catalog: &dyn Catalog) {
    use crate::jobs::kinds::JobSpec;
    use crate::store::JobStatus;
    for status in [JobStatus::Running, JobStatus::Queued] {
        match catalog.list_jobs(None, Some(status), 100).await {
            Ok(jobs) if jobs.iter().any(|j| j.kind == JobKind::ReindexAll.as_str()) => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot list jobs; run POST /v1/admin/reindex for hybrid search");
                return;
            }
        }
    }
    let job = store::NewJob::of(&JobSpec::ReindexAll { tenant: None }, None);
    match catalog.enqueue_job(&job).await {
        Ok(()) => tracing::warn!(
            job_id = %job.id,
            "the vector index holds one vector per product (built before hybrid search): \
             a full reindex is queued to add the text and keyword vectors; searches run \
             as vector searches until it finishes"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "cannot queue the reindex; run POST /v1/admin/reindex for hybrid search")
        }
    }
}

/// Serves `state` on `listener` until `shutdown` completes, then waits up
/// to `grace` for in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    limits: crate::conn::ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    tls: Option<crate::tls::Tls>,
) -> Result<(), ServerError> {
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %local, scheme, "listening on {local}");
    crate::conn::serve(listener, api::router(state), limits, shutdown, grace, tls).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
