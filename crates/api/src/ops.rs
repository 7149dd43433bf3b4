//! Operational endpoints outside `/v1`: liveness and readiness.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{AppState, error::ApiError};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(healthz).service(readyz);
}

/// The body of a successful probe.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ProbeStatus {
    /// `ok` for liveness, `ready` for readiness.
    pub status: String,
}

/// Liveness: the process is up and serving HTTP.
#[utoipa::path(
    operation_id = "ops.healthz",
    tag = "ops",
    security(()),
    responses((status = 200, description = "The process is up", body = ProbeStatus))
)]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(ProbeStatus { status: "ok".into() })
}

/// Readiness: the database answers.
#[utoipa::path(
    operation_id = "ops.readyz",
    tag = "ops",
    security(()),
    responses(
        (status = 200, description = "Ready to serve", body = ProbeStatus),
        (status = 503, description = "The database is unreachable"),
    )
)]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.store.ping().await?;
    Ok(HttpResponse::Ok().json(ProbeStatus { status: "ready".into() }))
}
