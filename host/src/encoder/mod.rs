//! CLIP encoder core for Vitrine: text and image embeddings from a Hugging Face-format
//! CLIP checkpoint (`config.json`, `model.safetensors`, `tokenizer.json`, optionally
//! `preprocessor_config.json`), built on `candle_transformers::models::clip`.
//!
//! Embeddings are L2-normalised `f32` vectors of length [`Encoder::dims`] and match
//! `transformers.CLIPModel.get_text_features` / `get_image_features` fed by
//! `CLIPProcessor` (PIL image backend).

mod config;
mod cpu;
mod error;
mod model;
mod preprocess;
pub mod service;
mod source;
pub mod testing;
mod text;

use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device};

pub use config::{
    HfClipConfig, HfPreprocessorConfig, HfTextConfig, HfVisionConfig, PreprocessConfig, ResizeSpec,
};
pub use error::{EncoderError, Result};
pub use model::{ClipTowers, CpuKernels, expected_tensors, parse_precision};
pub use preprocess::{
    AlphaMode, DEFAULT_MAX_PIXELS, DecodeOptions, DecodePlan, DecodedImage, Hold, pil_resize, preprocess,
    shortest_edge_output_size,
};
pub use source::{LocalCheckpoint, ModelSource, OPTIONAL_FILES, REQUIRED_FILES, SourceOptions};
pub use text::{ClipTokenizer, TokenizedText};
pub use vitrine_kernels::{Isa, Precision};

/// Setting `encoder.device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSetting {
    #[default]
    Cpu,
    /// CUDA device ordinal (`cuda` = `cuda:0`); needs the `cuda` cargo feature.
    Cuda(usize),
    /// CUDA 0 when this build has CUDA and a device is present, else CPU.
    Auto,
}

impl FromStr for DeviceSetting {
    type Err = EncoderError;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "cpu" => Ok(Self::Cpu),
            "auto" => Ok(Self::Auto),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| EncoderError::Device {
                    requested: other.to_string(),
                    message: "expected `cpu`, `cuda`, `cuda:N` or `auto`".into(),
                }),
        }
    }
}

/// Floating-point type used on GPU (CPU always uses f32: candle's CPU f16 matmul is slow
/// and would cost parity).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuDType {
    #[default]
    F16,
    Bf16,
    F32,
}

/// Everything configurable about loading and running the encoder.
#[derive(Debug, Clone)]
pub struct EncoderOptions {
    pub device: DeviceSetting,
    pub gpu_dtype: GpuDType,
    /// CPU worker threads for inference; `None` = available parallelism.
    pub threads: Option<usize>,
    /// Largest batch fed to the model at once; longer inputs are chunked.
    pub max_batch: usize,
    /// What computes the towers on CPU.
    pub cpu_kernels: CpuKernels,
    /// How Vitrine's CPU kernels store the linear layers' weights.
    pub precision: Precision,
    pub decode: DecodeOptions,
    pub source: SourceOptions,
}

impl Default for EncoderOptions {
    fn default() -> Self {
        Self {
            device: DeviceSetting::Cpu,
            gpu_dtype: GpuDType::F16,
            threads: None,
            max_batch: 32,
            cpu_kernels: CpuKernels::Auto,
            precision: Precision::F32,
            decode: DecodeOptions::default(),
            source: SourceOptions::default(),
        }
    }
}

fn select_device(setting: DeviceSetting, gpu_dtype: GpuDType) -> Result<(Device, DType)> {
    let gpu = match gpu_dtype {
        GpuDType::F16 => DType::F16,
        GpuDType::Bf16 => DType::BF16,
        GpuDType::F32 => DType::F32,
    };
    match setting {
        DeviceSetting::Cpu => Ok((Device::Cpu, DType::F32)),
        DeviceSetting::Cuda(n) => {
            let dev = Device::new_cuda(n).map_err(|e| EncoderError::Device {
                requested: format!("cuda:{n}"),
                message: if candle_core::utils::cuda_is_available() {
                    e.to_string()
                } else {
                    "this build has no CUDA support (enable the `cuda` cargo feature)".into()
                },
            })?;
            Ok((dev, gpu))
        }
        DeviceSetting::Auto => {
            if candle_core::utils::cuda_is_available()
                && let Ok(dev) = Device::new_cuda(0)
            {
                return Ok((dev, gpu));
            }
            Ok((Device::Cpu, DType::F32))
        }
    }
}

/// A loaded CLIP model: both towers, tokenizer and image preprocessing.
pub struct Encoder {
    towers: ClipTowers,
    tokenizer: ClipTokenizer,
    preprocess: PreprocessConfig,
    decode: DecodeOptions,
    config: HfClipConfig,
    device: Device,
    pool: Option<rayon::ThreadPool>,
    max_batch: usize,
    model_id: String,
    origin: String,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("model_id", &self.model_id)
            .field("origin", &self.origin)
            .field("dims", &self.dims())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Resolve `source` (downloading if remote) and load it.
    pub fn load(source: &ModelSource, opts: &EncoderOptions) -> Result<Self> {
        let local = source.resolve(&opts.source)?;
        Self::load_local(&local, opts)
    }

    /// Load a checkpoint directory.
    pub fn from_dir(dir: &Path, opts: &EncoderOptions) -> Result<Self> {
        let local = ModelSource::LocalDir(dir.to_path_buf()).resolve(&opts.source)?;
        Self::load_local(&local, opts)
    }

    fn load_local(local: &LocalCheckpoint, opts: &EncoderOptions) -> Result<Self> {
        let dir = &local.dir;
        for f in REQUIRED_FILES {
            let p = dir.join(f);
            if !p.is_file() {
                return Err(EncoderError::MissingFile { path: p });
            }
        }
        let config_path = dir.join("config.json");
        let config = HfClipConfig::from_file(&config_path)?;
        let image_size =
            u32::try_from(config.vision_config.image_size).map_err(|_| EncoderError::InvalidConfig {
                path: config_path.clone(),
                message: "vision_config.image_size too large".into(),
            })?;
        let preprocess = PreprocessConfig::load(&dir.join("preprocessor_config.json"), image_size)?;
        let tokenizer = ClipTokenizer::load(
            &dir.join("tokenizer.json"),
            config.text_config.max_position_embeddings,
            config.text_config.eos_token_id,
        )?;
        let (device, dtype) = select_device(opts.device, opts.gpu_dtype)?;
        let pool = if device.is_cpu() {
            let threads = opts
                .threads
                .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads.max(1))
                    .thread_name(|i| format!("clip-encoder-{i}"))
                    .build()
                    .map_err(|e| EncoderError::Device {
                        requested: "cpu".into(),
                        message: format!("cannot start {threads} inference threads: {e}"),
                    })?,
            )
        } else {
            None
        };
        let weights = dir.join("model.safetensors");
        let towers = ClipTowers::load(
            &weights,
            &config,
            dtype,
            &device,
            opts.cpu_kernels,
            opts.precision,
        )?;
        let fingerprint = fingerprint(dir)?;
        let name = local
            .origin
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or("clip")
            .to_string();
        Ok(Self {
            towers,
            tokenizer,
            preprocess,
            decode: opts.decode,
            config,
            device,
            pool,
            max_batch: opts.max_batch.max(1),
            model_id: format!("{name}@{fingerprint:016x}"),
            origin: local.origin.clone(),
        })
    }

    /// Embedding dimension (`projection_dim`).
    pub fn dims(&self) -> usize {
        self.config.projection_dim
    }

    /// Stable id: checkpoint name plus a hash of config, tokenizer and tensor index, so
    /// vectors from different weights are never mixed.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Where the checkpoint came from (`local:/abs/dir`, `hf:org/name@rev`, URL).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn config(&self) -> &HfClipConfig {
        &self.config
    }

    pub fn preprocess_config(&self) -> &PreprocessConfig {
        &self.preprocess
    }

    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.tokenizer
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// What computes the towers: `candle`, or `vitrine-<isa>` (`avx512`, `avx2`, `neon`,
    /// `portable`) with `-bf16` appended for bf16 weights.
    pub fn backend(&self) -> String {
        self.towers.backend()
    }

    fn run<T: Send>(&self, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
        match &self.pool {
            Some(pool) => pool.install(f),
            None => f(),
        }
    }

    /// L2-normalised text embeddings, one per input, in order.
    pub fn embed_texts(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let toks = texts
            .iter()
            .map(|t| self.tokenizer.tokenize(t))
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in toks.chunks(self.max_batch) {
            let seq = chunk.iter().map(|t| t.ids.len()).max().unwrap_or(0);
            let mut ids = Vec::with_capacity(chunk.len() * seq);
            for t in chunk {
                ids.extend_from_slice(&t.ids);
                ids.extend(std::iter::repeat_n(self.tokenizer.pad_id(), seq - t.ids.len()));
            }
            let eos: Vec<usize> = chunk.iter().map(|t| t.eos_pos).collect();
            let rows = self.run(|| self.towers.embed_text_batch(ids, seq, &eos))?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Decode image bytes with this encoder's decode options.
    pub fn decode_image(&self, bytes: &[u8]) -> Result<DecodedImage> {
        DecodedImage::decode(bytes, &self.decode)
    }

    /// Preprocessed `[3, S, S]` pixel values (exposed for parity checks).
    pub fn pixel_values(&self, image: &DecodedImage) -> Result<Vec<f32>> {
        preprocess(image, &self.preprocess)
    }

    /// L2-normalised image embeddings, one per input, in order.
    pub fn embed_images(&self, images: &[DecodedImage]) -> Result<Vec<Vec<f32>>> {
        let s = self.preprocess.image_size as usize;
        let mut out = Vec::with_capacity(images.len());
        for chunk in images.chunks(self.max_batch) {
            let rows = self.run(|| {
                use rayon::prelude::*;
                // Resizing is per image: spread it over the inference threads.
                let each = chunk
                    .par_iter()
                    .map(|img| preprocess(img, &self.preprocess))
                    .collect::<Result<Vec<_>>>()?;
                self.towers.embed_image_batch(each.concat(), chunk.len(), s)
            })?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Decode (with the decompression-bomb guard) and embed raw image bytes.
    pub fn embed_image_bytes(&self, images: &[&[u8]]) -> Result<Vec<Vec<f32>>> {
        let decoded = images
            .iter()
            .map(|b| self.decode_image(b))
            .collect::<Result<Vec<_>>>()?;
        self.embed_images(&decoded)
    }
}

/// Content fingerprint: config.json + tokenizer.json + the safetensors header (names,
/// dtypes, shapes, offsets) — cheap, and changes whenever the checkpoint layout does.
fn fingerprint(dir: &Path) -> Result<u64> {
    use std::io::Read;
    let mut buf = Vec::new();
    for f in ["config.json", "tokenizer.json"] {
        let p = dir.join(f);
        buf.extend(std::fs::read(&p).map_err(|e| config::io_error(&p, e))?);
    }
    let p = dir.join("model.safetensors");
    let mut file = std::fs::File::open(&p).map_err(|e| config::io_error(&p, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| config::io_error(&p, e))?;
    let n = u64::from_le_bytes(len).min(100 << 20);
    let mut header = Vec::new();
    file.take(n)
        .read_to_end(&mut header)
        .map_err(|e| config::io_error(&p, e))?;
    buf.extend(header);
    buf.extend(file_len(&p).to_le_bytes());
    Ok(source::fnv1a(&buf))
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}
