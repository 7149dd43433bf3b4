//! Simulated time: wall time since the simulator started, scaled by a speed factor, plus
//! whatever tests or the control API add. Tokens, leases, `Retry-After`, registrations and
//! replication delays all read this clock.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Instant,
};

use chrono::{DateTime, TimeDelta, Utc};

/// The simulator's clock. Clones share the same time.
#[derive(Debug, Clone)]
pub struct SimClock {
    start_real: Instant,
    start_sim: DateTime<Utc>,
    /// Speed of simulated time relative to wall time, in thousandths (1000 = real time,
    /// 0 = frozen: only `advance` moves it).
    speed_milli: i64,
    offset_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// A clock starting at `start` that runs at `speed` times wall time (0 freezes it).
    pub fn new(start: DateTime<Utc>, speed: f64) -> Self {
        Self {
            start_real: Instant::now(),
            start_sim: start,
            speed_milli: (speed.max(0.0) * 1000.0).round() as i64,
            offset_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> DateTime<Utc> {
        self.start_sim + TimeDelta::milliseconds(self.elapsed_ms())
    }

    /// Milliseconds of simulated time since the simulator started.
    pub fn elapsed_ms(&self) -> i64 {
        let real = i64::try_from(self.start_real.elapsed().as_millis()).unwrap_or(i64::MAX);
        real.saturating_mul(self.speed_milli) / 1000 + self.offset_ms.load(Ordering::SeqCst)
    }

    /// Whole seconds of simulated time since start (the unit of per-user timestamps).
    pub fn elapsed_secs(&self) -> i64 {
        self.elapsed_ms().div_euclid(1000)
    }

    /// The simulated time at `secs` seconds after start.
    pub fn at_secs(&self, secs: i64) -> DateTime<Utc> {
        self.start_sim + TimeDelta::seconds(secs)
    }

    /// Moves simulated time forward (or back, to model a clock jump).
    pub fn advance(&self, by: TimeDelta) {
        self.offset_ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }

    /// Wall-clock milliseconds that correspond to `sim_ms` of simulated time (for sleeping
    /// latency faults); with a frozen clock, simulated latency is served in real time.
    pub fn real_ms_for(&self, sim_ms: u64) -> u64 {
        if self.speed_milli <= 0 {
            sim_ms
        } else {
            sim_ms.saturating_mul(1000) / self.speed_milli as u64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frozen_clock_moves_only_when_advanced() {
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let clock = SimClock::new(start, 0.0);
        assert_eq!(clock.now(), start);
        clock.advance(TimeDelta::seconds(90));
        assert_eq!(clock.now(), start + TimeDelta::seconds(90));
        assert_eq!(clock.elapsed_secs(), 90);
        clock.advance(TimeDelta::seconds(-100));
        assert_eq!(clock.elapsed_secs(), -10);
    }
}
