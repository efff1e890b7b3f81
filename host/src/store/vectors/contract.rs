//! Backend-agnostic contract suite for [`VectorIndex`].
//!
//! Every function takes a FRESH, EMPTY index (dims >= 4) and panics on a
//! contract violation. Run it against every backend (see
//! `tests/edge_contract.rs`); a future qdrant-client server backend must pass
//! the same functions unchanged.
//!
//! Tie-robust comparisons: results are compared to a brute-force cosine top-k
//! position by position on *scores* (within [`EPS`]), and every returned id's
//! score is checked against its brute-force score, so two near-equal points
//! swapping places does not fail the suite while a wrong or missing hit does.

// A test suite / benchmark: a failed step stops it with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::future::Future;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{
    FacetField, FacetQuery, Fusion, Keywords, PointPayload, ScoredPoint, VectorError, VectorFilter,
    VectorIndex, VectorPoint, VectorQuery, Weights, keywords, same_point,
};

/// Tolerance for float scores: engines score in f32 (SIMD, different
/// summation order), the reference in f64.
pub const EPS: f32 = 1e-4;

// ---------------------------------------------------------------------------
// Helpers

pub fn random_vector(rng: &mut StdRng, dims: usize) -> Vec<f32> {
    (0..dims).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub fn normalise(v: &[f32]) -> Vec<f32> {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    v.iter().map(|x| (f64::from(*x) / norm) as f32).collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    (dot / (na * nb)) as f32
}

pub fn point(tenant: &str, id: &str, vector: Vec<f32>, payload: PointPayload) -> VectorPoint {
    VectorPoint {
        tenant: tenant.into(),
        product_id: id.into(),
        vector,
        payload,
        ..VectorPoint::default()
    }
}

pub fn query(tenant: &str, vector: Vec<f32>, limit: usize) -> VectorQuery {
    VectorQuery {
        tenant: tenant.into(),
        vector,
        limit,
        ..VectorQuery::default()
    }
}

/// Reference implementation of [`VectorFilter`] semantics.
pub fn filter_matches(f: &VectorFilter, p: &PointPayload) -> bool {
    if !f.categories.is_empty() && !p.category.as_ref().is_some_and(|c| f.categories.contains(c)) {
        return false;
    }
    if let Some(min) = f.price_min
        && !p.price.is_some_and(|x| x >= min)
    {
        return false;
    }
    if let Some(max) = f.price_max
        && !p.price.is_some_and(|x| x <= max)
    {
        return false;
    }
    if !f.tags.iter().all(|t| p.tags.contains(t)) {
        return false;
    }
    if let Some(s) = f.in_stock
        && p.in_stock != s
    {
        return false;
    }
    true
}

/// Brute-force exact answer for `q` over `points` (all tenants).
pub fn brute_force(points: &[VectorPoint], q: &VectorQuery) -> Vec<(String, f32)> {
    let mut hits: Vec<(String, f32)> = points
        .iter()
        .filter(|p| p.tenant == q.tenant)
        .filter(|p| q.exclude_product.as_deref() != Some(p.product_id.as_str()))
        .filter(|p| filter_matches(&q.filter, &p.payload))
        .map(|p| (p.product_id.clone(), cosine(&p.vector, &q.vector)))
        .filter(|(_, s)| q.min_score.is_none_or(|m| *s > m))
        .collect();
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    hits.into_iter().skip(q.offset).take(q.limit).collect()
}

fn ids(hits: &[ScoredPoint]) -> Vec<String> {
    hits.iter().map(|h| h.product_id.clone()).collect()
}

fn id_set(hits: &[ScoredPoint]) -> HashSet<String> {
    hits.iter().map(|h| h.product_id.clone()).collect()
}

fn assert_sorted(hits: &[ScoredPoint]) {
    for w in hits.windows(2) {
        assert!(
            w[0].score >= w[1].score - EPS,
            "hits not sorted by score: {} then {}",
            w[0].score,
            w[1].score
        );
    }
}

fn assert_no_duplicates(hits: &[ScoredPoint]) {
    assert_eq!(id_set(hits).len(), hits.len(), "duplicate hits: {:?}", ids(hits));
}

/// Compare engine hits to the brute-force reference (tie-robust, see module docs).
pub fn assert_matches_reference(hits: &[ScoredPoint], points: &[VectorPoint], q: &VectorQuery) {
    let expected = brute_force(points, q);
    let by_id: HashMap<&str, &VectorPoint> = points
        .iter()
        .filter(|p| p.tenant == q.tenant)
        .map(|p| (p.product_id.as_str(), p))
        .collect();
    assert_no_duplicates(hits);
    for h in hits {
        let p = by_id
            .get(h.product_id.as_str())
            .unwrap_or_else(|| panic!("hit {:?} is not a point of tenant {:?}", h.product_id, q.tenant));
        assert!(
            filter_matches(&q.filter, &p.payload),
            "hit {:?} violates filter {:?}: {:?}",
            h.product_id,
            q.filter,
            p.payload
        );
        assert_ne!(q.exclude_product.as_deref(), Some(h.product_id.as_str()));
        assert_eq!(h.payload, p.payload, "payload of {:?}", h.product_id);
        let reference = cosine(&p.vector, &q.vector);
        assert!(
            (h.score - reference).abs() < EPS,
            "score of {:?}: engine {} vs reference {reference}",
            h.product_id,
            h.score
        );
    }
    assert_eq!(
        hits.len(),
        expected.len(),
        "hit count for {q:?}: got {:?}, expected {expected:?}",
        ids(hits)
    );
    for (i, (h, (eid, es))) in hits.iter().zip(&expected).enumerate() {
        assert!(
            (h.score - es).abs() < EPS,
            "rank {i}: got {:?} ({}), expected {eid:?} ({es})",
            h.product_id,
            h.score
        );
    }
}

fn payload(cat: Option<&str>, price: Option<f64>, tags: &[&str], in_stock: bool) -> PointPayload {
    PointPayload {
        category: cat.map(Into::into),
        price,
        currency: price.map(|_| "EUR".into()),
        tags: tags.iter().map(|t| (*t).into()).collect(),
        in_stock,
    }
}

fn random_points(rng: &mut StdRng, tenant: &str, prefix: &str, n: usize, dims: usize) -> Vec<VectorPoint> {
    (0..n)
        .map(|i| {
            point(
                tenant,
                &format!("{prefix}{i}"),
                random_vector(rng, dims),
                payload(Some("c"), Some(i as f64), &["x"], i % 2 == 0),
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Contract

/// Nearest first; identical vector scores ≈ 1; payload round-trips.
pub async fn upsert_and_search_nearest(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(1);
    let mut points = random_points(&mut rng, "t1", "p", 20, dims);
    points[7].payload = PointPayload {
        category: Some("shoes".into()),
        price: Some(49.5),
        currency: Some("EUR".into()),
        tags: vec!["red".into(), "sale".into()],
        in_stock: true,
    };
    idx.upsert(points.clone()).await.unwrap();
    idx.ping().await.unwrap();

    let q = query("t1", points[7].vector.clone(), 5);
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(hits.len(), 5);
    assert_eq!(hits[0].product_id, "p7");
    assert!((hits[0].score - 1.0).abs() < EPS, "self score {}", hits[0].score);
    assert_eq!(hits[0].payload, points[7].payload);
    assert_sorted(&hits);
    assert_matches_reference(&hits, &points, &q);
}

/// Never returns another tenant's points, even with identical vectors/ids.
pub async fn tenant_isolation(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(2);
    let shared = random_vector(&mut rng, dims);
    let mut points = Vec::new();
    for (tenant, cat) in [("ta", "cat-a"), ("tb", "cat-b")] {
        // Same product ids and the very same vectors in both tenants.
        for i in 0..5 {
            let v = if i == 0 {
                shared.clone()
            } else {
                random_vector(&mut rng, dims)
            };
            points.push(point(
                tenant,
                &format!("p{i}"),
                v,
                payload(Some(cat), None, &[], true),
            ));
        }
    }
    idx.upsert(points.clone()).await.unwrap();

    for (tenant, cat) in [("ta", "cat-a"), ("tb", "cat-b")] {
        let hits = idx.search(&query(tenant, shared.clone(), 100)).await.unwrap();
        assert_eq!(hits.len(), 5, "tenant {tenant}");
        assert!(
            hits.iter().all(|h| h.payload.category.as_deref() == Some(cat)),
            "tenant {tenant} leaked: {hits:?}"
        );
        assert_eq!(hits[0].product_id, "p0");
        assert_eq!(idx.count(Some(tenant)).await.unwrap(), 5);
    }
    assert!(
        idx.search(&query("tc", shared.clone(), 100))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(idx.get_vector("tc", "p0").await.unwrap(), None);

    // Deleting in one tenant leaves the other's same-id point alone.
    idx.delete("ta", &["p0".into()]).await.unwrap();
    assert_eq!(idx.count(Some("ta")).await.unwrap(), 4);
    assert_eq!(idx.count(Some("tb")).await.unwrap(), 5);
    assert!(idx.get_vector("tb", "p0").await.unwrap().is_some());
}

fn filter_catalog(dims: usize) -> Vec<VectorPoint> {
    let mut rng = StdRng::seed_from_u64(3);
    // (category, price, tags, in_stock)
    type Spec<'a> = (Option<&'a str>, Option<f64>, &'a [&'a str], bool);
    let spec: &[Spec] = &[
        (Some("shoes"), Some(10.0), &["red"], true),
        (Some("shoes"), Some(20.0), &["red", "sale"], false),
        (Some("shoes"), None, &["blue"], true),
        (Some("bags"), Some(30.0), &["red", "sale", "new"], true),
        (Some("bags"), Some(40.0), &[], false),
        (Some("hats"), Some(20.0), &["sale"], true),
        (None, Some(15.0), &["red", "sale"], true),
        (None, None, &[], false),
        (Some("hats"), Some(0.0), &["new"], true),
        (Some("bags"), Some(19.99), &["red"], true),
    ];
    spec.iter()
        .enumerate()
        .map(|(i, (c, p, t, s))| {
            point(
                "t1",
                &format!("f{i}"),
                random_vector(&mut rng, dims),
                payload(*c, *p, t, *s),
            )
        })
        .collect()
}

/// Every request filter is honoured and combined with AND.
pub async fn filters(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let catalog = filter_catalog(dims);
    idx.upsert(catalog.clone()).await.unwrap();
    // Noise in another tenant that would match every filter.
    let mut other = filter_catalog(dims);
    for p in &mut other {
        p.tenant = "t2".into();
    }
    idx.upsert(other).await.unwrap();

    let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
    let cases = vec![
        VectorFilter::default(),
        VectorFilter {
            categories: s(&["shoes"]),
            ..Default::default()
        },
        VectorFilter {
            categories: s(&["shoes", "hats"]),
            ..Default::default()
        },
        VectorFilter {
            categories: s(&["nope"]),
            ..Default::default()
        },
        // Inclusive on both ends: 10.0 and 20.0 are in.
        VectorFilter {
            price_min: Some(10.0),
            price_max: Some(20.0),
            ..Default::default()
        },
        VectorFilter {
            price_min: Some(20.0),
            ..Default::default()
        },
        VectorFilter {
            price_max: Some(0.0),
            ..Default::default()
        },
        VectorFilter {
            tags: s(&["red"]),
            ..Default::default()
        },
        VectorFilter {
            tags: s(&["red", "sale"]),
            ..Default::default()
        },
        VectorFilter {
            tags: s(&["red", "sale", "new"]),
            ..Default::default()
        },
        VectorFilter {
            tags: s(&["missing"]),
            ..Default::default()
        },
        VectorFilter {
            in_stock: Some(true),
            ..Default::default()
        },
        VectorFilter {
            in_stock: Some(false),
            ..Default::default()
        },
        VectorFilter {
            categories: s(&["shoes", "bags"]),
            price_min: Some(15.0),
            price_max: Some(35.0),
            tags: s(&["sale"]),
            in_stock: Some(true),
        },
    ];
    let qv = catalog[0].vector.clone();
    for filter in cases {
        let q = VectorQuery {
            filter: filter.clone(),
            ..query("t1", qv.clone(), 100)
        };
        let hits = idx.search(&q).await.unwrap();
        let expected: HashSet<String> = catalog
            .iter()
            .filter(|p| filter_matches(&filter, &p.payload))
            .map(|p| p.product_id.clone())
            .collect();
        assert_eq!(id_set(&hits), expected, "filter {filter:?}");
        assert_matches_reference(&hits, &catalog, &q);
    }
}

/// `exclude_product` removes exactly that product.
pub async fn exclude_product(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(4);
    let points = random_points(&mut rng, "t1", "p", 10, dims);
    idx.upsert(points.clone()).await.unwrap();
    let q = VectorQuery {
        exclude_product: Some("p3".into()),
        ..query("t1", points[3].vector.clone(), 3)
    };
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(hits.len(), 3);
    assert!(!id_set(&hits).contains("p3"));
    assert_matches_reference(&hits, &points, &q);
    // Excluding an unknown product changes nothing.
    let q = VectorQuery {
        exclude_product: Some("zzz".into()),
        ..query("t1", points[3].vector.clone(), 3)
    };
    assert_eq!(idx.search(&q).await.unwrap()[0].product_id, "p3");
}

/// `min_score` drops everything not scoring above it.
pub async fn min_score(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(5);
    let points = random_points(&mut rng, "t1", "p", 40, dims);
    idx.upsert(points.clone()).await.unwrap();
    for threshold in [-0.5f32, 0.0, 0.2, 0.99] {
        let q = VectorQuery {
            min_score: Some(threshold),
            ..query("t1", points[0].vector.clone(), 100)
        };
        let hits = idx.search(&q).await.unwrap();
        assert!(
            hits.iter().all(|h| h.score > threshold - EPS),
            "threshold {threshold}: {hits:?}"
        );
        assert_eq!(hits[0].product_id, "p0");
        assert_matches_reference(&hits, &points, &q);
    }
}

/// Offset/limit pages concatenate to the unpaged result, without duplicates.
pub async fn pagination(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(6);
    let points = random_points(&mut rng, "t1", "p", 30, dims);
    idx.upsert(points.clone()).await.unwrap();
    let qv = random_vector(&mut rng, dims);
    let all = idx.search(&query("t1", qv.clone(), 30)).await.unwrap();
    assert_eq!(all.len(), 30);
    let mut paged = Vec::new();
    for page in 0..5 {
        let q = VectorQuery {
            offset: page * 7,
            ..query("t1", qv.clone(), 7)
        };
        let hits = idx.search(&q).await.unwrap();
        assert_matches_reference(&hits, &points, &q);
        paged.extend(hits);
    }
    assert_eq!(ids(&paged), ids(&all));
    assert_no_duplicates(&paged);
    // Past the end: empty, not an error.
    let q = VectorQuery {
        offset: 30,
        ..query("t1", qv, 7)
    };
    assert!(idx.search(&q).await.unwrap().is_empty());
}

/// Same (tenant, product_id) twice → one point with the newer vector/payload.
pub async fn upsert_replaces(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(7);
    let v1 = random_vector(&mut rng, dims);
    let v2 = random_vector(&mut rng, dims);
    idx.upsert(vec![point(
        "t1",
        "p",
        v1,
        payload(Some("old"), Some(1.0), &["a"], false),
    )])
    .await
    .unwrap();
    let new_payload = payload(Some("new"), Some(2.0), &["b"], true);
    idx.upsert(vec![point("t1", "p", v2.clone(), new_payload.clone())])
        .await
        .unwrap();
    assert_eq!(idx.count(Some("t1")).await.unwrap(), 1);
    assert_eq!(idx.count(None).await.unwrap(), 1);
    let hits = idx.search(&query("t1", v2.clone(), 10)).await.unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].payload, new_payload);
    assert!((hits[0].score - 1.0).abs() < EPS);
    // Replacing to the same content is a no-op (idempotent retries).
    idx.upsert(vec![point("t1", "p", v2, new_payload)]).await.unwrap();
    assert_eq!(idx.count(None).await.unwrap(), 1);
}

/// `delete` removes listed products (unknown ids ignored); `delete_tenant` all of a tenant.
pub async fn delete_and_delete_tenant(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(8);
    let mut points = random_points(&mut rng, "t1", "p", 5, dims);
    points.extend(random_points(&mut rng, "t2", "p", 3, dims));
    idx.upsert(points.clone()).await.unwrap();

    idx.delete("t1", &["p1".into(), "p3".into(), "unknown".into()])
        .await
        .unwrap();
    assert_eq!(idx.count(Some("t1")).await.unwrap(), 3);
    let hits = idx
        .search(&query("t1", points[1].vector.clone(), 10))
        .await
        .unwrap();
    assert_eq!(id_set(&hits), HashSet::from(["p0", "p2", "p4"].map(String::from)));
    assert_eq!(idx.get_vector("t1", "p1").await.unwrap(), None);
    idx.delete("t1", &[]).await.unwrap();

    idx.delete_tenant("t1").await.unwrap();
    assert_eq!(idx.count(Some("t1")).await.unwrap(), 0);
    assert!(
        idx.search(&query("t1", points[0].vector.clone(), 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(idx.count(Some("t2")).await.unwrap(), 3);
    assert_eq!(idx.count(None).await.unwrap(), 3);
    idx.delete_tenant("never-existed").await.unwrap();
}

/// `get_vector` returns the stored, unit-normalised vector.
pub async fn get_vector_normalised(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(9);
    let v: Vec<f32> = random_vector(&mut rng, dims).iter().map(|x| x * 7.0).collect();
    idx.upsert(vec![point("t1", "p", v.clone(), PointPayload::default())])
        .await
        .unwrap();
    let stored = idx.get_vector("t1", "p").await.unwrap().unwrap();
    assert_eq!(stored.len(), dims);
    for (a, b) in stored.iter().zip(normalise(&v)) {
        assert!((a - b).abs() < EPS, "{a} vs {b}");
    }
    assert_eq!(idx.get_vector("t1", "missing").await.unwrap(), None);
}

/// Exact counts per tenant and in total.
pub async fn counts(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    assert_eq!(idx.count(None).await.unwrap(), 0);
    let mut rng = StdRng::seed_from_u64(10);
    let mut points = random_points(&mut rng, "a", "p", 7, dims);
    points.extend(random_points(&mut rng, "b", "p", 4, dims));
    idx.upsert(points).await.unwrap();
    assert_eq!(idx.count(Some("a")).await.unwrap(), 7);
    assert_eq!(idx.count(Some("b")).await.unwrap(), 4);
    assert_eq!(idx.count(Some("c")).await.unwrap(), 0);
    assert_eq!(idx.count(None).await.unwrap(), 11);
    idx.optimize().await.unwrap();
    assert_eq!(idx.count(Some("a")).await.unwrap(), 7);
    assert_eq!(idx.count(None).await.unwrap(), 11);
}

/// Wrong dimensions are rejected with `DimensionMismatch`, and a batch with
/// one bad vector writes nothing.
pub async fn dimension_mismatch(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(11);
    let good = point(
        "t1",
        "good",
        random_vector(&mut rng, dims),
        PointPayload::default(),
    );
    let bad = point(
        "t1",
        "bad",
        random_vector(&mut rng, dims + 1),
        PointPayload::default(),
    );
    match idx.upsert(vec![good, bad]).await {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!((expected, got), (dims, dims + 1));
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
    assert_eq!(idx.count(None).await.unwrap(), 0);
    match idx.search(&query("t1", vec![0.5; dims - 1], 3)).await {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!((expected, got), (dims, dims - 1));
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
}

/// Generation build/commit: searches see the old data until commit, the new
/// data (and new dims) after; abort leaves the live generation untouched.
pub async fn generations(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(12);
    let old = random_points(&mut rng, "t1", "old", 5, dims);
    idx.upsert(old.clone()).await.unwrap();

    let new_dims = dims + 3;
    let generation = idx.begin_generation(new_dims).await.unwrap();
    let new = random_points(&mut rng, "t1", "new", 8, new_dims);
    idx.upsert_generation(&generation, new[..4].to_vec())
        .await
        .unwrap();
    idx.upsert_generation(&generation, new[4..].to_vec())
        .await
        .unwrap();
    match idx.upsert_generation(&generation, old[..1].to_vec()).await {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!((expected, got), (new_dims, dims))
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }

    // Before commit: old generation, old dims.
    assert_eq!(idx.dims(), dims);
    assert_eq!(idx.count(None).await.unwrap(), 5);
    let hits = idx
        .search(&query("t1", old[0].vector.clone(), 100))
        .await
        .unwrap();
    assert_eq!(hits.len(), 5);
    assert!(hits.iter().all(|h| h.product_id.starts_with("old")));

    idx.commit_generation(generation).await.unwrap();

    // After commit: new generation only.
    assert_eq!(idx.dims(), new_dims);
    assert_eq!(idx.count(None).await.unwrap(), 8);
    let q = query("t1", new[2].vector.clone(), 100);
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(hits.len(), 8);
    assert_eq!(hits[0].product_id, "new2");
    assert_matches_reference(&hits, &new, &q);
    assert!(matches!(
        idx.search(&query("t1", old[0].vector.clone(), 10)).await,
        Err(VectorError::DimensionMismatch { .. })
    ));
    // Writes after commit go to the new generation.
    idx.upsert(vec![point(
        "t1",
        "late",
        random_vector(&mut rng, new_dims),
        PointPayload::default(),
    )])
    .await
    .unwrap();
    assert_eq!(idx.count(None).await.unwrap(), 9);

    // Abort: nothing changes.
    let aborted = idx.begin_generation(dims).await.unwrap();
    idx.upsert_generation(&aborted, old.clone()).await.unwrap();
    idx.abort_generation(aborted).await.unwrap();
    assert_eq!(idx.dims(), new_dims);
    assert_eq!(idx.count(None).await.unwrap(), 9);

    // An empty generation commits to an empty index.
    let empty = idx.begin_generation(dims).await.unwrap();
    idx.commit_generation(empty).await.unwrap();
    assert_eq!(idx.dims(), dims);
    assert_eq!(idx.count(None).await.unwrap(), 0);
}

/// The service's writes during a reindex reach the generation under
/// construction too (upserts and deletes), so the committed generation
/// misses nothing; vectors of a new model's dimension go only to a
/// generation of that dimension.
pub async fn writes_reach_a_generation_under_construction(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(14);
    let live = random_points(&mut rng, "t1", "a", 5, dims);
    idx.upsert(live.clone()).await.unwrap();

    let generation = idx.begin_generation(dims).await.unwrap();
    // The rebuild copies a0..a2; meanwhile the service writes and deletes.
    idx.upsert_generation(&generation, live[..3].to_vec())
        .await
        .unwrap();
    let late = point(
        "t1",
        "late",
        random_vector(&mut rng, dims),
        PointPayload::default(),
    );
    idx.upsert(vec![late.clone()]).await.unwrap();
    idx.delete("t1", &["a1".into()]).await.unwrap();
    assert_eq!(idx.count(None).await.unwrap(), 5, "live: a0..a4 - a1 + late");
    idx.commit_generation(generation).await.unwrap();
    let mut ids = idx.product_ids("t1").await.unwrap();
    ids.sort();
    assert_eq!(ids, ["a0", "a2", "late"]);
    let q = query("t1", late.vector.clone(), 10);
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(hits[0].product_id, "late");
    assert!(idx.product_ids("nobody").await.unwrap().is_empty());

    // A model change: the new dimension goes only to the new generation,
    // the old one only to the live index.
    let new_dims = dims + 2;
    let generation = idx.begin_generation(new_dims).await.unwrap();
    let fresh = point(
        "t1",
        "fresh",
        random_vector(&mut rng, new_dims),
        PointPayload::default(),
    );
    idx.upsert(vec![fresh.clone()]).await.unwrap();
    let old_model = point(
        "t1",
        "old",
        random_vector(&mut rng, dims),
        PointPayload::default(),
    );
    idx.upsert(vec![old_model]).await.unwrap();
    assert_eq!(idx.dims(), dims);
    assert_eq!(idx.count(None).await.unwrap(), 4);
    idx.commit_generation(generation).await.unwrap();
    assert_eq!(idx.dims(), new_dims);
    assert_eq!(idx.product_ids("t1").await.unwrap(), ["fresh"]);
    // Without a matching generation, another dimension is refused.
    match idx
        .upsert(vec![point(
            "t1",
            "x",
            random_vector(&mut rng, dims),
            PointPayload::default(),
        )])
        .await
    {
        Err(VectorError::DimensionMismatch { expected, got }) => {
            assert_eq!((expected, got), (new_dims, dims))
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
}

/// Data survives dropping the index and opening it again. `open` must open
/// the SAME store each call (same dir / same server collection).
pub async fn persistence<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Box<dyn VectorIndex>>,
{
    let mut rng = StdRng::seed_from_u64(13);
    let idx = open().await;
    let dims = idx.dims();
    let points = random_points(&mut rng, "t1", "p", 12, dims);
    idx.upsert(points.clone()).await.unwrap();
    idx.delete("t1", &["p11".into()]).await.unwrap();
    drop(idx);

    let idx = open().await;
    assert_eq!(idx.count(None).await.unwrap(), 11);
    let q = query("t1", points[4].vector.clone(), 3);
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(hits[0].product_id, "p4");
    assert_matches_reference(&hits, &points[..11], &q);
    idx.optimize().await.unwrap();
    drop(idx);

    let idx = open().await;
    assert_eq!(idx.count(None).await.unwrap(), 11);
    let hits = idx.search(&q).await.unwrap();
    assert_matches_reference(&hits, &points[..11], &q);
}

/// Random points, random filters: no hit violates a filter or crosses
/// tenants, and results equal a brute-force cosine top-k — before and after
/// `optimize`. Sets are small, so the engine scores exactly (qdrant uses plain
/// search below its indexing/full-scan thresholds); a large-set backend
/// should compare recall instead.
/// A random filter over these categories and tags: a lower price bound
/// below `prices.0`, an upper one in `prices.1`.
fn random_filter(
    rng: &mut StdRng,
    categories: &[&str],
    tag_pool: &[&str],
    prices: (u32, std::ops::Range<u32>),
) -> VectorFilter {
    let mut filter = VectorFilter::default();
    if rng.random_bool(0.4) {
        filter.categories = categories
            .iter()
            .filter(|_| rng.random_bool(0.5))
            .map(|c| (*c).to_string())
            .collect();
    }
    if rng.random_bool(0.3) {
        filter.price_min = Some(f64::from(rng.random_range(0..prices.0)));
    }
    if rng.random_bool(0.3) {
        filter.price_max = Some(f64::from(rng.random_range(prices.1)));
    }
    if rng.random_bool(0.3) {
        filter.tags = tag_pool
            .iter()
            .filter(|_| rng.random_bool(0.3))
            .map(|t| (*t).to_string())
            .collect();
    }
    if rng.random_bool(0.3) {
        filter.in_stock = Some(rng.random_bool(0.5));
    }
    filter
}

pub async fn property_random(idx: &dyn VectorIndex, seed: u64) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(seed);
    let tenants = ["t0", "t1", "t2"];
    let categories = ["c0", "c1", "c2", "c3"];
    let tag_pool = ["k0", "k1", "k2", "k3", "k4"];
    let mut points = Vec::new();
    for i in 0..400 {
        let tenant = tenants[rng.random_range(0..tenants.len())];
        let tags: Vec<String> = tag_pool
            .iter()
            .filter(|_| rng.random_bool(0.4))
            .map(|t| (*t).to_string())
            .collect();
        points.push(VectorPoint {
            tenant: tenant.into(),
            product_id: format!("p{i}"),
            vector: random_vector(&mut rng, dims),
            payload: PointPayload {
                category: rng
                    .random_bool(0.9)
                    .then(|| categories[rng.random_range(0..categories.len())].into()),
                price: rng
                    .random_bool(0.85)
                    .then(|| f64::from(rng.random_range(0u32..100))),
                currency: Some("EUR".into()),
                tags,
                in_stock: rng.random_bool(0.7),
            },
            ..VectorPoint::default()
        });
    }
    // Some points share a product id across tenants with the same vector.
    for i in 0..20 {
        let mut p = points[i].clone();
        p.tenant = tenants[(tenants.iter().position(|t| *t == p.tenant).unwrap_or(0) + 1) % 3].into();
        points.push(p);
    }
    for chunk in points.chunks(64) {
        idx.upsert(chunk.to_vec()).await.unwrap();
    }
    assert_eq!(idx.count(None).await.unwrap(), points.len() as u64);

    for round in 0..2 {
        for _ in 0..60 {
            let tenant = tenants[rng.random_range(0..tenants.len())];
            let filter = random_filter(&mut rng, &categories, &tag_pool, (60, 40..100));
            let vector = if rng.random_bool(0.3) {
                points[rng.random_range(0..points.len())].vector.clone()
            } else {
                random_vector(&mut rng, dims)
            };
            let q = VectorQuery {
                tenant: tenant.into(),
                vector,
                limit: rng.random_range(1..25),
                offset: if rng.random_bool(0.3) {
                    rng.random_range(0..10)
                } else {
                    0
                },
                filter,
                exclude_product: rng
                    .random_bool(0.2)
                    .then(|| format!("p{}", rng.random_range(0..points.len()))),
                min_score: rng.random_bool(0.2).then(|| rng.random_range(-0.2f32..0.3)),
                ..VectorQuery::default()
            };
            let hits = idx.search(&q).await.unwrap();
            assert_matches_reference(&hits, &points, &q);
        }
        if round == 0 {
            idx.optimize().await.unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// Hybrid search: the text and keyword legs, fusion, facets

/// Product texts with brands, model numbers and sizes: (id, category, text).
pub const TEXT_CATALOG: [(&str, &str, &str); 10] = [
    ("boot-1", "boots", "ECCO 470304 leather ankle boots black size 42"),
    ("boot-2", "boots", "ECCO 470305 leather ankle boots brown size 43"),
    (
        "boot-3",
        "boots",
        "Dr. Martens 1460 boots cherry red smooth leather",
    ),
    ("shoe-1", "shoes", "Nike Air Max 90 running shoes white"),
    ("shoe-2", "shoes", "Adidas Ultraboost 22 running shoes black"),
    ("shoe-3", "shoes", "ECCO Biom 2.0 walking shoes"),
    ("case-1", "cases", "Apple iPhone 15 silicone case blue"),
    ("case-2", "cases", "Spigen iPhone 14 rugged armor case"),
    ("bag-1", "bags", "Herschel Little America backpack navy 25L"),
    ("bag-2", "bags", "Fjallraven Kanken backpack ochre 16L"),
];

/// The catalog as points of `tenant`: random image and text vectors, the
/// texts' keyword vectors.
pub fn text_points(rng: &mut StdRng, tenant: &str, dims: usize) -> Vec<VectorPoint> {
    TEXT_CATALOG
        .iter()
        .enumerate()
        .map(|(i, (id, category, text))| VectorPoint {
            tenant: tenant.into(),
            product_id: (*id).into(),
            vector: random_vector(rng, dims),
            text_vector: Some(random_vector(rng, dims)),
            keywords: keywords::document(tenant, text),
            payload: PointPayload {
                category: Some((*category).into()),
                price: Some(10.0 * (i + 1) as f64),
                currency: Some("EUR".into()),
                tags: vec![if i % 2 == 0 { "even" } else { "odd" }.into()],
                in_stock: i % 3 != 0,
            },
        })
        .collect()
}

/// BM25 as the engines score it: the query's terms weighted by
/// `ln(1 + (N - n + 0.5) / (n + 0.5))` over every point of the index
/// (`N` points, `n` with the term), times the documents' weights; the
/// tenant's points that pass the filter and match a term, best first.
pub fn bm25_reference(points: &[VectorPoint], q: &VectorQuery) -> Vec<(String, f32)> {
    let terms = q.keywords.clone().unwrap_or_default();
    let n = points.len() as f64;
    let idf = |term: u32| {
        let df = points
            .iter()
            .filter(|p| p.keywords.indices.contains(&term))
            .count() as f64;
        ((n - df + 0.5) / (df + 0.5) + 1.0).ln()
    };
    let mut scored: Vec<(String, f32)> = points
        .iter()
        .filter(|p| p.tenant == q.tenant && filter_matches(&q.filter, &p.payload))
        .filter_map(|p| {
            let mut score = 0.0;
            let mut hit = false;
            for (t, w) in terms.indices.iter().zip(&terms.values) {
                if let Some(i) = p.keywords.indices.iter().position(|x| x == t) {
                    score += idf(*t) * f64::from(*w) * f64::from(p.keywords.values[i]);
                    hit = true;
                }
            }
            hit.then(|| (p.product_id.clone(), score as f32))
        })
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scored
}

fn keyword_query(tenant: &str, text: &str, limit: usize) -> VectorQuery {
    VectorQuery {
        tenant: tenant.into(),
        keywords: Some(keywords::query(tenant, text)),
        limit,
        ..VectorQuery::default()
    }
}

/// The keyword leg alone is BM25 with the index's IDF: exact model numbers
/// come first, scores equal the reference, tenants and filters hold.
pub async fn keyword_search(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(17);
    let mut points = text_points(&mut rng, "t1", dims);
    // Another tenant holds the same texts: never returned, but counted in
    // the IDF (one index, as the engine computes it).
    points.extend(text_points(&mut rng, "t2", dims));
    idx.upsert(points.clone()).await.unwrap();

    for (text, first) in [
        ("ECCO 470304", "boot-1"),
        ("ecco 470305 boots", "boot-2"),
        ("iphone 15", "case-1"),
        ("kanken", "bag-2"),
        ("running shoe", "shoe-1"),
    ] {
        let q = keyword_query("t1", text, 10);
        let hits = idx.search(&q).await.unwrap();
        let reference = bm25_reference(&points, &q);
        assert_eq!(hits.len(), reference.len(), "{text}: {hits:?} vs {reference:?}");
        for (hit, (id, score)) in hits.iter().zip(&reference) {
            assert!(
                (hit.score - score).abs() <= EPS * score.max(1.0),
                "{text}: {hit:?} vs {id} {score}"
            );
        }
        if text != "running shoe" {
            assert_eq!(hits[0].product_id, first, "{text}: {hits:?}");
        } else {
            // Both running shoes tie on the terms; either may lead.
            assert!(hits[..2].iter().any(|h| h.product_id == first));
        }
        assert!(hits.iter().all(|h| h.product_id.contains('-')));
    }
    // A term no product has, and a query of stopwords only, find nothing.
    assert!(
        idx.search(&keyword_query("t1", "zzzz", 10))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        idx.search(&keyword_query("t1", "the of and", 10))
            .await
            .unwrap()
            .is_empty()
    );
    // Filters and tenants hold in the keyword leg.
    let mut q = keyword_query("t1", "ecco", 10);
    q.filter.categories = vec!["shoes".into()];
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(ids(&hits), ["shoe-3"]);
    assert!(
        idx.search(&keyword_query("t3", "ecco", 10))
            .await
            .unwrap()
            .is_empty()
    );
    // min_score applies to the BM25 score; pagination cuts the same order.
    let all = idx.search(&keyword_query("t1", "ecco boots", 10)).await.unwrap();
    assert!(all.len() >= 4);
    let mut q = keyword_query("t1", "ecco boots", 2);
    q.offset = 1;
    assert_eq!(ids(&idx.search(&q).await.unwrap()), ids(&all[1..3]));
    let mut q = keyword_query("t1", "ecco boots", 10);
    q.min_score = Some(all[1].score);
    assert!(
        idx.search(&q)
            .await
            .unwrap()
            .iter()
            .all(|h| h.score > all[1].score)
    );
}

/// The text leg alone is cosine over the text vectors; `get_vectors`
/// returns both vectors.
pub async fn text_leg(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(19);
    let points = text_points(&mut rng, "t1", dims);
    idx.upsert(points.clone()).await.unwrap();
    let probe = random_vector(&mut rng, dims);
    let q = VectorQuery {
        tenant: "t1".into(),
        text_vector: Some(probe.clone()),
        limit: 5,
        ..VectorQuery::default()
    };
    let hits = idx.search(&q).await.unwrap();
    let mut reference: Vec<(String, f32)> = points
        .iter()
        .map(|p| {
            (
                p.product_id.clone(),
                cosine(&probe, p.text_vector.as_ref().unwrap()),
            )
        })
        .collect();
    reference.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert_eq!(hits.len(), 5);
    for (hit, (_, score)) in hits.iter().zip(&reference) {
        assert!((hit.score - score).abs() <= EPS, "{hit:?} vs {score}");
    }
    let (image, text) = idx.get_vectors("t1", "boot-1").await.unwrap().unwrap();
    assert!(cosine(&image, &points[0].vector) > 1.0 - EPS);
    assert!(cosine(&text.unwrap(), points[0].text_vector.as_ref().unwrap()) > 1.0 - EPS);
    assert_eq!(idx.get_vectors("t2", "boot-1").await.unwrap(), None);
}

/// `get_points` answers what was written (vectors normalised), only of the
/// tenant asked, leaving unknown ids out; `same_point` takes a stored point
/// for what was written and tells it from every kind of change.
pub async fn get_points_and_same_point(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(23);
    let mut points = text_points(&mut rng, "t1", dims);
    points[1].text_vector = None;
    points[2].keywords = Keywords::default();
    points[3].payload = PointPayload::default();
    let other = text_points(&mut rng, "t2", dims);
    idx.upsert(points.clone()).await.unwrap();
    idx.upsert(other.clone()).await.unwrap();
    let mut ids: Vec<String> = points.iter().map(|p| p.product_id.clone()).collect();
    ids.push("missing".into());
    let mut stored = idx.get_points("t1", &ids).await.unwrap();
    stored.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    points.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    assert_eq!(stored.len(), points.len());
    for (s, p) in stored.iter().zip(&points) {
        assert_eq!((s.tenant.as_str(), &s.product_id), ("t1", &p.product_id));
        assert_eq!(s.payload, p.payload);
        assert_eq!(s.keywords, p.keywords);
        assert_eq!(s.text_vector.is_some(), p.text_vector.is_some());
        assert!(cosine(&s.vector, &p.vector) > 1.0 - EPS);
        assert!(same_point(s, p), "{} reads back changed", p.product_id);
        // Scaled, a vector is the same under cosine distance.
        let mut c = p.clone();
        c.vector.iter_mut().for_each(|x| *x *= 3.0);
        assert!(same_point(s, &c));
        type Change = Box<dyn Fn(&mut VectorPoint)>;
        let changes: Vec<Change> = vec![
            Box::new(|c| c.vector[0] += 0.01),
            Box::new(|c| c.payload.in_stock = !c.payload.in_stock),
            Box::new(|c| c.payload.tags.push("new".into())),
            Box::new(|c| c.payload.price = Some(c.payload.price.unwrap_or(1.0) * 2.0)),
            Box::new(|c| c.text_vector = c.text_vector.is_none().then(|| vec![1.0; c.vector.len()])),
            Box::new(|c| c.keywords = keywords::document("t1", "another text")),
            Box::new(|c| c.tenant = "t2".into()),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut c = p.clone();
            change(&mut c);
            assert!(!same_point(s, &c), "change {i} of {} not seen", p.product_id);
        }
    }
    assert!(idx.get_points("t3", &ids).await.unwrap().is_empty());
    assert!(idx.get_points("t1", &[]).await.unwrap().is_empty());
    let theirs = idx.get_points("t2", &ids[..2]).await.unwrap();
    assert_eq!(theirs.len(), 2);
    for s in &theirs {
        assert_eq!(s.tenant, "t2");
        assert!(other.iter().any(|o| same_point(s, o)));
    }
}

/// Fused searches: relative fusion equals its definition over the legs'
/// own results; a leading keyword weight puts the exact match first in
/// both fusions; a leg of weight 0 is not run; pages within the window
/// cut one order; filters and tenants hold.
pub async fn hybrid_fusion(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(23);
    let mut points = text_points(&mut rng, "t1", dims);
    points.extend(text_points(&mut rng, "t2", dims));
    idx.upsert(points.clone()).await.unwrap();
    let probe = random_vector(&mut rng, dims);
    let hybrid = |text: &str, weights: Weights, fusion: Fusion, limit: usize| VectorQuery {
        tenant: "t1".into(),
        vector: probe.clone(),
        text_vector: Some(probe.clone()),
        keywords: Some(keywords::query("t1", text)),
        weights,
        fusion,
        limit,
        ..VectorQuery::default()
    };
    let weights = Weights {
        image: 0.2,
        text: 0.3,
        keyword: 1.0,
    };

    // Relative fusion by hand, from each leg run alone.
    let q = hybrid("ecco boots", weights, Fusion::Relative, 10);
    let legs = [
        (
            weights.image,
            VectorQuery {
                tenant: "t1".into(),
                vector: probe.clone(),
                limit: 100,
                ..VectorQuery::default()
            },
        ),
        (
            weights.text,
            VectorQuery {
                tenant: "t1".into(),
                text_vector: Some(probe.clone()),
                limit: 100,
                ..VectorQuery::default()
            },
        ),
        (weights.keyword, keyword_query("t1", "ecco boots", 100)),
    ];
    let mut expected: HashMap<String, f32> = HashMap::new();
    let total = weights.image + weights.text + weights.keyword;
    for (w, leg) in legs {
        let hits = idx.search(&leg).await.unwrap();
        let best = hits.iter().map(|h| h.score).fold(0.0f32, f32::max);
        for h in hits {
            let scaled = if best > 0.0 { h.score.max(0.0) / best } else { 0.0 };
            *expected.entry(h.product_id).or_default() += w * scaled / total;
        }
    }
    let mut expected: Vec<(String, f32)> = expected.into_iter().collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let hits = idx.search(&q).await.unwrap();
    assert_eq!(hits.len(), 10);
    for (hit, (id, score)) in hits.iter().zip(&expected) {
        assert!((hit.score - score).abs() <= 1e-3, "{hit:?} vs {id} {score}");
        assert!((0.0..=1.0 + EPS).contains(&hit.score));
    }

    // The exact model number leads relative fusion. Rank fusion forgets
    // by how much it led the keyword leg (and the engine's weights only
    // stretch ranks: `1 / (rank / w + k - 1)`), so a product second on
    // keywords and first on a vector leg can pass it: only its top 3.
    let hits = idx
        .search(&hybrid("ECCO 470305", weights, Fusion::Relative, 5))
        .await
        .unwrap();
    assert_eq!(hits[0].product_id, "boot-2", "{hits:?}");
    let rrf = idx
        .search(&hybrid("ECCO 470305", weights, Fusion::Rrf, 5))
        .await
        .unwrap();
    assert!(ids(&rrf[..3]).contains(&"boot-2".to_owned()), "{rrf:?}");
    for hits in [&hits, &rrf] {
        assert_no_duplicates(hits);
        assert_sorted(hits);
    }

    // Only the image weight: the image leg alone, cosine scores.
    let only_image = Weights {
        image: 1.0,
        text: 0.0,
        keyword: 0.0,
    };
    let hits = idx
        .search(&hybrid("ecco", only_image, Fusion::Relative, 5))
        .await
        .unwrap();
    let alone = idx
        .search(&VectorQuery {
            tenant: "t1".into(),
            vector: probe.clone(),
            limit: 5,
            ..VectorQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(ids(&hits), ids(&alone));

    // Pages within the window are cut from one order, in both fusions.
    for fusion in [Fusion::Relative, Fusion::Rrf] {
        let all = idx
            .search(&hybrid("ecco boots", weights, fusion, 10))
            .await
            .unwrap();
        let mut page = hybrid("ecco boots", weights, fusion, 3);
        page.offset = 3;
        assert_eq!(
            ids(&idx.search(&page).await.unwrap()),
            ids(&all[3..6]),
            "{fusion:?}"
        );
    }

    // Filters, exclusions and tenants hold in every leg.
    let mut q = hybrid("ecco iphone", weights, Fusion::Relative, 10);
    q.filter.categories = vec!["cases".into()];
    q.exclude_product = Some("case-2".into());
    assert_eq!(ids(&idx.search(&q).await.unwrap()), ["case-1"]);
    q.fusion = Fusion::Rrf;
    assert_eq!(ids(&idx.search(&q).await.unwrap()), ["case-1"]);
    let mut q = hybrid("ecco", weights, Fusion::Relative, 10);
    q.tenant = "t3".into();
    assert!(idx.search(&q).await.unwrap().is_empty());
    // min_score on the fused score.
    let mut q = hybrid("ecco boots", weights, Fusion::Relative, 10);
    q.min_score = Some(0.5);
    assert!(idx.search(&q).await.unwrap().iter().all(|h| h.score > 0.5));
}

/// Facets on random catalogs and random filters equal a brute-force count
/// over the catalog (a property test, two rounds: before and after
/// `optimize`).
pub async fn facets_property(idx: &dyn VectorIndex, seed: u64) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(seed);
    let tenants = ["t0", "t1"];
    let categories = ["c0", "c1", "c2", "c3", "c4"];
    let tag_pool = ["k0", "k1", "k2", "k3", "k4", "k5"];
    let mut points = Vec::new();
    for i in 0..300 {
        let tags: Vec<String> = tag_pool
            .iter()
            .filter(|_| rng.random_bool(0.35))
            .map(|t| (*t).to_string())
            .collect();
        points.push(VectorPoint {
            tenant: tenants[rng.random_range(0..tenants.len())].into(),
            product_id: format!("p{i}"),
            vector: random_vector(&mut rng, dims),
            payload: PointPayload {
                category: rng
                    .random_bool(0.9)
                    .then(|| categories[rng.random_range(0..categories.len())].into()),
                price: rng
                    .random_bool(0.85)
                    .then(|| f64::from(rng.random_range(0u32..400)) / 2.0),
                currency: Some("EUR".into()),
                tags,
                in_stock: rng.random_bool(0.6),
            },
            ..VectorPoint::default()
        });
    }
    for chunk in points.chunks(64) {
        idx.upsert(chunk.to_vec()).await.unwrap();
    }
    let catalog = || points.iter().map(|p| (p.tenant.as_str(), &p.payload));
    for round in 0..2 {
        for _ in 0..25 {
            let filter = random_filter(&mut rng, &categories, &tag_pool, (100, 50..200));
            let mut buckets: Vec<f64> = (0..rng.random_range(0..5))
                .map(|_| f64::from(rng.random_range(0u32..200)) / 2.0)
                .collect();
            buckets.sort_by(f64::total_cmp);
            buckets.dedup();
            let q = FacetQuery {
                tenant: tenants[rng.random_range(0..tenants.len())].into(),
                filter,
                fields: vec![
                    FacetField::Category,
                    FacetField::Tags,
                    FacetField::InStock,
                    FacetField::Price,
                ],
                limit: rng.random_range(1..8),
                price_buckets: buckets,
            };
            let got = idx.facets(&q).await.unwrap();
            let want = q.count_over(catalog());
            assert_eq!(got, want, "{q:?}");
        }
        if round == 0 {
            idx.optimize().await.unwrap();
        }
    }
    // Unordered or non-finite buckets are refused.
    let bad = FacetQuery {
        tenant: "t0".into(),
        fields: vec![FacetField::Price],
        limit: 5,
        price_buckets: vec![50.0, 10.0],
        ..FacetQuery::default()
    };
    assert!(idx.facets(&bad).await.is_err());
}

/// Keyword vectors that the engines would refuse are refused up front.
pub async fn malformed_keywords(idx: &dyn VectorIndex) {
    let dims = idx.dims();
    let mut rng = StdRng::seed_from_u64(29);
    let mut p = point("t1", "p", random_vector(&mut rng, dims), PointPayload::default());
    p.keywords = Keywords {
        indices: vec![3, 1],
        values: vec![1.0, 1.0],
    };
    assert!(idx.upsert(vec![p]).await.is_err());
    let q = VectorQuery {
        tenant: "t1".into(),
        keywords: Some(Keywords {
            indices: vec![1],
            values: vec![f32::NAN],
        }),
        limit: 3,
        ..VectorQuery::default()
    };
    assert!(idx.search(&q).await.is_err());
    assert_eq!(idx.count(None).await.unwrap(), 0);
}
