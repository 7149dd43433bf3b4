//! What dashboards and automation see live: the rollout progress read model, the event stream
//! (server-sent events, resumable with `Last-Event-ID`), `/metrics`, and `Idempotency-Key` on
//! POST requests.

use std::{collections::BTreeMap, time::Duration};

use reqwest::Method;
use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::TestClient;

use crate::engine::{Kind, drive, entra, rollout_spec, start};

/// One server-sent event.
#[derive(Debug, Clone, PartialEq)]
struct Sse {
    id: Option<i64>,
    event: String,
    data: String,
}

/// Reads events from `path` until `stop` says so or the stream ends; sends `last_event_id`.
async fn read_events(
    client: &TestClient,
    path: &str,
    last_event_id: Option<i64>,
    mut stop: impl FnMut(&[Sse]) -> bool,
) -> (Vec<Sse>, bool) {
    let mut req = client.request(Method::GET, path);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut buf = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.expect("events in time");
        let Some(chunk) = chunk.unwrap() else { return (events, true) };
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut e = Sse { id: None, event: "message".into(), data: String::new() };
            let mut comment = true;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("id: ") {
                    e.id = Some(v.parse().unwrap());
                } else if let Some(v) = line.strip_prefix("event: ") {
                    e.event = v.into();
                    comment = false;
                } else if let Some(v) = line.strip_prefix("data: ") {
                    e.data.push_str(v);
                    comment = false;
                }
            }
            if !comment {
                events.push(e);
            }
        }
        if stop(&events) {
            return (events, false);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_resumes_from_last_event_id_and_ends_with_the_rollout() {
    let kinds = [Kind::Ready, Kind::Ready, Kind::Unlicensed];
    let (app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let rollout = admin.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/rollouts/{rollout}/events");

    // The first few entries, then the connection drops.
    let (first, ended) = read_events(&admin, &path, None, |e| e.len() >= 4).await;
    assert!(!ended);
    assert_eq!(first[0].event, "created", "{first:?}");
    let resume_at = first[2].id.unwrap();

    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "completed", "{done}");

    // Resuming after the third entry gives exactly the history after it, then `end`.
    let (rest, ended) = read_events(&admin, &path, Some(resume_at), |_| false).await;
    assert!(ended, "the stream of a completed rollout ends");
    let end = rest.last().unwrap();
    assert_eq!(end.event, "end");
    let history = admin
        .get(&format!("/v1/rollouts/{rollout}/history?after={resume_at}&limit=1000"), 200)
        .await;
    let expected: Vec<i64> =
        history["items"].as_array().unwrap().iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    let got: Vec<i64> = rest.iter().filter_map(|e| e.id).collect();
    assert_eq!(got, expected, "the resumed stream is the history after Last-Event-ID");
    assert!(got.iter().all(|id| *id > resume_at));
    for (e, h) in rest.iter().zip(history["items"].as_array().unwrap()) {
        assert_eq!(e.event, h["kind"].as_str().unwrap());
        assert_eq!(serde_json::from_str::<Value>(&e.data).unwrap(), *h);
    }
    assert!(rest.iter().any(|e| e.event == "completed"));
    // `?after=` does the same; a bad Last-Event-ID is a problem, not a stream.
    let (again, _) =
        read_events(&admin, &format!("{path}?after={resume_at}"), None, |_| false).await;
    assert_eq!(again, rest);
    admin
        .send(admin.request(Method::GET, &path).header("Last-Event-ID", "abc"))
        .await
        .expect_problem(422, "validation_failed");

    // A key restricted to the first tenant sees only its entries and the rollout-wide ones.
    let mine = [ids[0].parse::<TenantId>().unwrap()];
    let key = app.issue_key("one-tenant", Role::Viewer, Some(&mine)).await;
    let restricted = app.client_with(&key.token);
    let (seen, ended) = read_events(&restricted, &path, None, |_| false).await;
    assert!(ended);
    for e in seen.iter().filter(|e| e.event != "end") {
        let v: Value = serde_json::from_str(&e.data).unwrap();
        let tenant = v["tenant_id"].as_str();
        assert!(tenant.is_none() || tenant == Some(ids[0].as_str()), "{v}");
    }
    assert!(seen.iter().any(|e| e.data.contains(&ids[0])));
    let other = [ids[2].parse::<TenantId>().unwrap()];
    let key = app.issue_key("blocked-tenant-only", Role::Viewer, Some(&other)).await;
    let (blocked_only, _) = read_events(&app.client_with(&key.token), &path, None, |_| false).await;
    assert!(blocked_only.iter().any(|e| e.data.contains(&ids[2])));
    assert!(!blocked_only.iter().any(|e| e.data.contains(&ids[0])));
    let none = app.issue_key("no-tenant", Role::Viewer, Some(&[TenantId::new()])).await;
    app.client_with(&none.token).get(&path, 404).await;
}

/// The value of the series `line_prefix` (the whole text before the value) in `text`.
fn series(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix).and_then(|v| v.strip_prefix(' ')))
        .map(|v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_progress_describe_a_finished_rollout() {
    let kinds = [Kind::Ready, Kind::Throttled, Kind::Unlicensed];
    let (app, sim, admin, ids) = start(&kinds).await;
    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let rollout = admin.post_json("/v1/rollouts", &rollout_spec(0, 10, 10), 201).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (done, _) = drive(&admin, &sim, &rollout, &entra_of, Duration::from_secs(60)).await;
    assert_eq!(done["state"], "completed", "{done}");
    let p = &done["progress"];
    assert_eq!((p["finished"].as_u64(), p["remaining"].as_u64()), (Some(3), Some(0)), "{p}");
    assert_eq!(p["percent"], 100.0);
    assert!(p["eta"].is_null(), "a finished rollout has no ETA: {p}");
    assert!(p["throughput_per_hour"].as_f64().unwrap() > 0.0, "{p}");

    let resp = admin.send(admin.request(Method::GET, "/metrics")).await.expect_status(200);
    assert!(resp.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let text = resp.text();
    assert_eq!(series(&text, "sspr_fleet_rollouts{state=\"completed\"}"), Some(1.0), "{text}");
    assert_eq!(series(&text, "sspr_fleet_tenants{status=\"ready\"}"), Some(2.0), "{text}");
    assert_eq!(series(&text, "sspr_fleet_tenants{status=\"not_ready\"}"), Some(1.0), "{text}");
    // Step jobs ran in this process and were counted; every job finished.
    assert!(
        series(&text, "sspr_fleet_job_attempts_total{kind=\"rollout.step\",outcome=\"succeeded\"}")
            .unwrap()
            >= 3.0
    );
    assert_eq!(series(&text, "sspr_fleet_jobs{kind=\"rollout.step\",state=\"queued\"}"), None);
    assert!(
        series(&text, "sspr_fleet_jobs{kind=\"rollout.step\",state=\"succeeded\"}").unwrap() >= 3.0
    );
    // Graph traffic by endpoint, with the throttled tenant's 429s.
    let throttled: f64 = text
        .lines()
        .filter(|l| l.starts_with("sspr_fleet_graph_throttled_total{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    let stats = sim.sim.stats(&entra(1)).unwrap();
    let refused = (stats.throttled + stats.faults) as f64;
    assert!(throttled >= 2.0 && throttled <= refused, "{throttled} vs {stats:?}");
    assert!(text.contains("sspr_fleet_graph_request_duration_seconds_bucket{endpoint=\"GET /policies/authenticationMethodsPolicy\",le=\"+Inf\"}"), "{text}");
    for id in &ids {
        assert!(!text.contains(id.as_str()), "no tenant label");
    }

    // A restricted key gets only its tenants' gauges.
    let mine = [ids[0].parse::<TenantId>().unwrap()];
    let key = app.issue_key("one-tenant", Role::Viewer, Some(&mine)).await;
    let restricted = app.client_with(&key.token);
    let text = restricted
        .send(restricted.request(Method::GET, "/metrics"))
        .await
        .expect_status(200)
        .text();
    assert_eq!(series(&text, "sspr_fleet_tenants{status=\"ready\"}"), Some(1.0), "{text}");
    assert_eq!(series(&text, "sspr_fleet_tenants{status=\"not_ready\"}"), Some(0.0), "{text}");
    assert_eq!(series(&text, "sspr_fleet_rollouts{state=\"completed\"}"), Some(1.0));
    assert!(!text.contains("sspr_fleet_graph_") && !text.contains("sspr_fleet_jobs"), "{text}");
    admin
        .without_token()
        .send(admin.without_token().request(Method::GET, "/metrics"))
        .await
        .expect_problem(401, "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_repeated_with_its_idempotency_key_has_one_effect() {
    let kinds = [Kind::Ready, Kind::Ready];
    let (app, _sim, admin, _ids) = start(&kinds).await;
    let spec = rollout_spec(0, 10, 10);
    let post = |key: &'static str, body: Value| {
        let admin = admin.clone();
        async move {
            admin
                .send(
                    admin
                        .request(Method::POST, "/v1/rollouts")
                        .header("Idempotency-Key", key)
                        .json(&body),
                )
                .await
        }
    };
    // Two requests at once with one key: one rollout; the other is a replay or "in use".
    let (a, b) = tokio::join!(post("same", spec.clone()), post("same", spec.clone()));
    let mut statuses = vec![a.status, b.status];
    statuses.sort_unstable();
    assert!(statuses == vec![201, 201] || statuses == vec![201, 409], "{statuses:?}");
    let first = if a.status == 201 && a.header("idempotency-replayed").is_none() { &a } else { &b };
    let again = post("same", spec.clone()).await.expect_status(201);
    assert_eq!(again.header("idempotency-replayed"), Some("true"));
    assert_eq!(again.json(), first.json(), "the first answer, again");
    assert_eq!(again.header("location"), first.header("location"));
    let list = admin.get("/v1/rollouts", 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");

    // The key used with another body, or on another route, is refused.
    let mut other = spec.clone();
    other["name"] = json!("Another");
    post("same", other).await.expect_problem(422, "idempotency_key_reused");
    admin
        .send(
            admin
                .request(Method::POST, "/v1/tasks/task_x/attest")
                .header("Idempotency-Key", "same")
                .json(&json!({})),
        )
        .await
        .expect_problem(422, "idempotency_key_reused");
    // Keys are per API key: another key's "same" is its own.
    let other_admin = app.client_with(&app.admin_key().await);
    let mut third = spec.clone();
    third["name"] = json!("Third");
    let created = other_admin
        .send(
            other_admin
                .request(Method::POST, "/v1/rollouts")
                .header("Idempotency-Key", "same")
                .json(&third),
        )
        .await
        .expect_status(201);
    assert!(created.header("idempotency-replayed").is_none());
    // Malformed keys.
    for bad in ["", "with space", &"k".repeat(256)] {
        admin
            .send(
                admin
                    .request(Method::POST, "/v1/rollouts")
                    .header("Idempotency-Key", bad)
                    .json(&spec),
            )
            .await
            .expect_problem(400, "invalid_idempotency_key");
    }
    // A failed request (4xx) is replayed as it was; without a key, nothing is remembered.
    let bad = json!({"name": ""});
    let first_bad = post("bad", bad.clone()).await.expect_status(422);
    let second_bad = post("bad", bad).await.expect_status(422);
    assert_eq!(second_bad.header("idempotency-replayed"), Some("true"));
    assert_eq!(first_bad.json(), second_bad.json());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_event_stream_does_not_hold_up_a_graceful_stop() {
    let (app, _sim, admin, _ids) = start(&[Kind::Ready]).await;
    let mut spec = rollout_spec(0, 10, 10);
    // Held at the gate for ever: the stream would never end by itself.
    spec["gates"] = json!({"soak_minutes": 0, "approval": "per_tenant"});
    let rollout =
        admin.post_json("/v1/rollouts", &spec, 201).await["id"].as_str().unwrap().to_owned();
    let token = app.admin_key().await;
    drop(admin);
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{}/v1/rollouts/{rollout}/events", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().unwrap();
    assert!(std::str::from_utf8(&first).unwrap().contains("event: created"));

    let started = std::time::Instant::now();
    let stopped = tokio::time::timeout(Duration::from_secs(15), app.stop()).await;
    stopped.expect("the daemon stops while a stream is open").expect("it stops cleanly");
    // Well within the 30 s the graceful stop would otherwise wait for the stream.
    assert!(started.elapsed() < Duration::from_secs(15));
    // The stream ended: whatever was left, then the end of the body.
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(Some(_)) = stream.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream is still open after the stop");
}
