//! SSPR readiness reports over real HTTP against the Graph simulator: figures checked against
//! the truth read straight from the simulator, CSV against JSON, the licence limit, on-demand
//! and scheduled refreshes, restricted keys, and bad input.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{SimHandle, TestApp, TestClient, field_errors, spawn_app_with_sim};
use sspr_graph_sim::{
    Enablement, Faults, LegacySspr,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};

fn entra(i: usize) -> String {
    format!("0e0e0e0e-0000-4000-8000-{i:012}")
}

/// (licence, users, admins, guests, legacy enablement) per tenant.
const FLEET: [(&str, u32, u32, u32, &str); 4] = [
    ("p1", 250, 3, 20, "all"),
    ("e5", 130, 2, 0, "none"),
    ("business_standard", 60, 1, 5, "all"),
    ("p2", 40, 2, 4, "all"),
];

/// The fleet with a frozen simulated clock, so that nothing changes between two reads.
fn scenario(fleet: &[(&str, u32, u32, u32, &str)]) -> String {
    // The reporting APIs' buckets are off: a frozen clock never refills them, and these tests
    // read one tenant's reports more than 5 times.
    let mut s = String::from(
        "seed = 11\n[settings]\ntime_speed = 0.0\n[settings.throttle]\nreports = false\n",
    );
    for (i, (licence, users, admins, guests, legacy)) in fleet.iter().enumerate() {
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Report {i}\"\ndomain = \"r{i}.onmicrosoft.com\"\n\
             users = {users}\nadmins = {admins}\nguests = {guests}\nlicence = \"{licence}\"\n\
             mfa_registered_share = 0.4\nlegacy = {{ enablement = \"{legacy}\" }}\n",
            entra(i)
        ));
    }
    s
}

async fn start(
    fleet: &[(&str, u32, u32, u32, &str)],
    extra: &[(&str, &str)],
) -> (TestApp, SimHandle, TestClient, Vec<String>) {
    let mut env = vec![
        ("SSPR_FLEET_REPORTING__SCHEDULED_REFRESH", "false"),
        ("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "50"),
    ];
    env.extend_from_slice(extra);
    let (app, sim) = spawn_app_with_sim(&scenario(fleet), &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let mut ids = Vec::new();
    for i in 0..fleet.len() {
        let body = json!({
            "entra_tenant": entra(i), "display_name": format!("Report {i}"),
            "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        });
        let t = admin.post_json("/v1/tenants", &body, 201).await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    (app, sim, admin, ids)
}

/// What the simulator itself says, read over HTTP with a token of our own, counted here
/// independently of the daemon's aggregator.
#[derive(Debug, Default, PartialEq)]
struct Truth {
    /// users, enabled, registered, capable
    all: [u64; 4],
    admins: [u64; 4],
    non_admins: [u64; 4],
    members: [u64; 4],
    guests: [u64; 4],
    methods: BTreeMap<String, u64>,
    pages: u64,
}

async fn truth(sim: &SimHandle, tenant: &str) -> Truth {
    let http = sspr_fleet_tests::reqwest::Client::builder().no_proxy().build().unwrap();
    let base = sim.base_url();
    let token: Value = http
        .post(format!("{base}/{tenant}/oauth2/v2.0/token"))
        .form(&[
            ("client_id", DEFAULT_CLIENT_ID),
            ("client_secret", DEFAULT_CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = token["access_token"].as_str().expect("a token from the simulator").to_owned();
    let mut url =
        Some(format!("{base}/v1.0/reports/authenticationMethods/userRegistrationDetails"));
    let mut t = Truth::default();
    while let Some(next) = url.take() {
        let page: Value =
            http.get(&next).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        t.pages += 1;
        for u in page["value"].as_array().expect("a page of users") {
            let b = |k: &str| u64::from(u[k].as_bool().unwrap_or(false));
            let row = [1, b("isSsprEnabled"), b("isSsprRegistered"), b("isSsprCapable")];
            let add = |to: &mut [u64; 4]| to.iter_mut().zip(row).for_each(|(a, r)| *a += r);
            add(&mut t.all);
            add(if u["isAdmin"] == true { &mut t.admins } else { &mut t.non_admins });
            add(if u["userType"] == "guest" { &mut t.guests } else { &mut t.members });
            for m in u["methodsRegistered"].as_array().unwrap() {
                *t.methods.entry(m.as_str().unwrap().to_owned()).or_insert(0) += 1;
            }
        }
        url = page["@odata.nextLink"].as_str().map(str::to_owned);
    }
    t
}

fn counts(v: &Value) -> [u64; 4] {
    ["users", "sspr_enabled", "sspr_registered", "sspr_capable"]
        .map(|k| v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}")))
}

fn assert_figures(figures: &Value, t: &Truth) {
    assert_eq!(counts(&figures["all"]), t.all, "all: {figures}");
    assert_eq!(counts(&figures["admins"]), t.admins, "admins: {figures}");
    assert_eq!(counts(&figures["non_admins"]), t.non_admins, "non-admins: {figures}");
    assert_eq!(counts(&figures["members"]), t.members, "members: {figures}");
    assert_eq!(counts(&figures["guests"]), t.guests, "guests: {figures}");
    let methods: BTreeMap<String, u64> =
        serde_json::from_value(figures["methods"].clone()).unwrap();
    assert_eq!(methods, t.methods);
    let expected = (t.all[3] as f64 * 1000.0 / t.all[0] as f64).round() / 10.0;
    assert_eq!(figures["all"]["percent"]["sspr_capable"].as_f64(), Some(expected));
    assert!(figures["read_at"].is_string(), "every figure says when it was read: {figures}");
}

/// Waits until `check` accepts the tenant's report.
async fn wait_report(client: &TestClient, id: &str, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let report = client.get(&format!("/v1/reports/sspr/{id}"), 200).await;
        if check(&report) {
            return report;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "report never got there: {report}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn csv_rows(text: &str) -> (Vec<String>, Vec<BTreeMap<String, String>>) {
    let mut lines = text.lines();
    let header: Vec<String> = lines.next().unwrap().split(',').map(str::to_owned).collect();
    let rows = lines
        .map(|l| {
            // No cell of these tests holds a comma or a quote.
            header.iter().cloned().zip(l.split(',').map(str::to_owned)).collect()
        })
        .collect();
    (header, rows)
}

async fn get_csv(client: &TestClient, path: &str) -> String {
    let res = client
        .send(
            client
                .request(sspr_fleet_tests::reqwest::Method::GET, path)
                .header("accept", "text/csv"),
        )
        .await
        .expect_status(200);
    assert!(res.header("content-type").unwrap().starts_with("text/csv"), "{:?}", res.headers);
    res.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_figures_match_the_simulator_in_json_and_csv() {
    let (_app, sim, admin, ids) = start(&FLEET, &[]).await;

    // Before any refresh: every tenant is pending, with no figures.
    let fleet = admin.get("/v1/reports/sspr", 200).await;
    assert_eq!(fleet["totals"]["tenants"], 4);
    assert_eq!(fleet["totals"]["by_status"], json!({"pending": 4}));
    assert!(fleet["totals"]["figures"].is_null());
    let one = admin.get(&format!("/v1/reports/sspr/{}", ids[0]), 200).await;
    assert_eq!((one["status"].as_str(), &one["figures"]), (Some("pending"), &Value::Null));

    // Refresh everything (no body).
    let accepted = admin.post_empty_raw("/v1/reports/sspr:refresh").await.expect_status(202).json();
    assert_eq!(accepted, json!({"tenants": 4, "enqueued": 4, "already_queued": 0}));
    let mut reports = Vec::new();
    for id in &ids {
        reports.push(wait_report(&admin, id, |r| r["status"] != "pending").await);
    }

    // Premium tenants: the figures are the simulator's truth; pages as the simulator paged.
    let mut total = Truth::default();
    for i in [0, 1, 3] {
        let t = truth(&sim, &entra(i)).await;
        assert_eq!(reports[i]["status"], "ok", "{}", reports[i]);
        assert!(reports[i]["reason"].is_null());
        assert_eq!(t.all[0], u64::from(FLEET[i].1));
        assert_figures(&reports[i]["figures"], &t);
        assert_eq!(reports[i]["pages"], t.pages);
        for (sum, part) in [
            (&mut total.all, t.all),
            (&mut total.admins, t.admins),
            (&mut total.non_admins, t.non_admins),
            (&mut total.members, t.members),
            (&mut total.guests, t.guests),
        ] {
            sum.iter_mut().zip(part).for_each(|(s, p)| *s += p);
        }
        for (m, n) in t.methods {
            *total.methods.entry(m).or_insert(0) += n;
        }
    }
    assert!(total.all[1] > 0 && total.all[1] < total.all[0], "a mix of enabled users: {total:?}");
    assert!(!total.methods.is_empty());

    // Business Standard has no P1/P2: Graph refuses the report.
    assert_eq!(reports[2]["status"], "unavailable");
    assert_eq!(reports[2]["reason"], "reports_need_premium");
    assert!(reports[2]["figures"].is_null());

    // Totals: the sum over the tenants with figures, with the oldest and newest read times.
    let fleet = admin.get("/v1/reports/sspr", 200).await;
    let totals = &fleet["totals"];
    assert_eq!(totals["by_status"], json!({"ok": 3, "unavailable": 1}));
    assert_eq!(totals["tenants_with_figures"], 3);
    total.pages = 0;
    let mut sum_figures = totals["figures"].clone();
    sum_figures["read_at"] = totals["oldest_read_at"].clone();
    assert_figures(&sum_figures, &total);
    let read: Vec<chrono::DateTime<chrono::Utc>> = [0, 1, 3]
        .iter()
        .map(|i| reports[*i]["figures"]["read_at"].as_str().unwrap().parse().unwrap())
        .collect();
    let at = |v: &Value| v.as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert_eq!(at(&totals["oldest_read_at"]), *read.iter().min().unwrap());
    assert_eq!(at(&totals["newest_read_at"]), *read.iter().max().unwrap());

    // Pages of two, by tenant id, cover every tenant once; totals do not depend on the page.
    let first = admin.get("/v1/reports/sspr?limit=2", 200).await;
    assert_eq!(first["tenants"].as_array().unwrap().len(), 2);
    assert_eq!(first["totals"], fleet["totals"]);
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = admin.get(&format!("/v1/reports/sspr?limit=2&cursor={cursor}"), 200).await;
    assert!(second["next_cursor"].is_null());
    let mut paged: Vec<String> = first["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["tenants"].as_array().unwrap())
        .map(|t| t["tenant_id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(paged, sorted);
    paged.dedup();
    assert_eq!(paged.len(), 4);

    // The CSV has a header and one row per tenant, agreeing with the JSON.
    let text = get_csv(&admin, "/v1/reports/sspr").await;
    let (header, rows) = csv_rows(&text);
    assert_eq!(header[0], "tenant_id");
    assert!(header.contains(&"method_mobilePhone".to_owned()));
    assert_eq!(rows.len(), 4);
    for row in &rows {
        let i = ids.iter().position(|id| *id == row["tenant_id"]).unwrap();
        let r = &reports[i];
        assert_eq!(row["status"], r["status"].as_str().unwrap());
        assert_eq!(row["reason"], r["reason"].as_str().unwrap_or(""));
        assert_eq!(row["display_name"], format!("Report {i}"));
        if r["figures"].is_null() {
            assert_eq!((row["users"].as_str(), row["read_at"].as_str()), ("", ""));
            continue;
        }
        let f = &r["figures"];
        assert_eq!(at(&json!(row["read_at"])), at(&f["read_at"]));
        for (group, prefix) in [("all", ""), ("admins", "admins_"), ("guests", "guests_")] {
            let c = counts(&f[group]);
            let col = |k: &str| row[&format!("{prefix}{k}")].parse::<u64>().unwrap();
            let users = if prefix.is_empty() { col("users") } else { row[group].parse().unwrap() };
            assert_eq!(
                [users, col("sspr_enabled"), col("sspr_registered"), col("sspr_capable")],
                c,
                "{group} of {row:?}"
            );
        }
        for (method, n) in f["methods"].as_object().unwrap() {
            assert_eq!(row[&format!("method_{method}")], n.to_string(), "{method}");
        }
    }

    // One tenant's CSV is the header and the same row.
    let single = get_csv(&admin, &format!("/v1/reports/sspr/{}", ids[1])).await;
    let (h, one_row) = csv_rows(&single);
    assert_eq!(h, header);
    assert_eq!(one_row.len(), 1);
    assert!(rows.contains(&one_row[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_demand_refresh_reflects_changes_and_a_failure_keeps_the_last_figures() {
    let fleet = [("p1", 120, 2, 10, "none")];
    let (_app, sim, admin, ids) = start(&fleet, &[]).await;
    let id = &ids[0];
    let body = json!({"tenant_ids": [id]});
    admin.post_json("/v1/reports/sspr:refresh", &body, 202).await;
    let before = wait_report(&admin, id, |r| r["status"] == "ok").await;
    assert_figures(&before["figures"], &truth(&sim, &entra(0)).await);

    // A technician enables SSPR for everyone; the next refresh shows it and moves read_at.
    let policy =
        LegacySspr { enablement: Enablement::All, ..sim.sim.legacy_sspr(&entra(0)).unwrap() };
    sim.sim.set_legacy_sspr(&entra(0), policy).unwrap();
    let now_truth = truth(&sim, &entra(0)).await;
    assert_ne!(counts(&before["figures"]["all"]), now_truth.all, "the change shows in Graph");
    let accepted = admin.post_json("/v1/reports/sspr:refresh", &body, 202).await;
    assert_eq!(accepted["enqueued"], 1);
    let read_at = before["figures"]["read_at"].clone();
    let after = wait_report(&admin, id, |r| r["figures"]["read_at"] != read_at).await;
    assert_eq!(after["status"], "ok");
    assert_figures(&after["figures"], &now_truth);
    let t = |v: &Value| v.as_str().unwrap().parse::<chrono::DateTime<chrono::Utc>>().unwrap();
    assert!(t(&after["figures"]["read_at"]) > t(&read_at));

    // Consent revoked: the refresh fails with a stable code; the last figures stay as read.
    sim.sim.set_faults(&entra(0), Faults { consent_revoked: true, ..Faults::default() }).unwrap();
    admin.post_json("/v1/reports/sspr:refresh", &body, 202).await;
    let attempted = after["attempted_at"].clone();
    let failed = wait_report(&admin, id, |r| r["attempted_at"] != attempted).await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert_eq!(failed["reason"], "consent_missing");
    assert_eq!(failed["figures"], after["figures"], "the last good figures and their read_at stay");
    let fleet = admin.get("/v1/reports/sspr", 200).await;
    assert_eq!(fleet["totals"]["by_status"], json!({"error": 1}));
    assert_eq!(fleet["totals"]["figures"]["all"], after["figures"]["all"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_refresh_reports_new_tenants_without_being_asked() {
    let fleet = [("p2", 30, 1, 2, "all")];
    let (_app, sim, admin, ids) = start(
        &fleet,
        &[
            ("SSPR_FLEET_REPORTING__SCHEDULED_REFRESH", "true"),
            ("SSPR_FLEET_REPORTING__CHECK_EVERY_SECS", "1"),
        ],
    )
    .await;
    let report = wait_report(&admin, &ids[0], |r| r["status"] == "ok").await;
    assert_figures(&report["figures"], &truth(&sim, &entra(0)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restricted_key_sees_only_its_tenants_in_rows_and_totals() {
    let (app, _sim, admin, ids) = start(&FLEET, &[]).await;
    admin.post_empty_raw("/v1/reports/sspr:refresh").await.expect_status(202);
    let mut reports = Vec::new();
    for id in &ids {
        reports.push(wait_report(&admin, id, |r| r["status"] != "pending").await);
    }
    let mine: Vec<TenantId> = [0, 2].iter().map(|i| ids[*i].parse().unwrap()).collect();
    let viewer = app.client_with(&app.key_with(Role::Viewer, Some(&mine)).await);
    let operator = app.client_with(&app.key_with(Role::Operator, Some(&mine)).await);

    let fleet = viewer.get("/v1/reports/sspr", 200).await;
    let mut seen: Vec<&str> = fleet["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant_id"].as_str().unwrap())
        .collect();
    seen.sort();
    let mut expected = vec![ids[0].as_str(), ids[2].as_str()];
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(fleet["totals"]["tenants"], 2);
    assert_eq!(fleet["totals"]["by_status"], json!({"ok": 1, "unavailable": 1}));
    assert_eq!(fleet["totals"]["tenants_with_figures"], 1);
    assert_eq!(fleet["totals"]["figures"]["all"], reports[0]["figures"]["all"]);
    assert_eq!(fleet["totals"]["figures"]["methods"], reports[0]["figures"]["methods"]);

    let (_, rows) = csv_rows(&get_csv(&viewer, "/v1/reports/sspr").await);
    let mut csv_ids: Vec<&str> = rows.iter().map(|r| r["tenant_id"].as_str()).collect();
    csv_ids.sort();
    assert_eq!(csv_ids, expected);

    // Another tenant is 404, exactly as one that does not exist.
    let other = viewer
        .get_raw(&format!("/v1/reports/sspr/{}", ids[1]))
        .await
        .expect_problem(404, "not_found");
    let missing = viewer
        .get_raw(&format!("/v1/reports/sspr/{}", TenantId::new()))
        .await
        .expect_problem(404, "not_found");
    assert_eq!(other["detail"], missing["detail"]);
    viewer.get(&format!("/v1/reports/sspr/{}", ids[0]), 200).await;

    // Refreshing: a viewer may not; an operator only within reach, and "all" means its own.
    viewer.post_empty_raw("/v1/reports/sspr:refresh").await.expect_problem(403, "forbidden_role");
    let p = operator
        .post_json_raw("/v1/reports/sspr:refresh", &json!({"tenant_ids": [ids[0], ids[1]]}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&p), vec![("tenant_ids[1]".to_owned(), "not_found".to_owned())]);
    let accepted =
        operator.post_empty_raw("/v1/reports/sspr:refresh").await.expect_status(202).json();
    assert_eq!(accepted["tenants"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_problems_never_500() {
    let (_app, _sim, admin, ids) = start(&FLEET[..1], &[]).await;
    for (query, field) in
        [("limit=0", "limit"), ("limit=501", "limit"), ("cursor=not-a-cursor", "cursor")]
    {
        let p = admin
            .get_raw(&format!("/v1/reports/sspr?{query}"))
            .await
            .expect_problem(422, "validation_failed");
        assert_eq!(field_errors(&p)[0].0, field, "{query}");
    }
    let res = admin.get_raw("/v1/reports/sspr?limit=abc").await;
    assert!(res.status == 400 || res.status == 422, "{}", res.status);
    res.expect_problem(res.status, res.json()["code"].as_str().unwrap());
    let res = admin.get_raw("/v1/reports/sspr?unknown=1").await;
    assert!(res.status == 400 || res.status == 422, "{}", res.status);
    res.expect_problem(res.status, res.json()["code"].as_str().unwrap());
    admin.get_raw("/v1/reports/sspr/ten_nope").await.expect_problem(404, "not_found");
    let res = admin
        .send(
            admin
                .request(sspr_fleet_tests::reqwest::Method::GET, "/v1/reports/sspr")
                .header("accept", "application/xml"),
        )
        .await;
    res.expect_problem(406, "not_acceptable");

    let post = |body: &'static str, ct: &'static str| {
        admin.send(
            admin
                .request(sspr_fleet_tests::reqwest::Method::POST, "/v1/reports/sspr:refresh")
                .header("content-type", ct)
                .body(body),
        )
    };
    post("{", "application/json").await.expect_problem(400, "malformed_json");
    post("{\"tenant_ids\": [1]}", "application/json")
        .await
        .expect_problem(422, "validation_failed");
    post("{\"tenants\": []}", "application/json").await.expect_problem(422, "validation_failed");
    let p = post("{\"tenant_ids\": []}", "application/json")
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&p)[0].0, "tenant_ids");
    let p = post("{\"tenant_ids\": [\"ten_x' OR 1=1\"]}", "application/json")
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&p), vec![("tenant_ids[0]".to_owned(), "not_found".to_owned())]);
    assert!(!p.to_string().contains("OR 1=1"), "the value is not echoed: {p}");
    post("tenant_ids=x", "text/plain").await.expect_problem(415, "unsupported_media_type");
    // Asking twice before the worker ran queues one job.
    let body = json!({"tenant_ids": [ids[0], ids[0]]});
    let accepted = admin.post_json("/v1/reports/sspr:refresh", &body, 202).await;
    assert_eq!(accepted["tenants"], 1);
}

/// Capable users without phone and phone-dependent ones, counted here from the simulator's
/// users by the rule of graph-facts §11, for (all, admins, non-admins, members, guests):
/// the methods that count for SSPR without `mobilePhone`/`officePhone`/`alternateMobilePhone`,
/// Authenticator notification and code as one, security questions not for administrators,
/// at least 2 for administrators and `required` for everyone else.
fn phone_truth(users: &[sspr_graph_sim::UserRegistration], required: u64) -> [(u64, u64); 5] {
    let mut out = [(0, 0); 5];
    for u in users.iter().filter(|u| u.is_sspr_capable) {
        let has = |m: &str| u.methods_registered.iter().any(|n| n == m);
        let authenticator = has("microsoftAuthenticatorPush") || has("softwareOneTimePasscode");
        let question = has("securityQuestion") && !u.is_admin;
        let without_phone =
            u64::from(authenticator) + u64::from(has("email")) + u64::from(question);
        let need = if u.is_admin { 2 } else { required };
        let ok = without_phone >= need;
        let slots = [0, if u.is_admin { 1 } else { 2 }, if u.is_guest { 4 } else { 3 }];
        for s in slots {
            if ok {
                out[s].0 += 1;
            } else {
                out[s].1 += 1;
            }
        }
    }
    out
}

const POPULATIONS: [&str; 5] = ["all", "admins", "non_admins", "members", "guests"];

fn phone_figures(figures: &Value) -> [(u64, u64); 5] {
    POPULATIONS.map(|p| {
        let n =
            |k: &str| figures[p][k].as_u64().unwrap_or_else(|| panic!("no {p}.{k} in {figures}"));
        (n("capable_without_phone"), n("phone_dependent"))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_dependence_matches_the_simulator_with_one_and_two_methods_required() {
    // Two premium tenants whose legacy policy requires 1 and 2 methods, with phone-only and
    // phone-mixed members, administrators and guests; every method allowed for SSPR.
    let mut s = String::from(
        "seed = 23\n[settings]\ntime_speed = 0.0\n[settings.throttle]\nreports = false\n",
    );
    for (i, required) in [1, 2].iter().enumerate() {
        s.push_str(&format!(
            "[[tenants]]\nid = \"{}\"\nname = \"Report {i}\"\ndomain = \"r{i}.onmicrosoft.com\"\n\
             users = 300\nadmins = 12\nguests = 30\nlicence = \"p1\"\n\
             mfa_registered_share = 0.5\nphone_only_share = 0.2\nphone_mixed_share = 0.3\n\
             methods = {{ sms = \"enabled\", voice = \"enabled\", email = \"enabled\", \
             microsoftAuthenticator = \"enabled\", softwareOath = \"enabled\" }}\n\
             legacy = {{ enablement = \"all\", methods_required = {required} }}\n",
            entra(i)
        ));
    }
    let env = [
        ("SSPR_FLEET_REPORTING__SCHEDULED_REFRESH", "false"),
        ("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "50"),
    ];
    let (app, sim) = spawn_app_with_sim(&s, &env).await;
    let admin = app.client_with(&app.admin_key().await);
    let mut ids = Vec::new();
    for i in 0..2 {
        let body = json!({
            "entra_tenant": entra(i), "display_name": format!("Report {i}"),
            "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        });
        let t = admin.post_json("/v1/tenants", &body, 201).await;
        ids.push(t["id"].as_str().unwrap().to_owned());
    }
    admin.post_empty_raw("/v1/reports/sspr:refresh").await.expect_status(202);

    let mut fleet_truth = [(0, 0); 5];
    let mut reports = Vec::new();
    for (i, required) in [1u64, 2].into_iter().enumerate() {
        let report = wait_report(&admin, &ids[i], |r| r["status"] != "pending").await;
        assert_eq!(report["status"], "ok", "{report}");
        let users = sim.sim.user_registrations(&entra(i)).unwrap();
        let expected = phone_truth(&users, required);
        // The data exercises every case: phone-dependent and phone-free members, capable
        // admins, guests (never SSPR-enabled by the users' setting in the simulator, so never
        // capable: their figures must be 0, not their registrations), and a methods-required
        // value that changes the figures.
        assert!(expected[3].0 > 0 && expected[3].1 > 0, "tenant {i}: {expected:?}");
        assert!(
            expected[1].0 > 0 && expected[1].1 > 0,
            "capable admins in tenant {i}: {expected:?}"
        );
        let guests = users.iter().filter(|u| u.is_guest).count() as u64;
        assert!(guests > 0, "guests in tenant {i}");
        assert_eq!(report["figures"]["guests"]["users"], guests);
        let figures = &report["figures"];
        assert_eq!(phone_figures(figures), expected, "tenant {i} (required {required}): {figures}");
        for p in POPULATIONS {
            let f = &figures[p];
            assert_eq!(
                f["capable_without_phone"].as_u64().unwrap()
                    + f["phone_dependent"].as_u64().unwrap(),
                f["sspr_capable"].as_u64().unwrap(),
                "{p}: {f}"
            );
        }
        // Nothing attested, no rollout: inferred from one-method users.
        assert_eq!(
            figures["methods_required"],
            json!({"value": required, "source": "inferred"}),
            "tenant {i}"
        );
        for (sum, part) in fleet_truth.iter_mut().zip(expected) {
            sum.0 += part.0;
            sum.1 += part.1;
        }
        reports.push(report);
    }
    // With 2 required, some members who would be fine with 1 depend on a phone.
    let two = sim.sim.user_registrations(&entra(1)).unwrap();
    assert_ne!(phone_truth(&two, 2)[2], phone_truth(&two, 1)[2], "the rule matters here");

    // Fleet totals sum the counts and say how many tenants used each value.
    let fleet = admin.get("/v1/reports/sspr", 200).await;
    let totals = &fleet["totals"];
    assert_eq!(phone_figures(&totals["figures"]), fleet_truth, "{totals}");
    assert_eq!(totals["tenants_by_methods_required"], json!({"1": 1, "2": 1}));
    assert!(totals["figures"]["methods_required"].is_null());

    // CSV carries the same figures as JSON.
    let (header, rows) = csv_rows(&get_csv(&admin, "/v1/reports/sspr").await);
    for col in [
        "methods_required",
        "methods_required_source",
        "phone_dependent",
        "guests_capable_without_phone",
    ] {
        assert!(header.iter().any(|h| h == col), "no {col} in {header:?}");
    }
    for report in &reports {
        let id = report["tenant_id"].as_str().unwrap();
        let row = rows.iter().find(|r| r["tenant_id"] == id).expect("a CSV row per tenant");
        let f = &report["figures"];
        assert_eq!(row["methods_required"], f["methods_required"]["value"].to_string());
        assert_eq!(row["methods_required_source"], "inferred");
        for p in POPULATIONS {
            let prefix = if p == "all" { String::new() } else { format!("{p}_") };
            for k in ["capable_without_phone", "phone_dependent"] {
                assert_eq!(row[&format!("{prefix}{k}")], f[p][k].to_string(), "{p}.{k}");
            }
        }
    }

    // /metrics shows the fleet figures.
    let metrics = admin
        .send(admin.request(sspr_fleet_tests::reqwest::Method::GET, "/metrics"))
        .await
        .expect_status(200)
        .text();
    for (figure, n) in
        [("capable_without_phone", fleet_truth[0].0), ("phone_dependent", fleet_truth[0].1)]
    {
        let line = format!("sspr_fleet_sspr_users{{figure=\"{figure}\"}} {n}");
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
}
