//! Every failure is problem+json with a stable code: validation, malformed bodies, media type,
//! size, and the router's 404 and 405.

use std::collections::BTreeSet;

use serde_json::json;
use sspr_domain::TenantId;
use sspr_fleet_tests::{TestResponse, field_errors, reqwest::Method, spawn_app, spawn_app_with};

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(f, c)| ((*f).to_owned(), (*c).to_owned())).collect()
}

#[tokio::test]
async fn invalid_fields_are_each_named_in_a_422() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let good_tenant = TenantId::new().to_string();
    let problem = admin
        .post_json_raw(
            "/v1/api-keys",
            &json!({"name": "  ", "role": "root", "tenant_ids": [good_tenant, "ten_nope", "x"]}),
        )
        .await
        .expect_problem(422, "validation_failed");
    let mut errors = field_errors(&problem);
    errors.sort();
    assert_eq!(
        errors,
        pairs(&[
            ("name", "required"),
            ("role", "invalid_value"),
            ("tenant_ids[1]", "invalid_format"),
            ("tenant_ids[2]", "invalid_format"),
        ]),
        "{problem}"
    );
    // Nothing was created.
    let list = admin.get("/v1/api-keys", 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn each_kind_of_invalid_field_has_its_code() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let upper = TenantId::new().to_string().to_ascii_uppercase().replacen("TEN_", "ten_", 1);
    let cases = [
        (json!({"name": "", "role": "viewer"}), ("name", "required")),
        (json!({"name": "x".repeat(101), "role": "viewer"}), ("name", "too_long")),
        (json!({"name": "tab\there", "role": "viewer"}), ("name", "invalid_format")),
        (json!({"name": "k", "role": "Admin"}), ("role", "invalid_value")),
        (
            json!({"name": "k", "role": "viewer", "tenant_ids": ["ok", 3]}),
            ("tenant_ids[1]", "invalid_type"),
        ),
        (
            json!({"name": "k", "role": "viewer", "tenant_ids": [upper]}),
            ("tenant_ids[0]", "invalid_format"),
        ),
        (json!({"name": "k"}), ("role", "required")),
        (json!({"role": "viewer"}), ("name", "required")),
        (json!({"name": 5, "role": "viewer"}), ("name", "invalid_type")),
        (
            json!({"name": "k", "role": "viewer", "tenant_ids": "ten_x"}),
            ("tenant_ids", "invalid_type"),
        ),
        (json!({"name": "k", "role": "viewer", "extra": 1}), ("extra", "unknown_field")),
    ];
    for (body, expected) in cases {
        let problem = admin
            .post_json_raw("/v1/api-keys", &body)
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(field_errors(&problem), pairs(&[expected]), "body {body}: {problem}");
    }
    // 100 characters is still fine.
    admin.post_json("/v1/api-keys", &json!({"name": "x".repeat(100), "role": "viewer"}), 201).await;
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    for body in ["{\"name\": ", "not json", "{\"name\": \"a\",}", "", "   ", "{\"name\": \"a\""] {
        let response = admin
            .send(
                admin
                    .request(Method::POST, "/v1/api-keys")
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await;
        response.expect_problem(400, "malformed_json");
    }
}

#[tokio::test]
async fn json_followed_by_trailing_characters_is_400() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    for body in [
        r#"{"name": "k", "role": "viewer"} trailing"#,
        r#"{"name": "k", "role": "viewer"}{"name": "k2", "role": "admin"}"#,
        r#"{"name": "k", "role": "viewer"}}"#,
    ] {
        let request = admin
            .request(Method::POST, "/v1/api-keys")
            .header("content-type", "application/json")
            .body(body);
        admin.send(request).await.expect_problem(400, "malformed_json");
    }
    let list = admin.get("/v1/api-keys", 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "a key was created: {list}");
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let body = r#"{"name": "k", "role": "viewer"}"#;
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request = admin.request(Method::POST, "/v1/api-keys").body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        admin.send(request).await.expect_problem(415, "unsupported_media_type");
    }
    // The same body as JSON (with parameters, or a +json type) is accepted.
    for content_type in ["application/json; charset=utf-8", "application/merge-patch+json"] {
        let request = admin
            .request(Method::POST, "/v1/api-keys")
            .header("content-type", content_type)
            .body(body);
        admin.send(request).await.expect_status(201);
    }
}

fn oversized_key_request(bytes: usize) -> String {
    // Valid JSON, so only the size can be the problem.
    format!(r#"{{"name": "{}", "role": "viewer"}}"#, "x".repeat(bytes))
}

#[tokio::test]
async fn a_body_over_the_default_limit_is_413() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let request = admin
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(oversized_key_request(2 * 1024 * 1024));
    admin.send(request).await.expect_problem(413, "payload_too_large");
    // Just under the limit the body is read and judged on its content.
    let request = admin
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(oversized_key_request(1024 * 1024 - 100));
    let problem = admin.send(request).await.expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&problem), pairs(&[("name", "too_long")]));
}

#[tokio::test]
async fn the_body_limit_follows_the_setting() {
    let app = spawn_app_with(&[("SSPR_FLEET_API__MAX_BODY_BYTES", "2048")]).await;
    let admin = app.client_with(&app.admin_key().await);
    let request = admin
        .request(Method::POST, "/v1/api-keys")
        .header("content-type", "application/json")
        .body(oversized_key_request(4096));
    admin.send(request).await.expect_problem(413, "payload_too_large");
}

#[tokio::test]
async fn unknown_paths_are_404_problems() {
    let app = spawn_app().await;
    let key = app.admin_key().await;
    let admin = app.client_with(&key);
    for path in ["/v1/nothing", "/nothing", "/v1/api-keys/key_x/extra", "/v1", "/v2/me"] {
        let response = admin.get_raw(path).await;
        let problem = response.expect_problem(404, "not_found");
        assert!(problem["detail"].as_str().unwrap_or_default().contains(path), "{problem}");
    }
    app.client().get_raw("/nothing").await.expect_problem(404, "not_found");
}

fn allowed(response: &TestResponse) -> BTreeSet<String> {
    response
        .header("allow")
        .unwrap_or_else(|| panic!("{} {}: 405 without Allow", response.method, response.path))
        .split(',')
        .map(|m| m.trim().to_owned())
        .collect()
}

#[tokio::test]
async fn wrong_methods_are_405_problems_with_allow() {
    let app = spawn_app().await;
    let key = app.admin_key().await;
    let admin = app.client_with(&key);
    let some_key = format!("/v1/api-keys/{}", sspr_domain::ApiKeyId::new());
    let cases: Vec<(Method, &str, &[&str])> = vec![
        // HEAD is answered wherever GET is, so it is allowed there too.
        (Method::PUT, "/v1/me", &["GET", "HEAD"]),
        (Method::DELETE, "/v1/me", &["GET", "HEAD"]),
        (Method::DELETE, "/healthz", &["GET", "HEAD"]),
        (Method::POST, "/readyz", &["GET", "HEAD"]),
        (Method::POST, "/openapi.json", &["GET", "HEAD"]),
        (Method::PUT, "/v1/api-keys", &["GET", "HEAD", "POST"]),
        (Method::PATCH, some_key.as_str(), &["DELETE", "GET", "HEAD"]),
        (Method::POST, "/v1/audit", &["GET", "HEAD"]),
    ];
    for (method, path, methods) in cases {
        let response = admin.send(admin.request(method.clone(), path).body("{}")).await;
        response.expect_problem(405, "method_not_allowed");
        let expected: BTreeSet<String> = methods.iter().map(|m| (*m).to_owned()).collect();
        assert_eq!(allowed(&response), expected, "{method} {path}");
    }
}

#[tokio::test]
async fn no_error_is_a_bare_500_or_plain_text() {
    // A sweep of odd requests: each must be a problem with a 4xx status.
    let app = spawn_app().await;
    let key = app.admin_key().await;
    let admin = app.client_with(&key);
    let requests = vec![
        admin.request(Method::GET, "/v1/audit?limit=abc"),
        admin.request(Method::GET, "/v1/audit?since=yesterday"),
        admin.request(Method::GET, "/v1/audit?unknown=1"),
        admin.request(Method::GET, "/v1/api-keys/%ff"),
        admin
            .request(Method::POST, "/v1/api-keys")
            .header("content-type", "application/json")
            .body("[]"),
        admin
            .request(Method::POST, "/v1/api-keys")
            .header("content-type", "application/json")
            .body("null"),
        admin
            .request(Method::POST, "/v1/api-keys")
            .header("content-type", "application/json")
            .body(vec![0xffu8, 0xfe]),
    ];
    for request in requests {
        let response = admin.send(request).await;
        assert!(
            (400..500).contains(&response.status),
            "{} {} -> {}: {}",
            response.method,
            response.path,
            response.status,
            response.text()
        );
        let code = response.json()["code"].as_str().unwrap_or_default().to_owned();
        response.expect_problem(response.status, &code);
    }
}

#[tokio::test]
async fn a_trailing_slash_is_never_a_405_for_an_allowed_method() {
    let app = spawn_app().await;
    let key = app.admin_key().await;
    let admin = app.client_with(&key);
    for path in ["/healthz/", "/v1/me/", "/v1/api-keys/", "/v1/audit/"] {
        let response = admin.get_raw(path).await;
        if response.status == 405 {
            panic!(
                "GET {path} is 405 though Allow is {:?}: {}",
                response.header("allow"),
                response.text()
            );
        }
        assert!(
            response.status == 200 || response.status == 404,
            "GET {path} -> {}: {}",
            response.status,
            response.text()
        );
        if response.status == 404 {
            response.expect_problem(404, "not_found");
        }
    }
}
