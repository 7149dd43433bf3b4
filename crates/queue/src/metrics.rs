//! What a worker counts about the jobs it runs, for `/metrics`: outcomes per kind, how long
//! jobs waited past their due time before a worker claimed them, and how long they ran.

use std::{collections::BTreeMap, time::Duration};

use parking_lot::Mutex;

/// Upper bounds of the latency buckets, in seconds (the last one is +Inf).
pub const LATENCY_BUCKETS_SECS: [f64; 12] =
    [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, f64::INFINITY];

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// The job is done.
    Succeeded,
    /// Not yet: queued again for later without spending an attempt.
    Snoozed,
    /// Failed; will be retried.
    Retried,
    /// Failed for good.
    Failed,
    /// The lease was lost (another worker may run it).
    LeaseLost,
}

impl Outcome {
    /// Every outcome, in label order.
    pub const ALL: [Outcome; 5] =
        [Self::Succeeded, Self::Snoozed, Self::Retried, Self::Failed, Self::LeaseLost];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Snoozed => "snoozed",
            Self::Retried => "retried",
            Self::Failed => "failed",
            Self::LeaseLost => "lease_lost",
        }
    }
}

/// A latency histogram: per-bucket counts (not cumulative), the sum and the count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    /// Observations per bucket of [`LATENCY_BUCKETS_SECS`].
    pub buckets: [u64; 12],
    /// Sum of the observations, in seconds.
    pub sum_secs: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS_SECS.iter().position(|&b| secs <= b).unwrap_or(11);
        self.buckets[i] += 1;
        self.sum_secs += secs;
        self.count += 1;
    }
}

/// What was counted for one job kind.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KindStats {
    /// Attempts by outcome.
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Time from a job's due time to its claim.
    pub wait: Histogram,
    /// Time an attempt ran.
    pub run: Histogram,
}

/// The counters of one worker (shared with `/metrics`; cheap to lock).
#[derive(Debug, Default)]
pub struct QueueMetrics {
    by_kind: Mutex<BTreeMap<String, KindStats>>,
}

impl QueueMetrics {
    /// Records one attempt of a job of `kind`.
    pub fn record(&self, kind: &str, wait: Duration, run: Duration, outcome: Outcome) {
        let mut m = self.by_kind.lock();
        let s = m.entry(kind.to_owned()).or_default();
        *s.outcomes.entry(outcome).or_insert(0) += 1;
        s.wait.observe(wait);
        s.run.observe(run);
    }

    /// A copy of the counters, by kind.
    pub fn snapshot(&self) -> BTreeMap<String, KindStats> {
        self.by_kind.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_are_counted_by_kind_outcome_and_bucket() {
        let m = QueueMetrics::default();
        m.record("a", Duration::from_millis(5), Duration::from_millis(300), Outcome::Succeeded);
        m.record("a", Duration::from_secs(100), Duration::from_secs(2), Outcome::Retried);
        m.record("b", Duration::ZERO, Duration::ZERO, Outcome::LeaseLost);
        let s = m.snapshot();
        let a = &s["a"];
        assert_eq!(a.outcomes[&Outcome::Succeeded], 1);
        assert_eq!(a.outcomes[&Outcome::Retried], 1);
        assert_eq!(a.wait.buckets[0], 1, "5 ms is in the 10 ms bucket");
        assert_eq!(a.wait.buckets[11], 1, "100 s is only in +Inf");
        assert_eq!(a.run.buckets[4], 1, "300 ms is in the 0.5 s bucket");
        assert_eq!(a.run.buckets[6], 1, "2 s is in the 2.5 s bucket");
        assert_eq!(a.run.count, 2);
        assert!((a.run.sum_secs - 2.3).abs() < 1e-9);
        assert_eq!(s["b"].outcomes[&Outcome::LeaseLost], 1);
    }
}
