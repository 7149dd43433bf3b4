//! What people and PSA tools do to rollouts: create (start), pause, resume, cancel, retry,
//! approve, roll back. Each is idempotent (doing it again changes nothing more) and recorded as
//! an event with the actor.

use std::collections::BTreeSet;

use serde_json::json;
use sspr_domain::{RolloutId, RolloutSpec, rollout::TenantState, rollout::plan_waves};
use sspr_store::{NewEvent, NewRollout, NewRolloutTenant, Rollout, StoreError};

use super::{Engine, update_to};
use crate::plan::select_tenants_as;

/// The reason a rollout carries after an operator resumed it past its failure budget.
pub(crate) fn budget_override(wave: i32) -> String {
    format!("failure_budget_overridden:wave_{wave}")
}

/// What creating a rollout did.
#[derive(Debug, Clone)]
pub struct CreateOutcome {
    /// The rollout.
    pub rollout: Rollout,
    /// `false` when the idempotency key named a rollout created before with the same spec.
    pub created: bool,
}

/// Which tenants a rollback covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollbackScope {
    /// Every tenant; the rollout ends `rolled_back`.
    All,
    /// One tenant.
    Tenant(String),
}

/// Why an operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No such rollout (or tenant in it).
    #[error("not found")]
    NotFound,
    /// The selector names tenants that do not exist or are out of reach.
    #[error("{} selected tenants were not found", .0.len())]
    TenantsNotFound(Vec<String>),
    /// The selector selects nothing.
    #[error("the selector selects no tenant")]
    NoTenants,
    /// The operation does not apply in the rollout's state (stable `code`).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// For people.
        message: String,
    },
    /// The database failed.
    #[error("database error")]
    Store(#[from] StoreError),
}

fn conflict(code: &'static str, message: impl Into<String>) -> OpError {
    OpError::Conflict { code, message: message.into() }
}

impl Engine {
    async fn must_get(&self, id: &RolloutId) -> Result<Rollout, OpError> {
        self.rollout(id).await?.ok_or(OpError::NotFound)
    }

    /// Creates a rollout of `spec` over the tenants it selects within `within`, and starts it.
    /// With an idempotency key already used: the same spec returns the first rollout
    /// (`created: false`); another spec is a conflict (`idempotency_key_reused`).
    pub async fn create(
        &self,
        spec: &RolloutSpec,
        within: Option<&BTreeSet<String>>,
        actor: &str,
        idempotency_key: Option<&str>,
    ) -> Result<CreateOutcome, OpError> {
        let spec_json = serde_json::to_value(spec).unwrap_or_default();
        if let Some(key) = idempotency_key
            && let Some(found) = self.store().find_rollout_by_idempotency_key(key).await?
        {
            return same_or_conflict(found, &spec_json);
        }
        let (ids, not_found) =
            select_tenants_as(self.store(), spec, within, |t| t.id.to_string()).await?;
        if !not_found.is_empty() {
            return Err(OpError::TenantsNotFound(not_found));
        }
        if ids.is_empty() {
            return Err(OpError::NoTenants);
        }
        let waves = plan_waves(&ids, spec.waves.canary.as_ref(), spec.waves.batches);
        let mut rows = Vec::new();
        for (w, wave) in waves.iter().enumerate() {
            for (p, tid) in wave.iter().enumerate() {
                rows.push(NewRolloutTenant {
                    tenant_id: tid.clone(),
                    wave: i32::try_from(w).unwrap_or(i32::MAX),
                    position: i32::try_from(p).unwrap_or(i32::MAX),
                });
            }
        }
        let new = NewRollout {
            id: RolloutId::new(),
            name: spec.name.trim().to_owned(),
            spec: spec_json.clone(),
            wave_count: i32::try_from(waves.len()).unwrap_or(i32::MAX),
            created_by: actor.to_owned(),
            idempotency_key: idempotency_key.map(str::to_owned),
            created_at: self.now(),
            tenants: rows,
        };
        let rollout = match self.store().insert_rollout(new).await {
            Ok(r) => r,
            Err(StoreError::Conflict { .. }) if idempotency_key.is_some() => {
                // A concurrent request with the same key won the race.
                let key = idempotency_key.unwrap_or_default();
                let found = self
                    .store()
                    .find_rollout_by_idempotency_key(key)
                    .await?
                    .ok_or(OpError::NotFound)?;
                return same_or_conflict(found, &spec_json);
            }
            Err(e) => return Err(e.into()),
        };
        tracing::info!(rollout = %rollout.id, tenants = ids.len(), waves = waves.len(), actor, "rollout created");
        self.wake_advance(&rollout.id).await?;
        Ok(CreateOutcome { rollout, created: true })
    }

    /// Pauses a running rollout: no tenant is admitted and every tenant in flight holds where
    /// it stands. Pausing a paused rollout does nothing.
    pub async fn pause(&self, id: &RolloutId, actor: &str) -> Result<Rollout, OpError> {
        let r = self.must_get(id).await?;
        match r.state.as_str() {
            "paused" => return Ok(r),
            "running" => {}
            other => {
                return Err(conflict("rollout_not_running", format!("the rollout is {other}")));
            }
        }
        let ev = self.event(
            actor,
            "paused",
            "running",
            "paused",
            json!({"reason": "paused_by_operator"}),
        );
        self.store()
            .set_rollout_state(id, &["running"], "paused", Some("paused_by_operator"), ev)
            .await?;
        self.pause_tenants(id, actor, "paused_by_operator").await?;
        self.must_get(id).await
    }

    /// Holds every tenant in flight (`paused`, remembering where it stood).
    pub(crate) async fn pause_tenants(
        &self,
        id: &RolloutId,
        actor: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        for t in self.all_tenants(id).await? {
            let Some(s) = TenantState::parse(&t.state) else { continue };
            if !s.is_in_flight() {
                continue;
            }
            let mut u = update_to(TenantState::Paused, self.now());
            u.paused_from = Some(Some(s.as_str().to_owned()));
            self.transition(id, &t.tenant_id, s, u, actor, "paused", json!({"reason": reason}))
                .await?;
        }
        Ok(())
    }

    /// Resumes a paused rollout: paused tenants go back to where they stood. When the
    /// failure budget paused it, the current wave's budget is overridden from then on.
    pub async fn resume(&self, id: &RolloutId, actor: &str) -> Result<Rollout, OpError> {
        let r = self.must_get(id).await?;
        match r.state.as_str() {
            "running" => return Ok(r),
            "paused" => {}
            other => return Err(conflict("rollout_not_paused", format!("the rollout is {other}"))),
        }
        let reason = (r.state_reason.as_deref() == Some("failure_budget_exceeded"))
            .then(|| budget_override(r.current_wave));
        let ev =
            self.event(actor, "resumed", "paused", "running", json!({"budget_override": reason}));
        self.store().set_rollout_state(id, &["paused"], "running", reason.as_deref(), ev).await?;
        for t in self.all_tenants(id).await? {
            if t.state != TenantState::Paused.as_str() {
                continue;
            }
            let Some(back) = t.paused_from.as_deref().and_then(TenantState::parse) else {
                continue;
            };
            let mut u = update_to(back, self.now());
            u.paused_from = Some(None);
            self.transition(id, &t.tenant_id, TenantState::Paused, u, actor, "resumed", json!({}))
                .await?;
        }
        self.wake_advance(id).await?;
        self.must_get(id).await
    }

    /// Cancels a rollout: no more steps anywhere; what was applied stays (roll back to undo).
    pub async fn cancel(&self, id: &RolloutId, actor: &str) -> Result<Rollout, OpError> {
        let r = self.must_get(id).await?;
        match r.state.as_str() {
            "cancelled" => return Ok(r),
            "running" | "paused" => {}
            other => return Err(conflict("rollout_finished", format!("the rollout is {other}"))),
        }
        let ev = self.event(actor, "cancelled", &r.state, "cancelled", json!({}));
        self.store()
            .set_rollout_state(
                id,
                &["running", "paused"],
                "cancelled",
                Some("cancelled_by_operator"),
                ev,
            )
            .await?;
        for t in self.all_tenants(id).await? {
            let Some(s) = TenantState::parse(&t.state) else { continue };
            if s.is_final() || !s.may_move_to(TenantState::Cancelled, None) {
                continue;
            }
            self.transition(
                id,
                &t.tenant_id,
                s,
                update_to(TenantState::Cancelled, self.now()),
                actor,
                "cancelled",
                json!({}),
            )
            .await?;
        }
        self.must_get(id).await
    }

    /// Starts failed and blocked tenants again from preflight (all of them, or `tenant_ids`).
    /// Returns how many were restarted. A completed rollout runs again for them.
    pub async fn retry(
        &self,
        id: &RolloutId,
        tenant_ids: Option<&[String]>,
        actor: &str,
    ) -> Result<usize, OpError> {
        let r = self.must_get(id).await?;
        if !matches!(r.state.as_str(), "running" | "paused" | "completed") {
            return Err(conflict("rollout_finished", format!("the rollout is {}", r.state)));
        }
        let tenants = self.all_tenants(id).await?;
        if let Some(wanted) = tenant_ids
            && let Some(missing) =
                wanted.iter().find(|w| !tenants.iter().any(|t| &t.tenant_id == *w))
        {
            return Err(conflict(
                "tenant_not_in_rollout",
                format!("{missing} is not in the rollout"),
            ));
        }
        if r.state == "completed" {
            let ev = self.event(actor, "reopened", "completed", "running", json!({}));
            self.store().set_rollout_state(id, &["completed"], "running", None, ev).await?;
        }
        let mut restarted = 0;
        for t in &tenants {
            if tenant_ids.is_some_and(|w| !w.contains(&t.tenant_id)) {
                continue;
            }
            let Some(s) = TenantState::parse(&t.state) else { continue };
            if !matches!(s, TenantState::Failed | TenantState::Blocked) {
                continue;
            }
            let mut u = update_to(TenantState::Preflight, self.now());
            u.reason = Some(None);
            u.last_error = Some(None);
            u.gate_entered_at = Some(None);
            if self.transition(id, &t.tenant_id, s, u, actor, "retried", json!({})).await? {
                restarted += 1;
            }
        }
        self.wake_advance(id).await?;
        Ok(restarted)
    }

    /// Approves the gate of `tenant_ids` (or of every tenant of `wave`, or of all). Returns how
    /// many tenants were approved now (already approved ones are not counted).
    pub async fn approve(
        &self,
        id: &RolloutId,
        tenant_ids: Option<&[String]>,
        wave: Option<i32>,
        actor: &str,
    ) -> Result<u64, OpError> {
        let r = self.must_get(id).await?;
        if !matches!(r.state.as_str(), "running" | "paused") {
            return Err(conflict("rollout_finished", format!("the rollout is {}", r.state)));
        }
        if let Some(wanted) = tenant_ids {
            for w in wanted {
                if self.store().get_rollout_tenant(id, w).await?.is_none() {
                    return Err(conflict(
                        "tenant_not_in_rollout",
                        format!("{w} is not in the rollout"),
                    ));
                }
            }
        }
        let n =
            self.store().approve_rollout_tenants(id, tenant_ids, wave, actor, self.now()).await?;
        // Tenants waiting at the gate look again now rather than at their next poll.
        for t in self.all_tenants(id).await? {
            if t.state == TenantState::Gate.as_str() {
                let key = format!("step:{id}:{}:{}", t.tenant_id, TenantState::Gate.as_str());
                if self.store().wake_job(&key, self.now()).await? {
                    self.inner.enqueuer.wake_signal().notify_one();
                }
            }
        }
        Ok(n)
    }

    /// Rolls back one tenant, or the whole rollout: every snapshot restored in reverse order
    /// and what the rollout created removed, by background jobs. Returns the rollout.
    pub async fn rollback(
        &self,
        id: &RolloutId,
        scope: RollbackScope,
        actor: &str,
    ) -> Result<Rollout, OpError> {
        let r = self.must_get(id).await?;
        match scope {
            RollbackScope::All => {
                if matches!(r.state.as_str(), "rolling_back" | "rolled_back") {
                    return Ok(r);
                }
                let ev = self.event(actor, "rollback_started", &r.state, "rolling_back", json!({}));
                self.store()
                    .set_rollout_state(
                        id,
                        &["running", "paused", "completed", "cancelled"],
                        "rolling_back",
                        Some("rollback_requested"),
                        ev,
                    )
                    .await?;
                self.pause_tenants(id, actor, "rollback_requested").await?;
                for t in self.all_tenants(id).await? {
                    self.ensure_rollback(id, &t.tenant_id).await?;
                }
                self.wake_advance(id).await?;
            }
            RollbackScope::Tenant(tid) => {
                let Some(t) = self.store().get_rollout_tenant(id, &tid).await? else {
                    return Err(OpError::NotFound);
                };
                let s = TenantState::parse(&t.state).unwrap_or(TenantState::Failed);
                if s == TenantState::RolledBack {
                    return Ok(r);
                }
                if s.is_in_flight() {
                    let mut u = update_to(TenantState::Paused, self.now());
                    u.paused_from = Some(Some(s.as_str().to_owned()));
                    self.transition(
                        id,
                        &tid,
                        s,
                        u,
                        actor,
                        "paused",
                        json!({"reason": "rollback_requested"}),
                    )
                    .await?;
                }
                self.store()
                    .append_rollout_event(
                        id,
                        NewEvent {
                            tenant_id: Some(tid.clone()),
                            at: self.now(),
                            actor: actor.to_owned(),
                            kind: "rollback_requested".into(),
                            from_state: None,
                            to_state: None,
                            detail: json!({}),
                        },
                    )
                    .await?;
                self.ensure_rollback(id, &tid).await?;
            }
        }
        self.must_get(id).await
    }
}

impl Engine {
    /// Attests a manual task as done by `actor`, and lets the tenant waiting on it look again
    /// at once. Attesting an attested task returns it unchanged.
    pub async fn attest(
        &self,
        task: &sspr_domain::TaskId,
        actor: &str,
        note: Option<&str>,
    ) -> Result<sspr_store::Task, OpError> {
        let found = self.store().get_task(task).await?.ok_or(OpError::NotFound)?;
        match found.state.as_str() {
            "attested" => return Ok(found),
            "open" => {}
            other => return Err(conflict("task_not_open", format!("the task is {other}"))),
        }
        self.store().attest_task(task, actor, note, self.now()).await?;
        self.store()
            .append_rollout_event(
                &found.rollout_id,
                NewEvent {
                    tenant_id: Some(found.tenant_id.clone()),
                    at: self.now(),
                    actor: actor.to_owned(),
                    kind: "task_attested".into(),
                    from_state: None,
                    to_state: None,
                    detail: json!({"task_id": task.as_str(), "kind": found.kind, "note": note}),
                },
            )
            .await?;
        let key = format!(
            "step:{}:{}:{}",
            found.rollout_id,
            found.tenant_id,
            TenantState::PilotVerifying.as_str()
        );
        // The waiting tenant is not polled while its task is open: this is what moves it.
        if self.store().wake_job(&key, self.now()).await? {
            self.inner.enqueuer.wake_signal().notify_one();
        }
        self.store().get_task(task).await?.ok_or(OpError::NotFound)
    }
}

fn same_or_conflict(found: Rollout, spec: &serde_json::Value) -> Result<CreateOutcome, OpError> {
    if &found.spec == spec {
        Ok(CreateOutcome { rollout: found, created: false })
    } else {
        Err(conflict(
            "idempotency_key_reused",
            "this Idempotency-Key was used for a rollout with another spec",
        ))
    }
}
