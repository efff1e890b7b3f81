//! Vitrine's own CPU forward pass for the CLIP towers, on `vitrine-kernels`.
//!
//! Same architecture and weights as candle-transformers' CLIP (which stays the path for
//! CUDA and for CPUs without AVX-512), computed with what a CPU rewards:
//! - every linear layer's weight packed once, at load, into the GEMM's panel layout, so
//!   a short text query streams each weight exactly once;
//! - q, k and v projections fused into one GEMM, the attention scale folded into the
//!   query weights;
//! - bias, quick-GELU and residual additions applied to the GEMM's register tiles;
//! - the last layer computes only the pooled token (CLS, or the text's end-of-text):
//!   the other positions' outputs are never read.
//!
//! Parity with the candle path is a test (`cpu_engine_matches_candle_*`).

use candle_core::{DType, Device, safetensors::MmapedSafetensors};
use vitrine_kernels::{self as kernels, AlignedBuf, Epilogue, Isa, PackedB};

use super::config::HfClipConfig;
use super::error::{EncoderError, Result};

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

struct Linear {
    weight: PackedB,
    bias: Option<Vec<f32>>,
}

impl Linear {
    /// `x` (`m` rows of `weight.k()`) through the layer into `out` (`m` rows of
    /// `weight.n()`), with the given epilogue.
    fn run(&self, isa: Isa, x: &[f32], m: usize, epi: Epilogue, out: &mut [f32], scratch: &mut AlignedBuf) {
        let w = &self.weight;
        kernels::matmul(
            isa,
            x,
            m,
            w.k(),
            w,
            self.bias.as_deref(),
            epi,
            out,
            w.n(),
            true,
            scratch,
        );
    }
}

struct Layer {
    ln1: Norm,
    qkv: Linear,
    out: Linear,
    ln2: Norm,
    fc1: Linear,
    fc2: Linear,
}

struct Transformer {
    layers: Vec<Layer>,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f32,
}

struct TextTower {
    token_embedding: Vec<f32>,
    position_embedding: Vec<f32>,
    vocab: usize,
    max_positions: usize,
    transformer: Transformer,
    final_ln: Norm,
    projection: Linear,
}

struct VisionTower {
    class_embedding: Vec<f32>,
    patch: Linear,
    position_embedding: Vec<f32>,
    channels: usize,
    image_size: usize,
    patch_size: usize,
    pre_ln: Norm,
    transformer: Transformer,
    post_ln: Norm,
    projection: Linear,
}

/// Both towers and projections, weights packed for the kernels.
pub struct CpuClip {
    isa: Isa,
    text: TextTower,
    vision: VisionTower,
}

impl std::fmt::Debug for CpuClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuClip")
            .field("isa", &self.isa)
            .finish_non_exhaustive()
    }
}

/// Reads tensors (any float dtype) as f32 from the memory-mapped checkpoint.
struct Weights<'a>(&'a MmapedSafetensors);

impl Weights<'_> {
    fn get(&self, name: &str) -> Result<Vec<f32>> {
        let t = self.0.load(name, &Device::Cpu)?;
        Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }

    fn norm(&self, prefix: &str) -> Result<Norm> {
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.weight"))?,
            beta: self.get(&format!("{prefix}.bias"))?,
        })
    }

    /// `[n, k]` weight (optionally scaled) and optional bias.
    fn linear(&self, prefix: &str, n: usize, k: usize, bias: bool) -> Result<Linear> {
        let w = self.get(&format!("{prefix}.weight"))?;
        Ok(Linear {
            weight: PackedB::from_weight(&w, n, k),
            bias: if bias {
                Some(self.get(&format!("{prefix}.bias"))?)
            } else {
                None
            },
        })
    }

    fn transformer(
        &self,
        prefix: &str,
        hidden: usize,
        intermediate: usize,
        layers: usize,
        heads: usize,
        eps: f64,
    ) -> Result<Transformer> {
        let scale = ((hidden / heads) as f32).powf(-0.5);
        let layers = (0..layers)
            .map(|i| {
                let p = format!("{prefix}.encoder.layers.{i}");
                // q|k|v stacked into one [3h, h] weight; q (weight and bias) pre-scaled,
                // as HF scales the projected queries.
                let mut w = Vec::with_capacity(3 * hidden * hidden);
                let mut b = Vec::with_capacity(3 * hidden);
                for (proj, s) in [("q_proj", scale), ("k_proj", 1.0), ("v_proj", 1.0)] {
                    w.extend(
                        self.get(&format!("{p}.self_attn.{proj}.weight"))?
                            .into_iter()
                            .map(|v| v * s),
                    );
                    b.extend(
                        self.get(&format!("{p}.self_attn.{proj}.bias"))?
                            .into_iter()
                            .map(|v| v * s),
                    );
                }
                Ok(Layer {
                    ln1: self.norm(&format!("{p}.layer_norm1"))?,
                    qkv: Linear {
                        weight: PackedB::from_weight(&w, 3 * hidden, hidden),
                        bias: Some(b),
                    },
                    out: self.linear(&format!("{p}.self_attn.out_proj"), hidden, hidden, true)?,
                    ln2: self.norm(&format!("{p}.layer_norm2"))?,
                    fc1: self.linear(&format!("{p}.mlp.fc1"), intermediate, hidden, true)?,
                    fc2: self.linear(&format!("{p}.mlp.fc2"), hidden, intermediate, true)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer {
            layers,
            hidden,
            intermediate,
            heads,
            eps: eps as f32,
        })
    }
}

impl CpuClip {
    /// Load and pack every weight. The checkpoint must already have passed
    /// `validate_checkpoint` (names and shapes), and `isa` must be available.
    pub fn load(st: &MmapedSafetensors, cfg: &HfClipConfig, isa: Isa) -> Result<Self> {
        if !isa.available() {
            return Err(EncoderError::CpuKernels {
                requested: format!("vitrine ({isa:?})"),
                message: "this CPU does not support that instruction set".into(),
            });
        }
        let w = Weights(st);
        let (t, v) = (&cfg.text_config, &cfg.vision_config);
        let text = TextTower {
            token_embedding: w.get("text_model.embeddings.token_embedding.weight")?,
            position_embedding: w.get("text_model.embeddings.position_embedding.weight")?,
            vocab: t.vocab_size,
            max_positions: t.max_position_embeddings,
            transformer: w.transformer(
                "text_model",
                t.hidden_size,
                t.intermediate_size,
                t.num_hidden_layers,
                t.num_attention_heads,
                t.layer_norm_eps,
            )?,
            final_ln: w.norm("text_model.final_layer_norm")?,
            projection: w.linear("text_projection", cfg.projection_dim, t.hidden_size, false)?,
        };
        let vision = VisionTower {
            class_embedding: w.get("vision_model.embeddings.class_embedding")?,
            patch: w.linear(
                "vision_model.embeddings.patch_embedding",
                v.hidden_size,
                v.num_channels * v.patch_size * v.patch_size,
                false,
            )?,
            position_embedding: w.get("vision_model.embeddings.position_embedding.weight")?,
            channels: v.num_channels,
            image_size: v.image_size,
            patch_size: v.patch_size,
            pre_ln: w.norm("vision_model.pre_layrnorm")?,
            transformer: w.transformer(
                "vision_model",
                v.hidden_size,
                v.intermediate_size,
                v.num_hidden_layers,
                v.num_attention_heads,
                v.layer_norm_eps,
            )?,
            post_ln: w.norm("vision_model.post_layernorm")?,
            projection: w.linear("visual_projection", cfg.projection_dim, v.hidden_size, false)?,
        };
        Ok(Self { isa, text, vision })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `ids`: `batch × seq` token ids (right-padded); `eos_pos[b]`: the pooled position of
    /// row `b`. Returns `batch` unnormalised feature rows.
    pub fn text_features(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        eos_pos: &[usize],
    ) -> Result<Vec<f32>> {
        let t = &self.text;
        let h = t.transformer.hidden;
        if ids.len() != batch * seq || eos_pos.len() != batch || eos_pos.iter().any(|&p| p >= seq) {
            return Err(EncoderError::Internal(
                "token ids, batch shape and end-of-text positions disagree".into(),
            ));
        }
        if seq > t.max_positions {
            return Err(EncoderError::Internal(format!(
                "{seq} tokens exceed the model's {} positions",
                t.max_positions
            )));
        }
        let mut x = vec![0f32; batch * seq * h];
        for (i, (&id, row)) in ids.iter().zip(x.chunks_mut(h)).enumerate() {
            let id = id as usize;
            if id >= t.vocab {
                return Err(EncoderError::Internal(format!(
                    "token id {id} outside the vocabulary of {}",
                    t.vocab
                )));
            }
            let pos = i % seq;
            let tok = &t.token_embedding[id * h..(id + 1) * h];
            let p = &t.position_embedding[pos * h..(pos + 1) * h];
            for ((o, a), b) in row.iter_mut().zip(tok).zip(p) {
                *o = a + b;
            }
        }
        let pooled = t.transformer.forward(self.isa, x, batch, seq, true, eos_pos);
        Ok(self.head(&pooled, batch, &t.final_ln, t.transformer.eps, &t.projection))
    }

    /// `pixels`: `batch × channels × size × size`, preprocessed. Returns `batch`
    /// unnormalised feature rows.
    pub fn image_features(&self, pixels: &[f32], batch: usize) -> Result<Vec<f32>> {
        let v = &self.vision;
        let (c, s, p) = (v.channels, v.image_size, v.patch_size);
        if pixels.len() != batch * c * s * s {
            return Err(EncoderError::Internal(format!(
                "pixel values are not {batch} × {c} × {s} × {s}"
            )));
        }
        let h = v.transformer.hidden;
        let g = s / p;
        let patches = g * g;
        let seq = patches + 1;
        let kdim = c * p * p;
        // im2col: one row per patch, in the conv weight's (channel, y, x) order.
        let mut cols = vec![0f32; batch * patches * kdim];
        for (idx, row) in cols.chunks_mut(kdim).enumerate() {
            let (b, patch) = (idx / patches, idx % patches);
            let (gy, gx) = (patch / g, patch % g);
            for ch in 0..c {
                for ky in 0..p {
                    let src = ((b * c + ch) * s + gy * p + ky) * s + gx * p;
                    let dst = (ch * p + ky) * p;
                    row[dst..dst + p].copy_from_slice(&pixels[src..src + p]);
                }
            }
        }
        let mut emb = vec![0f32; batch * patches * h];
        let mut scratch = AlignedBuf::default();
        v.patch.run(
            self.isa,
            &cols,
            batch * patches,
            Epilogue::Store,
            &mut emb,
            &mut scratch,
        );
        drop(cols);
        let mut x = vec![0f32; batch * seq * h];
        for (idx, row) in x.chunks_mut(h).enumerate() {
            let (b, t) = (idx / seq, idx % seq);
            let src = if t == 0 {
                &v.class_embedding[..]
            } else {
                &emb[(b * patches + t - 1) * h..(b * patches + t) * h]
            };
            let pos = &v.position_embedding[t * h..(t + 1) * h];
            for ((o, a), b) in row.iter_mut().zip(src).zip(pos) {
                *o = a + b;
            }
        }
        drop(emb);
        let mut normed = vec![0f32; x.len()];
        kernels::layer_norm(
            self.isa,
            &x,
            h,
            &v.pre_ln.gamma,
            &v.pre_ln.beta,
            v.transformer.eps,
            &mut normed,
        );
        let pooled = v
            .transformer
            .forward(self.isa, normed, batch, seq, false, &vec![0; batch]);
        Ok(self.head(&pooled, batch, &v.post_ln, v.transformer.eps, &v.projection))
    }

    /// Final LayerNorm of the pooled rows, then the projection.
    fn head(&self, pooled: &[f32], batch: usize, ln: &Norm, eps: f32, projection: &Linear) -> Vec<f32> {
        let h = ln.gamma.len();
        let mut normed = vec![0f32; pooled.len()];
        kernels::layer_norm(self.isa, pooled, h, &ln.gamma, &ln.beta, eps, &mut normed);
        let mut out = vec![0f32; batch * projection.weight.n()];
        projection.run(
            self.isa,
            &normed,
            batch,
            Epilogue::Store,
            &mut out,
            &mut AlignedBuf::default(),
        );
        out
    }
}

impl Transformer {
    /// Run every layer over `x` (`batch × seq` rows) and return the rows at `pooled`
    /// (one position per sequence) after the last layer.
    fn forward(
        &self,
        isa: Isa,
        mut x: Vec<f32>,
        batch: usize,
        seq: usize,
        causal: bool,
        pooled: &[usize],
    ) -> Vec<f32> {
        let (h, m) = (self.hidden, batch * seq);
        let gather = |x: &[f32]| -> Vec<f32> {
            pooled
                .iter()
                .enumerate()
                .flat_map(|(b, &p)| x[(b * seq + p) * h..(b * seq + p + 1) * h].iter().copied())
                .collect()
        };
        let Some((last, rest)) = self.layers.split_last() else {
            return gather(&x);
        };
        let mut scratch = AlignedBuf::default();
        let mut normed = vec![0f32; m * h];
        let mut qkv = vec![0f32; m * 3 * h];
        let mut attn = vec![0f32; m * h];
        let mut mlp = vec![0f32; m * self.intermediate];
        for layer in rest {
            kernels::layer_norm(
                isa,
                &x,
                h,
                &layer.ln1.gamma,
                &layer.ln1.beta,
                self.eps,
                &mut normed,
            );
            layer
                .qkv
                .run(isa, &normed, m, Epilogue::Store, &mut qkv, &mut scratch);
            kernels::attention(isa, &qkv, batch, seq, self.heads, causal, None, &mut attn);
            layer
                .out
                .run(isa, &attn, m, Epilogue::Accumulate, &mut x, &mut scratch);
            kernels::layer_norm(
                isa,
                &x,
                h,
                &layer.ln2.gamma,
                &layer.ln2.beta,
                self.eps,
                &mut normed,
            );
            layer
                .fc1
                .run(isa, &normed, m, Epilogue::QuickGelu, &mut mlp, &mut scratch);
            layer
                .fc2
                .run(isa, &mlp, m, Epilogue::Accumulate, &mut x, &mut scratch);
        }
        // Last layer: keys and values for every position, everything else for the pooled
        // position only.
        kernels::layer_norm(isa, &x, h, &last.ln1.gamma, &last.ln1.beta, self.eps, &mut normed);
        last.qkv
            .run(isa, &normed, m, Epilogue::Store, &mut qkv, &mut scratch);
        let mut y = gather(&x);
        let rows = batch * h;
        kernels::attention(
            isa,
            &qkv,
            batch,
            seq,
            self.heads,
            causal,
            Some(pooled),
            &mut attn[..rows],
        );
        last.out.run(
            isa,
            &attn[..rows],
            batch,
            Epilogue::Accumulate,
            &mut y,
            &mut scratch,
        );
        kernels::layer_norm(
            isa,
            &y,
            h,
            &last.ln2.gamma,
            &last.ln2.beta,
            self.eps,
            &mut normed[..rows],
        );
        let mlp = &mut mlp[..batch * self.intermediate];
        last.fc1.run(
            isa,
            &normed[..rows],
            batch,
            Epilogue::QuickGelu,
            mlp,
            &mut scratch,
        );
        last.fc2
            .run(isa, mlp, batch, Epilogue::Accumulate, &mut y, &mut scratch);
        y
    }
}
