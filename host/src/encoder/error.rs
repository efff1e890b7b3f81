//! Typed errors for the encoder.

use std::path::PathBuf;

/// Result alias used throughout the encoder.
pub type Result<T, E = EncoderError> = std::result::Result<T, E>;

/// Everything that can go wrong while loading a checkpoint or embedding inputs.
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    /// A required checkpoint file does not exist.
    #[error("model file `{}` not found", path.display())]
    MissingFile { path: PathBuf },

    /// A checkpoint file exists but could not be read.
    #[error("failed to read `{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// `config.json` / `preprocessor_config.json` could not be parsed or is inconsistent.
    #[error("invalid model config `{}`: {message}", path.display())]
    InvalidConfig { path: PathBuf, message: String },

    /// The config is valid HF CLIP but uses a feature candle's CLIP does not implement.
    #[error("unsupported model config: {0}")]
    UnsupportedConfig(String),

    /// `model.safetensors` is not a readable safetensors file (truncated, corrupt header, ...).
    #[error("checkpoint `{}` is not a valid safetensors file: {message}", path.display())]
    CorruptCheckpoint { path: PathBuf, message: String },

    /// A tensor the architecture needs is absent from the checkpoint.
    #[error("tensor `{name}` is missing from checkpoint `{}`", path.display())]
    MissingTensor { name: String, path: PathBuf },

    /// A tensor is present but its shape does not match the config.
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?} (from config.json)")]
    TensorShape {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },

    /// `tokenizer.json` could not be loaded or used.
    #[error("tokenizer `{}`: {message}", path.display())]
    Tokenizer { path: PathBuf, message: String },

    /// Tokenising an input text failed.
    #[error("failed to tokenize text: {0}")]
    Tokenize(String),

    /// The bytes are not an image format we decode (JPEG, PNG, WebP, GIF).
    #[error("unsupported image format: {0}")]
    UnsupportedImageFormat(String),

    /// The bytes look like a supported format but cannot be decoded (corrupt or truncated).
    #[error("corrupt or truncated image: {0}")]
    CorruptImage(String),

    /// The image header announces more pixels than allowed (decompression-bomb guard).
    #[error("image too large: {width}x{height} ({pixels} pixels) exceeds the limit of {limit} pixels")]
    ImageTooLarge {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },

    /// The model source string could not be parsed.
    #[error("invalid model source `{source_str}`: {message}; check the setting `encoder.model`")]
    InvalidSource { source_str: String, message: String },

    /// The model source kind is recognised but not supported by this build.
    #[error("unsupported model source `{source_str}`: {message}; change the setting `encoder.model`")]
    UnsupportedSource { source_str: String, message: String },

    /// The Hugging Face hub could not be reached (no network, DNS, TLS, timeout...).
    #[error(
        "Hugging Face hub unreachable while fetching `{file}` from `{repo}`: {message}; \
         pre-populate the hub cache or change the setting `encoder.model` to a local checkpoint directory"
    )]
    HubUnreachable {
        repo: String,
        file: String,
        message: String,
    },

    /// The hub answered but the file/repo/revision does not exist.
    #[error(
        "`{file}` not found in hub repo `{repo}` (revision `{revision}`): {message}; check the setting `encoder.model`"
    )]
    HubNotFound {
        repo: String,
        revision: String,
        file: String,
        message: String,
    },

    /// Fetching from an object store failed.
    #[error("object store `{url}`: {message}; check the setting `encoder.model`")]
    ObjectStore { url: String, message: String },

    /// The requested device is not available.
    #[error("device `{requested}` unavailable: {message}; check the setting `encoder.device`")]
    Device { requested: String, message: String },

    /// The requested CPU kernels are unknown or unsupported by this CPU.
    #[error("cpu kernels `{requested}` unavailable: {message}; check the setting `encoder.cpu_kernels`")]
    CpuKernels { requested: String, message: String },

    /// The requested precision is unknown or cannot apply.
    #[error("precision `{requested}` unavailable: {message}; check the setting `encoder.precision`")]
    Precision { requested: String, message: String },

    /// Loading the weights into candle failed after validation (should be rare).
    #[error("failed to build model from `{}`: {source}", path.display())]
    ModelBuild {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },

    /// A tensor operation failed during inference.
    #[error("encoder internal error: {0}")]
    Internal(String),

    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}
