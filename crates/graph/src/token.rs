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
