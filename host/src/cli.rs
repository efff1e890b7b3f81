//! `vitrine import` and `vitrine reindex`: clients of a running server's
//! HTTP API (so that they work the same against one embedded node or a
//! cluster), with progress bars that follow the indexing jobs to the end.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value, json};

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

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the server at {}", self.base))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let message = value["error"]["message"].as_str().unwrap_or("no message");
            bail!("{method} {path} answered {status}: {message}");
        }
        Ok(value)
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
}

/// Reads `file`, sends it in batches, then follows the indexing jobs.
pub async fn import(client: &Client, o: &ImportOptions<'_>) -> anyhow::Result<Summary> {
    if !(1..=1000).contains(&o.batch) {
        bail!("--batch must be between 1 and 1000");
    }
    let text =
        std::fs::read_to_string(o.file).with_context(|| format!("cannot read {}", o.file.display()))?;
    let parsed = match o.format.unwrap_or_else(|| Format::guess(o.file)) {
        Format::Jsonl => parse_jsonl(&text),
        Format::Csv => parse_csv(&text)?,
    };
    let mut summary = Summary {
        products: parsed.products.len() + parsed.rejected.len(),
        ..Summary::default()
    };
    let mut rejected = parsed.rejected;
    let bar = progress_bar(parsed.products.len() as u64, o.progress);
    bar.set_message("uploading");
    let path = format!("/v1/tenants/{}/products/batch", urlencoding(o.tenant));
    let mut job_sizes = Vec::new();
    for chunk in parsed.products.chunks(o.batch) {
        let body =
            json!({"products": chunk.iter().map(|(_, p)| Value::Object(p.clone())).collect::<Vec<_>>()});
        let reply = client.send(reqwest::Method::POST, &path, Some(&body)).await?;
        let accepted = reply["accepted"].as_u64().unwrap_or(0) as usize;
        summary.accepted += accepted;
        for r in reply["rejected"].as_array().into_iter().flatten() {
            let index = r["index"].as_u64().unwrap_or(0) as usize;
            let line = chunk.get(index).map_or(0, |(l, _)| *l);
            let error = r["error"]["message"].as_str().unwrap_or("rejected").to_owned();
            rejected.push(Rejected { line, error });
        }
        if let Some(id) = reply["job_id"].as_str() {
            summary.jobs.push(id.to_owned());
            job_sizes.push(accepted as u64);
        }
        bar.inc(chunk.len() as u64);
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
        follow(client, &summary.jobs.clone(), &bar, &mut summary).await?;
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// Options of `vitrine reindex`.
pub struct ReindexOptions<'a> {
    pub tenant: Option<&'a str>,
    pub wait: bool,
    pub progress: bool,
}

/// Starts a reindex and follows it.
pub async fn reindex(client: &Client, o: &ReindexOptions<'_>) -> anyhow::Result<Summary> {
    let body = match o.tenant {
        Some(t) => json!({"tenant": t}),
        None => json!({}),
    };
    let reply = client
        .send(reqwest::Method::POST, "/v1/admin/reindex", Some(&body))
        .await?;
    let id = reply["job_id"]
        .as_str()
        .context("the server answered without a job id")?
        .to_owned();
    let mut summary = Summary {
        jobs: vec![id.clone()],
        ..Summary::default()
    };
    if o.wait {
        let bar = progress_bar(0, o.progress);
        bar.set_message("reindexing");
        follow(client, &[id], &bar, &mut summary).await?;
        bar.finish_and_clear();
    }
    Ok(summary)
}

/// Polls `jobs` until every one has finished, moving `bar` with their
/// progress, and adds their results to `summary`.
async fn follow(
    client: &Client,
    jobs: &[String],
    bar: &ProgressBar,
    summary: &mut Summary,
) -> anyhow::Result<()> {
    let mut last: BTreeMap<String, Value> = BTreeMap::new();
    loop {
        let mut done = 0u64;
        let mut total = 0u64;
        let mut open = 0;
        for id in jobs {
            if let Some(j) = last.get(id)
                && is_terminal(j)
            {
                done += j["progress"]["done"].as_u64().unwrap_or(0);
                total += j["progress"]["total"].as_u64().unwrap_or(0);
                continue;
            }
            let j = client
                .send(reqwest::Method::GET, &format!("/v1/jobs/{id}"), None)
                .await?;
            done += j["progress"]["done"].as_u64().unwrap_or(0);
            total += j["progress"]["total"].as_u64().unwrap_or(0);
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
        let result = &j["result"];
        summary.indexed += result["indexed"].as_u64().unwrap_or(0);
        summary.failed += result["failed"].as_u64().unwrap_or(0);
        summary
            .failures
            .extend(result["failures"].as_array().into_iter().flatten().cloned());
        if j["status"] != "succeeded" {
            summary
                .failed_jobs
                .push(json!({"id": id, "status": j["status"], "last_error": j["last_error"]}));
        }
    }
    Ok(())
}

fn is_terminal(job: &Value) -> bool {
    matches!(job["status"].as_str(), Some("succeeded" | "failed" | "cancelled"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
