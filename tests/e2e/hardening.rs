//! Hostile clients and failing dependencies against the real binary: slow
//! and idle connections, oversized and odd requests, a catalog that goes
//! away mid-search, a query image that never comes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::harness::{ADMIN_KEY, Catalog, Client, Server, Setup, fast_jobs, wait_for_job};
use crate::tenant_key;

/// Reads what the server sends until it closes the connection (or `limit`
/// passes), and how long that took.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionReset) => break,
            Err(e) => panic!(
                "the server kept the connection open past {limit:?} ({e}); got {:?}",
                String::from_utf8_lossy(&out)
            ),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), start.elapsed())
}

/// Reads one answer: its head and a `Content-Length` body.
fn read_answer(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_owned())
                })
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if !head.contains(" 100 ") && body.len() >= length {
                return text;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) => return text,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => panic!("no whole answer ({e}); got {text:?}"),
        }
    }
}

/// Sends raw bytes on a fresh connection and returns the whole answer.
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(bytes).unwrap();
    read_until_closed(&mut s, Duration::from_secs(10)).0
}

/// The status and JSON body of a raw HTTP/1.1 answer; panics unless the
/// body is the contract's JSON error.
fn json_error(answer: &str) -> (u16, Value) {
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no head: {answer:?}"));
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap();
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{answer}"
    );
    let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer:?}"));
    assert!(body["error"]["code"].is_string(), "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_idle_and_greedy_clients_are_shed() {
    let catalog = Catalog::Sqlite;
    let mut setup = Setup::new(&catalog);
    for (k, v) in [
        ("VITRINE__SERVER__HEADER_READ_TIMEOUT_SECS", "1"),
        ("VITRINE__SERVER__KEEP_ALIVE_TIMEOUT_SECS", "2"),
        ("VITRINE__SERVER__BODY_READ_TIMEOUT_SECS", "2"),
        ("VITRINE__SERVER__REQUEST_TIMEOUT_SECS", "5"),
    ] {
        setup.env.push((k.to_owned(), v.to_owned()));
    }
    let server = setup.start();
    let addr = server.addr;
    let limit = Duration::from_secs(6);

    // A connection that sends nothing: closed after the header timeout.
    let mut idle = TcpStream::connect(addr).unwrap();
    // Half a request head, then nothing: closed after the header timeout.
    let mut half = TcpStream::connect(addr).unwrap();
    half.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A kept-alive connection after one answer: closed once idle 2 s.
    let mut kept = TcpStream::connect(addr).unwrap();
    kept.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (answer, took) = read_until_closed(&mut idle, limit);
    assert!(
        answer.is_empty() && took < Duration::from_secs(4),
        "{answer:?} after {took:?}"
    );
    let (answer, took) = read_until_closed(&mut half, limit);
    assert!(
        answer.is_empty() && took < Duration::from_secs(4),
        "{answer:?} after {took:?}"
    );
    let (answer, took) = read_until_closed(&mut kept, limit);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        took < Duration::from_secs(5),
        "kept-alive connection open for {took:?}"
    );

    // A body that trickles: 408 with the contract's body once the body
    // deadline passes, and the connection closed.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(
        format!(
            "POST /v1/tenants HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"id\":"
        )
        .as_bytes(),
    )
    .unwrap();
    let (answer, took) = read_until_closed(&mut slow, limit);
    let (status, body) = json_error(&answer);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (408, Some("body_timeout")),
        "{body}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");

    // A body announced larger than the route takes: 413 at once, without
    // `100 Continue`, before any of it is sent.
    let mut big = TcpStream::connect(addr).unwrap();
    big.write_all(
        b"POST /v1/tenants/t/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
          Content-Length: 2000000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let start = Instant::now();
    let answer = read_answer(&mut big);
    let took = start.elapsed();
    assert!(!answer.contains("100 Continue"), "{answer}");
    let (status, body) = json_error(&answer);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    // The same without `Expect`, from a client that sends on: it still
    // reads the 413 (the connection is not reset under it).
    let mut eager = TcpStream::connect(addr).unwrap();
    eager
        .write_all(
            b"POST /v1/tenants/t/products HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 3000000\r\n\r\n",
        )
        .unwrap();
    let _ = eager.write_all(&vec![b' '; 3_000_000]);
    let (status, _) = json_error(&read_answer(&mut eager));
    assert_eq!(status, 413);
    drop((big, eager, slow));

    // What the connection layer did is in the metrics.
    let metrics = Client::new(&server, ADMIN_KEY).metrics().await;
    let count = |family: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(family).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("{family} missing from:\n{metrics}"))
    };
    assert!(count("vitrine_http_connections_timed_out_total ") >= 3.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_client_address_holds_at_most_its_cap() {
    let catalog = Catalog::Sqlite;
    let mut setup = Setup::new(&catalog);
    setup.env.push((
        "VITRINE__SERVER__MAX_CONNECTIONS_PER_IP".to_owned(),
        "6".to_owned(),
    ));
    let server = setup.start();
    let addr = server.addr;
    // Six kept-alive connections, each known to be counted: it answered.
    let mut held = Vec::new();
    for _ in 0..6 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(read_answer(&mut s).starts_with("HTTP/1.1 200"));
        held.push(s);
    }
    // The seventh gets a 503 with the contract's body, then is closed.
    let answer = raw(addr, b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n");
    let (status, body) = json_error(&answer);
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("too_many_connections"))
    );
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    // Room comes back as they close.
    drop(held);
    let start = Instant::now();
    loop {
        let answer = raw(
            addr,
            b"GET /health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        );
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = Client::new(&server, ADMIN_KEY).metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("vitrine_http_connections_refused_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_bytes_and_odd_routes_get_the_contract_s_errors() {
    for catalog in Catalog::all().await {
        let backend = catalog.name();
        let setup = Setup::new(&catalog);
        let server = setup.start();
        let admin = Client::new(&server, ADMIN_KEY);
        let key = tenant_key(&admin, "t", &["search", "write", "plugins"]).await;
        let shop = admin.with_key(&key);
        let addr = server.addr;
        let auth = format!("Authorization: Bearer {ADMIN_KEY}\r\n");

        // NUL and invalid UTF-8 in paths and query values: 400 before any
        // storage sees them, on both catalogs.
        for (method, path, code) in [
            (
                Method::GET,
                "/v1/tenants/t/products?category=%00",
                "invalid_parameter",
            ),
            (
                Method::GET,
                "/v1/tenants/t/products?category=%FF",
                "invalid_parameter",
            ),
            (Method::DELETE, "/v1/tenants/t/keys/%00", "invalid_path"),
            (Method::GET, "/v1/jobs/%00", "invalid_path"),
            (Method::GET, "/v1/jobs/%FF", "invalid_path"),
            (Method::GET, "/v1/tenants/t/products/a%00b", "invalid_path"),
        ] {
            let (s, b) = admin.send(method.clone(), path, None).await;
            assert_eq!(
                (s, b["error"]["code"].as_str()),
                (400, Some(code)),
                "{backend} {method} {path}: {b}"
            );
        }
        // NUL in any JSON string, however deep: 400 naming the field.
        for (path, body, field) in [
            (
                "/v1/tenants/t/products",
                json!({"external_id": "x", "title": "a\u{0}b"}),
                "title",
            ),
            (
                "/v1/tenants/t/products",
                json!({"external_id": "x", "title": "ok", "metadata": {"k": ["v", "\u{0}"]}}),
                "metadata.k.1",
            ),
            ("/v1/tenants/t/search", json!({"text": "boots\u{0}"}), "text"),
            (
                "/v1/tenants/t/search",
                json!({"text": "boots", "user_id": "u\u{0}"}),
                "user_id",
            ),
            (
                "/v1/tenants/t/plugins/p/activate",
                json!({"params": {"a": "\u{0}"}}),
                "params.a",
            ),
        ] {
            let (s, b) = shop.post(path, &body).await;
            assert_eq!(
                (
                    s,
                    b["error"]["code"].as_str(),
                    b["error"]["details"]["field"].as_str()
                ),
                (400, Some("invalid_character"), Some(field)),
                "{backend} {path}: {b}"
            );
        }

        // Requests hyper refuses before the router still get JSON bodies.
        let too_many_headers: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
        for (request, status) in [
            (b"GET /v1/jobs/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
            (
                format!("GET /health/live HTTP/1.1\r\nHost: x\r\n{too_many_headers}\r\n").into_bytes(),
                431,
            ),
            (
                format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
                414,
            ),
            (
                format!(
                    "POST /v1/tenants HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 2\r\nContent-Length: 3\r\n\r\n{{}}"
                )
                .into_bytes(),
                400,
            ),
        ] {
            let answer = raw(addr, &request);
            assert_eq!(json_error(&answer).0, status, "{backend}: {answer}");
        }

        // Paths are UTF-8: a raw `ü` finds the product `ü`.
        let (s, b) = shop
            .post(
                "/v1/tenants/t/products",
                &json!({"external_id": "ü", "title": "Umlaut"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let answer = raw(
            addr,
            format!("GET /v1/tenants/t/products/ü HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        );
        assert!(answer.starts_with("HTTP/1.1 200"), "{backend}: {answer}");
        assert!(answer.contains("\"external_id\":\"ü\""), "{answer}");

        // `batch` is an external id like any other.
        let (s, b) = shop
            .post(
                "/v1/tenants/t/products",
                &json!({"external_id": "batch", "title": "Batch"}),
            )
            .await;
        assert_eq!(s, 201, "{b}");
        let (s, b) = shop.get("/v1/tenants/t/products/batch").await;
        assert_eq!((s, b["title"].as_str()), (200, Some("Batch")), "{b}");
        let (s, b) = shop
            .send(
                Method::PATCH,
                "/v1/tenants/t/products/batch",
                Some(&json!({"title": "Lot"})),
            )
            .await;
        assert_eq!((s, b["product"]["title"].as_str()), (200, Some("Lot")), "{b}");
        let (s, _) = shop
            .send(Method::DELETE, "/v1/tenants/t/products/batch", None)
            .await;
        assert_eq!(s, 204);
        let (s, _) = shop.get("/v1/tenants/t/products/batch").await;
        assert_eq!(s, 404);

        // Prices in the documented format only.
        for price in ["1_000", " 1", "1e3", "0x10", "1.", ".5", "+1", "1,5"] {
            let (s, b) = shop
                .post(
                    "/v1/tenants/t/products",
                    &json!({"external_id": "p", "title": "P", "price": price}),
                )
                .await;
            assert_eq!(
                (s, b["error"]["code"].as_str()),
                (400, Some("invalid_price")),
                "{price}: {b}"
            );
        }

        // Searches still log, for this tenant and the next.
        let (s, b) = shop
            .post("/v1/tenants/t/search", &json!({"text": "umlaut"}))
            .await;
        assert_eq!(s, 200, "{b}");
        let mut logged = false;
        for _ in 0..50 {
            let (_, stats) = shop.get("/v1/tenants/t/analytics/queries").await;
            if stats.to_string().contains("umlaut") {
                logged = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(logged, "{backend}: the search was not logged");

        // Every response was counted, 404s under `unmatched`.
        let (s, _) = admin.get("/no/such/route").await;
        assert_eq!(s, 404);
        let metrics = admin.metrics().await;
        assert!(
            metrics.contains(r#"vitrine_http_requests_total{route="unmatched",method="GET",status="404"}"#),
            "{metrics}"
        );
        assert!(metrics.contains(r#"status="400""#));
        drop(server);
        catalog.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_family_is_there_at_start_up() {
    let catalog = Catalog::Sqlite;
    let setup = Setup::new(&catalog);
    let server = setup.start();
    let metrics = Client::new(&server, ADMIN_KEY).metrics().await;
    for family in [
        "vitrine_http_connections ",
        "vitrine_http_connections_refused_total ",
        "vitrine_decode_pixels_in_use ",
        r#"vitrine_jobs{kind="index_product",status="queued"} 0"#,
        r#"vitrine_jobs_finished_total{kind="index_product",outcome="succeeded"} 0"#,
        r#"vitrine_catalog_pool_connections{state="size"}"#,
        r#"vitrine_catalog_pool_connections{state="in_use"}"#,
        r#"vitrine_search_text_cache_total{outcome="hit"} 0"#,
        r#"vitrine_search_text_cache_total{outcome="miss"} 0"#,
        "vitrine_vectors 0",
        "vitrine_search_logs_dropped_total 0",
        "vitrine_encoder_rejected_total 0",
        "# HELP vitrine_job_duration_seconds",
    ] {
        assert!(metrics.contains(family), "{family} missing from:\n{metrics}");
    }
}

/// A TCP proxy that can be cut (every connection dropped, new ones
/// refused) and restored on the same port.
struct Proxy {
    addr: SocketAddr,
    target: SocketAddr,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut p = Self {
            addr,
            target,
            task: None,
        };
        p.serve(listener);
        p
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                conns.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                    let _ = inbound.shutdown().await;
                });
            }
        }));
    }

    /// Drops the listener and every open connection (the JoinSet aborts
    /// its tasks when the accept task is aborted).
    async fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// Searches in a loop while the dependency behind `proxy` goes away and
/// comes back: every answer is 200 or 503 with `Retry-After` (never 500),
/// at least one is 503, and 200s come back after.
async fn search_through_an_outage(shop: &Client, proxy: &mut Proxy, what: &str) {
    let search = |i: usize| async move {
        shop.send(
            Method::POST,
            "/v1/tenants/t/search",
            Some(&json!({"text": format!("red boots {i}")})),
        )
        .await
    };
    let (s, b) = search(0).await;
    assert_eq!(s, 200, "{what} before the outage: {b}");
    proxy.cut().await;
    let mut unavailable = 0;
    let start = Instant::now();
    let mut i = 1;
    while start.elapsed() < Duration::from_secs(4) {
        let (s, b) = search(i).await;
        i += 1;
        match s {
            200 => {}
            503 => {
                assert_eq!(b["error"]["code"].as_str(), Some("unavailable"), "{what}: {b}");
                unavailable += 1;
            }
            other => panic!("{what} outage answered {other}: {b}"),
        }
    }
    assert!(unavailable > 0, "no search noticed the {what} outage");
    proxy.restore().await;
    let start = Instant::now();
    loop {
        let (s, b) = search(i).await;
        i += 1;
        if s == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{what} never came back: {s} {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_catalog_or_vector_outage_answers_503_then_recovers() {
    let Some(pg) = crate::harness::PgSchema::create().await else {
        return;
    };
    let mut url = url::Url::parse(&pg.url).unwrap();
    let target: SocketAddr = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap_or(5432))
        .parse()
        .unwrap();
    let mut pg_proxy = Proxy::start(target).await;
    url.set_port(Some(pg_proxy.addr.port())).unwrap();
    let catalog = Catalog::Postgres(Box::new(pg));
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    setup.env.retain(|(k, _)| k != "VITRINE__CATALOG__URL");
    setup.env.push(("VITRINE__CATALOG__URL".into(), url.to_string()));
    // The Qdrant half, behind its own proxy, when a server is given.
    let mut qdrant_proxy = None;
    match std::env::var("QDRANT_URL") {
        Ok(q) if !q.is_empty() => {
            let mut qurl = url::Url::parse(&q).unwrap();
            let qtarget: SocketAddr = format!("{}:{}", qurl.host_str().unwrap(), qurl.port().unwrap_or(6334))
                .parse()
                .unwrap();
            let proxy = Proxy::start(qtarget).await;
            qurl.set_port(Some(proxy.addr.port())).unwrap();
            setup.env.push(("VITRINE__VECTORS__URL".into(), qurl.to_string()));
            setup
                .env
                .push(("VITRINE__VECTORS__TIMEOUT_SECS".into(), "2".into()));
            qdrant_proxy = Some(proxy);
        }
        _ => eprintln!("skipped the Qdrant outage half: set QDRANT_URL to run it"),
    }
    let server: Server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let key = tenant_key(&admin, "t", &["search", "write"]).await;
    let shop = admin.with_key(&key);
    let (s, b) = shop
        .post(
            "/v1/tenants/t/products",
            &json!({"external_id": "b1", "title": "Red boots"}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    wait_for_job(&shop, b["job_id"].as_str().unwrap(), Duration::from_secs(30)).await;

    search_through_an_outage(&shop, &mut pg_proxy, "PostgreSQL").await;
    if let Some(proxy) = qdrant_proxy.as_mut() {
        search_through_an_outage(&shop, proxy, "Qdrant").await;
    }
    // Nothing was lost meanwhile.
    let (s, b) = shop.get("/v1/tenants/t/products/b1").await;
    assert_eq!((s, b["index_status"].as_str()), (200, Some("indexed")), "{b}");
    drop(server);
    catalog.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_query_image_that_does_not_come_is_422_at_once() {
    // An image server that accepts and never answers, counting attempts.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let slow = listener.local_addr().unwrap();
    let attempts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = attempts.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(s);
        }
    });
    let catalog = Catalog::Sqlite;
    let mut setup = Setup::new(&catalog);
    fast_jobs(&mut setup);
    setup
        .env
        .push(("VITRINE__MEDIA__FETCH_TIMEOUT_SECS".into(), "1".into()));
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);
    let key = tenant_key(&admin, "t", &["search"]).await;
    let shop = admin.with_key(&key);
    for url in [
        format!("http://{slow}/a.jpg"),
        "http://127.0.0.1:1/refused.jpg".to_owned(),
    ] {
        let start = Instant::now();
        let res = reqwest::Client::new()
            .post(server.url("/v1/tenants/t/search"))
            .bearer_auth(&key)
            .json(&json!({"image_url": url}))
            .send()
            .await
            .unwrap();
        let took = start.elapsed();
        assert_eq!(res.status().as_u16(), 422, "{url}");
        assert!(res.headers().get("retry-after").is_none(), "{url}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], "image_unreachable", "{body}");
        // One attempt of 1 s, not three with pauses between.
        assert!(took < Duration::from_secs(5), "{url}: {took:?}");
    }
    assert_eq!(attempts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let _ = shop;
}
