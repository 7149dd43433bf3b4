//! Bearer API keys: the token format, the middleware that authenticates every `/v1` request,
//! and the [`Caller`] extractor handlers use to check role and tenant reach.
//!
//! The HTML status pages (`crate::status`) also accept the key as the password of HTTP Basic
//! authentication, because a browser cannot send a bearer header when it navigates.

use std::future::{Ready, ready};

use actix_web::{
    FromRequest, HttpMessage, HttpRequest,
    body::{EitherBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    http::header,
    middleware::Next,
    web,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sspr_domain::{Access, ApiKeyId, Role};

use crate::{AppState, error::ApiError};

/// Every key starts with this, so leaked keys are easy to find with secret scanners.
pub const TOKEN_PREFIX: &str = "sfk_";
const TOKEN_BYTES: usize = 32;
const TOKEN_LEN: usize = TOKEN_PREFIX.len() + 43; // 32 bytes in unpadded base64url

/// A freshly minted API key. Its `Debug` output hides the value, so it cannot reach a log by
/// accident; [`ApiToken::reveal`] is the one place it is read.
pub struct ApiToken(String);

impl ApiToken {
    /// The key, to show its owner once.
    pub fn reveal(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiToken(***)")
    }
}

/// Mints a new random key: 256 bits from the operating system's generator.
pub(crate) fn generate_token() -> ApiToken {
    let mut bytes = [0u8; TOKEN_BYTES];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    ApiToken(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
}

/// The stored form of a key: hex SHA-256. Keys are 256-bit random, so a fast hash is enough;
/// a slow password hash would only add latency to every request.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether `token` has the shape of a key, checked before any database lookup.
fn well_formed(token: &str) -> bool {
    token.len() == TOKEN_LEN
        && token.starts_with(TOKEN_PREFIX)
        && token[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The key that authenticated the request.
    pub key_id: ApiKeyId,
    /// The key's name.
    pub key_name: String,
    /// What the key may do.
    pub access: Access,
}

impl Caller {
    /// Fails with 403 unless the caller's role includes `role`.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.access.role.includes(role) {
            Ok(())
        } else {
            Err(ApiError::ForbiddenRole { required: role })
        }
    }

    /// Fails with 404, as if the tenant did not exist, unless the caller reaches `tenant_id`:
    /// a restricted key must not learn which other tenants exist.
    pub fn require_tenant(&self, tenant_id: &str) -> Result<(), ApiError> {
        if self.access.tenants.reaches(tenant_id) {
            Ok(())
        } else {
            Err(ApiError::NotFound("tenant"))
        }
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // Set by `authenticate`; absent only if a handler outside `/v1` asks for it.
        ready(req.extensions().get::<Caller>().cloned().ok_or(ApiError::Unauthorized))
    }
}

fn bearer(headers: &header::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The key of a status-page request: the password of HTTP Basic credentials (any user name),
/// or a bearer key. `None` when neither is present and well formed.
pub(crate) fn page_token(headers: &header::HeaderMap) -> Option<String> {
    if let Some(token) = bearer(headers) {
        return well_formed(token).then(|| token.to_owned());
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    well_formed(password).then(|| password.to_owned())
}

/// Middleware for the `/v1` scope: resolves the bearer key or answers 401. Its refusals are
/// responses, not errors, so the outer middleware logs them and adds the request id.
pub(crate) async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    match resolve_caller(&req).await {
        Ok(caller) => {
            tracing::Span::current().record("key_id", tracing::field::display(&caller.key_id));
            if let Some(state) = req.app_data::<web::Data<AppState>>()
                && let Err(limited) = state.rate_limits.check_key(caller.key_id.as_str())
            {
                return Ok(req.error_response(limited).map_into_right_body());
            }
            req.extensions_mut().insert(caller);
            Ok(next.call(req).await?.map_into_left_body())
        }
        Err(err) => {
            let err = match req.app_data::<web::Data<AppState>>() {
                Some(state) => {
                    crate::ratelimit::refuse(state, req.peer_addr().map(|a| a.ip()), err)
                }
                None => err,
            };
            Ok(req.error_response(err).map_into_right_body())
        }
    }
}

async fn resolve_caller(req: &ServiceRequest) -> Result<Caller, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::Internal("application state missing".into()))?;
    let token = bearer(req.headers()).ok_or(ApiError::Unauthorized)?;
    caller_for_token(state, token).await
}

/// The caller a key stands for: 401 unless it is well formed, known and not revoked. Records
/// the key's use.
pub(crate) async fn caller_for_token(state: &AppState, token: &str) -> Result<Caller, ApiError> {
    if !well_formed(token) {
        return Err(ApiError::Unauthorized);
    }
    let key = state.store.find_active_api_key(&hash_token(token)).await?;
    let key = key.ok_or(ApiError::Unauthorized)?;
    let now = state.clock.now();
    if let Err(err) = state.store.touch_api_key(&key.id, now, chrono::TimeDelta::minutes(1)).await {
        // Losing a last-used timestamp must not fail the request.
        tracing::warn!(error = %crate::error::ErrorChain(&err), "cannot record key use");
    }
    Ok(Caller {
        key_id: key.id,
        key_name: key.name,
        access: Access { role: key.role, tenants: key.tenants },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_well_formed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a.reveal(), b.reveal());
        assert!(well_formed(a.reveal()), "{}", a.reveal().len());
        assert_eq!(format!("{a:?}"), "ApiToken(***)");
    }

    #[test]
    fn malformed_tokens_are_rejected_before_lookup() {
        let good = generate_token();
        assert!(!well_formed(&good.reveal()[1..]));
        assert!(!well_formed(&format!("{}x", good.reveal())));
        assert!(!well_formed(&good.reveal().replacen("sfk_", "sk__", 1)));
        let mut non_ascii = good.reveal()[..TOKEN_LEN - 2].to_owned();
        non_ascii.push('é');
        assert!(!well_formed(&non_ascii));
    }

    fn headers(authorization: &str) -> header::HeaderMap {
        let mut map = header::HeaderMap::new();
        if let Ok(value) = header::HeaderValue::from_str(authorization) {
            map.insert(header::AUTHORIZATION, value);
        }
        map
    }

    #[test]
    fn page_tokens_come_from_basic_passwords_or_bearer_keys() {
        let token = generate_token();
        let key = token.reveal();
        let basic = |credentials: &str| format!("Basic {}", STANDARD.encode(credentials));
        assert_eq!(page_token(&headers(&basic(&format!("anyone:{key}")))).as_deref(), Some(key));
        assert_eq!(page_token(&headers(&basic(&format!(":{key}")))).as_deref(), Some(key));
        assert_eq!(page_token(&headers(&format!("bearer {key}"))).as_deref(), Some(key));
        // The key as the user name, a malformed key, bad base64 or another scheme: nothing.
        assert_eq!(page_token(&headers(&basic(&format!("{key}:")))), None);
        assert_eq!(page_token(&headers(&basic("user:sfk_short"))), None);
        assert_eq!(page_token(&headers("Basic %%%")), None);
        assert_eq!(page_token(&headers(&format!("Digest {key}"))), None);
        assert_eq!(page_token(&header::HeaderMap::new()), None);
    }

    #[test]
    fn hash_is_hex_sha256_and_differs_from_the_token() {
        let token = generate_token();
        let hash = hash_token(token.reveal());
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&token.reveal()[4..]));
        assert_eq!(hash, hash_token(token.reveal()));
    }
}
