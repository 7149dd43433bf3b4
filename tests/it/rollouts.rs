//! Planning rollouts over real HTTP against the Graph simulator: per tenant, what each step
//! would change, which tenants are blocked and why, and not a single Graph write.

use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{SimHandle, TestApp, TestClient, field_errors, spawn_app_with_sim};
use sspr_graph_sim::scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};

const A: &str = "0b1b2c3d-0000-4000-8000-000000000001";
const B: &str = "0b1b2c3d-0000-4000-8000-000000000002";
const C: &str = "0b1b2c3d-0000-4000-8000-000000000003";
const D: &str = "0b1b2c3d-0000-4000-8000-000000000004";

async fn start() -> (TestApp, SimHandle, TestClient) {
    let scenario = format!(
        r#"seed = 11
[[tenants]]
id = "{A}"
name = "Alpha"
domain = "alpha.onmicrosoft.com"
users = 30
methods = {{ sms = "enabled", microsoftAuthenticator = "disabled", email = "disabled" }}
[[tenants]]
id = "{B}"
name = "Bravo"
domain = "bravo.onmicrosoft.com"
users = 20
groups = [{{ display_name = "SSPR pilot", members = [3] }}]
[[tenants]]
id = "{C}"
name = "Charlie"
domain = "charlie.onmicrosoft.com"
licence = "business_basic"
[[tenants]]
id = "{D}"
name = "Delta"
domain = "delta.onmicrosoft.com"
"#
    );
    let (app, sim) = spawn_app_with_sim(&scenario, &[]).await;
    let admin = app.client_with(&app.admin_key().await);
    (app, sim, admin)
}

async fn onboard(admin: &TestClient, entra: &str, name: &str, verify: bool) -> String {
    let body = json!({
        "entra_tenant": entra, "display_name": name, "tags": ["fleet"],
        "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
    });
    let path = if verify { "/v1/tenants?verify=true" } else { "/v1/tenants" };
    admin.post_json(path, &body, 201).await["id"].as_str().unwrap().to_owned()
}

fn spec(selector: Value) -> Value {
    json!({
        "name": "Q4 SSPR",
        "policy": {
            "pilot_group": {"name": "SSPR pilot", "members": ["user00005@alpha.onmicrosoft.com", "user00006@alpha.onmicrosoft.com"]},
            "registration_campaign": {"enabled": true, "snooze_days": 3},
        },
        "selector": selector,
        "waves": {"canary": {"kind": "first", "count": 1}, "batches": {"kind": "count", "size": 2}},
    })
}

fn tenant<'a>(plan: &'a Value, id: &str) -> &'a Value {
    plan["tenants"].as_array().unwrap().iter().find(|t| t["tenant_id"] == id).unwrap()
}

fn step<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step"] == name)
        .unwrap_or_else(|| panic!("no {name} in {t}"))
}

#[tokio::test]
async fn a_plan_says_what_each_tenant_would_change_and_writes_nothing() {
    let (_app, sim, admin) = start().await;
    let a = onboard(&admin, A, "Alpha", true).await;
    let b = onboard(&admin, B, "Bravo", true).await;
    let c = onboard(&admin, C, "Charlie", true).await;
    let d = onboard(&admin, D, "Delta", false).await;
    let writes_before = sim.sim.total_stats().writes;

    let plan = admin.post_json("/v1/rollouts:plan", &spec(json!({"tags": ["fleet"]})), 200).await;
    assert_eq!(sim.sim.total_stats().writes, writes_before, "planning wrote to a tenant");
    assert_eq!(plan["waves"], json!([[a], [b, c], [d]]), "{plan}");
    assert_eq!((plan["ready"].as_u64(), plan["blocked"].as_u64()), (Some(1), Some(3)), "{plan}");

    // Alpha: a new scope group, two pilot users to add, methods for the group, then all users.
    let alpha = tenant(&plan, &a);
    assert_eq!(alpha["status"], "ready", "{alpha}");
    assert_eq!(alpha["wave"], 0);
    assert_eq!(step(alpha, "scope_group")["action"], "create");
    let members = step(alpha, "pilot_members");
    assert_eq!(members["detail"]["add"].as_array().unwrap().len(), 2, "{members}");
    let keys = |s: &Value| -> Vec<String> {
        s["detail"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["key"].as_str().unwrap().to_owned())
            .collect()
    };
    // SMS is already on for everyone: the pilot leaves it alone, and never narrows it.
    assert_eq!(keys(step(alpha, "methods_pilot")), vec!["authenticator", "email"], "{alpha}");
    assert_eq!(keys(step(alpha, "methods_all")), vec!["authenticator", "email"], "{alpha}");
    for change in step(alpha, "methods_pilot")["detail"].as_array().unwrap() {
        let targets = change["after"]["targets"].as_array().unwrap();
        assert_eq!(targets, &vec![json!("(new group)")], "{change}");
        assert!(change["after"]["enabled"].as_bool().unwrap());
    }
    for change in step(alpha, "methods_all")["detail"].as_array().unwrap() {
        assert_eq!(change["after"]["targets"], json!(["all_users"]), "{change}");
    }
    assert_eq!(step(alpha, "campaign_pilot")["detail"]["after"]["snooze_days"], 3);
    assert_eq!(step(alpha, "campaign_all")["detail"]["after"]["targets"], json!(["all_users"]));
    let task = step(alpha, "scope_task");
    assert_eq!(task["action"], "task");
    assert_eq!(task["detail"]["number_of_methods_required"], 2);
    assert_eq!(task["detail"]["security_questions"], "off");
    assert_eq!(step(alpha, "scope_all")["action"], "dynamic_rule", "Business Premium carries P1");

    // The others are blocked, each with its stable reason.
    let reason = |id: &str| tenant(&plan, id)["blocker"]["code"].as_str().unwrap().to_owned();
    assert_eq!(
        reason(&b),
        "pilot_group_name_taken",
        "a group sspr-fleet did not create is never taken over"
    );
    assert_eq!(reason(&c), "license_missing");
    assert_eq!(reason(&d), "not_verified");

    // Pilot users are looked up in each tenant: Alpha's users are not Bravo's.
    let only_bravo = json!({"name": "x", "policy": {"pilot_group": {"name": "Another pilot", "members": ["user00005@alpha.onmicrosoft.com"]}}, "selector": {"tenant_ids": [b, "ten_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e"]}});
    let plan = admin.post_json("/v1/rollouts:plan", &only_bravo, 200).await;
    assert_eq!(tenant(&plan, &b)["blocker"]["code"], "pilot_user_not_found", "{plan}");
    assert_eq!(plan["not_found"], json!(["ten_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e"]));
    assert_eq!(sim.sim.total_stats().writes, writes_before);
}

#[tokio::test]
async fn a_restricted_key_plans_only_its_tenants_and_bad_specs_name_each_field() {
    let (app, _sim, admin) = start().await;
    let a = onboard(&admin, A, "Alpha", true).await;
    let b = onboard(&admin, B, "Bravo", true).await;
    let only_a = [a.parse::<TenantId>().unwrap()];
    let restricted = app.client_with(&app.key_with(Role::Operator, Some(&only_a)).await);
    let plan = restricted.post_json("/v1/rollouts:plan", &spec(json!({"all": true})), 200).await;
    assert_eq!(plan["waves"], json!([[a]]), "{plan}");
    let plan =
        restricted.post_json("/v1/rollouts:plan", &spec(json!({"tenant_ids": [b]})), 200).await;
    assert_eq!(
        (plan["waves"].clone(), plan["not_found"].clone()),
        (json!([]), json!([b])),
        "B is as unknown as a made-up id"
    );

    let viewer = app.client_with(&app.key_with(Role::Viewer, None).await);
    viewer
        .post_json_raw("/v1/rollouts:plan", &spec(json!({"all": true})))
        .await
        .expect_problem(403, "forbidden_role");

    let mut bad = spec(json!({}));
    bad["policy"]["methods"] = json!({"security_questions": true});
    bad["gates"] = json!({"approval": "per_wave", "min_registered_percent": 150});
    let problem = admin
        .post_json_raw("/v1/rollouts:plan", &bad)
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<String> = field_errors(&problem).into_iter().map(|(f, _)| f).collect();
    for expected in
        ["policy.methods.security_questions", "selector", "gates.min_registered_percent"]
    {
        assert!(fields.iter().any(|f| f == expected), "{expected} not in {fields:?}");
    }
    let mut unknown = spec(json!({"all": true}));
    unknown["policy"]["scope_mode"] = json!("magic");
    admin
        .post_json_raw("/v1/rollouts:plan", &unknown)
        .await
        .expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn a_rollout_view_shows_a_tenant_that_moved_at_once() {
    // No engine in this process: the test moves the tenant itself, as an engine would.
    let app = sspr_fleet_tests::spawn_app_with(&[("SSPR_FLEET_ENGINE__RUN_JOBS", "false")]).await;
    let admin = app.client_with(&app.admin_key().await);
    let first = onboard(&admin, A, "Alpha", false).await;
    onboard(&admin, B, "Bravo", false).await;
    let rollout = admin.post_json("/v1/rollouts", &spec(json!({"tags": ["fleet"]})), 201).await;
    let id = rollout["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/rollouts/{id}");
    let before = admin.get(&path, 200).await;
    assert_eq!(before["counts"], json!({"pending": 2}), "{before}");
    // Read again at once: the view may be reused, and must say the same.
    assert_eq!(admin.get(&path, 200).await["counts"], before["counts"]);

    let now = chrono::Utc::now();
    let moved = app
        .store
        .transition_rollout_tenant(
            &id.parse().unwrap(),
            &first,
            "pending",
            sspr_store::TenantUpdate {
                to_state: "preflight".into(),
                paused_from: None,
                reason: None,
                last_error: None,
                scope_group_id: None,
                gate_entered_at: None,
                at: now,
            },
            sspr_store::NewEvent {
                tenant_id: Some(first.clone()),
                at: now,
                actor: "test".into(),
                kind: "admitted".into(),
                from_state: Some("pending".into()),
                to_state: Some("preflight".into()),
                detail: json!({}),
            },
        )
        .await
        .unwrap();
    assert!(moved);
    // Within the second a view may be reused, the move shows at once.
    let after = admin.get(&path, 200).await;
    assert_eq!(after["counts"], json!({"pending": 1, "preflight": 1}), "{after}");
}
