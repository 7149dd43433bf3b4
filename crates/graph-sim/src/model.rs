//! The state of the simulated tenants. Users are stored compactly (a few bytes each, their
//! names and ids derived from their index) so that thousands of tenants with thousands of
//! users fit in memory.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::licences::Sku;

/// A per-user timestamp (simulated seconds since start) meaning "never".
pub(crate) const NEVER: i64 = i64::MAX;

/// Method bits a user can have registered.
pub(crate) mod method {
    pub(crate) const AUTHENTICATOR: u8 = 1;
    pub(crate) const SOFTWARE_OATH: u8 = 2;
    pub(crate) const MOBILE_PHONE: u8 = 4;
    pub(crate) const EMAIL: u8 = 8;

    /// Names as `userRegistrationDetails.methodsRegistered` shows them.
    pub(crate) const NAMES: [(u8, &str); 4] = [
        (AUTHENTICATOR, "microsoftAuthenticatorPush"),
        (SOFTWARE_OATH, "softwareOneTimePasscode"),
        (MOBILE_PHONE, "mobilePhone"),
        (EMAIL, "email"),
    ];

    /// The methods-policy configuration that allows a registered method for SSPR.
    pub(crate) fn config_id(bit: u8) -> &'static str {
        match bit {
            AUTHENTICATOR => "microsoftauthenticator",
            SOFTWARE_OATH => "softwareoath",
            MOBILE_PHONE => "sms",
            _ => "email",
        }
    }
}

/// User flag bits.
pub(crate) mod flag {
    pub(crate) const DISABLED: u8 = 1;
    pub(crate) const GUEST: u8 = 2;
    pub(crate) const ADMIN: u8 = 4;
    pub(crate) const SYNCED: u8 = 8;
}

/// One user. Everything else about a user (id, names, registration delay, which methods it
/// registers) is derived from its index and the tenant's seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct User {
    pub(crate) flags: u8,
    /// Methods registered before the simulation started.
    pub(crate) base_methods: u8,
    /// When the user was first asked to register for SSPR (register-at-sign-in), or NEVER.
    pub(crate) prompted_at: i64,
    /// When SSPR first became enabled for the user, or NEVER.
    pub(crate) enabled_at: i64,
}

/// The legacy SSPR policy: set in the portal, not through Graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegacySspr {
    /// `none`, `selected` or `all`.
    pub enablement: Enablement,
    /// The group SSPR is enabled for when `enablement` is `selected`.
    #[serde(default)]
    pub group_id: Option<String>,
    /// Number of methods required to reset (1 or 2).
    #[serde(default = "default_methods_required")]
    pub methods_required: u8,
    /// Require users to register when signing in.
    #[serde(default = "yes")]
    pub register_on_sign_in: bool,
    /// Days before users are asked to re-confirm (0 = never).
    #[serde(default = "default_reconfirm")]
    pub reconfirm_days: u32,
    /// Security questions allowed as a method.
    #[serde(default)]
    pub security_questions: bool,
    /// Password writeback to on-premises AD (only meaningful in hybrid tenants).
    #[serde(default)]
    pub writeback: bool,
    /// Email allowed as a method (counts for users before migration is complete).
    #[serde(default = "yes")]
    pub email: bool,
    /// Mobile phone (SMS and voice) allowed as a method.
    #[serde(default = "yes")]
    pub mobile_phone: bool,
    /// Office phone allowed as a method.
    #[serde(default)]
    pub office_phone: bool,
    /// Authenticator app notifications allowed as a method.
    #[serde(default = "yes")]
    pub mobile_app_notification: bool,
    /// Authenticator app or hardware token codes allowed as a method.
    #[serde(default = "yes")]
    pub mobile_app_code: bool,
    /// Users are notified when their password is reset.
    #[serde(default = "yes")]
    pub notify_users: bool,
    /// All administrators are notified when another administrator resets their password.
    #[serde(default = "yes")]
    pub notify_admins: bool,
}

fn default_methods_required() -> u8 {
    1
}
fn yes() -> bool {
    true
}
fn default_reconfirm() -> u32 {
    180
}

impl Default for LegacySspr {
    fn default() -> Self {
        Self {
            enablement: Enablement::None,
            group_id: None,
            methods_required: 1,
            register_on_sign_in: true,
            reconfirm_days: 180,
            security_questions: false,
            writeback: false,
            email: true,
            mobile_phone: true,
            office_phone: false,
            mobile_app_notification: true,
            mobile_app_code: true,
            notify_users: true,
            notify_admins: true,
        }
    }
}

impl LegacySspr {
    /// Whether the legacy policy allows a registered method (a `method` bit) for SSPR.
    pub(crate) fn allows(&self, bit: u8) -> bool {
        match bit {
            method::AUTHENTICATOR => self.mobile_app_notification || self.mobile_app_code,
            method::SOFTWARE_OATH => self.mobile_app_code,
            method::MOBILE_PHONE => self.mobile_phone,
            method::EMAIL => self.email,
            _ => false,
        }
    }

    /// How many methods the policy offers users (security questions included).
    pub(crate) fn methods_offered(&self) -> usize {
        [
            self.email,
            self.mobile_phone,
            self.office_phone,
            self.security_questions,
            self.mobile_app_notification,
            self.mobile_app_code,
        ]
        .iter()
        .filter(|on| **on)
        .count()
    }
}

/// Who SSPR is enabled for in the legacy policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Enablement {
    /// Nobody (administrators always have their own SSPR policy).
    None,
    /// Members of one group.
    Selected,
    /// Everyone.
    All,
}

/// A group in a tenant.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) mail_nickname: String,
    pub(crate) description: Option<String>,
    pub(crate) mail_enabled: bool,
    pub(crate) security_enabled: bool,
    pub(crate) group_types: Vec<String>,
    pub(crate) membership_rule: Option<String>,
    /// `On` or `Paused` (dynamic groups; kept as set on a group converted to static).
    pub(crate) processing_state: Option<String>,
    pub(crate) created_at_ms: i64,
    /// Before this (simulated ms) the group is not yet replicated: reads by id answer 404.
    pub(crate) visible_at_ms: i64,
    /// Direct members, by user index. For a dynamic group whose rule processing is paused,
    /// the members the rule had produced when it was paused.
    pub(crate) members: BTreeSet<u32>,
}

impl Group {
    pub(crate) fn is_dynamic(&self) -> bool {
        self.group_types.iter().any(|t| t.eq_ignore_ascii_case("DynamicMembership"))
    }

    /// Whether membership is the rule's evaluation right now (dynamic and not paused).
    pub(crate) fn evaluates_rule(&self) -> bool {
        self.is_dynamic() && self.processing_state.as_deref() != Some("Paused")
    }
}

/// An audit event recorded explicitly (events derived from user state are computed on read).
#[derive(Debug, Clone)]
pub(crate) struct AuditEvent {
    pub(crate) id: String,
    pub(crate) at_secs: i64,
    pub(crate) activity: String,
    pub(crate) user: u32,
    pub(crate) result: &'static str,
}

/// How the tenant's users behave over simulated time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Behaviour {
    /// Mean delay, in simulated hours, between a user being prompted and registering.
    pub registration_delay_hours: f64,
    /// Share of prompted users who ever register.
    pub registration_share: f64,
    /// Share of SSPR-capable users who perform a self-service reset.
    pub reset_share: f64,
    /// Mean delay, in simulated hours, between becoming capable and resetting.
    pub reset_delay_hours: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            registration_delay_hours: 24.0,
            registration_share: 0.9,
            reset_share: 0.2,
            reset_delay_hours: 48.0,
        }
    }
}

/// An app registration's credentials and its consent in one tenant.
#[derive(Debug, Clone)]
pub(crate) struct AppGrant {
    pub(crate) client_id: String,
    pub(crate) consented: bool,
    pub(crate) roles: BTreeSet<String>,
}

/// One simulated tenant.
#[derive(Debug, Clone)]
pub(crate) struct Tenant {
    pub(crate) id: String,
    pub(crate) display_name: String,
    pub(crate) domains: Vec<String>,
    pub(crate) seed: u64,
    pub(crate) users: Vec<User>,
    pub(crate) groups: Vec<Group>,
    pub(crate) methods_policy: Map<String, Value>,
    pub(crate) method_configs: Vec<Map<String, Value>>,
    pub(crate) authorization_policy: Map<String, Value>,
    pub(crate) on_premises_sync_enabled: Option<bool>,
    pub(crate) skus: Vec<Sku>,
    pub(crate) legacy: LegacySspr,
    /// Properties of the portal's `PasswordResetPolicies` object that the model does not use,
    /// as last written through the portal endpoint (given back on reads).
    pub(crate) portal_extra: Map<String, Value>,
    /// The refresh token the portal's token endpoint accepts for this tenant.
    pub(crate) portal_refresh_token: String,
    pub(crate) audits: Vec<AuditEvent>,
    pub(crate) behaviour: Behaviour,
    pub(crate) grants: Vec<AppGrant>,
    /// How many member users (guests excluded) SSPR is enabled for: at the start and after
    /// every change of that number, oldest first, at most [`ENABLED_HISTORY`] entries (the
    /// first is always kept). Tests read it to prove a rollout never narrowed SSPR.
    pub(crate) enabled_members: Vec<u32>,
}

/// Most entries of [`Tenant::enabled_members`].
pub(crate) const ENABLED_HISTORY: usize = 4096;

/// A deterministic pseudo-random number in [0, 1) for (seed, index, purpose).
pub(crate) fn unit(seed: u64, index: u32, purpose: &str) -> f64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(index.to_le_bytes());
    h.update(purpose.as_bytes());
    let d = h.finalize();
    let n = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    (n >> 11) as f64 / (1u64 << 53) as f64
}

/// An exponential delay with the given mean (seconds), deterministic per user and purpose.
fn exp_delay(seed: u64, index: u32, purpose: &str, mean_secs: f64) -> i64 {
    let u = unit(seed, index, purpose).max(1e-12);
    (-u.ln() * mean_secs).round() as i64
}

impl Tenant {
    /// The id of user `index`: a GUID whose first group is the index, unique per tenant.
    pub(crate) fn user_id(&self, index: u32) -> String {
        let s = self.seed;
        format!(
            "{index:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            (s >> 48) & 0xffff,
            (s >> 36) & 0xfff,
            (s >> 24) & 0xfff,
            s & 0xffff_ffff_ffff
        )
    }

    /// The index of the user with `id`, if it is one of this tenant's users.
    pub(crate) fn user_index(&self, id: &str) -> Option<u32> {
        let index = u32::from_str_radix(id.get(..8)?, 16).ok()?;
        (index < self.users.len() as u32 && self.user_id(index).eq_ignore_ascii_case(id))
            .then_some(index)
    }

    /// The index of the user with this id or user principal name.
    pub(crate) fn find_user(&self, id_or_upn: &str) -> Option<u32> {
        if let Some(i) = self.user_index(id_or_upn) {
            return Some(i);
        }
        let (local, domain) = id_or_upn.split_once('@')?;
        if !domain.eq_ignore_ascii_case(self.primary_domain()) {
            return None;
        }
        let digits = local.strip_prefix("admin").or_else(|| local.strip_prefix("user"))?;
        let index: u32 = digits.parse().ok()?;
        (index < self.users.len() as u32 && self.upn(index).eq_ignore_ascii_case(id_or_upn))
            .then_some(index)
    }

    pub(crate) fn primary_domain(&self) -> &str {
        self.domains.first().map_or("", String::as_str)
    }

    pub(crate) fn upn(&self, index: u32) -> String {
        let user = &self.users[index as usize];
        let prefix = if user.flags & flag::ADMIN != 0 { "admin" } else { "user" };
        format!("{prefix}{index:05}@{}", self.primary_domain())
    }

    pub(crate) fn display_name(&self, index: u32) -> String {
        let user = &self.users[index as usize];
        if user.flags & flag::ADMIN != 0 {
            format!("Admin {index}")
        } else {
            format!("User {index}")
        }
    }

    /// Whether the tenant has an Entra ID P1 or P2 plan that is provisioned and paid for.
    pub(crate) fn has_premium(&self) -> bool {
        self.skus.iter().any(Sku::grants_premium)
    }

    pub(crate) fn group(&self, id: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.id.eq_ignore_ascii_case(id))
    }

    /// Whether user `index` is a member of group `id` (dynamic groups evaluate their rule:
    /// every enabled member user, whatever the rule's text).
    pub(crate) fn is_member(&self, group: &Group, index: u32) -> bool {
        if group.evaluates_rule() {
            let user = self.users[index as usize];
            user.flags & (flag::DISABLED | flag::GUEST) == 0
        } else {
            group.members.contains(&index)
        }
    }

    /// Members of a group in index order.
    pub(crate) fn members_of(&self, group: &Group) -> Vec<u32> {
        if group.evaluates_rule() {
            (0..self.users.len() as u32).filter(|&i| self.is_member(group, i)).collect()
        } else {
            group.members.iter().copied().collect()
        }
    }

    /// Whether the legacy policy enables SSPR for the user right now (the `isSsprEnabled`
    /// rule). Guests are never enabled by the users' setting, whatever it is; administrators
    /// are governed by the separate admin policy (`allowedToUseSSPR`, graph-facts §4, §11).
    pub(crate) fn legacy_enables(&self, index: u32) -> bool {
        let user = self.users[index as usize];
        if user.flags & flag::GUEST != 0 {
            return false;
        }
        if user.flags & flag::ADMIN != 0 {
            return self
                .authorization_policy
                .get("allowedToUseSSPR")
                .and_then(Value::as_bool)
                .unwrap_or(true);
        }
        match self.legacy.enablement {
            Enablement::None => false,
            Enablement::All => true,
            Enablement::Selected => self
                .legacy
                .group_id
                .as_deref()
                .and_then(|id| self.group(id))
                .is_some_and(|g| self.is_member(g, index)),
        }
    }

    /// Records prompts and enablement for users who just came into scope. Called after every
    /// change to the legacy policy, group membership or the registration campaign.
    pub(crate) fn refresh_scope(&mut self, now_secs: i64) {
        let campaign = self.campaign_targets();
        let mut enabled_members = 0u32;
        for index in 0..self.users.len() as u32 {
            let enabled = self.legacy_enables(index);
            if enabled && self.users[index as usize].flags & flag::GUEST == 0 {
                enabled_members += 1;
            }
            let nudged = campaign.as_ref().is_some_and(|targets| self.targets_user(targets, index));
            let user = &mut self.users[index as usize];
            if enabled && user.enabled_at == NEVER {
                user.enabled_at = now_secs;
            }
            let prompted = (enabled && self.legacy.register_on_sign_in) || nudged;
            if prompted && user.prompted_at == NEVER {
                user.prompted_at = now_secs;
            }
        }
        if self.enabled_members.last() != Some(&enabled_members) {
            if self.enabled_members.len() >= ENABLED_HISTORY {
                self.enabled_members.remove(1);
            }
            self.enabled_members.push(enabled_members);
        }
    }

    /// The include targets of the registration campaign, when it is enabled.
    fn campaign_targets(&self) -> Option<Vec<Value>> {
        let campaign = self
            .methods_policy
            .get("registrationEnforcement")?
            .get("authenticationMethodsRegistrationCampaign")?;
        (campaign.get("state")?.as_str()? == "enabled").then(|| {
            campaign.get("includeTargets").and_then(Value::as_array).cloned().unwrap_or_default()
        })
    }

    /// Whether a list of `{targetType, id}` targets includes the user.
    pub(crate) fn targets_user(&self, targets: &[Value], index: u32) -> bool {
        targets.iter().any(|t| {
            let id = t.get("id").and_then(Value::as_str).unwrap_or("");
            match t.get("targetType").and_then(Value::as_str) {
                Some("group") if id == "all_users" => true,
                Some("group") => self.group(id).is_some_and(|g| self.is_member(g, index)),
                Some("user") => self.user_index(id) == Some(index),
                _ => false,
            }
        })
    }

    /// Methods registered by user `index` at `now_secs`.
    pub(crate) fn methods_at(&self, index: u32, now_secs: i64) -> u8 {
        let user = self.users[index as usize];
        let mut methods = user.base_methods;
        if user.prompted_at != NEVER {
            let registers = unit(self.seed, index, "registers") < self.behaviour.registration_share;
            let delay = exp_delay(
                self.seed,
                index,
                "reg-delay",
                self.behaviour.registration_delay_hours * 3600.0,
            );
            if registers && now_secs >= user.prompted_at.saturating_add(delay) {
                methods |= self.registered_set(index);
            }
        }
        methods
    }

    /// When user `index` completed SSPR registration, if it has by `now_secs`.
    pub(crate) fn registered_at(&self, index: u32, now_secs: i64) -> Option<i64> {
        let user = self.users[index as usize];
        if user.prompted_at == NEVER
            || unit(self.seed, index, "registers") >= self.behaviour.registration_share
        {
            return None;
        }
        let at = user.prompted_at.saturating_add(exp_delay(
            self.seed,
            index,
            "reg-delay",
            self.behaviour.registration_delay_hours * 3600.0,
        ));
        (at <= now_secs).then_some(at)
    }

    /// The methods a user registers when prompted.
    fn registered_set(&self, index: u32) -> u8 {
        use method::*;
        let u = unit(self.seed, index, "method-mix");
        if u < 0.6 {
            AUTHENTICATOR | MOBILE_PHONE
        } else if u < 0.85 {
            MOBILE_PHONE | EMAIL
        } else {
            AUTHENTICATOR | EMAIL
        }
    }

    /// The method configuration with this id (case-insensitive).
    pub(crate) fn method_config(&self, id: &str) -> Option<&Map<String, Value>> {
        self.method_configs.iter().find(|c| {
            c.get("id").and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(id))
        })
    }

    /// Whether a registered method counts towards SSPR for the user. Before migration the
    /// legacy policy decides; while migration is in progress either policy may allow it (the
    /// legacy one is still honoured); once it is complete, only the methods policy.
    fn method_allowed(&self, bit: u8, index: u32) -> bool {
        let state = self.methods_policy.get("policyMigrationState").and_then(Value::as_str);
        match state {
            Some("migrationComplete") => self.methods_policy_allows(bit, index),
            Some("migrationInProgress") => {
                self.legacy.allows(bit) || self.methods_policy_allows(bit, index)
            }
            _ => self.legacy.allows(bit),
        }
    }

    /// Whether the methods policy enables a method for the user.
    fn methods_policy_allows(&self, bit: u8, index: u32) -> bool {
        let Some(config) = self.method_config(method::config_id(bit)) else { return false };
        let enabled = config.get("state").and_then(Value::as_str) == Some("enabled");
        let include =
            config.get("includeTargets").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let exclude =
            config.get("excludeTargets").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        enabled && self.targets_user(include, index) && !self.targets_user(exclude, index)
    }

    /// The `userRegistrationDetails` of user `index` at `now_secs`.
    pub(crate) fn registration_details(&self, index: u32, now_secs: i64, now: &str) -> Value {
        let user = self.users[index as usize];
        let methods = self.methods_at(index, now_secs);
        let names: Vec<&str> =
            method::NAMES.iter().filter(|(b, _)| methods & b != 0).map(|(_, n)| *n).collect();
        let usable = method::NAMES
            .iter()
            .filter(|(b, _)| methods & b != 0 && self.method_allowed(*b, index))
            .count();
        let sspr_enabled = self.legacy_enables(index);
        let required = if user.flags & flag::ADMIN != 0 {
            2
        } else {
            usize::from(self.legacy.methods_required.max(1))
        };
        let sspr_registered = usable >= required;
        let mfa_registered =
            methods & (method::AUTHENTICATOR | method::SOFTWARE_OATH | method::MOBILE_PHONE) != 0;
        let preferred = if methods & method::AUTHENTICATOR != 0 {
            "push"
        } else if methods & method::MOBILE_PHONE != 0 {
            "sms"
        } else {
            "none"
        };
        json!({
            "id": self.user_id(index),
            "userPrincipalName": self.upn(index),
            "userDisplayName": self.display_name(index),
            "userType": if user.flags & flag::GUEST != 0 { "guest" } else { "member" },
            "isAdmin": user.flags & flag::ADMIN != 0,
            "isSsprEnabled": sspr_enabled,
            "isSsprRegistered": sspr_registered,
            "isSsprCapable": sspr_enabled && sspr_registered,
            "isMfaRegistered": mfa_registered,
            "isMfaCapable": mfa_registered,
            "isPasswordlessCapable": methods & method::AUTHENTICATOR != 0,
            "isSystemPreferredAuthenticationMethodEnabled": false,
            "methodsRegistered": names,
            "systemPreferredAuthenticationMethods": [],
            "userPreferredMethodForSecondaryAuthentication": preferred,
            "lastUpdatedDateTime": now,
        })
    }

    /// Self-service resets derived from user behaviour: (user, time) for capable users who
    /// reset by `now_secs`, in time order.
    pub(crate) fn derived_resets(&self, now_secs: i64) -> Vec<(u32, i64)> {
        let mut resets = Vec::new();
        for index in 0..self.users.len() as u32 {
            let user = self.users[index as usize];
            if user.enabled_at == NEVER
                || unit(self.seed, index, "resets") >= self.behaviour.reset_share
            {
                continue;
            }
            if !self.legacy_enables(index) {
                continue;
            }
            let base_registered = {
                let usable =
                    method::NAMES.iter().filter(|(b, _)| user.base_methods & b != 0).count();
                usable >= usize::from(self.legacy.methods_required.max(1))
            };
            let registered_since = if base_registered {
                Some(user.enabled_at)
            } else {
                self.registered_at(index, now_secs)
            };
            let Some(since) = registered_since else { continue };
            let capable_since = since.max(user.enabled_at);
            let at = capable_since.saturating_add(exp_delay(
                self.seed,
                index,
                "reset-delay",
                self.behaviour.reset_delay_hours * 3600.0,
            ));
            if at <= now_secs {
                resets.push((index, at));
            }
        }
        resets.sort_by_key(|&(i, at)| (at, i));
        resets
    }

    /// The tenant's groups with their member counts, for the control API.
    pub(crate) fn groups_json(&self) -> BTreeMap<String, Value> {
        self.groups
            .iter()
            .map(|g| {
                (g.id.clone(), json!({"displayName": g.display_name, "members": self.members_of(g).len(), "dynamic": g.is_dynamic()}))
            })
            .collect()
    }
}
