//! A simulated Microsoft Graph v1.0 and Microsoft identity platform token endpoint, for many
//! tenants at once, used by sspr-fleet's tests and its demo.
//!
//! It behaves like Graph for everything sspr-fleet calls: status codes, error bodies, paging,
//! throttling with `Retry-After`, replication delay, licences, and the legacy SSPR policy that
//! Graph cannot set (the control API sets it, as a technician would in the portal; or the
//! simulated undocumented portal endpoint `PasswordResetPolicies`, with a delegated token).
//!
//! **Invariant:** this crate shares no code or types with the Graph client (`crates/graph`).
//! Both are written from the Graph facts on their own, so a misreading in one is caught by
//! the other. It depends on no other sspr-fleet crate.

mod clock;
mod faults;
mod graph;
mod licences;
mod model;
mod portal;
mod response;
pub mod scenario;
mod server;
mod throttle;
mod token;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::Arc,
};

use parking_lot::Mutex;
use rand::{SeedableRng, rngs::StdRng};
use serde_json::Value;

pub use clock::SimClock;
pub use faults::{Faults, ScriptedFault};
pub use licences::{PLAN_P1, PLAN_P2, Sku};
pub use model::{Behaviour, Enablement, LegacySspr};
pub use portal::PORTAL_RESOURCE_ID;
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
    /// Graph requests (each `$batch` item counts as one) and portal policy requests.
    pub requests: u64,
    /// Write requests among them.
    pub writes: u64,
    /// Token requests.
    pub token_requests: u64,
    /// 429 responses sent.
    pub throttled: u64,
    /// 429 responses sent to write requests (counted in `writes` too).
    #[serde(default)]
    pub throttled_writes: u64,
    /// Requests that arrived while a `Retry-After` given to the same app in this tenant was
    /// still running.
    pub early_requests: u64,
    /// Early requests per endpoint, as `METHOD /path/template`.
    #[serde(default)]
    pub early_by_endpoint: BTreeMap<String, u64>,
    /// The most milliseconds an early request came before its `Retry-After` ended.
    #[serde(default)]
    pub early_ms_max: i64,
    /// Injected faults served (503, 504, drops, scripted).
    pub faults: u64,
    /// Requests per endpoint, as `METHOD /path/template`.
    pub by_endpoint: BTreeMap<String, u64>,
}

/// Most writes kept per tenant in the write log; older ones are dropped first.
pub const WRITE_LOG_CAPACITY: usize = 20_000;

/// One write a tenant received: a Graph request other than GET (each `$batch` item on its
/// own), or a `PUT` of the portal's SSPR policy, whatever it was answered. For tests that
/// prove the order of writes.
///
/// A `$batch` the simulator ran is recorded as its items, not as the envelope; a `$batch`
/// refused as a whole (malformed, over 20 items) is recorded as itself, `POST /$batch`.
/// Requests whose token names no tenant are not recorded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WriteRecord {
    /// Simulated time it arrived, RFC 3339 with milliseconds (`2026-01-05T09:00:00.000Z`).
    pub at: String,
    /// HTTP method, upper case.
    pub method: String,
    /// The path as requested after `/v1.0` (or the portal's `/api/...` path), without the query.
    pub path: String,
    /// The status answered; 0 when the connection was dropped (an injected fault).
    pub status: u16,
    /// The request's JSON body, or null.
    pub body: Value,
}

/// One user's SSPR registration state, as `userRegistrationDetails` answers it at the
/// simulator's current time (see [`GraphSim::user_registrations`]). For tests that compute
/// figures independently of sspr-fleet's Graph client.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UserRegistration {
    /// The user's object id.
    pub id: String,
    /// The user principal name.
    pub user_principal_name: String,
    /// `isAdmin`.
    pub is_admin: bool,
    /// `userType` is `guest`.
    pub is_guest: bool,
    /// `isSsprEnabled`.
    pub is_sspr_enabled: bool,
    /// `isSsprRegistered`: derived from registered methods only (directory attributes such as
    /// `mobilePhone` do not count).
    pub is_sspr_registered: bool,
    /// `isSsprCapable`.
    pub is_sspr_capable: bool,
    /// `methodsRegistered`, in the order Graph lists them.
    pub methods_registered: Vec<String>,
}

impl UserRegistration {
    /// Reads the fields out of a `userRegistrationDetails` object.
    fn from_details(d: &Value) -> Self {
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
        let b = |k: &str| d.get(k).and_then(Value::as_bool).unwrap_or(false);
        Self {
            id: s("id"),
            user_principal_name: s("userPrincipalName"),
            is_admin: b("isAdmin"),
            is_guest: d.get("userType").and_then(Value::as_str) == Some("guest"),
            is_sspr_enabled: b("isSsprEnabled"),
            is_sspr_registered: b("isSsprRegistered"),
            is_sspr_capable: b("isSsprCapable"),
            methods_registered: d
                .get("methodsRegistered")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        }
    }
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
    /// Write log per tenant, oldest first, at most [`WRITE_LOG_CAPACITY`] each.
    pub(crate) writes: Vec<VecDeque<WriteRecord>>,
    pub(crate) rng: StdRng,
}

impl World {
    /// Appends to tenant `ti`'s write log, dropping the oldest entry when it is full.
    pub(crate) fn record_write(
        &mut self,
        ti: usize,
        at: &str,
        method: &str,
        path: &str,
        status: u16,
        body: Option<Value>,
    ) {
        let log = &mut self.writes[ti];
        while log.len() >= WRITE_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(WriteRecord {
            at: at.to_owned(),
            method: method.to_ascii_uppercase(),
            path: path.to_owned(),
            status,
            body: body.unwrap_or(Value::Null),
        });
    }
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
            writes: vec![VecDeque::new(); n],
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

    /// How many member users (guests excluded, administrators included) SSPR was enabled for:
    /// at the start, then after every change of that number (a legacy policy change, a group
    /// membership change, a dynamic rule), oldest first. A rollout that never narrows SSPR
    /// leaves a sequence that never goes down.
    pub fn sspr_enabled_members(&self, tenant: &str) -> Result<Vec<u32>, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        Ok(world.tenants[i].enabled_members.clone())
    }

    /// Every user's registration state at the simulator's current time, in user order: the
    /// same values `GET /reports/authenticationMethods/userRegistrationDetails` answers now
    /// (whatever the tenant's licence; the report itself needs P1/P2).
    pub fn user_registrations(&self, tenant: &str) -> Result<Vec<UserRegistration>, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        let t = &world.tenants[i];
        let now = self.inner.clock.elapsed_secs();
        Ok((0..t.users.len() as u32)
            .map(|u| UserRegistration::from_details(&t.registration_details(u, now, "")))
            .collect())
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

    /// The write log of a tenant, oldest first (see [`WriteRecord`]).
    pub fn writes(&self, tenant: &str) -> Result<Vec<WriteRecord>, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        Ok(world.writes[i].iter().cloned().collect())
    }

    /// The users (by index) an enabled registration campaign has ever nudged, in index order:
    /// those its include targets named and its exclude targets did not, at any change of the
    /// campaign, the groups or the users since the start.
    pub fn campaign_nudged(&self, tenant: &str) -> Result<Vec<u32>, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        Ok(world.tenants[i].campaign_nudged())
    }

    /// The refresh token a tenant accepts at the portal's v1 token endpoint.
    pub fn portal_refresh_token(&self, tenant: &str) -> Result<String, SimError> {
        let world = self.inner.world.lock();
        let i = Self::tenant_index(&world, tenant)?;
        Ok(world.tenants[i].portal_refresh_token.clone())
    }

    /// Logs a write answered before it reached a handler (its body was not JSON), under the
    /// tenant its bearer token was issued for, if any.
    pub(crate) fn record_unreadable_write(
        &self,
        authorization: Option<&str>,
        method: &str,
        path: &str,
        status: u16,
    ) {
        if method.eq_ignore_ascii_case("GET") {
            return;
        }
        let at = self.stamp_ms(self.inner.clock.elapsed_ms());
        let mut world = self.inner.world.lock();
        if let Some(ti) = world.issued(authorization).map(|t| t.tenant) {
            world.record_write(ti, &at, method, path, status, None);
        }
    }

    /// Simulated time `elapsed_ms` after start, RFC 3339 with milliseconds (write log times).
    pub(crate) fn stamp_ms(&self, elapsed_ms: i64) -> String {
        (self.inner.clock.at_secs(0) + chrono::TimeDelta::milliseconds(elapsed_ms))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
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
            total.throttled_writes += s.throttled_writes;
            total.early_requests += s.early_requests;
            total.early_ms_max = total.early_ms_max.max(s.early_ms_max);
            for (k, v) in &s.early_by_endpoint {
                *total.early_by_endpoint.entry(k.clone()).or_default() += v;
            }
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

    /// Starts serving on `listener` (Graph under `/v1.0`, the token endpoints, the portal's
    /// SSPR policy endpoint, `/_sim`).
    pub fn serve(&self, listener: std::net::TcpListener) -> std::io::Result<RunningSim> {
        server::serve(self.clone(), listener)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_write_log_keeps_the_newest_entries() {
        let scenario = Scenario::parse("[[tenants]]\nid = \"t1\"\nusers = 3\n").unwrap();
        let sim = GraphSim::from_scenario(&scenario).unwrap();
        {
            let mut world = sim.inner.world.lock();
            for n in 0..WRITE_LOG_CAPACITY + 5 {
                world.record_write(0, "at", "patch", &format!("/groups/{n}"), 204, None);
            }
        }
        let writes = sim.writes("t1").unwrap();
        assert_eq!(writes.len(), WRITE_LOG_CAPACITY);
        assert_eq!(writes[0].path, "/groups/5", "the oldest are dropped first");
        assert_eq!(writes[0].method, "PATCH");
        assert_eq!(
            writes[WRITE_LOG_CAPACITY - 1].path,
            format!("/groups/{}", WRITE_LOG_CAPACITY + 4)
        );
        assert!(matches!(sim.writes("t2"), Err(SimError::UnknownTenant(_))));
    }
}
