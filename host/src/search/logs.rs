//! Search logs, written off the request path: a search hands its log to a
//! bounded buffer (never waiting), and one background task writes the
//! buffer to the catalog in batches. A full buffer or a failing catalog
//! drops logs (counted in `vitrine_search_logs_dropped_total`) rather than
//! slow or fail a search.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{Catalog, SearchLog, StoreError};
use crate::telemetry::{SEARCH_LOGS_DROPPED, SEARCH_LOGS_WRITTEN};

/// Logs held while the writer catches up.
pub const BUFFER: usize = 10_000;
/// Logs written per catalog transaction.
const BATCH: usize = 500;
/// Longest a log waits in the buffer when searches are few.
const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The request side: cheap to clone, never blocks.
#[derive(Clone)]
pub struct SearchLogger {
    tx: mpsc::Sender<SearchLog>,
}

impl SearchLogger {
    /// Starts the writer task on the current runtime. It ends once every
    /// logger is dropped, after writing what is buffered.
    pub fn start(catalog: Arc<dyn Catalog>, capacity: usize) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let task = tokio::spawn(write_loop(catalog, rx));
        (Self { tx }, task)
    }

    /// Queues a log; drops it (counted) when the buffer is full. Text no
    /// catalog can store (a NUL) is replaced, so one odd query cannot fail
    /// a batch.
    pub fn record(&self, mut log: SearchLog) {
        for text in [
            &mut log.query_text,
            &mut log.query_image_url,
            &mut log.user_id,
            &mut log.session_id,
        ]
        .into_iter()
        .flatten()
        {
            if text.contains('\0') {
                *text = text.replace('\0', "\u{fffd}");
            }
        }
        if self.tx.try_send(log).is_err() {
            metrics::counter!(SEARCH_LOGS_DROPPED).increment(1);
        }
    }
}

async fn write_loop(catalog: Arc<dyn Catalog>, mut rx: mpsc::Receiver<SearchLog>) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // Wait for the first log, then take what else is there (up to a
        // batch), waiting at most FLUSH_EVERY for more.
        let Some(first) = rx.recv().await else { break };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(log)) => batch.push(log),
                Ok(None) | Err(_) => break,
            }
        }
        write(&*catalog, &mut batch).await;
    }
    write(&*catalog, &mut batch).await;
}

async fn write(catalog: &dyn Catalog, batch: &mut Vec<SearchLog>) {
    if batch.is_empty() {
        return;
    }
    let n = batch.len() as u64;
    match catalog.insert_search_logs(batch).await {
        Ok(()) => metrics::counter!(SEARCH_LOGS_WRITTEN).increment(n),
        Err(e @ StoreError::Unavailable(..)) => {
            tracing::warn!(error = %e, dropped = n, "cannot write search logs: the catalog is unavailable");
            metrics::counter!(SEARCH_LOGS_DROPPED).increment(n);
        }
        // The catalog refused something in the batch: write the logs one
        // by one, so only the one it refuses is lost.
        Err(e) => {
            tracing::warn!(error = %e, logs = n, "a batch of search logs was refused; writing them one by one");
            for log in batch.iter() {
                match catalog.insert_search_logs(std::slice::from_ref(log)).await {
                    Ok(()) => metrics::counter!(SEARCH_LOGS_WRITTEN).increment(1),
                    Err(e) => {
                        tracing::warn!(error = %e, tenant = %log.tenant, "search log refused by the catalog");
                        metrics::counter!(SEARCH_LOGS_DROPPED).increment(1);
                    }
                }
            }
        }
    }
    batch.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::now;
    use crate::store::sqlite::SqliteCatalog;
    use crate::store::{QueryStatsKind, SearchLogStore};

    fn log(text: &str) -> SearchLog {
        SearchLog {
            tenant: "default".into(),
            query_type: "text".into(),
            query_text: Some(text.into()),
            query_image_url: None,
            results_count: 1,
            execution_time_ms: 1.0,
            user_id: None,
            session_id: None,
            created_at: now(),
        }
    }

    /// The tenant `default`'s query stats of the last hour.
    async fn last_hour(catalog: &dyn Catalog) -> Vec<crate::store::QueryStat> {
        catalog
            .query_stats(
                "default",
                QueryStatsKind::Top,
                now() - chrono::Duration::hours(1),
                10,
            )
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn logs_are_written_in_batches_and_a_full_buffer_drops_instead_of_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let catalog: Arc<dyn Catalog> = Arc::new(
            SqliteCatalog::open(&dir.path().join("c.sqlite3"), 2)
                .await
                .unwrap(),
        );
        // A buffer of 3: the fourth and later logs queued at once are dropped.
        let (logger, task) = SearchLogger::start(catalog.clone(), 3);
        // On this single-threaded runtime the writer cannot run until the
        // test yields, so the buffer really is full after three.
        for i in 0..10 {
            logger.record(log(&format!("q{}", i % 2)));
        }
        drop(logger);
        task.await.unwrap();
        let stats = last_hour(&*catalog).await;
        let written: i64 = stats.iter().map(|s| s.count).sum();
        assert_eq!(written, 3, "{stats:?}");
    }

    #[tokio::test]
    async fn a_refused_log_is_dropped_alone_and_its_error_names_the_sqlstate() {
        use crate::store::postgres::PostgresCatalog;
        use crate::store::postgres::testing::{TestSchema, test_database_url};
        let Some(base) = test_database_url() else { return };
        let schema = TestSchema::create(&base).await;
        let catalog = PostgresCatalog::connect(&schema.url, 2).await.unwrap();
        // PostgreSQL text cannot hold a NUL: the error says so, with its code.
        let err = catalog.insert_search_logs(&[log("a\0b")]).await.unwrap_err();
        assert!(err.to_string().contains("SQLSTATE 22021"), "{err}");
        // One refused log in a batch costs only itself.
        let mut batch = vec![log("first"), log("bad\0"), log("last")];
        write(&catalog, &mut batch).await;
        let stats = last_hour(&catalog).await;
        let mut texts: Vec<&str> = stats.iter().map(|s| s.query_text.as_str()).collect();
        texts.sort_unstable();
        assert_eq!(texts, ["first", "last"], "{stats:?}");
        drop(catalog);
        schema.drop_schema().await;
    }

    #[test]
    fn recorded_logs_lose_their_nuls() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let logger = SearchLogger { tx };
        let mut l = log("x\0y");
        l.user_id = Some("u\0".into());
        logger.record(l);
        let got = rt.block_on(rx.recv()).unwrap();
        assert_eq!(got.query_text.as_deref(), Some("x\u{fffd}y"));
        assert_eq!(got.user_id.as_deref(), Some("u\u{fffd}"));
    }
}
