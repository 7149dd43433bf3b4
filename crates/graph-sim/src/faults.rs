//! Faults a tenant can be set to show: latency, 503/504 storms, dropped connections,
//! replication delay for new groups, and a scripted queue of exact failures for tests.

use std::collections::VecDeque;

/// The faults of one tenant. All off by default.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Added latency per request, uniformly between the two bounds, in simulated ms.
    pub latency_ms: (u64, u64),
    /// Share of requests answered 503 with `Retry-After`.
    pub rate_503: f64,
    /// The `Retry-After` of those 503s, in seconds.
    pub retry_after_503_secs: u64,
    /// Share of requests answered 504 (no `Retry-After`).
    pub rate_504: f64,
    /// Share of requests whose connection is dropped before a response.
    pub rate_drop: f64,
    /// Seconds during which a new group answers 404 to reads by id and cannot be referenced.
    pub replication_delay_secs: u64,
    /// Consent was revoked: no new tokens, and existing tokens are refused.
    pub consent_revoked: bool,
    /// The app's client secret has expired in this tenant.
    pub secret_expired: bool,
    /// Exact failures for the next requests, served first, in order.
    pub script: VecDeque<ScriptedFault>,
}

/// One scripted failure.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedFault {
    /// 429, 503, 504, or 0 to drop the connection.
    pub status: u16,
    /// `Retry-After` in seconds; none when absent (a 429 without it is allowed, as Graph does
    /// for some resources).
    #[serde(default)]
    pub retry_after: Option<u64>,
}

/// What the dispatcher should do with a request before routing it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Injected {
    None,
    Status { status: u16, retry_after: Option<u64> },
    Drop,
}
