//! Exclusion groups: break-glass and service accounts named in a rollout's
//! `policy.exclude_groups` are never nudged by the registration campaign, in the pilot or the
//! all stage, checked against every write the simulator received and its record of who the
//! campaign nudged; a rollback puts the tenant's exclude targets back.

use std::{collections::BTreeMap, time::Duration};

use serde_json::{Value, json};
use sspr_fleet_tests::{field_errors, spawn_app_with_sim};

use crate::engine::{FAST, Kind, drive, entra, onboard_all, rollout_spec, scenario};

const BREAK_GLASS: &str = "b1a5b1a5-0000-4000-8000-00000000b1a5";

/// Two ready tenants; only the first has the "Break glass" group (users 0 and 1).
fn exclusion_scenario() -> String {
    let mut s = scenario(&[Kind::Ready, Kind::Ready]);
    let second = s.rfind("[[tenants]]").unwrap();
    s.insert_str(
        second,
        &format!(
            "[[tenants.groups]]\nid = \"{BREAK_GLASS}\"\ndisplay_name = \"Break glass\"\nmembers = [0, 1]\n"
        ),
    );
    s
}

fn spec_excluding(groups: Value) -> Value {
    let mut spec = rollout_spec(0, 10, 10);
    spec["policy"]["exclude_groups"] = groups;
    spec
}

fn campaign_of(body: &Value) -> Option<&Value> {
    body.get("registrationEnforcement")?.get("authenticationMethodsRegistrationCampaign")
}

fn ids(targets: &Value) -> Vec<String> {
    targets
        .as_array()
        .map(|a| {
            // Graph's `{id, targetType}` objects, or the plan's ids.
            a.iter()
                .filter_map(|t| t["id"].as_str().or(t.as_str()))
                .map(str::to_ascii_lowercase)
                .collect()
        })
        .unwrap_or_default()
}

/// Every `includeTargets` list anywhere in a JSON body.
fn include_lists<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "includeTargets" {
                    out.push(v);
                }
                include_lists(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| include_lists(i, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn break_glass_accounts_are_never_nudged_by_the_campaign() {
    let (app, sim) = spawn_app_with_sim(&exclusion_scenario(), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let tenants = onboard_all(&admin, 2).await;

    // Bad exclusion groups are refused field by field.
    let too_many: Vec<String> =
        (0..21).map(|i| format!("b1a5b1a5-0000-4000-8000-{i:012}")).collect();
    for (groups, field, code) in [
        (json!(["break glass"]), "policy.exclude_groups[0]", "invalid_format"),
        (json!([BREAK_GLASS, BREAK_GLASS.to_uppercase()]), "policy.exclude_groups[1]", "duplicate"),
        (json!(too_many), "policy.exclude_groups", "too_many"),
    ] {
        let problem = admin
            .post_json_raw("/v1/rollouts", &spec_excluding(groups))
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            field_errors(&problem).contains(&(field.to_owned(), code.to_owned())),
            "{field} {code}: {problem}"
        );
    }

    // The plan shows the exclusion; the tenant without the group is blocked.
    let mut spec = spec_excluding(json!([BREAK_GLASS]));
    let plan = admin.post_json("/v1/rollouts:plan", &spec, 200).await;
    let plan_of = |id: &str| {
        plan["tenants"].as_array().unwrap().iter().find(|t| t["tenant_id"] == id).unwrap().clone()
    };
    let first = plan_of(&tenants[0]);
    let steps = first["steps"].as_array().unwrap();
    let step = |name: &str| {
        steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| {
            panic!("no {name} in {first}");
        })
    };
    assert_eq!(step("exclude_groups")["detail"]["groups"][0]["id"], BREAK_GLASS, "{first}");
    for stage in ["campaign_pilot", "campaign_all"] {
        assert_eq!(ids(&step(stage)["detail"]["after"]["exclude_targets"]), vec![BREAK_GLASS]);
    }
    assert_eq!(plan_of(&tenants[1])["blocker"]["code"], "exclude_group_not_found", "{plan}");

    // The rollout, on the tenant that has the group.
    spec["selector"] = json!({"tenant_ids": [tenants[0]]});
    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    let entra_of: BTreeMap<String, String> = BTreeMap::from([(tenants[0].clone(), entra(0))]);
    let before = sim.sim.tenant_state(&entra(0)).unwrap();
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(60)).await;
    assert_eq!(done["counts"]["completed"], 1, "{done}");

    let users = sim.sim.user_registrations(&entra(0)).unwrap();
    let excluded_users: Vec<String> =
        users[..2].iter().map(|u| u.id.to_ascii_lowercase()).collect();
    let writes = sim.sim.writes(&entra(0)).unwrap();
    let campaign_writes: Vec<&Value> = writes.iter().filter_map(|w| campaign_of(&w.body)).collect();
    assert!(campaign_writes.len() >= 2, "a campaign write per stage: {writes:?}");
    for c in &campaign_writes {
        assert_eq!(ids(&c["excludeTargets"]), vec![BREAK_GLASS], "{c}");
        assert_eq!(c["excludeTargets"][0]["targetType"], "group");
        assert!(
            c["includeTargets"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["targetedAuthenticationMethod"] == "microsoftAuthenticator"),
            "the campaign nudges to Microsoft Authenticator: {c}"
        );
    }
    assert_eq!(
        ids(&campaign_writes[campaign_writes.len() - 1]["includeTargets"]),
        vec!["all_users"]
    );
    for w in &writes {
        let mut lists = Vec::new();
        include_lists(&w.body, &mut lists);
        for id in lists.into_iter().flat_map(ids) {
            assert!(
                id != BREAK_GLASS && !excluded_users.contains(&id),
                "{} {} includes an excluded account: {}",
                w.method,
                w.path,
                w.body
            );
        }
        // Methods keep their exclude targets unless the policy asks (it does not here).
        if w.path.contains("authenticationMethodConfigurations") {
            assert!(w.body.get("excludeTargets").is_none(), "{}", w.body);
        }
    }
    let nudged = sim.sim.campaign_nudged(&entra(0)).unwrap();
    assert!(!nudged.contains(&0) && !nudged.contains(&1), "break-glass nudged: {nudged:?}");
    assert!(nudged.contains(&3) && nudged.contains(&5), "pilot and everyone else: {nudged:?}");

    // Rolling back restores the campaign as it was, exclude targets included.
    admin
        .post_json(
            &format!("/v1/rollouts/{rollout}/rollback"),
            &json!({"tenant_id": tenants[0]}),
            202,
        )
        .await;
    let path = format!("/v1/rollouts/{rollout}/tenants/{}", tenants[0]);
    let start = std::time::Instant::now();
    while admin.get(&path, 200).await["state"] != "rolled_back" {
        assert!(start.elapsed() < Duration::from_secs(30), "no rollback");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = sim.sim.tenant_state(&entra(0)).unwrap();
    let campaign = |s: &Value| {
        s["authenticationMethodsPolicy"]["registrationEnforcement"]
            ["authenticationMethodsRegistrationCampaign"]
            .clone()
    };
    for key in ["state", "includeTargets", "excludeTargets"] {
        assert_eq!(campaign(&after)[key], campaign(&before)[key], "{key}");
    }
}
