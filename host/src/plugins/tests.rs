//! The plugin host against real components built from `plugins/` (see
//! tests/plugin-artifacts): the examples do what they say, every hostile
//! guest is stopped with the right reason, uploads are validated, and
//! compiled components are reused across restarts but never trusted when
//! damaged.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use vitrine_plugin_artifacts as artifacts;

use super::*;

/// The tests of this module run one at a time: they measure calls against
/// 10 ms deadlines, and run side by side they were seen to stall together
/// for 100–300 ms now and then (each test builds and drops its own engine
/// and instance pool; one process-wide engine, as the server has, does not).
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

fn config(dir: &Path) -> PluginsConfig {
    PluginsConfig::new(dir)
}

fn host_in(dir: &Path, config: PluginsConfig) -> PluginHost {
    PluginHost::new(config, BlobStore::open(None, dir).unwrap()).unwrap()
}

async fn install(host: &PluginHost, name: &str, world: World, path: &str) -> PluginRef {
    install_for(host, "t1", name, world, path).await
}

async fn install_for(host: &PluginHost, tenant: &str, name: &str, world: World, path: &str) -> PluginRef {
    let digest = host
        .upload(tenant, world, Bytes::from(artifacts::bytes(path)))
        .await
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    PluginRef {
        tenant: tenant.into(),
        name: name.into(),
        version: 1,
        world,
        digest,
        params: Vec::new(),
        memory_mb: None,
    }
}

fn candidate(id: &str, score: f32, price: Option<f64>, in_stock: bool, category: Option<&str>) -> Candidate {
    Candidate {
        id: id.into(),
        score,
        title: format!("product {id}"),
        category: category.map(Into::into),
        price,
        currency: Some("EUR".into()),
        tags: vec!["x".into()],
        in_stock,
    }
}

fn query(params: &[(&str, &str)]) -> Query {
    Query {
        text: Some("boots".into()),
        kind: QueryKind::Text,
        params: params.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect(),
    }
}

fn candidates() -> Vec<Candidate> {
    vec![
        candidate("a", 0.90, Some(100.0), false, Some("shoes")),
        candidate("b", 0.89, Some(10.0), true, Some("bags")),
        candidate("c", 0.88, None, true, None),
    ]
}

fn product(title: &str) -> PluginProduct {
    PluginProduct {
        external_id: "p1".into(),
        title: title.into(),
        description: None,
        category: Some("  Shoes ".into()),
        price: Some("89.90".into()),
        currency: Some("EUR".into()),
        image_url: None,
        tags: vec!["Red".into(), " red ".into(), "".into(), "Leather".into()],
        in_stock: true,
        metadata: "{}".into(),
    }
}

#[tokio::test]
async fn price_boost_lifts_in_stock_and_cheaper_products() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let mut p = install(&host, "price-boost", World::Ranker, artifacts::PRICE_BOOST).await;
    let scores = host.rank(&p, query(&[]), candidates()).await.unwrap();
    // a: 0.90 (out of stock, dearest); b: 0.89 + 0.05 + 0.05 × 0.9; c: 0.88 + 0.05.
    assert!((scores[0] - 0.90).abs() < 1e-6, "{scores:?}");
    assert!((scores[1] - (0.89 + 0.05 + 0.045)).abs() < 1e-6, "{scores:?}");
    assert!((scores[2] - 0.93).abs() < 1e-6, "{scores:?}");
    // The tenant's parameters change the weights.
    p.params = vec![
        ("in_stock_boost".into(), "0".into()),
        ("cheap_boost".into(), "0".into()),
    ];
    let scores = host
        .rank(
            &p,
            query(
                &p.params
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect::<Vec<_>>(),
            ),
            candidates(),
        )
        .await
        .unwrap();
    assert_eq!(scores, vec![0.90, 0.89, 0.88]);
}

#[tokio::test]
async fn category_allowlist_keeps_only_allowed_categories() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let p = install(&host, "allow", World::Filter, artifacts::CATEGORY_ALLOWLIST).await;
    let kept = host
        .filter(&p, query(&[("categories", "Shoes, hats")]), candidates())
        .await
        .unwrap();
    assert_eq!(kept, HashSet::from(["a".to_owned()]));
    let kept = host
        .filter(
            &p,
            query(&[("categories", "bags"), ("keep_uncategorized", "true")]),
            candidates(),
        )
        .await
        .unwrap();
    assert_eq!(kept, HashSet::from(["b".to_owned(), "c".to_owned()]));
    let kept = host.filter(&p, query(&[]), candidates()).await.unwrap();
    assert_eq!(kept.len(), 3);
}

#[tokio::test]
async fn title_normalizer_tidies_and_rejects() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let mut p = install(&host, "norm", World::Ingest, artifacts::TITLE_NORMALIZER).await;
    let out = host
        .ingest(&p, product("  red\tLEATHER   ankle boots\u{7}"), Ok)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.title, "Red Leather Ankle Boots");
    assert_eq!(out.category.as_deref(), Some("shoes"));
    assert_eq!(out.tags, vec!["red".to_owned(), "leather".to_owned()]);
    assert_eq!(out.price.as_deref(), Some("89.90"));
    p.params = vec![("reject_words".into(), "replica, fake".into())];
    let rejected = host.ingest(&p, product("Fake leather boots"), Ok).await.unwrap();
    assert_eq!(rejected.unwrap_err(), "the title contains the banned word `fake`");
    // Output the host's own checks refuse is a failure, not a rejection.
    let refused = host
        .ingest(&p, product("boots"), |_| Err::<(), _>("no".to_owned()))
        .await;
    assert_eq!(refused.unwrap_err(), CallError::BadOutput("no".into()));
}

/// Each hostile guest is stopped for its own reason, within its deadline
/// plus 20 ms, and the next call of a good plugin is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_guests_are_stopped_and_leave_the_host_working() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let good = install(&host, "price-boost", World::Ranker, artifacts::PRICE_BOOST).await;
    let cases: &[(&str, World, &str, &[&str])] = &[
        (
            "infinite-loop",
            World::Ranker,
            artifacts::INFINITE_LOOP,
            &["timeout"],
        ),
        // 64 MiB of 1 MiB blocks: the memory cap, or the deadline if
        // zeroing them is slower than 10 ms on this machine.
        (
            "memory-bomb",
            World::Ranker,
            artifacts::MEMORY_BOMB,
            &["memory_limit", "timeout"],
        ),
        // Rust keeps large frames on a shadow stack in linear memory: its
        // overflow is an out-of-bounds trap before wasm's own stack limit.
        (
            "deep-recursion",
            World::Filter,
            artifacts::DEEP_RECURSION,
            &["stack_overflow", "trap"],
        ),
        ("panic", World::Filter, artifacts::PANIC, &["trap"]),
        (
            "wrong-length",
            World::Ranker,
            artifacts::WRONG_LENGTH,
            &["bad_output"],
        ),
        (
            "unknown-id",
            World::Filter,
            artifacts::UNKNOWN_ID,
            &["bad_output"],
        ),
        ("log-flood", World::Ranker, artifacts::LOG_FLOOD, &["log_flood"]),
        // Blocked in a WASI clock wait, where epochs cannot reach it.
        ("sleeper", World::Ranker, artifacts::SLEEPER, &["timeout"]),
        // 64 MiB of WASI random bytes, made synchronously by the host:
        // capped, so refused at once.
        (
            "random-hog",
            World::Ranker,
            artifacts::RANDOM_HOG,
            &["bad_output", "trap"],
        ),
        // 100 ids aliasing one 1 MiB string: refused before the copy.
        (
            "copy-amplifier",
            World::Filter,
            artifacts::COPY_AMPLIFIER,
            &["bad_output"],
        ),
    ];
    for (name, world, path, expected) in cases {
        let p = install(&host, name, *world, path).await;
        let deadline = host.config().deadline(*world);
        let start = Instant::now();
        let err = match world {
            World::Filter => host.filter(&p, query(&[]), candidates()).await.map(|_| ()),
            _ => host.rank(&p, query(&[]), candidates()).await.map(|_| ()),
        }
        .expect_err(name);
        let took = start.elapsed();
        assert!(expected.contains(&err.kind()), "{name}: {err:?}");
        assert!(
            took <= deadline + Duration::from_millis(20),
            "{name} took {took:?} (deadline {deadline:?})"
        );
        // What the guest wrote (its panic message) stays out of the error
        // a response shows.
        assert!(!err.public_message().contains("always panics"));
        if *name == "copy-amplifier" {
            // Refused while lifting, not after 100 MiB were copied and found
            // to be no candidate's id.
            // (100 MiB: under wasmtime's own default budget of 128 MiB, so
            // only the host's budget refuses it.)
            assert!(!err.to_string().contains("not one of the candidates"), "{err}");
        }
        let scores = host.rank(&good, query(&[]), candidates()).await.unwrap();
        assert_eq!(scores.len(), 3, "after {name}");
    }
}

/// An ingest plugin asleep in WASI does not hold a write past its deadline.
#[tokio::test]
async fn a_sleeping_ingest_plugin_is_dropped_at_its_deadline() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let p = install(&host, "sleepy", World::Ingest, artifacts::SLEEPY_INGEST).await;
    let start = Instant::now();
    let err = host.ingest(&p, product("boots"), Ok).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err, CallError::Timeout(100));
    assert!(took <= Duration::from_millis(120), "took {took:?}");
}

/// An ingest plugin's output is capped by the product limits before the
/// host copies it: 100 tags aliasing one 1 MiB string are refused at once
/// (100 MiB is under wasmtime's default budget of 128 MiB: only the host's
/// own budget refuses it).
#[tokio::test]
async fn an_amplified_ingest_output_is_refused_before_the_copy() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let p = install(&host, "tags", World::Ingest, artifacts::TAG_AMPLIFIER).await;
    let start = Instant::now();
    let err = host.ingest(&p, product("boots"), Ok).await.unwrap_err();
    assert_eq!(err.kind(), "bad_output", "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(100),
        "{:?}",
        start.elapsed()
    );
}

/// Many sleeping calls of one tenant take that tenant's slots only: another
/// tenant's plugin keeps answering `ok` within its deadline, every sleeper
/// ends by its deadline (timeout, or busy when it found no slot), and no
/// call ever runs out of pooled instances.
///
/// Times are checked per call against the deadline + 20 ms at the 95th
/// percentile, and each call against 500 ms (a sleeper left running would
/// take its full second): other tests share this process and its two cores,
/// and once in a cold first run all calls stalled together for ~280 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleepers_of_one_tenant_do_not_starve_another() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(
        dir.path(),
        PluginsConfig {
            max_concurrent_calls: 8,
            max_concurrent_calls_per_tenant: 2,
            ..config(dir.path())
        },
    );
    let sleeper = install_for(&host, "noisy", "sleeper", World::Ranker, artifacts::SLEEPER).await;
    let good = install_for(&host, "quiet", "boost", World::Ranker, artifacts::PRICE_BOOST).await;
    let deadline = host.config().deadline(World::Ranker);
    let stop = Arc::new(AtomicBool::new(false));
    let mut noisy = Vec::new();
    for _ in 0..16 {
        let (host, p, stop) = (host.clone(), sleeper.clone(), stop.clone());
        noisy.push(tokio::spawn(async move {
            let mut calls = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                let err = host.rank(&p, query(&[]), candidates()).await.unwrap_err();
                calls.push((err.kind(), start.elapsed()));
            }
            calls
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut good_times = Vec::new();
    for i in 0..50 {
        let start = Instant::now();
        let scores = host.rank(&good, query(&[]), candidates()).await;
        good_times.push(start.elapsed());
        assert_eq!(scores.map(|s| s.len()), Ok(3), "call {i}");
    }
    stop.store(true, Ordering::Relaxed);
    let mut calls = Vec::new();
    for task in noisy {
        calls.extend(task.await.unwrap());
    }
    assert!(calls.iter().any(|(k, _)| *k == "timeout"), "{calls:?}");
    assert!(
        calls.iter().all(|(k, _)| ["timeout", "busy"].contains(k)),
        "{calls:?}"
    );
    let bound = deadline + Duration::from_millis(20);
    for (who, mut times) in [
        ("sleeper", calls.iter().map(|(_, t)| *t).collect::<Vec<_>>()),
        ("good plugin", good_times),
    ] {
        times.sort();
        let p95 = times[(times.len() * 95 / 100).min(times.len() - 1)];
        let max = times[times.len() - 1];
        assert!(p95 <= bound, "{who}: p95 {p95:?} > {bound:?} ({times:?})");
        assert!(max < Duration::from_millis(500), "{who}: max {max:?}");
    }
}

/// A compilation past `compile_timeout` refuses the upload, and nothing of
/// it is kept.
#[tokio::test]
async fn an_upload_that_compiles_too_long_is_refused() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(
        dir.path(),
        PluginsConfig {
            compile_timeout: Duration::from_micros(1),
            ..config(dir.path())
        },
    );
    let bytes = artifacts::bytes(artifacts::PRICE_BOOST);
    let err = host
        .upload("t1", World::Ranker, Bytes::from(bytes.clone()))
        .await
        .unwrap_err();
    assert!(matches!(err, UploadError::CompileTimeout(_)), "{err}");
    assert_eq!(err.code(), crate::error_code::ErrorCode::CompileTimeout);
    let digest = sha256_hex(&bytes);
    assert!(host.blobs().get(&blob_key("t1", &digest)).await.is_err());
    // The abandoned compilation ends on its own and keeps nothing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!host.artifact_file(&digest).exists());
    assert_eq!(host.compilations(), 0);
}

/// A search that finds no compiled component falls back at once and
/// schedules the compilation; the calls after it run the plugin.
#[tokio::test]
async fn calls_never_compile_and_a_cold_version_is_compiled_in_the_background() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let p = {
        let host = host_in(dir.path(), config(dir.path()));
        install(&host, "price-boost", World::Ranker, artifacts::PRICE_BOOST).await
    };
    // Another engine's artifacts are never looked at: as after an upgrade.
    std::fs::remove_file(host_in(dir.path(), config(dir.path())).artifact_file(&p.digest)).unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let start = Instant::now();
    let err = host.rank(&p, query(&[]), candidates()).await.unwrap_err();
    assert_eq!(err, CallError::NotReady);
    assert!(
        start.elapsed() < Duration::from_millis(30),
        "{:?}",
        start.elapsed()
    );
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        match host.rank(&p, query(&[]), candidates()).await {
            Ok(scores) => break assert_eq!(scores.len(), 3),
            Err(CallError::NotReady) if Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(host.compilations(), 1);
    // Warming (activation, start-up) compiles on the spot.
    std::fs::remove_file(host.artifact_file(&p.digest)).unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    host.warm(&p).await.unwrap();
    assert_eq!(host.compilations(), 1);
    assert_eq!(host.rank(&p, query(&[]), candidates()).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_small_memory_cap_stops_the_memory_bomb_at_the_cap() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(
        dir.path(),
        PluginsConfig {
            ranker_deadline: Duration::from_secs(5),
            ..config(dir.path())
        },
    );
    let mut p = install(&host, "bomb", World::Ranker, artifacts::MEMORY_BOMB).await;
    p.memory_mb = Some(8);
    let err = host.rank(&p, query(&[]), candidates()).await.unwrap_err();
    assert_eq!(err, CallError::MemoryLimit(8));
}

#[tokio::test]
async fn fuel_stops_a_loop_even_with_a_long_deadline() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(
        dir.path(),
        PluginsConfig {
            ranker_deadline: Duration::from_secs(30),
            fuel: 5_000_000,
            ..config(dir.path())
        },
    );
    let p = install(&host, "loop", World::Ranker, artifacts::INFINITE_LOOP).await;
    let start = Instant::now();
    let err = host.rank(&p, query(&[]), candidates()).await.unwrap_err();
    assert_eq!(err, CallError::OutOfFuel);
    assert!(start.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn uploads_are_validated_against_their_world() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let upload = |bytes: Vec<u8>, world| {
        let host = host.clone();
        async move { host.upload("t1", world, Bytes::from(bytes)).await }
    };
    assert!(matches!(
        upload(b"hello world".to_vec(), World::Ranker).await,
        Err(UploadError::NotWasm)
    ));
    assert!(matches!(
        upload(Vec::new(), World::Ranker).await,
        Err(UploadError::NotWasm)
    ));
    // The smallest core module: magic + version 1.
    assert!(matches!(
        upload(b"\0asm\x01\0\0\0".to_vec(), World::Ranker).await,
        Err(UploadError::CoreModule)
    ));
    let ranker = artifacts::bytes(artifacts::PRICE_BOOST);
    let truncated = ranker[..ranker.len() / 2].to_vec();
    assert!(matches!(
        upload(truncated, World::Ranker).await,
        Err(UploadError::Invalid(_))
    ));
    // A ranker is not a filter, nor an ingest plugin.
    for world in [World::Filter, World::Ingest] {
        match upload(ranker.clone(), world).await {
            Err(UploadError::WrongWorld { world: w, reason }) => {
                assert_eq!(w, world.as_str());
                assert!(!reason.is_empty());
            }
            other => panic!("{world:?}: {other:?}"),
        }
    }
    assert!(upload(ranker, World::Ranker).await.is_ok());
}

#[tokio::test]
async fn compiled_components_survive_a_restart_and_corruption_is_recompiled() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let p = {
        let host = host_in(dir.path(), config(dir.path()));
        let p = install(&host, "price-boost", World::Ranker, artifacts::PRICE_BOOST).await;
        assert_eq!(host.compilations(), 1);
        p
    };
    // A new host (a restart) serves it from the compiled file.
    let host = host_in(dir.path(), config(dir.path()));
    assert_eq!(host.rank(&p, query(&[]), candidates()).await.unwrap().len(), 3);
    assert_eq!(host.compilations(), 0);
    // Damage the compiled file: the next host detects it, recompiles from
    // the stored component, and rewrites a good file.
    let file = host.artifact_file(&p.digest);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    host.warm(&p).await.unwrap();
    assert_eq!(host.rank(&p, query(&[]), candidates()).await.unwrap().len(), 3);
    assert_eq!(host.compilations(), 1);
    let host = host_in(dir.path(), config(dir.path()));
    assert_eq!(host.rank(&p, query(&[]), candidates()).await.unwrap().len(), 3);
    assert_eq!(host.compilations(), 0);
    // A truncated file too.
    std::fs::write(&file, &bytes[..10]).unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    host.warm(&p).await.unwrap();
    assert_eq!(host.rank(&p, query(&[]), candidates()).await.unwrap().len(), 3);
    assert_eq!(host.compilations(), 1);
}

#[tokio::test]
async fn a_missing_component_blob_is_a_fallback_not_a_crash() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let host = host_in(dir.path(), config(dir.path()));
    let mut p = install(&host, "price-boost", World::Ranker, artifacts::PRICE_BOOST).await;
    p.digest = "0".repeat(64);
    let err = host.rank(&p, query(&[]), candidates()).await.unwrap_err();
    assert!(["unavailable", "not_ready"].contains(&err.kind()), "{err}");
    // The failure is kept: the next calls do not try again at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let start = Instant::now();
    let err = host.rank(&p, query(&[]), candidates()).await.unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(5),
        "{:?}",
        start.elapsed()
    );
    // A warm-up (activation) tries again.
    assert_eq!(host.warm(&p).await.unwrap_err().kind(), "unavailable");
}

#[tokio::test]
async fn plugins_run_alike_with_pooled_and_on_demand_instances() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let mut results = Vec::new();
    for pooling in [true, false] {
        let host = host_in(
            dir.path(),
            PluginsConfig {
                pooling,
                ..config(dir.path())
            },
        );
        if !pooling {
            assert!(!host.pooling());
        }
        let p = install(&host, "price-boost", World::Ranker, artifacts::PRICE_BOOST).await;
        // Many calls in a row reuse pool slots without leaking them.
        for _ in 0..200 {
            results.push(host.rank(&p, query(&[]), candidates()).await.unwrap());
        }
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
}
