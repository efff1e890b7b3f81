//! The CLIP towers (candle-transformers, or Vitrine's CPU kernels) plus checkpoint
//! validation and eos pooling.

use std::path::Path;

use candle_core::{D, DType, Device, Module, Tensor, safetensors::MmapedSafetensors};
use candle_nn::{Linear, VarBuilder};
use candle_transformers::models::clip::{
    text_model::ClipTextTransformer, vision_model::ClipVisionTransformer,
};

use vitrine_kernels::{Isa, Precision};

use super::config::HfClipConfig;
use super::cpu::{self, CpuClip};
use super::error::{EncoderError, Result};

/// Every tensor `CLIPModel` (HF layout) needs for the two towers and projections, with the
/// shape implied by `config.json`. `logit_scale` and legacy `position_ids` buffers are not
/// needed for embeddings and are ignored when present.
pub fn expected_tensors(cfg: &HfClipConfig) -> Vec<(String, Vec<usize>)> {
    vitrine_clip::tensors(&cfg.dims())
}

/// Check names and shapes up front so errors name the tensor. This also matters for
/// correctness: candle silently substitutes a *random* `class_embedding` when it is absent.
/// Returns the mapped file, for loaders that read it directly.
fn validate_checkpoint(path: &Path, cfg: &HfClipConfig) -> Result<MmapedSafetensors> {
    let st = mmap(path)?;
    let present: std::collections::HashMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    for (name, expected) in expected_tensors(cfg) {
        match present.get(&name) {
            None => {
                return Err(EncoderError::MissingTensor {
                    name,
                    path: path.to_path_buf(),
                });
            }
            Some(actual) if *actual != expected => {
                return Err(EncoderError::TensorShape {
                    name,
                    expected,
                    actual: actual.clone(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(st)
}

/// Which implementation runs the towers on CPU (setting `encoder.cpu_kernels`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuKernels {
    /// Vitrine's kernels on x86-64 with AVX2 (AVX-512 where present), else candle.
    #[default]
    Auto,
    /// Vitrine's kernels with the best instruction set this CPU has (portable Rust
    /// without SIMD support: correct, but slower than candle there).
    Vitrine,
    /// Vitrine's kernels forced to one instruction set (an error where the CPU lacks it).
    Forced(Isa),
    /// candle-transformers' CLIP with candle's CPU matmul.
    Candle,
}

impl std::str::FromStr for CpuKernels {
    type Err = EncoderError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "vitrine" => Ok(Self::Vitrine),
            "candle" => Ok(Self::Candle),
            other => Isa::from_name(other).map(Self::Forced).ok_or_else(|| EncoderError::CpuKernels {
                requested: other.to_string(),
                message: "expected `auto`, `vitrine`, `candle`, or an instruction set: `avx512`, `avx2`, `neon`, \
                          `portable`"
                    .into(),
            }),
        }
    }
}

impl CpuKernels {
    /// The instruction set Vitrine's kernels run with, or `None` for candle.
    pub fn resolve(self) -> Result<Option<Isa>> {
        match self {
            Self::Auto => Ok(Some(Isa::detect()).filter(|i| matches!(i, Isa::Avx512 | Isa::Avx2))),
            Self::Vitrine => Ok(Some(Isa::detect())),
            Self::Forced(isa) if isa.available() => Ok(Some(isa)),
            Self::Forced(isa) => Err(EncoderError::CpuKernels {
                requested: isa.name().into(),
                message: "this CPU does not support that instruction set".into(),
            }),
            Self::Candle => Ok(None),
        }
    }
}

/// Parse the setting `encoder.precision`: `f32` or `bf16`.
pub fn parse_precision(s: &str) -> Result<Precision> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" => Ok(Precision::F32),
        "bf16" => Ok(Precision::Bf16),
        other => Err(EncoderError::Precision {
            requested: other.into(),
            message: "expected `f32` or `bf16`".into(),
        }),
    }
}

/// Both CLIP towers with their projections, on candle or on Vitrine's CPU kernels.
#[derive(Debug)]
pub struct ClipTowers {
    inner: Towers,
}

#[derive(Debug)]
enum Towers {
    Candle(Box<CandleTowers>),
    Cpu(Box<CpuClip>),
}

#[derive(Debug)]
struct CandleTowers {
    text: ClipTextTransformer,
    vision: ClipVisionTransformer,
    text_projection: Linear,
    visual_projection: Linear,
    dtype: DType,
    device: Device,
}

impl ClipTowers {
    pub fn load(
        weights: &Path,
        cfg: &HfClipConfig,
        dtype: DType,
        device: &Device,
        cpu: CpuKernels,
        precision: Precision,
    ) -> Result<Self> {
        if !weights.exists() {
            return Err(EncoderError::MissingFile {
                path: weights.to_path_buf(),
            });
        }
        let st = validate_checkpoint(weights, cfg)?;
        if precision == Precision::Bf16 && cpu == CpuKernels::Candle {
            return Err(EncoderError::Precision {
                requested: "bf16".into(),
                message:
                    "bf16 is a mode of Vitrine's CPU kernels; `encoder.cpu_kernels = \"candle\"` runs f32"
                        .into(),
            });
        }
        let isa = if device.is_cpu() { cpu.resolve()? } else { None };
        if let Some(isa) = isa {
            let engine = cpu::load(&st, cfg, isa, precision)?;
            return Ok(Self {
                inner: Towers::Cpu(Box::new(engine)),
            });
        }
        if precision == Precision::Bf16 {
            tracing::warn!(
                device = ?device,
                "encoder.precision = bf16 applies to Vitrine's CPU kernels, which this CPU or device does not \
                 run; the towers run on candle in f32 on CPU (on a GPU, see encoder.gpu_dtype)"
            );
        }
        drop(st); // candle maps the file itself
        let build = |source| EncoderError::ModelBuild {
            path: weights.to_path_buf(),
            source,
        };
        // SAFETY: read-only memory map, see `validate_checkpoint`.
        #[allow(unsafe_code)]
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], dtype, device) }.map_err(build)?;
        let text = ClipTextTransformer::new(vb.pp("text_model"), &cfg.candle_text()).map_err(build)?;
        let vision =
            ClipVisionTransformer::new(vb.pp("vision_model"), &cfg.candle_vision()).map_err(build)?;
        let text_projection = candle_nn::linear_no_bias(
            cfg.text_config.hidden_size,
            cfg.projection_dim,
            vb.pp("text_projection"),
        )
        .map_err(build)?;
        let visual_projection = candle_nn::linear_no_bias(
            cfg.vision_config.hidden_size,
            cfg.projection_dim,
            vb.pp("visual_projection"),
        )
        .map_err(build)?;
        Ok(Self {
            inner: Towers::Candle(Box::new(CandleTowers {
                text,
                vision,
                text_projection,
                visual_projection,
                dtype,
                device: device.clone(),
            })),
        })
    }

    /// What computes the towers: `candle` or `vitrine-<isa>`.
    pub fn backend(&self) -> String {
        match &self.inner {
            Towers::Candle(_) => "candle".into(),
            Towers::Cpu(c) => match c.precision() {
                Precision::F32 => format!("vitrine-{}", c.isa().name()),
                p => format!("vitrine-{}-{}", c.isa().name(), p.name()),
            },
        }
    }

    /// `ids`: `batch × seq` token ids (right-padded); `eos_pos[i]`: pooled index of row
    /// `i`. Returns L2-normalised embeddings, one per row.
    pub fn embed_text_batch(&self, ids: Vec<u32>, seq: usize, eos_pos: &[usize]) -> Result<Vec<Vec<f32>>> {
        let batch = eos_pos.len();
        match &self.inner {
            Towers::Cpu(c) => Ok(normalized_rows(
                c.text_features(&ids, batch, seq, eos_pos)?,
                batch,
            )),
            Towers::Candle(c) => {
                let ids = Tensor::from_vec(ids, (batch, seq), &c.device)?;
                Ok(l2_normalize(&c.text_features(&ids, eos_pos)?)?.to_vec2::<f32>()?)
            }
        }
    }

    /// `pixels`: `batch × 3 × size × size`, preprocessed. Returns L2-normalised
    /// embeddings, one per image.
    pub fn embed_image_batch(&self, pixels: Vec<f32>, batch: usize, size: usize) -> Result<Vec<Vec<f32>>> {
        match &self.inner {
            Towers::Cpu(c) => Ok(normalized_rows(c.image_features(&pixels, batch)?, batch)),
            Towers::Candle(c) => {
                let t = Tensor::from_vec(pixels, (batch, 3, size, size), &c.device)?;
                Ok(l2_normalize(&c.image_features(&t)?)?.to_vec2::<f32>()?)
            }
        }
    }
}

fn mmap(path: &Path) -> Result<MmapedSafetensors> {
    // SAFETY: the file is memory-mapped read-only; like every safetensors loader we assume
    // it is not truncated or rewritten while mapped.
    #[allow(unsafe_code)]
    unsafe { MmapedSafetensors::new(path) }.map_err(|e| EncoderError::CorruptCheckpoint {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Split `batch` rows and L2-normalise each (in f64, guarding all-zero rows).
fn normalized_rows(flat: Vec<f32>, batch: usize) -> Vec<Vec<f32>> {
    let dims = flat.len() / batch.max(1);
    flat.chunks(dims.max(1))
        .map(|row| {
            let norm = row
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
                .sqrt()
                .max(1e-12);
            row.iter().map(|&v| (v as f64 / norm) as f32).collect()
        })
        .collect()
}

impl CandleTowers {
    /// Unnormalised `[batch, projection_dim]` f32 features.
    ///
    /// candle's `ClipTextTransformer::forward` pools at `argmax(ids)`, which is ambiguous
    /// once rows are padded with the eos id and wrong for tokenizers whose eos is not the
    /// largest id; instead we take the final hidden states and gather the explicit eos
    /// position, as HF's `CLIPTextTransformer` does. The causal mask means right padding
    /// never influences positions `<= eos_pos`.
    fn text_features(&self, ids: &Tensor, eos_pos: &[usize]) -> Result<Tensor> {
        let (bsz, seq) = ids.dims2()?;
        let hidden = self.text.forward_with_mask(ids, usize::MAX)?; // [b, seq, h]
        let flat = hidden.reshape((bsz * seq, ()))?;
        let idx: Vec<u32> = eos_pos
            .iter()
            .enumerate()
            .map(|(b, &p)| (b * seq + p) as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), &self.device)?;
        let pooled = flat.index_select(&idx, 0)?;
        Ok(self.text_projection.forward(&pooled)?.to_dtype(DType::F32)?)
    }

    /// `pixels`: `[batch, 3, size, size]` f32. Returns unnormalised f32 features.
    fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        let pixels = pixels.to_dtype(self.dtype)?;
        let pooled = self.vision.forward(&pixels)?;
        Ok(self.visual_projection.forward(&pooled)?.to_dtype(DType::F32)?)
    }
}

/// Row-wise L2 normalisation (in f32), guarding against all-zero rows.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
