//! Webhook subscriptions and the outbox of their deliveries.
//!
//! A subscription names a URL, the event types it wants and the tenants it reaches (the
//! creating key's restriction, or all). Its signing secret is stored only as vault
//! ciphertext; after a rotation the previous one keeps signing until a deadline.
//!
//! Deliveries are an outbox: the store functions that append a rollout event
//! ([`Store::transition_rollout_tenant`], [`Store::set_rollout_state`],
//! [`Store::append_rollout_event`]) insert, in the same transaction, one delivery per enabled
//! subscription that wants the event and reaches it, and the `webhook.deliver` job that sends
//! it. So an event whose transaction commits is always delivered (at least once), and one
//! that rolls back is never sent.
//!
//! Which subscriptions reach an event: a tenant event reaches unrestricted subscriptions and
//! those whose scope holds the tenant. A rollout event (`rollout.*`) reaches unrestricted
//! subscriptions and restricted ones whose scope holds at least one of the rollout's tenants
//! (a key that sees one of a rollout's tenants sees the rollout itself).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sspr_domain::{DeliveryId, JobId, MessageId, WebhookEventType, WebhookId};

use crate::{
    NewEvent, Store, StoreError,
    pool::{with_reader, with_writer},
    time::{from_ms, to_ms},
};

/// The job kind that sends one delivery.
pub const WEBHOOK_DELIVER_KIND: &str = "webhook.deliver";
/// The queue webhook jobs go to: their own, so that slow receivers never hold up rollout steps.
pub const WEBHOOK_QUEUE: &str = "webhooks";
/// The `max_attempts` of every webhook job row. The handler fails a delivery for good after
/// its configured attempts (at most this many), so the row's own limit is only a ceiling.
pub const WEBHOOK_JOB_MAX_ATTEMPTS: i32 = 100;

/// A webhook subscription as stored. Its `Debug` output omits the sealed secrets.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSubscription {
    /// Id of the subscription (part of the vault binding of its secrets).
    pub id: WebhookId,
    /// Where events are POSTed.
    pub url: String,
    /// What the subscription is for, for people.
    pub description: String,
    /// The event type names it receives (never empty).
    pub event_types: Vec<String>,
    /// The tenants it reaches; `None` for every tenant.
    pub tenant_scope: Option<BTreeSet<String>>,
    /// Vault ciphertext of the signing secret.
    pub secret_sealed: String,
    /// Id of the master key that sealed it.
    pub secret_key_id: String,
    /// Vault ciphertext of the secret before the last rotation, while it still signs.
    pub previous_secret_sealed: Option<String>,
    /// Until when the previous secret signs too.
    pub previous_secret_until: Option<DateTime<Utc>>,
    /// Whether events are delivered to it.
    pub enabled: bool,
    /// Who created it (a key id).
    pub created_by: String,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for WebhookSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookSubscription")
            .field("id", &self.id)
            .field("event_types", &self.event_types)
            .field("tenant_scope", &self.tenant_scope)
            .field("secret_key_id", &self.secret_key_id)
            .field("previous_secret_until", &self.previous_secret_until)
            .field("enabled", &self.enabled)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A change to a subscription; `None` fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookPatch {
    /// A new URL.
    pub url: Option<String>,
    /// A new description.
    pub description: Option<String>,
    /// New event types (non-empty).
    pub event_types: Option<Vec<String>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// When the change is made.
    pub at: DateTime<Utc>,
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Not delivered yet; attempts continue.
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// Every attempt failed (a manual redelivery makes it pending again).
    Failed,
}

impl DeliveryState {
    /// Every state.
    pub const ALL: [DeliveryState; 3] =
        [DeliveryState::Pending, DeliveryState::Delivered, DeliveryState::Failed];

    /// The state as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A delivery state string was not one of [`DeliveryState::as_str`]'s values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown delivery state")]
pub struct DeliveryStateParseError;

impl FromStr for DeliveryState {
    type Err = DeliveryStateParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeliveryState::ALL.into_iter().find(|d| d.as_str() == s).ok_or(DeliveryStateParseError)
    }
}

/// One event for one subscription.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    /// Id of the delivery.
    pub id: DeliveryId,
    /// The subscription it goes to.
    pub subscription_id: WebhookId,
    /// The `webhook-id` header, the same for every attempt and redelivery.
    pub message_id: MessageId,
    /// The event type.
    pub event_type: String,
    /// The tenant the event concerns, if any.
    pub tenant_id: Option<String>,
    /// The JSON body sent.
    pub payload: Value,
    /// Where it is.
    pub state: DeliveryState,
    /// HTTP attempts made so far.
    pub attempts: i32,
    /// The status of the last answer, if one came.
    pub last_status: Option<i32>,
    /// What went wrong with the last attempt, if it failed.
    pub last_error: Option<String>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it was last tried.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the receiver accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// A delivery to queue outside the outbox path (a test event).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// Id of the delivery.
    pub id: DeliveryId,
    /// The subscription it goes to.
    pub subscription_id: WebhookId,
    /// The `webhook-id` header.
    pub message_id: MessageId,
    /// The event type.
    pub event_type: String,
    /// The tenant the event concerns, if any.
    pub tenant_id: Option<String>,
    /// The JSON body to send.
    pub payload: Value,
    /// When it was created (and its job becomes due).
    pub created_at: DateTime<Utc>,
}

/// One HTTP attempt of a delivery, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryAttempt {
    /// 1 for the first attempt of the delivery (redeliveries continue the count).
    pub attempt: i32,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The status answered, if an answer came.
    pub status: Option<i32>,
    /// What went wrong, if it failed.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
}

/// The outcome of one attempt, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    /// When it was made.
    pub at: DateTime<Utc>,
    /// The status answered, if an answer came.
    pub status: Option<i32>,
    /// What went wrong, if it failed; never a secret.
    pub error: Option<String>,
    /// How long it took, in milliseconds.
    pub duration_ms: i64,
    /// The delivery's state after it.
    pub state: DeliveryState,
}

/// How many deliveries of one subscription are in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    /// The subscription.
    pub subscription_id: String,
    /// The state.
    pub state: DeliveryState,
    /// How many.
    pub count: i64,
}

#[derive(sqlx::FromRow)]
struct SubscriptionRow {
    id: String,
    url: String,
    description: String,
    event_types: String,
    tenant_scope: Option<String>,
    secret_sealed: String,
    secret_key_id: String,
    previous_secret_sealed: Option<String>,
    previous_secret_until: Option<i64>,
    enabled: bool,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

macro_rules! subscription_columns {
    () => {
        "id, url, description, event_types, tenant_scope, secret_sealed, secret_key_id, \
         previous_secret_sealed, previous_secret_until, enabled, created_by, created_at, \
         updated_at"
    };
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    subscription_id: String,
    message_id: String,
    event_type: String,
    tenant_id: Option<String>,
    payload: String,
    state: String,
    attempts: i32,
    last_status: Option<i32>,
    last_error: Option<String>,
    created_at: i64,
    last_attempt_at: Option<i64>,
    delivered_at: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct AttemptRow {
    attempt: i32,
    at: i64,
    status: Option<i32>,
    error: Option<String>,
    duration_ms: i64,
}

macro_rules! delivery_columns {
    () => {
        "id, subscription_id, message_id, event_type, tenant_id, payload, state, attempts, \
         last_status, last_error, created_at, last_attempt_at, delivered_at"
    };
}

fn corrupt(what: &'static str) -> impl Fn(String) -> StoreError {
    move |detail| StoreError::Corrupt { what, detail }
}

fn scope_text(scope: Option<&BTreeSet<String>>) -> Result<Option<String>, StoreError> {
    scope
        .map(|s| serde_json::to_string(s).map_err(|e| corrupt("webhook")(format!("scope: {e}"))))
        .transpose()
}

fn types_text(types: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(types).map_err(|e| corrupt("webhook")(format!("event_types: {e}")))
}

fn parse_scope(text: Option<&str>) -> Result<Option<BTreeSet<String>>, StoreError> {
    text.map(|t| serde_json::from_str(t).map_err(|e| corrupt("webhook")(format!("scope: {e}"))))
        .transpose()
}

impl TryFrom<SubscriptionRow> for WebhookSubscription {
    type Error = StoreError;

    fn try_from(r: SubscriptionRow) -> Result<Self, StoreError> {
        let bad = corrupt("webhook");
        Ok(Self {
            id: r.id.parse().map_err(|e| bad(format!("id: {e}")))?,
            url: r.url,
            description: r.description,
            event_types: serde_json::from_str(&r.event_types)
                .map_err(|e| bad(format!("event_types: {e}")))?,
            tenant_scope: parse_scope(r.tenant_scope.as_deref())?,
            secret_sealed: r.secret_sealed,
            secret_key_id: r.secret_key_id,
            previous_secret_sealed: r.previous_secret_sealed,
            previous_secret_until: r
                .previous_secret_until
                .map(|t| from_ms(t, "webhook"))
                .transpose()?,
            enabled: r.enabled,
            created_by: r.created_by,
            created_at: from_ms(r.created_at, "webhook")?,
            updated_at: from_ms(r.updated_at, "webhook")?,
        })
    }
}

impl TryFrom<DeliveryRow> for WebhookDelivery {
    type Error = StoreError;

    fn try_from(r: DeliveryRow) -> Result<Self, StoreError> {
        let bad = corrupt("webhook delivery");
        let ms = |t: Option<i64>| t.map(|t| from_ms(t, "webhook delivery")).transpose();
        Ok(Self {
            id: r.id.parse().map_err(|e| bad(format!("id: {e}")))?,
            subscription_id: r
                .subscription_id
                .parse()
                .map_err(|e| bad(format!("subscription_id: {e}")))?,
            message_id: r.message_id.parse().map_err(|e| bad(format!("message_id: {e}")))?,
            event_type: r.event_type,
            tenant_id: r.tenant_id,
            payload: serde_json::from_str(&r.payload).map_err(|e| bad(format!("payload: {e}")))?,
            state: r.state.parse().map_err(|_| bad(format!("state {:?}", r.state)))?,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            created_at: from_ms(r.created_at, "webhook delivery")?,
            last_attempt_at: ms(r.last_attempt_at)?,
            delivered_at: ms(r.delivered_at)?,
        })
    }
}

/// Inserts a delivery; a clash on `(subscription_id, dedup_key)` inserts nothing and returns
/// no row, and so does a subscription deleted since the fan-out read it: the row is selected
/// from the subscription, so a concurrent delete never fails the rollout's transaction.
pub(crate) const INSERT_DELIVERY: &str = "INSERT INTO webhook_deliveries
        (id, subscription_id, message_id, event_type, tenant_id, payload, dedup_key, state,
         attempts, created_at)
     SELECT $1, id, $3, $4, $5, $6, $7, 'pending', 0, $8
     FROM webhook_subscriptions WHERE id = $2
     ON CONFLICT (subscription_id, dedup_key) WHERE dedup_key IS NOT NULL DO NOTHING
     RETURNING id";

/// Inserts the job that sends a delivery: the queue's own columns, as `enqueue_job` writes
/// them, so the ordinary worker claims it. Its unique key is per delivery, so a redelivery
/// while a job is still queued or running adds none.
pub(crate) const INSERT_DELIVERY_JOB: &str = "INSERT INTO jobs (id, kind, queue, payload, state,
         run_at, attempt, max_attempts, created_at, updated_at, tenant_id, unique_key)
     VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $5, $5, NULL, $7)
     ON CONFLICT (unique_key) WHERE state IN ('queued', 'running') DO NOTHING";

/// The job values of delivery `id`: (job id, payload, unique key).
pub(crate) fn delivery_job(id: &DeliveryId) -> (String, String, String) {
    (
        JobId::new().to_string(),
        json!({ "delivery_id": id.as_str() }).to_string(),
        format!("webhook:{id}"),
    )
}

/// Inserts delivery `$d` (a [`DeliveryValues`]) and, if it was new, its job, on transaction
/// `$tx`.
macro_rules! insert_delivery {
    ($tx:ident, $d:expr) => {{
        let d: &$crate::webhooks::DeliveryValues = $d;
        let inserted: Option<String> = sqlx::query_scalar($crate::webhooks::INSERT_DELIVERY)
            .bind(&d.id)
            .bind(&d.subscription_id)
            .bind(&d.message_id)
            .bind(&d.event_type)
            .bind(&d.tenant_id)
            .bind(&d.payload)
            .bind(&d.dedup_key)
            .bind(d.created_at)
            .fetch_optional(&mut *$tx)
            .await?;
        if inserted.is_some() {
            sqlx::query($crate::webhooks::INSERT_DELIVERY_JOB)
                .bind(&d.job_id)
                .bind($crate::webhooks::WEBHOOK_DELIVER_KIND)
                .bind($crate::webhooks::WEBHOOK_QUEUE)
                .bind(&d.job_payload)
                .bind(d.created_at)
                .bind($crate::webhooks::WEBHOOK_JOB_MAX_ATTEMPTS)
                .bind(&d.job_key)
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// The fan-out of a rollout event to webhook subscriptions, on transaction `$tx` right after
/// the event was inserted. `$plan` is the event's `Option<FanOut>`; `None` does nothing.
macro_rules! fan_out_webhooks {
    ($tx:ident, $plan:expr) => {
        if let Some(plan) = $plan {
            let plan: &$crate::webhooks::FanOut = plan;
            let subs: Vec<(String, String, Option<String>)> = sqlx::query_as(
                "SELECT id, event_types, tenant_scope FROM webhook_subscriptions
                 WHERE enabled = $1 ORDER BY id",
            )
            .bind(true)
            .fetch_all(&mut *$tx)
            .await?;
            let needs_rollout_tenants = !plan.event_type.is_tenant_event()
                && subs.iter().any(|(_, _, scope)| scope.is_some());
            let rollout_tenants: Vec<(String, String)> = if needs_rollout_tenants {
                sqlx::query_as("SELECT tenant_id, state FROM rollout_tenants WHERE rollout_id = $1")
                    .bind(&plan.rollout_id)
                    .fetch_all(&mut *$tx)
                    .await?
            } else {
                Vec::new()
            };
            let targets = plan.targets(&subs, &rollout_tenants)?;
            if !targets.is_empty() {
                let rollout_name: Option<String> =
                    sqlx::query_scalar("SELECT name FROM rollouts WHERE id = $1")
                        .bind(&plan.rollout_id)
                        .fetch_optional(&mut *$tx)
                        .await?;
                let (tenant_name, gate_entered_at): (Option<String>, Option<i64>) = match &plan
                    .tenant_id
                {
                    Some(tenant) => {
                        let name: Option<String> =
                            sqlx::query_scalar("SELECT display_name FROM tenants WHERE id = $1")
                                .bind(tenant)
                                .fetch_optional(&mut *$tx)
                                .await?;
                        let gate: Option<Option<i64>> = sqlx::query_scalar(
                            "SELECT gate_entered_at FROM rollout_tenants
                                 WHERE rollout_id = $1 AND tenant_id = $2",
                        )
                        .bind(&plan.rollout_id)
                        .bind(tenant)
                        .fetch_optional(&mut *$tx)
                        .await?;
                        (name, gate.flatten())
                    }
                    None => (None, None),
                };
                let deliveries = plan.deliveries(
                    &targets,
                    &rollout_tenants,
                    rollout_name,
                    tenant_name,
                    gate_entered_at,
                )?;
                for d in deliveries {
                    $crate::webhooks::insert_delivery!($tx, &d);
                }
            }
        }
    };
}
pub(crate) use {fan_out_webhooks, insert_delivery};

/// A delivery row and its job, ready to insert.
pub(crate) struct DeliveryValues {
    pub(crate) id: String,
    pub(crate) subscription_id: String,
    pub(crate) message_id: String,
    pub(crate) event_type: String,
    pub(crate) tenant_id: Option<String>,
    pub(crate) payload: String,
    pub(crate) dedup_key: Option<String>,
    pub(crate) created_at: i64,
    pub(crate) job_id: String,
    pub(crate) job_payload: String,
    pub(crate) job_key: String,
}

impl DeliveryValues {
    fn new(d: &NewDelivery, dedup_key: Option<String>) -> Result<Self, StoreError> {
        let (job_id, job_payload, job_key) = delivery_job(&d.id);
        Ok(Self {
            id: d.id.to_string(),
            subscription_id: d.subscription_id.to_string(),
            message_id: d.message_id.to_string(),
            event_type: d.event_type.clone(),
            tenant_id: d.tenant_id.clone(),
            payload: serde_json::to_string(&d.payload)
                .map_err(|e| corrupt("webhook delivery")(format!("payload: {e}")))?,
            dedup_key,
            created_at: to_ms(d.created_at),
            job_id,
            job_payload,
            job_key,
        })
    }
}

/// A subscription that receives an event, with the tenants it is limited to.
pub(crate) struct Target {
    pub(crate) id: String,
    pub(crate) scope: Option<BTreeSet<String>>,
}

/// What a rollout event needs to fan out, computed before its transaction.
pub(crate) struct FanOut {
    pub(crate) event_type: WebhookEventType,
    pub(crate) rollout_id: String,
    pub(crate) tenant_id: Option<String>,
    at: DateTime<Utc>,
    actor: String,
    from_state: Option<String>,
    to_state: Option<String>,
    pub(crate) reason: Option<String>,
    detail: Value,
}

impl FanOut {
    /// The fan-out of `event` of rollout `rollout_id`, `None` when it is no webhook event.
    /// `reason` is the reason the event's change records (the tenant's or the rollout's).
    pub(crate) fn of(rollout_id: &str, event: &NewEvent, reason: Option<&str>) -> Option<Self> {
        let waiting_for = event.detail.get("waiting_for").and_then(Value::as_str);
        let event_type = WebhookEventType::from_rollout_event(
            &event.kind,
            event.tenant_id.is_some(),
            event.to_state.as_deref(),
            waiting_for,
        )?;
        Some(Self {
            event_type,
            rollout_id: rollout_id.to_owned(),
            tenant_id: event.tenant_id.clone(),
            at: event.at,
            actor: event.actor.clone(),
            from_state: event.from_state.clone(),
            to_state: event.to_state.clone(),
            reason: reason.map(str::to_owned),
            detail: event.detail.clone(),
        })
    }

    /// The subscriptions (id, event types, scope) that receive this event, each with its
    /// tenant scope. `rollout_tenants` are the rollout's (tenant, state) pairs.
    pub(crate) fn targets(
        &self,
        subs: &[(String, String, Option<String>)],
        rollout_tenants: &[(String, String)],
    ) -> Result<Vec<Target>, StoreError> {
        let mut out = Vec::new();
        for (id, types, scope) in subs {
            let types: Vec<String> = serde_json::from_str(types)
                .map_err(|e| corrupt("webhook")(format!("event_types: {e}")))?;
            if !types.iter().any(|t| t == self.event_type.as_str()) {
                continue;
            }
            let scope = parse_scope(scope.as_deref())?;
            let reaches = match &scope {
                None => true,
                Some(scope) => match &self.tenant_id {
                    Some(tenant) => scope.contains(tenant),
                    None => rollout_tenants.iter().any(|(t, _)| scope.contains(t)),
                },
            };
            if reaches {
                out.push(Target { id: id.clone(), scope });
            }
        }
        Ok(out)
    }

    /// The event's body as a subscription with `scope` receives it. A rollout-wide event
    /// speaks of the whole fleet; a subscription limited to some tenants gets its reason
    /// recomputed from those tenants' states (`rollout_tenants`) and only the fleet-free keys
    /// of its detail.
    pub(crate) fn payload(
        &self,
        scope: Option<&BTreeSet<String>>,
        rollout_tenants: &[(String, String)],
        rollout_name: Option<&str>,
        tenant_name: Option<&str>,
    ) -> Value {
        let (reason, detail) = match (scope, &self.tenant_id) {
            (Some(scope), None) => {
                let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
                for (_, state) in rollout_tenants.iter().filter(|(t, _)| scope.contains(t)) {
                    *counts.entry(state.as_str()).or_default() += 1;
                }
                (
                    sspr_domain::scoped_reason(self.reason.as_deref(), counts),
                    sspr_domain::scoped_rollout_detail(&self.detail),
                )
            }
            _ => (self.reason.clone(), self.detail.clone()),
        };
        json!({
            "type": self.event_type.as_str(),
            "timestamp": self.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            "data": {
                "rollout_id": self.rollout_id,
                "rollout_name": rollout_name,
                "tenant_id": self.tenant_id,
                "tenant_name": tenant_name,
                "state": self.to_state,
                "from_state": self.from_state,
                "reason": reason,
                "actor": self.actor,
                "detail": detail,
            },
        })
    }

    /// One delivery per target subscription. A tenant's gate wait for approval carries a
    /// dedup key naming the gate entry, so it is delivered once per wait; a tenant's SMS risk
    /// one naming the rollout and tenant, so it is delivered once per rollout.
    pub(crate) fn deliveries(
        &self,
        targets: &[Target],
        rollout_tenants: &[(String, String)],
        rollout_name: Option<String>,
        tenant_name: Option<String>,
        gate_entered_at: Option<i64>,
    ) -> Result<Vec<DeliveryValues>, StoreError> {
        let (rollout_name, tenant_name) = (rollout_name.as_deref(), tenant_name.as_deref());
        let tenant = self.tenant_id.as_deref().unwrap_or("");
        let dedup_key = match self.event_type {
            WebhookEventType::TenantGateWaitingApproval => Some(format!(
                "{}:{}:{tenant}:{}",
                self.event_type.as_str(),
                self.rollout_id,
                gate_entered_at.unwrap_or(0)
            )),
            // One ticket per customer and rollout: a retried preflight does not send it again.
            WebhookEventType::TenantSmsRisk => {
                Some(format!("{}:{}:{tenant}", self.event_type.as_str(), self.rollout_id))
            }
            _ => None,
        };
        targets
            .iter()
            .map(|target| {
                let subscription_id =
                    target.id.parse().map_err(|e| corrupt("webhook")(format!("id: {e}")))?;
                let payload =
                    self.payload(target.scope.as_ref(), rollout_tenants, rollout_name, tenant_name);
                let d = NewDelivery {
                    id: DeliveryId::new(),
                    subscription_id,
                    message_id: MessageId::new(),
                    event_type: self.event_type.as_str().to_owned(),
                    tenant_id: self.tenant_id.clone(),
                    payload,
                    created_at: self.at,
                };
                DeliveryValues::new(&d, dedup_key.clone())
            })
            .collect()
    }
}

impl Store {
    /// Stores a new subscription. [`StoreError::Conflict`] (`"webhook"`) when the id is taken.
    pub async fn insert_webhook(&self, w: &WebhookSubscription) -> Result<(), StoreError> {
        let types = types_text(&w.event_types)?;
        let scope = scope_text(w.tenant_scope.as_ref())?;
        with_writer!(self, pool => {
            sqlx::query(
                "INSERT INTO webhook_subscriptions (id, url, description, event_types,
                     tenant_scope, secret_sealed, secret_key_id, previous_secret_sealed,
                     previous_secret_until, enabled, created_by, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(w.id.as_str())
            .bind(&w.url)
            .bind(&w.description)
            .bind(&types)
            .bind(&scope)
            .bind(&w.secret_sealed)
            .bind(&w.secret_key_id)
            .bind(&w.previous_secret_sealed)
            .bind(w.previous_secret_until.map(to_ms))
            .bind(w.enabled)
            .bind(&w.created_by)
            .bind(to_ms(w.created_at))
            .bind(to_ms(w.updated_at))
            .execute(pool)
            .await
            .map_err(StoreError::on_unique("webhook"))?;
        });
        Ok(())
    }

    /// One subscription, sealed secrets included.
    pub async fn get_webhook(
        &self,
        id: &WebhookId,
    ) -> Result<Option<WebhookSubscription>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM webhook_subscriptions WHERE id = $1"
        );
        let row: Option<SubscriptionRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(WebhookSubscription::try_from).transpose()
    }

    /// A page of subscriptions in id (creation) order, after `after`, at most `limit`.
    pub async fn list_webhooks(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WebhookSubscription>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            subscription_columns!(),
            " FROM webhook_subscriptions WHERE id > $1 ORDER BY id LIMIT $2"
        );
        let rows: Vec<SubscriptionRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL)
                .bind(after.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(WebhookSubscription::try_from).collect()
    }

    /// Applies `patch` and returns the subscription as it is now; `None` when it does not
    /// exist.
    pub async fn update_webhook(
        &self,
        id: &WebhookId,
        patch: &WebhookPatch,
    ) -> Result<Option<WebhookSubscription>, StoreError> {
        const SQL: &str = concat!(
            "UPDATE webhook_subscriptions SET url = COALESCE($1, url),
                 description = COALESCE($2, description),
                 event_types = COALESCE($3, event_types), enabled = COALESCE($4, enabled),
                 updated_at = $5
             WHERE id = $6 RETURNING ",
            subscription_columns!()
        );
        let types = patch.event_types.as_deref().map(types_text).transpose()?;
        let row: Option<SubscriptionRow> = with_writer!(self, pool => {
            sqlx::query_as(SQL)
                .bind(&patch.url)
                .bind(&patch.description)
                .bind(&types)
                .bind(patch.enabled)
                .bind(to_ms(patch.at))
                .bind(id.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.map(WebhookSubscription::try_from).transpose()
    }

    /// Makes `new_sealed` (sealed with `new_key_id`) the subscription's secret and keeps the
    /// current one signing until `previous_until`, only if the current one is still
    /// `old_sealed` (so two rotations at once cannot both keep the same previous secret).
    /// Returns whether it was rotated.
    pub async fn rotate_webhook_secret(
        &self,
        id: &WebhookId,
        old_sealed: &str,
        new_sealed: &str,
        new_key_id: &str,
        previous_until: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let updated = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE webhook_subscriptions SET previous_secret_sealed = secret_sealed,
                     previous_secret_until = $1, secret_sealed = $2, secret_key_id = $3,
                     updated_at = $4
                 WHERE id = $5 AND secret_sealed = $6",
            )
            .bind(to_ms(previous_until))
            .bind(new_sealed)
            .bind(new_key_id)
            .bind(to_ms(at))
            .bind(id.as_str())
            .bind(old_sealed)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Replaces the sealed secrets of a subscription (a master-key rewrap), only if they are
    /// still `old` (current, previous). Returns whether they were replaced.
    pub async fn reseal_webhook_secrets(
        &self,
        id: &WebhookId,
        old: (&str, Option<&str>),
        new: (&str, Option<&str>),
        new_key_id: &str,
    ) -> Result<bool, StoreError> {
        let updated = with_writer!(self, pool => {
            sqlx::query(
                "UPDATE webhook_subscriptions SET secret_sealed = $1, previous_secret_sealed = $2,
                     secret_key_id = $3
                 WHERE id = $4 AND secret_sealed = $5
                     AND COALESCE(previous_secret_sealed, '') = $6",
            )
            .bind(new.0)
            .bind(new.1)
            .bind(new_key_id)
            .bind(id.as_str())
            .bind(old.0)
            .bind(old.1.unwrap_or(""))
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(updated == 1)
    }

    /// Deletes a subscription and its deliveries. `Ok(false)` when it did not exist. Jobs of
    /// its pending deliveries find nothing to send and end.
    pub async fn delete_webhook(&self, id: &WebhookId) -> Result<bool, StoreError> {
        let deleted = with_writer!(self, pool => {
            sqlx::query("DELETE FROM webhook_subscriptions WHERE id = $1")
                .bind(id.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(deleted > 0)
    }

    /// Queues a delivery and its job in one transaction (used for test events; rollout
    /// events are queued by the outbox). [`StoreError::Conflict`] when the id is taken.
    pub async fn queue_webhook_delivery(&self, d: &NewDelivery) -> Result<(), StoreError> {
        let values = DeliveryValues::new(d, None)?;
        with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            insert_delivery!(tx, &values);
            tx.commit().await?;
        });
        Ok(())
    }

    /// One delivery of subscription `sub`.
    pub async fn get_webhook_delivery(
        &self,
        sub: &WebhookId,
        id: &DeliveryId,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries WHERE id = $1 AND subscription_id = $2"
        );
        let row: Option<DeliveryRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).bind(sub.as_str()).fetch_optional(pool).await?
        });
        row.map(WebhookDelivery::try_from).transpose()
    }

    /// One delivery by id alone (for the job that sends it).
    pub async fn webhook_delivery(
        &self,
        id: &DeliveryId,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        const SQL: &str =
            concat!("SELECT ", delivery_columns!(), " FROM webhook_deliveries WHERE id = $1");
        let row: Option<DeliveryRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL).bind(id.as_str()).fetch_optional(pool).await?
        });
        row.map(WebhookDelivery::try_from).transpose()
    }

    /// A page of the deliveries of `sub`, newest first: those before `before` (an id), only
    /// in `state` if given, at most `limit`.
    pub async fn list_webhook_deliveries(
        &self,
        sub: &WebhookId,
        state: Option<DeliveryState>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<WebhookDelivery>, StoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            delivery_columns!(),
            " FROM webhook_deliveries
             WHERE subscription_id = $1 AND ($2 = '' OR state = $2) AND ($3 = '' OR id < $3)
             ORDER BY id DESC LIMIT $4"
        );
        let rows: Vec<DeliveryRow> = with_reader!(self, pool => {
            sqlx::query_as(SQL)
                .bind(sub.as_str())
                .bind(state.map_or("", DeliveryState::as_str))
                .bind(before.unwrap_or(""))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(WebhookDelivery::try_from).collect()
    }

    /// The attempts of a delivery, in order.
    pub async fn list_webhook_attempts(
        &self,
        id: &DeliveryId,
    ) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let rows: Vec<AttemptRow> = with_reader!(self, pool => {
            sqlx::query_as(
                "SELECT attempt, at, status, error, duration_ms FROM webhook_delivery_attempts
                 WHERE delivery_id = $1 ORDER BY attempt",
            )
            .bind(id.as_str())
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|r| {
                Ok(DeliveryAttempt {
                    attempt: r.attempt,
                    at: from_ms(r.at, "webhook attempt")?,
                    status: r.status,
                    error: r.error,
                    duration_ms: r.duration_ms,
                })
            })
            .collect()
    }

    /// Records one attempt of delivery `id` in one transaction: counts it, stores its status
    /// and error as the delivery's last, moves the delivery to `r.state` (setting
    /// `delivered_at` when delivered) and appends it to the delivery log. Returns the
    /// attempt's number, `None` when the delivery no longer exists.
    pub async fn record_webhook_attempt(
        &self,
        id: &DeliveryId,
        r: &AttemptRecord,
    ) -> Result<Option<i32>, StoreError> {
        let at = to_ms(r.at);
        let delivered = (r.state == DeliveryState::Delivered).then_some(at);
        let attempt = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let attempt: Option<i32> = sqlx::query_scalar(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $1,
                     last_error = $2, last_attempt_at = $3, state = $4,
                     delivered_at = COALESCE($5, delivered_at)
                 WHERE id = $6 RETURNING attempts",
            )
            .bind(r.status)
            .bind(&r.error)
            .bind(at)
            .bind(r.state.as_str())
            .bind(delivered)
            .bind(id.as_str())
            .fetch_optional(&mut *tx)
            .await?;
            let Some(attempt) = attempt else {
                return Ok(None);
            };
            sqlx::query(
                "INSERT INTO webhook_delivery_attempts
                     (delivery_id, attempt, at, status, error, duration_ms)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(id.as_str())
            .bind(attempt)
            .bind(at)
            .bind(r.status)
            .bind(&r.error)
            .bind(r.duration_ms)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            attempt
        });
        Ok(Some(attempt))
    }

    /// Sends delivery `id` of `sub` again: makes it pending and queues its job (unless one is
    /// queued or running already), in one transaction. The message id stays the same, so the
    /// receiver can recognise it. `None` when no such delivery exists.
    pub async fn redeliver_webhook(
        &self,
        sub: &WebhookId,
        id: &DeliveryId,
        at: DateTime<Utc>,
    ) -> Result<Option<WebhookDelivery>, StoreError> {
        const SQL: &str = concat!(
            "UPDATE webhook_deliveries SET state = 'pending'
             WHERE id = $1 AND subscription_id = $2 RETURNING ",
            delivery_columns!()
        );
        let (job_id, job_payload, job_key) = delivery_job(id);
        let row: Option<DeliveryRow> = with_writer!(self, pool => {
            let mut tx = pool.begin().await?;
            let row: Option<DeliveryRow> = sqlx::query_as(SQL)
                .bind(id.as_str())
                .bind(sub.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            if row.is_some() {
                sqlx::query(INSERT_DELIVERY_JOB)
                    .bind(&job_id)
                    .bind(WEBHOOK_DELIVER_KIND)
                    .bind(WEBHOOK_QUEUE)
                    .bind(&job_payload)
                    .bind(to_ms(at))
                    .bind(WEBHOOK_JOB_MAX_ATTEMPTS)
                    .bind(&job_key)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            row
        });
        row.map(WebhookDelivery::try_from).transpose()
    }

    /// How many deliveries each subscription has in each state (for `/metrics`), by
    /// subscription id then state. States without deliveries are left out.
    pub async fn webhook_delivery_counts(&self) -> Result<Vec<DeliveryCount>, StoreError> {
        let rows: Vec<(String, String, i64)> = with_reader!(self, pool => {
            sqlx::query_as(
                "SELECT subscription_id, state, COUNT(*) FROM webhook_deliveries
                 GROUP BY subscription_id, state ORDER BY subscription_id, state",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(subscription_id, state, count)| {
                let state = state
                    .parse()
                    .map_err(|_| corrupt("webhook delivery")(format!("state {state:?}")))?;
                Ok(DeliveryCount { subscription_id, state, count })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_the_sealed_secrets() {
        let w = WebhookSubscription {
            id: WebhookId::new(),
            url: "https://psa.example/hook".into(),
            description: String::new(),
            event_types: vec!["tenant.completed".into()],
            tenant_scope: None,
            secret_sealed: "v1:k1:SECRET".into(),
            secret_key_id: "k1".into(),
            previous_secret_sealed: Some("v1:k1:OLDSECRET".into()),
            previous_secret_until: None,
            enabled: true,
            created_by: "key_x".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let text = format!("{w:?}");
        assert!(!text.contains("SECRET"), "{text}");
    }
}
