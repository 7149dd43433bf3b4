//! A circuit breaker per tenant: a tenant whose calls keep failing is set aside for a growing
//! while, with the reason, so it neither slows the others nor hammers a broken tenant.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// When a tenant is set aside and for how long.
#[derive(Debug, Clone)]
pub struct BreakerPolicy {
    /// Consecutive failed calls (after their retries) that open the circuit.
    pub failure_threshold: u32,
    /// How long the circuit first stays open; doubles each time it opens again.
    pub open_for: Duration,
    /// The longest it stays open.
    pub max_open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_secs(60),
            max_open_for: Duration::from_secs(1800),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    failures: u32,
    opened: u32,
    open_until: Option<Instant>,
    reason: String,
}

#[derive(Debug, Default)]
pub(crate) struct Breakers {
    tenants: Mutex<HashMap<String, State>>,
}

impl Breakers {
    /// `Err((reason, remaining))` while the tenant's circuit is open. After the open period a
    /// call goes through (half-open); its outcome closes or reopens the circuit.
    pub(crate) fn check(&self, tenant: &str) -> Result<(), (String, Duration)> {
        let tenants = self.tenants.lock();
        match tenants.get(tenant).and_then(|s| s.open_until.map(|u| (u, s.reason.clone()))) {
            Some((until, reason)) if until > Instant::now() => {
                Err((reason, until - Instant::now()))
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn success(&self, tenant: &str) {
        if let Some(s) = self.tenants.lock().get_mut(tenant) {
            s.failures = 0;
            s.opened = 0;
            s.open_until = None;
        }
    }

    /// Records a failed call; returns true if this opened the circuit.
    pub(crate) fn failure(&self, tenant: &str, reason: &str, policy: &BreakerPolicy) -> bool {
        let mut tenants = self.tenants.lock();
        let s = tenants.entry(tenant.to_owned()).or_default();
        s.failures += 1;
        s.reason = reason.to_owned();
        let half_open = s.open_until.is_some_and(|u| u <= Instant::now());
        if s.failures >= policy.failure_threshold || half_open {
            let factor = 2u32.saturating_pow(s.opened.min(16));
            let open_for = policy.open_for.saturating_mul(factor).min(policy.max_open_for);
            s.open_until = Some(Instant::now() + open_for);
            s.opened += 1;
            s.failures = 0;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_only_for_that_tenant() {
        let b = Breakers::default();
        let p = BreakerPolicy {
            failure_threshold: 3,
            open_for: Duration::from_secs(60),
            max_open_for: Duration::from_secs(600),
        };
        assert!(!b.failure("t1", "graph_503", &p));
        assert!(!b.failure("t1", "graph_503", &p));
        assert!(b.check("t1").is_ok());
        assert!(b.failure("t1", "graph_503", &p));
        let (reason, remaining) = b.check("t1").unwrap_err();
        assert_eq!(reason, "graph_503");
        assert!(remaining > Duration::from_secs(50));
        assert!(b.check("t2").is_ok());
        b.success("t1");
        assert!(b.check("t1").is_ok());
    }
}
