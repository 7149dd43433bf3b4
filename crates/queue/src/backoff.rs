//! Retry delays: exponential with equal jitter.

use std::time::Duration;

use rand::Rng;

/// Exponential backoff with equal jitter: attempt `n` waits between half and all of
/// `base * 2^(n-1)`, capped at `max`. The jitter spreads retries of jobs that failed together
/// (say, a throttled tenant) so they do not return together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry, before jitter.
    pub base: Duration,
    /// The longest delay, before jitter.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(10), max: Duration::from_secs(30 * 60) }
    }
}

impl Backoff {
    /// The delay before jitter after failed attempt `attempt` (1 for the first attempt).
    pub fn ceiling(&self, attempt: i32) -> Duration {
        let exponent = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(31);
        self.base.saturating_mul(1_u32 << exponent).min(self.max)
    }

    /// A jittered delay after failed attempt `attempt`: uniform in `[ceiling/2, ceiling]`.
    pub fn delay(&self, attempt: i32) -> Duration {
        self.delay_with(attempt, rand::rng().random_range(0.0..=1.0))
    }

    /// The delay for a given jitter draw `unit` in `[0, 1]` (0 gives the shortest delay).
    pub fn delay_with(&self, attempt: i32, unit: f64) -> Duration {
        let ceiling = self.ceiling(attempt);
        let half = ceiling / 2;
        half + (ceiling - half).mul_f64(unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_per_attempt_up_to_the_cap_with_equal_jitter() {
        let b = Backoff { base: Duration::from_secs(10), max: Duration::from_secs(60) };
        assert_eq!(b.ceiling(1), Duration::from_secs(10));
        assert_eq!(b.ceiling(2), Duration::from_secs(20));
        assert_eq!(b.ceiling(3), Duration::from_secs(40));
        assert_eq!(b.ceiling(4), Duration::from_secs(60));
        assert_eq!(b.ceiling(1000), Duration::from_secs(60));
        assert_eq!(b.ceiling(0), Duration::from_secs(10));
        assert_eq!(b.delay_with(3, 0.0), Duration::from_secs(20));
        assert_eq!(b.delay_with(3, 1.0), Duration::from_secs(40));
        for attempt in 1..10 {
            let d = b.delay(attempt);
            assert!(d >= b.ceiling(attempt) / 2 && d <= b.ceiling(attempt), "{d:?}");
        }
    }
}
