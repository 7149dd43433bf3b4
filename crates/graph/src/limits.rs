//! Pacing: governor limiters sized from the documented quotas (resource units per (app, tenant)
//! by tenant size, writes per (app, tenant), resource units per app), a global concurrency cap,
//! a per-tenant concurrency cap, and a gate per tenant that holds its calls until a
//! `Retry-After` has passed and slows it down for a while after a 429. One tenant's waits never
//! hold another tenant's calls.

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

pub(crate) struct Limits {
    ru: HashMap<SizeClass, DefaultKeyedRateLimiter<Key>>,
    writes: DefaultKeyedRateLimiter<Key>,
    app: DefaultKeyedRateLimiter<String>,
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
    let amount = amount.max(0.01);
    let period = Duration::from_secs_f64((window.as_secs_f64() / amount).max(1e-6));
    let burst = NonZeroU32::new(((amount / 4.0) as u32).max(10)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// Permits held while a request is in flight.
pub(crate) struct Permits {
    _tenant: OwnedSemaphorePermit,
    _global: OwnedSemaphorePermit,
}

impl Limits {
    pub(crate) fn new(cfg: &GraphConfig) -> Self {
        let f = cfg.rate_share * cfg.limits_scale;
        let ru = [SizeClass::Small, SizeClass::Medium, SizeClass::Large]
            .into_iter()
            .map(|c| {
                (
                    c,
                    RateLimiter::keyed(quota(
                        c.resource_units_per_10s() * f,
                        Duration::from_secs(10),
                    )),
                )
            })
            .collect();
        Self {
            ru,
            writes: RateLimiter::keyed(quota(3_000.0 * f, Duration::from_secs(150))),
            app: RateLimiter::keyed(quota(150_000.0 * f, Duration::from_secs(20))),
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

    /// Waits for the tenant's gate, then for the rate limiters; returns once the request may
    /// be sent, holding the global slot.
    pub(crate) async fn ready(
        &self,
        app: &str,
        tenant: &str,
        size: SizeClass,
        cost: u32,
        write: bool,
        tenant_slot: OwnedSemaphorePermit,
    ) -> Permits {
        loop {
            let wait = self
                .gates
                .lock()
                .get(tenant)
                .and_then(|g| g.blocked_until)
                .map(|u| u.saturating_duration_since(Instant::now()));
            match wait {
                Some(d) if !d.is_zero() => tokio::time::sleep(d).await,
                _ => break,
            }
        }
        let slowed = self
            .gates
            .lock()
            .get(tenant)
            .and_then(|g| g.slow_until)
            .is_some_and(|u| u > Instant::now());
        let cells = NonZeroU32::new(if slowed { cost.max(1) * 2 } else { cost.max(1) })
            .unwrap_or(NonZeroU32::MIN);
        let key = (app.to_owned(), tenant.to_owned());
        if let Some(limiter) = self.ru.get(&size) {
            // More cells than the burst cannot happen: the burst is at least 10.
            let _ = limiter.until_key_n_ready(&key, cells).await;
        }
        if write {
            let _ = self.writes.until_key_ready(&key).await;
        }
        let _ = self.app.until_key_n_ready(&app.to_owned(), cells).await;
        let global = acquire(self.global.clone()).await;
        Permits { _tenant: tenant_slot, _global: global }
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
