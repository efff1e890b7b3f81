//! The catalog on PostgreSQL (tokio-postgres + deadpool-postgres), chosen
//! when `catalog.url` is a `postgres://` URL. Many Vitrine hosts can share
//! one database: migrations take an advisory lock, and (in the job runner)
//! workers claim jobs with `FOR UPDATE SKIP LOCKED`.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use rust_decimal::Decimal;
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};

use super::ErrorKind;
use super::ON_CONFLICT_REPLACE;
use super::migrations::{self, MigrationReport};
use super::replica::{Change, ChangeKind, IndexGeneration, ReplicationStore};
use super::{
    ApiKeyRecord, Catalog, IndexUpdate, Job, JobOutcome, JobStatus, NewJob, NewPluginVersion, PluginRecord,
    PoolStatus, ProductPage, QueryStat, QueryStatsKind, SearchLog, StoreError, StoreResult, Tenant, with_p95,
};
use super::{JobStore, PluginStore, ProductStore, SearchLogStore, TenantStore};
use crate::model::{IndexStatus, Product, ProductFields, now};

/// How long a request waits for a pooled connection before the catalog
/// counts as unavailable (503) rather than hanging the request.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Connecting to a database that does not answer must fail, not hang.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Key of the advisory lock that serialises migrations across hosts.
const MIGRATION_LOCK: i64 = 0x5669_7472_696e_6501; // "Vitrine" + 1

pub struct PostgresCatalog {
    pool: Pool,
}

impl PostgresCatalog {
    /// Connects, checks the database answers, and applies migrations.
    pub async fn connect(url: &str, max_connections: usize) -> StoreResult<Self> {
        let catalog = Self::open(url, max_connections)?;
        catalog.migrate().await?;
        Ok(catalog)
    }

    /// A pool over the database, without touching the schema.
    pub fn open(url: &str, max_connections: usize) -> StoreResult<Self> {
        Ok(Self {
            pool: build_pool(url, max_connections)?,
        })
    }

    /// Applies pending migrations; safe to run from many hosts at once.
    pub async fn migrate(&self) -> StoreResult<MigrationReport> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(map_err)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS vitrine_migrations (
                 version    BIGINT PRIMARY KEY,
                 name       TEXT NOT NULL,
                 applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
             )",
        )
        .await
        .map_err(map_err)?;
        let mut report = MigrationReport::default();
        for m in migrations::POSTGRES {
            let done: bool = tx
                .query_one(
                    "SELECT EXISTS (SELECT 1 FROM vitrine_migrations WHERE version = $1)",
                    &[&m.version],
                )
                .await
                .map_err(map_err)?
                .col(0)?;
            if done {
                report.already_applied.push(m.version);
                continue;
            }
            tx.batch_execute(m.sql).await.map_err(map_err)?;
            tx.execute(
                "INSERT INTO vitrine_migrations (version, name) VALUES ($1, $2)",
                &[&m.version, &m.name],
            )
            .await
            .map_err(map_err)?;
            report.applied.push(m.version);
        }
        tx.commit().await.map_err(map_err)?;
        Ok(report)
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        let start = std::time::Instant::now();
        let client = self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(
                format!("no PostgreSQL connection available: {e}"),
                Some(Arc::new(e)),
            )
        });
        metrics::histogram!(crate::telemetry::CATALOG_POOL_WAIT, "backend" => "postgres")
            .record(start.elapsed().as_secs_f64());
        client
    }
}

fn build_pool(url: &str, max_connections: usize) -> StoreResult<Pool> {
    let mut config = tokio_postgres::Config::from_str(url)
        .map_err(|e| StoreError::Other(format!("invalid catalog.url: {e}"), Some(Arc::new(e))))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.application_name("vitrine");
    // TLS to the database is expected to be handled by the network (a local
    // socket, a sidecar or a private link); see ARCHITECTURE.md.
    let manager = Manager::from_config(
        config,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_connections.max(1))
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| {
            StoreError::Other(
                format!("cannot build the PostgreSQL pool: {e}"),
                Some(Arc::new(e)),
            )
        })
}

const PLUGIN_COLUMNS: &str =
    "tenant, name, version, world, digest, size_bytes, active, params, memory_mb, created_at, activated_at";

fn plugin_from_row(r: &Row) -> StoreResult<PluginRecord> {
    let params = match r.col::<Value>(7)? {
        Value::Object(m) => m,
        _ => return Err(StoreError::other("corrupt plugin parameters")),
    };
    Ok(PluginRecord {
        tenant: r.col(0)?,
        name: r.col(1)?,
        version: r.col(2)?,
        world: r.col(3)?,
        digest: r.col(4)?,
        size_bytes: r.col(5)?,
        active: r.col(6)?,
        params,
        memory_mb: r.col(8)?,
        created_at: r.col(9)?,
        activated_at: r.col(10)?,
    })
}

/// Columns read by position with a check of their type: a schema that
/// drifted from what the code reads is an error (a 500 and a log line
/// naming the column), never a panic.
trait RowExt {
    fn col<'a, T: FromSql<'a>>(&'a self, i: usize) -> StoreResult<T>;
}

impl RowExt for Row {
    fn col<'a, T: FromSql<'a>>(&'a self, i: usize) -> StoreResult<T> {
        self.try_get(i).map_err(|e| {
            let name = self.columns().get(i).map_or("?", |c| c.name());
            tracing::error!(column = i, name, error = %describe(&e), "a catalog row has an unexpected shape");
            StoreError::Other(
                format!("catalog column {i} ({name}): {}", describe(&e)),
                Some(Arc::new(e)),
            )
        })
    }
}

fn map_err(e: tokio_postgres::Error) -> StoreError {
    let text = describe(&e);
    let kind = match e.code() {
        Some(c) if *c == SqlState::UNIQUE_VIOLATION => ErrorKind::Duplicate,
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::TOO_MANY_CONNECTIONS
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
                || *c == SqlState::CANNOT_CONNECT_NOW
                || *c == SqlState::QUERY_CANCELED
                // Class 08: connection exceptions; class 53: insufficient
                // resources (disk full, out of memory, too many connections).
                || c.code().starts_with("08")
                || c.code().starts_with("53") =>
        {
            ErrorKind::Unavailable
        }
        Some(_) => ErrorKind::Other,
        // No SQLSTATE: the connection itself failed (refused, reset, timed
        // out, closed, name not resolved), or a value did not convert.
        None if e.is_closed() || is_connection_failure(&e) => ErrorKind::Unavailable,
        None => ErrorKind::Other,
    };
    kind.error(text, Arc::new(e))
}

/// The error with what its `Display` leaves out: a database error's
/// SQLSTATE, message, detail and hint, or the cause of a client error.
/// None of it holds the connection's password.
fn describe(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut out = format!("SQLSTATE {}: {}", db.code().code(), db.message());
        if let Some(d) = db.detail() {
            out.push_str(&format!(" (detail: {d})"));
        }
        if let Some(h) = db.hint() {
            out.push_str(&format!(" (hint: {h})"));
        }
        return out;
    }
    match std::error::Error::source(e) {
        Some(cause) => format!("{e}: {cause}"),
        None => e.to_string(),
    }
}

fn is_connection_failure(e: &tokio_postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    false
}

const PRODUCT_COLUMNS: &str = "id, tenant, external_id, title, description, category, price::text, \
     currency, image_url, tags, in_stock, metadata, index_status, index_error, version, created_at, \
     updated_at, image_key";

fn product_from_row(r: &Row) -> StoreResult<(i64, Product)> {
    let bad = |what: &str, e: &dyn std::fmt::Display| StoreError::other(format!("corrupt {what}: {e}"));
    let price: Option<String> = r.col(6)?;
    let price = price
        .map(|p| Decimal::from_str(&p).map_err(|e| bad("price", &e)))
        .transpose()?;
    let tags: Value = r.col(9)?;
    let tags = serde_json::from_value(tags).map_err(|e| bad("tags", &e))?;
    let metadata = match r.col::<Value>(11)? {
        Value::Object(m) => m,
        other => return Err(bad("metadata", &other)),
    };
    let status: String = r.col(12)?;
    Ok((
        r.col(0)?,
        Product {
            tenant: r.col(1)?,
            external_id: r.col(2)?,
            fields: ProductFields {
                title: r.col(3)?,
                description: r.col(4)?,
                category: r.col(5)?,
                price,
                currency: r.col(7)?,
                image_url: r.col(8)?,
                tags,
                in_stock: r.col(10)?,
                metadata,
            },
            index_status: IndexStatus::from_str(&status).map_err(|e| bad("index_status", &e))?,
            index_error: r.col(13)?,
            version: r.col(14)?,
            created_at: r.col(15)?,
            updated_at: r.col(16)?,
            image_key: r.col(17)?,
        },
    ))
}

fn tenant_from_row(r: &Row) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: r.col(0)?,
        name: r.col(1)?,
        created_at: r.col(2)?,
    })
}

async fn insert_job(tx: &deadpool_postgres::Transaction<'_>, job: &NewJob) -> StoreResult<()> {
    let t = now();
    let st = tx
        .prepare_cached(
            "INSERT INTO jobs (id, kind, tenant, payload, status, attempts, max_attempts, run_after,
                               created_at, updated_at)
             VALUES ($1, $2, $3, $4, 'queued', 0, $5, $6, $6, $6)",
        )
        .await
        .map_err(map_err)?;
    tx.execute(
        &st,
        &[
            &job.id,
            &job.kind,
            &job.tenant,
            &job.payload,
            &job.max_attempts,
            &t,
        ],
    )
    .await
    .map_err(map_err)?;
    Ok(())
}

/// Inserts one product; `$1`–`$12` are tenant, external id, the
/// [`field_params`] and the creation time. Upserts append [`ON_CONFLICT_REPLACE`].
const INSERT_PRODUCT: &str = "INSERT INTO products (tenant, external_id, title, description, category, price,
                                       currency, image_url, tags, in_stock, metadata, index_status, version,
                                       created_at, updated_at)
     VALUES ($1, $2, $3, $4, $5, $6::text::numeric, $7, $8, $9, $10, $11, 'pending', 1, $12, $12)";

/// The values of a product's editable columns that need converting.
struct Converted {
    price: Option<String>,
    tags: Value,
    metadata: Value,
}

impl Converted {
    fn new(f: &ProductFields) -> Self {
        Self {
            price: f.price.map(|d| d.to_string()),
            tags: Value::from(f.tags.clone()),
            metadata: Value::Object(f.metadata.clone()),
        }
    }
}

/// The editable columns, title to metadata, in table order: `$3`–`$11` of
/// both [`INSERT_PRODUCT`] and the update statement.
fn field_params<'a>(f: &'a ProductFields, c: &'a Converted) -> [&'a (dyn ToSql + Sync); 9] {
    [
        &f.title,
        &f.description,
        &f.category,
        &c.price,
        &f.currency,
        &f.image_url,
        &c.tags,
        &f.in_stock,
        &c.metadata,
    ]
}

/// Parameters of [`INSERT_PRODUCT`].
fn insert_params<'a>(
    tenant: &'a &'a str,
    external_id: &'a &'a str,
    f: &'a ProductFields,
    c: &'a Converted,
    t: &'a DateTime<Utc>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut v: Vec<&(dyn ToSql + Sync)> = vec![tenant, external_id];
    v.extend(field_params(f, c));
    v.push(t);
    v
}

#[async_trait]
impl Catalog for PostgresCatalog {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.simple_query("SELECT 1").await.map_err(map_err)?;
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        let s = self.pool.status();
        PoolStatus {
            size: s.max_size,
            in_use: s.size.saturating_sub(s.available),
            waiting: s.waiting,
        }
    }
}

#[async_trait]
impl TenantStore for PostgresCatalog {
    async fn create_tenant(&self, id: &str, name: &str) -> StoreResult<Tenant> {
        let client = self.client().await?;
        let t = now();
        client
            .execute(
                "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)",
                &[&id, &name, &t],
            )
            .await
            .map_err(|e| match map_err(e) {
                StoreError::Duplicate(..) => StoreError::Conflict(format!("tenant `{id}` already exists")),
                other => other,
            })?;
        Ok(Tenant {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: t,
        })
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached("SELECT id, name, created_at FROM tenants WHERE id = $1")
            .await
            .map_err(map_err)?;
        Ok(client
            .query_opt(&st, &[&id])
            .await
            .map_err(map_err)?
            .as_ref()
            .map(tenant_from_row)
            .transpose()?)
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT id, name, created_at FROM tenants ORDER BY id", &[])
            .await
            .map_err(map_err)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO api_keys (id, tenant, secret_hash, scopes, label, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    &key.id,
                    &key.tenant,
                    &key.secret_hash,
                    &key.scopes,
                    &key.label,
                    &key.created_at,
                ],
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT id, tenant, secret_hash, scopes, label, created_at FROM api_keys WHERE id = $1",
            )
            .await
            .map_err(map_err)?;
        Ok(client
            .query_opt(&st, &[&id])
            .await
            .map_err(map_err)?
            .map(|r| key_from_row(&r))
            .transpose()?)
    }

    async fn delete_api_key(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM api_keys WHERE tenant = $1 AND id = $2",
                &[&tenant, &id],
            )
            .await
            .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn tenant_generation(&self, tenant: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        let st = client
            .prepare_cached("SELECT generation FROM tenants WHERE id = $1")
            .await
            .map_err(map_err)?;
        Ok(client
            .query_opt(&st, &[&tenant])
            .await
            .map_err(map_err)?
            .map_or(Ok(0), |r| r.col(0))?)
    }

    async fn tenant_limits(&self, tenant: &str) -> StoreResult<Option<Value>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached("SELECT limits FROM tenants WHERE id = $1")
            .await
            .map_err(map_err)?;
        client
            .query_opt(&st, &[&tenant])
            .await
            .map_err(map_err)?
            .map(|r| r.col(0))
            .transpose()
    }

    async fn set_tenant_limits(&self, tenant: &str, limits: &Value) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute("UPDATE tenants SET limits = $2 WHERE id = $1", &[&tenant, limits])
            .await
            .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn bump_generation(&self, tenant: &str) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE tenants SET generation = generation + 1 WHERE id = $1",
                &[&tenant],
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

#[async_trait]
impl ProductStore for PostgresCatalog {
    async fn create_product(
        &self,
        tenant: &str,
        external_id: &str,
        fields: &ProductFields,
        job: &NewJob,
    ) -> StoreResult<Product> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let t = now();
        let st = tx.prepare_cached(INSERT_PRODUCT).await.map_err(map_err)?;
        let converted = Converted::new(fields);
        tx.execute(&st, &insert_params(&tenant, &external_id, fields, &converted, &t))
            .await
            .map_err(|e| match map_err(e) {
                StoreError::Duplicate(..) => StoreError::Conflict(format!(
                    "a product with external_id `{external_id}` already exists"
                )),
                other => other,
            })?;
        insert_job(&tx, job).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(Product {
            tenant: tenant.to_owned(),
            external_id: external_id.to_owned(),
            fields: fields.clone(),
            index_status: IndexStatus::Pending,
            index_error: None,
            version: 1,
            created_at: t,
            updated_at: t,
            image_key: None,
        })
    }

    async fn upsert_products(
        &self,
        tenant: &str,
        items: &[(String, ProductFields)],
        job: &NewJob,
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let t = now();
        let st = tx
            .prepare_cached(&format!("{INSERT_PRODUCT}{ON_CONFLICT_REPLACE}"))
            .await
            .map_err(map_err)?;
        for (external_id, f) in items {
            let converted = Converted::new(f);
            tx.execute(
                &st,
                &insert_params(&tenant, &external_id.as_str(), f, &converted, &t),
            )
            .await
            .map_err(map_err)?;
        }
        insert_job(&tx, job).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn get_product(&self, tenant: &str, external_id: &str) -> StoreResult<Option<Product>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant = $1 AND external_id = $2"
            ))
            .await
            .map_err(map_err)?;
        client
            .query_opt(&st, &[&tenant, &external_id])
            .await
            .map_err(map_err)?
            .map(|r| product_from_row(&r).map(|(_, p)| p))
            .transpose()
    }

    async fn get_products(&self, tenant: &str, external_ids: &[String]) -> StoreResult<Vec<Product>> {
        if external_ids.is_empty() {
            return Ok(Vec::new());
        }
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant = $1 AND external_id = ANY($2)"
            ))
            .await
            .map_err(map_err)?;
        client
            .query(&st, &[&tenant, &external_ids])
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| product_from_row(r).map(|(_, p)| p))
            .collect()
    }

    async fn list_products(
        &self,
        tenant: &str,
        category: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<ProductPage> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products
                 WHERE tenant = $1 AND ($2::text IS NULL OR category = $2) AND id > $3
                 ORDER BY id LIMIT $4"
            ))
            .await
            .map_err(map_err)?;
        let rows = client
            .query(
                &st,
                &[&tenant, &category, &after.unwrap_or(0), &(i64::from(limit) + 1)],
            )
            .await
            .map_err(map_err)?;
        let mut rows = rows
            .iter()
            .map(product_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more {
            rows.last().map(|(id, _)| *id)
        } else {
            None
        };
        Ok(ProductPage {
            products: rows.into_iter().map(|(_, p)| p).collect(),
            next,
        })
    }

    async fn update_product(
        &self,
        tenant: &str,
        external_id: &str,
        fields: &ProductFields,
        expected_version: Option<i64>,
        reindex: Option<&NewJob>,
    ) -> StoreResult<Product> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let current = tx
            .query_opt(
                "SELECT version FROM products WHERE tenant = $1 AND external_id = $2 FOR UPDATE",
                &[&tenant, &external_id],
            )
            .await
            .map_err(map_err)?
            .map(|r| r.col::<i64>(0))
            .transpose()?;
        let Some(current) = current else {
            return Err(StoreError::NotFound);
        };
        if expected_version.is_some_and(|v| v != current) {
            return Err(StoreError::Conflict(
                "the product was changed concurrently".into(),
            ));
        }
        let st = tx
            .prepare_cached(&format!(
                "UPDATE products SET title = $3, description = $4, category = $5,
                        price = $6::text::numeric, currency = $7, image_url = $8, tags = $9,
                        in_stock = $10, metadata = $11,
                        index_status = CASE WHEN $12 THEN 'pending' ELSE index_status END,
                        index_error = CASE WHEN $12 THEN NULL ELSE index_error END,
                        version = version + 1, updated_at = $13
                 WHERE tenant = $1 AND external_id = $2
                 RETURNING {PRODUCT_COLUMNS}"
            ))
            .await
            .map_err(map_err)?;
        let converted = Converted::new(fields);
        let (reindexing, t) = (reindex.is_some(), now());
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tenant, &external_id];
        params.extend(field_params(fields, &converted));
        params.extend([&reindexing as &(dyn ToSql + Sync), &t]);
        let row = tx.query_one(&st, &params).await.map_err(map_err)?;
        let (_, product) = product_from_row(&row)?;
        if let Some(job) = reindex {
            insert_job(&tx, job).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(product)
    }

    async fn set_product_image(
        &self,
        tenant: &str,
        external_id: &str,
        image_key: Option<&str>,
        reindex: &NewJob,
    ) -> StoreResult<Product> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let st = tx
            .prepare_cached(&format!(
                "UPDATE products SET image_key = $3, index_status = 'pending', index_error = NULL,
                        version = version + 1, updated_at = $4
                 WHERE tenant = $1 AND external_id = $2
                 RETURNING {PRODUCT_COLUMNS}"
            ))
            .await
            .map_err(map_err)?;
        let row = tx
            .query_opt(&st, &[&tenant, &external_id, &image_key, &now()])
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        let (_, product) = product_from_row(&row)?;
        insert_job(&tx, reindex).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(product)
    }

    async fn delete_product(&self, tenant: &str, external_id: &str, cleanup: &NewJob) -> StoreResult<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "DELETE FROM products WHERE tenant = $1 AND external_id = $2",
                &[&tenant, &external_id],
            )
            .await
            .map_err(map_err)?;
        if n > 0 {
            insert_job(&tx, cleanup).await?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n > 0)
    }

    async fn count_products(&self, tenant: &str) -> StoreResult<i64> {
        let client = self.client().await?;
        Ok(client
            .query_one("SELECT count(*) FROM products WHERE tenant = $1", &[&tenant])
            .await
            .map_err(map_err)?
            .col(0)?)
    }

    async fn set_index_status(&self, tenant: &str, updates: &[IndexUpdate]) -> StoreResult<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let st = tx
            .prepare_cached(
                "UPDATE products SET index_status = $4, index_error = $5
                 WHERE tenant = $1 AND external_id = $2 AND version = $3",
            )
            .await
            .map_err(map_err)?;
        let mut n = 0;
        for u in updates {
            n += tx
                .execute(
                    &st,
                    &[&tenant, &u.external_id, &u.version, &u.status.as_str(), &u.error],
                )
                .await
                .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(n)
    }
}

#[async_trait]
impl JobStore for PostgresCatalog {
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"))
            .await
            .map_err(map_err)?;
        client
            .query_opt(&st, &[&id])
            .await
            .map_err(map_err)?
            .map(|r| job_from_row(&r))
            .transpose()
    }

    async fn enqueue_job(&self, job: &NewJob) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        insert_job(&tx, job).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_jobs(
        &self,
        tenant: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant IS NOT DISTINCT FROM $1 AND ($2::text IS NULL OR status = $2)
                 ORDER BY created_at DESC, id DESC LIMIT $3"
            ))
            .await
            .map_err(map_err)?;
        client
            .query(&st, &[&tenant, &status.map(JobStatus::as_str), &i64::from(limit)])
            .await
            .map_err(map_err)?
            .iter()
            .map(job_from_row)
            .collect()
    }

    async fn job_counts(&self) -> StoreResult<Vec<(String, JobStatus, i64)>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT kind, status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running')
                 GROUP BY kind, status",
                &[],
            )
            .await
            .map_err(map_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push((r.col(0)?, JobStatus::parse(r.col(1)?)?, r.col(2)?));
        }
        Ok(out)
    }

    async fn claim_jobs_of(
        &self,
        worker: &str,
        kinds: &[String],
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute(
            "UPDATE jobs SET status = 'failed', last_error = $2, lease_owner = NULL,
                    lease_expires_at = NULL, updated_at = $1
             WHERE status = 'running' AND lease_expires_at < $1 AND attempts >= max_attempts",
            &[&now, &super::LEASE_EXPIRED_ERROR],
        )
        .await
        .map_err(map_err)?;
        // SKIP LOCKED: concurrent workers on other hosts pass over the rows
        // this one is claiming instead of waiting for them or claiming them
        // twice.
        let st = tx
            .prepare_cached(&format!(
                "WITH claimable AS (
                     SELECT id FROM jobs
                     WHERE ((status = 'queued' AND run_after <= $1)
                            OR (status = 'running' AND lease_expires_at < $1))
                       AND kind = ANY($4)
                       AND ($6::text IS NULL OR tenant = $6)
                     ORDER BY run_after, created_at
                     LIMIT $5
                     FOR UPDATE SKIP LOCKED)
                 UPDATE jobs SET status = 'running', lease_owner = $2, lease_expires_at = $3,
                        attempts = jobs.attempts + 1, updated_at = $1
                 FROM claimable WHERE jobs.id = claimable.id
                 RETURNING {}",
                JOB_COLUMNS
                    .split(", ")
                    .map(|c| format!("jobs.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
            .await
            .map_err(map_err)?;
        let rows = tx
            .query(
                &st,
                &[&now, &worker, &lease_until, &kinds, &i64::from(limit), &tenant],
            )
            .await
            .map_err(map_err)?;
        let jobs = rows.iter().map(job_from_row).collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await.map_err(map_err)?;
        Ok(jobs)
    }

    async fn heartbeat_job(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        progress: Option<(i64, i64)>,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE jobs SET lease_expires_at = $3, updated_at = $4,
                        progress_done = coalesce($5, progress_done),
                        progress_total = coalesce($6, progress_total)
                 WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                &[
                    &id,
                    &worker,
                    &lease_until,
                    &now,
                    &progress.map(|p| p.0),
                    &progress.map(|p| p.1),
                ],
            )
            .await
            .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        outcome: &JobOutcome,
    ) -> StoreResult<bool> {
        let client = self.client().await?;
        let n = match outcome {
            JobOutcome::Succeeded(result) => {
                client
                    .execute(
                        "UPDATE jobs SET status = 'succeeded', result = $3, lease_owner = NULL,
                                lease_expires_at = NULL, updated_at = $4
                         WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                        &[&id, &worker, result, &now],
                    )
                    .await
            }
            JobOutcome::Retry { error, run_after } => {
                client
                    .execute(
                        "UPDATE jobs SET status = CASE WHEN attempts < max_attempts THEN 'queued'
                                                       ELSE 'failed' END,
                                run_after = $4, last_error = $3, lease_owner = NULL,
                                lease_expires_at = NULL, updated_at = $5
                         WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                        &[&id, &worker, error, run_after, &now],
                    )
                    .await
            }
            JobOutcome::Failed(error) => {
                client
                    .execute(
                        "UPDATE jobs SET status = 'failed', last_error = $3, lease_owner = NULL,
                                lease_expires_at = NULL, updated_at = $4
                         WHERE id = $1 AND lease_owner = $2 AND status = 'running'",
                        &[&id, &worker, error, &now],
                    )
                    .await
            }
        }
        .map_err(map_err)?;
        Ok(n > 0)
    }

    async fn cancel_job(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Job> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let n = tx
            .execute(
                "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                        updated_at = $2
                 WHERE id = $1 AND status IN ('queued', 'running')",
                &[&id, &now],
            )
            .await
            .map_err(map_err)?;
        let row = tx
            .query_opt(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"), &[&id])
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        let job = job_from_row(&row)?;
        tx.commit().await.map_err(map_err)?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "job {id} already finished ({})",
                job.status.as_str()
            )));
        }
        Ok(job)
    }

    async fn release_jobs(&self, worker: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                        attempts = greatest(attempts - 1, 0), run_after = $2, updated_at = $2
                 WHERE lease_owner = $1 AND status = 'running'",
                &[&worker, &now],
            )
            .await
            .map_err(map_err)
    }
}

#[async_trait]
impl SearchLogStore for PostgresCatalog {
    async fn insert_search_logs(&self, logs: &[SearchLog]) -> StoreResult<()> {
        if logs.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        insert_logs(&tx, logs.iter()).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn query_stats(
        &self,
        tenant: &str,
        kind: QueryStatsKind,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueryStat>> {
        let client = self.client().await?;
        let zero = kind == QueryStatsKind::ZeroResults;
        let rows: Vec<(String, i64, f64)> = client
            .query(
                "SELECT query_text, count(*), avg(results_count)::float8 FROM search_logs
                 WHERE tenant = $1 AND created_at >= $2 AND query_text IS NOT NULL
                   AND (NOT $3 OR results_count = 0)
                 GROUP BY query_text ORDER BY count(*) DESC, query_text LIMIT $4",
                &[&tenant, &since, &zero, &i64::from(limit)],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| Ok((r.col(0)?, r.col(1)?, r.col(2)?)))
            .collect::<StoreResult<_>>()?;
        let texts: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        let timings: Vec<(String, f64)> = client
            .query(
                "SELECT query_text, execution_time_ms FROM search_logs
                 WHERE tenant = $1 AND created_at >= $2 AND (NOT $3 OR results_count = 0)
                   AND query_text = ANY($4)",
                &[&tenant, &since, &zero, &texts],
            )
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| Ok((r.col(0)?, r.col(1)?)))
            .collect::<StoreResult<_>>()?;
        Ok(with_p95(rows, timings))
    }
}

#[async_trait]
impl PluginStore for PostgresCatalog {
    async fn create_plugin_version(&self, new: &NewPluginVersion) -> StoreResult<PluginRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // Serialises uploads of one name (two concurrent uploads would
        // otherwise both pick the same next version).
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || $2::text, 0))",
            &[&new.tenant, &new.name],
        )
        .await
        .map_err(map_err)?;
        let row = tx
            .query_one(
                "SELECT min(world), max(version) FROM plugins WHERE tenant = $1 AND name = $2",
                &[&new.tenant, &new.name],
            )
            .await
            .map_err(map_err)?;
        let (world, last): (Option<String>, Option<i64>) = (row.col(0)?, row.col(1)?);
        if let Some(world) = world.filter(|w| *w != new.world) {
            return Err(StoreError::Conflict(format!(
                "plugin `{}` is a {world} plugin; upload a {} plugin under another name",
                new.name, new.world
            )));
        }
        let version = last.unwrap_or(0) + 1;
        let created_at = now();
        tx.execute(
            "INSERT INTO plugins (tenant, name, version, world, digest, size_bytes, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &new.tenant,
                &new.name,
                &version,
                &new.world,
                &new.digest,
                &new.size_bytes,
                &created_at,
            ],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(PluginRecord {
            tenant: new.tenant.clone(),
            name: new.name.clone(),
            version,
            world: new.world.clone(),
            digest: new.digest.clone(),
            size_bytes: new.size_bytes,
            active: false,
            params: serde_json::Map::new(),
            memory_mb: None,
            created_at,
            activated_at: None,
        })
    }

    async fn list_plugins(&self, tenant: &str) -> StoreResult<Vec<PluginRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = $1 ORDER BY name, version");
        let rows = client.query(&sql, &[&tenant]).await.map_err(map_err)?;
        rows.iter().map(plugin_from_row).collect()
    }

    async fn get_plugin(&self, tenant: &str, name: &str) -> StoreResult<Vec<PluginRecord>> {
        let client = self.client().await?;
        let sql =
            format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = $1 AND name = $2 ORDER BY version");
        let rows = client.query(&sql, &[&tenant, &name]).await.map_err(map_err)?;
        rows.iter().map(plugin_from_row).collect()
    }

    async fn active_plugins(&self, tenant: &str) -> StoreResult<Vec<PluginRecord>> {
        let client = self.client().await?;
        let sql = format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = $1 AND active ORDER BY world");
        let st = client.prepare_cached(&sql).await.map_err(map_err)?;
        let rows = client.query(&st, &[&tenant]).await.map_err(map_err)?;
        rows.iter().map(plugin_from_row).collect()
    }

    async fn activate_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
        params: &serde_json::Map<String, Value>,
        memory_mb: Option<i64>,
    ) -> StoreResult<PluginRecord> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let world: String = tx
            .query_opt(
                "SELECT world FROM plugins WHERE tenant = $1 AND name = $2 AND version = $3 FOR UPDATE",
                &[&tenant, &name, &version],
            )
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?
            .col(0)?;
        // One activation per (tenant, world) at a time: the partial unique
        // index would otherwise fail a concurrent one.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/plugin-world/' || $2::text, 0))",
            &[&tenant, &world],
        )
        .await
        .map_err(map_err)?;
        tx.execute(
            "UPDATE plugins SET active = FALSE WHERE tenant = $1 AND world = $2 AND active",
            &[&tenant, &world],
        )
        .await
        .map_err(map_err)?;
        let params = Value::Object(params.clone());
        let t = now();
        tx.execute(
            "UPDATE plugins SET active = TRUE, params = $4, memory_mb = $5, activated_at = $6
             WHERE tenant = $1 AND name = $2 AND version = $3",
            &[&tenant, &name, &version, &params, &memory_mb, &t],
        )
        .await
        .map_err(map_err)?;
        tx.execute(
            "UPDATE tenants SET generation = generation + 1 WHERE id = $1",
            &[&tenant],
        )
        .await
        .map_err(map_err)?;
        let sql =
            format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = $1 AND name = $2 AND version = $3");
        let row = tx
            .query_one(&sql, &[&tenant, &name, &version])
            .await
            .map_err(map_err)?;
        let record = plugin_from_row(&row)?;
        tx.commit().await.map_err(map_err)?;
        Ok(record)
    }

    async fn delete_plugin(&self, tenant: &str, name: &str) -> StoreResult<Vec<PluginRecord>> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        let sql = format!("DELETE FROM plugins WHERE tenant = $1 AND name = $2 RETURNING {PLUGIN_COLUMNS}");
        let rows = tx.query(&sql, &[&tenant, &name]).await.map_err(map_err)?;
        let mut removed = rows
            .iter()
            .map(plugin_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        removed.sort_by_key(|p| p.version);
        if !removed.is_empty() {
            tx.execute(
                "UPDATE tenants SET generation = generation + 1 WHERE id = $1",
                &[&tenant],
            )
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)?;
        Ok(removed)
    }
}

async fn insert_logs<'a>(
    tx: &deadpool_postgres::Transaction<'_>,
    logs: impl Iterator<Item = &'a SearchLog>,
) -> StoreResult<()> {
    let st = tx
        .prepare_cached(
            "INSERT INTO search_logs (tenant, query_type, query_text, query_image_url, results_count,
                                      execution_time_ms, user_id, session_id, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await
        .map_err(map_err)?;
    for l in logs {
        tx.execute(
            &st,
            &[
                &l.tenant,
                &l.query_type,
                &l.query_text,
                &l.query_image_url,
                &l.results_count,
                &l.execution_time_ms,
                &l.user_id,
                &l.session_id,
                &l.created_at,
            ],
        )
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// Any fixed number: the lock that numbers the change feed (one numberer
/// at a time across every origin process).
const CHANGE_NUMBERING_LOCK: i64 = 0x7669_7472_696e_6501;

fn key_from_row(r: &Row) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.col(0)?,
        tenant: r.col(1)?,
        secret_hash: r.col(2)?,
        scopes: r.col(3)?,
        label: r.col(4)?,
        created_at: r.col(5)?,
    })
}

impl PostgresCatalog {
    /// Numbers the changes committed since the last call, in one statement
    /// under a transaction-scoped advisory lock: every row it numbers was
    /// committed before it started, so a row committed later gets a higher
    /// number, and a follower never skips a change.
    async fn number_changes(&self) -> StoreResult<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CHANGE_NUMBERING_LOCK])
            .await
            .map_err(map_err)?;
        // Numbered in insertion order (a tenant before its first product):
        // nextval runs over the ordered rows, then the numbers are written.
        tx.execute(
            "UPDATE changes SET seq = numbered.seq
             FROM (SELECT id, nextval('change_seq') AS seq
                   FROM (SELECT id FROM changes WHERE seq IS NULL ORDER BY id) AS pending) AS numbered
             WHERE changes.id = numbered.id",
            &[],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }
}

#[async_trait]
impl ReplicationStore for PostgresCatalog {
    async fn feed_head(&self) -> StoreResult<i64> {
        self.number_changes().await?;
        let client = self.client().await?;
        let row = client
            .query_one("SELECT COALESCE(MAX(seq), 0)::BIGINT FROM changes", &[])
            .await
            .map_err(map_err)?;
        row.col(0)
    }

    async fn changes_after(
        &self,
        after: i64,
        limit: u32,
        tenants: Option<&[String]>,
    ) -> StoreResult<Vec<Change>> {
        self.number_changes().await?;
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT seq, kind, tenant, entity FROM changes
                 WHERE seq > $1 AND ($3::TEXT[] IS NULL OR tenant = ANY($3))
                 ORDER BY seq LIMIT $2",
            )
            .await
            .map_err(map_err)?;
        client
            .query(&st, &[&after, &i64::from(limit), &tenants])
            .await
            .map_err(map_err)?
            .iter()
            .map(|r| {
                let kind: String = r.col(1)?;
                Ok(Change {
                    seq: r.col(0)?,
                    kind: ChangeKind::parse(&kind)
                        .ok_or_else(|| StoreError::other(format!("corrupt change kind {kind:?}")))?,
                    tenant: r.col(2)?,
                    entity: r.col(3)?,
                })
            })
            .collect()
    }

    async fn all_api_keys(&self, tenants: Option<&[String]>) -> StoreResult<Vec<ApiKeyRecord>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(
                "SELECT id, tenant, secret_hash, scopes, label, created_at FROM api_keys
                 WHERE $1::TEXT[] IS NULL OR tenant = ANY($1) ORDER BY id",
            )
            .await
            .map_err(map_err)?;
        client
            .query(&st, &[&tenants])
            .await
            .map_err(map_err)?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn record_generation(&self, g: &IndexGeneration) -> StoreResult<()> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO index_generations (id, model, model_id, dims, created_at) VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (id) DO UPDATE SET model = excluded.model, model_id = excluded.model_id,
                     dims = excluded.dims, created_at = excluded.created_at",
                &[&g.id, &g.model, &g.model_id, &(g.dims as i32)],
            )
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn current_generation(&self) -> StoreResult<Option<IndexGeneration>> {
        let client = self.client().await?;
        client
            .query_opt(
                "SELECT id, model, model_id, dims FROM index_generations ORDER BY created_at DESC, id DESC LIMIT 1",
                &[],
            )
            .await
            .map_err(map_err)?
            .map(|r| {
                Ok(IndexGeneration {
                    id: r.col(0)?,
                    model: r.col(1)?,
                    model_id: r.col(2)?,
                    dims: i64::from(r.col::<i32>(3)?),
                })
            })
            .transpose()
    }

    async fn accept_edge_logs(&self, edge: &str, logs: &[(i64, SearchLog)]) -> StoreResult<i64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(map_err)?;
        // The row lock orders two deliveries of one edge's batch.
        tx.execute(
            "INSERT INTO replica_edges (edge, last_log_seq, updated_at) VALUES ($1, 0, now())
             ON CONFLICT (edge) DO NOTHING",
            &[&edge],
        )
        .await
        .map_err(map_err)?;
        let last: i64 = tx
            .query_one(
                "SELECT last_log_seq FROM replica_edges WHERE edge = $1 FOR UPDATE",
                &[&edge],
            )
            .await
            .map_err(map_err)?
            .col(0)?;
        insert_logs(&tx, logs.iter().filter(|(seq, _)| *seq > last).map(|(_, l)| l)).await?;
        let now_last = logs.iter().map(|(seq, _)| *seq).fold(last, i64::max);
        tx.execute(
            "UPDATE replica_edges SET last_log_seq = $2, updated_at = now() WHERE edge = $1",
            &[&edge, &now_last],
        )
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(now_last)
    }

    async fn compact_changes(&self, after: i64, span: i64) -> StoreResult<(i64, u64)> {
        // Only numbered changes take part: one numbered later is considered
        // by a later pass.
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH bound AS (SELECT LEAST(COALESCE(MAX(seq), 0), $2) AS through FROM changes),
                 gone AS (
                     DELETE FROM changes AS old USING changes AS new, bound
                     WHERE new.seq > $1 AND new.seq <= bound.through
                       AND old.kind = new.kind AND old.tenant = new.tenant
                       AND old.entity = new.entity AND old.seq < new.seq
                     RETURNING old.id)
                 SELECT (SELECT through FROM bound)::BIGINT, (SELECT COUNT(*) FROM gone)::BIGINT",
                &[&after, &after.saturating_add(span.max(1))],
            )
            .await
            .map_err(map_err)?;
        let through: i64 = row.col(0)?;
        let deleted: i64 = row.col(1)?;
        Ok((through, deleted.max(0) as u64))
    }

    async fn products_after_row(
        &self,
        after: i64,
        limit: u32,
        tenants: Option<&[String]>,
    ) -> StoreResult<Vec<(i64, Product)>> {
        let client = self.client().await?;
        let st = client
            .prepare_cached(&format!(
                "SELECT {PRODUCT_COLUMNS} FROM products
                 WHERE id > $1 AND ($3::TEXT[] IS NULL OR tenant = ANY($3))
                 ORDER BY id LIMIT $2"
            ))
            .await
            .map_err(map_err)?;
        client
            .query(&st, &[&after, &i64::from(limit), &tenants])
            .await
            .map_err(map_err)?
            .iter()
            .map(product_from_row)
            .collect()
    }
}

const JOB_COLUMNS: &str = "id, kind, tenant, payload, status, attempts, max_attempts, run_after, \
     lease_owner, lease_expires_at, progress_done, progress_total, last_error, result, created_at, updated_at";

fn job_from_row(r: &Row) -> StoreResult<Job> {
    Ok(Job {
        id: r.col(0)?,
        kind: r.col(1)?,
        tenant: r.col(2)?,
        payload: r.col(3)?,
        status: JobStatus::parse(r.col(4)?)?,
        attempts: r.col(5)?,
        max_attempts: r.col(6)?,
        run_after: r.col(7)?,
        lease_owner: r.col(8)?,
        lease_expires_at: r.col(9)?,
        progress_done: r.col(10)?,
        progress_total: r.col(11)?,
        last_error: r.col(12)?,
        result: r.col(13)?,
        created_at: r.col(14)?,
        updated_at: r.col(15)?,
    })
}

/// Test support: a throwaway schema in the test database, dropped on drop.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// The database tests use, from `VITRINE_TEST_POSTGRES_URL`. `None`
    /// (and a printed note) when unset, except in CI, where it is required.
    pub fn test_database_url() -> Option<String> {
        match std::env::var("VITRINE_TEST_POSTGRES_URL") {
            Ok(url) if !url.is_empty() => Some(url),
            _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
                panic!("VITRINE_TEST_POSTGRES_URL must be set in CI (.ci/run sets it)")
            }
            _ => {
                eprintln!("skipped: PostgreSQL tests need VITRINE_TEST_POSTGRES_URL");
                None
            }
        }
    }

    pub struct TestSchema {
        pub url: String,
        admin: tokio_postgres::Client,
        schema: String,
    }

    impl TestSchema {
        pub async fn create(base_url: &str) -> Self {
            let (admin, conn) = tokio_postgres::connect(base_url, tokio_postgres::NoTls)
                .await
                .expect("connect to the test database");
            tokio::spawn(conn);
            let schema = format!("vitrine_test_{}", uuid::Uuid::new_v4().simple());
            admin
                .batch_execute(&format!("CREATE SCHEMA {schema}"))
                .await
                .expect("create test schema");
            let sep = if base_url.contains('?') { '&' } else { '?' };
            let url = format!("{base_url}{sep}options=-csearch_path%3D{schema}");
            Self { url, admin, schema }
        }

        pub async fn drop_schema(self) {
            self.admin
                .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema))
                .await
                .expect("drop test schema");
        }
    }

    /// One test per part of the contract, each in a fresh schema.
    macro_rules! contract_parts {
        ($($part:ident),*) => {$(
            #[tokio::test]
            async fn $part() {
                let Some(base) = test_database_url() else { return };
                let schema = TestSchema::create(&base).await;
                let cat = PostgresCatalog::connect(&schema.url, 4).await.unwrap();
                crate::store::contract::$part(&cat).await;
                drop(cat);
                schema.drop_schema().await;
            }
        )*};
    }

    mod contract {
        use super::{PostgresCatalog, TestSchema, test_database_url};
        contract_parts!(
            tenants_and_keys,
            products,
            jobs,
            search_logs,
            plugins,
            replication
        );
    }

    #[tokio::test]
    async fn migrations_are_idempotent_under_concurrent_starts() {
        let Some(base) = test_database_url() else { return };
        let schema = TestSchema::create(&base).await;
        let (a, b) = tokio::join!(
            PostgresCatalog::connect(&schema.url, 1),
            PostgresCatalog::connect(&schema.url, 1)
        );
        let (a, b) = (a.unwrap(), b.unwrap());
        let report = a.migrate().await.unwrap();
        assert!(report.applied.is_empty());
        assert_eq!(
            report.already_applied,
            super::super::migrations::POSTGRES
                .iter()
                .map(|m| m.version)
                .collect::<Vec<_>>()
        );
        assert_eq!(b.list_tenants().await.unwrap().len(), 1);
        drop((a, b));
        schema.drop_schema().await;
    }

    /// A column whose type is not what the code reads (a schema changed
    /// by hand, a migration out of step) is an error naming the column,
    /// not a panic.
    #[tokio::test]
    async fn a_drifted_schema_is_an_error_not_a_panic() {
        let Some(base) = test_database_url() else { return };
        let schema = TestSchema::create(&base).await;
        let cat = PostgresCatalog::connect(&schema.url, 2).await.unwrap();
        let fields = crate::store::contract::fields("t");
        let job = super::super::NewJob::new("index_product", "default", serde_json::json!({}));
        cat.create_product("default", "p", &fields, &job).await.unwrap();
        let (drift, conn) = tokio_postgres::connect(&schema.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        drift
            .batch_execute(
                "ALTER TABLE tenants ALTER COLUMN name TYPE integer USING 7;
                 ALTER TABLE products ALTER COLUMN in_stock DROP DEFAULT;
                 ALTER TABLE products ALTER COLUMN in_stock TYPE integer USING 1;",
            )
            .await
            .unwrap();
        // A new pool: prepared statements of the old one know the old types.
        let cat = PostgresCatalog::connect(&schema.url, 2).await.unwrap();
        for err in [
            cat.get_tenant("default").await.unwrap_err(),
            cat.list_tenants().await.unwrap_err(),
            cat.get_product("default", "p").await.unwrap_err(),
        ] {
            let StoreError::Other(m, _) = &err else {
                panic!("{err:?}")
            };
            assert!(m.contains("(name)") || m.contains("(in_stock)"), "{m}");
        }
        drop(cat);
        schema.drop_schema().await;
    }

    #[tokio::test]
    async fn an_unreachable_database_is_unavailable() {
        // Port 1 on loopback: nothing listens there.
        let Err(err) = PostgresCatalog::connect("postgres://nobody@127.0.0.1:1/none", 1).await else {
            panic!("connected to nothing")
        };
        assert!(matches!(err, StoreError::Unavailable(..)), "{err:?}");
    }
}
