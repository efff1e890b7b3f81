//! Which plugin versions a tenant runs: the active ones (cached per tenant
//! generation, which every activation and deletion bumps, so a change is
//! seen by every host at once), or one a search names. Also the ingest step
//! of product writes.

use std::sync::Arc;

use moka::future::Cache;
use serde_json::{Map, Value};

use super::{CallError, PluginHost, PluginProduct, PluginRef, World};
use crate::model::{ProductFields, parse_product};
use crate::store::{Catalog, PluginRecord, StoreError, StoreResult};

/// Which plugin of a world a search wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PluginChoice {
    /// The tenant's active version, if any.
    #[default]
    Active,
    /// No plugin (`"none"`).
    Off,
    /// A plugin by name: its active version, or its newest one if it is not
    /// active (to try a version before activating it).
    Named(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("this tenant has no plugin `{0}`")]
    NotFound(String),
    #[error("plugin `{name}` is a {actual} plugin, not a {wanted}")]
    WrongWorld {
        name: String,
        actual: String,
        wanted: &'static str,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The ref a search or write runs, from a catalog record.
pub fn plugin_ref(r: &PluginRecord) -> Option<PluginRef> {
    Some(PluginRef {
        tenant: r.tenant.clone(),
        name: r.name.clone(),
        version: r.version,
        world: World::parse(&r.world)?,
        digest: r.digest.clone(),
        params: r
            .params
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), v)
            })
            .collect(),
        memory_mb: r.memory_mb.and_then(|m| u64::try_from(m).ok()),
    })
}

/// An ingest plugin that failed or could not run: the write went on with
/// the product as sent, and its response says so (`warnings`).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginWarning {
    pub plugin: String,
    pub version: i64,
    /// The outcome kind (`timeout`, `trap`, ...; see [`CallError::kind`]).
    pub outcome: &'static str,
    /// A fixed sentence per kind: never what the guest wrote.
    pub message: &'static str,
}

impl PluginWarning {
    fn new(plugin: &PluginRef, error: &CallError) -> Self {
        Self {
            plugin: plugin.name.clone(),
            version: plugin.version,
            outcome: error.kind(),
            message: error.public_message(),
        }
    }

    /// The response's warning; `index` is the item of a batch.
    pub fn view(&self, index: Option<usize>) -> crate::api::types::IngestWarning {
        crate::api::types::IngestWarning {
            plugin: self.plugin.clone(),
            version: self.version,
            world: World::Ingest.as_str().to_owned(),
            outcome: self.outcome.to_owned(),
            message: self.message.to_owned(),
            index,
        }
    }
}

/// What the ingest step made of a product.
#[derive(Debug)]
pub enum IngestOutcome {
    /// Store these fields: transformed, or as sent when there is no ingest
    /// plugin or it failed (then with the warning the response carries).
    Store(ProductFields, Option<Box<PluginWarning>>),
    /// The tenant's plugin rejected the product.
    Rejected {
        plugin: String,
        version: i64,
        message: String,
    },
}

pub struct PluginRegistry {
    host: PluginHost,
    catalog: Arc<dyn Catalog>,
    /// (tenant, generation) → its active versions.
    active: Cache<(String, i64), Arc<Vec<PluginRef>>>,
}

impl PluginRegistry {
    pub fn new(host: PluginHost, catalog: Arc<dyn Catalog>) -> Self {
        Self {
            host,
            catalog,
            active: Cache::builder().max_capacity(10_000).build(),
        }
    }

    pub fn host(&self) -> &PluginHost {
        &self.host
    }

    /// The tenant's active versions at `generation`.
    pub async fn active(&self, tenant: &str, generation: i64) -> StoreResult<Arc<Vec<PluginRef>>> {
        let catalog = self.catalog.clone();
        let t = tenant.to_owned();
        self.active
            .try_get_with((tenant.to_owned(), generation), async move {
                let records = catalog.active_plugins(&t).await?;
                Ok::<_, StoreError>(Arc::new(records.iter().filter_map(plugin_ref).collect()))
            })
            .await
            .map_err(|e: Arc<StoreError>| (*e).clone())
    }

    /// Makes every tenant's active versions ready to call (from their
    /// compiled files, or compiled): run in the background at start-up, so
    /// searches find them compiled. Failures are logged; those versions
    /// fall back until a search schedules their compilation again.
    pub async fn warm_active(&self) {
        let tenants = match self.catalog.list_tenants().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "plugins: cannot list tenants to warm their plugins");
                return;
            }
        };
        let mut warmed = 0usize;
        for tenant in tenants {
            let records = match self.catalog.active_plugins(&tenant.id).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(tenant = %tenant.id, error = %e, "plugins: cannot read active plugins to warm them");
                    continue;
                }
            };
            for plugin in records.iter().filter_map(plugin_ref) {
                match self.host.warm(&plugin).await {
                    Ok(()) => warmed += 1,
                    Err(e) => tracing::warn!(
                        tenant = %plugin.tenant, plugin = %plugin.name, version = plugin.version,
                        error = %e, "plugins: cannot warm an active plugin"
                    ),
                }
            }
        }
        tracing::info!(plugins = warmed, "plugins: active versions ready");
    }

    /// The version of `world` a request runs, if any.
    pub async fn resolve(
        &self,
        tenant: &str,
        generation: i64,
        world: World,
        choice: &PluginChoice,
    ) -> Result<Option<PluginRef>, ResolveError> {
        match choice {
            PluginChoice::Off => Ok(None),
            PluginChoice::Active => Ok(self
                .active(tenant, generation)
                .await?
                .iter()
                .find(|p| p.world == world)
                .cloned()),
            PluginChoice::Named(name) => {
                let versions = self.catalog.get_plugin(tenant, name).await?;
                let chosen = versions
                    .iter()
                    .find(|v| v.active)
                    .or_else(|| versions.last())
                    .ok_or_else(|| ResolveError::NotFound(name.clone()))?;
                if chosen.world != world.as_str() {
                    return Err(ResolveError::WrongWorld {
                        name: name.clone(),
                        actual: chosen.world.clone(),
                        wanted: world.as_str(),
                    });
                }
                Ok(plugin_ref(chosen))
            }
        }
    }

    /// Runs the tenant's active ingest plugin (if any) on a product about
    /// to be written. A plugin failure stores the product as sent (counted
    /// and logged like every fallback); only the plugin's own decision
    /// rejects it.
    pub async fn ingest(
        &self,
        tenant: &str,
        external_id: &str,
        fields: ProductFields,
    ) -> StoreResult<IngestOutcome> {
        match self.active_ingest(tenant).await? {
            Some(plugin) => Ok(self.ingest_with(&plugin, external_id, fields).await),
            None => Ok(IngestOutcome::Store(fields, None)),
        }
    }

    /// The tenant's active ingest plugin, if any, as of now.
    pub async fn active_ingest(&self, tenant: &str) -> StoreResult<Option<PluginRef>> {
        let generation = self.catalog.tenant_generation(tenant).await?;
        Ok(self
            .active(tenant, generation)
            .await?
            .iter()
            .find(|p| p.world == World::Ingest)
            .cloned())
    }

    /// Runs one ingest plugin on a product.
    pub async fn ingest_with(
        &self,
        plugin: &PluginRef,
        external_id: &str,
        fields: ProductFields,
    ) -> IngestOutcome {
        let input = to_plugin_product(external_id, &fields);
        let original = fields.clone();
        let id = external_id.to_owned();
        match self
            .host
            .ingest(plugin, input, move |out| from_plugin_product(&id, &original, out))
            .await
        {
            Ok(Ok(fields)) => IngestOutcome::Store(fields, None),
            Ok(Err(message)) => IngestOutcome::Rejected {
                plugin: plugin.name.clone(),
                version: plugin.version,
                message,
            },
            Err(e) => IngestOutcome::Store(fields, Some(Box::new(PluginWarning::new(plugin, &e)))),
        }
    }
}

fn to_plugin_product(external_id: &str, f: &ProductFields) -> PluginProduct {
    PluginProduct {
        external_id: external_id.to_owned(),
        title: f.title.clone(),
        description: f.description.clone(),
        category: f.category.clone(),
        price: f.price.map(|p| p.to_string()),
        currency: f.currency.clone(),
        image_url: f.image_url.clone(),
        tags: f.tags.clone(),
        in_stock: f.in_stock,
        metadata: Value::Object(f.metadata.clone()).to_string(),
    }
}

/// Takes the fields an ingest plugin may change from its output, keeps the
/// rest from the original, and validates the result like any API write.
fn from_plugin_product(
    external_id: &str,
    original: &ProductFields,
    out: PluginProduct,
) -> Result<ProductFields, String> {
    let metadata: Map<String, Value> = match serde_json::from_str(&out.metadata) {
        Ok(Value::Object(m)) => m,
        _ => return Err("`metadata` is not a JSON object".into()),
    };
    // Checked as a client's document would be.
    let doc = ProductFields {
        title: out.title,
        description: out.description,
        category: out.category,
        tags: out.tags,
        metadata,
        ..original.clone()
    }
    .document(external_id);
    parse_product(&doc).map(|p| p.fields).map_err(|errors| {
        errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}
