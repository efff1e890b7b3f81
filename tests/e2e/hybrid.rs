//! Hybrid search end to end (README "Search modes, weights and facets"):
//! the three modes on text, image and `like` queries, weights and tenant
//! defaults, facets against a brute-force count, and the errors of bad
//! options, on both catalogs.

use serde_json::{Value, json};

use crate::harness::{ADMIN_KEY, Catalog, Client, Setup, fast_jobs};
use crate::search::{batch, ids, search};

/// (id, title, category, price, tags, in stock).
type Row = (
    &'static str,
    &'static str,
    &'static str,
    f64,
    &'static [&'static str],
    bool,
);
const PRODUCTS: [Row; 12] = [
    (
        "b1",
        "ECCO 470304 leather ankle boots black size 42",
        "boots",
        129.0,
        &["black", "leather"],
        true,
    ),
    (
        "b2",
        "ECCO 470305 leather ankle boots brown size 43",
        "boots",
        139.0,
        &["brown", "leather"],
        false,
    ),
    (
        "b3",
        "Dr. Martens 1460 boots cherry red",
        "boots",
        179.0,
        &["red", "leather"],
        true,
    ),
    (
        "s1",
        "Nike Air Max 90 running shoes white",
        "shoes",
        99.0,
        &["white"],
        true,
    ),
    (
        "s2",
        "Adidas Ultraboost 22 running shoes black",
        "shoes",
        149.0,
        &["black"],
        true,
    ),
    (
        "s3",
        "ECCO Biom 2.0 walking shoes",
        "shoes",
        119.0,
        &["grey"],
        false,
    ),
    (
        "c1",
        "Apple iPhone 15 silicone case blue",
        "cases",
        49.0,
        &["blue"],
        true,
    ),
    (
        "c2",
        "Spigen iPhone 14 rugged armor case",
        "cases",
        19.5,
        &["black"],
        true,
    ),
    (
        "k1",
        "Herschel Little America backpack navy 25L",
        "bags",
        89.0,
        &["navy"],
        true,
    ),
    (
        "k2",
        "Fjallraven Kanken backpack ochre 16L",
        "bags",
        79.0,
        &["yellow"],
        false,
    ),
    (
        "h1",
        "Wool beanie hat grey",
        "hats",
        24.0,
        &["grey", "wool"],
        true,
    ),
    ("h2", "Straw sun hat", "hats", 35.0, &[], true),
];

fn counts(filter: impl Fn(&Row) -> bool) -> Value {
    let mut category: Vec<(String, u64)> = Vec::new();
    let mut stock = [0u64; 2];
    let mut price = [0u64; 3];
    for p in PRODUCTS.iter().filter(|p| filter(p)) {
        match category.iter_mut().find(|(c, _)| c == p.2) {
            Some((_, n)) => *n += 1,
            None => category.push((p.2.to_owned(), 1)),
        }
        stock[usize::from(p.5)] += 1;
        price[if p.3 < 50.0 {
            0
        } else if p.3 < 120.0 {
            1
        } else {
            2
        }] += 1;
    }
    category.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut in_stock: Vec<(bool, u64)> = [(false, stock[0]), (true, stock[1])]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    in_stock.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    json!({
        "category": category.iter().map(|(v, n)| json!({"value": v, "count": n})).collect::<Vec<_>>(),
        "in_stock": in_stock.iter().map(|(v, n)| json!({"value": v, "count": n})).collect::<Vec<_>>(),
        "price": [{"to": 50.0, "count": price[0]}, {"from": 50.0, "to": 120.0, "count": price[1]}, {"from": 120.0, "count": price[2]}],
    })
}

async fn error(client: &Client, body: Value, code: &str, field: &str) {
    let (s, r) = client.post("/v1/tenants/default/search", &body).await;
    assert_eq!(s, 400, "{body} -> {r}");
    assert_eq!(r["error"]["code"], code, "{body} -> {r}");
    assert!(
        r["error"]["details"]["field"]
            .as_str()
            .is_some_and(|f| f.starts_with(field)),
        "{body} -> {r}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn modes_weights_defaults_and_facets() {
    for catalog in Catalog::all().await {
        let mut setup = Setup::new(&catalog);
        fast_jobs(&mut setup);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let products: Vec<Value> = PRODUCTS
            .iter()
            .map(|(id, title, category, price, tags, in_stock)| {
                json!({"external_id": id, "title": title, "category": category, "price": price,
                       "currency": "EUR", "tags": tags, "in_stock": in_stock})
            })
            .collect();
        batch(&admin, "default", &products).await;
        let name = catalog.name();

        // An exact model number comes first in hybrid (the default) and
        // keyword mode; keyword mode returns only products with a term.
        for (mode, expect) in [
            (None, "hybrid"),
            (Some("hybrid"), "hybrid"),
            (Some("keyword"), "keyword"),
        ] {
            let mut body = json!({"text": "ECCO 470305", "limit": 5});
            if let Some(m) = mode {
                body["mode"] = json!(m);
            }
            let r = search(&admin, "default", body).await;
            assert_eq!(r["mode"], expect, "{name}: {r}");
            assert_eq!(ids(&r)[0], "b2", "{name} {mode:?}: {r}");
        }
        let r = search(
            &admin,
            "default",
            json!({"text": "ecco", "mode": "keyword", "limit": 10}),
        )
        .await;
        let mut found = ids(&r);
        found.sort();
        assert_eq!(found, ["b1", "b2", "s3"], "{name}: {r}");
        assert!(r["hits"][0]["score"].as_f64().unwrap() > 0.0);
        // Hybrid scores are in [0, 1]; vector mode fills the page.
        let r = search(&admin, "default", json!({"text": "iphone case", "limit": 12})).await;
        assert!(
            r["hits"]
                .as_array()
                .unwrap()
                .iter()
                .all(|h| (0.0..=1.0001).contains(&h["score"].as_f64().unwrap()))
        );
        assert!(ids(&r)[..2].iter().all(|id| id.starts_with('c')), "{name}: {r}");
        assert_eq!(
            r["weights"],
            json!({"image": 0.1, "text": 0.1, "keyword": 1.0}),
            "{name}: {r}"
        );
        assert_eq!(r["fusion"], "relative");
        let r = search(
            &admin,
            "default",
            json!({"text": "iphone case", "mode": "vector", "limit": 12}),
        )
        .await;
        assert_eq!(r["mode"], "vector");
        assert!(r.get("weights").is_none());
        assert_eq!(ids(&r).len(), 12);
        // Weights: the keyword leg off leaves the CLIP legs; all off is refused.
        let r = search(
            &admin,
            "default",
            json!({"text": "ECCO 470305", "weights": {"keyword": 0}, "limit": 12}),
        )
        .await;
        assert_eq!(ids(&r).len(), 12, "{name}: {r}");
        error(
            &admin,
            json!({"text": "x", "weights": {"keyword": 0, "text": 0, "image": 0}}),
            "invalid_parameter",
            "weights",
        )
        .await;
        // More like this, in hybrid: the product itself is never a hit.
        let r = search(&admin, "default", json!({"like": "b1", "limit": 5})).await;
        assert_eq!(r["mode"], "hybrid");
        assert!(!ids(&r).contains(&"b1".to_owned()));
        // RRF fusion (rank only) finds it too, if not always first.
        let r = search(
            &admin,
            "default",
            json!({"text": "ECCO 470304", "fusion": "rrf", "limit": 3}),
        )
        .await;
        assert!(ids(&r).contains(&"b1".to_owned()), "{name}: {r}");

        // Facets: every product that passes the filters, in every mode.
        for mode in ["hybrid", "vector", "keyword"] {
            let r = search(
                &admin,
                "default",
                json!({"text": "boots", "mode": mode, "limit": 1,
                       "facets": ["category", "in_stock", "price", "category"], "price_buckets": [120, 50]}),
            )
            .await;
            let want = counts(|_| true);
            assert_eq!(r["facets"]["category"], want["category"], "{name} {mode}: {r}");
            assert_eq!(r["facets"]["in_stock"], want["in_stock"], "{name} {mode}: {r}");
            assert_eq!(r["facets"]["price"], want["price"], "{name} {mode}: {r}");
            assert!(r["facets"].get("tags").is_none());
        }
        let r = search(
            &admin,
            "default",
            json!({"text": "shoes", "facets": ["category", "in_stock", "price", "tags"], "facet_limit": 2,
                   "price_buckets": [50, 120], "filters": {"in_stock": true, "price_max": 150}}),
        )
        .await;
        let want = counts(|p| p.5 && p.3 <= 150.0);
        assert_eq!(
            r["facets"]["category"],
            json!(want["category"].as_array().unwrap()[..2]),
            "{name}: {r}"
        );
        assert_eq!(r["facets"]["in_stock"], want["in_stock"], "{name}: {r}");
        assert_eq!(r["facets"]["price"], want["price"], "{name}: {r}");
        assert_eq!(
            r["facets"]["tags"],
            json!([{"value": "black", "count": 3}, {"value": "blue", "count": 1}]),
            "{name}: {r}"
        );
        // A search token's forced filter bounds the facets too: they never
        // count a product the token cannot see, in any mode.
        let (s, k) = admin
            .post("/v1/tenants/default/keys", &json!({"scopes": ["search"]}))
            .await;
        assert_eq!(s, 201, "{k}");
        let key = k["key"].as_str().unwrap();
        let claims = json!({"exp": crate::trust::in_an_hour(), "tenant": "default", "key_id": crate::trust::key_id(key),
                            "scopes": ["search"], "filters": {"categories": ["bags", "hats"]}});
        let token = admin.with_key(&crate::trust::token(key, claims));
        for mode in ["hybrid", "keyword", "vector"] {
            let r = search(
                &token,
                "default",
                json!({"text": "ecco boots", "mode": mode, "facets": ["category", "price", "in_stock", "tags"],
                       "price_buckets": [50, 120]}),
            )
            .await;
            let want = counts(|p| p.2 == "bags" || p.2 == "hats");
            assert_eq!(r["facets"]["category"], want["category"], "{name} {mode}: {r}");
            assert_eq!(r["facets"]["price"], want["price"], "{name} {mode}: {r}");
            assert_eq!(r["facets"]["in_stock"], want["in_stock"], "{name} {mode}: {r}");
            assert!(
                ids(&r)
                    .iter()
                    .all(|id| id.starts_with('k') || id.starts_with('h')),
                "{name} {mode}: {r}"
            );
        }
        // Filters that exclude the token's: no hits, every bucket at 0.
        let r = search(
            &token,
            "default",
            json!({"text": "ecco", "facets": ["price"], "price_buckets": [50], "filters": {"category": "boots"}}),
        )
        .await;
        assert_eq!(r["hits"], json!([]));
        assert_eq!(
            r["facets"]["price"],
            json!([{"to": 50.0, "count": 0}, {"from": 50.0, "count": 0}]),
            "{name}: {r}"
        );
        let (s, r) = token
            .post(
                "/v1/tenants/default/search",
                &json!({"like": "k1", "mode": "keyword", "filters": {"category": "boots"}}),
            )
            .await;
        assert_eq!(
            (s, &r["error"]["code"]),
            (400, &json!("invalid_parameter")),
            "{name}: {r}"
        );

        // No facets asked, none given.
        let r = search(&admin, "default", json!({"text": "shoes"})).await;
        assert!(r.get("facets").is_none());

        // Bad options: a clear 400 naming the field.
        error(
            &admin,
            json!({"like": "b1", "mode": "keyword"}),
            "invalid_parameter",
            "mode",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "mode": "fuzzy"}),
            "invalid_parameter",
            "mode",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "weights": {"image": 101}}),
            "invalid_parameter",
            "weights.image",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "weights": {"image": -1}}),
            "invalid_parameter",
            "weights.image",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "weights": {"colour": 1}}),
            "unknown_field",
            "weights",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "fusion": "max"}),
            "invalid_parameter",
            "fusion",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "facets": ["brand"]}),
            "invalid_parameter",
            "facets",
        )
        .await;
        error(
            &admin,
            json!({"text": "x", "facets": ["price"], "facet_limit": 0}),
            "invalid_parameter",
            "facet_limit",
        )
        .await;
        let many: Vec<u32> = (0..21).collect();
        error(
            &admin,
            json!({"text": "x", "facets": ["price"], "price_buckets": many}),
            "invalid_parameter",
            "price_buckets",
        )
        .await;

        // Tenant defaults: keyword mode and weights, shown on the tenant;
        // a request still says otherwise.
        let (s, t) = admin
            .send(
                reqwest::Method::PATCH,
                "/v1/tenants/default",
                Some(&json!({"search": {"mode": "keyword", "weights": {"keyword": 2.0}}})),
            )
            .await;
        assert_eq!(s, 200, "{name}: {t}");
        assert_eq!(t["search"]["mode"], "keyword");
        let (_, t) = admin.get("/v1/tenants/default").await;
        assert_eq!(t["search"]["weights"]["keyword"], 2.0, "{name}: {t}");
        let r = search(&admin, "default", json!({"text": "ecco"})).await;
        assert_eq!(r["mode"], "keyword", "{name}: {r}");
        assert_eq!(ids(&r).len(), 3);
        let r = search(&admin, "default", json!({"text": "ecco", "mode": "vector"})).await;
        assert_eq!(r["mode"], "vector");
        // A tenant default of keyword is for words: `like` runs hybrid.
        let r = search(&admin, "default", json!({"like": "b1"})).await;
        assert_eq!(r["mode"], "hybrid", "{name}: {r}");
        let (s, t) = admin
            .send(
                reqwest::Method::PATCH,
                "/v1/tenants/default",
                Some(&json!({"search": {"weights": {"text": 1000}}})),
            )
            .await;
        assert_eq!(s, 400, "{name}: {t}");
        let (s, _) = admin
            .send(
                reqwest::Method::PATCH,
                "/v1/tenants/default",
                Some(&json!({"search": {}})),
            )
            .await;
        assert_eq!(s, 200);
        let r = search(&admin, "default", json!({"text": "ecco"})).await;
        assert_eq!(r["mode"], "hybrid", "{name}: {r}");

        drop(server);
        catalog.cleanup().await;
    }
}
