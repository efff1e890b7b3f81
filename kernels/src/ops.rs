//! Row-wise operations and attention, on top of the GEMM.

use rayon::prelude::*;

use crate::{
    ASource, AlignedBuf, Epilogue, Isa, OutPtr, PackedB, avx2, avx512, matmul_packed, neon, pack_a, portable,
};

/// `$isa`'s kernel module's function `$f` called with `$args`.
///
/// # Safety
/// As the called function's (each requires its instruction set).
macro_rules! by_isa {
    ($isa:expr, $f:ident($($arg:expr),*)) => {
        match $isa {
            Isa::Avx512 => avx512::$f($($arg),*),
            Isa::Avx2 => avx2::$f($($arg),*),
            Isa::Neon => neon::$f($($arg),*),
            Isa::Portable => portable::$f($($arg),*),
        }
    };
}

/// LayerNorm of each `h`-wide row of `x` into `out` (`rows × h`, contiguous).
pub fn layer_norm(isa: Isa, x: &[f32], h: usize, gamma: &[f32], beta: &[f32], eps: f32, out: &mut [f32]) {
    assert!(
        h > 0 && gamma.len() == h && beta.len() == h,
        "LayerNorm parameters must be {h} wide"
    );
    assert!(
        x.len().is_multiple_of(h) && out.len() == x.len(),
        "LayerNorm input and output must be rows of {h}"
    );
    let isa = isa.checked();
    let rows = |x: &[f32], out: &mut [f32]| {
        for (row, o) in x.chunks(h).zip(out.chunks_mut(h)) {
            // SAFETY: `isa` is supported; all four slices are `h` long.
            unsafe { by_isa!(isa, layer_norm_row(row, gamma, beta, eps, o)) }
        }
    };
    // Blocks of 32 rows on the rayon pool once there are several.
    const BLOCK: usize = 32;
    if x.len() > 2 * BLOCK * h {
        x.par_chunks(BLOCK * h)
            .zip(out.par_chunks_mut(BLOCK * h))
            .for_each(|(x, out)| rows(x, out));
    } else {
        rows(x, out);
    }
}

/// Softmax of each `n`-wide row of `x` over its first `valid(row)` values; the rest of
/// the row becomes 0.
pub fn softmax_rows(isa: Isa, x: &mut [f32], n: usize, valid: impl Fn(usize) -> usize) {
    assert!(
        n > 0 && x.len().is_multiple_of(n),
        "softmax input must be rows of {n}"
    );
    let isa = isa.checked();
    for (i, row) in x.chunks_mut(n).enumerate() {
        let v = valid(i).min(n);
        assert!(v > 0, "softmax row {i} has no valid value");
        // SAFETY: `isa` is supported.
        unsafe { by_isa!(isa, softmax_row(row, v)) }
    }
}

/// `x[i] = e^x[i]` with the kernels' exponential (exposed for accuracy tests).
pub fn exp_inplace(isa: Isa, x: &mut [f32]) {
    // SAFETY: `checked` guarantees the instruction set.
    unsafe { by_isa!(isa.checked(), exp_inplace(x)) }
}

#[derive(Default)]
struct Scratch {
    a: AlignedBuf,
    b: PackedB,
    scores: Vec<f32>,
}

/// Multi-head self-attention over packed `q|k|v` rows.
///
/// `qkv` is `batch × seq` rows of `3h` values: queries (already scaled by
/// `1/sqrt(head_dim)`), keys, values, each split into `heads` heads. With `causal`, a
/// position attends to itself and earlier positions only.
///
/// With `queries = None` every position is a query and `out` is `batch × seq` rows of
/// `h`. With `Some(q)`, only position `q[b]` of sequence `b` is (CLIP pools one token;
/// the last layer needs no other), and `out` is `batch` rows of `h`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    isa: Isa,
    qkv: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    causal: bool,
    queries: Option<&[usize]>,
    out: &mut [f32],
) {
    let isa = isa.checked();
    assert!(
        heads > 0 && seq > 0 && batch > 0,
        "attention needs sequences, heads and positions"
    );
    let rows = batch
        .checked_mul(seq)
        .filter(|rows| qkv.len().is_multiple_of(*rows))
        .unwrap_or_else(|| panic!("qkv must be batch × seq rows"));
    // `rows × h3` is `qkv.len()`, so no product of these sizes below can overflow.
    let h3 = qkv.len() / rows;
    assert!(
        h3 > 0 && h3.is_multiple_of(3) && (h3 / 3).is_multiple_of(heads),
        "qkv rows must be 3 × heads × head_dim wide"
    );
    let h = h3 / 3;
    let d = h / heads;
    let out_rows = match queries {
        None => rows,
        Some(q) => {
            assert!(
                q.len() == batch && q.iter().all(|&p| p < seq),
                "one query position < seq per sequence"
            );
            batch
        }
    };
    assert!(
        out.len() == out_rows * h,
        "attention output must be {out_rows} × {h}"
    );
    let out_ptr = OutPtr(out.as_mut_ptr());
    (0..batch * heads)
        .into_par_iter()
        .for_each_init(Scratch::default, |s, job| {
            let (bi, head) = (job / heads, job % heads);
            let rows = &qkv[bi * seq * h3..(bi + 1) * seq * h3];
            // Query rows of this sequence, and the keys the last of them may see.
            let (q0, m, keys, out_row) = match queries {
                None => (0, seq, seq, bi * seq),
                Some(q) => (q[bi], 1, if causal { q[bi] + 1 } else { seq }, bi),
            };
            // `a` (packed, `m` rows) times `b` into `m` rows at `dst`, row stride `ldc`.
            let gemm = |a: &AlignedBuf, b: &PackedB, dst: OutPtr, ldc: usize| {
                // SAFETY: each caller below passes a destination of `m` rows of `b.n()`
                // values at stride `ldc` that this task alone writes.
                unsafe {
                    matmul_packed(
                        isa,
                        ASource::Packed(a.as_slice()),
                        m,
                        b,
                        None,
                        Epilogue::Store,
                        dst,
                        ldc,
                        false,
                    )
                }
            };
            // scores = Q · Kᵀ, into this task's own `m × keys` buffer.
            pack_a(&rows[q0 * h3 + head * d..], m, d, h3, &mut s.a);
            s.b.pack_nk(&rows[h + head * d..], keys, d, h3);
            s.scores.clear();
            s.scores.resize(m * keys, 0.0);
            gemm(&s.a, &s.b, OutPtr(s.scores.as_mut_ptr()), keys);
            softmax_rows(isa, &mut s.scores, keys, |i| {
                if causal && queries.is_none() { i + 1 } else { keys }
            });
            // out = P · V, into rows out_row..out_row+m, columns head*d..+d, of `out`, which
            // holds `out_rows × h` values (checked above).
            pack_a(&s.scores, m, keys, keys, &mut s.a);
            s.b.pack_kn(&rows[2 * h + head * d..], keys, d, h3);
            // SAFETY: the offset lies inside `out` (see above).
            gemm(
                &s.a,
                &s.b,
                OutPtr(unsafe { out_ptr.at(out_row * h + head * d) }),
                h,
            );
        });
}
