//! Authentication of `/v1`: missing, malformed, unknown and revoked keys; keys from the CLI;
//! keys stored only as hashes.

use sspr_domain::{ApiKeyId, Clock, Role, SystemClock, TenantId};
use sspr_fleet_tests::{TestClient, TestResponse, reqwest::Method, spawn_app};

/// Asserts a 401 problem with a `WWW-Authenticate: Bearer ...` challenge.
fn assert_unauthorized(response: &TestResponse, case: &str) {
    assert_eq!(
        response.status,
        401,
        "{case}: {} {}: {}",
        response.method,
        response.path,
        response.text()
    );
    response.expect_problem(401, "unauthorized");
    let challenge = response.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.to_ascii_lowercase().starts_with("bearer"),
        "{case}: {} {}: WWW-Authenticate is {challenge:?}",
        response.method,
        response.path
    );
}

/// A well-formed key (`sfk_` + 43 base64url characters) that was never issued.
const UNKNOWN_KEY: &str = "sfk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

async fn assert_refused_everywhere(client: &TestClient, case: &str) {
    for path in ["/v1/tenants", "/v1/me", "/v1/api-keys", "/v1/audit"] {
        assert_unauthorized(&client.get_raw(path).await, case);
    }
    let response = client
        .post_json_raw("/v1/api-keys", &serde_json::json!({"name": "x", "role": "viewer"}))
        .await;
    assert_unauthorized(&response, case);
}

#[tokio::test]
async fn v1_without_a_key_is_401() {
    let app = spawn_app().await;
    assert_refused_everywhere(&app.client(), "no key").await;
}

#[tokio::test]
async fn v1_with_a_malformed_key_is_401() {
    let app = spawn_app().await;
    let valid = app.admin_key().await;
    let client = app.client();
    let cases = [
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        "Bearer not-a-key".to_owned(),
        format!("Bearer {}", &valid[..valid.len() - 1]),
        format!("Bearer {valid}x"),
        format!("Bearer {}", valid.replacen("sfk_", "sk__", 1)),
        format!("Basic {valid}"),
        format!("Token {valid}"),
        valid.clone(),
    ];
    for header in cases {
        for path in ["/v1/tenants", "/v1/me"] {
            let response = client
                .send(client.request(Method::GET, path).header("authorization", header.as_str()))
                .await;
            assert_unauthorized(&response, &format!("Authorization: {header:?}"));
        }
    }
    // The same key in proper form is accepted: the cases above failed on their form alone.
    app.client_with(&valid).get("/v1/me", 200).await;
}

#[tokio::test]
async fn v1_with_an_unknown_well_formed_key_is_401() {
    let app = spawn_app().await;
    assert_eq!(UNKNOWN_KEY.len(), 4 + 43);
    assert_refused_everywhere(&app.client_with(UNKNOWN_KEY), "unknown key").await;
}

#[tokio::test]
async fn v1_with_a_revoked_key_is_401() {
    let app = spawn_app().await;
    let key = app.issue_key("soon-revoked", Role::Admin, None).await;
    let client = app.client_with(&key.token);
    client.get("/v1/me", 200).await;
    let id: ApiKeyId = key.id.parse().unwrap();
    assert!(app.store.revoke_api_key(&id, SystemClock.now()).await.unwrap());
    assert_refused_everywhere(&client, "revoked key").await;
}

#[tokio::test]
async fn a_key_from_the_cli_is_accepted_on_me() {
    let app = spawn_app().await;
    let key = app.issue_key("psa-prod", Role::Operator, None).await;
    let me = app.client_with(&key.token).get("/v1/me", 200).await;
    assert_eq!(me["id"], key.id.as_str());
    assert_eq!(me["name"], "psa-prod");
    assert_eq!(me["role"], "operator");
    assert_eq!(me["tenant_ids"], serde_json::Value::Null);
    assert_eq!(me["created_by"], "cli");
    assert_eq!(me["revoked_at"], serde_json::Value::Null);
    assert!(me["last_used_at"].is_string(), "the use of the key is not recorded: {me}");
    assert!(me.get("key").is_none() && me.get("token_hash").is_none(), "{me}");
    // The scheme is case-insensitive.
    let client = app.client();
    let response = client
        .send(
            client
                .request(Method::GET, "/v1/me")
                .header("authorization", format!("bearer {}", key.token)),
        )
        .await;
    assert_eq!(response.expect_status(200).json()["id"], key.id.as_str());
}

#[tokio::test]
async fn me_shows_a_restricted_keys_tenants() {
    let app = spawn_app().await;
    let tenant = TenantId::new();
    let key = app.issue_key("one-tenant", Role::Viewer, Some(std::slice::from_ref(&tenant))).await;
    let me = app.client_with(&key.token).get("/v1/me", 200).await;
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["tenant_ids"], serde_json::json!([tenant.to_string()]));
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn the_database_holds_no_clear_copy_of_a_key() {
    let app = spawn_app().await;
    let cli_key = app.admin().await;
    let admin = app.client_with(&cli_key.token);
    let created = admin
        .post_json("/v1/api-keys", &serde_json::json!({"name": "api", "role": "viewer"}), 201)
        .await;
    let api_token = created["key"].as_str().unwrap().to_owned();
    let api_id = created["api_key"]["id"].as_str().unwrap().to_owned();
    app.client_with(&api_token).get("/v1/me", 200).await;

    let contents = app.database_contents().await;
    for (id, token) in [(cli_key.id.as_str(), cli_key.token.as_str()), (&api_id, &api_token)] {
        let hash = sspr_api::hash_token(token);
        // The dump is the real data: the key's id and hash are in it ...
        assert!(contains(&contents, id), "the database dump lacks {id}; wrong file?");
        assert!(contains(&contents, &hash), "the database dump lacks the hash of {id}");
        // ... and the key itself is not, not even without its prefix.
        assert!(!contains(&contents, token), "the database holds key {id} in clear");
        assert!(!contains(&contents, &token[4..]), "the database holds the secret of {id}");
        assert_eq!(app.stored_token_hash(id).await.as_deref(), Some(hash.as_str()));
        let found = app.store.find_active_api_key(&hash).await.unwrap().unwrap();
        assert_eq!(found.id.as_str(), id);
    }
}
