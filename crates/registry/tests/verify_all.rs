//! `Registry::tenants_to_verify`, which `POST /v1/tenants:verify` uses without a list: every
//! active tenant within reach, however many pages they take, oldest check first.

#![allow(clippy::unwrap_used)]

use std::{collections::BTreeSet, sync::Arc};

use secrecy::SecretBox;
use sspr_domain::{ManualClock, TenantId};
use sspr_graph::{GraphClient, GraphConfig};
use sspr_registry::{MasterKeyMaterial, Registry, RegistrySettings, TenantInput, Vault};
use sspr_store::{Store, StoreOptions};

#[tokio::test]
async fn every_tenant_within_reach_is_taken_across_pages() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let key = MasterKeyMaterial { id: "k1".into(), bytes: SecretBox::new(Box::new([9u8; 32])) };
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    // Nothing here calls Graph.
    let graph =
        GraphClient::new(GraphConfig::new("http://127.0.0.1:9", "http://127.0.0.1:9")).unwrap();
    let registry = Registry::new(
        store.clone(),
        Arc::new(Vault::new(&key, &[])),
        graph,
        clock,
        RegistrySettings::default(),
    );
    let mut ids: Vec<TenantId> = Vec::new();
    for i in 0..7u32 {
        let input: TenantInput = serde_json::from_value(serde_json::json!({
            "entra_tenant": format!("5eed0000-0000-4000-8000-{i:012x}"),
            "display_name": format!("Tenant {i}"),
            "credentials": {"kind": "client_secret", "client_id": "11111111-0000-4000-8000-000000000001", "client_secret": "s"},
        }))
        .unwrap();
        ids.push(registry.onboard(input.validate().unwrap()).await.unwrap().id);
    }
    let sorted = |mut v: Vec<TenantId>| {
        v.sort();
        v
    };

    // Pages of 2 and of 3 (7 is not a multiple of either), of 7 (one full page, then an
    // empty one) and larger than the fleet: always all seven, each once.
    for page_size in [1, 2, 3, 7, 1000] {
        let all = registry.tenants_to_verify(None, page_size).await.unwrap();
        assert_eq!(sorted(all), sorted(ids.clone()), "page size {page_size}");
    }

    // A key's reach limits them, across pages too.
    let reach: BTreeSet<String> = ids[1..6].iter().map(ToString::to_string).collect();
    let within = registry.tenants_to_verify(Some(&reach), 2).await.unwrap();
    assert_eq!(within.len(), 5);
    assert!(within.iter().all(|id| reach.contains(id.as_str())), "{within:?}");
    let nothing = registry.tenants_to_verify(Some(&BTreeSet::new()), 2).await.unwrap();
    assert!(nothing.is_empty());
}
