//! Signed webhooks end to end: a receiver written here checks every signature with its own
//! HMAC code, rejects bad or stale timestamps and answers 503 during an outage; a small
//! rollout over the Graph simulator produces the events; the delivery log, redelivery,
//! secret rotation, restricted keys and bad input are checked over the API.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use base64::{Engine, engine::general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use sspr_domain::{Role, TenantId, WebhookId};
use sspr_fleet_tests::{SimHandle, TestClient, field_errors, spawn_app_with_sim};
use sspr_graph_sim::{
    Enablement, Faults, LegacySspr,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use crate::engine::rollout_spec;

/// The product's default target policy: only public addresses (the test harness allows
/// private ones, for the receivers on 127.0.0.1).
const PUBLIC_ONLY: (&str, &str) = ("SSPR_FLEET_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "false");

/// Fast engine and webhook pacing for tests.
const FAST: &[(&str, &str)] = &[
    ("SSPR_FLEET_ENGINE__WAIT_POLL_MS", "150"),
    ("SSPR_FLEET_ENGINE__ADVANCE_MS", "150"),
    ("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "50"),
    ("SSPR_FLEET_ENGINE__RETRY_BASE_MS", "200"),
    ("SSPR_FLEET_ENGINE__RETRY_MAX_MS", "2000"),
    ("SSPR_FLEET_WEBHOOKS__RETRY_BASE_MS", "100"),
    ("SSPR_FLEET_WEBHOOKS__RETRY_MAX_MS", "400"),
    ("SSPR_FLEET_WEBHOOKS__IDLE_POLL_MS", "50"),
    ("SSPR_FLEET_WEBHOOKS__MAX_ATTEMPTS", "50"),
    ("SSPR_FLEET_WEBHOOKS__TIMEOUT_SECS", "5"),
];

const ALL_TYPES: [&str; 6] = [
    "tenant.blocked",
    "tenant.gate_waiting_approval",
    "tenant.completed",
    "tenant.failed",
    "rollout.paused",
    "rollout.completed",
];

// ---- the receiver -------------------------------------------------------------------------

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Got {
    path: String,
    id: String,
    body: Value,
    /// Labels of the known secrets one of the request's signatures verified with.
    verified_by: BTreeSet<String>,
    /// How many signatures the request carried.
    signatures: usize,
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    outage: bool,
    /// (label, HMAC key) of every secret the receiver knows.
    secrets: Vec<(String, Vec<u8>)>,
    got: Vec<Got>,
    /// Connections accepted, whether or not a request followed.
    connections: usize,
}

/// A webhook receiver on 127.0.0.1:0 that verifies like a PSA tool would, with its own code.
#[derive(Clone)]
struct Receiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
}

/// The Standard Webhooks signature, computed independently of the daemon's code.
fn expected_signature(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    mac.update(&signed);
    STANDARD.encode(mac.finalize().into_bytes())
}

fn key_of(secret: &str) -> Vec<u8> {
    let b64 = secret.strip_prefix("whsec_").expect("secrets start with whsec_");
    let key = STANDARD.decode(b64).expect("the secret is base64");
    assert_eq!(key.len(), 32);
    key
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self { addr, state: Arc::default() };
        let r = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else { return };
                r.state.lock().unwrap().connections += 1;
                let r = r.clone();
                tokio::spawn(async move {
                    let Some((head, body)) = read_request(&mut socket).await else { return };
                    let status = r.handle(&head, &body);
                    let reply = format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        receiver
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn set_outage(&self, on: bool) {
        self.state.lock().unwrap().outage = on;
    }

    fn add_secret(&self, label: &str, secret: &str) {
        self.state.lock().unwrap().secrets.push((label.to_owned(), key_of(secret)));
    }

    fn got(&self) -> Vec<Got> {
        self.state.lock().unwrap().got.clone()
    }

    fn connections(&self) -> usize {
        self.state.lock().unwrap().connections
    }

    /// Verifies one request; the status to answer.
    fn handle(&self, head: &str, body: &[u8]) -> u16 {
        let mut lines = head.split("\r\n");
        let path = lines.next().unwrap_or("").split(' ').nth(1).unwrap_or("").to_owned();
        let headers: BTreeMap<String, String> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut state = self.state.lock().unwrap();
        let (Some(id), Some(ts), Some(sigs)) = (
            headers.get("webhook-id"),
            headers.get("webhook-timestamp"),
            headers.get("webhook-signature"),
        ) else {
            return 400;
        };
        let fresh =
            ts.parse::<i64>().is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 300);
        let sent: Vec<&str> = sigs.split(' ').filter_map(|s| s.strip_prefix("v1,")).collect();
        let verified_by: BTreeSet<String> = state
            .secrets
            .iter()
            .filter(|(_, key)| sent.contains(&expected_signature(key, id, ts, body).as_str()))
            .map(|(label, _)| label.clone())
            .collect();
        let json_ct = headers.get("content-type").is_some_and(|c| c == "application/json");
        let agent = headers.get("user-agent").is_some_and(|a| a == "sspr-fleet");
        let status = if !fresh || verified_by.is_empty() || !json_ct || !agent {
            401
        } else if state.outage {
            503
        } else {
            200
        };
        state.got.push(Got {
            path,
            id: id.clone(),
            body: serde_json::from_slice(body).unwrap_or(Value::Null),
            verified_by,
            signatures: sent.len(),
            status,
        });
        status
    }
}

/// Reads one HTTP/1.1 request: (head, body).
async fn read_request(socket: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

// ---- helpers ------------------------------------------------------------------------------

fn entra(i: usize) -> String {
    format!("0e0e0e0e-0000-4000-8000-{i:012}")
}

/// Tenants 0 and 1 are licensed; tenant 2 has no licence, so its preflight blocks it.
fn scenario() -> String {
    let mut s = String::from("seed = 7\n");
    for (i, licence) in ["business_premium", "p1", "none"].iter().enumerate() {
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Tenant {i:02}\"\ndomain = \"t{i:02}.onmicrosoft.com\"\nusers = 10\nlicence = \"{licence}\"\n",
            entra(i)
        ));
    }
    s
}

async fn onboard(admin: &TestClient, n: usize) -> Vec<String> {
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

/// Plays the technician for the manual scope tasks: sets the simulator's legacy policy to
/// "Selected = the task's group" and attests the task.
async fn attest_open_tasks(
    admin: &TestClient,
    sim: &SimHandle,
    entra_of: &BTreeMap<String, String>,
) {
    let tasks = admin.get("/v1/tasks?state=open&limit=500", 200).await;
    for task in tasks["items"].as_array().unwrap() {
        if task["kind"] != "scope_selected" {
            continue;
        }
        let entra = &entra_of[task["tenant_id"].as_str().unwrap()];
        let group = task["instructions"]["group"]["id"].as_str().unwrap().to_owned();
        let policy = LegacySspr {
            enablement: Enablement::Selected,
            group_id: Some(group),
            ..sim.sim.legacy_sspr(entra).unwrap()
        };
        if sim.sim.set_legacy_sspr(entra, policy).is_err() {
            continue;
        }
        let id = task["id"].as_str().unwrap();
        admin.post_json(&format!("/v1/tasks/{id}/attest"), &json!({"note": "test"}), 200).await;
    }
}

/// Waits (attesting tasks meanwhile) until `done` holds for the rollout.
async fn drive_until(
    admin: &TestClient,
    sim: &SimHandle,
    rollout: &str,
    entra_of: &BTreeMap<String, String>,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let start = std::time::Instant::now();
    loop {
        attest_open_tasks(admin, sim, entra_of).await;
        let r = admin.get(&format!("/v1/rollouts/{rollout}"), 200).await;
        if done(&r) {
            return r;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "waiting for {what}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `done` holds for what the receiver got.
async fn wait_received(receiver: &Receiver, what: &str, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
    let start = std::time::Instant::now();
    loop {
        let got = receiver.got();
        if done(&got) {
            return got;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "waiting for {what}: {got:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accepted (200) requests at `path`.
fn accepted<'a>(got: &'a [Got], path: &'a str) -> impl Iterator<Item = &'a Got> + 'a {
    got.iter().filter(move |g| g.path == path && g.status == 200)
}

fn types_at(got: &[Got], path: &str) -> BTreeSet<String> {
    accepted(got, path).map(|g| g.body["type"].as_str().unwrap_or("").to_owned()).collect()
}

// ---- the tests ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_webhooks_follow_a_rollout_through_an_outage_a_redelivery_and_a_rotation() {
    let receiver = Receiver::start().await;
    receiver.set_outage(true);
    let (app, sim) = spawn_app_with_sim(&scenario(), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let ids = onboard(&admin, 3).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let first: TenantId = ids[0].parse().unwrap();
    let restricted = app.client_with(&app.key_with(Role::Admin, Some(&[first])).await);

    // One subscription for everything, one by a key restricted to tenant 0.
    let created = admin
        .post_json(
            "/v1/webhooks",
            &json!({"url": receiver.url("/all"), "description": "PSA", "event_types": ALL_TYPES}),
            201,
        )
        .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.add_secret("first", &secret);
    let all_id = created["webhook"]["id"].as_str().unwrap().to_owned();
    assert!(all_id.starts_with("whk_"));
    assert_eq!(created["webhook"]["tenant_ids"], Value::Null);
    assert_eq!(created["webhook"]["enabled"], true);

    let mine = restricted
        .post_json(
            "/v1/webhooks",
            &json!({"url": receiver.url("/mine"), "event_types": ALL_TYPES}),
            201,
        )
        .await;
    let mine_secret = mine["secret"].as_str().unwrap().to_owned();
    receiver.add_secret("mine", &mine_secret);
    let mine_id = mine["webhook"]["id"].as_str().unwrap().to_owned();
    assert_eq!(mine["webhook"]["tenant_ids"], json!([ids[0]]));

    // The restricted key sees only its own subscription; the other is 404 to it.
    let listed = admin.get("/v1/webhooks", 200).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");
    let listed = restricted.get("/v1/webhooks", 200).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["id"], mine_id.as_str());
    for path in [format!("/v1/webhooks/{all_id}"), format!("/v1/webhooks/{all_id}/deliveries")] {
        restricted.get_raw(&path).await.expect_problem(404, "not_found");
    }
    restricted
        .post_json_raw(&format!("/v1/webhooks/{all_id}/rotate-secret"), &json!({}))
        .await
        .expect_problem(404, "not_found");
    restricted.delete_raw(&format!("/v1/webhooks/{all_id}")).await.expect_problem(404, "not_found");
    // Webhooks are an admin matter.
    let operator = app.client_with(&app.key_with(Role::Operator, None).await);
    operator.get_raw("/v1/webhooks").await.expect_problem(403, "forbidden_role");

    // A rollout: tenant 2 is blocked, tenants 0 and 1 wait at the gate for approval.
    let mut spec = rollout_spec(0, 10, 10);
    spec["gates"] = json!({"soak_minutes": 0, "approval": "per_tenant"});
    spec["waves"]["failure_budget"] = json!({"kind": "percent", "percent": 100});
    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    drive_until(&admin, &sim, &rollout, &entra_of, "2 at the gate, 1 blocked", |r| {
        r["counts"]["gate"] == 2 && r["counts"]["blocked"] == 1
    })
    .await;
    // The gate's own step records the wait after the tenant entered the gate.
    for t in &ids[..2] {
        let start = std::time::Instant::now();
        loop {
            let rt = admin.get(&format!("/v1/rollouts/{rollout}/tenants/{t}"), 200).await;
            if rt["reason"] == "waiting for approval" {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "not waiting for approval: {rt}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Pause and resume while they wait: one rollout.paused, and no second gate wait.
    admin.post_json(&format!("/v1/rollouts/{rollout}/pause"), &json!({}), 200).await;
    admin.post_json(&format!("/v1/rollouts/{rollout}/resume"), &json!({}), 200).await;

    // The outage: every attempt so far was answered 503, and the log says so.
    let got = wait_received(&receiver, "retries during the outage", |got| {
        got.iter().filter(|g| g.status == 503).map(|g| &g.id).collect::<BTreeSet<_>>().len() >= 3
            && got.iter().filter(|g| g.status == 503).count() >= 6
    })
    .await;
    assert!(got.iter().all(|g| g.status == 503), "only 503 during the outage");
    assert!(got.iter().all(|g| !g.verified_by.is_empty()), "every request verifies");
    let pending = admin.get(&format!("/v1/webhooks/{all_id}/deliveries?state=pending"), 200).await;
    let failing = pending["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["attempts"].as_i64().unwrap() >= 2)
        .unwrap_or_else(|| panic!("a pending delivery retried: {pending}"))
        .clone();
    assert_eq!(failing["last_status"], 503, "{failing}");
    assert_eq!(failing["last_error"], "HTTP 503", "{failing}");
    let failing_id = failing["id"].as_str().unwrap().to_owned();
    receiver.set_outage(false);

    // Tenant 1's consent is revoked before approval, so its next step fails.
    sim.sim.set_faults(&entra(1), Faults { consent_revoked: true, ..Faults::default() }).unwrap();
    admin.post_json(&format!("/v1/rollouts/{rollout}/approve"), &json!({"wave": 0}), 200).await;
    drive_until(&admin, &sim, &rollout, &entra_of, "the rollout completes", |r| {
        r["state"] == "completed"
    })
    .await;

    // Every event type arrives, verified, once the outage is over.
    let got = wait_received(&receiver, "every event type", |got| {
        let waits: BTreeSet<String> = accepted(got, "/all")
            .filter(|g| g.body["type"] == "tenant.gate_waiting_approval")
            .map(|g| g.body["data"]["tenant_id"].to_string())
            .collect();
        types_at(got, "/all").len() == ALL_TYPES.len() && waits.len() == 2
    })
    .await;
    assert_eq!(types_at(&got, "/all"), ALL_TYPES.iter().map(|s| s.to_string()).collect());
    for g in accepted(&got, "/all") {
        assert!(g.verified_by.contains("first"), "{g:?}");
        assert_eq!(g.signatures, 1, "one secret before any rotation: {g:?}");
    }
    let by_type = |t: &str| -> Vec<&Got> {
        let mut seen = BTreeSet::new();
        accepted(&got, "/all")
            .filter(|g| g.body["type"] == t && seen.insert(g.id.clone()))
            .collect()
    };
    let blocked = by_type("tenant.blocked");
    assert_eq!(blocked.len(), 1);
    let data = &blocked[0].body["data"];
    assert_eq!(data["tenant_id"], ids[2].as_str(), "{data}");
    assert_eq!(data["tenant_name"], "Tenant 02", "{data}");
    assert_eq!(data["rollout_id"], rollout.as_str(), "{data}");
    assert_eq!(data["rollout_name"], "Fleet SSPR", "{data}");
    assert_eq!(data["state"], "blocked", "{data}");
    assert!(data["reason"].as_str().unwrap().contains("licen"), "{data}");
    chrono::DateTime::parse_from_rfc3339(blocked[0].body["timestamp"].as_str().unwrap()).unwrap();
    // Once per tenant gate wait, pause and resume notwithstanding.
    let waits: Vec<&str> = by_type("tenant.gate_waiting_approval")
        .iter()
        .map(|g| g.body["data"]["tenant_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        waits.iter().copied().collect::<BTreeSet<_>>(),
        BTreeSet::from([ids[0].as_str(), ids[1].as_str()])
    );
    assert_eq!(waits.len(), 2, "{waits:?}");
    assert_eq!(by_type("rollout.paused").len(), 1);
    assert_eq!(by_type("rollout.paused")[0].body["data"]["reason"], "paused_by_operator");
    let failed = by_type("tenant.failed");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].body["data"]["tenant_id"], ids[1].as_str());
    assert_eq!(by_type("tenant.completed")[0].body["data"]["tenant_id"], ids[0].as_str());
    assert_eq!(by_type("rollout.completed").len(), 1);

    // The restricted subscription got tenant 0's events and the rollout's, nothing of the
    // other tenants.
    let got = wait_received(&receiver, "the restricted subscription's events", |got| {
        ["tenant.gate_waiting_approval", "tenant.completed", "rollout.paused", "rollout.completed"]
            .iter()
            .all(|t| types_at(got, "/mine").contains(*t))
    })
    .await;
    for g in got.iter().filter(|g| g.path == "/mine") {
        assert!(g.verified_by.contains("mine") && !g.verified_by.contains("first"), "{g:?}");
        let tenant = &g.body["data"]["tenant_id"];
        assert!(tenant.is_null() || *tenant == ids[0].as_str(), "{g:?}");
    }
    assert!(!types_at(&got, "/mine").contains("tenant.blocked"));
    assert!(!types_at(&got, "/mine").contains("tenant.failed"));

    // The delivery log of the retried delivery: 503s, then delivered with 200.
    let d = wait_delivered(&admin, &all_id, &failing_id).await;
    let log = d["attempt_log"].as_array().unwrap();
    assert!(log.len() >= 3, "{d}");
    let (last, earlier) = log.split_last().unwrap();
    assert!(earlier.iter().all(|a| a["status"] == 503 && a["error"] == "HTTP 503"), "{d}");
    assert_eq!(last["status"], 200, "{d}");
    assert_eq!(d["attempts"], log.len());
    assert_eq!(d["last_status"], 200);
    assert_eq!(d["last_error"], Value::Null);
    assert!(d["delivered_at"].is_string(), "{d}");
    let delivered =
        admin.get(&format!("/v1/webhooks/{all_id}/deliveries?state=delivered&limit=2"), 200).await;
    assert_eq!(delivered["items"].as_array().unwrap().len(), 2);
    assert!(delivered["next_cursor"].is_string(), "{delivered}");
    let next = delivered["next_cursor"].as_str().unwrap();
    let page2 = admin
        .get(&format!("/v1/webhooks/{all_id}/deliveries?state=delivered&cursor={next}"), 200)
        .await;
    let page1_ids: BTreeSet<&str> =
        delivered["items"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert!(
        page2["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| !page1_ids.contains(d["id"].as_str().unwrap()))
    );

    // A manual redelivery sends the same message id again.
    let message_id = d["message_id"].as_str().unwrap().to_owned();
    let before = receiver.got().iter().filter(|g| g.id == message_id && g.status == 200).count();
    let again = admin
        .post_json(
            &format!("/v1/webhooks/{all_id}/deliveries/{failing_id}/redeliver"),
            &json!({}),
            202,
        )
        .await;
    assert_eq!(again["state"], "pending");
    assert_eq!(again["message_id"], message_id.as_str());
    wait_received(&receiver, "the redelivery", |got| {
        got.iter().filter(|g| g.id == message_id && g.status == 200).count() == before + 1
    })
    .await;

    // Rotation: the new secret is shown once; for the grace period both sign.
    let rotated =
        admin.post_json(&format!("/v1/webhooks/{all_id}/rotate-secret"), &json!({}), 200).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_expires_at"].is_string(), "{rotated}");
    receiver.add_secret("second", &new_secret);
    let test = admin.post_json(&format!("/v1/webhooks/{all_id}/test"), &json!({}), 202).await;
    let test_id = test["message_id"].as_str().unwrap().to_owned();
    let got = wait_received(&receiver, "the test event", |got| {
        got.iter().any(|g| g.id == test_id && g.status == 200)
    })
    .await;
    let g = got.iter().find(|g| g.id == test_id && g.status == 200).unwrap();
    assert_eq!(g.body["type"], "webhook.test");
    assert_eq!(g.signatures, 2, "{g:?}");
    assert_eq!(g.verified_by, BTreeSet::from(["first".to_owned(), "second".to_owned()]), "{g:?}");

    // No answer ever shows a secret again.
    let mut answers = vec![
        admin.get("/v1/webhooks", 200).await,
        admin.get(&format!("/v1/webhooks/{all_id}"), 200).await,
        admin.get(&format!("/v1/webhooks/{all_id}/deliveries?limit=500"), 200).await,
        admin.get(&format!("/v1/webhooks/{all_id}/deliveries/{failing_id}"), 200).await,
        restricted.get(&format!("/v1/webhooks/{mine_id}"), 200).await,
        admin.get("/v1/audit?limit=500", 200).await,
    ];
    answers.push(
        admin
            .patch_json(&format!("/v1/webhooks/{all_id}"), &json!({"description": "PSA 2"}), 200)
            .await,
    );
    for answer in &answers {
        let text = answer.to_string();
        for s in [&secret, &new_secret, &mine_secret] {
            assert!(!text.contains(s.as_str()), "a secret in {text}");
            assert!(!text.contains(&s["whsec_".len()..]), "a secret in {text}");
        }
    }
}

/// Waits until a delivery is delivered; returns it with its attempts.
async fn wait_delivered(admin: &TestClient, webhook: &str, delivery: &str) -> Value {
    let start = std::time::Instant::now();
    loop {
        let d = admin.get(&format!("/v1/webhooks/{webhook}/deliveries/{delivery}"), 200).await;
        if d["state"] == "delivered" {
            return d;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not delivered: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_receiver_rejects_forged_and_stale_requests() {
    // The test's verifier must be able to fail, or the test above proves nothing.
    let receiver = Receiver::start().await;
    let secret = format!("whsec_{}", STANDARD.encode([7u8; 32]));
    receiver.add_secret("k", &secret);
    let http = reqwest::Client::new();
    let body = br#"{"type":"tenant.completed"}"#.to_vec();
    let now = chrono::Utc::now().timestamp();
    let send = |ts: i64, sig: String| {
        http.post(receiver.url("/x"))
            .header("content-type", "application/json")
            .header("user-agent", "sspr-fleet")
            .header("webhook-id", "msg_1")
            .header("webhook-timestamp", ts.to_string())
            .header("webhook-signature", sig)
            .body(body.clone())
            .send()
    };
    let good =
        format!("v1,{}", expected_signature(&key_of(&secret), "msg_1", &now.to_string(), &body));
    assert_eq!(send(now, good.clone()).await.unwrap().status(), 200);
    let other = format!("v1,{}", expected_signature(&[8u8; 32], "msg_1", &now.to_string(), &body));
    assert_eq!(send(now, other).await.unwrap().status(), 401, "wrong key");
    let stale = now - 3600;
    let stale_sig =
        format!("v1,{}", expected_signature(&key_of(&secret), "msg_1", &stale.to_string(), &body));
    assert_eq!(send(stale, stale_sig).await.unwrap().status(), 401, "old timestamp");
    assert_eq!(send(now + 60, good).await.unwrap().status(), 401, "signature of another timestamp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_webhook_input_gets_problem_json_with_stable_codes() {
    let (app, _sim) = spawn_app_with_sim(&scenario(), FAST).await;
    let admin = app.client_with(&app.admin_key().await);
    let cases = [
        (
            json!({"url": "ftp://psa.example/h", "event_types": ["tenant.completed"]}),
            "url",
            "unsupported_scheme",
        ),
        (
            json!({"url": "https://u:p@psa.example/h", "event_types": ["tenant.completed"]}),
            "url",
            "credentials_in_url",
        ),
        (json!({"url": "not a url", "event_types": ["tenant.completed"]}), "url", "invalid_url"),
        (
            json!({"url": format!("https://psa.example/{}", "a".repeat(2100)), "event_types": ["tenant.completed"]}),
            "url",
            "too_long",
        ),
        (
            json!({"url": "https://psa.example/h", "event_types": ["tenant.exploded"]}),
            "event_types[0]",
            "unknown_event_type",
        ),
        (
            json!({"url": "https://psa.example/h", "event_types": ["webhook.test"]}),
            "event_types[0]",
            "unknown_event_type",
        ),
        (json!({"url": "https://psa.example/h", "event_types": []}), "event_types", "empty"),
    ];
    for (body, field, code) in cases {
        let problem = admin
            .post_json_raw("/v1/webhooks", &body)
            .await
            .expect_problem(422, "validation_failed");
        assert!(
            field_errors(&problem).contains(&(field.to_owned(), code.to_owned())),
            "{body} -> {problem}"
        );
    }
    let problem = admin
        .post_json_raw("/v1/webhooks", &json!({"url": "https://psa.example/h"}))
        .await
        .expect_problem(422, "validation_failed");
    assert!(
        field_errors(&problem).contains(&("event_types".into(), "required".into())),
        "{problem}"
    );
    admin
        .post_json_raw("/v1/webhooks", &json!({"url": "https://psa.example/h", "event_types": ["tenant.completed"], "secret": "mine"}))
        .await
        .expect_problem(422, "validation_failed");
    let created = admin
        .post_json(
            "/v1/webhooks",
            &json!({"url": "https://psa.example/h", "event_types": ["tenant.completed"]}),
            201,
        )
        .await;
    let id = created["webhook"]["id"].as_str().unwrap();
    let problem = admin
        .patch_json_raw(
            &format!("/v1/webhooks/{id}"),
            &json!({"event_types": [], "url": "gopher://x"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    let errors = field_errors(&problem);
    assert!(errors.contains(&("event_types".into(), "empty".into())), "{problem}");
    assert!(errors.contains(&("url".into(), "unsupported_scheme".into())), "{problem}");
    let problem = admin
        .get_raw(&format!("/v1/webhooks/{id}/deliveries?state=lost"))
        .await
        .expect_problem(422, "validation_failed");
    assert!(
        field_errors(&problem).contains(&("state".into(), "invalid_value".into())),
        "{problem}"
    );
    admin.get_raw("/v1/webhooks/whk_nope").await.expect_problem(404, "not_found");
    admin
        .post_json_raw(
            &format!("/v1/webhooks/{id}/deliveries/whd_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e/redeliver"),
            &json!({}),
        )
        .await
        .expect_problem(404, "not_found");
    // A valid change applies; the subscription can be deleted once.
    let patched = admin
        .patch_json(
            &format!("/v1/webhooks/{id}"),
            &json!({"enabled": false, "event_types": ["rollout.paused", "rollout.paused"]}),
            200,
        )
        .await;
    assert_eq!(patched["enabled"], false);
    assert_eq!(patched["event_types"], json!(["rollout.paused"]));
    admin.delete(&format!("/v1/webhooks/{id}"), 204).await;
    admin.delete_raw(&format!("/v1/webhooks/{id}")).await.expect_problem(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_fails_after_its_last_attempt_and_a_redelivery_brings_it_back() {
    let receiver = Receiver::start().await;
    receiver.set_outage(true);
    let mut env: Vec<(&str, &str)> =
        FAST.iter().copied().filter(|(k, _)| *k != "SSPR_FLEET_WEBHOOKS__MAX_ATTEMPTS").collect();
    env.push(("SSPR_FLEET_WEBHOOKS__MAX_ATTEMPTS", "3"));
    let (app, _sim) = spawn_app_with_sim(&scenario(), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let created = admin
        .post_json(
            "/v1/webhooks",
            &json!({"url": receiver.url("/t"), "event_types": ["rollout.completed"], "enabled": false}),
            201,
        )
        .await;
    receiver.add_secret("k", created["secret"].as_str().unwrap());
    let id = created["webhook"]["id"].as_str().unwrap().to_owned();
    // A test goes out even while the subscription is disabled.
    let test = admin.post_json(&format!("/v1/webhooks/{id}/test"), &json!({}), 202).await;
    assert_eq!(test["event_type"], "webhook.test");
    assert_eq!(test["state"], "pending");
    let delivery = test["id"].as_str().unwrap().to_owned();
    let start = std::time::Instant::now();
    let failed = loop {
        let d = admin.get(&format!("/v1/webhooks/{id}/deliveries/{delivery}"), 200).await;
        if d["state"] == "failed" {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "not failed: {d}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(failed["attempts"], 3, "{failed}");
    let log = failed["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 3);
    assert!(log.iter().all(|a| a["status"] == 503), "{failed}");
    assert_eq!(receiver.got().len(), 3, "no attempt after the last");
    let listed = admin.get(&format!("/v1/webhooks/{id}/deliveries?state=failed"), 200).await;
    assert_eq!(listed["items"][0]["id"], delivery.as_str());

    receiver.set_outage(false);
    admin
        .post_json(&format!("/v1/webhooks/{id}/deliveries/{delivery}/redeliver"), &json!({}), 202)
        .await;
    let d = wait_delivered(&admin, &id, &delivery).await;
    assert_eq!(d["attempts"], 4, "{d}");
    let got = receiver.got();
    assert_eq!(got.len(), 4);
    assert!(got.iter().all(|g| g.id == test["message_id"].as_str().unwrap()), "{got:?}");
    assert_eq!(got[3].status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_to_non_public_targets_are_refused_with_a_stable_code() {
    let receiver = Receiver::start().await;
    let mut env = FAST.to_vec();
    env.push(PUBLIC_ONLY);
    let (app, _sim) = spawn_app_with_sim(&scenario(), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let refused = [
        receiver.url("/h"),
        format!("http://localhost:{}/h", receiver.addr.port()),
        "http://localhost/".to_owned(),
        "http://api.localhost/".to_owned(),
        "http://[::ffff:169.254.169.254]/latest/meta-data/".to_owned(),
        "http://2852039166/".to_owned(),
        "http://0251.0376.0251.0376/".to_owned(),
        "http://0xa9fea9fe/".to_owned(),
        "http://127.1/".to_owned(),
        "http://0.0.0.0:8080/".to_owned(),
        "http://10.0.0.5/psa".to_owned(),
        "http://172.16.3.4/".to_owned(),
        "http://192.168.1.10/".to_owned(),
        "http://100.64.0.1/".to_owned(),
        "http://[::1]/".to_owned(),
        "http://[fd00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
        "http://224.0.0.1/".to_owned(),
    ];
    for url in &refused {
        let problem = admin
            .post_json_raw(
                "/v1/webhooks",
                &json!({"url": url, "event_types": ["tenant.completed"]}),
            )
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            field_errors(&problem),
            vec![("url".to_owned(), "non_public_target".to_owned())],
            "{url} -> {problem}"
        );
        assert!(!problem.to_string().contains(url.as_str()), "the answer repeats the URL");
    }
    // Public targets pass, in any spelling; the URL is stored as the parser normalised it.
    let created = admin
        .post_json(
            "/v1/webhooks",
            &json!({"url": "https://134744072/h", "event_types": ["tenant.completed"]}),
            201,
        )
        .await;
    assert_eq!(created["webhook"]["url"], "https://8.8.8.8/h");
    for url in ["https://psa.example.com/hooks", "https://[2606:4700::1]/h"] {
        admin
            .post_json(
                "/v1/webhooks",
                &json!({"url": url, "event_types": ["tenant.completed"]}),
                201,
            )
            .await;
    }
    // A change of URL is checked the same way.
    let id = created["webhook"]["id"].as_str().unwrap();
    for url in [receiver.url("/h"), "http://[::ffff:169.254.169.254]/".to_owned()] {
        let problem = admin
            .patch_json_raw(&format!("/v1/webhooks/{id}"), &json!({"url": url}))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(
            field_errors(&problem),
            vec![("url".to_owned(), "non_public_target".to_owned())],
            "{url} -> {problem}"
        );
    }
    assert_eq!(admin.get(&format!("/v1/webhooks/{id}"), 200).await["url"], "https://8.8.8.8/h");
    assert_eq!(receiver.connections(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_url_that_resolves_to_loopback_is_refused_when_the_delivery_connects() {
    let receiver = Receiver::start().await;
    let mut env = FAST.to_vec();
    env.push(PUBLIC_ONLY);
    let (app, _sim) = spawn_app_with_sim(&scenario(), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let port = receiver.addr.port();
    // `localhost` goes through the system resolver when the delivery connects; the others are
    // literals, checked before the request.
    for stored in [
        format!("http://localhost:{port}/h"),
        format!("http://127.0.0.1:{port}/h"),
        format!("http://2130706433:{port}/h"),
    ] {
        let created = admin
            .post_json(
                "/v1/webhooks",
                &json!({"url": "https://psa.example.com/h", "event_types": ["tenant.completed"]}),
                201,
            )
            .await;
        let id = created["webhook"]["id"].as_str().unwrap().to_owned();
        receiver.add_secret(&stored, created["secret"].as_str().unwrap());
        // Behind the API's back, as a row written before the policy existed would be.
        let patch = sspr_store::WebhookPatch {
            url: Some(stored.clone()),
            description: None,
            event_types: None,
            enabled: None,
            at: chrono::Utc::now(),
        };
        let whk: WebhookId = id.parse().unwrap();
        app.store.update_webhook(&whk, &patch).await.unwrap().unwrap();
        let test = admin.post_json(&format!("/v1/webhooks/{id}/test"), &json!({}), 202).await;
        let delivery = test["id"].as_str().unwrap();
        let start = std::time::Instant::now();
        let failed = loop {
            let d = admin.get(&format!("/v1/webhooks/{id}/deliveries/{delivery}"), 200).await;
            if d["state"] != "pending" {
                break d;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "still pending: {d}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(failed["state"], "failed", "{stored}: {failed}");
        assert_eq!(failed["attempts"], 1, "refused at once, not retried: {failed}");
        assert_eq!(failed["last_error"], "target address is not public", "{failed}");
        assert_eq!(failed["last_status"], Value::Null);
    }
    assert_eq!(receiver.connections(), 0, "nothing reached the local receiver");
    assert!(receiver.got().is_empty());
}
