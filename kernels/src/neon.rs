//! aarch64 Advanced SIMD (NEON) kernels (4 lanes) on the same packing as the x86 ones.
//! Only called after `Isa::Neon.available()` was checked.
//!
//! Like the AVX2 kernels, a 14 × 32 tile runs as sub-tiles of at most [`SUB_ROWS`] rows
//! and [`SUB_COLS`] columns: 24 accumulators, four `B` vectors and one broadcast `A`
//! value, 29 of the 32 vector registers. NEON has no masked loads, so partial columns
//! go through a small stack buffer in the epilogue.

#[cfg(target_arch = "aarch64")]
pub(crate) use imp::*;

#[cfg(not(target_arch = "aarch64"))]
pub(crate) use crate::portable::{exp_inplace, layer_norm_row, softmax_row, tile};

/// Rows of one sub-tile.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const SUB_ROWS: usize = 6;
/// Columns of one sub-tile (four 4-lane vectors).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
const SUB_COLS: usize = 16;

#[cfg(target_arch = "aarch64")]
mod imp {
    use super::*;
    use crate::{BPanel, MR, NR, Tail, sub_tiles};
    use std::arch::aarch64::*;

    /// One `rows × cols` output tile (`rows <= MR`, `cols <= NR`).
    ///
    /// # Safety
    /// NEON must be available; `out` must be valid for `rows` rows of `cols` values at
    /// stride `ldc`; `a` is a packed `k × MR` panel and `b` a packed `k × NR` panel.
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
        assert!(a.len() >= k * MR && b.len() >= k * NR, "panels shorter than k");
        assert!(rows <= MR && cols <= NR, "tile larger than MR × NR");
        let (bp, bf16, elem) = b.raw();
        for st in sub_tiles(rows, cols, SUB_ROWS, SUB_COLS) {
            let mut bias_buf = [0f32; SUB_COLS];
            if let Some(bias) = bias {
                bias_buf[..st.cols].copy_from_slice(&bias[st.c0..st.c0 + st.cols]);
            }
            // SAFETY: the sub-tile lies inside the tile and its panels (checked above; the
            // caller vouches for `out`).
            unsafe {
                let (a, b, out) = (
                    a.as_ptr().add(st.r0),
                    bp.add(st.c0 * elem),
                    out.add(st.r0 * ldc + st.c0),
                );
                macro_rules! dispatch {
                    ($($r:literal)*) => {
                        match (st.rows, bf16) {
                            $(
                                ($r, false) => kernel::<$r, false>(k, a, b, &bias_buf, st.cols, tail, out, ldc),
                                ($r, true) => kernel::<$r, true>(k, a, b, &bias_buf, st.cols, tail, out, ldc),
                            )*
                            (r, _) => unreachable!("sub-tile rows {r} > {SUB_ROWS}"),
                        }
                    };
                }
                dispatch!(1 2 3 4 5 6);
            }
        }
    }

    /// 16 packed `B` values from `p`: f32, or bf16 widened to f32.
    #[target_feature(enable = "neon")]
    #[inline]
    unsafe fn load_b<const BF16: bool>(p: *const u8) -> [float32x4_t; 4] {
        // SAFETY: the caller passes a panel position with 16 values.
        unsafe {
            if BF16 {
                let (h0, h1) = (vld1q_u16(p.cast()), vld1q_u16(p.cast::<u16>().add(8)));
                let widen_lo = |h| vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h)));
                let widen_hi = |h| vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h));
                [widen_lo(h0), widen_hi(h0), widen_lo(h1), widen_hi(h1)]
            } else {
                let p = p.cast::<f32>();
                [
                    vld1q_f32(p),
                    vld1q_f32(p.add(4)),
                    vld1q_f32(p.add(8)),
                    vld1q_f32(p.add(12)),
                ]
            }
        }
    }

    /// `R` rows × 16 columns (`cols` of them stored); `bias` zero-padded to 16.
    #[target_feature(enable = "neon")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const R: usize, const BF16: bool>(
        k: usize,
        a: *const f32,
        b: *const u8,
        bias: &[f32; SUB_COLS],
        cols: usize,
        tail: Tail,
        out: *mut f32,
        ldc: usize,
    ) {
        let mut acc = [[vdupq_n_f32(0.0); 4]; R];
        let elem = if BF16 { 2 } else { 4 };
        // SAFETY: `a` and `b` hold `k` steps of `MR` and `NR` values; the epilogue
        // touches only the `cols` columns of the `R` rows the caller owns.
        unsafe {
            let (mut ap, mut bp) = (a, b);
            for _ in 0..k {
                let bv = load_b::<BF16>(bp);
                for row in acc.iter_mut() {
                    let x = vld1q_dup_f32(ap);
                    for (c, &b) in row.iter_mut().zip(&bv) {
                        *c = vfmaq_f32(*c, b, x);
                    }
                    ap = ap.add(1);
                }
                ap = ap.add(MR - R);
                bp = bp.add(NR * elem);
            }
            let biasv = [0, 4, 8, 12].map(|j| vld1q_f32(bias.as_ptr().add(j)));
            let mut buf = [0f32; SUB_COLS];
            for (i, row_acc) in acc.iter().enumerate() {
                let row = out.add(i * ldc);
                if tail.load_c {
                    std::ptr::copy_nonoverlapping(row, buf.as_mut_ptr(), cols);
                }
                for j in 0..4 {
                    let mut v = vaddq_f32(row_acc[j], biasv[j]);
                    if tail.load_c {
                        v = vaddq_f32(vld1q_f32(buf.as_ptr().add(4 * j)), v);
                    }
                    if tail.gelu {
                        v = quick_gelu(v);
                    }
                    vst1q_f32(buf.as_mut_ptr().add(4 * j), v);
                }
                std::ptr::copy_nonoverlapping(buf.as_ptr(), row, cols);
            }
        }
    }

    /// `e^x`, as the AVX2 kernel computes it (`2^n` applied as two normal factors).
    #[target_feature(enable = "neon")]
    #[inline]
    fn exp(x: float32x4_t) -> float32x4_t {
        let c = |v: f32| vdupq_n_f32(v);
        let x = vmaxq_f32(vminq_f32(x, c(89.0)), c(-104.0));
        let n = vrndnq_f32(vmulq_f32(x, c(std::f32::consts::LOG2_E)));
        let r = vfmsq_f32(x, n, c(0.693_145_75));
        let r = vfmsq_f32(r, n, c(1.428_606_8e-6));
        let mut p = c(1.0 / 5040.0);
        for coef in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = vfmaq_f32(c(coef), p, r);
        }
        let ni = vcvtq_s32_f32(n);
        let n1 = vshrq_n_s32::<1>(ni);
        let n2 = vsubq_s32(ni, n1);
        let pow2 = |e: int32x4_t| vreinterpretq_f32_s32(vshlq_n_s32::<23>(vaddq_s32(e, vdupq_n_s32(127))));
        vmulq_f32(vmulq_f32(p, pow2(n1)), pow2(n2))
    }

    #[target_feature(enable = "neon")]
    #[inline]
    fn quick_gelu(x: float32x4_t) -> float32x4_t {
        // x · σ(1.702x) = x / (1 + e^(-1.702x))
        let e = exp(vmulq_f32(x, vdupq_n_f32(-1.702)));
        vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), e))
    }

    /// `chunk` (at most 4 values) in a vector, the lanes past its end `fill`.
    #[target_feature(enable = "neon")]
    #[inline]
    fn load(chunk: &[f32], fill: f32) -> float32x4_t {
        let mut buf = [fill; 4];
        buf[..chunk.len()].copy_from_slice(chunk);
        // SAFETY: `buf` holds 4 values.
        unsafe { vld1q_f32(buf.as_ptr()) }
    }

    /// Store the first `chunk.len()` (at most 4) lanes of `v` into `chunk`.
    #[target_feature(enable = "neon")]
    #[inline]
    fn store(chunk: &mut [f32], v: float32x4_t) {
        let mut buf = [0f32; 4];
        // SAFETY: `buf` holds 4 values.
        unsafe { vst1q_f32(buf.as_mut_ptr(), v) };
        let n = chunk.len();
        chunk.copy_from_slice(&buf[..n]);
    }

    /// `x[i] = e^x[i]`.
    ///
    /// # Safety
    /// NEON must be available.
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn exp_inplace(x: &mut [f32]) {
        for chunk in x.chunks_mut(4) {
            let v = exp(load(chunk, 0.0));
            store(chunk, v);
        }
    }

    /// Softmax over `row[..valid]`; `row[valid..]` becomes 0.
    ///
    /// # Safety
    /// NEON must be available.
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn softmax_row(row: &mut [f32], valid: usize) {
        let (live, dead) = row.split_at_mut(valid);
        dead.fill(0.0);
        let mut maxv = vdupq_n_f32(f32::NEG_INFINITY);
        for chunk in live.chunks(4) {
            maxv = vmaxq_f32(maxv, load(chunk, f32::NEG_INFINITY));
        }
        let max = vdupq_n_f32(vmaxvq_f32(maxv));
        let mut sum = vdupq_n_f32(0.0);
        for chunk in live.chunks_mut(4) {
            // Lanes past the chunk: e^(-inf - max) = 0, so they add nothing.
            let v = exp(vsubq_f32(load(chunk, f32::NEG_INFINITY), max));
            sum = vaddq_f32(sum, v);
            store(chunk, v);
        }
        let inv = vdupq_n_f32(1.0 / vaddvq_f32(sum));
        for chunk in live.chunks_mut(4) {
            let v = vmulq_f32(load(chunk, 0.0), inv);
            store(chunk, v);
        }
    }

    /// `out = (x - mean) / sqrt(var + eps) · gamma + beta` over one row (two passes).
    ///
    /// # Safety
    /// NEON must be available; all slices have the same length.
    #[target_feature(enable = "neon")]
    pub(crate) unsafe fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let h = x.len();
        let mut sum = vdupq_n_f32(0.0);
        for chunk in x.chunks(4) {
            sum = vaddq_f32(sum, load(chunk, 0.0));
        }
        let mean = vaddvq_f32(sum) / h as f32;
        let meanv = vdupq_n_f32(mean);
        let mut sq = vdupq_n_f32(0.0);
        for chunk in x.chunks(4) {
            // Lanes past the chunk are filled with the mean: they add nothing.
            let d = vsubq_f32(load(chunk, mean), meanv);
            sq = vfmaq_f32(sq, d, d);
        }
        let inv = vdupq_n_f32(1.0 / (vaddvq_f32(sq) / h as f32 + eps).sqrt());
        for (((o, x), g), b) in out
            .chunks_mut(4)
            .zip(x.chunks(4))
            .zip(gamma.chunks(4))
            .zip(beta.chunks(4))
        {
            let d = vmulq_f32(vsubq_f32(load(x, 0.0), meanv), inv);
            let v = vfmaq_f32(load(b, 0.0), d, load(g, 0.0));
            store(o, v);
        }
    }
}
