//! Portal credentials: the optional second credential of a tenant, an administrator's
//! delegated refresh token for the Azure portal's undocumented SSPR policy API (the opt-in,
//! **unsupported** `portal` scope mode; see `sspr_graph::portal`).
//!
//! The refresh token is sealed like every other secret, bound to its tenant, the kind
//! `portal_refresh_token` and its row. The identity platform may answer a new refresh token
//! each time one is used; the new one is sealed in place of the old, fenced on the old
//! ciphertext, so two processes using the same credential never overwrite a newer token with
//! an older one.

use secrecy::{ExposeSecret, SecretString};
use sspr_domain::{CredentialId, FieldProblem, TenantId};
use sspr_graph::{GraphError, PortalClient, PortalToken};
use sspr_store::{PortalCredential, Tenant, TenantStatus};

use crate::{
    Registry, RegistryError, failure_code,
    vault::{Aad, VaultError},
};

/// The vault binding's kind for a portal refresh token.
const SECRET_KIND: &str = "portal_refresh_token";

/// Longest refresh token accepted (Microsoft's are about 1–2 KB).
const MAX_REFRESH_TOKEN: usize = 16 * 1024;

/// A portal credential to store: an administrator's delegated refresh token for the Azure
/// portal's API (unsupported by Microsoft; see the `portal` scope mode).
#[derive(Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortalCredentialInput {
    /// The administrator's refresh token (for example a GDAP partner user's). Never shown
    /// again.
    #[schema(value_type = String, format = Password)]
    pub refresh_token: SecretString,
    /// The client id the refresh token was issued to, if the token endpoint needs it.
    #[serde(default)]
    pub client_id: Option<String>,
}

impl std::fmt::Debug for PortalCredentialInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalCredentialInput")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl PortalCredentialInput {
    /// Field problems, without the values.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        let token = self.refresh_token.expose_secret();
        if token.trim().is_empty() {
            out.push(FieldProblem::new("refresh_token", "required", "a refresh token is required"));
        } else if token.len() > MAX_REFRESH_TOKEN {
            out.push(FieldProblem::new(
                "refresh_token",
                "too_long",
                format!("at most {MAX_REFRESH_TOKEN} bytes"),
            ));
        } else if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push(FieldProblem::new(
                "refresh_token",
                "invalid_format",
                "a refresh token has no spaces or control characters",
            ));
        }
        if let Some(c) = &self.client_id {
            let ok = !c.trim().is_empty()
                && c.len() <= 100
                && c.trim().chars().all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
            if !ok {
                out.push(FieldProblem::new(
                    "client_id",
                    "invalid_format",
                    "an application (client) id: letters, digits, '-', '_' or '.', at most 100",
                ));
            }
        }
        out
    }
}

/// A delegated token for the portal's API in one tenant, ready to use.
#[derive(Debug, Clone)]
pub struct PortalSession {
    /// The client (one per process).
    pub client: PortalClient,
    /// The delegated access token.
    pub token: PortalToken,
}

/// The stable code of a refused portal token request: `refresh_token_invalid` when the
/// identity platform refuses the grant itself (revoked, expired or for another tenant), else
/// the registry's usual codes.
pub(crate) fn portal_failure_code(e: &GraphError) -> &'static str {
    match e {
        GraphError::Token { error, .. } if error == "invalid_grant" => "refresh_token_invalid",
        other => failure_code(other),
    }
}

fn aad(tenant: &TenantId, id: &CredentialId) -> Aad {
    Aad { tenant_id: tenant.to_string(), kind: SECRET_KIND.into(), row_id: id.to_string() }
}

/// What the portal's token endpoint is asked for: the tenant's Entra id, or what it was
/// registered as.
fn tenant_ref(t: &Tenant) -> String {
    t.entra_tenant_id.clone().unwrap_or_else(|| t.entra_ref.clone())
}

impl Registry {
    /// The client of the portal's API.
    pub fn portal(&self) -> &PortalClient {
        &self.portal
    }

    /// Stores (or replaces) a tenant's portal credential. With `check`, the refresh token
    /// must first obtain a delegated token for the portal's API; if it does not, nothing is
    /// stored (`CredentialsRejected`). A refresh token the identity platform answered with
    /// during the check is stored in place of the given one.
    pub async fn set_portal_credential(
        &self,
        id: &TenantId,
        input: PortalCredentialInput,
        check: bool,
    ) -> Result<PortalCredential, RegistryError> {
        let problems = input.problems();
        if !problems.is_empty() {
            return Err(RegistryError::Invalid(problems));
        }
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(RegistryError::NotFound);
        }
        let mut refresh_token = input.refresh_token.clone();
        if check {
            let client = self.portal_client_for(input.client_id.as_deref());
            match client.token(&tenant_ref(&tenant), &refresh_token).await {
                Ok(token) => {
                    if let Some(rotated) = token.refresh_token() {
                        refresh_token = rotated.clone();
                    }
                }
                Err(e) => {
                    return Err(RegistryError::CredentialsRejected {
                        code: portal_failure_code(&e),
                        detail: e.reason(),
                    });
                }
            }
        }
        let cred_id = CredentialId::new();
        let now = self.clock.now();
        let sealed = self
            .vault
            .seal(refresh_token.expose_secret().as_bytes(), &aad(id, &cred_id))
            .map_err(RegistryError::Vault)?;
        let cred = PortalCredential {
            id: cred_id,
            tenant_id: id.clone(),
            client_id: input.client_id.map(|c| c.trim().to_owned()),
            sealed,
            key_id: self.vault.current_key_id().to_owned(),
            created_at: now,
            updated_at: now,
        };
        if !self.store.put_portal_credential(&cred).await? {
            return Err(RegistryError::NotFound);
        }
        Ok(cred)
    }

    /// The tenant's portal credential, if it has one (its sealed value is never shown).
    pub async fn portal_credential(
        &self,
        id: &TenantId,
    ) -> Result<Option<PortalCredential>, RegistryError> {
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(RegistryError::NotFound);
        }
        Ok(self.store.portal_credential(id).await?)
    }

    /// Deletes the tenant's portal credential; `Ok(false)` when it had none.
    pub async fn remove_portal_credential(&self, id: &TenantId) -> Result<bool, RegistryError> {
        let tenant = self.get(id).await?;
        if tenant.status == TenantStatus::Offboarded {
            return Err(RegistryError::NotFound);
        }
        Ok(self.store.delete_portal_credential(id).await?)
    }

    /// A delegated token for the portal's API in `tenant`, from its stored portal credential.
    /// `Ok(None)` when the tenant has none. A refusal by the identity platform is the
    /// `GraphError`; a refresh token rotated by the identity platform is sealed in place.
    pub async fn portal_session(
        &self,
        tenant: &Tenant,
    ) -> Result<Option<Result<PortalSession, GraphError>>, RegistryError> {
        let Some(stored) = self.store.portal_credential(&tenant.id).await? else {
            return Ok(None);
        };
        let opened = self
            .vault
            .open(&stored.sealed, &aad(&tenant.id, &stored.id))
            .map_err(RegistryError::Vault)?;
        let text = String::from_utf8(opened.expose_secret().clone())
            .map_err(|_| RegistryError::Vault(VaultError::Malformed))?;
        let client = self.portal_client_for(stored.client_id.as_deref());
        let token = match client.token(&tenant_ref(tenant), &SecretString::from(text)).await {
            Ok(t) => t,
            Err(e) => return Ok(Some(Err(e))),
        };
        if let Some(rotated) = token.refresh_token() {
            let sealed = self
                .vault
                .seal(rotated.expose_secret().as_bytes(), &aad(&tenant.id, &stored.id))
                .map_err(RegistryError::Vault)?;
            // Fenced on the value used: if another process stored a newer token meanwhile,
            // that one stays.
            self.store
                .reseal_portal_credential(
                    &stored.id,
                    &stored.sealed,
                    &sealed,
                    self.vault.current_key_id(),
                    self.clock.now(),
                )
                .await?;
        }
        Ok(Some(Ok(PortalSession { client, token })))
    }

    /// Re-seals every portal credential under the current master key; returns (total,
    /// re-sealed). Rows changed meanwhile are left for the next run.
    pub(crate) async fn rewrap_portal(
        store: &sspr_store::Store,
        vault: &crate::Vault,
    ) -> Result<(usize, u64), RegistryError> {
        let all = store.all_portal_credentials().await?;
        let mut done = 0;
        for c in &all {
            if vault.needs_rewrap(&c.sealed) {
                let sealed = vault
                    .rewrap(&c.sealed, &aad(&c.tenant_id, &c.id))
                    .map_err(RegistryError::Vault)?;
                let at = c.updated_at;
                if store
                    .reseal_portal_credential(&c.id, &c.sealed, &sealed, vault.current_key_id(), at)
                    .await?
                {
                    done += 1;
                }
            }
        }
        Ok((all.len(), done))
    }

    /// The portal client, with `client_id` when the credential names one.
    fn portal_client_for(&self, client_id: Option<&str>) -> PortalClient {
        match client_id {
            None => self.portal.clone(),
            Some(id) => self.portal.with_client_id(id.to_owned()),
        }
    }
}
