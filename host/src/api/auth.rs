//! Bearer-key authentication and authorisation.
//!
//! The admin key (setting `auth.admin_key`) works on every tenant. Tenant
//! keys look like `vtr_<id>_<secret>`: the id finds the stored record, and
//! only a SHA-256 hash of the secret is stored, compared in constant time.
//! The secret is 256 random bits, so a fast hash is enough (no password
//! stretching is needed for keys nobody chose).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use base64::Engine;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorCode};
use super::token::SearchGrant;
use crate::model::now;
use crate::store::{ApiKeyRecord, Catalog};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Search,
    Write,
    Plugins,
    Admin,
    /// Reading the change feed and snapshot of every tenant (edge
    /// replicas). Only the admin issues it, and a tenant key's `admin`
    /// scope does not cover it.
    Replicate,
}

impl Scope {
    pub const ALL: [Scope; 5] = [
        Scope::Search,
        Scope::Write,
        Scope::Plugins,
        Scope::Admin,
        Scope::Replicate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Search => "search",
            Scope::Write => "write",
            Scope::Plugins => "plugins",
            Scope::Admin => "admin",
            Scope::Replicate => "replicate",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub enum Principal {
    /// The admin key, or anyone while authentication is off (development
    /// without an admin key).
    Admin,
    Tenant {
        tenant: String,
        key_id: String,
        scopes: Vec<Scope>,
    },
    /// A signed search token, derived from one of a tenant's keys
    /// (`api::token`). It works on the searches and product images only.
    Token(Arc<SearchGrant>),
}

impl Principal {
    /// Allows the call if the caller may act on `tenant` with `scope`. A
    /// tenant key's `admin` scope covers every scope of its own tenant.
    /// A search token is refused here: the search endpoints take it through
    /// [`Principal::require_search`].
    pub fn require(&self, tenant: &str, scope: Scope) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Token(_) => Err(token_not_allowed()),
            Principal::Tenant {
                tenant: own, scopes, ..
            } => {
                if own != tenant {
                    return Err(ApiError::forbidden(
                        ErrorCode::TenantForbidden,
                        "this key does not belong to the requested tenant",
                    ));
                }
                if scopes.contains(&scope) || (scopes.contains(&Scope::Admin) && scope != Scope::Replicate) {
                    Ok(())
                } else {
                    Err(ApiError::forbidden(
                        ErrorCode::InsufficientScope,
                        format!("this key lacks the `{}` scope", scope.as_str()),
                    ))
                }
            }
        }
    }

    /// Allows a search of `tenant`, returning the token's grant (forced
    /// filters, allowed plugins) when the caller holds a search token.
    pub fn require_search(&self, tenant: &str) -> Result<Option<&SearchGrant>, ApiError> {
        match self {
            Principal::Token(grant) => {
                if grant.tenant != tenant {
                    return Err(ApiError::forbidden(
                        ErrorCode::TenantForbidden,
                        "this token does not belong to the requested tenant",
                    ));
                }
                Ok(Some(grant))
            }
            other => other.require(tenant, Scope::Search).map(|()| None),
        }
    }

    /// Reads (products, jobs) are allowed with a `search` or a `write` key.
    pub fn require_read(&self, tenant: &str) -> Result<(), ApiError> {
        match self.require(tenant, Scope::Search) {
            Err(e) if e.code == ErrorCode::InsufficientScope => self.require(tenant, Scope::Write),
            other => other,
        }
    }

    /// Allows the admin key and keys with the `replicate` scope (which
    /// read every tenant).
    pub fn require_replicate(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant { scopes, .. } if scopes.contains(&Scope::Replicate) => Ok(()),
            Principal::Tenant { .. } | Principal::Token(_) => Err(ApiError::forbidden(
                ErrorCode::InsufficientScope,
                "this key lacks the `replicate` scope",
            )),
        }
    }

    /// Allows only the admin key (service-wide operations).
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant { .. } | Principal::Token(_) => Err(ApiError::forbidden(
                ErrorCode::AdminRequired,
                "this operation needs the admin key",
            )),
        }
    }

    /// The key behind the caller, with its tenant (none for the admin).
    pub fn key(&self) -> Option<(&str, &str)> {
        match self {
            Principal::Admin => None,
            Principal::Tenant { tenant, key_id, .. } => Some((tenant, key_id)),
            Principal::Token(g) => Some((&g.tenant, &g.key_id)),
        }
    }
}

/// Authentication: the admin key, and tenant keys read from the catalog
/// and kept in memory for `auth.key_cache_secs`.
pub struct Authenticator {
    /// SHA-256 of the admin key; `None` turns authentication off.
    admin_key_hash: Option<[u8; 32]>,
    /// Key id → its record (`None`: no such key), read recently.
    keys: moka::future::Cache<String, Option<Arc<ApiKeyRecord>>>,
    /// Keys revoked here lately: a read that raced the revocation must not
    /// put the key back in `keys`.
    revoked: moka::sync::Cache<String, ()>,
}

/// Keys kept in memory at once.
const KEY_CACHE_ENTRIES: u64 = 100_000;

impl Authenticator {
    pub fn new(admin_key: Option<&SecretString>, key_cache: Duration) -> Self {
        Self {
            admin_key_hash: admin_key.map(|k| sha256(k.expose_secret().as_bytes())),
            keys: moka::future::Cache::builder()
                .max_capacity(if key_cache.is_zero() { 0 } else { KEY_CACHE_ENTRIES })
                .time_to_live(key_cache.max(Duration::from_millis(1)))
                .build(),
            revoked: moka::sync::Cache::builder()
                .max_capacity(KEY_CACHE_ENTRIES)
                .time_to_live(key_cache.max(Duration::from_secs(1)) * 2)
                .build(),
        }
    }

    pub fn from_settings(settings: &crate::config::Settings) -> Self {
        Self::new(
            settings.auth.admin_key.as_ref(),
            Duration::from_secs(settings.auth.key_cache_secs),
        )
    }

    pub fn enabled(&self) -> bool {
        self.admin_key_hash.is_some()
    }

    /// A key's record, from memory or the catalog.
    pub async fn key(&self, catalog: &dyn Catalog, id: &str) -> Result<Option<Arc<ApiKeyRecord>>, ApiError> {
        if self.revoked.contains_key(id) {
            return Ok(None);
        }
        if let Some(hit) = self.keys.get(id).await {
            return Ok(hit);
        }
        let record = catalog.get_api_key(id).await?.map(Arc::new);
        if !self.revoked.contains_key(id) {
            self.keys.insert(id.to_owned(), record.clone()).await;
        }
        Ok(record.filter(|_| !self.revoked.contains_key(id)))
    }

    /// Reads a changed key from the catalog again on its next use (an
    /// edge replica applied a change to it).
    pub async fn refresh_key(&self, id: &str) {
        self.keys.invalidate(id).await;
    }

    /// Forgets a revoked key at once (other nodes within the cache time).
    pub async fn forget_key(&self, id: &str) {
        self.revoked.insert(id.to_owned(), ());
        self.keys.invalidate(id).await;
    }

    /// What the `Authorization` header presents (read once per request):
    /// the admin key, a tenant key, a search token, or why it is none of
    /// them. With authentication off, everyone is the admin.
    pub fn credential<'h>(&self, headers: &'h HeaderMap) -> Result<Credential<'h>, ApiError> {
        let Some(admin_hash) = self.admin_key_hash else {
            return Ok(Credential::Admin);
        };
        let header = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <key> header"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the Authorization header must be `Bearer <key>`"))?;
        if bool::from(sha256(token.as_bytes()).ct_eq(&admin_hash)) {
            return Ok(Credential::Admin);
        }
        if super::token::looks_like_token(token) {
            return Ok(Credential::Token {
                token,
                key_id: super::token::claimed_key_id(token),
            });
        }
        split_token(token)
            .map(|(id, secret)| Credential::Key { id, secret })
            .ok_or_else(unknown_key)
    }

    /// Whether authenticating `credential` would read the catalog: a tenant
    /// key or a token whose key is not in memory. Such a request pays its
    /// client address's bucket first, so that guessing keys cannot turn
    /// into a flood of catalog reads.
    pub fn needs_lookup(&self, credential: &Result<Credential<'_>, ApiError>) -> bool {
        let id = match credential {
            Ok(Credential::Key { id, .. }) => Some(*id),
            Ok(Credential::Token { key_id, .. }) => key_id.as_deref(),
            _ => None,
        };
        id.is_some_and(|id| !self.keys.contains_key(id))
    }

    /// Who presented `credential`: the admin, a tenant key, a search token,
    /// or the reason for a 401/403.
    pub async fn verify(
        &self,
        credential: Result<Credential<'_>, ApiError>,
        catalog: &dyn Catalog,
    ) -> Result<Principal, ApiError> {
        match credential? {
            Credential::Admin => Ok(Principal::Admin),
            Credential::Token { token, key_id } => super::token::verify(self, catalog, token, key_id)
                .await
                .map(Principal::Token),
            Credential::Key { id, secret } => {
                let record = self.key(catalog, id).await?.ok_or_else(unknown_key)?;
                let presented = hex(&sha256(secret.as_bytes()));
                if !bool::from(presented.as_bytes().ct_eq(record.secret_hash.as_bytes())) {
                    return Err(unknown_key());
                }
                Ok(Principal::Tenant {
                    tenant: record.tenant.clone(),
                    key_id: record.id.clone(),
                    scopes: scopes_of(&record),
                })
            }
        }
    }

    /// Who sent these headers ([`Authenticator::credential`], then
    /// [`Authenticator::verify`]).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        catalog: &dyn Catalog,
    ) -> Result<Principal, ApiError> {
        self.verify(self.credential(headers), catalog).await
    }
}

/// What a request's `Authorization` header presents.
pub enum Credential<'h> {
    Admin,
    /// `vtr_<id>_<secret>`.
    Key {
        id: &'h str,
        secret: &'h str,
    },
    /// A JWT-shaped bearer, with the key id its claims name (unverified).
    Token {
        token: &'h str,
        key_id: Option<String>,
    },
}

/// A search token where it does not work.
pub fn token_not_allowed() -> ApiError {
    ApiError::forbidden(
        ErrorCode::TokenNotAllowed,
        "a search token works on the searches and product images only",
    )
}

fn unknown_key() -> ApiError {
    ApiError::unauthorized("unknown or revoked API key")
}

/// A stored key's scopes.
pub fn scopes_of(record: &ApiKeyRecord) -> Vec<Scope> {
    record.scopes.iter().filter_map(|s| Scope::parse(s)).collect()
}

/// The caller as the authentication layer found it, for the handlers.
#[derive(Clone)]
pub struct Authenticated(pub Result<Principal, ApiError>);

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const KEY_PREFIX: &str = "vtr_";
const KEY_ID_HEX_LEN: usize = 16;

/// A new tenant key: the record to store and the token shown once.
pub fn generate_key(tenant: &str, scopes: Vec<String>, label: Option<String>) -> (ApiKeyRecord, String) {
    let mut rng = rand::rng();
    let mut id = [0u8; KEY_ID_HEX_LEN / 2];
    let mut secret = [0u8; 32];
    rng.fill_bytes(&mut id);
    rng.fill_bytes(&mut secret);
    let id = hex(&id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let token = format!("{KEY_PREFIX}{id}_{secret}");
    let record = ApiKeyRecord {
        id,
        tenant: tenant.to_owned(),
        secret_hash: hex(&sha256(secret.as_bytes())),
        scopes,
        label,
        created_at: now(),
    };
    (record, token)
}

/// Splits `vtr_<16 hex>_<secret>` into id and secret.
pub(crate) fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_at_checked(KEY_ID_HEX_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let id_ok = id
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (id_ok && !secret.is_empty()).then_some((id, secret))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        // The `api::gate` layer authenticated every routed request.
        match parts.extensions.get::<Authenticated>() {
            Some(Authenticated(outcome)) => outcome.clone(),
            None => state.auth.authenticate(&parts.headers, &*state.catalog).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_split_back_into_id_and_secret() {
        let (record, token) = generate_key("shop", vec!["search".into()], None);
        let (id, secret) = split_token(&token).unwrap();
        assert_eq!(id, record.id);
        assert_eq!(hex(&sha256(secret.as_bytes())), record.secret_hash);
        assert!(!record.secret_hash.contains(secret), "the secret is never stored");
    }

    #[test]
    fn malformed_tokens_do_not_split() {
        for t in [
            "",
            "vtr_",
            "vtr_0123456789abcdef",
            "vtr_0123456789abcdef_",
            "vtr_0123456789ABCDEF_x",
            "xyz_0123456789abcdef_x",
        ] {
            assert!(split_token(t).is_none(), "{t}");
        }
    }

    #[test]
    fn tenant_keys_are_confined_to_their_tenant_and_scopes() {
        let p = Principal::Tenant {
            tenant: "a".into(),
            key_id: "k".into(),
            scopes: vec![Scope::Search],
        };
        assert!(p.require("a", Scope::Search).is_ok());
        assert_eq!(
            p.require("a", Scope::Write).unwrap_err().code,
            "insufficient_scope"
        );
        assert_eq!(
            p.require("b", Scope::Search).unwrap_err().code,
            "tenant_forbidden"
        );
        assert!(p.require_admin().is_err());
        let admin_scoped = Principal::Tenant {
            tenant: "a".into(),
            key_id: "k".into(),
            scopes: vec![Scope::Admin],
        };
        assert!(admin_scoped.require("a", Scope::Plugins).is_ok());
        assert!(admin_scoped.require("b", Scope::Search).is_err());
        assert!(Principal::Admin.require("anything", Scope::Admin).is_ok());
    }
}
