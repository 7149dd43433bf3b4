//! SSPR readiness reports: one row per tenant with the counters read from Graph's
//! `userRegistrationDetails` (never per-user data).
//!
//! A row has two halves. The last attempt (`status`, `reason`, `started_at`, `attempted_at`,
//! `pages`, `duration_ms`) is replaced at every refresh. The last good figures (`figures`,
//! `read_at`) are replaced only by an `ok` attempt: a failed attempt keeps them, so a Graph
//! outage never wipes what was known, and `read_at` always says how old they are.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::QueryBuilder;
use sspr_domain::TenantId;

use crate::{
    Store, StoreError,
    pool::{with_reader, with_writer},
    rollouts::push_within,
    time::{from_ms, to_ms},
};

const WHAT: &str = "sspr report";

/// A tenant's stored readiness report.
#[derive(Debug, Clone, PartialEq)]
pub struct SsprReport {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Outcome of the last attempt: `ok`, `unavailable` or `error`.
    pub status: String,
    /// Stable code of a failed attempt (`reports_need_premium`, `consent_missing`, ...).
    pub reason: Option<String>,
    /// The last good figures (JSON), whatever the last attempt's outcome. When writing, `None`
    /// keeps the stored ones.
    pub figures: Option<Value>,
    /// When the figures were read from Graph. Set exactly when `figures` is.
    pub read_at: Option<DateTime<Utc>>,
    /// When the last attempt started.
    pub started_at: DateTime<Utc>,
    /// When the last attempt ended.
    pub attempted_at: DateTime<Utc>,
    /// Pages of `userRegistrationDetails` the last attempt read.
    pub pages: u64,
    /// How long the last attempt took, in milliseconds.
    pub duration_ms: u64,
}

/// One active tenant of the fleet report, with its report if it has one yet.
#[derive(Debug, Clone, PartialEq)]
pub struct SsprReportRow {
    /// The tenant.
    pub tenant_id: TenantId,
    /// Its display name.
    pub display_name: String,
    /// Its report; `None` until the first refresh ended.
    pub report: Option<SsprReport>,
}

/// Which rows of the fleet report to list: active tenants by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsprReportFilter {
    /// The tenant ids a restricted API key reaches. An empty set matches nothing.
    pub within: Option<BTreeSet<String>>,
    /// Only tenants whose id sorts after this one (the cursor of the previous page).
    pub after_tenant_id: Option<String>,
    /// At most this many rows.
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct Row {
    tenant_id: String,
    display_name: String,
    status: Option<String>,
    reason: Option<String>,
    figures: Option<String>,
    read_at: Option<i64>,
    started_at: Option<i64>,
    attempted_at: Option<i64>,
    pages: Option<i64>,
    duration_ms: Option<i64>,
}

macro_rules! columns {
    () => {
        "t.id AS tenant_id, t.display_name, r.status, r.reason, r.figures, r.read_at, \
         r.started_at, r.attempted_at, r.pages, r.duration_ms"
    };
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { what: WHAT, detail }
}

impl TryFrom<Row> for SsprReportRow {
    type Error = StoreError;

    fn try_from(r: Row) -> Result<Self, StoreError> {
        let tenant_id: TenantId = r.tenant_id.parse().map_err(|e| corrupt(format!("id: {e}")))?;
        let report = match (r.status, r.started_at, r.attempted_at) {
            (Some(status), Some(started_at), Some(attempted_at)) => Some(SsprReport {
                tenant_id: tenant_id.clone(),
                status,
                reason: r.reason,
                figures: r
                    .figures
                    .map(|f| serde_json::from_str(&f))
                    .transpose()
                    .map_err(|e| corrupt(format!("figures: {e}")))?,
                read_at: r.read_at.map(|ms| from_ms(ms, WHAT)).transpose()?,
                started_at: from_ms(started_at, WHAT)?,
                attempted_at: from_ms(attempted_at, WHAT)?,
                pages: u64::try_from(r.pages.unwrap_or(0))
                    .map_err(|e| corrupt(format!("pages: {e}")))?,
                duration_ms: u64::try_from(r.duration_ms.unwrap_or(0))
                    .map_err(|e| corrupt(format!("duration_ms: {e}")))?,
            }),
            _ => None,
        };
        Ok(Self { tenant_id, display_name: r.display_name, report })
    }
}

impl Store {
    /// Records a refresh of `report.tenant_id`. With `figures` (an `ok` attempt) everything is
    /// replaced; without, only the attempt half is, and the last good figures and their
    /// `read_at` stay. An attempt that started before the stored one changes nothing (a late,
    /// stale worker). `Ok(false)` when nothing was recorded: no active tenant with that id, or
    /// a newer attempt is stored.
    pub async fn record_sspr_report(&self, report: &SsprReport) -> Result<bool, StoreError> {
        let figures = report
            .figures
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| corrupt(format!("figures: {e}")))?;
        let read_at = match (&figures, report.read_at) {
            (Some(_), Some(t)) => Some(to_ms(t)),
            (Some(_), None) => return Err(corrupt("figures without read_at".into())),
            (None, _) => None,
        };
        let pages = i64::try_from(report.pages).unwrap_or(i64::MAX);
        let duration = i64::try_from(report.duration_ms).unwrap_or(i64::MAX);
        let stored = with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO sspr_reports (tenant_id, status, reason, figures, read_at,
                     started_at, attempted_at, pages, duration_ms)
                 SELECT id, $2, $3, $4, $5, $6, $7, $8, $9 FROM tenants
                 WHERE id = $1 AND offboarded_at IS NULL
                 ON CONFLICT (tenant_id) DO UPDATE SET
                     status = excluded.status,
                     reason = excluded.reason,
                     figures = COALESCE(excluded.figures, sspr_reports.figures),
                     read_at = COALESCE(excluded.read_at, sspr_reports.read_at),
                     started_at = excluded.started_at,
                     attempted_at = excluded.attempted_at,
                     pages = excluded.pages,
                     duration_ms = excluded.duration_ms
                 WHERE sspr_reports.started_at <= excluded.started_at",
            )
            .bind(report.tenant_id.as_str())
            .bind(&report.status)
            .bind(report.reason.as_deref())
            .bind(figures)
            .bind(read_at)
            .bind(to_ms(report.started_at))
            .bind(to_ms(report.attempted_at))
            .bind(pages)
            .bind(duration)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(stored == 1)
    }

    /// The report of one tenant (active or offboarded), if it has one.
    pub async fn sspr_report(&self, tenant: &TenantId) -> Result<Option<SsprReport>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM sspr_reports r JOIN tenants t ON t.id = r.tenant_id WHERE r.tenant_id = $1"
        );
        let row: Option<Row> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(tenant.as_str()).fetch_optional(pool).await?
        });
        Ok(row.map(SsprReportRow::try_from).transpose()?.and_then(|r| r.report))
    }

    /// A page of the fleet report: active tenants by id, each with its report if any, those
    /// after `f.after_tenant_id` and within `f.within`, at most `f.limit`.
    pub async fn list_sspr_reports(
        &self,
        f: &SsprReportFilter,
    ) -> Result<Vec<SsprReportRow>, StoreError> {
        let rows: Vec<Row> = with_reader!(self, pool => {
            let mut qb = QueryBuilder::new(concat!(
                "SELECT ",
                columns!(),
                " FROM tenants t LEFT JOIN sspr_reports r ON r.tenant_id = t.id \
                 WHERE t.offboarded_at IS NULL"
            ));
            if let Some(after) = &f.after_tenant_id {
                qb.push(" AND t.id > ").push_bind(after.clone());
            }
            if let Some(within) = &f.within {
                push_within(&mut qb, "t.id", within);
            }
            qb.push(" ORDER BY t.id LIMIT ").push_bind(i64::from(f.limit));
            qb.build_query_as().fetch_all(pool).await?
        });
        rows.into_iter().map(SsprReportRow::try_from).collect()
    }

    /// Active tenants whose report is due: those without one first, then those whose last
    /// attempt ended before `before`, oldest first; at most `limit`.
    pub async fn tenants_due_for_sspr_report(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<TenantId>, StoreError> {
        let ids: Vec<String> = with_reader!(self, pool => {
            sqlx::query_scalar(
                "SELECT t.id FROM tenants t LEFT JOIN sspr_reports r ON r.tenant_id = t.id
                 WHERE t.offboarded_at IS NULL AND (r.attempted_at IS NULL OR r.attempted_at < $1)
                 ORDER BY r.attempted_at NULLS FIRST, t.id LIMIT $2",
            )
            .bind(to_ms(before))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?
        });
        ids.into_iter().map(|id| id.parse().map_err(|e| corrupt(format!("id: {e}")))).collect()
    }
}
