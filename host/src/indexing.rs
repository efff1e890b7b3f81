//! Indexing: turns catalog writes into vectors. The job kinds
//! `index_product` and `batch_index_products` both carry the external ids to
//! (re)index; the handler fetches images (SSRF-safe), keeps the originals,
//! embeds images in batches (text for products without an image), upserts
//! the vectors with their filter payload, and records each product's
//! outcome. A product whose image is permanently broken ends `failed` with
//! the reason; transient failures make the job retry, redoing only what is
//! still pending.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::encoder::service::SharedEncoder;
use crate::encoder::{DecodeOptions, DecodedImage};
use crate::jobs::{JobContext, JobError, JobHandler};
use crate::media::{BlobStore, ImageFetcher, MediaError};
use crate::model::{IndexStatus, Product};
use crate::store::vectors::{PointPayload, VectorIndex, VectorPoint};
use crate::store::{Catalog, IndexUpdate, Job};

/// Products handled per step: one catalog read, one encoder batch per
/// kind, one vector upsert, one status write.
const CHUNK: usize = 64;
/// Concurrent image downloads per job: enough to hide network latency
/// behind the encoder, few enough not to hammer one shop's image server.
const FETCH_CONCURRENCY: usize = 8;

pub struct IndexProducts {
    pub catalog: Arc<dyn Catalog>,
    pub encoder: SharedEncoder,
    pub vectors: Arc<dyn VectorIndex>,
    pub fetcher: Arc<ImageFetcher>,
    pub blobs: BlobStore,
    pub time_limit: Duration,
}

/// What happened to one product in one attempt.
enum Outcome {
    Point(VectorPoint),
    Fatal(String),
    Transient(String),
}

/// The text a product is known by when it has no image.
pub fn product_text(p: &Product) -> String {
    match &p.fields.description {
        Some(d) if !d.trim().is_empty() => format!("{}. {}", p.fields.title, d),
        _ => p.fields.title.clone(),
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

/// Downloads one image, keeps the original, decodes it. The error says
/// whether another attempt may succeed.
async fn fetch_and_decode(
    fetcher: Arc<ImageFetcher>,
    blobs: BlobStore,
    url: String,
) -> Result<DecodedImage, (bool, String)> {
    let image = fetcher
        .fetch(&url)
        .await
        .map_err(|e| (e.is_retryable(), e.to_string()))?;
    if let Err(e) = blobs.put_image(&image).await {
        // Keeping the original is best effort; the vector is what matters.
        tracing::warn!(error = %e, url, "cannot store the original image");
    }
    tokio::task::spawn_blocking(move || DecodedImage::decode(&image.bytes, &DecodeOptions::default()))
        .await
        .map_err(|e| (true, format!("image decoder crashed: {e}")))?
        .map_err(|e| (false, MediaError::Corrupt(e.to_string()).to_string()))
}

impl IndexProducts {
    async fn image_vectors(&self, products: &[&Product]) -> Vec<Result<Vec<f32>, (bool, String)>> {
        // Fetch concurrently, keeping input order. The futures own their
        // inputs so the stream is `Send + 'static`.
        let downloads: Vec<_> = products
            .iter()
            .map(|p| {
                let url = p.fields.image_url.clone().unwrap_or_default();
                fetch_and_decode(self.fetcher.clone(), self.blobs.clone(), url)
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

    async fn process_chunk(&self, tenant: &str, ids: &[String]) -> Result<Vec<(Product, Outcome)>, JobError> {
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
        }
        // A retried job redoes only what is still to do.
        let todo: Vec<Product> = products
            .into_iter()
            .filter(|p| p.index_status != IndexStatus::Indexed)
            .collect();
        let with_image: Vec<&Product> = todo.iter().filter(|p| p.fields.image_url.is_some()).collect();
        let image_vectors = self.image_vectors(&with_image).await;
        let text_only: Vec<String> = todo
            .iter()
            .filter(|p| p.fields.image_url.is_none())
            .map(product_text)
            .collect();
        let text_vectors = self.text_vectors(text_only).await;
        let mut results = Vec::with_capacity(todo.len());
        let mut image_vectors = image_vectors.into_iter();
        let mut text_vectors = text_vectors.into_iter();
        for p in &todo {
            let next = if p.fields.image_url.is_some() {
                image_vectors.next()
            } else {
                text_vectors.next()
            };
            let vector = next.unwrap_or(Err((true, "missing encoder result".into())));
            let outcome = match vector {
                Ok(vector) => Outcome::Point(VectorPoint {
                    tenant: tenant.to_owned(),
                    product_id: p.external_id.clone(),
                    vector,
                    payload: payload(p),
                }),
                Err((true, e)) => Outcome::Transient(e),
                Err((false, e)) => Outcome::Fatal(e),
            };
            results.push((p.clone(), outcome));
        }
        Ok(results)
    }
}

#[async_trait]
impl JobHandler for IndexProducts {
    fn time_limit(&self) -> Duration {
        self.time_limit
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, JobError> {
        let ids: Vec<String> = job
            .payload
            .get("external_ids")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .ok_or_else(|| JobError::Fatal("the job payload has no external_ids list".into()))?;
        let encoder = self.encoder.service().map_err(JobError::Retryable)?;
        if encoder.dims() != self.vectors.dims() {
            return Err(JobError::Fatal(format!(
                "the encoder makes {}-dimensional vectors but the index holds {}; run a full reindex",
                encoder.dims(),
                self.vectors.dims()
            )));
        }
        let last_attempt = job.attempts >= job.max_attempts;
        let total = ids.len() as i64;
        let (mut indexed, mut failed, mut transient) = (0u64, 0u64, Vec::new());
        for (n, chunk) in ids.chunks(CHUNK).enumerate() {
            let results = self.process_chunk(&job.tenant, chunk).await?;
            let mut points = Vec::new();
            let mut updates = Vec::new();
            for (p, outcome) in results {
                match outcome {
                    Outcome::Point(point) => {
                        points.push(point);
                        updates.push(IndexUpdate {
                            external_id: p.external_id,
                            version: p.version,
                            status: IndexStatus::Indexed,
                            error: None,
                        });
                    }
                    Outcome::Fatal(e) => updates.push(IndexUpdate {
                        external_id: p.external_id,
                        version: p.version,
                        status: IndexStatus::Failed,
                        error: Some(e),
                    }),
                    // Out of attempts: what is still failing is failed.
                    Outcome::Transient(e) if last_attempt => updates.push(IndexUpdate {
                        external_id: p.external_id,
                        version: p.version,
                        status: IndexStatus::Failed,
                        error: Some(format!("{e} (gave up after {} attempts)", job.attempts)),
                    }),
                    Outcome::Transient(e) => transient.push(format!("{}: {e}", p.external_id)),
                }
            }
            let stored = points.len() as u64;
            if !points.is_empty() {
                self.vectors
                    .upsert(points)
                    .await
                    .map_err(|e| JobError::Retryable(format!("vector store: {e}")))?;
            }
            failed += updates.iter().filter(|u| u.status == IndexStatus::Failed).count() as u64;
            self.catalog.set_index_status(&job.tenant, &updates).await?;
            indexed += stored;
            let done = ((n + 1) * CHUNK).min(ids.len()) as i64;
            ctx.progress(done, total).await?;
        }
        if !transient.is_empty() {
            let shown: Vec<&str> = transient.iter().take(3).map(String::as_str).collect();
            return Err(JobError::Retryable(format!(
                "{} products hit transient errors (e.g. {})",
                transient.len(),
                shown.join("; ")
            )));
        }
        Ok(json!({"indexed": indexed, "failed": failed}))
    }
}
