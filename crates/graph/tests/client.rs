//! The client against the Graph simulator, over real HTTP.

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use secrecy::SecretString;
use sspr_graph::{
    ALL_MEMBERS_RULE, AddMember, BatchItem, BreakerPolicy, Credential, GraphClient, GraphConfig,
    GraphError, MemberAdd, PortalClient, PortalConfig, PortalSspr, ReportPriority, RetryPolicy,
    SizeClass, Tenant,
    portal::Enablement,
    portal_policy_body,
    types::{NewSecurityGroup, User},
};
use sspr_graph_sim::{
    Faults, GraphSim, RunningSim, Scenario, ScriptedFault,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};

const A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const NO_CONSENT: &str = "cccccccc-0000-4000-8000-000000000003";
const STANDARD: &str = "dddddddd-0000-4000-8000-000000000004";

/// The fleet; with `reports`, the simulator's reporting buckets are on (most tests freeze the
/// clock and read reports more than 5 times a tenant, so they leave them off).
fn scenario_with(time_speed: f64, reports: bool) -> String {
    format!(
        r#"
seed = 5
[settings]
time_speed = {time_speed}
page_size = 7
[settings.throttle]
reports = {reports}
[[tenants]]
id = "{A}"
name = "Alpha"
users = 30
[tenants.faults]
replication_delay_secs = 2
[[tenants]]
id = "{B}"
name = "Bravo"
users = 20
[[tenants]]
id = "{NO_CONSENT}"
name = "Charlie"
users = 5
consented = false
[[tenants]]
id = "{STANDARD}"
name = "Delta"
users = 12
guests = 2
disabled = 3
licence = "business_standard"
"#
    )
}

fn scenario(time_speed: f64) -> String {
    scenario_with(time_speed, false)
}

struct Env {
    sim: GraphSim,
    _running: RunningSim,
    client: GraphClient,
}

async fn env(time_speed: f64, tweak: impl FnOnce(&mut GraphConfig)) -> Env {
    env_of(&scenario(time_speed), tweak).await
}

async fn env_of(scenario: &str, tweak: impl FnOnce(&mut GraphConfig)) -> Env {
    let sim = GraphSim::from_scenario(&Scenario::parse(scenario).unwrap()).unwrap();
    let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let mut cfg = GraphConfig::new(running.base_url(), running.base_url());
    cfg.retry = RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(5),
        budget: Duration::from_secs(60),
    };
    tweak(&mut cfg);
    Env { sim, _running: running, client: GraphClient::new(cfg).unwrap() }
}

fn tenant(id: &str) -> Tenant {
    Tenant {
        id: id.to_owned(),
        credential: Arc::new(Credential::ClientSecret {
            client_id: DEFAULT_CLIENT_ID.into(),
            secret: SecretString::from(DEFAULT_CLIENT_SECRET),
        }),
        size: SizeClass::Small,
    }
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request() {
    let e = env(0.0, |c| c.per_tenant_concurrency = 4).await;
    let t = tenant(A);
    let calls = (0..24).map(|_| {
        let client = e.client.clone();
        let t = t.clone();
        tokio::spawn(async move { client.organization(&t).await })
    });
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(e.sim.stats(A).unwrap().token_requests, 1);
    assert_eq!(e.client.metrics().token_requests.get(A), Some(&1));
}

#[tokio::test]
async fn a_rejected_token_is_replaced_once() {
    let e = env(0.0, |_| {}).await;
    let t = tenant(A);
    e.client.organization(&t).await.unwrap();
    // Expire every token the simulator issued: the next call gets 401, refreshes, succeeds.
    e.sim.clock().advance(chrono::TimeDelta::hours(2));
    e.client.organization(&t).await.unwrap();
    assert_eq!(e.sim.stats(A).unwrap().token_requests, 2);
}

#[tokio::test]
async fn a_429_storm_on_one_tenant_neither_delays_another_nor_is_retried_early() {
    let e = env(1.0, |c| c.max_concurrency = 8).await;
    let script = (0..3).map(|_| ScriptedFault { status: 429, retry_after: Some(2) }).collect();
    e.sim.set_faults(A, Faults { script, ..Default::default() }).unwrap();
    let ta = tenant(A);
    let client = e.client.clone();
    let stormy = tokio::spawn(async move {
        let mut results = Vec::new();
        for _ in 0..3 {
            results.push(client.organization(&ta).await.map(|o| o.id));
        }
        results
    });
    // Tenant B's calls all finish while tenant A still waits out its Retry-After.
    let tb = tenant(B);
    for _ in 0..10 {
        e.client.organization(&tb).await.unwrap();
    }
    assert!(!stormy.is_finished(), "tenant B should not have waited for tenant A's Retry-After");
    for r in stormy.await.unwrap() {
        assert_eq!(r.unwrap(), A);
    }
    let stats = e.sim.stats(A).unwrap();
    assert_eq!(stats.faults, 3, "the three scripted 429s were served");
    assert_eq!(stats.early_requests, 0, "no request arrived before its Retry-After");
    assert_eq!(e.sim.stats(B).unwrap().early_requests, 0);
    assert!(e.client.metrics().total().throttled >= 3);
}

#[tokio::test]
async fn concurrent_calls_of_a_throttled_tenant_all_wait_for_retry_after() {
    let e = env(1.0, |c| c.per_tenant_concurrency = 1).await;
    let script = vec![
        ScriptedFault { status: 503, retry_after: Some(1) },
        ScriptedFault { status: 429, retry_after: Some(1) },
    ];
    e.sim
        .set_faults(A, Faults { script: script.into_iter().collect(), ..Default::default() })
        .unwrap();
    let t = tenant(A);
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let client = e.client.clone();
            let t = t.clone();
            tokio::spawn(async move { client.subscribed_skus(&t).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(e.sim.stats(A).unwrap().early_requests, 0);
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let e = env(0.0, |_| {}).await;
    let script = vec![
        ScriptedFault { status: 504, retry_after: None },
        ScriptedFault { status: 0, retry_after: None },
        ScriptedFault { status: 503, retry_after: None },
    ];
    e.sim
        .set_faults(A, Faults { script: script.into_iter().collect(), ..Default::default() })
        .unwrap();
    let t = tenant(A);
    e.client.organization(&t).await.unwrap();
    assert_eq!(e.sim.stats(A).unwrap().faults, 3);
    let before = e.sim.stats(A).unwrap().requests;
    let missing = e.client.user(&t, "nobody@alpha.onmicrosoft.com").await.unwrap();
    assert!(missing.is_none());
    assert_eq!(e.sim.stats(A).unwrap().requests, before + 1, "a 404 is not retried");
}

#[tokio::test]
async fn replication_delay_after_creating_a_group_is_retried() {
    let e = env(1.0, |_| {}).await;
    let t = tenant(A);
    let group = e
        .client
        .create_security_group(
            &t,
            &sspr_graph::types::NewSecurityGroup::new("SSPR pilot", "ssprpilot"),
        )
        .await
        .unwrap();
    let user = e.client.user(&t, "user00005@alpha.onmicrosoft.com").await.unwrap().unwrap();
    // The group answers 404 for two seconds; the client retries until it is there.
    let added = e.client.add_group_member(&t, &group.id, &user.id).await.unwrap();
    assert_eq!(added, sspr_graph::AddMember::Added);
    assert!(
        e.sim
            .stats(A)
            .unwrap()
            .by_endpoint
            .get("POST /groups/{id}/members/$ref")
            .copied()
            .unwrap_or(0)
            >= 2
    );
    let posts = |e: &Env| e.sim.stats(A).unwrap().by_endpoint["POST /groups/{id}/members/$ref"];
    let before = posts(&e);
    let again = e.client.add_group_member(&t, &group.id, &user.id).await.unwrap();
    assert_eq!(again, sspr_graph::AddMember::AlreadyMember);
    assert_eq!(
        posts(&e),
        before + 1,
        "the 400 for an existing member is final, even for a new group"
    );
    let members = e.client.group_members(&t, &group.id).await.unwrap();
    assert_eq!(members.len(), 1);
}

#[tokio::test]
async fn batches_handle_failed_dependencies_and_per_item_throttling() {
    let e = env(1.0, |_| {}).await;
    let t = tenant(B);
    // The first item evaluated gets a 429 with Retry-After; the client retries it alone.
    e.sim
        .set_faults(
            B,
            Faults {
                script: [ScriptedFault { status: 429, retry_after: Some(1) }].into_iter().collect(),
                ..Default::default()
            },
        )
        .unwrap();
    let missing = "00000000-0000-4000-8000-00000000dead";
    let items = vec![
        BatchItem::get("1", "/organization"),
        BatchItem::get("2", format!("/groups/{missing}")),
        BatchItem::with_body(
            "3",
            reqwest::Method::POST,
            format!("/groups/{missing}/members/$ref"),
            serde_json::json!({"@odata.id": "x"}),
        )
        .depends_on(&["2"]),
        BatchItem::get("4", "/subscribedSkus").depends_on(&["1"]),
    ];
    let outcomes = e.client.batch(&t, items).await.unwrap();
    let status = |id: &str| outcomes.iter().find(|o| o.id == id).unwrap().status;
    assert_eq!(status("2"), 404);
    assert_eq!(status("3"), 424, "depends on a failed item");
    assert_eq!(status("1"), 200);
    assert_eq!(status("4"), 200);
    assert_eq!(e.sim.stats(B).unwrap().faults, 1, "one item was answered 429 and retried");
    assert_eq!(e.sim.stats(B).unwrap().early_requests, 0);

    let too_many = (0..21).map(|i| BatchItem::get(i.to_string(), "/organization")).collect();
    assert!(matches!(e.client.batch(&t, too_many).await, Err(GraphError::Invalid(_))));
}

/// A batch that gives up on an item answered 429 still honours its Retry-After: the tenant's
/// next request, from any caller, waits it out (found by the 10,000-tenant benchmark, where
/// steps retried by the queue came back before Graph's Retry-After).
#[tokio::test]
async fn a_batch_that_gives_up_on_a_throttled_item_still_holds_the_tenant() {
    let e = env(1.0, |c| c.retry.max_attempts = 1).await;
    let t = tenant(B);
    e.sim
        .set_faults(
            B,
            Faults {
                script: [ScriptedFault { status: 429, retry_after: Some(2) }].into_iter().collect(),
                ..Default::default()
            },
        )
        .unwrap();
    let items = vec![BatchItem::get("1", "/organization"), BatchItem::get("2", "/subscribedSkus")];
    let outcomes = e.client.batch(&t, items).await.unwrap();
    assert_eq!(
        outcomes.iter().filter(|o| o.status == 429).count(),
        1,
        "one item was throttled and not retried: {outcomes:?}"
    );
    assert!(e.client.blocked_until(B).is_some(), "the tenant waits out the Retry-After");
    // The next request goes out only after the Retry-After, so it is not early.
    e.client.organization(&t).await.unwrap();
    assert_eq!(e.sim.stats(B).unwrap().early_requests, 0);
}

#[tokio::test]
async fn a_tenant_that_keeps_failing_is_set_aside_without_affecting_others() {
    let e = env(0.0, |c| {
        c.breaker = BreakerPolicy {
            failure_threshold: 2,
            open_for: Duration::from_secs(600),
            max_open_for: Duration::from_secs(600),
        }
    })
    .await;
    let bad = tenant(NO_CONSENT);
    for _ in 0..2 {
        let err = e.client.organization(&bad).await.unwrap_err();
        assert_eq!(err.code(), Some("unauthorized_client"), "{err}");
    }
    let requests = e.sim.stats(NO_CONSENT).unwrap().token_requests;
    let err = e.client.organization(&bad).await.unwrap_err();
    assert!(matches!(err, GraphError::CircuitOpen { .. }), "{err}");
    assert!(err.reason().contains("700016"), "the reason names the cause: {}", err.reason());
    assert_eq!(
        e.sim.stats(NO_CONSENT).unwrap().token_requests,
        requests,
        "an open circuit sends nothing"
    );
    e.client.organization(&tenant(A)).await.unwrap();
}

#[tokio::test]
async fn typed_calls_read_and_write_the_sspr_surface() {
    // Six report reads of one tenant: the client's report budget doubled, so none waits.
    let e = env(0.0, |c| c.limits_scale = 2.0).await;
    let t = tenant(A);
    let policy = e.client.methods_policy(&t).await.unwrap();
    assert!(
        policy
            .authentication_method_configurations
            .iter()
            .any(|c| sspr_graph::types::MethodId::Sms.matches(&c.id))
    );
    let patch = sspr_graph::types::MethodConfigPatch::new(sspr_graph::types::MethodId::Sms)
        .state(sspr_graph::types::MethodState::Enabled)
        .include_all_users();
    e.client
        .patch_method_configuration(&t, sspr_graph::types::MethodId::Sms, &patch)
        .await
        .unwrap();
    let sms = e.client.method_configuration(&t, sspr_graph::types::MethodId::Sms).await.unwrap();
    assert_eq!(sms.state, sspr_graph::types::MethodState::Enabled);
    let org = e.client.organization(&t).await.unwrap();
    assert_eq!(org.id, A);
    let skus = e.client.subscribed_skus(&t).await.unwrap();
    assert!(sspr_graph::types::licence_readiness(&skus).premium_p1);
    let mut seen = 0;
    let mut pages = 0;
    e.client
        .registration_details(&t, ReportPriority::Low, |page| {
            pages += 1;
            seen += page.len();
        })
        .await
        .unwrap();
    assert_eq!((seen, pages), (30, 5), "30 users in pages of 7");
    let summary = e.client.users_registered_by_feature(&t, ReportPriority::Normal).await.unwrap();
    assert_eq!(summary.total_user_count, 30);
    assert!(e.client.groups_named(&t, "no such group").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_call_that_gives_up_still_leaves_the_tenant_waiting_for_retry_after() {
    // Found by the fleet benchmark: a call out of retries returned without holding the tenant,
    // so the tenant's next call arrived before the Retry-After had passed.
    let e = env(1.0, |c| c.retry.max_attempts = 1).await;
    e.sim
        .set_faults(
            A,
            Faults {
                script: [ScriptedFault { status: 429, retry_after: Some(1) }].into_iter().collect(),
                ..Default::default()
            },
        )
        .unwrap();
    let t = tenant(A);
    let err = e.client.organization(&t).await.unwrap_err();
    assert_eq!(err.status(), Some(429));
    assert!(e.client.blocked_until(A).is_some(), "the tenant is held until its Retry-After");
    e.client.organization(&t).await.unwrap();
    assert_eq!(e.sim.stats(A).unwrap().early_requests, 0);
}

#[tokio::test]
async fn certificate_credentials_sign_an_assertion_the_token_endpoint_accepts() {
    use base64::Engine;
    let public = include_str!("../../graph-sim/tests/data/test-app-key.pub.pem");
    let private = include_str!("../../graph-sim/tests/data/test-app-key.pem");
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([9u8; 32]);
    let text = format!(
        "seed = 1\n[settings]\ntime_speed = 1.0\n[[apps]]\nclient_id = \"{DEFAULT_CLIENT_ID}\"\n[[apps.certificates]]\nx5t_s256 = \"{thumbprint}\"\npublic_key_pem = '''\n{public}'''\n[[tenants]]\nid = \"{A}\"\nname = \"Alpha\"\nusers = 5\n"
    );
    let sim = GraphSim::from_scenario(&Scenario::parse(&text).unwrap()).unwrap();
    let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let client =
        GraphClient::new(GraphConfig::new(running.base_url(), running.base_url())).unwrap();
    let cert = |thumb: &str| Tenant {
        id: "alpha.onmicrosoft.com".into(),
        credential: Arc::new(Credential::Certificate {
            client_id: DEFAULT_CLIENT_ID.into(),
            thumbprint_s256: thumb.to_owned(),
            private_key_pem: SecretString::from(private),
        }),
        size: SizeClass::Small,
    };
    assert_eq!(client.organization(&cert(&thumbprint)).await.unwrap().id, A);
    // A fresh client (the first one holds a valid token for this tenant and app).
    let fresh = GraphClient::new(GraphConfig::new(running.base_url(), running.base_url())).unwrap();
    let err = fresh.organization(&cert("not-the-registered-thumbprint")).await.unwrap_err();
    assert_eq!(err.code(), Some("invalid_client"), "{err}");
    assert!(format!("{:?}", cert(&thumbprint).credential).contains("thumbprint"));
    assert!(
        !format!("{:?}", cert(&thumbprint).credential).contains("PRIVATE KEY"),
        "Debug never shows the key"
    );
}

#[tokio::test]
async fn a_token_probe_reports_the_granted_roles_or_the_refusal() {
    let e = env(0.0, |_| {}).await;
    let info = e.client.probe_token(&tenant(A)).await.unwrap();
    let mut expected: Vec<String> =
        sspr_graph_sim::scenario::DEFAULT_ROLES.iter().map(|r| (*r).to_owned()).collect();
    expected.sort();
    assert_eq!(info.roles, Some(expected));
    assert_eq!(info.tenant_id.as_deref(), Some(A));
    assert_eq!(info.app_id.as_deref(), Some(DEFAULT_CLIENT_ID));
    // A probe always asks the token endpoint, so it checks the credentials as they are now.
    e.client.probe_token(&tenant(A)).await.unwrap();
    assert_eq!(e.sim.stats(A).unwrap().token_requests, 2);
    let refused = e.client.probe_token(&tenant(NO_CONSENT)).await.unwrap_err();
    assert!(
        matches!(&refused, GraphError::Token { codes, .. } if codes.contains(&700016)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn for_each_user_pages_with_a_filter_and_a_selection() {
    let e = env(0.0, |_| {}).await;
    let mut pages = 0;
    let mut users: Vec<User> = Vec::new();
    e.client
        .for_each_user(&tenant(A), None, "id,userPrincipalName,accountEnabled,userType", |page| {
            pages += 1;
            users.extend(page);
        })
        .await
        .unwrap();
    assert_eq!((users.len(), pages), (30, 5), "30 users in pages of 7");
    assert!(users.iter().all(|u| u.account_enabled == Some(true)));
    assert!(users.iter().all(|u| u.user_type.as_deref() == Some("Member")));
    assert!(users.iter().all(|u| u.display_name.is_none()), "only what was selected");

    let mut members = Vec::new();
    e.client
        .for_each_user(
            &tenant(STANDARD),
            Some("accountEnabled eq true and userType eq 'Member'"),
            "id",
            |page| members.extend(page.into_iter().map(|u| u.id)),
        )
        .await
        .unwrap();
    assert_eq!(members.len(), 7, "12 users less 2 guests and 3 disabled");
}

#[tokio::test]
async fn groups_turn_dynamic_and_back_and_are_deleted_idempotently() {
    let e = env(1.0, |_| {}).await;
    let t = tenant(A);
    let first = e.client.user(&t, "user00005@alpha.onmicrosoft.com").await.unwrap().unwrap();
    let group = e
        .client
        .create_security_group(
            &t,
            &NewSecurityGroup::new("Everyone", "everyone").members(vec![first.id.clone()]),
        )
        .await
        .unwrap();
    // Replication delay (2 s) is waited out: the group was created by this client.
    e.client.set_group_dynamic(&t, &group.id, ALL_MEMBERS_RULE).await.unwrap();
    let read = e.client.group(&t, &group.id).await.unwrap().unwrap();
    assert!(read.is_dynamic());
    assert_eq!(read.membership_rule.as_deref(), Some(ALL_MEMBERS_RULE));
    assert_eq!(read.membership_rule_processing_state.as_deref(), Some("On"));
    assert_eq!(e.client.group_members(&t, &group.id).await.unwrap().len(), 30);

    e.client.set_group_assigned(&t, &group.id).await.unwrap();
    let read = e.client.group(&t, &group.id).await.unwrap().unwrap();
    assert!(!read.is_dynamic());
    assert_eq!(read.membership_rule, None);
    assert_eq!(
        e.client.group_members(&t, &group.id).await.unwrap().len(),
        30,
        "the rule's members stay"
    );

    e.client.remove_group_member(&t, &group.id, &first.id).await.unwrap();
    e.client.remove_group_member(&t, &group.id, &first.id).await.unwrap();
    assert_eq!(e.client.group_members(&t, &group.id).await.unwrap().len(), 29);
    e.client.delete_group(&t, &group.id).await.unwrap();
    e.client.delete_group(&t, &group.id).await.unwrap();
    assert!(e.client.group(&t, &group.id).await.unwrap().is_none());

    let writes: Vec<(String, u16)> = e
        .sim
        .writes(A)
        .unwrap()
        .into_iter()
        .filter(|w| w.status != 404 || w.method == "DELETE")
        .map(|w| (w.method, w.status))
        .collect();
    let expected: Vec<(String, u16)> = [
        ("POST", 201),
        ("PATCH", 204),
        ("PATCH", 204),
        ("DELETE", 204),
        ("DELETE", 404),
        ("DELETE", 204),
        ("DELETE", 404),
    ]
    .iter()
    .map(|(m, s)| ((*m).to_owned(), *s))
    .collect();
    assert_eq!(writes, expected, "404s before the group replicated aside, in this order");
    assert_eq!(e.sim.writes(A).unwrap()[1].body["membershipRuleProcessingState"], "On");

    // A tenant without Entra ID P1 cannot have dynamic groups.
    let standard = tenant(STANDARD);
    let group =
        e.client.create_security_group(&standard, &NewSecurityGroup::named("Pilot")).await.unwrap();
    let err = e.client.set_group_dynamic(&standard, &group.id, ALL_MEMBERS_RULE).await.unwrap_err();
    assert_eq!((err.status(), err.code()), (Some(400), Some("Request_BadRequest")), "{err}");
    assert_eq!(
        e.sim.stats(STANDARD).unwrap().by_endpoint["PATCH /groups/{id}"],
        1,
        "a refusal about a new group is not taken for replication delay"
    );
}

#[tokio::test]
async fn the_portal_client_reads_and_writes_the_legacy_policy() {
    let e = env(0.0, |_| {}).await;
    let base = e.client.config().graph_url.clone();
    let portal = PortalClient::new(PortalConfig::new(&base, &base)).unwrap();
    let refused = portal.token(B, &SecretString::from("not-the-refresh-token")).await.unwrap_err();
    assert!(
        matches!(&refused, GraphError::Token { error, codes, .. } if error == "invalid_grant" && codes.contains(&70000)),
        "{refused:?}"
    );
    let rt = SecretString::from(e.sim.portal_refresh_token(B).unwrap());
    let token = portal.token(B, &rt).await.unwrap();
    assert!(!token.is_expired());
    assert!(token.refresh_token().is_some());
    assert!(!format!("{token:?}").contains("eyJ"), "Debug never shows the token");

    let t = tenant(B);
    let pilot = e.client.user(&t, "user00005@bravo.onmicrosoft.com").await.unwrap().unwrap();
    let other = e.client.user(&t, "user00006@bravo.onmicrosoft.com").await.unwrap().unwrap();
    let group = e
        .client
        .create_security_group(
            &t,
            &NewSecurityGroup::named("SSPR pilot").members(vec![pilot.id.clone()]),
        )
        .await
        .unwrap();
    let current = portal.get_policy(&token).await.unwrap();
    assert_eq!(current["enablementType"], 0);
    let desired = PortalSspr {
        enablement: Enablement::Selected { group_id: group.id.clone() },
        methods_required: 2,
        register_at_sign_in: true,
        reconfirm_days: 180,
        security_questions: false,
        email: true,
        sms: true,
        authenticator: true,
    };
    let stored = portal.put_policy(&token, &portal_policy_body(&current, &desired)).await.unwrap();
    assert_eq!(stored["enablementType"], 1);
    assert_eq!(stored["passwordResetEnabledGroupIds"], serde_json::json!([group.id]));
    assert_eq!(stored["numberOfQuestionsToRegister"], current["numberOfQuestionsToRegister"]);
    let details =
        e.client.registration_details_of(&t, &pilot.id, ReportPriority::High).await.unwrap();
    assert!(details.is_sspr_enabled);
    let other =
        e.client.registration_details_of(&t, &other.id, ReportPriority::High).await.unwrap();
    assert!(!other.is_sspr_enabled);

    // The portal's refusals are typed; nothing changes.
    let mut bad = portal_policy_body(&stored, &desired);
    bad["numberOfAuthenticationMethodsRequired"] = serde_json::json!(3);
    let err = portal.put_policy(&token, &bad).await.unwrap_err();
    assert!(matches!(&err, GraphError::Portal { status: 400, .. }), "{err:?}");
    assert_eq!(err.reason(), "portal_400_Request_BadRequest");
    assert_eq!(e.sim.legacy_sspr(B).unwrap().methods_required, 2);
    let put = e.sim.writes(B).unwrap().into_iter().find(|w| w.method == "PUT").unwrap();
    assert_eq!((put.path.as_str(), put.status), ("/api/PasswordReset/PasswordResetPolicies", 200));

    // A Graph token is no use to the portal's API, and the other way round.
    let expired = PortalClient::new(PortalConfig::new(&base, &base)).unwrap();
    e.sim.clock().advance(chrono::TimeDelta::hours(2));
    let err = expired.get_policy(&token).await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
}

/// Creates a group in tenant A, lets it replicate, and returns its id with A's 30 user ids.
async fn group_and_users(e: &Env, name: &str) -> (String, Vec<String>) {
    let t = tenant(A);
    let group = e
        .client
        .create_security_group(
            &t,
            &NewSecurityGroup {
                display_name: name.into(),
                mail_nickname: name.into(),
                description: None,
                members: Vec::new(),
                dynamic_rule: None,
            },
        )
        .await
        .unwrap();
    // Past tenant A's replication delay: the group is visible everywhere.
    e.sim.clock().advance(chrono::TimeDelta::seconds(10));
    let mut users = Vec::new();
    e.client
        .for_each_user(&t, None, "id", |page: Vec<User>| {
            users.extend(page.into_iter().map(|u| u.id))
        })
        .await
        .unwrap();
    assert_eq!(users.len(), 30);
    (group.id, users)
}

#[tokio::test]
async fn members_are_bound_twenty_a_request_and_a_refused_bind_falls_back_to_refs() {
    let e = env(0.0, |_| {}).await;
    assert_eq!(e.client.config().member_add, MemberAdd::Bind, "bind is the default");
    let t = tenant(A);
    let (group, users) = group_and_users(&e, "bind").await;
    // One of the second twenty already is a member: Graph refuses that whole bind.
    e.client.add_group_member(&t, &group, &users[25]).await.unwrap();
    let before = e.sim.writes(A).unwrap().len();
    let results = e.client.add_group_members(&t, &group, &users).await.unwrap();

    let ids: Vec<&String> = results.iter().map(|(id, _)| id).collect();
    assert_eq!(ids, users.iter().collect::<Vec<_>>(), "one result per id, in order");
    for (i, (_, r)) in results.iter().enumerate() {
        let want = if i == 25 { AddMember::AlreadyMember } else { AddMember::Added };
        assert_eq!(r.as_ref().unwrap(), &want, "user {i}");
    }
    let writes = e.sim.writes(A).unwrap()[before..].to_vec();
    let binds: Vec<_> = writes.iter().filter(|w| w.method == "PATCH").collect();
    assert_eq!(binds.len(), 2, "30 members are two binds: {writes:?}");
    assert!(binds.iter().all(|w| w.path == format!("/groups/{group}")));
    let mut sizes: Vec<usize> =
        binds.iter().map(|w| w.body["members@odata.bind"].as_array().unwrap().len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [10, 20]);
    let statuses: Vec<u16> = binds.iter().map(|w| w.status).collect();
    assert!(statuses.contains(&204) && statuses.contains(&400), "{statuses:?}");
    let refs = writes.iter().filter(|w| w.method == "POST" && w.path.ends_with("/members/$ref"));
    assert_eq!(refs.count(), 10, "the refused bind's ten members went one by one");
    assert_eq!(e.client.group_members(&t, &group).await.unwrap().len(), 30);
    assert_eq!(e.sim.stats(A).unwrap().early_requests, 0);
}

#[tokio::test]
async fn members_go_one_reference_each_when_configured() {
    let e = env(0.0, |c| c.member_add = MemberAdd::Ref).await;
    let t = tenant(A);
    let (group, users) = group_and_users(&e, "refs").await;
    let before = e.sim.writes(A).unwrap().len();
    let results = e.client.add_group_members(&t, &group, &users).await.unwrap();
    assert!(results.iter().all(|(_, r)| r.as_ref().unwrap() == &AddMember::Added));
    let writes = e.sim.writes(A).unwrap()[before..].to_vec();
    assert_eq!(writes.len(), 30);
    assert!(writes.iter().all(|w| w.method == "POST" && w.path.ends_with("/members/$ref")));
    assert_eq!(e.client.group_members(&t, &group).await.unwrap().len(), 30);
}

#[tokio::test]
async fn a_report_429_holds_the_tenants_report_reads_but_not_its_writes_or_identity_reads() {
    // The simulator's reporting buckets on, its clock frozen; the client thinks it may read 10
    // reports a tenant per window (twice the real limit), so the 6th read meets Graph's 429.
    let e = env_of(&scenario_with(0.0, true), |c| {
        c.limits_scale = 2.0;
        c.retry.max_attempts = 1;
    })
    .await;
    let (a, b) = (tenant(A), tenant(B));
    for _ in 0..5 {
        e.client.users_registered_by_feature(&a, ReportPriority::Low).await.unwrap();
    }
    let err = e.client.users_registered_by_feature(&a, ReportPriority::High).await.unwrap_err();
    assert_eq!(err.status(), Some(429), "{err}");
    let GraphError::Graph { retry_after: Some(hold), .. } = &err else {
        panic!("a 429 with a Retry-After: {err}")
    };
    let hold = *hold;
    assert!(hold >= Duration::from_secs(1), "{hold:?}");
    let held_at = std::time::Instant::now();
    // Identity reads and writes of the tenant, and another tenant's reports, go at once.
    assert!(e.client.groups_named(&a, "none such").await.unwrap().is_empty());
    let group = e
        .client
        .create_security_group(&a, &NewSecurityGroup::new("Report hold", "reporthold"))
        .await
        .unwrap();
    assert!(!group.id.is_empty());
    e.client.users_registered_by_feature(&b, ReportPriority::Low).await.unwrap();
    assert!(held_at.elapsed() < hold, "nothing above waited for the report hold");
    assert!(e.client.blocked_until(A).is_none(), "the tenant's calls are not held");
    // The tenant's next report read waits for the Retry-After (the simulator's window is over
    // by then on its clock), so it is not early.
    e.sim.clock().advance(chrono::TimeDelta::seconds(10));
    e.client.users_registered_by_feature(&a, ReportPriority::High).await.unwrap();
    assert!(held_at.elapsed() >= hold - Duration::from_millis(50));
    let stats = e.sim.stats(A).unwrap();
    assert_eq!((stats.throttled, stats.early_requests), (1, 0), "{stats:?}");
    let reports = e.client.metrics().reports();
    let by_feature = &reports["GET /reports/authenticationMethods/usersRegisteredByFeature"];
    assert_eq!((by_feature.calls, by_feature.throttled), (8, 1));
    assert!(!reports.contains_key("GET /groups"));
}
