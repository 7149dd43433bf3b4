//! Counters of Graph calls by endpoint, for `/metrics` and benchmarks. They are kept per
//! endpoint template only (about 20 of them), never per tenant, so their memory does not
//! grow with the fleet; token requests are kept per tenant (one small counter each).

use std::collections::BTreeMap;

use parking_lot::Mutex;

/// Counters of one endpoint.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointStats {
    /// Requests sent (each attempt counts).
    pub calls: u64,
    /// Requests answered with an error status or not answered.
    pub errors: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Attempts after the first.
    pub retries: u64,
    /// Sum of request latencies, in milliseconds.
    pub latency_ms_sum: f64,
    /// Requests by latency bucket upper bound in ms (10, 50, 100, 250, 500, 1000, 5000, inf).
    pub latency_buckets: [u64; 8],
}

impl EndpointStats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &EndpointStats) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.throttled += other.throttled;
        self.retries += other.retries;
        self.latency_ms_sum += other.latency_ms_sum;
        for (a, b) in self.latency_buckets.iter_mut().zip(other.latency_buckets) {
            *a += b;
        }
    }
}

/// Upper bounds of the latency buckets, in ms.
pub const LATENCY_BUCKETS_MS: [f64; 8] =
    [10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0, f64::INFINITY];

/// Whether an endpoint template is a read of the reporting APIs (`GET /reports/...`,
/// `GET /auditLogs/...`), which have limits of their own.
pub fn is_report_endpoint(endpoint: &str) -> bool {
    endpoint.strip_prefix("GET /").is_some_and(|path| {
        let first = path.split(['/', '?']).next().unwrap_or("");
        first.eq_ignore_ascii_case("reports") || first.eq_ignore_ascii_case("auditLogs")
    })
}

/// Waits of report reads for their budget, of one priority.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportWaits {
    /// Report reads let through (each attempt counts).
    pub reads: u64,
    /// Reads that had to wait (a millisecond or more) for budget or a report hold.
    pub waited: u64,
    /// Sum of the waits, in milliseconds.
    pub wait_ms_sum: f64,
}

/// Every counter, by endpoint template.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// The counters, by endpoint template (`GET /groups/{id}/members`).
    pub by_endpoint: BTreeMap<&'static str, EndpointStats>,
    /// Token requests sent, by tenant.
    pub token_requests: BTreeMap<String, u64>,
    /// Waits of report reads in the report limiter, by priority (`high`, `normal`, `low`).
    pub report_waits: BTreeMap<&'static str, ReportWaits>,
}

impl MetricsSnapshot {
    /// The counters of the report endpoints only (their `calls` are report reads sent, their
    /// `throttled` report 429s).
    pub fn reports(&self) -> BTreeMap<&'static str, EndpointStats> {
        self.by_endpoint
            .iter()
            .filter(|(e, _)| is_report_endpoint(e))
            .map(|(e, s)| (*e, s.clone()))
            .collect()
    }

    /// Counters summed over every endpoint.
    pub fn total(&self) -> EndpointStats {
        let mut t = EndpointStats::default();
        for s in self.by_endpoint.values() {
            t.add(s);
        }
        t
    }
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    inner: Mutex<MetricsSnapshot>,
}

impl Metrics {
    pub(crate) fn record(
        &self,
        endpoint: &'static str,
        status: Option<u16>,
        latency_ms: f64,
        retry: bool,
    ) {
        let mut m = self.inner.lock();
        let s = m.by_endpoint.entry(endpoint).or_default();
        s.calls += 1;
        if status.is_none_or(|s| s >= 400) {
            s.errors += 1;
        }
        if status == Some(429) {
            s.throttled += 1;
        }
        if retry {
            s.retries += 1;
        }
        s.latency_ms_sum += latency_ms;
        let bucket = LATENCY_BUCKETS_MS.iter().position(|&b| latency_ms <= b).unwrap_or(7);
        s.latency_buckets[bucket] += 1;
    }

    pub(crate) fn report_wait(&self, priority: &'static str, waited: std::time::Duration) {
        let mut m = self.inner.lock();
        let w = m.report_waits.entry(priority).or_default();
        w.reads += 1;
        // Under a millisecond is the queue's own bookkeeping, not a wait for budget.
        if waited >= std::time::Duration::from_millis(1) {
            w.waited += 1;
            w.wait_ms_sum += waited.as_secs_f64() * 1000.0;
        }
    }

    pub(crate) fn token_request(&self, tenant: &str) {
        *self.inner.lock().token_requests.entry(tenant.to_owned()).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        self.inner.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_endpoints_are_told_apart() {
        assert!(is_report_endpoint("GET /reports/authenticationMethods/userRegistrationDetails"));
        assert!(is_report_endpoint("GET /auditLogs/directoryAudits"));
        assert!(!is_report_endpoint("GET /groups/{id}/members"));
        assert!(!is_report_endpoint("POST /$batch"));
        let m = Metrics::default();
        m.record("GET /auditLogs/directoryAudits", Some(429), 1.0, false);
        m.record("GET /auditLogs/directoryAudits", Some(200), 1.0, true);
        m.record("GET /groups/{id}", Some(200), 1.0, false);
        m.report_wait("low", std::time::Duration::from_millis(1500));
        m.report_wait("low", std::time::Duration::ZERO);
        let snap = m.snapshot();
        let reports = snap.reports();
        assert_eq!(reports.len(), 1);
        assert_eq!(reports["GET /auditLogs/directoryAudits"].calls, 2);
        assert_eq!(reports["GET /auditLogs/directoryAudits"].throttled, 1);
        assert_eq!(
            snap.report_waits["low"],
            ReportWaits { reads: 2, waited: 1, wait_ms_sum: 1500.0 }
        );
    }
}
