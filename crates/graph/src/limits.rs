//! Pacing: governor limiters sized from the documented quotas (resource units per (app, tenant)
//! by tenant size, writes per (app, tenant), resource units per app, writes per app), a global
//! concurrency cap, a per-tenant concurrency cap, a gate per tenant that holds its calls until a
//! `Retry-After` has passed and slows it down for a while after a 429, and a gate per app that
//! holds every tenant's calls (or only their writes) when Graph throttled the app as a whole
//! (`x-ms-throttle-scope: Application/...`). A tenant's own waits never hold another tenant.

use std::{
    collections::HashMap,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{GraphConfig, SizeClass};

type Key = (String, String);

#[derive(Debug, Default, Clone, Copy)]
struct Gate {
    blocked_until: Option<Instant>,
    slow_until: Option<Instant>,
}

/// Holds of an app: every request, or only writes.
#[derive(Debug, Default, Clone, Copy)]
struct AppGate {
    all_until: Option<Instant>,
    writes_until: Option<Instant>,
}

/// A keyed limiter and the most cells one request may ask of it at once.
struct Limiter<K: std::hash::Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    burst: u32,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    fn new(quota: Quota) -> Self {
        Self { burst: quota.burst_size().get(), limiter: RateLimiter::keyed(quota) }
    }

    /// Waits until `cells` are available (a request dearer than the burst waits for the
    /// whole burst: it cannot be split, and the limit it models is a rate, not a size).
    async fn take(&self, key: &K, cells: u32) {
        let n = NonZeroU32::new(cells.clamp(1, self.burst)).unwrap_or(NonZeroU32::MIN);
        // Cannot fail: n is at most the burst.
        let _ = self.limiter.until_key_n_ready(key, n).await;
    }
}

pub(crate) struct Limits {
    ru: HashMap<SizeClass, Limiter<Key>>,
    writes: Limiter<Key>,
    app: Limiter<String>,
    app_writes: Limiter<String>,
    app_gates: Mutex<HashMap<String, AppGate>>,
    global: Arc<Semaphore>,
    per_tenant: usize,
    tenants: Mutex<HashMap<String, Arc<Semaphore>>>,
    gates: Mutex<HashMap<String, Gate>>,
    slowdown: Duration,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits").field("per_tenant", &self.per_tenant).finish_non_exhaustive()
    }
}

/// A quota of `amount` per `window`, with a burst of a quarter of it (at least 10 cells, so
/// the most expensive request, slowed down, always fits).
fn quota(amount: f64, window: Duration) -> Quota {
    quota_with_burst(amount, window, amount / 4.0)
}

/// A quota of `amount` per `window` with a burst of `burst` cells (at least 10).
fn quota_with_burst(amount: f64, window: Duration, burst: f64) -> Quota {
    let amount = amount.max(0.01);
    let period = Duration::from_secs_f64((window.as_secs_f64() / amount).max(1e-6));
    let burst = NonZeroU32::new((burst as u32).max(10)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// How much of the app-wide limits a request uses: resource units and writes (a `$batch`
/// counts its items).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) resource_units: u32,
    pub(crate) writes: u32,
}

impl std::iter::Sum for Charge {
    fn sum<I: Iterator<Item = Charge>>(iter: I) -> Self {
        iter.fold(Charge { resource_units: 0, writes: 0 }, |a, c| Charge {
            resource_units: a.resource_units + c.resource_units,
            writes: a.writes + c.writes,
        })
    }
}

/// Permits held while a request is in flight.
pub(crate) struct Permits {
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Limits {
    pub(crate) fn new(cfg: &GraphConfig) -> Self {
        let f = cfg.rate_share * cfg.limits_scale;
        // The app-wide limits are this app's alone (shared only by its own replicas).
        let fa = cfg.app_share * cfg.limits_scale;
        let ru = [SizeClass::Small, SizeClass::Medium, SizeClass::Large]
            .into_iter()
            .map(|c| {
                (c, Limiter::new(quota(c.resource_units_per_10s() * f, Duration::from_secs(10))))
            })
            .collect();
        let app_writes = 35_000.0 * fa;
        Self {
            ru,
            writes: Limiter::new(quota(3_000.0 * f, Duration::from_secs(150))),
            app: Limiter::new(quota(150_000.0 * fa, Duration::from_secs(20))),
            // 35,000 writes per 5 minutes per app: all of them may go at once, then they come
            // back at 35,000 per 5 minutes. A stricter reading by Graph is met by its 429s,
            // which hold the app's writes (the app gate).
            app_writes: Limiter::new(quota_with_burst(
                app_writes,
                Duration::from_secs(300),
                app_writes,
            )),
            app_gates: Mutex::new(HashMap::new()),
            global: Arc::new(Semaphore::new(cfg.max_concurrency.max(1))),
            per_tenant: cfg.per_tenant_concurrency.max(1),
            tenants: Mutex::new(HashMap::new()),
            gates: Mutex::new(HashMap::new()),
            slowdown: cfg.throttle_slowdown,
        }
    }

    /// The tenant's concurrency slot; held across the gate and the limiters so that no request
    /// of the tenant can overtake a `Retry-After` it was given.
    pub(crate) async fn tenant_slot(&self, tenant: &str) -> OwnedSemaphorePermit {
        let sem = self
            .tenants
            .lock()
            .entry(tenant.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
            .clone();
        acquire(sem).await
    }

    /// Waits for the tenant's gate and the app's, then for the rate limiters; returns once the
    /// request may be sent, holding the global slot.
    pub(crate) async fn ready(
        &self,
        app: &str,
        tenant: &str,
        size: SizeClass,
        charge: Charge,
        tenant_slot: OwnedSemaphorePermit,
    ) -> Permits {
        let write = charge.writes > 0;
        loop {
            let now = Instant::now();
            let tenant_until = self.gates.lock().get(tenant).and_then(|g| g.blocked_until);
            let app_until = self.app_gates.lock().get(app).and_then(|g| {
                let writes = if write { g.writes_until } else { None };
                g.all_until.max(writes)
            });
            match tenant_until.max(app_until).map(|u| u.saturating_duration_since(now)) {
                Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => break,
            }
        }
        if charge.resource_units == 0 && !write {
            // A report read: paced by the report limiter, not by resource units.
            let global = acquire(self.global.clone()).await;
            return Permits { _tenant: tenant_slot, _global: global };
        }
        let slowed = self
            .gates
            .lock()
            .get(tenant)
            .and_then(|g| g.slow_until)
            .is_some_and(|u| u > Instant::now());
        let cost = charge.resource_units.max(1);
        let cells = if slowed { cost * 2 } else { cost };
        let key = (app.to_owned(), tenant.to_owned());
        if let Some(limiter) = self.ru.get(&size) {
            limiter.take(&key, cells).await;
        }
        let app_key = app.to_owned();
        if write {
            self.writes.take(&key, charge.writes).await;
            self.app_writes.take(&app_key, charge.writes).await;
        }
        self.app.take(&app_key, cells).await;
        let global = acquire(self.global.clone()).await;
        Permits { _tenant: tenant_slot, _global: global }
    }

    /// Holds the app's calls until `until`: only its writes when Graph throttled its writes
    /// (`Application/Write/...`), every call otherwise.
    pub(crate) fn block_app(&self, app: &str, until: Instant, writes_only: bool) {
        let mut gates = self.app_gates.lock();
        let g = gates.entry(app.to_owned()).or_default();
        let slot = if writes_only { &mut g.writes_until } else { &mut g.all_until };
        *slot = Some(slot.map_or(until, |u| u.max(until)));
    }

    /// Holds the tenant's calls until `until` and slows it down for a while after.
    pub(crate) fn block(&self, tenant: &str, until: Instant) {
        let mut gates = self.gates.lock();
        let g = gates.entry(tenant.to_owned()).or_default();
        g.blocked_until = Some(g.blocked_until.map_or(until, |u| u.max(until)));
        g.slow_until = Some(until + self.slowdown);
    }

    /// When the tenant may be called again, if it is blocked.
    pub(crate) fn blocked_until(&self, tenant: &str) -> Option<Instant> {
        self.gates.lock().get(tenant).and_then(|g| g.blocked_until).filter(|u| *u > Instant::now())
    }
}

/// Acquires a permit of a semaphore the client owns. Those semaphores are never closed, so
/// acquiring can only fail through a bug in this module.
async fn acquire(sem: Arc<Semaphore>) -> OwnedSemaphorePermit {
    #[allow(clippy::expect_used)]
    sem.acquire_owned().await.expect("the client never closes its semaphores")
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: Charge = Charge { resource_units: 1, writes: 0 };
    const WRITE: Charge = Charge { resource_units: 1, writes: 1 };

    async fn through(limits: &Limits, tenant: &str, charge: Charge) -> Instant {
        let slot = limits.tenant_slot(tenant).await;
        let _permits = limits.ready("app", tenant, SizeClass::Small, charge, slot).await;
        Instant::now()
    }

    #[tokio::test]
    async fn a_hold_on_the_apps_writes_holds_every_tenants_writes_but_not_their_reads() {
        let limits = Limits::new(&GraphConfig::default());
        let until = Instant::now() + Duration::from_millis(1500);
        limits.block_app("app", until, true);
        // Another app's writes are not held.
        let slot = limits.tenant_slot("t3").await;
        drop(limits.ready("other", "t3", SizeClass::Small, WRITE, slot).await);
        assert!(Instant::now() < until);
        // Another tenant's read goes now; its write only once the hold is over.
        assert!(through(&limits, "t2", READ).await < until);
        assert!(through(&limits, "t2", WRITE).await >= until);
    }

    #[tokio::test]
    async fn a_hold_on_the_whole_app_holds_reads_too() {
        let limits = Limits::new(&GraphConfig::default());
        let until = Instant::now() + Duration::from_millis(800);
        limits.block_app("app", until, false);
        assert!(through(&limits, "t1", READ).await >= until);
    }

    #[tokio::test]
    async fn the_app_write_limit_counts_a_batchs_writes() {
        // 35,000 × 0.0001 = 3.5 writes per 5 minutes: a burst of 10 (the least any limiter
        // has), then one write every 86 s.
        let cfg = GraphConfig { limits_scale: 0.0001, app_share: 1.0, ..GraphConfig::default() };
        let limits = Limits::new(&cfg);
        assert_eq!(limits.app_writes.burst, 10);
        let key = "app".to_owned();
        // A batch of 10 writes takes the whole burst: the next write has to wait.
        limits.app_writes.take(&key, 10).await;
        assert!(limits.app_writes.limiter.check_key(&key).is_err());
    }
}
