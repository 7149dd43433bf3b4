//! Graph's throttling, modelled from the published identity-and-access limits: a resource-unit
//! bucket per (app, tenant) sized by tenant size, write buckets per (app, tenant), per tenant
//! and per app, a cost per request, and `Retry-After` on 429. Every limit scales with one
//! factor so tests reach them in seconds. Requests that arrive while a `Retry-After` given to
//! that (app, tenant) is still running are counted as violations.

use std::collections::HashMap;

/// Limits, all scaled by `scale` (1.0 = Microsoft's published numbers).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Multiplies every capacity (0.001 makes a small tenant's 3,500 RU per 10 s into 3.5).
    pub scale: f64,
    /// Switches throttling off entirely.
    pub enabled: bool,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self { scale: 1.0, enabled: true }
    }
}

#[derive(Debug, Clone)]
struct Bucket {
    capacity: f64,
    per_ms: f64,
    level: f64,
    at_ms: i64,
}

impl Bucket {
    fn new(capacity: f64, window_ms: f64) -> Self {
        Self { capacity, per_ms: capacity / window_ms, level: capacity, at_ms: i64::MIN }
    }

    fn refill(&mut self, now_ms: i64) {
        if self.at_ms != i64::MIN && now_ms > self.at_ms {
            self.level =
                (self.level + (now_ms - self.at_ms) as f64 * self.per_ms).min(self.capacity);
        }
        self.at_ms = now_ms;
    }

    /// Milliseconds until `cost` is available (0 if it is now).
    fn wait_ms(&self, cost: f64) -> i64 {
        if self.level >= cost.min(self.capacity) {
            0
        } else {
            ((cost.min(self.capacity) - self.level) / self.per_ms).ceil() as i64
        }
    }
}

/// Why a request was throttled.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Throttled {
    pub(crate) retry_after_secs: u64,
    pub(crate) scope: String,
    pub(crate) information: &'static str,
}

/// What was charged for an allowed request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Charged {
    pub(crate) resource_units: u32,
    /// Share of the (app, tenant) bucket in use, reported above 0.8 as Graph does.
    pub(crate) limit_percentage: Option<f64>,
}

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    app_tenant_ru: HashMap<(String, String), Bucket>,
    app_tenant_writes: HashMap<(String, String), Bucket>,
    tenant_writes: HashMap<String, Bucket>,
    app_ru: HashMap<String, Bucket>,
    app_writes: HashMap<String, Bucket>,
    /// Until when (ms) each (app, tenant) was told to wait.
    retry_after_until: HashMap<(String, String), i64>,
    /// While a `$batch` is evaluated, waits told to its items are held here: the items of one
    /// batch arrive together, so none of them is early with respect to a sibling's 429.
    deferred: Option<Vec<(String, String, i64, u64)>>,
}

/// The resource-unit capacity per 10 s for a tenant of `users` users.
pub(crate) fn tenant_capacity(users: usize) -> f64 {
    if users < 50 {
        3_500.0
    } else if users <= 500 {
        5_000.0
    } else {
        8_000.0
    }
}

/// The cost of a request, from the published table and adjustments.
pub(crate) fn cost(method: &str, path: &str, query: &str) -> (u32, bool) {
    let write = !method.eq_ignore_ascii_case("GET");
    let lower = path.to_ascii_lowercase();
    let mut ru: i32 = if write {
        1
    } else if lower == "/users" {
        2
    } else if lower == "/subscribedskus" {
        3
    } else if lower.ends_with("/transitivemembers") {
        5
    } else if lower.ends_with("/members") {
        3
    } else {
        1
    };
    if query.contains("$select=") {
        ru -= 1;
    }
    if query.contains("$expand=") {
        ru += 1;
    }
    if query
        .split('&')
        .find_map(|p| p.strip_prefix("$top="))
        .and_then(|t| t.parse::<u32>().ok())
        .is_some_and(|top| top < 20)
    {
        ru -= 1;
    }
    (ru.max(1) as u32, write)
}

impl Throttle {
    /// Whether the (app, tenant) pair is inside a `Retry-After` it was given (a violation).
    #[cfg(test)]
    pub(crate) fn is_early(&self, app: &str, tenant: &str, now_ms: i64) -> bool {
        self.early_by_ms(app, tenant, now_ms).is_some()
    }

    /// How many milliseconds before the end of a running `Retry-After` a request of the pair
    /// arrived, if it did (a violation).
    pub(crate) fn early_by_ms(&self, app: &str, tenant: &str, now_ms: i64) -> Option<i64> {
        self.retry_after_until
            .get(&(app.to_owned(), tenant.to_owned()))
            .filter(|&&until| now_ms < until)
            .map(|&until| until - now_ms)
    }

    /// Starts holding `Retry-After`s back (a batch is being evaluated).
    pub(crate) fn begin_batch(&mut self) {
        self.deferred = Some(Vec::new());
    }

    /// Applies the `Retry-After`s given during a batch.
    pub(crate) fn end_batch(&mut self) {
        for (app, tenant, now_ms, secs) in self.deferred.take().unwrap_or_default() {
            self.told_to_wait(&app, &tenant, now_ms, secs);
        }
    }

    /// Records a `Retry-After` given to the pair, for counting violations.
    pub(crate) fn told_to_wait(&mut self, app: &str, tenant: &str, now_ms: i64, secs: u64) {
        if let Some(deferred) = self.deferred.as_mut() {
            deferred.push((app.to_owned(), tenant.to_owned(), now_ms, secs));
            return;
        }
        let until = now_ms + (secs as i64) * 1000;
        let entry =
            self.retry_after_until.entry((app.to_owned(), tenant.to_owned())).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// Charges a request or says how long to wait.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn charge(
        &mut self,
        settings: &ThrottleSettings,
        app: &str,
        tenant: &str,
        users: usize,
        ru: u32,
        write: bool,
        now_ms: i64,
    ) -> Result<Charged, Throttled> {
        if !settings.enabled {
            return Ok(Charged { resource_units: ru, limit_percentage: None });
        }
        let s = settings.scale.max(1e-9);
        let key = (app.to_owned(), tenant.to_owned());
        let pair_ru = self
            .app_tenant_ru
            .entry(key.clone())
            .or_insert_with(|| Bucket::new(tenant_capacity(users) * s, 10_000.0));
        let app_ru = self
            .app_ru
            .entry(app.to_owned())
            .or_insert_with(|| Bucket::new(150_000.0 * s, 20_000.0));
        pair_ru.refill(now_ms);
        app_ru.refill(now_ms);
        let cost = f64::from(ru);
        let mut checks: Vec<(i64, String, &'static str)> = vec![
            (
                pair_ru.wait_ms(cost),
                format!("Tenant_Application/ReadWrite/{app}/{tenant}"),
                "ResourceUnitLimitExceeded",
            ),
            (
                app_ru.wait_ms(cost),
                format!("Application/ReadWrite/{app}/"),
                "ResourceUnitLimitExceeded",
            ),
        ];
        if write {
            let pair_w = self
                .app_tenant_writes
                .entry(key.clone())
                .or_insert_with(|| Bucket::new(3_000.0 * s, 150_000.0));
            let tenant_w = self
                .tenant_writes
                .entry(tenant.to_owned())
                .or_insert_with(|| Bucket::new(18_000.0 * s, 300_000.0));
            let app_w = self
                .app_writes
                .entry(app.to_owned())
                .or_insert_with(|| Bucket::new(35_000.0 * s, 300_000.0));
            for b in [&mut *pair_w, &mut *tenant_w, &mut *app_w] {
                b.refill(now_ms);
            }
            checks.push((
                pair_w.wait_ms(1.0),
                format!("Tenant_Application/Write/{app}/{tenant}"),
                "WriteLimitExceeded",
            ));
            checks.push((
                tenant_w.wait_ms(1.0),
                format!("Tenant/Write//{tenant}"),
                "WriteLimitExceeded",
            ));
            checks.push((
                app_w.wait_ms(1.0),
                format!("Application/Write/{app}/"),
                "WriteLimitExceeded",
            ));
        }
        if let Some((wait, scope, info)) =
            checks.into_iter().filter(|c| c.0 > 0).max_by_key(|c| c.0)
        {
            let secs = ((wait + 999) / 1000).max(1) as u64;
            return Err(Throttled { retry_after_secs: secs, scope, information: info });
        }
        let pair_ru = self.app_tenant_ru.get_mut(&key).map(|b| {
            b.level -= cost;
            1.0 - b.level / b.capacity
        });
        if let Some(b) = self.app_ru.get_mut(app) {
            b.level -= cost;
        }
        if write {
            for b in [
                self.app_tenant_writes.get_mut(&key),
                self.tenant_writes.get_mut(tenant),
                self.app_writes.get_mut(app),
            ]
            .into_iter()
            .flatten()
            {
                b.level -= 1.0;
            }
        }
        let used = pair_ru.unwrap_or(0.0);
        Ok(Charged {
            resource_units: ru,
            limit_percentage: (used >= 0.8).then_some((used * 10.0).round() / 10.0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_follow_the_published_table() {
        assert_eq!(cost("GET", "/users", ""), (2, false));
        assert_eq!(cost("GET", "/users", "$select=id"), (1, false));
        assert_eq!(cost("GET", "/subscribedSkus", ""), (3, false));
        assert_eq!(cost("GET", "/groups/x/members", "$top=10"), (2, false));
        assert_eq!(cost("PATCH", "/policies/authenticationMethodsPolicy", ""), (1, true));
        assert_eq!(cost("GET", "/organization", "$select=id"), (1, false));
    }

    #[test]
    fn a_small_tenant_bucket_empties_then_refills() {
        let settings = ThrottleSettings { scale: 0.001, enabled: true }; // 3.5 RU per 10 s
        let mut t = Throttle::default();
        for _ in 0..3 {
            t.charge(&settings, "app", "t", 10, 1, false, 0).unwrap();
        }
        let err = t.charge(&settings, "app", "t", 10, 1, false, 0).unwrap_err();
        assert!(err.retry_after_secs >= 1);
        assert!(err.scope.starts_with("Tenant_Application/"));
        // Another tenant is unaffected.
        t.charge(&settings, "app", "other", 10, 1, false, 0).unwrap();
        // After enough time the first tenant may call again.
        t.charge(&settings, "app", "t", 10, 1, false, (err.retry_after_secs as i64) * 1000)
            .unwrap();
    }

    #[test]
    fn early_requests_are_detected_until_retry_after_passes() {
        let mut t = Throttle::default();
        t.told_to_wait("app", "t", 1_000, 5);
        assert!(t.is_early("app", "t", 5_999));
        assert!(!t.is_early("app", "t", 6_000));
        assert!(!t.is_early("app", "other", 2_000));
    }
}
