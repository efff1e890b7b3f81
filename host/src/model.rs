//! Domain types shared by the store and the API, and the validation rules of
//! API.md that decide what a tenant id, an external id and a product may be.
//!
//! Validation lives here, below the HTTP layer, so that the CLI importer and
//! the API apply exactly the same rules.

use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::error_code::ErrorCode;

/// Longest title accepted (API.md).
pub const MAX_TITLE_CHARS: usize = 1000;
/// Longest description accepted. Descriptions feed the text encoder, which
/// reads at most 77 tokens, so more than this is never useful for search.
pub const MAX_DESCRIPTION_CHARS: usize = 20_000;
/// Longest category name; categories are filter keys, not prose.
pub const MAX_CATEGORY_CHARS: usize = 200;
/// Tags are filter keys carried in every vector payload; keep them bounded.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_CHARS: usize = 100;
/// Longest image URL; browsers and CDNs reject longer ones anyway.
pub const MAX_IMAGE_URL_CHARS: usize = 2048;
/// Serialised size cap of `metadata` (API.md: 64 KiB).
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// Longest external id (API.md).
pub const MAX_EXTERNAL_ID_CHARS: usize = 256;
/// Largest price accepted: far above any real price, and small enough to be
/// exact in every backend's numeric type.
pub const MAX_PRICE: Decimal = Decimal::from_parts(0xA4C6_8000, 0x0003_8D7E, 0, false, 0); // 10^15
/// Longest tenant display name.
pub const MAX_TENANT_NAME_CHARS: usize = 200;

/// Current time, truncated to milliseconds so every backend stores and
/// returns the same instant.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(3)
}

/// Timestamps in responses: RFC 3339, UTC, millisecond precision.
pub fn format_time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// What is wrong with one field of an input document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub code: ErrorCode,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            code,
            message: message.into(),
        }
    }
}

/// `[a-z0-9][a-z0-9_-]{0,62}` (API.md).
pub fn validate_tenant_id(id: &str) -> Result<(), FieldError> {
    let bytes = id.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "tenant",
            ErrorCode::InvalidTenantId,
            "tenant ids are 1 to 63 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
        ))
    }
}

/// 1–256 printable characters (API.md).
pub fn validate_external_id(id: &str) -> Result<(), FieldError> {
    let n = id.chars().count();
    if n == 0 || n > MAX_EXTERNAL_ID_CHARS {
        return Err(FieldError::new(
            "external_id",
            ErrorCode::InvalidExternalId,
            format!("external_id must be 1 to {MAX_EXTERNAL_ID_CHARS} characters"),
        ));
    }
    if id.chars().any(char::is_control) {
        return Err(FieldError::new(
            "external_id",
            ErrorCode::InvalidExternalId,
            "external_id must contain only printable characters",
        ));
    }
    Ok(())
}

/// A validated product as a tenant describes it (everything but the
/// external id and the server-set fields).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductFields {
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    pub price: Option<Decimal>,
    pub currency: Option<String>,
    pub image_url: Option<String>,
    pub tags: Vec<String>,
    pub in_stock: bool,
    pub metadata: Map<String, Value>,
}

impl ProductFields {
    /// The fields as the document a client would send for them.
    pub fn document(&self, external_id: &str) -> ProductDocument {
        ProductDocument {
            external_id: Some(external_id.to_owned()),
            title: Some(self.title.clone()),
            description: self.description.clone(),
            category: self.category.clone(),
            price: self.price.map(|p| Price::Text(p.to_string())),
            currency: self.currency.clone(),
            image_url: self.image_url.clone(),
            tags: Some(self.tags.clone()),
            in_stock: Some(self.in_stock),
            metadata: Some(self.metadata.clone()),
            ..ProductDocument::default()
        }
    }

    /// Whether a change from `self` to `other` alters anything the vector
    /// index holds (the embedded text and image, and the filter payload).
    pub fn needs_reindex(&self, other: &ProductFields) -> bool {
        self.title != other.title
            || self.description != other.description
            || self.image_url != other.image_url
            || self.category != other.category
            || self.price != other.price
            || self.currency != other.currency
            || self.tags != other.tags
            || self.in_stock != other.in_stock
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexStatus {
    Pending,
    Indexed,
    Failed,
}

impl IndexStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            IndexStatus::Pending => "pending",
            IndexStatus::Indexed => "indexed",
            IndexStatus::Failed => "failed",
        }
    }
}

impl FromStr for IndexStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(Self::Pending),
            "indexed" => Ok(Self::Indexed),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown index status {other:?}")),
        }
    }
}

/// A stored product.
#[derive(Debug, Clone, PartialEq)]
pub struct Product {
    pub tenant: String,
    pub external_id: String,
    pub fields: ProductFields,
    pub index_status: IndexStatus,
    pub index_error: Option<String>,
    /// Incremented on every write; used for optimistic concurrency.
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Blob key of an image uploaded for this product
    /// (`PUT .../products/{id}/image`). When set, indexing embeds it
    /// instead of fetching `image_url`.
    pub image_key: Option<String>,
}

/// Characters escaped in a path segment: everything but RFC 3986's
/// unreserved set.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `s` escaped as one URL path segment.
pub fn path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

impl Product {
    /// Whether indexing has an image to embed (uploaded or by URL).
    pub fn has_image(&self) -> bool {
        self.image_key.is_some() || self.fields.image_url.is_some()
    }

    /// SHA-256 of the uploaded image (the last part of its blob key).
    pub fn image_sha256(&self) -> Option<&str> {
        self.image_key.as_deref().and_then(|k| k.rsplit('/').next())
    }

    /// Where the uploaded image is served, relative to the server.
    pub fn image_path(&self) -> String {
        format!(
            "/v1/tenants/{}/products/{}/image",
            path_segment(&self.tenant),
            path_segment(&self.external_id)
        )
    }

    /// The editable fields as the document a client sends. PATCH applies
    /// a JSON merge patch to this document.
    pub fn input_document(&self) -> ProductDocument {
        self.fields.document(&self.external_id)
    }

    /// The public representation (API.md: price as an exact string).
    pub fn view(&self) -> ProductView {
        let f = &self.fields;
        ProductView {
            external_id: self.external_id.clone(),
            title: f.title.clone(),
            description: f.description.clone(),
            category: f.category.clone(),
            price: f.price.map(|p| p.to_string()),
            currency: f.currency.clone(),
            image_url: f.image_url.clone(),
            tags: f.tags.clone(),
            in_stock: f.in_stock,
            metadata: f.metadata.clone(),
            created_at: format_time(&self.created_at),
            updated_at: format_time(&self.updated_at),
            index_status: self.index_status,
            index_error: self.index_error.clone(),
            stored_image: self.image_sha256().map(|sha| StoredImage {
                sha256: sha.to_owned(),
                path: self.image_path(),
            }),
        }
    }
}

/// A product as clients send it: create, PUT, each item of a batch, and
/// the document a PATCH merges into. Server-set fields are accepted (with
/// their own types) and ignored, so a GET → edit → PUT round trip works.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"external_id": "boot-1", "title": "Red leather ankle boots", "price": "89.90",
    "currency": "EUR", "category": "shoes", "tags": ["leather", "red"], "in_stock": true}))]
pub struct ProductDocument {
    /// 1 to 256 printable characters; required on create and in a batch,
    /// and must equal the path's id on PUT/PATCH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 256)]
    pub external_id: Option<String>,
    /// Required: 1 to 1,000 characters, not blank.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 1000)]
    pub title: Option<String>,
    #[serde(default)]
    #[schema(max_length = 20000)]
    pub description: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 200)]
    pub category: Option<String>,
    /// A decimal ≥ 0, as a JSON number or a string such as `"19.99"`.
    #[serde(default)]
    #[schema(example = "19.99")]
    pub price: Option<Price>,
    /// ISO 4217, three letters.
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z]{3}$", example = "EUR")]
    pub currency: Option<String>,
    /// An absolute http(s) URL without credentials.
    #[serde(default)]
    #[schema(max_length = 2048)]
    pub image_url: Option<String>,
    /// Up to 64 tags of 1 to 100 printable characters.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub tags: Option<Vec<String>>,
    /// Defaults to true.
    #[serde(default)]
    pub in_stock: Option<bool>,
    /// Free-form JSON, up to 64 KiB serialised.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
    /// Server-set: ignored.
    #[serde(default, skip_serializing)]
    pub created_at: Option<String>,
    /// Server-set: ignored.
    #[serde(default, skip_serializing)]
    pub updated_at: Option<String>,
    /// Server-set: ignored.
    #[serde(default, skip_serializing)]
    pub index_status: Option<IndexStatus>,
    /// Server-set: ignored.
    #[serde(default, skip_serializing)]
    pub index_error: Option<String>,
    /// Server-set: ignored.
    #[serde(default, skip_serializing)]
    pub stored_image: Option<StoredImage>,
}

/// A price as sent: a JSON number or a decimal string.
#[derive(Debug, Clone, PartialEq)]
pub enum Price {
    /// A JSON number, in its shortest round-trip form.
    Number(String),
    Text(String),
}

/// A number ≥ 0, or a decimal string (`"19.99"`).
impl utoipa::PartialSchema for Price {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(0.0))
                    .maximum(Some(1e15)),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(r"^-?[0-9]+(\.[0-9]+)?$")),
            )
            .into()
    }
}

impl ToSchema for Price {}

impl Serialize for Price {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Price::Number(n) | Price::Text(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Price;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a decimal number or a string such as \"19.99\"")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Price, E> {
                Ok(Price::Number(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Price, E> {
                Ok(Price::Number(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Price, E> {
                // JSON's shortest round-trip form (`1000.0`, `1e16`).
                serde_json::Number::from_f64(v)
                    .map(|n| Price::Number(n.to_string()))
                    .ok_or_else(|| E::custom("a price must be a finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Price, E> {
                Ok(Price::Text(v.to_owned()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Where an uploaded product image is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StoredImage {
    pub sha256: String,
    pub path: String,
}

/// A stored product as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProductView {
    pub external_id: String,
    pub title: String,
    pub description: Option<String>,
    pub category: Option<String>,
    /// Exact decimal, as a string.
    #[schema(example = "89.90")]
    pub price: Option<String>,
    pub currency: Option<String>,
    pub image_url: Option<String>,
    pub tags: Vec<String>,
    pub in_stock: bool,
    #[schema(value_type = Object)]
    pub metadata: Map<String, Value>,
    pub created_at: String,
    pub updated_at: String,
    pub index_status: IndexStatus,
    pub index_error: Option<String>,
    /// The uploaded image, when there is one.
    pub stored_image: Option<StoredImage>,
}

/// A product document parsed from JSON: the external id (if the document
/// carries one) and the validated fields.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductInput {
    pub external_id: Option<String>,
    pub fields: ProductFields,
}

/// Validates a product document. Every problem is reported, the first
/// one naming the field in `details.field` of the HTTP error. (Wrong JSON
/// types were refused when the document was read.)
pub fn parse_product(doc: &ProductDocument) -> Result<ProductInput, Vec<FieldError>> {
    let mut errors = Vec::new();
    let external_id = match &doc.external_id {
        None => None,
        Some(s) => match validate_external_id(s) {
            Ok(()) => Some(s.clone()),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };

    let title = match &doc.title {
        None => {
            errors.push(FieldError::new(
                "title",
                ErrorCode::MissingField,
                "title is required",
            ));
            String::new()
        }
        Some(s) => {
            if s.trim().is_empty() {
                errors.push(FieldError::new(
                    "title",
                    ErrorCode::InvalidTitle,
                    "title must not be empty",
                ));
            } else if s.chars().count() > MAX_TITLE_CHARS {
                errors.push(too_long("title", MAX_TITLE_CHARS));
            } else if s.contains('\0') {
                errors.push(nul_char("title"));
            }
            s.clone()
        }
    };

    let description = optional_text(
        &mut errors,
        doc.description.as_deref(),
        "description",
        MAX_DESCRIPTION_CHARS,
        true,
    );
    let category = optional_text(
        &mut errors,
        doc.category.as_deref(),
        "category",
        MAX_CATEGORY_CHARS,
        false,
    );

    let price = match &doc.price {
        None => None,
        Some(v) => match parse_price(v) {
            Ok(p) => Some(p),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };

    let currency = match &doc.currency {
        None => None,
        Some(s) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => Some(s.to_ascii_uppercase()),
        Some(_) => {
            errors.push(FieldError::new(
                "currency",
                ErrorCode::InvalidCurrency,
                "currency must be an ISO 4217 code of 3 letters, such as \"EUR\"",
            ));
            None
        }
    };

    let image_url = match &doc.image_url {
        None => None,
        Some(s) => match validate_image_url(s) {
            Ok(()) => Some(s.clone()),
            Err(e) => {
                errors.push(e);
                None
            }
        },
    };

    let tags = match &doc.tags {
        None => Vec::new(),
        Some(items) => parse_tags(&mut errors, items),
    };

    let in_stock = doc.in_stock.unwrap_or(true);

    let metadata = match &doc.metadata {
        None => Map::new(),
        Some(m) => {
            let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
            if size > MAX_METADATA_BYTES {
                errors.push(FieldError::new(
                    "metadata",
                    ErrorCode::MetadataTooLarge,
                    format!("metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}"),
                ));
            } else if m.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)) {
                // Free-form JSON that no catalog can store (an ingest
                // plugin's output arrives here without the API's checks).
                errors.push(nul_char("metadata"));
            }
            m.clone()
        }
    };

    if errors.is_empty() {
        Ok(ProductInput {
            external_id,
            fields: ProductFields {
                title,
                description,
                category,
                price,
                currency,
                image_url,
                tags,
                in_stock,
                metadata,
            },
        })
    } else {
        Err(errors)
    }
}

fn too_long(field: &str, max: usize) -> FieldError {
    FieldError::new(
        field,
        ErrorCode::TooLong,
        format!("{field} must be at most {max} characters"),
    )
}

fn nul_char(field: &str) -> FieldError {
    FieldError::new(
        field,
        ErrorCode::InvalidCharacter,
        format!("{field} must not contain NUL characters"),
    )
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(contains_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

fn optional_text(
    errors: &mut Vec<FieldError>,
    v: Option<&str>,
    field: &str,
    max: usize,
    multiline: bool,
) -> Option<String> {
    match v {
        None => None,
        Some(s) => {
            if s.chars().count() > max {
                errors.push(too_long(field, max));
            } else if s.contains('\0') {
                errors.push(nul_char(field));
            } else if !multiline && s.chars().any(char::is_control) {
                errors.push(FieldError::new(
                    field,
                    ErrorCode::InvalidCharacter,
                    format!("{field} must not contain control characters"),
                ));
            } else if !multiline && s.trim().is_empty() {
                errors.push(FieldError::new(
                    field,
                    ErrorCode::InvalidValue,
                    format!("{field} must not be blank; leave it out or send null instead"),
                ));
            }
            Some(s.to_owned())
        }
    }
}

fn parse_tags(errors: &mut Vec<FieldError>, items: &[String]) -> Vec<String> {
    if items.len() > MAX_TAGS {
        errors.push(FieldError::new(
            "tags",
            ErrorCode::TooManyTags,
            format!("at most {MAX_TAGS} tags are allowed"),
        ));
        return Vec::new();
    }
    let mut tags: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let field = format!("tags[{i}]");
        if !item.trim().is_empty()
            && item.chars().count() <= MAX_TAG_CHARS
            && !item.chars().any(char::is_control)
        {
            // Duplicates carry no meaning for filtering; keep the first.
            if !tags.contains(item) {
                tags.push(item.clone());
            }
        } else {
            errors.push(FieldError::new(
                field,
                ErrorCode::InvalidTag,
                format!("tags must be 1 to {MAX_TAG_CHARS} printable characters and not blank"),
            ));
        }
    }
    tags
}

/// Prices arrive as a JSON number or a string and are kept exactly as
/// decimal values. A JSON number is read through its shortest round-trip
/// form, which is the literal the client wrote for any price with at most
/// 15 significant digits; send a string for anything more precise.
pub fn parse_price(v: &Price) -> Result<Decimal, FieldError> {
    let invalid = || {
        FieldError::new(
            "price",
            ErrorCode::InvalidPrice,
            "price must be a decimal number ≥ 0 (a JSON number or a string such as \"19.99\")",
        )
    };
    let mut d = match v {
        Price::Number(text) => Decimal::from_str(text)
            .or_else(|_| Decimal::from_scientific(text))
            .map_err(|_| invalid())?,
        // The documented format only: digits, optionally a point and more
        // digits (`19.99`, `0.5`, `1000`); no sign but `-0`, no exponent,
        // no separators, no spaces.
        Price::Text(s) => {
            let digits = s.strip_prefix('-').unwrap_or(s);
            let (int, frac) = digits.split_once('.').unwrap_or((digits, "0"));
            let plain = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            if !plain(int) || !plain(frac) {
                return Err(invalid());
            }
            Decimal::from_str_exact(s).map_err(|_| invalid())?
        }
    };
    if d.is_sign_negative() && !d.is_zero() {
        return Err(invalid());
    }
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    if d > MAX_PRICE {
        return Err(FieldError::new(
            "price",
            ErrorCode::InvalidPrice,
            format!("price must be at most {MAX_PRICE}"),
        ));
    }
    Ok(d)
}

fn validate_image_url(s: &str) -> Result<(), FieldError> {
    let invalid = |why: &str| {
        FieldError::new(
            "image_url",
            ErrorCode::InvalidImageUrl,
            format!("image_url must be an absolute http or https URL: {why}"),
        )
    };
    if s.chars().count() > MAX_IMAGE_URL_CHARS {
        return Err(too_long("image_url", MAX_IMAGE_URL_CHARS));
    }
    let url = url::Url::parse(s).map_err(|e| invalid(&e.to_string()))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(invalid(&format!("scheme `{}` is not allowed", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A price as the API reads it: its JSON type, then its rules.
    fn price(v: Value) -> Result<Decimal, FieldError> {
        let Ok(p) = serde_json::from_value::<Price>(v) else {
            return Err(FieldError::new(
                "price",
                ErrorCode::InvalidType,
                "not a number or string",
            ));
        };
        parse_price(&p)
    }

    fn doc(v: Value) -> ProductDocument {
        serde_json::from_value(v).unwrap()
    }

    /// The first problem with a document read as the API reads it: its
    /// types first, then its rules.
    fn first_error(v: Value) -> (String, &'static str) {
        let tree = serde_value::to_value(&v).unwrap();
        match crate::api::extract::typed::<ProductDocument>(tree, "") {
            Err(e) => {
                let field = e
                    .details
                    .as_ref()
                    .and_then(|d| d["field"].as_str())
                    .unwrap_or_default();
                (field.to_owned(), e.code.as_str())
            }
            Ok(doc) => {
                let e = parse_product(&doc).expect_err("should be rejected")[0].clone();
                (e.field, e.code.as_str())
            }
        }
    }

    #[test]
    fn max_price_is_ten_to_the_fifteenth() {
        assert_eq!(MAX_PRICE.to_string(), "1000000000000000");
    }

    #[test]
    fn tenant_ids_follow_the_api_pattern() {
        for ok in ["default", "a", "0shop", "shop_1-b", &"a".repeat(63)] {
            assert!(validate_tenant_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Shop", "-a", "_a", "a.b", "a b", &"a".repeat(64), "é"] {
            assert!(validate_tenant_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn external_ids_are_printable_and_bounded() {
        assert!(validate_external_id("SKU 123/é").is_ok());
        assert!(validate_external_id(&"x".repeat(256)).is_ok());
        assert!(validate_external_id(&"x".repeat(257)).is_err());
        assert!(validate_external_id("").is_err());
        assert!(validate_external_id("a\nb").is_err());
        assert!(validate_external_id("a\u{7f}").is_err());
    }

    #[test]
    fn prices_keep_their_exact_decimal_value() {
        assert_eq!(price(json!(19.99)).unwrap().to_string(), "19.99");
        assert_eq!(price(json!("19.90")).unwrap().to_string(), "19.90");
        assert_eq!(price(json!(0)).unwrap().to_string(), "0");
        assert_eq!(price(json!("-0")).unwrap().to_string(), "0");
        assert_eq!(
            price(json!("123456789.123456789")).unwrap().to_string(),
            "123456789.123456789"
        );
        // A float literal keeps its written form: `1e3` arrives as 1000.0.
        assert_eq!(price(json!(1e3)).unwrap().to_string(), "1000.0");
        for bad in [
            json!(-1),
            json!("-0.01"),
            json!("abc"),
            json!(""),
            json!("1e3"),
            json!(true),
            json!("+1"),
            json!(1e16),
            json!("1_000"),
            json!(" 1"),
            json!("1."),
            json!(".5"),
            json!("1,5"),
            json!("0x10"),
            json!("1.2.3"),
        ] {
            assert_eq!(price(bad.clone()).unwrap_err().field, "price", "{bad}");
        }
    }

    #[test]
    fn a_minimal_product_gets_defaults() {
        let p = parse_product(&doc(json!({"title": "Boot"}))).unwrap();
        assert_eq!(p.external_id, None);
        assert_eq!(p.fields.title, "Boot");
        assert!(p.fields.in_stock);
        assert!(p.fields.tags.is_empty());
        assert!(p.fields.metadata.is_empty());
    }

    #[test]
    fn currency_is_normalised_to_upper_case() {
        let p = parse_product(&doc(json!({"title": "x", "currency": "eur"}))).unwrap();
        assert_eq!(p.fields.currency.as_deref(), Some("EUR"));
    }

    #[test]
    fn every_rule_names_its_field() {
        let cases = [
            (json!({}), "title", "missing_field"),
            (json!({"title": " "}), "title", "invalid_title"),
            (json!({"title": "x".repeat(1001)}), "title", "too_long"),
            (json!({"title": 5}), "title", "invalid_type"),
            (
                json!({"title": "x", "external_id": ""}),
                "external_id",
                "invalid_external_id",
            ),
            (json!({"title": "x", "price": "-1"}), "price", "invalid_price"),
            (
                json!({"title": "x", "currency": "EURO"}),
                "currency",
                "invalid_currency",
            ),
            (
                json!({"title": "x", "currency": "E1R"}),
                "currency",
                "invalid_currency",
            ),
            (
                json!({"title": "x", "image_url": "ftp://a/b.png"}),
                "image_url",
                "invalid_image_url",
            ),
            (
                json!({"title": "x", "image_url": "not a url"}),
                "image_url",
                "invalid_image_url",
            ),
            (json!({"title": "x", "tags": "a"}), "tags", "invalid_type"),
            (
                json!({"title": "x", "tags": ["ok", ""]}),
                "tags[1]",
                "invalid_tag",
            ),
            (json!({"title": "x", "tags": [1]}), "tags[0]", "invalid_type"),
            (
                json!({"title": "x", "in_stock": "yes"}),
                "in_stock",
                "invalid_type",
            ),
            (json!({"title": "x", "metadata": []}), "metadata", "invalid_type"),
            (
                json!({"title": "x", "metadata": {"a": "x".repeat(70_000)}}),
                "metadata",
                "metadata_too_large",
            ),
            (json!({"title": "x", "colour": "red"}), "colour", "unknown_field"),
            (
                json!({"title": "x", "category": "a\u{1}"}),
                "category",
                "invalid_character",
            ),
        ];
        for (input, field, code) in cases {
            let (f, c) = first_error(input.clone());
            assert_eq!((f.as_str(), c), (field, code), "{input}");
        }
    }

    #[test]
    fn server_set_fields_are_ignored_so_get_then_put_round_trips() {
        let p = parse_product(&doc(json!({
            "title": "x", "created_at": "2020-01-01T00:00:00Z", "index_status": "indexed"
        })));
        assert!(p.is_ok());
    }

    #[test]
    fn tags_are_deduplicated_in_order() {
        let p = parse_product(&doc(json!({"title": "x", "tags": ["b", "a", "b"]}))).unwrap();
        assert_eq!(p.fields.tags, vec!["b", "a"]);
    }
}
