//! Tenant plugins end to end (API.md "Plugins"): real components built from
//! plugins/ uploaded over HTTP, versioned, activated, run by searches and
//! product writes; hostile ones fall back; tenants never see each other's.

use std::time::Duration;

use serde_json::{Value, json};
use vitrine_plugin_artifacts as artifacts;

use crate::harness::{
    ADMIN_KEY, Catalog, Client, Setup, all_products, fast_jobs, image_server, wait_for_job,
};
use crate::search::{batch, ids, search};
use crate::tenant_key;

async fn upload(client: &Client, tenant: &str, name: &str, world: &str, path: &str) -> (u16, Value) {
    client
        .put_bytes(
            &format!("/v1/tenants/{tenant}/plugins/{name}?world={world}"),
            artifacts::bytes(path),
            "application/wasm",
        )
        .await
}

async fn activate(client: &Client, tenant: &str, name: &str, body: Value) -> (u16, Value) {
    client
        .post(&format!("/v1/tenants/{tenant}/plugins/{name}/activate"), &body)
        .await
}

/// The value of a counter in Prometheus text, summed over the series whose
/// labels contain all of `labels`.
fn counter(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_uploads_versions_activation_and_isolation() {
    for catalog in Catalog::all().await {
        let setup = Setup::new(&catalog);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let a = admin.with_key(&tenant_key(&admin, "shop-a", &["search", "write", "plugins"]).await);
        let b = admin.with_key(&tenant_key(&admin, "shop-b", &["search", "write", "plugins"]).await);
        let no_scope = admin.with_key(&tenant_key(&admin, "shop-c", &["search", "write"]).await);

        let (s, v1) = upload(&a, "shop-a", "boost", "ranker", artifacts::PRICE_BOOST).await;
        assert_eq!(s, 201, "{v1}");
        assert_eq!(
            (v1["name"].as_str(), v1["version"].as_i64()),
            (Some("boost"), Some(1))
        );
        assert_eq!(
            (v1["world"].as_str(), v1["active"].as_bool()),
            (Some("ranker"), Some(false))
        );
        assert_eq!(v1["digest"].as_str().unwrap().len(), 64);
        let (s, v2) = upload(&a, "shop-a", "boost", "ranker", artifacts::PRICE_BOOST).await;
        assert_eq!((s, v2["version"].as_i64()), (201, Some(2)));

        // Bad uploads: each a clear 4xx, nothing recorded.
        let put = |bytes: Vec<u8>, query: &str, ct: &str| {
            let a = a.clone();
            let path = format!("/v1/tenants/shop-a/plugins/bad{query}");
            let ct = ct.to_owned();
            async move { a.put_bytes(&path, bytes, &ct).await }
        };
        let cases: Vec<(Vec<u8>, &str, &str, u16, &str)> = vec![
            (
                b"not wasm at all".to_vec(),
                "?world=ranker",
                "application/wasm",
                422,
                "not_wasm",
            ),
            (
                b"\0asm\x01\0\0\0".to_vec(),
                "?world=ranker",
                "application/wasm",
                422,
                "not_a_component",
            ),
            (
                artifacts::bytes(artifacts::PRICE_BOOST),
                "?world=filter",
                "application/wasm",
                422,
                "wrong_world",
            ),
            (
                artifacts::bytes(artifacts::TITLE_NORMALIZER),
                "?world=ranker",
                "application/wasm",
                422,
                "wrong_world",
            ),
            (
                vec![0u8; 20 * 1024 * 1024 + 1],
                "?world=ranker",
                "application/wasm",
                413,
                "payload_too_large",
            ),
            (
                artifacts::bytes(artifacts::PRICE_BOOST),
                "",
                "application/wasm",
                400,
                "missing_field",
            ),
            (
                artifacts::bytes(artifacts::PRICE_BOOST),
                "?world=sorter",
                "application/wasm",
                400,
                "invalid_parameter",
            ),
            (
                artifacts::bytes(artifacts::PRICE_BOOST),
                "?world=ranker",
                "text/plain",
                415,
                "unsupported_media_type",
            ),
        ];
        for (bytes, query, ct, status, code) in cases {
            let (s, r) = put(bytes, query, ct).await;
            assert_eq!(
                (s, r["error"]["code"].as_str()),
                (status, Some(code)),
                "{query} {ct}: {r}"
            );
        }
        let (s, r) = a.get("/v1/tenants/shop-a/plugins/bad").await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (404, Some("plugin_not_found")),
            "{r}"
        );
        // A name keeps its world; names are validated; `none` is reserved.
        let (s, r) = upload(&a, "shop-a", "boost", "filter", artifacts::CATEGORY_ALLOWLIST).await;
        assert_eq!(s, 409, "{r}");
        for name in ["none", "Bad%20Name", "-x"] {
            let (s, r) = upload(&a, "shop-a", name, "ranker", artifacts::PRICE_BOOST).await;
            assert_eq!(s, 400, "{name}: {r}");
        }

        // Listing and versions.
        let (s, list) = a.get("/v1/tenants/shop-a/plugins").await;
        assert_eq!(s, 200, "{list}");
        assert_eq!(list["plugins"].as_array().unwrap().len(), 1);
        assert_eq!(list["plugins"][0]["versions"].as_array().unwrap().len(), 2);
        assert_eq!(list["plugins"][0]["active_version"], Value::Null);

        // Activation, one active version per world, rollback.
        let (s, r) = activate(
            &a,
            "shop-a",
            "boost",
            json!({"version": 2, "params": {"in_stock_boost": 0.5}}),
        )
        .await;
        assert_eq!((s, r["active"].as_bool()), (200, Some(true)), "{r}");
        assert_eq!(r["params"]["in_stock_boost"], "0.5");
        let (s, r) = activate(&a, "shop-a", "boost", json!({"version": 1})).await;
        assert_eq!(s, 200, "{r}");
        let (_, one) = a.get("/v1/tenants/shop-a/plugins/boost").await;
        assert_eq!(one["active_version"], 1, "{one}");
        let active: Vec<bool> = one["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["active"].as_bool().unwrap())
            .collect();
        assert_eq!(active, vec![true, false]);
        for (body, status, code) in [
            (json!({"version": 9}), 404, "plugin_version_not_found"),
            (json!({"version": 0}), 400, "invalid_parameter"),
            (json!({}), 400, "missing_field"),
            (
                json!({"version": 1, "memory_mb": 100000}),
                400,
                "invalid_parameter",
            ),
            (
                json!({"version": 1, "params": {"k": [1]}}),
                400,
                "invalid_parameter",
            ),
            (json!({"version": 1, "extra": true}), 400, "unknown_field"),
        ] {
            let (s, r) = activate(&a, "shop-a", "boost", body.clone()).await;
            assert_eq!(
                (s, r["error"]["code"].as_str()),
                (status, Some(code)),
                "{body}: {r}"
            );
        }

        // Tenant B can neither see, activate, run nor delete A's plugin.
        for (method, path) in [
            (reqwest::Method::GET, "/v1/tenants/shop-a/plugins"),
            (reqwest::Method::GET, "/v1/tenants/shop-a/plugins/boost"),
            (reqwest::Method::DELETE, "/v1/tenants/shop-a/plugins/boost"),
        ] {
            let (s, _) = b.send(method.clone(), path, None).await;
            assert_eq!(s, 403, "{method} {path}");
        }
        let (s, _) = activate(&b, "shop-a", "boost", json!({"version": 1})).await;
        assert_eq!(s, 403);
        let (s, _) = upload(&b, "shop-a", "evil", "ranker", artifacts::PRICE_BOOST).await;
        assert_eq!(s, 403);
        let (s, r) = b.get("/v1/tenants/shop-b/plugins/boost").await;
        assert_eq!(s, 404, "{r}");
        let (s, r) = activate(&b, "shop-b", "boost", json!({"version": 1})).await;
        assert_eq!(s, 404, "{r}");
        let (s, r) = b
            .post(
                "/v1/tenants/shop-b/search",
                &json!({"text": "x", "plugins": {"ranker": "boost"}}),
            )
            .await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (404, Some("plugin_not_found")),
            "{r}"
        );
        let (_, list) = b.get("/v1/tenants/shop-b/plugins").await;
        assert_eq!(list["plugins"], json!([]));
        // A key without the `plugins` scope cannot manage plugins.
        let (s, _) = no_scope.get("/v1/tenants/shop-c/plugins").await;
        assert_eq!(s, 403);
        let (s, _) = upload(&no_scope, "shop-c", "x", "ranker", artifacts::PRICE_BOOST).await;
        assert_eq!(s, 403);

        // Deletion.
        let (s, _) = a
            .send(reqwest::Method::DELETE, "/v1/tenants/shop-a/plugins/boost", None)
            .await;
        assert_eq!(s, 204);
        let (s, _) = a.get("/v1/tenants/shop-a/plugins/boost").await;
        assert_eq!(s, 404);
        let (s, _) = a
            .send(reqwest::Method::DELETE, "/v1/tenants/shop-a/plugins/boost", None)
            .await;
        assert_eq!(s, 404);
        drop(server);
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_shape_searches_and_writes_and_hostile_ones_fall_back() {
    let catalog = Catalog::Sqlite;
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let shop = admin.with_key(&tenant_key(&admin, "shop", &["search", "write", "plugins"]).await);
    let cats = ["boots", "hats"];
    let products: Vec<Value> = (0..20)
        .map(|i| {
            json!({"external_id": format!("p{i}"), "title": format!("Product {i}"),
                   "category": cats[i % 2], "price": format!("{}.00", 10 + i * 5),
                   "in_stock": i % 3 == 0,
                   "image_url": format!("http://{images}/img/{i}.png")})
        })
        .collect();
    let (s, b) = shop
        .post("/v1/tenants/shop/products/batch", &json!({"products": products}))
        .await;
    assert_eq!(s, 202, "{b}");
    let job = wait_for_job(&shop, b["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");

    let q = json!({"text": "a product", "limit": 20});
    let plain = search(&shop, "shop", q.clone()).await;
    assert_eq!(plain["plugins"], json!({}));
    assert_eq!(ids(&plain).len(), 20);

    // A filter keeps only the tenant's allowed categories.
    for (name, world, path) in [
        ("allow", "filter", artifacts::CATEGORY_ALLOWLIST),
        ("boost", "ranker", artifacts::PRICE_BOOST),
    ] {
        let (s, r) = upload(&shop, "shop", name, world, path).await;
        assert_eq!(s, 201, "{r}");
    }
    let (s, r) = activate(
        &shop,
        "shop",
        "allow",
        json!({"version": 1, "params": {"categories": "boots"}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let filtered = search(&shop, "shop", q.clone()).await;
    assert_eq!(filtered["plugins"]["filter"]["outcome"], "ok", "{filtered}");
    assert_eq!(filtered["plugins"]["filter"]["version"], 1);
    let kept = ids(&filtered);
    assert_eq!(kept.len(), 10);
    assert!(
        filtered["hits"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["product"]["category"] == "boots")
    );
    // Vector order is kept among the survivors.
    let expected: Vec<String> = ids(&plain)
        .into_iter()
        .filter(|id| id[1..].parse::<usize>().unwrap() % 2 == 0)
        .collect();
    assert_eq!(kept, expected);

    // A ranker with a big in-stock boost puts in-stock products first.
    let (s, r) = activate(
        &shop,
        "shop",
        "boost",
        json!({"version": 1, "params": {"in_stock_boost": 10, "cheap_boost": 0}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let ranked = search(&shop, "shop", q.clone()).await;
    assert_eq!(ranked["plugins"]["ranker"]["outcome"], "ok", "{ranked}");
    let stock: Vec<bool> = ranked["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["product"]["in_stock"].as_bool().unwrap())
        .collect();
    let first_out = stock.iter().position(|s| !s).unwrap();
    assert!(
        stock[..first_out].iter().all(|s| *s) && stock[first_out..].iter().all(|s| !s),
        "{stock:?}"
    );
    assert!(ranked["hits"][0]["score"].as_f64().unwrap() > 5.0);
    // Pagination cuts the page after the plugins.
    let page2 = search(
        &shop,
        "shop",
        json!({"text": "a product", "limit": 3, "offset": 3}),
    )
    .await;
    assert_eq!(ids(&page2), ids(&ranked)[3..6].to_vec());
    // A request can turn a plugin off.
    let off = search(
        &shop,
        "shop",
        json!({"text": "a product", "limit": 20, "plugins": {"ranker": "none"}}),
    )
    .await;
    assert!(off["plugins"].get("ranker").is_none());
    assert_eq!(ids(&off), kept);

    // Hostile guests, named in the request: 200, fallback, within the
    // deadline + 20 ms, and the next search is unaffected.
    let hostile = [
        ("infinite-loop", "ranker", artifacts::INFINITE_LOOP),
        ("memory-bomb", "ranker", artifacts::MEMORY_BOMB),
        ("deep-recursion", "filter", artifacts::DEEP_RECURSION),
        ("panic", "filter", artifacts::PANIC),
        ("wrong-length", "ranker", artifacts::WRONG_LENGTH),
        ("unknown-id", "filter", artifacts::UNKNOWN_ID),
        ("log-flood", "ranker", artifacts::LOG_FLOOD),
        ("sleeper", "ranker", artifacts::SLEEPER),
        ("copy-amplifier", "filter", artifacts::COPY_AMPLIFIER),
    ];
    for (name, world, path) in hostile {
        let (s, r) = upload(&shop, "shop", name, world, path).await;
        assert_eq!(s, 201, "{name}: {r}");
        let body = json!({"text": "a product", "limit": 20, "plugins": {world: name}});
        let r = search(&shop, "shop", body).await;
        let report = &r["plugins"][world];
        assert_eq!(report["outcome"], "fallback", "{name}: {r}");
        assert_eq!(report["name"], name);
        // A fixed sentence: nothing the guest wrote reaches the client.
        let error = report["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{r}");
        assert!(
            !error.contains("panics") && !error.contains("SECRET") && !error.contains("xxxx"),
            "{name}: {error}"
        );
        let elapsed = report["elapsed_ms"].as_f64().unwrap();
        assert!(
            elapsed <= 10.0 + 20.0,
            "{name}: the plugin held the search {elapsed} ms"
        );
        // The fallback is vector order for that stage.
        if world == "ranker" {
            assert_eq!(ids(&r), kept, "{name}");
        } else {
            assert_eq!(r["plugins"]["ranker"]["outcome"], "ok", "{name}: {r}");
            assert_eq!(r["hits"].as_array().unwrap().len(), 20, "{name}");
        }
        let after = search(&shop, "shop", q.clone()).await;
        assert_eq!(ids(&after), ids(&ranked), "after {name}");
    }
    // What the panicking guest printed is in the log, tagged, and capped.
    let printed: Vec<Value> = server
        .log_lines()
        .into_iter()
        .filter(|l| l["output"].as_str().is_some_and(|o| o.contains("SECRET-")))
        .collect();
    assert!(
        printed
            .iter()
            .any(|l| l["stream"] == "stderr" && l["output"].as_str().unwrap().contains("always panics")),
        "{printed:?}"
    );
    assert!(printed.iter().any(|l| l["stream"] == "stdout"), "{printed:?}");
    assert!(
        printed
            .iter()
            .all(|l| l["tenant"] == "shop" && l["plugin"] == "panic"),
        "{printed:?}"
    );
    let metrics = shop.metrics().await;
    for outcome in ["timeout", "trap", "bad_output", "log_flood"] {
        assert!(
            counter(
                &metrics,
                "vitrine_plugin_calls_total",
                &[&format!("outcome=\"{outcome}\"")]
            ) >= 1.0,
            "{outcome} not counted"
        );
    }

    // Ingest: products are tidied before they are stored and embedded, or
    // rejected with the plugin's message.
    let (s, r) = upload(&shop, "shop", "tidy", "ingest", artifacts::TITLE_NORMALIZER).await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = activate(
        &shop,
        "shop",
        "tidy",
        json!({"version": 1, "params": {"reject_words": "fake"}}),
    )
    .await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = shop
        .post(
            "/v1/tenants/shop/products",
            &json!({"external_id": "n1", "title": "  red   LEATHER boots ", "tags": ["A", "a ", "B"], "category": " Boots "}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["product"]["title"], "Red Leather Boots");
    assert_eq!(r["product"]["tags"], json!(["a", "b"]));
    assert_eq!(r["product"]["category"], "boots");
    let (s, r) = shop
        .post(
            "/v1/tenants/shop/products",
            &json!({"external_id": "n2", "title": "Fake boots"}),
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (422, Some("rejected_by_plugin")),
        "{r}"
    );
    let (s, _) = shop.get("/v1/tenants/shop/products/n2").await;
    assert_eq!(s, 404, "a rejected product is not stored");
    let (s, r) = shop
        .post(
            "/v1/tenants/shop/products/batch",
            &json!({"products": [{"external_id": "n3", "title": "fine  hat"}, {"external_id": "n4", "title": "fake hat"}]}),
        )
        .await;
    assert_eq!((s, r["accepted"].as_u64()), (202, Some(1)), "{r}");
    assert_eq!(r["rejected"][0]["index"], 1);
    assert_eq!(r["rejected"][0]["error"]["code"], "rejected_by_plugin");
    let (_, n3) = shop.get("/v1/tenants/shop/products/n3").await;
    assert_eq!(n3["title"], "Fine Hat");
    let (s, r) = shop
        .send(
            reqwest::Method::PATCH,
            "/v1/tenants/shop/products/n3",
            Some(&json!({"title": "blue   hat"})),
        )
        .await;
    assert_eq!(
        (s, r["product"]["title"].as_str()),
        (200, Some("Blue Hat")),
        "{r}"
    );

    // The products written above are indexed in the background; once they
    // are, their search results are the baseline the restarts must keep.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while all_products(&shop, "shop")
        .await
        .iter()
        .any(|p| p["index_status"] == "pending")
    {
        assert!(std::time::Instant::now() < deadline, "indexing did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before_restart = ids(&search(&shop, "shop", q.clone()).await);

    // After a restart the active plugins are served from their compiled
    // files; a damaged one is detected and recompiled in the background at
    // start-up (never by a search), never loaded.
    drop(server);
    let server = setup.start();
    let shop = shop.with_base(&server);
    wait_for_log(&server, "plugins: active versions ready").await;
    let r = search(&shop, "shop", q.clone()).await;
    assert_eq!(r["plugins"]["ranker"]["outcome"], "ok", "{r}");
    assert_eq!(ids(&r), before_restart);
    let metrics = shop.metrics().await;
    assert_eq!(
        counter(&metrics, "vitrine_plugin_compilations_total", &[]),
        0.0,
        "{metrics}"
    );
    drop(server);
    let compiled = setup.data_dir().join("plugins").join("compiled");
    let mut damaged = 0;
    for dir in std::fs::read_dir(&compiled).unwrap() {
        for file in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0x5a;
            std::fs::write(&path, bytes).unwrap();
            damaged += 1;
        }
    }
    assert!(damaged >= 2);
    let server = setup.start();
    let shop = shop.with_base(&server);
    wait_for_log(&server, "plugins: active versions ready").await;
    let r = search(&shop, "shop", q.clone()).await;
    assert_eq!(r["plugins"]["ranker"]["outcome"], "ok", "{r}");
    assert_eq!(r["plugins"]["filter"]["outcome"], "ok", "{r}");
    assert_eq!(ids(&r), before_restart);
    // Start-up recompiled the three active versions (filter, ranker,
    // ingest) from their stored components, and only those.
    let metrics = shop.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "vitrine_plugin_compilations_total",
            &["reason=\"corrupt\""]
        ),
        3.0,
        "{metrics}"
    );
    assert_eq!(
        counter(&metrics, "vitrine_plugin_compilations_total", &[]),
        3.0,
        "{metrics}"
    );
}

/// Waits (up to a minute) for a log line with this message.
async fn wait_for_log(server: &crate::harness::Server, message: &str) {
    let until = std::time::Instant::now() + Duration::from_secs(60);
    while !server.log_lines().iter().any(|l| l["message"] == message) {
        assert!(std::time::Instant::now() < until, "no `{message}` in the log");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Indexed products for a tenant, so that its searches have candidates.
async fn indexed_products(client: &Client, tenant: &str, images: std::net::SocketAddr, n: usize) {
    let products: Vec<Value> = (0..n)
        .map(|i| {
            json!({"external_id": format!("p{i}"), "title": format!("Product {i}"),
                   "price": format!("{}.00", 10 + i), "in_stock": i % 2 == 0,
                   "image_url": format!("http://{images}/img/{i}.png")})
        })
        .collect();
    batch(client, tenant, &products).await;
}

/// The sandbox over HTTP: one tenant's sleeping guests neither hold its
/// searches past the deadline nor take another tenant's plugin slots; a
/// sleeping ingest plugin neither stalls a write nor hides its failure; and
/// a shutdown with guests asleep is quick and clean.
#[tokio::test(flavor = "multi_thread")]
async fn sleeping_guests_hold_nothing_past_their_deadline() {
    let catalog = Catalog::Sqlite;
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let scopes = ["search", "write", "plugins"];
    let noisy = admin.with_key(&tenant_key(&admin, "noisy", &scopes).await);
    let quiet = admin.with_key(&tenant_key(&admin, "quiet", &scopes).await);
    for (client, tenant, name, path) in [
        (&noisy, "noisy", "sleeper", artifacts::SLEEPER),
        (&quiet, "quiet", "boost", artifacts::PRICE_BOOST),
    ] {
        indexed_products(client, tenant, images, 6).await;
        let (s, r) = upload(client, tenant, name, "ranker", path).await;
        assert_eq!(s, 201, "{r}");
        let (s, r) = activate(client, tenant, name, json!({"version": 1})).await;
        assert_eq!(s, 200, "{r}");
    }
    let q = json!({"text": "a product", "limit": 6});
    // Warm the text cache, so that times below are the plugins'.
    search(&quiet, "quiet", q.clone()).await;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut loops = Vec::new();
    // Many more concurrent searches than the tenant has plugin slots. Their
    // plugin stage ends by the deadline + 20 ms (95th percentile; a few get
    // more while this debug build shares two cores with the load and other
    // tests, none near the guests' 1 s sleep). The host's unit test holds
    // every call to the deadline + 20 ms.
    for _ in 0..8 {
        let (client, q, stop) = (noisy.clone(), q.clone(), stop.clone());
        loops.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let start = std::time::Instant::now();
                let r = search(&client, "noisy", q.clone()).await;
                assert!(start.elapsed() < Duration::from_millis(500), "{r}");
                let ranker = &r["plugins"]["ranker"];
                let elapsed = ranker["elapsed_ms"].as_f64().unwrap();
                assert!(elapsed < 250.0, "a sleeper held a search {elapsed} ms: {r}");
                let kind = ranker["error_kind"].as_str().unwrap_or("ok").to_owned();
                outcomes.push((kind, elapsed));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..30 {
        let r = search(&quiet, "quiet", q.clone()).await;
        let ranker = &r["plugins"]["ranker"];
        assert_eq!(ranker["outcome"], "ok", "search {i}: {r}");
        let elapsed = ranker["elapsed_ms"].as_f64().unwrap();
        assert!(
            elapsed <= 10.0 + 20.0,
            "search {i}: the ranker took {elapsed} ms: {r}"
        );
        let took = r["took_ms"].as_f64().unwrap();
        assert!(took <= 250.0, "search {i} took {took} ms: {r}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes = Vec::new();
    for l in loops {
        outcomes.extend(l.await.unwrap());
    }
    assert!(outcomes.iter().any(|(o, _)| o == "timeout"), "{outcomes:?}");
    assert!(
        outcomes.iter().all(|(o, _)| o == "timeout" || o == "busy"),
        "{outcomes:?}"
    );
    let mut elapsed: Vec<f64> = outcomes.iter().map(|(_, ms)| *ms).collect();
    elapsed.sort_by(f64::total_cmp);
    let p95 = elapsed[(elapsed.len() * 95 / 100).min(elapsed.len() - 1)];
    assert!(p95 <= 10.0 + 20.0, "p95 {p95} ms of {elapsed:?}");

    // A sleeping ingest plugin: the write is stored as sent, at once, and
    // says which plugin failed and how.
    let (s, r) = upload(&quiet, "quiet", "sleepy", "ingest", artifacts::SLEEPY_INGEST).await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = activate(&quiet, "quiet", "sleepy", json!({"version": 1})).await;
    assert_eq!(s, 200, "{r}");
    let start = std::time::Instant::now();
    let (s, r) = quiet
        .post(
            "/v1/tenants/quiet/products",
            &json!({"external_id": "w1", "title": "  as   sent "}),
        )
        .await;
    assert!(
        start.elapsed() < Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["product"]["title"], "  as   sent ");
    assert_eq!(
        (
            &r["warnings"][0]["plugin"],
            &r["warnings"][0]["world"],
            &r["warnings"][0]["outcome"]
        ),
        (&json!("sleepy"), &json!("ingest"), &json!("timeout")),
        "{r}"
    );
    assert_eq!(r["warnings"][0]["version"], 1);
    let (s, r) = quiet
        .post(
            "/v1/tenants/quiet/products/batch",
            &json!({"products": [{"external_id": "w2", "title": "a"}, {"external_id": "w3", "title": "b"}]}),
        )
        .await;
    assert_eq!((s, r["accepted"].as_u64()), (202, Some(2)), "{r}");
    let warned: Vec<u64> = r["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["index"].as_u64().unwrap())
        .collect();
    assert_eq!(warned, vec![0, 1], "{r}");
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| ["timeout", "busy"].contains(&w["outcome"].as_str().unwrap())),
        "{r}"
    );
    // Without a plugin problem there is no `warnings` field.
    let (s, r) = noisy
        .post(
            "/v1/tenants/noisy/products",
            &json!({"external_id": "w4", "title": "c"}),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    assert!(r.get("warnings").is_none(), "{r}");

    // Shutdown while guests sleep (a deadline far beyond their 1 s sleep):
    // the guests are interrupted, the searches answer with a fallback, the
    // process exits at once, nothing panics and the log stays JSON.
    drop(server);
    setup
        .env
        .push(("VITRINE__PLUGINS__RANKER_DEADLINE_MS".into(), "30000".into()));
    let server = setup.start();
    let noisy = noisy.with_base(&server);
    let mut pending = Vec::new();
    for _ in 0..8 {
        let (client, q) = (noisy.clone(), q.clone());
        pending.push(tokio::spawn(async move {
            client.post("/v1/tenants/noisy/search", &q).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = std::time::Instant::now();
    let (stdout, stderr) = (server.logs.clone(), server.stderr.clone());
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    for p in pending {
        let (s, r) = p.await.unwrap();
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["plugins"]["ranker"]["outcome"], "fallback", "{r}");
    }
    for line in stdout.lock().unwrap().iter() {
        assert!(serde_json::from_str::<Value>(line).is_ok(), "not JSON: {line}");
    }
    let stderr = stderr.lock().unwrap();
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
}
