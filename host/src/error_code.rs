//! The API's error codes (`error.code`), each with its usual status.

use axum::http::StatusCode;

/// Declares [`ErrorCode`]: each code with its wire name and the status it
/// answers with. A few answers use a code with another status (an image
/// that is not a supported format is 415 when uploaded as the body, 422
/// when fetched from `image_url`); those call [`ApiError::with_status`].
macro_rules! error_codes {
    ($($variant:ident = $name:literal, $status:ident, $doc:literal;)*) => {
        /// Every error code the API can answer with (API.md's
        /// `error.code`), with its usual status.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
        }

        impl ErrorCode {
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire name (`snake_case`).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                }
            }

            /// The status this code answers with, unless the answer says
            /// otherwise ([`ApiError::with_status`]).
            pub const fn status(self) -> StatusCode {
                match self {
                    $(ErrorCode::$variant => StatusCode::$status,)*
                }
            }

            /// What the code means, for the API document.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)*
                }
            }
        }
    };
}

error_codes! {
    InvalidBody = "invalid_body", BAD_REQUEST, "The body is unreadable or not the JSON object this endpoint takes.";
    MalformedJson = "malformed_json", BAD_REQUEST, "The body is not valid JSON; `details` has the line and column.";
    InvalidPath = "invalid_path", BAD_REQUEST, "A path segment is not valid (encoding or syntax).";
    InvalidRequest = "invalid_request", BAD_REQUEST, "The request is invalid.";
    InvalidType = "invalid_type", BAD_REQUEST, "A field has the wrong JSON type (`details.field` names it).";
    InvalidValue = "invalid_value", BAD_REQUEST, "A field has a value outside the ones it accepts.";
    MissingField = "missing_field", BAD_REQUEST, "A required field is missing.";
    UnknownField = "unknown_field", BAD_REQUEST, "The body has a field this endpoint does not know.";
    UnknownParameter = "unknown_parameter", BAD_REQUEST, "The query string has a parameter this endpoint does not know.";
    DuplicateParameter = "duplicate_parameter", BAD_REQUEST, "A query parameter is given more than once.";
    InvalidParameter = "invalid_parameter", BAD_REQUEST, "A query parameter's value is invalid.";
    InvalidCharacter = "invalid_character", BAD_REQUEST, "A string holds a character no field accepts (NUL).";
    InvalidTenantId = "invalid_tenant_id", BAD_REQUEST, "A tenant id does not match `[a-z0-9][a-z0-9_-]{0,62}`.";
    InvalidExternalId = "invalid_external_id", BAD_REQUEST, "A product id is not 1 to 256 printable characters.";
    ExternalIdMismatch = "external_id_mismatch", BAD_REQUEST, "The body's `external_id` differs from the path's.";
    InvalidTitle = "invalid_title", BAD_REQUEST, "A product title is empty or too long.";
    TooLong = "too_long", BAD_REQUEST, "A text field is longer than its limit.";
    InvalidPrice = "invalid_price", BAD_REQUEST, "A price is not a non-negative decimal within range.";
    InvalidCurrency = "invalid_currency", BAD_REQUEST, "A currency is not a three-letter ISO 4217 code.";
    InvalidImageUrl = "invalid_image_url", BAD_REQUEST, "An image URL is not an absolute http(s) URL.";
    InvalidTag = "invalid_tag", BAD_REQUEST, "A tag is empty, too long or not a string.";
    TooManyTags = "too_many_tags", BAD_REQUEST, "A product has more tags than allowed.";
    MetadataTooLarge = "metadata_too_large", BAD_REQUEST, "A product's metadata is too large or too deep.";
    DuplicateInBatch = "duplicate_in_batch", BAD_REQUEST, "A batch names the same product twice.";
    TooManyProducts = "too_many_products", BAD_REQUEST, "A batch holds more products than allowed.";
    InvalidCursor = "invalid_cursor", BAD_REQUEST, "A pagination cursor is not one this server issued.";
    InvalidLabel = "invalid_label", BAD_REQUEST, "A key label is too long or holds control characters.";
    InvalidName = "invalid_name", BAD_REQUEST, "A tenant name is empty, too long or holds control characters.";
    InvalidScopes = "invalid_scopes", BAD_REQUEST, "A key's scopes are not a non-empty list of known scopes.";
    InvalidText = "invalid_text", BAD_REQUEST, "A query text is empty or too long.";
    InvalidQuery = "invalid_query", BAD_REQUEST, "A search or embed request does not name exactly one query.";
    InvalidFilter = "invalid_filter", BAD_REQUEST, "A search filter is invalid.";
    InvalidBase64 = "invalid_base64", BAD_REQUEST, "An image in the body is not valid base64.";
    InvalidPluginName = "invalid_plugin_name", BAD_REQUEST, "A plugin name does not match the naming rule.";
    DuplicatePart = "duplicate_part", BAD_REQUEST, "A multipart upload names the same part twice.";
    Unauthorized = "unauthorized", UNAUTHORIZED, "The API key is missing or unknown.";
    AdminRequired = "admin_required", FORBIDDEN, "Only the admin key may do this.";
    InsufficientScope = "insufficient_scope", FORBIDDEN, "The key lacks the scope this needs.";
    TenantForbidden = "tenant_forbidden", FORBIDDEN, "The key belongs to another tenant.";
    InvalidToken = "invalid_token", UNAUTHORIZED, "The search token is malformed, its signature does not verify, or its key is unknown or revoked.";
    TokenExpired = "token_expired", UNAUTHORIZED, "The search token has expired (`exp`) or is not valid yet (`nbf`).";
    TokenNotAllowed = "token_not_allowed", FORBIDDEN, "A search token works on the searches and product images only.";
    PluginNotAllowed = "plugin_not_allowed", FORBIDDEN, "The search token does not allow this plugin choice.";
    QuotaExceeded = "quota_exceeded", FORBIDDEN, "The write would take the tenant over a quota the admin set; `details` names it.";
    NotFound = "not_found", NOT_FOUND, "The resource does not exist.";
    RouteNotFound = "route_not_found", NOT_FOUND, "No route has this path.";
    TenantNotFound = "tenant_not_found", NOT_FOUND, "There is no such tenant.";
    ProductNotFound = "product_not_found", NOT_FOUND, "There is no such product.";
    KeyNotFound = "key_not_found", NOT_FOUND, "The tenant has no such key.";
    JobNotFound = "job_not_found", NOT_FOUND, "There is no such job.";
    PluginNotFound = "plugin_not_found", NOT_FOUND, "The tenant has no such plugin.";
    PluginVersionNotFound = "plugin_version_not_found", NOT_FOUND, "The plugin has no such version.";
    ImageNotFound = "image_not_found", NOT_FOUND, "The product has no uploaded image.";
    MethodNotAllowed = "method_not_allowed", METHOD_NOT_ALLOWED, "The path exists but not with this method.";
    MalformedRequest = "malformed_request", BAD_REQUEST, "The request is not valid HTTP/1.1.";
    UriTooLong = "uri_too_long", URI_TOO_LONG, "The request's URI is longer than the server accepts.";
    HeadersTooLarge = "headers_too_large", REQUEST_HEADER_FIELDS_TOO_LARGE, "The request's headers are larger than the server accepts.";
    BodyTimeout = "body_timeout", REQUEST_TIMEOUT, "The client sent its body too slowly.";
    Conflict = "conflict", CONFLICT, "The request conflicts with stored data (a duplicate id, a stale version).";
    ReindexInProgress = "reindex_in_progress", CONFLICT, "A reindex of this scope is already running.";
    ProductNotIndexed = "product_not_indexed", CONFLICT, "The product has no vector yet (more-like-this needs one).";
    JobFinished = "job_finished", CONFLICT, "The job has already finished.";
    InUse = "in_use", CONFLICT, "The plugin version is active and cannot be removed.";
    PayloadTooLarge = "payload_too_large", PAYLOAD_TOO_LARGE, "The body is larger than this endpoint accepts.";
    UnsupportedMediaType = "unsupported_media_type", UNSUPPORTED_MEDIA_TYPE, "The body's `Content-Type` is not one this endpoint takes.";
    UnsupportedImage = "unsupported_image", UNPROCESSABLE_ENTITY, "The image is not JPEG, PNG, WebP or GIF (415 when it is the request body).";
    InvalidImage = "invalid_image", UNPROCESSABLE_ENTITY, "The image does not decode.";
    ImageTooLarge = "image_too_large", UNPROCESSABLE_ENTITY, "The image has more pixels than allowed.";
    ImageUnreachable = "image_unreachable", UNPROCESSABLE_ENTITY, "The image URL could not be fetched.";
    RejectedByPlugin = "rejected_by_plugin", UNPROCESSABLE_ENTITY, "The tenant's cleanup plugin rejected the product.";
    NotWasm = "not_wasm", UNPROCESSABLE_ENTITY, "The upload is not a WebAssembly binary.";
    NotAComponent = "not_a_component", UNPROCESSABLE_ENTITY, "The upload is a core module, not a component.";
    InvalidComponent = "invalid_component", UNPROCESSABLE_ENTITY, "The component does not validate.";
    WrongWorld = "wrong_world", UNPROCESSABLE_ENTITY, "The component does not implement the claimed plugin world.";
    WrongPluginWorld = "wrong_plugin_world", UNPROCESSABLE_ENTITY, "The plugin's world does not fit the name it is uploaded under.";
    CompileTimeout = "compile_timeout", UNPROCESSABLE_ENTITY, "Compiling the component took too long.";
    RateLimited = "rate_limited", TOO_MANY_REQUESTS, "Too many requests; `Retry-After` says when to retry.";
    InternalError = "internal_error", INTERNAL_SERVER_ERROR, "An internal error; the request id identifies it in the server logs.";
    Unavailable = "unavailable", SERVICE_UNAVAILABLE, "A dependency is unavailable; retry shortly.";
    Overloaded = "overloaded", SERVICE_UNAVAILABLE, "The server is overloaded; retry after `Retry-After`.";
    Busy = "busy", SERVICE_UNAVAILABLE, "Every slot for this work is busy; retry shortly.";
    NotReady = "not_ready", SERVICE_UNAVAILABLE, "The server is not ready (the encoder or the index is loading).";
    ReindexRequired = "reindex_required", SERVICE_UNAVAILABLE, "The vector index does not fit the encoder; an admin must reindex.";
    Timeout = "timeout", SERVICE_UNAVAILABLE, "The request ran past its deadline.";
    TooManyConnections = "too_many_connections", SERVICE_UNAVAILABLE, "The server holds as many connections as it allows.";
    FeedAhead = "feed_ahead", CONFLICT, "A follower's position is past the origin's change feed (the origin's catalog was restored or replaced): bootstrap again.";
    OriginUnreachable = "origin_unreachable", BAD_GATEWAY, "This edge could not reach its origin to forward the request; searches still work here.";
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        ErrorCode::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, &[]))
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Tests and clients compare codes with their wire names.
impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}
