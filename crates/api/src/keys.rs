//! Issuing API keys, shared by the HTTP API and the `keys create` command.

use sspr_domain::{ApiKeyId, Clock, Role, TenantScope};
use sspr_store::{ApiKey, NewApiKey, NewAuditEntry, Store, StoreError};

use crate::auth::{ApiToken, generate_token, hash_token};

/// What a new key may do.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Who uses the key.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// The tenants it reaches.
    pub tenants: TenantScope,
}

/// Mints a key, stores its hash and returns the key to show once.
pub async fn issue_api_key(
    store: &Store,
    clock: &dyn Clock,
    new: NewKey,
    created_by: &str,
) -> Result<(ApiKey, ApiToken), StoreError> {
    let token = generate_token();
    let key = store
        .insert_api_key(NewApiKey {
            id: ApiKeyId::new(),
            name: new.name,
            role: new.role,
            tenants: new.tenants,
            token_hash: hash_token(token.reveal()),
            created_by: created_by.to_owned(),
            created_at: clock.now(),
        })
        .await?;
    Ok((key, token))
}

/// Issues a key from the command line and records it in the audit log as the `cli` actor.
pub async fn issue_api_key_from_cli(
    store: &Store,
    clock: &dyn Clock,
    new: NewKey,
) -> Result<(ApiKey, ApiToken), StoreError> {
    let (key, token) = issue_api_key(store, clock, new, "cli").await?;
    store
        .append_audit(NewAuditEntry {
            at: clock.now(),
            actor: "cli".into(),
            action: "keys create".into(),
            target: format!("/v1/api-keys/{}", key.id),
            tenant_id: None,
            status: 201,
            request_id: None,
            details: serde_json::json!({ "api_key_id": key.id.as_str(), "role": key.role.as_str() }),
        })
        .await?;
    Ok((key, token))
}
