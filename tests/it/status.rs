//! The HTML status pages (`/status`, `/status/rollouts/{id}`): over plain HTTP (Basic and bearer
//! keys, 401 challenges, escaping, restricted keys, security headers, errors that stay HTML),
//! and in headless Chromium, which is given the key as Basic credentials in the URL and whose
//! DOM and screenshot are checked against the JSON API.
//!
//! The rollout under test stands still while the pages are read: four tenants in two waves, an
//! approval gate, so wave 0 holds one tenant at its gate and one unlicensed tenant blocked, and
//! wave 1 waits with two tenants pending.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::json;
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{SimHandle, TestApp, TestClient, TestResponse, spawn_app_with_sim};
use sspr_graph_sim::scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET};

use crate::engine::{attest_open_tasks, rollout_spec};

/// A tenant display name that must come out as text, never as markup.
const HOSTILE_NAME: &str = "<script>alert(\"x\")</script> & 'Co'";

/// The tenants: (display name, licence, tag).
const TENANTS: [(&str, &str, &str); 5] = [
    ("Contoso Ready", "business_premium", "fleet"),
    ("Fabrikam Unlicensed", "none", "fleet"),
    ("Northwind Waiting", "e3", "fleet"),
    (HOSTILE_NAME, "e5", "fleet"),
    ("Outside Traders", "p1", "other"),
];

const FAST: &[(&str, &str)] = &[
    ("SSPR_FLEET_ENGINE__WAIT_POLL_MS", "150"),
    ("SSPR_FLEET_ENGINE__ADVANCE_MS", "150"),
    ("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "50"),
    ("SSPR_FLEET_ENGINE__RETRY_BASE_MS", "200"),
    ("SSPR_FLEET_ENGINE__RETRY_MAX_MS", "2000"),
];

const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("content-security-policy", "default-src 'none'; style-src 'unsafe-inline'"),
    ("x-frame-options", "DENY"),
    ("cache-control", "no-store"),
    ("referrer-policy", "no-referrer"),
];

fn entra(i: usize) -> String {
    format!("5a5a5a5a-0000-4000-8000-{i:012}")
}

struct Fixture {
    app: TestApp,
    _sim: SimHandle,
    admin: TestClient,
    admin_token: String,
    /// Tenant ids, in the order of [`TENANTS`].
    ids: Vec<String>,
    rollout: String,
}

/// Onboards the tenants, starts a rollout over the `fleet` ones with an approval gate, and
/// waits until it stands still: wave 0 = gate + blocked, wave 1 = two pending.
async fn fixture() -> Fixture {
    let mut scenario = String::from("seed = 7\n");
    for (i, (_, licence, _)) in TENANTS.iter().enumerate() {
        scenario.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Sim {i}\"\ndomain = \"s{i}.onmicrosoft.com\"\nusers = 10\nlicence = \"{licence}\"\n",
            entra(i)
        ));
    }
    let (app, sim) = spawn_app_with_sim(&scenario, FAST).await;
    let admin_token = app.admin_key().await;
    let admin = app.client_with(&admin_token);
    let mut ids = Vec::new();
    for (i, (name, _, tag)) in TENANTS.iter().enumerate() {
        let body = json!({
            "entra_tenant": entra(i), "display_name": name, "tags": [tag],
            "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        });
        let t = admin.post_json("/v1/tenants?verify=true", &body, 201).await;
        assert_eq!(t["display_name"], *name, "the display name is kept as given: {t}");
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    let mut spec = rollout_spec(0, 2, 10);
    spec["name"] = json!("Status page rollout");
    spec["gates"] = json!({"soak_minutes": 0, "approval": "per_tenant"});
    let created = admin.post_json("/v1/rollouts", &spec, 201).await;
    let rollout = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["wave_count"], 2, "{created}");

    let entra_of: BTreeMap<String, String> =
        ids.iter().enumerate().map(|(i, id)| (id.clone(), entra(i))).collect();
    let mut set_at = BTreeMap::new();
    let start = std::time::Instant::now();
    loop {
        attest_open_tasks(&admin, &sim, &entra_of, &mut set_at).await;
        let r = admin.get(&format!("/v1/rollouts/{rollout}"), 200).await;
        if r["counts"] == json!({"gate": 1, "blocked": 1, "pending": 2}) {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the rollout did not settle: {r}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Fixture { app, _sim: sim, admin, admin_token, ids, rollout }
}

/// `GET path` with the key as the Basic password.
async fn get_basic(client: &TestClient, path: &str, key: &str) -> TestResponse {
    client.send(client.request(reqwest::Method::GET, path).basic_auth("browser", Some(key))).await
}

fn assert_page_headers(r: &TestResponse) {
    for (name, value) in SECURITY_HEADERS {
        assert_eq!(r.header(name), Some(value), "{} {} -> {}: {name}", r.method, r.path, r.status);
    }
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(content_type.starts_with("text/html"), "{} {}: {content_type}", r.method, r.path);
    r.request_id();
}

/// The `<tr>` of one tenant in a page or DOM.
fn tenant_row<'a>(html: &'a str, tenant_id: &str) -> Option<&'a str> {
    let start = html.find(&format!("data-tenant=\"{tenant_id}\""))?;
    let end = html[start..].find("</tr>")?;
    Some(&html[start..start + end])
}

fn tenant_rows(html: &str) -> usize {
    html.matches("data-tenant=\"").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_pages_over_http_authenticate_escape_and_respect_a_keys_reach() {
    let f = fixture().await;
    let anonymous = f.app.client();
    let page = format!("/status/rollouts/{}", f.rollout);

    // No key: a Basic challenge and a short HTML page, with the security headers.
    for path in ["/status", page.as_str()] {
        let r = anonymous.get_raw(path).await.expect_status(401);
        assert_eq!(
            r.header("www-authenticate"),
            Some("Basic realm=\"sspr-fleet status\", charset=\"UTF-8\"")
        );
        assert_page_headers(&r);
        assert!(r.text().contains("<h1>Sign in</h1>"), "{}", r.text());
        assert!(!r.text().contains("Status page rollout"));
    }
    // A wrong key, well formed or not, and a key in the user name instead: 401 as well.
    let unknown = format!("sfk_{}", "A".repeat(43));
    for key in [unknown.as_str(), "sfk_short", ""] {
        let r = get_basic(&anonymous, &page, key).await.expect_status(401);
        assert!(r.header("www-authenticate").is_some_and(|v| v.starts_with("Basic ")));
    }
    let r = anonymous
        .send(anonymous.request(reqwest::Method::GET, &page).basic_auth(&f.admin_token, Some("")))
        .await;
    assert_eq!(r.status, 401);

    // The key as the Basic password (any user name), or as a bearer key.
    let list = get_basic(&anonymous, "/status", &f.admin_token).await.expect_status(200);
    assert_page_headers(&list);
    let list = list.text();
    assert!(list.contains("<meta http-equiv=\"refresh\" content=\"5\">"), "{list}");
    assert!(list.contains("Rendered at "), "{list}");
    assert!(list.contains("Status page rollout"), "{list}");
    assert!(list.contains(&format!("href=\"/status/rollouts/{}\"", f.rollout)), "{list}");
    let bearer = f.admin.get_raw(&page).await.expect_status(200);
    assert_page_headers(&bearer);
    let html = bearer.text();

    // The tenants' names are text: the hostile one is escaped, never markup.
    assert!(!html.contains("<script"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;Co&#39;"),
        "{html}"
    );
    assert_eq!(tenant_rows(&html), 4, "{html}");
    for (i, id) in f.ids.iter().enumerate().take(4) {
        let row = tenant_row(&html, id).unwrap_or_else(|| panic!("no row for {id}: {html}"));
        assert!(row.contains(&sspr_escape(TENANTS[i].0)), "{row}");
    }
    assert!(html.contains("license_missing"), "{html}");
    assert!(html.contains("class=\"wave current\" data-wave=\"0\""), "{html}");
    assert!(html.contains("class=\"wave\" data-wave=\"1\""), "{html}");

    // HEAD is answered like GET; other methods get 405 with Allow, from the route table.
    let head = f.admin.send(f.admin.request(reqwest::Method::HEAD, &page)).await;
    assert_eq!(head.status, 200);
    let post = f.admin.post_json_raw("/status", &json!({})).await;
    post.expect_problem(405, "method_not_allowed");
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    // The pages are not part of the JSON API's document.
    let doc = f.admin.get("/openapi.json", 200).await;
    assert!(doc["paths"].as_object().unwrap().keys().all(|p| !p.starts_with("/status")));
    // The API itself still answers problem+json with a bearer challenge.
    anonymous.get_raw("/v1/rollouts").await.expect_problem(401, "unauthorized");

    // Unknown, malformed and hostile ids: a 404 page, never a 500, with the headers.
    let missing = f.admin.get_raw("/status/rollouts/rol_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e").await;
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_page_headers(&missing);
    let long = format!("/status/rollouts/rol_{}", "9".repeat(300));
    for path in ["/status/rollouts/nonsense", "/status/rollouts/%3Cscript%3E", long.as_str()] {
        let r = f.admin.get_raw(path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.text());
        assert_eq!(r.body, missing.body, "{path}");
        assert!(!r.text().contains("<script"), "{path}");
    }

    // A viewer key restricted to one tenant of wave 1: the rollout, that tenant only, counts
    // included, and none of the other tenants' names or reasons.
    let one = [f.ids[2].parse::<TenantId>().unwrap()];
    let restricted = f.app.key_with(Role::Viewer, Some(&one)).await;
    let html = get_basic(&anonymous, &page, &restricted).await.expect_status(200).text();
    assert_eq!(tenant_rows(&html), 1, "{html}");
    assert!(tenant_row(&html, &f.ids[2]).is_some_and(|r| r.contains(">pending<")), "{html}");
    for hidden in [0, 1, 3] {
        assert!(!html.contains(&f.ids[hidden]), "tenant {hidden} leaked: {html}");
    }
    assert!(!html.contains("Contoso") && !html.contains("Fabrikam"), "{html}");
    assert!(!html.contains("license_missing"), "{html}");
    assert!(html.contains("<dt>Tenants</dt><dd>1</dd>"), "{html}");
    let list = get_basic(&anonymous, "/status", &restricted).await.expect_status(200).text();
    assert!(list.contains("Status page rollout"), "{list}");
    assert!(list.contains("pending <b>1</b>"), "{list}");
    assert!(!list.contains("gate <b>"), "{list}");

    // A key whose tenant is in no rollout: nothing listed, and the rollout is a 404 exactly
    // like an id that does not exist.
    let outside = [f.ids[4].parse::<TenantId>().unwrap()];
    let outsider = f.app.key_with(Role::Viewer, Some(&outside)).await;
    let list = get_basic(&anonymous, "/status", &outsider).await.expect_status(200).text();
    assert!(!list.contains("Status page rollout"), "{list}");
    assert!(list.contains("No rollout within your reach"), "{list}");
    let hidden = get_basic(&anonymous, &page, &outsider).await;
    assert_eq!(hidden.status, 404);
    assert_eq!(hidden.body, missing.body);
}

/// The server's escaping, as the tests expect it in a raw response.
fn sspr_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// How a browser serialises text back into markup: only `&`, `<` and `>` escaped.
fn dom_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Where screenshots go: `$CARGO_TARGET_DIR/screenshots`, or the workspace's `target/`.
fn screenshot_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"))
        .join("screenshots")
}

/// Whether the `chromium` command exists.
async fn chromium_installed() -> bool {
    match tokio::process::Command::new("chromium").arg("--version").output().await {
        Ok(out) => out.status.success(),
        Err(_) => false,
    }
}

/// Runs headless Chromium with `args` (90 seconds at most; it is killed after that) and
/// returns its standard output.
async fn chromium(profile: &Path, args: &[&str]) -> String {
    let mut command = tokio::process::Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(90), command.output())
        .await
        .unwrap_or_else(|_| panic!("chromium {args:?} did not finish in 90 s"))
        .unwrap_or_else(|e| panic!("chromium {args:?}: {e}"));
    assert!(
        output.status.success(),
        "chromium {args:?} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headless_chromium_shows_the_rollout_as_the_api_reports_it() {
    if !chromium_installed().await {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "chromium is not installed; CI must install it (apt-get install chromium)"
        );
        eprintln!(
            "\n\n!!! SKIPPED: chromium is not installed, so the status page was not checked in a \
             browser. Install it with `apt-get install -y chromium`. !!!\n\n"
        );
        return;
    }
    let f = fixture().await;
    let profile = tempfile::tempdir().unwrap();
    // Chromium first asks without credentials, gets the Basic challenge, then answers it with
    // the user name and password of the URL.
    let url = format!(
        "http://viewer:{}@127.0.0.1:{}/status/rollouts/{}",
        f.admin_token,
        f.app.addr.port(),
        f.rollout
    );
    let dom = chromium(profile.path(), &["--dump-dom", &url]).await;
    assert!(dom.contains("Status page rollout"), "not signed in? {dom}");
    assert!(dom.contains("<span class=\"badge rollout-state s-working\">running</span>"), "{dom}");
    assert!(dom.contains("data-wave=\"0\"") && dom.contains("data-wave=\"1\""), "{dom}");
    assert!(dom.contains("license_missing"), "{dom}");
    assert!(!dom.contains("<script"), "a tenant's name became markup: {dom}");

    // Every tenant the API lists is on the page with its name and the state the API reports.
    let tenants = f.admin.get(&format!("/v1/rollouts/{}/tenants", f.rollout), 200).await;
    let items = tenants["items"].as_array().unwrap();
    assert_eq!(items.len(), 4, "{tenants}");
    assert_eq!(tenant_rows(&dom), items.len(), "{dom}");
    let name_of: BTreeMap<&str, &str> =
        f.ids.iter().zip(TENANTS.iter()).map(|(id, t)| (id.as_str(), t.0)).collect();
    for t in items {
        let id = t["tenant_id"].as_str().unwrap();
        let state = t["state"].as_str().unwrap();
        let row = tenant_row(&dom, id).unwrap_or_else(|| panic!("no row for {id}: {dom}"));
        assert!(row.contains(&dom_escape(name_of[id])), "{id}: {row}");
        assert!(row.contains(&format!(">{state}</span>")), "{id} should be {state}: {row}");
        if state == "blocked" {
            assert!(row.contains("license_missing"), "{row}");
        }
    }

    // The screenshot of the same page: a PNG of a plausible size.
    let dir = screenshot_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("status.png");
    let _ = std::fs::remove_file(&file);
    let target = format!("--screenshot={}", file.display());
    chromium(profile.path(), &[&target, &url]).await;
    let png = std::fs::read(&file).unwrap_or_else(|e| panic!("no screenshot at {file:?}: {e}"));
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    // Width and height from the IHDR chunk.
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (1280, 1000), "unexpected screenshot size");
    assert!(png.len() > 20_000, "a nearly empty page? {} bytes", png.len());
    println!("status page screenshot: {}", file.display());
    eprintln!("status page screenshot: {}", file.display());

    // The list page, through the same credentials, links to the rollout.
    let list_url = url.replace(&format!("/status/rollouts/{}", f.rollout), "/status");
    let dom = chromium(profile.path(), &["--dump-dom", &list_url]).await;
    assert!(dom.contains(&format!("href=\"/status/rollouts/{}\"", f.rollout)), "{dom}");
    assert!(dom.contains("gate <b>1</b>") && dom.contains("blocked <b>1</b>"), "{dom}");
    let file = dir.join("status-list.png");
    let target = format!("--screenshot={}", file.display());
    chromium(profile.path(), &[&target, &list_url]).await;
    assert!(std::fs::read(&file).is_ok_and(|png| png.starts_with(b"\x89PNG")), "{file:?}");
    println!("status list screenshot: {}", file.display());
}
