//! GEMM throughput of every instruction set and precision on CLIP ViT-B/32's shapes:
//! `cargo run --release -p vitrine-kernels --example gemm_bench [ROUNDS]`.
//!
//! Prints GFLOP/s per shape, for a batch of 32 images (1600 rows) and for one short
//! text query (8 rows), each configuration measured in the same run, best of `ROUNDS`.

use std::time::Instant;

use vitrine_kernels::{AlignedBuf, Epilogue, Isa, PackedB, Precision, matmul};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // (name, n, k) of the linear layers: vision 768-wide, text 512-wide.
    let vision = [
        ("qkv", 2304, 768),
        ("out", 768, 768),
        ("fc1", 3072, 768),
        ("fc2", 768, 3072),
    ];
    let text = [
        ("qkv", 1536, 512),
        ("out", 512, 512),
        ("fc1", 2048, 512),
        ("fc2", 512, 2048),
    ];
    println!(
        "{:10} {:6} {:>5} {:>12} {:>12}",
        "isa", "prec", "rows", "GFLOP/s", "ms/layer"
    );
    for (rows, shapes) in [(1600usize, &vision), (8, &text)] {
        // The portable kernels are the tests' reference, far too slow to time here.
        for isa in Isa::supported().into_iter().filter(|i| *i != Isa::Portable) {
            for precision in [Precision::F32, Precision::Bf16] {
                let mut flops = 0.0;
                let mut best = f64::INFINITY;
                let weights: Vec<(PackedB, Vec<f32>, usize, usize)> = shapes
                    .iter()
                    .map(|&(_, n, k)| {
                        let w: Vec<f32> = (0..n * k)
                            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
                            .collect();
                        let a: Vec<f32> = (0..rows * k)
                            .map(|i| ((i * 104_729) % 997) as f32 / 997.0 - 0.5)
                            .collect();
                        (PackedB::from_weight_as(&w, n, k, precision), a, n, k)
                    })
                    .collect();
                for &(_, n, k) in shapes {
                    flops += 2.0 * (rows * n * k) as f64;
                }
                let mut scratch = AlignedBuf::default();
                let mut c = vec![0f32; rows * 3072];
                for _ in 0..rounds {
                    let t = Instant::now();
                    for (b, a, n, k) in &weights {
                        matmul(
                            isa,
                            a,
                            rows,
                            *k,
                            b,
                            None,
                            Epilogue::Store,
                            &mut c,
                            *n,
                            true,
                            &mut scratch,
                        );
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!(
                    "{:10} {:6} {:>5} {:>12.1} {:>12.3}",
                    isa.name(),
                    precision.name(),
                    rows,
                    flops / best / 1e9,
                    best * 1e3 / shapes.len() as f64
                );
            }
        }
    }
}
