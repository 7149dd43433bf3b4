//! `/v1/api-keys`: create, list, read and revoke API keys, and `/v1/me`.

use std::collections::BTreeSet;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sspr_domain::{ApiKeyId, Role, TenantId, TenantScope};
use sspr_store::ApiKey;
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
    extract::ValidJson,
    keys::{NewKey, issue_api_key},
    middleware::AuditDetails,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create_api_key)
        .service(list_api_keys)
        .service(get_api_key)
        .service(revoke_api_key)
        .service(get_me);
}

/// The role of an API key: `viewer` reads, `operator` also runs rollouts, `admin` also manages
/// keys and webhooks.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApiRole {
    /// Reads everything in its scope.
    Viewer,
    /// Also onboards tenants and runs rollouts.
    Operator,
    /// Also manages API keys and webhooks.
    Admin,
}

impl From<Role> for ApiRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Viewer => ApiRole::Viewer,
            Role::Operator => ApiRole::Operator,
            Role::Admin => ApiRole::Admin,
        }
    }
}

/// A request to create an API key.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    /// A name that says who uses the key, e.g. `connectwise-prod`. 1 to 100 characters.
    #[schema(example = "connectwise-prod")]
    pub name: String,
    /// The key's role.
    #[schema(value_type = ApiRole)]
    pub role: String,
    /// Restrict the key to these tenants. Omit (or `null`) for every tenant.
    #[serde(default)]
    #[schema(nullable, example = json!(["ten_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e"]))]
    pub tenant_ids: Option<Vec<String>>,
}

/// An API key, without the key itself.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyView {
    /// Public id of the key.
    pub id: String,
    /// Name of the key.
    pub name: String,
    /// Role of the key.
    pub role: ApiRole,
    /// Tenants the key is restricted to; `null` when it reaches every tenant.
    pub tenant_ids: Option<Vec<String>>,
    /// When the key was created.
    pub created_at: DateTime<Utc>,
    /// Who created it: a key id, or `cli`.
    pub created_by: String,
    /// When the key last authenticated a request (to the minute).
    pub last_used_at: Option<DateTime<Utc>>,
    /// When the key was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id.to_string(),
            name: key.name,
            role: key.role.into(),
            tenant_ids: key.tenants.restricted_to().map(|set| set.iter().cloned().collect()),
            created_at: key.created_at,
            created_by: key.created_by,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A newly created key. `key` is shown this once and cannot be retrieved again.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedApiKey {
    /// The key to send as `Authorization: Bearer <key>`. Store it now: it is not kept.
    pub key: String,
    /// The stored description of the key.
    pub api_key: ApiKeyView,
}

/// A list of API keys.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ApiKeyList {
    /// The keys, oldest first.
    pub items: Vec<ApiKeyView>,
}

fn parse_create(body: CreateApiKey) -> Result<NewKey, ApiError> {
    let mut errors = Vec::new();
    let name = super::check_name("name", &body.name, 100, &mut errors);
    let role = body.role.parse::<Role>().map_err(|e| {
        errors.push(FieldError::new("role", "invalid_value", e.to_string()));
    });
    let tenants = match body.tenant_ids {
        None => TenantScope::All,
        Some(ids) => {
            if ids.len() > 1000 {
                errors.push(FieldError::new("tenant_ids", "too_many", "at most 1000 tenant ids"));
            }
            let mut set = BTreeSet::new();
            for (i, id) in ids.iter().enumerate() {
                match id.parse::<TenantId>() {
                    Ok(id) => {
                        set.insert(id.to_string());
                    }
                    Err(e) => errors.push(FieldError::new(
                        format!("tenant_ids[{i}]"),
                        "invalid_format",
                        e.to_string(),
                    )),
                }
            }
            TenantScope::Only(set)
        }
    };
    match role {
        Ok(role) if errors.is_empty() => Ok(NewKey { name, role, tenants }),
        _ => Err(ApiError::Validation(errors)),
    }
}

/// Create an API key.
///
/// The key is returned once, in `key`; only its hash is stored. A key can only grant what its
/// creator has: an admin restricted to some tenants can only create keys restricted to those.
#[utoipa::path(
    operation_id = "v1.api-key.create",
    tag = "api-keys",
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The key was created", body = CreatedApiKey),
        (status = 422, description = "A field is invalid"),
    )
)]
#[post("/api-keys")]
async fn create_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<CreateApiKey>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let new = parse_create(body.0)?;
    if !caller.access.may_grant(new.role, &new.tenants) {
        return Err(ApiError::GrantExceedsOwn);
    }
    let (key, token) =
        issue_api_key(&state.store, state.clock.as_ref(), new, caller.key_id.as_str()).await?;
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "api_key_id": key.id.as_str(),
        "role": key.role.as_str(),
    })));
    crate::idempotency::carries_secret(&req, &["key"]);
    Ok(HttpResponse::Created()
        .json(CreatedApiKey { key: token.reveal().to_owned(), api_key: key.into() }))
}

/// Keys the caller may see: all of them for an unrestricted admin, otherwise those whose
/// tenants the caller reaches.
fn visible(caller: &Caller, key: &ApiKey) -> bool {
    caller.access.tenants.covers(&key.tenants)
}

/// List API keys.
#[utoipa::path(
    operation_id = "v1.api-key.list",
    tag = "api-keys",
    responses((status = 200, description = "The keys, oldest first", body = ApiKeyList))
)]
#[get("/api-keys")]
async fn list_api_keys(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<ApiKeyList>, ApiError> {
    caller.require(Role::Admin)?;
    let keys = state.store.list_api_keys().await?;
    let items = keys.into_iter().filter(|k| visible(&caller, k)).map(ApiKeyView::from).collect();
    Ok(web::Json(ApiKeyList { items }))
}

async fn find_visible(state: &AppState, caller: &Caller, id: &str) -> Result<ApiKey, ApiError> {
    let id: ApiKeyId = id.parse().map_err(|_| ApiError::NotFound("api key"))?;
    match state.store.get_api_key(&id).await? {
        Some(key) if visible(caller, &key) => Ok(key),
        _ => Err(ApiError::NotFound("api key")),
    }
}

/// Get one API key.
#[utoipa::path(
    operation_id = "v1.api-key.get",
    tag = "api-keys",
    params(("id" = String, Path, description = "The key's id, `key_...`")),
    responses(
        (status = 200, description = "The key", body = ApiKeyView),
        (status = 404, description = "No such key"),
    )
)]
#[get("/api-keys/{id}")]
async fn get_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<web::Json<ApiKeyView>, ApiError> {
    caller.require(Role::Admin)?;
    Ok(web::Json(find_visible(&state, &caller, &id).await?.into()))
}

/// Revoke an API key.
///
/// A revoked key authenticates nothing from the next request on. Revoking is final.
#[utoipa::path(
    operation_id = "v1.api-key.revoke",
    tag = "api-keys",
    params(("id" = String, Path, description = "The key's id, `key_...`")),
    responses(
        (status = 204, description = "The key is revoked"),
        (status = 404, description = "No such key, or it is already revoked"),
    )
)]
#[delete("/api-keys/{id}")]
async fn revoke_api_key(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let key = find_visible(&state, &caller, &id).await?;
    if state.store.revoke_api_key(&key.id, state.clock.now()).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("api key"))
    }
}

/// The key making this request.
#[utoipa::path(
    operation_id = "v1.me.get",
    tag = "api-keys",
    responses((status = 200, description = "The calling key", body = ApiKeyView))
)]
#[get("/me")]
async fn get_me(
    state: web::Data<AppState>,
    caller: Caller,
) -> Result<web::Json<ApiKeyView>, ApiError> {
    let key = state.store.get_api_key(&caller.key_id).await?.ok_or(ApiError::Unauthorized)?;
    Ok(web::Json(key.into()))
}
