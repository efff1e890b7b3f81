//! `vitrine bench`: benchmarks that print figures (never timed unit tests).
//!
//! `bench encode` measures the CLIP encoder the way `scripts/bench_reference.py`
//! measures PyTorch and ONNX Runtime on the same checkpoint, so
//! `scripts/bench_encode.sh` can put them side by side in one run: image
//! throughput at batch 1, 8 and 32 (224×224 inputs, so preprocessing is
//! near free but still counted), single short-query text latency (tokenise +
//! forward) p50/p99, and the process's peak RSS.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::encoder::{CpuKernels, DecodedImage, Encoder, EncoderError, EncoderOptions, Precision};
use crate::jobs::kinds::{JobKind, JobSpec};
use crate::store::vectors::contract::cosine;

pub const QUERY: &str = "red leather handbag";

mod relevance;
mod replica;
pub use relevance::{HybridBenchOptions, RelevanceOptions, hybrid, relevance};
pub use replica::{ReplicaBenchOptions, replica};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    percentile(&xs, 50.0)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn test_image(seed: u32) -> DecodedImage {
    let img = image::RgbImage::from_fn(224, 224, |x, y| {
        let v = x
            .wrapping_mul(31)
            .wrapping_add(y.wrapping_mul(17))
            .wrapping_add(seed * 101);
        image::Rgb([(v % 251) as u8, (v / 3 % 241) as u8, (v / 7 % 239) as u8])
    });
    DecodedImage::from_rgb(img)
}

/// Runs the encoder benchmark and returns its figures as JSON.
pub fn encode(
    model: &Path,
    iters: usize,
    threads: Option<usize>,
    cpu_kernels: CpuKernels,
    precision: Precision,
) -> Result<Value, EncoderError> {
    let options = EncoderOptions {
        threads,
        cpu_kernels,
        precision,
        ..EncoderOptions::default()
    };
    let load = Instant::now();
    let encoder = Encoder::from_dir(model, &options)?;
    let load_secs = load.elapsed().as_secs_f64();
    let mut throughput = serde_json::Map::new();
    for batch in [1usize, 8, 32] {
        let images: Vec<DecodedImage> = (0..batch as u32).map(test_image).collect();
        let runs = (iters / batch).max(3);
        for _ in 0..2 {
            encoder.embed_images(&images)?; // warm-up
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            encoder.embed_images(&images)?;
            times.push(t.elapsed().as_secs_f64());
        }
        throughput.insert(batch.to_string(), json!(batch as f64 / median(times)));
    }
    for _ in 0..5 {
        encoder.embed_texts(&[QUERY])?;
    }
    let mut latencies = Vec::with_capacity(iters * 4);
    for _ in 0..iters * 4 {
        let t = Instant::now();
        encoder.embed_texts(&[QUERY])?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "backend": "vitrine",
        "kernels": encoder.backend(),
        "model": encoder.model_id(),
        "dims": encoder.dims(),
        "device": format!("{:?}", encoder.device()),
        "threads": threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        "load_secs": load_secs,
        "image_throughput_img_per_s": throughput,
        "text_latency_ms": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "n": latencies.len(),
        },
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// Figures of `vitrine bench index`.
pub struct IndexBenchOptions<'a> {
    /// A checkpoint directory; `None` writes a random-weight ViT-B/32
    /// (the real architecture and size) to a temp dir.
    pub model: Option<&'a Path>,
    pub products: usize,
    pub threads: Option<usize>,
    /// Side of the served images (JPEG), like a shop's product photo.
    pub image_side: u32,
    /// A stream of single-product writes, each with its own job, written
    /// while the runner works; otherwise batch jobs of 64 written first.
    pub single: bool,
}

/// A product photo stand-in: a smooth colour field with some texture,
/// JPEG-encoded, different for every seed.
fn photo_jpeg(seed: u32, side: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(side, side, |x, y| {
        let (fx, fy) = (x as f32 / side as f32, y as f32 / side as f32);
        let s = seed as f32 * 0.37;
        let r = 127.0 + 120.0 * (fx * 6.3 + s).sin();
        let g = 127.0 + 120.0 * (fy * 4.1 + s * 1.7).cos();
        let b = 127.0 + 120.0 * ((fx + fy) * 3.3 + s * 0.3).sin();
        let grain = ((x.wrapping_mul(7919) ^ y.wrapping_mul(104_729) ^ seed) % 23) as f32;
        image::Rgb([(r + grain) as u8, (g + grain) as u8, (b - grain).max(0.0) as u8])
    });
    let mut out = Vec::new();
    let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
    let _ = enc.encode_image(&img);
    out
}

/// End-to-end indexing throughput against the encoder's raw throughput,
/// measured in the same run on the same images.
///
/// Raw: the images already decoded in memory, embedded through the
/// encoder thread in `encoder.max_batch` batches (what the encoder alone
/// can do). End to end: products written to a SQLite catalog with their
/// indexing jobs, run by the job runner: each image fetched over HTTP from
/// a local server (SSRF checks included), its original stored, decoded,
/// embedded, upserted into Qdrant Edge and its status recorded. The raw
/// figure is measured before and after the end-to-end run and averaged.
pub async fn index(o: &IndexBenchOptions<'_>) -> anyhow::Result<Value> {
    use std::sync::Arc;

    use crate::encoder::service::{BatchConfig, EncoderService, EncoderState, SharedEncoder};
    use crate::jobs::JobRunner;
    use crate::media::{BlobStore, FetchConfig, ImageFetcher};
    use crate::store::{JobStatus, NewJob};

    let work = tempfile::tempdir()?;
    let model_dir = model_or_random_vit_b32(o.model, work.path())?;
    let options = EncoderOptions {
        threads: o.threads,
        ..EncoderOptions::default()
    };
    let encoder = Encoder::from_dir(&model_dir, &options)?;
    let model = encoder.model_id().to_owned();
    let batch = BatchConfig::default();
    let max_batch = batch.max_batch;
    let service = EncoderService::start(encoder, batch)?;

    // The images, served from memory by a local HTTP server.
    let photos: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..o.products as u32)
            .map(|i| photo_jpeg(i, o.image_side))
            .collect(),
    );
    let served = photos.clone();
    let app = axum::Router::new().route(
        "/img/{n}",
        axum::routing::get(move |axum::extract::Path(n): axum::extract::Path<usize>| {
            let served = served.clone();
            async move {
                match served.get(n) {
                    Some(b) => {
                        ([(axum::http::header::CONTENT_TYPE, "image/jpeg")], b.clone()).into_response()
                    }
                    None => axum::http::StatusCode::NOT_FOUND.into_response(),
                }
            }
        }),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });

    // Raw encoder throughput on the decoded images.
    let decoded: Vec<DecodedImage> = photos
        .iter()
        .map(|b| DecodedImage::decode(b, &crate::encoder::DecodeOptions::default()))
        .collect::<Result<_, _>>()?;
    let raw = |service: EncoderService, decoded: Vec<DecodedImage>| async move {
        // Warm-up batch (allocations, page faults).
        service
            .embed_images(decoded[..max_batch.min(decoded.len())].to_vec())
            .await?;
        let start = Instant::now();
        for chunk in decoded.chunks(max_batch) {
            service.embed_images(chunk.to_vec()).await?;
        }
        Ok::<f64, anyhow::Error>(decoded.len() as f64 / start.elapsed().as_secs_f64())
    };
    let raw_before = raw(service.clone(), decoded.clone()).await?;

    // End to end through the job runner, built as `vitrine serve` builds
    // it from the defaults; the images come from a loopback server.
    let mut settings = crate::config::Settings::defaults().clone();
    settings.data_dir = work.path().to_path_buf();
    settings.media.allow_private_networks = true;
    settings.encoder.max_batch = max_batch;
    settings.jobs.index_time_limit_secs = 3600;
    settings.jobs.poll_interval_ms = 20;
    let catalog = crate::server::open_catalog(&settings).await?;
    let vectors = crate::server::open_vectors(&settings, service.dims())
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let shared = SharedEncoder::default();
    shared.set(EncoderState::Ready(service.clone()));
    let fetcher = ImageFetcher::new(FetchConfig::from_settings(&settings.media))?;
    let handler = Arc::new(crate::server::index_handler(
        &settings,
        catalog.clone(),
        shared,
        vectors.clone(),
        Arc::new(fetcher),
        BlobStore::open(None, work.path())?,
    ));
    let product = |i: usize| -> anyhow::Result<(String, crate::model::ProductFields)> {
        let doc = json!({"title": format!("Product {i}"), "image_url": format!("http://{addr}/img/{i}")});
        let input = crate::model::parse_product(&serde_json::from_value(doc)?)
            .map_err(|e| anyhow::anyhow!("bad product: {e:?}"))?;
        Ok((format!("p{i}"), input.fields))
    };
    let start = Instant::now();
    // Batch mode writes every job before the runner starts; single mode
    // writes one product (and job) at a time while it runs.
    let (job_tx, mut job_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let writer = if o.single {
        let (catalog, job_tx, products) = (catalog.clone(), job_tx.clone(), o.products);
        let items: Vec<_> = (0..products).map(product).collect::<Result<_, _>>()?;
        Some(tokio::spawn(async move {
            for item in items {
                let job = NewJob::of(&JobSpec::index(vec![item.0.clone()]), Some("default"));
                catalog.upsert_products("default", &[item], &job).await?;
                let _ = job_tx.send(job.id);
            }
            Ok::<(), anyhow::Error>(())
        }))
    } else {
        for chunk in (0..o.products).collect::<Vec<_>>().chunks(64) {
            let items: Vec<_> = chunk.iter().map(|i| product(*i)).collect::<Result<_, _>>()?;
            let ids = items.iter().map(|(id, _)| id.clone()).collect();
            let job = NewJob::of(
                &JobSpec::BatchIndexProducts { external_ids: ids },
                Some("default"),
            );
            catalog.upsert_products("default", &items, &job).await?;
            let _ = job_tx.send(job.id);
        }
        None
    };
    drop(job_tx);
    let mut runner = JobRunner::new(catalog.clone(), crate::server::runner_config(&settings));
    runner.register(JobKind::BatchIndexProducts.as_str(), handler.clone());
    runner.register(JobKind::IndexProduct.as_str(), handler);
    let runner = Arc::new(runner);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(runner.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    // Every job written (the writer may still be at it) must succeed.
    let mut open: Vec<String> = Vec::new();
    let mut jobs = 0usize;
    let mut writing = true;
    while writing || !open.is_empty() {
        while let Ok(id) = job_rx.try_recv() {
            open.push(id);
            jobs += 1;
        }
        if writing && job_rx.is_closed() && job_rx.is_empty() {
            writing = false;
        }
        // Jobs finish roughly in order: look at the oldest open ones only,
        // so that watching costs the run next to nothing.
        while let Some(id) = open.first() {
            match catalog.get_job(id).await?.map(|j| j.status) {
                Some(JobStatus::Succeeded) => {
                    open.remove(0);
                }
                Some(JobStatus::Failed | JobStatus::Cancelled) | None => {
                    anyhow::bail!("indexing job {id} did not succeed")
                }
                _ => break,
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if let Some(w) = writer {
        w.await??;
    }
    let e2e_secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    let _ = running.await;
    let stored = vectors.count(None).await?;
    anyhow::ensure!(
        stored as usize == o.products,
        "{stored} vectors for {} products",
        o.products
    );

    let raw_after = raw(service, decoded).await?;
    let raw_mean = (raw_before + raw_after) / 2.0;
    let e2e = o.products as f64 / e2e_secs;
    Ok(json!({
        "model": model,
        "products": o.products,
        "jobs": jobs,
        "mode": if o.single { "single-product writes, coalesced by the runner" } else { "batch jobs of 64" },
        "image_side": o.image_side,
        "encoder_max_batch": max_batch,
        "raw_encoder_img_per_s": {"before": raw_before, "after": raw_after, "mean": raw_mean},
        "end_to_end_products_per_s": e2e,
        "end_to_end_secs": e2e_secs,
        "ratio_end_to_end_over_raw": e2e / raw_mean,
        "target_ratio": 0.9,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// `model`, or else a random-weight ViT-B/32 of the real size in
/// `dir/model` (written once; an existing one is reused).
fn model_or_random_vit_b32(model: Option<&Path>, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    if let Some(m) = model {
        return Ok(m.to_path_buf());
    }
    let dir = dir.join("model");
    if !dir.join("model.safetensors").is_file() {
        std::fs::create_dir_all(&dir)?;
        crate::encoder::testing::write_tiny_checkpoint(
            &dir,
            &crate::encoder::testing::TinyClipSpec::vit_b32(),
        )?;
    }
    Ok(dir)
}

/// Fills `data_dir` (the embedded default's layout) with `products`
/// products of tenant `default`, already indexed with random unit vectors
/// of the model's dimension, and writes a random-weight ViT-B/32 to
/// `data_dir/model` when no model is given. For the search load benchmark:
/// latency does not depend on what the vectors mean.
pub async fn populate(data_dir: &Path, model: Option<&Path>, products: usize) -> anyhow::Result<Value> {
    use rand::{Rng, SeedableRng};

    use crate::model::IndexStatus;
    use crate::store::vectors::{EdgeIndex, PointPayload, VectorIndex, VectorPoint};
    use crate::store::{IndexUpdate, NewJob};

    std::fs::create_dir_all(data_dir)?;
    let model_dir = model_or_random_vit_b32(model, data_dir)?;
    let dims = crate::encoder::HfClipConfig::from_file(&model_dir.join("config.json"))?.projection_dim;
    let catalog = crate::store::open_catalog(None, data_dir, 4).await?;
    let vectors = EdgeIndex::open_async(data_dir.to_path_buf(), dims).await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let categories = [
        "boots", "dresses", "bags", "hats", "shirts", "toys", "fruit", "tools",
    ];
    let start = Instant::now();
    for base in (0..products).step_by(1000) {
        let n = 1000.min(products - base);
        let mut items = Vec::with_capacity(n);
        let mut points = Vec::with_capacity(n);
        for i in base..base + n {
            let category = categories[rng.random_range(0..categories.len())];
            let price = rng.random_range(1..500);
            let in_stock = rng.random_bool(0.8);
            let tag = format!("t{}", rng.random_range(0..20));
            let doc = json!({"title": format!("Product {i}"), "description": format!("A {category} of some kind"),
                             "category": category, "price": price, "currency": "EUR",
                             "tags": [tag.clone()], "in_stock": in_stock});
            let input = crate::model::parse_product(&serde_json::from_value(doc)?)
                .map_err(|e| anyhow::anyhow!("bad product: {e:?}"))?;
            let id = format!("p{i}");
            let mut v: Vec<f32> = (0..dims).map(|_| rng.random::<f32>() - 0.5).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            let text = crate::indexing::compose_text(
                &input.fields.title,
                input.fields.description.as_deref(),
                Some(category),
                &input.fields.tags,
            );
            let text_vector = v.iter().rev().copied().collect();
            points.push(VectorPoint {
                tenant: "default".into(),
                product_id: id.clone(),
                vector: v,
                text_vector: Some(text_vector),
                keywords: crate::store::vectors::keywords::document("default", &text),
                payload: PointPayload {
                    category: Some(category.into()),
                    price: Some(f64::from(price)),
                    currency: Some("EUR".into()),
                    tags: vec![tag],
                    in_stock,
                },
            });
            items.push((id, input.fields));
        }
        // The products are stored with their indexing job, which is
        // cancelled at once: the vectors are written here instead.
        let job = NewJob::of(
            &JobSpec::BatchIndexProducts {
                external_ids: Vec::new(),
            },
            Some("default"),
        );
        catalog.upsert_products("default", &items, &job).await?;
        catalog.cancel_job(&job.id, crate::model::now()).await?;
        let stored = catalog
            .get_products(
                "default",
                &items.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            )
            .await?;
        let updates: Vec<IndexUpdate> = stored
            .iter()
            .map(|p| IndexUpdate {
                external_id: p.external_id.clone(),
                version: p.version,
                status: IndexStatus::Indexed,
                error: None,
            })
            .collect();
        catalog.set_index_status("default", &updates).await?;
        vectors.upsert(points).await?;
    }
    let load_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    vectors.optimize().await?;
    Ok(json!({
        "data_dir": data_dir.display().to_string(),
        "model": model_dir.display().to_string(),
        "products": products,
        "dims": dims,
        "load_secs": load_secs,
        "optimize_secs": start.elapsed().as_secs_f64(),
    }))
}

/// The floor of a text search, measured in-process on a populated data
/// dir: the encoder's time for the query (through the encoder thread, as
/// the server runs it) plus the raw vector search alone. Run it while no
/// server holds the data dir. With `queries_file` the texts are the first
/// `queries` lines of the load test's own list (the text encoder's time
/// grows with the token count, so the floor must embed the same texts).
pub async fn search_floor(
    data_dir: &Path,
    model: &Path,
    queries: usize,
    queries_file: Option<&Path>,
    threads: Option<usize>,
) -> anyhow::Result<Value> {
    use crate::encoder::service::{BatchConfig, EncoderService};
    use crate::store::vectors::{EdgeIndex, VectorIndex, VectorQuery};

    let encoder = Encoder::from_dir(
        model,
        &EncoderOptions {
            threads,
            ..EncoderOptions::default()
        },
    )?;
    let service = EncoderService::start(encoder, BatchConfig::default())?;
    let vectors = EdgeIndex::open_async(data_dir.to_path_buf(), service.dims()).await?;
    // Ten more than measured: the first ten warm up.
    let needed = queries + 10;
    let texts: Vec<String> = match queries_file {
        Some(file) => {
            let list = std::fs::read_to_string(file)?;
            let texts: Vec<String> = list.lines().take(needed).map(str::to_owned).collect();
            anyhow::ensure!(
                texts.len() == needed,
                "{} holds {} queries; {needed} needed (10 warm-up)",
                file.display(),
                texts.len(),
            );
            texts
        }
        None => (0..needed)
            .map(|i| format!("query {i} red leather boots"))
            .collect(),
    };
    let (mut embed_ms, mut search_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    for (i, text) in texts.into_iter().enumerate() {
        let t0 = Instant::now();
        let v = service.embed_text(text).await?;
        let t1 = Instant::now();
        let hits = vectors
            .search(&VectorQuery {
                tenant: "default".into(),
                vector: v,
                limit: 10,
                ..VectorQuery::default()
            })
            .await?;
        let t2 = Instant::now();
        anyhow::ensure!(hits.len() == 10, "the index returned {} hits", hits.len());
        if i >= 10 {
            embed_ms.push((t1 - t0).as_secs_f64() * 1000.0);
            search_ms.push((t2 - t1).as_secs_f64() * 1000.0);
            total_ms.push((t2 - t0).as_secs_f64() * 1000.0);
        }
    }
    let stats = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        json!({"p50": percentile(&xs, 50.0), "p99": percentile(&xs, 99.0)})
    };
    Ok(json!({
        "queries": queries,
        "embed_ms": stats(embed_ms),
        "vector_search_ms": stats(search_ms),
        "floor_ms": stats(total_ms),
    }))
}

/// Plugins: the same text search with and without the `price-boost` ranker
/// over 100 candidates (interleaved, in one run, in-process through the
/// real query pipeline, result-page cache off), plus the cost of one
/// plugin call (fresh instance + call) on its own. Two search variants:
/// distinct query texts (the encoder runs every time, as for a new query)
/// and one repeated text (its embedding cached: the cheapest search, where
/// a plugin's share is largest).
pub async fn plugins(
    plugin: &Path,
    model: Option<&Path>,
    products: usize,
    queries: usize,
    threads: Option<usize>,
) -> anyhow::Result<Value> {
    use std::sync::Arc;

    use crate::plugins::{PluginChoice, PluginRegistry, World};
    use crate::search::{PluginSelection, QuerySource, SearchRequest};
    use crate::store::vectors::VectorFilter;

    let dir = tempfile::tempdir()?;
    // The ranker sees 100 candidates.
    let stack = bench_stack(dir.path(), model, products, threads, |s| {
        s.plugins.candidates = 100
    })
    .await?;
    let (settings, catalog, vectors, shared_encoder) =
        (stack.settings, stack.catalog, stack.vectors, stack.encoder);
    let blobs = crate::media::BlobStore::open(None, dir.path())?;
    let host = crate::server::plugin_host(&settings, blobs)?;
    let wasm = std::fs::read(plugin)?;
    let digest = host
        .upload("default", World::Ranker, bytes::Bytes::from(wasm))
        .await?;
    catalog
        .create_plugin_version(&crate::store::NewPluginVersion {
            tenant: "default".into(),
            name: "price-boost".into(),
            world: "ranker".into(),
            digest,
            size_bytes: 0,
        })
        .await?;
    let active = catalog
        .activate_plugin("default", "price-boost", 1, &serde_json::Map::new(), None)
        .await?;
    let plugin_ref =
        crate::plugins::registry::plugin_ref(&active).ok_or_else(|| anyhow::anyhow!("plugin ref"))?;
    let registry = Arc::new(PluginRegistry::new(host.clone(), catalog.clone()));
    let fetcher = Arc::new(crate::media::ImageFetcher::new(
        crate::media::FetchConfig::from_settings(&settings.media),
    )?);
    let search = crate::server::app_state(
        &settings,
        catalog.clone(),
        shared_encoder,
        vectors,
        fetcher,
        registry,
    )
    .search;
    // Vector mode: the plugin's cost against the search it ranks, as
    // measured before hybrid search.
    let run = |text: String, ranker: PluginChoice| SearchRequest {
        tenant: "default".into(),
        source: QuerySource::Text(text),
        mode: crate::search::SearchMode::Vector,
        weights: crate::store::vectors::Weights::default(),
        fusion: crate::store::vectors::Fusion::default(),
        facets: None,
        filter: VectorFilter::default(),
        limit: 10,
        offset: 0,
        min_score: None,
        plugins: PluginSelection {
            filter: PluginChoice::Off,
            ranker,
        },
        user_id: None,
        session_id: None,
        generation: None,
    };
    let stats = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        json!({"p50": percentile(&xs, 50.0), "p99": percentile(&xs, 99.0), "mean": xs.iter().sum::<f64>() / xs.len().max(1) as f64})
    };
    let p50 = |xs: &[f64]| {
        let mut xs = xs.to_vec();
        xs.sort_by(f64::total_cmp);
        percentile(&xs, 50.0)
    };
    let mut variants = serde_json::Map::new();
    for variant in ["new_query_text", "cached_query_embedding"] {
        let (mut with, mut without, mut call_ms) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..queries + 10 {
            // Interleaved, alternating which goes first, so drift treats
            // both the same.
            let order = if i % 2 == 0 { [true, false] } else { [false, true] };
            for plugged in order {
                let text = match variant {
                    "new_query_text" => format!("query {i} {plugged} red leather boots"),
                    _ => "red leather boots".to_owned(),
                };
                let choice = if plugged {
                    PluginChoice::Active
                } else {
                    PluginChoice::Off
                };
                let t = Instant::now();
                let r = search.search(run(text.clone(), choice)).await?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                anyhow::ensure!(r.hits.len() == 10, "{} hits", r.hits.len());
                if plugged {
                    let report = r
                        .plugins
                        .first()
                        .ok_or_else(|| anyhow::anyhow!("no plugin report"))?;
                    anyhow::ensure!(report.error.is_none(), "plugin failed: {:?}", report.error);
                    if i >= 10 {
                        call_ms.push(report.elapsed_ms);
                    }
                }
                if i >= 10 {
                    if plugged { with.push(ms) } else { without.push(ms) }
                }
            }
        }
        let ratio = p50(&with) / p50(&without).max(1e-9);
        variants.insert(
            variant.to_owned(),
            json!({
                "without_plugin_ms": stats(without),
                "with_price_boost_ms": stats(with),
                "plugin_call_ms": stats(call_ms),
                "p50_ratio": ratio,
            }),
        );
    }
    // One call on its own: a fresh store and instance, 100 candidates.
    let candidates: Vec<crate::plugins::Candidate> = (0..100)
        .map(|i| crate::plugins::Candidate {
            id: format!("p{i}"),
            score: 1.0 - i as f32 / 200.0,
            title: format!("Product {i}"),
            category: Some("boots".into()),
            price: Some(10.0 + f64::from(i)),
            currency: Some("EUR".into()),
            tags: vec!["t1".into()],
            in_stock: i % 3 != 0,
        })
        .collect();
    let mut direct = Vec::new();
    for i in 0..queries.max(100) + 20 {
        let query = crate::plugins::Query {
            text: Some("red leather boots".into()),
            kind: crate::plugins::QueryKind::Text,
            params: Vec::new(),
        };
        let t = Instant::now();
        let scores = host.rank(&plugin_ref, query, candidates.clone()).await?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(scores.len() == 100);
        if i >= 20 {
            direct.push(ms);
        }
    }
    Ok(json!({
        "products": products,
        "queries_per_variant": queries,
        "candidates": 100,
        "pooling_allocator": host.pooling(),
        "search": Value::Object(variants),
        "plugin_instantiate_and_call_ms": stats(direct),
    }))
}

/// What a benchmark of whole searches runs on: `products` products written
/// by [`populate`] into `dir`, the encoder started on its model, and the
/// stores opened with the default settings as `vitrine serve` would (the
/// result-page cache off, so every query runs the pipeline), changed by
/// `tweak`.
struct BenchStack {
    populated: Value,
    settings: crate::config::Settings,
    catalog: std::sync::Arc<dyn crate::store::Catalog>,
    vectors: crate::store::vectors::SharedVectors,
    encoder: crate::encoder::service::SharedEncoder,
}

async fn bench_stack(
    dir: &Path,
    model: Option<&Path>,
    products: usize,
    threads: Option<usize>,
    tweak: impl FnOnce(&mut crate::config::Settings),
) -> anyhow::Result<BenchStack> {
    use crate::encoder::service::{BatchConfig, EncoderService, EncoderState, SharedEncoder};
    let populated = populate(dir, model, products).await?;
    let model_dir = std::path::PathBuf::from(populated["model"].as_str().unwrap_or_default());
    let encoder = Encoder::from_dir(
        &model_dir,
        &EncoderOptions {
            threads,
            ..EncoderOptions::default()
        },
    )?;
    let service = EncoderService::start(encoder, BatchConfig::default())?;
    let dims = service.dims();
    let shared = SharedEncoder::default();
    shared.set(EncoderState::Ready(service));
    let mut settings = crate::config::Settings::defaults().clone();
    settings.data_dir = dir.to_path_buf();
    settings.search.page_cache_mb = 0;
    tweak(&mut settings);
    let (catalog, vectors) = open_stores(&settings, dims).await?;
    Ok(BenchStack {
        populated,
        settings,
        catalog,
        vectors,
        encoder: shared,
    })
}

/// A synthetic product title: brand, colour, material, kind and size, drawn from `i`.
fn synthetic_title(i: usize) -> String {
    const BRANDS: [&str; 12] = [
        "Ecco", "Nordal", "Vanta", "Ashby", "Loma", "Kestrel", "Orrin", "Pell", "Quill", "Ruska", "Sable",
        "Tamsin",
    ];
    const COLOURS: [&str; 10] = [
        "red", "navy", "black", "white", "olive", "tan", "grey", "burgundy", "mustard", "teal",
    ];
    const MATERIALS: [&str; 8] = [
        "leather", "suede", "cotton", "linen", "wool", "canvas", "denim", "silk",
    ];
    const KINDS: [&str; 14] = [
        "ankle boots",
        "sneakers",
        "sandals",
        "handbag",
        "backpack",
        "t-shirt",
        "dress",
        "jacket",
        "scarf",
        "belt",
        "wallet",
        "hat",
        "loafers",
        "trousers",
    ];
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 7;
    let pick = |n: usize, shift: u32| ((h >> shift) as usize) % n;
    format!(
        "{} {} {} {} size {} model {}",
        BRANDS[pick(BRANDS.len(), 0)],
        COLOURS[pick(COLOURS.len(), 8)],
        MATERIALS[pick(MATERIALS.len(), 16)],
        KINDS[pick(KINDS.len(), 24)],
        36 + pick(12, 32),
        100_000 + i
    )
}

/// Indices of the `k` largest dot products of `q` with `catalog`, best first.
fn top_k(q: &[f32], catalog: &[Vec<f32>], k: usize) -> Vec<usize> {
    let mut scored: Vec<(f32, usize)> = catalog
        .iter()
        .enumerate()
        .map(|(i, v)| (v.iter().zip(q).map(|(a, b)| a * b).sum(), i))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

/// Minimum, 1st percentile, median and mean of `xs`.
fn spread(mut xs: Vec<f64>) -> Value {
    xs.sort_by(f64::total_cmp);
    let mean = xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    json!({"min": xs.first(), "p1": percentile(&xs, 1.0), "median": percentile(&xs, 50.0), "mean": mean, "n": xs.len()})
}

/// Quality of `encoder.precision = "bf16"` against f32 on one checkpoint: the cosine of
/// each embedding to its f32 twin, and the top-10 overlap of brute-force search results
/// over a synthetic catalog of `products` titles, for text queries and image queries.
pub fn precision(
    model: &Path,
    products: usize,
    queries: usize,
    threads: Option<usize>,
    cpu_kernels: CpuKernels,
) -> Result<Value, EncoderError> {
    let titles: Vec<String> = (0..products).map(synthetic_title).collect();
    // Queries: the first words of some titles (a shopper's phrasing), and photos.
    let query_texts: Vec<String> = (0..queries)
        .map(|i| {
            let t = synthetic_title(i * 7919 + 3);
            t.split(' ').take(3 + i % 3).collect::<Vec<_>>().join(" ")
        })
        .collect();
    let images: Vec<DecodedImage> = (0..32).map(|i| test_image(1000 + i)).collect();
    let embed = |precision: Precision| -> Result<[Vec<Vec<f32>>; 3], EncoderError> {
        let encoder = Encoder::from_dir(
            model,
            &EncoderOptions {
                threads,
                cpu_kernels,
                precision,
                ..EncoderOptions::default()
            },
        )?;
        let texts = |all: &[String]| -> Result<Vec<Vec<f32>>, EncoderError> {
            let mut out = Vec::with_capacity(all.len());
            for chunk in all.chunks(32) {
                let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
                out.extend(encoder.embed_texts(&refs)?);
            }
            Ok(out)
        };
        Ok([
            texts(&titles)?,
            texts(&query_texts)?,
            encoder.embed_images(&images)?,
        ])
    };
    let t = Instant::now();
    let [cat32, q32, img32] = embed(Precision::F32)?;
    let f32_secs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let [cat16, q16, img16] = embed(Precision::Bf16)?;
    let bf16_secs = t.elapsed().as_secs_f64();
    let cos = |a: &[Vec<f32>], b: &[Vec<f32>]| {
        spread(a.iter().zip(b).map(|(x, y)| f64::from(cosine(x, y))).collect())
    };
    let overlap = |q32: &[Vec<f32>], q16: &[Vec<f32>]| {
        spread(
            q32.iter()
                .zip(q16)
                .map(|(a, b)| {
                    let (x, y) = (top_k(a, &cat32, 10), top_k(b, &cat16, 10));
                    x.iter().filter(|i| y.contains(i)).count() as f64 / x.len().max(1) as f64
                })
                .collect(),
        )
    };
    Ok(json!({
        "model": model.display().to_string(),
        "products": products,
        "cosine_to_f32": {
            "catalog_texts": cos(&cat32, &cat16),
            "query_texts": cos(&q32, &q16),
            "images": cos(&img32, &img16),
        },
        "top10_overlap": {
            "text_queries": overlap(&q32, &q16),
            "image_queries": overlap(&img32, &img16),
        },
        "embed_secs": {"f32": f32_secs, "bf16": bf16_secs},
    }))
}

/// Paired comparison of encoder configurations in one process: every configuration in
/// `configs` is loaded side by side, then each round measures all of them back to back
/// (in a rotating order) on the same inputs: batch-32 image throughput and short-query
/// text latency. Ratios are taken within a round and reported as median and range, so
/// the machine's drift between rounds cancels out.
pub fn kernels(
    model: &Path,
    configs: &[(CpuKernels, Precision)],
    rounds: usize,
    threads: Option<usize>,
) -> Result<Value, EncoderError> {
    let mut encoders = Vec::with_capacity(configs.len());
    for &(cpu_kernels, precision) in configs {
        let options = EncoderOptions {
            threads,
            cpu_kernels,
            precision,
            ..EncoderOptions::default()
        };
        let encoder = Encoder::from_dir(model, &options)?;
        encoders.push((encoder.backend(), encoder));
    }
    let images: Vec<DecodedImage> = (0..32).map(test_image).collect();
    const TEXTS_PER_ROUND: usize = 25;
    for (_, e) in &encoders {
        e.embed_images(&images)?; // warm-up
        for _ in 0..5 {
            e.embed_texts(&[QUERY])?;
        }
    }
    let n = encoders.len();
    // [config][round]
    let mut b32 = vec![Vec::with_capacity(rounds); n];
    let mut text_p50 = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for i in (0..n).map(|i| (i + round) % n) {
            let e = &encoders[i].1;
            let t = Instant::now();
            e.embed_images(&images)?;
            b32[i].push(images.len() as f64 / t.elapsed().as_secs_f64());
            let mut ms = Vec::with_capacity(TEXTS_PER_ROUND);
            for _ in 0..TEXTS_PER_ROUND {
                let t = Instant::now();
                e.embed_texts(&[QUERY])?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            text_p50[i].push(median(ms));
        }
    }
    let index = |label: &str| encoders.iter().position(|(l, _)| l == label);
    let range = |mut xs: Vec<f64>| {
        xs.sort_by(f64::total_cmp);
        json!({"median": percentile(&xs, 50.0), "min": xs.first(), "max": xs.last()})
    };
    let mut ratios = Vec::new();
    let mut ratio = |what: &str, a: &str, b: &str, series: &[Vec<f64>], target: &str| {
        if let (Some(a_i), Some(b_i)) = (index(a), index(b)) {
            let per_round: Vec<f64> = series[a_i].iter().zip(&series[b_i]).map(|(x, y)| x / y).collect();
            ratios.push(json!({"what": what, "a": a, "b": b, "ratio": range(per_round), "target": target}));
        }
    };
    ratio(
        "batch-32 images/s",
        "vitrine-avx2",
        "vitrine-avx512",
        &b32,
        ">= 0.9",
    );
    ratio("batch-32 images/s", "vitrine-avx2", "candle", &b32, ">= 1.8");
    for isa in ["avx512", "avx2", "neon"] {
        let (f32_label, bf16_label) = (format!("vitrine-{isa}"), format!("vitrine-{isa}-bf16"));
        ratio("batch-32 images/s", &bf16_label, &f32_label, &b32, ">= 1.6");
        ratio("text p50 ms", &bf16_label, &f32_label, &text_p50, "<= 0.65");
    }
    let results: Vec<Value> = encoders
        .iter()
        .enumerate()
        .map(|(i, (label, _))| {
            json!({
                "kernels": label,
                "batch32_img_per_s": range(b32[i].clone()),
                "text_p50_ms": range(text_p50[i].clone()),
            })
        })
        .collect();
    Ok(json!({
        "model": model.display().to_string(),
        "rounds": rounds,
        "threads": threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        "results": results,
        "ratios": ratios,
        "peak_rss_mb": peak_rss_mb(),
    }))
}

/// The catalog and the vector index `settings` name, opened as the server
/// opens them.
async fn open_stores(
    settings: &crate::config::Settings,
    dims: usize,
) -> anyhow::Result<(
    std::sync::Arc<dyn crate::store::Catalog>,
    crate::store::vectors::SharedVectors,
)> {
    use crate::store::vectors::{SharedVectors, VectorsState};
    let catalog = crate::server::open_catalog(settings).await?;
    let vectors = SharedVectors::default();
    vectors.set(VectorsState::Ready(
        crate::server::open_vectors(settings, dims)
            .await
            .map_err(|e| anyhow::anyhow!(e))?,
    ));
    Ok((catalog, vectors))
}

/// Fairness: one tenant's search latency while another tenant hammers the
/// server, against the same tenant alone, in the same run (paired rounds).
/// The server runs in-process behind its real socket layer and gate, with
/// a random-weight ViT-B/32 (every search embeds its distinct text). The
/// noisy tenant offers `offered_rps` searches per second from
/// `noisy_clients` connections, limited by the tenant's own rate limit
/// (`noisy_per_second`, twice that as burst); a last pair of rounds lifts
/// that limit, to show what it saves.
pub struct FairnessOptions<'a> {
    pub model: Option<&'a Path>,
    pub products: usize,
    pub queries: usize,
    pub rounds: usize,
    pub offered_rps: u32,
    pub noisy_clients: usize,
    pub noisy_per_second: f64,
}

/// The fairness benchmark's admin key.
const FAIRNESS_ADMIN: &str = "bench-admin-key-0123456789abcdef";

pub async fn fairness(o: &FairnessOptions<'_>) -> anyhow::Result<Value> {
    use std::sync::Arc;

    use crate::encoder::service::{BatchConfig, EncoderService, EncoderState, SharedEncoder};
    use crate::store::vectors::VectorsState;

    const ADMIN: &str = FAIRNESS_ADMIN;
    let dir = tempfile::tempdir()?;
    let populated = populate(dir.path(), o.model, o.products).await?;
    let model_dir = std::path::PathBuf::from(populated["model"].as_str().unwrap_or_default());
    let service = EncoderService::start(
        Encoder::from_dir(&model_dir, &EncoderOptions::default())?,
        BatchConfig::default(),
    )?;
    let dims = service.dims();
    let encoder = SharedEncoder::default();
    encoder.set(EncoderState::Ready(service));
    let mut settings = crate::config::Settings::defaults().clone();
    settings.data_dir = dir.path().to_path_buf();
    settings.auth.admin_key = Some(secrecy::SecretString::from(ADMIN.to_owned()));
    settings.search.page_cache_mb = 0;
    let (catalog, vectors) = open_stores(&settings, dims).await?;
    let blobs = crate::media::BlobStore::open(None, dir.path())?;
    let plugins = Arc::new(crate::plugins::PluginRegistry::new(
        crate::server::plugin_host(&settings, blobs)?,
        catalog.clone(),
    ));
    let fetcher = Arc::new(crate::media::ImageFetcher::new(
        crate::media::FetchConfig::from_settings(&settings.media),
    )?);
    let state = crate::server::app_state(
        &settings,
        catalog.clone(),
        encoder,
        vectors.clone(),
        fetcher,
        plugins,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let limits = crate::conn::ConnLimits::from_settings(&settings);
    let server = tokio::spawn(crate::server::serve(
        listener,
        state,
        limits,
        std::future::pending(),
        Duration::from_secs(1),
        None,
    ));
    let figures = fairness_rounds(o, &base).await;
    // The server and its vector shard (flushed on drop) go before their
    // data directory.
    server.abort();
    let _ = server.await;
    vectors.set(VectorsState::Failed("the benchmark is over".into()));
    drop(dir);
    figures
}

async fn fairness_rounds(o: &FairnessOptions<'_>, base: &str) -> anyhow::Result<Value> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    const ADMIN: &str = FAIRNESS_ADMIN;
    let base = base.to_owned();

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;
    let call = |method: reqwest::Method, path: &str, key: &str, body: Value| {
        http.request(method, format!("{base}{path}"))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    call(
        reqwest::Method::POST,
        "/v1/tenants",
        ADMIN,
        json!({"id": "noisy"}),
    )
    .await?
    .error_for_status()?;
    let key_of = |tenant: &'static str| {
        let call = &call;
        async move {
            let created: Value = call(
                reqwest::Method::POST,
                &format!("/v1/tenants/{tenant}/keys"),
                ADMIN,
                json!({"scopes": ["search"]}),
            )
            .await?
            .error_for_status()?
            .json()
            .await?;
            anyhow::Ok(created["key"].as_str().unwrap_or_default().to_owned())
        }
    };
    let quiet_key = key_of("default").await?;
    let noisy_key = key_of("noisy").await?;
    let set_noisy_limit = |per_second: f64| {
        let call = &call;
        async move {
            call(
                reqwest::Method::PATCH,
                "/v1/tenants/noisy",
                ADMIN,
                json!({"rate_limits": {"search": {"per_second": per_second, "burst": (per_second * 2.0).clamp(1.0, 1e6) as u32}}}),
            )
            .await?
            .error_for_status()?;
            anyhow::Ok(())
        }
    };

    // The quiet tenant: sequential searches of distinct texts, paced.
    let counter = AtomicU64::new(0);
    let quiet_run = || {
        let (http, base, key, counter) = (&http, &base, &quiet_key, &counter);
        async move {
            let mut ms = Vec::with_capacity(o.queries);
            for _ in 0..o.queries + 5 {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                let res = http
                    .post(format!("{base}/v1/tenants/default/search"))
                    .bearer_auth(key)
                    .json(&json!({"text": format!("quiet query {n} red leather boots"), "limit": 10}))
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 200, "quiet search: {}", res.status());
                res.bytes().await?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ms.drain(..5);
            ms.sort_by(f64::total_cmp);
            anyhow::Ok((percentile(&ms, 50.0), percentile(&ms, 99.0)))
        }
    };
    // The noisy tenant, until `stop`: `offered_rps` in all, spread over its
    // clients, each firing on its own schedule without waiting for answers.
    let noisy = |stop: Arc<AtomicBool>, ok: Arc<AtomicU64>, limited: Arc<AtomicU64>| {
        let per_client = (f64::from(o.offered_rps) / o.noisy_clients as f64).max(1.0);
        (0..o.noisy_clients)
            .map(|c| {
                let (http, base, key) = (http.clone(), base.clone(), noisy_key.clone());
                let (stop, ok, limited) = (stop.clone(), ok.clone(), limited.clone());
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_client));
                    let mut n = 0u64;
                    let mut inflight = tokio::task::JoinSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        n += 1;
                        let req = http
                            .post(format!("{base}/v1/tenants/noisy/search"))
                            .bearer_auth(&key)
                            .json(&json!({"text": format!("noisy {c} {n} cheap shoes"), "limit": 10}));
                        let (ok, limited) = (ok.clone(), limited.clone());
                        inflight.spawn(async move {
                            if let Ok(res) = req.send().await {
                                match res.status().as_u16() {
                                    200 => ok.fetch_add(1, Ordering::Relaxed),
                                    429 => limited.fetch_add(1, Ordering::Relaxed),
                                    _ => 0,
                                };
                                let _ = res.bytes().await;
                            }
                        });
                        while inflight.try_join_next().is_some() {}
                    }
                    inflight.shutdown().await;
                })
            })
            .collect::<Vec<_>>()
    };
    let loaded_run = || async {
        let (stop, ok, limited) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let tasks = noisy(stop.clone(), ok.clone(), limited.clone());
        tokio::time::sleep(Duration::from_millis(500)).await;
        let t = Instant::now();
        let quiet = quiet_run().await;
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            let _ = task.await;
        }
        let served = ok.load(Ordering::Relaxed) as f64 / secs;
        let refused = limited.load(Ordering::Relaxed) as f64 / secs;
        quiet.map(|q| (q, served, refused))
    };

    quiet_run().await?; // warm-up
    set_noisy_limit(o.noisy_per_second).await?;
    let (mut ratios, mut rounds) = (Vec::new(), Vec::new());
    for _ in 0..o.rounds {
        let alone = quiet_run().await?;
        let ((p50, p99), served, refused) = loaded_run().await?;
        ratios.push(p99 / alone.1);
        rounds.push(json!({"alone_ms": {"p50": alone.0, "p99": alone.1},
                           "noisy_ms": {"p50": p50, "p99": p99},
                           "p99_ratio": p99 / alone.1,
                           "noisy_served_per_sec": served, "noisy_refused_per_sec": refused}));
    }
    // The same load with the noisy tenant's limit lifted.
    set_noisy_limit(1_000_000.0).await?;
    let alone = quiet_run().await?;
    let ((_, p99), served, _) = loaded_run().await?;
    Ok(json!({
        "products": o.products,
        "queries_per_round": o.queries,
        "noisy": {"offered_per_sec": o.offered_rps, "clients": o.noisy_clients, "limit_per_sec": o.noisy_per_second},
        "p99_ratio_limited": {
            "median": median(ratios.clone()),
            "min": ratios.iter().copied().fold(f64::INFINITY, f64::min),
            "max": ratios.iter().copied().fold(0.0, f64::max),
        },
        "rounds": rounds,
        "unlimited": {"alone_p99_ms": alone.1, "noisy_p99_ms": p99, "p99_ratio": p99 / alone.1,
                      "noisy_served_per_sec": served},
    }))
}
