//! The one way sspr-fleet talks to Microsoft: the Microsoft Graph v1.0 and identity platform
//! client, with a token cache, rate limits, retries honouring `Retry-After`, `$batch`, a
//! circuit breaker per tenant, metrics and spans; and, in [`portal`], a client of the Azure
//! portal's undocumented, unsupported API for the legacy SSPR policy (opt-in only).
//!
//! **Invariants:** no database access here (callers pass tenants and credentials in), and no
//! code or types shared with `crates/graph-sim`: both are written from the Graph facts on their
//! own, so a misreading in one is caught by the other.

mod breaker;
mod calls;
mod client;
mod config;
mod credentials;
mod error;
mod limits;
mod metrics;
pub mod portal;
mod report_limits;
mod token;
pub mod types;

pub use breaker::BreakerPolicy;
pub use calls::{AddMember, BatchItem, BatchOutcome};
pub use client::{GraphClient, Tenant};
pub use config::{GraphConfig, MAX_PAGES, MemberAdd, RetryPolicy, SizeClass};
pub use credentials::{Credential, CredentialError};
pub use error::{GraphError, PagingProblem};
pub use metrics::{
    EndpointStats, LATENCY_BUCKETS_MS, MetricsSnapshot, ReportWaits, is_report_endpoint,
};
pub use portal::{
    DEFAULT_PORTAL_URL, Enablement, PORTAL_RESOURCE, PortalClient, PortalConfig, PortalSspr,
    PortalToken, portal_policy_body,
};
pub use report_limits::ReportPriority;
pub use token::TokenInfo;
pub use types::ALL_MEMBERS_RULE;
