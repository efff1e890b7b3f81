//! AVX-512F kernels. Only called after `Isa::Avx512.available()` was checked.

#[cfg(target_arch = "x86_64")]
pub(crate) use imp::*;

#[cfg(not(target_arch = "x86_64"))]
pub(crate) use crate::portable::{exp_inplace, layer_norm_row, softmax_row, tile};

#[cfg(target_arch = "x86_64")]
mod imp {
    use crate::{BPanel, MR, NR, Tail};
    use std::arch::x86_64::*;

    /// One `rows × cols` output tile (`rows <= MR`, `cols <= NR`).
    ///
    /// # Safety
    /// AVX-512F must be available; `out` must be valid for `rows` rows of `cols` values at
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
        let (bp, bf16, _) = b.raw();
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match (rows, bf16) {
                    $(
                        ($r, false) => unsafe { kernel::<$r, false>(k, a.as_ptr(), bp, bias, cols, tail, out, ldc) },
                        ($r, true) => unsafe { kernel::<$r, true>(k, a.as_ptr(), bp, bias, cols, tail, out, ldc) },
                    )*
                    _ => unreachable!("tile rows {rows} > MR"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8 9 10 11 12 13 14);
    }

    /// 16 packed `B` values from `p`: f32, or bf16 widened to f32.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn load_b<const BF16: bool>(p: *const u8) -> __m512 {
        // SAFETY: the caller passes a 64-byte (f32) or 32-byte (bf16) aligned panel
        // position with 16 values.
        unsafe {
            if BF16 {
                let h = _mm256_load_si256(p.cast());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            } else {
                _mm512_load_ps(p.cast())
            }
        }
    }

    #[inline]
    fn mask(cols: usize) -> __mmask16 {
        if cols >= 16 {
            0xffff
        } else {
            ((1u32 << cols) - 1) as __mmask16
        }
    }

    #[target_feature(enable = "avx512f")]
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
        let mut lo = [_mm512_setzero_ps(); R];
        let mut hi = [_mm512_setzero_ps(); R];
        let elem = if BF16 { 2 } else { 4 };
        unsafe {
            let (mut ap, mut bp) = (a, b);
            for _ in 0..k {
                let b0 = load_b::<BF16>(bp);
                let b1 = load_b::<BF16>(bp.add(16 * elem));
                for i in 0..R {
                    let x = _mm512_set1_ps(*ap.add(i));
                    lo[i] = _mm512_fmadd_ps(x, b0, lo[i]);
                    hi[i] = _mm512_fmadd_ps(x, b1, hi[i]);
                }
                ap = ap.add(MR);
                bp = bp.add(NR * elem);
            }
            let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
            let (bias0, bias1) = match bias {
                Some(bias) => (
                    _mm512_maskz_loadu_ps(m0, bias.as_ptr()),
                    _mm512_maskz_loadu_ps(m1, bias.as_ptr().wrapping_add(16)),
                ),
                None => (_mm512_setzero_ps(), _mm512_setzero_ps()),
            };
            for i in 0..R {
                let row = out.add(i * ldc);
                let row_hi = row.wrapping_add(16);
                let mut v0 = _mm512_add_ps(lo[i], bias0);
                let mut v1 = _mm512_add_ps(hi[i], bias1);
                if tail.load_c {
                    v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), v0);
                    v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row_hi), v1);
                }
                if tail.gelu {
                    v0 = quick_gelu(v0);
                    v1 = quick_gelu(v1);
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                _mm512_mask_storeu_ps(row_hi, m1, v1);
            }
        }
    }

    /// `e^x`, relative error about 2e-7: Cody–Waite reduction `x = n·ln2 + r`,
    /// `|r| <= ln2/2`, a degree-7 Taylor polynomial for `e^r`, then `vscalefps` by `2^n`
    /// (which also gets overflow to +inf and underflow to 0 right).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn exp(x: __m512) -> __m512 {
        // Constant first: `min`/`max` return their second operand for NaN, so NaN stays NaN.
        let x = _mm512_max_ps(_mm512_set1_ps(-104.0), _mm512_min_ps(_mm512_set1_ps(89.0), x));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm512_mul_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
        ));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_145_75), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428_606_8e-6), r);
        let c = |v: f32| _mm512_set1_ps(v);
        let mut p = c(1.0 / 5040.0);
        p = _mm512_fmadd_ps(p, r, c(1.0 / 720.0));
        p = _mm512_fmadd_ps(p, r, c(1.0 / 120.0));
        p = _mm512_fmadd_ps(p, r, c(1.0 / 24.0));
        p = _mm512_fmadd_ps(p, r, c(1.0 / 6.0));
        p = _mm512_fmadd_ps(p, r, c(0.5));
        p = _mm512_fmadd_ps(p, r, c(1.0));
        p = _mm512_fmadd_ps(p, r, c(1.0));
        _mm512_scalef_ps(p, n)
    }

    #[target_feature(enable = "avx512f")]
    #[inline]
    fn quick_gelu(x: __m512) -> __m512 {
        // x · σ(1.702x) = x / (1 + e^(-1.702x))
        let e = exp(_mm512_mul_ps(x, _mm512_set1_ps(-1.702)));
        _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), e))
    }

    /// `x[i] = e^x[i]`.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn exp_inplace(x: &mut [f32]) {
        for chunk in x.chunks_mut(16) {
            let m = mask(chunk.len());
            // SAFETY: the mask covers exactly `chunk`.
            unsafe {
                let v = _mm512_maskz_loadu_ps(m, chunk.as_ptr());
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), m, exp(v));
            }
        }
    }

    /// Softmax over `row[..valid]`; `row[valid..]` becomes 0.
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn softmax_row(row: &mut [f32], valid: usize) {
        let (live, dead) = row.split_at_mut(valid);
        dead.fill(0.0);
        let mut maxv = _mm512_set1_ps(f32::NEG_INFINITY);
        for chunk in live.chunks(16) {
            let m = mask(chunk.len());
            // SAFETY: the mask covers exactly `chunk`.
            let v = unsafe { _mm512_mask_loadu_ps(_mm512_set1_ps(f32::NEG_INFINITY), m, chunk.as_ptr()) };
            maxv = _mm512_max_ps(maxv, v);
        }
        let max = _mm512_set1_ps(_mm512_reduce_max_ps(maxv));
        let mut sum = _mm512_setzero_ps();
        for chunk in live.chunks_mut(16) {
            let m = mask(chunk.len());
            // SAFETY: as above.
            unsafe {
                let v = exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, chunk.as_ptr()), max));
                sum = _mm512_add_ps(sum, _mm512_maskz_mov_ps(m, v));
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), m, v);
            }
        }
        let inv = _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum));
        for chunk in live.chunks_mut(16) {
            let m = mask(chunk.len());
            // SAFETY: as above.
            unsafe {
                let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, chunk.as_ptr()), inv);
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), m, v);
            }
        }
    }

    /// `out = (x - mean) / sqrt(var + eps) · gamma + beta` over one row (two passes).
    ///
    /// # Safety
    /// AVX-512F must be available; all slices have the same length.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn layer_norm_row(x: &[f32], gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
        let h = x.len();
        let mut sum = _mm512_setzero_ps();
        for chunk in x.chunks(16) {
            // SAFETY: the mask covers exactly `chunk`.
            sum = _mm512_add_ps(sum, unsafe {
                _mm512_maskz_loadu_ps(mask(chunk.len()), chunk.as_ptr())
            });
        }
        let mean = _mm512_reduce_add_ps(sum) / h as f32;
        let meanv = _mm512_set1_ps(mean);
        let mut sq = _mm512_setzero_ps();
        for chunk in x.chunks(16) {
            let m = mask(chunk.len());
            // SAFETY: as above.
            let d = unsafe { _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, chunk.as_ptr()), meanv) };
            sq = _mm512_fmadd_ps(d, d, sq);
        }
        let inv = 1.0 / (_mm512_reduce_add_ps(sq) / h as f32 + eps).sqrt();
        let invv = _mm512_set1_ps(inv);
        for (((o, x), g), b) in out
            .chunks_mut(16)
            .zip(x.chunks(16))
            .zip(gamma.chunks(16))
            .zip(beta.chunks(16))
        {
            let m = mask(o.len());
            // SAFETY: as above; the four chunks have equal lengths.
            unsafe {
                let d = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x.as_ptr()), meanv), invv);
                let v = _mm512_fmadd_ps(
                    d,
                    _mm512_maskz_loadu_ps(m, g.as_ptr()),
                    _mm512_maskz_loadu_ps(m, b.as_ptr()),
                );
                _mm512_mask_storeu_ps(o.as_mut_ptr(), m, v);
            }
        }
    }
}
