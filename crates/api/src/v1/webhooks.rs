//! `/v1/webhooks`: signed webhook subscriptions for PSA tools and automation, their delivery
//! log, redelivery, test events and secret rotation. Admin only.
//!
//! A subscription reaches the tenants of the key that created it (all tenants for an
//! unrestricted key). A restricted key sees only subscriptions whose tenants it reaches;
//! any other answers 404, as if it did not exist.

use std::collections::BTreeSet;

use actix_web::{HttpMessage, HttpRequest, HttpResponse, delete, get, patch, post, web};
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use sspr_domain::{DeliveryId, Role, TenantScope, WebhookEventType, WebhookId};
use sspr_reporting::webhooks::{NewWebhook, WebhookError, Webhooks};
use sspr_store::{
    DeliveryAttempt, DeliveryState, WebhookDelivery, WebhookPatch, WebhookSubscription,
};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
    extract::ValidJson,
    middleware::AuditDetails,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(create_webhook)
        .service(list_webhooks)
        .service(get_webhook)
        .service(update_webhook)
        .service(delete_webhook)
        .service(rotate_webhook_secret)
        .service(list_deliveries)
        .service(get_delivery)
        .service(redeliver)
        .service(send_test);
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;
const MAX_DESCRIPTION: usize = 500;

impl From<WebhookError> for ApiError {
    fn from(e: WebhookError) -> Self {
        match e {
            WebhookError::Store(e) => e.into(),
            other => ApiError::Internal(Box::new(other)),
        }
    }
}

/// A request to create a webhook subscription.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where events are POSTed: `http` or `https`, no user name or password, at most 2048
    /// characters. The host must be public (not loopback, private, link-local, ... nor a
    /// local name such as `localhost`) unless the daemon allows private targets
    /// (`webhooks.allow_private_targets`); `non_public_target` otherwise.
    #[schema(example = "https://psa.example.com/hooks/sspr")]
    pub url: String,
    /// What the subscription is for, up to 500 characters.
    #[serde(default)]
    pub description: Option<String>,
    /// The event types to receive, at least one: `tenant.blocked`,
    /// `tenant.gate_waiting_approval`, `tenant.completed`, `tenant.failed`, `tenant.sms_risk`,
    /// `rollout.paused`, `rollout.completed`.
    #[schema(example = json!(["tenant.blocked", "tenant.gate_waiting_approval"]))]
    pub event_types: Vec<String>,
    /// Whether it receives events (default `true`).
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A change to a subscription; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// A new URL, checked as at creation (`non_public_target` for a host that is not public
    /// unless private targets are allowed).
    #[serde(default)]
    pub url: Option<String>,
    /// A new description.
    #[serde(default)]
    pub description: Option<String>,
    /// New event types (at least one).
    #[serde(default)]
    pub event_types: Option<Vec<String>>,
    /// Enable or disable. A disabled subscription receives no new events; its pending
    /// deliveries fail.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// A webhook subscription, without its secret.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookView {
    /// Id, `whk_...`.
    pub id: String,
    /// Where events are POSTed.
    pub url: String,
    /// What it is for.
    pub description: String,
    /// The event types it receives.
    pub event_types: Vec<String>,
    /// The tenants whose events it receives; `null` for every tenant.
    pub tenant_ids: Option<Vec<String>>,
    /// Whether it receives events.
    pub enabled: bool,
    /// Until when the secret replaced by the last rotation still signs, if it does.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The key that created it.
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl WebhookView {
    fn of(w: WebhookSubscription, now: DateTime<Utc>) -> Self {
        Self {
            id: w.id.to_string(),
            url: w.url,
            description: w.description,
            event_types: w.event_types,
            tenant_ids: w.tenant_scope.map(|s| s.into_iter().collect()),
            enabled: w.enabled,
            previous_secret_expires_at: w.previous_secret_until.filter(|u| *u > now),
            created_by: w.created_by,
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A new subscription with its secret. `secret` is shown this once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct CreatedWebhook {
    /// The signing secret, `whsec_` + base64 of 32 bytes; the HMAC key is the decoded part.
    /// Store it now: it cannot be read again.
    pub secret: String,
    /// The subscription.
    pub webhook: WebhookView,
}

/// A new secret after a rotation. `secret` is shown this once.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct RotatedSecret {
    /// The new signing secret. Store it now: it cannot be read again.
    pub secret: String,
    /// Until when the previous secret still signs (beside the new one).
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// The subscription.
    pub webhook: WebhookView,
}

// Debug leaves the secret out, so that no log line can show it.
impl std::fmt::Debug for CreatedWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedWebhook").field("webhook", &self.webhook).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for RotatedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedSecret")
            .field("previous_secret_expires_at", &self.previous_secret_expires_at)
            .field("webhook", &self.webhook)
            .finish_non_exhaustive()
    }
}

/// A page of subscriptions.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WebhookPage {
    /// Subscriptions, oldest first.
    pub items: Vec<WebhookView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// One attempt to deliver an event.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    /// 1 for the first attempt (redeliveries continue the count).
    pub attempt: i32,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The HTTP status answered; `null` when no answer came.
    pub status: Option<i32>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
}

impl From<DeliveryAttempt> for AttemptView {
    fn from(a: DeliveryAttempt) -> Self {
        Self {
            attempt: a.attempt,
            at: a.at,
            status: a.status,
            error: a.error,
            duration_ms: a.duration_ms,
        }
    }
}

/// One event for one subscription and where its delivery stands.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    /// Id, `whd_...`.
    pub id: String,
    /// The subscription.
    pub webhook_id: String,
    /// The `webhook-id` header: the same on every attempt and redelivery.
    pub message_id: String,
    /// The event type.
    pub event_type: String,
    /// The tenant it concerns, if any.
    pub tenant_id: Option<String>,
    /// `pending`, `delivered` or `failed`.
    pub state: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The status of the last answer.
    pub last_status: Option<i32>,
    /// What went wrong with the last attempt.
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it was last tried.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The body sent.
    pub payload: serde_json::Value,
    /// Every attempt (only when one delivery is read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_log: Option<Vec<AttemptView>>,
}

impl From<WebhookDelivery> for DeliveryView {
    fn from(d: WebhookDelivery) -> Self {
        Self {
            id: d.id.to_string(),
            webhook_id: d.subscription_id.to_string(),
            message_id: d.message_id.to_string(),
            event_type: d.event_type,
            tenant_id: d.tenant_id,
            state: d.state.as_str().to_owned(),
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            delivered_at: d.delivered_at,
            payload: d.payload,
            attempt_log: None,
        }
    }
}

/// A page of deliveries.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    /// Deliveries, newest first.
    pub items: Vec<DeliveryView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging of subscriptions.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageQuery {
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// Filter and paging of deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeliveryQuery {
    /// Only deliveries in this state: `pending`, `delivered` or `failed`.
    state: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

fn check_types(field: &str, types: &[String], errors: &mut Vec<FieldError>) -> Vec<String> {
    if types.is_empty() {
        errors.push(FieldError::new(field, "empty", "name at least one event type"));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for (i, t) in types.iter().enumerate() {
        match t.parse::<WebhookEventType>() {
            Ok(t) => {
                if seen.insert(t) {
                    out.push(t.as_str().to_owned());
                }
            }
            Err(_) => {
                let all: Vec<&str> = WebhookEventType::ALL.iter().map(|t| t.as_str()).collect();
                errors.push(FieldError::new(
                    format!("{field}[{i}]"),
                    "unknown_event_type",
                    format!("expected one of {}", all.join(", ")),
                ));
            }
        }
    }
    out
}

fn check_url_field(webhooks: &Webhooks, url: &str, errors: &mut Vec<FieldError>) -> String {
    match webhooks.check_url(url) {
        Ok(url) => url,
        Err(problem) => {
            errors.push(FieldError::new("url", problem.code(), problem.to_string()));
            String::new()
        }
    }
}

fn check_description(text: &str, errors: &mut Vec<FieldError>) -> String {
    let text = text.trim();
    if text.chars().count() > MAX_DESCRIPTION {
        errors.push(FieldError::new("description", "too_long", "at most 500 characters"));
    } else if text.chars().any(char::is_control) {
        errors.push(FieldError::new(
            "description",
            "invalid_format",
            "description contains control characters",
        ));
    }
    text.to_owned()
}

/// The scope of a subscription as a key scope.
fn scope_of(w: &WebhookSubscription) -> TenantScope {
    match &w.tenant_scope {
        None => TenantScope::All,
        Some(set) => TenantScope::Only(set.clone()),
    }
}

fn visible(caller: &Caller, w: &WebhookSubscription) -> bool {
    caller.access.tenants.covers(&scope_of(w))
}

async fn find_visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<WebhookSubscription, ApiError> {
    let id: WebhookId = id.parse().map_err(|_| ApiError::NotFound("webhook"))?;
    match state.store.get_webhook(&id).await? {
        Some(w) if visible(caller, &w) => Ok(w),
        _ => Err(ApiError::NotFound("webhook")),
    }
}

fn mark(req: &HttpRequest, id: &WebhookId) {
    req.extensions_mut().insert(AuditDetails(serde_json::json!({ "webhook_id": id.as_str() })));
}

/// Create a webhook subscription.
///
/// The signing secret is returned once, in `secret`. The subscription receives the events of
/// the tenants the calling key reaches: all of them for an unrestricted key.
#[utoipa::path(
    operation_id = "v1.webhook.create",
    tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "The subscription and its secret", body = CreatedWebhook),
        (status = 422, description = "A field is invalid (`invalid_url`, `unsupported_scheme`, `credentials_in_url`, `non_public_target`, `unknown_event_type`, `empty`, ...)"),
    )
)]
#[post("/webhooks")]
async fn create_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    body: ValidJson<CreateWebhook>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let body = body.0;
    let mut errors = Vec::new();
    let url = check_url_field(&state.webhooks, &body.url, &mut errors);
    let description = check_description(body.description.as_deref().unwrap_or(""), &mut errors);
    let event_types = check_types("event_types", &body.event_types, &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let new = NewWebhook {
        url,
        description,
        event_types,
        tenant_scope: caller.access.tenants.restricted_to().cloned(),
        enabled: body.enabled.unwrap_or(true),
        created_by: caller.key_id.to_string(),
    };
    let (w, secret) = state.webhooks.create(new).await?;
    mark(&req, &w.id);
    let view = WebhookView::of(w, state.clock.now());
    crate::idempotency::carries_secret(&req, &["secret"]);
    Ok(HttpResponse::Created().json(CreatedWebhook {
        secret: secret.to_text().expose_secret().to_owned(),
        webhook: view,
    }))
}

/// List webhook subscriptions.
#[utoipa::path(
    operation_id = "v1.webhook.list",
    tag = "webhooks",
    params(PageQuery),
    responses(
        (status = 200, description = "A page of subscriptions, oldest first", body = WebhookPage),
        (status = 422, description = "A paging parameter is invalid"),
    )
)]
#[get("/webhooks")]
async fn list_webhooks(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<PageQuery>,
) -> Result<web::Json<WebhookPage>, ApiError> {
    caller.require(Role::Admin)?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let (limit, mut after) =
        super::page_params(q.limit, DEFAULT_LIMIT, MAX_LIMIT, q.cursor.as_deref(), &mut errors);
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    // Visibility is decided per row, so read on until the page is full or the table ends.
    let mut items = Vec::new();
    let mut more = false;
    'pages: loop {
        let batch = state.store.list_webhooks(after.as_deref(), MAX_LIMIT).await?;
        let done = batch.len() < MAX_LIMIT as usize;
        for w in batch {
            after = Some(w.id.to_string());
            if !visible(&caller, &w) {
                continue;
            }
            if items.len() == limit as usize {
                more = true;
                break 'pages;
            }
            items.push(w);
        }
        if done {
            break;
        }
    }
    let next_cursor =
        if more { items.last().map(|w| super::cursor::encode_text(w.id.as_str())) } else { None };
    let now = state.clock.now();
    Ok(web::Json(WebhookPage {
        items: items.into_iter().map(|w| WebhookView::of(w, now)).collect(),
        next_cursor,
    }))
}

/// Get one webhook subscription (never its secret).
#[utoipa::path(
    operation_id = "v1.webhook.get",
    tag = "webhooks",
    params(("id" = String, Path, description = "The subscription's id, `whk_...`")),
    responses(
        (status = 200, description = "The subscription", body = WebhookView),
        (status = 404, description = "No such subscription within the caller's reach"),
    )
)]
#[get("/webhooks/{id}")]
async fn get_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
) -> Result<web::Json<WebhookView>, ApiError> {
    caller.require(Role::Admin)?;
    let w = find_visible(&state, &caller, &id).await?;
    Ok(web::Json(WebhookView::of(w, state.clock.now())))
}

/// Change a webhook subscription's URL, description, event types or whether it is enabled.
#[utoipa::path(
    operation_id = "v1.webhook.update",
    tag = "webhooks",
    params(("id" = String, Path, description = "The subscription's id, `whk_...`")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The updated subscription", body = WebhookView),
        (status = 404, description = "No such subscription within the caller's reach"),
        (status = 422, description = "A field is invalid (`invalid_url`, `unsupported_scheme`, `credentials_in_url`, `non_public_target`, `unknown_event_type`, `empty`, ...)"),
    )
)]
#[patch("/webhooks/{id}")]
async fn update_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
    body: ValidJson<UpdateWebhook>,
) -> Result<web::Json<WebhookView>, ApiError> {
    caller.require(Role::Admin)?;
    let w = find_visible(&state, &caller, &id).await?;
    mark(&req, &w.id);
    let body = body.0;
    let mut errors = Vec::new();
    let url = body.url.as_deref().map(|u| check_url_field(&state.webhooks, u, &mut errors));
    let description = body.description.as_deref().map(|d| check_description(d, &mut errors));
    let event_types =
        body.event_types.as_deref().map(|t| check_types("event_types", t, &mut errors));
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let now = state.clock.now();
    let patch = WebhookPatch { url, description, event_types, enabled: body.enabled, at: now };
    let w =
        state.store.update_webhook(&w.id, &patch).await?.ok_or(ApiError::NotFound("webhook"))?;
    Ok(web::Json(WebhookView::of(w, now)))
}

/// Delete a webhook subscription and its delivery log.
#[utoipa::path(
    operation_id = "v1.webhook.delete",
    tag = "webhooks",
    params(("id" = String, Path, description = "The subscription's id, `whk_...`")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such subscription within the caller's reach"),
    )
)]
#[delete("/webhooks/{id}")]
async fn delete_webhook(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let w = find_visible(&state, &caller, &id).await?;
    mark(&req, &w.id);
    if state.store.delete_webhook(&w.id).await? {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound("webhook"))
    }
}

/// Rotate a webhook subscription's signing secret.
///
/// The new secret is returned once. For 24 hours the previous secret keeps signing too: each
/// request carries both signatures in `webhook-signature`, so the receiver can switch at its
/// own pace.
#[utoipa::path(
    operation_id = "v1.webhook.rotate-secret",
    tag = "webhooks",
    params(("id" = String, Path, description = "The subscription's id, `whk_...`")),
    responses(
        (status = 200, description = "The new secret", body = RotatedSecret),
        (status = 404, description = "No such subscription within the caller's reach"),
        (status = 409, description = "Rotated by another request at the same moment (`rotation_conflict`)"),
    )
)]
#[post("/webhooks/{id}/rotate-secret")]
async fn rotate_webhook_secret(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<web::Json<RotatedSecret>, ApiError> {
    caller.require(Role::Admin)?;
    let w = find_visible(&state, &caller, &id).await?;
    mark(&req, &w.id);
    let (w, secret) = state.webhooks.rotate(&w).await?.ok_or_else(|| ApiError::StateConflict {
        code: "rotation_conflict",
        message: "the secret was rotated by another request; try again".into(),
    })?;
    let now = state.clock.now();
    crate::idempotency::carries_secret(&req, &["secret"]);
    Ok(web::Json(RotatedSecret {
        secret: secret.to_text().expose_secret().to_owned(),
        previous_secret_expires_at: w.previous_secret_until.filter(|u| *u > now),
        webhook: WebhookView::of(w, now),
    }))
}

/// List a subscription's deliveries, newest first.
#[utoipa::path(
    operation_id = "v1.webhook.delivery.list",
    tag = "webhooks",
    params(("id" = String, Path, description = "The subscription's id, `whk_...`"), DeliveryQuery),
    responses(
        (status = 200, description = "A page of deliveries, newest first", body = DeliveryPage),
        (status = 404, description = "No such subscription within the caller's reach"),
        (status = 422, description = "A filter is invalid"),
    )
)]
#[get("/webhooks/{id}/deliveries")]
async fn list_deliveries(
    state: web::Data<AppState>,
    caller: Caller,
    id: web::Path<String>,
    query: web::Query<DeliveryQuery>,
) -> Result<web::Json<DeliveryPage>, ApiError> {
    caller.require(Role::Admin)?;
    let w = find_visible(&state, &caller, &id).await?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let (limit, before) =
        super::page_params(q.limit, DEFAULT_LIMIT, MAX_LIMIT, q.cursor.as_deref(), &mut errors);
    let filter =
        q.state.as_deref().map(str::parse::<DeliveryState>).transpose().unwrap_or_else(|_| {
            errors.push(FieldError::new(
                "state",
                "invalid_value",
                "expected one of pending, delivered, failed",
            ));
            None
        });
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let mut items =
        state.store.list_webhook_deliveries(&w.id, filter, before.as_deref(), limit + 1).await?;
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor =
        if more { items.last().map(|d| super::cursor::encode_text(d.id.as_str())) } else { None };
    Ok(web::Json(DeliveryPage {
        items: items.into_iter().map(DeliveryView::from).collect(),
        next_cursor,
    }))
}

async fn find_delivery(
    state: &AppState,
    w: &WebhookSubscription,
    id: &str,
) -> Result<DeliveryId, ApiError> {
    let id: DeliveryId = id.parse().map_err(|_| ApiError::NotFound("delivery"))?;
    match state.store.get_webhook_delivery(&w.id, &id).await? {
        Some(_) => Ok(id),
        None => Err(ApiError::NotFound("delivery")),
    }
}

/// Get one delivery with every attempt.
#[utoipa::path(
    operation_id = "v1.webhook.delivery.get",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The subscription's id, `whk_...`"),
        ("delivery_id" = String, Path, description = "The delivery's id, `whd_...`"),
    ),
    responses(
        (status = 200, description = "The delivery and its attempts", body = DeliveryView),
        (status = 404, description = "No such subscription or delivery"),
    )
)]
#[get("/webhooks/{id}/deliveries/{delivery_id}")]
async fn get_delivery(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<web::Json<DeliveryView>, ApiError> {
    caller.require(Role::Admin)?;
    let (id, delivery) = path.into_inner();
    let w = find_visible(&state, &caller, &id).await?;
    let id = find_delivery(&state, &w, &delivery).await?;
    let d = state
        .store
        .get_webhook_delivery(&w.id, &id)
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    let attempts = state.store.list_webhook_attempts(&id).await?;
    let mut view = DeliveryView::from(d);
    view.attempt_log = Some(attempts.into_iter().map(AttemptView::from).collect());
    Ok(web::Json(view))
}

/// Send a delivery again.
///
/// The delivery becomes `pending` and is sent with the same `webhook-id` (so a receiver that
/// already has it can tell), retried like a new one.
#[utoipa::path(
    operation_id = "v1.webhook.delivery.redeliver",
    tag = "webhooks",
    params(
        ("id" = String, Path, description = "The subscription's id, `whk_...`"),
        ("delivery_id" = String, Path, description = "The delivery's id, `whd_...`"),
    ),
    responses(
        (status = 202, description = "Queued again", body = DeliveryView),
        (status = 404, description = "No such subscription or delivery"),
    )
)]
#[post("/webhooks/{id}/deliveries/{delivery_id}/redeliver")]
async fn redeliver(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (id, delivery) = path.into_inner();
    let w = find_visible(&state, &caller, &id).await?;
    mark(&req, &w.id);
    let id = find_delivery(&state, &w, &delivery).await?;
    let d = state
        .store
        .redeliver_webhook(&w.id, &id, state.clock.now())
        .await?
        .ok_or(ApiError::NotFound("delivery"))?;
    Ok(HttpResponse::Accepted().json(DeliveryView::from(d)))
}

/// Send a `webhook.test` event to the subscription.
///
/// Queued like any event (signed, retried, in the delivery log), whatever the subscription's
/// event types and even while it is disabled.
#[utoipa::path(
    operation_id = "v1.webhook.test",
    tag = "webhooks",
    params(("id" = String, Path, description = "The subscription's id, `whk_...`")),
    responses(
        (status = 202, description = "The test event's delivery", body = DeliveryView),
        (status = 404, description = "No such subscription within the caller's reach"),
    )
)]
#[post("/webhooks/{id}/test")]
async fn send_test(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let w = find_visible(&state, &caller, &id).await?;
    mark(&req, &w.id);
    let d = state.webhooks.send_test(&w, caller.key_id.as_str()).await?;
    Ok(HttpResponse::Accepted().json(DeliveryView::from(d)))
}
