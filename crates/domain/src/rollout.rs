//! The rollout's pure logic: the per-tenant state machine (PRODUCT.md §2), the wave plan
//! across tenants, and the failure budget that pauses a rollout (§3).

use serde::{Deserialize, Serialize};

/// Where one tenant stands in a rollout.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    PartialOrd,
    Ord,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TenantState {
    /// Waiting for its wave.
    Pending,
    /// Checking licence, consent, migration state and hybrid.
    Preflight,
    /// Cannot proceed; the reason is a stable code.
    Blocked,
    /// Preflight passed; waiting to apply the pilot.
    Ready,
    /// Scope group, pilot members, methods and campaign being targeted at the group.
    PilotApplying,
    /// Waiting for pilot users to show `isSsprEnabled` (and, in manual mode, the attested task).
    PilotVerifying,
    /// Waiting for the gates between pilot and all (soak, registrations, resets, approval).
    Gate,
    /// Methods and campaign moving to all users; the scope group to every member.
    AllApplying,
    /// Checking the result across users.
    AllVerifying,
    /// Done.
    Completed,
    /// Stopped with a reason and the Graph error.
    Failed,
    /// Held by an operator or by the failure budget; resumes where it stood.
    Paused,
    /// Stopped for good by an operator.
    Cancelled,
    /// Every change undone from the snapshots.
    RolledBack,
}

impl TenantState {
    /// Every state, in rollout order.
    pub const ALL: [TenantState; 14] = [
        Self::Pending,
        Self::Preflight,
        Self::Blocked,
        Self::Ready,
        Self::PilotApplying,
        Self::PilotVerifying,
        Self::Gate,
        Self::AllApplying,
        Self::AllVerifying,
        Self::Completed,
        Self::Failed,
        Self::Paused,
        Self::Cancelled,
        Self::RolledBack,
    ];

    /// The state's name in the API and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Preflight => "preflight",
            Self::Blocked => "blocked",
            Self::Ready => "ready",
            Self::PilotApplying => "pilot_applying",
            Self::PilotVerifying => "pilot_verifying",
            Self::Gate => "gate",
            Self::AllApplying => "all_applying",
            Self::AllVerifying => "all_verifying",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Paused => "paused",
            Self::Cancelled => "cancelled",
            Self::RolledBack => "rolled_back",
        }
    }

    /// Parses a state name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// No further step runs: completed, cancelled, rolled back. (Failed and blocked tenants can
    /// be retried; paused ones resumed.)
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Cancelled | Self::RolledBack)
    }

    /// The tenant counts against its wave's capacity ("in flight").
    pub fn is_in_flight(self) -> bool {
        matches!(
            self,
            Self::Preflight
                | Self::Ready
                | Self::PilotApplying
                | Self::PilotVerifying
                | Self::Gate
                | Self::AllApplying
                | Self::AllVerifying
        )
    }

    /// The next state when the current step succeeds.
    pub fn on_success(self) -> Option<Self> {
        Some(match self {
            Self::Pending => Self::Preflight,
            Self::Preflight => Self::Ready,
            Self::Ready => Self::PilotApplying,
            Self::PilotApplying => Self::PilotVerifying,
            Self::PilotVerifying => Self::Gate,
            Self::Gate => Self::AllApplying,
            Self::AllApplying => Self::AllVerifying,
            Self::AllVerifying => Self::Completed,
            _ => return None,
        })
    }

    /// Whether moving from `self` to `to` is allowed. `resume_to` is where a paused tenant
    /// stood before it was paused.
    pub fn may_move_to(self, to: Self, resume_to: Option<Self>) -> bool {
        if self.on_success() == Some(to) {
            return true;
        }
        match (self, to) {
            (Self::Preflight, Self::Blocked) => true,
            // Retry: a blocked or failed tenant starts again from preflight (steps are
            // idempotent, so what was already applied is found in place).
            (Self::Blocked | Self::Failed, Self::Preflight) => true,
            (Self::Paused, next) => {
                resume_to == Some(next) || matches!(next, Self::Cancelled | Self::RolledBack)
            }
            (from, Self::Failed | Self::Paused) => {
                !from.is_final()
                    && from != Self::Paused
                    && from != Self::Failed
                    && from != Self::Blocked
            }
            (from, Self::Cancelled) => !from.is_final(),
            // Rollback restores the snapshots of whatever was applied.
            (from, Self::RolledBack) => from != Self::RolledBack && from != Self::Pending,
            _ => false,
        }
    }

    /// Whether Graph may see `all_users` targets for this tenant in this state (the pilot gate
    /// has passed).
    pub fn past_pilot_gate(self) -> bool {
        matches!(self, Self::AllApplying | Self::AllVerifying | Self::Completed)
    }
}

/// Which tenants go first, as canaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Canary {
    /// These tenants (ids), in this order.
    Tenants {
        /// Tenant ids.
        tenant_ids: Vec<String>,
    },
    /// The first `count` tenants of the selection.
    First {
        /// How many.
        count: usize,
    },
}

/// How the rest is cut into waves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Batches {
    /// Waves of `size` tenants.
    Count {
        /// Tenants per wave.
        size: usize,
    },
    /// Waves of `percent` of the tenants after the canaries (rounded up, at least one).
    Percent {
        /// 1 to 100.
        percent: u8,
    },
}

/// Cuts `tenants` (in selection order) into waves: the canaries first (explicit ones that are
/// not in the selection are ignored), then batches of the rest. No tenant appears twice; every
/// tenant appears once; no wave is empty.
pub fn plan_waves(
    tenants: &[String],
    canary: Option<&Canary>,
    batches: Batches,
) -> Vec<Vec<String>> {
    let mut waves = Vec::new();
    let mut rest: Vec<String> = tenants.to_vec();
    match canary {
        Some(Canary::Tenants { tenant_ids }) => {
            let mut wave = Vec::new();
            for id in tenant_ids {
                if let Some(i) = rest.iter().position(|t| t == id) {
                    wave.push(rest.remove(i));
                }
            }
            if !wave.is_empty() {
                waves.push(wave);
            }
        }
        Some(Canary::First { count }) if *count > 0 => {
            let n = (*count).min(rest.len());
            let wave: Vec<String> = rest.drain(..n).collect();
            if !wave.is_empty() {
                waves.push(wave);
            }
        }
        _ => {}
    }
    let size = match batches {
        Batches::Count { size } => size.max(1),
        Batches::Percent { percent } => {
            let p = usize::from(percent.clamp(1, 100));
            (rest.len() * p).div_ceil(100).max(1)
        }
    };
    for chunk in rest.chunks(size) {
        waves.push(chunk.to_vec());
    }
    waves
}

/// How many failures a wave tolerates before the rollout pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum FailureBudget {
    /// At most this many failed tenants per wave.
    Count {
        /// Failures tolerated.
        max: usize,
    },
    /// At most this share of the wave, in percent.
    Percent {
        /// 0 to 100.
        percent: u8,
    },
}

impl FailureBudget {
    /// Whether `failed` failures in a wave of `size` tenants exceed the budget.
    pub fn exceeded(self, failed: usize, size: usize) -> bool {
        match self {
            Self::Count { max } => failed > max,
            // failed / size > percent / 100, in integers.
            Self::Percent { percent } => failed * 100 > usize::from(percent) * size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("t{i}")).collect()
    }

    #[test]
    fn the_happy_path_runs_pilot_before_all() {
        let mut s = TenantState::Pending;
        let mut path = vec![s];
        while let Some(next) = s.on_success() {
            assert!(s.may_move_to(next, None), "{s:?} -> {next:?}");
            s = next;
            path.push(s);
        }
        assert_eq!(s, TenantState::Completed);
        let gate = path.iter().position(|s| *s == TenantState::Gate).unwrap();
        assert!(path[..=gate].iter().all(|s| !s.past_pilot_gate()));
        assert!(path[gate + 1..].iter().all(|s| s.past_pilot_gate()));
    }

    #[test]
    fn states_round_trip_and_illegal_moves_are_refused() {
        for s in TenantState::ALL {
            assert_eq!(TenantState::parse(s.as_str()), Some(s));
        }
        use TenantState::*;
        assert!(!Pending.may_move_to(AllApplying, None));
        assert!(!PilotVerifying.may_move_to(AllApplying, None), "the gate cannot be skipped");
        assert!(!Completed.may_move_to(Failed, None));
        assert!(!Cancelled.may_move_to(Preflight, None));
        assert!(Failed.may_move_to(Preflight, None));
        assert!(Blocked.may_move_to(Preflight, None));
        assert!(Gate.may_move_to(Paused, None));
        assert!(Paused.may_move_to(Gate, Some(Gate)));
        assert!(!Paused.may_move_to(AllApplying, Some(Gate)), "resume goes back where it stood");
        assert!(Completed.may_move_to(RolledBack, None));
        assert!(!Pending.may_move_to(RolledBack, None));
    }

    #[test]
    fn waves_put_canaries_first_and_cover_every_tenant_once() {
        let t = ids(10);
        let waves = plan_waves(
            &t,
            Some(&Canary::Tenants { tenant_ids: vec!["t7".into(), "zz".into(), "t2".into()] }),
            Batches::Count { size: 3 },
        );
        assert_eq!(waves[0], vec!["t7", "t2"]);
        assert_eq!(waves.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 3, 3, 2]);
        let mut all: Vec<String> = waves.concat();
        all.sort();
        let mut expected = t.clone();
        expected.sort();
        assert_eq!(all, expected);

        let waves =
            plan_waves(&t, Some(&Canary::First { count: 1 }), Batches::Percent { percent: 25 });
        assert_eq!(waves.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 3, 3, 3]);
        assert!(
            plan_waves(&[], Some(&Canary::First { count: 2 }), Batches::Count { size: 5 })
                .is_empty()
        );
        assert_eq!(plan_waves(&ids(3), None, Batches::Count { size: 0 }).len(), 3);
    }

    #[test]
    fn failure_budgets_count_and_share() {
        assert!(!FailureBudget::Count { max: 1 }.exceeded(1, 10));
        assert!(FailureBudget::Count { max: 1 }.exceeded(2, 10));
        assert!(!FailureBudget::Percent { percent: 20 }.exceeded(2, 10));
        assert!(FailureBudget::Percent { percent: 20 }.exceeded(3, 10));
        assert!(FailureBudget::Percent { percent: 0 }.exceeded(1, 50));
    }
}
