//! The desired SSPR state of a rollout (its `policy`), checked field by field.
//!
//! What sspr-fleet can set through Graph (methods, their targets, the registration campaign)
//! and what only the legacy SSPR policy holds (methods required, register at sign-in, re-confirm
//! days, security questions) are both part of the desired state: the first is applied, the
//! second becomes the technician's checklist in `manual` scope mode (PRODUCT.md §1).

use serde::{Deserialize, Serialize};

use crate::FieldProblem;

/// Microsoft Authenticator's authentication mode for the include target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthenticatorMode {
    /// Push notifications and passwordless sign-in.
    #[default]
    Any,
    /// Push notifications only.
    Push,
    /// Device-bound passwordless only.
    DeviceBasedPush,
}

impl AuthenticatorMode {
    /// The value Graph uses (`authenticationMode`).
    pub fn graph_value(self) -> &'static str {
        match self {
            Self::Any => "any",
            Self::Push => "push",
            Self::DeviceBasedPush => "deviceBasedPush",
        }
    }
}

/// Microsoft Authenticator in the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthenticatorSpec {
    /// Enable it (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its mode (default `any`).
    #[serde(default)]
    pub mode: AuthenticatorMode,
}

impl Default for AuthenticatorSpec {
    fn default() -> Self {
        Self { enabled: true, mode: AuthenticatorMode::Any }
    }
}

fn yes() -> bool {
    true
}

fn default_methods_required() -> u8 {
    2
}

fn default_reconfirm_days() -> u16 {
    180
}

fn default_snooze_days() -> u8 {
    1
}

/// The methods users may register and reset with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MethodsSpec {
    /// Microsoft Authenticator.
    #[serde(default)]
    pub authenticator: AuthenticatorSpec,
    /// SMS one-time codes (default false: left as found). SMS and voice stop counting for
    /// SSPR on 1 February 2027 unless the tenant has its own telecom provider (graph-facts
    /// §11); a plan that turns SMS on carries a warning saying so.
    #[serde(default)]
    pub sms: bool,
    /// Email one-time codes (default true).
    #[serde(default = "yes")]
    pub email: bool,
    /// Security questions: must stay off (Microsoft advises against them; they exist only in
    /// the legacy policy).
    #[serde(default)]
    pub security_questions: bool,
}

impl Default for MethodsSpec {
    fn default() -> Self {
        Self {
            authenticator: AuthenticatorSpec::default(),
            sms: false,
            email: true,
            security_questions: false,
        }
    }
}

/// The Authenticator registration campaign (a nudge at sign-in).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    /// Run the campaign (default false).
    #[serde(default)]
    pub enabled: bool,
    /// Days a user may postpone, 0 to 14 (default 1; 0 asks at every sign-in).
    #[serde(default = "default_snooze_days")]
    pub snooze_days: u8,
}

impl Default for CampaignSpec {
    fn default() -> Self {
        Self { enabled: false, snooze_days: default_snooze_days() }
    }
}

/// The pilot (scope) group: created with this name, or an existing group by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PilotGroupSpec {
    /// Name of the group sspr-fleet creates (or reuses, if it created it before).
    #[serde(default)]
    pub name: Option<String>,
    /// An existing security group's object id, instead of a name.
    #[serde(default)]
    pub id: Option<String>,
    /// Pilot users, by user principal name or object id. In a user principal name,
    /// `{domain}` after the `@` stands for each tenant's default domain, so one list can name
    /// the same pilot accounts across a fleet (`sspr-pilot@{domain}`).
    #[serde(default)]
    pub members: Vec<String>,
}

/// The placeholder for a tenant's default domain in pilot members.
pub const DOMAIN_PLACEHOLDER: &str = "{domain}";

impl PilotGroupSpec {
    /// The pilot members for a tenant whose default domain is `domain`: the placeholder
    /// replaced. `None` when a member uses the placeholder and the domain is unknown.
    pub fn members_for(&self, domain: Option<&str>) -> Option<Vec<String>> {
        self.members
            .iter()
            .map(|m| {
                let m = m.trim();
                match m.strip_suffix(DOMAIN_PLACEHOLDER) {
                    Some(local) => domain.map(|d| format!("{local}{d}")),
                    None => Some(m.to_owned()),
                }
            })
            .collect()
    }
}

/// How SSPR's own scope ("Selected" = the group) gets set in each tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScopeMode {
    /// A technician sets it in the portal and attests it (no Graph API exists).
    #[default]
    Manual,
    /// The opt-in, unsupported adapter for the portal's undocumented endpoint.
    Portal,
}

/// The desired SSPR state of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SsprPolicy {
    /// The methods.
    #[serde(default)]
    pub methods: MethodsSpec,
    /// Methods required to reset, 1 or 2 (default 2).
    #[serde(default = "default_methods_required")]
    pub methods_required: u8,
    /// Require users to register at sign-in (default true).
    #[serde(default = "yes")]
    pub register_at_sign_in: bool,
    /// Days before users are asked to re-confirm their methods, 0 (never) to 730 (default 180).
    #[serde(default = "default_reconfirm_days")]
    pub reconfirm_days: u16,
    /// The registration campaign.
    #[serde(default)]
    pub registration_campaign: CampaignSpec,
    /// The pilot group.
    pub pilot_group: PilotGroupSpec,
    /// How SSPR's scope is set.
    #[serde(default)]
    pub scope_mode: ScopeMode,
    /// Groups (object ids) the rollout never nudges: break-glass (emergency access) and
    /// service accounts. Always added to the registration campaign's exclude targets, in the
    /// pilot and the all stage; at most 20. Every tenant of the rollout
    /// must have every group (a tenant without one is blocked with `exclude_group_not_found`).
    #[serde(default)]
    pub exclude_groups: Vec<String>,
    /// Also add the exclusion groups to the exclude targets of the methods sspr-fleet manages
    /// (default false). Off by default: a group excluded from a method cannot use it at all,
    /// so excluding a break-glass account from a method it signs in with could lock it out.
    #[serde(default)]
    pub exclude_groups_from_methods: bool,
}

/// Most pilot members one rollout may name.
pub const MAX_PILOT_MEMBERS: usize = 500;

/// Most exclusion groups one rollout may name.
pub(crate) const MAX_EXCLUDE_GROUPS: usize = 20;

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_upn(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && local.len() <= 64
                && (domain.contains('.') || domain == DOMAIN_PLACEHOLDER)
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && s.chars().all(|c| !c.is_whitespace() && !c.is_control())
        }
        None => false,
    }
}

impl SsprPolicy {
    /// The exclusion groups' ids, trimmed, lowercased and without repeats, in their order.
    pub fn exclude_group_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for g in &self.exclude_groups {
            let id = g.trim().to_ascii_lowercase();
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids
    }

    /// Every problem with the policy (`prefix` is the path of the object, e.g. `policy`).
    pub fn problems(&self, prefix: &str) -> Vec<FieldProblem> {
        let f = |name: &str| format!("{prefix}.{name}");
        let mut p = Vec::new();
        let m = &self.methods;
        if m.security_questions {
            p.push(FieldProblem::new(
                f("methods.security_questions"),
                "not_allowed",
                "security questions stay off: they are the weakest method and only the legacy policy has them",
            ));
        }
        let enabled = [m.authenticator.enabled, m.sms, m.email].iter().filter(|e| **e).count();
        if enabled == 0 {
            p.push(FieldProblem::new(f("methods"), "required", "enable at least one method"));
        }
        if !(1..=2).contains(&self.methods_required) {
            p.push(FieldProblem::new(f("methods_required"), "out_of_range", "1 or 2"));
        } else if usize::from(self.methods_required) > enabled {
            p.push(FieldProblem::new(
                f("methods_required"),
                "more_than_enabled",
                format!("{} methods required but only {enabled} enabled", self.methods_required),
            ));
        }
        if self.reconfirm_days > 730 {
            p.push(FieldProblem::new(f("reconfirm_days"), "out_of_range", "0 to 730"));
        }
        if self.registration_campaign.snooze_days > 14 {
            p.push(FieldProblem::new(
                f("registration_campaign.snooze_days"),
                "out_of_range",
                "0 to 14",
            ));
        }
        if self.registration_campaign.enabled && !m.authenticator.enabled {
            p.push(FieldProblem::new(
                f("registration_campaign.enabled"),
                "requires_authenticator",
                "the registration campaign nudges users to Microsoft Authenticator, which is off",
            ));
        }
        let g = &self.pilot_group;
        match (&g.name, &g.id) {
            (None, None) => p.push(FieldProblem::new(
                f("pilot_group"),
                "required",
                "give the group's name (sspr-fleet creates it) or an existing group's id",
            )),
            (Some(_), Some(_)) => p.push(FieldProblem::new(
                f("pilot_group"),
                "ambiguous",
                "give either name or id, not both",
            )),
            (Some(name), None) => {
                let n = name.trim();
                if n.is_empty() || n.chars().count() > 256 || n.chars().any(char::is_control) {
                    p.push(FieldProblem::new(
                        f("pilot_group.name"),
                        "invalid_format",
                        "1 to 256 characters without control characters",
                    ));
                }
            }
            (None, Some(id)) => {
                if !is_guid(&id.trim().to_ascii_lowercase()) {
                    p.push(FieldProblem::new(
                        f("pilot_group.id"),
                        "invalid_format",
                        "the group's object id, a GUID",
                    ));
                }
            }
        }
        if g.members.is_empty() {
            p.push(FieldProblem::new(
                f("pilot_group.members"),
                "required",
                "name at least one pilot user (user principal name or object id)",
            ));
        } else if g.members.len() > MAX_PILOT_MEMBERS {
            p.push(FieldProblem::new(
                f("pilot_group.members"),
                "too_many",
                format!("at most {MAX_PILOT_MEMBERS} pilot users"),
            ));
        }
        for (i, member) in g.members.iter().enumerate() {
            let m = member.trim();
            if !is_guid(&m.to_ascii_lowercase()) && !is_upn(m) {
                p.push(FieldProblem::new(
                    format!("{prefix}.pilot_group.members[{i}]"),
                    "invalid_format",
                    "a user principal name (name@domain) or an object id (GUID)",
                ));
            }
        }
        if self.exclude_groups.len() > MAX_EXCLUDE_GROUPS {
            p.push(FieldProblem::new(
                f("exclude_groups"),
                "too_many",
                format!("at most {MAX_EXCLUDE_GROUPS} exclusion groups"),
            ));
        }
        let pilot_id = g.id.as_deref().map(|id| id.trim().to_ascii_lowercase());
        let mut seen: Vec<String> = Vec::new();
        for (i, group) in self.exclude_groups.iter().enumerate() {
            let id = group.trim().to_ascii_lowercase();
            let field = format!("{prefix}.exclude_groups[{i}]");
            if !is_guid(&id) {
                p.push(FieldProblem::new(field, "invalid_format", "the group's object id, a GUID"));
            } else if seen.contains(&id) {
                p.push(FieldProblem::new(field, "duplicate", "this group is already listed"));
            } else if pilot_id.as_deref() == Some(id.as_str()) {
                p.push(FieldProblem::new(
                    field,
                    "pilot_group_excluded",
                    "the pilot group cannot also be an exclusion group",
                ));
            }
            seen.push(id);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: serde_json::Value) -> SsprPolicy {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn fields(p: &SsprPolicy) -> Vec<(String, &'static str)> {
        p.problems("policy").into_iter().map(|p| (p.field, p.code)).collect()
    }

    #[test]
    fn defaults_follow_the_deployment_guidance() {
        let p = policy(
            serde_json::json!({"pilot_group": {"name": "SSPR pilot", "members": ["a@contoso.com"]}}),
        );
        assert!(fields(&p).is_empty());
        assert!(p.methods.authenticator.enabled && p.methods.email);
        // SMS stops counting for SSPR on 1 February 2027: left as found unless asked for.
        assert!(!p.methods.sms);
        assert!(!p.methods.security_questions);
        assert_eq!((p.methods_required, p.register_at_sign_in, p.reconfirm_days), (2, true, 180));
        assert_eq!(p.scope_mode, ScopeMode::Manual);
        assert!(!p.registration_campaign.enabled);
    }

    #[test]
    fn every_invalid_field_is_named() {
        let p = policy(serde_json::json!({
            "methods": {"authenticator": {"enabled": false}, "sms": true, "email": false, "security_questions": true},
            "methods_required": 2, "reconfirm_days": 1000,
            "registration_campaign": {"enabled": true, "snooze_days": 20},
            "pilot_group": {"name": "x", "id": "11111111-2222-3333-4444-555555555555", "members": ["not a user", "0f0f0f0f-0000-4000-8000-000000000001"]},
        }));
        let got = fields(&p);
        for expected in [
            ("policy.methods.security_questions", "not_allowed"),
            ("policy.methods_required", "more_than_enabled"),
            ("policy.reconfirm_days", "out_of_range"),
            ("policy.registration_campaign.snooze_days", "out_of_range"),
            ("policy.registration_campaign.enabled", "requires_authenticator"),
            ("policy.pilot_group", "ambiguous"),
            ("policy.pilot_group.members[0]", "invalid_format"),
        ] {
            assert!(
                got.contains(&(expected.0.to_owned(), expected.1)),
                "{expected:?} missing from {got:?}"
            );
        }
        assert!(!got.iter().any(|(f, _)| f == "policy.pilot_group.members[1]"));
    }

    #[test]
    fn unknown_fields_and_modes_are_refused() {
        assert!(
            serde_json::from_value::<SsprPolicy>(
                serde_json::json!({"pilot_group": {"name": "g", "members": ["a@b.c"]}, "extra": 1})
            )
            .is_err()
        );
        assert!(serde_json::from_value::<SsprPolicy>(serde_json::json!({"pilot_group": {"name": "g", "members": ["a@b.c"]}, "scope_mode": "magic"})).is_err());
        let p = policy(
            serde_json::json!({"pilot_group": {"id": "11111111-2222-3333-4444-555555555555", "members": ["a@b.c"]}, "scope_mode": "portal"}),
        );
        assert_eq!(p.scope_mode, ScopeMode::Portal);
        assert_eq!(AuthenticatorMode::DeviceBasedPush.graph_value(), "deviceBasedPush");
    }

    #[test]
    fn the_domain_placeholder_is_replaced_per_tenant() {
        let g = PilotGroupSpec {
            name: Some("p".into()),
            id: None,
            members: vec![
                "pilot@{domain}".into(),
                " x@contoso.com ".into(),
                "0f0f0f0f-0000-4000-8000-000000000001".into(),
            ],
        };
        assert_eq!(
            g.members_for(Some("fabrikam.onmicrosoft.com")).unwrap(),
            vec![
                "pilot@fabrikam.onmicrosoft.com",
                "x@contoso.com",
                "0f0f0f0f-0000-4000-8000-000000000001"
            ]
        );
        assert_eq!(g.members_for(None), None);
        let policy: SsprPolicy = serde_json::from_value(
            serde_json::json!({"pilot_group": {"name": "g", "members": ["pilot@{domain}", "a@{other}"]}}),
        )
        .unwrap();
        let got: Vec<String> = policy.problems("policy").into_iter().map(|p| p.field).collect();
        assert_eq!(got, vec!["policy.pilot_group.members[1]".to_owned()]);
    }

    #[test]
    fn exclusion_groups_default_to_none_and_are_checked_one_by_one() {
        let p = policy(serde_json::json!({"pilot_group": {"name": "g", "members": ["a@b.c"]}}));
        assert!(p.exclude_groups.is_empty() && !p.exclude_groups_from_methods);
        let pilot = "11111111-2222-3333-4444-555555555555";
        let p = policy(serde_json::json!({
            "pilot_group": {"id": pilot, "members": ["a@b.c"]},
            "exclude_groups": [
                " AAAAAAAA-0000-4000-8000-000000000001 ", "not-a-guid",
                "aaaaaaaa-0000-4000-8000-000000000001", pilot.to_ascii_uppercase(),
                "aaaaaaaa-0000-4000-8000-000000000002",
            ],
            "exclude_groups_from_methods": true,
        }));
        assert_eq!(
            fields(&p),
            vec![
                ("policy.exclude_groups[1]".to_owned(), "invalid_format"),
                ("policy.exclude_groups[2]".to_owned(), "duplicate"),
                ("policy.exclude_groups[3]".to_owned(), "pilot_group_excluded"),
            ]
        );
        assert!(p.exclude_groups_from_methods);
        assert_eq!(
            p.exclude_group_ids()[..2],
            ["aaaaaaaa-0000-4000-8000-000000000001".to_owned(), "not-a-guid".to_owned()]
        );
        let many: Vec<String> =
            (0..=MAX_EXCLUDE_GROUPS).map(|i| format!("aaaaaaaa-0000-4000-8000-{i:012}")).collect();
        let p = policy(serde_json::json!({
            "pilot_group": {"name": "g", "members": ["a@b.c"]}, "exclude_groups": many,
        }));
        assert_eq!(fields(&p), vec![("policy.exclude_groups".to_owned(), "too_many")]);
        assert!(
            serde_json::from_value::<SsprPolicy>(serde_json::json!({
                "pilot_group": {"name": "g", "members": ["a@b.c"]}, "exclude_groups": "x",
            }))
            .is_err()
        );
    }

    #[test]
    fn a_pilot_needs_a_group_and_members() {
        let p = policy(serde_json::json!({"pilot_group": {}}));
        let got = fields(&p);
        assert!(got.contains(&("policy.pilot_group".to_owned(), "required")));
        assert!(got.contains(&("policy.pilot_group.members".to_owned(), "required")));
    }
}
