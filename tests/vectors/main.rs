//! Runs the backend-agnostic contract suite on `EdgeIndex`, plus
//! edge-specific tests (on-disk layout, dims check at open, crash durability).

// A test suite / benchmark: a failed step stops it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;
use vitrine::store::vectors::contract::{self, point, query, random_vector};
use vitrine::store::vectors::{EdgeIndex, PointPayload, VectorError, VectorIndex};

const DIMS: usize = 16;

fn fresh() -> (TempDir, EdgeIndex) {
    let dir = tempfile::tempdir().unwrap();
    let idx = EdgeIndex::open(dir.path(), DIMS).unwrap();
    (dir, idx)
}

macro_rules! contract_test {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (_dir, idx) = fresh();
            contract::$name(&idx).await;
        }
    )*};
}

contract_test!(
    upsert_and_search_nearest,
    tenant_isolation,
    filters,
    exclude_product,
    min_score,
    pagination,
    upsert_replaces,
    delete_and_delete_tenant,
    get_vector_normalised,
    counts,
    dimension_mismatch,
    generations,
    writes_reach_a_generation_under_construction,
    keyword_search,
    text_leg,
    hybrid_fusion,
    malformed_keywords,
    get_points_and_same_point,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn property_random() {
    for seed in [42, 7] {
        let (_dir, idx) = fresh();
        contract::property_random(&idx, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facets_property() {
    for seed in [5, 11, 13] {
        let (_dir, idx) = fresh();
        contract::facets_property(&idx, seed).await;
    }
}

/// An index written before hybrid search (one unnamed vector per point)
/// opens as `Layout::Single`: vector search goes on, the other legs are
/// refused as not found, writes keep landing; a full reindex (a new
/// generation) moves it to `Layout::Hybrid` with no moment without an index.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_vector_index_serves_until_a_reindex_moves_it_over() {
    use qdrant_edge::{DEFAULT_VECTOR_NAME, Distance, EdgeConfig, EdgeShard, EdgeVectorParams};
    use vitrine::store::vectors::{Layout, VectorQuery, keywords};

    let dir = tempfile::tempdir().unwrap();
    let shard_dir = dir.path().join("vectors/gen-1");
    std::fs::create_dir_all(&shard_dir).unwrap();
    let config = EdgeConfig::builder()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParams::builder(DIMS, Distance::Cosine).build(),
        )
        .build();
    let shard = EdgeShard::new(&shard_dir, config).unwrap();
    shard.flush();
    drop(shard);
    std::fs::write(dir.path().join("vectors/CURRENT"), "gen-1\n").unwrap();

    let idx = EdgeIndex::open(dir.path(), DIMS).unwrap();
    assert_eq!(idx.layout(), Layout::Single);
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(5);
    let mut points = contract::text_points(&mut rng, "t", DIMS);
    idx.upsert(points.clone()).await.unwrap();
    let hits = idx
        .search(&query("t", points[0].vector.clone(), 3))
        .await
        .unwrap();
    assert_eq!(hits[0].product_id, points[0].product_id);
    let keyword = VectorQuery {
        tenant: "t".into(),
        keywords: Some(keywords::query("t", "ecco")),
        limit: 3,
        ..VectorQuery::default()
    };
    assert!(matches!(
        idx.search(&keyword).await,
        Err(VectorError::NotFound(..))
    ));
    let (_, text) = idx
        .get_vectors("t", &points[0].product_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(text, None);

    // The reindex: a new generation gets every point; writes meanwhile
    // reach both; the switch is atomic.
    let generation = idx.begin_generation(DIMS).await.unwrap();
    idx.upsert_generation(&generation, points[..5].to_vec())
        .await
        .unwrap();
    idx.upsert(points[5..].to_vec()).await.unwrap();
    assert_eq!(idx.layout(), Layout::Single);
    assert_eq!(
        idx.search(&query("t", points[0].vector.clone(), 3))
            .await
            .unwrap()[0]
            .product_id,
        points[0].product_id
    );
    idx.commit_generation(generation).await.unwrap();
    assert_eq!(idx.layout(), Layout::Hybrid);
    assert_eq!(idx.count(Some("t")).await.unwrap(), points.len() as u64);
    let hits = idx.search(&keyword).await.unwrap();
    assert_eq!(hits.len(), 3, "{hits:?}");
    drop(idx);
    // Reopened, it stays hybrid.
    let idx = EdgeIndex::open(dir.path(), DIMS).unwrap();
    assert_eq!(idx.layout(), Layout::Hybrid);
    points.truncate(1);
    assert!(
        idx.get_vectors("t", &points[0].product_id)
            .await
            .unwrap()
            .unwrap()
            .1
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    contract::persistence(|| {
        let path = path.clone();
        async move { Box::new(EdgeIndex::open_async(path, DIMS).await.unwrap()) as Box<dyn VectorIndex> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_with_other_dims_keeps_the_stored_index() {
    // A new model (another dimension) must not make the old index
    // unreadable: it serves on until a full reindex replaces it.
    let dir = tempfile::tempdir().unwrap();
    let idx = EdgeIndex::open(dir.path(), DIMS).unwrap();
    let mut rng: rand::rngs::StdRng = rand::SeedableRng::seed_from_u64(3);
    idx.upsert(vec![point(
        "t",
        "p",
        random_vector(&mut rng, DIMS),
        PointPayload::default(),
    )])
    .await
    .unwrap();
    drop(idx);
    let idx = EdgeIndex::open(dir.path(), DIMS + 1).unwrap();
    assert_eq!(idx.dims(), DIMS);
    assert_eq!(idx.count(None).await.unwrap(), 1);
    match idx
        .upsert(vec![point(
            "t",
            "q",
            random_vector(&mut rng, DIMS + 1),
            PointPayload::default(),
        )])
        .await
    {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!((expected, got), (DIMS, DIMS + 1))
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
    drop(idx);
    assert!(EdgeIndex::open(dir.path(), 0).is_err());
}

fn read_current(root: &Path) -> String {
    std::fs::read_to_string(root.join("vectors/CURRENT")).unwrap()
}

fn gen_dirs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("vectors"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("gen-"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generation_layout_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let idx = EdgeIndex::open(dir.path(), DIMS).unwrap();
    assert_eq!(read_current(dir.path()), "gen-1\n");
    assert_eq!(gen_dirs(dir.path()), ["gen-1"]);

    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
    let g = idx.begin_generation(DIMS * 2).await.unwrap();
    assert_eq!(gen_dirs(dir.path()), ["gen-1", "gen-2"]);
    idx.upsert_generation(
        &g,
        vec![point(
            "t",
            "a",
            random_vector(&mut rng, DIMS * 2),
            PointPayload::default(),
        )],
    )
    .await
    .unwrap();
    idx.commit_generation(g).await.unwrap();
    assert_eq!(read_current(dir.path()), "gen-2\n");
    assert_eq!(gen_dirs(dir.path()), ["gen-2"]);
    assert_eq!(idx.generation(), 2);

    // A reindex that never finished (process died) is cleaned up on open.
    // The handle is simply forgotten, as if the process died mid-build.
    let _stale = idx.begin_generation(DIMS).await.unwrap();
    drop(idx);
    assert_eq!(gen_dirs(dir.path()), ["gen-2", "gen-3"]);
    // Reopen with the committed generation's dims.
    let idx = EdgeIndex::open(dir.path(), DIMS * 2).unwrap();
    assert_eq!(gen_dirs(dir.path()), ["gen-2"]);
    assert_eq!(idx.count(None).await.unwrap(), 1);
    assert_eq!(idx.dims(), DIMS * 2);
    // New generations never reuse a number, not even a removed stale one.
    let g = idx.begin_generation(DIMS).await.unwrap();
    assert_eq!(g.id(), 4);
    idx.abort_generation(g).await.unwrap();
    assert_eq!(gen_dirs(dir.path()), ["gen-2"]);
}

/// Child half of `upsert_survives_process_kill`: opens the index, upserts,
/// and aborts the process without running any destructor (no final flush).
#[test]
fn durability_child() {
    let Ok(dir) = std::env::var("VITRINE_VECTORS_CHILD_DIR") else {
        return; // Only does something when spawned by the parent test.
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let idx = EdgeIndex::open_async(dir.into(), DIMS).await.unwrap();
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
        let points: Vec<_> = (0..50)
            .map(|i| {
                point(
                    "t",
                    &format!("p{i}"),
                    random_vector(&mut rng, DIMS),
                    PointPayload::default(),
                )
            })
            .collect();
        idx.upsert(points).await.unwrap();
        idx.delete("t", &["p0".into()]).await.unwrap();
        std::process::abort();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_survives_process_kill() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "durability_child", "--nocapture", "--test-threads=1"])
        .env("VITRINE_VECTORS_CHILD_DIR", dir.path())
        .status()
        .unwrap();
    assert!(!status.success(), "child should have aborted");
    let idx = EdgeIndex::open(dir.path(), DIMS).unwrap();
    assert_eq!(idx.count(Some("t")).await.unwrap(), 49);
    assert_eq!(idx.get_vector("t", "p0").await.unwrap(), None);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(99);
    let _p0 = random_vector(&mut rng, DIMS);
    let p1 = random_vector(&mut rng, DIMS);
    let hits = idx.search(&query("t", p1, 1)).await.unwrap();
    assert_eq!(hits[0].product_id, "p1");
}

/// Searches keep working while writes, flushes and `optimize` run: the engine's
/// flush panics on lock contention, so this guards the locking scheme.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_writes_and_optimize() {
    let (_dir, idx) = fresh();
    let idx = std::sync::Arc::new(idx);
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    let points: Vec<_> = (0..4000)
        .map(|i| {
            point(
                &format!("t{}", i % 3),
                &format!("p{i}"),
                random_vector(&mut rng, DIMS),
                PointPayload::default(),
            )
        })
        .collect();
    idx.upsert(points[..2000].to_vec()).await.unwrap();

    let mut tasks = Vec::new();
    for (r, p) in points.iter().take(4).enumerate() {
        let idx = idx.clone();
        let q = query(&format!("t{}", r % 3), p.vector.clone(), 10);
        tasks.push(tokio::spawn(async move {
            for _ in 0..100 {
                let hits = idx.search(&q).await.unwrap();
                assert_eq!(hits.len(), 10);
            }
        }));
    }
    {
        let idx = idx.clone();
        let rest = points[2000..].to_vec();
        tasks.push(tokio::spawn(async move {
            for chunk in rest.chunks(100) {
                idx.upsert(chunk.to_vec()).await.unwrap();
            }
        }));
    }
    for _ in 0..3 {
        let idx = idx.clone();
        tasks.push(tokio::spawn(async move { idx.optimize().await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(idx.count(None).await.unwrap(), 4000);
}

/// The same contract on a Qdrant server (qdrant-client over gRPC), plus an
/// equivalence test against Qdrant Edge. Runs when `QDRANT_URL` names a
/// server (e.g. `http://127.0.0.1:6334`); each test uses its own alias and
/// collections and removes them at the end.
mod server {
    use std::future::Future;
    use std::time::Duration;

    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use vitrine::store::vectors::contract::{self, point, random_vector};
    use vitrine::store::vectors::server::ServerConfig;
    use vitrine::store::vectors::{
        EdgeIndex, PointPayload, QdrantIndex, VectorFilter, VectorIndex, VectorQuery,
    };

    use super::DIMS;

    fn url() -> Option<String> {
        match std::env::var("QDRANT_URL") {
            Ok(u) if !u.is_empty() => Some(u),
            _ => {
                eprintln!(
                    "skipped: set QDRANT_URL (e.g. http://127.0.0.1:6334) to run the Qdrant server half"
                );
                None
            }
        }
    }

    fn config(url: &str, name: &str) -> ServerConfig {
        ServerConfig {
            timeout: Duration::from_secs(30),
            collection: name.to_owned(),
            ..ServerConfig::new(url)
        }
    }

    fn unique() -> String {
        format!("vitrine_test_{}", uuid::Uuid::new_v4().simple())
    }

    /// Runs `body` on a fresh server index, then removes it.
    async fn with_index<F, Fut>(body: F)
    where
        F: FnOnce(QdrantIndex) -> Fut,
        Fut: Future<Output = QdrantIndex>,
    {
        let Some(url) = url() else { return };
        let idx = QdrantIndex::connect(config(&url, &unique()), DIMS).await.unwrap();
        let idx = body(idx).await;
        idx.destroy().await.unwrap();
    }

    macro_rules! server_contract_test {
        ($($name:ident),* $(,)?) => {$(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                with_index(|idx| async move {
                    contract::$name(&idx).await;
                    idx
                })
                .await;
            }
        )*};
    }

    server_contract_test!(
        upsert_and_search_nearest,
        tenant_isolation,
        filters,
        exclude_product,
        min_score,
        pagination,
        upsert_replaces,
        delete_and_delete_tenant,
        get_vector_normalised,
        counts,
        dimension_mismatch,
        generations,
        writes_reach_a_generation_under_construction,
        keyword_search,
        text_leg,
        hybrid_fusion,
        malformed_keywords,
        get_points_and_same_point,
    );

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn property_random() {
        for seed in [42, 7] {
            with_index(|idx| async move {
                contract::property_random(&idx, seed).await;
                idx
            })
            .await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn facets_property() {
        for seed in [5, 11] {
            with_index(|idx| async move {
                contract::facets_property(&idx, seed).await;
                idx
            })
            .await;
        }
    }

    /// Both backends answer the same hybrid, keyword and facet queries on
    /// the same points with the same hits and scores.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hybrid_queries_agree_with_the_edge_backend() {
        use vitrine::store::vectors::{FacetField, FacetQuery, Fusion, Weights, keywords};
        with_index(|server| async move {
            let dir = tempfile::tempdir().unwrap();
            let edge = EdgeIndex::open(dir.path(), DIMS).unwrap();
            let mut rng = StdRng::seed_from_u64(31);
            let mut points = contract::text_points(&mut rng, "t1", DIMS);
            points.extend(contract::text_points(&mut rng, "t2", DIMS));
            server.upsert(points.clone()).await.unwrap();
            edge.upsert(points.clone()).await.unwrap();
            let probe = random_vector(&mut rng, DIMS);
            for text in ["ECCO 470304", "ecco boots", "iphone case", "backpack 16l"] {
                for (vector, text_vector, fusion) in [
                    (Vec::new(), None, Fusion::Relative),
                    (probe.clone(), Some(probe.clone()), Fusion::Relative),
                    (probe.clone(), Some(probe.clone()), Fusion::Rrf),
                ] {
                    let q = VectorQuery {
                        tenant: "t1".into(),
                        vector,
                        text_vector,
                        keywords: Some(keywords::query("t1", text)),
                        weights: Weights {
                            image: 0.2,
                            text: 0.3,
                            keyword: 1.0,
                        },
                        fusion,
                        limit: 6,
                        ..VectorQuery::default()
                    };
                    let a = edge.search(&q).await.unwrap();
                    let b = server.search(&q).await.unwrap();
                    assert_eq!(a.len(), b.len(), "{text} {fusion:?}");
                    for (x, y) in a.iter().zip(&b) {
                        assert!(
                            (x.score - y.score).abs() < 1e-3,
                            "{text} {fusion:?}: {a:?} vs {b:?}"
                        );
                    }
                }
            }
            let f = FacetQuery {
                tenant: "t1".into(),
                fields: vec![
                    FacetField::Category,
                    FacetField::Tags,
                    FacetField::InStock,
                    FacetField::Price,
                ],
                limit: 3,
                price_buckets: vec![25.0, 50.0],
                ..FacetQuery::default()
            };
            assert_eq!(edge.facets(&f).await.unwrap(), server.facets(&f).await.unwrap());
            server
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn persistence() {
        let Some(url) = url() else { return };
        let name = unique();
        let (u, n) = (url.clone(), name.clone());
        contract::persistence(move || {
            let config = config(&u, &n);
            async move { Box::new(QdrantIndex::connect(config, DIMS).await.unwrap()) as Box<dyn VectorIndex> }
        })
        .await;
        QdrantIndex::connect(config(&url, &name), DIMS)
            .await
            .unwrap()
            .destroy()
            .await
            .unwrap();
    }

    /// Same points and queries on Qdrant Edge and on the server: the same
    /// top-k, in the same order, with the same scores.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn edge_and_server_return_the_same_top_k() {
        let Some(url) = url() else { return };
        let dir = tempfile::tempdir().unwrap();
        let edge = EdgeIndex::open(dir.path(), DIMS).unwrap();
        let server = QdrantIndex::connect(config(&url, &unique()), DIMS).await.unwrap();
        let mut rng = StdRng::seed_from_u64(99);
        let categories = ["boots", "hats", "bags"];
        let points: Vec<_> = (0..600)
            .map(|i| {
                point(
                    ["a", "b"][i % 2],
                    &format!("p{i}"),
                    random_vector(&mut rng, DIMS),
                    PointPayload {
                        category: Some(categories[i % 3].into()),
                        price: Some((i % 97) as f64),
                        currency: Some("EUR".into()),
                        tags: vec![format!("t{}", i % 4)],
                        in_stock: i % 5 != 0,
                    },
                )
            })
            .collect();
        for chunk in points.chunks(100) {
            edge.upsert(chunk.to_vec()).await.unwrap();
            server.upsert(chunk.to_vec()).await.unwrap();
        }
        edge.optimize().await.unwrap();
        let filters = [
            VectorFilter::default(),
            VectorFilter {
                categories: vec!["hats".into()],
                ..VectorFilter::default()
            },
            VectorFilter {
                price_min: Some(10.0),
                price_max: Some(40.0),
                in_stock: Some(true),
                ..VectorFilter::default()
            },
            VectorFilter {
                tags: vec!["t1".into()],
                categories: vec!["boots".into(), "bags".into()],
                ..VectorFilter::default()
            },
        ];
        let mut compared = 0;
        for (qi, filter) in filters.iter().cycle().take(24).enumerate() {
            let q = VectorQuery {
                tenant: ["a", "b"][qi % 2].into(),
                vector: random_vector(&mut rng, DIMS),
                limit: 10,
                offset: if qi % 3 == 0 { 5 } else { 0 },
                filter: filter.clone(),
                exclude_product: (qi % 4 == 0).then(|| "p0".to_owned()),
                min_score: None,
                ..VectorQuery::default()
            };
            let e = edge.search(&q).await.unwrap();
            let s = server.search(&q).await.unwrap();
            let ids = |h: &[vitrine::store::vectors::ScoredPoint]| {
                h.iter().map(|p| p.product_id.clone()).collect::<Vec<_>>()
            };
            assert_eq!(ids(&e), ids(&s), "query {qi}");
            for (a, b) in e.iter().zip(&s) {
                assert!(
                    (a.score - b.score).abs() < 1e-4,
                    "query {qi}: {} vs {}",
                    a.score,
                    b.score
                );
                assert_eq!(a.payload, b.payload, "query {qi}");
            }
            compared += e.len();
        }
        assert!(compared > 100, "the queries must return hits ({compared})");
        assert_eq!(edge.count(None).await.unwrap(), server.count(None).await.unwrap());
        server.destroy().await.unwrap();
    }
}
