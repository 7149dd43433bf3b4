//! What a rollout stage changes in a tenant's authentication methods policy: the difference
//! between what the tenant has and what the stage wants, computed without IO so that a plan,
//! a dry run and the step that applies it all agree.
//!
//! Two rules keep a rollout from breaking what a tenant already relies on:
//! - targets are only ever widened, never narrowed: a method enabled for everyone (say SMS for
//!   MFA) stays enabled for everyone during the pilot;
//! - a method the policy leaves off (`sms: false`) is not managed: it stays as found, because
//!   turning a method off tenant-wide would also take it away from MFA.

use serde::{Deserialize, Serialize};

use crate::SsprPolicy;

/// The target id Graph uses for every user.
pub const ALL_USERS: &str = "all_users";

/// The methods an SSPR rollout manages.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MethodKey {
    /// Microsoft Authenticator.
    Authenticator,
    /// SMS.
    Sms,
    /// Email one-time passcode.
    Email,
}

impl MethodKey {
    /// Every managed method.
    pub const ALL: [MethodKey; 3] = [Self::Authenticator, Self::Sms, Self::Email];
}

/// A method as the tenant has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MethodNow {
    /// Which method.
    pub key: MethodKey,
    /// `state == enabled`.
    pub enabled: bool,
    /// Include target ids (`all_users` or group ids).
    pub targets: Vec<String>,
}

/// A method as a stage wants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MethodChange {
    /// Which method.
    pub key: MethodKey,
    /// As found.
    pub before: MethodNow,
    /// As it will be.
    pub after: MethodNow,
    /// For Authenticator: the mode of the targets this change adds.
    pub authenticator_mode: Option<String>,
}

/// The registration campaign as the tenant has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignNow {
    /// `state == enabled`.
    pub enabled: bool,
    /// Include target ids.
    pub targets: Vec<String>,
    /// Snooze days.
    pub snooze_days: u8,
}

/// A change to the campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CampaignChange {
    /// As found.
    pub before: CampaignNow,
    /// As it will be.
    pub after: CampaignNow,
}

/// Which stage of the per-tenant rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "stage")]
pub enum Stage {
    /// Methods and campaign targeted at the scope group.
    Pilot {
        /// The scope group's object id.
        group_id: String,
    },
    /// Methods and campaign for every user.
    All,
}

fn wanted(policy: &SsprPolicy, key: MethodKey) -> bool {
    match key {
        MethodKey::Authenticator => policy.methods.authenticator.enabled,
        MethodKey::Sms => policy.methods.sms,
        MethodKey::Email => policy.methods.email,
    }
}

fn covers(targets: &[String], id: &str) -> bool {
    targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS) || t.eq_ignore_ascii_case(id))
}

/// The target list a stage wants, given what is there now.
fn targets_for(now: &MethodNow, stage: &Stage) -> Vec<String> {
    match stage {
        Stage::All => vec![ALL_USERS.to_owned()],
        Stage::Pilot { group_id } if now.enabled => {
            let mut t = now.targets.clone();
            if !covers(&t, group_id) {
                t.push(group_id.clone());
            }
            t
        }
        // A disabled method's old targets are inert; enabling it must not wake them up.
        Stage::Pilot { group_id } => vec![group_id.clone()],
    }
}

/// The method changes a stage makes, in a fixed order; methods already as wanted, and methods
/// the policy does not manage, are left out.
pub fn plan_methods(
    policy: &SsprPolicy,
    current: &[MethodNow],
    stage: &Stage,
) -> Vec<MethodChange> {
    let mut changes = Vec::new();
    for key in MethodKey::ALL {
        if !wanted(policy, key) {
            continue;
        }
        let before = current.iter().find(|m| m.key == key).cloned().unwrap_or(MethodNow {
            key,
            enabled: false,
            targets: Vec::new(),
        });
        let done = match stage {
            Stage::All => {
                before.enabled && before.targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS))
            }
            Stage::Pilot { group_id } => before.enabled && covers(&before.targets, group_id),
        };
        if done {
            continue;
        }
        let after = MethodNow { key, enabled: true, targets: targets_for(&before, stage) };
        let authenticator_mode = (key == MethodKey::Authenticator)
            .then(|| policy.methods.authenticator.mode.graph_value().to_owned());
        changes.push(MethodChange { key, before, after, authenticator_mode });
    }
    changes
}

/// The campaign change a stage makes, if the policy runs a campaign and the tenant's differs.
pub fn plan_campaign(
    policy: &SsprPolicy,
    current: &CampaignNow,
    stage: &Stage,
) -> Option<CampaignChange> {
    let spec = &policy.registration_campaign;
    if !spec.enabled {
        return None;
    }
    let (done, targets) = match stage {
        Stage::All => (
            current.enabled && current.targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS)),
            vec![ALL_USERS.to_owned()],
        ),
        Stage::Pilot { group_id } => {
            let mut t = if current.enabled { current.targets.clone() } else { Vec::new() };
            let covered = covers(&t, group_id);
            if !covered {
                t.push(group_id.clone());
            }
            (current.enabled && covered, t)
        }
    };
    if done && current.snooze_days == spec.snooze_days {
        return None;
    }
    Some(CampaignChange {
        before: current.clone(),
        after: CampaignNow { enabled: true, targets, snooze_days: spec.snooze_days },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(extra: serde_json::Value) -> SsprPolicy {
        let mut base =
            serde_json::json!({"pilot_group": {"name": "SSPR pilot", "members": ["a@b.c"]}});
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap_or_else(|e| panic!("{e}"))
    }

    fn now(key: MethodKey, enabled: bool, targets: &[&str]) -> MethodNow {
        MethodNow { key, enabled, targets: targets.iter().map(|t| (*t).to_owned()).collect() }
    }

    fn pilot() -> Stage {
        Stage::Pilot { group_id: "g1".into() }
    }

    #[test]
    fn the_pilot_enables_methods_for_the_group_only_and_never_narrows() {
        let p = policy(serde_json::json!({}));
        let current = vec![
            now(MethodKey::Authenticator, false, &["old-group"]),
            now(MethodKey::Sms, true, &["all_users"]),
            now(MethodKey::Email, true, &["helpdesk"]),
        ];
        let changes = plan_methods(&p, &current, &pilot());
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(
            changes[0].after,
            now(MethodKey::Authenticator, true, &["g1"]),
            "inert targets stay asleep"
        );
        assert_eq!(changes[0].authenticator_mode.as_deref(), Some("any"));
        assert_eq!(changes[1].after, now(MethodKey::Email, true, &["helpdesk", "g1"]));
        // Applied, the plan is empty: the step is idempotent.
        let applied: Vec<MethodNow> =
            vec![changes[0].after.clone(), current[1].clone(), changes[1].after.clone()];
        assert!(plan_methods(&p, &applied, &pilot()).is_empty());
    }

    #[test]
    fn the_all_stage_moves_every_managed_method_to_all_users() {
        let p = policy(serde_json::json!({"methods": {"sms": false}}));
        let current =
            vec![now(MethodKey::Authenticator, true, &["g1"]), now(MethodKey::Sms, false, &[])];
        let changes = plan_methods(&p, &current, &Stage::All);
        let keys: Vec<MethodKey> = changes.iter().map(|c| c.key).collect();
        assert_eq!(keys, vec![MethodKey::Authenticator, MethodKey::Email], "SMS is not managed");
        assert!(
            changes
                .iter()
                .all(|c| c.after.targets == vec!["all_users".to_owned()] && c.after.enabled)
        );
    }

    #[test]
    fn the_campaign_follows_the_stage_when_the_policy_runs_one() {
        let off = policy(serde_json::json!({}));
        let none = CampaignNow { enabled: false, targets: vec![], snooze_days: 1 };
        assert_eq!(plan_campaign(&off, &none, &pilot()), None);
        let on = policy(
            serde_json::json!({"registration_campaign": {"enabled": true, "snooze_days": 3}}),
        );
        let change = plan_campaign(&on, &none, &pilot()).unwrap();
        assert_eq!(
            change.after,
            CampaignNow { enabled: true, targets: vec!["g1".into()], snooze_days: 3 }
        );
        assert_eq!(plan_campaign(&on, &change.after, &pilot()), None);
        let all = plan_campaign(&on, &change.after, &Stage::All).unwrap();
        assert_eq!(all.after.targets, vec!["all_users".to_owned()]);
        assert_eq!(plan_campaign(&on, &all.after, &Stage::All), None);
    }
}
