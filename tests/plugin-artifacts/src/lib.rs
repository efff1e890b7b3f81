//! Paths of the guest plugins of `plugins/`, built for wasm32-wasip2 by this
//! crate's build script: the examples (`PRICE_BOOST`, `CATEGORY_ALLOWLIST`,
//! `TITLE_NORMALIZER`) and the hostile guests the sandbox tests run.

include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));

/// Every component, with a short name for test messages.
pub const ALL: &[(&str, &str)] = &[
    ("price-boost", PRICE_BOOST),
    ("category-allowlist", CATEGORY_ALLOWLIST),
    ("title-normalizer", TITLE_NORMALIZER),
    ("infinite-loop", INFINITE_LOOP),
    ("memory-bomb", MEMORY_BOMB),
    ("deep-recursion", DEEP_RECURSION),
    ("panic", PANIC),
    ("wrong-length", WRONG_LENGTH),
    ("unknown-id", UNKNOWN_ID),
    ("log-flood", LOG_FLOOD),
];

/// Reads a component.
pub fn bytes(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}
