//! Checks against the real Graph subset document in this crate's `data/`.

use serde_json::{Value, json};
use sspr_openapi_check::{GRAPH_SUBSET_PATH, Spec};

const SMS_PATH: &str =
    "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/Sms";
const FEATURE_PATH: &str = "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='all',includedUserRoles='all')";

/// Asserts a failure, and that one of its lines is at JSON pointer `pointer` and mentions `needle`.
fn assert_fails_at(result: Result<(), Vec<String>>, pointer: &str, needle: &str) -> Vec<String> {
    let errors = result.expect_err("validation should fail");
    let at = format!("at {pointer:?}");
    assert!(
        errors.iter().any(|e| e.starts_with(&at) && e.contains(needle)),
        "no error {at} mentioning {needle:?} in:\n{}",
        errors.join("\n")
    );
    errors
}

/// Asserts success, printing the failures otherwise.
fn assert_ok(result: Result<(), Vec<String>>) {
    if let Err(errors) = result {
        panic!("expected valid, got:\n{}", errors.join("\n"));
    }
}

/// A security group as `POST /groups` returns it (shape from the Graph docs example).
fn group() -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups/$entity",
        "id": "b320ee12-b1cd-4cca-b648-a437be61c5cd",
        "deletedDateTime": null,
        "classification": null,
        "createdDateTime": "2026-11-24T10:00:00Z",
        "creationOptions": [],
        "description": "Self-service password reset pilot users",
        "displayName": "SSPR pilot",
        "expirationDateTime": null,
        "groupTypes": [],
        "isAssignableToRole": null,
        "mail": null,
        "mailEnabled": false,
        "mailNickname": "ssprpilot",
        "membershipRule": null,
        "membershipRuleProcessingState": null,
        "onPremisesDomainName": null,
        "onPremisesLastSyncDateTime": null,
        "onPremisesNetBiosName": null,
        "onPremisesSamAccountName": null,
        "onPremisesSecurityIdentifier": null,
        "onPremisesSyncEnabled": null,
        "preferredDataLocation": null,
        "preferredLanguage": null,
        "proxyAddresses": [],
        "renewedDateTime": "2026-11-24T10:00:00Z",
        "resourceBehaviorOptions": [],
        "resourceProvisioningOptions": [],
        "securityEnabled": true,
        "securityIdentifier": "S-1-12-1-2988500498-1288352205-950224566-3452329659",
        "theme": null,
        "visibility": null,
        "onPremisesProvisioningErrors": [],
        "serviceProvisioningErrors": []
    })
}

/// The SMS method configuration as `GET .../authenticationMethodConfigurations/Sms` returns it.
fn sms() -> Value {
    json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#authenticationMethodConfigurations/$entity",
        "@odata.type": "#microsoft.graph.smsAuthenticationMethodConfiguration",
        "id": "Sms",
        "state": "enabled",
        "excludeTargets": [],
        "includeTargets@odata.context": "https://graph.microsoft.com/v1.0/$metadata#policies/authenticationMethodsPolicy/authenticationMethodConfigurations('Sms')/microsoft.graph.smsAuthenticationMethodConfiguration/includeTargets",
        "includeTargets": [
            {"targetType": "group", "id": "all_users", "isRegistrationRequired": false, "isUsableForSignIn": true}
        ]
    })
}

fn user() -> Value {
    json!({
        "@odata.type": "#microsoft.graph.user",
        "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd",
        "businessPhones": ["+1 425 555 0109"],
        "displayName": "Adele Vance",
        "givenName": "Adele",
        "jobTitle": "Retail Manager",
        "mail": "AdeleV@contoso.com",
        "mobilePhone": null,
        "officeLocation": "18/2111",
        "preferredLanguage": "en-US",
        "surname": "Vance",
        "userPrincipalName": "AdeleV@contoso.com",
        "accountEnabled": true
    })
}

#[test]
fn real_document_loads() {
    let spec = Spec::graph_subset();
    assert_eq!(spec.path_templates().count(), 27);
    let names: Vec<&str> = spec.schema_names().collect();
    assert!(names.len() > 100, "only {} schemas", names.len());
    for expected in [
        "microsoft.graph.group",
        "microsoft.graph.authenticationMethodConfiguration",
        "microsoft.graph.smsAuthenticationMethodConfiguration",
        "odata.error",
    ] {
        assert!(names.contains(&expected), "{expected} missing");
    }
    // Loading by path gives the same document.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GRAPH_SUBSET_PATH);
    let loaded = Spec::load(path).unwrap();
    assert_eq!(loaded.document(), spec.document());
}

#[test]
fn load_reports_missing_file_and_bad_documents() {
    let err = Spec::load("/nonexistent/graph.yaml").unwrap_err();
    assert!(err.to_string().contains("/nonexistent/graph.yaml"), "{err}");
    let err = Spec::from_yaml_str("openapi: [unclosed").unwrap_err();
    assert!(err.to_string().contains("not valid YAML"), "{err}");
    let err =
        Spec::from_yaml_str("openapi: 3.1.0\npaths: {}\ncomponents: {schemas: {}}\n").unwrap_err();
    assert!(err.to_string().contains("3.0"), "{err}");
    let broken = "openapi: 3.0.4\npaths: {}\ncomponents:\n  schemas:\n    a:\n      $ref: '#/components/schemas/missing'\n";
    let err = Spec::from_yaml_str(broken).unwrap_err();
    assert!(err.to_string().contains("#/components/schemas/missing"), "{err}");
}

#[test]
fn created_group_validates() {
    let spec = Spec::graph_subset();
    assert_ok(spec.validate_response("POST", "/groups", 201, &group()));
    assert_ok(spec.validate_response(
        "get",
        "/groups/b320ee12-b1cd-4cca-b648-a437be61c5cd",
        200,
        &group(),
    ));
    assert_ok(spec.validate_schema("microsoft.graph.group", &group()));
}

#[test]
fn group_list_validates() {
    let spec = Spec::graph_subset();
    let mut second = group();
    second["id"] = json!("0d1b3c84-5b71-4a9b-b1c3-3e0c1f2e4d55");
    second["displayName"] = json!("SSPR wave 2");
    let list = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#groups",
        "@odata.nextLink": "https://graph.microsoft.com/v1.0/groups?$skiptoken=X%274453707402000100000017",
        "@odata.count": 2,
        "value": [group(), second]
    });
    assert_ok(spec.validate_response("GET", "/groups?$count=true", 200, &list));

    // The collection schema declares @odata.count as int64 and value as an array of groups.
    let mut bad = list.clone();
    bad["@odata.count"] = json!("2");
    assert_fails_at(
        spec.validate_response("GET", "/groups", 200, &bad),
        "/@odata.count",
        "expected integer",
    );
    let mut bad = list;
    bad["value"][1]["securityEnabled"] = json!("yes");
    assert_fails_at(
        spec.validate_response("GET", "/groups", 200, &bad),
        "/value/1/securityEnabled",
        "expected boolean",
    );
}

#[test]
fn wrong_type_fails_with_pointer() {
    let spec = Spec::graph_subset();
    let mut body = group();
    body["mailEnabled"] = json!("no");
    let errors = assert_fails_at(
        spec.validate_response("POST", "/groups", 201, &body),
        "/mailEnabled",
        "expected boolean, found string \"no\"",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("microsoft.graph.group/allOf/1/properties/mailEnabled"),
        "{}",
        errors[0]
    );

    let mut body = group();
    body["groupTypes"] = json!(["Unified", 7]);
    assert_fails_at(
        spec.validate_response("POST", "/groups", 201, &body),
        "/groupTypes/1",
        "expected string",
    );

    // Not nullable: null is a wrong type too.
    let mut body = group();
    body["groupTypes"] = Value::Null;
    assert_fails_at(
        spec.validate_response("POST", "/groups", 201, &body),
        "/groupTypes",
        "not nullable",
    );

    // int32 range.
    let mut body = group();
    body["unseenCount"] = json!(2_147_483_648_i64);
    assert_fails_at(spec.validate_response("POST", "/groups", 201, &body), "/unseenCount", "int32");
    body["unseenCount"] = json!(1.5);
    assert_fails_at(
        spec.validate_response("POST", "/groups", 201, &body),
        "/unseenCount",
        "expected integer",
    );
}

#[test]
fn bad_enum_fails() {
    let spec = Spec::graph_subset();
    assert_ok(spec.validate_response("GET", SMS_PATH, 200, &sms()));
    let mut body = sms();
    body["state"] = json!("on");
    assert_fails_at(
        spec.validate_response("GET", SMS_PATH, 200, &body),
        "/state",
        "\"on\" is not one of [\"enabled\", \"disabled\"]",
    );
    // Nullable through the anyOf idiom...
    body["state"] = Value::Null;
    assert_ok(spec.validate_response("GET", SMS_PATH, 200, &body));
    // ...but an object does not stand in for the enum.
    body["state"] = json!({});
    assert_fails_at(
        spec.validate_response("GET", SMS_PATH, 200, &body),
        "/state",
        "expected string",
    );
    let mut body = sms();
    body["includeTargets"][0]["targetType"] = json!("everyone");
    assert_fails_at(
        spec.validate_response("GET", SMS_PATH, 200, &body),
        "/includeTargets/0/targetType",
        "is not one of",
    );
}

#[test]
fn bad_date_time_fails() {
    let spec = Spec::graph_subset();
    for bad in ["2026-11-24 10:00:00Z", "2026-11-24T10:00:00", "2026-02-30T10:00:00Z", "yesterday"]
    {
        let mut body = group();
        body["createdDateTime"] = json!(bad);
        assert_fails_at(
            spec.validate_response("POST", "/groups", 201, &body),
            "/createdDateTime",
            "date-time",
        );
    }
    let mut body = group();
    body["createdDateTime"] = json!("2026-11-24T10:00:00.1234567+01:00");
    assert_ok(spec.validate_response("POST", "/groups", 201, &body));
}

#[test]
fn bad_uuid_fails() {
    let spec = Spec::graph_subset();
    let sku = json!({
        "id": "48a80680-7326-48cd-9935-b556b81d3a4e_c7df2760-2c81-4ef7-b578-5b5392b571df",
        "skuId": "c7df2760-2c81-4ef7-b578-5b5392b571df",
        "skuPartNumber": "ENTERPRISEPREMIUM",
        "capabilityStatus": "Enabled",
        "consumedUnits": 14,
        "prepaidUnits": {"enabled": 25, "suspended": 0, "warning": 0},
        "servicePlans": [],
        "appliesTo": "User"
    });
    assert_ok(spec.validate_response("GET", "/subscribedSkus/x", 200, &sku));
    let mut bad = sku;
    bad["skuId"] = json!("ENTERPRISEPREMIUM");
    assert_fails_at(
        spec.validate_response("GET", "/subscribedSkus/x", 200, &bad),
        "/skuId",
        "not a uuid",
    );
}

#[test]
fn missing_required_property_fails() {
    let spec = Spec::graph_subset();
    let error = json!({
        "error": {
            "code": "Request_ResourceNotFound",
            "message": "Resource 'nope' does not exist or one of its queried reference-property objects are not present.",
            "innerError": {
                "date": "2026-11-24T10:00:00Z",
                "request-id": "4c4b5b1a-5f2e-4d7b-9a8c-1f2e3d4c5b6a",
                "client-request-id": "4c4b5b1a-5f2e-4d7b-9a8c-1f2e3d4c5b6a"
            }
        }
    });
    // `default` is the odata.error response.
    assert_ok(spec.validate_response("GET", "/groups/nope", 404, &error));
    let mut bad = error.clone();
    bad["error"].as_object_mut().unwrap().remove("code");
    assert_fails_at(
        spec.validate_response("GET", "/groups/nope", 404, &bad),
        "/error/code",
        "required property \"code\" is missing",
    );
    assert_fails_at(
        spec.validate_response("GET", "/groups/nope", 404, &json!({})),
        "/error",
        "required property \"error\" is missing",
    );

    let token = json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.c2ln"});
    assert_ok(spec.validate_response(
        "POST",
        "/contoso.onmicrosoft.com/oauth2/v2.0/token",
        200,
        &token,
    ));
    let mut bad = token;
    bad.as_object_mut().unwrap().remove("access_token");
    assert_fails_at(
        spec.validate_response("POST", "/contoso.onmicrosoft.com/oauth2/v2.0/token", 200, &bad),
        "/access_token",
        "missing",
    );
}

#[test]
fn derived_type_selected_by_odata_type() {
    let spec = Spec::graph_subset();
    let base = "microsoft.graph.authenticationMethodConfiguration";
    let derived = "microsoft.graph.smsAuthenticationMethodConfiguration";
    assert!(spec.is_derived_from(derived, base));
    assert!(!spec.is_derived_from(base, derived));

    // includeTargets exists only on the derived type (items: smsAuthenticationMethodTarget).
    let mut body = sms();
    body["includeTargets"] = json!("all_users");
    assert_fails_at(spec.validate_schema(base, &body), "/includeTargets", "expected array");
    let mut body = sms();
    body["includeTargets"][0]["isUsableForSignIn"] = json!("true");
    assert_fails_at(
        spec.validate_response("GET", SMS_PATH, 200, &body),
        "/includeTargets/0/isUsableForSignIn",
        "expected boolean",
    );

    // The same stray property is fine for a derived type that does not declare it...
    let mut fido = sms();
    fido["@odata.type"] = json!("#microsoft.graph.fido2AuthenticationMethodConfiguration");
    fido["id"] = json!("Fido2");
    fido["isUsableForSignIn"] = json!("not checked");
    fido["includeTargets"] = json!([]);
    assert_ok(spec.validate_schema(base, &fido));
    // ...and the derived type's own properties are checked.
    fido["isAttestationEnforced"] = json!("yes");
    assert_fails_at(
        spec.validate_schema(base, &fido),
        "/isAttestationEnforced",
        "expected boolean",
    );

    // Base properties are still checked after dispatch.
    let mut body = sms();
    body["id"] = json!(5);
    assert_fails_at(spec.validate_schema(base, &body), "/id", "expected string");
}

#[test]
fn odata_type_problems_are_reported() {
    let spec = Spec::graph_subset();
    let base = "microsoft.graph.authenticationMethodConfiguration";
    // Abstract base without @odata.type.
    let mut body = sms();
    body.as_object_mut().unwrap().remove("@odata.type");
    assert_fails_at(spec.validate_response("GET", SMS_PATH, 200, &body), "", "abstract");
    // A known type that is not derived from the base.
    let mut body = sms();
    body["@odata.type"] = json!("#microsoft.graph.group");
    assert_fails_at(spec.validate_schema(base, &body), "/@odata.type", "neither");
    // Missing '#'.
    let mut body = sms();
    body["@odata.type"] = json!("microsoft.graph.smsAuthenticationMethodConfiguration");
    assert_fails_at(spec.validate_schema(base, &body), "/@odata.type", "\"#\"");
    // A type outside the subset: checked against the base only.
    let mut body = sms();
    body["@odata.type"] = json!("#microsoft.graph.hardwareOathAuthenticationMethodConfiguration");
    assert_ok(spec.validate_schema(base, &body));
    body["state"] = json!("on");
    assert_fails_at(spec.validate_schema(base, &body), "/state", "is not one of");
}

#[test]
fn polymorphic_members_list() {
    let spec = Spec::graph_subset();
    let mut member_group = group();
    member_group["@odata.type"] = json!("#microsoft.graph.group");
    let list = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
        "value": [user(), member_group, {"@odata.type": "#microsoft.graph.servicePrincipal", "id": "x", "appId": "y"}]
    });
    assert_ok(spec.validate_response("GET", "/groups/g1/members", 200, &list));
    let mut bad = list.clone();
    bad["value"][0]["accountEnabled"] = json!("true");
    assert_fails_at(
        spec.validate_response("GET", "/groups/g1/members", 200, &bad),
        "/value/0/accountEnabled",
        "expected boolean",
    );
    let mut bad = list;
    bad["value"][1]["mailEnabled"] = json!(0);
    assert_fails_at(
        spec.validate_response("GET", "/groups/g1/members", 200, &bad),
        "/value/1/mailEnabled",
        "expected boolean",
    );
}

#[test]
fn annotations_and_unknown_properties_are_allowed() {
    let spec = Spec::graph_subset();
    let mut body = group();
    body["members@odata.bind"] = json!(["https://graph.microsoft.com/v1.0/directoryObjects/1"]);
    body["@odata.etag"] = json!("W/\"1\"");
    body["extension_8f4a_ssprWave"] = json!("2");
    body["someFutureProperty"] = json!(42);
    assert_ok(spec.validate_response("POST", "/groups", 201, &body));
}

#[test]
fn nullable_reference_idiom() {
    let spec = Spec::graph_subset();
    let mut body = user();
    body["passwordProfile"] = Value::Null;
    assert_ok(spec.validate_response("GET", "/users/u1", 200, &body));
    body["passwordProfile"] = json!({"forceChangePasswordNextSignIn": true, "password": null});
    assert_ok(spec.validate_response("GET", "/users/u1", 200, &body));
    // Read literally, `anyOf: [$ref passwordProfile, {type: object, nullable: true}]` would let this pass.
    body["passwordProfile"] = json!({"forceChangePasswordNextSignIn": "yes"});
    assert_fails_at(
        spec.validate_response("GET", "/users/u1", 200, &body),
        "/passwordProfile/forceChangePasswordNextSignIn",
        "expected boolean",
    );
}

#[test]
fn function_path_resolves() {
    let spec = Spec::graph_subset();
    assert_eq!(
        spec.match_path(FEATURE_PATH),
        Some(
            "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='{includedUserTypes}',includedUserRoles='{includedUserRoles}')"
        )
    );
    assert_eq!(
        spec.match_path("/reports/authenticationMethods/usersRegisteredByFeature()"),
        Some("/reports/authenticationMethods/usersRegisteredByFeature()")
    );
    assert_eq!(
        spec.match_path(
            "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='member')"
        ),
        Some("/reports/authenticationMethods/usersRegisteredByFeature()")
    );
    assert_eq!(
        spec.match_path("/groups/abc-123/members/$ref"),
        Some("/groups/{group-id}/members/$ref")
    );
    assert_eq!(
        spec.match_path(
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/Sms"
        ),
        Some(
            "/policies/authenticationMethodsPolicy/authenticationMethodConfigurations/{authenticationMethodConfiguration-id}"
        )
    );

    let summary = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#microsoft.graph.userRegistrationFeatureSummary",
        "totalUserCount": 23,
        "userRegistrationFeatureCounts": [
            {"feature": "ssprRegistered", "userCount": 5},
            {"feature": "ssprEnabled", "userCount": 13},
            {"feature": "ssprCapable", "userCount": 3},
            {"feature": "passwordlessCapable", "userCount": 1},
            {"feature": "mfaCapable", "userCount": 4}
        ],
        "userRoles": "all",
        "userTypes": "all"
    });
    assert_ok(spec.validate_response("GET", FEATURE_PATH, 200, &summary));
    assert_ok(spec.validate_response(
        "GET",
        "/reports/authenticationMethods/usersRegisteredByFeature()",
        200,
        &summary,
    ));
    let mut bad = summary.clone();
    bad["userRegistrationFeatureCounts"][2]["feature"] = json!("ssprCapableX");
    assert_fails_at(
        spec.validate_response("GET", FEATURE_PATH, 200, &bad),
        "/userRegistrationFeatureCounts/2/feature",
        "is not one of",
    );

    // Path parameters are checked against their declared schema.
    let errors = spec
        .validate_response(
            "GET",
            "/reports/authenticationMethods/usersRegisteredByFeature(includedUserTypes='everyone',includedUserRoles='all')",
            200,
            &summary,
        )
        .unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("path parameter \"includedUserTypes\"") && e.contains("everyone")),
        "{errors:?}"
    );
}

#[test]
fn undocumented_status_or_operation_is_reported() {
    let spec = Spec::graph_subset();
    let errors = spec.validate_response("GET", "/groups", 201, &group()).unwrap_err();
    assert!(
        errors.iter().any(|e| e.contains("status 201 is not documented for GET /groups")),
        "{errors:?}"
    );
    let errors =
        spec.validate_response("POST", "/tenant-x/oauth2/v2.0/token", 500, &json!({})).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("status 500 is not documented")), "{errors:?}");
    let errors = spec.validate_response("PUT", "/groups/g1", 200, &group()).unwrap_err();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("PUT is not documented") && e.contains("GET, DELETE, PATCH")),
        "{errors:?}"
    );
    let errors = spec.validate_response("GET", "/devices/d1", 200, &json!({})).unwrap_err();
    assert!(errors.iter().any(|e| e.contains("no path of the document matches")), "{errors:?}");
    let errors = spec.validate_schema("microsoft.graph.device", &json!({})).unwrap_err();
    assert!(errors[0].contains("no schema"), "{errors:?}");
}

#[test]
fn empty_bodies() {
    let spec = Spec::graph_subset();
    assert_ok(spec.validate_response("PATCH", "/groups/g1", 204, &Value::Null));
    assert_ok(spec.validate_response("POST", "/groups/g1/members/$ref", 204, &Value::Null));
    assert_ok(spec.validate_response("DELETE", "/groups/g1/members/u1/$ref", 204, &Value::Null));
    assert_ok(spec.validate_response("PATCH", SMS_PATH, 204, &Value::Null));
    let errors = spec.validate_response("PATCH", "/groups/g1", 204, &group()).unwrap_err();
    assert!(errors[0].contains("documents no application/json body"), "{errors:?}");
    let errors = spec.validate_response("GET", "/groups/g1", 200, &Value::Null).unwrap_err();
    assert!(errors[0].contains("body is empty"), "{errors:?}");
    // 204 on an operation that does not document it.
    let errors = spec.validate_response("GET", "/groups", 204, &Value::Null).unwrap_err();
    assert!(errors[0].contains("not documented"), "{errors:?}");
}

#[test]
fn every_component_accepts_or_rejects_empty_object_sensibly() {
    // Walks every schema (and so every $ref cycle) once; the only complaints an empty object may
    // draw are: not a string (enums), a missing required property, a missing @odata.type on an
    // abstract type.
    let spec = Spec::graph_subset();
    let names: Vec<String> = spec.schema_names().map(str::to_owned).collect();
    let mut passed = 0;
    for name in &names {
        match spec.validate_schema(name, &json!({})) {
            Ok(()) => passed += 1,
            Err(errors) => {
                for e in &errors {
                    assert!(
                        e.contains("expected string, found object")
                            || e.contains("is missing")
                            || e.contains("abstract"),
                        "{name}: unexpected {e}"
                    );
                }
            }
        }
    }
    assert!(passed > 80, "only {passed} of {} passed", names.len());
}
