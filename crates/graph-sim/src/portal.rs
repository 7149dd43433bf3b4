//! The Azure portal's own API for the legacy SSPR policy, which Graph lacks (graph-facts §3):
//! `GET`/`PUT https://main.iam.ad.ext.azure.com/api/PasswordReset/PasswordResetPolicies`, and
//! the identity platform's v1 token endpoint with the refresh-token grant that issues the
//! delegated tokens it takes (`resource=74658136-14ec-4630-ad9b-26e160ff0fc6`).
//!
//! Microsoft neither documents nor supports this API; the shape here is what third-party tools
//! sent (CIPP, azurenum, O365Essentials). It accepts only delegated tokens issued for the
//! portal's resource, and those tokens are refused by Graph, as real ones would be (wrong
//! audience). The tenant is the token's.

use serde_json::{Map, Value, json};

use crate::{
    GraphSim,
    model::{Enablement, LegacySspr, Tenant, flag},
    response::SimResponse,
    token::{Audience, IssuedToken, aad_error, constant_time_eq, form_value, jwt_shaped},
};

/// The application id of the Azure portal's API (the v1 `resource` of its tokens).
pub const PORTAL_RESOURCE_ID: &str = "74658136-14ec-4630-ad9b-26e160ff0fc6";

/// The path of the policy object.
pub(crate) const POLICY_PATH: &str = "/api/PasswordReset/PasswordResetPolicies";

/// The scope of the delegated tokens.
const SCOPE: &str = "user_impersonation";

/// Longest re-confirmation interval the portal offers, in days (0 = never).
const MAX_RECONFIRM_DAYS: u64 = 730;

/// Properties of the policy object the model keeps in [`LegacySspr`] (or derives); every
/// other property is stored as written and given back.
const MODELED: &[&str] = &[
    "objectId",
    "enablementType",
    "passwordResetEnabledGroupIds",
    "passwordResetEnabledGroupName",
    "numberOfAuthenticationMethodsRequired",
    "registrationRequiredOnSignIn",
    "registrationReconfirmIntevalInDays",
    "securityQuestionsOptionEnabled",
    "emailOptionEnabled",
    "mobilePhoneOptionEnabled",
    "officePhoneOptionEnabled",
    "mobileAppNotificationEnabled",
    "mobileAppCodeEnabled",
    "notifyUsersOnPasswordReset",
    "notifyOnAdminPasswordReset",
];

/// One request to the portal's policy endpoint.
#[derive(Debug, Clone)]
pub(crate) struct PortalRequest {
    pub(crate) method: String,
    pub(crate) query: String,
    pub(crate) authorization: Option<String>,
    /// `x-ms-client-request-id`, echoed in errors.
    pub(crate) client_request_id: Option<String>,
    pub(crate) body: Option<Value>,
}

/// The policy object as the portal shows it: the portal's defaults for what the model does
/// not use, then what was last written there, then the model's values.
fn policy_json(t: &Tenant, with_group_name: bool) -> Value {
    let l = &t.legacy;
    let mut obj: Map<String, Value> = json!({
        "numberOfQuestionsToRegister": 5,
        "numberOfQuestionsToReset": 3,
        "skipRegistrationAllowed": true,
        "skipRegistrationMaxAllowedDays": 7,
        "customizeHelpdeskLink": false,
        "customHelpdeskEmailOrUrl": "",
        "securityQuestions": [],
        "registrationConditionalAccessPolicies": [],
        "emailOptionAllowed": true,
        "mobilePhoneOptionAllowed": true,
        "officePhoneOptionAllowed": true,
        "securityQuestionsOptionAllowed": true,
        "mobileAppNotificationOptionAllowed": true,
        "mobileAppCodeOptionAllowed": true,
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    obj.extend(t.portal_extra.clone());
    let enablement = match l.enablement {
        Enablement::None => 0,
        Enablement::Selected => 1,
        Enablement::All => 2,
    };
    let group_name = l
        .group_id
        .as_deref()
        .and_then(|id| t.group(id))
        .filter(|_| with_group_name)
        .map_or_else(String::new, |g| g.display_name.clone());
    let modeled = json!({
        "objectId": "default",
        "enablementType": enablement,
        "passwordResetEnabledGroupIds": l.group_id.iter().collect::<Vec<_>>(),
        "passwordResetEnabledGroupName": group_name,
        "numberOfAuthenticationMethodsRequired": l.methods_required,
        "registrationRequiredOnSignIn": l.register_on_sign_in,
        "registrationReconfirmIntevalInDays": l.reconfirm_days,
        "securityQuestionsOptionEnabled": l.security_questions,
        "emailOptionEnabled": l.email,
        "mobilePhoneOptionEnabled": l.mobile_phone,
        "officePhoneOptionEnabled": l.office_phone,
        "mobileAppNotificationEnabled": l.mobile_app_notification,
        "mobileAppCodeEnabled": l.mobile_app_code,
        "notifyUsersOnPasswordReset": l.notify_users,
        "notifyOnAdminPasswordReset": l.notify_admins,
    });
    if let Value::Object(m) = modeled {
        obj.extend(m);
    }
    Value::Object(obj)
}

fn invalid(message: impl Into<String>) -> SimResponse {
    SimResponse::bad_request(message)
}

/// An integer property in `range`, or `None` when absent.
fn integer(
    body: &Map<String, Value>,
    key: &str,
    range: std::ops::RangeInclusive<u64>,
) -> Result<Option<u64>, SimResponse> {
    match body.get(key) {
        None => Ok(None),
        Some(v) => match v.as_u64().filter(|n| range.contains(n)) {
            Some(n) => Ok(Some(n)),
            None => Err(invalid(format!(
                "Invalid value for '{key}': must be an integer from {} to {}.",
                range.start(),
                range.end()
            ))),
        },
    }
}

/// Checks a written policy object and applies it to the tenant's legacy policy. Properties
/// left out keep their value; unmodelled ones are stored as written.
fn apply_policy(t: &mut Tenant, body: &Map<String, Value>, now_ms: i64) -> Result<(), SimResponse> {
    if body.get("objectId").and_then(Value::as_str) != Some("default") {
        return Err(invalid("objectId must be 'default'."));
    }
    let mut next: LegacySspr = t.legacy.clone();
    if let Some(n) = integer(body, "enablementType", 0..=2)? {
        next.enablement = match n {
            0 => Enablement::None,
            1 => Enablement::Selected,
            _ => Enablement::All,
        };
    }
    let ids: Option<Vec<String>> = match body.get("passwordResetEnabledGroupIds") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
            Some(a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        }
        Some(_) => {
            return Err(invalid("passwordResetEnabledGroupIds must be a list of group ids."));
        }
    };
    if next.enablement == Enablement::Selected {
        let ids = ids.unwrap_or_else(|| next.group_id.iter().cloned().collect());
        let [id] = ids.as_slice() else {
            return Err(invalid(
                "enablementType 1 (selected) needs exactly one group in passwordResetEnabledGroupIds.",
            ));
        };
        let group = t
            .group(id)
            .filter(|g| g.visible_at_ms <= now_ms)
            .ok_or_else(|| invalid(format!("Group '{id}' does not exist.")))?;
        next.group_id = Some(group.id.clone());
    } else if let Some(ids) = ids {
        next.group_id = ids.into_iter().next();
    }
    if let Some(n) = integer(body, "numberOfAuthenticationMethodsRequired", 1..=2)? {
        next.methods_required = n as u8;
    }
    if let Some(n) = integer(body, "registrationReconfirmIntevalInDays", 0..=MAX_RECONFIRM_DAYS)? {
        next.reconfirm_days = n as u32;
    }
    for (key, field) in [
        ("registrationRequiredOnSignIn", &mut next.register_on_sign_in),
        ("securityQuestionsOptionEnabled", &mut next.security_questions),
        ("emailOptionEnabled", &mut next.email),
        ("mobilePhoneOptionEnabled", &mut next.mobile_phone),
        ("officePhoneOptionEnabled", &mut next.office_phone),
        ("mobileAppNotificationEnabled", &mut next.mobile_app_notification),
        ("mobileAppCodeEnabled", &mut next.mobile_app_code),
        ("notifyUsersOnPasswordReset", &mut next.notify_users),
        ("notifyOnAdminPasswordReset", &mut next.notify_admins),
    ] {
        match body.get(key) {
            None => {}
            Some(Value::Bool(b)) => *field = *b,
            Some(_) => {
                return Err(invalid(format!("Invalid value for '{key}': must be a boolean.")));
            }
        }
    }
    if next.methods_offered() < usize::from(next.methods_required) {
        return Err(invalid(format!(
            "At least {} authentication methods must be enabled when {} are required to reset.",
            next.methods_required, next.methods_required
        )));
    }
    for (k, v) in body {
        if !MODELED.contains(&k.as_str()) {
            t.portal_extra.insert(k.clone(), v.clone());
        }
    }
    t.legacy = next;
    Ok(())
}

fn wants_group_name(query: &str) -> bool {
    serde_urlencoded::from_str::<Vec<(String, String)>>(query).unwrap_or_default().iter().any(
        |(k, v)| {
            k.eq_ignore_ascii_case("getPasswordResetEnabledGroup") && v.eq_ignore_ascii_case("true")
        },
    )
}

impl GraphSim {
    /// Handles `POST /{tenant}/oauth2/token` (v1): the refresh-token grant for the portal's
    /// resource. The tenant accepts the one refresh token its scenario configures.
    pub(crate) fn portal_token(&self, tenant: &str, form: &[(String, String)]) -> SimResponse {
        let clock = &self.inner.clock;
        let now = clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut world = self.inner.world.lock();
        let Some(&ti) = world.index.get(&tenant.to_ascii_lowercase()) else {
            return aad_error(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
                &now,
            );
        };
        world.stats[ti].token_requests += 1;
        let grant_type = form_value(form, "grant_type").unwrap_or("");
        if grant_type != "refresh_token" {
            return aad_error(
                400,
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{grant_type}'."),
                &now,
            );
        }
        let resource = form_value(form, "resource").unwrap_or("");
        if !resource.eq_ignore_ascii_case(PORTAL_RESOURCE_ID) {
            return aad_error(
                400,
                "invalid_resource",
                500011,
                &format!(
                    "The resource principal named {resource} was not found in the tenant named {}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
                    world.tenants[ti].display_name
                ),
                &now,
            );
        }
        let Some(refresh_token) = form_value(form, "refresh_token").filter(|r| !r.is_empty())
        else {
            return aad_error(
                400,
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'refresh_token'.",
                &now,
            );
        };
        let t = &world.tenants[ti];
        if !constant_time_eq(refresh_token.as_bytes(), t.portal_refresh_token.as_bytes()) {
            return aad_error(
                400,
                "invalid_grant",
                70000,
                "The provided value for the input parameter 'refresh_token' is not valid: the refresh token is malformed, expired or revoked.",
                &now,
            );
        }
        let client_id = form_value(form, "client_id").unwrap_or("").to_ascii_lowercase();
        let lifetime = self.inner.settings.token_lifetime_secs;
        let issued_at = clock.now().timestamp();
        let admin =
            (0..t.users.len() as u32).find(|&u| t.users[u as usize].flags & flag::ADMIN != 0);
        let mut payload = json!({
            "aud": PORTAL_RESOURCE_ID,
            "iss": format!("https://sts.windows.net/{}/", t.id),
            "iat": issued_at,
            "nbf": issued_at,
            "exp": issued_at + lifetime,
            "idtyp": "user",
            "amr": ["pwd", "mfa"],
            "scp": SCOPE,
            "tid": t.id,
            "ver": "1.0",
        });
        if !client_id.is_empty() {
            payload["appid"] = json!(client_id);
        }
        if let Some(u) = admin {
            payload["oid"] = json!(t.user_id(u));
            payload["upn"] = json!(t.upn(u));
        }
        let access_token = jwt_shaped(&payload);
        let refresh_token = t.portal_refresh_token.clone();
        world.tokens.insert(
            access_token.clone(),
            IssuedToken {
                tenant: ti,
                client_id,
                roles: Default::default(),
                expires_ms: clock.elapsed_ms() + lifetime * 1000,
                audience: Audience::Portal,
            },
        );
        SimResponse::json(
            200,
            json!({
                "token_type": "Bearer",
                "scope": SCOPE,
                "expires_in": lifetime,
                "ext_expires_in": lifetime,
                "expires_on": issued_at + lifetime,
                "not_before": issued_at,
                "resource": PORTAL_RESOURCE_ID,
                "access_token": access_token,
                "refresh_token": refresh_token,
            }),
        )
    }

    /// Handles `GET` and `PUT /api/PasswordReset/PasswordResetPolicies`.
    pub(crate) fn portal(&self, req: PortalRequest) -> SimResponse {
        let clock = &self.inner.clock;
        let now_ms = clock.elapsed_ms();
        let now = clock.now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let at = self.stamp_ms(now_ms);
        let request_id = uuid::Uuid::new_v4().to_string();
        let mut world = self.inner.world.lock();
        let method = req.method.to_ascii_uppercase();
        let is_write = method != "GET";
        let token =
            world.bearer_for(req.authorization.as_deref(), now_ms, Audience::Portal).cloned();
        let mut response = match &token {
            None => {
                let message = match world.issued(req.authorization.as_deref()) {
                    None if req.authorization.is_none() => "Access token is empty.",
                    Some(t) if t.audience == Audience::Graph => {
                        "The access token was not issued for this resource: it needs a delegated token for 74658136-14ec-4630-ad9b-26e160ff0fc6."
                    }
                    _ => "Access token has expired or is not yet valid.",
                };
                SimResponse::error(401, "InvalidAuthenticationToken", message)
            }
            Some(token) => {
                self.count_as(
                    &mut world,
                    token,
                    &method,
                    format!("{method} {POLICY_PATH}"),
                    now_ms,
                );
                let t = &mut world.tenants[token.tenant];
                if is_write {
                    let applied = match &req.body {
                        Some(Value::Object(body)) => apply_policy(t, body, now_ms),
                        _ => Err(invalid("Empty Payload. JSON content expected.")),
                    };
                    match applied {
                        Ok(()) => {
                            t.refresh_scope(now_ms.div_euclid(1000));
                            SimResponse::json(200, policy_json(t, true))
                        }
                        Err(e) => e,
                    }
                } else {
                    SimResponse::json(200, policy_json(t, wants_group_name(&req.query)))
                }
            }
        };
        response.stamp(&request_id, req.client_request_id.as_deref(), &now);
        let tenant = token
            .map(|t| t.tenant)
            .or_else(|| world.issued(req.authorization.as_deref()).map(|t| t.tenant));
        if let (true, Some(ti)) = (is_write, tenant) {
            world.record_write(ti, &at, &method, POLICY_PATH, response.status, req.body.clone());
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_name_is_given_only_when_asked() {
        assert!(wants_group_name("getPasswordResetEnabledGroup=true"));
        assert!(wants_group_name("a=b&getpasswordresetenabledgroup=True"));
        assert!(!wants_group_name("getPasswordResetEnabledGroup=false"));
        assert!(!wants_group_name(""));
    }
}
