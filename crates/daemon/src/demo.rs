//! `sspr-fleet demo`: the whole product on one machine with nothing configured. It starts the
//! built-in Graph simulator with a fleet of simulated tenants of mixed readiness, the daemon on
//! a throwaway SQLite database, then does over the REST API what an MSP would: onboard every
//! tenant, plan, and run a staged rollout (canary tenants, then waves; pilot group, then
//! everyone, inside each tenant). It plays the technician for the portal step that Microsoft
//! offers no API for, and says so. It shows progress per wave as it goes and ends with a
//! summary.

// Talking to the person at the terminal is what the demo is for.
#![allow(clippy::print_stdout)]

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::IsTerminal,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use secrecy::SecretString;
use serde_json::{Value, json};
use sspr_api::keys::{NewKey, issue_api_key_from_cli};
use sspr_domain::{Role, SystemClock, TenantScope};
use sspr_graph_sim::{
    Enablement, GraphSim, LegacySspr, Scenario,
    scenario::{DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET},
};
use tokio_util::sync::CancellationToken;

use crate::{Application, settings::Settings};

/// What the demo is asked for.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Simulated tenants.
    pub tenants: u32,
    /// Pace: 1.0 is the default; 2.0 polls twice as often and runs simulated time twice as
    /// fast.
    pub speed: f64,
    /// Seed of the simulated fleet.
    pub seed: u64,
    /// Keep the API up after the rollout, until Ctrl-C.
    pub keep_running: bool,
}

/// How the demo's rollout ended.
#[derive(Debug, Clone, Default)]
pub struct DemoSummary {
    /// The rollout's final state.
    pub state: String,
    /// Tenants per final state.
    pub counts: BTreeMap<String, u64>,
    /// How long the whole demo took.
    pub elapsed: Duration,
}

/// Settings for the demo: the embedded defaults, pointed at the simulator and a throwaway
/// database, with a quick pace.
fn demo_settings(base: &Settings, dir: &std::path::Path, sim_url: &str, speed: f64) -> Settings {
    let mut s = base.clone();
    let db = dir.join("demo.db");
    s.database_url = SecretString::from(format!("sqlite://{}", db.display()));
    s.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    s.data_dir = dir.to_path_buf();
    s.master_key = None;
    s.master_key_file = None;
    s.graph_url = sim_url.to_owned();
    s.login_url = sim_url.to_owned();
    s.portal_url = sim_url.to_owned();
    s.registry.background_verify = false;
    let ms = |base: f64| ((base / speed.max(0.1)).round() as u64).max(20);
    s.engine.wait_poll_ms = ms(1500.0);
    s.engine.advance_ms = ms(1000.0);
    s.engine.idle_poll_ms = ms(100.0);
    s.engine.retry_base_ms = ms(300.0);
    s.engine.retry_max_ms = ms(3000.0);
    s
}

/// The rollout the demo runs: two canary tenants, then waves of a third of the rest, ten in
/// flight, the pilot group of two users in each tenant.
fn demo_spec(tenants: u32) -> Value {
    let wave = tenants.saturating_sub(2).div_ceil(3).max(1);
    json!({
        "name": "Demo: SSPR for the whole fleet",
        "policy": {
            "pilot_group": {
                "name": "SSPR pilot (sspr-fleet demo)",
                "members": ["user00003@{domain}", "user00004@{domain}"],
            },
            "registration_campaign": {"enabled": true, "snooze_days": 1},
        },
        "selector": {"all": true},
        "waves": {
            "canary": {"kind": "first", "count": 2.min(tenants)},
            "batches": {"kind": "count", "size": wave},
            "max_in_flight": 10,
            "failure_budget": {"kind": "percent", "percent": 50},
        },
        "gates": {"soak_minutes": 0},
    })
}

/// A small client of the daemon's API.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req.send().await.with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await.unwrap_or(Value::Null);
        Ok((status, value))
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let (status, v) = self.call(reqwest::Method::GET, path, None).await?;
        anyhow::ensure!(status == 200, "GET {path} answered {status}: {v}");
        Ok(v)
    }

    async fn post(&self, path: &str, body: &Value, expect: u16) -> anyhow::Result<Value> {
        let (status, v) = self.call(reqwest::Method::POST, path, Some(body)).await?;
        anyhow::ensure!(status == expect, "POST {path} answered {status}: {v}");
        Ok(v)
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>9} [{bar:30.green/white}] {pos:>3}/{len:3} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Counts of a wave or rollout as `state n, state n`, finished states first.
fn counts_text(counts: &Value) -> String {
    let Some(map) = counts.as_object() else { return String::new() };
    let mut parts: Vec<String> = map.iter().map(|(k, v)| format!("{k} {v}")).collect();
    parts.sort();
    parts.join(", ")
}

const FINISHED: [&str; 5] = ["completed", "failed", "blocked", "cancelled", "rolled_back"];

fn finished_in(counts: &Value) -> u64 {
    FINISHED.iter().map(|s| counts[*s].as_u64().unwrap_or(0)).sum()
}

/// Plays the technician for every open scope task: sets the simulator's legacy SSPR policy to
/// Selected = the task's group (what a technician does in the Entra admin center), then
/// attests the task through the API. Returns how many were attested.
async fn attest_tasks(
    api: &Api,
    sim: &GraphSim,
    entra_of: &BTreeMap<String, String>,
) -> anyhow::Result<usize> {
    let tasks = api.get("/v1/tasks?state=open&limit=500").await?;
    let mut done = 0;
    for task in tasks["items"].as_array().into_iter().flatten() {
        if task["kind"] != "scope_selected" {
            continue;
        }
        let (Some(tenant), Some(group), Some(id)) = (
            task["tenant_id"].as_str(),
            task["instructions"]["group"]["id"].as_str(),
            task["id"].as_str(),
        ) else {
            continue;
        };
        let Some(entra) = entra_of.get(tenant) else { continue };
        let Ok(current) = sim.legacy_sspr(entra) else { continue };
        let policy = LegacySspr {
            enablement: Enablement::Selected,
            group_id: Some(group.to_owned()),
            ..current
        };
        // The group may not have replicated yet; the portal would refuse it too. Next round.
        if sim.set_legacy_sspr(entra, policy).is_err() {
            continue;
        }
        let note = json!({"note": "attested automatically by sspr-fleet demo; with real tenants a technician sets this in the Entra admin center"});
        api.post(&format!("/v1/tasks/{id}/attest"), &note, 200).await?;
        done += 1;
    }
    Ok(done)
}

/// Runs the demo; prints to stdout (summary) and stderr (progress).
pub async fn run(
    base: &Settings,
    opts: DemoOptions,
    shutdown: CancellationToken,
) -> anyhow::Result<DemoSummary> {
    let started = Instant::now();
    anyhow::ensure!((1..=5000).contains(&opts.tenants), "--tenants must be 1 to 5000");
    anyhow::ensure!(
        opts.speed > 0.0 && opts.speed <= 100.0,
        "--speed must be above 0 and at most 100"
    );
    let dir = tempfile::Builder::new()
        .prefix("sspr-fleet-demo-")
        .tempdir()
        .context("cannot create a temporary directory")?;

    // The simulated fleet.
    let mut scenario = Scenario::generated(opts.tenants, opts.seed);
    scenario.settings.time_speed = opts.speed;
    if let Some(g) = scenario.generate.as_mut() {
        g.min_users = 25;
        g.max_users = 400;
    }
    let sim = GraphSim::from_scenario(&scenario).context("cannot build the simulated fleet")?;
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot listen for the simulator")?;
    let running_sim = sim.serve(listener).context("cannot start the simulator")?;
    let sim_url = running_sim.base_url();

    // The daemon.
    let settings = demo_settings(base, dir.path(), &sim_url, opts.speed);
    let app = Application::build(&settings).await.context("cannot start the daemon")?;
    let addr = app.addr();
    let (_, token) = issue_api_key_from_cli(
        app.store(),
        &SystemClock,
        NewKey { name: "demo-admin".into(), role: Role::Admin, tenants: TenantScope::All },
    )
    .await
    .context("cannot create the demo's API key")?;
    let key = token.reveal().to_owned();
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(app.run_until_stopped(server_stop.clone()));
    let api =
        Api { http: reqwest::Client::new(), base: format!("http://{addr}"), key: key.clone() };

    println!("sspr-fleet demo: {} simulated tenants (Graph simulator at {sim_url})", opts.tenants);
    println!("  API:          http://{addr}  (docs at http://{addr}/docs/)");
    println!("  Admin key:    {key}");
    println!("  Status page:  http://demo:{key}@{addr}/status");
    println!(
        "  This demo plays the technician for the one portal step Graph cannot do; real tenants need a person (or the opt-in portal mode)."
    );
    println!();

    let outcome = drive(&api, &sim, opts.tenants, &shutdown).await;
    let summary = match outcome {
        Ok(mut summary) => {
            summary.elapsed = started.elapsed();
            println!(
                "Finished in {:.1} s. API at http://{addr} with key {key}",
                summary.elapsed.as_secs_f64()
            );
            summary
        }
        Err(e) => {
            server_stop.cancel();
            let _ = server.await;
            running_sim.stop().await;
            return Err(e);
        }
    };
    if opts.keep_running && !shutdown.is_cancelled() {
        println!("--keep-running: the API and the simulator stay up; Ctrl-C to stop.");
        shutdown.cancelled().await;
    }
    server_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the demo's daemon stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "the demo's daemon task failed"),
    }
    running_sim.stop().await;
    Ok(summary)
}

/// How long the demo waits for the readiness reports it asks for.
const REPORTS_WAIT: Duration = Duration::from_secs(30);

/// Refreshes the readiness reports and prints the users who lose self-service reset when SMS
/// and voice stop counting (1 February 2027), and the tenants most at risk.
async fn sms_retirement_summary(api: &Api) -> anyhow::Result<()> {
    api.post("/v1/reports/sspr:refresh", &json!({}), 202).await?;
    let started = std::time::Instant::now();
    let mut page = api.get("/v1/reports/sspr?limit=500").await?;
    // Wait until every tenant has a report (the refresh jobs run in the background).
    while started.elapsed() < REPORTS_WAIT
        && page["totals"]["by_status"]["pending"].as_u64().unwrap_or(0) > 0
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
        page = api.get("/v1/reports/sspr?limit=500").await?;
    }
    let all = &page["totals"]["figures"]["all"];
    let dependent = all["phone_dependent"].as_u64().unwrap_or(0);
    println!();
    println!("SMS and voice stop counting for SSPR on 1 February 2027:");
    println!(
        "  {dependent} of {} users who can reset today rely on a phone method (capable without phone: {})",
        all["sspr_capable"].as_u64().unwrap_or(0),
        all["capable_without_phone"].as_u64().unwrap_or(0)
    );
    let mut at_risk: Vec<(u64, String)> = page["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let n = t["figures"]["all"]["phone_dependent"].as_u64().filter(|n| *n > 0)?;
            Some((n, t["display_name"].as_str().unwrap_or("?").to_owned()))
        })
        .collect();
    at_risk.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    if at_risk.is_empty() {
        println!("  No tenant depends on SMS or voice for self-service reset.");
    } else {
        println!(
            "  Tenants most at risk ({} in all; see docs/sms-voice-retirement.md):",
            at_risk.len()
        );
        for (n, name) in at_risk.iter().take(5) {
            println!("    {name:<28} {n:>5} phone-dependent users");
        }
    }
    Ok(())
}

/// Onboards, plans, rolls out and reports; the body of the demo.
async fn drive(
    api: &Api,
    sim: &GraphSim,
    n: u32,
    shutdown: &CancellationToken,
) -> anyhow::Result<DemoSummary> {
    let visible = std::io::stderr().is_terminal();
    let draw = || if visible { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };

    // 1. Onboard every tenant through the API, checking each against Graph.
    let ids = sim.tenant_ids();
    let onboarding = ProgressBar::with_draw_target(Some(ids.len() as u64), draw());
    onboarding.set_style(bar_style());
    onboarding.set_prefix("onboard");
    let mut entra_of = BTreeMap::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for chunk in ids.chunks(8) {
        let calls = chunk.iter().enumerate().map(|(i, entra)| {
            let body = json!({
                "entra_tenant": entra,
                "display_name": sim.tenant_state(entra).ok().and_then(|s| s["displayName"].as_str().map(str::to_owned)).unwrap_or_else(|| format!("Tenant {i}")),
                "tags": ["demo"],
                "credentials": {"kind": "client_secret", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET},
            });
            async move { (entra.clone(), api.post("/v1/tenants?verify=true", &body, 201).await) }
        });
        for (entra, res) in futures_util::future::join_all(calls).await {
            let t = res?;
            *statuses.entry(t["status"].as_str().unwrap_or("unknown").to_owned()).or_default() += 1;
            if let Some(id) = t["id"].as_str() {
                entra_of.insert(id.to_owned(), entra);
            }
            onboarding.inc(1);
        }
    }
    onboarding.finish_and_clear();
    println!("Onboarded {} tenants: {}", entra_of.len(), counts_text(&json!(statuses)));

    // 2. Plan: Graph reads only.
    let spec = demo_spec(n);
    let plan = api.post("/v1/rollouts?dry_run=true", &spec, 200).await?;
    println!(
        "Plan: {} ready, {} blocked, in {} waves (canary first)",
        plan["ready"],
        plan["blocked"],
        plan["waves"].as_array().map_or(0, Vec::len)
    );

    // 3. Start it and follow it.
    let rollout = api.post("/v1/rollouts", &spec, 201).await?;
    let id = rollout["id"].as_str().context("the rollout has no id")?.to_owned();
    println!("Rollout {id} started.");
    let multi = MultiProgress::with_draw_target(draw());
    let mut bars: BTreeMap<i64, ProgressBar> = BTreeMap::new();
    let status_line = multi.add(ProgressBar::new_spinner());
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut attested = 0;
    let last = loop {
        if shutdown.is_cancelled() {
            bail!("interrupted");
        }
        attested += attest_tasks(api, sim, &entra_of).await?;
        let r = api.get(&format!("/v1/rollouts/{id}")).await?;
        for w in r["waves"].as_array().into_iter().flatten() {
            let wave = w["wave"].as_i64().unwrap_or(0);
            let bar = bars.entry(wave).or_insert_with(|| {
                let b = multi.add(ProgressBar::new(w["tenants"].as_u64().unwrap_or(0)));
                b.set_style(bar_style());
                b.set_prefix(if wave == 0 { "canary".to_owned() } else { format!("wave {wave}") });
                b
            });
            bar.set_position(finished_in(&w["counts"]));
            bar.set_message(counts_text(&w["counts"]));
        }
        let mut line = format!(
            "{} · wave {}/{} · {}",
            r["state"].as_str().unwrap_or("?"),
            r["current_wave"],
            r["wave_count"],
            counts_text(&r["counts"])
        );
        if let Some(reasons) = r["blocked_reasons"].as_object().filter(|m| !m.is_empty()) {
            let _ = write!(line, " · blocked: {}", counts_text(&Value::Object(reasons.clone())));
        }
        status_line.set_message(line);
        status_line.tick();
        if matches!(r["state"].as_str(), Some("completed" | "cancelled" | "rolled_back" | "paused"))
        {
            break r;
        }
        if Instant::now() > deadline {
            bail!("the rollout did not finish in 10 minutes: {}", counts_text(&r["counts"]));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for b in bars.values() {
        b.finish();
    }
    status_line.finish_and_clear();
    let _ = multi.clear();

    // 4. The summary.
    let tenants = api.get(&format!("/v1/rollouts/{id}/tenants?limit=500")).await?;
    println!();
    println!("Summary of rollout {id}: {}", last["state"].as_str().unwrap_or("?"));
    println!("  {:<28} {:>5}  {:<13} Reason", "Tenant", "Wave", "State");
    let names = api.get("/v1/tenants?limit=500").await?;
    let name_of: BTreeMap<&str, &str> = names["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| Some((t["id"].as_str()?, t["display_name"].as_str()?)))
        .collect();
    let rows = tenants["items"].as_array().cloned().unwrap_or_default();
    for t in rows.iter().take(60) {
        let tid = t["tenant_id"].as_str().unwrap_or("?");
        println!(
            "  {:<28} {:>5}  {:<13} {}",
            name_of.get(tid).copied().unwrap_or(tid),
            t["wave"].as_i64().unwrap_or(0),
            t["state"].as_str().unwrap_or("?"),
            t["reason"].as_str().unwrap_or("")
        );
    }
    if rows.len() > 60 {
        println!("  … and {} more (GET /v1/rollouts/{id}/tenants)", rows.len() - 60);
    }
    let counts: BTreeMap<String, u64> = last["counts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
        .collect();
    println!("  Totals: {}", counts_text(&last["counts"]));
    if let Some(reasons) = last["blocked_reasons"].as_object().filter(|m| !m.is_empty()) {
        println!("  Blocked, by reason: {}", counts_text(&Value::Object(reasons.clone())));
    }
    if let Some(reasons) = last["failed_reasons"].as_object().filter(|m| !m.is_empty()) {
        println!("  Failed, by reason: {}", counts_text(&Value::Object(reasons.clone())));
    }
    println!(
        "  Scope tasks attested by the demo (a technician's job with real tenants): {attested}"
    );
    sms_retirement_summary(api).await?;
    Ok(DemoSummary {
        state: last["state"].as_str().unwrap_or("?").to_owned(),
        counts,
        elapsed: Duration::ZERO,
    })
}
