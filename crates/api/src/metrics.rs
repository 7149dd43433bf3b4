//! `GET /metrics`: Prometheus text exposition, for scrapers with an API key (Prometheus'
//! `authorization` setting sends it as a bearer token). See `sspr_reporting::metrics` for
//! the series; a key restricted to some tenants gets only the gauges counted within them.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, get, web};
use sspr_domain::Role;
use sspr_reporting::metrics::{MetricsInput, ProcessMetrics, render};
use sspr_store::{TenantFilter, TenantStatus};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{AppState, auth::Caller, error::ApiError};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(metrics);
}

/// The Prometheus text format's media type.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Metrics in the Prometheus text format.
///
/// Rollouts, rollout tenants and registered tenants by state (from the database); the job
/// queue's depth by kind and state, this process's job attempts and latencies, its Microsoft
/// Graph requests, errors, 429s, retries and latency by endpoint, and webhook deliveries by
/// state. A key restricted to some tenants gets only the first three, counted within its
/// tenants.
#[utoipa::path(
    operation_id = "ops.metrics",
    tag = "ops",
    responses(
        (status = 200, description = "The exposition", content_type = "text/plain", body = String),
        (status = 401, description = "No valid API key"),
    )
)]
#[get("")]
async fn metrics(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let within = caller.access.tenants.restricted_to();
    let store = &state.store;
    let mut tenants = BTreeMap::new();
    for status in TenantStatus::ALL {
        let filter = TenantFilter {
            status: Some(status),
            within: within.cloned(),
            include_offboarded: status == TenantStatus::Offboarded,
            ..TenantFilter::default()
        };
        tenants.insert(status.as_str().to_owned(), store.count_tenants(&filter).await?);
    }
    let process = match within {
        Some(_) => None,
        None => Some(ProcessMetrics {
            jobs: store.count_jobs_by_kind_and_state("default").await?,
            attempts: state.queue_metrics.as_ref().map(|m| m.snapshot()),
            graph: state.registry.graph().metrics(),
            webhook_deliveries: store.webhook_delivery_counts().await?.into_iter().fold(
                BTreeMap::new(),
                |mut by_state, c| {
                    *by_state.entry(c.state.as_str().to_owned()).or_insert(0) +=
                        u64::try_from(c.count).unwrap_or(0);
                    by_state
                },
            ),
        }),
    };
    let totals = state.reports.totals(within).await?;
    let users = totals.figures.as_ref().map(|f| {
        let c = &f.all.counts;
        BTreeMap::from([
            ("users".to_owned(), c.users),
            ("sspr_enabled".to_owned(), c.sspr_enabled),
            ("sspr_registered".to_owned(), c.sspr_registered),
            ("sspr_capable".to_owned(), c.sspr_capable),
            ("capable_without_phone".to_owned(), c.capable_without_phone),
            ("phone_dependent".to_owned(), c.phone_dependent),
        ])
    });
    let input = MetricsInput {
        readiness: Some((users.unwrap_or_default(), totals.by_status)),
        rollouts: store.count_rollouts_by_state(within).await?,
        rollout_tenants: store.count_active_rollout_tenants_by_state(within).await?,
        tenants,
        process,
    };
    Ok(HttpResponse::Ok().content_type(CONTENT_TYPE).body(render(&input)))
}
