//! One tenant's steps (`rollout.step`), PRODUCT.md §1–2: preflight, pilot apply, pilot verify,
//! gates, all apply, all verify. Each step reads what the tenant has, writes only the
//! difference, and stores a snapshot of what it is about to change before every write, so a
//! step run twice (after a crash or a lost lease) changes nothing twice.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Value, json};
use sspr_domain::reset_methods::enough_without_phone;
use sspr_domain::{
    Approval, RolloutId, RolloutSpec, ScopeMode, SnapshotId, TaskId, TenantId,
    methods_plan::{MethodChange, MethodKey, Stage, plan_campaign, plan_methods},
    rollout::TenantState,
};
use sspr_graph::{
    GraphError, Tenant as GraphTenant,
    types::{
        ALL_USERS, AuthenticationMethodsPolicy, CampaignIncludeTarget, ExcludeTarget,
        MethodConfigPatch, MethodState, MethodTarget, NewSecurityGroup, RegistrationCampaign,
        ReportPopulation, TargetType, User, UserRegistrationDetails, mail_nickname_from,
        registration_campaign_patch,
    },
};
use sspr_queue::{Job, JobDone, JobError, JobFuture, JobHandler};
use sspr_registry::failure_code;
use sspr_store::{Rollout, RolloutTenant, Snapshot, StoreError, Task, Tenant, TenantStatus};

/// Report reads of a rollout (verification, gates) go before onboarding and scheduled
/// readiness refreshes when Graph's reporting budget is short.
const HIGH: sspr_graph::ReportPriority = sspr_graph::ReportPriority::High;

/// A report read still unanswered after this long is waiting for Graph's reporting budget
/// (the client's report limiter, or a `Retry-After`): the tenant's reason says so meanwhile.
const REPORT_WAIT_NOTICE: std::time::Duration = std::time::Duration::from_secs(5);

/// The waiting reason of a tenant whose step waits for the reporting budget.
pub(crate) const REPORT_BUDGET: &str = "report budget";

use super::{
    ENGINE_ACTOR, Engine, PilotDetailsRead, STEP_KIND, StepPayload, later, update_to, wait_backoff,
};
use crate::{
    SCOPE_GROUP_DESCRIPTION,
    graph_state::{
        Coverage, SCOPE_WOULD_NARROW, ScopeDecision, campaign_now, governed_and_enabled, method_id,
        methods_now, narrowing_message, scope_decision,
    },
};

/// The audit activity of a successful self-service reset (graph-facts §6).
pub(crate) const RESET_ACTIVITY: &str = "Reset password (self-service)";
/// The kind of the manual task "set SSPR to Selected = the scope group".
pub const SCOPE_TASK: &str = "scope_selected";
/// The kind of the manual task created by a rollback in manual mode.
pub const SCOPE_REVERT_TASK: &str = "scope_revert";

pub(crate) struct StepHandler {
    pub(crate) engine: Engine,
}

impl JobHandler for StepHandler {
    fn kind(&self) -> &'static str {
        STEP_KIND
    }

    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a> {
        Box::pin(async move { self.engine.run_step(job).await })
    }
}

/// What a step concluded.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Move on to `to`.
    Next { to: TenantState, kind: &'static str, detail: Value, gate_entered: bool },
    /// Not yet: check again later (see [`wait_backoff`]), not after `until` when given, and
    /// only when an operation wakes the job (or after the longest delay) when `woken`.
    /// `waiting_for` names what is missing.
    Wait { waiting_for: String, until: Option<DateTime<Utc>>, woken: bool },
    /// The tenant cannot proceed (a stable code).
    Block { code: String, message: String },
    /// The tenant failed (a stable code).
    Fail { code: String, message: String },
}

/// Why a step could not conclude this time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    #[error("Microsoft Graph: {}", .0.reason())]
    Graph(#[from] GraphError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// Worth another attempt (replication, a tenant set aside for a while).
    #[error("{0}")]
    Retry(String),
    /// Graph kept answering 429 past the client's own retries. Not a failure of the step: it
    /// runs again after the wait without spending an attempt, however long throttling lasts.
    #[error("throttled: {message}")]
    Throttled { message: String, retry_after: Option<std::time::Duration> },
}

/// Graph throttling as a step error: a 429 that outlasted the client's retries.
fn throttled(e: &GraphError) -> Option<StepError> {
    match e {
        GraphError::Graph { status: 429, retry_after, .. } => {
            Some(StepError::Throttled { message: e.reason(), retry_after: *retry_after })
        }
        _ => None,
    }
}

/// How long a throttled step waits before it runs again: Graph's `Retry-After` when it gave
/// one, at least 5 s and at most 5 minutes, plus up to a fifth more so that the fleet's
/// throttled tenants do not all come back at once.
fn throttled_wait(retry_after: Option<std::time::Duration>) -> std::time::Duration {
    use rand::Rng;
    let base = retry_after
        .unwrap_or(std::time::Duration::from_secs(5))
        .clamp(std::time::Duration::from_secs(5), std::time::Duration::from_secs(300));
    let spread = rand::rng().random_range(0..=base.as_millis() as u64 / 5);
    base + std::time::Duration::from_millis(spread)
}

type StepResult = Result<Outcome, StepError>;

fn block(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Block { code: code.into(), message: message.into() }
}

fn fail(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Fail { code: code.into(), message: message.into() }
}

fn next(to: TenantState, kind: &'static str, detail: Value) -> Outcome {
    Outcome::Next { to, kind, detail, gate_entered: false }
}

/// What a gate or verification reads of one pilot user.
#[derive(Debug, Clone, Copy, Default)]
struct PilotDetail {
    /// `isSsprEnabled`.
    enabled: bool,
    /// `isSsprRegistered`.
    registered: bool,
    /// `isSsprCapable`, and still so once phone methods stop counting (1 February 2027).
    capable_without_phone: bool,
}

/// What a step noticed about its report reads.
#[derive(Debug, Default)]
pub(crate) struct ReportNotes {
    /// A report read waited past [`REPORT_WAIT_NOTICE`] and the reason was set meanwhile.
    waited: AtomicBool,
    /// A report read ended with Graph's 429 (past the client's own retries).
    throttled: AtomicBool,
}

/// Everything a step works with.
pub(crate) struct Ctx<'a> {
    pub(crate) engine: &'a Engine,
    pub(crate) rollout_id: RolloutId,
    pub(crate) rt: RolloutTenant,
    pub(crate) spec: RolloutSpec,
    pub(crate) tenant: Tenant,
    pub(crate) gt: GraphTenant,
    pub(crate) notes: ReportNotes,
}

fn premium(t: &Tenant) -> bool {
    t.licence.is_premium()
}

/// Graph's answer when a tenant has no Entra ID P1/P2 for the reports (graph-facts §5).
fn non_premium(e: &GraphError) -> bool {
    e.code() == Some("Authentication_RequestFromNonPremiumTenantOrB2CTenant")
}

impl Engine {
    /// Runs one `rollout.step` job.
    pub(crate) async fn run_step(&self, job: &Job) -> Result<JobDone, JobError> {
        let p: StepPayload = serde_json::from_value(job.payload.clone())
            .map_err(|e| JobError::permanent(format!("invalid payload: {e}")))?;
        let rollout_id: RolloutId =
            p.rollout_id.parse().map_err(|_| JobError::permanent("invalid rollout id"))?;
        let Some(state) = TenantState::parse(&p.state) else {
            return Err(JobError::permanent("invalid state in payload"));
        };
        let db = |e: StoreError| JobError::retryable(format!("database: {e}"));
        let Some(rt) =
            self.store().get_rollout_tenant(&rollout_id, &p.tenant_id).await.map_err(db)?
        else {
            return Ok(JobDone::Finished);
        };
        // A job for a state the tenant has left (done already, or paused) has nothing to do.
        if rt.state != state.as_str() {
            return Ok(JobDone::Finished);
        }
        let Some(rollout) = self.rollout(&rollout_id).await.map_err(db)? else {
            return Ok(JobDone::Finished);
        };
        if rollout.state != "running" {
            self.hold(&rollout, &rt, state).await.map_err(db)?;
            return Ok(JobDone::Finished);
        }
        let (outcome, report_waited, report_throttled) =
            match self.prepare(rollout_id.clone(), rt.clone(), &rollout).await {
                Ok(ctx) => {
                    let outcome = ctx.run(state).await;
                    let n = &ctx.notes;
                    (outcome, n.waited.load(Ordering::Relaxed), n.throttled.load(Ordering::Relaxed))
                }
                Err(o) => (Ok(o), false, false),
            };
        // A 429 the client could not wait out is throttling, not a refusal.
        let outcome = outcome.map_err(|e| match e {
            StepError::Graph(g) => throttled(&g).unwrap_or(StepError::Graph(g)),
            other => other,
        });
        let outcome = match outcome {
            Ok(o) => o,
            Err(StepError::Store(e)) => return Err(db(e)),
            Err(StepError::Throttled { message, retry_after }) => {
                let wait = throttled_wait(retry_after);
                tracing::info!(rollout = %rollout_id, tenant = %rt.tenant_id, state = state.as_str(), reason = %message, wait_ms = wait.as_millis() as u64, "tenant step throttled; runs again later");
                if report_throttled || report_waited {
                    self.note_waiting(&rollout_id, &rt, state, REPORT_BUDGET, report_waited)
                        .await
                        .map_err(db)?;
                }
                return Ok(JobDone::RunAgainAt(later(self.now(), wait)));
            }
            Err(StepError::Graph(e)) => {
                let transient = e.is_transient() || matches!(e, GraphError::CircuitOpen { .. });
                if transient && job.attempt < job.max_attempts {
                    return Err(JobError::retryable(e.reason()));
                }
                fail(failure_code(&e), format!("Microsoft Graph refused a step: {}", e.reason()))
            }
            Err(StepError::Retry(msg)) => {
                if job.attempt < job.max_attempts {
                    return Err(JobError::retryable(msg));
                }
                fail("step_retries_exhausted", msg)
            }
        };
        self.conclude(&rollout_id, &rt, state, outcome, report_waited).await.map_err(db)
    }

    /// Records that the tenant waits for `waiting_for` (its reason and a `waiting` event),
    /// unless its reason says so already; `force` writes it even then (the reason was changed
    /// since `rt` was read). `true` when it was written.
    async fn note_waiting(
        &self,
        rollout_id: &RolloutId,
        rt: &RolloutTenant,
        state: TenantState,
        waiting_for: &str,
        force: bool,
    ) -> Result<bool, StoreError> {
        let reason = format!("waiting for {waiting_for}");
        if !force && rt.reason.as_deref() == Some(reason.as_str()) {
            return Ok(false);
        }
        let now = self.now();
        let mut update = update_to(state, now);
        update.reason = Some(Some(reason));
        self.store()
            .transition_rollout_tenant(
                rollout_id,
                &rt.tenant_id,
                state.as_str(),
                update,
                sspr_store::NewEvent {
                    tenant_id: Some(rt.tenant_id.clone()),
                    at: now,
                    actor: ENGINE_ACTOR.into(),
                    kind: "waiting".into(),
                    from_state: Some(state.as_str().into()),
                    to_state: Some(state.as_str().into()),
                    detail: json!({"waiting_for": waiting_for}),
                },
            )
            .await
    }

    /// Pauses or cancels a tenant whose rollout was paused or cancelled while its job waited.
    async fn hold(
        &self,
        rollout: &Rollout,
        rt: &RolloutTenant,
        state: TenantState,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let (to, paused_from) = match rollout.state.as_str() {
            "paused" => (TenantState::Paused, Some(Some(state.as_str().to_owned()))),
            "cancelled" => (TenantState::Cancelled, None),
            _ => return Ok(()),
        };
        let mut update = update_to(to, now);
        update.paused_from = paused_from;
        self.transition(
            &rollout.id,
            &rt.tenant_id,
            state,
            update,
            ENGINE_ACTOR,
            to.as_str(),
            json!({"reason": rollout.state_reason}),
        )
        .await?;
        Ok(())
    }

    async fn prepare(
        &self,
        rollout_id: RolloutId,
        rt: RolloutTenant,
        rollout: &Rollout,
    ) -> Result<Ctx<'_>, Outcome> {
        let spec = Self::spec_of(rollout).map_err(|e| fail("spec_unreadable", e))?;
        let tid: TenantId =
            rt.tenant_id.parse().map_err(|_| fail("tenant_offboarded", "invalid tenant id"))?;
        let tenant = match self.store().get_tenant(&tid).await {
            Ok(Some(t)) if t.status != TenantStatus::Offboarded => t,
            Ok(_) => return Err(fail("tenant_offboarded", "the tenant was offboarded")),
            Err(e) => return Err(fail("database_error", e.to_string())),
        };
        let gt = self.inner.registry.graph_tenant(&tenant).await.map_err(|e| {
            block("credentials_unreadable", format!("the tenant's credentials cannot be used: {e}"))
        })?;
        Ok(Ctx { engine: self, rollout_id, rt, spec, tenant, gt, notes: ReportNotes::default() })
    }

    /// Records a step's conclusion and says what the job does next.
    async fn conclude(
        &self,
        rollout_id: &RolloutId,
        rt: &RolloutTenant,
        state: TenantState,
        outcome: Outcome,
        reason_changed: bool,
    ) -> Result<JobDone, StoreError> {
        let now = self.now();
        let tid = rt.tenant_id.as_str();
        match outcome {
            Outcome::Next { to, kind, detail, gate_entered } => {
                let mut update = update_to(to, now);
                update.reason = Some(None);
                update.last_error = Some(None);
                if gate_entered {
                    update.gate_entered_at = Some(Some(now));
                }
                self.transition(rollout_id, tid, state, update, ENGINE_ACTOR, kind, detail).await?;
                tracing::info!(rollout = %rollout_id, tenant = tid, from = state.as_str(), to = to.as_str(), "tenant step done");
                Ok(JobDone::Finished)
            }
            Outcome::Wait { waiting_for, until, woken } => {
                let written =
                    self.note_waiting(rollout_id, rt, state, &waiting_for, reason_changed).await?;
                let settings = self.settings();
                if woken {
                    // Attestation wakes the job; if it came while this step ran (the job was
                    // not queued to be woken), look again at once.
                    let task = self.store().find_task(rollout_id, tid, SCOPE_TASK).await?;
                    if task.is_some_and(|t| t.state == "attested") {
                        return Ok(JobDone::RunAgainAt(now));
                    }
                    return Ok(JobDone::RunAgainAt(later(now, settings.poll_max)));
                }
                // How long this same wait has lasted: since its reason was written.
                let waited = if written {
                    std::time::Duration::ZERO
                } else {
                    (now - rt.updated_at).to_std().unwrap_or_default()
                };
                let jitter = rand::Rng::random_range(&mut rand::rng(), 0.0..1.0);
                let mut delay = wait_backoff(settings.poll, settings.poll_max, waited, jitter);
                if let Some(until) = until {
                    let left = (until - now).to_std().unwrap_or_default();
                    delay = delay.min(left.max(std::time::Duration::from_millis(1)));
                }
                Ok(JobDone::RunAgainAt(later(now, delay)))
            }
            Outcome::Block { code, message } | Outcome::Fail { code, message } => {
                let to = if state == TenantState::Preflight && !code.starts_with("graph") {
                    TenantState::Blocked
                } else {
                    TenantState::Failed
                };
                let mut update = update_to(to, now);
                update.reason = Some(Some(code.clone()));
                update.last_error = Some(Some(message.clone()));
                self.transition(
                    rollout_id,
                    tid,
                    state,
                    update,
                    ENGINE_ACTOR,
                    to.as_str(),
                    json!({"code": code, "message": message}),
                )
                .await?;
                tracing::warn!(rollout = %rollout_id, tenant = tid, state = state.as_str(), code = %code, "tenant {}", to.as_str());
                Ok(JobDone::Finished)
            }
        }
    }
}

impl Ctx<'_> {
    async fn run(&self, state: TenantState) -> StepResult {
        // Each step's future is boxed: inline, the largest (preflight plans the tenant) would
        // size every job's future.
        match state {
            TenantState::Preflight => Box::pin(self.preflight()).await,
            TenantState::Ready => Ok(next(TenantState::PilotApplying, "pilot_started", json!({}))),
            TenantState::PilotApplying => Box::pin(self.pilot_apply()).await,
            TenantState::PilotVerifying => Box::pin(self.pilot_verify()).await,
            TenantState::Gate => Box::pin(self.gate()).await,
            TenantState::AllApplying => Box::pin(self.all_apply()).await,
            TenantState::AllVerifying => Box::pin(self.all_verify()).await,
            _ => Ok(fail("no_step", format!("no step runs in state {}", state.as_str()))),
        }
    }

    fn g(&self) -> &sspr_graph::GraphClient {
        &self.engine.inner.graph
    }

    fn now(&self) -> DateTime<Utc> {
        self.engine.now()
    }

    /// Stores what a write is about to change.
    pub(crate) async fn snapshot(
        &self,
        step: &str,
        target: &str,
        before: Value,
    ) -> Result<(), StoreError> {
        self.engine
            .store()
            .insert_snapshot(Snapshot {
                id: SnapshotId::new(),
                rollout_id: self.rollout_id.clone(),
                tenant_id: self.rt.tenant_id.clone(),
                step: step.into(),
                target: target.into(),
                before,
                created_at: self.now(),
                restored_at: None,
            })
            .await
    }

    /// The deadline of the waits (pilot verification and gates).
    fn past_deadline(&self) -> bool {
        let Some(since) = self.rt.gate_entered_at else { return false };
        let hours = i64::from(self.spec.gates.deadline_hours.max(1));
        self.now() >= since + TimeDelta::hours(hours)
    }

    // ---- preflight ----------------------------------------------------------------------

    async fn preflight(&self) -> StepResult {
        let tid = self.tenant.id.clone();
        let (tenant, report) = match self.engine.inner.registry.verify(&tid).await {
            Ok(v) => v,
            Err(sspr_registry::RegistryError::NotFound) => {
                return Ok(fail("tenant_offboarded", "the tenant was offboarded"));
            }
            Err(e) => return Err(StepError::Retry(format!("verification failed: {e}"))),
        };
        if tenant.status != TenantStatus::Ready {
            let code = tenant.status_reason.clone().unwrap_or_else(|| "not_ready".into());
            if matches!(code.as_str(), "graph_unavailable" | "tenant_set_aside") {
                return Err(StepError::Retry(format!("verification inconclusive: {code}")));
            }
            let message = report
                .blockers
                .iter()
                .find(|b| b.code == code)
                .map(|b| b.message.clone())
                .unwrap_or_else(|| format!("the tenant is not ready: {code}"));
            return Ok(block(&code, message));
        }
        let wave = usize::try_from(self.rt.wave).unwrap_or(0);
        let plan = self.engine.inner.planner.plan_tenant(&tenant, &self.spec, wave).await;
        if let Some(b) = plan.blocker {
            if matches!(b.code.as_str(), "graph_unavailable" | "tenant_set_aside") {
                return Err(StepError::Retry(format!("planning inconclusive: {}", b.code)));
            }
            return Ok(block(&b.code, b.message));
        }
        // Users who can reset only thanks to SMS or voice: one entry (and webhook) per
        // preflight, so that a PSA can open a ticket for the customer.
        for advisory in plan.advisories.iter().filter(|a| a.code == "sms_voice_retirement") {
            let event = sspr_store::NewEvent {
                tenant_id: Some(self.rt.tenant_id.clone()),
                at: self.now(),
                actor: crate::engine::ENGINE_ACTOR.into(),
                kind: sspr_domain::SMS_RISK_EVENT.into(),
                from_state: None,
                to_state: None,
                detail: json!({"message": advisory.message, "figures": advisory.detail}),
            };
            self.engine.store().append_rollout_event(&self.rollout_id, event).await?;
        }
        Ok(next(
            TenantState::Ready,
            "preflight_passed",
            json!({
                "licence": tenant.licence.as_str(),
                "advisories": report.advisories,
                "sms_voice": plan.advisories,
                "plan": plan.steps,
            }),
        ))
    }

    // ---- pilot --------------------------------------------------------------------------

    /// The pilot users, resolved by UPN or id; `Err(outcome)` when some are not in the tenant.
    async fn pilot_users(&self) -> Result<Result<Vec<User>, Outcome>, StepError> {
        let mut users = Vec::new();
        let mut missing = 0;
        let Some(members) =
            self.spec.policy.pilot_group.members_for(self.tenant.default_domain.as_deref())
        else {
            return Ok(Err(fail(
                "pilot_user_not_found",
                "pilot members use {domain} but the tenant's default domain is not known",
            )));
        };
        for m in &members {
            match self.g().user(&self.gt, m).await? {
                Some(u) => users.push(u),
                None => missing += 1,
            }
        }
        if missing > 0 {
            return Ok(Err(fail(
                "pilot_user_not_found",
                format!("{missing} pilot users are no longer in the tenant"),
            )));
        }
        Ok(Ok(users))
    }

    /// How far SSPR reaches among the member users it governs; `None` when Graph cannot tell
    /// (without Entra ID P1/P2 the reports are refused, and are not asked for).
    async fn coverage(&self) -> Result<Option<Coverage>, StepError> {
        if !premium(&self.tenant) {
            return Ok(None);
        }
        match self
            .report(self.g().users_registered_by_feature_in(
                &self.gt,
                ReportPopulation::MEMBER_USERS,
                HIGH,
            ))
            .await
        {
            Ok(u) => Ok(Coverage::of(&u)),
            Err(e) if non_premium(&e) || e.status() == Some(403) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether SSPR already reaches every member user it governs (then the scope steps are
    /// skipped).
    async fn already_all(&self) -> Result<bool, StepError> {
        Ok(self.coverage().await?.is_some_and(|c| c.is_all()))
    }

    /// The "already All" decision the pilot stage made before it created anything (its
    /// `pilot_applied` event), read back instead of asking Graph again: the later steps act on
    /// the decision the pilot stage was applied under. Asks Graph only when no such event
    /// says it (a tenant applied by an older version).
    async fn already_all_decided(&self) -> Result<bool, StepError> {
        if let Some(e) = self.last_event("pilot_applied").await? {
            let decided = e.detail["already_all"]
                .as_bool()
                .or_else(|| e.detail["scope"]["skipped"].as_bool());
            if let Some(all) = decided {
                return Ok(all);
            }
        }
        self.already_all().await
    }

    /// The tenant's newest event of `kind` in this rollout.
    async fn last_event(&self, kind: &str) -> Result<Option<sspr_store::RolloutEvent>, StoreError> {
        let mut after = None;
        let mut found = None;
        loop {
            let page = self
                .engine
                .store()
                .list_rollout_events(&self.rollout_id, after, Some(&self.rt.tenant_id), None, 500)
                .await?;
            let done = page.len() < 500;
            after = page.last().map(|e| e.seq);
            if let Some(e) = page.into_iter().rev().find(|e| e.kind == kind) {
                found = Some(e);
            }
            if done || after.is_none() {
                return Ok(found);
            }
        }
    }

    /// Runs one report read; while it is still unanswered after [`REPORT_WAIT_NOTICE`] (waiting
    /// for the reporting budget), the tenant's reason says so. Notes a 429 (Graph's reporting
    /// limits outlasted the client's retries).
    async fn report<T>(
        &self,
        read: impl std::future::Future<Output = Result<T, GraphError>>,
    ) -> Result<T, GraphError> {
        let mut read = std::pin::pin!(read);
        let result = tokio::select! {
            r = &mut read => r,
            () = tokio::time::sleep(REPORT_WAIT_NOTICE) => {
                self.note_report_wait().await;
                read.await
            }
        };
        if matches!(&result, Err(e) if e.status() == Some(429)) {
            self.notes.throttled.store(true, Ordering::Relaxed);
        }
        result
    }

    /// Sets the tenant's reason to "waiting for report budget" (once per step).
    async fn note_report_wait(&self) {
        let Some(state) = TenantState::parse(&self.rt.state) else { return };
        if self.notes.waited.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Err(e) =
            self.engine.note_waiting(&self.rollout_id, &self.rt, state, REPORT_BUDGET, true).await
        {
            tracing::warn!(rollout = %self.rollout_id, tenant = %self.rt.tenant_id, error = %e, "cannot record the wait for report budget");
        }
    }

    /// The pilot users' registration details, in their order (`None` for one not in the
    /// report yet); `None` when the tenant has no Entra ID P1/P2. Read as `engine.pilot_details`
    /// says: the listing page by page keeping only the pilot users, or one read per user.
    async fn pilot_registrations(
        &self,
        users: &[User],
        priority: sspr_graph::ReportPriority,
    ) -> Result<Option<Vec<Option<UserRegistrationDetails>>>, StepError> {
        if !premium(&self.tenant) {
            return Ok(None);
        }
        let settings = self.engine.settings();
        let total_users = self.tenant.readiness.as_ref().and_then(|r| r["users"]["total"].as_u64());
        if !listing_is_cheaper(
            settings.pilot_details,
            total_users,
            settings.report_page_size,
            users.len(),
        ) {
            let mut out = Vec::new();
            for u in users {
                match self.report(self.g().registration_details_of(&self.gt, &u.id, priority)).await
                {
                    Ok(d) => out.push(Some(d)),
                    Err(e) if non_premium(&e) => return Ok(None),
                    // Not in the report yet.
                    Err(e) if e.status() == Some(404) => out.push(None),
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(Some(out));
        }
        let index: HashMap<String, usize> =
            users.iter().enumerate().map(|(i, u)| (u.id.to_ascii_lowercase(), i)).collect();
        let mut out: Vec<Option<UserRegistrationDetails>> = vec![None; users.len()];
        let listed = self
            .report(self.g().registration_details(&self.gt, priority, |page| {
                for d in page {
                    if let Some(i) = index.get(&d.id.to_ascii_lowercase()) {
                        out[*i] = Some(d);
                    }
                }
            }))
            .await;
        match listed {
            Ok(()) => Ok(Some(out)),
            Err(e) if non_premium(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What selecting the pilot group would do to SSPR's reach (see [`scope_decision`]), with
    /// the coverage it was decided from. The pilot users' own details are read only when
    /// SSPR reaches some governed users but not all.
    async fn scope_decision(
        &self,
        users: &[User],
    ) -> Result<(ScopeDecision, Option<Coverage>), StepError> {
        let coverage = self.coverage().await?;
        let mut pilot_enabled = None;
        if coverage.is_some_and(|c| c.is_partial()) {
            // Unreadable pilot details count as none enabled: a block, never a narrowing.
            let details = self.pilot_registrations(users, HIGH).await?.unwrap_or_default();
            let n = details.iter().flatten().filter(|d| governed_and_enabled(d)).count();
            pilot_enabled = Some(n as u64);
        }
        Ok((scope_decision(coverage, pilot_enabled), coverage))
    }

    /// Finds, reuses or creates the scope group and records its id.
    async fn scope_group(&self) -> Result<Result<(String, bool), Outcome>, StepError> {
        if let Some(id) = &self.rt.scope_group_id {
            return match self.g().group(&self.gt, id).await? {
                Some(_) => Ok(Ok((id.clone(), false))),
                None => Err(StepError::Retry(format!(
                    "the scope group {id} is not visible yet (replication)"
                ))),
            };
        }
        let policy = &self.spec.policy.pilot_group;
        let (id, created) = if let Some(id) = &policy.id {
            match self.g().group(&self.gt, id.trim()).await? {
                Some(g) => (g.id, false),
                None => {
                    return Ok(Err(block(
                        "pilot_group_not_found",
                        format!("no group has the id {id}"),
                    )));
                }
            }
        } else {
            let name = policy.name.clone().unwrap_or_default();
            let name = name.trim();
            let groups = self.g().groups_named(&self.gt, name).await?;
            let mut ours: Vec<_> = groups
                .iter()
                .filter(|g| g.description.as_deref() == Some(SCOPE_GROUP_DESCRIPTION))
                .collect();
            // A crash between creating the group and recording it can leave two of ours:
            // the oldest is the one.
            ours.sort_by_key(|g| (g.created_date_time, g.id.clone()));
            if let Some(g) = ours.first() {
                (g.id.clone(), false)
            } else if !groups.is_empty() {
                return Ok(Err(block(
                    "pilot_group_name_taken",
                    "a group with the pilot group's name exists and sspr-fleet did not create it",
                )));
            } else {
                self.snapshot(
                    "pilot_apply",
                    "scope_group",
                    json!({"existed": false, "name": name}),
                )
                .await?;
                let group = self
                    .g()
                    .create_security_group(
                        &self.gt,
                        &NewSecurityGroup {
                            display_name: name.to_owned(),
                            mail_nickname: mail_nickname_from(name),
                            description: Some(SCOPE_GROUP_DESCRIPTION.to_owned()),
                            members: Vec::new(),
                            dynamic_rule: None,
                        },
                    )
                    .await?;
                (group.id, true)
            }
        };
        let mut update = update_to(TenantState::PilotApplying, self.now());
        update.scope_group_id = Some(Some(id.clone()));
        self.engine
            .store()
            .transition_rollout_tenant(
                &self.rollout_id,
                &self.rt.tenant_id,
                TenantState::PilotApplying.as_str(),
                update,
                sspr_store::NewEvent {
                    tenant_id: Some(self.rt.tenant_id.clone()),
                    at: self.now(),
                    actor: ENGINE_ACTOR.into(),
                    kind: "scope_group_ready".into(),
                    from_state: Some(TenantState::PilotApplying.as_str().into()),
                    to_state: Some(TenantState::PilotApplying.as_str().into()),
                    detail: json!({"group_id": id, "created": created}),
                },
            )
            .await?;
        Ok(Ok((id, created)))
    }

    /// Adds `wanted` users to the group, after a snapshot of its members.
    async fn add_members(
        &self,
        step: &str,
        group_id: &str,
        wanted: &[String],
    ) -> Result<usize, StepError> {
        let now: HashSet<String> = self
            .g()
            .group_members(&self.gt, group_id)
            .await?
            .into_iter()
            .map(|m| m.id.to_ascii_lowercase())
            .collect();
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| !now.contains(&id.to_ascii_lowercase()))
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let mut before: Vec<&String> = now.iter().collect();
        before.sort();
        self.snapshot(step, &format!("group_members:{group_id}"), json!({"members": before}))
            .await?;
        let results = self.g().add_group_members(&self.gt, group_id, &missing).await?;
        if let Some((id, Err(e))) = results.iter().find(|(_, r)| r.is_err()) {
            let message = format!("adding member {id} failed: {e}");
            // The client waited out Graph's Retry-After as long as it may; the step waits on.
            if e.starts_with("429") {
                return Err(StepError::Throttled { message, retry_after: None });
            }
            return Err(StepError::Retry(message));
        }
        Ok(missing.len())
    }

    /// Applies the methods and campaign of a stage, snapshot first.
    async fn apply_methods(&self, step: &str, stage: &Stage) -> Result<Value, StepError> {
        let policy_now: AuthenticationMethodsPolicy = self.g().methods_policy(&self.gt).await?;
        let changes = plan_methods(&self.spec.policy, &methods_now(&policy_now), stage);
        let mut done = Vec::new();
        for change in &changes {
            let id = method_id(change.key);
            let current = policy_now.configuration(id);
            let before = current.map_or(Value::Null, |c| c.to_patch_json());
            self.snapshot(step, &format!("method:{}", id.as_path_segment()), before).await?;
            let patch = method_patch(change, current, stage);
            self.g().patch_method_configuration(&self.gt, id, &patch).await?;
            done.push(json!({
                "method": id.as_path_segment(), "targets": change.after.targets,
                "exclude_targets": change.after.exclude_targets,
            }));
        }
        let campaign = plan_campaign(&self.spec.policy, &campaign_now(&policy_now), stage);
        let mut campaign_done = Value::Null;
        if let Some(change) = campaign {
            let before = policy_now
                .registration_campaign()
                .map_or(Value::Null, |c| serde_json::to_value(c).unwrap_or_default());
            self.snapshot(step, "campaign", before).await?;
            let mut c = RegistrationCampaign::enabled(
                i32::from(change.after.snooze_days),
                change
                    .after
                    .targets
                    .iter()
                    .map(CampaignIncludeTarget::authenticator_for_group)
                    .collect(),
            );
            // The tenant's exclude targets as they are (users too), then the exclusion groups.
            let kept = policy_now.registration_campaign().map(|now| &now.exclude_targets[..]);
            c.exclude_targets =
                exclude_targets(kept.unwrap_or_default(), &change.after.exclude_targets);
            let body = registration_campaign_patch(&c)
                .map_err(|e| StepError::Retry(format!("invalid campaign: {e}")))?;
            self.g().patch_methods_policy(&self.gt, body).await?;
            campaign_done = json!({
                "targets": change.after.targets, "exclude_targets": change.after.exclude_targets,
                "snooze_days": change.after.snooze_days,
            });
        }
        Ok(json!({"methods": done, "campaign": campaign_done}))
    }

    async fn pilot_apply(&self) -> StepResult {
        // Decide what the scope step may do before anything is created: a tenant where it
        // would take SSPR from someone gets nothing (preflight blocks such tenants; this
        // catches a change since).
        let users = match self.pilot_users().await? {
            Ok(u) => u,
            Err(o) => return Ok(o),
        };
        let (decision, coverage) = self.scope_decision(&users).await?;
        if let ScopeDecision::WouldNarrow { enabled_now, kept } = decision {
            return Ok(fail(SCOPE_WOULD_NARROW, narrowing_message(enabled_now, kept)));
        }
        let already_all = decision == ScopeDecision::AlreadyAll;
        // The group is the methods' and the campaign's pilot target too, so a tenant already
        // at All still gets it; only the SSPR scope step is skipped there.
        let (group_id, created) = match self.scope_group().await? {
            Ok(g) => g,
            Err(o) => return Ok(o),
        };
        let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
        let added = self.add_members("pilot_apply", &group_id, &ids).await?;
        let applied =
            self.apply_methods("pilot_apply", &Stage::Pilot { group_id: group_id.clone() }).await?;
        let mut scope = json!({"skipped": already_all, "coverage": coverage});
        if !already_all {
            match self.spec.policy.scope_mode {
                ScopeMode::Manual => {
                    let task = self.ensure_scope_task(&group_id).await?;
                    scope = json!({"task_id": task.id.as_str(), "mode": "manual"});
                }
                ScopeMode::Portal => match self.portal_scope(&group_id).await? {
                    Ok(done) => scope = done,
                    Err(o) => return Ok(o),
                },
            }
        }
        Ok(Outcome::Next {
            to: TenantState::PilotVerifying,
            kind: "pilot_applied",
            // The decision is read back by the later steps instead of asking Graph again.
            detail: json!({
                "group_id": group_id, "group_created": created, "members_added": added,
                "applied": applied, "scope": scope, "already_all": already_all,
                "coverage": coverage,
            }),
            gate_entered: true,
        })
    }

    async fn ensure_scope_task(&self, group_id: &str) -> Result<Task, StoreError> {
        let p = &self.spec.policy;
        let writeback = if premium(&self.tenant) {
            "on, if users are synced from on-premises (also enable it in Entra Connect)"
        } else {
            "not licensed (needs Entra ID P1)"
        };
        let instructions = json!({
            "title": format!("Enable SSPR for the scope group in {}", self.tenant.display_name),
            "where": "Entra admin center > Protection > Password reset (signed in to the customer tenant)",
            "why": "Microsoft Graph has no API for the SSPR enablement policy; a technician sets it once per tenant.",
            "steps": [
                "First look at Properties: if Self service password reset enabled is already All, leave it at All (Selected would take SSPR away from everyone outside the group) and only check the settings below",
                format!("Properties: Self service password reset enabled = Selected; select the group \"{}\" ({group_id})", p.pilot_group.name.clone().unwrap_or_default()),
                format!("Authentication methods: number of methods required to reset = {}", p.methods_required),
                "Authentication methods: security questions off",
                format!("Registration: require users to register when signing in = {}", if p.register_at_sign_in { "Yes" } else { "No" }),
                format!("Registration: number of days before users are asked to re-confirm = {}", p.reconfirm_days),
                format!("On-premises integration: write back passwords = {writeback}"),
                "Save, then attest this task (POST /v1/tasks/{id}/attest)",
            ],
            "tenant": {"id": self.tenant.id.as_str(), "name": self.tenant.display_name, "entra_tenant_id": self.tenant.entra_tenant_id},
            "group": {"id": group_id, "name": p.pilot_group.name},
            "settings": {
                "enablement": "Selected",
                "methods_required": p.methods_required,
                "register_at_sign_in": p.register_at_sign_in,
                "reconfirm_days": p.reconfirm_days,
                "security_questions": false,
                "password_writeback": writeback,
            },
        });
        let task = Task {
            id: TaskId::new(),
            rollout_id: self.rollout_id.clone(),
            tenant_id: self.rt.tenant_id.clone(),
            kind: SCOPE_TASK.into(),
            instructions,
            state: "open".into(),
            attested_by: None,
            attested_at: None,
            note: None,
            created_at: self.now(),
        };
        Ok(self.engine.store().ensure_task(task).await?.0)
    }

    /// What the gates read of each pilot user; `None` when the tenant has no P1/P2.
    async fn pilot_details(&self, users: &[User]) -> Result<Option<Vec<PilotDetail>>, StepError> {
        let required = self.spec.policy.methods_required;
        let Some(details) = self.pilot_registrations(users, HIGH).await? else {
            return Ok(None);
        };
        Ok(Some(
            details
                .into_iter()
                .map(|d| match d {
                    Some(d) => PilotDetail {
                        enabled: d.is_sspr_enabled,
                        registered: d.is_sspr_registered,
                        capable_without_phone: d.is_sspr_capable
                            && enough_without_phone(
                                &d.methods_registered,
                                required,
                                d.is_admin == Some(true),
                            ),
                    },
                    // Not in the report yet: counts as none of them.
                    None => PilotDetail::default(),
                })
                .collect(),
        ))
    }

    async fn pilot_verify(&self) -> StepResult {
        let already_all = self.already_all_decided().await?;
        let mut evidence = json!({"already_all": already_all});
        if !already_all && self.spec.policy.scope_mode == ScopeMode::Manual {
            let task = self
                .engine
                .store()
                .find_task(&self.rollout_id, &self.rt.tenant_id, SCOPE_TASK)
                .await?;
            match task {
                Some(t) if t.state == "attested" => {
                    evidence["attested_by"] = json!(t.attested_by);
                }
                // Not polled: the attestation wakes this job (`Engine::attest`).
                Some(_) => {
                    if self.past_deadline() {
                        return self.wait_or_fail("scope_task_attestation", "scope_not_enabled");
                    }
                    return Ok(Outcome::Wait {
                        waiting_for: "scope_task_attestation".into(),
                        until: None,
                        woken: true,
                    });
                }
                None => {
                    return Ok(fail("scope_task_missing", "the scope task disappeared"));
                }
            }
        }
        if !already_all
            && self.spec.policy.scope_mode == ScopeMode::Portal
            && let Some(gid) = &self.rt.scope_group_id
        {
            match self.portal_readback(gid).await? {
                Err(o) => return Ok(o),
                Ok(Some(differs)) => {
                    evidence["portal_policy"] = json!(differs);
                    return self.wait_or_fail("portal_policy_readback", "scope_not_enabled");
                }
                Ok(None) => evidence["portal_policy"] = json!("Selected = the scope group"),
            }
        }
        let users = match self.pilot_users().await? {
            Ok(u) => u,
            Err(o) => return Ok(o),
        };
        match self.pilot_details(&users).await? {
            None => {
                evidence["is_sspr_enabled"] =
                    json!("not readable without Entra ID P1/P2: attestation and read-back only");
            }
            Some(d) => {
                let enabled = d.iter().filter(|p| p.enabled).count();
                if enabled < d.len() {
                    return self.wait_or_fail("pilot_users_sspr_enabled", "scope_not_enabled");
                }
                evidence["pilot_users_sspr_enabled"] = json!(enabled);
            }
        }
        // Read back what Graph can read: the scope group holds the pilot users.
        if let Some(gid) = &self.rt.scope_group_id {
            let members: HashSet<String> = self
                .g()
                .group_members(&self.gt, gid)
                .await?
                .into_iter()
                .map(|m| m.id.to_ascii_lowercase())
                .collect();
            let missing =
                users.iter().filter(|u| !members.contains(&u.id.to_ascii_lowercase())).count();
            if missing > 0 {
                return self.wait_or_fail("pilot_members_visible", "pilot_members_missing");
            }
        }
        Ok(Outcome::Next {
            to: TenantState::Gate,
            kind: "pilot_verified",
            detail: evidence,
            gate_entered: true,
        })
    }

    fn wait_or_fail(&self, waiting_for: &str, code: &str) -> StepResult {
        if self.past_deadline() {
            return Ok(fail(
                code,
                format!(
                    "still waiting for {waiting_for} after the {} hour deadline",
                    self.spec.gates.deadline_hours
                ),
            ));
        }
        Ok(Outcome::Wait { waiting_for: waiting_for.into(), until: None, woken: false })
    }

    // ---- gates --------------------------------------------------------------------------

    async fn gate(&self) -> StepResult {
        let gates = &self.spec.gates;
        let mut unmet: Vec<&str> = Vec::new();
        let mut evidence = json!({});
        let since = self.rt.gate_entered_at.unwrap_or_else(|| self.now());
        let soak_end = since + TimeDelta::minutes(i64::from(gates.soak_minutes));
        let soaking = self.now() < soak_end;
        if soaking {
            unmet.push("soak");
        }
        let approved = self.rt.approved_at.is_some();
        let without_phone = gates.min_capable_without_phone_percent;
        // While the soak lasts the gate cannot pass: its report reads wait until it is over.
        if !soaking
            && (gates.min_registered_percent > 0 || gates.min_pilot_resets > 0 || without_phone > 0)
        {
            let users = match self.pilot_users().await? {
                Ok(u) => u,
                Err(o) => return Ok(o),
            };
            if gates.min_registered_percent > 0 || without_phone > 0 {
                match self.pilot_details(&users).await? {
                    Some(d) if !d.is_empty() => {
                        let share = |n: usize| n * 100 / d.len();
                        if gates.min_registered_percent > 0 {
                            let pct = share(d.iter().filter(|p| p.registered).count());
                            evidence["pilot_registered_percent"] = json!(pct);
                            if pct < usize::from(gates.min_registered_percent) {
                                unmet.push("pilot_registrations");
                            }
                        }
                        if without_phone > 0 {
                            let pct = share(d.iter().filter(|p| p.capable_without_phone).count());
                            evidence["pilot_capable_without_phone_percent"] = json!(pct);
                            if pct < usize::from(without_phone) {
                                unmet.push("pilot_capable_without_phone");
                            }
                        }
                    }
                    Some(_) => {}
                    // Without P1/P2 the shares cannot be read: an approval stands in for them.
                    None if approved => {
                        evidence["pilot_registered_percent"] =
                            json!("unreadable; approved instead");
                    }
                    None => unmet.push("pilot_registrations_unreadable_needs_approval"),
                }
            }
            if gates.min_pilot_resets > 0 {
                let ids: HashSet<String> =
                    users.iter().map(|u| u.id.to_ascii_lowercase()).collect();
                let pilot_start = self.pilot_started().await?.unwrap_or(since);
                let audits = if premium(&self.tenant) {
                    match self
                        .report(self.g().directory_audits(
                            &self.gt,
                            RESET_ACTIVITY,
                            pilot_start,
                            HIGH,
                        ))
                        .await
                    {
                        Ok(a) => Some(a),
                        Err(e) if non_premium(&e) => None,
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    None
                };
                match audits {
                    Some(audits) => {
                        let resets = audits
                            .iter()
                            .filter(|a| {
                                a.result
                                    .as_deref()
                                    .is_none_or(|r| r.eq_ignore_ascii_case("success"))
                            })
                            .filter(|a| {
                                a.initiated_by
                                    .user
                                    .as_ref()
                                    .and_then(|u| u.id.as_ref())
                                    .is_some_and(|id| ids.contains(&id.to_ascii_lowercase()))
                                    || a.target_resources.iter().any(|t| {
                                        t.id.as_ref().is_some_and(|id| {
                                            ids.contains(&id.to_ascii_lowercase())
                                        })
                                    })
                            })
                            .count();
                        evidence["pilot_resets"] = json!(resets);
                        if resets < gates.min_pilot_resets as usize {
                            unmet.push("pilot_resets");
                        }
                    }
                    None if approved => {
                        evidence["pilot_resets"] = json!("unreadable; approved instead")
                    }
                    None => unmet.push("pilot_resets_unreadable_needs_approval"),
                }
            }
        }
        if gates.approval != Approval::None && !approved {
            unmet.push("approval");
        }
        if unmet.is_empty() {
            evidence["approved_by"] = json!(self.rt.approved_by);
            return Ok(next(TenantState::AllApplying, "gate_passed", evidence));
        }
        if self.past_deadline() {
            return Ok(fail(
                "gate_deadline_passed",
                format!(
                    "gates not passed within {} hours: {}",
                    gates.deadline_hours,
                    unmet.join(", ")
                ),
            ));
        }
        Ok(Outcome::Wait {
            waiting_for: unmet.join(", "),
            until: soaking.then_some(soak_end),
            woken: false,
        })
    }

    /// When the pilot was applied (its event), to count resets from then on.
    async fn pilot_started(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.last_event("pilot_applied").await?.map(|e| e.at))
    }

    // ---- all ----------------------------------------------------------------------------

    async fn all_apply(&self) -> StepResult {
        let applied = self.apply_methods("all_apply", &Stage::All).await?;
        let already_all = self.already_all_decided().await?;
        let mut scope = json!({"skipped": already_all});
        if !already_all {
            let Some(gid) = self.rt.scope_group_id.clone() else {
                return Ok(fail(
                    "scope_group_missing",
                    "no scope group was recorded for the tenant",
                ));
            };
            let Some(group) = self.g().group(&self.gt, &gid).await? else {
                return Ok(fail("scope_group_missing", format!("the scope group {gid} is gone")));
            };
            let dynamic =
                group.group_types.iter().any(|t| t.eq_ignore_ascii_case("DynamicMembership"));
            if premium(&self.tenant) {
                if !dynamic {
                    let members: Vec<String> = self
                        .g()
                        .group_members(&self.gt, &gid)
                        .await?
                        .into_iter()
                        .map(|m| m.id)
                        .collect();
                    self.snapshot(
                        "all_apply",
                        &format!("group:{gid}"),
                        json!({"group_types": group.group_types, "membership_rule": group.membership_rule, "members": members}),
                    )
                    .await?;
                    self.g()
                        .set_group_dynamic(&self.gt, &gid, sspr_graph::types::ALL_MEMBERS_RULE)
                        .await?;
                }
                scope = json!({"group_id": gid, "membership": "dynamic_rule", "rule": sspr_graph::types::ALL_MEMBERS_RULE});
            } else {
                let wanted = self.enabled_members().await?;
                let added = self.add_members("all_apply", &gid, &wanted).await?;
                scope = json!({"group_id": gid, "membership": "kept_by_sspr_fleet", "added": added, "users": wanted.len()});
            }
        }
        Ok(next(
            TenantState::AllVerifying,
            "all_applied",
            json!({"applied": applied, "scope": scope}),
        ))
    }

    /// Every enabled member user's id.
    async fn enabled_members(&self) -> Result<Vec<String>, StepError> {
        let mut ids = Vec::new();
        self.g()
            .for_each_user(
                &self.gt,
                Some("accountEnabled eq true and userType eq 'Member'"),
                "id",
                |page: Vec<User>| ids.extend(page.into_iter().map(|u| u.id)),
            )
            .await?;
        Ok(ids)
    }

    async fn all_verify(&self) -> StepResult {
        let policy_now = self.g().methods_policy(&self.gt).await?;
        let mut wrong = Vec::new();
        for m in methods_now(&policy_now) {
            let wanted = match m.key {
                MethodKey::Authenticator => self.spec.policy.methods.authenticator.enabled,
                MethodKey::Sms => self.spec.policy.methods.sms,
                MethodKey::Email => self.spec.policy.methods.email,
            };
            if wanted && !(m.enabled && m.targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS)))
            {
                wrong.push(format!("method {:?}", m.key));
            }
        }
        if self.spec.policy.registration_campaign.enabled {
            let c = campaign_now(&policy_now);
            if !(c.enabled && c.targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS))) {
                wrong.push("registration campaign".into());
            }
        }
        let mut evidence = json!({});
        if !self.already_all_decided().await?
            && let Some(gid) = &self.rt.scope_group_id
        {
            let members = self.g().group_members(&self.gt, gid).await?.len();
            let wanted = self.enabled_members().await?.len();
            evidence["scope_group_members"] = json!(members);
            evidence["enabled_member_users"] = json!(wanted);
            if members < wanted {
                wrong.push("scope group membership".into());
            }
        }
        match self.coverage().await? {
            Some(c) => {
                evidence["sspr_enabled_member_users"] = json!(c.enabled);
                evidence["member_users"] = json!(c.users);
            }
            None => {
                evidence["sspr_enabled_member_users"] =
                    json!("not readable without Entra ID P1/P2");
            }
        }
        if wrong.is_empty() {
            return Ok(next(TenantState::Completed, "completed", evidence));
        }
        let waiting = format!("read-back of {}", wrong.join(", "));
        self.wait_or_fail(&waiting, "verification_mismatch")
    }
}

/// Whether the pilot users' details are read from the `userRegistrationDetails` listing
/// rather than one read per pilot user: always or never as `mode` says, and with
/// [`PilotDetailsRead::Auto`] when the tenant's `total_users` (unknown: no) fit in no more
/// pages of `page_size` than there are `pilots`.
pub(crate) fn listing_is_cheaper(
    mode: PilotDetailsRead,
    total_users: Option<u64>,
    page_size: usize,
    pilots: usize,
) -> bool {
    match mode {
        PilotDetailsRead::Listing => true,
        PilotDetailsRead::PerUser => false,
        PilotDetailsRead::Auto => total_users.is_some_and(|n| {
            let pages = n.div_ceil(page_size.max(1) as u64).max(1);
            pages <= pilots as u64
        }),
    }
}

/// The exclude targets `kept` (as Graph has them, users included) followed by a group target
/// for every id of `wanted` they do not name (case-insensitive).
pub(crate) fn exclude_targets(kept: &[ExcludeTarget], wanted: &[String]) -> Vec<ExcludeTarget> {
    let mut out = kept.to_vec();
    for id in wanted {
        if !out.iter().any(|t| t.id.eq_ignore_ascii_case(id)) {
            out.push(ExcludeTarget::group(id.clone()));
        }
    }
    out
}

/// The PATCH that gives one method the targets of `change.after`, keeping the per-target
/// settings of targets it already had. Exclude targets are sent only when the change adds
/// some (the policy's `exclude_groups_from_methods`), the method's own kept as they are.
pub(crate) fn method_patch(
    change: &MethodChange,
    current: Option<&sspr_graph::types::MethodConfiguration>,
    stage: &Stage,
) -> MethodConfigPatch {
    let id = method_id(change.key);
    let mode = change.authenticator_mode.clone();
    let ours = |target_id: &str| {
        let t: MethodTarget = id.default_target(TargetType::Group, target_id);
        match &mode {
            Some(m) => t.authentication_mode(m.clone()),
            None => t,
        }
    };
    let targets: Vec<MethodTarget> = match stage {
        Stage::All => vec![ours(ALL_USERS)],
        Stage::Pilot { .. } => change
            .after
            .targets
            .iter()
            .map(|tid| {
                current
                    .filter(|c| c.is_enabled())
                    .and_then(|c| c.include_targets.iter().find(|t| t.id.eq_ignore_ascii_case(tid)))
                    .cloned()
                    .unwrap_or_else(|| ours(tid))
            })
            .collect(),
    };
    let patch = MethodConfigPatch::new(id).state(MethodState::Enabled).include_targets(targets);
    if change.after.exclude_targets.len() == change.before.exclude_targets.len() {
        return patch;
    }
    let kept = current.map_or(&[][..], |c| &c.exclude_targets[..]);
    patch.exclude_targets(exclude_targets(kept, &change.after.exclude_targets))
}

#[cfg(test)]
mod tests {
    use sspr_domain::methods_plan::MethodNow;
    use sspr_graph::types::MethodConfiguration;
    use std::time::Duration;

    use super::*;

    fn change(key: MethodKey, before: &[&str], after: &[&str], mode: Option<&str>) -> MethodChange {
        MethodChange {
            key,
            before: MethodNow {
                key,
                enabled: !before.is_empty(),
                targets: before.iter().map(|s| (*s).to_owned()).collect(),
                exclude_targets: Vec::new(),
            },
            after: MethodNow {
                key,
                enabled: true,
                targets: after.iter().map(|s| (*s).to_owned()).collect(),
                exclude_targets: Vec::new(),
            },
            authenticator_mode: mode.map(str::to_owned),
        }
    }

    #[test]
    fn only_a_429_is_throttling_and_its_wait_follows_retry_after_within_bounds() {
        let graph = |status: u16, retry_after: Option<Duration>| GraphError::Graph {
            status,
            code: "TooManyRequests".into(),
            message: String::new(),
            request_id: None,
            client_request_id: String::new(),
            retry_after,
        };
        let t = throttled(&graph(429, Some(Duration::from_secs(30))));
        assert!(
            matches!(t, Some(StepError::Throttled { retry_after: Some(d), .. }) if d == Duration::from_secs(30))
        );
        assert!(throttled(&graph(503, Some(Duration::from_secs(30)))).is_none());
        assert!(throttled(&graph(403, None)).is_none());
        for _ in 0..50 {
            let w = throttled_wait(Some(Duration::from_secs(30)));
            assert!(w >= Duration::from_secs(30) && w <= Duration::from_secs(36), "{w:?}");
            // Without Retry-After, or with a tiny one: at least 5 s; a huge one: at most 6 min.
            assert!(throttled_wait(None) >= Duration::from_secs(5));
            assert!(throttled_wait(Some(Duration::from_millis(10))) >= Duration::from_secs(5));
            assert!(throttled_wait(Some(Duration::from_secs(86_400))) <= Duration::from_secs(360));
        }
    }

    #[test]
    fn a_pilot_patch_keeps_existing_targets_and_their_settings() {
        let current: MethodConfiguration = serde_json::from_value(json!({
            "@odata.type": "#microsoft.graph.smsAuthenticationMethodConfiguration",
            "id": "Sms",
            "state": "enabled",
            "includeTargets": [{"targetType": "group", "id": "g-old", "isRegistrationRequired": true, "isUsableForSignIn": false}],
        }))
        .unwrap();
        let c = change(MethodKey::Sms, &["g-old"], &["g-old", "g-pilot"], None);
        let body = method_patch(&c, Some(&current), &Stage::Pilot { group_id: "g-pilot".into() })
            .to_json();
        let targets = body["includeTargets"].as_array().unwrap();
        assert_eq!(targets.len(), 2, "{body}");
        assert_eq!(targets[0]["id"], "g-old");
        assert_eq!(targets[0]["isRegistrationRequired"], true, "the old target is kept as it was");
        assert_eq!(targets[1]["id"], "g-pilot");
        assert_eq!(targets[1]["isRegistrationRequired"], false);
        assert_eq!(body["state"], "enabled");
    }

    #[test]
    fn the_all_patch_targets_all_users_with_the_authenticator_mode() {
        let c = change(MethodKey::Authenticator, &["g-pilot"], &["all_users"], Some("push"));
        let body = method_patch(&c, None, &Stage::All).to_json();
        assert_eq!(
            body["@odata.type"],
            "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration"
        );
        let targets = body["includeTargets"].as_array().unwrap();
        assert_eq!(targets.len(), 1, "{body}");
        assert_eq!(targets[0]["id"], "all_users");
        assert_eq!(targets[0]["authenticationMode"], "push");
    }

    #[test]
    fn exclude_targets_are_sent_only_when_the_change_adds_some_and_keep_the_methods_own() {
        let current: MethodConfiguration = serde_json::from_value(json!({
            "@odata.type": "#microsoft.graph.emailAuthenticationMethodConfiguration",
            "id": "Email",
            "state": "enabled",
            "includeTargets": [{"targetType": "group", "id": "all_users"}],
            "excludeTargets": [{"targetType": "user", "id": "u-old"}],
        }))
        .unwrap();
        let mut c = change(MethodKey::Email, &["all_users"], &["all_users"], None);
        c.before.exclude_targets = vec!["u-old".into()];
        c.after.exclude_targets = vec!["u-old".into()];
        let body = method_patch(&c, Some(&current), &Stage::All).to_json();
        assert!(body.get("excludeTargets").is_none(), "{body}");
        c.after.exclude_targets = vec!["u-old".into(), "g-break-glass".into()];
        let body = method_patch(&c, Some(&current), &Stage::All).to_json();
        assert_eq!(
            body["excludeTargets"],
            json!([{"id": "u-old", "targetType": "user"}, {"id": "g-break-glass", "targetType": "group"}])
        );
        let kept = [ExcludeTarget::group("G-1")];
        assert_eq!(
            exclude_targets(&kept, &["g-1".into(), "g-2".into()]),
            vec![ExcludeTarget::group("G-1"), ExcludeTarget::group("g-2")],
            "no duplicates"
        );
    }

    #[test]
    fn a_disabled_methods_old_targets_are_not_revived_by_the_pilot() {
        let current: MethodConfiguration = serde_json::from_value(json!({
            "@odata.type": "#microsoft.graph.emailAuthenticationMethodConfiguration",
            "id": "Email",
            "state": "disabled",
            "includeTargets": [{"targetType": "group", "id": "all_users"}],
        }))
        .unwrap();
        let c = change(MethodKey::Email, &[], &["g-pilot"], None);
        let body = method_patch(&c, Some(&current), &Stage::Pilot { group_id: "g-pilot".into() })
            .to_json();
        let ids: Vec<&str> = body["includeTargets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, vec!["g-pilot"]);
    }
}
