//! A simulated Microsoft Graph v1.0 and Microsoft identity platform token endpoint, for many
//! tenants at once, used by sspr-fleet's tests and its demo.
//!
//! It behaves like Graph for everything sspr-fleet calls: status codes, error bodies, paging,
//! throttling with `Retry-After`, replication delay, licences, and the legacy SSPR policy that
//! Graph cannot set (the control API sets it, as a technician would in the portal).
//!
//! **Invariant:** this crate shares no code or types with the Graph client (`crates/graph`).
//! Both are written from the Graph facts on their own, so a misreading in one is caught by
//! the other. It depends on no other sspr-fleet crate.

mod clock;
mod faults;
mod graph;
mod licences;
mod model;
mod response;
pub mod scenario;
mod server;
mod throttle;
mod token;

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use parking_lot::Mutex;
use rand::{SeedableRng, rngs::StdRng};
use serde_json::Value;

pub use clock::SimClock;
pub use faults::{Faults, ScriptedFault};
pub use licences::{PLAN_P1, PLAN_P2, Sku};
pub use model::{Behaviour, Enablement, LegacySspr};
pub use scenario::{Scenario, ScenarioError};
pub use server::RunningSim;
pub use throttle::ThrottleSettings;

use crate::{model::Tenant, throttle::Throttle, token::IssuedToken};

/// Settings of the whole simulator.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimSettings {
    /// Items per page for collections (`userRegistrationDetails`, users, members, audits).
    pub page_size: usize,
    /// Lifetime of issued access tokens, in simulated seconds.
    pub token_lifetime_secs: i64,
    /// Speed of simulated time relative to wall time (0 freezes it; tests advance it).
    pub time_speed: f64,
    /// Throttling limits.
    pub throttle: ThrottleSettings,
    /// Whether `PATCH` of the methods policy accepts properties other than
    /// `registrationEnforcement` (v1.0 documents only that one; unverified either way).
    pub policy_patch_any_property: bool,
    /// Status answered to a successful `PATCH` of the methods policy: 200 with the policy
    /// (documented) or 204.
    pub policy_patch_status: u16,
}

impl Default for SimSettings {
    fn default() -> Self {
        Self {
            page_size: 100,
            token_lifetime_secs: 3599,
            time_speed: 1.0,
            throttle: ThrottleSettings::default(),
            policy_patch_any_property: false,
            policy_patch_status: 200,
        }
    }
}

/// Request counters, per tenant, for tests and benchmarks.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TenantStats {
    /// Graph requests (each `$batch` item counts as one).
    pub requests: u64,
    /// Graph write requests.
    pub writes: u64,
    /// Token requests.
    pub token_requests: u64,
    /// 429 responses sent.
    pub throttled: u64,
    /// Requests that arrived while a `Retry-After` given to the same app in this tenant was
    /// still running.
    pub early_requests: u64,
    /// Injected faults served (503, 504, drops, scripted).
    pub faults: u64,
    /// Requests per endpoint, as `METHOD /path/template`.
    pub by_endpoint: BTreeMap<String, u64>,
}

/// A registered application (the MSP's multi-tenant app) and its credentials.
#[derive(Debug, Clone)]
pub(crate) struct App {
    pub(crate) client_id: String,
    pub(crate) secrets: Vec<String>,
    /// Base64url SHA-256 thumbprints (`x5t#S256`) and PEM public keys of its certificates.
    pub(crate) certificates: Vec<(String, String)>,
}

pub(crate) struct World {
    pub(crate) tenants: Vec<Tenant>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) apps: HashMap<String, App>,
    pub(crate) tokens: HashMap<String, IssuedToken>,
    pub(crate) throttle: Throttle,
    pub(crate) faults: Vec<Faults>,
    pub(crate) stats: Vec<TenantStats>,
    pub(crate) rng: StdRng,
}

pub(crate) struct Inner {
    pub(crate) world: Mutex<World>,
    pub(crate) clock: SimClock,
    pub(crate) settings: SimSettings,
}

/// The simulator. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct GraphSim {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for GraphSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSim").field("tenants", &self.inner.world.lock().tenants.len()).finish()
    }
}

/// An error from the control surface of the simulator.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// No tenant has that id or domain.
    #[error("no simulated tenant {0}")]
    UnknownTenant(String),
    /// The value is not acceptable.
    #[error("{0}")]
    Invalid(String),
}

impl GraphSim {
    /// Builds a simulator from a scenario.
    pub fn from_scenario(scenario: &Scenario) -> Result<Self, ScenarioError> {
        let settings = scenario.settings.clone();
        let start = scenario.start_time();
        let clock = SimClock::new(start, settings.time_speed);
        let (tenants, apps) = scenario.build_at(start)?;
        let mut index = HashMap::new();
        for (i, t) in tenants.iter().enumerate() {
            index.insert(t.id.to_ascii_lowercase(), i);
            for d in &t.domains {
                index.insert(d.to_ascii_lowercase(), i);
            }
        }
        let faults = scenario.faults_per_tenant(&tenants);
        let n = tenants.len();
        let world = World {
            tenants,
            index,
            apps: apps.into_iter().map(|a| (a.client_id.to_ascii_lowercase(), a)).collect(),
            tokens: HashMap::new(),
            throttle: Throttle::default(),
            faults,
            stats: vec![TenantStats::default(); n],
            rng: StdRng::seed_from_u64(scenario.seed),
        };
        Ok(Self { inner: Arc::new(Inner { world: Mutex::new(world), clock, settings }) })
    }

    /// The simulated clock.
    pub fn clock(&self) -> &SimClock {
        &self.inner.clock
    }

    /// The simulator's settings.
    pub fn settings(&self) -> &SimSettings {
        &self.inner.settings
    }

    /// Entra tenant ids of every simulated tenant, in scenario order.
    pub fn tenant_ids(&self) -> Vec<String> {
        self.inner.world.lock().tenants.iter().map(|t| t.id.clone()).collect()
    }

    fn tenant_index(world: &World, tenant: &str) -> Result<usize, SimError> {
        world
            .index
            .get(&tenant.to_ascii_lowercase())
            .copied()
            .ok_or_else(|| SimError::UnknownTenant(tenant.to_owned()))
    }

    /// Sets the legacy SSPR policy of a tenant, as a technician does in the portal.
    pub fn set_legacy_sspr(&self, tenant: &str, policy: LegacySspr) -> Result<(), SimError> {
        let mut world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        let t = &mut world.tenants[i];
        if policy.enablement == Enablement::Selected {
            let id = policy
                .group_id
                .as_deref()
                .ok_or_else(|| SimError::Invalid("selected needs group_id".into()))?;
            if t.group(id).is_none() {
                return Err(SimError::Invalid(format!("no group {id} in the tenant")));
            }
        }
        if !(1..=2).contains(&policy.methods_required) {
            return Err(SimError::Invalid("methods_required must be 1 or 2".into()));
        }
        t.legacy = policy;
        t.refresh_scope(self.inner.clock.elapsed_secs());
        Ok(())
    }

    /// The legacy SSPR policy of a tenant.
    pub fn legacy_sspr(&self, tenant: &str) -> Result<LegacySspr, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        Ok(world.tenants[i].legacy.clone())
    }

    /// Replaces the faults of a tenant.
    pub fn set_faults(&self, tenant: &str, faults: Faults) -> Result<(), SimError> {
        let mut world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        world.faults[i] = faults;
        Ok(())
    }

    /// The request counters of a tenant.
    pub fn stats(&self, tenant: &str) -> Result<TenantStats, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        Ok(world.stats[i].clone())
    }

    /// Counters summed over every tenant.
    pub fn total_stats(&self) -> TenantStats {
        let world = self.inner.world.lock();
        let mut total = TenantStats::default();
        for s in &world.stats {
            total.requests += s.requests;
            total.writes += s.writes;
            total.token_requests += s.token_requests;
            total.throttled += s.throttled;
            total.early_requests += s.early_requests;
            total.faults += s.faults;
            for (k, v) in &s.by_endpoint {
                *total.by_endpoint.entry(k.clone()).or_default() += v;
            }
        }
        total
    }

    /// The full state of a tenant as JSON (for the control API and tests).
    pub fn tenant_state(&self, tenant: &str) -> Result<Value, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        let t = &world.tenants[i];
        let now = self.inner.clock.elapsed_secs();
        let capable = (0..t.users.len() as u32)
            .filter(|&u| {
                t.registration_details(u, now, "").get("isSsprCapable") == Some(&Value::Bool(true))
            })
            .count();
        Ok(serde_json::json!({
            "id": t.id,
            "displayName": t.display_name,
            "domains": t.domains,
            "users": t.users.len(),
            "ssprCapableUsers": capable,
            "premium": t.has_premium(),
            "onPremisesSyncEnabled": t.on_premises_sync_enabled,
            "legacySspr": t.legacy,
            "groups": t.groups_json(),
            "authenticationMethodsPolicy": graph::policy_json(t),
            "faults": world.faults[i],
            "stats": world.stats[i],
        }))
    }

    /// Records a self-service password reset by a user (as if the user did it now).
    pub fn record_reset(&self, tenant: &str, user: &str) -> Result<(), SimError> {
        let mut world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        let now = self.inner.clock.elapsed_secs();
        let t = &mut world.tenants[i];
        let index =
            t.find_user(user).ok_or_else(|| SimError::Invalid(format!("no user {user}")))?;
        t.audits.push(model::AuditEvent {
            id: uuid::Uuid::new_v4().to_string(),
            at_secs: now,
            activity: "Reset password (self-service)".into(),
            user: index,
            result: "success",
        });
        Ok(())
    }

    /// Starts serving on `listener` (Graph under `/v1.0`, the token endpoint, `/_sim`).
    pub fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<RunningSim> {
        server::serve(self.clone(), listener)
    }
}
