//! The tenant registry of sspr-fleet: onboarding customer tenants, the vault that keeps their
//! credentials encrypted, connectivity checks (readiness reports), bulk import and background
//! re-verification.
//!
//! This crate must not depend on actix-web; the HTTP surface lives in `crates/api`. It reaches
//! the database only through `sspr-store` and Microsoft only through `sspr-graph`.

pub mod import;
pub mod onboarding;
mod portal;
pub mod report;
pub mod reverify;
mod service;
pub mod vault;

pub use import::{ImportFileError, ImportOutcome, ImportRow, RowError, parse_csv, parse_json};
pub use onboarding::{
    CredentialInput, EntraTenantRef, FieldProblem, TenantInput, ValidTenant,
    certificate_thumbprint_s256, failure_code,
};
pub use portal::{PortalCredentialInput, PortalSession};
pub use report::{REQUIRED_PERMISSIONS, ReadinessReport, RequiredPermission};
pub use reverify::Reverifier;
pub use service::{
    Registry, RegistryError, RegistrySettings, RewrapReport, TenantUpdate, Upserted,
};
pub use vault::{Aad, MasterKeyMaterial, Vault, VaultError};
