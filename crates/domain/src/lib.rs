//! Domain types of sspr-fleet: identifiers, roles, access scope, the clock, the desired SSPR
//! state of a rollout and its validation, the tenant state machine and wave planning, and the
//! redaction of client values from error messages.
//!
//! This crate has no IO and no async. Everything here is plain data and pure functions, so every
//! other crate can depend on it and tests can use it without a runtime.

mod access;
mod clock;
mod ids;
pub mod methods_plan;
mod policy;
mod problem;
mod reach;
mod redact;
pub mod reset_methods;
pub mod rollout;
mod rollout_spec;
mod webhook;

pub use access::{Access, Role, RoleParseError, TenantScope};
pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{
    ApiKeyId, AuditId, CredentialId, DeliveryId, IdParseError, JobId, MessageId, RolloutId,
    SnapshotId, TaskId, TenantId, WebhookId,
};
pub use policy::{
    AuthenticatorMode, AuthenticatorSpec, CampaignSpec, DOMAIN_PLACEHOLDER, MAX_PILOT_MEMBERS,
    MethodsSpec, PilotGroupSpec, ScopeMode, SsprPolicy,
};
pub use problem::FieldProblem;
pub use reach::{Reach, completion_tally, scoped_reason, scoped_rollout_detail};
pub use redact::{is_identifier, redact_field_path, redact_serde_message};
pub use rollout_spec::{Approval, Gates, MAX_SELECTED_IDS, RolloutSpec, TenantSelector, WavePlan};
pub use webhook::{SMS_RISK_EVENT, TEST_EVENT_TYPE, WebhookEventType, WebhookEventTypeParseError};
