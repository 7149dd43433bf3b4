//! Graph's throttling, modelled from the published identity-and-access limits: a resource-unit
//! bucket per (app, tenant) sized by tenant size, write buckets per (app, tenant), per tenant
//! and per app, a cost per request, and `Retry-After` on 429. Every limit scales with one
//! factor so tests reach them in seconds. Requests that arrive while a `Retry-After` given to
//! that (app, tenant) is still running are counted as violations.
//!
//! The Entra reporting APIs (`/reports/**`, `/auditLogs/**`) have limits of their own,
//! separate from resource units: 5 requests per 10 s per (app, tenant) and 122 per 10 s per
//! app across all tenants. A report read is charged there only, and its `Retry-After` binds
//! only the (app, tenant)'s report reads (or, for the app-wide bucket, the app's).

use std::collections::HashMap;

/// Limits, all scaled by `scale` (1.0 = Microsoft's published numbers).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleSettings {
    /// Multiplies every capacity (0.001 makes a small tenant's 3,500 RU per 10 s into 3.5).
    pub scale: f64,
    /// Switches throttling off entirely.
    pub enabled: bool,
    /// Switches the reporting-API buckets (5 per 10 s per (app, tenant), 122 per 10 s per app)
    /// on or off; off, report reads are charged resource units like other reads (for tests
    /// that freeze the clock and read reports more than 5 times a tenant).
    pub reports: bool,
}

impl Default for ThrottleSettings {
    fn default() -> Self {
        Self { scale: 1.0, enabled: true, reports: true }
    }
}

/// Report reads per 10 s per (app, tenant).
pub(crate) const REPORTS_PER_TENANT: f64 = 5.0;
/// Report reads per 10 s per app, all tenants together.
pub(crate) const REPORTS_PER_APP: f64 = 122.0;

/// Whether a request is a read of the reporting APIs (`/reports/**`, `/auditLogs/**`).
pub(crate) fn is_report_read(method: &str, path: &str) -> bool {
    if !method.eq_ignore_ascii_case("GET") {
        return false;
    }
    let first = path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("");
    first.eq_ignore_ascii_case("reports") || first.eq_ignore_ascii_case("auditLogs")
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
    /// `x-ms-throttle-information`, where Graph's value is known.
    pub(crate) information: Option<&'static str>,
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
    app_tenant_reports: HashMap<(String, String), Bucket>,
    app_reports: HashMap<String, Bucket>,
    /// Until when (ms) each (app, tenant) was told to wait.
    retry_after_until: HashMap<(String, String), i64>,
    /// Until when (ms) each (app, tenant) was told to wait by a report 429 (binds its report
    /// reads only).
    report_until: HashMap<(String, String), i64>,
    /// Until when (ms) each app was told to wait by an app-scoped report 429.
    report_app_until: HashMap<String, i64>,
    /// While a `$batch` is evaluated, waits told to its items are held here: the items of one
    /// batch arrive together, so none of them is early with respect to a sibling's 429.
    deferred: Option<Vec<(Wait, i64, u64)>>,
}

/// Who a `Retry-After` binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Every request of the (app, tenant).
    Pair(String, String),
    /// The report reads of the (app, tenant).
    Reports(String, String),
    /// The report reads of the app, in every tenant.
    AppReports(String),
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

    /// How many milliseconds before the end of a running report `Retry-After` (of the pair or
    /// of the whole app) a report read arrived, if it did (a violation).
    pub(crate) fn report_early_by_ms(&self, app: &str, tenant: &str, now_ms: i64) -> Option<i64> {
        let pair = self.report_until.get(&(app.to_owned(), tenant.to_owned())).copied();
        let whole = self.report_app_until.get(app).copied();
        pair.max(whole).filter(|&until| now_ms < until).map(|until| until - now_ms)
    }

    /// Applies the `Retry-After`s given during a batch.
    pub(crate) fn end_batch(&mut self) {
        for (wait, now_ms, secs) in self.deferred.take().unwrap_or_default() {
            self.told(wait, now_ms, secs);
        }
    }

    /// Records a `Retry-After` given to the pair, for counting violations.
    pub(crate) fn told_to_wait(&mut self, app: &str, tenant: &str, now_ms: i64, secs: u64) {
        self.told(Wait::Pair(app.to_owned(), tenant.to_owned()), now_ms, secs);
    }

    /// Records a `Retry-After` given to `wait`, for counting violations.
    pub(crate) fn told(&mut self, wait: Wait, now_ms: i64, secs: u64) {
        if let Some(deferred) = self.deferred.as_mut() {
            deferred.push((wait, now_ms, secs));
            return;
        }
        let until = now_ms + (secs as i64) * 1000;
        let entry = match wait {
            Wait::Pair(app, tenant) => self.retry_after_until.entry((app, tenant)).or_insert(until),
            Wait::Reports(app, tenant) => self.report_until.entry((app, tenant)).or_insert(until),
            Wait::AppReports(app) => self.report_app_until.entry(app).or_insert(until),
        };
        *entry = (*entry).max(until);
    }

    /// Charges a report read to the reporting buckets of the (app, tenant) and of the app, or
    /// says how long to wait and which bucket is out (the one with the longer wait).
    pub(crate) fn charge_report(
        &mut self,
        settings: &ThrottleSettings,
        app: &str,
        tenant: &str,
        now_ms: i64,
    ) -> Result<(), (Throttled, Wait)> {
        if !settings.enabled {
            return Ok(());
        }
        let s = settings.scale.max(1e-9);
        let pair = self
            .app_tenant_reports
            .entry((app.to_owned(), tenant.to_owned()))
            .or_insert_with(|| Bucket::new(REPORTS_PER_TENANT * s, 10_000.0));
        pair.refill(now_ms);
        let pair_wait = pair.wait_ms(1.0);
        let whole = self
            .app_reports
            .entry(app.to_owned())
            .or_insert_with(|| Bucket::new(REPORTS_PER_APP * s, 10_000.0));
        whole.refill(now_ms);
        let app_wait = whole.wait_ms(1.0);
        if pair_wait > 0 || app_wait > 0 {
            let (wait, scope, bound) = if pair_wait >= app_wait {
                (
                    pair_wait,
                    format!("Tenant_Application/Read/{app}/{tenant}"),
                    Wait::Reports(app.to_owned(), tenant.to_owned()),
                )
            } else {
                (app_wait, format!("Application/Read/{app}/"), Wait::AppReports(app.to_owned()))
            };
            let secs = ((wait + 999) / 1000).max(1) as u64;
            return Err((Throttled { retry_after_secs: secs, scope, information: None }, bound));
        }
        whole.level -= 1.0;
        if let Some(pair) = self.app_tenant_reports.get_mut(&(app.to_owned(), tenant.to_owned())) {
            pair.level -= 1.0;
        }
        Ok(())
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
        let mut checks: Vec<(i64, String, Option<&'static str>)> = vec![
            (
                pair_ru.wait_ms(cost),
                format!("Tenant_Application/ReadWrite/{app}/{tenant}"),
                Some("ResourceUnitLimitExceeded"),
            ),
            (
                app_ru.wait_ms(cost),
                format!("Application/ReadWrite/{app}/"),
                Some("ResourceUnitLimitExceeded"),
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
                Some("WriteLimitExceeded"),
            ));
            checks.push((
                tenant_w.wait_ms(1.0),
                format!("Tenant/Write//{tenant}"),
                Some("WriteLimitExceeded"),
            ));
            checks.push((
                app_w.wait_ms(1.0),
                format!("Application/Write/{app}/"),
                Some("WriteLimitExceeded"),
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
        let settings = ThrottleSettings { scale: 0.001, ..ThrottleSettings::default() }; // 3.5 RU per 10 s
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
    fn report_reads_are_recognised() {
        assert!(is_report_read("GET", "/reports/authenticationMethods/userRegistrationDetails"));
        assert!(is_report_read("get", "/auditLogs/directoryAudits"));
        assert!(is_report_read("GET", "/AUDITLOGS/signIns"));
        assert!(!is_report_read("POST", "/reports/x"));
        assert!(!is_report_read("GET", "/groups"));
        assert!(!is_report_read("GET", "/reportsx"));
    }

    #[test]
    fn the_reports_buckets_hold_five_per_tenant_and_122_per_app() {
        let settings = ThrottleSettings::default();
        let mut t = Throttle::default();
        for _ in 0..5 {
            t.charge_report(&settings, "app", "t", 0).unwrap();
        }
        let (err, wait) = t.charge_report(&settings, "app", "t", 0).unwrap_err();
        assert_eq!(err.scope, "Tenant_Application/Read/app/t");
        assert_eq!(wait, Wait::Reports("app".into(), "t".into()));
        assert_eq!(err.retry_after_secs, 2);
        // 117 more in other tenants fill the app's bucket.
        for i in 0..117 {
            t.charge_report(&settings, "app", &format!("o{}", i / 5), 0).unwrap();
        }
        let (err, wait) = t.charge_report(&settings, "app", "fresh", 0).unwrap_err();
        assert_eq!(err.scope, "Application/Read/app/");
        assert_eq!(wait, Wait::AppReports("app".into()));
        // Resource units are not touched: identity reads still go.
        t.charge(&settings, "app", "t", 10, 1, false, 0).unwrap();
        // A report hold binds report reads only.
        t.told(wait, 0, 1);
        assert!(t.report_early_by_ms("app", "t", 500).is_some());
        assert!(!t.is_early("app", "t", 500));
        assert!(t.report_early_by_ms("app", "t", 1_000).is_none());
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
