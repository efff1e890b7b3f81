//! The replication protocol's entities both ways: the origin turns stored
//! records into wire types, an edge turns them back (checking everything:
//! a replica never stores what its own API would refuse).

use std::str::FromStr;

use base64::Engine;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::api::types::{
    ReplicaKey, ReplicaPlugin, ReplicaPluginVersion, ReplicaProduct, ReplicaTenant, ReplicaVectors,
};
use crate::model::{self, Product, ProductFields, format_time};
use crate::plugins::World;
use crate::store::replica::TenantRecord;
use crate::store::{ApiKeyRecord, PluginRecord, Tenant};

/// A malformed entity from the origin.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("malformed {what} from the origin: {message}")]
pub struct WireError {
    pub what: &'static str,
    pub message: String,
}

fn bad(what: &'static str, message: impl std::fmt::Display) -> WireError {
    WireError {
        what,
        message: message.to_string(),
    }
}

fn parse_time(what: &'static str, s: &str) -> Result<DateTime<Utc>, WireError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| bad(what, format!("time {s:?}: {e}")))
}

/// Little-endian f32, base64.
pub fn encode_vector(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The inverse of [`encode_vector`]; refuses a length that is not whole
/// floats and non-finite components.
pub fn decode_vector(s: &str) -> Result<Vec<f32>, WireError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| bad("vector", e))?;
    if bytes.len() % 4 != 0 || bytes.is_empty() {
        return Err(bad(
            "vector",
            format!("{} bytes is not a whole number of f32", bytes.len()),
        ));
    }
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if v.iter().any(|x| !x.is_finite()) {
        return Err(bad("vector", "a component is not finite"));
    }
    Ok(v)
}

pub fn tenant_to_wire(t: &TenantRecord) -> ReplicaTenant {
    ReplicaTenant {
        id: t.tenant.id.clone(),
        name: t.tenant.name.clone(),
        created_at: format_time(&t.tenant.created_at),
        limits: t.limits.clone(),
    }
}

pub fn tenant_from_wire(t: &ReplicaTenant) -> Result<TenantRecord, WireError> {
    model::validate_tenant_id(&t.id).map_err(|e| bad("tenant", e.message))?;
    if !t.limits.is_object() {
        return Err(bad("tenant", "limits is not an object"));
    }
    Ok(TenantRecord {
        tenant: Tenant {
            id: t.id.clone(),
            name: t.name.clone(),
            created_at: parse_time("tenant", &t.created_at)?,
        },
        limits: t.limits.clone(),
    })
}

pub fn key_to_wire(k: &ApiKeyRecord) -> ReplicaKey {
    ReplicaKey {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        secret_hash: k.secret_hash.clone(),
        scopes: k.scopes.clone(),
        label: k.label.clone(),
        created_at: format_time(&k.created_at),
    }
}

pub fn key_from_wire(k: &ReplicaKey) -> Result<ApiKeyRecord, WireError> {
    model::validate_tenant_id(&k.tenant).map_err(|e| bad("key", e.message))?;
    if k.secret_hash.len() != 64 || !k.secret_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("key", "secret_hash is not a hex SHA-256"));
    }
    Ok(ApiKeyRecord {
        id: k.id.clone(),
        tenant: k.tenant.clone(),
        secret_hash: k.secret_hash.clone(),
        scopes: k.scopes.clone(),
        label: k.label.clone(),
        created_at: parse_time("key", &k.created_at)?,
    })
}

/// Every version of one plugin (`versions` as `get_plugin` returns them).
pub fn plugin_to_wire(tenant: &str, name: &str, versions: &[PluginRecord]) -> ReplicaPlugin {
    ReplicaPlugin {
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        versions: versions
            .iter()
            .filter_map(|v| {
                Some(ReplicaPluginVersion {
                    version: v.version,
                    world: World::parse(&v.world)?,
                    digest: v.digest.clone(),
                    size_bytes: v.size_bytes,
                    active: v.active,
                    params: v.params.clone(),
                    memory_mb: v.memory_mb,
                    created_at: format_time(&v.created_at),
                    activated_at: v.activated_at.as_ref().map(format_time),
                })
            })
            .collect(),
    }
}

/// Whether `digest` is a hex SHA-256 (it names a blob path).
pub fn valid_digest(digest: &str) -> bool {
    digest.len() == 64 && digest.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

pub fn plugin_from_wire(p: &ReplicaPlugin) -> Result<(String, String, Vec<PluginRecord>), WireError> {
    model::validate_tenant_id(&p.tenant).map_err(|e| bad("plugin", e.message))?;
    if model::validate_tenant_id(&p.name).is_err() || p.name == "none" {
        return Err(bad("plugin", format!("name {:?}", p.name)));
    }
    let mut versions = Vec::with_capacity(p.versions.len());
    for v in &p.versions {
        if !valid_digest(&v.digest) {
            return Err(bad("plugin", "digest is not a hex SHA-256"));
        }
        versions.push(PluginRecord {
            tenant: p.tenant.clone(),
            name: p.name.clone(),
            version: v.version,
            world: v.world.as_str().to_owned(),
            digest: v.digest.clone(),
            size_bytes: v.size_bytes,
            active: v.active,
            params: v.params.clone(),
            memory_mb: v.memory_mb,
            created_at: parse_time("plugin", &v.created_at)?,
            activated_at: v
                .activated_at
                .as_deref()
                .map(|t| parse_time("plugin", t))
                .transpose()?,
        });
    }
    Ok((p.tenant.clone(), p.name.clone(), versions))
}

pub fn product_to_wire(p: &Product, vectors: Option<(Vec<f32>, Option<Vec<f32>>)>) -> ReplicaProduct {
    ReplicaProduct {
        tenant: p.tenant.clone(),
        view: p.view(),
        version: p.version,
        image_key: p.image_key.clone(),
        vectors: vectors.map(|(image, text)| ReplicaVectors {
            image: encode_vector(&image),
            text: text.as_deref().map(encode_vector),
        }),
    }
}

/// A product and its vectors (image, text) from the wire.
pub type ReplicaPoint = (Vec<f32>, Option<Vec<f32>>);

pub fn product_from_wire(p: &ReplicaProduct) -> Result<(Product, Option<ReplicaPoint>), WireError> {
    let v = &p.view;
    model::validate_tenant_id(&p.tenant).map_err(|e| bad("product", e.message))?;
    model::validate_external_id(&v.external_id).map_err(|e| bad("product", e.message))?;
    let price = v
        .price
        .as_deref()
        .map(|s| Decimal::from_str(s).map_err(|e| bad("product", format!("price {s:?}: {e}"))))
        .transpose()?;
    let product = Product {
        tenant: p.tenant.clone(),
        external_id: v.external_id.clone(),
        fields: ProductFields {
            title: v.title.clone(),
            description: v.description.clone(),
            category: v.category.clone(),
            price,
            currency: v.currency.clone(),
            image_url: v.image_url.clone(),
            tags: v.tags.clone(),
            in_stock: v.in_stock,
            metadata: v.metadata.clone(),
        },
        index_status: v.index_status,
        index_error: v.index_error.clone(),
        version: p.version,
        created_at: parse_time("product", &v.created_at)?,
        updated_at: parse_time("product", &v.updated_at)?,
        image_key: p.image_key.clone(),
    };
    let point = p
        .vectors
        .as_ref()
        .map(|x| {
            let image = decode_vector(&x.image)?;
            let text = x.text.as_deref().map(decode_vector).transpose()?;
            if text.as_ref().is_some_and(|t| t.len() != image.len()) {
                return Err(bad("product", "the text and image vectors differ in length"));
            }
            Ok((image, text))
        })
        .transpose()?;
    Ok((product, point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_round_trip_exactly_and_garbage_is_refused() {
        let v = vec![0.0, -1.5, f32::MIN_POSITIVE, 3.25e-7, f32::MAX];
        assert_eq!(decode_vector(&encode_vector(&v)).unwrap(), v);
        assert!(decode_vector("").is_err());
        assert!(decode_vector("AAA=").is_err(), "two bytes");
        assert!(decode_vector("not base64!").is_err());
        assert!(decode_vector(&encode_vector(&[f32::NAN])).is_err());
        assert!(decode_vector(&encode_vector(&[f32::INFINITY])).is_err());
    }
}
