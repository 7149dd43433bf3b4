//! The readiness report of a tenant: what a connectivity check found, and the conclusions drawn
//! from it. The conclusions are a pure function of the facts ([`Facts::conclude`]), so each rule
//! is tested without Graph.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sspr_graph::{
    GraphError,
    types::{
        AuthenticationMethodsPolicy, MethodId, Organization, PolicyMigrationState, SubscribedSku,
        UserRegistrationFeatureSummary, licence_readiness,
    },
};
use sspr_store::{LicenceLevel, TenantStatus};
use utoipa::ToSchema;

use crate::onboarding::failure_code;

/// An application permission sspr-fleet needs, and why. The README lists the same table; a test
/// keeps the two equal.
#[derive(Debug, Clone, Copy)]
pub struct RequiredPermission {
    /// The permission's name, as it appears in a token's `roles`.
    pub name: &'static str,
    /// Broader permissions Microsoft documents as also allowing what sspr-fleet does with it.
    pub also_satisfied_by: &'static [&'static str],
    /// What sspr-fleet uses it for.
    pub why: &'static str,
}

/// Every application permission sspr-fleet needs.
pub const REQUIRED_PERMISSIONS: &[RequiredPermission] = &[
    RequiredPermission {
        name: "Policy.ReadWrite.AuthenticationMethod",
        also_satisfied_by: &[],
        why: "Read and set the authentication methods policy: Authenticator, SMS and email, their targets, the registration campaign",
    },
    RequiredPermission {
        name: "Policy.Read.All",
        also_satisfied_by: &[],
        why: "Read the authorization policy (`allowedToUseSSPR`, which governs administrators' SSPR)",
    },
    RequiredPermission {
        name: "Organization.Read.All",
        also_satisfied_by: &["Directory.Read.All", "Directory.ReadWrite.All"],
        why: "Licences (`subscribedSkus`, matched by service-plan GUID) and the hybrid flag (`organization.onPremisesSyncEnabled`)",
    },
    RequiredPermission {
        name: "Group.ReadWrite.All",
        also_satisfied_by: &[],
        why: "Create and find the SSPR scope group",
    },
    RequiredPermission {
        name: "GroupMember.ReadWrite.All",
        also_satisfied_by: &["Group.ReadWrite.All"],
        why: "Add the pilot users, then everyone, to the scope group",
    },
    RequiredPermission {
        name: "User.Read.All",
        also_satisfied_by: &["User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All"],
        why: "Resolve pilot users by user principal name",
    },
    RequiredPermission {
        name: "AuditLog.Read.All",
        also_satisfied_by: &[],
        why: "`userRegistrationDetails` (`isSsprEnabled`, `isSsprRegistered`, `isSsprCapable`) and the SSPR events of the directory audit log",
    },
];

/// A reason a tenant is not ready, or a note that does not block it, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Finding {
    /// Stable snake_case code, e.g. `license_missing`.
    pub code: String,
    /// What it means and what to do, for a human.
    pub message: String,
}

impl Finding {
    fn new(code: &str, message: impl Into<String>) -> Self {
        Self { code: code.to_owned(), message: message.into() }
    }
}

/// The outcome of one Graph read made by the check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProbeOutcome {
    /// The request, e.g. `GET /subscribedSkus`.
    pub request: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The stable code of the failure (`permission_missing`, `graph_unavailable`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Graph's error code and message, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Whether a token could be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TokenCheck {
    /// A token was issued.
    pub ok: bool,
    /// Why not: `consent_missing`, `credentials_invalid`, `credentials_expired`,
    /// `tenant_not_found`, `token_refused`, `graph_unavailable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The identity platform's answer (AADSTS code and first line), when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Granted application permissions against those sspr-fleet needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PermissionCheck {
    /// What sspr-fleet needs.
    pub required: Vec<String>,
    /// What the tenant granted (the token's `roles`), when the token could be read.
    pub granted: Option<Vec<String>>,
    /// Required permissions not granted.
    pub missing: Vec<String>,
    /// `token_roles` (read from the token) or `probes` (inferred from Graph's 403s, when the
    /// token could not be read).
    pub source: String,
}

/// Licences, by service-plan GUID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LicenceCheck {
    /// `none`, `cloud_only`, `p1`, `p2` or `unknown` (not readable).
    pub level: String,
    /// Cloud-only self-service reset is licensed (Business Standard, Business Premium, P1, P2).
    pub cloud_sspr: bool,
    /// Writeback to on-premises AD and dynamic groups are licensed (Entra ID P1 or P2).
    pub writeback: bool,
    /// One line per SKU that counted or was set aside, and why.
    pub evidence: Vec<String>,
}

/// Directory synchronisation and password writeback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HybridCheck {
    /// `organization.onPremisesSyncEnabled`: true synced, false formerly synced, null never.
    pub on_premises_sync_enabled: Option<bool>,
    /// The last directory sync.
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Writeback can only be set in Entra Connect and the portal, and cannot be read with
    /// application permissions: always `not_readable_app_only`.
    pub writeback_state: String,
}

/// One authentication method's current state and targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MethodCheck {
    /// The method's id in Graph, e.g. `MicrosoftAuthenticator`.
    pub id: String,
    /// `enabled` or `disabled`.
    pub state: String,
    /// Include targets: `all_users` or group ids.
    pub targets: Vec<String>,
}

/// The authentication methods policy as found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MethodsCheck {
    /// `policyMigrationState`.
    pub migration_state: Option<String>,
    /// Authenticator, SMS and email (the methods an SSPR rollout sets).
    pub methods: Vec<MethodCheck>,
    /// The registration campaign's state (`enabled`, `disabled`, `default`), when present.
    pub registration_campaign: Option<String>,
    /// `reconfirmationInDays` of the policy, when present.
    pub reconfirmation_in_days: Option<i32>,
}

/// User counts from `usersRegisteredByFeature` (Entra ID P1 or P2 needed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UserCounts {
    /// Every user.
    pub total: i64,
    /// Users for whom SSPR is enabled.
    pub sspr_enabled: i64,
    /// Users registered for SSPR.
    pub sspr_registered: i64,
    /// Users able to reset (enabled and registered).
    pub sspr_capable: i64,
}

/// What a connectivity check found in a tenant, and whether a rollout can start there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadinessReport {
    /// When the check ran.
    pub checked_at: DateTime<Utc>,
    /// `ready`, `not_ready` or `unreachable`.
    pub status: String,
    /// The Entra tenant id Graph answered with.
    pub entra_tenant_id: Option<String>,
    /// The organization's name in Entra.
    pub organization_name: Option<String>,
    /// The default verified domain.
    pub default_domain: Option<String>,
    /// The token request.
    pub token: TokenCheck,
    /// Application permissions.
    pub permissions: Option<PermissionCheck>,
    /// Licences.
    pub licences: Option<LicenceCheck>,
    /// Hybrid identity.
    pub hybrid: Option<HybridCheck>,
    /// The authentication methods policy.
    pub methods: Option<MethodsCheck>,
    /// Whether administrators may use SSPR (`authorizationPolicy.allowedToUseSSPR`).
    pub admins_allowed_sspr: Option<bool>,
    /// User counts (absent without Entra ID P1/P2 or `AuditLog.Read.All`).
    pub users: Option<UserCounts>,
    /// Every Graph read the check made and how it went.
    pub probes: Vec<ProbeOutcome>,
    /// Why a rollout cannot start; empty when ready.
    pub blockers: Vec<Finding>,
    /// Notes that do not block a rollout (hybrid writeback, reports unavailable, ...).
    pub advisories: Vec<Finding>,
}

/// What the check collected from Graph, before any conclusion.
#[derive(Debug)]
pub(crate) struct Facts {
    pub(crate) checked_at: DateTime<Utc>,
    pub(crate) token: Result<sspr_graph::TokenInfo, GraphError>,
    pub(crate) organization: Option<Result<Organization, GraphError>>,
    pub(crate) skus: Option<Result<Vec<SubscribedSku>, GraphError>>,
    pub(crate) methods: Option<Result<AuthenticationMethodsPolicy, GraphError>>,
    pub(crate) admins_allowed: Option<Result<bool, GraphError>>,
    pub(crate) users: Option<Result<UserRegistrationFeatureSummary, GraphError>>,
}

/// What a report means for the tenant row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conclusion {
    /// The tenant's new status.
    pub status: TenantStatus,
    /// The first blocker's code, if any.
    pub reason: Option<String>,
    /// The licence level, `unknown` when it could not be read.
    pub licence: LicenceLevel,
}

fn probe<T>(request: &str, result: &Result<T, GraphError>) -> ProbeOutcome {
    match result {
        Ok(_) => ProbeOutcome { request: request.to_owned(), ok: true, code: None, detail: None },
        Err(e) => ProbeOutcome {
            request: request.to_owned(),
            ok: false,
            code: Some(failure_code(e).to_owned()),
            detail: Some(e.reason()),
        },
    }
}

fn is_denied(result: &Option<Result<impl Sized, GraphError>>) -> bool {
    matches!(result, Some(Err(e)) if failure_code(e) == "permission_missing")
}

fn text<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

impl Facts {
    /// Draws the report and its conclusion from the facts.
    pub(crate) fn conclude(self) -> (ReadinessReport, Conclusion) {
        let mut blockers = Vec::new();
        let mut advisories = Vec::new();
        let mut probes = Vec::new();
        let token_info = match &self.token {
            Ok(info) => Some(info.clone()),
            Err(e) => {
                let code = failure_code(e);
                blockers.push(Finding::new(code, token_message(code)));
                None
            }
        };
        let token = match &self.token {
            Ok(_) => TokenCheck { ok: true, code: None, detail: None },
            Err(e) => TokenCheck {
                ok: false,
                code: Some(failure_code(e).to_owned()),
                detail: Some(e.reason()),
            },
        };
        if let Some(r) = &self.organization {
            probes.push(probe("GET /organization", r));
        }
        if let Some(r) = &self.skus {
            probes.push(probe("GET /subscribedSkus", r));
        }
        if let Some(r) = &self.methods {
            probes.push(probe("GET /policies/authenticationMethodsPolicy", r));
        }
        if let Some(r) = &self.admins_allowed {
            probes.push(probe("GET /policies/authorizationPolicy", r));
        }
        if let Some(r) = &self.users {
            probes.push(probe("GET /reports/authenticationMethods/usersRegisteredByFeature", r));
        }

        // Permissions: from the token's roles when readable, else from the reads Graph refused.
        let permissions = token_info.as_ref().map(|info| {
            let required: Vec<String> =
                REQUIRED_PERMISSIONS.iter().map(|p| p.name.to_owned()).collect();
            match &info.roles {
                Some(granted) => {
                    let missing = REQUIRED_PERMISSIONS
                        .iter()
                        .filter(|p| {
                            !std::iter::once(&p.name)
                                .chain(p.also_satisfied_by)
                                .any(|name| granted.iter().any(|g| g.eq_ignore_ascii_case(name)))
                        })
                        .map(|p| p.name.to_owned())
                        .collect();
                    PermissionCheck {
                        required,
                        granted: Some(granted.clone()),
                        missing,
                        source: "token_roles".into(),
                    }
                }
                None => {
                    let mut missing = Vec::new();
                    let mut infer = |denied: bool, name: &str| {
                        if denied {
                            missing.push(name.to_owned());
                        }
                    };
                    infer(is_denied(&self.organization), "Organization.Read.All");
                    infer(is_denied(&self.methods), "Policy.ReadWrite.AuthenticationMethod");
                    infer(is_denied(&self.admins_allowed), "Policy.Read.All");
                    PermissionCheck { required, granted: None, missing, source: "probes".into() }
                }
            }
        });
        if let Some(p) = permissions.as_ref().filter(|p| !p.missing.is_empty()) {
            blockers.push(Finding::new(
                "permission_missing",
                format!(
                    "grant these application permissions and consent again: {}",
                    p.missing.join(", ")
                ),
            ));
        }
        // A read refused for a reason other than permissions means Graph could not be asked.
        let unreachable = [
            self.organization.as_ref().map(|r| r.as_ref().err()),
            self.skus.as_ref().map(|r| r.as_ref().err()),
            self.methods.as_ref().map(|r| r.as_ref().err()),
        ]
        .into_iter()
        .flatten()
        .flatten()
        .find(|e| matches!(failure_code(e), "graph_unavailable" | "tenant_set_aside"));
        if let Some(e) = unreachable {
            blockers.push(Finding::new(
                failure_code(e),
                format!("Microsoft Graph did not answer: {}", e.reason()),
            ));
        }

        let organization = self.organization.and_then(Result::ok);
        let licences = self.skus.as_ref().map(|r| match r {
            Ok(skus) => {
                let lr = licence_readiness(skus);
                let level = if lr.premium_p2 {
                    LicenceLevel::P2
                } else if lr.premium_p1 {
                    LicenceLevel::P1
                } else if lr.cloud_sspr {
                    LicenceLevel::CloudOnly
                } else {
                    LicenceLevel::None
                };
                (level, lr)
            }
            Err(_) => (LicenceLevel::Unknown, Default::default()),
        });
        let licence = licences.as_ref().map_or(LicenceLevel::Unknown, |(level, _)| *level);
        if licence == LicenceLevel::None {
            blockers.push(Finding::new(
                "license_missing",
                "no active subscription licenses self-service password reset (Business Standard, Business Premium, Entra ID P1 or P2)",
            ));
        }
        let hybrid = organization.as_ref().map(|org| HybridCheck {
            on_premises_sync_enabled: org.on_premises_sync_enabled,
            last_sync_at: org.on_premises_last_sync_date_time,
            writeback_state: "not_readable_app_only".into(),
        });
        if organization.as_ref().and_then(|o| o.on_premises_sync_enabled) == Some(true) {
            if licence.is_premium() {
                advisories.push(Finding::new(
                    "hybrid_writeback_manual",
                    "users are synced from on-premises AD: enable password writeback in Entra Connect and in the SSPR portal settings, or synced users cannot reset",
                ));
            } else {
                advisories.push(Finding::new(
                    "writeback_not_licensed",
                    "users are synced from on-premises AD but writeback needs Entra ID P1 or P2: synced users will not be able to reset",
                ));
            }
        }
        let methods = self.methods.as_ref().and_then(|r| r.as_ref().ok()).map(|policy| {
            let migration = policy.policy_migration_state;
            if matches!(
                migration,
                Some(PolicyMigrationState::PreMigration | PolicyMigrationState::MigrationInProgress)
            ) {
                blockers.push(Finding::new(
                    "migration_incomplete",
                    "the authentication methods policy migration is not complete, so the legacy SSPR methods still apply; complete the migration (Entra admin center, Authentication methods, Manage migration) first",
                ));
            }
            MethodsCheck {
                migration_state: migration.map(|m| text(&m)),
                methods: [MethodId::MicrosoftAuthenticator, MethodId::Sms, MethodId::Email]
                    .into_iter()
                    .map(|id| match policy.configuration(id) {
                        Some(c) => MethodCheck {
                            id: id.doc_id().to_owned(),
                            state: text(&c.state),
                            targets: c.include_targets.iter().map(|t| t.id.clone()).collect(),
                        },
                        None => MethodCheck {
                            id: id.doc_id().to_owned(),
                            state: "absent".into(),
                            targets: Vec::new(),
                        },
                    })
                    .collect(),
                registration_campaign: policy.registration_campaign().map(|c| text(&c.state)),
                reconfirmation_in_days: policy.reconfirmation_in_days,
            }
        });
        let users = match &self.users {
            Some(Ok(summary)) => {
                let count = |feature: &str| summary.count(feature).unwrap_or(0);
                Some(UserCounts {
                    total: summary.total_user_count,
                    sspr_enabled: count("ssprEnabled"),
                    sspr_registered: count("ssprRegistered"),
                    sspr_capable: count("ssprCapable"),
                })
            }
            Some(Err(e)) => {
                if e.code() == Some("Authentication_RequestFromNonPremiumTenantOrB2CTenant") {
                    advisories.push(Finding::new(
                        "reports_need_premium",
                        "registration reports need Entra ID P1 or P2; rollouts here are verified by attested tasks and the policy read-back",
                    ));
                }
                None
            }
            None => None,
        };
        let status = if self.token.is_err()
            || blockers
                .iter()
                .any(|b| matches!(b.code.as_str(), "graph_unavailable" | "tenant_set_aside"))
        {
            TenantStatus::Unreachable
        } else if blockers.is_empty() {
            TenantStatus::Ready
        } else {
            TenantStatus::NotReady
        };
        let entra_tenant_id = organization
            .as_ref()
            .map(|o| o.id.to_ascii_lowercase())
            .or_else(|| token_info.as_ref().and_then(|t| t.tenant_id.clone()));
        let report = ReadinessReport {
            checked_at: self.checked_at,
            status: status.as_str().to_owned(),
            entra_tenant_id,
            organization_name: organization.as_ref().and_then(|o| o.display_name.clone()),
            default_domain: organization
                .as_ref()
                .and_then(|o| o.default_domain().map(str::to_owned)),
            token,
            permissions,
            licences: licences.map(|(level, lr)| LicenceCheck {
                level: level.as_str().to_owned(),
                cloud_sspr: lr.cloud_sspr,
                writeback: lr.premium_p1,
                evidence: lr.evidence,
            }),
            hybrid,
            methods,
            admins_allowed_sspr: self.admins_allowed.and_then(Result::ok),
            users,
            probes,
            blockers,
            advisories,
        };
        let conclusion =
            Conclusion { status, reason: report.blockers.first().map(|b| b.code.clone()), licence };
        (report, conclusion)
    }
}

fn token_message(code: &str) -> &'static str {
    match code {
        "consent_missing" => {
            "the app is not consented in this tenant: a Global Administrator of the tenant must open the admin consent URL"
        }
        "credentials_invalid" => {
            "the client secret or certificate was refused: check the credentials"
        }
        "credentials_expired" => {
            "the client secret has expired: create a new one and rotate it here"
        }
        "tenant_not_found" => "no Entra tenant has this id or domain",
        "graph_unavailable" => "the identity platform did not answer; the check will be retried",
        _ => "the identity platform refused to issue a token",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sspr_graph::{
        TokenInfo,
        types::{BUSINESS_STANDARD_SKU_ID, ENTRA_ID_P1_PLAN_ID},
    };

    use super::*;

    const TENANT: &str = "aaaaaaaa-0000-4000-8000-000000000001";

    fn all_roles() -> Vec<String> {
        REQUIRED_PERMISSIONS.iter().map(|p| p.name.to_owned()).collect()
    }

    fn sku(sku_id: &str, plans: &[&str]) -> SubscribedSku {
        serde_json::from_value(json!({
            "id": format!("{TENANT}_{sku_id}"), "skuId": sku_id, "skuPartNumber": "X",
            "capabilityStatus": "Enabled", "prepaidUnits": {"enabled": 10},
            "servicePlans": plans.iter().map(|p| json!({"servicePlanId": p, "servicePlanName": "P", "provisioningStatus": "Success"})).collect::<Vec<_>>(),
        }))
        .unwrap()
    }

    fn graph_error(status: u16, code: &str) -> GraphError {
        GraphError::Graph {
            status,
            code: code.into(),
            message: String::new(),
            request_id: None,
            client_request_id: String::new(),
            retry_after: None,
        }
    }

    fn facts(
        roles: Vec<String>,
        skus: Vec<SubscribedSku>,
        sync: Option<bool>,
        migration: &str,
    ) -> Facts {
        Facts {
            checked_at: Utc::now(),
            token: Ok(TokenInfo { roles: Some(roles), tenant_id: Some(TENANT.into()), app_id: None }),
            organization: Some(Ok(serde_json::from_value(json!({
                "id": TENANT, "displayName": "Alpha", "onPremisesSyncEnabled": sync,
                "verifiedDomains": [{"name": "alpha.onmicrosoft.com", "isDefault": true, "isInitial": true}],
            })).unwrap())),
            skus: Some(Ok(skus)),
            methods: Some(Ok(serde_json::from_value(json!({
                "id": "authenticationMethodsPolicy", "policyMigrationState": migration,
                "authenticationMethodConfigurations": [
                    {"@odata.type": "#microsoft.graph.smsAuthenticationMethodConfiguration", "id": "Sms", "state": "enabled",
                     "includeTargets": [{"targetType": "group", "id": "all_users"}]},
                ],
            })).unwrap())),
            admins_allowed: Some(Ok(true)),
            users: Some(Ok(serde_json::from_value(json!({
                "totalUserCount": 40, "userRegistrationFeatureCounts": [
                    {"feature": "ssprEnabled", "userCount": 3}, {"feature": "ssprRegistered", "userCount": 2},
                    {"feature": "ssprCapable", "userCount": 1}],
            })).unwrap())),
        }
    }

    fn codes(findings: &[Finding]) -> Vec<&str> {
        findings.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn a_licensed_consented_tenant_is_ready_with_its_facts_reported() {
        let (report, conclusion) =
            facts(all_roles(), vec![sku("x", &[ENTRA_ID_P1_PLAN_ID])], None, "migrationComplete")
                .conclude();
        assert_eq!(
            conclusion,
            Conclusion { status: TenantStatus::Ready, reason: None, licence: LicenceLevel::P1 }
        );
        assert!(report.blockers.is_empty(), "{:?}", report.blockers);
        assert_eq!(report.entra_tenant_id.as_deref(), Some(TENANT));
        assert_eq!(report.default_domain.as_deref(), Some("alpha.onmicrosoft.com"));
        assert_eq!(report.users.as_ref().map(|u| (u.total, u.sspr_enabled)), Some((40, 3)));
        let methods = report.methods.unwrap();
        assert_eq!(methods.methods.len(), 3);
        assert_eq!(methods.methods[1].state, "enabled");
        assert_eq!(methods.methods[0].state, "absent");
        assert!(report.licences.unwrap().writeback);
    }

    #[test]
    fn missing_roles_are_named_and_broader_ones_accepted() {
        let mut roles = all_roles();
        roles.retain(|r| r != "AuditLog.Read.All" && r != "Organization.Read.All");
        roles.push("Directory.Read.All".into());
        let (report, conclusion) =
            facts(roles, vec![sku("x", &[ENTRA_ID_P1_PLAN_ID])], None, "migrationComplete")
                .conclude();
        assert_eq!(report.permissions.unwrap().missing, vec!["AuditLog.Read.All".to_owned()]);
        assert_eq!(conclusion.status, TenantStatus::NotReady);
        assert_eq!(conclusion.reason.as_deref(), Some("permission_missing"));
    }

    #[test]
    fn licences_migration_and_hybrid_lead_to_their_codes() {
        let (_, c) = facts(all_roles(), vec![], None, "migrationComplete").conclude();
        assert_eq!(
            (c.status, c.reason.as_deref(), c.licence),
            (TenantStatus::NotReady, Some("license_missing"), LicenceLevel::None)
        );
        let (report, c) = facts(
            all_roles(),
            vec![sku(BUSINESS_STANDARD_SKU_ID, &[])],
            Some(true),
            "migrationComplete",
        )
        .conclude();
        assert_eq!((c.status, c.licence), (TenantStatus::Ready, LicenceLevel::CloudOnly));
        assert_eq!(codes(&report.advisories), vec!["writeback_not_licensed"]);
        let (report, c) =
            facts(all_roles(), vec![sku("x", &[ENTRA_ID_P1_PLAN_ID])], Some(true), "preMigration")
                .conclude();
        assert_eq!(c.reason.as_deref(), Some("migration_incomplete"));
        assert_eq!(codes(&report.advisories), vec!["hybrid_writeback_manual"]);
    }

    #[test]
    fn a_refused_token_makes_the_tenant_unreachable_with_the_mapped_code() {
        let mut f = facts(all_roles(), vec![], None, "migrationComplete");
        f.token = Err(GraphError::Token {
            status: 400,
            error: "unauthorized_client".into(),
            codes: vec![700016],
            description: "AADSTS700016".into(),
        });
        f.organization = None;
        f.skus = None;
        f.methods = None;
        f.admins_allowed = None;
        f.users = None;
        let (report, c) = f.conclude();
        assert_eq!(
            (c.status, c.reason.as_deref(), c.licence),
            (TenantStatus::Unreachable, Some("consent_missing"), LicenceLevel::Unknown)
        );
        assert_eq!(report.token.code.as_deref(), Some("consent_missing"));
        assert!(report.permissions.is_none() && report.probes.is_empty());
    }

    #[test]
    fn without_readable_roles_permissions_are_inferred_from_refusals() {
        let mut f =
            facts(vec![], vec![sku("x", &[ENTRA_ID_P1_PLAN_ID])], None, "migrationComplete");
        f.token = Ok(TokenInfo::default());
        f.admins_allowed = Some(Err(graph_error(403, "Authorization_RequestDenied")));
        f.users =
            Some(Err(graph_error(403, "Authentication_RequestFromNonPremiumTenantOrB2CTenant")));
        let (report, c) = f.conclude();
        let p = report.permissions.unwrap();
        assert_eq!((p.source.as_str(), p.missing), ("probes", vec!["Policy.Read.All".to_owned()]));
        assert_eq!(c.reason.as_deref(), Some("permission_missing"));
        assert!(codes(&report.advisories).contains(&"reports_need_premium"));
        assert!(
            report.probes.iter().any(|p| !p.ok && p.code.as_deref() == Some("permission_missing"))
        );
    }

    #[test]
    fn graph_outages_make_the_tenant_unreachable_not_unready() {
        let mut f = facts(all_roles(), vec![], None, "migrationComplete");
        f.skus = Some(Err(graph_error(503, "serviceNotAvailable")));
        let (_, c) = f.conclude();
        assert_eq!((c.status, c.licence), (TenantStatus::Unreachable, LicenceLevel::Unknown));
        assert_eq!(c.reason.as_deref(), Some("graph_unavailable"));
    }

    #[test]
    fn the_readme_lists_exactly_the_permissions_verification_checks() {
        let readme = include_str!("../../../README.md");
        let section = readme.split("## Microsoft Graph permissions").nth(1).unwrap();
        let section = section.split("\n## ").next().unwrap();
        let table: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split('`').next())
            .collect();
        let required: Vec<&str> = REQUIRED_PERMISSIONS.iter().map(|p| p.name).collect();
        assert_eq!(table, required);
    }
}
