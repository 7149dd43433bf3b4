//! Domain types of sspr-fleet: identifiers, roles, access scope and the clock.
//!
//! This crate has no IO and no async. Everything here is plain data and pure functions, so every
//! other crate can depend on it and tests can use it without a runtime.

mod access;
mod clock;
mod ids;

pub use access::{Access, Role, RoleParseError, TenantScope};
pub use clock::{Clock, ManualClock, SystemClock};
pub use ids::{ApiKeyId, AuditId, CredentialId, IdParseError, TenantId};
