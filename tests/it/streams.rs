//! Limits of the event stream (`GET /v1/rollouts/{id}/events`) over real HTTP: open streams
//! are capped per API key (429 `too_many_streams`) and per process (503 `stream_capacity`),
//! a slot comes back when its client goes away, and an open stream ends once its key is
//! revoked or no longer reaches the rollout.

use std::time::Duration;

use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{SimHandle, TestApp, TestClient, reqwest, spawn_app_with_sim};

use crate::engine::{FAST, Kind, onboard_all, rollout_spec, scenario};

/// The daemon with `extra_env`, two ready tenants, and a rollout held at its approval gate for
/// ever, so its stream never ends by itself.
async fn held_rollout(
    extra_env: &[(&str, &str)],
) -> (TestApp, SimHandle, TestClient, Vec<String>, String) {
    let kinds = [Kind::Ready, Kind::Ready];
    let mut env = FAST.to_vec();
    env.extend_from_slice(extra_env);
    let (app, sim) = spawn_app_with_sim(&scenario(&kinds), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let ids = onboard_all(&admin, kinds.len()).await;
    let mut spec = rollout_spec(0, 10, 10);
    spec["gates"] = json!({"soak_minutes": 0, "approval": "per_tenant"});
    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    (app, sim, admin, ids, rollout)
}

/// A request for the stream of `rollout` with `token`, on a client without a total timeout
/// (the harness's client gives up on a body after 30 s).
async fn open(app: &TestApp, token: &str, rollout: &str) -> reqwest::Response {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/v1/rollouts/{rollout}/events", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// An open stream: 200, and its first event arrived.
async fn open_ok(app: &TestApp, token: &str, rollout: &str) -> reqwest::Response {
    let mut resp = open(app, token, rollout).await;
    assert_eq!(resp.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
        .await
        .expect("the first event in time")
        .unwrap()
        .unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("event: created"));
    resp
}

/// Checks a refusal: `status`, problem+json with `code`, and a `Retry-After` in seconds.
async fn assert_refused(resp: reqwest::Response, status: u16, code: &str) {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "Retry-After: {retry_after}");
    let problem: Value = resp.json().await.unwrap();
    assert_eq!(problem["code"], code, "{problem}");
    assert_eq!(problem["status"], status, "{problem}");
}

/// Reads `resp` to its end; panics if it does not end within 30 s. Returns the body.
async fn read_to_end(mut resp: reqwest::Response) -> String {
    let mut body = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(chunk) = resp.chunk().await.unwrap() {
            body.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream is still open: {body}");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_key_and_a_slot_comes_back_when_a_client_leaves() {
    let (app, _sim, _admin, _ids, rollout) =
        held_rollout(&[("SSPR_FLEET_API__MAX_STREAMS_PER_KEY", "2")]).await;
    let viewer = app.key_with(Role::Viewer, None).await;
    let first = open_ok(&app, &viewer, &rollout).await;
    let _second = open_ok(&app, &viewer, &rollout).await;
    assert_refused(open(&app, &viewer, &rollout).await, 429, "too_many_streams").await;

    // Another key has its own streams.
    let other = app.key_with(Role::Viewer, None).await;
    let _other = open_ok(&app, &other, &rollout).await;

    // The client of the first stream goes away: its slot comes back.
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let _again = loop {
        let resp = open(&app, &viewer, &rollout).await;
        if resp.status() == 200 {
            break resp;
        }
        assert_refused(resp, 429, "too_many_streams").await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dropped stream's slot never came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_capped_per_process() {
    let (app, _sim, _admin, _ids, rollout) =
        held_rollout(&[("SSPR_FLEET_API__MAX_STREAMS", "2")]).await;
    let a = app.key_with(Role::Viewer, None).await;
    let b = app.key_with(Role::Viewer, None).await;
    let _a = open_ok(&app, &a, &rollout).await;
    let _b = open_ok(&app, &b, &rollout).await;
    assert_refused(open(&app, &a, &rollout).await, 503, "stream_capacity").await;
    let c = app.key_with(Role::Viewer, None).await;
    assert_refused(open(&app, &c, &rollout).await, 503, "stream_capacity").await;
    // Other requests are not affected.
    app.client_with(&c).get(&format!("/v1/rollouts/{rollout}"), 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_key_ends_its_open_stream() {
    let (app, _sim, admin, _ids, rollout) = held_rollout(&[]).await;
    let viewer = app.issue_key("dashboard", Role::Viewer, None).await;
    let stream = open_ok(&app, &viewer.token, &rollout).await;
    let bystander = app.key_with(Role::Viewer, None).await;
    let mut bystander_stream = open_ok(&app, &bystander, &rollout).await;

    admin.delete(&format!("/v1/api-keys/{}", viewer.id), 204).await;
    let rest = read_to_end(stream).await;
    assert!(rest.contains("event: error\ndata: {\"code\":\"unauthorized\"}"), "{rest}");

    // Another key's stream stays open: it has sent everything so far (the key checks of both
    // streams ran by now) and is waiting for more.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout(Duration::from_millis(500), bystander_stream.chunk()).await {
            Err(_waiting) => break,
            Ok(chunk) => {
                let chunk = chunk.unwrap().expect("the bystander's stream is still open");
                assert!(!std::str::from_utf8(&chunk).unwrap().contains("event: error"));
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "the bystander's stream never went quiet");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_when_its_key_no_longer_reaches_the_rollout() {
    let (app, _sim, _admin, ids, rollout) = held_rollout(&[]).await;
    let mine = [ids[0].parse::<TenantId>().unwrap()];
    let key = app.issue_key("one-tenant", Role::Viewer, Some(&mine)).await;
    let stream = open_ok(&app, &key.token, &rollout).await;

    // The key's tenant list changes to a tenant outside the rollout.
    app.set_key_tenants(&key.id, Some(&[TenantId::new().to_string()])).await;
    let rest = read_to_end(stream).await;
    assert!(rest.contains("event: error\ndata: {\"code\":\"not_found\"}"), "{rest}");
    assert_eq!(open(&app, &key.token, &rollout).await.status(), 404);
}
