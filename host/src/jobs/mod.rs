//! The durable job runner. Jobs live in the catalog (`jobs` table), so
//! nothing is lost when a process dies: a worker claims jobs with a lease,
//! keeps the lease alive with heartbeats while it works, and records the
//! outcome. A dead worker's lease runs out and another worker reclaims the
//! job; a cancelled or reclaimed job fences its old worker off (its
//! heartbeats and outcome are refused). Failures are retried with
//! exponential backoff and jitter; each kind has a time limit.
//!
//! Tests drive the runner step by step with [`JobRunner::run_once`] instead
//! of sleeping.

pub mod kinds;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::model::now;
use crate::store::{Catalog, Job, JobOutcome, StoreError, StoreResult};
use crate::telemetry::{JOB_DURATION, JOB_LATENCY, JOBS_FINISHED};

/// How one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (a timeout, an unavailable dependency).
    #[error("{0}")]
    Retryable(String),
    /// Will fail the same way every time (an image that answers 404).
    #[error("{0}")]
    Fatal(String),
}

/// The work behind one job kind.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Longest one attempt may run before it counts as a retryable failure.
    fn time_limit(&self) -> Duration;

    async fn run(&self, job: &Job, ctx: &JobContext) -> Result<Value, JobError>;

    /// How many claimed jobs of `kind` and one tenant may run together as
    /// one unit ([`Self::run_many`]); 1 (the default) runs each alone.
    fn max_coalesced(&self, _kind: &str) -> usize {
        1
    }

    /// Runs jobs of one kind and tenant together; one result per job, in
    /// order. Called only for kinds whose `max_coalesced` is above 1.
    async fn run_many(&self, jobs: &[Job], ctx: &JobContext) -> Vec<Result<Value, JobError>> {
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            out.push(self.run(job, ctx).await);
        }
        out
    }
}

/// What a running handler may use: progress reporting (which also proves
/// the job is still this worker's).
pub struct JobContext {
    catalog: Arc<dyn Catalog>,
    /// The job, or the jobs run together (`run_many`).
    job_ids: Vec<String>,
    worker: String,
    lease: chrono::Duration,
}

impl JobContext {
    /// Records progress and extends the lease. `Err` when the job was
    /// cancelled or taken over: the handler should stop. Jobs run together
    /// have no progress of their own: their leases are extended, and one
    /// cancelled among them does not stop the others.
    pub async fn progress(&self, done: i64, total: i64) -> Result<(), JobError> {
        let t = now();
        let [id] = self.job_ids.as_slice() else {
            for id in &self.job_ids {
                if let Err(e) = self
                    .catalog
                    .heartbeat_job(id, &self.worker, t, t + self.lease, None)
                    .await
                {
                    return Err(JobError::Retryable(format!("cannot record progress: {e}")));
                }
            }
            return Ok(());
        };
        match self
            .catalog
            .heartbeat_job(id, &self.worker, t, t + self.lease, Some((done, total)))
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobError::Fatal("the job was cancelled or taken over".into())),
            Err(e) => Err(JobError::Retryable(format!("cannot record progress: {e}"))),
        }
    }

    pub fn job_id(&self) -> &str {
        self.job_ids.first().map_or("", String::as_str)
    }
}

/// Backoff between attempts: `min(initial × factor^(n−1), max)`, then
/// "equal jitter" (a random point in the upper half) so that many jobs
/// failing together do not retry in lockstep.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub factor: f64,
    pub max: Duration,
}

impl RetryPolicy {
    /// `jobs.retry_initial_ms`, doubling up to `jobs.retry_max_ms`.
    pub fn from_settings(jobs: &crate::config::JobsSettings) -> Self {
        Self {
            initial: Duration::from_millis(jobs.retry_initial_ms),
            factor: 2.0,
            max: Duration::from_millis(jobs.retry_max_ms),
        }
    }
}

impl Default for RetryPolicy {
    /// The built-in settings' (1 s doubling up to 60 s).
    fn default() -> Self {
        Self::from_settings(&crate::config::Settings::defaults().jobs)
    }
}

impl RetryPolicy {
    /// Delay before attempt `attempt + 1`, after `attempt` failed ones.
    pub fn delay(&self, attempt: i32) -> Duration {
        let exp = self.factor.powi(attempt.saturating_sub(1).max(0));
        let base = self.initial.as_secs_f64() * exp;
        let capped = base.min(self.max.as_secs_f64());
        let jittered = capped / 2.0 + rand::rng().random_range(0.0..=capped / 2.0);
        Duration::from_secs_f64(jittered)
    }
}

#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Unique per process: leases are held in its name.
    pub worker_id: String,
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a claim lasts without a heartbeat. Heartbeats come every
    /// third of it, so two can be lost before another worker takes over.
    pub lease: Duration,
    /// How often an idle runner looks for new jobs.
    pub poll_interval: Duration,
    /// Time in-flight jobs get to finish on shutdown before they are put
    /// back in the queue.
    pub shutdown_grace: Duration,
    pub retry: RetryPolicy,
}

impl RunnerConfig {
    /// The runner of these settings (`jobs.*`, `server.shutdown_grace_secs`).
    pub fn from_settings(settings: &crate::config::Settings, worker_id: impl Into<String>) -> Self {
        let j = &settings.jobs;
        Self {
            worker_id: worker_id.into(),
            concurrency: j.concurrency,
            lease: Duration::from_secs(j.lease_secs),
            poll_interval: Duration::from_millis(j.poll_interval_ms),
            shutdown_grace: Duration::from_secs(settings.server.shutdown_grace_secs),
            retry: RetryPolicy::from_settings(j),
        }
    }

    /// The built-in settings' runner.
    pub fn new(worker_id: impl Into<String>) -> Self {
        Self::from_settings(crate::config::Settings::defaults(), worker_id)
    }
}

/// What happened to one claimed job in this process.
#[derive(Debug, Clone, PartialEq)]
pub enum Ran {
    Succeeded,
    WillRetry(String),
    Failed(String),
    /// Cancelled or reclaimed while running; nothing recorded.
    Lost,
}

pub struct JobRunner {
    catalog: Arc<dyn Catalog>,
    handlers: HashMap<String, Arc<dyn JobHandler>>,
    config: RunnerConfig,
    wake: Notify,
}

impl JobRunner {
    pub fn new(catalog: Arc<dyn Catalog>, config: RunnerConfig) -> Self {
        Self {
            catalog,
            handlers: HashMap::new(),
            config,
            wake: Notify::new(),
        }
    }

    pub fn register(&mut self, kind: &str, handler: Arc<dyn JobHandler>) {
        self.handlers.insert(kind.to_owned(), handler);
    }

    /// Wakes an idle runner at once (after enqueueing), instead of waiting
    /// for the next poll.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    fn kinds(&self) -> Vec<String> {
        self.handlers.keys().cloned().collect()
    }

    async fn claim(&self, limit: usize) -> StoreResult<Vec<Job>> {
        if limit == 0 || self.handlers.is_empty() {
            return Ok(Vec::new());
        }
        let t = now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(30));
        self.catalog
            .claim_jobs(&self.config.worker_id, &self.kinds(), t, t + lease, limit as u32)
            .await
    }

    /// Claims up to `limit` units of work and runs them (concurrently) to
    /// their outcome. For tests and tools that drive the queue step by step.
    pub async fn run_once(self: &Arc<Self>, limit: usize) -> StoreResult<Vec<(String, Ran)>> {
        let units = self.claim_units(limit).await?;
        let mut set = JoinSet::new();
        for unit in units {
            let me = self.clone();
            set.spawn(async move { me.execute_unit(unit).await });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            if let Ok(r) = r {
                out.extend(r);
            }
        }
        Ok(out)
    }

    /// Claims up to `limit` units of work: a job, or, for a kind that
    /// coalesces, a job and up to `max_coalesced - 1` more of its kind
    /// pending behind it (one slot runs them all).
    async fn claim_units(&self, limit: usize) -> StoreResult<Vec<Vec<Job>>> {
        let jobs = self.claim(limit).await?;
        let mut units = Vec::with_capacity(jobs.len());
        for job in jobs {
            let more = self
                .handlers
                .get(&job.kind)
                .map_or(1, |h| h.max_coalesced(&job.kind))
                .saturating_sub(1);
            let (kind, tenant) = (job.kind.clone(), job.tenant.clone());
            let mut unit = vec![job];
            // Only one tenant's jobs run together.
            if more > 0
                && let Some(tenant) = tenant
            {
                let t = now();
                match self
                    .catalog
                    .claim_jobs_of(
                        &self.config.worker_id,
                        &[kind],
                        Some(&tenant),
                        t,
                        t + self.lease(),
                        more as u32,
                    )
                    .await
                {
                    Ok(extra) => unit.extend(extra),
                    Err(e) => tracing::warn!(error = %e, "cannot claim jobs to run together"),
                }
            }
            units.push(unit);
        }
        Ok(units)
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.config.lease).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Runs jobs until `shutdown` resolves, keeping up to `concurrency`
    /// units in flight; then gives in-flight jobs `shutdown_grace` to
    /// finish and puts the rest back in the queue without charging them an
    /// attempt.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()> + Send) {
        let slots = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let mut tasks = JoinSet::new();
        tokio::pin!(shutdown);
        tracing::info!(worker = %self.config.worker_id, kinds = ?self.kinds(), "job runner started");
        loop {
            let free = slots.available_permits();
            let claimed = match self.claim_units(free).await {
                Ok(units) => units,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim jobs");
                    Vec::new()
                }
            };
            let idle = claimed.is_empty();
            for unit in claimed {
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    break;
                };
                let me = self.clone();
                tasks.spawn(async move {
                    me.execute_unit(unit).await;
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
            let pause = if idle || slots.available_permits() == 0 {
                self.config.poll_interval
            } else {
                Duration::ZERO
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(in_flight = tasks.len(), "job runner stopping");
        let drained = tokio::time::timeout(self.config.shutdown_grace, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        match self.catalog.release_jobs(&self.config.worker_id, now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "unfinished jobs returned to the queue"),
            Err(e) => tracing::warn!(error = %e, "cannot release jobs; their leases will expire"),
        }
    }

    async fn execute_unit(&self, mut unit: Vec<Job>) -> Vec<(String, Ran)> {
        if unit.len() == 1
            && let Some(job) = unit.pop()
        {
            let id = job.id.clone();
            return vec![(id, self.execute(job).await)];
        }
        self.execute_together(unit).await
    }

    /// Runs one claimed job under its time limit with heartbeats, and
    /// records the outcome.
    async fn execute(&self, job: Job) -> Ran {
        let span = tracing::info_span!("job", job_id = %job.id, kind = %job.kind, attempt = job.attempts);
        self.execute_in_span(job).instrument(span).await
    }

    async fn execute_in_span(&self, job: Job) -> Ran {
        let Some(handler) = self.handlers.get(&job.kind).cloned() else {
            // Only registered kinds are claimed; this cannot happen.
            return Ran::Lost;
        };
        let ctx = JobContext {
            catalog: self.catalog.clone(),
            job_ids: vec![job.id.clone()],
            worker: self.config.worker_id.clone(),
            lease: self.lease(),
        };
        let (lost_tx, mut lost_rx) = watch::channel(false);
        let heartbeat = {
            let (catalog, id, worker) = (
                self.catalog.clone(),
                job.id.clone(),
                self.config.worker_id.clone(),
            );
            let (lease, every) = (ctx.lease, self.config.lease / 3);
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let t = now();
                    match catalog.heartbeat_job(&id, &worker, t, t + lease, None).await {
                        Ok(true) => {}
                        Ok(false) => {
                            let _ = lost_tx.send(true);
                            return;
                        }
                        // A blip: keep trying while the lease lasts.
                        Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
                    }
                }
            }))
        };
        let limit = handler.time_limit();
        let started = std::time::Instant::now();
        let outcome = tokio::select! {
            r = tokio::time::timeout(limit, handler.run(&job, &ctx)) => r,
            _ = lost_rx.wait_for(|lost| *lost) => {
                drop(heartbeat);
                tracing::info!("job cancelled or taken over; stopped");
                return Ran::Lost;
            }
        };
        drop(heartbeat);
        let result = outcome.unwrap_or_else(|_| {
            Err(JobError::Retryable(format!(
                "timed out after {} s",
                limit.as_secs_f64()
            )))
        });
        self.record(&job, result, started.elapsed()).await
    }

    /// Runs jobs claimed together (one kind, one tenant) as one `run_many`
    /// call, with heartbeats for all of them throughout. A job cancelled
    /// meanwhile drops out of the heartbeats and its outcome is refused
    /// (fenced), like any stale worker's.
    async fn execute_together(&self, jobs: Vec<Job>) -> Vec<(String, Ran)> {
        let Some(handler) = jobs.first().and_then(|j| self.handlers.get(&j.kind)).cloned() else {
            return Vec::new();
        };
        let _heartbeat = {
            let (catalog, worker) = (self.catalog.clone(), self.config.worker_id.clone());
            let mut ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
            let (lease, every) = (self.lease(), self.config.lease / 3);
            AbortOnDrop(tokio::spawn(async move {
                while !ids.is_empty() {
                    tokio::time::sleep(every).await;
                    let t = now();
                    let mut still = Vec::with_capacity(ids.len());
                    for id in ids {
                        match catalog.heartbeat_job(&id, &worker, t, t + lease, None).await {
                            // Cancelled or taken over: no longer ours.
                            Ok(false) => {}
                            Ok(true) => still.push(id),
                            Err(e) => {
                                tracing::warn!(error = %e, job_id = %id, "heartbeat failed");
                                still.push(id);
                            }
                        }
                    }
                    ids = still;
                }
            }))
        };
        let span = tracing::info_span!(
            "jobs",
            kind = %jobs[0].kind,
            tenant = ?jobs[0].tenant,
            coalesced = jobs.len()
        );
        let ctx = JobContext {
            catalog: self.catalog.clone(),
            job_ids: jobs.iter().map(|j| j.id.clone()).collect(),
            worker: self.config.worker_id.clone(),
            lease: self.lease(),
        };
        let limit = handler.time_limit();
        let started = std::time::Instant::now();
        let results = tokio::time::timeout(limit, handler.run_many(&jobs, &ctx))
            .instrument(span.clone())
            .await;
        let ran_for = started.elapsed();
        let mut results = results.unwrap_or_default().into_iter();
        let mut out = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let result = results.next().unwrap_or_else(|| {
                Err(JobError::Retryable(format!(
                    "timed out after {} s",
                    limit.as_secs_f64()
                )))
            });
            let span = tracing::info_span!(parent: &span, "job", job_id = %job.id, attempt = job.attempts);
            out.push((
                job.id.clone(),
                self.record(job, result, ran_for).instrument(span).await,
            ));
        }
        out
    }

    /// Records one attempt's outcome (fenced: refused unless this worker
    /// still holds the job).
    async fn record(&self, job: &Job, result: Result<Value, JobError>, ran_for: Duration) -> Ran {
        let (record, ran) = match result {
            Ok(value) => (JobOutcome::Succeeded(value), Ran::Succeeded),
            Err(JobError::Fatal(e)) => (JobOutcome::Failed(e.clone()), Ran::Failed(e)),
            Err(JobError::Retryable(e)) => self.retry(job, e),
        };
        match self
            .catalog
            .finish_job(&job.id, &self.config.worker_id, now(), &record)
            .await
        {
            Ok(true) => {
                match &ran {
                    Ran::Succeeded => tracing::info!("job succeeded"),
                    Ran::WillRetry(e) => tracing::warn!(error = %e, "job attempt failed; will retry"),
                    Ran::Failed(e) => tracing::warn!(error = %e, "job failed"),
                    Ran::Lost => {}
                }
                metrics::counter!(JOBS_FINISHED, "kind" => job.kind.clone(), "outcome" => outcome_label(&ran)).increment(1);
                metrics::histogram!(JOB_DURATION, "kind" => job.kind.clone()).record(ran_for.as_secs_f64());
                if ran == Ran::Succeeded {
                    let waited = (now() - job.created_at).to_std().unwrap_or_default();
                    metrics::histogram!(JOB_LATENCY, "kind" => job.kind.clone()).record(waited.as_secs_f64());
                }
                ran
            }
            Ok(false) => Ran::Lost,
            Err(e) => {
                // The lease will expire and the job will run again.
                tracing::error!(error = %e, "cannot record the job outcome");
                Ran::Lost
            }
        }
    }

    /// A retryable failure: the store re-queues it while attempts remain
    /// and fails it otherwise.
    fn retry(&self, job: &Job, error: String) -> (JobOutcome, Ran) {
        let delay = self.config.retry.delay(job.attempts);
        let run_after = now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::seconds(60));
        let ran = if job.attempts >= job.max_attempts {
            Ran::Failed(error.clone())
        } else {
            Ran::WillRetry(error.clone())
        };
        (JobOutcome::Retry { error, run_after }, ran)
    }
}

/// A background task that ends with its owner (a heartbeat must not
/// outlive the attempt, even one that panicked or was aborted).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn outcome_label(r: &Ran) -> &'static str {
    match r {
        Ran::Succeeded => "succeeded",
        Ran::WillRetry(_) => "retry",
        Ran::Failed(_) => "failed",
        Ran::Lost => "lost",
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(m, _) => JobError::Retryable(m),
            StoreError::NotFound => JobError::Fatal("not found".into()),
            other => JobError::Retryable(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests;
