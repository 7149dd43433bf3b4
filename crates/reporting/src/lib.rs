//! Reporting for sspr-fleet: what dashboards and PSA tools see. SSPR readiness per tenant and
//! across the fleet, the rollout progress read model (throughput, ETA), the Prometheus
//! metrics, and signed webhooks for PSA tools and automation.
//!
//! This crate must not depend on actix-web; the HTTP surface lives in `crates/api`. It reaches
//! the database only through `sspr-store` and Microsoft only through `sspr-graph`.

pub mod metrics;
pub mod progress;
pub mod readiness;
pub mod spreadsheet;
pub mod webhooks;
