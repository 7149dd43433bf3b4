//! The rollout engine's report budget: Graph allows 5 report reads per 10 s per tenant and
//! 122 per 10 s per app across the fleet, so a rollout must spend few of them per tenant.
//!
//! A rollout over a few ready tenants (25 users, 2 pilot users, a scope task the test attests)
//! is run against the simulator, and the report reads (`/reports/**`, `/auditLogs/**`) each
//! tenant received during the rollout are counted from the simulator's per-endpoint
//! statistics. Five, all but one `usersRegisteredByFeature`: the tenant's re-verification at
//! preflight (the registry's readiness check), the two never-narrowing checks the rule
//! requires before anything is created (the plan at preflight, the start of the pilot stage),
//! one pilot check (the pilot users picked from one page of `userRegistrationDetails`, not one
//! read per user), and one all-users check. The later steps read the pilot stage's "already
//! All" decision back from its history entry, and the wait for the scope task reads no report
//! at all (it was 10 reads before: the decision asked again in every step and on every poll,
//! and one read per pilot user).

use std::{collections::BTreeMap, time::Duration};

use serde_json::json;
use sspr_fleet_tests::spawn_app_with_sim;

use crate::engine::{FAST, Kind, drive, entra, onboard_all, rollout_spec, scenario};

/// Report reads per endpoint a tenant received so far.
fn report_reads(sim: &sspr_fleet_tests::SimHandle, entra: &str) -> BTreeMap<String, u64> {
    let stats = sim.sim.stats(entra).unwrap();
    stats
        .by_endpoint
        .into_iter()
        .filter(|(k, _)| k.contains("/reports/") || k.contains("/auditLogs/"))
        .collect()
}

fn minus(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_tenant_costs_five_report_reads_and_none_while_it_waits_for_its_task() {
    let n = 4;
    let (app, sim) = spawn_app_with_sim(&scenario(&[Kind::Ready; 4]), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let ids = onboard_all(&admin, n).await;
    // Onboarding reads reports too (the readiness check): only the rollout's reads count.
    let before: Vec<_> = (0..n).map(|i| report_reads(&sim, &entra(i))).collect();

    let rollout = admin.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    // The test attests each scope task some polls after it appears (every 200 ms, while the
    // engine would poll every 150 ms): a tenant waiting for it must not read reports meanwhile.
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "completed", "{done}");

    for (i, id) in ids.iter().enumerate() {
        let rt = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{id}"), 200).await;
        assert_eq!(rt["state"], "completed", "tenant {i}: {rt}");
        let spent = minus(&report_reads(&sim, &entra(i)), &before[i]);
        let total: u64 = spent.values().sum();
        // Re-verification and the plan at preflight, the pilot stage's never-narrowing check,
        // the all-users check; the pilot check (one page of userRegistrationDetails).
        assert_eq!(
            spent,
            BTreeMap::from([
                ("GET /reports/authenticationMethods/usersRegisteredByFeature".to_owned(), 4),
                ("GET /reports/authenticationMethods/userRegistrationDetails".to_owned(), 1),
            ]),
            "tenant {i} spent {total} report reads"
        );
        assert_eq!(total, 5, "tenant {i}: {spent:?}");
        assert_eq!(rt["reason"], json!(null), "{rt}");
    }
}
