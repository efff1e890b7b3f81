//! The runner over a real SQLite catalog, driven step by step.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use super::*;
use crate::store::sqlite::SqliteCatalog;
use crate::store::{JobStatus, NewJob};

/// A handler scripted per attempt: fails (retryably) the first `fail_first`
/// attempts, then succeeds, reporting progress on the way.
struct Scripted {
    calls: AtomicUsize,
    fail_first: usize,
    fatal: bool,
    sleep: Duration,
    limit: Duration,
}

impl Scripted {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            fail_first: 0,
            fatal: false,
            sleep: Duration::ZERO,
            limit: Duration::from_secs(5),
        }
    }
}

#[async_trait]
impl JobHandler for Scripted {
    fn time_limit(&self) -> Duration {
        self.limit
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, JobError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        ctx.progress(1, 2).await?;
        tokio::time::sleep(self.sleep).await;
        if n < self.fail_first {
            return Err(if self.fatal {
                JobError::Fatal(format!("fatal {n}"))
            } else {
                JobError::Retryable(format!("flaky {n}"))
            });
        }
        ctx.progress(2, 2).await?;
        Ok(json!({"payload": job.payload, "attempt": n + 1}))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    catalog: Arc<dyn Catalog>,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let catalog = SqliteCatalog::open(&dir.path().join("c.sqlite3"), 2)
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        catalog: Arc::new(catalog),
    }
}

fn config(worker: &str) -> RunnerConfig {
    RunnerConfig {
        lease: Duration::from_millis(600),
        poll_interval: Duration::from_millis(20),
        shutdown_grace: Duration::from_millis(100),
        // Retry at once so tests need not wait for backoff.
        retry: RetryPolicy {
            initial: Duration::ZERO,
            factor: 2.0,
            max: Duration::ZERO,
        },
        ..RunnerConfig::new(worker)
    }
}

fn runner(f: &Fixture, worker: &str, handler: Scripted) -> Arc<JobRunner> {
    let mut r = JobRunner::new(f.catalog.clone(), config(worker));
    r.register("test", Arc::new(handler));
    Arc::new(r)
}

async fn enqueue(f: &Fixture, max_attempts: i32) -> String {
    let mut j = NewJob::new("test", "default", json!({"x": 1}));
    j.max_attempts = max_attempts;
    f.catalog.enqueue_job(&j).await.unwrap();
    j.id
}

async fn job(f: &Fixture, id: &str) -> Job {
    f.catalog.get_job(id).await.unwrap().unwrap()
}

#[tokio::test]
async fn a_successful_job_records_its_result_and_progress() {
    let f = fixture().await;
    let id = enqueue(&f, 5).await;
    let r = runner(&f, "w", Scripted::new());
    assert_eq!(r.run_once(10).await.unwrap(), vec![(id.clone(), Ran::Succeeded)]);
    let j = job(&f, &id).await;
    assert_eq!(j.status, JobStatus::Succeeded);
    assert_eq!(j.result, Some(json!({"payload": {"x": 1}, "attempt": 1})));
    assert_eq!((j.progress_done, j.progress_total, j.attempts), (2, 2, 1));
    assert!(r.run_once(10).await.unwrap().is_empty(), "never runs twice");
}

#[tokio::test]
async fn retryable_failures_are_retried_until_success() {
    let f = fixture().await;
    let id = enqueue(&f, 5).await;
    let r = runner(
        &f,
        "w",
        Scripted {
            fail_first: 2,
            ..Scripted::new()
        },
    );
    assert_eq!(
        r.run_once(1).await.unwrap()[0].1,
        Ran::WillRetry("flaky 0".into())
    );
    assert_eq!(job(&f, &id).await.status, JobStatus::Queued);
    assert_eq!(
        r.run_once(1).await.unwrap()[0].1,
        Ran::WillRetry("flaky 1".into())
    );
    assert_eq!(r.run_once(1).await.unwrap()[0].1, Ran::Succeeded);
    let j = job(&f, &id).await;
    assert_eq!((j.status, j.attempts), (JobStatus::Succeeded, 3));
    assert_eq!(
        j.last_error.as_deref(),
        Some("flaky 1"),
        "the last failure stays visible"
    );
}

#[tokio::test]
async fn attempts_run_out_and_the_job_fails_with_the_last_error() {
    let f = fixture().await;
    let id = enqueue(&f, 2).await;
    let r = runner(
        &f,
        "w",
        Scripted {
            fail_first: 10,
            ..Scripted::new()
        },
    );
    assert_eq!(
        r.run_once(1).await.unwrap()[0].1,
        Ran::WillRetry("flaky 0".into())
    );
    assert_eq!(r.run_once(1).await.unwrap()[0].1, Ran::Failed("flaky 1".into()));
    let j = job(&f, &id).await;
    assert_eq!(
        (j.status, j.attempts, j.last_error.as_deref()),
        (JobStatus::Failed, 2, Some("flaky 1"))
    );
    assert!(r.run_once(1).await.unwrap().is_empty());
}

#[tokio::test]
async fn fatal_errors_fail_at_once() {
    let f = fixture().await;
    let id = enqueue(&f, 5).await;
    let r = runner(
        &f,
        "w",
        Scripted {
            fail_first: 1,
            fatal: true,
            ..Scripted::new()
        },
    );
    assert_eq!(r.run_once(1).await.unwrap()[0].1, Ran::Failed("fatal 0".into()));
    assert_eq!(job(&f, &id).await.status, JobStatus::Failed);
}

#[tokio::test]
async fn an_attempt_over_the_time_limit_is_a_retryable_failure() {
    let f = fixture().await;
    let id = enqueue(&f, 5).await;
    let slow = Scripted {
        sleep: Duration::from_secs(30),
        limit: Duration::from_millis(100),
        ..Scripted::new()
    };
    let r = runner(&f, "w", slow);
    let ran = r.run_once(1).await.unwrap();
    assert!(
        matches!(&ran[0].1, Ran::WillRetry(e) if e.contains("timed out")),
        "{ran:?}"
    );
    assert_eq!(job(&f, &id).await.status, JobStatus::Queued);
}

#[tokio::test]
async fn a_dead_workers_job_is_reclaimed_and_run_by_another() {
    let f = fixture().await;
    let id = enqueue(&f, 5).await;
    // The dead worker claimed it with a lease that had already run out (a
    // second ago, so the runner's clock cannot land in the same millisecond).
    let t = now();
    let expired = t - chrono::Duration::seconds(1);
    let claimed = f
        .catalog
        .claim_jobs("dead", &["test".to_owned()], t, expired, 1)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let r = runner(&f, "alive", Scripted::new());
    assert_eq!(r.run_once(1).await.unwrap(), vec![(id.clone(), Ran::Succeeded)]);
    assert_eq!(job(&f, &id).await.attempts, 2);
}

#[tokio::test]
async fn cancelling_a_running_job_stops_its_worker() {
    let f = fixture().await;
    let id = enqueue(&f, 5).await;
    let r = runner(
        &f,
        "w",
        Scripted {
            sleep: Duration::from_secs(30),
            ..Scripted::new()
        },
    );
    let catalog = f.catalog.clone();
    let cancel_id = id.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        catalog.cancel_job(&cancel_id, now()).await.unwrap();
    });
    let started = std::time::Instant::now();
    assert_eq!(r.run_once(1).await.unwrap()[0].1, Ran::Lost);
    // Noticed at the next heartbeat (a third of the 600 ms lease).
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(job(&f, &id).await.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn the_run_loop_drains_the_queue_and_releases_unfinished_jobs_on_shutdown() {
    let f = fixture().await;
    let ids: Vec<String> = futures_join(&f, 6).await;
    let r = runner(&f, "loop", Scripted::new());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(r.clone().run(async move {
        let _ = stop_rx.await;
    }));
    for _ in 0..200 {
        let mut done = 0;
        for id in &ids {
            done += usize::from(job(&f, id).await.status == JobStatus::Succeeded);
        }
        if done == ids.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        assert_eq!(job(&f, id).await.status, JobStatus::Succeeded);
    }
    let _ = stop_tx.send(());
    handle.await.unwrap();

    // A job still running at shutdown goes back to the queue, attempt uncounted.
    let stuck = enqueue(&f, 5).await;
    let r = runner(
        &f,
        "stuck",
        Scripted {
            sleep: Duration::from_secs(30),
            ..Scripted::new()
        },
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let handle = tokio::spawn(r.clone().run(async move {
        let _ = stop_rx.await;
    }));
    for _ in 0..100 {
        if job(&f, &stuck).await.status == JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    handle.await.unwrap();
    let j = job(&f, &stuck).await;
    assert_eq!(
        (j.status, j.attempts, j.lease_owner),
        (JobStatus::Queued, 0, None)
    );
}

async fn futures_join(f: &Fixture, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(enqueue(f, 5).await);
    }
    ids
}

#[test]
fn backoff_doubles_with_jitter_up_to_the_cap() {
    let p = RetryPolicy::default();
    for _ in 0..50 {
        let d1 = p.delay(1).as_secs_f64();
        assert!((0.5..=1.0).contains(&d1), "{d1}");
        let d3 = p.delay(3).as_secs_f64();
        assert!((2.0..=4.0).contains(&d3), "{d3}");
        let d10 = p.delay(10).as_secs_f64();
        assert!((30.0..=60.0).contains(&d10), "{d10}");
    }
}

/// Runs jobs of one tenant together, recording each call's jobs; a job
/// whose payload says `fail` fails retryably, alone.
struct Coalescing {
    calls: parking_lot::Mutex<Vec<Vec<String>>>,
    max: usize,
}

#[async_trait]
impl JobHandler for Coalescing {
    fn time_limit(&self) -> Duration {
        Duration::from_secs(5)
    }

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, JobError> {
        self.run_many(std::slice::from_ref(job), ctx)
            .await
            .pop()
            .unwrap_or(Err(JobError::Fatal("no result".into())))
    }

    fn max_coalesced(&self, _kind: &str) -> usize {
        self.max
    }

    async fn run_many(&self, jobs: &[Job], ctx: &JobContext) -> Vec<Result<Value, JobError>> {
        ctx.progress(0, 1).await.unwrap();
        self.calls
            .lock()
            .push(jobs.iter().map(|j| j.payload["n"].to_string()).collect());
        jobs.iter()
            .map(|j| {
                if j.payload["fail"] == json!(true) {
                    Err(JobError::Retryable("flaky".into()))
                } else {
                    Ok(json!({"tenant": j.tenant, "together": jobs.len()}))
                }
            })
            .collect()
    }
}

#[tokio::test]
async fn pending_jobs_of_a_coalescing_kind_run_together_per_tenant() {
    let f = fixture().await;
    f.catalog.create_tenant("other", "Other").await.unwrap();
    let mut ids = Vec::new();
    // Queued in this order: default 0-3, other 4-5, default 6 (fails
    // once).
    for (n, tenant) in [
        "default", "default", "default", "default", "other", "other", "default",
    ]
    .into_iter()
    .enumerate()
    {
        let j = NewJob::new("test", tenant, json!({"n": n, "fail": n == 6}));
        f.catalog.enqueue_job(&j).await.unwrap();
        ids.push(j.id);
        // Distinct creation times keep the claim order.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handler = Arc::new(Coalescing {
        calls: parking_lot::Mutex::new(Vec::new()),
        max: 5,
    });
    let mut r = JobRunner::new(f.catalog.clone(), config("w"));
    r.register("test", handler.clone());
    let r = Arc::new(r);
    // One unit: the first job and the pending ones of its tenant behind it
    // (up to five in all), run as one call. The failing one retries on its
    // own; its companions succeed.
    let ran = r.run_once(1).await.unwrap();
    assert_eq!(ran.len(), 5, "{ran:?}");
    assert_eq!(
        ran.iter().filter(|(_, r)| *r == Ran::Succeeded).count(),
        4,
        "{ran:?}"
    );
    assert_eq!(*handler.calls.lock(), vec![vec!["0", "1", "2", "3", "6"]]);
    assert_eq!(
        job(&f, &ids[1]).await.result,
        Some(json!({"tenant": "default", "together": 5}))
    );
    assert_eq!(job(&f, &ids[6]).await.status, JobStatus::Queued);
    assert_eq!(job(&f, &ids[6]).await.last_error.as_deref(), Some("flaky"));
    // Then the other tenant's, together.
    let ran = r.run_once(1).await.unwrap();
    assert_eq!(ran.len(), 2, "{ran:?}");
    assert_eq!(handler.calls.lock()[1], vec!["4", "5"]);
    assert_eq!(job(&f, &ids[5]).await.status, JobStatus::Succeeded);
}
