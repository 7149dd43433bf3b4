//! The opt-in, **unsupported** `portal` scope mode: instead of a technician's task, the engine
//! sets the legacy SSPR policy itself through the Azure portal's undocumented
//! `PasswordResetPolicies` API (see `sspr_graph::portal`), with the tenant's portal
//! credential. Like every other write, the policy as read is stored as a snapshot first, and a
//! rollback puts it back as it was.

use serde_json::{Value, json};
use sspr_graph::{Enablement, GraphError, PortalSspr, portal_policy_body};
use sspr_registry::{PortalSession, RegistryError};
use sspr_store::Tenant;

use super::steps::{Ctx, Outcome, StepError};

/// The snapshot target of the legacy policy object.
pub(crate) const PORTAL_POLICY_TARGET: &str = "portal_policy";

/// Why the engine could not get a portal session.
fn session_error(e: RegistryError) -> StepError {
    match e {
        RegistryError::Store(e) => StepError::Store(e),
        other => StepError::Graph(GraphError::Invalid(format!("portal credential: {other}"))),
    }
}

/// A portal session for `tenant`: `Err(outcome)` when it has no portal credential.
pub(crate) async fn session(
    registry: &sspr_registry::Registry,
    tenant: &Tenant,
) -> Result<Result<PortalSession, Outcome>, StepError> {
    match registry.portal_session(tenant).await.map_err(session_error)? {
        None => Ok(Err(Outcome::Fail {
            code: "portal_credentials_missing".into(),
            message: "scope_mode portal needs the tenant's portal credential \
                      (PUT /v1/tenants/{id}/portal-credentials)"
                .into(),
        })),
        Some(Ok(s)) => Ok(Ok(s)),
        Some(Err(e)) => Err(StepError::Graph(e)),
    }
}

impl Ctx<'_> {
    /// The legacy settings the rollout wants, SSPR enabled for `group_id`.
    fn portal_desired(&self, group_id: &str) -> PortalSspr {
        let p = &self.spec.policy;
        PortalSspr {
            enablement: Enablement::Selected { group_id: group_id.to_owned() },
            methods_required: p.methods_required,
            register_at_sign_in: p.register_at_sign_in,
            reconfirm_days: p.reconfirm_days,
            security_questions: false,
            email: p.methods.email,
            sms: p.methods.sms,
            authenticator: p.methods.authenticator.enabled,
        }
    }

    /// Sets SSPR to Selected = the scope group (and the legacy settings) through the portal's
    /// API, writing only when the policy differs. `Err(outcome)` when it cannot.
    pub(crate) async fn portal_scope(
        &self,
        group_id: &str,
    ) -> Result<Result<Value, Outcome>, StepError> {
        let s = match session(&self.engine.inner.registry, &self.tenant).await? {
            Ok(s) => s,
            Err(o) => return Ok(Err(o)),
        };
        let current = s.client.get_policy(&s.token).await?;
        let body = portal_policy_body(&current, &self.portal_desired(group_id));
        if body == current {
            return Ok(Ok(json!({"mode": "portal", "changed": false})));
        }
        self.snapshot("pilot_apply", PORTAL_POLICY_TARGET, current).await?;
        s.client.put_policy(&s.token, &body).await?;
        Ok(Ok(json!({"mode": "portal", "changed": true})))
    }

    /// Reads the legacy policy back: `Ok(None)` when it enables SSPR for exactly the scope
    /// group, else what differs.
    pub(crate) async fn portal_readback(
        &self,
        group_id: &str,
    ) -> Result<Result<Option<String>, Outcome>, StepError> {
        let s = match session(&self.engine.inner.registry, &self.tenant).await? {
            Ok(s) => s,
            Err(o) => return Ok(Err(o)),
        };
        let current = s.client.get_policy(&s.token).await?;
        let groups: Vec<String> = current["passwordResetEnabledGroupIds"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_ascii_lowercase).collect())
            .unwrap_or_default();
        let selected = current["enablementType"].as_u64() == Some(1)
            && groups == [group_id.to_ascii_lowercase()];
        let want = self.spec.policy.methods_required;
        let count = current["numberOfAuthenticationMethodsRequired"].as_u64();
        Ok(Ok(if !selected {
            Some("the portal policy does not enable SSPR for the scope group".into())
        } else if count != Some(u64::from(want)) {
            Some(format!("the portal policy requires {count:?} methods, not {want}"))
        } else {
            None
        }))
    }
}
