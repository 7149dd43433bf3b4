//! The Azure portal's own API for the legacy SSPR policy: the only way to set who SSPR is
//! enabled for, how many methods a reset needs, registration at sign-in and re-confirmation,
//! none of which Graph v1.0 or beta can set (graph-facts §3).
//!
//! **Unsupported.** `https://main.iam.ad.ext.azure.com/api/PasswordReset/PasswordResetPolicies`
//! is undocumented and unsupported by Microsoft: it is what the portal's own pages call, it can
//! change or disappear without notice, and using it is a risk accepted per deployment (the
//! opt-in `portal` scope mode). Its shape here is what third-party tools sent (CIPP, azurenum,
//! O365Essentials), including the property name `registrationReconfirmIntevalInDays`, typo and
//! all.
//!
//! It takes a **delegated** token for the portal's resource
//! (`74658136-14ec-4630-ad9b-26e160ff0fc6`), obtained from the identity platform's v1 token
//! endpoint with an administrator's refresh token (for example a GDAP partner user's); app-only
//! tokens do not work there. The refresh token is a secret: it is held as a [`SecretString`]
//! and never appears in `Debug` output or logs.
//!
//! There are no retries here: a failed call is reported once, and the caller (a durable job)
//! decides when to try again.

use std::time::{Duration, Instant};

use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tracing::Instrument;

use crate::{GraphError, client::token_refusal};

/// The application id of the Azure portal's API: the v1 `resource` of its tokens.
pub const PORTAL_RESOURCE: &str = "74658136-14ec-4630-ad9b-26e160ff0fc6";

/// Where the portal's API is served.
pub const DEFAULT_PORTAL_URL: &str = "https://main.iam.ad.ext.azure.com";

/// The path of the SSPR policy object.
const POLICY_PATH: &str = "/api/PasswordReset/PasswordResetPolicies";

const TOKEN_ENDPOINT: &str = "POST /oauth2/token (portal)";
const GET_ENDPOINT: &str = "GET /api/PasswordReset/PasswordResetPolicies";
const PUT_ENDPOINT: &str = "PUT /api/PasswordReset/PasswordResetPolicies";

/// Settings of the [`PortalClient`].
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// Base URL of the identity platform (`https://login.microsoftonline.com`).
    pub login_url: String,
    /// Base URL of the portal's API ([`DEFAULT_PORTAL_URL`]).
    pub portal_url: String,
    /// The `client_id` sent with the refresh token, when the token was issued to a specific
    /// application (optional for the v1 endpoint).
    pub client_id: Option<String>,
    /// Timeout of one HTTP request.
    pub request_timeout: Duration,
    /// Timeout to open a connection.
    pub connect_timeout: Duration,
}

impl Default for PortalConfig {
    fn default() -> Self {
        Self {
            login_url: "https://login.microsoftonline.com".into(),
            portal_url: DEFAULT_PORTAL_URL.into(),
            client_id: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl PortalConfig {
    /// A configuration for the given base URLs, other settings at their defaults.
    pub fn new(login_url: impl Into<String>, portal_url: impl Into<String>) -> Self {
        Self {
            login_url: login_url.into().trim_end_matches('/').to_owned(),
            portal_url: portal_url.into().trim_end_matches('/').to_owned(),
            ..Self::default()
        }
    }
}

/// A delegated access token for the portal's API in one tenant. Its values have no `Debug`
/// output.
#[derive(Clone)]
pub struct PortalToken {
    access_token: SecretString,
    refresh_token: Option<SecretString>,
    expires_at: Instant,
}

impl std::fmt::Debug for PortalToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

impl PortalToken {
    /// When the access token expires.
    pub fn expires_at(&self) -> Instant {
        self.expires_at
    }

    /// Whether the access token has expired (or will within a minute).
    pub fn is_expired(&self) -> bool {
        self.expires_at <= Instant::now() + Duration::from_secs(60)
    }

    /// The refresh token the identity platform answered with, if any: it may replace the one
    /// used, and the caller should keep it (sealed) in place of the old one.
    pub fn refresh_token(&self) -> Option<&SecretString> {
        self.refresh_token.as_ref()
    }
}

/// Who the legacy policy enables SSPR for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enablement {
    /// Nobody (`enablementType` 0; administrators have their own policy).
    None,
    /// Members of one group (`enablementType` 1; the portal allows a single group).
    Selected {
        /// The group's object id.
        group_id: String,
    },
    /// Everyone (`enablementType` 2).
    All,
}

/// The legacy SSPR settings sspr-fleet manages through the portal's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSspr {
    /// Who SSPR is enabled for.
    pub enablement: Enablement,
    /// Methods required to reset: 1 or 2 (`numberOfAuthenticationMethodsRequired`).
    pub methods_required: u8,
    /// Users must register when they sign in (`registrationRequiredOnSignIn`).
    pub register_at_sign_in: bool,
    /// Days before users re-confirm their methods, 0 (never) to 730
    /// (`registrationReconfirmIntevalInDays`).
    pub reconfirm_days: u16,
    /// Security questions as a method (`securityQuestionsOptionEnabled`).
    pub security_questions: bool,
    /// Email as a method (`emailOptionEnabled`).
    pub email: bool,
    /// Mobile phone, SMS or call, as a method (`mobilePhoneOptionEnabled`).
    pub sms: bool,
    /// The Authenticator app, notification and code (`mobileAppNotificationEnabled`,
    /// `mobileAppCodeEnabled`).
    pub authenticator: bool,
}

/// The `PUT` body that sets `desired` on the portal's policy object `current` (as read with
/// [`PortalClient::get_policy`]): every property `desired` does not cover is kept as read, as
/// the portal expects the whole object back. `passwordResetEnabledGroupIds` is the selected
/// group, or empty; when it changes, the stale `passwordResetEnabledGroupName` is blanked.
/// Ranges are not checked here; the portal answers 400.
pub fn portal_policy_body(current: &Value, desired: &PortalSspr) -> Value {
    let mut body: Map<String, Value> = current.as_object().cloned().unwrap_or_default();
    body.entry("objectId").or_insert_with(|| json!("default"));
    let (enablement_type, group_ids) = match &desired.enablement {
        Enablement::None => (0, Vec::new()),
        Enablement::Selected { group_id } => (1, vec![group_id.clone()]),
        Enablement::All => (2, Vec::new()),
    };
    let group_ids = json!(group_ids);
    if body.get("passwordResetEnabledGroupIds") != Some(&group_ids) {
        body.insert("passwordResetEnabledGroupName".into(), json!(""));
    }
    for (key, value) in [
        ("enablementType", json!(enablement_type)),
        ("passwordResetEnabledGroupIds", group_ids),
        ("numberOfAuthenticationMethodsRequired", json!(desired.methods_required)),
        ("registrationRequiredOnSignIn", json!(desired.register_at_sign_in)),
        ("registrationReconfirmIntevalInDays", json!(desired.reconfirm_days)),
        ("securityQuestionsOptionEnabled", json!(desired.security_questions)),
        ("emailOptionEnabled", json!(desired.email)),
        ("mobilePhoneOptionEnabled", json!(desired.sms)),
        ("mobileAppNotificationEnabled", json!(desired.authenticator)),
        ("mobileAppCodeEnabled", json!(desired.authenticator)),
    ] {
        body.insert(key.into(), value);
    }
    Value::Object(body)
}

/// A client of the portal's undocumented SSPR policy API (see the module documentation: it is
/// unsupported by Microsoft).
#[derive(Clone)]
pub struct PortalClient {
    http: reqwest::Client,
    cfg: PortalConfig,
}

impl std::fmt::Debug for PortalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalClient")
            .field("portal_url", &self.cfg.portal_url)
            .finish_non_exhaustive()
    }
}

/// Reads a `String` or number field of a token answer (the v1 endpoint writes numbers as
/// strings).
fn number(body: &Value, key: &str) -> Option<i64> {
    body.get(key).and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
}

/// The error code and message of a portal error body, wherever they are.
fn portal_error_parts(body: Option<&Value>) -> (String, String) {
    let Some(body) = body else { return (String::new(), String::new()) };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_owned();
    if let Some(error) = body.get("error").filter(|e| e.is_object()) {
        return (text(error.get("code")), text(error.get("message")));
    }
    let code = text(body.get("errorCode").or_else(|| body.get("code")));
    let message = text(body.get("message").or_else(|| body.get("Message")));
    (code, message)
}

impl PortalClient {
    /// A client with the given configuration.
    pub fn new(cfg: PortalConfig) -> Result<Self, GraphError> {
        Ok(Self { http: crate::client::http_client(cfg.connect_timeout)?, cfg })
    }

    /// The same client (sharing its connections) sending `client_id` with refresh tokens.
    pub fn with_client_id(&self, client_id: String) -> Self {
        let mut cfg = self.cfg.clone();
        cfg.client_id = Some(client_id);
        Self { http: self.http.clone(), cfg }
    }

    /// The configuration.
    pub fn config(&self) -> &PortalConfig {
        &self.cfg
    }

    /// Trades an administrator's refresh token for a delegated token for the portal's API in
    /// `tenant` (tenant id or domain): `POST {login}/{tenant}/oauth2/token` (v1) with
    /// `grant_type=refresh_token` and `resource=74658136-14ec-4630-ad9b-26e160ff0fc6`. A
    /// refusal is the identity platform's answer as [`GraphError::Token`] (e.g. `invalid_grant`
    /// 70000 for a refresh token that is not valid there).
    pub async fn token(
        &self,
        tenant: &str,
        refresh_token: &SecretString,
    ) -> Result<PortalToken, GraphError> {
        let url = format!("{}/{tenant}/oauth2/token", self.cfg.login_url);
        let mut form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("resource", PORTAL_RESOURCE.to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
        ];
        if let Some(client_id) = &self.cfg.client_id {
            form.push(("client_id", client_id.clone()));
        }
        let sent = tokio::time::timeout(self.cfg.request_timeout, async {
            let resp = self.http.post(&url).form(&form).send().await?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        })
        .await;
        let (status, bytes) = match sent {
            Err(_) => {
                return Err(GraphError::Timeout {
                    endpoint: TOKEN_ENDPOINT,
                    timeout: self.cfg.request_timeout,
                });
            }
            Ok(Err(e)) => {
                return Err(GraphError::Transport { endpoint: TOKEN_ENDPOINT, source: e });
            }
            Ok(Ok(parts)) => parts,
        };
        if (300..400).contains(&status) {
            return Err(GraphError::Redirect { endpoint: TOKEN_ENDPOINT, status });
        }
        let body: Value = serde_json::from_slice(&bytes).map_err(|e| GraphError::Decode {
            endpoint: TOKEN_ENDPOINT,
            detail: format!("not JSON: {e}"),
        })?;
        if !(200..300).contains(&status) {
            return Err(token_refusal(status, &body));
        }
        let access_token = body.get("access_token").and_then(Value::as_str).ok_or_else(|| {
            GraphError::Decode { endpoint: TOKEN_ENDPOINT, detail: "no access_token".into() }
        })?;
        let expires_in = number(&body, "expires_in").unwrap_or(3599).max(60);
        Ok(PortalToken {
            access_token: SecretString::from(access_token),
            refresh_token: body
                .get("refresh_token")
                .and_then(Value::as_str)
                .map(SecretString::from),
            expires_at: Instant::now() + Duration::from_secs(expires_in as u64),
        })
    }

    /// `GET …/PasswordResetPolicies?getPasswordResetEnabledGroup=true`: the tenant's whole
    /// policy object (the tenant is the token's).
    pub async fn get_policy(&self, token: &PortalToken) -> Result<Value, GraphError> {
        self.send(Method::GET, token, None, GET_ENDPOINT).await?.ok_or_else(|| GraphError::Decode {
            endpoint: GET_ENDPOINT,
            detail: "empty body".into(),
        })
    }

    /// `PUT …/PasswordResetPolicies` with the whole policy object (build it with
    /// [`portal_policy_body`]); answers the stored object (read again if the portal answers
    /// without a body).
    pub async fn put_policy(
        &self,
        token: &PortalToken,
        policy: &Value,
    ) -> Result<Value, GraphError> {
        match self.send(Method::PUT, token, Some(policy), PUT_ENDPOINT).await? {
            Some(stored) => Ok(stored),
            None => self.get_policy(token).await,
        }
    }

    /// Sends one request with the headers the portal's pages send: fresh GUIDs as
    /// `x-ms-client-request-id`, `x-ms-client-session-id` and `x-ms-correlation-id`,
    /// `X-Requested-With: XMLHttpRequest`, and a UTF-8 JSON body. `None` for an empty answer.
    async fn send(
        &self,
        method: Method,
        token: &PortalToken,
        body: Option<&Value>,
        endpoint: &'static str,
    ) -> Result<Option<Value>, GraphError> {
        let query = if method == Method::GET { "?getPasswordResetEnabledGroup=true" } else { "" };
        let url = format!("{}{POLICY_PATH}{query}", self.cfg.portal_url);
        let client_request_id = uuid::Uuid::new_v4().to_string();
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(token.access_token.expose_secret())
            .header("x-ms-client-request-id", &client_request_id)
            .header("x-ms-client-session-id", uuid::Uuid::new_v4().to_string())
            .header("x-ms-correlation-id", uuid::Uuid::new_v4().to_string())
            .header("X-Requested-With", "XMLHttpRequest")
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json;charset=UTF-8")
                .body(body.to_string());
        }
        let span = tracing::info_span!(
            "portal.call",
            endpoint,
            client_request_id = %client_request_id,
            status = tracing::field::Empty,
        );
        let sent = tokio::time::timeout(self.cfg.request_timeout, async {
            let resp = request.send().await?;
            let status = resp.status().as_u16();
            let bytes = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, bytes))
        })
        .instrument(span.clone())
        .await;
        let (status, bytes) = match sent {
            Err(_) => {
                return Err(GraphError::Timeout { endpoint, timeout: self.cfg.request_timeout });
            }
            Ok(Err(e)) => return Err(GraphError::Transport { endpoint, source: e }),
            Ok(Ok(parts)) => parts,
        };
        span.record("status", status);
        if (300..400).contains(&status) {
            return Err(GraphError::Redirect { endpoint, status });
        }
        let parsed: Option<Value> =
            if bytes.is_empty() { None } else { serde_json::from_slice(&bytes).ok() };
        if (200..300).contains(&status) {
            if parsed.is_none() && !bytes.is_empty() {
                return Err(GraphError::Decode {
                    endpoint,
                    detail: "the answer is not JSON".into(),
                });
            }
            return Ok(parsed);
        }
        let (code, message) = portal_error_parts(parsed.as_ref());
        span.in_scope(|| tracing::info!(status, code = %code, "the portal API answered an error"));
        Err(GraphError::Portal { status, code, message, client_request_id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> Value {
        json!({"objectId": "default", "enablementType": 1, "passwordResetEnabledGroupIds": ["g1"],
            "passwordResetEnabledGroupName": "Pilot", "numberOfAuthenticationMethodsRequired": 1,
            "registrationRequiredOnSignIn": false, "registrationReconfirmIntevalInDays": 180,
            "securityQuestionsOptionEnabled": true, "emailOptionEnabled": false,
            "mobilePhoneOptionEnabled": false, "officePhoneOptionEnabled": true,
            "mobileAppNotificationEnabled": false, "mobileAppCodeEnabled": false,
            "numberOfQuestionsToRegister": 5, "customHelpdeskEmailOrUrl": "https://help.example",
            "securityQuestions": [{"q": 1}]})
    }

    fn desired(enablement: Enablement) -> PortalSspr {
        PortalSspr {
            enablement,
            methods_required: 2,
            register_at_sign_in: true,
            reconfirm_days: 90,
            security_questions: false,
            email: true,
            sms: true,
            authenticator: true,
        }
    }

    #[test]
    fn the_body_sets_what_is_desired_and_keeps_everything_else() {
        let body = portal_policy_body(&current(), &desired(Enablement::All));
        assert_eq!(body["enablementType"], 2);
        assert_eq!(body["passwordResetEnabledGroupIds"], json!([]));
        assert_eq!(body["passwordResetEnabledGroupName"], "", "a stale name is blanked");
        assert_eq!(body["numberOfAuthenticationMethodsRequired"], 2);
        assert_eq!(body["registrationRequiredOnSignIn"], true);
        assert_eq!(body["registrationReconfirmIntevalInDays"], 90);
        assert_eq!(body["securityQuestionsOptionEnabled"], false);
        for k in [
            "emailOptionEnabled",
            "mobilePhoneOptionEnabled",
            "mobileAppNotificationEnabled",
            "mobileAppCodeEnabled",
        ] {
            assert_eq!(body[k], true, "{k}");
        }
        for k in [
            "objectId",
            "officePhoneOptionEnabled",
            "numberOfQuestionsToRegister",
            "customHelpdeskEmailOrUrl",
            "securityQuestions",
        ] {
            assert_eq!(body[k], current()[k], "{k} is kept");
        }
        let same_group = portal_policy_body(
            &current(),
            &desired(Enablement::Selected { group_id: "g1".into() }),
        );
        assert_eq!(same_group["enablementType"], 1);
        assert_eq!(same_group["passwordResetEnabledGroupName"], "Pilot");
        let none = portal_policy_body(&json!(null), &desired(Enablement::None));
        assert_eq!(
            (none["objectId"].as_str(), none["enablementType"].as_u64()),
            (Some("default"), Some(0))
        );
    }

    #[test]
    fn error_parts_are_found_in_either_shape() {
        let graph = json!({"error": {"code": "Request_BadRequest", "message": "no"}});
        assert_eq!(portal_error_parts(Some(&graph)), ("Request_BadRequest".into(), "no".into()));
        let flat = json!({"errorCode": "X", "message": "m"});
        assert_eq!(portal_error_parts(Some(&flat)), ("X".into(), "m".into()));
        assert_eq!(portal_error_parts(None), (String::new(), String::new()));
    }

    #[test]
    fn tokens_never_show_their_values() {
        let token = PortalToken {
            access_token: SecretString::from("eyJ.secret.value"),
            refresh_token: Some(SecretString::from("rt-secret")),
            expires_at: Instant::now(),
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(token.is_expired());
        assert_eq!(number(&json!({"expires_in": "3599"}), "expires_in"), Some(3599));
    }
}
