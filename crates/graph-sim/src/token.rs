//! The identity platform's token endpoint for the client-credentials grant, with a client
//! secret or a certificate's signed assertion, and AAD's error format.

use std::collections::BTreeSet;

use rand::RngCore;
use serde_json::{Value, json};

use crate::{GraphSim, World, response::SimResponse};

/// An access token the simulator issued.
#[derive(Debug, Clone)]
pub(crate) struct IssuedToken {
    pub(crate) tenant: usize,
    pub(crate) client_id: String,
    pub(crate) roles: BTreeSet<String>,
    pub(crate) expires_ms: i64,
    pub(crate) audience: Audience,
}

/// What a token was issued for; each is refused by the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audience {
    /// App-only, for Graph (client credentials, v2 endpoint).
    Graph,
    /// Delegated, for the portal's API (refresh token, v1 endpoint).
    Portal,
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// An AAD error response: `error`, `error_description` starting with `AADSTS<code>:`, codes,
/// trace and correlation ids, timestamp and `error_uri`.
pub(crate) fn aad_error(
    status: u16,
    error: &str,
    code: u32,
    message: &str,
    now: &str,
) -> SimResponse {
    let trace = uuid::Uuid::new_v4().to_string();
    let correlation = uuid::Uuid::new_v4().to_string();
    SimResponse::json(
        status,
        json!({
            "error": error,
            "error_description": format!(
                "AADSTS{code}: {message}\r\nTrace ID: {trace}\r\nCorrelation ID: {correlation}\r\nTimestamp: {now}"
            ),
            "error_codes": [code],
            "timestamp": now,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

pub(crate) fn form_value<'a>(form: &'a [(String, String)], key: &str) -> Option<&'a str> {
    form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

impl GraphSim {
    /// Handles `POST /{tenant}/oauth2/v2.0/token`.
    pub(crate) fn token(&self, tenant: &str, form: &[(String, String)]) -> SimResponse {
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
        match form_value(form, "grant_type") {
            Some("client_credentials") => {}
            other => {
                return aad_error(
                    400,
                    "unsupported_grant_type",
                    70003,
                    &format!(
                        "The app requested an unsupported grant type '{}'.",
                        other.unwrap_or("")
                    ),
                    &now,
                );
            }
        }
        let client_id = form_value(form, "client_id").unwrap_or("").to_ascii_lowercase();
        let scope = form_value(form, "scope").unwrap_or("");
        if !scope.ends_with("/.default") || !scope.starts_with("https://graph.") {
            return aad_error(
                400,
                "invalid_scope",
                70011,
                &format!(
                    "The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
                ),
                &now,
            );
        }
        let Some(app) = world.apps.get(&client_id).cloned() else {
            return not_in_directory(&client_id, &world.tenants[ti].id, &now);
        };
        let faults = world.faults[ti].clone();
        let grant = world.tenants[ti]
            .grants
            .iter()
            .find(|g| g.client_id.eq_ignore_ascii_case(&client_id))
            .cloned();
        let Some(grant) = grant.filter(|g| g.consented && !faults.consent_revoked) else {
            return not_in_directory(&client_id, &world.tenants[ti].id, &now);
        };
        if let Some(secret) = form_value(form, "client_secret") {
            if !app.secrets.iter().any(|s| constant_time_eq(s.as_bytes(), secret.as_bytes())) {
                return aad_error(
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
                    &now,
                );
            }
            if faults.secret_expired {
                return aad_error(
                    401,
                    "invalid_client",
                    7000222,
                    &format!("The provided client secret keys for app '{client_id}' are expired."),
                    &now,
                );
            }
        } else if let Some(assertion) = form_value(form, "client_assertion") {
            if form_value(form, "client_assertion_type") != Some(ASSERTION_TYPE) {
                return aad_error(
                    400,
                    "invalid_request",
                    50027,
                    "Invalid client_assertion_type.",
                    &now,
                );
            }
            if let Err(reason) = verify_assertion(
                &app,
                assertion,
                &world.tenants[ti].id,
                tenant,
                clock.now().timestamp(),
            ) {
                return aad_error(
                    401,
                    "invalid_client",
                    700027,
                    &format!("Client assertion failed signature validation. {reason}"),
                    &now,
                );
            }
        } else {
            return aad_error(
                401,
                "invalid_client",
                7000218,
                "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
                &now,
            );
        }
        let lifetime = self.inner.settings.token_lifetime_secs;
        let access_token = jwt_shaped_token(
            &world.tenants[ti].id,
            &client_id,
            &grant.roles,
            clock.now().timestamp(),
            lifetime,
        );
        world.tokens.insert(
            access_token.clone(),
            IssuedToken {
                tenant: ti,
                client_id,
                roles: grant.roles.clone(),
                expires_ms: clock.elapsed_ms() + lifetime * 1000,
                audience: Audience::Graph,
            },
        );
        SimResponse::json(
            200,
            json!({"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": access_token}),
        )
    }
}

/// An access token shaped like the identity platform's: a JWT whose payload carries the app-only
/// claims clients read (`tid`, `appid`, `roles`, `exp`). The simulator finds tokens by value, so
/// the signature is random bytes rather than a real signature.
fn jwt_shaped_token(
    tenant_id: &str,
    client_id: &str,
    roles: &BTreeSet<String>,
    now: i64,
    lifetime: i64,
) -> String {
    jwt_shaped(&json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{tenant_id}/"),
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
        "appid": client_id,
        "idtyp": "app",
        "tid": tenant_id,
        "roles": roles,
        "ver": "1.0",
    }))
}

/// A JWT-shaped token with this payload and a random signature.
pub(crate) fn jwt_shaped(payload: &Value) -> String {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "graph-sim"});
    let mut signature = [0u8; 32];
    rand::rng().fill_bytes(&mut signature);
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

fn not_in_directory(client_id: &str, tenant_id: &str, now: &str) -> SimResponse {
    aad_error(
        400,
        "unauthorized_client",
        700016,
        &format!(
            "Application with identifier '{client_id}' was not found in the directory '{tenant_id}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
        ),
        now,
    )
}

pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a client assertion: RS256 signed by one of the app's certificates (found by
/// `x5t#S256`, or `x5t`), `iss` = `sub` = client id, `aud` = this tenant's token endpoint,
/// within `nbf`..`exp`, with a `jti`.
fn verify_assertion(
    app: &crate::App,
    assertion: &str,
    tenant_id: &str,
    requested: &str,
    now: i64,
) -> Result<(), String> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    let header = decode_header(assertion).map_err(|e| format!("malformed assertion: {e}"))?;
    if header.alg != Algorithm::RS256 && header.alg != Algorithm::PS256 {
        return Err("the assertion must be signed with RS256 or PS256".into());
    }
    let thumbprint =
        header.x5t_s256.or(header.x5t).ok_or("the assertion header has no x5t#S256")?;
    let (_, pem) = app.certificates.iter().find(|(t, _)| *t == thumbprint).ok_or_else(|| {
        format!("no certificate with thumbprint {thumbprint} is registered for the app")
    })?;
    let key = DecodingKey::from_rsa_pem(pem.as_bytes())
        .map_err(|e| format!("bad registered key: {e}"))?;
    let mut validation = Validation::new(header.alg);
    // Times are checked against the simulated clock below, audience by hand.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims = BTreeSet::new().into_iter().collect();
    let data =
        decode::<Value>(assertion, &key, &validation).map_err(|e| format!("signature: {e}"))?;
    let claims = data.claims;
    let get = |k: &str| claims.get(k).and_then(Value::as_str).unwrap_or("");
    if !get("iss").eq_ignore_ascii_case(&app.client_id)
        || !get("sub").eq_ignore_ascii_case(&app.client_id)
    {
        return Err("iss and sub must be the client id".into());
    }
    let aud = get("aud").to_ascii_lowercase();
    let ok_aud = [tenant_id, requested]
        .iter()
        .any(|t| aud.ends_with(&format!("/{}/oauth2/v2.0/token", t.to_ascii_lowercase())));
    if !ok_aud {
        return Err(format!("aud {aud} is not this tenant's token endpoint"));
    }
    let exp = claims.get("exp").and_then(Value::as_i64).ok_or("no exp claim")?;
    if exp <= now {
        return Err("the assertion has expired".into());
    }
    if claims.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf > now + 300) {
        return Err("the assertion is not valid yet".into());
    }
    if get("jti").is_empty() {
        return Err("no jti claim".into());
    }
    Ok(())
}

impl World {
    /// The Graph token behind a bearer value, if it is valid at `now_ms`.
    pub(crate) fn bearer(&self, value: Option<&str>, now_ms: i64) -> Option<&IssuedToken> {
        self.bearer_for(value, now_ms, Audience::Graph)
    }

    /// The token for `audience` behind a bearer value, if it is valid at `now_ms`.
    pub(crate) fn bearer_for(
        &self,
        value: Option<&str>,
        now_ms: i64,
        audience: Audience,
    ) -> Option<&IssuedToken> {
        self.issued(value).filter(|t| t.expires_ms > now_ms && t.audience == audience)
    }

    /// Any token the simulator issued behind a bearer value, expired or not, whatever its
    /// audience (to say why it is refused, and which tenant a refused request was for).
    pub(crate) fn issued(&self, value: Option<&str>) -> Option<&IssuedToken> {
        let value = value?;
        let token = value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer "))?;
        self.tokens.get(token.trim())
    }
}
