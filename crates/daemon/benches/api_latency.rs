//! Latency and throughput of the read API with 10,000 tenants and one rollout over them.
//!
//! The bench builds the real daemon in-process (`Application::build` on `127.0.0.1:0`, a temp
//! SQLite file, two actix workers, the engine's jobs off so nothing moves under the load),
//! imports `TENANTS` tenants through `POST /v1/tenants:import` (one request), creates one
//! rollout over them through `POST /v1/rollouts`, and then puts the rollout mid-flight with
//! direct SQL: 10 % completed, 5 % blocked over three reasons, 1 % failed over two, 2 % in
//! `pilot_applying`, so that the view's blocked/failed reason grouping has work to do.
//!
//! A load generator in this process (tokio + reqwest, one keep-alive client per connection)
//! runs each endpoint for `SECONDS` with 1 connection and with `CONNECTIONS` connections:
//! `GET /healthz` (the baseline: the same server, auth and DB untouched), `GET
//! /v1/rollouts/{id}`, `GET /v1/tenants?limit=100`. It prints requests/s, p50, p99 and max,
//! each endpoint's p99 as a multiple of `/healthz`'s, and then times the store queries
//! `GET /v1/rollouts/{id}` makes, one by one, to say where its time goes.
//!
//! The rollout view is reused for up to a second while the rollout and its history are
//! unchanged, so the quiet `rollout_get` run measures a dashboard watching a rollout that is
//! not moving. `rollout_get_live` measures the same request while a writer appends
//! `LIVE_EVENTS_PER_S` history entries a second to the rollout (each one makes the next view
//! be computed again, and takes SQLite's one writer), about the pace of the 10,000-tenant fleet
//! bench (6,947 tenants × about 6 transitions in 330 s). The load generator
//! shares the two cores with the server, so the figures are conservative. Target: p99 of
//! `GET /v1/rollouts/{id}` under 10 ms. Writes `bench/results/api_latency.json`.
//!
//! Run: `cargo bench -p sspr-fleet --bench api_latency [-- TENANTS CONNECTIONS SECONDS]`
//! (defaults 10000 8 5).

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sspr_api::keys::{NewKey, issue_api_key_from_cli};
use sspr_domain::{Role, RolloutId, SystemClock, TenantScope};
use sspr_fleet::{Application, settings::Settings};
use tokio_util::sync::CancellationToken;

/// History entries appended per second during the `rollout_get_live` runs.
const LIVE_EVENTS_PER_S: u64 = 130;

const TARGET_P99_MS: f64 = 10.0;

/// Latency figures of one load run.
#[derive(Debug, Clone)]
struct Load {
    requests: usize,
    errors: usize,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

/// `connections` tasks, each with its own keep-alive client, send `GET url` back to back for
/// `secs` seconds.
async fn load(url: &str, token: &str, connections: usize, secs: f64) -> Load {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let url = url.to_owned();
            let auth = format!("Bearer {token}");
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .pool_max_idle_per_host(1)
                    .build()
                    .expect("an HTTP client");
                let mut lat = Vec::with_capacity(1 << 14);
                let mut errors = 0usize;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = match client.get(&url).header("authorization", &auth).send().await {
                        Ok(resp) => {
                            let ok = resp.status().is_success();
                            ok && resp.bytes().await.is_ok()
                        }
                        Err(_) => false,
                    };
                    if ok {
                        lat.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (lat, e) = t.await.expect("load task");
        all.extend(lat);
        errors += e;
    }
    let wall = started.elapsed().as_secs_f64();
    all.sort_unstable();
    Load {
        requests: all.len(),
        errors,
        rps: all.len() as f64 / wall,
        p50_ms: percentile(&all, 0.50),
        p99_ms: percentile(&all, 0.99),
        max_ms: all.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    }
}

fn main() {
    let nums: Vec<f64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let tenants = nums.first().copied().unwrap_or(10_000.0) as usize;
    let connections = nums.get(1).copied().unwrap_or(8.0) as usize;
    let secs = nums.get(2).copied().unwrap_or(5.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(tenants, connections.max(1), secs));
}

async fn run(tenants: usize, connections: usize, secs: f64) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let db_path = dir.path().join("api.db");
    let db_url = format!("sqlite://{}", db_path.display());
    let env: Vec<(String, String)> = [
        ("SSPR_FLEET_LISTEN", "127.0.0.1:0".to_owned()),
        ("SSPR_FLEET_DATA_DIR", dir.path().display().to_string()),
        ("SSPR_FLEET_DATABASE_URL", db_url.clone()),
        ("SSPR_FLEET_API__WORKERS", "2".into()),
        // The load generator is one key sending as fast as it can: no inbound rate limit.
        ("SSPR_FLEET_API__RATE_PER_SECOND", "0".into()),
        ("SSPR_FLEET_LOG", "warn".into()),
        ("SSPR_FLEET_ENGINE__RUN_JOBS", "false".into()),
        ("SSPR_FLEET_REGISTRY__BACKGROUND_VERIFY", "false".into()),
        ("SSPR_FLEET_REPORTING__SCHEDULED_REFRESH", "false".into()),
        ("SSPR_FLEET_GRAPH_URL", "http://127.0.0.1:9".into()),
        ("SSPR_FLEET_LOGIN_URL", "http://127.0.0.1:9".into()),
        ("SSPR_FLEET_PORTAL_URL", "http://127.0.0.1:9".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = Settings::load_from(None, env).expect("valid settings");
    let app = Application::build(&settings).await.expect("the daemon starts");
    let base = format!("http://{}", app.addr());
    let store = app.store().clone();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(shutdown.clone()));
    let (_, token) = issue_api_key_from_cli(
        &store,
        &SystemClock,
        NewKey { name: "bench".into(), role: Role::Admin, tenants: TenantScope::All },
    )
    .await
    .expect("an admin key");
    let token = token.reveal().to_owned();
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("client");

    // Setup (not measured under load): import, create the rollout, move it mid-flight.
    let rows: Vec<Value> = (0..tenants)
        .map(|i| {
            json!({
                "entra_tenant": format!("0a0a0a0a-0000-4000-8000-{i:012}"),
                "display_name": format!("Tenant {i:05}"),
                "tags": ["fleet"],
                "credentials": {"kind": "client_secret", "client_id": "11111111-1111-4111-8111-111111111111", "client_secret": "bench-secret-value"},
            })
        })
        .collect();
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/v1/tenants:import"))
        .bearer_auth(&token)
        .json(&rows)
        .send()
        .await
        .expect("import");
    assert!(resp.status().is_success(), "import: {}", resp.status());
    let report: Value = resp.json().await.expect("import report");
    let import_s = t.elapsed().as_secs_f64();
    println!("imported {tenants} tenants in {import_s:.2} s: {}", report["counts"]);
    let spec = json!({
        "name": "Fleet SSPR",
        "policy": {
            "pilot_group": {"name": "SSPR pilot (sspr-fleet)", "members": ["user00003@{domain}"]},
            "registration_campaign": {"enabled": true, "snooze_days": 2},
        },
        "selector": {"tags": ["fleet"]},
        "waves": {
            "canary": {"kind": "first", "count": 50},
            "batches": {"kind": "count", "size": 1000},
            "max_in_flight": 200,
            "failure_budget": {"kind": "percent", "percent": 50},
        },
        "gates": {"soak_minutes": 0},
    });
    let t = Instant::now();
    let resp = http
        .post(format!("{base}/v1/rollouts"))
        .bearer_auth(&token)
        .json(&spec)
        .send()
        .await
        .expect("create rollout");
    assert_eq!(resp.status().as_u16(), 201, "create rollout");
    let rollout: Value = resp.json().await.expect("rollout");
    let create_s = t.elapsed().as_secs_f64();
    let rollout_id = rollout["id"].as_str().expect("rollout id").to_owned();
    println!("created rollout {rollout_id} over {} tenants in {create_s:.2} s", rollout["tenants"]);
    {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(&db_url).await.expect("sqlite");
        // rowid order is insertion order: wave order. Mid-flight mix by position modulo 100.
        for (sql, what) in [
            ("UPDATE rollout_tenants SET state = 'completed' WHERE rowid % 100 < 10", "completed"),
            (
                "UPDATE rollout_tenants SET state = 'blocked', reason = CASE rowid % 3 WHEN 0 THEN \
                 'license_missing' WHEN 1 THEN 'consent_missing' ELSE 'not_verified' END \
                 WHERE rowid % 100 BETWEEN 10 AND 14",
                "blocked",
            ),
            (
                "UPDATE rollout_tenants SET state = 'failed', reason = CASE rowid % 2 WHEN 0 THEN \
                 'graph_error' ELSE 'verification_failed' END WHERE rowid % 100 = 15",
                "failed",
            ),
            (
                "UPDATE rollout_tenants SET state = 'pilot_applying' WHERE rowid % 100 IN (16, 17)",
                "pilot_applying",
            ),
        ] {
            let n = sqlx::query(sql).execute(&mut conn).await.expect(what).rows_affected();
            println!("  {n} tenants set {what}");
        }
        conn.close().await.expect("close");
    }

    let endpoints = [
        ("healthz", format!("{base}/healthz")),
        ("rollout_get", format!("{base}/v1/rollouts/{rollout_id}")),
        ("rollout_get_live", format!("{base}/v1/rollouts/{rollout_id}")),
        ("tenants_list_100", format!("{base}/v1/tenants?limit=100")),
    ];
    let live_id: RolloutId = rollout_id.parse().expect("rollout id");
    // Warm-up: connections, statement caches, page cache.
    for (_, url) in &endpoints {
        load(url, &token, 2, 0.5).await;
    }
    let mut rows_out = Vec::new();
    let mut base_p99 = [0.0f64; 2];
    println!();
    println!(
        "{:<18} {:>5} {:>9} {:>8} {:>8} {:>8} {:>8} {:>12}",
        "endpoint", "conns", "requests", "rps", "p50 ms", "p99 ms", "max ms", "p99 x healthz"
    );
    for (name, url) in &endpoints {
        for (slot, conns) in [1usize, connections].into_iter().enumerate() {
            // The live runs: a writer moves the rollout's history on while the load runs.
            let writer = (*name == "rollout_get_live").then(|| {
                let stop = CancellationToken::new();
                let (store, id, stop2) = (store.clone(), live_id.clone(), stop.clone());
                let task = tokio::spawn(async move {
                    let mut tick =
                        tokio::time::interval(Duration::from_micros(1_000_000 / LIVE_EVENTS_PER_S));
                    let mut n = 0u64;
                    while !stop2.is_cancelled() {
                        tick.tick().await;
                        let event = sspr_store::NewEvent {
                            tenant_id: None,
                            at: chrono::Utc::now(),
                            actor: "bench".into(),
                            kind: "note".into(),
                            from_state: None,
                            to_state: None,
                            detail: json!({"n": n}),
                        };
                        store.append_rollout_event(&id, event).await.expect("append");
                        n += 1;
                    }
                    n
                });
                (stop, task)
            });
            let l = load(url, &token, conns, secs).await;
            if let Some((stop, task)) = writer {
                stop.cancel();
                let n = task.await.expect("writer");
                println!("  (rollout_get_live, {conns} connections: {n} history entries appended)");
            }
            if *name == "healthz" {
                base_p99[slot] = l.p99_ms.max(1e-6);
            }
            let ratio = l.p99_ms / base_p99[slot];
            println!(
                "{name:<18} {conns:>5} {:>9} {:>8.0} {:>8.2} {:>8.2} {:>8.2} {:>12.1}{}",
                l.requests,
                l.rps,
                l.p50_ms,
                l.p99_ms,
                l.max_ms,
                ratio,
                if l.errors > 0 { format!("  ({} errors)", l.errors) } else { String::new() }
            );
            rows_out.push(json!({
                "endpoint": name, "connections": conns, "requests": l.requests,
                "errors": l.errors, "rps": l.rps, "p50_ms": l.p50_ms, "p99_ms": l.p99_ms,
                "max_ms": l.max_ms, "p99_ratio_to_healthz": ratio,
            }));
        }
    }

    // Where GET /v1/rollouts/{id}'s time goes: the store calls `view` makes, timed alone.
    let id: RolloutId = rollout_id.parse().expect("rollout id");
    let reps = 50;
    let time = |d: Duration| d.as_secs_f64() * 1000.0 / f64::from(reps);
    let t = Instant::now();
    for _ in 0..reps {
        store.get_rollout(&id).await.expect("get");
    }
    let get_ms = time(t.elapsed());
    let t = Instant::now();
    for _ in 0..reps {
        store.rollout_tenant_counts(&id, None).await.expect("counts");
    }
    let counts_ms = time(t.elapsed());
    let t = Instant::now();
    let mut reason_rows = 0;
    for _ in 0..reps {
        reason_rows = 0;
        for s in ["blocked", "failed"] {
            let mut after: Option<String> = None;
            loop {
                let page = store
                    .list_rollout_tenants(&id, None, Some(s), None, after.as_deref(), 1000)
                    .await
                    .expect("page");
                reason_rows += page.len();
                if page.len() < 1000 {
                    break;
                }
                after = page.last().map(|t| t.tenant_id.clone());
            }
        }
    }
    let reasons_ms = time(t.elapsed());
    let t = Instant::now();
    for _ in 0..reps {
        store.rollout_reason_counts(&id, &["blocked", "failed"], None).await.expect("reasons");
    }
    let grouped_ms = time(t.elapsed());
    let t = Instant::now();
    for _ in 0..reps {
        store
            .list_tenants(&sspr_store::TenantFilter { limit: 101, ..Default::default() })
            .await
            .expect("tenants");
    }
    let list_ms = time(t.elapsed());
    let t = Instant::now();
    for _ in 0..reps {
        store.count_tenants(&sspr_store::TenantFilter::default()).await.expect("count");
    }
    let count_ms = time(t.elapsed());
    let t = Instant::now();
    for _ in 0..reps {
        store
            .rollout_finish_stats(&id, None, chrono::Utc::now() - chrono::TimeDelta::minutes(15))
            .await
            .expect("finish stats");
    }
    let finish_ms = time(t.elapsed());
    let single = rows_out
        .iter()
        .find(|r| r["endpoint"] == "rollout_get" && r["connections"] == 1)
        .and_then(|r| r["p50_ms"].as_f64())
        .unwrap_or(0.0);
    println!();
    println!("GET /v1/rollouts/{{id}} store calls, each alone, mean of {reps}:");
    println!("  get_rollout            {get_ms:>7.2} ms");
    println!("  rollout_tenant_counts  {counts_ms:>7.2} ms");
    println!(
        "  rollout_reason_counts  {grouped_ms:>7.2} ms  (one grouped query: what the view runs)"
    );
    println!(
        "  (before: reasons paged  {reasons_ms:>7.2} ms, {reason_rows} rows loaded 1,000 a page to group)"
    );
    println!("  rollout_finish_stats   {finish_ms:>7.2} ms");
    println!(
        "  sum {:.2} ms of the endpoint's p50 {single:.2} ms at 1 connection",
        get_ms + counts_ms + grouped_ms + finish_ms
    );
    println!(
        "GET /v1/tenants?limit=100 store calls: list_tenants(101) {list_ms:.2} ms, count_tenants {count_ms:.2} ms"
    );
    let rollout_p99 = rows_out
        .iter()
        .filter(|r| r["endpoint"] == "rollout_get" || r["endpoint"] == "rollout_get_live")
        .filter_map(|r| r["p99_ms"].as_f64())
        .fold(0.0, f64::max);
    // An answer other than 200 is an error, and a run with errors meets nothing.
    let errors: usize = rows_out.iter().filter_map(|r| r["errors"].as_u64()).sum::<u64>() as usize;
    let met = rollout_p99 < TARGET_P99_MS && errors == 0;
    println!(
        "target: p99 of GET /v1/rollouts/{{id}} < {TARGET_P99_MS} ms at {tenants} tenants: {} \
         (worst p99 {rollout_p99:.2} ms)",
        if met { "met" } else { "MISSED" }
    );

    let out = json!({
        "bench": "api_latency",
        "tenants": tenants,
        "connections": connections,
        "seconds_per_run": secs,
        "server": "in-process Application, SQLite (WAL), 2 actix workers, engine jobs off; \
                   load generator in the same process on the same 2 cores",
        "baseline": "GET /healthz in the same run",
        "setup": {"import_s": import_s, "create_rollout_s": create_s},
        "results": rows_out,
        "rollout_get_breakdown_ms": {
            "get_rollout": get_ms, "rollout_tenant_counts": counts_ms,
            "rollout_reason_counts": grouped_ms,
            "reasons_paged_before_fix": reasons_ms, "reason_rows_loaded_before_fix": reason_rows,
            "rollout_finish_stats": finish_ms,
        },
        "tenants_list_breakdown_ms": {"list_tenants_101": list_ms, "count_tenants": count_ms},
        "target_p99_ms": TARGET_P99_MS,
        "target_met": met,
    });
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/results/api_latency.json");
    std::fs::write(path, serde_json::to_string_pretty(&out).expect("json") + "\n")
        .expect("write results");
    println!("wrote bench/results/api_latency.json");
    shutdown.cancel();
    let _ = server.await;
}
