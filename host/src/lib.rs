//! Vitrine: multimodal product search with tenant WebAssembly plugins.
//!
//! See `ARCHITECTURE.md` at the repository root for the module map.

pub mod api;
pub mod bench;
pub mod cli;
pub mod config;
pub mod conn;
pub mod encoder;
pub mod error_code;
pub mod indexing;
pub mod jobs;
pub mod media;
pub mod model;
pub mod plugins;
pub mod replica;
pub mod search;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod tls;
