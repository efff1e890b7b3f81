//! Typed settings, layered: built-in defaults (`config/default.toml`,
//! embedded in the binary) → `--config FILE` (TOML) → environment
//! `VITRINE__SECTION__KEY`. Unknown keys are errors, and every validation
//! error names the key to change. Secrets never appear in `Debug` output.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// The built-in defaults: the embedded single node.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Settings read from the environment as plain strings, never parsed.
const VERBATIM_ENV_KEYS: [&str; 6] = [
    "auth.admin_key",
    "catalog.url",
    "blobs.url",
    "encoder.model",
    "vectors.url",
    "vectors.api_key",
];

/// Shortest admin key accepted in production (API.md).
pub const MIN_ADMIN_KEY_BYTES: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid setting `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("cannot read the config file {path}: {message}")]
    File { path: PathBuf, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub env: Environment,
    pub data_dir: PathBuf,
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub rate_limits: RateLimitSettings,
    pub catalog: CatalogSettings,
    pub encoder: EncoderSettings,
    pub media: MediaSettings,
    pub blobs: BlobsSettings,
    pub vectors: VectorsSettings,
    pub jobs: JobsSettings,
    pub search: SearchSettings,
    pub plugins: PluginsSettings,
    pub log: LogSettings,
    pub edge: EdgeSettings,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsSettings {
    /// Memory one plugin call may use, MiB, unless the tenant set its own
    /// cap on activation.
    pub memory_mb: u64,
    /// Highest memory cap a tenant may set, MiB.
    pub max_memory_mb: u64,
    /// Deadlines per call (instantiation included), milliseconds.
    pub filter_deadline_ms: u64,
    pub ranker_deadline_ms: u64,
    pub ingest_deadline_ms: u64,
    /// Fuel per call: a second guard behind the deadline.
    pub fuel: u64,
    /// Plugin calls running at once on this process; 0: four per core.
    pub max_concurrent_calls: usize,
    /// Plugin calls one tenant may run at once; 0: a quarter of
    /// `max_concurrent_calls`.
    pub max_concurrent_calls_per_tenant: usize,
    /// Longest a plugin compilation may take (an upload past it is
    /// refused), milliseconds.
    pub compile_timeout_ms: u64,
    /// Candidates (top-K') handed to filter and ranker plugins.
    pub candidates: usize,
    /// Use wasmtime's pooling allocator when the machine allows it.
    pub pooling: bool,
}

/// The edge role (DESIGN.md "Roles"): with `origin_url` set this node is a
/// read replica of that origin.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeSettings {
    /// The origin's base URL (`https://origin.example:8080`); unset: this
    /// node is an origin.
    pub origin_url: Option<String>,
    /// A key of the origin with the `replicate` scope.
    pub key: Option<SecretString>,
    /// Lag beyond which the edge reports itself not ready.
    pub max_staleness_secs: u64,
    /// Replicate only these tenants (empty: every tenant).
    pub tenants: Vec<String>,
    /// Products per snapshot page while bootstrapping (1 to 2,000): what
    /// one page holds in memory, and how much a crash makes the edge fetch
    /// again.
    pub bootstrap_page_size: u32,
}

impl fmt::Debug for EdgeSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdgeSettings")
            .field("origin_url", &self.origin_url.as_deref().map(redact_url))
            .field("key", &self.key.as_ref().map(|_| "[redacted]"))
            .field("max_staleness_secs", &self.max_staleness_secs)
            .field("tenants", &self.tenants)
            .field("bootstrap_page_size", &self.bootstrap_page_size)
            .finish()
    }
}

impl EdgeSettings {
    /// Whether this node is an edge replica.
    pub fn is_edge(&self) -> bool {
        self.origin_url.is_some()
    }

    fn validate(&self, catalog_url: bool, vectors_url: bool) -> Result<(), ConfigError> {
        let Some(url) = &self.origin_url else {
            if self.key.is_some() || !self.tenants.is_empty() {
                return Err(ConfigError::invalid(
                    "edge.origin_url",
                    "edge.key and edge.tenants need edge.origin_url",
                ));
            }
            return Ok(());
        };
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if parsed.is_none() {
            return Err(ConfigError::invalid(
                "edge.origin_url",
                "must be an http:// or https:// URL of the origin",
            ));
        }
        if self
            .key
            .as_ref()
            .is_none_or(|k| k.expose_secret().trim().is_empty())
        {
            return Err(ConfigError::invalid(
                "edge.key",
                "an edge needs a key of the origin with the `replicate` scope",
            ));
        }
        if !(1..=2000).contains(&self.bootstrap_page_size) {
            return Err(ConfigError::invalid(
                "edge.bootstrap_page_size",
                "must be between 1 and 2000",
            ));
        }
        if self.max_staleness_secs == 0 {
            return Err(ConfigError::invalid(
                "edge.max_staleness_secs",
                "must be at least 1",
            ));
        }
        for t in &self.tenants {
            crate::model::validate_tenant_id(t)
                .map_err(|e| ConfigError::invalid("edge.tenants", e.message))?;
        }
        for (set, key) in [(catalog_url, "catalog.url"), (vectors_url, "vectors.url")] {
            if set {
                return Err(ConfigError::invalid(
                    key,
                    "an edge keeps its replica in data_dir (SQLite and Qdrant Edge): leave it unset",
                ));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorsSettings {
    /// Unset: Qdrant Edge in `data_dir/vectors`. Otherwise the gRPC URL of a
    /// Qdrant server (`http://host:6334`); it may carry an API key as the
    /// password part, so it is a secret.
    pub url: Option<SecretString>,
    /// API key for the Qdrant server (also `VITRINE__VECTORS__API_KEY`).
    pub api_key: Option<SecretString>,
    /// Deadline of one call to the Qdrant server.
    pub timeout_secs: u64,
}

impl fmt::Debug for VectorsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VectorsSettings")
            .field("url", &self.url.as_ref().map(|u| redact_url(u.expose_secret())))
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchSettings {
    /// Text-embedding cache size, MiB.
    pub text_cache_mb: u64,
    /// Result-page cache size, MiB; 0 turns the page cache off.
    pub page_cache_mb: u64,
    /// Longest a cached page is served (any product write ends it sooner).
    pub page_cache_ttl_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsSettings {
    /// Jobs this process runs at once.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat; a dead worker's jobs run
    /// again this long after it stopped answering.
    pub lease_secs: u64,
    /// How often an idle worker looks for jobs.
    pub poll_interval_ms: u64,
    /// First retry delay; doubles per attempt up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Longest one attempt at indexing a batch may run.
    pub index_time_limit_secs: u64,
    /// Longest one attempt at a full reindex may run.
    pub reindex_time_limit_secs: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderSettings {
    /// A Hugging Face hub id (optionally `id@revision`), a local directory,
    /// or an object-store URL, holding config.json, model.safetensors and
    /// tokenizer.json.
    pub model: String,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    pub device: String,
    /// CPU threads for inference; 0 = one per core.
    pub threads: usize,
    /// Largest batch the encoder thread runs at once.
    pub max_batch: usize,
    /// Extra time the encoder thread may wait to fill a batch. 0 (default):
    /// take whatever is queued, so a lone query never waits.
    pub max_wait_ms: u64,
    /// Requests waiting for the encoder; beyond it the API answers 503.
    pub queue_capacity: usize,
    /// CPU implementation of the towers: `auto` (Vitrine's kernels on x86-64
    /// with AVX2 or AVX-512, else candle), `vitrine` (Vitrine's kernels, best
    /// instruction set), `candle`, or one instruction set forced: `avx512`,
    /// `avx2`, `neon`, `portable`.
    pub cpu_kernels: String,
    /// How Vitrine's CPU kernels store the linear layers' weights: `f32`, or
    /// `bf16` (half the weight bytes; products and sums stay f32).
    pub precision: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaSettings {
    /// Let image URLs reach loopback and private addresses (tests, labs).
    pub allow_private_networks: bool,
    /// Deadline of one image download attempt.
    pub fetch_timeout_secs: u64,
    /// Largest image accepted, in bytes.
    pub max_image_bytes: usize,
    /// Largest width × height accepted (decompression-bomb guard).
    pub max_pixels: u64,
    /// Decoded pixels all image decodes in flight may hold together.
    pub decode_budget_pixels: u64,
    /// How long a decode waits for room in that budget before 503.
    pub decode_wait_ms: u64,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlobsSettings {
    /// Unset: `data_dir/blobs`. Otherwise an object_store URL (`s3://…`,
    /// `file:///…`); it may carry credentials, so it is a secret.
    pub url: Option<SecretString>,
}

impl fmt::Debug for BlobsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobsSettings")
            .field("url", &self.url.as_ref().map(|u| redact_url(u.expose_secret())))
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address to listen on; port 0 picks a free port (logged).
    pub listen: String,
    /// Whole-request deadline; a request still running then gets 503.
    pub request_timeout_secs: u64,
    /// Largest JSON body of an ordinary request.
    pub max_body_bytes: usize,
    /// Largest JSON body of a batch product import (up to 1,000 products).
    pub max_batch_body_bytes: usize,
    /// Browser origins allowed to call the API; `["*"]` allows any. The API
    /// authenticates with bearer keys, never cookies, so `*` is safe.
    pub cors_allowed_origins: Vec<String>,
    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace_secs: u64,
    /// A request head must be complete this long after its first byte.
    pub header_read_timeout_secs: u64,
    /// A connection idle between requests this long is closed.
    pub keep_alive_timeout_secs: u64,
    /// A request body must have arrived this long after its head (408
    /// otherwise); shorter than `request_timeout_secs`.
    pub body_read_timeout_secs: u64,
    /// Open connections in all; 0 derives it from the open-file limit.
    pub max_connections: usize,
    /// Open connections from one client address.
    pub max_connections_per_ip: usize,
    /// Proxies whose `X-Forwarded-For` names the client (addresses or CIDR
    /// blocks).
    pub trusted_proxies: Vec<String>,
    /// PEM certificate chain; with `tls_key`, the server speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl ServerSettings {
    /// `trusted_proxies`, parsed (validated at load).
    pub fn trusted_proxy_nets(&self) -> Vec<ipnet::IpNet> {
        self.trusted_proxies.iter().filter_map(|p| parse_net(p)).collect()
    }
}

/// An address (a one-address block) or a CIDR block.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// Token buckets (per node): rate in requests per second, burst in requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    pub enabled: bool,
    pub search_per_second: f64,
    pub search_burst: u32,
    pub write_per_second: f64,
    pub write_burst: u32,
    pub ip_per_second: f64,
    pub ip_burst: u32,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub admin_key: Option<SecretString>,
    /// How long a key read from the catalog is trusted without reading it
    /// again (0: read on every request).
    pub key_cache_secs: u64,
}

impl fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthSettings")
            .field("admin_key", &self.admin_key.as_ref().map(|_| "[redacted]"))
            .field("key_cache_secs", &self.key_cache_secs)
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogSettings {
    /// Unset: SQLite in `data_dir`. `postgres://…`: PostgreSQL. May hold a
    /// password, so it is a secret.
    pub url: Option<SecretString>,
    /// Connections to PostgreSQL, or read connections to SQLite.
    pub max_connections: usize,
}

impl fmt::Debug for CatalogSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatalogSettings")
            .field("url", &self.url.as_ref().map(|u| redact_url(u.expose_secret())))
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter directive, e.g. `info` or `vitrine=debug,info`.
    pub level: String,
}

/// A URL with its password (if any) replaced, for logs and Debug output.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("[redacted]"));
            }
            u.to_string()
        }
        Err(_) => "[unparseable url]".to_owned(),
    }
}

/// The catalog backend a `catalog.url` selects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogBackend {
    Sqlite { path: PathBuf },
    Postgres,
}

impl Settings {
    /// The built-in defaults, `config/default.toml` alone: the one set of
    /// defaults every configuration type of the code derives its own from.
    pub fn defaults() -> &'static Settings {
        static DEFAULTS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();
        DEFAULTS.get_or_init(|| {
            // Compiled in and checked by `defaults_are_the_embedded_single_node`:
            // failing here is a defect of the build, not of any input.
            #[allow(clippy::expect_used)]
            Figment::from(Toml::string(DEFAULT_TOML))
                .extract()
                .expect("config/default.toml holds every setting")
        })
    }

    /// Loads defaults, then `file` if given, then the environment, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, Env::prefixed("VITRINE__").split("__"))
    }

    fn load_from(file: Option<&Path>, env: Env) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::File {
                    path: path.to_owned(),
                    message: "no such file".into(),
                });
            }
            figment = figment.merge(Toml::file(path));
        }
        // figment parses environment values ("123" becomes a number), which
        // would break an all-digit admin key or drop its leading zeros; the
        // string-valued secrets are therefore taken exactly as written.
        figment = figment.merge(env.clone().filter(|k| !VERBATIM_ENV_KEYS.contains(&k.as_str())));
        for (key, value) in env.iter() {
            if VERBATIM_ENV_KEYS.contains(&key.as_str()) {
                figment = figment.merge((key.as_str().to_owned(), value));
            }
        }
        let settings: Settings = figment.extract().map_err(figment_error)?;
        settings.validate()?;
        Ok(settings)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        if self.server.request_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "server.request_timeout_secs",
                "must be at least 1",
            ));
        }
        for (key, v) in [
            (
                "server.header_read_timeout_secs",
                self.server.header_read_timeout_secs,
            ),
            (
                "server.keep_alive_timeout_secs",
                self.server.keep_alive_timeout_secs,
            ),
            (
                "server.body_read_timeout_secs",
                self.server.body_read_timeout_secs,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(key, "must be at least 1"));
            }
        }
        if self.server.body_read_timeout_secs >= self.server.request_timeout_secs {
            return Err(ConfigError::invalid(
                "server.body_read_timeout_secs",
                "must be shorter than server.request_timeout_secs",
            ));
        }
        if self.server.max_connections_per_ip == 0 {
            return Err(ConfigError::invalid(
                "server.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        for proxy in &self.server.trusted_proxies {
            if parse_net(proxy).is_none() {
                return Err(ConfigError::invalid(
                    "server.trusted_proxies",
                    format!("{proxy:?} is neither an IP address nor a CIDR block"),
                ));
            }
        }
        match (&self.server.tls_cert, &self.server.tls_key) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    "server.tls_key",
                    "must be set with server.tls_cert",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "server.tls_cert",
                    "must be set with server.tls_key",
                ));
            }
            _ => {}
        }
        let r = &self.rate_limits;
        for (key, rate, burst) in [
            ("search", r.search_per_second, r.search_burst),
            ("write", r.write_per_second, r.write_burst),
            ("ip", r.ip_per_second, r.ip_burst),
        ] {
            if burst == 0 {
                return Err(ConfigError::invalid(
                    format!("rate_limits.{key}_burst"),
                    "must be at least 1",
                ));
            }
            if !crate::api::limits::valid_bucket(rate, burst) {
                return Err(ConfigError::invalid(
                    format!("rate_limits.{key}_per_second"),
                    format!(
                        "must be above 0 and at most 1000000, with the burst (at most 1000000) refilled within {} s",
                        crate::api::limits::MAX_REFILL_SECS
                    ),
                ));
            }
        }
        if self.media.decode_budget_pixels < self.media.max_pixels {
            return Err(ConfigError::invalid(
                "media.decode_budget_pixels",
                "must be at least media.max_pixels (one largest image must fit)",
            ));
        }
        if self.server.max_body_bytes < 1024 {
            return Err(ConfigError::invalid(
                "server.max_body_bytes",
                "must be at least 1024",
            ));
        }
        if self.server.max_batch_body_bytes < self.server.max_body_bytes {
            return Err(ConfigError::invalid(
                "server.max_batch_body_bytes",
                "must be at least server.max_body_bytes",
            ));
        }
        for origin in &self.server.cors_allowed_origins {
            if origin != "*" && axum::http::HeaderValue::from_str(origin).is_err() {
                return Err(ConfigError::invalid(
                    "server.cors_allowed_origins",
                    format!("{origin:?} is not a valid origin"),
                ));
            }
        }
        if self.catalog.max_connections == 0 || self.catalog.max_connections > 1024 {
            return Err(ConfigError::invalid(
                "catalog.max_connections",
                "must be between 1 and 1024",
            ));
        }
        self.catalog_backend()?;
        if self.encoder.model.trim().is_empty() {
            return Err(ConfigError::invalid("encoder.model", "must name a model"));
        }
        self.encoder
            .device
            .parse::<crate::encoder::DeviceSetting>()
            .map_err(|e| ConfigError::invalid("encoder.device", e.to_string()))?;
        if !(1..=1024).contains(&self.encoder.max_batch) {
            return Err(ConfigError::invalid(
                "encoder.max_batch",
                "must be between 1 and 1024",
            ));
        }
        if self.encoder.queue_capacity == 0 {
            return Err(ConfigError::invalid(
                "encoder.queue_capacity",
                "must be at least 1",
            ));
        }
        if self.media.fetch_timeout_secs == 0 {
            return Err(ConfigError::invalid(
                "media.fetch_timeout_secs",
                "must be at least 1",
            ));
        }
        if let Some(url) = &self.vectors.url {
            let parsed = url::Url::parse(url.expose_secret())
                .map_err(|e| ConfigError::invalid("vectors.url", format!("not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                return Err(ConfigError::invalid(
                    "vectors.url",
                    "must be the Qdrant server's gRPC address, e.g. http://127.0.0.1:6334",
                ));
            }
        }
        if self.vectors.timeout_secs == 0 {
            return Err(ConfigError::invalid("vectors.timeout_secs", "must be at least 1"));
        }
        if self.search.page_cache_ttl_secs == 0 && self.search.page_cache_mb > 0 {
            return Err(ConfigError::invalid(
                "search.page_cache_ttl_secs",
                "must be at least 1 (set search.page_cache_mb = 0 to turn the page cache off)",
            ));
        }
        let p = &self.plugins;
        if !(1..=4096).contains(&p.memory_mb) {
            return Err(ConfigError::invalid(
                "plugins.memory_mb",
                "must be between 1 and 4096",
            ));
        }
        if p.max_memory_mb < p.memory_mb || p.max_memory_mb > 4096 {
            return Err(ConfigError::invalid(
                "plugins.max_memory_mb",
                "must be at least plugins.memory_mb and at most 4096",
            ));
        }
        for (key, ms) in [
            ("plugins.filter_deadline_ms", p.filter_deadline_ms),
            ("plugins.ranker_deadline_ms", p.ranker_deadline_ms),
            ("plugins.ingest_deadline_ms", p.ingest_deadline_ms),
        ] {
            if !(1..=60_000).contains(&ms) {
                return Err(ConfigError::invalid(key, "must be between 1 and 60000"));
            }
        }
        if p.fuel == 0 {
            return Err(ConfigError::invalid("plugins.fuel", "must be at least 1"));
        }
        if p.max_concurrent_calls > 10_000 {
            return Err(ConfigError::invalid(
                "plugins.max_concurrent_calls",
                "must be between 0 (four per core) and 10000",
            ));
        }
        if p.max_concurrent_calls_per_tenant > 10_000 {
            return Err(ConfigError::invalid(
                "plugins.max_concurrent_calls_per_tenant",
                "must be between 0 (a quarter of max_concurrent_calls) and 10000",
            ));
        }
        if !(1..=600_000).contains(&p.compile_timeout_ms) {
            return Err(ConfigError::invalid(
                "plugins.compile_timeout_ms",
                "must be between 1 and 600000",
            ));
        }
        if !(1..=1000).contains(&p.candidates) {
            return Err(ConfigError::invalid(
                "plugins.candidates",
                "must be between 1 and 1000",
            ));
        }
        if !(1..=256).contains(&self.jobs.concurrency) {
            return Err(ConfigError::invalid(
                "jobs.concurrency",
                "must be between 1 and 256",
            ));
        }
        if self.jobs.lease_secs == 0 {
            return Err(ConfigError::invalid("jobs.lease_secs", "must be at least 1"));
        }
        if self.jobs.poll_interval_ms == 0 {
            return Err(ConfigError::invalid(
                "jobs.poll_interval_ms",
                "must be at least 1",
            ));
        }
        if self.jobs.retry_max_ms < self.jobs.retry_initial_ms {
            return Err(ConfigError::invalid(
                "jobs.retry_max_ms",
                "must be at least jobs.retry_initial_ms",
            ));
        }
        if self.jobs.index_time_limit_secs == 0 || self.jobs.reindex_time_limit_secs == 0 {
            return Err(ConfigError::invalid(
                "jobs.index_time_limit_secs",
                "time limits must be at least 1 second",
            ));
        }
        if let Some(url) = &self.blobs.url {
            url::Url::parse(url.expose_secret())
                .map_err(|e| ConfigError::invalid("blobs.url", format!("not a URL: {e}")))?;
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        match (&self.auth.admin_key, self.env) {
            (Some(k), _) if k.expose_secret().trim().is_empty() => {
                return Err(ConfigError::invalid("auth.admin_key", "must not be empty"));
            }
            (None, Environment::Production) => {
                return Err(ConfigError::invalid(
                    "auth.admin_key",
                    "env = \"production\" requires an admin key (VITRINE__AUTH__ADMIN_KEY)",
                ));
            }
            (Some(k), Environment::Production) if k.expose_secret().len() < MIN_ADMIN_KEY_BYTES => {
                return Err(ConfigError::invalid(
                    "auth.admin_key",
                    format!("env = \"production\" requires at least {MIN_ADMIN_KEY_BYTES} bytes"),
                ));
            }
            _ => {}
        }
        self.edge
            .validate(self.catalog.url.is_some(), self.vectors.url.is_some())?;
        Ok(())
    }

    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.server.listen.parse().map_err(|_| {
            ConfigError::invalid(
                "server.listen",
                format!(
                    "{:?} is not an address such as 127.0.0.1:8080",
                    self.server.listen
                ),
            )
        })
    }

    pub fn catalog_backend(&self) -> Result<CatalogBackend, ConfigError> {
        match &self.catalog.url {
            None => Ok(CatalogBackend::Sqlite {
                path: self.data_dir.join("catalog.sqlite3"),
            }),
            Some(url) => {
                let url = url.expose_secret();
                let scheme = url.split(':').next().unwrap_or_default();
                if scheme == "postgres" || scheme == "postgresql" {
                    url.parse::<tokio_postgres::Config>().map_err(|e| {
                        ConfigError::invalid("catalog.url", format!("not a valid PostgreSQL URL: {e}"))
                    })?;
                    Ok(CatalogBackend::Postgres)
                } else {
                    Err(ConfigError::invalid(
                        "catalog.url",
                        "must be a postgres:// URL; leave it unset for the embedded SQLite catalog",
                    ))
                }
            }
        }
    }
}

fn figment_error(e: figment::Error) -> ConfigError {
    let key = if e.path.is_empty() {
        "(root)".to_owned()
    } else {
        e.path.join(".")
    };
    // figment's kind says what was wrong without repeating the path.
    ConfigError::Invalid {
        key,
        message: e.kind.to_string(),
    }
}

#[cfg(test)]
// figment's test jail returns its large error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    fn load_env(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        // `Env::prefixed` reads the process environment; use figment's
        // jail-free map instead so tests don't race on global state.
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        for (k, v) in vars {
            figment = figment.merge(Toml::string(&format!("{k} = {v}")));
        }
        let settings: Settings = figment.extract().map_err(figment_error)?;
        settings.validate()?;
        Ok(settings)
    }

    #[test]
    fn every_default_of_the_code_is_the_embedded_settings() {
        let d = Settings::defaults();
        let runner = crate::jobs::RunnerConfig::new("w");
        // Once 2 in the code and 4 in the file.
        assert_eq!((runner.concurrency, d.jobs.concurrency), (4, 4));
        assert_eq!(runner.lease.as_secs(), d.jobs.lease_secs);
        assert_eq!(runner.shutdown_grace.as_secs(), d.server.shutdown_grace_secs);
        let fetch = crate::media::FetchConfig::default();
        assert_eq!(
            (fetch.max_bytes, fetch.max_pixels),
            (d.media.max_image_bytes, d.media.max_pixels)
        );
        assert!(!fetch.policy.allow_private_networks);
        let batch = crate::encoder::service::BatchConfig::default();
        assert_eq!(
            (batch.max_batch, batch.queue_capacity),
            (d.encoder.max_batch, d.encoder.queue_capacity)
        );
        let search = crate::search::SearchConfig::default();
        assert_eq!(search.plugin_candidates, d.plugins.candidates);
        assert_eq!(search.page_cache_bytes, d.search.page_cache_mb * 1024 * 1024);
    }

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let s = load_env(&[]).unwrap();
        assert_eq!(s.env, Environment::Development);
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.data_dir, PathBuf::from("./data"));
        assert!(s.auth.admin_key.is_none());
        assert!(matches!(
            s.catalog_backend().unwrap(),
            CatalogBackend::Sqlite { .. }
        ));
    }

    #[test]
    fn environment_overrides_with_double_underscores() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VITRINE__SERVER__LISTEN", "127.0.0.1:0");
            jail.set_env("VITRINE__AUTH__ADMIN_KEY", "0123456789012345");
            jail.set_env("VITRINE__ENV", "production");
            let s = Settings::load(None).map_err(|e| e.to_string())?;
            assert_eq!(s.server.listen, "127.0.0.1:0");
            assert_eq!(s.env, Environment::Production);
            assert_eq!(
                s.auth.admin_key.as_ref().map(|k| k.expose_secret().to_owned()),
                Some("0123456789012345".to_owned())
            );
            Ok(())
        });
    }

    #[test]
    fn file_layer_sits_between_defaults_and_environment() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "v.toml",
                "data_dir = \"/tmp/x\"\n[server]\nlisten = \"127.0.0.1:9000\"\n",
            )?;
            jail.set_env("VITRINE__SERVER__LISTEN", "127.0.0.1:9001");
            let s = Settings::load(Some(Path::new("v.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.data_dir, PathBuf::from("/tmp/x"));
            assert_eq!(s.server.listen, "127.0.0.1:9001");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_rejected_naming_the_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("VITRINE__SERVER__LISTN", "x");
            let err = Settings::load(None).unwrap_err().to_string();
            assert!(err.contains("server") && err.contains("listn"), "{err}");
            Ok(())
        });
        let err = load_env(&[("colour", "\"red\"")]).unwrap_err().to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn a_missing_config_file_is_an_error() {
        let err = Settings::load(Some(Path::new("/nonexistent/vitrine.toml"))).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/vitrine.toml"));
    }

    #[test]
    fn production_requires_a_long_admin_key() {
        let err = load_env(&[("env", "\"production\"")]).unwrap_err().to_string();
        assert!(err.contains("auth.admin_key"), "{err}");
        let err = load_env(&[("env", "\"production\""), ("auth.admin_key", "\"short\"")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.admin_key") && err.contains("16"), "{err}");
        load_env(&[
            ("env", "\"production\""),
            ("auth.admin_key", "\"0123456789abcdef\""),
        ])
        .unwrap();
    }

    #[test]
    fn invalid_values_name_their_key() {
        let cases = [
            ("server.listen", "\"nowhere\""),
            ("catalog.url", "\"mysql://x\""),
            ("catalog.max_connections", "0"),
            ("log.level", "\"[[[\""),
            ("env", "\"staging\""),
            ("encoder.device", "\"tpu\""),
            ("encoder.max_batch", "0"),
            ("media.fetch_timeout_secs", "0"),
            ("server.trusted_proxies", "[\"10.0.0.0/33\"]"),
            ("server.tls_cert", "\"/x.pem\""),
            ("rate_limits.search_per_second", "0"),
            ("rate_limits.ip_burst", "0"),
        ];
        for (key, value) in cases {
            let err = load_env(&[(key, value)]).unwrap_err().to_string();
            let leaf = key.rsplit('.').next().unwrap();
            assert!(err.contains(leaf), "{key}: {err}");
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let s = load_env(&[
            ("auth.admin_key", "\"super-secret-admin-key\""),
            ("catalog.url", "\"postgres://vitrine:hunter2@db:5432/vitrine\""),
        ])
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("super-secret-admin-key"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("db:5432"), "{debug}");
    }
}
