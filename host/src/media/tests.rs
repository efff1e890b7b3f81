//! The fetcher against a real HTTP server on 127.0.0.1 serving real images.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

use super::*;

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x * 7 % 256) as u8, (y * 13 % 256) as u8, ((x ^ y) % 256) as u8])
    });
    let mut out = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

fn image_response(bytes: Vec<u8>, content_type: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
}

async fn server() -> SocketAddr {
    let flaky = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route(
            "/ok.png",
            get(|| async { image_response(png(64, 48), "image/png") }),
        )
        .route("/no-type", get(|| async { png(8, 8) }))
        .route(
            "/big.png",
            get(|| async { image_response(png(300, 300), "image/png") }),
        )
        .route(
            "/page.html",
            get(|| async { image_response(b"<html></html>".to_vec(), "text/html") }),
        )
        .route(
            "/fake.png",
            get(|| async { image_response(b"not an image at all".to_vec(), "image/png") }),
        )
        .route(
            "/truncated.png",
            get(|| async { image_response(png(64, 48)[..20].to_vec(), "image/png") }),
        )
        .route("/missing.png", get(|| async { StatusCode::NOT_FOUND }))
        .route(
            "/flaky.png",
            get(move || {
                let n = flaky.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        StatusCode::SERVICE_UNAVAILABLE.into_response()
                    } else {
                        image_response(png(8, 8), "image/png")
                    }
                }
            }),
        )
        .route(
            "/slow.png",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                image_response(png(8, 8), "image/png")
            }),
        )
        .route("/to-ok", get(|| async { Redirect::temporary("/ok.png") }))
        .route(
            "/to-file",
            get(|| async { Redirect::temporary("file:///etc/passwd") }),
        )
        .route("/loop", get(|| async { Redirect::temporary("/loop") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Only 127.0.0.1 is let through, so every other internal address is
/// still refused: the redirect tests rely on it.
fn only_localhost() -> FetchConfig {
    FetchConfig {
        policy: AddressPolicy {
            allow_private_networks: false,
            allowed: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        },
        timeout: Duration::from_millis(500),
        retry_delay: Duration::from_millis(10),
        ..FetchConfig::default()
    }
}

async fn fetch_with(config: FetchConfig, url: &str) -> Result<FetchedImage, MediaError> {
    ImageFetcher::new(config).unwrap().fetch(url).await
}

#[tokio::test]
async fn fetches_and_inspects_a_real_image() {
    let addr = server().await;
    let img = fetch_with(only_localhost(), &format!("http://{addr}/ok.png"))
        .await
        .unwrap();
    assert_eq!(
        (img.format, img.width, img.height),
        (image::ImageFormat::Png, 64, 48)
    );
    assert_eq!(img.sha256, fetch::hex_sha256(&png(64, 48)));
    // No Content-Type: the magic bytes decide.
    assert!(
        fetch_with(only_localhost(), &format!("http://{addr}/no-type"))
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn rejects_image_urls_pointing_to_loopback_by_default() {
    let addr = server().await;
    let config = FetchConfig::default();
    for url in [
        format!("http://{addr}/ok.png"),
        format!("http://localhost:{}/ok.png", addr.port()),
        format!("http://[::1]:{}/ok.png", addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://10.0.0.1/x.png".to_owned(),
    ] {
        let err = fetch_with(config.clone(), &url).await.unwrap_err();
        assert!(matches!(err, MediaError::Forbidden(_)), "{url}: {err}");
        assert!(!err.is_retryable());
    }
    // The setting opens it.
    let open = FetchConfig {
        policy: AddressPolicy {
            allow_private_networks: true,
            allowed: vec![],
        },
        ..FetchConfig::default()
    };
    assert!(fetch_with(open, &format!("http://{addr}/ok.png")).await.is_ok());
}

#[tokio::test]
async fn every_redirect_is_checked() {
    let addr = server().await;
    let ok = fetch_with(only_localhost(), &format!("http://{addr}/to-ok"))
        .await
        .unwrap();
    assert!(ok.final_url.ends_with("/ok.png"));
    let err = fetch_with(only_localhost(), &format!("http://{addr}/to-file"))
        .await
        .unwrap_err();
    assert!(matches!(err, MediaError::Forbidden(_)), "{err}");
    let err = fetch_with(only_localhost(), &format!("http://{addr}/loop"))
        .await
        .unwrap_err();
    assert_eq!(err, MediaError::TooManyRedirects(5));
}

#[tokio::test]
async fn a_redirect_to_another_internal_address_is_refused() {
    // A server that redirects to 127.0.0.2, internal and not allowed.
    let target = server().await;
    let app = Router::new().route(
        "/hop",
        get(
            move || async move { Redirect::temporary(&format!("http://127.0.0.2:{}/ok.png", target.port())) },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let err = fetch_with(only_localhost(), &format!("http://{addr}/hop"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, MediaError::Forbidden(m) if m.contains("127.0.0.2")),
        "{err}"
    );
}

#[tokio::test]
async fn bad_content_is_refused_with_a_clear_fatal_error() {
    let addr = server().await;
    type Expect = fn(&MediaError) -> bool;
    let cases: Vec<(&str, FetchConfig, Expect)> = vec![
        ("page.html", only_localhost(), |e| {
            matches!(e, MediaError::UnsupportedType(_))
        }),
        ("fake.png", only_localhost(), |e| {
            matches!(e, MediaError::UnsupportedType(_))
        }),
        ("truncated.png", only_localhost(), |e| {
            matches!(e, MediaError::Corrupt(_))
        }),
        ("missing.png", only_localhost(), |e| {
            *e == MediaError::HttpStatus(404)
        }),
        (
            "big.png",
            FetchConfig {
                max_bytes: 2_000,
                ..only_localhost()
            },
            |e| matches!(e, MediaError::TooLarge { limit: 2_000 }),
        ),
        (
            "big.png",
            FetchConfig {
                max_pixels: 10_000,
                ..only_localhost()
            },
            |e| {
                matches!(
                    e,
                    MediaError::TooManyPixels {
                        width: 300,
                        height: 300,
                        ..
                    }
                )
            },
        ),
    ];
    for (path, config, expected) in cases {
        let err = fetch_with(config, &format!("http://{addr}/{path}"))
            .await
            .unwrap_err();
        assert!(expected(&err), "{path}: {err}");
        assert!(!err.is_retryable(), "{path}: {err}");
    }
}

#[tokio::test]
async fn transient_failures_are_retried_and_timeouts_are_retryable() {
    let addr = server().await;
    // 503, 503, then the image: the fetch's own retries get it.
    assert!(
        fetch_with(only_localhost(), &format!("http://{addr}/flaky.png"))
            .await
            .is_ok()
    );
    let no_retries = FetchConfig {
        retries: 0,
        ..only_localhost()
    };
    let err = fetch_with(no_retries, &format!("http://{addr}/slow.png"))
        .await
        .unwrap_err();
    assert_eq!(err, MediaError::Timeout);
    assert!(err.is_retryable());
}

#[tokio::test]
async fn originals_are_stored_once_by_content_hash() {
    let addr = server().await;
    let dir = tempfile::tempdir().unwrap();
    let blobs = BlobStore::open(None, dir.path()).unwrap();
    let img = fetch_with(only_localhost(), &format!("http://{addr}/ok.png"))
        .await
        .unwrap();
    let key = blobs.put_image(&img).await.unwrap();
    assert_eq!(key, format!("images/{}/{}", &img.sha256[..2], img.sha256));
    assert_eq!(blobs.put_image(&img).await.unwrap(), key);
    assert_eq!(blobs.get(&key).await.unwrap(), img.bytes);
    assert!(dir.path().join("blobs").join(&key).is_file());
    assert!(matches!(
        blobs.get("images/00/none").await,
        Err(BlobError::NotFound(_))
    ));
    // Any object_store URL works the same.
    let mem = BlobStore::open(Some("memory:///"), dir.path()).unwrap();
    let key = mem.put_image(&img).await.unwrap();
    assert_eq!(mem.get(&key).await.unwrap(), img.bytes);
}
