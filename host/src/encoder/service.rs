//! The encoder as a service: one dedicated thread owns the model (never
//! the async runtime's threads), fed by a bounded queue. Concurrent requests
//! are grouped into batches: whatever is queued when the thread becomes free
//! is taken together, up to `max_batch`, so batching costs a lone query
//! nothing and grows with load. `max_wait` can add a short wait to fill
//! batches (throughput over latency). A full queue is refused at once
//! (`Busy`, 503 + Retry-After) instead of letting latency grow unbounded.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::{DecodedImage, Encoder, EncoderError};

#[derive(Debug, Clone, Copy)]
pub struct BatchConfig {
    pub max_batch: usize,
    pub max_wait: Duration,
    pub queue_capacity: usize,
}

impl BatchConfig {
    /// Batching under `encoder.max_batch`, `max_wait_ms`, `queue_capacity`.
    pub fn from_settings(e: &crate::config::EncoderSettings) -> Self {
        Self {
            max_batch: e.max_batch,
            max_wait: Duration::from_millis(e.max_wait_ms),
            queue_capacity: e.queue_capacity,
        }
    }
}

impl Default for BatchConfig {
    /// The built-in settings'.
    fn default() -> Self {
        Self::from_settings(&crate::config::Settings::defaults().encoder)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EmbedError {
    /// The queue is full: the caller should back off.
    #[error("the encoder is busy; retry shortly")]
    Busy,
    #[error("the encoder has stopped")]
    Stopped,
    #[error(transparent)]
    Encoder(Arc<EncoderError>),
}

enum Input {
    Text(String),
    Image(DecodedImage),
}

impl Input {
    fn is_text(&self) -> bool {
        matches!(self, Input::Text(_))
    }
}

struct Request {
    input: Input,
    reply: oneshot::Sender<Result<Vec<f32>, EmbedError>>,
}

/// A handle to the encoder thread; cheap to clone.
#[derive(Clone)]
pub struct EncoderService {
    tx: SyncSender<Request>,
    model_id: Arc<str>,
    dims: usize,
    /// The `encoder.model` it was loaded from (hub id, directory or URL).
    source: Arc<str>,
}

impl EncoderService {
    /// Moves `encoder` onto its own thread.
    pub fn start(encoder: Encoder, config: BatchConfig) -> std::io::Result<Self> {
        let (tx, rx) = sync_channel(config.queue_capacity.max(1));
        let model_id: Arc<str> = Arc::from(encoder.model_id());
        let dims = encoder.dims();
        // Images are decoded no smaller than this model reads them.
        let p = encoder.preprocess_config();
        let edge = match p.resize {
            Some(super::config::ResizeSpec::ShortestEdge(n)) => n,
            Some(super::config::ResizeSpec::Exact { height, width }) => height.max(width),
            None => p.image_size,
        };
        crate::media::decode::budget().set_min_edge(edge);
        std::thread::Builder::new()
            .name("vitrine-encoder".into())
            .spawn(move || worker(encoder, rx, config))?;
        Ok(Self {
            tx,
            model_id,
            dims,
            source: Arc::from(""),
        })
    }

    /// The same service, naming the source it was loaded from.
    pub fn with_source(mut self, source: &str) -> Self {
        self.source = Arc::from(source);
        self
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Where the model came from, as `encoder.model` names it.
    pub fn source(&self) -> &str {
        &self.source
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub async fn embed_text(&self, text: String) -> Result<Vec<f32>, EmbedError> {
        self.submit(Input::Text(text))?
            .await
            .map_err(|_| EmbedError::Stopped)?
    }

    pub async fn embed_image(&self, image: DecodedImage) -> Result<Vec<f32>, EmbedError> {
        self.submit(Input::Image(image))?
            .await
            .map_err(|_| EmbedError::Stopped)?
    }

    /// Many images at once (indexing): queued together so the thread takes
    /// them as full batches. Waits for queue space rather than refusing:
    /// background work should slow down, not fail.
    pub async fn embed_images(&self, images: Vec<DecodedImage>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit_all(images.into_iter().map(Input::Image)).await
    }

    /// Many texts at once (indexing products without images), as
    /// [`Self::embed_images`].
    pub async fn embed_texts(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.submit_all(texts.into_iter().map(Input::Text)).await
    }

    async fn submit_all(&self, inputs: impl Iterator<Item = Input>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut replies = Vec::new();
        for input in inputs {
            let (reply, rx) = oneshot::channel();
            let mut req = Request { input, reply };
            loop {
                match self.tx.try_send(req) {
                    Ok(()) => break,
                    Err(TrySendError::Full(r)) => {
                        req = r;
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                    Err(TrySendError::Disconnected(_)) => return Err(EmbedError::Stopped),
                }
            }
            replies.push(rx);
        }
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(rx.await.map_err(|_| EmbedError::Stopped)??);
        }
        Ok(out)
    }

    fn submit(&self, input: Input) -> Result<oneshot::Receiver<Result<Vec<f32>, EmbedError>>, EmbedError> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(Request { input, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => {
                metrics::counter!(crate::telemetry::ENCODER_REJECTED).increment(1);
                Err(EmbedError::Busy)
            }
            Err(TrySendError::Disconnected(_)) => Err(EmbedError::Stopped),
        }
    }
}

fn worker(encoder: Encoder, rx: Receiver<Request>, config: BatchConfig) {
    let max_batch = config.max_batch.max(1);
    // A request of the other kind (text vs image) that ended the last batch.
    let mut carry: Option<Request> = None;
    loop {
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv() {
                Ok(r) => r,
                Err(_) => return, // every handle dropped: shut down
            },
        };
        let text = first.input.is_text();
        let mut batch = vec![first];
        let deadline = Instant::now() + config.max_wait;
        while batch.len() < max_batch {
            let next = match rx.try_recv() {
                Ok(r) => Ok(r),
                Err(_) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break;
                    }
                    rx.recv_timeout(left)
                }
            };
            match next {
                Ok(r) if r.input.is_text() == text => batch.push(r),
                Ok(r) => {
                    carry = Some(r);
                    break;
                }
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        run_batch(&encoder, batch, text);
    }
}

fn run_batch(encoder: &Encoder, batch: Vec<Request>, text: bool) {
    let start = Instant::now();
    let n = batch.len();
    let (inputs, replies): (Vec<Input>, Vec<_>) = batch.into_iter().map(|r| (r.input, r.reply)).unzip();
    let result = if text {
        let texts: Vec<&str> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Text(t) => Some(t.as_str()),
                Input::Image(_) => None,
            })
            .collect();
        encoder.embed_texts(&texts)
    } else {
        let images: Vec<DecodedImage> = inputs
            .into_iter()
            .filter_map(|i| match i {
                Input::Image(img) => Some(img),
                Input::Text(_) => None,
            })
            .collect();
        encoder.embed_images(&images)
    };
    let kind = if text { "text" } else { "image" };
    metrics::histogram!(crate::telemetry::ENCODER_BATCH_SIZE, "kind" => kind).record(n as f64);
    metrics::histogram!(crate::telemetry::ENCODER_BATCH_SECONDS, "kind" => kind)
        .record(start.elapsed().as_secs_f64());
    match result {
        Ok(vectors) if vectors.len() == n => {
            for (reply, v) in replies.into_iter().zip(vectors) {
                let _ = reply.send(Ok(v));
            }
        }
        Ok(vectors) => {
            let e = Arc::new(EncoderError::Internal(format!(
                "{} vectors for {n} inputs",
                vectors.len()
            )));
            for reply in replies {
                let _ = reply.send(Err(EmbedError::Encoder(e.clone())));
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for reply in replies {
                let _ = reply.send(Err(EmbedError::Encoder(e.clone())));
            }
        }
    }
}

/// The encoder as the rest of the service sees it: loading in the
/// background at start, then ready or failed. Catalog endpoints work in
/// every state; embedding needs `Ready`.
#[derive(Clone, Default)]
pub struct SharedEncoder(Arc<std::sync::RwLock<EncoderState>>);

#[derive(Clone, Default)]
pub enum EncoderState {
    #[default]
    Loading,
    Ready(EncoderService),
    Failed(String),
}

impl SharedEncoder {
    pub fn set(&self, state: EncoderState) {
        if let Ok(mut s) = self.0.write() {
            *s = state;
        }
    }

    pub fn state(&self) -> EncoderState {
        self.0
            .read()
            .map(|s| s.clone())
            .unwrap_or(EncoderState::Failed("poisoned".into()))
    }

    /// The running encoder, or why there is none.
    pub fn service(&self) -> Result<EncoderService, String> {
        match self.state() {
            EncoderState::Ready(s) => Ok(s),
            EncoderState::Loading => Err("the encoder model is still loading".into()),
            EncoderState::Failed(why) => Err(why),
        }
    }
}

/// Loads the model the settings name on the blocking pool and starts its
/// thread; the outcome lands in `shared`.
pub async fn load_into(
    shared: SharedEncoder,
    source: super::ModelSource,
    options: super::EncoderOptions,
    batch: BatchConfig,
) {
    let started = Instant::now();
    let named = source.to_string();
    let loaded = tokio::task::spawn_blocking(move || Encoder::load(&source, &options)).await;
    let state = match loaded {
        Ok(Ok(encoder)) => {
            let (id, dims, device, kernels) = (
                encoder.model_id().to_owned(),
                encoder.dims(),
                format!("{:?}", encoder.device()),
                encoder.backend(),
            );
            match EncoderService::start(encoder, batch) {
                Ok(service) => {
                    let service = service.with_source(&named);
                    tracing::info!(model = %id, dims, device = %device, kernels = %kernels, secs = started.elapsed().as_secs_f64(), "encoder ready");
                    EncoderState::Ready(service)
                }
                Err(e) => EncoderState::Failed(format!("cannot start the encoder thread: {e}")),
            }
        }
        Ok(Err(e)) => EncoderState::Failed(e.to_string()),
        Err(e) => EncoderState::Failed(format!("the encoder loader crashed: {e}")),
    };
    if let EncoderState::Failed(why) = &state {
        tracing::error!(error = %why, "encoder unavailable: search and embedding answer 503 until this is fixed");
    }
    shared.set(state);
}
