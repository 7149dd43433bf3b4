//! The `webhook.deliver` job: one HTTP attempt of one delivery.

use std::time::Instant;

use sspr_domain::DeliveryId;
use sspr_queue::{JobDone, JobError, JobFuture, JobHandler};
use sspr_store::{AttemptRecord, DeliveryState, Job, WEBHOOK_DELIVER_KIND};

use super::{Webhooks, signature_header};

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
    if e.is_timeout() {
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
