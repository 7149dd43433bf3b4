//! The `webhook.deliver` job: one HTTP attempt of one delivery.

use std::time::Instant;

use sspr_domain::DeliveryId;
use sspr_queue::{JobDone, JobError, JobFuture, JobHandler};
use sspr_store::{AttemptRecord, DeliveryState, Job, WEBHOOK_DELIVER_KIND};

use super::{
    Webhooks, signature_header,
    target::{self, NonPublicTarget},
};

/// Sends deliveries. Each attempt POSTs the stored payload with fresh Standard Webhooks
/// headers (the message id never changes) and records the outcome; a failure is retried by
/// the queue with backoff until the configured attempts are spent, then the delivery is
/// `failed`.
pub struct DeliverHandler {
    pub(crate) webhooks: Webhooks,
}

impl JobHandler for DeliverHandler {
    fn kind(&self) -> &'static str {
        WEBHOOK_DELIVER_KIND
    }

    fn run<'a>(&'a self, job: &'a Job) -> JobFuture<'a> {
        Box::pin(self.deliver(job))
    }
}

fn store_failed(e: sspr_store::StoreError) -> JobError {
    JobError::retryable(format!("database: {e}"))
}

/// What a failed request says, without its URL (which may hold a token).
fn describe(e: &reqwest::Error) -> String {
    if target::is_refusal(e) {
        NonPublicTarget.to_string()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_redirect() {
        "redirect not followed".into()
    } else {
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), "<url>");
        }
        format!("request failed: {text}")
    }
}

impl DeliverHandler {
    /// A target the policy refuses: the delivery fails at once, without retries (the answer
    /// would be the same), and its log says only that the target is not public, nothing a
    /// port scan could use. A redelivery tries again, under the policy of that time.
    async fn refuse(
        &self,
        job: &Job,
        id: &DeliveryId,
        webhook: &sspr_domain::WebhookId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<JobDone, JobError> {
        let error = NonPublicTarget.to_string();
        let r = AttemptRecord {
            at: now,
            status: None,
            error: Some(error.clone()),
            duration_ms: 0,
            state: DeliveryState::Failed,
        };
        self.webhooks.inner.store.record_webhook_attempt(id, &r).await.map_err(store_failed)?;
        tracing::warn!(delivery = %id, webhook = %webhook, attempt = job.attempt, "webhook target refused: not a public address (webhooks.allow_private_targets is off)");
        Err(JobError::permanent(error))
    }

    async fn deliver(&self, job: &Job) -> Result<JobDone, JobError> {
        let inner = &self.webhooks.inner;
        let id: DeliveryId = job
            .payload
            .get("delivery_id")
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| JobError::permanent("the job names no delivery"))?;
        let Some(delivery) = inner.store.webhook_delivery(&id).await.map_err(store_failed)? else {
            // Its subscription was deleted.
            return Ok(JobDone::Finished);
        };
        if delivery.state != DeliveryState::Pending {
            return Ok(JobDone::Finished);
        }
        let Some(sub) =
            inner.store.get_webhook(&delivery.subscription_id).await.map_err(store_failed)?
        else {
            return Ok(JobDone::Finished);
        };
        let now = inner.clock.now();
        let last = job.attempt >= inner.settings.max_attempts;
        let fail = |status: Option<i32>, error: String, state: DeliveryState| AttemptRecord {
            at: now,
            status,
            error: Some(error),
            duration_ms: 0,
            state,
        };
        if !sub.enabled && delivery.event_type != sspr_domain::TEST_EVENT_TYPE {
            let r = fail(None, "the subscription is disabled".into(), DeliveryState::Failed);
            inner.store.record_webhook_attempt(&id, &r).await.map_err(store_failed)?;
            return Ok(JobDone::Finished);
        }
        let secrets = match self.webhooks.signing_secrets(&sub, now) {
            Ok(s) => s,
            Err(e) => {
                let r =
                    fail(None, format!("the secret cannot be opened: {e}"), DeliveryState::Failed);
                inner.store.record_webhook_attempt(&id, &r).await.map_err(store_failed)?;
                tracing::error!(delivery = %id, webhook = %sub.id, error = %e, "webhook secret cannot be opened");
                return Err(JobError::permanent("the webhook secret cannot be opened"));
            }
        };
        // The target policy, before anything is sent: an IP literal is checked here (no
        // resolver sees it), a name's addresses by the client's resolver when it connects. A
        // URL stored before the policy, or while private targets were allowed, is caught too.
        if !inner.settings.allow_private_targets {
            let refused = match reqwest::Url::parse(&sub.url) {
                Ok(url) => target::check_literal(&url).is_err(),
                Err(_) => true,
            };
            if refused {
                return self.refuse(job, &id, &sub.id, now).await;
            }
        }
        let body = serde_json::to_vec(&delivery.payload)
            .map_err(|e| JobError::permanent(format!("payload: {e}")))?;
        let timestamp = now.timestamp();
        let refs: Vec<&_> = secrets.iter().collect();
        let signature = signature_header(&refs, delivery.message_id.as_str(), timestamp, &body);
        let started = Instant::now();
        let sent = inner
            .http
            .post(&sub.url)
            .header("content-type", "application/json")
            .header("webhook-id", delivery.message_id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let duration_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = &sent
            && target::is_refusal(e)
        {
            return self.refuse(job, &id, &sub.id, now).await;
        }
        let (status, error) = match &sent {
            Ok(resp) if resp.status().is_success() => (Some(resp.status().as_u16()), None),
            Ok(resp) => {
                (Some(resp.status().as_u16()), Some(format!("HTTP {}", resp.status().as_u16())))
            }
            Err(e) => (None, Some(describe(e))),
        };
        // The answer's body is neither read nor kept: only its status counts.
        drop(sent);
        let state = match (&error, last) {
            (None, _) => DeliveryState::Delivered,
            (Some(_), true) => DeliveryState::Failed,
            (Some(_), false) => DeliveryState::Pending,
        };
        let record = AttemptRecord {
            at: now,
            status: status.map(i32::from),
            error: error.clone(),
            duration_ms,
            state,
        };
        inner.store.record_webhook_attempt(&id, &record).await.map_err(store_failed)?;
        match error {
            None => {
                tracing::info!(delivery = %id, webhook = %sub.id, event = %delivery.event_type, attempt = job.attempt, "webhook delivered");
                Ok(JobDone::Finished)
            }
            Some(error) if last => {
                tracing::warn!(delivery = %id, webhook = %sub.id, attempt = job.attempt, error = %error, "webhook delivery failed for good");
                Err(JobError::permanent(error))
            }
            Some(error) => {
                tracing::info!(delivery = %id, webhook = %sub.id, attempt = job.attempt, error = %error, "webhook attempt failed; will retry");
                Err(JobError::retryable(error))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{IpAddr, SocketAddr},
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use chrono::DateTime;
    use secrecy::SecretBox;
    use sspr_domain::{Clock, ManualClock};
    use sspr_registry::{MasterKeyMaterial, Vault};
    use sspr_store::{Store, StoreOptions, WEBHOOK_QUEUE, WebhookDelivery};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    use super::*;
    use crate::webhooks::{
        NewWebhook, WebhookSettings,
        target::{Lookup, LookupFuture},
    };

    /// A resolver that knows a few names, and counts its lookups.
    #[derive(Default)]
    struct FakeDns {
        names: HashMap<String, Vec<IpAddr>>,
        lookups: AtomicUsize,
    }

    impl FakeDns {
        fn with(names: &[(&str, &[&str])]) -> Arc<Self> {
            let names = names
                .iter()
                .map(|(n, ips)| ((*n).to_owned(), ips.iter().map(|i| i.parse().unwrap()).collect()))
                .collect();
            Arc::new(Self { names, lookups: AtomicUsize::new(0) })
        }
    }

    impl Lookup for FakeDns {
        fn lookup(&self, host: &str) -> LookupFuture {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            let found = self.names.get(host).cloned();
            Box::pin(async move {
                let ips = found.ok_or_else(|| std::io::Error::other("no such name"))?;
                Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)).collect())
            })
        }
    }

    /// A receiver on 127.0.0.1 that counts connections and answers every request with `reply`.
    struct Listener {
        port: u16,
        connections: Arc<AtomicUsize>,
    }

    async fn listen(reply: String) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // The head, then as many body bytes as it announces.
                    loop {
                        let Ok(n) = socket.read(&mut chunk).await else { return };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length: usize = text[..end]
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let _ = socket.write_all(reply.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Listener { port, connections }
    }

    fn ok_reply() -> String {
        "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into()
    }

    struct Setup {
        hooks: Webhooks,
        store: Store,
        clock: Arc<ManualClock>,
        _dir: tempfile::TempDir,
    }

    async fn setup(allow_private_targets: bool, dns: Arc<FakeDns>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("w.db").display());
        let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_790_000_000, 0).unwrap()));
        let key = MasterKeyMaterial { id: "k1".into(), bytes: SecretBox::new(Box::new([1; 32])) };
        let settings = WebhookSettings {
            allow_private_targets,
            timeout: Duration::from_secs(5),
            ..WebhookSettings::default()
        };
        let hooks = Webhooks::with_lookup(
            store.clone(),
            Arc::new(Vault::new(&key, &[])),
            clock.clone(),
            settings,
            dns,
        )
        .unwrap();
        Setup { hooks, store, clock, _dir: dir }
    }

    /// Stores a subscription to `url` as it is (the API's check is not involved), queues a
    /// test event and runs one attempt of its delivery.
    async fn deliver_once(s: &Setup, url: &str) -> (WebhookDelivery, Result<JobDone, JobError>) {
        let new = NewWebhook {
            url: url.into(),
            description: String::new(),
            event_types: vec!["tenant.completed".into()],
            tenant_scope: None,
            enabled: true,
            created_by: "key_x".into(),
        };
        let (sub, _) = s.hooks.create(new).await.unwrap();
        let d = s.hooks.send_test(&sub, "key_x").await.unwrap();
        let jobs = s
            .store
            .claim_jobs(WEBHOOK_QUEUE, "test", s.clock.now(), Duration::from_secs(60), 10)
            .await
            .unwrap();
        let job = jobs.iter().find(|j| j.payload["delivery_id"] == d.id.as_str()).unwrap();
        let handler = DeliverHandler { webhooks: s.hooks.clone() };
        let outcome = handler.deliver(job).await;
        (s.store.webhook_delivery(&d.id).await.unwrap().unwrap(), outcome)
    }

    fn assert_refused(d: &WebhookDelivery, outcome: &Result<JobDone, JobError>) {
        assert_eq!(d.state, DeliveryState::Failed, "{d:?}");
        assert_eq!(d.last_error.as_deref(), Some("target address is not public"), "{d:?}");
        assert_eq!(d.last_status, None);
        assert_eq!(d.attempts, 1);
        assert!(matches!(outcome, Err(e) if !e.retryable), "not retried: {outcome:?}");
    }

    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time_and_nothing_connects() {
        let receiver = listen(ok_reply()).await;
        let dns = FakeDns::with(&[
            ("psa.example.net", &["127.0.0.1"]),
            ("mixed.example.net", &["8.8.8.8", "127.0.0.1"]),
            ("metadata.example.net", &["::ffff:169.254.169.254"]),
            ("ula.example.net", &["fd00::1"]),
            ("localhost", &["::1", "127.0.0.1"]),
        ]);
        let s = setup(false, dns.clone()).await;
        let names =
            ["psa.example.net", "mixed.example.net", "metadata.example.net", "ula.example.net"];
        for name in names.into_iter().chain(["localhost"]) {
            let (d, outcome) =
                deliver_once(&s, &format!("http://{name}:{}/h", receiver.port)).await;
            assert_refused(&d, &outcome);
        }
        assert_eq!(dns.lookups.load(Ordering::SeqCst), 5, "each name was resolved (and refused)");
        assert_eq!(receiver.connections.load(Ordering::SeqCst), 0, "nothing reached the receiver");
        s.store.close().await;
    }

    #[tokio::test]
    async fn private_literals_stored_without_the_api_check_are_refused_before_sending() {
        let receiver = listen(ok_reply()).await;
        let dns = FakeDns::with(&[]);
        let s = setup(false, dns.clone()).await;
        let port = receiver.port;
        for url in [
            format!("http://127.0.0.1:{port}/h"),
            format!("http://2130706433:{port}/h"),
            format!("http://0x7f.1:{port}/h"),
            format!("http://[::ffff:127.0.0.1]:{port}/h"),
            format!("http://[::1]:{port}/h"),
        ] {
            let (d, outcome) = deliver_once(&s, &url).await;
            assert_refused(&d, &outcome);
        }
        assert_eq!(receiver.connections.load(Ordering::SeqCst), 0, "nothing reached the receiver");
        assert_eq!(dns.lookups.load(Ordering::SeqCst), 0);
        s.store.close().await;
    }

    #[tokio::test]
    async fn with_private_targets_allowed_the_checked_address_is_the_one_connected_to() {
        let receiver = listen(ok_reply()).await;
        // Only the injected resolver knows this name: a connection to the receiver proves the
        // client used its answer, and one lookup per attempt that it resolved only once.
        let dns = FakeDns::with(&[("psa.example.net", &["127.0.0.1"])]);
        let s = setup(true, dns.clone()).await;
        let (d, outcome) =
            deliver_once(&s, &format!("http://psa.example.net:{}/h", receiver.port)).await;
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
        assert_eq!(outcome, Ok(JobDone::Finished));
        assert_eq!(dns.lookups.load(Ordering::SeqCst), 1);
        assert_eq!(receiver.connections.load(Ordering::SeqCst), 1);
        let (d, _) = deliver_once(&s, &format!("http://127.0.0.1:{}/h", receiver.port)).await;
        assert_eq!(d.state, DeliveryState::Delivered, "{d:?}");
        s.store.close().await;
    }

    #[tokio::test]
    async fn a_redirect_is_not_followed() {
        let target = listen(ok_reply()).await;
        let redirect = listen(format!(
            "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{}/next\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n",
            target.port
        ))
        .await;
        let s = setup(true, FakeDns::with(&[])).await;
        let (d, outcome) = deliver_once(&s, &format!("http://127.0.0.1:{}/h", redirect.port)).await;
        assert_eq!(d.state, DeliveryState::Pending, "retried later: {d:?}");
        assert_eq!(d.last_status, Some(307));
        assert_eq!(d.last_error.as_deref(), Some("HTTP 307"));
        assert!(matches!(&outcome, Err(e) if e.retryable), "{outcome:?}");
        assert_eq!(redirect.connections.load(Ordering::SeqCst), 1);
        assert_eq!(target.connections.load(Ordering::SeqCst), 0, "the redirect was not followed");
        s.store.close().await;
    }
}
