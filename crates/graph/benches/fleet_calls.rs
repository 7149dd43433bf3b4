//! One process drives 1,000 simulated tenants through the client, every call with 50 ms of
//! simulated Graph latency, the documented throttling limits on. Reports Graph calls per
//! second, the share of the rate the limits allow that was used, the ratio of the wall time to
//! its lower bound from concurrency and latency (the baseline, computed for this run), 429s,
//! `Retry-After` violations (must be 0), and the process's peak memory (simulator included).
//!
//! Run: `cargo bench -p sspr-graph --bench fleet_calls [-- TENANTS CONCURRENCY SIM_SCALE]`.
//! `SIM_SCALE` below 1 makes the simulator's limits smaller than the client assumes, so the
//! client meets 429s and must honour their `Retry-After`.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::{sync::Arc, time::Instant};

use secrecy::SecretString;
use sspr_graph::{Credential, GraphClient, GraphConfig, SizeClass, Tenant};
use sspr_graph_sim::{
    Faults, GraphSim, Scenario,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, GenerateSpec},
};

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let tenants = args.first().copied().unwrap_or(1000) as u32;
    let concurrency = args.get(1).copied().unwrap_or(128) as usize;
    let sim_scale =
        std::env::args().skip(1).nth(2).and_then(|a| a.parse::<f64>().ok()).unwrap_or(1.0);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(run(tenants, concurrency, sim_scale));
}

async fn run(count: u32, concurrency: usize, sim_scale: f64) {
    let latency_ms = 50u64;
    let mut settings = sspr_graph_sim::SimSettings::default();
    settings.throttle.scale = sim_scale;
    let scenario = Scenario {
        seed: 3,
        settings,
        generate: Some(GenerateSpec {
            count,
            min_users: 50,
            max_users: 2000,
            consent_missing_share: 0.0,
            faults: Faults { latency_ms: (latency_ms, latency_ms), ..Default::default() },
            ..Default::default()
        }),
        ..Default::default()
    };
    let sim = GraphSim::from_scenario(&scenario).unwrap();
    let running = sim.serve(std::net::TcpListener::bind("127.0.0.1:0").unwrap()).unwrap();
    let mut cfg = GraphConfig::new(running.base_url(), running.base_url());
    cfg.max_concurrency = concurrency;
    let client = GraphClient::new(cfg.clone()).unwrap();
    let ids = sim.tenant_ids();
    let started = Instant::now();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let client = client.clone();
            let users = sim.tenant_state(id).unwrap()["users"].as_u64().unwrap_or(0);
            let tenant = Tenant {
                id: id.clone(),
                credential: Arc::new(Credential::ClientSecret {
                    client_id: DEFAULT_CLIENT_ID.into(),
                    secret: SecretString::from(DEFAULT_CLIENT_SECRET),
                }),
                size: SizeClass::from_users(users),
            };
            tokio::spawn(async move {
                // The preflight reads of a rollout, then the policy read-back.
                let mut ok = 0u32;
                ok += u32::from(client.organization(&tenant).await.is_ok());
                ok += u32::from(client.subscribed_skus(&tenant).await.is_ok());
                ok += u32::from(client.methods_policy(&tenant).await.is_ok());
                ok += u32::from(client.authorization_policy(&tenant).await.is_ok());
                let _ = client
                    .users_registered_by_feature(&tenant, sspr_graph::ReportPriority::Normal)
                    .await;
                ok += u32::from(client.groups_named(&tenant, "SSPR pilot").await.is_ok());
                ok
            })
        })
        .collect();
    let mut succeeded = 0u64;
    for t in tasks {
        succeeded += u64::from(t.await.unwrap());
    }
    let wall = started.elapsed().as_secs_f64();
    let stats = sim.total_stats();
    let metrics = client.metrics().total();
    let graph_calls = stats.requests;
    let calls_per_sec = graph_calls as f64 / wall;
    // The rate the limits allow: each tenant's resource units per second at the configured
    // share, divided by the mean cost of these calls (about 1.5 RU).
    let allowed_per_sec: f64 = ids
        .iter()
        .map(|id| {
            SizeClass::from_users(sim.tenant_state(id).unwrap()["users"].as_u64().unwrap_or(0))
                .resource_units_per_10s()
                / 10.0
                * cfg.rate_share
                / 1.5
        })
        .sum();
    let lower_bound = graph_calls as f64 * (latency_ms as f64 / 1000.0) / concurrency as f64;
    println!(
        "tenants: {count}, global concurrency: {concurrency}, simulated latency: {latency_ms} ms"
    );
    println!(
        "Graph calls: {graph_calls} ({succeeded} successful typed calls), token requests: {}",
        stats.token_requests
    );
    println!("wall time: {wall:.2} s, calls per second: {calls_per_sec:.0}");
    println!("share of the rate the limits allow: {:.4}", calls_per_sec / allowed_per_sec);
    println!(
        "wall time / lower bound from concurrency x latency ({lower_bound:.2} s): {:.2}",
        wall / lower_bound
    );
    println!(
        "429s: {} (client saw {}), retries: {}, Retry-After violations: {}",
        stats.throttled, metrics.throttled, metrics.retries, stats.early_requests
    );
    println!(
        "peak memory (client and simulator in one process): {:.1} MiB",
        status_kib("VmHWM:") as f64 / 1024.0
    );
    assert_eq!(stats.early_requests, 0, "Retry-After violations");
    running.stop().await;
}
