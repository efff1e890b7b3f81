//! The origin's side of replication (API.md "Replication"): the change
//! feed edges follow and the snapshot they bootstrap from. Both need a key
//! with the `replicate` scope, which only the admin issues; it reads every
//! tenant (or those the edge names).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::auth::Principal;
use super::error::{ApiError, ApiResult, ErrorCode};
use super::extract::{Body, Query};
use super::types::{
    ChangeEntry, ChangeKindName, EdgeLog, EdgeLogs, EdgeLogsAccepted, FeedPage, FeedQuery,
    REPLICATION_PROTOCOL, ReplicaProduct, SnapshotPage, SnapshotQuery,
};
use crate::model::{IndexStatus, Product};
use crate::replica::wire;
use crate::store::replica::{Change, ChangeKind, IndexGeneration, TenantRecord};
use crate::store::vectors::VectorIndex;

const DEFAULT_FEED_LIMIT: u32 = 500;
const DEFAULT_SNAPSHOT_LIMIT: u32 = 500;
/// Longest long poll; below the request deadline (`server.request_timeout_secs`).
const MAX_WAIT_MS: u64 = 10_000;
/// How often a long poll looks for new changes (the catalog may be shared
/// by many origin processes, so it polls rather than waits on this one's
/// writes).
const POLL_EVERY: Duration = Duration::from_millis(50);
/// Most tenants an edge may name.
const MAX_TENANTS: usize = 1_000;

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(field, ErrorCode::InvalidParameter, message)
}

/// `tenants=a,b` → the ids, each valid.
fn parse_tenants(list: Option<&str>) -> ApiResult<Option<Vec<String>>> {
    let Some(list) = list else { return Ok(None) };
    let ids: Vec<String> = list.split(',').map(str::to_owned).collect();
    if ids.len() > MAX_TENANTS {
        return Err(invalid("tenants", format!("at most {MAX_TENANTS} tenants")));
    }
    for id in &ids {
        crate::model::validate_tenant_id(id).map_err(|e| invalid("tenants", e.message))?;
    }
    Ok(Some(ids))
}

fn limit(v: Option<u32>, default: u32, max: u32, field: &str) -> ApiResult<u32> {
    match v {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(invalid(field, format!("{field} must be between 1 and {max}"))),
    }
}

fn vector_index(state: &AppState) -> ApiResult<std::sync::Arc<dyn VectorIndex>> {
    state.vectors.index().map_err(|why| {
        tracing::warn!(reason = %why, "vector index unavailable");
        ApiError::unavailable("vector index")
    })
}

fn vector_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "reading vectors for replication failed");
    ApiError::unavailable("vector index")
}

/// Products with the vectors the origin searches them by (only an indexed
/// product's vectors are its current ones).
async fn with_vectors(index: &dyn VectorIndex, products: Vec<Product>) -> ApiResult<Vec<ReplicaProduct>> {
    let mut out = Vec::with_capacity(products.len());
    for p in products {
        let vectors = if p.index_status == IndexStatus::Indexed {
            index
                .get_vectors(&p.tenant, &p.external_id)
                .await
                .map_err(vector_unavailable)?
        } else {
            None
        };
        out.push(wire::product_to_wire(&p, vectors));
    }
    Ok(out)
}

/// The generation the origin's vectors come from: the last one a full
/// reindex recorded, or the index the origin started with.
async fn generation(state: &AppState) -> ApiResult<IndexGeneration> {
    if let Some(g) = state.catalog.current_generation().await? {
        return Ok(g);
    }
    let encoder = state.encoder.service().map_err(|why| {
        tracing::warn!(reason = %why, "encoder unavailable");
        ApiError::unavailable("encoder")
    })?;
    Ok(IndexGeneration {
        id: 0,
        model: encoder.source().to_owned(),
        model_id: encoder.model_id().to_owned(),
        dims: encoder.dims() as i64,
    })
}

/// Fails when a reindex switched generations while a page was read: its
/// vectors may mix two generations (the follower asks again).
async fn same_generation(state: &AppState, before: &IndexGeneration) -> ApiResult<()> {
    if generation(state).await? == *before {
        Ok(())
    } else {
        let mut e = ApiError::unavailable("vector index (a new generation went live)");
        e.retry_after = Some(1);
        Err(e)
    }
}

async fn tenant_record(state: &AppState, id: &str) -> ApiResult<Option<TenantRecord>> {
    let Some(tenant) = state.catalog.get_tenant(id).await? else {
        return Ok(None);
    };
    let limits = state
        .catalog
        .tenant_limits(id)
        .await?
        .unwrap_or_else(|| serde_json::json!({}));
    Ok(Some(TenantRecord { tenant, limits }))
}

/// `GET /v1/replication/feed?after=&limit=&wait_ms=&tenants=`.
#[utoipa::path(
    get, path = "/v1/replication/feed", operation_id = "replication_feed",
    summary = "The change feed edge replicas follow", tag = "replication",
    params(FeedQuery),
    responses((status = 200, description = "Changes after `after`, each with its entity's state now", body = FeedPage),
        (status = 409, description = "`after` is past the feed's head (`feed_ahead`): the origin's catalog was restored or replaced; bootstrap again", body = super::types::ErrorBody)),
    security(("bearer" = ["replicate"]))
)]
pub async fn feed(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<FeedQuery>, ApiError>,
) -> ApiResult<Json<FeedPage>> {
    principal.require_replicate()?;
    let Query(q) = query?;
    if q.after < 0 {
        return Err(invalid("after", "after must be at least 0"));
    }
    let limit = limit(q.limit, DEFAULT_FEED_LIMIT, 1000, "limit")?;
    let wait = match q.wait_ms {
        None => 0,
        Some(ms) if ms <= MAX_WAIT_MS => ms,
        Some(_) => {
            return Err(invalid(
                "wait_ms",
                format!("wait_ms must be at most {MAX_WAIT_MS}"),
            ));
        }
    };
    let tenants = parse_tenants(q.tenants.as_deref())?;
    // Every change up to here is in the pages read after it; with a
    // tenant filter, a page that is not full covers up to here.
    let head_before = state.catalog.feed_head().await?;
    if q.after > head_before {
        return Err(ApiError::new(
            ErrorCode::FeedAhead,
            format!(
                "position {} is past the feed's head {head_before}: the origin's catalog was restored or replaced; bootstrap again",
                q.after
            ),
        )
        .with_details(serde_json::json!({"field": "after", "head": head_before})));
    }
    let deadline = Instant::now() + Duration::from_millis(wait);
    let changes = loop {
        let changes = state
            .catalog
            .changes_after(q.after, limit, tenants.as_deref())
            .await?;
        if !changes.is_empty() || Instant::now() >= deadline {
            break changes;
        }
        tokio::time::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
    };
    let full = changes.len() == limit as usize;
    let last = match changes.last() {
        Some(c) if full => c.seq,
        Some(c) => c.seq.max(head_before),
        None => q.after.max(head_before),
    };
    let head = state.catalog.feed_head().await?.max(last);
    let generation = generation(&state).await?;
    let entries = entries(&state, latest_of_each(changes)).await?;
    same_generation(&state, &generation).await?;
    Ok(Json(FeedPage {
        protocol: REPLICATION_PROTOCOL,
        head,
        last,
        generation,
        changes: entries,
    }))
}

/// The latest change of each entity, in sequence order.
fn latest_of_each(changes: Vec<Change>) -> Vec<Change> {
    let mut latest: HashMap<(ChangeKind, String, String), usize> = HashMap::new();
    for (i, c) in changes.iter().enumerate() {
        latest.insert((c.kind, c.tenant.clone(), c.entity.clone()), i);
    }
    changes
        .into_iter()
        .enumerate()
        .filter(|(i, c)| latest[&(c.kind, c.tenant.clone(), c.entity.clone())] == *i)
        .map(|(_, c)| c)
        .collect()
}

/// Each change with its entity's state now.
async fn entries(state: &AppState, changes: Vec<Change>) -> ApiResult<Vec<ChangeEntry>> {
    let mut index = None;
    let mut out = Vec::with_capacity(changes.len());
    for c in changes {
        let mut entry = ChangeEntry {
            seq: c.seq,
            kind: match c.kind {
                ChangeKind::Tenant => ChangeKindName::Tenant,
                ChangeKind::Key => ChangeKindName::Key,
                ChangeKind::Product => ChangeKindName::Product,
                ChangeKind::Plugin => ChangeKindName::Plugin,
            },
            tenant: c.tenant.clone(),
            id: c.entity.clone(),
            tenant_record: None,
            key: None,
            product: None,
            plugin: None,
        };
        match c.kind {
            ChangeKind::Tenant => {
                entry.tenant_record = tenant_record(state, &c.entity)
                    .await?
                    .map(|t| wire::tenant_to_wire(&t));
            }
            ChangeKind::Key => {
                entry.key = state
                    .catalog
                    .get_api_key(&c.entity)
                    .await?
                    .map(|k| wire::key_to_wire(&k));
            }
            ChangeKind::Product => {
                if let Some(p) = state.catalog.get_product(&c.tenant, &c.entity).await? {
                    if index.is_none() {
                        index = Some(vector_index(state)?);
                    }
                    let index = index.as_deref().unwrap_or_else(|| unreachable!());
                    entry.product = with_vectors(index, vec![p]).await?.pop().map(Box::new);
                }
            }
            ChangeKind::Plugin => {
                let versions = state.catalog.get_plugin(&c.tenant, &c.entity).await?;
                entry.plugin = Some(wire::plugin_to_wire(&c.tenant, &c.entity, &versions));
            }
        }
        out.push(entry);
    }
    Ok(out)
}

/// `<seq>.<row>`: the feed position the snapshot started at, and the last
/// catalog row sent.
fn parse_cursor(cursor: &str) -> ApiResult<(i64, i64)> {
    cursor
        .split_once('.')
        .and_then(|(s, r)| Some((s.parse::<i64>().ok()?, r.parse::<i64>().ok()?)))
        .filter(|(s, r)| *s >= 0 && *r >= 0)
        .ok_or_else(|| {
            ApiError::invalid_field(
                "cursor",
                ErrorCode::InvalidCursor,
                "cursor must be the `next` of a previous page",
            )
        })
}

/// `GET /v1/replication/snapshot?cursor=&limit=&tenants=`.
#[utoipa::path(
    get, path = "/v1/replication/snapshot", operation_id = "replication_snapshot",
    summary = "A page of the snapshot an edge bootstraps from", tag = "replication",
    params(SnapshotQuery),
    responses((status = 200, description = "Tenants and keys (first page), products in catalog order", body = SnapshotPage)),
    security(("bearer" = ["replicate"]))
)]
pub async fn snapshot(
    State(state): State<AppState>,
    principal: Principal,
    query: Result<Query<SnapshotQuery>, ApiError>,
) -> ApiResult<Json<SnapshotPage>> {
    principal.require_replicate()?;
    let Query(q) = query?;
    let limit = limit(q.limit, DEFAULT_SNAPSHOT_LIMIT, 2000, "limit")?;
    let tenants = parse_tenants(q.tenants.as_deref())?;
    let index = vector_index(&state)?;
    let generation = generation(&state).await?;
    let (seq, after, first) = match q.cursor.as_deref() {
        // The feed position comes first: whatever changes while the pages
        // are read is in the feed after it, so following from there
        // converges to the origin's state.
        None => (state.catalog.feed_head().await?, 0, true),
        Some(c) => {
            let (seq, row) = parse_cursor(c)?;
            (seq, row, false)
        }
    };
    let (mut tenant_list, mut keys, mut plugins) = (Vec::new(), Vec::new(), Vec::new());
    let mut total = None;
    if first {
        let mut products = 0u64;
        for t in state.catalog.list_tenants().await? {
            if tenants.as_ref().is_some_and(|only| !only.contains(&t.id)) {
                continue;
            }
            products += u64::try_from(state.catalog.count_products(&t.id).await?).unwrap_or(0);
            if let Some(r) = tenant_record(&state, &t.id).await? {
                tenant_list.push(wire::tenant_to_wire(&r));
            }
            let mut by_name: std::collections::BTreeMap<String, Vec<crate::store::PluginRecord>> =
                std::collections::BTreeMap::new();
            for p in state.catalog.list_plugins(&t.id).await? {
                by_name.entry(p.name.clone()).or_default().push(p);
            }
            for (name, versions) in by_name {
                plugins.push(wire::plugin_to_wire(&t.id, &name, &versions));
            }
        }
        total = Some(products);
        keys = state
            .catalog
            .all_api_keys(tenants.as_deref())
            .await?
            .iter()
            .map(wire::key_to_wire)
            .collect();
    }
    let rows = state
        .catalog
        .products_after_row(after, limit, tenants.as_deref())
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|(row, _)| format!("{seq}.{row}")))
        .flatten();
    let products = with_vectors(&*index, rows.into_iter().map(|(_, p)| p).collect()).await?;
    same_generation(&state, &generation).await?;
    Ok(Json(SnapshotPage {
        protocol: REPLICATION_PROTOCOL,
        seq,
        next,
        total,
        generation,
        tenants: tenant_list,
        keys,
        plugins,
        products,
    }))
}

/// `GET /v1/replication/plugins/{t}/{digest}`: a plugin component's bytes.
#[utoipa::path(
    get, path = "/v1/replication/plugins/{t}/{digest}", operation_id = "replication_plugin_component",
    summary = "A tenant's plugin component, by digest", tag = "replication",
    params(("t" = String, Path, description = "Tenant id", pattern = "^[a-z0-9][a-z0-9_-]{0,62}$"),
        ("digest" = String, Path, description = "SHA-256 of the component, hex", pattern = "^[0-9a-f]{64}$")),
    responses((status = 200, description = "The component", content_type = "application/wasm", body = Vec<u8>),
        (status = 404, description = "No such component", body = super::types::ErrorBody)),
    security(("bearer" = ["replicate"]))
)]
pub async fn plugin_component(
    State(state): State<AppState>,
    principal: Principal,
    super::extract::TenantItemPath(tenant, digest): super::extract::TenantItemPath,
) -> ApiResult<impl axum::response::IntoResponse> {
    principal.require_replicate()?;
    if !wire::valid_digest(&digest) {
        return Err(ApiError::invalid_field(
            "digest",
            ErrorCode::InvalidPath,
            "digest must be a hex SHA-256",
        ));
    }
    let known = state
        .catalog
        .list_plugins(&tenant)
        .await?
        .iter()
        .any(|p| p.digest == digest);
    let missing = || ApiError::not_found(ErrorCode::PluginNotFound, "no plugin version has this digest");
    if !known {
        return Err(missing());
    }
    let bytes = state
        .search
        .plugins()
        .host()
        .blobs()
        .get(&crate::plugins::blob_key(&tenant, &digest))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot read a plugin component");
            missing()
        })?;
    Ok(([(axum::http::header::CONTENT_TYPE, "application/wasm")], bytes))
}

/// Longest text field of a search log from an edge.
const MAX_LOG_TEXT: usize = 4096;
const MAX_EDGE_LOGS: usize = 1000;

/// A log from an edge, checked field by field (`logs.N.field` on error).
fn edge_log(i: usize, l: &EdgeLog) -> ApiResult<crate::store::SearchLog> {
    let field = |name: &str| format!("logs.{i}.{name}");
    let bad = |name: &str, message: &str| {
        ApiError::invalid_field(&field(name), ErrorCode::InvalidValue, message.to_owned())
    };
    crate::model::validate_tenant_id(&l.tenant).map_err(|e| bad("tenant", &e.message))?;
    if !matches!(l.query_type.as_str(), "text" | "image" | "like") {
        return Err(bad("query_type", "query_type must be text, image or like"));
    }
    for (name, v) in [
        ("query_text", &l.query_text),
        ("query_image_url", &l.query_image_url),
        ("user_id", &l.user_id),
        ("session_id", &l.session_id),
    ] {
        if v.as_ref().is_some_and(|s| s.chars().count() > MAX_LOG_TEXT) {
            return Err(bad(name, "at most 4096 characters"));
        }
    }
    if l.seq < 1 {
        return Err(bad("seq", "seq must be at least 1"));
    }
    if l.results_count < 0 {
        return Err(bad("results_count", "results_count must be at least 0"));
    }
    if !l.execution_time_ms.is_finite() || l.execution_time_ms < 0.0 {
        return Err(bad(
            "execution_time_ms",
            "execution_time_ms must be a finite number, at least 0",
        ));
    }
    let created_at = chrono::DateTime::parse_from_rfc3339(&l.created_at)
        .map_err(|_| bad("created_at", "created_at must be an RFC 3339 time"))?
        .with_timezone(&chrono::Utc);
    Ok(crate::store::SearchLog {
        tenant: l.tenant.clone(),
        query_type: l.query_type.clone(),
        query_text: l.query_text.clone(),
        query_image_url: l.query_image_url.clone(),
        results_count: l.results_count,
        execution_time_ms: l.execution_time_ms,
        user_id: l.user_id.clone(),
        session_id: l.session_id.clone(),
        created_at,
    })
}

/// `POST /v1/replication/search-logs`: an edge's outbox delivers here.
#[utoipa::path(
    post, path = "/v1/replication/search-logs", operation_id = "replication_search_logs",
    summary = "Hand over search logs recorded at an edge (each stored once)", tag = "replication",
    request_body = EdgeLogs,
    responses((status = 200, description = "The edge's last log now stored", body = EdgeLogsAccepted)),
    security(("bearer" = ["replicate"]))
)]
pub async fn search_logs(
    State(state): State<AppState>,
    principal: Principal,
    Body(batch): Body<EdgeLogs>,
) -> ApiResult<Json<EdgeLogsAccepted>> {
    principal.require_replicate()?;
    if batch.edge.is_empty()
        || batch.edge.len() > 64
        || !batch.edge.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ApiError::invalid_field(
            "edge",
            ErrorCode::InvalidValue,
            "edge must be 1 to 64 letters, digits or dashes",
        ));
    }
    if batch.logs.len() > MAX_EDGE_LOGS {
        return Err(ApiError::invalid_field(
            "logs",
            ErrorCode::InvalidValue,
            format!("at most {MAX_EDGE_LOGS} logs per batch"),
        ));
    }
    let mut logs = Vec::with_capacity(batch.logs.len());
    for (i, l) in batch.logs.iter().enumerate() {
        if i > 0 && l.seq <= batch.logs[i - 1].seq {
            return Err(ApiError::invalid_field(
                &format!("logs.{i}.seq"),
                ErrorCode::InvalidValue,
                "logs must come in increasing seq order",
            ));
        }
        logs.push((l.seq, edge_log(i, l)?));
    }
    let last_seq = state.catalog.accept_edge_logs(&batch.edge, &logs).await?;
    Ok(Json(EdgeLogsAccepted { last_seq }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(seq: i64, kind: ChangeKind, entity: &str) -> Change {
        Change {
            seq,
            kind,
            tenant: "t".into(),
            entity: entity.into(),
        }
    }

    #[test]
    fn a_page_keeps_the_latest_change_of_each_entity_in_order() {
        let changes = vec![
            change(1, ChangeKind::Product, "a"),
            change(2, ChangeKind::Product, "b"),
            change(3, ChangeKind::Key, "a"),
            change(4, ChangeKind::Product, "a"),
        ];
        let kept: Vec<i64> = latest_of_each(changes).iter().map(|c| c.seq).collect();
        assert_eq!(kept, [2, 3, 4]);
    }

    #[test]
    fn cursors_and_tenant_lists_are_checked() {
        assert_eq!(parse_cursor("12.34").unwrap(), (12, 34));
        for bad in ["", "12", "a.b", "-1.2", "1.-2", "1.2.3"] {
            assert!(parse_cursor(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_tenants(Some("a,b")).unwrap(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(parse_tenants(Some("a,,b")).is_err());
        assert!(parse_tenants(Some("A")).is_err());
    }
}
