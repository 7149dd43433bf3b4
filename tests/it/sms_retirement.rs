//! SMS and voice stop counting for SSPR on 1 February 2027. Tenants with users who can reset
//! only thanks to a phone method get the `sms_voice_retirement` advisory in the plan (with the
//! counts the test computes itself from the simulator's users), a `tenant.sms_risk` webhook at
//! preflight, and a rollout gated on `min_capable_without_phone_percent` holds its pilot until
//! the pilot users registered a non-phone method, then proceeds.

use std::{collections::BTreeMap, time::Duration};

use chrono::TimeDelta;
use serde_json::{Value, json};
use sspr_fleet_tests::{TestClient, spawn_app_with_sim};
use sspr_graph_sim::UserRegistration;

use crate::engine::{FAST, attest_open_tasks, entra, onboard_all};

fn scenario() -> String {
    let mut s = String::from("seed = 11\n");
    // 0: SSPR on for All, one method required, most members registered phones only.
    // 1: SSPR off: nobody can reset today, so nobody depends on a phone for it.
    for (i, (legacy, phone_only)) in [("all", 0.6), ("none", 0.6)].iter().enumerate() {
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Tenant {i:02}\"\ndomain = \"t{i:02}.onmicrosoft.com\"\nusers = 40\nadmins = 2\nguests = 2\nlicence = \"p1\"\nphone_only_share = {phone_only}\nmethods = {{ sms = \"enabled\" }}\nlegacy = {{ enablement = \"{legacy}\", methods_required = 1 }}\nbehaviour = {{ registration_delay_hours = 24.0, registration_share = 1.0, reset_share = 0.0, reset_delay_hours = 48.0 }}\n",
            entra(i)
        ));
    }
    s
}

/// The test's own reading of the rule: a capable user whose registered methods other than a
/// phone are fewer than required (administrators two; the app's notification and code one
/// where two are required).
fn phone_dependent(users: &[UserRegistration], required: usize) -> usize {
    users
        .iter()
        .filter(|u| u.is_sspr_capable)
        .filter(|u| {
            let has = |m: &str| u.methods_registered.iter().any(|r| r == m);
            let push = has("microsoftAuthenticatorPush");
            let code = has("softwareOneTimePasscode");
            let need = if u.is_admin { 2 } else { required };
            let mut other = usize::from(has("email")) + usize::from(has("securityQuestion"));
            other +=
                if need >= 2 && push && code { 1 } else { usize::from(push) + usize::from(code) };
            other < need
        })
        .count()
}

async fn wait_reports_ok(admin: &TestClient, ids: &[String]) {
    let start = std::time::Instant::now();
    for id in ids {
        loop {
            let r = admin.get(&format!("/v1/reports/sspr/{id}"), 200).await;
            if r["status"] == "ok" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no report: {r}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spec(tenant: &str, pilots: &[String]) -> Value {
    json!({
        "name": "Before February",
        "policy": {
            "methods_required": 1,
            "pilot_group": {"name": "SSPR pilot (sspr-fleet)", "members": pilots},
            "registration_campaign": {"enabled": true, "snooze_days": 0},
        },
        "selector": {"tenant_ids": [tenant]},
        "gates": {"min_capable_without_phone_percent": 100},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_dependent_tenants_are_flagged_and_the_pilot_waits_to_move_off_the_phone() {
    let (app, sim) = spawn_app_with_sim(&scenario(), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let ids = onboard_all(&admin, 2).await;
    let hook = admin
        .post_json(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/psa", "event_types": ["tenant.sms_risk"]}),
            201,
        )
        .await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    admin.post_empty_raw("/v1/reports/sspr:refresh").await.expect_status(202);
    wait_reports_ok(&admin, &ids).await;

    let users = sim.sim.user_registrations(&entra(0)).unwrap();
    let expected = phone_dependent(&users, 1);
    assert!(expected >= 5, "the scenario should make phone-dependent users: {expected}");
    assert_eq!(phone_dependent(&sim.sim.user_registrations(&entra(1)).unwrap(), 1), 0);

    // The plan flags tenant 0 with the test's count, and tenant 1 not at all; SMS is not
    // managed by default, so no warning.
    let mut both = spec(&ids[0], &["user00003@{domain}".to_owned()]);
    both["selector"] = json!({"tenant_ids": ids});
    let plan = admin.post_json("/v1/rollouts:plan", &both, 200).await;
    let advisories = |id: &str| -> Vec<Value> {
        plan["tenants"].as_array().unwrap().iter().find(|t| t["tenant_id"] == id).unwrap()
            ["advisories"]
            .as_array()
            .unwrap()
            .clone()
    };
    let flagged = advisories(&ids[0]);
    assert_eq!(flagged.len(), 1, "{plan}");
    assert_eq!(flagged[0]["code"], "sms_voice_retirement");
    assert_eq!(flagged[0]["detail"]["phone_dependent"], expected, "{}", flagged[0]);
    assert!(advisories(&ids[1]).is_empty(), "{plan}");
    assert_eq!(plan["warnings"], json!([]), "{plan}");
    let mut with_sms = both.clone();
    with_sms["policy"]["methods"] = json!({"sms": true});
    let warned = admin.post_json("/v1/rollouts:plan", &with_sms, 200).await;
    assert_eq!(warned["warnings"][0]["code"], "sms_stops_counting", "{warned}");

    // Two phone-only pilot users of tenant 0.
    let pilots: Vec<String> = users
        .iter()
        .filter(|u| !u.is_admin && !u.is_guest && u.is_sspr_capable)
        .filter(|u| u.methods_registered.iter().all(|m| m == "mobilePhone" || m == "officePhone"))
        .take(2)
        .map(|u| u.user_principal_name.clone())
        .collect();
    assert_eq!(pilots.len(), 2, "no phone-only pilot users in {users:?}");
    let rollout = admin.post_json("/v1/rollouts", &spec(&ids[0], &pilots), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let tenant_path = format!("/v1/rollouts/{rollout}/tenants/{}", ids[0]);
    let entra_of: BTreeMap<String, String> = BTreeMap::from([(ids[0].clone(), entra(0))]);
    let mut set_at = BTreeMap::new();

    // The pilot waits at its gate: its users can reset today, by phone only.
    let start = std::time::Instant::now();
    loop {
        attest_open_tasks(&admin, &sim, &entra_of, &mut set_at).await;
        let t = admin.get(&tenant_path, 200).await;
        if t["state"] == "gate"
            && t["reason"].as_str().is_some_and(|r| r.contains("pilot_capable_without_phone"))
        {
            break;
        }
        assert_ne!(t["state"], "completed", "the gate let phone-only pilots through: {t}");
        assert!(start.elapsed() < Duration::from_secs(60), "never reached the gate: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The PSA heard of it, with the counts.
    let deliveries = admin.get(&format!("/v1/webhooks/{hook}/deliveries?limit=100"), 200).await;
    let risk = deliveries["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["payload"]["type"] == "tenant.sms_risk")
        .unwrap_or_else(|| panic!("no tenant.sms_risk delivery: {deliveries}"));
    assert_eq!(risk["payload"]["data"]["tenant_id"], ids[0].as_str());
    assert_eq!(risk["payload"]["data"]["detail"]["figures"]["phone_dependent"], expected);

    // Days pass; the campaign has the pilot users register Authenticator; the gate opens.
    sim.sim.clock().advance(TimeDelta::days(5));
    let start = std::time::Instant::now();
    loop {
        let t = admin.get(&tenant_path, 200).await;
        if t["state"] == "completed" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the gate never opened: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let now = sim.sim.user_registrations(&entra(0)).unwrap();
    for upn in &pilots {
        let u = now.iter().find(|u| &u.user_principal_name == upn).unwrap();
        assert!(u.methods_registered.iter().any(|m| m == "microsoftAuthenticatorPush"), "{u:?}");
    }
}
