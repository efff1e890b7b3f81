//! Rate limits: token buckets (governor's GCRA) per API key and class of
//! request, and per client address for requests without a valid key.
//!
//! Buckets live in this process: the limits are per node. Behind a load
//! balancer that spreads a key's requests over N nodes, the key gets up to N
//! times its limit (README, "Rate limits").

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter as Gcra};

use super::types::{Bucket, EffectiveRateLimits, TenantRateLimits};
use crate::config::RateLimitSettings;
use crate::telemetry::RATE_LIMITED;

/// Which bucket of a key a request draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Searches, embeds and reads.
    Search,
    /// Everything else.
    Write,
}

impl Class {
    /// The class of a request to `route` (a route template).
    pub fn of(method: &Method, route: &str) -> Self {
        let searchy = matches!(
            route,
            "/v1/embed" | "/v1/tenants/{t}/search" | "/v1/tenants/{t}/search/image"
        );
        if searchy || *method == Method::GET || *method == Method::HEAD {
            Class::Search
        } else {
            Class::Write
        }
    }

    fn name(self) -> &'static str {
        match self {
            Class::Search => "search",
            Class::Write => "write",
        }
    }
}

/// A bucket's owner.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Owner {
    Key(String, Class),
    /// The search tokens of a key, together: a page's shoppers cannot use
    /// up the key's own buckets.
    Token(String),
    /// A client address (an IPv6 client by its /64).
    Address(IpAddr),
}

impl Owner {
    fn policy_name(&self) -> &'static str {
        match self {
            Owner::Key(_, class) => class.name(),
            Owner::Token(_) => "token",
            Owner::Address(_) => "ip",
        }
    }
}

type Limiter = Gcra<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

struct Entry {
    limiter: Limiter,
    bucket: Bucket,
}

/// Where a request stands with one bucket.
#[derive(Debug, Clone)]
pub struct Standing {
    policy: &'static str,
    bucket: Bucket,
    remaining: u32,
    /// Seconds until a request is allowed again (refused requests).
    retry_after: Option<u64>,
}

impl Standing {
    pub fn refused(&self) -> bool {
        self.retry_after.is_some()
    }

    pub fn retry_after(&self) -> u64 {
        self.retry_after.unwrap_or(0)
    }

    pub fn policy(&self) -> &'static str {
        self.policy
    }

    /// The IETF `RateLimit-Policy` and `RateLimit` headers
    /// (draft-ietf-httpapi-ratelimit-headers): the quota `q` is the burst,
    /// refilled over the window `w`; `r` is what is left and `t` the
    /// seconds until the bucket is full again (or, refused, until the next
    /// request is allowed).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        let window = (f64::from(self.bucket.burst) / self.bucket.per_second)
            .ceil()
            .max(1.0) as u64;
        let reset = match self.retry_after {
            Some(secs) => secs,
            None => (f64::from(self.bucket.burst - self.remaining.min(self.bucket.burst))
                / self.bucket.per_second)
                .ceil() as u64,
        };
        let name = self.policy;
        let policy = format!("\"{name}\";q={};w={window}", self.bucket.burst);
        let state = format!("\"{name}\";r={};t={reset}", self.remaining);
        for (header, value) in [(&RATELIMIT_POLICY, policy), (&RATELIMIT, state)] {
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header.clone(), v);
            }
        }
    }
}

pub static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
pub static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// The longest a bucket may take to refill from empty (`burst /
/// per_second`), so that forgetting an idle bucket never hands out more.
pub const MAX_REFILL_SECS: u64 = 3600;

/// Whether a bucket is one this service takes: a rate above 0 and at most
/// 10^6 per second, a burst from 1 to 10^6, refilled within
/// [`MAX_REFILL_SECS`].
pub fn valid_bucket(per_second: f64, burst: u32) -> bool {
    per_second.is_finite()
        && per_second > 0.0
        && per_second <= 1e6
        && (1..=1_000_000).contains(&burst)
        && f64::from(burst) / per_second <= MAX_REFILL_SECS as f64
}

/// Most buckets kept at once; the least used go first (an evicted bucket
/// comes back full, which only matters for one that was not idle).
const MAX_BUCKETS: u64 = 200_000;

/// Every bucket of this node.
pub struct RateLimiter {
    settings: RateLimitSettings,
    buckets: moka::sync::Cache<Owner, Arc<Entry>>,
    clock: DefaultClock,
}

impl RateLimiter {
    pub fn new(settings: &RateLimitSettings) -> Self {
        Self {
            settings: settings.clone(),
            buckets: moka::sync::Cache::builder()
                .max_capacity(MAX_BUCKETS)
                // A bucket idle this long is full again anyway (limits
                // refill within MAX_REFILL_SECS).
                .time_to_idle(Duration::from_secs(MAX_REFILL_SECS))
                .build(),
            clock: DefaultClock::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// The per-key limits of a tenant with `own` limits.
    pub fn effective(&self, own: &TenantRateLimits) -> EffectiveRateLimits {
        let s = &self.settings;
        EffectiveRateLimits {
            search: own.search.unwrap_or(Bucket {
                per_second: s.search_per_second,
                burst: s.search_burst,
            }),
            write: own.write.unwrap_or(Bucket {
                per_second: s.write_per_second,
                burst: s.write_burst,
            }),
        }
    }

    /// The bucket of a client address.
    pub fn address_bucket(&self) -> Bucket {
        Bucket {
            per_second: self.settings.ip_per_second,
            burst: self.settings.ip_burst,
        }
    }

    /// Takes one request from `owner`'s bucket, which holds `bucket` (a
    /// bucket whose limits changed starts again, full, with the new ones).
    pub fn take(&self, owner: Owner, bucket: Bucket) -> Standing {
        let policy = owner.policy_name();
        let fresh = || {
            Arc::new(Entry {
                limiter: Gcra::direct_with_clock(quota(bucket), self.clock.clone())
                    .with_middleware::<StateInformationMiddleware>(),
                bucket,
            })
        };
        // One bucket per owner, however many requests arrive at once.
        let mut entry = self.buckets.get_with(owner.clone(), fresh);
        if entry.bucket != bucket {
            entry = fresh();
            self.buckets.insert(owner, entry.clone());
        }
        match entry.limiter.check() {
            Ok(state) => Standing {
                policy,
                bucket,
                remaining: state.remaining_burst_capacity(),
                retry_after: None,
            },
            Err(not_until) => {
                metrics::counter!(RATE_LIMITED, "policy" => policy).increment(1);
                let wait = not_until.wait_time_from(self.clock.now());
                Standing {
                    policy,
                    bucket,
                    remaining: 0,
                    retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
                }
            }
        }
    }
}

fn quota(b: Bucket) -> Quota {
    let burst = NonZeroU32::new(b.burst).unwrap_or(NonZeroU32::MIN);
    // Settings and tenant limits keep `per_second` in (0, 10^6].
    let period = Duration::from_secs_f64(1.0 / b.per_second.clamp(1e-6, 1e6));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(burst)
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the rightmost `X-Forwarded-For` address that is not one.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // From the right: our proxies' entries, then the first the client did
    // not write. An entry that is not an address (a port, `unknown`) ends
    // the walk: what lies left of it is not vouched for.
    for entry in entries.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => continue,
            Ok(ip) => return ip,
            Err(_) => return peer,
        }
    }
    peer
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RateLimitSettings {
        crate::config::Settings::defaults().rate_limits.clone()
    }

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_wait() {
        let limiter = RateLimiter::new(&settings());
        let bucket = Bucket {
            per_second: 1.0,
            burst: 3,
        };
        let owner = Owner::Key("k".into(), Class::Search);
        for left in [2, 1, 0] {
            let s = limiter.take(owner.clone(), bucket);
            assert!(!s.refused());
            assert_eq!(s.remaining, left);
        }
        let refused = limiter.take(owner.clone(), bucket);
        assert!(refused.refused());
        assert_eq!(refused.retry_after(), 1);
        let mut h = HeaderMap::new();
        refused.write_headers(&mut h);
        assert_eq!(h[&RATELIMIT_POLICY], "\"search\";q=3;w=3");
        assert_eq!(h[&RATELIMIT], "\"search\";r=0;t=1");
        // Another key, and the same key's other class, are untouched.
        assert!(
            !limiter
                .take(Owner::Key("j".into(), Class::Search), bucket)
                .refused()
        );
        assert!(
            !limiter
                .take(Owner::Key("k".into(), Class::Write), bucket)
                .refused()
        );
        // New limits start a new bucket.
        let bigger = Bucket {
            per_second: 1.0,
            burst: 5,
        };
        assert!(!limiter.take(owner, bigger).refused());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let trusted = vec!["10.0.0.0/8".parse::<ipnet::IpNet>().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.7".parse().unwrap());
        // The client may write anything left of what the proxy appended.
        assert_eq!(
            client_address(proxy, &h, &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        let stranger: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(client_address(stranger, &h, &trusted), stranger);
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        // Something the proxy chain wrote that is no address: the walk stops.
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 1.2.3.4:5555, 10.0.0.7".parse().unwrap(),
        );
        assert_eq!(client_address(proxy, &h, &trusted), proxy);
    }

    #[test]
    fn requests_fall_into_classes() {
        assert_eq!(Class::of(&Method::POST, "/v1/tenants/{t}/search"), Class::Search);
        assert_eq!(
            Class::of(&Method::GET, "/v1/tenants/{t}/products/{id}"),
            Class::Search
        );
        assert_eq!(Class::of(&Method::POST, "/v1/tenants/{t}/products"), Class::Write);
        assert_eq!(
            Class::of(&Method::DELETE, "/v1/tenants/{t}/products/{id}"),
            Class::Write
        );
    }
}
