//! A rollout's specification: the desired state, which tenants, in which waves, behind which
//! gates. Immutable once the rollout starts; a change is a new rollout.

use serde::{Deserialize, Serialize};

use crate::{
    FieldProblem, SsprPolicy, TenantId,
    rollout::{Batches, Canary, FailureBudget},
};

/// Which tenants a rollout covers: the listed ids, plus every active tenant carrying any of the
/// tags, or every active tenant with `all`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSelector {
    /// Tenant ids (`ten_…`).
    #[serde(default)]
    pub tenant_ids: Vec<String>,
    /// Tags: a tenant with any of them is selected.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Every active tenant (within the caller's reach).
    #[serde(default)]
    pub all: bool,
}

fn default_batches() -> Batches {
    Batches::Count { size: 10 }
}

fn default_in_flight() -> usize {
    10
}

fn default_budget() -> FailureBudget {
    FailureBudget::Percent { percent: 20 }
}

/// How tenants are cut into waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WavePlan {
    /// Canary tenants, first and alone in wave 0.
    #[serde(default)]
    pub canary: Option<Canary>,
    /// The waves after the canaries (default: 10 tenants each).
    #[serde(default = "default_batches")]
    pub batches: Batches,
    /// Most tenants of a wave applying or verifying at once (default 10).
    #[serde(default = "default_in_flight")]
    pub max_in_flight: usize,
    /// Failures a wave tolerates before the whole rollout pauses with
    /// `failure_budget_exceeded` (default 20 %).
    #[serde(default = "default_budget")]
    pub failure_budget: FailureBudget,
}

impl Default for WavePlan {
    fn default() -> Self {
        Self {
            canary: None,
            batches: default_batches(),
            max_in_flight: default_in_flight(),
            failure_budget: default_budget(),
        }
    }
}

/// Who must approve moving from the pilot to everyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// Nobody: the other gates decide.
    #[default]
    None,
    /// Each tenant is approved on its own.
    PerTenant,
    /// A wave's tenants are approved together.
    PerWave,
}

fn default_deadline_hours() -> u32 {
    168
}

/// The gates between a tenant's pilot and everyone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    /// Minutes the pilot runs before the gate can pass (default 0).
    #[serde(default)]
    pub soak_minutes: u32,
    /// Minimum share of pilot users registered for SSPR (`isSsprRegistered`), in percent.
    #[serde(default)]
    pub min_registered_percent: u8,
    /// Minimum share of pilot users who can reset without a phone method (SMS and voice stop
    /// counting on 1 February 2027), in percent.
    #[serde(default)]
    pub min_capable_without_phone_percent: u8,
    /// Minimum self-service resets by pilot users seen in the audit log.
    #[serde(default)]
    pub min_pilot_resets: u32,
    /// Manual approval.
    #[serde(default)]
    pub approval: Approval,
    /// Hours a tenant may wait at the gate before it fails with `gate_deadline_exceeded`
    /// (default 168, one week).
    #[serde(default = "default_deadline_hours")]
    pub deadline_hours: u32,
}

impl Default for Gates {
    fn default() -> Self {
        Self {
            soak_minutes: 0,
            min_registered_percent: 0,
            min_capable_without_phone_percent: 0,
            min_pilot_resets: 0,
            approval: Approval::None,
            deadline_hours: default_deadline_hours(),
        }
    }
}

/// A rollout's specification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// A name for people, e.g. `SSPR Q4 wave`.
    pub name: String,
    /// The desired SSPR state.
    pub policy: SsprPolicy,
    /// Which tenants.
    pub selector: TenantSelector,
    /// Waves.
    #[serde(default)]
    pub waves: WavePlan,
    /// Gates.
    #[serde(default)]
    pub gates: Gates,
}

/// Most tenants one selector may list by id.
pub const MAX_SELECTED_IDS: usize = 10_000;

impl RolloutSpec {
    /// Every problem with the spec, field by field.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut p = Vec::new();
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
            p.push(FieldProblem::new(
                "name",
                "invalid_format",
                "1 to 200 characters without control characters",
            ));
        }
        p.extend(self.policy.problems("policy"));
        let s = &self.selector;
        if !s.all && s.tenant_ids.is_empty() && s.tags.is_empty() {
            p.push(FieldProblem::new(
                "selector",
                "required",
                "select tenants by tenant_ids, tags, or all",
            ));
        }
        if s.tenant_ids.len() > MAX_SELECTED_IDS {
            p.push(FieldProblem::new(
                "selector.tenant_ids",
                "too_many",
                format!("at most {MAX_SELECTED_IDS} ids"),
            ));
        }
        for (i, id) in s.tenant_ids.iter().enumerate() {
            if id.parse::<TenantId>().is_err() {
                p.push(FieldProblem::new(
                    format!("selector.tenant_ids[{i}]"),
                    "invalid_format",
                    "a tenant id, ten_…",
                ));
            }
        }
        for (i, tag) in s.tags.iter().enumerate() {
            let t = tag.trim();
            if t.is_empty() || t.len() > 64 {
                p.push(FieldProblem::new(
                    format!("selector.tags[{i}]"),
                    "invalid_format",
                    "1 to 64 characters",
                ));
            }
        }
        let w = &self.waves;
        if let Some(Canary::First { count: 0 }) = w.canary {
            p.push(FieldProblem::new("waves.canary.count", "out_of_range", "at least 1"));
        }
        if let Some(Canary::Tenants { tenant_ids }) = &w.canary {
            if tenant_ids.is_empty() {
                p.push(FieldProblem::new(
                    "waves.canary.tenant_ids",
                    "required",
                    "name at least one tenant",
                ));
            }
            for (i, id) in tenant_ids.iter().enumerate() {
                if id.parse::<TenantId>().is_err() {
                    p.push(FieldProblem::new(
                        format!("waves.canary.tenant_ids[{i}]"),
                        "invalid_format",
                        "a tenant id, ten_…",
                    ));
                }
            }
        }
        match w.batches {
            Batches::Count { size: 0 } => {
                p.push(FieldProblem::new("waves.batches.size", "out_of_range", "at least 1"))
            }
            Batches::Percent { percent } if !(1..=100).contains(&percent) => {
                p.push(FieldProblem::new("waves.batches.percent", "out_of_range", "1 to 100"))
            }
            _ => {}
        }
        if !(1..=1000).contains(&w.max_in_flight) {
            p.push(FieldProblem::new("waves.max_in_flight", "out_of_range", "1 to 1000"));
        }
        if matches!(w.failure_budget, FailureBudget::Percent { percent } if percent > 100) {
            p.push(FieldProblem::new("waves.failure_budget.percent", "out_of_range", "0 to 100"));
        }
        let g = &self.gates;
        if g.min_capable_without_phone_percent > 100 {
            p.push(FieldProblem::new(
                "gates.min_capable_without_phone_percent",
                "out_of_range",
                "0 to 100",
            ));
        }
        if g.min_registered_percent > 100 {
            p.push(FieldProblem::new("gates.min_registered_percent", "out_of_range", "0 to 100"));
        }
        if g.soak_minutes > 60 * 24 * 90 {
            p.push(FieldProblem::new("gates.soak_minutes", "out_of_range", "at most 90 days"));
        }
        if !(1..=24 * 90).contains(&g.deadline_hours) {
            p.push(FieldProblem::new("gates.deadline_hours", "out_of_range", "1 to 2160"));
        } else if u64::from(g.soak_minutes) > u64::from(g.deadline_hours) * 60 {
            p.push(FieldProblem::new(
                "gates.deadline_hours",
                "shorter_than_soak",
                "the deadline must leave room for the soak time",
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: serde_json::Value) -> RolloutSpec {
        let mut base = serde_json::json!({
            "name": "Q4 SSPR",
            "policy": {"pilot_group": {"name": "SSPR pilot", "members": ["pilot@contoso.com"]}},
            "selector": {"tags": ["wave-1"]},
        });
        if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        serde_json::from_value(base).unwrap_or_else(|e| panic!("{e}"))
    }

    fn codes(s: &RolloutSpec) -> Vec<(String, &'static str)> {
        s.problems().into_iter().map(|p| (p.field, p.code)).collect()
    }

    #[test]
    fn a_minimal_spec_is_valid_with_safe_defaults() {
        let s = spec(serde_json::json!({}));
        assert!(codes(&s).is_empty(), "{:?}", codes(&s));
        assert_eq!(s.waves.batches, Batches::Count { size: 10 });
        assert_eq!(s.waves.failure_budget, FailureBudget::Percent { percent: 20 });
        assert_eq!(s.gates.approval, Approval::None);
        assert_eq!(s.gates.deadline_hours, 168);
    }

    #[test]
    fn every_bad_field_is_named_with_its_path() {
        let s = spec(serde_json::json!({
            "name": " ",
            "selector": {"tenant_ids": ["nope"]},
            "waves": {"canary": {"kind": "first", "count": 0}, "batches": {"kind": "percent", "percent": 0}, "max_in_flight": 0, "failure_budget": {"kind": "percent", "percent": 120}},
            "gates": {"min_registered_percent": 101, "min_capable_without_phone_percent": 101, "soak_minutes": 600, "deadline_hours": 2},
            "policy": {"methods": {"security_questions": true}, "pilot_group": {"name": "p", "members": ["x@y.z"]}},
        }));
        let got = codes(&s);
        for expected in [
            ("name", "invalid_format"),
            ("selector.tenant_ids[0]", "invalid_format"),
            ("waves.canary.count", "out_of_range"),
            ("waves.batches.percent", "out_of_range"),
            ("waves.max_in_flight", "out_of_range"),
            ("waves.failure_budget.percent", "out_of_range"),
            ("gates.min_capable_without_phone_percent", "out_of_range"),
            ("gates.min_registered_percent", "out_of_range"),
            ("gates.deadline_hours", "shorter_than_soak"),
            ("policy.methods.security_questions", "not_allowed"),
        ] {
            assert!(
                got.contains(&(expected.0.to_owned(), expected.1)),
                "{expected:?} not in {got:?}"
            );
        }
    }

    #[test]
    fn a_selector_is_required_and_unknown_fields_refused() {
        let s = spec(serde_json::json!({"selector": {}}));
        assert!(codes(&s).contains(&("selector".to_owned(), "required")));
        let bad = serde_json::json!({"name": "x", "policy": {"pilot_group": {"name": "p", "members": ["a@b.c"]}}, "selector": {"all": true}, "speed": 2});
        assert!(serde_json::from_value::<RolloutSpec>(bad).is_err());
    }
}
