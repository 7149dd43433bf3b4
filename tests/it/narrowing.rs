//! A rollout never takes self-service password reset away from anyone who has it.
//!
//! Tenants already at SSPR = All, with guests (never enabled by the users' setting), with
//! administrators' SSPR off (`allowedToUseSSPR = false`), and with both, must get no scope task
//! and complete with their methods aligned. A tenant at Selected = another group of 50 users,
//! with a pilot of 5, must be refused with `scope_would_narrow`, in the plan and in the rollout.
//! After every step the simulator's count of SSPR-enabled member users never went down.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use sspr_fleet_tests::spawn_app_with_sim;

use crate::engine::{FAST, drive, entra, onboard_all};

/// The group that SSPR is Selected for in the narrowing tenant.
const FINANCE: &str = "f1f1f1f1-0000-4000-8000-000000000050";

fn scenario() -> String {
    let mut s = String::from("seed = 7\n");
    // 0: All + guests; 1: All + admin SSPR off; 2: All + both.
    for (i, (guests, admins_allowed)) in [(3, true), (0, false), (3, false)].iter().enumerate() {
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Tenant {i:02}\"\ndomain = \"t{i:02}.onmicrosoft.com\"\nusers = 25\nadmins = 2\nguests = {guests}\nlicence = \"p1\"\nallowed_to_use_sspr = {admins_allowed}\nlegacy = {{ enablement = \"all\" }}\n",
            entra(i)
        ));
    }
    // 3: Selected = Finance, 50 users (indices 20..70); the pilot users 3..7 are not in it.
    let finance: Vec<String> = (20..70).map(|u| u.to_string()).collect();
    s.push_str(&format!(
        "[[tenants]]\nid = \"{}\"\nname = \"Tenant 03\"\ndomain = \"t03.onmicrosoft.com\"\nusers = 120\nadmins = 2\nlicence = \"p1\"\ngroups = [{{ id = \"{FINANCE}\", display_name = \"Finance\", members = [{}] }}]\nlegacy = {{ enablement = \"selected\", group_id = \"{FINANCE}\" }}\n",
        entra(3),
        finance.join(", ")
    ));
    s
}

fn spec() -> Value {
    json!({
        "name": "Never narrow",
        "policy": {
            "pilot_group": {"name": "SSPR pilot (sspr-fleet)", "members": [
                "user00003@{domain}", "user00004@{domain}", "user00005@{domain}",
                "user00006@{domain}", "user00007@{domain}"
            ]},
            "registration_campaign": {"enabled": true, "snooze_days": 2},
        },
        "selector": {"tags": ["fleet"]},
        "waves": {"batches": {"kind": "count", "size": 10}, "max_in_flight": 10,
                  "failure_budget": {"kind": "percent", "percent": 50}},
        "gates": {"soak_minutes": 0},
    })
}

fn plan_tenant<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["tenants"].as_array().unwrap().iter().find(|t| t["tenant_id"] == id).unwrap()
}

fn plan_step<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["steps"].as_array().unwrap().iter().find(|s| s["step"] == name).unwrap_or_else(|| {
        panic!("no {name} in {t}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_never_takes_sspr_from_anyone_who_has_it() {
    let (app, sim) = spawn_app_with_sim(&scenario(), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let ids = onboard_all(&admin, 4).await;
    let start: Vec<u32> =
        (0..4).map(|i| sim.sim.sspr_enabled_members(&entra(i)).unwrap()[0]).collect();
    // Members SSPR reaches at the start (administrators by allowedToUseSSPR): 25 - 3 guests;
    // 25 - 2 admins; 25 - 3 guests - 2 admins; Finance's 50 + 2 admins.
    assert_eq!(start, [22, 23, 20, 52], "the scenario is not what the test assumes");

    // The plan: the All tenants keep All and get no scope task; Finance would narrow.
    let plan = admin.post_json("/v1/rollouts:plan", &spec(), 200).await;
    for (i, id) in ids.iter().enumerate().take(3) {
        let t = plan_tenant(&plan, id);
        assert_eq!(t["status"], "ready", "tenant {i}: {t}");
        let coverage = plan_step(t, "sspr_coverage");
        assert_eq!(coverage["action"], "keep", "tenant {i}: {coverage}");
        assert_eq!(coverage["detail"]["now"], coverage["detail"]["member_users"], "{coverage}");
        assert!(t["steps"].as_array().unwrap().iter().all(|s| s["step"] != "scope_task"), "{t}");
    }
    let finance = plan_tenant(&plan, &ids[3]);
    assert_eq!(finance["blocker"]["code"], "scope_would_narrow", "{finance}");
    let coverage = plan_step(finance, "sspr_coverage");
    assert_eq!(coverage["action"], "would_narrow", "{coverage}");
    assert_eq!(
        (coverage["detail"]["now"].as_u64(), coverage["detail"]["after_pilot"].as_u64()),
        (Some(50), Some(0))
    );

    let rollout =
        admin.post_json("/v1/rollouts", &spec(), 201).await["id"].as_str().unwrap().to_owned();
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(120)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert_eq!(done["blocked_reasons"], json!({"scope_would_narrow": 1}), "{done}");

    let tasks = admin.get("/v1/tasks?limit=500", 200).await;
    assert_eq!(tasks["items"], json!([]), "no tenant needed a technician: {tasks}");
    for (i, id) in ids.iter().enumerate() {
        let rt = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{id}"), 200).await;
        let e = entra(i);
        let history = sim.sim.sspr_enabled_members(&e).unwrap();
        assert!(
            history.windows(2).all(|w| w[1] >= w[0]),
            "tenant {i}: SSPR-enabled members went down: {history:?}"
        );
        assert_eq!(history[0], start[i], "tenant {i}: {history:?}");
        if i == 3 {
            assert_eq!(rt["state"], "blocked", "{rt}");
            assert_eq!(rt["reason"], "scope_would_narrow", "{rt}");
            assert!(sim.sim.writes(&e).unwrap().is_empty(), "a blocked tenant was written to");
            assert_eq!(sim.sim.legacy_sspr(&e).unwrap().group_id.as_deref(), Some(FINANCE));
            continue;
        }
        assert_eq!(rt["state"], "completed", "tenant {i}: {rt}");
        let state = sim.sim.tenant_state(&e).unwrap();
        assert_eq!(state["legacySspr"]["enablement"], "all", "tenant {i} left All");
        for m in ["MicrosoftAuthenticator", "Email"] {
            let cfg = state["authenticationMethodsPolicy"]["authenticationMethodConfigurations"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"].as_str().is_some_and(|id| id.eq_ignore_ascii_case(m)))
                .unwrap();
            assert_eq!(cfg["state"], "enabled", "{m} in tenant {i}");
            let targets: Vec<&str> = cfg["includeTargets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_str().unwrap())
                .collect();
            assert_eq!(targets, ["all_users"], "{m} in tenant {i}");
        }
    }
}
