//! Settings of the client. Every documented limit is here, scaled by one factor, because
//! Microsoft changes them and tests need smaller ones.

use std::time::Duration;

/// Tenant size classes of the identity-and-access throttling limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SizeClass {
    /// Fewer than 50 users: 3,500 resource units per 10 s per app.
    Small,
    /// 50 to 500 users: 5,000.
    Medium,
    /// More than 500 users: 8,000.
    Large,
}

impl SizeClass {
    /// The class of a tenant with `users` users.
    pub fn from_users(users: u64) -> Self {
        if users < 50 {
            SizeClass::Small
        } else if users <= 500 {
            SizeClass::Medium
        } else {
            SizeClass::Large
        }
    }

    /// Documented resource units per 10 s for one app in a tenant of this class.
    pub fn resource_units_per_10s(self) -> f64 {
        match self {
            SizeClass::Small => 3_500.0,
            SizeClass::Medium => 5_000.0,
            SizeClass::Large => 8_000.0,
        }
    }
}

/// Retries of one call.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Most attempts of one call, the first included.
    pub max_attempts: u32,
    /// First backoff when no `Retry-After` is given; doubles each attempt, with full jitter.
    pub base_delay: Duration,
    /// Longest single backoff.
    pub max_delay: Duration,
    /// Longest total time one call may spend retrying.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            budget: Duration::from_secs(300),
        }
    }
}

/// How members are added to a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberAdd {
    /// `PATCH /groups/{id}` with `members@odata.bind`, 20 members per request (atomic), up to
    /// 20 such requests per `$batch`. Graph's write limits count requests, so this is one
    /// write per 20 members (the per-request cost is documented; that a bind of 20 costs one
    /// write is not confirmed by Microsoft).
    #[default]
    Bind,
    /// `POST /groups/{id}/members/$ref`, one member per request (one write each), 20 per
    /// `$batch`.
    Ref,
}

/// Everything the client needs to know.
#[derive(Debug, Clone)]
pub struct GraphConfig {
    /// Base URL of Graph, without `/v1.0` (`https://graph.microsoft.com`).
    pub graph_url: String,
    /// Base URL of the identity platform (`https://login.microsoftonline.com`).
    pub login_url: String,
    /// The scope asked for in token requests.
    pub scope: String,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Timeout to open a connection.
    pub connect_timeout: Duration,
    /// Most Graph requests in flight across all tenants.
    pub max_concurrency: usize,
    /// Most Graph requests in flight per tenant. With 1, no request of a tenant can be sent
    /// while a `Retry-After` from that tenant is on its way back, so none arrives early.
    pub per_tenant_concurrency: usize,
    /// Share of the documented per-tenant limits to use (the rest is left for the tenant's
    /// other apps).
    pub rate_share: f64,
    /// Share of the documented app-wide limits (resource units per app, 35,000 writes per 5
    /// minutes per app) this process uses. They are this app's alone, shared only by its own
    /// replicas: with N replicas of one app registration, 1/N of this each.
    pub app_share: f64,
    /// Share of the reporting APIs' app-wide limit (122 report reads per 10 s per app across
    /// all tenants; `/reports/**`, `/auditLogs/**`) this process uses. Like `app_share`, the
    /// limit is this app's alone, shared only by its own replicas: with N replicas that read
    /// reports, 0.9 / N each. The per-tenant reporting limit (5 per 10 s per app and tenant)
    /// is used whole.
    pub report_share: f64,
    /// Scales every documented limit (1.0 = Microsoft's numbers; tests use smaller ones).
    pub limits_scale: f64,
    /// How members are added to groups.
    pub member_add: MemberAdd,
    /// Retries of one call.
    pub retry: RetryPolicy,
    /// The circuit breaker per tenant.
    pub breaker: crate::BreakerPolicy,
    /// Tokens are refreshed this long before they expire.
    pub token_refresh_ahead: Duration,
    /// A 404 (or a 400 naming a missing object) about an object this client created within
    /// this window is replication delay and is retried.
    pub replication_window: Duration,
    /// After a 429, the tenant's calls cost double for this long.
    pub throttle_slowdown: Duration,
    /// Most pages one listing follows through `@odata.nextLink` before it fails with
    /// [`crate::GraphError::Paging`] ([`MAX_PAGES`] by default).
    pub max_pages: usize,
}

/// The default cap on the pages of one listing: 10,000 pages of Graph's largest page size
/// (999) are ten million objects, far beyond any tenant this product serves.
pub const MAX_PAGES: usize = 10_000;

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            graph_url: "https://graph.microsoft.com".into(),
            login_url: "https://login.microsoftonline.com".into(),
            scope: "https://graph.microsoft.com/.default".into(),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_concurrency: 64,
            per_tenant_concurrency: 1,
            rate_share: 0.5,
            app_share: 0.9,
            report_share: 0.9,
            member_add: MemberAdd::Bind,
            limits_scale: 1.0,
            retry: RetryPolicy::default(),
            breaker: crate::BreakerPolicy::default(),
            token_refresh_ahead: Duration::from_secs(300),
            replication_window: Duration::from_secs(120),
            throttle_slowdown: Duration::from_secs(300),
            max_pages: MAX_PAGES,
        }
    }
}

impl GraphConfig {
    /// A configuration for the given base URLs, other settings at their defaults.
    pub fn new(graph_url: impl Into<String>, login_url: impl Into<String>) -> Self {
        Self {
            graph_url: graph_url.into().trim_end_matches('/').to_owned(),
            login_url: login_url.into().trim_end_matches('/').to_owned(),
            ..Self::default()
        }
    }
}
