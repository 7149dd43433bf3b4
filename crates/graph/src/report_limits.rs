//! Pacing of report reads. The Entra reporting APIs (`/reports/**`, `/auditLogs/**`) have
//! limits of their own, separate from resource units: 5 requests per 10 s per app per tenant
//! and 122 per 10 s per app across all tenants. Report reads wait here, not in the
//! resource-unit limiters, and a report 429 holds only report reads (of its tenant, or of
//! every tenant when it is scoped to the app), never writes or identity reads.
//!
//! Waiters form one queue ordered by [`ReportPriority`], then by arrival. Whenever budget may
//! have freed (a window entry expired, a hold ended, a waiter left), the queue is walked in
//! that order and every waiter whose tenant and app both have budget is let through; a waiter
//! whose app is out of budget keeps every lower waiter of that app waiting, so a higher
//! priority read is always served first when the app's budget frees. A waiter whose own
//! tenant is out of budget does not hold others back (its tenant's budget is its alone).
//! Waiting is on a [`Notify`] and a timer set to the instant the waiter's budget frees: no
//! polling.
//!
//! The windows are sliding logs of send times (at most 5, or the app's share of 122, per
//! key), so "N per 10 s" holds over any 10 s, plus a margin for the requests' travel time.
//! Time is tokio's, so tests drive it with a paused clock.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use parking_lot::Mutex;
use tokio::{sync::Notify, time::Instant};

/// Who waits first for report budget. Callers pick it per read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReportPriority {
    /// Work that can wait: scheduled readiness refreshes. Sent with
    /// `x-ms-throttle-priority: low`.
    Low,
    /// Onboarding and re-verification of tenants, planning.
    Normal,
    /// Rollout verification and gates: a rollout waits for them.
    High,
}

impl ReportPriority {
    /// The `x-ms-throttle-priority` header value sent with a read of this priority, if any
    /// (only `low`: the others are Graph's default).
    pub fn header(self) -> Option<&'static str> {
        (self == ReportPriority::Low).then_some("low")
    }

    /// A stable name, for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportPriority::Low => "low",
            ReportPriority::Normal => "normal",
            ReportPriority::High => "high",
        }
    }
}

/// Report reads per window per (app, tenant), and per app across tenants, as Graph documents
/// them.
pub(crate) const REPORTS_PER_TENANT: f64 = 5.0;
pub(crate) const REPORTS_PER_APP: f64 = 122.0;
/// Graph's window.
pub(crate) const REPORT_WINDOW: Duration = Duration::from_secs(10);
/// Added to the window: a request sent just after the window ended may still arrive within
/// it at Graph if the earlier one travelled longer.
pub(crate) const REPORT_MARGIN: Duration = Duration::from_millis(500);

type Pair = (String, String);

/// A budget of `count` sends per `window`.
#[derive(Debug, Clone, Copy)]
struct Budget {
    count: usize,
    window: Duration,
}

impl Budget {
    /// `per_window` per `window` (a fraction below 1 becomes 1 per a longer window).
    fn new(per_window: f64, window: Duration, margin: Duration) -> Self {
        let per_window = per_window.max(1e-6);
        if per_window >= 1.0 {
            Self { count: per_window.floor() as usize, window: window + margin }
        } else {
            Self { count: 1, window: window.div_f64(per_window) + margin }
        }
    }

    /// When one more send fits a log of send times (now if it does now).
    fn free_at(&self, log: &[Instant], now: Instant) -> Instant {
        let live = log.iter().filter(|&&t| t + self.window > now).count();
        if live < self.count {
            return now;
        }
        // The (live − count + 1)-th oldest live entry has to expire.
        let mut live: Vec<Instant> =
            log.iter().copied().filter(|&t| t + self.window > now).collect();
        live.sort_unstable();
        live[live.len() - self.count] + self.window
    }
}

struct Waiter {
    app: String,
    tenant: String,
    notify: Arc<Notify>,
    /// The send time recorded for it, once let through.
    granted: Option<Instant>,
}

#[derive(Default)]
struct State {
    seq: u64,
    tenants: HashMap<Pair, Vec<Instant>>,
    apps: HashMap<String, Vec<Instant>>,
    tenant_holds: HashMap<Pair, Instant>,
    app_holds: HashMap<String, Instant>,
    waiters: BTreeMap<(Reverse<ReportPriority>, u64), Waiter>,
}

/// Moves the send time `from` of a log to `to`, or adds `to` if `from` is gone.
fn restamp(log: &mut Vec<Instant>, from: Instant, to: Instant) {
    match log.iter_mut().find(|t| **t == from) {
        Some(t) => *t = to,
        None => log.push(to),
    }
}

impl State {
    /// Removes one send time of (app, tenant) from both logs.
    fn forget(&mut self, app: &str, tenant: &str, at: Instant) {
        let pair = (app.to_owned(), tenant.to_owned());
        if let Some(log) = self.tenants.get_mut(&pair)
            && let Some(i) = log.iter().position(|t| *t == at)
        {
            log.swap_remove(i);
        }
        if let Some(log) = self.apps.get_mut(app)
            && let Some(i) = log.iter().position(|t| *t == at)
        {
            log.swap_remove(i);
        }
    }
}

/// The report limiter of one client.
pub(crate) struct ReportLimits {
    tenant: Budget,
    app: Budget,
    state: Mutex<State>,
}

impl std::fmt::Debug for ReportLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportLimits")
            .field("per_tenant", &self.tenant.count)
            .field("per_app", &self.app.count)
            .finish_non_exhaustive()
    }
}

/// Budget taken by one report read: its send time in the logs, until it is sent (then
/// [`ReportLimits::sent`] moves it to the real send time) or given back.
#[derive(Debug)]
pub(crate) struct ReportGrant {
    app: String,
    tenant: String,
    at: Instant,
}

impl ReportLimits {
    /// `per_tenant` and `per_app` reads per `window` (plus `margin`).
    pub(crate) fn new(per_tenant: f64, per_app: f64, window: Duration, margin: Duration) -> Self {
        Self {
            tenant: Budget::new(per_tenant, window, margin),
            app: Budget::new(per_app, window, margin),
            state: Mutex::new(State::default()),
        }
    }

    /// Waits for the budget of one report read of `tenant` by `app`, behind every waiting
    /// read of higher priority (and earlier ones of the same priority) that the budget would
    /// be given to first.
    pub(crate) async fn acquire(
        &self,
        app: &str,
        tenant: &str,
        priority: ReportPriority,
    ) -> ReportGrant {
        let notify = Arc::new(Notify::new());
        let key = {
            let mut st = self.state.lock();
            st.seq += 1;
            let key = (Reverse(priority), st.seq);
            st.waiters.insert(
                key,
                Waiter {
                    app: app.to_owned(),
                    tenant: tenant.to_owned(),
                    notify: notify.clone(),
                    granted: None,
                },
            );
            key
        };
        let mut queued = Queued { limits: self, key: Some(key) };
        loop {
            let wake = {
                let mut st = self.state.lock();
                let now = Instant::now();
                self.dispatch(&mut st, now);
                if let Some(at) = st.waiters.get(&key).and_then(|w| w.granted) {
                    st.waiters.remove(&key);
                    queued.key = None;
                    return ReportGrant { app: app.to_owned(), tenant: tenant.to_owned(), at };
                }
                // Not before its own tenant's and app's budget frees; a higher waiter taking
                // the app's budget then just sets the next timer.
                self.free_at(&st, app, tenant, now).max(now + Duration::from_millis(1))
            };
            tokio::select! {
                () = notify.notified() => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Whether report reads of `tenant` by `app` are held by a report 429 now.
    pub(crate) fn held(&self, app: &str, tenant: &str) -> bool {
        let st = self.state.lock();
        let now = Instant::now();
        let pair = st.tenant_holds.get(&(app.to_owned(), tenant.to_owned())).copied();
        let whole = st.app_holds.get(app).copied();
        pair.max(whole).is_some_and(|u| u > now)
    }

    /// Moves a grant's entry in the logs to now: the read is being sent.
    pub(crate) fn sent(&self, grant: &ReportGrant) {
        let now = Instant::now();
        let mut st = self.state.lock();
        let pair = (grant.app.clone(), grant.tenant.clone());
        // An entry that expired while the read waited for its slot is recorded again.
        restamp(st.tenants.entry(pair).or_default(), grant.at, now);
        restamp(st.apps.entry(grant.app.clone()).or_default(), grant.at, now);
    }

    /// Gives a grant's budget back (the read was not sent) and lets waiters through.
    pub(crate) fn give_back(&self, grant: ReportGrant) {
        let mut st = self.state.lock();
        st.forget(&grant.app, &grant.tenant, grant.at);
        self.dispatch(&mut st, Instant::now());
    }

    /// Holds the report reads of `tenant` by `app` until `until` (a report 429).
    pub(crate) fn hold_tenant(&self, app: &str, tenant: &str, until: Instant) {
        let mut st = self.state.lock();
        let slot = st.tenant_holds.entry((app.to_owned(), tenant.to_owned())).or_insert(until);
        *slot = (*slot).max(until);
        Self::wake_all(&st);
    }

    /// Holds the report reads of `app` in every tenant until `until` (an app-scoped 429).
    pub(crate) fn hold_app(&self, app: &str, until: Instant) {
        let mut st = self.state.lock();
        let slot = st.app_holds.entry(app.to_owned()).or_insert(until);
        *slot = (*slot).max(until);
        Self::wake_all(&st);
    }

    /// Waiters recompute their timers (a hold moved them later).
    fn wake_all(st: &State) {
        for w in st.waiters.values().filter(|w| w.granted.is_none()) {
            w.notify.notify_one();
        }
    }

    /// When a read of `tenant` by `app` could go, by holds and budgets alone.
    fn free_at(&self, st: &State, app: &str, tenant: &str, now: Instant) -> Instant {
        let pair = (app.to_owned(), tenant.to_owned());
        let mut at = now;
        if let Some(&u) = st.tenant_holds.get(&pair) {
            at = at.max(u);
        }
        if let Some(&u) = st.app_holds.get(app) {
            at = at.max(u);
        }
        if let Some(log) = st.tenants.get(&pair) {
            at = at.max(self.tenant.free_at(log, now));
        }
        if let Some(log) = st.apps.get(app) {
            at = at.max(self.app.free_at(log, now));
        }
        at
    }

    /// Lets through, in queue order, every waiter whose tenant and app have budget now; a
    /// waiter stopped by its app's budget stops every later waiter of that app.
    fn dispatch(&self, st: &mut State, now: Instant) {
        let (tw, aw) = (self.tenant.window, self.app.window);
        st.tenants.retain(|_, log| {
            log.retain(|t| *t + tw > now);
            !log.is_empty()
        });
        st.apps.retain(|_, log| {
            log.retain(|t| *t + aw > now);
            !log.is_empty()
        });
        st.tenant_holds.retain(|_, u| *u > now);
        st.app_holds.retain(|_, u| *u > now);
        let mut apps_out: HashSet<String> = HashSet::new();
        let State { tenants, apps, tenant_holds, app_holds, waiters, .. } = st;
        for w in waiters.values_mut().filter(|w| w.granted.is_none()) {
            if apps_out.contains(&w.app) {
                continue;
            }
            let app_log = apps.get(&w.app).map_or(&[][..], Vec::as_slice);
            if app_holds.contains_key(&w.app) || self.app.free_at(app_log, now) > now {
                apps_out.insert(w.app.clone());
                continue;
            }
            let pair = (w.app.clone(), w.tenant.clone());
            let tenant_log = tenants.get(&pair).map_or(&[][..], Vec::as_slice);
            if tenant_holds.contains_key(&pair) || self.tenant.free_at(tenant_log, now) > now {
                continue;
            }
            tenants.entry(pair).or_default().push(now);
            apps.entry(w.app.clone()).or_default().push(now);
            w.granted = Some(now);
            w.notify.notify_one();
        }
    }
}

/// A waiter that is dropped (its call was cancelled) leaves the queue, and the waiters it
/// held back get their turn.
struct Queued<'a> {
    limits: &'a ReportLimits,
    key: Option<(Reverse<ReportPriority>, u64)>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut st = self.limits.state.lock();
        if let Some(w) = st.waiters.remove(&key)
            && let Some(at) = w.granted
        {
            // Granted but never taken: give the budget back.
            st.forget(&w.app, &w.tenant, at);
        }
        self.limits.dispatch(&mut st, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_tenant: f64, per_app: f64) -> Arc<ReportLimits> {
        Arc::new(ReportLimits::new(per_tenant, per_app, REPORT_WINDOW, Duration::ZERO))
    }

    #[tokio::test(start_paused = true)]
    async fn five_per_tenant_per_window_then_the_sixth_waits_for_the_window() {
        let l = limits(5.0, 122.0);
        let start = Instant::now();
        for _ in 0..5 {
            l.acquire("app", "t", ReportPriority::High).await;
        }
        assert_eq!(Instant::now(), start);
        // Another tenant still has its own five.
        l.acquire("app", "u", ReportPriority::Low).await;
        assert_eq!(Instant::now(), start);
        l.acquire("app", "t", ReportPriority::High).await;
        assert_eq!(Instant::now(), start + REPORT_WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_high_waiter_is_served_before_an_earlier_low_one() {
        // The app's budget is the bottleneck: 2 per window across tenants.
        let l = limits(5.0, 2.0);
        let start = Instant::now();
        l.acquire("app", "a", ReportPriority::Normal).await;
        l.acquire("app", "b", ReportPriority::Normal).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let spawn = |tenant: &'static str, p: ReportPriority| {
            let (l, order) = (l.clone(), order.clone());
            tokio::spawn(async move {
                l.acquire("app", tenant, p).await;
                order.lock().push((tenant, Instant::now() - start));
            })
        };
        let low = spawn("c", ReportPriority::Low);
        // The low waiter is queued first...
        tokio::time::sleep(Duration::from_secs(1)).await;
        let high = spawn("d", ReportPriority::High);
        let normal = spawn("e", ReportPriority::Normal);
        for task in [low, high, normal] {
            task.await.unwrap();
        }
        // ...but the high one gets the first freed budget, the normal one the second, and the
        // low one waits for the next window.
        assert_eq!(
            *order.lock(),
            vec![("d", REPORT_WINDOW), ("e", REPORT_WINDOW), ("c", REPORT_WINDOW * 2)]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_held_by_its_own_tenant_does_not_hold_back_other_tenants() {
        let l = limits(1.0, 10.0);
        let start = Instant::now();
        l.acquire("app", "a", ReportPriority::Low).await;
        let l2 = l.clone();
        let high = tokio::spawn(async move {
            l2.acquire("app", "a", ReportPriority::High).await;
            Instant::now()
        });
        tokio::task::yield_now().await;
        // Tenant a is out of budget: a low read of tenant b goes at once.
        l.acquire("app", "b", ReportPriority::Low).await;
        assert_eq!(Instant::now(), start);
        assert_eq!(high.await.unwrap(), start + REPORT_WINDOW);
    }

    #[tokio::test(start_paused = true)]
    async fn holds_bind_the_tenant_or_the_whole_app() {
        let l = limits(5.0, 122.0);
        let start = Instant::now();
        l.hold_tenant("app", "a", start + Duration::from_secs(3));
        assert!(l.held("app", "a") && !l.held("app", "b") && !l.held("other", "a"));
        l.acquire("app", "b", ReportPriority::Low).await;
        assert_eq!(Instant::now(), start);
        l.acquire("app", "a", ReportPriority::High).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(3));
        l.hold_app("app", Instant::now() + Duration::from_secs(2));
        assert!(l.held("app", "b"));
        l.acquire("app", "b", ReportPriority::High).await;
        assert_eq!(Instant::now(), start + Duration::from_secs(5));
        assert!(!l.held("app", "a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_lets_lower_ones_through_and_budget_given_back_is_reused() {
        let l = limits(5.0, 1.0);
        let start = Instant::now();
        let first = l.acquire("app", "a", ReportPriority::Low).await;
        let l2 = l.clone();
        let high = tokio::spawn(async move { l2.acquire("app", "b", ReportPriority::High).await });
        tokio::task::yield_now().await;
        high.abort();
        let _ = high.await;
        l.give_back(first);
        l.acquire("app", "c", ReportPriority::Low).await;
        assert_eq!(Instant::now(), start);
    }

    #[test]
    fn fractional_budgets_stretch_the_window() {
        let b = Budget::new(0.5, REPORT_WINDOW, Duration::ZERO);
        assert_eq!((b.count, b.window), (1, Duration::from_secs(20)));
        let b = Budget::new(109.8, REPORT_WINDOW, REPORT_MARGIN);
        assert_eq!((b.count, b.window), (109, Duration::from_millis(10_500)));
    }

    #[test]
    fn only_low_priority_reads_send_the_priority_header() {
        assert_eq!(ReportPriority::Low.header(), Some("low"));
        assert_eq!(ReportPriority::Normal.header(), None);
        assert_eq!(ReportPriority::High.header(), None);
        assert!(ReportPriority::High > ReportPriority::Normal);
    }
}
