//! The one contract every [`Catalog`] backend passes, in one part per
//! store trait. Each backend runs each part as its own test on a fresh
//! catalog, so one failing part does not hide the others; the cases are
//! plain `async fn`s over `&dyn Catalog` so a failure names the behaviour
//! that broke.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::json;

use chrono::{DateTime, Duration, Utc};

use super::{
    ApiKeyRecord, Catalog, IndexUpdate, JobOutcome, JobStatus, NewJob, NewPluginVersion, QueryStat,
    QueryStatsKind, SearchLog, StoreError,
};
use crate::model::{IndexStatus, ProductFields, now};

/// Tenants, API keys and the tenant generation ([`super::TenantStore`]).
pub async fn tenants_and_keys(c: &dyn Catalog) {
    ping_answers(c).await;
    default_tenant_exists(c).await;
    tenants_are_created_once_and_listed(c).await;
    api_keys_round_trip_and_delete_within_their_tenant(c).await;
    every_product_write_bumps_the_tenant_generation(c).await;
    tenant_limits_round_trip(c).await;
}

async fn tenant_limits_round_trip(c: &dyn Catalog) {
    c.create_tenant("limited", "Limited").await.unwrap();
    assert_eq!(
        c.tenant_limits("limited").await.unwrap(),
        Some(serde_json::json!({}))
    );
    let limits = serde_json::json!({"quotas": {"max_products": 3}, "rate_limits": {"search": {"per_second": 2.5, "burst": 4}}});
    assert!(c.set_tenant_limits("limited", &limits).await.unwrap());
    assert_eq!(c.tenant_limits("limited").await.unwrap(), Some(limits.clone()));
    assert_eq!(c.tenant_limits("nobody").await.unwrap(), None);
    assert!(!c.set_tenant_limits("nobody", &limits).await.unwrap());
}

/// Products and their indexing state ([`super::ProductStore`]).
pub async fn products(c: &dyn Catalog) {
    products_round_trip_every_field_exactly(c).await;
    duplicate_external_id_is_a_conflict_and_changes_nothing(c).await;
    create_enqueues_an_index_job_atomically(c).await;
    same_external_id_in_two_tenants_are_two_products(c).await;
    listing_pages_in_insertion_order_with_category_filter(c).await;
    update_replaces_fields_and_reindexes_only_when_asked(c).await;
    update_with_stale_version_is_a_conflict(c).await;
    update_of_missing_product_is_not_found(c).await;
    uploaded_images_survive_field_writes_and_reindex(c).await;
    upsert_creates_and_replaces_in_one_transaction(c).await;
    batched_read_returns_only_the_tenants_products(c).await;
    delete_removes_only_that_product(c).await;
    index_outcomes_apply_only_to_the_indexed_version(c).await;
}

/// The job queue ([`super::JobStore`]).
pub async fn jobs(c: &dyn Catalog) {
    jobs_are_claimed_by_one_worker_and_finished_by_it(c).await;
    claims_respect_kinds_and_run_after(c).await;
    expired_leases_are_reclaimed_and_the_old_worker_is_fenced_off(c).await;
    a_worker_dying_on_the_last_attempt_fails_the_job(c).await;
    retries_wait_for_run_after_and_stop_at_max_attempts(c).await;
    cancellation_stops_queued_and_running_jobs_only(c).await;
    released_jobs_return_to_the_queue_without_losing_an_attempt(c).await;
    concurrent_claims_never_hand_out_a_job_twice(c).await;
    claims_can_be_one_tenants(c).await;
    jobs_list_newest_first_by_tenant_and_status(c).await;
}

/// Search logs and query statistics ([`super::SearchLogStore`]).
pub async fn search_logs(c: &dyn Catalog) {
    search_logs_feed_per_tenant_query_stats(c).await;
}

/// Plugin versions and activation ([`super::PluginStore`]).
pub async fn plugins(c: &dyn Catalog) {
    plugin_versions_activation_and_deletion(c).await;
}

pub(crate) fn fields(title: &str) -> ProductFields {
    ProductFields {
        title: title.to_owned(),
        description: None,
        category: None,
        price: None,
        currency: None,
        image_url: None,
        tags: Vec::new(),
        in_stock: true,
        metadata: serde_json::Map::new(),
    }
}

fn full_fields() -> ProductFields {
    ProductFields {
        title: "Red leather ankle boots — “Ünïcode”".into(),
        description: Some("Line one\nLine two\twith a tab".into()),
        category: Some("shoes".into()),
        price: Some(Decimal::from_str("1234567.890").unwrap()),
        currency: Some("EUR".into()),
        image_url: Some("https://img.example.com/boots.jpg?size=large".into()),
        tags: vec!["leather".into(), "red".into()],
        in_stock: false,
        metadata: json!({"sizes": [38, 39.5], "nested": {"a": null, "b": true}, "big": 12345678901234i64})
            .as_object()
            .cloned()
            .unwrap(),
    }
}

fn job(tenant: &str) -> NewJob {
    NewJob::new("index_product", tenant, json!({"external_ids": ["x"]}))
}

async fn tenant(c: &dyn Catalog, id: &str) {
    c.create_tenant(id, &format!("Tenant {id}")).await.unwrap();
}

async fn ping_answers(c: &dyn Catalog) {
    c.ping().await.unwrap();
}

async fn default_tenant_exists(c: &dyn Catalog) {
    let t = c.get_tenant("default").await.unwrap().expect("default tenant");
    assert_eq!(t.id, "default");
}

async fn tenants_are_created_once_and_listed(c: &dyn Catalog) {
    let t = c.create_tenant("acme", "Acme Inc.").await.unwrap();
    assert_eq!(c.get_tenant("acme").await.unwrap(), Some(t.clone()));
    // A conflict written for people: it names the tenant, not the database's rule.
    match c.create_tenant("acme", "Other").await {
        Err(StoreError::Conflict(m)) => {
            assert!(
                m.contains("acme") && !m.contains("UNIQUE") && !m.contains("SQLSTATE"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get_tenant("acme").await.unwrap().unwrap().name, "Acme Inc.");
    let ids: Vec<String> = c
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert!(ids.contains(&"acme".to_owned()) && ids.contains(&"default".to_owned()));
    assert!(c.get_tenant("nobody").await.unwrap().is_none());
}

async fn api_keys_round_trip_and_delete_within_their_tenant(c: &dyn Catalog) {
    tenant(c, "keys-a").await;
    let key = ApiKeyRecord {
        id: "k1".into(),
        tenant: "keys-a".into(),
        secret_hash: "ab".repeat(32),
        scopes: vec!["search".into(), "write".into()],
        label: Some("frontend".into()),
        created_at: now(),
    };
    c.create_api_key(&key).await.unwrap();
    assert_eq!(c.get_api_key("k1").await.unwrap(), Some(key));
    assert!(c.get_api_key("k2").await.unwrap().is_none());
    // Another tenant cannot delete it.
    assert!(!c.delete_api_key("default", "k1").await.unwrap());
    assert!(c.get_api_key("k1").await.unwrap().is_some());
    assert!(c.delete_api_key("keys-a", "k1").await.unwrap());
    assert!(c.get_api_key("k1").await.unwrap().is_none());
    assert!(!c.delete_api_key("keys-a", "k1").await.unwrap());
}

async fn products_round_trip_every_field_exactly(c: &dyn Catalog) {
    tenant(c, "rt").await;
    let f = full_fields();
    let created = c.create_product("rt", "SKU/1 é", &f, &job("rt")).await.unwrap();
    assert_eq!(created.index_status, IndexStatus::Pending);
    assert_eq!(created.version, 1);
    let got = c.get_product("rt", "SKU/1 é").await.unwrap().expect("stored");
    assert_eq!(got, created);
    assert_eq!(got.fields.price.unwrap().to_string(), "1234567.890");
    assert!(
        c.get_product("rt", "sku/1 é").await.unwrap().is_none(),
        "ids are case-sensitive"
    );
}

async fn duplicate_external_id_is_a_conflict_and_changes_nothing(c: &dyn Catalog) {
    tenant(c, "dup").await;
    let first = c
        .create_product("dup", "a", &fields("first"), &job("dup"))
        .await
        .unwrap();
    let again = job("dup");
    let err = c
        .create_product("dup", "a", &fields("second"), &again)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(c.get_product("dup", "a").await.unwrap(), Some(first));
    assert!(
        c.get_job(&again.id).await.unwrap().is_none(),
        "no job for a failed write"
    );
}

async fn create_enqueues_an_index_job_atomically(c: &dyn Catalog) {
    tenant(c, "jobs").await;
    let j = NewJob::new("index_product", "jobs", json!({"external_ids": ["p"]}));
    c.create_product("jobs", "p", &fields("p"), &j).await.unwrap();
    let stored = c.get_job(&j.id).await.unwrap().expect("job enqueued");
    assert_eq!(stored.kind, "index_product");
    assert_eq!(stored.tenant.as_deref(), Some("jobs"));
    assert_eq!(stored.status, JobStatus::Queued);
    assert_eq!(stored.attempts, 0);
    assert_eq!(stored.max_attempts, NewJob::DEFAULT_MAX_ATTEMPTS);
    assert_eq!(stored.payload, json!({"external_ids": ["p"]}));
    assert!(stored.lease_owner.is_none() && stored.result.is_none());
}

async fn same_external_id_in_two_tenants_are_two_products(c: &dyn Catalog) {
    tenant(c, "iso-a").await;
    tenant(c, "iso-b").await;
    c.create_product("iso-a", "same", &fields("A"), &job("iso-a"))
        .await
        .unwrap();
    c.create_product("iso-b", "same", &fields("B"), &job("iso-b"))
        .await
        .unwrap();
    assert_eq!(
        c.get_product("iso-a", "same")
            .await
            .unwrap()
            .unwrap()
            .fields
            .title,
        "A"
    );
    assert_eq!(
        c.get_product("iso-b", "same")
            .await
            .unwrap()
            .unwrap()
            .fields
            .title,
        "B"
    );
    assert_eq!(c.count_products("iso-a").await.unwrap(), 1);
}

async fn listing_pages_in_insertion_order_with_category_filter(c: &dyn Catalog) {
    tenant(c, "list").await;
    for i in 0..7 {
        let mut f = fields(&format!("p{i}"));
        f.category = Some(if i % 2 == 0 { "even" } else { "odd" }.into());
        c.create_product("list", &format!("p{i}"), &f, &job("list"))
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = c.list_products("list", None, after, 3).await.unwrap();
        assert!(page.products.len() <= 3);
        seen.extend(page.products.iter().map(|p| p.external_id.clone()));
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("p{i}")).collect::<Vec<_>>());
    let odd = c.list_products("list", Some("odd"), None, 10).await.unwrap();
    assert_eq!(
        odd.products
            .iter()
            .map(|p| p.external_id.as_str())
            .collect::<Vec<_>>(),
        ["p1", "p3", "p5"]
    );
    assert_eq!(odd.next, None);
    // An exactly full last page says there is nothing more.
    let exact = c.list_products("list", Some("odd"), None, 3).await.unwrap();
    assert_eq!((exact.products.len(), exact.next), (3, None));
    assert!(
        c.list_products("list", Some("none"), None, 3)
            .await
            .unwrap()
            .products
            .is_empty()
    );
}

async fn update_replaces_fields_and_reindexes_only_when_asked(c: &dyn Catalog) {
    tenant(c, "upd").await;
    let created = c
        .create_product("upd", "u", &fields("old"), &job("upd"))
        .await
        .unwrap();
    let mut f = full_fields();
    f.title = "new".into();
    let j = job("upd");
    let updated = c.update_product("upd", "u", &f, Some(1), Some(&j)).await.unwrap();
    assert_eq!(updated.fields, f);
    assert_eq!(updated.version, 2);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);
    assert_eq!(updated.index_status, IndexStatus::Pending);
    assert!(c.get_job(&j.id).await.unwrap().is_some());
    assert_eq!(c.get_product("upd", "u").await.unwrap(), Some(updated.clone()));
    // Metadata-only change: no job.
    f.metadata.insert("note".into(), json!("x"));
    let again = c.update_product("upd", "u", &f, None, None).await.unwrap();
    assert_eq!(again.version, 3);
    assert_eq!(again.fields.metadata["note"], json!("x"));
}

async fn update_with_stale_version_is_a_conflict(c: &dyn Catalog) {
    tenant(c, "stale").await;
    let p = c
        .create_product("stale", "s", &fields("v1"), &job("stale"))
        .await
        .unwrap();
    c.update_product("stale", "s", &fields("v2"), Some(p.version), None)
        .await
        .unwrap();
    let err = c
        .update_product("stale", "s", &fields("v3"), Some(p.version), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(
        c.get_product("stale", "s").await.unwrap().unwrap().fields.title,
        "v2"
    );
}

async fn update_of_missing_product_is_not_found(c: &dyn Catalog) {
    let err = c
        .update_product("default", "missing", &fields("x"), None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn uploaded_images_survive_field_writes_and_reindex(c: &dyn Catalog) {
    tenant(c, "img").await;
    c.create_product("img", "p", &fields("with image"), &job("img"))
        .await
        .unwrap();
    c.create_product("img", "q", &fields("neighbour"), &job("img"))
        .await
        .unwrap();
    let j = job("img");
    let p = c
        .set_product_image("img", "p", Some("images/ab/abcd"), &j)
        .await
        .unwrap();
    assert_eq!(p.image_key.as_deref(), Some("images/ab/abcd"));
    assert_eq!((p.version, p.index_status), (2, IndexStatus::Pending));
    assert!(c.get_job(&j.id).await.unwrap().is_some());
    assert_eq!(c.get_product("img", "p").await.unwrap(), Some(p.clone()));
    assert_eq!(c.get_product("img", "q").await.unwrap().unwrap().image_key, None);
    // Writes of the fields, single or batched, keep the uploaded image.
    let updated = c
        .update_product("img", "p", &fields("renamed"), None, None)
        .await
        .unwrap();
    assert_eq!(updated.image_key.as_deref(), Some("images/ab/abcd"));
    c.upsert_products("img", &[("p".to_owned(), fields("batched"))], &job("img"))
        .await
        .unwrap();
    let got = c.get_product("img", "p").await.unwrap().unwrap();
    assert_eq!(
        (got.fields.title.as_str(), got.image_key.as_deref()),
        ("batched", Some("images/ab/abcd"))
    );
    let cleared = c.set_product_image("img", "p", None, &job("img")).await.unwrap();
    assert_eq!(cleared.image_key, None);
    let err = c
        .set_product_image("img", "missing", Some("images/ab/abcd"), &job("img"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound), "{err:?}");
}

async fn upsert_creates_and_replaces_in_one_transaction(c: &dyn Catalog) {
    tenant(c, "ups").await;
    c.create_product("ups", "a", &fields("old a"), &job("ups"))
        .await
        .unwrap();
    let items: Vec<(String, ProductFields)> = (0..50)
        .map(|i| {
            let mut f = fields(&format!("item {i}"));
            f.price = Some(Decimal::new(i * 101, 2));
            (if i == 0 { "a".to_owned() } else { format!("b{i}") }, f)
        })
        .collect();
    let j = NewJob::new("batch_index_products", "ups", json!({"count": 50}));
    c.upsert_products("ups", &items, &j).await.unwrap();
    assert_eq!(c.count_products("ups").await.unwrap(), 50);
    let a = c.get_product("ups", "a").await.unwrap().unwrap();
    assert_eq!((a.fields.title.as_str(), a.version), ("item 0", 2));
    let b7 = c.get_product("ups", "b7").await.unwrap().unwrap();
    assert_eq!(b7.fields.price.unwrap().to_string(), "7.07");
    assert_eq!(
        c.get_job(&j.id).await.unwrap().unwrap().kind,
        "batch_index_products"
    );
    // The first listed product keeps its place: replacing is not re-inserting.
    let first = c.list_products("ups", None, None, 1).await.unwrap();
    assert_eq!(first.products[0].external_id, "a");
}

async fn batched_read_returns_only_the_tenants_products(c: &dyn Catalog) {
    tenant(c, "hyd").await;
    for id in ["h1", "h2", "h3"] {
        c.create_product("hyd", id, &fields(id), &job("hyd"))
            .await
            .unwrap();
    }
    let ids: Vec<String> = ["h3", "h1", "nope", "same"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut got: Vec<String> = c
        .get_products("hyd", &ids)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.external_id)
        .collect();
    got.sort();
    assert_eq!(got, ["h1", "h3"], "`same` belongs to other tenants");
    assert!(c.get_products("hyd", &[]).await.unwrap().is_empty());
    let many: Vec<String> = (0..40_000)
        .map(|i| format!("x{i}"))
        .chain(["h2".into()])
        .collect();
    assert_eq!(c.get_products("hyd", &many).await.unwrap().len(), 1);
}

async fn delete_removes_only_that_product(c: &dyn Catalog) {
    tenant(c, "del").await;
    c.create_product("del", "d1", &fields("1"), &job("del"))
        .await
        .unwrap();
    c.create_product("del", "d2", &fields("2"), &job("del"))
        .await
        .unwrap();
    assert!(
        !c.delete_product("default", "d1", &job("default")).await.unwrap(),
        "other tenant"
    );
    let cleanup = job("del");
    assert!(c.delete_product("del", "d1", &cleanup).await.unwrap());
    assert!(
        c.get_job(&cleanup.id).await.unwrap().is_some(),
        "the vector cleanup is enqueued with it"
    );
    let none = job("del");
    assert!(!c.delete_product("del", "d1", &none).await.unwrap());
    assert!(
        c.get_job(&none.id).await.unwrap().is_none(),
        "nothing to clean up"
    );
    assert!(c.get_product("del", "d1").await.unwrap().is_none());
    assert!(c.get_product("del", "d2").await.unwrap().is_some());
}

fn kind_job(kind: &str, tenant: &str) -> NewJob {
    NewJob::new(kind, tenant, json!({"n": 1}))
}

fn kinds(k: &str) -> Vec<String> {
    vec![k.to_owned()]
}

fn at(t: DateTime<Utc>, secs: i64) -> DateTime<Utc> {
    t + Duration::seconds(secs)
}

async fn jobs_are_claimed_by_one_worker_and_finished_by_it(c: &dyn Catalog) {
    let j = kind_job("t_claim", "default");
    c.enqueue_job(&j).await.unwrap();
    let t = now();
    let got = c
        .claim_jobs("w1", &kinds("t_claim"), t, at(t, 30), 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    let job = &got[0];
    assert_eq!(
        (job.id.as_str(), job.status, job.attempts),
        (j.id.as_str(), JobStatus::Running, 1)
    );
    assert_eq!(job.lease_owner.as_deref(), Some("w1"));
    assert!(
        c.claim_jobs("w2", &kinds("t_claim"), t, at(t, 30), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        c.heartbeat_job(&j.id, "w1", t, at(t, 60), Some((3, 10)))
            .await
            .unwrap()
    );
    assert!(!c.heartbeat_job(&j.id, "w2", t, at(t, 60), None).await.unwrap());
    let seen = c.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!((seen.progress_done, seen.progress_total), (3, 10));
    assert!(
        !c.finish_job(&j.id, "w2", t, &JobOutcome::Succeeded(json!({})))
            .await
            .unwrap()
    );
    assert!(
        c.finish_job(&j.id, "w1", t, &JobOutcome::Succeeded(json!({"ok": 1})))
            .await
            .unwrap()
    );
    let done = c.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(
        (done.status, done.result),
        (JobStatus::Succeeded, Some(json!({"ok": 1})))
    );
    assert!(done.lease_owner.is_none());
    assert!(
        !c.finish_job(&j.id, "w1", t, &JobOutcome::Failed("late".into()))
            .await
            .unwrap()
    );
    assert!(
        c.claim_jobs("w1", &kinds("t_claim"), at(t, 999), at(t, 1030), 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn claims_respect_kinds_and_run_after(c: &dyn Catalog) {
    let a = kind_job("t_kind_a", "default");
    c.enqueue_job(&a).await.unwrap();
    c.enqueue_job(&kind_job("t_kind_b", "default")).await.unwrap();
    let t = now();
    let got = c
        .claim_jobs("w", &kinds("t_kind_a"), t, at(t, 30), 10)
        .await
        .unwrap();
    assert_eq!(
        got.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        [a.id.as_str()]
    );
    // A job queued "now" is not runnable in the past.
    c.enqueue_job(&kind_job("t_kind_c", "default")).await.unwrap();
    assert!(
        c.claim_jobs("w", &kinds("t_kind_c"), at(t, -60), t, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        c.claim_jobs("w", &kinds("t_kind_c"), at(t, 1), at(t, 30), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn expired_leases_are_reclaimed_and_the_old_worker_is_fenced_off(c: &dyn Catalog) {
    let j = kind_job("t_lease", "default");
    c.enqueue_job(&j).await.unwrap();
    let t = now();
    c.claim_jobs("dead", &kinds("t_lease"), t, at(t, 10), 1)
        .await
        .unwrap();
    // Before expiry nobody else gets it; after, another worker does.
    assert!(
        c.claim_jobs("w2", &kinds("t_lease"), at(t, 5), at(t, 15), 1)
            .await
            .unwrap()
            .is_empty()
    );
    let got = c
        .claim_jobs("w2", &kinds("t_lease"), at(t, 11), at(t, 41), 1)
        .await
        .unwrap();
    assert_eq!((got.len(), got[0].attempts), (1, 2));
    assert!(
        !c.heartbeat_job(&j.id, "dead", at(t, 12), at(t, 42), None)
            .await
            .unwrap()
    );
    assert!(
        !c.finish_job(&j.id, "dead", at(t, 12), &JobOutcome::Succeeded(json!(1)))
            .await
            .unwrap()
    );
    assert!(
        c.finish_job(&j.id, "w2", at(t, 12), &JobOutcome::Succeeded(json!(2)))
            .await
            .unwrap()
    );
    assert_eq!(c.get_job(&j.id).await.unwrap().unwrap().result, Some(json!(2)));
}

async fn a_worker_dying_on_the_last_attempt_fails_the_job(c: &dyn Catalog) {
    let mut j = kind_job("t_dying", "default");
    j.max_attempts = 1;
    c.enqueue_job(&j).await.unwrap();
    let t = now();
    c.claim_jobs("dead", &kinds("t_dying"), t, at(t, 10), 1)
        .await
        .unwrap();
    assert!(
        c.claim_jobs("w2", &kinds("t_dying"), at(t, 11), at(t, 41), 1)
            .await
            .unwrap()
            .is_empty()
    );
    let failed = c.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(failed.status, JobStatus::Failed);
    assert_eq!(failed.last_error.as_deref(), Some(super::LEASE_EXPIRED_ERROR));
}

async fn retries_wait_for_run_after_and_stop_at_max_attempts(c: &dyn Catalog) {
    let mut j = kind_job("t_retry", "default");
    j.max_attempts = 2;
    c.enqueue_job(&j).await.unwrap();
    let t = now();
    c.claim_jobs("w", &kinds("t_retry"), t, at(t, 30), 1)
        .await
        .unwrap();
    let retry = JobOutcome::Retry {
        error: "timeout".into(),
        run_after: at(t, 10),
    };
    assert!(c.finish_job(&j.id, "w", t, &retry).await.unwrap());
    let queued = c.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(
        (queued.status, queued.last_error.as_deref()),
        (JobStatus::Queued, Some("timeout"))
    );
    assert!(
        c.claim_jobs("w", &kinds("t_retry"), at(t, 9), at(t, 39), 1)
            .await
            .unwrap()
            .is_empty()
    );
    let again = c
        .claim_jobs("w", &kinds("t_retry"), at(t, 10), at(t, 40), 1)
        .await
        .unwrap();
    assert_eq!(again[0].attempts, 2);
    assert!(c.finish_job(&j.id, "w", at(t, 11), &retry).await.unwrap());
    let failed = c.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.attempts), (JobStatus::Failed, 2));
    // A fatal error fails at once whatever attempts remain.
    let f = kind_job("t_fatal", "default");
    c.enqueue_job(&f).await.unwrap();
    let t = now();
    assert_eq!(
        c.claim_jobs("w", &kinds("t_fatal"), t, at(t, 30), 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        c.finish_job(&f.id, "w", t, &JobOutcome::Failed("404".into()))
            .await
            .unwrap()
    );
    assert_eq!(c.get_job(&f.id).await.unwrap().unwrap().status, JobStatus::Failed);
}

async fn cancellation_stops_queued_and_running_jobs_only(c: &dyn Catalog) {
    let t = now();
    let q = kind_job("t_cancel_q", "default");
    c.enqueue_job(&q).await.unwrap();
    assert_eq!(c.cancel_job(&q.id, t).await.unwrap().status, JobStatus::Cancelled);
    assert!(
        c.claim_jobs("w", &kinds("t_cancel_q"), at(t, 1), at(t, 30), 1)
            .await
            .unwrap()
            .is_empty()
    );
    let r = kind_job("t_cancel_r", "default");
    c.enqueue_job(&r).await.unwrap();
    c.claim_jobs("w", &kinds("t_cancel_r"), t, at(t, 30), 1)
        .await
        .unwrap();
    assert_eq!(c.cancel_job(&r.id, t).await.unwrap().status, JobStatus::Cancelled);
    assert!(
        !c.heartbeat_job(&r.id, "w", t, at(t, 30), None).await.unwrap(),
        "the worker learns of it"
    );
    assert!(
        !c.finish_job(&r.id, "w", t, &JobOutcome::Succeeded(json!(0)))
            .await
            .unwrap()
    );
    assert_eq!(
        c.get_job(&r.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    assert!(matches!(
        c.cancel_job(&r.id, t).await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        c.cancel_job("no-such-job", t).await,
        Err(StoreError::NotFound)
    ));
}

async fn released_jobs_return_to_the_queue_without_losing_an_attempt(c: &dyn Catalog) {
    let j = kind_job("t_release", "default");
    c.enqueue_job(&j).await.unwrap();
    let t = now();
    c.claim_jobs("leaving", &kinds("t_release"), t, at(t, 300), 1)
        .await
        .unwrap();
    assert_eq!(c.release_jobs("leaving", t).await.unwrap(), 1);
    let back = c.get_job(&j.id).await.unwrap().unwrap();
    assert_eq!(
        (back.status, back.attempts, back.lease_owner),
        (JobStatus::Queued, 0, None)
    );
    assert_eq!(
        c.claim_jobs("next", &kinds("t_release"), at(t, 1), at(t, 30), 1)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn concurrent_claims_never_hand_out_a_job_twice(c: &dyn Catalog) {
    for _ in 0..24 {
        c.enqueue_job(&kind_job("t_race", "default")).await.unwrap();
    }
    let t = now();
    let k = kinds("t_race");
    let mut all = Vec::new();
    for _ in 0..4 {
        let (a, b, d) = tokio::join!(
            c.claim_jobs("wa", &k, t, at(t, 30), 3),
            c.claim_jobs("wb", &k, t, at(t, 30), 3),
            c.claim_jobs("wc", &k, t, at(t, 30), 3),
        );
        for jobs in [a.unwrap(), b.unwrap(), d.unwrap()] {
            all.extend(jobs.into_iter().map(|j| j.id));
        }
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!((all.len(), n), (24, 24), "every job claimed exactly once");
}

async fn claims_can_be_one_tenants(c: &dyn Catalog) {
    tenant(c, "claim_a").await;
    tenant(c, "claim_b").await;
    for t in ["claim_a", "claim_b", "claim_a", "claim_b"] {
        c.enqueue_job(&kind_job("t_by_tenant", t)).await.unwrap();
    }
    let t = now();
    let k = kinds("t_by_tenant");
    let jobs = c
        .claim_jobs_of("w", &k, Some("claim_b"), at(t, 1), at(t, 30), 10)
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j.tenant.as_deref() == Some("claim_b")),
        "{jobs:?}"
    );
    let rest = c.claim_jobs("w", &k, at(t, 1), at(t, 30), 10).await.unwrap();
    assert_eq!(rest.len(), 2);
    assert!(
        rest.iter().all(|j| j.tenant.as_deref() == Some("claim_a")),
        "{rest:?}"
    );
}

async fn jobs_list_newest_first_by_tenant_and_status(c: &dyn Catalog) {
    tenant(c, "joblist").await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let j = kind_job("t_list", "joblist");
        c.enqueue_job(&j).await.unwrap();
        ids.push(j.id);
    }
    c.cancel_job(&ids[0], now()).await.unwrap();
    let listed: Vec<String> = c
        .list_jobs(Some("joblist"), None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    let cancelled = c
        .list_jobs(Some("joblist"), Some(JobStatus::Cancelled), 10)
        .await
        .unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(c.list_jobs(Some("joblist"), None, 2).await.unwrap().len(), 2);
    assert!(c.list_jobs(Some("nobody"), None, 10).await.unwrap().is_empty());
    // A job of no tenant is listed apart from every tenant's.
    let global = NewJob::global("t_list_global", json!({}));
    c.enqueue_job(&global).await.unwrap();
    assert_eq!(c.get_job(&global.id).await.unwrap().unwrap().tenant, None);
    let globals = c.list_jobs(None, None, 100).await.unwrap();
    assert!(globals.iter().any(|j| j.id == global.id), "{globals:?}");
    assert!(globals.iter().all(|j| j.tenant.is_none()), "{globals:?}");
    let of_tenant = c.list_jobs(Some("joblist"), None, 10).await.unwrap();
    assert!(of_tenant.iter().all(|j| j.id != global.id));
}

async fn index_outcomes_apply_only_to_the_indexed_version(c: &dyn Catalog) {
    tenant(c, "idx").await;
    let a = c
        .create_product("idx", "a", &fields("a"), &job("idx"))
        .await
        .unwrap();
    let b = c
        .create_product("idx", "b", &fields("b"), &job("idx"))
        .await
        .unwrap();
    // b changes after its version 1 was picked up for indexing.
    c.update_product("idx", "b", &fields("b2"), None, Some(&job("idx")))
        .await
        .unwrap();
    let updates = vec![
        IndexUpdate {
            external_id: "a".into(),
            version: a.version,
            status: IndexStatus::Indexed,
            error: None,
        },
        IndexUpdate {
            external_id: "b".into(),
            version: b.version,
            status: IndexStatus::Failed,
            error: Some("stale".into()),
        },
        IndexUpdate {
            external_id: "gone".into(),
            version: 1,
            status: IndexStatus::Indexed,
            error: None,
        },
    ];
    assert_eq!(c.set_index_status("idx", &updates).await.unwrap(), 1);
    let a2 = c.get_product("idx", "a").await.unwrap().unwrap();
    assert_eq!(
        (a2.index_status, a2.version, a2.updated_at),
        (IndexStatus::Indexed, a.version, a.updated_at)
    );
    let b2 = c.get_product("idx", "b").await.unwrap().unwrap();
    assert_eq!((b2.index_status, b2.index_error), (IndexStatus::Pending, None));
    let failed = IndexUpdate {
        external_id: "b".into(),
        version: b2.version,
        status: IndexStatus::Failed,
        error: Some("image answered 404".into()),
    };
    c.set_index_status("idx", &[failed]).await.unwrap();
    let b3 = c.get_product("idx", "b").await.unwrap().unwrap();
    assert_eq!(
        (b3.index_status, b3.index_error.as_deref()),
        (IndexStatus::Failed, Some("image answered 404"))
    );
}

async fn search_logs_feed_per_tenant_query_stats(c: &dyn Catalog) {
    c.create_tenant("t_logs", "logs").await.unwrap();
    let t0 = now();
    let log = |text: Option<&str>, results: i32, ms: f64, at: DateTime<Utc>| SearchLog {
        tenant: "t_logs".into(),
        query_type: if text.is_some() { "text" } else { "image" }.into(),
        query_text: text.map(str::to_owned),
        query_image_url: None,
        results_count: results,
        execution_time_ms: ms,
        user_id: Some("u1".into()),
        session_id: None,
        created_at: at,
    };
    let mut logs = Vec::new();
    // "boots": 20 searches taking 1..=20 ms, 10 results each.
    for i in 1..=20 {
        logs.push(log(Some("boots"), 10, f64::from(i), t0));
    }
    // "hat": 3 searches, one with no result.
    logs.push(log(Some("hat"), 4, 5.0, t0));
    logs.push(log(Some("hat"), 2, 7.0, t0));
    logs.push(log(Some("hat"), 0, 9.0, t0));
    // Nothing found for "unicorn", twice; and an image search (no text).
    logs.push(log(Some("unicorn"), 0, 3.0, t0));
    logs.push(log(Some("unicorn"), 0, 4.0, t0));
    logs.push(log(None, 5, 30.0, t0));
    // Old and other-tenant searches do not count.
    logs.push(log(Some("old"), 1, 1.0, at(t0, -86_400 * 30)));
    let mut other = log(Some("boots"), 1, 1.0, t0);
    other.tenant = "default".into();
    logs.push(other);
    c.insert_search_logs(&logs).await.unwrap();
    c.insert_search_logs(&[]).await.unwrap();

    let since = at(t0, -3600);
    let top = c
        .query_stats("t_logs", QueryStatsKind::Top, since, 10)
        .await
        .unwrap();
    assert_eq!(
        top,
        vec![
            QueryStat {
                query_text: "boots".into(),
                count: 20,
                avg_results: 10.0,
                p95_ms: 19.0
            },
            QueryStat {
                query_text: "hat".into(),
                count: 3,
                avg_results: 2.0,
                p95_ms: 9.0
            },
            QueryStat {
                query_text: "unicorn".into(),
                count: 2,
                avg_results: 0.0,
                p95_ms: 4.0
            },
        ]
    );
    let top1 = c
        .query_stats("t_logs", QueryStatsKind::Top, since, 1)
        .await
        .unwrap();
    assert_eq!(top1.len(), 1);
    let zero = c
        .query_stats("t_logs", QueryStatsKind::ZeroResults, since, 10)
        .await
        .unwrap();
    assert_eq!(
        zero.iter()
            .map(|q| (q.query_text.as_str(), q.count))
            .collect::<Vec<_>>(),
        [("unicorn", 2), ("hat", 1)]
    );
    let all_time = c
        .query_stats("t_logs", QueryStatsKind::Top, at(t0, -86_400 * 365), 10)
        .await
        .unwrap();
    assert_eq!(all_time.len(), 4);
    assert!(
        c.query_stats("nobody", QueryStatsKind::Top, since, 10)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn every_product_write_bumps_the_tenant_generation(c: &dyn Catalog) {
    c.create_tenant("t_gen", "gen").await.unwrap();
    c.create_tenant("t_gen2", "gen2").await.unwrap();
    let g = |t: &'static str| async move { c.tenant_generation(t).await.unwrap() };
    let (g0, other0) = (g("t_gen").await, g("t_gen2").await);
    let job = |id: &str| NewJob::new("index_product", "t_gen", json!({"external_ids": [id]}));
    c.create_product("t_gen", "a", &fields("A"), &job("a"))
        .await
        .unwrap();
    let g1 = g("t_gen").await;
    assert!(g1 > g0);
    c.update_product("t_gen", "a", &fields("A2"), None, None)
        .await
        .unwrap();
    let g2 = g("t_gen").await;
    assert!(g2 > g1);
    let p = c.get_products("t_gen", &["a".into()]).await.unwrap().remove(0);
    c.set_index_status(
        "t_gen",
        &[IndexUpdate {
            external_id: "a".into(),
            version: p.version,
            status: IndexStatus::Indexed,
            error: None,
        }],
    )
    .await
    .unwrap();
    let g3 = g("t_gen").await;
    assert!(g3 > g2);
    c.bump_generation("t_gen").await.unwrap();
    let g4 = g("t_gen").await;
    assert!(g4 > g3);
    assert!(c.delete_product("t_gen", "a", &job("a")).await.unwrap());
    assert!(g("t_gen").await > g4);
    // Other tenants are untouched; unknown tenants read 0.
    assert_eq!(g("t_gen2").await, other0);
    assert_eq!(g("nobody").await, 0);
}

fn plugin(tenant: &str, name: &str, world: &str, digest: &str) -> NewPluginVersion {
    NewPluginVersion {
        tenant: tenant.into(),
        name: name.into(),
        world: world.into(),
        digest: digest.into(),
        size_bytes: 1234,
    }
}

async fn plugin_versions_activation_and_deletion(c: &dyn Catalog) {
    c.create_tenant("plug-a", "A").await.unwrap();
    c.create_tenant("plug-b", "B").await.unwrap();
    // Versions count from 1 per name and tenant.
    let v1 = c
        .create_plugin_version(&plugin("plug-a", "boost", "ranker", "d1"))
        .await
        .unwrap();
    let v2 = c
        .create_plugin_version(&plugin("plug-a", "boost", "ranker", "d2"))
        .await
        .unwrap();
    let other = c
        .create_plugin_version(&plugin("plug-b", "boost", "ranker", "d9"))
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version, other.version), (1, 2, 1));
    assert!(!v1.active && v1.params.is_empty() && v1.memory_mb.is_none());
    // A name keeps its world.
    assert!(matches!(
        c.create_plugin_version(&plugin("plug-a", "boost", "filter", "d3"))
            .await,
        Err(StoreError::Conflict(_))
    ));
    c.create_plugin_version(&plugin("plug-a", "allow", "filter", "d4"))
        .await
        .unwrap();
    c.create_plugin_version(&plugin("plug-a", "boost2", "ranker", "d5"))
        .await
        .unwrap();
    let listed = c.list_plugins("plug-a").await.unwrap();
    let names: Vec<(String, i64)> = listed.iter().map(|p| (p.name.clone(), p.version)).collect();
    assert_eq!(
        names,
        vec![
            ("allow".into(), 1),
            ("boost".into(), 1),
            ("boost".into(), 2),
            ("boost2".into(), 1)
        ]
    );
    assert_eq!(c.get_plugin("plug-a", "boost").await.unwrap().len(), 2);
    assert!(c.get_plugin("plug-a", "nope").await.unwrap().is_empty());
    assert!(c.active_plugins("plug-a").await.unwrap().is_empty());

    // Activation: one active version per (tenant, world), with parameters,
    // and the tenant's generation moves.
    let g0 = c.tenant_generation("plug-a").await.unwrap();
    let params = json!({"in_stock_boost": "0.2"}).as_object().cloned().unwrap();
    let active = c
        .activate_plugin("plug-a", "boost", 1, &params, Some(32))
        .await
        .unwrap();
    assert!(active.active && active.activated_at.is_some());
    assert_eq!(
        (active.params.clone(), active.memory_mb),
        (params.clone(), Some(32))
    );
    assert!(c.tenant_generation("plug-a").await.unwrap() > g0);
    c.activate_plugin("plug-a", "boost", 2, &serde_json::Map::new(), None)
        .await
        .unwrap();
    c.activate_plugin("plug-a", "allow", 1, &serde_json::Map::new(), None)
        .await
        .unwrap();
    let active: Vec<(String, i64)> = c
        .active_plugins("plug-a")
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version))
        .collect();
    assert_eq!(active, vec![("allow".into(), 1), ("boost".into(), 2)]);
    // Another ranker name takes the ranker slot over.
    c.activate_plugin("plug-a", "boost2", 1, &serde_json::Map::new(), None)
        .await
        .unwrap();
    let rankers: Vec<String> = c
        .active_plugins("plug-a")
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.world == "ranker")
        .map(|p| p.name)
        .collect();
    assert_eq!(rankers, vec!["boost2".to_owned()]);
    // Unknown versions and other tenants' plugins are not found.
    assert!(matches!(
        c.activate_plugin("plug-a", "boost", 9, &serde_json::Map::new(), None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        c.activate_plugin("plug-b", "allow", 1, &serde_json::Map::new(), None)
            .await,
        Err(StoreError::NotFound)
    ));
    assert!(c.active_plugins("plug-b").await.unwrap().is_empty());

    // Deletion removes every version, deactivating first.
    let g1 = c.tenant_generation("plug-a").await.unwrap();
    let removed = c.delete_plugin("plug-a", "boost2").await.unwrap();
    assert_eq!(removed.len(), 1);
    assert!(c.tenant_generation("plug-a").await.unwrap() > g1);
    assert!(c.get_plugin("plug-a", "boost2").await.unwrap().is_empty());
    assert!(
        c.active_plugins("plug-a")
            .await
            .unwrap()
            .iter()
            .all(|p| p.world != "ranker")
    );
    assert!(c.delete_plugin("plug-a", "boost2").await.unwrap().is_empty());
    // The other tenant's plugin of the same name is untouched.
    assert_eq!(c.get_plugin("plug-b", "boost").await.unwrap().len(), 1);
}

/// The change feed and the edges' search logs
/// ([`super::replica::ReplicationStore`]).
pub async fn replication(c: &dyn Catalog) {
    every_replicated_write_is_one_change_in_commit_order(c).await;
    concurrent_writes_are_numbered_without_holes(c).await;
    edge_logs_are_stored_once(c).await;
    generations_are_recorded(c).await;
    superseded_changes_are_compacted(c).await;
}

/// Compaction keeps each entity's latest change only, and a follower at any
/// position still sees every entity changed after it, at the same number.
async fn superseded_changes_are_compacted(c: &dyn Catalog) {
    use std::collections::BTreeMap;
    c.create_tenant("compact", "Compact").await.unwrap();
    let start = c.feed_head().await.unwrap();
    let job = || NewJob::new("index_product", "compact", json!({}));
    for id in ["p1", "p2", "p3"] {
        c.create_product("compact", id, &fields("one"), &job())
            .await
            .unwrap();
    }
    for title in ["two", "three"] {
        c.update_product("compact", "p1", &fields(title), None, None)
            .await
            .unwrap();
    }
    assert!(c.delete_product("compact", "p2", &job()).await.unwrap());
    c.update_product("compact", "p3", &fields("two"), None, None)
        .await
        .unwrap();
    let head = c.feed_head().await.unwrap();
    let only = Some(&["compact".to_owned()][..]);
    let before = c.changes_after(start, 1000, only).await.unwrap();
    assert_eq!(before.len(), 7);
    // Entity → the number of its latest change after `pos`.
    let latest = |changes: &[super::replica::Change], pos: i64| {
        let mut m = BTreeMap::new();
        for ch in changes.iter().filter(|ch| ch.seq > pos) {
            m.insert((ch.kind.as_str(), ch.entity.clone()), ch.seq);
        }
        m
    };
    // In small spans, as the origin's loop does with larger ones.
    let mut at = 0;
    let mut deleted = 0;
    loop {
        let (through, n) = c.compact_changes(at, 2).await.unwrap();
        assert!(through >= at && through <= head);
        deleted += n;
        if through == at {
            break;
        }
        at = through;
    }
    assert_eq!(at, head);
    assert!(deleted >= 4, "p1 twice, p2 and p3 once were superseded");
    let after = c.changes_after(start, 1000, only).await.unwrap();
    assert_eq!(after.len(), 3, "{after:?}");
    assert_eq!(c.feed_head().await.unwrap(), head);
    for pos in std::iter::once(start).chain(before.iter().map(|ch| ch.seq)) {
        assert_eq!(latest(&after, pos), latest(&before, pos), "a follower at {pos}");
    }
    // Nothing left to compact; a later write is compacted by a later pass.
    assert_eq!(c.compact_changes(head, 100).await.unwrap(), (head, 0));
    // A position past the head (a restored catalog) answers the head.
    assert_eq!(c.compact_changes(head + 1_000, 10).await.unwrap(), (head, 0));
    c.update_product("compact", "p1", &fields("four"), None, None)
        .await
        .unwrap();
    let newer = c.feed_head().await.unwrap();
    assert_eq!(c.compact_changes(head, 100).await.unwrap(), (newer, 1));
    let last = c.changes_after(start, 1000, only).await.unwrap();
    assert_eq!(last.len(), 3);
    assert_eq!(last.last().unwrap().seq, newer);
}

async fn every_replicated_write_is_one_change_in_commit_order(c: &dyn Catalog) {
    use super::replica::ChangeKind;
    let start = c.feed_head().await.unwrap();
    c.create_tenant("feed-a", "A").await.unwrap();
    c.create_tenant("feed-b", "B").await.unwrap();
    let job = |t: &str| NewJob::new("index_product", t, json!({}));
    c.create_product("feed-a", "p1", &fields("one"), &job("feed-a"))
        .await
        .unwrap();
    c.create_product("feed-b", "p1", &fields("other"), &job("feed-b"))
        .await
        .unwrap();
    c.update_product("feed-a", "p1", &fields("two"), None, None)
        .await
        .unwrap();
    let key = ApiKeyRecord {
        id: "feedkey".into(),
        tenant: "feed-a".into(),
        secret_hash: "0".repeat(64),
        scopes: vec!["search".into()],
        label: None,
        created_at: now(),
    };
    c.create_api_key(&key).await.unwrap();
    assert!(c.delete_api_key("feed-a", "feedkey").await.unwrap());
    // A generation bump is not a replicated change; the limits are.
    c.bump_generation("feed-a").await.unwrap();
    assert!(
        c.set_tenant_limits("feed-a", &json!({"quotas": {}}))
            .await
            .unwrap()
    );
    assert!(c.delete_product("feed-a", "p1", &job("feed-a")).await.unwrap());
    let changes = c.changes_after(start, 100, None).await.unwrap();
    let got: Vec<(ChangeKind, &str, &str)> = changes
        .iter()
        .map(|ch| (ch.kind, ch.tenant.as_str(), ch.entity.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (ChangeKind::Tenant, "feed-a", "feed-a"),
            (ChangeKind::Tenant, "feed-b", "feed-b"),
            (ChangeKind::Product, "feed-a", "p1"),
            (ChangeKind::Product, "feed-b", "p1"),
            (ChangeKind::Product, "feed-a", "p1"),
            (ChangeKind::Key, "feed-a", "feedkey"),
            (ChangeKind::Key, "feed-a", "feedkey"),
            (ChangeKind::Tenant, "feed-a", "feed-a"),
            (ChangeKind::Product, "feed-a", "p1"),
        ]
    );
    assert!(changes.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(c.feed_head().await.unwrap(), changes.last().unwrap().seq);
    // Paging and the tenant filter.
    let first = c.changes_after(start, 2, None).await.unwrap();
    assert_eq!(first, changes[..2]);
    let rest = c.changes_after(first[1].seq, 100, None).await.unwrap();
    assert_eq!(rest, changes[2..]);
    let only_b = c
        .changes_after(start, 100, Some(&["feed-b".to_owned()]))
        .await
        .unwrap();
    assert_eq!(only_b.len(), 2);
    assert!(only_b.iter().all(|ch| ch.tenant == "feed-b"));
    // Snapshot reads: products by catalog row, keys by tenant.
    let rows = c
        .products_after_row(0, 100, Some(&["feed-b".to_owned()]))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1.fields.title, "other");
    let after = c
        .products_after_row(rows[0].0, 100, Some(&["feed-b".to_owned()]))
        .await
        .unwrap();
    assert!(after.is_empty());
    assert!(
        c.all_api_keys(Some(&["feed-a".to_owned()]))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Writers racing: every change gets a number, none is skipped by a
/// follower reading meanwhile, and numbers only grow.
async fn concurrent_writes_are_numbered_without_holes(c: &dyn Catalog) {
    c.create_tenant("race", "Race").await.unwrap();
    let start = c.feed_head().await.unwrap();
    let mut seen = Vec::new();
    let mut after = start;
    let writes = async {
        let mut tasks = Vec::new();
        for w in 0..4 {
            tasks.push(async move {
                for i in 0..25 {
                    let job = NewJob::new("index_product", "race", json!({}));
                    c.create_product("race", &format!("w{w}-{i}"), &fields("x"), &job)
                        .await
                        .unwrap();
                }
            });
        }
        futures::future::join_all(tasks).await;
    };
    let follow = async {
        for _ in 0..200 {
            let page = c.changes_after(after, 10, None).await.unwrap();
            if let Some(last) = page.last() {
                after = last.seq;
            }
            seen.extend(page);
            tokio::task::yield_now().await;
        }
    };
    tokio::join!(writes, follow);
    seen.extend(c.changes_after(after, 1000, None).await.unwrap());
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    let mut ids: Vec<&str> = seen.iter().map(|ch| ch.entity.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100, "every product write was seen once");
}

async fn edge_logs_are_stored_once(c: &dyn Catalog) {
    let log = |text: &str| SearchLog {
        tenant: "default".into(),
        query_type: "text".into(),
        query_text: Some(text.into()),
        query_image_url: None,
        results_count: 1,
        execution_time_ms: 2.0,
        user_id: None,
        session_id: None,
        created_at: now(),
    };
    let batch = vec![
        (1, log("edge once")),
        (2, log("edge once")),
        (5, log("edge once")),
    ];
    assert_eq!(c.accept_edge_logs("edge-1", &batch).await.unwrap(), 5);
    // Sent again (the answer was lost), and overlapping with new ones.
    assert_eq!(c.accept_edge_logs("edge-1", &batch).await.unwrap(), 5);
    let more = vec![(5, log("edge once")), (6, log("edge once"))];
    assert_eq!(c.accept_edge_logs("edge-1", &more).await.unwrap(), 6);
    // Another edge numbers on its own.
    assert_eq!(c.accept_edge_logs("edge-2", &batch[..1]).await.unwrap(), 1);
    let stats = c
        .query_stats("default", QueryStatsKind::Top, now() - Duration::hours(1), 10)
        .await
        .unwrap();
    let once = stats.iter().find(|s| s.query_text == "edge once").unwrap();
    assert_eq!(once.count, 5);
}

async fn generations_are_recorded(c: &dyn Catalog) {
    use super::replica::IndexGeneration;
    assert_eq!(c.current_generation().await.unwrap(), None);
    let g = |id: i64, dims: i64| IndexGeneration {
        id,
        model: "/models/clip".into(),
        model_id: format!("clip@{id}"),
        dims,
    };
    c.record_generation(&g(3, 512)).await.unwrap();
    assert_eq!(c.current_generation().await.unwrap(), Some(g(3, 512)));
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    c.record_generation(&g(4, 768)).await.unwrap();
    assert_eq!(c.current_generation().await.unwrap(), Some(g(4, 768)));
}
