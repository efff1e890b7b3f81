//! An edge's search-log outbox: searches answered here are logged into the
//! local catalog (durably, by the usual batched logger); this task hands
//! them to the origin in order and drops them once the origin has stored
//! them. The origin stores each of this edge's numbers once, so a batch
//! sent again after a lost answer, a restart or an outage is not counted
//! twice: every log reaches the origin's analytics exactly once.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::watch;

use super::EdgeConfig;
use crate::api::types::{EdgeLog, EdgeLogs, EdgeLogsAccepted};
use crate::model::format_time;
use crate::store::sqlite::SqliteCatalog;

/// Logs per delivery (the origin takes at most 1,000).
const BATCH: u32 = 500;
/// How often an empty outbox is looked at again.
const IDLE: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Search logs delivered to the origin.
pub const LOGS_DELIVERED: &str = "vitrine_replica_search_logs_delivered_total";

/// This edge's id for the origin, kept in the data directory (made once).
pub fn edge_id(data_dir: &Path) -> std::io::Result<String> {
    let path = data_dir.join("edge-id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = data_dir.join("edge-id.tmp");
    std::fs::write(&tmp, &id)?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

pub struct Outbox {
    pub config: EdgeConfig,
    pub catalog: Arc<SqliteCatalog>,
    pub client: reqwest::Client,
    pub edge: String,
}

impl Outbox {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut backoff = IDLE;
        loop {
            let wait = match self.deliver().await {
                Ok(full) => {
                    backoff = IDLE;
                    if full { Duration::ZERO } else { IDLE }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "search logs not delivered to the origin; retrying");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    backoff
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One batch; `true` when the batch was full (more may wait).
    async fn deliver(&self) -> Result<bool, String> {
        let logs = self
            .catalog
            .search_logs_after(0, BATCH)
            .await
            .map_err(|e| e.to_string())?;
        if logs.is_empty() {
            return Ok(false);
        }
        let full = logs.len() == BATCH as usize;
        let body = EdgeLogs {
            edge: self.edge.clone(),
            logs: logs
                .iter()
                .map(|(seq, l)| EdgeLog {
                    seq: *seq,
                    tenant: l.tenant.clone(),
                    query_type: l.query_type.clone(),
                    query_text: l.query_text.clone(),
                    query_image_url: l.query_image_url.clone(),
                    results_count: l.results_count,
                    execution_time_ms: l.execution_time_ms,
                    user_id: l.user_id.clone(),
                    session_id: l.session_id.clone(),
                    created_at: format_time(&l.created_at),
                })
                .collect(),
        };
        let response = self
            .client
            .post(format!("{}/v1/replication/search-logs", self.config.origin_url))
            .bearer_auth(self.config.key.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(|e| e.without_url().to_string())?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            return Err(format!(
                "the origin answered {status}: {}",
                &text[..text.len().min(300)]
            ));
        }
        let accepted: EdgeLogsAccepted = response.json().await.map_err(|e| e.without_url().to_string())?;
        let sent_last = logs.last().map_or(0, |(seq, _)| *seq);
        // The origin may know of more (a batch sent before a crash here,
        // whose deletion did not happen); it never knows of fewer.
        let through = accepted.last_seq.min(sent_last);
        self.catalog
            .delete_search_logs_through(through)
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!(LOGS_DELIVERED).increment(logs.len() as u64);
        Ok(full)
    }
}
