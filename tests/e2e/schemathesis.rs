//! Schemathesis (PyPI) against the real binary, on each catalog: every
//! route of `/openapi.json`, every check, every phase (examples, coverage,
//! fuzzing, stateful along the document's links). The run must end with no
//! failure: no 5xx, no answer the document does not describe (status,
//! content type, body schema), nothing accepted that the document says is
//! invalid, and the process still up. The document itself must validate as
//! OpenAPI 3.1 (openapi-spec-validator).
//!
//! The tools come from `scripts/python-tools` (a venv under target/ with
//! the versions pinned in scripts/ci-python-requirements.txt). Without
//! them the test says so and passes, except in CI (`CI=true`), where it
//! fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{ADMIN_KEY, Catalog, Setup};

/// Fixed, so a failure replays; the case count follows from it.
const SEED: &str = "20261130";
/// Cases per operation in the fuzzing phase (the coverage phase adds its
/// own boundary and negative cases).
const MAX_EXAMPLES: &str = "100";
/// A run that takes longer has hung.
const RUN_LIMIT: Duration = Duration::from_secs(20 * 60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's bin directory, or `None` (with a note) outside CI.
fn python_tools() -> Option<PathBuf> {
    let out = Command::new(repo().join("scripts/python-tools"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/python-tools");
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()));
    }
    assert!(
        !std::env::var("CI").is_ok_and(|v| v == "true"),
        "scripts/python-tools failed in CI"
    );
    eprintln!("skipped schemathesis: scripts/python-tools could not install the Python tools");
    None
}

async fn fuzz(catalog: Catalog) {
    let Some(bin) = python_tools() else {
        return;
    };
    let backend = catalog.name();
    let setup = Setup::new(&catalog);
    let mut server = setup.start();
    let base = server.url("");
    let work = tempfile::tempdir().unwrap();

    // The document validates as OpenAPI 3.1.
    let doc = reqwest::get(format!("{base}/openapi.json")).await.unwrap();
    assert_eq!(doc.status(), 200);
    let doc_path = work.path().join("openapi.json");
    std::fs::write(&doc_path, doc.bytes().await.unwrap()).unwrap();
    let out = Command::new(bin.join("openapi-spec-validator"))
        .args(["--schema", "3.1", "--validation-errors", "all"])
        .arg(&doc_path)
        .output()
        .unwrap();
    // The validator quotes the whole document: its first lines say why.
    let why: String = String::from_utf8_lossy(&out.stdout)
        .chars()
        .chain(String::from_utf8_lossy(&out.stderr).chars())
        .take(2000)
        .collect();
    assert!(
        out.status.success(),
        "{backend}: /openapi.json is not valid OpenAPI 3.1:\n{why}"
    );

    let report = work.path().join("report.json");
    let mut child = Command::new(bin.join("schemathesis"))
        .current_dir(work.path())
        .env("HYPOTHESIS_STORAGE_DIRECTORY", work.path().join("hypothesis"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .arg("--config-file")
        .arg(repo().join("scripts/schemathesis.toml"))
        .args(["run", &format!("{base}/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {ADMIN_KEY}")])
        .args([
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
        ])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED, "--workers", "1"])
        .args(["--request-timeout", "30", "--no-color", "--report", "json"])
        .arg("--report-json-path")
        .arg(&report)
        .spawn()
        .expect("start schemathesis");
    // Drain the pipes while it runs.
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            panic!("{backend}: schemathesis ran past {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let (stdout, stderr) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    let summary: Value = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    eprintln!(
        "{backend}: schemathesis generated {} cases in {:.0} s ({} operations tested), exit {status}",
        summary["test_cases"]["generated"],
        start.elapsed().as_secs_f64(),
        summary["operations"]["tested"],
    );
    assert!(
        status.success(),
        "{backend}: schemathesis failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        summary["phases"]["stateful"]["status"], "success",
        "{backend}: the stateful phase did not run: {summary}"
    );
    assert!(server.is_running(), "{backend}: the server died during the run");
    let live = reqwest::get(format!("{base}/health/live")).await.unwrap();
    assert_eq!(live.status(), 200, "{backend}");
    drop(server);
    catalog.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_on_sqlite() {
    fuzz(Catalog::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_nothing_on_postgres() {
    match crate::harness::PgSchema::create().await {
        Some(pg) => fuzz(Catalog::Postgres(Box::new(pg))).await,
        None => eprintln!("skipped schemathesis on PostgreSQL: VITRINE_TEST_POSTGRES_URL is unset"),
    }
}
