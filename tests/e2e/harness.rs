//! Starts the real `vitrine` binary on 127.0.0.1:0 against a fresh catalog
//! (SQLite in a temp dir, or a throwaway PostgreSQL schema) and talks HTTP.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

pub const ADMIN_KEY: &str = "e2e-admin-key-0123456789abcdef";

/// Which catalog a test runs against.
pub enum Catalog {
    Sqlite,
    Postgres(Box<PgSchema>),
}

impl Catalog {
    /// Every backend available here: SQLite always, PostgreSQL when
    /// `VITRINE_TEST_POSTGRES_URL` is set (CI sets it and requires it).
    pub async fn all() -> Vec<Catalog> {
        let mut v = vec![Catalog::Sqlite];
        if let Some(pg) = PgSchema::create().await {
            v.push(Catalog::Postgres(Box::new(pg)));
        }
        v
    }

    pub fn name(&self) -> &'static str {
        match self {
            Catalog::Sqlite => "sqlite",
            Catalog::Postgres(_) => "postgres",
        }
    }

    pub async fn cleanup(self) {
        if let Catalog::Postgres(pg) = self {
            pg.drop_schema().await;
        }
    }
}

/// A throwaway schema in the test database, reached through `search_path`.
pub struct PgSchema {
    pub url: String,
    admin: tokio_postgres::Client,
    schema: String,
}

impl PgSchema {
    pub async fn create() -> Option<Self> {
        let base = match std::env::var("VITRINE_TEST_POSTGRES_URL") {
            Ok(u) if !u.is_empty() => u,
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("VITRINE_TEST_POSTGRES_URL must be set in CI (.ci/run sets it)")
            }
            _ => {
                eprintln!("skipped the PostgreSQL half: set VITRINE_TEST_POSTGRES_URL to run it");
                return None;
            }
        };
        let (admin, conn) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
            .await
            .expect("connect to VITRINE_TEST_POSTGRES_URL");
        tokio::spawn(conn);
        let schema = format!("vitrine_e2e_{}", uuid::Uuid::new_v4().simple());
        admin
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create schema");
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{schema}");
        Some(Self { url, admin, schema })
    }

    async fn drop_schema(self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .await;
    }
}

enum Event {
    Listening(SocketAddr),
    Settled,
}

/// A running server process.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub logs: Arc<Mutex<Vec<String>>>,
    /// What the process wrote to stderr (also echoed to the test's own).
    pub stderr: Arc<Mutex<Vec<String>>>,
}

/// The data directory and settings one or more server runs share.
pub struct Setup {
    /// Kept alive for the runs' lifetime; removed on drop.
    data_dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl Setup {
    pub fn new(catalog: &Catalog) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut env = vec![
            ("VITRINE__SERVER__LISTEN".to_owned(), "127.0.0.1:0".to_owned()),
            ("VITRINE__AUTH__ADMIN_KEY".to_owned(), ADMIN_KEY.to_owned()),
            (
                "VITRINE__DATA_DIR".to_owned(),
                data_dir.path().display().to_string(),
            ),
            ("VITRINE__SERVER__SHUTDOWN_GRACE_SECS".to_owned(), "10".to_owned()),
            ("VITRINE__LOG__LEVEL".to_owned(), "info".to_owned()),
            (
                "VITRINE__ENCODER__MODEL".to_owned(),
                tiny_model_dir().display().to_string(),
            ),
            ("VITRINE__ENCODER__DEVICE".to_owned(), "cpu".to_owned()),
            // Tests send bursts from one address with a few keys; the rate
            // limit tests turn the limits back on.
            ("VITRINE__RATE_LIMITS__ENABLED".to_owned(), "false".to_owned()),
        ];
        if let Catalog::Postgres(pg) = catalog {
            env.push(("VITRINE__CATALOG__URL".to_owned(), pg.url.clone()));
        }
        Self { data_dir, env }
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.args(args);
        // Nothing from the developer's own environment leaks in.
        for (k, _) in std::env::vars() {
            if k.starts_with("VITRINE__") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts `vitrine serve` and waits for its `listening on` line.
    pub fn start(&self) -> Server {
        let mut child = self
            .command(&["serve"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vitrine");
        let stdout = child.stdout.take().expect("stdout");
        let stderr_pipe = child.stderr.take().expect("stderr");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines().map_while(Result::ok) {
                eprintln!("{line}");
                sink.lock().unwrap().push(line);
            }
        });
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let message = v["message"].as_str().unwrap_or_default();
                    if message.starts_with("listening on")
                        && let Some(addr) = v["addr"].as_str().and_then(|a| a.parse::<SocketAddr>().ok())
                    {
                        let _ = tx.send(Event::Listening(addr));
                    }
                    // The vector index opens once the encoder has loaded
                    // (or says why it cannot, when the encoder failed).
                    if message == "vector index ready" || message.starts_with("vector index unavailable") {
                        let _ = tx.send(Event::Settled);
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        // Ready to test once it listens and the encoder and the vector
        // index are up (or failed: tests of that case look at readiness
        // themselves).
        let (mut addr, mut settled) = (None, false);
        while addr.is_none() || !settled {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(Event::Listening(a)) => addr = Some(a),
                Ok(Event::Settled) => settled = true,
                Err(_) => {
                    let _ = child.kill();
                    panic!("server did not start; logs: {:#?}", logs.lock().unwrap());
                }
            }
        }
        let addr = addr.expect("address");
        Server {
            child,
            addr,
            logs,
            stderr,
        }
    }
}

/// A tiny CLIP of the real architecture (random weights), written once per
/// test process and loaded by the server through its real loading code.
pub fn tiny_model_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        vitrine::encoder::testing::write_tiny_checkpoint(dir.path(), &Default::default())
            .expect("write tiny CLIP");
        dir
    })
    .path()
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vitrine"))
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (it has not crashed or exited).
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("wait").is_none()
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for the process to exit.
    pub fn terminate(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        self.wait_exit()
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        for _ in 0..300 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("server did not exit within 15 s");
    }

    pub fn log_lines(&self) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A small JSON client bound to one server and one key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Client {
    pub fn new(server: &Server, key: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
            base: server.url(""),
            key: key.to_owned(),
        }
    }

    /// The same key against another server (a restart on another port).
    pub fn with_base(&self, server: &Server) -> Self {
        Self {
            base: server.url(""),
            ..self.clone()
        }
    }

    pub fn with_key(&self, key: &str) -> Self {
        Self {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, body)
    }

    /// The status of a POST, or `None` when the connection failed.
    pub async fn try_post(&self, path: &str, body: &Value) -> Option<u16> {
        let req = self
            .http
            .post(format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .json(body);
        req.send().await.ok().map(|r| r.status().as_u16())
    }

    /// Sends raw bytes (a plugin upload) with a content type.
    pub async fn put_bytes(&self, path: &str, bytes: Vec<u8>, content_type: &str) -> (u16, Value) {
        let res = self
            .http
            .put(format!("{}{}", self.base, path))
            .bearer_auth(&self.key)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("request");
        let status = res.status().as_u16();
        let text = res.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }
}

/// A local image server for indexing tests: `/img/N.png` serves a real PNG
/// (different per N); `/missing.png` answers 404. A `fail_rate` share of
/// `/img` requests, picked at random, answers 503 instead.
pub struct ImageServer {
    pub addr: SocketAddr,
    /// `/img` requests served and failed on purpose.
    pub served: Arc<std::sync::atomic::AtomicU64>,
    pub failed: Arc<std::sync::atomic::AtomicU64>,
}

pub async fn image_server(fail_rate: f64) -> ImageServer {
    use std::sync::atomic::{AtomicU64, Ordering};

    use axum::extract::Path;
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use axum::routing::get;
    let served = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (s, f) = (served.clone(), failed.clone());
    let app = axum::Router::new()
        .route(
            "/img/{n}",
            get(move |Path(n): Path<String>| {
                let (s, f) = (s.clone(), f.clone());
                async move {
                    if fail_rate > 0.0 && rand::random::<f64>() < fail_rate {
                        f.fetch_add(1, Ordering::Relaxed);
                        return StatusCode::SERVICE_UNAVAILABLE.into_response();
                    }
                    s.fetch_add(1, Ordering::Relaxed);
                    let seed: u32 = n.trim_end_matches(".png").parse().unwrap_or(0);
                    let img = image::RgbImage::from_fn(48, 40, |x, y| {
                        image::Rgb([
                            (x * 5 + seed * 40) as u8,
                            (y * 6 + seed * 13) as u8,
                            (seed * 77 + seed / 7) as u8,
                        ])
                    });
                    let mut out = Vec::new();
                    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
                        .unwrap();
                    ([(header::CONTENT_TYPE, "image/png")], out).into_response()
                }
            }),
        )
        .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    ImageServer { addr, served, failed }
}

/// Polls a job until it has finished.
pub async fn wait_for_job(client: &Client, job_id: &str, limit: Duration) -> Value {
    let start = std::time::Instant::now();
    loop {
        let (_, job) = client.get(&format!("/v1/jobs/{job_id}")).await;
        if matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
            return job;
        }
        assert!(
            start.elapsed() < limit,
            "job {job_id} did not finish in {limit:?}: {job}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Settings that make the job runner react quickly in tests: a dead
/// worker's lease runs out in 2 s, retries start after 100 ms.
pub fn fast_jobs(setup: &mut Setup) {
    for (k, v) in [
        ("VITRINE__JOBS__LEASE_SECS", "2"),
        ("VITRINE__JOBS__POLL_INTERVAL_MS", "100"),
        ("VITRINE__JOBS__RETRY_INITIAL_MS", "100"),
        ("VITRINE__JOBS__RETRY_MAX_MS", "1000"),
        ("VITRINE__MEDIA__ALLOW_PRIVATE_NETWORKS", "true"),
    ] {
        setup.env.push((k.to_owned(), v.to_owned()));
    }
}

/// Every product of a tenant, through the paginated list.
pub async fn all_products(client: &Client, tenant: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants/{tenant}/products?limit=500&cursor={c}"),
            None => format!("/v1/tenants/{tenant}/products?limit=500"),
        };
        let (s, page) = client.get(&path).await;
        assert_eq!(s, 200, "{page}");
        out.extend(page["products"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
}
