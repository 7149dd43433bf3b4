//! Access tokens per (tenant, app): refreshed ahead of expiry, one refresh at a time however
//! many callers wait (single flight), dropped when Graph answers 401.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

/// A cached token. Its value has no `Debug` output.
#[derive(Clone)]
pub(crate) struct AccessToken {
    pub(crate) value: Arc<str>,
    pub(crate) expires_at: Instant,
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessToken").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

/// The cache. One async mutex per (tenant, app) makes refreshes single-flight: the first
/// caller refreshes while the others wait on the mutex and then find the fresh token.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    slots: Mutex<HashMap<(String, String), Slot>>,
}

impl TokenCache {
    fn slot(&self, tenant: &str, client_id: &str) -> Slot {
        self.slots
            .lock()
            .entry((tenant.to_ascii_lowercase(), client_id.to_ascii_lowercase()))
            .or_default()
            .clone()
    }

    /// A token valid for at least `ahead`, fetched with `fetch` if needed.
    pub(crate) async fn get<F, Fut, E>(
        &self,
        tenant: &str,
        client_id: &str,
        ahead: Duration,
        fetch: F,
    ) -> Result<AccessToken, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<AccessToken, E>>,
    {
        let slot = self.slot(tenant, client_id);
        let mut guard = slot.lock().await;
        if let Some(token) = guard.as_ref().filter(|t| t.expires_at > Instant::now() + ahead) {
            return Ok(token.clone());
        }
        let token = fetch().await?;
        *guard = Some(token.clone());
        Ok(token)
    }

    /// Forgets the token if it is still `rejected` (another caller may have refreshed it).
    pub(crate) async fn invalidate(&self, tenant: &str, client_id: &str, rejected: &AccessToken) {
        let slot = self.slot(tenant, client_id);
        let mut guard = slot.lock().await;
        if guard.as_ref().is_some_and(|t| Arc::ptr_eq(&t.value, &rejected.value)) {
            *guard = None;
        }
    }
}

/// What an access token says about itself, read from its claims when it is a JWT.
///
/// Microsoft documents access tokens as opaque to clients and reserves the right to change
/// their format; the identity platform's tokens for Graph are, today, unencrypted JWTs whose
/// `roles` claim lists the application permissions granted. When a token cannot be read, every
/// field is `None` and callers fall back to probing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenInfo {
    /// Application permissions granted in the tenant (`roles`), sorted.
    pub roles: Option<Vec<String>>,
    /// The tenant that issued the token (`tid`).
    pub tenant_id: Option<String>,
    /// The app the token was issued to (`appid` or `azp`).
    pub app_id: Option<String>,
}

impl TokenInfo {
    /// Reads the claims of a JWT-shaped token without checking its signature (the token came
    /// straight from the token endpoint over TLS; it is read for reporting, never trusted for
    /// access decisions).
    pub(crate) fn from_token(token: &str) -> Self {
        use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
        let mut parts = token.split('.');
        let claims = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(payload), Some(_), None) => URL_SAFE_NO_PAD
                .decode(payload.trim_end_matches('='))
                .ok()
                .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok()),
            _ => None,
        };
        let Some(claims) = claims else { return Self::default() };
        let text = |name: &str| claims.get(name).and_then(|v| v.as_str()).map(str::to_owned);
        let roles = claims.get("roles").and_then(|v| v.as_array()).map(|roles| {
            let mut roles: Vec<String> =
                roles.iter().filter_map(|r| r.as_str().map(str::to_owned)).collect();
            roles.sort();
            roles.dedup();
            roles
        });
        Self {
            // A readable app-only token without a `roles` claim has no permissions granted.
            roles: roles.or_else(|| text("tid").map(|_| Vec::new())),
            tenant_id: text("tid"),
            app_id: text("appid").or_else(|| text("azp")),
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

    use super::TokenInfo;

    fn jwt(payload: &serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        )
    }

    #[test]
    fn roles_tenant_and_app_are_read_from_a_jwt() {
        let info = TokenInfo::from_token(&jwt(&serde_json::json!({
            "tid": "t1", "appid": "a1", "roles": ["User.Read.All", "AuditLog.Read.All", "User.Read.All"]
        })));
        assert_eq!(
            info.roles.as_deref(),
            Some(&["AuditLog.Read.All".to_owned(), "User.Read.All".to_owned()][..])
        );
        assert_eq!(info.tenant_id.as_deref(), Some("t1"));
        assert_eq!(info.app_id.as_deref(), Some("a1"));
        let none = TokenInfo::from_token(&jwt(&serde_json::json!({"tid": "t1"})));
        assert_eq!(none.roles, Some(Vec::new()));
    }

    #[test]
    fn opaque_tokens_yield_nothing() {
        for token in ["opaque", "a.b", "a.!!!.c", "a.b.c.d", ""] {
            assert_eq!(TokenInfo::from_token(token), TokenInfo::default(), "{token}");
        }
    }
}
