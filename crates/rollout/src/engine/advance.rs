//! The per-rollout scheduler (`rollout.advance`): admits pending tenants of the current wave up
//! to the cap in flight, moves to the next wave when one is done, pauses the rollout when a
//! wave's failure budget is spent, finishes it, and re-creates any step job a crash lost. One
//! job per rollout (its unique key), so it never runs twice at once, across processes too.

use std::collections::BTreeMap;

use serde_json::json;
use sspr_domain::{RolloutId, rollout::TenantState};
use sspr_queue::{Job, JobDone, JobError, JobFuture, JobHandler};
use sspr_store::{RolloutTenant, StoreError};

use super::{ADVANCE_KIND, ENGINE_ACTOR, Engine, RolloutPayload, has_step, later, update_to};

pub(crate) struct AdvanceHandler {
    pub(crate) engine: Engine,
}

impl JobHandler for AdvanceHandler {
    fn kind(&self) -> &'static str {
        ADVANCE_KIND
    }

    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a> {
        Box::pin(async move {
            let payload: RolloutPayload = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("invalid payload: {e}")))?;
            let id: RolloutId = payload
                .rollout_id
                .parse()
                .map_err(|_| JobError::permanent("invalid rollout id in payload"))?;
            self.engine
                .advance(&id)
                .await
                .map_err(|e| JobError::retryable(format!("database: {e}")))
        })
    }
}

fn state_of(t: &RolloutTenant) -> TenantState {
    TenantState::parse(&t.state).unwrap_or(TenantState::Failed)
}

/// Whether a tenant still has work in its wave (a wave is done when none has).
fn unsettled(s: TenantState) -> bool {
    s == TenantState::Pending || s == TenantState::Paused || s.is_in_flight()
}

/// How often a process re-creates step jobs that a crash may have lost.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// Whether this round re-creates lost step jobs: the process's first round of the rollout,
    /// then once per [`SWEEP_EVERY`].
    fn sweep_due(&self, id: &RolloutId) -> bool {
        let mut swept = self.inner.swept.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = std::time::Instant::now();
        match swept.get(id.as_str()) {
            Some(at) if now.duration_since(*at) < SWEEP_EVERY => false,
            _ => {
                swept.insert(id.as_str().to_owned(), now);
                true
            }
        }
    }

    /// One round of the rollout's scheduler.
    pub(crate) async fn advance(&self, id: &RolloutId) -> Result<JobDone, StoreError> {
        let Some(rollout) = self.rollout(id).await? else { return Ok(JobDone::Finished) };
        let again = || JobDone::RunAgainAt(later(self.now(), self.settings().advance_every));
        match rollout.state.as_str() {
            "running" => {}
            "rolling_back" => return self.advance_rollback(id).await.map(|_| again()),
            // Paused, cancelled, completed, rolled back: the operation that changes that
            // wakes this job again.
            _ => return Ok(JobDone::Finished),
        }
        let spec = match Self::spec_of(&rollout) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(rollout = %id, error = %e, "rollout spec unreadable");
                return Ok(JobDone::Finished);
            }
        };
        let tenants = self.all_tenants(id).await?;
        // A crash can lose the step job between a transition and its enqueue: re-create it.
        // That is one write per tenant in flight, on the database's one writer, so it runs on
        // this process's first round of the rollout and then at most once a minute, not on
        // every round.
        if self.sweep_due(id) {
            for t in &tenants {
                let s = state_of(t);
                if has_step(s) {
                    self.ensure_step(id, &t.tenant_id, s).await?;
                }
            }
        }
        let mut wave = rollout.current_wave;
        let max_in_flight = spec.waves.max_in_flight.max(1);
        let mut in_flight = tenants.iter().filter(|t| state_of(t).is_in_flight()).count();
        let mut states: BTreeMap<&str, TenantState> =
            tenants.iter().map(|t| (t.tenant_id.as_str(), state_of(t))).collect();
        loop {
            let members: Vec<&RolloutTenant> = tenants.iter().filter(|t| t.wave == wave).collect();
            let failed = members
                .iter()
                .filter(|t| states.get(t.tenant_id.as_str()) == Some(&TenantState::Failed))
                .count();
            let overridden =
                rollout.state_reason.as_deref() == Some(super::ops::budget_override(wave).as_str());
            if !overridden && spec.waves.failure_budget.exceeded(failed, members.len()) {
                self.pause_for_budget(id, wave, failed, members.len()).await?;
                return Ok(JobDone::Finished);
            }
            // Admit the wave's pending tenants, in order, up to the cap.
            for t in &members {
                if in_flight >= max_in_flight {
                    break;
                }
                if states.get(t.tenant_id.as_str()) != Some(&TenantState::Pending) {
                    continue;
                }
                let moved = self
                    .transition(
                        id,
                        &t.tenant_id,
                        TenantState::Pending,
                        update_to(TenantState::Preflight, self.now()),
                        ENGINE_ACTOR,
                        "admitted",
                        json!({"wave": wave}),
                    )
                    .await?;
                if moved {
                    in_flight += 1;
                    states.insert(t.tenant_id.as_str(), TenantState::Preflight);
                }
            }
            let open = members
                .iter()
                .any(|t| states.get(t.tenant_id.as_str()).copied().is_none_or(unsettled));
            if open {
                return Ok(again());
            }
            if wave + 1 < rollout.wave_count {
                let event = self.event(
                    ENGINE_ACTOR,
                    "wave_started",
                    "",
                    "",
                    json!({"wave": wave + 1, "previous_wave_failed": failed}),
                );
                if !self.store().advance_rollout_wave(id, wave, wave + 1, event).await? {
                    // Someone else moved it (an older copy of this job); start over next time.
                    return Ok(again());
                }
                wave += 1;
                continue;
            }
            return self.finish(id, &states).await.map(|_| JobDone::Finished);
        }
    }

    async fn pause_for_budget(
        &self,
        id: &RolloutId,
        wave: i32,
        failed: usize,
        size: usize,
    ) -> Result<(), StoreError> {
        let event = self.event(ENGINE_ACTOR, "paused", "running", "paused", json!({"reason": "failure_budget_exceeded", "wave": wave, "failed": failed, "wave_size": size}));
        let paused = self
            .store()
            .set_rollout_state(id, &["running"], "paused", Some("failure_budget_exceeded"), event)
            .await?;
        if paused {
            tracing::warn!(rollout = %id, wave, failed, size, "failure budget exceeded; rollout paused");
            self.pause_tenants(id, ENGINE_ACTOR, "failure_budget_exceeded").await?;
        }
        Ok(())
    }

    async fn finish(
        &self,
        id: &RolloutId,
        states: &BTreeMap<&str, TenantState>,
    ) -> Result<(), StoreError> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for s in states.values() {
            *counts.entry(s.as_str()).or_default() += 1;
        }
        let reason = sspr_domain::completion_tally(counts.iter().map(|(k, v)| (*k, *v as u64)));
        let event = self.event(
            ENGINE_ACTOR,
            "completed",
            "running",
            "completed",
            json!({"tenants": counts}),
        );
        if self
            .store()
            .set_rollout_state(id, &["running"], "completed", reason.as_deref(), event)
            .await?
        {
            tracing::info!(rollout = %id, tenants = ?counts, "rollout completed");
        }
        Ok(())
    }

    /// While the rollout is rolling back: makes sure every touched tenant has its rollback
    /// job, and marks the rollout rolled back once none is left.
    async fn advance_rollback(&self, id: &RolloutId) -> Result<(), StoreError> {
        let tenants = self.all_tenants(id).await?;
        let mut left = 0;
        for t in &tenants {
            match state_of(t) {
                TenantState::RolledBack | TenantState::Cancelled => {}
                _ => {
                    left += 1;
                    self.ensure_rollback(id, &t.tenant_id).await?;
                }
            }
        }
        if left == 0 {
            let event = self.event(
                ENGINE_ACTOR,
                "rolled_back",
                "rolling_back",
                "rolled_back",
                json!({"tenants": tenants.len()}),
            );
            self.store()
                .set_rollout_state(id, &["rolling_back"], "rolled_back", None, event)
                .await?;
        }
        Ok(())
    }
}
