//! Graph's answers turned into the domain's view of a tenant's methods and campaign.

use sspr_domain::methods_plan::{CampaignNow, MethodKey, MethodNow};
use sspr_graph::types::{
    AdvancedConfigState, AuthenticationMethodsPolicy, FEATURE_SSPR_ENABLED, MethodId, MethodState,
    ReportPopulation, UserRegistrationDetails, UserRegistrationFeatureSummary,
};

/// The Graph method configuration a domain method key stands for.
pub(crate) fn method_id(key: MethodKey) -> MethodId {
    match key {
        MethodKey::Authenticator => MethodId::MicrosoftAuthenticator,
        MethodKey::Sms => MethodId::Sms,
        MethodKey::Email => MethodId::Email,
    }
}

/// The managed methods as the policy has them (a method missing from the policy is disabled).
pub(crate) fn methods_now(policy: &AuthenticationMethodsPolicy) -> Vec<MethodNow> {
    MethodKey::ALL
        .into_iter()
        .map(|key| match policy.configuration(method_id(key)) {
            Some(c) => MethodNow {
                key,
                enabled: c.state == MethodState::Enabled,
                targets: c.include_targets.iter().map(|t| t.id.clone()).collect(),
                exclude_targets: c.exclude_targets.iter().map(|t| t.id.clone()).collect(),
            },
            None => {
                MethodNow { key, enabled: false, targets: Vec::new(), exclude_targets: Vec::new() }
            }
        })
        .collect()
}

/// The registration campaign as the policy has it.
pub(crate) fn campaign_now(policy: &AuthenticationMethodsPolicy) -> CampaignNow {
    match policy.registration_campaign() {
        Some(c) => CampaignNow {
            enabled: c.state == AdvancedConfigState::Enabled,
            targets: c.include_targets.iter().map(|t| t.id.clone()).collect(),
            exclude_targets: c.exclude_targets.iter().map(|t| t.id.clone()).collect(),
            snooze_days: u8::try_from(c.snooze_duration_in_days.clamp(0, 14)).unwrap_or(0),
        },
        None => CampaignNow {
            enabled: false,
            targets: Vec::new(),
            exclude_targets: Vec::new(),
            snooze_days: 0,
        },
    }
}

/// How far SSPR reaches among the users the tenant's SSPR setting (None/Selected/All)
/// governs: member users who are not administrators. Guests are never enabled by that setting
/// and administrators follow `authorizationPolicy.allowedToUseSSPR` (graph-facts §4, §11), so
/// counting either would hide a tenant that is already at All.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Coverage {
    /// Member, non-administrator users Graph counts.
    pub(crate) users: u64,
    /// Those of them with `isSsprEnabled`.
    pub(crate) enabled: u64,
}

impl Coverage {
    /// The coverage a summary shows; `None` unless it counts exactly the governed population
    /// ([`ReportPopulation::MEMBER_USERS`]): a summary over everyone cannot tell.
    pub(crate) fn of(summary: &UserRegistrationFeatureSummary) -> Option<Self> {
        let population = ReportPopulation::MEMBER_USERS;
        let counts_members = summary.user_types.as_deref() == Some(population.user_types)
            && summary.user_roles.as_deref() == Some(population.user_roles);
        let non_negative = |n: i64| u64::try_from(n).unwrap_or(0);
        counts_members.then(|| Self {
            users: non_negative(summary.total_user_count),
            enabled: non_negative(summary.count(FEATURE_SSPR_ENABLED).unwrap_or(0)),
        })
    }

    /// SSPR is on for All: every governed user is enabled. A tenant with no governed user
    /// (only administrators and guests) is not: the setting cannot be observed there.
    pub(crate) fn is_all(&self) -> bool {
        self.users > 0 && self.enabled >= self.users
    }

    /// SSPR reaches some governed users but not all: only then do the pilot users' own
    /// details decide whether selecting the pilot group would narrow it.
    pub(crate) fn is_partial(&self) -> bool {
        !self.is_all() && self.enabled > 0
    }
}

/// What the pilot stage's scope step (SSPR = Selected, the pilot group) may do in a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScopeDecision {
    /// SSPR already covers every governed user: no scope task, nothing to narrow.
    AlreadyAll,
    /// Selecting the pilot group takes SSPR from nobody.
    Proceed,
    /// Selecting the pilot group would take SSPR from users who have it: `enabled_now`
    /// governed users have it, only `kept` of them are pilot users.
    WouldNarrow {
        /// Governed users SSPR is enabled for now.
        enabled_now: u64,
        /// Of them, pilot users (who keep it).
        kept: u64,
    },
}

/// The code of a tenant where selecting the pilot group would take SSPR from users who have it.
pub(crate) const SCOPE_WOULD_NARROW: &str = "scope_would_narrow";

/// What a `scope_would_narrow` block or failure says.
pub(crate) fn narrowing_message(enabled_now: u64, kept: u64) -> String {
    format!(
        "SSPR is enabled now for {enabled_now} member users; Selected = the pilot group would keep it for {kept} of them and take it from the rest. Add the users SSPR reaches now (its current group) to the pilot, or set SSPR to All, then retry the tenant"
    )
}

/// The rule, written down (docs/rollouts.md, "Never narrowing SSPR"): with coverage unknown
/// (no Entra ID P1/P2, so no reports) the step proceeds and its task tells the technician to
/// leave an All setting alone; at All it is skipped; when nobody is enabled it proceeds;
/// otherwise it proceeds only if every governed user enabled now is a pilot user who is
/// enabled now (`pilot_enabled`, `None` when not read), i.e. the tenant already is at
/// Selected = the pilot group, and else it would narrow.
pub(crate) fn scope_decision(
    coverage: Option<Coverage>,
    pilot_enabled: Option<u64>,
) -> ScopeDecision {
    let Some(c) = coverage else { return ScopeDecision::Proceed };
    if c.is_all() {
        return ScopeDecision::AlreadyAll;
    }
    if c.enabled == 0 {
        return ScopeDecision::Proceed;
    }
    let kept = pilot_enabled.unwrap_or(0);
    if kept >= c.enabled {
        ScopeDecision::Proceed
    } else {
        ScopeDecision::WouldNarrow { enabled_now: c.enabled, kept }
    }
}

/// Whether a pilot user's registration details count as governed and enabled: a member who
/// is not an administrator, with `isSsprEnabled`.
pub(crate) fn governed_and_enabled(d: &UserRegistrationDetails) -> bool {
    let member = d.user_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("member"));
    member && d.is_admin != Some(true) && d.is_sspr_enabled
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn summary(
        types: &str,
        roles: &str,
        total: u64,
        enabled: u64,
    ) -> UserRegistrationFeatureSummary {
        serde_json::from_value(json!({
            "totalUserCount": total, "userTypes": types, "userRoles": roles,
            "userRegistrationFeatureCounts": [{"feature": "ssprEnabled", "userCount": enabled}],
        }))
        .unwrap()
    }

    fn members(total: u64, enabled: u64) -> Option<Coverage> {
        Coverage::of(&summary("member", "user", total, enabled))
    }

    #[test]
    fn only_a_summary_of_member_users_tells_coverage() {
        // Everyone counted: guests (never enabled) and administrators with allowedToUseSSPR
        // false make an All tenant look partial. Such a summary is not used at all.
        assert_eq!(Coverage::of(&summary("all", "all", 120, 100)), None);
        assert_eq!(Coverage::of(&summary("member", "all", 120, 100)), None);
        assert_eq!(members(100, 100), Some(Coverage { users: 100, enabled: 100 }));
    }

    #[test]
    fn all_members_enabled_is_all_whatever_guests_and_admins_do() {
        // Guests present and administrators' SSPR off: neither is in the member-user count.
        assert_eq!(scope_decision(members(100, 100), None), ScopeDecision::AlreadyAll);
        // Disabled member accounts that Graph counts and shows enabled under All.
        assert_eq!(scope_decision(members(104, 104), Some(0)), ScopeDecision::AlreadyAll);
    }

    #[test]
    fn a_tenant_with_only_admins_is_not_all_and_proceeds() {
        assert!(!members(0, 0).unwrap().is_all());
        assert!(!members(0, 0).unwrap().is_partial());
        assert!(members(200, 50).unwrap().is_partial());
        assert!(!members(200, 200).unwrap().is_partial());
        assert_eq!(scope_decision(members(0, 0), None), ScopeDecision::Proceed);
    }

    #[test]
    fn nobody_enabled_proceeds_and_unknown_coverage_proceeds() {
        assert_eq!(scope_decision(members(100, 0), None), ScopeDecision::Proceed);
        assert_eq!(scope_decision(None, None), ScopeDecision::Proceed);
    }

    #[test]
    fn selecting_the_pilot_never_takes_sspr_from_others() {
        // Selected = another group of 50; a pilot of 5, none of them in that group.
        assert_eq!(
            scope_decision(members(200, 50), Some(0)),
            ScopeDecision::WouldNarrow { enabled_now: 50, kept: 0 }
        );
        // Some pilot users are in it, not all of the 50 are pilot users.
        assert_eq!(
            scope_decision(members(200, 50), Some(5)),
            ScopeDecision::WouldNarrow { enabled_now: 50, kept: 5 }
        );
        // Not read: assume nobody is kept.
        assert_eq!(
            scope_decision(members(200, 3), None),
            ScopeDecision::WouldNarrow { enabled_now: 3, kept: 0 }
        );
        // Already Selected = the pilot group (a step run again): every enabled user is a pilot.
        assert_eq!(scope_decision(members(200, 5), Some(5)), ScopeDecision::Proceed);
    }

    #[test]
    fn a_pilot_user_counts_only_as_an_enabled_member_who_is_no_admin() {
        let d = |user_type: &str, admin: bool, enabled: bool| -> UserRegistrationDetails {
            serde_json::from_value(json!({
                "id": "u", "userPrincipalName": "u@x", "userDisplayName": "U",
                "userType": user_type, "isAdmin": admin, "isMfaCapable": false,
                "isMfaRegistered": false, "isPasswordlessCapable": false, "isSsprCapable": false,
                "isSsprEnabled": enabled, "isSsprRegistered": false, "methodsRegistered": [],
            }))
            .unwrap()
        };
        assert!(governed_and_enabled(&d("member", false, true)));
        assert!(!governed_and_enabled(&d("member", false, false)));
        assert!(!governed_and_enabled(&d("guest", false, true)));
        assert!(!governed_and_enabled(&d("member", true, true)));
    }
}
