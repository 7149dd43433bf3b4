//! The rollout engine over real HTTP against the Graph simulator: a staged rollout across 50
//! tenants of mixed readiness (pilot first, manual scope tasks attested while the simulator's
//! legacy policy is set, then everyone), operations, and rollback checked against the
//! simulator's state.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sspr_fleet_tests::{SimHandle, TestApp, TestClient, spawn_app_with_sim};
use sspr_graph_sim::{
    Enablement, LegacySspr,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};

/// What kind of tenant a scenario entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Ready,
    Hybrid,
    CloudOnly,
    Unlicensed,
    Throttled,
    SlowReplication,
}

pub(crate) fn entra(i: usize) -> String {
    format!("0e0e0e0e-0000-4000-8000-{i:012}")
}

/// A fleet of `kinds.len()` tenants, 25 users each.
pub(crate) fn scenario(kinds: &[Kind]) -> String {
    let mut s = String::from("seed = 42\n");
    for (i, kind) in kinds.iter().enumerate() {
        let licence = match kind {
            Kind::CloudOnly => "business_standard",
            Kind::Unlicensed => {
                if i % 2 == 0 {
                    "business_basic"
                } else {
                    "none"
                }
            }
            _ => ["business_premium", "e3", "e5", "p1", "p2"][i % 5],
        };
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Tenant {i:02}\"\ndomain = \"t{i:02}.onmicrosoft.com\"\nusers = 25\nlicence = \"{licence}\"\n",
            entra(i)
        ));
        if *kind == Kind::Hybrid {
            s.push_str("hybrid = true\n");
        }
        match kind {
            Kind::Throttled => s.push_str(
                "[tenants.faults]\nrate_503 = 0.05\nretry_after_503_secs = 1\nscript = [{ status = 429, retry_after = 1 }, { status = 429, retry_after = 1 }, { status = 503, retry_after = 1 }]\n",
            ),
            Kind::SlowReplication => s.push_str("[tenants.faults]\nreplication_delay_secs = 2\n"),
            _ => {}
        }
    }
    s
}

/// Fast engine pacing for tests.
pub(crate) const FAST: &[(&str, &str)] = &[
    ("SSPR_FLEET_ENGINE__WAIT_POLL_MS", "150"),
    ("SSPR_FLEET_ENGINE__ADVANCE_MS", "150"),
    ("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "50"),
    ("SSPR_FLEET_ENGINE__RETRY_BASE_MS", "200"),
    ("SSPR_FLEET_ENGINE__RETRY_MAX_MS", "2000"),
    ("SSPR_FLEET_ENGINE__WORKERS", "16"),
];

pub(crate) async fn onboard_all(admin: &TestClient, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let body = json!({
            "entra_tenant": entra(i), "display_name": format!("Tenant {i:02}"), "tags": ["fleet"],
            "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        });
        let t = admin.post_json("/v1/tenants?verify=true", &body, 201).await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    ids
}

pub(crate) fn rollout_spec(canary: usize, size: usize, in_flight: usize) -> Value {
    let mut spec = json!({
        "name": "Fleet SSPR",
        "policy": {
            // SMS is asked for: these tests follow every managed method through both stages.
            "methods": {"sms": true},
            "pilot_group": {"name": "SSPR pilot (sspr-fleet)", "members": ["user00003@{domain}", "user00004@{domain}"]},
            "registration_campaign": {"enabled": true, "snooze_days": 2},
        },
        "selector": {"tags": ["fleet"]},
        "waves": {
            "canary": {"kind": "first", "count": canary},
            "batches": {"kind": "count", "size": size},
            "max_in_flight": in_flight,
            "failure_budget": {"kind": "percent", "percent": 50},
        },
        "gates": {"soak_minutes": 0},
    });
    if canary == 0 {
        spec["waves"].as_object_mut().unwrap().remove("canary");
    }
    spec
}

/// Plays the technician: for every open scope task, sets the simulator's legacy SSPR policy to
/// "Selected = the task's group" and attests the task. Returns, per Entra tenant, the
/// simulated time the policy was set.
pub(crate) async fn attest_open_tasks(
    admin: &TestClient,
    sim: &SimHandle,
    entra_of: &BTreeMap<String, String>,
    set_at: &mut BTreeMap<String, DateTime<Utc>>,
) {
    let tasks = admin.get("/v1/tasks?state=open&limit=500", 200).await;
    for task in tasks["items"].as_array().unwrap() {
        if task["kind"] != "scope_selected" {
            continue;
        }
        let tenant = task["tenant_id"].as_str().unwrap();
        let group = task["instructions"]["group"]["id"].as_str().unwrap().to_owned();
        let entra = &entra_of[tenant];
        let policy = LegacySspr {
            enablement: Enablement::Selected,
            group_id: Some(group),
            ..sim.sim.legacy_sspr(entra).unwrap()
        };
        // The group may not have replicated yet: the portal would refuse it too; try later.
        if sim.sim.set_legacy_sspr(entra, policy).is_err() {
            continue;
        }
        set_at.insert(entra.clone(), sim.sim.clock().now());
        let id = task["id"].as_str().unwrap();
        admin
            .post_json(&format!("/v1/tasks/{id}/attest"), &json!({"note": "set by the test"}), 200)
            .await;
    }
}

/// Drives a rollout to a final state, attesting tasks as they appear.
pub(crate) async fn drive(
    admin: &TestClient,
    sim: &SimHandle,
    rollout: &str,
    entra_of: &BTreeMap<String, String>,
    timeout: Duration,
) -> (Value, BTreeMap<String, DateTime<Utc>>) {
    let start = std::time::Instant::now();
    let mut set_at = BTreeMap::new();
    loop {
        attest_open_tasks(admin, sim, entra_of, &mut set_at).await;
        let r = admin.get(&format!("/v1/rollouts/{rollout}"), 200).await;
        if matches!(r["state"].as_str(), Some("completed" | "paused" | "cancelled" | "rolled_back"))
        {
            return (r, set_at);
        }
        assert!(start.elapsed() < timeout, "the rollout did not finish in {timeout:?}: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn targets(method: &Value) -> Vec<String> {
    method["includeTargets"]
        .as_array()
        .map(|a| a.iter().map(|t| t["id"].as_str().unwrap_or("").to_owned()).collect())
        .unwrap_or_default()
}

fn method<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["authenticationMethodsPolicy"]["authenticationMethodConfigurations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"].as_str().is_some_and(|m| m.eq_ignore_ascii_case(id)))
        .unwrap_or_else(|| panic!("no method {id}"))
}

pub(crate) async fn start(kinds: &[Kind]) -> (TestApp, SimHandle, TestClient, Vec<String>) {
    let (app, sim) = spawn_app_with_sim(&scenario(kinds), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let ids = onboard_all(&admin, kinds.len()).await;
    (app, sim, admin, ids)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_staged_rollout_over_fifty_mixed_tenants_completes_pilot_first() {
    let mut kinds = Vec::new();
    for i in 0..50 {
        kinds.push(match i % 10 {
            0..=3 => Kind::Ready,
            4 => Kind::Hybrid,
            5 => Kind::CloudOnly,
            6 => Kind::Unlicensed,
            7 => Kind::Throttled,
            8 => Kind::SlowReplication,
            _ => Kind::Ready,
        });
    }
    let (_app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();

    let created = admin.post_json("/v1/rollouts", &rollout_spec(3, 10, 12), 201).await;
    let rollout = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["state"], "running");
    assert_eq!(created["tenants"], 50);
    assert_eq!(created["wave_count"], 6, "3 canaries, then 47 in waves of 10");

    let (done, set_at) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(240)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let unlicensed = kinds.iter().filter(|k| **k == Kind::Unlicensed).count() as u64;
    assert_eq!(done["counts"]["completed"], 50 - unlicensed, "{done}");
    assert_eq!(done["counts"]["blocked"], unlicensed, "{done}");
    assert_eq!(done["blocked_reasons"], json!({"license_missing": unlicensed}), "{done}");

    for (i, kind) in kinds.iter().enumerate() {
        let tenant = &ids[i];
        let e = entra(i);
        let rt = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{tenant}"), 200).await;
        let state = sim.sim.tenant_state(&e).unwrap();
        let writes = sim.sim.writes(&e).unwrap();
        if *kind == Kind::Unlicensed {
            assert_eq!(rt["state"], "blocked", "{rt}");
            assert_eq!(rt["reason"], "license_missing");
            assert!(writes.is_empty(), "a blocked tenant was written to: {writes:?}");
            continue;
        }
        assert_eq!(rt["state"], "completed", "tenant {i} ({kind:?}): {rt}");
        for m in ["MicrosoftAuthenticator", "Sms", "Email"] {
            let cfg = method(&state, m);
            assert_eq!(cfg["state"], "enabled", "{m} in tenant {i}");
            assert_eq!(targets(cfg), vec!["all_users"], "{m} in tenant {i}");
        }
        let campaign = &state["authenticationMethodsPolicy"]["registrationEnforcement"]["authenticationMethodsRegistrationCampaign"];
        assert_eq!(campaign["state"], "enabled", "{campaign}");
        // The scope group covers every member: by rule where licensed, else kept by us.
        let group_id = rt["scope_group_id"].as_str().unwrap();
        let group = &state["groups"][group_id];
        assert_eq!(group["members"], 25, "tenant {i} ({kind:?}): {group}");
        assert_eq!(group["dynamic"], *kind != Kind::CloudOnly, "tenant {i}: {group}");
        assert_eq!(state["legacySspr"]["enablement"], "selected");

        // No all_users target was written before the pilot was verified: the gate passed
        // only after the technician set the policy, and every all_users write comes after.
        let first_all = writes
            .iter()
            .find(|w| w.body.to_string().contains("all_users"))
            .unwrap_or_else(|| panic!("tenant {i}: no all_users write in {writes:?}"));
        let attested = set_at[&e];
        let written_at = DateTime::parse_from_rfc3339(&first_all.at).unwrap().with_timezone(&Utc);
        assert!(
            written_at >= attested,
            "tenant {i}: all_users written at {} before the scope was set at {attested}",
            first_all.at
        );
        let kinds_seen: Vec<&str> = rt["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["kind"].as_str().unwrap())
            .collect();
        let pos = |k: &str| {
            kinds_seen
                .iter()
                .position(|x| *x == k)
                .unwrap_or_else(|| panic!("no {k} in {kinds_seen:?}"))
        };
        assert!(pos("pilot_applied") < pos("pilot_verified"));
        assert!(pos("pilot_verified") < pos("gate_passed"));
        assert!(pos("gate_passed") < pos("all_applied"));
        assert!(pos("all_applied") < pos("completed"));
        // Pilot writes target the group, never all users.
        let before_all: Vec<_> =
            writes.iter().take_while(|w| !std::ptr::eq(*w, first_all)).collect();
        assert!(
            before_all.iter().any(|w| w.body.to_string().contains(group_id)),
            "tenant {i}: the pilot never targeted the scope group"
        );
    }
    // Throttled tenants were throttled and still completed, without early retries.
    for (i, kind) in kinds.iter().enumerate() {
        if *kind == Kind::Throttled {
            let stats = sim.sim.stats(&entra(i)).unwrap();
            assert!(stats.throttled + stats.faults > 0, "tenant {i} saw no fault: {stats:?}");
            assert_eq!(stats.early_requests, 0, "tenant {i}: a Retry-After was not honoured");
        }
    }
    // Tasks were attested through the API, with the actor recorded.
    let tasks = admin.get(&format!("/v1/tasks?rollout_id={rollout}&limit=500"), 200).await;
    let tasks = tasks["items"].as_array().unwrap();
    assert_eq!(tasks.len() as u64, 50 - unlicensed);
    assert!(
        tasks.iter().all(|t| t["state"] == "attested"
            && t["attested_by"].as_str().unwrap().starts_with("api_key:"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_back_a_completed_tenant_restores_what_the_snapshots_recorded() {
    let kinds = [Kind::Ready, Kind::CloudOnly];
    let (app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let before: Vec<Value> = (0..2).map(|i| sim.sim.tenant_state(&entra(i)).unwrap()).collect();

    let rollout = admin.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(60)).await;
    assert_eq!(done["counts"]["completed"], 2, "{done}");

    // Roll back the first tenant only.
    let r = admin
        .post_json(&format!("/v1/rollouts/{rollout}/rollback"), &json!({"tenant_id": ids[0]}), 202)
        .await;
    assert_eq!(r["id"], rollout);
    let path = format!("/v1/rollouts/{rollout}/tenants/{}", ids[0]);
    let start = std::time::Instant::now();
    loop {
        let t = admin.get(&path, 200).await;
        if t["state"] == "rolled_back" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no rollback: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = sim.sim.tenant_state(&entra(0)).unwrap();
    for m in ["MicrosoftAuthenticator", "Sms", "Email"] {
        let (b, a) = (method(&before[0], m), method(&after, m));
        assert_eq!(a["state"], b["state"], "{m}");
        assert_eq!(targets(a), targets(b), "{m}");
    }
    let campaign = |s: &Value| {
        s["authenticationMethodsPolicy"]["registrationEnforcement"]
            ["authenticationMethodsRegistrationCampaign"]
            .clone()
    };
    assert_eq!(campaign(&after)["state"], campaign(&before[0])["state"]);
    assert_eq!(campaign(&after)["includeTargets"], campaign(&before[0])["includeTargets"]);
    // The scope group the rollout created is gone; the groups there before are as they were.
    assert_eq!(after["groups"], before[0]["groups"], "groups differ after rollback");
    // A manual task asks to revert the portal setting, which has no API.
    let tasks =
        admin.get(&format!("/v1/tasks?rollout_id={rollout}&tenant_id={}", ids[0]), 200).await;
    assert!(
        tasks["items"].as_array().unwrap().iter().any(|t| t["kind"] == "scope_revert"),
        "{tasks}"
    );
    // The other tenant is untouched by that rollback.
    let other = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{}", ids[1]), 200).await;
    assert_eq!(other["state"], "completed");
    // Rolling back again changes nothing more: once the queue has run whatever the request
    // enqueued, the tenant has seen no further write.
    let writes = sim.sim.writes(&entra(0)).unwrap().len();
    admin
        .post_json(&format!("/v1/rollouts/{rollout}/rollback"), &json!({"tenant_id": ids[0]}), 202)
        .await;
    let start = std::time::Instant::now();
    loop {
        let jobs = app.store.count_jobs_by_state("default").await.unwrap();
        if !jobs.contains_key("queued") && !jobs.contains_key("running") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "jobs still pending: {jobs:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.sim.writes(&entra(0)).unwrap().len(), writes);
    assert_eq!(sim.sim.tenant_state(&entra(0)).unwrap()["groups"], after["groups"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_gates_pause_resume_and_idempotent_creation() {
    let kinds = [Kind::Ready, Kind::Ready, Kind::Ready];
    let (_app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let mut spec = rollout_spec(1, 10, 10);
    spec["gates"] = json!({"soak_minutes": 0, "approval": "per_tenant"});

    // The same Idempotency-Key and spec give the first answer again; another spec is refused.
    let first = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/v1/rollouts")
                .header("Idempotency-Key", "k-1")
                .json(&spec),
        )
        .await
        .expect_status(201)
        .json();
    let again = admin
        .send(
            admin
                .request(reqwest::Method::POST, "/v1/rollouts")
                .header("Idempotency-Key", "k-1")
                .json(&spec),
        )
        .await
        .expect_status(201)
        .json();
    assert_eq!(first["id"], again["id"]);
    let mut other = spec.clone();
    other["name"] = json!("Another");
    admin
        .send(
            admin
                .request(reqwest::Method::POST, "/v1/rollouts")
                .header("Idempotency-Key", "k-1")
                .json(&other),
        )
        .await
        .expect_problem(422, "idempotency_key_reused");
    let rollout = first["id"].as_str().unwrap().to_owned();
    let list = admin.get("/v1/rollouts", 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // Every tenant stops at its gate until approved; none gets all_users before.
    let wait_for = |state: &'static str, n: u64| {
        let admin = admin.clone();
        let rollout = rollout.clone();
        let sim = &sim;
        let entra_of = entra_of.clone();
        async move {
            let start = std::time::Instant::now();
            let mut set_at = BTreeMap::new();
            loop {
                attest_open_tasks(&admin, sim, &entra_of, &mut set_at).await;
                let r = admin.get(&format!("/v1/rollouts/{rollout}"), 200).await;
                if r["counts"][state].as_u64() == Some(n) {
                    return r;
                }
                assert!(start.elapsed() < Duration::from_secs(60), "waiting for {n} {state}: {r}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for("gate", 1).await;
    let canary = &ids[0];
    // The gate's first check records what it waits for, shortly after the tenant enters it.
    let waited = std::time::Instant::now();
    loop {
        let t = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{canary}"), 200).await;
        if !t["reason"].is_null() {
            assert_eq!(t["reason"], "waiting for approval", "{t}");
            break;
        }
        assert!(waited.elapsed() < Duration::from_secs(30), "the gate never said why: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        !sim.sim
            .writes(&entra(0))
            .unwrap()
            .iter()
            .any(|w| w.body.to_string().contains("all_users"))
    );

    // Pause holds the canary; resume puts it back where it stood.
    let paused = admin.post_json(&format!("/v1/rollouts/{rollout}/pause"), &json!({}), 200).await;
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["counts"]["paused"], 1, "{paused}");
    admin.post_json(&format!("/v1/rollouts/{rollout}/pause"), &json!({}), 200).await;
    let resumed = admin.post_json(&format!("/v1/rollouts/{rollout}/resume"), &json!({}), 200).await;
    assert_eq!(resumed["state"], "running");
    assert_eq!(resumed["counts"]["gate"], 1, "{resumed}");

    let approved = admin
        .post_json(
            &format!("/v1/rollouts/{rollout}/approve"),
            &json!({"tenant_ids": [canary]}),
            200,
        )
        .await;
    assert_eq!(approved["affected"], 1);
    wait_for("completed", 1).await;
    // Approve the whole next wave at once, then everything completes.
    wait_for("gate", 2).await;
    let approved =
        admin.post_json(&format!("/v1/rollouts/{rollout}/approve"), &json!({"wave": 1}), 200).await;
    assert_eq!(approved["affected"], 2);
    wait_for("completed", 3).await;
    // The scheduler marks the rollout completed at its next round.
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(30)).await;
    assert_eq!(done["state"], "completed", "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    let t = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{canary}"), 200).await;
    assert!(t["approved_by"].as_str().unwrap().starts_with("api_key:"), "{t}");

    // Operations on a finished rollout say why they do not apply.
    admin
        .post_json_raw(&format!("/v1/rollouts/{rollout}/pause"), &json!({}))
        .await
        .expect_problem(409, "rollout_not_running");
    admin
        .post_json_raw("/v1/rollouts/rol_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e/pause", &json!({}))
        .await
        .expect_problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_key_sees_and_operates_only_what_lies_within_its_tenants() {
    let kinds = [Kind::Ready, Kind::Ready];
    let (app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let only_a = [ids[0].parse::<sspr_domain::TenantId>().unwrap()];
    let restricted =
        app.client_with(&app.key_with(sspr_domain::Role::Operator, Some(&only_a)).await);

    // Its own rollout selects only its tenant, whatever the selector says.
    let mine = restricted.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await;
    assert_eq!(mine["tenants"], 1, "{mine}");
    // A rollout naming the other tenant is refused as if that tenant did not exist.
    let mut spec = rollout_spec(0, 10, 10);
    spec["selector"] = json!({"tenant_ids": [ids[1]]});
    let problem = restricted
        .post_json_raw("/v1/rollouts", &spec)
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(problem["errors"][0]["code"], "tenant_not_found", "{problem}");

    // The admin's rollout over both: visible, counted on its own tenant only, not operable.
    let both = admin.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await;
    let both_id = both["id"].as_str().unwrap();
    let seen = restricted.get(&format!("/v1/rollouts/{both_id}"), 200).await;
    assert_eq!(seen["tenants"], 1, "{seen}");
    let page = restricted.get(&format!("/v1/rollouts/{both_id}/tenants"), 200).await;
    let listed: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![ids[0].as_str()]);
    restricted
        .post_json_raw(&format!("/v1/rollouts/{both_id}/pause"), &json!({}))
        .await
        .expect_problem(403, "restricted_key");
    restricted
        .get_raw(&format!("/v1/rollouts/{both_id}/tenants/{}", ids[1]))
        .await
        .expect_problem(404, "not_found");

    // An admin rollout of the other tenant only does not exist for it, nor do its tasks.
    let mut spec = rollout_spec(0, 10, 10);
    spec["selector"] = json!({"tenant_ids": [ids[1]]});
    let other = admin.post_json("/v1/rollouts", &spec, 201).await;
    let other_id = other["id"].as_str().unwrap();
    restricted.get_raw(&format!("/v1/rollouts/{other_id}")).await.expect_problem(404, "not_found");
    let list = restricted.get("/v1/rollouts", 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 2, "{list}");
    // Wait for tasks to exist, then check the restricted key sees only its tenant's.
    let start = std::time::Instant::now();
    loop {
        let all = admin.get("/v1/tasks?limit=500", 200).await;
        if all["items"].as_array().unwrap().iter().any(|t| t["tenant_id"] == ids[1]) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no task for the other tenant: {all}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = restricted.get("/v1/tasks?limit=500", 200).await;
    assert!(tasks["items"].as_array().unwrap().iter().all(|t| t["tenant_id"] == ids[0]), "{tasks}");
    let theirs = admin.get(&format!("/v1/tasks?tenant_id={}", ids[1]), 200).await;
    let task_id = theirs["items"][0]["id"].as_str().unwrap();
    restricted
        .post_json_raw(&format!("/v1/tasks/{task_id}/attest"), &json!({}))
        .await
        .expect_problem(404, "not_found");
    // Its own rollout runs to completion with the tasks it attests.
    let mine_id = mine["id"].as_str().unwrap();
    let (done, _) = drive(&restricted, &sim, mine_id, &entra_of, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "completed", "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_without_p1_waits_for_its_technician_as_long_as_it_takes() {
    // Graph refuses the reports to tenants without Entra ID P1/P2. Waiting on the scope task
    // must not ask for them at every poll: refusals would add up and set the tenant aside.
    let kinds = [Kind::CloudOnly];
    let (_app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let rollout = admin.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/rollouts/{rollout}/tenants/{}", ids[0]);
    let start = std::time::Instant::now();
    loop {
        let t = admin.get(&path, 200).await;
        if t["state"] == "pilot_verifying" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no pilot: {t}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Twenty polls and more without the technician.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t = admin.get(&path, 200).await;
    assert_eq!(t["state"], "pilot_verifying", "{t}");
    assert_eq!(t["reason"], "waiting for scope_task_attestation", "{t}");
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(60)).await;
    assert_eq!(done["counts"]["completed"], 1, "{done}");
    let t = admin.get(&path, 200).await;
    let verified = t["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "pilot_verified")
        .unwrap()
        .clone();
    assert!(
        verified["detail"]["is_sspr_enabled"].as_str().unwrap().contains("attestation"),
        "the evidence says what stood in for the report: {verified}"
    );
}

/// Waits until every tenant of `rollout` is in one of `states`.
pub(crate) async fn wait_tenants(
    admin: &TestClient,
    rollout: &str,
    states: &[&str],
    timeout: Duration,
) {
    let start = std::time::Instant::now();
    loop {
        let page = admin.get(&format!("/v1/rollouts/{rollout}/tenants?limit=500"), 200).await;
        let items = page["items"].as_array().unwrap();
        if items.iter().all(|t| states.iter().any(|s| t["state"] == *s)) {
            return;
        }
        assert!(start.elapsed() < timeout, "tenants not in {states:?} after {timeout:?}: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_scope_mode_sets_the_legacy_policy_itself_and_rollback_puts_it_back() {
    // Tenant 2 gets no portal credential.
    let kinds = [Kind::Ready, Kind::CloudOnly, Kind::Ready];
    let (_app, sim, admin, ids) = start(&kinds).await;
    let before: Vec<(Value, LegacySspr)> = (0..3)
        .map(|i| {
            (sim.sim.tenant_state(&entra(i)).unwrap(), sim.sim.legacy_sspr(&entra(i)).unwrap())
        })
        .collect();

    // A refresh token the identity platform refuses is not stored.
    let path = |i: usize| format!("/v1/tenants/{}/portal-credentials", ids[i]);
    let refused = admin
        .put_json_raw(&path(0), &json!({"refresh_token": "not-the-token"}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(refused["errors"][0]["code"], "refresh_token_invalid", "{refused}");
    admin.get(&path(0), 404).await;
    admin.put_json_raw(&path(0), &json!({"refresh_token": ""})).await.expect_status(422);
    for i in 0..2 {
        let token = sim.sim.portal_refresh_token(&entra(i)).unwrap();
        let stored = admin.put_json(&path(i), &json!({"refresh_token": token}), 200).await;
        assert_eq!(stored["unsupported"], true);
        assert!(!stored.to_string().contains(&token), "the token was echoed: {stored}");
        assert_eq!(admin.get(&path(i), 200).await["id"], stored["id"]);
    }
    admin.get(&path(2), 404).await;

    let mut spec = rollout_spec(0, 10, 10);
    spec["policy"]["scope_mode"] = json!("portal");
    spec["policy"]["reconfirm_days"] = json!(90);
    // The plan already names the tenant without a portal credential.
    let plan = admin.post_json("/v1/rollouts?dry_run=true", &spec, 200).await;
    let blocked: Vec<&Value> =
        plan["tenants"].as_array().unwrap().iter().filter(|t| t["status"] == "blocked").collect();
    assert_eq!(blocked.len(), 1, "{plan}");
    assert_eq!(blocked[0]["tenant_id"], ids[2].as_str());
    assert_eq!(blocked[0]["blocker"]["code"], "portal_credentials_missing");

    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    // No technician: nothing is attested, and the rollout still completes.
    wait_tenants(&admin, &rollout, &["completed", "blocked", "failed"], Duration::from_secs(60))
        .await;
    let done = admin.get(&format!("/v1/rollouts/{rollout}"), 200).await;
    assert_eq!(done["counts"]["completed"], 2, "{done}");
    assert_eq!(done["blocked_reasons"], json!({"portal_credentials_missing": 1}), "{done}");
    let tasks = admin.get(&format!("/v1/tasks?rollout_id={rollout}"), 200).await;
    assert_eq!(tasks["items"], json!([]), "portal mode creates no scope task");

    for (i, tenant) in ids.iter().enumerate().take(2) {
        let e = entra(i);
        let rt = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{tenant}"), 200).await;
        let group = rt["scope_group_id"].as_str().unwrap();
        let legacy = sim.sim.legacy_sspr(&e).unwrap();
        assert_eq!(legacy.enablement, Enablement::Selected, "tenant {i}");
        assert_eq!(legacy.group_id.as_deref(), Some(group), "tenant {i}");
        assert_eq!(
            (legacy.methods_required, legacy.register_on_sign_in, legacy.reconfirm_days),
            (2, true, 90)
        );
        assert!(!legacy.security_questions);
        // The portal PUT came before any all_users write.
        let writes = sim.sim.writes(&e).unwrap();
        let portal = writes.iter().position(|w| w.path.contains("PasswordResetPolicies"));
        let first_all = writes.iter().position(|w| w.body.to_string().contains("all_users"));
        assert!(portal.is_some() && portal < first_all, "tenant {i}: {writes:?}");
        assert_eq!(
            writes.iter().filter(|w| w.path.contains("PasswordResetPolicies")).count(),
            1,
            "tenant {i}: the policy was written once"
        );
    }

    // Rolling the whole rollout back puts the legacy policy back as it was, and the groups.
    admin.post_json(&format!("/v1/rollouts/{rollout}/rollback"), &json!({}), 202).await;
    wait_tenants(&admin, &rollout, &["rolled_back", "blocked"], Duration::from_secs(60)).await;
    for (i, (state, legacy)) in before.iter().enumerate().take(2) {
        let e = entra(i);
        assert_eq!(&sim.sim.legacy_sspr(&e).unwrap(), legacy, "tenant {i}");
        assert_eq!(sim.sim.tenant_state(&e).unwrap()["groups"], state["groups"], "tenant {i}");
    }
    let tasks = admin.get(&format!("/v1/tasks?rollout_id={rollout}"), 200).await;
    assert_eq!(tasks["items"], json!([]), "nothing is left for a technician");
    // The tenant without a credential was never written to.
    assert!(sim.sim.writes(&entra(2)).unwrap().is_empty());
    assert_eq!(sim.sim.legacy_sspr(&entra(2)).unwrap(), before[2].1);
}
