//! Signed search tokens: a shop derives them from one of its keys, without
//! calling the server, and hands them to browsers.
//!
//! A token is a JWT (RFC 7519) signed with HS256. The signing key is the
//! SHA-256 of the parent key's secret (the part after `vtr_<id>_`), which is
//! exactly what the catalog stores, so the server verifies a token with the
//! key record it already caches: no catalog read per request, and revoking
//! the key revokes its tokens. Claims:
//!
//! | claim | |
//! | --- | --- |
//! | `exp` | required: expiry, seconds since the epoch, at most 7 days ahead |
//! | `tenant` | the key's tenant |
//! | `key_id` | the parent key's id (the header's `kid`, if given, must match) |
//! | `scopes` | `["search"]`: a token can only search, and only if its key can |
//! | `filters` | optional forced filters, the search request's `filters` object, applied on top of every request's own |
//! | `plugins` | optional list of plugin names (and `"none"`) a request may choose; without it a request runs the tenant's active plugins and may choose no other |
//! | `nbf`, `iat`, `iss`, `sub`, `aud`, `jti` | accepted; `nbf` is checked |
//!
//! Any other claim is refused, so a misspelt `filters` never silently
//! widens a token.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use super::auth::{Authenticator, Scope, scopes_of};
use super::error::{ApiError, ErrorCode};
use super::types::SearchFilters;
use crate::plugins::PluginChoice;
use crate::store::Catalog;
use crate::store::vectors::VectorFilter;

/// Longest token accepted.
const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// The longest a token may live from now: a stolen token is revoked only
/// with its key.
const MAX_LIFETIME_SECS: u64 = 7 * 86_400;
/// Most plugin names a token may list.
const MAX_PLUGINS: usize = 32;

/// What a verified token allows.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchGrant {
    pub tenant: String,
    pub key_id: String,
    /// Applied on top of each request's filters.
    pub filter: Option<VectorFilter>,
    /// Plugin names (and `none`) a request may choose; without any, a
    /// request runs the tenant's active plugins and may choose nothing.
    pub plugins: Vec<String>,
    /// Seconds since the epoch.
    pub expires: u64,
}

impl SearchGrant {
    /// Whether the token's forced filters let `product` through.
    pub fn shows(&self, product: &crate::model::Product) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| f.admits(&crate::indexing::payload(product)))
    }

    /// Refuses a plugin choice the token does not list.
    pub fn allow_plugin(&self, choice: &PluginChoice, field: &str) -> Result<(), ApiError> {
        let allowed = &self.plugins;
        let name = match choice {
            PluginChoice::Active => return Ok(()),
            PluginChoice::Off => "none",
            PluginChoice::Named(n) => n.as_str(),
        };
        if allowed.iter().any(|a| a == name) {
            Ok(())
        } else {
            Err(ApiError::forbidden(
                ErrorCode::PluginNotAllowed,
                format!("this search token does not allow `{field}` = \"{name}\""),
            )
            .with_details(serde_json::json!({"field": field})))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Claims {
    #[allow(dead_code)] // checked by `jsonwebtoken`
    exp: u64,
    tenant: String,
    key_id: String,
    scopes: Vec<String>,
    #[serde(default)]
    filters: Option<SearchFilters>,
    #[serde(default)]
    plugins: Option<Vec<String>>,
    // Registered claims a JWT library may add.
    #[serde(default)]
    #[allow(dead_code)]
    nbf: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    iat: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    iss: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    sub: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    aud: Option<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    jti: Option<Value>,
}

/// The `key_id` a token claims (not verified): 16 lowercase hex digits.
/// `None` for a token too long to be one.
pub fn claimed_key_id(token: &str) -> Option<String> {
    use base64::Engine;
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let claims: Value = serde_json::from_slice(&json).ok()?;
    claims
        .get("key_id")?
        .as_str()
        .filter(|id| {
            id.len() == 16
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        .map(str::to_owned)
}

/// A bearer credential shaped like a JWT (three base64url parts).
pub fn looks_like_token(bearer: &str) -> bool {
    bearer.starts_with("eyJ") && bearer.bytes().filter(|&b| b == b'.').count() == 2
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidToken, message)
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Verifies a token: signature, expiry, key, tenant and scopes.
pub async fn verify(
    auth: &Authenticator,
    catalog: &dyn Catalog,
    token: &str,
    key_id: Option<String>,
) -> Result<Arc<SearchGrant>, ApiError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(format!(
            "a search token is at most {MAX_TOKEN_BYTES} bytes"
        )));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("the search token is malformed"))?;
    if header.alg != Algorithm::HS256 {
        return Err(invalid("a search token is signed with HS256"));
    }
    // The key id is read before the signature is checked, only to find the
    // key to check it with; the claims are trusted once it verifies.
    let key_id = key_id.ok_or_else(|| invalid("the search token's `key_id` is not a key id"))?;
    let key_id = key_id.as_str();
    if header.kid.as_deref().is_some_and(|kid| kid != key_id) {
        return Err(invalid("the search token's `kid` and `key_id` differ"));
    }
    let unknown = || invalid("the search token's key is unknown or revoked");
    let record = auth.key(catalog, key_id).await?.ok_or_else(unknown)?;
    let secret = unhex(&record.secret_hash).ok_or_else(unknown)?;

    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp"]);
    let claims = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&secret), &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature
            | jsonwebtoken::errors::ErrorKind::ImmatureSignature => ApiError::new(
                ErrorCode::TokenExpired,
                "the search token has expired or is not valid yet",
            ),
            jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                invalid("the search token's signature does not verify")
            }
            _ => invalid(format!("the search token's claims are invalid: {e}")),
        })?
        .claims;

    if claims.exp > jsonwebtoken::get_current_timestamp() + MAX_LIFETIME_SECS {
        return Err(invalid(format!(
            "a search token may live at most {} days (`exp`)",
            MAX_LIFETIME_SECS / 86_400
        )));
    }
    if claims.key_id != record.id {
        return Err(unknown());
    }
    if claims.tenant != record.tenant {
        return Err(ApiError::forbidden(
            ErrorCode::TenantForbidden,
            "the search token names another tenant than its key's",
        ));
    }
    let key_scopes = scopes_of(&record);
    if claims.scopes.is_empty() {
        return Err(invalid("the search token's `scopes` must be [\"search\"]"));
    }
    for scope in &claims.scopes {
        let within_key = Scope::parse(scope)
            .is_some_and(|s| key_scopes.contains(&s) || key_scopes.contains(&Scope::Admin));
        if scope != "search" || !within_key {
            return Err(ApiError::forbidden(
                ErrorCode::InsufficientScope,
                format!(
                    "a search token may carry only the `search` scope, and only when its key has it (got {scope:?})"
                ),
            ));
        }
    }
    let filter = claims
        .filters
        .map(super::search::parse_filters)
        .transpose()
        .map_err(|e| invalid(format!("the search token's `filters`: {}", e.message)))?;
    if let Some(names) = &claims.plugins {
        let valid = |n: &String| n == "none" || crate::model::validate_tenant_id(n).is_ok();
        if names.len() > MAX_PLUGINS || !names.iter().all(valid) {
            return Err(invalid(format!(
                "the search token's `plugins` must list at most {MAX_PLUGINS} plugin names or \"none\""
            )));
        }
    }
    Ok(Arc::new(SearchGrant {
        tenant: claims.tenant,
        key_id: claims.key_id,
        filter,
        plugins: claims.plugins.unwrap_or_default(),
        expires: claims.exp,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_jwt_shaped_bearers_are_tokens() {
        assert!(looks_like_token("eyJhbGciOi.eyJleHAiOj.c2ln"));
        assert!(!looks_like_token("vtr_0123456789abcdef_secret"));
        assert!(!looks_like_token("eyJhbGciOi.eyJleHAiOj"));
    }

    #[test]
    fn hex_decodes_only_hex() {
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
