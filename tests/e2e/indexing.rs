//! Indexing end to end: the CLI import and reindex, a SIGKILL in the middle
//! of a reindex, and an image server that fails 30 % of requests.

use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{
    ADMIN_KEY, Catalog, Client, Setup, all_products, fast_jobs, image_server, wait_for_job,
};

fn product(i: usize, images: std::net::SocketAddr) -> Value {
    let category = ["boots", "hats", "bags"][i % 3];
    json!({
        "external_id": format!("p{i:05}"),
        "title": format!("Product {i}"),
        "category": category,
        "price": format!("{}.{:02}", i % 200, i % 100),
        "tags": [format!("t{}", i % 5)],
        "in_stock": i.is_multiple_of(2),
        "image_url": format!("http://{images}/img/{i}.png"),
    })
}

/// Sends products in batches of 1,000 and waits for every indexing job.
async fn import(admin: &Client, products: &[Value]) -> Vec<Value> {
    let mut jobs = Vec::new();
    for chunk in products.chunks(1000) {
        let (s, b) = admin
            .post("/v1/tenants/default/products/batch", &json!({"products": chunk}))
            .await;
        assert_eq!(s, 202, "{b}");
        jobs.push(b["job_id"].as_str().unwrap().to_owned());
    }
    let mut done = Vec::new();
    for id in jobs {
        done.push(wait_for_job(admin, &id, Duration::from_secs(300)).await);
    }
    done
}

async fn vector_count(admin: &Client) -> u64 {
    let (s, v) = admin.get("/v1/admin/vectors").await;
    assert_eq!(s, 200, "{v}");
    v["count"].as_u64().unwrap()
}

fn status_counts(products: &[Value]) -> (usize, usize, usize) {
    let of = |s: &str| products.iter().filter(|p| p["index_status"] == s).count();
    (of("indexed"), of("failed"), of("pending"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_a_reindex_then_restart_ends_with_everything_indexed() {
    const N: usize = 2000;
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let images = image_server(0.0).await.addr;
        let mut setup = Setup::new(&catalog);
        fast_jobs(&mut setup);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let products: Vec<Value> = (0..N).map(|i| product(i, images)).collect();
        for job in import(&admin, &products).await {
            assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        }
        assert_eq!(vector_count(&admin).await, N as u64, "{backend}");

        let (s, r) = admin.post("/v1/admin/reindex", &json!({})).await;
        assert_eq!(s, 202, "{backend}: {r}");
        let job_id = r["job_id"].as_str().unwrap().to_owned();
        // One reindex at a time.
        let (s, again) = admin.post("/v1/admin/reindex", &json!({})).await;
        assert_eq!(s, 409, "{backend}: {again}");
        assert_eq!(again["error"]["code"], "reindex_in_progress");
        // Kill it part-way, once it has written some of the new generation.
        let start = std::time::Instant::now();
        loop {
            let (_, job) = admin.get(&format!("/v1/jobs/{job_id}")).await;
            let done = job["progress"]["done"].as_u64().unwrap_or(0);
            if done >= 500 {
                assert!(
                    done < N as u64,
                    "{backend}: the reindex finished before the kill: {job}"
                );
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{backend}: no progress: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Searches still see the complete old generation.
        assert_eq!(vector_count(&admin).await, N as u64, "{backend}");
        server.kill9();

        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        // The dead worker's lease runs out (2 s) and the new process
        // takes the job over.
        let job = wait_for_job(&admin, &job_id, Duration::from_secs(300)).await;
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        assert_eq!(job["attempts"], 2, "{backend}: {job}");
        assert_eq!(job["result"]["indexed"], N, "{backend}: {job}");
        assert_eq!(job["result"]["vectors"], N, "{backend}: {job}");
        let all = all_products(&admin, "default").await;
        assert_eq!(all.len(), N, "{backend}");
        assert_eq!(status_counts(&all), (N, 0, 0), "{backend}");
        assert_eq!(vector_count(&admin).await, N as u64, "{backend}");
        for status in ["running", "queued"] {
            let (_, jobs) = admin
                .get(&format!("/v1/tenants/default/jobs?status={status}"))
                .await;
            assert_eq!(jobs["jobs"], json!([]), "{backend}: {status} jobs left");
        }
        drop(server);
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_server_failing_30_percent_ends_indexed_after_retries() {
    const N: usize = 300;
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let images = image_server(0.3).await;
        let mut setup = Setup::new(&catalog);
        fast_jobs(&mut setup);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let mut products: Vec<Value> = (0..N).map(|i| product(i, images.addr)).collect();
        // Permanent failures: the image is gone.
        for i in 0..4 {
            products.push(json!({"external_id": format!("gone{i}"), "title": "Gone",
                                 "image_url": format!("http://{}/missing.png", images.addr)}));
        }
        // Products are sent in small batches, so some jobs retry.
        let mut jobs = Vec::new();
        for chunk in products.chunks(50) {
            let (s, b) = admin
                .post("/v1/tenants/default/products/batch", &json!({"products": chunk}))
                .await;
            assert_eq!(s, 202, "{b}");
            jobs.push(b["job_id"].as_str().unwrap().to_owned());
        }
        for id in &jobs {
            let job = wait_for_job(&admin, id, Duration::from_secs(300)).await;
            assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        }
        let failed_on_purpose = images.failed.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            failed_on_purpose > 50,
            "{backend}: only {failed_on_purpose} failures injected"
        );
        assert!(images.served.load(std::sync::atomic::Ordering::Relaxed) >= N as u64);
        let all = all_products(&admin, "default").await;
        assert_eq!(status_counts(&all), (N, 4, 0), "{backend}");
        for p in all.iter().filter(|p| p["index_status"] == "failed") {
            assert!(
                p["external_id"].as_str().unwrap().starts_with("gone"),
                "{backend}: {p}"
            );
            assert!(
                p["index_error"].as_str().unwrap().contains("404"),
                "{backend}: {p}"
            );
        }
        assert_eq!(vector_count(&admin).await, N as u64, "{backend}");

        // A reindex under the same conditions ends the same way.
        let (s, r) = admin.post("/v1/admin/reindex", &json!({})).await;
        assert_eq!(s, 202, "{backend}: {r}");
        let job = wait_for_job(&admin, r["job_id"].as_str().unwrap(), Duration::from_secs(300)).await;
        assert_eq!(job["status"], "succeeded", "{backend}: {job}");
        assert_eq!(job["result"]["indexed"], N, "{backend}: {job}");
        assert_eq!(job["result"]["failed"], 4, "{backend}: {job}");
        assert_eq!(vector_count(&admin).await, N as u64, "{backend}");
        drop(server);
        catalog.cleanup().await;
    }
}

fn run_cli(setup: &Setup, args: &[&str]) -> (Output, Value) {
    let out = setup.command(args).output().expect("run vitrine");
    let summary = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON summary; stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, summary)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_imports_jsonl_and_csv_and_reindexes_following_the_jobs() {
    let catalog = Catalog::Sqlite;
    let images = image_server(0.0).await.addr;
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    let server = setup.start();
    let url = server.url("");
    let dir = tempfile::tempdir().unwrap();

    // JSONL: 12 good products (one with a broken image), a malformed line
    // and one the server refuses (negative price).
    let mut lines: Vec<String> = (0..11).map(|i| product(i, images).to_string()).collect();
    lines.push(
        json!({"external_id": "broken", "title": "Broken", "image_url": format!("http://{images}/missing.png")})
            .to_string(),
    );
    lines.push("{not json".to_owned());
    lines.push(json!({"external_id": "neg", "title": "Negative", "price": -1}).to_string());
    let jsonl = dir.path().join("catalog.jsonl");
    std::fs::write(&jsonl, lines.join("\n")).unwrap();
    let (out, s) = run_cli(
        &setup,
        &[
            "import",
            jsonl.to_str().unwrap(),
            "--url",
            &url,
            "--key",
            ADMIN_KEY,
            "--json",
            "--batch",
            "5",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "rejections make the run unsuccessful: {s}"
    );
    assert_eq!(s["products"], 14, "{s}");
    assert_eq!(s["accepted"], 12, "{s}");
    assert_eq!(
        s["rejected"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["line"].clone())
            .collect::<Vec<_>>(),
        [json!(13), json!(14)],
        "{s}"
    );
    assert!(
        s["rejected"][1]["error"].as_str().unwrap().contains("price"),
        "{s}"
    );
    assert_eq!(s["indexed"], 11, "{s}");
    assert_eq!(s["failed"], 1, "{s}");
    assert_eq!(s["failures"][0]["external_id"], "broken", "{s}");
    assert_eq!(s["jobs"].as_array().unwrap().len(), 3, "{s}");

    // CSV: everything valid → exit 0.
    let csv = dir.path().join("more.csv");
    std::fs::write(
        &csv,
        "external_id,title,price,tags,in_stock,category\n\
         c1,Red boots,19.90,leather|red,yes,boots\n\
         c2,Blue hat,5,,no,hats\n\
         c3,Green bag,,bags|green,true,bags\n",
    )
    .unwrap();
    let (out, s) = run_cli(
        &setup,
        &[
            "import",
            csv.to_str().unwrap(),
            "--url",
            &url,
            "--key",
            ADMIN_KEY,
            "--json",
        ],
    );
    assert!(out.status.success(), "{s}");
    assert_eq!(
        (s["accepted"].clone(), s["indexed"].clone()),
        (json!(3), json!(3)),
        "{s}"
    );
    let admin = Client::new(&server, ADMIN_KEY);
    let (_, c1) = admin.get("/v1/tenants/default/products/c1").await;
    assert_eq!(c1["tags"], json!(["leather", "red"]));
    assert_eq!(c1["price"], "19.90");
    assert_eq!(c1["index_status"], "indexed");

    // A full reindex through the CLI: the broken image fails again.
    let (out, s) = run_cli(&setup, &["reindex", "--url", &url, "--key", ADMIN_KEY, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert_eq!(
        (s["indexed"].clone(), s["failed"].clone()),
        (json!(14), json!(1)),
        "{s}"
    );
    assert_eq!(vector_count(&admin).await, 14);
    // One tenant, in place.
    let (out, s) = run_cli(
        &setup,
        &[
            "reindex", "--tenant", "default", "--url", &url, "--key", ADMIN_KEY, "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{s}");
    assert_eq!(s["indexed"], 14, "{s}");
    assert_eq!(vector_count(&admin).await, 14);

    // Errors are clear: a bad key, an unknown tenant, an unreadable file.
    let out = setup
        .command(&["reindex", "--url", &url, "--key", "wrong", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"), "{out:?}");
    let out = setup
        .command(&["reindex", "--tenant", "nobody", "--url", &url, "--key", ADMIN_KEY])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"), "{out:?}");
    let out = setup
        .command(&["import", "/nonexistent.jsonl", "--url", &url, "--key", ADMIN_KEY])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot read"),
        "{out:?}"
    );
    drop(server);
}
