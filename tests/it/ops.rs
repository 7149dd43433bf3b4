//! Probes, request ids, and the OpenAPI document and docs.

use sspr_fleet_tests::{reqwest::Method, spawn_app};

#[tokio::test]
async fn healthz_answers_ok() {
    let app = spawn_app().await;
    let response = app.client().get_raw("/healthz").await.expect_status(200);
    assert!(response.header("content-type").unwrap_or_default().starts_with("application/json"));
    assert_eq!(response.json(), serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_answers_ready_when_the_database_answers() {
    let app = spawn_app().await;
    let body = app.client().get("/readyz", 200).await;
    assert_eq!(body, serde_json::json!({"status": "ready"}));
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    let key = app.admin_key().await;
    let anon = app.client();
    let authed = app.client_with(&key);
    let responses = vec![
        anon.get_raw("/healthz").await,
        anon.get_raw("/readyz").await,
        anon.get_raw("/openapi.json").await,
        anon.get_raw("/docs/").await,
        anon.get_raw("/nothing").await,
        anon.send(anon.request(Method::DELETE, "/healthz")).await,
        authed.get_raw("/v1/me").await,
        authed.get_raw("/v1/nothing").await,
        authed.post_json_raw("/v1/api-keys", &serde_json::json!({"name": ""})).await,
        authed
            .post_json_raw("/v1/api-keys", &serde_json::json!({"name": "k", "role": "viewer"}))
            .await,
        authed.send(authed.request(Method::POST, "/v1/api-keys").body("x")).await,
        authed
            .send(
                authed
                    .request(Method::POST, "/v1/api-keys")
                    .header("content-type", "application/json")
                    .body("{"),
            )
            .await,
        authed
            .send(
                authed
                    .request(Method::POST, "/v1/api-keys")
                    .header("content-type", "application/json")
                    .body(vec![b' '; 2 * 1024 * 1024]),
            )
            .await,
        authed.get_raw("/v1/audit?limit=0").await,
        authed.delete_raw(&format!("/v1/api-keys/{}", sspr_domain::ApiKeyId::new())).await,
    ];
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![200, 200, 200, 200, 404, 405, 200, 404, 422, 201, 415, 400, 413, 422, 404],
        "the sweep did not reach the responses it means to check"
    );
    let mut seen = std::collections::BTreeSet::new();
    for response in &responses {
        let id = response.request_id();
        assert!(!id.is_empty(), "{} {}: empty request id", response.method, response.path);
        assert!(seen.insert(id.to_owned()), "request id {id} given to two requests");
    }
}

#[tokio::test]
async fn responses_refused_by_authentication_carry_a_request_id() {
    let app = spawn_app().await;
    let client = app.client();
    let response = client.get_raw("/v1/me").await;
    response.expect_problem(401, "unauthorized");
    assert!(!response.request_id().is_empty());
    let response =
        client.send(client.request(Method::GET, "/v1/me").header("x-request-id", "who-am-i")).await;
    response.expect_problem(401, "unauthorized");
    assert_eq!(response.request_id(), "who-am-i");
    // The same holds when authentication cannot reach the database.
    let key = app.admin_key().await;
    app.store.close().await;
    let response = app.client_with(&key).get_raw("/v1/me").await;
    response.expect_problem(503, "service_unavailable");
    assert!(!response.request_id().is_empty());
}

#[tokio::test]
async fn readyz_is_a_503_problem_when_the_database_is_unavailable() {
    let app = spawn_app().await;
    let client = app.client();
    client.get("/readyz", 200).await;
    // The test's store shares the daemon's pools: closing it takes the database away.
    app.store.close().await;
    let response = client.get_raw("/readyz").await;
    let problem = response.expect_problem(503, "service_unavailable");
    assert!(!response.request_id().is_empty());
    let text = problem.to_string();
    assert!(!text.contains("sqlite") && !text.contains("postgres"), "{text}");
    // Liveness does not depend on the database.
    assert_eq!(client.get("/healthz", 200).await, serde_json::json!({"status": "ok"}));
}

#[tokio::test]
async fn head_is_answered_wherever_get_is() {
    let app = spawn_app().await;
    let client = app.client();
    for path in ["/healthz", "/readyz"] {
        let response = client.send(client.request(Method::HEAD, path)).await;
        assert_eq!(response.status, 200, "HEAD {path}: {:?}", response.headers);
        assert!(response.body.is_empty());
    }
}

#[tokio::test]
async fn a_plain_caller_request_id_is_echoed_unchanged() {
    let app = spawn_app().await;
    let key = app.admin_key().await;
    let client = app.client_with(&key);
    let max_len = "r".repeat(128);
    for id in ["3f2c-ab.9:x_1", "abc", max_len.as_str()] {
        for path in ["/healthz", "/v1/me", "/v1/nothing"] {
            let response =
                client.send(client.request(Method::GET, path).header("x-request-id", id)).await;
            assert_eq!(response.request_id(), id, "GET {path} did not echo {id:?}");
        }
    }
}

#[tokio::test]
async fn an_unsafe_or_overlong_request_id_is_replaced() {
    let app = spawn_app().await;
    let client = app.client();
    let overlong = "a".repeat(129);
    for id in ["with space", overlong.as_str(), "semi;colon", "quote\"d"] {
        let response =
            client.send(client.request(Method::GET, "/healthz").header("x-request-id", id)).await;
        let got = response.request_id();
        assert_ne!(got, id, "{id:?} must not be echoed");
        assert!(!got.is_empty() && got.len() <= 128, "replacement {got:?} is not a plain id");
        assert!(
            got.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)),
            "replacement {got:?} is not a plain id"
        );
    }
}

#[tokio::test]
async fn openapi_json_is_the_3_1_document_of_this_build() {
    let app = spawn_app().await;
    let response = app.client().get_raw("/openapi.json").await.expect_status(200);
    assert!(response.header("content-type").unwrap_or_default().starts_with("application/json"));
    let served = response.json();
    let version = served["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1"), "openapi is {version:?}");
    let built = serde_json::to_value(sspr_api::openapi()).unwrap();
    assert_eq!(served, built, "/openapi.json differs from sspr_api::openapi()");
    for path in ["/healthz", "/readyz", "/v1/me", "/v1/api-keys", "/v1/api-keys/{id}", "/v1/audit"]
    {
        assert!(served["paths"].get(path).is_some(), "{path} is not documented");
    }
}

#[tokio::test]
async fn docs_serve_html() {
    let app = spawn_app().await;
    let response = app.client().get_raw("/docs/").await.expect_status(200);
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "content-type {content_type:?}");
    assert!(response.text().to_ascii_lowercase().contains("<html"), "{}", response.text());
}

#[tokio::test]
async fn docs_without_the_slash_redirects_to_the_docs() {
    let app = spawn_app().await;
    let response = app.client().get_raw("/docs").await.expect_status(308);
    assert_eq!(response.header("location"), Some("/docs/"));
}

#[tokio::test]
async fn the_docs_do_not_send_the_document_to_an_online_validator() {
    let app = spawn_app().await;
    let response = app.client().get_raw("/docs/swagger-initializer.js").await.expect_status(200);
    let script = response.text();
    let compact: String = script.chars().filter(|c| !c.is_whitespace()).collect();
    // Without it, Swagger UI shows a badge fetched from validator.swagger.io with the spec's URL.
    assert!(compact.contains(r#""validatorUrl":"none""#), "{script}");
    assert!(compact.contains(r#""url":"/openapi.json""#), "{script}");
    assert!(!script.contains("validator.swagger.io"), "{script}");
}
