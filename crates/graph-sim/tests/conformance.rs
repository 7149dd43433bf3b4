//! Drives the simulator through real HTTP and checks status codes, headers and bodies against
//! the Graph facts.

#![allow(clippy::unwrap_used)]

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use sspr_graph_sim::{
    Enablement, Faults, GraphSim, LegacySspr, Scenario, ScriptedFault,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};

const SCENARIO: &str = r#"
seed = 11
[settings]
time_speed = 0.0
page_size = 10
[settings.throttle]
reports = false                # the reporting buckets have tests of their own

[[tenants]]
id = "0b6a3a8e-1111-4c2d-9e7f-000000000001"
name = "Contoso"
users = 35
admins = 2
guests = 3
licence = "business_premium"
hybrid = true
migration_state = "migrationComplete"
[tenants.faults]
replication_delay_secs = 5
[tenants.behaviour]
registration_share = 1.0
registration_delay_hours = 24.0
reset_share = 1.0
reset_delay_hours = 24.0

[[tenants]]
id = "0b6a3a8e-2222-4c2d-9e7f-000000000002"
name = "Fabrikam"
users = 12
licence = "business_standard"

[[tenants]]
id = "0b6a3a8e-3333-4c2d-9e7f-000000000003"
name = "Northwind"
users = 8
consented = false

[[tenants]]
id = "0b6a3a8e-4444-4c2d-9e7f-000000000004"
name = "Tailspin"
users = 8
roles = ["User.Read.All"]
"#;

const CONTOSO: &str = "0b6a3a8e-1111-4c2d-9e7f-000000000001";
const FABRIKAM: &str = "0b6a3a8e-2222-4c2d-9e7f-000000000002";
const NORTHWIND: &str = "0b6a3a8e-3333-4c2d-9e7f-000000000003";
const TAILSPIN: &str = "0b6a3a8e-4444-4c2d-9e7f-000000000004";

struct Sim {
    sim: GraphSim,
    base: String,
    http: Client,
    _running: sspr_graph_sim::RunningSim,
}

async fn start(scenario: &str) -> Sim {
    let sim = GraphSim::from_scenario(&Scenario::parse(scenario).unwrap()).unwrap();
    let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    Sim { base: running.base_url(), sim, http: Client::new(), _running: running }
}

impl Sim {
    async fn token_form(&self, tenant: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/{tenant}/oauth2/v2.0/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        let path = format!("/{tenant}/oauth2/v2.0/token");
        if let Err(errors) = spec().validate_response("POST", &path, status.as_u16(), &body) {
            panic!("token response does not match the schema:\n{}\n{body}", errors.join("\n"));
        }
        (status, body)
    }

    async fn token(&self, tenant: &str) -> String {
        let (status, body) = self
            .token_form(
                tenant,
                &[
                    ("client_id", DEFAULT_CLIENT_ID),
                    ("client_secret", DEFAULT_CLIENT_SECRET),
                    ("scope", "https://graph.microsoft.com/.default"),
                    ("grant_type", "client_credentials"),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn call(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}/v1.0{path}", self.base)
        };
        let method_name = method.as_str().to_owned();
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header("client-request-id", "c0ffee00-1111-2222-3333-444455556666");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let headers = r.headers().clone();
        let url = r.url().clone();
        let text = r.text().await.unwrap();
        let value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        // Every response must match the shared Graph OpenAPI subset (the one deliberately
        // undocumented path excepted).
        let spec_path = url.path().strip_prefix("/v1.0").unwrap_or(url.path()).to_owned();
        let checked = if spec_path == "/nonsense" {
            Ok(())
        } else {
            spec().validate_response(&method_name, &spec_path, status.as_u16(), &value)
        };
        if let Err(errors) = checked {
            panic!(
                "{method_name} {spec_path} {status}: the response does not match the Graph schema:\n{}\n{value}",
                errors.join("\n")
            );
        }
        (status, headers, value)
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let (s, _, b) = self.call(token, reqwest::Method::GET, path, None).await;
        (s, b)
    }
}

fn spec() -> &'static sspr_openapi_check::Spec {
    static SPEC: std::sync::OnceLock<sspr_openapi_check::Spec> = std::sync::OnceLock::new();
    SPEC.get_or_init(sspr_openapi_check::Spec::graph_subset)
}

fn assert_graph_error(body: &Value, code: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string());
    let inner = &body["error"]["innerError"];
    assert!(inner["request-id"].is_string() && inner["date"].is_string(), "{body}");
    assert!(inner["client-request-id"].is_string());
}

#[tokio::test]
async fn token_endpoint_issues_tokens_and_answers_aad_errors() {
    let s = start(SCENARIO).await;
    let (status, body) = s
        .token_form(
            "contoso.onmicrosoft.com",
            &[
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
                ("scope", "https://graph.microsoft.com/.default"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_i64().unwrap() > 0);

    let good = [
        ("client_id", DEFAULT_CLIENT_ID),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut f = good.to_vec();
        f.push(extra);
        f
    };
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case<'_>> = vec![
        (CONTOSO, with(("client_secret", "wrong")), 401, "invalid_client", 7000215),
        (
            "nosuchtenant.onmicrosoft.com",
            with(("client_secret", DEFAULT_CLIENT_SECRET)),
            400,
            "invalid_request",
            90002,
        ),
        (
            NORTHWIND,
            with(("client_secret", DEFAULT_CLIENT_SECRET)),
            400,
            "unauthorized_client",
            700016,
        ),
    ];
    for (tenant, form, status, error, code) in cases {
        let (st, body) = s.token_form(tenant, &form).await;
        assert_eq!(st.as_u16(), status, "{body}");
        assert_eq!(body["error"], error);
        assert_eq!(body["error_codes"], json!([code]));
        assert!(body["error_description"].as_str().unwrap().starts_with(&format!("AADSTS{code}:")));
        for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
            assert!(body[k].is_string(), "{k} missing in {body}");
        }
    }
    let (st, body) = s
        .token_form(
            CONTOSO,
            &[
                ("client_id", DEFAULT_CLIENT_ID),
                ("client_secret", DEFAULT_CLIENT_SECRET),
                ("scope", "User.Read"),
                ("grant_type", "client_credentials"),
            ],
        )
        .await;
    assert_eq!((st.as_u16(), body["error"].as_str()), (400, Some("invalid_scope")));

    // An expired secret is refused with its own code.
    s.sim.set_faults(CONTOSO, Faults { secret_expired: true, ..Default::default() }).unwrap();
    let (st, body) = s.token_form(CONTOSO, &with(("client_secret", DEFAULT_CLIENT_SECRET))).await;
    assert_eq!((st.as_u16(), body["error_codes"][0].as_u64()), (401, Some(7000222)));
}

#[tokio::test]
async fn certificate_assertions_are_verified() {
    use base64::Engine;
    let public = include_str!("data/test-app-key.pub.pem");
    let private = include_str!("data/test-app-key.pem");
    let thumb = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([7u8; 32]);
    let scenario = format!(
        "seed = 1\n[settings]\ntime_speed = 0.0\n[[apps]]\nclient_id = \"{DEFAULT_CLIENT_ID}\"\n[[apps.certificates]]\nx5t_s256 = \"{thumb}\"\npublic_key_pem = '''\n{public}'''\n[[tenants]]\nid = \"{CONTOSO}\"\nusers = 5\n"
    );
    let s = start(&scenario).await;
    let now = s.sim.clock().now().timestamp();
    let assertion = |aud: &str, exp: i64, kid: &str| {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.x5t_s256 = Some(kid.to_owned());
        let claims = json!({"aud": aud, "iss": DEFAULT_CLIENT_ID, "sub": DEFAULT_CLIENT_ID, "jti": "j1", "nbf": now - 10, "exp": exp});
        jsonwebtoken::encode(
            &header,
            &claims,
            &jsonwebtoken::EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    let form = |a: String| {
        vec![
            ("client_id".to_owned(), DEFAULT_CLIENT_ID.to_owned()),
            ("scope".to_owned(), "https://graph.microsoft.com/.default".to_owned()),
            ("grant_type".to_owned(), "client_credentials".to_owned()),
            (
                "client_assertion_type".to_owned(),
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".to_owned(),
            ),
            ("client_assertion".to_owned(), a),
        ]
    };
    let aud = format!("https://login.microsoftonline.com/{CONTOSO}/oauth2/v2.0/token");
    let post = |f: Vec<(String, String)>| {
        let url = format!("{}/{CONTOSO}/oauth2/v2.0/token", s.base);
        let http = s.http.clone();
        async move {
            let r = http.post(url).form(&f).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(form(assertion(&aud, now + 600, &thumb))).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(form(assertion(&aud, now - 1, &thumb))).await;
    assert_eq!((status, body["error_codes"][0].as_u64()), (401, Some(700027)), "expired");
    let (status, _) = post(form(assertion(
        "https://login.microsoftonline.com/other/oauth2/v2.0/token",
        now + 600,
        &thumb,
    )))
    .await;
    assert_eq!(status, 401, "wrong audience");
    let (status, _) = post(form(assertion(&aud, now + 600, "unknownthumbprint"))).await;
    assert_eq!(status, 401, "unknown certificate");
}

#[tokio::test]
async fn graph_errors_carry_request_ids_and_permissions_are_enforced() {
    let s = start(SCENARIO).await;
    let (status, headers, body) =
        s.call("not-a-token", reqwest::Method::GET, "/organization", None).await;
    assert_eq!(status, 401);
    assert_graph_error(&body, "InvalidAuthenticationToken");
    assert!(headers.get("request-id").is_some());
    assert_eq!(
        body["error"]["innerError"]["client-request-id"],
        "c0ffee00-1111-2222-3333-444455556666"
    );

    let limited = s.token(TAILSPIN).await;
    let (status, body) = s.get(&limited, "/policies/authenticationMethodsPolicy").await;
    assert_eq!(status, 403);
    assert_graph_error(&body, "Authorization_RequestDenied");
    let (status, _) = s.get(&limited, "/users").await;
    assert_eq!(status, 200);

    let token = s.token(CONTOSO).await;
    let (status, body) = s.get(&token, "/directory/onPremisesSynchronization").await;
    assert_eq!(status, 403, "app-only cannot read writeback state: {body}");
    let (status, body) = s.get(&token, "/nonsense").await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "BadRequest");
}

#[tokio::test]
async fn organization_and_licences_read_like_graph() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let (status, body) = s.get(&token, "/organization").await;
    assert_eq!(status, 200);
    assert_eq!(body["value"][0]["id"], CONTOSO);
    assert_eq!(body["value"][0]["onPremisesSyncEnabled"], true);
    let (status, body) = s.get(&token, "/subscribedSkus").await;
    assert_eq!(status, 200);
    let plans: Vec<&str> = body["value"][0]["servicePlans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["servicePlanId"].as_str().unwrap())
        .collect();
    assert!(plans.contains(&sspr_graph_sim::PLAN_P1));
    assert_eq!(body["value"][0]["skuPartNumber"], "SPB");
    let (status, body) = s.get(&token, "/subscribedSkus?$filter=skuPartNumber%20eq%20'SPB'").await;
    assert_eq!(status, 400, "subscribedSkus does not support $filter: {body}");
}

#[tokio::test]
async fn method_configurations_follow_patch_semantics() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let (status, policy) = s.get(&token, "/policies/authenticationMethodsPolicy").await;
    assert_eq!(status, 200);
    assert_eq!(policy["policyMigrationState"], "migrationComplete");
    assert!(
        policy["authenticationMethodConfigurations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "Sms")
    );

    let path = "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/sms";
    let (status, _, body) =
        s.call(&token, reqwest::Method::PATCH, path, Some(json!({"state": "enabled"}))).await;
    assert_eq!(status, 400, "@odata.type is required: {body}");
    let (status, _, _) = s
        .call(&token, reqwest::Method::PATCH, path, Some(json!({"@odata.type": "#microsoft.graph.emailAuthenticationMethodConfiguration", "state": "enabled"})))
        .await;
    assert_eq!(status, 400, "a wrong @odata.type is refused");
    let sms = "#microsoft.graph.smsAuthenticationMethodConfiguration";
    let (status, _, _) = s
        .call(
            &token,
            reqwest::Method::PATCH,
            path,
            Some(json!({"@odata.type": sms, "state": "on"})),
        )
        .await;
    assert_eq!(status, 400, "bad enum");
    let (status, _, _) = s
        .call(&token, reqwest::Method::PATCH, path, Some(json!({"@odata.type": sms, "includeTargets": [{"targetType": "group", "id": "5bd6e3b1-0000-4000-8000-000000000000"}]})))
        .await;
    assert_eq!(status, 400, "target group must exist");
    let (status, _, body) = s
        .call(&token, reqwest::Method::PATCH, path, Some(json!({"@odata.type": sms, "state": "enabled", "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": false}]})))
        .await;
    assert_eq!(status, 204, "{body}");
    let (_, sms_config) = s
        .get(&token, "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/SMS")
        .await;
    assert_eq!(sms_config["state"], "enabled");
    assert_eq!(sms_config["id"], "Sms");

    // Registration campaign: 200 with the policy; snooze over 14 days refused.
    let campaign = |snooze: i64| json!({"registrationEnforcement": {"authenticationMethodsRegistrationCampaign": {"snoozeDurationInDays": snooze, "state": "enabled", "excludeTargets": [], "includeTargets": [{"id": "all_users", "targetType": "group", "targetedAuthenticationMethod": "microsoftAuthenticator"}]}}});
    s.sim.clock().advance(chrono::TimeDelta::seconds(60));
    let (status, _, body) = s
        .call(
            &token,
            reqwest::Method::PATCH,
            "/policies/authenticationMethodsPolicy",
            Some(campaign(1)),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        body["registrationEnforcement"]["authenticationMethodsRegistrationCampaign"]["state"],
        "enabled"
    );
    assert_ne!(body["lastModifiedDateTime"], policy["lastModifiedDateTime"]);
    let (status, _, _) = s
        .call(
            &token,
            reqwest::Method::PATCH,
            "/policies/authenticationMethodsPolicy",
            Some(campaign(15)),
        )
        .await;
    assert_eq!(status, 400);
    // DELETE returns a configuration to its default.
    let (status, _, _) = s.call(&token, reqwest::Method::DELETE, path, None).await;
    assert_eq!(status, 204);
    let (_, sms_config) = s.get(&token, path).await;
    assert_eq!(sms_config["state"], "disabled");
}

#[tokio::test]
async fn groups_validate_replicate_and_answer_member_errors_exactly() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let (status, _, body) = s
        .call(
            &token,
            reqwest::Method::POST,
            "/groups",
            Some(json!({"displayName": "x", "mailEnabled": false, "securityEnabled": true})),
        )
        .await;
    assert_eq!(status, 400, "mailNickname is required");
    assert_graph_error(&body, "Request_BadRequest");
    let (status, _, _) = s.call(&token, reqwest::Method::POST, "/groups", Some(json!({"displayName": "x", "mailEnabled": false, "mailNickname": "bad nick", "securityEnabled": true}))).await;
    assert_eq!(status, 400, "spaces are not allowed in mailNickname");
    let (status, _, group) = s
        .call(&token, reqwest::Method::POST, "/groups", Some(json!({"displayName": "SSPR pilot", "mailEnabled": false, "mailNickname": "ssprpilot", "securityEnabled": true, "groupTypes": []})))
        .await;
    assert_eq!(status, 201, "{group}");
    let id = group["id"].as_str().unwrap().to_owned();

    // Replication delay: a read by id right after creating is 404 for a few seconds.
    let (status, body) = s.get(&token, &format!("/groups/{id}")).await;
    assert_eq!(status, 404);
    assert_graph_error(&body, "Request_ResourceNotFound");
    s.sim.clock().advance(chrono::TimeDelta::seconds(6));
    let (status, _) = s.get(&token, &format!("/groups/{id}")).await;
    assert_eq!(status, 200);
    let (_, found) = s.get(&token, "/groups?$filter=displayName%20eq%20'SSPR%20pilot'").await;
    assert_eq!(found["value"].as_array().unwrap().len(), 1);

    let (_, users) = s.get(&token, "/users?$top=3").await;
    let user = users["value"][2]["id"].as_str().unwrap().to_owned();
    let add =
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{user}")});
    let refpath = format!("/groups/{id}/members/$ref");
    let (status, _, _) = s.call(&token, reqwest::Method::POST, &refpath, Some(add.clone())).await;
    assert_eq!(status, 204);
    let (status, _, body) = s.call(&token, reqwest::Method::POST, &refpath, Some(add)).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "One or more added object references already exist for the following modified properties: 'members'."
    );
    let ghost = json!({"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/ffffffff-0000-4000-8000-000000000000"});
    let (status, _, _) = s.call(&token, reqwest::Method::POST, &refpath, Some(ghost)).await;
    assert_eq!(status, 404);

    // members@odata.bind: at most 20, atomic.
    let (_, page) = s.get(&token, "/users?$top=25").await;
    let ids: Vec<String> = page["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    let binds = |n: usize, skip: usize| -> Vec<String> {
        ids.iter()
            .skip(skip)
            .take(n)
            .map(|i| format!("https://graph.microsoft.com/v1.0/directoryObjects/{i}"))
            .collect()
    };
    let (status, _, _) = s
        .call(
            &token,
            reqwest::Method::PATCH,
            &format!("/groups/{id}"),
            Some(json!({"members@odata.bind": binds(21, 3)})),
        )
        .await;
    assert_eq!(status, 400, "21 binds");
    let (status, _, _) = s
        .call(
            &token,
            reqwest::Method::PATCH,
            &format!("/groups/{id}"),
            Some(json!({"members@odata.bind": binds(20, 3)})),
        )
        .await;
    assert_eq!(status, 204);
    let (_, members) = s.get(&token, &format!("/groups/{id}/members?$top=100")).await;
    assert_eq!(members["value"].as_array().unwrap().len(), 21);
    let (status, _, _) = s
        .call(&token, reqwest::Method::DELETE, &format!("/groups/{id}/members/{user}/$ref"), None)
        .await;
    assert_eq!(status, 204);
}

#[tokio::test]
async fn users_page_with_next_links_until_every_user_is_seen() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let mut url = "/users".to_owned();
    let mut seen = std::collections::BTreeSet::new();
    let mut pages = 0;
    loop {
        let (status, body) = s.get(&token, &url).await;
        assert_eq!(status, 200);
        pages += 1;
        for u in body["value"].as_array().unwrap() {
            assert!(seen.insert(u["id"].as_str().unwrap().to_owned()), "a user appeared twice");
        }
        match body["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen.len(), 35);
    assert_eq!(pages, 4, "page_size 10");
}

#[tokio::test]
async fn sspr_state_follows_the_legacy_policy_and_reports_need_premium() {
    let s = start(SCENARIO).await;
    let standard = s.token(FABRIKAM).await;
    let (status, body) =
        s.get(&standard, "/reports/authenticationMethods/userRegistrationDetails").await;
    assert_eq!(status, 403);
    assert_graph_error(&body, "Authentication_RequestFromNonPremiumTenantOrB2CTenant");

    let token = s.token(CONTOSO).await;
    let (_, group) = s
        .call(&token, reqwest::Method::POST, "/groups", Some(json!({"displayName": "SSPR pilot", "mailEnabled": false, "mailNickname": "ssprpilot", "securityEnabled": true})))
        .await
        .2
        .pipe(|g| (0, g));
    let gid = group["id"].as_str().unwrap().to_owned();
    s.sim.clock().advance(chrono::TimeDelta::seconds(10));
    let (_, users) = s.get(&token, "/users?$filter=userType%20eq%20'Member'&$top=20").await;
    let pilot = users["value"][5]["id"].as_str().unwrap().to_owned();
    let other = users["value"][6]["id"].as_str().unwrap().to_owned();
    s.call(&token, reqwest::Method::POST, &format!("/groups/{gid}/members/$ref"), Some(json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{pilot}")}))).await;

    let details = |token: String, id: String| {
        let s = &s;
        async move {
            s.get(&token, &format!("/reports/authenticationMethods/userRegistrationDetails/{id}"))
                .await
                .1
        }
    };
    let before = details(token.clone(), pilot.clone()).await;
    assert_eq!(before["isSsprEnabled"], false, "nothing enabled yet");
    assert_eq!(before["isSsprCapable"], false);
    s.sim
        .set_legacy_sspr(
            CONTOSO,
            LegacySspr {
                enablement: Enablement::Selected,
                group_id: Some(gid.clone()),
                methods_required: 2,
                ..Default::default()
            },
        )
        .unwrap();
    let enabled_now = details(token.clone(), pilot.clone()).await;
    assert_eq!(enabled_now["isSsprEnabled"], true);
    assert_eq!(enabled_now["isSsprRegistered"], false, "registration takes time");
    assert_eq!(details(token.clone(), other.clone()).await["isSsprEnabled"], false);

    // After migration, registered methods count for SSPR only where the methods policy
    // enables them: turn on SMS and email for everyone, as the rollout's pilot step does.
    for (id, ty) in [("Sms", "sms"), ("Email", "email")] {
        let body = json!({"@odata.type": format!("#microsoft.graph.{ty}AuthenticationMethodConfiguration"), "state": "enabled",
            "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": false}]});
        let path = format!(
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{id}"
        );
        assert_eq!(s.call(&token, reqwest::Method::PATCH, &path, Some(body)).await.0, 204);
    }
    // Over simulated weeks the prompted pilot registers two methods, becomes capable, and
    // resets its password; tokens issued before have expired by then.
    s.sim.clock().advance(chrono::TimeDelta::days(60));
    assert_eq!(s.get(&token, "/organization").await.0, 401, "the old token has expired");
    let token = s.token(CONTOSO).await;
    let d = details(token.clone(), pilot.clone()).await;
    assert_eq!(d["isSsprRegistered"], true, "{d}");
    assert_eq!(d["isSsprCapable"], true);
    assert!(d["methodsRegistered"].as_array().unwrap().len() >= 2);
    assert_eq!(details(token.clone(), other.clone()).await["isSsprCapable"], false);
    let (_, filtered) = s.get(&token, "/reports/authenticationMethods/userRegistrationDetails?$filter=isSsprEnabled%20eq%20true%20and%20isAdmin%20eq%20false").await;
    let enabled: Vec<&str> =
        filtered["value"].as_array().unwrap().iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(enabled, vec![pilot.as_str()]);
    let (_, derived) = s.get(&token, "/auditLogs/directoryAudits?$top=999").await;
    let kinds: Vec<(&str, &str)> = derived["value"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["initiatedBy"]["user"]["id"] == pilot.as_str())
        .map(|e| (e["activityDisplayName"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("User registered for self-service password reset", "success")),
        "{kinds:?}"
    );
    assert!(kinds.contains(&("Reset password (self-service)", "success")), "{kinds:?}");

    let (status, summary) = s.get(&token, "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='all',includedUserRoles='all')").await;
    assert_eq!(status, 200);
    assert_eq!(summary["totalUserCount"], 35);
    let enabled_count = summary["userRegistrationFeatureCounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["feature"] == "ssprEnabled")
        .unwrap()["userCount"]
        .as_u64()
        .unwrap();
    assert_eq!(enabled_count, 3, "the pilot plus two admins (admin SSPR is on by default)");

    s.sim.record_reset(CONTOSO, &pilot).unwrap();
    let (status, audits) = s.get(&token, "/auditLogs/directoryAudits?$filter=activityDisplayName%20eq%20'Reset%20password%20(self-service)'").await;
    assert_eq!(status, 200);
    let events = audits["value"].as_array().unwrap();
    assert!(events.iter().any(|e| e["initiatedBy"]["user"]["id"] == pilot.as_str()));
    assert!(events.iter().all(|e| e["loggedByService"] == "Self-service Password Management"));
}

trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}
impl<T> Pipe for T {}

#[tokio::test]
async fn throttling_answers_429_with_retry_after_and_counts_early_retries() {
    let scenario = SCENARIO.replace("reports = false", "reports = false\nscale = 0.001");
    let s = start(&scenario).await;
    let token = s.token(TAILSPIN).await;
    // A small tenant gets 3.5 RU per 10 s at this scale; GET /users costs 2.
    let (status, _, _) = s.call(&token, reqwest::Method::GET, "/users", None).await;
    assert_eq!(status, 200);
    let (status, headers, body) = s.call(&token, reqwest::Method::GET, "/users", None).await;
    assert_eq!(status, 429, "{body}");
    assert_graph_error(&body, "TooManyRequests");
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    assert!(headers["x-ms-throttle-scope"].to_str().unwrap().starts_with("Tenant_Application/"));
    assert_eq!(headers["x-ms-throttle-information"], "ResourceUnitLimitExceeded");
    // A client that ignores Retry-After is counted...
    assert_eq!(s.sim.stats(TAILSPIN).unwrap().early_requests, 0);
    s.call(&token, reqwest::Method::GET, "/users", None).await;
    assert_eq!(s.sim.stats(TAILSPIN).unwrap().early_requests, 1);
    // ...one that waits is not, and is served.
    s.sim.clock().advance(chrono::TimeDelta::seconds(retry_after as i64 + 10));
    let (status, headers, _) = s.call(&token, reqwest::Method::GET, "/users", None).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ms-resource-unit"], "2");
    assert_eq!(s.sim.stats(TAILSPIN).unwrap().early_requests, 1);
    // Another tenant is not throttled by this one.
    let other = s.token(CONTOSO).await;
    assert_eq!(s.get(&other, "/organization").await.0, 200);
}

#[tokio::test]
async fn injected_faults_look_like_graph_outages() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let script = [
        ScriptedFault { status: 503, retry_after: Some(3) },
        ScriptedFault { status: 504, retry_after: None },
        ScriptedFault { status: 0, retry_after: None },
    ];
    s.sim
        .set_faults(CONTOSO, Faults { script: script.into_iter().collect(), ..Default::default() })
        .unwrap();
    let (status, headers, body) = s.call(&token, reqwest::Method::GET, "/organization", None).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "3");
    assert_graph_error(&body, "serviceNotAvailable");
    let (status, headers, _) = s.call(&token, reqwest::Method::GET, "/organization", None).await;
    assert_eq!(status, 504);
    assert!(headers.get("retry-after").is_none());
    let dropped =
        s.http.get(format!("{}/v1.0/organization", s.base)).bearer_auth(&token).send().await;
    let failed = match dropped {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "the connection must be dropped");
    assert_eq!(s.get(&token, "/organization").await.0, 200);
    assert_eq!(s.sim.stats(CONTOSO).unwrap().faults, 3);

    // Revoked consent: existing tokens are refused and no new ones are issued.
    s.sim.set_faults(CONTOSO, Faults { consent_revoked: true, ..Default::default() }).unwrap();
    assert_eq!(s.get(&token, "/organization").await.0, 401);
}

#[tokio::test]
async fn batches_run_items_through_graph_with_dependencies() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let (_, users) = s.get(&token, "/users?$top=2").await;
    let user = users["value"][1]["id"].as_str().unwrap().to_owned();
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/organization"},
        {"id": "2", "method": "GET", "url": "/groups/00000000-0000-4000-8000-000000000000"},
        {"id": "3", "method": "POST", "url": "/groups/00000000-0000-4000-8000-000000000000/members/$ref", "dependsOn": ["2"],
         "headers": {"Content-Type": "application/json"}, "body": {"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{user}")}},
        {"id": "4", "method": "GET", "url": "/subscribedSkus", "dependsOn": ["1"]}
    ]});
    let (status, _, body) = s.call(&token, reqwest::Method::POST, "/$batch", Some(batch)).await;
    assert_eq!(status, 200, "{body}");
    let by_id = |id: &str| {
        body["responses"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap().clone()
    };
    assert_eq!(by_id("1")["status"], 200);
    assert_eq!(by_id("2")["status"], 404);
    assert_eq!(by_id("3")["status"], 424);
    assert_eq!(by_id("4")["status"], 200);
    assert_eq!(body["responses"].as_array().unwrap().len(), 4);

    // A 429 given to one item does not make its siblings early: they arrived together. The
    // next request, sent before the Retry-After has passed, is early.
    s.sim
        .set_faults(
            CONTOSO,
            Faults {
                script: [ScriptedFault { status: 429, retry_after: Some(30) }]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
        )
        .unwrap();
    let three = json!({"requests": [
        {"id": "a", "method": "GET", "url": "/organization"},
        {"id": "b", "method": "GET", "url": "/organization"},
        {"id": "c", "method": "GET", "url": "/organization"}
    ]});
    let (_, _, body) = s.call(&token, reqwest::Method::POST, "/$batch", Some(three)).await;
    let statuses: Vec<u64> = body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["status"].as_u64().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|&&st| st == 429).count(), 1, "{body}");
    assert_eq!(s.sim.stats(CONTOSO).unwrap().early_requests, 0);
    s.get(&token, "/organization").await;
    assert_eq!(s.sim.stats(CONTOSO).unwrap().early_requests, 1);

    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/organization"}))
        .collect();
    let (status, _, _) =
        s.call(&token, reqwest::Method::POST, "/$batch", Some(json!({"requests": too_many}))).await;
    assert_eq!(status, 400);
    let dup = json!({"requests": [{"id": "1", "method": "GET", "url": "/organization"}, {"id": "1", "method": "GET", "url": "/users"}]});
    let (status, _, _) = s.call(&token, reqwest::Method::POST, "/$batch", Some(dup)).await;
    assert_eq!(status, 400);
    let no_type = json!({"requests": [{"id": "1", "method": "POST", "url": "/groups", "body": {"displayName": "x"}}]});
    let (status, _, _) = s.call(&token, reqwest::Method::POST, "/$batch", Some(no_type)).await;
    assert_eq!(status, 400, "a body needs a Content-Type");
}

#[tokio::test]
async fn control_api_sets_the_legacy_policy_and_advances_time() {
    let s = start(SCENARIO).await;
    let before = s.sim.clock().now();
    let r = s
        .http
        .post(format!("{}/_sim/clock/advance", s.base))
        .json(&json!({"seconds": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.sim.clock().now() - before, chrono::TimeDelta::seconds(3600));
    let r = s
        .http
        .put(format!("{}/_sim/tenants/{CONTOSO}/legacy-sspr", s.base))
        .json(&json!({"enablement": "all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(s.sim.legacy_sspr(CONTOSO).unwrap().enablement, Enablement::All);
    let r = s
        .http
        .put(format!("{}/_sim/tenants/{CONTOSO}/legacy-sspr", s.base))
        .json(&json!({"enablement": "selected", "group_id": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let state: Value = s
        .http
        .get(format!("{}/_sim/tenants/contoso.onmicrosoft.com", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["id"], CONTOSO);
    assert_eq!(state["legacySspr"]["enablement"], "all");
    let r = s.http.get(format!("{}/_sim/tenants/unknown", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The endpoints the other tests do not reach, each called once through real HTTP (so each
/// response is also checked against the OpenAPI subset).
#[tokio::test]
async fn every_remaining_endpoint_answers_in_graph_shape() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let (status, skus) = s.get(&token, "/subscribedSkus").await;
    assert_eq!(status, 200);
    let sku_id = skus["value"][0]["id"].as_str().unwrap().to_owned();
    assert!(sku_id.starts_with(CONTOSO), "subscribedSku ids are <tenantId>_<skuId>");
    assert_eq!(s.get(&token, &format!("/subscribedSkus/{sku_id}")).await.0, 200);
    assert_eq!(s.get(&token, "/subscribedSkus/nope").await.0, 404);
    let (status, org) = s.get(&token, &format!("/organization/{CONTOSO}")).await;
    assert_eq!((status.as_u16(), org["id"].as_str()), (200, Some(CONTOSO)));
    let (status, configs) = s
        .get(&token, "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations")
        .await;
    assert_eq!(status, 200);
    assert!(configs["value"].as_array().unwrap().len() >= 8);
    assert_eq!(
        s.get(
            &token,
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/nope"
        )
        .await
        .0,
        404
    );

    let (status, authz) = s.get(&token, "/policies/authorizationPolicy").await;
    assert_eq!(status, 200);
    assert_eq!(authz["allowedToUseSSPR"], true);
    let (status, _, _) = s
        .call(
            &token,
            reqwest::Method::PATCH,
            "/policies/authorizationPolicy",
            Some(json!({"allowedToUseSSPR": false})),
        )
        .await;
    assert_eq!(status, 403, "the default app holds no Policy.ReadWrite.Authorization");

    let (status, by_method) =
        s.get(&token, "/reports/authenticationMethods/usersRegisteredByMethod()").await;
    assert_eq!(status, 200);
    assert_eq!(by_method["totalUserCount"], 35);
    let (status, members) =
        s.get(&token, "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='member',includedUserRoles='user')").await;
    assert_eq!(status, 200);
    assert_eq!(members["totalUserCount"], 30, "35 users less 3 guests and 2 admins");

    // userRegistrationDetails pages like every collection.
    let mut url = "/reports/authenticationMethods/userRegistrationDetails".to_owned();
    let mut seen = 0;
    loop {
        let (status, page) = s.get(&token, &url).await;
        assert_eq!(status, 200);
        seen += page["value"].as_array().unwrap().len();
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 35);
    assert_eq!(s.get(&token, "/reports/authenticationMethods/userRegistrationDetails/ffffffff-0000-4000-8000-000000000000").await.0, 404);

    let (_, users) = s.get(&token, "/users?$top=1&$select=id,userPrincipalName").await;
    let upn = users["value"][0]["userPrincipalName"].as_str().unwrap().to_owned();
    assert!(users["value"][0].get("displayName").is_none(), "$select keeps only what was asked");
    let (status, user) = s.get(&token, &format!("/users/{upn}")).await;
    assert_eq!((status.as_u16(), user["userPrincipalName"].as_str()), (200, Some(upn.as_str())));
    let (status, body) = s.get(&token, "/users/nobody@contoso.onmicrosoft.com").await;
    assert_eq!(status, 404);
    assert_graph_error(&body, "Request_ResourceNotFound");

    s.sim.record_reset(CONTOSO, &upn).unwrap();
    let (_, audits) = s.get(&token, "/auditLogs/directoryAudits").await;
    let audit_id = audits["value"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(s.get(&token, &format!("/auditLogs/directoryAudits/{audit_id}")).await.0, 200);

    let (_, _, group) = s
        .call(&token, reqwest::Method::POST, "/groups", Some(json!({"displayName": "tmp", "mailEnabled": false, "mailNickname": "tmp", "securityEnabled": true})))
        .await;
    let gid = group["id"].as_str().unwrap().to_owned();
    s.sim.clock().advance(chrono::TimeDelta::seconds(6));
    assert_eq!(
        s.call(&token, reqwest::Method::DELETE, &format!("/groups/{gid}"), None).await.0,
        204
    );
    assert_eq!(s.get(&token, &format!("/groups/{gid}")).await.0, 404);
}

/// A premium tenant with guests and disabled accounts, and one without premium.
const MEMBERSHIP: &str = r#"
seed = 21
[settings]
time_speed = 0.0
page_size = 50
[settings.throttle]
reports = false

[[tenants]]
id = "0b6a3a8e-5555-4c2d-9e7f-000000000005"
name = "Woodgrove"
users = 12
admins = 2
guests = 2
disabled = 3
licence = "p1"

[[tenants]]
id = "0b6a3a8e-6666-4c2d-9e7f-000000000006"
name = "Litware"
users = 6
licence = "business_standard"
"#;

const WOODGROVE: &str = "0b6a3a8e-5555-4c2d-9e7f-000000000005";
const LITWARE: &str = "0b6a3a8e-6666-4c2d-9e7f-000000000006";
const ALL_MEMBERS_RULE: &str =
    r#"(user.accountEnabled -eq true) -and (user.userType -eq "Member")"#;

impl Sim {
    /// Creates a security group (with `members` bound) and waits out replication.
    async fn group(&self, token: &str, name: &str, members: &[String]) -> String {
        let mut body = json!({"displayName": name, "mailEnabled": false, "mailNickname": name, "securityEnabled": true, "groupTypes": []});
        if !members.is_empty() {
            let binds: Vec<String> = members
                .iter()
                .map(|m| format!("https://graph.microsoft.com/v1.0/directoryObjects/{m}"))
                .collect();
            body["members@odata.bind"] = json!(binds);
        }
        let (status, _, group) =
            self.call(token, reqwest::Method::POST, "/groups", Some(body)).await;
        assert_eq!(status, 201, "{group}");
        self.sim.clock().advance(chrono::TimeDelta::seconds(10));
        group["id"].as_str().unwrap().to_owned()
    }

    async fn ids(&self, token: &str, path: &str) -> Vec<String> {
        let (status, body) = self.get(token, path).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.get("@odata.nextLink").is_none(), "one page expected");
        let mut ids: Vec<String> = body["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    }

    async fn patch(&self, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.call(token, reqwest::Method::PATCH, path, Some(body)).await;
        (status, body)
    }
}

#[tokio::test]
async fn groups_convert_to_dynamic_membership_and_back_like_entra() {
    let s = start(MEMBERSHIP).await;
    let token = s.token(WOODGROVE).await;
    let everyone = s.ids(&token, "/users").await;
    let enabled_members = s
        .ids(&token, "/users?$filter=accountEnabled%20eq%20true%20and%20userType%20eq%20'Member'")
        .await;
    assert_eq!((everyone.len(), enabled_members.len()), (12, 7), "2 guests and 3 disabled");
    let guest = everyone.iter().find(|u| !enabled_members.contains(u)).unwrap().clone();
    let gid = s.group(&token, "pilot", &[enabled_members[0].clone(), guest.clone()]).await;
    let path = format!("/groups/{gid}");
    let to_dynamic = json!({"groupTypes": ["DynamicMembership"], "membershipRule": ALL_MEMBERS_RULE, "membershipRuleProcessingState": "On"});

    // Refusals leave the group as it was.
    let mut with_binds = to_dynamic.clone();
    with_binds["members@odata.bind"] = json!([format!(
        "https://graph.microsoft.com/v1.0/directoryObjects/{}",
        enabled_members[1]
    )]);
    let (status, body) = s.patch(&token, &path, with_binds).await;
    assert_eq!(status, 400, "members cannot be bound while becoming dynamic: {body}");
    assert_graph_error(&body, "Request_BadRequest");
    let (status, _) = s.patch(&token, &path, json!({"groupTypes": ["DynamicMembership"]})).await;
    assert_eq!(status, 400, "a dynamic group needs a rule");
    let mut bad_state = to_dynamic.clone();
    bad_state["membershipRuleProcessingState"] = json!("Sometimes");
    assert_eq!(s.patch(&token, &path, bad_state).await.0, 400, "On or Paused only");
    let (status, _) = s.patch(&token, &path, json!({"groupTypes": ["Unified"]})).await;
    assert_eq!(status, 400, "only DynamicMembership can change");
    assert_eq!(s.ids(&token, &format!("{path}/members")).await.len(), 2);

    // Static to dynamic: the assigned members are replaced by the rule's result.
    let (status, body) = s.patch(&token, &path, to_dynamic).await;
    assert_eq!(status, 204, "{body}");
    let (_, group) = s.get(&token, &path).await;
    assert_eq!(group["groupTypes"], json!(["DynamicMembership"]));
    assert_eq!(group["membershipRule"], ALL_MEMBERS_RULE);
    assert_eq!(group["membershipRuleProcessingState"], "On");
    assert_eq!(s.ids(&token, &format!("{path}/members")).await, enabled_members);
    let add =
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{guest}")});
    let refs = format!("{path}/members/$ref");
    let (status, _, _) = s.call(&token, reqwest::Method::POST, &refs, Some(add.clone())).await;
    assert_eq!(status, 400, "no assigned members in a dynamic group");

    // Dynamic to static: the rule's members stay, as assigned members; the rule is cleared.
    let (status, body) = s.patch(&token, &path, json!({"groupTypes": []})).await;
    assert_eq!(status, 204, "{body}");
    let (_, group) = s.get(&token, &path).await;
    assert_eq!(group["groupTypes"], json!([]));
    assert_eq!(group["membershipRule"], Value::Null);
    assert_eq!(group["membershipRuleProcessingState"], Value::Null);
    assert_eq!(s.ids(&token, &format!("{path}/members")).await, enabled_members);
    let (status, _, _) = s.call(&token, reqwest::Method::POST, &refs, Some(add)).await;
    assert_eq!(status, 204, "a static group takes assigned members again");
    assert_eq!(s.ids(&token, &format!("{path}/members")).await.len(), 8);

    // Microsoft's own conversion sample pauses the rule as it removes the type.
    let (status, _) = s
        .patch(
            &token,
            &path,
            json!({"groupTypes": ["DynamicMembership"], "membershipRule": ALL_MEMBERS_RULE}),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = s
        .patch(&token, &path, json!({"groupTypes": [], "membershipRuleProcessingState": "Paused"}))
        .await;
    assert_eq!(status, 204);
    assert_eq!(s.ids(&token, &format!("{path}/members")).await, enabled_members);
}

#[tokio::test]
async fn dynamic_membership_by_patch_needs_premium() {
    let s = start(MEMBERSHIP).await;
    let token = s.token(LITWARE).await;
    let users = s.ids(&token, "/users").await;
    let gid = s.group(&token, "pilot", &users[..1]).await;
    let path = format!("/groups/{gid}");
    let (status, body) = s
        .patch(&token, &path, json!({"groupTypes": ["DynamicMembership"], "membershipRule": ALL_MEMBERS_RULE, "membershipRuleProcessingState": "On"}))
        .await;
    assert_eq!(status, 400);
    assert_graph_error(&body, "Request_BadRequest");
    assert!(body["error"]["message"].as_str().unwrap().contains("Premium"), "{body}");
    let (_, group) = s.get(&token, &path).await;
    assert_eq!(group["groupTypes"], json!([]));
    assert_eq!(s.ids(&token, &format!("{path}/members")).await, users[..1].to_vec());
}

#[tokio::test]
async fn the_write_log_keeps_every_write_in_order_with_its_answer() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    s.get(&token, "/organization").await;
    let gid = s.group(&token, "logged", &[]).await;
    let (status, _) =
        s.patch(&token, &format!("/groups/{gid}?x=1"), json!({"description": "d"})).await;
    assert_eq!(status, 204);
    let ghost = "ffffffff-0000-4000-8000-000000000000";
    let add =
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{ghost}")});
    let (status, _, _) = s
        .call(
            &token,
            reqwest::Method::POST,
            &format!("/groups/{gid}/members/$ref"),
            Some(add.clone()),
        )
        .await;
    assert_eq!(status, 404);
    let batch = json!({"requests": [
        {"id": "1", "method": "GET", "url": "/organization"},
        {"id": "2", "method": "DELETE", "url": format!("/groups/{gid}"), "dependsOn": ["1"]}
    ]});
    let (status, _, _) = s.call(&token, reqwest::Method::POST, "/$batch", Some(batch)).await;
    assert_eq!(status, 200);
    let (status, _, _) =
        s.call(&token, reqwest::Method::POST, "/$batch", Some(json!({"requests": []}))).await;
    assert_eq!(status, 400, "a batch refused as a whole is logged as itself");
    let r = s
        .http
        .patch(format!("{}/v1.0/groups/{gid}", s.base))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a body that is not JSON is logged too");

    let writes = s.sim.writes(CONTOSO).unwrap();
    let seen: Vec<(&str, &str, u16)> =
        writes.iter().map(|w| (w.method.as_str(), w.path.as_str(), w.status)).collect();
    let group_path = format!("/groups/{gid}");
    let ref_path = format!("/groups/{gid}/members/$ref");
    assert_eq!(
        seen,
        vec![
            ("POST", "/groups", 201),
            ("PATCH", group_path.as_str(), 204),
            ("POST", ref_path.as_str(), 404),
            ("DELETE", group_path.as_str(), 204),
            ("POST", "/$batch", 400),
            ("PATCH", group_path.as_str(), 400),
        ]
    );
    assert_eq!(writes[5].body, Value::Null);
    assert_eq!(writes[0].body["displayName"], "logged");
    assert_eq!(writes[1].body, json!({"description": "d"}));
    assert_eq!(writes[2].body, add);
    assert_eq!(writes[3].body, Value::Null);
    let first = chrono::DateTime::parse_from_rfc3339(&writes[0].at).unwrap();
    let second = chrono::DateTime::parse_from_rfc3339(&writes[1].at).unwrap();
    assert_eq!(second - first, chrono::TimeDelta::seconds(10), "simulated time");
    assert!(writes[0].at.ends_with(".000Z"), "milliseconds: {}", writes[0].at);

    // The control API serves the same log; other tenants have their own.
    let served: Value = s
        .http
        .get(format!("{}/_sim/tenants/{CONTOSO}/writes", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["writes"], serde_json::to_value(&writes).unwrap());
    assert!(s.sim.writes(FABRIKAM).unwrap().is_empty());
    let r = s.http.get(format!("{}/_sim/tenants/nope/writes", s.base)).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

/// The JSON payload of a JWT-shaped token.
fn claims(token: &str) -> Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap(),
    )
    .unwrap()
}

impl Sim {
    async fn portal_token_form(&self, tenant: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let r = self
            .http
            .post(format!("{}/{tenant}/oauth2/token", self.base))
            .form(form)
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }

    async fn portal_token(&self, tenant: &str) -> String {
        let rt = self.sim.portal_refresh_token(tenant).unwrap();
        let (status, body) = self
            .portal_token_form(
                tenant,
                &[
                    ("grant_type", "refresh_token"),
                    ("resource", sspr_graph_sim::PORTAL_RESOURCE_ID),
                    ("refresh_token", &rt),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn portal(
        &self,
        token: &str,
        method: reqwest::Method,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let url = format!(
            "{}/api/PasswordReset/PasswordResetPolicies?getPasswordResetEnabledGroup=true",
            self.base
        );
        let mut req = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header("x-ms-client-request-id", "c0ffee00-9999-2222-3333-444455556666")
            .header("X-Requested-With", "XMLHttpRequest");
        if let Some(b) = body {
            req = req.header("content-type", "application/json;charset=UTF-8").body(b.to_string());
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }
}

#[tokio::test]
async fn the_portal_token_endpoint_trades_the_tenant_refresh_token_for_a_delegated_token() {
    let scenario = SCENARIO.replace(
        "name = \"Fabrikam\"",
        "name = \"Fabrikam\"\nportal_refresh_token = \"fabrikam-partner-rt\"",
    );
    let s = start(&scenario).await;
    let resource = sspr_graph_sim::PORTAL_RESOURCE_ID;
    let default_rt = sspr_graph_sim::scenario::default_portal_refresh_token(CONTOSO);
    assert_eq!(s.sim.portal_refresh_token(CONTOSO).unwrap(), default_rt);
    let (status, body) = s
        .portal_token_form(
            "contoso.onmicrosoft.com",
            &[
                ("grant_type", "refresh_token"),
                ("resource", resource),
                ("refresh_token", &default_rt),
                ("client_id", DEFAULT_CLIENT_ID),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3599);
    assert!(body["refresh_token"].is_string());
    let c = claims(body["access_token"].as_str().unwrap());
    assert_eq!((c["aud"].as_str(), c["tid"].as_str()), (Some(resource), Some(CONTOSO)), "{c}");
    assert_eq!(c["scp"], "user_impersonation");
    assert_eq!(c["idtyp"], "user");
    assert!(c.get("roles").is_none(), "delegated, not app-only: {c}");
    assert_eq!(s.sim.stats(CONTOSO).unwrap().token_requests, 1);

    let (status, _) = s
        .portal_token_form(
            FABRIKAM,
            &[
                ("grant_type", "refresh_token"),
                ("resource", resource),
                ("refresh_token", "fabrikam-partner-rt"),
            ],
        )
        .await;
    assert_eq!(status, 200, "a configured refresh token");
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str, u64);
    let cases: Vec<Case<'_>> = vec![
        (
            FABRIKAM,
            vec![
                ("grant_type", "refresh_token"),
                ("resource", resource),
                ("refresh_token", "guess"),
            ],
            400,
            "invalid_grant",
            70000,
        ),
        (
            CONTOSO,
            vec![
                ("grant_type", "refresh_token"),
                ("resource", resource),
                ("refresh_token", "fabrikam-partner-rt"),
            ],
            400,
            "invalid_grant",
            70000,
        ),
        (
            "nosuchtenant.onmicrosoft.com",
            vec![
                ("grant_type", "refresh_token"),
                ("resource", resource),
                ("refresh_token", &default_rt),
            ],
            400,
            "invalid_request",
            90002,
        ),
        (
            CONTOSO,
            vec![
                ("grant_type", "refresh_token"),
                ("resource", "https://graph.microsoft.com"),
                ("refresh_token", &default_rt),
            ],
            400,
            "invalid_resource",
            500011,
        ),
        (
            CONTOSO,
            vec![("grant_type", "refresh_token"), ("resource", resource)],
            400,
            "invalid_request",
            900144,
        ),
        (
            CONTOSO,
            vec![("grant_type", "password"), ("resource", resource)],
            400,
            "unsupported_grant_type",
            70003,
        ),
    ];
    for (tenant, form, status, error, code) in cases {
        let (st, body) = s.portal_token_form(tenant, &form).await;
        assert_eq!(st.as_u16(), status, "{body}");
        assert_eq!(body["error"], error, "{body}");
        assert_eq!(body["error_codes"], json!([code]));
        assert!(body["error_description"].as_str().unwrap().starts_with(&format!("AADSTS{code}:")));
        for k in ["timestamp", "trace_id", "correlation_id", "error_uri"] {
            assert!(body[k].is_string(), "{k} missing in {body}");
        }
    }
}

#[tokio::test]
async fn portal_and_graph_tokens_are_not_interchangeable() {
    let s = start(SCENARIO).await;
    let app_only = s.token(CONTOSO).await;
    let (status, body) = s.portal(&app_only, reqwest::Method::GET, None).await;
    assert_eq!(status, 401, "app-only tokens are refused by the portal: {body}");
    assert_graph_error(&body, "InvalidAuthenticationToken");
    let (status, _) = s
        .portal(
            &app_only,
            reqwest::Method::PUT,
            Some(json!({"objectId": "default", "enablementType": 2})),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(s.sim.legacy_sspr(CONTOSO).unwrap().enablement, Enablement::None);
    assert_eq!(s.portal("not-a-token", reqwest::Method::GET, None).await.0, 401);

    let delegated = s.portal_token(CONTOSO).await;
    let (status, body) = s.get(&delegated, "/organization").await;
    assert_eq!(status, 401, "the portal's token is not for Graph: {body}");
    assert_graph_error(&body, "InvalidAuthenticationToken");
    assert_eq!(s.portal(&delegated, reqwest::Method::GET, None).await.0, 200);
}

#[tokio::test]
async fn the_portal_policy_round_trips_and_sets_who_sspr_is_enabled_for() {
    let s = start(SCENARIO).await;
    let token = s.token(CONTOSO).await;
    let (_, users) = s.get(&token, "/users?$filter=userType%20eq%20'Member'&$top=20").await;
    let pilot = users["value"][5]["id"].as_str().unwrap().to_owned();
    let other = users["value"][6]["id"].as_str().unwrap().to_owned();
    let gid = s.group(&token, "ssprpilot", std::slice::from_ref(&pilot)).await;
    let enabled = |id: String| {
        let s = &s;
        let token = token.clone();
        async move {
            s.get(&token, &format!("/reports/authenticationMethods/userRegistrationDetails/{id}"))
                .await
                .1["isSsprEnabled"]
                .clone()
        }
    };
    assert_eq!(enabled(pilot.clone()).await, false);

    let portal = s.portal_token(CONTOSO).await;
    let (status, current) = s.portal(&portal, reqwest::Method::GET, None).await;
    assert_eq!(status, 200, "{current}");
    assert_eq!(current["objectId"], "default");
    assert_eq!(current["enablementType"], 0);
    assert_eq!(current["passwordResetEnabledGroupIds"], json!([]));
    assert_eq!(current["registrationReconfirmIntevalInDays"], 180);
    assert_eq!(current["numberOfQuestionsToRegister"], 5, "portal defaults are there too");

    let mut desired = current.clone();
    desired["enablementType"] = json!(1);
    desired["passwordResetEnabledGroupIds"] = json!([gid]);
    desired["numberOfAuthenticationMethodsRequired"] = json!(2);
    desired["registrationReconfirmIntevalInDays"] = json!(90);
    desired["customHelpdeskEmailOrUrl"] = json!("https://help.example");
    for (field, value) in [
        ("objectId", json!("other")),
        ("enablementType", json!(3)),
        ("passwordResetEnabledGroupIds", json!([gid, gid])),
        ("passwordResetEnabledGroupIds", json!(["ffffffff-0000-4000-8000-000000000000"])),
        ("numberOfAuthenticationMethodsRequired", json!(3)),
        ("registrationReconfirmIntevalInDays", json!(731)),
        ("emailOptionEnabled", json!("yes")),
    ] {
        let mut bad = desired.clone();
        bad[field] = value.clone();
        let (status, body) = s.portal(&portal, reqwest::Method::PUT, Some(bad)).await;
        assert_eq!(status, 400, "{field} = {value}: {body}");
        assert_graph_error(&body, "Request_BadRequest");
    }
    assert_eq!(s.sim.legacy_sspr(CONTOSO).unwrap().enablement, Enablement::None, "nothing applied");

    let (status, stored) = s.portal(&portal, reqwest::Method::PUT, Some(desired.clone())).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["enablementType"], 1);
    assert_eq!(stored["passwordResetEnabledGroupIds"], json!([gid]));
    assert_eq!(stored["passwordResetEnabledGroupName"], "ssprpilot");
    let (_, read) = s.portal(&portal, reqwest::Method::GET, None).await;
    assert_eq!(read, stored, "a read gives back what was stored");
    assert_eq!(read["customHelpdeskEmailOrUrl"], "https://help.example");
    let legacy = s.sim.legacy_sspr(CONTOSO).unwrap();
    assert_eq!(
        (
            legacy.enablement,
            legacy.group_id.as_deref(),
            legacy.methods_required,
            legacy.reconfirm_days
        ),
        (Enablement::Selected, Some(gid.as_str()), 2, 90)
    );
    assert_eq!(enabled(pilot.clone()).await, true);
    assert_eq!(enabled(other.clone()).await, false);

    // Everyone, then nobody.
    let mut all = read.clone();
    all["enablementType"] = json!(2);
    assert_eq!(s.portal(&portal, reqwest::Method::PUT, Some(all)).await.0, 200);
    assert_eq!(enabled(other.clone()).await, true);
    let mut none = read.clone();
    none["enablementType"] = json!(0);
    assert_eq!(s.portal(&portal, reqwest::Method::PUT, Some(none)).await.0, 200);
    assert_eq!(enabled(pilot.clone()).await, false);

    // Counted in the tenant's statistics and write log; the control API sees the result.
    let stats = s.sim.stats(CONTOSO).unwrap();
    assert_eq!(stats.by_endpoint["PUT /api/PasswordReset/PasswordResetPolicies"], 10);
    assert_eq!(stats.by_endpoint["GET /api/PasswordReset/PasswordResetPolicies"], 2);
    let puts: Vec<u16> = s
        .sim
        .writes(CONTOSO)
        .unwrap()
        .iter()
        .filter(|w| w.path == "/api/PasswordReset/PasswordResetPolicies")
        .map(|w| w.status)
        .collect();
    assert_eq!(puts, vec![400, 400, 400, 400, 400, 400, 400, 200, 200, 200]);
    let legacy: Value = s
        .http
        .get(format!("{}/_sim/tenants/{CONTOSO}/legacy-sspr", s.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(legacy["enablement"], "none");
    assert_eq!(legacy["reconfirm_days"], 90);
}

/// Every `userRegistrationDetails` item, following `@odata.nextLink`.
async fn all_details(s: &Sim, token: &str) -> Vec<Value> {
    let mut url = "/reports/authenticationMethods/userRegistrationDetails".to_owned();
    let mut all = Vec::new();
    loop {
        let (status, page) = s.get(token, &url).await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["value"].as_array().unwrap().iter().cloned());
        match page["@odata.nextLink"].as_str() {
            Some(next) => url = next.to_owned(),
            None => return all,
        }
    }
}

fn assert_registrations_agree(details: &[Value], regs: &[sspr_graph_sim::UserRegistration]) {
    assert_eq!(details.len(), regs.len());
    for (d, r) in details.iter().zip(regs) {
        assert_eq!(d["id"], r.id.as_str());
        assert_eq!(d["userPrincipalName"], r.user_principal_name.as_str());
        assert_eq!(d["isAdmin"], r.is_admin, "{d}");
        assert_eq!(d["userType"] == "guest", r.is_guest, "{d}");
        assert_eq!(d["isSsprEnabled"], r.is_sspr_enabled, "{d}");
        assert_eq!(d["isSsprRegistered"], r.is_sspr_registered, "{d}");
        assert_eq!(d["isSsprCapable"], r.is_sspr_capable, "{d}");
        let methods: Vec<&str> =
            d["methodsRegistered"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(methods, r.methods_registered, "{d}");
    }
}

#[tokio::test]
async fn user_registrations_agree_with_user_registration_details() {
    let s = start(SCENARIO).await;
    assert!(matches!(
        s.sim.user_registrations("nosuch.onmicrosoft.com"),
        Err(sspr_graph_sim::SimError::UnknownTenant(_))
    ));
    // At start, after SSPR is enabled for everyone, and as users register over time.
    let check = || async {
        let token = s.token(CONTOSO).await; // the clock moves past a token's lifetime
        let details = all_details(&s, &token).await;
        let regs = s.sim.user_registrations(CONTOSO).unwrap();
        assert_registrations_agree(&details, &regs);
        regs
    };
    check().await;
    s.sim
        .set_legacy_sspr(
            CONTOSO,
            LegacySspr { enablement: Enablement::All, ..LegacySspr::default() },
        )
        .unwrap();
    let before = check().await;
    s.sim.clock().advance(chrono::TimeDelta::hours(30));
    let later = check().await;
    s.sim.clock().advance(chrono::TimeDelta::days(30));
    let after = check().await;
    let registered =
        |r: &[sspr_graph_sim::UserRegistration]| r.iter().filter(|u| u.is_sspr_registered).count();
    assert!(registered(&before) <= registered(&later));
    assert!(registered(&later) < registered(&after), "users register over time");
    assert!(after.iter().any(|u| u.is_guest) && after.iter().any(|u| u.is_admin));
    // Also in a tenant without P1 (no report there, but the accessor still answers).
    assert_eq!(s.sim.user_registrations(FABRIKAM).unwrap().len(), 12);
}

/// MC1325414: the directory attributes `mobilePhone`, `businessPhones` and `otherMails` are
/// not registered methods. A user with a directory mobile phone and no registered phone method
/// has no `mobilePhone` in `methodsRegistered` and is not SSPR-registered by it.
#[tokio::test]
async fn directory_phones_and_mails_are_not_registered_methods() {
    let s = start(
        r#"
seed = 3
[settings]
time_speed = 0.0
page_size = 50
[settings.throttle]
reports = false
[[tenants]]
id = "0b6a3a8e-5555-4c2d-9e7f-000000000005"
name = "Woodgrove"
users = 60
admins = 2
guests = 4
mfa_registered_share = 0.0
migration_state = "preMigration"
legacy = { enablement = "all", register_on_sign_in = false }
[[tenants]]
id = "0b6a3a8e-6666-4c2d-9e7f-000000000006"
name = "Litware"
users = 60
guests = 4
phone_only_share = 0.5
phone_mixed_share = 0.3
migration_state = "preMigration"
legacy = { enablement = "all", register_on_sign_in = false }
"#,
    )
    .await;
    let woodgrove = "0b6a3a8e-5555-4c2d-9e7f-000000000005";
    let token = s.token(woodgrove).await;
    let (status, users) = s.get(&token, "/users?$top=999").await;
    assert_eq!(status, 200);
    let users = users["value"].as_array().unwrap().clone();
    assert_eq!(users.len(), 60);
    let with_mobile: Vec<&Value> = users.iter().filter(|u| u["mobilePhone"].is_string()).collect();
    assert!(with_mobile.len() > 20, "many users have a directory mobile phone");
    assert!(users.iter().any(|u| !u["businessPhones"].as_array().unwrap().is_empty()));
    assert!(users.iter().any(|u| !u["otherMails"].as_array().unwrap().is_empty()));
    let (_, one) =
        s.get(&token, &format!("/users/{}", with_mobile[0]["id"].as_str().unwrap())).await;
    assert_eq!(one["mobilePhone"], with_mobile[0]["mobilePhone"]);
    let (_, selected) = s.get(&token, "/users?$select=id,mobilePhone,businessPhones").await;
    assert!(selected["value"][0].get("otherMails").is_none());

    // Nobody registered anything: SSPR is enabled for members, and nobody is registered.
    for u in &with_mobile {
        let id = u["id"].as_str().unwrap();
        let (status, d) = s
            .get(&token, &format!("/reports/authenticationMethods/userRegistrationDetails/{id}"))
            .await;
        assert_eq!(status, 200);
        assert_eq!(d["methodsRegistered"], json!([]), "{d}");
        assert_eq!(d["isSsprRegistered"], false, "{d}");
        assert_eq!(d["isSsprCapable"], false, "{d}");
        assert_eq!(d["isMfaRegistered"], false, "{d}");
        if d["isAdmin"] == false && d["userType"] == "member" {
            assert_eq!(d["isSsprEnabled"], true, "{d}");
        }
    }
    let regs = s.sim.user_registrations(woodgrove).unwrap();
    assert!(regs.iter().all(|r| r.methods_registered.is_empty() && !r.is_sspr_registered));
    assert_registrations_agree(&all_details(&s, &token).await, &regs);

    // Registered phone methods do show, and count while the policy allows them; a directory
    // phone without a registered one still does not.
    let litware = "0b6a3a8e-6666-4c2d-9e7f-000000000006";
    let token = s.token(litware).await;
    let details = all_details(&s, &token).await;
    let (_, users) = s.get(&token, "/users?$top=999").await;
    let users = users["value"].as_array().unwrap();
    let mut phone_only = 0;
    let mut directory_only = 0;
    for (d, u) in details.iter().zip(users) {
        assert_eq!(d["id"], u["id"]);
        let methods: Vec<&str> =
            d["methodsRegistered"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        if !methods.is_empty() && methods.iter().all(|m| ["mobilePhone", "officePhone"].contains(m))
        {
            phone_only += 1;
            assert_eq!(d["isSsprRegistered"], true, "{d}");
        }
        if methods.is_empty() {
            assert_eq!(d["isSsprRegistered"], false, "{d}");
            if u["mobilePhone"].is_string() {
                directory_only += 1;
            }
        }
    }
    assert!(phone_only >= 15, "{phone_only}");
    assert!(directory_only >= 1, "{directory_only}");
    assert_registrations_agree(&details, &s.sim.user_registrations(litware).unwrap());
}

/// 26 licensed tenants of 5 users with a frozen clock: enough to empty the reporting APIs'
/// app-wide bucket (122 per 10 s) without emptying any tenant's (5 per 10 s).
fn reports_fleet() -> (String, Vec<String>) {
    let ids: Vec<String> = (0..26).map(|i| format!("0b6a3a8e-9999-4c2d-9e7f-{i:012}")).collect();
    let mut s = String::from("seed = 5\n[settings]\ntime_speed = 0.0\n");
    for (i, id) in ids.iter().enumerate() {
        s.push_str(&format!(
            "[[tenants]]\nid = \"{id}\"\nname = \"Report {i}\"\nusers = 5\nlicence = \"business_premium\"\n"
        ));
    }
    (s, ids)
}

const BY_FEATURE: &str = "/reports/authenticationMethods/usersRegisteredByFeature()";
const BY_FEATURE_ENDPOINT: &str = "GET /reports/authenticationMethods/usersRegisteredByFeature";

#[tokio::test]
async fn report_reads_have_their_own_buckets_per_tenant_and_per_app() {
    let (scenario, ids) = reports_fleet();
    let s = start(&scenario).await;
    let t0 = &ids[0];
    let token = s.token(t0).await;
    for _ in 0..5 {
        assert_eq!(s.get(&token, BY_FEATURE).await.0, 200);
    }
    // The 6th report read of the tenant within 10 s: 429 scoped to the (tenant, app) pair.
    let (status, headers, body) = s.call(&token, reqwest::Method::GET, BY_FEATURE, None).await;
    assert_eq!(status, 429, "{body}");
    assert_graph_error(&body, "TooManyRequests");
    assert_eq!(
        headers["x-ms-throttle-scope"].to_str().unwrap(),
        format!("Tenant_Application/Read/{DEFAULT_CLIENT_ID}/{t0}")
    );
    let retry_after: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry_after), "{retry_after}");
    // Identity reads and writes of the tenant are not held by its full reports bucket, and
    // are not early.
    assert_eq!(s.get(&token, "/groups").await.0, 200);
    assert_eq!(s.get(&token, "/organization").await.0, 200);
    let (status, _, body) = s
        .call(
            &token,
            reqwest::Method::POST,
            "/groups",
            Some(json!({"displayName": "Reports", "mailEnabled": false, "mailNickname": "reports", "securityEnabled": true})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(s.sim.stats(t0).unwrap().early_requests, 0);
    // A report read inside the Retry-After is early, counted by endpoint; the audit log is in
    // the same bucket.
    let (status, _, _) =
        s.call(&token, reqwest::Method::GET, "/auditLogs/directoryAudits", None).await;
    assert_eq!(status, 429);
    let stats = s.sim.stats(t0).unwrap();
    assert_eq!(stats.early_requests, 1);
    assert_eq!(stats.early_by_endpoint["GET /auditLogs/directoryAudits"], 1);
    // Once the Retry-After has passed on the simulator's clock, the tenant reads again.
    s.sim.clock().advance(chrono::TimeDelta::seconds(retry_after));
    assert_eq!(s.get(&token, BY_FEATURE).await.0, 200);
    assert_eq!(s.sim.stats(t0).unwrap().early_requests, 1);
    // After a whole window the tenant has its 5 again.
    s.sim.clock().advance(chrono::TimeDelta::seconds(10));
    for _ in 0..5 {
        assert_eq!(
            s.get(&token, "/reports/authenticationMethods/userRegistrationDetails").await.0,
            200
        );
    }
    assert_eq!(s.get(&token, BY_FEATURE).await.0, 429);

    // Across tenants: 122 report reads per 10 s for the app, then 429 scoped to the app even
    // in a tenant that has read nothing yet.
    s.sim.clock().advance(chrono::TimeDelta::seconds(60));
    let mut tokens = Vec::new();
    for id in &ids {
        tokens.push(s.token(id).await);
    }
    let paths = [
        BY_FEATURE,
        "/auditLogs/directoryAudits",
        "/reports/authenticationMethods/userRegistrationDetails",
    ];
    for n in 0..122 {
        let (status, _, body) =
            s.call(&tokens[n / 5], reqwest::Method::GET, paths[n % 3], None).await;
        assert_eq!(status, 200, "read {n}: {body}");
    }
    let last = ids.len() - 1;
    let (status, headers, body) =
        s.call(&tokens[last], reqwest::Method::GET, BY_FEATURE, None).await;
    assert_eq!(status, 429, "{body}");
    assert_graph_error(&body, "TooManyRequests");
    assert_eq!(
        headers["x-ms-throttle-scope"].to_str().unwrap(),
        format!("Application/Read/{DEFAULT_CLIENT_ID}/")
    );
    let retry_after: i64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    // The app's report hold makes any tenant's report read early, not its identity reads.
    assert_eq!(s.get(&tokens[last], "/groups").await.0, 200);
    assert_eq!(s.sim.stats(&ids[last]).unwrap().early_requests, 0);
    assert_eq!(s.get(&tokens[3], BY_FEATURE).await.0, 429);
    assert_eq!(s.sim.stats(&ids[3]).unwrap().early_by_endpoint[BY_FEATURE_ENDPOINT], 1);
    s.sim.clock().advance(chrono::TimeDelta::seconds(retry_after));
    assert_eq!(s.get(&tokens[last], BY_FEATURE).await.0, 200);
    assert_eq!(s.sim.stats(&ids[last]).unwrap().early_requests, 0);
}

#[tokio::test]
async fn a_batch_of_report_reads_is_charged_per_item() {
    let (scenario, ids) = reports_fleet();
    let s = start(&scenario).await;
    let t0 = &ids[0];
    let token = s.token(t0).await;
    let mut requests: Vec<Value> = (0..7)
        .map(|i| json!({"id": format!("r{i}"), "method": "GET", "url": BY_FEATURE}))
        .collect();
    requests.push(json!({"id": "groups", "method": "GET", "url": "/groups"}));
    let (status, _, body) =
        s.call(&token, reqwest::Method::POST, "/$batch", Some(json!({"requests": requests}))).await;
    assert_eq!(status, 200, "{body}");
    let responses = body["responses"].as_array().unwrap();
    let status_of = |id: &str| responses.iter().find(|r| r["id"] == id).unwrap()["status"].clone();
    let throttled: Vec<&Value> = responses.iter().filter(|r| r["status"] == 429).collect();
    // Five items fit the tenant's bucket; the other two are answered 429 each, with the
    // headers of a single 429; the identity item is not affected.
    assert_eq!(throttled.len(), 2, "{body}");
    assert_eq!(responses.iter().filter(|r| r["status"] == 200).count(), 6);
    assert_eq!(status_of("groups"), 200);
    for r in throttled {
        assert_eq!(r["body"]["error"]["code"], "TooManyRequests");
        assert!(r["headers"]["Retry-After"].as_str().unwrap().parse::<u64>().unwrap() >= 1);
        assert_eq!(
            r["headers"]["x-ms-throttle-scope"],
            format!("Tenant_Application/Read/{DEFAULT_CLIENT_ID}/{t0}")
        );
    }
    let stats = s.sim.stats(t0).unwrap();
    assert_eq!(stats.by_endpoint[BY_FEATURE_ENDPOINT], 7);
    assert_eq!(stats.throttled, 2);
    // Siblings are not early; the next report read, inside the Retry-After, is.
    assert_eq!(stats.early_requests, 0);
    assert_eq!(s.get(&token, BY_FEATURE).await.0, 429);
    assert_eq!(s.sim.stats(t0).unwrap().early_by_endpoint[BY_FEATURE_ENDPOINT], 1);
}
