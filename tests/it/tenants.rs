//! `/v1/tenants`: onboarding, verification against the Graph simulator, validation, credential
//! rotation, bulk import, list filters, offboarding and tenant-restricted keys.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use sspr_domain::{Role, TenantId};
use sspr_fleet_tests::{
    SimHandle, TestApp, TestClient, TestResponse, field_errors,
    reqwest::Method,
    spawn_app_with_sim,
    sspr_graph_sim::scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, DEFAULT_ROLES},
};

/// The second secret of the app in the rotation scenario.
const SECOND_SECRET: &str = "sim~second~secret~for~rotation~0002";
const WRONG_SECRET: &str = "definitely~not~the~secret~9999";
const PUBLIC_KEY_PEM: &str = include_str!("../../crates/graph-sim/tests/data/test-app-key.pub.pem");
const PRIVATE_KEY_PEM: &str = include_str!("../../crates/graph-sim/tests/data/test-app-key.pem");

// Entra tenant ids of the simulated tenants.
const READY: &str = "0a1b2c3d-0000-4000-8000-000000000001";
const NO_CONSENT: &str = "0a1b2c3d-0000-4000-8000-000000000002";
const EXPIRED: &str = "0a1b2c3d-0000-4000-8000-000000000003";
const FEW_ROLES: &str = "0a1b2c3d-0000-4000-8000-000000000004";
const BASIC: &str = "0a1b2c3d-0000-4000-8000-000000000005";
const STANDARD: &str = "0a1b2c3d-0000-4000-8000-000000000006";
const PRE_MIGRATION: &str = "0a1b2c3d-0000-4000-8000-000000000007";
const HYBRID: &str = "0a1b2c3d-0000-4000-8000-000000000008";
const OTHER: &str = "0a1b2c3d-0000-4000-8000-000000000009";
const E5: &str = "0a1b2c3d-0000-4000-8000-00000000000a";
const HYBRID_STANDARD: &str = "0a1b2c3d-0000-4000-8000-00000000000b";
const REVOKED: &str = "0a1b2c3d-0000-4000-8000-00000000000c";
/// Not in any scenario.
const UNKNOWN: &str = "0a1b2c3d-0000-4000-8000-0000000000ff";

/// A scenario: `apps` (TOML, may be empty) then one `[[tenants]]` per `(id, name, extra)`,
/// where `extra` is more TOML keys of that tenant (inline tables only).
fn scenario(apps: &str, tenants: &[(&str, &str, &str)]) -> String {
    let mut text = format!("seed = 7\n{apps}\n");
    for (id, name, extra) in tenants {
        text.push_str(&format!("[[tenants]]\nid = \"{id}\"\nname = \"{name}\"\n{extra}\n"));
    }
    text
}

async fn start(apps: &str, tenants: &[(&str, &str, &str)]) -> (TestApp, SimHandle, TestClient) {
    let (app, sim) = spawn_app_with_sim(&scenario(apps, tenants), &[]).await;
    let admin = app.client_with(&app.admin_key().await);
    (app, sim, admin)
}

fn secret_credentials(secret: &str) -> Value {
    json!({"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": secret})
}

fn tenant_body(entra: &str, name: &str) -> Value {
    json!({
        "entra_tenant": entra,
        "display_name": name,
        "credentials": secret_credentials(DEFAULT_CLIENT_SECRET),
    })
}

fn id_of(tenant: &Value) -> String {
    let id = tenant["id"].as_str().unwrap_or_else(|| panic!("not a tenant: {tenant}"));
    assert!(id.starts_with("ten_"), "{tenant}");
    id.to_owned()
}

async fn onboard(client: &TestClient, body: &Value) -> Value {
    client.post_json("/v1/tenants", body, 201).await
}

async fn verify(client: &TestClient, id: &str) -> Value {
    client.post_empty_raw(&format!("/v1/tenants/{id}/verify")).await.expect_status(200).json()
}

fn codes(findings: &Value) -> Vec<String> {
    findings
        .as_array()
        .unwrap_or_else(|| panic!("not a list of findings: {findings}"))
        .iter()
        .map(|f| {
            assert!(f["message"].as_str().is_some_and(|m| !m.is_empty()), "{f}");
            f["code"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn items(page: &Value) -> &Vec<Value> {
    page["items"].as_array().unwrap_or_else(|| panic!("not a page: {page}"))
}

/// The display names of a list page, sorted.
fn names(page: &Value) -> Vec<String> {
    let mut names: Vec<String> =
        items(page).iter().map(|t| t["display_name"].as_str().unwrap().to_owned()).collect();
    names.sort();
    names
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn set(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Asserts `text` holds none of the secrets.
fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} contains the secret {secret:?}: {text}");
    }
}

#[tokio::test]
async fn a_tenant_onboarded_by_guid_verifies_ready_with_its_facts() {
    let (app, _sim, admin) = start("", &[(READY, "Alpha Dental", "users = 37")]).await;
    let body = json!({
        "entra_tenant": READY.to_ascii_uppercase(),
        "display_name": "  Alpha Dental  ",
        "tags": ["Wave-1", "eu", "eu"],
        "external_refs": {"connectwise": "19283"},
        "credentials": secret_credentials(DEFAULT_CLIENT_SECRET),
    });
    let response = admin.post_json_raw("/v1/tenants", &body).await.expect_status(201);
    assert_no_secret("the 201 body", &response.text(), &[DEFAULT_CLIENT_SECRET]);
    let created = response.json();
    let id = id_of(&created);
    assert_eq!(response.header("location"), Some(format!("/v1/tenants/{id}").as_str()));
    assert_eq!(created["status"], "unverified", "{created}");
    assert_eq!(created["status_reason"], Value::Null);
    assert_eq!(created["licence"], "unknown");
    assert_eq!(created["entra_tenant"], READY, "stored lowercase");
    assert_eq!(created["entra_tenant_id"], READY, "a GUID is the tenant id from the start");
    assert_eq!(created["display_name"], "Alpha Dental", "trimmed");
    assert_eq!(created["tags"], json!(["eu", "wave-1"]), "lowercased, deduplicated, sorted");
    assert_eq!(created["external_refs"], json!({"connectwise": "19283"}));
    assert_eq!(created["verified_at"], Value::Null);
    let credentials = &created["credentials"];
    assert_eq!(credentials["kind"], "client_secret", "{created}");
    assert_eq!(credentials["client_id"], DEFAULT_CLIENT_ID);
    assert!(credentials["id"].as_str().unwrap().starts_with("cred_"), "{credentials}");
    assert_eq!(credentials["thumbprint_s256"], Value::Null);
    let keys: BTreeSet<&str> =
        credentials.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "kind", "client_id", "thumbprint_s256", "created_at"]),
        "no secret field in the credentials view"
    );

    let verified = verify(&admin, &id).await;
    assert_no_secret("the verify body", &verified.to_string(), &[DEFAULT_CLIENT_SECRET]);
    assert_eq!(verified["status"], "ready", "{verified}");
    assert_eq!(verified["status_reason"], Value::Null);
    assert_eq!(verified["licence"], "p1", "Business Premium includes Entra ID P1");
    assert_eq!(verified["entra_tenant_id"], READY);
    assert_eq!(verified["default_domain"], "alphadental.onmicrosoft.com");
    assert!(verified["verified_at"].is_string(), "{verified}");
    let report = &verified["readiness"];
    assert_eq!(report["status"], "ready");
    assert_eq!(report["entra_tenant_id"], READY);
    assert_eq!(report["organization_name"], "Alpha Dental");
    assert_eq!(report["token"]["ok"], true, "{report}");
    assert_eq!(report["token"].get("code"), None, "{report}");
    assert_eq!(report["licences"]["level"], "p1", "{report}");
    assert_eq!(report["licences"]["cloud_sspr"], true);
    assert_eq!(report["users"]["total"], 37, "{report}");
    assert_eq!(report["permissions"]["missing"], json!([]), "{report}");
    assert_eq!(report["permissions"]["source"], "token_roles");
    assert_eq!(
        set(&report["permissions"]["granted"]),
        strings(DEFAULT_ROLES).into_iter().collect()
    );
    assert_eq!(report["permissions"]["required"].as_array().unwrap().len(), 7);
    let methods = report["methods"]["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 3, "{report}");
    assert_eq!(report["methods"]["migration_state"], "migrationComplete");
    assert_eq!(report["blockers"], json!([]), "{report}");
    assert_eq!(report["advisories"], json!([]), "{report}");
    assert!(report["probes"].as_array().unwrap().iter().all(|p| p["ok"] == true), "{report}");

    // GET shows the same tenant with its readiness report.
    let fetched = admin.get(&format!("/v1/tenants/{id}"), 200).await;
    assert_eq!(fetched, verified);
    // The list shows the tenant without the report.
    let list = admin.get("/v1/tenants", 200).await;
    assert_eq!(list["total"], 1);
    assert_eq!(items(&list)[0]["status"], "ready");
    assert_eq!(items(&list)[0].get("readiness"), None, "{list}");
    assert_no_secret("the list", &list.to_string(), &[DEFAULT_CLIENT_SECRET]);
    // The audit log and the database never hold the secret in clear.
    let audit = admin.get(&format!("/v1/audit?tenant_id={id}"), 200).await;
    assert_eq!(items(&audit).len(), 2, "onboarding and verification: {audit}");
    assert_no_secret("the audit log", &audit.to_string(), &[DEFAULT_CLIENT_SECRET]);
    let contents = app.database_contents().await;
    assert!(
        !contents
            .windows(DEFAULT_CLIENT_SECRET.len())
            .any(|w| w == DEFAULT_CLIENT_SECRET.as_bytes()),
        "the database holds the client secret in clear"
    );
}

#[tokio::test]
async fn a_tenant_onboarded_by_domain_resolves_to_its_guid_and_cannot_be_registered_twice() {
    let (_app, _sim, admin) = start(
        "",
        &[
            (READY, "Contoso", "domain = \"contoso.onmicrosoft.com\""),
            (OTHER, "Fabrikam", "domain = \"fabrikam.onmicrosoft.com\""),
        ],
    )
    .await;
    let created = onboard(&admin, &tenant_body("Contoso.onmicrosoft.com", "Contoso")).await;
    let id = id_of(&created);
    assert_eq!(created["entra_tenant"], "contoso.onmicrosoft.com");
    assert_eq!(created["entra_tenant_id"], Value::Null, "unknown until verified: {created}");
    // The same domain again: refused before any verification.
    let again = admin
        .post_json_raw("/v1/tenants", &tenant_body("contoso.onmicrosoft.com", "Again"))
        .await
        .expect_problem(409, "tenant_exists");
    assert!(again["detail"].as_str().unwrap().contains(&id), "{again}");

    let verified = verify(&admin, &id).await;
    assert_eq!(verified["status"], "ready", "{verified}");
    assert_eq!(verified["entra_tenant_id"], READY, "{verified}");
    assert_eq!(verified["entra_tenant"], "contoso.onmicrosoft.com", "as registered");
    assert_eq!(verified["default_domain"], "contoso.onmicrosoft.com");

    // Now the GUID is known: registering the tenant by its GUID is a conflict naming the
    // registration that has it.
    let problem = admin
        .post_json_raw("/v1/tenants", &tenant_body(READY, "Contoso by id"))
        .await
        .expect_problem(409, "tenant_exists");
    assert!(problem["detail"].as_str().unwrap().contains(&id), "{problem}");
    let list = admin.get("/v1/tenants", 200).await;
    assert_eq!(list["total"], 1, "{list}");

    // Registrations of one Entra tenant racing each other: exactly one wins.
    let racers: Vec<_> = (0..6)
        .map(|i| {
            let (client, body) = (admin.clone(), tenant_body(&row_guid(77), &format!("Racer {i}")));
            tokio::spawn(async move { client.post_json_raw("/v1/tenants", &body).await })
        })
        .collect();
    let mut winners = Vec::new();
    let mut losers = Vec::new();
    for racer in racers {
        let response = racer.await.unwrap();
        if response.status == 201 {
            winners.push(id_of(&response.json()));
        } else {
            losers.push(response.expect_problem(409, "tenant_exists"));
        }
    }
    assert_eq!(winners.len(), 1, "{losers:?}");
    assert_eq!(losers.len(), 5);
    for loser in &losers {
        assert!(loser["detail"].as_str().unwrap().contains(&winners[0]), "{loser}");
    }
    let list = admin.get("/v1/tenants", 200).await;
    assert_eq!(list["total"], 2, "{list}");

    // Registered by domain and by GUID before either is verified: both are accepted (nothing
    // tells them apart yet); the one verified second finds the other and is not ready.
    let by_domain = id_of(&onboard(&admin, &tenant_body("fabrikam.onmicrosoft.com", "Fab")).await);
    let by_guid = id_of(&onboard(&admin, &tenant_body(OTHER, "Fab by id")).await);
    assert_eq!(verify(&admin, &by_guid).await["status"], "ready");
    let duplicate = verify(&admin, &by_domain).await;
    assert_eq!(duplicate["status"], "not_ready", "{duplicate}");
    assert_eq!(duplicate["status_reason"], "duplicate_tenant");
    assert_eq!(duplicate["entra_tenant_id"], Value::Null, "{duplicate}");
    let blocker = &duplicate["readiness"]["blockers"][0];
    assert_eq!(blocker["code"], "duplicate_tenant");
    assert!(blocker["message"].as_str().unwrap().contains(&by_guid), "{blocker}");

    // Once a tenant registered by id is verified, its default domain is known: registering
    // the tenant again by that domain is refused at once.
    admin.delete(&format!("/v1/tenants/{by_domain}"), 200).await;
    let problem = admin
        .post_json_raw("/v1/tenants", &tenant_body("FABRIKAM.onmicrosoft.com", "Fab again"))
        .await
        .expect_problem(409, "tenant_exists");
    assert!(problem["detail"].as_str().unwrap().contains(&by_guid), "{problem}");
}

#[tokio::test]
async fn each_kind_of_failed_verification_has_its_status_and_stable_code() {
    let roles: Vec<String> = DEFAULT_ROLES
        .iter()
        .filter(|r| !matches!(**r, "AuditLog.Read.All" | "User.Read.All"))
        .map(|r| format!("{r:?}"))
        .collect();
    let few_roles = format!("roles = [{}]", roles.join(", "));
    let (_app, _sim, admin) = start(
        "",
        &[
            (READY, "Ready", ""),
            (NO_CONSENT, "No Consent", "consented = false"),
            (EXPIRED, "Expired", "faults = { secret_expired = true }"),
            (FEW_ROLES, "Few Roles", &few_roles),
            (BASIC, "Basic", "licence = \"business_basic\""),
            (STANDARD, "Standard", "licence = \"business_standard\""),
            (PRE_MIGRATION, "Pre Migration", "migration_state = \"preMigration\""),
            (HYBRID, "Hybrid", "hybrid = true"),
            (E5, "Enterprise", "licence = \"e5\""),
            (HYBRID_STANDARD, "Hybrid Standard", "hybrid = true\nlicence = \"business_standard\""),
            (REVOKED, "Revoked", "faults = { consent_revoked = true }"),
        ],
    )
    .await;

    struct Case {
        entra: &'static str,
        secret: &'static str,
        status: &'static str,
        reason: Option<&'static str>,
        licence: &'static str,
        advisories: &'static [&'static str],
    }
    let cases = [
        Case {
            entra: NO_CONSENT,
            secret: DEFAULT_CLIENT_SECRET,
            status: "unreachable",
            reason: Some("consent_missing"),
            licence: "unknown",
            advisories: &[],
        },
        Case {
            entra: READY,
            secret: WRONG_SECRET,
            status: "unreachable",
            reason: Some("credentials_invalid"),
            licence: "unknown",
            advisories: &[],
        },
        Case {
            entra: EXPIRED,
            secret: DEFAULT_CLIENT_SECRET,
            status: "unreachable",
            reason: Some("credentials_expired"),
            licence: "unknown",
            advisories: &[],
        },
        Case {
            entra: UNKNOWN,
            secret: DEFAULT_CLIENT_SECRET,
            status: "unreachable",
            reason: Some("tenant_not_found"),
            licence: "unknown",
            advisories: &[],
        },
        Case {
            entra: FEW_ROLES,
            secret: DEFAULT_CLIENT_SECRET,
            status: "not_ready",
            reason: Some("permission_missing"),
            licence: "p1",
            advisories: &[],
        },
        Case {
            entra: BASIC,
            secret: DEFAULT_CLIENT_SECRET,
            status: "not_ready",
            reason: Some("license_missing"),
            licence: "none",
            advisories: &["reports_need_premium"],
        },
        Case {
            entra: STANDARD,
            secret: DEFAULT_CLIENT_SECRET,
            status: "ready",
            reason: None,
            licence: "cloud_only",
            advisories: &["reports_need_premium"],
        },
        Case {
            entra: PRE_MIGRATION,
            secret: DEFAULT_CLIENT_SECRET,
            status: "not_ready",
            reason: Some("migration_incomplete"),
            licence: "p1",
            advisories: &[],
        },
        Case {
            entra: HYBRID,
            secret: DEFAULT_CLIENT_SECRET,
            status: "ready",
            reason: None,
            licence: "p1",
            advisories: &["hybrid_writeback_manual"],
        },
        Case {
            entra: E5,
            secret: DEFAULT_CLIENT_SECRET,
            status: "ready",
            reason: None,
            licence: "p2",
            advisories: &[],
        },
        Case {
            entra: HYBRID_STANDARD,
            secret: DEFAULT_CLIENT_SECRET,
            status: "ready",
            reason: None,
            licence: "cloud_only",
            advisories: &["writeback_not_licensed", "reports_need_premium"],
        },
        Case {
            entra: REVOKED,
            secret: DEFAULT_CLIENT_SECRET,
            status: "unreachable",
            reason: Some("consent_missing"),
            licence: "unknown",
            advisories: &[],
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let what = format!("{} ({})", case.entra, case.reason.unwrap_or(case.status));
        let mut body = tenant_body(case.entra, &what);
        body["credentials"] = secret_credentials(case.secret);
        // Every other tenant is verified inline by `?verify=true`, then all again by hand.
        let id = if i % 2 == 0 {
            let created = admin.post_json("/v1/tenants?verify=true", &body, 201).await;
            assert_eq!(created["status"], case.status, "{what} inline: {created}");
            assert_eq!(created["readiness"]["status"], case.status, "{what} inline");
            assert_eq!(created["status_reason"], json!(case.reason), "{what} inline");
            id_of(&created)
        } else {
            let created = onboard(&admin, &body).await;
            assert_eq!(created["status"], "unverified", "{what}: {created}");
            assert_eq!(created.get("readiness"), None, "{what}: {created}");
            id_of(&created)
        };
        let t = verify(&admin, &id).await;
        let report = &t["readiness"];
        assert_eq!(t["status"], case.status, "{what}: {t}");
        assert_eq!(report["status"], case.status, "{what}: {t}");
        assert_eq!(t["status_reason"], json!(case.reason), "{what}: {t}");
        assert_eq!(t["licence"], case.licence, "{what}: {t}");
        let blockers = codes(&report["blockers"]);
        match case.reason {
            Some(reason) => assert_eq!(blockers, vec![reason.to_owned()], "{what}: {report}"),
            None => assert!(blockers.is_empty(), "{what}: {report}"),
        }
        assert_eq!(codes(&report["advisories"]), strings(case.advisories), "{what}: {report}");
        if case.status == "unreachable" {
            assert_eq!(report["token"]["ok"], false, "{what}: {report}");
            assert_eq!(report["token"]["code"], json!(case.reason), "{what}: {report}");
            assert!(report["token"]["detail"].is_string(), "{what}: {report}");
            assert_eq!(report["permissions"], Value::Null, "{what}: {report}");
            assert_eq!(report["licences"], Value::Null, "{what}: {report}");
            assert_eq!(report["probes"], json!([]), "{what}: no Graph read without a token");
            assert_no_secret(&what, &t.to_string(), &[case.secret]);
        } else {
            assert_eq!(report["token"]["ok"], true, "{what}: {report}");
            assert_eq!(report["licences"]["level"], case.licence, "{what}: {report}");
        }
    }

    let by_name = |page: &Value, name: &str| -> Value {
        items(page).iter().find(|t| t["display_name"] == name).cloned().unwrap()
    };
    let all = admin.get("/v1/tenants?limit=50", 200).await;
    assert_eq!(all["total"], cases.len(), "{all}");
    // Details of some cases.
    let few = by_name(&all, &format!("{FEW_ROLES} (permission_missing)"));
    let few = admin.get(&format!("/v1/tenants/{}", id_of(&few)), 200).await;
    let permissions = &few["readiness"]["permissions"];
    assert_eq!(
        set(&permissions["missing"]),
        BTreeSet::from(["AuditLog.Read.All".to_owned(), "User.Read.All".to_owned()]),
        "{permissions}"
    );
    assert_eq!(set(&permissions["granted"]).len(), DEFAULT_ROLES.len() - 2, "{permissions}");
    let message = few["readiness"]["blockers"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("AuditLog.Read.All") && message.contains("User.Read.All"),
        "{message}"
    );

    let pre = by_name(&all, &format!("{PRE_MIGRATION} (migration_incomplete)"));
    let pre = admin.get(&format!("/v1/tenants/{}", id_of(&pre)), 200).await;
    assert_eq!(pre["readiness"]["methods"]["migration_state"], "preMigration", "{pre}");

    let hybrid = by_name(&all, &format!("{HYBRID} (ready)"));
    let hybrid = admin.get(&format!("/v1/tenants/{}", id_of(&hybrid)), 200).await;
    assert_eq!(hybrid["readiness"]["hybrid"]["on_premises_sync_enabled"], true, "{hybrid}");
    assert_eq!(hybrid["readiness"]["hybrid"]["writeback_state"], "not_readable_app_only");

    let standard = by_name(&all, &format!("{STANDARD} (ready)"));
    let standard = admin.get(&format!("/v1/tenants/{}", id_of(&standard)), 200).await;
    assert_eq!(standard["readiness"]["users"], Value::Null, "no reports without P1: {standard}");
    assert_eq!(standard["readiness"]["licences"]["cloud_sspr"], true);
    assert_eq!(standard["readiness"]["licences"]["writeback"], false);
}

#[tokio::test]
async fn invalid_onboarding_bodies_name_every_bad_field_and_store_nothing() {
    let (_app, _sim, admin) = start("", &[(READY, "Ready", "")]).await;

    let problem = admin
        .post_json_raw(
            "/v1/tenants",
            &json!({
                "entra_tenant": "not a tenant!",
                "display_name": "   ",
                "tags": ["fine", "Bad Tag!"],
                "external_refs": {"psa": "1", "Bad Key!": "2"},
                "credentials": {"kind": "client_secret", "client_id": "app-123", "client_secret": "  "},
            }),
        )
        .await
        .expect_problem(422, "validation_failed");
    let mut errors = field_errors(&problem);
    errors.sort();
    let expected: Vec<(String, String)> = [
        ("credentials.client_id", "invalid_format"),
        ("credentials.client_secret", "required"),
        ("display_name", "required"),
        ("entra_tenant", "invalid_format"),
        // The bad name is not repeated: it could be a secret in the wrong place.
        ("external_refs", "invalid_format"),
        ("tags[1]", "invalid_format"),
    ]
    .iter()
    .map(|(f, c)| ((*f).to_owned(), (*c).to_owned()))
    .collect();
    assert_eq!(errors, expected, "{problem}");

    // An unknown credential kind; the secret sent with it is never echoed.
    let problem = admin
        .post_json_raw(
            "/v1/tenants",
            &json!({
                "entra_tenant": READY,
                "display_name": "Kind",
                "credentials": {"kind": "password", "client_id": DEFAULT_CLIENT_ID, "password": "hunter2-hunter2"},
            }),
        )
        .await
        .expect_problem(422, "validation_failed");
    let errors = field_errors(&problem);
    assert_eq!(errors.len(), 1, "{problem}");
    assert!(errors[0].0.starts_with("credentials"), "{problem}");
    assert!(problem.to_string().contains("password"), "names the unknown kind: {problem}");
    assert_no_secret("the problem", &problem.to_string(), &["hunter2-hunter2"]);

    // Delegated refresh tokens cannot be used for Graph calls.
    let problem = admin
        .post_json_raw(
            "/v1/tenants",
            &json!({
                "entra_tenant": READY,
                "display_name": "Delegated",
                "credentials": {"kind": "delegated_refresh_token", "client_id": DEFAULT_CLIENT_ID, "refresh_token": "0.AAAA-refresh"},
            }),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&problem), vec![("credentials.kind".into(), "not_app_only".into())]);

    // A missing credentials object, and an unknown field at the top level.
    let mut body = tenant_body(READY, "Missing");
    body.as_object_mut().unwrap().remove("credentials");
    let problem =
        admin.post_json_raw("/v1/tenants", &body).await.expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&problem), vec![("credentials".into(), "required".into())]);
    let mut body = tenant_body(READY, "Extra");
    body["password"] = json!("x");
    let problem =
        admin.post_json_raw("/v1/tenants", &body).await.expect_problem(422, "validation_failed");
    assert_eq!(field_errors(&problem), vec![("password".into(), "unknown_field".into())]);

    // Malformed PEM: a certificate that is not base64 and a key that is base64 but no key.
    let key_lines: Vec<&str> = PRIVATE_KEY_PEM.lines().collect();
    let truncated_key = [&key_lines[..4], &key_lines[key_lines.len() - 1..]].concat().join("\n");
    let bad_certificate = "-----BEGIN CERTIFICATE-----\nTk9UQkFTRTY0!!!*&^%notbase64atall\n-----END CERTIFICATE-----\n";
    let problem = admin
        .post_json_raw(
            "/v1/tenants",
            &json!({
                "entra_tenant": READY,
                "display_name": "Bad PEM",
                "credentials": {
                    "kind": "certificate",
                    "client_id": DEFAULT_CLIENT_ID,
                    "certificate_pem": bad_certificate,
                    "private_key_pem": truncated_key,
                },
            }),
        )
        .await
        .expect_problem(422, "validation_failed");
    let mut errors = field_errors(&problem);
    errors.sort();
    assert_eq!(
        errors,
        vec![
            ("credentials.certificate_pem".into(), "invalid_format".into()),
            ("credentials.private_key_pem".into(), "invalid_format".into()),
        ],
        "{problem}"
    );
    let text = problem.to_string();
    for line in key_lines[1..4].iter().chain(["Tk9UQkFTRTY0", "notbase64atall"].iter()) {
        assert!(!text.contains(line), "the problem repeats PEM text {line:?}: {text}");
    }
    // A certificate PEM that is only a header.
    let problem = admin
        .post_json_raw(
            "/v1/tenants",
            &json!({
                "entra_tenant": READY,
                "display_name": "No cert",
                "credentials": {
                    "kind": "certificate",
                    "client_id": DEFAULT_CLIENT_ID,
                    "certificate_pem": "-----BEGIN CERTIFICATE-----\n",
                    "private_key_pem": PRIVATE_KEY_PEM,
                },
            }),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        field_errors(&problem),
        vec![("credentials.certificate_pem".into(), "invalid_format".into())],
        "{problem}"
    );

    // Nothing was stored.
    let list = admin.get("/v1/tenants?include_offboarded=true", 200).await;
    assert_eq!(list["total"], 0, "{list}");
    // The same tenant with a valid body is accepted.
    onboard(&admin, &tenant_body(READY, "Fine")).await;
}

/// A stand-in certificate: the test public key's DER under a CERTIFICATE label (the registry
/// only hashes the DER for `x5t#S256`).
fn certificate_pem() -> String {
    PUBLIC_KEY_PEM.replace("PUBLIC KEY", "CERTIFICATE")
}

#[tokio::test]
async fn certificate_credentials_verify_ready_and_an_unregistered_certificate_does_not() {
    let certificate = certificate_pem();
    let thumbprint = sspr_registry::certificate_thumbprint_s256(&certificate).unwrap();
    let apps = format!(
        "[[apps]]\nclient_id = \"{DEFAULT_CLIENT_ID}\"\n[[apps.certificates]]\nx5t_s256 = \"{thumbprint}\"\npublic_key_pem = '''\n{PUBLIC_KEY_PEM}'''\n"
    );
    let (_app, _sim, admin) =
        start(&apps, &[(READY, "Cert Co", "users = 12"), (OTHER, "Other Cert", "")]).await;
    let body = json!({
        "entra_tenant": READY,
        "display_name": "Cert Co",
        "credentials": {
            "kind": "certificate",
            "client_id": DEFAULT_CLIENT_ID.to_ascii_uppercase(),
            "certificate_pem": certificate,
            "private_key_pem": PRIVATE_KEY_PEM,
        },
    });
    let response = admin.post_json_raw("/v1/tenants", &body).await.expect_status(201);
    assert!(!response.text().contains("PRIVATE KEY"), "{}", response.text());
    let created = response.json();
    assert_eq!(created["credentials"]["kind"], "certificate", "{created}");
    assert_eq!(created["credentials"]["client_id"], DEFAULT_CLIENT_ID, "stored lowercase");
    assert_eq!(created["credentials"]["thumbprint_s256"], thumbprint.as_str());
    let verified = verify(&admin, &id_of(&created)).await;
    assert_eq!(verified["status"], "ready", "{verified}");
    assert_eq!(verified["readiness"]["users"]["total"], 12, "{verified}");
    assert!(!verified.to_string().contains("PRIVATE KEY"));

    // The same key with a certificate the app does not know: the assertion is refused.
    let other_der = "QkJC".repeat(30);
    let other_certificate =
        format!("-----BEGIN CERTIFICATE-----\n{other_der}\n-----END CERTIFICATE-----\n");
    let mut body = body.clone();
    body["entra_tenant"] = json!(OTHER);
    body["display_name"] = json!("Other Cert");
    body["credentials"]["certificate_pem"] = json!(other_certificate);
    let other = onboard(&admin, &body).await;
    assert_ne!(other["credentials"]["thumbprint_s256"], thumbprint.as_str());
    let refused = verify(&admin, &id_of(&other)).await;
    assert_eq!(refused["status"], "unreachable", "{refused}");
    assert_eq!(refused["status_reason"], "credentials_invalid", "{refused}");
}

#[tokio::test]
async fn rotating_credentials_checks_them_first_unless_told_not_to() {
    let apps = format!(
        "[[apps]]\nclient_id = \"{DEFAULT_CLIENT_ID}\"\nsecrets = [\"{DEFAULT_CLIENT_SECRET}\", \"{SECOND_SECRET}\"]\n"
    );
    let (app, _sim, admin) = start(&apps, &[(READY, "Rotating", "")]).await;
    let tenant = onboard(&admin, &tenant_body(READY, "Rotating")).await;
    let id = id_of(&tenant);
    let path = format!("/v1/tenants/{id}/credentials");
    let first_credential = tenant["credentials"]["id"].clone();
    assert_eq!(verify(&admin, &id).await["status"], "ready");

    // A wrong secret is refused and the old credentials stay.
    let problem = admin
        .put_json_raw(&path, &secret_credentials(WRONG_SECRET))
        .await
        .expect_problem(422, "validation_failed");
    let errors = field_errors(&problem);
    assert_eq!(errors, vec![("credentials".into(), "credentials_invalid".into())], "{problem}");
    assert_no_secret("the refusal", &problem.to_string(), &[WRONG_SECRET]);
    let after = admin.get(&format!("/v1/tenants/{id}"), 200).await;
    assert_eq!(after["credentials"]["id"], first_credential, "{after}");
    let still = verify(&admin, &id).await;
    assert_eq!(still["status"], "ready", "the old credentials still work: {still}");
    assert_eq!(still["credentials"]["id"], first_credential);
    // A malformed body is a validation error naming the field, and changes nothing either.
    let problem = admin
        .put_json_raw(
            &path,
            &json!({"kind": "client_secret", "client_id": "x", "client_secret": "y"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(
        field_errors(&problem),
        vec![("credentials.client_id".into(), "invalid_format".into())]
    );

    // The app's second secret works: new credentials id, still ready.
    let rotated = admin.put_json(&path, &secret_credentials(SECOND_SECRET), 200).await;
    let second_credential = rotated["credentials"]["id"].clone();
    assert!(second_credential.as_str().unwrap().starts_with("cred_"), "{rotated}");
    assert_ne!(second_credential, first_credential, "{rotated}");
    assert_no_secret("the rotation", &rotated.to_string(), &[SECOND_SECRET]);
    let verified = verify(&admin, &id).await;
    assert_eq!(verified["status"], "ready", "{verified}");
    assert_eq!(verified["credentials"]["id"], second_credential);

    // Without the check, a wrong secret is stored as given, and verification then finds it.
    let unchecked = admin
        .put_json(&format!("{path}?check=false"), &secret_credentials(WRONG_SECRET), 200)
        .await;
    let third_credential = unchecked["credentials"]["id"].clone();
    assert_ne!(third_credential, second_credential, "{unchecked}");
    let broken = verify(&admin, &id).await;
    assert_eq!(broken["status"], "unreachable", "{broken}");
    assert_eq!(broken["status_reason"], "credentials_invalid", "{broken}");
    assert_eq!(broken["credentials"]["id"], third_credential);

    // Rotating back to a good secret repairs it.
    admin.put_json(&path, &secret_credentials(DEFAULT_CLIENT_SECRET), 200).await;
    assert_eq!(verify(&admin, &id).await["status"], "ready");

    // Every rotation is in the audit log with the tenant, never with a secret.
    let audit = admin.get(&format!("/v1/audit?tenant_id={id}&limit=100"), 200).await;
    let puts: Vec<(u64, Value)> = items(&audit)
        .iter()
        .filter(|e| e["action"] == "PUT /v1/tenants/{id}/credentials")
        .map(|e| (e["status"].as_u64().unwrap(), e["details"]["checked"].clone()))
        .collect();
    assert_eq!(
        puts,
        vec![
            (422, Value::Null),
            (422, Value::Null),
            (200, json!(true)),
            (200, json!(false)),
            (200, json!(true)),
        ],
        "{audit}"
    );
    assert_no_secret("the audit log", &audit.to_string(), &[WRONG_SECRET, SECOND_SECRET]);
    let contents = app.database_contents().await;
    for secret in [SECOND_SECRET, WRONG_SECRET] {
        assert!(
            !contents.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the database holds {secret:?} in clear"
        );
    }
}

/// A GUID for import row `i`.
fn row_guid(i: usize) -> String {
    format!("{i:08x}-1111-4222-8333-{i:012x}")
}

fn csv_row(i: usize, name: &str) -> String {
    format!(
        "{},{name},bulk;wave-{},psa={};rmm=R{i},client_secret,{DEFAULT_CLIENT_ID},{DEFAULT_CLIENT_SECRET}\n",
        row_guid(i),
        i % 3,
        1000 + i,
    )
}

const CSV_HEADER: &str =
    "entra_tenant,display_name,tags,external_refs,kind,client_id,client_secret\n";

/// 500 valid rows and four invalid ones, at rows 1, 101, 302 and 504; `rename` renames one row.
fn import_csv(rename: Option<usize>) -> (String, BTreeMap<usize, (&'static str, &'static str)>) {
    let mut csv = String::from(CSV_HEADER);
    let invalid: BTreeMap<usize, (&str, &str)> = BTreeMap::from([
        (1, ("entra_tenant", "invalid_format")),
        (101, ("credentials.client_id", "invalid_format")),
        (302, ("tags[0]", "invalid_format")),
        (504, ("external_refs", "invalid_format")),
    ]);
    let mut valid = 0;
    for row in 1..=504 {
        match invalid.get(&row).map(|(f, _)| *f) {
            Some("entra_tenant") => csv.push_str(&format!(
                "not a tenant,Broken,,,client_secret,{DEFAULT_CLIENT_ID},{DEFAULT_CLIENT_SECRET}\n"
            )),
            Some("credentials.client_id") => csv.push_str(&format!(
                "{},Bad App,,,client_secret,not-a-guid,{DEFAULT_CLIENT_SECRET}\n",
                row_guid(9000)
            )),
            Some("tags[0]") => csv.push_str(&format!(
                "{},Bad Tag,bad tag!,,client_secret,{DEFAULT_CLIENT_ID},{DEFAULT_CLIENT_SECRET}\n",
                row_guid(9001)
            )),
            Some(_) => csv.push_str(&format!(
                "{},Bad Refs,,no-equals-sign,client_secret,{DEFAULT_CLIENT_ID},{DEFAULT_CLIENT_SECRET}\n",
                row_guid(9002)
            )),
            None => {
                let name = if rename == Some(valid) {
                    format!("Renamed Customer {valid:03}")
                } else {
                    format!("Customer {valid:03}")
                };
                csv.push_str(&csv_row(valid, &name));
                valid += 1;
            }
        }
    }
    assert_eq!(valid, 500);
    (csv, invalid)
}

async fn import(client: &TestClient, query: &str, content_type: &str, body: String) -> Value {
    client
        .post_body_raw(&format!("/v1/tenants:import{query}"), content_type, body)
        .await
        .expect_status(200)
        .json()
}

async fn total(client: &TestClient) -> u64 {
    client.get("/v1/tenants?limit=1&include_offboarded=true", 200).await["total"].as_u64().unwrap()
}

#[tokio::test]
async fn importing_500_tenants_from_csv_is_idempotent_and_the_list_pages_through_them() {
    let (_app, _sim, admin) = start("", &[]).await;
    let (csv, invalid) = import_csv(None);

    // A dry run checks every row and stores nothing.
    let dry = import(&admin, "?dry_run=true", "text/csv", csv.clone()).await;
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["total"], 504);
    assert_eq!(dry["counts"], json!({"valid": 500, "invalid": 4}), "{}", dry["counts"]);
    assert_eq!(total(&admin).await, 0, "a dry run stores nothing");

    let report = import(&admin, "", "text/csv; charset=utf-8", csv.clone()).await;
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["total"], 504);
    assert_eq!(report["counts"], json!({"created": 500, "invalid": 4}), "{}", report["counts"]);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 504);
    let mut created = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["row"], i + 1, "rows in file order: {row}");
        if let Some((field, code)) = invalid.get(&(i + 1)) {
            assert_eq!(row["outcome"], "invalid", "{row}");
            assert_eq!(row["tenant_id"], Value::Null, "{row}");
            let errors: Vec<(&str, &str)> = row["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["field"].as_str().unwrap(), e["code"].as_str().unwrap()))
                .collect();
            assert_eq!(errors, vec![(*field, *code)], "row {}: {row}", i + 1);
        } else {
            assert_eq!(row["outcome"], "created", "{row}");
            assert_eq!(row["errors"], json!([]), "{row}");
            let tenant_id = row["tenant_id"].as_str().unwrap().to_owned();
            let entra = row["entra_tenant"].as_str().unwrap().to_owned();
            assert!(created.insert(tenant_id, entra).is_none(), "a tenant id twice: {row}");
        }
    }
    assert_eq!(created.len(), 500);
    assert_no_secret("the import report", &report.to_string(), &[DEFAULT_CLIENT_SECRET]);
    assert_eq!(total(&admin).await, 500);
    // A row as stored.
    let (some_id, some_entra) = created.iter().nth(7).unwrap();
    let one = admin.get(&format!("/v1/tenants/{some_id}"), 200).await;
    let index = usize::from_str_radix(&some_entra[..8], 16).unwrap();
    assert_eq!(one["entra_tenant"], some_entra.as_str());
    assert_eq!(one["display_name"], format!("Customer {index:03}"));
    assert_eq!(one["tags"], json!(["bulk", format!("wave-{}", index % 3)]));
    assert_eq!(
        one["external_refs"],
        json!({"psa": (1000 + index).to_string(), "rmm": format!("R{index}")})
    );
    assert_eq!(one["status"], "unverified");
    assert_eq!(one["credentials"]["kind"], "client_secret");

    // The same file again changes nothing.
    let again = import(&admin, "", "text/csv", csv.clone()).await;
    assert_eq!(again["counts"], json!({"unchanged": 500, "invalid": 4}), "{}", again["counts"]);
    let again_ids: BTreeSet<&str> =
        again["rows"].as_array().unwrap().iter().filter_map(|r| r["tenant_id"].as_str()).collect();
    assert_eq!(again_ids, created.keys().map(String::as_str).collect());
    assert_eq!(total(&admin).await, 500);

    // One renamed row: one update; a dry run of it reports it valid and changes nothing.
    let (renamed_csv, _) = import_csv(Some(42));
    let dry = import(&admin, "?dry_run=true", "text/csv", renamed_csv.clone()).await;
    assert_eq!(dry["counts"], json!({"valid": 500, "invalid": 4}), "{}", dry["counts"]);
    let renamed = import(&admin, "", "text/csv", renamed_csv).await;
    assert_eq!(
        renamed["counts"],
        json!({"updated": 1, "unchanged": 499, "invalid": 4}),
        "{}",
        renamed["counts"]
    );
    let updated: Vec<&Value> =
        renamed["rows"].as_array().unwrap().iter().filter(|r| r["outcome"] == "updated").collect();
    assert_eq!(updated[0]["entra_tenant"], row_guid(42));
    let updated_id = updated[0]["tenant_id"].as_str().unwrap();
    assert_eq!(created[updated_id], row_guid(42), "the same tenant, updated in place");
    let t = admin.get(&format!("/v1/tenants/{updated_id}"), 200).await;
    assert_eq!(t["display_name"], "Renamed Customer 042", "{t}");

    // A dry run with new tenants stores nothing either.
    let mut fresh = String::from(CSV_HEADER);
    for i in 600..610 {
        fresh.push_str(&csv_row(i, &format!("Fresh {i}")));
    }
    let before = total(&admin).await;
    let dry = import(&admin, "?dry_run=true", "text/csv", fresh.clone()).await;
    assert_eq!(dry["counts"], json!({"valid": 10}), "{}", dry["counts"]);
    assert!(dry["rows"].as_array().unwrap().iter().all(|r| r["tenant_id"].is_null()), "{dry}");
    assert_eq!(total(&admin).await, before);
    // For real this time: 510 tenants.
    let more = import(&admin, "", "text/csv", fresh).await;
    assert_eq!(more["counts"], json!({"created": 10}), "{}", more["counts"]);
    for row in more["rows"].as_array().unwrap() {
        let id = row["tenant_id"].as_str().unwrap().to_owned();
        created.insert(id, row["entra_tenant"].as_str().unwrap().to_owned());
    }
    assert_eq!(created.len(), 510);

    // Paging visits every tenant once, in id order, each with its own tags and references
    // (pages of 500 load tags in two batches).
    for (limit, expected_pages) in [(200, 3), (500, 2)] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let path = match &cursor {
                Some(c) => format!("/v1/tenants?limit={limit}&cursor={c}"),
                None => format!("/v1/tenants?limit={limit}"),
            };
            let page = admin.get(&path, 200).await;
            pages += 1;
            assert_eq!(page["total"], 510, "limit={limit}: {}", page["total"]);
            assert!(items(&page).len() <= limit);
            for t in items(&page) {
                let entra = t["entra_tenant"].as_str().unwrap();
                let index = usize::from_str_radix(&entra[..8], 16).unwrap();
                assert_eq!(entra, row_guid(index));
                assert_eq!(t["tags"], json!(["bulk", format!("wave-{}", index % 3)]), "{t}");
                assert_eq!(
                    t["external_refs"],
                    json!({"psa": (1000 + index).to_string(), "rmm": format!("R{index}")}),
                    "{t}"
                );
                seen.push(id_of(t));
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(pages, expected_pages, "limit={limit}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(seen, sorted, "limit={limit}: in id order, no repeats");
        assert_eq!(seen, created.keys().cloned().collect::<Vec<_>>(), "limit={limit}: no gaps");
    }
}

#[tokio::test]
async fn json_imports_work_and_unreadable_files_are_refused_whole() {
    let (_app, _sim, admin) = start("", &[]).await;
    let rows = json!([
        tenant_body(&row_guid(1), "Json One"),
        {
            "entra_tenant": "json-two.onmicrosoft.com",
            "display_name": "Json Two",
            "tags": ["json"],
            "external_refs": {"halo": "77"},
            "credentials": secret_credentials(DEFAULT_CLIENT_SECRET),
        },
        {"entra_tenant": row_guid(3), "display_name": "Bad", "credentials": {"kind": "password"}},
        tenant_body(&row_guid(1), "Json One Again"),
    ]);
    let report = import(&admin, "", "application/json", rows.to_string()).await;
    assert_eq!(report["counts"], json!({"created": 2, "invalid": 2}), "{report}");
    let outcomes: Vec<&str> =
        report["rows"].as_array().unwrap().iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, vec!["created", "created", "invalid", "invalid"]);
    assert!(report["rows"][2]["errors"][0]["field"].as_str().unwrap().starts_with("credentials"));
    assert_eq!(report["rows"][3]["errors"][0]["code"], "duplicate_in_file", "{report}");
    let two = admin.get("/v1/tenants?q=json-two", 200).await;
    assert_eq!(names(&two), vec!["Json Two"]);
    assert_eq!(items(&two)[0]["tags"], json!(["json"]));

    // The `{"tenants": [...]}` form; the rows already there are unchanged.
    let wrapped = json!({"tenants": [rows[0], rows[1]]});
    let report = import(&admin, "", "application/json", wrapped.to_string()).await;
    assert_eq!(report["counts"], json!({"unchanged": 2}), "{report}");
    assert_eq!(total(&admin).await, 2);

    // CSV as spreadsheets write it: a UTF-8 byte order mark, CRLF line ends, quoted fields
    // with commas; a short row is reported on its own and does not stop the others.
    let spreadsheet = format!(
        "\u{feff}entra_tenant,display_name,tags,client_id,client_secret\r\n\
         {},\"Quoted, Inc\",\"wave-2;alpha\",{DEFAULT_CLIENT_ID},\"se,cret\"\r\n\
         short.onmicrosoft.com,Short\r\n",
        row_guid(6)
    );
    let report = import(&admin, "", "text/csv", spreadsheet.clone()).await;
    assert_eq!(report["counts"], json!({"created": 1, "invalid": 1}), "{report}");
    assert_eq!(report["rows"][1]["errors"][0]["field"], "row", "{report}");
    let quoted = admin.get("/v1/tenants?q=quoted", 200).await;
    assert_eq!(names(&quoted), vec!["Quoted, Inc"]);
    assert_eq!(items(&quoted)[0]["tags"], json!(["alpha", "wave-2"]));
    let report = import(&admin, "", "text/csv", spreadsheet).await;
    assert_eq!(report["counts"], json!({"unchanged": 1, "invalid": 1}), "{report}");
    assert_eq!(total(&admin).await, 3);

    // Imports of one file racing each other: every tenant is created exactly once.
    let mut racing = String::from(CSV_HEADER);
    for i in 100..150 {
        racing.push_str(&csv_row(i, &format!("Race {i}")));
    }
    let imports: Vec<_> = (0..3)
        .map(|_| {
            let (client, csv) = (admin.clone(), racing.clone());
            tokio::spawn(async move {
                client.post_body_raw("/v1/tenants:import", "text/csv", csv).await
            })
        })
        .collect();
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    for import in imports {
        let report = import.await.unwrap().expect_status(200).json();
        for (outcome, n) in report["counts"].as_object().unwrap() {
            *outcomes.entry(outcome.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    assert_eq!(
        outcomes,
        BTreeMap::from([("created".to_owned(), 50), ("unchanged".to_owned(), 100)])
    );
    assert_eq!(total(&admin).await, 53);

    // Whole-file errors: nothing is imported.
    let unknown_column = format!(
        "entra_tenant,display_name,client_id,password\n{},X,{DEFAULT_CLIENT_ID},p\n",
        row_guid(5)
    );
    let problem = admin
        .post_body_raw("/v1/tenants:import", "text/csv", unknown_column)
        .await
        .expect_problem(400, "import_file_invalid");
    assert!(problem["detail"].as_str().unwrap().contains("password"), "{problem}");
    let missing_column = format!("entra_tenant,client_id\n{},{DEFAULT_CLIENT_ID}\n", row_guid(5));
    admin
        .post_body_raw("/v1/tenants:import", "text/csv", missing_column)
        .await
        .expect_problem(400, "import_file_invalid");
    admin
        .post_body_raw("/v1/tenants:import", "application/json", "{\"x\": 1}")
        .await
        .expect_problem(400, "import_file_invalid");
    admin
        .post_body_raw("/v1/tenants:import", "application/json", "[{")
        .await
        .expect_problem(400, "import_file_invalid");
    let csv = format!("{CSV_HEADER}{}", csv_row(5, "Plain"));
    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        admin
            .post_body_raw("/v1/tenants:import", content_type, csv.clone())
            .await
            .expect_problem(415, "unsupported_media_type");
    }
    let no_type = admin.send(admin.request(Method::POST, "/v1/tenants:import").body(csv)).await;
    no_type.expect_problem(415, "unsupported_media_type");
    assert_eq!(total(&admin).await, 53);
}

#[tokio::test]
async fn the_tenant_list_filters_by_tag_status_licence_text_and_offboarding() {
    let (_app, _sim, admin) = start(
        "",
        &[
            (READY, "Alpha Dental", ""),
            (STANDARD, "Bravo Law", "licence = \"business_standard\""),
            (BASIC, "Charlie Farms", "licence = \"business_basic\""),
        ],
    )
    .await;
    let mut alpha = tenant_body(READY, "Alpha Dental");
    alpha["tags"] = json!(["EU", "wave-1"]);
    alpha["external_refs"] = json!({"connectwise": "CW-1001"});
    let alpha = id_of(&onboard(&admin, &alpha).await);
    let mut bravo = tenant_body(STANDARD, "Bravo Law");
    bravo["tags"] = json!(["us"]);
    let bravo = id_of(&onboard(&admin, &bravo).await);
    let mut charlie = tenant_body(BASIC, "Charlie Farms");
    charlie["tags"] = json!(["eu"]);
    charlie["external_refs"] = json!({"halo": "H-77"});
    let charlie = id_of(&onboard(&admin, &charlie).await);
    let mut delta = tenant_body(&row_guid(4), "Delta 100% Co");
    delta["tags"] = json!(["wave-1"]);
    onboard(&admin, &delta).await;
    let mut echo = tenant_body(&row_guid(5), "Echo Ltd");
    echo["tags"] = json!(["eu"]);
    let echo = id_of(&onboard(&admin, &echo).await);
    assert_eq!(verify(&admin, &alpha).await["status"], "ready");
    assert_eq!(verify(&admin, &bravo).await["status"], "ready");
    assert_eq!(verify(&admin, &charlie).await["status"], "not_ready");
    admin.delete(&format!("/v1/tenants/{echo}"), 200).await;

    let cases: &[(&str, &[&str])] = &[
        ("", &["Alpha Dental", "Bravo Law", "Charlie Farms", "Delta 100% Co"]),
        (
            "include_offboarded=true",
            &["Alpha Dental", "Bravo Law", "Charlie Farms", "Delta 100% Co", "Echo Ltd"],
        ),
        ("tag=eu", &["Alpha Dental", "Charlie Farms"]),
        ("tag=EU", &["Alpha Dental", "Charlie Farms"]),
        ("tag=eu&include_offboarded=true", &["Alpha Dental", "Charlie Farms", "Echo Ltd"]),
        ("tag=wave-1", &["Alpha Dental", "Delta 100% Co"]),
        ("tag=nope", &[]),
        ("status=ready", &["Alpha Dental", "Bravo Law"]),
        ("status=not_ready", &["Charlie Farms"]),
        ("status=unverified", &["Delta 100% Co"]),
        ("status=unreachable", &[]),
        ("status=offboarded", &["Echo Ltd"]),
        ("licence=p1", &["Alpha Dental"]),
        ("licence=cloud_only", &["Bravo Law"]),
        ("licence=none", &["Charlie Farms"]),
        ("licence=unknown", &["Delta 100% Co"]),
        ("licence=p2", &[]),
        ("q=dental", &["Alpha Dental"]),
        ("q=LAW", &["Bravo Law"]),
        ("q=a", &["Alpha Dental", "Bravo Law", "Charlie Farms", "Delta 100% Co"]),
        ("q=CW-1001", &["Alpha Dental"]),
        ("q=cw-10", &["Alpha Dental"]),
        ("q=h-77", &["Charlie Farms"]),
        ("q=bravolaw.onmicrosoft", &["Bravo Law"]),
        ("q=0a1b2c3d-0000-4000-8000-000000000005", &["Charlie Farms"]),
        ("q=100%25", &["Delta 100% Co"]),
        ("q=%25", &["Delta 100% Co"]),
        ("q=_", &[]),
        ("q=echo", &[]),
        ("q=echo&include_offboarded=true", &["Echo Ltd"]),
        ("q=%20%20", &["Alpha Dental", "Bravo Law", "Charlie Farms", "Delta 100% Co"]),
        ("tag=eu&status=ready", &["Alpha Dental"]),
        ("tag=wave-1&licence=unknown&q=delta", &["Delta 100% Co"]),
    ];
    for (query, expected) in cases {
        let page = admin.get(&format!("/v1/tenants?{query}"), 200).await;
        assert_eq!(names(&page), strings(expected), "?{query}: {page}");
        assert_eq!(page["total"], expected.len(), "?{query}: total");
        assert_eq!(page["next_cursor"], Value::Null, "?{query}");
    }
    // Paging keeps the filter, and the total counts every match.
    let first = admin.get("/v1/tenants?status=ready&limit=1", 200).await;
    assert_eq!(items(&first).len(), 1);
    assert_eq!(first["total"], 2);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = admin.get(&format!("/v1/tenants?status=ready&limit=1&cursor={cursor}"), 200).await;
    assert_eq!(second["next_cursor"], Value::Null, "{second}");
    let mut both = names(&first);
    both.extend(names(&second));
    assert_eq!(both, strings(&["Alpha Dental", "Bravo Law"]));

    // Bad filters are 422 naming the parameter.
    for (query, field) in [
        ("status=sleeping", "status"),
        ("licence=p3", "licence"),
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("cursor=garbage", "cursor"),
    ] {
        let problem = admin
            .get_raw(&format!("/v1/tenants?{query}"))
            .await
            .expect_problem(422, "validation_failed");
        let fields: Vec<String> = field_errors(&problem).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec![field.to_owned()], "?{query}: {problem}");
    }
    let long = "x".repeat(201);
    admin.get_raw(&format!("/v1/tenants?q={long}")).await.expect_problem(422, "validation_failed");
}

#[tokio::test]
async fn offboarding_deletes_the_credentials_keeps_the_history_and_frees_the_entra_tenant() {
    let (_app, _sim, admin) = start("", &[(READY, "Leaving", "")]).await;
    let id = id_of(&onboard(&admin, &tenant_body(READY, "Leaving")).await);
    let path = format!("/v1/tenants/{id}");
    let verified = verify(&admin, &id).await;
    assert_eq!(verified["status"], "ready");
    admin.patch_json(&path, &json!({"display_name": "Leaving Soon", "tags": ["gone"]}), 200).await;

    let offboarded = admin.delete(&path, 200).await;
    assert_eq!(offboarded["id"], id.as_str());
    assert_eq!(offboarded["status"], "offboarded", "{offboarded}");
    assert_eq!(offboarded["status_reason"], Value::Null);
    assert_eq!(offboarded["credentials"], Value::Null, "{offboarded}");
    assert!(offboarded["offboarded_at"].is_string(), "{offboarded}");
    assert_eq!(offboarded["display_name"], "Leaving Soon");
    assert_eq!(offboarded["tags"], json!(["gone"]));
    assert_eq!(offboarded["readiness"], verified["readiness"], "the last report is kept");
    // Again: the same answer.
    let again = admin.delete(&path, 200).await;
    assert_eq!(again, offboarded);
    // Still readable by id; out of the default list.
    assert_eq!(admin.get(&path, 200).await, offboarded);
    let list = admin.get("/v1/tenants", 200).await;
    assert_eq!(list["total"], 0, "{list}");
    let list = admin.get("/v1/tenants?include_offboarded=true", 200).await;
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(items(&list)[0]["status"], "offboarded");
    // No more work on it.
    admin.post_empty_raw(&format!("{path}/verify")).await.expect_problem(404, "not_found");
    admin
        .put_json_raw(&format!("{path}/credentials"), &secret_credentials(DEFAULT_CLIENT_SECRET))
        .await
        .expect_problem(404, "not_found");
    admin
        .put_json_raw(
            &format!("{path}/credentials?check=false"),
            &secret_credentials(DEFAULT_CLIENT_SECRET),
        )
        .await
        .expect_problem(404, "not_found");
    admin
        .patch_json_raw(&path, &json!({"display_name": "Back"}))
        .await
        .expect_problem(404, "not_found");
    let still = admin.get(&path, 200).await;
    assert_eq!(still, offboarded, "nothing changed it");

    // The Entra tenant can be registered again, as a new tenant.
    let back = onboard(&admin, &tenant_body(READY, "Back Again")).await;
    let back_id = id_of(&back);
    assert_ne!(back_id, id);
    assert_eq!(verify(&admin, &back_id).await["status"], "ready");
    let list = admin.get("/v1/tenants?include_offboarded=true", 200).await;
    assert_eq!(names(&list), strings(&["Back Again", "Leaving Soon"]));

    // The audit log has every write to the tenant, refused ones included.
    let audit = admin.get(&format!("/v1/audit?tenant_id={id}&limit=100"), 200).await;
    let entries: Vec<(String, u64)> = items(&audit)
        .iter()
        .map(|e| {
            assert_eq!(e["tenant_id"], id.as_str(), "{e}");
            (e["action"].as_str().unwrap().to_owned(), e["status"].as_u64().unwrap())
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("POST /v1/tenants", 201),
        ("POST /v1/tenants/{id}/verify", 200),
        ("PATCH /v1/tenants/{id}", 200),
        ("DELETE /v1/tenants/{id}", 200),
        ("DELETE /v1/tenants/{id}", 200),
        ("POST /v1/tenants/{id}/verify", 404),
        ("PUT /v1/tenants/{id}/credentials", 404),
        ("PUT /v1/tenants/{id}/credentials", 404),
        ("PATCH /v1/tenants/{id}", 404),
    ]
    .iter()
    .map(|(a, s)| ((*a).to_owned(), *s))
    .collect();
    assert_eq!(entries, expected, "{audit}");
    let back_audit = admin.get(&format!("/v1/audit?tenant_id={back_id}"), 200).await;
    assert_eq!(items(&back_audit).len(), 2, "{back_audit}");
}

/// `(status, body)` of a response, for comparing two answers.
fn answer(r: &TestResponse) -> (u16, Value) {
    (r.status, r.json())
}

#[tokio::test]
async fn keys_restricted_to_a_tenant_see_nothing_of_the_others() {
    let (app, _sim, admin) =
        start("", &[(READY, "Alpha Mine", ""), (OTHER, "Bravo Theirs", "")]).await;
    let mut a_body = tenant_body(READY, "Alpha Mine");
    a_body["tags"] = json!(["shared"]);
    let a = id_of(&onboard(&admin, &a_body).await);
    let mut b_body = tenant_body(OTHER, "Bravo Theirs");
    b_body["tags"] = json!(["shared"]);
    b_body["external_refs"] = json!({"psa": "B-SECRET-REF"});
    let b_tenant = onboard(&admin, &b_body).await;
    let b = id_of(&b_tenant);
    verify(&admin, &b).await;
    let b_before = admin.get(&format!("/v1/tenants/{b}"), 200).await;
    let ghost = TenantId::new().to_string();
    let only_a = [a.parse::<TenantId>().unwrap()];
    let viewer = app.client_with(&app.key_with(Role::Viewer, Some(&only_a)).await);
    let operator = app.client_with(&app.key_with(Role::Operator, Some(&only_a)).await);

    for (who, client) in [("viewer", &viewer), ("operator", &operator)] {
        let mut calls = Vec::new();
        for target in [&b, &ghost] {
            let path = format!("/v1/tenants/{target}");
            calls.push(vec![
                ("GET", client.get_raw(&path).await),
                ("PATCH", client.patch_json_raw(&path, &json!({"display_name": "Mine now"})).await),
                ("DELETE", client.delete_raw(&path).await),
                ("verify", client.post_empty_raw(&format!("{path}/verify")).await),
                (
                    "PUT credentials",
                    client
                        .put_json_raw(
                            &format!("{path}/credentials?check=false"),
                            &secret_credentials(WRONG_SECRET),
                        )
                        .await,
                ),
                ("audit", client.get_raw(&format!("/v1/audit?tenant_id={target}")).await),
            ]);
        }
        let (on_b, on_ghost) = (&calls[0], &calls[1]);
        for ((op, b_resp), (_, ghost_resp)) in on_b.iter().zip(on_ghost) {
            assert_eq!(
                answer(b_resp),
                answer(ghost_resp),
                "{who} {op}: another tenant must look exactly like a nonexistent one"
            );
            assert!(!b_resp.text().contains("Bravo"), "{who} {op}: {}", b_resp.text());
            // An operator is told "not found"; a viewer is refused every write by its role
            // before any tenant is looked at, for every id alike.
            let read = matches!(*op, "GET" | "audit");
            if who == "operator" || read {
                b_resp.expect_problem(404, "not_found");
            } else {
                b_resp.expect_problem(403, "forbidden_role");
            }
        }

        // Lists and counts hold only A, whatever the filters.
        let list = client.get("/v1/tenants", 200).await;
        assert_eq!(list["total"], 1, "{who}: {list}");
        assert_eq!(items(&list).iter().map(id_of).collect::<Vec<_>>(), vec![a.clone()]);
        let by_guid = format!("q={OTHER}");
        for query in [
            "q=bravo",
            "q=B-SECRET-REF",
            by_guid.as_str(),
            "status=ready",
            "include_offboarded=true&q=theirs",
        ] {
            let page = client.get(&format!("/v1/tenants?{query}"), 200).await;
            assert_eq!(page["total"], 0, "{who} ?{query}: {page}");
            assert!(items(&page).is_empty(), "{who} ?{query}: {page}");
        }
        let shared = client.get("/v1/tenants?tag=shared&include_offboarded=true", 200).await;
        assert_eq!(shared["total"], 1, "{who}: {shared}");
        // Its audit view holds A's entries only.
        let audit = client.get("/v1/audit?limit=500", 200).await;
        assert!(items(&audit).iter().all(|e| e["tenant_id"] == a.as_str()), "{who}: {audit}");
        client.get(&format!("/v1/audit?tenant_id={a}"), 200).await;
        client.get(&format!("/v1/tenants/{a}"), 200).await;
    }

    // Restricted keys cannot onboard or import.
    let csv = format!("{CSV_HEADER}{}", csv_row(77, "Sneaky"));
    operator
        .post_json_raw("/v1/tenants", &tenant_body(&row_guid(77), "Sneaky"))
        .await
        .expect_problem(403, "restricted_key");
    operator
        .post_body_raw("/v1/tenants:import", "text/csv", csv.clone())
        .await
        .expect_problem(403, "restricted_key");
    operator
        .post_body_raw("/v1/tenants:import?dry_run=true", "text/csv", csv.clone())
        .await
        .expect_problem(403, "restricted_key");
    viewer
        .post_json_raw("/v1/tenants", &tenant_body(&row_guid(77), "Sneaky"))
        .await
        .expect_problem(403, "forbidden_role");
    viewer
        .post_body_raw("/v1/tenants:import", "text/csv", csv)
        .await
        .expect_problem(403, "forbidden_role");

    // On its own tenant, the viewer reads but cannot write; the operator can.
    let path = format!("/v1/tenants/{a}");
    viewer
        .patch_json_raw(&path, &json!({"display_name": "X"}))
        .await
        .expect_problem(403, "forbidden_role");
    viewer.post_empty_raw(&format!("{path}/verify")).await.expect_problem(403, "forbidden_role");
    viewer.delete_raw(&path).await.expect_problem(403, "forbidden_role");
    viewer
        .put_json_raw(&format!("{path}/credentials"), &secret_credentials(DEFAULT_CLIENT_SECRET))
        .await
        .expect_problem(403, "forbidden_role");
    let renamed = operator.patch_json(&path, &json!({"display_name": "Alpha Renamed"}), 200).await;
    assert_eq!(renamed["display_name"], "Alpha Renamed");
    let rotated = operator
        .put_json(&format!("{path}/credentials"), &secret_credentials(DEFAULT_CLIENT_SECRET), 200)
        .await;
    assert_ne!(rotated["credentials"]["id"], renamed["credentials"]["id"]);
    assert_eq!(verify(&operator, &a).await["status"], "ready");

    // B and everything else are as they were.
    assert_eq!(admin.get(&format!("/v1/tenants/{b}"), 200).await, b_before);
    let all = admin.get("/v1/tenants?include_offboarded=true", 200).await;
    assert_eq!(names(&all), strings(&["Alpha Renamed", "Bravo Theirs"]), "{all}");
}

#[tokio::test]
async fn many_tenants_are_verified_in_one_call_each_within_the_callers_reach() {
    let (app, _sim, admin) = start(
        "",
        &[
            (READY, "Ready", ""),
            (NO_CONSENT, "No consent", "consented = false"),
            (OTHER, "Other", ""),
        ],
    )
    .await;
    let ready = id_of(&onboard(&admin, &tenant_body(READY, "Ready")).await);
    let no_consent = id_of(&onboard(&admin, &tenant_body(NO_CONSENT, "No consent")).await);
    let other = id_of(&onboard(&admin, &tenant_body(OTHER, "Other")).await);
    let gone = id_of(&onboard(&admin, &tenant_body(UNKNOWN, "Gone")).await);
    admin.delete(&format!("/v1/tenants/{gone}"), 200).await;

    // Every active tenant, when no ids are given.
    let all = admin.post_json("/v1/tenants:verify", &json!({}), 200).await;
    assert_eq!(all["counts"], json!({"ready": 2, "unreachable": 1}), "{all}");
    let reason_of = |report: &Value, id: &str| {
        report["results"].as_array().unwrap().iter().find(|r| r["tenant_id"] == id).cloned()
    };
    assert_eq!(reason_of(&all, &no_consent).unwrap()["reason"], "consent_missing");
    assert!(reason_of(&all, &gone).is_none(), "offboarded tenants are not verified: {all}");
    // The checks were recorded on each tenant.
    assert_eq!(admin.get(&format!("/v1/tenants/{ready}"), 200).await["status"], "ready");

    // A restricted key verifies its own tenants; every other id is "not_found", exactly like
    // an id that does not exist.
    let tenant: TenantId = ready.parse().unwrap();
    let restricted = app.client_with(&app.key_with(Role::Operator, Some(&[tenant])).await);
    let own = restricted.post_json("/v1/tenants:verify", &json!({}), 200).await;
    assert_eq!(own["counts"], json!({"ready": 1}), "{own}");
    let asked = restricted
        .post_json(
            "/v1/tenants:verify",
            &json!({"tenant_ids": [ready, other, "ten_0196f1c2a7e07c3b8d2e4f5a6b7c8d9e"]}),
            200,
        )
        .await;
    let statuses: Vec<&str> = asked["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, vec!["ready", "not_found", "not_found"], "{asked}");
    let viewer = app.client_with(&app.key_with(Role::Viewer, None).await);
    viewer
        .post_json_raw("/v1/tenants:verify", &json!({}))
        .await
        .expect_problem(403, "forbidden_role");
}
