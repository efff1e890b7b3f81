//! Search end to end (API.md "Search") on the tiny CLIP: every query
//! source, filters pushed into the vector query, pagination, min_score,
//! tenant isolation and the error of every bad input.

use std::time::Duration;

use base64::Engine;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use crate::harness::{ADMIN_KEY, Catalog, Client, Setup, fast_jobs, image_server, wait_for_job};

/// Writes a batch and waits until its index job has succeeded.
pub(crate) async fn batch(client: &Client, tenant: &str, products: &[Value]) {
    let (s, b) = client
        .post(
            &format!("/v1/tenants/{tenant}/products/batch"),
            &json!({"products": products}),
        )
        .await;
    assert_eq!(s, 202, "{b}");
    let job = wait_for_job(client, b["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
}

pub(crate) fn ids(r: &Value) -> Vec<String> {
    r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["product"]["external_id"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) async fn search(client: &Client, tenant: &str, body: Value) -> Value {
    let (s, r) = client.post(&format!("/v1/tenants/{tenant}/search"), &body).await;
    assert_eq!(s, 200, "{body} -> {r}");
    r
}

async fn search_err(client: &Client, body: Value, status: u16, code: &str) -> Value {
    let (s, r) = client.post("/v1/tenants/default/search", &body).await;
    assert_eq!(s, status, "{body} -> {r}");
    assert_eq!(r["error"]["code"], code, "{body} -> {r}");
    assert!(r["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn every_query_source_finds_the_right_products_within_the_filters() {
    let catalog = Catalog::Sqlite;
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let cats = ["boots", "hats", "bags"];
    let products: Vec<Value> = (0..30)
        .map(|i| {
            json!({"external_id": format!("p{i}"), "title": format!("Product {i}"),
                   "category": cats[i % 3], "price": format!("{}.50", i * 3),
                   "tags": [format!("t{}", i % 4)], "in_stock": i % 2 == 0,
                   "image_url": format!("http://{images}/img/{i}.png")})
        })
        .collect();
    batch(&admin, "default", &products).await;
    // Another tenant with the same external ids.
    let (s, _) = admin.post("/v1/tenants", &json!({"id": "other"})).await;
    assert_eq!(s, 201);
    let others: Vec<Value> = (0..10)
        .map(|i| {
            json!({"external_id": format!("p{i}"), "title": format!("Other {i}"), "category": "boots",
                   "image_url": format!("http://{images}/img/{i}.png")})
        })
        .collect();
    batch(&admin, "other", &others).await;

    // A product's own image finds it first, with score ≈ 1: as base64 ...
    let png = reqwest::get(format!("http://{images}/img/7.png"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    // (vector mode: the score is the cosine; hybrid, the default, finds
    // it first too, with a fused score.)
    let r = search(
        &admin,
        "default",
        json!({"image_base64": b64, "limit": 5, "mode": "vector"}),
    )
    .await;
    assert_eq!(ids(&r)[0], "p7", "{r}");
    assert!(r["hits"][0]["score"].as_f64().unwrap() > 0.999, "{r}");
    let r = search(&admin, "default", json!({"image_base64": b64, "limit": 5})).await;
    assert_eq!((ids(&r)[0].as_str(), &r["mode"]), ("p7", &json!("hybrid")), "{r}");
    assert_eq!(r["query_type"], "image");
    assert!(r["took_ms"].as_f64().is_some());
    assert_eq!(r["hits"][0]["product"]["title"], "Product 7");
    // ... by URL ...
    let r = search(
        &admin,
        "default",
        json!({"image_url": format!("http://{images}/img/5.png")}),
    )
    .await;
    assert_eq!(ids(&r)[0], "p5", "{r}");
    // ... and uploaded as multipart, with options.
    let form = reqwest::multipart::Form::new()
        .part(
            "image",
            reqwest::multipart::Part::bytes(png.to_vec()).file_name("x.png"),
        )
        .text(
            "params",
            json!({"limit": 3, "filters": {"category": "bags"}}).to_string(),
        );
    let res = reqwest::Client::new()
        .post(server.url("/v1/tenants/default/search/image"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["hits"].as_array().unwrap().len(), 3, "{r}");
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["product"]["category"] == "bags")
    );
    let form = reqwest::multipart::Form::new().part(
        "image",
        reqwest::multipart::Part::bytes(png.to_vec()).file_name("x.png"),
    );
    let r: Value = reqwest::Client::new()
        .post(server.url("/v1/tenants/default/search/image"))
        .bearer_auth(ADMIN_KEY)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ids(&r)[0], "p7", "{r}");

    // More like this: neighbours, never the product itself.
    let r = search(&admin, "default", json!({"like": "p4", "limit": 29})).await;
    assert_eq!(r["query_type"], "like");
    assert_eq!(ids(&r).len(), 29);
    assert!(!ids(&r).contains(&"p4".to_owned()));
    // Text.
    let r = search(
        &admin,
        "default",
        json!({"text": "a red leather bag", "limit": 30}),
    )
    .await;
    assert_eq!(r["query_type"], "text");
    assert_eq!(ids(&r).len(), 30);

    // Filters are pushed into the query: a full page of matches, all valid.
    let r = search(
        &admin,
        "default",
        json!({"text": "boots", "limit": 100,
               "filters": {"categories": ["hats", "bags"], "price_min": 10, "price_max": "60.5", "in_stock": true}}),
    )
    .await;
    let expected: Vec<usize> = (0..30)
        .filter(|i| i % 3 != 0 && (10.0..=60.5).contains(&(*i as f64 * 3.0 + 0.5)) && i % 2 == 0)
        .collect();
    assert_eq!(ids(&r).len(), expected.len(), "{r}");
    for h in r["hits"].as_array().unwrap() {
        let p = &h["product"];
        assert_ne!(p["category"], "boots");
        assert_eq!(p["in_stock"], true);
    }
    let r = search(
        &admin,
        "default",
        json!({"text": "x", "limit": 100, "filters": {"tags": ["t1"]}}),
    )
    .await;
    assert_eq!(ids(&r).len(), 8, "{r}");

    // Tenants never see each other's products.
    let r = search(&admin, "other", json!({"image_base64": b64, "limit": 100})).await;
    assert_eq!(ids(&r).len(), 10);
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["product"]["title"].as_str().unwrap().starts_with("Other"))
    );

    // Offset pagination: stable, no duplicates.
    let all = ids(&search(&admin, "default", json!({"text": "hat", "limit": 30})).await);
    let mut paged = Vec::new();
    for offset in [0, 7, 14, 21, 28] {
        paged.extend(ids(&search(
            &admin,
            "default",
            json!({"text": "hat", "limit": 7, "offset": offset}),
        )
        .await));
    }
    assert_eq!(paged, all);
    // min_score: strictly above.
    let scores: Vec<f64> = search(&admin, "default", json!({"text": "hat", "limit": 30})).await["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    let threshold = scores[10];
    let r = search(
        &admin,
        "default",
        json!({"text": "hat", "limit": 30, "min_score": threshold}),
    )
    .await;
    assert!(
        r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["score"].as_f64().unwrap() > threshold - 1e-6)
    );
    assert!(ids(&r).len() <= 11);

    // Keys: a search key works on its own tenant only; a write key may not search.
    let (_, k) = admin
        .post("/v1/tenants/other/keys", &json!({"scopes": ["search"]}))
        .await;
    let other = admin.with_key(k["key"].as_str().unwrap());
    let (s, _) = other
        .post("/v1/tenants/other/search", &json!({"text": "x"}))
        .await;
    assert_eq!(s, 200);
    let (s, e) = other
        .post("/v1/tenants/default/search", &json!({"text": "x"}))
        .await;
    assert_eq!(s, 403, "{e}");
    let (_, k) = admin
        .post("/v1/tenants/other/keys", &json!({"scopes": ["write"]}))
        .await;
    let (s, _) = admin
        .with_key(k["key"].as_str().unwrap())
        .post("/v1/tenants/other/search", &json!({"text": "x"}))
        .await;
    assert_eq!(s, 403);

    // Every bad input gets its error.
    search_err(&admin, json!({}), 400, "invalid_query").await;
    search_err(&admin, json!({"text": "a", "like": "p1"}), 400, "invalid_query").await;
    search_err(&admin, json!({"text": ""}), 400, "invalid_text").await;
    search_err(&admin, json!({"text": 5}), 400, "invalid_query").await;
    search_err(&admin, json!({"text": "a", "limit": 0}), 400, "invalid_parameter").await;
    search_err(
        &admin,
        json!({"text": "a", "limit": 101}),
        400,
        "invalid_parameter",
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "offset": 1001}),
        400,
        "invalid_parameter",
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "min_score": 2_000_000}),
        400,
        "invalid_parameter",
    )
    .await;
    let r = search_err(
        &admin,
        json!({"text": "a", "filters": {"colour": "red"}}),
        400,
        "unknown_field",
    )
    .await;
    assert_eq!(r["error"]["details"]["field"], "filters.colour");
    let r = search_err(
        &admin,
        json!({"text": "a", "filters": {"price_min": -1}}),
        400,
        "invalid_filter",
    )
    .await;
    assert_eq!(r["error"]["details"]["field"], "filters.price_min");
    search_err(
        &admin,
        json!({"text": "a", "filters": {"price_min": 5, "price_max": 1}}),
        400,
        "invalid_filter",
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "filters": {"tags": "t1"}}),
        400,
        "invalid_filter",
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "filters": {"in_stock": "yes"}}),
        400,
        "invalid_filter",
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "sort": "price"}),
        400,
        "unknown_field",
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "plugins": {"ranker": "mine"}}),
        404,
        "plugin_not_found",
    )
    .await;
    search(
        &admin,
        "default",
        json!({"text": "a", "plugins": {"ranker": "none"}, "user_id": "u1", "session_id": "s1"}),
    )
    .await;
    search_err(
        &admin,
        json!({"text": "a", "user_id": ""}),
        400,
        "invalid_parameter",
    )
    .await;
    search_err(&admin, json!({"like": "nope"}), 404, "product_not_found").await;
    search_err(&admin, json!({"image_base64": "***"}), 400, "invalid_base64").await;
    let junk = base64::engine::general_purpose::STANDARD.encode(b"definitely not an image");
    let r = search_err(&admin, json!({"image_base64": junk}), 415, "unsupported_image").await;
    assert_eq!(r["error"]["details"]["field"], "image_base64");
    search_err(
        &admin,
        json!({"image_url": format!("http://{images}/missing.png")}),
        422,
        "image_unreachable",
    )
    .await;
    search_err(
        &admin,
        json!({"image_url": "ftp://example.com/x.png"}),
        400,
        "invalid_image_url",
    )
    .await;
    let (s, e) = admin
        .post("/v1/tenants/nobody/search", &json!({"text": "a"}))
        .await;
    assert_eq!(s, 404, "{e}");

    // Result pages are cached, and any product write makes them stale at
    // once: a metadata change shows in the very next search, a deleted
    // product disappears.
    let q = json!({"text": "cached query", "limit": 30});
    let first = search(&admin, "default", q.clone()).await;
    let again = search(&admin, "default", q.clone()).await;
    assert_eq!(first["hits"], again["hits"]);
    let (_, metrics) = admin.get("/metrics").await;
    let metrics = metrics.as_str().unwrap_or_default().to_owned();
    assert!(
        metrics.contains("vitrine_search_page_cache_total{outcome=\"hit\"}"),
        "{metrics}"
    );
    let top_id = ids(&first)[0].clone();
    let (s, _) = admin
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/tenants/default/products/{top_id}"),
            Some(&json!({"metadata": {"badge": "new"}})),
        )
        .await;
    assert_eq!(s, 200);
    let after = search(&admin, "default", q.clone()).await;
    assert_eq!(
        after["hits"][0]["product"]["metadata"],
        json!({"badge": "new"}),
        "{after}"
    );
    let (s, _) = admin
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/default/products/{top_id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let after = search(&admin, "default", q.clone()).await;
    assert!(!ids(&after).contains(&top_id), "{after}");

    // The searches were logged in the background; analytics read the logs.
    let r = search(
        &admin,
        "default",
        json!({"text": "nothing here", "filters": {"category": "none"}}),
    )
    .await;
    assert_eq!(ids(&r).len(), 0);
    let mut top = Value::Null;
    for _ in 0..100 {
        let (s, body) = admin
            .get("/v1/tenants/default/analytics/queries?kind=top&limit=100")
            .await;
        assert_eq!(s, 200, "{body}");
        top = body;
        let logged = top["queries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["query_text"] == "nothing here");
        if logged {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hat = top["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["query_text"] == "hat")
        .unwrap_or_else(|| panic!("{top}"));
    assert_eq!(hat["count"], 8, "{top}");
    assert!(hat["avg_results"].as_f64().unwrap() > 0.0);
    assert!(hat["p95_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(
        top["queries"][0]["query_text"], "hat",
        "the most frequent first: {top}"
    );
    let (_, zero) = admin
        .get("/v1/tenants/default/analytics/queries?kind=zero_results")
        .await;
    assert_eq!(zero["queries"].as_array().unwrap().len(), 1, "{zero}");
    assert_eq!(zero["queries"][0]["query_text"], "nothing here", "{zero}");
    assert_eq!(zero["queries"][0]["count"], 1, "{zero}");
    let (_, none) = admin.get("/v1/tenants/other/analytics/queries").await;
    assert!(
        none["queries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|q| q["query_text"] != "hat"),
        "{none}"
    );
    let (_, later) = admin
        .get("/v1/tenants/default/analytics/queries?since=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(later["queries"], json!([]));
    for (q, field) in [
        ("kind=best", "kind"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("x=1", "x"),
    ] {
        let (s, e) = admin
            .get(&format!("/v1/tenants/default/analytics/queries?{q}"))
            .await;
        assert_eq!(s, 400, "{q}: {e}");
        assert_eq!(e["error"]["details"]["field"], field, "{q}: {e}");
    }
    let (s, _) = other.get("/v1/tenants/default/analytics/queries").await;
    assert_eq!(s, 403);
    drop(server);
}

/// Random catalogs and random filters: every hit satisfies the filter and
/// belongs to the tenant, and a page is full whenever enough products match
/// (nothing is filtered after the vector query).
#[tokio::test(flavor = "multi_thread")]
async fn random_catalogs_and_filters_never_leak_or_violate() {
    let catalog = Catalog::Sqlite;
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let mut rng = StdRng::seed_from_u64(5);
    let tenants = ["default", "t2"];
    let (s, _) = admin.post("/v1/tenants", &json!({"id": "t2"})).await;
    assert_eq!(s, 201);
    let cats = ["a", "b", "c", "d"];
    let mut catalogs: Vec<Vec<Value>> = vec![Vec::new(), Vec::new()];
    for (ti, tenant) in tenants.iter().enumerate() {
        let products: Vec<Value> = (0..80)
            .map(|i| {
                let mut p = json!({"external_id": format!("q{i}"), "title": format!("{tenant} item {i} {}", rng.random::<u32>()),
                                   "in_stock": rng.random_bool(0.6),
                                   "tags": (0..4).filter(|_| rng.random_bool(0.4)).map(|t| format!("k{t}")).collect::<Vec<_>>()});
                if rng.random_bool(0.9) {
                    p["category"] = json!(cats[rng.random_range(0..4)]);
                }
                if rng.random_bool(0.85) {
                    p["price"] = json!(rng.random_range(0..100));
                }
                p
            })
            .collect();
        batch(&admin, tenant, &products).await;
        catalogs[ti] = products;
    }
    for round in 0..40 {
        let ti = rng.random_range(0..2);
        let mut filters = serde_json::Map::new();
        if rng.random_bool(0.5) {
            let c: Vec<&str> = cats.iter().copied().filter(|_| rng.random_bool(0.5)).collect();
            if !c.is_empty() {
                filters.insert("categories".into(), json!(c));
            }
        }
        if rng.random_bool(0.4) {
            filters.insert("price_min".into(), json!(rng.random_range(0..50)));
        }
        if rng.random_bool(0.4) {
            filters.insert("price_max".into(), json!(rng.random_range(50..100)));
        }
        if rng.random_bool(0.3) {
            filters.insert("tags".into(), json!([format!("k{}", rng.random_range(0..4))]));
        }
        if rng.random_bool(0.3) {
            filters.insert("in_stock".into(), json!(rng.random_bool(0.5)));
        }
        let matches = |p: &Value| -> bool {
            if let Some(c) = filters.get("categories")
                && !c.as_array().unwrap().contains(&p["category"])
            {
                return false;
            }
            let price = p["price"].as_f64();
            if let Some(lo) = filters.get("price_min").and_then(Value::as_f64)
                && !price.is_some_and(|x| x >= lo)
            {
                return false;
            }
            if let Some(hi) = filters.get("price_max").and_then(Value::as_f64)
                && !price.is_some_and(|x| x <= hi)
            {
                return false;
            }
            if let Some(t) = filters.get("tags")
                && !p["tags"].as_array().is_some_and(|tags| tags.contains(&t[0]))
            {
                return false;
            }
            if let Some(s) = filters.get("in_stock")
                && p["in_stock"] != *s
            {
                return false;
            }
            true
        };
        let expected = catalogs[ti].iter().filter(|p| matches(p)).count();
        let limit = rng.random_range(1..=40);
        let r = search(
            &admin,
            tenants[ti],
            json!({"text": format!("query {round}"), "limit": limit, "filters": filters}),
        )
        .await;
        let hits = r["hits"].as_array().unwrap();
        assert_eq!(hits.len(), expected.min(limit), "round {round}: {filters:?}");
        for h in hits {
            let p = &h["product"];
            assert!(
                p["title"].as_str().unwrap().starts_with(tenants[ti]),
                "round {round}: {p}"
            );
            // Prices come back as strings; compare as numbers.
            let mut p = p.clone();
            if let Some(s) = p["price"].as_str() {
                p["price"] = json!(s.parse::<f64>().unwrap());
            }
            assert!(matches(&p), "round {round}: {filters:?} let through {p}");
        }
    }
    drop(server);
}

fn picture(seed: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(64, 48, |x, y| {
        image::Rgb([
            (x * 4 + seed * 50) as u8,
            (y * 5 + seed * 31) as u8,
            (seed * 90) as u8,
        ])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Products whose image is uploaded, not fetched: indexed from the blob
/// store, found by that image, served back, and re-indexed without it.
#[tokio::test(flavor = "multi_thread")]
async fn uploaded_images_are_indexed_found_served_and_removed() {
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let mut setup = Setup::new(&catalog);
        fast_jobs(&mut setup);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let products: Vec<Value> = (0..4)
            .map(|i| json!({"external_id": format!("u{i}"), "title": format!("Private picture {i}")}))
            .collect();
        batch(&admin, "default", &products).await;
        for i in 0..4 {
            let (s, r) = admin
                .put_bytes(
                    &format!("/v1/tenants/default/products/u{i}/image"),
                    picture(i),
                    "image/png",
                )
                .await;
            assert_eq!(s, 200, "{backend}: {r}");
            let job = wait_for_job(&admin, r["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
            assert_eq!(job["status"], "succeeded", "{backend}: {job}");
            assert_eq!(job["result"]["indexed"], 1, "{backend}: {job}");
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(picture(2));
        let r = search(&admin, "default", json!({"image_base64": b64, "mode": "vector"})).await;
        assert_eq!(ids(&r)[0], "u2", "{backend}: {r}");
        assert!(r["hits"][0]["score"].as_f64().unwrap() > 0.999, "{backend}: {r}");
        assert_eq!(
            r["hits"][0]["product"]["stored_image"]["path"],
            "/v1/tenants/default/products/u2/image"
        );
        // The original comes back byte for byte; a thumbnail fits its box.
        let http = reqwest::Client::new();
        let original = http
            .get(server.url("/v1/tenants/default/products/u2/image"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(original.status(), 200);
        assert_eq!(original.bytes().await.unwrap().as_ref(), picture(2).as_slice());
        let thumb = http
            .get(server.url("/v1/tenants/default/products/u2/image?size=32"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(thumb.headers()["content-type"], "image/jpeg");
        let thumb = image::load_from_memory(&thumb.bytes().await.unwrap()).unwrap();
        assert_eq!((thumb.width(), thumb.height()), (32, 24), "{backend}");
        // Without its image the product is indexed by its text again.
        let (s, r) = admin
            .send(
                reqwest::Method::DELETE,
                "/v1/tenants/default/products/u2/image",
                None,
            )
            .await;
        assert_eq!(s, 200, "{backend}: {r}");
        let job = wait_for_job(&admin, r["job_id"].as_str().unwrap(), Duration::from_secs(60)).await;
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        let r = search(&admin, "default", json!({"image_base64": b64, "mode": "vector"})).await;
        let u2 = r["hits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["product"]["external_id"] == "u2")
            .unwrap();
        assert!(u2["score"].as_f64().unwrap() < 0.99, "{backend}: {r}");
        let r = search(&admin, "default", json!({"text": "Private picture 2"})).await;
        assert!(ids(&r).contains(&"u2".to_owned()), "{backend}: {r}");
        drop(server);
        catalog.cleanup().await;
    }
}
