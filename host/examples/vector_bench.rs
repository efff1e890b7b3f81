//! Search latency on random points after `optimize`.
//!
//! `cargo run --example bench -- [points] [dims] [queries]`
//! (defaults: 100000 512 1000). The dev profile builds all dependencies
//! (qdrant-edge included) at opt-level 2 (see Cargo.toml), which is what
//! matters for these numbers and avoids a second full release build;
//! `--release` works too. Prints ingest/optimize time, p50/p99 search latency
//! with only the (always present) tenant filter and with tenant+category, and
//! recall@10 against brute force (HNSW is approximate).

// A test suite / benchmark: a failed step stops it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use vitrine::store::vectors::contract::{cosine, random_vector};
use vitrine::store::vectors::{EdgeIndex, PointPayload, VectorFilter, VectorIndex, VectorPoint, VectorQuery};

const TENANTS: usize = 10;
const CATEGORIES: usize = 20;
const BATCH: usize = 1000;

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut lat: Vec<Duration>) {
    lat.sort();
    println!(
        "{name:<28} p50 {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        percentile(&lat, 0.50).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = arg(1, 100_000);
    let dims = arg(2, 512);
    let queries = arg(3, 1000);
    let dir = tempfile::tempdir()?;
    let idx = EdgeIndex::open_async(dir.path().to_path_buf(), dims).await?;
    let mut rng = StdRng::seed_from_u64(1);

    let mut points = Vec::with_capacity(n);
    for i in 0..n {
        points.push(VectorPoint {
            tenant: format!("t{}", i % TENANTS),
            product_id: format!("p{i}"),
            vector: random_vector(&mut rng, dims),
            payload: PointPayload {
                category: Some(format!("c{}", rng.random_range(0..CATEGORIES))),
                price: Some(f64::from(rng.random_range(1u32..500))),
                currency: Some("EUR".into()),
                tags: vec![format!("k{}", rng.random_range(0..10))],
                in_stock: rng.random_bool(0.8),
            },
            ..VectorPoint::default()
        });
    }

    let t = Instant::now();
    for chunk in points.chunks(BATCH) {
        idx.upsert(chunk.to_vec()).await?;
    }
    println!(
        "upsert {n} x {dims}d in batches of {BATCH}: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    idx.optimize().await?;
    println!("optimize: {:.1} s", t.elapsed().as_secs_f64());
    println!("count: {}", idx.count(None).await?);

    let qvecs: Vec<Vec<f32>> = (0..queries).map(|_| random_vector(&mut rng, dims)).collect();
    for (label, filtered) in [("no filter (tenant only)", false), ("tenant + category", true)] {
        // Warm-up so page-cache/first-touch effects do not skew p99.
        for v in qvecs.iter().take(20) {
            idx.search(&query(v, filtered, 0)).await?;
        }
        let mut lat = Vec::with_capacity(queries);
        let mut recall_sum = 0.0;
        let recall_queries = 50.min(queries);
        for (i, v) in qvecs.iter().enumerate() {
            let q = query(v, filtered, i);
            let t = Instant::now();
            let hits = idx.search(&q).await?;
            lat.push(t.elapsed());
            if i < recall_queries {
                let mut exact: Vec<(usize, f32)> = points
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.tenant == q.tenant)
                    .filter(|(_, p)| {
                        !filtered
                            || q.filter
                                .categories
                                .contains(p.payload.category.as_ref().unwrap_or(&String::new()))
                    })
                    .map(|(j, p)| (j, cosine(&p.vector, v)))
                    .collect();
                exact.sort_by(|a, b| b.1.total_cmp(&a.1));
                let truth: std::collections::HashSet<String> = exact
                    .iter()
                    .take(10)
                    .map(|(j, _)| points[*j].product_id.clone())
                    .collect();
                let found = hits.iter().filter(|h| truth.contains(&h.product_id)).count();
                recall_sum += found as f64 / truth.len().max(1) as f64;
            }
        }
        report(label, lat);
        println!(
            "{:<28} recall@10 {:.3} (over {recall_queries} queries)",
            "",
            recall_sum / recall_queries as f64
        );
    }
    Ok(())
}

/// Tenant always set (the service never searches across tenants); with
/// `filtered`, also one category (~1/200 of all points match both).
fn query(v: &[f32], filtered: bool, i: usize) -> VectorQuery {
    VectorQuery {
        tenant: format!("t{}", i % TENANTS),
        vector: v.to_vec(),
        limit: 10,
        filter: VectorFilter {
            categories: if filtered {
                vec![format!("c{}", i % CATEGORIES)]
            } else {
                Vec::new()
            },
            ..VectorFilter::default()
        },
        ..VectorQuery::default()
    }
}
