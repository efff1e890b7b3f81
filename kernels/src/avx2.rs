//! AVX2 + FMA kernels (8 lanes) on the same packing as the AVX-512 ones. Only called
//! after `Isa::Avx2.available()` was checked.
//!
//! sixteen 256-bit registers cannot hold a 14 × 32 tile, so [`tile`] covers it in
//! sub-tiles of at most [`SUB_ROWS`] rows and [`SUB_COLS`] columns: 12 accumulators, two
//! `B` vectors and one broadcast `A` value, 15 of the 16 registers. The row groups are
//! balanced (14 rows run as 5 + 5 + 4), so every group keeps at least eight independent
//! FMA chains in flight, enough to cover the FMA latency on both ports.

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::*;

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use crate::portable::{exp_inplace, layer_norm_row, softmax_row, tile};

/// Rows of one sub-tile.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SUB_ROWS: usize = 6;
/// Columns of one sub-tile (two 8-lane vectors).
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const SUB_COLS: usize = 16;

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use crate::{BPanel, MR, NR, Tail, sub_tiles};
    use std::arch::x86_64::*;

    /// One `rows × cols` output tile (`rows <= MR`, `cols <= NR`).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; `out` must be valid for `rows` rows of `cols`
    /// values at stride `ldc`; `a` is a packed `k × MR` panel and `b` a packed `k × NR`
    /// panel.
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
            let bias = bias.map(|b| &b[st.c0..st.c0 + st.cols]);
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
                                ($r, false) => kernel::<$r, false>(k, a, b, bias, st.cols, tail, out, ldc),
                                ($r, true) => kernel::<$r, true>(k, a, b, bias, st.cols, tail, out, ldc),
                            )*
                            (r, _) => unreachable!("sub-tile rows {r} > {SUB_ROWS}"),
                        }
                    };
                }
                dispatch!(1 2 3 4 5 6);
            }
        }
    }

    /// Lanes `0..n` set (`n` clamped to 8).
    #[target_feature(enable = "avx2")]
    #[inline]
    fn mask(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(n.min(8) as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// 8 packed `B` values from `p`: f32, or bf16 widened to f32.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load_b<const BF16: bool>(p: *const u8) -> __m256 {
        // SAFETY: the caller passes a 32-byte (f32) or 16-byte (bf16) aligned panel
        // position with 8 values.
        unsafe {
            if BF16 {
                let h = _mm_load_si128(p.cast());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)))
            } else {
                _mm256_load_ps(p.cast())
            }
        }
    }

    /// `R` rows × 16 columns (`cols` of them stored).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn kernel<const R: usize, const BF16: bool>(
        k: usize,
        a: *const f32,
        b: *const u8,
        bias: Option<&[f32]>,
        cols: usize,
        tail: Tail,
        out: *mut f32,
        ldc: usize,
    ) {
        let mut lo = [_mm256_setzero_ps(); R];
        let mut hi = [_mm256_setzero_ps(); R];
        let elem = if BF16 { 2 } else { 4 };
        // SAFETY: `a` and `b` hold `k` steps of `MR` and `NR` values; masked loads and
        // stores touch only the `cols` columns of the `R` rows the caller owns.
        unsafe {
            let (mut ap, mut bp) = (a, b);
            for _ in 0..k {
                let b0 = load_b::<BF16>(bp);
                let b1 = load_b::<BF16>(bp.add(8 * elem));
                for i in 0..R {
                    let x = _mm256_broadcast_ss(&*ap.add(i));
                    lo[i] = _mm256_fmadd_ps(x, b0, lo[i]);
                    hi[i] = _mm256_fmadd_ps(x, b1, hi[i]);
                }
                ap = ap.add(MR);
                bp = bp.add(NR * elem);
            }
            let (m0, m1) = (mask(cols), mask(cols.saturating_sub(8)));
            let (bias0, bias1) = match bias {
                Some(bias) => (
                    _mm256_maskload_ps(bias.as_ptr(), m0),
                    _mm256_maskload_ps(bias.as_ptr().wrapping_add(8), m1),
                ),
                None => (_mm256_setzero_ps(), _mm256_setzero_ps()),
            };
            for i in 0..R {
                let row = out.add(i * ldc);
                let row_hi = row.wrapping_add(8);
                let mut v0 = _mm256_add_ps(lo[i], bias0);
                let mut v1 = _mm256_add_ps(hi[i], bias1);
                if tail.load_c {
                    v0 = _mm256_add_ps(_mm256_maskload_ps(row, m0), v0);
                    v1 = _mm256_add_ps(_mm256_maskload_ps(row_hi, m1), v1);
                }
                if tail.gelu {
                    v0 = quick_gelu(v0);
                    v1 = quick_gelu(v1);
                }
                _mm256_maskstore_ps(row, m0, v0);
                _mm256_maskstore_ps(row_hi, m1, v1);
            }
        }
    }

    /// `e^x`, as the AVX-512 kernel computes it; without `vscalefps`, `2^n` is applied as
    /// two factors `2^(n>>1) · 2^(n - (n>>1))`, each a normal float for every `n` the
    /// clamped input gives, so overflow still reaches +inf and underflow 0 (through
    /// subnormals).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp(x: __m256) -> __m256 {
        let c = |v: f32| _mm256_set1_ps(v);
        // Constant first: `min`/`max` return their second operand for NaN, so NaN stays NaN.
        let x = _mm256_max_ps(c(-104.0), _mm256_min_ps(c(89.0), x));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
            x,
            c(std::f32::consts::LOG2_E),
        ));
        let r = _mm256_fnmadd_ps(n, c(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(n, c(1.428_606_8e-6), r);
        let mut p = c(1.0 / 5040.0);
        p = _mm256_fmadd_ps(p, r, c(1.0 / 720.0));
        p = _mm256_fmadd_ps(p, r, c(1.0 / 120.0));
        p = _mm256_fmadd_ps(p, r, c(1.0 / 24.0));
        p = _mm256_fmadd_ps(p, r, c(1.0 / 6.0));
        p = _mm256_fmadd_ps(p, r, c(0.5));
        p = _mm256_fmadd_ps(p, r, c(1.0));
        p = _mm256_fmadd_ps(p, r, c(1.0));
        let ni = _mm256_cvtps_epi32(n);
        let n1 = _mm256_srai_epi32::<1>(ni);
        let n2 = _mm256_sub_epi32(ni, n1);
        let pow2 = |e: __m256i| {
            _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
                e,
                _mm256_set1_epi32(127),
            )))
        };
        _mm256_mul_ps(_mm256_mul_ps(p, pow2(n1)), pow2(n2))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn quick_gelu(x: __m256) -> __m256 {
        // x · σ(1.702x) = x / (1 + e^(-1.702x))
        let e = exp(_mm256_mul_ps(x, _mm256_set1_ps(-1.702)));
        _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), e))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn reduce_add(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn reduce_max(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }

    /// `chunk` (at most 8 values) in a vector, the lanes past its end `fill`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn load(chunk: &[f32], fill: f32) -> __m256 {
        let m = mask(chunk.len());
        // SAFETY: the mask covers exactly `chunk`.
        let v = unsafe { _mm256_maskload_ps(chunk.as_ptr(), m) };
        _mm256_blendv_ps(_mm256_set1_ps(fill), v, _mm256_castsi256_ps(m))
    }

    /// Store the first `chunk.len()` (at most 8) lanes of `v` into `chunk`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn store(chunk: &mut [f32], v: __m256) {
        // SAFETY: the mask covers exactly `chunk`.
        unsafe { _mm256_maskstore_ps(chunk.as_mut_ptr(), mask(chunk.len()), v) }
    }

    /// `x[i] = e^x[i]`.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn exp_inplace(x: &mut [f32]) {
        for chunk in x.chunks_mut(8) {
            let v = exp(load(chunk, 0.0));
            store(chunk, v);
        }
    }

    /// Softmax over `row[..valid]`; `row[valid..]` becomes 0.
    ///
    /// # Safety
    /// AVX2 and FMA must be available.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn softmax_row(row: &mut [f32], valid: usize) {
        let (live, dead) = row.split_at_mut(valid);
        dead.fill(0.0);
        let mut maxv = _mm256_set1_ps(f32::NEG_INFINITY);
        for chunk in live.chunks(8) {
            maxv = _mm256_max_ps(maxv, load(chunk, f32::NEG_INFINITY));
        }
        let max = _mm256_set1_ps(reduce_max(maxv));
        let mut sum = _mm256_setzero_ps();
        for chunk in live.chunks_mut(8) {
            // Lanes past the chunk: e^(-inf - max) = 0, so they add nothing.
            let v = exp(_mm256_sub_ps(load(chunk, f32::NEG_INFINITY), max));
            sum = _mm256_add_ps(sum, v);
            store(chunk, v);
        }
        let inv = _mm256_set1_ps(1.0 / reduce_add(sum));
        for chunk in live.chunks_mut(8) {
            let v = _mm256_mul_ps(load(chunk, 0.0), inv);
            store(chunk, v);
        }
    }

    /// `out = (x - mean) / sqrt(var + eps) · gamma + beta` over one row (two passes).
    ///
    /// # Safety
    /// AVX2 and FMA must be available; all slices have the same length.
    #[target_feature(enable = "avx2,fma")]
    pub(crate) unsafe fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let h = x.len();
        let mut sum = _mm256_setzero_ps();
        for chunk in x.chunks(8) {
            sum = _mm256_add_ps(sum, load(chunk, 0.0));
        }
        let mean = reduce_add(sum) / h as f32;
        let mut sq = _mm256_setzero_ps();
        for chunk in x.chunks(8) {
            // Lanes past the chunk are filled with the mean: they add nothing.
            let d = _mm256_sub_ps(load(chunk, mean), _mm256_set1_ps(mean));
            sq = _mm256_fmadd_ps(d, d, sq);
        }
        let inv = 1.0 / (reduce_add(sq) / h as f32 + eps).sqrt();
        let (meanv, invv) = (_mm256_set1_ps(mean), _mm256_set1_ps(inv));
        for (((o, x), g), b) in out
            .chunks_mut(8)
            .zip(x.chunks(8))
            .zip(gamma.chunks(8))
            .zip(beta.chunks(8))
        {
            let d = _mm256_mul_ps(_mm256_sub_ps(load(x, 0.0), meanv), invv);
            let v = _mm256_fmadd_ps(d, load(g, 0.0), load(b, 0.0));
            store(o, v);
        }
    }
}
