//! Graph's answers turned into the domain's view of a tenant's methods and campaign.

use sspr_domain::methods_plan::{CampaignNow, MethodKey, MethodNow};
use sspr_graph::types::{
    AdvancedConfigState, AuthenticationMethodsPolicy, FEATURE_SSPR_ENABLED, MethodId, MethodState,
    UserRegistrationFeatureSummary,
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
            },
            None => MethodNow { key, enabled: false, targets: Vec::new() },
        })
        .collect()
}

/// The registration campaign as the policy has it.
pub(crate) fn campaign_now(policy: &AuthenticationMethodsPolicy) -> CampaignNow {
    match policy.registration_campaign() {
        Some(c) => CampaignNow {
            enabled: c.state == AdvancedConfigState::Enabled,
            targets: c.include_targets.iter().map(|t| t.id.clone()).collect(),
            snooze_days: u8::try_from(c.snooze_duration_in_days.clamp(0, 14)).unwrap_or(0),
        },
        None => CampaignNow { enabled: false, targets: Vec::new(), snooze_days: 0 },
    }
}

/// Whether every user counted already shows `isSsprEnabled` (SSPR is on for All).
pub(crate) fn sspr_on_for_all(summary: &UserRegistrationFeatureSummary) -> bool {
    let enabled = summary.count(FEATURE_SSPR_ENABLED).unwrap_or(0);
    summary.total_user_count > 0 && enabled >= summary.total_user_count
}
