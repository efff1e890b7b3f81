//! The CLIP forward pass on every instruction set this CPU has (each forced in turn)
//! against the portable kernels, on a tiny CLIP with random weights whose widths leave
//! partial tiles everywhere. CI also runs this file under `qemu-aarch64` for NEON. (On
//! x86-64, the service's `tests/encoder` checks the same code against
//! candle-transformers' CLIP.)

// Test helpers stop the test with their message on failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use vitrine_clip::{ClipDims, ClipError, CpuClip, TowerDims, tensors};
use vitrine_kernels::{Isa, Precision};

fn dims() -> ClipDims {
    ClipDims {
        text: TowerDims {
            hidden: 40,
            intermediate: 72,
            layers: 3,
            heads: 5,
            layer_norm_eps: 1e-5,
        },
        vocab: 97,
        max_positions: 77,
        vision: TowerDims {
            hidden: 48,
            intermediate: 100,
            layers: 3,
            heads: 12,
            layer_norm_eps: 1e-5,
        },
        channels: 3,
        image_size: 56,
        patch_size: 8,
        projection: 20,
    }
}

/// Deterministic values in [-scale, scale).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// Random weights for every tensor: LayerNorm gains near 1, the rest small.
fn checkpoint(d: &ClipDims) -> HashMap<String, Vec<f32>> {
    tensors(d)
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let mut v = values(n, i as u64 + 1, 0.2);
            if name.contains("norm") && name.ends_with(".weight") {
                v.iter_mut().for_each(|x| *x += 1.0);
            }
            (name, v)
        })
        .collect()
}

fn load(ckpt: &HashMap<String, Vec<f32>>, isa: Isa, precision: Precision) -> CpuClip {
    CpuClip::load(&dims(), isa, precision, |name| {
        ckpt.get(name)
            .cloned()
            .ok_or_else(|| ClipError::Input(format!("no tensor {name}")))
    })
    .unwrap()
}

/// Text features for three right-padded sequences (one as long as the model allows)
/// and image features for a batch of three.
fn features(clip: &CpuClip) -> (Vec<f32>, Vec<f32>) {
    let d = dims();
    let seq = d.max_positions;
    let ids: Vec<u32> = values(3 * seq, 77, 1.0)
        .iter()
        .map(|v| ((v + 1.0) * 48.0) as u32 % d.vocab as u32)
        .collect();
    let text = clip.text_features(&ids, 3, seq, &[4, seq - 1, 0]).unwrap();
    let pixels = values(3 * d.channels * d.image_size * d.image_size, 78, 2.0);
    let image = clip.image_features(&pixels, 3).unwrap();
    (text, image)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let n = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Row-by-row comparison of `got` against `want` (`rows` feature rows).
fn compare(what: &str, want: &[f32], got: &[f32], min_cos: f64, max_abs: f32) {
    assert_eq!(want.len(), got.len(), "{what}: length");
    let d = dims().projection;
    for (i, (w, g)) in want.chunks(d).zip(got.chunks(d)).enumerate() {
        let (c, m) = (cosine(w, g), max_diff(w, g));
        assert!(c > min_cos && m < max_abs, "{what} row {i}: cos {c} max diff {m}");
    }
}

#[test]
fn every_instruction_set_matches_the_portable_kernels() {
    let ckpt = checkpoint(&dims());
    let (want_text, want_img) = features(&load(&ckpt, Isa::Portable, Precision::F32));
    assert!(want_text.iter().chain(&want_img).all(|v| v.is_finite()));
    let supported = Isa::supported();
    println!(
        "instruction sets tested: {:?}",
        supported.iter().map(|i| i.name()).collect::<Vec<_>>()
    );
    for isa in supported {
        let (text, img) = features(&load(&ckpt, isa, Precision::F32));
        compare(&format!("{isa:?} text"), &want_text, &text, 0.99999, 1e-4);
        compare(&format!("{isa:?} image"), &want_img, &img, 0.99999, 1e-4);
        // bf16 weights: the same code with rounded weights, close to f32 but not equal.
        let (text16, img16) = features(&load(&ckpt, isa, Precision::Bf16));
        compare(&format!("{isa:?} bf16 text"), &want_text, &text16, 0.999, 0.1);
        compare(&format!("{isa:?} bf16 image"), &want_img, &img16, 0.999, 0.1);
        assert_ne!(text16, text, "{isa:?}: bf16 changed nothing");
    }
}

#[test]
fn bad_inputs_and_weights_are_errors_not_panics() {
    let ckpt = checkpoint(&dims());
    let clip = load(&ckpt, Isa::detect(), Precision::F32);
    let d = dims();
    for (ids, batch, seq, eos) in [
        (vec![1u32; 5], 1, 5, vec![5]),           // pooled position past the end
        (vec![1u32; 6], 1, 5, vec![0]),           // ids disagree with the shape
        (vec![d.vocab as u32; 5], 1, 5, vec![4]), // id outside the vocabulary
        (vec![1u32; d.max_positions + 1], 1, d.max_positions + 1, vec![0]), // too long
        (vec![1u32; 4], usize::MAX / 2 + 1, 2, vec![0]), // batch × seq wraps
    ] {
        let err = clip.text_features(&ids, batch, seq, &eos).unwrap_err();
        assert!(matches!(err, ClipError::Input(_)), "{err}");
    }
    for (pixels, batch) in [(&[0.0; 10][..], 1), (&[0.0; 10][..], usize::MAX / 2)] {
        let err = clip.image_features(pixels, batch).unwrap_err();
        assert!(matches!(err, ClipError::Input(_)), "{err}");
    }
    assert!(clip.text_features(&[], 0, 5, &[]).unwrap().is_empty());
    assert!(clip.image_features(&[], 0).unwrap().is_empty());
    // Dimensions the forward pass cannot run are refused at load.
    for broken in [
        ClipDims {
            text: TowerDims { heads: 0, ..d.text },
            ..d
        },
        ClipDims {
            vision: TowerDims { heads: 7, ..d.vision },
            ..d
        },
        ClipDims { patch_size: 0, ..d },
        ClipDims { image_size: 60, ..d },
    ] {
        let err = CpuClip::load(&broken, Isa::Portable, Precision::F32, |name| {
            Ok::<_, ClipError>(ckpt.get(name).cloned().unwrap_or_default())
        })
        .unwrap_err();
        assert!(err.to_string().contains("CLIP dimensions"), "{err}");
    }
    // A tensor of the wrong size names the tensor.
    let err = CpuClip::load(&d, Isa::Portable, Precision::F32, |name| {
        let mut v = ckpt[name].clone();
        if name == "text_model.final_layer_norm.bias" {
            v.pop();
        }
        Ok::<_, ClipError>(v)
    })
    .unwrap_err();
    assert!(
        err.to_string().contains("text_model.final_layer_norm.bias"),
        "{err}"
    );
    // An instruction set this CPU lacks is refused.
    if let Some(missing) = Isa::ALL.into_iter().find(|i| !i.available()) {
        let err = CpuClip::load(&d, missing, Precision::F32, |name| {
            Ok::<_, ClipError>(ckpt[name].clone())
        })
        .unwrap_err();
        assert!(matches!(err, ClipError::Unsupported(i) if i == missing), "{err}");
    }
}
