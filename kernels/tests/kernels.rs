//! Every kernel against a naive f64 reference, on every instruction set the CPU has
//! (each forced in turn), over shapes that hit every partial tile.

use vitrine_kernels::{
    AlignedBuf, Epilogue, Isa, MR, NR, PackedB, Precision, attention, exp_inplace, from_bf16, layer_norm,
    matmul, softmax_rows, to_bf16,
};

fn isas() -> Vec<Isa> {
    let all = Isa::supported();
    let missing: Vec<&str> = Isa::ALL
        .iter()
        .filter(|i| !all.contains(i))
        .map(|i| i.name())
        .collect();
    println!(
        "testing {:?}; skipped (not on this CPU): {missing:?}",
        all.iter().map(|i| i.name()).collect::<Vec<_>>()
    );
    all
}

/// Deterministic values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

fn quick_gelu(t: f64) -> f64 {
    t / (1.0 + (-1.702 * t).exp())
}

#[test]
fn matmul_matches_reference_for_every_tile_shape_and_epilogue() {
    for isa in isas() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (MR, NR, 7),
            (MR + 1, NR + 1, 33),
            (50, 96, 64),
            (7, 40, 200),
            (3 * MR - 1, 2 * NR + 15, 5),
            (20, 50, 600),
        ] {
            let a = values(m * k, 1);
            let w = values(n * k, 2);
            let bias = values(n, 3);
            let base = values(m * n, 4);
            let mut scratch = AlignedBuf::default();
            for precision in [Precision::F32, Precision::Bf16] {
                let b = PackedB::from_weight_as(&w, n, k, precision);
                assert_eq!(b.precision(), precision);
                // The reference multiplies by the weights as stored.
                let wq: Vec<f32> = match precision {
                    Precision::F32 => w.clone(),
                    Precision::Bf16 => w.iter().map(|&x| from_bf16(to_bf16(x))).collect(),
                };
                for epi in [Epilogue::Store, Epilogue::QuickGelu, Epilogue::Accumulate] {
                    for with_bias in [false, true] {
                        for parallel in [false, true] {
                            let mut c = base.clone();
                            let bias_arg = with_bias.then_some(bias.as_slice());
                            matmul(
                                isa,
                                &a,
                                m,
                                k,
                                &b,
                                bias_arg,
                                epi,
                                &mut c,
                                n,
                                parallel,
                                &mut scratch,
                            );
                            let want: Vec<f64> = (0..m * n)
                                .map(|idx| {
                                    let (i, j) = (idx / n, idx % n);
                                    let t: f64 = (0..k)
                                        .map(|p| a[i * k + p] as f64 * wq[j * k + p] as f64)
                                        .sum::<f64>()
                                        + if with_bias { bias[j] as f64 } else { 0.0 };
                                    match epi {
                                        Epilogue::Store => t,
                                        Epilogue::QuickGelu => quick_gelu(t),
                                        Epilogue::Accumulate => base[idx] as f64 + t,
                                    }
                                })
                                .collect();
                            assert_close(
                                &c,
                                &want,
                                1e-5,
                                &format!("{isa:?} {precision:?} {m}x{n}x{k} {epi:?} bias={with_bias}"),
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_rounds_to_nearest_even_and_halves_the_weights() {
    // 1 + 2^-8 lies halfway between two bf16 values: ties go to the even one (1.0);
    // just above the half goes up.
    assert_eq!(to_bf16(1.0 + 2f32.powi(-8)), to_bf16(1.0));
    assert_eq!(
        from_bf16(to_bf16(1.0 + 2f32.powi(-8) + 2f32.powi(-20))),
        1.0 + 2f32.powi(-7)
    );
    // An odd bf16 value plus half an ulp rounds up to the even neighbour.
    let odd = 1.0 + 2f32.powi(-7);
    assert_eq!(from_bf16(to_bf16(odd + 2f32.powi(-8))), 1.0 + 2f32.powi(-6));
    for x in [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        3.0e38,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1e-30,
    ] {
        let back = from_bf16(to_bf16(x));
        assert!(
            back == x || ((back - x) / x).abs() <= 2f32.powi(-8),
            "{x} -> {back}"
        );
    }
    assert!(
        from_bf16(to_bf16(f32::MAX)).is_infinite(),
        "f32::MAX rounds past bf16's largest"
    );
    assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
    assert!(
        from_bf16(to_bf16(f32::from_bits(0x7f80_0001))).is_nan(),
        "a NaN with low payload bits stays NaN"
    );
    let w = values(70 * 33, 21);
    let (f, h) = (
        PackedB::from_weight_as(&w, 70, 33, Precision::F32),
        PackedB::from_weight_as(&w, 70, 33, Precision::Bf16),
    );
    assert_eq!((h.n(), h.k()), (70, 33));
    assert_eq!(h.bytes() * 2, f.bytes());
}

#[test]
fn matmul_respects_strides_and_leaves_other_columns_alone() {
    for isa in isas() {
        let (m, n, k, lda, ldc) = (13, 20, 9, 15, 29);
        let a = values(m * lda, 5);
        let w = values(n * k, 6);
        let b = PackedB::from_weight(&w, n, k);
        let mut c = vec![7.0f32; m * ldc];
        matmul(
            isa,
            &a,
            m,
            lda,
            &b,
            None,
            Epilogue::Store,
            &mut c,
            ldc,
            true,
            &mut AlignedBuf::default(),
        );
        for i in 0..m {
            for j in 0..ldc {
                let got = c[i * ldc + j] as f64;
                if j < n {
                    let want: f64 = (0..k).map(|p| a[i * lda + p] as f64 * w[j * k + p] as f64).sum();
                    assert!(
                        (got - want).abs() < 1e-5,
                        "{isa:?} c[{i}][{j}] = {got}, want {want}"
                    );
                } else {
                    assert_eq!(got, 7.0, "{isa:?} column {j} beyond n was written");
                }
            }
        }
    }
}

#[test]
fn pack_kn_is_the_transpose_of_pack_nk() {
    for isa in isas() {
        let (m, n, k) = (5, 37, 11);
        let a = values(m * k, 7);
        let w = values(n * k, 8); // [n][k]
        let wt: Vec<f32> = (0..k * n).map(|idx| w[(idx % n) * k + idx / n]).collect(); // [k][n]
        let mut b1 = PackedB::default();
        b1.pack_nk(&w, n, k, k);
        let mut b2 = PackedB::default();
        b2.pack_kn(&wt, k, n, n);
        let (mut c1, mut c2) = (vec![0.0; m * n], vec![0.0; m * n]);
        let mut s = AlignedBuf::default();
        matmul(
            isa,
            &a,
            m,
            k,
            &b1,
            None,
            Epilogue::Store,
            &mut c1,
            n,
            false,
            &mut s,
        );
        matmul(
            isa,
            &a,
            m,
            k,
            &b2,
            None,
            Epilogue::Store,
            &mut c2,
            n,
            false,
            &mut s,
        );
        assert_eq!(c1, c2);
    }
}

#[test]
fn exp_is_accurate_over_the_whole_range() {
    for isa in isas() {
        let xs: Vec<f32> = (-1040..=890)
            .map(|i| i as f32 / 10.0)
            .chain([-1e4, 1e4, 0.0])
            .collect();
        let mut got = xs.clone();
        exp_inplace(isa, &mut got);
        let mut nan = [f32::NAN; 3];
        exp_inplace(isa, &mut nan);
        assert!(nan.iter().all(|v| v.is_nan()), "{isa:?} exp(NaN) = {nan:?}");
        for (&x, &g) in xs.iter().zip(&got) {
            let want = (x as f64).exp();
            if want > f32::MAX as f64 {
                assert!(g.is_infinite(), "{isa:?} exp({x}) = {g}, want inf");
            } else if want < 1e-37 {
                assert!(g.abs() < 1e-37, "{isa:?} exp({x}) = {g}, want ~0");
            } else {
                assert!(
                    ((g as f64 - want) / want).abs() < 1e-6,
                    "{isa:?} exp({x}) = {g}, want {want}"
                );
            }
        }
    }
}

#[test]
fn layer_norm_and_softmax_match_reference() {
    for isa in isas() {
        for h in [1, 15, 16, 17, 768] {
            let x: Vec<f32> = values(3 * h, 9).iter().map(|v| v * 4.0 + 1.5).collect();
            let (g, b) = (values(h, 10), values(h, 11));
            let mut out = vec![0.0; 3 * h];
            layer_norm(isa, &x, h, &g, &b, 1e-5, &mut out);
            let mut want = Vec::new();
            for row in x.chunks(h) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / h as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / h as f64;
                for (j, &v) in row.iter().enumerate() {
                    want.push((v as f64 - mean) / (var + 1e-5).sqrt() * g[j] as f64 + b[j] as f64);
                }
            }
            assert_close(&out, &want, 1e-4, &format!("{isa:?} layer_norm h={h}"));

            let mut s: Vec<f32> = values(3 * h, 12).iter().map(|v| v * 30.0).collect();
            let orig = s.clone();
            softmax_rows(isa, &mut s, h, |i| (i + 1).min(h));
            let mut want = Vec::new();
            for (i, row) in orig.chunks(h).enumerate() {
                let valid = (i + 1).min(h);
                let max = row[..valid]
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
                let sum: f64 = row[..valid].iter().map(|&v| (v as f64 - max).exp()).sum();
                want.extend((0..h).map(|j| {
                    if j < valid {
                        (row[j] as f64 - max).exp() / sum
                    } else {
                        0.0
                    }
                }));
            }
            assert_close(&s, &want, 1e-5, &format!("{isa:?} softmax h={h}"));
        }
    }
}

fn reference_attention(
    qkv: &[f32],
    batch: usize,
    seq: usize,
    heads: usize,
    causal: bool,
    b: usize,
    q: usize,
) -> Vec<f64> {
    let h = qkv.len() / (batch * seq) / 3;
    let d = h / heads;
    let row = |t: usize| &qkv[(b * seq + t) * 3 * h..(b * seq + t + 1) * 3 * h];
    let mut out = vec![0.0; h];
    for head in 0..heads {
        let keys = if causal { q + 1 } else { seq };
        let scores: Vec<f64> = (0..keys)
            .map(|t| {
                (0..d)
                    .map(|i| row(q)[head * d + i] as f64 * row(t)[h + head * d + i] as f64)
                    .sum()
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for i in 0..d {
            out[head * d + i] = (0..keys)
                .map(|t| e[t] / sum * row(t)[2 * h + head * d + i] as f64)
                .sum();
        }
    }
    out
}

#[test]
fn attention_matches_reference_causal_or_not_all_or_pooled_queries() {
    for isa in isas() {
        let (batch, seq, heads, d) = (3, 13, 4, 8);
        let h = heads * d;
        let qkv: Vec<f32> = values(batch * seq * 3 * h, 13);
        for causal in [false, true] {
            let mut out = vec![0.0; batch * seq * h];
            attention(isa, &qkv, batch, seq, heads, causal, None, &mut out);
            for b in 0..batch {
                for q in 0..seq {
                    let want = reference_attention(&qkv, batch, seq, heads, causal, b, q);
                    let at = (b * seq + q) * h;
                    assert_close(
                        &out[at..at + h],
                        &want,
                        1e-5,
                        &format!("{isa:?} causal={causal} b={b} q={q}"),
                    );
                }
            }
            let picks = [0, 12, 5];
            let mut pooled = vec![0.0; batch * h];
            attention(isa, &qkv, batch, seq, heads, causal, Some(&picks), &mut pooled);
            for (b, &q) in picks.iter().enumerate() {
                let want = reference_attention(&qkv, batch, seq, heads, causal, b, q);
                assert_close(
                    &pooled[b * h..(b + 1) * h],
                    &want,
                    1e-5,
                    &format!("{isa:?} pooled causal={causal} b={b}"),
                );
            }
        }
    }
}

#[test]
#[should_panic(expected = "output too short")]
fn matmul_refuses_a_short_output() {
    let b = PackedB::from_weight(&[1.0; 6], 3, 2);
    let mut c = vec![0.0; 5];
    matmul(
        Isa::Portable,
        &[1.0; 4],
        2,
        2,
        &b,
        None,
        Epilogue::Store,
        &mut c,
        3,
        false,
        &mut AlignedBuf::default(),
    );
}
