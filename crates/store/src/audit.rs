use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sspr_domain::AuditId;

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// One audit log entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Position in the log; increases with every entry, used as the paging cursor.
    pub seq: i64,
    /// Stable id of the entry.
    pub id: AuditId,
    /// When the write happened.
    pub at: DateTime<Utc>,
    /// Who made it: an API key id, or `cli`.
    pub actor: String,
    /// What was done, e.g. `POST /v1/api-keys`.
    pub action: String,
    /// The path or object acted on.
    pub target: String,
    /// The tenant the write concerned, when it concerned one.
    pub tenant_id: Option<String>,
    /// The HTTP status the write ended with.
    pub status: u16,
    /// The request id, to find the matching log lines.
    pub request_id: Option<String>,
    /// Extra facts about the write (never secrets).
    pub details: serde_json::Value,
}

/// An audit entry to append.
#[derive(Debug, Clone)]
pub struct NewAuditEntry {
    /// When the write happened.
    pub at: DateTime<Utc>,
    /// Who made it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// The path or object acted on.
    pub target: String,
    /// The tenant concerned, if any.
    pub tenant_id: Option<String>,
    /// The resulting HTTP status.
    pub status: u16,
    /// The request id.
    pub request_id: Option<String>,
    /// Extra facts (never secrets).
    pub details: serde_json::Value,
}

/// Which entries to list. Every field narrows the result; the default lists everything.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Only entries by this actor.
    pub actor: Option<String>,
    /// Only entries about this tenant.
    pub tenant_id: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only entries before this time.
    pub until: Option<DateTime<Utc>>,
    /// Only entries about one of these tenants (a restricted API key's reach).
    pub within_tenants: Option<BTreeSet<String>>,
    /// Only entries after this position (the cursor of the previous page).
    pub after_seq: Option<i64>,
    /// At most this many entries.
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    seq: i64,
    id: String,
    at: i64,
    actor: String,
    action: String,
    target: String,
    tenant_id: Option<String>,
    status: i32,
    request_id: Option<String>,
    details: String,
}

impl TryFrom<AuditRow> for AuditEntry {
    type Error = StoreError;
    fn try_from(row: AuditRow) -> Result<Self, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { what: "audit entry", detail };
        Ok(AuditEntry {
            seq: row.seq,
            id: row.id.parse().map_err(|e| corrupt(format!("id: {e}")))?,
            at: from_ms(row.at, "audit entry")?,
            actor: row.actor,
            action: row.action,
            target: row.target,
            tenant_id: row.tenant_id,
            status: u16::try_from(row.status).map_err(|e| corrupt(format!("status: {e}")))?,
            request_id: row.request_id,
            details: serde_json::from_str(&row.details)
                .map_err(|e| corrupt(format!("details: {e}")))?,
        })
    }
}

/// Pushes the WHERE clause for `filter` onto a query of either backend.
fn push_filter<DB: sqlx::Database>(qb: &mut QueryBuilder<DB>, filter: &AuditFilter)
where
    String: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'static, DB> + sqlx::Type<DB>,
{
    qb.push(" WHERE 1 = 1");
    if let Some(actor) = &filter.actor {
        qb.push(" AND actor = ").push_bind(actor.clone());
    }
    if let Some(tenant) = &filter.tenant_id {
        qb.push(" AND tenant_id = ").push_bind(tenant.clone());
    }
    if let Some(since) = filter.since {
        qb.push(" AND at >= ").push_bind(to_ms(since));
    }
    if let Some(until) = filter.until {
        qb.push(" AND at < ").push_bind(to_ms(until));
    }
    if let Some(after) = filter.after_seq {
        qb.push(" AND seq > ").push_bind(after);
    }
    if let Some(tenants) = &filter.within_tenants {
        if tenants.is_empty() {
            qb.push(" AND 1 = 0");
        } else {
            qb.push(" AND tenant_id IN (");
            let mut list = qb.separated(", ");
            for t in tenants {
                list.push_bind(t.clone());
            }
            qb.push(")");
        }
    }
    qb.push(" ORDER BY seq LIMIT ").push_bind(i64::from(filter.limit));
}

impl Store {
    /// Appends an entry to the audit log.
    pub async fn append_audit(&self, entry: NewAuditEntry) -> Result<AuditId, StoreError> {
        let id = AuditId::new();
        let details = entry.details.to_string();
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO audit_log (id, at, actor, action, target, tenant_id, status, request_id, details)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(id.as_str())
            .bind(to_ms(entry.at))
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.target)
            .bind(&entry.tenant_id)
            .bind(i32::from(entry.status))
            .bind(&entry.request_id)
            .bind(&details)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(id)
    }

    /// Entries matching `filter`, oldest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, StoreError> {
        const SELECT: &str = "SELECT seq, id, at, actor, action, target, tenant_id, status, \
                              request_id, details FROM audit_log";
        let rows: Vec<AuditRow> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(SELECT);
            push_filter(&mut qb, filter);
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(AuditEntry::try_from).collect()
    }
}
