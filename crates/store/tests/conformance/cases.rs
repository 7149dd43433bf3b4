//! The cases of the conformance suite; each takes a fresh, migrated store.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use sspr_domain::{ApiKeyId, CredentialId, Role, TenantId, TenantScope};
use sspr_store::{
    AuditFilter, CredentialSummary, LicenceLevel, NewApiKey, NewAuditEntry, NewCredential,
    NewTenant, Store, StoreError, Tenant, TenantFilter, TenantPatch, TenantStatus,
    VerificationRecord,
};

pub(crate) use crate::webhook_cases::*;

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

// ---- Tenants ----

fn cred(secret: &str, at: i64) -> NewCredential {
    NewCredential {
        id: CredentialId::new(),
        kind: "client_secret".into(),
        client_id: "11111111-2222-3333-4444-555555555555".into(),
        thumbprint_s256: None,
        certificate_pem: None,
        sealed: format!("v1:k1:{secret}"),
        key_id: "k1".into(),
        created_at: t(at),
    }
}

fn new_tenant(entra_ref: &str, name: &str, tags: &[&str]) -> NewTenant {
    let is_guid = entra_ref.len() == 36 && entra_ref.bytes().filter(|b| *b == b'-').count() == 4;
    NewTenant {
        id: TenantId::new(),
        entra_ref: entra_ref.into(),
        entra_tenant_id: is_guid.then(|| entra_ref.to_owned()),
        display_name: name.into(),
        tags: tags.iter().map(|s| (*s).to_owned()).collect(),
        external_refs: BTreeMap::new(),
        created_at: t(0),
        credential: cred(name, 0),
    }
}

fn guid(n: u32) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

fn verification(status: TenantStatus, licence: LicenceLevel, at: i64) -> VerificationRecord {
    VerificationRecord {
        status,
        status_reason: (status == TenantStatus::NotReady).then(|| "no_licence".to_owned()),
        licence,
        entra_tenant_id: None,
        default_domain: None,
        readiness: serde_json::json!({ "checked": at }),
        verified_at: t(at),
    }
}

fn all(limit: u32) -> TenantFilter {
    TenantFilter { limit, ..Default::default() }
}

fn names(tenants: &[Tenant]) -> Vec<&str> {
    tenants.iter().map(|t| t.display_name.as_str()).collect()
}

pub(crate) async fn tenant_round_trips_with_tags_refs_and_credential(store: &Store) {
    let mut new =
        new_tenant(&guid(1).to_uppercase(), "Contoso", &["zeta", "alpha", "mid", "alpha"]);
    new.entra_tenant_id = Some(guid(1).to_uppercase());
    new.external_refs = BTreeMap::from([
        ("connectwise".to_owned(), "CW-42".to_owned()),
        ("halo".to_owned(), "7".to_owned()),
    ]);
    new.credential.kind = "certificate".into();
    new.credential.thumbprint_s256 = Some("thumb".into());
    new.credential.certificate_pem = Some("-----BEGIN CERTIFICATE-----".into());
    let cred_id = new.credential.id.clone();
    let created = store.insert_tenant(new.clone()).await.unwrap();

    assert_eq!(created.id, new.id);
    assert_eq!(created.entra_ref, guid(1), "stored lowercase");
    assert_eq!(created.entra_tenant_id.as_deref(), Some(guid(1).as_str()));
    assert_eq!(created.display_name, "Contoso");
    assert_eq!(created.tags, vec!["alpha", "mid", "zeta"], "sorted, without duplicates");
    assert_eq!(created.external_refs, new.external_refs);
    assert_eq!(created.status, TenantStatus::Unverified);
    assert_eq!(created.status_reason, None);
    assert_eq!(created.licence, LicenceLevel::Unknown);
    assert_eq!(created.readiness, None);
    assert_eq!(created.verified_at, None);
    assert_eq!(created.offboarded_at, None);
    assert_eq!(created.created_at, t(0));
    assert_eq!(created.updated_at, t(0));
    let summary = created.credential.clone().expect("credential summary");
    assert_eq!(
        summary,
        CredentialSummary {
            id: cred_id.clone(),
            kind: "certificate".into(),
            client_id: new.credential.client_id.clone(),
            thumbprint_s256: Some("thumb".into()),
            key_id: "k1".into(),
            created_at: t(0),
        }
    );

    let got = store.get_tenant(&created.id).await.unwrap().expect("found by id");
    assert_eq!(got, created);
    assert!(store.get_tenant(&TenantId::new()).await.unwrap().is_none());

    let stored = store.tenant_credential(&created.id).await.unwrap().expect("credential");
    assert_eq!(stored.summary, summary);
    assert_eq!(stored.tenant_id, created.id);
    assert_eq!(stored.certificate_pem.as_deref(), Some("-----BEGIN CERTIFICATE-----"));
    assert_eq!(stored.sealed, "v1:k1:Contoso");
    assert!(!format!("{stored:?}").contains("v1:k1:Contoso"), "Debug hides the sealed value");

    // Found by its reference, whatever the case.
    let found = store.find_active_tenant(&guid(1).to_uppercase()).await.unwrap();
    assert_eq!(found.map(|t| t.id), Some(created.id.clone()));
    assert!(store.find_active_tenant(&guid(2)).await.unwrap().is_none());

    // A domain registration is found by its domain, and by its tenant id once verified.
    let domain = store.insert_tenant(new_tenant("fabrikam.com", "Fabrikam", &[])).await.unwrap();
    assert!(domain.tags.is_empty());
    assert_eq!(domain.entra_tenant_id, None);
    let found = store.find_active_tenant("Fabrikam.COM").await.unwrap().unwrap();
    assert_eq!(found.id, domain.id);
    let mut v = verification(TenantStatus::Ready, LicenceLevel::P1, 5);
    v.entra_tenant_id = Some(guid(3));
    assert!(store.record_verification(&domain.id, v).await.unwrap());
    let found = store.find_active_tenant(&guid(3)).await.unwrap().unwrap();
    assert_eq!(found.id, domain.id);
}

pub(crate) async fn tenant_duplicates_conflict_until_offboarded(store: &Store) {
    let first = store.insert_tenant(new_tenant(&guid(1), "One", &["a"])).await.unwrap();

    // Same reference.
    let err = store.insert_tenant(new_tenant(&guid(1), "Again", &[])).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "tenant" }), "got {err:?}");
    // Same reference, other case.
    let err =
        store.insert_tenant(new_tenant(&guid(1).to_uppercase(), "Upper", &[])).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "tenant" }), "got {err:?}");

    // A domain registration resolved to the tenant id of another registration.
    let domain = store.insert_tenant(new_tenant("contoso.com", "Contoso", &[])).await.unwrap();
    let mut v = verification(TenantStatus::Ready, LicenceLevel::P2, 5);
    v.entra_tenant_id = Some(guid(2));
    assert!(store.record_verification(&domain.id, v).await.unwrap());
    let err = store.insert_tenant(new_tenant(&guid(2), "By guid", &[])).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "tenant" }), "got {err:?}");
    // A second domain of a tenant already registered, once it is known to resolve there.
    let mut alias = new_tenant("contoso.onmicrosoft.com", "Alias", &[]);
    alias.entra_tenant_id = Some(guid(2));
    let err = store.insert_tenant(alias).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "tenant" }), "got {err:?}");

    // The failed inserts left nothing behind: no tenant, no tag, no credential.
    assert_eq!(store.count_tenants(&all(100)).await.unwrap(), 2);
    assert_eq!(store.all_credentials().await.unwrap().len(), 2);

    // After offboarding, the same Entra tenant may be registered again.
    store.offboard_tenant(&first.id, t(10)).await.unwrap().expect("offboarded");
    let again = store.insert_tenant(new_tenant(&guid(1), "One again", &[])).await.unwrap();
    assert_ne!(again.id, first.id);
    let found = store.find_active_tenant(&guid(1)).await.unwrap().unwrap();
    assert_eq!(found.id, again.id, "the offboarded registration is not active");
    store.offboard_tenant(&domain.id, t(11)).await.unwrap().expect("offboarded");
    store.insert_tenant(new_tenant(&guid(2), "By guid", &[])).await.unwrap();
    assert_eq!(store.count_tenants(&all(100)).await.unwrap(), 2);
}

pub(crate) async fn tenant_list_filters(store: &Store) {
    let a = store.insert_tenant(new_tenant(&guid(1), "Alpha 100% Ltd", &["eu", "gold"])).await;
    let a = a.unwrap();
    let mut b = new_tenant("beta.example", "Beta_Corp", &["eu"]);
    b.external_refs = BTreeMap::from([("psa".to_owned(), "ACME-77".to_owned())]);
    let b = store.insert_tenant(b).await.unwrap();
    let c = store.insert_tenant(new_tenant(&guid(3), "Gamma", &["us"])).await.unwrap();
    let d = store.insert_tenant(new_tenant(&guid(4), "Delta", &["eu"])).await.unwrap();
    store
        .record_verification(&a.id, verification(TenantStatus::Ready, LicenceLevel::P1, 1))
        .await
        .unwrap();
    let mut v = verification(TenantStatus::NotReady, LicenceLevel::None, 2);
    v.default_domain = Some("gamma.onmicrosoft.com".into());
    store.record_verification(&c.id, v).await.unwrap();
    store.offboard_tenant(&d.id, t(3)).await.unwrap().unwrap();

    let list = |f: TenantFilter| async move {
        let got = store.list_tenants(&f).await.unwrap();
        let n = store.count_tenants(&TenantFilter { after_id: None, limit: 0, ..f }).await;
        (got, n.unwrap())
    };

    // Default: active only, by id (creation order).
    let (got, n) = list(all(100)).await;
    assert_eq!(names(&got), vec!["Alpha 100% Ltd", "Beta_Corp", "Gamma"]);
    assert_eq!(n, 3);
    assert_eq!(got[0].tags, vec!["eu", "gold"]);
    assert!(got.iter().all(|t| t.credential.is_some()));

    let (got, n) = list(TenantFilter { include_offboarded: true, ..all(100) }).await;
    assert_eq!(names(&got), vec!["Alpha 100% Ltd", "Beta_Corp", "Gamma", "Delta"]);
    assert_eq!(n, 4);
    assert_eq!(got[3].credential, None);
    assert_eq!(got[3].tags, vec!["eu"], "tags are kept as history");

    // Tag: exact match, offboarded excluded.
    let (got, n) = list(TenantFilter { tag: Some("eu".into()), ..all(100) }).await;
    assert_eq!(names(&got), vec!["Alpha 100% Ltd", "Beta_Corp"]);
    assert_eq!(n, 2);
    let (got, _) = list(TenantFilter { tag: Some("e".into()), ..all(100) }).await;
    assert!(got.is_empty());

    // Status and licence.
    let (got, n) = list(TenantFilter { status: Some(TenantStatus::Ready), ..all(100) }).await;
    assert_eq!((names(&got), n), (vec!["Alpha 100% Ltd"], 1));
    let (got, n) = list(TenantFilter { status: Some(TenantStatus::Unverified), ..all(100) }).await;
    assert_eq!((names(&got), n), (vec!["Beta_Corp"], 1));
    let (got, n) = list(TenantFilter { status: Some(TenantStatus::Offboarded), ..all(100) }).await;
    assert_eq!((names(&got), n), (vec!["Delta"], 1), "asking for offboarded lists them");
    let (got, n) = list(TenantFilter { licence: Some(LicenceLevel::None), ..all(100) }).await;
    assert_eq!((names(&got), n), (vec!["Gamma"], 1));
    let (got, n) = list(TenantFilter {
        licence: Some(LicenceLevel::Unknown),
        include_offboarded: true,
        ..all(100)
    })
    .await;
    assert_eq!((names(&got), n), (vec!["Beta_Corp", "Delta"], 2));

    // Search: case-insensitive substring over several columns.
    let search = |s: &str| TenantFilter { search: Some(s.into()), ..all(100) };
    assert_eq!(names(&list(search("ALPHA")).await.0), vec!["Alpha 100% Ltd"]);
    assert_eq!(names(&list(search("BETA.EX")).await.0), vec!["Beta_Corp"], "entra_ref");
    assert_eq!(names(&list(search("acme-7")).await.0), vec!["Beta_Corp"], "external refs");
    assert_eq!(names(&list(search("onmicrosoft")).await.0), vec!["Gamma"], "default domain");
    assert_eq!(names(&list(search(&guid(3)[..8])).await.0), vec!["Gamma"], "tenant id");
    assert_eq!(list(search("")).await.1, 3);
    // LIKE metacharacters match themselves only.
    assert_eq!(names(&list(search("100%")).await.0), vec!["Alpha 100% Ltd"]);
    assert!(list(search("%")).await.0.len() == 1);
    assert!(list(search("a%d")).await.0.is_empty(), "% is not a wildcard");
    assert_eq!(names(&list(search("a_c")).await.0), vec!["Beta_Corp"]);
    assert!(list(search("g_m")).await.0.is_empty(), "_ is not a wildcard");
    assert!(list(search("\\")).await.0.is_empty());

    // Within a set of ids.
    let within = |ids: &[&TenantId]| TenantFilter {
        within: Some(ids.iter().map(|id| id.to_string()).collect()),
        ..all(100)
    };
    let (got, n) = list(within(&[&c.id, &b.id, &d.id])).await;
    assert_eq!((names(&got), n), (vec!["Beta_Corp", "Gamma"], 2));
    let (got, n) = list(within(&[])).await;
    assert!(got.is_empty());
    assert_eq!(n, 0);

    // Filters combine.
    let (got, n) =
        list(TenantFilter { tag: Some("eu".into()), search: Some("beta".into()), ..all(100) })
            .await;
    assert_eq!((names(&got), n), (vec!["Beta_Corp"], 1));

    // The limit is applied as given.
    let (got, n) = list(all(2)).await;
    assert_eq!((names(&got), n), (vec!["Alpha 100% Ltd", "Beta_Corp"], 3));
}

pub(crate) async fn tenant_pages_with_cursor_without_gaps_or_repeats(store: &Store) {
    let mut expected = Vec::new();
    for i in 0..25_usize {
        let tags: &[&str] = if i.is_multiple_of(2) { &["even"] } else { &["odd", "x"] };
        let tenant =
            store.insert_tenant(new_tenant(&format!("t{i:02}.example"), &format!("T{i:02}"), tags));
        let tenant = tenant.await.unwrap();
        expected.push(tenant.id);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let filter = TenantFilter { after_id: cursor.clone(), limit: 4, ..Default::default() };
        let page = store.list_tenants(&filter).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 4);
        for tenant in &page {
            let i: usize = tenant.display_name[1..].parse().unwrap();
            let want: Vec<&str> = if i.is_multiple_of(2) { vec!["even"] } else { vec!["odd", "x"] };
            assert_eq!(tenant.tags, want, "tags belong to their own tenant");
            assert!(tenant.credential.is_some());
        }
        cursor = page.last().map(|t| t.id.to_string());
        seen.extend(page.into_iter().map(|t| t.id));
    }
    assert_eq!(seen, expected, "ids ascending, in creation order, no gaps or repeats");
    let odd = TenantFilter { tag: Some("odd".into()), limit: 5, ..Default::default() };
    let first = store.list_tenants(&odd).await.unwrap();
    assert_eq!(first.len(), 5);
    let rest = store
        .list_tenants(&TenantFilter {
            after_id: Some(first[4].id.to_string()),
            limit: 100,
            ..odd.clone()
        })
        .await
        .unwrap();
    assert_eq!(first.len() + rest.len(), 12);
    assert_eq!(store.count_tenants(&odd).await.unwrap(), 12);
}

pub(crate) async fn tenant_update_applies_the_patch(store: &Store) {
    let mut new = new_tenant(&guid(1), "Old name", &["a", "b"]);
    new.external_refs = BTreeMap::from([("psa".to_owned(), "1".to_owned())]);
    let tenant = store.insert_tenant(new).await.unwrap();

    // Only the given fields change.
    let patch = TenantPatch {
        display_name: Some("New name".into()),
        tags: None,
        external_refs: None,
        updated_at: t(10),
    };
    let updated = store.update_tenant(&tenant.id, patch).await.unwrap().expect("updated");
    assert_eq!(updated.display_name, "New name");
    assert_eq!(updated.tags, vec!["a", "b"]);
    assert_eq!(updated.external_refs, tenant.external_refs);
    assert_eq!(updated.updated_at, t(10));
    assert_eq!(updated.created_at, t(0));
    assert_eq!(updated.credential, tenant.credential);

    // Tags and external refs are replaced wholesale.
    let refs = BTreeMap::from([("rmm".to_owned(), "x".to_owned())]);
    let patch = TenantPatch {
        display_name: None,
        tags: Some(vec!["c".into(), "a".into(), "c".into()]),
        external_refs: Some(refs.clone()),
        updated_at: t(20),
    };
    let updated = store.update_tenant(&tenant.id, patch).await.unwrap().unwrap();
    assert_eq!(updated.display_name, "New name");
    assert_eq!(updated.tags, vec!["a", "c"]);
    assert_eq!(updated.external_refs, refs);
    assert_eq!(store.get_tenant(&tenant.id).await.unwrap().unwrap(), updated);
    let tagged_b = TenantFilter { tag: Some("b".into()), limit: 10, ..Default::default() };
    assert_eq!(store.count_tenants(&tagged_b).await.unwrap(), 0);

    // Empty tags clear them.
    let patch = TenantPatch {
        display_name: None,
        tags: Some(Vec::new()),
        external_refs: None,
        updated_at: t(30),
    };
    let updated = store.update_tenant(&tenant.id, patch.clone()).await.unwrap().unwrap();
    assert!(updated.tags.is_empty());
    assert_eq!(updated.external_refs, refs);

    // Unknown or offboarded tenants are not updated.
    assert!(store.update_tenant(&TenantId::new(), patch.clone()).await.unwrap().is_none());
    store.offboard_tenant(&tenant.id, t(40)).await.unwrap().unwrap();
    let renamed = TenantPatch { display_name: Some("Ghost".into()), ..patch };
    assert!(store.update_tenant(&tenant.id, renamed).await.unwrap().is_none());
    let stored = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    assert_eq!(stored.display_name, "New name");
    assert_eq!(stored.updated_at, t(40));
}

pub(crate) async fn tenant_verification_is_recorded_and_tenant_ids_stay_unique(store: &Store) {
    let by_domain = store.insert_tenant(new_tenant("contoso.com", "Contoso", &[])).await.unwrap();
    let by_guid = store.insert_tenant(new_tenant(&guid(9), "Nine", &[])).await.unwrap();

    let mut v = verification(TenantStatus::NotReady, LicenceLevel::CloudOnly, 100);
    v.entra_tenant_id = Some(guid(1).to_uppercase());
    v.default_domain = Some("contoso.onmicrosoft.com".into());
    assert!(store.record_verification(&by_domain.id, v).await.unwrap());
    let got = store.get_tenant(&by_domain.id).await.unwrap().unwrap();
    assert_eq!(got.status, TenantStatus::NotReady);
    assert_eq!(got.status_reason.as_deref(), Some("no_licence"));
    assert_eq!(got.licence, LicenceLevel::CloudOnly);
    assert_eq!(got.entra_tenant_id.as_deref(), Some(guid(1).as_str()), "stored lowercase");
    assert_eq!(got.default_domain.as_deref(), Some("contoso.onmicrosoft.com"));
    assert_eq!(got.readiness, Some(serde_json::json!({ "checked": 100 })));
    assert_eq!(got.verified_at, Some(t(100)));
    assert_eq!(got.updated_at, t(100));
    assert_eq!(got.entra_ref, "contoso.com", "the registered reference is kept");

    // A later verification that could not read the tenant id or domain keeps them.
    let v = verification(TenantStatus::Ready, LicenceLevel::P2, 200);
    assert!(store.record_verification(&by_domain.id, v).await.unwrap());
    let got = store.get_tenant(&by_domain.id).await.unwrap().unwrap();
    assert_eq!(got.status, TenantStatus::Ready);
    assert_eq!(got.status_reason, None);
    assert_eq!(got.licence, LicenceLevel::P2);
    assert_eq!(got.entra_tenant_id.as_deref(), Some(guid(1).as_str()));
    assert_eq!(got.default_domain.as_deref(), Some("contoso.onmicrosoft.com"));
    assert_eq!(got.readiness, Some(serde_json::json!({ "checked": 200 })));

    // Another active tenant resolving to a known tenant id collides, and changes nothing.
    let other = store.insert_tenant(new_tenant("fabrikam.com", "Fabrikam", &[])).await.unwrap();
    for taken in [guid(1), guid(9)] {
        let mut v = verification(TenantStatus::Ready, LicenceLevel::P1, 300);
        v.entra_tenant_id = Some(taken);
        let err = store.record_verification(&other.id, v).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { what: "tenant" }), "got {err:?}");
    }
    let unchanged = store.get_tenant(&other.id).await.unwrap().unwrap();
    assert_eq!(unchanged, other);
    // Re-verifying a tenant with its own id is no collision.
    let mut v = verification(TenantStatus::Ready, LicenceLevel::P1, 300);
    v.entra_tenant_id = Some(guid(9));
    assert!(store.record_verification(&by_guid.id, v).await.unwrap());

    // Unknown and offboarded tenants are not verified.
    let v = verification(TenantStatus::Ready, LicenceLevel::P1, 400);
    assert!(!store.record_verification(&TenantId::new(), v.clone()).await.unwrap());
    store.offboard_tenant(&other.id, t(350)).await.unwrap().unwrap();
    assert!(!store.record_verification(&other.id, v).await.unwrap());
    let offboarded = store.get_tenant(&other.id).await.unwrap().unwrap();
    assert_eq!(offboarded.status, TenantStatus::Offboarded);
    assert_eq!(offboarded.verified_at, None);
}

pub(crate) async fn tenant_offboarding_keeps_history_and_drops_the_credential(store: &Store) {
    let keep = store.insert_tenant(new_tenant(&guid(1), "Keep", &["x"])).await.unwrap();
    let gone = store.insert_tenant(new_tenant(&guid(2), "Gone", &["x", "y"])).await.unwrap();
    let mut v = verification(TenantStatus::NotReady, LicenceLevel::None, 5);
    v.default_domain = Some("gone.example".into());
    store.record_verification(&gone.id, v).await.unwrap();
    assert_eq!(store.all_credentials().await.unwrap().len(), 2);

    let off = store.offboard_tenant(&gone.id, t(50)).await.unwrap().expect("offboarded");
    assert_eq!(off.status, TenantStatus::Offboarded);
    assert_eq!(off.status_reason, None);
    assert_eq!(off.offboarded_at, Some(t(50)));
    assert_eq!(off.updated_at, t(50));
    assert_eq!(off.credential, None);
    assert_eq!(off.tags, vec!["x", "y"]);
    assert_eq!(off.readiness, Some(serde_json::json!({ "checked": 5 })));
    assert_eq!(off.licence, LicenceLevel::None);
    assert_eq!(off.default_domain.as_deref(), Some("gone.example"));
    assert_eq!(store.get_tenant(&gone.id).await.unwrap().unwrap(), off);

    // The credential row itself is gone.
    assert!(store.tenant_credential(&gone.id).await.unwrap().is_none());
    let creds = store.all_credentials().await.unwrap();
    assert_eq!(creds.len(), 1);
    assert_eq!(creds[0].tenant_id, keep.id);

    // Excluded from default lists and counts, from lookups by Entra reference, and from
    // the re-verification scan.
    let listed = store.list_tenants(&all(10)).await.unwrap();
    assert_eq!(listed.iter().map(|t| &t.id).collect::<Vec<_>>(), vec![&keep.id]);
    let tagged = TenantFilter { tag: Some("y".into()), ..all(10) };
    assert_eq!(store.count_tenants(&tagged).await.unwrap(), 0);
    assert!(store.find_active_tenant(&guid(2)).await.unwrap().is_none());
    assert_eq!(store.tenants_due_for_verification(t(1000), 10).await.unwrap(), vec![keep.id]);

    // Offboarding twice, or an unknown tenant, does nothing.
    assert!(store.offboard_tenant(&gone.id, t(60)).await.unwrap().is_none());
    assert!(store.offboard_tenant(&TenantId::new(), t(60)).await.unwrap().is_none());
    assert_eq!(store.get_tenant(&gone.id).await.unwrap().unwrap().offboarded_at, Some(t(50)));
}

pub(crate) async fn portal_credentials_are_one_per_tenant_resealed_fenced_and_offboarded(
    store: &Store,
) {
    let one = store.insert_tenant(new_tenant(&guid(1), "One", &[])).await.unwrap();
    let two = store.insert_tenant(new_tenant(&guid(2), "Two", &[])).await.unwrap();
    let portal = |tenant: &TenantId, sealed: &str, at: i64| sspr_store::PortalCredential {
        id: CredentialId::new(),
        tenant_id: tenant.clone(),
        client_id: Some("portal-client".into()),
        sealed: sealed.into(),
        key_id: "k1".into(),
        created_at: t(at),
        updated_at: t(at),
    };
    assert!(store.portal_credential(&one.id).await.unwrap().is_none());
    let first = portal(&one.id, "v1:k1:first", 10);
    assert!(store.put_portal_credential(&first).await.unwrap());
    assert_eq!(store.portal_credential(&one.id).await.unwrap(), Some(first.clone()));
    // The app-only credential is untouched by the second credential.
    assert_eq!(store.all_credentials().await.unwrap().len(), 2);

    // Putting again replaces: still one per tenant.
    let second = portal(&one.id, "v1:k1:second", 20);
    assert!(store.put_portal_credential(&second).await.unwrap());
    assert_eq!(store.portal_credential(&one.id).await.unwrap(), Some(second.clone()));
    assert!(store.put_portal_credential(&portal(&two.id, "v1:k1:two", 20)).await.unwrap());
    assert_eq!(store.all_portal_credentials().await.unwrap().len(), 2);

    // Re-sealing is fenced on the old value: a stale value changes nothing.
    assert!(
        !store
            .reseal_portal_credential(&second.id, "v1:k1:first", "v1:k2:x", "k2", t(30))
            .await
            .unwrap()
    );
    assert!(
        store
            .reseal_portal_credential(&second.id, "v1:k1:second", "v1:k2:new", "k2", t(30))
            .await
            .unwrap()
    );
    let now = store.portal_credential(&one.id).await.unwrap().unwrap();
    assert_eq!((now.sealed.as_str(), now.key_id.as_str()), ("v1:k2:new", "k2"));
    assert_eq!((now.created_at, now.updated_at), (t(20), t(30)));

    // Deleting, and offboarding, remove it; an offboarded tenant cannot get one.
    assert!(store.delete_portal_credential(&two.id).await.unwrap());
    assert!(!store.delete_portal_credential(&two.id).await.unwrap());
    store.offboard_tenant(&one.id, t(40)).await.unwrap().expect("offboarded");
    assert!(store.portal_credential(&one.id).await.unwrap().is_none());
    assert!(!store.put_portal_credential(&portal(&one.id, "v1:k1:late", 50)).await.unwrap());
    assert!(!store.put_portal_credential(&portal(&TenantId::new(), "v1:k1:x", 50)).await.unwrap());
    assert!(store.all_portal_credentials().await.unwrap().is_empty());
}

pub(crate) async fn tenant_credential_is_replaced_atomically(store: &Store) {
    let tenant = store.insert_tenant(new_tenant(&guid(1), "One", &[])).await.unwrap();
    let other = store.insert_tenant(new_tenant(&guid(2), "Two", &[])).await.unwrap();
    let old_id = tenant.credential.clone().unwrap().id;

    let mut new = cred("rotated", 30);
    new.kind = "certificate".into();
    new.thumbprint_s256 = Some("t2".into());
    new.certificate_pem = Some("PEM".into());
    new.key_id = "k2".into();
    assert!(store.replace_credential(&tenant.id, new.clone()).await.unwrap());

    let stored = store.tenant_credential(&tenant.id).await.unwrap().unwrap();
    assert_eq!(stored.summary.id, new.id);
    assert_eq!(stored.summary.kind, "certificate");
    assert_eq!(stored.summary.thumbprint_s256.as_deref(), Some("t2"));
    assert_eq!(stored.summary.key_id, "k2");
    assert_eq!(stored.summary.created_at, t(30));
    assert_eq!(stored.certificate_pem.as_deref(), Some("PEM"));
    assert_eq!(stored.sealed, "v1:k1:rotated");
    let ids: Vec<CredentialId> =
        store.all_credentials().await.unwrap().into_iter().map(|c| c.summary.id).collect();
    assert!(!ids.contains(&old_id), "the old credential is gone");
    assert!(ids.contains(&new.id));
    assert_eq!(ids.len(), 2);
    let got = store.get_tenant(&tenant.id).await.unwrap().unwrap();
    assert_eq!(got.credential.as_ref(), Some(&stored.summary));
    assert_eq!(got.updated_at, t(30));

    // A failed replacement (the new id is taken) leaves the current credential in place.
    let mut clash = cred("clash", 40);
    clash.id = other.credential.clone().unwrap().id;
    let err = store.replace_credential(&tenant.id, clash).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "credential" }), "got {err:?}");
    let still = store.tenant_credential(&tenant.id).await.unwrap().unwrap();
    assert_eq!(still.summary.id, new.id);
    assert_eq!(store.get_tenant(&tenant.id).await.unwrap().unwrap().updated_at, t(30));

    // Unknown and offboarded tenants get no credential.
    assert!(!store.replace_credential(&TenantId::new(), cred("x", 50)).await.unwrap());
    store.offboard_tenant(&tenant.id, t(60)).await.unwrap().unwrap();
    assert!(!store.replace_credential(&tenant.id, cred("y", 70)).await.unwrap());
    assert!(store.tenant_credential(&tenant.id).await.unwrap().is_none());
    assert_eq!(store.all_credentials().await.unwrap().len(), 1);
}

pub(crate) async fn credentials_rewrap_skips_rows_changed_meanwhile(store: &Store) {
    let mut tenants = Vec::new();
    for i in 0..3 {
        tenants.push(store.insert_tenant(new_tenant(&guid(i), &format!("T{i}"), &[])).await);
    }
    let tenants: Vec<Tenant> = tenants.into_iter().map(Result::unwrap).collect();
    let creds = store.all_credentials().await.unwrap();
    assert_eq!(creds.len(), 3);
    assert!(creds.windows(2).all(|w| w[0].summary.id < w[1].summary.id), "ordered by id");

    // The plan is made from a snapshot; then tenant 1's credential is replaced.
    let plan: Vec<(CredentialId, String, String, String)> = creds
        .iter()
        .map(|c| {
            let new = c.sealed.replace("v1:k1:", "v1:k2:");
            (c.summary.id.clone(), c.sealed.clone(), new, "k2".to_owned())
        })
        .collect();
    let replaced_by = creds.iter().position(|c| c.tenant_id == tenants[1].id).unwrap();
    store.replace_credential(&tenants[1].id, cred("fresh", 10)).await.unwrap();
    // Tenant 2's sealed value changes in place under the same id: a rewrap by someone else.
    let changed = creds.iter().position(|c| c.tenant_id == tenants[2].id).unwrap();
    let concurrent = vec![(
        creds[changed].summary.id.clone(),
        creds[changed].sealed.clone(),
        "v1:k3:other".to_owned(),
        "k3".to_owned(),
    )];
    assert_eq!(store.rewrap_credentials(&concurrent).await.unwrap(), 1);

    assert_eq!(store.rewrap_credentials(&plan).await.unwrap(), 1);
    let by_tenant = |i: usize| {
        let id = tenants[i].id.clone();
        async move { store.tenant_credential(&id).await.unwrap().unwrap() }
    };
    let t0 = by_tenant(0).await;
    assert_eq!((t0.sealed.as_str(), t0.summary.key_id.as_str()), ("v1:k2:T0", "k2"));
    let t1 = by_tenant(1).await;
    assert_eq!((t1.sealed.as_str(), t1.summary.key_id.as_str()), ("v1:k1:fresh", "k1"));
    assert_ne!(t1.summary.id, creds[replaced_by].summary.id);
    let t2 = by_tenant(2).await;
    assert_eq!((t2.sealed.as_str(), t2.summary.key_id.as_str()), ("v1:k3:other", "k3"));

    // Applying the same plan again changes nothing; an empty plan is fine.
    assert_eq!(store.rewrap_credentials(&plan).await.unwrap(), 0);
    assert_eq!(store.rewrap_credentials(&[]).await.unwrap(), 0);
}

pub(crate) async fn tenants_due_for_verification_never_verified_first_then_oldest(store: &Store) {
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            store.insert_tenant(new_tenant(&guid(i), &format!("T{i}"), &[])).await.unwrap().id,
        );
    }
    // ids[0] and ids[3] are never verified; the rest at various times; ids[5] is offboarded.
    let verify = |i: usize, at: i64| {
        let id = ids[i].clone();
        async move {
            let v = verification(TenantStatus::Ready, LicenceLevel::P1, at);
            assert!(store.record_verification(&id, v).await.unwrap());
        }
    };
    verify(1, 300).await;
    verify(2, 100).await;
    verify(4, 200).await;
    verify(5, 50).await;
    store.offboard_tenant(&ids[5], t(400)).await.unwrap().unwrap();

    let due = store.tenants_due_for_verification(t(250), 10).await.unwrap();
    assert_eq!(due, vec![ids[0].clone(), ids[3].clone(), ids[2].clone(), ids[4].clone()]);
    let due = store.tenants_due_for_verification(t(1000), 10).await.unwrap();
    assert_eq!(
        due,
        vec![ids[0].clone(), ids[3].clone(), ids[2].clone(), ids[4].clone(), ids[1].clone()]
    );
    let due = store.tenants_due_for_verification(t(1000), 3).await.unwrap();
    assert_eq!(due, vec![ids[0].clone(), ids[3].clone(), ids[2].clone()]);
    // Verified exactly at the threshold is not due.
    let due = store.tenants_due_for_verification(t(100), 10).await.unwrap();
    assert_eq!(due, vec![ids[0].clone(), ids[3].clone()]);
}

// ---- The job queue ----

const LEASE: std::time::Duration = std::time::Duration::from_secs(30);

fn new_job(run_at: i64, unique_key: Option<&str>) -> sspr_store::NewJob {
    sspr_store::NewJob {
        id: sspr_domain::JobId::new(),
        kind: "rollout.tenant_step".into(),
        queue: "default".into(),
        payload: serde_json::json!({ "step": run_at }),
        run_at: t(run_at),
        max_attempts: 2,
        tenant_id: Some("ten_x".into()),
        unique_key: unique_key.map(str::to_owned),
        created_at: t(0),
    }
}

pub(crate) async fn jobs_enqueue_is_idempotent_by_unique_key(store: &Store) {
    use sspr_store::JobState;
    let (first, created) = store.enqueue_job(new_job(0, Some("tenant-x/step-1"))).await.unwrap();
    assert!(created);
    assert_eq!(first.state, JobState::Queued);
    assert_eq!(first.attempt, 0);
    assert_eq!(first.payload, serde_json::json!({ "step": 0 }));
    assert_eq!(store.get_job(&first.id).await.unwrap().as_ref(), Some(&first));
    // Same key while queued: the existing job, not a new one.
    let (again, created) = store.enqueue_job(new_job(5, Some("tenant-x/step-1"))).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    // Still deduplicated while running.
    let claimed = store.claim_jobs("default", "w1", t(1), LEASE, 10).await.unwrap();
    assert_eq!(claimed.len(), 1);
    let (again, created) = store.enqueue_job(new_job(5, Some("tenant-x/step-1"))).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, first.id);
    assert_eq!(again.state, JobState::Running);
    // Jobs without a key never clash, and other keys do not clash.
    assert!(store.enqueue_job(new_job(0, None)).await.unwrap().1);
    assert!(store.enqueue_job(new_job(0, None)).await.unwrap().1);
    assert!(store.enqueue_job(new_job(0, Some("other"))).await.unwrap().1);
    // Once the job finished, the key is free again.
    assert!(store.complete_job(&first.id, 1, t(2)).await.unwrap());
    let (fresh, created) = store.enqueue_job(new_job(3, Some("tenant-x/step-1"))).await.unwrap();
    assert!(created);
    assert_ne!(fresh.id, first.id);
    let counts = store.count_jobs_by_state("default").await.unwrap();
    assert_eq!(counts, BTreeMap::from([("queued".into(), 4), ("succeeded".into(), 1)]));
}

pub(crate) async fn jobs_claim_returns_each_job_once_across_concurrent_claimers(store: &Store) {
    let mut ids = BTreeSet::new();
    for i in 0..100 {
        ids.insert(store.enqueue_job(new_job(i % 7, None)).await.unwrap().0.id);
    }
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let batch = store.claim_jobs("default", &worker, t(10), LEASE, 3).await.unwrap();
                if batch.is_empty() {
                    break;
                }
                for job in batch {
                    assert_eq!(job.claimed_by.as_deref(), Some(worker.as_str()));
                    assert_eq!(job.attempt, 1);
                    mine.push(job.id);
                }
                tokio::task::yield_now().await;
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: BTreeSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "a job was claimed twice");
    assert_eq!(unique, ids);
    let counts = store.count_jobs_by_state("default").await.unwrap();
    assert_eq!(counts, BTreeMap::from([("running".into(), 100)]));
}

pub(crate) async fn jobs_claim_in_run_at_order_and_not_before_run_at(store: &Store) {
    let late = store.enqueue_job(new_job(100, None)).await.unwrap().0;
    let early = store.enqueue_job(new_job(20, None)).await.unwrap().0;
    let mut other_queue = new_job(0, None);
    other_queue.queue = "other".into();
    store.enqueue_job(other_queue).await.unwrap();
    assert!(store.claim_jobs("default", "w", t(10), LEASE, 10).await.unwrap().is_empty());
    assert!(store.claim_jobs("default", "w", t(50), LEASE, 0).await.unwrap().is_empty());
    let claimed = store.claim_jobs("default", "w", t(100), LEASE, 10).await.unwrap();
    let ids: Vec<_> = claimed.iter().map(|j| j.id.clone()).collect();
    assert_eq!(ids, vec![early.id, late.id]);
    assert_eq!(claimed[0].lease_expires_at, Some(t(130)));
    assert_eq!(claimed[0].state, sspr_store::JobState::Running);
    assert_eq!(store.claim_jobs("other", "w", t(100), LEASE, 10).await.unwrap().len(), 1);
}

pub(crate) async fn jobs_outcomes_are_fenced_by_attempt(store: &Store) {
    use sspr_store::JobState;
    let job = store.enqueue_job(new_job(0, None)).await.unwrap().0;
    let first = store.claim_jobs("default", "w1", t(0), LEASE, 1).await.unwrap().remove(0);
    assert_eq!(first.attempt, 1);
    // A retryable failure requeues at retry_at, keeping the error.
    assert!(store.fail_job(&job.id, 1, t(5), "throttled", Some(t(60))).await.unwrap());
    let queued = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(queued.state, JobState::Queued);
    assert_eq!(queued.run_at, t(60));
    assert_eq!(queued.last_error.as_deref(), Some("throttled"));
    assert_eq!(queued.lease_expires_at, None);
    assert_eq!(queued.finished_at, None);
    // Attempt 1 is over: none of its writes count any more.
    assert!(!store.heartbeat_job(&job.id, 1, t(6), LEASE).await.unwrap());
    assert!(!store.complete_job(&job.id, 1, t(6)).await.unwrap());
    assert!(!store.fail_job(&job.id, 1, t(6), "late", None).await.unwrap());
    let second = store.claim_jobs("default", "w2", t(60), LEASE, 1).await.unwrap().remove(0);
    assert_eq!(second.attempt, 2);
    assert!(!store.complete_job(&job.id, 1, t(61)).await.unwrap());
    assert!(store.heartbeat_job(&job.id, 2, t(70), LEASE).await.unwrap());
    let beat = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(beat.lease_expires_at, Some(t(100)));
    // The last attempt: a retryable failure still fails for good.
    assert!(store.fail_job(&job.id, 2, t(80), "throttled again", Some(t(200))).await.unwrap());
    let failed = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.finished_at, Some(t(80)));
    assert_eq!(failed.run_at, t(60));
    assert_eq!(failed.last_error.as_deref(), Some("throttled again"));
    assert!(!store.complete_job(&job.id, 2, t(81)).await.unwrap());
    // A permanent failure (no retry_at) fails at once even with attempts left.
    let other = store.enqueue_job(new_job(0, None)).await.unwrap().0;
    store.claim_jobs("default", "w", t(90), LEASE, 1).await.unwrap();
    assert!(store.fail_job(&other.id, 1, t(91), "bad payload", None).await.unwrap());
    assert_eq!(store.get_job(&other.id).await.unwrap().unwrap().state, JobState::Failed);
}

pub(crate) async fn jobs_snooze_requeues_without_spending_an_attempt_and_wake_brings_forward(
    store: &Store,
) {
    use sspr_store::JobState;
    let job = store.enqueue_job(new_job(0, Some("gate:a"))).await.unwrap().0;
    assert_eq!(job.max_attempts, 2);
    store.claim_jobs("default", "w1", t(0), LEASE, 1).await.unwrap();
    assert!(store.snooze_job(&job.id, 1, t(1), t(100)).await.unwrap());
    let snoozed = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(snoozed.state, JobState::Queued);
    assert_eq!(snoozed.run_at, t(100));
    assert_eq!(snoozed.max_attempts, 3);
    assert_eq!(snoozed.lease_expires_at, None);
    // The snoozed attempt is over: its writes are fenced off.
    assert!(!store.snooze_job(&job.id, 1, t(2), t(50)).await.unwrap());
    assert!(!store.complete_job(&job.id, 1, t(2)).await.unwrap());
    // Still the one job with its key.
    let (same, created) = store.enqueue_job(new_job(0, Some("gate:a"))).await.unwrap();
    assert!(!created);
    assert_eq!(same.id, job.id);
    assert!(store.claim_jobs("default", "w1", t(10), LEASE, 1).await.unwrap().is_empty());
    // A wake-up brings it forward, only ever earlier.
    assert!(store.wake_job("gate:a", t(10)).await.unwrap());
    assert!(!store.wake_job("gate:a", t(20)).await.unwrap());
    assert!(!store.wake_job("no such key", t(10)).await.unwrap());
    let again = store.claim_jobs("default", "w2", t(10), LEASE, 1).await.unwrap().remove(0);
    assert_eq!(again.attempt, 2);
    // A retryable failure now still has an attempt left, thanks to the snooze.
    assert!(store.fail_job(&job.id, 2, t(11), "throttled", Some(t(20))).await.unwrap());
    assert_eq!(store.get_job(&job.id).await.unwrap().unwrap().state, JobState::Queued);
    // Running jobs are not woken.
    store.claim_jobs("default", "w2", t(20), LEASE, 1).await.unwrap();
    assert!(!store.wake_job("gate:a", t(15)).await.unwrap());
}

pub(crate) async fn jobs_expired_leases_are_reaped(store: &Store) {
    use sspr_store::JobState;
    let job = store.enqueue_job(new_job(0, None)).await.unwrap().0;
    store.claim_jobs("default", "w1", t(0), LEASE, 1).await.unwrap();
    // Not yet expired, and a heartbeat moves the expiry.
    assert_eq!(store.reap_expired_jobs("default", t(29)).await.unwrap(), 0);
    assert!(store.heartbeat_job(&job.id, 1, t(20), LEASE).await.unwrap());
    assert_eq!(store.reap_expired_jobs("default", t(49)).await.unwrap(), 0);
    assert_eq!(store.reap_expired_jobs("default", t(50)).await.unwrap(), 1);
    let rescued = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(rescued.state, JobState::Queued);
    assert_eq!(rescued.run_at, t(50));
    assert_eq!(rescued.last_error.as_deref(), Some("lease expired"));
    assert!(!store.complete_job(&job.id, 1, t(51)).await.unwrap());
    // The second and last attempt expires too: the job fails.
    let again = store.claim_jobs("default", "w2", t(50), LEASE, 1).await.unwrap().remove(0);
    assert_eq!(again.attempt, 2);
    assert_eq!(store.reap_expired_jobs("default", t(100)).await.unwrap(), 1);
    let failed = store.get_job(&job.id).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.finished_at, Some(t(100)));
    assert_eq!(failed.last_error.as_deref(), Some("lease expired"));
    assert_eq!(store.reap_expired_jobs("default", t(1000)).await.unwrap(), 0);

    // Only the jobs of the queue asked for.
    let job = store.enqueue_job(new_job(1, None)).await.unwrap().0;
    store.claim_jobs("default", "w3", t(1000), LEASE, 1).await.unwrap();
    assert_eq!(store.reap_expired_jobs("webhooks", t(5000)).await.unwrap(), 0);
    assert_eq!(store.get_job(&job.id).await.unwrap().unwrap().state, JobState::Running);
    assert_eq!(store.reap_expired_jobs("default", t(5000)).await.unwrap(), 1);
}

pub(crate) async fn jobs_claim_plan_uses_the_claim_index(store: &Store) {
    for i in 0..50 {
        store.enqueue_job(new_job(i, None)).await.unwrap();
    }
    let plan = store.explain_claim_jobs().await.unwrap();
    let text = plan.join("\n");
    match store.backend() {
        sspr_store::Backend::Sqlite => {
            // The subquery that picks the jobs searches the (state, run_at, id) index; a bare
            // `SCAN jobs` would read every finished job on each claim.
            assert!(
                plan.iter().any(|l| l.contains("USING") && l.contains("jobs_state_run_at_idx")),
                "{text}"
            );
            assert!(!plan.iter().any(|l| l.trim() == "SCAN jobs"), "{text}");
            assert!(!text.contains("TEMP B-TREE"), "the index must give the order: {text}");
        }
        sspr_store::Backend::Postgres => {
            assert!(text.contains("jobs_queued_idx"), "{text}");
        }
    }
}

// ---- Rollouts ----

/// A rollout over `tenants`, given as `(tenant id, wave)`; positions follow the slice order
/// within each wave.
fn new_rollout(tenants: &[(&str, i32)], key: Option<&str>) -> sspr_store::NewRollout {
    let mut positions = BTreeMap::<i32, i32>::new();
    let tenants = tenants
        .iter()
        .map(|(tenant, wave)| {
            let position = positions.entry(*wave).or_insert(0);
            *position += 1;
            sspr_store::NewRolloutTenant {
                tenant_id: (*tenant).to_owned(),
                wave: *wave,
                position: *position,
            }
        })
        .collect();
    sspr_store::NewRollout {
        id: sspr_domain::RolloutId::new(),
        name: "SSPR for everyone".into(),
        spec: serde_json::json!({ "methods": { "sms": "enabled" }, "scope": "group" }),
        wave_count: 2,
        created_by: "key_ops".into(),
        idempotency_key: key.map(str::to_owned),
        created_at: t(0),
        tenants,
    }
}

fn event(at: i64, tenant: Option<&str>, kind: &str) -> sspr_store::NewEvent {
    sspr_store::NewEvent {
        tenant_id: tenant.map(str::to_owned),
        at: t(at),
        actor: "engine".into(),
        kind: kind.into(),
        from_state: None,
        to_state: None,
        detail: serde_json::json!({ "at": at }),
    }
}

fn move_to(state: &str, at: i64) -> sspr_store::TenantUpdate {
    sspr_store::TenantUpdate {
        to_state: state.into(),
        paused_from: None,
        reason: None,
        last_error: None,
        scope_group_id: None,
        gate_entered_at: None,
        at: t(at),
    }
}

fn set_of(ids: &[&str]) -> BTreeSet<String> {
    ids.iter().map(|s| (*s).to_owned()).collect()
}

async fn all_events(store: &Store, id: &sspr_domain::RolloutId) -> Vec<sspr_store::RolloutEvent> {
    store.list_rollout_events(id, None, None, None, 1000).await.unwrap()
}

pub(crate) async fn rollout_round_trips_with_pending_tenants_and_a_created_event(store: &Store) {
    let new = new_rollout(&[("ten_a", 0), ("ten_b", 1), ("ten_c", 1)], None);
    let created = store.insert_rollout(new.clone()).await.unwrap();
    assert_eq!(created.id, new.id);
    assert_eq!(created.name, new.name);
    assert_eq!(created.spec, new.spec);
    assert_eq!(created.state, "running");
    assert_eq!(created.state_reason, None);
    assert_eq!((created.current_wave, created.wave_count), (0, 2));
    assert_eq!(created.created_by, "key_ops");
    assert_eq!(created.idempotency_key, None);
    assert_eq!((created.created_at, created.updated_at, created.finished_at), (t(0), t(0), None));
    assert_eq!(store.get_rollout(&created.id).await.unwrap().as_ref(), Some(&created));
    assert!(store.get_rollout(&sspr_domain::RolloutId::new()).await.unwrap().is_none());

    let tenants =
        store.list_rollout_tenants(&created.id, None, None, None, None, 100).await.unwrap();
    let placed: Vec<_> =
        tenants.iter().map(|t| (t.tenant_id.as_str(), t.wave, t.position)).collect();
    assert_eq!(placed, vec![("ten_a", 0, 1), ("ten_b", 1, 1), ("ten_c", 1, 2)]);
    for tenant in &tenants {
        assert_eq!(tenant.rollout_id, created.id);
        assert_eq!(tenant.state, "pending");
        assert_eq!(tenant.updated_at, t(0));
        assert_eq!(
            (&tenant.paused_from, &tenant.reason, &tenant.last_error, &tenant.scope_group_id),
            (&None, &None, &None, &None)
        );
        assert_eq!((tenant.gate_entered_at, tenant.approved_at), (None, None));
    }
    let one = store.get_rollout_tenant(&created.id, "ten_b").await.unwrap().unwrap();
    assert_eq!(one, tenants[1]);
    assert!(store.get_rollout_tenant(&created.id, "ten_z").await.unwrap().is_none());

    let events = all_events(store, &created.id).await;
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!((e.kind.as_str(), e.actor.as_str(), e.at), ("created", "key_ops", t(0)));
    assert_eq!(e.tenant_id, None);
    assert_eq!(e.rollout_id, created.id);
    assert_eq!(e.to_state.as_deref(), Some("running"));

    // A tenant listed twice is refused, and nothing of that rollout is left behind.
    let twice = new_rollout(&[("ten_a", 0), ("ten_a", 1)], None);
    let err = store.insert_rollout(twice.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "rollout tenant" }), "got {err:?}");
    assert!(store.get_rollout(&twice.id).await.unwrap().is_none());
    assert!(all_events(store, &twice.id).await.is_empty());
}

pub(crate) async fn rollout_tenants_page_by_wave_and_position(store: &Store) {
    // Wave 1 is listed before wave 2 whatever the tenant ids; within a wave, by position.
    let new = new_rollout(
        &[("ten_z", 1), ("ten_y", 1), ("ten_b", 2), ("ten_x", 1), ("ten_a", 2), ("ten_0", 0)],
        None,
    );
    let id = store.insert_rollout(new).await.unwrap().id;
    let order = ["ten_0", "ten_z", "ten_y", "ten_x", "ten_b", "ten_a"];
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            store.list_rollout_tenants(&id, None, None, None, cursor.as_deref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        cursor = page.last().map(|t| t.tenant_id.clone());
        seen.extend(page.into_iter().map(|t| t.tenant_id));
    }
    assert_eq!(seen, order);
    // A tenant changing state does not move it in the order.
    assert!(
        store
            .transition_rollout_tenant(
                &id,
                "ten_y",
                "pending",
                move_to("preflight", 1),
                event(1, Some("ten_y"), "transition")
            )
            .await
            .unwrap()
    );
    let page = store.list_rollout_tenants(&id, None, None, None, Some("ten_z"), 2).await.unwrap();
    assert_eq!(page.iter().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), ["ten_y", "ten_x"]);
    // Filters: wave, state, reach; an unknown cursor gives an empty page.
    let wave1 = store.list_rollout_tenants(&id, Some(1), None, None, None, 10).await.unwrap();
    assert_eq!(wave1.len(), 3);
    let preflight =
        store.list_rollout_tenants(&id, None, Some("preflight"), None, None, 10).await.unwrap();
    assert_eq!(preflight.len(), 1);
    assert_eq!(preflight[0].tenant_id, "ten_y");
    let reach = set_of(&["ten_a", "ten_x", "ten_other"]);
    let within = store.list_rollout_tenants(&id, None, None, Some(&reach), None, 10).await.unwrap();
    assert_eq!(within.iter().map(|t| t.tenant_id.as_str()).collect::<Vec<_>>(), ["ten_x", "ten_a"]);
    let none = store
        .list_rollout_tenants(&id, None, None, Some(&BTreeSet::new()), None, 10)
        .await
        .unwrap();
    assert!(none.is_empty());
    let lost =
        store.list_rollout_tenants(&id, None, None, None, Some("ten_nope"), 10).await.unwrap();
    assert!(lost.is_empty());
}

pub(crate) async fn rollout_idempotency_key_conflicts_and_is_found(store: &Store) {
    let first = store.insert_rollout(new_rollout(&[("ten_a", 0)], Some("idem-1"))).await.unwrap();
    assert_eq!(first.idempotency_key.as_deref(), Some("idem-1"));
    let again = new_rollout(&[("ten_b", 0)], Some("idem-1"));
    let err = store.insert_rollout(again.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "rollout" }), "got {err:?}");
    assert!(store.get_rollout(&again.id).await.unwrap().is_none());
    let found = store.find_rollout_by_idempotency_key("idem-1").await.unwrap();
    assert_eq!(found.as_ref(), Some(&first));
    assert!(store.find_rollout_by_idempotency_key("idem-2").await.unwrap().is_none());
    // Rollouts without a key never clash; the same id does.
    store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap();
    store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap();
    let mut same_id = new_rollout(&[("ten_a", 0)], Some("idem-3"));
    same_id.id = first.id.clone();
    let err = store.insert_rollout(same_id).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "rollout" }), "got {err:?}");
    assert!(store.find_rollout_by_idempotency_key("idem-3").await.unwrap().is_none());
}

pub(crate) async fn rollout_list_newest_first_with_cursor_and_within(store: &Store) {
    use sspr_store::RolloutFilter;
    let mut ids = Vec::new();
    for i in 0..5 {
        let tenants: &[(&str, i32)] = match i {
            0 => &[("ten_a", 0), ("ten_b", 1)],
            1 => &[("ten_b", 0)],
            2 => &[("ten_c", 0)],
            3 => &[("ten_a", 0), ("ten_c", 1)],
            _ => &[("ten_d", 0)],
        };
        ids.push(store.insert_rollout(new_rollout(tenants, None)).await.unwrap().id);
    }
    let mut newest_first = ids.clone();
    newest_first.sort();
    newest_first.reverse();
    let list = |f: RolloutFilter| async move {
        store.list_rollouts(&f).await.unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>()
    };
    assert_eq!(list(RolloutFilter { limit: 100, ..Default::default() }).await, newest_first);

    // Paging: no gaps, no repeats.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            list(RolloutFilter { after_id: cursor.clone(), limit: 2, ..Default::default() }).await;
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        cursor = page.last().map(|id| id.to_string());
        seen.extend(page);
    }
    assert_eq!(seen, newest_first);

    // A restricted key sees the rollouts with at least one of its tenants.
    let reach = |ids: &[&str]| Some(set_of(ids));
    let got =
        list(RolloutFilter { within: reach(&["ten_a"]), limit: 100, ..Default::default() }).await;
    assert_eq!(got, vec![ids[3].clone(), ids[0].clone()]);
    let got = list(RolloutFilter {
        within: reach(&["ten_b", "ten_d", "ten_x"]),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(got, vec![ids[4].clone(), ids[1].clone(), ids[0].clone()]);
    let got = list(RolloutFilter {
        within: reach(&["ten_a"]),
        after_id: Some(ids[3].to_string()),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(got, vec![ids[0].clone()]);
    assert!(
        list(RolloutFilter { within: reach(&["ten_x"]), limit: 100, ..Default::default() })
            .await
            .is_empty()
    );
    assert!(
        list(RolloutFilter { within: Some(BTreeSet::new()), limit: 100, ..Default::default() })
            .await
            .is_empty()
    );

    // By state.
    let cancel =
        sspr_store::NewEvent { to_state: Some("cancelled".into()), ..event(5, None, "state") };
    assert!(
        store.set_rollout_state(&ids[2], &["running"], "cancelled", None, cancel).await.unwrap()
    );
    let got =
        list(RolloutFilter { state: Some("cancelled".into()), limit: 100, ..Default::default() })
            .await;
    assert_eq!(got, vec![ids[2].clone()]);
    let got =
        list(RolloutFilter { state: Some("running".into()), limit: 100, ..Default::default() })
            .await;
    assert_eq!(got.len(), 4);
}

pub(crate) async fn progress_aggregates_count_states_jobs_and_finish_times(store: &Store) {
    let active = store
        .insert_rollout(new_rollout(&[("ten_a", 0), ("ten_b", 1), ("ten_c", 1)], None))
        .await
        .unwrap()
        .id;
    let done = store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap().id;
    let step = |id: &sspr_domain::RolloutId,
                tenant: &'static str,
                from: &'static str,
                to: &'static str,
                at: i64| {
        let id = id.clone();
        async move {
            assert!(
                store
                    .transition_rollout_tenant(
                        &id,
                        tenant,
                        from,
                        move_to(to, at),
                        event(at, Some(tenant), to)
                    )
                    .await
                    .unwrap()
            );
        }
    };
    step(&active, "ten_a", "pending", "completed", 10).await;
    step(&active, "ten_b", "pending", "failed", 20).await;
    step(&done, "ten_a", "pending", "completed", 5).await;
    assert!(
        store
            .set_rollout_state(&done, &["running"], "completed", None, event(6, None, "completed"))
            .await
            .unwrap()
    );

    let by_state = store.count_rollouts_by_state(None).await.unwrap();
    assert_eq!(by_state, BTreeMap::from([("completed".into(), 1), ("running".into(), 1)]));
    let only_c: BTreeSet<String> = set_of(&["ten_c"]);
    assert_eq!(
        store.count_rollouts_by_state(Some(&only_c)).await.unwrap(),
        BTreeMap::from([("running".into(), 1)])
    );
    // Tenants of active rollouts only: the completed rollout's tenant is not counted.
    let tenants = store.count_active_rollout_tenants_by_state(None).await.unwrap();
    assert_eq!(
        tenants,
        BTreeMap::from([("completed".into(), 1), ("failed".into(), 1), ("pending".into(), 1)])
    );
    assert_eq!(
        store.count_active_rollout_tenants_by_state(Some(&only_c)).await.unwrap(),
        BTreeMap::from([("pending".into(), 1)])
    );

    let stats = store.rollout_finish_stats(&active, None, t(15)).await.unwrap();
    assert_eq!(
        stats,
        sspr_store::FinishStats { finished: 2, finished_since: 1, last_finished_at: Some(t(20)) }
    );
    let none = store.rollout_finish_stats(&active, Some(&only_c), t(0)).await.unwrap();
    assert_eq!(none, sspr_store::FinishStats::default());

    store.enqueue_job(new_job(1, None)).await.unwrap();
    store.enqueue_job(new_job(2, None)).await.unwrap();
    let mut other = new_job(3, None);
    other.kind = "report.refresh".into();
    store.enqueue_job(other).await.unwrap();
    let jobs = store.count_jobs_by_kind_and_state("default").await.unwrap();
    assert_eq!(
        jobs,
        BTreeMap::from([
            (("report.refresh".into(), "queued".into()), 1),
            (("rollout.tenant_step".into(), "queued".into()), 2),
        ])
    );
    assert!(store.count_jobs_by_kind_and_state("other").await.unwrap().is_empty());
}

pub(crate) async fn idempotency_keys_claim_replay_mismatch_expire_and_take_over(store: &Store) {
    use sspr_store::{IdempotencyClaim, IdempotentRequest, StoredAnswer};
    let day = TimeDelta::hours(24);
    let abandon = TimeDelta::minutes(5);
    let req = |key: &str, hash: &str| IdempotentRequest {
        api_key_id: "key_a".into(),
        key: key.into(),
        method: "POST".into(),
        path: "/v1/rollouts".into(),
        request_hash: hash.into(),
    };
    let claim = |r: IdempotentRequest, at: i64| async move {
        store.claim_idempotency_key(&r, t(at), day, abandon).await.unwrap()
    };
    assert_eq!(claim(req("k1", "h1"), 0).await, IdempotencyClaim::Claimed);
    // While the first runs, a retry is refused; another body is a mismatch.
    assert_eq!(claim(req("k1", "h1"), 1).await, IdempotencyClaim::InFlight);
    assert_eq!(claim(req("k1", "h2"), 1).await, IdempotencyClaim::Mismatch);
    let answer = StoredAnswer {
        status: 201,
        content_type: Some("application/json".into()),
        location: Some("/v1/rollouts/rol_1".into()),
        body: "{\"id\":\"rol_1\"}".into(),
        withheld: None,
    };
    store.complete_idempotency_key("key_a", "k1", &answer).await.unwrap();
    assert_eq!(claim(req("k1", "h1"), 2).await, IdempotencyClaim::Replay(answer.clone()));
    // Which fields were withheld (a secret the API layer stored as null) comes back too.
    assert_eq!(claim(req("k3", "h"), 2).await, IdempotencyClaim::Claimed);
    let withheld = StoredAnswer {
        body: "{\"key\":null,\"api_key\":{}}".into(),
        withheld: Some("key".into()),
        ..answer.clone()
    };
    store.complete_idempotency_key("key_a", "k3", &withheld).await.unwrap();
    assert_eq!(claim(req("k3", "h"), 3).await, IdempotencyClaim::Replay(withheld));
    assert_eq!(claim(req("k1", "h2"), 2).await, IdempotencyClaim::Mismatch);
    // Keys are per API key.
    let other = IdempotentRequest { api_key_id: "key_b".into(), ..req("k1", "h2") };
    assert_eq!(claim(other, 2).await, IdempotencyClaim::Claimed);
    // After a day the key is free again.
    assert_eq!(claim(req("k1", "h2"), 24 * 3600 + 1).await, IdempotencyClaim::Claimed);
    // An abandoned claim (its process died) is taken over; a released one is free at once.
    assert_eq!(claim(req("k2", "h"), 0).await, IdempotencyClaim::Claimed);
    assert_eq!(claim(req("k2", "h"), 299).await, IdempotencyClaim::InFlight);
    assert_eq!(claim(req("k2", "h"), 301).await, IdempotencyClaim::Claimed);
    store.release_idempotency_key("key_a", "k2").await.unwrap();
    assert_eq!(claim(req("k2", "h"), 302).await, IdempotencyClaim::Claimed);
    // Purging removes only expired records.
    assert_eq!(store.purge_idempotency_keys(t(3600)).await.unwrap(), 0);
    assert_eq!(store.purge_idempotency_keys(t(3 * 24 * 3600)).await.unwrap(), 4);
}

pub(crate) async fn rollout_tenant_counts_per_wave_and_state(store: &Store) {
    let new =
        new_rollout(&[("ten_a", 0), ("ten_b", 1), ("ten_c", 1), ("ten_d", 1), ("ten_e", 2)], None);
    let id = store.insert_rollout(new).await.unwrap().id;
    let other = store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap().id;
    for tenant in ["ten_b", "ten_c"] {
        let moved = store
            .transition_rollout_tenant(
                &id,
                tenant,
                "pending",
                move_to("preflight", 1),
                event(1, Some(tenant), "transition"),
            )
            .await
            .unwrap();
        assert!(moved);
    }
    assert!(
        store
            .transition_rollout_tenant(
                &id,
                "ten_c",
                "preflight",
                move_to("blocked", 2),
                event(2, Some("ten_c"), "transition")
            )
            .await
            .unwrap()
    );
    let counts = store.rollout_tenant_counts(&id, None).await.unwrap();
    assert_eq!(
        counts,
        vec![
            (0, "pending".to_owned(), 1),
            (1, "blocked".to_owned(), 1),
            (1, "pending".to_owned(), 1),
            (1, "preflight".to_owned(), 1),
            (2, "pending".to_owned(), 1),
        ]
    );
    let reach = set_of(&["ten_a", "ten_c", "ten_x"]);
    let counts = store.rollout_tenant_counts(&id, Some(&reach)).await.unwrap();
    assert_eq!(counts, vec![(0, "pending".to_owned(), 1), (1, "blocked".to_owned(), 1)]);
    assert!(store.rollout_tenant_counts(&id, Some(&BTreeSet::new())).await.unwrap().is_empty());
    let counts = store.rollout_tenant_counts(&other, None).await.unwrap();
    assert_eq!(counts, vec![(0, "pending".to_owned(), 1)]);
    let unknown = sspr_domain::RolloutId::new();
    assert!(store.rollout_tenant_counts(&unknown, None).await.unwrap().is_empty());
}

pub(crate) async fn rollout_reason_counts_group_blocked_and_failed_tenants(store: &Store) {
    let tenants = [("ten_a", 0), ("ten_b", 0), ("ten_c", 1), ("ten_d", 1), ("ten_e", 1)];
    let id = store.insert_rollout(new_rollout(&tenants, None)).await.unwrap().id;
    let other = store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap().id;
    let moves = [
        ("ten_a", "blocked", Some("license_missing")),
        ("ten_b", "blocked", Some("license_missing")),
        ("ten_c", "blocked", Some("consent_missing")),
        ("ten_d", "failed", None),
    ];
    for (at, (tenant, to, reason)) in moves.into_iter().enumerate() {
        let at = i64::try_from(at).unwrap() + 1;
        let update =
            sspr_store::TenantUpdate { reason: Some(reason.map(str::to_owned)), ..move_to(to, at) };
        let moved = store
            .transition_rollout_tenant(&id, tenant, "pending", update, event(at, Some(tenant), "t"))
            .await
            .unwrap();
        assert!(moved);
    }
    let s = |state: &str, reason: &str, n: u64| (state.to_owned(), reason.to_owned(), n);
    let counts = store.rollout_reason_counts(&id, &["blocked", "failed"], None).await.unwrap();
    assert_eq!(
        counts,
        vec![
            s("blocked", "consent_missing", 1),
            s("blocked", "license_missing", 2),
            s("failed", "unknown", 1),
        ]
    );
    let counts = store.rollout_reason_counts(&id, &["failed"], None).await.unwrap();
    assert_eq!(counts, vec![s("failed", "unknown", 1)]);
    let reach = set_of(&["ten_b", "ten_c", "ten_x"]);
    let counts = store.rollout_reason_counts(&id, &["blocked", "failed"], Some(&reach)).await;
    assert_eq!(
        counts.unwrap(),
        vec![s("blocked", "consent_missing", 1), s("blocked", "license_missing", 1)]
    );
    assert!(store.rollout_reason_counts(&id, &[], None).await.unwrap().is_empty());
    assert!(store.rollout_reason_counts(&other, &["blocked"], None).await.unwrap().is_empty());
}

pub(crate) async fn rollout_tenant_transitions_are_fenced(store: &Store) {
    let id =
        store.insert_rollout(new_rollout(&[("ten_a", 0), ("ten_b", 0)], None)).await.unwrap().id;
    let transition = |from: &str, to: &str, at: i64| sspr_store::NewEvent {
        from_state: Some(from.into()),
        to_state: Some(to.into()),
        ..event(at, Some("ten_a"), "transition")
    };
    let update = sspr_store::TenantUpdate {
        reason: Some(Some("pilot group created".into())),
        scope_group_id: Some(Some("grp-1".into())),
        gate_entered_at: Some(Some(t(10))),
        last_error: Some(Some("throttled once".into())),
        ..move_to("preflight", 10)
    };
    assert!(
        store
            .transition_rollout_tenant(
                &id,
                "ten_a",
                "pending",
                update.clone(),
                transition("pending", "preflight", 10)
            )
            .await
            .unwrap()
    );
    // The same move again: the tenant is no longer pending, nothing changes, no event.
    assert!(
        !store
            .transition_rollout_tenant(
                &id,
                "ten_a",
                "pending",
                move_to("blocked", 11),
                transition("pending", "blocked", 11)
            )
            .await
            .unwrap()
    );
    // Unknown tenant or rollout: not applied either.
    assert!(
        !store
            .transition_rollout_tenant(
                &id,
                "ten_z",
                "pending",
                move_to("preflight", 11),
                transition("pending", "preflight", 11)
            )
            .await
            .unwrap()
    );
    let a = store.get_rollout_tenant(&id, "ten_a").await.unwrap().unwrap();
    assert_eq!(a.state, "preflight");
    assert_eq!(a.reason.as_deref(), Some("pilot group created"));
    assert_eq!(a.scope_group_id.as_deref(), Some("grp-1"));
    assert_eq!(a.last_error.as_deref(), Some("throttled once"));
    assert_eq!(a.gate_entered_at, Some(t(10)));
    assert_eq!(a.updated_at, t(10));
    assert_eq!(a.paused_from, None);
    let b = store.get_rollout_tenant(&id, "ten_b").await.unwrap().unwrap();
    assert_eq!((b.state.as_str(), b.updated_at), ("pending", t(0)));

    // `None` leaves a field alone, `Some(None)` clears it, `Some(Some(_))` sets it.
    let pause = sspr_store::TenantUpdate {
        paused_from: Some(Some("preflight".into())),
        last_error: Some(None),
        gate_entered_at: Some(None),
        ..move_to("paused", 20)
    };
    assert!(
        store
            .transition_rollout_tenant(
                &id,
                "ten_a",
                "preflight",
                pause,
                transition("preflight", "paused", 20)
            )
            .await
            .unwrap()
    );
    let a = store.get_rollout_tenant(&id, "ten_a").await.unwrap().unwrap();
    assert_eq!(a.state, "paused");
    assert_eq!(a.paused_from.as_deref(), Some("preflight"));
    assert_eq!(a.last_error, None);
    assert_eq!(a.gate_entered_at, None);
    assert_eq!(a.reason.as_deref(), Some("pilot group created"));
    assert_eq!(a.scope_group_id.as_deref(), Some("grp-1"));
    assert_eq!(a.updated_at, t(20));

    // A state outside the tenant state machine is refused by the database.
    assert!(
        store
            .transition_rollout_tenant(
                &id,
                "ten_a",
                "paused",
                move_to("exploded", 30),
                transition("paused", "exploded", 30)
            )
            .await
            .is_err()
    );
    assert_eq!(store.get_rollout_tenant(&id, "ten_a").await.unwrap().unwrap().state, "paused");

    // Only the applied transitions left an event, in order.
    let events = all_events(store, &id).await;
    let kinds: Vec<_> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.from_state.as_deref(), e.to_state.as_deref(), e.at))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("created", None, Some("running"), t(0)),
            ("transition", Some("pending"), Some("preflight"), t(10)),
            ("transition", Some("preflight"), Some("paused"), t(20)),
        ]
    );
    assert_eq!(events[1].tenant_id.as_deref(), Some("ten_a"));
    assert_eq!(events[1].actor, "engine");
    assert_eq!(events[1].detail, serde_json::json!({ "at": 10 }));
}

pub(crate) async fn rollout_state_changes_are_fenced_and_set_finished_at(store: &Store) {
    let id = store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap().id;
    let change = |at: i64, to: &str| sspr_store::NewEvent {
        to_state: Some(to.into()),
        ..event(at, None, "state")
    };
    assert!(
        store
            .set_rollout_state(
                &id,
                &["running"],
                "paused",
                Some("failure budget spent"),
                change(10, "paused")
            )
            .await
            .unwrap()
    );
    let r = store.get_rollout(&id).await.unwrap().unwrap();
    assert_eq!(r.state, "paused");
    assert_eq!(r.state_reason.as_deref(), Some("failure budget spent"));
    assert_eq!((r.updated_at, r.finished_at), (t(10), None));
    // Fenced: the rollout is not running any more.
    assert!(
        !store
            .set_rollout_state(&id, &["running"], "completed", None, change(11, "completed"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .set_rollout_state(&id, &[], "completed", None, change(11, "completed"))
            .await
            .unwrap()
    );
    let unknown = sspr_domain::RolloutId::new();
    assert!(
        !store
            .set_rollout_state(&unknown, &["running"], "paused", None, change(11, "paused"))
            .await
            .unwrap()
    );
    // Resuming clears the reason.
    assert!(
        store
            .set_rollout_state(&id, &["paused", "running"], "running", None, change(20, "running"))
            .await
            .unwrap()
    );
    let r = store.get_rollout(&id).await.unwrap().unwrap();
    assert_eq!(
        (r.state.as_str(), r.state_reason.as_deref(), r.finished_at),
        ("running", None, None)
    );
    // Finishing sets finished_at.
    assert!(
        store
            .set_rollout_state(
                &id,
                &["running", "paused"],
                "completed",
                None,
                change(30, "completed")
            )
            .await
            .unwrap()
    );
    let r = store.get_rollout(&id).await.unwrap().unwrap();
    assert_eq!((r.state.as_str(), r.updated_at, r.finished_at), ("completed", t(30), Some(t(30))));
    // Rolling back a completed rollout: not finished while rolling back, finished once rolled back.
    assert!(
        store
            .set_rollout_state(
                &id,
                &["completed"],
                "rolling_back",
                Some("operator"),
                change(40, "rolling_back")
            )
            .await
            .unwrap()
    );
    assert_eq!(store.get_rollout(&id).await.unwrap().unwrap().finished_at, None);
    assert!(
        store
            .set_rollout_state(
                &id,
                &["rolling_back"],
                "rolled_back",
                None,
                change(50, "rolled_back")
            )
            .await
            .unwrap()
    );
    let r = store.get_rollout(&id).await.unwrap().unwrap();
    assert_eq!((r.state.as_str(), r.finished_at), ("rolled_back", Some(t(50))));
    // The database refuses a state outside the rollout state machine.
    assert!(
        store
            .set_rollout_state(&id, &["rolled_back"], "bogus", None, change(60, "bogus"))
            .await
            .is_err()
    );

    let states: Vec<_> =
        all_events(store, &id).await.into_iter().map(|e| e.to_state.unwrap_or_default()).collect();
    assert_eq!(
        states,
        ["running", "paused", "running", "completed", "rolling_back", "rolled_back"]
    );
}

pub(crate) async fn rollout_wave_advances_are_fenced(store: &Store) {
    let id =
        store.insert_rollout(new_rollout(&[("ten_a", 0), ("ten_b", 1)], None)).await.unwrap().id;
    assert!(store.advance_rollout_wave(&id, 0, 1, event(10, None, "wave_advanced")).await.unwrap());
    // A second advance from the same wave loses.
    assert!(
        !store.advance_rollout_wave(&id, 0, 1, event(11, None, "wave_advanced")).await.unwrap()
    );
    let r = store.get_rollout(&id).await.unwrap().unwrap();
    assert_eq!((r.current_wave, r.updated_at), (1, t(10)));
    assert!(store.advance_rollout_wave(&id, 1, 2, event(12, None, "wave_advanced")).await.unwrap());
    assert_eq!(store.get_rollout(&id).await.unwrap().unwrap().current_wave, 2);
    let unknown = sspr_domain::RolloutId::new();
    assert!(
        !store
            .advance_rollout_wave(&unknown, 0, 1, event(13, None, "wave_advanced"))
            .await
            .unwrap()
    );
    let advances: Vec<_> = all_events(store, &id)
        .await
        .into_iter()
        .filter(|e| e.kind == "wave_advanced")
        .map(|e| e.at)
        .collect();
    assert_eq!(advances, vec![t(10), t(12)]);
}

pub(crate) async fn rollout_approvals_are_idempotent(store: &Store) {
    let id = store
        .insert_rollout(new_rollout(
            &[("ten_a", 0), ("ten_b", 0), ("ten_c", 1), ("ten_d", 1)],
            None,
        ))
        .await
        .unwrap()
        .id;
    // Some tenants of one wave.
    let picked = vec!["ten_b".to_owned(), "ten_x".to_owned()];
    assert_eq!(
        store.approve_rollout_tenants(&id, Some(&picked), None, "key_boss", t(10)).await.unwrap(),
        1
    );
    assert_eq!(
        store.approve_rollout_tenants(&id, Some(&picked), None, "key_boss", t(11)).await.unwrap(),
        0
    );
    assert_eq!(
        store.approve_rollout_tenants(&id, Some(&[]), None, "key_boss", t(11)).await.unwrap(),
        0
    );
    let b = store.get_rollout_tenant(&id, "ten_b").await.unwrap().unwrap();
    assert_eq!(
        (b.approved_at, b.approved_by.as_deref(), b.updated_at),
        (Some(t(10)), Some("key_boss"), t(10))
    );
    assert_eq!(b.state, "pending", "approving does not move the state");
    // A whole wave: only the one not approved yet.
    assert_eq!(
        store.approve_rollout_tenants(&id, None, Some(0), "key_ops", t(20)).await.unwrap(),
        1
    );
    assert_eq!(
        store.approve_rollout_tenants(&id, None, Some(0), "key_ops", t(21)).await.unwrap(),
        0
    );
    let b = store.get_rollout_tenant(&id, "ten_b").await.unwrap().unwrap();
    assert_eq!(b.approved_by.as_deref(), Some("key_boss"), "an approval is never overwritten");
    let a = store.get_rollout_tenant(&id, "ten_a").await.unwrap().unwrap();
    assert_eq!((a.approved_at, a.approved_by.as_deref()), (Some(t(20)), Some("key_ops")));
    // Everything left.
    assert_eq!(store.approve_rollout_tenants(&id, None, None, "key_ops", t(30)).await.unwrap(), 2);
    assert_eq!(store.approve_rollout_tenants(&id, None, None, "key_ops", t(31)).await.unwrap(), 0);
    let approved: Vec<_> = all_events(store, &id)
        .await
        .into_iter()
        .filter(|e| e.kind == "approved")
        .map(|e| (e.tenant_id.unwrap(), e.actor, e.at, e.detail))
        .collect();
    assert_eq!(
        approved,
        vec![
            ("ten_b".to_owned(), "key_boss".to_owned(), t(10), serde_json::json!({ "wave": 0 })),
            ("ten_a".to_owned(), "key_ops".to_owned(), t(20), serde_json::json!({ "wave": 0 })),
            ("ten_c".to_owned(), "key_ops".to_owned(), t(30), serde_json::json!({ "wave": 1 })),
            ("ten_d".to_owned(), "key_ops".to_owned(), t(30), serde_json::json!({ "wave": 1 })),
        ]
    );
}

pub(crate) async fn rollout_events_page_in_order_and_respect_within(store: &Store) {
    let id =
        store.insert_rollout(new_rollout(&[("ten_a", 0), ("ten_b", 0)], None)).await.unwrap().id;
    let other = store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap().id;
    let mut seqs = Vec::new();
    for i in 1..=6 {
        let tenant = match i % 3 {
            0 => None,
            1 => Some("ten_a"),
            _ => Some("ten_b"),
        };
        seqs.push(store.append_rollout_event(&id, event(i, tenant, "note")).await.unwrap());
    }
    let others = store.append_rollout_event(&other, event(7, Some("ten_a"), "note")).await.unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // The newest entry of each rollout, whatever the other's.
    assert_eq!(store.rollout_last_seq(&id).await.unwrap(), seqs[5]);
    assert_eq!(store.rollout_last_seq(&other).await.unwrap(), others);
    let none = sspr_domain::RolloutId::new();
    assert_eq!(store.rollout_last_seq(&none).await.unwrap(), 0, "no history: 0");
    let all = all_events(store, &id).await;
    assert_eq!(all.len(), 7, "created + 6 notes, none of the other rollout's");
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(all.iter().skip(1).map(|e| e.seq).collect::<Vec<_>>(), seqs);
    assert_eq!(all[1].detail, serde_json::json!({ "at": 1 }));

    // Paging by seq: no gaps, no repeats.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.list_rollout_events(&id, cursor, None, None, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        cursor = page.last().map(|e| e.seq);
        seen.extend(page);
    }
    assert_eq!(seen, all);
    let after = store.list_rollout_events(&id, Some(seqs[3]), None, None, 100).await.unwrap();
    assert_eq!(after.iter().map(|e| e.seq).collect::<Vec<_>>(), seqs[4..]);

    // One tenant's events only.
    let only_b = store.list_rollout_events(&id, None, Some("ten_b"), None, 100).await.unwrap();
    assert_eq!(only_b.iter().map(|e| e.at).collect::<Vec<_>>(), vec![t(2), t(5)]);
    // A restricted reach hides other tenants' events but keeps rollout-wide ones.
    let reach = set_of(&["ten_a"]);
    let scoped = store.list_rollout_events(&id, None, None, Some(&reach), 100).await.unwrap();
    let visible: Vec<_> = scoped.iter().map(|e| (e.at, e.tenant_id.as_deref())).collect();
    assert_eq!(
        visible,
        vec![
            (t(0), None),
            (t(1), Some("ten_a")),
            (t(3), None),
            (t(4), Some("ten_a")),
            (t(6), None),
        ]
    );
    let nothing = BTreeSet::new();
    let wide = store.list_rollout_events(&id, None, None, Some(&nothing), 100).await.unwrap();
    assert!(wide.iter().all(|e| e.tenant_id.is_none()));
    assert_eq!(wide.len(), 3);
    let scoped_b =
        store.list_rollout_events(&id, None, Some("ten_b"), Some(&reach), 100).await.unwrap();
    assert!(scoped_b.is_empty());
}

pub(crate) async fn rollout_snapshots_newest_first_and_restored_once(store: &Store) {
    use sspr_store::Snapshot;
    let id =
        store.insert_rollout(new_rollout(&[("ten_a", 0), ("ten_b", 0)], None)).await.unwrap().id;
    let snapshot = |tenant: &str, at: i64, target: &str| Snapshot {
        id: sspr_domain::SnapshotId::new(),
        rollout_id: id.clone(),
        tenant_id: tenant.to_owned(),
        step: "pilot_apply".into(),
        target: target.into(),
        before: serde_json::json!({ "state": "disabled", "target": target }),
        created_at: t(at),
        restored_at: None,
    };
    let first = snapshot("ten_a", 10, "method:sms");
    let second = snapshot("ten_a", 20, "group:g1:created");
    // Same millisecond as `second`, taken after it: the larger id breaks the tie.
    let third = snapshot("ten_a", 20, "group:g1:members");
    let mut tied = [second.clone(), third.clone()];
    tied.sort_by(|a, b| a.id.cmp(&b.id));
    let (second, third) = (tied[0].clone(), tied[1].clone());
    let elsewhere = snapshot("ten_b", 30, "campaign");
    for s in [&second, &first, &third, &elsewhere] {
        store.insert_snapshot(s.clone()).await.unwrap();
    }
    let err = store.insert_snapshot(first.clone()).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "snapshot" }), "got {err:?}");

    let listed = store.list_snapshots(&id, "ten_a").await.unwrap();
    assert_eq!(listed, vec![third.clone(), second.clone(), first.clone()]);
    assert_eq!(store.list_snapshots(&id, "ten_b").await.unwrap(), vec![elsewhere]);
    assert!(store.list_snapshots(&id, "ten_z").await.unwrap().is_empty());

    assert!(store.mark_snapshot_restored(&third.id, t(40)).await.unwrap());
    assert!(!store.mark_snapshot_restored(&third.id, t(41)).await.unwrap(), "restored once");
    assert!(!store.mark_snapshot_restored(&sspr_domain::SnapshotId::new(), t(41)).await.unwrap());
    let listed = store.list_snapshots(&id, "ten_a").await.unwrap();
    assert_eq!(listed[0].restored_at, Some(t(40)));
    assert_eq!((listed[1].restored_at, listed[2].restored_at), (None, None));
}

pub(crate) async fn rollout_tasks_are_ensured_once_attested_once_and_filtered(store: &Store) {
    use sspr_store::{Task, TaskFilter};
    let id =
        store.insert_rollout(new_rollout(&[("ten_a", 0), ("ten_b", 0)], None)).await.unwrap().id;
    let other = store.insert_rollout(new_rollout(&[("ten_a", 0)], None)).await.unwrap().id;
    let task = |rollout: &sspr_domain::RolloutId, tenant: &str, kind: &str, at: i64| Task {
        id: sspr_domain::TaskId::new(),
        rollout_id: rollout.clone(),
        tenant_id: tenant.to_owned(),
        kind: kind.into(),
        instructions: serde_json::json!({ "do": kind, "tenant": tenant }),
        state: "open".into(),
        attested_by: None,
        attested_at: None,
        note: None,
        created_at: t(at),
    };
    let consent = task(&id, "ten_a", "grant_consent", 1);
    let (stored, created) = store.ensure_task(consent.clone()).await.unwrap();
    assert!(created);
    assert_eq!(stored, consent);
    // Again, even with a new id and other instructions: the first one stays.
    let mut again = task(&id, "ten_a", "grant_consent", 2);
    again.instructions = serde_json::json!({ "changed": true });
    let (stored, created) = store.ensure_task(again.clone()).await.unwrap();
    assert!(!created);
    assert_eq!(stored, consent);
    assert!(store.get_task(&again.id).await.unwrap().is_none());
    assert_eq!(store.get_task(&consent.id).await.unwrap().as_ref(), Some(&consent));
    assert_eq!(
        store.find_task(&id, "ten_a", "grant_consent").await.unwrap().as_ref(),
        Some(&consent)
    );
    assert!(store.find_task(&id, "ten_a", "other").await.unwrap().is_none());
    // Another triple with a taken id is a conflict.
    let mut clash = task(&id, "ten_b", "grant_consent", 3);
    clash.id = consent.id.clone();
    let err = store.ensure_task(clash).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { what: "task" }), "got {err:?}");

    let licence = store.ensure_task(task(&id, "ten_b", "assign_licence", 4)).await.unwrap().0;
    let b_consent = store.ensure_task(task(&id, "ten_b", "grant_consent", 5)).await.unwrap().0;
    let elsewhere = store.ensure_task(task(&other, "ten_a", "grant_consent", 6)).await.unwrap().0;

    // Attesting is fenced on the task being open.
    assert!(store.attest_task(&consent.id, "key_ops", Some("done by phone"), t(10)).await.unwrap());
    assert!(!store.attest_task(&consent.id, "key_boss", None, t(11)).await.unwrap());
    assert!(!store.attest_task(&sspr_domain::TaskId::new(), "key_ops", None, t(11)).await.unwrap());
    let attested = store.get_task(&consent.id).await.unwrap().unwrap();
    assert_eq!(attested.state, "attested");
    assert_eq!(attested.attested_by.as_deref(), Some("key_ops"));
    assert_eq!(attested.attested_at, Some(t(10)));
    assert_eq!(attested.note.as_deref(), Some("done by phone"));
    // Ensuring an attested task returns it as it is.
    let (stored, created) =
        store.ensure_task(task(&id, "ten_a", "grant_consent", 12)).await.unwrap();
    assert!(!created);
    assert_eq!(stored, attested);

    let list = |f: TaskFilter| async move {
        store.list_tasks(&f).await.unwrap().into_iter().map(|t| t.id).collect::<Vec<_>>()
    };
    let sorted = |mut ids: Vec<sspr_domain::TaskId>| {
        ids.sort();
        ids
    };
    let everything = sorted(vec![
        consent.id.clone(),
        licence.id.clone(),
        b_consent.id.clone(),
        elsewhere.id.clone(),
    ]);
    assert_eq!(list(TaskFilter { limit: 100, ..Default::default() }).await, everything);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            list(TaskFilter { after_id: cursor.clone(), limit: 3, ..Default::default() }).await;
        if page.is_empty() {
            break;
        }
        cursor = page.last().map(|id| id.to_string());
        seen.extend(page);
    }
    assert_eq!(seen, everything);
    let got =
        list(TaskFilter { rollout_id: Some(id.to_string()), limit: 100, ..Default::default() })
            .await;
    assert_eq!(got, sorted(vec![consent.id.clone(), licence.id.clone(), b_consent.id.clone()]));
    let got =
        list(TaskFilter { tenant_id: Some("ten_a".into()), limit: 100, ..Default::default() })
            .await;
    assert_eq!(got, sorted(vec![consent.id.clone(), elsewhere.id.clone()]));
    let got =
        list(TaskFilter { state: Some("open".into()), limit: 100, ..Default::default() }).await;
    assert_eq!(got, sorted(vec![licence.id.clone(), b_consent.id.clone(), elsewhere.id.clone()]));
    let got = list(TaskFilter {
        rollout_id: Some(id.to_string()),
        state: Some("open".into()),
        within: Some(set_of(&["ten_a", "ten_b"])),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(got, sorted(vec![licence.id.clone(), b_consent.id.clone()]));
    let got = list(TaskFilter {
        within: Some(set_of(&["ten_b", "ten_x"])),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(got, sorted(vec![licence.id.clone(), b_consent.id.clone()]));
    assert!(
        list(TaskFilter { within: Some(BTreeSet::new()), limit: 100, ..Default::default() })
            .await
            .is_empty()
    );
}

fn sspr_report(
    tenant: &TenantId,
    status: &str,
    users: Option<u64>,
    at: i64,
) -> sspr_store::SsprReport {
    sspr_store::SsprReport {
        tenant_id: tenant.clone(),
        status: status.into(),
        reason: (status != "ok").then(|| format!("{status}_reason")),
        figures: users.map(|u| serde_json::json!({ "users": u })),
        read_at: users.map(|_| t(at + 1)),
        started_at: t(at),
        attempted_at: t(at + 1),
        pages: 3,
        duration_ms: 1000,
    }
}

pub(crate) async fn sspr_report_failures_keep_the_last_good_figures(store: &Store) {
    let one = store.insert_tenant(new_tenant(&guid(1), "One", &[])).await.unwrap();
    assert!(store.sspr_report(&one.id).await.unwrap().is_none());

    let ok = sspr_report(&one.id, "ok", Some(10), 100);
    assert!(store.record_sspr_report(&ok).await.unwrap());
    assert_eq!(store.sspr_report(&one.id).await.unwrap(), Some(ok.clone()));

    // A failed attempt replaces the attempt half and keeps the figures and their read time.
    let failed = sspr_report(&one.id, "error", None, 200);
    assert!(store.record_sspr_report(&failed).await.unwrap());
    let got = store.sspr_report(&one.id).await.unwrap().unwrap();
    assert_eq!(got.status, "error");
    assert_eq!(got.reason.as_deref(), Some("error_reason"));
    assert_eq!((got.started_at, got.attempted_at), (t(200), t(201)));
    assert_eq!(got.figures, Some(serde_json::json!({ "users": 10 })));
    assert_eq!(got.read_at, Some(t(101)));

    // A newer ok replaces the figures; a stale attempt (started earlier) changes nothing.
    let newer = sspr_report(&one.id, "ok", Some(12), 300);
    assert!(store.record_sspr_report(&newer).await.unwrap());
    assert!(!store.record_sspr_report(&sspr_report(&one.id, "ok", Some(1), 250)).await.unwrap());
    assert_eq!(store.sspr_report(&one.id).await.unwrap(), Some(newer));

    // Unknown and offboarded tenants record nothing; the offboarded one keeps its history.
    assert!(
        !store
            .record_sspr_report(&sspr_report(&TenantId::new(), "ok", Some(1), 400))
            .await
            .unwrap()
    );
    store.offboard_tenant(&one.id, t(500)).await.unwrap().expect("offboarded");
    assert!(!store.record_sspr_report(&sspr_report(&one.id, "ok", Some(2), 600)).await.unwrap());
    let kept = store.sspr_report(&one.id).await.unwrap().unwrap();
    assert_eq!(kept.figures, Some(serde_json::json!({ "users": 12 })));
}

pub(crate) async fn sspr_reports_page_by_tenant_within_reach(store: &Store) {
    let mut ids = Vec::new();
    for n in 0..5 {
        let t = store.insert_tenant(new_tenant(&guid(n), &format!("T{n}"), &[])).await.unwrap();
        ids.push(t.id);
    }
    ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    store.record_sspr_report(&sspr_report(&ids[1], "ok", Some(5), 10)).await.unwrap();
    store.record_sspr_report(&sspr_report(&ids[3], "unavailable", None, 10)).await.unwrap();
    store.offboard_tenant(&ids[4], t(20)).await.unwrap().expect("offboarded");

    // Pages of two, by id, without gaps or repeats; offboarded tenants are left out.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let f = sspr_store::SsprReportFilter { within: None, after_tenant_id: after, limit: 2 };
        let page = store.list_sspr_reports(&f).await.unwrap();
        assert!(page.len() <= 2);
        after = page.last().map(|r| r.tenant_id.to_string());
        let done = page.len() < 2;
        seen.extend(page);
        if done {
            break;
        }
    }
    assert_eq!(seen.iter().map(|r| r.tenant_id.clone()).collect::<Vec<_>>(), ids[..4].to_vec());
    assert!(seen[0].report.is_none(), "no report yet");
    assert_eq!(
        seen[1].display_name,
        store.get_tenant(&ids[1]).await.unwrap().unwrap().display_name
    );
    let r1 = seen[1].report.as_ref().unwrap();
    assert_eq!((r1.status.as_str(), r1.pages, r1.duration_ms), ("ok", 3, 1000));
    let r3 = seen[3].report.as_ref().unwrap();
    assert_eq!((r3.status.as_str(), r3.figures.as_ref(), r3.read_at), ("unavailable", None, None));

    // Within a restricted reach: only those tenants; an empty reach matches nothing.
    let within = BTreeSet::from([ids[1].to_string(), ids[4].to_string(), "ten_other".to_owned()]);
    let f = sspr_store::SsprReportFilter { within: Some(within), after_tenant_id: None, limit: 10 };
    let page = store.list_sspr_reports(&f).await.unwrap();
    assert_eq!(page.iter().map(|r| r.tenant_id.clone()).collect::<Vec<_>>(), vec![ids[1].clone()]);
    let f = sspr_store::SsprReportFilter {
        within: Some(BTreeSet::new()),
        after_tenant_id: None,
        limit: 10,
    };
    assert!(store.list_sspr_reports(&f).await.unwrap().is_empty());
}

pub(crate) async fn tenants_due_for_sspr_report_missing_first_then_oldest(store: &Store) {
    let mut ids = Vec::new();
    for n in 0..4 {
        let t = store.insert_tenant(new_tenant(&guid(n), &format!("T{n}"), &[])).await.unwrap();
        ids.push(t.id);
    }
    // ids[0] attempted at 101 (old), ids[1] at 51 (older), ids[2] at 901 (fresh), ids[3] never.
    store.record_sspr_report(&sspr_report(&ids[0], "ok", Some(1), 100)).await.unwrap();
    store.record_sspr_report(&sspr_report(&ids[1], "error", None, 50)).await.unwrap();
    store.record_sspr_report(&sspr_report(&ids[2], "ok", Some(1), 900)).await.unwrap();
    let due = store.tenants_due_for_sspr_report(t(500), 10).await.unwrap();
    assert_eq!(due, vec![ids[3].clone(), ids[1].clone(), ids[0].clone()]);
    assert_eq!(store.tenants_due_for_sspr_report(t(500), 1).await.unwrap(), vec![ids[3].clone()]);
    // Offboarded tenants are never due.
    store.offboard_tenant(&ids[3], t(10)).await.unwrap().expect("offboarded");
    let due = store.tenants_due_for_sspr_report(t(500), 10).await.unwrap();
    assert_eq!(due, vec![ids[1].clone(), ids[0].clone()]);
}
