//! Tenant isolation across the whole API: every operation of `openapi/openapi.json`, called by
//! an admin key restricted to tenant A with the ids of objects that belong to tenant B (the
//! tenant, a rollout, its task, its report, a webhook and a delivery of it, a portal
//! credential, an API key), must answer exactly as it does for ids that do not exist, never
//! with a success, and must never put any of B's ids or names in a body.
//!
//! The table below names every operation of the document; the test fails when the document
//! has an operation the table lacks (or the other way round), so a new route cannot ship
//! without being walked here.

use std::{collections::BTreeSet, time::Duration};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sspr_domain::{ApiKeyId, DeliveryId, Role, RolloutId, TaskId, TenantId, WebhookId};
use sspr_fleet_tests::{
    TestClient, TestResponse,
    reqwest::{Method, header::CONTENT_TYPE},
    spawn_app_with_sim,
};
use sspr_graph_sim::scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};

use crate::engine::{FAST, Kind, entra, onboard_all, rollout_spec, scenario};

/// One operation and, for those that take one, the body sent (`$NAME` placeholders are
/// replaced by B's ids, or by ids that exist nowhere).
struct Case {
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
}

const fn case(method: &'static str, path: &'static str, body: Option<&'static str>) -> Case {
    Case { method, path, body }
}

const SPEC_FOR_B: &str = r#"{"name": "Reach", "policy": {"pilot_group": {"name": "Reach pilot", "members": ["user00003@{domain}"]}}, "selector": {"tenant_ids": ["$TENANT"]}}"#;

/// Every operation of the document.
const CASES: &[Case] = &[
    case("GET", "/healthz", None),
    case("GET", "/readyz", None),
    case("GET", "/metrics", None),
    case("GET", "/v1/me", None),
    case("GET", "/v1/api-keys", None),
    case(
        "POST",
        "/v1/api-keys",
        Some(r#"{"name": "reach", "role": "viewer", "tenant_ids": ["$TENANT"]}"#),
    ),
    case("GET", "/v1/api-keys/{id}", None),
    case("DELETE", "/v1/api-keys/{id}", None),
    case("GET", "/v1/audit", None),
    case("GET", "/v1/reports/sspr", None),
    case("GET", "/v1/reports/sspr/{tenant_id}", None),
    case("POST", "/v1/reports/sspr:refresh", Some(r#"{"tenant_ids": ["$TENANT"]}"#)),
    case("GET", "/v1/rollouts", None),
    case("POST", "/v1/rollouts", Some(SPEC_FOR_B)),
    case("POST", "/v1/rollouts:plan", Some(SPEC_FOR_B)),
    case("GET", "/v1/rollouts/{id}", None),
    case("POST", "/v1/rollouts/{id}/approve", Some(r#"{"tenant_ids": ["$TENANT"]}"#)),
    case("POST", "/v1/rollouts/{id}/cancel", None),
    case("GET", "/v1/rollouts/{id}/events", None),
    case("GET", "/v1/rollouts/{id}/history", None),
    case("POST", "/v1/rollouts/{id}/pause", None),
    case("POST", "/v1/rollouts/{id}/resume", None),
    case("POST", "/v1/rollouts/{id}/retry", Some(r#"{"tenant_ids": ["$TENANT"]}"#)),
    case("POST", "/v1/rollouts/{id}/rollback", Some(r#"{"tenant_id": "$TENANT"}"#)),
    case("GET", "/v1/rollouts/{id}/tenants", None),
    case("GET", "/v1/rollouts/{id}/tenants/{tenant_id}", None),
    case("GET", "/v1/tasks", None),
    case("GET", "/v1/tasks/{id}", None),
    case("POST", "/v1/tasks/{id}/attest", Some(r#"{"note": "reach"}"#)),
    case("GET", "/v1/tenants", None),
    case(
        "POST",
        "/v1/tenants",
        Some(
            r#"{"entra_tenant": "$ENTRA", "display_name": "Reach", "credentials": {"kind": "client_secret", "client_id": "$CLIENT_ID", "client_secret": "$CLIENT_SECRET"}}"#,
        ),
    ),
    case(
        "POST",
        "/v1/tenants:import",
        Some(
            "entra_tenant,display_name,client_id,client_secret\n$ENTRA,Reach,$CLIENT_ID,$CLIENT_SECRET\n",
        ),
    ),
    case("POST", "/v1/tenants:verify", Some(r#"{"tenant_ids": ["$TENANT"]}"#)),
    case("GET", "/v1/tenants/{id}", None),
    case("PATCH", "/v1/tenants/{id}", Some(r#"{"display_name": "Renamed by reach"}"#)),
    case("DELETE", "/v1/tenants/{id}", None),
    case(
        "PUT",
        "/v1/tenants/{id}/credentials",
        Some(
            r#"{"kind": "client_secret", "client_id": "$CLIENT_ID", "client_secret": "$CLIENT_SECRET"}"#,
        ),
    ),
    case("GET", "/v1/tenants/{id}/portal-credentials", None),
    case("PUT", "/v1/tenants/{id}/portal-credentials", Some(r#"{"refresh_token": "reach-token"}"#)),
    case("DELETE", "/v1/tenants/{id}/portal-credentials", None),
    case("POST", "/v1/tenants/{id}/verify", None),
    case("GET", "/v1/webhooks", None),
    case(
        "POST",
        "/v1/webhooks",
        Some(r#"{"url": "http://127.0.0.1:9/reach", "event_types": ["tenant.completed"]}"#),
    ),
    case("GET", "/v1/webhooks/{id}", None),
    case("PATCH", "/v1/webhooks/{id}", Some(r#"{"enabled": false}"#)),
    case("DELETE", "/v1/webhooks/{id}", None),
    case("POST", "/v1/webhooks/{id}/rotate-secret", None),
    case("POST", "/v1/webhooks/{id}/test", None),
    case("GET", "/v1/webhooks/{id}/deliveries", None),
    case("GET", "/v1/webhooks/{id}/deliveries/{delivery_id}", None),
    case("POST", "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", None),
];

/// The ids a request is built from: B's, or ones that exist nowhere.
#[derive(Debug, Clone)]
struct Ids {
    tenant: String,
    entra: String,
    rollout: String,
    task: String,
    webhook: String,
    delivery: String,
    key: String,
    tenant_name: String,
}

impl Ids {
    fn ghost() -> Self {
        Ids {
            tenant: TenantId::new().to_string(),
            entra: "0e0e0e0e-0000-4000-8000-00000000ffff".into(),
            rollout: RolloutId::new().to_string(),
            task: TaskId::new().to_string(),
            webhook: WebhookId::new().to_string(),
            delivery: DeliveryId::new().to_string(),
            key: ApiKeyId::new().to_string(),
            tenant_name: "No such tenant".into(),
        }
    }

    /// The concrete path of `template`, failing on a parameter this test does not know.
    fn path(&self, template: &str) -> String {
        let id = if template.starts_with("/v1/tenants/") {
            &self.tenant
        } else if template.starts_with("/v1/rollouts/") {
            &self.rollout
        } else if template.starts_with("/v1/tasks/") {
            &self.task
        } else if template.starts_with("/v1/webhooks/") {
            &self.webhook
        } else {
            &self.key
        };
        let path = template
            .replace("{id}", id)
            .replace("{tenant_id}", &self.tenant)
            .replace("{delivery_id}", &self.delivery);
        assert!(!path.contains('{'), "{template}: a path parameter this test does not know");
        path
    }

    fn body(&self, template: &str) -> String {
        template
            .replace("$TENANT", &self.tenant)
            .replace("$ENTRA", &self.entra)
            .replace("$CLIENT_ID", DEFAULT_CLIENT_ID)
            .replace("$CLIENT_SECRET", DEFAULT_CLIENT_SECRET)
    }

    /// `text` with each of these ids replaced by its kind, to compare answers.
    fn normalise(&self, text: &str) -> String {
        [
            (&self.tenant, "<tenant>"),
            (&self.entra, "<entra>"),
            (&self.rollout, "<rollout>"),
            (&self.task, "<task>"),
            (&self.webhook, "<webhook>"),
            (&self.delivery, "<delivery>"),
            (&self.key, "<key>"),
            (&self.tenant_name, "<tenant name>"),
        ]
        .iter()
        .fold(text.to_owned(), |t, (id, kind)| t.replace(id.as_str(), kind))
    }

    /// Query parameters that name B's objects, for the operations that take them.
    fn query(&self, params: &BTreeSet<String>) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if params.contains("tenant_id") {
            query.push(("tenant_id", self.tenant.clone()));
        }
        if params.contains("rollout_id") {
            query.push(("rollout_id", self.rollout.clone()));
        }
        if params.contains("q") {
            query.push(("q", self.tenant_name.clone()));
        }
        query
    }
}

/// Every (method, path) of the document with its query parameter names.
fn documented_operations() -> Vec<(String, String, BTreeSet<String>)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
            .expect("read openapi/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("the OpenAPI document is JSON");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            let query = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "query")
                        .filter_map(|p| p["name"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            ops.push((method.to_ascii_uppercase(), path.clone(), query));
        }
    }
    ops
}

async fn call(client: &TestClient, c: &Case, ids: &Ids, query: &BTreeSet<String>) -> TestResponse {
    let method = Method::from_bytes(c.method.as_bytes()).expect("a method");
    let mut path = ids.path(c.path);
    let query = ids.query(query);
    if !query.is_empty() {
        // Ids and the simulator's names are plain: only spaces need escaping.
        let pairs: Vec<String> =
            query.iter().map(|(k, v)| format!("{k}={}", v.replace(' ', "%20"))).collect();
        path = format!("{path}?{}", pairs.join("&"));
    }
    let mut request = client
        .request(method, &path)
        // An event stream that wrongly opened would never end: fail instead of hanging.
        .timeout(Duration::from_secs(10));
    if let Some(body) = c.body {
        let content_type =
            if c.path.ends_with(":import") { "text/csv" } else { "application/json" };
        request = request.header(CONTENT_TYPE, content_type).body(ids.body(body));
    }
    client.send(request).await
}

fn code(response: &TestResponse) -> Option<String> {
    let is_problem =
        response.header("content-type").is_some_and(|t| t.starts_with("application/problem+json"));
    is_problem.then(|| response.json()["code"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_key_reaches_nothing_of_another_tenant_on_any_route() {
    // The table and the document name the same operations.
    let documented = documented_operations();
    let in_doc: BTreeSet<(String, String)> =
        documented.iter().map(|(m, p, _)| (m.clone(), p.clone())).collect();
    let in_table: BTreeSet<(String, String)> =
        CASES.iter().map(|c| (c.method.to_owned(), c.path.to_owned())).collect();
    assert_eq!(in_table.len(), CASES.len(), "an operation is listed twice");
    assert_eq!(
        in_doc.difference(&in_table).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations of openapi/openapi.json this test does not walk: add them to CASES"
    );
    assert_eq!(
        in_table.difference(&in_doc).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations in CASES that the document no longer has"
    );
    // Every operation that documents a body gets one here, and only those.
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
            .expect("read openapi/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    for c in CASES {
        let op = &doc["paths"][c.path][c.method.to_ascii_lowercase()];
        assert_eq!(
            op["requestBody"].is_object(),
            c.body.is_some(),
            "{} {}: the table's body does not match the document's requestBody",
            c.method,
            c.path
        );
    }

    // Tenants A and B; B gets one object of every kind.
    let mut env = FAST.to_vec();
    env.push(("SSPR_FLEET_API__RATE_PER_SECOND", "0"));
    let (app, sim) = spawn_app_with_sim(&scenario(&[Kind::Ready, Kind::Ready]), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let tenants = onboard_all(&admin, 2).await;
    let (a, b): (TenantId, TenantId) = (tenants[0].parse().unwrap(), tenants[1].parse().unwrap());
    let key_b = app.issue_key("reach-key-of-b", Role::Admin, Some(std::slice::from_ref(&b))).await;
    let as_b = app.client_with(&key_b.token);
    let as_a = app.client_with(&app.key_with(Role::Admin, Some(&[a])).await);

    let mut spec = rollout_spec(0, 10, 10);
    spec["name"] = json!("Rollout of B only");
    spec["selector"] = json!({"tenant_ids": [b.to_string()]});
    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    let webhook = as_b
        .post_json(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/b", "description": "Webhook of B", "event_types": ["tenant.completed"]}),
            201,
        )
        .await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    as_b.post_empty_raw(&format!("/v1/webhooks/{webhook}/test")).await.expect_status(202);
    let deliveries = as_b.get(&format!("/v1/webhooks/{webhook}/deliveries"), 200).await;
    let delivery = deliveries["items"][0]["id"].as_str().unwrap().to_owned();
    admin.post_json("/v1/reports/sspr:refresh", &json!({"tenant_ids": [b.to_string()]}), 202).await;
    let token = sim.sim.portal_refresh_token(&entra(1)).unwrap();
    let portal = admin
        .put_json(
            &format!("/v1/tenants/{b}/portal-credentials"),
            &json!({"refresh_token": token}),
            200,
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The rollout's scope task for B.
    let started = std::time::Instant::now();
    let task = loop {
        let tasks = admin.get(&format!("/v1/tasks?tenant_id={b}"), 200).await;
        if let Some(id) = tasks["items"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no task for B: {tasks}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let b_tenant = admin.get(&format!("/v1/tenants/{b}"), 200).await;
    let ids_b = Ids {
        tenant: b.to_string(),
        entra: entra(1),
        rollout,
        task,
        webhook,
        delivery,
        key: key_b.id.clone(),
        tenant_name: b_tenant["display_name"].as_str().unwrap().to_owned(),
    };
    // What must never appear in an answer to A's key.
    let secrets: Vec<String> = vec![
        ids_b.tenant.clone(),
        ids_b.entra.clone(),
        ids_b.tenant_name.clone(),
        ids_b.rollout.clone(),
        ids_b.task.clone(),
        ids_b.webhook.clone(),
        ids_b.delivery.clone(),
        ids_b.key.clone(),
        key_b.name.clone(),
        portal.clone(),
        "Rollout of B only".into(),
        "Webhook of B".into(),
    ];

    let ghost = Ids::ghost();
    let mut failures = Vec::new();
    for c in CASES {
        let query = &documented
            .iter()
            .find(|(m, p, _)| m == c.method && p == c.path)
            .expect("checked above")
            .2;
        let names_b = c.path.contains('{')
            || c.body.is_some_and(|b| b.contains('$'))
            || !ids_b.query(query).is_empty();
        let expected = call(&as_a, c, &ghost, query).await;
        let got = call(&as_a, c, &ids_b, query).await;
        let what = format!("{} {}", c.method, c.path);
        let body = got.text();
        // An answer may repeat an id the request sent ("not_found": [...]) only if it is the
        // very answer an id that exists nowhere gets.
        let echo = names_b
            && got.status == expected.status
            && ids_b.normalise(&body) == ghost.normalise(&expected.text());
        if let Some(leak) = secrets.iter().find(|s| !echo && body.contains(s.as_str())) {
            failures.push(format!("{what} -> {}: the body names B's {leak:?}: {body}", got.status));
        }
        if !names_b {
            continue;
        }
        if (got.status, code(&got)) != (expected.status, code(&expected)) {
            failures.push(format!(
                "{what}: B's ids -> {} {:?}, ids that exist nowhere -> {} {:?}; body: {body}",
                got.status,
                code(&got),
                expected.status,
                code(&expected)
            ));
        }
        if c.path.contains('{') {
            let allowed = got.status == 404
                || (got.status == 403 && code(&got).as_deref() == Some("restricted_key"));
            if !allowed {
                failures.push(format!("{what}: B's object answered {}: {body}", got.status));
            }
        }
    }
    assert!(failures.is_empty(), "{} isolation failures:\n{}", failures.len(), failures.join("\n"));

    // Nothing of B changed: the walk's writes were all refused.
    let after = admin.get(&format!("/v1/tenants/{b}"), 200).await;
    assert_eq!(after["display_name"], b_tenant["display_name"]);
    assert_eq!(after["status"], b_tenant["status"], "{after}");
    admin.get(&format!("/v1/webhooks/{}", ids_b.webhook), 200).await;
    admin.get(&format!("/v1/api-keys/{}", ids_b.key), 200).await;
    admin.get(&format!("/v1/tenants/{b}/portal-credentials"), 200).await;
}

/// The payloads of a webhook's deliveries, as its owner reads them.
async fn delivery_payloads(client: &TestClient, webhook: &str) -> Vec<Value> {
    let page = client.get(&format!("/v1/webhooks/{webhook}/deliveries?limit=100"), 200).await;
    page["items"].as_array().unwrap().iter().map(|d| d["payload"].clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_key_sees_a_shared_rollout_only_through_its_own_tenants() {
    // A and B complete, C is unlicensed and blocks; one rollout covers all three, with B as
    // its canary and a pilot user named on B's domain. A key restricted to A reads it.
    let mut env = FAST.to_vec();
    env.push(("SSPR_FLEET_API__RATE_PER_SECOND", "0"));
    env.push(("SSPR_FLEET_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true"));
    let (app, sim) =
        spawn_app_with_sim(&scenario(&[Kind::Ready, Kind::Ready, Kind::Unlicensed]), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let tenants = onboard_all(&admin, 3).await;
    let (a, b, c) = (&tenants[0], &tenants[1], &tenants[2]);
    let as_a = app.client_with(&app.key_with(Role::Admin, Some(&[a.parse().unwrap()])).await);
    let hook = as_a
        .post_json(
            "/v1/webhooks",
            &json!({"url": "http://127.0.0.1:9/a", "event_types": ["rollout.completed"]}),
            201,
        )
        .await["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let mut spec = rollout_spec(0, 10, 10);
    spec["name"] = json!("Shared winter rollout");
    spec["selector"] = json!({"tenant_ids": [a, b, c]});
    spec["waves"]["canary"] = json!({"kind": "tenants", "tenant_ids": [b]});
    spec["policy"]["pilot_group"]["members"] =
        json!(["user00003@{domain}", "user00004@t01.onmicrosoft.com"]);
    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    let entra_of = (0..3).map(|i| (tenants[i].clone(), entra(i))).collect();
    let (fleet, _) =
        crate::engine::drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(120)).await;
    assert_eq!(fleet["state"], "completed", "{fleet}");
    assert_eq!(fleet["tenants"], 3);
    let fleet_reason = fleet["state_reason"].as_str().unwrap_or_default().to_owned();
    assert!(fleet_reason.contains("blocked"), "C blocks, the fleet tally says so: {fleet}");

    // What A's key must never learn: B's and C's ids, Entra ids, names and domains, the pilot
    // user on B's domain, and the fleet-wide tally.
    let mut foreign = Vec::new();
    for (i, id) in [(1, b), (2, c)] {
        let t = admin.get(&format!("/v1/tenants/{id}"), 200).await;
        foreign.push(id.clone());
        foreign.push(entra(i));
        foreign.push(t["display_name"].as_str().unwrap().to_owned());
        foreign.push(format!("t{i:02}.onmicrosoft.com"));
    }
    let mut answers = Vec::new();
    let view = as_a.get(&format!("/v1/rollouts/{rollout}"), 200).await;
    assert_eq!(view["tenants"], 1, "{view}");
    assert_eq!(view["spec"]["selector"]["tenant_ids"], json!([a]), "{view}");
    assert_eq!(view["spec"]["waves"]["canary"]["tenant_ids"], json!([]), "{view}");
    assert_eq!(view["spec"]["policy"]["pilot_group"]["members"], json!(["user00003@{domain}"]));
    let a_state = as_a.get(&format!("/v1/rollouts/{rollout}/tenants/{a}"), 200).await["state"]
        .as_str()
        .unwrap()
        .to_owned();
    let own_reason = (a_state != "completed").then(|| format!("1 {a_state}"));
    assert_eq!(view["state_reason"].as_str().map(str::to_owned), own_reason, "{view}");
    answers.push(view.to_string());
    answers.push(as_a.get("/v1/rollouts", 200).await.to_string());
    let history = as_a.get(&format!("/v1/rollouts/{rollout}/history?limit=1000"), 200).await;
    for e in history["items"].as_array().unwrap().iter().filter(|e| e["tenant_id"].is_null()) {
        for fleet_key in ["tenants", "failed", "wave_size", "previous_wave_failed"] {
            assert!(e["detail"].get(fleet_key).is_none(), "a fleet count in {e}");
        }
    }
    answers.push(history.to_string());
    answers.push(as_a.get_raw(&format!("/v1/rollouts/{rollout}/events")).await.text());
    answers.push(
        as_a.get(&format!("/v1/rollouts/{rollout}/tenants?limit=500"), 200).await.to_string(),
    );
    // A cursor naming B, out of A's reach, must not page from B's position.
    let forged = URL_SAFE_NO_PAD.encode(format!("i:{b}"));
    let page = as_a.get(&format!("/v1/rollouts/{rollout}/tenants?cursor={forged}"), 200).await;
    assert_eq!(page["items"], json!([]), "a cursor out of reach pages: {page}");
    answers.push(page.to_string());
    for path in ["/status".to_owned(), format!("/status/rollouts/{rollout}")] {
        answers.push(as_a.get_raw(&path).await.expect_status(200).text());
    }
    let payloads = delivery_payloads(&as_a, &hook).await;
    let completed: Vec<&Value> =
        payloads.iter().filter(|p| p["type"] == "rollout.completed").collect();
    assert_eq!(completed.len(), 1, "{payloads:?}");
    assert_eq!(completed[0]["data"]["reason"].as_str().map(str::to_owned), own_reason);
    assert_eq!(completed[0]["data"]["detail"], json!({}), "{}", completed[0]);
    answers.push(serde_json::to_string(&payloads).unwrap());

    let mut leaks = Vec::new();
    for answer in &answers {
        for f in foreign.iter().chain([&fleet_reason]).filter(|f| answer.contains(f.as_str())) {
            leaks.push(format!("{f:?} in {}", &answer[..answer.len().min(300)]));
        }
    }
    assert!(leaks.is_empty(), "A's key learns of B and C:\n{}", leaks.join("\n"));
}
