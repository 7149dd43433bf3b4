//! The cases of the conformance suite; each takes a fresh, migrated store.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use sspr_domain::{ApiKeyId, Role, TenantScope};
use sspr_store::{AuditFilter, NewApiKey, NewAuditEntry, Store, StoreError};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_790_000_000 + secs, 0).unwrap()
}

fn new_key(hash: &str, tenants: TenantScope) -> NewApiKey {
    NewApiKey {
        id: ApiKeyId::new(),
        name: format!("key-{hash}"),
        role: Role::Operator,
        tenants,
        token_hash: hash.to_owned(),
        created_by: "cli".into(),
        created_at: t(0),
    }
}

fn audit(at: i64, actor: &str, tenant: Option<&str>) -> NewAuditEntry {
    NewAuditEntry {
        at: t(at),
        actor: actor.into(),
        action: "POST /v1/things".into(),
        target: "/v1/things".into(),
        tenant_id: tenant.map(str::to_owned),
        status: 201,
        request_id: Some(format!("req-{at}")),
        details: serde_json::json!({ "n": at }),
    }
}

pub(crate) async fn migrations_apply_once_and_are_idempotent(store: &Store) {
    // The fixture already migrated: a second run applies nothing and fails nothing.
    let report = store.migrate().await.unwrap();
    assert_eq!(report.applied_now, 0);
    assert_eq!(report.total, store.migration_names().len());
    assert!(report.total >= 2);
}

pub(crate) async fn ping_answers(store: &Store) {
    store.ping().await.unwrap();
}

pub(crate) async fn api_key_round_trips_and_is_found_by_hash_only(store: &Store) {
    let tenants = TenantScope::Only(BTreeSet::from(["ten_a".to_owned(), "ten_b".to_owned()]));
    let created = store.insert_api_key(new_key("h1", tenants.clone())).await.unwrap();
    let found = store.find_active_api_key("h1").await.unwrap().expect("found by hash");
    assert_eq!(found, created);
    assert_eq!(found.tenants, tenants);
    assert_eq!(found.role, Role::Operator);
    assert!(store.find_active_api_key("h2").await.unwrap().is_none());
    let by_id = store.get_api_key(&created.id).await.unwrap().expect("found by id");
    assert_eq!(by_id, created);
    let unrestricted = store.insert_api_key(new_key("h3", TenantScope::All)).await.unwrap();
    let listed = store.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|k| k.id == unrestricted.id && k.tenants == TenantScope::All));
}

pub(crate) async fn api_key_hash_is_unique(store: &Store) {
    store.insert_api_key(new_key("same", TenantScope::All)).await.unwrap();
    let err = store.insert_api_key(new_key("same", TenantScope::All)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "api key" }), "got {err:?}");
}

pub(crate) async fn revoked_key_is_not_found(store: &Store) {
    let key = store.insert_api_key(new_key("r1", TenantScope::All)).await.unwrap();
    assert!(store.revoke_api_key(&key.id, t(10)).await.unwrap());
    assert!(store.find_active_api_key("r1").await.unwrap().is_none());
    // Revoking twice reports that nothing was revoked the second time.
    assert!(!store.revoke_api_key(&key.id, t(11)).await.unwrap());
    let stored = store.get_api_key(&key.id).await.unwrap().unwrap();
    assert_eq!(stored.revoked_at, Some(t(10)));
}

pub(crate) async fn touch_updates_last_used_at_most_once_per_granularity(store: &Store) {
    let key = store.insert_api_key(new_key("u1", TenantScope::All)).await.unwrap();
    let minute = TimeDelta::minutes(1);
    store.touch_api_key(&key.id, t(100), minute).await.unwrap();
    store.touch_api_key(&key.id, t(130), minute).await.unwrap();
    let seen = store.get_api_key(&key.id).await.unwrap().unwrap().last_used_at;
    assert_eq!(seen, Some(t(100)), "a touch within the granularity is not written");
    store.touch_api_key(&key.id, t(161), minute).await.unwrap();
    let seen = store.get_api_key(&key.id).await.unwrap().unwrap().last_used_at;
    assert_eq!(seen, Some(t(161)));
}

pub(crate) async fn audit_entries_append_in_order_and_filter(store: &Store) {
    store.append_audit(audit(1, "key_a", Some("ten_1"))).await.unwrap();
    store.append_audit(audit(2, "key_b", Some("ten_2"))).await.unwrap();
    store.append_audit(audit(3, "key_a", None)).await.unwrap();
    let all = store.list_audit(&AuditFilter { limit: 100, ..Default::default() }).await.unwrap();
    assert_eq!(all.iter().map(|e| e.at).collect::<Vec<_>>(), vec![t(1), t(2), t(3)]);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all[0].details, serde_json::json!({ "n": 1 }));
    assert_eq!(all[0].request_id.as_deref(), Some("req-1"));
    assert_eq!(all[0].status, 201);

    let by_actor = AuditFilter { actor: Some("key_a".into()), limit: 100, ..Default::default() };
    let got = store.list_audit(&by_actor).await.unwrap();
    assert_eq!(got.iter().map(|e| e.at).collect::<Vec<_>>(), vec![t(1), t(3)]);

    let by_tenant =
        AuditFilter { tenant_id: Some("ten_2".into()), limit: 100, ..Default::default() };
    assert_eq!(store.list_audit(&by_tenant).await.unwrap().len(), 1);

    let window =
        AuditFilter { since: Some(t(2)), until: Some(t(3)), limit: 100, ..Default::default() };
    let got = store.list_audit(&window).await.unwrap();
    assert_eq!(got.iter().map(|e| e.at).collect::<Vec<_>>(), vec![t(2)]);
}

pub(crate) async fn audit_pages_with_cursor_without_gaps_or_repeats(store: &Store) {
    for i in 0..7 {
        store.append_audit(audit(i, "key_a", None)).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_audit(&AuditFilter { after_seq: cursor, limit: 3, ..Default::default() })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cursor = page.last().map(|e| e.seq);
        seen.extend(page.into_iter().map(|e| e.at));
    }
    assert_eq!(seen, (0..7).map(t).collect::<Vec<_>>());
}

pub(crate) async fn audit_restricted_scope_sees_only_its_tenants(store: &Store) {
    store.append_audit(audit(1, "key_a", Some("ten_1"))).await.unwrap();
    store.append_audit(audit(2, "key_a", Some("ten_2"))).await.unwrap();
    store.append_audit(audit(3, "key_a", None)).await.unwrap();
    let scoped = AuditFilter {
        within_tenants: Some(BTreeSet::from(["ten_2".to_owned()])),
        limit: 100,
        ..Default::default()
    };
    let got = store.list_audit(&scoped).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].tenant_id.as_deref(), Some("ten_2"));
    let nothing =
        AuditFilter { within_tenants: Some(BTreeSet::new()), limit: 100, ..Default::default() };
    assert!(store.list_audit(&nothing).await.unwrap().is_empty());
}
