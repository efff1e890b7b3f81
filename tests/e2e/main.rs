//! Black-box end-to-end tests: the real `vitrine` binary on 127.0.0.1:0,
//! over HTTP, on SQLite and on PostgreSQL.

// A failed setup step must stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod hardening;
mod harness;
mod hybrid;
mod indexing;
mod page;
mod plugins;
mod replica;
mod schemathesis;
mod search;
mod trust;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use harness::{ADMIN_KEY, Catalog, Client, Setup, image_server};
use reqwest::Method;
use serde_json::{Value, json};

/// Creates a tenant and a key with the given scopes; returns the key.
async fn tenant_key(admin: &Client, tenant: &str, scopes: &[&str]) -> String {
    let (s, b) = admin
        .post("/v1/tenants", &json!({"id": tenant, "name": tenant}))
        .await;
    assert_eq!(s, 201, "{b}");
    new_key(admin, tenant, scopes).await
}

/// Another key of an existing tenant.
async fn new_key(admin: &Client, tenant: &str, scopes: &[&str]) -> String {
    let (s, b) = admin
        .post(&format!("/v1/tenants/{tenant}/keys"), &json!({"scopes": scopes}))
        .await;
    assert_eq!(s, 201, "{b}");
    b["key"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_and_tenant_isolation_over_http() {
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let setup = Setup::new(&catalog);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let a = admin.with_key(&tenant_key(&admin, "shop-a", &["search", "write"]).await);
        let b = admin.with_key(&tenant_key(&admin, "shop-b", &["search", "write", "plugins", "admin"]).await);

        // Create, read, update, patch, list, delete with A's key.
        let boots = json!({"external_id": "boot 1/ä", "title": "Ankle boots", "price": "89.90",
                           "currency": "eur", "tags": ["red"], "metadata": {"k": [1, 2]}});
        let (s, created) = a.post("/v1/tenants/shop-a/products", &boots).await;
        assert_eq!(s, 201, "{backend}: {created}");
        assert_eq!(created["product"]["currency"], "EUR");
        let path = "/v1/tenants/shop-a/products/boot%201%2F%C3%A4";
        let (s, got) = a.get(path).await;
        assert_eq!((s, &got), (200, &created["product"]), "{backend}");
        let (s, put) = a
            .send(
                Method::PUT,
                path,
                Some(&json!({"title": "Chelsea boots", "price": 120})),
            )
            .await;
        assert_eq!(s, 200, "{backend}: {put}");
        assert_eq!(put["product"]["price"], "120");
        assert!(put["job_id"].is_string());
        let (s, patched) = a
            .send(Method::PATCH, path, Some(&json!({"in_stock": false})))
            .await;
        assert_eq!(
            (s, &patched["product"]["in_stock"]),
            (200, &json!(false)),
            "{backend}"
        );
        assert_eq!(patched["product"]["title"], "Chelsea boots");
        let (s, list) = a.get("/v1/tenants/shop-a/products?limit=10").await;
        assert_eq!(s, 200);
        assert_eq!(list["products"].as_array().unwrap().len(), 1, "{backend}");

        // B's key: 403 for every one of A's product and key operations.
        for (m, body) in [
            (Method::GET, None),
            (Method::PUT, Some(json!({"title": "x"}))),
            (Method::PATCH, Some(json!({"title": "x"}))),
            (Method::DELETE, None),
        ] {
            let (s, e) = b.send(m.clone(), path, body.as_ref()).await;
            assert_eq!(s, 403, "{backend} {m}: {e}");
            assert_eq!(e["error"]["code"], "tenant_forbidden");
        }
        for (s, e) in [
            b.get("/v1/tenants/shop-a/products").await,
            b.post("/v1/tenants/shop-a/products", &boots).await,
            b.post("/v1/tenants/shop-a/products/batch", &json!({"products": [boots]}))
                .await,
            b.post("/v1/tenants/shop-a/keys", &json!({"scopes": ["admin"]}))
                .await,
        ] {
            assert_eq!(s, 403, "{backend}: {e}");
        }
        // B sees its own (empty) catalog, unaffected.
        let (s, list) = b.get("/v1/tenants/shop-b/products").await;
        assert_eq!(
            (s, list["products"].as_array().unwrap().len()),
            (200, 0),
            "{backend}"
        );
        let (_, still) = a.get(path).await;
        assert_eq!(still["title"], "Chelsea boots", "{backend}");

        let (s, _) = a.send(Method::DELETE, path, None).await;
        assert_eq!(s, 204, "{backend}");
        let (s, e) = a.get(path).await;
        assert_eq!(
            (s, e["error"]["code"].as_str()),
            (404, Some("product_not_found")),
            "{backend}"
        );

        let status = server.terminate();
        assert!(status.success(), "{backend}: graceful exit, got {status:?}");
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_log_line_of_a_request_carries_its_request_id() {
    let setup = Setup::new(&Catalog::Sqlite);
    let server = setup.start();
    let http = reqwest::Client::new();
    let res = http
        .post(server.url("/v1/tenants"))
        .bearer_auth(ADMIN_KEY)
        .header("x-request-id", "e2e-request-42")
        .json(&json!({"id": "logged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["x-request-id"], "e2e-request-42");
    // Give the log writer a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lines = server.log_lines();
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l.to_string().contains("logged") || l["span"]["request_id"] == "e2e-request-42")
        .collect();
    let messages: Vec<&str> = of_request.iter().filter_map(|l| l["message"].as_str()).collect();
    assert!(messages.contains(&"tenant created"), "{messages:?}");
    assert!(messages.contains(&"request finished"), "{messages:?}");
    for l in of_request {
        assert_eq!(l["span"]["request_id"], "e2e-request-42", "{l}");
    }
    // Generated when absent.
    let res = http.get(server.url("/health/live")).send().await.unwrap();
    assert_eq!(res.headers()["x-request-id"].len(), 36);
}

/// SIGTERM while a request's body is still arriving: the request completes,
/// then the process exits cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_in_flight_requests_finish() {
    let setup = Setup::new(&Catalog::Sqlite);
    let server = setup.start();
    let body = json!({"external_id": "late", "title": "Arrives after SIGTERM"}).to_string();
    let (first, rest) = body.split_at(10);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    write!(
        stream,
        "POST /v1/tenants/default/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{first}",
        body.len()
    )
    .unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    harness::signal(server.pid(), "TERM");
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let mut server = server;
    assert!(server.wait_exit().success());
    // The product is durable: a new process sees it.
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let (s, p) = admin.get("/v1/tenants/default/products/late").await;
    assert_eq!((s, p["title"].as_str()), (200, Some("Arrives after SIGTERM")));
}

/// SIGKILL in the middle of 1,000-product batch imports, then a restart:
/// every product is either stored exactly as sent or absent, and each batch
/// is all or nothing.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_batch_import_leaves_every_product_whole_or_absent() {
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let setup = Setup::new(&catalog);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        const BATCHES: usize = 8;
        let batch = |n: usize| -> Vec<Value> {
            (0..1000)
                .map(|i| {
                    json!({
                        "external_id": format!("b{n}-p{i}"),
                        "title": format!("Product {i} of batch {n}"),
                        "description": "x".repeat(200),
                        "price": format!("{}.{:02}", i, n),
                        "tags": [format!("batch-{n}")],
                        "metadata": {"i": i, "n": n},
                    })
                })
                .collect()
        };
        // Fire all batches at once and kill the server the moment the first
        // one is acknowledged: the others are queued or mid-transaction.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for n in 0..BATCHES {
            let (c, tx) = (admin.clone(), tx.clone());
            let body = json!({"products": batch(n)});
            tokio::spawn(async move {
                let status = c.try_post("/v1/tenants/default/products/batch", &body).await;
                let _ = tx.send((n, status));
            });
        }
        drop(tx);
        let mut acknowledged = Vec::new();
        while let Ok(Some((n, status))) = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await {
            if status == Some(202) {
                acknowledged.push(n);
                break;
            }
        }
        assert!(!acknowledged.is_empty(), "{backend}: no batch was acknowledged");
        server.kill9();
        // Requests cut by the kill fail; that is expected.
        while let Some((n, status)) = rx.recv().await {
            if status == Some(202) {
                acknowledged.push(n);
            }
        }

        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let mut complete = 0;
        for n in 0..BATCHES {
            let mut present = 0;
            for (i, sent) in batch(n).iter().enumerate() {
                let id = sent["external_id"].as_str().unwrap();
                let (s, got) = admin.get(&format!("/v1/tenants/default/products/{id}")).await;
                match s {
                    200 => {
                        present += 1;
                        for field in ["title", "description", "price", "tags", "metadata"] {
                            assert_eq!(got[field], sent[field], "{backend} batch {n} item {i} {field}");
                        }
                    }
                    404 => {}
                    other => panic!("{backend}: unexpected status {other}: {got}"),
                }
            }
            assert!(
                present == 0 || present == 1000,
                "{backend}: batch {n} is partial: {present}/1000"
            );
            if acknowledged.contains(&n) {
                assert_eq!(present, 1000, "{backend}: acknowledged batch {n} was lost");
            }
            complete += usize::from(present == 1000);
        }
        eprintln!(
            "{backend}: {complete}/{BATCHES} batches stored before SIGKILL; {} acknowledged",
            acknowledged.len()
        );
        drop(server);
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn migrate_is_idempotent() {
    for catalog in Catalog::all().await {
        let setup = Setup::new(&catalog);
        let first = setup.command(&["migrate"]).output().unwrap();
        assert!(
            first.status.success(),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
        let out = String::from_utf8_lossy(&first.stdout);
        // Every migration file of the backend, so that a new one needs no
        // edit here.
        let count = std::fs::read_dir(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../migrations")
                .join(catalog.name()),
        )
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "sql"))
        .count();
        let all = (1..=count).map(|n| n.to_string()).collect::<Vec<_>>();
        assert!(
            out.contains(&format!("{count} applied ([{}])", all.join(", "))),
            "{}: {out}",
            catalog.name()
        );
        let second = setup.command(&["migrate"]).output().unwrap();
        let out = String::from_utf8_lossy(&second.stdout);
        assert!(
            out.contains("0 applied") && out.contains(&format!("{count} already applied")),
            "{}: {out}",
            catalog.name()
        );
        // And the server starts on the migrated catalog.
        let server = setup.start();
        let (s, _) = Client::new(&server, ADMIN_KEY).get("/health/ready").await;
        assert_eq!(s, 200);
        drop(server);
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_to_start_with_unsafe_or_unknown_settings() {
    let setup = Setup::new(&Catalog::Sqlite);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[
                ("VITRINE__ENV", "production"),
                ("VITRINE__AUTH__ADMIN_KEY", "short"),
            ],
            "auth.admin_key",
        ),
        (&[("VITRINE__ENV", "production")], "auth.admin_key"),
        (&[("VITRINE__SERVER__LISTEN_ADDR", "x")], "listen_addr"),
        (&[("VITRINE__CATALOG__URL", "mysql://db/x")], "catalog.url"),
    ];
    for (vars, key) in cases {
        let mut cmd = setup.command(&["serve"]);
        cmd.env_remove("VITRINE__AUTH__ADMIN_KEY");
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{vars:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{vars:?}: {err}");
    }
    // --help documents the commands.
    let out = setup.command(&["--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("serve") && help.contains("migrate"), "{help}");
}

#[tokio::test(flavor = "multi_thread")]
async fn development_without_admin_key_runs_open_and_warns() {
    let mut setup = Setup::new(&Catalog::Sqlite);
    setup.env.retain(|(k, _)| k != "VITRINE__AUTH__ADMIN_KEY");
    let server = setup.start();
    let (s, _) = Client::new(&server, "anything")
        .post("/v1/tenants", &json!({"id": "open"}))
        .await;
    assert_eq!(s, 201);
    let warned = server.log_lines().iter().any(|l| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.contains("authentication is OFF"))
    });
    assert!(warned);
}

/// Without network the default hub model cannot load: the service still
/// starts and serves the catalog, readiness names the encoder, and the
/// error names the setting to change.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_hub_model_is_reported_naming_the_setting() {
    let mut setup = Setup::new(&Catalog::Sqlite);
    setup.env.retain(|(k, _)| k != "VITRINE__ENCODER__MODEL");
    setup.env.push((
        "VITRINE__ENCODER__MODEL".to_owned(),
        "openai/clip-vit-base-patch32".to_owned(),
    ));
    // A hub endpoint where nothing answers: the test never downloads a
    // model, whatever network the machine has.
    setup
        .env
        .push(("HF_ENDPOINT".to_owned(), "http://127.0.0.1:9".to_owned()));
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let (s, ready) = admin.get("/health/ready").await;
    assert_eq!(s, 503, "{ready}");
    // The vector index takes its dimension from the encoder.
    assert_eq!(
        ready["error"]["details"]["failing"],
        json!(["encoder", "vectors"])
    );
    let (_, deps) = admin.get("/health/dependencies").await;
    let why = deps["dependencies"]["encoder"]["error"].as_str().unwrap();
    assert!(why.contains("encoder.model"), "{why}");
    let (s, _) = admin.post("/v1/embed", &json!({"text": "boots"})).await;
    assert_eq!(s, 503);
    let (s, _) = admin
        .post(
            "/v1/tenants/default/products",
            &json!({"external_id": "x", "title": "x"}),
        )
        .await;
    assert_eq!(s, 201);
}

async fn wait_for_job(client: &Client, job_id: &str) -> Value {
    harness::wait_for_job(client, job_id, Duration::from_secs(30)).await
}

#[tokio::test(flavor = "multi_thread")]
async fn product_writes_are_indexed_and_broken_images_end_failed_with_a_reason() {
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let images = image_server(0.0).await.addr;
        let mut setup = Setup::new(&catalog);
        setup.env.push((
            "VITRINE__MEDIA__ALLOW_PRIVATE_NETWORKS".to_owned(),
            "true".to_owned(),
        ));
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let mut products: Vec<Value> = (0..12)
            .map(|i| {
                json!({"external_id": format!("p{i}"), "title": format!("Product {i}"),
                       "image_url": format!("http://{images}/img/{i}.png"), "category": "c"})
            })
            .collect();
        products.push(json!({"external_id": "text-only", "title": "A product without an image"}));
        products.push(json!({"external_id": "broken", "title": "Broken image",
                             "image_url": format!("http://{images}/missing.png")}));
        let (s, batch) = admin
            .post(
                "/v1/tenants/default/products/batch",
                &json!({"products": products}),
            )
            .await;
        assert_eq!(s, 202, "{backend}: {batch}");
        let job = wait_for_job(&admin, batch["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        assert_eq!(job["result"]["indexed"], 13, "{backend}: {job}");
        assert_eq!(job["result"]["failed"], 1, "{backend}: {job}");
        assert_eq!(
            job["result"]["failures"][0]["external_id"], "broken",
            "{backend}: {job}"
        );
        assert_eq!(job["progress"], json!({"done": 14, "total": 14}), "{backend}");
        for id in ["p0", "p11", "text-only"] {
            let (_, p) = admin.get(&format!("/v1/tenants/default/products/{id}")).await;
            assert_eq!(p["index_status"], "indexed", "{backend} {id}: {p}");
        }
        let (_, broken) = admin.get("/v1/tenants/default/products/broken").await;
        assert_eq!(broken["index_status"], "failed", "{backend}");
        assert!(
            broken["index_error"].as_str().unwrap().contains("404"),
            "{backend}: {broken}"
        );

        // A text change re-indexes; a delete's job removes the vector.
        let (_, patched) = admin
            .send(
                Method::PATCH,
                "/v1/tenants/default/products/text-only",
                Some(&json!({"title": "Renamed"})),
            )
            .await;
        assert_eq!(patched["product"]["index_status"], "pending");
        let job = wait_for_job(&admin, patched["job_id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        let (s, _) = admin
            .send(Method::DELETE, "/v1/tenants/default/products/p3", None)
            .await;
        assert_eq!(s, 204);
        let (_, jobs) = admin.get("/v1/tenants/default/jobs?limit=1").await;
        let job = wait_for_job(&admin, jobs["jobs"][0]["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        assert_eq!(
            job["result"],
            json!({"indexed": 0, "failed": 0, "failures": []}),
            "{backend}"
        );
        drop(server);
        catalog.cleanup().await;
    }
}
