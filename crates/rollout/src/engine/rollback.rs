//! Rolling one tenant back (`rollout.rollback`): every snapshot of the tenant restored, newest
//! first, then what the rollout created removed. Each snapshot is marked restored once done,
//! so a rollback interrupted by a crash resumes with the ones left.

use std::collections::HashSet;

use serde_json::{Value, json};
use sspr_domain::{RolloutId, ScopeMode, TaskId, TenantId, rollout::TenantState};
use sspr_graph::{
    GraphError,
    types::{MethodConfigPatch, MethodId, MethodState},
};
use sspr_queue::{Job, JobDone, JobError, JobFuture, JobHandler};
use sspr_store::{RolloutTenant, Snapshot, StoreError, Task, Tenant, TenantStatus};

use super::{
    ENGINE_ACTOR, Engine, ROLLBACK_KIND, RolloutPayload,
    portal::PORTAL_POLICY_TARGET,
    steps::{SCOPE_REVERT_TASK, StepError},
    update_to,
};

pub(crate) struct RollbackHandler {
    pub(crate) engine: Engine,
}

impl JobHandler for RollbackHandler {
    fn kind(&self) -> &'static str {
        ROLLBACK_KIND
    }

    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a> {
        Box::pin(async move {
            let p: RolloutPayload = serde_json::from_value(job.payload.clone())
                .map_err(|e| JobError::permanent(format!("invalid payload: {e}")))?;
            let id: RolloutId =
                p.rollout_id.parse().map_err(|_| JobError::permanent("invalid rollout id"))?;
            let tenant = p.tenant_id.ok_or_else(|| JobError::permanent("no tenant in payload"))?;
            match self.engine.roll_back_tenant(&id, &tenant).await {
                Ok(()) => Ok(JobDone::Finished),
                Err(RollbackError::Store(e)) => Err(JobError::retryable(format!("database: {e}"))),
                Err(RollbackError::Moved) => Err(JobError::retryable("tenant moved; again")),
                Err(RollbackError::Graph(e))
                    if e.is_transient() && job.attempt < job.max_attempts =>
                {
                    Err(JobError::retryable(e.reason()))
                }
                Err(RollbackError::Graph(e)) => {
                    self.engine
                        .rollback_failed(&id, &tenant, &e.reason())
                        .await
                        .map_err(|e| JobError::retryable(format!("database: {e}")))?;
                    Err(JobError::permanent(e.reason()))
                }
            }
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RollbackError {
    #[error("Microsoft Graph: {}", .0.reason())]
    Graph(#[from] GraphError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("the tenant changed state during the rollback")]
    Moved,
}

fn ids_of(v: &Value) -> HashSet<String> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
        .unwrap_or_default()
}

impl Engine {
    /// Restores one tenant's snapshots and marks it rolled back.
    pub(crate) async fn roll_back_tenant(
        &self,
        rollout: &RolloutId,
        tenant_id: &str,
    ) -> Result<(), RollbackError> {
        let Some(rt) = self.store().get_rollout_tenant(rollout, tenant_id).await? else {
            return Ok(());
        };
        let state = TenantState::parse(&rt.state).unwrap_or(TenantState::Failed);
        match state {
            TenantState::RolledBack | TenantState::Cancelled => return Ok(()),
            // Never touched: nothing to undo.
            TenantState::Pending => {
                self.transition(
                    rollout,
                    tenant_id,
                    state,
                    update_to(TenantState::Cancelled, self.now()),
                    ENGINE_ACTOR,
                    "cancelled",
                    json!({"reason": "rollback before the tenant started"}),
                )
                .await?;
                return Ok(());
            }
            _ => {}
        }
        let snapshots = self.store().list_snapshots(rollout, tenant_id).await?;
        let mut restored = Vec::new();
        if snapshots.iter().any(|s| s.restored_at.is_none()) {
            let tid: TenantId = tenant_id.parse().map_err(|_| StoreError::Corrupt {
                what: "rollout tenant",
                detail: "tenant id".into(),
            })?;
            let Some(tenant) = self.store().get_tenant(&tid).await? else { return Ok(()) };
            if tenant.status == TenantStatus::Offboarded {
                return Ok(());
            }
            let gt = self.inner.registry.graph_tenant(&tenant).await.map_err(|e| {
                RollbackError::Graph(GraphError::Invalid(format!("credentials: {e}")))
            })?;
            for s in snapshots.iter().filter(|s| s.restored_at.is_none()) {
                self.restore(&tenant, &gt, &rt, s).await?;
                self.store().mark_snapshot_restored(&s.id, self.now()).await?;
                restored.push(s.target.clone());
            }
        }
        // In manual mode the legacy policy still names the group: a technician reverts it.
        let spec = self.rollout(rollout).await?.and_then(|r| Self::spec_of(&r).ok());
        if let Some(spec) = spec
            && spec.policy.scope_mode == ScopeMode::Manual
            && self.store().find_task(rollout, tenant_id, super::steps::SCOPE_TASK).await?.is_some()
        {
            self.ensure_revert_task(rollout, &rt).await?;
        }
        let mut update = update_to(TenantState::RolledBack, self.now());
        update.reason = Some(Some("rolled_back".into()));
        let moved = self
            .transition(
                rollout,
                tenant_id,
                state,
                update,
                ENGINE_ACTOR,
                "rolled_back",
                json!({"restored": restored}),
            )
            .await?;
        if !moved {
            // A step moved the tenant meanwhile: run again (what is restored stays restored).
            return Err(RollbackError::Moved);
        }
        Ok(())
    }

    async fn restore(
        &self,
        tenant: &Tenant,
        gt: &sspr_graph::Tenant,
        rt: &RolloutTenant,
        s: &Snapshot,
    ) -> Result<(), RollbackError> {
        let g = &self.inner.graph;
        let target = s.target.as_str();
        if target == PORTAL_POLICY_TARGET {
            // The policy object as it was, whole (the portal expects it back whole).
            let session = match super::portal::session(&self.inner.registry, tenant).await {
                Ok(Ok(session)) => session,
                Ok(Err(_)) => {
                    return Err(RollbackError::Graph(GraphError::Invalid(
                        "the tenant's portal credential is gone; restore the SSPR policy by hand"
                            .into(),
                    )));
                }
                Err(StepError::Graph(e)) => return Err(e.into()),
                Err(StepError::Store(e)) => return Err(e.into()),
                Err(StepError::Retry(m) | StepError::Throttled { message: m, .. }) => {
                    return Err(GraphError::Invalid(m).into());
                }
            };
            session.client.put_policy(&session.token, &s.before).await?;
        } else if target == "scope_group" {
            if s.before.get("existed") == Some(&Value::Bool(false))
                && let Some(gid) = &rt.scope_group_id
            {
                g.delete_group(gt, gid).await?;
            }
        } else if target == "campaign" {
            let body = json!({"registrationEnforcement": {"authenticationMethodsRegistrationCampaign": s.before}});
            if !s.before.is_null() {
                g.patch_methods_policy(gt, body).await?;
            }
        } else if let Some(method) = target.strip_prefix("method:") {
            let Some(id) = MethodId::from_id(method) else { return Ok(()) };
            if s.before.is_null() {
                let patch = MethodConfigPatch::new(id).state(MethodState::Disabled);
                g.patch_method_configuration(gt, id, &patch).await?;
            } else {
                let config: sspr_graph::types::MethodConfiguration =
                    serde_json::from_value(s.before.clone())
                        .map_err(|e| GraphError::Invalid(format!("snapshot: {e}")))?;
                let patch = MethodConfigPatch::new(id)
                    .state(config.state)
                    .include_targets(config.include_targets.clone())
                    .exclude_targets(config.exclude_targets.clone());
                g.patch_method_configuration(gt, id, &patch).await?;
            }
        } else if let Some(gid) = target.strip_prefix("group_members:") {
            let before = ids_of(&s.before["members"]);
            self.set_members_back(gt, gid, &before, false).await?;
        } else if let Some(gid) = target.strip_prefix("group:")
            && let Some(group) = g.group(gt, gid).await?
        {
            {
                let dynamic =
                    group.group_types.iter().any(|t| t.eq_ignore_ascii_case("DynamicMembership"));
                let was_dynamic = s.before["group_types"].as_array().is_some_and(|a| {
                    a.iter().any(|t| {
                        t.as_str().is_some_and(|t| t.eq_ignore_ascii_case("DynamicMembership"))
                    })
                });
                if dynamic && !was_dynamic {
                    g.set_group_assigned(gt, gid).await?;
                }
                if !was_dynamic {
                    let before = ids_of(&s.before["members"]);
                    self.set_members_back(gt, gid, &before, true).await?;
                }
            }
        }
        Ok(())
    }

    /// Removes the members the rollout added (not in `before`); with `add_missing`, adds back
    /// the ones `before` had.
    async fn set_members_back(
        &self,
        gt: &sspr_graph::Tenant,
        gid: &str,
        before: &HashSet<String>,
        add_missing: bool,
    ) -> Result<(), RollbackError> {
        let g = &self.inner.graph;
        let Some(_) = g.group(gt, gid).await? else { return Ok(()) };
        let now: Vec<String> = g.group_members(gt, gid).await?.into_iter().map(|m| m.id).collect();
        let now_set: HashSet<String> = now.iter().map(|m| m.to_ascii_lowercase()).collect();
        for m in &now {
            if !before.contains(&m.to_ascii_lowercase()) {
                g.remove_group_member(gt, gid, m).await?;
            }
        }
        if add_missing {
            let missing: Vec<String> =
                before.iter().filter(|m| !now_set.contains(*m)).cloned().collect();
            if !missing.is_empty() {
                g.add_group_members(gt, gid, &missing).await?;
            }
        }
        Ok(())
    }

    async fn ensure_revert_task(
        &self,
        rollout: &RolloutId,
        rt: &RolloutTenant,
    ) -> Result<(), StoreError> {
        let task = Task {
            id: TaskId::new(),
            rollout_id: rollout.clone(),
            tenant_id: rt.tenant_id.clone(),
            kind: SCOPE_REVERT_TASK.into(),
            instructions: json!({
                "title": "Revert the SSPR enablement policy",
                "where": "Entra admin center > Protection > Password reset",
                "steps": [
                    "Set Self service password reset enabled back to what it was before the rollout (None unless it was set otherwise)",
                    "The scope group the rollout created was deleted by the rollback",
                    "Attest this task",
                ],
                "group": {"id": rt.scope_group_id},
            }),
            state: "open".into(),
            attested_by: None,
            attested_at: None,
            note: None,
            created_at: self.now(),
        };
        self.store().ensure_task(task).await?;
        Ok(())
    }

    /// Records a rollback that cannot finish (a permanent Graph refusal).
    pub(crate) async fn rollback_failed(
        &self,
        rollout: &RolloutId,
        tenant_id: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        self.store()
            .append_rollout_event(
                rollout,
                sspr_store::NewEvent {
                    tenant_id: Some(tenant_id.to_owned()),
                    at: self.now(),
                    actor: ENGINE_ACTOR.into(),
                    kind: "rollback_failed".into(),
                    from_state: None,
                    to_state: None,
                    detail: json!({"error": error}),
                },
            )
            .await?;
        Ok(())
    }
}
