//! Peak memory of one tenant's SSPR readiness report with 100,000 users.
//!
//! The parent process serves the Graph simulator (one premium tenant, 100,000 users, frozen
//! clock) and runs this same executable three times as a child, each measuring itself in a
//! process of its own, with the simulator never inside the measured process:
//!
//! * `baseline`: starts the runtime and the Graph client and gets a token, nothing more;
//! * `streamed`: reads `userRegistrationDetails` page by page into the report's
//!   [`Aggregator`] (what `Reports::refresh` does), including the phone figures
//!   (`capable_without_phone`, `phone_dependent`) counted for 1 and 2 methods required and
//!   picked at the end: still counters only;
//! * `naive`: collects every page into one `Vec` first, then counts it.
//!
//! Each child prints its peak resident set (`VmHWM` of `/proc/self/status`) and elapsed time.
//! The parent prints a table with the ratios to the baseline, writes
//! `bench/results/readiness_memory.json`, and exits non-zero when the streamed report peaks at
//! 64 MiB or more.
//!
//! Run: `cargo bench -p sspr-reporting --bench readiness_memory` (optionally `-- USERS`).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use std::{process::Command, sync::Arc, time::Instant};

use serde_json::{Value, json};
use sspr_graph::{Credential, GraphClient, GraphConfig, SizeClass, Tenant};
use sspr_graph_sim::{
    GraphSim, Scenario,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};
use sspr_reporting::readiness::Aggregator;

const CHILD_ENV: &str = "SSPR_READINESS_BENCH_CHILD";
const URL_ENV: &str = "SSPR_READINESS_BENCH_URL";
const TENANT: &str = "0b0b0b0b-0000-4000-8000-000000100000";
const LIMIT_MIB: f64 = 64.0;

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
    match std::env::var(CHILD_ENV) {
        Ok(mode) => child(&mode),
        Err(_) => parent(),
    }
}

fn child(mode: &str) {
    let started = Instant::now();
    let url = std::env::var(URL_ENV).expect("the parent sets the simulator's URL");
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (figures, pages, report_ms) = rt.block_on(async {
        // Memory, not pacing, is measured: the reporting APIs' limits (5 reads per 10 s a
        // tenant) are lifted here and in the simulator.
        let graph =
            GraphClient::new(GraphConfig { limits_scale: 1_000.0, ..GraphConfig::new(&url, &url) })
                .unwrap();
        let tenant = Tenant {
            id: TENANT.into(),
            credential: Arc::new(Credential::ClientSecret {
                client_id: DEFAULT_CLIENT_ID.into(),
                secret: DEFAULT_CLIENT_SECRET.to_owned().into(),
            }),
            size: SizeClass::Large,
        };
        graph.probe_token(&tenant).await.unwrap();
        let report_started = Instant::now();
        let (figures, pages) = match mode {
            "baseline" => (None, 0),
            "streamed" => {
                let mut agg = Aggregator::new();
                graph
                    .registration_details(&tenant, sspr_graph::ReportPriority::Low, |page| {
                        agg.add_page(page)
                    })
                    .await
                    .unwrap();
                let (figures, pages) = agg.finish();
                (Some(figures), pages)
            }
            "naive" => {
                let mut all = Vec::new();
                let mut pages = 0;
                graph
                    .registration_details(&tenant, sspr_graph::ReportPriority::Low, |page| {
                        pages += 1;
                        all.extend(page);
                    })
                    .await
                    .unwrap();
                let mut agg = Aggregator::new();
                for user in &all {
                    agg.add_user(user);
                }
                std::hint::black_box(&all);
                (Some(agg.finish().0), pages)
            }
            other => panic!("unknown mode {other}"),
        };
        (figures, pages, report_started.elapsed().as_secs_f64() * 1000.0)
    });
    let all = figures.as_ref().map(|f| f.all).unwrap_or_default();
    let line = json!({
        "mode": mode,
        "peak_kib": status_kib("VmHWM:"),
        "elapsed_ms": started.elapsed().as_secs_f64() * 1000.0,
        "report_ms": report_ms,
        "users": all.users,
        "sspr_capable": all.sspr_capable,
        "capable_without_phone": all.capable_without_phone,
        "phone_dependent": all.phone_dependent,
        "methods_required": figures.and_then(|f| f.methods_required),
        "pages": pages,
    });
    println!("{line}");
}

fn run_child(mode: &str, url: &str) -> Value {
    let exe = std::env::current_exe().unwrap();
    let out = Command::new(exe).env(CHILD_ENV, mode).env(URL_ENV, url).output().unwrap();
    assert!(out.status.success(), "{mode} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{')).expect("a result line");
    serde_json::from_str(line).unwrap()
}

fn parent() {
    let users: u32 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let scenario = Scenario::parse(&format!(
        "seed = 5\n[settings]\ntime_speed = 0.0\n[settings.throttle]\nreports = false\n[[tenants]]\nid = \"{TENANT}\"\nname = \"Large\"\n\
         domain = \"large.onmicrosoft.com\"\nusers = {users}\nadmins = 20\nguests = 2000\n\
         licence = \"e5\"\nmfa_registered_share = 0.5\nphone_only_share = 0.2\n\
         phone_mixed_share = 0.3\nmethods = {{ sms = \"enabled\", voice = \"enabled\", \
         email = \"enabled\", microsoftAuthenticator = \"enabled\", softwareOath = \"enabled\" }}\n\
         legacy = {{ enablement = \"all\", methods_required = 2 }}\n"
    ))
    .unwrap();
    let sim = GraphSim::from_scenario(&scenario).unwrap();
    let page_size = sim.settings().page_size;
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let running = rt.block_on(async { sim.serve(listener) }).unwrap();
    let url = running.base_url();
    println!(
        "simulator: 1 tenant, {users} users, {page_size} per page, served by the parent at {url}"
    );

    // The children run one after the other while the runtime's workers serve the simulator.
    let results: Vec<Value> =
        ["baseline", "streamed", "naive"].iter().map(|m| run_child(m, &url)).collect();
    let base = results[0]["peak_kib"].as_f64().unwrap().max(1.0);
    let mib = |v: &Value| v["peak_kib"].as_f64().unwrap() / 1024.0;
    println!();
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>10} {:>8} {:>8}",
        "mode", "peak MiB", "x baseline", "over base", "report s", "users", "pages"
    );
    for r in &results {
        println!(
            "{:<10} {:>12.1} {:>12.2} {:>12.1} {:>10.2} {:>8} {:>8}",
            r["mode"].as_str().unwrap(),
            mib(r),
            r["peak_kib"].as_f64().unwrap() / base,
            mib(r) - base / 1024.0,
            r["report_ms"].as_f64().unwrap() / 1000.0,
            r["users"].as_u64().unwrap_or(0),
            r["pages"].as_u64().unwrap_or(0),
        );
    }
    let streamed = mib(&results[1]);
    let within = streamed < LIMIT_MIB;
    for r in &results[1..] {
        assert_eq!(r["users"].as_u64(), Some(u64::from(users)), "every user was read: {r}");
    }
    for k in ["sspr_capable", "capable_without_phone", "phone_dependent", "methods_required"] {
        assert_eq!(results[1][k], results[2][k], "streamed and naive agree on {k}");
    }
    println!(
        "capable {}, of them without phone {}, phone-dependent {} (methods required {})",
        results[1]["sspr_capable"],
        results[1]["capable_without_phone"],
        results[1]["phone_dependent"],
        results[1]["methods_required"]
    );
    println!();
    println!(
        "streamed report of {users} users: peak {streamed:.1} MiB ({}), naive {:.1} MiB",
        if within { "under the 64 MiB limit" } else { "OVER the 64 MiB limit" },
        mib(&results[2])
    );
    let doc = json!({
        "bench": "readiness_memory",
        "users": users,
        "page_size": page_size,
        "limit_mib": LIMIT_MIB,
        "within_limit": within,
        "measured": "VmHWM (peak resident set) of a child process per mode; the simulator runs in the parent",
        "results": results,
    });
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/results/readiness_memory.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    println!("written to bench/results/readiness_memory.json");
    drop(running);
    drop(rt);
    if !within {
        std::process::exit(1);
    }
}
