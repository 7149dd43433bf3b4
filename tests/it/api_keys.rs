//! `/v1/api-keys`: roles, the create/list/get/revoke cycle, and tenant-restricted admins.

use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{TestClient, spawn_app};

fn ids(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a key list: {list}"))
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn create(client: &TestClient, body: Value) -> (String, String) {
    let created = client.post_json("/v1/api-keys", &body, 201).await;
    let token = created["key"].as_str().unwrap().to_owned();
    let id = created["api_key"]["id"].as_str().unwrap().to_owned();
    (id, token)
}

#[tokio::test]
async fn viewers_and_operators_cannot_manage_keys() {
    let app = spawn_app().await;
    let victim = app.admin().await;
    for role in [Role::Viewer, Role::Operator] {
        let client = app.client_with(&app.key_with(role, None).await);
        let body = json!({"name": "escalate", "role": "viewer"});
        client.post_json_raw("/v1/api-keys", &body).await.expect_problem(403, "forbidden_role");
        client.get_raw("/v1/api-keys").await.expect_problem(403, "forbidden_role");
        let path = format!("/v1/api-keys/{}", victim.id);
        client.get_raw(&path).await.expect_problem(403, "forbidden_role");
        client.delete_raw(&path).await.expect_problem(403, "forbidden_role");
    }
    // Nothing was created or revoked.
    let list = app.client_with(&victim.token).get("/v1/api-keys", 200).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 3, "{list}");
    assert!(list["items"].as_array().unwrap().iter().all(|k| k["revoked_at"].is_null()));
}

#[tokio::test]
async fn an_admin_creates_lists_gets_and_revokes_a_key() {
    let app = spawn_app().await;
    let admin_key = app.admin().await;
    let admin = app.client_with(&admin_key.token);

    let created = admin
        .post_json(
            "/v1/api-keys",
            &json!({"name": "  connectwise-prod  ", "role": "operator"}),
            201,
        )
        .await;
    let token = created["key"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sfk_") && token.len() == 47, "key {token:?}");
    let view = &created["api_key"];
    let id = view["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("key_"), "{view}");
    assert_eq!(view["name"], "connectwise-prod", "the name is trimmed");
    assert_eq!(view["role"], "operator");
    assert_eq!(view["tenant_ids"], Value::Null);
    assert_eq!(view["created_by"], admin_key.id.as_str());
    assert_eq!(view["revoked_at"], Value::Null);
    assert!(view.get("key").is_none() && view.get("token_hash").is_none(), "{view}");

    // The new key works, with its own identity.
    let me = app.client_with(&token).get("/v1/me", 200).await;
    assert_eq!(me["id"], id.as_str());
    assert_eq!(me["role"], "operator");

    // Listed (oldest first) and readable, never with the key.
    let list = admin.get("/v1/api-keys", 200).await;
    assert_eq!(ids(&list), vec![admin_key.id.clone(), id.clone()]);
    assert!(!list.to_string().contains(&token[4..]), "the list shows a key: {list}");
    let got = admin.get(&format!("/v1/api-keys/{id}"), 200).await;
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["name"], "connectwise-prod");
    assert!(!got.to_string().contains(&token[4..]));

    // Revoked: 204 with no body, then the key is refused.
    let revoked = admin.delete_raw(&format!("/v1/api-keys/{id}")).await.expect_status(204);
    assert!(revoked.body.is_empty(), "204 with a body: {}", revoked.text());
    app.client_with(&token).get_raw("/v1/me").await.expect_problem(401, "unauthorized");
    let got = admin.get(&format!("/v1/api-keys/{id}"), 200).await;
    assert!(got["revoked_at"].is_string(), "revoked_at not set: {got}");

    // Revoking again, or a key that does not exist, is 404.
    admin.delete_raw(&format!("/v1/api-keys/{id}")).await.expect_problem(404, "not_found");
    let unknown = sspr_domain::ApiKeyId::new();
    admin.delete_raw(&format!("/v1/api-keys/{unknown}")).await.expect_problem(404, "not_found");
    admin.get_raw(&format!("/v1/api-keys/{unknown}")).await.expect_problem(404, "not_found");
    admin.get_raw("/v1/api-keys/not-an-id").await.expect_problem(404, "not_found");

    // The admin key itself is untouched.
    admin.get("/v1/me", 200).await;
}

#[tokio::test]
async fn an_admin_can_create_an_admin_and_restricted_keys() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let (a, b) = (TenantId::new().to_string(), TenantId::new().to_string());
    let (_, token) = create(&admin, json!({"name": "second-admin", "role": "admin"})).await;
    let (_, viewer) = create(
        &app.client_with(&token),
        json!({"name": "v", "role": "viewer", "tenant_ids": [b, a, b]}),
    )
    .await;
    let me = app.client_with(&viewer).get("/v1/me", 200).await;
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(me["tenant_ids"], json!(expected), "tenant ids are deduplicated and sorted");
}

#[tokio::test]
async fn a_tenant_restricted_admin_cannot_grant_beyond_its_tenants() {
    let app = spawn_app().await;
    let (a, b) = (TenantId::new(), TenantId::new());
    let unrestricted = app.admin().await;
    let other = app.issue_key("b-viewer", Role::Viewer, Some(std::slice::from_ref(&b))).await;
    let restricted_key =
        app.issue_key("a-admin", Role::Admin, Some(std::slice::from_ref(&a))).await;
    let restricted = app.client_with(&restricted_key.token);

    for body in [
        json!({"name": "everything", "role": "viewer"}),
        json!({"name": "everything", "role": "viewer", "tenant_ids": null}),
        json!({"name": "b", "role": "viewer", "tenant_ids": [b.to_string()]}),
        json!({"name": "a-and-b", "role": "viewer", "tenant_ids": [a.to_string(), b.to_string()]}),
    ] {
        restricted
            .post_json_raw("/v1/api-keys", &body)
            .await
            .expect_problem(403, "grant_exceeds_own");
    }

    let (id, token) = create(
        &restricted,
        json!({"name": "a-operator", "role": "operator", "tenant_ids": [a.to_string()]}),
    )
    .await;
    let me = app.client_with(&token).get("/v1/me", 200).await;
    assert_eq!(me["tenant_ids"], json!([a.to_string()]));
    assert_eq!(me["created_by"], restricted_key.id.as_str());

    // It sees only keys within its tenants: its own and the one it created.
    let list = restricted.get("/v1/api-keys", 200).await;
    assert_eq!(ids(&list), vec![restricted_key.id.clone(), id.clone()], "{list}");
    // An unrestricted admin sees all of them.
    let all = app.client_with(&unrestricted.token).get("/v1/api-keys", 200).await;
    assert_eq!(
        ids(&all),
        vec![unrestricted.id.clone(), other.id.clone(), restricted_key.id.clone(), id]
    );

    // Keys outside its reach are not found, and cannot be revoked.
    for outside in [&unrestricted.id, &other.id] {
        let path = format!("/v1/api-keys/{outside}");
        restricted.get_raw(&path).await.expect_problem(404, "not_found");
        restricted.delete_raw(&path).await.expect_problem(404, "not_found");
    }
    app.client_with(&unrestricted.token).get("/v1/me", 200).await;
    app.client_with(&other.token).get("/v1/me", 200).await;
}

#[tokio::test]
async fn a_created_key_reads_back_as_it_was_returned() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let tenant = TenantId::new().to_string();
    let created = admin
        .post_json(
            "/v1/api-keys",
            &json!({"name": "echo", "role": "viewer", "tenant_ids": [tenant]}),
            201,
        )
        .await;
    let id = created["api_key"]["id"].as_str().unwrap();
    let got = admin.get(&format!("/v1/api-keys/{id}"), 200).await;
    assert_eq!(created["api_key"], got, "POST returned one key, GET another");
    let listed = admin.get("/v1/api-keys", 200).await;
    let listed =
        listed["items"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(listed, got);
}
