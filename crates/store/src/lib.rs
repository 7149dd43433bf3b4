//! Persistence for sspr-fleet on SQLite (the default, embedded) and PostgreSQL (for several
//! replicas), through sqlx.
//!
//! The backend is chosen by the URL scheme. Both dialects share one set of queries, written in
//! the SQL both accept (`$N` parameters, `RETURNING`, times as Unix milliseconds in `BIGINT`);
//! where they must differ, the code says so next to the query. Migrations live in
//! `migrations/{sqlite,postgres}` with the same file names and are embedded in the binary.
//!
//! This crate depends on no HTTP, Graph or CLI code.

mod api_keys;
mod audit;
mod error;
mod idempotency;
mod jobs;
mod pool;
mod portal_credentials;
mod progress;
mod reports;
mod rollouts;
mod tenants;
mod time;
mod webhooks;

pub use api_keys::{ApiKey, NewApiKey};
pub use audit::{AuditEntry, AuditFilter, NewAuditEntry};
pub use error::StoreError;
pub use idempotency::{IdempotencyClaim, IdempotentRequest, StoredAnswer};
pub use jobs::{Job, JobState, JobStateParseError, NewJob};
pub use pool::{Backend, MigrationReport, Store, StoreOptions};
pub use portal_credentials::PortalCredential;
pub use progress::{ACTIVE_ROLLOUT_STATES, FINISHED_TENANT_STATES, FinishStats};
pub use reports::{SsprReport, SsprReportFilter, SsprReportRow};
pub use rollouts::{
    NewEvent, NewRollout, NewRolloutTenant, Rollout, RolloutEvent, RolloutFilter, RolloutTenant,
    Snapshot, Task, TaskFilter, TenantUpdate,
};
pub use tenants::{
    CredentialSummary, LicenceLevel, NewCredential, NewTenant, StoredCredential, Tenant,
    TenantFilter, TenantPatch, TenantStatus, VerificationRecord,
};
pub use webhooks::{
    AttemptRecord, DeliveryAttempt, DeliveryCount, DeliveryState, DeliveryStateParseError,
    NewDelivery, WEBHOOK_DELIVER_KIND, WEBHOOK_JOB_MAX_ATTEMPTS, WEBHOOK_QUEUE, WebhookDelivery,
    WebhookPatch, WebhookSubscription,
};
