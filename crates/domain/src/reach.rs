//! What a caller restricted to some tenants may see of a rollout that spans more: the spec, the
//! rollout's reason and its rollout-wide history entries, each computed from the tenants in
//! reach. One rollout may cover several customers; a key (or a webhook subscription) of one
//! customer must learn nothing of the others: no ids, no domains, no pilot users, no counts.
//!
//! The rule is a whitelist: what is not known to be fleet-free is withheld, so a field added to
//! an entry later stays hidden from restricted callers until someone decides it may be shown.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::{DOMAIN_PLACEHOLDER, RolloutSpec, rollout::Canary};

/// Keys of a rollout-wide history entry's `detail` that carry no fact about any tenant: the
/// wave number, a reason code, the number of waves.
const FLEET_FREE_DETAIL: [&str; 4] = ["wave", "reason", "budget_override", "wave_count"];

/// The tally a finished rollout records as its reason, e.g. `3 failed, 2 blocked`: every state
/// but `completed` with its count, in the order given. `None` when every tenant completed.
pub fn completion_tally<'a>(counts: impl IntoIterator<Item = (&'a str, u64)>) -> Option<String> {
    let parts: Vec<String> = counts
        .into_iter()
        .filter(|(state, n)| *state != "completed" && *n > 0)
        .map(|(state, n)| format!("{n} {state}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Whether a rollout's reason is a tally of tenants (see [`completion_tally`]) rather than a
/// code such as `failure_budget_exceeded`.
fn is_tally(reason: &str) -> bool {
    reason.starts_with(|c: char| c.is_ascii_digit())
}

/// The rollout's reason as a restricted caller sees it: a code as it is, a tally recomputed
/// from `counts`, the caller's tenants by state.
pub fn scoped_reason<'a>(
    reason: Option<&str>,
    counts: impl IntoIterator<Item = (&'a str, u64)>,
) -> Option<String> {
    match reason {
        Some(r) if is_tally(r) => completion_tally(counts),
        other => other.map(str::to_owned),
    }
}

/// The `detail` of a rollout-wide history entry as a restricted caller sees it: only the keys
/// known to be fleet-free (tallies such as `tenants` or `failed` are the whole fleet's).
pub fn scoped_rollout_detail(detail: &Value) -> Value {
    let mut kept = Map::new();
    if let Value::Object(map) = detail {
        for key in FLEET_FREE_DETAIL {
            if let Some(v) = map.get(key) {
                kept.insert(key.to_owned(), v.clone());
            }
        }
    }
    Value::Object(kept)
}

/// The tenants a restricted caller reaches, with what identifies them in a spec.
#[derive(Debug, Clone)]
pub struct Reach<'a> {
    /// Tenant ids in reach.
    pub tenant_ids: &'a BTreeSet<String>,
    /// Domains of those tenants (default domains, registered domains), lowercase.
    pub domains: BTreeSet<String>,
}

impl RolloutSpec {
    /// The spec as a caller restricted to `reach` sees it: tenant ids and canaries narrowed to
    /// those in reach, pilot members kept only when they use the `{domain}` placeholder or a
    /// domain of a tenant in reach (object ids, which cannot be told apart, are withheld).
    pub fn scoped_to(&self, reach: &Reach<'_>) -> RolloutSpec {
        let mut spec = self.clone();
        spec.selector.tenant_ids.retain(|t| reach.tenant_ids.contains(t));
        if let Some(Canary::Tenants { tenant_ids }) = &mut spec.waves.canary {
            tenant_ids.retain(|t| reach.tenant_ids.contains(t));
        }
        spec.policy.pilot_group.members.retain(|m| {
            let m = m.trim();
            match m.rsplit_once('@') {
                Some((_, domain)) => {
                    domain == DOMAIN_PLACEHOLDER
                        || reach.domains.contains(&domain.to_ascii_lowercase())
                }
                None => false,
            }
        });
        spec
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec() -> RolloutSpec {
        serde_json::from_value(json!({
            "name": "winter",
            "policy": {"pilot_group": {"name": "SSPR pilot", "members": [
                "pilot@{domain}", "alice@contoso.com", "bob@Fabrikam.com",
                "0d1b3c84-5b71-4a9b-b1c3-3e0c1f2e4d55"
            ]}},
            "selector": {"tenant_ids": ["ten_a", "ten_b"], "tags": ["eu"]},
            "waves": {"canary": {"kind": "tenants", "tenant_ids": ["ten_b", "ten_a"]}}
        }))
        .unwrap()
    }

    #[test]
    fn a_scoped_spec_names_only_tenants_and_pilots_in_reach() {
        let ids = BTreeSet::from(["ten_a".to_owned()]);
        let reach = Reach { tenant_ids: &ids, domains: BTreeSet::from(["contoso.com".into()]) };
        let scoped = spec().scoped_to(&reach);
        assert_eq!(scoped.selector.tenant_ids, ["ten_a"]);
        assert_eq!(scoped.waves.canary, Some(Canary::Tenants { tenant_ids: vec!["ten_a".into()] }));
        assert_eq!(scoped.policy.pilot_group.members, ["pilot@{domain}", "alice@contoso.com"]);
        let text = serde_json::to_string(&scoped).unwrap();
        for other in ["ten_b", "fabrikam", "Fabrikam", "0d1b3c84"] {
            assert!(!text.contains(other), "{other} in {text}");
        }
    }

    #[test]
    fn domains_match_without_case() {
        let ids = BTreeSet::new();
        let reach = Reach { tenant_ids: &ids, domains: BTreeSet::from(["fabrikam.com".into()]) };
        let scoped = spec().scoped_to(&reach);
        assert_eq!(scoped.policy.pilot_group.members, ["pilot@{domain}", "bob@Fabrikam.com"]);
        assert!(scoped.selector.tenant_ids.is_empty());
    }

    #[test]
    fn a_tally_is_recomputed_and_a_code_kept() {
        let mine = [("completed", 3), ("failed", 1), ("blocked", 0)];
        assert_eq!(scoped_reason(Some("7 failed, 2 blocked"), mine), Some("1 failed".into()));
        assert_eq!(scoped_reason(Some("4 failed"), [("completed", 2)]), None);
        assert_eq!(
            scoped_reason(Some("failure_budget_exceeded"), mine),
            Some("failure_budget_exceeded".into())
        );
        assert_eq!(scoped_reason(None, mine), None);
        assert_eq!(
            completion_tally([("blocked", 2), ("failed", 1)]),
            Some("2 blocked, 1 failed".into())
        );
    }

    #[test]
    fn rollout_wide_details_keep_only_fleet_free_keys() {
        let paused =
            json!({"reason": "failure_budget_exceeded", "wave": 2, "failed": 9, "wave_size": 40});
        assert_eq!(
            scoped_rollout_detail(&paused),
            json!({"reason": "failure_budget_exceeded", "wave": 2})
        );
        assert_eq!(
            scoped_rollout_detail(&json!({"tenants": 250, "wave_count": 4})),
            json!({"wave_count": 4})
        );
        let completed = json!({"tenants": {"completed": 200, "failed": 3}});
        assert_eq!(scoped_rollout_detail(&completed), json!({}));
        assert_eq!(scoped_rollout_detail(&json!({"new_fleet_fact": 1})), json!({}));
    }
}
