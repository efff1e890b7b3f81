//! Vitrine's own CPU forward pass for the CLIP towers, on `vitrine-kernels`.
//!
//! Same architecture and weights as Hugging Face's `CLIPModel` (and candle-transformers'
//! CLIP, which the service keeps for CUDA and as the oracle in its tests), computed with
//! what a CPU rewards:
//! - every linear layer's weight packed once, at load, into the GEMM's panel layout (in
//!   f32 or bf16), so a short text query streams each weight exactly once;
//! - q, k and v projections fused into one GEMM, the attention scale folded into the
//!   query weights;
//! - bias, quick-GELU and residual additions applied to the GEMM's register tiles;
//! - the last layer computes only the pooled token (CLS, or the text's end-of-text):
//!   the other positions' outputs are never read.
//!
//! The crate knows no file format: [`CpuClip::load`] asks its caller for each tensor by
//! its Hugging Face name ([`tensors`] lists them with their shapes). It is small enough
//! to cross-compile and test on its own, which is how the NEON path is checked under
//! `qemu-aarch64` in CI (`tests/parity.rs`: every instruction set against the portable
//! kernels on a tiny CLIP).

use vitrine_kernels::{self as kernels, AlignedBuf, Epilogue, Isa, PackedB, Precision};

/// What can go wrong in this crate (a caller's own loading errors pass through as `E`
/// in [`CpuClip::load`]).
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    /// The CPU cannot run the requested instruction set.
    #[error("this CPU does not support the {} instruction set", .0.name())]
    Unsupported(Isa),
    /// A tensor handed over has the wrong number of values.
    #[error("tensor `{name}` has {actual} values, expected {expected}")]
    TensorSize {
        name: String,
        expected: usize,
        actual: usize,
    },
    /// Inputs that disagree with the model or with each other.
    #[error("{0}")]
    Input(String),
}

/// One transformer tower's sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TowerDims {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub layer_norm_eps: f64,
}

/// The sizes of a CLIP checkpoint (Hugging Face `config.json`'s fields).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClipDims {
    pub text: TowerDims,
    pub vocab: usize,
    pub max_positions: usize,
    pub vision: TowerDims,
    pub channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub projection: usize,
}

impl ClipDims {
    /// Sizes the forward pass can run: every width, count and size positive, each
    /// tower's width a multiple of its heads, the image a whole number of patches.
    pub fn check(&self) -> Result<(), ClipError> {
        let bad = |what: &str| Err(ClipError::Input(format!("CLIP dimensions: {what}")));
        for (tower, t) in [("text", &self.text), ("vision", &self.vision)] {
            if t.hidden == 0 || t.intermediate == 0 || t.heads == 0 || !t.hidden.is_multiple_of(t.heads) {
                return bad(&format!(
                    "the {tower} tower's width must be a positive multiple of its heads"
                ));
            }
        }
        if self.vocab == 0 || self.max_positions == 0 || self.channels == 0 || self.projection == 0 {
            return bad("vocabulary, positions, channels and projection must be positive");
        }
        if self.patch_size == 0
            || self.image_size < self.patch_size
            || !self.image_size.is_multiple_of(self.patch_size)
        {
            return bad("the image size must be a positive multiple of the patch size");
        }
        Ok(())
    }
}

/// Every tensor the towers and projections need, with its shape, named as in Hugging
/// Face's CLIP checkpoints. Other tensors a checkpoint holds (e.g. `logit_scale`,
/// `position_ids`) are not needed for embeddings.
pub fn tensors(d: &ClipDims) -> Vec<(String, Vec<usize>)> {
    let mut out = Vec::new();
    let mut push = |name: String, shape: Vec<usize>| out.push((name, shape));
    let encoder = |push: &mut dyn FnMut(String, Vec<usize>), prefix: &str, t: &TowerDims| {
        let (h, inter) = (t.hidden, t.intermediate);
        for i in 0..t.layers {
            let p = format!("{prefix}.encoder.layers.{i}");
            for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                push(format!("{p}.self_attn.{proj}.weight"), vec![h, h]);
                push(format!("{p}.self_attn.{proj}.bias"), vec![h]);
            }
            for ln in ["layer_norm1", "layer_norm2"] {
                push(format!("{p}.{ln}.weight"), vec![h]);
                push(format!("{p}.{ln}.bias"), vec![h]);
            }
            push(format!("{p}.mlp.fc1.weight"), vec![inter, h]);
            push(format!("{p}.mlp.fc1.bias"), vec![inter]);
            push(format!("{p}.mlp.fc2.weight"), vec![h, inter]);
            push(format!("{p}.mlp.fc2.bias"), vec![h]);
        }
    };
    let th = d.text.hidden;
    push(
        "text_model.embeddings.token_embedding.weight".into(),
        vec![d.vocab, th],
    );
    push(
        "text_model.embeddings.position_embedding.weight".into(),
        vec![d.max_positions, th],
    );
    encoder(&mut push, "text_model", &d.text);
    push("text_model.final_layer_norm.weight".into(), vec![th]);
    push("text_model.final_layer_norm.bias".into(), vec![th]);

    let vh = d.vision.hidden;
    let patches = (d.image_size / d.patch_size).pow(2);
    push("vision_model.embeddings.class_embedding".into(), vec![vh]);
    push(
        "vision_model.embeddings.patch_embedding.weight".into(),
        vec![vh, d.channels, d.patch_size, d.patch_size],
    );
    push(
        "vision_model.embeddings.position_embedding.weight".into(),
        vec![patches + 1, vh],
    );
    // Sic: HF spells the pre-encoder LayerNorm "pre_layrnorm".
    push("vision_model.pre_layrnorm.weight".into(), vec![vh]);
    push("vision_model.pre_layrnorm.bias".into(), vec![vh]);
    encoder(&mut push, "vision_model", &d.vision);
    push("vision_model.post_layernorm.weight".into(), vec![vh]);
    push("vision_model.post_layernorm.bias".into(), vec![vh]);
    push("visual_projection.weight".into(), vec![d.projection, vh]);
    push("text_projection.weight".into(), vec![d.projection, th]);
    out
}

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
    precision: Precision,
    text: TextTower,
    vision: VisionTower,
}

impl std::fmt::Debug for CpuClip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuClip")
            .field("isa", &self.isa)
            .field("precision", &self.precision)
            .finish_non_exhaustive()
    }
}

/// Hands out tensors as f32 by name, checking their sizes; packs linear layers' weights
/// in `precision`.
struct Weights<F> {
    get: F,
    precision: Precision,
}

impl<E: From<ClipError>, F: FnMut(&str) -> Result<Vec<f32>, E>> Weights<F> {
    fn get(&mut self, name: &str, len: usize) -> Result<Vec<f32>, E> {
        let v = (self.get)(name)?;
        if v.len() != len {
            return Err(ClipError::TensorSize {
                name: name.into(),
                expected: len,
                actual: v.len(),
            }
            .into());
        }
        Ok(v)
    }

    fn norm(&mut self, prefix: &str, h: usize) -> Result<Norm, E> {
        Ok(Norm {
            gamma: self.get(&format!("{prefix}.weight"), h)?,
            beta: self.get(&format!("{prefix}.bias"), h)?,
        })
    }

    /// `[n, k]` weight and optional bias.
    fn linear(&mut self, prefix: &str, n: usize, k: usize, bias: bool) -> Result<Linear, E> {
        let w = self.get(&format!("{prefix}.weight"), n * k)?;
        Ok(Linear {
            weight: PackedB::from_weight_as(&w, n, k, self.precision),
            bias: if bias {
                Some(self.get(&format!("{prefix}.bias"), n)?)
            } else {
                None
            },
        })
    }

    fn transformer(&mut self, prefix: &str, t: &TowerDims) -> Result<Transformer, E> {
        let (hidden, intermediate) = (t.hidden, t.intermediate);
        let scale = ((hidden / t.heads) as f32).powf(-0.5);
        let layers = (0..t.layers)
            .map(|i| {
                let p = format!("{prefix}.encoder.layers.{i}");
                // q|k|v stacked into one [3h, h] weight; q (weight and bias) pre-scaled,
                // as HF scales the projected queries.
                let mut w = Vec::with_capacity(3 * hidden * hidden);
                let mut b = Vec::with_capacity(3 * hidden);
                for (proj, s) in [("q_proj", scale), ("k_proj", 1.0), ("v_proj", 1.0)] {
                    w.extend(
                        self.get(&format!("{p}.self_attn.{proj}.weight"), hidden * hidden)?
                            .into_iter()
                            .map(|v| v * s),
                    );
                    b.extend(
                        self.get(&format!("{p}.self_attn.{proj}.bias"), hidden)?
                            .into_iter()
                            .map(|v| v * s),
                    );
                }
                Ok(Layer {
                    ln1: self.norm(&format!("{p}.layer_norm1"), hidden)?,
                    qkv: Linear {
                        weight: PackedB::from_weight_as(&w, 3 * hidden, hidden, self.precision),
                        bias: Some(b),
                    },
                    out: self.linear(&format!("{p}.self_attn.out_proj"), hidden, hidden, true)?,
                    ln2: self.norm(&format!("{p}.layer_norm2"), hidden)?,
                    fc1: self.linear(&format!("{p}.mlp.fc1"), intermediate, hidden, true)?,
                    fc2: self.linear(&format!("{p}.mlp.fc2"), hidden, intermediate, true)?,
                })
            })
            .collect::<Result<Vec<_>, E>>()?;
        Ok(Transformer {
            layers,
            hidden,
            intermediate,
            heads: t.heads,
            eps: t.layer_norm_eps as f32,
        })
    }
}

impl CpuClip {
    /// Load and pack every weight (linear layers in `precision`; embeddings, norms and
    /// biases stay f32). `get` hands over each tensor of [`tensors`] by name, as f32
    /// values in row-major order.
    pub fn load<E, F>(dims: &ClipDims, isa: Isa, precision: Precision, get: F) -> Result<Self, E>
    where
        E: From<ClipError>,
        F: FnMut(&str) -> Result<Vec<f32>, E>,
    {
        if !isa.available() {
            return Err(ClipError::Unsupported(isa).into());
        }
        dims.check()?;
        let mut w = Weights { get, precision };
        let d = dims;
        let (th, vh) = (d.text.hidden, d.vision.hidden);
        let patches = (d.image_size / d.patch_size).pow(2);
        let text = TextTower {
            token_embedding: w.get("text_model.embeddings.token_embedding.weight", d.vocab * th)?,
            position_embedding: w.get(
                "text_model.embeddings.position_embedding.weight",
                d.max_positions * th,
            )?,
            vocab: d.vocab,
            max_positions: d.max_positions,
            transformer: w.transformer("text_model", &d.text)?,
            final_ln: w.norm("text_model.final_layer_norm", th)?,
            projection: w.linear("text_projection", d.projection, th, false)?,
        };
        let vision = VisionTower {
            class_embedding: w.get("vision_model.embeddings.class_embedding", vh)?,
            patch: w.linear(
                "vision_model.embeddings.patch_embedding",
                vh,
                d.channels * d.patch_size * d.patch_size,
                false,
            )?,
            position_embedding: w.get(
                "vision_model.embeddings.position_embedding.weight",
                (patches + 1) * vh,
            )?,
            channels: d.channels,
            image_size: d.image_size,
            patch_size: d.patch_size,
            pre_ln: w.norm("vision_model.pre_layrnorm", vh)?,
            transformer: w.transformer("vision_model", &d.vision)?,
            post_ln: w.norm("vision_model.post_layernorm", vh)?,
            projection: w.linear("visual_projection", d.projection, vh, false)?,
        };
        Ok(Self {
            isa,
            precision,
            text,
            vision,
        })
    }

    pub fn isa(&self) -> Isa {
        self.isa
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// `ids`: `batch × seq` token ids (right-padded); `eos_pos[b]`: the pooled position of
    /// row `b`. Returns `batch` unnormalised feature rows.
    pub fn text_features(
        &self,
        ids: &[u32],
        batch: usize,
        seq: usize,
        eos_pos: &[usize],
    ) -> Result<Vec<f32>, ClipError> {
        let t = &self.text;
        let h = t.transformer.hidden;
        if batch.checked_mul(seq) != Some(ids.len())
            || eos_pos.len() != batch
            || eos_pos.iter().any(|&p| p >= seq)
        {
            return Err(ClipError::Input(
                "token ids, batch shape and end-of-text positions disagree".into(),
            ));
        }
        if batch == 0 {
            return Ok(Vec::new());
        }
        if seq > t.max_positions {
            return Err(ClipError::Input(format!(
                "{seq} tokens exceed the model's {} positions",
                t.max_positions
            )));
        }
        let mut x = vec![0f32; batch * seq * h];
        for (i, (&id, row)) in ids.iter().zip(x.chunks_mut(h)).enumerate() {
            let id = id as usize;
            if id >= t.vocab {
                return Err(ClipError::Input(format!(
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
    pub fn image_features(&self, pixels: &[f32], batch: usize) -> Result<Vec<f32>, ClipError> {
        let v = &self.vision;
        let (c, s, p) = (v.channels, v.image_size, v.patch_size);
        if batch.checked_mul(c * s * s) != Some(pixels.len()) {
            return Err(ClipError::Input(format!(
                "pixel values are not {batch} × {c} × {s} × {s}"
            )));
        }
        if batch == 0 {
            return Ok(Vec::new());
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
