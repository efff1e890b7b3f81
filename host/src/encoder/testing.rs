//! Test helpers shared with the service's tests: writes a tiny but architecturally real
//! CLIP checkpoint (HF `config.json`, `model.safetensors`, CLIP-style byte-level BPE
//! `tokenizer.json`, `preprocessor_config.json`) with deterministic random weights.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use super::config::{HfClipConfig, HfTextConfig, HfVisionConfig};
use super::model::expected_tensors;

/// Sizes of the tiny checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TinyClipSpec {
    pub text_hidden: usize,
    pub text_layers: usize,
    pub text_heads: usize,
    pub text_intermediate: usize,
    pub max_position_embeddings: usize,
    pub vision_hidden: usize,
    pub vision_layers: usize,
    pub vision_heads: usize,
    pub vision_intermediate: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub projection_dim: usize,
    pub seed: u64,
    /// Also write `preprocessor_config.json` (otherwise defaults from `image_size` apply).
    pub write_preprocessor_config: bool,
}

impl Default for TinyClipSpec {
    fn default() -> Self {
        Self {
            text_hidden: 32,
            text_layers: 2,
            text_heads: 2,
            text_intermediate: 64,
            max_position_embeddings: 77,
            vision_hidden: 48,
            vision_layers: 2,
            vision_heads: 2,
            vision_intermediate: 96,
            image_size: 32,
            patch_size: 8,
            projection_dim: 16,
            seed: 0,
            write_preprocessor_config: true,
        }
    }
}

impl TinyClipSpec {
    /// The architecture and size of openai/clip-vit-base-patch32 (ViT-B/32
    /// vision tower, 12-layer 512-wide text tower, 512-d projection), with
    /// random weights and the small test vocabulary: for speed benchmarks,
    /// where only the shapes matter.
    pub fn vit_b32() -> Self {
        Self {
            text_hidden: 512,
            text_layers: 12,
            text_heads: 8,
            text_intermediate: 2048,
            max_position_embeddings: 77,
            vision_hidden: 768,
            vision_layers: 12,
            vision_heads: 12,
            vision_intermediate: 3072,
            image_size: 224,
            patch_size: 32,
            projection_dim: 512,
            seed: 0,
            write_preprocessor_config: true,
        }
    }
}

/// Words that get whole-word BPE merges in the tiny vocabulary; everything else
/// tokenises to single byte-level characters.
pub const TINY_WORDS: [&str; 10] = [
    "a", "red", "shoe", "the", "dress", "blue", "leather", "bag", "with", "photo",
];

/// GPT-2 / CLIP `bytes_to_unicode`: printable bytes map to themselves, the rest to 256+n.
pub fn bytes_to_unicode() -> Vec<(u8, char)> {
    let mut printable: Vec<u32> = (u32::from(b'!')..=u32::from(b'~')).collect();
    printable.extend(0xA1..=0xAC);
    printable.extend(0xAE..=0xFF);
    let mut out = Vec::with_capacity(256);
    let mut n = 0;
    for b in 0u32..256 {
        let c = if printable.contains(&b) {
            b
        } else {
            n += 1;
            255 + n
        };
        out.push((b as u8, char::from_u32(c).unwrap_or('?')));
    }
    // CLIP orders the base vocabulary printable-first, like `bytes_to_unicode().values()`.
    out.sort_by_key(|&(b, _)| !printable.contains(&u32::from(b)));
    out
}

/// A CLIP-structured `tokenizer.json` (NFC + whitespace collapse + lowercase normaliser,
/// CLIP split regex + byte-level pre-tokeniser, BPE with `</w>` suffix, RobertaProcessing
/// adding `<|startoftext|>` / `<|endoftext|>`). Returns the JSON and the vocabulary size.
pub fn tiny_tokenizer_json() -> (Value, usize) {
    let mut vocab: Vec<String> = Vec::new();
    let base: Vec<String> = bytes_to_unicode().iter().map(|&(_, c)| c.to_string()).collect();
    vocab.extend(base.iter().cloned());
    vocab.extend(base.iter().map(|c| format!("{c}</w>")));
    let mut merges: Vec<String> = Vec::new();
    for word in TINY_WORDS {
        let chars: Vec<char> = word.chars().collect();
        let mut pieces: Vec<String> = chars.iter().map(|c| c.to_string()).collect();
        if let Some(last) = pieces.last_mut() {
            last.push_str("</w>");
        }
        while pieces.len() > 1 {
            let merged = format!("{}{}", pieces[0], pieces[1]);
            let rule = format!("{} {}", pieces[0], pieces[1]);
            if !merges.contains(&rule) {
                merges.push(rule);
            }
            if !vocab.contains(&merged) {
                vocab.push(merged.clone());
            }
            pieces.splice(0..2, [merged]);
        }
    }
    let sot = vocab.len();
    let eot = sot + 1;
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let vocab_map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added = |id: usize, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false,
               "rstrip": false, "normalized": true, "special": true})
    };
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [added(sot, "<|startoftext|>"), added(eot, "<|endoftext|>")],
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "NFC"},
            {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Lowercase"}
        ]},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex":
                "<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"},
             "behavior": "Removed", "invert": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": {"type": "RobertaProcessing",
            "sep": ["<|endoftext|>", eot], "cls": ["<|startoftext|>", sot],
            "trim_offsets": false, "add_prefix_space": false},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "", "end_of_word_suffix": "</w>", "fuse_unk": false,
            "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab_map, "merges": merges}
    });
    (tok, vocab.len())
}

/// The HF config for `spec` with the given vocabulary size.
pub fn tiny_config(spec: &TinyClipSpec, vocab_size: usize) -> HfClipConfig {
    HfClipConfig {
        text_config: HfTextConfig {
            vocab_size,
            hidden_size: spec.text_hidden,
            intermediate_size: spec.text_intermediate,
            num_hidden_layers: spec.text_layers,
            num_attention_heads: spec.text_heads,
            max_position_embeddings: spec.max_position_embeddings,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            pad_token_id: Some(vocab_size as u32 - 1),
            bos_token_id: Some(vocab_size as u32 - 2),
            eos_token_id: Some(vocab_size as u32 - 1),
        },
        vision_config: HfVisionConfig {
            hidden_size: spec.vision_hidden,
            intermediate_size: spec.vision_intermediate,
            num_hidden_layers: spec.vision_layers,
            num_attention_heads: spec.vision_heads,
            num_channels: 3,
            image_size: spec.image_size,
            patch_size: spec.patch_size,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
        },
        projection_dim: spec.projection_dim,
        logit_scale_init_value: 2.6592,
    }
}

/// `config.json` as HF writes it (model_type fields included).
pub fn config_json(cfg: &HfClipConfig) -> Value {
    let mut v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    v["architectures"] = json!(["CLIPModel"]);
    v["model_type"] = json!("clip");
    v["text_config"]["model_type"] = json!("clip_text_model");
    v["vision_config"]["model_type"] = json!("clip_vision_model");
    v
}

/// SplitMix64: tiny deterministic PRNG so the checkpoint is identical on every platform.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // uniform in [-1, 1)
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Deterministic random tensors for every name in [`expected_tensors`] plus `logit_scale`.
pub fn tiny_tensors(cfg: &HfClipConfig, seed: u64) -> candle_core::Result<HashMap<String, Tensor>> {
    let mut rng = SplitMix64(seed);
    let mut out = HashMap::new();
    for (name, shape) in expected_tensors(cfg) {
        let n: usize = shape.iter().product();
        let fan_in = if shape.len() >= 2 {
            shape[1..].iter().product::<usize>()
        } else {
            1
        };
        let (offset, scale) =
            if name.contains("layer_norm") || name.contains("layrnorm") || name.contains("layernorm") {
                if name.ends_with("weight") {
                    (1.0, 0.1)
                } else {
                    (0.0, 0.1)
                }
            } else if name.contains("embedding") {
                (0.0, 0.5)
            } else {
                (0.0, 1.7 / (fan_in as f32).sqrt())
            };
        let data: Vec<f32> = (0..n).map(|_| offset + scale * rng.next_f32()).collect();
        out.insert(name, Tensor::from_vec(data, shape, &Device::Cpu)?);
    }
    out.insert(
        "logit_scale".into(),
        Tensor::new(cfg.logit_scale_init_value as f32, &Device::Cpu)?,
    );
    Ok(out)
}

fn other<E: std::fmt::Display>(e: E) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

/// Write a safetensors file from named tensors.
pub fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) -> std::io::Result<()> {
    candle_core::safetensors::save(tensors, path).map_err(other)
}

/// Write a complete tiny checkpoint into `dir` (created if needed); returns its config.
pub fn write_tiny_checkpoint(dir: &Path, spec: &TinyClipSpec) -> std::io::Result<HfClipConfig> {
    std::fs::create_dir_all(dir)?;
    let (tok, vocab_size) = tiny_tokenizer_json();
    let cfg = tiny_config(spec, vocab_size);
    std::fs::write(
        dir.join("tokenizer.json"),
        serde_json::to_vec_pretty(&tok).map_err(other)?,
    )?;
    std::fs::write(
        dir.join("config.json"),
        serde_json::to_vec_pretty(&config_json(&cfg)).map_err(other)?,
    )?;
    if spec.write_preprocessor_config {
        let pp = json!({
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": true, "size": {"shortest_edge": spec.image_size}, "resample": 3,
            "do_center_crop": true, "crop_size": {"height": spec.image_size, "width": spec.image_size},
            "do_rescale": true, "rescale_factor": 1.0 / 255.0,
            "do_normalize": true,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "do_convert_rgb": true
        });
        std::fs::write(
            dir.join("preprocessor_config.json"),
            serde_json::to_vec_pretty(&pp).map_err(other)?,
        )?;
    }
    let tensors = tiny_tensors(&cfg, spec.seed).map_err(other)?;
    write_safetensors(&dir.join("model.safetensors"), &tensors)?;
    Ok(cfg)
}
