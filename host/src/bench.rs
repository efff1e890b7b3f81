//! `vitrine bench`: benchmarks that print figures (never timed unit tests).
//!
//! `bench encode` measures the CLIP encoder the way `scripts/bench_reference.py`
//! measures PyTorch and ONNX Runtime on the same checkpoint, so
//! `scripts/bench_encode.sh` can put them side by side in one run: image
//! throughput at batch 1, 8 and 32 (224×224 inputs, so preprocessing is
//! near free but still counted), single short-query text latency (tokenise +
//! forward) p50/p99, and the process's peak RSS.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use crate::encoder::{DecodedImage, Encoder, EncoderError, EncoderOptions};

pub const QUERY: &str = "red leather handbag";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    percentile(&xs, 50.0)
}

/// Peak resident set size of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn test_image(seed: u32) -> DecodedImage {
    let img = image::RgbImage::from_fn(224, 224, |x, y| {
        let v = x
            .wrapping_mul(31)
            .wrapping_add(y.wrapping_mul(17))
            .wrapping_add(seed * 101);
        image::Rgb([(v % 251) as u8, (v / 3 % 241) as u8, (v / 7 % 239) as u8])
    });
    DecodedImage::from_rgb(img)
}

/// Runs the encoder benchmark and returns its figures as JSON.
pub fn encode(model: &Path, iters: usize, threads: Option<usize>) -> Result<Value, EncoderError> {
    let options = EncoderOptions {
        threads,
        ..EncoderOptions::default()
    };
    let load = Instant::now();
    let encoder = Encoder::from_dir(model, &options)?;
    let load_secs = load.elapsed().as_secs_f64();
    let mut throughput = serde_json::Map::new();
    for batch in [1usize, 8, 32] {
        let images: Vec<DecodedImage> = (0..batch as u32).map(test_image).collect();
        let runs = (iters / batch).max(3);
        for _ in 0..2 {
            encoder.embed_images(&images)?; // warm-up
        }
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let t = Instant::now();
            encoder.embed_images(&images)?;
            times.push(t.elapsed().as_secs_f64());
        }
        throughput.insert(batch.to_string(), json!(batch as f64 / median(times)));
    }
    for _ in 0..5 {
        encoder.embed_texts(&[QUERY])?;
    }
    let mut latencies = Vec::with_capacity(iters * 4);
    for _ in 0..iters * 4 {
        let t = Instant::now();
        encoder.embed_texts(&[QUERY])?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    Ok(json!({
        "backend": "vitrine",
        "model": encoder.model_id(),
        "dims": encoder.dims(),
        "device": format!("{:?}", encoder.device()),
        "threads": threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        "load_secs": load_secs,
        "image_throughput_img_per_s": throughput,
        "text_latency_ms": {
            "p50": percentile(&latencies, 50.0),
            "p99": percentile(&latencies, 99.0),
            "n": latencies.len(),
        },
        "peak_rss_mb": peak_rss_mb(),
    }))
}
