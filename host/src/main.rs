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
    /// Run a benchmark and print its figures as JSON.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Bench(bench) = &cli.command {
        return run_bench(bench);
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
            Command::Bench(_) => {}
        }
        Ok(())
    });
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

/// Benchmarks need no settings or runtime: they drive components directly.
fn run_bench(bench: &BenchCommand) -> ExitCode {
    let result = match bench {
        BenchCommand::Encode {
            model,
            iters,
            threads,
        } => vitrine::bench::encode(model, *iters, *threads),
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
