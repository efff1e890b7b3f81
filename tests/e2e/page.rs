//! The search page in a real browser: headless Chromium driven through
//! chromedriver (Debian's `chromium` and `chromium-driver`), against the
//! real binary with a catalog loaded by `vitrine demo` (uploaded images).
//! Screenshots land in `target/tmp/page-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::harness::{ADMIN_KEY, Catalog, Client, Setup, fast_jobs};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether Chromium and chromedriver are installed; without them a test
/// says it was skipped, except in CI, where it fails.
fn browser_available(test: &str) -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI needs {CHROMIUM} and {CHROMEDRIVER} (.ci/run installs them)"
    );
    eprintln!("skipped: install Debian's chromium and chromium-driver to run the {test} test");
    false
}

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "chromedriver did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Driver { child, port }
}

async fn browser(driver: &Driver) -> Browser {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--force-device-scale-factor=1"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("connect to chromedriver")
}

fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(b: &Browser, name: &str) {
    let png = b.screenshot().await.unwrap();
    std::fs::write(screenshots_dir().join(format!("{name}.png")), png).unwrap();
}

/// Evaluates `expr` in the page until it is truthy (10 s at most); returns
/// its value.
async fn wait_for(b: &Browser, what: &str, expr: &str) -> Value {
    let start = Instant::now();
    loop {
        let v = b.execute(&format!("return ({expr});"), vec![]).await.unwrap();
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => !s.is_empty(),
            _ => true,
        };
        if truthy {
            return v;
        }
        if start.elapsed() > Duration::from_secs(10) {
            screenshot(b, &format!("failed-{}", what.replace(' ', "-"))).await;
            panic!("timed out waiting for {what} ({expr}); last value {v}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(b: &Browser, expr: &str) -> Value {
    b.execute(&format!("return ({expr});"), vec![]).await.unwrap()
}

async fn type_into(b: &Browser, id: &str, text: &str) {
    let e = b.find(Locator::Id(id)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

async fn click(b: &Browser, css: &str) {
    b.find(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

/// Ids of the results shown, in order.
async fn result_ids(b: &Browser) -> Vec<String> {
    let v = js(
        b,
        "[...document.querySelectorAll('#results .result')].map(r => r.dataset.id)",
    )
    .await;
    serde_json::from_value(v).unwrap()
}

/// Waits for a search to finish (results not busy) and returns its ids.
async fn settled_results(b: &Browser, what: &str) -> Vec<String> {
    wait_for(
        b,
        what,
        "document.querySelector('#results').getAttribute('aria-busy') !== 'true' \
         && !document.querySelector('#search-submit').disabled",
    )
    .await;
    result_ids(b).await
}

/// A picture per product: a coloured disc on a transparent ground, a
/// different colour and size for each, so that every image (and its
/// embedding) is its own.
fn write_pictures(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for (c, category) in ["bags", "hats", "shoes"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(category)).unwrap();
        for i in 0..10u32 {
            let color = [
                (40 + 20 * i) as u8,
                (80 * c as u32 % 255) as u8,
                (250 - 20 * i) as u8,
                255,
            ];
            let radius = 20.0 + 3.0 * i as f32;
            let img = image::RgbaImage::from_fn(96, 96, |x, y| {
                let (dx, dy) = (x as f32 - 48.0, y as f32 - 48.0 + c as f32 * 5.0);
                if (dx * dx + dy * dy).sqrt() < radius {
                    image::Rgba(color)
                } else {
                    image::Rgba([0, 0, 0, 0])
                }
            });
            let name = format!("{category}/{}_model_{i}_01.png", ["tote", "cap", "boot"][c]);
            img.save(dir.join(&name)).unwrap();
            files.push(name);
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn the_search_page_works_in_a_real_browser() {
    if !browser_available("page") {
        return;
    }
    let pictures = tempfile::tempdir().unwrap();
    let files = write_pictures(pictures.path());
    let mut setup = Setup::new(&Catalog::Sqlite);
    fast_jobs(&mut setup);
    let server = setup.start();
    let admin = Client::new(&server, ADMIN_KEY);

    // `vitrine demo` makes the tenant and imports one product per picture,
    // uploading each picture as the product's image.
    let out = setup
        .command(&[
            "demo",
            "--url",
            &server.url(""),
            "--key",
            ADMIN_KEY,
            "--dir",
            pictures.path().to_str().unwrap(),
            "--tenant",
            "shop",
            "--limit",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("demo: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(out.status.success(), "{summary}");
    assert_eq!(
        (
            summary["accepted"].as_u64(),
            summary["images"].as_u64(),
            summary["indexed"].as_u64(),
            summary["failed"].as_u64()
        ),
        (Some(30), Some(30), Some(30), Some(0))
    );
    assert_eq!(summary["rejected"], json!([]));
    let (_, p) = admin.get("/v1/tenants/shop/products/hats%2Fcap_model_3_01").await;
    assert_eq!(p["index_status"], "indexed", "{p}");
    assert_eq!(p["category"], "hats");
    assert!(p["stored_image"]["sha256"].is_string(), "{p}");
    let (s, key) = admin
        .post(
            "/v1/tenants/shop/keys",
            &json!({"scopes": ["search"], "label": "page"}),
        )
        .await;
    assert_eq!(s, 201, "{key}");
    let key = key["key"].as_str().unwrap().to_owned();

    let driver = start_driver();
    let b = browser(&driver).await;
    b.goto(&server.url("/?tenant=shop")).await.unwrap();
    assert_eq!(b.title().await.unwrap(), "Vitrine search");
    assert_eq!(js(&b, "document.querySelector('#tenant').value").await, "shop");

    // No key: a clear message, and nothing is sent.
    type_into(&b, "q", "boot").await;
    click(&b, "#search-submit").await;
    wait_for(
        &b,
        "no-key error",
        "document.querySelector('#error').dataset.code === 'no_key'",
    )
    .await;
    assert_eq!(js(&b, "document.querySelector('#error').hidden").await, false);
    let searches = "performance.getEntriesByType('resource').filter(e => e.name.includes('/search')).length";
    assert_eq!(js(&b, searches).await, 0, "nothing is sent without a key");
    screenshot(&b, "01-no-key").await;

    // A text search: a grid of results with their images, scores and latency.
    type_into(&b, "key", &key).await;
    click(&b, "#search-submit").await;
    wait_for(
        &b,
        "a full page",
        "document.querySelectorAll('#results .result').length === 24",
    )
    .await;
    let first_page = settled_results(&b, "text search").await;
    assert_eq!(first_page.len(), 24);
    assert_eq!(js(&b, "document.querySelector('#error').hidden").await, true);
    let summary = js(&b, "document.querySelector('#query-summary').textContent").await;
    assert!(summary.as_str().unwrap().contains("boot"), "{summary}");
    let latency = js(&b, "document.querySelector('#latency').textContent").await;
    assert!(latency.as_str().unwrap().contains("ms"), "{latency}");
    let plugins = js(&b, "document.querySelector('#plugins').textContent").await;
    assert!(plugins.as_str().unwrap().contains("no plugins"), "{plugins}");
    // Uploaded images come from the catalog, fetched with the key.
    wait_for(
        &b,
        "images",
        "[...document.querySelectorAll('#results .result img')].filter(i => i.complete && i.naturalWidth > 0).length >= 12",
    )
    .await;
    let score = js(
        &b,
        "document.querySelector('#results .result .score').textContent",
    )
    .await;
    assert!(score.as_str().unwrap().contains('.'), "{score}");
    assert!(latency.as_str().unwrap().contains("hybrid search"), "{latency}");
    // Facets beside the results: every product in one category or another.
    wait_for(&b, "facets", "!document.querySelector('#facets').hidden").await;
    let counted = js(
        &b,
        "[...document.querySelectorAll('#facet-category .facet-count')].map(c => Number(c.textContent)).reduce((a, b) => a + b, 0)",
    )
    .await;
    assert_eq!(counted, 30);
    screenshot(&b, "02-text-search").await;

    // Pagination: the six others on page 2, and back.
    click(&b, "#next-page").await;
    wait_for(
        &b,
        "page 2",
        "document.querySelector('#page-number').textContent.includes('2')",
    )
    .await;
    let second_page = settled_results(&b, "page 2").await;
    assert_eq!(second_page.len(), 6, "{second_page:?}");
    assert!(second_page.iter().all(|id| !first_page.contains(id)));
    assert_eq!(
        js(&b, "document.querySelector('#next-page').disabled").await,
        true
    );
    click(&b, "#prev-page").await;
    wait_for(
        &b,
        "page 1",
        "document.querySelector('#page-number').textContent.includes('1')",
    )
    .await;
    assert_eq!(settled_results(&b, "page 1").await, first_page);

    // A filter: hats only.
    type_into(&b, "filter-category", "hats").await;
    click(&b, "#apply-filters").await;
    wait_for(
        &b,
        "hats only",
        "document.querySelectorAll('#results .result').length === 10 && \
         [...document.querySelectorAll('#results .result .category')].every(c => c.textContent.includes('hats'))",
    )
    .await;
    // The category facet now shows the filter in force.
    wait_for(
        &b,
        "pressed facet",
        "[...document.querySelectorAll('#facet-category .facet-button')].some(b => b.textContent === 'hats' && b.getAttribute('aria-pressed') === 'true')",
    )
    .await;
    screenshot(&b, "03-filtered").await;
    // Clicking the pressed facet lifts the filter; clicking another sets it.
    click(&b, "#facet-category .facet-button[aria-pressed='true']").await;
    wait_for(
        &b,
        "filter lifted",
        "document.querySelector('#filter-category').value === '' && document.querySelectorAll('#results .result').length === 24",
    )
    .await;
    js(
        &b,
        "[...document.querySelectorAll('#facet-category .facet-button')].find(b => b.textContent === 'hats').click()",
    )
    .await;
    wait_for(
        &b,
        "hats by facet",
        "document.querySelector('#filter-category').value === 'hats' && document.querySelectorAll('#results .result').length === 10 && \
         [...document.querySelectorAll('#results .result .category')].every(c => c.textContent.includes('hats'))",
    )
    .await;

    // More like this, on the first hat.
    let hat = result_ids(&b).await[0].clone();
    click(&b, "#results .result .more-like-this").await;
    wait_for(
        &b,
        "more like this",
        "document.querySelector('#query-summary').textContent.includes('like')",
    )
    .await;
    let similar = settled_results(&b, "more like this").await;
    assert!(
        !similar.is_empty() && !similar.contains(&hat),
        "{hat}: {similar:?}"
    );
    screenshot(&b, "04-more-like-this").await;

    // Image search by the file picker, without filters: the product whose
    // picture it is comes first (the same image has the same embedding).
    type_into(&b, "filter-category", "").await;
    let wanted = &files[17];
    let input = b.find(Locator::Id("image-input")).await.unwrap();
    input
        .send_keys(pictures.path().join(wanted).to_str().unwrap())
        .await
        .unwrap();
    wait_for(
        &b,
        "image search",
        "document.querySelector('#query-summary').textContent.includes('image')",
    )
    .await;
    wait_for(
        &b,
        "image results",
        "document.querySelectorAll('#results .result').length > 0",
    )
    .await;
    let by_image = settled_results(&b, "image search").await;
    assert_eq!(by_image[0], wanted.trim_end_matches(".png"), "{by_image:?}");
    screenshot(&b, "05-image-search").await;

    // A ranker plugin, and a search from the keyboard: the page shows the
    // plugin's outcome.
    let (s, r) = admin
        .put_bytes(
            "/v1/tenants/shop/plugins/boost?world=ranker",
            vitrine_plugin_artifacts::bytes(vitrine_plugin_artifacts::PRICE_BOOST),
            "application/wasm",
        )
        .await;
    assert_eq!(s, 201, "{r}");
    let (s, r) = admin
        .post("/v1/tenants/shop/plugins/boost/activate", &json!({"version": 1}))
        .await;
    assert_eq!(s, 200, "{r}");
    click(&b, "#clear-image").await;
    type_into(&b, "q", "tote").await;
    b.find(Locator::Id("q"))
        .await
        .unwrap()
        .send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    wait_for(
        &b,
        "plugin outcome",
        "document.querySelector('#plugins').textContent.includes('boost')",
    )
    .await;
    let plugins = js(&b, "document.querySelector('#plugins').textContent").await;
    assert!(plugins.as_str().unwrap().contains("ok"), "{plugins}");
    assert_eq!(settled_results(&b, "ranked").await.len(), 24);
    screenshot(&b, "06-ranker").await;
    // Every control has a label.
    assert_eq!(
        js(&b, "[...document.querySelectorAll('input, button')].every(e => e.labels === null || e.labels.length > 0 || e.textContent.trim() || e.getAttribute('aria-label'))").await,
        true
    );

    // An error state: a key the server does not know.
    type_into(&b, "key", "vk_not-a-real-key").await;
    type_into(&b, "q", "cap").await;
    click(&b, "#search-submit").await;
    wait_for(
        &b,
        "401",
        "document.querySelector('#error').dataset.code === 'unauthorized'",
    )
    .await;
    let message = js(&b, "document.querySelector('#error').textContent").await;
    assert!(!message.as_str().unwrap().is_empty());
    screenshot(&b, "07-unauthorized").await;
    // The key stays in the tab only, and out of every URL the page loaded.
    assert_eq!(js(&b, "window.localStorage.length").await, 0);
    assert_eq!(js(&b, "document.cookie").await, "");
    let in_urls = format!(
        "performance.getEntriesByType('resource').filter(e => e.name.includes({})).length",
        json!(key)
    );
    assert_eq!(js(&b, &in_urls).await, 0);
    assert!(js(&b, searches).await.as_u64().unwrap() >= 6);

    // Not ready: a server whose model cannot load answers search with 503,
    // and the page says so (another origin: the tab's key is not shared).
    let mut broken = Setup::new(&Catalog::Sqlite);
    broken.env.retain(|(k, _)| k != "VITRINE__ENCODER__MODEL");
    broken.env.extend([
        (
            "VITRINE__ENCODER__MODEL".to_owned(),
            "openai/clip-vit-base-patch32".to_owned(),
        ),
        ("HF_ENDPOINT".to_owned(), "http://127.0.0.1:9".to_owned()),
    ]);
    let down = broken.start();
    b.goto(&down.url("/")).await.unwrap();
    assert_eq!(js(&b, "document.querySelector('#key').value").await, "");
    type_into(&b, "key", ADMIN_KEY).await;
    type_into(&b, "q", "boots").await;
    click(&b, "#search-submit").await;
    wait_for(
        &b,
        "503",
        "document.querySelector('#error').textContent.includes('not ready')",
    )
    .await;
    screenshot(&b, "08-not-ready").await;

    b.close().await.unwrap();
    drop(down);
    drop(server);
}

/// `/docs` in a real browser: Swagger UI, served from the binary under its
/// CSP, loads `/openapi.json`, lists every operation and opens one, with
/// nothing loaded from anywhere else.
#[tokio::test(flavor = "multi_thread")]
async fn the_api_reference_works_in_a_real_browser() {
    if !browser_available("reference") {
        return;
    }
    let setup = Setup::new(&Catalog::Sqlite);
    let server = setup.start();
    let doc: Value = reqwest::get(server.url("/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let driver = start_driver();
    let b = browser(&driver).await;
    b.goto(&server.url("/docs")).await.unwrap();
    // What the CSP blocks from here on (opening an operation renders its
    // schemas and examples) is recorded.
    b.execute(
        "window.__violations = []; document.addEventListener('securitypolicyviolation', \
         e => window.__violations.push(e.blockedURI + ' ' + e.violatedDirective)); return 0;",
        vec![],
    )
    .await
    .unwrap();
    let shown = wait_for(
        &b,
        "operations listed",
        &format!("document.querySelectorAll('.opblock').length >= {operations} && document.querySelectorAll('.opblock').length"),
    )
    .await;
    assert_eq!(shown.as_u64(), Some(operations as u64));
    assert_eq!(js(&b, "document.title").await, "Vitrine API reference");
    let title = js(&b, "document.querySelector('.info .title').textContent").await;
    assert!(title.as_str().unwrap().contains("Vitrine"), "{title}");
    click(&b, "#operations-search-search .opblock-summary").await;
    wait_for(
        &b,
        "an operation opened",
        "document.querySelector('#operations-search-search .opblock-body')",
    )
    .await;
    screenshot(&b, "docs").await;
    // Every resource came from this server.
    let foreign = js(
        &b,
        &format!(
            "performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith('{}'))",
            server.url("")
        ),
    )
    .await;
    assert_eq!(foreign, json!([]), "requests off this origin");
    assert_eq!(js(&b, "window.__violations").await, json!([]), "CSP violations");
    b.close().await.unwrap();
}
