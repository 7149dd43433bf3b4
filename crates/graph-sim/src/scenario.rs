//! Scenarios: the fleet a simulator starts with, written by hand (TOML or JSON) or generated
//! for N tenants with a seeded, realistic mix.
//!
//! ```toml
//! seed = 7
//! [settings]
//! page_size = 100
//! time_speed = 1.0
//! [settings.throttle]
//! scale = 1.0
//!
//! [[tenants]]
//! name = "Contoso"
//! domain = "contoso.onmicrosoft.com"
//! users = 250
//! licence = "business_premium"   # or e3, e5, p1, p2, business_standard, business_basic, none
//! hybrid = true
//! migration_state = "migrationComplete"
//! [tenants.faults]
//! replication_delay_secs = 5
//!
//! [generate]                       # adds N generated tenants after the listed ones
//! count = 25
//! ```
//!
//! The legacy SSPR policy can also be written through the simulated (undocumented) portal
//! endpoint, `PUT /api/PasswordReset/PasswordResetPolicies`, with a delegated token from the v1
//! token endpoint (`POST /{tenant}/oauth2/token`, `grant_type=refresh_token`). Each tenant
//! accepts one refresh token there: `portal_refresh_token` if the tenant sets it, otherwise
//! `sim-portal-rt-<tenant id>` ([`default_portal_refresh_token`]), so tests and the demo can
//! compute it for generated tenants too.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    App, Faults, SimSettings,
    graph::policy_defaults,
    licences::Sku,
    model::{
        AppGrant, Behaviour, Enablement, Group, LegacySspr, NEVER, NEVER_32, Tenant, User, flag,
        method, unit,
    },
};

/// The client id of the app every scenario has unless it lists its own.
pub const DEFAULT_CLIENT_ID: &str = "5f1b6c3e-9a4d-4e2b-8c7f-53535052ff01";
/// The client secret of that app.
pub const DEFAULT_CLIENT_SECRET: &str = "sim~secret~for~sspr-fleet~tests~0001";

/// The application permissions sspr-fleet needs, granted by default.
pub const DEFAULT_ROLES: &[&str] = &[
    "Policy.ReadWrite.AuthenticationMethod",
    "Policy.Read.All",
    "Organization.Read.All",
    "AuditLog.Read.All",
    "Group.ReadWrite.All",
    "GroupMember.ReadWrite.All",
    "User.Read.All",
];

/// A scenario could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The text is not valid TOML or JSON for a scenario.
    #[error("cannot parse the scenario: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid scenario: {0}")]
    Invalid(String),
}

/// A fleet of simulated tenants and the simulator's settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seed of every random choice; the same scenario and seed give the same fleet.
    #[serde(default)]
    pub seed: u64,
    /// Simulated time at start (default: the wall clock when the simulator starts, so that
    /// clients signing assertions with their own clock are in step with it).
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    /// Simulator settings.
    #[serde(default)]
    pub settings: SimSettings,
    /// App registrations; default: one app with [`DEFAULT_CLIENT_ID`] and its secret.
    #[serde(default)]
    pub apps: Vec<AppSpec>,
    /// Tenants written out.
    #[serde(default)]
    pub tenants: Vec<TenantSpec>,
    /// Generated tenants added after `tenants`.
    #[serde(default)]
    pub generate: Option<GenerateSpec>,
}

/// An app registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The application (client) id.
    pub client_id: String,
    /// Valid client secrets.
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Certificates: `x5t#S256` thumbprint (base64url) and the PEM public key.
    #[serde(default)]
    pub certificates: Vec<CertificateSpec>,
}

/// A certificate credential.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateSpec {
    /// Base64url SHA-256 of the DER certificate.
    pub x5t_s256: String,
    /// The public key, PEM.
    pub public_key_pem: String,
}

/// A licence preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Licence {
    /// Microsoft 365 Business Premium (P1).
    #[default]
    BusinessPremium,
    /// Microsoft 365 E3 (P1).
    E3,
    /// Microsoft 365 E5 (P1 and P2).
    E5,
    /// Entra ID P1 alone.
    P1,
    /// Entra ID P2.
    P2,
    /// Microsoft 365 Business Standard (cloud-only SSPR, no P1: no reports).
    BusinessStandard,
    /// Microsoft 365 Business Basic (no SSPR licence).
    BusinessBasic,
    /// No subscriptions.
    None,
}

impl Licence {
    fn part_numbers(self) -> &'static [&'static str] {
        match self {
            Licence::BusinessPremium => &["SPB"],
            Licence::E3 => &["SPE_E3"],
            Licence::E5 => &["SPE_E5"],
            Licence::P1 => &["O365_BUSINESS_PREMIUM", "AAD_PREMIUM"],
            Licence::P2 => &["O365_BUSINESS_PREMIUM", "AAD_PREMIUM_P2"],
            Licence::BusinessStandard => &["O365_BUSINESS_PREMIUM"],
            Licence::BusinessBasic => &["O365_BUSINESS_ESSENTIALS"],
            Licence::None => &[],
        }
    }
}

/// A subscribed SKU written out.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SkuSpec {
    /// e.g. `SPB`.
    pub part_number: String,
    /// Paid seats.
    pub units: u32,
    /// Default `Enabled`.
    #[serde(default)]
    pub capability_status: Option<String>,
    /// Provisioning status of the premium plans; default `Success`.
    #[serde(default)]
    pub plan_status: Option<String>,
}

/// A group present at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Fixed id (default: derived from the seed).
    #[serde(default)]
    pub id: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Members by user index.
    #[serde(default)]
    pub members: Vec<u32>,
}

/// One tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSpec {
    /// Entra tenant id (default: derived from the seed).
    pub id: Option<String>,
    /// Organization name.
    pub name: Option<String>,
    /// Initial domain, `*.onmicrosoft.com` (default: derived from the name).
    pub domain: Option<String>,
    /// Number of users (admins and guests included).
    pub users: u32,
    /// Administrators among them (the first ones).
    pub admins: u32,
    /// Guests among them (the last ones).
    pub guests: u32,
    /// Disabled accounts among the members.
    pub disabled: u32,
    /// Licence preset, unless `skus` is given.
    pub licence: Licence,
    /// Subscriptions written out.
    pub skus: Option<Vec<SkuSpec>>,
    /// `organization.onPremisesSyncEnabled`: true (synced), false (formerly), null (never).
    pub hybrid: Option<bool>,
    /// `policyMigrationState`.
    pub migration_state: String,
    /// Share of users with Authenticator registered before the start (for MFA), among the
    /// members that neither phone share below picks, and among guests.
    pub mfa_registered_share: f64,
    /// Share of member users whose registered methods are only phone methods: `mobilePhone`,
    /// for some also `officePhone` (default 0).
    pub phone_only_share: f64,
    /// Share of member users with exactly one non-phone SSPR method (Authenticator or email)
    /// and a phone method (default 0).
    pub phone_mixed_share: f64,
    /// Method states at start, by id (`sms = "enabled"`).
    pub methods: BTreeMap<String, String>,
    /// Groups at start.
    pub groups: Vec<GroupSpec>,
    /// The legacy SSPR policy at start.
    pub legacy: LegacySspr,
    /// `authorizationPolicy.allowedToUseSSPR` at start: whether administrators may use SSPR
    /// (default true; hardening baselines set it to false).
    pub allowed_to_use_sspr: Option<bool>,
    /// How users behave over time.
    pub behaviour: Behaviour,
    /// Whether the default app is consented in this tenant.
    pub consented: bool,
    /// Application permissions granted (default: [`DEFAULT_ROLES`]).
    pub roles: Option<Vec<String>>,
    /// Faults at start.
    pub faults: Faults,
    /// The refresh token the portal's v1 token endpoint accepts for this tenant (default
    /// `sim-portal-rt-<tenant id>`, see [`default_portal_refresh_token`]).
    pub portal_refresh_token: Option<String>,
}

/// The refresh token a tenant accepts at the portal's token endpoint when its scenario sets
/// none: `sim-portal-rt-<tenant id>`.
pub fn default_portal_refresh_token(tenant_id: &str) -> String {
    format!("sim-portal-rt-{tenant_id}")
}

impl Default for TenantSpec {
    fn default() -> Self {
        Self {
            id: None,
            name: None,
            domain: None,
            users: 50,
            admins: 2,
            guests: 0,
            disabled: 0,
            licence: Licence::BusinessPremium,
            skus: None,
            hybrid: None,
            migration_state: "migrationComplete".into(),
            mfa_registered_share: 0.3,
            phone_only_share: 0.0,
            phone_mixed_share: 0.0,
            methods: BTreeMap::new(),
            groups: Vec::new(),
            legacy: LegacySspr::default(),
            allowed_to_use_sspr: None,
            behaviour: Behaviour::default(),
            consented: true,
            roles: None,
            faults: Faults::default(),
            portal_refresh_token: None,
        }
    }
}

/// Generated tenants: a realistic, seeded mix of sizes, licences, hybrid and readiness.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateSpec {
    /// How many tenants.
    pub count: u32,
    /// Fewest users in a tenant.
    pub min_users: u32,
    /// Most users in a tenant (sizes are log-uniform in between).
    pub max_users: u32,
    /// Share of tenants whose consent is missing.
    pub consent_missing_share: f64,
    /// Faults every generated tenant gets.
    pub faults: Faults,
    /// Behaviour of every generated tenant.
    pub behaviour: Behaviour,
}

impl Default for GenerateSpec {
    fn default() -> Self {
        Self {
            count: 25,
            min_users: 20,
            max_users: 2000,
            consent_missing_share: 0.04,
            faults: Faults::default(),
            behaviour: Behaviour::default(),
        }
    }
}

const NAMES: &[&str] = &[
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Tailspin",
    "Woodgrove",
    "Litware",
    "Adatum",
    "Proseware",
    "Lucerne",
    "Wingtip",
    "Alpine",
    "Coho",
    "Relecloud",
    "Trey",
    "Humongous",
    "Margie",
    "Fourth Coffee",
    "Blue Yonder",
    "Graphic Design",
    "Southridge",
];

/// A GUID derived from the seed and a purpose.
fn guid(seed: u64, index: u32, purpose: &str) -> String {
    let a = (unit(seed, index, purpose) * 4_294_967_295.0) as u64;
    let b = (unit(seed, index, &format!("{purpose}/b")) * 65_535.0) as u64;
    let c = (unit(seed, index, &format!("{purpose}/c")) * 4095.0) as u64;
    let d = (unit(seed, index, &format!("{purpose}/d")) * 4095.0) as u64;
    let e = (unit(seed, index, &format!("{purpose}/e")) * 281_474_976_710_655.0) as u64;
    format!("{a:08x}-{b:04x}-4{c:03x}-a{d:03x}-{e:012x}")
}

impl Scenario {
    /// Reads a scenario from TOML or JSON text (JSON if it starts with `{`).
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))
        } else {
            toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))
        }
    }

    /// A scenario of `count` generated tenants.
    pub fn generated(count: u32, seed: u64) -> Self {
        Self {
            seed,
            generate: Some(GenerateSpec { count, ..Default::default() }),
            ..Default::default()
        }
    }

    pub(crate) fn start_time(&self) -> DateTime<Utc> {
        self.start.unwrap_or_else(|| {
            DateTime::from_timestamp(Utc::now().timestamp(), 0).unwrap_or_default()
        })
    }

    fn all_specs(&self) -> Vec<TenantSpec> {
        let mut specs = self.tenants.clone();
        if let Some(g) = &self.generate {
            for i in 0..g.count {
                specs.push(generate_one(self.seed, i, g));
            }
        }
        specs
    }

    pub(crate) fn faults_per_tenant(&self, tenants: &[Tenant]) -> Vec<Faults> {
        let specs = self.all_specs();
        tenants
            .iter()
            .enumerate()
            .map(|(i, _)| specs.get(i).map(|s| s.faults.clone()).unwrap_or_default())
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn build(&self) -> Result<(Vec<Tenant>, Vec<App>), ScenarioError> {
        self.build_at(self.start_time())
    }

    pub(crate) fn build_at(
        &self,
        start: DateTime<Utc>,
    ) -> Result<(Vec<Tenant>, Vec<App>), ScenarioError> {
        let start = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let apps: Vec<App> = if self.apps.is_empty() {
            vec![App {
                client_id: DEFAULT_CLIENT_ID.into(),
                secrets: vec![DEFAULT_CLIENT_SECRET.into()],
                certificates: Vec::new(),
            }]
        } else {
            self.apps
                .iter()
                .map(|a| App {
                    client_id: a.client_id.clone(),
                    secrets: a.secrets.clone(),
                    certificates: a
                        .certificates
                        .iter()
                        .map(|c| (c.x5t_s256.clone(), c.public_key_pem.clone()))
                        .collect(),
                })
                .collect()
        };
        let mut tenants = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, spec) in self.all_specs().iter().enumerate() {
            let t = build_tenant(self.seed, i as u32, spec, &apps, &start)?;
            for key in std::iter::once(&t.id).chain(&t.domains) {
                if !seen.insert(key.to_ascii_lowercase()) {
                    return Err(ScenarioError::Invalid(format!(
                        "tenant id or domain {key} appears twice"
                    )));
                }
            }
            tenants.push(t);
        }
        Ok((tenants, apps))
    }
}

fn generate_one(seed: u64, i: u32, g: &GenerateSpec) -> TenantSpec {
    let u = |purpose: &str| unit(seed, i, purpose);
    let (lo, hi) = (f64::from(g.min_users.max(1)), f64::from(g.max_users.max(g.min_users.max(1))));
    let users = (lo * (hi / lo).powf(u("size"))).round() as u32;
    let licence = match u("licence") {
        x if x < 0.55 => Licence::BusinessPremium,
        x if x < 0.68 => Licence::E3,
        x if x < 0.75 => Licence::E5,
        x if x < 0.80 => Licence::P1,
        x if x < 0.92 => Licence::BusinessStandard,
        _ => Licence::BusinessBasic,
    };
    let hybrid = match u("hybrid") {
        x if x < 0.3 => Some(true),
        x if x < 0.4 => Some(false),
        _ => None,
    };
    let migration_state = match u("migration") {
        x if x < 0.75 => "migrationComplete",
        x if x < 0.95 => "migrationInProgress",
        _ => "preMigration",
    };
    let legacy = if u("legacy") < 0.12 {
        LegacySspr { enablement: Enablement::All, ..Default::default() }
    } else {
        LegacySspr::default()
    };
    let name = format!("{} {:03}", NAMES[(i as usize) % NAMES.len()], i);
    let mut methods = BTreeMap::new();
    if u("sms") < 0.3 {
        methods.insert("sms".into(), "enabled".into());
    }
    TenantSpec {
        name: Some(name),
        users,
        admins: (users / 100).clamp(1, 10),
        guests: users / 20,
        disabled: users / 25,
        licence,
        hybrid,
        migration_state: migration_state.into(),
        mfa_registered_share: 0.1 + 0.6 * u("mfa"),
        // Phone dependence before the retirement of SMS and voice for SSPR.
        phone_only_share: 0.1 + 0.15 * u("phone_only"),
        phone_mixed_share: 0.2 + 0.15 * u("phone_mixed"),
        methods,
        legacy,
        // Hardening baselines switch administrators' SSPR off.
        allowed_to_use_sspr: (u("admin_sspr") < 0.3).then_some(false),
        behaviour: g.behaviour.clone(),
        consented: u("consent") >= g.consent_missing_share,
        faults: g.faults.clone(),
        ..Default::default()
    }
}

/// The methods a member user registered before the start when `phone_only_share` or
/// `phone_mixed_share` picks it: only phone methods (`mobilePhone`, a third of them also
/// `officePhone`), or one non-phone method (Authenticator for 70 %, email otherwise) and
/// `mobilePhone`. None for the other users.
fn phone_class(tenant_seed: u64, u: u32, spec: &TenantSpec) -> Option<u8> {
    if spec.phone_only_share <= 0.0 && spec.phone_mixed_share <= 0.0 {
        return None;
    }
    let draw = unit(tenant_seed, u, "phone-class");
    if draw < spec.phone_only_share {
        let office = unit(tenant_seed, u, "office-phone") < 1.0 / 3.0;
        Some(method::MOBILE_PHONE | if office { method::OFFICE_PHONE } else { 0 })
    } else if draw < spec.phone_only_share + spec.phone_mixed_share {
        let other = if unit(tenant_seed, u, "mixed-other") < 0.7 {
            method::AUTHENTICATOR
        } else {
            method::EMAIL
        };
        Some(other | method::MOBILE_PHONE)
    } else {
        None
    }
}

fn build_tenant(
    seed: u64,
    i: u32,
    spec: &TenantSpec,
    apps: &[App],
    start: &str,
) -> Result<Tenant, ScenarioError> {
    if spec.admins + spec.guests > spec.users {
        return Err(ScenarioError::Invalid(format!("tenant {i}: admins and guests exceed users")));
    }
    let share_ok = |x: f64| (0.0..=1.0).contains(&x);
    if !share_ok(spec.phone_only_share)
        || !share_ok(spec.phone_mixed_share)
        || spec.phone_only_share + spec.phone_mixed_share > 1.0
    {
        return Err(ScenarioError::Invalid(format!(
            "tenant {i}: phone_only_share and phone_mixed_share must be in [0, 1] and add up to at most 1"
        )));
    }
    if !matches!(
        spec.migration_state.as_str(),
        "preMigration" | "migrationInProgress" | "migrationComplete"
    ) {
        return Err(ScenarioError::Invalid(format!(
            "tenant {i}: unknown migration_state {}",
            spec.migration_state
        )));
    }
    let tenant_seed = u64::from_le_bytes(
        <[u8; 8]>::try_from(
            &sha2::Digest::finalize(sha2::Digest::chain_update(
                sha2::Sha256::default(),
                format!("{seed}/{i}"),
            ))[..8],
        )
        .unwrap_or_default(),
    );
    let id = spec.id.clone().unwrap_or_else(|| guid(seed, i, "tenant"));
    let name = spec.name.clone().unwrap_or_else(|| format!("Tenant {i:03}"));
    let domain = spec.domain.clone().unwrap_or_else(|| {
        let slug: String = name
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase();
        format!("{slug}.onmicrosoft.com")
    });
    let n = spec.users;
    let members_end = n - spec.guests;
    let users: Vec<User> = (0..n)
        .map(|u| {
            let mut flags = 0;
            if u < spec.admins {
                flags |= flag::ADMIN;
            }
            if u >= members_end {
                flags |= flag::GUEST;
            } else if spec.hybrid == Some(true) {
                flags |= flag::SYNCED;
            }
            if u >= spec.admins && u < members_end && u >= members_end.saturating_sub(spec.disabled)
            {
                flags |= flag::DISABLED;
            }
            let mut base = if unit(tenant_seed, u, "mfa") < spec.mfa_registered_share {
                method::AUTHENTICATOR
            } else {
                0
            };
            if flags & flag::GUEST == 0
                && let Some(phone_base) = phone_class(tenant_seed, u, spec)
            {
                base = phone_base;
                flags |= flag::PHONE_CLASS;
            }
            User {
                flags,
                base_methods: base,
                prompted_at: NEVER,
                enabled_at: NEVER,
                nudged_at: NEVER_32,
            }
        })
        .collect();
    let skus = match &spec.skus {
        Some(list) => list
            .iter()
            .map(|s| {
                let mut sku = Sku::by_part_number(&s.part_number, s.units).ok_or_else(|| {
                    ScenarioError::Invalid(format!("unknown SKU {}", s.part_number))
                })?;
                if let Some(c) = &s.capability_status {
                    sku.capability_status = c.clone();
                }
                if let Some(p) = &s.plan_status {
                    sku.plan_status = p.clone();
                }
                Ok(sku)
            })
            .collect::<Result<Vec<_>, ScenarioError>>()?,
        None => spec
            .licence
            .part_numbers()
            .iter()
            .filter_map(|p| Sku::by_part_number(p, n.max(1)))
            .collect(),
    };
    let mut t = Tenant {
        id: id.clone(),
        display_name: name,
        domains: vec![domain],
        seed: tenant_seed,
        users,
        groups: Vec::new(),
        methods_policy: policy_defaults::default_policy(&spec.migration_state, start),
        method_configs: policy_defaults::default_configs(&spec.methods),
        authorization_policy: policy_defaults::default_authorization(),
        on_premises_sync_enabled: spec.hybrid,
        skus,
        legacy: LegacySspr::default(),
        portal_extra: serde_json::Map::new(),
        portal_refresh_token: spec
            .portal_refresh_token
            .clone()
            .unwrap_or_else(|| default_portal_refresh_token(&id)),
        audits: Vec::new(),
        behaviour: spec.behaviour.clone(),
        enabled_members: Vec::new(),
        grants: apps
            .iter()
            .map(|a| AppGrant {
                client_id: a.client_id.clone(),
                consented: spec.consented,
                roles: spec
                    .roles
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect())
                    .into_iter()
                    .collect(),
            })
            .collect(),
    };
    for (gi, g) in spec.groups.iter().enumerate() {
        if let Some(bad) = g.members.iter().find(|&&m| m >= n) {
            return Err(ScenarioError::Invalid(format!(
                "tenant {i}: group member {bad} is not a user"
            )));
        }
        t.groups.push(Group {
            id: g.id.clone().unwrap_or_else(|| guid(tenant_seed, gi as u32, "group")),
            display_name: g.display_name.clone(),
            mail_nickname: g.display_name.chars().filter(char::is_ascii_alphanumeric).collect(),
            description: None,
            mail_enabled: false,
            security_enabled: true,
            group_types: Vec::new(),
            membership_rule: None,
            processing_state: None,
            created_at_ms: -86_400_000,
            visible_at_ms: i64::MIN,
            members: g.members.iter().copied().collect(),
        });
    }
    if spec.legacy.enablement == Enablement::Selected
        && spec.legacy.group_id.as_deref().and_then(|g| t.group(g)).is_none()
    {
        return Err(ScenarioError::Invalid(format!(
            "tenant {i}: legacy.group_id names no group of the tenant"
        )));
    }
    t.legacy = spec.legacy.clone();
    if let Some(allowed) = spec.allowed_to_use_sspr {
        t.authorization_policy.insert("allowedToUseSSPR".into(), allowed.into());
    }
    // Users already in scope at start were prompted long ago: most have registered.
    let long_ago = -((spec.behaviour.registration_delay_hours * 3600.0 * 6.0) as i64) - 86_400;
    t.refresh_scope(long_ago);
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_is_deterministic_and_mixed() {
        let a = Scenario::generated(40, 9).build().unwrap().0;
        let b = Scenario::generated(40, 9).build().unwrap().0;
        assert_eq!(
            a.iter().map(|t| &t.id).collect::<Vec<_>>(),
            b.iter().map(|t| &t.id).collect::<Vec<_>>()
        );
        assert!(a.iter().any(|t| t.has_premium()) && a.iter().any(|t| !t.has_premium()));
        assert!(a.iter().any(|t| t.on_premises_sync_enabled == Some(true)));
        let sizes: Vec<usize> = a.iter().map(|t| t.users.len()).collect();
        assert!(sizes.iter().min() < sizes.iter().max());
    }

    #[test]
    fn the_documented_example_scenario_is_valid() {
        let doc = include_str!("../../../docs/graph-sim.md");
        let section = doc.split("## Scenarios").nth(1).unwrap();
        let block = section.split("```toml").nth(1).unwrap().split("```").next().unwrap();
        let scenario = Scenario::parse(block).unwrap();
        let (tenants, apps) = scenario.build().unwrap();
        assert_eq!(tenants.len(), 1 + 25);
        assert_eq!(apps.len(), 1);
        assert_eq!(tenants[0].groups.len(), 1);
        assert_eq!(scenario.faults_per_tenant(&tenants)[0].latency_ms, (50, 100));
    }

    /// Methods at `now` of the member users `which` picks, classified: (members, phone only,
    /// one non-phone method and a phone method).
    fn classes_of(t: &Tenant, now: i64, which: impl Fn(&User) -> bool) -> (usize, usize, usize) {
        let (mut members, mut only, mut mixed) = (0, 0, 0);
        for i in 0..t.users.len() as u32 {
            if t.users[i as usize].flags & flag::GUEST != 0 || !which(&t.users[i as usize]) {
                continue;
            }
            members += 1;
            let m = t.methods_at(i, now);
            let phones = m & method::PHONES;
            let others = m & !method::PHONES;
            if phones != 0 && others == 0 {
                only += 1;
            }
            if phones != 0 && others.count_ones() == 1 {
                mixed += 1;
            }
        }
        (members, only, mixed)
    }

    /// [`classes_of`] every member user.
    fn phone_classes(t: &Tenant, now: i64) -> (usize, usize, usize) {
        classes_of(t, now, |_| true)
    }

    fn one_tenant(extra: &str) -> Tenant {
        let text = format!(
            "seed = 5\n[[tenants]]\nusers = 1000\nadmins = 10\nguests = 100\nmfa_registered_share = 0.3\n{extra}"
        );
        Scenario::parse(&text).unwrap().build().unwrap().0.remove(0)
    }

    #[test]
    fn phone_only_and_mixed_shares_shape_the_members_methods() {
        // Defaults: nobody registered a phone method before the start.
        // (Administrators are prompted at sign-in: leave them out.)
        let non_admin = |u: &User| u.flags & flag::ADMIN == 0;
        let t = one_tenant("");
        assert_eq!(classes_of(&t, 0, non_admin), (890, 0, 0));
        assert!(t.users.iter().all(|u| u.flags & flag::PHONE_CLASS == 0));

        let t = one_tenant("phone_only_share = 0.5\n");
        let (members, only, mixed) = classes_of(&t, 0, non_admin);
        assert!((400..=490).contains(&only), "about half of {members} members: {only}");
        assert_eq!(mixed, 0);
        assert!(
            t.users.iter().any(|u| u.base_methods == method::PHONES),
            "some also registered an office phone"
        );
        // Guests are never phone-class.
        assert!(t.users[900..].iter().all(|u| u.flags & flag::PHONE_CLASS == 0));

        let t = one_tenant("phone_only_share = 0.2\nphone_mixed_share = 0.3\n");
        let (_, only, mixed) = classes_of(&t, 0, non_admin);
        assert!((140..=220).contains(&only), "{only}");
        assert!((230..=310).contains(&mixed), "{mixed}");
        let with_email = t
            .users
            .iter()
            .filter(|u| u.base_methods == method::EMAIL | method::MOBILE_PHONE)
            .count();
        assert!(with_email > 30, "the non-phone method is sometimes email: {with_email}");

        for bad in ["phone_only_share = 1.5\n", "phone_only_share = 0.6\nphone_mixed_share = 0.6\n"]
        {
            let text = format!("[[tenants]]\nusers = 10\n{bad}");
            assert!(Scenario::parse(&text).unwrap().build().is_err(), "{bad}");
        }
    }

    #[test]
    fn phone_users_prompted_at_sign_in_stay_phone_users_and_a_campaign_cures_them() {
        // SSPR for everyone with registration at sign-in since long before the start.
        let t = one_tenant(
            "phone_only_share = 0.3\nphone_mixed_share = 0.3\nlegacy = { enablement = \"all\" }\n",
        );
        let phone_class = |u: &User| u.flags & flag::PHONE_CLASS != 0;
        let (picked, only, mixed) = classes_of(&t, 0, phone_class);
        assert_eq!(only + mixed, picked, "prompting adds no methods to phone-class users");
        assert!((220..=320).contains(&only), "{only}");
        assert!((220..=320).contains(&mixed), "{mixed}");

        // A registration campaign for all users, then a month.
        let mut t = t;
        let campaign = serde_json::json!({"authenticationMethodsRegistrationCampaign": {
            "state": "enabled", "snoozeDurationInDays": 1, "excludeTargets": [],
            "includeTargets": [{"id": "all_users", "targetType": "group", "targetedAuthenticationMethod": "microsoftAuthenticator"}]}});
        t.methods_policy.insert("registrationEnforcement".into(), campaign);
        t.refresh_scope(0);
        let month = 30 * 86_400;
        let (_, only_after, _) = classes_of(&t, month, phone_class);
        let share = t.behaviour.registration_share;
        let expected = (only as f64 * (1.0 - share)).round() as usize;
        assert!(
            only_after.abs_diff(expected) <= 15,
            "{only} → {only_after}, expected ≈ {expected}"
        );
        for i in 0..t.users.len() as u32 {
            let user = t.users[i as usize];
            if user.flags & flag::PHONE_CLASS != 0 {
                let registers = unit(t.seed, i, "registers") < share;
                assert_eq!(
                    t.methods_at(i, month) & method::AUTHENTICATOR != 0,
                    registers || user.base_methods & method::AUTHENTICATOR != 0,
                    "user {i}"
                );
                assert_eq!(
                    t.methods_at(i, 0) & !method::AUTHENTICATOR,
                    user.base_methods & !method::AUTHENTICATOR
                );
            }
        }
    }

    #[test]
    fn a_user_still_takes_24_bytes() {
        assert_eq!(std::mem::size_of::<User>(), 24);
    }

    #[test]
    fn generated_tenants_have_seeded_phone_shares() {
        let scenario = Scenario::generated(30, 4);
        let specs = scenario.all_specs();
        for spec in &specs {
            assert!((0.1..=0.25).contains(&spec.phone_only_share), "{}", spec.phone_only_share);
            assert!((0.2..=0.35).contains(&spec.phone_mixed_share), "{}", spec.phone_mixed_share);
        }
        assert!(specs.windows(2).any(|w| w[0].phone_only_share != w[1].phone_only_share));
        let tenants = scenario.build().unwrap().0;
        let big = tenants.iter().max_by_key(|t| t.users.len()).unwrap();
        let (members, only, mixed) = phone_classes(big, 0);
        assert!(only * 20 > members && mixed * 10 > members, "{members} {only} {mixed}");
    }

    #[test]
    fn toml_scenarios_parse_and_bad_ones_are_refused() {
        let s = Scenario::parse(
            "seed = 3\n[[tenants]]\nname = \"Contoso\"\nusers = 10\nlicence = \"e5\"\nhybrid = true\n[tenants.faults]\nreplication_delay_secs = 4\n",
        )
        .unwrap();
        let (tenants, _) = s.build().unwrap();
        assert_eq!(tenants[0].domains[0], "contoso.onmicrosoft.com");
        assert_eq!(s.faults_per_tenant(&tenants)[0].replication_delay_secs, 4);
        assert!(Scenario::parse("[[tenants]]\nusers = 2\nadmins = 5\n").unwrap().build().is_err());
        assert!(Scenario::parse("nonsense = 1\n").is_err());
    }
}
