//! What a rollout stage changes in a tenant's authentication methods policy: the difference
//! between what the tenant has and what the stage wants, computed without IO so that a plan,
//! a dry run and the step that applies it all agree.
//!
//! Two rules keep a rollout from breaking what a tenant already relies on:
//! - targets are only ever widened, never narrowed: a method enabled for everyone (say SMS for
//!   MFA) stays enabled for everyone during the pilot;
//! - a method the policy leaves off (`sms: false`) is not managed: it stays as found, because
//!   turning a method off tenant-wide would also take it away from MFA.
//!
//! The policy's exclusion groups (break-glass and service accounts) are added to the
//! campaign's exclude targets in both stages, next to any the tenant had, and never appear in
//! its include targets. They are added to the managed methods' exclude targets only when the
//! policy asks (`exclude_groups_from_methods`): a group excluded from a method cannot use it.

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
    /// Exclude target ids (groups or users).
    #[serde(default)]
    pub exclude_targets: Vec<String>,
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
    /// Exclude target ids (groups or users): never nudged, whatever the include targets say.
    #[serde(default)]
    pub exclude_targets: Vec<String>,
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

fn names(ids: &[String], id: &str) -> bool {
    ids.iter().any(|t| t.eq_ignore_ascii_case(id))
}

/// `now` with every id of `add` it lacks appended (case-insensitive), in order.
fn with_excludes(now: &[String], add: &[String]) -> Vec<String> {
    let mut out = now.to_vec();
    for id in add {
        if !names(&out, id) {
            out.push(id.clone());
        }
    }
    out
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
    let excludes =
        if policy.exclude_groups_from_methods { policy.exclude_group_ids() } else { Vec::new() };
    for key in MethodKey::ALL {
        if !wanted(policy, key) {
            continue;
        }
        let before = current.iter().find(|m| m.key == key).cloned().unwrap_or(MethodNow {
            key,
            enabled: false,
            targets: Vec::new(),
            exclude_targets: Vec::new(),
        });
        let exclude_targets = with_excludes(&before.exclude_targets, &excludes);
        let targets_done = match stage {
            Stage::All => {
                before.enabled && before.targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS))
            }
            Stage::Pilot { group_id } => before.enabled && covers(&before.targets, group_id),
        };
        if targets_done && exclude_targets.len() == before.exclude_targets.len() {
            continue;
        }
        let targets =
            if targets_done { before.targets.clone() } else { targets_for(&before, stage) };
        let after = MethodNow { key, enabled: true, targets, exclude_targets };
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
    let excludes = policy.exclude_group_ids();
    let (done, targets) = match stage {
        Stage::All => (
            current.enabled && current.targets.iter().any(|t| t.eq_ignore_ascii_case(ALL_USERS)),
            vec![ALL_USERS.to_owned()],
        ),
        Stage::Pilot { group_id } => {
            // An exclusion group the tenant had among the include targets is dropped from them:
            // the campaign never aims at it (the exclusion would win in Entra anyway).
            let mut t: Vec<String> =
                if current.enabled { current.targets.clone() } else { Vec::new() };
            t.retain(|id| !names(&excludes, id));
            let covered = covers(&t, group_id);
            if !covered {
                t.push(group_id.clone());
            }
            (current.enabled && covered && t.len() == current.targets.len(), t)
        }
    };
    let exclude_targets = with_excludes(&current.exclude_targets, &excludes);
    let excluded = exclude_targets.len() == current.exclude_targets.len();
    if done && excluded && current.snooze_days == spec.snooze_days {
        return None;
    }
    Some(CampaignChange {
        before: current.clone(),
        after: CampaignNow {
            enabled: true,
            targets,
            exclude_targets,
            snooze_days: spec.snooze_days,
        },
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
        MethodNow {
            key,
            enabled,
            targets: targets.iter().map(|t| (*t).to_owned()).collect(),
            exclude_targets: Vec::new(),
        }
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
        let none = CampaignNow {
            enabled: false,
            targets: vec![],
            exclude_targets: vec![],
            snooze_days: 1,
        };
        assert_eq!(plan_campaign(&off, &none, &pilot()), None);
        let on = policy(
            serde_json::json!({"registration_campaign": {"enabled": true, "snooze_days": 3}}),
        );
        let change = plan_campaign(&on, &none, &pilot()).unwrap();
        assert_eq!(
            change.after,
            CampaignNow {
                enabled: true,
                targets: vec!["g1".into()],
                exclude_targets: vec![],
                snooze_days: 3
            }
        );
        assert_eq!(plan_campaign(&on, &change.after, &pilot()), None);
        let all = plan_campaign(&on, &change.after, &Stage::All).unwrap();
        assert_eq!(all.after.targets, vec!["all_users".to_owned()]);
        assert_eq!(plan_campaign(&on, &all.after, &Stage::All), None);
    }

    const BREAK_GLASS: &str = "bbbbbbbb-0000-4000-8000-000000000001";
    const SERVICE: &str = "bbbbbbbb-0000-4000-8000-000000000002";

    fn excluding(from_methods: bool) -> SsprPolicy {
        policy(serde_json::json!({
            "methods": {"sms": true},
            "registration_campaign": {"enabled": true, "snooze_days": 1},
            "exclude_groups": [BREAK_GLASS.to_ascii_uppercase(), SERVICE],
            "exclude_groups_from_methods": from_methods,
        }))
    }

    #[test]
    fn the_campaign_excludes_the_exclusion_groups_in_both_stages_keeping_the_tenants() {
        let p = excluding(false);
        let current = CampaignNow {
            enabled: true,
            targets: vec!["helpdesk".into(), SERVICE.into()],
            exclude_targets: vec!["old-exclusion".into(), SERVICE.to_ascii_uppercase()],
            snooze_days: 1,
        };
        let first = plan_campaign(&p, &current, &pilot()).unwrap();
        assert_eq!(
            first.after.exclude_targets,
            vec!["old-exclusion".to_owned(), SERVICE.to_ascii_uppercase(), BREAK_GLASS.to_owned()],
            "the tenant's are kept, ours added once"
        );
        assert_eq!(
            first.after.targets,
            vec!["helpdesk".to_owned(), "g1".to_owned()],
            "an exclusion group is never an include target"
        );
        assert_eq!(plan_campaign(&p, &first.after, &pilot()), None, "idempotent");
        let all = plan_campaign(&p, &first.after, &Stage::All).unwrap();
        assert_eq!(all.after.targets, vec![ALL_USERS.to_owned()]);
        assert_eq!(all.after.exclude_targets, first.after.exclude_targets);
        assert_eq!(plan_campaign(&p, &all.after, &Stage::All), None);
        // A tenant already at all users, whose campaign lacks the exclusions, still gets them.
        let mut missing = all.after.clone();
        missing.exclude_targets = vec![];
        let fix = plan_campaign(&p, &missing, &Stage::All).unwrap();
        assert_eq!(fix.after.exclude_targets, vec![BREAK_GLASS.to_owned(), SERVICE.to_owned()]);
    }

    #[test]
    fn methods_get_the_exclusion_groups_only_when_the_policy_asks() {
        let current = vec![
            now(MethodKey::Authenticator, true, &["all_users"]),
            now(MethodKey::Sms, false, &[]),
            now(MethodKey::Email, true, &["g1"]),
        ];
        let off = plan_methods(&excluding(false), &current, &pilot());
        assert_eq!(off.len(), 1, "{off:?}");
        assert!(off.iter().all(|c| c.after.exclude_targets.is_empty()));
        let on = plan_methods(&excluding(true), &current, &pilot());
        assert_eq!(on.len(), 3, "already targeted methods still get the exclusions: {on:?}");
        let both = vec![BREAK_GLASS.to_owned(), SERVICE.to_owned()];
        assert!(on.iter().all(|c| c.after.exclude_targets == both && c.after.enabled));
        assert_eq!(on[0].after.targets, vec!["all_users".to_owned()], "targets untouched");
        let applied: Vec<MethodNow> = on.iter().map(|c| c.after.clone()).collect();
        assert!(plan_methods(&excluding(true), &applied, &pilot()).is_empty());
        let all = plan_methods(&excluding(true), &applied, &Stage::All);
        assert!(all.iter().all(|c| c.after.exclude_targets == both), "{all:?}");
    }
}
