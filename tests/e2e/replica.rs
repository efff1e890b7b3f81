//! Edge replicas (issue 13): an origin and an edge, two real `vitrine`
//! processes on loopback; the edge follows the origin's change feed into
//! its own SQLite catalog and Qdrant Edge shard.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use vitrine_plugin_artifacts as artifacts;

use crate::harness::{ADMIN_KEY, Catalog, Client, Server, Setup, fast_jobs, signal, wait_for_job};
use crate::search::{batch, ids, search};
use crate::{new_key, tenant_key};

/// A replicate key, issued by the admin.
async fn replicate_key(admin: &Client) -> String {
    new_key(admin, "default", &["replicate"]).await
}

fn edge_setup(origin: &Server, key: &str, page_size: u32) -> Setup {
    let mut setup = Setup::new(&Catalog::Sqlite);
    for (k, v) in [
        ("VITRINE__EDGE__ORIGIN_URL", format!("http://{}", origin.addr)),
        ("VITRINE__EDGE__KEY", key.to_owned()),
        ("VITRINE__EDGE__MAX_STALENESS_SECS", "5".to_owned()),
        ("VITRINE__EDGE__BOOTSTRAP_PAGE_SIZE", page_size.to_string()),
    ] {
        setup.env.push((k.to_owned(), v));
    }
    setup
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(edge: &Client, limit: Duration) {
    wait_until("edge ready", limit, || async {
        edge.get("/health/ready").await.0 == 200
    })
    .await;
}

async fn replica(edge: &Client) -> Value {
    let (s, d) = edge.get("/health/dependencies").await;
    assert_eq!(s, 200, "{d}");
    d["dependencies"]["replica"]["replica"].clone()
}

fn product(id: &str, title: &str, category: &str, price: f64) -> Value {
    json!({"external_id": id, "title": title, "category": category, "price": price, "currency": "EUR",
           "tags": [category], "in_stock": true})
}

/// A page's hits as (score to 4 places, id), best first, ties by id.
fn scored(r: &Value) -> Vec<(i64, String)> {
    let mut hits: Vec<(i64, String)> = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                (h["score"].as_f64().unwrap() * 1e4).round() as i64,
                h["product"]["external_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    hits.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    hits
}

/// The same hits with the same scores, but for which of the products tied
/// at the page's lowest score made the page: the vector store breaks ties
/// by its own internal order (a Qdrant server and Qdrant Edge, or two
/// shards filled in another order, may differ there).
fn assert_same_hits(origin: &Value, edge: &Value, what: &str) {
    let (a, b) = (scored(origin), scored(edge));
    let scores = |h: &[(i64, String)]| h.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    assert_eq!(scores(&a), scores(&b), "{what}: scores\n{a:?}\n{b:?}");
    let lowest = a.last().map(|(s, _)| *s);
    let above = |h: &[(i64, String)]| {
        h.iter()
            .filter(|(s, _)| Some(*s) != lowest)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(above(&a), above(&b), "{what}: hits above the lowest score");
}

/// Keyword search ids at `client` for a word.
async fn found(client: &Client, tenant: &str, word: &str) -> Vec<String> {
    let (s, r) = client
        .post(
            &format!("/v1/tenants/{tenant}/search"),
            &json!({"text": word, "mode": "keyword", "limit": 50}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    ids(&r)
}

/// How often the origin's analytics count `text` for a tenant.
async fn logged(origin: &Client, tenant: &str, text: &str) -> i64 {
    let (s, r) = origin
        .get(&format!("/v1/tenants/{tenant}/analytics/queries?limit=100"))
        .await;
    assert_eq!(s, 200, "{r}");
    r["queries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["query_text"] == text)
        .map_or(0, |q| q["count"].as_i64().unwrap())
}

/// The origin's analytics reach `n` searches of `text` made at an edge, and
/// stay there (each log delivered exactly once).
async fn assert_logged_once(origin: &Client, tenant: &str, text: &str, n: i64) {
    wait_until("search logs at the origin", Duration::from_secs(15), || async {
        logged(origin, tenant, text).await >= n
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        logged(origin, tenant, text).await,
        n,
        "{text}: delivered exactly once"
    );
}

/// The origin's state as its snapshot shows it: product → (fields, vectors).
/// A counter's value in Prometheus text (0 before its first increment).
fn counter(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn origin_state(replicator: &Client) -> BTreeMap<(String, String), (Value, Option<Value>)> {
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/replication/snapshot?limit=200&cursor={c}"),
            None => "/v1/replication/snapshot?limit=200".to_owned(),
        };
        let (s, page) = replicator.get(&path).await;
        assert_eq!(s, 200, "{page}");
        for p in page["products"].as_array().unwrap() {
            let mut fields = p.clone();
            let vectors = fields.as_object_mut().unwrap().remove("vectors");
            let key = (
                p["tenant"].as_str().unwrap().to_owned(),
                p["external_id"].as_str().unwrap().to_owned(),
            );
            out.insert(key, (fields, vectors.filter(|v| !v.is_null())));
        }
        match page["next"].as_str() {
            Some(n) => cursor = Some(n.to_owned()),
            None => return out,
        }
    }
}

/// Compares a stopped edge's catalog and vectors with the origin's state:
/// the same products with the same fields, versions and statuses, and the
/// same vectors for every indexed one.
async fn assert_same_state(replicator: &Client, edge_dir: &Path, dims: usize) {
    use vitrine::store::vectors::VectorIndex;
    use vitrine::store::{ProductStore, TenantStore};
    let origin = origin_state(replicator).await;
    let catalog = vitrine::store::sqlite::SqliteCatalog::open(&edge_dir.join("catalog.sqlite3"), 2)
        .await
        .unwrap();
    let index = vitrine::store::vectors::EdgeIndex::open_async(edge_dir.to_path_buf(), dims)
        .await
        .unwrap();
    let mut edge = BTreeMap::new();
    for t in catalog.list_tenants().await.unwrap() {
        let mut after = None;
        loop {
            let page = catalog.list_products(&t.id, None, after, 500).await.unwrap();
            for p in page.products {
                let key = (p.tenant.clone(), p.external_id.clone());
                edge.insert(key, p);
            }
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
    }
    let origin_keys: Vec<_> = origin.keys().collect();
    let edge_keys: Vec<_> = edge.keys().collect();
    assert_eq!(origin_keys, edge_keys, "the same products");
    let mut indexed = BTreeMap::<String, u64>::new();
    for (key, (fields, vectors)) in &origin {
        let p = &edge[key];
        let wire = vitrine::replica::wire::product_to_wire(p, None);
        let mut mine = serde_json::to_value(&wire).unwrap();
        mine.as_object_mut().unwrap().remove("vectors");
        assert_eq!(&mine, fields, "{key:?}: fields");
        let stored = index.get_vectors(&key.0, &key.1).await.unwrap();
        match vectors {
            Some(v) => {
                *indexed.entry(key.0.clone()).or_default() += 1;
                let (image, text) = stored.unwrap_or_else(|| panic!("{key:?}: no vectors at the edge"));
                let want = vitrine::replica::wire::decode_vector(v["image"].as_str().unwrap()).unwrap();
                let close = |a: &[f32], b: &[f32]| {
                    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
                };
                assert!(close(&image, &want), "{key:?}: image vector");
                let want_text = vitrine::replica::wire::decode_vector(v["text"].as_str().unwrap()).unwrap();
                assert!(close(&text.unwrap(), &want_text), "{key:?}: text vector");
            }
            None => assert!(
                fields["index_status"] != "indexed",
                "{key:?}: indexed at the origin without vectors"
            ),
        }
    }
    for (tenant, n) in indexed {
        assert_eq!(index.count(Some(&tenant)).await.unwrap(), n, "{tenant}: points");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_follows_its_origin() {
    for catalog in Catalog::all().await {
        let name = catalog.name();
        let mut setup = Setup::new(&catalog);
        fast_jobs(&mut setup);
        let origin = setup.start();
        let admin = Client::new(&origin, ADMIN_KEY);
        let a_key = tenant_key(&admin, "shop-a", &["search", "write", "admin"]).await;
        let b_key = tenant_key(&admin, "shop-b", &["search", "write"]).await;
        let a = admin.with_key(&a_key);
        // Only the admin issues `replicate`; a tenant's admin scope does not cover it.
        let (s, r) = a
            .post("/v1/tenants/shop-a/keys", &json!({"scopes": ["replicate"]}))
            .await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (403, Some("admin_required")),
            "{name}: {r}"
        );
        let (s, r) = a.get("/v1/replication/feed?after=0").await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (403, Some("insufficient_scope")),
            "{r}"
        );
        let key = replicate_key(&admin).await;
        let replicator = admin.with_key(&key);
        // A replicate key in a tenant: that tenant's admin cannot revoke it.
        let in_a = new_key(&admin, "shop-a", &["replicate"]).await;
        let in_a_id = in_a.split('_').nth(1).unwrap();
        let (s, r) = a
            .send(
                Method::DELETE,
                &format!("/v1/tenants/shop-a/keys/{in_a_id}"),
                None,
            )
            .await;
        assert_eq!(
            (s, r["error"]["code"].as_str()),
            (403, Some("admin_required")),
            "{r}"
        );
        let shoes = ["boots", "sneakers", "sandals", "loafers", "slippers"];
        let products_a: Vec<Value> = (0..20)
            .map(|i| {
                product(
                    &format!("a-{i}"),
                    &format!("alpha {} model {i}", shoes[i % 5]),
                    shoes[i % 5],
                    10.0 + i as f64,
                )
            })
            .collect();
        let products_b: Vec<Value> = (0..20)
            .map(|i| {
                product(
                    &format!("b-{i}"),
                    &format!("beta {} model {i}", shoes[i % 5]),
                    shoes[i % 5],
                    20.0 + i as f64,
                )
            })
            .collect();
        batch(&a, "shop-a", &products_a).await;
        let b = admin.with_key(&b_key);
        batch(&b, "shop-b", &products_b).await;

        let edge_setup = edge_setup(&origin, &key, 7);
        let edge_server = edge_setup.start();
        let edge = Client::new(&edge_server, ADMIN_KEY);
        wait_ready(&edge, Duration::from_secs(30)).await;
        let edge_a = edge.with_key(&a_key);

        // The same answers at the edge as at the origin, with the replica's staleness.
        for body in [
            json!({"text": "boots model 3", "limit": 10}),
            json!({"text": "sneakers", "mode": "keyword", "limit": 10}),
            json!({"text": "sandals", "mode": "vector", "limit": 10, "filters": {"price_max": 25}}),
            json!({"like": "a-4", "limit": 5}),
        ] {
            let at_origin = search(&a, "shop-a", body.clone()).await;
            let at_edge = search(&edge_a, "shop-a", body.clone()).await;
            // The same hits with the same scores (ties in either order).
            assert_same_hits(&at_origin, &at_edge, &format!("{name}: {body}"));
            assert!(
                ids(&at_edge).iter().all(|id| id.starts_with("a-")),
                "{name}: {at_edge}"
            );
        }
        let response = reqwest::Client::new()
            .post(edge_server.url("/v1/tenants/shop-a/search"))
            .bearer_auth(&a_key)
            .json(&json!({"text": "boots"}))
            .send()
            .await
            .unwrap();
        let staleness: f64 = response.headers()["vitrine-staleness"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(staleness < 5.0, "{staleness}");
        // Searches at the edge reach the origin's analytics exactly once.
        for _ in 0..5 {
            search(&edge_a, "shop-a", json!({"text": "outbox probe"})).await;
        }
        assert_logged_once(&a, "shop-a", "outbox probe", 5).await;
        // No tenant sees another's data at the edge.
        let (s, r) = edge_a
            .post("/v1/tenants/shop-b/search", &json!({"text": "beta"}))
            .await;
        assert_eq!(s, 403, "{r}");
        assert!(found(&edge_a, "shop-a", "beta").await.is_empty());

        // A product indexed at the origin is found at the edge within 2 s.
        let (s, r) = a
            .post(
                "/v1/tenants/shop-a/products",
                &product("new-1", "gamma umbrella", "rain", 30.0),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        wait_for_job(&a, r["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
        let took = wait_until("new product at the edge", Duration::from_secs(2), || async {
            found(&edge_a, "shop-a", "gamma").await == ["new-1"]
        })
        .await;
        eprintln!("{name}: a new product reached the edge {took:?} after it was indexed");
        // Updates and deletes follow.
        let (s, r) = a
            .send(
                Method::PUT,
                "/v1/tenants/shop-a/products/new-1",
                Some(&product("new-1", "delta parasol", "sun", 31.0)),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        wait_for_job(&a, r["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
        wait_until("update at the edge", Duration::from_secs(2), || async {
            found(&edge_a, "shop-a", "delta").await == ["new-1"]
                && found(&edge_a, "shop-a", "gamma").await.is_empty()
        })
        .await;
        // A change that leaves the point as it was (metadata only) is
        // applied without rewriting the point.
        let unchanged = counter(&edge.metrics().await, "vitrine_replica_points_unchanged_total");
        let (s, r) = a
            .send(
                Method::PATCH,
                "/v1/tenants/shop-a/products/new-1",
                Some(&json!({"metadata": {"note": "restocked"}})),
            )
            .await;
        assert_eq!((s, &r["job_id"]), (200, &Value::Null), "{r}");
        wait_until(
            "metadata-only change at the edge",
            Duration::from_secs(2),
            || async { counter(&edge.metrics().await, "vitrine_replica_points_unchanged_total") > unchanged },
        )
        .await;
        assert_eq!(found(&edge_a, "shop-a", "delta").await, ["new-1"]);
        let (s, _) = a
            .send(Method::DELETE, "/v1/tenants/shop-a/products/new-1", None)
            .await;
        assert_eq!(s, 204);
        wait_until("delete at the edge", Duration::from_secs(2), || async {
            found(&edge_a, "shop-a", "delta").await.is_empty()
        })
        .await;

        // Keys: a new key works at the edge; a revoked one stops within 2 s.
        let (s, created) = admin
            .post("/v1/tenants/shop-a/keys", &json!({"scopes": ["search"]}))
            .await;
        assert_eq!(s, 201, "{created}");
        let extra = edge.with_key(created["key"].as_str().unwrap());
        wait_until("new key at the edge", Duration::from_secs(2), || async {
            extra
                .post("/v1/tenants/shop-a/search", &json!({"text": "boots"}))
                .await
                .0
                == 200
        })
        .await;
        let (s, _) = admin
            .send(
                Method::DELETE,
                &format!("/v1/tenants/shop-a/keys/{}", created["id"].as_str().unwrap()),
                None,
            )
            .await;
        assert_eq!(s, 204);
        wait_until(
            "revoked key refused at the edge",
            Duration::from_secs(2),
            || async {
                extra
                    .post("/v1/tenants/shop-a/search", &json!({"text": "boots"}))
                    .await
                    .0
                    == 401
            },
        )
        .await;

        // Writes sent to the edge land at the origin (forwarded with the
        // caller's key), and come back through the feed.
        let (s, r) = edge_a
            .post(
                "/v1/tenants/shop-a/products",
                &product("via-edge", "epsilon raincoat", "rain", 50.0),
            )
            .await;
        assert_eq!(s, 201, "{name}: {r}");
        let job = r["job_id"].as_str().unwrap().to_owned();
        let (s, got) = a.get("/v1/tenants/shop-a/products/via-edge").await;
        assert_eq!(
            (s, got["title"].as_str()),
            (200, Some("epsilon raincoat")),
            "{got}"
        );
        let (s, r) = edge_a
            .post(
                "/v1/tenants/shop-b/products",
                &product("sneaky", "zeta", "rain", 1.0),
            )
            .await;
        assert_eq!(s, 403, "the origin judges forwarded writes: {r}");
        wait_for_job(&a, &job, Duration::from_secs(30)).await;
        wait_until("edge write found at the edge", Duration::from_secs(2), || async {
            found(&edge_a, "shop-a", "epsilon").await == ["via-edge"]
        })
        .await;

        // Plugins: uploaded through the edge (forwarded), activated at the
        // origin, then run by searches at the edge (compiled there).
        let (s, r) = edge_a
            .put_bytes(
                "/v1/tenants/shop-a/plugins/allow?world=filter",
                artifacts::bytes(artifacts::CATEGORY_ALLOWLIST),
                "application/wasm",
            )
            .await;
        assert_eq!(s, 201, "{r}");
        let (s, r) = a
            .post(
                "/v1/tenants/shop-a/plugins/allow/activate",
                &json!({"version": 1, "params": {"categories": "boots"}}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        wait_until("the plugin runs at the edge", Duration::from_secs(20), || async {
            let r = search(&edge_a, "shop-a", json!({"text": "model", "limit": 10})).await;
            r["plugins"]["filter"]["outcome"] == "ok"
                && r["hits"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|h| h["product"]["category"] == "boots")
        })
        .await;

        // An edge of shop-a only: other tenants' writes do not make it
        // stale, and their searches are answered by the origin.
        let mut only_a = crate::replica::edge_setup(&origin, &key, 500);
        only_a
            .env
            .push(("VITRINE__EDGE__TENANTS".to_owned(), "[\"shop-a\"]".to_owned()));
        let only_a_server = only_a.start();
        let only_a_client = Client::new(&only_a_server, &a_key);
        wait_ready(&only_a_client, Duration::from_secs(30)).await;
        let (s, r) = b
            .post(
                "/v1/tenants/shop-b/products",
                &product("b-late", "theta", "rain", 2.0),
            )
            .await;
        assert_eq!(s, 201, "{r}");
        wait_for_job(&b, r["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let r = replica(&only_a_client).await;
        assert_eq!(r["lag_sequences"], 0, "{r}");
        assert!(r["staleness_secs"].as_f64().unwrap() < 3.0, "{r}");
        let via_origin = search(
            &only_a_client.with_key(&b_key),
            "shop-b",
            json!({"text": "theta", "mode": "keyword"}),
        )
        .await;
        assert_eq!(ids(&via_origin), ["b-late"]);
        assert!(!found(&only_a_client, "shop-a", "alpha").await.is_empty());
        drop(only_a_server);

        // The replica holds exactly the origin's state.
        let (_, v) = admin.get("/v1/admin/vectors").await;
        let dims = v["dims"].as_u64().unwrap() as usize;
        let dir = edge_setup.data_dir().to_path_buf();
        edge_server.terminate();
        assert_same_state(&replicator, &dir, dims).await;
        drop(origin);
        catalog.cleanup().await;
    }
}

/// A free loopback port (for an origin that must come back on the same one).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_edge_survives_kills_and_outages() {
    let mut setup = Setup::new(&Catalog::Sqlite);
    fast_jobs(&mut setup);
    let port = free_port();
    setup
        .env
        .push(("VITRINE__SERVER__LISTEN".to_owned(), format!("127.0.0.1:{port}")));
    let origin = setup.start();
    let admin = Client::new(&origin, ADMIN_KEY);
    let key = replicate_key(&admin).await;
    let replicator = admin.with_key(&key);
    let products: Vec<Value> = (0..300)
        .map(|i| product(&format!("p-{i}"), &format!("item {i} kappa"), "misc", i as f64))
        .collect();
    for chunk in products.chunks(100) {
        batch(&admin, "default", chunk).await;
    }
    let (_, v) = admin.get("/v1/admin/vectors").await;
    let dims = v["dims"].as_u64().unwrap() as usize;

    // SIGKILL mid-bootstrap (the origin paused so that the bootstrap is
    // caught half way), then a restart resumes from the last page applied.
    let edge_setup = edge_setup(&origin, &key, 5);
    let edge_server = edge_setup.start();
    let edge = Client::new(&edge_server, ADMIN_KEY);
    wait_until("bootstrap under way", Duration::from_secs(30), || async {
        replica(&edge).await["bootstrap_products"].as_u64().unwrap_or(0) > 0
    })
    .await;
    signal(origin.pid(), "STOP");
    let r = replica(&edge).await;
    let applied_before = r["bootstrap_products"].as_u64().unwrap();
    assert_eq!(r["bootstrapped"], false, "{r}");
    edge_server.kill9();
    signal(origin.pid(), "CONT");
    let edge_server = edge_setup.start();
    let edge = Client::new(&edge_server, ADMIN_KEY);
    wait_ready(&edge, Duration::from_secs(30)).await;
    let resumed = edge_server
        .log_lines()
        .iter()
        .any(|l| l["message"] == "bootstrapping from the origin's snapshot");
    assert!(!resumed, "the restarted edge started the bootstrap over");
    assert!(
        replica(&edge).await["bootstrap_products"].as_u64().unwrap() <= 300 - applied_before + 5,
        "the restarted edge fetched pages it had applied"
    );
    edge_server.terminate();
    assert_same_state(&replicator, edge_setup.data_dir(), dims).await;

    // SIGKILL mid-follow, under writes at the origin.
    let edge_server = edge_setup.start();
    let edge = Client::new(&edge_server, ADMIN_KEY);
    wait_ready(&edge, Duration::from_secs(30)).await;
    let writer = {
        let admin = admin.clone();
        tokio::spawn(async move {
            for i in 0..60 {
                let (s, r) = admin
                    .send(
                        Method::PATCH,
                        &format!("/v1/tenants/default/products/p-{}", i * 5),
                        Some(&json!({"title": format!("item {i} lambda"), "price": 1000 + i})),
                    )
                    .await;
                assert_eq!(s, 200, "{r}");
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    edge_server.kill9();
    let edge_server = edge_setup.start();
    let edge = Client::new(&edge_server, ADMIN_KEY);
    writer.await.unwrap();
    // Every write indexed at the origin, then the edge at the head.
    wait_until("origin jobs done", Duration::from_secs(60), || async {
        let (_, jobs) = admin.get("/v1/tenants/default/jobs?status=queued&limit=1").await;
        let (_, running) = admin.get("/v1/tenants/default/jobs?status=running&limit=1").await;
        jobs["jobs"].as_array().is_some_and(Vec::is_empty)
            && running["jobs"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    let (_, head) = replicator.get("/v1/replication/feed?after=0&limit=1").await;
    let head = head["head"].as_i64().unwrap();
    wait_until("edge at the origin's head", Duration::from_secs(10), || async {
        replica(&edge).await["applied_seq"].as_i64().unwrap_or(0) >= head
    })
    .await;
    assert!(
        !edge_server
            .log_lines()
            .iter()
            .any(|l| l["message"] == "bootstrapping from the origin's snapshot"),
        "a restart mid-follow bootstrapped again"
    );
    assert_eq!(found(&edge, "default", "lambda").await.len(), 50, "a full page");

    // A full reindex at the origin: the edge builds the new generation
    // beside the live one and switches, answering every search in full
    // meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (edge, stop) = (edge.clone(), stop.clone());
        tokio::spawn(async move {
            let mut searches = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for body in [
                    json!({"text": "item", "mode": "keyword", "limit": 100}),
                    json!({"text": "item", "mode": "vector", "limit": 100}),
                ] {
                    let (s, r) = edge.post("/v1/tenants/default/search", &body).await;
                    assert_eq!(s, 200, "{r}");
                    assert_eq!(ids(&r).len(), 100, "a partial answer during the switch: {r}");
                }
                searches += 2;
            }
            searches
        })
    };
    let (s, r) = admin.post("/v1/admin/reindex", &json!({})).await;
    assert_eq!(s, 202, "{r}");
    let job = wait_for_job(&admin, r["job_id"].as_str().unwrap(), Duration::from_secs(120)).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    wait_until(
        "the edge switched generations",
        Duration::from_secs(30),
        || async {
            edge_server
                .log_lines()
                .iter()
                .any(|l| l["message"] == "switched to the origin's new index generation")
        },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let searches = watcher.await.unwrap();
    assert!(searches > 10, "{searches} searches during the reindex");

    // The origin down for 20 s: the edge keeps answering and says how
    // stale it is; writes are refused with 502; then it catches up.
    origin.terminate();
    // (A long poll the origin finished while shutting down may still land.)
    wait_until("the edge notices", Duration::from_secs(10), || async {
        replica(&edge).await["origin_reachable"] == false
    })
    .await;
    let down = Instant::now();
    let mut last_staleness = 0.0;
    let mut searches = 0;
    while down.elapsed() < Duration::from_secs(20) {
        searches += 1;
        let response = reqwest::Client::new()
            .post(edge_server.url("/v1/tenants/default/search"))
            .bearer_auth(ADMIN_KEY)
            .json(&json!({"text": "kappa", "mode": "keyword", "limit": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let staleness: f64 = response.headers()["vitrine-staleness"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            staleness + 0.5 >= last_staleness,
            "{staleness} after {last_staleness}"
        );
        last_staleness = staleness;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(last_staleness > 15.0, "{last_staleness}");
    let r = replica(&edge).await;
    assert_eq!(r["origin_reachable"], false, "{r}");
    let (s, r) = edge.get("/health/ready").await;
    assert_eq!(s, 503, "stale beyond edge.max_staleness_secs: {r}");
    let (s, r) = edge
        .post(
            "/v1/tenants/default/products",
            &product("late", "omega", "misc", 1.0),
        )
        .await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (502, Some("origin_unreachable")),
        "{r}"
    );
    let origin = setup.start();
    let admin = Client::new(&origin, ADMIN_KEY);
    let (s, r) = admin
        .post(
            "/v1/tenants/default/products",
            &product("late", "omega", "misc", 1.0),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    wait_for_job(&admin, r["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
    wait_until("caught up after the outage", Duration::from_secs(10), || async {
        found(&edge, "default", "omega").await == ["late"]
    })
    .await;
    wait_ready(&edge, Duration::from_secs(5)).await;
    // The searches made while the origin was away arrive once, across a
    // restart of the edge too.
    edge_server.terminate();
    let edge_server = edge_setup.start();
    assert_logged_once(&admin, "default", "kappa", searches).await;
    edge_server.terminate();
    assert_same_state(&admin.with_key(&key), edge_setup.data_dir(), dims).await;
}

/// An origin on PostgreSQL and a Qdrant server (when `QDRANT_URL` names
/// one): the edge follows it the same way. The tenant's id is new on every
/// run, since the server's collection outlives the test's schema.
#[tokio::test(flavor = "multi_thread")]
async fn an_edge_follows_an_origin_on_a_qdrant_server() {
    let qdrant = match std::env::var("QDRANT_URL") {
        Ok(q) if !q.is_empty() => q,
        _ => {
            eprintln!("skipped the Qdrant server origin: set QDRANT_URL to run it");
            return;
        }
    };
    let Some(pg) = crate::harness::PgSchema::create().await else {
        return;
    };
    let catalog = Catalog::Postgres(Box::new(pg));
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    setup.env.push(("VITRINE__VECTORS__URL".to_owned(), qdrant));
    let origin = setup.start();
    let admin = Client::new(&origin, ADMIN_KEY);
    let tenant = format!("q{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let key = tenant_key(&admin, &tenant, &["search", "write"]).await;
    let shop = admin.with_key(&key);
    let products: Vec<Value> = (0..30)
        .map(|i| {
            product(
                &format!("p{i}"),
                &format!("omicron widget {i}"),
                "widgets",
                i as f64,
            )
        })
        .collect();
    batch(&shop, &tenant, &products).await;
    let replicate = replicate_key(&admin).await;
    let edge_setup = edge_setup(&origin, &replicate, 500);
    let edge_server = edge_setup.start();
    let edge = Client::new(&edge_server, &key);
    wait_ready(&edge, Duration::from_secs(30)).await;
    // Vector searches: the same hits with the same scores.
    for body in [
        json!({"text": "omicron widget 7", "mode": "vector", "limit": 10}),
        json!({"like": "p3", "limit": 5}),
    ] {
        let at_origin = search(&shop, &tenant, body.clone()).await;
        let at_edge = search(&edge, &tenant, body.clone()).await;
        assert_same_hits(&at_origin, &at_edge, &body.to_string());
    }
    // Keyword and hybrid searches: the same best hit. Their scores are not
    // compared: the keyword leg's IDF counts every point of the index, and
    // the server's collection holds other tests' (and runs') tenants too.
    for body in [
        json!({"text": "omicron widget 7", "limit": 10}),
        json!({"text": "widget 7", "mode": "keyword", "limit": 10}),
    ] {
        let at_origin = search(&shop, &tenant, body.clone()).await;
        let at_edge = search(&edge, &tenant, body.clone()).await;
        assert_eq!(ids(&at_origin)[0], "p7", "{body}: {at_origin}");
        assert_eq!(ids(&at_edge)[0], "p7", "{body}: {at_edge}");
        assert_eq!(ids(&at_origin).len(), ids(&at_edge).len(), "{body}");
    }
    let (s, r) = shop
        .post(
            &format!("/v1/tenants/{tenant}/products"),
            &product("late", "sigma gadget", "widgets", 3.0),
        )
        .await;
    assert_eq!(s, 201, "{r}");
    wait_for_job(&shop, r["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;
    wait_until("new product at the edge", Duration::from_secs(2), || async {
        found(&edge, &tenant, "sigma").await == ["late"]
    })
    .await;
    let (_, v) = admin.get("/v1/admin/vectors").await;
    let dims = v["dims"].as_u64().unwrap() as usize;
    edge_server.terminate();
    assert_same_state(&admin.with_key(&replicate), edge_setup.data_dir(), dims).await;
    drop(origin);
    catalog.cleanup().await;
}
