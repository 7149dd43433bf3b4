//! Conformance cases of webhook subscriptions, their outbox fan-out and delivery log.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use serde_json::json;
use sspr_domain::{DeliveryId, MessageId, RolloutId, WebhookId};
use sspr_store::{
    AttemptRecord, DeliveryState, NewDelivery, NewEvent, NewRollout, NewRolloutTenant, Store,
    TenantUpdate, WEBHOOK_DELIVER_KIND, WEBHOOK_QUEUE, WebhookPatch, WebhookSubscription,
};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

fn sub(types: &[&str], scope: Option<&[&str]>, enabled: bool) -> WebhookSubscription {
    WebhookSubscription {
        id: WebhookId::new(),
        url: "https://psa.example/hook".into(),
        description: "psa".into(),
        event_types: types.iter().map(|s| (*s).to_owned()).collect(),
        tenant_scope: scope.map(|s| s.iter().map(|t| (*t).to_owned()).collect::<BTreeSet<_>>()),
        secret_sealed: "v1:k1:current".into(),
        secret_key_id: "k1".into(),
        previous_secret_sealed: None,
        previous_secret_until: None,
        enabled,
        created_by: "key_admin".into(),
        created_at: t(0),
        updated_at: t(0),
    }
}

async fn rollout(store: &Store, tenants: &[&str]) -> RolloutId {
    let r = NewRollout {
        id: RolloutId::new(),
        name: "Wave SSPR".into(),
        spec: json!({}),
        wave_count: 1,
        created_by: "key_ops".into(),
        idempotency_key: None,
        created_at: t(0),
        tenants: tenants
            .iter()
            .enumerate()
            .map(|(i, t)| NewRolloutTenant {
                tenant_id: (*t).to_owned(),
                wave: 0,
                position: i as i32,
            })
            .collect(),
    };
    store.insert_rollout(r).await.unwrap().id
}

fn update(to: &str, reason: Option<&str>, at: i64) -> TenantUpdate {
    TenantUpdate {
        to_state: to.into(),
        paused_from: None,
        reason: Some(reason.map(str::to_owned)),
        last_error: None,
        scope_group_id: None,
        gate_entered_at: (to == "gate").then_some(Some(t(at))),
        at: t(at),
    }
}

fn ev(tenant: Option<&str>, kind: &str, from: &str, to: &str, at: i64) -> NewEvent {
    NewEvent {
        tenant_id: tenant.map(str::to_owned),
        at: t(at),
        actor: "engine".into(),
        kind: kind.into(),
        from_state: Some(from.into()),
        to_state: Some(to.into()),
        detail: json!({"code": "license_missing"}),
    }
}

/// (event type, tenant) of every delivery of `w`, oldest first.
async fn received(store: &Store, w: &WebhookId) -> Vec<(String, Option<String>)> {
    let mut all = store.list_webhook_deliveries(w, None, None, 100).await.unwrap();
    all.reverse();
    all.into_iter().map(|d| (d.event_type, d.tenant_id)).collect()
}

pub(crate) async fn webhooks_round_trip_page_patch_rotate_and_delete(store: &Store) {
    let a = sub(&["tenant.completed"], None, true);
    let b = sub(&["rollout.paused"], Some(&["ten_a"]), true);
    store.insert_webhook(&a).await.unwrap();
    store.insert_webhook(&b).await.unwrap();
    assert!(matches!(
        store.insert_webhook(&a).await,
        Err(sspr_store::StoreError::Conflict { what: "webhook" })
    ));
    assert_eq!(store.get_webhook(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.get_webhook(&b.id).await.unwrap().unwrap().tenant_scope, b.tenant_scope);
    assert!(store.get_webhook(&WebhookId::new()).await.unwrap().is_none());

    let first = store.list_webhooks(None, 1).await.unwrap();
    assert_eq!(first, vec![a.clone()]);
    let rest = store.list_webhooks(Some(a.id.as_str()), 10).await.unwrap();
    assert_eq!(rest.iter().map(|w| w.id.clone()).collect::<Vec<_>>(), vec![b.id.clone()]);

    let patch = WebhookPatch {
        url: Some("https://other.example/x".into()),
        description: None,
        event_types: Some(vec!["tenant.failed".into(), "tenant.blocked".into()]),
        enabled: Some(false),
        at: t(10),
    };
    let now = store.update_webhook(&a.id, &patch).await.unwrap().unwrap();
    assert_eq!(now.url, "https://other.example/x");
    assert_eq!(now.description, "psa");
    assert_eq!(now.event_types, vec!["tenant.failed", "tenant.blocked"]);
    assert!(!now.enabled);
    assert_eq!((now.created_at, now.updated_at), (t(0), t(10)));
    let only_enable = WebhookPatch {
        url: None,
        description: None,
        event_types: None,
        enabled: Some(true),
        at: t(11),
    };
    let now = store.update_webhook(&a.id, &only_enable).await.unwrap().unwrap();
    assert!(now.enabled);
    assert_eq!(now.url, "https://other.example/x");
    assert!(store.update_webhook(&WebhookId::new(), &only_enable).await.unwrap().is_none());

    // Rotation keeps the current secret as the previous one, fenced on the current value.
    assert!(
        !store
            .rotate_webhook_secret(&a.id, "v1:k1:stale", "v1:k1:new", "k1", t(99), t(20))
            .await
            .unwrap()
    );
    assert!(
        store
            .rotate_webhook_secret(&a.id, "v1:k1:current", "v1:k1:new", "k1", t(99), t(20))
            .await
            .unwrap()
    );
    let now = store.get_webhook(&a.id).await.unwrap().unwrap();
    assert_eq!(now.secret_sealed, "v1:k1:new");
    assert_eq!(now.previous_secret_sealed.as_deref(), Some("v1:k1:current"));
    assert_eq!(now.previous_secret_until, Some(t(99)));

    // A rewrap replaces both sealed values, only if both are unchanged.
    assert!(
        !store
            .reseal_webhook_secrets(&a.id, ("v1:k1:new", None), ("v1:k2:n", None), "k2")
            .await
            .unwrap()
    );
    assert!(
        store
            .reseal_webhook_secrets(
                &a.id,
                ("v1:k1:new", Some("v1:k1:current")),
                ("v1:k2:n", Some("v1:k2:c")),
                "k2"
            )
            .await
            .unwrap()
    );
    let now = store.get_webhook(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (
            now.secret_sealed.as_str(),
            now.previous_secret_sealed.as_deref(),
            now.secret_key_id.as_str()
        ),
        ("v1:k2:n", Some("v1:k2:c"), "k2")
    );
    assert!(
        store
            .reseal_webhook_secrets(&b.id, ("v1:k1:current", None), ("v1:k2:b", None), "k2")
            .await
            .unwrap()
    );

    assert!(store.delete_webhook(&a.id).await.unwrap());
    assert!(!store.delete_webhook(&a.id).await.unwrap());
    assert!(store.get_webhook(&a.id).await.unwrap().is_none());
}

pub(crate) async fn webhook_fan_out_is_transactional_and_follows_types_and_scope(store: &Store) {
    let all = sub(
        &[
            "tenant.blocked",
            "tenant.gate_waiting_approval",
            "tenant.completed",
            "tenant.failed",
            "rollout.paused",
            "rollout.completed",
        ],
        None,
        true,
    );
    let only_a = sub(
        &["tenant.blocked", "tenant.gate_waiting_approval", "rollout.paused"],
        Some(&["ten_a"]),
        true,
    );
    let only_c = sub(&["rollout.paused", "tenant.blocked"], Some(&["ten_c"]), true);
    let completed_only = sub(&["rollout.completed"], None, true);
    let disabled = sub(&["tenant.blocked", "rollout.paused"], None, false);
    for w in [&all, &only_a, &only_c, &completed_only, &disabled] {
        store.insert_webhook(w).await.unwrap();
    }
    let r = rollout(store, &["ten_a", "ten_b"]).await;

    // A blocked tenant: every subscription that wants it and reaches the tenant.
    assert!(
        store
            .transition_rollout_tenant(
                &r,
                "ten_a",
                "pending",
                update("blocked", Some("license_missing"), 1),
                ev(Some("ten_a"), "blocked", "pending", "blocked", 1),
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .transition_rollout_tenant(
                &r,
                "ten_b",
                "pending",
                update("blocked", Some("license_missing"), 2),
                ev(Some("ten_b"), "blocked", "pending", "blocked", 2),
            )
            .await
            .unwrap()
    );
    // A transition that does not apply sends nothing.
    assert!(
        !store
            .transition_rollout_tenant(
                &r,
                "ten_b",
                "pending",
                update("failed", None, 3),
                ev(Some("ten_b"), "failed", "pending", "failed", 3),
            )
            .await
            .unwrap()
    );
    let blocked = |t: &str| ("tenant.blocked".to_owned(), Some(t.to_owned()));
    assert_eq!(received(store, &all.id).await, vec![blocked("ten_a"), blocked("ten_b")]);
    assert_eq!(received(store, &only_a.id).await, vec![blocked("ten_a")]);
    assert!(received(store, &only_c.id).await.is_empty());
    assert!(received(store, &disabled.id).await.is_empty());
    assert!(received(store, &completed_only.id).await.is_empty());

    // The payload says what happened, with the rollout's name and the tenant's reason.
    let d = &store.list_webhook_deliveries(&only_a.id, None, None, 10).await.unwrap()[0];
    assert_eq!(d.state, DeliveryState::Pending);
    assert_eq!(d.attempts, 0);
    assert_eq!(d.payload["type"], "tenant.blocked");
    assert_eq!(d.payload["data"]["rollout_id"], r.as_str());
    assert_eq!(d.payload["data"]["rollout_name"], "Wave SSPR");
    assert_eq!(d.payload["data"]["tenant_id"], "ten_a");
    assert_eq!(d.payload["data"]["state"], "blocked");
    assert_eq!(d.payload["data"]["reason"], "license_missing");
    assert!(d.payload["timestamp"].as_str().unwrap().starts_with("2026-"), "{}", d.payload);

    // Each delivery has its own queued job, claimable by an ordinary worker on the webhook
    // queue.
    let jobs =
        store.claim_jobs(WEBHOOK_QUEUE, "w1", t(100), Duration::from_secs(60), 50).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.kind == WEBHOOK_DELIVER_KIND), "{jobs:?}");
    let mut job_deliveries: Vec<String> =
        jobs.iter().map(|j| j.payload["delivery_id"].as_str().unwrap().to_owned()).collect();
    job_deliveries.sort();
    let mut ids: Vec<String> = Vec::new();
    for w in [&all.id, &only_a.id] {
        for d in store.list_webhook_deliveries(w, None, None, 10).await.unwrap() {
            ids.push(d.id.to_string());
        }
    }
    ids.sort();
    assert_eq!(job_deliveries, ids);

    // A gate wait for approval is sent once per gate entry, however often the reason changes.
    let mut gate = update("gate", Some("waiting for soak_time"), 10);
    gate.gate_entered_at = Some(Some(t(10)));
    let mut rr = rollout(store, &["ten_a"]).await;
    assert!(
        store
            .transition_rollout_tenant(
                &rr,
                "ten_a",
                "pending",
                gate,
                ev(Some("ten_a"), "gate_entered", "pending", "gate", 10)
            )
            .await
            .unwrap()
    );
    for (i, waiting) in ["soak_time, approval", "approval", "soak_time"].iter().enumerate() {
        let mut wait = update("gate", Some(&format!("waiting for {waiting}")), 11 + i as i64);
        wait.gate_entered_at = None;
        let mut e = ev(Some("ten_a"), "waiting", "gate", "gate", 11 + i as i64);
        e.detail = json!({"waiting_for": waiting});
        assert!(store.transition_rollout_tenant(&rr, "ten_a", "gate", wait, e).await.unwrap());
    }
    let waits = |v: Vec<(String, Option<String>)>| {
        v.into_iter().filter(|(t, _)| t == "tenant.gate_waiting_approval").count()
    };
    assert_eq!(waits(received(store, &all.id).await), 1);
    assert_eq!(waits(received(store, &only_a.id).await), 1);
    let d = store.list_webhook_deliveries(&all.id, None, None, 1).await.unwrap().remove(0);
    assert_eq!(d.payload["data"]["reason"], "waiting for soak_time, approval");
    // A second gate entry (say, after a retry) waits again, and is sent again.
    let mut regate = update("gate", Some("waiting for approval"), 30);
    regate.gate_entered_at = Some(Some(t(30)));
    let mut e = ev(Some("ten_a"), "waiting", "gate", "gate", 30);
    e.detail = json!({"waiting_for": "approval"});
    assert!(store.transition_rollout_tenant(&rr, "ten_a", "gate", regate, e).await.unwrap());
    assert_eq!(waits(received(store, &all.id).await), 2);

    // Rollout events reach a restricted subscription only if the rollout holds one of its
    // tenants.
    assert!(
        store
            .set_rollout_state(
                &r,
                &["running"],
                "paused",
                Some("paused_by_operator"),
                ev(None, "paused", "running", "paused", 40),
            )
            .await
            .unwrap()
    );
    let paused = ("rollout.paused".to_owned(), None);
    assert_eq!(received(store, &all.id).await.last(), Some(&paused));
    assert_eq!(received(store, &only_a.id).await.last(), Some(&paused));
    assert!(received(store, &only_c.id).await.is_empty());
    assert!(received(store, &disabled.id).await.is_empty());
    let d = store.list_webhook_deliveries(&all.id, None, None, 1).await.unwrap().remove(0);
    assert_eq!(d.payload["data"]["reason"], "paused_by_operator");
    assert_eq!(d.payload["data"]["tenant_id"], serde_json::Value::Null);

    rr = rollout(store, &["ten_b"]).await;
    assert!(
        store
            .set_rollout_state(
                &rr,
                &["running"],
                "completed",
                None,
                ev(None, "completed", "running", "completed", 50)
            )
            .await
            .unwrap()
    );
    assert_eq!(received(store, &completed_only.id).await, vec![("rollout.completed".into(), None)]);
    // Other events append no delivery.
    let before = received(store, &all.id).await.len();
    store.append_rollout_event(&rr, ev(Some("ten_b"), "task_attested", "", "", 51)).await.unwrap();
    store.append_rollout_event(&rr, ev(None, "paused", "running", "paused", 52)).await.unwrap();
    assert_eq!(
        received(store, &all.id).await.len(),
        before + 1,
        "append goes through the outbox too"
    );
}

pub(crate) async fn webhook_sms_risk_is_sent_once_per_rollout_and_tenant(store: &Store) {
    let psa = sub(&["tenant.sms_risk"], None, true);
    store.insert_webhook(&psa).await.unwrap();
    let r = rollout(store, &["ten_a", "ten_b"]).await;
    let risk = |tenant: &str, at: i64| {
        let mut e = ev(Some(tenant), sspr_domain::SMS_RISK_EVENT, "", "", at);
        e.from_state = None;
        e.to_state = None;
        e.detail = json!({"figures": {"phone_dependent": 7}});
        e
    };
    // A retried preflight records the risk again; the PSA gets one ticket per tenant.
    for at in [1, 2, 3] {
        store.append_rollout_event(&r, risk("ten_a", at)).await.unwrap();
    }
    store.append_rollout_event(&r, risk("ten_b", 4)).await.unwrap();
    let got = received(store, &psa.id).await;
    assert_eq!(
        got,
        vec![
            ("tenant.sms_risk".to_owned(), Some("ten_a".to_owned())),
            ("tenant.sms_risk".to_owned(), Some("ten_b".to_owned()))
        ]
    );
    // Another rollout of the same tenant is another ticket.
    let again = rollout(store, &["ten_a"]).await;
    store.append_rollout_event(&again, risk("ten_a", 5)).await.unwrap();
    assert_eq!(received(store, &psa.id).await.len(), 3);
    let d = store.list_webhook_deliveries(&psa.id, None, None, 1).await.unwrap().remove(0);
    assert_eq!(d.payload["data"]["detail"]["figures"]["phone_dependent"], 7);
}

pub(crate) async fn webhook_attempts_redelivery_and_counts(store: &Store) {
    let w = sub(&["tenant.completed"], None, true);
    store.insert_webhook(&w).await.unwrap();
    let test = NewDelivery {
        id: DeliveryId::new(),
        subscription_id: w.id.clone(),
        message_id: MessageId::new(),
        event_type: "webhook.test".into(),
        tenant_id: None,
        payload: json!({"type": "webhook.test"}),
        created_at: t(0),
    };
    store.queue_webhook_delivery(&test).await.unwrap();
    let jobs =
        store.claim_jobs(WEBHOOK_QUEUE, "w1", t(1), Duration::from_secs(60), 10).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].payload["delivery_id"], test.id.as_str());

    let fail = |at: i64| AttemptRecord {
        at: t(at),
        status: Some(503),
        error: Some("HTTP 503".into()),
        duration_ms: 12,
        state: DeliveryState::Pending,
    };
    assert_eq!(store.record_webhook_attempt(&test.id, &fail(2)).await.unwrap(), Some(1));
    assert_eq!(store.record_webhook_attempt(&test.id, &fail(3)).await.unwrap(), Some(2));
    let ok = AttemptRecord {
        at: t(4),
        status: Some(200),
        error: None,
        duration_ms: 5,
        state: DeliveryState::Delivered,
    };
    assert_eq!(store.record_webhook_attempt(&test.id, &ok).await.unwrap(), Some(3));
    assert_eq!(store.record_webhook_attempt(&DeliveryId::new(), &ok).await.unwrap(), None);
    let d = store.get_webhook_delivery(&w.id, &test.id).await.unwrap().unwrap();
    assert_eq!(d.state, DeliveryState::Delivered);
    assert_eq!((d.attempts, d.last_status, d.last_error.as_deref()), (3, Some(200), None));
    assert_eq!((d.last_attempt_at, d.delivered_at), (Some(t(4)), Some(t(4))));
    assert_eq!(d.message_id, test.message_id);
    assert!(store.get_webhook_delivery(&WebhookId::new(), &test.id).await.unwrap().is_none());
    let log = store.list_webhook_attempts(&test.id).await.unwrap();
    let statuses: Vec<_> = log.iter().map(|a| (a.attempt, a.status)).collect();
    assert_eq!(statuses, vec![(1, Some(503)), (2, Some(503)), (3, Some(200))]);
    assert_eq!(log[0].error.as_deref(), Some("HTTP 503"));

    // Filters by state, newest first, paged by id.
    let second =
        NewDelivery { id: DeliveryId::new(), message_id: MessageId::new(), ..test.clone() };
    store.queue_webhook_delivery(&second).await.unwrap();
    let failed = AttemptRecord { state: DeliveryState::Failed, ..fail(5) };
    store.record_webhook_attempt(&second.id, &failed).await.unwrap();
    let ids = |v: Vec<sspr_store::WebhookDelivery>| v.into_iter().map(|d| d.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_webhook_deliveries(&w.id, None, None, 10).await.unwrap()),
        vec![second.id.clone(), test.id.clone()]
    );
    assert_eq!(
        ids(store.list_webhook_deliveries(&w.id, None, None, 1).await.unwrap()),
        vec![second.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_webhook_deliveries(&w.id, None, Some(second.id.as_str()), 10)
            .await
            .unwrap()),
        vec![test.id.clone()]
    );
    assert_eq!(
        ids(store
            .list_webhook_deliveries(&w.id, Some(DeliveryState::Failed), None, 10)
            .await
            .unwrap()),
        vec![second.id.clone()]
    );
    let counts: Vec<(String, DeliveryState, i64)> = store
        .webhook_delivery_counts()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.subscription_id, c.state, c.count))
        .collect();
    let mut expected = vec![
        (w.id.to_string(), DeliveryState::Delivered, 1),
        (w.id.to_string(), DeliveryState::Failed, 1),
    ];
    expected.sort_by_key(|(_, s, _)| s.as_str());
    assert_eq!(counts, expected);

    // Redelivery: pending again, the same message id, and a job only if none is waiting.
    let again = store.redeliver_webhook(&w.id, &second.id, t(6)).await.unwrap().unwrap();
    assert_eq!(again.state, DeliveryState::Pending);
    assert_eq!(again.message_id, second.message_id);
    store.redeliver_webhook(&w.id, &second.id, t(6)).await.unwrap().unwrap();
    let jobs =
        store.claim_jobs(WEBHOOK_QUEUE, "w1", t(7), Duration::from_secs(60), 10).await.unwrap();
    // The second delivery's first job was still queued, so one job covers it and both
    // redeliveries.
    assert_eq!(jobs.iter().filter(|j| j.payload["delivery_id"] == second.id.as_str()).count(), 1);
    assert!(store.redeliver_webhook(&w.id, &DeliveryId::new(), t(8)).await.unwrap().is_none());

    // A delivery for a subscription deleted meanwhile is dropped without an error or a job.
    let orphan = NewDelivery {
        id: DeliveryId::new(),
        subscription_id: WebhookId::new(),
        message_id: MessageId::new(),
        ..test.clone()
    };
    store.queue_webhook_delivery(&orphan).await.unwrap();
    assert!(store.webhook_delivery(&orphan.id).await.unwrap().is_none());
    let jobs =
        store.claim_jobs(WEBHOOK_QUEUE, "w2", t(9), Duration::from_secs(60), 10).await.unwrap();
    assert!(jobs.iter().all(|j| j.payload["delivery_id"] != orphan.id.as_str()), "{jobs:?}");

    // Deleting the subscription deletes its deliveries and their log.
    assert!(store.delete_webhook(&w.id).await.unwrap());
    assert!(store.webhook_delivery(&test.id).await.unwrap().is_none());
    assert!(store.list_webhook_attempts(&test.id).await.unwrap().is_empty());
    assert!(store.webhook_delivery_counts().await.unwrap().is_empty());
}
