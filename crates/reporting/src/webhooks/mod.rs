//! Signed webhooks for PSA tools and automation.
//!
//! Subscriptions and their deliveries live in the store; a rollout event's deliveries are
//! queued in the same transaction as the event (the outbox, see `sspr_store`). This module
//! creates subscriptions with a sealed secret, rotates secrets, queues test events and sends
//! deliveries: the `webhook.deliver` job handler POSTs the stored payload signed the Standard
//! Webhooks way (`webhook-id`, `webhook-timestamp`, `webhook-signature`), records every
//! attempt, and lets the queue retry failures with backoff until the configured attempts are
//! spent.
//!
//! Targets: unless `allow_private_targets` is set, a delivery goes only to public addresses,
//! checked when the URL is set and again when a delivery connects, after DNS (see [`target`]).
//!
//! Secrets: 32 random bytes, shown once as `whsec_<base64>`, stored only sealed by the vault
//! and bound to the subscription's row (kind `webhook_secret`). Nothing here logs a secret or a
//! subscription's URL (which may carry a token in its query).

mod deliver;
pub mod signing;
pub mod target;
pub mod url;

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde_json::json;
use sspr_domain::{Clock, DeliveryId, MessageId, TEST_EVENT_TYPE, WebhookId};
use sspr_queue::JobHandler;
use sspr_registry::{Aad, Vault, VaultError};
use sspr_store::{NewDelivery, Store, StoreError, WebhookDelivery, WebhookSubscription};

pub use deliver::DeliverHandler;
pub use signing::{SECRET_PREFIX, WebhookSecret, sign, signature_header};
pub use target::{NonPublicTarget, is_local_name, is_public_ip};
pub use url::{MAX_URL_LEN, UrlProblem, check_url};

/// The vault kind webhook secrets are sealed under.
pub const SECRET_KIND: &str = "webhook_secret";

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Attempts of one delivery before it is `failed` (1 to
    /// [`sspr_store::WEBHOOK_JOB_MAX_ATTEMPTS`]).
    pub max_attempts: i32,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// How long a rotated-out secret keeps signing beside the new one.
    pub rotation_grace: Duration,
    /// Whether subscriptions may point at loopback, private, link-local and other non-public
    /// addresses (an internal PSA). Off by default: such URLs are refused when set and such
    /// addresses when a delivery connects.
    pub allow_private_targets: bool,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            max_attempts: 12,
            timeout: Duration::from_secs(10),
            rotation_grace: Duration::from_secs(24 * 3600),
            allow_private_targets: false,
        }
    }
}

/// What can go wrong with webhooks.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A secret could not be sealed or opened.
    #[error("the webhook secret cannot be used")]
    Vault(#[source] VaultError),
    /// The HTTP client could not be built.
    #[error("the webhook HTTP client cannot be built")]
    Http(#[source] reqwest::Error),
}

/// A subscription to create.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    /// Where to POST (already checked with [`check_url`]).
    pub url: String,
    /// For people.
    pub description: String,
    /// Event type names (already checked).
    pub event_types: Vec<String>,
    /// The tenants it reaches; `None` for all.
    pub tenant_scope: Option<BTreeSet<String>>,
    /// Whether it receives events from now on.
    pub enabled: bool,
    /// Who creates it.
    pub created_by: String,
}

/// Creates and rotates subscriptions and sends their deliveries. Cheap to clone.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    vault: Arc<Vault>,
    clock: Arc<dyn Clock>,
    settings: WebhookSettings,
    http: reqwest::Client,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

fn aad(id: &WebhookId) -> Aad {
    // Webhook secrets belong to no tenant: the binding is the kind and the row.
    Aad { tenant_id: String::new(), kind: SECRET_KIND.into(), row_id: id.to_string() }
}

fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(now)
}

impl Webhooks {
    /// Webhooks over `store`, sealing secrets with `vault`.
    pub fn new(
        store: Store,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
    ) -> Result<Self, WebhookError> {
        Self::with_lookup(store, vault, clock, settings, Arc::new(target::SystemLookup))
    }

    /// As [`Webhooks::new`], resolving names with `lookup` (tests inject theirs).
    pub(crate) fn with_lookup(
        store: Store,
        vault: Arc<Vault>,
        clock: Arc<dyn Clock>,
        settings: WebhookSettings,
        lookup: Arc<dyn target::Lookup>,
    ) -> Result<Self, WebhookError> {
        // Every name is resolved by the target resolver, which refuses non-public answers;
        // reqwest connects only to the addresses it returns (IP literals are checked before
        // the request, in `deliver.rs`).
        let resolver = target::TargetResolver::new(lookup, settings.allow_private_targets);
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(resolver))
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent("sspr-fleet")
            // A redirect could lead the request (and its signature) anywhere; receivers must
            // answer at the URL they registered.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(WebhookError::Http)?;
        Ok(Self { inner: Arc::new(Inner { store, vault, clock, settings, http }) })
    }

    /// The settings.
    pub fn settings(&self) -> &WebhookSettings {
        &self.inner.settings
    }

    /// Checks a subscription's URL under this instance's target policy; the URL as it is to
    /// be stored.
    pub fn check_url(&self, text: &str) -> Result<String, UrlProblem> {
        check_url(text, self.inner.settings.allow_private_targets)
    }

    /// The job handler that sends deliveries, for the queue's worker.
    pub fn handlers(&self) -> Vec<Arc<dyn JobHandler>> {
        vec![Arc::new(DeliverHandler { webhooks: self.clone() })]
    }

    /// Creates a subscription with a new secret. The secret is returned this once.
    pub async fn create(
        &self,
        new: NewWebhook,
    ) -> Result<(WebhookSubscription, WebhookSecret), WebhookError> {
        let id = WebhookId::new();
        let secret = WebhookSecret::generate();
        let sealed =
            self.inner.vault.seal(secret.expose_bytes(), &aad(&id)).map_err(WebhookError::Vault)?;
        let now = self.inner.clock.now();
        let sub = WebhookSubscription {
            id,
            url: new.url,
            description: new.description,
            event_types: new.event_types,
            tenant_scope: new.tenant_scope,
            secret_sealed: sealed,
            secret_key_id: self.inner.vault.current_key_id().to_owned(),
            previous_secret_sealed: None,
            previous_secret_until: None,
            enabled: new.enabled,
            created_by: new.created_by,
            created_at: now,
            updated_at: now,
        };
        self.inner.store.insert_webhook(&sub).await?;
        Ok((sub, secret))
    }

    /// Gives subscription `sub` a new secret; the current one keeps signing beside it for the
    /// rotation grace. Returns the subscription as it is now and the new secret (shown this
    /// once); `None` when it is gone or was rotated at the same moment by someone else.
    pub async fn rotate(
        &self,
        sub: &WebhookSubscription,
    ) -> Result<Option<(WebhookSubscription, WebhookSecret)>, WebhookError> {
        let secret = WebhookSecret::generate();
        let sealed = self
            .inner
            .vault
            .seal(secret.expose_bytes(), &aad(&sub.id))
            .map_err(WebhookError::Vault)?;
        let now = self.inner.clock.now();
        let until = later(now, self.inner.settings.rotation_grace);
        let rotated = self
            .inner
            .store
            .rotate_webhook_secret(
                &sub.id,
                &sub.secret_sealed,
                &sealed,
                self.inner.vault.current_key_id(),
                until,
                now,
            )
            .await?;
        if !rotated {
            return Ok(None);
        }
        let Some(now) = self.inner.store.get_webhook(&sub.id).await? else {
            return Ok(None);
        };
        Ok(Some((now, secret)))
    }

    /// Queues a `webhook.test` event for `sub` (whatever its event types and even when it is
    /// disabled: a test says whether the receiver works).
    pub async fn send_test(
        &self,
        sub: &WebhookSubscription,
        actor: &str,
    ) -> Result<WebhookDelivery, WebhookError> {
        let now = self.inner.clock.now();
        let id = DeliveryId::new();
        let d = NewDelivery {
            id: id.clone(),
            subscription_id: sub.id.clone(),
            message_id: MessageId::new(),
            event_type: TEST_EVENT_TYPE.into(),
            tenant_id: None,
            payload: json!({
                "type": TEST_EVENT_TYPE,
                "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
                "data": {"webhook_id": sub.id.as_str(), "actor": actor},
            }),
            created_at: now,
        };
        self.inner.store.queue_webhook_delivery(&d).await?;
        self.inner.store.webhook_delivery(&id).await?.ok_or(WebhookError::Store(
            StoreError::Corrupt { what: "webhook delivery", detail: "vanished".into() },
        ))
    }

    /// The secrets that sign for `sub` now: the current one, then the previous one while its
    /// grace lasts.
    pub(crate) fn signing_secrets(
        &self,
        sub: &WebhookSubscription,
        now: DateTime<Utc>,
    ) -> Result<Vec<WebhookSecret>, VaultError> {
        let binding = aad(&sub.id);
        let mut out =
            vec![WebhookSecret::from_bytes(self.inner.vault.open(&sub.secret_sealed, &binding)?)];
        if let (Some(prev), Some(until)) = (&sub.previous_secret_sealed, sub.previous_secret_until)
            && until > now
        {
            out.push(WebhookSecret::from_bytes(self.inner.vault.open(prev, &binding)?));
        }
        Ok(out)
    }

    /// Re-seals every subscription's secrets that name an older master key with the current
    /// one; returns (subscriptions, re-sealed). Rows changed meanwhile are left for next time.
    pub async fn rewrap_all(store: &Store, vault: &Vault) -> Result<(usize, u64), WebhookError> {
        let mut total = 0;
        let mut rewrapped = 0;
        let mut after: Option<String> = None;
        loop {
            let page = store.list_webhooks(after.as_deref(), 500).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.id.to_string());
            total += page.len();
            for w in &page {
                let prev_stale =
                    w.previous_secret_sealed.as_deref().is_some_and(|p| vault.needs_rewrap(p));
                if !vault.needs_rewrap(&w.secret_sealed) && !prev_stale {
                    continue;
                }
                let binding = aad(&w.id);
                let current =
                    vault.rewrap(&w.secret_sealed, &binding).map_err(WebhookError::Vault)?;
                let previous = w
                    .previous_secret_sealed
                    .as_deref()
                    .map(|p| vault.rewrap(p, &binding))
                    .transpose()
                    .map_err(WebhookError::Vault)?;
                if store
                    .reseal_webhook_secrets(
                        &w.id,
                        (&w.secret_sealed, w.previous_secret_sealed.as_deref()),
                        (&current, previous.as_deref()),
                        vault.current_key_id(),
                    )
                    .await?
                {
                    rewrapped += 1;
                }
            }
        }
        Ok((total, rewrapped))
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretBox;
    use sspr_domain::ManualClock;
    use sspr_registry::MasterKeyMaterial;
    use sspr_store::StoreOptions;

    use super::*;

    fn key(id: &str, byte: u8) -> MasterKeyMaterial {
        MasterKeyMaterial { id: id.into(), bytes: SecretBox::new(Box::new([byte; 32])) }
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_secret_for_its_grace_and_rewrap_reseals_both() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let start = DateTime::from_timestamp(1_790_000_000, 0).unwrap();
        let clock = Arc::new(ManualClock::new(start));
        let settings = WebhookSettings::default();
        let old = Arc::new(Vault::new(&key("k1", 1), &[]));
        let hooks = Webhooks::new(store.clone(), old, clock.clone(), settings.clone()).unwrap();
        let new = NewWebhook {
            url: "https://psa.example/h".into(),
            description: String::new(),
            event_types: vec!["tenant.completed".into()],
            tenant_scope: None,
            enabled: true,
            created_by: "key_x".into(),
        };
        let (w, first) = hooks.create(new).await.unwrap();
        let shown = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            first.expose_bytes(),
        );
        assert!(!w.secret_sealed.contains(&shown));
        let (w, second) = hooks.rotate(&w).await.unwrap().unwrap();
        assert_eq!(w.previous_secret_until, Some(start + TimeDelta::hours(24)));
        // A stale copy of the subscription cannot rotate again.
        assert!(
            hooks
                .rotate(&WebhookSubscription { secret_sealed: "v1:k1:x".into(), ..w.clone() })
                .await
                .unwrap()
                .is_none()
        );
        let signing = hooks.signing_secrets(&w, start).unwrap();
        assert_eq!(signing.len(), 2);
        assert_eq!(signing[0].expose_bytes(), second.expose_bytes());
        assert_eq!(signing[1].expose_bytes(), first.expose_bytes());
        let after_grace = start + TimeDelta::hours(24);
        assert_eq!(hooks.signing_secrets(&w, after_grace).unwrap().len(), 1);

        // A new master key: both sealed secrets move to it and open without the old key.
        let rotated = Vault::new(&key("k2", 2), &[key("k1", 1)]);
        assert_eq!(Webhooks::rewrap_all(&store, &rotated).await.unwrap(), (1, 1));
        assert_eq!(Webhooks::rewrap_all(&store, &rotated).await.unwrap(), (1, 0));
        let w = store.get_webhook(&w.id).await.unwrap().unwrap();
        assert_eq!(w.secret_key_id, "k2");
        assert!(w.secret_sealed.starts_with("v1:k2:"), "rewrapped");
        assert!(w.previous_secret_sealed.as_deref().unwrap().starts_with("v1:k2:"));
        let only_new = Arc::new(Vault::new(&key("k2", 2), &[]));
        let hooks = Webhooks::new(store.clone(), only_new, clock, settings).unwrap();
        let signing = hooks.signing_secrets(&w, start).unwrap();
        assert_eq!(signing[0].expose_bytes(), second.expose_bytes());
        assert_eq!(signing[1].expose_bytes(), first.expose_bytes());
        store.close().await;
    }
}
