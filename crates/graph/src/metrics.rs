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

/// Every counter, by endpoint template.
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    /// The counters, by endpoint template (`GET /groups/{id}/members`).
    pub by_endpoint: BTreeMap<&'static str, EndpointStats>,
    /// Token requests sent, by tenant.
    pub token_requests: BTreeMap<String, u64>,
}

impl MetricsSnapshot {
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

    pub(crate) fn token_request(&self, tenant: &str) {
        *self.inner.lock().token_requests.entry(tenant.to_owned()).or_default() += 1;
    }

    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        self.inner.lock().clone()
    }
}
