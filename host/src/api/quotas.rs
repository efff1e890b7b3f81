//! What the admin sets on a tenant (its own rate limits and its quotas),
//! read through a short-lived cache, and the quota checks of writes.
//!
//! A write that adds products or plugin versions takes the tenant's quota
//! lock on this node, counts, and writes under it, so concurrent requests
//! to one node cannot overshoot a quota together. Nodes sharing one
//! PostgreSQL catalog each hold their own lock: together they may overshoot
//! by at most what they write at the same moment (README, "Quotas").

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::OwnedMutexGuard;

use super::error::{ApiError, ApiResult, ErrorCode};
use super::types::{TenantLimits, TenantUsage};
use crate::store::Catalog;

/// How long a tenant's limits are used without reading them again (a change
/// made on this node applies at once).
const CACHE_TTL: Duration = Duration::from_secs(10);

/// Tenants' limits, cached, and their quota locks.
pub struct TenantPolicies {
    cache: moka::future::Cache<String, Arc<TenantLimits>>,
    locks: parking_lot::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for TenantPolicies {
    fn default() -> Self {
        Self {
            cache: moka::future::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(CACHE_TTL)
                .build(),
            locks: parking_lot::Mutex::new(HashMap::new()),
        }
    }
}

/// Held while a quota-checked write runs.
pub struct QuotaGuard(#[allow(dead_code)] Option<OwnedMutexGuard<()>>);

impl TenantPolicies {
    /// The tenant's limits (the defaults for an unknown tenant).
    pub async fn get(&self, catalog: &dyn Catalog, tenant: &str) -> ApiResult<Arc<TenantLimits>> {
        if let Some(hit) = self.cache.get(tenant).await {
            return Ok(hit);
        }
        let limits = match catalog.tenant_limits(tenant).await? {
            // Written only by `set`, from a checked `TenantLimits`.
            Some(v) => serde_json::from_value(v).unwrap_or_else(|e| {
                tracing::error!(tenant, error = %e, "stored tenant limits do not parse; using the defaults");
                TenantLimits::default()
            }),
            None => TenantLimits::default(),
        };
        let limits = Arc::new(limits);
        self.cache.insert(tenant.to_owned(), limits.clone()).await;
        Ok(limits)
    }

    /// Reads the tenant's limits from the catalog again on next use (an
    /// edge replica applied a change to them).
    pub async fn forget(&self, tenant: &str) {
        self.cache.invalidate(tenant).await;
    }

    /// Stores new limits; `false` for an unknown tenant.
    pub async fn set(&self, catalog: &dyn Catalog, tenant: &str, limits: &TenantLimits) -> ApiResult<bool> {
        let value = serde_json::to_value(limits).map_err(|_| ApiError::internal())?;
        let found = catalog.set_tenant_limits(tenant, &value).await?;
        self.cache.invalidate(tenant).await;
        Ok(found)
    }

    async fn lock(&self, tenant: &str) -> OwnedMutexGuard<()> {
        let lock = self.locks.lock().entry(tenant.to_owned()).or_default().clone();
        lock.lock_owned().await
    }

    /// Admits a write adding `new` products, or answers `quota_exceeded`.
    /// `new` is computed under the returned guard's lock by `count_new`.
    pub async fn admit_products<F, Fut>(
        &self,
        catalog: &dyn Catalog,
        tenant: &str,
        count_new: F,
    ) -> ApiResult<QuotaGuard>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = ApiResult<u64>>,
    {
        let Some(max) = self.get(catalog, tenant).await?.quotas.max_products else {
            return Ok(QuotaGuard(None));
        };
        let guard = self.lock(tenant).await;
        let used = catalog.count_products(tenant).await?.max(0) as u64;
        let new = count_new().await?;
        if new > 0 && used + new > max {
            return Err(exceeded("max_products", max, used, new));
        }
        Ok(QuotaGuard(Some(guard)))
    }

    /// Admits a new plugin version of `bytes`, or answers `quota_exceeded`.
    pub async fn admit_plugin(
        &self,
        catalog: &dyn Catalog,
        tenant: &str,
        bytes: u64,
    ) -> ApiResult<QuotaGuard> {
        let quotas = self.get(catalog, tenant).await?.quotas.clone();
        if quotas.max_plugin_versions.is_none() && quotas.max_plugin_bytes.is_none() {
            return Ok(QuotaGuard(None));
        }
        let guard = self.lock(tenant).await;
        let usage = usage(catalog, tenant).await?;
        if let Some(max) = quotas.max_plugin_versions
            && usage.plugin_versions + 1 > max
        {
            return Err(exceeded("max_plugin_versions", max, usage.plugin_versions, 1));
        }
        if let Some(max) = quotas.max_plugin_bytes
            && usage.plugin_bytes + bytes > max
        {
            return Err(exceeded("max_plugin_bytes", max, usage.plugin_bytes, bytes));
        }
        Ok(QuotaGuard(Some(guard)))
    }
}

fn exceeded(quota: &str, limit: u64, used: u64, requested: u64) -> ApiError {
    ApiError::new(
        ErrorCode::QuotaExceeded,
        format!("this would take the tenant over its `{quota}` quota ({used} used + {requested} > {limit})"),
    )
    .with_details(json!({"quota": quota, "limit": limit, "used": used, "requested": requested}))
}

/// What the tenant holds.
pub async fn usage(catalog: &dyn Catalog, tenant: &str) -> ApiResult<TenantUsage> {
    let products = catalog.count_products(tenant).await?.max(0) as u64;
    let plugins = catalog.list_plugins(tenant).await?;
    Ok(TenantUsage {
        products,
        plugin_versions: plugins.len() as u64,
        plugin_bytes: plugins.iter().map(|p| p.size_bytes.max(0) as u64).sum(),
    })
}
