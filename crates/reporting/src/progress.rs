//! The rollout progress read model: how far a rollout is, how fast it goes, and when it should
//! end at that pace.
//!
//! Throughput is tenants finished per hour: over the recent window when tenants finished in
//! it (the pace now, which waves and approvals change), otherwise over the whole run. The ETA
//! is the remaining tenants at that pace; there is none while nothing has finished yet or the
//! rollout is not running (a paused rollout has no end in sight).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// How long the "recent" window of the throughput is.
pub const RECENT_WINDOW: TimeDelta = TimeDelta::minutes(15);

/// What the estimate is made from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProgressInput {
    /// Tenants of the rollout (within the caller's reach).
    pub total: u64,
    /// Of those, in a finished state.
    pub finished: u64,
    /// Of those, finished within the last [`RECENT_WINDOW`].
    pub finished_recently: u64,
    /// When the rollout started.
    pub started_at: DateTime<Utc>,
    /// When its last tenant finished, if any.
    pub last_finished_at: Option<DateTime<Utc>>,
    /// Whether the rollout is running (not paused, finished or rolling back).
    pub running: bool,
    /// Now.
    pub now: DateTime<Utc>,
}

/// Where a rollout stands and when it should end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Progress {
    /// Tenants in a finished state (completed, failed, blocked, cancelled, rolled back).
    pub finished: u64,
    /// Tenants not finished yet.
    pub remaining: u64,
    /// Finished share, 0 to 100.
    pub percent: f64,
    /// Tenants finished per hour, when it can be told.
    pub throughput_per_hour: Option<f64>,
    /// What the throughput is measured over: `recent` (the last 15 minutes) or `overall`.
    pub throughput_basis: Option<String>,
    /// When the rollout should finish at that pace (running rollouts only).
    pub eta: Option<DateTime<Utc>>,
}

fn hours(d: TimeDelta) -> f64 {
    d.num_milliseconds() as f64 / 3_600_000.0
}

/// The estimate.
pub fn estimate(i: &ProgressInput) -> Progress {
    let remaining = i.total.saturating_sub(i.finished);
    let percent = if i.total == 0 {
        100.0
    } else {
        (i.finished as f64 * 1000.0 / i.total as f64).round() / 10.0
    };
    let elapsed = i.now - i.started_at;
    // The recent window, shortened to the rollout's age when it is younger.
    let window = if elapsed < RECENT_WINDOW { elapsed } else { RECENT_WINDOW };
    let (rate, basis) = if i.finished_recently > 0 && hours(window) > 0.0 {
        (Some(i.finished_recently as f64 / hours(window)), Some("recent"))
    } else {
        match i.last_finished_at {
            Some(last) if i.finished > 0 && hours(last - i.started_at) > 0.0 => {
                (Some(i.finished as f64 / hours(last - i.started_at)), Some("overall"))
            }
            _ => (None, None),
        }
    };
    let eta = match rate {
        Some(r) if i.running && remaining > 0 && r > 0.0 => {
            let ms = (remaining as f64 / r * 3_600_000.0).min(i64::MAX as f64 / 2.0) as i64;
            i.now.checked_add_signed(TimeDelta::milliseconds(ms))
        }
        _ => None,
    };
    Progress {
        finished: i.finished,
        remaining,
        percent,
        throughput_per_hour: rate.map(|r| (r * 10.0).round() / 10.0),
        throughput_basis: basis.map(str::to_owned),
        eta,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::minutes(minutes)
    }

    fn input() -> ProgressInput {
        ProgressInput {
            total: 100,
            finished: 40,
            finished_recently: 10,
            started_at: at(0),
            last_finished_at: Some(at(60)),
            running: true,
            now: at(60),
        }
    }

    #[test]
    fn the_recent_pace_gives_the_eta() {
        let p = estimate(&input());
        assert_eq!((p.finished, p.remaining, p.percent), (40, 60, 40.0));
        // 10 in 15 minutes is 40 an hour; 60 left is 90 minutes.
        assert_eq!(p.throughput_per_hour, Some(40.0));
        assert_eq!(p.throughput_basis.as_deref(), Some("recent"));
        assert_eq!(p.eta, Some(at(150)));
    }

    #[test]
    fn without_recent_finishes_the_whole_run_counts() {
        let p = estimate(&ProgressInput { finished_recently: 0, now: at(120), ..input() });
        // 40 over the 60 minutes up to the last finish.
        assert_eq!(p.throughput_per_hour, Some(40.0));
        assert_eq!(p.throughput_basis.as_deref(), Some("overall"));
        assert_eq!(p.eta, Some(at(210)));
    }

    #[test]
    fn a_young_rollout_measures_over_its_age() {
        let p = estimate(&ProgressInput {
            finished: 5,
            finished_recently: 5,
            last_finished_at: Some(at(5)),
            now: at(5),
            ..input()
        });
        assert_eq!(p.throughput_per_hour, Some(60.0));
        assert_eq!(p.eta, Some(at(5 + 95)));
    }

    #[test]
    fn no_eta_when_paused_done_or_nothing_finished() {
        assert_eq!(estimate(&ProgressInput { running: false, ..input() }).eta, None);
        let none = estimate(&ProgressInput {
            finished: 0,
            finished_recently: 0,
            last_finished_at: None,
            ..input()
        });
        assert_eq!((none.throughput_per_hour, none.eta), (None, None));
        let done = estimate(&ProgressInput { finished: 100, ..input() });
        assert_eq!((done.remaining, done.percent, done.eta), (0, 100.0, None));
        let empty = estimate(&ProgressInput { total: 0, finished: 0, ..input() });
        assert_eq!(empty.percent, 100.0);
    }
}
