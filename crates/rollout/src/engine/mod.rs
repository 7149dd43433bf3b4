//! The engine that runs rollouts: creating a rollout, the jobs that move it (the per-rollout
//! `advance` job that admits tenants wave by wave, one `step` job per tenant and state, the
//! `rollback` job per tenant), and the operations people and PSA tools call.
//!
//! Every transition is a fenced update of the tenant's row (it only applies from the state the
//! job was made for) with its event in the same transaction; every job is idempotent and the
//! `advance` job re-creates any step job that a crash lost, so a restart resumes every rollout
//! where it stood.

mod advance;
mod ops;
mod portal;
mod rollback;
mod steps;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sspr_domain::{Clock, JobId, RolloutId, RolloutSpec, rollout::TenantState};
use sspr_graph::GraphClient;
use sspr_queue::{Enqueuer, JobHandler, NewJob};
use sspr_registry::Registry;
use sspr_store::{NewEvent, Rollout, RolloutTenant, Store, StoreError};

pub use ops::{CreateOutcome, OpError, RollbackScope};
pub use steps::{SCOPE_REVERT_TASK, SCOPE_TASK};

use crate::Planner;

/// Job kind of the per-rollout scheduler.
pub const ADVANCE_KIND: &str = "rollout.advance";
/// Job kind of one tenant's step.
pub const STEP_KIND: &str = "rollout.step";
/// Job kind of one tenant's rollback.
pub const ROLLBACK_KIND: &str = "rollout.rollback";

/// The actor recorded for what the engine does by itself.
pub const ENGINE_ACTOR: &str = "engine";

/// How the engine paces itself.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// The queue its jobs go to.
    pub queue: String,
    /// The first delay before a waiting tenant (pilot verification, gates, final verification)
    /// is checked again; each further check of the same wait waits as long as the wait has
    /// lasted (so the delays double), up to `poll_max`, less up to a quarter of jitter. A
    /// tenant waiting for its scope task is checked only when the task is attested (and once
    /// per `poll_max` as a safety net).
    pub poll: Duration,
    /// The longest delay between two checks of a waiting tenant.
    pub poll_max: Duration,
    /// How pilot verification and the gates read the pilot users' registration details.
    pub pilot_details: PilotDetailsRead,
    /// The page size assumed for `userRegistrationDetails` when
    /// [`PilotDetailsRead::Auto`] compares a listing with one read per pilot user.
    pub report_page_size: usize,
    /// How often a running rollout's scheduler runs when nothing wakes it earlier.
    pub advance_every: Duration,
    /// Attempts of a step job before the tenant fails with the step's last error.
    pub step_attempts: i32,
    /// Graph reads in parallel while preflighting (planning) one tenant.
    pub plan_concurrency: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            queue: "default".into(),
            poll: Duration::from_secs(60),
            poll_max: Duration::from_secs(30 * 60),
            pilot_details: PilotDetailsRead::Auto,
            report_page_size: 100,
            advance_every: Duration::from_secs(5),
            step_attempts: 6,
            plan_concurrency: 4,
        }
    }
}

/// How the pilot users' `userRegistrationDetails` are read (each request is one of Graph's
/// report reads: 5 per 10 s per tenant, 122 per 10 s per app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PilotDetailsRead {
    /// The listing when the tenant's users (as its last verification counted them) fit in no
    /// more pages than there are pilot users, else one read per pilot user.
    #[default]
    Auto,
    /// The listing, page by page, keeping only the pilot users.
    Listing,
    /// `userRegistrationDetails/{id}`, one read per pilot user.
    PerUser,
}

impl PilotDetailsRead {
    /// Parses `auto`, `listing` or `per_user`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auto" => Some(Self::Auto),
            "listing" => Some(Self::Listing),
            "per_user" => Some(Self::PerUser),
            _ => None,
        }
    }
}

/// Runs rollouts. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) registry: Registry,
    pub(crate) store: Store,
    pub(crate) graph: GraphClient,
    pub(crate) enqueuer: Enqueuer,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) settings: EngineSettings,
    pub(crate) planner: Planner,
    /// When this process last re-created lost step jobs, per rollout (see `Engine::advance`).
    pub(crate) swept: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

/// The arguments of a `rollout.step` job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct StepPayload {
    pub(crate) rollout_id: String,
    pub(crate) tenant_id: String,
    /// The state the step is for; a job whose tenant has moved on does nothing.
    pub(crate) state: String,
}

/// The arguments of `rollout.advance` and `rollout.rollback` jobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RolloutPayload {
    pub(crate) rollout_id: String,
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
}

pub(crate) fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(now)
}

/// The delay before a waiting tenant is checked again, when the same wait has lasted
/// `waited` so far: as long as it has lasted (so that the checks' delays double), at least
/// `first`, at most `max`, less up to a quarter (`jitter` in 0..1) so that tenants that began
/// waiting together drift apart. The first check of a wait comes after exactly `first`.
pub(crate) fn wait_backoff(
    first: Duration,
    max: Duration,
    waited: Duration,
    jitter: f64,
) -> Duration {
    let first = first.min(max);
    let base = waited.clamp(first, max);
    let jittered = base.mul_f64(1.0 - jitter.clamp(0.0, 1.0) / 4.0);
    jittered.max(first)
}

/// Whether a step job runs in this state.
pub(crate) fn has_step(state: TenantState) -> bool {
    matches!(
        state,
        TenantState::Preflight
            | TenantState::Ready
            | TenantState::PilotApplying
            | TenantState::PilotVerifying
            | TenantState::Gate
            | TenantState::AllApplying
            | TenantState::AllVerifying
    )
}

impl Engine {
    /// An engine working through `registry` (its store, Graph client and vault) and queueing
    /// its jobs with `enqueuer`.
    pub fn new(
        registry: Registry,
        enqueuer: Enqueuer,
        clock: Arc<dyn Clock>,
        settings: EngineSettings,
    ) -> Self {
        let planner = Planner::new(registry.clone(), settings.plan_concurrency);
        Self {
            inner: Arc::new(Inner {
                store: registry.store().clone(),
                graph: registry.graph().clone(),
                registry,
                enqueuer,
                clock,
                settings,
                planner,
                swept: std::sync::Mutex::default(),
            }),
        }
    }

    /// The job handlers to give the queue's workers.
    pub fn handlers(&self) -> Vec<Arc<dyn JobHandler>> {
        vec![
            Arc::new(advance::AdvanceHandler { engine: self.clone() }),
            Arc::new(steps::StepHandler { engine: self.clone() }),
            Arc::new(rollback::RollbackHandler { engine: self.clone() }),
        ]
    }

    /// The engine's settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.inner.settings
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    fn new_job(&self, kind: &str, payload: Value, tenant: Option<&str>, key: String) -> NewJob {
        let now = self.now();
        NewJob {
            id: JobId::new(),
            kind: kind.into(),
            queue: self.inner.settings.queue.clone(),
            payload,
            run_at: now,
            max_attempts: self.inner.settings.step_attempts.max(1),
            tenant_id: tenant.map(str::to_owned),
            unique_key: Some(key),
            created_at: now,
        }
    }

    /// Makes sure the rollout's scheduler job exists and runs now.
    pub(crate) async fn wake_advance(&self, rollout: &RolloutId) -> Result<(), StoreError> {
        let key = format!("advance:{rollout}");
        let job =
            self.new_job(ADVANCE_KIND, json!({"rollout_id": rollout.as_str()}), None, key.clone());
        let (_, created) = self.inner.enqueuer.enqueue(job).await?;
        if !created {
            self.inner.store.wake_job(&key, self.now()).await?;
        }
        Ok(())
    }

    /// Makes sure the step job of a tenant in `state` exists.
    pub(crate) async fn ensure_step(
        &self,
        rollout: &RolloutId,
        tenant: &str,
        state: TenantState,
    ) -> Result<(), StoreError> {
        if !has_step(state) {
            return Ok(());
        }
        let payload = json!({
            "rollout_id": rollout.as_str(), "tenant_id": tenant, "state": state.as_str(),
        });
        let key = format!("step:{rollout}:{tenant}:{}", state.as_str());
        self.inner.enqueuer.enqueue(self.new_job(STEP_KIND, payload, Some(tenant), key)).await?;
        Ok(())
    }

    /// Makes sure the rollback job of a tenant exists.
    pub(crate) async fn ensure_rollback(
        &self,
        rollout: &RolloutId,
        tenant: &str,
    ) -> Result<(), StoreError> {
        let payload = json!({"rollout_id": rollout.as_str(), "tenant_id": tenant});
        let key = format!("rollback:{rollout}:{tenant}");
        self.inner
            .enqueuer
            .enqueue(self.new_job(ROLLBACK_KIND, payload, Some(tenant), key))
            .await?;
        Ok(())
    }

    /// Every tenant of a rollout, in wave order.
    pub(crate) async fn all_tenants(
        &self,
        rollout: &RolloutId,
    ) -> Result<Vec<RolloutTenant>, StoreError> {
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self
                .inner
                .store
                .list_rollout_tenants(rollout, None, None, None, after.as_deref(), 1000)
                .await?;
            let done = page.len() < 1000;
            after = page.last().map(|t| t.tenant_id.clone());
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// Moves a tenant from `from` to `to` (fenced), recording `event_kind` with `detail` by
    /// `actor`, then makes sure the next job exists and wakes the scheduler. `false` when the
    /// tenant had moved on.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn transition(
        &self,
        rollout: &RolloutId,
        tenant: &str,
        from: TenantState,
        update: sspr_store::TenantUpdate,
        actor: &str,
        event_kind: &str,
        detail: Value,
    ) -> Result<bool, StoreError> {
        let to = TenantState::parse(&update.to_state);
        let event = NewEvent {
            tenant_id: Some(tenant.to_owned()),
            at: update.at,
            actor: actor.to_owned(),
            kind: event_kind.to_owned(),
            from_state: Some(from.as_str().to_owned()),
            to_state: Some(update.to_state.clone()),
            detail,
        };
        let moved = self
            .inner
            .store
            .transition_rollout_tenant(rollout, tenant, from.as_str(), update, event)
            .await?;
        if moved {
            if let Some(to) = to {
                self.ensure_step(rollout, tenant, to).await?;
            }
            self.wake_advance(rollout).await?;
        }
        Ok(moved)
    }

    /// A rollout-wide event now by `actor`, from state `from` to `to` of the rollout.
    pub(crate) fn event(
        &self,
        actor: &str,
        kind: &str,
        from: &str,
        to: &str,
        detail: Value,
    ) -> NewEvent {
        NewEvent {
            tenant_id: None,
            at: self.now(),
            actor: actor.to_owned(),
            kind: kind.to_owned(),
            from_state: (!from.is_empty()).then(|| from.to_owned()),
            to_state: (!to.is_empty()).then(|| to.to_owned()),
            detail,
        }
    }

    pub(crate) async fn rollout(&self, id: &RolloutId) -> Result<Option<Rollout>, StoreError> {
        self.inner.store.get_rollout(id).await
    }

    pub(crate) fn spec_of(rollout: &Rollout) -> Result<RolloutSpec, String> {
        serde_json::from_value(rollout.spec.clone())
            .map_err(|e| format!("the stored spec cannot be read: {e}"))
    }
}

/// A plain tenant update to `to` at `at`, leaving every other field as it is.
pub(crate) fn update_to(to: TenantState, at: DateTime<Utc>) -> sspr_store::TenantUpdate {
    sspr_store::TenantUpdate {
        to_state: to.as_str().to_owned(),
        paused_from: None,
        reason: None,
        last_error: None,
        scope_group_id: None,
        gate_entered_at: None,
        at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: Duration = Duration::from_millis(150);
    const MAX: Duration = Duration::from_secs(30 * 60);

    /// The checks of one wait, without jitter: each delay is the time waited so far.
    fn schedule(first: Duration, max: Duration, checks: usize) -> Vec<Duration> {
        let mut waited = Duration::ZERO;
        let mut delays = Vec::new();
        for _ in 0..checks {
            let d = wait_backoff(first, max, waited, 0.0);
            delays.push(d);
            waited += d;
        }
        delays
    }

    #[test]
    fn a_wait_is_checked_first_after_the_poll_then_doubling_up_to_the_max() {
        let s = schedule(Duration::from_secs(60), MAX, 9);
        let secs: Vec<u64> = s.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [60, 60, 120, 240, 480, 960, 1800, 1800, 1800]);
        // The tests' fast setting: 150 ms first.
        let fast = schedule(FIRST, MAX, 4);
        assert_eq!(fast, [FIRST, FIRST, FIRST * 2, FIRST * 4]);
        // A day-long wait (a soak, an approval) checks about 50 times, not 1,440.
        let mut waited = Duration::ZERO;
        let mut checks = 0;
        while waited < Duration::from_secs(86_400) {
            waited += wait_backoff(Duration::from_secs(60), MAX, waited, 0.0);
            checks += 1;
        }
        assert!(checks <= 53, "{checks} checks in a day");
    }

    #[test]
    fn jitter_takes_at_most_a_quarter_and_never_goes_below_the_first_delay() {
        for i in 0..=100 {
            let jitter = f64::from(i) / 100.0;
            let d = wait_backoff(FIRST, MAX, Duration::from_secs(100), jitter);
            assert!(d <= Duration::from_secs(100) && d >= Duration::from_secs(75), "{d:?}");
            let capped = wait_backoff(FIRST, MAX, Duration::from_secs(86_400), jitter);
            assert!(capped <= MAX && capped >= MAX.mul_f64(0.75), "{capped:?}");
            assert_eq!(wait_backoff(FIRST, MAX, Duration::ZERO, jitter), FIRST);
        }
        // Two tenants that began waiting together drift apart.
        assert_ne!(
            wait_backoff(FIRST, MAX, Duration::from_secs(600), 0.1),
            wait_backoff(FIRST, MAX, Duration::from_secs(600), 0.9)
        );
        // A first delay above the max is held to the max.
        assert_eq!(wait_backoff(MAX * 2, MAX, Duration::ZERO, 0.5), MAX);
    }

    #[test]
    fn pilot_details_come_from_the_listing_when_it_takes_no_more_reads() {
        use steps::listing_is_cheaper as cheaper;
        let auto = PilotDetailsRead::Auto;
        // 25 users are one page: one read instead of two.
        assert!(cheaper(auto, Some(25), 100, 2));
        // 120 users are two pages: as many as two pilot users, fewer than five.
        assert!(cheaper(auto, Some(120), 100, 2));
        assert!(cheaper(auto, Some(120), 100, 5));
        // 50,000 users are 500 pages: five reads of the pilot users instead.
        assert!(!cheaper(auto, Some(50_000), 100, 5));
        // Unknown size: one read per pilot user.
        assert!(!cheaper(auto, None, 100, 5));
        assert!(cheaper(PilotDetailsRead::Listing, None, 100, 1));
        assert!(!cheaper(PilotDetailsRead::PerUser, Some(1), 100, 5));
        assert_eq!(PilotDetailsRead::parse("per_user"), Some(PilotDetailsRead::PerUser));
        assert_eq!(PilotDetailsRead::parse("batch"), None);
    }
}
