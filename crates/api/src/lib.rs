//! The HTTP face of sspr-fleet: the actix-web application, API-key authentication,
//! problem+json errors and the OpenAPI document.
//!
//! This is the only crate that depends on actix-web. Handlers are thin: authenticate, parse
//! into domain types, call the store or a service, map to a DTO. Paths are collected into the
//! OpenAPI document by utoipa-actix-web as they are registered, never from a hand-kept list.
//! The HTML status pages (`/status`) are the one exception: they are for browsers, not part
//! of the JSON API, and are registered beside the documented routes.

mod auth;
mod error;
mod extract;
mod fallback;
mod idempotency;
pub mod keys;
mod metrics;
mod middleware;
mod openapi;
pub(crate) mod ops;
mod ratelimit;
mod status;
mod streams;
mod v1;

use std::{collections::HashMap, sync::Arc};

use actix_web::{
    App, Error,
    body::MessageBody,
    dev::{ServiceFactory, ServiceRequest, ServiceResponse},
    middleware::{ErrorHandlers, from_fn},
    web,
};
use sspr_domain::Clock;
use sspr_store::Store;
use utoipa_actix_web::AppExt;
use utoipa_swagger_ui::SwaggerUi;

pub use auth::{ApiToken, Caller, TOKEN_PREFIX, hash_token};
pub use error::{ApiError, ErrorChain, FieldError, PROBLEM_JSON, Problem};
pub use middleware::REQUEST_ID_HEADER;
pub use openapi::{openapi, openapi_json};
pub use ops::ProbeStatus;
pub use ratelimit::{RateLimitSettings, RateLimits};
pub use streams::StreamSlots;
pub use v1::{
    api_keys::{ApiKeyList, ApiKeyView, ApiRole, CreateApiKey, CreatedApiKey},
    audit::{AuditEntryView, AuditPage, AuditQuery},
    reports::{FleetReport, RefreshAccepted, RefreshReports},
    tenants::{
        CredentialView, ImportReport, PortalCredentialView, TenantPage, TenantView, UpdateTenant,
        VerifyOutcome, VerifyReport, VerifyTenants,
    },
    webhooks::{
        AttemptView, CreateWebhook, CreatedWebhook, DeliveryPage, DeliveryView, RotatedSecret,
        UpdateWebhook, WebhookPage, WebhookView,
    },
};

/// Limits and switches of the HTTP layer.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Largest import file accepted by `POST /v1/tenants:import`, in bytes.
    pub max_import_bytes: usize,
    /// Most event streams one API key may have open in this process (429 beyond).
    pub max_streams_per_key: usize,
    /// Most event streams open in this process (503 beyond).
    pub max_streams: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_import_bytes: 16 * 1024 * 1024,
            max_streams_per_key: 8,
            max_streams: 256,
        }
    }
}

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The time source.
    pub clock: Arc<dyn Clock>,
    /// HTTP settings.
    pub settings: ApiSettings,
    /// The tenant registry.
    pub registry: sspr_registry::Registry,
    /// The rollout engine.
    pub engine: sspr_rollout::Engine,
    /// This process's job worker counters (`None` when it runs no jobs).
    pub queue_metrics: Option<Arc<sspr_queue::QueueMetrics>>,
    /// Set when the process begins to shut down: long-lived answers (event streams) end, so
    /// that the graceful stop does not wait for them; clients resume elsewhere.
    pub stopping: Arc<std::sync::atomic::AtomicBool>,
    /// The SSPR readiness reports.
    pub reports: sspr_reporting::readiness::Reports,
    /// Webhook subscriptions: secrets, rotation, test events.
    pub webhooks: sspr_reporting::webhooks::Webhooks,
    /// The inbound rate limits, shared by every HTTP worker of the process.
    pub rate_limits: RateLimits,
    /// Rollout views computed in the last second, shared by every HTTP worker.
    pub rollout_views: RolloutViews,
    /// The open event streams, capped per key and per process (see `settings`).
    pub streams: StreamSlots,
}

/// Rollout views (`GET /v1/rollouts/{id}`, the status pages) kept for reuse: each is reused
/// while the rollout row and its newest history entry are the ones it was computed from, and
/// for at most a second (its progress figures depend on the time). One view per key is
/// computed at a time: requests that arrive meanwhile wait for it and take it, since it was
/// computed after they arrived. Dashboards polling a 10,000-tenant rollout then cost one
/// indexed lookup instead of scans of its tenants.
#[derive(Clone, Default)]
pub struct RolloutViews {
    inner: Arc<parking_lot::Mutex<HashMap<String, Arc<ViewSlot>>>>,
}

/// One key's view, behind the lock its computation holds.
pub(crate) type ViewSlot = tokio::sync::Mutex<Option<v1::rollouts::CachedView>>;

impl std::fmt::Debug for RolloutViews {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RolloutViews").field("entries", &self.inner.lock().len()).finish()
    }
}

impl RolloutViews {
    /// Most keys kept; beyond, every slot nobody is using is dropped.
    const CAPACITY: usize = 1024;

    /// The slot of `key` (a rollout and a tenant scope).
    pub(crate) fn slot(&self, key: &str) -> Arc<ViewSlot> {
        let mut map = self.inner.lock();
        if let Some(slot) = map.get(key) {
            return Arc::clone(slot);
        }
        if map.len() >= Self::CAPACITY {
            map.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        let slot = Arc::new(ViewSlot::default());
        map.insert(key.to_owned(), Arc::clone(&slot));
        slot
    }
}

/// Registers every documented route. Used both to serve and to generate the OpenAPI document,
/// so the two cannot drift apart.
fn routes<T>(app: utoipa_actix_web::UtoipaApp<T>) -> utoipa_actix_web::UtoipaApp<T>
where
    T: ServiceFactory<ServiceRequest, Config = (), Error = Error, InitError = ()>,
{
    app.configure(ops::configure)
        .service(
            utoipa_actix_web::scope("/metrics")
                .wrap(from_fn(auth::authenticate))
                .configure(metrics::configure),
        )
        .service(
            utoipa_actix_web::scope("/v1")
                .wrap(from_fn(middleware::audit))
                // After authentication (keys are per API key), before the audit log (a
                // replayed answer is not a second action).
                .wrap(from_fn(idempotency::idempotency))
                .wrap(from_fn(auth::authenticate))
                .configure(v1::configure),
        )
}

/// The documented routes and the OpenAPI document they produce, before any serving concern.
pub(crate) fn documented_routes() -> utoipa::openapi::OpenApi {
    let (_, doc) = routes(App::new().into_utoipa_app().openapi(openapi::base())).split_for_parts();
    openapi::finish(doc)
}

/// Builds the application for one HTTP worker.
pub fn app(
    state: AppState,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = Error,
        InitError = (),
    >,
> {
    let max_body = state.settings.max_body_bytes;
    let (app, doc) =
        routes(App::new().into_utoipa_app().openapi(openapi::base())).split_for_parts();
    let doc = openapi::finish(doc);
    let table = fallback::RouteTable::from_openapi(&doc)
        .with_route("/openapi.json", &["GET"])
        .with_route("/docs", &["GET"])
        .with_route(status::LIST_PATH, &["GET"])
        .with_route(status::ROLLOUT_PATH, &["GET"]);
    app.app_data(web::Data::new(state))
        .app_data(web::Data::new(table))
        .app_data(web::PayloadConfig::new(max_body))
        .app_data(web::JsonConfig::default().limit(max_body))
        // No validator badge: Swagger UI would fetch it from validator.swagger.io, sending the
        // document's URL (this host) to a third party.
        .service(
            SwaggerUi::new("/docs/{_:.*}")
                .url("/openapi.json", doc)
                .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none")),
        )
        .configure(status::configure)
        // The interactive docs live at `/docs/`; people type `/docs`.
        .route(
            "/docs",
            web::get().to(|| async {
                actix_web::HttpResponse::PermanentRedirect()
                    .insert_header(("location", "/docs/"))
                    .finish()
            }),
        )
        .default_service(web::to(fallback::not_matched))
        // Inside the request context, so a refusal gets a request id and a log line.
        .wrap(from_fn(ratelimit::anonymous))
        .wrap(from_fn(middleware::limit_headers))
        .wrap(from_fn(middleware::request_context))
        // Outermost, so it also sees the errors `request_context` turned into responses.
        .wrap(ErrorHandlers::new().default_handler(middleware::problemize))
}
