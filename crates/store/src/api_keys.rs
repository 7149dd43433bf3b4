use chrono::{DateTime, Utc};
use sspr_domain::{ApiKeyId, Role, TenantScope};

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// An API key as stored: everything but the key itself, which is never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public id of the key.
    pub id: ApiKeyId,
    /// Human name, e.g. "connectwise-prod".
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// Which tenants the key reaches.
    pub tenants: TenantScope,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// Who created it: another key's id, or `cli`.
    pub created_by: String,
    /// When the key last authenticated a request (updated at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the key was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A key to store. `token_hash` is the hex SHA-256 of the key handed to its owner.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Public id of the key.
    pub id: ApiKeyId,
    /// Human name.
    pub name: String,
    /// What the key may do.
    pub role: Role,
    /// Which tenants the key reaches.
    pub tenants: TenantScope,
    /// Hex SHA-256 of the key.
    pub token_hash: String,
    /// Who created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    name: String,
    role: String,
    tenant_ids: Option<String>,
    created_at: i64,
    created_by: String,
    last_used_at: Option<i64>,
    revoked_at: Option<i64>,
}

/// The columns [`ApiKeyRow`] reads, as a macro so queries can `concat!` it into `&'static str`.
macro_rules! key_columns {
    () => {
        "id, name, role, tenant_ids, created_at, created_by, last_used_at, revoked_at"
    };
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;
    fn try_from(row: ApiKeyRow) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "api key", detail };
        let tenants = match row.tenant_ids {
            None => TenantScope::All,
            Some(json) => TenantScope::Only(
                serde_json::from_str(&json).map_err(|e| corrupt(format!("tenant_ids: {e}")))?,
            ),
        };
        Ok(ApiKey {
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            name: row.name,
            role: row.role.parse().map_err(|e| corrupt(format!("role: {e}")))?,
            tenants,
            created_at: from_ms(row.created_at, "api key")?,
            created_by: row.created_by,
            last_used_at: row.last_used_at.map(|t| from_ms(t, "api key")).transpose()?,
            revoked_at: row.revoked_at.map(|t| from_ms(t, "api key")).transpose()?,
        })
    }
}

impl Store {
    /// Stores a new API key.
    pub async fn insert_api_key(&self, key: NewApiKey) -> Result<ApiKey, StoreError> {
        let tenant_ids = match &key.tenants {
            TenantScope::All => None,
            TenantScope::Only(set) => Some(
                serde_json::to_string(set)
                    .map_err(|e| StoreError::Corrupt { what: "api key", detail: e.to_string() })?,
            ),
        };
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO api_keys (id, name, role, tenant_ids, token_hash, created_at, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(key.id.as_str())
            .bind(&key.name)
            .bind(key.role.as_str())
            .bind(&tenant_ids)
            .bind(&key.token_hash)
            .bind(to_ms(key.created_at))
            .bind(&key.created_by)
            .execute(pool)
            .await
            .map_err(StoreError::on_unique("api key"))?
            .rows_affected()
        });
        Ok(ApiKey {
            id: key.id,
            name: key.name,
            role: key.role,
            tenants: key.tenants,
            // What a later read returns: the stored precision is milliseconds.
            created_at: from_ms(to_ms(key.created_at), "api key")?,
            created_by: key.created_by,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// The unrevoked key whose hash is `token_hash`, if any.
    pub async fn find_active_api_key(
        &self,
        token_hash: &str,
    ) -> Result<Option<ApiKey>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            key_columns!(),
            " FROM api_keys WHERE token_hash = $1 AND revoked_at IS NULL"
        );
        let row: Option<ApiKeyRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(token_hash).fetch_optional(pool).await?
        });
        row.map(ApiKey::try_from).transpose()
    }

    /// One key by id, revoked or not.
    pub async fn get_api_key(&self, id: &ApiKeyId) -> Result<Option<ApiKey>, StoreError> {
        const SQL: &str = concat!("SELECT ", key_columns!(), " FROM api_keys WHERE id = $1");
        let row: Option<ApiKeyRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(ApiKey::try_from).transpose()
    }

    /// Every key, oldest first.
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", key_columns!(), " FROM api_keys ORDER BY created_at, id");
        let rows: Vec<ApiKeyRow> =
            with_reader!(self, pool => sqlx::query_as(SQL).fetch_all(pool).await?);
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    /// Revokes a key. Returns false when no unrevoked key has that id.
    pub async fn revoke_api_key(
        &self,
        id: &ApiKeyId,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let done = with_writer!(self, pool => {
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(to_ms(at))
                .bind(id.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(done == 1)
    }

    /// Records that a key was used at `at`, unless it was already recorded within `granularity`
    /// (so authentication does not turn every read into a write).
    pub async fn touch_api_key(
        &self,
        id: &ApiKeyId,
        at: DateTime<Utc>,
        granularity: chrono::TimeDelta,
    ) -> Result<(), StoreError> {
        let now = to_ms(at);
        let threshold = now - granularity.num_milliseconds();
        with_writer!(self, pool => {
            sqlx::query(
                "UPDATE api_keys SET last_used_at = $1
                 WHERE id = $2 AND (last_used_at IS NULL OR last_used_at < $3)",
            )
            .bind(now)
            .bind(id.as_str())
            .bind(threshold)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(())
    }
}
