//! The background re-verifier, driven tick by tick against the Graph simulator: new tenants
//! are checked at once, checked tenants again only once their check is older than the interval,
//! and many tenants are checked in parallel without exceeding the verification slots.

#![allow(clippy::unwrap_used)]

use std::{sync::Arc, time::Duration};

use secrecy::SecretBox;
use sspr_domain::{Clock, ManualClock, TenantId};
use sspr_graph::{GraphClient, GraphConfig};
use sspr_graph_sim::{
    GraphSim, Scenario,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};
use sspr_registry::{
    MasterKeyMaterial, Registry, RegistrySettings, Reverifier, TenantInput, Vault,
};
use sspr_store::{Store, StoreOptions, TenantStatus};

const TENANTS: u32 = 12;

fn guid(i: u32) -> String {
    format!("5eed0000-0000-4000-8000-{i:012x}")
}

#[tokio::test]
async fn new_tenants_are_checked_at_once_and_again_only_when_their_check_is_old() {
    let mut scenario = String::from("seed = 3\n[settings]\ntime_speed = 0.0\n");
    for i in 0..TENANTS {
        let revoked = if i == 0 { "[tenants.faults]\nconsent_revoked = true\n" } else { "" };
        scenario.push_str(&format!("[[tenants]]\nid = \"{}\"\nusers = 20\n{revoked}", guid(i)));
    }
    let sim = GraphSim::from_scenario(&Scenario::parse(&scenario).unwrap()).unwrap();
    let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let key = MasterKeyMaterial { id: "k1".into(), bytes: SecretBox::new(Box::new([9u8; 32])) };
    let clock = Arc::new(ManualClock::new(chrono::Utc::now()));
    let graph = GraphClient::new(GraphConfig::new(running.base_url(), running.base_url())).unwrap();
    let settings =
        RegistrySettings { verify_concurrency: 4, reverify_after: Duration::from_secs(3600) };
    let registry = Registry::new(
        store.clone(),
        Arc::new(Vault::new(&key, &[])),
        graph,
        clock.clone(),
        settings,
    );

    let mut ids: Vec<TenantId> = Vec::new();
    for i in 0..TENANTS {
        let input: TenantInput = serde_json::from_value(serde_json::json!({
            "entra_tenant": guid(i), "display_name": format!("Tenant {i}"),
            "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
        }))
        .unwrap();
        ids.push(registry.onboard(input.validate().unwrap()).await.unwrap().id);
    }
    let reverifier = Reverifier::new(registry.clone(), 100, Duration::from_secs(30));

    // Every new tenant is due, and all are checked in one round.
    assert_eq!(reverifier.tick().await.unwrap(), TENANTS as usize);
    for (i, id) in ids.iter().enumerate() {
        let t = store.get_tenant(id).await.unwrap().unwrap();
        let expected = if i == 0 { TenantStatus::Unreachable } else { TenantStatus::Ready };
        assert_eq!(t.status, expected, "tenant {i}");
        assert_eq!(
            t.verified_at,
            Some(clock.now())
                .map(|n| chrono::DateTime::from_timestamp_millis(n.timestamp_millis()).unwrap())
        );
    }
    let token_requests = sim.total_stats().token_requests;

    // Nothing is due until the interval has passed: no Graph traffic at all.
    assert_eq!(reverifier.tick().await.unwrap(), 0);
    clock.advance(chrono::TimeDelta::minutes(59));
    assert_eq!(reverifier.tick().await.unwrap(), 0);
    assert_eq!(sim.total_stats().token_requests, token_requests);

    // Consent granted meanwhile: the next round after the interval sees it.
    sim.set_faults(&guid(0), sspr_graph_sim::Faults::default()).unwrap();
    clock.advance(chrono::TimeDelta::minutes(2));
    assert_eq!(reverifier.tick().await.unwrap(), TENANTS as usize);
    assert!(sim.total_stats().token_requests > token_requests);
    assert_eq!(store.get_tenant(&ids[0]).await.unwrap().unwrap().status, TenantStatus::Ready);

    // A round is bounded by its batch size; the rest is due at the next round.
    clock.advance(chrono::TimeDelta::hours(2));
    let small = Reverifier::new(registry.clone(), 5, Duration::from_secs(30));
    assert_eq!(small.tick().await.unwrap(), 5);
    assert_eq!(small.tick().await.unwrap(), 5);
    assert_eq!(small.tick().await.unwrap(), (TENANTS - 10) as usize);
    assert_eq!(small.tick().await.unwrap(), 0);
}

#[tokio::test]
async fn run_stops_promptly_on_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("registry.db").display());
    let store = Store::connect(&url, &StoreOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let key = MasterKeyMaterial { id: "k1".into(), bytes: SecretBox::new(Box::new([9u8; 32])) };
    let graph =
        GraphClient::new(GraphConfig::new("http://127.0.0.1:9", "http://127.0.0.1:9")).unwrap();
    let registry = Registry::new(
        store,
        Arc::new(Vault::new(&key, &[])),
        graph,
        Arc::new(sspr_domain::SystemClock),
        RegistrySettings::default(),
    );
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(
        Reverifier::new(registry, 10, Duration::from_secs(3600)).run(shutdown.clone()),
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}
