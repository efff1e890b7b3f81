//! GFLOP/s of the packed GEMM on the shapes of CLIP ViT-B/32 (batch 32) and a short
//! text query: `cargo run --release -p vitrine-kernels --example gemm_bench`.
use std::time::Instant;

use vitrine_kernels::{AlignedBuf, Epilogue, Isa, PackedB, matmul};

fn main() {
    let isa = Isa::detect();
    for &(m, k, n) in &[
        (1600, 768, 3072),
        (1600, 3072, 768),
        (1600, 768, 2304),
        (1600, 768, 768),
        (8, 512, 2048),
        (8, 2048, 512),
        (8, 512, 1536),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..n * k).map(|i| (i % 5) as f32 * 0.1).collect();
        let b = PackedB::from_weight(&w, n, k);
        let mut c = vec![0.0; m * n];
        let mut s = AlignedBuf::default();
        let iters = (2e10 / (2.0 * (m * n * k) as f64)).clamp(5.0, 2000.0) as usize;
        for _ in 0..3 {
            matmul(isa, &a, m, k, &b, None, Epilogue::Store, &mut c, n, true, &mut s);
        }
        let t = Instant::now();
        for _ in 0..iters {
            matmul(isa, &a, m, k, &b, None, Epilogue::Store, &mut c, n, true, &mut s);
        }
        let dt = t.elapsed().as_secs_f64() / iters as f64;
        println!(
            "{isa:?} {m}x{k}x{n}: {:.1} GFLOP/s ({:.3} ms)",
            2.0 * (m * n * k) as f64 / dt / 1e9,
            dt * 1e3
        );
    }
}
