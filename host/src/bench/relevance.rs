//! Relevance and cost of hybrid search: `vitrine bench relevance` (a
//! synthetic catalog with known answers, nDCG@10 and recall@10 per mode
//! and query type, against an independent BM25) and `vitrine bench hybrid`
//! (latency of each mode and of facets at scale, index size per
//! representation).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::{model_or_random_vit_b32, percentile, spread};
use crate::api::search::TEXT_WEIGHTS;
use crate::encoder::{Encoder, EncoderOptions};
use crate::search::SearchMode;
use crate::store::vectors::{
    EdgeIndex, FacetField, FacetQuery, Fusion, PointPayload, VectorFilter, VectorIndex, VectorPoint,
    VectorQuery, Weights, keywords,
};

const BRANDS: [&str; 40] = [
    "Aldera",
    "Borvik",
    "Calloway",
    "Dunmore",
    "Ecco",
    "Fjellstad",
    "Garrow",
    "Halden",
    "Ivers",
    "Jorvik",
    "Kestrel",
    "Lindqvist",
    "Marlowe",
    "Nordal",
    "Ostara",
    "Pellham",
    "Quorra",
    "Ravelle",
    "Sable",
    "Tamsin",
    "Ulvang",
    "Vanta",
    "Wexley",
    "Xandor",
    "Yarrow",
    "Zephyra",
    "Ashby",
    "Brisco",
    "Corvid",
    "Delmar",
    "Elstree",
    "Farrago",
    "Glenmore",
    "Hartwell",
    "Inverness",
    "Juniper",
    "Kilburn",
    "Loma",
    "Montague",
    "Norcross",
];

/// (category, product type, sizes).
const KINDS: [(&str, &str, &[&str]); 20] = [
    (
        "footwear",
        "ankle boots",
        &["38", "39", "40", "41", "42", "43", "44", "45"],
    ),
    (
        "footwear",
        "sneakers",
        &["38", "39", "40", "41", "42", "43", "44", "45"],
    ),
    ("footwear", "sandals", &["37", "38", "39", "40", "41", "42"]),
    ("footwear", "loafers", &["39", "40", "41", "42", "43", "44"]),
    ("outerwear", "rain jacket", &["XS", "S", "M", "L", "XL", "XXL"]),
    ("outerwear", "parka", &["S", "M", "L", "XL"]),
    ("tops", "t-shirt", &["XS", "S", "M", "L", "XL"]),
    ("tops", "hoodie", &["S", "M", "L", "XL", "XXL"]),
    ("bottoms", "jeans", &["W28", "W30", "W32", "W34", "W36"]),
    ("bottoms", "chinos", &["W30", "W32", "W34", "W36"]),
    ("bags", "backpack", &["16L", "20L", "25L", "30L"]),
    ("bags", "tote bag", &["12L", "18L"]),
    ("electronics", "headphones", &["one size"]),
    ("electronics", "phone case", &["6.1 inch", "6.7 inch"]),
    ("electronics", "smartwatch", &["41mm", "45mm"]),
    ("home", "coffee mug", &["350ml", "500ml"]),
    ("home", "desk lamp", &["one size"]),
    ("sports", "yoga mat", &["4mm", "6mm"]),
    ("sports", "water bottle", &["500ml", "750ml", "1L"]),
    ("accessories", "sunglasses", &["one size"]),
];

const COLOURS: [&str; 12] = [
    "black", "white", "navy", "olive", "burgundy", "grey", "tan", "red", "teal", "mustard", "cream", "pink",
];
const MATERIALS: [&str; 8] = [
    "leather", "suede", "cotton", "canvas", "wool", "nylon", "ceramic", "steel",
];

/// One product of the synthetic catalog.
#[derive(Debug, Clone)]
pub struct SynthProduct {
    pub id: String,
    pub brand: &'static str,
    pub kind: &'static str,
    pub category: &'static str,
    pub colour: &'static str,
    pub model: String,
    pub title: String,
    pub description: String,
    pub tags: Vec<String>,
    pub price: f64,
}

impl SynthProduct {
    /// The text the index is built from, as for a real product.
    pub fn text(&self) -> String {
        crate::indexing::compose_text(
            &self.title,
            Some(&self.description),
            Some(self.category),
            &self.tags,
        )
    }
}

/// A query with its known answers.
#[derive(Debug, Clone)]
pub struct SynthQuery {
    pub text: String,
    /// `exact` (a model number), `partial` (brand and type), `category` (a
    /// type word, or colour and type) or `misspelled` (brand and type, one
    /// of them with a typo).
    pub kind: &'static str,
    pub relevant: HashSet<String>,
}

/// `n` products: brand, model number, type, colour, material and size in
/// the title; every model number unique.
pub fn synthetic_catalog(n: usize, seed: u64) -> Vec<SynthProduct> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut models = HashSet::new();
    (0..n)
        .map(|i| {
            let brand = BRANDS[rng.random_range(0..BRANDS.len())];
            let (category, kind, sizes) = KINDS[rng.random_range(0..KINDS.len())];
            let colour = COLOURS[rng.random_range(0..COLOURS.len())];
            let material = MATERIALS[rng.random_range(0..MATERIALS.len())];
            let size = sizes[rng.random_range(0..sizes.len())];
            let model = loop {
                let m = if rng.random_bool(0.5) {
                    format!("{}", rng.random_range(100_000u32..999_999))
                } else {
                    let prefix: String = brand.chars().take(2).collect::<String>().to_uppercase();
                    format!("{prefix}{}", rng.random_range(1000u32..9999))
                };
                if models.insert(m.clone()) {
                    break m;
                }
            };
            SynthProduct {
                id: format!("p{i}"),
                brand,
                kind,
                category,
                colour,
                title: format!("{brand} {model} {colour} {material} {kind} size {size}"),
                description: format!("A {material} {kind} in {colour} by {brand}."),
                tags: vec![colour.into(), material.into()],
                price: f64::from(rng.random_range(500u32..50_000)) / 100.0,
                model,
            }
        })
        .collect()
}

/// One typo: two neighbouring letters swapped, or one dropped.
fn typo(word: &str, rng: &mut StdRng) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() < 4 {
        return word.to_owned();
    }
    let i = rng.random_range(1..chars.len() - 1);
    if rng.random_bool(0.5) {
        chars.swap(i, i + 1);
    } else {
        chars.remove(i);
    }
    chars.into_iter().collect()
}

/// Queries of each kind with their relevant products.
pub fn synthetic_queries(catalog: &[SynthProduct], seed: u64) -> Vec<SynthQuery> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let ids = |f: &dyn Fn(&SynthProduct) -> bool| -> HashSet<String> {
        catalog.iter().filter(|p| f(p)).map(|p| p.id.clone()).collect()
    };
    for i in 0..400 {
        let p = &catalog[rng.random_range(0..catalog.len())];
        let text = if i % 2 == 0 {
            p.model.clone()
        } else {
            format!("{} {}", p.brand, p.model)
        };
        out.push(SynthQuery {
            text,
            kind: "exact",
            relevant: HashSet::from([p.id.clone()]),
        });
    }
    for _ in 0..200 {
        let p = &catalog[rng.random_range(0..catalog.len())];
        out.push(SynthQuery {
            text: format!("{} {}", p.brand, p.kind),
            kind: "partial",
            relevant: ids(&|q| q.brand == p.brand && q.kind == p.kind),
        });
    }
    for (_, kind, _) in KINDS {
        out.push(SynthQuery {
            text: kind.to_owned(),
            kind: "category",
            relevant: ids(&|q| q.kind == kind),
        });
    }
    for _ in 0..80 {
        let p = &catalog[rng.random_range(0..catalog.len())];
        out.push(SynthQuery {
            text: format!("{} {}", p.colour, p.kind),
            kind: "category",
            relevant: ids(&|q| q.colour == p.colour && q.kind == p.kind),
        });
    }
    for i in 0..200 {
        let p = &catalog[rng.random_range(0..catalog.len())];
        let text = if i % 2 == 0 {
            format!("{} {}", typo(&p.brand.to_lowercase(), &mut rng), p.kind)
        } else {
            let words: Vec<String> = p.kind.split(' ').map(|w| typo(w, &mut rng)).collect();
            format!("{} {}", p.brand, words.join(" "))
        };
        out.push(SynthQuery {
            text,
            kind: "misspelled",
            relevant: ids(&|q| q.brand == p.brand && q.kind == p.kind),
        });
    }
    out
}

/// nDCG@10 with binary relevance.
pub fn ndcg_at_10(ranked: &[String], relevant: &HashSet<String>) -> f64 {
    let gain = |i: usize| 1.0 / ((i + 2) as f64).log2();
    let dcg: f64 = ranked
        .iter()
        .take(10)
        .enumerate()
        .filter(|(_, id)| relevant.contains(*id))
        .map(|(i, _)| gain(i))
        .sum();
    let ideal: f64 = (0..relevant.len().min(10)).map(gain).sum();
    if ideal > 0.0 { dcg / ideal } else { 0.0 }
}

/// Relevant products in the top 10, over as many as could be there
/// (`min(10, |relevant|)`).
pub fn recall_at_10(ranked: &[String], relevant: &HashSet<String>) -> f64 {
    let found = ranked.iter().take(10).filter(|id| relevant.contains(*id)).count();
    let possible = relevant.len().min(10);
    if possible > 0 {
        found as f64 / possible as f64
    } else {
        0.0
    }
}

pub struct RelevanceOptions<'a> {
    pub model: Option<&'a Path>,
    pub products: usize,
    pub threads: Option<usize>,
    /// A Python with `rank_bm25` and `snowballstemmer`: runs
    /// `scripts/bm25_reference.py` on the same set.
    pub python: Option<&'a Path>,
}

/// Per mode and per query kind: nDCG@10, recall@10 and top-1.
pub async fn relevance(o: &RelevanceOptions<'_>) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let model = model_or_random_vit_b32(o.model, dir.path())?;
    let catalog = synthetic_catalog(o.products, 7);
    let queries = synthetic_queries(&catalog, 11);
    let encoder = Encoder::from_dir(
        &model,
        &EncoderOptions {
            threads: o.threads,
            ..EncoderOptions::default()
        },
    )?;
    let embed = |texts: &[String]| -> anyhow::Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(32) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            out.extend(encoder.embed_texts(&refs)?);
        }
        Ok(out)
    };
    let t = Instant::now();
    let texts: Vec<String> = catalog.iter().map(SynthProduct::text).collect();
    let product_vectors = embed(&texts)?;
    let query_vectors = embed(&queries.iter().map(|q| q.text.clone()).collect::<Vec<_>>())?;
    let embed_secs = t.elapsed().as_secs_f64();
    let index = EdgeIndex::open_async(dir.path().join("data"), encoder.dims()).await?;
    let points: Vec<VectorPoint> = catalog
        .iter()
        .zip(&product_vectors)
        .zip(&texts)
        .map(|((p, v), text)| VectorPoint {
            tenant: "bench".into(),
            product_id: p.id.clone(),
            // No photos: a product without an image has its text's vector.
            vector: v.clone(),
            text_vector: Some(v.clone()),
            keywords: keywords::document("bench", text),
            payload: PointPayload {
                category: Some(p.category.into()),
                price: Some(p.price),
                currency: Some("EUR".into()),
                tags: p.tags.clone(),
                in_stock: true,
            },
        })
        .collect();
    for chunk in points.chunks(256) {
        index.upsert(chunk.to_vec()).await?;
    }
    index.optimize().await?;

    let equal = Weights {
        image: 1.0,
        text: 1.0,
        keyword: 1.0,
    };
    // (name, the fused legs' weights and fusion; none: one leg)
    type Mode = (&'static str, Option<(Weights, Fusion)>);
    let modes: [Mode; 5] = [
        ("vector", None),
        ("keyword", None),
        ("hybrid", Some((TEXT_WEIGHTS, Fusion::Relative))),
        ("hybrid_rrf", Some((TEXT_WEIGHTS, Fusion::Rrf))),
        ("hybrid_equal_weights", Some((equal, Fusion::Relative))),
    ];
    let kinds = ["exact", "partial", "category", "misspelled"];
    let mut report = serde_json::Map::new();
    /// nDCG@10, recall@10 and top-1 of each query.
    #[derive(Default)]
    struct Tally {
        ndcg: Vec<f64>,
        recall: Vec<f64>,
        top1: Vec<f64>,
    }
    for (name, fused) in modes {
        let mut per_kind: HashMap<&str, Tally> = HashMap::new();
        for (q, v) in queries.iter().zip(&query_vectors) {
            let mut query = VectorQuery {
                tenant: "bench".into(),
                limit: 10,
                ..VectorQuery::default()
            };
            match (name, fused) {
                ("vector", _) => query.vector = v.clone(),
                ("keyword", _) => query.keywords = Some(keywords::query("bench", &q.text)),
                (_, Some((weights, fusion))) => {
                    query.vector = v.clone();
                    query.text_vector = Some(v.clone());
                    query.keywords = Some(keywords::query("bench", &q.text));
                    query.weights = weights;
                    query.fusion = fusion;
                }
                _ => unreachable!("every mode is listed"),
            }
            let ranked: Vec<String> = index
                .search(&query)
                .await?
                .into_iter()
                .map(|h| h.product_id)
                .collect();
            let entry = per_kind.entry(q.kind).or_default();
            entry.ndcg.push(ndcg_at_10(&ranked, &q.relevant));
            entry.recall.push(recall_at_10(&ranked, &q.relevant));
            entry.top1.push(f64::from(u8::from(
                ranked.first().is_some_and(|id| q.relevant.contains(id)),
            )));
        }
        let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
        let mut m = serde_json::Map::new();
        for kind in kinds {
            let t = per_kind.remove(kind).unwrap_or_default();
            m.insert(
                kind.into(),
                json!({"queries": t.ndcg.len(), "ndcg@10": mean(&t.ndcg), "recall@10": mean(&t.recall), "top1": mean(&t.top1)}),
            );
        }
        report.insert(name.into(), Value::Object(m));
    }
    // Hybrid against the better single leg, per kind, in nDCG points.
    let score = |mode: &str, kind: &str| report[mode][kind]["ndcg@10"].as_f64().unwrap_or(0.0);
    let versus: serde_json::Map<String, Value> = kinds
        .iter()
        .map(|k| {
            let best = score("vector", k).max(score("keyword", k));
            (
                (*k).to_owned(),
                json!({"hybrid_minus_best_leg": score("hybrid", k) - best,
                       "hybrid_rrf_minus_best_leg": score("hybrid_rrf", k) - best}),
            )
        })
        .collect();
    let reference = match o.python {
        Some(python) => Some(bm25_reference(python, &catalog, &texts, &queries, &report)?),
        None => None,
    };
    Ok(json!({
        "products": catalog.len(),
        "queries": queries.len(),
        "model": model.display().to_string(),
        "embed_secs": embed_secs,
        "default_weights": {"image": TEXT_WEIGHTS.image, "text": TEXT_WEIGHTS.text, "keyword": TEXT_WEIGHTS.keyword},
        "modes": report,
        "hybrid_vs_best_single_leg": versus,
        "rank_bm25": reference,
    }))
}

/// Runs `scripts/bm25_reference.py` (rank_bm25's BM25Okapi, its own
/// tokenizer and Snowball stemmer) on the same set; its nDCG@10 beside the
/// keyword mode's.
fn bm25_reference(
    python: &Path,
    catalog: &[SynthProduct],
    texts: &[String],
    queries: &[SynthQuery],
    report: &serde_json::Map<String, Value>,
) -> anyhow::Result<Value> {
    let set = json!({
        "docs": catalog.iter().zip(texts).map(|(p, t)| json!({"id": p.id, "text": t})).collect::<Vec<_>>(),
        "queries": queries.iter().map(|q| {
            let mut relevant: Vec<&String> = q.relevant.iter().collect();
            relevant.sort();
            json!({"text": q.text, "kind": q.kind, "relevant": relevant})
        }).collect::<Vec<_>>(),
    });
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), serde_json::to_vec(&set)?)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/bm25_reference.py");
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(file.path())
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Value = serde_json::from_slice(&out.stdout)?;
    let mut diff = serde_json::Map::new();
    if let Some(kinds) = theirs.as_object() {
        for (kind, v) in kinds {
            let ours = report["keyword"][kind.as_str()]["ndcg@10"]
                .as_f64()
                .unwrap_or(0.0);
            let other = v["ndcg@10"].as_f64().unwrap_or(0.0);
            diff.insert(kind.clone(), json!(ours - other));
        }
    }
    Ok(json!({"by_kind": theirs, "keyword_minus_rank_bm25_ndcg@10": diff}))
}

pub struct HybridBenchOptions<'a> {
    pub products: usize,
    /// Checkpoint directory; default: a random-weight ViT-B/32.
    pub model: Option<&'a Path>,
    pub queries: usize,
    pub rounds: usize,
    pub threads: Option<usize>,
}

/// Bytes under `dir` whose path contains `needle`.
fn bytes_under(dir: &Path, needle: &str) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if path.to_string_lossy().contains(needle) => total += m.len(),
                _ => {}
            }
        }
    }
    total
}

/// What one timed variant runs.
#[derive(Clone, Copy)]
enum Variant {
    Service(SearchMode, bool),
    Engine(&'static str),
}

/// Hybrid search at scale, on `products` products written by `populate`
/// (random unit vectors, their texts' keyword vectors, the catalog):
///
/// * `service`: whole text searches through the search service as `vitrine
///   serve` runs them (a new query text each time, so every search embeds
///   it; hydration from the catalog; page cache off), in each mode, and
///   hybrid with four facets;
/// * `engine`: the vector index alone, each mode's legs and fusion;
///
/// in paired rounds: every round runs every variant back to back (the
/// order rotating), and ratios to vector mode are taken within a round.
/// Also the bytes per product of each representation on disk.
pub async fn hybrid(o: &HybridBenchOptions<'_>) -> anyhow::Result<Value> {
    use std::sync::Arc;

    use crate::plugins::{PluginChoice, PluginRegistry};
    use crate::search::{FacetSpec, PluginSelection, QuerySource, SearchRequest};

    let dir = tempfile::tempdir()?;
    let stack = super::bench_stack(dir.path(), o.model, o.products, o.threads, |_| {}).await?;
    let (populated, settings, catalog, vectors, shared_encoder) = (
        stack.populated,
        stack.settings,
        stack.catalog,
        stack.vectors,
        stack.encoder,
    );
    let index = vectors.index().map_err(|e| anyhow::anyhow!(e))?;
    let blobs = crate::media::BlobStore::open(None, dir.path())?;
    let host = crate::server::plugin_host(&settings, blobs)?;
    let registry = Arc::new(PluginRegistry::new(host, catalog.clone()));
    let fetcher = Arc::new(crate::media::ImageFetcher::new(
        crate::media::FetchConfig::from_settings(&settings.media),
    )?);
    let search = crate::server::app_state(
        &settings,
        catalog,
        shared_encoder.clone(),
        vectors,
        fetcher,
        registry,
    )
    .search;
    let n = o.products.max(1) as f64;
    let root = dir.path().join("vectors");
    let size = json!({
        "image_vector_bytes_per_product": bytes_under(&root, "vector_storage-image") as f64 / n,
        "image_hnsw_bytes_per_product": bytes_under(&root, "vector_index-image") as f64 / n,
        "text_vector_bytes_per_product": bytes_under(&root, "vector_storage-text") as f64 / n,
        "text_hnsw_bytes_per_product": bytes_under(&root, "vector_index-text") as f64 / n,
        "keywords_bytes_per_product": (bytes_under(&root, "vector_storage-keywords") + bytes_under(&root, "vector_index-keywords")) as f64 / n,
        "payload_bytes_per_product": (bytes_under(&root, "payload_storage") + bytes_under(&root, "payload_index")) as f64 / n,
        "total_bytes_per_product": bytes_under(&root, "") as f64 / n,
    });
    const CATEGORIES: [&str; 8] = [
        "boots", "dresses", "bags", "hats", "shirts", "toys", "fruit", "tools",
    ];
    let facets = FacetSpec {
        fields: vec![
            FacetField::Category,
            FacetField::Tags,
            FacetField::InStock,
            FacetField::Price,
        ],
        limit: 10,
        price_buckets: vec![10.0, 25.0, 50.0, 100.0, 250.0],
    };
    let request = |text: String, mode: SearchMode, faceted: bool| SearchRequest {
        tenant: "default".into(),
        source: QuerySource::Text(text),
        mode,
        weights: TEXT_WEIGHTS,
        fusion: Fusion::Relative,
        facets: faceted.then(|| facets.clone()),
        filter: VectorFilter::default(),
        limit: 10,
        offset: 0,
        min_score: None,
        plugins: PluginSelection {
            filter: PluginChoice::Off,
            ranker: PluginChoice::Off,
        },
        user_id: None,
        session_id: None,
        generation: None,
    };
    let encoder = shared_encoder.service().map_err(|e| anyhow::anyhow!(e))?;
    let variants: [(&str, Variant); 8] = [
        ("service_vector", Variant::Service(SearchMode::Vector, false)),
        ("service_hybrid", Variant::Service(SearchMode::Hybrid, false)),
        ("service_keyword", Variant::Service(SearchMode::Keyword, false)),
        (
            "service_hybrid_with_facets",
            Variant::Service(SearchMode::Hybrid, true),
        ),
        ("engine_vector", Variant::Engine("vector")),
        ("engine_hybrid", Variant::Engine("hybrid")),
        ("engine_hybrid_rrf", Variant::Engine("hybrid_rrf")),
        ("engine_keyword", Variant::Engine("keyword")),
    ];
    let mut p50: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut p99: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut ratios: HashMap<&str, Vec<f64>> = HashMap::new();
    let mut facet_ms = Vec::new();
    let mut rng = StdRng::seed_from_u64(9);
    for round in 0..=o.rounds {
        let mut round_p99: HashMap<&str, f64> = HashMap::new();
        for k in 0..variants.len() {
            let (name, variant) = variants[(k + round) % variants.len()];
            let mut times = Vec::with_capacity(o.queries);
            for i in 0..o.queries {
                // A new text each time: every service search embeds it.
                let text = format!(
                    "{} product {} {round} {name} {i}",
                    CATEGORIES[i % CATEGORIES.len()],
                    rng.random_range(0..o.products.max(1))
                );
                let start = Instant::now();
                match variant {
                    Variant::Service(mode, faceted) => {
                        let r = search.search(request(text, mode, faceted)).await?;
                        anyhow::ensure!(!r.hits.is_empty(), "{name}: no hits");
                    }
                    Variant::Engine(mode) => {
                        // The query's embedding is not timed here.
                        let v = encoder.embed_text(text.clone()).await?;
                        let start_search = Instant::now();
                        let mut q = VectorQuery {
                            tenant: "default".into(),
                            limit: 10,
                            ..VectorQuery::default()
                        };
                        if mode != "keyword" {
                            q.vector = v.clone();
                        }
                        if mode.starts_with("hybrid") {
                            q.text_vector = Some(v);
                            q.weights = TEXT_WEIGHTS;
                        }
                        if mode != "vector" {
                            q.keywords = Some(keywords::query("default", &text));
                        }
                        if mode == "hybrid_rrf" {
                            q.fusion = Fusion::Rrf;
                        }
                        index.search(&q).await?;
                        times.push(start_search.elapsed().as_secs_f64() * 1000.0);
                        continue;
                    }
                }
                times.push(start.elapsed().as_secs_f64() * 1000.0);
            }
            if round == 0 {
                continue; // warm-up
            }
            times.sort_by(f64::total_cmp);
            round_p99.insert(name, percentile(&times, 99.0));
            p99.entry(name).or_default().push(percentile(&times, 99.0));
            p50.entry(name).or_default().push(percentile(&times, 50.0));
        }
        if round == 0 {
            continue;
        }
        for (name, v) in &round_p99 {
            let base = if name.starts_with("service") {
                round_p99["service_vector"]
            } else {
                round_p99["engine_vector"]
            };
            ratios.entry(name).or_default().push(v / base);
        }
        // Facets alone, on the whole catalog.
        for _ in 0..o.queries.min(100) {
            let q = FacetQuery {
                tenant: "default".into(),
                filter: VectorFilter::default(),
                fields: facets.fields.clone(),
                limit: 10,
                price_buckets: facets.price_buckets.clone(),
            };
            let t = Instant::now();
            index.facets(&q).await?;
            facet_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let per_variant: serde_json::Map<String, Value> = variants
        .iter()
        .map(|(name, _)| {
            (
                (*name).to_owned(),
                json!({"p50_ms": spread(p50[name].clone()), "p99_ms": spread(p99[name].clone()),
                       "p99_over_vector_p99": spread(ratios[name].clone())}),
            )
        })
        .collect();
    facet_ms.sort_by(f64::total_cmp);
    Ok(json!({
        "products": o.products,
        "populate": populated,
        "queries_per_variant_per_round": o.queries,
        "rounds": o.rounds,
        "index_size": size,
        "variants": per_variant,
        "facets_alone_ms": {"p50": percentile(&facet_ms, 50.0), "p99": percentile(&facet_ms, 99.0)},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_set_has_unique_models_and_answers_for_every_query() {
        let catalog = synthetic_catalog(2000, 7);
        let models: HashSet<&str> = catalog.iter().map(|p| p.model.as_str()).collect();
        assert_eq!(models.len(), catalog.len());
        let queries = synthetic_queries(&catalog, 11);
        assert!(
            queries.iter().all(|q| !q.relevant.is_empty()),
            "a query without answers"
        );
        for kind in ["exact", "partial", "category", "misspelled"] {
            assert!(queries.iter().filter(|q| q.kind == kind).count() >= 100, "{kind}");
        }
    }

    #[test]
    fn ndcg_and_recall_count_what_they_should() {
        let rel: HashSet<String> = ["a", "b"].iter().map(|s| (*s).to_string()).collect();
        let ranked = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        assert!((ndcg_at_10(&ranked(&["a", "b", "c"]), &rel) - 1.0).abs() < 1e-12);
        assert!(ndcg_at_10(&ranked(&["c", "a"]), &rel) < ndcg_at_10(&ranked(&["a", "c"]), &rel));
        assert_eq!(ndcg_at_10(&ranked(&["c", "d"]), &rel), 0.0);
        assert_eq!(recall_at_10(&ranked(&["a", "c"]), &rel), 0.5);
    }
}
