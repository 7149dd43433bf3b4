//! The end-to-end harness: [`spawn_app`] starts the real daemon ([`sspr_fleet::Application`],
//! exactly as `serve` does) on `127.0.0.1:0` with a fresh database, and [`TestClient`] talks to
//! it over a real socket. [`spawn_app_with_sim`] also starts the Graph simulator
//! (`sspr-graph-sim`) from a scenario and points the daemon at it.
//!
//! The database is a new SQLite file in a temporary directory, or, when
//! `SSPR_FLEET_TEST_DATABASE_URL` (or `DATABASE_URL`) is a PostgreSQL URL, a new schema in that
//! database, dropped when the [`TestApp`] goes away. Settings are built from an injected
//! environment; the process environment is never changed. Set `TEST_LOG=1` to see the daemon's
//! logs.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Once,
};

use reqwest::{Method, RequestBuilder, header::HeaderMap};
use serde_json::Value;
use sqlx::Connection;
use sspr_api::keys::{NewKey, issue_api_key_from_cli};
use sspr_domain::{Role, SystemClock, TenantId, TenantScope};
use sspr_fleet::{Application, settings::Settings};
use sspr_graph_sim::{GraphSim, RunningSim, scenario::Scenario};
use sspr_store::{Backend, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use reqwest;
pub use serde_json::json;
pub use sspr_graph_sim;

/// The media type of every error response.
pub const PROBLEM_JSON: &str = "application/problem+json";

fn init_logs_once() {
    static LOGS: Once = Once::new();
    LOGS.call_once(|| {
        let Some(value) = std::env::var("TEST_LOG").ok().filter(|v| !v.is_empty() && v != "0")
        else {
            return;
        };
        // `TEST_LOG=1` shows the daemon's default logs; any other value is a log filter.
        let filter = if value == "1" { "info,sqlx=warn,actix_server=warn" } else { &value };
        match sspr_fleet::telemetry::init(filter, sspr_fleet::settings::LogFormat::Text) {
            // The guard only flushes trace export, which tests do not use.
            Ok(guard) => std::mem::forget(guard),
            Err(err) => eprintln!("TEST_LOG: cannot install the log subscriber: {err}"),
        }
    });
}

/// The PostgreSQL URL for tests, if one is configured.
pub fn postgres_url() -> Option<String> {
    std::env::var("SSPR_FLEET_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .ok()
        .filter(|u| u.starts_with("postgres"))
}

/// The database one [`TestApp`] uses.
#[derive(Debug)]
pub enum TestDatabase {
    /// A SQLite file in the app's temporary directory.
    Sqlite {
        /// The database file (its WAL is next to it, `<file>-wal`).
        file: PathBuf,
    },
    /// A schema of its own in the test PostgreSQL database.
    Postgres {
        /// The URL the schema was created through (and is dropped through).
        admin_url: String,
        /// The schema, `t_<uuid>`.
        schema: String,
        /// The URL the daemon uses: `admin_url` with the schema as its search path.
        url: String,
        /// Whether the schema has been dropped already.
        dropped: bool,
    },
}

impl TestDatabase {
    async fn create(data_dir: &Path) -> Self {
        let Some(admin_url) = postgres_url() else {
            return TestDatabase::Sqlite { file: data_dir.join("sspr-fleet.db") };
        };
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL for the end-to-end tests: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
            .execute(&mut conn)
            .await
            .expect("create the test schema");
        let _ = conn.close().await;
        let sep = if admin_url.contains('?') { '&' } else { '?' };
        let url = format!("{admin_url}{sep}options=-c%20search_path%3D{schema}");
        TestDatabase::Postgres { admin_url, schema, url, dropped: false }
    }

    /// The URL given to the daemon.
    pub fn url(&self) -> String {
        match self {
            TestDatabase::Sqlite { file } => format!("sqlite://{}", file.display()),
            TestDatabase::Postgres { url, .. } => url.clone(),
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self {
            TestDatabase::Sqlite { .. } => Backend::Sqlite,
            TestDatabase::Postgres { .. } => Backend::Postgres,
        }
    }

    async fn drop_schema(admin_url: &str, schema: &str) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(admin_url).await?;
        // Never hang a test run on a lock some stray connection still holds.
        sqlx::raw_sql("SET lock_timeout = '5s'").execute(&mut conn).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {schema} CASCADE")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }

    /// Drops the PostgreSQL schema, if any, from a thread of its own so it works from `Drop`
    /// inside any runtime.
    fn cleanup(&mut self) {
        if let TestDatabase::Postgres { admin_url, schema, dropped, .. } = self {
            if *dropped {
                return;
            }
            *dropped = true;
            let (admin_url, schema) = (admin_url.clone(), schema.clone());
            let result = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
                runtime.block_on(Self::drop_schema(&admin_url, &schema))
            })
            .join();
            match result {
                Ok(Ok(())) => {}
                Ok(Err(err)) => eprintln!("warning: cannot drop the test schema: {err:#}"),
                Err(_) => eprintln!("warning: dropping the test schema panicked"),
            }
        }
    }
}

/// A key issued for a test, as `sspr-fleet keys create` issues it.
#[derive(Debug, Clone)]
pub struct TestKey {
    /// The key's public id, `key_...`.
    pub id: String,
    /// The bearer token, `sfk_...`.
    pub token: String,
    /// The key's name.
    pub name: String,
    /// The key's role.
    pub role: Role,
}

/// A running daemon with its own port, data directory and database.
pub struct TestApp {
    /// The address the API listens on.
    pub addr: SocketAddr,
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The daemon's store (a clone; it shares the daemon's pools).
    pub store: Store,
    /// The settings the daemon was built from.
    pub settings: Settings,
    /// The daemon's database.
    pub database: TestDatabase,
    http: reqwest::Client,
    shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    // Dropped last: holds the SQLite file and the master key.
    data_dir: tempfile::TempDir,
}

impl std::fmt::Debug for TestApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestApp").field("address", &self.address).finish_non_exhaustive()
    }
}

/// Starts the daemon with the default test settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the daemon with extra `SSPR_FLEET_*` variables over the default test settings.
pub async fn spawn_app_with(extra_env: &[(&str, &str)]) -> TestApp {
    init_logs_once();
    let data_dir = tempfile::tempdir().expect("create a temporary data directory");
    let database = TestDatabase::create(data_dir.path()).await;
    let mut env: Vec<(String, String)> = vec![
        ("SSPR_FLEET_LISTEN".into(), "127.0.0.1:0".into()),
        ("SSPR_FLEET_DATA_DIR".into(), data_dir.path().display().to_string()),
        ("SSPR_FLEET_DATABASE_URL".into(), database.url()),
        // Tests run many daemons at once: keep threads and connections per daemon low.
        ("SSPR_FLEET_API__WORKERS".into(), "2".into()),
        ("SSPR_FLEET_DATABASE__MAX_CONNECTIONS".into(), "4".into()),
        // Test receivers listen on 127.0.0.1, which the default policy refuses; tests of the
        // policy itself pass "false" (the product's default) in `extra_env`.
        ("SSPR_FLEET_WEBHOOKS__ALLOW_PRIVATE_TARGETS".into(), "true".into()),
    ];
    env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let settings = Settings::load_from(None, env).expect("valid test settings");
    let app = Application::build(&settings).await.expect("the daemon starts");
    let addr = app.addr();
    let store = app.store().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("build the HTTP client");
    TestApp {
        addr,
        address: format!("http://{addr}"),
        store,
        settings,
        database,
        http,
        shutdown,
        server: Some(server),
        data_dir,
    }
}

/// A Graph simulator serving on its own port for one test. Keep it alive as long as the
/// daemon pointed at it.
pub struct SimHandle {
    /// The simulator's state (control calls: faults, statistics, clock).
    pub sim: GraphSim,
    /// The server; stopped when the test's runtime ends.
    pub running: RunningSim,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle").field("base_url", &self.base_url()).finish_non_exhaustive()
    }
}

impl SimHandle {
    /// `http://127.0.0.1:<port>`: both the Graph and the login base URL.
    pub fn base_url(&self) -> String {
        self.running.base_url()
    }
}

/// Starts the Graph simulator from `scenario_toml` (see `docs/graph-sim.md`) on
/// `127.0.0.1:0`, then the daemon pointed at it (`graph_url`, `login_url` and `portal_url`) with background
/// verification and scheduled report refreshes off, so that tests verify and refresh
/// explicitly. `extra_env` comes last and may override any of that.
pub async fn spawn_app_with_sim(
    scenario_toml: &str,
    extra_env: &[(&str, &str)],
) -> (TestApp, SimHandle) {
    let scenario = Scenario::parse(scenario_toml)
        .unwrap_or_else(|e| panic!("invalid test scenario: {e}\n{scenario_toml}"));
    let sim = GraphSim::from_scenario(&scenario)
        .unwrap_or_else(|e| panic!("cannot build the test scenario: {e}\n{scenario_toml}"));
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind the simulator's listener");
    let running = sim.serve(listener).expect("the simulator starts");
    let url = running.base_url();
    let mut env: Vec<(&str, &str)> = vec![
        ("SSPR_FLEET_GRAPH_URL", &url),
        ("SSPR_FLEET_LOGIN_URL", &url),
        ("SSPR_FLEET_PORTAL_URL", &url),
        ("SSPR_FLEET_REGISTRY__BACKGROUND_VERIFY", "false"),
        ("SSPR_FLEET_REPORTING__SCHEDULED_REFRESH", "false"),
    ];
    env.extend_from_slice(extra_env);
    let app = spawn_app_with(&env).await;
    (app, SimHandle { sim, running })
}

impl TestApp {
    /// A client without a key.
    pub fn client(&self) -> TestClient {
        TestClient { http: self.http.clone(), base: self.address.clone(), token: None }
    }

    /// A client that sends `token` as its bearer key.
    pub fn client_with(&self, token: &str) -> TestClient {
        self.client().with_token(token)
    }

    /// The data directory of the daemon.
    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Issues a key the way `sspr-fleet keys create` does; `tenants` `None` reaches every
    /// tenant.
    pub async fn issue_key(&self, name: &str, role: Role, tenants: Option<&[TenantId]>) -> TestKey {
        let tenants = match tenants {
            None => TenantScope::All,
            Some(ids) => {
                TenantScope::Only(ids.iter().map(|t| t.to_string()).collect::<BTreeSet<String>>())
            }
        };
        let (key, token) = issue_api_key_from_cli(
            &self.store,
            &SystemClock,
            NewKey { name: name.to_owned(), role, tenants },
        )
        .await
        .expect("issue a key from the CLI helper");
        TestKey { id: key.id.to_string(), token: token.reveal().to_owned(), name: key.name, role }
    }

    /// An unrestricted admin key.
    pub async fn admin(&self) -> TestKey {
        self.issue_key("test-admin", Role::Admin, None).await
    }

    /// The token of a new unrestricted admin key.
    pub async fn admin_key(&self) -> String {
        self.admin().await.token
    }

    /// The token of a new key with `role`, restricted to `tenants` (`None`: every tenant).
    pub async fn key_with(&self, role: Role, tenants: Option<&[TenantId]>) -> String {
        self.issue_key(&format!("test-{role}"), role, tenants).await.token
    }

    /// Cancels the shutdown token and waits for `run_until_stopped` to return; returns what it
    /// returned. Drops the PostgreSQL schema afterwards.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let server = self.server.take().expect("the server is running");
        let result = server.await.expect("the server task does not panic");
        self.database.cleanup();
        result
    }

    /// Cancels the shutdown token without waiting.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Takes the server task, to await `run_until_stopped` by hand.
    pub fn take_server(&mut self) -> JoinHandle<anyhow::Result<()>> {
        self.server.take().expect("the server is running")
    }

    /// The stored `token_hash` of a key, read straight from the database.
    pub async fn stored_token_hash(&self, key_id: &str) -> Option<String> {
        const SQL: &str = "SELECT token_hash FROM api_keys WHERE id = $1";
        match &self.database {
            TestDatabase::Sqlite { file } => {
                let url = format!("sqlite://{}?mode=ro", file.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open SQLite");
                let hash = sqlx::query_scalar(SQL)
                    .bind(key_id)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("read token_hash");
                let _ = conn.close().await;
                hash
            }
            TestDatabase::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("open PostgreSQL");
                let hash = sqlx::query_scalar(SQL)
                    .bind(key_id)
                    .fetch_optional(&mut conn)
                    .await
                    .expect("read token_hash");
                let _ = conn.close().await;
                hash
            }
        }
    }

    /// Sets a key's tenant list straight in the database (`None`: every tenant), as an
    /// administrator changing a key's scope would; the API offers no such change yet.
    pub async fn set_key_tenants(&self, key_id: &str, tenants: Option<&[String]>) {
        const SQL: &str = "UPDATE api_keys SET tenant_ids = $1 WHERE id = $2";
        let json = tenants.map(|t| serde_json::to_string(t).expect("tenant ids as JSON"));
        let done = match &self.database {
            TestDatabase::Sqlite { file } => {
                let url = format!("sqlite://{}", file.display());
                let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("open SQLite");
                let done = sqlx::query(SQL).bind(&json).bind(key_id).execute(&mut conn).await;
                let _ = conn.close().await;
                done.expect("update tenant_ids").rows_affected()
            }
            TestDatabase::Postgres { url, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("open PostgreSQL");
                let done = sqlx::query(SQL).bind(&json).bind(key_id).execute(&mut conn).await;
                let _ = conn.close().await;
                done.expect("update tenant_ids").rows_affected()
            }
        };
        assert_eq!(done, 1, "no key {key_id}");
    }

    /// Everything the database holds, as bytes to search: on SQLite the database file and its
    /// WAL as they are on disk; on PostgreSQL every row of every table of the schema as JSON
    /// text.
    pub async fn database_contents(&self) -> Vec<u8> {
        match &self.database {
            TestDatabase::Sqlite { file } => {
                let mut bytes = std::fs::read(file).expect("read the SQLite file");
                for suffix in ["-wal", "-journal"] {
                    let mut name = file.clone().into_os_string();
                    name.push(suffix);
                    if let Ok(more) = std::fs::read(PathBuf::from(name)) {
                        bytes.extend(more);
                    }
                }
                bytes
            }
            TestDatabase::Postgres { url, schema, .. } => {
                let mut conn = sqlx::PgConnection::connect(url).await.expect("open PostgreSQL");
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
                )
                .bind(schema)
                .fetch_all(&mut conn)
                .await
                .expect("list tables");
                assert!(!tables.is_empty(), "no tables in schema {schema}");
                let mut bytes = Vec::new();
                for table in tables {
                    let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                        "SELECT row_to_json(t)::text FROM {schema}.\"{table}\" t"
                    )))
                    .fetch_all(&mut conn)
                    .await
                    .expect("dump a table");
                    for row in rows {
                        bytes.extend(row.into_bytes());
                        bytes.push(b'\n');
                    }
                }
                let _ = conn.close().await;
                bytes
            }
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        self.database.cleanup();
    }
}

/// An HTTP client for one daemon, optionally with a bearer key.
#[derive(Debug, Clone)]
pub struct TestClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl TestClient {
    /// The same client with `token` as its bearer key.
    pub fn with_token(&self, token: &str) -> TestClient {
        TestClient { token: Some(token.to_owned()), ..self.clone() }
    }

    /// The same client without a key.
    pub fn without_token(&self) -> TestClient {
        TestClient { token: None, ..self.clone() }
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A raw request, with the bearer key if the client has one.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, self.url(path));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a raw request and reads the whole response.
    pub async fn send(&self, builder: RequestBuilder) -> TestResponse {
        let request = builder.build().expect("a valid request");
        let method = request.method().to_string();
        let path = request.url().path().to_owned();
        let response = self
            .http
            .execute(request)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: request failed: {e:?}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: cannot read the body: {e:?}"))
            .to_vec();
        TestResponse { method, path, status, headers, body }
    }

    /// `GET path`, whatever its status.
    pub async fn get_raw(&self, path: &str) -> TestResponse {
        self.send(self.request(Method::GET, path)).await
    }

    /// `POST path` with a JSON body, whatever its status.
    pub async fn post_json_raw(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.request(Method::POST, path).json(body)).await
    }

    /// `DELETE path`, whatever its status.
    pub async fn delete_raw(&self, path: &str) -> TestResponse {
        self.send(self.request(Method::DELETE, path)).await
    }

    /// `PATCH path` with a JSON body, whatever its status.
    pub async fn patch_json_raw(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.request(Method::PATCH, path).json(body)).await
    }

    /// `PUT path` with a JSON body, whatever its status.
    pub async fn put_json_raw(&self, path: &str, body: &Value) -> TestResponse {
        self.send(self.request(Method::PUT, path).json(body)).await
    }

    /// `POST path` without a body, whatever its status.
    pub async fn post_empty_raw(&self, path: &str) -> TestResponse {
        self.send(self.request(Method::POST, path)).await
    }

    /// `POST path` with `body` sent as `content_type`, whatever its status.
    pub async fn post_body_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> TestResponse {
        self.send(
            self.request(Method::POST, path)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(body),
        )
        .await
    }

    /// `GET path`; asserts the status and returns the decoded body.
    pub async fn get(&self, path: &str, expected_status: u16) -> Value {
        self.get_raw(path).await.expect_status(expected_status).json()
    }

    /// `POST path` with a JSON body; asserts the status and returns the decoded body.
    pub async fn post_json(&self, path: &str, body: &Value, expected_status: u16) -> Value {
        self.post_json_raw(path, body).await.expect_status(expected_status).json()
    }

    /// `PATCH path` with a JSON body; asserts the status and returns the decoded body.
    pub async fn patch_json(&self, path: &str, body: &Value, expected_status: u16) -> Value {
        self.patch_json_raw(path, body).await.expect_status(expected_status).json()
    }

    /// `PUT path` with a JSON body; asserts the status and returns the decoded body.
    pub async fn put_json(&self, path: &str, body: &Value, expected_status: u16) -> Value {
        self.put_json_raw(path, body).await.expect_status(expected_status).json()
    }

    /// `DELETE path`; asserts the status and returns the decoded body (`null` when empty).
    pub async fn delete(&self, path: &str, expected_status: u16) -> Value {
        self.delete_raw(path).await.expect_status(expected_status).json()
    }
}

/// A whole response.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// The request method, for messages.
    pub method: String,
    /// The request path, for messages.
    pub path: String,
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Vec<u8>,
}

impl TestResponse {
    /// The body as text (lossy), for messages and HTML.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, if present and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of a header.
    pub fn header_all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The `x-request-id` header; panics when it is missing.
    pub fn request_id(&self) -> &str {
        self.header(sspr_api::REQUEST_ID_HEADER).unwrap_or_else(|| {
            panic!(
                "{} {} -> {}: no {} header; headers: {:?}",
                self.method,
                self.path,
                self.status,
                sspr_api::REQUEST_ID_HEADER,
                self.headers
            )
        })
    }

    /// Panics, showing the body, unless the status is `expected`.
    pub fn expect_status(self, expected: u16) -> Self {
        assert_eq!(
            self.status,
            expected,
            "{} {}: expected {expected}, got {}; body: {}",
            self.method,
            self.path,
            self.status,
            self.text()
        );
        self
    }

    /// The body as JSON; `null` when the body is empty.
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} -> {}: body is not JSON ({e}): {}",
                self.method,
                self.path,
                self.status,
                self.text()
            )
        })
    }

    /// Asserts a problem+json response with `status` and `code` (RFC 9457 fields included) and
    /// returns its body.
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        let what = format!("{} {}", self.method, self.path);
        assert_eq!(
            self.status,
            status,
            "{what}: expected {status} {code}, got {}; body: {}",
            self.status,
            self.text()
        );
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with(PROBLEM_JSON),
            "{what} -> {status}: content-type is {content_type:?}, not {PROBLEM_JSON}; body: {}",
            self.text()
        );
        let body = self.json();
        assert_eq!(body["code"], code, "{what}: wrong code in {body}");
        assert_eq!(body["status"], status, "{what}: wrong status in {body}");
        assert_eq!(
            body["type"],
            format!("urn:sspr-fleet:problem:{code}"),
            "{what}: wrong type in {body}"
        );
        assert!(body["title"].as_str().is_some_and(|t| !t.is_empty()), "{what}: no title: {body}");
        body
    }
}

/// The `(field, code)` pairs of a validation problem's `errors[]`.
pub fn field_errors(problem: &Value) -> Vec<(String, String)> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    assert!(
                        e["message"].as_str().is_some_and(|m| !m.is_empty()),
                        "field error without a message: {e}"
                    );
                    (
                        e["field"].as_str().unwrap_or_default().to_owned(),
                        e["code"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}
