//! The wire model against the JSON examples of `shared/reference/graph-facts.md`.

use chrono::{TimeZone, Utc};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use sspr_graph::types::*;

fn sku(
    part: &str,
    sku_id: &str,
    status: &str,
    enabled: i32,
    plans: &[(&str, &str, &str)],
) -> SubscribedSku {
    let plans: Vec<Value> = plans
        .iter()
        .map(|(id, name, state)| {
            json!({"servicePlanId": id, "servicePlanName": name, "provisioningStatus": state, "appliesTo": "User"})
        })
        .collect();
    serde_json::from_value(json!({
        "id": format!("tenant_{sku_id}"),
        "skuId": sku_id,
        "skuPartNumber": part,
        "capabilityStatus": status,
        "consumedUnits": 3,
        "prepaidUnits": {"enabled": enabled, "suspended": 0, "warning": 0, "lockedOut": 0},
        "servicePlans": plans,
    }))
    .expect("a valid subscribedSku")
}

const E5: &str = "06ebc4ee-1bb5-47dd-8120-11324bc54e06";
const BUSINESS_PREMIUM: &str = "cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46";

// --- §1 authentication methods policy -------------------------------------------------------

/// The shape of the documented GET example: configs inlined with `@odata.type`, PascalCase ids,
/// `all_users` targets.
fn policy_json() -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#authenticationMethodsPolicy",
        "id": "authenticationMethodsPolicy",
        "displayName": "Authentication Methods Policy",
        "description": "The tenant-wide policy that controls which authentication methods are allowed in the tenant, authentication method registration requirements, and self-service password reset settings",
        "lastModifiedDateTime": "2022-05-17T16:02:53.5797541Z",
        "policyVersion": "1.4",
        "policyMigrationState": "migrationInProgress",
        "reconfirmationInDays": 180,
        "registrationEnforcement": {
            "authenticationMethodsRegistrationCampaign": {
                "snoozeDurationInDays": 1,
                "state": "default",
                "excludeTargets": [],
                "includeTargets": [{"id": "all_users", "targetType": "group", "targetedAuthenticationMethod": "microsoftAuthenticator"}]
            }
        },
        "authenticationMethodConfigurations": [
            {
                "@odata.type": "#microsoft.graph.fido2AuthenticationMethodConfiguration",
                "id": "Fido2",
                "state": "disabled",
                "isSelfServiceRegistrationAllowed": true,
                "isAttestationEnforced": true,
                "keyRestrictions": {"isEnforced": false, "enforcementType": "block", "aaGuids": []},
                "excludeTargets": [],
                "includeTargets@odata.context": "https://graph.microsoft.com/v1.0/$metadata#policies/authenticationMethodsPolicy/authenticationMethodConfigurations('Fido2')/microsoft.graph.fido2AuthenticationMethodConfiguration/includeTargets",
                "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": false}]
            },
            {
                "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration",
                "id": "MicrosoftAuthenticator",
                "state": "enabled",
                "isSoftwareOathEnabled": false,
                "excludeTargets": [],
                "featureSettings": {
                    "displayAppInformationRequiredState": {
                        "state": "default",
                        "includeTarget": {"targetType": "group", "id": "all_users"},
                        "excludeTarget": {"targetType": "group", "id": "00000000-0000-0000-0000-000000000000"}
                    }
                },
                "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": false, "authenticationMode": "any"}]
            },
            {
                "@odata.type": "#microsoft.graph.smsAuthenticationMethodConfiguration",
                "id": "Sms",
                "state": "enabled",
                "excludeTargets": [],
                "includeTargets": [{"targetType": "group", "id": "all_users", "isRegistrationRequired": false, "isUsableForSignIn": true}]
            }
        ]
    })
}

#[test]
fn policy_example_with_inlined_configurations_decodes() {
    let policy: AuthenticationMethodsPolicy = serde_json::from_value(policy_json()).unwrap();
    assert_eq!(policy.id, "authenticationMethodsPolicy");
    assert_eq!(policy.policy_version.as_deref(), Some("1.4"));
    assert_eq!(policy.policy_migration_state, Some(PolicyMigrationState::MigrationInProgress));
    assert_eq!(policy.reconfirmation_in_days, Some(180));
    assert_eq!(
        policy.last_modified_date_time.unwrap().timestamp(),
        Utc.with_ymd_and_hms(2022, 5, 17, 16, 2, 53).unwrap().timestamp()
    );
    let campaign = policy.registration_campaign().unwrap();
    assert_eq!(campaign.state, AdvancedConfigState::Default);
    assert_eq!(
        campaign.include_targets[0].targeted_authentication_method,
        "microsoftAuthenticator"
    );

    assert_eq!(policy.authentication_method_configurations.len(), 3);
    let fido = policy.configuration(MethodId::Fido2).unwrap();
    assert_eq!(fido.state, MethodState::Disabled);
    assert_eq!(fido.extra["isAttestationEnforced"], json!(true));
    assert!(fido.include_targets[0].is_all_users());

    let authenticator = policy.configuration(MethodId::MicrosoftAuthenticator).unwrap();
    assert_eq!(authenticator.include_targets[0].authentication_mode.as_deref(), Some("any"));
    assert!(authenticator.includes_group("any-group-because-all-users"));

    let sms = policy.configuration(MethodId::Sms).unwrap();
    assert_eq!(sms.odata_type, MethodId::Sms.odata_type());
    assert_eq!(sms.include_targets[0].is_usable_for_sign_in, Some(true));
    assert_eq!(sms.include_targets[0].target_type, TargetType::Group);
    assert!(policy.configuration(MethodId::Email).is_none());
}

#[test]
fn unknown_enum_values_are_tolerated() {
    let mut json = policy_json();
    json["policyMigrationState"] = json!("somethingNew");
    json["authenticationMethodConfigurations"][2]["includeTargets"][0]["targetType"] =
        json!("role");
    let policy: AuthenticationMethodsPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(policy.policy_migration_state, Some(PolicyMigrationState::UnknownFutureValue));
    assert_eq!(
        policy.configuration(MethodId::Sms).unwrap().include_targets[0].target_type,
        TargetType::UnknownFutureValue
    );

    let mut json = policy_json();
    json["policyMigrationState"] = Value::Null;
    json["registrationEnforcement"] = json!({"authenticationMethodsRegistrationCampaign": null});
    let policy: AuthenticationMethodsPolicy = serde_json::from_value(json).unwrap();
    assert_eq!(policy.policy_migration_state, None);
    assert!(policy.registration_campaign().is_none());
}

#[test]
fn method_configuration_round_trips_type_specific_properties() {
    let original = json!({
        "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration",
        "id": "MicrosoftAuthenticator",
        "state": "disabled",
        "isSoftwareOathEnabled": true,
        "featureSettings": {
            "displayAppInformationRequiredState": {"state": "enabled", "includeTarget": {"targetType": "group", "id": "all_users"}, "excludeTarget": {"targetType": "group", "id": "g-x"}},
            "displayLocationInformationRequiredState": {"state": "disabled", "includeTarget": {"targetType": "group", "id": "all_users"}, "excludeTarget": {"targetType": "group", "id": "g-y"}}
        },
        "excludeTargets": [{"id": "g-excluded", "targetType": "group"}],
        "includeTargets": [
            {"targetType": "group", "id": "g-pilot", "isRegistrationRequired": true, "authenticationMode": "push"},
            {"targetType": "group", "id": "g-passkey", "isRegistrationRequired": false, "allowedPasskeyProfiles": ["a1b2"]}
        ]
    });
    let config: MethodConfiguration = serde_json::from_value(original.clone()).unwrap();
    assert_eq!(config.method_id(), Some(MethodId::MicrosoftAuthenticator));
    assert_eq!(config.include_targets[1].extra["allowedPasskeyProfiles"], json!(["a1b2"]));
    assert_eq!(
        serde_json::to_value(&config).unwrap(),
        original,
        "nothing lost on a plain round trip"
    );

    // Read, change, write back: only the change differs.
    let mut changed = config.clone();
    changed.state = MethodState::Enabled;
    changed.include_targets.push(MethodTarget::group("g-new").registration_required(false));
    let written = changed.to_patch_json();
    let mut expected = original.clone();
    expected["state"] = json!("enabled");
    expected["includeTargets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"targetType": "group", "id": "g-new", "isRegistrationRequired": false}));
    assert_eq!(written, expected);
}

#[test]
fn patch_json_drops_response_annotations_but_keeps_odata_type() {
    let json = policy_json();
    let fido: MethodConfiguration =
        serde_json::from_value(json["authenticationMethodConfigurations"][0].clone()).unwrap();
    assert!(fido.extra.contains_key("includeTargets@odata.context"), "kept on read");
    let body = fido.to_patch_json();
    assert!(body.get("includeTargets@odata.context").is_none());
    assert_eq!(
        body["@odata.type"],
        json!("#microsoft.graph.fido2AuthenticationMethodConfiguration")
    );
    assert_eq!(body["keyRestrictions"]["enforcementType"], json!("block"));
}

#[test]
fn sms_patch_example_matches_the_builder() {
    // graph-facts §1, verbatim.
    let documented = json!({"@odata.type":"#microsoft.graph.smsAuthenticationMethodConfiguration","id":"Sms","state":"enabled"});
    let config: MethodConfiguration = serde_json::from_value(documented.clone()).unwrap();
    assert_eq!(config.state, MethodState::Enabled);
    assert!(config.include_targets.is_empty() && config.exclude_targets.is_empty());
    assert_eq!(
        MethodConfigPatch::new(MethodId::Sms).state(MethodState::Enabled).to_json(),
        documented
    );
}

#[test]
fn method_config_patch_always_carries_odata_type() {
    for method in MethodId::ALL {
        let body = MethodConfigPatch::new(method).to_json();
        assert_eq!(body["@odata.type"], json!(method.odata_type()), "{method}");
        assert_eq!(body["id"], json!(method.as_path_segment()));
        assert_eq!(body.as_object().unwrap().len(), 2, "nothing else unless set");
        // A property cannot override the type or the id.
        let body = MethodConfigPatch::new(method)
            .property("@odata.type", json!("#microsoft.graph.wrong"))
            .property("id", json!("Wrong"))
            .to_json();
        assert_eq!(body["@odata.type"], json!(method.odata_type()));
        assert_eq!(body["id"], json!(method.as_path_segment()));
    }
    let body = MethodConfigPatch::new(MethodId::MicrosoftAuthenticator)
        .state(MethodState::Enabled)
        .include_group("g-pilot")
        .exclude_targets(vec![ExcludeTarget::group("g-break-glass")])
        .property("isSoftwareOathEnabled", json!(true))
        .to_json();
    assert_eq!(
        body,
        json!({
            "@odata.type": "#microsoft.graph.microsoftAuthenticatorAuthenticationMethodConfiguration",
            "id": "MicrosoftAuthenticator",
            "state": "enabled",
            "isSoftwareOathEnabled": true,
            "includeTargets": [{"targetType": "group", "id": "g-pilot", "isRegistrationRequired": false, "authenticationMode": "any"}],
            "excludeTargets": [{"id": "g-break-glass", "targetType": "group"}]
        })
    );
    let body =
        MethodConfigPatch::new(MethodId::Email).include_group("g1").include_all_users().to_json();
    assert_eq!(
        body["includeTargets"],
        json!([{"targetType": "group", "id": ALL_USERS, "isRegistrationRequired": false}])
    );
}

#[test]
fn method_ids_match_case_insensitively() {
    assert!(MethodId::Sms.matches("Sms"));
    assert!(MethodId::Sms.matches("SMS"));
    assert!(MethodId::Sms.matches("sms"));
    assert!(MethodId::Fido2.matches("FIDO2"));
    assert!(!MethodId::Sms.matches("Email"));
    assert!(!MethodId::Sms.matches("Sms "));
    assert_eq!(MethodId::from_id("microsoftauthenticator"), Some(MethodId::MicrosoftAuthenticator));
    assert_eq!(MethodId::from_id("x509certificate"), Some(MethodId::X509Certificate));
    assert_eq!(MethodId::from_id("QrCodePin"), None);
    assert_eq!(MethodId::TemporaryAccessPass.as_path_segment(), "TemporaryAccessPass");
    assert_eq!(
        MethodId::SoftwareOath.odata_type(),
        "#microsoft.graph.softwareOathAuthenticationMethodConfiguration"
    );
}

// --- §2 registration campaign ----------------------------------------------------------------

#[test]
fn campaign_patch_example_is_reproduced() {
    // graph-facts §2, verbatim with a concrete group id.
    let documented = json!({"registrationEnforcement":{"authenticationMethodsRegistrationCampaign":{"snoozeDurationInDays":1,"state":"enabled","excludeTargets":[],"includeTargets":[{"id":"3ee3a9de-0a86-4e12-a287-9769accf1ba2","targetType":"group","targetedAuthenticationMethod":"microsoftAuthenticator"}]}}});
    let enforcement: RegistrationEnforcement =
        serde_json::from_value(documented["registrationEnforcement"].clone()).unwrap();
    let campaign = enforcement.authentication_methods_registration_campaign.unwrap();
    assert_eq!(campaign.state, AdvancedConfigState::Enabled);
    assert_eq!(campaign.snooze_duration_in_days, 1);
    let built = RegistrationCampaign::enabled(
        1,
        vec![CampaignIncludeTarget::authenticator_for_group(
            "3ee3a9de-0a86-4e12-a287-9769accf1ba2",
        )],
    );
    assert_eq!(built, campaign);
    assert_eq!(registration_campaign_patch(&built).unwrap(), documented);
}

#[test]
fn campaign_snooze_and_method_are_validated() {
    let target = || vec![CampaignIncludeTarget::authenticator_for_group(ALL_USERS)];
    assert!(registration_campaign_patch(&RegistrationCampaign::enabled(0, target())).is_ok());
    assert!(registration_campaign_patch(&RegistrationCampaign::enabled(14, target())).is_ok());
    assert_eq!(
        registration_campaign_patch(&RegistrationCampaign::enabled(15, target())),
        Err(CampaignError::SnoozeOutOfRange(15))
    );
    assert_eq!(
        registration_campaign_patch(&RegistrationCampaign::enabled(-1, target())),
        Err(CampaignError::SnoozeOutOfRange(-1))
    );
    let mut fido = target();
    fido[0].targeted_authentication_method = "fido2".into();
    assert_eq!(
        registration_campaign_patch(&RegistrationCampaign::enabled(3, fido)),
        Err(CampaignError::UnsupportedMethod("fido2".into()))
    );
}

// --- §4, §7 directory singletons -------------------------------------------------------------

#[test]
fn authorization_policy_keeps_unmodelled_properties() {
    let json = json!({
        "id": "authorizationPolicy",
        "allowInvitesFrom": "everyone",
        "allowedToSignUpEmailBasedSubscriptions": true,
        "allowedToUseSSPR": true,
        "blockMsolPowerShell": false,
        "defaultUserRolePermissions": {"allowedToCreateApps": true}
    });
    let policy: AuthorizationPolicy = serde_json::from_value(json.clone()).unwrap();
    assert!(policy.allowed_to_use_sspr);
    assert_eq!(policy.extra["allowInvitesFrom"], json!("everyone"));
    assert_eq!(serde_json::to_value(&policy).unwrap(), json);
    assert_eq!(allowed_to_use_sspr_patch(false), json!({"allowedToUseSSPR": false}));
}

#[test]
fn organization_sync_state_is_three_valued() {
    let json = json!({"value": [{
        "id": "84841066-274d-4ec0-a5c1-276be684bdd3",
        "displayName": "Contoso",
        "onPremisesSyncEnabled": null,
        "onPremisesLastSyncDateTime": null,
        "verifiedDomains": [
            {"capabilities": "Email, OfficeCommunicationsOnline", "isDefault": false, "isInitial": true, "name": "contoso.onmicrosoft.com", "type": "Managed"},
            {"capabilities": "Email", "isDefault": true, "isInitial": false, "name": "contoso.com", "type": "Managed"}
        ]
    }]});
    let page: Collection<Organization> = serde_json::from_value(json).unwrap();
    assert!(page.is_last_page());
    let org = &page.value[0];
    assert_eq!(org.on_premises_sync_enabled, None);
    assert_eq!(org.default_domain(), Some("contoso.com"));
    assert_eq!(org.initial_domain(), Some("contoso.onmicrosoft.com"));
    let synced: Organization = serde_json::from_value(json!({"id": "t", "onPremisesSyncEnabled": false, "onPremisesLastSyncDateTime": "2024-02-01T10:00:00Z"})).unwrap();
    assert_eq!(synced.on_premises_sync_enabled, Some(false));
    assert!(synced.on_premises_last_sync_date_time.is_some());
}

#[test]
fn collections_follow_next_link() {
    let page: Collection<User> = serde_json::from_value(json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users",
        "@odata.nextLink": "https://graph.microsoft.com/v1.0/users?$skiptoken=X%27abc",
        "value": [{"id": "u1", "displayName": "Adele", "userPrincipalName": "adele@contoso.com", "accountEnabled": true, "userType": "Member", "mail": null}]
    }))
    .unwrap();
    assert_eq!(
        page.next_link.as_deref(),
        Some("https://graph.microsoft.com/v1.0/users?$skiptoken=X%27abc")
    );
    assert!(!page.is_last_page());
    assert_eq!(page.value[0].account_enabled, Some(true));
    assert_eq!(page.value[0].mail, None);
    let empty: Collection<Group> = serde_json::from_value(json!({"value": null})).unwrap();
    assert!(empty.value.is_empty() && empty.is_last_page());
}

// --- §5 licensing ----------------------------------------------------------------------------

#[test]
fn subscribed_sku_with_p1_plan_decodes_and_counts() {
    let json = json!({"value": [{
        "capabilityStatus": "Enabled",
        "consumedUnits": 14,
        "id": "48a80680-7326-48cd-9935-b556b81d3a4e_cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46",
        "prepaidUnits": {"enabled": 25, "suspended": 0, "warning": 0, "lockedOut": 0},
        "servicePlans": [
            {"servicePlanId": "8a256a2b-b617-496d-b51b-e76466e88db0", "servicePlanName": "MFA_PREMIUM", "provisioningStatus": "Success", "appliesTo": "User"},
            {"servicePlanId": "41781FB2-BC02-4B7C-BD55-B576C07BB09D", "servicePlanName": "AAD_PREMIUM", "provisioningStatus": "Success", "appliesTo": "User"}
        ],
        "skuId": "cbdc14ab-d96c-4c30-b9f4-6ada7cdc1d46",
        "skuPartNumber": "SPB",
        "appliesTo": "User"
    }]});
    let skus: Collection<SubscribedSku> = serde_json::from_value(json).unwrap();
    let sku = &skus.value[0];
    assert_eq!(sku.prepaid_units.unwrap().enabled, Some(25));
    assert_eq!(sku.consumed_units, Some(14));
    assert!(sku.plan(ENTRA_ID_P1_PLAN_ID).is_some(), "plan GUIDs match ignoring case");
    let readiness = licence_readiness(&skus.value);
    assert!(readiness.premium_p1);
    assert!(!readiness.premium_p2);
    assert!(readiness.cloud_sspr);
    assert!(
        readiness.evidence.iter().any(|e| e.contains("SPB") && e.contains("P1")),
        "{:?}",
        readiness.evidence
    );
}

#[test]
fn licence_readiness_rejects_suspended_disabled_and_unpaid() {
    let p1 = (ENTRA_ID_P1_PLAN_ID, "AAD_PREMIUM", "Success");
    for (label, skus) in [
        ("suspended", vec![sku("SPB", BUSINESS_PREMIUM, "Suspended", 10, &[p1])]),
        ("warning", vec![sku("SPB", BUSINESS_PREMIUM, "Warning", 10, &[p1])]),
        (
            "plan disabled",
            vec![sku(
                "SPB",
                BUSINESS_PREMIUM,
                "Enabled",
                10,
                &[(ENTRA_ID_P1_PLAN_ID, "AAD_PREMIUM", "Disabled")],
            )],
        ),
        (
            "plan pending",
            vec![sku(
                "SPB",
                BUSINESS_PREMIUM,
                "Enabled",
                10,
                &[(ENTRA_ID_P1_PLAN_ID, "AAD_PREMIUM", "PendingProvisioning")],
            )],
        ),
        ("no prepaid units", vec![sku("SPB", BUSINESS_PREMIUM, "Enabled", 0, &[p1])]),
        (
            "part number only",
            vec![sku("AAD_PREMIUM", "078d2b04-f1bd-4111-bbd4-b4b1b354cef4", "Enabled", 10, &[])],
        ),
        ("no skus", vec![]),
    ] {
        let readiness = licence_readiness(&skus);
        assert!(!readiness.premium_p1, "{label}");
        assert!(!readiness.premium_p2, "{label}");
        assert!(!readiness.cloud_sspr, "{label}");
    }
    let readiness = licence_readiness(&[sku("SPB", BUSINESS_PREMIUM, "Suspended", 10, &[p1])]);
    assert!(readiness.evidence.iter().any(|e| e.contains("Suspended")), "{:?}", readiness.evidence);
}

#[test]
fn licence_readiness_business_standard_and_e5() {
    let standard = sku("O365_BUSINESS_PREMIUM", BUSINESS_STANDARD_SKU_ID, "Enabled", 5, &[]);
    let readiness = licence_readiness(std::slice::from_ref(&standard));
    assert!(!readiness.premium_p1 && !readiness.premium_p2);
    assert!(readiness.cloud_sspr, "Business Standard includes cloud-only reset");

    let unpaid_standard = sku("O365_BUSINESS_PREMIUM", BUSINESS_STANDARD_SKU_ID, "Enabled", 0, &[]);
    assert!(!licence_readiness(&[unpaid_standard]).cloud_sspr);

    let e5 = sku(
        "SPE_E5",
        E5,
        "Enabled",
        100,
        &[
            (ENTRA_ID_P1_PLAN_ID, "AAD_PREMIUM", "Success"),
            (ENTRA_ID_P2_PLAN_ID, "AAD_PREMIUM_P2", "Success"),
        ],
    );
    let readiness = licence_readiness(&[standard, e5]);
    assert!(readiness.premium_p1 && readiness.premium_p2 && readiness.cloud_sspr);
    assert_eq!(readiness.evidence.len(), 3, "{:?}", readiness.evidence);

    // P2 plan provisioned but P1 disabled still gives P1-level features.
    let p2_only = sku(
        "SPE_E5",
        E5,
        "Enabled",
        100,
        &[
            (ENTRA_ID_P1_PLAN_ID, "AAD_PREMIUM", "Disabled"),
            (ENTRA_ID_P2_PLAN_ID, "AAD_PREMIUM_P2", "Success"),
        ],
    );
    let readiness = licence_readiness(&[p2_only]);
    assert!(readiness.premium_p1 && readiness.premium_p2);
}

// --- §8 groups -------------------------------------------------------------------------------

#[test]
fn mail_nickname_from_strips_forbidden_characters_and_caps_at_64() {
    assert_eq!(
        mail_nickname_from("SSPR pilot (stage 1): a.b@c, [x] <y>; \"z\" \\w"),
        "SSPRpilotstage1abcxyzw"
    );
    assert_eq!(mail_nickname_from("Équipe – Zürich"), "quipeZrich");
    assert_eq!(mail_nickname_from("@@@ ..."), "group");
    let long = mail_nickname_from(&"ab-".repeat(40));
    assert_eq!(long.len(), 64);
    assert!(validate_mail_nickname(&long).is_ok());
    for name in ["a b", "a.b", "a@b", "ä", "", &"x".repeat(65)] {
        assert!(validate_mail_nickname(name).is_err(), "{name:?}");
        assert!(validate_mail_nickname(&mail_nickname_from(name)).is_ok(), "{name:?}");
    }
}

#[test]
fn new_security_group_body_is_the_documented_one() {
    let body = NewSecurityGroup::new("SSPR pilot", "ssprpilot")
        .to_json("https://graph.microsoft.com")
        .unwrap();
    assert_eq!(
        body,
        json!({"displayName": "SSPR pilot", "mailEnabled": false, "mailNickname": "ssprpilot", "securityEnabled": true, "groupTypes": []})
    );
    let body = NewSecurityGroup::named("SSPR pilot")
        .description("Pilot users")
        .members(vec!["u1".into(), "u2".into()])
        .to_json("https://graph.microsoft.com/")
        .unwrap();
    assert_eq!(body["mailNickname"], json!("SSPRpilot"));
    assert_eq!(body["description"], json!("Pilot users"));
    assert_eq!(
        body["members@odata.bind"],
        json!([
            "https://graph.microsoft.com/v1.0/directoryObjects/u1",
            "https://graph.microsoft.com/v1.0/directoryObjects/u2"
        ])
    );
    let dynamic = NewSecurityGroup::new("All staff", "allstaff")
        .dynamic_rule("(user.accountEnabled -eq true)")
        .to_json("http://127.0.0.1:8080")
        .unwrap();
    assert_eq!(dynamic["groupTypes"], json!(["DynamicMembership"]));
    assert_eq!(dynamic["membershipRule"], json!("(user.accountEnabled -eq true)"));
    assert_eq!(dynamic["membershipRuleProcessingState"], json!("On"));
    assert_eq!(dynamic["securityEnabled"], json!(true));
    assert_eq!(dynamic["mailEnabled"], json!(false));
}

#[test]
fn new_security_group_is_validated() {
    let base = "https://graph.microsoft.com";
    let members: Vec<String> = (0..21).map(|i| format!("u{i}")).collect();
    assert_eq!(
        NewSecurityGroup::new("G", "g").members(members.clone()).to_json(base),
        Err(GroupError::TooManyMembers(21))
    );
    assert!(NewSecurityGroup::new("G", "g").members(members[..20].to_vec()).to_json(base).is_ok());
    assert!(matches!(
        NewSecurityGroup::new("G", "bad nick").to_json(base),
        Err(GroupError::MailNickname { .. })
    ));
    assert_eq!(NewSecurityGroup::new("", "g").to_json(base), Err(GroupError::DisplayNameLength(0)));
    assert_eq!(
        NewSecurityGroup::new("x".repeat(257), "g").to_json(base),
        Err(GroupError::DisplayNameLength(257))
    );
    assert_eq!(
        NewSecurityGroup::new("G", "g")
            .members(vec!["u1".into()])
            .dynamic_rule("(user.x -eq 1)")
            .to_json(base),
        Err(GroupError::DynamicWithMembers)
    );
    assert_eq!(
        NewSecurityGroup::new("G", "g").members(vec!["../groups".into()]).to_json(base),
        Err(GroupError::InvalidObjectId("../groups".into()))
    );
}

#[test]
fn member_reference_bodies() {
    let id = "4562bcc8-c436-4f95-b7c0-4f8ce89dca5e";
    assert_eq!(
        member_ref_body("https://graph.microsoft.com", id).unwrap(),
        json!({"@odata.id": format!("https://graph.microsoft.com/v1.0/directoryObjects/{id}")})
    );
    assert_eq!(
        member_ref_body("https://graph.microsoft.com/v1.0/", id).unwrap(),
        member_ref_body("https://graph.microsoft.com", id).unwrap()
    );
    assert!(member_ref_body("https://graph.microsoft.com", "a/b").is_err());
    let ids: Vec<String> = (0..20).map(|i| format!("id{i}")).collect();
    let body = members_bind_body("http://sim", &ids).unwrap();
    assert_eq!(body["members@odata.bind"].as_array().unwrap().len(), 20);
    assert_eq!(body["members@odata.bind"][3], json!("http://sim/v1.0/directoryObjects/id3"));
    let mut too_many = ids.clone();
    too_many.push("id20".into());
    assert_eq!(members_bind_body("http://sim", &too_many), Err(GroupError::TooManyMembers(21)));
    assert_eq!(members_bind_body("http://sim", &[]), Err(GroupError::NoMembers));
}

#[test]
fn group_and_directory_objects_decode() {
    let group: Group = serde_json::from_value(json!({
        "id": "g1", "displayName": "SSPR pilot", "description": null, "mailEnabled": false,
        "mailNickname": "ssprpilot", "securityEnabled": true, "groupTypes": ["DynamicMembership"],
        "membershipRule": "(user.department -eq \"IT\")", "membershipRuleProcessingState": "On",
        "createdDateTime": "2024-06-01T08:00:00Z", "visibility": null
    }))
    .unwrap();
    assert!(group.is_dynamic());
    assert_eq!(group.security_enabled, Some(true));
    let members: Collection<DirectoryObject> = serde_json::from_value(json!({"value": [
        {"@odata.type": "#microsoft.graph.user", "id": "u1", "displayName": "Adele", "userPrincipalName": "adele@contoso.com"},
        {"@odata.type": "#microsoft.graph.group", "id": "g2", "displayName": "Nested"}
    ]}))
    .unwrap();
    assert!(members.value[0].is_user());
    assert!(!members.value[1].is_user());
    assert_eq!(members.value[1].user_principal_name, None);
}

// --- §6 reports ------------------------------------------------------------------------------

#[test]
fn registration_details_decode_every_field() {
    let row: UserRegistrationDetails = serde_json::from_value(json!({
        "id": "86462606-fde0-4fc4-9e0c-a20eb73e54c6",
        "userPrincipalName": "AlexW@Contoso.com",
        "userDisplayName": "Alex Wilber",
        "userType": "member",
        "isAdmin": false,
        "isSsprRegistered": false,
        "isSsprEnabled": false,
        "isSsprCapable": false,
        "isMfaRegistered": true,
        "isMfaCapable": true,
        "isPasswordlessCapable": false,
        "methodsRegistered": ["microsoftAuthenticatorPush", "softwareOneTimePasscode"],
        "isSystemPreferredAuthenticationMethodEnabled": true,
        "systemPreferredAuthenticationMethods": ["push"],
        "userPreferredMethodForSecondaryAuthentication": "push",
        "lastUpdatedDateTime": "2021-08-27T14:37:58.1450237Z"
    }))
    .unwrap();
    assert!(row.is_mfa_registered && row.is_mfa_capable);
    assert!(
        !row.is_sspr_capable
            && !row.is_sspr_enabled
            && !row.is_sspr_registered
            && !row.is_passwordless_capable
    );
    assert_eq!(row.is_admin, Some(false));
    assert_eq!(row.is_system_preferred_authentication_method_enabled, Some(true));
    assert_eq!(row.methods_registered, ["microsoftAuthenticatorPush", "softwareOneTimePasscode"]);
    assert_eq!(row.system_preferred_authentication_methods, ["push"]);
    assert_eq!(row.user_preferred_method_for_secondary_authentication.as_deref(), Some("push"));
    assert_eq!(row.user_type.as_deref(), Some("member"));
    assert!(row.last_updated_date_time.is_some());

    // Booleans default to false; `""` is a valid preferred method.
    let sparse: UserRegistrationDetails = serde_json::from_value(json!({
        "id": "u2", "isSsprEnabled": true, "isAdmin": null, "methodsRegistered": null,
        "userPreferredMethodForSecondaryAuthentication": ""
    }))
    .unwrap();
    assert!(sparse.is_sspr_enabled && !sparse.is_sspr_registered);
    assert_eq!(sparse.is_admin, None);
    assert!(sparse.methods_registered.is_empty());
    assert_eq!(sparse.user_preferred_method_for_secondary_authentication.as_deref(), Some(""));
}

#[test]
fn users_registered_by_feature_example_decodes() {
    // graph-facts §6.
    let summary: UserRegistrationFeatureSummary = serde_json::from_value(json!({
        "@odata.type": "#microsoft.graph.userRegistrationFeatureSummary",
        "totalUserCount": 23,
        "userTypes": "all",
        "userRoles": "all",
        "userRegistrationFeatureCounts": [
            {"feature": "ssprRegistered", "userCount": 5},
            {"feature": "ssprEnabled", "userCount": 13},
            {"feature": "ssprCapable", "userCount": 3},
            {"feature": "passwordlessCapable", "userCount": 1},
            {"feature": "mfaCapable", "userCount": 7}
        ]
    }))
    .unwrap();
    assert_eq!(summary.total_user_count, 23);
    assert_eq!(summary.user_types.as_deref(), Some("all"));
    assert_eq!(summary.count(FEATURE_SSPR_REGISTERED), Some(5));
    assert_eq!(summary.count(FEATURE_SSPR_ENABLED), Some(13));
    assert_eq!(summary.count(FEATURE_SSPR_CAPABLE), Some(3));
    assert_eq!(summary.count(FEATURE_PASSWORDLESS_CAPABLE), Some(1));
    assert_eq!(summary.count(FEATURE_MFA_CAPABLE), Some(7));
    assert_eq!(summary.count("somethingElse"), None);

    let methods: UserRegistrationMethodSummary = serde_json::from_value(json!({
        "totalUserCount": 23, "userRoles": "all", "userTypes": "all",
        "userRegistrationMethodCounts": [{"authenticationMethod": "mobilePhone", "userCount": 4}]
    }))
    .unwrap();
    assert_eq!(methods.count("mobilePhone"), Some(4));
    assert_eq!(methods.count("email"), None);
}

#[test]
fn directory_audit_decodes_sspr_event() {
    let page: Collection<DirectoryAudit> = serde_json::from_value(json!({"value": [{
        "id": "SSPR_1234",
        "category": "UserManagement",
        "correlationId": "c0ffee00-0000-0000-0000-000000000000",
        "result": "failure",
        "resultReason": "FuzzyPolicyViolationInvalidPassword",
        "activityDisplayName": "Reset password (self-service)",
        "activityDateTime": "2024-05-01T09:30:12.345Z",
        "loggedByService": "Self-service Password Management",
        "operationType": "Update",
        "initiatedBy": {"app": null, "user": {"id": "u1", "displayName": null, "userPrincipalName": "adele@contoso.com", "ipAddress": "203.0.113.7"}},
        "targetResources": [{"id": "u1", "displayName": null, "type": "User", "userPrincipalName": "adele@contoso.com", "modifiedProperties": []}],
        "additionalDetails": []
    }]}))
    .unwrap();
    let audit = &page.value[0];
    assert!(audit.is_sspr());
    assert!(!audit.succeeded());
    assert_eq!(audit.activity_display_name, ACTIVITY_RESET_PASSWORD_SELF_SERVICE);
    assert_eq!(audit.result_reason.as_deref(), Some("FuzzyPolicyViolationInvalidPassword"));
    assert_eq!(
        audit.initiated_by.user.as_ref().unwrap().user_principal_name.as_deref(),
        Some("adele@contoso.com")
    );
    assert!(audit.initiated_by.app.is_none());
    assert_eq!(audit.target_resources[0].resource_type.as_deref(), Some("User"));
    assert_eq!(
        audit.activity_date_time,
        Utc.with_ymd_and_hms(2024, 5, 1, 9, 30, 12).unwrap() + chrono::Duration::milliseconds(345)
    );
    assert_eq!(SSPR_SERVICE, "Self-service Password Management");
    assert_eq!(SSPR_ACTIVITIES.len(), 7);
    assert!(SSPR_ACTIVITIES.contains(&ACTIVITY_SSPR_REGISTERED));
}

#[test]
fn audit_filter_escapes_quotes() {
    let since = Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap();
    assert_eq!(
        audit_filter(ACTIVITY_RESET_PASSWORD_SELF_SERVICE, since),
        "activityDisplayName eq 'Reset password (self-service)' and activityDateTime ge 2024-05-01T00:00:00Z"
    );
    assert_eq!(
        audit_filter("O'Brien's 'reset'", since),
        "activityDisplayName eq 'O''Brien''s ''reset''' and activityDateTime ge 2024-05-01T00:00:00Z"
    );
    assert_eq!(odata_string_literal("''"), "''''''");
}

// --- §9, §10 errors and tokens ---------------------------------------------------------------

#[test]
fn throttling_error_body_decodes() {
    // graph-facts §10, verbatim apart from the elided values.
    let body: GraphErrorBody = serde_json::from_value(json!({"error":{"code":"TooManyRequests","innerError":{"code":"429","date":"2020-08-18T12:51:51","message":"Please retry after","request-id":"94fb3b52-452a-4535-a601-69e0a90e3aa2","status":"429"},"message":"Please retry again later."}})).unwrap();
    assert_eq!(body.code(), "TooManyRequests");
    assert_eq!(body.error.message, "Please retry again later.");
    assert_eq!(body.request_id(), Some("94fb3b52-452a-4535-a601-69e0a90e3aa2"));
    let inner = body.error.inner_error.as_ref().unwrap();
    assert_eq!(inner.date.as_deref(), Some("2020-08-18T12:51:51"));
    assert_eq!(inner.extra["status"], json!("429"));
    assert_eq!(inner.client_request_id, None);
}

#[test]
fn error_body_decodes_both_inner_error_spellings() {
    let documented = json!({"error":{"code":"Authorization_RequestDenied","message":"Insufficient privileges to complete the operation.","innerError":{"date":"2024-01-02T03:04:05","request-id":"r-1","client-request-id":"c-1"}}});
    let body: GraphErrorBody = serde_json::from_value(documented.clone()).unwrap();
    assert_eq!(body.code(), "Authorization_RequestDenied");
    assert_eq!(body.error.inner_error.as_ref().unwrap().client_request_id.as_deref(), Some("c-1"));
    assert_eq!(serde_json::to_value(&body).unwrap(), documented, "written back as innerError");

    let lower: GraphErrorBody = serde_json::from_value(json!({"error":{"code":"Request_BadRequest","message":"One or more added object references already exist for the following modified properties: 'members'.","innererror":{"request-id":"r-2"}}})).unwrap();
    assert_eq!(lower.request_id(), Some("r-2"));

    let bare: GraphErrorBody = serde_json::from_value(json!({"error":{"code":"Authentication_RequestFromNonPremiumTenantOrB2CTenant","message":"Neither tenant is B2C or tenant doesn't have premium license"}})).unwrap();
    assert_eq!(bare.request_id(), None);
}

#[test]
fn token_error_body_decodes() {
    // graph-facts §9.
    let body: TokenErrorBody = serde_json::from_value(json!({"error":"invalid_scope","error_description":"AADSTS70011: The provided value for the input parameter 'scope' is not valid.\r\nTrace ID: 255d1aef-8c98-452f-ac51-23d051240864\r\nCorrelation ID: fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7\r\nTimestamp: 2016-01-09 02:02:12Z","error_codes":[70011],"timestamp":"2016-01-09 02:02:12Z","trace_id":"255d1aef-8c98-452f-ac51-23d051240864","correlation_id":"fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7","error_uri":"https://login.microsoftonline.com/error?code=70011"})).unwrap();
    assert_eq!(body.error, "invalid_scope");
    assert_eq!(body.error_codes, [70011]);
    assert!(body.has_code(70011) && !body.has_code(7000215));
    assert_eq!(
        body.summary(),
        "AADSTS70011: The provided value for the input parameter 'scope' is not valid."
    );
    assert_eq!(body.trace_id.as_deref(), Some("255d1aef-8c98-452f-ac51-23d051240864"));
    assert_eq!(
        body.error_uri.as_deref(),
        Some("https://login.microsoftonline.com/error?code=70011")
    );
}

#[test]
fn token_response_hides_the_token() {
    let token: TokenResponse = serde_json::from_value(json!({"token_type":"Bearer","expires_in":3599,"ext_expires_in":3599,"access_token":"eyJ0eXAiOiJKV1Qi.secret-part"})).unwrap();
    assert_eq!(token.token_type, "Bearer");
    assert_eq!(token.expires_in, 3599);
    assert_eq!(token.access_token.expose_secret(), "eyJ0eXAiOiJKV1Qi.secret-part");
    let debug = format!("{token:?}");
    assert!(!debug.contains("secret-part") && !debug.contains("eyJ0"), "{debug}");
    let v1: TokenResponse = serde_json::from_value(
        json!({"token_type":"Bearer","expires_in":"3599","access_token":"x"}),
    )
    .unwrap();
    assert_eq!(v1.expires_in, 3599);
}

// --- §10 $batch ------------------------------------------------------------------------------

#[test]
fn batch_request_is_validated() {
    let items = |n: usize| {
        (0..n).map(|i| BatchRequestItem::get(i.to_string(), "/organization")).collect::<Vec<_>>()
    };
    assert!(BatchRequest::new(items(20)).is_ok());
    assert_eq!(BatchRequest::new(items(21)), Err(BatchError::TooMany(21)));
    assert_eq!(BatchRequest::new(vec![]), Err(BatchError::Empty));
    let mut dup = items(3);
    dup[2].id = "1".into();
    assert_eq!(BatchRequest::new(dup), Err(BatchError::DuplicateId("1".into())));
    assert_eq!(
        BatchRequest::new(vec![BatchRequestItem::get("1", "/users").depends_on(["9"])]),
        Err(BatchError::UnknownDependency { id: "1".into(), depends_on: "9".into() })
    );
    assert_eq!(
        BatchRequest::new(vec![BatchRequestItem::get(
            "1",
            "https://graph.microsoft.com/v1.0/users"
        )]),
        Err(BatchError::AbsoluteUrl("1".into()))
    );
    let mut no_type = BatchRequestItem::new("1", "POST", "/groups/g/members/$ref");
    no_type.body = Some(json!({}));
    assert_eq!(BatchRequest::new(vec![no_type]), Err(BatchError::MissingContentType("1".into())));
}

#[test]
fn batch_request_serializes_as_documented() {
    let batch = BatchRequest::new(vec![
        BatchRequestItem::get("0", "/groups/g1"),
        BatchRequestItem::new("1", "POST", "/groups/g1/members/$ref")
            .json_body(json!({"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u1"}))
            .depends_on(["0"]),
    ])
    .unwrap();
    assert_eq!(
        serde_json::to_value(&batch).unwrap(),
        json!({"requests": [
            {"id": "0", "method": "GET", "url": "/groups/g1"},
            {"id": "1", "method": "POST", "url": "/groups/g1/members/$ref",
             "headers": {"Content-Type": "application/json"},
             "body": {"@odata.id": "https://graph.microsoft.com/v1.0/directoryObjects/u1"},
             "dependsOn": ["0"]}
        ]})
    );
}

#[test]
fn batch_response_decodes_in_any_order() {
    let response: BatchResponse = serde_json::from_value(json!({"responses": [
        {"id": "2", "status": 424, "body": {"error": {"code": "FailedDependency", "message": "dependency failed"}}},
        {"id": "1", "status": 429, "headers": {"Retry-After": 10, "Content-Type": "application/json"},
         "body": {"error": {"code": "TooManyRequests", "message": "Please retry again later."}}},
        {"id": "0", "status": 204, "headers": null}
    ]}))
    .unwrap();
    let by_id = response.by_id();
    assert_eq!(by_id.len(), 3);
    assert!(by_id["0"].is_success());
    assert!(by_id["0"].headers.is_empty());
    assert_eq!(by_id["1"].retry_after_secs(), Some(10));
    assert_eq!(by_id["1"].header("content-type"), Some("application/json"));
    assert_eq!(by_id["1"].error().unwrap().code(), "TooManyRequests");
    assert_eq!(by_id["2"].status, 424);
    assert!(by_id["0"].error().is_none());
}
