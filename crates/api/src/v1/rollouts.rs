//! `/v1/rollouts`: planning a rollout (Graph reads only), starting it, following it (state,
//! counts, per-tenant progress and timeline) and operating it (pause, resume, cancel, retry,
//! approve, roll back).
//!
//! A key restricted to some tenants sees a rollout when at least one of the rollout's tenants
//! is within its reach, and then only those tenants (in counts too). It may operate a rollout
//! only when every tenant of it is within its reach: an operation would touch them all.

use std::collections::{BTreeMap, BTreeSet};

use actix_web::{HttpMessage, HttpRequest, HttpResponse, get, post, web};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sspr_domain::{Role, RolloutId, RolloutSpec, rollout::TenantState};
use sspr_reporting::progress::{Progress, ProgressInput, RECENT_WINDOW, estimate};
use sspr_rollout::{OpError, Plan, PlanError, Planner, RollbackScope};
use sspr_store::{Rollout, RolloutEvent, RolloutFilter, RolloutTenant};
use utoipa::{IntoParams, ToSchema};
use utoipa_actix_web::service_config::ServiceConfig;

use crate::{
    AppState,
    auth::Caller,
    error::{ApiError, FieldError},
    extract::{ValidJson, json_error},
    middleware::AuditDetails,
};

pub(crate) fn configure(cfg: &mut ServiceConfig<'_>) {
    cfg.service(plan_rollout)
        .service(create_rollout)
        .service(list_rollouts)
        .service(get_rollout)
        .service(list_rollout_tenants)
        .service(get_rollout_tenant)
        .service(list_rollout_events)
        .service(pause_rollout)
        .service(resume_rollout)
        .service(cancel_rollout)
        .service(retry_rollout)
        .service(approve_rollout)
        .service(rollback_rollout);
}

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

impl From<PlanError> for ApiError {
    fn from(err: PlanError) -> Self {
        match err {
            PlanError::Store(e) => e.into(),
        }
    }
}

impl From<OpError> for ApiError {
    fn from(err: OpError) -> Self {
        match err {
            OpError::NotFound => ApiError::NotFound("rollout"),
            OpError::TenantsNotFound(ids) => ApiError::Validation(
                ids.iter()
                    .enumerate()
                    .map(|(i, _)| {
                        FieldError::new(
                            format!("selector.tenant_ids[{i}]"),
                            "tenant_not_found",
                            "no active tenant with this id within your reach",
                        )
                    })
                    .collect(),
            ),
            OpError::NoTenants => ApiError::Validation(vec![FieldError::new(
                "selector",
                "selects_nothing",
                "the selector selects no active tenant within your reach",
            )]),
            OpError::Conflict { code: code @ "idempotency_key_reused", message } => {
                ApiError::Idempotency { code, message }
            }
            OpError::Conflict { code, message } => ApiError::StateConflict { code, message },
            OpError::Store(e) => e.into(),
        }
    }
}

fn validate(spec: &RolloutSpec) -> Result<(), ApiError> {
    let problems = spec.problems();
    if problems.is_empty() {
        return Ok(());
    }
    Err(ApiError::Validation(
        problems.into_iter().map(|p| FieldError::new(p.field, p.code, p.message)).collect(),
    ))
}

fn actor(caller: &Caller) -> String {
    format!("api_key:{}", caller.key_id.as_str())
}

fn parse_id(id: &str) -> Result<RolloutId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("rollout"))
}

/// The rollout if the caller sees it (404 otherwise, as if it did not exist). Shared with the
/// status pages and the event stream.
pub(crate) async fn visible(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Rollout, ApiError> {
    let id = parse_id(id)?;
    let rollout = state.store.get_rollout(&id).await?.ok_or(ApiError::NotFound("rollout"))?;
    if let Some(within) = caller.access.tenants.restricted_to() {
        let page = state.store.list_rollout_tenants(&id, None, None, Some(within), None, 1).await?;
        if page.is_empty() {
            return Err(ApiError::NotFound("rollout"));
        }
    }
    Ok(rollout)
}

/// The rollout if the caller may operate it: it sees it, and reaches every tenant of it.
async fn operable(state: &AppState, caller: &Caller, id: &str) -> Result<Rollout, ApiError> {
    caller.require(Role::Operator)?;
    let rollout = visible(state, caller, id).await?;
    if let Some(within) = caller.access.tenants.restricted_to() {
        let all = state.store.rollout_tenant_counts(&rollout.id, None).await?;
        let mine = state.store.rollout_tenant_counts(&rollout.id, Some(within)).await?;
        let total = |c: &[(i32, String, u64)]| c.iter().map(|(_, _, n)| n).sum::<u64>();
        if total(&all) != total(&mine) {
            return Err(ApiError::RestrictedKey);
        }
    }
    Ok(rollout)
}

/// Tenants of one wave by state.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct WaveView {
    /// The wave (0 is the canaries when the rollout has any).
    pub wave: i32,
    /// Tenants of the wave.
    pub tenants: u64,
    /// Tenants of the wave in each state.
    pub counts: BTreeMap<String, u64>,
}

/// A rollout: its spec, where it stands, and its tenants counted by state and wave.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub(crate) struct RolloutView {
    /// Id, `rol_...`.
    pub id: String,
    /// Name.
    pub name: String,
    /// `running`, `paused`, `completed`, `cancelled`, `rolling_back`, `rolled_back`.
    pub state: String,
    /// Why it is in that state, e.g. `failure_budget_exceeded`, `paused_by_operator`, or the
    /// tally of tenants that did not complete.
    pub state_reason: Option<String>,
    /// The wave being rolled out.
    pub current_wave: i32,
    /// How many waves.
    pub wave_count: i32,
    /// Tenants (within the caller's reach).
    pub tenants: u64,
    /// Tenants in each state.
    pub counts: BTreeMap<String, u64>,
    /// Per wave.
    pub waves: Vec<WaveView>,
    /// Blocked tenants by reason code.
    pub blocked_reasons: BTreeMap<String, u64>,
    /// Failed tenants by reason code.
    pub failed_reasons: BTreeMap<String, u64>,
    /// How far it is, its pace and when it should end.
    pub progress: Progress,
    /// The spec it was started with (immutable).
    #[schema(value_type = Object)]
    pub spec: Value,
    /// Who started it (`api_key:<id>`).
    pub created_by: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it completed, was cancelled or rolled back.
    pub finished_at: Option<DateTime<Utc>>,
}

/// A rollout view kept for reuse (see [`crate::RolloutViews`]).
#[derive(Debug, Clone)]
pub(crate) struct CachedView {
    /// When it was computed.
    at: std::time::Instant,
    /// The rollout row's `updated_at` and the newest history entry it was computed from.
    updated_at: DateTime<Utc>,
    last_seq: i64,
    view: RolloutView,
}

/// How long a rollout view is reused at most.
const VIEW_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the caller sees of a rollout: counts by state and wave, blocked and failed reasons,
/// over the caller's tenants only. Shared with the status pages. Reused for up to a second
/// while the rollout and its history are unchanged.
pub(crate) async fn view(
    state: &AppState,
    caller: &Caller,
    r: Rollout,
) -> Result<RolloutView, ApiError> {
    let within = caller.access.tenants.restricted_to();
    let key = match within {
        None => format!("{}|*", r.id),
        Some(set) => {
            format!("{}|{}", r.id, set.iter().map(String::as_str).collect::<Vec<_>>().join(","))
        }
    };
    let arrived = std::time::Instant::now();
    let slot = state.rollout_views.slot(&key);
    let mut cached = slot.lock().await;
    if let Some(c) = cached.as_ref()
        && c.updated_at == r.updated_at
        && c.at >= arrived
    {
        // Computed while this request waited: it saw every change made before it arrived.
        return Ok(c.view.clone());
    }
    let last_seq = state.store.rollout_last_seq(&r.id).await?;
    if let Some(c) = cached.as_ref()
        && c.at.elapsed() < VIEW_REUSE
        && c.updated_at == r.updated_at
        && c.last_seq == last_seq
    {
        return Ok(c.view.clone());
    }
    let at = std::time::Instant::now();
    let updated_at = r.updated_at;
    let view = compute_view(state, within, r).await?;
    *cached = Some(CachedView { at, updated_at, last_seq, view: view.clone() });
    Ok(view)
}

async fn compute_view(
    state: &AppState,
    within: Option<&BTreeSet<String>>,
    r: Rollout,
) -> Result<RolloutView, ApiError> {
    let counts = state.store.rollout_tenant_counts(&r.id, within).await?;
    let mut total = BTreeMap::new();
    let mut waves: BTreeMap<i32, WaveView> = BTreeMap::new();
    for (wave, s, n) in &counts {
        *total.entry(s.clone()).or_insert(0) += n;
        let w = waves.entry(*wave).or_insert_with(|| WaveView {
            wave: *wave,
            tenants: 0,
            counts: BTreeMap::new(),
        });
        w.tenants += n;
        *w.counts.entry(s.clone()).or_insert(0) += n;
    }
    let mut blocked_reasons = BTreeMap::new();
    let mut failed_reasons = BTreeMap::new();
    let wanted: Vec<&str> = ["blocked", "failed"]
        .into_iter()
        .filter(|s| total.get(*s).copied().unwrap_or(0) > 0)
        .collect();
    for (s, reason, n) in state.store.rollout_reason_counts(&r.id, &wanted, within).await? {
        let map = if s == "blocked" { &mut blocked_reasons } else { &mut failed_reasons };
        *map.entry(reason).or_insert(0) += n;
    }
    let now = state.clock.now();
    let finish = state.store.rollout_finish_stats(&r.id, within, now - RECENT_WINDOW).await?;
    let progress = estimate(&ProgressInput {
        total: total.values().sum(),
        finished: finish.finished,
        finished_recently: finish.finished_since,
        started_at: r.created_at,
        last_finished_at: finish.last_finished_at,
        running: r.state == "running",
        now,
    });
    // A restricted caller sees the spec and the reason as computed from its tenants only.
    let (spec, state_reason) = match within {
        None => (r.spec, r.state_reason),
        Some(ids) => {
            let reason = sspr_domain::scoped_reason(
                r.state_reason.as_deref(),
                total.iter().map(|(s, n)| (s.as_str(), *n)),
            );
            (scoped_spec(state, &r.spec, ids).await?, reason)
        }
    };
    Ok(RolloutView {
        id: r.id.to_string(),
        name: r.name,
        state: r.state,
        state_reason,
        current_wave: r.current_wave,
        wave_count: r.wave_count,
        tenants: total.values().sum(),
        counts: total,
        waves: waves.into_values().collect(),
        blocked_reasons,
        failed_reasons,
        progress,
        spec,
        created_by: r.created_by,
        created_at: r.created_at,
        updated_at: r.updated_at,
        finished_at: r.finished_at,
    })
}

/// The spec as a caller reaching `ids` sees it: only those tenants, and only pilot members on
/// their domains (see [`RolloutSpec::scoped_to`]). A spec that no longer reads is shown empty.
async fn scoped_spec(
    state: &AppState,
    spec: &Value,
    ids: &BTreeSet<String>,
) -> Result<Value, ApiError> {
    let Ok(spec) = serde_json::from_value::<RolloutSpec>(spec.clone()) else {
        return Ok(Value::Object(serde_json::Map::new()));
    };
    let mut domains = BTreeSet::new();
    for id in ids {
        let Ok(tenant_id) = id.parse::<sspr_domain::TenantId>() else { continue };
        if let Some(t) = state.store.get_tenant(&tenant_id).await? {
            domains.extend(t.default_domain.map(|d| d.to_ascii_lowercase()));
            if t.entra_ref.contains('.') {
                domains.insert(t.entra_ref.to_ascii_lowercase());
            }
        }
    }
    let reach = sspr_domain::Reach { tenant_ids: ids, domains };
    Ok(serde_json::to_value(spec.scoped_to(&reach)).unwrap_or_default())
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
    validate(&spec)?;
    let planner =
        Planner::new(state.registry.clone(), state.registry.settings().verify_concurrency);
    let plan = planner.plan(&spec, caller.access.tenants.restricted_to()).await?;
    Ok(web::Json(plan))
}

/// Options of `POST /v1/rollouts`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateQuery {
    /// Plan only, like `POST /v1/rollouts:plan` (also `"dry_run": true` in the body).
    dry_run: Option<bool>,
}

/// Start a rollout.
///
/// Validates the spec, selects its tenants (every listed tenant id must exist within the
/// caller's reach), cuts them into waves and starts the rollout at once: canaries first, then
/// the waves, each tenant pilot first and then everyone, as the spec's gates allow. The spec
/// cannot change afterwards; a change is a new rollout.
///
/// With `dry_run` (query or body) nothing is created and the answer is the plan. With an
/// `Idempotency-Key` header, repeating the request with the same body returns the first
/// answer again (with `Idempotency-Replayed: true`) instead of creating a second rollout; the
/// same key with another body is a 422 `idempotency_key_reused`. Across API keys, a key used
/// for a rollout with the same spec returns that rollout (200).
#[utoipa::path(
    operation_id = "v1.rollout.create",
    tag = "rollouts",
    params(CreateQuery, ("Idempotency-Key" = Option<String>, Header, description = "Makes a retried request return the first one's rollout")),
    request_body = RolloutSpec,
    responses(
        (status = 201, description = "The rollout was created and started", body = RolloutView),
        (status = 200, description = "Dry run: the plan; or the rollout an earlier request with the same Idempotency-Key created", body = RolloutView),
        (status = 409, description = "`idempotency_key_in_use`: the first request with this Idempotency-Key is still running"),
        (status = 422, description = "`idempotency_key_reused`, or a field of the spec is invalid, a listed tenant does not exist (`tenant_not_found`), or the selector selects nothing (`selects_nothing`)"),
    )
)]
#[post("/rollouts")]
async fn create_rollout(
    req: HttpRequest,
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<CreateQuery>,
    body: ValidJson<Value>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let mut body = body.0;
    let mut dry_run = query.dry_run.unwrap_or(false);
    if let Value::Object(map) = &mut body {
        match map.remove("dry_run") {
            None => {}
            Some(Value::Bool(b)) => dry_run |= b,
            Some(_) => {
                return Err(ApiError::Validation(vec![FieldError::new(
                    "dry_run",
                    "invalid_type",
                    "dry_run must be true or false",
                )]));
            }
        }
    }
    let spec: RolloutSpec = serde_path_to_error::deserialize(body).map_err(json_error)?;
    validate(&spec)?;
    let within = caller.access.tenants.restricted_to();
    if dry_run {
        let planner =
            Planner::new(state.registry.clone(), state.registry.settings().verify_concurrency);
        let plan = planner.plan(&spec, within).await?;
        return Ok(HttpResponse::Ok().json(plan));
    }
    // Checked by the idempotency middleware already. Namespaced by the API key, as the
    // middleware's records are: two integrations may pick the same key.
    let key = req
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(|k| format!("{}:{k}", caller.key_id));
    let outcome = state.engine.create(&spec, within, &actor(&caller), key.as_deref()).await?;
    req.extensions_mut().insert(AuditDetails(serde_json::json!({
        "rollout_id": outcome.rollout.id.as_str(),
        "created": outcome.created,
    })));
    let created = outcome.created;
    let v = view(&state, &caller, outcome.rollout).await?;
    Ok(if created {
        HttpResponse::Created()
            .insert_header(("Location", format!("/v1/rollouts/{}", v.id)))
            .json(v)
    } else {
        HttpResponse::Ok().json(v)
    })
}

/// A page of rollouts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RolloutPage {
    /// Newest first.
    pub items: Vec<RolloutView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of the rollout list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only rollouts in this state.
    state: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

const ROLLOUT_STATES: [&str; 6] =
    ["running", "paused", "completed", "cancelled", "rolling_back", "rolled_back"];

/// List rollouts.
#[utoipa::path(
    operation_id = "v1.rollout.list",
    tag = "rollouts",
    params(ListQuery),
    responses((status = 200, description = "A page of rollouts, newest first", body = RolloutPage))
)]
#[get("/rollouts")]
async fn list_rollouts(
    state: web::Data<AppState>,
    caller: Caller,
    query: web::Query<ListQuery>,
) -> Result<web::Json<RolloutPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let (limit, after_id) =
        super::page_params(q.limit, DEFAULT_LIMIT, MAX_LIMIT, q.cursor.as_deref(), &mut errors);
    if q.state.as_deref().is_some_and(|s| !ROLLOUT_STATES.contains(&s)) {
        errors.push(FieldError::new(
            "state",
            "invalid_value",
            format!("expected one of {}", ROLLOUT_STATES.join(", ")),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let filter = RolloutFilter {
        within: caller.access.tenants.restricted_to().cloned(),
        state: q.state,
        after_id,
        limit: limit + 1,
    };
    let mut rows = state.store.list_rollouts(&filter).await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|r| super::cursor::encode_text(r.id.as_str())) } else { None };
    let mut items = Vec::new();
    for r in rows {
        items.push(view(&state, &caller, r).await?);
    }
    Ok(web::Json(RolloutPage { items, next_cursor }))
}

/// Get a rollout.
#[utoipa::path(
    operation_id = "v1.rollout.get",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id, `rol_...`")),
    responses(
        (status = 200, description = "The rollout", body = RolloutView),
        (status = 404, description = "No such rollout within your reach"),
    )
)]
#[get("/rollouts/{id}")]
async fn get_rollout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<web::Json<RolloutView>, ApiError> {
    caller.require(Role::Viewer)?;
    let r = visible(&state, &caller, &path).await?;
    Ok(web::Json(view(&state, &caller, r).await?))
}

/// One entry of a tenant's timeline.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct TimelineEntry {
    /// Position in the rollout's history.
    pub seq: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The tenant it is about; absent for rollout-wide entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Who: `engine`, or `api_key:<id>`.
    pub actor: String,
    /// What happened, e.g. `admitted`, `preflight_passed`, `pilot_applied`, `waiting`,
    /// `approved`, `gate_passed`, `completed`, `failed`, `rolled_back`.
    pub kind: String,
    /// State before.
    pub from_state: Option<String>,
    /// State after.
    pub to_state: Option<String>,
    /// The facts: what was changed, the evidence, the error.
    #[schema(value_type = Object)]
    pub detail: Value,
}

impl TimelineEntry {
    /// The entry as a caller reaching `within` sees it (`None`: every tenant). A rollout-wide
    /// entry's detail speaks of the whole fleet; a restricted caller gets only its fleet-free
    /// keys (see [`sspr_domain::scoped_rollout_detail`]).
    pub(crate) fn seen_by(e: RolloutEvent, within: Option<&BTreeSet<String>>) -> Self {
        let detail = match (within, &e.tenant_id) {
            (Some(_), None) => sspr_domain::scoped_rollout_detail(&e.detail),
            _ => e.detail,
        };
        Self {
            seq: e.seq,
            at: e.at,
            tenant_id: e.tenant_id,
            actor: e.actor,
            kind: e.kind,
            from_state: e.from_state,
            to_state: e.to_state,
            detail,
        }
    }
}

/// Where one tenant stands in a rollout.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RolloutTenantView {
    /// The tenant.
    pub tenant_id: String,
    /// Its wave.
    pub wave: i32,
    /// Its place in the wave.
    pub position: i32,
    /// Its state (see the rollout state machine).
    pub state: TenantState,
    /// The step running or waiting now, if any.
    pub current_step: Option<String>,
    /// Where a paused tenant stood.
    pub paused_from: Option<String>,
    /// Why it is blocked, failed or waiting (a stable code, or "waiting for ...").
    pub reason: Option<String>,
    /// The last error (a Graph error code, never a secret).
    pub last_error: Option<String>,
    /// The scope group sspr-fleet uses in the tenant.
    pub scope_group_id: Option<String>,
    /// When the current wait (pilot verification, gates) began.
    pub gate_entered_at: Option<DateTime<Utc>>,
    /// When its gate was approved.
    pub approved_at: Option<DateTime<Utc>>,
    /// Who approved it.
    pub approved_by: Option<String>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Its history in this rollout, oldest first (with `timeline=true`, and always on the
    /// single-tenant route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<TimelineEntry>>,
}

fn current_step(s: TenantState) -> Option<String> {
    let step = match s {
        TenantState::Preflight => "preflight",
        TenantState::Ready => "pilot_start",
        TenantState::PilotApplying => "pilot_apply",
        TenantState::PilotVerifying => "pilot_verify",
        TenantState::Gate => "gate",
        TenantState::AllApplying => "all_apply",
        TenantState::AllVerifying => "all_verify",
        _ => return None,
    };
    Some(step.into())
}

fn tenant_view(t: RolloutTenant, timeline: Option<Vec<TimelineEntry>>) -> RolloutTenantView {
    let state = TenantState::parse(&t.state).unwrap_or(TenantState::Failed);
    RolloutTenantView {
        tenant_id: t.tenant_id,
        wave: t.wave,
        position: t.position,
        state,
        current_step: current_step(state),
        paused_from: t.paused_from,
        reason: t.reason,
        last_error: t.last_error,
        scope_group_id: t.scope_group_id,
        gate_entered_at: t.gate_entered_at,
        approved_at: t.approved_at,
        approved_by: t.approved_by,
        updated_at: t.updated_at,
        timeline,
    }
}

async fn timeline(
    state: &AppState,
    id: &RolloutId,
    tenant: &str,
) -> Result<Vec<TimelineEntry>, ApiError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = state.store.list_rollout_events(id, after, Some(tenant), None, 1000).await?;
        let done = page.len() < 1000;
        after = page.last().map(|e| e.seq);
        // Entries of one tenant only: nothing rollout-wide to scope.
        all.extend(page.into_iter().map(|e| TimelineEntry::seen_by(e, None)));
        if done || all.len() >= 10_000 {
            return Ok(all);
        }
    }
}

/// A page of a rollout's tenants.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct RolloutTenantPage {
    /// In wave order.
    pub items: Vec<RolloutTenantView>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters of a rollout's tenants.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantsQuery {
    /// Only this wave.
    wave: Option<i32>,
    /// Only tenants in this state.
    state: Option<String>,
    /// Include each tenant's timeline.
    timeline: Option<bool>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// List a rollout's tenants.
#[utoipa::path(
    operation_id = "v1.rollout.tenants",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id"), TenantsQuery),
    responses(
        (status = 200, description = "Per tenant: state, current step, reason, last error", body = RolloutTenantPage),
        (status = 404, description = "No such rollout within your reach"),
    )
)]
#[get("/rollouts/{id}/tenants")]
async fn list_rollout_tenants(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<TenantsQuery>,
) -> Result<web::Json<RolloutTenantPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let r = visible(&state, &caller, &path).await?;
    let q = query.into_inner();
    let mut errors = Vec::new();
    let (limit, after) =
        super::page_params(q.limit, DEFAULT_LIMIT, MAX_LIMIT, q.cursor.as_deref(), &mut errors);
    if q.state.as_deref().is_some_and(|s| TenantState::parse(s).is_none()) {
        let all: Vec<&str> = TenantState::ALL.iter().map(|s| s.as_str()).collect();
        errors.push(FieldError::new(
            "state",
            "invalid_value",
            format!("expected one of {}", all.join(", ")),
        ));
    }
    if !errors.is_empty() {
        return Err(ApiError::Validation(errors));
    }
    let within = caller.access.tenants.restricted_to();
    let mut rows = state
        .store
        .list_rollout_tenants(
            &r.id,
            q.wave,
            q.state.as_deref(),
            within,
            after.as_deref(),
            limit + 1,
        )
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let next_cursor =
        if more { rows.last().map(|t| super::cursor::encode_text(&t.tenant_id)) } else { None };
    let mut items = Vec::new();
    for t in rows {
        let tl = if q.timeline.unwrap_or(false) {
            Some(timeline(&state, &r.id, &t.tenant_id).await?)
        } else {
            None
        };
        items.push(tenant_view(t, tl));
    }
    Ok(web::Json(RolloutTenantPage { items, next_cursor }))
}

/// Get one tenant of a rollout, with its timeline.
#[utoipa::path(
    operation_id = "v1.rollout.tenant",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id"), ("tenant_id" = String, Path, description = "Tenant id")),
    responses(
        (status = 200, description = "The tenant's state and timeline", body = RolloutTenantView),
        (status = 404, description = "No such rollout or tenant within your reach"),
    )
)]
#[get("/rollouts/{id}/tenants/{tenant_id}")]
async fn get_rollout_tenant(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<(String, String)>,
) -> Result<web::Json<RolloutTenantView>, ApiError> {
    caller.require(Role::Viewer)?;
    let (id, tenant) = path.into_inner();
    let r = visible(&state, &caller, &id).await?;
    caller.require_tenant(&tenant)?;
    let t = state
        .store
        .get_rollout_tenant(&r.id, &tenant)
        .await?
        .ok_or(ApiError::NotFound("tenant"))?;
    let tl = timeline(&state, &r.id, &tenant).await?;
    Ok(web::Json(tenant_view(t, Some(tl))))
}

/// A page of a rollout's history.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct EventPage {
    /// Oldest first.
    pub items: Vec<TimelineEntry>,
    /// Pass as `after` for the next page (the last `seq`).
    pub next_after: Option<i64>,
}

/// Paging of the history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Events after this `seq`.
    after: Option<i64>,
    /// Page size, 1 to 1000 (default 500).
    limit: Option<u32>,
}

/// A rollout's history (every transition and operation, with actor and detail).
#[utoipa::path(
    operation_id = "v1.rollout.history",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id"), EventsQuery),
    responses(
        (status = 200, description = "Events, oldest first", body = EventPage),
        (status = 404, description = "No such rollout within your reach"),
    )
)]
#[get("/rollouts/{id}/history")]
async fn list_rollout_events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<EventsQuery>,
) -> Result<web::Json<EventPage>, ApiError> {
    caller.require(Role::Viewer)?;
    let r = visible(&state, &caller, &path).await?;
    let limit = query.limit.unwrap_or(500);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::Validation(vec![FieldError::new(
            "limit",
            "out_of_range",
            "limit must be 1 to 1000",
        )]));
    }
    let within = caller.access.tenants.restricted_to();
    let rows = state.store.list_rollout_events(&r.id, query.after, None, within, limit).await?;
    let next_after = (rows.len() == limit as usize).then(|| rows.last().map(|e| e.seq)).flatten();
    Ok(web::Json(EventPage {
        items: rows.into_iter().map(|e| TimelineEntry::seen_by(e, within)).collect(),
        next_after,
    }))
}

macro_rules! simple_op {
    ($fn:ident, $route:literal, $op:literal, $method:ident, $summary:literal) => {
        #[doc = $summary]
        #[utoipa::path(
            operation_id = $op,
            tag = "rollouts",
            params(("id" = String, Path, description = "Rollout id")),
            responses(
                (status = 200, description = "The rollout after the operation", body = RolloutView),
                (status = 403, description = "A restricted key does not reach every tenant of the rollout (`restricted_key`)"),
                (status = 404, description = "No such rollout within your reach"),
                (status = 409, description = "Not possible in the rollout's state (`rollout_not_running`, `rollout_not_paused`, `rollout_finished`)"),
            )
        )]
        #[post($route)]
        async fn $fn(
            state: web::Data<AppState>,
            caller: Caller,
            path: web::Path<String>,
        ) -> Result<web::Json<RolloutView>, ApiError> {
            let r = operable(&state, &caller, &path).await?;
            let r = state.engine.$method(&r.id, &actor(&caller)).await?;
            Ok(web::Json(view(&state, &caller, r).await?))
        }
    };
}

simple_op!(
    pause_rollout,
    "/rollouts/{id}/pause",
    "v1.rollout.pause",
    pause,
    "Pause a rollout: no tenant is admitted and every tenant in flight holds where it stands. Idempotent."
);
simple_op!(
    resume_rollout,
    "/rollouts/{id}/resume",
    "v1.rollout.resume",
    resume,
    "Resume a paused rollout; after a failure-budget pause the current wave's budget is overridden. Idempotent."
);
simple_op!(
    cancel_rollout,
    "/rollouts/{id}/cancel",
    "v1.rollout.cancel",
    cancel,
    "Cancel a rollout: no more steps anywhere; what was applied stays until rolled back. Idempotent."
);

/// Which tenants an operation covers.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantSelection {
    /// These tenants of the rollout (all when absent).
    #[serde(default)]
    pub tenant_ids: Option<Vec<String>>,
    /// Only the tenants of this wave (approve only).
    #[serde(default)]
    pub wave: Option<i32>,
}

/// How many tenants an operation affected.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub(crate) struct OpResult {
    /// Tenants affected now (ones already in the wanted state are not counted).
    pub affected: u64,
    /// The rollout after the operation.
    pub rollout: RolloutView,
}

fn check_selection(sel: &TenantSelection, caller: &Caller) -> Result<(), ApiError> {
    if let Some(ids) = &sel.tenant_ids {
        if ids.is_empty() || ids.len() > 10_000 {
            return Err(ApiError::Validation(vec![FieldError::new(
                "tenant_ids",
                "invalid_length",
                "tenant_ids must list 1 to 10000 tenants, or be left out for all",
            )]));
        }
        for t in ids {
            caller.require_tenant(t)?;
        }
    }
    Ok(())
}

/// Retry failed and blocked tenants.
///
/// They start again from preflight; steps are idempotent, so what was applied is found in
/// place. A completed rollout runs again for them.
#[utoipa::path(
    operation_id = "v1.rollout.retry",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    request_body(content = TenantSelection, description = "`tenant_ids` to retry some; empty body or `{}` for all", content_type = "application/json"),
    responses(
        (status = 200, description = "How many tenants restarted", body = OpResult),
        (status = 404, description = "No such rollout within your reach"),
        (status = 409, description = "`rollout_finished`, `tenant_not_in_rollout`"),
    )
)]
#[post("/rollouts/{id}/retry")]
async fn retry_rollout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    req: HttpRequest,
) -> Result<web::Json<OpResult>, ApiError> {
    let r = operable(&state, &caller, &path).await?;
    let sel: TenantSelection = crate::extract::optional_json(&req, &body)?;
    check_selection(&sel, &caller)?;
    let n = state.engine.retry(&r.id, sel.tenant_ids.as_deref(), &actor(&caller)).await?;
    let r = state.store.get_rollout(&r.id).await?.ok_or(ApiError::NotFound("rollout"))?;
    Ok(web::Json(OpResult { affected: n as u64, rollout: view(&state, &caller, r).await? }))
}

/// Approve the gate between pilot and all.
///
/// For some tenants (`tenant_ids`), one wave (`wave`), or every tenant of the rollout.
/// Approving ahead of the gate is allowed: the tenant then passes its approval gate as soon as
/// it gets there. Approving again changes nothing.
#[utoipa::path(
    operation_id = "v1.rollout.approve",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    request_body(content = TenantSelection, description = "`tenant_ids` and/or `wave`; empty body for all", content_type = "application/json"),
    responses(
        (status = 200, description = "How many tenants were approved now", body = OpResult),
        (status = 404, description = "No such rollout within your reach"),
        (status = 409, description = "`rollout_finished`, `tenant_not_in_rollout`"),
    )
)]
#[post("/rollouts/{id}/approve")]
async fn approve_rollout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    req: HttpRequest,
) -> Result<web::Json<OpResult>, ApiError> {
    let r = operable(&state, &caller, &path).await?;
    let sel: TenantSelection = crate::extract::optional_json(&req, &body)?;
    check_selection(&sel, &caller)?;
    let n =
        state.engine.approve(&r.id, sel.tenant_ids.as_deref(), sel.wave, &actor(&caller)).await?;
    let r = state.store.get_rollout(&r.id).await?.ok_or(ApiError::NotFound("rollout"))?;
    Ok(web::Json(OpResult { affected: n, rollout: view(&state, &caller, r).await? }))
}

/// What to roll back.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RollbackRequest {
    /// One tenant; the whole rollout when absent.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// Roll back one tenant or the whole rollout.
///
/// In the background, every snapshot the rollout stored before a change is restored, newest
/// first (methods, campaign, group membership and type), and the scope group it created is
/// deleted. In manual scope mode a task asks a technician to revert the SSPR enablement
/// policy, which has no API. A whole-rollout rollback ends with the rollout `rolled_back`.
/// Idempotent.
#[utoipa::path(
    operation_id = "v1.rollout.rollback",
    tag = "rollouts",
    params(("id" = String, Path, description = "Rollout id")),
    request_body(content = RollbackRequest, description = "`tenant_id` for one tenant; empty body for all", content_type = "application/json"),
    responses(
        (status = 202, description = "The rollback started", body = RolloutView),
        (status = 404, description = "No such rollout (or tenant in it) within your reach"),
    )
)]
#[post("/rollouts/{id}/rollback")]
async fn rollback_rollout(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    http: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let req: RollbackRequest = crate::extract::optional_json(&http, &body)?;
    let r = match &req.tenant_id {
        Some(t) => {
            caller.require(Role::Operator)?;
            caller.require_tenant(t)?;
            visible(&state, &caller, &path).await?
        }
        None => operable(&state, &caller, &path).await?,
    };
    let scope = match req.tenant_id {
        Some(t) => RollbackScope::Tenant(t),
        None => RollbackScope::All,
    };
    let r = state.engine.rollback(&r.id, scope, &actor(&caller)).await.map_err(|e| match e {
        OpError::NotFound => ApiError::NotFound("tenant"),
        e => e.into(),
    })?;
    Ok(HttpResponse::Accepted().json(view(&state, &caller, r).await?))
}
