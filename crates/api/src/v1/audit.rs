//! `/v1/audit`: the audit log of writes, filtered and paged.

use actix_web::{get, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sspr_domain::Role;
use sspr_store::{AuditEntry, AuditFilter};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(list_audit);
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

/// Filters for the audit log. All are optional and combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only writes by this key id (or `cli`).
    actor: Option<String>,
    /// Only writes about this tenant.
    tenant_id: Option<String>,
    /// Only writes at or after this time (RFC 3339).
    since: Option<DateTime<Utc>>,
    /// Only writes before this time (RFC 3339).
    until: Option<DateTime<Utc>>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// One write recorded in the audit log.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditEntryView {
    /// Stable id of the entry.
    pub id: String,
    /// When the write happened.
    pub at: DateTime<Utc>,
    /// The API key id that made the write, or `cli`.
    pub actor: String,
    /// Method and route, e.g. `POST /v1/api-keys`.
    pub action: String,
    /// The path acted on.
    pub target: String,
    /// The tenant concerned, if any.
    pub tenant_id: Option<String>,
    /// The HTTP status the write ended with.
    pub status: u16,
    /// The request id (`x-request-id`), to find the log lines.
    pub request_id: Option<String>,
    /// Extra facts about the write.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<AuditEntry> for AuditEntryView {
    fn from(e: AuditEntry) -> Self {
        Self {
            id: e.id.to_string(),
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            tenant_id: e.tenant_id,
            status: e.status,
            request_id: e.request_id,
            details: e.details,
        }
    }
}

/// A page of audit entries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AuditPage {
    /// Entries, oldest first.
    pub items: Vec<AuditEntryView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// List the audit log.
///
/// A key restricted to some tenants sees only the entries about those tenants.
#[utoipa::path(
    operation_id = "v1.audit.list",
    tag = "audit",
    params(AuditQuery),
    responses(
        (status = 200, description = "A page of entries", body = AuditPage),
        (status = 400, description = "A query parameter is invalid"),
        (status = 422, description = "A filter value is out of range"),
    )
)]
#[get("/audit")]
async fn list_audit(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<AuditQuery>,
) -> Result<web::Json<AuditPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let query = query.into_inner();
    let mut errors = Vec::new();
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            "out_of_range",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after_seq = match query.cursor.as_deref().map(super::cursor::decode) {
        Some(None) => {
            errors.push(FieldError::new("cursor", "invalid_format", "not a cursor from this API"));
            None
        }
        Some(seq) => seq,
        None => None,
    };
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    if let Some(tenant) = &query.tenant_id {
        caller.require_tenant(tenant)?;
    }
    let filter = AuditFilter {
        actor: query.actor,
        tenant_id: query.tenant_id,
        since: query.since,
        until: query.until,
        within_tenants: caller.access.tenants.restricted_to().cloned(),
        after_seq,
        // One more than asked tells whether another page exists.
        limit: limit + 1,
    };
    let mut entries = state.store.list_audit(&filter).await?;
    let more = entries.len() > limit as usize;
    entries.truncate(limit as usize);
    let next_cursor = more.then(|| entries.last().map(|e| super::cursor::encode(e.seq))).flatten();
    Ok(web::Json(AuditPage { items: entries.into_iter().map(Into::into).collect(), next_cursor }))
}
