//! `vitrine bench replica`: an origin and an edge as two processes of this
//! binary on loopback, on a populated catalog.
//!
//! - bootstrap: products per second and bytes per product on the wire;
//! - follow lag under a sustained write rate at the origin: from a write's
//!   answer to the edge having applied it (its `applied_seq` reaching the
//!   origin's head read right after the write), p50/p99;
//! - search: the same text searches against the origin and the edge in
//!   paired rounds (each round runs both, in alternating order), p50/p99
//!   and the edge/origin ratio per round.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::{median, percentile, populate};

const ADMIN: &str = "bench-replica-admin-key-0123456789";

pub struct ReplicaBenchOptions<'a> {
    pub model: Option<&'a Path>,
    pub products: usize,
    /// Writes per second at the origin while the lag is measured.
    pub writes_per_second: u32,
    pub write_secs: u64,
    /// Paired search rounds, and searches per side per round.
    pub rounds: usize,
    pub queries: usize,
}

/// A `vitrine serve` child, killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn spawn(data_dir: &Path, port: u16, env: &[(&str, String)]) -> anyhow::Result<Process> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("serve");
    for (k, _) in std::env::vars() {
        if k.starts_with("VITRINE__") {
            cmd.env_remove(k);
        }
    }
    cmd.env("VITRINE__DATA_DIR", data_dir)
        .env("VITRINE__SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("VITRINE__AUTH__ADMIN_KEY", ADMIN)
        .env("VITRINE__RATE_LIMITS__ENABLED", "false")
        // Every search is a real one, at both ends.
        .env("VITRINE__SEARCH__PAGE_CACHE_MB", "0")
        .env("VITRINE__LOG__LEVEL", "warn")
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    Ok(Process(cmd.spawn().context("cannot start vitrine serve")?))
}

async fn wait_ready(http: &reqwest::Client, base: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/health/ready")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(start.elapsed() < limit, "{base} was not ready within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn replica_view(http: &reqwest::Client, edge: &str) -> anyhow::Result<Value> {
    let d: Value = http
        .get(format!("{edge}/health/dependencies"))
        .send()
        .await?
        .json()
        .await?;
    Ok(d["dependencies"]["replica"]["replica"].clone())
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<f64> {
    let text = http.get(format!("{base}/metrics")).send().await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn timed_search(http: &reqwest::Client, base: &str, text: &str) -> anyhow::Result<f64> {
    let start = Instant::now();
    let r = http
        .post(format!("{base}/v1/tenants/default/search"))
        .bearer_auth(ADMIN)
        .json(&json!({"text": text, "limit": 10}))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "search answered {}", r.status());
    r.bytes().await?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

pub async fn replica(o: &ReplicaBenchOptions<'_>) -> anyhow::Result<Value> {
    let origin_dir = tempfile::tempdir()?;
    let edge_dir = tempfile::tempdir()?;
    eprintln!("populating the origin with {} products", o.products);
    let populated = populate(origin_dir.path(), o.model, o.products).await?;
    let model = populated["model"].as_str().unwrap_or_default().to_owned();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()?;

    let origin_port = free_port()?;
    let origin_base = format!("http://127.0.0.1:{origin_port}");
    let _origin = spawn(
        origin_dir.path(),
        origin_port,
        &[("VITRINE__ENCODER__MODEL", model.clone())],
    )?;
    wait_ready(&http, &origin_base, Duration::from_secs(300)).await?;
    let key: Value = http
        .post(format!("{origin_base}/v1/tenants/default/keys"))
        .bearer_auth(ADMIN)
        .json(&json!({"scopes": ["replicate"], "label": "bench"}))
        .send()
        .await?
        .json()
        .await?;
    let key = key["key"].as_str().context("no replicate key")?.to_owned();

    // Bootstrap.
    eprintln!("bootstrapping an edge");
    let edge_port = free_port()?;
    let edge_base = format!("http://127.0.0.1:{edge_port}");
    let _edge = spawn(
        edge_dir.path(),
        edge_port,
        &[
            ("VITRINE__EDGE__ORIGIN_URL", origin_base.clone()),
            ("VITRINE__EDGE__KEY", key.clone()),
        ],
    )?;
    wait_ready(&http, &edge_base, Duration::from_secs(1800)).await?;
    let view = replica_view(&http, &edge_base).await?;
    let secs = view["bootstrap_secs"].as_f64().context("no bootstrap time")?;
    let products = view["bootstrap_products"].as_u64().unwrap_or(0);
    let bytes = metric(&http, &edge_base, "vitrine_replica_bytes_received_total").await?;
    let bootstrap = json!({
        "products": products,
        "seconds": secs,
        "products_per_second": products as f64 / secs,
        "bytes_per_product": bytes / products.max(1) as f64,
        "page_size": 500,
    });
    eprintln!("{bootstrap}");

    // Follow lag under sustained writes (metadata only: no re-embedding,
    // so the origin's writes are not held up by its indexer).
    eprintln!(
        "follow lag at {} writes/s for {} s",
        o.writes_per_second, o.write_secs
    );
    let writes = usize::try_from(u64::from(o.writes_per_second) * o.write_secs).unwrap_or(0);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, i64)>();
    let writer = {
        let (http, origin_base, key) = (http.clone(), origin_base.clone(), key.clone());
        let every = Duration::from_secs_f64(1.0 / f64::from(o.writes_per_second.max(1)));
        let products = o.products.max(1);
        tokio::spawn(async move {
            let start = Instant::now();
            for i in 0..writes {
                let due = start + every * u32::try_from(i).unwrap_or(u32::MAX);
                tokio::time::sleep_until(due.into()).await;
                let http = http.clone();
                let (origin_base, key, tx) = (origin_base.clone(), key.clone(), tx.clone());
                tokio::spawn(async move {
                    let r = http
                        .patch(format!(
                            "{origin_base}/v1/tenants/default/products/p{}",
                            (i * 7919) % products
                        ))
                        .bearer_auth(ADMIN)
                        .json(&json!({"metadata": {"write": i}}))
                        .send()
                        .await;
                    if !r.is_ok_and(|r| r.status().is_success()) {
                        return;
                    }
                    let done = Instant::now();
                    let head: Option<Value> = match http
                        .get(format!("{origin_base}/v1/replication/feed?after=0&limit=1"))
                        .bearer_auth(&key)
                        .send()
                        .await
                    {
                        Ok(r) => r.json().await.ok(),
                        Err(_) => None,
                    };
                    if let Some(h) = head.and_then(|h| h["head"].as_i64()) {
                        let _ = tx.send((done, h));
                    }
                });
            }
        })
    };
    let mut pending: Vec<(Instant, i64)> = Vec::new();
    let mut lags = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(o.write_secs + 30);
    loop {
        while let Ok(w) = rx.try_recv() {
            pending.push(w);
        }
        let applied = replica_view(&http, &edge_base).await?["applied_seq"]
            .as_i64()
            .unwrap_or(0);
        let now = Instant::now();
        pending.retain(|(at, head)| {
            if applied >= *head {
                lags.push(now.duration_since(*at).as_secs_f64() * 1000.0);
                false
            } else {
                true
            }
        });
        if (writer.is_finished() && pending.is_empty() && lags.len() + 50 >= writes) || now > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lags.sort_by(f64::total_cmp);
    // Metadata-only writes leave the edge's points where they are, as the
    // origin's: its index stays as fast as the origin's.
    let unchanged = metric(&http, &edge_base, crate::replica::POINTS_UNCHANGED).await?;
    let follow = json!({
        "writes_per_second": o.writes_per_second,
        "writes_measured": lags.len(),
        "lag_ms_p50": percentile(&lags, 50.0),
        "lag_ms_p99": percentile(&lags, 99.0),
        "lag_ms_max": lags.last().copied().unwrap_or(0.0),
        "points_left_unchanged": unchanged,
        "probe_every_ms": "about 5 (one /health/dependencies read per probe)",
    });
    eprintln!("{follow}");

    // Search p99, edge against origin, paired rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let texts: Vec<String> = (0..o.queries)
        .map(|i| {
            format!(
                "{} product {i}",
                ["red boots", "summer dress", "leather bag", "wool hat"][i % 4]
            )
        })
        .collect();
    for t in texts.iter().take(100) {
        timed_search(&http, &origin_base, t).await?;
        timed_search(&http, &edge_base, t).await?;
    }
    let mut rounds = Vec::new();
    for r in 0..o.rounds {
        let mut sides = [
            (origin_base.as_str(), Vec::new()),
            (edge_base.as_str(), Vec::new()),
        ];
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let base = sides[side].0.to_owned();
            for t in &texts {
                let ms = timed_search(&http, &base, t).await?;
                sides[side].1.push(ms);
            }
            sides[side].1.sort_by(f64::total_cmp);
        }
        let (o99, e99) = (percentile(&sides[0].1, 99.0), percentile(&sides[1].1, 99.0));
        rounds.push(json!({
            "origin_p50_ms": percentile(&sides[0].1, 50.0), "origin_p99_ms": o99,
            "edge_p50_ms": percentile(&sides[1].1, 50.0), "edge_p99_ms": e99,
            "edge_over_origin_p99": e99 / o99,
        }));
    }
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|r| r["edge_over_origin_p99"].as_f64())
        .collect();
    let spread = (
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    Ok(json!({
        "products": o.products,
        "bootstrap": bootstrap,
        "follow": follow,
        "search": {
            "queries_per_side_per_round": o.queries,
            "rounds": rounds,
            "edge_over_origin_p99_median": median(ratios),
            "edge_over_origin_p99_range": [spread.0, spread.1],
        },
    }))
}
