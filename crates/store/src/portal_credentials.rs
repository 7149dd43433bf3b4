//! A tenant's portal credential: the administrator's delegated refresh token the opt-in,
//! unsupported `portal` scope mode uses for the Azure portal's SSPR policy API. At most one per
//! tenant, kept apart from the app-only credential in `tenant_credentials`; deleted when the
//! tenant is offboarded.

use std::fmt;

use chrono::{DateTime, Utc};
use sspr_domain::{CredentialId, TenantId};

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// A stored portal credential. Its `Debug` output omits the sealed value.
#[derive(Clone, PartialEq, Eq)]
pub struct PortalCredential {
    /// Public id of the credential (part of the vault binding).
    pub id: CredentialId,
    /// The tenant it belongs to.
    pub tenant_id: TenantId,
    /// The client id sent with the refresh token, if any.
    pub client_id: Option<String>,
    /// Vault ciphertext of the refresh token (`v1:<key id>:...`); never the clear token.
    pub sealed: String,
    /// Id of the master key that sealed it.
    pub key_id: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// When the sealed value last changed.
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for PortalCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortalCredential")
            .field("id", &self.id)
            .field("tenant_id", &self.tenant_id)
            .field("client_id", &self.client_id)
            .field("key_id", &self.key_id)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish_non_exhaustive()
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    tenant_id: String,
    client_id: Option<String>,
    sealed: String,
    key_id: String,
    created_at: i64,
    updated_at: i64,
}

macro_rules! columns {
    () => {
        "id, tenant_id, client_id, sealed, key_id, created_at, updated_at"
    };
}

impl TryFrom<Row> for PortalCredential {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "portal credential", detail };
        Ok(Self {
            id: r.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            tenant_id: r.tenant_id.parse().map_err(|e| corrupt(format!("tenant_id: {e}")))?,
            client_id: r.client_id,
            sealed: r.sealed,
            key_id: r.key_id,
            created_at: from_ms(r.created_at, "portal credential")?,
            updated_at: from_ms(r.updated_at, "portal credential")?,
        })
    }
}

impl Store {
    /// Stores `c` as the portal credential of its tenant, replacing any earlier one, in one
    /// transaction. `Ok(false)` when no active tenant has that id.
    pub async fn put_portal_credential(&self, c: &PortalCredential) -> Result<bool, StoreError> {
        let stored = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let active: Option<String> = sqlx::query_scalar(
                "SELECT id FROM tenants WHERE id = $1 AND offboarded_at IS NULL",
            )
            .bind(c.tenant_id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            if active.is_none() {
                return Ok(false);
            }
            sqlx::query("DELETE FROM tenant_portal_credentials WHERE tenant_id = $1")
                .bind(c.tenant_id.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO tenant_portal_credentials
                     (id, tenant_id, client_id, sealed, key_id, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(c.id.as_str())
            .bind(c.tenant_id.as_str())
            .bind(c.client_id.as_deref())
            .bind(&c.sealed)
            .bind(&c.key_id)
            .bind(to_ms(c.created_at))
            .bind(to_ms(c.updated_at))
            .execute(&mut *tx)
            .await
            .map_err(StoreError::on_unique("portal credential"))?;
            tx.commit().await?;
            true
        });
        Ok(stored)
    }

    /// The tenant's portal credential, sealed value included.
    pub async fn portal_credential(
        &self,
        tenant: &TenantId,
    ) -> Result<Option<PortalCredential>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", columns!(), " FROM tenant_portal_credentials WHERE tenant_id = $1");
        let row: Option<Row> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(tenant.as_str()).fetch_optional(pool).await?
        });
        row.map(PortalCredential::try_from).transpose()
    }

    /// Every portal credential, by id (for master-key rotation).
    pub async fn all_portal_credentials(&self) -> Result<Vec<PortalCredential>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", columns!(), " FROM tenant_portal_credentials ORDER BY id");
        let rows: Vec<Row> = with_reader!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        rows.into_iter().map(PortalCredential::try_from).collect()
    }

    /// Deletes the tenant's portal credential. `Ok(false)` when it had none.
    pub async fn delete_portal_credential(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let deleted = with_writer!(self, pool => {
            sqlx::query("DELETE FROM tenant_portal_credentials WHERE tenant_id = $1")
                .bind(tenant.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted > 0)
    }

    /// Replaces the sealed value of portal credential `id` with `new_sealed` (sealed with
    /// `new_key_id`) only if it still holds `old_sealed`: a refresh token rotated by the
    /// identity platform, or a master-key rewrap, never overwrites a credential replaced
    /// meanwhile. Returns whether it was replaced.
    pub async fn reseal_portal_credential(
        &self,
        id: &CredentialId,
        old_sealed: &str,
        new_sealed: &str,
        new_key_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE tenant_portal_credentials SET sealed = $1, key_id = $2, updated_at = $3
                 WHERE id = $4 AND sealed = $5",
            )
            .bind(new_sealed)
            .bind(new_key_id)
            .bind(to_ms(at))
            .bind(id.as_str())
            .bind(old_sealed)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_sealed_value() {
        let c = PortalCredential {
            id: CredentialId::new(),
            tenant_id: TenantId::new(),
            client_id: None,
            sealed: "v1:k1:SECRET".into(),
            key_id: "k1".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        assert!(!format!("{c:?}").contains("SECRET"));
    }
}
