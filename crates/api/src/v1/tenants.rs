//! `/v1/tenants`: onboarding, listing, updating and offboarding customer tenants, rotating their
//! credentials, verifying them against Graph, and bulk import.
//!
//! A key restricted to some tenants gets 404 for every other tenant, exactly as if it did not
//! exist, and never sees other tenants in lists or counts.

use std::collections::BTreeMap;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, patch, post, put, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sspr_domain::{Role, TenantId};
use sspr_registry::{
    CredentialInput, ImportOutcome, PortalCredentialInput, ReadinessReport, RegistryError,
    TenantInput, TenantUpdate,
};
use sspr_store::{LicenceLevel, Tenant, TenantFilter, TenantStatus};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
    extract::ValidJson,
    middleware::{AuditDetails, AuditTenant},
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create_tenant)
        .service(import_tenants)
        .service(verify_tenants)
        .service(list_tenants)
        .service(get_tenant)
        .service(update_tenant)
        .service(offboard_tenant)
        .service(put_credentials)
        .service(get_portal_credentials)
        .service(put_portal_credentials)
        .service(delete_portal_credentials)
        .service(verify_tenant);
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

/// The credentials a tenant has, without any secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CredentialView {
    /// Id of the stored credential, `cred_...`; changes at each rotation.
    pub id: String,
    /// `client_secret` or `certificate`.
    pub kind: String,
    /// The application (client) id.
    pub client_id: String,
    /// The certificate's `x5t#S256`, for certificate credentials.
    pub thumbprint_s256: Option<String>,
    /// When these credentials were stored.
    pub created_at: DateTime<Utc>,
}

/// A customer tenant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantView {
    /// sspr-fleet's id of the tenant, `ten_...`.
    pub id: String,
    /// The Entra tenant as registered: its id or a verified domain.
    pub entra_tenant: String,
    /// The Entra tenant id (GUID), once known.
    pub entra_tenant_id: Option<String>,
    /// The customer's name.
    pub display_name: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Company ids in PSA tools.
    pub external_refs: BTreeMap<String, String>,
    /// `unverified`, `ready`, `not_ready`, `unreachable` or `offboarded`.
    pub status: String,
    /// Why the tenant is not ready or unreachable: the first blocker's stable code.
    pub status_reason: Option<String>,
    /// Licence level for SSPR: `unknown`, `none`, `cloud_only`, `p1`, `p2`.
    pub licence: String,
    /// The tenant's default verified domain, once verified.
    pub default_domain: Option<String>,
    /// When the tenant was last verified.
    pub verified_at: Option<DateTime<Utc>>,
    /// When the tenant was onboarded.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it was offboarded.
    pub offboarded_at: Option<DateTime<Utc>>,
    /// Its credentials (absent once offboarded).
    pub credentials: Option<CredentialView>,
    /// The last readiness report (in single-tenant answers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessReport>,
}

impl TenantView {
    fn from_tenant(t: Tenant, with_readiness: bool) -> Self {
        let readiness = if with_readiness {
            t.readiness.and_then(|r| serde_json::from_value(r).ok())
        } else {
            None
        };
        Self {
            id: t.id.to_string(),
            entra_tenant: t.entra_ref,
            entra_tenant_id: t.entra_tenant_id,
            display_name: t.display_name,
            tags: t.tags,
            external_refs: t.external_refs,
            status: t.status.as_str().to_owned(),
            status_reason: t.status_reason,
            licence: t.licence.as_str().to_owned(),
            default_domain: t.default_domain,
            verified_at: t.verified_at,
            created_at: t.created_at,
            updated_at: t.updated_at,
            offboarded_at: t.offboarded_at,
            credentials: t.credential.map(|c| CredentialView {
                id: c.id.to_string(),
                kind: c.kind,
                client_id: c.client_id,
                thumbprint_s256: c.thumbprint_s256,
                created_at: c.created_at,
            }),
            readiness,
        }
    }
}

/// A page of tenants.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantPage {
    /// Tenants in onboarding order.
    pub items: Vec<TenantView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
    /// How many tenants match the filters (within the caller's reach).
    pub total: u64,
}

/// Filters for the tenant list. All optional; they combine with AND.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantQuery {
    /// Only tenants with this tag.
    tag: Option<String>,
    /// Only tenants in this status (`unverified`, `ready`, `not_ready`, `unreachable`,
    /// `offboarded`).
    status: Option<String>,
    /// Only tenants at this licence level (`unknown`, `none`, `cloud_only`, `p1`, `p2`).
    licence: Option<String>,
    /// Text search over name, Entra tenant, default domain and external references.
    q: Option<String>,
    /// Include offboarded tenants (default false).
    include_offboarded: Option<bool>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// Changes to a tenant. Absent fields stay as they are; `tags` and `external_refs` replace.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// New display name.
    pub display_name: Option<String>,
    /// New tags.
    pub tags: Option<Vec<String>>,
    /// New external references.
    pub external_refs: Option<BTreeMap<String, String>>,
}

/// Options of credential rotation.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateQuery {
    /// Obtain a token with the new credentials before storing them (default true); if that
    /// fails, the old credentials stay.
    check: Option<bool>,
}

/// Options of onboarding.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuery {
    /// Verify the tenant against Graph before answering (default false: it is verified in the
    /// background shortly after).
    verify: Option<bool>,
}

/// Tenants read from the store at a time when `POST /v1/tenants:verify` verifies all.
const VERIFY_PAGE: u32 = 1000;

/// Which tenants to verify.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyTenants {
    /// These tenants (at most 1000). Omit to verify every active tenant within reach, however
    /// many (oldest check first).
    #[serde(default)]
    pub tenant_ids: Option<Vec<String>>,
}

/// The outcome of one tenant's check.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyOutcome {
    /// The tenant.
    pub tenant_id: String,
    /// `ready`, `not_ready`, `unreachable`, `not_found` (no such active tenant within reach), or
    /// `error` (the check itself failed; see the logs).
    pub status: String,
    /// The first blocker's code.
    pub reason: Option<String>,
}

/// The outcome of a batch of checks.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    /// Tenants per resulting status.
    pub counts: BTreeMap<String, usize>,
    /// One entry per tenant, in the order asked (or oldest check first).
    pub results: Vec<VerifyOutcome>,
}

/// Options of an import.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ImportQuery {
    /// Check every row without storing anything (default false).
    dry_run: Option<bool>,
}

/// The result of an import, row by row.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ImportReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Rows read.
    pub total: usize,
    /// Rows per outcome (`created`, `updated`, `unchanged`, `invalid`, `conflict`, `failed`,
    /// `valid`).
    pub counts: BTreeMap<String, usize>,
    /// One entry per row, in file order.
    pub rows: Vec<ImportOutcome>,
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::Invalid(problems) => ApiError::Validation(
                problems.into_iter().map(|p| FieldError::new(p.field, p.code, p.message)).collect(),
            ),
            RegistryError::NotFound => ApiError::NotFound("tenant"),
            RegistryError::AlreadyRegistered { existing } => ApiError::TenantExists(existing),
            RegistryError::CredentialsRejected { code, detail } => {
                ApiError::Validation(vec![FieldError::new("credentials", code, detail)])
            }
            RegistryError::Store(e) => e.into(),
            e @ RegistryError::Vault(_) => ApiError::Internal(Box::new(e)),
        }
    }
}

/// Parses a tenant id from the path; an id that cannot exist, or one outside the caller's
/// reach, is "not found".
fn tenant_id(caller: &Caller, id: &str) -> Result<TenantId, ApiError> {
    let id: TenantId = id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    if caller.access.tenants.reaches(id.as_str()) {
        Ok(id)
    } else {
        Err(ApiError::NotFound("tenant"))
    }
}

fn mark(req: &HttpRequest, id: &TenantId) {
    req.extensions_mut().insert(AuditTenant(id.to_string()));
}

fn registry(state: &AppState) -> Result<&sspr_registry::Registry, ApiError> {
    Ok(&state.registry)
}

/// Onboard a tenant.
///
/// Registers a customer tenant with the credentials of the MSP's app registration in it. The
/// secret or private key is stored encrypted and never returned. The tenant starts
/// `unverified`; it is verified in the background, or at once with `?verify=true`. Keys
/// restricted to tenants cannot onboard.
#[utoipa::path(
    operation_id = "v1.tenant.create",
    tag = "tenants",
    params(CreateQuery),
    request_body = TenantInput,
    responses(
        (status = 201, description = "The tenant was registered", body = TenantView),
        (status = 409, description = "The Entra tenant is already registered (`tenant_exists`)"),
        (status = 422, description = "A field is invalid"),
    )
)]
#[post("/tenants")]
async fn create_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<CreateQuery>,
    body: ValidJson<TenantInput>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    if caller.access.tenants.restricted_to().is_some() {
        return Err(ApiError::RestrictedKey);
    }
    let registry = registry(&state)?;
    let valid = body.0.validate().map_err(RegistryError::Invalid)?;
    let mut tenant = registry.onboard(valid).await?;
    mark(&req, &tenant.id);
    if query.verify.unwrap_or(false) {
        tenant = registry.verify(&tenant.id).await?.0;
    }
    Ok(HttpResponse::Created()
        .insert_header(("location", format!("/v1/tenants/{}", tenant.id)))
        .json(TenantView::from_tenant(tenant, true)))
}

/// Import tenants.
///
/// Reads many tenants from CSV (`Content-Type: text/csv`, columns `entra_tenant`,
/// `display_name`, `tags` (`;`-separated), `external_refs` (`name=value;...`), `kind`,
/// `client_id`, `client_secret`, `certificate_pem`, `private_key_pem`) or JSON (an array of
/// onboarding bodies, or `{"tenants": [...]}`). Rows are checked and applied one by one, each
/// with its own outcome: a bad row does not stop the others. Importing the same file again
/// changes nothing (`unchanged`); a row for a registered tenant with other details or
/// credentials updates it (`updated`).
#[utoipa::path(
    operation_id = "v1.tenant.import",
    tag = "tenants",
    params(ImportQuery),
    request_body(content = String, description = "CSV or JSON", content_type = "text/csv"),
    responses(
        (status = 200, description = "The outcome of every row", body = ImportReport),
        (status = 400, description = "The file cannot be read (`import_file_invalid`)"),
    )
)]
#[post("/tenants:import")]
async fn import_tenants(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    query: web::Query<ImportQuery>,
    payload: web::Payload,
) -> Result<web::Json<ImportReport>, ApiError> {
    caller.require(Role::Operator)?;
    if caller.access.tenants.restricted_to().is_some() {
        return Err(ApiError::RestrictedKey);
    }
    let registry = registry(&state)?;
    let content_type = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default();
    let csv = match content_type.as_str() {
        "text/csv" => true,
        "application/json" => false,
        _ => return Err(ApiError::UnsupportedMediaTypeOf("text/csv or application/json")),
    };
    let declared = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let body = crate::idempotency::read_limited(declared, payload, state.settings.max_import_bytes)
        .await?;
    let rows = if csv { sspr_registry::parse_csv(&body) } else { sspr_registry::parse_json(&body) }
        .map_err(|e| ApiError::ImportFile(e.to_string()))?;
    let dry_run = query.dry_run.unwrap_or(false);
    let total = rows.len();
    let outcomes = registry.import(rows, dry_run, &|_, _| {}).await?;
    let mut counts = BTreeMap::new();
    for o in &outcomes {
        *counts.entry(o.outcome.clone()).or_insert(0) += 1;
    }
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "dry_run": dry_run, "total": total, "counts": counts,
    })));
    Ok(web::Json(ImportReport { dry_run, total, counts, rows: outcomes }))
}

/// Verify many tenants now.
///
/// Checks the given tenants, or every active tenant within the caller's reach, in parallel
/// within the Graph rate limits, and answers when all are done. Each tenant's report is stored
/// as with `POST /v1/tenants/{id}/verify`.
#[utoipa::path(
    operation_id = "v1.tenant.verify-many",
    tag = "tenants",
    request_body = VerifyTenants,
    responses(
        (status = 200, description = "The outcome per tenant", body = VerifyReport),
        (status = 422, description = "A field is invalid"),
    )
)]
#[post("/tenants:verify")]
async fn verify_tenants(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<VerifyTenants>,
) -> Result<web::Json<VerifyReport>, ApiError> {
    caller.require(Role::Operator)?;
    let registry = registry(&state)?;
    let mut unknown = Vec::new();
    let ids: Vec<TenantId> = match body.0.tenant_ids {
        Some(ids) => {
            if ids.len() > 1000 {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "tenant_ids",
                    "too_many",
                    "at most 1000 tenant ids",
                )]));
            }
            let mut seen = std::collections::BTreeSet::new();
            ids.into_iter()
                .filter(|id| seen.insert(id.clone()))
                .filter_map(|id| match tenant_id(&caller, &id) {
                    Ok(t) => Some(t),
                    Err(_) => {
                        unknown.push(id);
                        None
                    }
                })
                .collect()
        }
        // Every active tenant within reach, however many: read a page at a time.
        None => {
            registry.tenants_to_verify(caller.access.tenants.restricted_to(), VERIFY_PAGE).await?
        }
    };
    let mut results: Vec<VerifyOutcome> = Vec::new();
    for (id, outcome) in registry.verify_many(ids).await {
        let (status, reason) = match outcome {
            Ok(report) => {
                let reason = report.blockers.first().map(|b| b.code.clone());
                (report.status, reason)
            }
            Err(RegistryError::NotFound) => ("not_found".to_owned(), None),
            Err(e @ RegistryError::Store(_)) => return Err(e.into()),
            Err(e) => {
                tracing::error!(tenant_id = %id, error = %crate::error::ErrorChain(&e), "verification failed");
                ("error".to_owned(), Some("internal_error".to_owned()))
            }
        };
        results.push(VerifyOutcome { tenant_id: id.to_string(), status, reason });
    }
    results.extend(unknown.into_iter().map(|id| VerifyOutcome {
        tenant_id: id,
        status: "not_found".into(),
        reason: None,
    }));
    let mut counts = BTreeMap::new();
    for r in &results {
        *counts.entry(r.status.clone()).or_insert(0) += 1;
    }
    req.extensions_mut().insert(AuditDetails(serde_json::json!({ "counts": counts })));
    Ok(web::Json(VerifyReport { counts, results }))
}

/// List tenants.
#[utoipa::path(
    operation_id = "v1.tenant.list",
    tag = "tenants",
    params(TenantQuery),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 422, description = "A filter is invalid"),
    )
)]
#[get("/tenants")]
async fn list_tenants(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<TenantQuery>,
) -> Result<web::Json<TenantPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        errors.push(FieldError::new(
            "limit",
            "out_of_range",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let status =
        q.status.as_deref().map(str::parse::<TenantStatus>).transpose().unwrap_or_else(|_| {
            // The value is not repeated: it may be a secret pasted in the wrong place.
            let all: Vec<&str> = TenantStatus::ALL.iter().map(|s| s.as_str()).collect();
            errors.push(FieldError::new(
                "status",
                "invalid_value",
                format!("expected one of {}", all.join(", ")),
            ));
            None
        });
    let licence =
        q.licence.as_deref().map(str::parse::<LicenceLevel>).transpose().unwrap_or_else(|_| {
            let all: Vec<&str> = LicenceLevel::ALL.iter().map(|s| s.as_str()).collect();
            errors.push(FieldError::new(
                "licence",
                "invalid_value",
                format!("expected one of {}", all.join(", ")),
            ));
            None
        });
    let after_id = match q.cursor.as_deref().map(super::cursor::decode_text) {
        Some(None) => {
            errors.push(FieldError::new("cursor", "invalid_format", "not a cursor from this API"));
            None
        }
        Some(id) => id,
        None => None,
    };
    if q.q.as_ref().is_some_and(|s| s.chars().count() > 200) {
        errors.push(FieldError::new("q", "too_long", "at most 200 characters"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut filter = TenantFilter {
        tag: q.tag.map(|t| t.trim().to_ascii_lowercase()),
        status,
        licence,
        search: q.q.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()),
        within: caller.access.tenants.restricted_to().cloned(),
        include_offboarded: q.include_offboarded.unwrap_or(false),
        after_id,
        limit: limit + 1,
    };
    let store = &state.store;
    let mut tenants = store.list_tenants(&filter).await?;
    let more = tenants.len() > limit as usize;
    tenants.truncate(limit as usize);
    let next_cursor =
        if more { tenants.last().map(|t| super::cursor::encode_text(t.id.as_str())) } else { None };
    filter.after_id = None;
    let total = store.count_tenants(&filter).await?;
    Ok(web::Json(TenantPage {
        items: tenants.into_iter().map(|t| TenantView::from_tenant(t, false)).collect(),
        next_cursor,
        total,
    }))
}

/// Get a tenant, with its last readiness report.
#[utoipa::path(
    operation_id = "v1.tenant.get",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        (status = 404, description = "No such tenant within the caller's reach"),
    )
)]
#[get("/tenants/{id}")]
async fn get_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<web::Json<TenantView>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = tenant_id(&caller, &id)?;
    let tenant = state.store.get_tenant(&id).await?.ok_or(ApiError::NotFound("tenant"))?;
    Ok(web::Json(TenantView::from_tenant(tenant, true)))
}

/// Update a tenant's name, tags or external references.
#[utoipa::path(
    operation_id = "v1.tenant.update",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`")),
    request_body = UpdateTenant,
    responses(
        (status = 200, description = "The updated tenant", body = TenantView),
        (status = 404, description = "No such active tenant within the caller's reach"),
        (status = 422, description = "A field is invalid"),
    )
)]
#[patch("/tenants/{id}")]
async fn update_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateTenant>,
) -> Result<web::Json<TenantView>, ApiError> {
    caller.require(Role::Operator)?;
    let id = tenant_id(&caller, &id)?;
    mark(&req, &id);
    let body = body.0;
    let update = TenantUpdate {
        display_name: body.display_name,
        tags: body.tags,
        external_refs: body.external_refs,
    };
    let tenant = registry(&state)?.update(&id, update).await?;
    Ok(web::Json(TenantView::from_tenant(tenant, true)))
}

/// Offboard a tenant.
///
/// Deletes the tenant's credentials for good and marks it `offboarded`; its history (audit log,
/// last readiness report) is kept. Offboarding again answers the same.
#[utoipa::path(
    operation_id = "v1.tenant.offboard",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`")),
    responses(
        (status = 200, description = "The offboarded tenant", body = TenantView),
        (status = 404, description = "No such tenant within the caller's reach"),
    )
)]
#[delete("/tenants/{id}")]
async fn offboard_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<web::Json<TenantView>, ApiError> {
    caller.require(Role::Operator)?;
    let id = tenant_id(&caller, &id)?;
    mark(&req, &id);
    let tenant = registry(&state)?.offboard(&id).await?;
    Ok(web::Json(TenantView::from_tenant(tenant, true)))
}

/// Rotate a tenant's credentials.
///
/// Replaces the stored credentials in one step. By default the new credentials must first
/// obtain a token from the tenant; if they do not, the answer is 422 with the reason
/// (`credentials_invalid`, `consent_missing`, ...) and the old credentials stay. Work already
/// running keeps the credentials it started with, so there is no gap.
#[utoipa::path(
    operation_id = "v1.tenant.credentials.put",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`"), RotateQuery),
    request_body = CredentialInput,
    responses(
        (status = 200, description = "The tenant with its new credentials", body = TenantView),
        (status = 404, description = "No such active tenant within the caller's reach"),
        (status = 422, description = "A field is invalid, or the new credentials were refused"),
    )
)]
#[put("/tenants/{id}/credentials")]
async fn put_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<RotateQuery>,
    body: ValidJson<CredentialInput>,
) -> Result<web::Json<TenantView>, ApiError> {
    caller.require(Role::Operator)?;
    let id = tenant_id(&caller, &id)?;
    mark(&req, &id);
    let check = query.check.unwrap_or(true);
    let tenant = registry(&state)?.rotate_credentials(&id, body.0, check).await?;
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "credential_id": tenant.credential.as_ref().map(|c| c.id.to_string()),
        "checked": check,
    })));
    Ok(web::Json(TenantView::from_tenant(tenant, true)))
}

/// A tenant's portal credential, without the refresh token.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PortalCredentialView {
    /// Id of the stored credential, `cred_...`; changes each time it is put.
    pub id: String,
    /// The client id sent with the refresh token, if any.
    pub client_id: Option<String>,
    /// When it was put.
    pub created_at: DateTime<Utc>,
    /// When the sealed refresh token last changed (the identity platform rotates it).
    pub updated_at: DateTime<Utc>,
    /// Always `true`: the portal API is undocumented and unsupported by Microsoft.
    pub unsupported: bool,
}

impl From<sspr_store::PortalCredential> for PortalCredentialView {
    fn from(c: sspr_store::PortalCredential) -> Self {
        Self {
            id: c.id.to_string(),
            client_id: c.client_id,
            created_at: c.created_at,
            updated_at: c.updated_at,
            unsupported: true,
        }
    }
}

/// A tenant's portal credential (unsupported `portal` scope mode).
///
/// Shows whether the tenant has a portal credential, never the token itself.
#[utoipa::path(
    operation_id = "v1.tenant.portal_credentials.get",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`")),
    responses(
        (status = 200, description = "The portal credential", body = PortalCredentialView),
        (status = 404, description = "No such active tenant, or it has no portal credential"),
    )
)]
#[get("/tenants/{id}/portal-credentials")]
async fn get_portal_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<web::Json<PortalCredentialView>, ApiError> {
    caller.require(Role::Viewer)?;
    let id = tenant_id(&caller, &id)?;
    let cred = registry(&state)?
        .portal_credential(&id)
        .await?
        .ok_or(ApiError::NotFound("portal credential"))?;
    Ok(web::Json(cred.into()))
}

/// Put a tenant's portal credential (**unsupported** `portal` scope mode).
///
/// Stores an administrator's delegated refresh token, sealed, for the Azure portal's
/// undocumented SSPR policy API, which the opt-in `scope_mode: portal` uses to set SSPR to
/// Selected = the scope group instead of a technician's task. Microsoft neither documents nor
/// supports that API: it can change or stop working without notice. By default the refresh
/// token must first obtain a portal token from the tenant; if it does not, the answer is 422
/// and nothing is stored. The token is never shown again.
#[utoipa::path(
    operation_id = "v1.tenant.portal_credentials.put",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`"), RotateQuery),
    request_body = PortalCredentialInput,
    responses(
        (status = 200, description = "The stored portal credential", body = PortalCredentialView),
        (status = 404, description = "No such active tenant within the caller's reach"),
        (status = 422, description = "A field is invalid, or the refresh token was refused"),
    )
)]
#[put("/tenants/{id}/portal-credentials")]
async fn put_portal_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    query: web::Query<RotateQuery>,
    body: ValidJson<PortalCredentialInput>,
) -> Result<web::Json<PortalCredentialView>, ApiError> {
    caller.require(Role::Operator)?;
    let id = tenant_id(&caller, &id)?;
    mark(&req, &id);
    let check = query.check.unwrap_or(true);
    let cred = registry(&state)?.set_portal_credential(&id, body.0, check).await?;
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "portal_credential_id": cred.id.to_string(),
        "checked": check,
    })));
    Ok(web::Json(cred.into()))
}

/// Delete a tenant's portal credential.
///
/// Rollouts in `portal` scope mode then fail this tenant with `portal_credentials_missing`.
#[utoipa::path(
    operation_id = "v1.tenant.portal_credentials.delete",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such active tenant, or it has no portal credential"),
    )
)]
#[delete("/tenants/{id}/portal-credentials")]
async fn delete_portal_credentials(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let id = tenant_id(&caller, &id)?;
    mark(&req, &id);
    if !registry(&state)?.remove_portal_credential(&id).await? {
        return Err(ApiError::NotFound("portal credential"));
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Verify a tenant now.
///
/// Obtains a token and reads, in Graph: the organization (tenant id, hybrid sync), the
/// subscribed SKUs (licences by service-plan GUID), the authentication methods policy
/// (migration state, methods), the authorization policy and the user counts. Records and
/// returns the readiness report; the tenant's status follows from it.
#[utoipa::path(
    operation_id = "v1.tenant.verify",
    tag = "tenants",
    params(("id" = String, Path, description = "The tenant's id, `ten_...`")),
    responses(
        (status = 200, description = "The tenant with its new readiness report", body = TenantView),
        (status = 404, description = "No such active tenant within the caller's reach"),
    )
)]
#[post("/tenants/{id}/verify")]
async fn verify_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<web::Json<TenantView>, ApiError> {
    caller.require(Role::Operator)?;
    let id = tenant_id(&caller, &id)?;
    mark(&req, &id);
    let (tenant, report) = registry(&state)?.verify(&id).await?;
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "status": report.status,
        "blockers": report.blockers.iter().map(|b| b.code.clone()).collect::<Vec<_>>(),
    })));
    Ok(web::Json(TenantView::from_tenant(tenant, true)))
}
