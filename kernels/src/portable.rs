//! Plain-Rust kernels with the same packing as the SIMD ones: any CPU, and the
//! reference the SIMD kernels are tested against.

use crate::{BPanel, MR, NR, Tail};

/// See `avx512::tile`.
///
/// # Safety
/// `out` must be valid for `rows` rows of `cols` values at stride `ldc`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn tile(
    rows: usize,
    cols: usize,
    k: usize,
    a: &[f32],
    b: BPanel<'_>,
    bias: Option<&[f32]>,
    tail: Tail,
    out: *mut f32,
    ldc: usize,
) {
    let mut acc = [[0f32; NR]; MR];
    let mut bp = [0f32; NR];
    for p in 0..k {
        match b {
            BPanel::F32(b) => bp.copy_from_slice(&b[p * NR..(p + 1) * NR]),
            BPanel::Bf16(b) => {
                for (v, &h) in bp.iter_mut().zip(&b[p * NR..(p + 1) * NR]) {
                    *v = crate::from_bf16(h);
                }
            }
        }
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            let x = a[p * MR + i];
            for (c, &w) in row.iter_mut().zip(&bp) {
                *c = x.mul_add(w, *c);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (j, &t) in row.iter().enumerate().take(cols) {
            let t = t + bias.map_or(0.0, |b| b[j]);
            // SAFETY: (i, j) lies inside the tile by the caller's contract.
            unsafe {
                let o = out.add(i * ldc + j);
                let t = if tail.load_c { *o + t } else { t };
                *o = if tail.gelu {
                    t / (1.0 + (-1.702 * t).exp())
                } else {
                    t
                };
            }
        }
    }
}

/// # Safety
/// None needed; `unsafe` only to share the signature of the SIMD kernel.
pub(crate) unsafe fn exp_inplace(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.exp());
}

/// # Safety
/// None needed; see `exp_inplace`.
pub(crate) unsafe fn softmax_row(row: &mut [f32], valid: usize) {
    let (live, dead) = row.split_at_mut(valid);
    dead.fill(0.0);
    let max = live.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in live.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    live.iter_mut().for_each(|v| *v *= inv);
}

/// # Safety
/// None needed; see `exp_inplace`.
pub(crate) unsafe fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    let h = x.len() as f32;
    let mean = x.iter().sum::<f32>() / h;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h;
    let inv = 1.0 / (var + eps).sqrt();
    for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
        *o = ((v - mean) * inv).mul_add(g, b);
    }
}
