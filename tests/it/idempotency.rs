//! `Idempotency-Key` and secrets, over real HTTP: an answer that carries a secret (a new API
//! key, a webhook signing secret) is recorded without it, in no table and in no byte of the
//! database files, and its replay withholds it; a POST is refused before its body is read
//! when the key's role cannot make it, and as soon as the body passes the route's limit.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::{Connection, Row};
use sspr_domain::Role;
use sspr_fleet_tests::{TestApp, TestClient, TestDatabase, TestResponse, spawn_app_with};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const SMALL_LIMITS: &[(&str, &str)] =
    &[("SSPR_FLEET_API__MAX_BODY_BYTES", "4096"), ("SSPR_FLEET_API__MAX_IMPORT_BYTES", "65536")];

async fn post_with_key(client: &TestClient, path: &str, key: &str, body: &Value) -> TestResponse {
    client.send(client.request(Method::POST, path).header("idempotency-key", key).json(body)).await
}

/// Every row of every table, as text: through sqlx for both backends (every column cast to
/// bytes on SQLite, `row_to_json` on PostgreSQL), and on SQLite the database, `-wal`, `-shm`
/// and `-journal` files as they are on disk.
async fn everything_stored(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let mut found = vec![("rows".to_owned(), app.database_contents().await)];
    if let TestDatabase::Sqlite { file } = &app.database {
        let mut conn =
            sqlx::SqliteConnection::connect(&app.database.url()).await.expect("open SQLite");
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(&mut conn)
                .await
                .expect("list tables");
        assert!(tables.iter().any(|t| t == "idempotency_keys"), "{tables:?}");
        let mut rows = Vec::new();
        for table in tables {
            let columns: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT name FROM pragma_table_info('{table}')"
            )))
            .fetch_all(&mut conn)
            .await
            .expect("list columns");
            let select = columns
                .iter()
                .map(|c| format!("CAST(\"{c}\" AS BLOB)"))
                .collect::<Vec<_>>()
                .join(", ");
            let dumped =
                sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {select} FROM \"{table}\"")))
                    .fetch_all(&mut conn)
                    .await
                    .expect("dump a table");
            for row in dumped {
                for i in 0..columns.len() {
                    let value: Option<Vec<u8>> = row.try_get(i).expect("a column as bytes");
                    rows.extend(value.unwrap_or_default());
                    rows.push(b'|');
                }
                rows.push(b'\n');
            }
        }
        let _ = conn.close().await;
        found.push(("sqlite rows through sqlx".to_owned(), rows));
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut name = file.clone().into_os_string();
            name.push(suffix);
            if let Ok(bytes) = std::fs::read(&name) {
                found.push((name.to_string_lossy().into_owned(), bytes));
            }
        }
    }
    found
}

/// The places among `stored` where `secret` (whole, or its random part) appears.
fn places_of(secret: &str, stored: &[(String, Vec<u8>)]) -> Vec<String> {
    let random = secret.split_once('_').map_or(secret, |(_, r)| r);
    assert!(random.len() >= 40, "{secret}");
    stored
        .iter()
        .filter(|(_, bytes)| bytes.windows(random.len()).any(|w| w == random.as_bytes()))
        .map(|(place, _)| place.clone())
        .collect()
}

/// Panics unless none of `secrets` is anywhere in the database, and the three records exist.
async fn assert_stored_nowhere(app: &TestApp, secrets: &[(&str, &str)]) {
    let stored = everything_stored(app).await;
    for (what, value) in secrets {
        let places = places_of(value, &stored);
        assert!(places.is_empty(), "the {what} is stored in clear in {places:?}");
    }
    // The answers were recorded (not skipped), only without their secrets.
    let dumped = match app.database.backend() {
        sspr_store::Backend::Postgres => &stored[0].1,
        sspr_store::Backend::Sqlite => &stored[1].1,
    };
    let records = String::from_utf8_lossy(dumped).matches("idem-").count();
    assert_eq!(records, 3, "one record per Idempotency-Key");
}

#[tokio::test]
async fn secrets_in_idempotent_answers_are_never_stored_and_replays_withhold_them() {
    let app = spawn_app_with(&[]).await;
    let admin = app.client_with(&app.admin_key().await);

    // A new API key, a webhook subscription with its signing secret, and a rotation.
    let key_body = json!({"name": "psa-connector", "role": "operator"});
    let first = post_with_key(&admin, "/v1/api-keys", "idem-key-1", &key_body).await;
    let first = first.expect_status(201);
    assert!(first.header("idempotency-replayed").is_none());
    assert!(first.header("idempotency-secret-withheld").is_none());
    let created_key = first.json();
    let new_key = created_key["key"].as_str().expect("the key, shown once").to_owned();
    assert!(new_key.starts_with("sfk_"), "{created_key}");

    let hook_body = json!({
        "url": "https://psa.example.com/hooks/sspr",
        "event_types": ["tenant.completed"],
    });
    let first = post_with_key(&admin, "/v1/webhooks", "idem-hook-1", &hook_body).await;
    let created_hook = first.expect_status(201).json();
    let secret = created_hook["secret"].as_str().expect("the secret, shown once").to_owned();
    assert!(secret.starts_with("whsec_"), "{created_hook}");
    let hook = created_hook["webhook"]["id"].as_str().unwrap().to_owned();

    let path = format!("/v1/webhooks/{hook}/rotate-secret");
    let rotate = || {
        let request = admin.request(Method::POST, &path).header("idempotency-key", "idem-rotate-1");
        admin.send(request)
    };
    let rotated = rotate().await.expect_status(200).json();
    let new_secret = rotated["secret"].as_str().expect("the new secret").to_owned();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret, "{rotated}");

    let secrets = [("API key", new_key.as_str()), ("secret", &secret), ("new secret", &new_secret)];
    assert_stored_nowhere(&app, &secrets).await;

    // Replays: the same answers, the secrets withheld, nothing done twice.
    let replay = post_with_key(&admin, "/v1/api-keys", "idem-key-1", &key_body).await;
    let replay = replay.expect_status(201);
    assert_eq!(replay.header("idempotency-replayed"), Some("true"));
    assert_eq!(replay.header("idempotency-secret-withheld"), Some("key"));
    let replayed = replay.json();
    assert_eq!(replayed["key"], Value::Null, "{replayed}");
    assert_eq!(replayed["api_key"], created_key["api_key"]);
    assert!(!replay.text().contains("sfk_"), "{}", replay.text());
    let keys = admin.get("/v1/api-keys", 200).await;
    let named = keys["items"].as_array().unwrap().iter().filter(|k| k["name"] == "psa-connector");
    assert_eq!(named.count(), 1, "{keys}");
    // The key shown the first time still works.
    assert_eq!(app.client_with(&new_key).get("/v1/me", 200).await["role"], "operator");

    let replay = post_with_key(&admin, "/v1/webhooks", "idem-hook-1", &hook_body).await;
    let replay = replay.expect_status(201);
    assert_eq!(replay.header("idempotency-replayed"), Some("true"));
    assert_eq!(replay.header("idempotency-secret-withheld"), Some("secret"));
    let replayed = replay.json();
    assert_eq!(replayed["secret"], Value::Null, "{replayed}");
    assert_eq!(replayed["webhook"]["id"], created_hook["webhook"]["id"]);
    let hooks = admin.get("/v1/webhooks", 200).await;
    assert_eq!(hooks["items"].as_array().unwrap().len(), 1, "{hooks}");

    let replay = rotate().await.expect_status(200);
    assert_eq!(replay.header("idempotency-replayed"), Some("true"));
    assert_eq!(replay.header("idempotency-secret-withheld"), Some("secret"));
    let replayed = replay.json();
    assert_eq!(replayed["secret"], Value::Null, "{replayed}");
    assert_eq!(replayed["previous_secret_expires_at"], rotated["previous_secret_expires_at"]);
    assert_eq!(replayed["webhook"], rotated["webhook"], "the replay rotated nothing");

    assert_stored_nowhere(&app, &secrets).await;
}

/// Sends `head` and then `body` (not all the body the head announces) on a new connection
/// and reads the answer, which must come without the rest of the body.
async fn answer_before_the_body_is_sent(app: &TestApp, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = TcpStream::connect(app.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("send the head");
    stream.write_all(body).await.expect("send part of the body");
    stream.flush().await.expect("flush");
    let mut answer = Vec::new();
    let read = async {
        let mut buf = [0u8; 8192];
        loop {
            let n = stream.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            if let Some((head, body)) = text.split_once("\r\n\r\n")
                && let Some(length) = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse::<usize>().ok())
                && body.len() >= length
            {
                break;
            }
        }
    };
    // Not a wait for work: the server owes an answer now, and before the fix it waited for
    // a body that never comes.
    if tokio::time::timeout(Duration::from_secs(15), read).await.is_err() {
        panic!("no answer while the body was incomplete: the server waited for (buffered) it");
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no answer: {text:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status line");
    assert!(head.to_ascii_lowercase().contains("content-type: application/problem+json"), "{head}");
    (status, serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}")))
}

fn post_head(path: &str, token: &str, framing: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nIdempotency-Key: big-{path}\r\n{framing}\r\n"
    )
}

#[tokio::test]
async fn a_viewer_post_with_an_idempotency_key_is_refused_before_its_body_is_read() {
    let app = spawn_app_with(&[]).await;
    let viewer = app.key_with(Role::Viewer, None).await;
    // 5 MiB announced (under max_import_bytes), 64 KiB sent.
    let head = post_head("/v1/tenants", &viewer, "Content-Length: 5242880\r\n");
    let (status, problem) = answer_before_the_body_is_sent(&app, &head, &[b' '; 65536]).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden_role")), "{problem}");
    // The same with a chunked body (no length announced).
    let head = post_head("/v1/rollouts:plan", &viewer, "Transfer-Encoding: chunked\r\n");
    let chunk = format!("10000\r\n{}\r\n", " ".repeat(65536));
    let (status, problem) = answer_before_the_body_is_sent(&app, &head, chunk.as_bytes()).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden_role")), "{problem}");
}

#[tokio::test]
async fn an_idempotent_body_is_refused_as_soon_as_it_passes_the_routes_limit() {
    let app = spawn_app_with(SMALL_LIMITS).await;
    let operator = app.key_with(Role::Operator, None).await;
    // Announced over max_body_bytes (but under max_import_bytes): 413 at once.
    let head = post_head("/v1/rollouts:plan", &operator, "Content-Length: 20000\r\n");
    let (status, problem) = answer_before_the_body_is_sent(&app, &head, b"").await;
    assert_eq!((status, problem["code"].as_str()), (413, Some("payload_too_large")), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("4096")), "{problem}");
    // Chunked: 413 once 4096 bytes are passed, though more was announced by no length.
    let head = post_head("/v1/tenants", &operator, "Transfer-Encoding: chunked\r\n");
    let chunk = format!("1400\r\n{}\r\n", " ".repeat(0x1400));
    let (status, problem) = answer_before_the_body_is_sent(&app, &head, chunk.as_bytes()).await;
    assert_eq!((status, problem["code"].as_str()), (413, Some("payload_too_large")), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("4096")), "{problem}");
    // The import keeps its own, larger limit.
    let client = app.client_with(&operator);
    let csv = format!("entra_tenant,display_name\n{}\n", "x".repeat(20_000));
    let request = client
        .request(Method::POST, "/v1/tenants:import?dry_run=true")
        .header("content-type", "text/csv")
        .header("idempotency-key", "import-1")
        .body(csv.clone());
    let response = client.send(request).await;
    assert!(response.status != 413 && response.status < 500, "{}", response.text());
    let head = post_head("/v1/tenants:import", &operator, "Content-Length: 70000\r\n");
    let (status, problem) = answer_before_the_body_is_sent(&app, &head, b"").await;
    assert_eq!((status, problem["code"].as_str()), (413, Some("payload_too_large")), "{problem}");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("65536")), "{problem}");
}

/// The middleware refuses every POST of a viewer before reading its body, because no POST
/// under `/v1` is open to viewers: this keeps that true as routes are added.
#[tokio::test]
async fn no_post_under_v1_is_open_to_a_viewer() {
    let app = spawn_app_with(&[]).await;
    let viewer = app.client_with(&app.key_with(Role::Viewer, None).await);
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json"))
            .expect("read openapi/openapi.json");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    let mut posts = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        if item.get("post").is_none() || !path.starts_with("/v1/") {
            continue;
        }
        posts += 1;
        let path = path
            .replace("{id}", "x_0")
            .replace("{tenant_id}", "x_0")
            .replace("{delivery_id}", "x_0");
        // Without an Idempotency-Key the route itself answers: never a success.
        let response = viewer.post_json_raw(&path, &json!({})).await;
        assert!(
            matches!(response.status, 403 | 404 | 415 | 422),
            "a viewer's POST {path}: {} {}",
            response.status,
            response.text()
        );
        let response = post_with_key(&viewer, &path, "viewer-1", &json!({})).await;
        response.expect_problem(403, "forbidden_role");
    }
    assert!(posts > 10, "only {posts} POST operations");
}
