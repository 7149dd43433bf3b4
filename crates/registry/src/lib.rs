//! The tenant registry of sspr-fleet: onboarding customer tenants, the vault that keeps their
//! credentials encrypted, connectivity checks and discovery.
//!
//! This crate must not depend on actix-web; the HTTP surface lives in `crates/api`. So far it
//! holds the credential vault and the validation of onboarding input; storage, the API and
//! verification arrive with the rest of issue 4.

pub mod onboarding;
pub mod vault;

pub use onboarding::{
    CredentialInput, EntraTenantRef, FieldProblem, certificate_thumbprint_s256, failure_code,
};
pub use vault::{Aad, MasterKeyMaterial, Vault, VaultError};
