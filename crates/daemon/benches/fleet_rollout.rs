//! A whole fleet rollout, pilot to all users, by a real `sspr-fleet serve` process against the
//! Graph simulator.
//!
//! The simulator runs in this process: `TENANTS` generated tenants (seeded, 25 to 400 users,
//! the generator's licence mix, every one consented), `latency_ms = [LO, HI]` on every Graph
//! request, Microsoft's documented throttling limits (`throttle.scale = 1`). The daemon is the
//! release binary, run as a child process on a temp SQLite file with no `SSPR_FLEET_*`
//! setting from the caller. The bench:
//!
//! 1. issues an admin key with `sspr-fleet keys create`;
//! 2. onboards the fleet with one `POST /v1/tenants:import` and `POST /v1/tenants:verify` in
//!    chunks of 1,000 (timed, not part of the makespan);
//! 3. creates the rollout (`POST /v1/rollouts`: a canary wave of 10, then batches of 1,000,
//!    `max_in_flight` = `IN_FLIGHT`, zero soak) and plays the technician: each open
//!    `scope_selected` task is attested after the simulator's legacy SSPR policy is set to the
//!    task's group, as `tests/it/engine.rs` does;
//! 4. waits until the rollout is no longer running, then reads the daemon's peak resident set
//!    (`VmHWM` of `/proc/<pid>/status`) and stops it.
//!
//! Printed and written to `bench/results/fleet_rollout.json`: makespan (rollout created →
//! rollout completed, wall time, which is simulated Graph time at `time_speed = 1`), tenants
//! completed per minute, Graph calls and writes per tenant (simulator counters over the
//! rollout only), calls/s and writes/s against the rates the limits allow, 429s, `Retry-After`
//! violations (`early_requests`), the daemon's peak memory, and the makespan's ratio to its
//! lower bound, defined in the output as the largest of:
//!
//! * concurrency × latency: `round trips × mean latency / C`, `C` = min(engine workers, Graph
//!   concurrency, max in flight, tenants): the engine cannot keep more than `C` requests in
//!   flight. Round trips are the daemon's own Graph request counters (`/metrics`), where a
//!   `$batch` of up to 20 items counts once; the simulator counts each item;
//! * one tenant's chain: `round trips per tenant × mean latency` (a tenant's requests are
//!   sequential);
//! * the app-wide write limit, a bucket of 35,000 refilled at 35,000 per 5 minutes:
//!   `(writes − 35,000) / (35,000 / 300 s)`.
//!
//! Targets reported against: 10,000 tenants in under 10 minutes at 100 ms latency, 0
//! `Retry-After` violations, daemon peak under 300 MiB.
//!
//! `SSPR_BENCH_THROTTLE_SCALE=0.3` (for instance) shrinks the simulator's limits without
//! telling the daemon: a 1,000-tenant run then meets the app-wide throttling a much larger
//! fleet would, which checks `Retry-After` handling in a minute or two. Its results go to
//! `*_throttle_scaled.json`. The daemon's API rate limit is off: the bench plays every
//! technician and a dashboard at once.
//!
//! Build the daemon first, then run:
//! `cargo build --release -p sspr-fleet && cargo bench -p sspr-fleet --bench fleet_rollout
//! [-- TENANTS LATENCY_LO LATENCY_HI ENGINE_WORKERS IN_FLIGHT TIMEOUT_MIN]` (defaults 1000 50
//! 100 256 1000 30). The 10,000-tenant target run is `-- 10000 100 100 256 1000 30`. The binary is found next to the bench's directory
//! (`$CARGO_TARGET_DIR/release/sspr-fleet`), or at `SSPR_FLEET_BENCH_BIN`.

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sspr_graph_sim::{
    Enablement, Faults, GraphSim, LegacySspr, Scenario, SimSettings,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, GenerateSpec},
};

/// App-wide write limit of the identity and access service: 35,000 per 5 minutes.
const APP_WRITES_PER_SEC: f64 = 35_000.0 / 300.0;
/// The app-wide write bucket's capacity: 35,000 writes may go at once.
const APP_WRITE_BURST: f64 = 35_000.0;
/// App-wide resource-unit limit: 150,000 RU per 20 s; a call costs at least 1 RU.
const APP_RU_PER_SEC: f64 = 150_000.0 / 20.0;
const TARGET_TENANTS: usize = 10_000;
const TARGET_MAKESPAN_S: f64 = 600.0;
const TARGET_PEAK_MIB: f64 = 300.0;

/// Run parameters.
#[derive(Debug, Clone, Copy)]
struct Params {
    tenants: usize,
    latency: (u64, u64),
    workers: usize,
    in_flight: usize,
    timeout: Duration,
}

fn daemon_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("SSPR_FLEET_BENCH_BIN") {
        return PathBuf::from(bin);
    }
    // The bench runs from <target>/release/deps/; the binary is <target>/release/sspr-fleet.
    let exe = std::env::current_exe().expect("the bench's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("sspr-fleet"))
        .expect("a target directory");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --release -p sspr-fleet` first (same CARGO_TARGET_DIR), \
         or set SSPR_FLEET_BENCH_BIN",
        bin.display()
    );
    bin
}

/// Peak resident set of a process, from `/proc/<pid>/status`.
fn vm_hwm_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The daemon's environment: this bench's settings only.
fn command(bin: &Path, data: &Path, graph: &str, p: Params) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(data);
    for (name, _) in std::env::vars() {
        if name.starts_with("SSPR_FLEET_") || name.starts_with("OTEL_") {
            cmd.env_remove(name);
        }
    }
    let db = format!("sqlite://{}", data.join("fleet.db").display());
    cmd.env("SSPR_FLEET_DATA_DIR", data)
        .env("SSPR_FLEET_DATABASE_URL", db)
        .env("SSPR_FLEET_LISTEN", "127.0.0.1:0")
        .env("SSPR_FLEET_GRAPH_URL", graph)
        .env("SSPR_FLEET_LOGIN_URL", graph)
        .env("SSPR_FLEET_PORTAL_URL", graph)
        .env("SSPR_FLEET_LOG", "info,sqlx=warn,actix_server=warn")
        .env("SSPR_FLEET_LOG_FORMAT", "json")
        .env("SSPR_FLEET_API__WORKERS", "2")
        // The bench is every technician and a dashboard at once: no API rate limit.
        .env("SSPR_FLEET_API__RATE_PER_SECOND", "0")
        .env("SSPR_FLEET_REGISTRY__BACKGROUND_VERIFY", "false")
        .env("SSPR_FLEET_REGISTRY__VERIFY_CONCURRENCY", "64")
        .env("SSPR_FLEET_REPORTING__SCHEDULED_REFRESH", "false")
        .env("SSPR_FLEET_GRAPH__MAX_CONCURRENCY", (p.workers * 2).to_string())
        .env("SSPR_FLEET_ENGINE__WORKERS", p.workers.to_string())
        .env("SSPR_FLEET_ENGINE__WAIT_POLL_MS", "1000")
        .env("SSPR_FLEET_ENGINE__ADVANCE_MS", "500")
        .env("SSPR_FLEET_ENGINE__IDLE_POLL_MS", "100")
        .env("SSPR_FLEET_ENGINE__RETRY_BASE_MS", "1000")
        .env("SSPR_FLEET_ENGINE__RETRY_MAX_MS", "30000");
    cmd
}

/// The engine settings the daemon runs with, for the output.
fn engine_settings(p: Params) -> Value {
    json!({
        "engine.workers": p.workers, "graph.max_concurrency": p.workers * 2,
        "graph.per_tenant_concurrency": 1, "engine.wait_poll_ms": 1000,
        "engine.advance_ms": 500, "engine.idle_poll_ms": 100, "api.workers": 2,
        "database": "sqlite (temp file, WAL)",
    })
}

/// The simulator's throttling scale, `SSPR_BENCH_THROTTLE_SCALE` (default 1: Microsoft's
/// documented limits). Below 1, a small fleet meets the throttling a large one would, and the
/// daemon, which is not told, meets 429s: a quick check of `Retry-After` handling.
fn throttle_scale() -> f64 {
    std::env::var("SSPR_BENCH_THROTTLE_SCALE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(1.0)
}

fn main() {
    let nums: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let p = Params {
        tenants: nums.first().copied().unwrap_or(1000) as usize,
        latency: (nums.get(1).copied().unwrap_or(50), nums.get(2).copied().unwrap_or(100)),
        workers: nums.get(3).copied().unwrap_or(256) as usize,
        in_flight: nums.get(4).copied().unwrap_or(1000) as usize,
        timeout: Duration::from_secs(nums.get(5).copied().unwrap_or(30) * 60),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(p));
}

/// A typed little client for the daemon.
struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Value {
        let resp = req.bearer_auth(&self.token).send().await.expect(what);
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{what}: {status} {body}");
        body
    }
    async fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.base)), path).await
    }
    async fn post(&self, path: &str, body: &Value) -> Value {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body), path).await
    }
}

/// Starts `serve`, logging to `<data>/serve.log`; returns the child and its base URL.
// The child is returned to the caller, which stops it and waits for it.
#[allow(clippy::zombie_processes)]
async fn serve(cmd: &mut Command, data: &Path) -> (Child, String) {
    let log = data.join("serve.log");
    let file = std::fs::File::create(&log).expect("log file");
    let mut child = cmd
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file)
        .spawn()
        .expect("start serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let addr = text.lines().find_map(|line| {
            let v: Value = serde_json::from_str(line).ok()?;
            (v["message"] == "serving the API").then(|| v["addr"].as_str().map(str::to_owned))?
        });
        if let Some(addr) = addr {
            return (child, format!("http://{addr}"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("serve did not start:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Attests every open scope task after setting the simulator's legacy policy to its group, as
/// a technician would in the portal. Returns how many were attested.
async fn attest_open_tasks(
    api: &Api,
    sim: &GraphSim,
    entra_of: &BTreeMap<String, String>,
    done: &mut BTreeSet<String>,
) -> usize {
    let mut n = 0;
    let tasks = api.get("/v1/tasks?state=open&limit=500").await;
    for task in tasks["items"].as_array().into_iter().flatten() {
        if task["kind"] != "scope_selected" {
            continue;
        }
        let Some(id) = task["id"].as_str() else { continue };
        if done.contains(id) {
            continue;
        }
        let tenant = task["tenant_id"].as_str().unwrap_or_default();
        let Some(group) = task["instructions"]["group"]["id"].as_str() else { continue };
        let Some(entra) = entra_of.get(tenant) else { continue };
        let Ok(current) = sim.legacy_sspr(entra) else { continue };
        let policy = LegacySspr {
            enablement: Enablement::Selected,
            group_id: Some(group.to_owned()),
            ..current
        };
        // The group may not have replicated yet: the portal would refuse it too; next round.
        if sim.set_legacy_sspr(entra, policy).is_err() {
            continue;
        }
        api.post(&format!("/v1/tasks/{id}/attest"), &json!({"note": "set by the bench"})).await;
        done.insert(id.to_owned());
        n += 1;
    }
    n
}

/// `(count, sum of seconds)` of the daemon's job histogram `name` per job kind, from
/// `/metrics`.
fn job_histograms(metrics: &str, name: &str) -> BTreeMap<String, (f64, f64)> {
    let mut out: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in metrics.lines() {
        for (suffix, slot) in [("_count{", 0), ("_sum{", 1)] {
            let Some(rest) = line.strip_prefix(&format!("sspr_fleet_{name}{suffix}")) else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else { continue };
            let Some(kind) = labels.strip_prefix("kind=\"").and_then(|k| k.strip_suffix('"'))
            else {
                continue;
            };
            let v: f64 = value.trim().parse().unwrap_or(0.0);
            let e = out.entry(kind.to_owned()).or_default();
            if slot == 0 { e.0 = v } else { e.1 = v }
        }
    }
    out
}

/// The daemon's Graph client counter `sspr_fleet_graph_requests_total`, per endpoint: HTTP
/// round trips as the client counts them (a `$batch` of up to 20 items is one).
fn graph_round_trips(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("sspr_fleet_graph_requests_total{endpoint=\"")?;
            let (endpoint, value) = rest.split_once("\"} ")?;
            Some((endpoint.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

async fn metrics_text(api: &Api) -> String {
    api.http
        .get(format!("{}/metrics", api.base))
        .bearer_auth(&api.token)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default()
}

async fn run(p: Params) {
    let bin = daemon_binary();
    let mean_latency_s = (p.latency.0 + p.latency.1) as f64 / 2000.0;
    let mut settings = SimSettings::default();
    settings.throttle.scale = throttle_scale();
    let scenario = Scenario {
        seed: 11,
        settings,
        generate: Some(GenerateSpec {
            count: u32::try_from(p.tenants).expect("tenant count"),
            min_users: 25,
            max_users: 400,
            consent_missing_share: 0.0,
            faults: Faults { latency_ms: p.latency, ..Default::default() },
            ..Default::default()
        }),
        ..Default::default()
    };
    let sim = GraphSim::from_scenario(&scenario).expect("the fleet");
    let running =
        sim.serve(std::net::TcpListener::bind("127.0.0.1:0").expect("bind")).expect("serve sim");
    let graph = running.base_url();
    let ids = sim.tenant_ids();
    let users: Vec<u64> = ids
        .iter()
        .map(|id| sim.tenant_state(id).ok().and_then(|s| s["users"].as_u64()).unwrap_or(0))
        .collect();
    println!(
        "fleet: {} tenants, {}–{} users each ({} in all), Graph latency {}–{} ms, documented limits",
        ids.len(),
        users.iter().min().unwrap_or(&0),
        users.iter().max().unwrap_or(&0),
        users.iter().sum::<u64>(),
        p.latency.0,
        p.latency.1
    );
    let data = tempfile::tempdir().expect("a temp dir");
    let out = command(&bin, data.path(), &graph, p)
        .args(["keys", "create", "--name", "bench", "--role", "admin"])
        .output()
        .expect("keys create");
    assert!(out.status.success(), "keys create: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (mut child, base) = serve(&mut command(&bin, data.path(), &graph, p), data.path()).await;
    let pid = child.id();
    let api = Api {
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(900))
            .build()
            .expect("client"),
        base,
        token,
    };

    // Onboarding: import, then verify in chunks.
    let onboard_started = Instant::now();
    let rows: Vec<Value> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            json!({
                "entra_tenant": id, "display_name": format!("Tenant {i:05}"), "tags": ["fleet"],
                "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID,
                                "client_secret": DEFAULT_CLIENT_SECRET},
            })
        })
        .collect();
    let report = api.post("/v1/tenants:import", &Value::Array(rows)).await;
    let mut entra_of = BTreeMap::new();
    let mut tenant_ids = Vec::new();
    for row in report["rows"].as_array().into_iter().flatten() {
        if let (Some(t), Some(e)) = (row["tenant_id"].as_str(), row["entra_tenant"].as_str()) {
            entra_of.insert(t.to_owned(), e.to_owned());
            tenant_ids.push(t.to_owned());
        }
    }
    let import_s = onboard_started.elapsed().as_secs_f64();
    let mut verified: BTreeMap<String, u64> = BTreeMap::new();
    for chunk in tenant_ids.chunks(1000) {
        let r = api.post("/v1/tenants:verify", &json!({"tenant_ids": chunk})).await;
        for (k, v) in r["counts"].as_object().into_iter().flatten() {
            *verified.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
        }
    }
    let onboard_s = onboard_started.elapsed().as_secs_f64();
    println!(
        "onboarded: import {import_s:.1} s, import + verify {onboard_s:.1} s; statuses {verified:?}"
    );
    let before = sim.total_stats();
    let trips_before = graph_round_trips(&metrics_text(&api).await);

    // The rollout.
    let spec = json!({
        "name": "Fleet SSPR (bench)",
        "policy": {
            "pilot_group": {"name": "SSPR pilot (sspr-fleet)",
                            "members": ["user00003@{domain}", "user00004@{domain}"]},
            "registration_campaign": {"enabled": true, "snooze_days": 2},
        },
        "selector": {"tags": ["fleet"]},
        "waves": {
            "canary": {"kind": "first", "count": 10},
            "batches": {"kind": "count", "size": 1000},
            "max_in_flight": p.in_flight,
            "failure_budget": {"kind": "percent", "percent": 50},
        },
        "gates": {"soak_minutes": 0},
    });
    let started = Instant::now();
    let rollout = api.post("/v1/rollouts", &spec).await;
    let create_s = started.elapsed().as_secs_f64();
    let rollout_id = rollout["id"].as_str().expect("rollout id").to_owned();
    let mut attested = BTreeSet::new();
    let mut last_print = Instant::now();
    let mut timeline = Vec::new();
    let view = loop {
        attest_open_tasks(&api, &sim, &entra_of, &mut attested).await;
        let v = api.get(&format!("/v1/rollouts/{rollout_id}")).await;
        let state = v["state"].as_str().unwrap_or_default().to_owned();
        if last_print.elapsed() >= Duration::from_secs(15) || state != "running" {
            last_print = Instant::now();
            let t = started.elapsed().as_secs_f64();
            println!("  {t:>6.0} s  {state}  {}", v["counts"]);
            timeline.push(json!({"t_s": t, "counts": v["counts"].clone()}));
        }
        if state != "running" {
            break v;
        }
        if started.elapsed() > p.timeout {
            println!("timeout after {:?}; stopping", p.timeout);
            break v;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let makespan = started.elapsed().as_secs_f64();
    let after = sim.total_stats();
    let metrics = metrics_text(&api).await;
    let trips_after = graph_round_trips(&metrics);
    let trip = |m: &BTreeMap<String, u64>, f: &dyn Fn(&str) -> bool| -> u64 {
        m.iter().filter(|(k, _)| f(k)).map(|(_, v)| v).sum()
    };
    let round_trips = trip(&trips_after, &|_| true).saturating_sub(trip(&trips_before, &|_| true));
    let batches = trip(&trips_after, &|k| k == "POST /$batch")
        .saturating_sub(trip(&trips_before, &|k| k == "POST /$batch"));
    let runs = job_histograms(&metrics, "job_run_seconds");
    let waits = job_histograms(&metrics, "job_wait_seconds");
    let mut jobs = serde_json::Map::new();
    for (kind, (n, sum)) in &runs {
        let (wn, wsum) = waits.get(kind).copied().unwrap_or_default();
        jobs.insert(
            kind.clone(),
            json!({"attempts": n, "run_s_total": sum, "run_ms_mean": sum / n.max(1.0) * 1000.0,
                   "wait_ms_mean": wsum / wn.max(1.0) * 1000.0}),
        );
    }
    let peak_kib = vm_hwm_kib(pid);
    // SIGTERM, then wait for the graceful stop.
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let stopped = Instant::now();
    while child.try_wait().ok().flatten().is_none() && stopped.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    running.stop().await;

    let counts = view["counts"].clone();
    let count = |s: &str| counts[s].as_u64().unwrap_or(0);
    let completed = count("completed");
    let calls = after.requests - before.requests;
    let writes = after.writes - before.writes;
    let tokens = after.token_requests - before.token_requests;
    let throttled = after.throttled - before.throttled;
    let early = after.early_requests - before.early_requests;
    let early_by_endpoint: BTreeMap<String, u64> = after
        .early_by_endpoint
        .iter()
        .map(|(k, v)| (k.clone(), v - before.early_by_endpoint.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    // Writes the simulator carried out: attempts answered 429 are not writes Graph made.
    let writes_done = writes - (after.throttled_writes - before.throttled_writes);
    let worked = (completed + count("failed")).max(1);
    let mut by_endpoint: Vec<(String, u64)> = after
        .by_endpoint
        .iter()
        .map(|(k, v)| (k.clone(), v - before.by_endpoint.get(k).copied().unwrap_or(0)))
        .filter(|(_, v)| *v > 0)
        .collect();
    by_endpoint.sort_by_key(|e| std::cmp::Reverse(e.1));
    let tenants = p.tenants as f64;
    let calls_per_tenant = calls as f64 / tenants;
    let concurrency = p.workers.min(p.workers * 2).min(p.in_flight).min(p.tenants).max(1);
    let lb_concurrency = round_trips as f64 * mean_latency_s / concurrency as f64;
    let lb_chain = (round_trips as f64 / worked as f64) * mean_latency_s;
    // The app-wide write bucket holds 35,000 and refills at 35,000 per 5 minutes.
    // Both scale with the simulator's throttling scale.
    let ts = throttle_scale();
    let lb_writes =
        (writes_done as f64 - APP_WRITE_BURST * ts).max(0.0) / (APP_WRITES_PER_SEC * ts);
    let lower_bound = lb_concurrency.max(lb_chain).max(lb_writes);
    let calls_per_s = calls as f64 / makespan;
    let writes_per_s = writes as f64 / makespan;
    let per_min = completed as f64 / (makespan / 60.0);
    let peak_mib = peak_kib as f64 / 1024.0;
    // At this run's calls and writes per tenant, the time 10,000 tenants would take at the
    // measured call rate and at the write limit's, at 100 ms latency.
    let scale = TARGET_TENANTS as f64 / tenants;
    let projected_10k_rate_s = makespan * scale * (0.1 / mean_latency_s);
    let projected_10k_writes_s =
        (writes as f64 * scale - APP_WRITE_BURST).max(0.0) / APP_WRITES_PER_SEC;

    println!();
    println!("rollout {} after {makespan:.1} s: {counts}", view["state"]);
    println!("  created in {create_s:.2} s; {} scope tasks attested by the bench", attested.len());
    println!(
        "  blocked reasons {}; failed reasons {}",
        view["blocked_reasons"], view["failed_reasons"]
    );
    println!(
        "  tenants completed per minute: {per_min:.0} ({completed} completed of {})",
        p.tenants
    );
    println!(
        "  Graph calls: {calls} ({calls_per_tenant:.1} per tenant), writes {writes} ({:.1} per \
         tenant), token requests {tokens}",
        writes as f64 / tenants
    );
    println!(
        "  calls/s {calls_per_s:.0} = {:.3} of the app-wide RU limit's call rate ({APP_RU_PER_SEC:.0}/s at ≥ 1 RU a call)",
        calls_per_s / APP_RU_PER_SEC
    );
    println!(
        "  writes/s {writes_per_s:.1} = {:.3} of the app-wide write limit ({APP_WRITES_PER_SEC:.1}/s)",
        writes_per_s / APP_WRITES_PER_SEC
    );
    println!("  per completed tenant, by endpoint (writes first):");
    for (endpoint, n) in by_endpoint
        .iter()
        .filter(|(k, _)| !k.starts_with("GET "))
        .chain(by_endpoint.iter().filter(|(k, _)| k.starts_with("GET ")))
    {
        println!("    {:>6.2}  {endpoint}", *n as f64 / completed.max(1) as f64);
    }
    println!(
        "  HTTP round trips to Graph (the daemon's client counters): {round_trips} ({:.1} per \
         completed or failed tenant), of which {batches} `$batch`",
        round_trips as f64 / worked as f64
    );
    println!(
        "  429s {throttled}; Retry-After violations (early requests) {early}, by endpoint \
         {early_by_endpoint:?}, at most {} ms early",
        after.early_ms_max
    );
    println!(
        "  daemon peak memory (VmHWM of serve): {peak_mib:.1} MiB (target < {TARGET_PEAK_MIB})"
    );
    println!(
        "  lower bound {lower_bound:.1} s = max(round trips × mean latency / C = {round_trips} × \
         {mean_latency_s:.3} s / {concurrency} = {lb_concurrency:.1} s; one tenant's chain = \
         round trips per worked tenant × mean latency = {lb_chain:.1} s; (writes − 35,000 burst) / \
         {APP_WRITES_PER_SEC:.1} per s = {lb_writes:.1} s), C = min(engine workers, Graph concurrency, max in flight, \
         tenants)"
    );
    println!("  makespan / lower bound: {:.2}", makespan / lower_bound);
    for (kind, j) in &jobs {
        println!(
            "  jobs {kind}: {} attempts, {:.1} s running in all, {:.1} ms mean run, {:.1} ms mean wait for a worker",
            j["attempts"],
            j["run_s_total"].as_f64().unwrap_or(0.0),
            j["run_ms_mean"].as_f64().unwrap_or(0.0),
            j["wait_ms_mean"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "  projection to {TARGET_TENANTS} tenants at 100 ms: {projected_10k_rate_s:.0} s at this \
         run's rate; the write limit alone needs {projected_10k_writes_s:.0} s (target {TARGET_MAKESPAN_S} s)"
    );

    let out = json!({
        "bench": "fleet_rollout",
        "tenants": p.tenants,
        "users": users.iter().sum::<u64>(),
        "latency_ms": [p.latency.0, p.latency.1],
        "settings": engine_settings(p),
        "max_in_flight": p.in_flight,
        "onboarding": {"import_s": import_s, "import_and_verify_s": onboard_s, "statuses": verified},
        "rollout": {"state": view["state"], "counts": counts, "create_s": create_s,
                    "blocked_reasons": view["blocked_reasons"],
                    "failed_reasons": view["failed_reasons"],
                    "scope_tasks_attested": attested.len()},
        "makespan_s": makespan,
        "tenants_completed_per_min": per_min,
        "graph_calls": calls,
        "graph_calls_per_tenant": calls_per_tenant,
        "graph_writes": writes,
        "graph_round_trips": round_trips,
        "graph_batches": batches,
        "graph_requests_by_endpoint": by_endpoint.iter().cloned().collect::<BTreeMap<_, _>>(),
        "token_requests": tokens,
        "calls_per_s": calls_per_s,
        "calls_per_s_share_of_app_ru_limit": calls_per_s / APP_RU_PER_SEC,
        "writes_per_s": writes_per_s,
        "writes_per_s_share_of_app_write_limit": writes_per_s / APP_WRITES_PER_SEC,
        "throttled_429": throttled,
        "retry_after_violations": early,
        "retry_after_violations_by_endpoint": early_by_endpoint,
        "retry_after_violation_max_ms": after.early_ms_max,
        "graph_writes_done": writes_done,
        "simulator_throttle_scale": throttle_scale(),
        "daemon_peak_mib": peak_mib,
        "lower_bound": {
            "definition": "max(round trips × mean latency / C, round trips per worked tenant × mean latency, \
                           (writes − 35,000) / (35,000 per 300 s)); C = min(engine workers, Graph \
                           concurrency, max_in_flight, tenants)",
            "concurrency_c": concurrency,
            "concurrency_latency_s": lb_concurrency,
            "tenant_chain_s": lb_chain,
            "app_write_limit_s": lb_writes,
            "lower_bound_s": lower_bound,
        },
        "makespan_over_lower_bound": makespan / lower_bound,
        "projection_10k_at_100ms_s": projected_10k_rate_s,
        "projection_10k_write_limit_s": projected_10k_writes_s,
        "targets": {
            "makespan_10k_at_100ms_s": TARGET_MAKESPAN_S,
            "retry_after_violations": 0,
            "daemon_peak_mib": TARGET_PEAK_MIB,
            "violations_met": early == 0,
            "memory_met": peak_mib < TARGET_PEAK_MIB,
        },
        "jobs": jobs,
        "timeline": timeline,
    });
    let mut name = if p.tenants == 1000 {
        "fleet_rollout".to_owned()
    } else {
        format!("fleet_rollout_{}", p.tenants)
    };
    if throttle_scale() != 1.0 {
        name.push_str("_throttle_scaled");
    }
    let path = format!("{}/../../bench/results/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json") + "\n")
        .expect("write results");
    println!("wrote bench/results/{name}.json");
}
