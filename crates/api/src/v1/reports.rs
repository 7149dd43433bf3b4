//! `/v1/reports/sspr`: the SSPR readiness report of the fleet and of one tenant, as JSON or
//! CSV (`Accept: text/csv`), and on-demand refreshes.
//!
//! A key restricted to some tenants sees only those, in rows and in totals; any other tenant
//! is 404, exactly as one that does not exist.

use std::collections::BTreeSet;

use actix_web::{
    HttpMessage, HttpRequest, HttpResponse, get,
    http::header,
    post,
    web::{self, Bytes},
};
use serde::{Deserialize, Serialize};
use sspr_domain::{Role, TenantId};
use sspr_reporting::readiness::{FleetTotals, ReportError, TenantReport, csv_chunk};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
    extract::{is_json, json_error},
    middleware::AuditDetails,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(fleet_report).service(refresh_reports).service(tenant_report);
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;
/// Rows read from the store per CSV chunk.
const CSV_PAGE: u32 = 500;
/// Most tenant ids one refresh request may name.
const MAX_REFRESH_IDS: usize = 1000;
const CSV: &str = "text/csv; charset=utf-8";

impl From<ReportError> for ApiError {
    fn from(err: ReportError) -> Self {
        match err {
            ReportError::NotFound => ApiError::NotFound("tenant"),
            ReportError::Store(e) => e.into(),
            e @ ReportError::Csv(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// The fleet's readiness report, one page of tenants.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FleetReport {
    /// Totals over every tenant within the caller's reach (not only this page).
    pub totals: FleetTotals,
    /// Active tenants by id.
    pub tenants: Vec<TenantReport>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of the fleet report (JSON only: the CSV holds every tenant).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct FleetQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// Which tenants to refresh.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshReports {
    /// These tenants (1 to 1000 ids, each an active tenant within reach). Omit, or send no
    /// body, to refresh every active tenant within reach.
    #[serde(default)]
    pub tenant_ids: Option<Vec<String>>,
}

/// What a refresh request queued.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RefreshAccepted {
    /// Tenants asked for.
    pub tenants: usize,
    /// Refresh jobs created by this request.
    pub enqueued: usize,
    /// Tenants whose refresh was already queued or running (it is not queued twice).
    pub already_queued: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Csv,
}

/// Picks JSON or CSV from `Accept` (highest `q`, then first listed); JSON without the header.
fn negotiate(req: &HttpRequest) -> Result<Format, ApiError> {
    let Some(accept) = req.headers().get(header::ACCEPT) else { return Ok(Format::Json) };
    let Ok(accept) = accept.to_str() else {
        return Err(ApiError::NotAcceptable("application/json, text/csv"));
    };
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    let mut best: Option<(f32, Format)> = None;
    for entry in accept.split(',') {
        let mut parts = entry.split(';');
        let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q=").map(str::to_owned))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let format = match media.as_str() {
            "text/csv" | "text/*" => Format::Csv,
            "application/json" | "application/*" | "*/*" => Format::Json,
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, format));
        }
    }
    best.map(|(_, f)| f).ok_or(ApiError::NotAcceptable("application/json, text/csv"))
}

/// A tenant id from the path; an impossible id, or one outside the caller's reach, is 404.
fn reachable_tenant(caller: &Caller, id: &str) -> Result<TenantId, ApiError> {
    let id: TenantId = id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    if caller.access.tenants.reaches(id.as_str()) {
        Ok(id)
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

fn csv_response(filename: &str) -> actix_web::HttpResponseBuilder {
    let mut b = HttpResponse::Ok();
    b.content_type(CSV).insert_header((
        header::CONTENT_DISPOSITION,
        format!("attachment; filename=\"{filename}\""),
    ));
    b
}

/// Get the fleet's SSPR readiness report.
///
/// Totals over every active tenant within reach and a page of tenants, each with the figures
/// of its last good read of Graph's `userRegistrationDetails` and when they were read. With
/// `Accept: text/csv`, every tenant within reach as CSV (a header line, then one row per
/// tenant; `cursor` and `limit` do not apply), streamed page by page.
#[utoipa::path(
    operation_id = "v1.report.sspr.fleet",
    tag = "reports",
    params(FleetQuery),
    responses(
        (status = 200, description = "The fleet report",
            content((FleetReport = "application/json"), (String = "text/csv"))),
        (status = 406, description = "Neither JSON nor CSV is acceptable (`not_acceptable`)"),
        (status = 422, description = "`limit` or `cursor` is invalid"),
    )
)]
#[get("/reports/sspr")]
async fn fleet_report(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<FleetQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let format = negotiate(&req)?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let (limit, after) =
        super::page_params(q.limit, DEFAULT_LIMIT, MAX_LIMIT, q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let within: Option<BTreeSet<String>> = caller.access.tenants.restricted_to().cloned();
    let reports = state.reports.clone();
    if format == Format::Csv {
        // One page of rows in memory at a time; an error mid-way cuts the body short (the
        // status is sent already) and is logged.
        let stream = futures_util::stream::unfold(Some((None::<String>, true)), move |cursor| {
            let reports = reports.clone();
            let within = within.clone();
            async move {
                let (after, first) = cursor?;
                let chunk = match reports.page(within.as_ref(), after, CSV_PAGE).await {
                    Ok(rows) => csv_chunk(&rows, first).map(|bytes| {
                        let next = (rows.len() == CSV_PAGE as usize)
                            .then(|| (rows.last().map(|r| r.tenant_id.clone()), false));
                        (bytes, next)
                    }),
                    Err(e) => Err(e),
                };
                match chunk {
                    Ok((bytes, next)) => Some((Ok::<_, ReportError>(Bytes::from(bytes)), next)),
                    Err(e) => {
                        tracing::error!(error = %crate::error::ErrorChain(&e), "the CSV report stopped");
                        Some((Err(e), None))
                    }
                }
            }
        });
        return Ok(csv_response("sspr-readiness.csv").streaming(stream));
    }
    let totals = reports.totals(within.as_ref()).await?;
    let mut tenants = reports.page(within.as_ref(), after, limit + 1).await?;
    let more = tenants.len() > limit as usize;
    tenants.truncate(limit as usize);
    let next_cursor =
        if more { tenants.last().map(|t| super::cursor::encode_text(&t.tenant_id)) } else { None };
    Ok(HttpResponse::Ok().json(FleetReport { totals, tenants, next_cursor }))
}

/// Get one tenant's SSPR readiness report.
///
/// A tenant with no report yet answers 200 with status `pending` and no figures. With
/// `Accept: text/csv`, the header line and the tenant's row.
#[utoipa::path(
    operation_id = "v1.report.sspr.tenant",
    tag = "reports",
    params(("tenant_id" = String, Path, description = "Tenant id, `ten_...`")),
    responses(
        (status = 200, description = "The tenant's report",
            content((TenantReport = "application/json"), (String = "text/csv"))),
        (status = 404, description = "No such active tenant within your reach"),
        (status = 406, description = "Neither JSON nor CSV is acceptable (`not_acceptable`)"),
    )
)]
#[get("/reports/sspr/{tenant_id}")]
async fn tenant_report(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let id = reachable_tenant(&caller, &path.into_inner())?;
    let format = negotiate(&req)?;
    let report = state.reports.tenant_report(&id).await?;
    match format {
        Format::Json => Ok(HttpResponse::Ok().json(report)),
        Format::Csv => {
            let body = csv_chunk(std::slice::from_ref(&report), true)?;
            Ok(csv_response(&format!("sspr-readiness-{id}.csv")).body(body))
        }
    }
}

/// Refresh SSPR readiness reports.
///
/// Queues a refresh of the given tenants, or of every active tenant within reach when the
/// body is absent or has no `tenant_ids`, and answers at once. A tenant whose refresh is
/// already queued or running is not queued twice. Follow `GET /v1/reports/sspr/{tenant_id}`:
/// `attempted_at` moves when the refresh has ended.
#[utoipa::path(
    operation_id = "v1.report.sspr.refresh",
    tag = "reports",
    request_body(content = RefreshReports, description = "Optional", content_type = "application/json"),
    responses(
        (status = 202, description = "Refreshes are queued", body = RefreshAccepted),
        (status = 422, description = "A tenant id is unknown or outside your reach (`not_found`), or the list is empty or too long"),
    )
)]
#[post("/reports/sspr:refresh")]
async fn refresh_reports(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let asked = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        if !is_json(&req) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let mut de = serde_json::Deserializer::from_slice(&body);
        let parsed: RefreshReports =
            serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
        de.end().map_err(|e| ApiError::MalformedJson(e.to_string()))?;
        parsed.tenant_ids
    };
    let within = caller.access.tenants.restricted_to().cloned();
    let reports = &state.reports;
    let ids: Vec<TenantId> = match asked {
        Some(ids) => {
            if ids.is_empty() || ids.len() > MAX_REFRESH_IDS {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "tenant_ids",
                    "out_of_range",
                    format!("1 to {MAX_REFRESH_IDS} tenant ids; omit the field for every tenant"),
                )]));
            }
            let mut errors = Vec::new();
            let mut seen = BTreeSet::new();
            let mut valid = Vec::new();
            for (i, raw) in ids.iter().enumerate() {
                let found = match reachable_tenant(&caller, raw) {
                    Ok(id) => match state.store.get_tenant(&id).await? {
                        Some(t) if t.offboarded_at.is_none() => Some(id),
                        _ => None,
                    },
                    Err(_) => None,
                };
                match found {
                    Some(id) => {
                        if seen.insert(id.clone()) {
                            valid.push(id);
                        }
                    }
                    // The value is not repeated: it may be anything pasted in the wrong place.
                    None => errors.push(FieldError::new(
                        format!("tenant_ids[{i}]"),
                        "not_found",
                        "no active tenant with this id within your reach",
                    )),
                }
            }
            if !errors.is_empty() {
                return Err(ApiError::Validation(errors));
            }
            valid
        }
        None => {
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = reports.page(within.as_ref(), after, CSV_PAGE).await?;
                after = page.last().map(|r| r.tenant_id.clone());
                let done = page.len() < CSV_PAGE as usize;
                for row in page {
                    if let Ok(id) = row.tenant_id.parse::<TenantId>() {
                        all.push(id);
                    }
                }
                if done {
                    break all;
                }
            }
        }
    };
    let mut enqueued = 0;
    for id in &ids {
        enqueued += usize::from(reports.enqueue_refresh(id).await?);
    }
    let accepted =
        RefreshAccepted { tenants: ids.len(), enqueued, already_queued: ids.len() - enqueued };
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "tenants": accepted.tenants, "enqueued": accepted.enqueued,
    })));
    Ok(HttpResponse::Accepted().json(accepted))
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    fn with_accept(accept: &str) -> Result<Format, ApiError> {
        negotiate(&TestRequest::default().insert_header((header::ACCEPT, accept)).to_http_request())
    }

    #[test]
    fn accept_picks_json_or_csv() {
        assert_eq!(negotiate(&TestRequest::default().to_http_request()).ok(), Some(Format::Json));
        assert_eq!(with_accept("text/csv").ok(), Some(Format::Csv));
        assert_eq!(with_accept("application/json").ok(), Some(Format::Json));
        assert_eq!(with_accept("*/*").ok(), Some(Format::Json));
        assert_eq!(with_accept("text/csv;q=0.5, application/json").ok(), Some(Format::Json));
        assert_eq!(with_accept("text/html, text/csv").ok(), Some(Format::Csv));
        assert_eq!(with_accept("text/csv;q=0, application/json").ok(), Some(Format::Json));
        assert!(matches!(with_accept("application/xml"), Err(ApiError::NotAcceptable(_))));
    }
}
