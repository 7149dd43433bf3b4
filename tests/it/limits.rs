//! Abuse limits over real HTTP: the per-key and per-address rate limits (429 `rate_limited`
//! with `Retry-After`, probes exempt), the body size limit on every operation that takes a
//! body (walked from `openapi/openapi.json`), the import's own limit, and oversized headers.

use serde_json::Value;
use sspr_domain::Role;
use sspr_fleet_tests::{
    reqwest::{Method, header::CONTENT_TYPE},
    spawn_app_with,
};

#[tokio::test]
async fn keys_and_addresses_are_rate_limited_with_retry_after() {
    let app = spawn_app_with(&[
        ("SSPR_FLEET_API__RATE_PER_SECOND", "1"),
        ("SSPR_FLEET_API__RATE_BURST", "3"),
    ])
    .await;
    let first = app.client_with(&app.admin_key().await);
    let second = app.client_with(&app.key_with(Role::Viewer, None).await);

    for _ in 0..3 {
        first.get_raw("/v1/me").await.expect_status(200);
    }
    let refused = first.get_raw("/v1/me").await;
    refused.expect_problem(429, "rate_limited");
    let retry_after: u64 =
        refused.header("retry-after").expect("Retry-After").parse().expect("seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    refused.request_id();
    // Any route of the key counts, /metrics included; another key has its own bucket.
    first.get_raw("/metrics").await.expect_problem(429, "rate_limited");
    second.get_raw("/v1/me").await.expect_status(200);

    // Probes are never limited.
    for _ in 0..10 {
        app.client().get_raw("/healthz").await.expect_status(200);
        app.client().get_raw("/readyz").await.expect_status(200);
    }

    // Without credentials, or with wrong ones, the client's address is counted: guessing
    // keys soon gets 429 instead of 401.
    let anonymous = app.client();
    let guesser = app.client_with("sfk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let mut statuses = Vec::new();
    for i in 0..6 {
        let response = if i % 2 == 0 {
            anonymous.get_raw("/openapi.json").await
        } else {
            guesser.get_raw("/v1/me").await
        };
        statuses.push(response.status);
        if response.status == 429 {
            response.expect_problem(429, "rate_limited");
            assert!(response.header("retry-after").is_some());
        }
    }
    assert_eq!(&statuses[..3], &[200, 401, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    // A valid key from the same address is not affected.
    second.get_raw("/v1/me").await.expect_status(200);
}

#[tokio::test]
async fn the_default_limits_leave_ordinary_clients_alone() {
    let app = sspr_fleet_tests::spawn_app().await;
    assert_eq!((app.settings.api.rate_per_second, app.settings.api.rate_burst), (50, 100));
    let admin = app.client_with(&app.admin_key().await);
    for _ in 0..60 {
        admin.get_raw("/v1/me").await.expect_status(200);
    }
}

/// Every operation with a request body, from the document: (method, path, content type).
fn body_operations() -> Vec<(String, String, String)> {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
            .expect("read openapi/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if let Some(content) = op["requestBody"]["content"].as_object() {
                let content_type = content.keys().next().expect("a media type").clone();
                ops.push((method.to_ascii_uppercase(), path.clone(), content_type));
            }
        }
    }
    ops
}

#[tokio::test]
async fn every_body_over_the_limit_is_413_and_imports_have_their_own_limit() {
    let app = spawn_app_with(&[
        ("SSPR_FLEET_API__MAX_BODY_BYTES", "2048"),
        ("SSPR_FLEET_API__MAX_IMPORT_BYTES", "8192"),
    ])
    .await;
    let admin = app.client_with(&app.admin_key().await);
    let ops = body_operations();
    assert!(ops.len() > 15, "only {} operations with a body", ops.len());
    // A well-formed body, padded past the limit, so only its size can be refused.
    let json_body = |bytes: usize| format!(r#"{{"pad": "{}"}}"#, "x".repeat(bytes));
    for (method, path, content_type) in &ops {
        let path = path
            .replace("{id}", "x_0")
            .replace("{tenant_id}", "x_0")
            .replace("{delivery_id}", "x_0");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (size, body) = if path.ends_with(":import") {
            (9000, format!("entra_tenant,display_name\n{}\n", "x".repeat(9000)))
        } else {
            (3000, json_body(3000))
        };
        for idempotent in [false, true] {
            let mut request =
                admin.request(method.clone(), &path).header(CONTENT_TYPE, content_type.as_str());
            if idempotent {
                request = request.header("idempotency-key", format!("limits-{path}"));
            }
            let response = admin.send(request.body(body.clone())).await;
            let problem = response.expect_problem(413, "payload_too_large");
            assert!(problem["detail"].is_string(), "{method} {path} ({size} bytes): {problem}");
        }
    }
    // The import takes files larger than the JSON limit, up to its own.
    let csv = format!(
        "entra_tenant,display_name,client_id,client_secret\n{}",
        "0e0e0e0e-0000-4000-8000-000000000001,Big,5f1b6c3e-9a4d-4e2b-8c7f-53535052ff01,s\n"
            .repeat(60)
    );
    assert!((2048..8192).contains(&csv.len()), "{}", csv.len());
    let response = admin.post_body_raw("/v1/tenants:import?dry_run=true", "text/csv", csv).await;
    assert_ne!(response.status, 413, "{}", response.text());
    assert!(response.status < 500, "{}: {}", response.status, response.text());
}

#[tokio::test]
async fn oversized_headers_are_431_problems() {
    let app = sspr_fleet_tests::spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    // Over the application's limit (32 KiB), under the HTTP codec's (128 KiB).
    let request = admin.request(Method::GET, "/v1/me").header("x-padding", "a".repeat(40 * 1024));
    admin.send(request).await.expect_problem(431, "request_header_fields_too_large");
    let request =
        app.client().request(Method::GET, "/healthz").header("x-padding", "a".repeat(40 * 1024));
    app.client().send(request).await.expect_problem(431, "request_header_fields_too_large");
    // Ordinary headers pass.
    let request = admin.request(Method::GET, "/v1/me").header("x-padding", "a".repeat(4 * 1024));
    admin.send(request).await.expect_status(200);
}

#[tokio::test]
async fn an_invalid_authorization_header_does_not_leave_the_anonymous_bucket() {
    let app = spawn_app_with(&[
        ("SSPR_FLEET_API__RATE_PER_SECOND", "1"),
        ("SSPR_FLEET_API__RATE_BURST", "3"),
    ])
    .await;
    // Outside `/v1`, `/metrics` and the status pages nothing authenticates the request, so a
    // header that is not a valid key must be counted like no header at all.
    let garbage = app.client_with("garbage");
    let basic = app.client();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let response = match i % 3 {
            0 => garbage.get_raw("/openapi.json").await,
            1 => garbage.get_raw("/docs/").await,
            _ => {
                let request = basic
                    .request(Method::GET, "/openapi.json")
                    .header("authorization", "Basic dXNlcjpwYXNz");
                basic.send(request).await
            }
        };
        statuses.push(response.status);
        if response.status == 429 {
            response.expect_problem(429, "rate_limited");
        }
    }
    assert_eq!(&statuses[..3], &[200, 200, 200], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");

    // A valid key has its own bucket there too, and is not held by the spent address bucket.
    let admin = app.client_with(&app.admin_key().await);
    for _ in 0..3 {
        admin.get_raw("/openapi.json").await.expect_status(200);
    }
    admin.get_raw("/openapi.json").await.expect_problem(429, "rate_limited");
}
