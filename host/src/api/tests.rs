//! HTTP behaviour without sockets: the real router over a real SQLite
//! catalog in a temporary directory, driven with `oneshot`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::store::sqlite::SqliteCatalog;

const ADMIN: &str = "test-admin-key-0123456789";

struct TestApp {
    // Dropped before the directory it keeps its files in.
    app: Router,
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
    fn field(&self) -> &str {
        self.body["error"]["details"]["field"].as_str().unwrap_or("")
    }
}

/// The settings of the in-process app: the built-in defaults with this
/// data directory, an admin key (or none), a smaller body limit, any
/// browser origin, and images up to 10 MiB.
fn settings(dir: &std::path::Path, admin_key: Option<&str>) -> crate::config::Settings {
    let mut s = crate::config::Settings::defaults().clone();
    s.data_dir = dir.to_path_buf();
    s.auth.admin_key = admin_key.map(|k| secrecy::SecretString::from(k.to_owned()));
    s.server.request_timeout_secs = 30;
    s.server.max_body_bytes = 64 * 1024 * 2;
    s.server.max_batch_body_bytes = 8 * 1024 * 1024;
    s.server.cors_allowed_origins = vec!["*".into()];
    s.media.max_image_bytes = 10 * 1024 * 1024;
    s.media.allow_private_networks = true;
    s.plugins.pooling = false;
    s
}

/// A tiny CLIP of the real architecture, written once per test process.
fn tiny_model_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        crate::encoder::testing::write_tiny_checkpoint(dir.path(), &Default::default()).unwrap();
        dir
    })
    .path()
}

fn tiny_encoder() -> SharedEncoder {
    let encoder =
        crate::encoder::Encoder::from_dir(tiny_model_dir(), &crate::encoder::EncoderOptions::default())
            .unwrap();
    let service = crate::encoder::service::EncoderService::start(
        encoder,
        crate::encoder::service::BatchConfig::default(),
    )
    .unwrap();
    let shared = SharedEncoder::default();
    shared.set(crate::encoder::service::EncoderState::Ready(service));
    shared
}

/// The application as `vitrine serve` builds it, over a real SQLite
/// catalog, the tiny encoder and a Qdrant Edge shard in a temp dir.
async fn app_with(admin_key: Option<&str>) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let encoder = tiny_encoder();
    let dims = encoder.service().unwrap().dims();
    let vectors = crate::store::vectors::SharedVectors::default();
    vectors.set(crate::store::vectors::VectorsState::Ready(Arc::new(
        crate::store::vectors::EdgeIndex::open(dir.path(), dims).unwrap(),
    )));
    state_with(dir, admin_key, encoder, vectors).await
}

async fn state_with(
    dir: tempfile::TempDir,
    admin_key: Option<&str>,
    encoder: SharedEncoder,
    vectors: crate::store::vectors::SharedVectors,
) -> TestApp {
    let settings = settings(dir.path(), admin_key);
    let catalog = SqliteCatalog::open(&dir.path().join("c.sqlite3"), 2)
        .await
        .unwrap();
    let catalog: Arc<dyn crate::store::Catalog> = Arc::new(catalog);
    let blobs = crate::media::BlobStore::open(None, dir.path()).unwrap();
    let host = crate::server::plugin_host(&settings, blobs).unwrap();
    let plugins = Arc::new(crate::plugins::PluginRegistry::new(host, catalog.clone()));
    let fetcher = Arc::new(
        crate::media::ImageFetcher::new(crate::media::FetchConfig::from_settings(&settings.media)).unwrap(),
    );
    let state = crate::server::app_state(&settings, catalog, encoder, vectors, fetcher, plugins);
    TestApp {
        _dir: dir,
        app: router(state),
    }
}

async fn app() -> TestApp {
    app_with(Some(ADMIN)).await
}

impl TestApp {
    async fn raw(&self, req: Request<Body>) -> Reply {
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let headers = res.headers().clone();
        let bytes = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, path: &str, key: Option<&str>, body: Option<Value>) -> Reply {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(k) = key {
            req = req.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        let req = match body {
            Some(b) => req
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(b.to_string())),
            None => req.body(Body::empty()),
        };
        self.raw(req.unwrap()).await
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, Some(ADMIN), body).await
    }

    async fn tenant_with_key(&self, tenant: &str, scopes: &[&str]) -> String {
        let r = self
            .admin(Method::POST, "/v1/tenants", Some(json!({"id": tenant})))
            .await;
        assert!(
            r.status == StatusCode::CREATED || r.status == StatusCode::CONFLICT,
            "{:?}",
            r.body
        );
        let r = self
            .admin(
                Method::POST,
                &format!("/v1/tenants/{tenant}/keys"),
                Some(json!({"scopes": scopes})),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
        r.body["key"].as_str().unwrap().to_owned()
    }

    async fn product(&self, tenant: &str, id: &str) -> Reply {
        self.admin(Method::GET, &format!("/v1/tenants/{tenant}/products/{id}"), None)
            .await
    }
}

fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{:?}", r.body);
    assert_eq!(r.code(), code, "{:?}", r.body);
    assert!(r.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
}

fn boots() -> Value {
    json!({
        "external_id": "boot-1",
        "title": "Red leather ankle boots",
        "description": "Soft leather",
        "category": "shoes",
        "price": "89.90",
        "currency": "EUR",
        "image_url": "https://img.example.com/boot-1.jpg",
        "tags": ["leather", "red"],
        "in_stock": true,
        "metadata": {"sizes": [38, 39]}
    })
}

#[tokio::test]
async fn created_product_reads_back_with_exact_price_and_server_fields() {
    let t = app().await;
    let r = t
        .admin(Method::POST, "/v1/tenants/default/products", Some(boots()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert!(r.body["job_id"].as_str().is_some());
    let p = &r.body["product"];
    assert_eq!(p["price"], "89.90");
    assert_eq!(p["index_status"], "pending");
    assert_eq!(p["index_error"], Value::Null);
    let got = t.product("default", "boot-1").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(&got.body, p);
    // A JSON number price keeps the value the client wrote.
    let mut b = boots();
    b["external_id"] = json!("boot-2");
    b["price"] = json!(19.99);
    let r = t
        .admin(Method::POST, "/v1/tenants/default/products", Some(b))
        .await;
    assert_eq!(r.body["product"]["price"], "19.99");
}

/// Every validation rule of API.md: the status, the error code, the field
/// named in details, and that stored data did not change.
#[tokio::test]
async fn every_invalid_product_value_is_rejected_and_changes_nothing() {
    let t = app().await;
    t.admin(Method::POST, "/v1/tenants/default/products", Some(boots()))
        .await;
    let before = t.product("default", "boot-1").await.body;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("title", json!(null), "missing_field"),
        ("title", json!(""), "invalid_title"),
        ("title", json!("x".repeat(1001)), "too_long"),
        ("title", json!(42), "invalid_type"),
        ("external_id", json!(""), "invalid_external_id"),
        ("external_id", json!("x".repeat(257)), "invalid_external_id"),
        ("external_id", json!("tab\there"), "invalid_external_id"),
        ("description", json!(["list"]), "invalid_type"),
        ("category", json!("line\nbreak"), "invalid_character"),
        ("price", json!(-1), "invalid_price"),
        ("price", json!("12,50"), "invalid_price"),
        ("price", json!("free"), "invalid_price"),
        ("price", json!(true), "invalid_price"),
        ("currency", json!("EURO"), "invalid_currency"),
        ("currency", json!("€€€"), "invalid_currency"),
        ("currency", json!(978), "invalid_currency"),
        (
            "image_url",
            json!("ftp://img.example.com/a.jpg"),
            "invalid_image_url",
        ),
        ("image_url", json!("/relative/a.jpg"), "invalid_image_url"),
        ("image_url", json!("javascript:alert(1)"), "invalid_image_url"),
        (
            "image_url",
            json!("https://user:pw@img.example.com/a.jpg"),
            "invalid_image_url",
        ),
        ("tags", json!("red"), "invalid_type"),
        ("tags[0]", json!([""]), "invalid_tag"),
        ("tags[1]", json!(["ok", 7]), "invalid_type"),
        (
            "tags",
            json!(
                vec!["t"; 65]
                    .iter()
                    .enumerate()
                    .map(|(i, _)| format!("t{i}"))
                    .collect::<Vec<_>>()
            ),
            "too_many_tags",
        ),
        ("in_stock", json!("yes"), "invalid_type"),
        ("metadata", json!("text"), "invalid_type"),
        (
            "metadata",
            json!({"blob": "x".repeat(65 * 1024)}),
            "metadata_too_large",
        ),
    ];
    for (field, value, code) in cases {
        let key = field.split('[').next().unwrap();
        // As a create of a new product...
        let mut doc = boots();
        doc["external_id"] = json!("new-one");
        doc[key] = value.clone();
        let r = t
            .admin(Method::POST, "/v1/tenants/default/products", Some(doc))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert_eq!(r.field(), field, "create {field}={value}");
        // ...and as PUT and PATCH of the existing one (not for external_id,
        // whose PUT/PATCH rule is that it must match the path).
        if key != "external_id" {
            let mut doc = boots();
            doc[key] = value.clone();
            let r = t
                .admin(Method::PUT, "/v1/tenants/default/products/boot-1", Some(doc))
                .await;
            assert_error(&r, StatusCode::BAD_REQUEST, code);
            assert_eq!(r.field(), field, "put {field}={value}");
            let r = t
                .admin(
                    Method::PATCH,
                    "/v1/tenants/default/products/boot-1",
                    Some(json!({key: value})),
                )
                .await;
            assert_error(&r, StatusCode::BAD_REQUEST, code);
            assert_eq!(r.field(), field, "patch {field}={value}");
        }
    }
    assert_eq!(t.product("default", "boot-1").await.body, before);
    assert_eq!(
        t.product("default", "new-one").await.status,
        StatusCode::NOT_FOUND
    );
    let list = t.admin(Method::GET, "/v1/tenants/default/products", None).await;
    assert_eq!(list.body["products"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn unknown_fields_are_rejected_by_name_everywhere() {
    let t = app().await;
    let mut doc = boots();
    doc["colour"] = json!("red");
    let r = t
        .admin(Method::POST, "/v1/tenants/default/products", Some(doc))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown_field");
    assert_eq!(r.field(), "colour");
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants",
            Some(json!({"id": "x", "plan": "gold"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown_field");
    assert_eq!(r.field(), "plan");
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/keys",
            Some(json!({"scopes": ["search"], "ttl": 5})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown_field");
    assert_eq!(r.field(), "ttl");
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/products/batch",
            Some(json!({"products": [], "mode": "x"})),
        )
        .await;
    assert_eq!(r.field(), "mode");
    let r = t
        .admin(Method::GET, "/v1/tenants/default/products?colour=red", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown_parameter");
    assert_eq!(r.field(), "colour");
    assert_eq!(
        t.admin(Method::GET, "/v1/tenants", None).await.body["tenants"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn malformed_bodies_get_clear_4xx() {
    let t = app().await;
    let send = |ct: Option<&'static str>, body: &'static str| {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri("/v1/tenants/default/products")
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
        if let Some(ct) = ct {
            req = req.header(header::CONTENT_TYPE, ct);
        }
        req.body(Body::from(body)).unwrap()
    };
    assert_error(
        &t.raw(send(Some("application/json"), "{\"title\": ")).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        &t.raw(send(Some("application/json"), "")).await,
        StatusCode::BAD_REQUEST,
        "malformed_json",
    );
    assert_error(
        &t.raw(send(Some("application/json"), "[1,2]")).await,
        StatusCode::BAD_REQUEST,
        "invalid_body",
    );
    assert_error(
        &t.raw(send(Some("text/plain"), "{\"title\":\"x\"}")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    assert_error(
        &t.raw(send(None, "{\"title\":\"x\"}")).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
    );
    let ok = t
        .raw(send(
            Some("application/json; charset=utf-8"),
            "{\"external_id\":\"a\",\"title\":\"x\"}",
        ))
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    // Oversize: bigger than max_body_bytes.
    let big = json!({"external_id": "big", "title": "x", "description": "d".repeat(300 * 1024)});
    let r = t
        .admin(Method::POST, "/v1/tenants/default/products", Some(big))
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(t.product("default", "big").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_paths_tenants_cursors_and_limits_are_400_never_500() {
    let t = app().await;
    for (path, code, field) in [
        ("/v1/tenants/Bad_Tenant/products", "invalid_tenant_id", "tenant"),
        ("/v1/tenants/-x/products", "invalid_tenant_id", "tenant"),
        (
            "/v1/tenants/default/products?cursor=garbage",
            "invalid_cursor",
            "cursor",
        ),
        (
            "/v1/tenants/default/products?limit=0",
            "invalid_parameter",
            "limit",
        ),
        (
            "/v1/tenants/default/products?limit=1001",
            "invalid_parameter",
            "limit",
        ),
        (
            "/v1/tenants/default/products?limit=ten",
            "invalid_parameter",
            "limit",
        ),
        (
            "/v1/tenants/default/products?limit=5&limit=6",
            "duplicate_parameter",
            "limit",
        ),
        (
            "/v1/tenants/default/products/%01ctrl",
            "invalid_external_id",
            "external_id",
        ),
    ] {
        let r = t.admin(Method::GET, path, None).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert_eq!(r.field(), field, "{path}");
    }
    let r = t
        .admin(Method::GET, "/v1/tenants/default/products/%FF%FE", None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_path");
    let r = t
        .admin(
            Method::GET,
            &format!("/v1/tenants/default/products/{}", "x".repeat(257)),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_external_id");
    let r = t
        .admin(Method::POST, "/v1/tenants", Some(json!({"id": "UPPER"})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_tenant_id");
    assert_eq!(r.field(), "id");
    let r = t.admin(Method::GET, "/v1/tenants/nobody/products", None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "tenant_not_found");
    assert_error(
        &t.admin(Method::GET, "/v1/nothing", None).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &t.admin(Method::DELETE, "/v1/tenants", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn path_ids_are_url_decoded() {
    let t = app().await;
    let mut doc = boots();
    doc["external_id"] = json!("SKU 1/é?#");
    assert_eq!(
        t.admin(Method::POST, "/v1/tenants/default/products", Some(doc))
            .await
            .status,
        StatusCode::CREATED
    );
    let r = t.product("default", "SKU%201%2F%C3%A9%3F%23").await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["external_id"], "SKU 1/é?#");
}

#[tokio::test]
async fn duplicate_create_is_409_and_keeps_the_original() {
    let t = app().await;
    t.admin(Method::POST, "/v1/tenants/default/products", Some(boots()))
        .await;
    let mut other = boots();
    other["title"] = json!("Imposter");
    let r = t
        .admin(Method::POST, "/v1/tenants/default/products", Some(other))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert!(r.body["error"]["message"].as_str().unwrap().contains("boot-1"));
    assert_eq!(
        t.product("default", "boot-1").await.body["title"],
        "Red leather ankle boots"
    );
}

#[tokio::test]
async fn put_replaces_patch_merges_and_both_reindex_only_on_indexed_changes() {
    let t = app().await;
    t.admin(Method::POST, "/v1/tenants/default/products", Some(boots()))
        .await;
    // PATCH metadata only: merged, no job.
    let r = t
        .admin(
            Method::PATCH,
            "/v1/tenants/default/products/boot-1",
            Some(json!({"metadata": {"note": "x"}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["job_id"], Value::Null);
    assert_eq!(
        r.body["product"]["metadata"],
        json!({"sizes": [38, 39], "note": "x"})
    );
    // PATCH null clears an optional field; text change re-indexes.
    let r = t
        .admin(
            Method::PATCH,
            "/v1/tenants/default/products/boot-1",
            Some(json!({"description": null, "title": "Boots"})),
        )
        .await;
    assert_eq!(r.body["product"]["description"], Value::Null);
    assert_eq!(r.body["product"]["title"], "Boots");
    assert!(r.body["job_id"].is_string());
    // PUT replaces everything; a GET document can be sent back unchanged.
    let got = t.product("default", "boot-1").await.body;
    let r = t
        .admin(
            Method::PUT,
            "/v1/tenants/default/products/boot-1",
            Some(got.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["job_id"], Value::Null);
    let r = t
        .admin(
            Method::PUT,
            "/v1/tenants/default/products/boot-1",
            Some(json!({"title": "Only a title"})),
        )
        .await;
    assert_eq!(r.body["product"]["tags"], json!([]));
    assert_eq!(r.body["product"]["price"], Value::Null);
    assert_eq!(r.body["product"]["created_at"], got["created_at"]);
    // The body's external_id must match the path.
    let r = t
        .admin(
            Method::PUT,
            "/v1/tenants/default/products/boot-1",
            Some(json!({"external_id": "other", "title": "x"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "external_id_mismatch");
    let r = t
        .admin(
            Method::PATCH,
            "/v1/tenants/default/products/boot-1",
            Some(json!({"external_id": "other"})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "external_id_mismatch");
    for m in [Method::PUT, Method::PATCH] {
        let r = t
            .admin(
                m,
                "/v1/tenants/default/products/missing",
                Some(json!({"title": "x"})),
            )
            .await;
        assert_error(&r, StatusCode::NOT_FOUND, "product_not_found");
    }
}

#[tokio::test]
async fn batch_keeps_valid_items_and_lists_rejections() {
    let t = app().await;
    let mut products: Vec<Value> = (0..5)
        .map(|i| json!({"external_id": format!("b{i}"), "title": format!("B{i}")}))
        .collect();
    products.push(json!({"external_id": "bad", "title": "x", "price": "-3"}));
    products.push(json!(17));
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/products/batch",
            Some(json!({"products": products})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    assert_eq!(r.body["accepted"], 5);
    assert!(r.body["job_id"].is_string());
    assert_eq!(
        r.body["rejected"],
        json!([
            {"index": 5, "error": {"code": "invalid_price", "message": r.body["rejected"][0]["error"]["message"],
                "details": {"field": "price", "errors": r.body["rejected"][0]["error"]["details"]["errors"]}}},
            {"index": 6, "error": {"code": "invalid_type", "message": "each product must be a JSON object",
                "details": {"field": "products[6]", "errors": r.body["rejected"][1]["error"]["details"]["errors"]}}},
        ])
    );
    assert_eq!(t.product("default", "b4").await.status, StatusCode::OK);
    assert_eq!(t.product("default", "bad").await.status, StatusCode::NOT_FOUND);
    // Over the limit: nothing stored.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"external_id": format!("m{i}"), "title": "m"}))
        .collect();
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/products/batch",
            Some(json!({"products": many})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "too_many_products");
    assert_eq!(r.field(), "products");
    assert_eq!(t.product("default", "m0").await.status, StatusCode::NOT_FOUND);
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/products/batch",
            Some(json!({"products": {}})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_type");
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/products/batch",
            Some(json!({})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "missing_field");
    // All invalid: 202 with nothing accepted and no job.
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/products/batch",
            Some(json!({"products": [{"title": "no id"}]})),
        )
        .await;
    assert_eq!(
        (r.body["accepted"].clone(), r.body["job_id"].clone()),
        (json!(0), Value::Null)
    );
}

#[tokio::test]
async fn listing_follows_cursors_to_the_end_and_filters_by_category() {
    let t = app().await;
    let products: Vec<Value> = (0..25)
        .map(|i| json!({"external_id": format!("p{i:02}"), "title": "x", "category": if i % 5 == 0 { "five" } else { "other" }}))
        .collect();
    t.admin(
        Method::POST,
        "/v1/tenants/default/products/batch",
        Some(json!({"products": products})),
    )
    .await;
    let mut seen = Vec::new();
    let mut path = "/v1/tenants/default/products?limit=10".to_owned();
    loop {
        let r = t.admin(Method::GET, &path, None).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.extend(
            r.body["products"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["external_id"].as_str().unwrap().to_owned()),
        );
        match r.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tenants/default/products?limit=10&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).map(|i| format!("p{i:02}")).collect::<Vec<_>>());
    let r = t
        .admin(Method::GET, "/v1/tenants/default/products?category=five", None)
        .await;
    assert_eq!(r.body["products"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn keys_are_scoped_and_confined_to_their_tenant() {
    let t = app().await;
    let a_write = t.tenant_with_key("shop-a", &["write"]).await;
    let a_search = t.tenant_with_key("shop-a", &["search"]).await;
    let b_all = t
        .tenant_with_key("shop-b", &["search", "write", "plugins", "admin"])
        .await;
    let create = |key: &str| {
        let key = key.to_owned();
        let t = &t;
        async move {
            t.call(
                Method::POST,
                "/v1/tenants/shop-a/products",
                Some(&key),
                Some(boots()),
            )
            .await
        }
    };
    assert_eq!(create(&a_write).await.status, StatusCode::CREATED);
    assert_error(
        &create(&a_search).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
    // Tenant B's all-powerful key can do nothing on tenant A.
    let paths = [
        (Method::GET, "/v1/tenants/shop-a/products", None),
        (Method::POST, "/v1/tenants/shop-a/products", Some(boots())),
        (
            Method::POST,
            "/v1/tenants/shop-a/products/batch",
            Some(json!({"products": [boots()]})),
        ),
        (Method::GET, "/v1/tenants/shop-a/products/boot-1", None),
        (
            Method::PUT,
            "/v1/tenants/shop-a/products/boot-1",
            Some(json!({"title": "pwned"})),
        ),
        (
            Method::PATCH,
            "/v1/tenants/shop-a/products/boot-1",
            Some(json!({"title": "pwned"})),
        ),
        (Method::DELETE, "/v1/tenants/shop-a/products/boot-1", None),
        (
            Method::POST,
            "/v1/tenants/shop-a/keys",
            Some(json!({"scopes": ["admin"]})),
        ),
        (Method::GET, "/v1/tenants/shop-a", None),
        (Method::GET, "/v1/tenants/nonexistent/products", None),
    ];
    for (m, p, body) in paths {
        let r = t.call(m.clone(), p, Some(&b_all), body).await;
        assert_error(&r, StatusCode::FORBIDDEN, "tenant_forbidden");
    }
    assert_eq!(
        t.product("shop-a", "boot-1").await.body["title"],
        "Red leather ankle boots"
    );
    // Reading works with search or write; tenant listing needs the admin key.
    for k in [&a_search, &a_write] {
        let r = t
            .call(Method::GET, "/v1/tenants/shop-a/products/boot-1", Some(k), None)
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_error(
        &t.call(Method::GET, "/v1/tenants", Some(&b_all), None).await,
        StatusCode::FORBIDDEN,
        "admin_required",
    );
    assert_error(
        &t.call(
            Method::POST,
            "/v1/tenants",
            Some(&b_all),
            Some(json!({"id": "evil"})),
        )
        .await,
        StatusCode::FORBIDDEN,
        "admin_required",
    );
    // A tenant admin key manages its own keys.
    let r = t
        .call(
            Method::POST,
            "/v1/tenants/shop-b/keys",
            Some(&b_all),
            Some(json!({"scopes": ["search"]})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let new_key = r.body["key"].as_str().unwrap().to_owned();
    assert_eq!(
        t.call(Method::GET, "/v1/tenants/shop-b/products", Some(&new_key), None)
            .await
            .status,
        StatusCode::OK
    );
    let r = t
        .call(
            Method::DELETE,
            &format!("/v1/tenants/shop-b/keys/{id}"),
            Some(&b_all),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = t
        .call(Method::GET, "/v1/tenants/shop-b/products", Some(&new_key), None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let r = t
        .call(
            Method::DELETE,
            &format!("/v1/tenants/shop-b/keys/{id}"),
            Some(&b_all),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "key_not_found");
}

#[tokio::test]
async fn missing_malformed_and_unknown_keys_are_401() {
    let t = app().await;
    let path = "/v1/tenants/default/products";
    assert_error(
        &t.call(Method::GET, path, None, None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    for key in ["nope", "vtr_0123456789abcdef_forged", &format!("{ADMIN}x")] {
        assert_error(
            &t.call(Method::GET, path, Some(key), None).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    let req = Request::builder()
        .uri(path)
        .header(header::AUTHORIZATION, format!("Basic {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    assert_error(&t.raw(req).await, StatusCode::UNAUTHORIZED, "unauthorized");
    // A real key id with a wrong secret.
    let key = t.tenant_with_key("k", &["search"]).await;
    let forged = format!("{}AAAA", &key[..key.len() - 4]);
    assert_error(
        &t.call(Method::GET, "/v1/tenants/k/products", Some(&forged), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    // Health and metrics need no key.
    assert_eq!(
        t.call(Method::GET, "/health/live", None, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn key_requests_validate_scopes_and_show_the_secret_once() {
    let t = app().await;
    for body in [
        json!({}),
        json!({"scopes": []}),
        json!({"scopes": ["root"]}),
        json!({"scopes": "search"}),
    ] {
        let r = t
            .admin(Method::POST, "/v1/tenants/default/keys", Some(body))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_scopes");
        assert_eq!(r.field(), "scopes");
    }
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/default/keys",
            Some(json!({"scopes": ["write", "search", "write"], "label": "ci"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["scopes"], json!(["search", "write"]));
    assert!(r.body["key"].as_str().unwrap().starts_with("vtr_"));
    let r = t
        .admin(
            Method::POST,
            "/v1/tenants/nobody/keys",
            Some(json!({"scopes": ["search"]})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "tenant_not_found");
    let r = t
        .admin(Method::POST, "/v1/tenants", Some(json!({"id": "default"})))
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
}

#[tokio::test]
async fn without_an_admin_key_development_mode_lets_everyone_in() {
    let t = app_with(None).await;
    let r = t
        .call(Method::POST, "/v1/tenants", None, Some(json!({"id": "open"})))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let t = app().await;
    let req = Request::builder()
        .uri("/health/live")
        .header("x-request-id", "my-trace-123")
        .body(Body::empty())
        .unwrap();
    assert_eq!(t.raw(req).await.headers["x-request-id"], "my-trace-123");
    let r = t.call(Method::GET, "/v1/nothing", None, None).await;
    let id = r.headers["x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

#[tokio::test]
async fn health_reports_the_catalog_and_metrics_count_requests_by_route() {
    let t = app().await;
    let r = t.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["checks"]["catalog"], "ok");
    assert_eq!(r.body["checks"]["encoder"], "ok");
    assert_eq!(r.body["checks"]["vectors"], "ok");
    let r = t.call(Method::GET, "/health/dependencies", None, None).await;
    assert_eq!(r.body["dependencies"]["encoder"]["status"], "ok");
    assert_eq!(r.body["dependencies"]["vectors"]["status"], "ok");
    assert_eq!(r.body["dependencies"]["vectors"]["backend"], "qdrant-edge");
    assert_eq!(r.body["dependencies"]["catalog"]["status"], "ok");
    assert_eq!(r.body["dependencies"]["catalog"]["backend"], "sqlite");
    assert!(r.body["dependencies"]["catalog"]["latency_ms"].as_f64().is_some());
    t.admin(Method::GET, "/v1/tenants/default/products/x", None).await;
    let req = Request::builder().uri("/metrics").body(Body::empty()).unwrap();
    let res = t.app.clone().oneshot(req).await.unwrap();
    let text = String::from_utf8(
        axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec(),
    )
    .unwrap();
    assert!(
        text.contains(
            r#"vitrine_http_requests_total{route="/v1/tenants/{t}/products/{id}",method="GET",status="404"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains("vitrine_http_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[tokio::test]
async fn cors_preflight_allows_browsers_with_bearer_keys() {
    let t = app().await;
    let req = Request::builder()
        .method(Method::OPTIONS)
        .uri("/v1/tenants/default/products")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization,content-type")
        .body(Body::empty())
        .unwrap();
    let r = t.raw(req).await;
    assert!(r.status.is_success(), "{:?}", r.status);
    assert_eq!(r.headers["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn product_writes_return_jobs_that_can_be_read_listed_and_cancelled() {
    let t = app().await;
    let write = t.tenant_with_key("jobs-a", &["write"]).await;
    let search = t.tenant_with_key("jobs-a", &["search"]).await;
    let other = t.tenant_with_key("jobs-b", &["search", "write", "admin"]).await;
    let r = t
        .call(
            Method::POST,
            "/v1/tenants/jobs-a/products",
            Some(&write),
            Some(boots()),
        )
        .await;
    let job_id = r.body["job_id"].as_str().unwrap().to_owned();
    let path = format!("/v1/jobs/{job_id}");

    let r = t.call(Method::GET, &path, Some(&search), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["kind"], "index_product");
    assert_eq!(r.body["tenant"], "jobs-a");
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["progress"], json!({"done": 0, "total": 0}));
    assert_eq!(
        (r.body["attempts"].clone(), r.body["max_attempts"].clone()),
        (json!(0), json!(5))
    );
    // Another tenant cannot see or cancel it; it looks absent.
    assert_error(
        &t.call(Method::GET, &path, Some(&other), None).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    let cancel = format!("{path}/cancel");
    assert_error(
        &t.call(Method::POST, &cancel, Some(&other), None).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );
    assert_error(
        &t.call(Method::POST, &cancel, Some(&search), None).await,
        StatusCode::FORBIDDEN,
        "insufficient_scope",
    );
    let r = t.call(Method::POST, &cancel, Some(&write), None).await;
    assert_eq!(
        (r.status, r.body["status"].as_str()),
        (StatusCode::OK, Some("cancelled"))
    );
    assert_error(
        &t.call(Method::POST, &cancel, Some(&write), None).await,
        StatusCode::CONFLICT,
        "job_finished",
    );
    assert_error(
        &t.admin(Method::GET, "/v1/jobs/nope", None).await,
        StatusCode::NOT_FOUND,
        "job_not_found",
    );

    let r = t
        .call(
            Method::GET,
            "/v1/tenants/jobs-a/jobs?status=cancelled",
            Some(&search),
            None,
        )
        .await;
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["jobs"][0]["id"], job_id);
    let r = t
        .call(
            Method::GET,
            "/v1/tenants/jobs-a/jobs?status=queued",
            Some(&search),
            None,
        )
        .await;
    assert_eq!(r.body["jobs"].as_array().unwrap().len(), 0);
    let r = t
        .call(
            Method::GET,
            "/v1/tenants/jobs-a/jobs?status=done",
            Some(&search),
            None,
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_parameter");
    assert_eq!(r.field(), "status");
    let r = t
        .call(Method::GET, "/v1/tenants/jobs-a/jobs", Some(&other), None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "tenant_forbidden");
}

fn png_base64(width: u32, height: u32) -> String {
    use base64::Engine;
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 9) as u8, (y * 5) as u8, 77])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    base64::engine::general_purpose::STANDARD.encode(out)
}

#[tokio::test]
async fn embed_returns_unit_vectors_for_text_and_images() {
    let t = app().await;
    let key = t.tenant_with_key("emb", &["search"]).await;
    let r = t
        .call(
            Method::POST,
            "/v1/embed",
            Some(&key),
            Some(json!({"text": "red boots"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let dims = r.body["dims"].as_u64().unwrap() as usize;
    let v: Vec<f64> = r.body["vector"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), dims);
    assert!((v.iter().map(|x| x * x).sum::<f64>().sqrt() - 1.0).abs() < 1e-4);
    assert!(r.body["model"].as_str().is_some_and(|m| !m.is_empty()));
    let again = t
        .call(
            Method::POST,
            "/v1/embed",
            Some(&key),
            Some(json!({"text": "red boots"})),
        )
        .await;
    assert_eq!(again.body["vector"], r.body["vector"], "deterministic");
    let img = t
        .call(
            Method::POST,
            "/v1/embed",
            Some(&key),
            Some(json!({"image_base64": png_base64(40, 30)})),
        )
        .await;
    assert_eq!(img.status, StatusCode::OK, "{:?}", img.body);
    assert_eq!(img.body["vector"].as_array().unwrap().len(), dims);
    let data_url = format!("data:image/png;base64,{}", png_base64(40, 30));
    let img2 = t
        .call(
            Method::POST,
            "/v1/embed",
            Some(&key),
            Some(json!({"image_base64": data_url})),
        )
        .await;
    assert_eq!(img2.body["vector"], img.body["vector"]);
}

#[tokio::test]
async fn embed_rejects_bad_queries_with_clear_errors() {
    let t = app().await;
    let write_only = t.tenant_with_key("emb2", &["write"]).await;
    let r = t
        .call(
            Method::POST,
            "/v1/embed",
            Some(&write_only),
            Some(json!({"text": "x"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "insufficient_scope");
    let cases = [
        (json!({}), StatusCode::BAD_REQUEST, "invalid_query"),
        (
            json!({"text": "a", "image_base64": "b"}),
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (json!({"text": "  "}), StatusCode::BAD_REQUEST, "invalid_text"),
        (json!({"text": 5}), StatusCode::BAD_REQUEST, "invalid_type"),
        (
            json!({"text": "a", "mode": "fast"}),
            StatusCode::BAD_REQUEST,
            "unknown_field",
        ),
        (
            json!({"image_base64": "%%%not base64"}),
            StatusCode::BAD_REQUEST,
            "invalid_base64",
        ),
        (
            json!({"image_base64": "aGVsbG8gd29ybGQ="}),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_image",
        ),
        (
            json!({"image_base64": png_base64(40, 30)[..60].to_owned()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_image",
        ),
    ];
    for (body, status, code) in cases {
        let r = t.admin(Method::POST, "/v1/embed", Some(body.clone())).await;
        assert_error(&r, status, code);
    }
}

#[tokio::test]
async fn a_missing_encoder_makes_embedding_and_readiness_503_but_not_the_catalog() {
    let encoder = SharedEncoder::default();
    encoder.set(crate::encoder::service::EncoderState::Failed(
        "hub unreachable; check encoder.model".into(),
    ));
    let t = state_with(tempfile::tempdir().unwrap(), None, encoder, Default::default()).await;
    let r = t
        .call(Method::POST, "/v1/embed", None, Some(json!({"text": "x"})))
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(r.headers.contains_key("retry-after"));
    let r = t.call(Method::GET, "/health/ready", None, None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "not_ready");
    // The vector index opens once the encoder says which dimension it needs.
    assert_eq!(
        r.body["error"]["details"]["failing"],
        json!(["encoder", "vectors"])
    );
    let r = t.call(Method::GET, "/health/dependencies", None, None).await;
    assert!(
        r.body["dependencies"]["encoder"]["error"]
            .as_str()
            .unwrap()
            .contains("encoder.model")
    );
    let r = t
        .call(Method::POST, "/v1/tenants/default/products", None, Some(boots()))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
}

#[tokio::test]
async fn admin_reindex_is_admin_only_validated_and_one_at_a_time() {
    let t = app().await;
    let key = t.tenant_with_key("shop", &["search", "write", "admin"]).await;
    let r = t
        .call(Method::POST, "/v1/admin/reindex", Some(&key), Some(json!({})))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = t
        .call(
            Method::POST,
            "/v1/admin/reindex",
            Some(ADMIN),
            Some(json!({"tenant": "x", "all": true})),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown_field");
    assert_eq!(r.body["error"]["details"]["field"], "all");
    let r = t
        .call(
            Method::POST,
            "/v1/admin/reindex",
            Some(ADMIN),
            Some(json!({"tenant": "Bad Id"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert_eq!(r.body["error"]["details"]["field"], "tenant");
    let r = t
        .call(
            Method::POST,
            "/v1/admin/reindex",
            Some(ADMIN),
            Some(json!({"tenant": "nobody"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "tenant_not_found");

    // No body at all is a full reindex.
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/admin/reindex")
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"))
        .body(Body::empty())
        .unwrap();
    let r = t.raw(req).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
    let job_id = r.body["job_id"].as_str().unwrap().to_owned();
    let r = t
        .call(Method::GET, &format!("/v1/jobs/{job_id}"), Some(ADMIN), None)
        .await;
    assert_eq!(r.body["kind"], "reindex_all");
    assert_eq!(r.body["status"], "queued");
    assert_eq!(r.body["tenant"], Value::Null);
    // A job of no tenant is no tenant's to see.
    let seer = t.tenant_with_key("seer", &["search", "write", "admin"]).await;
    let r = t
        .call(Method::GET, &format!("/v1/jobs/{job_id}"), Some(&seer), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "job_not_found");
    let r = t
        .call(
            Method::POST,
            "/v1/admin/reindex",
            Some(ADMIN),
            Some(json!({"tenant": "shop"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "reindex_in_progress");
    assert_eq!(r.body["error"]["details"]["job_id"], job_id.as_str());
    // Once it is cancelled another may start.
    let r = t
        .call(
            Method::POST,
            &format!("/v1/jobs/{job_id}/cancel"),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let r = t
        .call(
            Method::POST,
            "/v1/admin/reindex",
            Some(ADMIN),
            Some(json!({"tenant": "shop"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{:?}", r.body);
}

#[tokio::test]
async fn admin_vectors_reports_backend_dims_and_counts() {
    let t = app().await;
    let r = t.call(Method::GET, "/v1/admin/vectors", Some(ADMIN), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["backend"], "qdrant-edge");
    assert_eq!(r.body["count"], 0);
    assert!(r.body["dims"].as_u64().unwrap() > 0);
    let r = t
        .call(Method::GET, "/v1/admin/vectors?tenant=shop", Some(ADMIN), None)
        .await;
    assert_eq!(r.body["tenant"], "shop");
    let r = t
        .call(Method::GET, "/v1/admin/vectors?bogus=1", Some(ADMIN), None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "unknown_parameter");
    let r = t
        .call(
            Method::GET,
            "/v1/admin/vectors?tenant=Bad%20Id",
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

fn png_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x * 7) as u8, (y * 5) as u8, 90, 200]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

impl TestApp {
    async fn send_bytes(&self, method: Method, path: &str, key: &str, ctype: &str, body: Vec<u8>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"))
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body))
            .unwrap();
        self.raw(req).await
    }

    async fn get_raw(&self, path: &str, key: &str, etag: Option<&str>) -> axum::http::Response<Body> {
        let mut req = Request::builder()
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {key}"));
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        self.app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn uploaded_images_are_checked_stored_served_resized_and_removed() {
    let t = app().await;
    let writer = t.tenant_with_key("pics", &["write"]).await;
    let reader = t.tenant_with_key("pics", &["search"]).await;
    let other = t.tenant_with_key("pics2", &["write", "search"]).await;
    let r = t
        .call(
            Method::POST,
            "/v1/tenants/pics/products",
            Some(&writer),
            Some(json!({"external_id": "a b/c", "title": "Clip art"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    assert_eq!(r.body["product"]["stored_image"], Value::Null);
    let path = "/v1/tenants/pics/products/a%20b%2Fc/image";

    // Bad uploads change nothing.
    let r = t
        .send_bytes(Method::PUT, path, &writer, "application/json", b"{}".to_vec())
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let r = t
        .send_bytes(
            Method::PUT,
            path,
            &writer,
            "image/png",
            b"not an image at all".to_vec(),
        )
        .await;
    assert_error(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_image");
    let mut truncated = png_bytes(64, 64);
    truncated.truncate(truncated.len() / 2);
    let r = t
        .send_bytes(Method::PUT, path, &writer, "image/png", truncated)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "invalid_image");
    let r = t
        .send_bytes(Method::PUT, path, &writer, "image/png", Vec::new())
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "missing_field");
    let r = t
        .send_bytes(Method::PUT, path, &reader, "image/png", png_bytes(8, 8))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    let r = t
        .send_bytes(
            Method::PUT,
            "/v1/tenants/pics/products/nope/image",
            &writer,
            "image/png",
            png_bytes(8, 8),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "product_not_found");
    let r = t.call(Method::GET, path, Some(&reader), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "image_not_found");
    let r = t.call(Method::DELETE, path, Some(&writer), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "image_not_found");

    // A good upload: stored, re-indexed, served to readers of the tenant only.
    let original = png_bytes(300, 120);
    let r = t
        .send_bytes(Method::PUT, path, &writer, "image/png", original.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert!(r.body["job_id"].as_str().is_some());
    let stored = &r.body["product"]["stored_image"];
    assert_eq!(stored["path"], path);
    assert_eq!(stored["sha256"], crate::media::fetch::hex_sha256(&original));
    assert_eq!(r.body["product"]["index_status"], "pending");
    let res = t.get_raw(path, &reader, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[header::CONTENT_TYPE], "image/png");
    let etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    assert_eq!(body.as_ref(), original.as_slice());
    let res = t.get_raw(path, &reader, Some(&etag)).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(etag, format!("\"{}\"", stored["sha256"].as_str().unwrap()));
    let res = t.get_raw(&format!("{path}?size=64"), &reader, None).await;
    assert_eq!(res.status(), StatusCode::OK);
    let thumb_etag = res.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(thumb_etag, etag);
    let res = t
        .get_raw(&format!("{path}?size=64"), &reader, Some(&thumb_etag))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    let res = t.get_raw(&format!("{path}?size=64"), &reader, None).await;
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    let thumb = image::load_from_memory(&body).unwrap();
    assert_eq!((thumb.width(), thumb.height()), (64, 26));
    for bad in ["?size=0", "?size=100", "?size=5000", "?size=x", "?width=10"] {
        let r = t
            .call(Method::GET, &format!("{path}{bad}"), Some(&reader), None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {:?}", r.body);
    }
    let r = t.call(Method::GET, path, Some(&other), None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{:?}", r.body);
    // The same external id in another tenant has its own image.
    let r = t
        .call(
            Method::POST,
            "/v1/tenants/pics2/products",
            Some(&other),
            Some(json!({"external_id": "a b/c", "title": "Other"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let path2 = "/v1/tenants/pics2/products/a%20b%2Fc/image";
    let r = t.call(Method::GET, path2, Some(&other), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "image_not_found");
    let r = t
        .send_bytes(Method::PUT, path2, &other, "image/png", png_bytes(20, 20))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let res = t.get_raw(path, &reader, None).await;
    let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
    assert_eq!(body.as_ref(), original.as_slice(), "pics keeps its own image");
    // A field write keeps the image; the product round-trips through PUT.
    let doc = t.product("pics", "a%20b%2Fc").await.body;
    let r = t
        .call(
            Method::PUT,
            "/v1/tenants/pics/products/a%20b%2Fc",
            Some(&writer),
            Some(doc),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["product"]["stored_image"]["path"], path);
    // Removing it.
    let r = t.call(Method::DELETE, path, Some(&writer), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["product"]["stored_image"], Value::Null);
    let r = t.call(Method::GET, path, Some(&reader), None).await;
    assert_error(&r, StatusCode::NOT_FOUND, "image_not_found");
}

#[tokio::test]
async fn the_search_page_is_served_with_its_assets_under_a_strict_policy() {
    let t = app().await;
    for (path, ctype, marker) in [
        ("/", "text/html", "/page.js"),
        ("/page.js", "text/javascript", "fetch("),
        ("/page.css", "text/css", "{"),
    ] {
        let r = t.call(Method::GET, path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
        assert!(
            r.headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(ctype),
            "{path}"
        );
        let csp = r.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(
            csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
            "{csp}"
        );
        assert!(r.body.as_str().unwrap().contains(marker), "{path}");
    }
}

/// The document served at `/openapi.json` is OpenAPI 3.1 and describes
/// every route the router serves: each documented operation is routed
/// (not 404 `route_not_found`, not 405), and no method answers on a
/// documented path unless the document lists it.
#[tokio::test]
async fn the_openapi_document_and_the_router_describe_the_same_routes() {
    let app = app().await;
    let r = app.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(r.status, StatusCode::OK);
    let doc = r.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 30, "{}", paths.len());
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    let mut checked = 0;
    for (template, item) in paths {
        let path = template
            .replace("{t}", "default")
            .replace("{id}", "p1")
            .replace("{name}", "plug")
            .replace("{key_id}", "k1")
            .replace("{job_id}", "j1")
            .replace("{digest}", &"0".repeat(64));
        assert!(!path.contains('{'), "an unfilled parameter in {template}");
        for m in &methods {
            let documented = item.get(m.as_str().to_ascii_lowercase()).is_some();
            let r = app.admin(m.clone(), &path, None).await;
            let routed = r.status != StatusCode::METHOD_NOT_ALLOWED && r.code() != "route_not_found";
            assert_eq!(
                routed, documented,
                "{m} {template}: routed {routed}, documented {documented} ({:?})",
                r.body
            );
            checked += 1;
        }
        // Every operation names its errors, and every error is the
        // contract's body.
        for (method, op) in item.as_object().unwrap() {
            let Some(responses) = op["responses"].as_object() else {
                continue;
            };
            if template.starts_with("/v1/") {
                for status in ["400", "401", "403", "429", "503"] {
                    assert_eq!(
                        responses[status]["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {template} {status}"
                    );
                }
                assert!(op["security"].is_array(), "{method} {template}");
            }
        }
    }
    assert!(checked >= 150);
    // Every reference resolves to a schema of the document.
    fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 100);
    for r in all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or(r);
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{r} does not resolve"
        );
    }
    // The bearer scheme, the error codes and the links between operations.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    let codes = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_array()
        .unwrap();
    assert_eq!(codes.len(), crate::error_code::ErrorCode::ALL.len());
    assert!(codes.contains(&json!("unsupported_image")));
    let created = &doc["paths"]["/v1/tenants"]["post"]["responses"]["201"]["links"];
    assert_eq!(created["CreateProduct"]["operationId"], "create_product");
    assert_eq!(created["CreateProduct"]["parameters"]["t"], "$response.body#/id");
}

/// `/docs` works offline: its page, script and styles come from this
/// server, under a CSP that allows nothing else.
#[tokio::test]
async fn the_reference_is_served_from_the_binary() {
    let app = app().await;
    let page = app.call(Method::GET, "/docs", None, None).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = page.body.as_str().unwrap().to_owned();
    let csp = page.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"),
        "{csp}"
    );
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/init.js",
    ] {
        assert!(html.contains(asset), "{asset} is not linked from /docs");
        let r = app.call(Method::GET, asset, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{asset}");
    }
    assert!(!html.contains("http://") && !html.contains("https://"), "{html}");
    let init = app.call(Method::GET, "/docs/init.js", None, None).await;
    assert!(init.body.as_str().unwrap().contains("/openapi.json"));
}

#[tokio::test]
async fn tenant_limits_are_set_by_the_admin_checked_and_shown() {
    let app = app().await;
    let key = app.tenant_with_key("shop", &["search", "write"]).await;
    let r = app.call(Method::GET, "/v1/tenants/shop", Some(&key), None).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(r.body["quotas"], json!({}));
    assert_eq!(
        r.body["usage"],
        json!({"products": 0, "plugin_versions": 0, "plugin_bytes": 0})
    );
    assert_eq!(
        r.body["rate_limits"]["search"],
        json!({"per_second": 50.0, "burst": 100})
    );
    // The list stays short.
    let r = app.admin(Method::GET, "/v1/tenants", None).await;
    assert!(r.body["tenants"][0].get("usage").is_none(), "{:?}", r.body);

    for (body, field, code) in [
        (
            json!({"rate_limits": {"search": {"per_second": 0, "burst": 1}}}),
            "rate_limits.search",
            "invalid_value",
        ),
        (
            json!({"rate_limits": {"write": {"per_second": 1, "burst": 0}}}),
            "rate_limits.write",
            "invalid_value",
        ),
        (
            json!({"quotas": {"max_products": 1_000_000_000_000_001_u64}}),
            "quotas.max_products",
            "invalid_value",
        ),
        (
            json!({"quotas": {"max_products": -1}}),
            "quotas.max_products",
            "invalid_value",
        ),
        (json!({"quota": {}}), "quota", "unknown_field"),
    ] {
        let r = app
            .admin(Method::PATCH, "/v1/tenants/shop", Some(body.clone()))
            .await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert_eq!(r.field(), field, "{body}");
    }
    let r = app
        .call(
            Method::PATCH,
            "/v1/tenants/shop",
            Some(&key),
            Some(json!({"quotas": {}})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "admin_required");
    let r = app
        .admin(Method::PATCH, "/v1/tenants/nobody", Some(json!({"quotas": {}})))
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "tenant_not_found");

    let r = app
        .admin(
            Method::PATCH,
            "/v1/tenants/shop",
            Some(json!({"quotas": {"max_products": 1}, "rate_limits": {"write": {"per_second": 5.5, "burst": 7}}})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(
        r.body["rate_limits"]["write"],
        json!({"per_second": 5.5, "burst": 7})
    );
    assert_eq!(r.body["rate_limits"]["search"]["burst"], 100);
    // Fields not sent are kept; `{}` clears one.
    let r = app
        .admin(
            Method::PATCH,
            "/v1/tenants/shop",
            Some(json!({"rate_limits": {}})),
        )
        .await;
    assert_eq!(r.body["quotas"], json!({"max_products": 1}));
    assert_eq!(r.body["rate_limits"]["write"]["burst"], 40);

    let r = app
        .call(
            Method::POST,
            "/v1/tenants/shop/products",
            Some(&key),
            Some(boots()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let mut second = boots();
    second["external_id"] = json!("boot-2");
    let r = app
        .call(
            Method::POST,
            "/v1/tenants/shop/products",
            Some(&key),
            Some(second),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "quota_exceeded");
    assert_eq!(r.body["error"]["details"]["quota"], "max_products");
    // An update is no new product.
    let r = app
        .call(
            Method::PUT,
            "/v1/tenants/shop/products/boot-1",
            Some(&key),
            Some(boots()),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
}

#[tokio::test]
async fn keyed_answers_vary_on_the_key_and_errors_are_never_stored() {
    let app = app().await;
    let key = app.tenant_with_key("shop", &["search", "write"]).await;
    let r = app
        .call(Method::GET, "/v1/tenants/shop/products", Some(&key), None)
        .await;
    assert_eq!(r.headers[header::CACHE_CONTROL], "private, no-cache");
    assert!(r.headers.contains_key(header::ETAG));
    assert!(
        r.headers
            .get_all(header::VARY)
            .iter()
            .any(|v| v.to_str().unwrap().contains("authorization"))
    );
    let r = app
        .call(Method::GET, "/v1/tenants/shop/products/none", Some(&key), None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let r = app.call(Method::GET, "/v1/tenants", None, None).await;
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    let r = app.call(Method::GET, "/", None, None).await;
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-cache");
}
