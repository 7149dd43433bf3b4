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
        AppGrant, Behaviour, Enablement, Group, LegacySspr, NEVER, Tenant, User, flag, method, unit,
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
    /// Share of users with Authenticator registered before the start (for MFA).
    pub mfa_registered_share: f64,
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
            let base = if unit(tenant_seed, u, "mfa") < spec.mfa_registered_share {
                method::AUTHENTICATOR
            } else {
                0
            };
            User { flags, base_methods: base, prompted_at: NEVER, enabled_at: NEVER }
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
