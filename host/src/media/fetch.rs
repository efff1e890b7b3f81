//! Fetching product images from tenant-supplied URLs without letting those
//! URLs reach anything they should not (SSRF).
//!
//! Every hop of a fetch is checked: the scheme must be http(s); the host is
//! resolved and refused if any of its addresses is loopback, private,
//! link-local, multicast, unspecified or otherwise internal; and the
//! connection itself goes through a resolver that drops such addresses, so
//! a DNS answer that changes between the check and the connect (rebinding)
//! cannot slip through. Redirects are followed by hand, each one checked
//! the same way.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use sha2::{Digest, Sha256};
use url::Url;

/// Why a fetch failed. [`MediaError::is_retryable`] separates what another
/// attempt may fix from what it never will.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    #[error("invalid image URL: {0}")]
    InvalidUrl(String),
    #[error("image URL refused: {0}")]
    Forbidden(String),
    #[error("image server answered HTTP {0}")]
    HttpStatus(u16),
    #[error("image fetch timed out")]
    Timeout,
    #[error("cannot reach the image server: {0}")]
    Network(String),
    #[error("image is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported image type: {0} (JPEG, PNG, WebP and GIF are accepted)")]
    UnsupportedType(String),
    #[error("image is corrupt: {0}")]
    Corrupt(String),
    #[error("image is {width}x{height} pixels; the limit is {limit} pixels")]
    TooManyPixels { width: u32, height: u32, limit: u64 },
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
}

impl MediaError {
    /// Server errors, throttling, timeouts and network failures may pass;
    /// everything about the URL or the content itself will not.
    pub fn is_retryable(&self) -> bool {
        match self {
            MediaError::HttpStatus(s) => *s >= 500 || *s == 408 || *s == 429,
            MediaError::Timeout | MediaError::Network(_) => true,
            _ => false,
        }
    }
}

/// Which destination addresses a fetch may connect to.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// `media.allow_private_networks`: allow every address (tests, labs).
    pub allow_private_networks: bool,
    /// Internal addresses allowed anyway (e.g. one trusted image host).
    pub allowed: Vec<IpAddr>,
}

impl AddressPolicy {
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private_networks || self.allowed.contains(&ip) || is_public(ip)
    }
}

/// Whether an address is routable on the public internet. Everything that
/// reaches the host itself, its local networks or cloud metadata services
/// is not.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            let seg0 = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (seg0 & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (seg0 == 0x64 && v6.segments()[1] == 0xff9b) // NAT64 64:ff9b::/96 embeds IPv4
                || (seg0 == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
                || v6.segments()[..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local() // includes 169.254.169.254 cloud metadata
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_unspecified()
        || ip.is_documentation()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT 100.64/10
        || (o[0] == 192 && o[1] == 0 && o[2] == 0) // IETF protocol assignments
        || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking 198.18/15
        || o[0] >= 240) // reserved
}

/// The resolver reqwest connects through: it drops addresses the policy
/// refuses, so the address checked is the address connected to.
struct FilteringResolver {
    policy: Arc<AddressPolicy>,
}

impl Resolve for FilteringResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host} resolves to no permitted address").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub policy: AddressPolicy,
    /// Whole-fetch deadline per attempt (connect, redirects and body).
    pub timeout: Duration,
    /// Largest image accepted (the 20 MiB).
    pub max_bytes: usize,
    /// Largest width × height accepted; checked from the header before
    /// anything decodes the pixels (decompression bombs).
    pub max_pixels: u64,
    pub max_redirects: usize,
    /// Extra attempts, within one fetch, after a retryable failure. The job
    /// runner retries whole jobs on top of this with longer backoff.
    pub retries: u32,
    pub retry_delay: Duration,
}

impl FetchConfig {
    /// Fetching under `media.*` (address policy, timeout, byte and pixel
    /// limits).
    pub fn from_settings(media: &crate::config::MediaSettings) -> Self {
        Self {
            policy: AddressPolicy {
                allow_private_networks: media.allow_private_networks,
                allowed: Vec::new(),
            },
            timeout: Duration::from_secs(media.fetch_timeout_secs),
            max_bytes: media.max_image_bytes,
            max_pixels: media.max_pixels,
            max_redirects: 5,
            retries: 2,
            retry_delay: Duration::from_millis(200),
        }
    }
}

impl Default for FetchConfig {
    /// The built-in settings'.
    fn default() -> Self {
        Self::from_settings(&crate::config::Settings::defaults().media)
    }
}

/// A fetched, validated image (not decoded).
#[derive(Debug, Clone)]
pub struct FetchedImage {
    pub bytes: Bytes,
    pub format: image::ImageFormat,
    pub width: u32,
    pub height: u32,
    /// SHA-256 of the bytes, hex: the blob key.
    pub sha256: String,
    pub final_url: String,
}

pub struct ImageFetcher {
    client: reqwest::Client,
    config: FetchConfig,
}

impl ImageFetcher {
    pub fn new(config: FetchConfig) -> Result<Self, MediaError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(FilteringResolver {
                policy: Arc::new(config.policy.clone()),
            }))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("vitrine/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MediaError::Network(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self { client, config })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Fetches and validates one image, retrying retryable failures.
    pub async fn fetch(&self, url: &str) -> Result<FetchedImage, MediaError> {
        let mut attempt = 0;
        loop {
            match self.fetch_once(url).await {
                Err(e) if e.is_retryable() && attempt < self.config.retries => {
                    attempt += 1;
                    tokio::time::sleep(self.config.retry_delay * attempt).await;
                }
                other => return other,
            }
        }
    }

    /// One attempt, no retries: for a search by `image_url`, whose client
    /// is waiting (indexing uses [`Self::fetch`]).
    pub async fn fetch_once(&self, url: &str) -> Result<FetchedImage, MediaError> {
        let mut current = Url::parse(url).map_err(|e| MediaError::InvalidUrl(e.to_string()))?;
        for _ in 0..=self.config.max_redirects {
            self.check_destination(&current).await?;
            let res = self
                .client
                .get(current.clone())
                .send()
                .await
                .map_err(request_error)?;
            let status = res.status();
            if status.is_redirection() {
                let location = res
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| MediaError::InvalidUrl("a redirect without a Location".into()))?;
                current = current
                    .join(location)
                    .map_err(|e| MediaError::InvalidUrl(format!("bad redirect target: {e}")))?;
                continue;
            }
            if !status.is_success() {
                return Err(MediaError::HttpStatus(status.as_u16()));
            }
            return self.read_image(res, current.to_string()).await;
        }
        Err(MediaError::TooManyRedirects(self.config.max_redirects))
    }

    /// Refuses non-http(s) URLs, credentials, and hosts with any address
    /// the policy does not permit.
    async fn check_destination(&self, url: &Url) -> Result<(), MediaError> {
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(MediaError::Forbidden(format!(
                "scheme `{}` is not http or https",
                url.scheme()
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(MediaError::Forbidden(
                "credentials in image URLs are not allowed".into(),
            ));
        }
        let host = url
            .host()
            .ok_or_else(|| MediaError::InvalidUrl("the URL has no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let addrs: Vec<IpAddr> = match host {
            url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
            url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
            url::Host::Domain(name) => tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| MediaError::Network(format!("cannot resolve {name}: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        // Refuse if ANY address is internal: a name that mixes public and
        // internal answers is exactly what a rebinding attack looks like.
        match addrs.iter().find(|ip| !self.config.policy.permits(**ip)) {
            Some(ip) => Err(MediaError::Forbidden(format!(
                "{host} resolves to {ip}, an internal address (set media.allow_private_networks to allow)"
            ))),
            None if addrs.is_empty() => Err(MediaError::Network(format!("{host} has no address"))),
            None => Ok(()),
        }
    }

    async fn read_image(
        &self,
        mut res: reqwest::Response,
        final_url: String,
    ) -> Result<FetchedImage, MediaError> {
        let limit = self.config.max_bytes;
        if let Some(ct) = res.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            let mime = ct
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            if !(mime.starts_with("image/") || mime == "application/octet-stream" || mime.is_empty()) {
                return Err(MediaError::UnsupportedType(format!("Content-Type {mime}")));
            }
        }
        let declared = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(MediaError::TooLarge { limit });
        }
        let mut body = BytesMut::with_capacity(declared.unwrap_or(64 * 1024).min(limit as u64) as usize);
        while let Some(chunk) = res.chunk().await.map_err(request_error)? {
            if body.len() + chunk.len() > limit {
                return Err(MediaError::TooLarge { limit });
            }
            body.extend_from_slice(&chunk);
        }
        let bytes = body.freeze();
        let (format, width, height) = inspect(&bytes, self.config.max_pixels)?;
        Ok(FetchedImage {
            sha256: hex_sha256(&bytes),
            bytes,
            format,
            width,
            height,
            final_url,
        })
    }
}

/// Checks the magic bytes and the header's dimensions without decoding the
/// pixels.
pub fn inspect(bytes: &[u8], max_pixels: u64) -> Result<(image::ImageFormat, u32, u32), MediaError> {
    use image::ImageFormat as F;
    let format =
        image::guess_format(bytes).map_err(|_| MediaError::UnsupportedType("unrecognised content".into()))?;
    if !matches!(format, F::Jpeg | F::Png | F::WebP | F::Gif) {
        return Err(MediaError::UnsupportedType(format!("{format:?}")));
    }
    let (width, height) = image::ImageReader::with_format(std::io::Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| MediaError::Corrupt(e.to_string()))?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(MediaError::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    Ok((format, width, height))
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn request_error(e: reqwest::Error) -> MediaError {
    if e.is_timeout() {
        MediaError::Timeout
    } else {
        // The filtering resolver's refusal surfaces here too; the explicit
        // check before each hop reports it as Forbidden in the normal case.
        MediaError::Network(e.without_url().to_string())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    #[test]
    fn internal_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.8.8.8",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.1.1.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip} must be refused");
        }
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "151.101.1.69",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip} is public");
        }
    }

    #[test]
    fn the_policy_can_open_everything_or_single_addresses() {
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        assert!(!AddressPolicy::default().permits(lo));
        let one = AddressPolicy {
            allowed: vec![lo],
            ..Default::default()
        };
        assert!(one.permits(lo) && !one.permits(Ipv6Addr::LOCALHOST.into()));
        let all = AddressPolicy {
            allow_private_networks: true,
            ..Default::default()
        };
        assert!(all.permits(Ipv6Addr::LOCALHOST.into()));
    }

    #[test]
    fn retryable_failures_are_the_transient_ones() {
        for e in [
            MediaError::HttpStatus(503),
            MediaError::HttpStatus(429),
            MediaError::Timeout,
            MediaError::Network("x".into()),
        ] {
            assert!(e.is_retryable(), "{e}");
        }
        for e in [
            MediaError::HttpStatus(404),
            MediaError::HttpStatus(403),
            MediaError::Forbidden("x".into()),
            MediaError::TooLarge { limit: 1 },
            MediaError::UnsupportedType("x".into()),
        ] {
            assert!(!e.is_retryable(), "{e}");
        }
    }
}
