//! Inbound rate limits: a token bucket per API key for authenticated requests, and one per
//! client address for requests without credentials and for failed authentications, so that
//! guessing keys costs the guesser, not the database. Over the limit: 429 `rate_limited` with
//! `Retry-After` in seconds. The probes (`/healthz`, `/readyz`) are never limited: an
//! orchestrator must always be able to ask.
//!
//! The client address is the TCP peer: `X-Forwarded-For` is not trusted, because anyone can
//! send it. Behind a reverse proxy every anonymous caller shares the proxy's bucket; the
//! per-key limit is unaffected. IPv6 addresses count per /64, the block one host usually holds.
//!
//! The keyed state is bounded: buckets that have refilled completely carry no information and
//! are dropped (`retain_recent`) every [`CLEAN_EVERY`] checks, and at once when more than
//! [`MAX_TRACKED`] keys are tracked.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use actix_web::{
    body::{EitherBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};

use crate::{AppState, error::ApiError};

/// Paths that are never limited.
const EXEMPT: [&str; 2] = ["/healthz", "/readyz"];
/// Checks between two sweeps of full buckets.
const CLEAN_EVERY: u64 = 4096;
/// Tracked keys above which a sweep runs at once.
const MAX_TRACKED: usize = 100_000;

/// The limits: requests per second and the burst allowed above that rate. A rate of 0
/// switches limiting off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Sustained requests per second per key (or per client address).
    pub per_second: u32,
    /// Requests allowed at once before the rate applies.
    pub burst: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { per_second: 50, burst: 100 }
    }
}

/// Who a bucket belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    /// An API key, by its id.
    Key(String),
    /// A client address (IPv6 masked to /64).
    Address(IpAddr),
}

#[derive(Debug)]
struct Limiter {
    buckets: DefaultKeyedRateLimiter<Subject>,
    checks: AtomicU64,
}

/// The shared limiter of one process: every HTTP worker holds a clone of the same buckets.
#[derive(Debug, Clone)]
pub struct RateLimits {
    inner: Option<Arc<Limiter>>,
}

impl RateLimits {
    /// Limits as configured; `per_second = 0` means none.
    pub fn new(settings: RateLimitSettings) -> Self {
        let (Some(rate), Some(burst)) =
            (NonZeroU32::new(settings.per_second), NonZeroU32::new(settings.burst))
        else {
            return Self::off();
        };
        let quota = Quota::per_second(rate).allow_burst(burst);
        let inner = Limiter { buckets: RateLimiter::keyed(quota), checks: AtomicU64::new(0) };
        Self { inner: Some(Arc::new(inner)) }
    }

    /// No limits.
    pub fn off() -> Self {
        Self { inner: None }
    }

    fn check(&self, subject: Subject) -> Result<(), ApiError> {
        let Some(limiter) = &self.inner else { return Ok(()) };
        let checks = limiter.checks.fetch_add(1, Ordering::Relaxed);
        if checks % CLEAN_EVERY == CLEAN_EVERY - 1 || limiter.buckets.len() > MAX_TRACKED {
            limiter.buckets.retain_recent();
            limiter.buckets.shrink_to_fit();
        }
        limiter.buckets.check_key(&subject).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.buckets.clock().now());
            // Whole seconds, rounded up: a client that waits that long gets through.
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::RateLimited { retry_after_secs: secs.max(1) }
        })
    }

    /// Counts one request of an authenticated key.
    pub(crate) fn check_key(&self, key_id: &str) -> Result<(), ApiError> {
        self.check(Subject::Key(key_id.to_owned()))
    }

    /// Counts one request from `addr` (no credentials, or credentials that failed).
    pub(crate) fn check_address(&self, addr: Option<IpAddr>) -> Result<(), ApiError> {
        // No peer address (a Unix socket, a test request): one shared bucket.
        let addr = addr.map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), masked);
        self.check(Subject::Address(addr))
    }

    /// How many buckets are tracked (for tests).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.inner.as_ref().map_or(0, |l| l.buckets.len())
    }
}

/// IPv4 as is; IPv6 cut to its /64 (IPv4-mapped addresses count as IPv4).
fn masked(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Whether `path` is limited at all.
pub(crate) fn is_exempt(path: &str) -> bool {
    EXEMPT.contains(&path)
}

/// Counts a failed authentication against the client's address: the answer is 429 once the
/// address is over its limit, 401 before.
pub(crate) fn refuse(state: &AppState, peer: Option<IpAddr>, err: ApiError) -> ApiError {
    if matches!(err, ApiError::Unauthorized)
        && let Err(limited) = state.rate_limits.check_address(peer)
    {
        return limited;
    }
    err
}

/// Whether the route authenticates its requests itself and counts them there (per key when
/// the key is valid, per address when it is not): the `/v1` and `/metrics` scopes and the
/// status pages. Matched like the router matches them; a path this misses is counted here
/// as well, never not at all.
fn authenticates_itself(path: &str) -> bool {
    let under = |prefix: &str| {
        path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    let rollout_page = path
        .strip_prefix("/status/rollouts/")
        .is_some_and(|id| !id.is_empty() && !id.contains('/'));
    under("/v1") || under("/metrics") || path == crate::status::LIST_PATH || rollout_page
}

/// App-wide middleware: one bucket per client address for every request that no valid key
/// moves to its key's bucket. Requests with an `Authorization` header to routes that
/// authenticate ([`authenticates_itself`]) are counted there. Elsewhere (the documents, the
/// interactive docs, unknown paths) the header is checked here: a valid key is counted per
/// key, anything else (no header, a malformed or unknown key) per address, so sending any
/// `Authorization` header does not escape the anonymous limit.
pub(crate) async fn anonymous(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let credentials = req.headers().contains_key(header::AUTHORIZATION);
    if is_exempt(req.path()) || (credentials && authenticates_itself(req.path())) {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let peer = req.peer_addr().map(|a| a.ip());
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => match crate::auth::page_token(req.headers()) {
            Some(token) if credentials => {
                match crate::auth::caller_for_token(state, &token).await {
                    Ok(caller) => state.rate_limits.check_key(caller.key_id.as_str()),
                    // Unknown or revoked key, or no answer from the database: the address.
                    Err(_) => state.rate_limits.check_address(peer),
                }
            }
            _ => state.rate_limits.check_address(peer),
        },
        None => Ok(()),
    };
    match verdict {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(err) => {
            tracing::debug!(peer = ?peer, "rate limited");
            Ok(req.error_response(err).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, burst: u32) -> RateLimits {
        RateLimits::new(RateLimitSettings { per_second, burst })
    }

    #[test]
    fn a_key_gets_its_burst_then_429_with_a_retry_after() {
        let l = limits(1, 3);
        for _ in 0..3 {
            assert!(l.check_key("key_a").is_ok());
        }
        match l.check_key("key_a") {
            Err(ApiError::RateLimited { retry_after_secs }) => assert_eq!(retry_after_secs, 1),
            other => panic!("expected rate_limited, got {other:?}"),
        }
        // Another key and an address have their own buckets.
        assert!(l.check_key("key_b").is_ok());
        assert!(l.check_address(Some("192.0.2.1".parse().unwrap())).is_ok());
    }

    #[test]
    fn zero_switches_limiting_off() {
        let l = limits(0, 10);
        for _ in 0..1000 {
            assert!(l.check_key("key_a").is_ok());
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn ipv6_addresses_share_a_bucket_per_64() {
        let l = limits(1, 1);
        assert!(l.check_address(Some("2001:db8:1:2::1".parse().unwrap())).is_ok());
        assert!(l.check_address(Some("2001:db8:1:2::ffff".parse().unwrap())).is_err());
        assert!(l.check_address(Some("2001:db8:1:3::1".parse().unwrap())).is_ok());
        assert_eq!(
            masked("::ffff:192.0.2.7".parse().unwrap()),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn full_buckets_are_swept_so_state_stays_bounded() {
        // A high rate refills a bucket within microseconds, so swept buckets are full ones.
        let l = limits(1_000_000, 1);
        for i in 0..(CLEAN_EVERY * 2) {
            let _ = l.check_key(&format!("key_{i}"));
        }
        assert!(l.tracked() < CLEAN_EVERY as usize, "{} buckets kept", l.tracked());
    }

    #[test]
    fn only_routes_that_authenticate_count_their_own_credentials() {
        for path in ["/v1", "/v1/me", "/v1/tenants:verify", "/metrics", "/status"] {
            assert!(authenticates_itself(path), "{path}");
        }
        assert!(authenticates_itself("/status/rollouts/rol_1"));
        for path in [
            "/openapi.json",
            "/docs/",
            "/docs/swagger-initializer.js",
            "/v1x",
            "/metricsx",
            "/status/",
            "/status/other",
            "/status/rollouts/",
            "/status/rollouts/a/b",
            "/",
        ] {
            assert!(!authenticates_itself(path), "{path}");
        }
    }

    #[test]
    fn probes_are_exempt() {
        assert!(is_exempt("/healthz") && is_exempt("/readyz"));
        assert!(!is_exempt("/v1/me") && !is_exempt("/metrics") && !is_exempt("/healthz/"));
    }
}
