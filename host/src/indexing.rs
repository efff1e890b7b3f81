//! Indexing: turns catalog writes into vectors. The job kinds
//! `index_product` and `batch_index_products` both carry the external ids to
//! (re)index; the handler fetches images (SSRF-safe), keeps the originals,
//! embeds images in batches (text for products without an image), upserts
//! the vectors with their filter payload, and records each product's
//! outcome. A product whose image is permanently broken ends `failed` with
//! the reason; transient failures make the job retry, redoing only what is
//! still pending.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::encoder::DecodedImage;
use crate::encoder::service::SharedEncoder;
use crate::jobs::kinds::{JobKind, JobSpec};
use crate::jobs::{JobContext, JobError, JobHandler};
use crate::media::decode::DecodeError;
use crate::media::{BlobError, BlobStore, ImageFetcher, MediaError};
use crate::model::{IndexStatus, Product};
use crate::store::vectors::{Generation, PointPayload, VectorError, VectorIndex, VectorPoint, keywords};
use crate::store::{Catalog, IndexUpdate, Job};

/// Products handled per step: one catalog read, one encoder batch per
/// kind, one vector upsert, one status write.
const CHUNK: usize = 64;
/// Failed products named (with their reason) in a job's result.
const MAX_REPORTED_FAILURES: usize = 100;
/// Concurrent image downloads per job: enough to hide network latency
/// behind the encoder, few enough not to hammer one shop's image server.
const FETCH_CONCURRENCY: usize = 8;

/// Products being indexed in this process, so that two jobs never embed
/// the same product at once: without it, a job holding an older version
/// could write its vector after a newer job wrote the current one (the
/// status write is fenced by version, the vector write is not). A job
/// takes all the products of a chunk at once or waits, so no job holds
/// some while waiting for others.
#[derive(Default)]
pub struct ProductLocks {
    held: parking_lot::Mutex<HashSet<(String, String)>>,
    released: tokio::sync::Notify,
}

/// Products of one chunk, released when dropped.
struct HeldProducts<'a> {
    locks: &'a ProductLocks,
    keys: Vec<(String, String)>,
}

impl ProductLocks {
    async fn take(&self, tenant: &str, ids: &[String]) -> HeldProducts<'_> {
        let keys: Vec<(String, String)> = ids.iter().map(|id| (tenant.to_owned(), id.clone())).collect();
        loop {
            // Registered before the check, so a release in between wakes it.
            let released = self.released.notified();
            {
                let mut held = self.held.lock();
                if keys.iter().all(|k| !held.contains(k)) {
                    held.extend(keys.iter().cloned());
                    return HeldProducts { locks: self, keys };
                }
            }
            released.await;
        }
    }
}

impl Drop for HeldProducts<'_> {
    fn drop(&mut self) {
        let mut held = self.locks.held.lock();
        for k in &self.keys {
            held.remove(k);
        }
        drop(held);
        self.locks.released.notify_waiters();
    }
}

pub struct IndexProducts {
    pub catalog: Arc<dyn Catalog>,
    pub encoder: SharedEncoder,
    pub vectors: Arc<dyn VectorIndex>,
    pub fetcher: Arc<ImageFetcher>,
    pub blobs: BlobStore,
    pub time_limit: Duration,
    /// Pending single-product jobs of one tenant run as one batch, up to
    /// this many (`encoder.max_batch`): one fetch+encode+upsert round.
    pub max_coalesced: usize,
    pub locks: ProductLocks,
}

/// What one indexing pass over a list of products did.
#[derive(Default)]
struct Pass {
    /// Counted by product: indexed now or by an earlier attempt.
    indexed: HashSet<String>,
    /// Failed for good, with the reason.
    failed: Vec<(String, Option<String>)>,
    /// Transient failures, to retry: product id and reason.
    transient: Vec<(String, String)>,
}

impl Pass {
    /// The job result (or retryable error) for the products `ids`.
    fn result_for(&self, ids: &[String]) -> Result<Value, JobError> {
        let wanted: HashSet<&str> = ids.iter().map(String::as_str).collect();
        let transient: Vec<String> = self
            .transient
            .iter()
            .filter(|(id, _)| wanted.contains(id.as_str()))
            .map(|(id, e)| format!("{id}: {e}"))
            .collect();
        if !transient.is_empty() {
            let shown: Vec<&str> = transient.iter().take(3).map(String::as_str).collect();
            return Err(JobError::Retryable(format!(
                "{} products hit transient errors (e.g. {})",
                transient.len(),
                shown.join("; ")
            )));
        }
        let failures: Vec<Value> = self
            .failed
            .iter()
            .filter(|(id, _)| wanted.contains(id.as_str()))
            .map(|(id, e)| json!({"external_id": id, "error": e}))
            .collect();
        let indexed = wanted.iter().filter(|id| self.indexed.contains(**id)).count();
        Ok(json!({
            "indexed": indexed,
            "failed": failures.len(),
            "failures": failures.into_iter().take(MAX_REPORTED_FAILURES).collect::<Vec<_>>(),
        }))
    }
}

/// What happened to one product in one attempt.
enum Outcome {
    Point(Box<VectorPoint>),
    Fatal(String),
    Transient(String),
}

/// The text a product is known by: its title, description, category and
/// tags. It makes the text vector (and the image vector of a product
/// without an image) and the keyword vector.
pub fn product_text(p: &Product) -> String {
    let f = &p.fields;
    compose_text(&f.title, f.description.as_deref(), f.category.as_deref(), &f.tags)
}

/// [`product_text`] from the fields themselves.
pub fn compose_text(
    title: &str,
    description: Option<&str>,
    category: Option<&str>,
    tags: &[String],
) -> String {
    let mut text = title.to_owned();
    for part in [description, category].into_iter().flatten() {
        if !part.trim().is_empty() {
            text.push_str(". ");
            text.push_str(part);
        }
    }
    if !tags.is_empty() {
        text.push_str(". ");
        text.push_str(&tags.join(", "));
    }
    text
}

/// A product's point: its vectors, the keyword vector of `text` (its
/// [`product_text`]) and the filter payload of its fields.
pub fn point(p: &Product, vector: Vec<f32>, text_vector: Option<Vec<f32>>, text: &str) -> VectorPoint {
    VectorPoint {
        tenant: p.tenant.clone(),
        product_id: p.external_id.clone(),
        vector,
        text_vector,
        keywords: keywords::document(&p.tenant, text),
        payload: payload(p),
    }
}

pub fn payload(p: &Product) -> PointPayload {
    PointPayload {
        category: p.fields.category.clone(),
        price: p.fields.price.and_then(|d| d.to_string().parse::<f64>().ok()),
        currency: p.fields.currency.clone(),
        tags: p.fields.tags.clone(),
        in_stock: p.fields.in_stock,
    }
}

/// Where a product's image comes from.
enum ImageSource {
    /// Uploaded: the blob key of the original.
    Stored(String),
    Url(String),
}

/// Reads an uploaded image, or downloads one and keeps the original;
/// decodes it. The error says whether another attempt may succeed.
async fn fetch_and_decode(
    fetcher: Arc<ImageFetcher>,
    blobs: BlobStore,
    source: ImageSource,
) -> Result<DecodedImage, (bool, String)> {
    let max_pixels = fetcher.config().max_pixels;
    let bytes = match source {
        ImageSource::Stored(key) => blobs.get(&key).await.map_err(|e| match e {
            // The upload is gone: nothing another attempt could change.
            BlobError::NotFound(_) => (false, format!("the uploaded image {key} is missing")),
            e => (true, e.to_string()),
        })?,
        ImageSource::Url(url) => {
            let image = fetcher
                .fetch(&url)
                .await
                .map_err(|e| (e.is_retryable(), e.to_string()))?;
            if let Err(e) = blobs.put_image(&image).await {
                // Keeping the original is best effort; the vector is what matters.
                tracing::warn!(error = %e, url, "cannot store the original image");
            }
            image.bytes
        }
    };
    crate::media::decode::budget()
        .decode(bytes.to_vec(), max_pixels)
        .await
        .map_err(|e| match e {
            DecodeError::Busy | DecodeError::Crashed => (true, e.to_string()),
            DecodeError::Image(e) => (false, MediaError::Corrupt(e.to_string()).to_string()),
        })
}

impl IndexProducts {
    async fn image_vectors(&self, products: &[&Product]) -> Vec<Result<Vec<f32>, (bool, String)>> {
        // Fetch concurrently, keeping input order. The futures own their
        // inputs so the stream is `Send + 'static`.
        let downloads: Vec<_> = products
            .iter()
            .map(|p| {
                let source = match &p.image_key {
                    Some(key) => ImageSource::Stored(key.clone()),
                    None => ImageSource::Url(p.fields.image_url.clone().unwrap_or_default()),
                };
                fetch_and_decode(self.fetcher.clone(), self.blobs.clone(), source)
            })
            .collect();
        let fetched: Vec<Result<DecodedImage, (bool, String)>> = futures::stream::iter(downloads)
            .buffered(FETCH_CONCURRENCY)
            .collect()
            .await;
        let mut out: Vec<Result<Vec<f32>, (bool, String)>> = Vec::with_capacity(products.len());
        let mut images = Vec::new();
        let mut slots = Vec::new();
        for (i, r) in fetched.into_iter().enumerate() {
            match r {
                Ok(img) => {
                    images.push(img);
                    slots.push(i);
                    out.push(Err((true, String::new()))); // filled below
                }
                Err(e) => out.push(Err(e)),
            }
        }
        if !images.is_empty() {
            let Ok(encoder) = self.encoder.service() else {
                for i in &slots {
                    out[*i] = Err((true, "the encoder is not ready".into()));
                }
                return out;
            };
            match encoder.embed_images(images).await {
                Ok(vectors) => {
                    for (i, v) in slots.into_iter().zip(vectors) {
                        out[i] = Ok(v);
                    }
                }
                Err(e) => {
                    for i in slots {
                        out[i] = Err((true, format!("encoder: {e}")));
                    }
                }
            }
        }
        out
    }

    /// Embeds the texts of products without an image in one batch.
    async fn text_vectors(&self, texts: Vec<String>) -> Vec<Result<Vec<f32>, (bool, String)>> {
        if texts.is_empty() {
            return Vec::new();
        }
        let n = texts.len();
        let result = match self.encoder.service() {
            Ok(e) => e.embed_texts(texts).await.map_err(|e| format!("encoder: {e}")),
            Err(why) => Err(why),
        };
        match result {
            Ok(vectors) => vectors.into_iter().map(Ok).collect(),
            Err(e) => vec![Err((true, e)); n],
        }
    }

    /// Embeds the products of `ids` not indexed yet; also says which were
    /// (by an earlier attempt).
    async fn process_chunk(
        &self,
        tenant: &str,
        ids: &[String],
    ) -> Result<(Vec<(Product, Outcome)>, Vec<String>), JobError> {
        let products = self.catalog.get_products(tenant, ids).await?;
        // Products deleted since the job was queued leave no vectors behind.
        let missing: Vec<String> = ids
            .iter()
            .filter(|id| !products.iter().any(|p| &p.external_id == *id))
            .cloned()
            .collect();
        if !missing.is_empty() {
            self.vectors
                .delete(tenant, &missing)
                .await
                .map_err(|e| JobError::Retryable(e.to_string()))?;
            // Cached result pages may still hold the deleted products' slots.
            self.catalog.bump_generation(tenant).await?;
        }
        // A retried job redoes only what is still to do.
        let (done, todo): (Vec<Product>, Vec<Product>) = products
            .into_iter()
            .partition(|p| p.index_status == IndexStatus::Indexed);
        let already = done.into_iter().map(|p| p.external_id).collect();
        Ok((self.embed_products(todo).await, already))
    }

    /// Embeds products (images in one encoder batch, every product's text
    /// in another; a product without an image has its text's vector for
    /// both) and says what happened to each.
    async fn embed_products(&self, todo: Vec<Product>) -> Vec<(Product, Outcome)> {
        let with_image: Vec<&Product> = todo.iter().filter(|p| p.has_image()).collect();
        let texts: Vec<String> = todo.iter().map(product_text).collect();
        let (image_vectors, mut text_vectors) =
            tokio::join!(self.image_vectors(&with_image), self.text_vectors(texts.clone()));
        // One vector per text, or every product is retried.
        if text_vectors.len() != todo.len() {
            text_vectors = vec![Err((true, "the encoder returned too few vectors".to_owned())); todo.len()];
        }
        let mut results = Vec::with_capacity(todo.len());
        let mut image_vectors = image_vectors.into_iter();
        let missing = || Err((true, "missing encoder result".to_owned()));
        for ((p, text_vector), text) in todo.iter().zip(text_vectors).zip(&texts) {
            let image_vector = if p.has_image() {
                image_vectors.next().unwrap_or_else(missing)
            } else {
                text_vector.clone()
            };
            let outcome = match (image_vector, text_vector) {
                (Ok(vector), Ok(text_vector)) => {
                    Outcome::Point(Box::new(point(p, vector, Some(text_vector), text)))
                }
                (Err((false, e)), _) | (_, Err((false, e))) => Outcome::Fatal(e),
                (Err((_, e)), _) | (_, Err((_, e))) => Outcome::Transient(e),
            };
            results.push((p.clone(), outcome));
        }
        results
    }
}

impl IndexProducts {
    /// Indexes `ids` of `tenant` in chunks: fetch, encode, upsert, record.
    /// A transient failure of a product in `give_up` (its job is on its
    /// last attempt) is recorded as failed.
    async fn index_ids(
        &self,
        tenant: &str,
        ids: &[String],
        give_up: &(dyn Fn(&str) -> bool + Sync),
        ctx: &JobContext,
    ) -> Result<Pass, JobError> {
        self.encoder.service().map_err(JobError::Retryable)?;
        let total = ids.len() as i64;
        let mut pass = Pass::default();
        for (n, chunk) in ids.chunks(CHUNK).enumerate() {
            // From the read of the products to their status.
            let _held = self.locks.take(tenant, chunk).await;
            let (results, already) = self.process_chunk(tenant, chunk).await?;
            pass.indexed.extend(already);
            let mut points = Vec::new();
            let mut updates = Vec::new();
            for (p, outcome) in results {
                let update = |status, error| IndexUpdate {
                    external_id: p.external_id.clone(),
                    version: p.version,
                    status,
                    error,
                };
                match outcome {
                    Outcome::Point(point) => {
                        points.push(*point);
                        updates.push(update(IndexStatus::Indexed, None));
                    }
                    Outcome::Fatal(e) => updates.push(update(IndexStatus::Failed, Some(e))),
                    // Out of attempts: what is still failing is failed.
                    Outcome::Transient(e) if give_up(&p.external_id) => {
                        updates.push(update(
                            IndexStatus::Failed,
                            Some(format!("{e} (gave up after the last attempt)")),
                        ));
                    }
                    Outcome::Transient(e) => pass.transient.push((p.external_id.clone(), e)),
                }
            }
            if !points.is_empty() {
                self.vectors.upsert(points).await.map_err(vector_error)?;
            }
            self.catalog.set_index_status(tenant, &updates).await?;
            for u in updates {
                match u.status {
                    IndexStatus::Indexed => {
                        pass.indexed.insert(u.external_id);
                    }
                    _ => pass.failed.push((u.external_id, u.error)),
                }
            }
            let done = ((n + 1) * CHUNK).min(ids.len()) as i64;
            ctx.progress(done, total).await?;
        }
        Ok(pass)
    }
}

/// The tenant of an index job (they all have one).
fn job_tenant(job: &Job) -> Result<&str, JobError> {
    job.tenant
        .as_deref()
        .ok_or_else(|| JobError::Fatal("an index job without a tenant".into()))
}

fn external_ids(job: &Job) -> Result<Vec<String>, JobError> {
    match job.spec().map_err(JobError::Fatal)? {
        JobSpec::IndexProduct { external_ids } | JobSpec::BatchIndexProducts { external_ids } => {
            Ok(external_ids)
        }
        other => Err(JobError::Fatal(format!("not an indexing job: {other:?}"))),
    }
}

#[async_trait]
impl JobHandler for IndexProducts {
    fn time_limit(&self) -> Duration {
        self.time_limit
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, JobError> {
        let ids = external_ids(job)?;
        let last_attempt = job.attempts >= job.max_attempts;
        let pass = self
            .index_ids(job_tenant(job)?, &ids, &|_| last_attempt, ctx)
            .await?;
        pass.result_for(&ids)
    }

    fn max_coalesced(&self, kind: &str) -> usize {
        if kind == JobKind::IndexProduct.as_str() {
            self.max_coalesced.max(1)
        } else {
            1
        }
    }

    /// Single-product jobs of one tenant as one batch: the union of their
    /// products indexed once, each job's result read off its own products.
    async fn run_many(&self, jobs: &[Job], ctx: &JobContext) -> Vec<Result<Value, JobError>> {
        let mut all: Vec<String> = Vec::new();
        let mut last: HashSet<String> = HashSet::new();
        let per_job: Vec<Result<Vec<String>, JobError>> = jobs.iter().map(external_ids).collect();
        for (job, ids) in jobs.iter().zip(&per_job) {
            for id in ids.iter().flatten() {
                if !all.contains(id) {
                    all.push(id.clone());
                }
                if job.attempts >= job.max_attempts {
                    last.insert(id.clone());
                }
            }
        }
        let pass = match jobs.first().map(job_tenant).transpose() {
            Ok(tenant) => {
                self.index_ids(tenant.unwrap_or_default(), &all, &|id| last.contains(id), ctx)
                    .await
            }
            Err(e) => Err(e),
        };
        per_job
            .into_iter()
            .map(|ids| match (&pass, ids) {
                (_, Err(e)) => Err(e),
                (Ok(pass), Ok(ids)) => pass.result_for(&ids),
                (Err(e), Ok(_)) => Err(e.clone()),
            })
            .collect()
    }
}

/// A vector-store failure as a job error: a dimension mismatch (a new model
/// before a full reindex) will not heal by retrying; anything else may.
fn vector_error(e: VectorError) -> JobError {
    match e {
        VectorError::DimensionMismatch { expected, got } => JobError::Fatal(format!(
            "the encoder makes {got}-dimensional vectors but the index holds {expected}; \
             run a full reindex (POST /v1/admin/reindex)"
        )),
        other => JobError::Retryable(format!("vector store: {other}")),
    }
}

/// Products read per reindex step.
const REINDEX_PAGE: u32 = 256;
/// Extra rounds a reindex spends on a page: re-embedding products written
/// while it ran (after that their own indexing jobs, which also reach the
/// new generation, have the last word) and retrying transient failures.
const RECHECK_ROUNDS: usize = 6;
/// First pause before retrying a page's transient failures (then 2x).
const RECHECK_PAUSE: Duration = Duration::from_millis(500);

/// `reindex_all`: re-embeds a whole catalog (or one tenant) with the
/// current model.
///
/// Every tenant: the vectors go into a new generation, which goes live only
/// when complete, so searches keep using the old index meanwhile and a model
/// with another dimension switches cleanly. One tenant: the generation holds
/// every tenant, so the tenant's vectors are replaced in place instead (each
/// product keeps a vector throughout) and vectors of products that no
/// longer exist are dropped; that needs the model's dimension unchanged.
///
/// The service's own writes reach a generation under construction (see
/// [`VectorIndex::upsert`]), and every page is re-read after it is written,
/// so a product written or deleted meanwhile ends up right. An attempt that
/// dies (the process is killed) leaves a generation that the next open
/// discards; the retried attempt starts over.
pub struct Reindex {
    pub index: Arc<IndexProducts>,
    pub time_limit: Duration,
}

/// Where a reindex writes.
enum Target<'a> {
    Live,
    Generation(&'a Generation),
}

#[derive(Default)]
struct Tally {
    done: i64,
    indexed: u64,
    failed: u64,
}

impl Reindex {
    async fn write(&self, target: &Target<'_>, points: Vec<VectorPoint>) -> Result<(), JobError> {
        if points.is_empty() {
            return Ok(());
        }
        let vectors = &self.index.vectors;
        match target {
            Target::Live => vectors.upsert(points).await,
            Target::Generation(g) => vectors.upsert_generation(g, points).await,
        }
        .map_err(vector_error)
    }

    /// Embeds and writes one page, then re-reads it: products deleted since
    /// lose their vector, products written since are embedded again, and
    /// products that hit a transient error (an image server hiccup) are
    /// tried again after a pause that doubles each round.
    async fn page(
        &self,
        tenant: &str,
        products: Vec<Product>,
        target: &Target<'_>,
        tally: &mut Tally,
    ) -> Result<(), JobError> {
        let catalog = &self.index.catalog;
        let mut todo = products;
        let mut pause = RECHECK_PAUSE;
        // Each product's last outcome.
        let mut outcomes = std::collections::HashMap::new();
        for round in 0..=RECHECK_ROUNDS {
            if todo.is_empty() {
                break;
            }
            let ids: Vec<String> = todo.iter().map(|p| p.external_id.clone()).collect();
            let versions: std::collections::HashMap<String, i64> =
                todo.iter().map(|p| (p.external_id.clone(), p.version)).collect();
            let results = self.index.embed_products(std::mem::take(&mut todo)).await;
            let mut points = Vec::new();
            let mut updates = Vec::new();
            let mut again = std::collections::HashSet::new();
            for (p, outcome) in results {
                let (status, error) = match outcome {
                    Outcome::Point(point) => {
                        points.push(*point);
                        (IndexStatus::Indexed, None)
                    }
                    Outcome::Fatal(e) => (IndexStatus::Failed, Some(e)),
                    Outcome::Transient(e) if round == RECHECK_ROUNDS => (
                        IndexStatus::Failed,
                        Some(format!(
                            "{e} (gave up after {} tries during a reindex)",
                            round + 1
                        )),
                    ),
                    Outcome::Transient(_) => {
                        again.insert(p.external_id);
                        continue;
                    }
                };
                updates.push(IndexUpdate {
                    external_id: p.external_id,
                    version: p.version,
                    status,
                    error,
                });
            }
            self.write(target, points).await?;
            // Re-read: what changed while we embedded is done again.
            let fresh = catalog.get_products(tenant, &ids).await?;
            let gone: Vec<String> = ids
                .iter()
                .filter(|id| !fresh.iter().any(|p| &p.external_id == *id))
                .cloned()
                .collect();
            if !gone.is_empty() {
                self.index
                    .vectors
                    .delete(tenant, &gone)
                    .await
                    .map_err(vector_error)?;
            }
            catalog.set_index_status(tenant, &updates).await?;
            for u in &updates {
                outcomes.insert(u.external_id.clone(), u.status);
            }
            todo = fresh
                .into_iter()
                .filter(|p| {
                    again.contains(&p.external_id)
                        || versions.get(&p.external_id).is_some_and(|v| *v != p.version)
                })
                .collect();
            if !again.is_empty() && !todo.is_empty() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
        tally.indexed += outcomes.values().filter(|s| **s == IndexStatus::Indexed).count() as u64;
        tally.failed += outcomes.values().filter(|s| **s == IndexStatus::Failed).count() as u64;
        Ok(())
    }

    async fn tenant(
        &self,
        tenant: &str,
        target: &Target<'_>,
        ctx: &JobContext,
        total: i64,
        tally: &mut Tally,
    ) -> Result<(), JobError> {
        let mut after = None;
        loop {
            let page = self
                .index
                .catalog
                .list_products(tenant, None, after, REINDEX_PAGE)
                .await?;
            let n = page.products.len() as i64;
            self.page(tenant, page.products, target, tally).await?;
            tally.done += n;
            ctx.progress(tally.done.min(total), total.max(tally.done)).await?;
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        if matches!(target, Target::Live) {
            // Vectors whose product is gone (e.g. a delete whose cleanup job
            // failed) are dropped.
            let ids = self
                .index
                .vectors
                .product_ids(tenant)
                .await
                .map_err(vector_error)?;
            let known: std::collections::HashSet<String> = self
                .index
                .catalog
                .get_products(tenant, &ids)
                .await?
                .into_iter()
                .map(|p| p.external_id)
                .collect();
            let stale: Vec<String> = ids.into_iter().filter(|id| !known.contains(id)).collect();
            self.index
                .vectors
                .delete(tenant, &stale)
                .await
                .map_err(vector_error)?;
        }
        Ok(())
    }
}

#[async_trait]
impl JobHandler for Reindex {
    fn time_limit(&self) -> Duration {
        self.time_limit
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, JobError> {
        let only = match job.spec().map_err(JobError::Fatal)? {
            JobSpec::ReindexAll { tenant } => tenant,
            other => return Err(JobError::Fatal(format!("not a reindex job: {other:?}"))),
        };
        let encoder = self.index.encoder.service().map_err(JobError::Retryable)?;
        let dims = encoder.dims();
        let vectors = &self.index.vectors;
        let catalog = &self.index.catalog;
        let tenants: Vec<String> = match &only {
            Some(t) => {
                if catalog.get_tenant(t).await?.is_none() {
                    return Err(JobError::Fatal(format!("there is no tenant `{t}`")));
                }
                vec![t.clone()]
            }
            None => catalog.list_tenants().await?.into_iter().map(|t| t.id).collect(),
        };
        let mut total = 0;
        for t in &tenants {
            total += catalog.count_products(t).await?;
        }
        ctx.progress(0, total).await?;
        let mut tally = Tally::default();
        let generation = match &only {
            Some(_) if vectors.dims() != dims => {
                return Err(JobError::Fatal(format!(
                    "the model now makes {dims}-dimensional vectors but the index holds {}: \
                     reindex every tenant (no `tenant`) to rebuild it",
                    vectors.dims()
                )));
            }
            Some(_) => None,
            None => Some(vectors.begin_generation(dims).await.map_err(vector_error)?),
        };
        let outcome = async {
            let target = match &generation {
                Some(g) => Target::Generation(g),
                None => Target::Live,
            };
            for t in &tenants {
                self.tenant(t, &target, ctx, total, &mut tally).await?;
            }
            Ok::<(), JobError>(())
        }
        .await;
        let committed = match (outcome, generation) {
            (Ok(()), Some(g)) => {
                let id = g.id();
                vectors.commit_generation(g).await.map_err(vector_error)?;
                // Edge replicas rebuild their index when this changes.
                catalog
                    .record_generation(&crate::store::replica::IndexGeneration {
                        id: i64::try_from(id).unwrap_or(i64::MAX),
                        model: encoder.source().to_owned(),
                        model_id: encoder.model_id().to_owned(),
                        dims: dims as i64,
                    })
                    .await?;
                // Every tenant's results changed at once: drop cached pages.
                for t in &tenants {
                    catalog.bump_generation(t).await?;
                }
                Some(id)
            }
            (Ok(()), None) => {
                vectors.optimize().await.map_err(vector_error)?;
                None
            }
            (Err(e), g) => {
                if let Some(g) = g
                    && let Err(abort) = vectors.abort_generation(g).await
                {
                    tracing::warn!(error = %abort, "cannot drop an unfinished generation");
                }
                return Err(e);
            }
        };
        let count = match &only {
            Some(t) => vectors.count(Some(t)).await,
            None => vectors.count(None).await,
        }
        .map_err(vector_error)?;
        Ok(json!({
            "tenants": tenants.len(),
            "products": total,
            "indexed": tally.indexed,
            "failed": tally.failed,
            "vectors": count,
            "generation": committed,
            "dims": dims,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_product_is_indexed_by_one_job_at_a_time() {
        let locks = Arc::new(ProductLocks::default());
        let ids = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let first = locks.take("t", &ids(&["a", "b"])).await;
        // Other products, or the same ids of another tenant, go ahead.
        drop(locks.take("t", &ids(&["c"])).await);
        drop(locks.take("u", &ids(&["a"])).await);
        // An overlapping chunk waits for the whole first one.
        let waiter = {
            let locks = locks.clone();
            let ids = ids(&["b", "c"]);
            tokio::spawn(async move {
                drop(locks.take("t", &ids).await);
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(first);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("released")
            .unwrap();
        assert!(locks.held.lock().is_empty());
    }
}
