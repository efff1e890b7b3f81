//! The jobs Vitrine runs: every kind with its payload in one serde enum,
//! shared by the API that enqueues them, the runner that dispatches them
//! and the handlers that read them. A job row keeps the kind and the
//! payload in their own columns; [`JobSpec`] is their typed form.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{Job, NewJob};

/// A job's kind and payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "snake_case")]
pub enum JobSpec {
    /// Index one product: embed it, or remove its vector when it is gone.
    /// Pending ones of a tenant run together.
    IndexProduct { external_ids: Vec<String> },
    /// The same for a batch of products.
    BatchIndexProducts { external_ids: Vec<String> },
    /// Re-embed every product, of one tenant or of all, into a new
    /// generation of the index.
    ReindexAll { tenant: Option<String> },
}

/// The kinds, for registering handlers and labelling metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    IndexProduct,
    BatchIndexProducts,
    ReindexAll,
}

impl JobKind {
    pub const ALL: [JobKind; 3] = [Self::IndexProduct, Self::BatchIndexProducts, Self::ReindexAll];

    /// The name stored in a job's `kind` column and shown by the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IndexProduct => "index_product",
            Self::BatchIndexProducts => "batch_index_products",
            Self::ReindexAll => "reindex_all",
        }
    }
}

impl JobSpec {
    /// Indexing of these products: one job kind for one, another for many.
    pub fn index(external_ids: Vec<String>) -> Self {
        if external_ids.len() == 1 {
            Self::IndexProduct { external_ids }
        } else {
            Self::BatchIndexProducts { external_ids }
        }
    }

    pub fn kind(&self) -> JobKind {
        match self {
            Self::IndexProduct { .. } => JobKind::IndexProduct,
            Self::BatchIndexProducts { .. } => JobKind::BatchIndexProducts,
            Self::ReindexAll { .. } => JobKind::ReindexAll,
        }
    }

    /// The payload column's value.
    fn payload(&self) -> Value {
        match serde_json::to_value(self) {
            Ok(Value::Object(mut m)) => m.remove("payload").unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }

    /// A stored kind and payload, read back.
    pub fn parse(kind: &str, payload: &Value) -> Result<Self, String> {
        serde_json::from_value(serde_json::json!({"kind": kind, "payload": payload}))
            .map_err(|e| format!("job of kind `{kind}` with a payload it cannot have: {e}"))
    }
}

impl NewJob {
    /// The job that runs `spec`, for `tenant` or (with `None`) for all.
    pub fn of(spec: &JobSpec, tenant: Option<&str>) -> Self {
        let mut job = NewJob::global(spec.kind().as_str(), spec.payload());
        job.tenant = tenant.map(str::to_owned);
        job
    }
}

impl Job {
    /// What this job is to do.
    pub fn spec(&self) -> Result<JobSpec, String> {
        JobSpec::parse(&self.kind, &self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_stored_as_kind_and_payload_and_read_back() {
        let index = JobSpec::index(vec!["a".into(), "b".into()]);
        let job = NewJob::of(&index, Some("shop"));
        assert_eq!(job.kind, "batch_index_products");
        assert_eq!(job.payload, serde_json::json!({"external_ids": ["a", "b"]}));
        assert_eq!(job.tenant.as_deref(), Some("shop"));
        assert_eq!(JobSpec::parse(&job.kind, &job.payload), Ok(index));
        assert_eq!(JobSpec::index(vec!["a".into()]).kind(), JobKind::IndexProduct);
        let reindex = NewJob::of(&JobSpec::ReindexAll { tenant: None }, None);
        assert_eq!((reindex.kind.as_str(), reindex.tenant), ("reindex_all", None));
        assert_eq!(reindex.payload, serde_json::json!({"tenant": null}));
        // Payloads written by earlier versions read back the same.
        assert_eq!(
            JobSpec::parse("reindex_all", &serde_json::json!({"tenant": "shop"})),
            Ok(JobSpec::ReindexAll {
                tenant: Some("shop".into())
            })
        );
        assert!(JobSpec::parse("index_product", &serde_json::json!({})).is_err());
        assert!(JobSpec::parse("no_such_kind", &serde_json::json!({})).is_err());
        for kind in JobKind::ALL {
            assert!(!kind.as_str().is_empty());
        }
    }
}
