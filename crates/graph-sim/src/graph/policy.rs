//! The authentication methods policy, its method configurations, the registration campaign,
//! and the authorization policy.

use serde_json::{Map, Value, json};

use super::{Ctx, HResult, body_object, perms};
use crate::{World, model::Tenant, response::SimResponse};

/// Method configurations: (id as Graph returns it, `@odata.type` suffix, default state).
const METHODS: &[(&str, &str, &str)] = &[
    (
        "MicrosoftAuthenticator",
        "microsoftAuthenticatorAuthenticationMethodConfiguration",
        "enabled",
    ),
    ("Sms", "smsAuthenticationMethodConfiguration", "disabled"),
    ("Email", "emailAuthenticationMethodConfiguration", "disabled"),
    ("Fido2", "fido2AuthenticationMethodConfiguration", "disabled"),
    ("Voice", "voiceAuthenticationMethodConfiguration", "disabled"),
    ("SoftwareOath", "softwareOathAuthenticationMethodConfiguration", "disabled"),
    ("TemporaryAccessPass", "temporaryAccessPassAuthenticationMethodConfiguration", "disabled"),
    ("X509Certificate", "x509CertificateAuthenticationMethodConfiguration", "disabled"),
];

/// The configuration of method `id` as a fresh tenant has it (`state` may be overridden).
pub(crate) fn default_config(id: &str, state: Option<&str>) -> Option<Map<String, Value>> {
    let (id, ty, default_state) = METHODS.iter().find(|(m, _, _)| m.eq_ignore_ascii_case(id))?;
    let mut target =
        json!({"targetType": "group", "id": "all_users", "isRegistrationRequired": false});
    let mut config = json!({
        "@odata.type": format!("#microsoft.graph.{ty}"),
        "id": id,
        "state": state.unwrap_or(default_state),
        "excludeTargets": [],
    });
    match *id {
        "MicrosoftAuthenticator" => {
            target["authenticationMode"] = json!("any");
            config["isSoftwareOathEnabled"] = json!(false);
            config["featureSettings"] = json!({
                "displayAppInformationRequiredState": {"state": "default", "includeTarget": {"targetType": "group", "id": "all_users"}, "excludeTarget": {"targetType": "group", "id": "00000000-0000-0000-0000-000000000000"}},
                "displayLocationInformationRequiredState": {"state": "default", "includeTarget": {"targetType": "group", "id": "all_users"}, "excludeTarget": {"targetType": "group", "id": "00000000-0000-0000-0000-000000000000"}},
            });
        }
        "Sms" => target["isUsableForSignIn"] = json!(true),
        "Email" => config["allowExternalIdToUseEmailOtp"] = json!("default"),
        "Voice" => config["isOfficePhoneAllowed"] = json!(false),
        _ => {}
    }
    config["includeTargets"] = json!([target]);
    match config {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// Every default configuration, with state overrides by method id (lowercase).
pub(crate) fn default_configs(
    states: &std::collections::BTreeMap<String, String>,
) -> Vec<Map<String, Value>> {
    METHODS
        .iter()
        .filter_map(|(id, _, _)| {
            // Scenario keys match method ids in any case (`microsoftAuthenticator`, `sms`).
            let state = states.iter().find(|(k, _)| k.eq_ignore_ascii_case(id)).map(|(_, v)| v);
            default_config(id, state.map(String::as_str))
        })
        .collect()
}

/// The policy singleton of a fresh tenant.
pub(crate) fn default_policy(migration_state: &str, modified: &str) -> Map<String, Value> {
    let policy = json!({
        "id": "authenticationMethodsPolicy",
        "displayName": "Authentication Methods Policy",
        "description": "The tenant-wide policy that controls which authentication methods are allowed in the tenant, authentication method registration requirements, and self-service password reset settings",
        "lastModifiedDateTime": modified,
        "policyVersion": "1.5",
        "policyMigrationState": migration_state,
        "reconfirmationInDays": 0,
        "registrationEnforcement": {"authenticationMethodsRegistrationCampaign": {
            "snoozeDurationInDays": 1, "state": "default", "excludeTargets": [],
            "includeTargets": [{"id": "all_users", "targetType": "group", "targetedAuthenticationMethod": "microsoftAuthenticator"}]
        }},
    });
    match policy {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

/// The policy with its configurations inlined.
pub(crate) fn policy_json(t: &Tenant) -> Value {
    let mut p = Value::Object(t.methods_policy.clone());
    p["authenticationMethodConfigurations"] =
        Value::Array(t.method_configs.iter().cloned().map(Value::Object).collect());
    p
}

pub(super) fn get_policy(world: &mut World, ctx: &Ctx<'_>) -> HResult {
    ctx.require(perms::POLICY_READ)?;
    let mut p = policy_json(&world.tenants[ctx.tenant]);
    p["@odata.context"] = json!(ctx.context("policies/authenticationMethodsPolicy/$entity"));
    Ok(SimResponse::json(200, p))
}

/// Checks a target list: `{targetType, id}` items whose groups exist (and are replicated),
/// or `all_users`, or existing users.
fn check_targets(
    t: &Tenant,
    now_ms: i64,
    targets: &Value,
    field: &str,
    extra: &[&str],
) -> Result<(), SimResponse> {
    let Some(items) = targets.as_array() else {
        return Err(SimResponse::bad_request(format!(
            "Invalid value for '{field}': an array is expected."
        )));
    };
    for item in items {
        let Some(obj) = item.as_object() else {
            return Err(SimResponse::bad_request(format!("Invalid item in '{field}'.")));
        };
        // An `excludeTarget` is only `{id, targetType}`; include targets carry settings.
        let base: &[&str] = if field == "excludeTargets" {
            &["id", "targetType", "@odata.type"]
        } else {
            &["id", "targetType", "isRegistrationRequired", "@odata.type"]
        };
        for key in obj.keys() {
            let known = base.contains(&key.as_str()) || extra.contains(&key.as_str());
            if !known {
                return Err(SimResponse::bad_request(format!(
                    "Invalid property '{key}' in '{field}'."
                )));
            }
        }
        let id = obj.get("id").and_then(Value::as_str).unwrap_or("");
        match obj.get("targetType").and_then(Value::as_str) {
            Some("group") => {
                let exists =
                    id == "all_users" || t.group(id).is_some_and(|g| g.visible_at_ms <= now_ms);
                if !exists {
                    return Err(SimResponse::bad_request(format!(
                        "Invalid target: group '{id}' was not found."
                    )));
                }
            }
            Some("user") => {
                if t.user_index(id).is_none() {
                    return Err(SimResponse::bad_request(format!(
                        "Invalid target: user '{id}' was not found."
                    )));
                }
            }
            other => {
                return Err(SimResponse::bad_request(format!(
                    "Invalid value '{}' for targetType; expected 'user' or 'group'.",
                    other.unwrap_or("")
                )));
            }
        }
        if obj
            .get("authenticationMode")
            .is_some_and(|m| !matches!(m.as_str(), Some("deviceBasedPush" | "push" | "any")))
        {
            return Err(SimResponse::bad_request("Invalid value for authenticationMode."));
        }
        for flag in ["isRegistrationRequired", "isUsableForSignIn"] {
            if obj.get(flag).is_some_and(|v| !v.is_boolean()) {
                return Err(SimResponse::bad_request(format!(
                    "Invalid value for {flag}: a boolean is expected."
                )));
            }
        }
        if obj
            .get("targetedAuthenticationMethod")
            .is_some_and(|m| m.as_str() != Some("microsoftAuthenticator"))
        {
            return Err(SimResponse::bad_request(
                "targetedAuthenticationMethod must be microsoftAuthenticator.",
            ));
        }
    }
    Ok(())
}

pub(super) fn patch_policy(world: &mut World, ctx: &Ctx<'_>, body: Option<Value>) -> HResult {
    ctx.require(perms::POLICY_WRITE)?;
    let body = body_object(body)?;
    let t = &mut world.tenants[ctx.tenant];
    for key in body.keys() {
        let allowed = key == "registrationEnforcement"
            || key == "@odata.type"
            || (ctx.settings.policy_patch_any_property
                && ["reconfirmationInDays", "policyMigrationState"].contains(&key.as_str()));
        if !allowed {
            return Err(SimResponse::bad_request(format!(
                "Property '{key}' is read-only or not supported for update."
            )));
        }
    }
    if let Some(enforcement) = body.get("registrationEnforcement") {
        let campaign = enforcement
            .get("authenticationMethodsRegistrationCampaign")
            .and_then(Value::as_object)
            .ok_or_else(|| SimResponse::bad_request("registrationEnforcement.authenticationMethodsRegistrationCampaign is required."))?;
        let mut merged = t.methods_policy["registrationEnforcement"]["authenticationMethodsRegistrationCampaign"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (k, v) in campaign {
            match k.as_str() {
                "state" => {
                    if !matches!(v.as_str(), Some("enabled" | "disabled" | "default")) {
                        return Err(SimResponse::bad_request(
                            "Invalid value for state: expected enabled, disabled or default.",
                        ));
                    }
                }
                "snoozeDurationInDays" => {
                    if !v.as_i64().is_some_and(|d| (0..=14).contains(&d)) {
                        return Err(SimResponse::bad_request(
                            "snoozeDurationInDays must be between 0 and 14.",
                        ));
                    }
                }
                "includeTargets" => check_targets(
                    t,
                    ctx.now_ms,
                    v,
                    "includeTargets",
                    &["targetedAuthenticationMethod"],
                )?,
                "excludeTargets" => check_targets(t, ctx.now_ms, v, "excludeTargets", &[])?,
                "@odata.type" => continue,
                other => {
                    return Err(SimResponse::bad_request(format!(
                        "Invalid property '{other}' in the registration campaign."
                    )));
                }
            }
            merged.insert(k.clone(), v.clone());
        }
        t.methods_policy["registrationEnforcement"]["authenticationMethodsRegistrationCampaign"] =
            Value::Object(merged);
    }
    for key in ["reconfirmationInDays", "policyMigrationState"] {
        if let Some(v) = body.get(key) {
            t.methods_policy.insert(key.to_owned(), v.clone());
        }
    }
    t.methods_policy.insert("lastModifiedDateTime".into(), json!(ctx.now));
    t.refresh_scope(ctx.now_secs());
    if ctx.settings.policy_patch_status == 204 {
        return Ok(SimResponse::empty(204));
    }
    let mut p = policy_json(t);
    p["@odata.context"] = json!(ctx.context("policies/authenticationMethodsPolicy/$entity"));
    Ok(SimResponse::json(200, p))
}

pub(super) fn list_configs(world: &mut World, ctx: &Ctx<'_>) -> HResult {
    ctx.require(perms::POLICY_READ)?;
    let t = &world.tenants[ctx.tenant];
    Ok(SimResponse::json(
        200,
        json!({
            "@odata.context": ctx.context("policies/authenticationMethodsPolicy/authenticationMethodConfigurations"),
            "value": t.method_configs,
        }),
    ))
}

fn config_index(t: &Tenant, id: &str) -> Result<usize, SimResponse> {
    t.method_configs
        .iter()
        .position(|c| {
            c.get("id").and_then(Value::as_str).is_some_and(|v| v.eq_ignore_ascii_case(id))
        })
        .ok_or_else(|| SimResponse::not_found(id))
}

pub(super) fn get_config(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::POLICY_READ)?;
    let t = &world.tenants[ctx.tenant];
    let mut c = Value::Object(t.method_configs[config_index(t, id)?].clone());
    c["@odata.context"] = json!(ctx.context(
        "policies/authenticationMethodsPolicy/authenticationMethodConfigurations/$entity"
    ));
    Ok(SimResponse::json(200, c))
}

pub(super) fn patch_config(
    world: &mut World,
    ctx: &Ctx<'_>,
    id: &str,
    body: Option<Value>,
) -> HResult {
    ctx.require(perms::POLICY_WRITE)?;
    let body = body_object(body)?;
    let t = &mut world.tenants[ctx.tenant];
    let i = config_index(t, id)?;
    let current = t.method_configs[i].clone();
    let ty = current.get("@odata.type").and_then(Value::as_str).unwrap_or("");
    match body.get("@odata.type").and_then(Value::as_str) {
        None => {
            return Err(SimResponse::bad_request(
                "The request body must specify '@odata.type' of the authentication method configuration.",
            ));
        }
        Some(given) if !given.eq_ignore_ascii_case(ty) => {
            return Err(SimResponse::bad_request(format!(
                "'@odata.type' {given} does not match the configuration type {ty}."
            )));
        }
        Some(_) => {}
    }
    let method_id = current.get("id").and_then(Value::as_str).unwrap_or("");
    let target_extra: &[&str] = match method_id {
        "MicrosoftAuthenticator" => &["authenticationMode"],
        "Sms" => &["isUsableForSignIn"],
        _ => &[],
    };
    let mut updated = current.clone();
    for (k, v) in &body {
        match k.as_str() {
            "@odata.type" => continue,
            "id" => {
                if !v.as_str().is_some_and(|v| v.eq_ignore_ascii_case(method_id)) {
                    return Err(SimResponse::bad_request(
                        "The id in the body does not match the id in the URL.",
                    ));
                }
                continue;
            }
            "state" => {
                if !matches!(v.as_str(), Some("enabled" | "disabled")) {
                    return Err(SimResponse::bad_request(
                        "Invalid value for state: expected enabled or disabled.",
                    ));
                }
            }
            "includeTargets" => check_targets(t, ctx.now_ms, v, "includeTargets", target_extra)?,
            "excludeTargets" => check_targets(t, ctx.now_ms, v, "excludeTargets", &[])?,
            other if current.contains_key(other) => {}
            other => {
                return Err(SimResponse::bad_request(format!(
                    "Invalid property '{other}' for {ty}."
                )));
            }
        }
        updated.insert(k.clone(), v.clone());
    }
    t.method_configs[i] = updated;
    t.methods_policy.insert("lastModifiedDateTime".into(), json!(ctx.now));
    t.refresh_scope(ctx.now_secs());
    Ok(SimResponse::empty(204))
}

pub(super) fn delete_config(world: &mut World, ctx: &Ctx<'_>, id: &str) -> HResult {
    ctx.require(perms::POLICY_WRITE)?;
    let t = &mut world.tenants[ctx.tenant];
    let i = config_index(t, id)?;
    let method_id = t.method_configs[i].get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(default) = default_config(&method_id, None) {
        t.method_configs[i] = default;
    }
    t.methods_policy.insert("lastModifiedDateTime".into(), json!(ctx.now));
    t.refresh_scope(ctx.now_secs());
    Ok(SimResponse::empty(204))
}

/// The authorization policy of a fresh tenant.
pub(crate) fn default_authorization() -> Map<String, Value> {
    match json!({
        "id": "authorizationPolicy",
        "displayName": "Authorization Policy",
        "description": "Used to manage authorization related settings across the company.",
        "allowedToSignUpEmailBasedSubscriptions": true,
        "allowedToUseSSPR": true,
        "allowEmailVerifiedUsersToJoinOrganization": false,
        "blockMsolPowerShell": false,
        "guestUserRoleId": "10dae51f-b6af-4016-8d66-8c2a99b929b3",
        "defaultUserRolePermissions": {
            "allowedToCreateApps": true, "allowedToCreateSecurityGroups": true,
            "allowedToReadOtherUsers": true, "permissionGrantPoliciesAssigned": []
        },
    }) {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

pub(super) fn get_authorization(world: &mut World, ctx: &Ctx<'_>) -> HResult {
    ctx.require(perms::AUTHZ_READ)?;
    let mut p = Value::Object(world.tenants[ctx.tenant].authorization_policy.clone());
    p["@odata.context"] = json!(ctx.context("policies/authorizationPolicy/$entity"));
    Ok(SimResponse::json(200, p))
}

pub(super) fn patch_authorization(
    world: &mut World,
    ctx: &Ctx<'_>,
    body: Option<Value>,
) -> HResult {
    ctx.require(perms::AUTHZ_WRITE)?;
    let body = body_object(body)?;
    let t = &mut world.tenants[ctx.tenant];
    for (k, v) in &body {
        if k == "@odata.type" {
            continue;
        }
        let Some(current) = t.authorization_policy.get(k) else {
            return Err(SimResponse::bad_request(format!(
                "Invalid property '{k}' for authorizationPolicy."
            )));
        };
        if std::mem::discriminant(current) != std::mem::discriminant(v) {
            return Err(SimResponse::bad_request(format!("Invalid value for '{k}'.")));
        }
    }
    for (k, v) in body {
        if k != "@odata.type" {
            t.authorization_policy.insert(k, v);
        }
    }
    t.refresh_scope(ctx.now_secs());
    Ok(SimResponse::empty(204))
}
