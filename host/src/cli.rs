//! `vitrine import` and `vitrine reindex`: clients of a running server's
//! HTTP API (so that they work the same against one embedded node or a
//! cluster), with progress bars that follow the indexing jobs to the end.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::api::types::{
    BatchRequest, BatchResult, CreateKey, CreateTenant, ErrorBody, JobAccepted, JobView, KeyCreated,
    ProductWritten, ReindexRequest, TenantView,
};

/// Products per batch request (API.md allows up to 1,000).
pub const DEFAULT_BATCH: usize = 500;
/// How often job progress is polled.
const POLL: Duration = Duration::from_millis(250);

/// Where the server is and who we are.
#[derive(Debug, Clone)]
pub struct Client {
    pub base: String,
    pub key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, key: Option<String>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        url::Url::parse(&base).with_context(|| format!("--url {base:?} is not a URL"))?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Self { base, key, http })
    }

    /// A request with a JSON body (or none), answered with `R`.
    async fn send<R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> anyhow::Result<R> {
        let mut req = self.request(method.clone(), path);
        if let Some(b) = body {
            req = req.json(b);
        }
        Self::answer(req, &method, path, &self.base).await
    }

    /// Sends raw bytes (an image) with their content type.
    async fn send_bytes<R: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<R> {
        let req = self
            .request(method.clone(), path)
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(body);
        Self::answer(req, &method, path, &self.base).await
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    async fn answer<R: DeserializeOwned>(
        req: reqwest::RequestBuilder,
        method: &reqwest::Method,
        path: &str,
        base: &str,
    ) -> anyhow::Result<R> {
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {base}"))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        if !status.is_success() {
            let message = serde_json::from_str::<ErrorBody>(&text)
                .map_or_else(|_| "no message".to_owned(), |b| b.error.message);
            bail!("{method} {path} answered {status}: {message}");
        }
        serde_json::from_str(&text)
            .with_context(|| format!("{method} {path} answered with an unexpected body"))
    }
}

/// One line of the input that could not be sent, or that the server refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// 1-based line (JSONL) or record (CSV, header excluded) number.
    pub line: usize,
    pub error: String,
}

/// The products read from a file, each with its line number.
#[derive(Debug, Default)]
pub struct Parsed {
    pub products: Vec<(usize, Map<String, Value>)>,
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jsonl,
    Csv,
}

impl Format {
    /// From the file name: `.csv` is CSV, anything else JSON Lines.
    pub fn guess(path: &Path) -> Format {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("csv") => Format::Csv,
            _ => Format::Jsonl,
        }
    }
}

/// JSON Lines: one product object per line; blank lines are skipped.
pub fn parse_jsonl(text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => out.products.push((line_no, m)),
            Ok(_) => out.rejected.push(Rejected {
                line: line_no,
                error: "not a JSON object".into(),
            }),
            Err(e) => out.rejected.push(Rejected {
                line: line_no,
                error: format!("not valid JSON: {e}"),
            }),
        }
    }
    out
}

/// CSV with a header row naming API.md's product fields. Empty cells are
/// left out; `tags` holds tags separated by `|`; `in_stock` is
/// true/false/yes/no/1/0; `metadata` holds a JSON object; `price` is kept as
/// text so its exact decimal value reaches the server.
pub fn parse_csv(text: &str) -> anyhow::Result<Parsed> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .context("the CSV file has no header row")?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    let mut out = Parsed::default();
    for (i, record) in reader.records().enumerate() {
        let line_no = i + 1;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                out.rejected.push(Rejected {
                    line: line_no,
                    error: format!("unreadable CSV record: {e}"),
                });
                continue;
            }
        };
        match csv_product(&headers, &record) {
            Ok(m) => out.products.push((line_no, m)),
            Err(e) => out.rejected.push(Rejected {
                line: line_no,
                error: e,
            }),
        }
    }
    Ok(out)
}

fn csv_product(headers: &[String], record: &csv::StringRecord) -> Result<Map<String, Value>, String> {
    let mut m = Map::new();
    for (name, cell) in headers.iter().zip(record.iter()) {
        if cell.is_empty() {
            continue;
        }
        let value = match name.as_str() {
            "tags" => Value::Array(
                cell.split('|')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| Value::String(t.to_owned()))
                    .collect(),
            ),
            "in_stock" => match cell.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Value::Bool(true),
                "false" | "no" | "0" => Value::Bool(false),
                other => return Err(format!("in_stock must be true or false, not {other:?}")),
            },
            "metadata" => match serde_json::from_str::<Value>(cell) {
                Ok(v @ Value::Object(_)) => v,
                _ => return Err("metadata must hold a JSON object".into()),
            },
            _ => Value::String(cell.to_owned()),
        };
        m.insert(name.clone(), value);
    }
    Ok(m)
}

/// What an import or reindex ended with.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub products: usize,
    pub accepted: usize,
    /// Images uploaded (`--images`).
    pub images: usize,
    pub rejected: Vec<RejectedJson>,
    pub indexed: u64,
    pub failed: u64,
    /// Products whose indexing failed, with the reason (capped per job).
    pub failures: Vec<Value>,
    pub jobs: Vec<String>,
    /// Jobs that did not succeed: id and status/last error.
    pub failed_jobs: Vec<Value>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct RejectedJson {
    pub line: usize,
    pub error: String,
}

fn progress_bar(total: u64, show: bool) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total),
        if show {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Options of `vitrine import`.
pub struct ImportOptions<'a> {
    pub file: &'a Path,
    pub format: Option<Format>,
    pub tenant: &'a str,
    pub batch: usize,
    pub wait: bool,
    pub progress: bool,
    /// `--images DIR`: rows may name a local image in `image_file`
    /// (relative to DIR), uploaded after the product is created.
    pub images: Option<&'a Path>,
}

/// The field of an import row naming a local image file.
pub const IMAGE_FILE_FIELD: &str = "image_file";
/// Image uploads in flight at once.
const UPLOAD_CONCURRENCY: usize = 4;
/// Larger local files are refused before they are read (the server's own
/// limit, `media.max_image_bytes`, is 20 MiB by default).
const MAX_LOCAL_IMAGE_BYTES: u64 = 256 * 1024 * 1024;

/// A product row's local image, to upload once the product exists.
struct LocalImage {
    line: usize,
    external_id: String,
    path: std::path::PathBuf,
}

/// Takes `image_file` out of each row (the server does not know it) and
/// resolves it under `dir`; rows that name one without `--images`, or a
/// path leaving `dir`, are rejected.
fn take_image_files(parsed: &mut Parsed, dir: Option<&Path>) -> Vec<LocalImage> {
    let mut images = Vec::new();
    let mut kept = Vec::with_capacity(parsed.products.len());
    for (line, mut p) in std::mem::take(&mut parsed.products) {
        let Some(file) = p.remove(IMAGE_FILE_FIELD) else {
            kept.push((line, p));
            continue;
        };
        let reject = |error: String| Rejected { line, error };
        let file = match (file, dir) {
            (Value::String(f), Some(_)) if !f.is_empty() => f,
            (_, None) => {
                parsed.rejected.push(reject(format!(
                    "`{IMAGE_FILE_FIELD}` names a local image; pass --images DIR to upload it"
                )));
                continue;
            }
            _ => {
                parsed
                    .rejected
                    .push(reject(format!("`{IMAGE_FILE_FIELD}` must be a file name")));
                continue;
            }
        };
        let relative = Path::new(&file);
        if relative.is_absolute()
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir))
        {
            parsed.rejected.push(reject(format!(
                "`{IMAGE_FILE_FIELD}` {file:?} must be a path inside the --images directory"
            )));
            continue;
        }
        if let (Some(Value::String(id)), Some(dir)) = (p.get("external_id"), dir) {
            images.push(LocalImage {
                line,
                external_id: id.clone(),
                path: dir.join(relative),
            });
        }
        kept.push((line, p));
    }
    parsed.products = kept;
    // A product listed twice ends with the fields of its last row (batches
    // are sent in order): so does its image.
    let mut last: BTreeMap<String, LocalImage> = BTreeMap::new();
    for image in images {
        last.insert(image.external_id.clone(), image);
    }
    last.into_values().collect()
}

fn image_content_type(path: &Path) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("webp") => "image/webp",
        Some("gif") => "image/gif",
        _ => "application/octet-stream",
    }
}

/// Uploads the images of products the server accepted; returns the
/// indexing jobs they started, and rejections by line.
async fn upload_images(
    client: &Client,
    tenant: &str,
    images: Vec<LocalImage>,
    bar: &ProgressBar,
) -> (Vec<String>, Vec<Rejected>) {
    let uploads = images.into_iter().map(|img| async move {
        let result = async {
            let meta = tokio::fs::metadata(&img.path)
                .await
                .with_context(|| format!("cannot read {}", img.path.display()))?;
            if !meta.is_file() || meta.len() > MAX_LOCAL_IMAGE_BYTES {
                bail!(
                    "{} is not a regular file of at most {MAX_LOCAL_IMAGE_BYTES} bytes",
                    img.path.display()
                );
            }
            let bytes = tokio::fs::read(&img.path)
                .await
                .with_context(|| format!("cannot read {}", img.path.display()))?;
            let path = format!(
                "/v1/tenants/{}/products/{}/image",
                crate::model::path_segment(tenant),
                crate::model::path_segment(&img.external_id)
            );
            client
                .send_bytes(reqwest::Method::PUT, &path, image_content_type(&img.path), bytes)
                .await
        }
        .await;
        (img.line, result)
    });
    let mut stream = futures::StreamExt::buffer_unordered(futures::stream::iter(uploads), UPLOAD_CONCURRENCY);
    let (mut jobs, mut rejected) = (Vec::new(), Vec::new());
    while let Some((line, result)) = futures::StreamExt::next(&mut stream).await {
        match result {
            Ok(ProductWritten { job_id, .. }) => jobs.extend(job_id),
            Err(e) => rejected.push(Rejected {
                line,
                error: format!("image: {e:#}"),
            }),
        }
        bar.inc(1);
    }
    (jobs, rejected)
}

/// Reads `file`, sends it in batches, then follows the indexing jobs.
pub async fn import(client: &Client, o: &ImportOptions<'_>) -> anyhow::Result<Summary> {
    if !(1..=1000).contains(&o.batch) {
        bail!("--batch must be between 1 and 1000");
    }
    if let Some(dir) = o.images
        && !dir.is_dir()
    {
        bail!("--images {} is not a directory", dir.display());
    }
    let text =
        std::fs::read_to_string(o.file).with_context(|| format!("cannot read {}", o.file.display()))?;
    let mut parsed = match o.format.unwrap_or_else(|| Format::guess(o.file)) {
        Format::Jsonl => parse_jsonl(&text),
        Format::Csv => parse_csv(&text)?,
    };
    let mut summary = Summary {
        products: parsed.products.len() + parsed.rejected.len(),
        ..Summary::default()
    };
    let mut images = take_image_files(&mut parsed, o.images);
    let mut rejected = parsed.rejected;
    let bar = progress_bar(parsed.products.len() as u64, o.progress);
    bar.set_message("uploading");
    let path = format!("/v1/tenants/{}/products/batch", urlencoding(o.tenant));
    for chunk in parsed.products.chunks(o.batch) {
        let body = BatchRequest {
            products: chunk
                .iter()
                .map(|(_, p)| serde_value::to_value(p))
                .collect::<Result<_, _>>()?,
        };
        let reply: BatchResult = client.send(reqwest::Method::POST, &path, Some(&body)).await?;
        summary.accepted += reply.accepted;
        for r in reply.rejected {
            let line = chunk.get(r.index).map_or(0, |(l, _)| *l);
            rejected.push(Rejected {
                line,
                error: r.error.message,
            });
        }
        summary.jobs.extend(reply.job_id);
        bar.inc(chunk.len() as u64);
    }
    // Images only for the products the server took.
    let refused: HashSet<usize> = rejected.iter().map(|r| r.line).collect();
    images.retain(|i| !refused.contains(&i.line));
    // Image jobs index products a batch job already counts.
    let mut recounts = HashSet::new();
    if !images.is_empty() {
        bar.set_length(images.len() as u64);
        bar.set_position(0);
        bar.set_message("images");
        let (jobs, refused) = upload_images(client, o.tenant, images, &bar).await;
        summary.images = jobs.len();
        recounts.extend(jobs.iter().cloned());
        summary.jobs.extend(jobs);
        rejected.extend(refused);
    }
    rejected.sort_by_key(|r| r.line);
    summary.rejected = rejected
        .into_iter()
        .map(|r| RejectedJson {
            line: r.line,
            error: r.error,
        })
        .collect();
    if o.wait && !summary.jobs.is_empty() {
        bar.set_length(summary.accepted as u64);
        bar.set_position(0);
        bar.set_message("indexing");
        follow(client, &summary.jobs.clone(), &recounts, &bar, &mut summary).await?;
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Where Debian's `openclipart-png` package puts its pictures.
pub const OPENCLIPART_DIR: &str = "/usr/share/openclipart/png";

/// Options of `vitrine demo`.
pub struct DemoOptions<'a> {
    pub dir: &'a Path,
    pub tenant: &'a str,
    /// Products to make (0: every picture).
    pub limit: usize,
    pub wait: bool,
    pub progress: bool,
}

/// A title from a file name: `chemistry_flask_matthew__01.png` →
/// `Chemistry flask matthew`.
fn demo_title(stem: &str) -> String {
    let words: Vec<&str> = stem
        .split(['_', '-', ' ', '.'])
        .filter(|w| !w.is_empty() && !w.chars().all(|c| c.is_ascii_digit()))
        .collect();
    let title = if words.is_empty() {
        stem.to_owned()
    } else {
        words.join(" ")
    };
    let mut chars = title.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => "Untitled".to_owned(),
    }
}

/// A stable number from a name (FNV-1a), for made-up prices and stock.
fn demo_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The demo catalog of the pictures under `dir`: one product per image,
/// titled by its file name, in the category of its top folder and tagged
/// with the folders below, at a made-up price. With a limit, pictures are
/// taken from each category in turn so every category shows up.
pub fn demo_catalog(dir: &Path, limit: usize) -> anyhow::Result<Vec<Map<String, Value>>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            // The entry's own type: a link to a folder is not walked, so a
            // link back up the tree cannot make the walk endless.
            if entry.file_type()?.is_dir() {
                stack.push(path);
            } else if image_content_type(&path).starts_with("image/") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut by_category: BTreeMap<String, Vec<Map<String, Value>>> = BTreeMap::new();
    for path in files {
        let Ok(relative) = path.strip_prefix(dir) else {
            continue;
        };
        let Some(relative_str) = relative.to_str() else {
            continue;
        };
        let folders: Vec<&str> = relative
            .parent()
            .map(|p| p.iter().filter_map(|c| c.to_str()).collect())
            .unwrap_or_default();
        let stem = relative.file_stem().and_then(|s| s.to_str()).unwrap_or("picture");
        let id: String = relative_str
            .rsplit_once('.')
            .map_or(relative_str, |(base, _)| base)
            .chars()
            .take(crate::model::MAX_EXTERNAL_ID_CHARS)
            .collect();
        let category = folders.first().map_or("misc", |c| c).replace('_', " ");
        let h = demo_hash(relative_str);
        let price = format!("{}.{:02}", 1 + h % 199, (h >> 8) % 100);
        let tags: Vec<Value> = folders
            .iter()
            .skip(1)
            .map(|f| Value::String(f.replace(['_', '-'], " ")))
            .collect();
        let mut row = Map::new();
        row.insert("external_id".into(), id.into());
        row.insert("title".into(), demo_title(stem).into());
        row.insert(
            "description".into(),
            format!("Public-domain clip art from Openclipart: {}", folders.join(" / ")).into(),
        );
        row.insert("category".into(), category.clone().into());
        row.insert("price".into(), price.into());
        row.insert("currency".into(), "EUR".into());
        row.insert("tags".into(), Value::Array(tags));
        row.insert("in_stock".into(), (!h.is_multiple_of(10)).into());
        row.insert(IMAGE_FILE_FIELD.into(), relative_str.into());
        by_category.entry(category).or_default().push(row);
    }
    let total: usize = by_category.values().map(Vec::len).sum();
    let wanted = if limit == 0 { total } else { limit.min(total) };
    let mut queues: Vec<std::vec::IntoIter<Map<String, Value>>> =
        by_category.into_values().map(Vec::into_iter).collect();
    let mut out = Vec::with_capacity(wanted);
    while out.len() < wanted {
        for q in &mut queues {
            if out.len() == wanted {
                break;
            }
            out.extend(q.next());
        }
    }
    Ok(out)
}

/// Makes the demo tenant (if the key may) and imports the demo catalog
/// with its pictures into a running server.
pub async fn demo(client: &Client, o: &DemoOptions<'_>) -> anyhow::Result<Summary> {
    if !o.dir.is_dir() {
        bail!(
            "no pictures at {}: install Debian's openclipart-png package \
             (apt-get install openclipart-png), or pass --dir with folders of images",
            o.dir.display()
        );
    }
    let items = demo_catalog(o.dir, o.limit)?;
    if items.is_empty() {
        bail!("no PNG, JPEG, WebP or GIF pictures under {}", o.dir.display());
    }
    let tenant = CreateTenant {
        id: o.tenant.to_owned(),
        name: Some("Vitrine demo catalog".to_owned()),
    };
    match client
        .send::<TenantView>(reqwest::Method::POST, "/v1/tenants", Some(&tenant))
        .await
    {
        Ok(_) => {}
        // Already there, or a tenant key that may not create tenants: the
        // import says whether it may write.
        Err(e) => tracing::debug!(error = %e, "demo tenant not created"),
    }
    let file = tempfile::Builder::new().suffix(".jsonl").tempfile()?;
    let mut text = String::new();
    for row in items {
        text.push_str(&Value::Object(row).to_string());
        text.push('\n');
    }
    std::fs::write(file.path(), text)?;
    import(
        client,
        &ImportOptions {
            file: file.path(),
            format: Some(Format::Jsonl),
            tenant: o.tenant,
            batch: DEFAULT_BATCH,
            wait: o.wait,
            progress: o.progress,
            images: Some(o.dir),
        },
    )
    .await
}

/// A `search` key for the demo page, when the client's key may make one.
pub async fn demo_search_key(client: &Client, tenant: &str) -> Option<String> {
    let path = format!("/v1/tenants/{}/keys", crate::model::path_segment(tenant));
    let body = CreateKey {
        scopes: vec!["search".to_owned()],
        label: Some("demo page".to_owned()),
    };
    match client
        .send::<KeyCreated>(reqwest::Method::POST, &path, Some(&body))
        .await
    {
        Ok(reply) => Some(reply.key),
        Err(e) => {
            tracing::debug!(error = %e, "no search key for the demo page");
            None
        }
    }
}

/// Options of `vitrine reindex`.
pub struct ReindexOptions<'a> {
    pub tenant: Option<&'a str>,
    pub wait: bool,
    pub progress: bool,
}

/// Starts a reindex and follows it.
pub async fn reindex(client: &Client, o: &ReindexOptions<'_>) -> anyhow::Result<Summary> {
    let body = ReindexRequest {
        tenant: o.tenant.map(str::to_owned),
    };
    let JobAccepted { job_id: id } = client
        .send(reqwest::Method::POST, "/v1/admin/reindex", Some(&body))
        .await?;
    let mut summary = Summary {
        jobs: vec![id.clone()],
        ..Summary::default()
    };
    if o.wait {
        let bar = progress_bar(0, o.progress);
        bar.set_message("reindexing");
        follow(client, &[id], &HashSet::new(), &bar, &mut summary).await?;
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// Polls `jobs` until every one has finished, moving `bar` with their
/// progress, and adds their results to `summary` (but not the products
/// indexed by `recounts`, which other jobs count already).
async fn follow(
    client: &Client,
    jobs: &[String],
    recounts: &HashSet<String>,
    bar: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut last: BTreeMap<String, JobView> = BTreeMap::new();
    loop {
        let mut done = 0u64;
        let mut total = 0u64;
        let mut open = 0;
        for id in jobs {
            if let Some(j) = last.get(id)
                && is_terminal(j)
            {
                done += j.progress.done.max(0) as u64;
                total += j.progress.total.max(0) as u64;
                continue;
            }
            let j: JobView = client
                .send(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None::<&()>)
                .await?;
            done += j.progress.done.max(0) as u64;
            total += j.progress.total.max(0) as u64;
            if !is_terminal(&j) {
                open += 1;
            }
            last.insert(id.clone(), j);
        }
        if bar.length().unwrap_or(0) < total {
            bar.set_length(total);
        }
        bar.set_position(done);
        if open == 0 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    for (id, j) in last {
        let result = j.result.clone().unwrap_or_default();
        if !recounts.contains(&id) {
            summary.indexed += result["indexed"].as_u64().unwrap_or(0);
        }
        summary.failed += result["failed"].as_u64().unwrap_or(0);
        summary
            .failures
            .extend(result["failures"].as_array().into_iter().flatten().cloned());
        if j.status != "succeeded" {
            summary
                .failed_jobs
                .push(json!({"id": id, "status": j.status, "last_error": j.last_error}));
        }
    }
    Ok(())
}

fn is_terminal(job: &JobView) -> bool {
    matches!(job.status.as_str(), "succeeded" | "failed" | "cancelled")
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The summary for people.
pub fn print_summary(s: &Summary, what: &str) {
    if what == "import" {
        println!(
            "read {} products: {} accepted, {} rejected",
            s.products,
            s.accepted,
            s.rejected.len()
        );
        if s.images > 0 {
            println!("uploaded {} images", s.images);
        }
        for r in &s.rejected {
            println!("  line {}: {}", r.line, r.error);
        }
    }
    println!("indexed {}, failed {}", s.indexed, s.failed);
    for f in &s.failures {
        println!(
            "  {}: {}",
            f["external_id"].as_str().unwrap_or("?"),
            f["error"].as_str().unwrap_or("?")
        );
    }
    for j in &s.failed_jobs {
        println!(
            "job {} ended {}: {}",
            j["id"].as_str().unwrap_or("?"),
            j["status"].as_str().unwrap_or("?"),
            j["last_error"].as_str().unwrap_or("")
        );
    }
}

/// An edge's replication state from its `/health/dependencies` (no key
/// needed), and whether it is ready; with `wait`, polled (with a progress
/// bar of the bootstrap) until it is.
pub async fn edge_status(
    url: &str,
    wait: bool,
    progress: bool,
) -> anyhow::Result<(crate::api::types::ReplicaView, bool)> {
    let client = Client::new(url, None)?;
    let bar = progress_bar(0, progress && wait);
    bar.set_message("bootstrap");
    loop {
        let deps: crate::api::types::Dependencies = client
            .send(reqwest::Method::GET, "/health/dependencies", None::<&()>)
            .await?;
        let view = deps
            .dependencies
            .get("replica")
            .and_then(|d| d.replica.clone())
            .with_context(|| format!("{} is not an edge replica (no `replica` dependency)", client.base))?;
        let ready = client
            .http
            .get(format!("{}/health/ready", client.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        bar.set_length(view.bootstrap_total.max(view.bootstrap_products));
        bar.set_position(view.bootstrap_products);
        if view.bootstrapped {
            bar.set_message("following");
        }
        if !wait || ready {
            bar.finish_and_clear();
            return Ok((view, ready));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub fn print_edge_status(v: &crate::api::types::ReplicaView, ready: bool) {
    let phase = if v.bootstrapped {
        "following the origin".to_owned()
    } else {
        format!(
            "bootstrapping: {} of {} products",
            v.bootstrap_products, v.bootstrap_total
        )
    };
    println!("edge: {phase}; {}", if ready { "ready" } else { "not ready" });
    println!(
        "position: sequence {} of {} ({} behind)",
        v.applied_seq, v.head_seq, v.lag_sequences
    );
    match v.staleness_secs {
        Some(s) => println!("staleness: {s:.1} s (limit {} s)", v.max_staleness_secs),
        None => println!("staleness: not yet caught up (limit {} s)", v.max_staleness_secs),
    }
    println!(
        "origin: {}",
        if v.origin_reachable {
            "reachable"
        } else {
            "unreachable"
        }
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_files_are_taken_out_of_rows_and_kept_inside_their_directory() {
        let mut p = parse_jsonl(concat!(
            "{\"external_id\":\"a\",\"title\":\"A\",\"image_file\":\"cats/a.png\"}\n",
            "{\"external_id\":\"b\",\"title\":\"B\",\"image_file\":\"../etc/passwd\"}\n",
            "{\"external_id\":\"c\",\"title\":\"C\",\"image_file\":\"/abs.png\"}\n",
            "{\"external_id\":\"d\",\"title\":\"D\"}\n",
            "{\"external_id\":\"e\",\"title\":\"E\",\"image_file\":7}\n",
        ));
        let images = take_image_files(&mut p, Some(Path::new("/pics")));
        assert_eq!(images.len(), 1);
        assert_eq!((images[0].line, images[0].external_id.as_str()), (1, "a"));
        assert_eq!(images[0].path, Path::new("/pics/cats/a.png"));
        assert_eq!(p.products.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 4]);
        assert!(p.products.iter().all(|(_, m)| !m.contains_key(IMAGE_FILE_FIELD)));
        assert_eq!(p.rejected.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 5]);
        // Without --images the rows are refused, not sent without their picture.
        let mut p = parse_jsonl("{\"external_id\":\"a\",\"title\":\"A\",\"image_file\":\"a.png\"}\n");
        assert!(take_image_files(&mut p, None).is_empty());
        assert!(p.products.is_empty());
        assert!(p.rejected[0].error.contains("--images"));
        // Listed twice: the last row's image.
        let mut p = parse_jsonl(concat!(
            "{\"external_id\":\"a\",\"title\":\"A\",\"image_file\":\"1.png\"}\n",
            "{\"external_id\":\"a\",\"title\":\"A2\",\"image_file\":\"2.png\"}\n",
        ));
        let images = take_image_files(&mut p, Some(Path::new("/pics")));
        assert_eq!(images.len(), 1);
        assert_eq!(
            (images[0].line, images[0].path.as_path()),
            (2, Path::new("/pics/2.png"))
        );
    }

    #[test]
    fn the_demo_catalog_takes_every_category_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        for f in [
            "animals/cats/black_cat_01.png",
            "animals/dog.png",
            "animals/bird.png",
            "food/apple_john_doe_02.jpg",
            "food/notes.txt",
        ] {
            let path = dir.path().join(f);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"x").unwrap();
        }
        // A link back up the tree is not followed.
        std::os::unix::fs::symlink(dir.path(), dir.path().join("animals/loop")).unwrap();
        let all = demo_catalog(dir.path(), 0).unwrap();
        assert_eq!(all.len(), 4);
        let two = demo_catalog(dir.path(), 2).unwrap();
        let categories: Vec<&str> = two.iter().map(|r| r["category"].as_str().unwrap()).collect();
        assert_eq!(categories, ["animals", "food"]);
        let cat = all
            .iter()
            .find(|r| r["external_id"] == "animals/cats/black_cat_01")
            .unwrap();
        assert_eq!(cat["title"], "Black cat");
        assert_eq!(cat["tags"], json!(["cats"]));
        assert_eq!(cat[IMAGE_FILE_FIELD], "animals/cats/black_cat_01.png");
        let price: f64 = cat["price"].as_str().unwrap().parse().unwrap();
        assert!((1.0..200.0).contains(&price));
        // Every row is a valid product once its picture is taken out.
        for row in &all {
            let mut row = row.clone();
            row.remove(IMAGE_FILE_FIELD);
            crate::model::parse_product(&serde_json::from_value(Value::Object(row)).unwrap()).unwrap();
        }
        assert_eq!(demo_title("apple_john_doe_02"), "Apple john doe");
    }

    #[test]
    fn jsonl_keeps_line_numbers_and_reports_bad_lines() {
        let p = parse_jsonl(
            "{\"external_id\":\"a\",\"title\":\"A\"}\n\nnot json\n[1]\n{\"external_id\":\"b\"}\n",
        );
        assert_eq!(p.products.iter().map(|(l, _)| *l).collect::<Vec<_>>(), [1, 5]);
        assert_eq!(p.rejected.iter().map(|r| r.line).collect::<Vec<_>>(), [3, 4]);
        assert!(p.rejected[0].error.contains("not valid JSON"));
    }

    #[test]
    fn csv_maps_cells_to_product_fields() {
        let text = "external_id,title,price,tags,in_stock,metadata,category\n\
                    a,Red boots,19.90,leather|red,yes,\"{\"\"size\"\": 42}\",\n\
                    b,Blue hat,,,no,,hats\n\
                    c,Bad,1,,maybe,,\n";
        let p = parse_csv(text).unwrap();
        assert_eq!(p.products.len(), 2);
        let a = &p.products[0].1;
        assert_eq!(a["price"], "19.90");
        assert_eq!(a["tags"], json!(["leather", "red"]));
        assert_eq!(a["in_stock"], true);
        assert_eq!(a["metadata"], json!({"size": 42}));
        assert!(!a.contains_key("category"), "empty cells are left out");
        assert_eq!(p.products[1].1["category"], "hats");
        assert_eq!(p.rejected[0].line, 3);
        assert!(p.rejected[0].error.contains("in_stock"));
    }

    #[test]
    fn format_is_guessed_from_the_extension() {
        assert_eq!(Format::guess(Path::new("x.CSV")), Format::Csv);
        assert_eq!(Format::guess(Path::new("x.jsonl")), Format::Jsonl);
        assert_eq!(Format::guess(Path::new("x")), Format::Jsonl);
    }
}
