//! The embedded catalog: one SQLite file in the data directory, WAL mode.
//!
//! SQLite is synchronous, so every call runs on tokio's blocking pool, never
//! on the async workers. One connection writes (SQLite admits one writer at a
//! time anyway, and a single writer avoids `SQLITE_BUSY` upgrade deadlocks);
//! a few read-only connections serve reads concurrently thanks to WAL.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, ToSql, TransactionBehavior, params};
use rust_decimal::Decimal;
use serde_json::Value;

use super::ErrorKind;
use super::ON_CONFLICT_REPLACE;
use super::migrations::{self, MigrationReport};
use super::replica::{Change, ChangeKind, IndexGeneration, ReplicaBatch, ReplicaState, ReplicationStore};
use super::{
    ApiKeyRecord, Catalog, IndexUpdate, Job, JobOutcome, JobStatus, NewJob, NewPluginVersion, PluginRecord,
    PoolStatus, ProductPage, QueryStat, QueryStatsKind, SearchLog, StoreError, StoreResult, Tenant,
    object_from_json, string_list_from_json, with_p95,
};
use super::{JobStore, PluginStore, ProductStore, SearchLogStore, TenantStore};
use crate::model::{IndexStatus, Product, ProductFields, format_time, now};

/// How long a statement waits for a lock before giving up with `Unavailable`.
const BUSY_TIMEOUT_MS: u64 = 5_000;

pub struct SqliteCatalog {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// Connections held by a call, and calls waiting for one.
    in_use: AtomicUsize,
    waiting: AtomicUsize,
}

/// A call's claim on a connection, counted for the pool gauges.
struct Held<'a>(&'a Inner);

impl<'a> Held<'a> {
    fn wait<T>(inner: &'a Inner, lock: impl FnOnce() -> T) -> (Self, T) {
        inner.waiting.fetch_add(1, Ordering::Relaxed);
        let start = std::time::Instant::now();
        let guard = lock();
        metrics::histogram!(crate::telemetry::CATALOG_POOL_WAIT, "backend" => "sqlite")
            .record(start.elapsed().as_secs_f64());
        inner.waiting.fetch_sub(1, Ordering::Relaxed);
        inner.in_use.fetch_add(1, Ordering::Relaxed);
        (Self(inner), guard)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog file and applies migrations.
    pub async fn open(path: &Path, max_connections: usize) -> StoreResult<Self> {
        let path = path.to_path_buf();
        let readers = max_connections.clamp(1, 16);
        tokio::task::spawn_blocking(move || Self::open_blocking(path, readers))
            .await
            .map_err(join_error)?
    }

    fn open_blocking(path: PathBuf, readers: usize) -> StoreResult<Self> {
        let mut writer = Connection::open(&path).map_err(|e| unavailable(&path, e))?;
        // WAL lets readers run beside the writer. synchronous=FULL makes every
        // acknowledged write durable even across power loss, not only across a
        // killed process: the catalog is the source of truth.
        writer
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
            ))
            .map_err(map_err)?;
        apply_migrations(&mut writer)?;
        let mut pool = Vec::with_capacity(readers);
        for _ in 0..readers {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI,
            )
            .map_err(|e| unavailable(&path, e))?;
            conn.execute_batch(&format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"))
                .map_err(map_err)?;
            pool.push(Mutex::new(conn));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: pool,
                next_reader: AtomicUsize::new(0),
                in_use: AtomicUsize::new(0),
                waiting: AtomicUsize::new(0),
            }),
        })
    }

    /// Applies pending migrations to the file at `path` (the `migrate` command).
    pub async fn migrate(path: &Path) -> StoreResult<MigrationReport> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let mut conn = Connection::open(&path).map_err(|e| unavailable(&path, e))?;
            conn.execute_batch(&format!(
                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = {BUSY_TIMEOUT_MS};"
            ))
            .map_err(map_err)?;
            apply_migrations(&mut conn)
        })
        .await
        .map_err(join_error)?
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let (_held, conn) = Held::wait(&inner, || inner.writer.lock());
            let mut conn = conn.map_err(|_| StoreError::other("catalog writer lock poisoned"))?;
            f(&mut conn)
        })
        .await
        .map_err(join_error)?
    }

    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let (_held, conn) = Held::wait(&inner, || inner.readers[i].lock());
            let conn = conn.map_err(|_| StoreError::other("catalog reader lock poisoned"))?;
            f(&conn)
        })
        .await
        .map_err(join_error)?
    }
}

fn apply_migrations(conn: &mut Connection) -> StoreResult<MigrationReport> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(map_err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS vitrine_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at TEXT NOT NULL
         )",
    )
    .map_err(map_err)?;
    let mut report = MigrationReport::default();
    for m in migrations::SQLITE {
        let done: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM vitrine_migrations WHERE version = ?1)",
                [m.version],
                |r| r.get(0),
            )
            .map_err(map_err)?;
        if done {
            report.already_applied.push(m.version);
            continue;
        }
        tx.execute_batch(m.sql).map_err(map_err)?;
        tx.execute(
            "INSERT INTO vitrine_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            params![m.version, m.name, format_time(&now())],
        )
        .map_err(map_err)?;
        report.applied.push(m.version);
    }
    tx.commit().map_err(map_err)?;
    Ok(report)
}

fn join_error(e: tokio::task::JoinError) -> StoreError {
    StoreError::Other(format!("catalog task failed: {e}"), Some(Arc::new(e)))
}

fn unavailable(path: &Path, e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(
        format!("cannot open SQLite catalog {}: {e}", path.display()),
        Some(Arc::new(e)),
    )
}

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::ConstraintViolation
                if matches!(
                    f.extended_code,
                    rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE | rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                ) =>
            {
                ErrorKind::Duplicate
            }
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::ReadOnly
            | ErrorCode::SystemIoFailure => ErrorKind::Unavailable,
            _ => ErrorKind::Other,
        },
        _ => ErrorKind::Other,
    };
    kind.error(e.to_string(), Arc::new(e))
}

fn parse_time(s: &str) -> rusqlite::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))
}

const PLUGIN_COLUMNS: &str =
    "tenant, name, version, world, digest, size_bytes, active, params, memory_mb, created_at, activated_at";

fn query_plugins(c: &Connection, sql: &str, params: impl rusqlite::Params) -> StoreResult<Vec<PluginRecord>> {
    let mut st = c.prepare_cached(sql).map_err(map_err)?;
    let rows = st
        .query_map(params, |r| {
            let params: String = r.get(7)?;
            Ok(PluginRecord {
                tenant: r.get(0)?,
                name: r.get(1)?,
                version: r.get(2)?,
                world: r.get(3)?,
                digest: r.get(4)?,
                size_bytes: r.get(5)?,
                active: r.get::<_, i64>(6)? != 0,
                params: serde_json::from_str(&params).map_err(conversion)?,
                memory_mb: r.get(8)?,
                created_at: parse_time(&r.get::<_, String>(9)?)?,
                activated_at: r
                    .get::<_, Option<String>>(10)?
                    .map(|t| parse_time(&t))
                    .transpose()?,
            })
        })
        .map_err(map_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
}

fn conversion(e: impl std::fmt::Display) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Text,
        Box::new(std::io::Error::other(e.to_string())),
    )
}

const PRODUCT_COLUMNS: &str = "id, tenant, external_id, title, description, category, price, currency, \
     image_url, tags, in_stock, metadata, index_status, index_error, version, created_at, updated_at, image_key";

fn product_from_row(r: &Row<'_>) -> rusqlite::Result<(i64, Product)> {
    let price: Option<String> = r.get(6)?;
    let price = price
        .map(|p| Decimal::from_str(&p).map_err(conversion))
        .transpose()?;
    let tags: String = r.get(9)?;
    let metadata: String = r.get(11)?;
    let status: String = r.get(12)?;
    Ok((
        r.get(0)?,
        Product {
            tenant: r.get(1)?,
            external_id: r.get(2)?,
            fields: ProductFields {
                title: r.get(3)?,
                description: r.get(4)?,
                category: r.get(5)?,
                price,
                currency: r.get(7)?,
                image_url: r.get(8)?,
                tags: string_list_from_json(&tags).map_err(conversion)?,
                in_stock: r.get(10)?,
                metadata: object_from_json(&metadata).map_err(conversion)?,
            },
            index_status: IndexStatus::from_str(&status).map_err(conversion)?,
            index_error: r.get(13)?,
            version: r.get(14)?,
            created_at: parse_time(&r.get::<_, String>(15)?)?,
            updated_at: parse_time(&r.get::<_, String>(16)?)?,
            image_key: r.get(17)?,
        },
    ))
}

fn select_product(conn: &Connection, tenant: &str, external_id: &str) -> StoreResult<Option<Product>> {
    conn.prepare_cached(&format!(
        "SELECT {PRODUCT_COLUMNS} FROM products WHERE tenant = ?1 AND external_id = ?2"
    ))
    .map_err(map_err)?
    .query_row(params![tenant, external_id], product_from_row)
    .optional()
    .map(|o| o.map(|(_, p)| p))
    .map_err(map_err)
}

fn insert_job(conn: &Connection, job: &NewJob) -> StoreResult<()> {
    let t = format_time(&now());
    conn.prepare_cached(
        "INSERT INTO jobs (id, kind, tenant, payload, status, attempts, max_attempts, run_after,
                           created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', 0, ?5, ?6, ?6, ?6)",
    )
    .map_err(map_err)?
    .execute(params![
        job.id,
        job.kind,
        job.tenant,
        job.payload.to_string(),
        job.max_attempts,
        t
    ])
    .map_err(map_err)?;
    Ok(())
}

/// Inserts one product; `?1`–`?12` are tenant, external id, the
/// [`field_params`] and the creation time. Upserts append [`ON_CONFLICT_REPLACE`].
const INSERT_PRODUCT: &str = "INSERT INTO products (tenant, external_id, title, description, category, price,
                                       currency, image_url, tags, in_stock, metadata, index_status, version,
                                       created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 'pending', 1, ?12, ?12)";

/// The values of a product's editable columns that need converting.
struct Converted {
    price: Option<String>,
    tags: String,
    metadata: String,
}

impl Converted {
    fn new(f: &ProductFields) -> Self {
        Self {
            price: f.price.map(|d| d.to_string()),
            tags: serde_json::Value::from(f.tags.clone()).to_string(),
            metadata: serde_json::Value::Object(f.metadata.clone()).to_string(),
        }
    }
}

/// The editable columns, title to metadata, in table order: `?3`–`?11` of
/// both [`INSERT_PRODUCT`] and the update statement.
fn field_params<'a>(f: &'a ProductFields, c: &'a Converted) -> [&'a dyn ToSql; 9] {
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
    t: &'a &'a str,
) -> Vec<&'a dyn ToSql> {
    let mut v: Vec<&dyn ToSql> = vec![tenant, external_id];
    v.extend(field_params(f, c));
    v.push(t);
    v
}

#[async_trait]
impl Catalog for SqliteCatalog {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|c| {
            c.query_row("SELECT count(*) FROM vitrine_migrations", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(map_err)
            .map(|_| ())
        })
        .await
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: self.inner.readers.len() + 1,
            in_use: self.inner.in_use.load(Ordering::Relaxed),
            waiting: self.inner.waiting.load(Ordering::Relaxed),
        }
    }
}

#[async_trait]
impl TenantStore for SqliteCatalog {
    async fn create_tenant(&self, id: &str, name: &str) -> StoreResult<Tenant> {
        let tenant = Tenant {
            id: id.to_owned(),
            name: name.to_owned(),
            created_at: now(),
        };
        let t = tenant.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?2, ?3)",
                params![t.id, t.name, format_time(&t.created_at)],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Duplicate(..) => {
                    StoreError::Conflict(format!("tenant `{}` already exists", t.id))
                }
                other => other,
            })?;
            Ok(())
        })
        .await?;
        Ok(tenant)
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT id, name, created_at FROM tenants WHERE id = ?1")
                .map_err(map_err)?
                .query_row([id], |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: parse_time(&r.get::<_, String>(2)?)?,
                    })
                })
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached("SELECT id, name, created_at FROM tenants ORDER BY id")
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok(Tenant {
                        id: r.get(0)?,
                        name: r.get(1)?,
                        created_at: parse_time(&r.get::<_, String>(2)?)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let k = key.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO api_keys (id, tenant, secret_hash, scopes, label, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    k.id,
                    k.tenant,
                    k.secret_hash,
                    serde_json::Value::from(k.scopes.clone()).to_string(),
                    k.label,
                    format_time(&k.created_at)
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
                .map_err(map_err)?
                .query_row([id], key_from_row)
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn delete_api_key(&self, tenant: &str, id: &str) -> StoreResult<bool> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |c| {
            c.execute(
                "DELETE FROM api_keys WHERE tenant = ?1 AND id = ?2",
                params![tenant, id],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    async fn tenant_generation(&self, tenant: &str) -> StoreResult<i64> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            c.prepare_cached("SELECT generation FROM tenants WHERE id = ?1")
                .map_err(map_err)?
                .query_row([tenant], |r| r.get(0))
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(map_err)
        })
        .await
    }

    async fn tenant_limits(&self, tenant: &str) -> StoreResult<Option<Value>> {
        let tenant = tenant.to_owned();
        let text: Option<String> = self
            .read(move |c| {
                c.prepare_cached("SELECT limits FROM tenants WHERE id = ?1")
                    .map_err(map_err)?
                    .query_row([tenant], |r| r.get(0))
                    .optional()
                    .map_err(map_err)
            })
            .await?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| StoreError::other(format!("stored tenant limits: {e}")))
        })
        .transpose()
    }

    async fn set_tenant_limits(&self, tenant: &str, limits: &Value) -> StoreResult<bool> {
        let (tenant, text) = (tenant.to_owned(), limits.to_string());
        self.write(move |c| {
            c.execute(
                "UPDATE tenants SET limits = ?2 WHERE id = ?1",
                params![tenant, text],
            )
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    async fn bump_generation(&self, tenant: &str) -> StoreResult<()> {
        let tenant = tenant.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE tenants SET generation = generation + 1 WHERE id = ?1",
                [tenant],
            )
            .map(|_| ())
            .map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl ProductStore for SqliteCatalog {
    async fn create_product(
        &self,
        tenant: &str,
        external_id: &str,
        fields: &ProductFields,
        job: &NewJob,
    ) -> StoreResult<Product> {
        let t = now();
        let product = Product {
            tenant: tenant.to_owned(),
            external_id: external_id.to_owned(),
            fields: fields.clone(),
            index_status: IndexStatus::Pending,
            index_error: None,
            version: 1,
            created_at: t,
            updated_at: t,
            image_key: None,
        };
        let (p, job) = (product.clone(), job.clone());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let converted = Converted::new(&p.fields);
            let created = format_time(&p.created_at);
            tx.prepare_cached(INSERT_PRODUCT)
                .map_err(map_err)?
                .execute(&*insert_params(
                    &p.tenant.as_str(),
                    &p.external_id.as_str(),
                    &p.fields,
                    &converted,
                    &created.as_str(),
                ))
                .map_err(|e| match map_err(e) {
                    StoreError::Duplicate(..) => StoreError::Conflict(format!(
                        "a product with external_id `{}` already exists",
                        p.external_id
                    )),
                    other => other,
                })?;
            insert_job(&tx, &job)?;
            tx.commit().map_err(map_err)
        })
        .await?;
        Ok(product)
    }

    async fn upsert_products(
        &self,
        tenant: &str,
        items: &[(String, ProductFields)],
        job: &NewJob,
    ) -> StoreResult<()> {
        let (tenant, items, job) = (tenant.to_owned(), items.to_vec(), job.clone());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            {
                let t = format_time(&now());
                let mut st = tx
                    .prepare_cached(&format!("{INSERT_PRODUCT}{ON_CONFLICT_REPLACE}"))
                    .map_err(map_err)?;
                for (external_id, f) in &items {
                    let converted = Converted::new(f);
                    st.execute(&*insert_params(
                        &tenant.as_str(),
                        &external_id.as_str(),
                        f,
                        &converted,
                        &t.as_str(),
                    ))
                    .map_err(map_err)?;
                }
            }
            insert_job(&tx, &job)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn get_product(&self, tenant: &str, external_id: &str) -> StoreResult<Option<Product>> {
        let (tenant, external_id) = (tenant.to_owned(), external_id.to_owned());
        self.read(move |c| select_product(c, &tenant, &external_id)).await
    }

    async fn get_products(&self, tenant: &str, external_ids: &[String]) -> StoreResult<Vec<Product>> {
        if external_ids.is_empty() {
            return Ok(Vec::new());
        }
        let tenant = tenant.to_owned();
        // One statement whatever the number of ids: json_each avoids
        // SQLite's bound-parameter limit.
        let ids = serde_json::Value::from(external_ids.to_vec()).to_string();
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {PRODUCT_COLUMNS} FROM products
                     WHERE tenant = ?1 AND external_id IN (SELECT value FROM json_each(?2))"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![tenant, ids], product_from_row)
                .map_err(map_err)?;
            rows.map(|r| r.map(|(_, p)| p))
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(map_err)
        })
        .await
    }

    async fn list_products(
        &self,
        tenant: &str,
        category: Option<&str>,
        after: Option<i64>,
        limit: u32,
    ) -> StoreResult<ProductPage> {
        let (tenant, category) = (tenant.to_owned(), category.map(str::to_owned));
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {PRODUCT_COLUMNS} FROM products
                     WHERE tenant = ?1 AND (?2 IS NULL OR category = ?2) AND id > ?3
                     ORDER BY id LIMIT ?4"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(
                    params![tenant, category, after.unwrap_or(0), i64::from(limit) + 1],
                    product_from_row,
                )
                .map_err(map_err)?;
            let mut rows = rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)?;
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
        })
        .await
    }

    async fn update_product(
        &self,
        tenant: &str,
        external_id: &str,
        fields: &ProductFields,
        expected_version: Option<i64>,
        reindex: Option<&NewJob>,
    ) -> StoreResult<Product> {
        let (tenant, external_id, f, job) = (
            tenant.to_owned(),
            external_id.to_owned(),
            fields.clone(),
            reindex.cloned(),
        );
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT version FROM products WHERE tenant = ?1 AND external_id = ?2",
                    params![tenant, external_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            let Some(current) = current else {
                return Err(StoreError::NotFound);
            };
            if expected_version.is_some_and(|v| v != current) {
                return Err(StoreError::Conflict(
                    "the product was changed concurrently".into(),
                ));
            }
            let converted = Converted::new(&f);
            let (reindexing, updated) = (job.is_some(), format_time(&now()));
            tx.prepare_cached(
                "UPDATE products SET title = ?3, description = ?4, category = ?5, price = ?6,
                        currency = ?7, image_url = ?8, tags = ?9, in_stock = ?10, metadata = ?11,
                        index_status = CASE WHEN ?12 THEN 'pending' ELSE index_status END,
                        index_error = CASE WHEN ?12 THEN NULL ELSE index_error END,
                        version = version + 1, updated_at = ?13
                 WHERE tenant = ?1 AND external_id = ?2",
            )
            .map_err(map_err)?
            .execute(&*{
                let mut params: Vec<&dyn ToSql> = vec![&tenant, &external_id];
                params.extend(field_params(&f, &converted));
                params.extend([&reindexing as &dyn ToSql, &updated]);
                params
            })
            .map_err(map_err)?;
            if let Some(job) = &job {
                insert_job(&tx, job)?;
            }
            let product = select_product(&tx, &tenant, &external_id)?.ok_or(StoreError::NotFound)?;
            tx.commit().map_err(map_err)?;
            Ok(product)
        })
        .await
    }

    async fn set_product_image(
        &self,
        tenant: &str,
        external_id: &str,
        image_key: Option<&str>,
        reindex: &NewJob,
    ) -> StoreResult<Product> {
        let (tenant, external_id, key, job) = (
            tenant.to_owned(),
            external_id.to_owned(),
            image_key.map(str::to_owned),
            reindex.clone(),
        );
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let n = tx
                .prepare_cached(
                    "UPDATE products SET image_key = ?3, index_status = 'pending', index_error = NULL,
                            version = version + 1, updated_at = ?4
                     WHERE tenant = ?1 AND external_id = ?2",
                )
                .map_err(map_err)?
                .execute(params![tenant, external_id, key, format_time(&now())])
                .map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            insert_job(&tx, &job)?;
            let product = select_product(&tx, &tenant, &external_id)?.ok_or(StoreError::NotFound)?;
            tx.commit().map_err(map_err)?;
            Ok(product)
        })
        .await
    }

    async fn delete_product(&self, tenant: &str, external_id: &str, cleanup: &NewJob) -> StoreResult<bool> {
        let (tenant, external_id, cleanup) = (tenant.to_owned(), external_id.to_owned(), cleanup.clone());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let n = tx
                .execute(
                    "DELETE FROM products WHERE tenant = ?1 AND external_id = ?2",
                    params![tenant, external_id],
                )
                .map_err(map_err)?;
            if n > 0 {
                insert_job(&tx, &cleanup)?;
            }
            tx.commit().map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn count_products(&self, tenant: &str) -> StoreResult<i64> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            c.query_row("SELECT count(*) FROM products WHERE tenant = ?1", [tenant], |r| {
                r.get(0)
            })
            .map_err(map_err)
        })
        .await
    }

    async fn set_index_status(&self, tenant: &str, updates: &[IndexUpdate]) -> StoreResult<u64> {
        let (tenant, updates) = (tenant.to_owned(), updates.to_vec());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let mut n = 0;
            {
                let mut st = tx
                    .prepare_cached(
                        "UPDATE products SET index_status = ?4, index_error = ?5
                         WHERE tenant = ?1 AND external_id = ?2 AND version = ?3",
                    )
                    .map_err(map_err)?;
                for u in &updates {
                    n += st
                        .execute(params![
                            tenant,
                            u.external_id,
                            u.version,
                            u.status.as_str(),
                            u.error
                        ])
                        .map_err(map_err)? as u64;
                }
            }
            tx.commit().map_err(map_err)?;
            Ok(n)
        })
        .await
    }
}

#[async_trait]
impl JobStore for SqliteCatalog {
    async fn get_job(&self, id: &str) -> StoreResult<Option<Job>> {
        let id = id.to_owned();
        self.read(move |c| {
            c.prepare_cached(&format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"))
                .map_err(map_err)?
                .query_row([id], job_from_row)
                .optional()
                .map_err(map_err)
        })
        .await
    }

    async fn enqueue_job(&self, job: &NewJob) -> StoreResult<()> {
        let job = job.clone();
        self.write(move |c| insert_job(c, &job)).await
    }

    async fn list_jobs(
        &self,
        tenant: Option<&str>,
        status: Option<JobStatus>,
        limit: u32,
    ) -> StoreResult<Vec<Job>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant IS ?1 AND (?2 IS NULL OR status = ?2)
                     ORDER BY created_at DESC, id DESC LIMIT ?3"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(
                    params![tenant, status.map(JobStatus::as_str), limit],
                    job_from_row,
                )
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn job_counts(&self) -> StoreResult<Vec<(String, JobStatus, i64)>> {
        self.read(|c| {
            let mut st = c
                .prepare_cached(
                    "SELECT kind, status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running')
                     GROUP BY kind, status",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map([], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                    ))
                })
                .map_err(map_err)?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, status, n) = row.map_err(map_err)?;
                if let Ok(status) = JobStatus::parse(&status) {
                    out.push((kind, status, n));
                }
            }
            Ok(out)
        })
        .await
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
        let worker = worker.to_owned();
        let tenant = tenant.map(str::to_owned);
        let kinds = serde_json::Value::from(kinds.to_vec()).to_string();
        let (now, until) = (format_time(&now), format_time(&lease_until));
        // One process writes at a time (the single writer connection inside
        // an IMMEDIATE transaction), so select-then-update cannot race.
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            tx.prepare_cached(
                "UPDATE jobs SET status = 'failed', last_error = ?2, lease_owner = NULL,
                        lease_expires_at = NULL, updated_at = ?1
                 WHERE status = 'running' AND lease_expires_at < ?1 AND attempts >= max_attempts",
            )
            .map_err(map_err)?
            .execute(params![now, super::LEASE_EXPIRED_ERROR])
            .map_err(map_err)?;
            let jobs = {
                let mut st = tx
                    .prepare_cached(&format!(
                        "UPDATE jobs SET status = 'running', lease_owner = ?2, lease_expires_at = ?3,
                                attempts = attempts + 1, updated_at = ?1
                         WHERE id IN (
                             SELECT id FROM jobs
                             WHERE ((status = 'queued' AND run_after <= ?1)
                                    OR (status = 'running' AND lease_expires_at < ?1))
                               AND kind IN (SELECT value FROM json_each(?4))
                               AND (?6 IS NULL OR tenant = ?6)
                             ORDER BY run_after, created_at LIMIT ?5)
                         RETURNING {JOB_COLUMNS}"
                    ))
                    .map_err(map_err)?;
                let rows = st
                    .query_map(params![now, worker, until, kinds, limit, tenant], job_from_row)
                    .map_err(map_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)?
            };
            tx.commit().map_err(map_err)?;
            Ok(jobs)
        })
        .await
    }

    async fn heartbeat_job(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        progress: Option<(i64, i64)>,
    ) -> StoreResult<bool> {
        let (id, worker) = (id.to_owned(), worker.to_owned());
        let (now, until) = (format_time(&now), format_time(&lease_until));
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE jobs SET lease_expires_at = ?3, updated_at = ?4,
                        progress_done = coalesce(?5, progress_done),
                        progress_total = coalesce(?6, progress_total)
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
            )
            .map_err(map_err)?
            .execute(params![
                id,
                worker,
                until,
                now,
                progress.map(|p| p.0),
                progress.map(|p| p.1)
            ])
            .map(|n| n > 0)
            .map_err(map_err)
        })
        .await
    }

    async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        now: DateTime<Utc>,
        outcome: &JobOutcome,
    ) -> StoreResult<bool> {
        let (id, worker, now, outcome) = (
            id.to_owned(),
            worker.to_owned(),
            format_time(&now),
            outcome.clone(),
        );
        self.write(move |c| {
            let n = match &outcome {
                JobOutcome::Succeeded(result) => c
                    .prepare_cached(
                        "UPDATE jobs SET status = 'succeeded', result = ?3, lease_owner = NULL,
                                lease_expires_at = NULL, updated_at = ?4
                         WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                    )
                    .map_err(map_err)?
                    .execute(params![id, worker, result.to_string(), now]),
                JobOutcome::Retry { error, run_after } => c
                    .prepare_cached(
                        "UPDATE jobs SET status = CASE WHEN attempts < max_attempts THEN 'queued'
                                                       ELSE 'failed' END,
                                run_after = ?4, last_error = ?3, lease_owner = NULL,
                                lease_expires_at = NULL, updated_at = ?5
                         WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                    )
                    .map_err(map_err)?
                    .execute(params![id, worker, error, format_time(run_after), now]),
                JobOutcome::Failed(error) => c
                    .prepare_cached(
                        "UPDATE jobs SET status = 'failed', last_error = ?3, lease_owner = NULL,
                                lease_expires_at = NULL, updated_at = ?4
                         WHERE id = ?1 AND lease_owner = ?2 AND status = 'running'",
                    )
                    .map_err(map_err)?
                    .execute(params![id, worker, error, now]),
            };
            n.map(|n| n > 0).map_err(map_err)
        })
        .await
    }

    async fn cancel_job(&self, id: &str, now: DateTime<Utc>) -> StoreResult<Job> {
        let (id, now) = (id.to_owned(), format_time(&now));
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let n = tx
                .execute(
                    "UPDATE jobs SET status = 'cancelled', lease_owner = NULL, lease_expires_at = NULL,
                            updated_at = ?2
                     WHERE id = ?1 AND status IN ('queued', 'running')",
                    params![id, now],
                )
                .map_err(map_err)?;
            let job = tx
                .query_row(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                    [&id],
                    job_from_row,
                )
                .optional()
                .map_err(map_err)?
                .ok_or(StoreError::NotFound)?;
            tx.commit().map_err(map_err)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "job {id} already finished ({})",
                    job.status.as_str()
                )));
            }
            Ok(job)
        })
        .await
    }

    async fn release_jobs(&self, worker: &str, now: DateTime<Utc>) -> StoreResult<u64> {
        let (worker, now) = (worker.to_owned(), format_time(&now));
        self.write(move |c| {
            c.execute(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                        attempts = max(attempts - 1, 0), run_after = ?2, updated_at = ?2
                 WHERE lease_owner = ?1 AND status = 'running'",
                params![worker, now],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }
}

#[async_trait]
impl SearchLogStore for SqliteCatalog {
    async fn insert_search_logs(&self, logs: &[SearchLog]) -> StoreResult<()> {
        if logs.is_empty() {
            return Ok(());
        }
        let logs = logs.to_vec();
        self.write(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            insert_logs(&tx, logs.iter())?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    async fn query_stats(
        &self,
        tenant: &str,
        kind: QueryStatsKind,
        since: DateTime<Utc>,
        limit: u32,
    ) -> StoreResult<Vec<QueryStat>> {
        let (tenant, since) = (tenant.to_owned(), format_time(&since));
        let zero = kind == QueryStatsKind::ZeroResults;
        self.read(move |c| {
            let rows: Vec<(String, i64, f64)> = {
                let mut st = c
                    .prepare_cached(
                        "SELECT query_text, count(*), avg(results_count) FROM search_logs
                         WHERE tenant = ?1 AND created_at >= ?2 AND query_text IS NOT NULL
                           AND (?3 = 0 OR results_count = 0)
                         GROUP BY query_text ORDER BY count(*) DESC, query_text LIMIT ?4",
                    )
                    .map_err(map_err)?;
                st.query_map(params![tenant, since, zero, limit], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(map_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(map_err)?
            };
            let texts =
                serde_json::Value::from(rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()).to_string();
            let timings: Vec<(String, f64)> = {
                let mut st = c
                    .prepare_cached(
                        "SELECT query_text, execution_time_ms FROM search_logs
                         WHERE tenant = ?1 AND created_at >= ?2 AND (?3 = 0 OR results_count = 0)
                           AND query_text IN (SELECT value FROM json_each(?4))",
                    )
                    .map_err(map_err)?;
                st.query_map(params![tenant, since, zero, texts], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .map_err(map_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(map_err)?
            };
            Ok(with_p95(rows, timings))
        })
        .await
    }
}

#[async_trait]
impl PluginStore for SqliteCatalog {
    async fn create_plugin_version(&self, new: &NewPluginVersion) -> StoreResult<PluginRecord> {
        let new = new.clone();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let (world, last): (Option<String>, Option<i64>) = tx
                .query_row(
                    "SELECT min(world), max(version) FROM plugins WHERE tenant = ?1 AND name = ?2",
                    params![new.tenant, new.name],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(map_err)?;
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
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    new.tenant,
                    new.name,
                    version,
                    new.world,
                    new.digest,
                    new.size_bytes,
                    format_time(&created_at)
                ],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(PluginRecord {
                tenant: new.tenant,
                name: new.name,
                version,
                world: new.world,
                digest: new.digest,
                size_bytes: new.size_bytes,
                active: false,
                params: serde_json::Map::new(),
                memory_mb: None,
                created_at,
                activated_at: None,
            })
        })
        .await
    }

    async fn list_plugins(&self, tenant: &str) -> StoreResult<Vec<PluginRecord>> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let sql =
                format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = ?1 ORDER BY name, version");
            query_plugins(c, &sql, params![tenant])
        })
        .await
    }

    async fn get_plugin(&self, tenant: &str, name: &str) -> StoreResult<Vec<PluginRecord>> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.read(move |c| {
            let sql = format!(
                "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = ?1 AND name = ?2 ORDER BY version"
            );
            query_plugins(c, &sql, params![tenant, name])
        })
        .await
    }

    async fn active_plugins(&self, tenant: &str) -> StoreResult<Vec<PluginRecord>> {
        let tenant = tenant.to_owned();
        self.read(move |c| {
            let sql = format!(
                "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = ?1 AND active = 1 ORDER BY world"
            );
            query_plugins(c, &sql, params![tenant])
        })
        .await
    }

    async fn activate_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: i64,
        params_: &serde_json::Map<String, Value>,
        memory_mb: Option<i64>,
    ) -> StoreResult<PluginRecord> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        let params_text = Value::Object(params_.clone()).to_string();
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let world: Option<String> = tx
                .query_row(
                    "SELECT world FROM plugins WHERE tenant = ?1 AND name = ?2 AND version = ?3",
                    params![tenant, name, version],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            let world = world.ok_or(StoreError::NotFound)?;
            let t = format_time(&now());
            tx.execute(
                "UPDATE plugins SET active = 0 WHERE tenant = ?1 AND world = ?2 AND active = 1",
                params![tenant, world],
            )
            .map_err(map_err)?;
            tx.execute(
                "UPDATE plugins SET active = 1, params = ?4, memory_mb = ?5, activated_at = ?6
                 WHERE tenant = ?1 AND name = ?2 AND version = ?3",
                params![tenant, name, version, params_text, memory_mb, t],
            )
            .map_err(map_err)?;
            tx.execute(
                "UPDATE tenants SET generation = generation + 1 WHERE id = ?1",
                params![tenant],
            )
            .map_err(map_err)?;
            let sql = format!(
                "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = ?1 AND name = ?2 AND version = ?3"
            );
            let record = query_plugins(&tx, &sql, params![tenant, name, version])?
                .pop()
                .ok_or(StoreError::NotFound)?;
            tx.commit().map_err(map_err)?;
            Ok(record)
        })
        .await
    }

    async fn delete_plugin(&self, tenant: &str, name: &str) -> StoreResult<Vec<PluginRecord>> {
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let sql = format!(
                "SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant = ?1 AND name = ?2 ORDER BY version"
            );
            let removed = query_plugins(&tx, &sql, params![tenant, name])?;
            if !removed.is_empty() {
                tx.execute(
                    "DELETE FROM plugins WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                )
                .map_err(map_err)?;
                tx.execute(
                    "UPDATE tenants SET generation = generation + 1 WHERE id = ?1",
                    params![tenant],
                )
                .map_err(map_err)?;
            }
            tx.commit().map_err(map_err)?;
            Ok(removed)
        })
        .await
    }
}

fn insert_logs<'a>(c: &Connection, logs: impl Iterator<Item = &'a SearchLog>) -> StoreResult<()> {
    let mut st = c
        .prepare_cached(
            "INSERT INTO search_logs (tenant, query_type, query_text, query_image_url, results_count,
                                      execution_time_ms, user_id, session_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .map_err(map_err)?;
    for l in logs {
        st.execute(params![
            l.tenant,
            l.query_type,
            l.query_text,
            l.query_image_url,
            l.results_count,
            l.execution_time_ms,
            l.user_id,
            l.session_id,
            format_time(&l.created_at),
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

/// `tenants` as a JSON array for `json_each` (NULL: every tenant).
fn tenants_param(tenants: Option<&[String]>) -> Option<String> {
    tenants.map(|t| Value::from(t.to_vec()).to_string())
}

const KEY_COLUMNS: &str = "id, tenant, secret_hash, scopes, label, created_at";

fn key_from_row(r: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: r.get(0)?,
        tenant: r.get(1)?,
        secret_hash: r.get(2)?,
        scopes: string_list_from_json(&r.get::<_, String>(3)?).map_err(conversion)?,
        label: r.get(4)?,
        created_at: parse_time(&r.get::<_, String>(5)?)?,
    })
}

#[async_trait]
impl ReplicationStore for SqliteCatalog {
    async fn feed_head(&self) -> StoreResult<i64> {
        self.read(|c| {
            c.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM changes")
                .map_err(map_err)?
                .query_row([], |r| r.get(0))
                .map_err(map_err)
        })
        .await
    }

    async fn changes_after(
        &self,
        after: i64,
        limit: u32,
        tenants: Option<&[String]>,
    ) -> StoreResult<Vec<Change>> {
        let tenants = tenants_param(tenants);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT seq, kind, tenant, entity FROM changes
                     WHERE seq > ?1 AND (?3 IS NULL OR tenant IN (SELECT value FROM json_each(?3)))
                     ORDER BY seq LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![after, limit, tenants], |r| {
                    let kind: String = r.get(1)?;
                    Ok(Change {
                        seq: r.get(0)?,
                        kind: ChangeKind::parse(&kind)
                            .ok_or_else(|| conversion(format!("change kind {kind:?}")))?,
                        tenant: r.get(2)?,
                        entity: r.get(3)?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn all_api_keys(&self, tenants: Option<&[String]>) -> StoreResult<Vec<ApiKeyRecord>> {
        let tenants = tenants_param(tenants);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys
                     WHERE ?1 IS NULL OR tenant IN (SELECT value FROM json_each(?1)) ORDER BY id"
                ))
                .map_err(map_err)?;
            let rows = st.query_map([tenants], key_from_row).map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    async fn record_generation(&self, g: &IndexGeneration) -> StoreResult<()> {
        let g = g.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO index_generations (id, model, model_id, dims, created_at) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (id) DO UPDATE SET model = excluded.model, model_id = excluded.model_id,
                     dims = excluded.dims, created_at = excluded.created_at",
                params![g.id, g.model, g.model_id, g.dims, format_time(&now())],
            )
            .map(|_| ())
            .map_err(map_err)
        })
        .await
    }

    async fn current_generation(&self) -> StoreResult<Option<IndexGeneration>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id, model, model_id, dims FROM index_generations ORDER BY created_at DESC, id DESC LIMIT 1",
            )
            .map_err(map_err)?
            .query_row([], |r| {
                Ok(IndexGeneration {
                    id: r.get(0)?,
                    model: r.get(1)?,
                    model_id: r.get(2)?,
                    dims: r.get(3)?,
                })
            })
            .optional()
            .map_err(map_err)
        })
        .await
    }

    async fn accept_edge_logs(&self, edge: &str, logs: &[(i64, SearchLog)]) -> StoreResult<i64> {
        let (edge, logs) = (edge.to_owned(), logs.to_vec());
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            let last: i64 = tx
                .query_row(
                    "SELECT last_log_seq FROM replica_edges WHERE edge = ?1",
                    [&edge],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?
                .unwrap_or(0);
            insert_logs(&tx, logs.iter().filter(|(seq, _)| *seq > last).map(|(_, l)| l))?;
            let now_last = logs.iter().map(|(seq, _)| *seq).fold(last, i64::max);
            tx.execute(
                "INSERT INTO replica_edges (edge, last_log_seq, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (edge) DO UPDATE SET last_log_seq = excluded.last_log_seq,
                     updated_at = excluded.updated_at",
                params![edge, now_last, format_time(&now())],
            )
            .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok(now_last)
        })
        .await
    }

    async fn compact_changes(&self, after: i64, span: i64) -> StoreResult<(i64, u64)> {
        self.write(move |c| {
            let tx = c.transaction().map_err(map_err)?;
            let head: i64 = tx
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM changes", [], |r| r.get(0))
                .map_err(map_err)?;
            let through = head.min(after.saturating_add(span.max(1)));
            let deleted = tx
                .execute(
                    "DELETE FROM changes WHERE seq IN (
                         SELECT old.seq FROM changes AS new JOIN changes AS old
                             ON old.kind = new.kind AND old.tenant = new.tenant
                            AND old.entity = new.entity AND old.seq < new.seq
                         WHERE new.seq > ?1 AND new.seq <= ?2)",
                    params![after, through],
                )
                .map_err(map_err)?;
            tx.commit().map_err(map_err)?;
            Ok((through, deleted as u64))
        })
        .await
    }

    async fn products_after_row(
        &self,
        after: i64,
        limit: u32,
        tenants: Option<&[String]>,
    ) -> StoreResult<Vec<(i64, Product)>> {
        let tenants = tenants_param(tenants);
        self.read(move |c| {
            let mut st = c
                .prepare_cached(&format!(
                    "SELECT {PRODUCT_COLUMNS} FROM products
                     WHERE id > ?1 AND (?3 IS NULL OR tenant IN (SELECT value FROM json_each(?3)))
                     ORDER BY id LIMIT ?2"
                ))
                .map_err(map_err)?;
            let rows = st
                .query_map(params![after, limit, tenants], product_from_row)
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }
}

/// An edge's replica: the catalog it serves from, written only by the
/// replication follower (`crate::replica`).
impl SqliteCatalog {
    /// Where the replica stands; `None` before its first page.
    pub async fn replica_state(&self) -> StoreResult<Option<ReplicaState>> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT origin, seq, cursor, bootstrapped, updated_at, generation FROM replica_state WHERE id = 1",
            )
            .map_err(map_err)?
            .query_row([], |r| {
                Ok(ReplicaState {
                    origin: r.get(0)?,
                    seq: r.get(1)?,
                    cursor: r.get(2)?,
                    bootstrapped: r.get(3)?,
                    updated_at: parse_time(&r.get::<_, String>(4)?)?,
                    generation: r
                        .get::<_, Option<String>>(5)?
                        .map(|g| serde_json::from_str(&g).map_err(conversion))
                        .transpose()?,
                })
            })
                .optional()
                .map_err(map_err)
        })
        .await
    }

    /// Writes `batch` and then `state`, in one transaction: after a crash
    /// the replica holds either the page and its position or neither.
    /// Tenants go first (keys and products refer to them). The changes
    /// the replica's own triggers record are dropped: an edge serves no feed.
    pub async fn apply_replica(&self, batch: ReplicaBatch, state: ReplicaState) -> StoreResult<()> {
        self.write(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(map_err)?;
            for t in &batch.tenants {
                tx.prepare_cached(
                    "INSERT INTO tenants (id, name, created_at, limits) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (id) DO UPDATE SET name = excluded.name, limits = excluded.limits",
                )
                .map_err(map_err)?
                .execute(params![
                    t.tenant.id,
                    t.tenant.name,
                    format_time(&t.tenant.created_at),
                    t.limits.to_string()
                ])
                .map_err(map_err)?;
            }
            // A key, product or plugin may come before its tenant's own
            // change (another page of the feed, a tenant made while a
            // snapshot was read): a stand-in row, which the tenant's change
            // overwrites, keeps the references valid.
            let owners = batch
                .keys
                .iter()
                .map(|k| &k.tenant)
                .chain(batch.products.iter().map(|p| &p.tenant))
                .chain(batch.plugins.iter().map(|(t, _, _)| t));
            for t in owners {
                tx.prepare_cached(
                    "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?1, ?2) ON CONFLICT (id) DO NOTHING",
                )
                .map_err(map_err)?
                .execute(params![t, format_time(&now())])
                .map_err(map_err)?;
            }
            for k in &batch.keys {
                tx.prepare_cached(
                    "INSERT INTO api_keys (id, tenant, secret_hash, scopes, label, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                     ON CONFLICT (id) DO UPDATE SET tenant = excluded.tenant,
                         secret_hash = excluded.secret_hash, scopes = excluded.scopes,
                         label = excluded.label, created_at = excluded.created_at",
                )
                .map_err(map_err)?
                .execute(params![
                    k.id,
                    k.tenant,
                    k.secret_hash,
                    Value::from(k.scopes.clone()).to_string(),
                    k.label,
                    format_time(&k.created_at)
                ])
                .map_err(map_err)?;
            }
            for id in &batch.keys_gone {
                tx.prepare_cached("DELETE FROM api_keys WHERE id = ?1")
                    .map_err(map_err)?
                    .execute([id])
                    .map_err(map_err)?;
            }
            for p in &batch.products {
                let conv = Converted::new(&p.fields);
                let f = &p.fields;
                tx.prepare_cached(
                    "INSERT INTO products (tenant, external_id, title, description, category, price,
                         currency, image_url, tags, in_stock, metadata, index_status, index_error,
                         version, created_at, updated_at, image_key)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)
                     ON CONFLICT (tenant, external_id) DO UPDATE SET
                         title = excluded.title, description = excluded.description,
                         category = excluded.category, price = excluded.price,
                         currency = excluded.currency, image_url = excluded.image_url,
                         tags = excluded.tags, in_stock = excluded.in_stock,
                         metadata = excluded.metadata, index_status = excluded.index_status,
                         index_error = excluded.index_error, version = excluded.version,
                         created_at = excluded.created_at, updated_at = excluded.updated_at,
                         image_key = excluded.image_key",
                )
                .map_err(map_err)?
                .execute(params![
                    p.tenant,
                    p.external_id,
                    f.title,
                    f.description,
                    f.category,
                    conv.price,
                    f.currency,
                    f.image_url,
                    conv.tags,
                    f.in_stock,
                    conv.metadata,
                    p.index_status.as_str(),
                    p.index_error,
                    p.version,
                    format_time(&p.created_at),
                    format_time(&p.updated_at),
                    p.image_key
                ])
                .map_err(map_err)?;
            }
            for (tenant, id) in &batch.products_gone {
                tx.prepare_cached("DELETE FROM products WHERE tenant = ?1 AND external_id = ?2")
                    .map_err(map_err)?
                    .execute([tenant, id])
                    .map_err(map_err)?;
            }
            for (tenant, name, versions) in &batch.plugins {
                tx.execute(
                    "DELETE FROM plugins WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                )
                .map_err(map_err)?;
                for v in versions {
                    if v.active {
                        // Another plugin of this world may still be active
                        // here until its own change arrives.
                        tx.execute(
                            "UPDATE plugins SET active = 0 WHERE tenant = ?1 AND world = ?2 AND active = 1",
                            params![tenant, v.world],
                        )
                        .map_err(map_err)?;
                    }
                    tx.execute(
                        &format!("INSERT INTO plugins ({PLUGIN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                        params![
                            tenant,
                            name,
                            v.version,
                            v.world,
                            v.digest,
                            v.size_bytes,
                            v.active,
                            Value::Object(v.params.clone()).to_string(),
                            v.memory_mb,
                            format_time(&v.created_at),
                            v.activated_at.as_ref().map(format_time)
                        ],
                    )
                    .map_err(map_err)?;
                }
                // Cached plugin lists and result pages are keyed by it.
                tx.execute(
                    "UPDATE tenants SET generation = generation + 1 WHERE id = ?1",
                    [tenant],
                )
                .map_err(map_err)?;
            }
            if batch.bump_generations {
                tx.execute("UPDATE tenants SET generation = generation + 1", [])
                    .map_err(map_err)?;
            }
            tx.execute("DELETE FROM changes", []).map_err(map_err)?;
            tx.prepare_cached(
                "INSERT INTO replica_state (id, origin, seq, cursor, bootstrapped, updated_at, generation)
                 VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET origin = excluded.origin, seq = excluded.seq,
                     cursor = excluded.cursor, bootstrapped = excluded.bootstrapped,
                     updated_at = excluded.updated_at, generation = excluded.generation",
            )
            .map_err(map_err)?
            .execute(params![
                state.origin,
                state.seq,
                state.cursor,
                state.bootstrapped,
                format_time(&state.updated_at),
                state
                    .generation
                    .as_ref()
                    .map(|g| serde_json::to_string(g).unwrap_or_default())
            ])
            .map_err(map_err)?;
            tx.commit().map_err(map_err)
        })
        .await
    }

    /// The edge's search-log outbox: logs recorded here after `after`, with
    /// their row numbers, oldest first.
    pub async fn search_logs_after(&self, after: i64, limit: u32) -> StoreResult<Vec<(i64, SearchLog)>> {
        self.read(move |c| {
            let mut st = c
                .prepare_cached(
                    "SELECT id, tenant, query_type, query_text, query_image_url, results_count,
                            execution_time_ms, user_id, session_id, created_at
                     FROM search_logs WHERE id > ?1 ORDER BY id LIMIT ?2",
                )
                .map_err(map_err)?;
            let rows = st
                .query_map(params![after, limit], |r| {
                    Ok((
                        r.get(0)?,
                        SearchLog {
                            tenant: r.get(1)?,
                            query_type: r.get(2)?,
                            query_text: r.get(3)?,
                            query_image_url: r.get(4)?,
                            results_count: r.get(5)?,
                            execution_time_ms: r.get(6)?,
                            user_id: r.get(7)?,
                            session_id: r.get(8)?,
                            created_at: parse_time(&r.get::<_, String>(9)?)?,
                        },
                    ))
                })
                .map_err(map_err)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(map_err)
        })
        .await
    }

    /// This edge's id for its origin, made once and kept in the catalog
    /// beside the outbox it numbers (a new catalog restarts the numbers, so
    /// it gets a new id).
    pub async fn edge_id(&self) -> StoreResult<String> {
        self.write(|c| {
            c.execute(
                "INSERT INTO replica_identity (id, edge) VALUES (1, ?1) ON CONFLICT (id) DO NOTHING",
                [uuid::Uuid::new_v4().to_string()],
            )
            .map_err(map_err)?;
            c.query_row("SELECT edge FROM replica_identity WHERE id = 1", [], |r| r.get(0))
                .map_err(map_err)
        })
        .await
    }

    /// Drops the outbox's logs up to `seq` (the origin has them).
    pub async fn delete_search_logs_through(&self, seq: i64) -> StoreResult<()> {
        self.write(move |c| {
            c.execute("DELETE FROM search_logs WHERE id <= ?1", [seq])
                .map(|_| ())
                .map_err(map_err)
        })
        .await
    }

    /// Empties the replica (a new bootstrap: another origin, or a feed the
    /// origin no longer holds): products, keys and plugins go; tenants stay
    /// (nothing removes a tenant) and are rewritten by the bootstrap.
    pub async fn clear_replica(&self) -> StoreResult<()> {
        self.write(|c| {
            c.execute_batch(
                "BEGIN IMMEDIATE;
                 DELETE FROM products; DELETE FROM api_keys; DELETE FROM plugins;
                 DELETE FROM replica_state; DELETE FROM changes;
                 COMMIT;",
            )
            .map_err(map_err)
        })
        .await
    }
}

const JOB_COLUMNS: &str = "id, kind, tenant, payload, status, attempts, max_attempts, run_after, \
     lease_owner, lease_expires_at, progress_done, progress_total, last_error, result, created_at, updated_at";

fn job_from_row(r: &Row<'_>) -> rusqlite::Result<Job> {
    let json = |s: String| serde_json::from_str(&s).map_err(conversion);
    let opt_time = |s: Option<String>| s.as_deref().map(parse_time).transpose();
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        tenant: r.get(2)?,
        payload: json(r.get(3)?)?,
        status: JobStatus::parse(&r.get::<_, String>(4)?).map_err(conversion)?,
        attempts: r.get(5)?,
        max_attempts: r.get(6)?,
        run_after: parse_time(&r.get::<_, String>(7)?)?,
        lease_owner: r.get(8)?,
        lease_expires_at: opt_time(r.get(9)?)?,
        progress_done: r.get(10)?,
        progress_total: r.get(11)?,
        last_error: r.get(12)?,
        result: r.get::<_, Option<String>>(13)?.map(json).transpose()?,
        created_at: parse_time(&r.get::<_, String>(14)?)?,
        updated_at: parse_time(&r.get::<_, String>(15)?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open() -> (tempfile::TempDir, SqliteCatalog) {
        let dir = tempfile::tempdir().unwrap();
        let cat = SqliteCatalog::open(&dir.path().join("c.sqlite3"), 2)
            .await
            .unwrap();
        (dir, cat)
    }

    /// One test per part of the contract, each on a fresh catalog.
    macro_rules! contract_parts {
        ($($part:ident),*) => {$(
            #[tokio::test]
            async fn $part() {
                let (_dir, cat) = open().await;
                crate::store::contract::$part(&cat).await;
            }
        )*};
    }

    mod contract {
        use super::open;
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
    async fn migrations_are_idempotent_and_recorded() {
        let (dir, cat) = open().await;
        let path = cat.path().to_path_buf();
        drop(cat);
        let report = SqliteCatalog::migrate(&path).await.unwrap();
        assert!(report.applied.is_empty());
        assert_eq!(
            report.already_applied,
            super::super::migrations::SQLITE
                .iter()
                .map(|m| m.version)
                .collect::<Vec<_>>()
        );
        // Reopening applies nothing and keeps the default tenant exactly once.
        let cat = SqliteCatalog::open(&path, 1).await.unwrap();
        let tenants = cat.list_tenants().await.unwrap();
        assert_eq!(tenants.iter().filter(|t| t.id == "default").count(), 1);
        drop(dir);
    }
}
