//! Traffic and trust end to end: rate limits (429 with `Retry-After` and the
//! IETF `RateLimit` headers, and recovery), quotas, signed search tokens,
//! HTTPS with a certificate made here (rcgen) and its reload, and HTTP
//! caching (ETags, 304s, `Cache-Control`, `Vary`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::harness::{ADMIN_KEY, Catalog, Client, Setup, fast_jobs, image_server};
use crate::search::{batch, ids};
use crate::{new_key, tenant_key};

const CATEGORIES: [&str; 3] = ["shoes", "hats", "bags"];

/// Products `p0`.. of a shop: product N is a shoe, a hat or a bag by N % 3,
/// in stock when N is even, with its own image.
fn shop_products(images: std::net::SocketAddr, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"external_id": format!("p{i}"), "title": format!("Product {i}"),
                   "category": CATEGORIES[i % 3], "in_stock": i % 2 == 0,
                   "image_url": format!("http://{images}/img/{i}.png")})
        })
        .collect()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A search token signed with `key` (`vtr_<id>_<secret>`), the way the
/// README tells shops to make one.
pub(crate) fn token(key: &str, claims: Value) -> String {
    let rest = key.strip_prefix("vtr_").unwrap();
    let (id, secret) = (&rest[..16], &rest[17..]);
    let mut header = Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(id.to_owned());
    let signing_key = Sha256::digest(secret.as_bytes());
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(&signing_key)).unwrap()
}

pub(crate) fn key_id(key: &str) -> &str {
    &key[4..20]
}

pub(crate) fn in_an_hour() -> u64 {
    jsonwebtoken::get_current_timestamp() + 3600
}

#[tokio::test(flavor = "multi_thread")]
async fn bursts_over_a_limit_get_429_with_headers_and_recover() {
    let mut setup = Setup::new(&Catalog::Sqlite);
    for (k, v) in [
        ("VITRINE__RATE_LIMITS__ENABLED", "true"),
        ("VITRINE__RATE_LIMITS__SEARCH_PER_SECOND", "0.5"),
        ("VITRINE__RATE_LIMITS__SEARCH_BURST", "5"),
        ("VITRINE__RATE_LIMITS__IP_PER_SECOND", "1"),
        ("VITRINE__RATE_LIMITS__IP_BURST", "3"),
    ] {
        setup.env.push((k.to_owned(), v.to_owned()));
    }
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let a = tenant_key(&admin, "shop-a", &["search", "write"]).await;
    let b = tenant_key(&admin, "shop-b", &["search"]).await;
    let http = http();
    let get = |key: &str, path: &str| http.get(server.url(path)).bearer_auth(key).send();

    // Five reads pass (the burst), the sixth is refused. (A token comes
    // back every 2 s: slow enough that a loaded machine keeps the counts.)
    for left in (0..5).rev() {
        let res = get(&a, "/v1/tenants/shop-a/products").await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["ratelimit-policy"], "\"search\";q=5;w=10");
        let state = res.headers()["ratelimit"].to_str().unwrap().to_owned();
        assert!(state.starts_with(&format!("\"search\";r={left};")), "{state}");
    }
    let res = get(&a, "/v1/tenants/shop-a/products").await.unwrap();
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    assert_eq!(
        res.headers()["ratelimit"],
        format!("\"search\";r=0;t={retry}").as_str()
    );
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    assert_eq!(body["error"]["details"]["policy"], "search");

    // Writes have their own bucket; another tenant's key is untouched.
    let (s, _) = admin
        .with_key(&a)
        .post(
            "/v1/tenants/shop-a/products",
            &json!({"external_id": "x", "title": "X"}),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        get(&b, "/v1/tenants/shop-b/products").await.unwrap().status(),
        200
    );
    // The admin key is not limited.
    for _ in 0..20 {
        assert_eq!(
            get(ADMIN_KEY, "/v1/tenants/shop-a/products")
                .await
                .unwrap()
                .status(),
            200
        );
    }

    // It recovers once the wait is over.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        get(&a, "/v1/tenants/shop-a/products").await.unwrap().status(),
        200
    );

    // The admin raises the tenant's own limit: it applies at once.
    let (s, t) = admin
        .send(
            reqwest::Method::PATCH,
            "/v1/tenants/shop-a",
            Some(&json!({"rate_limits": {"search": {"per_second": 100.0, "burst": 50}}})),
        )
        .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        t["rate_limits"]["search"],
        json!({"per_second": 100.0, "burst": 50})
    );
    assert_eq!(t["rate_limits"]["write"]["burst"], 40);
    for _ in 0..30 {
        assert_eq!(
            get(&a, "/v1/tenants/shop-a/products").await.unwrap().status(),
            200
        );
    }

    // Unknown keys and anonymous callers share their address's bucket.
    let mut statuses = Vec::new();
    for i in 0..5 {
        let bad = format!("vtr_{:016x}_nope", i);
        statuses.push(
            get(&bad, "/v1/tenants/shop-a/products")
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    // (A key not in memory pays the address's bucket before it is looked
    // up, so the keys above took some of it too.)
    let refused_from = statuses.iter().position(|&s| s == 429).unwrap();
    assert!((1..=3).contains(&refused_from), "{statuses:?}");
    assert!(statuses[..refused_from].iter().all(|&s| s == 401), "{statuses:?}");
    assert!(statuses[refused_from..].iter().all(|&s| s == 429), "{statuses:?}");
    let anonymous = http.get(server.url("/openapi.json")).send().await.unwrap();
    assert_eq!(anonymous.status(), 429);
    assert!(anonymous.headers().contains_key("retry-after"));
    // A page's token cannot use up its key's buckets: token requests pay
    // their address's bucket and the key's tokens' bucket, and are refused
    // off the search routes once they have paid their address's, without
    // drawing on any bucket of the key.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let page = token(
        &b,
        json!({"exp": in_an_hour(), "tenant": "shop-b", "key_id": key_id(&b), "scopes": ["search"]}),
    );
    let mut off_route = Vec::new();
    for _ in 0..5 {
        let res = get(&page, "/v1/tenants/shop-b/products").await.unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        off_route.push((status, body["error"]["code"].as_str().unwrap().to_owned()));
    }
    let forbidden = (403, "token_not_allowed".to_owned());
    let limited = (429, "rate_limited".to_owned());
    assert_eq!(
        off_route,
        [
            forbidden.clone(),
            forbidden.clone(),
            forbidden,
            limited.clone(),
            limited
        ]
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut policies = Vec::new();
    for _ in 0..6 {
        let res = http
            .post(server.url("/v1/tenants/shop-b/search"))
            .bearer_auth(&page)
            .json(&json!({"text": "x"}))
            .send()
            .await
            .unwrap();
        let status = res.status().as_u16();
        let body: Value = res.json().await.unwrap();
        policies.push((
            status,
            body["error"]["details"]["policy"].as_str().map(str::to_owned),
        ));
    }
    assert!(policies[0].0 == 200, "{policies:?}");
    assert!(policies.iter().any(|p| p.0 == 429), "{policies:?}");
    for _ in 0..5 {
        assert_eq!(
            get(&b, "/v1/tenants/shop-b/products").await.unwrap().status(),
            200
        );
    }
    // Probes are never limited.
    assert_eq!(
        http.get(server.url("/health/live"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let metrics = admin.metrics().await;
    for policy in ["search", "ip"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(&format!("vitrine_rate_limited_total{{policy=\"{policy}\"}}"))),
            "{policy}: {metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quotas_refuse_what_would_go_over_and_usage_is_shown() {
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let setup = Setup::new(&catalog);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let key = tenant_key(&admin, "shop", &["search", "write", "plugins"]).await;
        let shop = admin.with_key(&key);
        let (s, t) = admin
            .send(
                reqwest::Method::PATCH,
                "/v1/tenants/shop",
                Some(&json!({"quotas": {"max_products": 3, "max_plugin_versions": 0}})),
            )
            .await;
        assert_eq!(s, 200, "{backend}: {t}");
        assert_eq!(t["quotas"], json!({"max_products": 3, "max_plugin_versions": 0}));
        // A tenant key may not change its own limits.
        let (s, e) = shop
            .send(
                reqwest::Method::PATCH,
                "/v1/tenants/shop",
                Some(&json!({"quotas": {}})),
            )
            .await;
        assert_eq!((s, e["error"]["code"].as_str()), (403, Some("admin_required")));

        let item = |i: usize| json!({"external_id": format!("p{i}"), "title": format!("P {i}")});
        let (s, _) = shop.post("/v1/tenants/shop/products", &item(0)).await;
        assert_eq!(s, 201);
        // A batch of three new ones would make four: refused whole.
        let (s, e) = shop
            .post(
                "/v1/tenants/shop/products/batch",
                &json!({"products": [item(0), item(1), item(2), item(3)]}),
            )
            .await;
        assert_eq!(s, 403, "{backend}: {e}");
        assert_eq!(e["error"]["code"], "quota_exceeded");
        assert_eq!(
            e["error"]["details"],
            json!({"quota": "max_products", "limit": 3, "used": 1, "requested": 3})
        );
        // Updating existing ones and adding two fits.
        let (s, _) = shop
            .post(
                "/v1/tenants/shop/products/batch",
                &json!({"products": [item(0), item(1), item(2)]}),
            )
            .await;
        assert_eq!(s, 202);
        let (s, e) = shop.post("/v1/tenants/shop/products", &item(9)).await;
        assert_eq!((s, e["error"]["code"].as_str()), (403, Some("quota_exceeded")));
        // Plugin versions: none allowed, refused before compiling.
        let (s, e) = shop
            .put_bytes(
                "/v1/tenants/shop/plugins/f?world=filter",
                b"\0asm\x0d\0\x01\0".to_vec(),
                "application/wasm",
            )
            .await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (403, Some("quota_exceeded")),
            "{e}"
        );

        let (s, t) = shop.get("/v1/tenants/shop").await;
        assert_eq!(s, 200);
        assert_eq!(
            t["usage"],
            json!({"products": 3, "plugin_versions": 0, "plugin_bytes": 0})
        );
        // Stored: the limits outlive a restart.
        drop(server);
        let server = setup.start();
        let (_, t) = Client::new(&server, ADMIN_KEY).get("/v1/tenants/shop").await;
        assert_eq!(t["quotas"]["max_products"], 3, "{backend}");
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn search_tokens_are_verified_confined_and_revocable() {
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&Catalog::Sqlite);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let key = tenant_key(&admin, "shop", &["search", "write"]).await;
    let write_only = new_key(&admin, "shop", &["write"]).await;
    let other = tenant_key(&admin, "other", &["search"]).await;
    batch(&admin, "shop", &shop_products(images, 12)).await;
    let http = http();
    let search = |bearer: String, tenant: &'static str, body: Value| {
        http.post(server.url(&format!("/v1/tenants/{tenant}/search")))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    let claims = |key: &str, extra: Value| {
        let mut c =
            json!({"exp": in_an_hour(), "tenant": "shop", "key_id": key_id(key), "scopes": ["search"]});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let forced = token(
        &key,
        claims(
            &key,
            json!({"filters": {"categories": ["shoes"]}, "plugins": ["none"]}),
        ),
    );

    // Valid: the forced filter holds whatever the request asks.
    for body in [
        json!({"text": "product", "limit": 50}),
        json!({"text": "product", "limit": 50, "filters": {"categories": ["shoes", "hats"]}}),
        json!({"text": "product", "limit": 50, "filters": {"category": "shoes", "in_stock": true}}),
    ] {
        let res = search(forced.clone(), "shop", body.clone()).await.unwrap();
        assert_eq!(res.status(), 200, "{body}");
        let r: Value = res.json().await.unwrap();
        let found = ids(&r);
        assert!(!found.is_empty(), "{body}: {r}");
        for id in &found {
            let n: usize = id[1..].parse().unwrap();
            assert_eq!(n % 3, 0, "{body}: {id} is not a shoe");
        }
    }
    // A request that only names what the token excludes finds nothing.
    let r: Value = search(
        forced.clone(),
        "shop",
        json!({"text": "product", "filters": {"category": "hats"}}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(r["hits"], json!([]), "{r}");
    // Plugins: only what the token lists ("none" here); the active ones stay allowed.
    let res = search(
        forced.clone(),
        "shop",
        json!({"text": "x", "plugins": {"filter": "other"}}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["error"]["code"], "plugin_not_allowed");
    assert_eq!(e["error"]["details"]["field"], "plugins.filter");
    let res = search(
        forced.clone(),
        "shop",
        json!({"text": "x", "plugins": {"filter": "none"}}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 200);
    // Without a `plugins` claim, a request cannot turn the active ones off.
    let plain = token(&key, claims(&key, json!({})));
    let res = search(
        plain.clone(),
        "shop",
        json!({"text": "x", "plugins": {"filter": "none"}}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    // "More like this" only from a product the token may see; another is
    // as absent as a product that does not exist.
    let res = search(forced.clone(), "shop", json!({"like": "p3", "limit": 50}))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for id in ids(&res.json().await.unwrap()) {
        assert_eq!(id[1..].parse::<usize>().unwrap() % 3, 0, "{id}");
    }
    for hidden in ["p1", "nope"] {
        let res = search(forced.clone(), "shop", json!({"like": hidden}))
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(
            res.json::<Value>().await.unwrap()["error"]["code"],
            "product_not_found"
        );
    }

    let refused = |bearer: String, tenant: &'static str, status: u16, code: &'static str| {
        let res = search(bearer, tenant, json!({"text": "x"}));
        async move {
            let res = res.await.unwrap();
            assert_eq!(res.status().as_u16(), status);
            let e: Value = res.json().await.unwrap();
            assert_eq!(e["error"]["code"], code, "{e}");
        }
    };
    // Expired.
    let expired = token(
        &key,
        claims(&key, json!({"exp": jsonwebtoken::get_current_timestamp() - 5})),
    );
    refused(expired, "shop", 401, "token_expired").await;
    // Tampered: the payload widened, the signature kept.
    let parts: Vec<&str> = forced.split('.').collect();
    let widened = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut c: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        c.as_object_mut().unwrap().remove("filters");
        format!("{}.{}.{}", parts[0], b64.encode(c.to_string()), parts[2])
    };
    refused(widened, "shop", 401, "invalid_token").await;
    // Signed with another key than the one it names.
    let forged = token(&other, claims(&key, json!({})));
    refused(forged, "shop", 401, "invalid_token").await;
    // Another tenant's token, on this tenant.
    let theirs = token(
        &other,
        json!({"exp": in_an_hour(), "tenant": "other", "key_id": key_id(&other), "scopes": ["search"]}),
    );
    refused(theirs.clone(), "shop", 403, "tenant_forbidden").await;
    assert_eq!(
        search(theirs, "other", json!({"text": "x"}))
            .await
            .unwrap()
            .status(),
        200
    );
    for (what, bearer, status, code) in [
        (
            "a key of one tenant signing for another",
            token(&other, claims(&other, json!({}))),
            403,
            "tenant_forbidden",
        ),
        (
            "more than search",
            token(&key, claims(&key, json!({"scopes": ["search", "write"]}))),
            403,
            "insufficient_scope",
        ),
        (
            "search from a key without it",
            token(&write_only, claims(&write_only, json!({}))),
            403,
            "insufficient_scope",
        ),
        (
            "more than a week to live",
            token(&key, claims(&key, json!({"exp": in_an_hour() + 8 * 86_400}))),
            401,
            "invalid_token",
        ),
        (
            "a NUL in a forced filter",
            token(&key, claims(&key, json!({"filters": {"tags": ["a\0b"]}}))),
            401,
            "invalid_token",
        ),
        (
            // A misspelt `filters` never widens a token.
            "a claim nobody defined",
            token(&key, claims(&key, json!({"filter": {"category": "shoes"}}))),
            401,
            "invalid_token",
        ),
    ] {
        eprintln!("refused: {what}");
        refused(bearer, "shop", status, code).await;
    }
    // Product images (a page shows them with its results): those of
    // products the token may see.
    for id in ["p0", "p1"] {
        let png = reqwest::get(format!("http://{images}/img/9.png"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let (s, b) = admin
            .put_bytes(
                &format!("/v1/tenants/shop/products/{id}/image"),
                png.to_vec(),
                "image/png",
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let image = |bearer: &str, id: &str| {
        http.get(server.url(&format!("/v1/tenants/shop/products/{id}/image?size=64")))
            .bearer_auth(bearer)
            .send()
    };
    assert_eq!(image(&forced, "p0").await.unwrap().status(), 200);
    assert_eq!(image(&forced, "p1").await.unwrap().status(), 404);
    assert_eq!(image(&plain, "p1").await.unwrap().status(), 200);
    // Otherwise a token is for searching only.
    let res = http
        .get(server.url("/v1/tenants/shop/products/p0"))
        .bearer_auth(&plain)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"]["code"],
        "token_not_allowed"
    );

    // Revoking the key revokes its tokens.
    assert_eq!(
        search(plain.clone(), "shop", json!({"text": "x"}))
            .await
            .unwrap()
            .status(),
        200
    );
    let (s, _) = admin
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/tenants/shop/keys/{}", key_id(&key)),
            None,
        )
        .await;
    assert_eq!(s, 204);
    refused(plain, "shop", 401, "invalid_token").await;
}

/// `request` with `If-None-Match: tag` (when given): its status and ETag.
async fn revalidate(request: reqwest::RequestBuilder, tag: Option<&str>) -> (u16, String) {
    let request = match tag {
        Some(t) => request.header("if-none-match", t),
        None => request,
    };
    let res = request.send().await.unwrap();
    let etag = res
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (res.status().as_u16(), etag)
}

#[tokio::test(flavor = "multi_thread")]
async fn etags_answer_304_until_the_data_changes() {
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&Catalog::Sqlite);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let key = tenant_key(&admin, "shop", &["search", "write"]).await;
    let products: Vec<Value> = (0..4)
        .map(|i| {
            json!({"external_id": format!("p{i}"), "title": format!("Product {i}"),
                         "image_url": format!("http://{images}/img/{i}.png")})
        })
        .collect();
    batch(&admin, "shop", &products).await;
    let http = http();

    // A product read.
    let url = server.url("/v1/tenants/shop/products/p1");
    let res = http.get(&url).bearer_auth(&key).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "private, no-cache");
    let vary: Vec<&str> = res
        .headers()
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(vary.iter().any(|v| v.contains("authorization")), "{vary:?}");
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    let again = http
        .get(&url)
        .bearer_auth(&key)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(again.headers()["etag"], etag.as_str());
    assert!(again.bytes().await.unwrap().is_empty());
    // A stranger may not revalidate it.
    let other = tenant_key(&admin, "other", &["search"]).await;
    let get = |bearer: &str| http.get(&url).bearer_auth(bearer);
    assert_eq!(revalidate(get(&other), Some(&etag)).await.0, 403);

    // A search; another request is another tag.
    let search_url = server.url("/v1/tenants/shop/search");
    let body = json!({"text": "product", "limit": 3});
    let search = |body: &Value| http.post(&search_url).bearer_auth(&key).json(body);
    let (status, search_tag) = revalidate(search(&body), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        revalidate(search(&body), Some(&search_tag)).await,
        (304, search_tag.clone())
    );
    let other_request = json!({"text": "product", "limit": 4});
    assert_eq!(revalidate(search(&other_request), Some(&search_tag)).await.0, 200);

    // A write changes both.
    let (s, _) = admin
        .send(
            reqwest::Method::PATCH,
            "/v1/tenants/shop/products/p1",
            Some(&json!({"title": "Renamed"})),
        )
        .await;
    assert_eq!(s, 200);
    let (status, new_tag) = revalidate(get(&key), Some(&etag)).await;
    assert_eq!(status, 200);
    assert_ne!(new_tag, etag);
    assert_eq!(revalidate(search(&body), Some(&search_tag)).await.0, 200);
    // `*` holds for a product that exists, never for one that does not.
    let star = Some("*");
    assert_eq!(revalidate(get(&key), star).await.0, 304);
    let missing = http
        .get(server.url("/v1/tenants/shop/products/nope"))
        .bearer_auth(&key);
    assert_eq!(revalidate(missing, star).await.0, 404);

    // Secrets and admin answers are never stored.
    let res = http
        .post(server.url("/v1/tenants/shop/keys"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"scopes": ["search"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
}

/// A self-signed certificate for `localhost`, as PEM (certificate, key).
fn certificate(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// Connects over TLS trusting `roots`; returns the negotiated ALPN protocol
/// and the server's certificate.
async fn handshake(
    addr: std::net::SocketAddr,
    roots: &[&str],
    alpn: &[&[u8]],
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    Option<Vec<u8>>,
    Vec<u8>,
) {
    use rustls_pki_types::pem::PemObject;
    let mut store = rustls::RootCertStore::empty();
    for pem in roots {
        store
            .add(rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let mut config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(store)
            .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let (_, conn) = stream.get_ref();
    let protocol = conn.alpn_protocol().map(<[u8]>::to_vec);
    let cert = conn.peer_certificates().unwrap()[0].to_vec();
    (stream, protocol, cert)
}

#[tokio::test(flavor = "multi_thread")]
async fn https_serves_h2_and_http1_and_reloads_its_certificate() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut setup = Setup::new(&Catalog::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));

    // A bad file at start is a clear error naming the setting.
    std::fs::write(&cert_path, "not a certificate").unwrap();
    std::fs::write(&key_path, "not a key").unwrap();
    setup.env.push((
        "VITRINE__SERVER__TLS_CERT".into(),
        cert_path.display().to_string(),
    ));
    setup
        .env
        .push(("VITRINE__SERVER__TLS_KEY".into(), key_path.display().to_string()));
    let out = setup.command(&["serve"]).output().unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("server.tls_cert"), "{text}");

    let (first_cert, first_key) = certificate("first");
    std::fs::write(&cert_path, &first_cert).unwrap();
    std::fs::write(&key_path, &first_key).unwrap();
    let server = setup.start();

    // HTTP/2 by ALPN, and requests on it, two at once on one connection.
    let (stream, protocol, served) = handshake(server.addr, &[&first_cert], &[b"h2", b"http/1.1"]).await;
    assert_eq!(protocol.as_deref(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let get = |path: &str| {
        axum::http::Request::get(format!("https://localhost{path}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let (live, docs) = tokio::join!(sender.send_request(get("/health/live")), {
        let mut second = sender.clone();
        async move { second.send_request(get("/openapi.json")).await }
    });
    for res in [live.unwrap(), docs.unwrap()] {
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), axum::http::Version::HTTP_2);
    }
    // HTTP/1.1, a whole request.
    let (mut stream, protocol, _) = handshake(server.addr, &[&first_cert], &[b"http/1.1"]).await;
    assert_eq!(protocol.as_deref(), Some(&b"http/1.1"[..]));
    stream
        .write_all(b"GET /health/live HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    // Plain HTTP on the TLS port gets no answer.
    assert!(reqwest::get(server.url("/health/live")).await.is_err());

    // A new certificate on disk is served without a restart.
    let (second_cert, second_key) = certificate("second");
    std::fs::write(&key_path, &second_key).unwrap();
    std::fs::write(&cert_path, &second_cert).unwrap();
    let start = Instant::now();
    loop {
        let (_, _, now_served) = handshake(server.addr, &[&second_cert, &first_cert], &[b"http/1.1"]).await;
        if now_served != served {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the certificate was not reloaded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A broken file leaves the current certificate in use; SIGHUP reloads.
    std::fs::write(&cert_path, "garbage").unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, _, still) = handshake(server.addr, &[&second_cert], &[b"http/1.1"]).await;
    assert_ne!(still, served);
    std::fs::write(&cert_path, &second_cert).unwrap();
    crate::harness::signal(server.pid(), "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = reqwest_tls_metrics(server.addr, &second_cert).await;
    assert!(
        metrics.contains("vitrine_tls_reloads_total{outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("vitrine_tls_reloads_total{outcome=\"error\"}"),
        "{metrics}"
    );
}

/// `/metrics` over HTTPS, with HTTP/1.1.
async fn reqwest_tls_metrics(addr: std::net::SocketAddr, cert: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut stream, _, _) = handshake(addr, &[cert], &[b"http/1.1"]).await;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    reply
}

/// The code block of `lang` that follows `heading` in the README.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let after = &readme[readme
        .find(heading)
        .unwrap_or_else(|| panic!("README: {heading}"))..];
    let start = after.find(&format!("```{lang}\n")).unwrap() + lang.len() + 4;
    let end = start + after[start..].find("```").unwrap();
    after[start..end].to_owned()
}

/// Whether a tool the CI machine has must be here; outside CI a missing
/// one skips (with a note).
fn required(tool: &str, found: bool) -> bool {
    if !found {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "{tool} is missing in CI"
        );
        eprintln!("skipped the README's {tool} example: {tool} is not installed");
    }
    found
}

/// A token an example made: the language, the token, and which products
/// (by number) its forced filters let through.
type Made = (&'static str, String, fn(usize) -> bool);

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_token_examples_make_tokens_the_server_takes() {
    use std::process::Command;
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&Catalog::Sqlite);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let key = tenant_key(&admin, "shop", &["search"]).await;
    batch(&admin, "shop", &shop_products(images, 9)).await;

    let mut made: Vec<Made> = Vec::new();
    // JavaScript (Node): the block, then print the token.
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if required("node", node) {
        let code = format!(
            "{}\nconsole.log(token);\n",
            readme_block("JavaScript (Node", "js")
        );
        let out = Command::new("node")
            .args(["--input-type=module", "-e", &code])
            .env("VITRINE_SEARCH_KEY", &key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Its forced filter: in stock.
        made.push((
            "js",
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            |n: usize| n.is_multiple_of(2),
        ));
    }
    // Python (PyJWT, from the test tools' venv).
    let venv = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/python-tools"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8(o.stdout).unwrap().trim().to_owned());
    if required("python-tools", venv.is_some()) {
        let python = format!("{}/python", venv.unwrap());
        let code = format!("{}\nprint(token)\n", readme_block("Python (PyJWT)", "python"));
        let out = Command::new(python)
            .args(["-c", &code])
            .env("VITRINE_SEARCH_KEY", &key)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // Its forced filters: shoes, in stock.
        made.push((
            "python",
            String::from_utf8(out.stdout).unwrap().trim().to_owned(),
            |n: usize| n.is_multiple_of(3) && n.is_multiple_of(2),
        ));
    }
    for (lang, token, allowed) in made {
        let res = http()
            .post(server.url("/v1/tenants/shop/search"))
            .bearer_auth(&token)
            .json(&json!({"text": "product", "limit": 50}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{lang}: {token}");
        let found = ids(&res.json().await.unwrap());
        assert!(!found.is_empty(), "{lang}");
        for id in found {
            assert!(allowed(id[1..].parse().unwrap()), "{lang}: {id}");
        }
    }
}
