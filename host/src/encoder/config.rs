//! Hugging Face `config.json` / `preprocessor_config.json` parsing and the mapping to
//! candle's `ClipTextConfig` / `ClipVisionConfig`.
//!
//! Field names and defaults follow `transformers.CLIPConfig`, `CLIPTextConfig` and
//! `CLIPVisionConfig` so that real checkpoints (which often omit default-valued fields)
//! parse the same way `CLIPModel.from_pretrained` would read them.

use std::path::Path;

use candle_transformers::models::clip::{
    text_model::{Activation, ClipTextConfig},
    vision_model::ClipVisionConfig,
};
use serde::{Deserialize, Serialize};

use super::error::{EncoderError, Result};

/// `text_config` of an HF `CLIPConfig` (defaults = `CLIPTextConfig()` = ViT-B/32 text tower).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HfTextConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
    pub pad_token_id: Option<u32>,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
}

impl Default for HfTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            pad_token_id: Some(1),
            bos_token_id: Some(49406),
            eos_token_id: Some(49407),
        }
    }
}

/// `vision_config` of an HF `CLIPConfig` (defaults = `CLIPVisionConfig()` = ViT-B/32).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HfVisionConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub hidden_act: String,
    pub layer_norm_eps: f64,
}

impl Default for HfVisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 224,
            patch_size: 32,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        }
    }
}

/// Top-level HF `CLIPConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HfClipConfig {
    pub text_config: HfTextConfig,
    pub vision_config: HfVisionConfig,
    /// `CLIPModel` sizes both projections from the top-level value (the per-tower
    /// `projection_dim` fields are ignored by `CLIPModel`), so we do the same.
    pub projection_dim: usize,
    pub logit_scale_init_value: f64,
}

impl Default for HfClipConfig {
    fn default() -> Self {
        Self {
            text_config: HfTextConfig::default(),
            vision_config: HfVisionConfig::default(),
            projection_dim: 512,
            logit_scale_init_value: 2.6592,
        }
    }
}

impl HfClipConfig {
    /// The sizes Vitrine's CPU forward pass needs.
    pub fn dims(&self) -> vitrine_clip::ClipDims {
        let (t, v) = (&self.text_config, &self.vision_config);
        vitrine_clip::ClipDims {
            text: vitrine_clip::TowerDims {
                hidden: t.hidden_size,
                intermediate: t.intermediate_size,
                layers: t.num_hidden_layers,
                heads: t.num_attention_heads,
                layer_norm_eps: t.layer_norm_eps,
            },
            vocab: t.vocab_size,
            max_positions: t.max_position_embeddings,
            vision: vitrine_clip::TowerDims {
                hidden: v.hidden_size,
                intermediate: v.intermediate_size,
                layers: v.num_hidden_layers,
                heads: v.num_attention_heads,
                layer_norm_eps: v.layer_norm_eps,
            },
            channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
            projection: self.projection_dim,
        }
    }

    /// Read and validate `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_to_string(path)?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let invalid = |message: String| EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            message,
        };
        let t = &self.text_config;
        let v = &self.vision_config;
        for (name, value) in [
            ("text_config.hidden_size", t.hidden_size),
            ("text_config.num_attention_heads", t.num_attention_heads),
            ("text_config.max_position_embeddings", t.max_position_embeddings),
            ("text_config.vocab_size", t.vocab_size),
            ("vision_config.hidden_size", v.hidden_size),
            ("vision_config.num_attention_heads", v.num_attention_heads),
            ("vision_config.patch_size", v.patch_size),
            ("vision_config.image_size", v.image_size),
            ("projection_dim", self.projection_dim),
        ] {
            if value == 0 {
                return Err(invalid(format!("`{name}` must be > 0")));
            }
        }
        if !t.hidden_size.is_multiple_of(t.num_attention_heads) {
            return Err(invalid(
                "text_config.hidden_size is not divisible by num_attention_heads".into(),
            ));
        }
        if !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err(invalid(
                "vision_config.hidden_size is not divisible by num_attention_heads".into(),
            ));
        }
        if !v.image_size.is_multiple_of(v.patch_size) {
            return Err(invalid(
                "vision_config.image_size is not divisible by patch_size".into(),
            ));
        }
        if v.num_channels != 3 {
            return Err(EncoderError::UnsupportedConfig(format!(
                "vision_config.num_channels = {} (only RGB, 3, is supported)",
                v.num_channels
            )));
        }
        // candle's CLIP only implements quick_gelu and a fixed 1e-5 LayerNorm epsilon;
        // refuse anything else rather than silently computing different embeddings.
        for (name, act) in [
            ("text_config.hidden_act", &t.hidden_act),
            ("vision_config.hidden_act", &v.hidden_act),
        ] {
            if act != "quick_gelu" {
                return Err(EncoderError::UnsupportedConfig(format!(
                    "{name} = \"{act}\" (candle's CLIP implements only \"quick_gelu\")"
                )));
            }
        }
        for (name, eps) in [
            ("text_config.layer_norm_eps", t.layer_norm_eps),
            ("vision_config.layer_norm_eps", v.layer_norm_eps),
        ] {
            if (eps - 1e-5).abs() > 1e-12 {
                return Err(EncoderError::UnsupportedConfig(format!(
                    "{name} = {eps} (candle's CLIP uses a fixed 1e-5)"
                )));
            }
        }
        Ok(())
    }

    /// candle text-tower config.
    pub fn candle_text(&self) -> ClipTextConfig {
        let t = &self.text_config;
        ClipTextConfig {
            vocab_size: t.vocab_size,
            embed_dim: t.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: t.intermediate_size,
            max_position_embeddings: t.max_position_embeddings,
            pad_with: None,
            num_hidden_layers: t.num_hidden_layers,
            num_attention_heads: t.num_attention_heads,
            projection_dim: self.projection_dim,
        }
    }

    /// candle vision-tower config.
    pub fn candle_vision(&self) -> ClipVisionConfig {
        let v = &self.vision_config;
        ClipVisionConfig {
            embed_dim: v.hidden_size,
            activation: Activation::QuickGelu,
            intermediate_size: v.intermediate_size,
            num_hidden_layers: v.num_hidden_layers,
            num_attention_heads: v.num_attention_heads,
            projection_dim: self.projection_dim,
            num_channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
        }
    }
}

/// `size` / `crop_size` in `preprocessor_config.json`: older checkpoints use a bare int,
/// newer ones a dict (`{"shortest_edge": 224}` or `{"height": h, "width": w}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HfSize {
    Int(u32),
    Dict {
        shortest_edge: Option<u32>,
        height: Option<u32>,
        width: Option<u32>,
    },
}

/// The subset of `CLIPImageProcessor`'s `preprocessor_config.json` that affects outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HfPreprocessorConfig {
    pub do_resize: bool,
    pub size: Option<HfSize>,
    pub resample: u32,
    pub do_center_crop: bool,
    pub crop_size: Option<HfSize>,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
}

impl Default for HfPreprocessorConfig {
    // The constants are spelled exactly as in `transformers.image_utils.OPENAI_CLIP_MEAN/STD`;
    // they parse to the same f32 values numpy's float32 cast produces.
    #[allow(clippy::excessive_precision)]
    fn default() -> Self {
        // `CLIPImageProcessor()` defaults (OpenAI CLIP normalisation constants).
        Self {
            do_resize: true,
            size: None,
            resample: 3,
            do_center_crop: true,
            crop_size: None,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: [0.268_629_54, 0.261_302_58, 0.275_777_11],
        }
    }
}

/// How to resize before cropping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeSpec {
    /// Shortest edge to `n`, aspect ratio kept (`size={"shortest_edge": n}`).
    ShortestEdge(u32),
    /// Exact `(height, width)` (`size={"height":..,"width":..}`).
    Exact { height: u32, width: u32 },
}

/// Resolved image preprocessing parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessConfig {
    pub resize: Option<ResizeSpec>,
    /// `(height, width)` of the centre crop, if any.
    pub crop: Option<(u32, u32)>,
    pub rescale_factor: Option<f64>,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Final tensor side the vision tower expects (`vision_config.image_size`).
    pub image_size: u32,
}

impl PreprocessConfig {
    /// Defaults when no `preprocessor_config.json` ships: shortest edge and crop both equal
    /// `vision_config.image_size`, exactly what `CLIPImageProcessor` uses for OpenAI checkpoints.
    pub fn from_image_size(image_size: u32) -> Self {
        let d = HfPreprocessorConfig::default();
        Self {
            resize: Some(ResizeSpec::ShortestEdge(image_size)),
            crop: Some((image_size, image_size)),
            rescale_factor: Some(d.rescale_factor),
            mean: d.image_mean,
            std: d.image_std,
            image_size,
        }
    }

    /// Read `preprocessor_config.json` (if present) on top of the defaults.
    pub fn load(path: &Path, image_size: u32) -> Result<Self> {
        if !path.exists() {
            return Ok(Self::from_image_size(image_size));
        }
        let text = read_to_string(path)?;
        let invalid = |message: String| EncoderError::InvalidConfig {
            path: path.to_path_buf(),
            message,
        };
        let hf: HfPreprocessorConfig = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if hf.do_resize && hf.resample != 3 {
            return Err(EncoderError::UnsupportedConfig(format!(
                "preprocessor resample = {} (only 3 = PIL BICUBIC is implemented)",
                hf.resample
            )));
        }
        let resize = if hf.do_resize {
            Some(match hf.size {
                None => ResizeSpec::ShortestEdge(image_size),
                // A bare int means shortest edge for CLIP (`default_to_square=False`).
                Some(HfSize::Int(n)) => ResizeSpec::ShortestEdge(n),
                Some(HfSize::Dict {
                    shortest_edge: Some(n),
                    ..
                }) => ResizeSpec::ShortestEdge(n),
                Some(HfSize::Dict {
                    height: Some(height),
                    width: Some(width),
                    ..
                }) => ResizeSpec::Exact { height, width },
                Some(other) => return Err(invalid(format!("unsupported `size` {other:?}"))),
            })
        } else {
            None
        };
        let crop = if hf.do_center_crop {
            Some(match hf.crop_size {
                None => (image_size, image_size),
                Some(HfSize::Int(n)) => (n, n),
                Some(HfSize::Dict {
                    height: Some(h),
                    width: Some(w),
                    ..
                }) => (h, w),
                Some(other) => return Err(invalid(format!("unsupported `crop_size` {other:?}"))),
            })
        } else {
            None
        };
        Ok(Self {
            resize,
            crop,
            rescale_factor: hf.do_rescale.then_some(hf.rescale_factor),
            mean: if hf.do_normalize { hf.image_mean } else { [0.0; 3] },
            std: if hf.do_normalize { hf.image_std } else { [1.0; 3] },
            image_size,
        })
    }
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| io_error(path, source))
}

/// Map a not-found I/O error to [`EncoderError::MissingFile`] so the message names the file.
pub(crate) fn io_error(path: &Path, source: std::io::Error) -> EncoderError {
    if source.kind() == std::io::ErrorKind::NotFound {
        EncoderError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        EncoderError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
