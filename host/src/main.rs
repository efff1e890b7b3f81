//! The `vitrine` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use secrecy::ExposeSecret;
use vitrine::config::{CatalogBackend, Settings};
use vitrine::store::{postgres::PostgresCatalog, sqlite::SqliteCatalog};

/// Multimodal product search: text and image search over a product catalog,
/// with tenant WebAssembly plugins.
#[derive(Debug, Parser)]
#[command(name = "vitrine", version, about, long_about = None)]
struct Cli {
    /// TOML settings file layered over the built-in defaults; environment
    /// variables `VITRINE__SECTION__KEY` override both.
    #[arg(long, global = true, value_name = "FILE", env = "VITRINE_CONFIG")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (applies pending catalog migrations first).
    ///
    /// With the defaults this is the embedded single node: a SQLite catalog
    /// under `data_dir`, listening on 127.0.0.1:8080. Stops gracefully on
    /// SIGTERM or SIGINT, letting in-flight requests finish.
    Serve,
    /// Apply pending catalog migrations and exit.
    ///
    /// Safe to run repeatedly and from many hosts at once: applied
    /// migrations are recorded and skipped.
    Migrate,
    /// Import products from a JSON Lines or CSV file into a running server,
    /// then follow their indexing to the end.
    ///
    /// JSONL: one product object per line (API.md's fields). CSV: a header
    /// row of field names; `tags` separated by `|`, `in_stock` true/false,
    /// `metadata` a JSON object. Existing products (same external_id) are
    /// replaced. Prints a summary: accepted, rejected (with line numbers),
    /// indexed and failed (with reasons).
    Import {
        /// The file to import (`.csv` is read as CSV, anything else as JSONL).
        file: PathBuf,
        #[command(flatten)]
        server: ServerArgs,
        /// Tenant to import into.
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Force the file format instead of guessing it from the extension.
        #[arg(long, value_enum)]
        format: Option<vitrine::cli::Format>,
        /// Products per batch request (1 to 1000).
        #[arg(long, default_value_t = vitrine::cli::DEFAULT_BATCH)]
        batch: usize,
        /// A directory of images: a row's `image_file` (a path relative to
        /// it) is uploaded as the product's image once the product exists.
        #[arg(long, value_name = "DIR")]
        images: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Load a demo catalog of real pictures into a running server: one
    /// product per picture of Debian's `openclipart-png` package (about
    /// 8,000 public-domain PNGs in labelled folders), titled by file name,
    /// in the category of its folder, at a made-up price. Then open the
    /// search page at the server's `/`.
    Demo {
        #[command(flatten)]
        server: ServerArgs,
        /// Tenant to fill (created when the key is the admin key).
        #[arg(long, default_value = "demo")]
        tenant: String,
        /// A folder of pictures in category folders.
        #[arg(long, default_value = vitrine::cli::OPENCLIPART_DIR)]
        dir: PathBuf,
        /// Products to make, taken from every category in turn (0: all).
        #[arg(long, default_value_t = 500)]
        limit: usize,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Re-embed every product (or one tenant's) with the current model on a
    /// running server, and follow the job to the end. Searches keep using
    /// the old index until the new one is complete. Needs the admin key.
    Reindex {
        #[command(flatten)]
        server: ServerArgs,
        /// Only this tenant (its vectors are replaced in place).
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Show an edge replica's replication state: bootstrap progress, lag
    /// behind its origin, staleness, whether the origin answers. With
    /// --wait, follow the bootstrap with a progress bar until the edge is
    /// ready.
    EdgeStatus {
        /// Base URL of the edge.
        #[arg(long, env = "VITRINE_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Follow until the edge is ready.
        #[arg(long)]
        wait: bool,
        /// Print the state as JSON on stdout.
        #[arg(long)]
        json: bool,
    },
    /// Run a benchmark and print its figures as JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// How to reach the server.
#[derive(Debug, clap::Args)]
struct ServerArgs {
    /// Base URL of a running `vitrine serve`.
    #[arg(long, env = "VITRINE_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API key (a tenant key with the `write` scope, or the admin key).
    #[arg(long, env = "VITRINE_API_KEY", hide_env_values = true)]
    key: Option<String>,
}

#[derive(Debug, clap::Args)]
struct OutputArgs {
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Return once the work is queued instead of following it.
    #[arg(long)]
    no_wait: bool,
    /// No progress bar (it is drawn on stderr when that is a terminal).
    #[arg(long)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Fill a data directory with indexed products (random unit vectors of
    /// the model's dimension) for the search load benchmark; writes a
    /// random-weight ViT-B/32 to DATA_DIR/model unless --model is given.
    /// `scripts/bench_search.sh` runs the whole benchmark.
    Populate {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 100_000)]
        products: usize,
    },
    /// The floor of a text search on a populated data dir: encoder time for
    /// the query plus the raw vector search, p50/p99 (no server running).
    SearchFloor {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long)]
        model: PathBuf,
        #[arg(long, default_value_t = 300)]
        queries: usize,
        /// Query texts, one per line (the load test's own list, so the
        /// floor embeds texts of the same token lengths); default:
        /// "query N red leather boots".
        #[arg(long)]
        queries_file: Option<PathBuf>,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Indexing: end-to-end products per second (HTTP image fetch, SSRF
    /// checks, original stored, decode, embed, Qdrant Edge upsert, catalog
    /// status, all through the job runner) against the encoder's raw
    /// throughput on the same decoded images, in the same run.
    Index {
        /// Checkpoint directory; default: a random-weight ViT-B/32 of the
        /// real size, written to a temp dir.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Products (each with its own image).
        #[arg(long, default_value_t = 256)]
        products: usize,
        /// Inference threads; default one per core.
        #[arg(long)]
        threads: Option<usize>,
        /// Side of the served JPEG images, in pixels.
        #[arg(long, default_value_t = 512)]
        image_side: u32,
        /// Write the products one at a time, each with its own
        /// single-product indexing job, while the runner works (a sustained
        /// stream of single-product writes, which the runner coalesces);
        /// default: batch jobs of 64.
        #[arg(long)]
        single: bool,
    },
    /// Replication: an origin and an edge as two processes on a populated
    /// catalog: bootstrap products/s and bytes per product on the wire,
    /// follow lag p50/p99 under sustained writes at the origin, and edge
    /// search p99 against the origin's in paired rounds.
    Replica {
        /// Checkpoint directory; default: a random-weight ViT-B/32.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 100_000)]
        products: usize,
        #[arg(long, default_value_t = 100)]
        writes_per_second: u32,
        #[arg(long, default_value_t = 30)]
        write_secs: u64,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// Searches per side per round.
        #[arg(long, default_value_t = 300)]
        queries: usize,
    },
    /// Fairness: a tenant's search p50/p99 while another tenant hammers
    /// the server (held by its own rate limit), against the same tenant
    /// alone, in paired rounds; then once with the limit lifted.
    Fairness {
        /// Checkpoint directory; default: a random-weight ViT-B/32.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 5_000)]
        products: usize,
        /// Searches of the quiet tenant per round.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Searches per second the noisy tenant sends.
        #[arg(long, default_value_t = 400)]
        offered_rps: u32,
        #[arg(long, default_value_t = 8)]
        noisy_clients: usize,
        /// The noisy tenant's own search limit (burst twice that).
        #[arg(long, default_value_t = 2.0)]
        noisy_per_second: f64,
    },
    /// Plugins: the same text search with and without the `price-boost`
    /// ranker over 100 candidates, in one run, and the time of one plugin
    /// call (instantiation + call). Build the component first:
    /// `cargo build --release --target wasm32-wasip2` in plugins/.
    Plugins {
        /// The price-boost component (.wasm).
        #[arg(long)]
        plugin: PathBuf,
        /// Checkpoint directory; default: a random-weight ViT-B/32.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        #[arg(long, default_value_t = 300)]
        queries: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// CLIP encoder: image throughput at batch 1/8/32, short-query text
    /// latency p50/p99 and peak RSS. `scripts/bench_encode.sh` runs it next
    /// to PyTorch and ONNX Runtime on the same checkpoint.
    Encode {
        /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
        /// Measured iterations (images per batch size, ×4 text queries).
        #[arg(long, default_value_t = 32)]
        iters: usize,
        /// Inference threads; default one per core.
        #[arg(long)]
        threads: Option<usize>,
        /// CPU implementation: auto, vitrine (Vitrine's kernels), candle, or an
        /// instruction set for Vitrine's kernels: avx512, avx2, neon, portable.
        #[arg(long, default_value = "auto")]
        cpu_kernels: vitrine::encoder::CpuKernels,
        /// Weight precision of Vitrine's kernels: f32 or bf16.
        #[arg(long, default_value = "f32", value_parser = vitrine::encoder::parse_precision)]
        precision: vitrine::encoder::Precision,
    },
    /// Paired comparison of Vitrine's kernels on every instruction set this
    /// CPU has (f32 and bf16) and candle, loaded side by side and measured
    /// back to back in rounds: batch-32 image throughput, text latency, and
    /// the ratios of the encoder issue's targets, as JSON.
    Kernels {
        /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
        /// Rounds; each measures every configuration once.
        #[arg(long, default_value_t = 7)]
        rounds: usize,
        /// Inference threads; default one per core.
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Relevance of each search mode on a synthetic catalog with known
    /// answers (exact model numbers, partial terms, category words,
    /// misspellings): nDCG@10, recall@10 and top-1 per mode and query kind,
    /// and, with --python, rank_bm25 on the same set, as JSON.
    Relevance {
        /// Checkpoint directory; default: a random-weight ViT-B/32.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 2_400)]
        products: usize,
        #[arg(long)]
        threads: Option<usize>,
        /// A Python with rank_bm25 and snowballstemmer (the venv of
        /// `scripts/python-tools`: target/ci-venv/bin/python).
        #[arg(long)]
        python: Option<PathBuf>,
    },
    /// Hybrid search at scale: p50/p99 of each mode and of facets against
    /// vector mode in paired rounds, and the index bytes per product of
    /// each representation, as JSON.
    Hybrid {
        #[arg(long, default_value_t = 100_000)]
        products: usize,
        /// Checkpoint directory; default: a random-weight ViT-B/32.
        #[arg(long)]
        model: Option<PathBuf>,
        /// Queries per variant per round.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Quality of `encoder.precision = "bf16"` against f32 on one checkpoint:
    /// cosine of every embedding to its f32 twin, and the top-10 overlap of
    /// brute-force search over a synthetic catalog, as JSON.
    Precision {
        /// Checkpoint directory (config.json, model.safetensors, tokenizer.json).
        #[arg(long)]
        model: PathBuf,
        /// Synthetic products in the catalog.
        #[arg(long, default_value_t = 10_000)]
        products: usize,
        /// Text queries (32 image queries run besides).
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Inference threads; default one per core.
        #[arg(long)]
        threads: Option<usize>,
        /// CPU implementation (as for `bench encode`).
        #[arg(long, default_value = "vitrine")]
        cpu_kernels: vitrine::encoder::CpuKernels,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::EdgeStatus { url, wait, json } = &cli.command {
        let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
        return match block_on(vitrine::cli::edge_status(url, *wait, progress)) {
            Ok((view, ready)) => {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&view).unwrap_or_default());
                } else {
                    vitrine::cli::print_edge_status(&view, ready);
                }
                if ready {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("vitrine: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    if let Command::Bench(bench) = &cli.command {
        return run_bench(bench);
    }
    if matches!(
        cli.command,
        Command::Import { .. } | Command::Reindex { .. } | Command::Demo { .. }
    ) {
        return run_client(cli.command);
    }
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vitrine: {e}");
            return ExitCode::from(2);
        }
    };
    vitrine::telemetry::init_logging(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vitrine: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = runtime.block_on(async move {
        match cli.command {
            Command::Serve => vitrine::server::run(settings).await?,
            Command::Migrate => migrate(&settings).await?,
            Command::Bench(_)
            | Command::Import { .. }
            | Command::Reindex { .. }
            | Command::Demo { .. }
            | Command::EdgeStatus { .. } => {}
        }
        Ok(())
    });
    // Blocking work still running (a plugin compilation cannot be stopped
    // midway) must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "vitrine failed");
            eprintln!("vitrine: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let report = match settings.catalog_backend()? {
        CatalogBackend::Sqlite { path } => {
            std::fs::create_dir_all(&settings.data_dir)?;
            SqliteCatalog::migrate(&path).await?
        }
        CatalogBackend::Postgres => {
            let url = settings
                .catalog
                .url
                .as_ref()
                .map(|u| u.expose_secret().to_owned())
                .unwrap_or_default();
            PostgresCatalog::open(&url, 1)?.migrate().await?
        }
    };
    println!(
        "migrations: {} applied ({:?}), {} already applied",
        report.applied.len(),
        report.applied,
        report.already_applied.len()
    );
    Ok(())
}

/// `import` and `reindex` talk to a server over HTTP: no settings needed.
fn run_client(command: Command) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vitrine: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Import {
                file,
                server,
                tenant,
                format,
                batch,
                images,
                output,
            } => {
                let client = vitrine::cli::Client::new(&server.url, server.key)?;
                let summary = vitrine::cli::import(
                    &client,
                    &vitrine::cli::ImportOptions {
                        file: &file,
                        format,
                        tenant: &tenant,
                        batch,
                        wait: !output.no_wait,
                        progress: !output.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                        images: images.as_deref(),
                    },
                )
                .await?;
                Ok::<_, anyhow::Error>((summary, output.json, "import"))
            }
            Command::Demo {
                server,
                tenant,
                dir,
                limit,
                output,
            } => {
                let client = vitrine::cli::Client::new(&server.url, server.key)?;
                let summary = vitrine::cli::demo(
                    &client,
                    &vitrine::cli::DemoOptions {
                        dir: &dir,
                        tenant: &tenant,
                        limit,
                        wait: !output.no_wait,
                        progress: !output.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    },
                )
                .await?;
                if !output.json {
                    println!(
                        "demo catalog in tenant `{tenant}`: open {}/?tenant={tenant}",
                        client.base
                    );
                    if let Some(key) = vitrine::cli::demo_search_key(&client, &tenant).await {
                        println!("and search with this key (scope `search`): {key}");
                    }
                }
                Ok((summary, output.json, "import"))
            }
            Command::Reindex {
                server,
                tenant,
                output,
            } => {
                let client = vitrine::cli::Client::new(&server.url, server.key)?;
                let summary = vitrine::cli::reindex(
                    &client,
                    &vitrine::cli::ReindexOptions {
                        tenant: tenant.as_deref(),
                        wait: !output.no_wait,
                        progress: !output.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    },
                )
                .await?;
                Ok((summary, output.json, "reindex"))
            }
            _ => anyhow::bail!("not a client command"),
        }
    });
    match result {
        Ok((summary, json, what)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            } else {
                vitrine::cli::print_summary(&summary, what);
            }
            // Anything that did not make it is an unsuccessful run.
            if summary.rejected.is_empty() && summary.failed == 0 && summary.failed_jobs.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("vitrine: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs a benchmark future on a fresh multi-threaded runtime.
fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(f))
}

/// Benchmarks need no settings or runtime: they drive components directly.
fn run_bench(bench: &BenchCommand) -> ExitCode {
    let result = match bench {
        BenchCommand::Encode {
            model,
            iters,
            threads,
            cpu_kernels,
            precision,
        } => vitrine::bench::encode(model, *iters, *threads, *cpu_kernels, *precision)
            .map_err(anyhow::Error::from),
        BenchCommand::Kernels {
            model,
            rounds,
            threads,
        } => {
            use vitrine::encoder::{CpuKernels, Isa, Precision};
            let mut configs: Vec<(CpuKernels, Precision)> = Isa::supported()
                .into_iter()
                .filter(|isa| *isa != Isa::Portable)
                .flat_map(|isa| [Precision::F32, Precision::Bf16].map(|p| (CpuKernels::Forced(isa), p)))
                .collect();
            configs.push((CpuKernels::Candle, Precision::F32));
            vitrine::bench::kernels(model, &configs, *rounds, *threads).map_err(anyhow::Error::from)
        }
        BenchCommand::Precision {
            model,
            products,
            queries,
            threads,
            cpu_kernels,
        } => vitrine::bench::precision(model, *products, *queries, *threads, *cpu_kernels)
            .map_err(anyhow::Error::from),
        BenchCommand::Populate {
            data_dir,
            model,
            products,
        } => block_on(vitrine::bench::populate(data_dir, model.as_deref(), *products)),
        BenchCommand::Relevance {
            model,
            products,
            threads,
            python,
        } => block_on(vitrine::bench::relevance(&vitrine::bench::RelevanceOptions {
            model: model.as_deref(),
            products: *products,
            threads: *threads,
            python: python.as_deref(),
        })),
        BenchCommand::Hybrid {
            products,
            model,
            queries,
            rounds,
            threads,
        } => block_on(vitrine::bench::hybrid(&vitrine::bench::HybridBenchOptions {
            products: *products,
            model: model.as_deref(),
            queries: *queries,
            rounds: *rounds,
            threads: *threads,
        })),
        BenchCommand::Plugins {
            plugin,
            model,
            products,
            queries,
            threads,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(vitrine::bench::plugins(
                    plugin,
                    model.as_deref(),
                    *products,
                    *queries,
                    *threads,
                ))
            }),
        BenchCommand::Replica {
            model,
            products,
            writes_per_second,
            write_secs,
            rounds,
            queries,
        } => block_on(vitrine::bench::replica(&vitrine::bench::ReplicaBenchOptions {
            model: model.as_deref(),
            products: *products,
            writes_per_second: *writes_per_second,
            write_secs: *write_secs,
            rounds: *rounds,
            queries: *queries,
        })),
        BenchCommand::Fairness {
            model,
            products,
            queries,
            rounds,
            offered_rps,
            noisy_clients,
            noisy_per_second,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(vitrine::bench::fairness(&vitrine::bench::FairnessOptions {
                    model: model.as_deref(),
                    products: *products,
                    queries: *queries,
                    rounds: *rounds,
                    offered_rps: *offered_rps,
                    noisy_clients: *noisy_clients,
                    noisy_per_second: *noisy_per_second,
                }))
            }),
        BenchCommand::SearchFloor {
            data_dir,
            model,
            queries,
            queries_file,
            threads,
        } => block_on(vitrine::bench::search_floor(
            data_dir,
            model,
            *queries,
            queries_file.as_deref(),
            *threads,
        )),
        BenchCommand::Index {
            model,
            products,
            threads,
            image_side,
            single,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| {
                rt.block_on(vitrine::bench::index(&vitrine::bench::IndexBenchOptions {
                    model: model.as_deref(),
                    products: *products,
                    threads: *threads,
                    image_side: *image_side,
                    single: *single,
                }))
            }),
    };
    match result {
        Ok(figures) => {
            println!("{}", serde_json::to_string_pretty(&figures).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vitrine bench: {e}");
            ExitCode::FAILURE
        }
    }
}
