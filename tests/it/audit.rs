//! `/v1/audit`: every write through the API is recorded with the key that made it.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{TestClient, reqwest::Method, spawn_app};

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().unwrap_or_else(|| panic!("not an audit page: {page}"))
}

/// Every entry, following cursors with `limit`.
async fn all_entries(client: &TestClient, query: &str, limit: u32) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let mut path = format!("/v1/audit?limit={limit}{query}");
        if let Some(cursor) = &cursor {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let page = client.get(&path, 200).await;
        assert!(items(&page).len() <= limit as usize, "page larger than {limit}: {page}");
        entries.extend(items(&page).iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => {
                assert!(!items(&page).is_empty(), "an empty page with a cursor: {page}");
                cursor = Some(next.to_owned());
            }
            None => return entries,
        }
    }
    panic!("paging does not end");
}

#[tokio::test]
async fn writes_are_recorded_with_key_action_status_and_request_id() {
    let app = spawn_app().await;
    let k = app.admin().await;
    let admin = app.client_with(&k.token);

    let created = admin
        .send(
            admin
                .request(Method::POST, "/v1/api-keys")
                .header("x-request-id", "create-req-1")
                .json(&json!({"name": "audited", "role": "viewer"})),
        )
        .await
        .expect_status(201);
    assert_eq!(created.request_id(), "create-req-1");
    let new_id = created.json()["api_key"]["id"].as_str().unwrap().to_owned();
    // Reads are not recorded.
    admin.get("/v1/api-keys", 200).await;
    admin.get(&format!("/v1/api-keys/{new_id}"), 200).await;
    let revoked = admin.delete_raw(&format!("/v1/api-keys/{new_id}")).await.expect_status(204);
    let revoke_request_id = revoked.request_id().to_owned();

    let page = admin.get(&format!("/v1/audit?actor={}", k.id), 200).await;
    let entries = items(&page);
    assert_eq!(entries.len(), 2, "{page}");
    assert_eq!(page["next_cursor"], Value::Null);

    let create = &entries[0];
    assert_eq!(create["actor"], k.id.as_str());
    assert_eq!(create["action"], "POST /v1/api-keys");
    assert_eq!(create["target"], "/v1/api-keys");
    assert_eq!(create["status"], 201);
    assert_eq!(create["request_id"], "create-req-1");
    assert_eq!(create["tenant_id"], Value::Null);
    assert_eq!(create["details"]["api_key_id"], new_id.as_str());
    assert!(create["id"].as_str().unwrap().starts_with("aud_"), "{create}");
    assert!(create["at"].is_string(), "{create}");

    let revoke = &entries[1];
    assert_eq!(revoke["actor"], k.id.as_str());
    assert_eq!(revoke["action"], "DELETE /v1/api-keys/{id}");
    assert_eq!(revoke["target"], format!("/v1/api-keys/{new_id}"));
    assert_eq!(revoke["status"], 204);
    assert_eq!(revoke["request_id"], revoke_request_id.as_str());

    // No entry holds a key.
    let everything = admin.get("/v1/audit", 200).await.to_string();
    assert!(!everything.contains("sfk_"), "{everything}");
    // The CLI's keys are recorded too, as `cli`.
    let cli = admin.get("/v1/audit?actor=cli", 200).await;
    let cli = items(&cli);
    assert_eq!(cli.len(), 1, "{cli:?}");
    assert_eq!(cli[0]["action"], "keys create");
    assert_eq!(cli[0]["target"], format!("/v1/api-keys/{}", k.id));
}

#[tokio::test]
async fn refused_writes_are_recorded_too() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    let viewer = app.issue_key("nosy", Role::Viewer, None).await;
    let client = app.client_with(&viewer.token);
    let refused =
        client.post_json_raw("/v1/api-keys", &json!({"name": "escalate", "role": "admin"})).await;
    refused.expect_problem(403, "forbidden_role");
    let refused_request_id = refused.request_id().to_owned();
    let invalid = admin.post_json_raw("/v1/api-keys", &json!({"name": "", "role": "viewer"})).await;
    invalid.expect_problem(422, "validation_failed");

    let page = admin.get(&format!("/v1/audit?actor={}", viewer.id), 200).await;
    let entries = items(&page);
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["action"], "POST /v1/api-keys");
    assert_eq!(entries[0]["status"], 403);
    assert_eq!(entries[0]["request_id"], refused_request_id.as_str());

    let all = admin.get("/v1/audit", 200).await;
    let statuses: Vec<u64> = items(&all)
        .iter()
        .filter(|e| e["action"] == "POST /v1/api-keys")
        .map(|e| e["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses, vec![403, 422], "{all}");
}

#[tokio::test]
async fn following_cursors_visits_every_entry_once() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    for i in 0..5 {
        admin
            .post_json("/v1/api-keys", &json!({"name": format!("k{i}"), "role": "viewer"}), 201)
            .await;
    }
    // 1 key from the CLI and 5 from the API.
    let everything = admin.get("/v1/audit?limit=500", 200).await;
    assert_eq!(everything["next_cursor"], Value::Null);
    let expected: Vec<Value> = items(&everything).clone();
    assert_eq!(expected.len(), 6, "{everything}");

    for limit in [1, 2, 5, 6, 7] {
        let paged = all_entries(&admin, "", limit).await;
        assert_eq!(paged, expected, "paging with limit={limit}");
    }
    let unique: BTreeSet<&str> = expected.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(unique.len(), expected.len());

    // Filters and paging combine.
    let api_only = all_entries(&admin, "&actor=cli", 1).await;
    assert_eq!(api_only.len(), 1);
}

#[tokio::test]
async fn bad_paging_parameters_are_422() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    for (query, field) in [
        ("cursor=garbage", "cursor"),
        ("cursor=", "cursor"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
    ] {
        let problem = admin
            .get_raw(&format!("/v1/audit?{query}"))
            .await
            .expect_problem(422, "validation_failed");
        let fields: Vec<String> =
            sspr_fleet_tests::field_errors(&problem).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec![field.to_owned()], "{query}: {problem}");
    }
    admin.get("/v1/audit?limit=500", 200).await;
    admin.get("/v1/audit?limit=1", 200).await;
}

#[tokio::test]
async fn a_tenant_restricted_key_sees_no_entries_without_a_tenant() {
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    admin.post_json("/v1/api-keys", &json!({"name": "k", "role": "viewer"}), 201).await;
    let (a, b) = (TenantId::new(), TenantId::new());
    let restricted =
        app.client_with(&app.key_with(Role::Admin, Some(std::slice::from_ref(&a))).await);
    restricted
        .post_json(
            "/v1/api-keys",
            &json!({"name": "ka", "role": "viewer", "tenant_ids": [a.to_string()]}),
            201,
        )
        .await;

    assert!(items(&admin.get("/v1/audit", 200).await).len() >= 4);
    let page = restricted.get("/v1/audit", 200).await;
    assert_eq!(page, json!({"items": [], "next_cursor": null}));
    let page = restricted.get(&format!("/v1/audit?tenant_id={a}"), 200).await;
    assert_eq!(items(&page).len(), 0);
    restricted.get_raw(&format!("/v1/audit?tenant_id={b}")).await.expect_problem(404, "not_found");
}

#[tokio::test]
async fn any_role_may_read_the_audit_log() {
    let app = spawn_app().await;
    let viewer = app.client_with(&app.key_with(Role::Viewer, None).await);
    let page = viewer.get("/v1/audit", 200).await;
    assert_eq!(items(&page).len(), 1, "the viewer's own creation by the CLI: {page}");
}

#[tokio::test]
async fn since_and_until_select_a_time_window() {
    type Time = chrono::DateTime<chrono::Utc>;
    let app = spawn_app().await;
    let admin = app.client_with(&app.admin_key().await);
    for i in 0..4 {
        admin
            .post_json("/v1/api-keys", &json!({"name": format!("k{i}"), "role": "viewer"}), 201)
            .await;
    }
    let all = admin.get("/v1/audit", 200).await;
    let all = items(&all).clone();
    let at = |e: &Value| e["at"].as_str().unwrap().parse::<Time>().unwrap();
    let ids = |entries: &[Value]| entries.iter().map(|e| e["id"].clone()).collect::<Vec<_>>();
    for pivot in all.iter().map(at) {
        let encoded = pivot.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let since = admin.get(&format!("/v1/audit?since={encoded}"), 200).await;
        let expected: Vec<Value> = all.iter().filter(|e| at(e) >= pivot).cloned().collect();
        assert_eq!(ids(items(&since)), ids(&expected), "since={encoded}");
        let until = admin.get(&format!("/v1/audit?until={encoded}"), 200).await;
        let expected: Vec<Value> = all.iter().filter(|e| at(e) < pivot).cloned().collect();
        assert_eq!(ids(items(&until)), ids(&expected), "until={encoded}");
    }
    let future = admin.get("/v1/audit?since=2999-01-01T00:00:00Z", 200).await;
    assert!(items(&future).is_empty());
    let past = admin.get("/v1/audit?until=2000-01-01T00:00:00Z", 200).await;
    assert!(items(&past).is_empty());
    admin.get_raw("/v1/audit?since=yesterday").await.expect_problem(400, "bad_request");
}
