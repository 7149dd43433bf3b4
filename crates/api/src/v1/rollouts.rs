//! `/v1/rollouts`: planning a rollout (what it would change in each tenant, with Graph reads
//! only). Starting, following and operating rollouts arrive with the engine.

use actix_web::{post, web};
use sspr_domain::{Role, RolloutSpec};
use sspr_rollout::{Plan, PlanError, Planner};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{AppState, auth::Caller, error::ApiError, extract::ValidJson};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(plan_rollout);
}

impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        match err {
            PlanError::Store(e) => e.into(),
        }
    }
}

/// Plan a rollout (dry run).
///
/// Validates the rollout spec field by field, selects its tenants (within the caller's reach),
/// cuts them into waves, and reads each tenant's current state in Graph to say, step by step,
/// what the rollout would change there: the scope group (create, reuse), pilot members to add,
/// methods to enable or widen for the pilot and then for all users, the registration campaign,
/// the manual scope task's checklist, and the gates. Tenants that cannot start are listed with
/// a stable reason. Nothing is written to any tenant.
#[utoipa::path(
    operation_id = "v1.rollout.plan",
    tag = "rollouts",
    request_body = RolloutSpec,
    responses(
        (status = 200, description = "The plan, tenant by tenant", body = Plan),
        (status = 422, description = "A field of the spec is invalid"),
    )
)]
#[post("/rollouts:plan")]
async fn plan_rollout(
    state: web::Data<AppState>,
    caller: Caller,
    body: ValidJson<RolloutSpec>,
) -> Result<web::Json<Plan>, ApiError> {
    caller.require(Role::Operator)?;
    let spec = body.0;
    let problems = spec.problems();
    if !problems.is_empty() {
        return Err(ApiError::Validation(
            problems
                .into_iter()
                .map(|p| crate::error::FieldError::new(p.field, p.code, p.message))
                .collect(),
        ));
    }
    let planner =
        Planner::new(state.registry.clone(), state.registry.settings().verify_concurrency);
    let plan = planner.plan(&spec, caller.access.tenants.restricted_to()).await?;
    Ok(web::Json(plan))
}
