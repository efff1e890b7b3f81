//! An edge's search-log outbox: searches answered here are logged into the
//! local catalog (durably, by the usual batched logger); this task hands
//! them to the origin in order and drops them once the origin has stored
//! them. The origin stores each of this edge's numbers once, so a batch
//! sent again after a lost answer, a restart or an outage is not counted
//! twice: every log reaches the origin's analytics exactly once.

use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::sync::watch;

use super::EdgeConfig;
use crate::api::types::{EdgeLog, EdgeLogs, EdgeLogsAccepted};
use crate::model::format_time;
use crate::store::sqlite::SqliteCatalog;

/// Logs read per delivery (the origin takes at most 1,000).
const BATCH: u32 = 500;
/// A delivery stops adding logs past this many bytes of JSON (the origin's
/// body limit is `server.max_body_bytes`, 1 MiB by default; one log is at
/// most about 50 KB).
const BATCH_BYTES: usize = 256 * 1024;
/// How often an empty outbox is looked at again.
const IDLE: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Search logs delivered to the origin.
pub const LOGS_DELIVERED: &str = "vitrine_replica_search_logs_delivered_total";
/// Search logs the origin refused one by one (dropped, so that the outbox
/// never stalls behind them).
pub const LOGS_REFUSED: &str = "vitrine_replica_search_logs_refused_total";

pub struct Outbox {
    pub config: EdgeConfig,
    pub catalog: Arc<SqliteCatalog>,
    pub client: reqwest::Client,
}

/// What the origin made of a delivery.
enum Delivered {
    /// Stored; more may wait.
    Stored { more: bool },
    /// Refused as invalid: deliver one log at a time to find the one.
    Refused,
}

impl Outbox {
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let edge = loop {
            match self.catalog.edge_id().await {
                Ok(id) => break id,
                Err(e) => tracing::warn!(error = %e, "cannot read this edge's id"),
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(MAX_BACKOFF) => {}
            }
        };
        let mut backoff = IDLE;
        // After a refusal, logs go one by one until one is stored.
        let mut one_by_one = false;
        loop {
            let wait = match self.deliver(&edge, one_by_one).await {
                Ok(Delivered::Stored { more }) => {
                    backoff = IDLE;
                    one_by_one = false;
                    if more { Duration::ZERO } else { IDLE }
                }
                Ok(Delivered::Refused) => {
                    one_by_one = true;
                    Duration::ZERO
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

    /// One batch of the oldest logs.
    async fn deliver(&self, edge: &str, one: bool) -> Result<Delivered, String> {
        let mut logs = self
            .catalog
            .search_logs_after(0, if one { 1 } else { BATCH })
            .await
            .map_err(|e| e.to_string())?;
        if logs.is_empty() {
            return Ok(Delivered::Stored { more: false });
        }
        let read = logs.len();
        let mut bytes = 0;
        let keep = logs
            .iter()
            .position(|(_, l)| {
                bytes += 200
                    + [&l.query_text, &l.query_image_url, &l.user_id, &l.session_id]
                        .iter()
                        .map(|v| v.as_ref().map_or(0, |s| 2 * s.len()))
                        .sum::<usize>();
                bytes > BATCH_BYTES
            })
            .unwrap_or(read)
            .max(1);
        logs.truncate(keep);
        let more = read == BATCH as usize || keep < read;
        let body = EdgeLogs {
            edge: edge.to_owned(),
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
        let sent_last = logs.last().map_or(0, |(seq, _)| *seq);
        if !status.is_success() {
            let text: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            if status != reqwest::StatusCode::BAD_REQUEST && status != reqwest::StatusCode::PAYLOAD_TOO_LARGE
            {
                return Err(format!("the origin answered {status}: {text}"));
            }
            if logs.len() > 1 {
                return Ok(Delivered::Refused);
            }
            // One log the origin will never take: drop it rather than hold
            // every later one behind it.
            tracing::error!(seq = sent_last, answer = %text, "the origin refuses a search log; dropping it");
            metrics::counter!(LOGS_REFUSED).increment(1);
            self.catalog
                .delete_search_logs_through(sent_last)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Delivered::Stored { more: true });
        }
        let accepted: EdgeLogsAccepted = response.json().await.map_err(|e| e.without_url().to_string())?;
        if accepted.last_seq > sent_last {
            // The origin holds later numbers under this edge's id than
            // this outbox sent: the id was used by another outbox.
            tracing::error!(
                edge,
                origin_has = accepted.last_seq,
                sent = sent_last,
                "the origin already holds later search logs under this edge's id; these were not stored"
            );
        }
        // The origin may know of more (a batch sent before a crash here,
        // whose deletion did not happen); it never knows of fewer.
        let through = accepted.last_seq.min(sent_last);
        self.catalog
            .delete_search_logs_through(through)
            .await
            .map_err(|e| e.to_string())?;
        metrics::counter!(LOGS_DELIVERED).increment(logs.len() as u64);
        Ok(Delivered::Stored { more })
    }
}
